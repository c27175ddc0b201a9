//! A small, fully populated [`Results`] for the report sections' tests and the schema test: every optional
//! part present, the evaluation computed by cxr-eval from a handful of predictions (seen sources ranked
//! well, unseen sources inverted), so that the numbers the sections print are real ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Grey8, ImageFormat, Label, Manifest, ManifestRecord, Prediction, SourceId, Split};
use cxr_explain::audit::{AuditEvidence, Figure, OcclusionEvidence, SaliencyCost, SourceFigure};

use crate::audit::{ConfounderReport, ConfounderRow, ProbeDetails, StudyAudit};
use crate::data::{DatasetCount, IngestResult, Prepared};
use crate::experiment::{ExperimentResult, ExperimentSpec, ModelRun};
use crate::results::{Results, Runs};
use crate::sensitivity::SensitivityRun;
use crate::{Profile, StudyConfig};

pub const MODEL: &str = "resnet50-finetune1";

/// A small grey PNG at `path` (a gallery or an overlay the report previews).
pub fn png(path: &Path) {
    let grey = Grey8 {
        width: 300,
        height: 200,
        data: vec![100; 60_000],
    };
    cxr_segment::gallery::write_overlay(path, &grey, &grey, &grey).unwrap();
}

fn record(id: usize, source: &str, label: Label, split: Split) -> ManifestRecord {
    ManifestRecord {
        id: format!("{source}-{id}"),
        source: SourceId::new(source).unwrap(),
        label,
        patient: format!("p{source}{}", id / 2),
        view: "PA".into(),
        path: PathBuf::from(format!("{source}-{id}.png")),
        format: ImageFormat::Png,
        sha256: format!("{id:064}"),
        split: Some(split),
        extra: BTreeMap::new(),
    }
}

/// Split 1 of the paper: V2-COV19-NII (Covid-19) and NIH (pneumonia) seen, BIMCV and CheXpert unseen.
fn manifest() -> Manifest {
    let mut records = Vec::new();
    for (source, label) in [
        (SourceId::V2_COV19_NII, Label::Covid),
        (SourceId::NIH, Label::Pneumonia),
    ] {
        for i in 0..12 {
            records.push(record(i, source, label, Split::Train));
            records.push(record(100 + i, source, label, Split::Val));
            records.push(record(200 + i, source, label, Split::Test));
        }
    }
    for (source, label) in [
        (SourceId::BIMCV, Label::Covid),
        (SourceId::CHEXPERT, Label::Pneumonia),
    ] {
        for i in 0..12 {
            records.push(record(200 + i, source, label, Split::Test));
        }
    }
    Manifest::new(records)
}

/// Scores: the seen sources ranked right with one overlap, the unseen ones the wrong way round.
fn predictions(m: &Manifest) -> Vec<Prediction> {
    m.records
        .iter()
        .filter(|r| r.split != Some(Split::Train))
        .map(|r| {
            let i = r.id.rsplit('-').next().unwrap().parse::<usize>().unwrap() % 100;
            let step = i as f64 / 40.0;
            let score = match (r.source.as_str(), r.label) {
                (SourceId::V2_COV19_NII, _) => 0.95 - step - if i == 0 { 0.5 } else { 0.0 },
                (SourceId::NIH, _) => 0.05 + step,
                (_, Label::Covid) => 0.2 + step,
                _ => 0.5 + step,
            };
            Prediction {
                id: r.id.clone(),
                source: r.source.clone(),
                split: r.split.unwrap(),
                label: r.label,
                score,
                patient: r.patient.clone(),
                model: MODEL.into(),
            }
        })
        .collect()
}

