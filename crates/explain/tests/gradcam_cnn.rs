//! Grad-CAM on a real (tiny) CNN with BatchNorm, trained here in a few seconds:
//! - trained to detect a checker marker planted in the top-left corner among bright distractor blobs, its
//!   Grad-CAM puts the energy on the marker;
//! - explaining leaves every weight and every BatchNorm running statistic bit-identical, and the guard
//!   catches a model that does mutate itself.

use std::sync::OnceLock;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{
    BatchNorm, Conv2d, Conv2dConfig, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap,
};
use cxr_explain::{CamModel, CamTarget, ExplainError, ModelSnapshot, grad_cam, grad_cam_guarded};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZE: usize = 24;
/// The marker (5x5 checker) sits at (j, j) with j in 0..=2: always inside this top-left box.
const MARKER_BOX: usize = 8;

struct Tiny {
    c1: Conv2d,
    bn1: BatchNorm,
    c2: Conv2d,
    bn2: BatchNorm,
    head: Linear,
    /// When true, the feature map is computed in *training* mode (a deliberately wrong implementation that
    /// updates the running statistics): the guard must catch it.
    leaky: bool,
}

impl Tiny {
    /// Weights drawn from a seeded Rust RNG (candle's CPU RNG cannot be seeded).
    fn new(varmap: &mut VarMap, seed: u64) -> Tiny {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        let pad = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let down = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let model = Tiny {
            c1: candle_nn::conv2d(1, 8, 3, pad, vb.pp("c1")).unwrap(),
            bn1: candle_nn::batch_norm(8, 1e-5, vb.pp("bn1")).unwrap(),
            c2: candle_nn::conv2d(8, 16, 3, down, vb.pp("c2")).unwrap(),
            bn2: candle_nn::batch_norm(16, 1e-5, vb.pp("bn2")).unwrap(),
            head: candle_nn::linear(16, 1, vb.pp("head")).unwrap(),
            leaky: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let names: Vec<(String, Vec<usize>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with('c') || k.starts_with("head"))
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        for (name, dims) in names {
            let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
            let bound = (6.0 / fan_in as f32).sqrt();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = if name.ends_with("bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let t = Tensor::from_vec(values, dims, &Device::Cpu).unwrap();
            varmap.set_one(&name, &t).unwrap();
        }
        model
    }

    fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.bn1.forward_t(&self.c1.forward(x)?, train)?.relu()?;
        self.bn2.forward_t(&self.c2.forward(&h)?, train)?.relu()
    }

    fn logits(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.head.forward(&self.features(x, train)?.mean((2, 3))?)
    }
}

impl CamModel for Tiny {
    fn feature_map(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.features(x, self.leaky)
    }
    fn logit_from_feature_map(&self, fmap: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(&fmap.mean((2, 3))?)
    }
}

/// A batch: noisy background, one or two bright 4x4 blobs away from the corner in every image, and the 5x5
/// checker marker near the top-left corner in positives.
fn batch(rng: &mut ChaCha8Rng, n: usize) -> (Tensor, Vec<f32>) {
    let mut data = vec![0f32; n * SIZE * SIZE];
    let mut labels = Vec::with_capacity(n);
    for img in data.chunks_mut(SIZE * SIZE) {
        for v in img.iter_mut() {
            *v = 0.3 + rng.random_range(-0.1..0.1);
        }
        for _ in 0..rng.random_range(1..=2) {
            // Distractors never overlap the marker box.
            let (x, y) = loop {
                let p = (rng.random_range(0..SIZE - 4), rng.random_range(0..SIZE - 4));
                if p.0 >= MARKER_BOX || p.1 >= MARKER_BOX {
                    break p;
                }
            };
            for dy in 0..4 {
                for dx in 0..4 {
                    img[(y + dy) * SIZE + x + dx] = 0.9;
                }
            }
        }
        let positive = rng.random_bool(0.5);
        if positive {
            let j = rng.random_range(0..=2);
            for dy in 0..5 {
                for dx in 0..5 {
                    img[(j + dy) * SIZE + j + dx] = if (dx + dy) % 2 == 0 { 1.0 } else { 0.0 };
                }
            }
        }
        labels.push(if positive { 1.0 } else { 0.0 });
    }
    (
        Tensor::from_vec(data, (n, 1, SIZE, SIZE), &Device::Cpu).unwrap(),
        labels,
    )
}

struct Trained {
    varmap: VarMap,
    model: Tiny,
    accuracy: f64,
}

/// Trains once per test binary (100 Adam steps on 32 images of 24x24: a few CPU seconds in release).
fn trained() -> &'static Trained {
    static CELL: OnceLock<Trained> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut varmap = VarMap::new();
        let model = Tiny::new(&mut varmap, 7);
        let params = ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        };
        // Only trainable tensors: BatchNorm running statistics are Vars too but get no gradient.
        let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..100 {
            let (x, y) = batch(&mut rng, 32);
            let y = Tensor::from_vec(y, (32, 1), &Device::Cpu).unwrap();
            let z = model.logits(&x, true).unwrap();
            // Stable BCE with logits: relu(z) - z*y + log1p(exp(-|z|)).
            let loss = (z.relu().unwrap() - (&z * &y).unwrap()).unwrap();
            let loss = (loss
                + z.abs()
                    .unwrap()
                    .neg()
                    .unwrap()
                    .exp()
                    .unwrap()
                    .affine(1.0, 1.0)
                    .unwrap()
                    .log()
                    .unwrap())
            .unwrap()
            .mean_all()
            .unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let (x, y) = batch(&mut ChaCha8Rng::seed_from_u64(99), 200);
        let z = model
            .logits(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let correct = z
            .iter()
            .zip(&y)
            .filter(|(z, y)| (**z > 0.0) == (**y > 0.5))
            .count();
        Trained {
            varmap,
            model,
            accuracy: correct as f64 / 200.0,
        }
    })
}

