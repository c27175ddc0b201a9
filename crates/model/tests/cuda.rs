//! The classifier on a CUDA GPU gives what it gives on the CPU: a Finetune1 training step (loss and the
//! trainable parameters' gradients) and the frozen embedding agree within f32 round-off, and a model trained on
//! the GPU learns the square cue and predicts the same scores when loaded on the CPU.
//!
//! These tests compile only with `--features cuda` (a default build holds no such test, so it cannot count them
//! as passed) and need a GPU (docs/GPU.md); a `cuda` build without one prints `skipped:`.

#![cfg(feature = "cuda")]

use candle_core::{Device, Tensor};
use cxr_core::{Label, Split};
use cxr_model::{Arch, Classifier, Mode, TrainConfig, TrainOptions, bce_with_logits, train};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/square_cue.rs"]
mod square_cue;

#[path = "../../ops/tests/common/gpu.rs"]
mod common;
use common::{gpu, rel_diff, values};

fn input(dev: &Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let v: Vec<f32> = (0..4 * 3 * 64 * 64)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    Tensor::from_vec(v, (4, 3, 64, 64), dev).unwrap()
}

#[test]
fn finetune1_step_and_embedding_on_cuda_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let arch = Arch::resnet50();
    let cpu_model = Classifier::new(&arch, Mode::Finetune1, 7, &Device::Cpu).unwrap();
    let gpu_model = Classifier::new(&arch, Mode::Finetune1, 7, &gpu).unwrap();
    let y = [0f32, 1.0, 1.0, 0.0];

    // Eval-mode embedding.
    let f_cpu = cpu_model.features(&input(&Device::Cpu)).unwrap();
    let f_gpu = gpu_model.features(&input(&gpu)).unwrap();
    let d = rel_diff(&f_cpu, &f_gpu);
    assert!(d < 1e-3, "embedding differs by {d} (relative)");

    // One training step: batch statistics, the head's dropout from the same seeded Rust RNG.
    let step = |m: &Classifier, dev: &Device| {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let logits = m.forward_train(&input(dev), &mut rng).unwrap();
        let loss = bce_with_logits(&logits, &Tensor::new(&y, dev).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        (logits, loss, grads)
    };
    let (l_cpu, loss_cpu, g_cpu) = step(&cpu_model, &Device::Cpu);
    let (l_gpu, loss_gpu, g_gpu) = step(&gpu_model, &gpu);
    let d = rel_diff(&l_cpu, &l_gpu);
    assert!(d < 1e-3, "training logits differ by {d}");
    let (a, b) = (values(&loss_cpu)[0], values(&loss_gpu)[0]);
    assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "loss {a} vs {b}");

    // Deep gradients pass through ~50 layers of f32 arithmetic summed in another order, and training-mode
    // BatchNorm divides by small batch deviations: single elements differ by up to 2 % of the largest gradient
    // (measured on an H200), so judge each tensor by its direction (cosine) and its norm.
    let cpu_vars = cpu_model.params().trainable();
    let gpu_vars = gpu_model.params().trainable();
    assert_eq!(cpu_vars.len(), gpu_vars.len());
    let mut report = Vec::new();
    for ((name, vc), (name_g, vg)) in cpu_vars.iter().zip(&gpu_vars) {
        assert_eq!(name, name_g);
        match (g_cpu.get(vc.as_tensor()), g_gpu.get(vg.as_tensor())) {
            (Some(gc), Some(gg)) => {
                let (a, b) = (values(gc), values(gg));
                let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
                let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let cos = dot / (norm(&a) * norm(&b)).max(1e-30);
                let ratio = norm(&b) / norm(&a).max(1e-30);
                report.push((name.clone(), cos, ratio));
            }
            (None, None) => {}
            _ => panic!("{name}: a gradient on one device only"),
        }
    }
    report.sort_by(|x, y| x.1.total_cmp(&y.1));
    println!(
        "least aligned gradients (name, cosine, GPU/CPU norm): {:?}",
        &report[..3]
    );
    for (name, cos, ratio) in &report {
        // A wrong backward scales (max-pool) or scrambles a gradient; round-off does neither.
        assert!(
            *cos > 0.995,
            "gradient of {name}: cosine {cos} between CPU and GPU"
        );
        assert!(
            (ratio - 1.0).abs() < 0.05,
            "gradient of {name}: GPU/CPU norm {ratio}"
        );
    }
    let checked = report.len();
    assert!(checked > 100, "only {checked} gradients compared");
}

#[test]
fn a_model_trained_on_cuda_learns_the_cue_and_predicts_the_same_on_cpu() {
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = square_cue::square_cue_manifest(
        dir.path(),
        &[(Split::Train, 24), (Split::Val, 6), (Split::Test, 10)],
        99,
    );
    let mut cfg = TrainConfig::new(&manifest);
    cfg.image_column = "png8".into();
    cfg.image_size = 32;
    cfg.batch_size = 8;
    cfg.max_epochs = 12;
    cfg.patience = 100;
    cfg.learning_rate = 3e-3;
    cfg.seed = 5;
    cfg.backbone = "resnet:1,1,1,1:8".parse::<Arch>().unwrap();
    cfg.mode = Mode::Finetune1;
    cfg.device = "cuda".into();
    let out = dir.path().join("gpu");
    let r = train(&cfg, &out, &TrainOptions::default()).unwrap();
    assert!(r.completed);
    let ok = r
        .predictions
        .iter()
        .filter(|p| (p.score >= 0.5) == (p.label == Label::Covid))
        .count();
    let acc = ok as f64 / r.predictions.len() as f64;
    assert!(
        acc >= 0.9,
        "test accuracy {acc} on the GPU; log {:?}",
        r.log
    );

    let on_cpu = cxr_model::load_classifier(&cfg.backbone, &out.join("model.safetensors")).unwrap();
    let again = cxr_model::predict_manifest(&on_cpu, &manifest, "png8", 32, 8, "m").unwrap();
    let test: Vec<_> = again
        .into_iter()
        .filter(|p| p.split == Split::Test)
        .collect();
    assert_eq!(test.len(), r.predictions.len());
    for (x, y) in test.iter().zip(&r.predictions) {
        assert_eq!(x.id, y.id);
        assert!(
            (x.score - y.score).abs() < 1e-3,
            "{}: {} on the CPU vs {} on the GPU",
            x.id,
            x.score,
            y.score
        );
    }
}
