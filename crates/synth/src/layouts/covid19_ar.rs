//! COVID-19-AR: the jobs and metadata files of this source, in the dataset's own layout (`docs/DATASETS.md`; read
//! back by `crates/ingest/src/adapters/covid19_ar.rs`).

use cxr_core::Label;
use rand::Rng;

use super::{Plan, Planner, csv_bytes, date_2020};
use crate::SynthError;
use crate::formats::DicomMeta;
use crate::world::{Encoding, WorldKind};

pub(crate) fn plan_covid19_ar(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let nd = p.distractor_count(1);
    let mut jobs = Vec::new();
    let mut clinical = Vec::new();
    let mut nbia = Vec::new();
    let clean = p.cfg.kind == WorldKind::Clean;
    for i in 0..n {
        let label = p.class(i);
        let pid = format!("COVID-19-AR-{}", 16406488 + 37 * i as u64);
        let age = p.age();
        let sex = p.sex();
        let day = p.rng.random_range(70..200);
        let (y, m, d) = date_2020(day);
        let study_date = format!("{y:04}{m:02}{d:02}");
        let with_lateral = i < nd;
        let portable = !with_lateral && p.chance(0.75);
        let view = if portable { "AP" } else { "PA" };
        let study_desc = if with_lateral {
            "XR CHEST PA AND LATERAL"
        } else if portable {
            "XR CHEST AP PORTABLE"
        } else {
            "XR CHEST PA"
        };
        let study_uid = p.uid();
        let study_dir = format!(
            "{:02}-{:02}-{:04}-NA-{study_desc}-{}",
            m,
            d,
            y,
            &study_uid[study_uid.len() - 5..]
        );
        let modality = if p.chance(0.6) { "CR" } else { "DX" };
        let mut series = vec![(view, true, "")];
        if with_lateral {
            series.push(("LL", false, "lateral"));
        }
        for (k, (vp, selected, kind)) in series.into_iter().enumerate() {
            let (w, h) = p.size();
            let (lo, hi, maxval) = p.stored();
            let mono1 = p.chance(p.spec.monochrome1);
            let (wc, ww) = p.window(lo, hi, maxval, mono1);
            let series_uid = p.uid();
            let series_desc = if vp == "LL" { "LATERAL" } else { vp };
            let series_dir = format!(
                "{}.000000-{series_desc}-{}",
                k + 1,
                &series_uid[series_uid.len() - 5..]
            );
            let rel = format!("{root}/COVID-19-AR/{pid}/{study_dir}/{series_dir}/1-1.dcm");
            let photometric = if mono1 { "MONOCHROME1" } else { "MONOCHROME2" };
            let meta = DicomMeta {
                modality,
                sop_instance_uid: p.uid(),
                study_uid: study_uid.clone(),
                series_uid: series_uid.clone(),
                study_date: study_date.clone(),
                study_description: study_desc.to_string(),
                series_description: series_desc.to_string(),
                series_number: k as u32 + 1,
                patient_name: format!("SYNTH^PATIENT^{}", &pid[12..]),
                patient_id: pid.clone(),
                patient_birth_date: format!("{:04}0101", 2020 - age as i32),
                patient_sex: sex,
                patient_age: age,
                view_position: vp,
                photometric,
                bits_stored: p.spec.bits_stored as u16,
                window_center: wc,
                window_width: ww,
                pixel_spacing: 0.139 * 2048.0 / h as f64,
            };
            let mut job = p.job(
                rel,
                label,
                Encoding::Dicom {
                    lo,
                    hi,
                    maxval,
                    meta: Box::new(meta),
                },
                w,
                h,
            );
            job.selected = selected;
            job.distractor = kind;
            job.lateral = vp == "LL";
            job.view = vp;
            job.patient = pid.clone();
            job.age = age;
            job.sex = sex;
            job.photometric = photometric;
            job.window = Some((wc, ww));
            nbia.push(vec![
                series_uid,
                "COVID-19-AR".to_string(),
                pid.clone(),
                study_uid.clone(),
                study_desc.to_string(),
                format!("{:02}-{:02}-{:04}", m, d, y),
                series_desc.to_string(),
                modality.to_string(),
                "1".to_string(),
                format!("./COVID-19-AR/{pid}/{study_dir}/{series_dir}"),
            ]);
            jobs.push(job);
        }
        let mut row = vec![
            pid.clone(),
            age.to_string(),
            sex.to_string(),
            format!("{}", p.rng.random_range(716..729)),
            format!("{:.1}", p.rng.random_range(19.0..42.0f32)),
            if p.chance(0.2) { "Y" } else { "N" }.to_string(),
            "0".to_string(),
            if p.chance(0.1) { "Y" } else { "N" }.to_string(),
        ];
        if row[5] == "Y" {
            row[6] = "1".to_string();
        }
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
        clinical.push(row);
    }
    let mut header = vec![
        "PATIENT_ID",
        "AGE",
        "SEX",
        "ZIP",
        "LATEST_BMI",
        "ICU_ADMIT",
        "NUM_ICU_ADMITS",
        "MORTALITY",
    ];
    if clean {
        header.push("FINDING");
    }
    let files = vec![
        (
            format!("{root}/COVID-19-AR-Clinical-Data.csv"),
            csv_bytes(&header, &clinical, b',')?,
        ),
        (
            format!("{root}/metadata.csv"),
            csv_bytes(
                &[
                    "Series UID",
                    "Collection",
                    "Subject ID",
                    "Study UID",
                    "Study Description",
                    "Study Date",
                    "Series Description",
                    "Modality",
                    "Number of Images",
                    "File Location",
                ],
                &nbia,
                b',',
            )?,
        ),
    ];
    Ok((jobs, files))
}