fn audit() -> StudyAudit {
    let evidence = AuditEvidence {
        model: MODEL.into(),
        model_sha256: None,
        engine: None,
        source_probe: vec![SourceFigure {
            source: SourceId::NIH.into(),
            auc: Figure::with_ci(0.99, 0.97, 1.0),
        }],
        cramers_v: Some(1.0),
        score_follows_source: None,
        auc_spread: None,
        planted_confounders: Some(cxr_explain::PlantedConfounders {
            tested: vec!["grid".into(), "text".into()],
            followed: vec!["grid".into()],
        }),
        occlusion: vec![OcclusionEvidence {
            fill: "mean".into(),
            full: Figure::with_ci(0.99, 0.97, 1.0),
            lungs_removed: Figure::with_ci(0.93, 0.88, 0.97),
            lungs_only: Figure::with_ci(0.62, 0.52, 0.71),
            lungs_removed_p: Some(0.0001),
            n_covid: Some(12),
            n_pneumonia: Some(4),
            small_sample: None,
        }],
        lung_energy: Some(Figure::point(0.35)),
        mean_mask_area: Some(0.43),
        lung_cells: Some(1.8),
        saliency: Some(SaliencyCost {
            method: "grad_cam".into(),
            images: 16,
            passes_per_map: 1,
            seconds_per_map: Some(0.2),
            patch: Some(16),
            stride: Some(8),
        }),
        saliency_maps: Some(16),
        saliency_maps_usable: Some(16),
    };
    let verdict = cxr_explain::verdict(&evidence, &cxr_explain::Thresholds::default());
    StudyAudit {
        report: cxr_explain::AuditReport {
            evidence: vec![evidence],
            verdicts: vec![verdict],
        },
        probe: Some(ProbeDetails {
            per_source: vec![cxr_explain::probe::SourceAuc {
                source: SourceId::NIH.into(),
                n: 24,
                auc: Some(0.99),
            }],
            pairs: vec![cxr_explain::probe::PairAuc {
                a: SourceId::NIH.into(),
                b: SourceId::V2_COV19_NII.into(),
                auc: Some(0.98),
            }],
            folds: 5,
        }),
    }
}

fn confounders() -> ConfounderReport {
    let row = |kind: &str, associated: bool, shift: f64, status: &str| ConfounderRow {
        kind: kind.into(),
        label_associated: associated,
        n: 32,
        mean_shift: Some(shift),
        ci_low: Some(shift - 0.05),
        ci_high: Some(shift + 0.05),
        status: status.into(),
        other: [("cramers_v".to_string(), serde_json::json!(1.0))].into(),
    };
    ConfounderReport {
        model: MODEL.into(),
        verdict: "follows planted confounders".into(),
        flag_rule: "label-associated in the training split, bootstrap 95% CI of the mean shift excludes 0, and \
                    |mean shift| >= threshold"
            .into(),
        confounders: vec![
            row("grid", true, 0.21, "followed"),
            row("text", true, 0.0, "not_in_model_input"),
        ],
        other: [("threshold".to_string(), serde_json::json!(0.05))].into(),
    }
}

/// One experiment of `kind` named `name`, with its real evaluation, its audit and its confounder test.
pub fn experiment(dir: &Path, name: &str, kind: &str) -> ExperimentResult {
    let manifest = manifest();
    let opts = cxr_eval::EvalOptions {
        resamples: 200,
        ..Default::default()
    }
    .with_train_manifest(&manifest);
    let eval = cxr_eval::evaluate(&predictions(&manifest), &opts).unwrap();
    let exp_dir = dir.join("experiments").join(name);
    let gallery = exp_dir.join("audit/gradcam/gallery/nih__pneumonia.png");
    png(&gallery);
    let run_dir = exp_dir.join(MODEL);
    ExperimentResult {
        spec: ExperimentSpec {
            name: name.into(),
            title: format!("Figure 4, split 1: {name}"),
            split: "split1".into(),
            models: vec![MODEL.into()],
            kind: kind.into(),
            data: "paper".into(),
            paper_seen_auc: Some(1.0),
            paper_unseen_auc: Some(0.38),
            base: (kind == "table4").then(|| "figure4-split1".into()),
            image_column: "crop".into(),
        },
        dir: exp_dir.clone(),
        manifest: exp_dir.join("manifest.csv"),
        split_counts: [
            ("test".to_string(), 72),
            ("train".to_string(), 24),
            ("val".to_string(), 24),
        ]
        .into(),
        lint: cxr_ingest::lint(&manifest),
        train_cramers_v: Some(1.0),
        models: vec![ModelRun {
            name: MODEL.into(),
            backbone: "resnet50".into(),
            mode_requested: "finetune1".into(),
            mode_run: "frozen".into(),
            dir: run_dir.clone(),
            model_path: run_dir.join("model.safetensors"),
            predictions: run_dir.join("predictions.csv"),
            pretrained: false,
            provenance: Some(cxr_model::Provenance {
                origin: "random".into(),
                weights: None,
                fine_tuned_from: vec![cxr_model::train::FineTunedFrom {
                    path: "base/model.safetensors".into(),
                    sha256: "ab".repeat(32),
                }],
            }),
            trainable_parameters: 4098,
            epochs_run: 60,
            best_epoch: 20,
            best_val_accuracy: 0.958,
            image_size: 128,
        }],
        eval,
        eval_dir: exp_dir.join("eval"),
        audit: Some(audit()),
        confounders: Some(confounders()),
        gradcam_dir: Some(exp_dir.join("audit/gradcam")),
        galleries: vec![gallery],
        notes: vec!["Split `split1`: counts capped at half of their sources' images.".into()],
    }
}

