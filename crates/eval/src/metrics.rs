//! Point metrics of one set of binary predictions (`positives[i]` = Covid-19).
//!
//! Conventions (each checked against scikit-learn in `tests/sklearn.rs`):
//! - an image is predicted positive iff `score >= threshold`;
//! - ROC AUC: [`cxr_core::auc::roc_auc`] (Mann-Whitney with ties counted one half, = `roc_auc_score`);
//! - average precision: scikit-learn's step sum `Σ (R_k − R_{k−1}) P_k` over the distinct scores in
//!   descending order (`average_precision_score`, no interpolation);
//! - Brier score: mean of `(score − target)²` (`brier_score_loss`);
//! - expected calibration error: 10 equal-width bins on [0, 1] (bin k holds [k/10, (k+1)/10), the last one
//!   also 1.0), `Σ n_bin / n · |mean(target) − mean(score)|` over non-empty bins;
//! - a ratio whose denominator is zero (sensitivity without positives, precision without predicted
//!   positives, ...) is `None`, never 0 or NaN.

use serde::{Deserialize, Serialize};

/// Counts of a confusion matrix at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Confusion {
    /// Counts at `threshold` (positive iff `score >= threshold`).
    pub fn at(scores: &[f64], positives: &[bool], threshold: f64) -> Self {
        let mut c = Confusion::default();
        for (&s, &p) in scores.iter().zip(positives) {
            match (s >= threshold, p) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    pub fn n(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }
    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.tp + self.tn, self.n())
    }
    /// Recall of Covid-19 (true positive rate).
    pub fn sensitivity(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// Recall of pneumonia (true negative rate).
    pub fn specificity(&self) -> Option<f64> {
        ratio(self.tn, self.tn + self.fp)
    }
    /// Positive predictive value.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// Indices sorted by descending score (ties in input order).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Cumulative (score, true positives, false positives) after each group of equal scores, in descending
/// score order: the operating points of every observed threshold.
fn threshold_sweep(scores: &[f64], positives: &[bool]) -> Vec<(f64, usize, usize)> {
    let order = order_desc(scores);
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if positives[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        out.push((s, tp, fp));
    }
    out
}

/// Average precision as scikit-learn defines it; `None` without positives or with a non-finite score.
pub fn average_precision(scores: &[f64], positives: &[bool]) -> Option<f64> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    if n_pos == 0 || scores.len() != positives.len() || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let mut ap = 0.0;
    let mut prev_tp = 0;
    for (_, tp, fp) in threshold_sweep(scores, positives) {
        if tp > prev_tp {
            ap += (tp - prev_tp) as f64 / n_pos as f64 * (tp as f64 / (tp + fp) as f64);
        }
        prev_tp = tp;
    }
    Some(ap)
}

/// Brier score; `None` on an empty set.
pub fn brier(scores: &[f64], positives: &[bool]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let sum: f64 = scores
        .iter()
        .zip(positives)
        .map(|(&s, &p)| (s - f64::from(u8::from(p))).powi(2))
        .sum();
    Some(sum / scores.len() as f64)
}

/// Bin of a probability among `bins` equal-width bins on [0, 1]; 1.0 falls in the last one.
pub fn bin_of(score: f64, bins: usize) -> usize {
    ((score * bins as f64) as usize).min(bins - 1)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
    /// Mean score in the bin (`None` when empty).
    pub mean_score: Option<f64>,
    /// Fraction of Covid-19 in the bin (`None` when empty).
    pub observed: Option<f64>,
}

/// Reliability bins (equal width on [0, 1]).
pub fn reliability(scores: &[f64], positives: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut n = vec![0usize; bins];
    let mut sum_s = vec![0.0; bins];
    let mut sum_y = vec![0.0; bins];
    for (&s, &p) in scores.iter().zip(positives) {
        let b = bin_of(s, bins);
        n[b] += 1;
        sum_s[b] += s;
        sum_y[b] += f64::from(u8::from(p));
    }
    (0..bins)
        .map(|b| ReliabilityBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            n: n[b],
            mean_score: (n[b] > 0).then(|| sum_s[b] / n[b] as f64),
            observed: (n[b] > 0).then(|| sum_y[b] / n[b] as f64),
        })
        .collect()
}

/// Expected calibration error over `bins` equal-width bins; `None` on an empty set.
pub fn ece(scores: &[f64], positives: &[bool], bins: usize) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let total = scores.len() as f64;
    Some(
        reliability(scores, positives, bins)
            .iter()
            .filter_map(|b| Some(b.n as f64 / total * (b.observed? - b.mean_score?).abs()))
            .sum(),
    )
}

/// The ROC curve as (false positive rate, true positive rate) points from (0, 0) to (1, 1), one per
/// distinct score (scikit-learn's `roc_curve` with `drop_intermediate=False`). Empty unless both classes
/// are present.
pub fn roc_points(scores: &[f64], positives: &[bool]) -> Vec<(f64, f64)> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Vec::new();
    }
    let mut pts = vec![(0.0, 0.0)];
    for (_, tp, fp) in threshold_sweep(scores, positives) {
        pts.push((fp as f64 / n_neg as f64, tp as f64 / n_pos as f64));
    }
    pts
}

/// The true positive rate of a ROC curve at each false positive rate of `grid` (the best operating point
/// whose FPR does not exceed it): the vertical averaging used for bootstrap bands. `points` as
/// [`roc_points`] returns them (FPR and TPR non-decreasing), `grid` ascending; one merge pass, O(points +
/// grid), since it runs on every bootstrap resample.
pub fn tpr_at(points: &[(f64, f64)], grid: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(grid.len());
    let mut j = 0;
    let mut best: f64 = 0.0;
    for &f in grid {
        while j < points.len() && points[j].0 <= f + 1e-12 {
            best = best.max(points[j].1);
            j += 1;
        }
        out.push(best);
    }
    out
}

