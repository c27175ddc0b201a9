//! Procedural chest phantoms: an attenuation map of a frontal (or lateral) chest radiograph and its exact lung
//! mask.
//!
//! Everything is drawn analytically in a *body frame* `(u, v)`: `u` runs from the image's left (the patient's
//! right, as radiographs are displayed) to its right, `v` from head to feet, one unit being `scale * height`
//! pixels; the thorax spans about `v = -0.35` (lung apices) to `v = 0.2` (diaphragm domes). Per-pixel work is a
//! handful of closed-form tests, so a 512x512 phantom renders in a few milliseconds.
//!
//! Invariant: the lung mask is the exact set where the renderer removes lung air, and pathology is only ever
//! added where the mask is set.

use rand::Rng;
use serde::Serialize;

use crate::pathology::Lesion;

/// Patient variability of one phantom (all in body-frame units unless said otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct Anatomy {
    /// Body frame unit as a fraction of the image height (patient size, an age proxy, and source zoom).
    pub scale: f32,
    /// In-plane rotation (radians).
    pub rotation: f32,
    /// Centre of the thorax in the image, as fractions of width and height.
    pub centre_x: f32,
    pub centre_y: f32,
    /// Inspiration: stretches the lungs vertically and lowers the domes.
    pub inspiration: f32,
    /// Half-width of the trunk.
    pub body_half_width: f32,
    /// Heart size factor.
    pub heart: f32,
    /// Vertical offset of the rib pattern (phase).
    pub rib_phase: f32,
    /// The right hemidiaphragm (patient's right, image left) sits higher by this much.
    pub right_dome_lift: f32,
}

impl Anatomy {
    /// Draws a patient. `age` in years shifts size (an age proxy: adolescents are smaller, the elderly have
    /// larger hearts); `zoom` and `shift_y` are the source's framing.
    pub fn sample(rng: &mut impl Rng, age: u32, zoom: f32, shift_y: f32) -> Self {
        let age = age as f32;
        let growth = (0.86 + 0.14 * (age / 25.0).min(1.0)).min(1.0);
        let heart_age = 1.0 + 0.15 * ((age - 40.0) / 50.0).clamp(0.0, 1.0);
        Anatomy {
            scale: zoom * growth * rng.random_range(0.93..1.07),
            rotation: rng.random_range(-3.0f32..3.0).to_radians(),
            centre_x: 0.5 + rng.random_range(-0.03..0.03),
            centre_y: 0.5 + shift_y + rng.random_range(-0.025..0.025),
            inspiration: rng.random_range(0.9..1.1),
            body_half_width: rng.random_range(0.36..0.42),
            heart: heart_age * rng.random_range(0.9..1.12),
            rib_phase: rng.random_range(-0.012..0.012),
            right_dome_lift: rng.random_range(0.005..0.03),
        }
    }

    /// Lung geometry shared by the renderer and the lesion placer.
    pub fn lungs(&self) -> LungGeometry {
        let ins = self.inspiration;
        let width = self.body_half_width / 0.42;
        LungGeometry {
            centre_d: 0.178 * width,
            centre_v: -0.03,
            rx: 0.15 * width,
            ry: 0.31 * ins,
            dome_v: -0.03 + 0.62 * 0.31 * ins,
            right_dome_lift: self.right_dome_lift,
        }
    }
}

/// The lung fields of one phantom, per side (`side = -1`: image left / patient right; `+1`: image right).
#[derive(Debug, Clone, Copy)]
pub struct LungGeometry {
    pub centre_d: f32,
    pub centre_v: f32,
    pub rx: f32,
    pub ry: f32,
    pub dome_v: f32,
    pub right_dome_lift: f32,
}

impl LungGeometry {
    /// Top of the lung (apex).
    pub fn apex_v(&self) -> f32 {
        self.centre_v - self.ry
    }

    /// Height of the diaphragm dome under distance `d` from the midline.
    pub fn dome(&self, side: f32, d: f32) -> f32 {
        let lift = if side < 0.0 {
            self.right_dome_lift
        } else {
            0.0
        };
        self.dome_v - lift + 2.2 * (d - (self.centre_d - 0.01)) * (d - (self.centre_d - 0.01))
    }

