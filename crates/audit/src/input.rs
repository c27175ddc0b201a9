//! The audit's input contract: which manifest columns it reads, and the images and masks behind them.
//!
//! Required: `id, source, label, split`, the image column (`png8`, `crop`, ...), `mask`, and with the `crop`
//! column its geometry (`crop_x, crop_y, crop_w, crop_h`): [`required_columns`]. Optional: `patient` (the
//! probe's folds keep a patient's images together; without it each image is its own patient) and `aug`
//! (augmented copies are left out). Every other column is ignored. The table for users, with who writes each
//! column, is `docs/AUDIT.md`; a manifest that lacks required columns is refused with all of them named in
//! one error ([`crate::AuditError::MissingColumns`]).

use std::collections::BTreeMap;
use std::path::Path;

use cxr_core::{Grey8, Manifest, ManifestRecord, Split};
use cxr_explain::CamItem;
use cxr_explain::occlusion;
use cxr_model::ImageRow;

use crate::error::{AuditError, Result};

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
    cols.push((
        "mask".into(),
        "lung masks on the full image: run `cxr segment predict` first".into(),
    ));
    if column == "crop" {
        for c in ["crop_x", "crop_y", "crop_w", "crop_h"] {
            cols.push((
                c.into(),
                "where the crop sits: written by `cxr segment`".into(),
            ));
        }
    }
    cols
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
