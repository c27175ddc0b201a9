//! Data stages of `reproduce`: world (or real data) → ingest → preprocess → segment + crop.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cxr_core::Manifest;
use serde::{Deserialize, Serialize};

use super::stage::{bar, cached, file_key, key_of};
use super::{Profile, ReproduceArgs, WorldArg};

/// Which data a run uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DataChoice {
    Synthetic(WorldArg),
    /// The paper world with one confounder group planted alone (the audit's sensitivity study).
    Isolated(cxr_synth::ConfounderKind),
    /// Real datasets: root and dataset names (adapters).
    Real {
        root: PathBuf,
        datasets: Vec<String>,
    },
}

impl DataChoice {
    pub fn main(args: &ReproduceArgs) -> Self {
        match &args.data_root {
            None => DataChoice::Synthetic(args.world),
            Some(root) => DataChoice::Real {
                root: root.clone(),
                datasets: match args.dataset.as_deref() {
                    Some(d) => d
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    None => cxr_core::SourceId::PAPER
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                },
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            DataChoice::Synthetic(WorldArg::Paper) => {
                "synthetic world `paper` (each source holds one class, as in the paper)".into()
            }
            DataChoice::Synthetic(WorldArg::Clean) => {
                "synthetic world `clean` (every source holds both classes 50/50)".into()
            }
            DataChoice::Isolated(g) => format!(
                "synthetic world `only {g}` (each source holds one class; sources differ in {g} alone)"
            ),
            DataChoice::Real { root, datasets } => format!(
                "real data: {} under {}",
                datasets.join(", "),
                root.display()
            ),
        }
    }
}

/// What the data stages produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    pub choice_label: String,
    pub tag: String,
    /// Folder of this data's stage outputs.
    pub dir: PathBuf,
    /// Synthetic world root (None for real data).
    pub world_root: Option<PathBuf>,
    pub world_summary: Option<serde_json::Value>,
    pub ingest: IngestResult,
    pub preprocess: serde_json::Value,
    /// The manifest with `png8`, `mask`, `crop` and the crop columns (rejected rows included, with a reason).
    pub manifest: PathBuf,
    pub segment: serde_json::Value,
    pub segmenter: PathBuf,
    pub segmenter_report: Option<serde_json::Value>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IngestResult {
    pub manifest: PathBuf,
    pub images: usize,
    pub per_dataset: Vec<DatasetCount>,
}

/// Images of one dataset at ingest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatasetCount {
    pub dataset: String,
    /// Selected by the dataset's rules.
    pub selected: usize,
    /// Files the metadata names that are not on disk.
    pub missing: usize,
    /// Files that could not be read.
    pub rejected: usize,
}

