//! NIfTI-1 and NIfTI-2 (`.nii`, gzip-compressed or not — decided by content, not by name — either endianness).
//!
//! NIfTI-1 goes through the `nifti` crate. `nifti` 0.18 has no NIfTI-2 reader, so NIfTI-2 headers are parsed
//! here (fixed offsets of the NIfTI-2 standard) and the slice is read directly.
//! Axis 0 of the array is the image column (x), axis 1 the row (y): pixel (row r, col c) = data[c, r, z].
//! A singleton third (and fourth) dimension is accepted. Volumes with more than one slice are refused unless
//! [`ReadOptions::volume_slice`] names one (then slice z of the first volume). scl_slope/scl_inter are applied
//! (`nifti` does it while converting to f32; here in f64 for NIfTI-2), so the meta says `rescale_applied` and
//! keeps the factors for the record.

use std::io::Read;
use std::path::Path;

use cxr_core::{ImageFormat, PixelMeta, RawImage, Rescale};
use nifti::{InMemNiftiObject, IntoNdArray, NiftiObject};

use super::ReadOptions;
use crate::error::{IngestError, Result};

/// What both header versions tell us.
struct Header {
    version: u8,
    big_endian: bool,
    datatype: i16,
    dims: Vec<usize>,
    pixdim: [f64; 3],
    vox_offset: u64,
    slope: f64,
    inter: f64,
}

