//! Images in, tensors out: manifest rows → normalised [N, 3, S, S] batches.
//!
//! An 8-bit grey PNG (any format `image` decodes; 16-bit is reduced to 8 bits) is resized to S x S (bilinear,
//! `image`'s Triangle filter), divided by 255, copied to three channels and normalised with the ImageNet mean
//! and standard deviation — what torchvision's weights expect.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cxr_core::{Label, Manifest, SourceId, Split, model_input};
use rayon::prelude::*;

use crate::error::{CandleContext, ModelError, Result};

pub use cxr_core::model_input::{IMAGENET_MEAN, IMAGENET_STD};

/// One image to score or train on.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRow {
    pub id: String,
    pub path: PathBuf,
    pub source: SourceId,
    pub label: Label,
    pub split: Option<Split>,
    pub patient: String,
    /// The `aug` column (`orig`, `flip`, ...) when the manifest has augmented rows.
    pub aug: Option<String>,
}

impl ImageRow {
    /// True for original (non-augmented) images.
    pub fn is_original(&self) -> bool {
        self.aug
            .as_deref()
            .is_none_or(|a| a.is_empty() || a == "orig")
    }
}

/// Rows of `manifest` with their image from `column` (resolved against the manifest's folder). Rows whose
/// cell is empty (e.g. segmentation rejects) are left out and counted. A column absent from the whole
/// manifest is an error naming it.
pub fn rows_from_manifest(
    manifest: &Manifest,
    column: &str,
    manifest_path: &Path,
) -> Result<(Vec<ImageRow>, usize)> {
    let core = ["path"];
    if !core.contains(&column) && !manifest.extra_columns.iter().any(|c| c == column) {
        return Err(ModelError::Data {
            path: manifest_path.to_path_buf(),
            message: format!(
                "image column `{column}` is not in the manifest (columns: {})",
                manifest.columns().join(", ")
            ),
        });
    }
    let mut rows = Vec::new();
    let mut skipped = 0;
    for r in &manifest.records {
        let cell = r.get(column).unwrap_or_default();
        if cell.trim().is_empty() {
            skipped += 1;
            continue;
        }
        let p = PathBuf::from(cell.trim());
        let path = if p.is_absolute() {
            p
        } else {
            manifest.base_dir.join(p)
        };
        rows.push(ImageRow {
            id: r.id.clone(),
            path,
            source: r.source.clone(),
            label: r.label,
            split: r.split,
            patient: r.patient.clone(),
            aug: r.get("aug").filter(|a| !a.is_empty()),
        });
    }
    Ok((rows, skipped))
}

/// Decodes one image into a normalised CHW vector of 3 * size * size floats.
pub fn load_image(path: &Path, id: &str, size: usize) -> Result<Vec<f32>> {
    let err = |message: String| ModelError::Image {
        path: path.to_path_buf(),
        id: id.to_string(),
        message,
    };
    let grey = cxr_core::png8::read_grey8(path).map_err(|e| match e {
        // The error's own path is `path`: name it once.
        cxr_core::CoreError::Image { message, .. } => err(message),
        cxr_core::CoreError::Io { source, .. } => err(source.to_string()),
        other => err(other.to_string()),
    })?;
    let (w, h) = (grey.width, grey.height);
    let img = image::GrayImage::from_raw(w, h, grey.data)
        .ok_or_else(|| err(format!("{w}x{h} image with a buffer of another size")))?;
    Ok(grey_to_input(&img, size))
}

/// One grey image as the model's input: `cxr_core::model_input`'s resize to `size` square (`image`'s
/// `Triangle` filter, unless already that size), replicated to 3 channels, ImageNet-normalised (CHW).
/// The one conversion every scorer uses (`cxr_core::Scorer`'s contract).
pub fn grey_to_input(img: &image::GrayImage, size: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(3 * size * size);
    // An `image::GrayImage` always holds width * height bytes, so the resize cannot refuse it.
    if let Some(plane) = model_input::resize_square(img.width(), img.height(), img.as_raw(), size) {
        model_input::push_normalised(&plane, &IMAGENET_MEAN, &IMAGENET_STD, &mut out);
    }
    out
}

/// Loads images in parallel into one [N, 3, size, size] tensor.
pub fn batch_tensor(rows: &[&ImageRow], size: usize, device: &Device) -> Result<Tensor> {
    let parts: Vec<Vec<f32>> = rows
        .par_iter()
        .map(|r| load_image(&r.path, &r.id, size))
        .collect::<Result<_>>()?;
    let data: Vec<f32> = parts.concat();
    Tensor::from_vec(data, (rows.len(), 3, size, size), device)
        .ctx(|| "building an image batch".into())
}
