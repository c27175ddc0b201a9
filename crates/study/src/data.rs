//! Data stages of the study: world (or real data) → ingest → preprocess → segment + crop.

use std::path::{Path, PathBuf};

use cxr_core::Manifest;
use cxr_preprocess::batch::BatchSummary;
use cxr_segment::{SegmentSummary, TrainReport};
use cxr_synth::WorldSummary;
use serde::{Deserialize, Serialize};

use crate::Env;
use crate::config::World;
use crate::error::{Context as _, Result, StudyError};
use crate::stage::{cached, file_key, key_of};

/// Which data a run uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DataChoice {
    Synthetic(World),
    /// The paper world with one confounder group planted alone (the audit's sensitivity study).
    Isolated(cxr_synth::ConfounderKind),
    /// Real datasets: root and dataset names (adapters).
    Real {
        root: PathBuf,
        datasets: Vec<String>,
    },
}

impl DataChoice {
    /// The main run's data: the configured world, or the real datasets under `data_root`.
    pub fn main(config: &crate::StudyConfig) -> Self {
        match &config.data_root {
            None => DataChoice::Synthetic(config.world),
            Some(root) => DataChoice::Real {
                root: root.clone(),
                datasets: match config.dataset.as_deref() {
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
            DataChoice::Synthetic(World::Paper) => {
                "synthetic world `paper` (each source holds one class, as in the paper)".into()
            }
            DataChoice::Synthetic(World::Clean) => {
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

    /// The name of the data's folder, `data-<tag>` (`world-paper`, `world-only-grid`, `real-cohen`).
    pub fn tag(&self) -> String {
        match self {
            DataChoice::Synthetic(World::Paper) => "world-paper".to_string(),
            DataChoice::Synthetic(World::Clean) => "world-clean".to_string(),
            DataChoice::Isolated(g) => format!("world-only-{g}"),
            DataChoice::Real { datasets, .. } => format!("real-{}", datasets.join("+")),
        }
    }
}

/// What the data stages produced (`results.json` `data`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prepared {
    pub choice_label: String,
    pub tag: String,
    /// Folder of this data's stage outputs.
    pub dir: PathBuf,
    /// Synthetic world root (None for real data).
    pub world_root: Option<PathBuf>,
    pub world_summary: Option<WorldSummary>,
    pub ingest: IngestResult,
    pub preprocess: BatchSummary,
    /// The manifest with `png8`, `mask`, `crop` and the crop columns (rejected rows included, with a reason).
    pub manifest: PathBuf,
    pub segment: SegmentSummary,
    pub segmenter: PathBuf,
    /// The UNet's training report: trained here, or `W.report.json` beside given weights.
    pub segmenter_report: Option<TrainReport>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestResult {
    pub manifest: PathBuf,
    pub images: usize,
    pub per_dataset: Vec<DatasetCount>,
}

/// Images of one dataset at ingest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    env: Env<'_>,
    choice: DataChoice,
    out: &Path,
    segmenter: Option<PathBuf>,
) -> Result<Prepared> {
    let Env {
        config,
        profile,
        progress,
        ..
    } = env;
    let tag = choice.tag();
    let dir = out.join(format!("data-{tag}"));
    let mut notes = Vec::new();

    // 1. The world (synthetic) or the dataset roots (real).
    let (world_root, world_summary, roots): (
        Option<PathBuf>,
        Option<WorldSummary>,
        Vec<(String, PathBuf)>,
    ) = match &choice {
        DataChoice::Synthetic(_) | DataChoice::Isolated(_) => {
            let (kind, only) = match &choice {
                DataChoice::Synthetic(World::Clean) => (cxr_synth::WorldKind::Clean, None),
                DataChoice::Isolated(g) => (cxr_synth::WorldKind::Paper, Some(*g)),
                _ => (cxr_synth::WorldKind::Paper, None),
            };
            let cfg = cxr_synth::WorldConfig {
                kind,
                only,
                per_source: profile.per_source,
                size: profile.world_size,
                seed: config.seed,
                signal: config.signal.unwrap_or(1.0),
                gallery: true,
                ..cxr_synth::WorldConfig::default()
            };
            let world_dir = dir.join("world");
            let key = key_of(&("synth-v1", &cfg));
            let summary: WorldSummary = cached("synth", &world_dir, &key, || {
                let summary =
                    cxr_synth::generate_with_progress(&cfg, &world_dir, &|done, total| {
                        progress.update("synth", done, total)
                    })
                    .ctx(|| format!("generating the synthetic world in {}", world_dir.display()))?;
                progress.finish("synth");
                Ok(summary)
            })?;
            let roots = summary
                .sources
                .iter()
                .map(|s| (s.id.clone(), s.root.clone()))
                .collect();
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
    // The key hashes the world summary with sorted keys, as it was stored before the summary was typed, so
    // that existing outputs stay valid.
    let summary_key = world_summary
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .ctx(|| "hashing the world summary".to_string())?;
    let ingest_key = key_of(&("ingest-v1", &roots, &summary_key));
    let ingest: IngestResult = cached("ingest", &ingest_dir, &ingest_key, || {
        let pseudo = cxr_core::privacy::Pseudonymizer::from_env();
        let mut merged = Manifest::default();
        let mut per_dataset = Vec::new();
        for (name, root) in &roots {
            let adapter = cxr_ingest::adapters::by_name(name).ok_or_else(|| {
                StudyError::Invalid(format!("no ingest adapter for dataset `{name}`"))
            })?;
            let scanned = cxr_ingest::scan(adapter.as_ref(), root, &pseudo)
                .ctx(|| format!("ingesting {name} from {}", root.display()))?;
            per_dataset.push(DatasetCount {
                dataset: name.clone(),
                selected: scanned.manifest.records.len(),
                missing: scanned.missing.len(),
                rejected: scanned.rejected.len(),
            });
            merged.records.extend(scanned.manifest.records);
        }
        if merged.records.is_empty() {
            return Err(StudyError::Invalid(format!(
                "no images selected from {roots:?}"
            )));
        }
        let path = ingest_dir.join("manifest.csv");
        cxr_ingest::write_manifest(&merged, &path).ctx(|| format!("writing {}", path.display()))?;
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
    let preprocess: BatchSummary = cached("preprocess", &pre_dir, &pre_key, || {
        let manifest = Manifest::read(&ingest.manifest)
            .ctx(|| format!("reading {}", ingest.manifest.display()))?;
        let total = manifest.records.len() as u64;
        let summary = cxr_preprocess::batch::run_batch(
            &manifest,
            &pre_dir,
            &pre_cfg,
            &cxr_preprocess::batch::BatchOptions::default(),
            |p: &Path| cxr_ingest::read_image(p),
            &|p| progress.update("preprocess", p.done as u64, total),
        )
        .ctx(|| format!("preprocessing into {}", pre_dir.display()))?;
        progress.finish("preprocess");
        Ok(summary)
    })?;
    let pre_manifest = pre_dir.join("manifest.csv");

    // 4. Segment: the lung UNet (given, reused, or trained here), masks, crops and the paper's rejections.
    let (segmenter, segmenter_report) = match segmenter.or_else(|| config.segmenter.clone()) {
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
                        StudyError::Invalid(format!(
                            "no lung UNet: pass --segmenter WEIGHTS, or make the default lung-mask sets ({}) \
                             available under {} (CXR_SHARED_DATA): {e}",
                            cxr_segment::data::DEFAULT_SETS.join(", "),
                            shared.display()
                        ))
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
            // Real images get the CPU default (128 px, 36 epochs) whatever the profile: the quick preset's
            // 64-px UNet finds synthetic lungs but not those of real Covid-19 films. Both are a fixed number
            // of epochs (no clock), so the UNet does not depend on the machine's load.
            let quick = profile.segment_quick && world_root.is_some();
            let mut cfg = if quick {
                cxr_segment::TrainConfig::quick(&first, &weights)
            } else {
                cxr_segment::TrainConfig::cpu_default(&first, &weights)
            };
            cfg.data = data.clone();
            cfg.resume = config.resume;
            cfg.seed = config.seed;
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
            let report: TrainReport = cached("segment-train", &unet_dir, &key, || {
                cxr_segment::train(&cfg).ctx(|| {
                    format!(
                        "training the lung UNet on {}",
                        data.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
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
    let segment: SegmentSummary = cached("segment", &seg_dir, &seg_key, || {
        let seg = cxr_segment::Segmenter::load(&segmenter)
            .ctx(|| format!("loading lung UNet {}", segmenter.display()))?;
        let summary = cxr_segment::segment_manifest(
            &seg,
            &pre_manifest,
            &seg_dir,
            &cxr_segment::SegmentOptions::default(),
            &mut |done, total| progress.update("segment", done as u64, total as u64),
        )
        .ctx(|| format!("segmenting {}", pre_manifest.display()))?;
        progress.finish("segment");
        Ok(summary)
    })?;

    for w in crate::rejections::uneven(&crate::rejections::per_source(&segment)) {
        tracing::warn!("segment ({tag}): {}", w.message);
    }
    if segment.kept == 0 {
        return Err(StudyError::Invalid(format!(
            "the lung UNet {} rejected every image ({}): retrain it (delete {}) or pass --segmenter WEIGHTS",
            segmenter.display(),
            serde_json::to_string(&segment.rejected).unwrap_or_default(),
            segmenter.display()
        )));
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
fn report_beside(weights: &Path) -> Option<TrainReport> {
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
fn preprocess_config(profile: &crate::Profile) -> cxr_preprocess::config::PreprocessConfig {
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
