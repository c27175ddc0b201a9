//! [`evaluate`]: predictions → [`EvalReport`], every metric with its intervals, per model, split, source
//! and seen/unseen group, plus the comparisons and alarms.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cxr_core::{Manifest, Prediction, SourceId, Split};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::EvalError;
use crate::bootstrap::{Clusters, percentile_interval, rng_for};
use crate::delong::{DeLongAuc, PairedDeLong, UnpairedTest, delong, paired_delong, unpaired_test};
use crate::metrics::{
    Confusion, ReliabilityBin, ScoreHistogram, ScoreSummary, ThresholdRule, average_precision,
    brier, choose_threshold, ece, reliability, roc_points, score_histogram, score_summary, tpr_at,
};

/// Options of an evaluation. `Default` is the documented setting (2,000 resamples, 95%, Youden).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Bootstrap resamples (at least 2,000 recommended; 0 disables the bootstrap).
    pub resamples: usize,
    /// Seed of the bootstrap generators.
    pub seed: u64,
    /// Coverage of every interval.
    pub level: f64,
    /// How the operating threshold is chosen on the validation split.
    pub threshold_rule: ThresholdRule,
    /// Bins of the ECE and the reliability diagram.
    pub calibration_bins: usize,
    /// A set whose score standard deviation is below this raises the constant-output alarm.
    pub constant_sd: f64,
    /// A set holding fewer images than this of a class it contains is flagged `small_sample` (its figures
    /// rest on too few images to read much into; default [`MIN_PER_CLASS`]).
    #[serde(default = "default_min_per_class")]
    pub min_per_class: usize,
    /// Sources the models were trained on (from a training manifest). `None`: inferred per model from its
    /// `train` rows, if any; with neither, there is no seen/unseen breakdown.
    pub seen_sources: Option<BTreeSet<SourceId>>,
    /// Patient of each image id (from a manifest), used when a prediction's `patient` is empty.
    #[serde(skip)]
    pub patients: HashMap<String, String>,
}

/// The documented minimum of images per class below which a figure is flagged as a small sample: with fewer
/// than 10 images of a class, one image moves a sensitivity by 10 points or more and an AUC interval spans
/// most of [0, 1].
pub const MIN_PER_CLASS: usize = 10;

fn default_min_per_class() -> usize {
    MIN_PER_CLASS
}

/// Whether a set with these class counts is a small sample: a class it holds has fewer than `min` images.
pub fn is_small_sample(n_covid: usize, n_pneumonia: usize, min: usize) -> bool {
    [n_covid, n_pneumonia].iter().any(|&n| n > 0 && n < min)
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            resamples: 2000,
            seed: 2021,
            level: 0.95,
            threshold_rule: ThresholdRule::Youden,
            calibration_bins: 10,
            constant_sd: 1e-3,
            min_per_class: MIN_PER_CLASS,
            seen_sources: None,
            patients: HashMap::new(),
        }
    }
}

impl EvalOptions {
    /// Takes the seen sources and the patients from a training manifest. A source is seen when a record of
    /// the `train` split holds it; a manifest without any `split` value counts as the training set whole.
    pub fn with_train_manifest(mut self, manifest: &Manifest) -> Self {
        let has_split = manifest.records.iter().any(|r| r.split.is_some());
        let seen = manifest
            .records
            .iter()
            .filter(|r| !has_split || r.split == Some(Split::Train))
            .map(|r| r.source.clone())
            .collect();
        self.seen_sources = Some(seen);
        for r in &manifest.records {
            if !r.patient.is_empty() {
                self.patients.insert(r.id.clone(), r.patient.clone());
            }
        }
        self
    }

    fn validate(&self) -> Result<(), EvalError> {
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(EvalError::Option(format!(
                "level {} is not in (0, 1)",
                self.level
            )));
        }
        if self.calibration_bins == 0 {
            return Err(EvalError::Option("calibration_bins must be > 0".into()));
        }
        Ok(())
    }
}

/// How an interval was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalMethod {
    /// Stratified bootstrap percentile interval (patients resampled as clusters).
    #[default]
    Bootstrap,
    /// DeLong's variance, Wald interval (AUC only).
    Delong,
}

