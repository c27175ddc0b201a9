//! DICOM through `dicom-object` + `dicom-pixeldata`: every transfer syntax those crates decode (native,
//! explicit/implicit/big endian, deflate, RLE, JPEG baseline/lossless, JPEG 2000 via `openjp2`), plus, in
//! pure Rust and the default build, JPEG-LS through `pure_jpegls` (colour JPEG-LS needs the `charls` feature)
//! and 12-bit JPEG Extended through our own [`super::jpeg12`].
//!
//! We keep the **stored** values: the decoded samples of frame 0 are masked to BitsStored and sign-extended
//! ourselves (dicom-pixeldata's `to_vec` would apply the rescale and does not sign-extend with
//! `ModalityLutOption::None`). The Modality LUT Sequence and VOI LUT Sequence are parsed here, because
//! dicom-pixeldata does not implement the former. Colour (RGB, YBR) becomes BT.601 luma.

use std::path::Path;

use cxr_core::{
    ImageFormat, Lut, Photometric, PixelMeta, RawImage, Rescale, VoiLutFunction, Window,
};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;

use super::{ReadOptions, luma};
use crate::error::{IngestError, Result};
use crate::format::DicomFlavour;

const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];
/// JPEG Baseline and Extended: 12-bit streams (Extended) go to our own decoder, 8-bit ones to jpeg-decoder.
const JPEG_DCT: [&str; 2] = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"];

/// Frame 0's samples in native byte order, with what is needed to read them.
struct Frame {
    w: u32,
    h: u32,
    spp: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    photometric: String,
    data: Vec<u8>,
}

/// The encapsulated stream of frame 0: all fragments for one frame, else the fragments up to the second Basic
/// Offset Table entry, else one fragment per frame, else fragments up to the first that ends with EOI.
fn frame0_stream(fragments: &[Vec<u8>], offsets: &[u32], frames: i64) -> Vec<u8> {
    let take = if frames <= 1 {
        fragments.len()
    } else if offsets.len() >= 2 {
        // Offsets count the 8-byte item headers.
        let end = offsets[1] as usize;
        let mut at = 0usize;
        fragments
            .iter()
            .take_while(|f| {
                let before = at;
                at += 8 + f.len();
                before < end
            })
            .count()
    } else if fragments.len() == frames as usize {
        1
    } else {
        fragments
            .iter()
            // Fragments are padded to even length with a trailing zero.
            .position(|f| f.ends_with(&[0xFF, 0xD9]) || f.ends_with(&[0xFF, 0xD9, 0]))
            .map_or(fragments.len(), |i| i + 1)
    };
    fragments[..take.max(1).min(fragments.len())].concat()
}

