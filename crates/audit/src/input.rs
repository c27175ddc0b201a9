//! The audit's input contract: which manifest columns it reads, and the images and masks behind them.
//!
//! Required: `id, source, label, split`, the image column (`png8`, `crop`, ...), and with the `crop` column
//! `mask` and the crop's geometry (`crop_x, crop_y, crop_w, crop_h`): [`required_columns`]. Optional: `mask`
//! for any other column (without it the audit computes lung masks with the shipped default lung UNet,
//! [`with_lung_masks`]), `patient` (the probe's folds keep a patient's images together; without it each
//! image is its own patient) and `aug` (augmented copies are left out). Every other column is ignored. The
//! table for users, with who writes each column, is `docs/AUDIT.md`; a manifest that lacks required columns
//! is refused with all of them named in one error ([`crate::AuditError::MissingColumns`]).

use std::collections::BTreeMap;
use std::path::Path;

use cxr_core::{Grey8, Manifest, ManifestRecord, Split};
use cxr_explain::CamItem;
use cxr_explain::occlusion;
use cxr_model::ImageRow;

use crate::error::{AuditError, Result, StepExt};

/// The columns the audit needs for images in `column`, each with what writes it.
pub fn required_columns(column: &str) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = [
        ("id", "a unique image id"),
        ("source", "the hospital or dataset of each image"),
        ("label", "covid or pneumonia"),
        (
            "split",
            "the model's training split: train/val/test; `cxr manifest split` applies a design",
        ),
    ]
    .into_iter()
    .map(|(c, w)| (c.to_string(), w.to_string()))
    .collect();
    cols.push((
        column.to_string(),
        "the images the model reads; choose another with --column".into(),
    ));
    if column == "crop" {
        // A crop's mask is the full image's mask cut the same way: the UNet must see the full image.
        cols.push(mask_column());
        for c in ["crop_x", "crop_y", "crop_w", "crop_h"] {
            cols.push((
                c.into(),
                "where the crop sits: written by `cxr segment`".into(),
            ));
        }
    }
    cols
}

/// The `mask` column and what writes it.
pub(crate) fn mask_column() -> (String, String) {
    (
        "mask".into(),
        "lung masks on the full image: run `cxr segment predict` first".into(),
    )
}

/// Whether the manifest has a `mask` column (the audit then uses its masks, as given).
pub fn has_masks(manifest: &Manifest) -> bool {
    manifest.columns().iter().any(|c| c == "mask")
}

/// Lung masks computed for an audit, and where they are.
pub(crate) struct ShippedMasks {
    /// The folder of the segment stage's outputs.
    pub dir: std::path::PathBuf,
    /// Images that got no mask (unreadable).
    pub unreadable: usize,
    /// The temporary folder holding them when the audit writes nothing (removed when dropped).
    _scratch: Option<tempfile::TempDir>,
}