/// How the operating threshold is chosen on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdRule {
    /// Maximise Youden's J = sensitivity + specificity − 1.
    #[default]
    Youden,
    /// Maximise accuracy.
    MaxAccuracy,
}

impl std::str::FromStr for ThresholdRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "youden" | "youden-j" => Ok(Self::Youden),
            "accuracy" | "max-accuracy" => Ok(Self::MaxAccuracy),
            other => Err(format!(
                "unknown threshold rule {other:?} (youden or accuracy)"
            )),
        }
    }
}

/// The threshold `rule` picks on a validation set: among the observed scores (each taken as "positive iff
/// score >= it"), the first maximum in descending score order, then moved half-way down to the next lower
/// distinct score, so that a test image scoring between the two validation scores is treated as the
/// validation set was. `None` unless both classes are present.
pub fn choose_threshold(scores: &[f64], positives: &[bool], rule: ThresholdRule) -> Option<f64> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let sweep = threshold_sweep(scores, positives);
    let objective = |tp: usize, fp: usize| match rule {
        ThresholdRule::Youden => tp as f64 / n_pos as f64 - fp as f64 / n_neg as f64,
        ThresholdRule::MaxAccuracy => (tp + n_neg - fp) as f64 / (n_pos + n_neg) as f64,
    };
    let mut best = 0;
    let mut best_value = f64::NEG_INFINITY;
    for (k, &(_, tp, fp)) in sweep.iter().enumerate() {
        let v = objective(tp, fp);
        if v > best_value {
            best_value = v;
            best = k;
        }
    }
    let t = sweep[best].0;
    Some(match sweep.get(best + 1) {
        Some(&(lower, _, _)) => (t + lower) / 2.0,
        None => t,
    })
}

/// Summary of a set's scores (for the constant-output alarm and the histograms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Population standard deviation.
    pub sd: f64,
    pub distinct: usize,
}

pub fn score_summary(scores: &[f64]) -> Option<ScoreSummary> {
    if scores.is_empty() {
        return None;
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    Some(ScoreSummary {
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        mean,
        sd,
        distinct: sorted.len(),
    })
}

/// Score histogram by class (equal-width bins on [0, 1]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreHistogram {
    pub bins: usize,
    pub covid: Vec<usize>,
    pub pneumonia: Vec<usize>,
}

pub fn score_histogram(scores: &[f64], positives: &[bool], bins: usize) -> ScoreHistogram {
    let bins = bins.max(1);
    let mut h = ScoreHistogram {
        bins,
        covid: vec![0; bins],
        pneumonia: vec![0; bins],
    };
    for (&s, &p) in scores.iter().zip(positives) {
        let b = bin_of(s, bins);
        if p {
            h.covid[b] += 1;
        } else {
            h.pneumonia[b] += 1;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_ratios_and_empty_denominators() {
        let c = Confusion::at(&[0.9, 0.6, 0.4, 0.5], &[true, false, true, false], 0.5);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (1, 2, 0, 1));
        assert_eq!(c.accuracy(), Some(0.25));
        assert_eq!(c.specificity(), Some(0.0));
        assert_eq!(c.f1(), Some(2.0 / 5.0));
        let none = Confusion::at(&[0.1], &[false], 0.5);
        assert_eq!(none.sensitivity(), None);
        assert_eq!(none.precision(), None);
    }

    #[test]
    fn average_precision_of_a_perfect_and_a_tied_ranking() {
        assert_eq!(
            average_precision(&[0.9, 0.8, 0.1], &[true, true, false]),
            Some(1.0)
        );
        // All tied: one threshold, precision = prevalence.
        assert_eq!(
            average_precision(&[0.5; 4], &[true, false, false, false]),
            Some(0.25)
        );
        assert_eq!(average_precision(&[0.5], &[false]), None);
    }

    #[test]
    fn threshold_is_moved_half_way_down() {
        // Perfect separation between 0.3 and 0.7: Youden picks 0.7, then half-way to 0.3.
        let s = [0.1, 0.3, 0.7, 0.9];
        let p = [false, false, true, true];
        assert_eq!(choose_threshold(&s, &p, ThresholdRule::Youden), Some(0.5));
        assert_eq!(
            choose_threshold(&s, &p, ThresholdRule::MaxAccuracy),
            Some(0.5)
        );
        assert_eq!(
            choose_threshold(&s, &[true; 4], ThresholdRule::Youden),
            None
        );
    }

    #[test]
    fn ece_and_reliability() {
        let s = [0.05, 0.15, 0.95, 1.0];
        let p = [false, false, true, true];
        let bins = reliability(&s, &p, 10);
        assert_eq!(bins[9].n, 2);
        let e = ece(&s, &p, 10).unwrap();
        assert!((e - (0.05 + 0.15 + 0.05 + 0.0) / 4.0).abs() < 1e-12, "{e}");
    }

    #[test]
    fn roc_points_and_grid() {
        let pts = roc_points(&[0.9, 0.8, 0.3, 0.1], &[true, false, true, false]);
        assert_eq!(
            pts,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        assert_eq!(
            tpr_at(&pts, &[0.0, 0.4, 0.5, 1.0]),
            vec![0.5, 0.5, 1.0, 1.0]
        );
    }
}
