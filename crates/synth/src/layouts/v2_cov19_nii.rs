//! V2-COV19-NII: the jobs and metadata files of this source, in the dataset's own layout (`docs/DATASETS.md`; read
//! back by `crates/ingest/src/adapters/v2_cov19_nii.rs`).

use cxr_core::Label;

use super::{Plan, Planner, csv_bytes};
use crate::SynthError;
use crate::world::{Encoding, WorldKind};

pub(crate) fn plan_v2(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let nd = p.distractor_count(1);
    let clean = p.cfg.kind == WorldKind::Clean;
    let mut jobs = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for i in 0..n + nd {
        let selected = i < n;
        let label = if selected {
            p.class(i)
        } else {
            p.class((i - n) % n)
        };
        let patient = if selected {
            format!("P{}", p.hex(6))
        } else {
            // The lateral belongs to a selected patient.
            rows[(i - n) % n.max(1)][0].clone()
        };
        let image_id = p.hex(16);
        let age = p.age();
        let sex = if p.chance(0.55) { 'm' } else { 'w' };
        let (w, h) = p.size();
        let (lo, hi, _) = p.stored();
        let projection = if !selected {
            "lateral"
        } else if p.chance(0.8) {
            "ap"
        } else {
            "pa"
        };
        let mut job = p.job(
            format!("{root}/images/{image_id}.nii.gz"),
            label,
            Encoding::Nifti {
                lo,
                hi,
                spacing: 0.15 * 2500.0 / h as f32,
            },
            w,
            h,
        );
        job.selected = selected;
        job.distractor = if selected { "" } else { "lateral" };
        job.lateral = !selected;
        job.view = match projection {
            "ap" => "AP",
            "pa" => "PA",
            _ => "LL",
        };
        job.patient = patient.clone();
        job.age = age;
        job.sex = if sex == 'm' { 'M' } else { 'F' };
        let mut row = vec![
            patient,
            image_id,
            sex.to_string(),
            if p.chance(0.3) {
                String::new()
            } else {
                age.to_string()
            },
            "cr".to_string(),
            projection.to_string(),
        ];
        if clean {
            row.push(
                if label == Label::Covid {
                    "COVID-19"
                } else {
                    "Pneumonia"
                }
                .to_string(),
            );
        }
        rows.push(row);
        jobs.push(job);
    }
    let mut header = vec![
        "patient_id",
        "image_id",
        "sex",
        "age",
        "modality",
        "projection",
    ];
    if clean {
        header.push("finding");
    }
    Ok((
        jobs,
        vec![(format!("{root}/data.csv"), csv_bytes(&header, &rows, b',')?)],
    ))
}
