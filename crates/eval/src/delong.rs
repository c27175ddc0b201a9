//! DeLong's variance of the ROC AUC and the tests built on it.
//!
//! The structural components of DeLong, DeLong & Clarke-Pearson (Biometrics 44:837, 1988) computed with
//! midranks in O(n log n) (Sun & Xu, IEEE Signal Processing Letters 21:1389, 2014):
//! `V10_i = (Tz_i − Tx_i) / n` for each positive, `V01_j = 1 − (Tz_{m+j} − Ty_j) / m` for each negative,
//! with Tx, Ty, Tz the midranks within the positives, the negatives and both; `Var(AUC) = S10/m + S01/n`
//! with S the sample (co)variances (denominator m−1, n−1). Ties count one half, as in the AUC itself.
//!
//! The CI is the plain Wald interval `AUC ± z·SE` clipped to [0, 1], as R's pROC (`ci.auc(method =
//! "delong")`) reports it; no logit transform, so it can be compared with pROC's output directly. It
//! collapses to a point when the classes are perfectly separated (variance 0): then only the bootstrap,
//! which is also degenerate there, and the set's size say how sure we are.
//!
//! DeLong treats images as independent; when several images share a patient, the cluster bootstrap
//! ([`crate::bootstrap`]) is the honest interval.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// The standard normal quantile for a two-sided interval of coverage `level`.
pub fn z_for_level(level: f64) -> f64 {
    // `Normal::standard` cannot fail; `inverse_cdf` of a probability in (0, 1) is finite.
    Normal::standard().inverse_cdf(0.5 + level / 2.0)
}

/// Two-sided p-value of a standard normal statistic.
pub fn two_sided_p(z: f64) -> f64 {
    2.0 * Normal::standard().sf(z.abs())
}

/// Midranks (1-based, ties share their mean rank).
fn midranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = mid;
        }
        i = j + 1;
    }
    ranks
}

/// Structural components of one classifier: (V10 per positive, V01 per negative). `None` unless both
/// classes are present and every score is finite.
pub fn components(scores: &[f64], positives: &[bool]) -> Option<(Vec<f64>, Vec<f64>)> {
    if scores.len() != positives.len() || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let x: Vec<f64> = (0..scores.len())
        .filter(|&i| positives[i])
        .map(|i| scores[i])
        .collect();
    let y: Vec<f64> = (0..scores.len())
        .filter(|&i| !positives[i])
        .map(|i| scores[i])
        .collect();
    let (m, n) = (x.len(), y.len());
    if m == 0 || n == 0 {
        return None;
    }
    let z: Vec<f64> = x.iter().chain(&y).copied().collect();
    let (tx, ty, tz) = (midranks(&x), midranks(&y), midranks(&z));
    let v10 = (0..m).map(|i| (tz[i] - tx[i]) / n as f64).collect();
    let v01 = (0..n)
        .map(|j| 1.0 - (tz[m + j] - ty[j]) / m as f64)
        .collect();
    Some((v10, v01))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample covariance (denominator len − 1; 0 for a single value, which contributes no spread).
fn cov(a: &[f64], b: &[f64]) -> f64 {
    if a.len() < 2 {
        return 0.0;
    }
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() - 1) as f64
}

/// AUC with its DeLong variance and Wald CI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeLongAuc {
    pub auc: f64,
    pub variance: f64,
    pub se: f64,
    pub lo: f64,
    pub hi: f64,
    pub level: f64,
}

/// DeLong's estimate for one set; the point AUC is [`cxr_core::auc::roc_auc`]'s.
pub fn delong(scores: &[f64], positives: &[bool], level: f64) -> Option<DeLongAuc> {
    let auc = cxr_core::auc::roc_auc(scores, positives)?;
    let (v10, v01) = components(scores, positives)?;
    let variance = cov(&v10, &v10) / v10.len() as f64 + cov(&v01, &v01) / v01.len() as f64;
    let se = variance.max(0.0).sqrt();
    let z = z_for_level(level);
    Some(DeLongAuc {
        auc,
        variance,
        se,
        lo: (auc - z * se).clamp(0.0, 1.0),
        hi: (auc + z * se).clamp(0.0, 1.0),
        level,
    })
}

