//! The statistics several stages must compute identically: the stratified cluster bootstrap with
//! percentile intervals (eval's CIs on every metric, the counterfactual confounder test's CI of a mean
//! shift) and Cramér's V of a contingency table (the ingest split linter, the audit's split-design check and
//! the confounder test's label association). One implementation, so the numbers agree to the bit.
//!
//! Bootstrap resampling unit: the cluster (a patient: all images of a patient come and go together, so that
//! images of one person do not pose as independent evidence), or the row when the key is empty. Strata: the
//! class of the cluster (positive, negative, or "mixed"), each resampled with replacement to its own number of
//! clusters, so every resample keeps both classes. The generator is ChaCha8 seeded from a seed and a set's
//! name ([`rng_for`]), so a set's interval does not depend on which other sets were computed.
//!
//! Percentiles use linear interpolation between order statistics (numpy's default), interval
//! `[q((1−level)/2), q((1+level)/2)]`.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Clusters of row indices, grouped by stratum.
#[derive(Debug, Clone)]
pub struct Clusters {
    strata: Vec<Vec<Vec<usize>>>,
}

impl Clusters {
    /// Builds clusters from each row's class and cluster key (patient; an empty key makes the row its own
    /// cluster).
    pub fn new(positives: &[bool], keys: &[&str]) -> Self {
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut singles = Vec::new();
        for (i, &k) in keys.iter().enumerate() {
            if k.is_empty() {
                singles.push(vec![i]);
            } else {
                by_key.entry(k).or_default().push(i);
            }
        }
        let mut clusters: Vec<Vec<usize>> = by_key.into_values().chain(singles).collect();
        // Order by first row so the result does not depend on hash order.
        clusters.sort_by_key(|c| c[0]);
        let mut strata = vec![Vec::new(), Vec::new(), Vec::new()];
        for c in clusters {
            let pos = c.iter().filter(|&&i| positives[i]).count();
            let stratum = if pos == c.len() {
                0
            } else if pos == 0 {
                1
            } else {
                2
            };
            strata[stratum].push(c);
        }
        strata.retain(|s| !s.is_empty());
        Self { strata }
    }

    pub fn n_clusters(&self) -> usize {
        self.strata.iter().map(Vec::len).sum()
    }

    /// Fills `out` with the row indices of one stratified resample.
    pub fn resample(&self, rng: &mut impl Rng, out: &mut Vec<usize>) {
        out.clear();
        for stratum in &self.strata {
            for _ in 0..stratum.len() {
                out.extend_from_slice(&stratum[rng.random_range(0..stratum.len())]);
            }
        }
    }
}

/// A generator for one named set: ChaCha8 from `seed` mixed with a hash of `name` (FNV-1a).
pub fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(seed ^ h)
}

/// Quantile `q` of sorted values, linear interpolation (numpy's default). `None` when empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Percentile interval of `values` (order irrelevant); `None` when empty.
pub fn percentile_interval(values: &mut [f64], level: f64) -> Option<[f64; 2]> {
    values.sort_by(f64::total_cmp);
    Some([
        quantile_sorted(values, (1.0 - level) / 2.0)?,
        quantile_sorted(values, (1.0 + level) / 2.0)?,
    ])
}

/// Percentile bootstrap interval of one statistic of a clustered, stratified sample: the simplest entry
/// point (the evaluation computes all metrics per resample itself). `stat` gets the resampled row indices;
/// resamples where it is `None` are skipped. Returns the interval and the number of valid resamples.
pub fn bootstrap_interval(
    clusters: &Clusters,
    resamples: usize,
    mut rng: impl Rng,
    level: f64,
    mut stat: impl FnMut(&[usize]) -> Option<f64>,
) -> (Option<[f64; 2]>, usize) {
    let mut idx = Vec::new();
    let mut values = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        clusters.resample(&mut rng, &mut idx);
        if let Some(v) = stat(&idx) {
            values.push(v);
        }
    }
    let n = values.len();
    (percentile_interval(&mut values, level), n)
}

