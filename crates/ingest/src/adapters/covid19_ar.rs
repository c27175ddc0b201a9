//! COVID-19-AR (TCIA): the NBIA tree `COVID-19-AR/<PatientID>/<study>/<series>/*.dcm` plus the clinical table
//! `COVID-19-AR-Clinical-Data.csv`.
//!
//! The tree is walked for `*.dcm` and the **tags** decide (folder names are not trusted): Modality `CR` or `DX`
//! and ViewPosition `AP`/`PA` (when empty: SeriesDescription holding `AP` or `PA` as a word) → covid. Clean
//! world: the clinical table's optional `FINDING` = `Pneumonia` labels that patient's images pneumonia.
//! PatientName and PatientBirthDate are never read; PatientID only becomes a keyed pseudonym. Columns: `age`
//! (from PatientAge, else the clinical AGE), `sex`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use cxr_core::{Label, SourceId};
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use rayon::prelude::*;

use super::{Candidate, DatasetAdapter, Selection, Table, field, source, walk};
use crate::error::{IngestError, Result};

/// Adapter of COVID-19-AR.
#[derive(Debug, Clone, Copy, Default)]
pub struct Covid19Ar;

struct Header {
    modality: String,
    view: String,
    series: String,
    patient: String,
    sex: String,
    age: String,
}

fn header(path: &Path) -> Result<Header> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| IngestError::Parse {
            path: path.to_path_buf(),
            format: "DICOM",
            message: e.to_string(),
        })?;
    let text = |t| {
        obj.element_opt(t)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| {
                s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string()
            })
            .unwrap_or_default()
    };
    let age = text(tags::PATIENT_AGE);
    let age = age
        .strip_suffix('Y')
        .and_then(|a| a.parse::<u32>().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok(Header {
        modality: text(tags::MODALITY).to_ascii_uppercase(),
        view: text(tags::VIEW_POSITION).to_ascii_uppercase(),
        series: text(tags::SERIES_DESCRIPTION).to_ascii_uppercase(),
        patient: text(tags::PATIENT_ID),
        sex: text(tags::PATIENT_SEX).to_ascii_uppercase(),
        age,
    })
}

impl DatasetAdapter for Covid19Ar {
    fn name(&self) -> &'static str {
        "covid19-ar"
    }

    fn describe(&self) -> &'static str {
        "COVID-19-AR (TCIA): DICOM tree + clinical CSV; CR/DX with ViewPosition AP/PA"
    }

    fn select(&self, root: &Path) -> Result<Selection> {
        let files = walk(root, &|p| {
            p.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
        })?;
        if files.is_empty() {
            return Err(IngestError::dataset(root, "no *.dcm file under the root"));
        }
        // Clinical table: optional; FINDING only exists in the synthetic clean world.
        let mut finding: HashMap<String, (String, String, String)> = HashMap::new();
        let clinical = root.join("COVID-19-AR-Clinical-Data.csv");
        if clinical.is_file() {
            let t = Table::read(&clinical, b',')?;
            let c_id = t.col("PATIENT_ID")?;
            let (c_f, c_age, c_sex) = (t.opt_col("FINDING"), t.opt_col("AGE"), t.opt_col("SEX"));
            for row in &t.rows {
                let get =
                    |c: Option<usize>| c.map(|c| field(row, c).to_string()).unwrap_or_default();
                finding.insert(
                    field(row, c_id).to_string(),
                    (get(c_f), get(c_age), get(c_sex)),
                );
            }
        }
        let headers: Vec<(std::path::PathBuf, Result<Header>)> = files
            .into_par_iter()
            .map(|p| {
                let h = header(&p);
                (p, h)
            })
            .collect();
        let mut sel = Selection::default();
        for (path, h) in headers {
            let h = match h {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!("skipped: {e}");
                    continue;
                }
            };
            if h.modality != "CR" && h.modality != "DX" {
                continue;
            }
            let view = if h.view.is_empty() {
                let words: Vec<&str> = h
                    .series
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .collect();
                if words.contains(&"AP") {
                    "AP".to_string()
                } else if words.contains(&"PA") {
                    "PA".to_string()
                } else {
                    continue;
                }
            } else {
                h.view.clone()
            };
            if view != "AP" && view != "PA" {
                continue;
            }
            let clinical = finding.get(&h.patient);
            let label = match clinical.map(|c| c.0.to_ascii_lowercase()).as_deref() {
                Some("pneumonia") => Label::Pneumonia,
                _ => Label::Covid,
            };
            let mut extra = BTreeMap::new();
            let age = if h.age.is_empty() {
                clinical.map(|c| c.1.clone()).unwrap_or_default()
            } else {
                h.age
            };
            let sex = if h.sex.is_empty() {
                clinical.map(|c| c.2.clone()).unwrap_or_default()
            } else {
                h.sex
            };
            extra.insert("age".into(), age);
            extra.insert("sex".into(), sex);
            if h.patient.is_empty() {
                tracing::warn!(file = %path.display(), "no PatientID: the file is its own patient");
            }
            sel.candidates.push(Candidate {
                source: source(SourceId::COVID19_AR),
                label,
                patient_key: if h.patient.is_empty() {
                    path.to_string_lossy().into_owned()
                } else {
                    h.patient
                },
                view,
                path,
                extra,
            });
        }
        Ok(sel)
    }
}
