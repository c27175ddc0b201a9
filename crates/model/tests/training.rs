//! Training end to end on generated images: a visible cue is learnt to near-perfect accuracy, a run stopped
//! after epoch k and resumed ends with the same predictions as an uninterrupted one, Finetune1 leaves the
//! convolutions untouched, and the frozen-backbone path trains the head on cached features.

use std::path::{Path, PathBuf};

use candle_core::Device;
use cxr_core::{Label, Split};
use cxr_model::{Arch, Classifier, Mode, TrainConfig, TrainOptions, train};

#[path = "common/square_cue.rs"]
mod square_cue;

/// The shared square-cue training set, seeded as these tests always were.
fn world(dir: &Path, per_class: [(Split, usize); 3]) -> PathBuf {
    square_cue::square_cue_manifest(dir, &per_class, 99)
}

fn config(manifest: &Path, mode: Mode, epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::new(manifest);
    cfg.image_column = "png8".into();
    cfg.image_size = 32;
    cfg.batch_size = 8;
    cfg.max_epochs = epochs;
    cfg.patience = 100;
    cfg.learning_rate = 3e-3;
    cfg.seed = 5;
    cfg.backbone = "resnet:1,1,1,1:8".parse::<Arch>().unwrap();
    cfg.mode = mode;
    cfg
}

fn accuracy(preds: &[cxr_core::Prediction]) -> f64 {
    let ok = preds
        .iter()
        .filter(|p| (p.score >= 0.5) == (p.label == Label::Covid))
        .count();
    ok as f64 / preds.len() as f64
}

#[test]
fn finetune1_learns_a_visible_cue_and_resume_gives_identical_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = world(
        dir.path(),
        [(Split::Train, 24), (Split::Val, 6), (Split::Test, 10)],
    );
    let cfg = config(&manifest, Mode::Finetune1, 12);

    let out_a = dir.path().join("a");
    let a = train(&cfg, &out_a, &TrainOptions::default()).unwrap();
    assert!(a.completed && !a.pretrained);
    assert_eq!(a.predictions.len(), 20);
    let acc = accuracy(&a.predictions);
    assert!(acc >= 0.9, "test accuracy {acc}; log {:?}", a.log);
    assert!(a.best_val_accuracy >= 0.9, "{:?}", a.log);
    // predictions.csv holds the validation rows (at the best weights) beside the test rows.
    let all = cxr_core::read_predictions(&out_a.join("predictions.csv")).unwrap();
    let preds: Vec<_> = all
        .iter()
        .filter(|p| p.split == Split::Test)
        .cloned()
        .collect();
    assert_eq!(preds, a.predictions);
    let val: Vec<_> = all
        .iter()
        .filter(|p| p.split == Split::Val)
        .cloned()
        .collect();
    assert_eq!(val.len(), 12);
    assert_eq!(all.len(), val.len() + preds.len());
    assert!(
        (accuracy(&val) - a.best_val_accuracy).abs() < 1e-9,
        "validation rows at the best epoch: {} vs {}",
        accuracy(&val),
        a.best_val_accuracy
    );
    assert_eq!(preds[0].model, "resnet:1,1,1,1:8-finetune1");
    let log = std::fs::read_to_string(out_a.join("training_log.csv")).unwrap();
    assert!(
        log.starts_with("epoch,train_loss,train_accuracy,val_loss,val_accuracy"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 1 + a.epochs_run);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_a.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["random_init"], true);
    assert_eq!(run["provenance"]["origin"], "random");

    // Fine-tuned from that randomly initialised model: still random at the root, and the chain is recorded.
    let mut ft = cfg.clone();
    ft.max_epochs = 1;
    ft.init = Some(out_a.join("model.safetensors"));
    let out_ft = dir.path().join("ft");
    let r = train(&ft, &out_ft, &TrainOptions::default()).unwrap();
    assert!(!r.pretrained);
    assert_eq!(
        r.provenance.describe().split(',').next(),
        Some("random init")
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_ft.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["pretrained"], false);
    assert_eq!(run["random_init"], true);
    let from = &run["provenance"]["fine_tuned_from"][0];
    assert!(
        from["path"]
            .as_str()
            .unwrap()
            .ends_with("model.safetensors"),
        "{run}"
    );
    assert_eq!(from["sha256"].as_str().unwrap().len(), 64, "{run}");

    // Finetune1 never touches a convolution; BatchNorm affine parameters do move.
    let init = Classifier::new(&cfg.backbone, cfg.mode, cfg.seed, &Device::Cpu).unwrap();
    let trained =
        cxr_model::load_classifier(&cfg.backbone, &out_a.join("model.safetensors")).unwrap();
    let get = |m: &Classifier, n: &str| {
        m.params()
            .get(n)
            .unwrap()
            .var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    for name in [
        "conv1.weight",
        "layer2.0.conv2.weight",
        "layer4.0.downsample.0.weight",
    ] {
        assert_eq!(get(&init, name), get(&trained, name), "{name} changed");
    }
    assert_ne!(
        get(&init, "layer2.0.bn2.weight"),
        get(&trained, "layer2.0.bn2.weight")
    );
    assert_ne!(
        get(&init, "bn1.running_mean"),
        get(&trained, "bn1.running_mean")
    );
    // The saved model predicts what training reported.
    let again =
        cxr_model::predict_manifest(&trained, &manifest, "png8", 32, 8, &preds[0].model).unwrap();
    let test: Vec<_> = again
        .into_iter()
        .filter(|p| p.split == Split::Test)
        .collect();
    assert_eq!(test.len(), preds.len());
    for (x, y) in test.iter().zip(&preds) {
        assert_eq!(x.id, y.id);
        assert!(
            (x.score - y.score).abs() < 1e-6,
            "{} vs {}",
            x.score,
            y.score
        );
    }

    // "Killed" after epoch 5, then resumed: the same final predictions, bit for bit.
    let out_b = dir.path().join("b");
    let part = train(
        &cfg,
        &out_b,
        &TrainOptions {
            resume: false,
            stop_after_epochs: Some(5),
        },
    )
    .unwrap();
    assert!(!part.completed);
    assert_eq!(part.epochs_run, 5);
    assert!(out_b.join("checkpoint.safetensors").exists());
    assert!(!out_b.join("predictions.csv").exists());
    let b = train(
        &cfg,
        &out_b,
        &TrainOptions {
            resume: true,
            stop_after_epochs: None,
        },
    )
    .unwrap();
    assert!(b.completed);
    assert_eq!(b.epochs_run, a.epochs_run);
    assert_eq!(b.best_epoch, a.best_epoch);
    assert_eq!(b.predictions, a.predictions);
    let strip = |l: &[cxr_model::LogRow]| {
        l.iter()
            .map(|r| (r.epoch, r.train_loss, r.val_accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&b.log), strip(&a.log));

    // A checkpoint of another config is refused by name.
    let mut other = cfg.clone();
    other.seed = 6;
    let msg = train(
        &other,
        &out_b,
        &TrainOptions {
            resume: true,
            stop_after_epochs: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("checkpoint.safetensors") && msg.contains("different config"),
        "{msg}"
    );
}

#[test]
fn frozen_backbone_trains_the_head_on_cached_features_with_early_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = world(
        dir.path(),
        [(Split::Train, 16), (Split::Val, 6), (Split::Test, 6)],
    );
    let mut cfg = config(&manifest, Mode::Frozen, 200);
    cfg.patience = 3;
    cfg.learning_rate = 1e-2;
    let out = dir.path().join("frozen");
    let r = train(&cfg, &out, &TrainOptions::default()).unwrap();
    assert!(r.completed);
    assert!(
        r.stopped_early,
        "early stopping must end a 200-epoch budget: {:?}",
        r.log.len()
    );
    assert_eq!(r.epochs_run, r.best_epoch + 3);
    assert_eq!(r.trainable_parameters, 256 * 64 + 64 + 128 + 65);
    // Best weights restored: the validation accuracy of the saved model is the best one.
    let model = cxr_model::load_classifier(&cfg.backbone, &out.join("model.safetensors")).unwrap();
    let preds = cxr_model::predict_manifest(&model, &manifest, "png8", 32, 8, "m").unwrap();
    let val: Vec<_> = preds
        .into_iter()
        .filter(|p| p.split == Split::Val)
        .collect();
    assert!((accuracy(&val) - r.best_val_accuracy).abs() < 1e-9);
}

#[test]
fn missing_image_column_and_empty_splits_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = world(
        dir.path(),
        [(Split::Train, 2), (Split::Test, 1), (Split::Finetune, 1)],
    );
    let mut cfg = config(&manifest, Mode::Frozen, 1);
    let msg = train(&cfg, &dir.path().join("o"), &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no val rows") && msg.contains("manifest.csv"),
        "{msg}"
    );
    cfg.image_column = "crop".into();
    let msg = train(&cfg, &dir.path().join("o"), &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`crop`") && msg.contains("manifest.csv"),
        "{msg}"
    );
}

