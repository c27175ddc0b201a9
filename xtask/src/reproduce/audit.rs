//! The shortcut audit of one trained model, wired from cxr-model (scores, features, feature maps),
//! cxr-explain (probe, occlusion, Grad-CAM, verdict) and cxr-eval (AUCs with DeLong intervals).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cxr_core::{Grey8, Manifest, ManifestRecord, Split};
use cxr_explain::{AuditEvidence, AuditReport, CamItem, ExplainConfig, ExplainWriter, Figure, Fill, OcclusionEvidence};
use cxr_model::{Classifier, ImageRow};

use super::experiment::{ModelRun, read_grey};
use super::stage::{cached, file_key, key_of};
use super::{Profile, ReproduceArgs};

/// Grad-CAM needs the model's two inference-mode halves; explain cannot name cxr-model, so xtask adapts.
struct CamAdapter<'a>(&'a Classifier);

impl cxr_explain::CamModel for CamAdapter<'_> {
    fn feature_map(&self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        self.0.feature_map(x)
    }
    fn logit_from_feature_map(&self, fmap: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        self.0.logit_from_feature_map(fmap)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditOutput {
    pub report: serde_json::Value,
    pub gradcam_dir: PathBuf,
    pub galleries: Vec<PathBuf>,
}

const BATCH: usize = 16;

pub fn run(
    args: &ReproduceArgs,
    profile: &Profile,
    model: &ModelRun,
    manifest_path: &Path,
    cramers_v: Option<f64>,
    dir: &Path,
) -> Result<AuditOutput> {
    let key = key_of(&("audit-v2", file_key(&model.model_path)?, file_key(manifest_path)?, profile.gradcam_per_group, args.seed));
    cached("audit", dir, &key, || run_uncached(args, profile, model, manifest_path, cramers_v, dir))
}

fn run_uncached(
    _args: &ReproduceArgs,
    profile: &Profile,
    run: &ModelRun,
    manifest_path: &Path,
    cramers_v: Option<f64>,
    dir: &Path,
) -> Result<AuditOutput> {
    let arch = match run.backbone.as_str() {
        "vgg16" => cxr_model::Arch::vgg16(),
        _ => cxr_model::Arch::resnet50(),
    };
    let model = cxr_model::load_classifier(&arch, &run.model_path)
        .with_context(|| format!("loading {}", run.model_path.display()))?;
    let manifest = Manifest::read(manifest_path)?;
    let (rows, _) = cxr_model::rows_from_manifest(&manifest, "crop", manifest_path)?;
    let size = run.image_size;

    // 1. Source probe on frozen backbone features, cross-validated by patient.
    let refs: Vec<&ImageRow> = rows.iter().collect();
    let feats = cxr_model::features_of(&model, &refs, size, BATCH)?;
    let (n, f) = feats.dims2()?;
    let flat: Vec<f64> = feats.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
    let x = cxr_explain::probe::Matrix::new(n, f, flat)?;
    let sources: Vec<String> = rows.iter().map(|r| r.source.to_string()).collect();
    let patients: Vec<String> = rows.iter().map(|r| format!("{}/{}", r.source, r.patient)).collect();
    let probe = cxr_explain::source_probe(&x, &sources, &patients, &cxr_explain::ProbeConfig::default())
        .context("source probe")?;

    // 2. Occlusion: full, lungs removed (mean fill), lungs only.
    let by_id: BTreeMap<&str, &ManifestRecord> = manifest.records.iter().map(|r| (r.id.as_str(), r)).collect();
    // Occlusion asks what the model uses where it works: the test images of the training sources (all test
    // images when no test image comes from one).
    let seen: std::collections::BTreeSet<&str> =
        rows.iter().filter(|r| r.split == Some(Split::Train)).map(|r| r.source.as_str()).collect();
    let mut test: Vec<&ImageRow> =
        rows.iter().filter(|r| r.split == Some(Split::Test) && seen.contains(r.source.as_str())).collect();
    if test.is_empty() {
        test = rows.iter().filter(|r| r.split == Some(Split::Test)).collect();
    }
    let positives: Vec<bool> = test.iter().map(|r| r.label.target() == Some(1)).collect();
    let full = score_images(&model, &test, size, |row| read_grey(&row.path))?;
    let occ_dir = dir.join("occlusion");
    let occluded = |fill: Fill, remove: bool| -> Result<Vec<f64>> {
        let sub = occ_dir.join(format!("{}-{}", if remove { "lungs-removed" } else { "lungs-only" }, fill.name()));
        score_images(&model, &test, size, |row| {
            let img = read_grey(&row.path)?;
            let rec = by_id.get(row.id.as_str()).copied().with_context(|| format!("no manifest row for {}", row.id))?;
            let mask = crop_mask(rec, &img)?;
            let out = if remove {
                cxr_explain::remove_lungs(&img, &mask, fill)?
            } else {
                cxr_explain::lungs_only(&img, &mask, fill)?
            };
            // Keep a few examples on disk for the reader.
            if sub.exists() || std::fs::create_dir_all(&sub).is_ok() {
                let _ = cxr_explain::render::write_png_grey(&sub.join(format!("{}.png", row.id)), &out);
            }
            Ok(out)
        })
    };
    let removed = occluded(Fill::Mean, true)?;
    let only = occluded(Fill::Mean, false)?;
    let fig = |scores: &[f64]| -> Figure {
        match cxr_eval::delong::delong(scores, &positives, 0.95) {
            Some(d) => Figure::with_ci(d.auc, d.lo, d.hi),
            None => Figure::point(f64::NAN),
        }
    };
    let occlusion = vec![OcclusionEvidence { fill: Fill::Mean.name(), full: fig(&full), lungs_removed: fig(&removed), lungs_only: fig(&only) }];

    // 3. Grad-CAM on a few test images per source and class, with the lung energy fraction.
    let gradcam_dir = dir.join("gradcam");
    let mut writer = ExplainWriter::new(&gradcam_dir, ExplainConfig::default())?;
    let mut per_group: BTreeMap<(String, String), usize> = BTreeMap::new();
    let chosen: Vec<&ImageRow> = rows
        .iter()
        .filter(|r| r.split == Some(Split::Test))
        .filter(|r| {
            let n = per_group.entry((r.source.to_string(), r.label.to_string())).or_default();
            *n += 1;
            *n <= profile.gradcam_per_group
        })
        .collect();
    let cam_model = CamAdapter(&model);
    for chunk in chosen.chunks(8) {
        let x = cxr_model::batch_tensor(chunk, size, model.device())?;
        let cam = cxr_explain::grad_cam(&cam_model, &x)?;
        for ((row, heat), logit) in chunk.iter().zip(&cam.heatmaps).zip(&cam.logits) {
            let image = read_grey(&row.path)?;
            let rec = by_id.get(row.id.as_str()).copied().with_context(|| format!("no manifest row for {}", row.id))?;
            let mask = crop_mask(rec, &image)?;
            let item = CamItem { id: row.id.clone(), source: row.source.clone(), label: row.label, image, mask };
            writer.add(&item, heat, *logit)?;
        }
    }
    let outputs = writer.finish()?;
    let energies: Vec<f64> = outputs.rows.iter().filter_map(|r| r.lung_energy).collect();
    let areas: Vec<f64> = outputs.rows.iter().map(|r| r.mask_area).collect();
    let mean = |v: &[f64]| if v.is_empty() { None } else { Some(v.iter().sum::<f64>() / v.len() as f64) };

    // 4. Verdict.
    let evidence = AuditEvidence {
        model: run.name.clone(),
        cramers_v,
        occlusion,
        lung_energy: mean(&energies).map(Figure::point),
        mean_mask_area: mean(&areas),
        ..Default::default()
    }
    .with_probe(&probe);
    let verdict = cxr_explain::verdict(&evidence, &cxr_explain::Thresholds::default());
    let report = AuditReport { evidence: vec![evidence], verdicts: vec![verdict] };
    cxr_explain::write_audit_json(&dir.join("audit.json"), &report)?;
    let mut report_json = serde_json::to_value(&report)?;
    report_json["probe"] = serde_json::to_value(&probe.per_source)?;
    report_json["lung_energy_summary"] = serde_json::to_value(&outputs.summary)?;
    Ok(AuditOutput { report: report_json, gradcam_dir, galleries: outputs.galleries })
}

/// The segment stage's mask, cut to the crop box, at the crop image's size.
fn crop_mask(rec: &ManifestRecord, crop: &Grey8) -> Result<Grey8> {
    let mask_path = rec.get("mask").unwrap_or_default();
    let mask = read_grey(Path::new(&mask_path))?;
    let num = |c: &str| -> Result<u32> {
        rec.get(c).unwrap_or_default().parse::<u32>().with_context(|| format!("{}: column {c} is not a number", rec.id))
    };
    let (x, y, w, h) = (num("crop_x")?, num("crop_y")?, num("crop_w")?, num("crop_h")?);
    let cut = cxr_explain::occlusion::crop(&mask, x, y, w, h)?;
    if (cut.width, cut.height) == (crop.width, crop.height) {
        Ok(cut)
    } else {
        Ok(cxr_explain::occlusion::resize_nearest(&cut, crop.width, crop.height)?)
    }
}

/// P(Covid-19) of images produced by `load` (in memory, never written as a manifest).
fn score_images(
    model: &Classifier,
    rows: &[&ImageRow],
    size: usize,
    load: impl Fn(&ImageRow) -> Result<Grey8>,
) -> Result<Vec<f64>> {
    let tmp = tempdir()?;
    let mut scores = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(BATCH) {
        // The model's loader reads PNG files; write the variants to a scratch folder.
        let mut variant_rows = Vec::with_capacity(chunk.len());
        for row in chunk {
            let img = load(row)?;
            let p = tmp.join(format!("{}.png", row.id));
            cxr_explain::render::write_png_grey(&p, &img)?;
            variant_rows.push(ImageRow { path: p, ..(*row).clone() });
        }
        let refs: Vec<&ImageRow> = variant_rows.iter().collect();
        scores.extend(cxr_model::predict_rows(model, &refs, size, BATCH)?);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(scores)
}

fn tempdir() -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!("cxr-audit-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
