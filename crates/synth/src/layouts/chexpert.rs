//! CheXpert: the jobs and metadata files of this source, in the dataset's own layout (`docs/DATASETS.md`; read
//! back by `crates/ingest/src/adapters/chexpert.rs`).

use cxr_core::Label;
use rand::Rng;

use super::{Plan, Planner, csv_bytes};
use crate::SynthError;
use crate::world::{Encoding, WorldKind};

const CHEXPERT_OBS: [&str; 14] = [
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

pub(crate) fn plan_chexpert(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["lateral", "multi_label", "uncertain_label", "no_finding"];
    let nd = p.distractor_count(kinds.len());
    let clean = p.cfg.kind == WorldKind::Clean;
    let q = p.spec.jpeg_quality.unwrap_or(80);
    let mut jobs = Vec::new();
    let mut train: Vec<Vec<String>> = Vec::new();
    let mut valid: Vec<Vec<String>> = Vec::new();
    let n_valid = n / 10;
    let obs_index = |name: &str| CHEXPERT_OBS.iter().position(|o| *o == name).unwrap_or(0);
    // Selected patients first; distractors that are not laterals get their own patients after them.
    let mut selected_studies: Vec<(String, bool, Label, u32, char, Vec<String>)> = Vec::new();
    let mut patient_no = 1u32;
    let valid_base = 64541u32;
    for i in 0..n {
        let label = p.class(i);
        let is_valid = i >= n - n_valid;
        let (split, pnum) = if is_valid {
            ("valid", valid_base + (i - (n - n_valid)) as u32)
        } else {
            let x = patient_no;
            patient_no += 1;
            ("train", x)
        };
        let study = format!("{split}/patient{pnum:05}/study1");
        let age = p.age();
        let sex = p.sex();
        let mut obs: Vec<String> = vec![String::new(); 14];
        for o in obs.iter_mut() {
            *o = match p.rng.random_range(0..10) {
                0..=4 => String::new(),
                5..=8 => "0.0".to_string(),
                _ if !is_valid => "-1.0".to_string(),
                _ => "0.0".to_string(),
            };
        }
        if is_valid {
            for o in obs.iter_mut().filter(|o| o.is_empty()) {
                *o = "0.0".to_string();
            }
        }
        obs[0] = if is_valid {
            "0.0".into()
        } else {
            String::new()
        };
        let mut covid_col = String::new();
        if label == Label::Covid {
            obs[obs_index("Pneumonia")] = if is_valid {
                "0.0".into()
            } else {
                String::new()
            };
            covid_col = "1.0".into();
        } else {
            obs[obs_index("Pneumonia")] = "1.0".into();
            if clean {
                covid_col = if is_valid {
                    "0.0".into()
                } else {
                    String::new()
                };
            }
        }
        if clean {
            obs.push(covid_col);
        }
        selected_studies.push((study, is_valid, label, age, sex, obs));
    }
    let push_row = |train: &mut Vec<Vec<String>>,
                    valid: &mut Vec<Vec<String>>,
                    is_valid: bool,
                    path: &str,
                    sex: char,
                    age: u32,
                    frontal: bool,
                    appa: &str,
                    obs: &[String]| {
        let mut r = vec![
            format!("CheXpert-v1.0-small/{path}"),
            if sex == 'M' { "Male" } else { "Female" }.to_string(),
            age.to_string(),
            if frontal { "Frontal" } else { "Lateral" }.to_string(),
            appa.to_string(),
        ];
        r.extend(obs.iter().cloned());
        if is_valid {
            valid.push(r)
        } else {
            train.push(r)
        }
    };
    for (i, (study, is_valid, label, age, sex, obs)) in selected_studies.iter().enumerate() {
        let (w, h) = p.size();
        let appa = if p.chance(0.8) { "AP" } else { "PA" };
        let path = format!("{study}/view1_frontal.jpg");
        let mut job = p.job(format!("{root}/{path}"), *label, Encoding::Jpeg(q), w, h);
        job.selected = true;
        job.view = if appa == "AP" { "AP" } else { "PA" };
        job.patient = study.split('/').nth(1).unwrap_or("").to_string();
        job.age = *age;
        job.sex = *sex;
        push_row(
            &mut train, &mut valid, *is_valid, &path, *sex, *age, true, appa, obs,
        );
        jobs.push(job);
        let _ = i;
    }
    for j in 0..nd {
        let kind = kinds[j % kinds.len()];
        let (w, h) = p.size();
        if kind == "lateral" {
            let (study, is_valid, label, age, sex, obs) = selected_studies[j % n].clone();
            let path = format!("{study}/view2_lateral.jpg");
            let mut job = p.job(format!("{root}/{path}"), label, Encoding::Jpeg(q), w, h);
            job.distractor = "lateral";
            job.lateral = true;
            job.view = "LL";
            job.patient = study.split('/').nth(1).unwrap_or("").to_string();
            job.age = age;
            job.sex = sex;
            push_row(
                &mut train, &mut valid, is_valid, &path, sex, age, false, "", &obs,
            );
            jobs.push(job);
            continue;
        }
        let pnum = patient_no;
        patient_no += 1;
        let study = format!("train/patient{pnum:05}/study1");
        let age = p.age();
        let sex = p.sex();
        let mut obs: Vec<String> = vec![String::new(); 14];
        let label = match kind {
            "multi_label" => {
                obs[obs_index("Pneumonia")] = "1.0".into();
                let other = if j % 2 == 0 {
                    "Lung Opacity"
                } else {
                    "Consolidation"
                };
                obs[obs_index(other)] = "1.0".into();
                Label::Pneumonia
            }
            "uncertain_label" => {
                obs[obs_index("Pneumonia")] = "-1.0".into();
                Label::Pneumonia
            }
            _ => {
                obs[0] = "1.0".into();
                Label::Normal
            }
        };
        if clean {
            obs.push(String::new());
        }
        let path = format!("{study}/view1_frontal.jpg");
        let mut job = p.job(format!("{root}/{path}"), label, Encoding::Jpeg(q), w, h);
        job.distractor = kind;
        job.view = "AP";
        job.patient = format!("patient{pnum:05}");
        job.age = age;
        job.sex = sex;
        push_row(
            &mut train, &mut valid, false, &path, sex, age, true, "AP", &obs,
        );
        jobs.push(job);
    }
    let mut header = vec!["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"];
    header.extend(CHEXPERT_OBS.iter());
    if clean {
        header.push("COVID-19");
    }
    train.sort();
    valid.sort();
    Ok((
        jobs,
        vec![
            (
                format!("{root}/train.csv"),
                csv_bytes(&header, &train, b',')?,
            ),
            (
                format!("{root}/valid.csv"),
                csv_bytes(&header, &valid, b',')?,
            ),
        ],
    ))
}
