//! `cargo xtask audit-confounders`: the counterfactual confounder test, possible only on a synthetic world.
//!
//! For every planted confounder group (`cxr_synth::ConfounderKind`) whose value differs between a Covid and a
//! pneumonia source of the model's training split, it renders pairs of images of the same patient, pathology
//! and noise stream (`cxr_synth::render_counterfactual`): the base source's own image, and the same image with
//! that one group drawn from the other class's source. Both go through the pipeline's input path (8-bit
//! display, the preprocess stage's min-max conversion and resize, the segment stage's lung-box crop with its
//! 5 % margin — computed from the **ground-truth** lung mask, not the UNet's — and the model's own resize and
//! normalisation), and the model scores both. The paired score shift, signed towards the donor's class, says
//! whether the model's output follows that confounder: flagged when its bootstrap 95 % CI excludes 0 and
//! |mean shift| >= `--threshold` (0.05 in probability by default), and only where the confounder is
//! label-associated in the training split (a confounder the label does not follow cannot be a shortcut).
//!
//! What differs from the real pipeline (documented in `confounders.json` too): every image takes NIH's route
//! (8-bit stored values, no window, min-max), so the format-level confounders (bit depth, stored range,
//! windows, MONOCHROME1, JPEG) are not part of the test; the counterfactual keeps the base image's size and
//! aspect; the crop uses the true lung mask.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use cxr_core::{Grey8, Label, Manifest, PixelMeta, RawImage, SourceId, Split};
use cxr_synth::{ConfounderKind, Pattern, SourceSpec, WorldFile, render_counterfactual};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::explain::{ModelArgs, bar, load_model};

/// `cargo xtask audit-confounders --world W --model RUN --manifest M`: does the model follow a planted
/// confounder? (Counterfactual swaps of one confounder group at a time; synthetic worlds only.)
#[derive(Debug, Parser)]
#[command(name = "audit-confounders")]
pub struct AuditConfoundersArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The synthetic world the model's data came from (the folder with `world.json`, or the file).
    #[arg(long)]
    pub world: PathBuf,
    /// The experiment's split manifest (`split` column; its train rows say which sources hold which class).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Counterfactual pairs per confounder and direction (towards Covid, towards pneumonia).
    #[arg(long, default_value_t = 24)]
    pub pairs: usize,
    /// Smallest |mean score shift| (probability) that flags a confounder.
    #[arg(long, default_value_t = 0.05)]
    pub threshold: f64,
    /// Bootstrap resamples for the 95 % CI of the mean shift.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Seed of the rendered patients and of the bootstrap.
    #[arg(long, default_value_t = 20210204)]
    pub seed: u64,
    /// Only these confounder groups (comma-separated: framing, intensity, blur, noise, grid, collimation,
    /// text, marker); default: all.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<ConfounderKind>,
    /// Rendered image height; default: the world's (`world.json` config.size).
    #[arg(long)]
    pub world_size: Option<usize>,
    /// The preprocess stage's output size (longest side); default: the manifest's `pre_size`, else the world
    /// size.
    #[arg(long)]
    pub preprocess_size: Option<u32>,
    /// Keep the rendered model inputs under `<out>/images/`.
    #[arg(long)]
    pub keep_images: bool,
    /// Output folder (default `target/audit-confounders/<model name>`): `confounders.json`,
    /// `confounders.csv`, `confounder_pairs.csv`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Scores model inputs (grey images as the segment stage writes them) with P(Covid-19).
pub(crate) trait Scorer: Sync {
    fn score(&self, images: &[Grey8], scratch: &Path) -> Result<Vec<f64>>;
}

/// The trained classifier: inputs go through PNG files and `cxr_model::predict_rows`, exactly the code path
/// (decode, resize, normalisation) that scored the real crops.
struct ModelScorer {
    loaded: crate::explain::Loaded,
    batch_size: usize,
}