#[test]
fn grad_cam_puts_the_energy_on_the_planted_corner_marker() {
    let t = trained();
    assert!(
        t.accuracy > 0.9,
        "the tiny CNN did not learn the marker: accuracy {}",
        t.accuracy
    );
    let (x, y) = batch(&mut ChaCha8Rng::seed_from_u64(1234), 64);
    let out = grad_cam_guarded(&t.model, &x, CamTarget::Covid, || {
        ModelSnapshot::of_varmap(&t.varmap)
    })
    .unwrap();
    assert_eq!(out.heatmaps.len(), 64);
    assert_eq!(out.feature_size, (SIZE / 2, SIZE / 2));
    let (mut fractions, mut peaks_in_box, mut positives) = (Vec::new(), 0, 0);
    for (h, &label) in out.heatmaps.iter().zip(&y) {
        assert_eq!((h.width, h.height), (SIZE, SIZE));
        assert!(h.data.iter().all(|v| (0.0..=1.0).contains(v)));
        if label < 0.5 {
            continue;
        }
        positives += 1;
        fractions.push(box_share(h));
        let peak = (0..SIZE * SIZE)
            .max_by(|&a, &b| h.data[a].total_cmp(&h.data[b]))
            .unwrap();
        if peak % SIZE < MARKER_BOX && peak / SIZE < MARKER_BOX {
            peaks_in_box += 1;
        }
    }
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    println!(
        "accuracy {:.3}; marker-box share of Grad-CAM energy {mean:.3}; peak on the marker in {peaks_in_box}/{positives}",
        t.accuracy
    );
    // The box is 64/576 = 11% of the image: an uninformative map would put about 11% of its energy there.
    assert!(
        mean > 0.5,
        "mean share of Grad-CAM energy on the marker box: {mean:.3}"
    );
    assert!(
        peaks_in_box as f64 >= 0.9 * positives as f64,
        "peak on the marker in {peaks_in_box} of {positives} positives"
    );
    // Explaining the other class (the negated logit) moves the map off the marker, which is evidence *for*
    // Covid-19 here; the logits are the same either way.
    let neg = cxr_explain::grad_cam_for(&t.model, &x, CamTarget::Pneumonia).unwrap();
    assert_eq!(neg.logits, out.logits);
    let neg_shares: Vec<f64> = neg
        .heatmaps
        .iter()
        .zip(&y)
        .filter(|(h, l)| **l > 0.5 && h.total() > 0.0)
        .map(|(h, _)| box_share(h))
        .collect();
    let neg_mean = neg_shares.iter().sum::<f64>() / neg_shares.len().max(1) as f64;
    assert!(
        neg_mean < mean,
        "negated map share on the marker {neg_mean:.3} vs {mean:.3}"
    );
}

