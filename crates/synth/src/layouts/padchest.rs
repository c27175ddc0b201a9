//! PadChest: the jobs and metadata files of this source, in the dataset's own layout (`docs/DATASETS.md`; read
//! back by `crates/ingest/src/adapters/padchest.rs`).

use cxr_core::Label;
use rand::Rng;

use super::{Plan, Planner, csv_bytes};
use crate::SynthError;
use crate::world::Encoding;

const PADCHEST_COLUMNS: [&str; 36] = [
    "",
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
];

pub(crate) fn plan_padchest(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["lateral", "multi_label", "no_finding"];
    let nd = p.distractor_count(kinds.len());
    let mut jobs = Vec::new();
    let mut rows = Vec::new();
    for i in 0..n + nd {
        let selected = i < n;
        let (label, labels, kind): (Label, String, &'static str) = if selected {
            let l = p.class(i);
            let s = if l == Label::Covid {
                "['COVID 19']".to_string()
            } else if p.chance(0.1) {
                "['pneumonia', '']".to_string()
            } else {
                "['pneumonia']".to_string()
            };
            (l, s, "")
        } else {
            match kinds[(i - n) % kinds.len()] {
                "lateral" => (Label::Pneumonia, "['pneumonia']".to_string(), "lateral"),
                "multi_label" => {
                    let s = if (i - n).is_multiple_of(2) {
                        "['pneumonia', 'infiltrates']"
                    } else {
                        "['pneumonia', 'consolidation']"
                    };
                    (Label::Pneumonia, s.to_string(), "multi_label")
                }
                _ => (Label::Normal, "['normal']".to_string(), "no_finding"),
            }
        };
        let (projection, view_dicom) = if kind == "lateral" {
            ("L", "LL")
        } else {
            match p.rng.random_range(0..20) {
                0..=11 => ("PA", "PA"),
                12..=16 => ("AP", "AP"),
                _ => ("AP_horizontal", "AP"),
            }
        };
        let image_id = format!(
            "{}_{:02}-{:03}-{:03}.png",
            p.digits(45),
            p.rng.random_range(0..100),
            p.rng.random_range(0..1000),
            p.rng.random_range(0..1000)
        );
        let dir = p.rng.random_range(0..4u32);
        let (w, h) = p.size();
        let (lo, hi, maxval) = p.stored();
        let mono1 = p.chance(p.spec.monochrome1);
        let window = p
            .chance(p.spec.window)
            .then(|| p.window(lo, hi, maxval, mono1));
        let photometric = if mono1 { "MONOCHROME1" } else { "MONOCHROME2" };
        let age = p.age();
        let sex = p.sex();
        let year = p.rng.random_range(2009..2018);
        let patient = p.hex(32);
        let mut job = p.job(
            format!("{root}/{dir}/{image_id}"),
            label,
            Encoding::Png16 {
                lo,
                hi,
                maxval,
                mono1,
            },
            w,
            h,
        );
        job.selected = selected;
        job.distractor = kind;
        job.lateral = kind == "lateral";
        job.view = if kind == "lateral" { "LL" } else { view_dicom };
        job.patient = patient.clone();
        job.age = age;
        job.sex = sex;
        job.photometric = photometric;
        job.window = window;
        let (wc, ww) = window
            .map(|(c, w)| (format!("{c:.1}"), format!("{w:.1}")))
            .unwrap_or_default();
        let row = vec![
            i.to_string(),
            image_id,
            dir.to_string(),
            format!(
                "{year}{:02}{:02}",
                p.rng.random_range(1..13),
                p.rng.random_range(1..29)
            ),
            p.hex(32),
            patient,
            (year - age as i32).to_string(),
            sex.to_string(),
            view_dicom.to_string(),
            projection.to_string(),
            "Manual review of DICOM fields".to_string(),
            "No".to_string(),
            if p.chance(0.5) { "CR" } else { "DX" }.to_string(),
            "SynthVendor".to_string(),
            photometric.to_string(),
            "0".to_string(),
            String::new(),
            "0.139".to_string(),
            p.spec.bits_stored.to_string(),
            wc,
            ww,
            h.to_string(),
            w.to_string(),
            p.rng.random_range(100..400).to_string(),
            p.rng.random_range(2..10).to_string(),
            String::new(),
            String::new(),
            String::new(),
            p.digits(8),
            "informe sintetico .".to_string(),
            "Physician".to_string(),
            labels,
            "[]".to_string(),
            "[]".to_string(),
            "[]".to_string(),
            "[]".to_string(),
        ];
        rows.push(row);
        jobs.push(job);
    }
    Ok((
        jobs,
        vec![(
            format!("{root}/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"),
            csv_bytes(&PADCHEST_COLUMNS, &rows, b',')?,
        )],
    ))
}
