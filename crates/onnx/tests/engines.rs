//! The two engines agree: onnxruntime (where found; `skipped: ...` otherwise) and tract give the same scores,
//! logits and features on every committed fixture and on a torchvision model exported with PyTorch's
//! default exporter (dynamo, opset 18+; `skipped: ...` without torch and onnxscript), each names its engine
//! and version, and both take that default export.

use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_core::{Grey8, Scorer};
use cxr_onnx::{Engine, LoadOptions, ModelSpec, OnnxScorer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(spec: &Path, engine: Engine) -> OnnxScorer {
    let spec = ModelSpec::load(spec).unwrap();
    OnnxScorer::load(spec, &LoadOptions::engine(engine)).unwrap_or_else(|e| panic!("{engine}: {e}"))
}

/// Images that differ in every way the fixtures read (level, corner squares, noise), at `side` px.
fn images(side: u32, n: u32) -> Vec<Grey8> {
    (0..n)
        .map(|i| {
            let px = (0..side * side)
                .map(|k| {
                    let (r, c) = (k / side, k % side);
                    let square = (r / 32 + c / 32 + i) % 3 == 0;
                    let noise = (k.wrapping_mul(2654435761).wrapping_add(i * 97) >> 13) % 41;
                    (if square { 200 } else { 60 } + noise + 7 * i) as u8
                })
                .collect();
            Grey8::new(side, side, px).unwrap()
        })
        .collect()
}

fn onnxruntime_or_skip(what: &str) -> bool {
    match cxr_onnx::engine::onnxruntime() {
        Ok(_) => true,
        Err(e) => {
            println!("skipped: {what} (onnxruntime engine: {e})");
            false
        }
    }
}

/// Scores within 1e-5, logits within 1e-4, features within 1e-4 of the largest, on both engines.
fn assert_same(spec: &Path, imgs: &[Grey8]) -> (OnnxScorer, OnnxScorer) {
    let (t, o) = (load(spec, Engine::Tract), load(spec, Engine::Onnxruntime));
    let name = spec.display();
    let (a, b) = (t.score(imgs, true).unwrap(), o.score(imgs, true).unwrap());
    // Different images get different scores, so agreeing is not an accident of a constant model.
    let spread = a
        .scores
        .iter()
        .fold(0f64, |m, s| m.max((s - a.scores[0]).abs()));
    assert!(spread > 1e-3, "{name}: scores {:?} do not vary", a.scores);
    for (x, y) in a.scores.iter().zip(&b.scores) {
        assert!((x - y).abs() < 1e-5, "{name}: tract {x} vs onnxruntime {y}");
    }
    let (la, lb) = (t.logits(imgs).unwrap(), o.logits(imgs).unwrap());
    for (x, y) in la.iter().zip(&lb) {
        assert!(
            (x - y).abs() < 1e-4 * x.abs().max(1.0),
            "{name}: logit {x} vs {y}"
        );
    }
    assert_eq!(a.features.is_some(), t.has_features(), "{name}");
    assert_eq!(a.features.is_some(), b.features.is_some(), "{name}");
    if let (Some(fa), Some(fb)) = (a.features, b.features) {
        for (va, vb) in fa.iter().zip(&fb) {
            assert_eq!(va.len(), vb.len(), "{name}");
            let scale = va.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (x, y) in va.iter().zip(vb) {
                assert!((x - y).abs() <= 1e-4 * scale, "{name}: feature {x} vs {y}");
            }
        }
    }
    (t, o)
}

#[test]
fn both_engines_agree_on_every_committed_fixture_and_name_themselves() {
    if !onnxruntime_or_skip("engine parity on the fixtures") {
        return;
    }
    for (name, side) in [
        ("small_cnn", 64),
        ("cue_outside", 224),
        ("cue_inside", 224),
        ("lung_reader", 224),
        ("noise_reader", 224),
    ] {
        let (t, o) = assert_same(&fixtures().join(format!("{name}.toml")), &images(side, 5));
        assert_eq!(t.engine(), "tract 0.23.9");
        assert!(o.engine().starts_with("onnxruntime 1."), "{}", o.engine());
        assert_eq!(t.model_sha256(), o.model_sha256());
        assert_eq!(Scorer::engine(&o), Some(o.engine()));
    }
    // `auto` takes onnxruntime where it loads.
    let auto = load(&fixtures().join("small_cnn.toml"), Engine::Auto);
    assert!(
        auto.engine().starts_with("onnxruntime"),
        "{}",
        auto.engine()
    );
}

#[test]
fn images_of_other_sizes_are_resized_alike_on_both_engines() {
    if !onnxruntime_or_skip("engine parity on resized images") {
        return;
    }
    // 300 px images into the 224 px readers: the resize is ours, before either engine.
    assert_same(&fixtures().join("cue_outside.toml"), &images(300, 3));
}

fn torch_python() -> Option<PathBuf> {
    let p = std::env::var_os("CXR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/pyvenv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import torch, torchvision, onnx, onnxscript"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

/// What a user gets from `torch.onnx.export(model, x, path, dynamic_axes=...)` on torch >= 2.9 (dynamo,
/// opset 18+, weights as external data, `value_info` everywhere): both engines load it, agree, and the
/// `features` tensor (not a graph output) comes back from onnxruntime too.
#[test]
fn a_default_pytorch_export_loads_on_both_engines() {
    let Some(py) = torch_python() else {
        println!(
            "skipped: default-exporter test (no python with torch, torchvision, onnx, onnxscript; set CXR_PYTHON)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_fixtures.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg("--default-export")
        .arg(dir.path())
        .args(["--arch", "resnet18"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = dir.path().join("resnet18_default.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains("features = "), "{text}");
    let imgs = images(224, 3);
    let tract = load(&spec, Engine::Tract);
    let scored = tract.score(&imgs, true).unwrap();
    assert_eq!(scored.features.as_ref().unwrap()[0].len(), 512);
    if onnxruntime_or_skip("default export on onnxruntime") {
        assert_same(&spec, &imgs);
    }
}