    /// Lateral edge of the lung (distance from the midline) at height `v`, or `None` outside its extent.
    pub fn lateral_edge(&self, v: f32) -> Option<f32> {
        let q = (v - self.centre_v) / self.ry;
        if !(-1.0..=1.0).contains(&q) {
            return None;
        }
        let rx = self.rx * (1.0 + 0.28 * q);
        Some(self.centre_d + rx * (1.0 - q * q).max(0.0).sqrt())
    }

    fn in_egg(&self, d: f32, v: f32) -> bool {
        let q = (v - self.centre_v) / self.ry;
        if !(-1.0..=1.0).contains(&q) {
            return false;
        }
        let rx = self.rx * (1.0 + 0.28 * q);
        let p = (d - self.centre_d) / rx;
        p * p + q * q < 1.0
    }
}

/// Mediastinal half-width at height `v`.
fn mediastinum(v: f32) -> f32 {
    0.052 + 0.02 * smoothstep(-0.3, 0.0, v)
}

/// Whether `(u, v)` is inside the heart or aortic knob, with a soft value for rendering.
fn heart_value(a: &Anatomy, u: f32, v: f32) -> f32 {
    let (hu, hv) = (0.06, 0.06 * a.inspiration);
    let (rx, ry) = (0.16 * a.heart, 0.10 * a.heart);
    // Long axis tilted down towards the patient's left (image right).
    let (c, s) = (0.94f32, 0.342f32);
    let (du, dv) = (u - hu, v - hv);
    let (p, q) = ((c * du + s * dv) / rx, (-s * du + c * dv) / ry);
    let r2 = p * p + q * q;
    let heart = 1.0 - smoothstep(0.92, 1.0, r2);
    let (ku, kv) = (u - 0.06, v + 0.13);
    let knob = 1.0 - smoothstep(0.0009, 0.00125, ku * ku + kv * kv);
    heart.max(knob)
}

/// Whether `(u, v)` lies in a lung field (the ground-truth mask), and which side.
pub fn lung_at(a: &Anatomy, g: &LungGeometry, u: f32, v: f32) -> Option<f32> {
    let side = if u < 0.0 { -1.0 } else { 1.0 };
    let d = u.abs();
    if d <= mediastinum(v) || !g.in_egg(d, v) || v >= g.dome(side, d) {
        return None;
    }
    lung_test(g, d, v, side, heart_value(a, u, v)).then_some(side)
}

#[inline]
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Body half-width at height `v`: neck, shoulders, trunk.
fn body_half_width(a: &Anatomy, v: f32) -> f32 {
    // The chest wall widens from the axillae down to the lower ribs.
    let trunk = a.body_half_width * (0.93 + 0.07 * smoothstep(-0.3, 0.15, v)) + 0.03
        - 0.03 * smoothstep(-0.36, -0.2, v);
    0.13 + (trunk - 0.13) * smoothstep(-0.56, -0.38, v)
}

/// Posterior and anterior ribs at distance `d` from the midline, height `v` (0..1 bone amount).
fn ribs(a: &Anatomy, g: &LungGeometry, d: f32, v: f32) -> f32 {
    let edge = match g.lateral_edge(v.clamp(g.apex_v() + 0.001, g.centre_v + g.ry - 0.001)) {
        Some(e) => e + 0.04,
        None => return 0.0,
    };
    if d < 0.03 || d > edge + 0.02 || v < g.apex_v() - 0.06 || v > g.dome_v + 0.12 {
        return 0.0;
    }
    let fade = 1.0 - smoothstep(edge - 0.01, edge + 0.02, d);
    let dd = d - 0.03;
    // Posterior ribs: rise a little from the spine, then curve down laterally.
    let spacing = 0.052 * a.inspiration;
    let r = (v - (-0.10 * dd + 2.0 * dd * dd) - (g.apex_v() - 0.05 + a.rib_phase)) / spacing;
    let mut bone = 0.0;
    if (0.0..11.0).contains(&r) {
        let f = r.fract();
        let body = smoothstep(0.0, 0.06, f) * (1.0 - smoothstep(0.32, 0.38, f));
        let cortex = (-((f - 0.04) / 0.035).powi(2)).exp() + (-((f - 0.34) / 0.035).powi(2)).exp();
        bone += body * 0.7 + 0.35 * cortex * (f < 0.4) as u8 as f32;
    }
    // Anterior ribs: fainter, descending towards the midline.
    if d > 0.08 {
        let r2 = (v + 0.55 * dd - (g.apex_v() + 0.08)) / (0.062 * a.inspiration);
        if (0.0..6.0).contains(&r2) {
            let f = r2.fract();
            bone += 0.35 * smoothstep(0.0, 0.08, f) * (1.0 - smoothstep(0.22, 0.3, f));
        }
    }
    bone * fade
}

