//! Encoders for the datasets' native formats: 16-bit grey PNG (8-bit PNGs are `cxr_core::png8`'s), grey JPEG,
//! DICOM (CR/DX, uncompressed) and NIfTI-1 (.nii.gz). All encoders are deterministic: the same pixels and
//! metadata give the same bytes.

use std::io::Write;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use crate::SynthError;

fn encode_err(what: &str, e: impl std::fmt::Display) -> SynthError {
    SynthError::Encode {
        what: what.to_string(),
        message: e.to_string(),
    }
}

pub fn png16(width: usize, height: usize, pixels: &[u16]) -> Result<Vec<u8>, SynthError> {
    // `write_image` takes 16-bit samples in native byte order.
    let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 2);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            &bytes,
            width as u32,
            height as u32,
            image::ExtendedColorType::L16,
        )
        .map_err(|e| encode_err("16-bit PNG", e))?;
    Ok(out)
}

pub fn jpeg(
    width: usize,
    height: usize,
    pixels: &[u8],
    quality: u8,
) -> Result<Vec<u8>, SynthError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(
            pixels,
            width as u32,
            height as u32,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| encode_err("JPEG", e))?;
    Ok(out)
}

/// Everything a synthetic CR/DX file carries besides its pixels.
#[derive(Debug, Clone)]
pub struct DicomMeta {
    pub modality: &'static str,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub study_date: String,
    pub study_description: String,
    pub series_description: String,
    pub series_number: u32,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: char,
    pub patient_age: u32,
    pub view_position: &'static str,
    pub photometric: &'static str,
    pub bits_stored: u16,
    pub window_center: f64,
    pub window_width: f64,
    pub pixel_spacing: f64,
}

fn ds(v: f64) -> String {
    // DS is at most 16 characters; a fixed 1-decimal form is always short enough here.
    format!("{v:.1}")
}

pub fn dicom(
    width: usize,
    height: usize,
    pixels: &[u16],
    m: &DicomMeta,
) -> Result<Vec<u8>, SynthError> {
    let sop_class = if m.modality == "DX" {
        uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION
    } else {
        uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE
    };
    let spacing = format!("{:.4}\\{:.4}", m.pixel_spacing, m.pixel_spacing);
    let elements = vec![
        DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 100"),
        ),
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(sop_class)),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(m.sop_instance_uid.as_str()),
        ),
        DataElement::new(
            tags::STUDY_DATE,
            VR::DA,
            PrimitiveValue::from(m.study_date.as_str()),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from(m.modality)),
        DataElement::new(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from(m.study_description.as_str()),
        ),
        DataElement::new(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from(m.series_description.as_str()),
        ),
        DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from(m.patient_name.as_str()),
        ),
        DataElement::new(
            tags::PATIENT_ID,
            VR::LO,
            PrimitiveValue::from(m.patient_id.as_str()),
        ),
        DataElement::new(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            PrimitiveValue::from(m.patient_birth_date.as_str()),
        ),
        DataElement::new(
            tags::PATIENT_SEX,
            VR::CS,
            PrimitiveValue::from(m.patient_sex.to_string()),
        ),
        DataElement::new(
            tags::PATIENT_AGE,
            VR::AS,
            PrimitiveValue::from(format!("{:03}Y", m.patient_age.min(999))),
        ),
        DataElement::new(
            tags::BODY_PART_EXAMINED,
            VR::CS,
            PrimitiveValue::from("CHEST"),
        ),
        DataElement::new(
            tags::VIEW_POSITION,
            VR::CS,
            PrimitiveValue::from(m.view_position),
        ),
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(m.study_uid.as_str()),
        ),
        DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(m.series_uid.as_str()),
        ),
        DataElement::new(
            tags::SERIES_NUMBER,
            VR::IS,
            PrimitiveValue::from(m.series_number.to_string()),
        ),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from("1")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(m.photometric),
        ),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(height as u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(width as u16)),
        DataElement::new(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::from(spacing)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(m.bits_stored),
        ),
        DataElement::new(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(m.bits_stored - 1),
        ),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        DataElement::new(
            tags::WINDOW_CENTER,
            VR::DS,
            PrimitiveValue::from(ds(m.window_center)),
        ),
        DataElement::new(
            tags::WINDOW_WIDTH,
            VR::DS,
            PrimitiveValue::from(ds(m.window_width)),
        ),
        DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("0")),
        DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("1")),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.to_vec().into()),
        ),
    ];
    let obj = InMemDicomObject::from_element_iter(elements);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid("2.25.302104300")
                .implementation_version_name("CXR_SYNTH"),
        )
        .map_err(|e| encode_err("DICOM meta", e))?;
    let mut out = Vec::with_capacity(pixels.len() * 2 + 2048);
    file.write_all(&mut out)
        .map_err(|e| encode_err("DICOM", e))?;
    Ok(out)
}

/// A 2-D NIfTI-1 volume of uint16, gzip-compressed. Array axis 0 is x = image column, axis 1 is y = image
/// row from the top; data are written x fastest (NIfTI's Fortran order), i.e. row after row.
pub fn nifti_gz(
    width: usize,
    height: usize,
    pixels: &[u16],
    spacing: f32,
) -> Result<Vec<u8>, SynthError> {
    let mut h = vec![0u8; 352];
    let put_i16 =
        |h: &mut Vec<u8>, off: usize, v: i16| h[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 =
        |h: &mut Vec<u8>, off: usize, v: f32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    // dim: 2-D, then unit sizes for the unused dimensions.
    let dims = [2i16, width as i16, height as i16, 1, 1, 1, 1, 1];
    for (k, d) in dims.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * k, *d);
    }
    put_i16(&mut h, 70, 512); // datatype: uint16
    put_i16(&mut h, 72, 16); // bitpix
    let pixdim = [1.0f32, spacing, spacing, 1.0, 1.0, 1.0, 1.0, 1.0];
    for (k, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * k, *p);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2; // xyzt_units: mm
    let descrip = b"cxr-synth radiograph";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    h[344..348].copy_from_slice(b"n+1\0");
    // Bytes 348..352: the extension flag, zero (no extensions).
    let mut raw = h;
    raw.reserve(pixels.len() * 2);
    for v in pixels {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    // GzEncoder writes mtime 0 and no file name: deterministic bytes.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw)
        .map_err(|e| encode_err("NIfTI gzip", e))?;
    enc.finish().map_err(|e| encode_err("NIfTI gzip", e))
}