/// The manifest with lung masks: as given when it has a `mask` column; else a copy whose `mask` cells are
/// the shipped default lung UNet's masks ([`cxr_segment::Segmenter::default_lung`]) of the images in
/// `column`, made by the segment stage itself ([`cxr_segment::segment_records`], the code of `cxr segment
/// predict`) into `out/lung-masks/` (a temporary folder without `out`): `masks/`, `crops/`, `manifest.csv`
/// (reusable as the next audit's manifest) and `rejects.csv`. Rows whose image cannot be read get no mask,
/// and the audit leaves them out as it leaves out a row without a mask.
pub(crate) fn with_lung_masks<'a>(
    manifest: &'a Manifest,
    manifest_path: &Path,
    column: &str,
    out: Option<&Path>,
    progress: &(dyn Fn(crate::Progress<'_>) + Sync),
) -> Result<(std::borrow::Cow<'a, Manifest>, Option<ShippedMasks>)> {
    if has_masks(manifest) {
        return Ok((std::borrow::Cow::Borrowed(manifest), None));
    }
    let (dir, scratch) = match out {
        Some(o) => (o.join("lung-masks"), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("cxr-audit-masks")
                .tempdir()
                .map_err(AuditError::io(std::env::temp_dir()))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    tracing::info!(
        "audit: {} has no `mask` column: lung masks from the shipped default lung UNet ({}) into {}",
        manifest_path.display(),
        cxr_segment::DEFAULT_LUNG_UNET_NAME,
        dir.display()
    );
    let seg = cxr_segment::Segmenter::default_lung().step("loading the shipped lung UNet")?;
    let opts = cxr_segment::SegmentOptions {
        image_column: column.to_string(),
        ..Default::default()
    };
    let step = "lung masks (shipped UNet)";
    let (summary, segmented) =
        cxr_segment::segment_records(&seg, manifest.clone(), &dir, &opts, &mut |done, total| {
            progress(crate::Progress { step, done, total })
        })
        .step("computing lung masks with the shipped UNet")?;
    // Only the `mask` cells are taken: the crop columns the stage also wrote are for a later run.
    let mut with = manifest.clone();
    for (r, s) in with.records.iter_mut().zip(&segmented.records) {
        r.set("mask", s.get("mask").unwrap_or_default());
    }
    with.extra_columns.push("mask".into());
    let masks = ShippedMasks {
        dir,
        unreadable: summary
            .rejected
            .get(cxr_segment::infer::UNREADABLE)
            .copied()
            .unwrap_or(0),
        _scratch: scratch,
    };
    Ok((std::borrow::Cow::Owned(with), Some(masks)))
}

/// Reads a manifest for the audit of a model reading `column`: refuses one that lacks required columns
/// (naming all of them), accepts one without the columns the audit does not read.
pub fn read_manifest(path: &Path, column: &str) -> Result<Manifest> {
    read_columns(path, &required_columns(column))
}

/// [`read_manifest`] of a table held in memory (CSV text): `name` stands for the file in errors, relative
/// image paths resolve against `base_dir`.
pub fn read_manifest_from(
    csv: &[u8],
    name: &Path,
    base_dir: &Path,
    column: &str,
) -> Result<Manifest> {
    let required = required_columns(column);
    let names: Vec<&str> = required.iter().map(|(c, _)| c.as_str()).collect();
    missing_named(
        Manifest::read_lenient_from(csv, name, base_dir, &names),
        &required,
    )
}

/// Reads a manifest that must have the `required` columns (`(column, what writes it)`).
pub(crate) fn read_columns(path: &Path, required: &[(String, String)]) -> Result<Manifest> {
    let names: Vec<&str> = required.iter().map(|(c, _)| c.as_str()).collect();
    missing_named(Manifest::read_lenient(path, &names), required)
}

/// A reader's missing columns, each with what writes it.
fn missing_named(
    read: std::result::Result<Manifest, cxr_core::CoreError>,
    required: &[(String, String)],
) -> Result<Manifest> {
    match read {
        Ok(m) => Ok(m),
        Err(cxr_core::CoreError::MissingColumns { path, columns }) => {
            Err(AuditError::MissingColumns {
                path,
                columns: required
                    .iter()
                    .filter(|(c, _)| columns.contains(c))
                    .cloned()
                    .collect(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses a manifest (possibly built in memory) that lacks `required` columns (an empty `split` column
/// counts as missing).
pub(crate) fn check_manifest(
    manifest: &Manifest,
    path: &Path,
    required: Vec<(String, String)>,
) -> Result<()> {
    let present = manifest.columns();
    // `Manifest::columns` lists `split` only when some row has one: an empty column is as good as none.
    let no_split = manifest.records.iter().all(|r| r.split.is_none());
    let missing: Vec<(String, String)> = required
        .into_iter()
        .filter(|(c, _)| {
            if c == "split" {
                no_split
            } else {
                !present.contains(c)
            }
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AuditError::MissingColumns {
            path: path.to_path_buf(),
            columns: missing,
        })
    }
}

/// One manifest row with its image (the model's input column).
pub(crate) struct Sample {
    pub row: ImageRow,
    pub record: ManifestRecord,
}

/// Rows with an image in `column` and a `mask`, originals only (no augmented copies), optionally one split.
pub(crate) fn samples(
    manifest: &Manifest,
    manifest_path: &Path,
    column: &str,
    split: Option<Split>,
) -> Result<Vec<Sample>> {
    let (rows, _) = cxr_model::data::rows_from_manifest(manifest, column, manifest_path)?;
    let by_id: BTreeMap<&str, &ManifestRecord> = manifest
        .records
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    Ok(rows
        .into_iter()
        .filter(|r| r.is_original() && split.is_none_or(|s| r.split == Some(s)))
        .filter_map(|row| {
            let record = (*by_id.get(row.id.as_str())?).clone();
            let has_mask = record.get("mask").is_some_and(|m| !m.trim().is_empty());
            has_mask.then_some(Sample { row, record })
        })
        .collect())
}

/// A sample as Grad-CAM and the saliency maps take it: its image and its lung mask on the same pixels.
pub(crate) fn cam_item(manifest: &Manifest, s: &Sample, column: &str) -> Result<CamItem> {
    let (image, mask) = image_and_mask(manifest, s, column)?;
    Ok(CamItem {
        id: s.row.id.clone(),
        source: s.row.source.clone(),
        label: s.row.label,
        image,
        mask,
    })
}

/// The image the model reads and the lung mask on the same pixels: the mask is drawn on the full `png8`, so
/// for the `crop` column it is cropped with `crop_x, crop_y, crop_w, crop_h` (and resized if the crop was).
pub(crate) fn image_and_mask(
    manifest: &Manifest,
    s: &Sample,
    column: &str,
) -> Result<(Grey8, Grey8)> {
    let image = cxr_explain::read_grey8(&s.row.path)?;
    let mask_cell = s.record.get("mask").unwrap_or_default();
    let mut mask = cxr_explain::read_grey8(&manifest.resolve_cell(mask_cell.trim()))?;
    if column == "crop" {
        let num = |c: &str| -> Result<u32> {
            s.record
                .get(c)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    AuditError::config(
                        format!("row {}", s.row.id),
                        format!("column `{c}` missing or not a number"),
                    )
                })
        };
        mask = occlusion::crop(
            &mask,
            num("crop_x")?,
            num("crop_y")?,
            num("crop_w")?,
            num("crop_h")?,
        )
        .map_err(|e| {
            AuditError::config(
                format!("row {}: cropping the mask", s.row.id),
                e.to_string(),
            )
        })?;
    }
    if (mask.width, mask.height) != (image.width, image.height) {
        mask = occlusion::resize_nearest(&mask, image.width, image.height)?;
    }
    Ok((image, mask))
}
