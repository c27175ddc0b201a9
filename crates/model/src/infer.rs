//! Inference: scores for a manifest, and embeddings (`features.csv`: `id, f0 … fN`).

use std::path::{Path, PathBuf};

use candle_core::Device;
use cxr_core::{Label, Manifest, Prediction, SourceId, Split};

use crate::data::{ImageRow, batch_tensor, rows_from_manifest};
use crate::error::{CandleContext, ModelError, Result};
use crate::net::{Arch, Classifier, Mode};
use crate::train::features_of;

/// P(Covid-19) for every row (inference mode), in batches.
pub fn predict_rows(
    model: &Classifier,
    rows: &[&ImageRow],
    image_size: usize,
    batch_size: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size.max(1)) {
        let x = batch_tensor(chunk, image_size, model.device())?;
        let l = model
            .logits(&x)
            .and_then(|l| l.to_vec1::<f32>())
            .ctx(|| "inference".into())?;
        out.extend(l.into_iter().map(|v| 1.0 / (1.0 + (-(v as f64)).exp())));
    }
    Ok(out)
}

/// Scores every row of a manifest that has an image in `column` (rows with an empty cell are skipped).
/// Rows without a split are reported as `test`.
pub fn predict_manifest(
    model: &Classifier,
    manifest_path: &Path,
    column: &str,
    image_size: usize,
    batch_size: usize,
    model_name: &str,
) -> Result<Vec<Prediction>> {
    let manifest = Manifest::read(manifest_path)?;
    let (rows, _) = rows_from_manifest(&manifest, column, manifest_path)?;
    let refs: Vec<&ImageRow> = rows.iter().collect();
    let scores = predict_rows(model, &refs, image_size, batch_size)?;
    Ok(rows
        .iter()
        .zip(scores)
        .map(|(r, score)| Prediction {
            id: r.id.clone(),
            source: r.source.clone(),
            split: r.split.unwrap_or(Split::Test),
            label: r.label,
            score,
            patient: r.patient.clone(),
            model: model_name.to_string(),
        })
        .collect())
}

/// Loads a classifier saved by training (`model.safetensors`), ready for inference and Grad-CAM.
pub fn load_classifier(arch: &Arch, model_path: &Path) -> Result<Classifier> {
    let mut m = Classifier::new(arch, Mode::Frozen, 0, &Device::Cpu)?;
    m.load_all(model_path)?;
    Ok(m)
}

/// Embedding settings.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub backbone: Arch,
    /// torchvision/timm backbone weights; `None`: random initialisation (announced).
    pub weights: Option<PathBuf>,
    pub image_size: usize,
    pub batch_size: usize,
    /// Manifest image column; default `crop` when the manifest has it, else `png8`.
    pub column: Option<String>,
    /// Seed of the random initialisation when there are no weights.
    pub seed: u64,
    /// Embed only this shard's manifest rows (`cxr_core::shard`; the caller names the part file).
    pub shard: Option<cxr_core::Shard>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            backbone: Arch::resnet50(),
            weights: None,
            image_size: 224,
            batch_size: 16,
            column: None,
            seed: 0,
            shard: None,
        }
    }
}

/// What [`embed`] wrote.
#[derive(Debug, Clone)]
pub struct EmbedReport {
    pub images: usize,
    pub dim: usize,
    pub pretrained: bool,
}

/// Rows to embed: a folder (every `.png`, sorted, id = file stem) or a manifest (CSV).
pub fn embed_inputs(input: &Path, column: Option<&str>) -> Result<Vec<ImageRow>> {
    embed_inputs_of_shard(input, column, None)
}

/// [`embed_inputs`], keeping only a shard's manifest rows (a folder cannot be sharded: its order is not a
/// manifest's).
pub fn embed_inputs_of_shard(
    input: &Path,
    column: Option<&str>,
    shard: Option<&cxr_core::Shard>,
) -> Result<Vec<ImageRow>> {
    if input.is_dir() {
        if shard.is_some() {
            return Err(ModelError::Data {
                path: input.to_path_buf(),
                message: "a folder cannot be sharded: give a manifest".into(),
            });
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .map_err(|e| ModelError::io(input, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
            .collect();
        files.sort();
        let unknown = SourceId::new("unknown")?;
        Ok(files
            .into_iter()
            .map(|p| ImageRow {
                id: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: p,
                source: unknown.clone(),
                label: Label::Normal,
                split: None,
                patient: String::new(),
                aug: None,
            })
            .collect())
    } else {
        let mut manifest = Manifest::read(input)?;
        if let Some(s) = shard {
            manifest = s.filter(&manifest);
        }
        let col = match column {
            Some(c) => c.to_string(),
            None if manifest.extra_columns.iter().any(|c| c == "crop") => "crop".into(),
            None => "png8".into(),
        };
        Ok(rows_from_manifest(&manifest, &col, input)?.0)
    }
}

/// Writes `features.csv` (`id, f0 … fN`, pooled backbone features in inference mode) for every input image.
pub fn embed(input: &Path, out: &Path, opts: &EmbedOptions) -> Result<EmbedReport> {
    let rows = embed_inputs_of_shard(input, opts.column.as_deref(), opts.shard.as_ref())?;
    let mut model = Classifier::new(&opts.backbone, Mode::Frozen, opts.seed, &Device::Cpu)?;
    match &opts.weights {
        Some(w) => model.load_backbone(w)?,
        None => {
            tracing::warn!(backbone = %opts.backbone, "NO BACKBONE WEIGHTS: embedding with a RANDOMLY INITIALISED backbone")
        }
    }
    let refs: Vec<&ImageRow> = rows.iter().collect();
    let feats = features_of(&model, &refs, opts.image_size, opts.batch_size)?;
    let dim = opts.backbone.feature_dim();
    let data = feats
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .ctx(|| "features".into())?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| ModelError::Data {
        path: out.to_path_buf(),
        message: e.to_string(),
    };
    let mut header = vec!["id".to_string()];
    header.extend((0..dim).map(|i| format!("f{i}")));
    w.write_record(&header).map_err(csv_err)?;
    for (r, f) in rows.iter().zip(data.chunks(dim)) {
        let mut rec = vec![r.id.clone()];
        rec.extend(f.iter().map(|v| v.to_string()));
        w.write_record(&rec).map_err(csv_err)?;
    }
    let bytes = w.into_inner().map_err(|e| ModelError::Data {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    cxr_core::fsutil::write_atomic(out, &bytes)?;
    Ok(EmbedReport {
        images: rows.len(),
        dim,
        pretrained: model.pretrained(),
    })
}
