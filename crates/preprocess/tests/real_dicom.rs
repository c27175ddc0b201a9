//! The display pipeline on real DICOM files from `../shared/data`, against two independent references:
//! pydicom (`apply_modality_lut` + `apply_voi_lut`, then 8 bits and inversion; tables made by
//! `scripts/reference_voi.py` into `tests/fixtures/pydicom_reference.json`) and dicom-pixeldata's own windowing.

mod common;

use std::path::Path;

use cxr_core::{Grey8, RawImage};
use cxr_preprocess::display::modality_values;
use cxr_preprocess::{
    DisplayOptions, MetadataOverride, ModalityApplied, WindowMode, WindowSource, to_grey8,
};
use serde_json::Value;

fn reference() -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pydicom_reference.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// pydicom's grey level for a stored value, from the breakpoint table.
fn expected_grey(steps: &[(i64, u8)], stored: f32) -> u8 {
    let v = stored as i64;
    let i = steps.partition_point(|&(s, _)| s <= v);
    steps[i.saturating_sub(1)].1
}

fn steps_of(r: &Value) -> Vec<(i64, u8)> {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_u64().unwrap() as u8))
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    cxr_core::fsutil::sha256_bytes(bytes)
}

/// Compares every pixel with pydicom's; returns (max difference, pixels that differ).
fn compare_with_pydicom(raw: &RawImage, ours: &Grey8, r: &Value) -> (u8, usize) {
    let steps = steps_of(r);
    assert_eq!(ours.width as u64, r["columns"].as_u64().unwrap());
    assert_eq!(ours.height as u64, r["rows"].as_u64().unwrap());
    let mut max = 0u8;
    let mut differ = 0;
    for (&s, &g) in raw.pixels.iter().zip(&ours.data) {
        let e = expected_grey(&steps, s);
        let d = g.abs_diff(e);
        max = max.max(d);
        differ += usize::from(d > 0);
    }
    (max, differ)
}

fn render(raw: &RawImage) -> (Grey8, cxr_preprocess::Applied) {
    to_grey8(
        raw,
        &MetadataOverride::default(),
        &DisplayOptions::default(),
    )
    .unwrap()
}

#[test]
fn rg1_windowed_and_inverted_matches_pydicom_and_its_j2k_twin() {
    let Some(data) = common::shared_data("rg1") else {
        return;
    };
    let reference = reference();
    let r = &reference["chest-dicom/RG1_UNCR.dcm"];
    let raw = common::read_dicom(&data.join("chest-dicom/RG1_UNCR.dcm"));
    let (ours, applied) = render(&raw);
    assert_eq!(applied.source, WindowSource::File);
    assert_eq!(applied.window, Some((15000.0, 30000.0)));
    assert!(applied.inverted, "RG1 is MONOCHROME1");
    assert_eq!(applied.window_string(), "15000/30000");

    let (max, differ) = compare_with_pydicom(&raw, &ours, r);
    assert!(max <= 1, "max difference {max} grey levels");
    println!(
        "RG1: {differ} of {} pixels differ from pydicom by 1",
        ours.data.len()
    );
    if differ == 0 {
        assert_eq!(sha256(&ours.data), r["image_sha256"].as_str().unwrap());
    }
    // The histogram of pydicom's rendering, level by level (a second, whole-image check).
    let hist = r["histogram"].as_array().unwrap();
    let mut ours_hist = [0u64; 256];
    for &g in &ours.data {
        ours_hist[g as usize] += 1;
    }
    let l1: u64 = hist
        .iter()
        .zip(ours_hist)
        .map(|(a, b)| a.as_u64().unwrap().abs_diff(b))
        .sum();
    assert!(l1 as usize <= 2 * differ, "histogram L1 {l1}");

    // The lossless JPEG 2000 twin decodes to the same stored values, hence the same bytes.
    let twin = common::read_dicom(&data.join("chest-dicom/RG1_J2KR.dcm"));
    assert_eq!(twin.pixels, raw.pixels);
    let (twin8, twin_applied) = render(&twin);
    assert_eq!(twin8.data, ours.data);
    assert_eq!(twin_applied, applied);
}

#[test]
fn rg1_matches_dicom_pixeldata_windowing_after_inversion() {
    let Some(data) = common::shared_data("rg1 pixeldata") else {
        return;
    };
    let path = data.join("chest-dicom/RG1_UNCR.dcm");
    let raw = common::read_dicom(&path);
    let (ours, _) = render(&raw);
    // dicom-pixeldata windows into 0..65535 and never inverts (../shared/docs/CRATE_NOTES.md).
    let theirs = common::pixeldata_windowed(&path);
    assert_eq!(theirs.len(), ours.data.len());
    let max = theirs
        .iter()
        .zip(&ours.data)
        .map(|(&t, &g)| {
            let t8 = 255 - (f64::from(t) / 65535.0 * 255.0).round() as u8;
            t8.abs_diff(g)
        })
        .max()
        .unwrap();
    assert!(max <= 1, "max difference {max}");
}

