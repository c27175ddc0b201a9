//! Overlays for the worst held-out cases: the image in grey, the true lung outline in green, the
//! predicted outline in red and the lung-box crop in yellow, so a reader sees at once where a mask stops
//! short (dense opacities) or spills over.

use std::path::Path;

use cxr_core::Grey8;
use image::{ImageEncoder, Rgb, RgbImage, imageops::FilterType};

use crate::{SegmentError, crop};

/// Longest side of an overlay: enough to judge a mask, small enough to embed a dozen in a report.
const MAX_SIDE: u32 = 256;

/// Writes the overlay PNG atomically. `truth` and `pred` have the image's size.
pub fn write_overlay(
    path: &Path,
    image: &Grey8,
    truth: &Grey8,
    pred: &Grey8,
) -> Result<(), SegmentError> {
    let (w, h) = (image.width, image.height);
    let mut rgb = RgbImage::from_fn(w, h, |x, y| {
        let v = image.data[(y * w + x) as usize];
        Rgb([v, v, v])
    });
    let edge = |m: &Grey8, x: u32, y: u32| {
        let on = |x: i64, y: i64| {
            x >= 0
                && y >= 0
                && x < i64::from(w)
                && y < i64::from(h)
                && m.data[(y as u32 * w + x as u32) as usize] != 0
        };
        let (x, y) = (i64::from(x), i64::from(y));
        on(x, y) && !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1))
    };
    // Outlines two pixels thick at large sizes, so they survive the downscale.
    let thick = (w.max(h) / MAX_SIDE).max(1) as i64;
    let mut paint = |m: &Grey8, colour: [u8; 3]| {
        for y in 0..h {
            for x in 0..w {
                if edge(m, x, y) {
                    for dy in 0..thick {
                        for dx in 0..thick {
                            let (px, py) = (i64::from(x) + dx, i64::from(y) + dy);
                            if px < i64::from(w) && py < i64::from(h) {
                                rgb.put_pixel(px as u32, py as u32, Rgb(colour));
                            }
                        }
                    }
                }
            }
        }
    };
    paint(truth, [40, 220, 60]);
    paint(pred, [235, 40, 40]);
    if let Some(b) = crop::lung_box(pred).crop {
        let yellow = Rgb([240, 210, 0]);
        for x in b.x..(b.x + b.w).min(w) {
            for y in [b.y, (b.y + b.h).saturating_sub(1).min(h - 1)] {
                rgb.put_pixel(x, y, yellow);
            }
        }
        for y in b.y..(b.y + b.h).min(h) {
            for x in [b.x, (b.x + b.w).saturating_sub(1).min(w - 1)] {
                rgb.put_pixel(x, y, yellow);
            }
        }
    }
    let scale = f64::from(MAX_SIDE) / f64::from(w.max(h));
    let rgb = if scale < 1.0 {
        let (nw, nh) = (
            ((f64::from(w) * scale).round() as u32).max(1),
            ((f64::from(h) * scale).round() as u32).max(1),
        );
        image::imageops::resize(&rgb, nw, nh, FilterType::Triangle)
    } else {
        rgb
    };
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            rgb.as_raw(),
            rgb.width(),
            rgb.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| SegmentError::Image {
            path: path.to_path_buf(),
            message: format!("encoding PNG: {e}"),
        })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SegmentError::io(dir, e))?;
    }
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}
