//! The counterfactual confounder test: does the model's score follow a planted confounder?
//!
//! Possible only where the confounders are known and can be swapped one at a time: a synthetic world. For
//! every confounder group whose value differs between two training sources, pairs of model inputs of the
//! same patient, pathology and noise stream are rendered (by a [`Counterfactuals`] implementation: xtask's
//! wraps `cxr_synth::render_counterfactual` and the pipeline's input path): the base source's own image and
//! the same image with that one group drawn from the donor source. A [`Scorer`] scores both. The paired score
//! shift, signed towards the donor's class, says whether the model's output follows that group: flagged when
//! its bootstrap 95 % CI (`cxr_core::stats`, the workspace's one bootstrap) excludes 0 and |mean shift| >=
//! the threshold (0.05 in probability by default), and only where the group is label-associated in the
//! training split (a confounder the label does not follow cannot be a shortcut; its sensitivity, mean
//! |shift|, is still reported).
//!
//! This module knows no world format and no renderer: the test is the same algorithm whatever draws the
//! images, and it sees the model only through [`Scorer`], so a foreign (ONNX) model or a score table is
//! tested exactly like our own.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use cxr_core::{Grey8, Scorer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{ExplainError, Result};

/// The pathology drawn into a rendered patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PairPattern {
    Covid,
    Pneumonia,
}

impl PairPattern {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Covid => "covid",
            Self::Pneumonia => "pneumonia",
        }
    }
}

/// What the test needs from a world: the confounder groups' values per source and model inputs of base and
/// counterfactual images. Sources are indices into [`ConfounderPlan::sources`].
pub trait Counterfactuals: Sync {
    /// The group's values for a source (recorded in the report).
    fn values(&self, kind: &str, source: usize) -> serde_json::Value;
    /// Whether the two sources differ in this group.
    fn differs(&self, kind: &str, base: usize, donor: usize) -> bool;
    /// The base source's own image as the model reads it; `None` when the input path rejects it (e.g. the
    /// lung-box crop rule).
    fn base(&self, base: usize, pattern: PairPattern, seed: u64) -> Result<Option<Grey8>>;
    /// The same patient with `kind` drawn from the donor source, as the model reads it.
    fn counterfactual(
        &self,
        base: usize,
        donor: usize,
        kind: &str,
        pattern: PairPattern,
        seed: u64,
    ) -> Result<Option<Grey8>>;
}

/// Everything the test needs besides the world and the scorer.
#[derive(Debug, Clone)]
pub struct ConfounderPlan {
    /// Training images per source: (Covid, pneumonia), every training source of the split.
    pub train: BTreeMap<String, (usize, usize)>,
    /// The training sources the world knows, in the order [`Counterfactuals`] indexes them.
    pub sources: Vec<String>,
    /// Confounder groups to test, in report order.
    pub kinds: Vec<String>,
    /// Pairs per group and direction.
    pub pairs: usize,
    /// Smallest |mean shift| that flags.
    pub threshold: f64,
    /// Bootstrap resamples of the mean shift's CI.
    pub bootstrap: usize,
    pub seed: u64,
    /// Images per scorer call.
    pub batch_size: usize,
}