#[test]
fn cr_16x16_with_rescale_slope_0_684_match_pydicom() {
    let Some(data) = common::shared_data("cr 16x16") else {
        return;
    };
    let reference = reference();
    for name in ["CR1_6154.dcm", "CR2_6247.dcm", "CR3_6278.dcm"] {
        let rel = format!("dicom-edge-cases/dicomdirtests-CR/{name}");
        let r = &reference[rel.as_str()];
        let path = data.join(&rel);
        let raw = common::read_dicom(&path);
        let rescale = raw.meta.rescale.clone().unwrap();
        assert_eq!((rescale.slope, rescale.intercept), (0.684, 200.0));
        let (values, modality) = modality_values(&raw).unwrap();
        assert_eq!(modality, ModalityApplied::Rescale);
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let want = r["modality_sum"].as_f64().unwrap();
        assert!(
            (sum - want).abs() < 1e-3 * want.abs().max(1.0),
            "{name}: {sum} vs {want}"
        );

        let (ours, applied) = render(&raw);
        assert_eq!(applied.window, Some((1600.0, 2800.0)));
        assert!(applied.inverted);
        let (max, differ) = compare_with_pydicom(&raw, &ours, r);
        assert!(max <= 1, "{name}: max difference {max} ({differ} pixels)");

        // And against dicom-pixeldata's rescale + window.
        let theirs = common::pixeldata_windowed(&path);
        for (&t, &g) in theirs.iter().zip(&ours.data) {
            let t8 = 255 - (f64::from(t) / 65535.0 * 255.0).round() as u8;
            assert!(t8.abs_diff(g) <= 1, "{name}: {t8} vs {g}");
        }
    }
}

#[test]
fn modality_lut_sequence_mlut_18_matches_pydicom() {
    let Some(data) = common::shared_data("mlut_18") else {
        return;
    };
    let reference = reference();
    let r = &reference["chest-dicom/mlut_18.dcm"];
    let raw = common::read_dicom(&data.join("chest-dicom/mlut_18.dcm"));
    let lut = raw
        .meta
        .modality_lut
        .as_ref()
        .expect("Modality LUT Sequence");
    assert_eq!(
        (lut.first_mapped, lut.data.len(), lut.bits),
        (-2048, 4096, 16)
    );
    let (smin, smax) = raw.finite_min_max().unwrap();
    assert_eq!(
        (smin, smax),
        (-2048.0, 2047.0),
        "signed 12-bit stored values"
    );
    let (values, modality) = modality_values(&raw).unwrap();
    assert_eq!(modality, ModalityApplied::Lut);
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    assert_eq!(sum, r["modality_sum"].as_f64().unwrap());
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!(f64::from(lo), r["modality_min"].as_f64().unwrap());
    assert_eq!(f64::from(hi), r["modality_max"].as_f64().unwrap());

    // No window in the file: min-max of the Modality LUT output.
    let (ours, applied) = render(&raw);
    assert_eq!(applied.source, WindowSource::Minmax);
    assert!(!applied.inverted);
    let (max, differ) = compare_with_pydicom(&raw, &ours, r);
    assert!(max <= 1, "max difference {max} ({differ} pixels)");
    if differ == 0 {
        assert_eq!(sha256(&ours.data), r["image_sha256"].as_str().unwrap());
    }
}

#[test]
fn voi_lut_sequence_vlut_04_matches_pydicom() {
    let Some(data) = common::shared_data("vlut_04") else {
        return;
    };
    let reference = reference();
    let r = &reference["chest-dicom/vlut_04.dcm"];
    let raw = common::read_dicom(&data.join("chest-dicom/vlut_04.dcm"));
    assert_eq!(raw.meta.voi_luts.len(), 1);
    let (ours, applied) = render(&raw);
    assert_eq!(applied.source, WindowSource::VoiLut);
    assert_eq!((applied.min, applied.max), (0.0, 255.0));
    let (max, differ) = compare_with_pydicom(&raw, &ours, r);
    assert!(max <= 1, "max difference {max} ({differ} pixels)");
    if differ == 0 {
        assert_eq!(sha256(&ours.data), r["image_sha256"].as_str().unwrap());
    }
    // A second VOI LUT was not in the file: asking for it is an error, not a silent fallback.
    let second = DisplayOptions {
        voi_index: 1,
        ..DisplayOptions::default()
    };
    let err = to_grey8(&raw, &MetadataOverride::default(), &second).unwrap_err();
    assert!(err.to_string().contains("VOI LUT index 1"), "{err}");
    // Min-max ignores the LUT and records it.
    let minmax = DisplayOptions {
        window: WindowMode::Minmax,
        ..DisplayOptions::default()
    };
    let (_, a) = to_grey8(&raw, &MetadataOverride::default(), &minmax).unwrap();
    assert_eq!(a.source, WindowSource::Minmax);
}