fn dice(mean: f64) -> cxr_segment::train::DiceStats {
    cxr_segment::train::DiceStats {
        n: 5,
        mean,
        sd: 0.1,
        median: mean,
        p10: 0.5,
        min: 0.4,
    }
}

fn source_counts(
    images: usize,
    kept: usize,
    rejected: &[(&str, usize)],
) -> cxr_segment::infer::SourceCounts {
    cxr_segment::infer::SourceCounts {
        images,
        kept,
        rejected: rejected.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
    }
}

/// The main data: a synthetic world whose UNet has a training report; `cohen` loses 60 % of its images
/// to the lung-crop rules against 20 % of `nih`'s (an uneven rejection).
pub fn prepared(dir: &Path) -> Prepared {
    let world = dir.join("data-world-paper/world");
    let unet = dir.join("unet/unet.safetensors");
    png(&dir.join("unet/unet.worst/01-cohen-a.png"));
    let segment = cxr_segment::SegmentSummary {
        images: 60,
        kept: 40,
        rejected: [
            ("empty_mask".to_string(), 2),
            ("small_crop".to_string(), 12),
            ("odd_reason".to_string(), 6),
        ]
        .into(),
        manifest: Some(dir.join("data-world-paper/segment/manifest.csv")),
        by_source: [
            (
                "cohen".to_string(),
                source_counts(20, 8, &[("small_crop", 10), ("empty_mask", 2)]),
            ),
            (
                "nih".to_string(),
                source_counts(40, 32, &[("small_crop", 2), ("odd_reason", 6)]),
            ),
        ]
        .into(),
    };
    let report = cxr_segment::TrainReport {
        config: cxr_segment::TrainConfig::quick(world.join("lung-masks"), &unet),
        parameters: 120_000,
        train_pairs: 30,
        val_pairs: 4,
        test_pairs: 10,
        epoch_pairs: 30,
        split: [(
            "cohen".to_string(),
            cxr_segment::train::SplitCounts {
                train: 30,
                val: 4,
                test: 5,
                train_patients: 20,
                val_patients: 3,
                test_patients: 4,
            },
        )]
        .into(),
        epochs_run: 20,
        best_epoch: 18,
        best_val_dice: 0.9,
        test_dice: Some(0.8),
        test_dice_min: Some(0.4),
        test_dice_by_prefix: [("lung".to_string(), 0.8)].into(),
        test_by_source: [
            ("cohen".to_string(), dice(0.7)),
            ("shenzhen".to_string(), dice(0.95)),
        ]
        .into(),
        test_by_source_flip: [("cohen".to_string(), dice(0.72))].into(),
        test_dice_flip: Some(0.81),
        worst: vec![
            cxr_segment::train::WorstCase {
                name: "a".into(),
                source: "cohen".into(),
                dice: 0.4,
                overlay: "unet.worst/01-cohen-a.png".into(),
            },
            // Its overlay is missing: the report skips its preview.
            cxr_segment::train::WorstCase {
                name: "b".into(),
                source: "cohen".into(),
                dice: 0.5,
                overlay: "unet.worst/02-cohen-b.png".into(),
            },
        ],
        stopped_because: "epochs".into(),
        train_seconds: 80.0,
        history: vec![cxr_segment::train::EpochLog {
            epoch: 1,
            train_loss: 0.5,
            val_dice: 0.6,
            val_dice_by_source: [("cohen".to_string(), 0.6)].into(),
            seconds: 4.0,
            lr: 1e-3,
        }],
    };
    Prepared {
        choice_label: "synthetic world `paper` (each source holds one class, as in the paper)"
            .into(),
        tag: "world-paper".into(),
        dir: dir.join("data-world-paper"),
        world_root: Some(world.clone()),
        world_summary: Some(cxr_synth::WorldSummary {
            root: world.clone(),
            kind: cxr_synth::WorldKind::Paper,
            sources: vec![cxr_synth::SourceSummary {
                id: SourceId::NIH.into(),
                dataset: "ChestX-ray14".into(),
                root: world.join("ChestX-ray14"),
                selected: 60,
                covid: 0,
                pneumonia: 60,
                distractors: 3,
            }],
            images_written: 63,
            lung_masks: 60,
            world_json: world.join("world.json"),
            truth_csv: world.join("truth.csv"),
            gallery: Some(world.join("gallery.png")),
        }),
        ingest: IngestResult {
            manifest: dir.join("data-world-paper/ingest/manifest.csv"),
            images: 60,
            per_dataset: vec![DatasetCount {
                dataset: SourceId::NIH.into(),
                selected: 60,
                missing: 0,
                rejected: 0,
            }],
        },
        preprocess: cxr_preprocess::batch::BatchSummary {
            total: 60,
            processed: 60,
            cached: 0,
            rejected: 0,
            rows: 60,
            augment: false,
            config_hash: "c0ffee".into(),
            elapsed_s: 1.5,
            manifest: dir.join("data-world-paper/preprocess/manifest.csv"),
            rejects: dir.join("data-world-paper/preprocess/rejects.csv"),
        },
        manifest: dir.join("data-world-paper/segment/manifest.csv"),
        segment,
        segmenter: unet,
        segmenter_report: Some(report),
        notes: vec![
            "Lung UNet trained on the synthetic world's lung masks (base 8, 64 px).".into(),
        ],
    }
}

