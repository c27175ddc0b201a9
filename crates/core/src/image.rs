//! Decoded images and the pixel metadata that travels with them (ingest → preprocess).
//!
//! A [`RawImage`] holds the *stored* values of a grey image (before any Modality LUT), as `f32` — exact for
//! every integer up to 2^24, so 8/12/16-bit data and NIfTI floats share one type — plus [`PixelMeta`]: what the
//! file says about how to display them. Colour inputs are converted to grey by ingest (ITU-R BT.601 luma) and
//! flagged in [`PixelMeta::converted_from_colour`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// File format, detected from content (magic bytes), never from the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Dicom,
    Nifti,
    Png,
    Jpeg,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Dicom => "dicom",
            ImageFormat::Nifti => "nifti",
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageFormat {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dicom" | "dcm" => Ok(ImageFormat::Dicom),
            "nifti" | "nii" => Ok(ImageFormat::Nifti),
            "png" => Ok(ImageFormat::Png),
            "jpeg" | "jpg" => Ok(ImageFormat::Jpeg),
            _ => Err(CoreError::Parse {
                what: "image format",
                value: s.to_string(),
                expected: "dicom, nifti, png or jpeg",
            }),
        }
    }
}

/// Photometric interpretation of a grey image (DICOM PS3.3 C.7.6.3.1.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Photometric {
    /// Minimum value is displayed black.
    #[default]
    Monochrome2,
    /// Minimum value is displayed white: invert after the VOI transform.
    Monochrome1,
}

/// Rescale slope/intercept (the linear Modality LUT, PS3.3 C.11.1.1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rescale {
    pub slope: f64,
    pub intercept: f64,
    /// RescaleType (e.g. `HU`, `US`); empty when absent.
    pub kind: String,
}

/// A lookup table (Modality LUT Sequence or VOI LUT Sequence item, PS3.3 C.11.1 / C.11.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lut {
    /// First stored (or modality) value mapped; inputs below map to `data[0]`, above to the last entry.
    pub first_mapped: i64,
    /// Bits per entry as the LUT Descriptor states (8..16).
    pub bits: u16,
    pub data: Vec<u16>,
    pub explanation: String,
}

/// One VOI window (WindowCenter / WindowWidth pair).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub explanation: String,
}

/// VOI LUT Function (PS3.3 C.11.2.1.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoiLutFunction {
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

/// Everything about a decoded image that preprocessing may need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PixelMeta {
    pub format: Option<ImageFormat>,
    /// Bits stored per sample (DICOM BitsStored; 8 or 16 for PNG/JPEG; the data type's bits for NIfTI).
    pub bits_stored: u16,
    pub signed: bool,
    pub photometric: Photometric,
    pub rescale: Option<Rescale>,
    pub modality_lut: Option<Lut>,
    pub windows: Vec<Window>,
    pub voi_lut_function: VoiLutFunction,
    pub voi_luts: Vec<Lut>,
    /// Row and column spacing in mm; `None` when absent or zero.
    pub pixel_spacing: Option<(f64, f64)>,
    /// True when the file held colour (RGB/RGBA/palette) and ingest converted it to grey.
    pub converted_from_colour: bool,
    /// True when ingest already applied the rescale (NIfTI scl_slope/scl_inter): `rescale` is then informative.
    pub rescale_applied: bool,
}

/// A decoded grey image: stored values, row-major, `width * height` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<f32>,
    pub meta: PixelMeta,
}

impl RawImage {
    /// Builds an image, checking that the buffer matches the dimensions and that they are non-zero.
    pub fn new(
        width: u32,
        height: u32,
        pixels: Vec<f32>,
        meta: PixelMeta,
    ) -> Result<Self, CoreError> {
        if width == 0 || height == 0 || pixels.len() != width as usize * height as usize {
            return Err(CoreError::Parse {
                what: "image buffer",
                value: format!("{width}x{height} with {} values", pixels.len()),
                expected: "non-zero dimensions and width*height values",
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
            meta,
        })
    }

    /// Smallest and largest finite value, `None` if there is none.
    pub fn finite_min_max(&self) -> Option<(f32, f32)> {
        self.pixels
            .iter()
            .filter(|v| v.is_finite())
            .fold(None, |acc, &v| match acc {
                None => Some((v, v)),
                Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
            })
    }
}

/// An 8-bit grey image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grey8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Grey8 {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, CoreError> {
        if width == 0 || height == 0 || data.len() != width as usize * height as usize {
            return Err(CoreError::Parse {
                what: "8-bit image buffer",
                value: format!("{width}x{height} with {} values", data.len()),
                expected: "non-zero dimensions and width*height values",
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn get(&self, x: u32, y: u32) -> u8 {
        self.data[y as usize * self.width as usize + x as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_must_match_dimensions() {
        assert!(RawImage::new(2, 2, vec![0.0; 4], PixelMeta::default()).is_ok());
        assert!(RawImage::new(2, 2, vec![0.0; 3], PixelMeta::default()).is_err());
        assert!(RawImage::new(0, 2, vec![], PixelMeta::default()).is_err());
        assert!(Grey8::new(3, 1, vec![1, 2, 3]).is_ok());
        assert!(Grey8::new(3, 2, vec![1, 2, 3]).is_err());
    }

    #[test]
    fn min_max_skips_non_finite() {
        let img = RawImage::new(
            2,
            2,
            vec![f32::NAN, -3.0, 7.0, f32::INFINITY],
            PixelMeta::default(),
        )
        .unwrap();
        assert_eq!(img.finite_min_max(), Some((-3.0, 7.0)));
    }

    #[test]
    fn formats_parse() {
        assert_eq!("JPG".parse::<ImageFormat>().unwrap(), ImageFormat::Jpeg);
        assert!("gif".parse::<ImageFormat>().is_err());
    }
}