/// A value with its 95% interval and the method behind it (`{value, lo, hi, method}` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Estimate {
    /// On the full set; `None` when undefined there (e.g. AUC with one class).
    pub value: Option<f64>,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    #[serde(default)]
    pub method: IntervalMethod,
}

impl Estimate {
    fn new(value: Option<f64>, ci: Option<[f64; 2]>) -> Self {
        Self {
            value,
            lo: ci.map(|c| c[0]),
            hi: ci.map(|c| c[1]),
            method: IntervalMethod::Bootstrap,
        }
    }
}

/// Which images of a model's split a set holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "source", rename_all = "lowercase")]
pub enum Group {
    All,
    Seen,
    Unseen,
    Source(SourceId),
}

impl Group {
    pub fn label(&self) -> String {
        match self {
            Group::All => "all".into(),
            Group::Seen => "seen".into(),
            Group::Unseen => "unseen".into(),
            Group::Source(s) => format!("source={s}"),
        }
    }
}

/// Confusion-matrix metrics at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub counts: Confusion,
    pub accuracy: Estimate,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
    pub precision: Estimate,
    pub f1: Estimate,
}

/// The ROC curve of a set and its bootstrap band (vertical averaging on an FPR grid).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RocCurve {
    /// (FPR, TPR) at each distinct score, from (0, 0) to (1, 1).
    pub points: Vec<[f64; 2]>,
    pub grid: Vec<f64>,
    pub band_lo: Vec<f64>,
    pub band_hi: Vec<f64>,
}

/// What is wrong with a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmKind {
    /// AUC below 0.5: the model ranks this set the wrong way round.
    Inverted,
    /// The scores barely vary.
    ConstantScores,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub kind: AlarmKind,
    /// The set's key.
    pub set: String,
    /// Always true since an `inverted` alarm needs the whole interval below 0.5 (kept for readers of older
    /// files, where it told a chance dip from a real inversion).
    pub significant: bool,
    pub message: String,
}

/// Every metric of one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    /// `model/split/group`, unique in a report.
    pub key: String,
    pub model: String,
    pub split: Split,
    pub group: Group,
    pub sources: Vec<SourceId>,
    pub n: usize,
    pub n_covid: usize,
    pub n_pneumonia: usize,
    /// Resampling units (patients, or images without one).
    pub n_clusters: usize,
    /// A class of this set has fewer than `options.min_per_class` images: every figure of the set rests on
    /// a small sample.
    #[serde(default)]
    pub small_sample: bool,
    pub auc: Estimate,
    pub delong: Option<DeLongAuc>,
    pub average_precision: Estimate,
    pub brier: Estimate,
    pub ece: Estimate,
    /// At the threshold chosen on the model's validation split.
    pub at_val_threshold: OperatingPoint,
    /// At 0.5, as the paper reports.
    pub at_half: OperatingPoint,
    pub scores: Option<ScoreSummary>,
    pub roc: RocCurve,
    pub reliability: Vec<ReliabilityBin>,
    pub histogram: ScoreHistogram,
    /// Bootstrap resamples run for this set.
    pub resamples: usize,
    pub alarms: Vec<Alarm>,
}

/// How a model's operating threshold was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    pub value: f64,
    pub rule: ThresholdRule,
    /// `val` when chosen on the validation split; `default` (0.5) when it has no images of both classes.
    pub from: String,
}

/// Seen vs unseen sources of one model on one split (independent sets: z-test on DeLong variances).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenUnseen {
    pub model: String,
    pub split: Split,
    pub auc_seen: f64,
    pub auc_unseen: f64,
    /// Difference seen − unseen.
    pub test: UnpairedTest,
}