/// Share of a map's energy inside the marker box.
fn box_share(h: &cxr_explain::Heatmap) -> f64 {
    let inside: f64 = (0..MARKER_BOX)
        .flat_map(|y| (0..MARKER_BOX).map(move |x| (x, y)))
        .map(|(x, y)| h.get(x, y) as f64)
        .sum();
    inside / h.total()
}

fn raw_state(varmap: &VarMap) -> Vec<(String, Vec<u32>)> {
    let mut v: Vec<(String, Vec<u32>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bits = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (k.clone(), bits.into_iter().map(f32::to_bits).collect())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn explaining_leaves_weights_and_running_statistics_bit_identical() {
    let t = trained();
    // Training moved the running statistics away from their initial 0 / 1, so a change would show.
    let state = raw_state(&t.varmap);
    let mean = state.iter().find(|(k, _)| k == "bn1.running_mean").unwrap();
    assert!(mean.1.iter().any(|&b| f32::from_bits(b) != 0.0));
    assert_eq!(
        state.len(),
        14,
        "{:?}",
        state.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let snapshot = ModelSnapshot::of_varmap(&t.varmap).unwrap();
    let (x, _) = batch(&mut ChaCha8Rng::seed_from_u64(5), 16);
    for target in [CamTarget::Covid, CamTarget::Pneumonia] {
        let _ = cxr_explain::grad_cam_for(&t.model, &x, target).unwrap();
    }
    let _ = grad_cam(&t.model, &x).unwrap();
    assert_eq!(raw_state(&t.varmap), state, "Grad-CAM changed a variable");
    assert!(
        snapshot
            .differences(&ModelSnapshot::of_varmap(&t.varmap).unwrap())
            .is_empty()
    );
    // Logits do not depend on the batch (inference mode): one image alone gives the same logit.
    let all = grad_cam(&t.model, &x).unwrap();
    let one = grad_cam(&t.model, &x.narrow(0, 3, 1).unwrap()).unwrap();
    assert_eq!(all.logits[3], one.logits[0]);
    assert_eq!(all.heatmaps[3], one.heatmaps[0]);
}

#[test]
fn the_guard_catches_a_model_that_updates_its_running_statistics() {
    let mut varmap = VarMap::new();
    let mut model = Tiny::new(&mut varmap, 3);
    model.leaky = true;
    let (x, _) = batch(&mut ChaCha8Rng::seed_from_u64(8), 8);
    match grad_cam_guarded(&model, &x, CamTarget::Covid, || {
        ModelSnapshot::of_varmap(&varmap)
    }) {
        Err(ExplainError::ModelMutated { names }) => {
            assert!(names.iter().any(|n| n == "bn1.running_mean"), "{names:?}");
            assert!(names.iter().all(|n| n.contains("running")), "{names:?}");
        }
        other => panic!("expected ModelMutated, got {other:?}"),
    }
    model.leaky = false;
    assert!(
        grad_cam_guarded(&model, &x, CamTarget::Covid, || ModelSnapshot::of_varmap(
            &varmap
        ))
        .is_ok()
    );
}