/// Clavicle (0..1) on one side.
fn clavicle(g: &LungGeometry, d: f32, v: f32) -> f32 {
    if !(0.025..0.33).contains(&d) {
        return 0.0;
    }
    let centre = g.apex_v() + 0.02 - 0.06 * d + 0.6 * (d - 0.15) * (d - 0.15);
    let t = ((v - centre) / 0.013).abs();
    let shape = 1.0 - smoothstep(0.7, 1.0, t);
    let ends = smoothstep(0.025, 0.05, d) * (1.0 - smoothstep(0.29, 0.33, d));
    shape * ends
}

/// Broncho-vascular markings radiating from the hilum (0..1).
fn vessels(g: &LungGeometry, d: f32, v: f32, seed_phase: f32) -> f32 {
    let (hd, hv) = (g.centre_d - 0.06, g.centre_v + 0.02);
    let (x, y) = (d - hd, v - hv);
    let r = (x * x + y * y).sqrt();
    if r < 0.01 {
        return 1.0;
    }
    let phi = y.atan2(x);
    let c = (phi * 26.0 + 2.5 * (r * 30.0 + seed_phase).sin()).cos();
    let line = c.max(0.0).powi(12);
    line * (-r / 0.13).exp()
}

/// A rendered phantom: attenuation (arbitrary units, about 0..1) and the lung mask (1 = lung).
pub struct Phantom {
    pub width: usize,
    pub height: usize,
    pub density: Vec<f32>,
    pub mask: Vec<u8>,
    /// Pathology added to `density` (the class signal), kept separately for tests and audits.
    pub pathology: Vec<f32>,
}

impl Phantom {
    /// Bounding box of the lung mask `(x, y, w, h)`, or `None` when empty.
    pub fn lung_box(&self) -> Option<(usize, usize, usize, usize)> {
        bounding_box(&self.mask, self.width, self.height)
    }
}

