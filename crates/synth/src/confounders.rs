//! The planted confounders as groups that can be swapped one at a time between two sources: the basis of the
//! counterfactual confounder test (`cargo xtask audit-confounders`).
//!
//! A [`ConfounderKind`] is one group of a [`SourceSpec`]'s knobs that the renderer draws per image: the
//! framing (drawn before the anatomy) and the six acquisition groups of [`Acquisition`]. [`render_counterfactual`]
//! renders the same patient, pathology and noise stream as [`render_sample`](crate::render_sample) with the
//! same seed, except that one group's drawn values come from a donor source. This is only possible on a
//! synthetic world, and it is what makes the test causal: nothing but the swapped group moves.
//!
//! Format-level confounders (bit depth, stored range, MONOCHROME1, window metadata, JPEG quality) and the
//! image size and aspect are not groups here: the preprocess stage neutralises most of them, and the
//! counterfactual keeps the base image's geometry. The patients' age distribution is a patient property, not
//! an acquisition one; callers pass the age.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SynthError;
use crate::acquisition::Acquisition;
use crate::pathology::Pattern;
use crate::sources::SourceSpec;
use crate::world::{RenderedSample, WorldConfig};

/// One swappable group of planted confounders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfounderKind {
    /// Body size in the field of view and vertical position of the thorax (`zoom`, `shift_y`).
    Framing,
    /// The transfer curve: `gamma`, `black`, `white`, `s_curve`.
    Intensity,
    /// Detector / processing sharpness (`blur`).
    Blur,
    /// Noise level and its grain (`noise`, `grain`).
    Noise,
    /// Anti-scatter grid lines (`grid`: period, amplitude, orientation).
    Grid,
    /// Collimator borders (`collimation`: probability, widths, value).
    Collimation,
    /// Burned-in text (`text`: string, corner, size, value).
    Text,
    /// Laterality marker (`marker`: letter, size, value; its corner follows the letter).
    Marker,
}

impl ConfounderKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ConfounderKind; 8] = [
        ConfounderKind::Framing,
        ConfounderKind::Intensity,
        ConfounderKind::Blur,
        ConfounderKind::Noise,
        ConfounderKind::Grid,
        ConfounderKind::Collimation,
        ConfounderKind::Text,
        ConfounderKind::Marker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConfounderKind::Framing => "framing",
            ConfounderKind::Intensity => "intensity",
            ConfounderKind::Blur => "blur",
            ConfounderKind::Noise => "noise",
            ConfounderKind::Grid => "grid",
            ConfounderKind::Collimation => "collimation",
            ConfounderKind::Text => "text",
            ConfounderKind::Marker => "marker",
        }
    }

    /// The `world.json` fields of this group for one source, as JSON (for reports and comparisons).
    pub fn spec_values(self, spec: &SourceSpec) -> serde_json::Value {
        use serde_json::json;
        match self {
            ConfounderKind::Framing => json!({"zoom": spec.zoom, "shift_y": spec.shift_y}),
            ConfounderKind::Intensity => json!({
                "gamma": spec.gamma, "black": spec.black, "white": spec.white, "s_curve": spec.s_curve
            }),
            ConfounderKind::Blur => json!({"blur": spec.blur}),
            ConfounderKind::Noise => json!({"noise": spec.noise, "grain": spec.grain}),
            ConfounderKind::Grid => json!({"grid": spec.grid}),
            ConfounderKind::Collimation => {
                // A source that never collimates has no border, whatever its widths say.
                if spec.collimation.probability > 0.0 {
                    json!({"collimation": spec.collimation})
                } else {
                    json!({"collimation": null})
                }
            }
            ConfounderKind::Text => json!({"text": spec.text}),
            ConfounderKind::Marker => json!({"marker": spec.marker}),
        }
    }

    /// True when the two sources' signatures differ in this group (so that swapping it can change an image).
    pub fn differs(self, a: &SourceSpec, b: &SourceSpec) -> bool {
        self.spec_values(a) != self.spec_values(b)
    }
}

impl std::fmt::Display for ConfounderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConfounderKind {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        ConfounderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == t)
            .ok_or_else(|| {
                SynthError::Config(format!(
                    "unknown confounder {s:?} (expected one of {})",
                    ConfounderKind::ALL.map(ConfounderKind::as_str).join(", ")
                ))
            })
    }
}

/// The groups a source actually plants: framing, intensity, blur and noise always (every image has a
/// curve, a sharpness and a noise level); grid, collimation, text and marker when the source has them.
pub fn planted(spec: &SourceSpec) -> Vec<ConfounderKind> {
    ConfounderKind::ALL
        .into_iter()
        .filter(|k| match k {
            ConfounderKind::Grid => spec.grid.is_some(),
            ConfounderKind::Collimation => spec.collimation.probability > 0.0,
            ConfounderKind::Text => spec.text.is_some(),
            ConfounderKind::Marker => spec.marker.is_some(),
            _ => true,
        })
        .collect()
}

