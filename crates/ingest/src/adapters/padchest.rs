//! PadChest: `PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv` (or `.csv.gz`) + `<ImageDir>/<ImageID>`.
//!
//! Selection (paper): `Projection` in {PA, AP, AP_horizontal} and `Labels` exactly `['pneumonia']` →
//! pneumonia (clean world: exactly `['COVID 19']` → covid). The DICOM window and photometric columns go to
//! `window_center`, `window_width` (first value) and `photometric`; also `age` (study year − birth year; the
//! birth year itself never leaves) and `sex`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Label, SourceId};

use super::{
    Candidate, DatasetAdapter, Selection, Table, field, first_number, num_cell, py_list, source,
};
use crate::error::{IngestError, Result};

/// Adapter of PadChest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Padchest;

fn find_csv(root: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| IngestError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_uppercase())
                .unwrap_or_default();
            n.starts_with("PADCHEST") && (n.ends_with(".CSV") || n.ends_with(".CSV.GZ"))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or_else(|| IngestError::dataset(root, "no PADCHEST_*.csv label file"))
}

impl DatasetAdapter for Padchest {
    fn name(&self) -> &'static str {
        "padchest"
    }

    fn describe(&self) -> &'static str {
        "PadChest: PADCHEST_*.csv; labels exactly ['pneumonia'], PA/AP; keeps the window columns"
    }

    fn select(&self, root: &Path) -> Result<Selection> {
        let t = Table::read(&find_csv(root)?, b',')?;
        let (c_id, c_dir, c_pat, c_proj, c_lab) = (
            t.col("ImageID")?,
            t.col("ImageDir")?,
            t.col("PatientID")?,
            t.col("Projection")?,
            t.col("Labels")?,
        );
        let c_wc = t.opt_col("WindowCenter_DICOM");
        let c_ww = t.opt_col("WindowWidth_DICOM");
        let c_pi = t.opt_col("PhotometricInterpretation_DICOM");
        let c_birth = t.opt_col("PatientBirth");
        let c_date = t.opt_col("StudyDate_DICOM");
        let c_sex = t.opt_col("PatientSex_DICOM");
        let mut sel = Selection::default();
        for row in &t.rows {
            let proj = field(row, c_proj);
            let view = match proj {
                "PA" => "PA",
                "AP" | "AP_horizontal" => "AP",
                _ => continue,
            };
            let labels = py_list(field(row, c_lab));
            let label = match labels
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["pneumonia"] => Label::Pneumonia,
                ["COVID 19"] => Label::Covid,
                _ => continue,
            };
            let (id, dir) = (field(row, c_id), field(row, c_dir));
            if id.is_empty() || id.contains('/') || id.contains("..") || dir.contains("..") {
                continue;
            }
            let path = root.join(dir).join(id);
            if !path.is_file() {
                sel.missing.push(format!("{dir}/{id}"));
                continue;
            }
            let mut extra = BTreeMap::new();
            let num = |c: Option<usize>| {
                c.and_then(|c| first_number(field(row, c)))
                    .map(num_cell)
                    .unwrap_or_default()
            };
            extra.insert("window_center".into(), num(c_wc));
            extra.insert("window_width".into(), num(c_ww));
            let pi = c_pi
                .map(|c| field(row, c).to_ascii_uppercase())
                .unwrap_or_default();
            extra.insert(
                "photometric".into(),
                if pi == "MONOCHROME1" || pi == "MONOCHROME2" {
                    pi
                } else {
                    String::new()
                },
            );
            let birth = c_birth.and_then(|c| first_number(field(row, c)));
            let year =
                c_date.and_then(|c| field(row, c).get(..4).and_then(|y| y.parse::<f64>().ok()));
            let age = match (birth, year) {
                (Some(b), Some(y)) if y >= b => num_cell(y - b),
                _ => String::new(),
            };
            extra.insert("age".into(), age);
            extra.insert(
                "sex".into(),
                c_sex.map(|c| field(row, c).to_string()).unwrap_or_default(),
            );
            sel.candidates.push(Candidate {
                source: source(SourceId::PADCHEST),
                label,
                patient_key: field(row, c_pat).to_string(),
                view: view.to_string(),
                path,
                extra,
            });
        }
        Ok(sel)
    }
}
