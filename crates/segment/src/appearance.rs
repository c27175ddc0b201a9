//! Appearance augmentation: the shifts that separate real archives from the two tuberculosis hospitals the
//! UNet first learnt from — other contrast and gamma, soft or noisy scans, burnt-in text and arrows, dense
//! opacities, and scanned-film borders (the border is geometric and lives in [`crate::data::augment_pair`]).
//!
//! Only the image changes; the lung mask stays as it was, because text over a lung or an opacity inside it
//! is still lung. Simulated opacities are the point of this module: on Covid-19 images the masks of a UNet
//! trained on tuberculosis sets stop short of dense consolidation, and a blob of added density centred on a
//! lung pixel (often spilling over the lung border, as consolidation hides the heart and diaphragm edges)
//! teaches it otherwise. All values are in [0, 1]; every random draw comes from the caller's seeded RNG.

use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Ranges and probabilities of the appearance shifts (per training pair).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Appearance {
    /// Probability of a scanned-film border: the image shrunk by up to `border_max` of its side into a
    /// constant black, white or grey frame (mask zero there).
    pub border_p: f64,
    pub border_max: f64,
    /// Contrast factor `exp(U(±contrast))` about mid-grey, then a brightness shift `U(±brightness)`.
    pub contrast: f64,
    pub brightness: f64,
    /// Gamma `exp(U(±gamma))`.
    pub gamma: f64,
    /// Probability of a Gaussian blur, and its largest sigma in model pixels.
    pub blur_p: f64,
    pub blur_max: f64,
    /// Probability of additive Gaussian noise, and its largest standard deviation.
    pub noise_p: f64,
    pub noise_max: f64,
    /// Probability of burnt-in text (a line of glyphs) and, independently, of an arrow.
    pub text_p: f64,
    /// Probability of 1-3 simulated opacities, and their largest strength (fraction of the way to white).
    pub opacity_p: f64,
    pub opacity_max: f64,
}

impl Default for Appearance {
    fn default() -> Self {
        Self {
            border_p: 0.25,
            border_max: 0.25,
            contrast: 0.4,
            brightness: 0.1,
            gamma: 0.4,
            blur_p: 0.3,
            blur_max: 1.5,
            noise_p: 0.3,
            noise_max: 0.04,
            text_p: 0.4,
            opacity_p: 0.5,
            opacity_max: 0.8,
        }
    }
}

/// The parts of [`Appearance`], by the names `segment train --appearance` takes.
pub const PARTS: [&str; 6] = ["border", "contrast", "blur", "noise", "text", "opacity"];

impl Appearance {
    /// Only the named parts of the default (see [`PARTS`]; `contrast` includes brightness and gamma);
    /// the others off. An unknown name is an error that lists the known ones.
    pub fn only(parts: &[&str]) -> Result<Self, String> {
        let d = Self::default();
        let mut a = Self {
            border_p: 0.0,
            contrast: 0.0,
            brightness: 0.0,
            gamma: 0.0,
            blur_p: 0.0,
            noise_p: 0.0,
            text_p: 0.0,
            opacity_p: 0.0,
            ..d
        };
        for p in parts {
            match p.trim() {
                "border" => a.border_p = d.border_p,
                "contrast" => {
                    a.contrast = d.contrast;
                    a.brightness = d.brightness;
                    a.gamma = d.gamma;
                }
                "blur" => a.blur_p = d.blur_p,
                "noise" => a.noise_p = d.noise_p,
                "text" => a.text_p = d.text_p,
                "opacity" => a.opacity_p = d.opacity_p,
                other => {
                    return Err(format!(
                        "unknown appearance shift `{other}` (known: {})",
                        PARTS.join(", ")
                    ));
                }
            }
        }
        Ok(a)
    }

    /// Every probability and range multiplied by `k` (probabilities capped at 1).
    pub fn scaled(&self, k: f64) -> Self {
        let p = |v: f64| (v * k).min(1.0);
        Self {
            border_p: p(self.border_p),
            border_max: self.border_max,
            contrast: self.contrast * k,
            brightness: self.brightness * k,
            gamma: self.gamma * k,
            blur_p: p(self.blur_p),
            blur_max: self.blur_max,
            noise_p: p(self.noise_p),
            noise_max: self.noise_max,
            text_p: p(self.text_p),
            opacity_p: p(self.opacity_p),
            opacity_max: self.opacity_max,
        }
    }
}

