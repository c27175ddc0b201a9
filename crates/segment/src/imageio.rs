//! Resizing, cropping and scaling 8-bit grey images (reading and writing them is `cxr_core::png8`'s: formats
//! by content, colour converted to grey).
//!
//! Resizing uses the `image` crate's triangle (bilinear, anti-aliased when shrinking) filter everywhere, so
//! training, inference and cropping agree on one filter.

use cxr_core::Grey8;
use image::{ImageBuffer, Luma, imageops::FilterType};

/// Resizes an 8-bit grey image with the triangle filter (a copy when the size is unchanged).
pub fn resize(img: &Grey8, width: u32, height: u32) -> Grey8 {
    if img.width == width && img.height == height {
        return img.clone();
    }
    let Some(buf) =
        ImageBuffer::<Luma<u8>, _>::from_raw(img.width, img.height, img.data.as_slice())
    else {
        // Grey8::new guarantees the buffer length; an inconsistent value is a programming error upstream.
        return Grey8 {
            width,
            height,
            data: vec![0; width as usize * height as usize],
        };
    };
    let out = image::imageops::resize(&buf, width, height, FilterType::Triangle);
    Grey8 {
        width,
        height,
        data: out.into_raw(),
    }
}

/// Resizes a square probability map (`side` x `side`, row-major) to `width` x `height`, bilinearly.
pub fn resize_prob(prob: &[f32], side: u32, width: u32, height: u32) -> Vec<f32> {
    if (side, side) == (width, height) {
        return prob.to_vec();
    }
    match ImageBuffer::<Luma<f32>, _>::from_raw(side, side, prob) {
        Some(buf) => image::imageops::resize(&buf, width, height, FilterType::Triangle).into_raw(),
        // A map of the wrong length is a programming error upstream: an empty mask, not a panic.
        None => vec![0.0; width as usize * height as usize],
    }
}

/// Resizes a binary mask ({0, 255} or {0, 1}) and thresholds it at half its maximum: smooth edges, no
/// blockiness, still binary ({0, 255}).
pub fn resize_mask(mask: &Grey8, width: u32, height: u32) -> Grey8 {
    let on = mask.data.iter().copied().max().unwrap_or(0);
    if on == 0 {
        return Grey8 {
            width,
            height,
            data: vec![0; width as usize * height as usize],
        };
    }
    let scaled = Grey8 {
        width: mask.width,
        height: mask.height,
        data: mask
            .data
            .iter()
            .map(|&v| if v >= on { 255 } else { 0 })
            .collect(),
    };
    let mut out = resize(&scaled, width, height);
    for v in &mut out.data {
        *v = if *v >= 128 { 255 } else { 0 };
    }
    out
}

/// Grey values scaled to [0, 1] (the paper's input /255).
pub fn to_unit(img: &Grey8) -> Vec<f32> {
    img.data.iter().map(|&v| f32::from(v) / 255.0).collect()
}

/// A rectangle cut out of an image (caller guarantees it lies inside).
pub fn crop(img: &Grey8, x: u32, y: u32, w: u32, h: u32) -> Grey8 {
    let mut data = Vec::with_capacity(w as usize * h as usize);
    for row in y..y + h {
        let start = row as usize * img.width as usize + x as usize;
        data.extend_from_slice(&img.data[start..start + w as usize]);
    }
    Grey8 {
        width: w,
        height: h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_masks_stay_binary() {
        let mut data = vec![0u8; 16 * 16];
        for y in 4..12 {
            for x in 2..8 {
                data[y * 16 + x] = 255;
            }
        }
        let m = Grey8::new(16, 16, data).unwrap();
        let big = resize_mask(&m, 40, 24);
        assert!(big.data.iter().all(|&v| v == 0 || v == 255));
        let area = big.data.iter().filter(|&&v| v == 255).count() as f64;
        let expected = 48.0 / 256.0 * 40.0 * 24.0;
        assert!(
            (area - expected).abs() / expected < 0.1,
            "{area} vs {expected}"
        );
        let c = crop(&m, 2, 4, 6, 8);
        assert!(c.data.iter().all(|&v| v == 255));
    }

    #[test]
    fn resized_probabilities_put_the_edge_between_model_pixels() {
        // Columns 0-2 at 0, column 3 at 0.4, 4-7 at 1: the 0.5 crossing is at model x = 3 + 0.1/0.6,
        // i.e. at output x = (3.1667 + 0.5) * 8 - 0.5 = 28.8 (a thresholded mask would put it at 31.5).
        let row = [0.0f32, 0.0, 0.0, 0.4, 1.0, 1.0, 1.0, 1.0];
        let prob: Vec<f32> = (0..8).flat_map(|_| row).collect();
        let big = resize_prob(&prob, 8, 64, 16);
        assert_eq!(big.len(), 64 * 16);
        for r in big.chunks(64) {
            assert!(r.windows(2).all(|w| w[1] >= w[0] - 1e-6));
            assert!(r.iter().all(|&v| (0.0..=1.0 + 1e-6).contains(&v)));
            let first_on = r.iter().position(|&v| v > 0.5).unwrap();
            assert!((28..=30).contains(&first_on), "{first_on}");
        }
        assert_eq!(resize_prob(&prob, 8, 8, 8), prob);
        assert!(resize_prob(&prob[..10], 8, 4, 4).iter().all(|&v| v == 0.0));
    }
}
