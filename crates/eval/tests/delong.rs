//! DeLong's variance against an independent O(m·n) implementation of the structural components
//! (DeLong et al. 1988, eq. 2-4, straight from the pairwise kernel) and against the published worked
//! example of Hanley & McNeil (Radiology 143:29, 1982).

use cxr_eval::delong::{delong, paired_delong, unpaired_test};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn psi(x: f64, y: f64) -> f64 {
    if x > y {
        1.0
    } else if x == y {
        0.5
    } else {
        0.0
    }
}

/// Slow structural components: V10_i = mean_j psi(X_i, Y_j), V01_j = mean_i psi(X_i, Y_j).
fn slow(scores: &[f64], pos: &[bool]) -> (f64, Vec<f64>, Vec<f64>) {
    let x: Vec<f64> = scores
        .iter()
        .zip(pos)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let y: Vec<f64> = scores
        .iter()
        .zip(pos)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    let v10: Vec<f64> = x
        .iter()
        .map(|&xi| y.iter().map(|&yj| psi(xi, yj)).sum::<f64>() / y.len() as f64)
        .collect();
    let v01: Vec<f64> = y
        .iter()
        .map(|&yj| x.iter().map(|&xi| psi(xi, yj)).sum::<f64>() / x.len() as f64)
        .collect();
    let auc = v10.iter().sum::<f64>() / v10.len() as f64;
    (auc, v10, v01)
}

fn cov(a: &[f64], b: &[f64]) -> f64 {
    let ma = a.iter().sum::<f64>() / a.len() as f64;
    let mb = b.iter().sum::<f64>() / b.len() as f64;
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() - 1) as f64
}

fn random_set(rng: &mut ChaCha8Rng, n: usize, coarse: bool) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    let mut pos: Vec<bool> = (0..n).map(|_| rng.random_bool(0.4)).collect();
    pos[0] = true;
    pos[1] = false;
    let a: Vec<f64> = pos
        .iter()
        .map(|&p| {
            let v: f64 = rng.random::<f64>() * 0.7 + if p { 0.3 } else { 0.0 };
            if coarse { (v * 8.0).round() / 8.0 } else { v }
        })
        .collect();
    let b: Vec<f64> = a
        .iter()
        .map(|&v| ((v + rng.random::<f64>() * 0.5) / 1.5 * 10.0).round() / 10.0)
        .collect();
    (a, b, pos)
}

#[test]
fn fast_delong_equals_the_pairwise_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(1988);
    for (n, coarse) in [
        (7, true),
        (40, false),
        (40, true),
        (233, true),
        (500, false),
    ] {
        let (a, b, pos) = random_set(&mut rng, n, coarse);
        let (auc, v10, v01) = slow(&a, &pos);
        let var = cov(&v10, &v10) / v10.len() as f64 + cov(&v01, &v01) / v01.len() as f64;
        let d = delong(&a, &pos, 0.95).unwrap();
        assert!((d.auc - auc).abs() < 1e-12, "n={n}: {} vs {auc}", d.auc);
        assert!(
            (d.variance - var).abs() < 1e-12,
            "n={n}: {} vs {var}",
            d.variance
        );
        assert!((d.se - var.sqrt()).abs() < 1e-12);
        let z = 1.959_963_984_540_054;
        assert!((d.lo - (auc - z * var.sqrt()).max(0.0)).abs() < 1e-9);

        // Paired: the covariance of the two models' components.
        let (auc_b, w10, w01) = slow(&b, &pos);
        let c = cov(&v10, &w10) / v10.len() as f64 + cov(&v01, &w01) / v01.len() as f64;
        let var_b = cov(&w10, &w10) / w10.len() as f64 + cov(&w01, &w01) / w01.len() as f64;
        let t = paired_delong(&a, &b, &pos, 0.95).unwrap();
        assert!((t.covariance - c).abs() < 1e-12, "n={n}");
        assert!((t.var_b - var_b).abs() < 1e-12, "n={n}");
        let se = (var + var_b - 2.0 * c).sqrt();
        assert!((t.z.unwrap() - (auc - auc_b) / se).abs() < 1e-9, "n={n}");
    }
}

#[test]
fn hanley_mcneil_1982_rating_example() {
    // Table 1 of Hanley & McNeil (1982): 58 normal and 51 abnormal CT images rated 1 (definitely normal) to
    // 5 (definitely abnormal). Published: AUC 0.893, SE 0.032 (their exponential approximation).
    let normal = [(1, 33), (2, 6), (3, 6), (4, 11), (5, 2)];
    let abnormal = [(1, 3), (2, 2), (3, 2), (4, 11), (5, 33)];
    let mut scores = Vec::new();
    let mut pos = Vec::new();
    for (table, p) in [(normal, false), (abnormal, true)] {
        for (rating, count) in table {
            for _ in 0..count {
                scores.push(f64::from(rating) / 5.0);
                pos.push(p);
            }
        }
    }
    let d = delong(&scores, &pos, 0.95).unwrap();
    assert_eq!(format!("{:.3}", d.auc), "0.893");
    // DeLong's exact SE here is 0.03072 (numpy pairwise: 0.030724408379381122), a little under Hanley &
    // McNeil's approximate 0.032.
    assert!((d.se - 0.030_724_408_379_381_122).abs() < 1e-12, "{}", d.se);
    assert!((d.se - 0.032).abs() < 0.003);
}

#[test]
fn unpaired_test_of_a_real_gap_and_of_none() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (good, _, pos_g) = random_set(&mut rng, 200, false);
    let pos_r: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
    let random: Vec<f64> = (0..200).map(|_| rng.random()).collect();
    let a = delong(&good, &pos_g, 0.95).unwrap();
    let b = delong(&random, &pos_r, 0.95).unwrap();
    let t = unpaired_test(&a, &b, 0.95);
    assert!(
        a.auc > 0.75 && (b.auc - 0.5).abs() < 0.15,
        "{} {}",
        a.auc,
        b.auc
    );
    assert!(t.p_value.unwrap() < 1e-6, "{t:?}");
    assert!(t.lo > 0.0);
    let same = unpaired_test(&a, &a, 0.95);
    assert!((same.p_value.unwrap() - 1.0).abs() < 1e-12);
}
