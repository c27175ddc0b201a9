//! Saliency without gradients: occlusion sensitivity maps, for scorers that have no backward pass here (ONNX
//! models, score tables). Grad-CAM stays for our own models.
//!
//! As MONAI's `OcclusionSensitivity`: a square patch slides over the image with a stride, each position is
//! filled with the image's mean grey, and the model scores every occluded copy (one batch of forward passes
//! per map, through [`Scorer`]). The map at a pixel is the mean, over the patches covering it, of the change
//! of the Covid-19 **logit** caused by hiding it, in absolute value: saliency is where the model looks,
//! whichever way hiding it pushes the score. The logit is the scorer's own ([`Scorer::logits`]: the ONNX
//! graph's logit output, our classifier's head), not one recomputed from a clamped probability: a model
//! sure of itself (|logit| beyond 14) gave empty maps when probabilities were clamped to [1e-6, 1 - 1e-6]
//! first. A map can still be empty (no patch moved the score: a score table of probabilities rounded to
//! 0 or 1); [`OcclusionMap::usable`] says so, and the audit reports how many maps were usable. The
//! map is normalised to [0, 1] and goes through the same lung energy fraction, overlays and galleries as
//! Grad-CAM ([`crate::ExplainWriter::add_with_map`], with the grid's width as the map's native cells, which
//! the audit's abstain rule reads).
//!
//! Cost ([`SaliencyPlan`]): the exhaustive map scores every position plus the unoccluded image, at most
//! `grid² + 1` passes; the grid sets the resolution (`stride = ceil(side / grid)`, patch = 2 x stride so
//! neighbouring patches overlap by half; positions every stride from 0, so a side that is not a multiple
//! of the grid gets fewer). The refined map (the default) first scores every other position per side: those
//! patches tile the image, so whatever the model reads lies under one of them. A remaining position is then
//! scored only where the map changes: when the coarse changes around it (the two or four tiles it
//! overlaps) differ by at least `tolerance` x the largest coarse change; elsewhere it takes their mean.
//! Given the lung mask (the audit always gives it), a remaining position is also scored only where its
//! patch straddles the lung border: the lung energy fraction asks how much heat lies inside the lungs, and
//! an estimate wholly inside (or wholly outside) them moves heat within the same side, where the errors of
//! neighbouring estimates average out, while at the border it would smear heat across it. About a quarter
//! of the positions plus the refined ones; the lung energy fraction moves by less than 0.05
//! (tests/tests/audit_behaviour.rs, docs/AUDIT.md). Which positions are scored depends on the scores, but
//! always within the exhaustive set, and a map whose coarse pass is empty (no tile moved the score, as for
//! `audit prepare`'s recorder, which answers a constant) scores every position: a recorded run asks a
//! superset of what its replay asks.

use cxr_core::{Grey8, Scorer};

use crate::confounders::logit_all;
use crate::error::{ExplainError, Result};
use crate::gradcam::Heatmap;

/// Patch placement of an occlusion map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OcclusionConfig {
    /// Positions per side (the map's native cells across the image).
    pub grid: usize,
    /// Images per scorer call.
    pub batch_size: usize,
    /// Which positions are scored.
    pub plan: SaliencyPlan,
}

/// Which occlusion positions a map scores (module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SaliencyPlan {
    /// Every position: the reference map.
    Exhaustive,
    /// Every other position per side, then the rest only where the coarse changes around them differ by
    /// at least `tolerance` x the largest coarse change (0: every position, as exhaustive).
    Refine { tolerance: f64 },
}

impl SaliencyPlan {
    /// The audit's default: refine where neighbouring tiles differ by a tenth of the map's range.
    pub const DEFAULT_TOLERANCE: f64 = 0.1;

    /// `Refine` with `tolerance`, `Exhaustive` for 0 (what `--saliency-tolerance 0` asks).
    pub fn with_tolerance(tolerance: f64) -> Self {
        if tolerance > 0.0 {
            SaliencyPlan::Refine { tolerance }
        } else {
            SaliencyPlan::Exhaustive
        }
    }
}