fn err(path: &Path, message: impl Into<String>) -> IngestError {
    IngestError::Parse {
        path: path.to_path_buf(),
        format: "NIfTI",
        message: message.into(),
    }
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = std::fs::File::open(path).map_err(|e| IngestError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| IngestError::io(path, e))?;
    let file =
        std::io::BufReader::new(std::fs::File::open(path).map_err(|e| IngestError::io(path, e))?);
    Ok(if n == 2 && magic == [0x1F, 0x8B] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

fn parse_header(path: &Path, b: &[u8]) -> Result<Header> {
    if b.len() < 348 {
        return Err(err(path, format!("header truncated ({} bytes)", b.len())));
    }
    let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (size, big) = if le == 348 || le == 540 {
        (le, false)
    } else {
        (be, true)
    };
    let i16_at = |o: usize| {
        let a = [b[o], b[o + 1]];
        if big {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    };
    let f32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        (if big {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        }) as f64
    };
    let i64_at = |o: usize| {
        let a: [u8; 8] = b[o..o + 8].try_into().unwrap_or([0; 8]);
        if big {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        }
    };
    let f64_at = |o: usize| {
        let a: [u8; 8] = b[o..o + 8].try_into().unwrap_or([0; 8]);
        if big {
            f64::from_be_bytes(a)
        } else {
            f64::from_le_bytes(a)
        }
    };
    let (version, datatype, raw_dims, pixdim, vox, slope, inter) = match size {
        348 => {
            let dims: Vec<i64> = (0..8).map(|i| i16_at(40 + 2 * i) as i64).collect();
            let pix = [f32_at(80), f32_at(84), f32_at(88)];
            (
                1,
                i16_at(70),
                dims,
                pix,
                f32_at(108),
                f32_at(112),
                f32_at(116),
            )
        }
        540 if b.len() >= 540 => {
            let dims: Vec<i64> = (0..8).map(|i| i64_at(16 + 8 * i)).collect();
            let pix = [f64_at(112), f64_at(120), f64_at(128)];
            (
                2,
                i16_at(12),
                dims,
                pix,
                i64_at(168) as f64,
                f64_at(176),
                f64_at(184),
            )
        }
        _ => return Err(err(path, format!("sizeof_hdr {le} is neither 348 nor 540"))),
    };
    let ndim = raw_dims[0];
    if !(2..=7).contains(&ndim) {
        return Err(err(path, format!("dim[0] = {ndim}, expected 2..7")));
    }
    if raw_dims[1..=ndim as usize].iter().any(|&d| d < 1) {
        return Err(err(
            path,
            format!(
                "non-positive dimension in {:?}",
                &raw_dims[1..=ndim as usize]
            ),
        ));
    }
    if !(vox.is_finite() && vox >= 0.0) {
        return Err(err(path, format!("vox_offset {vox}")));
    }
    Ok(Header {
        version,
        big_endian: big,
        datatype,
        dims: raw_dims[1..=ndim as usize]
            .iter()
            .map(|&d| d as usize)
            .collect(),
        pixdim,
        vox_offset: vox as u64,
        slope,
        inter,
    })
}

/// (bits, signed, bytes per voxel) of the scalar NIfTI data types.
fn datatype_info(dt: i16) -> Option<(u16, bool, usize)> {
    Some(match dt {
        2 => (8, false, 1),
        256 => (8, true, 1),
        4 => (16, true, 2),
        512 => (16, false, 2),
        8 => (32, true, 4),
        768 => (32, false, 4),
        1024 => (64, true, 8),
        1280 => (64, false, 8),
        16 => (32, true, 4),
        64 => (64, true, 8),
        _ => return None,
    })
}

pub(super) fn read(path: &Path, options: &ReadOptions) -> Result<RawImage> {
    let mut stream = open(path)?;
    let mut head = Vec::with_capacity(540);
    (&mut stream)
        .take(540)
        .read_to_end(&mut head)
        .map_err(|e| IngestError::io(path, e))?;
    // Header only first: the size checks run before the volume is allocated.
    let h = parse_header(path, &head)?;
    let (w, hgt) = (h.dims[0], h.dims[1]);
    options.limits.check(path, w as u64, hgt as u64)?;
    let depth = h.dims.get(2).copied().unwrap_or(1);
    // Checked: a corrupt NIfTI-2 header can claim 2^40 slices per axis (found by fuzzing: overflow panic).
    let slices = h.dims[2..]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| err(path, format!("dimensions {:?} overflow", h.dims)))?;
    let z = match (slices, options.volume_slice) {
        (1, _) => 0,
        (_, Some(k)) if k < depth => k,
        (_, Some(k)) => {
            return Err(IngestError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "slice {k} requested from a volume of dimensions {:?}",
                    h.dims
                ),
            });
        }
        (_, None) => {
            return Err(IngestError::Volume {
                path: path.to_path_buf(),
                dims: h.dims.clone(),
                slices,
            });
        }
    };
    let Some((bits, signed, bpv)) = datatype_info(h.datatype) else {
        return Err(IngestError::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "NIfTI data type code {} (only grey scalar types are read)",
                h.datatype
            ),
        });
    };
    let plane = w * hgt;
    let pixels = if h.version == 1 {
        // Whole volume through `nifti`, bounded: the checked header says how many bytes there can be.
        let need = h.vox_offset as usize + slices * plane * bpv;
        let mut bytes = head;
        stream
            .take(need.saturating_sub(bytes.len()) as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| IngestError::io(path, e))?;
        let obj = InMemNiftiObject::from_reader(std::io::Cursor::new(bytes))
            .map_err(|e| err(path, e.to_string()))?;
        let arr = obj
            .into_volume()
            .into_ndarray::<f32>()
            .map_err(|e| err(path, e.to_string()))?
            .into_dyn();
        let shape = arr.shape().to_vec();
        if shape.len() < 2 || shape[0] != w || shape[1] != hgt {
            return Err(err(
                path,
                format!(
                    "array shape {shape:?} does not match the header {:?}",
                    h.dims
                ),
            ));
        }
        let mut index = vec![0usize; shape.len()];
        if shape.len() > 2 {
            index[2] = z;
        }
        let mut out = Vec::with_capacity(plane);
        for r in 0..hgt {
            for c in 0..w {
                index[0] = c;
                index[1] = r;
                out.push(arr[ndarray::IxDyn(&index)]);
            }
        }
        out
    } else {
        // NIfTI-2: skip to the slice and convert it alone.
        let skip = h.vox_offset.saturating_sub(head.len() as u64) + (z * plane * bpv) as u64;
        std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink())
            .map_err(|e| IngestError::io(path, e))?;
        let mut raw = vec![0u8; plane * bpv];
        stream
            .read_exact(&mut raw)
            .map_err(|e| err(path, format!("voxel data truncated: {e}")))?;
        let scale = h.slope != 0.0 && h.slope.is_finite();
        raw.chunks_exact(bpv)
            .map(|c| {
                let v = voxel(c, h.datatype, h.big_endian);
                (if scale { v * h.slope + h.inter } else { v }) as f32
            })
            .collect()
    };
    // NaN/Inf voxels (float data, or a scale overflowing f32) would poison every min/max and window
    // downstream: refuse the file here, naming it, rather than render garbage.
    if let Some(at) = pixels.iter().position(|v| !v.is_finite()) {
        return Err(err(
            path,
            format!(
                "non-finite voxel value {} at row {}, column {}",
                pixels[at],
                at / w,
                at % w
            ),
        ));
    }
    let scaled = h.slope != 0.0 && h.slope.is_finite() && (h.slope != 1.0 || h.inter != 0.0);
    let spacing = (h.pixdim[1], h.pixdim[0]);
    let meta = PixelMeta {
        format: Some(ImageFormat::Nifti),
        bits_stored: bits,
        signed,
        rescale: scaled.then(|| Rescale {
            slope: h.slope,
            intercept: h.inter,
            kind: String::new(),
        }),
        rescale_applied: scaled,
        pixel_spacing: (spacing.0 > 0.0
            && spacing.1 > 0.0
            && spacing.0.is_finite()
            && spacing.1.is_finite())
        .then_some(spacing),
        ..PixelMeta::default()
    };
    Ok(RawImage::new(w as u32, hgt as u32, pixels, meta)?)
}

fn voxel(c: &[u8], dt: i16, big: bool) -> f64 {
    macro_rules! num {
        ($t:ty) => {{
            let a = c.try_into().unwrap_or([0; std::mem::size_of::<$t>()]);
            (if big {
                <$t>::from_be_bytes(a)
            } else {
                <$t>::from_le_bytes(a)
            }) as f64
        }};
    }
    match dt {
        2 => c[0] as f64,
        256 => c[0] as i8 as f64,
        4 => num!(i16),
        512 => num!(u16),
        8 => num!(i32),
        768 => num!(u32),
        1024 => num!(i64),
        1280 => num!(u64),
        16 => num!(f32),
        _ => num!(f64),
    }
}
