//! From attenuation to a displayed image: the source's processing chain, where the confounders are planted.
//!
//! Order (as in a detector and its post-processing): exposure -> transfer curve -> blur -> grid lines ->
//! collimator borders -> noise -> burned-in text and markers. The result is a display image in [0, 1],
//! MONOCHROME2 sense (1 = white = dense); the writers turn it into each format's stored values.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::font;
use crate::phantom::smoothstep;
use crate::sources::{Corner, SourceSpec};

/// Attenuation mapped to exposure 1.0 (dense mediastinum and bone reach about this).
const FULL_ATTENUATION: f32 = 0.8;

fn pick(rng: &mut impl Rng, r: [f32; 2]) -> f32 {
    if r[1] > r[0] {
        rng.random_range(r[0]..r[1])
    } else {
        r[0]
    }
}

/// The per-image draw of a source's knobs.
#[derive(Debug, Clone, Serialize)]
pub struct Acquisition {
    pub gamma: f32,
    pub black: f32,
    pub white: f32,
    pub s_curve: f32,
    pub blur_px: f32,
    pub noise: f32,
    pub grain_px: usize,
    pub grid: Option<(f32, f32, bool)>,
    /// Border widths in pixels: top, bottom, left, right.
    pub borders: [usize; 4],
    pub border_value: f32,
    pub text: Option<(String, Corner, usize, f32)>,
    /// Letter, glyph scale, value, and whether it marks the patient's left (drawn at image right).
    pub marker: Option<(char, usize, f32, bool)>,
}

impl Acquisition {
    pub fn sample(rng: &mut impl Rng, spec: &SourceSpec, width: usize, height: usize) -> Self {
        let px = height as f32 / 512.0;
        let grid = spec.grid.as_ref().map(|g| {
            (
                (g.period * px).max(2.2) * rng.random_range(0.95..1.05),
                g.amplitude,
                g.vertical,
            )
        });
        let mut borders = [0usize; 4];
        if rng.random::<f32>() < spec.collimation.probability {
            for (k, b) in borders.iter_mut().enumerate() {
                let extent = if k < 2 { height } else { width } as f32;
                let max = spec.collimation.max_width[k];
                if max > 0.0 {
                    *b = (rng.random_range(0.4..1.0) * max * extent).round() as usize;
                }
            }
        }
        let text = spec.text.as_ref().map(|t| {
            let scale = ((t.height * height as f32) / 7.0).round().max(1.0) as usize;
            (t.text.to_string(), t.corner, scale, t.value)
        });
        let marker = spec.marker.map(|(c, h, v)| {
            let scale = ((h * height as f32) / 7.0).round().max(1.0) as usize;
            // Laterality markers name the side they sit on; 'D' (derecho, Spanish) = right.
            let left = c == 'L';
            (c, scale, v, left)
        });
        Acquisition {
            gamma: pick(rng, spec.gamma),
            black: pick(rng, spec.black),
            white: pick(rng, spec.white),
            s_curve: spec.s_curve,
            blur_px: pick(rng, spec.blur) * px,
            noise: pick(rng, spec.noise),
            grain_px: (spec.grain * px).round() as usize,
            grid,
            borders,
            border_value: spec.collimation.value,
            text,
            marker,
        }
        .clamp_to(width, height)
    }

    fn clamp_to(mut self, width: usize, height: usize) -> Self {
        self.borders[0] = self.borders[0].min(height / 4);
        self.borders[1] = self.borders[1].min(height / 4);
        self.borders[2] = self.borders[2].min(width / 4);
        self.borders[3] = self.borders[3].min(width / 4);
        self
    }

