//! Grad-CAM of our own classifiers over a manifest (`cxr explain`): overlays, galleries per source and
//! class, `lung_energy.csv` (the audit's saliency evidence for a model with gradients).

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use cxr_core::{Manifest, Split};
use cxr_explain::{
    CamModel, CamTarget, ExplainConfig, ExplainOutputs, ExplainWriter, ModelSnapshot,
};
use cxr_model::{Classifier, ImageRow};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StepExt};
use crate::input::{
    cam_item, check_manifest, mask_column, read_columns, required_columns, samples,
};
use crate::load::OurModel;
use crate::progress::{Bar, Progress};

/// Options of [`run_grad_cam`]; `Default` gives `cxr explain`'s (with no output folder: set `out`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GradCamConfig {
    /// The manifest column the model reads; `None`: the one it was trained on.
    pub column: Option<String>,
    /// Only this split; `None`: every row.
    pub split: Option<Split>,
    /// At most this many images (in manifest order).
    pub limit: Option<usize>,
    /// Images per forward and backward pass (`cxr explain`'s default: 8).
    pub batch_size: usize,
    /// Output folder: `overlays/`, `gallery/`, `lung_energy.csv`, `lung_energy_summary.csv`.
    pub out: PathBuf,
}

/// What a Grad-CAM run wrote, and the images it had to leave out.
#[derive(Debug, Clone)]
pub struct GradCamOutcome {
    pub outputs: ExplainOutputs,
    /// `id: reason` of each image left out (unreadable image or mask).
    pub skipped: Vec<String>,
}

/// Explain's view of the trained classifier: the contract of `cxr_explain::CamModel`.
struct Cam<'a>(&'a Classifier);

/// The activations are centered on the head's standardisation mean (see
/// `Classifier::centered_feature_map`): what the standardised head compares each image with.
impl CamModel for Cam<'_> {
    fn feature_map(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.centered_feature_map(x)
    }
    fn logit_from_feature_map(&self, fmap: &Tensor) -> candle_core::Result<Tensor> {
        self.0.logit_from_centered_feature_map(fmap)
    }
}

/// Fingerprint of every tensor the classifier owns (weights and BatchNorm running statistics).
fn snapshot(model: &Classifier) -> cxr_explain::Result<ModelSnapshot> {
    ModelSnapshot::from_named(
        model
            .params()
            .iter()
            .map(|(n, p)| (n.clone(), p.var.as_tensor().clone())),
    )
}

/// The audit's columns, but `split` only when one split is chosen: Grad-CAM explains every row otherwise.
fn needs(column: &str, cfg: &GradCamConfig) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = required_columns(column)
        .into_iter()
        .filter(|(c, _)| c != "split" || cfg.split.is_some())
        .collect();
    // Grad-CAM's lung energy reads the manifest's own masks.
    if !cols.iter().any(|(c, _)| c == "mask") {
        cols.push(mask_column());
    }
    cols
}

/// Grad-CAM of the Covid-19 logit on every row (of one split) with an image and a mask, under the
/// immutability guard (a changed weight or running statistic is an error).
pub fn run_grad_cam(
    model: &OurModel,
    manifest: &Path,
    cfg: &GradCamConfig,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<GradCamOutcome> {
    let column = cfg.column.as_deref().unwrap_or(&model.column);
    let m = read_columns(manifest, &needs(column, cfg))?;
    run_grad_cam_on(model, &m, manifest, cfg, progress)
}

/// [`run_grad_cam`] on a manifest in memory (`manifest_path` names it in errors).
pub fn run_grad_cam_on(
    model: &OurModel,
    manifest: &Manifest,
    manifest_path: &Path,
    cfg: &GradCamConfig,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<GradCamOutcome> {
    let column = cfg.column.as_deref().unwrap_or(&model.column);
    check_manifest(manifest, manifest_path, needs(column, cfg))?;
    let mut todo = samples(manifest, manifest_path, column, cfg.split)?;
    if let Some(n) = cfg.limit {
        todo.truncate(n);
    }
    let mut writer = ExplainWriter::new(&cfg.out, ExplainConfig::default())
        .step(format!("output folder {}", cfg.out.display()))?;
    let cam = Cam(&model.model);
    let bar = Bar::new(progress, "Grad-CAM".into(), todo.len());
    let mut skipped = Vec::new();
    for chunk in todo.chunks(cfg.batch_size.max(1)) {
        let rows: Vec<&ImageRow> = chunk.iter().map(|s| &s.row).collect();
        let x = cxr_model::data::batch_tensor(&rows, model.size, model.model.device())
            .step("loading a batch")?;
        let g =
            cxr_explain::grad_cam_guarded(&cam, &x, CamTarget::Covid, || snapshot(&model.model))
                .step("Grad-CAM")?;
        for ((s, heat), logit) in chunk.iter().zip(&g.heatmaps).zip(&g.logits) {
            let added = cam_item(manifest, s, column).and_then(|item| {
                Ok(writer.add_with_map(&item, heat, *logit, Some(g.feature_size.0))?)
            });
            if let Err(e) = added {
                tracing::warn!(id = %s.row.id, "explain: skipped: {e}");
                skipped.push(format!("{}: {e}", s.row.id));
            }
            bar.inc(1);
        }
    }
    drop(bar);
    let outputs = writer.finish().step("writing outputs")?;
    Ok(GradCamOutcome { outputs, skipped })
}