/// The whole fixture: the main study (Figure 4 split 1 and its Table 4 fine-tuning), the clean-world control
/// and one sensitivity world; every optional part is present.
pub fn results(dir: &Path) -> Results {
    let config = StudyConfig {
        command: "cxr reproduce --out r".into(),
        weights_resnet50: Some(dir.join("resnet50.safetensors")),
        weights_vgg16: Some(dir.join("vgg16.safetensors")),
        ..Default::default()
    };
    let profile = Profile::of(&config);
    let main = vec![
        experiment(dir, "figure4-split1", "figure4"),
        experiment(dir, "table4-local-finetune", "table4"),
    ];
    let mut control = vec![experiment(
        &dir.join("control-clean"),
        "figure4-split1",
        "figure4",
    )];
    // A model whose chain goes back to ImageNet weights (the control's models do not count towards
    // `backbone_weights.pretrained`).
    if let Some(p) = control[0].models[0].provenance.as_mut() {
        p.origin = "imagenet".into();
        p.weights = Some("resnet50.safetensors".into());
    }
    let sensitivity = vec![SensitivityRun {
        group: cxr_synth::ConfounderKind::Grid,
        split: "split1".into(),
        image_column: "crop".into(),
        image_size: 128,
        result: experiment(&dir.join("sensitivity/grid"), "figure4-split1", "figure4"),
    }];
    Results::build(
        &config,
        &profile,
        prepared(dir),
        Runs {
            main,
            control: Some(control),
            sensitivity: Some(sensitivity),
        },
        451.0,
    )
}
