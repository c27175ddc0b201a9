//! Occlusion images for the audit's test 2: the model's AUC on full images, on images with the lungs removed
//! and on the lungs alone. A model that still separates the classes with the lungs removed is reading
//! something other than the lungs (markers, borders, processing).
//!
//! Masks follow the segment stage's convention: a grey PNG of the image's size, lung where the value is
//! at least 128 ({0, 255} in practice). The fill uses only the pixels that are *kept* (their mean, or noise
//! with their mean and standard deviation), so the filled region carries no information about what was
//! removed: filling the removed lungs with the whole-image mean would leak the lungs' brightness (opacity).

use cxr_core::Grey8;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::error::{ExplainError, Result};

/// Mask values at or above this are lung.
pub const MASK_THRESHOLD: u8 = 128;

/// What replaces the occluded pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "fill")]
pub enum Fill {
    /// The mean of the kept pixels, rounded.
    Mean,
    /// Gaussian noise with the kept pixels' mean and standard deviation, clamped to 0..=255, from a ChaCha8
    /// stream seeded with `seed` (same seed, same image).
    Noise { seed: u64 },
    /// A constant grey value.
    Value { value: u8 },
}

impl Fill {
    /// A short name for file names and reports: `mean`, `noise`, `value<v>`.
    pub fn name(&self) -> String {
        match self {
            Fill::Mean => "mean".into(),
            Fill::Noise { .. } => "noise".into(),
            Fill::Value { value } => format!("value{value}"),
        }
    }
}

/// The image with the lungs (mask >= 128) replaced by `fill`.
pub fn remove_lungs(image: &Grey8, mask: &Grey8, fill: Fill) -> Result<Grey8> {
    occlude(image, mask, fill, true)
}

/// The lungs alone: everything outside the mask replaced by `fill`.
pub fn lungs_only(image: &Grey8, mask: &Grey8, fill: Fill) -> Result<Grey8> {
    occlude(image, mask, fill, false)
}

/// Replaces the pixels whose "is lung" equals `replace_lung` by `fill`, computed from the other pixels.
fn occlude(image: &Grey8, mask: &Grey8, fill: Fill, replace_lung: bool) -> Result<Grey8> {
    check_same_size(image, mask)?;
    let replaced = |m: u8| (m >= MASK_THRESHOLD) == replace_lung;
    let (mut n, mut sum, mut sum2) = (0u64, 0f64, 0f64);
    for (&p, &m) in image.data.iter().zip(&mask.data) {
        if !replaced(m) {
            n += 1;
            sum += p as f64;
            sum2 += (p as f64) * (p as f64);
        }
    }
    let what = if replace_lung {
        "remove lungs"
    } else {
        "lungs only"
    };
    if n == 0 {
        return Err(ExplainError::invalid(
            what,
            "nothing would be kept (the mask covers the whole image or is empty)",
        ));
    }
    let mean = sum / n as f64;
    let sd = (sum2 / n as f64 - mean * mean).max(0.0).sqrt();
    let mut data = image.data.clone();
    let targets = data
        .iter_mut()
        .zip(&mask.data)
        .filter(|(_, m)| replaced(**m))
        .map(|(p, _)| p);
    match fill {
        Fill::Mean => {
            let v = mean.round().clamp(0.0, 255.0) as u8;
            targets.for_each(|p| *p = v);
        }
        Fill::Value { value } => targets.for_each(|p| *p = value),
        Fill::Noise { seed } => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let normal = Normal::new(mean, sd)
                .map_err(|e| ExplainError::invalid(what, format!("noise distribution: {e}")))?;
            targets.for_each(|p| *p = normal.sample(&mut rng).round().clamp(0.0, 255.0) as u8);
        }
    }
    Ok(Grey8 {
        width: image.width,
        height: image.height,
        data,
    })
}

fn check_same_size(image: &Grey8, mask: &Grey8) -> Result<()> {
    if image.width != mask.width || image.height != mask.height {
        return Err(ExplainError::shape(
            "lung mask",
            format!(
                "mask is {}x{} but the image is {}x{}",
                mask.width, mask.height, image.width, image.height
            ),
        ));
    }
    Ok(())
}

/// The rectangle `x, y, w, h` of `image` (the segment stage's `crop_x, crop_y, crop_w, crop_h`), so that a
/// mask drawn on the full image can follow the model onto its cropped input.
pub fn crop(image: &Grey8, x: u32, y: u32, w: u32, h: u32) -> Result<Grey8> {
    let fits = w > 0
        && h > 0
        && x.checked_add(w).is_some_and(|r| r <= image.width)
        && y.checked_add(h).is_some_and(|b| b <= image.height);
    if !fits {
        return Err(ExplainError::shape(
            "crop",
            format!(
                "rectangle {w}x{h} at ({x}, {y}) does not fit a {}x{} image",
                image.width, image.height
            ),
        ));
    }
    let mut data = Vec::with_capacity(w as usize * h as usize);
    for row in y..y + h {
        let start = row as usize * image.width as usize + x as usize;
        data.extend_from_slice(&image.data[start..start + w as usize]);
    }
    Ok(Grey8 {
        width: w,
        height: h,
        data,
    })
}

/// Nearest-neighbour resampling (pixel centres aligned), for masks: it never invents values between 0 and 255.
pub fn resize_nearest(image: &Grey8, width: u32, height: u32) -> Result<Grey8> {
    if width == 0 || height == 0 {
        return Err(ExplainError::shape(
            "resize",
            format!("target size {width}x{height}"),
        ));
    }
    let src = |i: u32, dst_len: u32, src_len: u32| -> usize {
        let s = ((i as f64 + 0.5) * src_len as f64 / dst_len as f64).floor() as usize;
        s.min(src_len as usize - 1)
    };
    let cols: Vec<usize> = (0..width).map(|x| src(x, width, image.width)).collect();
    let mut data = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        let row = src(y, height, image.height) * image.width as usize;
        data.extend(cols.iter().map(|&c| image.data[row + c]));
    }
    Ok(Grey8 {
        width,
        height,
        data,
    })
}