    /// Applies the chain to an attenuation map, returning display values in [0, 1].
    pub fn apply(
        &self,
        rng: &mut impl Rng,
        density: &[f32],
        width: usize,
        height: usize,
    ) -> Vec<f32> {
        let range = self.white - self.black;
        // The transfer curve through a lookup table (powf per pixel would dominate the run time).
        const LUT: usize = 4096;
        let lut: Vec<f32> = (0..=LUT)
            .map(|k| {
                let e = k as f32 / LUT as f32;
                let v = self.black + range * e.powf(self.gamma);
                if self.s_curve > 0.0 {
                    v + self.s_curve * (smoothstep(0.0, 1.0, v) - v)
                } else {
                    v
                }
            })
            .collect();
        let mut img: Vec<f32> = density
            .iter()
            .map(|&a| {
                let f = (a / FULL_ATTENUATION).clamp(0.0, 1.0) * LUT as f32;
                let k = (f as usize).min(LUT - 1);
                let w = f - k as f32;
                lut[k] + w * (lut[k + 1] - lut[k])
            })
            .collect();
        if self.blur_px > 0.25 {
            gaussian_blur(&mut img, width, height, self.blur_px);
        }
        if let Some((period, amp, vertical)) = self.grid {
            let k = std::f32::consts::TAU / period;
            let wave: Vec<f32> = (0..if vertical { width } else { height })
                .map(|t| amp * (k * t as f32).sin())
                .collect();
            for y in 0..height {
                for x in 0..width {
                    img[y * width + x] += wave[if vertical { x } else { y }];
                }
            }
        }
        let [top, bottom, left, right] = self.borders;
        if top + bottom + left + right > 0 {
            for y in 0..height {
                for x in 0..width {
                    if y < top || y >= height - bottom || x < left || x >= width - right {
                        img[y * width + x] = self.border_value;
                    }
                }
            }
        }
        if self.noise > 0.0 {
            add_noise(rng, &mut img, width, height, self.noise, self.grain_px);
        }
        if let Some((text, corner, scale, value)) = &self.text {
            let tw = font::text_width(text, *scale) as i64;
            let th = (7 * scale) as i64;
            let margin = (height as i64 / 40).max(2);
            let (x, y) = corner_position(
                *corner,
                width as i64,
                height as i64,
                tw,
                th,
                margin,
                self.borders,
            );
            font::draw_text(&mut img, width, height, x, y, text, *scale, *value);
        }
        if let Some((c, scale, value, left)) = self.marker {
            let s = c.to_string();
            let tw = font::text_width(&s, scale) as i64;
            let th = (7 * scale) as i64;
            let margin = (height as i64 / 12).max(3);
            let corner = if left {
                Corner::TopRight
            } else {
                Corner::TopLeft
            };
            let (x, y) = corner_position(
                corner,
                width as i64,
                height as i64,
                tw,
                th,
                margin,
                self.borders,
            );
            // A framed marker, like a lead letter in its holder.
            draw_box(
                &mut img,
                width,
                height,
                x - scale as i64,
                y - scale as i64,
                tw + scale as i64,
                th + 2 * scale as i64,
                value,
                scale,
            );
            font::draw_text(&mut img, width, height, x, y, &s, scale, value);
        }
        for v in img.iter_mut() {
            *v = v.clamp(0.0, 1.0);
        }
        img
    }
}

fn corner_position(
    corner: Corner,
    w: i64,
    h: i64,
    tw: i64,
    th: i64,
    margin: i64,
    borders: [usize; 4],
) -> (i64, i64) {
    let [top, bottom, left, right] = borders.map(|b| b as i64);
    match corner {
        Corner::TopLeft => (left + margin, top + margin),
        Corner::TopRight => (w - right - margin - tw, top + margin),
        Corner::BottomLeft => (left + margin, h - bottom - margin - th),
        Corner::BottomRight => (w - right - margin - tw, h - bottom - margin - th),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_box(
    img: &mut [f32],
    width: usize,
    height: usize,
    x0: i64,
    y0: i64,
    w: i64,
    h: i64,
    value: f32,
    thick: usize,
) {
    let t = thick.max(1) as i64 / 2 + 1;
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            let edge = x < x0 + t || x >= x0 + w - t || y < y0 + t || y >= y0 + h - t;
            if edge && x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
                img[y as usize * width + x as usize] = value;
            }
        }
    }
}