/// One rendered pair and its scores.
#[derive(Debug, Clone, Serialize)]
pub struct PairRow {
    pub kind: String,
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
pub struct KindResult {
    pub kind: String,
    /// The group's values per training source.
    pub values: BTreeMap<String, serde_json::Value>,
    /// Cramér's V of (group value x label) over the training rows; 0 when one value covers every row.
    pub cramers_v: f64,
    /// Some pair of training sources differs in this group and in its Covid share by >= 0.5.
    pub label_associated: bool,
    /// Ordered (base, donor) pairs rendered.
    pub pairs: Vec<(String, String)>,
    pub n: usize,
    /// Pairs dropped because the input path rejected an image (empty or small lung box).
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
pub fn mix(seed: u64, a: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn covid_share(train: &BTreeMap<String, (usize, usize)>, s: &str) -> f64 {
    let (c, p) = train.get(s).copied().unwrap_or((0, 0));
    c as f64 / (c + p).max(1) as f64
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Percentile bootstrap 95 % CI of the mean (rows resampled independently: pairs are the unit).
fn bootstrap_ci(v: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if v.len() < 2 || resamples < 10 {
        return None;
    }
    let keys = vec![""; v.len()];
    let clusters = cxr_core::stats::Clusters::new(&vec![false; v.len()], &keys);
    let (ci, _) = cxr_core::stats::bootstrap_interval(
        &clusters,
        resamples,
        ChaCha8Rng::seed_from_u64(seed),
        0.95,
        |idx| Some(idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64),
    );
    ci.map(|[lo, hi]| (lo, hi))
}

/// Scores `images` through `scorer` in batches of `batch_size`, checking the scorer's contract (one finite
/// score in [0, 1] per image).
pub fn score_all(scorer: &dyn Scorer, images: &[Grey8], batch_size: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let s = scorer.score(chunk, false)?;
        if s.scores.len() != chunk.len() {
            return Err(ExplainError::invalid(
                scorer.name(),
                format!(
                    "the scorer returned {} scores for {} images",
                    s.scores.len(),
                    chunk.len()
                ),
            ));
        }
        if let Some(bad) = s
            .scores
            .iter()
            .find(|v| !v.is_finite() || !(0.0..=1.0).contains(*v))
        {
            return Err(ExplainError::invalid(
                scorer.name(),
                format!("score {bad} is not a probability in [0, 1]"),
            ));
        }
        out.extend(s.scores);
    }
    Ok(out)
}

/// Every image's raw Covid-19 logit ([`Scorer::logits`]), in batches of `batch_size`; a wrong count or a
/// non-finite logit is an error naming the model.
pub fn logit_all(scorer: &dyn Scorer, images: &[Grey8], batch_size: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let l = scorer.logits(chunk)?;
        if l.len() != chunk.len() {
            return Err(ExplainError::invalid(
                scorer.name(),
                format!(
                    "the scorer returned {} logits for {} images",
                    l.len(),
                    chunk.len()
                ),
            ));
        }
        if let Some(bad) = l.iter().find(|v| !v.is_finite()) {
            return Err(ExplainError::invalid(
                scorer.name(),
                format!("logit {bad} is not finite"),
            ));
        }
        out.extend(l);
    }
    Ok(out)
}

/// One pair to render.
struct Job {
    kind: usize,
    base: usize,
    donor: usize,
    pattern: PairPattern,
    seed: u64,
    /// +1 when the donor leans more to Covid than the base, -1 when less, +1 when neither (no association).
    sign: f64,
}

/// The counterfactual confounder test of `scorer` on the pairs `world` renders.
pub fn confounder_test(
    plan: &ConfounderPlan,
    world: &dyn Counterfactuals,
    scorer: &dyn Scorer,
) -> Result<(Vec<KindResult>, Vec<PairRow>)> {
    let specs = &plan.sources;
    if specs.len() < 2 {
        return Err(ExplainError::invalid(
            "confounder test",
            format!(
                "the training split holds {} source(s) of the world ({}); the test swaps confounders between two",
                specs.len(),
                plan.train.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let share: Vec<f64> = specs.iter().map(|s| covid_share(&plan.train, s)).collect();
    let mut jobs: Vec<Job> = Vec::new();
    let mut results: Vec<KindResult> = Vec::new();
    for (ki, kind) in plan.kinds.iter().enumerate() {
        let values: BTreeMap<String, serde_json::Value> = (0..specs.len())
            .map(|s| (specs[s].clone(), world.values(kind, s)))
            .collect();
        // Cramér's V over training rows, sources grouped by their value of this group.
        let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (s, id) in specs.iter().enumerate() {
            let (c, p) = plan.train.get(id).copied().unwrap_or((0, 0));
            let g = groups.entry(world.values(kind, s).to_string()).or_default();
            g.0 += c;
            g.1 += p;
        }
        let table: Vec<Vec<usize>> = groups.values().map(|&(c, p)| vec![c, p]).collect();
        let v = cxr_core::stats::cramers_v(&table).unwrap_or(0.0);
        // Ordered pairs that differ in this group; label-associated ones are those whose Covid shares differ by
        // at least 0.5 (in the paper world: one Covid and one pneumonia source).
        let mut differing = Vec::new();
        let mut associated = Vec::new();
        for b in 0..specs.len() {
            for d in 0..specs.len() {
                if b != d && world.differs(kind, b, d) {
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
            kind: kind.clone(),
            values,
            cramers_v: v,
            label_associated,
            pairs: chosen
                .iter()
                .map(|&(b, d)| (specs[b].clone(), specs[d].clone()))
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
                    PairPattern::Covid
                } else {
                    PairPattern::Pneumonia
                };
                let sign = if label_associated && share[d] < share[b] {
                    -1.0
                } else {
                    1.0
                };
                jobs.push(Job {
                    kind: ki,
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
    let mut base_keys: Vec<(usize, u64, PairPattern)> =
        jobs.iter().map(|j| (j.base, j.seed, j.pattern)).collect();
    base_keys.sort_unstable();
    base_keys.dedup();
    let bases: HashMap<(usize, u64, PairPattern), Option<Grey8>> = base_keys
        .par_iter()
        .map(|&(b, seed, pattern)| Ok(((b, seed, pattern), world.base(b, pattern, seed)?)))
        .collect::<Result<_>>()?;
    let cfs: Vec<Option<Grey8>> = jobs
        .par_iter()
        .map(|j| world.counterfactual(j.base, j.donor, &plan.kinds[j.kind], j.pattern, j.seed))
        .collect::<Result<_>>()?;

    // Score every kept base and counterfactual in one pass.
    let base_index: BTreeMap<(usize, u64, PairPattern), usize> = base_keys
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
        match (cf, base_index.contains_key(&(j.base, j.seed, j.pattern))) {
            (Some(img), true) => {
                cf_index.push(Some(images.len()));
                images.push(img.clone());
            }
            _ => cf_index.push(None),
        }
    }
    let scores = score_all(scorer, &images, plan.batch_size)?;

    let mut rows = Vec::new();
    for (j, ci) in jobs.iter().zip(&cf_index) {
        let k = &mut results[j.kind];
        let Some(ci) = ci else {
            k.rejected += 1;
            continue;
        };
        let bi = base_index[&(j.base, j.seed, j.pattern)];
        if images[bi] == images[*ci] {
            k.identical_inputs += 1;
        }
        let (sb, sc) = (scores[bi], scores[*ci]);
        rows.push(PairRow {
            kind: plan.kinds[j.kind].clone(),
            base: specs[j.base].clone(),
            donor: specs[j.donor].clone(),
            pattern: j.pattern.as_str(),
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

/// `confounders.json`'s value. `input_path` describes how the world's images became model inputs;
/// `extra` records the invocation (world, manifest, model).
/// When a confounder group counts as followed by the model.
pub const FLAG_RULE: &str = "label-associated in the training split, bootstrap 95% CI of the mean shift excludes 0, and |mean shift| >= threshold";

/// The test's one-line verdict on `results`.
pub fn verdict_of(results: &[KindResult]) -> &'static str {
    if results.iter().any(|r| r.flagged) {
        "follows planted confounders"
    } else {
        "no planted confounder followed"
    }
}

pub fn report_json(
    plan: &ConfounderPlan,
    results: &[KindResult],
    model: &str,
    input_path: serde_json::Value,
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
        "flag_rule": FLAG_RULE,
        "input_path": input_path,
        "training_sources": plan.train.iter().map(|(s, (c, p))| serde_json::json!({
            "source": s, "covid": c, "pneumonia": p, "in_world": plan.sources.contains(s),
        })).collect::<Vec<_>>(),
        "confounders": results,
        "flagged": flagged,
        "verdict": verdict_of(results),
        "extra": extra,
    })
}

fn csv_bytes(
    path: &Path,
    write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>,
) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ExplainError::Csv {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    };
    write(&mut w).map_err(err)?;
    w.into_inner()
        .map_err(|e| ExplainError::invalid(path.display().to_string(), e.to_string()))
}

/// Writes `confounders.json`, `confounders.csv` (one row per group) and `confounder_pairs.csv` (one row per
/// scored pair) into `out`, atomically.
pub fn write_confounder_outputs(
    out: &Path,
    json: &serde_json::Value,
    results: &[KindResult],
    rows: &[PairRow],
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|source| ExplainError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let kinds_path = out.join("confounders.csv");
    let kinds = csv_bytes(&kinds_path, |w| {
        w.write_record([
            "kind",
            "label_associated",
            "cramers_v",
            "n",
            "rejected",
            "identical_inputs",
            "mean_shift",
            "ci_low",
            "ci_high",
            "towards_covid_mean",
            "towards_pneumonia_mean",
            "mean_abs_shift",
            "flagged",
            "status",
        ])?;
        for r in results {
            w.write_record([
                r.kind.clone(),
                r.label_associated.to_string(),
                format!("{:.4}", r.cramers_v),
                r.n.to_string(),
                r.rejected.to_string(),
                r.identical_inputs.to_string(),
                f(r.mean_shift),
                f(r.ci_low),
                f(r.ci_high),
                f(r.towards_covid_mean),
                f(r.towards_pneumonia_mean),
                f(r.mean_abs_shift),
                r.flagged.to_string(),
                r.status.to_string(),
            ])?;
        }
        Ok(())
    })?;
    let pairs_path = out.join("confounder_pairs.csv");
    let pairs = csv_bytes(&pairs_path, |w| {
        w.write_record([
            "kind",
            "base",
            "donor",
            "pattern",
            "seed",
            "score_base",
            "score_counterfactual",
            "shift",
        ])?;
        for p in rows {
            w.write_record([
                p.kind.clone(),
                p.base.clone(),
                p.donor.clone(),
                p.pattern.to_string(),
                p.seed.to_string(),
                format!("{:.6}", p.score_base),
                format!("{:.6}", p.score_counterfactual),
                format!("{:.6}", p.shift),
            ])?;
        }
        Ok(())
    })?;
    let json_path = out.join("confounders.json");
    let json_bytes = serde_json::to_vec_pretty(json)
        .map_err(|e| ExplainError::invalid(json_path.display().to_string(), e.to_string()))?;
    cxr_core::fsutil::write_atomic(&pairs_path, &pairs)?;
    cxr_core::fsutil::write_atomic(&kinds_path, &kinds)?;
    cxr_core::fsutil::write_atomic(&json_path, &json_bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_core::{ScoreError, Scored};

    /// A world of flat images: a source's "tint" group sets the brightness, the other group changes nothing.
    struct Tints(Vec<u8>);

    impl Counterfactuals for Tints {
        fn values(&self, kind: &str, s: usize) -> serde_json::Value {
            match kind {
                "tint" => serde_json::json!(self.0[s]),
                _ => serde_json::json!(0),
            }
        }
        fn differs(&self, kind: &str, b: usize, d: usize) -> bool {
            kind == "tint" && self.0[b] != self.0[d]
        }
        fn base(&self, b: usize, _: PairPattern, seed: u64) -> Result<Option<Grey8>> {
            let v = self.0[b].saturating_add((seed % 7) as u8);
            Ok(Some(Grey8::new(8, 8, vec![v; 64])?))
        }
        fn counterfactual(
            &self,
            b: usize,
            d: usize,
            kind: &str,
            p: PairPattern,
            seed: u64,
        ) -> Result<Option<Grey8>> {
            if kind == "tint" {
                self.base(d, p, seed)
            } else {
                self.base(b, p, seed)
            }
        }
    }

    /// Reads brightness only.
    struct Bright;
    impl Scorer for Bright {
        fn name(&self) -> &str {
            "bright"
        }
        fn input_size(&self) -> usize {
            8
        }
        fn has_features(&self) -> bool {
            false
        }
        fn score(&self, images: &[Grey8], _: bool) -> std::result::Result<Scored, ScoreError> {
            Ok(Scored {
                scores: images.iter().map(|g| g.data[0] as f64 / 255.0).collect(),
                features: None,
            })
        }
    }

    #[test]
    fn a_brightness_reader_follows_the_tint_and_nothing_else() {
        let plan = ConfounderPlan {
            train: [("a".to_string(), (10, 0)), ("b".to_string(), (0, 10))].into(),
            sources: vec!["a".into(), "b".into()],
            kinds: vec!["tint".into(), "other".into()],
            pairs: 8,
            threshold: 0.05,
            bootstrap: 500,
            seed: 3,
            batch_size: 5,
        };
        let (res, rows) = confounder_test(&plan, &Tints(vec![200, 40]), &Bright).unwrap();
        assert_eq!(res[0].status, "followed", "{}", res[0].detail);
        assert!(res[0].mean_shift.unwrap() > 0.5);
        assert!((res[0].cramers_v - 1.0).abs() < 1e-12);
        assert_eq!(res[1].status, "same_in_every_source");
        assert_eq!(rows.len(), 16);
        let dir = tempfile::tempdir().unwrap();
        let json = report_json(
            &plan,
            &res,
            "bright",
            serde_json::Value::Null,
            serde_json::Value::Null,
        );
        write_confounder_outputs(dir.path(), &json, &res, &rows).unwrap();
        let pairs = std::fs::read_to_string(dir.path().join("confounder_pairs.csv")).unwrap();
        assert_eq!(pairs.lines().count(), 17);
        // A scorer that breaks its contract is an error naming it.
        struct Bad;
        impl Scorer for Bad {
            fn name(&self) -> &str {
                "bad.onnx"
            }
            fn input_size(&self) -> usize {
                8
            }
            fn has_features(&self) -> bool {
                false
            }
            fn score(&self, images: &[Grey8], _: bool) -> std::result::Result<Scored, ScoreError> {
                Ok(Scored {
                    scores: vec![f64::NAN; images.len()],
                    features: None,
                })
            }
        }
        let e = confounder_test(&plan, &Tints(vec![200, 40]), &Bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.onnx") && e.contains("NaN"), "{e}");
    }
}