/// Two models on the same images (paired DeLong test, on the ids both scored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    pub model_a: String,
    pub model_b: String,
    pub split: Split,
    pub group: Group,
    pub n: usize,
    /// Difference a − b.
    pub test: PairedDeLong,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub model: String,
    pub threshold: ThresholdChoice,
    /// Sources counted as seen for this model, and where that came from (`manifest`, `train rows`).
    pub seen_sources: Option<Vec<SourceId>>,
    pub seen_from: Option<String>,
    pub sets: Vec<SetReport>,
    pub seen_vs_unseen: Vec<SeenUnseen>,
    /// Why Brier, ECE and the reliability bins are missing: the model's scores are not probabilities (some
    /// lie outside [0, 1]: logits, `decision_function` values). Rank metrics (AUC, AP, DeLong) take any
    /// real score and are reported as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability_metrics_skipped: Option<String>,
}

/// The whole evaluation; serialised as `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub options: EvalOptions,
    pub models: Vec<ModelReport>,
    pub paired: Vec<PairedComparison>,
    /// Every alarm of every set, for a summary.
    pub alarms: Vec<Alarm>,
    /// Rows outside the binary task (label `normal`), left out.
    pub excluded_rows: usize,
}

impl EvalReport {
    /// The set of `model` on `split` and `group`.
    pub fn set(&self, model: &str, split: Split, group: &Group) -> Option<&SetReport> {
        self.models
            .iter()
            .find(|m| m.model == model)?
            .sets
            .iter()
            .find(|s| s.split == split && &s.group == group)
    }
}

/// One row of the binary task.
#[derive(Debug, Clone)]
struct Row<'a> {
    // Borrowed from the predictions (and the options' patients): a million-row table is not copied.
    id: &'a str,
    source: &'a SourceId,
    split: Split,
    positive: bool,
    score: f64,
    patient: &'a str,
}

const ROC_GRID: usize = 101;
const HISTOGRAM_BINS: usize = 20;