/// Applies the intensity shifts to `image` (side x side), guided by the (already transformed) `mask`.
pub fn apply<R: Rng>(image: &mut [f32], mask: &[f32], side: usize, a: &Appearance, rng: &mut R) {
    if rng.random::<f64>() < a.opacity_p {
        let n = rng.random_range(1..=3);
        for _ in 0..n {
            opacity(image, mask, side, a.opacity_max, rng);
        }
    }
    let contrast = (rng.random_range(-1.0..=1.0) * a.contrast).exp() as f32;
    let brightness = (rng.random_range(-1.0..=1.0) * a.brightness) as f32;
    let gamma = (rng.random_range(-1.0..=1.0) * a.gamma).exp() as f32;
    for v in image.iter_mut() {
        *v = ((*v - 0.5) * contrast + 0.5 + brightness)
            .clamp(0.0, 1.0)
            .powf(gamma);
    }
    if rng.random::<f64>() < a.blur_p {
        let sigma = rng.random_range(0.5..=a.blur_max.max(0.5));
        gaussian_blur(image, side, sigma);
    }
    if rng.random::<f64>() < a.noise_p {
        let sd = rng.random_range(0.0..=a.noise_max.max(0.0));
        if let Ok(normal) = Normal::new(0.0, sd) {
            for v in image.iter_mut() {
                *v = (*v + normal.sample(rng) as f32).clamp(0.0, 1.0);
            }
        }
    }
    if rng.random::<f64>() < a.text_p {
        text(image, side, rng);
    }
    if rng.random::<f64>() < a.text_p / 2.0 {
        arrow(image, side, rng);
    }
}

/// One soft elliptical blob of added density, centred on a random lung pixel.
fn opacity<R: Rng>(image: &mut [f32], mask: &[f32], side: usize, max: f64, rng: &mut R) {
    let lung: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] > 0.5).collect();
    if lung.is_empty() {
        return;
    }
    let c = lung[rng.random_range(0..lung.len())];
    let (cx, cy) = ((c % side) as f64, (c / side) as f64);
    let rx = rng.random_range(0.05..=0.22) * side as f64;
    let ry = rng.random_range(0.05..=0.22) * side as f64;
    let strength = rng.random_range(0.25..=max.max(0.25)) as f32;
    // Consolidation is patchy: modulate the blob by a coarse random texture.
    let patchy = rng.random_range(0.0..=0.5f32);
    let (x0, x1) = (
        (cx - 2.5 * rx).max(0.0) as usize,
        ((cx + 2.5 * rx) as usize).min(side - 1),
    );
    let (y0, y1) = (
        (cy - 2.5 * ry).max(0.0) as usize,
        ((cy + 2.5 * ry) as usize).min(side - 1),
    );
    let phase = rng.random_range(0.0..std::f64::consts::TAU);
    let freq = rng.random_range(0.15..=0.45);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let dx = (x as f64 - cx) / rx;
            let dy = (y as f64 - cy) / ry;
            let d2 = dx * dx + dy * dy;
            if d2 > 6.25 {
                continue;
            }
            let texture = 1.0
                - patchy
                    * (0.5
                        + 0.5 * ((x as f64 * freq + phase).sin() * (y as f64 * freq).cos()) as f32);
            let w = (-0.5 * d2).exp() as f32 * strength * texture;
            let v = &mut image[y * side + x];
            *v += w * (1.0 - *v);
        }
    }
}

/// Separable Gaussian blur (edges repeated).
fn gaussian_blur(image: &mut [f32], side: usize, sigma: f64) {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
    let clamp = |v: isize| v.clamp(0, side as isize - 1) as usize;
    let mut tmp = vec![0f32; image.len()];
    for y in 0..side {
        for x in 0..side {
            tmp[y * side + x] = (-r..=r)
                .zip(&k)
                .map(|(i, w)| image[y * side + clamp(x as isize + i)] * w)
                .sum();
        }
    }
    for y in 0..side {
        for x in 0..side {
            image[y * side + x] = (-r..=r)
                .zip(&k)
                .map(|(i, w)| tmp[clamp(y as isize + i) * side + x] * w)
                .sum();
        }
    }
}

/// A line of random 3x5 glyphs, white (or now and then black), mostly near the top or bottom edge, like
/// burnt-in labels, dates and panel letters.
fn text<R: Rng>(image: &mut [f32], side: usize, rng: &mut R) {
    let h = (rng.random_range(0.03..=0.08) * side as f64).max(5.0) as usize;
    let cell = (h / 5).max(1);
    let n = rng.random_range(1..=8usize);
    let width = n * 4 * cell;
    if width + 2 >= side || 5 * cell + 2 >= side {
        return;
    }
    let x0 = rng.random_range(0..side - width);
    let y0 = if rng.random::<f64>() < 0.7 {
        // Near the top or bottom edge.
        let band = side / 6;
        let top = rng.random::<bool>();
        let y = rng.random_range(0..band.max(1));
        if top {
            y
        } else {
            side - 5 * cell - 1 - y.min(side - 5 * cell - 1)
        }
    } else {
        rng.random_range(0..side - 5 * cell)
    };
    let ink = if rng.random::<f64>() < 0.8 { 1.0 } else { 0.0 };
    for g in 0..n {
        let bits: u16 = rng.random_range(1..(1 << 15));
        for row in 0..5 {
            for col in 0..3 {
                if bits >> (row * 3 + col) & 1 == 0 {
                    continue;
                }
                let (px, py) = (x0 + (g * 4 + col) * cell, y0 + row * cell);
                for yy in py..(py + cell).min(side) {
                    for xx in px..(px + cell).min(side) {
                        image[yy * side + xx] = ink;
                    }
                }
            }
        }
    }
}