#[test]
fn embed_writes_one_row_of_pooled_features_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = world(
        dir.path(),
        [(Split::Train, 2), (Split::Val, 1), (Split::Test, 1)],
    );
    let arch: Arch = "resnet:1,1,1,1:4".parse().unwrap();
    let opts = cxr_model::EmbedOptions {
        backbone: arch.clone(),
        image_size: 32,
        batch_size: 3,
        ..Default::default()
    };
    // From a manifest (no `crop` column: falls back to `png8`) and from a folder: the same features.
    let out_m = dir.path().join("features_manifest.csv");
    let r = cxr_model::embed(&manifest, &out_m, &opts).unwrap();
    assert_eq!((r.images, r.dim, r.pretrained), (8, 128, false));
    let out_d = dir.path().join("features_dir.csv");
    let r = cxr_model::embed(&dir.path().join("png"), &out_d, &opts).unwrap();
    assert_eq!(r.images, 8);
    let read = |p: &Path| -> std::collections::BTreeMap<String, Vec<f32>> {
        let mut rdr = csv::Reader::from_path(p).unwrap();
        let h = rdr.headers().unwrap().clone();
        assert_eq!(h.len(), 129);
        assert_eq!((&h[0], &h[1], &h[128]), ("id", "f0", "f127"));
        rdr.records()
            .map(|r| {
                let r = r.unwrap();
                (
                    r[0].to_string(),
                    r.iter().skip(1).map(|v| v.parse().unwrap()).collect(),
                )
            })
            .collect()
    };
    let (m, d) = (read(&out_m), read(&out_d));
    assert_eq!(m.keys().collect::<Vec<_>>(), d.keys().collect::<Vec<_>>());
    for (k, v) in &m {
        let w = &d[k];
        assert!(
            v.iter()
                .zip(w)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + a.abs())),
            "{k}"
        );
    }
    // The values are the classifier's pooled features of the normalised image.
    let model = Classifier::new(&arch, Mode::Frozen, 0, &Device::Cpu).unwrap();
    let id = m.keys().next().unwrap().clone();
    let x = cxr_model::load_image(&dir.path().join(format!("png/{id}.png")), &id, 32).unwrap();
    let x = candle_core::Tensor::from_vec(x, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let f = model
        .features(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        f.iter()
            .zip(&m[&id])
            .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + a.abs()))
    );
}
