//! Test helpers: a minimal DICOM → `RawImage` reader built on dicom-object / dicom-pixeldata (stored values,
//! Modality LUT disabled), so these tests do not depend on cxr-ingest; and the shared-data location.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cxr_core::{Lut, Photometric, PixelMeta, RawImage, Rescale, VoiLutFunction, Window};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, open_file};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

/// `$CXR_SHARED_DATA` or `<repo>/../shared/data`; `None` (and a `skipped:` line) when absent.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if dir.join("chest-dicom").is_dir() {
        Some(dir)
    } else {
        println!("skipped: {test}: no shared data at {}", dir.display());
        None
    }
}

fn lut_from_item(item: &InMemDicomObject, signed: bool) -> Lut {
    let desc = item.get(tags::LUT_DESCRIPTOR).expect("LUT descriptor");
    let d: Vec<i64> = desc.to_multi_int().expect("descriptor ints");
    // PS3.3 C.11.1.1.1: the first mapped value is signed when the pixel data is, whatever its VR says.
    let first = if signed && d[1] > 32767 {
        d[1] - 65536
    } else {
        d[1]
    };
    let data: Vec<u16> = item
        .get(tags::LUT_DATA)
        .expect("LUT data")
        .to_multi_int()
        .expect("LUT data ints");
    let n = if d[0] == 0 { 65536 } else { d[0] as usize };
    assert_eq!(data.len(), n, "LUT length");
    Lut {
        first_mapped: first,
        bits: d[2] as u16,
        data,
        explanation: String::new(),
    }
}

/// Meta only (windows, rescale, LUTs, photometric), from an open object.
pub fn meta_of(obj: &DefaultDicomObject) -> PixelMeta {
    let int = |t| obj.get(t).and_then(|e| e.to_int::<i64>().ok());
    let floats = |t| {
        obj.get(t)
            .and_then(|e| e.to_multi_float64().ok())
            .unwrap_or_default()
    };
    let signed = int(tags::PIXEL_REPRESENTATION) == Some(1);
    let photometric = match obj
        .get(tags::PHOTOMETRIC_INTERPRETATION)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .as_deref()
    {
        Some("MONOCHROME1") => Photometric::Monochrome1,
        _ => Photometric::Monochrome2,
    };
    let centers = floats(tags::WINDOW_CENTER);
    let widths = floats(tags::WINDOW_WIDTH);
    let windows = centers
        .iter()
        .zip(&widths)
        .map(|(&center, &width)| Window {
            center,
            width,
            explanation: String::new(),
        })
        .collect();
    let function = match obj
        .get(tags::VOILUT_FUNCTION)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .as_deref()
    {
        Some("LINEAR_EXACT") => VoiLutFunction::LinearExact,
        Some("SIGMOID") => VoiLutFunction::Sigmoid,
        _ => VoiLutFunction::Linear,
    };
    let slope = floats(tags::RESCALE_SLOPE).first().copied();
    let intercept = floats(tags::RESCALE_INTERCEPT).first().copied();
    let rescale = match (slope, intercept) {
        (Some(slope), Some(intercept)) => Some(Rescale {
            slope,
            intercept,
            kind: String::new(),
        }),
        _ => None,
    };
    let seq = |t| {
        obj.get(t)
            .and_then(|e| {
                e.items().map(|items| {
                    items
                        .iter()
                        .map(|i| lut_from_item(i, signed))
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default()
    };
    PixelMeta {
        format: Some(cxr_core::ImageFormat::Dicom),
        bits_stored: int(tags::BITS_STORED).unwrap_or(0) as u16,
        signed,
        photometric,
        rescale,
        modality_lut: seq(tags::MODALITY_LUT_SEQUENCE).into_iter().next(),
        windows,
        voi_lut_function: function,
        voi_luts: seq(tags::VOILUT_SEQUENCE),
        ..PixelMeta::default()
    }
}

/// Decodes the first frame's stored values (no Modality LUT, no VOI) plus the metadata.
pub fn read_dicom(path: &Path) -> RawImage {
    let obj = open_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoded = obj
        .decode_pixel_data()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let pixels: Vec<f32> = decoded
        .to_vec_frame_with_options(0, &opts)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let meta = meta_of(&obj);
    // dicom-pixeldata 0.10.1 does not sign-extend from BitsStored: mlut_18 (signed, 12 of 16 bits) stores -1 as
    // 0x0FFF and comes out as 4095. The bits above BitsStored carry no value (PS3.5 8.1.1): mask / extend here.
    let bits = u32::from(meta.bits_stored);
    let pixels = if (1..32).contains(&bits) {
        pixels
            .into_iter()
            .map(|v| {
                let x = v as i64 as i32;
                let x = if meta.signed {
                    (x << (32 - bits)) >> (32 - bits)
                } else {
                    ((x as u32) & ((1u32 << bits) - 1)) as i32
                };
                x as f32
            })
            .collect()
    } else {
        pixels
    };
    RawImage::new(decoded.columns(), decoded.rows(), pixels, meta).unwrap()
}

/// dicom-pixeldata's own rendering: Modality LUT + first window as f32 in 0..65535 (it never inverts).
pub fn pixeldata_windowed(path: &Path) -> Vec<f32> {
    let obj = open_file(path).unwrap();
    let decoded = obj.decode_pixel_data().unwrap();
    let opts = ConvertOptions::new().with_voi_lut(dicom_pixeldata::VoiLutOption::First);
    decoded.to_vec_frame_with_options(0, &opts).unwrap()
}
