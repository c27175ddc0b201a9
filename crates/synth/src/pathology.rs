//! The class signal: where and how the disease shows in the lungs.
//!
//! - Covid-19: bilateral, peripheral, lower-zone ground-glass opacities: several broad, faint patches near the
//!   lateral lung edge in the lower half of both lungs, with a fine reticular texture ("crazy paving").
//! - Other pneumonia: denser, homogeneous, focal (lobar) consolidation, usually in one lung, anywhere from the
//!   mid to the lower zone.
//!
//! Amplitudes scale linearly with the world's `signal` knob (0 = no pathology, 1 = the default, moderate).
//! Lesions are defined in the phantom's body frame; the renderer adds them only inside the lung mask.

use rand::Rng;
use serde::Serialize;

use crate::phantom::{Anatomy, lung_at, smoothstep};

/// Ground-glass amplitude at `signal = 1` (attenuation units; a lung field is about 0.2, soft tissue 0.5).
pub const GGO_AMPLITUDE: f32 = 0.07;
/// Consolidation amplitude at `signal = 1`.
pub const CONSOLIDATION_AMPLITUDE: f32 = 0.12;

#[derive(Debug, Clone, Serialize)]
pub enum LesionKind {
    /// Ground glass with a reticular texture of the given spatial frequency (cycles per body unit).
    GroundGlass {
        freq: f32,
        phase_u: f32,
        phase_v: f32,
    },
    /// Dense consolidation with a flat top.
    Consolidation,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lesion {
    pub u: f32,
    pub v: f32,
    pub ru: f32,
    pub rv: f32,
    pub amplitude: f32,
    pub kind: LesionKind,
}

impl Lesion {
    /// Added attenuation at `(u, v)`.
    #[inline]
    pub fn value(&self, u: f32, v: f32) -> f32 {
        let (p, q) = ((u - self.u) / self.ru, (v - self.v) / self.rv);
        let r2 = p * p + q * q;
        if r2 > 4.0 {
            return 0.0;
        }
        match self.kind {
            LesionKind::GroundGlass {
                freq,
                phase_u,
                phase_v,
            } => {
                let env = (-r2 * 1.2).exp();
                let tex = 0.5 + 0.5 * (freq * u + phase_u).cos() * (freq * v + phase_v).cos();
                self.amplitude * env * (0.45 + 0.55 * tex)
            }
            LesionKind::Consolidation => self.amplitude * (1.0 - smoothstep(0.35, 1.0, r2)),
        }
    }
}

/// What disease pattern a phantom carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    None,
    Covid,
    Pneumonia,
}

/// Draws the lesions of one patient.
pub fn sample_lesions(
    rng: &mut impl Rng,
    anatomy: &Anatomy,
    pattern: Pattern,
    signal: f32,
) -> Vec<Lesion> {
    let g = anatomy.lungs();
    let mut out = Vec::new();
    if signal <= 0.0 {
        return out;
    }
    match pattern {
        Pattern::None => {}
        Pattern::Covid => {
            for side in [-1.0f32, 1.0] {
                let n = rng.random_range(2..=4);
                for _ in 0..n {
                    // Lower zone: from just above the lung's mid-height down to the dome.
                    let v = rng.random_range(g.centre_v + 0.03..g.dome_v - 0.01);
                    let Some(edge) = g.lateral_edge(v) else {
                        continue;
                    };
                    let d = edge - rng.random_range(0.015..0.06);
                    let ru = rng.random_range(0.045..0.075);
                    out.push(Lesion {
                        u: side * d,
                        v,
                        ru,
                        rv: ru * rng.random_range(0.8..1.4),
                        amplitude: GGO_AMPLITUDE * signal * rng.random_range(0.8..1.2),
                        kind: LesionKind::GroundGlass {
                            freq: std::f32::consts::TAU / rng.random_range(0.016..0.024),
                            phase_u: rng.random_range(0.0..std::f32::consts::TAU),
                            phase_v: rng.random_range(0.0..std::f32::consts::TAU),
                        },
                    });
                }
            }
        }
        Pattern::Pneumonia => {
            let first: f32 = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
            let sides: &[f32] = if rng.random_bool(0.2) {
                &[-1.0, 1.0]
            } else if first < 0.0 {
                &[-1.0]
            } else {
                &[1.0]
            };
            for &side in sides {
                // Rejection sampling: the centre must lie well inside the lung (not behind the heart).
                let mut spot = None;
                for _ in 0..32 {
                    let v = rng.random_range(g.centre_v - 0.08..g.dome_v - 0.05);
                    let Some(edge) = g.lateral_edge(v) else {
                        continue;
                    };
                    let d = rng.random_range(0.1f32.min(edge - 0.06)..(edge - 0.05).max(0.11));
                    let inside = [
                        (0.0, 0.0),
                        (0.03, 0.0),
                        (-0.03, 0.0),
                        (0.0, 0.03),
                        (0.0, -0.03),
                    ]
                    .iter()
                    .all(|(du, dv)| lung_at(anatomy, &g, side * d + du, v + dv).is_some());
                    if inside {
                        spot = Some((d, v));
                        break;
                    }
                }
                let Some((d, v)) = spot else { continue };
                let ru = rng.random_range(0.055..0.085);
                out.push(Lesion {
                    u: side * d,
                    v,
                    ru,
                    rv: ru * rng.random_range(0.8..1.3),
                    amplitude: CONSOLIDATION_AMPLITUDE * signal * rng.random_range(0.85..1.15),
                    kind: LesionKind::Consolidation,
                });
            }
        }
    }
    out
}