/// Evaluates predictions (one or several models, told apart by `model`). Rows labelled `normal` are
/// outside the binary task and are counted in `excluded_rows`.
pub fn evaluate(
    predictions: &[Prediction],
    options: &EvalOptions,
) -> Result<EvalReport, EvalError> {
    options.validate()?;
    let mut by_model: BTreeMap<&str, Vec<Row>> = BTreeMap::new();
    let mut excluded = 0;
    let mut seen_ids: HashSet<u128> = HashSet::new();
    for p in predictions {
        let Some(target) = p.label.target() else {
            excluded += 1;
            continue;
        };
        if !seen_ids.insert(cxr_core::key_digest(&[&p.model, &p.id])) {
            return Err(EvalError::Input {
                path: "predictions".into(),
                message: format!("image `{}` scored twice by model `{}`", p.id, p.model),
            });
        }
        let patient = if p.patient.is_empty() {
            options.patients.get(&p.id).map_or("", String::as_str)
        } else {
            p.patient.as_str()
        };
        by_model.entry(p.model.as_str()).or_default().push(Row {
            id: p.id.as_str(),
            source: &p.source,
            split: p.split,
            positive: target == 1,
            score: p.score,
            patient,
        });
    }
    if by_model.is_empty() {
        return Err(EvalError::Empty(format!(
            "{} rows, none labelled covid or pneumonia",
            predictions.len()
        )));
    }
    if excluded > 0 {
        tracing::info!(excluded, "rows outside the binary task (normal) left out");
    }

    // Plan every set first (model, split, group, rows, threshold), then compute them in parallel.
    let mut plans = Vec::new();
    let mut model_meta = Vec::new();
    for (model, rows) in &by_model {
        let outside = rows
            .iter()
            .filter(|r| !(0.0..=1.0).contains(&r.score))
            .count();
        let skipped = (outside > 0).then(|| {
            let (lo, hi) = rows.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| {
                (a.min(r.score), b.max(r.score))
            });
            format!(
                "{model}: {outside} of {} scores lie outside [0, 1] (range {lo:.4} to {hi:.4}): not probabilities, \
                 so Brier, ECE and the reliability diagram are skipped; AUC, AP and DeLong rank the scores as given",
                rows.len()
            )
        });
        let val: Vec<&Row> = rows.iter().filter(|r| r.split == Split::Val).collect();
        let vs: Vec<f64> = val.iter().map(|r| r.score).collect();
        let vp: Vec<bool> = val.iter().map(|r| r.positive).collect();
        let threshold = match choose_threshold(&vs, &vp, options.threshold_rule) {
            Some(t) => ThresholdChoice {
                value: t,
                rule: options.threshold_rule,
                from: "val".into(),
            },
            None => {
                tracing::warn!(
                    model,
                    "no validation images of both classes: operating threshold 0.5"
                );
                ThresholdChoice {
                    value: 0.5,
                    rule: options.threshold_rule,
                    from: "default".into(),
                }
            }
        };
        let (seen, seen_from) = match &options.seen_sources {
            Some(s) => (Some(s.clone()), Some("manifest".to_string())),
            None => {
                let s: BTreeSet<SourceId> = rows
                    .iter()
                    .filter(|r| r.split == Split::Train)
                    .map(|r| r.source.clone())
                    .collect();
                if s.is_empty() {
                    (None, None)
                } else {
                    (Some(s), Some("train rows".to_string()))
                }
            }
        };
        let splits: BTreeSet<Split> = rows.iter().map(|r| r.split).collect();
        for &split in &splits {
            let in_split: Vec<&Row> = rows.iter().filter(|r| r.split == split).collect();
            let mut groups: Vec<(Group, Vec<&Row>)> = vec![(Group::All, in_split.clone())];
            if split != Split::Train {
                if let Some(seen) = &seen {
                    let (s, u): (Vec<&Row>, Vec<&Row>) =
                        in_split.iter().partition(|r| seen.contains(r.source));
                    groups.push((Group::Seen, s));
                    groups.push((Group::Unseen, u));
                }
                let sources: BTreeSet<&SourceId> = in_split.iter().map(|r| r.source).collect();
                for source in sources {
                    let rows = in_split
                        .iter()
                        .copied()
                        .filter(|r| r.source == source)
                        .collect();
                    groups.push((Group::Source(source.clone()), rows));
                }
            }
            for (group, rows) in groups {
                if !rows.is_empty() {
                    plans.push((
                        *model,
                        split,
                        group,
                        rows,
                        threshold.value,
                        skipped.is_none(),
                    ));
                }
            }
        }
        model_meta.push((
            model.to_string(),
            threshold,
            seen.map(|s| s.into_iter().collect::<Vec<_>>()),
            seen_from,
            skipped,
        ));
    }
    let sets: Vec<SetReport> = plans
        .par_iter()
        .map(|(model, split, group, rows, threshold, probabilities)| {
            evaluate_set(
                model,
                *split,
                group,
                rows,
                *threshold,
                *probabilities,
                options,
            )
        })
        .collect();

    let mut models: Vec<ModelReport> = model_meta
        .into_iter()
        .map(
            |(model, threshold, seen_sources, seen_from, skipped)| ModelReport {
                sets: sets.iter().filter(|s| s.model == model).cloned().collect(),
                model,
                threshold,
                seen_sources,
                seen_from,
                seen_vs_unseen: Vec::new(),
                probability_metrics_skipped: skipped,
            },
        )
        .collect();
    for m in &mut models {
        let splits: BTreeSet<Split> = m.sets.iter().map(|s| s.split).collect();
        for split in splits {
            let find = |g: Group| {
                m.sets
                    .iter()
                    .find(|s| s.split == split && s.group == g)
                    .and_then(|s| s.delong.clone())
            };
            if let (Some(a), Some(b)) = (find(Group::Seen), find(Group::Unseen)) {
                m.seen_vs_unseen.push(SeenUnseen {
                    model: m.model.clone(),
                    split,
                    auc_seen: a.auc,
                    auc_unseen: b.auc,
                    test: unpaired_test(&a, &b, options.level),
                });
            }
        }
    }

    let paired = paired_comparisons(&by_model, options.level);
    let alarms = models
        .iter()
        .flat_map(|m| m.sets.iter().flat_map(|s| s.alarms.iter().cloned()))
        .collect::<Vec<_>>();
    // Callers say the alarms (xtask prints them once); logging them here too said each twice.
    for a in &alarms {
        tracing::debug!(set = a.set, "{}", a.message);
    }
    Ok(EvalReport {
        options: options.clone(),
        models,
        paired,
        alarms,
        excluded_rows: excluded,
    })
}

