//! What each fine-tune mode trains, and how weight loading fails.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use cxr_model::{Arch, Classifier, Mode, ModelError};

#[test]
fn resnet50_finetune1_trains_exactly_184449_parameters() {
    let m = Classifier::new(&Arch::resnet50(), Mode::Finetune1, 0, &Device::Cpu).unwrap();
    assert_eq!(m.trainable_parameter_count(), 184_449);
    // Head alone (frozen backbone): Dense(2048→64) + BN(64) affine + Dense(64→1).
    let head = 2048 * 64 + 64 + 2 * 64 + 64 + 1;
    let m = Classifier::new(&Arch::resnet50(), Mode::Frozen, 0, &Device::Cpu).unwrap();
    assert_eq!(m.trainable_parameter_count(), head);
    // Finetune2 adds the last two convolutions: layer4.2.conv2 (3x3, 512→512) and conv3 (1x1, 512→2048).
    let m = Classifier::new(&Arch::resnet50(), Mode::Finetune2, 0, &Device::Cpu).unwrap();
    assert_eq!(
        m.trainable_parameter_count(),
        184_449 + 512 * 512 * 9 + 512 * 2048
    );
    let trainable: Vec<String> = m
        .params()
        .iter()
        .filter(|(n, p)| p.trainable && n.contains("conv"))
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(
        trainable,
        ["layer4.2.conv2.weight", "layer4.2.conv3.weight"]
    );
    let m = Classifier::new(&Arch::resnet50(), Mode::Full, 0, &Device::Cpu).unwrap();
    assert_eq!(m.trainable_parameter_count(), 23_508_032 + head);
}

#[test]
fn vgg16_modes() {
    let head = 512 * 64 + 64 + 2 * 64 + 64 + 1;
    // VGG16 has no BatchNorm: Finetune1 trains the head only.
    let m = Classifier::new(&Arch::vgg16(), Mode::Finetune1, 0, &Device::Cpu).unwrap();
    assert_eq!(m.trainable_parameter_count(), head);
    let m = Classifier::new(&Arch::vgg16(), Mode::Finetune2, 0, &Device::Cpu).unwrap();
    assert_eq!(
        m.trainable_parameter_count(),
        head + 2 * (512 * 512 * 9 + 512)
    );
    let m = Classifier::new(&Arch::vgg16(), Mode::Full, 0, &Device::Cpu).unwrap();
    assert_eq!(m.trainable_parameter_count(), 14_714_688 + head);
}

