//! A permutation test of "the scores separate the classes": valid at any sample size, where DeLong's
//! Wald interval is not (it collapses to a point under perfect separation, and is too narrow on a handful of
//! images). Used by the audit's occlusion test, which often runs on a few test images per class.

use rand::seq::SliceRandom;

use crate::bootstrap::rng_for;

/// Two-sided Monte-Carlo permutation p-value of `|AUC − 0.5|`: the share of label shuffles (plus the observed
/// labelling, so p is never 0) whose AUC is at least as far from chance as the observed one. Seeded by `seed`
/// and `name`, so the same inputs give the same p. `None` unless both classes are present and every score is
/// finite, or `resamples` is 0.
pub fn auc_permutation_p(
    scores: &[f64],
    positives: &[bool],
    resamples: usize,
    seed: u64,
    name: &str,
) -> Option<f64> {
    if resamples == 0 {
        return None;
    }
    let observed = cxr_core::auc::roc_auc(scores, positives)?;
    let distance = (observed - 0.5).abs();
    let mut rng = rng_for(seed, name);
    let mut shuffled = positives.to_vec();
    // A relative tolerance so that a permutation with the same AUC as the observed one counts as "as
    // extreme" despite floating-point noise in the rank sums.
    let tolerance = 1e-12;
    let mut extreme = 1usize;
    for _ in 0..resamples {
        shuffled.shuffle(&mut rng);
        let auc = cxr_core::auc::roc_auc(scores, &shuffled)?;
        if (auc - 0.5).abs() >= distance - tolerance {
            extreme += 1;
        }
    }
    Some(extreme as f64 / (resamples + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation_on_few_images_is_not_significant_but_on_more_it_is() {
        // 3 vs 3 perfectly separated: exactly 2 of the 20 labellings are as extreme, p = 0.1.
        let scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9];
        let pos = [false, false, false, true, true, true];
        let p = auc_permutation_p(&scores, &pos, 20_000, 1, "t").unwrap();
        assert!((p - 0.1).abs() < 0.01, "p {p}");
        // 8 vs 8: 2 / C(16, 8) = 1.6e-4, so only the +1 in the numerator is left.
        let scores: Vec<f64> = (0..16).map(f64::from).collect();
        let pos: Vec<bool> = (0..16).map(|i| i >= 8).collect();
        let p = auc_permutation_p(&scores, &pos, 2_000, 1, "t").unwrap();
        assert!(p < 0.005, "p {p}");
        // Inverted separation is as extreme (two-sided).
        let inverted: Vec<bool> = pos.iter().map(|p| !p).collect();
        assert!(auc_permutation_p(&scores, &inverted, 2_000, 1, "t").unwrap() < 0.005);
    }

    #[test]
    fn unrelated_scores_give_large_p_and_degenerate_inputs_none() {
        let scores: Vec<f64> = (0..40).map(|i| f64::from((i * 37) % 40)).collect();
        let pos: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let auc = cxr_core::auc::roc_auc(&scores, &pos).unwrap();
        let p = auc_permutation_p(&scores, &pos, 2_000, 7, "t").unwrap();
        assert!((auc - 0.5).abs() < 0.15 && p > 0.2, "auc {auc} p {p}");
        assert_eq!(
            auc_permutation_p(&[0.1, 0.2], &[true, true], 100, 1, "t"),
            None
        );
        assert_eq!(
            auc_permutation_p(&[0.1, f64::NAN], &[true, false], 100, 1, "t"),
            None
        );
        assert_eq!(
            auc_permutation_p(&[0.1, 0.2], &[true, false], 0, 1, "t"),
            None
        );
        // Same seed and name, same p.
        assert_eq!(
            auc_permutation_p(&scores, &pos, 500, 7, "t"),
            auc_permutation_p(&scores, &pos, 500, 7, "t")
        );
    }
}