/// `spec` with every planted group except `keep` replaced by the broad, source-free signature of
/// [`generic_source`](crate::sources::generic_source) (and no grid, border, text or marker), so that a world of
/// such sources differs between sources in `keep` alone: the audit's sensitivity worlds.
///
/// Image size and aspect become the generic ones too, and VOI windows and lossy JPEG are turned off (format-level
/// cues that are no group of their own); bit depth, stored range and MONOCHROME1 stay, since the preprocess
/// stage undoes them exactly.
pub fn isolate(spec: &SourceSpec, keep: ConfounderKind) -> SourceSpec {
    let g = crate::sources::generic_source();
    let mut s = spec.clone();
    s.aspect = g.aspect;
    s.aspect_jitter = g.aspect_jitter;
    s.size_jitter = g.size_jitter;
    s.square = false;
    s.window = 0.0;
    s.jpeg_quality = spec.jpeg_quality.map(|_| 95);
    for kind in ConfounderKind::ALL {
        if kind == keep {
            continue;
        }
        match kind {
            ConfounderKind::Framing => {
                s.zoom = g.zoom;
                s.shift_y = g.shift_y;
            }
            ConfounderKind::Intensity => {
                s.gamma = g.gamma;
                s.black = g.black;
                s.white = g.white;
                s.s_curve = g.s_curve;
            }
            ConfounderKind::Blur => s.blur = g.blur,
            ConfounderKind::Noise => {
                s.noise = g.noise;
                s.grain = g.grain;
            }
            ConfounderKind::Grid => s.grid = None,
            ConfounderKind::Collimation => {
                s.collimation = g.collimation.clone();
                s.collimation.probability = 0.0;
            }
            ConfounderKind::Text => s.text = None,
            ConfounderKind::Marker => s.marker = None,
        }
    }
    s
}

impl Acquisition {
    /// Replaces this draw's values of one group by `other`'s (framing is not drawn here: no-op).
    pub fn take_group(&mut self, kind: ConfounderKind, other: &Acquisition) {
        match kind {
            ConfounderKind::Framing => {}
            ConfounderKind::Intensity => {
                self.gamma = other.gamma;
                self.black = other.black;
                self.white = other.white;
                self.s_curve = other.s_curve;
            }
            ConfounderKind::Blur => self.blur_px = other.blur_px,
            ConfounderKind::Noise => {
                self.noise = other.noise;
                self.grain_px = other.grain_px;
            }
            ConfounderKind::Grid => self.grid = other.grid,
            ConfounderKind::Collimation => {
                self.borders = other.borders;
                self.border_value = other.border_value;
            }
            ConfounderKind::Text => self.text = other.text.clone(),
            ConfounderKind::Marker => self.marker = other.marker,
        }
    }
}

/// Renders `base`'s image for `seed` (as [`render_sample`](crate::render_sample) does) with one confounder
/// group drawn from `donor` instead.
///
/// Both sources' draws come from clones of the same random stream at the same point, so the patient, the
/// lesions, the vessel pattern, the other groups' values and the noise samples are those of the base image;
/// `donor == base` gives a bit-identical image. Collimator borders move the text and marker with them (they
/// sit inside the exposed field), as in the writer.
#[allow(clippy::too_many_arguments)]
pub fn render_counterfactual(
    base: &SourceSpec,
    donor: &SourceSpec,
    swap: ConfounderKind,
    pattern: Pattern,
    signal: f32,
    width: usize,
    height: usize,
    seed: u64,
    age: u32,
) -> RenderedSample {
    crate::world::render_swapped(
        base,
        Some((donor, swap)),
        pattern,
        signal,
        width,
        height,
        seed,
        age,
    )
}

/// What `world.json` holds that the counterfactual test needs: the config and every source's signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldFile {
    pub config: WorldConfig,
    pub sources: Vec<SourceSpec>,
}

impl WorldFile {
    /// The signature of a source id.
    pub fn source(&self, id: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.id == id)
    }
}

/// Reads a world's `world.json` (the file, or the world folder that holds it).
pub fn read_world_json(path: &Path) -> Result<WorldFile, SynthError> {
    let file = if path.is_dir() {
        path.join("world.json")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(|e| SynthError::Io {
        path: file.clone(),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| SynthError::Read {
        path: file,
        message: format!("not a cxr-synth world.json: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::paper_sources;

    #[test]
    fn isolated_sources_differ_in_the_kept_group_only() {
        let specs = paper_sources();
        for keep in ConfounderKind::ALL {
            let iso: Vec<SourceSpec> = specs.iter().map(|s| isolate(s, keep)).collect();
            let mut kept_differs = false;
            for (i, a) in iso.iter().enumerate() {
                for (j, b) in iso.iter().enumerate().skip(i + 1) {
                    for kind in ConfounderKind::ALL {
                        let d = kind.differs(a, b);
                        if kind == keep {
                            assert_eq!(d, kind.differs(&specs[i], &specs[j]), "{keep}: {kind}");
                            kept_differs |= d;
                        } else {
                            assert!(!d, "world `{keep}`: {} and {} differ in {kind}", a.id, b.id);
                        }
                    }
                    assert_eq!(
                        (a.aspect, a.square, a.window),
                        (b.aspect, b.square, b.window)
                    );
                }
            }
            assert!(kept_differs, "no two sources differ in {keep}");
            // The group's planted values are the source's own.
            for (a, s) in iso.iter().zip(&specs) {
                assert_eq!(keep.spec_values(a), keep.spec_values(s));
            }
        }
    }
}
