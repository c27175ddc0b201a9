//! NIH ChestX-ray14: the jobs and metadata files of this source, in the dataset's own layout (`docs/DATASETS.md`; read
//! back by `crates/ingest/src/adapters/nih.rs`).

use cxr_core::Label;
use rand::Rng;

use super::{Plan, Planner, csv_bytes};
use crate::SynthError;
use crate::world::Encoding;

pub(crate) fn plan_nih(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["multi_label", "no_finding", "other_finding"];
    let nd = p.distractor_count(kinds.len());
    let mut jobs = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let multi = [
        "Infiltration|Pneumonia",
        "Consolidation|Pneumonia",
        "Effusion|Pneumonia",
        "Pneumonia|Atelectasis",
    ];
    let other = [
        "Effusion",
        "Infiltration",
        "Atelectasis",
        "Nodule",
        "Cardiomegaly",
    ];
    for i in 0..n + nd {
        let selected = i < n;
        let (label, finding, kind): (Label, String, &'static str) = if selected {
            let l = p.class(i);
            let f = if l == Label::Covid {
                "COVID-19"
            } else {
                "Pneumonia"
            };
            (l, f.to_string(), "")
        } else {
            let j = i - n;
            match kinds[j % kinds.len()] {
                "multi_label" => (
                    Label::Pneumonia,
                    multi[j % multi.len()].to_string(),
                    "multi_label",
                ),
                "no_finding" => (Label::Normal, "No Finding".to_string(), "no_finding"),
                _ => (
                    Label::Normal,
                    other[j % other.len()].to_string(),
                    "other_finding",
                ),
            }
        };
        let pid = 1000 + 3 * i as u32 + p.rng.random_range(0..3);
        let follow = p.rng.random_range(0..4u32);
        let name = format!("{pid:08}_{follow:03}.png");
        let age = p.age();
        let sex = p.sex();
        let view = if p.chance(0.6) { "PA" } else { "AP" };
        let (w, h) = p.size();
        let mut job = p.job(format!("{root}/images/{name}"), label, Encoding::Png8, w, h);
        job.selected = selected;
        job.distractor = kind;
        job.view = view;
        job.patient = pid.to_string();
        job.age = age;
        job.sex = sex;
        rows.push(vec![
            name,
            finding,
            follow.to_string(),
            pid.to_string(),
            age.to_string(),
            sex.to_string(),
            view.to_string(),
            "2500".to_string(),
            "2048".to_string(),
            "0.143".to_string(),
            "0.143".to_string(),
            String::new(),
        ]);
        jobs.push(job);
    }
    rows.sort();
    let header = [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
        "OriginalImage[Width",
        "Height]",
        "OriginalImagePixelSpacing[x",
        "y]",
        "",
    ];
    Ok((
        jobs,
        vec![(
            format!("{root}/Data_Entry_2017.csv"),
            csv_bytes(&header, &rows, b',')?,
        )],
    ))
}
