//! CheXpert (v1.0-small layout): `train.csv`, `valid.csv`, `train/patientNNNNN/studyK/viewJ_frontal.jpg`.
//!
//! `Path` in the CSVs starts with the release folder name (`CheXpert-v1.0-small/...`): it is resolved from
//! the root's parent, or with its first component stripped. Selection (paper): `Frontal/Lateral` = `Frontal`,
//! `AP/PA` in {AP, PA}, `Pneumonia` = 1.0 and no other observation = 1.0 → pneumonia. Clean world: an extra
//! `COVID-19` column, 1.0 with no other observation 1.0 → covid. Columns: `age`, `sex`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Label, SourceId};

use super::{Candidate, DatasetAdapter, Selection, Table, field, source};
use crate::error::{IngestError, Result};

/// The 14 observation columns of CheXpert.
pub const OBSERVATIONS: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// Adapter of CheXpert.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chexpert;

fn positive(v: &str) -> bool {
    v.parse::<f64>().is_ok_and(|x| x == 1.0)
}

impl DatasetAdapter for Chexpert {
    fn name(&self) -> &'static str {
        "chexpert"
    }

    fn describe(&self) -> &'static str {
        "CheXpert: train.csv + valid.csv; frontal AP/PA, Pneumonia the only positive label"
    }

    fn select(&self, root: &Path) -> Result<Selection> {
        let csvs: Vec<PathBuf> = ["train.csv", "valid.csv"]
            .iter()
            .map(|n| root.join(n))
            .filter(|p| p.is_file())
            .collect();
        if csvs.is_empty() {
            return Err(IngestError::dataset(
                root,
                "neither train.csv nor valid.csv",
            ));
        }
        let mut sel = Selection::default();
        for csv in csvs {
            let t = Table::read(&csv, b',')?;
            let (c_path, c_fl, c_appa) =
                (t.col("Path")?, t.col("Frontal/Lateral")?, t.col("AP/PA")?);
            let obs: Vec<(String, usize)> = OBSERVATIONS
                .iter()
                .map(|o| Ok((o.to_string(), t.col(o)?)))
                .collect::<Result<_>>()?;
            let c_covid = t.opt_col("COVID-19");
            let (c_sex, c_age) = (t.opt_col("Sex"), t.opt_col("Age"));
            for row in &t.rows {
                if field(row, c_fl) != "Frontal" {
                    continue;
                }
                let view = field(row, c_appa).to_ascii_uppercase();
                if view != "AP" && view != "PA" {
                    continue;
                }
                let pos: Vec<&str> = obs
                    .iter()
                    .filter(|(_, c)| positive(field(row, *c)))
                    .map(|(n, _)| n.as_str())
                    .collect();
                let covid = c_covid.is_some_and(|c| positive(field(row, c)));
                let label = match (covid, pos.as_slice()) {
                    (false, ["Pneumonia"]) => Label::Pneumonia,
                    (true, []) => Label::Covid,
                    _ => continue,
                };
                let rel = field(row, c_path);
                if rel.contains("..") {
                    continue;
                }
                let stripped: PathBuf = Path::new(rel).components().skip(1).collect();
                let candidates = [
                    root.parent().map(|p| p.join(rel)),
                    Some(root.join(&stripped)),
                ];
                let Some(path) = candidates.into_iter().flatten().find(|p| p.is_file()) else {
                    sel.missing.push(rel.to_string());
                    continue;
                };
                // Patient: the `patientNNNNN` component of the path.
                let patient = Path::new(rel)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .find(|c| c.starts_with("patient"))
                    .unwrap_or_else(|| rel.to_string());
                let mut extra = BTreeMap::new();
                extra.insert(
                    "age".into(),
                    c_age.map(|c| field(row, c).to_string()).unwrap_or_default(),
                );
                let sex = match c_sex.map(|c| field(row, c)) {
                    Some("Male") => "M",
                    Some("Female") => "F",
                    _ => "",
                };
                extra.insert("sex".into(), sex.to_string());
                sel.candidates.push(Candidate {
                    source: source(SourceId::CHEXPERT),
                    label,
                    patient_key: patient,
                    view,
                    path,
                    extra,
                });
            }
        }
        Ok(sel)
    }
}