impl Scorer for ModelScorer {
    fn score(&self, images: &[Grey8], scratch: &Path) -> Result<Vec<f64>> {
        std::fs::create_dir_all(scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let source = SourceId::new("synthetic").context("source id")?;
        let rows: Vec<cxr_model::ImageRow> = images
            .par_iter()
            .enumerate()
            .map(|(i, img)| {
                let path = scratch.join(format!("{i:06}.png"));
                cxr_explain::render::write_png_grey(&path, img)?;
                Ok(cxr_model::ImageRow {
                    id: format!("cf{i}"),
                    path,
                    source: source.clone(),
                    label: Label::Covid,
                    split: None,
                    patient: String::new(),
                    aug: None,
                })
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&cxr_model::ImageRow> = rows.iter().collect();
        let pb = bar(refs.len(), "scoring");
        let mut out = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(64) {
            out.extend(cxr_model::predict_rows(
                &self.loaded.model,
                chunk,
                self.loaded.size,
                self.batch_size,
            )?);
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        Ok(out)
    }
}

/// Everything the test needs besides the scorer.
pub(crate) struct Plan {
    pub world: WorldFile,
    /// Training images per source: (Covid, pneumonia).
    pub train: BTreeMap<String, (usize, usize)>,
    pub kinds: Vec<ConfounderKind>,
    pub pairs: usize,
    pub threshold: f64,
    pub bootstrap: usize,
    pub seed: u64,
    pub world_size: usize,
    pub preprocess_size: u32,
    /// Crop to the lung box (the model reads `crop`), else the whole preprocessed image.
    pub crop: bool,
}

/// One rendered pair and its scores.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PairRow {
    pub kind: ConfounderKind,
    pub base: String,
    pub donor: String,
    pub pattern: &'static str,
    pub seed: u64,
    pub score_base: f64,
    pub score_counterfactual: f64,
    /// Counterfactual minus base, signed so that positive = towards the donor's class.
    pub shift: f64,
}

/// The test's result for one confounder group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KindResult {
    pub kind: ConfounderKind,
    /// The group's `world.json` values per training source.
    pub values: BTreeMap<String, serde_json::Value>,
    /// Cramér's V of (group value x label) over the training rows; 0 when one value covers every row.
    pub cramers_v: f64,
    /// Some pair of training sources differs in this group and in its Covid share by >= 0.5.
    pub label_associated: bool,
    /// Ordered (base, donor) pairs rendered.
    pub pairs: Vec<(String, String)>,
    pub n: usize,
    /// Pairs dropped because the crop rule rejected an image (empty or small lung box).
    pub rejected: usize,
    /// Scored pairs whose two model inputs are identical: the preprocessing (the lung crop, in practice)
    /// removed the group before the model could see it.
    pub identical_inputs: usize,
    pub mean_shift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Raw mean shift (counterfactual - base) when a Covid-leaning source donated, and when a
    /// pneumonia-leaning one did.
    pub towards_covid_mean: Option<f64>,
    pub towards_pneumonia_mean: Option<f64>,
    /// Mean |counterfactual - base|: sensitivity to the group whatever the direction.
    pub mean_abs_shift: Option<f64>,
    pub flagged: bool,
    pub status: &'static str,
    pub detail: String,
}

/// SplitMix64: independent per-pair seeds.
fn mix(seed: u64, a: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn covid_share(train: &BTreeMap<String, (usize, usize)>, s: &str) -> f64 {
    let (c, p) = train.get(s).copied().unwrap_or((0, 0));
    c as f64 / (c + p).max(1) as f64
}

/// Cramér's V of a (rows x 2) table of (Covid, pneumonia) counts.
fn cramers_v(table: &[(usize, usize)]) -> f64 {
    let n: f64 = table.iter().map(|&(a, b)| (a + b) as f64).sum();
    let cols = [
        table.iter().map(|t| t.0 as f64).sum::<f64>(),
        table.iter().map(|t| t.1 as f64).sum::<f64>(),
    ];
    if table.len() < 2 || n == 0.0 || cols[0] == 0.0 || cols[1] == 0.0 {
        return 0.0;
    }
    let mut chi2 = 0.0;
    for &(a, b) in table {
        let row = (a + b) as f64;
        for (obs, col) in [(a as f64, cols[0]), (b as f64, cols[1])] {
            let e = row * col / n;
            if e > 0.0 {
                chi2 += (obs - e).powi(2) / e;
            }
        }
    }
    (chi2 / n).sqrt().min(1.0)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Percentile bootstrap 95 % CI of the mean.
fn bootstrap_ci(v: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if v.len() < 2 || resamples < 10 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..v.len())
                .map(|_| v[rng.random_range(0..v.len())])
                .sum::<f64>()
                / v.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some((at(0.025), at(0.975)))
}

/// A rendered display image → the model's input: 8-bit stored values (as synth writes NIH's PNGs) → the
/// preprocess stage (min-max, no window; resize so the longest side is `pre_size`) → the lung-box crop of
/// the segment stage (5 % margin, same rejection rule) on the ground-truth mask.
fn model_input(s: &cxr_synth::RenderedSample, pre_size: u32, crop: bool) -> Result<Option<Grey8>> {
    let (w, h) = (s.width as u32, s.height as u32);
    let stored: Vec<f32> = s
        .display
        .iter()
        .map(|&v| (v * 255.0).round().clamp(0.0, 255.0))
        .collect();
    let meta = PixelMeta {
        format: Some(cxr_core::ImageFormat::Png),
        bits_stored: 8,
        ..Default::default()
    };
    let raw = RawImage::new(w, h, stored, meta).context("counterfactual image")?;
    let cfg = cxr_preprocess::PreprocessConfig {
        size: pre_size,
        ..Default::default()
    };
    let geometry = cxr_preprocess::Geometry {
        size: cfg.size,
        resize: cfg.resize,
        filter: cfg.filter,
    };
    let processed = cxr_preprocess::preprocess(
        &raw,
        &cxr_preprocess::MetadataOverride::default(),
        &cfg.display_options("synthetic"),
        &geometry,
    )
    .map_err(|e| anyhow::anyhow!("preprocessing a counterfactual image: {e}"))?;
    let image = processed.image;
    if !crop {
        return Ok(Some(image));
    }
    let mask = Grey8::new(
        w,
        h,
        s.mask
            .iter()
            .map(|&m| if m != 0 { 255 } else { 0 })
            .collect(),
    )
    .context("ground-truth mask")?;
    let mask = cxr_explain::occlusion::resize_nearest(&mask, image.width, image.height)?;
    let decision = cxr_segment::lung_box(&mask);
    match (decision.crop, decision.reject) {
        (Some(b), None) => Ok(Some(cxr_explain::occlusion::crop(
            &image, b.x, b.y, b.w, b.h,
        )?)),
        _ => Ok(None),
    }
}

/// One pair to render.
struct Job {
    kind: ConfounderKind,
    base: usize,
    donor: usize,
    pattern: Pattern,
    seed: u64,
    /// +1 when the donor leans more to Covid than the base, -1 when less, +1 when neither (no association).
    sign: f64,
}

/// The counterfactual confounder test with any scorer (the trained model in the command, a hand-made
/// scorer in tests).
pub(crate) fn run_test(
    plan: &Plan,
    scorer: &dyn Scorer,
    scratch: &Path,
) -> Result<(Vec<KindResult>, Vec<PairRow>)> {
    let specs: Vec<&SourceSpec> = plan
        .train
        .keys()
        .filter_map(|s| plan.world.source(s))
        .collect();
    if specs.len() < 2 {
        bail!(
            "the training split holds {} source(s) of the world ({}); the test swaps confounders between two",
            specs.len(),
            plan.train.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let share: Vec<f64> = specs
        .iter()
        .map(|s| covid_share(&plan.train, &s.id))
        .collect();
    let mut jobs: Vec<Job> = Vec::new();
    let mut results: Vec<KindResult> = Vec::new();
    for &kind in &plan.kinds {
        let values: BTreeMap<String, serde_json::Value> = specs
            .iter()
            .map(|s| (s.id.clone(), kind.spec_values(s)))
            .collect();
        // Cramér's V over training rows, sources grouped by their value of this group.
        let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for s in &specs {
            let (c, p) = plan.train[&s.id];
            let g = groups.entry(kind.spec_values(s).to_string()).or_default();
            g.0 += c;
            g.1 += p;
        }
        let v = cramers_v(&groups.values().copied().collect::<Vec<_>>());
        // Ordered pairs that differ in this group; label-associated ones are those whose Covid shares differ by
        // at least 0.5 (in the paper world: one Covid and one pneumonia source).
        let mut differing = Vec::new();
        let mut associated = Vec::new();
        for b in 0..specs.len() {
            for d in 0..specs.len() {
                if b != d && kind.differs(specs[b], specs[d]) {
                    differing.push((b, d));
                    if (share[d] - share[b]).abs() >= 0.5 {
                        associated.push((b, d));
                    }
                }
            }
        }
        let label_associated = !associated.is_empty();
        // Without association the clean world still gets a sensitivity figure from the differing pairs.
        let mut chosen = if label_associated {
            associated
        } else {
            differing
        };
        // Interleave directions: (b, d) next to (d, b), so that every N consecutive pairs balance them.
        chosen.sort_by_key(|&(b, d)| (b.min(d), b.max(d), b));
        let mut result = KindResult {
            kind,
            values,
            cramers_v: v,
            label_associated,
            pairs: chosen
                .iter()
                .map(|&(b, d)| (specs[b].id.clone(), specs[d].id.clone()))
                .collect(),
            n: 0,
            rejected: 0,
            identical_inputs: 0,
            mean_shift: None,
            ci_low: None,
            ci_high: None,
            towards_covid_mean: None,
            towards_pneumonia_mean: None,
            mean_abs_shift: None,
            flagged: false,
            status: "not_tested",
            detail: String::new(),
        };
        if chosen.is_empty() {
            result.status = "same_in_every_source";
            result.detail = "no two training sources differ in this group".into();
        } else {
            for j in 0..2 * plan.pairs {
                let (b, d) = chosen[j % chosen.len()];
                // Each ordered pair alternates the pathology pattern from one round to the next, and
                // neighbouring unordered pairs start with different ones.
                let round = j / chosen.len();
                let pattern = if (round + (j % chosen.len()) / 2) % 2 == 0 {
                    Pattern::Covid
                } else {
                    Pattern::Pneumonia
                };
                let sign = if label_associated && share[d] < share[b] {
                    -1.0
                } else {
                    1.0
                };
                jobs.push(Job {
                    kind,
                    base: b,
                    donor: d,
                    pattern,
                    seed: mix(plan.seed, j as u64),
                    sign,
                });
            }
        }
        results.push(result);
    }

    // Render: base images once per (source, seed, pattern), a counterfactual per job.
    let pb = bar(jobs.len(), "rendering counterfactuals");
    let size_of = |s: &SourceSpec| -> (usize, usize) {
        let h = plan.world_size;
        let w = if s.square {
            h
        } else {
            ((h as f32 * s.aspect).round() as usize).max(32)
        };
        (w, h)
    };
    let age_of = |s: &SourceSpec, seed: u64| -> u32 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA6E);
        let n: f32 = rand_distr_normal(&mut rng);
        let [m, sd, lo, hi] = s.age;
        (m + sd * n).clamp(lo, hi).round() as u32
    };
    let signal = plan.world.config.signal;
    let mut base_keys: Vec<(usize, u64, bool)> = jobs
        .iter()
        .map(|j| (j.base, j.seed, j.pattern == Pattern::Covid))
        .collect();
    base_keys.sort_unstable();
    base_keys.dedup();
    let bases: HashMap<(usize, u64, bool), Option<Grey8>> = base_keys
        .par_iter()
        .map(|&(b, seed, covid)| {
            let s = specs[b];
            let (w, h) = size_of(s);
            let pattern = if covid {
                Pattern::Covid
            } else {
                Pattern::Pneumonia
            };
            let r = cxr_synth::render_sample(s, pattern, signal, w, h, seed, age_of(s, seed));
            Ok((
                (b, seed, covid),
                model_input(&r, plan.preprocess_size, plan.crop)?,
            ))
        })
        .collect::<Result<_>>()?;
    let cfs: Vec<Option<Grey8>> = jobs
        .par_iter()
        .map(|j| {
            let (base, donor) = (specs[j.base], specs[j.donor]);
            let (w, h) = size_of(base);
            let r = render_counterfactual(
                base,
                donor,
                j.kind,
                j.pattern,
                signal,
                w,
                h,
                j.seed,
                age_of(base, j.seed),
            );
            pb.inc(1);
            model_input(&r, plan.preprocess_size, plan.crop)
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();

    // Score every kept base and counterfactual in one pass.
    let base_index: BTreeMap<(usize, u64, bool), usize> = base_keys
        .iter()
        .filter(|k| bases.get(k).is_some_and(Option::is_some))
        .enumerate()
        .map(|(i, k)| (*k, i))
        .collect();
    let mut images: Vec<Grey8> = base_index
        .keys()
        .filter_map(|k| bases.get(k).cloned().flatten())
        .collect();
    let mut cf_index: Vec<Option<usize>> = Vec::with_capacity(jobs.len());
    for (j, cf) in jobs.iter().zip(&cfs) {
        let key = (j.base, j.seed, j.pattern == Pattern::Covid);
        match (cf, base_index.contains_key(&key)) {
            (Some(img), true) => {
                cf_index.push(Some(images.len()));
                images.push(img.clone());
            }
            _ => cf_index.push(None),
        }
    }
    let scores = scorer.score(&images, scratch)?;
    if scores.len() != images.len() {
        bail!(
            "the scorer returned {} scores for {} images",
            scores.len(),
            images.len()
        );
    }

    let mut rows = Vec::new();
    for (j, ci) in jobs.iter().zip(&cf_index) {
        let k = results
            .iter_mut()
            .find(|r| r.kind == j.kind)
            .context("internal: a job without its confounder")?;
        let Some(ci) = ci else {
            k.rejected += 1;
            continue;
        };
        let bi = base_index[&(j.base, j.seed, j.pattern == Pattern::Covid)];
        if images[bi] == images[*ci] {
            k.identical_inputs += 1;
        }
        let (sb, sc) = (scores[bi], scores[*ci]);
        rows.push(PairRow {
            kind: j.kind,
            base: specs[j.base].id.clone(),
            donor: specs[j.donor].id.clone(),
            pattern: match j.pattern {
                Pattern::Covid => "covid",
                _ => "pneumonia",
            },
            seed: j.seed,
            score_base: sb,
            score_counterfactual: sc,
            shift: (sc - sb) * j.sign,
        });
    }
    for (ki, r) in results.iter_mut().enumerate() {
        if r.pairs.is_empty() {
            continue;
        }
        let mine: Vec<&PairRow> = rows.iter().filter(|p| p.kind == r.kind).collect();
        let shifts: Vec<f64> = mine.iter().map(|p| p.shift).collect();
        let raw = |towards_covid: bool| -> Vec<f64> {
            mine.iter()
                .filter(|p| {
                    (covid_share(&plan.train, &p.donor) > covid_share(&plan.train, &p.base))
                        == towards_covid
                })
                .map(|p| p.score_counterfactual - p.score_base)
                .collect()
        };
        r.n = shifts.len();
        r.mean_shift = mean(&shifts);
        if let Some((lo, hi)) =
            bootstrap_ci(&shifts, plan.bootstrap, mix(plan.seed, 1000 + ki as u64))
        {
            r.ci_low = Some(lo);
            r.ci_high = Some(hi);
        }
        r.mean_abs_shift = mean(
            &mine
                .iter()
                .map(|p| (p.score_counterfactual - p.score_base).abs())
                .collect::<Vec<_>>(),
        );
        if r.label_associated {
            r.towards_covid_mean = mean(&raw(true));
            r.towards_pneumonia_mean = mean(&raw(false));
        }
        let excludes_zero =
            matches!((r.ci_low, r.ci_high), (Some(l), Some(h)) if l > 0.0 || h < 0.0);
        let big = r.mean_shift.is_some_and(|m| m.abs() >= plan.threshold);
        let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.3}"));
        let ci = format!("[{}, {}]", fmt(r.ci_low), fmt(r.ci_high));
        if !r.label_associated {
            r.status = "not_label_associated";
            r.detail = format!(
                "no training source pair differs in this group and in its Covid share; sensitivity: mean |shift| {} over {} pairs",
                fmt(r.mean_abs_shift),
                r.n
            );
        } else if r.n >= 2 && r.identical_inputs == r.n {
            r.status = "not_in_model_input";
            r.detail = format!(
                "the pipeline's input path removes this group: all {} counterfactual inputs equal their bases \
                 (it lies outside the lung crop), so the model cannot follow it",
                r.n
            );
        } else if r.n < 2 {
            r.status = "not_tested";
            r.detail = format!(
                "{} pairs scored ({} rejected by the crop rule)",
                r.n, r.rejected
            );
        } else if excludes_zero && big {
            r.flagged = true;
            r.status = "followed";
            r.detail = format!(
                "mean shift {} towards the donor's class, 95% CI {ci}, |mean| >= {} and the CI excludes 0{}",
                fmt(r.mean_shift),
                plan.threshold,
                if r.mean_shift.is_some_and(|m| m < 0.0) {
                    " (against the training association)"
                } else {
                    ""
                }
            );
        } else {
            r.status = "not_followed";
            r.detail = format!(
                "mean shift {} towards the donor's class, 95% CI {ci} (flag: CI excludes 0 and |mean| >= {})",
                fmt(r.mean_shift),
                plan.threshold
            );
        }
    }
    Ok((results, rows))
}

/// A standard normal draw (Box-Muller; `rand_distr` is not an xtask dependency).
fn rand_distr_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Training images per source (Covid, pneumonia) from the manifest's train split: original rows (no
/// augmented copies) with an image in `column` when the manifest has that column.
pub(crate) fn train_counts(
    manifest: &Manifest,
    manifest_path: &Path,
    column: &str,
) -> Result<BTreeMap<String, (usize, usize)>> {
    let has_column = manifest.columns().iter().any(|c| c == column);
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &manifest.records {
        if r.split != Some(Split::Train) {
            continue;
        }
        if r.get("aug").is_some_and(|a| !a.is_empty() && a != "orig") {
            continue;
        }
        if has_column && r.get(column).is_none_or(|c| c.trim().is_empty()) {
            continue;
        }
        let e = out.entry(r.source.to_string()).or_default();
        match r.label.target() {
            Some(1) => e.0 += 1,
            Some(_) => e.1 += 1,
            None => {}
        }
    }
    out.retain(|_, (c, p)| *c + *p > 0);
    if out.is_empty() {
        bail!(
            "{}: no labelled training rows (a `split` column with `train` is needed)",
            manifest_path.display()
        );
    }
    Ok(out)
}

/// The preprocess stage's output size: the longest side in the manifest's `pre_size` (`WxH`) column.
fn pre_size_of(manifest: &Manifest) -> Option<u32> {
    manifest
        .records
        .iter()
        .filter_map(|r| r.get("pre_size"))
        .filter_map(|v| {
            let (w, h) = v.trim().split_once('x')?;
            Some(w.parse::<u32>().ok()?.max(h.parse::<u32>().ok()?))
        })
        .max()
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Builds `confounders.json`'s value.
pub(crate) fn report_json(
    plan: &Plan,
    results: &[KindResult],
    model: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let flagged: Vec<&str> = results
        .iter()
        .filter(|r| r.flagged)
        .map(|r| r.kind.as_str())
        .collect();
    serde_json::json!({
        "test": "counterfactual confounder swap (synthetic worlds only)",
        "model": model,
        "positive_class": "covid",
        "threshold": plan.threshold,
        "ci": "percentile bootstrap 95% over pairs",
        "bootstrap": plan.bootstrap,
        "pairs_per_direction": plan.pairs,
        "seed": plan.seed,
        "shift": "score(counterfactual) - score(base) in probability of Covid-19, signed positive towards the donor source's class (the source whose Covid share in the training split is higher counts as Covid)",
        "flag_rule": "label-associated in the training split, bootstrap 95% CI of the mean shift excludes 0, and |mean shift| >= threshold",
        "input_path": {
            "world_size": plan.world_size,
            "preprocess_size": plan.preprocess_size,
            "crop": plan.crop,
            "display": "8-bit stored values, no window, min-max (NIH's route) for every source: format-level confounders are not part of this test",
            "lung_box": "the segment stage's rule (5% margin, same rejections) on the ground-truth lung mask, not the UNet's",
            "geometry": "the base source's nominal aspect at the world size; age from the base source's distribution"
        },
        "training_sources": plan.train.iter().map(|(s, (c, p))| serde_json::json!({
            "source": s, "covid": c, "pneumonia": p, "in_world": plan.world.source(s).is_some(),
        })).collect::<Vec<_>>(),
        "confounders": results,
        "flagged": flagged,
        "verdict": if flagged.is_empty() { "no planted confounder followed" } else { "follows planted confounders" },
        "extra": extra,
    })
}

fn write_outputs(
    out: &Path,
    json: &serde_json::Value,
    results: &[KindResult],
    rows: &[PairRow],
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let mut csv = String::from(
        "kind,label_associated,cramers_v,n,rejected,identical_inputs,mean_shift,ci_low,ci_high,towards_covid_mean,towards_pneumonia_mean,mean_abs_shift,flagged,status\n",
    );
    for r in results {
        csv.push_str(&format!(
            "{},{},{:.4},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.kind,
            r.label_associated,
            r.cramers_v,
            r.n,
            r.rejected,
            r.identical_inputs,
            f(r.mean_shift),
            f(r.ci_low),
            f(r.ci_high),
            f(r.towards_covid_mean),
            f(r.towards_pneumonia_mean),
            f(r.mean_abs_shift),
            r.flagged,
            r.status
        ));
    }
    let mut pairs =
        String::from("kind,base,donor,pattern,seed,score_base,score_counterfactual,shift\n");
    for p in rows {
        pairs.push_str(&format!(
            "{},{},{},{},{},{:.6},{:.6},{:.6}\n",
            p.kind,
            csv_escape(&p.base),
            csv_escape(&p.donor),
            p.pattern,
            p.seed,
            p.score_base,
            p.score_counterfactual,
            p.shift
        ));
    }
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = out.join(name);
        cxr_core::fsutil::write_atomic(&p, bytes)
            .with_context(|| format!("writing {}", p.display()))
    };
    write("confounder_pairs.csv", pairs.as_bytes())?;
    write("confounders.csv", csv.as_bytes())?;
    write("confounders.json", &serde_json::to_vec_pretty(json)?)?;
    Ok(())
}

fn print_table(results: &[KindResult]) {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.3}"));
    println!(
        "{:<12} {:>5} {:>5} {:>4} {:>8} {:>18} {:>8}  status",
        "confounder", "assoc", "V", "n", "shift", "95% CI", "|shift|"
    );
    for r in results {
        println!(
            "{:<12} {:>5} {:>5.2} {:>4} {:>8} {:>18} {:>8}  {}{}",
            r.kind.as_str(),
            if r.label_associated { "yes" } else { "no" },
            r.cramers_v,
            r.n,
            f(r.mean_shift),
            format!("[{}, {}]", f(r.ci_low), f(r.ci_high)),
            r.mean_abs_shift.map_or("-".into(), |v| format!("{v:.3}")),
            r.status,
            if r.flagged { "  <- FLAG" } else { "" }
        );
    }
}

/// Builds the plan from the arguments (world, manifest, sizes) for a model reading `column`.
pub(crate) fn plan_from_args(args: &AuditConfoundersArgs, column: &str) -> Result<Plan> {
    let world = cxr_synth::read_world_json(&args.world)
        .with_context(|| format!("audit-confounders: --world {}", args.world.display()))?;
    let manifest = Manifest::read(&args.manifest)
        .with_context(|| format!("audit-confounders: reading {}", args.manifest.display()))?;
    let train = train_counts(&manifest, &args.manifest, column)?;
    let world_size = args.world_size.unwrap_or(world.config.size as usize);
    if !(16..=4096).contains(&world_size) {
        bail!("audit-confounders: world size {world_size} out of range 16..=4096");
    }
    let preprocess_size = args
        .preprocess_size
        .or_else(|| pre_size_of(&manifest))
        .unwrap_or(world_size as u32);
    let kinds = if args.kinds.is_empty() {
        ConfounderKind::ALL.to_vec()
    } else {
        let mut k = args.kinds.clone();
        k.sort();
        k.dedup();
        k
    };
    if args.pairs == 0 {
        bail!("audit-confounders: --pairs must be at least 1");
    }
    Ok(Plan {
        world,
        train,
        kinds,
        pairs: args.pairs,
        threshold: args.threshold,
        bootstrap: args.bootstrap,
        seed: args.seed,
        world_size,
        preprocess_size,
        crop: column == "crop",
    })
}

/// Runs the test for a trained model, writes `confounders.json`, `confounders.csv` and
/// `confounder_pairs.csv` into the output folder, prints a table and returns the JSON it wrote.
pub fn audit_confounders(args: AuditConfoundersArgs) -> Result<serde_json::Value> {
    let loaded = load_model(&args.model).context("audit-confounders")?;
    let plan = plan_from_args(&args, &loaded.column)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/audit-confounders").join(&loaded.name));
    let scratch = if args.keep_images {
        out.join("images")
    } else {
        out.join(".scratch-images")
    };
    let name = loaded.name.clone();
    let extra = serde_json::json!({
        "world": args.world.display().to_string(),
        "manifest": args.manifest.display().to_string(),
        "model_run": args.model.model.display().to_string(),
        "image_size": loaded.size,
        "column": loaded.column,
    });
    let scorer = ModelScorer {
        loaded,
        batch_size: args.model.batch_size,
    };
    let run = run_test(&plan, &scorer, &scratch);
    if !args.keep_images {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let (results, rows) = run.context("audit-confounders")?;
    let json = report_json(&plan, &results, &name, extra);
    write_outputs(&out, &json, &results, &rows).context("audit-confounders")?;
    println!(
        "audit-confounders of {name}: {}",
        json["verdict"].as_str().unwrap_or("")
    );
    print_table(&results);
    println!("-> {}", out.join("confounders.json").display());
    Ok(json)
}

/// The command's entry point (the JSON is written and printed; the caller needs nothing back).
pub fn run(args: AuditConfoundersArgs) -> Result<()> {
    audit_confounders(args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_core::{ImageFormat, ManifestRecord};
    use cxr_synth::{WorldConfig, paper_sources};

    /// A "model" that reads one cue only: vertical grid lines, as the high-frequency energy of the crop's
    /// column-mean profile (averaging down the columns cancels noise; anatomy is smooth across columns).
    struct GridReader;

    fn stripe_energy(img: &Grey8) -> f64 {
        let (w, h) = (img.width as usize, img.height as usize);
        let cols: Vec<f64> = (0..w)
            .map(|x| (0..h).map(|y| img.data[y * w + x] as f64).sum::<f64>() / h as f64)
            .collect();
        // The median, not the mean: the few vertical edges of the anatomy (spine, heart, ribs' ends) give
        // spikes; grid lines raise every column.
        let mut d: Vec<f64> = cols
            .windows(3)
            .map(|t| (t[0] - 2.0 * t[1] + t[2]).abs())
            .collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    }

    impl Scorer for GridReader {
        fn score(&self, images: &[Grey8], _scratch: &Path) -> Result<Vec<f64>> {
            Ok(images
                .iter()
                .map(|img| 1.0 / (1.0 + (-4.0 * (stripe_energy(img) - 2.8)).exp()))
                .collect())
        }
    }

    fn record(i: usize, source: &str, label: Label) -> ManifestRecord {
        ManifestRecord {
            id: format!("r{i}"),
            source: SourceId::new(source).unwrap(),
            label,
            patient: format!("p{i}"),
            view: "PA".into(),
            path: PathBuf::from(format!("img{i}.png")),
            format: ImageFormat::Png,
            sha256: String::new(),
            split: Some(Split::Train),
            extra: BTreeMap::new(),
        }
    }

    /// A world.json (paper signatures, 128 px) and a split manifest whose training rows hold `rows`.
    fn setup(dir: &Path, rows: &[(&str, Label, usize)]) -> (PathBuf, PathBuf) {
        let world = WorldFile {
            config: WorldConfig {
                size: 128,
                ..Default::default()
            },
            sources: paper_sources(),
        };
        let wj = dir.join("world.json");
        std::fs::write(&wj, serde_json::to_vec(&world).unwrap()).unwrap();
        let mut recs = Vec::new();
        for &(s, l, n) in rows {
            for _ in 0..n {
                recs.push(record(recs.len(), s, l));
            }
        }
        let mp = dir.join("manifest.csv");
        Manifest::new(recs).write(&mp).unwrap();
        (wj, mp)
    }

    fn plan(world: &Path, manifest: &Path, pairs: usize) -> Plan {
        let args = AuditConfoundersArgs::try_parse_from([
            "audit-confounders".as_ref(),
            "--model".as_ref(),
            "unused".as_ref(),
            "--world".as_ref(),
            world.as_os_str(),
            "--manifest".as_ref(),
            manifest.as_os_str(),
            "--pairs".as_ref(),
            pairs.to_string().as_ref(),
        ] as [&std::ffi::OsStr; 9])
        .unwrap();
        plan_from_args(&args, "crop").unwrap()
    }

    #[test]
    fn a_grid_reader_is_flagged_for_the_grid_and_nothing_else() {
        // Paper-like split: V2-COV19-NII (vertical grid) holds Covid, NIH (no grid) pneumonia. They differ in
        // every group, so all eight are tested.
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = setup(
            dir.path(),
            &[
                ("v2-cov19-nii", Label::Covid, 10),
                ("nih", Label::Pneumonia, 12),
            ],
        );
        let p = plan(&w, &m, 12);
        assert_eq!(p.preprocess_size, 128, "no pre_size column: the world size");
        let (res, rows) = run_test(&p, &GridReader, dir.path()).unwrap();
        print_table(&res);
        assert_eq!(res.len(), ConfounderKind::ALL.len());
        for r in &res {
            assert!(r.label_associated, "{}", r.kind);
            assert!(
                (r.cramers_v - 1.0).abs() < 1e-9,
                "{}: one value per class",
                r.kind
            );
            assert!(r.n >= 20, "{}: {} pairs scored", r.kind, r.n);
            let expect = r.kind == ConfounderKind::Grid;
            assert_eq!(r.flagged, expect, "{}: {}", r.kind, r.detail);
        }
        let grid = res.iter().find(|r| r.kind == ConfounderKind::Grid).unwrap();
        assert!(grid.mean_shift.unwrap() > 0.5, "{grid:?}");
        assert!(
            grid.towards_covid_mean.unwrap() > 0.5,
            "adding the grid raises P(Covid)"
        );
        assert!(
            grid.towards_pneumonia_mean.unwrap() < -0.5,
            "removing it lowers it"
        );
        // Both directions, both patterns, counterfactuals of the same patients.
        let g: Vec<&PairRow> = rows
            .iter()
            .filter(|r| r.kind == ConfounderKind::Grid)
            .collect();
        assert_eq!(g.iter().filter(|r| r.base == "nih").count(), 12);
        assert_eq!(g.iter().filter(|r| r.base == "v2-cov19-nii").count(), 12);
        assert!(
            g.iter().any(|r| r.pattern == "covid") && g.iter().any(|r| r.pattern == "pneumonia")
        );
        // Text and markers sit outside the lung crop: the counterfactual input does not change at all.
        let marker: Vec<&PairRow> = rows
            .iter()
            .filter(|r| r.kind == ConfounderKind::Marker)
            .collect();
        assert!(
            marker
                .iter()
                .all(|r| r.score_base == r.score_counterfactual)
        );
        let by_kind = |k: ConfounderKind| res.iter().find(|r| r.kind == k).unwrap();
        let marker = by_kind(ConfounderKind::Marker);
        assert_eq!(marker.status, "not_in_model_input", "{}", marker.detail);
        assert_eq!(marker.identical_inputs, marker.n);
        assert_eq!(grid.status, "followed");
        assert_eq!(grid.identical_inputs, 0, "the grid reaches the lungs");

        // The outputs: JSON with the flag list, the CSVs.
        let json = report_json(&p, &res, "grid-reader", serde_json::Value::Null);
        let out = dir.path().join("out");
        write_outputs(&out, &json, &res, &rows).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("confounders.json")).unwrap()).unwrap();
        assert_eq!(back["flagged"], serde_json::json!(["grid"]));
        let csv = std::fs::read_to_string(out.join("confounders.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + ConfounderKind::ALL.len());
        let pairs = std::fs::read_to_string(out.join("confounder_pairs.csv")).unwrap();
        assert_eq!(pairs.lines().count(), 1 + rows.len());
    }

    #[test]
    fn without_label_association_nothing_is_flagged_but_sensitivity_is_recorded() {
        // Clean-world split: both sources hold both classes, so no confounder can be a shortcut; the same
        // grid reader still moves with the grid, which the sensitivity figure shows.
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = setup(
            dir.path(),
            &[
                ("v2-cov19-nii", Label::Covid, 6),
                ("v2-cov19-nii", Label::Pneumonia, 6),
                ("nih", Label::Covid, 6),
                ("nih", Label::Pneumonia, 6),
            ],
        );
        let mut p = plan(&w, &m, 6);
        p.kinds = vec![ConfounderKind::Grid, ConfounderKind::Noise];
        let (res, _) = run_test(&p, &GridReader, dir.path()).unwrap();
        print_table(&res);
        for r in &res {
            assert!(!r.label_associated && !r.flagged, "{}", r.kind);
            assert_eq!(r.status, "not_label_associated");
            assert!(r.cramers_v < 1e-9);
        }
        let grid = res.iter().find(|r| r.kind == ConfounderKind::Grid).unwrap();
        assert!(grid.mean_abs_shift.unwrap() > 0.5, "{grid:?}");
    }

    #[test]
    fn cramers_v_and_bootstrap() {
        assert!((cramers_v(&[(10, 0), (0, 10)]) - 1.0).abs() < 1e-12);
        assert!(cramers_v(&[(5, 5), (5, 5)]).abs() < 1e-12);
        assert_eq!(cramers_v(&[(5, 5)]), 0.0);
        let v: Vec<f64> = (0..40).map(|i| 0.1 + 0.01 * (i % 5) as f64).collect();
        let (lo, hi) = bootstrap_ci(&v, 1000, 1).unwrap();
        let m = mean(&v).unwrap();
        assert!(lo <= m && m <= hi && lo > 0.1 && hi < 0.14, "{lo} {m} {hi}");
        assert!(bootstrap_ci(&[1.0], 1000, 1).is_none());
    }

    #[test]
    fn a_training_split_with_one_world_source_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (w, m) = setup(
            dir.path(),
            &[("nih", Label::Covid, 3), ("nih", Label::Pneumonia, 3)],
        );
        let e = run_test(&plan(&w, &m, 2), &GridReader, dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 source"), "{e}");
    }
}
