//! The Cohen et al. covid-chestxray collection (`metadata.csv` + `images/`).
//!
//! Selection: `modality` = `X-ray`, `view` in {`PA`, `AP`, `AP Supine`} (frontal), and the file present in
//! `images/`. Label from `finding`: containing `COVID-19` → covid, `No Finding` → normal, anything else (SARS,
//! Pneumocystis, Streptococcus, ARDS, Lipoid, ...) → other pneumonia. Source: `cohen:<location slug>`
//! (`cohen:unknown` when blank), because the location (hospital, city) is the data source the confounding
//! question is about. Columns: `location`, `finding`, `license`.

use std::collections::BTreeMap;
use std::path::Path;

use cxr_core::{Label, SourceId};

use super::{Candidate, DatasetAdapter, Selection, Table, field};
use crate::error::{IngestError, Result};

/// Adapter of the Cohen collection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cohen;

/// Finding → label (see the module doc).
pub fn cohen_label(finding: &str) -> Label {
    let f = finding.trim().to_ascii_lowercase();
    if f.contains("covid-19") || f.contains("covid19") {
        Label::Covid
    } else if f == "no finding" || f == "normal" {
        Label::Normal
    } else {
        Label::Pneumonia
    }
}

/// Location → source id.
pub fn cohen_source(location: &str) -> Result<SourceId> {
    // Lower-cased: free text, where `Hannover` and `hannover` name one place.
    let lowered = location.trim().to_ascii_lowercase();
    let loc = lowered.as_str();
    let id = if loc.is_empty() || SourceId::new(loc).is_err() {
        "cohen:unknown".to_string()
    } else {
        format!("cohen:{loc}")
    };
    Ok(SourceId::new(&id)?)
}

impl DatasetAdapter for Cohen {
    fn name(&self) -> &'static str {
        "cohen"
    }

    fn describe(&self) -> &'static str {
        "Cohen covid-chestxray: metadata.csv + images/; frontal X-rays; source = cohen:<location>"
    }

    fn select(&self, root: &Path) -> Result<Selection> {
        let meta = root.join("metadata.csv");
        let t = Table::read(&meta, b',')?;
        let (c_pat, c_find, c_view, c_mod, c_loc, c_file, c_lic) = (
            t.col("patientid")?,
            t.col("finding")?,
            t.col("view")?,
            t.col("modality")?,
            t.col("location")?,
            t.col("filename")?,
            t.opt_col("license"),
        );
        let c_folder = t.opt_col("folder");
        let mut sel = Selection::default();
        for (i, row) in t.rows.iter().enumerate() {
            let view = field(row, c_view);
            let frontal = matches!(
                view.to_ascii_uppercase().as_str(),
                "PA" | "AP" | "AP SUPINE"
            );
            if field(row, c_mod) != "X-ray" || !frontal {
                continue;
            }
            let file = field(row, c_file);
            if file.is_empty() || file.contains("..") || file.starts_with('/') {
                return Err(IngestError::Metadata {
                    path: meta.clone(),
                    line: i as u64 + 2,
                    message: format!("unusable filename {file:?}"),
                });
            }
            let folder = c_folder
                .map(|c| field(row, c))
                .filter(|f| !f.is_empty())
                .unwrap_or("images");
            let path = root.join(folder).join(file);
            if !path.is_file() {
                sel.missing.push(format!("{folder}/{file}"));
                continue;
            }
            let finding = field(row, c_find);
            let location = field(row, c_loc);
            let mut extra = BTreeMap::new();
            extra.insert("location".to_string(), location.to_string());
            extra.insert("finding".to_string(), finding.to_string());
            extra.insert(
                "license".to_string(),
                c_lic.map(|c| field(row, c).to_string()).unwrap_or_default(),
            );
            sel.candidates.push(Candidate {
                source: cohen_source(location)?,
                label: cohen_label(finding),
                patient_key: field(row, c_pat).to_string(),
                view: view.to_ascii_uppercase(),
                path,
                extra,
            });
        }
        Ok(sel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_and_locations_map() {
        assert_eq!(cohen_label("COVID-19"), Label::Covid);
        assert_eq!(cohen_label("COVID-19, ARDS"), Label::Covid);
        assert_eq!(cohen_label("No Finding"), Label::Normal);
        assert_eq!(cohen_label("Streptococcus"), Label::Pneumonia);
        assert_eq!(cohen_label("ARDS"), Label::Pneumonia);
        assert_eq!(cohen_source("").unwrap().as_str(), "cohen:unknown");
        assert_eq!(
            cohen_source("Hannover Medical School, Hannover, Germany")
                .unwrap()
                .as_str(),
            "cohen:hannover-medical-school-hannover-germany"
        );
    }
}
