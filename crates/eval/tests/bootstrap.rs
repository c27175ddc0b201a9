//! Bootstrap intervals: reproducible under a seed, and covering the true AUC at about the nominal rate in a
//! small simulation (binormal scores, where the true AUC is Φ(d/√2)).

use cxr_core::{Label, Prediction, SourceId, Split};
use cxr_eval::bootstrap::{Clusters, bootstrap_interval, rng_for};
use cxr_eval::delong::delong;
use cxr_eval::{EvalOptions, Group, evaluate};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use statrs::distribution::{ContinuousCDF, Normal as StNormal};

/// Binormal sample: negatives N(0, 1), positives N(d, 1); a shared patient effect of sd `tau` on pairs of
/// images when `clustered`.
fn sample(
    rng: &mut ChaCha8Rng,
    m: usize,
    n: usize,
    d: f64,
    tau: f64,
) -> (Vec<f64>, Vec<bool>, Vec<String>) {
    let noise = Normal::new(0.0, 1.0).unwrap();
    let mut scores = Vec::new();
    let mut pos = Vec::new();
    let mut patients = Vec::new();
    for (count, p, shift) in [(m, true, d), (n, false, 0.0)] {
        // Two images per patient.
        for k in 0..count / 2 {
            let u = noise.sample(rng) * tau;
            for _ in 0..2 {
                scores.push(shift + u + noise.sample(rng) * (1.0 - tau * tau).sqrt());
                pos.push(p);
                patients.push(format!("{}{k}", if p { "c" } else { "p" }));
            }
        }
    }
    (scores, pos, patients)
}

fn auc_stat<'a>(scores: &'a [f64], pos: &'a [bool]) -> impl FnMut(&[usize]) -> Option<f64> + 'a {
    let mut s = Vec::new();
    let mut p = Vec::new();
    move |idx| {
        s.clear();
        p.clear();
        s.extend(idx.iter().map(|&i| scores[i]));
        p.extend(idx.iter().map(|&i| pos[i]));
        cxr_core::auc::roc_auc(&s, &p)
    }
}

#[test]
fn percentile_intervals_cover_the_true_auc() {
    let d = 1.19;
    let true_auc = StNormal::standard().cdf(d / 2f64.sqrt());
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let reps = 200;
    let (mut boot_hits, mut delong_hits, mut clustered_hits, mut naive_hits) = (0, 0, 0, 0);
    for r in 0..reps {
        // Independent images.
        let (scores, pos, _) = sample(&mut rng, 40, 40, d, 0.0);
        let none = vec![""; scores.len()];
        let cl = Clusters::new(&pos, &none);
        let (ci, valid) =
            bootstrap_interval(&cl, 1000, rng_for(r, "sim"), 0.95, auc_stat(&scores, &pos));
        assert_eq!(valid, 1000, "stratified resamples always keep both classes");
        let [lo, hi] = ci.unwrap();
        boot_hits += usize::from(lo <= true_auc && true_auc <= hi);
        let dl = delong(&scores, &pos, 0.95).unwrap();
        delong_hits += usize::from(dl.lo <= true_auc && true_auc <= dl.hi);

        // Two strongly correlated images per patient: resampling patients keeps the nominal rate,
        // resampling images pretends to twice the evidence.
        let (scores, pos, patients) = sample(&mut rng, 40, 40, d, 0.9);
        let keys: Vec<&str> = patients.iter().map(String::as_str).collect();
        let by_patient = Clusters::new(&pos, &keys);
        assert_eq!(by_patient.n_clusters(), 40);
        let [lo, hi] = bootstrap_interval(
            &by_patient,
            1000,
            rng_for(r, "c"),
            0.95,
            auc_stat(&scores, &pos),
        )
        .0
        .unwrap();
        clustered_hits += usize::from(lo <= true_auc && true_auc <= hi);
        let by_image = Clusters::new(&pos, &none);
        let [lo, hi] = bootstrap_interval(
            &by_image,
            1000,
            rng_for(r, "i"),
            0.95,
            auc_stat(&scores, &pos),
        )
        .0
        .unwrap();
        naive_hits += usize::from(lo <= true_auc && true_auc <= hi);
    }
    let rate = |h: usize| h as f64 / reps as f64;
    let (b, dl, c, nv) = (
        rate(boot_hits),
        rate(delong_hits),
        rate(clustered_hits),
        rate(naive_hits),
    );
    eprintln!(
        "coverage: bootstrap {b:.3}, DeLong {dl:.3}, patient bootstrap {c:.3}, image bootstrap {nv:.3}"
    );
    // Nominal 0.95; 200 replications give a binomial sd of about 0.015.
    assert!((0.88..=0.99).contains(&b), "bootstrap coverage {b}");
    assert!((0.88..=0.99).contains(&dl), "DeLong coverage {dl}");
    assert!(
        (0.86..=0.99).contains(&c),
        "patient-cluster bootstrap coverage {c}"
    );
    assert!(
        nv < c,
        "ignoring patients should under-cover: images {nv}, patients {c}"
    );
}

fn predictions(seed: u64) -> Vec<Prediction> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (scores, pos, patients) = sample(&mut rng, 60, 80, 1.0, 0.5);
    scores
        .iter()
        .zip(&pos)
        .zip(&patients)
        .enumerate()
        .map(|(i, ((&s, &p), pat))| Prediction {
            id: format!("img{i}"),
            source: SourceId::new(if i % 3 == 0 { "nih" } else { "bimcv" }).unwrap(),
            split: if i % 4 == 0 { Split::Val } else { Split::Test },
            label: if p { Label::Covid } else { Label::Pneumonia },
            score: 1.0 / (1.0 + (-s).exp()),
            patient: pat.clone(),
            model: "m".into(),
        })
        .collect()
}

#[test]
fn evaluation_is_reproducible_under_a_seed() {
    let preds = predictions(5);
    let options = EvalOptions {
        resamples: 2000,
        seed: 11,
        ..EvalOptions::default()
    };
    let a = evaluate(&preds, &options).unwrap();
    let b = evaluate(&preds, &options).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let other = evaluate(
        &preds,
        &EvalOptions {
            seed: 12,
            ..options.clone()
        },
    )
    .unwrap();
    let set_a = a.set("m", Split::Test, &Group::All).unwrap();
    let set_o = other.set("m", Split::Test, &Group::All).unwrap();
    assert_eq!(set_a.auc.value, set_o.auc.value);
    assert_ne!(
        set_a.auc.lo, set_o.auc.lo,
        "another seed draws other resamples"
    );
    // Patients were the resampling unit: 140 images of 70 patients.
    assert!(set_a.n_clusters < set_a.n, "{} clusters", set_a.n_clusters);
    // Each interval brackets its estimate and every metric has one.
    for e in [
        set_a.auc,
        set_a.average_precision,
        set_a.brier,
        set_a.ece,
        set_a.at_val_threshold.accuracy,
        set_a.at_val_threshold.f1,
        set_a.at_half.specificity,
    ] {
        let (v, lo, hi) = (e.value.unwrap(), e.lo.unwrap(), e.hi.unwrap());
        assert!(lo <= v && v <= hi && lo < hi, "{e:?}");
    }
    // The ROC band brackets the curve on the grid.
    let r = &set_a.roc;
    assert_eq!(r.grid.len(), r.band_lo.len());
    assert!(r.band_lo.iter().zip(&r.band_hi).all(|(l, h)| l <= h));
}
