//! NIH ChestX-ray14: `Data_Entry_2017.csv` + `images/` (or the Kaggle mirror's `images_0NN/images/`).
//!
//! Selection (paper): `Finding Labels` exactly `Pneumonia` (single label) and `View Position` `PA` or `AP` →
//! pneumonia. In synth's clean world, `COVID-19` as the single label → covid. Columns: `age`, `sex`.

use std::collections::BTreeMap;
use std::path::Path;

use cxr_core::{Label, SourceId};

use super::{Candidate, DatasetAdapter, Selection, Table, field, index_by_name, source, walk};
use crate::error::{IngestError, Result};

/// Adapter of NIH ChestX-ray14.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nih;

impl DatasetAdapter for Nih {
    fn name(&self) -> &'static str {
        "nih"
    }

    fn describe(&self) -> &'static str {
        "NIH ChestX-ray14: Data_Entry_2017.csv; single label Pneumonia, PA/AP"
    }

    fn select(&self, root: &Path) -> Result<Selection> {
        let csv = ["Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"]
            .iter()
            .map(|n| root.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| IngestError::dataset(root, "no Data_Entry_2017.csv"))?;
        let t = Table::read(&csv, b',')?;
        let (c_img, c_lab, c_pat, c_view) = (
            t.col("Image Index")?,
            t.col("Finding Labels")?,
            t.col("Patient ID")?,
            t.col("View Position")?,
        );
        let (c_age, c_sex) = (t.opt_col("Patient Age"), t.opt_col("Patient Gender"));
        let files = index_by_name(walk(root, &|p| {
            p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
        })?);
        let mut sel = Selection::default();
        for row in &t.rows {
            let label = match field(row, c_lab) {
                "Pneumonia" => Label::Pneumonia,
                "COVID-19" => Label::Covid,
                _ => continue,
            };
            let view = field(row, c_view).to_ascii_uppercase();
            if view != "PA" && view != "AP" {
                continue;
            }
            let name = field(row, c_img);
            let Some(path) = files.get(name) else {
                sel.missing.push(name.to_string());
                continue;
            };
            let mut extra = BTreeMap::new();
            extra.insert(
                "age".into(),
                c_age.map(|c| field(row, c).to_string()).unwrap_or_default(),
            );
            extra.insert(
                "sex".into(),
                c_sex.map(|c| field(row, c).to_string()).unwrap_or_default(),
            );
            sel.candidates.push(Candidate {
                source: source(SourceId::NIH),
                label,
                patient_key: field(row, c_pat).to_string(),
                view,
                path: path.clone(),
                extra,
            });
        }
        Ok(sel)
    }
}
