//! The exact ROC AUC, the one number several stages must compute identically (eval reports it with CIs;
//! explain's audit scores probes and occlusion tests with it). Confidence intervals live in `cxr-eval`.

/// Area under the ROC curve of `scores` for binary `positives` (true = positive class), computed exactly as
/// the Mann-Whitney U statistic with ties counted one half (scikit-learn's `roc_auc_score` gives the same).
/// `None` when either class is absent or a score is not finite.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    if scores.len() != positives.len() || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (mid-)ranks of the positives; ranks are 1-based, ties share their mean rank.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += order[i..=j].iter().filter(|&&k| positives[k]).count() as f64 * mid_rank;
        i = j + 1;
    }
    let (n_pos, n_neg) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over all positive/negative pairs: the definition.
    fn pairwise(scores: &[f64], positives: &[bool]) -> f64 {
        let (mut sum, mut n) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if positives[i] && !positives[j] {
                    n += 1.0;
                    sum += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        sum / n
    }

    #[test]
    fn matches_the_pairwise_definition_with_ties() {
        // scikit-learn: roc_auc_score([0,0,1,1,1,0], [0.1,0.4,0.35,0.8,0.4,0.4]) = 0.6666667
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4];
        let pos = [false, false, true, true, true, false];
        let auc = roc_auc(&scores, &pos).unwrap();
        assert!((auc - 0.666_666_666_7).abs() < 1e-9, "{auc}");
        assert!((auc - pairwise(&scores, &pos)).abs() < 1e-12);
        let mut state = 12345u64;
        for n in [3usize, 10, 57] {
            let mut next = || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                state >> 33
            };
            let scores: Vec<f64> = (0..n).map(|_| (next() % 7) as f64).collect();
            let mut pos: Vec<bool> = (0..n).map(|_| next() % 2 == 0).collect();
            pos[0] = true;
            pos[1] = false;
            assert!((roc_auc(&scores, &pos).unwrap() - pairwise(&scores, &pos)).abs() < 1e-12);
        }
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[f64::NAN, 0.2], &[true, false]), None);
        assert_eq!(roc_auc(&[0.9, 0.2], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, false]), Some(0.0));
    }
}