pub fn bounding_box(
    mask: &[u8],
    width: usize,
    height: usize,
) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..height {
        let row = &mask[y * width..(y + 1) * width];
        if let Some(first) = row.iter().position(|&m| m != 0) {
            let last = row.iter().rposition(|&m| m != 0).unwrap_or(first);
            x0 = x0.min(first);
            x1 = x1.max(last);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    (x0 != usize::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Renders a frontal (PA/AP) chest phantom with the given lesions.
///
/// Speed: the smooth attenuation map is evaluated on a grid of `step` x `step` blocks (2 from 192 px up) and
/// upsampled bilinearly; the lung mask is exact at full resolution (evaluated per pixel wherever the coarse
/// grid is not uniformly inside or outside), and the pathology is masked by it, so the class signal never
/// leaves the lungs.
pub fn render_frontal(
    a: &Anatomy,
    lesions: &[Lesion],
    width: usize,
    height: usize,
    vessel_phase: f32,
) -> Phantom {
    let step = if height >= 192 && width >= 192 { 2 } else { 1 };
    let (cw, ch) = (width.div_ceil(step), height.div_ceil(step));
    let g = a.lungs();
    let unit = a.scale * height as f32;
    let (cx, cy) = (a.centre_x * width as f32, a.centre_y * height as f32);
    let (cos, sin) = (a.rotation.cos(), a.rotation.sin());
    let frame = |x: f32, y: f32| {
        let (px, py) = ((x - cx) / unit, (y - cy) / unit);
        (cos * px + sin * py, -sin * px + cos * py)
    };
    let apex = g.apex_v();
    let mut base = vec![0f32; cw * ch];
    let mut path = vec![0f32; cw * ch];
    let mut coarse_mask = vec![0u8; cw * ch];
    for yc in 0..ch {
        for xc in 0..cw {
            let (u, v) = frame(
                (xc * step) as f32 + 0.5 * step as f32,
                (yc * step) as f32 + 0.5 * step as f32,
            );
            let hw = body_half_width(a, v);
            let i = yc * cw + xc;
            if u.abs() >= hw {
                continue;
            }
            let t = (1.0 - (u / hw) * (u / hw)).sqrt();
            let d = u.abs();
            let side = if u < 0.0 { -1.0 } else { 1.0 };
            let mut att = 0.52 * t;
            // Mediastinum and spine run the whole height; the mediastinum fades above the thorax.
            if d < 0.3 {
                att += 0.11 * (-(u / 0.075) * (u / 0.075)).exp() * smoothstep(-0.6, -0.3, v);
            }
            if d < 0.04 {
                let vertebra =
                    0.78 + 0.22 * (std::f32::consts::TAU * (v - a.rib_phase) / 0.05).cos();
                att += 0.055 * vertebra * (1.0 - smoothstep(0.03, 0.04, d));
            }
            let heart = heart_value(a, u, v);
            att += 0.065 * heart;
            att += 0.06 * ribs(a, &g, d, v);
            att += 0.11 * clavicle(&g, d, v);
            att += 0.12 * humerus(a, u, v);
            // Gastric bubble under the left dome.
            if side > 0.0 {
                let (bu, bv) = ((d - 0.17) / 0.05, (v - g.dome(side, d) - 0.055) / 0.03);
                att -= 0.12 * (1.0 - smoothstep(0.7, 1.0, bu * bu + bv * bv)) * t;
            }
            let mut p = 0.0;
            for l in lesions {
                p += l.value(u, v);
            }
            path[i] = p;
            if lung_test(&g, d, v, side, heart) {
                coarse_mask[i] = 1;
                let tl = ((v - apex) / (g.dome_v - apex)).clamp(0.0, 1.0);
                att -= 0.30 * (1.0 - 0.2 * tl) * t;
                att += 0.035 * vessels(&g, d, v, vessel_phase + side);
            }
            base[i] = att.max(0.0);
        }
    }
    let (density, pathology, mask) = if step == 1 {
        let mask = coarse_mask;
        let pathology: Vec<f32> = path
            .iter()
            .zip(&mask)
            .map(|(p, m)| if *m != 0 { *p } else { 0.0 })
            .collect();
        let density = base.iter().zip(&pathology).map(|(b, p)| b + p).collect();
        (density, pathology, mask)
    } else {
        let base = upsample(&base, cw, ch, width, height, step);
        let path = if lesions.is_empty() {
            vec![0f32; width * height]
        } else {
            upsample(&path, cw, ch, width, height, step)
        };
        // Exact mask: where a coarse cell's 3x3 neighbourhood agrees, take it; elsewhere (the edges) evaluate
        // the geometry per pixel.
        let mut state = vec![0u8; cw * ch]; // 0 = all outside, 1 = all inside, 2 = mixed
        for yc in 0..ch {
            for xc in 0..cw {
                let (mut any, mut all) = (false, true);
                for dy in yc.saturating_sub(1)..=(yc + 1).min(ch - 1) {
                    for dx in xc.saturating_sub(1)..=(xc + 1).min(cw - 1) {
                        let m = coarse_mask[dy * cw + dx] != 0;
                        any |= m;
                        all &= m;
                    }
                }
                state[yc * cw + xc] = if all {
                    1
                } else if any {
                    2
                } else {
                    0
                };
            }
        }
        let mut mask = vec![0u8; width * height];
        for y in 0..height {
            let row = &state[(y / step).min(ch - 1) * cw..];
            for x in 0..width {
                mask[y * width + x] = match row[(x / step).min(cw - 1)] {
                    0 => 0,
                    1 => 1,
                    _ => {
                        let (u, v) = frame(x as f32 + 0.5, y as f32 + 0.5);
                        lung_at(a, &g, u, v).is_some() as u8
                    }
                };
            }
        }
        let pathology: Vec<f32> = path
            .iter()
            .zip(&mask)
            .map(|(p, m)| if *m != 0 { *p } else { 0.0 })
            .collect();
        let density = base.iter().zip(&pathology).map(|(b, p)| b + p).collect();
        (density, pathology, mask)
    };
    Phantom {
        width,
        height,
        density,
        mask,
        pathology,
    }
}

/// The lung test of [`lung_at`] with the heart value already computed.
#[inline]
fn lung_test(g: &LungGeometry, d: f32, v: f32, side: f32, heart: f32) -> bool {
    d > mediastinum(v) && g.in_egg(d, v) && v < g.dome(side, d) && heart <= 0.5
}

/// Bilinear upsampling of a grid sampled at block centres (`step` x `step` blocks) to `width` x `height`.
fn upsample(
    src: &[f32],
    cw: usize,
    ch: usize,
    width: usize,
    height: usize,
    step: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; width * height];
    let inv = 1.0 / step as f32;
    let cols: Vec<(usize, usize, f32)> = (0..width)
        .map(|x| {
            let fx = ((x as f32 + 0.5) * inv - 0.5).clamp(0.0, (cw - 1) as f32);
            let x0 = fx as usize;
            (x0, (x0 + 1).min(cw - 1), fx - x0 as f32)
        })
        .collect();
    let mut top = vec![0f32; width];
    let mut bottom = vec![0f32; width];
    for y in 0..height {
        let fy = ((y as f32 + 0.5) * inv - 0.5).clamp(0.0, (ch - 1) as f32);
        let y0 = fy as usize;
        let y1 = (y0 + 1).min(ch - 1);
        let wy = fy - y0 as f32;
        let (r0, r1) = (&src[y0 * cw..(y0 + 1) * cw], &src[y1 * cw..(y1 + 1) * cw]);
        for (k, &(x0, x1, wx)) in cols.iter().enumerate() {
            top[k] = r0[x0] + wx * (r0[x1] - r0[x0]);
            bottom[k] = r1[x0] + wx * (r1[x1] - r1[x0]);
        }
        let row = &mut out[y * width..(y + 1) * width];
        for ((o, t), b) in row.iter_mut().zip(&top).zip(&bottom) {
            *o = t + wy * (b - t);
        }
    }
    out
}

fn humerus(a: &Anatomy, u: f32, v: f32) -> f32 {
    let hu = a.body_half_width + 0.035;
    let (du, dv) = (u.abs() - hu, v + 0.38);
    1.0 - smoothstep(0.004, 0.0055, du * du + dv * dv)
}

/// Renders a lateral view (used only as a distractor the selection rules must drop). No lung mask is needed;
/// the mask returned marks the lung field for completeness.
pub fn render_lateral(a: &Anatomy, lesions: &[Lesion], width: usize, height: usize) -> Phantom {
    let n = width * height;
    let mut density = vec![0f32; n];
    let mut mask = vec![0u8; n];
    let mut pathology = vec![0f32; n];
    let unit = a.scale * height as f32;
    let (cx, cy) = (a.centre_x * width as f32, a.centre_y * height as f32);
    let (cos, sin) = (a.rotation.cos(), a.rotation.sin());
    for y in 0..height {
        for x in 0..width {
            let (px, py) = ((x as f32 + 0.5 - cx) / unit, (y as f32 + 0.5 - cy) / unit);
            let u = cos * px + sin * py;
            let v = -sin * px + cos * py;
            let i = y * width + x;
            let hw = 0.33 - 0.1 * (1.0 - smoothstep(-0.55, -0.3, v));
            if u.abs() >= hw {
                continue;
            }
            let t = (1.0 - (u / hw) * (u / hw)).sqrt();
            let mut att = 0.62 * t;
            // Spine at the back (image right), sternum at the front.
            if (u - 0.22).abs() < 0.045 {
                att += 0.12 * (0.75 + 0.25 * (std::f32::consts::TAU * v / 0.05).cos());
            }
            if (u + 0.29).abs() < 0.015 && v > -0.3 && v < 0.1 {
                att += 0.06;
            }
            let (lu, lv) = ((u - 0.02) / 0.24, (v + 0.02) / 0.32);
            let dome = 0.2 + 0.6 * (u - 0.05) * (u - 0.05);
            let heart = {
                let (p, q) = ((u + 0.1) / 0.13, (v - 0.1) / 0.12);
                p * p + q * q < 1.0
            };
            if lu * lu + lv * lv < 1.0 && v < dome && !heart {
                mask[i] = 1;
                att -= 0.3 * t;
                let mut p = 0.0;
                for l in lesions {
                    // Lesions are placed for a frontal view; project them onto the lateral one loosely.
                    p += l.value(u * 0.5 - 0.15, v);
                }
                pathology[i] = p;
                att += p;
            }
            density[i] = att.max(0.0);
        }
    }
    Phantom {
        width,
        height,
        density,
        mask,
        pathology,
    }
}