/// Runs the data stages into `out/data-<tag>/`. `segmenter` reuses UNet weights (e.g. the main run's).
pub fn prepare(
    args: &ReproduceArgs,
    profile: &Profile,
    choice: DataChoice,
    out: &Path,
    segmenter: Option<PathBuf>,
) -> Result<Prepared> {
    let tag = match &choice {
        DataChoice::Synthetic(WorldArg::Paper) => "world-paper".to_string(),
        DataChoice::Synthetic(WorldArg::Clean) => "world-clean".to_string(),
        DataChoice::Isolated(g) => format!("world-only-{g}"),
        DataChoice::Real { datasets, .. } => format!("real-{}", datasets.join("+")),
    };
    let dir = out.join(format!("data-{tag}"));
    let mut notes = Vec::new();

    // 1. The world (synthetic) or the dataset roots (real).
    let (world_root, world_summary, roots): (
        Option<PathBuf>,
        Option<serde_json::Value>,
        Vec<(String, PathBuf)>,
    ) = match &choice {
        DataChoice::Synthetic(_) | DataChoice::Isolated(_) => {
            let (kind, only) = match &choice {
                DataChoice::Synthetic(WorldArg::Clean) => (cxr_synth::WorldKind::Clean, None),
                DataChoice::Isolated(g) => (cxr_synth::WorldKind::Paper, Some(*g)),
                _ => (cxr_synth::WorldKind::Paper, None),
            };
            let cfg = cxr_synth::WorldConfig {
                kind,
                only,
                per_source: profile.per_source,
                size: profile.world_size,
                seed: args.seed,
                signal: args.signal.unwrap_or(1.0),
                gallery: true,
                ..cxr_synth::WorldConfig::default()
            };
            let world_dir = dir.join("world");
            let key = key_of(&("synth-v1", &cfg));
            let summary: serde_json::Value = cached("synth", &world_dir, &key, || {
                let pb = bar("synth", 0);
                let summary =
                    cxr_synth::generate_with_progress(&cfg, &world_dir, &|done, total| {
                        pb.set_length(total);
                        pb.set_position(done);
                    })
                    .with_context(|| {
                        format!("generating the synthetic world in {}", world_dir.display())
                    })?;
                pb.finish_and_clear();
                Ok(serde_json::to_value(&summary)?)
            })?;
            let roots = summary["sources"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            Some((
                                s["id"].as_str()?.to_string(),
                                PathBuf::from(s["root"].as_str()?),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (Some(world_dir), Some(summary), roots)
        }
        DataChoice::Real { root, datasets } => {
            let roots = datasets
                .iter()
                .map(|d| {
                    let r = if d == "cohen" || datasets.len() == 1 {
                        root.clone()
                    } else {
                        root.join(real_folder(d))
                    };
                    (d.clone(), r)
                })
                .collect();
            (None, None, roots)
        }
    };

    // 2. Ingest: one adapter per dataset, merged into one manifest.
    let ingest_dir = dir.join("ingest");
    let ingest_key = key_of(&("ingest-v1", &roots, &world_summary));
    let ingest: IngestResult = cached("ingest", &ingest_dir, &ingest_key, || {
        let pseudo = cxr_core::privacy::Pseudonymizer::from_env();
        let mut merged = Manifest::default();
        let mut per_dataset = Vec::new();
        for (name, root) in &roots {
            let adapter = cxr_ingest::adapters::by_name(name)
                .with_context(|| format!("no ingest adapter for dataset `{name}`"))?;
            let scanned = cxr_ingest::scan(adapter.as_ref(), root, &pseudo)
                .with_context(|| format!("ingesting {name} from {}", root.display()))?;
            per_dataset.push(DatasetCount {
                dataset: name.clone(),
                selected: scanned.manifest.records.len(),
                missing: scanned.missing.len(),
                rejected: scanned.rejected.len(),
            });
            merged.records.extend(scanned.manifest.records);
        }
        if merged.records.is_empty() {
            bail!("no images selected from {:?}", roots);
        }
        let path = ingest_dir.join("manifest.csv");
        cxr_ingest::write_manifest(&merged, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(IngestResult {
            manifest: path,
            images: merged.records.len(),
            per_dataset,
        })
    })?;

    // 3. Preprocess: 8-bit PNGs (the per-image cache makes a rerun cheap).
    let pre_dir = dir.join("preprocess");
    let pre_cfg = preprocess_config(profile);
    let pre_key = key_of(&("preprocess-v1", file_key(&ingest.manifest)?, pre_cfg.hash()));
    let preprocess: serde_json::Value = cached("preprocess", &pre_dir, &pre_key, || {
        let manifest = Manifest::read(&ingest.manifest)?;
        let pb = bar("preprocess", manifest.records.len() as u64);
        let summary = cxr_preprocess::batch::run_batch(
            &manifest,
            &pre_dir,
            &pre_cfg,
            &cxr_preprocess::batch::BatchOptions::default(),
            |p: &Path| cxr_ingest::read_image(p),
            &|p| pb.set_position(p.done as u64),
        )
        .with_context(|| format!("preprocessing into {}", pre_dir.display()))?;
        pb.finish_and_clear();
        Ok(serde_json::to_value(&summary)?)
    })?;
    let pre_manifest = pre_dir.join("manifest.csv");

    // 4. Segment: the lung UNet (given, reused, or trained here), masks, crops and the paper's rejections.
    let (segmenter, segmenter_report) = match segmenter.or_else(|| args.segmenter.clone()) {
        Some(w) => {
            let report = report_beside(&w);
            (w, report)
        }
        None => {
            let (data, what, unet_dir) = match &world_root {
                Some(w) => (
                    vec![w.join("lung-masks")],
                    "the synthetic world's lung masks".to_string(),
                    out.join("unet-synthetic"),
                ),
                None => {
                    let shared = shared_data();
                    let found = cxr_segment::data::discover(&shared).map_err(|e| {
                        anyhow::anyhow!(
                            "no lung UNet: pass --segmenter WEIGHTS, or make the default lung-mask sets ({}) \
                             available under {} (CXR_SHARED_DATA): {e}",
                            cxr_segment::data::DEFAULT_SETS.join(", "),
                            shared.display()
                        )
                    })?;
                    (
                        found.found.clone(),
                        format!("the default lung-mask sets ({})", found.describe()),
                        out.join("unet-default-sets"),
                    )
                }
            };
            let weights = unet_dir.join("unet.safetensors");
            let first = data.first().cloned().unwrap_or_default();
            // Real images get the CPU default (128 px, 27 minutes) whatever the profile: the quick preset's
            // 64-px UNet finds synthetic lungs but not those of real Covid-19 films.
            let quick = profile.segment_quick && world_root.is_some();
            let mut cfg = if quick {
                cxr_segment::TrainConfig::quick(&first, &weights)
            } else {
                cxr_segment::TrainConfig::cpu_default(&first, &weights)
            };
            cfg.data = data.clone();
            cfg.resume = args.resume;
            cfg.seed = args.seed;
            if quick {
                // A fixed number of epochs, not the preset's time budget: on a loaded machine a time budget
                // trains fewer epochs, and a weaker UNet rejects more images (`small_crop`), so results
                // would depend on the load. A narrow UNet can sit at an empty mask for several epochs before
                // it finds the lungs, hence no early stopping either. ~20 epochs reach Dice ~0.96 on the
                // synthetic masks (~4 s each on 2 idle cores).
                cfg.time_budget_s = None;
                cfg.epochs = 20;
                cfg.patience = cfg.epochs;
            }
            // v2: the real-data UNet trains on every default set with the CPU default.
            let version = if world_root.is_some() {
                "unet-v1"
            } else {
                "unet-v2"
            };
            let key = key_of(&(version, &cfg, world_summary.as_ref().map(|_| &ingest_key)));
            notes.push(format!(
                "Lung UNet trained on {what} (base {}, {} px).",
                cfg.unet.base, cfg.unet.size
            ));
            let report: serde_json::Value = cached("segment-train", &unet_dir, &key, || {
                let report = cxr_segment::train(&cfg).with_context(|| {
                    format!(
                        "training the lung UNet on {}",
                        data.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                Ok(serde_json::to_value(&report)?)
            })?;
            (weights, Some(report))
        }
    };
    let seg_dir = dir.join("segment");
    let seg_key = key_of(&(
        // v2: the summary counts per source (`by_source`).
        "segment-v2",
        file_key(&pre_manifest)?,
        file_key(&segmenter)?,
    ));
    let segment: serde_json::Value = cached("segment", &seg_dir, &seg_key, || {
        let seg = cxr_segment::Segmenter::load(&segmenter)
            .with_context(|| format!("loading lung UNet {}", segmenter.display()))?;
        let pb = bar("segment", 0);
        let summary = cxr_segment::segment_manifest(
            &seg,
            &pre_manifest,
            &seg_dir,
            &cxr_segment::SegmentOptions::default(),
            &mut |done, total| {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            },
        )
        .with_context(|| format!("segmenting {}", pre_manifest.display()))?;
        pb.finish_and_clear();
        Ok(serde_json::to_value(&summary)?)
    })?;

    for w in super::rejections::uneven(&super::rejections::from_summary(&segment)) {
        tracing::warn!("segment ({tag}): {}", w.message);
    }
    if segment.get("kept").and_then(|k| k.as_u64()) == Some(0) {
        bail!(
            "the lung UNet {} rejected every image ({}): retrain it (delete {}) or pass --segmenter WEIGHTS",
            segmenter.display(),
            segment
                .get("rejected")
                .map(|r| r.to_string())
                .unwrap_or_default(),
            segmenter.display()
        );
    }
    Ok(Prepared {
        choice_label: choice.describe(),
        tag,
        dir,
        world_root,
        world_summary,
        ingest,
        preprocess,
        manifest: seg_dir.join("manifest.csv"),
        segment,
        segmenter,
        segmenter_report,
        notes,
    })
}

/// The training report beside given UNet weights (`W.report.json`, as `segment train` writes it), when there is
/// one: the report's segmenter section shows its held-out Dice and worst cases. Weights without a report (or an
/// unreadable one) simply leave that part out.
fn report_beside(weights: &Path) -> Option<serde_json::Value> {
    let path = weights.with_extension("report.json");
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("segmenter report {} left out: {e}", path.display());
            None
        }
    }
}

/// Preprocessing for the study: min-max for window-less sources (the authors' code), metadata windows where
/// the dataset has them (PadChest, BIMCV), resized so the longest side is the profile's size.
fn preprocess_config(profile: &Profile) -> cxr_preprocess::config::PreprocessConfig {
    cxr_preprocess::config::PreprocessConfig {
        size: profile.preprocess_size,
        ..Default::default()
    }
}

/// Folder name of a real dataset under `--data-root` (the names the datasets ship with; docs/DATASETS.md).
fn real_folder(dataset: &str) -> &'static str {
    match dataset {
        "bimcv" => "BIMCV-COVID19+",
        "covid19-ar" => "COVID-19-AR",
        "v2-cov19-nii" => "V2-COV19-NII",
        "nih" => "ChestX-ray14",
        "chexpert" => "CheXpert-v1.0-small",
        "padchest" => "PadChest",
        _ => "cohen-covid-chestxray",
    }
}

/// `$CXR_SHARED_DATA`, else `../shared/data`.
pub fn shared_data() -> PathBuf {
    match std::env::var_os("CXR_SHARED_DATA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("../shared/data"),
    }
}