impl Default for OcclusionConfig {
    /// 24 positions per side: at 224 px a stride of 10 px and 23 positions a side, 530 passes per map, about
    /// 65 s for a ResNet50 on this CPU (docs/PERFORMANCE.md); lungs spanning 70 % of a whole image then get
    /// 8 cells each, the least the audit's lung energy rule judges (`Thresholds::min_lung_cells`).
    fn default() -> Self {
        Self {
            grid: 24,
            batch_size: 16,
            plan: SaliencyPlan::with_tolerance(SaliencyPlan::DEFAULT_TOLERANCE),
        }
    }
}

/// One occlusion map.
#[derive(Debug, Clone)]
pub struct OcclusionMap {
    /// At the image's resolution, in [0, 1] (all zero when no patch changed the score).
    pub heat: Heatmap,
    /// The unoccluded image's score (the sigmoid of `logit`).
    pub score: f64,
    /// The unoccluded image's Covid-19 logit.
    pub logit: f64,
    /// Whether any patch changed the logit (an empty map has no lung energy fraction).
    pub usable: bool,
    /// Positions across the image (the map's native cells), horizontally and vertically.
    pub cells: (usize, usize),
    pub patch: usize,
    pub stride: usize,
    /// Forward passes this map took (the unoccluded image included).
    pub passes: usize,
}

/// Patch origins along one side: every `stride` pixels from 0, patches clipped at the far border.
fn origins(side: usize, stride: usize, grid: usize) -> Vec<usize> {
    (0..side).step_by(stride).take(grid).collect()
}