/// `stream` without fill bytes: any marker may be preceded by any number of 0xFF (ITU-T T.81 B.1.1.2, kept by
/// T.87), and real CRs put one before EOI, which pure_jpegls reads as a bad marker (`got 0xFFFF`). Header
/// segments are walked by their lengths (an LSE payload may hold FF FF); in the scan, where every data 0xFF
/// is followed by a byte below 0x80 (T.87 bit stuffing), a run of 0xFF is fill plus one marker prefix.
/// Anything it does not recognise is returned as is, for the decoder to refuse.
pub(crate) fn strip_fill_bytes(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    if !s.windows(2).any(|w| w == [0xFF, 0xFF]) {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    loop {
        if s.get(i) != Some(&0xFF) {
            return Cow::Borrowed(s);
        }
        while s.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = s.get(i + 1) else {
            return Cow::Borrowed(s);
        };
        // SOI, EOI, RSTn and TEM have no length field.
        if matches!(marker, 0xD8 | 0xD9 | 0xD0..=0xD7 | 0x01) {
            out.extend_from_slice(&s[i..i + 2]);
            i += 2;
            if marker == 0xD9 {
                out.extend_from_slice(&s[i..]);
                return Cow::Owned(out);
            }
            continue;
        }
        let Some(len) = s
            .get(i + 2..i + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return Cow::Borrowed(s);
        };
        let Some(segment) = s.get(i..i + 2 + len) else {
            return Cow::Borrowed(s);
        };
        out.extend_from_slice(segment);
        i += 2 + len;
        if marker == 0xDA {
            break;
        }
    }
    // Scan data and what follows it.
    while i < s.len() {
        out.push(s[i]);
        if s[i] == 0xFF {
            while s.get(i + 1) == Some(&0xFF) {
                i += 1;
            }
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Decodes the syntaxes dicom-pixeldata cannot in the default build: JPEG-LS (pure_jpegls; CharLS with the
/// `charls` feature for colour) and 12-bit JPEG Extended ([`super::jpeg12`]). `None`: leave it to
/// dicom-pixeldata.
fn own_decode(
    obj: &DefaultDicomObject,
    path: &Path,
    ts: &str,
    cols: i64,
    rows: i64,
) -> Result<Option<Frame>> {
    let jls = JPEG_LS.contains(&ts);
    if !jls && !JPEG_DCT.contains(&ts) {
        return Ok(None);
    }
    let spp = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if spp != 1 && (!jls || cfg!(feature = "charls")) {
        return Ok(None);
    }
    let Some(elem) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Ok(None);
    };
    let Some(fragments) = elem.value().fragments() else {
        return Ok(None);
    };
    if fragments.is_empty() {
        return Err(IngestError::Decode {
            path: path.to_path_buf(),
            message: format!("transfer syntax {ts}: no pixel data fragments"),
        });
    }
    let offsets = elem.value().offset_table().unwrap_or(&[]);
    let frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    let stream = frame0_stream(fragments, offsets, frames);
    let decode_err = |codec: &str, message: String| IngestError::Decode {
        path: path.to_path_buf(),
        message: format!("transfer syntax {ts} ({codec}): {message}"),
    };
    let (w, h, samples) = if jls {
        if spp != 1 {
            return Err(IngestError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "JPEG-LS with {spp} samples per pixel: build with the `charls` feature \
                     (cxr-ingest feature `charls`; needs CMake)"
                ),
            });
        }
        let stream = strip_fill_bytes(&stream);
        let (s, w, h) = jpegls::decode(&stream, cols.max(0) as u32, rows.max(0) as u32)
            .map_err(|e| decode_err("JPEG-LS", e.to_string()))?;
        (w, h, s)
    } else {
        if super::jpeg12::precision(&stream) != Some(12) {
            return Ok(None);
        }
        let expected = (cols.max(0) as usize, rows.max(0) as usize);
        let d = super::jpeg12::decode(&stream, Some(expected))
            .map_err(|e| decode_err("12-bit JPEG", e.to_string()))?;
        (d.width as u32, d.height as u32, d.samples)
    };
    if i64::from(w) != cols || i64::from(h) != rows {
        return Err(decode_err(
            "size",
            format!("stream is {w}x{h}, the header says {cols}x{rows}"),
        ));
    }
    let bits_allocated = int(obj, tags::BITS_ALLOCATED).unwrap_or(16) as u16;
    let bits_stored = (int(obj, tags::BITS_STORED).unwrap_or(bits_allocated as i64) as u16)
        .clamp(1, bits_allocated.max(1));
    let data: Vec<u8> = match bits_allocated {
        8 => samples.iter().map(|&v| v.min(255) as u8).collect(),
        16 => samples.iter().flat_map(|v| v.to_ne_bytes()).collect(),
        other => {
            return Err(IngestError::Unsupported {
                path: path.to_path_buf(),
                what: format!("BitsAllocated {other} with transfer syntax {ts}"),
            });
        }
    };
    Ok(Some(Frame {
        w,
        h,
        spp: 1,
        bits_allocated,
        bits_stored,
        signed: int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        planar: false,
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
        data,
    }))
}

fn parse_err(path: &Path, message: impl Into<String>) -> IngestError {
    IngestError::Parse {
        path: path.to_path_buf(),
        format: "DICOM",
        message: message.into(),
    }
}

fn open(path: &Path, flavour: Option<DicomFlavour>) -> Result<DefaultDicomObject> {
    match flavour.unwrap_or(DicomFlavour::Preamble) {
        DicomFlavour::Preamble | DicomFlavour::NoPreamble => {
            let preamble = if flavour == Some(DicomFlavour::NoPreamble) {
                ReadPreamble::Never
            } else {
                ReadPreamble::Always
            };
            OpenFileOptions::new()
                .read_preamble(preamble)
                .open_file(path)
                .map_err(|e| parse_err(path, chain(&e)))
        }
        DicomFlavour::NoMeta => {
            // A bare data set: explicit VR when bytes 4..6 look like a VR, else implicit VR little endian.
            let bytes = std::fs::read(path).map_err(|e| IngestError::io(path, e))?;
            let explicit =
                bytes.len() > 6 && bytes[4].is_ascii_uppercase() && bytes[5].is_ascii_uppercase();
            let ts = if explicit {
                dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased()
            } else {
                dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased()
            };
            let obj = InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts).map_err(|e| {
                parse_err(path, format!("data set without file meta: {}", chain(&e)))
            })?;
            obj.with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(ts.uid())
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("2.25.0"),
            )
            .map_err(|e| parse_err(path, chain(&e)))
        }
    }
}

