//! PNG and JPEG through `image`: 8/16-bit grey, grey+alpha, RGB, RGBA and palette (expanded by the decoder).
//! Colour is converted to grey with BT.601 luma and flagged; alpha is ignored.

use std::io::BufReader;
use std::path::Path;

use cxr_core::{ImageFormat, PixelMeta, RawImage};
use image::DynamicImage;

use super::{ReadOptions, luma};
use crate::error::{IngestError, Result};

fn reader(
    path: &Path,
    format: ImageFormat,
) -> Result<image::ImageReader<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).map_err(|e| IngestError::io(path, e))?;
    let mut r = image::ImageReader::new(BufReader::new(file));
    r.set_format(match format {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        _ => image::ImageFormat::Png,
    });
    Ok(r)
}

/// A truncated JPEG decodes "successfully" (the decoder fills the missing rows with grey), so a cut file
/// would enter the dataset silently. The entropy-coded data byte-stuffs every 0xFF, so an EOI marker (FF D9)
/// after the last start-of-scan (FF DA) is exactly "the last scan ends"; bytes after EOI are tolerated.
fn jpeg_complete(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| IngestError::io(path, e))?;
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let ok = last_sos.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]));
    if ok {
        Ok(())
    } else {
        Err(IngestError::Parse {
            path: path.to_path_buf(),
            format: "JPEG",
            message: "truncated: no end-of-image marker after the last scan".into(),
        })
    }
}

pub(super) fn read(path: &Path, format: ImageFormat, options: &ReadOptions) -> Result<RawImage> {
    let fname = format.as_str();
    let parse = |e: image::ImageError| IngestError::Parse {
        path: path.to_path_buf(),
        format: fname,
        message: e.to_string(),
    };
    // Header first: refuse absurd sizes before the decoder allocates.
    let (w, h) = reader(path, format)?.into_dimensions().map_err(parse)?;
    options.limits.check(path, w as u64, h as u64)?;
    if format == ImageFormat::Jpeg {
        jpeg_complete(path)?;
    }
    let mut r = reader(path, format)?;
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(w);
    lim.max_image_height = Some(h);
    lim.max_alloc = Some(options.limits.max_pixels.saturating_mul(16));
    r.limits(lim);
    let img = r.decode().map_err(|e| IngestError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let (bits, colour, pixels): (u16, bool, Vec<f32>) = match &img {
        DynamicImage::ImageLuma8(b) => (8, false, b.as_raw().iter().map(|&v| v as f32).collect()),
        DynamicImage::ImageLuma16(b) => (16, false, b.as_raw().iter().map(|&v| v as f32).collect()),
        DynamicImage::ImageLumaA8(b) => (
            8,
            false,
            b.as_raw().chunks_exact(2).map(|p| p[0] as f32).collect(),
        ),
        DynamicImage::ImageLumaA16(b) => (
            16,
            false,
            b.as_raw().chunks_exact(2).map(|p| p[0] as f32).collect(),
        ),
        DynamicImage::ImageRgb8(b) => (8, true, rgb(b.as_raw(), 3)),
        DynamicImage::ImageRgba8(b) => (8, true, rgb(b.as_raw(), 4)),
        DynamicImage::ImageRgb16(b) => (16, true, rgb(b.as_raw(), 3)),
        DynamicImage::ImageRgba16(b) => (16, true, rgb(b.as_raw(), 4)),
        other => {
            let b = other.to_rgb32f();
            (
                32,
                true,
                b.as_raw()
                    .chunks_exact(3)
                    .map(|p| luma(p[0] as f64, p[1] as f64, p[2] as f64))
                    .collect(),
            )
        }
    };
    let meta = PixelMeta {
        format: Some(format),
        bits_stored: bits,
        converted_from_colour: colour,
        ..PixelMeta::default()
    };
    Ok(RawImage::new(img.width(), img.height(), pixels, meta)?)
}

fn rgb<T: Copy + Into<f64>>(raw: &[T], channels: usize) -> Vec<f32> {
    raw.chunks_exact(channels)
        .map(|p| luma(p[0].into(), p[1].into(), p[2].into()))
        .collect()
}
