//! Stratified cluster bootstrap with percentile intervals.
//!
//! Resampling unit: the patient (all images of a patient come and go together, so that images of one
//! person do not pose as independent evidence), or the image when the patient is unknown. Strata: the class
//! of the cluster (Covid-19, pneumonia, or "mixed" for the rare patient with both), each resampled with
//! replacement to its own number of clusters, so every resample keeps both classes and the AUC is always
//! defined. The generator is ChaCha8 seeded from the run's seed and the set's name, so a set's interval does
//! not depend on which other sets were evaluated or on thread scheduling.
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
                cxr_core::auc::roc_auc(&s, &p)
            })
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1).0, run(2).0);
        assert_eq!(run(1).1, 500);
    }
}