/// The occlusion sensitivity map of `image` for `scorer`. With `lung` (the lung mask on the image's pixels,
/// lung >= 128), a refined map scores a remaining position only where its patch straddles the lung border
/// (module documentation).
pub fn occlusion_map(
    scorer: &dyn Scorer,
    image: &Grey8,
    lung: Option<&Grey8>,
    cfg: &OcclusionConfig,
) -> Result<OcclusionMap> {
    let (w, h) = (image.width as usize, image.height as usize);
    if let Some(m) = lung
        && (m.width, m.height) != (image.width, image.height)
    {
        return Err(ExplainError::invalid(
            "occlusion map",
            format!(
                "the lung mask is {}x{}, the image {w}x{h}",
                m.width, m.height
            ),
        ));
    }
    if cfg.grid < 2 || w < cfg.grid || h < cfg.grid {
        return Err(ExplainError::invalid(
            "occlusion map",
            format!(
                "a {w}x{h} image cannot hold a {0}x{0} grid of patches",
                cfg.grid
            ),
        ));
    }
    let stride = w.max(h).div_ceil(cfg.grid);
    let patch = 2 * stride;
    let (xs, ys) = (origins(w, stride, cfg.grid), origins(h, stride, cfg.grid));
    let mean =
        (image.data.iter().map(|&v| v as u64).sum::<u64>() as f64 / (w * h) as f64).round() as u8;
    let occluded = |i: usize, j: usize| {
        let (x0, y0) = (xs[i], ys[j]);
        let mut occ = image.clone();
        for y in y0..(y0 + patch).min(h) {
            occ.data[y * w + x0..y * w + (x0 + patch).min(w)].fill(mean);
        }
        occ
    };
    let (nx, ny) = (xs.len(), ys.len());
    // |logit change| per position (row-major, j * nx + i); None until scored or estimated.
    let mut change: Vec<Option<f64>> = vec![None; nx * ny];
    let coarse = |i: usize, j: usize| match cfg.plan {
        SaliencyPlan::Exhaustive => true,
        SaliencyPlan::Refine { .. } => i % 2 == 0 && j % 2 == 0,
    };
    let first: Vec<(usize, usize)> = (0..ny)
        .flat_map(|j| (0..nx).map(move |i| (i, j)))
        .filter(|&(i, j)| coarse(i, j))
        .collect();
    let mut images = Vec::with_capacity(first.len() + 1);
    images.push(image.clone());
    images.extend(first.iter().map(|&(i, j)| occluded(i, j)));
    let logits = logit_all(scorer, &images, cfg.batch_size)?;
    let base = logits[0];
    for (&(i, j), l) in first.iter().zip(&logits[1..]) {
        change[j * nx + i] = Some((l - base).abs());
    }
    let mut passes = images.len();
    if let SaliencyPlan::Refine { tolerance } = cfg.plan {
        let top = change.iter().flatten().copied().fold(0f64, f64::max);
        // The coarse tiles a position overlaps, per axis: itself on an even index, both neighbours on an odd
        // one (none past the far border: such a position is scored).
        let around = |k: usize, n: usize| -> Option<Vec<usize>> {
            if k % 2 == 0 {
                Some(vec![k])
            } else {
                (k + 1 < n).then(|| vec![k - 1, k + 1])
            }
        };
        // Whether the patch at (i, j) covers lung and non-lung pixels: only there can an estimate move heat
        // across the border the lung energy fraction measures (without a mask: everywhere).
        let straddles = |i: usize, j: usize| -> bool {
            let Some(m) = lung else { return true };
            let (x0, y0) = (xs[i], ys[j]);
            let (mut inside, mut outside) = (false, false);
            for y in y0..(y0 + patch).min(h) {
                for &v in &m.data[y * w + x0..y * w + (x0 + patch).min(w)] {
                    if v >= 128 {
                        inside = true;
                    } else {
                        outside = true;
                    }
                }
                if inside && outside {
                    return true;
                }
            }
            false
        };
        let mut rest = Vec::new();
        for j in 0..ny {
            for i in 0..nx {
                if change[j * nx + i].is_some() {
                    continue;
                }
                let ch = &change;
                let near: Option<Vec<f64>> = around(i, nx).zip(around(j, ny)).map(|(is, js)| {
                    js.iter()
                        .flat_map(|&jj| is.iter().filter_map(move |&ii| ch[jj * nx + ii]))
                        .collect()
                });
                let flat = near.as_ref().and_then(|v| {
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(0f64, f64::max);
                    // An empty coarse map says nothing of where the map changes: score everything.
                    (top > 0.0 && (hi - lo < tolerance * top || !straddles(i, j)))
                        .then(|| v.iter().sum::<f64>() / v.len() as f64)
                });
                match flat {
                    Some(estimate) => change[j * nx + i] = Some(estimate),
                    None => rest.push((i, j)),
                }
            }
        }
        let images: Vec<Grey8> = rest.iter().map(|&(i, j)| occluded(i, j)).collect();
        let logits = logit_all(scorer, &images, cfg.batch_size)?;
        for (&(i, j), l) in rest.iter().zip(&logits) {
            change[j * nx + i] = Some((l - base).abs());
        }
        passes += images.len();
    }
    let (mut sum, mut count) = (vec![0f64; w * h], vec![0u32; w * h]);
    for (j, &y0) in ys.iter().enumerate() {
        for (i, &x0) in xs.iter().enumerate() {
            let c = change[j * nx + i].unwrap_or(0.0);
            for y in y0..(y0 + patch).min(h) {
                for x in x0..(x0 + patch).min(w) {
                    sum[y * w + x] += c;
                    count[y * w + x] += 1;
                }
            }
        }
    }
    let mut data: Vec<f32> = sum
        .iter()
        .zip(&count)
        .map(|(&s, &c)| if c > 0 { (s / c as f64) as f32 } else { 0.0 })
        .collect();
    let max = data.iter().copied().fold(0f32, f32::max);
    if max > 0.0 {
        data.iter_mut().for_each(|v| *v /= max);
    }
    Ok(OcclusionMap {
        heat: Heatmap::new(w, h, data)?,
        score: 1.0 / (1.0 + (-base).exp()),
        logit: base,
        usable: max > 0.0,
        cells: (xs.len(), ys.len()),
        patch,
        stride,
        passes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_core::{ScoreError, Scored};

    /// The mean brightness (0..1) of the 12x12 square at (40, 8) of a 64 px image: the region the test
    /// models read.
    fn region_mean(g: &Grey8) -> f64 {
        let mut s = 0.0;
        for y in 8..20 {
            for x in 40..52 {
                s += g.data[y * 64 + x] as f64;
            }
        }
        s / 144.0 / 255.0
    }

    /// A "model" that reads one region only: the mean brightness of a 12x12 square at (40, 8) of a 64 px image.
    struct RegionReader;
    impl Scorer for RegionReader {
        fn name(&self) -> &str {
            "region"
        }
        fn input_size(&self) -> usize {
            64
        }
        fn has_features(&self) -> bool {
            false
        }
        fn score(&self, images: &[Grey8], _: bool) -> std::result::Result<Scored, ScoreError> {
            Ok(Scored {
                scores: images
                    .iter()
                    .map(|g| 1.0 / (1.0 + (-8.0 * (region_mean(g) - 0.5)).exp()))
                    .collect(),
                features: None,
            })
        }
    }

    /// A model given by its logit. [`Saturated::new`]: sure of itself, the region's brightness moves a logit
    /// around 45, whose probability is 1.0 in f64. With its own logits the map is peaked on the region; from
    /// its probabilities alone it is empty.
    struct Saturated {
        own_logits: bool,
        logit: fn(&Grey8) -> f64,
    }
    impl Saturated {
        fn new(own_logits: bool) -> Self {
            Self {
                own_logits,
                logit: |g| 40.0 + 10.0 * region_mean(g),
            }
        }
    }
    impl Scorer for Saturated {
        fn name(&self) -> &str {
            "saturated"
        }
        fn input_size(&self) -> usize {
            64
        }
        fn has_features(&self) -> bool {
            false
        }
        fn score(&self, images: &[Grey8], _: bool) -> std::result::Result<Scored, ScoreError> {
            Ok(Scored {
                scores: images
                    .iter()
                    .map(|g| 1.0 / (1.0 + (-(self.logit)(g)).exp()))
                    .collect(),
                features: None,
            })
        }
        fn logits(&self, images: &[Grey8]) -> std::result::Result<Vec<f64>, ScoreError> {
            if self.own_logits {
                Ok(images.iter().map(|g| (self.logit)(g)).collect())
            } else {
                Ok(self
                    .score(images, false)?
                    .scores
                    .into_iter()
                    .map(cxr_core::logit)
                    .collect())
            }
        }
    }

    #[test]
    fn a_saturated_model_is_mapped_in_logit_space_and_an_empty_map_says_so() {
        let mut data: Vec<u8> = (0..64 * 64).map(|i| ((i % 64) * 2) as u8).collect();
        for y in 8..20 {
            for x in 40..52 {
                data[y * 64 + x] = 250;
            }
        }
        let img = Grey8::new(64, 64, data).unwrap();
        let cfg = OcclusionConfig {
            grid: 16,
            batch_size: 64,
            plan: SaliencyPlan::Exhaustive,
        };
        let m = occlusion_map(&Saturated::new(true), &img, None, &cfg).unwrap();
        assert!(m.usable);
        assert_eq!(m.score, 1.0);
        assert!(m.logit > 49.0, "{}", m.logit);
        assert_eq!(m.heat.get(45, 13), 1.0);
        assert_eq!(m.heat.get(5, 50), 0.0);
        let m = occlusion_map(&Saturated::new(false), &img, None, &cfg).unwrap();
        assert!(!m.usable);
        assert!(m.heat.data.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_scorer_that_reads_one_region_gets_a_map_peaked_on_it() {
        // A textured image: bright square where the reader looks, a gradient elsewhere.
        let mut data: Vec<u8> = (0..64 * 64).map(|i| ((i % 64) * 2) as u8).collect();
        for y in 8..20 {
            for x in 40..52 {
                data[y * 64 + x] = 250;
            }
        }
        let img = Grey8::new(64, 64, data).unwrap();
        let cfg = OcclusionConfig {
            grid: 16,
            batch_size: 7,
            plan: SaliencyPlan::Exhaustive,
        };
        let m = occlusion_map(&RegionReader, &img, None, &cfg).unwrap();
        assert_eq!(
            (m.cells, m.stride, m.patch, m.passes),
            ((16, 16), 4, 8, 257)
        );
        let at = |x: usize, y: usize| m.heat.get(x, y);
        assert_eq!(at(45, 13), 1.0, "the peak sits on the region read");
        // Far from the region nothing changes the score.
        assert_eq!(at(5, 50), 0.0);
        assert_eq!(at(20, 40), 0.0);
        // The heat is concentrated: almost all of it within a patch of the region.
        let (mut near, mut total) = (0f64, 0f64);
        for y in 0..64 {
            for x in 0..64 {
                let v = at(x, y) as f64;
                total += v;
                if (32..60).contains(&x) && y < 28 {
                    near += v;
                }
            }
        }
        assert!(near / total > 0.99, "{near} / {total}");
        // Too small an image for the grid is an error, not a panic.
        let tiny = Grey8::new(8, 8, vec![0; 64]).unwrap();
        assert!(occlusion_map(&RegionReader, &tiny, None, &cfg).is_err());
    }

    /// A model reading two regions with different weights: a square in the left "lung" and a mark outside.
    fn two_regions(g: &Grey8) -> f64 {
        let mean = |(x0, y0): (usize, usize), side: usize| {
            let mut s = 0.0;
            for y in y0..y0 + side {
                for x in x0..x0 + side {
                    s += g.data[y * 64 + x] as f64;
                }
            }
            s / (side * side) as f64 / 255.0
        };
        6.0 * mean((12, 24), 14) + 3.0 * mean((48, 4), 8)
    }

    #[test]
    fn a_refined_map_costs_fewer_passes_for_the_same_lung_energy() {
        let data: Vec<u8> = (0..64 * 64).map(|i| (60 + (i % 64) * 2) as u8).collect();
        let img = Grey8::new(64, 64, data).unwrap();
        // Two "lungs": x 6..28 and 36..58, y 14..54.
        let mask = Grey8::new(
            64,
            64,
            (0..64 * 64)
                .map(|i| {
                    let (x, y) = (i % 64, i / 64);
                    let lung =
                        (14..54).contains(&y) && ((6..28).contains(&x) || (36..58).contains(&x));
                    if lung { 255 } else { 0 }
                })
                .collect(),
        )
        .unwrap();
        let cfg = |plan| OcclusionConfig {
            grid: 16,
            batch_size: 5,
            plan,
        };
        // Its own logits, not saturated: the map sees both regions.
        let reader = Saturated {
            own_logits: true,
            logit: two_regions,
        };
        let full = occlusion_map(&reader, &img, None, &cfg(SaliencyPlan::Exhaustive)).unwrap();
        let refined = occlusion_map(
            &reader,
            &img,
            None,
            &cfg(SaliencyPlan::with_tolerance(
                SaliencyPlan::DEFAULT_TOLERANCE,
            )),
        )
        .unwrap();
        assert_eq!(full.passes, 257);
        // 64 coarse tiles and the unoccluded image, then only the positions around the two regions (half of
        // the passes here: the regions' edges cover much of so small an image).
        assert!(
            refined.passes > 65 && refined.passes < 150,
            "{} passes",
            refined.passes
        );
        assert_eq!((refined.logit, refined.cells), (full.logit, full.cells));
        let energy = |m: &OcclusionMap| {
            crate::lung_energy_fraction(&m.heat, &mask)
                .unwrap()
                .unwrap()
        };
        let (a, b) = (energy(&full), energy(&refined));
        assert!(a > 0.5 && a < 0.95, "{a}");
        assert!((a - b).abs() < 0.05, "exhaustive {a}, refined {b}");
        // Given the lungs, positions whose patch lies wholly inside or wholly outside them are estimated:
        // fewer passes again, and the same lung energy.
        let bordered = occlusion_map(
            &reader,
            &img,
            Some(&mask),
            &cfg(SaliencyPlan::with_tolerance(
                SaliencyPlan::DEFAULT_TOLERANCE,
            )),
        )
        .unwrap();
        assert!(
            bordered.passes < refined.passes,
            "{} vs {} passes",
            bordered.passes,
            refined.passes
        );
        let c = energy(&bordered);
        assert!(
            (a - c).abs() < 0.05,
            "exhaustive {a}, refined at the border {c}"
        );
        let small = Grey8::new(32, 32, vec![0; 32 * 32]).unwrap();
        assert!(
            occlusion_map(&reader, &img, Some(&small), &cfg(SaliencyPlan::Exhaustive)).is_err()
        );
        // Tolerance 0 is the exhaustive map, and a model no patch moves gets every position scored (what
        // `audit prepare`'s constant recorder relies on).
        assert_eq!(SaliencyPlan::with_tolerance(0.0), SaliencyPlan::Exhaustive);
        let blind = occlusion_map(
            &Saturated::new(false),
            &img,
            Some(&mask),
            &cfg(SaliencyPlan::with_tolerance(0.5)),
        )
        .unwrap();
        assert_eq!((blind.passes, blind.usable), (257, false));
    }
}