/// The statistics computed on the full set and on every resample, in this order.
const N_STATS: usize = 14;

/// `bins`: calibration bins, `None` when the scores are not probabilities (no Brier, no ECE).
fn stats(
    scores: &[f64],
    pos: &[bool],
    threshold: f64,
    bins: Option<usize>,
) -> [Option<f64>; N_STATS] {
    let at_t = Confusion::at(scores, pos, threshold);
    let at_h = Confusion::at(scores, pos, 0.5);
    [
        cxr_core::auc::roc_auc(scores, pos),
        average_precision(scores, pos),
        bins.and_then(|_| brier(scores, pos)),
        bins.and_then(|b| ece(scores, pos, b)),
        at_t.accuracy(),
        at_t.sensitivity(),
        at_t.specificity(),
        at_t.precision(),
        at_t.f1(),
        at_h.accuracy(),
        at_h.sensitivity(),
        at_h.specificity(),
        at_h.precision(),
        at_h.f1(),
    ]
}

fn evaluate_set(
    model: &str,
    split: Split,
    group: &Group,
    rows: &[&Row],
    threshold: f64,
    probabilities: bool,
    options: &EvalOptions,
) -> SetReport {
    let bins = probabilities.then_some(options.calibration_bins);
    let key = format!("{model}/{split}/{}", group.label());
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let pos: Vec<bool> = rows.iter().map(|r| r.positive).collect();
    let full = stats(&scores, &pos, threshold, bins);
    let grid: Vec<f64> = (0..ROC_GRID)
        .map(|i| i as f64 / (ROC_GRID - 1) as f64)
        .collect();
    let points = roc_points(&scores, &pos);

    // Bootstrap: every statistic and the ROC curve on the same resamples.
    let keys: Vec<&str> = rows.iter().map(|r| r.patient).collect();
    let clusters = Clusters::new(&pos, &keys);
    let columns = |n: usize| -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| Vec::with_capacity(options.resamples))
            .collect()
    };
    let mut samples = columns(N_STATS);
    let mut band = if points.is_empty() {
        Vec::new()
    } else {
        columns(ROC_GRID)
    };
    let mut rng = rng_for(options.seed, &key);
    let (mut idx, mut s, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.resamples {
        clusters.resample(&mut rng, &mut idx);
        s.clear();
        p.clear();
        s.extend(idx.iter().map(|&i| scores[i]));
        p.extend(idx.iter().map(|&i| pos[i]));
        for (k, v) in stats(&s, &p, threshold, bins).into_iter().enumerate() {
            if let Some(v) = v {
                samples[k].push(v);
            }
        }
        if !band.is_empty() {
            for (col, t) in band.iter_mut().zip(tpr_at(&roc_points(&s, &p), &grid)) {
                col.push(t);
            }
        }
    }
    let level = options.level;
    let est: Vec<Estimate> = full
        .iter()
        .zip(samples.iter_mut())
        .map(|(&v, smp)| {
            let ci = v.and_then(|_| percentile_interval(smp, level));
            Estimate::new(v, ci)
        })
        .collect();
    let (band_lo, band_hi): (Vec<f64>, Vec<f64>) = band
        .iter_mut()
        .filter_map(|col| percentile_interval(col, level).map(|[a, b]| (a, b)))
        .unzip();
    let op = |t: f64, o: usize| OperatingPoint {
        threshold: t,
        counts: Confusion::at(&scores, &pos, t),
        accuracy: est[o],
        sensitivity: est[o + 1],
        specificity: est[o + 2],
        precision: est[o + 3],
        f1: est[o + 4],
    };
    let delong = delong(&scores, &pos, level);
    let summary = score_summary(&scores);
    let mut alarms = Vec::new();
    // Inverted only when the whole 95% interval lies below chance: an AUC under 0.5 whose interval holds 0.5
    // is noise (a handful of test images), not a model ranking the set the wrong way round.
    if let Some(auc) = full[0].filter(|&a| a < 0.5) {
        let (lo, hi) = match &delong {
            Some(d) => (d.lo, d.hi),
            None => (est[0].lo.unwrap_or(auc), est[0].hi.unwrap_or(auc)),
        };
        if hi < 0.5 {
            alarms.push(Alarm {
                kind: AlarmKind::Inverted,
                set: key.clone(),
                significant: true,
                message: format!(
                    "{key}: AUC {auc:.3} (95% CI {lo:.3}-{hi:.3}) is below chance, the whole interval under 0.5: \
                     the model ranks this set inverted"
                ),
            });
        }
    }
    // Only where both classes are present: a single-class set (one source of the paper's designs) scored
    // near 0 or 1 throughout is a confident model, not a broken one.
    let both_classes = pos.iter().any(|&b| b) && pos.iter().any(|&b| !b);
    if let Some(sm) = summary
        .as_ref()
        .filter(|sm| both_classes && sm.sd < options.constant_sd)
    {
        alarms.push(Alarm {
            kind: AlarmKind::ConstantScores,
            set: key.clone(),
            significant: true,
            message: format!(
                "{key}: scores barely vary (sd {:.2e}, range {:.4}-{:.4}, {} distinct over {} images): \
                 the model outputs a near-constant value here",
                sm.sd,
                sm.min,
                sm.max,
                sm.distinct,
                scores.len()
            ),
        });
    }
    let n_covid = pos.iter().filter(|&&b| b).count();
    SetReport {
        model: model.to_string(),
        split,
        group: group.clone(),
        sources: rows
            .iter()
            .map(|r| r.source.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        n: rows.len(),
        n_covid,
        n_pneumonia: rows.len() - n_covid,
        small_sample: is_small_sample(n_covid, rows.len() - n_covid, options.min_per_class),
        n_clusters: clusters.n_clusters(),
        auc: est[0],
        delong,
        average_precision: est[1],
        brier: est[2],
        ece: est[3],
        at_val_threshold: op(threshold, 4),
        at_half: op(0.5, 9),
        scores: summary,
        roc: RocCurve {
            points: points.iter().map(|&(a, b)| [a, b]).collect(),
            grid: if band_lo.is_empty() { Vec::new() } else { grid },
            band_lo,
            band_hi,
        },
        reliability: bins.map_or_else(Vec::new, |b| reliability(&scores, &pos, b)),
        histogram: score_histogram(&scores, &pos, HISTOGRAM_BINS),
        resamples: options.resamples,
        alarms,
        key,
    }
}

/// Paired DeLong tests between every two models on each split, over the images both models scored (same
/// id, same split, same label).
fn paired_comparisons(by_model: &BTreeMap<&str, Vec<Row>>, level: f64) -> Vec<PairedComparison> {
    let names: Vec<&str> = by_model.keys().copied().collect();
    let mut out = Vec::new();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let rows_b: HashMap<(&str, Split), &Row> =
                by_model[*b].iter().map(|r| ((r.id, r.split), r)).collect();
            let splits: BTreeSet<Split> = by_model[*a].iter().map(|r| r.split).collect();
            for split in splits {
                let pairs: Vec<(&Row, &Row)> = by_model[*a]
                    .iter()
                    .filter(|r| r.split == split)
                    .filter_map(|ra| {
                        rows_b
                            .get(&(ra.id, split))
                            .filter(|rb| rb.positive == ra.positive)
                            .map(|rb| (ra, *rb))
                    })
                    .collect();
                if pairs.is_empty() {
                    continue;
                }
                let sa: Vec<f64> = pairs.iter().map(|(x, _)| x.score).collect();
                let sb: Vec<f64> = pairs.iter().map(|(_, y)| y.score).collect();
                let pos: Vec<bool> = pairs.iter().map(|(x, _)| x.positive).collect();
                if let Some(test) = paired_delong(&sa, &sb, &pos, level) {
                    out.push(PairedComparison {
                        model_a: a.to_string(),
                        model_b: b.to_string(),
                        split,
                        group: Group::All,
                        n: pairs.len(),
                        test,
                    });
                }
            }
        }
    }
    out
}