/// Separable Gaussian blur with clamped edges.
pub fn gaussian_blur(img: &mut [f32], width: usize, height: usize, sigma: f32) {
    let radius = (sigma * 3.0).ceil() as usize;
    let kernel: Vec<f32> = {
        let k: Vec<f32> = (0..=2 * radius)
            .map(|i| {
                let d = i as f32 - radius as f32;
                (-(d * d) / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let s: f32 = k.iter().sum();
        k.into_iter().map(|v| v / s).collect()
    };
    let mut tmp = vec![0f32; img.len()];
    let r = radius as i64;
    for y in 0..height {
        let row = &img[y * width..(y + 1) * width];
        let out = &mut tmp[y * width..(y + 1) * width];
        for x in 0..width {
            let mut acc = 0.0;
            if x >= radius && x + radius < width {
                let s = &row[x - radius..=x + radius];
                for (a, b) in s.iter().zip(&kernel) {
                    acc += a * b;
                }
            } else {
                for (k, w) in kernel.iter().enumerate() {
                    let xx = (x as i64 + k as i64 - r).clamp(0, width as i64 - 1) as usize;
                    acc += row[xx] * w;
                }
            }
            out[x] = acc;
        }
    }
    // Vertical pass row by row (cache friendly): out[y] = sum_k w_k * tmp[y + k - r].
    for y in 0..height {
        let out = &mut img[y * width..(y + 1) * width];
        out.iter_mut().for_each(|v| *v = 0.0);
        for (k, w) in kernel.iter().enumerate() {
            let yy = (y as i64 + k as i64 - r).clamp(0, height as i64 - 1) as usize;
            let src = &tmp[yy * width..(yy + 1) * width];
            for (o, s) in out.iter_mut().zip(src) {
                *o += w * s;
            }
        }
    }
}

/// Adds zero-mean Gaussian noise of standard deviation `sigma`, spatially correlated over `grain` pixels
/// (a box filter of radius `grain`, renormalised to keep `sigma`).
fn add_noise(
    rng: &mut impl Rng,
    img: &mut [f32],
    width: usize,
    height: usize,
    sigma: f32,
    grain: usize,
) {
    let mut noise: Vec<f32> = (0..img.len()).map(|_| StandardNormal.sample(rng)).collect();
    if grain > 0 {
        box_blur(&mut noise, width, height, grain);
        let n = (2 * grain + 1) as f32;
        let gain = n; // a 2-D box of n*n samples shrinks sigma by n
        noise.iter_mut().for_each(|v| *v *= gain);
    }
    for (v, n) in img.iter_mut().zip(&noise) {
        *v += sigma * n;
    }
}

fn box_blur(img: &mut [f32], width: usize, height: usize, r: usize) {
    // Running sums with clamped edges: O(1) per pixel whatever the radius.
    let n = (2 * r + 1) as f32;
    let ri = r as i64;
    let clamp = |i: i64, len: usize| i.clamp(0, len as i64 - 1) as usize;
    let mut tmp = vec![0f32; img.len()];
    for y in 0..height {
        let row = &img[y * width..(y + 1) * width];
        let out = &mut tmp[y * width..(y + 1) * width];
        let mut acc: f32 = (-ri..=ri).map(|k| row[clamp(k, width)]).sum();
        for (x, o) in out.iter_mut().enumerate() {
            *o = acc / n;
            acc += row[clamp(x as i64 + ri + 1, width)] - row[clamp(x as i64 - ri, width)];
        }
    }
    let mut acc = vec![0f32; width];
    for k in -ri..=ri {
        let src = &tmp[clamp(k, height) * width..][..width];
        for (a, s) in acc.iter_mut().zip(src) {
            *a += s;
        }
    }
    for y in 0..height {
        let out = &mut img[y * width..(y + 1) * width];
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = a / n;
        }
        let (add, sub) = (
            clamp(y as i64 + ri + 1, height),
            clamp(y as i64 - ri, height),
        );
        let (ra, rs) = (&tmp[add * width..][..width], &tmp[sub * width..][..width]);
        for ((a, p), m) in acc.iter_mut().zip(ra).zip(rs) {
            *a += p - m;
        }
    }
}
