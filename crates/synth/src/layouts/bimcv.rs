//! BIMCV-COVID19+: the jobs and metadata files of this source, in the dataset's own layout (`docs/DATASETS.md`; read
//! back by `crates/ingest/src/adapters/bimcv.rs`).

use cxr_core::Label;
use rand::Rng;

use super::{Plan, Planner, date_2020, py_list, tsv_bytes};
use crate::SynthError;
use crate::world::Encoding;

struct BimcvSession {
    id: String,
    day: i32,
    labels: Vec<&'static str>,
}

const BIMCV_FINDINGS: [&str; 6] = [
    "ground glass pattern",
    "consolidation",
    "infiltrates",
    "alveolar pattern",
    "interstitial pattern",
    "pleural effusion",
];

#[allow(clippy::type_complexity, clippy::needless_range_loop)]
pub(crate) fn plan_bimcv(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["lateral", "no_positive_pcr", "not_most_severe"];
    let nd = p.distractor_count(kinds.len());
    let mut jobs = Vec::new();
    let mut participants = Vec::new();
    let mut pcr_rows = Vec::new();
    let mut label_rows = Vec::new();
    let mut files = Vec::new();
    let mut session_counter = 10001;
    // Distractor j goes to a subject: covid subjects only for the PCR-based traps.
    let covid_subjects: Vec<usize> = (0..n).filter(|&i| p.class(i) == Label::Covid).collect();
    let mut assigned: Vec<Vec<&'static str>> = vec![Vec::new(); n];
    for j in 0..nd {
        let kind = kinds[j % kinds.len()];
        let who = if kind == "lateral" || covid_subjects.is_empty() {
            j % n
        } else {
            covid_subjects[j % covid_subjects.len()]
        };
        if kind != "lateral" && p.class(who) != Label::Covid {
            assigned[who].push("lateral");
        } else {
            assigned[who].push(kind);
        }
    }
    for i in 0..n {
        let label = p.class(i);
        let subject = format!("sub-S{:05}", 10001 + i);
        let age = p.age();
        let sex = p.sex();
        let main_day = p.rng.random_range(60..108); // March to mid-April 2020
        let mut sessions: Vec<(BimcvSession, Vec<(&'static str, bool, &'static str)>)> = Vec::new();
        let severity = p.rng.random_range(1..=3);
        let mut main_labels: Vec<&'static str> = if label == Label::Covid {
            vec!["COVID 19"]
        } else {
            vec!["pneumonia"]
        };
        for f in BIMCV_FINDINGS.iter().take(severity) {
            main_labels.push(f);
        }
        let view = if p.chance(0.7) { "ap" } else { "pa" };
        let mut main_images = vec![(view, true, "")];
        if label == Label::Covid {
            pcr_rows.push(vec![
                subject.clone(),
                fmt_dmy(main_day + p.rng.random_range(-3..=3)),
                "PCR".into(),
                "POSITIVO".into(),
            ]);
        } else {
            pcr_rows.push(vec![
                subject.clone(),
                fmt_dmy(main_day - p.rng.random_range(0..=2)),
                "PCR".into(),
                "NEGATIVO".into(),
            ]);
        }
        if p.chance(0.3) {
            pcr_rows.push(vec![
                subject.clone(),
                fmt_dmy(main_day + 20),
                "IGG".into(),
                "POSITIVO".into(),
            ]);
        }
        let mut extra_sessions = Vec::new();
        for kind in &assigned[i] {
            match *kind {
                "lateral" => main_images.push(("ll", false, "lateral")),
                "no_positive_pcr" => {
                    // Later, more severe, but no PCR within 14 days: a rule ignoring PCR would pick it.
                    let day = main_day + 45;
                    pcr_rows.push(vec![
                        subject.clone(),
                        fmt_dmy(day),
                        "PCR".into(),
                        "NEGATIVO".into(),
                    ]);
                    let mut l = main_labels.clone();
                    l.push("atelectasis");
                    extra_sessions.push((day, l, "no_positive_pcr"));
                }
                _ => {
                    // PCR-positive but milder.
                    let day = main_day + p.rng.random_range(4..=9);
                    extra_sessions.push((day, vec!["COVID 19"], "not_most_severe"));
                }
            }
        }
        let sid = format!("ses-E{session_counter:05}");
        session_counter += 1;
        sessions.push((
            BimcvSession {
                id: sid,
                day: main_day,
                labels: main_labels,
            },
            main_images,
        ));
        for (day, labels, kind) in extra_sessions {
            let sid = format!("ses-E{session_counter:05}");
            session_counter += 1;
            let v = if p.chance(0.5) { "ap" } else { "pa" };
            sessions.push((
                BimcvSession {
                    id: sid,
                    day,
                    labels,
                },
                vec![(v, false, kind)],
            ));
        }
        let mut modalities = Vec::new();
        let mut session_rows = Vec::new();
        for (ses, images) in &sessions {
            let modality = if p.chance(0.6) { "cr" } else { "dx" };
            if !modalities.contains(&modality) {
                modalities.push(modality);
            }
            for (run, (view, selected, kind)) in images.iter().enumerate() {
                let (w, h) = p.size();
                let (lo, hi, maxval) = p.stored();
                let has_window = p.chance(p.spec.window);
                let window = has_window.then(|| p.window(lo, hi, maxval, false));
                let stem = format!(
                    "{subject}_{}_run-{}_bp-chest_vp-{view}_{modality}",
                    ses.id,
                    run + 1
                );
                let dir = format!("{root}/covid19_posi/{subject}/{}/mod-rx", ses.id);
                let mut job = p.job(
                    format!("{dir}/{stem}.png"),
                    label,
                    Encoding::Png16 {
                        lo,
                        hi,
                        maxval,
                        mono1: false,
                    },
                    w,
                    h,
                );
                job.selected = *selected;
                job.distractor = kind;
                job.lateral = *view == "ll";
                job.view = match *view {
                    "ap" => "AP",
                    "pa" => "PA",
                    _ => "LL",
                };
                job.patient = subject.clone();
                job.age = age;
                job.sex = sex;
                job.window = window;
                let mut sidecar = serde_json::Map::new();
                let tag =
                    |vr: &str, v: serde_json::Value| serde_json::json!({"vr": vr, "Value": [v]});
                sidecar.insert("00080060".into(), tag("CS", modality.to_uppercase().into()));
                sidecar.insert("00185101".into(), tag("CS", job.view.into()));
                sidecar.insert("00280004".into(), tag("CS", "MONOCHROME2".into()));
                sidecar.insert("00280101".into(), tag("US", 12.into()));
                sidecar.insert("00280010".into(), tag("US", h.into()));
                sidecar.insert("00280011".into(), tag("US", w.into()));
                if let Some((c, wd)) = window {
                    sidecar.insert("00281050".into(), tag("DS", c.into()));
                    sidecar.insert("00281051".into(), tag("DS", wd.into()));
                }
                let text = serde_json::to_vec_pretty(&serde_json::Value::Object(sidecar)).map_err(
                    |e| SynthError::Write {
                        path: format!("{dir}/{stem}.json").into(),
                        message: e.to_string(),
                    },
                )?;
                files.push((format!("{dir}/{stem}.json"), text));
                jobs.push(job);
            }
            let (y, m, d) = date_2020(ses.day);
            session_rows.push(vec![
                ses.id.clone(),
                format!("{y:04}{m:02}{d:02}"),
                "Estudio radiologico de torax. Texto sintetico.".to_string(),
            ]);
            let findings: Vec<&str> = ses.labels.clone();
            label_rows.push(vec![
                subject.clone(),
                ses.id.clone(),
                "informe sintetico".to_string(),
                py_list(&findings),
                py_list(&["loc bilateral"]),
                "[]".to_string(),
                "[]".to_string(),
                "[]".to_string(),
            ]);
        }
        files.push((
            format!("{root}/covid19_posi/{subject}/{subject}_sessions.tsv"),
            tsv_bytes(
                &["session_id", "study_date", "medical_evaluation"],
                &session_rows,
            ),
        ));
        let ages: Vec<String> = sessions.iter().map(|_| age.to_string()).collect();
        let mods: Vec<String> = modalities
            .iter()
            .map(|m| format!("'{}'", m.to_uppercase()))
            .collect();
        participants.push(vec![
            subject.clone(),
            format!("[{}]", mods.join(", ")),
            format!("[{}]", ages.join(", ")),
            sex.to_string(),
        ]);
    }
    files.push((
        format!("{root}/covid19_posi/participants.tsv"),
        tsv_bytes(
            &["participant", "modality_dicom", "age", "gender"],
            &participants,
        ),
    ));
    files.push((
        format!("{root}/covid19_posi/derivatives/EHR/sil_reg_covid_posi.tsv"),
        tsv_bytes(&["participant", "date", "test", "result"], &pcr_rows),
    ));
    files.push((
        format!("{root}/covid19_posi/derivatives/labels/labels_covid_posi.tsv"),
        tsv_bytes(
            &[
                "PatientID",
                "ReportID",
                "Report",
                "Labels",
                "Localizations",
                "LabelsLocalizationsBySentence",
                "labelCUIS",
                "LocalizationsCUIS",
            ],
            &label_rows,
        ),
    ));
    Ok((jobs, files))
}

fn fmt_dmy(day: i32) -> String {
    let (y, m, d) = date_2020(day);
    format!("{d:02}.{m:02}.{y:04}")
}