/// An error and its sources, joined: dicom-rs errors put the useful part in the source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
}

fn floats(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Vec<f64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
        .unwrap_or_default()
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

pub(super) fn read(
    path: &Path,
    flavour: Option<DicomFlavour>,
    options: &ReadOptions,
) -> Result<RawImage> {
    // Corrupt element lengths would make the parser allocate what they declare: check them first.
    let bytes = std::fs::read(path).map_err(|e| IngestError::io(path, e))?;
    super::dicom_guard::check_lengths(&bytes, flavour.unwrap_or(DicomFlavour::Preamble))
        .map_err(|m| parse_err(path, m))?;
    drop(bytes);
    let obj = open(path, flavour)?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .trim()
        .to_string();
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(parse_err(path, "no Pixel Data element (not an image)"));
    }
    let rows = int(&obj, tags::ROWS).ok_or_else(|| parse_err(path, "no Rows"))?;
    let cols = int(&obj, tags::COLUMNS).ok_or_else(|| parse_err(path, "no Columns"))?;
    options
        .limits
        .check(path, cols.max(0) as u64, rows.max(0) as u64)?;
    let photometric_raw = text(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if photometric_raw.eq_ignore_ascii_case("PALETTE COLOR") {
        return Err(IngestError::Unsupported {
            path: path.to_path_buf(),
            what: "PALETTE COLOR DICOM (not a radiograph)".into(),
        });
    }

    let frame = match own_decode(&obj, path, &ts, cols, rows)? {
        Some(f) => f,
        None => {
            let decoded = obj
                .decode_pixel_data_frame(0)
                .map_err(|e| IngestError::Decode {
                    path: path.to_path_buf(),
                    message: format!("transfer syntax {ts}: {}", chain(&e)),
                })?;
            let bits_allocated = decoded.bits_allocated();
            let spp = decoded.samples_per_pixel() as usize;
            Frame {
                w: decoded.columns(),
                h: decoded.rows(),
                spp,
                bits_allocated,
                bits_stored: decoded.bits_stored().clamp(1, bits_allocated.max(1)),
                signed: matches!(
                    decoded.pixel_representation(),
                    dicom_pixeldata::PixelRepresentation::Signed
                ),
                planar: spp > 1
                    && !matches!(
                        decoded.planar_configuration(),
                        dicom_pixeldata::PlanarConfiguration::Standard
                    ),
                photometric: decoded.photometric_interpretation().as_str().to_string(),
                data: decoded.into_data(),
            }
        }
    };
    let (w, h, spp) = (frame.w, frame.h, frame.spp);
    options.limits.check(path, w as u64, h as u64)?;
    let (bits_allocated, bits_stored, signed, planar) = (
        frame.bits_allocated,
        frame.bits_stored,
        frame.signed,
        frame.planar,
    );
    let n = w as usize * h as usize;
    let bytes_per = match bits_allocated {
        8 => 1,
        16 => 2,
        32 => 4,
        other => {
            return Err(IngestError::Unsupported {
                path: path.to_path_buf(),
                what: format!("BitsAllocated {other}"),
            });
        }
    };
    let data = &frame.data[..];
    if data.len() < n * spp * bytes_per {
        return Err(IngestError::Decode {
            path: path.to_path_buf(),
            message: format!(
                "pixel data holds {} bytes, {} expected for {w}x{h}x{spp} at {bits_allocated} bits",
                data.len(),
                n * spp * bytes_per
            ),
        });
    }
    // Samples are in native byte order after decoding.
    let sample = |i: usize| -> f32 {
        let raw: u32 = match bytes_per {
            1 => data[i] as u32,
            2 => u16::from_ne_bytes([data[2 * i], data[2 * i + 1]]) as u32,
            _ => u32::from_ne_bytes([
                data[4 * i],
                data[4 * i + 1],
                data[4 * i + 2],
                data[4 * i + 3],
            ]),
        };
        let mask: u64 = (1u64 << bits_stored) - 1;
        let v = (raw as u64 & mask) as i64;
        let v = if signed && v & (1 << (bits_stored - 1)) != 0 {
            v - (1i64 << bits_stored)
        } else {
            v
        };
        v as f32
    };
    let decoded_pi = frame.photometric.clone();
    let pixels: Vec<f32> = if spp == 1 {
        (0..n).map(sample).collect()
    } else if spp == 3 {
        let at = |p: usize, c: usize| {
            if planar {
                sample(c * n + p)
            } else {
                sample(p * 3 + c)
            }
        };
        if decoded_pi.starts_with("YBR") {
            // Y of YBR_FULL is already BT.601 luma.
            (0..n).map(|p| at(p, 0)).collect()
        } else {
            (0..n)
                .map(|p| luma(at(p, 0) as f64, at(p, 1) as f64, at(p, 2) as f64))
                .collect()
        }
    } else {
        return Err(IngestError::Unsupported {
            path: path.to_path_buf(),
            what: format!("SamplesPerPixel {spp}"),
        });
    };

    let meta = PixelMeta {
        format: Some(ImageFormat::Dicom),
        bits_stored,
        signed,
        photometric: if photometric_raw.eq_ignore_ascii_case("MONOCHROME1") {
            Photometric::Monochrome1
        } else {
            Photometric::Monochrome2
        },
        rescale: rescale(&obj),
        modality_lut: first_lut(&obj, tags::MODALITY_LUT_SEQUENCE, signed),
        windows: windows(&obj),
        voi_lut_function: match text(&obj, tags::VOILUT_FUNCTION)
            .unwrap_or_default()
            .to_ascii_uppercase()
            .as_str()
        {
            "LINEAR_EXACT" => VoiLutFunction::LinearExact,
            "SIGMOID" => VoiLutFunction::Sigmoid,
            _ => VoiLutFunction::Linear,
        },
        voi_luts: luts(&obj, tags::VOILUT_SEQUENCE, signed),
        pixel_spacing: spacing(&obj),
        converted_from_colour: spp > 1,
        rescale_applied: false,
    };
    tracing::debug!(file = %path.display(), ts, w, h, bits_stored, "decoded DICOM");
    Ok(RawImage::new(w, h, pixels, meta)?)
}

fn rescale(obj: &DefaultDicomObject) -> Option<Rescale> {
    let slope = floats(obj, tags::RESCALE_SLOPE).first().copied();
    let intercept = floats(obj, tags::RESCALE_INTERCEPT).first().copied();
    if slope.is_none() && intercept.is_none() {
        return None;
    }
    Some(Rescale {
        slope: slope.filter(|s| *s != 0.0 && s.is_finite()).unwrap_or(1.0),
        intercept: intercept.filter(|i| i.is_finite()).unwrap_or(0.0),
        kind: text(obj, tags::RESCALE_TYPE).unwrap_or_default(),
    })
}

fn windows(obj: &DefaultDicomObject) -> Vec<Window> {
    let centers = floats(obj, tags::WINDOW_CENTER);
    let widths = floats(obj, tags::WINDOW_WIDTH);
    let explanations: Vec<String> = text(obj, tags::WINDOW_CENTER_WIDTH_EXPLANATION)
        .map(|s| s.split('\\').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    centers
        .iter()
        .zip(&widths)
        .enumerate()
        .filter(|(_, (c, w))| c.is_finite() && w.is_finite() && **w > 0.0)
        .map(|(i, (&center, &width))| Window {
            center,
            width,
            explanation: explanations.get(i).cloned().unwrap_or_default(),
        })
        .collect()
}

fn spacing(obj: &DefaultDicomObject) -> Option<(f64, f64)> {
    // Pixel Spacing, else the detector's Imager Pixel Spacing (CR/DX); `None` when absent or zero.
    [tags::PIXEL_SPACING, tags::IMAGER_PIXEL_SPACING]
        .iter()
        .find_map(|&t| {
            let v = floats(obj, t);
            (v.len() >= 2 && v[0] > 0.0 && v[1] > 0.0 && v[0].is_finite() && v[1].is_finite())
                .then(|| (v[0], v[1]))
        })
}

fn first_lut(obj: &DefaultDicomObject, seq: dicom_core::Tag, signed: bool) -> Option<Lut> {
    luts(obj, seq, signed).into_iter().next()
}

/// Items of a Modality/VOI LUT Sequence (PS3.3 C.11.1.1.1): descriptor = [entries (0 = 65536), first mapped
/// value (signed when the pixels are), bits per entry].
fn luts(obj: &DefaultDicomObject, seq: dicom_core::Tag, signed: bool) -> Vec<Lut> {
    let Some(items) = obj.element_opt(seq).ok().flatten().and_then(|e| e.items()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let desc: Vec<i64> = item
                .element_opt(tags::LUT_DESCRIPTOR)
                .ok()
                .flatten()?
                .to_multi_int::<i64>()
                .ok()?;
            if desc.len() < 3 {
                return None;
            }
            let entries = if desc[0] == 0 {
                65536
            } else {
                (desc[0] & 0xFFFF) as usize
            };
            let first = desc[1] & 0xFFFF;
            let first = if signed && first > 32767 {
                first - 65536
            } else {
                first
            };
            let bits = desc[2].clamp(1, 16) as u16;
            let elem = item.element_opt(tags::LUT_DATA).ok().flatten()?;
            let mut data: Vec<u16> = match elem.to_multi_int::<u16>() {
                Ok(v) => v,
                Err(_) => {
                    let b = elem.to_bytes().ok()?;
                    b.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect()
                }
            };
            if data.len() * 2 == entries && bits <= 8 {
                // 8-bit entries packed two per 16-bit word.
                data = data.iter().flat_map(|w| [w & 0xFF, w >> 8]).collect();
            }
            if data.is_empty() {
                return None;
            }
            let explanation = item
                .element_opt(tags::LUT_EXPLANATION)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            Some(Lut {
                first_mapped: first,
                bits,
                data,
                explanation,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{frame0_stream, strip_fill_bytes};

    /// A JPEG-LS stream with 0xFF fill bytes before EOI (as a real CR has it) and before SOF/SOS decodes to
    /// the same pixels as the plain stream; the decoder alone refuses it, so the stripping is what fixes it.
    #[test]
    fn fill_bytes_before_markers_are_legal() {
        let (w, h) = (23u32, 17u32);
        let pixels: Vec<u16> = (0..w * h).map(|k| ((k * 37) % 4096) as u16).collect();
        let mut plain = Vec::new();
        jpegls::encode(&pixels, w, h, &mut plain).unwrap();
        assert_eq!(&plain[plain.len() - 2..], &[0xFF, 0xD9]);
        let mut filled = plain[..plain.len() - 2].to_vec();
        filled.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xD9]);
        assert!(
            jpegls::decode(&filled, w, h).is_err(),
            "the decoder alone now takes fill bytes"
        );
        let (got, gw, gh) = jpegls::decode(&strip_fill_bytes(&filled), w, h).unwrap();
        assert_eq!((got, gw, gh), (pixels.clone(), w, h));
        // Fill before a header marker (after SOI) too.
        let mut header_fill = vec![0xFF, 0xD8, 0xFF, 0xFF];
        header_fill.extend_from_slice(&filled[2..]);
        let (got, ..) = jpegls::decode(&strip_fill_bytes(&header_fill), w, h).unwrap();
        assert_eq!(got, pixels);
        // A stream without fill is left alone, byte for byte.
        assert_eq!(&*strip_fill_bytes(&plain), &plain[..]);
    }

    #[test]
    fn frame0_takes_the_fragments_of_the_first_frame_only() {
        let f = |b: &[u8]| b.to_vec();
        let (a, b, c, d) = (
            f(&[1, 2]),
            f(&[3, 0xFF, 0xD9, 0]),
            f(&[5, 6]),
            f(&[7, 0xFF, 0xD9]),
        );
        let all = [a.clone(), b.clone(), c.clone(), d.clone()];
        // One frame: everything.
        assert_eq!(frame0_stream(&all, &[], 1), all.concat());
        // Basic Offset Table: frame 1 starts after a and b (8-byte item headers included).
        let second = (8 + a.len() + 8 + b.len()) as u32;
        assert_eq!(
            frame0_stream(&all, &[0, second], 2),
            [a.clone(), b.clone()].concat()
        );
        // One fragment per frame.
        assert_eq!(frame0_stream(&all, &[], 4), a);
        // No table, more fragments than frames: up to the first that ends with EOI (even-length padded).
        assert_eq!(frame0_stream(&all, &[], 2), [a, b].concat());
    }
}