/// DeLong's test of two correlated AUCs (two models scoring the same images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDeLong {
    pub auc_a: f64,
    pub auc_b: f64,
    pub var_a: f64,
    pub var_b: f64,
    pub covariance: f64,
    /// `auc_a − auc_b`.
    pub difference: f64,
    pub se_difference: f64,
    /// `None` when the difference has no variance (e.g. both models separate the classes perfectly).
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    pub lo: f64,
    pub hi: f64,
}

/// The paired test; `scores_a[i]` and `scores_b[i]` must score the same image, whose class is
/// `positives[i]`.
pub fn paired_delong(
    scores_a: &[f64],
    scores_b: &[f64],
    positives: &[bool],
    level: f64,
) -> Option<PairedDeLong> {
    if scores_a.len() != scores_b.len() {
        return None;
    }
    let auc_a = cxr_core::auc::roc_auc(scores_a, positives)?;
    let auc_b = cxr_core::auc::roc_auc(scores_b, positives)?;
    let (a10, a01) = components(scores_a, positives)?;
    let (b10, b01) = components(scores_b, positives)?;
    let (m, n) = (a10.len() as f64, a01.len() as f64);
    let var_a = cov(&a10, &a10) / m + cov(&a01, &a01) / n;
    let var_b = cov(&b10, &b10) / m + cov(&b01, &b01) / n;
    let covariance = cov(&a10, &b10) / m + cov(&a01, &b01) / n;
    let var_diff = (var_a + var_b - 2.0 * covariance).max(0.0);
    let difference = auc_a - auc_b;
    let se_difference = var_diff.sqrt();
    let z = (se_difference > 1e-15).then(|| difference / se_difference);
    let zq = z_for_level(level);
    Some(PairedDeLong {
        auc_a,
        auc_b,
        var_a,
        var_b,
        covariance,
        difference,
        se_difference,
        z,
        p_value: z.map(two_sided_p),
        lo: difference - zq * se_difference,
        hi: difference + zq * se_difference,
    })
}

/// Two AUCs on disjoint sets (seen vs unseen sources): a z-test on their DeLong variances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnpairedTest {
    /// `auc_a − auc_b`.
    pub difference: f64,
    pub se_difference: f64,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
    pub lo: f64,
    pub hi: f64,
}

pub fn unpaired_test(a: &DeLongAuc, b: &DeLongAuc, level: f64) -> UnpairedTest {
    let difference = a.auc - b.auc;
    let se_difference = (a.variance.max(0.0) + b.variance.max(0.0)).sqrt();
    let z = (se_difference > 1e-15).then(|| difference / se_difference);
    let zq = z_for_level(level);
    UnpairedTest {
        difference,
        se_difference,
        z,
        p_value: z.map(two_sided_p),
        lo: difference - zq * se_difference,
        hi: difference + zq * se_difference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles() {
        assert!((z_for_level(0.95) - 1.959_963_984_540_054).abs() < 1e-9);
        assert!((two_sided_p(1.959_963_984_540_054) - 0.05).abs() < 1e-9);
    }

    #[test]
    fn components_average_to_the_auc() {
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9];
        let p = [false, false, true, true, true, false, true];
        let (v10, v01) = components(&s, &p).unwrap();
        let auc = cxr_core::auc::roc_auc(&s, &p).unwrap();
        assert!((mean(&v10) - auc).abs() < 1e-12);
        assert!((mean(&v01) - auc).abs() < 1e-12);
    }

    #[test]
    fn perfect_separation_has_zero_variance_and_identical_models_no_test() {
        let s = [0.1, 0.2, 0.8, 0.9];
        let p = [false, false, true, true];
        let d = delong(&s, &p, 0.95).unwrap();
        assert_eq!((d.auc, d.variance, d.lo, d.hi), (1.0, 0.0, 1.0, 1.0));
        let t = paired_delong(&s, &s, &p, 0.95).unwrap();
        assert_eq!(t.z, None);
        assert!(delong(&s, &[true; 4], 0.95).is_none());
    }
}