/// Cramér's V of a contingency table (rows × columns of counts); `None` when it has fewer than two non-empty
/// rows or columns.
pub fn cramers_v(table: &[Vec<usize>]) -> Option<f64> {
    let rows: Vec<&Vec<usize>> = table
        .iter()
        .filter(|r| r.iter().sum::<usize>() > 0)
        .collect();
    let ncols = rows.first().map(|r| r.len()).unwrap_or(0);
    let col_sums: Vec<usize> = (0..ncols)
        .map(|j| rows.iter().map(|r| r[j]).sum())
        .collect();
    let cols: Vec<usize> = (0..ncols).filter(|&j| col_sums[j] > 0).collect();
    if rows.len() < 2 || cols.len() < 2 {
        return None;
    }
    let n: f64 = col_sums.iter().sum::<usize>() as f64;
    let mut chi2 = 0.0;
    for r in &rows {
        let rs: f64 = r.iter().sum::<usize>() as f64;
        for &j in &cols {
            let e = rs * col_sums[j] as f64 / n;
            let d = r[j] as f64 - e;
            chi2 += d * d / e;
        }
    }
    let k = (rows.len().min(cols.len()) - 1) as f64;
    Some((chi2 / (n * k)).sqrt().min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 97.5]) = [1.075, 3.925]
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        let [lo, hi] = percentile_interval(&mut v, 0.95).unwrap();
        assert!((lo - 1.075).abs() < 1e-12 && (hi - 3.925).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }

    #[test]
    fn resamples_keep_strata_sizes_and_whole_patients() {
        let pos = [true, true, true, false, false, false, false];
        let keys = ["a", "a", "", "b", "c", "c", "c"];
        let cl = Clusters::new(&pos, &keys);
        assert_eq!(cl.n_clusters(), 4);
        let mut rng = rng_for(7, "set");
        let mut idx = Vec::new();
        for _ in 0..50 {
            cl.resample(&mut rng, &mut idx);
            let n_pos = idx.iter().filter(|&&i| pos[i]).count();
            assert!(n_pos > 0 && n_pos < idx.len(), "{idx:?}");
            // Row 0 and 1 (patient a) always appear together, as often as each other.
            let c0 = idx.iter().filter(|&&i| i == 0).count();
            let c1 = idx.iter().filter(|&&i| i == 1).count();
            assert_eq!(c0, c1);
        }
    }

    #[test]
    fn same_seed_same_interval() {
        let pos: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
        let scores: Vec<f64> = (0..40).map(|i| ((i * 37) % 17) as f64 / 17.0).collect();
        let keys = vec![""; 40];
        let cl = Clusters::new(&pos, &keys);
        let run = |seed| {
            bootstrap_interval(&cl, 500, rng_for(seed, "x"), 0.95, |idx| {
                let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
                let p: Vec<bool> = idx.iter().map(|&i| pos[i]).collect();
                crate::auc::roc_auc(&s, &p)
            })
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1).0, run(2).0);
        assert_eq!(run(1).1, 500);
    }

    #[test]
    fn cramers_v_known_values() {
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(close(cramers_v(&[vec![10, 0], vec![0, 7]]), 1.0));
        assert!(close(cramers_v(&[vec![5, 5], vec![5, 5]]), 0.0));
        // 2x2 [[20,10],[10,20]]: phi = (400-100)/sqrt(30*30*30*30) = 1/3
        assert!(close(cramers_v(&[vec![20, 10], vec![10, 20]]), 1.0 / 3.0));
        assert_eq!(cramers_v(&[vec![3, 0]]), None);
        assert_eq!(cramers_v(&[vec![3, 0], vec![4, 0]]), None);
        // 3 sources x 2 labels, one source mixed: chi2 = 20 -> V = sqrt(20 / 30)
        assert!(close(
            cramers_v(&[vec![10, 0], vec![0, 10], vec![5, 5]]),
            (20.0f64 / 30.0).sqrt()
        ));
    }

    #[test]
    fn a_bootstrap_of_a_mean_brackets_it() {
        let v: Vec<f64> = (0..40).map(|i| 0.1 + 0.01 * (i % 5) as f64).collect();
        let keys = vec![""; v.len()];
        let cl = Clusters::new(&vec![false; v.len()], &keys);
        let (ci, n) = bootstrap_interval(&cl, 1000, rng_for(1, ""), 0.95, |idx| {
            Some(idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64)
        });
        let [lo, hi] = ci.unwrap();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        assert_eq!(n, 1000);
        assert!(lo <= m && m <= hi && lo > 0.1 && hi < 0.14, "{lo} {m} {hi}");
    }
}