#[test]
fn seeded_initialisation_is_deterministic() {
    let arch: Arch = "resnet:1,1,1,1:4".parse().unwrap();
    let a = Classifier::new(&arch, Mode::Finetune1, 3, &Device::Cpu).unwrap();
    let b = Classifier::new(&arch, Mode::Finetune1, 3, &Device::Cpu).unwrap();
    let c = Classifier::new(&arch, Mode::Finetune1, 4, &Device::Cpu).unwrap();
    let get = |m: &Classifier| {
        m.params()
            .get("layer1.0.conv2.weight")
            .unwrap()
            .var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(get(&a), get(&b));
    assert_ne!(get(&a), get(&c));
    assert_eq!(arch.to_string(), "resnet:1,1,1,1:4");
    assert_eq!("vgg16".parse::<Arch>().unwrap(), Arch::vgg16());
    assert!("resnet:1,1:4".parse::<Arch>().is_err());
}

#[test]
fn weight_loading_errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let arch: Arch = "resnet:1,1,1,1:4".parse().unwrap();
    let src = Classifier::new(&arch, Mode::Finetune1, 1, &Device::Cpu).unwrap();
    let mut tensors: HashMap<String, Tensor> = src
        .params()
        .iter()
        .map(|(n, p)| (n.clone(), p.var.as_tensor().clone()))
        .collect();

    // Round trip (extra tensors such as torchvision's `fc.weight` are ignored).
    tensors.insert(
        "fc.weight".into(),
        Tensor::zeros((10, 128), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let good = dir.path().join("good.safetensors");
    candle_core::safetensors::save(&tensors, &good).unwrap();
    let mut dst = Classifier::new(&arch, Mode::Finetune1, 2, &Device::Cpu).unwrap();
    dst.load_backbone(&good).unwrap();
    let w = |m: &Classifier| {
        m.params()
            .get("layer3.0.conv1.weight")
            .unwrap()
            .var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(&src), w(&dst));

    let mut missing = tensors.clone();
    missing.remove("layer2.0.downsample.1.running_var");
    let path = dir.path().join("missing.safetensors");
    candle_core::safetensors::save(&missing, &path).unwrap();
    let err = dst.load_backbone(&path).unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("layer2.0.downsample.1.running_var") && msg.contains("missing.safetensors"),
        "{msg}"
    );

    let mut bad = tensors.clone();
    bad.insert(
        "layer1.0.conv2.weight".into(),
        Tensor::zeros((4, 4, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.path().join("bad.safetensors");
    candle_core::safetensors::save(&bad, &path).unwrap();
    let msg = dst.load_backbone(&path).unwrap_err().to_string();
    assert!(
        msg.contains("layer1.0.conv2.weight") && msg.contains("[4, 4, 1, 1]"),
        "{msg}"
    );

    let path = dir.path().join("not-there.safetensors");
    let msg = dst.load_backbone(&path).unwrap_err().to_string();
    assert!(msg.contains("not-there.safetensors"), "{msg}");
}

#[test]
fn feature_norm_standardises_the_head_input_and_is_saved_but_never_trained() {
    let arch: Arch = "resnet:1,1,1,1:4".parse().unwrap();
    let dev = Device::Cpu;
    let m = Classifier::new(&arch, Mode::Frozen, 3, &dev).unwrap();
    let dim = arch.feature_dim();
    // Features at different scales (std 1x to 10x) and offsets per channel; channel 0 is constant (a dead ReLU).
    let sd_factor = |c: usize| 1.0 + 9.0 * c as f64 / dim as f64;
    let rows: Vec<f32> = (0..10 * dim)
        .map(|i| {
            let (n, c) = (i / dim, i % dim);
            if c == 0 {
                3.0
            } else {
                (c as f64 * 10.0 + (n as f64 - 4.5) * sd_factor(c)) as f32
            }
        })
        .collect();
    let f = Tensor::from_vec(rows, (10, dim), &dev).unwrap();
    let before = m.head_logits(&f).unwrap().to_vec1::<f32>().unwrap();
    m.set_feature_norm(&f).unwrap();
    let after = m.head_logits(&f).unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(
        before, after,
        "the standardisation must change the head's input"
    );
    let p = m.params();
    let mean = p
        .get("head.norm.mean")
        .unwrap()
        .var
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    let scale = p
        .get("head.norm.scale")
        .unwrap()
        .var
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(mean[0], 3.0);
    assert!(
        scale[0].is_finite() && scale[0] < 10.0,
        "a constant channel must not be blown up: {}",
        scale[0]
    );
    // Channel c: mean 10c, std = factor(c) · std(0..9); channels above the median variance come out at unit
    // std (the floor, 1 % of the median variance, only shrinks the small ones).
    let sd = |c: usize| sd_factor(c) * (8.25f64).sqrt();
    for c in 1..dim {
        assert!((mean[c] as f64 - 10.0 * c as f64).abs() < 1e-3 * c as f64 + 1e-3);
        let unit = scale[c] as f64 * sd(c);
        assert!(unit <= 1.0 + 1e-4 && unit > 0.5, "channel {c}: {unit}");
        if c > dim / 2 {
            assert!(unit > 0.99, "channel {c}: {unit}");
        }
    }
    assert!(!p.get("head.norm.mean").unwrap().trainable);
    assert!(!p.get("head.norm.scale").unwrap().trainable);
    // Saved and loaded with the model: the loaded classifier scores the same.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    m.save(&path).unwrap();
    let loaded = cxr_model::load_classifier(&arch, &path).unwrap();
    assert_eq!(
        loaded.head_logits(&f).unwrap().to_vec1::<f32>().unwrap(),
        after
    );
}

#[test]
fn centered_feature_map_gives_the_same_logits() {
    for arch in ["resnet:1,1,1,1:4", "vgg:4,4,4,4,4"] {
        let arch: Arch = arch.parse().unwrap();
        let dev = Device::Cpu;
        let m = Classifier::new(&arch, Mode::Frozen, 5, &dev).unwrap();
        let x = Tensor::rand(0f32, 1f32, (3, 3, 32, 32), &dev).unwrap();
        m.set_feature_norm(&m.features(&x).unwrap()).unwrap();
        let direct = m.logits(&x).unwrap().to_vec1::<f32>().unwrap();
        let fm = m.centered_feature_map(&x).unwrap();
        // Centered: the pooled map averages to zero over these images, per channel.
        let pooled = fm.mean(3).unwrap().mean(2).unwrap().mean(0).unwrap();
        let worst = pooled
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        if arch.to_string().starts_with("resnet") {
            assert!(worst < 1e-4, "{arch}: {worst}");
        }
        let via = m
            .logit_from_centered_feature_map(&fm)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in direct.iter().zip(&via) {
            assert!((a - b).abs() < 1e-4, "{arch}: {a} vs {b}");
        }
    }
}

#[test]
fn per_image_norm_ignores_brightness_and_contrast_and_travels_with_the_model() {
    let arch: Arch = "resnet:1,1,1,1:4".parse().unwrap();
    let dev = Device::Cpu;
    let m = Classifier::new(&arch, Mode::Frozen, 5, &dev).unwrap();
    assert!(!m.per_image_norm(), "off by default");
    // Two images with structure; their brighter, lower-contrast copies (an affine change of every pixel).
    let base: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 7919 % 251) as f32 / 251.0 - 0.5) * 2.0)
        .collect();
    let shifted: Vec<f32> = base.iter().map(|v| 0.4 * v + 1.5).collect();
    let x = Tensor::from_vec(base, (2, 3, 32, 32), &dev).unwrap();
    let y = Tensor::from_vec(shifted, (2, 3, 32, 32), &dev).unwrap();
    let logits = |m: &Classifier, t: &Tensor| {
        m.features(t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    let scale = |a: &[f32]| a.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let (fx, fy) = (logits(&m, &x), logits(&m, &y));
    assert!(
        max_diff(&fx, &fy) > 1e-2 * scale(&fx),
        "without it the backbone sees the change"
    );
    m.set_per_image_norm(true).unwrap();
    assert!(m.per_image_norm());
    let (gx, gy) = (logits(&m, &x), logits(&m, &y));
    assert!(
        max_diff(&gx, &gy) <= 1e-3 * scale(&gx),
        "{} vs {}",
        max_diff(&gx, &gy),
        scale(&gx)
    );
    assert!(!m.params().get(cxr_model::INPUT_NORM).unwrap().trainable);
    // Saved with the model; a file without the flag (an older model) loads with it off.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    m.save(&path).unwrap();
    let mut loaded = Classifier::new(&arch, Mode::Frozen, 5, &dev).unwrap();
    loaded.load_all(&path).unwrap();
    assert!(loaded.per_image_norm());
    assert_eq!(logits(&loaded, &y), gy);
    let mut tensors = candle_core::safetensors::load(&path, &dev).unwrap();
    tensors.remove(cxr_model::INPUT_NORM);
    let old = dir.path().join("old.safetensors");
    candle_core::safetensors::save(&tensors, &old).unwrap();
    loaded.load_all(&old).unwrap();
    assert!(!loaded.per_image_norm());
}

/// Inference caches each layer's folded BatchNorm; every way the parameters change must invalidate it: a
/// training forward (running statistics), an optimiser step (affine parameters) and a restore.
#[test]
fn inference_follows_every_parameter_change_despite_the_folded_batch_norm_cache() {
    let arch: Arch = "resnet:1,1,1,1:8".parse().unwrap();
    let model = Classifier::new(&arch, Mode::Finetune1, 3, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let features = |m: &Classifier| {
        m.features(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let before = features(&model);
    assert_eq!(features(&model), before, "inference is repeatable");
    let saved = model.params().snapshot(|_| true).unwrap();

    // Training forward: the running statistics move, so inference must change.
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let logits = model.forward_train(&x, &mut rng).unwrap();
    let after_stats = features(&model);
    assert_ne!(
        after_stats, before,
        "stale folded weights after a training forward"
    );

    // Optimiser step on the BatchNorm affine parameters.
    let y = Tensor::new(&[0f32, 1.0], &Device::Cpu).unwrap();
    let loss = cxr_model::bce_with_logits(&logits, &y).unwrap();
    let mut adam = cxr_model::optim::Adam::new(model.params().trainable(), 1e-2).unwrap();
    adam.step(&loss.backward().unwrap()).unwrap();
    assert_ne!(
        features(&model),
        after_stats,
        "stale folded weights after an Adam step"
    );

    // Restore: back to the first features exactly.
    model
        .params()
        .restore(&saved, std::path::Path::new("snapshot"))
        .unwrap();
    assert_eq!(
        features(&model),
        before,
        "stale folded weights after a restore"
    );
}
