//! BIMCV-COVID19+ (iterations 1+2): the BIDS/MIDS tree `covid19_posi/sub-*/ses-*/mod-rx/*.png` with DICOM-JSON
//! sidecars, `participants.tsv`, `derivatives/EHR/sil_reg_covid_posi.tsv` (tests) and
//! `derivatives/labels/labels_covid_posi.tsv` (report labels). The root is `covid19_posi` or its parent.
//!
//! Selection (paper: one session per patient, PCR-positive and most severe; details as `docs/DATASETS.md`):
//! 1. a session is PCR-positive when the subject has a `PCR` test `POSITIVO` within 14 days (inclusive) of its
//!    `study_date`;
//! 2. severity = number of `Labels` of the session's report other than `normal`, `exclude`, `COVID 19`,
//!    `COVID 19 uncertain` (0 without a report row);
//! 3. per subject, among PCR-positive sessions with a frontal image (`vp-ap`/`vp-pa`), the most severe; ties →
//!    earliest date, then smallest session id;
//! 4. from it, the frontal image with the smallest `run`. Label covid.
//!
//! Clean world: a subject with no PCR-positive session whose frontal sessions' labels hold `pneumonia` gives
//! its most severe such session (same rules 2-4), labelled pneumonia.
//! Columns: `window_center`, `window_width`, `photometric` from the sidecar; `age` (mean of the list), `sex`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cxr_core::{Label, SourceId};

use super::{
    Candidate, DatasetAdapter, Selection, Table, days_from_civil, field, first_number, num_cell,
    py_list, source,
};
use crate::error::{IngestError, Result};

/// Adapter of BIMCV-COVID19+.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bimcv;

/// A frontal image of a session.
#[derive(Debug, Clone)]
struct Image {
    run: u32,
    view: String,
    path: PathBuf,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    day: Option<i64>,
    images: Vec<Image>,
}

/// `YYYYMMDD` → days.
fn ymd(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.split('.').next().unwrap_or(s); // "20200315.0" from a float column
    if s.len() != 8 {
        return None;
    }
    let (y, m, d) = (
        s[..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..].parse().ok()?,
    );
    Some(days_from_civil(y, m, d))
}

/// `dd.mm.yyyy` → days.
fn dmy(s: &str) -> Option<i64> {
    let p: Vec<&str> = s.trim().split(['.', '/', '-']).collect();
    if p.len() != 3 {
        return None;
    }
    Some(days_from_civil(
        p[2].parse().ok()?,
        p[1].parse().ok()?,
        p[0].parse().ok()?,
    ))
}