/// A white arrow (shaft and head), as drawn on figures to point at a lesion — often over a lung.
fn arrow<R: Rng>(image: &mut [f32], side: usize, rng: &mut R) {
    let s = side as f64;
    let (tx, ty) = (
        rng.random_range(0.2..0.8) * s,
        rng.random_range(0.2..0.8) * s,
    );
    let angle = rng.random_range(0.0..std::f64::consts::TAU);
    let len = rng.random_range(0.08..0.2) * s;
    let thick = (s / 128.0).max(1.0);
    let (ux, uy) = (angle.cos(), angle.sin());
    let mut stroke = |x0: f64, y0: f64, x1: f64, y1: f64| {
        let steps = ((x1 - x0).hypot(y1 - y0) * 2.0).ceil() as usize + 1;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            let r = thick.ceil() as isize;
            for dy in -r..=r {
                for dx in -r..=r {
                    let (px, py) = (x as isize + dx, y as isize + dy);
                    if px >= 0 && py >= 0 && (px as usize) < side && (py as usize) < side {
                        image[py as usize * side + px as usize] = 1.0;
                    }
                }
            }
        }
    };
    stroke(tx, ty, tx + ux * len, ty + uy * len);
    let head = len * 0.35;
    for turn in [0.5f64, -0.5] {
        let (c, si) = (turn.cos(), turn.sin());
        let (hx, hy) = (ux * c - uy * si, ux * si + uy * c);
        stroke(tx, ty, tx + hx * head, ty + hy * head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn lung_mask(side: usize) -> Vec<f32> {
        (0..side * side)
            .map(|i| {
                let (x, y) = (i % side, i / side);
                f32::from(x > side / 8 && x < side / 2 - 2 && y > side / 6 && y < side * 5 / 6)
            })
            .collect()
    }

    #[test]
    fn opacities_brighten_the_lungs_and_stay_in_range() {
        let side = 64;
        let mask = lung_mask(side);
        let mut img = vec![0.2f32; side * side];
        let only_opacity = Appearance {
            opacity_p: 1.0,
            ..Appearance::only(&["opacity"]).unwrap()
        };
        apply(
            &mut img,
            &mask,
            side,
            &only_opacity,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        let mean = |sel: f32| {
            let v: Vec<f32> = img
                .iter()
                .zip(&mask)
                .filter(|(_, m)| **m == sel)
                .map(|(v, _)| *v)
                .collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        assert!(mean(1.0) > 0.25, "lung mean {}", mean(1.0));
        assert!(mean(1.0) > mean(0.0));
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn every_shift_keeps_values_in_range_and_is_seeded() {
        let side = 48;
        let mask = lung_mask(side);
        let base: Vec<f32> = (0..side * side)
            .map(|i| (i % side) as f32 / side as f32)
            .collect();
        let all = Appearance {
            opacity_p: 1.0,
            blur_p: 1.0,
            noise_p: 1.0,
            text_p: 1.0,
            ..Appearance::default()
        };
        let run = |seed| {
            let mut img = base.clone();
            apply(
                &mut img,
                &mask,
                side,
                &all,
                &mut ChaCha8Rng::seed_from_u64(seed),
            );
            img
        };
        let (a, b, c) = (run(5), run(5), run(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, base);
        assert!(a.iter().chain(&c).all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn blur_preserves_a_constant_image_and_smooths_an_edge() {
        let side = 16;
        let mut flat = vec![0.5f32; side * side];
        gaussian_blur(&mut flat, side, 1.2);
        assert!(flat.iter().all(|v| (v - 0.5).abs() < 1e-5));
        let mut edge: Vec<f32> = (0..side * side)
            .map(|i| f32::from(i % side >= side / 2))
            .collect();
        gaussian_blur(&mut edge, side, 1.2);
        let row = &edge[..side];
        assert!(row[side / 2 - 1] > 0.05 && row[side / 2] < 0.95, "{row:?}");
    }
}