/// The fraction of pixels that are lung.
pub fn mask_area_fraction(mask: &Grey8) -> f64 {
    mask.data.iter().filter(|&&m| m >= MASK_THRESHOLD).count() as f64 / mask.data.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4x3 image 0..12 and a mask with lung pixels at (1,1), (2,1) and (1,2).
    fn fixture() -> (Grey8, Grey8) {
        let image = Grey8::new(4, 3, (0..12).map(|v| v * 10).collect()).unwrap();
        #[rustfmt::skip]
        let mask = Grey8::new(4, 3, vec![
            0, 0,   0,   0,
            0, 255, 255, 0,
            0, 200, 10,  0,
        ]).unwrap();
        (image, mask)
    }

    #[test]
    fn lungs_removed_fills_exactly_the_lung_pixels_with_the_mean_of_the_rest() {
        let (image, mask) = fixture();
        let out = remove_lungs(&image, &mask, Fill::Mean).unwrap();
        // Kept: indices 0,1,2,3,4,7,8,10,11 -> values 0,10,20,30,40,70,80,100,110: mean 51.1 -> 51.
        #[rustfmt::skip]
        let want = vec![
            0,  10, 20, 30,
            40, 51, 51, 70,
            80, 51, 100, 110,
        ];
        assert_eq!(out.data, want);
        assert_eq!((out.width, out.height), (4, 3));
    }

    #[test]
    fn lungs_only_fills_everything_outside() {
        let (image, mask) = fixture();
        let out = lungs_only(&image, &mask, Fill::Value { value: 7 }).unwrap();
        #[rustfmt::skip]
        let want = vec![
            7, 7,  7,  7,
            7, 50, 60, 7,
            7, 90, 7,  7,
        ];
        assert_eq!(out.data, want);
        // Mean of the lungs (50, 60, 90) = 66.67 -> 67.
        let out = lungs_only(&image, &mask, Fill::Mean).unwrap();
        assert_eq!(out.data[0], 67);
        assert_eq!(out.data[5], 50);
    }

    #[test]
    fn noise_fill_is_seeded_and_matches_the_kept_statistics() {
        // A large image: kept half constant-ish around 100 +- 20, lungs at 250.
        let (w, h) = (64u32, 64u32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let normal = Normal::new(100.0f64, 20.0).unwrap();
        let mask: Vec<u8> = (0..w * h)
            .map(|i| if (i % w) < w / 2 { 255 } else { 0 })
            .collect();
        let image: Vec<u8> = mask
            .iter()
            .map(|&m| {
                if m > 0 {
                    250
                } else {
                    normal.sample(&mut rng).round() as u8
                }
            })
            .collect();
        let (image, mask) = (
            Grey8::new(w, h, image).unwrap(),
            Grey8::new(w, h, mask).unwrap(),
        );
        let a = remove_lungs(&image, &mask, Fill::Noise { seed: 9 }).unwrap();
        let b = remove_lungs(&image, &mask, Fill::Noise { seed: 9 }).unwrap();
        let c = remove_lungs(&image, &mask, Fill::Noise { seed: 10 }).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let filled: Vec<f64> = a
            .data
            .iter()
            .zip(&mask.data)
            .filter(|(_, m)| **m > 0)
            .map(|(p, _)| *p as f64)
            .collect();
        let mean = filled.iter().sum::<f64>() / filled.len() as f64;
        let sd =
            (filled.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / filled.len() as f64).sqrt();
        assert!((mean - 100.0).abs() < 2.0, "mean {mean}");
        assert!((sd - 20.0).abs() < 2.0, "sd {sd}");
        // Nothing of the removed lungs (250) survives; the outside is untouched.
        assert!(filled.iter().all(|&v| v < 250.0));
        for ((o, i), m) in a.data.iter().zip(&image.data).zip(&mask.data) {
            if *m == 0 {
                assert_eq!(o, i);
            }
        }
    }

    #[test]
    fn degenerate_masks_and_sizes_are_errors() {
        let (image, _) = fixture();
        let empty = Grey8::new(4, 3, vec![0; 12]).unwrap();
        let full = Grey8::new(4, 3, vec![255; 12]).unwrap();
        assert_eq!(remove_lungs(&image, &empty, Fill::Mean).unwrap(), image);
        assert!(lungs_only(&image, &empty, Fill::Mean).is_err());
        assert!(remove_lungs(&image, &full, Fill::Mean).is_err());
        let small = Grey8::new(2, 3, vec![0; 6]).unwrap();
        let err = remove_lungs(&image, &small, Fill::Mean)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2x3") && err.contains("4x3"), "{err}");
    }

    #[test]
    fn crop_and_nearest_resize() {
        let (image, mask) = fixture();
        let c = crop(&image, 1, 1, 2, 2).unwrap();
        assert_eq!(c.data, vec![50, 60, 90, 100]);
        assert!(crop(&image, 3, 0, 2, 1).is_err());
        assert!(crop(&image, 0, 0, 0, 1).is_err());
        let up = resize_nearest(&c, 4, 4).unwrap();
        assert_eq!(
            up.data,
            vec![
                50, 50, 60, 60, 50, 50, 60, 60, 90, 90, 100, 100, 90, 90, 100, 100
            ]
        );
        let down = resize_nearest(&up, 2, 2).unwrap();
        assert_eq!(down, c);
        assert!((mask_area_fraction(&mask) - 3.0 / 12.0).abs() < 1e-12);
    }
}
