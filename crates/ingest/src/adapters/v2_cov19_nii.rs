//! V2-COV19-NII (Hannover): `data.csv` (`patient_id,image_id,sex,age,modality,projection[,finding]`) +
//! `images/<image_id>.nii.gz`.
//!
//! Selection: `projection` `ap` or `pa`, file present → covid (clean world: `finding` = `Pneumonia` →
//! pneumonia; a missing column or value means covid). Columns: `age`, `sex` (`m`/`w` → `M`/`F`).

use std::collections::BTreeMap;
use std::path::Path;

use cxr_core::{Label, SourceId};

use super::{Candidate, DatasetAdapter, Selection, Table, field, source};
use crate::error::Result;

/// Adapter of V2-COV19-NII.
#[derive(Debug, Clone, Copy, Default)]
pub struct V2Cov19Nii;

impl DatasetAdapter for V2Cov19Nii {
    fn name(&self) -> &'static str {
        "v2-cov19-nii"
    }

    fn describe(&self) -> &'static str {
        "V2-COV19-NII (Hannover): data.csv + images/<image_id>.nii.gz; AP/PA"
    }

    fn select(&self, root: &Path) -> Result<Selection> {
        let t = Table::read(&root.join("data.csv"), b',')?;
        let (c_pat, c_img, c_proj) = (
            t.col("patient_id")?,
            t.col("image_id")?,
            t.col("projection")?,
        );
        let (c_sex, c_age, c_find) = (t.opt_col("sex"), t.opt_col("age"), t.opt_col("finding"));
        let mut sel = Selection::default();
        for row in &t.rows {
            let view = field(row, c_proj).to_ascii_uppercase();
            if view != "AP" && view != "PA" {
                continue;
            }
            let id = field(row, c_img);
            if id.is_empty() || id.contains('/') || id.contains("..") {
                continue;
            }
            let Some(path) = [".nii.gz", ".nii"]
                .iter()
                .map(|ext| root.join("images").join(format!("{id}{ext}")))
                .find(|p| p.is_file())
            else {
                sel.missing.push(format!("images/{id}.nii.gz"));
                continue;
            };
            let label = match c_find
                .map(|c| field(row, c).to_ascii_lowercase())
                .as_deref()
            {
                Some("pneumonia") => Label::Pneumonia,
                _ => Label::Covid,
            };
            let sex = match c_sex.map(|c| field(row, c).to_ascii_lowercase()).as_deref() {
                Some("m") => "M",
                Some("w") | Some("f") => "F",
                _ => "",
            };
            let mut extra = BTreeMap::new();
            extra.insert(
                "age".into(),
                c_age.map(|c| field(row, c).to_string()).unwrap_or_default(),
            );
            extra.insert("sex".into(), sex.to_string());
            sel.candidates.push(Candidate {
                source: source(SourceId::V2_COV19_NII),
                label,
                patient_key: field(row, c_pat).to_string(),
                view,
                path,
                extra,
            });
        }
        Ok(sel)
    }
}