/// Entities of a BIDS file name: `sub-S1_ses-E1_run-1_bp-chest_vp-ap_cr.png` → {run: 1, vp: ap}.
fn entities(name: &str) -> HashMap<String, String> {
    let stem = name.split('.').next().unwrap_or(name);
    stem.split('_')
        .filter_map(|part| {
            part.split_once('-')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn severity(labels: &[String]) -> usize {
    labels
        .iter()
        .filter(|l| {
            let l = l.trim().to_ascii_lowercase();
            !matches!(
                l.as_str(),
                "normal" | "exclude" | "covid 19" | "covid 19 uncertain"
            )
        })
        .count()
}

/// First value of a tag in a DICOM-JSON sidecar (`{"00281050": {"vr": "DS", "Value": [2048.0]}}`).
fn sidecar_value(json: &serde_json::Value, tag: &str) -> Option<String> {
    let v = json.get(tag)?.get("Value")?.as_array()?.first()?;
    Some(match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    })
}

impl DatasetAdapter for Bimcv {
    fn name(&self) -> &'static str {
        "bimcv"
    }

    fn describe(&self) -> &'static str {
        "BIMCV-COVID19+: BIDS tree; one PCR-positive, most severe session per subject; AP/PA"
    }

    fn select(&self, root: &Path) -> Result<Selection> {
        let base = if root.join("covid19_posi").is_dir() {
            root.join("covid19_posi")
        } else {
            root.to_path_buf()
        };
        if !base.join("participants.tsv").is_file() {
            return Err(IngestError::dataset(
                &base,
                "no participants.tsv (not a BIMCV-COVID19+ tree)",
            ));
        }
        let participants = Table::read(&base.join("participants.tsv"), b'\t')?;
        let (c_part, c_age, c_sex) = (
            participants.col("participant")?,
            participants.opt_col("age"),
            participants.opt_col("gender"),
        );
        let mut demo: HashMap<String, (String, String)> = HashMap::new();
        for row in &participants.rows {
            let ages: Vec<f64> = c_age
                .map(|c| {
                    py_list(field(row, c))
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let age = if ages.is_empty() {
                String::new()
            } else {
                num_cell((ages.iter().sum::<f64>() / ages.len() as f64).round())
            };
            let sex = match c_sex.map(|c| field(row, c)) {
                Some("M") => "M",
                Some("F") => "F",
                _ => "",
            };
            demo.insert(field(row, c_part).to_string(), (age, sex.to_string()));
        }
        // PCR-positive test days per subject.
        let mut pcr: HashMap<String, Vec<i64>> = HashMap::new();
        let tests = base.join("derivatives/EHR/sil_reg_covid_posi.tsv");
        if tests.is_file() {
            let t = Table::read(&tests, b'\t')?;
            let (c_p, c_d, c_t, c_r) = (
                t.col("participant")?,
                t.col("date")?,
                t.col("test")?,
                t.col("result")?,
            );
            for row in &t.rows {
                if field(row, c_t).eq_ignore_ascii_case("PCR")
                    && field(row, c_r).eq_ignore_ascii_case("POSITIVO")
                    && let Some(d) = dmy(field(row, c_d))
                {
                    pcr.entry(field(row, c_p).to_string()).or_default().push(d);
                }
            }
        }
        // Report labels per session.
        let mut labels: HashMap<String, Vec<String>> = HashMap::new();
        let lab = base.join("derivatives/labels/labels_covid_posi.tsv");
        if lab.is_file() {
            let t = Table::read(&lab, b'\t')?;
            let (c_r, c_l) = (t.col("ReportID")?, t.col("Labels")?);
            for row in &t.rows {
                labels.insert(field(row, c_r).to_string(), py_list(field(row, c_l)));
            }
        }

        let mut subjects: Vec<PathBuf> = std::fs::read_dir(&base)
            .map_err(|e| IngestError::io(&base, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("sub-"))
            })
            .collect();
        subjects.sort();
        let mut sel = Selection::default();
        for sub_dir in subjects {
            let subject = sub_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut dates: HashMap<String, Option<i64>> = HashMap::new();
            let st = sub_dir.join(format!("{subject}_sessions.tsv"));
            if st.is_file() {
                let t = Table::read(&st, b'\t')?;
                let (c_s, c_d) = (t.col("session_id")?, t.col("study_date")?);
                for row in &t.rows {
                    dates.insert(field(row, c_s).to_string(), ymd(field(row, c_d)));
                }
            }
            let mut sessions = Vec::new();
            let mut ses_dirs: Vec<PathBuf> = std::fs::read_dir(&sub_dir)
                .map_err(|e| IngestError::io(&sub_dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("ses-"))
                })
                .collect();
            ses_dirs.sort();
            for ses_dir in ses_dirs {
                let id = ses_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let rx = ses_dir.join("mod-rx");
                let mut images = Vec::new();
                if rx.is_dir() {
                    for e in std::fs::read_dir(&rx).map_err(|e| IngestError::io(&rx, e))? {
                        let p = e.map_err(|e| IngestError::io(&rx, e))?.path();
                        let name = p
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        if !name.to_ascii_lowercase().ends_with(".png") {
                            continue;
                        }
                        let ent = entities(&name);
                        let view = ent
                            .get("vp")
                            .map(|v| v.to_ascii_uppercase())
                            .unwrap_or_default();
                        if view != "AP" && view != "PA" {
                            continue;
                        }
                        let run = ent
                            .get("run")
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(u32::MAX);
                        images.push(Image { run, view, path: p });
                    }
                }
                if images.is_empty() {
                    continue;
                }
                images.sort_by(|a, b| (a.run, &a.path).cmp(&(b.run, &b.path)));
                sessions.push(Session {
                    day: dates.get(&id).copied().flatten(),
                    id,
                    images,
                });
            }
            let tests = pcr.get(&subject).map(Vec::as_slice).unwrap_or(&[]);
            let positive = |s: &Session| {
                s.day
                    .is_some_and(|d| tests.iter().any(|t| (t - d).abs() <= 14))
            };
            let sev = |s: &Session| severity(labels.get(&s.id).map(Vec::as_slice).unwrap_or(&[]));
            let best = |pool: Vec<&Session>| -> Option<Session> {
                pool.into_iter()
                    .min_by(|a, b| {
                        sev(b)
                            .cmp(&sev(a))
                            .then(a.day.unwrap_or(i64::MAX).cmp(&b.day.unwrap_or(i64::MAX)))
                            .then(a.id.cmp(&b.id))
                    })
                    .cloned()
            };
            let pos: Vec<&Session> = sessions.iter().filter(|s| positive(s)).collect();
            let chosen = if !pos.is_empty() {
                best(pos).map(|s| (s, Label::Covid))
            } else {
                let pneu: Vec<&Session> = sessions
                    .iter()
                    .filter(|s| {
                        labels.get(&s.id).is_some_and(|l| {
                            l.iter().any(|x| x.trim().eq_ignore_ascii_case("pneumonia"))
                        })
                    })
                    .collect();
                best(pneu).map(|s| (s, Label::Pneumonia))
            };
            let Some((session, label)) = chosen else {
                continue;
            };
            let Some(image) = session.images.first() else {
                continue;
            };
            let mut extra = BTreeMap::new();
            let sidecar = image.path.with_extension("json");
            let json: Option<serde_json::Value> = std::fs::read(&sidecar)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if json.is_none() {
                tracing::debug!(file = %sidecar.display(), "no readable sidecar: window from the image");
            }
            let num = |tag: &str| {
                json.as_ref()
                    .and_then(|j| sidecar_value(j, tag))
                    .and_then(|v| first_number(&v))
                    .map(num_cell)
                    .unwrap_or_default()
            };
            extra.insert("window_center".into(), num("00281050"));
            extra.insert("window_width".into(), num("00281051"));
            let pi = json
                .as_ref()
                .and_then(|j| sidecar_value(j, "00280004"))
                .map(|s| s.to_ascii_uppercase())
                .filter(|s| s == "MONOCHROME1" || s == "MONOCHROME2")
                .unwrap_or_default();
            extra.insert("photometric".into(), pi);
            let (age, sex) = demo.get(&subject).cloned().unwrap_or_default();
            extra.insert("age".into(), age);
            extra.insert("sex".into(), sex);
            sel.candidates.push(Candidate {
                source: source(SourceId::BIMCV),
                label,
                patient_key: subject.clone(),
                view: image.view.clone(),
                path: image.path.clone(),
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
    fn parts_parse() {
        let e = entities("sub-S00001_ses-E00001_run-2_bp-chest_vp-pa_cr.png");
        assert_eq!(e["run"], "2");
        assert_eq!(e["vp"], "pa");
        assert_eq!(ymd("20200315"), dmy("15.03.2020"));
        assert_eq!(ymd("20200329").unwrap() - dmy("15.03.2020").unwrap(), 14);
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            severity(&l(&["COVID 19", "ground glass pattern", "consolidation"])),
            2
        );
        assert_eq!(
            severity(&l(&["normal", "exclude", "COVID 19 uncertain"])),
            0
        );
    }
}
