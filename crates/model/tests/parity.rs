//! Parity with PyTorch/torchvision: GAP features (inference and training mode), BatchNorm running-statistic
//! updates and gradients, on reduced-width networks with torchvision's own names, from the fixture written by
//! `scripts/make_parity_fixture.py`. Also: our full ResNet50 / VGG16 parameter names and shapes are exactly
//! torchvision's.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use cxr_model::{Arch, Classifier, Mode};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("parity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Same formula as the script: x[i] = 2 sin(0.61803398875 i + 0.5 cos(0.1 i)), flat NCHW index, f64 → f32.
fn formula_input(n: usize, size: usize) -> Tensor {
    let data: Vec<f32> = (0..n * 3 * size * size)
        .map(|i| {
            let i = i as f64;
            (2.0 * (0.61803398875 * i + 0.5 * (0.1 * i).cos()).sin()) as f32
        })
        .collect();
    Tensor::from_vec(data, (n, 3, size, size), &Device::Cpu).unwrap()
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("unexpected {other}"),
    }
}

/// max |ours - theirs| / max |theirs|.
fn rel_err(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    ours.iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn model(arch: &str, file: &str) -> Classifier {
    let arch: Arch = arch.parse().unwrap();
    let mut m = Classifier::new(&arch, Mode::Finetune1, 7, &Device::Cpu).unwrap();
    m.load_backbone(&fixtures().join(file)).unwrap();
    assert!(m.pretrained());
    m
}

#[test]
fn gap_features_match_pytorch_in_inference_mode() {
    let e = expected();
    let (n, size) = (
        e["n"].as_u64().unwrap() as usize,
        e["size"].as_u64().unwrap() as usize,
    );
    let x = formula_input(n, size);
    for (arch, file, key) in [
        (
            "resnet_arch",
            "parity_resnet.safetensors",
            "resnet_eval_gap",
        ),
        ("vgg_arch", "parity_vgg.safetensors", "vgg_eval_gap"),
    ] {
        let m = model(e[arch].as_str().unwrap(), file);
        let ours = m
            .features(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let err = rel_err(&ours, &flat(&e[key]));
        assert!(err < 1e-4, "{key}: relative error {err}");
        // The Grad-CAM halves compose to the same logits and change no state.
        let before = m
            .params()
            .get("bn1.running_mean")
            .map(|p| p.var.as_tensor().to_vec1::<f32>().unwrap());
        let fmap = m.feature_map(&x).unwrap();
        assert_eq!(fmap.rank(), 4);
        let a = m
            .logit_from_feature_map(&fmap)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = m.logits(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), n);
        let after = m
            .params()
            .get("bn1.running_mean")
            .map(|p| p.var.as_tensor().to_vec1::<f32>().unwrap());
        assert_eq!(before, after);
    }
}

#[test]
fn training_mode_features_running_stats_and_gradients_match_pytorch() {
    let e = expected();
    let (n, size) = (
        e["n"].as_u64().unwrap() as usize,
        e["size"].as_u64().unwrap() as usize,
    );
    let x = formula_input(n, size);
    let m = model(
        e["resnet_arch"].as_str().unwrap(),
        "parity_resnet.safetensors",
    );
    let feats = m.features_train(&x).unwrap();
    let ours = feats.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let err = rel_err(&ours, &flat(&e["resnet_train_gap"]));
    assert!(err < 1e-4, "train-mode GAP: relative error {err}");

    for (name, want) in e["resnet_train_running"].as_object().unwrap() {
        let got = m
            .params()
            .get(name)
            .unwrap()
            .var
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        let err = rel_err(&got, &flat(want));
        assert!(err < 1e-4, "{name}: relative error {err}");
    }

    let coef: Vec<f32> = (0..ours.len()).map(|i| (i as f64).cos() as f32).collect();
    let coef = Tensor::from_vec(coef, feats.shape(), &Device::Cpu).unwrap();
    let loss = (feats * coef).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (name, want) in e["resnet_train_grads"].as_object().unwrap() {
        let var = &m.params().get(name).unwrap().var;
        let got = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let err = rel_err(&got, &flat(want));
        // Gradients through batch statistics sum many terms: allow a little more than the forward.
        assert!(err < 1e-3, "gradient of {name}: relative error {err}");
    }
}

#[test]
fn full_size_names_and_shapes_are_torchvision_s() {
    let e = expected();
    for (arch, key) in [(Arch::resnet50(), "resnet50"), (Arch::vgg16(), "vgg16")] {
        let theirs = e["full_shapes"][key].as_object().unwrap();
        let m = Classifier::new(&arch, Mode::Frozen, 0, &Device::Cpu).unwrap();
        let mut ours = 0;
        for (name, p) in m
            .params()
            .iter()
            .filter(|(n, _)| Arch::is_backbone_param(n))
        {
            let shape: Vec<usize> = theirs
                .get(name)
                .unwrap_or_else(|| panic!("{key}: our `{name}` is not a torchvision name"))
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(p.var.dims(), shape.as_slice(), "{key}: {name}");
            ours += 1;
        }
        let needed = theirs
            .keys()
            .filter(|k| {
                !k.ends_with("num_batches_tracked")
                    && !k.starts_with("fc.")
                    && !k.starts_with("classifier.")
            })
            .count();
        assert_eq!(
            ours, needed,
            "{key}: every torchvision backbone tensor is ours"
        );
    }
}
