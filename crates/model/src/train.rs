//! Training from an experiment config: early stopping on validation accuracy (as the paper; ties broken by the
//! lower validation loss, because small validation sets reach 100 % long before the head converges), best
//! weights restored,
//! a checkpoint after every epoch (atomic; weights, Adam moments, epoch, best score and weights, log), and
//! `predictions.csv` / `training_log.csv` / `model.safetensors` / `run.json` at the end.
//!
//! Determinism: all randomness (initialisation, shuffles, dropout masks) comes from ChaCha8 streams derived
//! from the config's seed — the stream of epoch `e` is `(seed, e)` — so the RNG state at an epoch boundary is
//! the epoch number, and a run resumed from the checkpoint of epoch `k` replays epochs `k+1..` bit for bit.
//!
//! This file is the loop; the config is in `train/config.rs`, the checkpoint in `train/checkpoint.rs`, the
//! weights' provenance in `train/provenance.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use cxr_core::{Manifest, Prediction, Split};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{ImageRow, batch_tensor, rows_from_manifest};
use crate::error::{CandleContext, ModelError, Result};
use crate::net::{Arch, Classifier, Mode, bce_with_logits};
use crate::optim::Adam;

mod checkpoint;
mod config;
mod provenance;

pub use checkpoint::CHECKPOINT;
use checkpoint::{CkptState, load_checkpoint, mutable, save_checkpoint};
pub use config::{TrainConfig, TrainOptions, device_by_name};
pub use provenance::{FineTunedFrom, Provenance};

/// One row of `training_log.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub best_val_accuracy: f64,
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// False when `stop_after_epochs` interrupted it (only the checkpoint and log were written).
    pub completed: bool,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    pub stopped_early: bool,
    pub trainable_parameters: usize,
    /// True only when the backbone's weights go back to ImageNet (see [`Provenance`]).
    pub pretrained: bool,
    pub provenance: Provenance,
    pub log: Vec<LogRow>,
    /// Test rows (`predictions.csv` also holds the validation rows, marked `split=val`).
    pub predictions: Vec<Prediction>,
    pub out_dir: PathBuf,
}

/// Builds the classifier of a config: seeded random init, then the backbone weights when given.
pub fn build_classifier(cfg: &TrainConfig, device: &Device) -> Result<Classifier> {
    let mut model = Classifier::new(&cfg.backbone, cfg.mode, cfg.seed, device)?;
    model.set_per_image_norm(cfg.per_image_norm)?;
    match (&cfg.weights, &cfg.init) {
        (Some(w), _) => model.load_backbone(w)?,
        // A classifier given as `init` brings its own backbone; its origin is reported by `Provenance`.
        (None, Some(_)) => {}
        (None, None) => tracing::warn!(
            backbone = %cfg.backbone,
            "NO BACKBONE WEIGHTS: the backbone is RANDOMLY INITIALISED (no ImageNet pre-training); results are \
             not comparable with the paper's. {}",
            weights_hint(&cfg.backbone)
        ),
    }
    if let Some(init) = &cfg.init {
        model.load_all(init)?;
        tracing::info!(init = %init.display(), "starting from a trained classifier");
    }
    Ok(model)
}

/// Where to get ImageNet weights for a backbone, for the random-initialisation warning.
pub fn weights_hint(arch: &Arch) -> String {
    match arch.to_string().as_str() {
        "resnet50" => "Pass `weights = \"weights/resnet50/model.safetensors\"` (timm resnet50.tv_in1k, see the \
                       README)."
            .into(),
        "vgg16" => "Pass `weights = \"weights/vgg16/model.safetensors\"` (timm vgg16.tv_in1k, see the README)."
            .into(),
        other => format!("Pass `weights` with a torchvision/timm safetensors file of a `{other}` backbone."),
    }
}

/// Training inputs: either images read per batch or cached backbone features (frozen mode).
enum Inputs<'a> {
    Images {
        rows: Vec<&'a ImageRow>,
        size: usize,
    },
    Features(Tensor),
}

impl Inputs<'_> {
    fn len(&self) -> usize {
        match self {
            Inputs::Images { rows, .. } => rows.len(),
            Inputs::Features(t) => t.dim(0).unwrap_or(0),
        }
    }

    fn batch(&self, idx: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            Inputs::Images { rows, size } => {
                let sel: Vec<&ImageRow> = idx.iter().map(|&i| rows[i]).collect();
                batch_tensor(&sel, *size, device)
            }
            Inputs::Features(t) => {
                let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                let ids = Tensor::new(ids.as_slice(), device).ctx(|| "index".into())?;
                t.index_select(&ids, 0)
                    .ctx(|| "selecting cached features".into())
            }
        }
    }
}

/// Inference-mode logits of every input, in batches.
fn eval_logits(model: &Classifier, inputs: &Inputs<'_>, batch: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(inputs.len());
    let idx: Vec<usize> = (0..inputs.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let x = inputs.batch(chunk, model.device())?;
        let l = match inputs {
            Inputs::Images { .. } => model.logits(&x),
            Inputs::Features(_) => model.head_logits(&x),
        }
        .and_then(|l| l.to_vec1::<f32>())
        .ctx(|| "inference".into())?;
        out.extend(l);
    }
    Ok(out)
}

/// Pooled features of rows (inference mode), as one [N, F] tensor.
pub fn features_of(
    model: &Classifier,
    rows: &[&ImageRow],
    size: usize,
    batch: usize,
) -> Result<Tensor> {
    if let Some(cache) = crate::feature_cache::FeatureCache::from_env(model, size)? {
        return features_cached(model, rows, size, batch, &cache);
    }
    let mut parts = Vec::new();
    for (i, chunk) in rows.chunks(batch.max(1)).enumerate() {
        let x = batch_tensor(chunk, size, model.device())?;
        parts.push(model.features(&x).ctx(|| "backbone features".into())?);
        if i % 20 == 19 {
            tracing::info!(
                done = (i + 1) * batch,
                total = rows.len(),
                "computing features"
            );
        }
    }
    if parts.is_empty() {
        return Tensor::zeros(
            (0, model.arch().feature_dim()),
            candle_core::DType::F32,
            model.device(),
        )
        .ctx(|| "features".into());
    }
    Tensor::cat(&parts, 0).ctx(|| "features".into())
}

/// [`features_of`] through the on-disk cache: only the images not cached yet go through the backbone.
fn features_cached(
    model: &Classifier,
    rows: &[&ImageRow],
    size: usize,
    batch: usize,
    cache: &crate::feature_cache::FeatureCache,
) -> Result<Tensor> {
    let (keys, mut vectors) = crate::feature_cache::split_cached(cache, rows)?;
    let missing: Vec<usize> = (0..rows.len()).filter(|&i| vectors[i].is_none()).collect();
    if !missing.is_empty() {
        tracing::info!(
            missing = missing.len(),
            total = rows.len(),
            "computing features (cache)"
        );
    }
    for chunk in missing.chunks(batch.max(1)) {
        let chunk_rows: Vec<&ImageRow> = chunk.iter().map(|&i| rows[i]).collect();
        let x = batch_tensor(&chunk_rows, size, model.device())?;
        let f = model
            .features(&x)
            .and_then(|f| f.to_vec2::<f32>())
            .ctx(|| "backbone features".into())?;
        for (&i, v) in chunk.iter().zip(f) {
            cache.put(&keys[i], &v)?;
            vectors[i] = Some(v);
        }
    }
    let dim = model.arch().feature_dim();
    let flat: Vec<f32> = vectors.into_iter().flatten().flatten().collect();
    Tensor::from_vec(flat, (rows.len(), dim), model.device()).ctx(|| "features".into())
}

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

fn loss_and_accuracy(logits: &[f32], targets: &[f32]) -> (f64, f64) {
    let n = logits.len().max(1) as f64;
    let mut loss = 0.0;
    let mut correct = 0usize;
    for (&x, &y) in logits.iter().zip(targets) {
        let (x, y) = (x as f64, y as f64);
        loss += x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
        correct += usize::from((x >= 0.0) == (y >= 0.5));
    }
    (loss / n, correct as f64 / n)
}

fn targets_of(rows: &[&ImageRow]) -> Vec<f32> {
    rows.iter()
        .map(|r| r.label.target().map(f32::from).unwrap_or(0.0))
        .collect()
}

fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// Trains as `cfg` says, writing everything under `out_dir`. See the module doc for the outputs.
pub fn train(cfg: &TrainConfig, out_dir: &Path, opts: &TrainOptions) -> Result<TrainReport> {
    cfg.validate().map_err(|message| ModelError::Config {
        path: cfg.manifest.clone(),
        message,
    })?;
    let device = device_by_name(&cfg.device)?;
    let manifest = Manifest::read(&cfg.manifest)?;
    let (rows, skipped) = rows_from_manifest(&manifest, &cfg.image_column, &cfg.manifest)?;
    if skipped > 0 {
        tracing::warn!(skipped, column = %cfg.image_column, "rows without an image left out");
    }
    let in_task = |r: &&ImageRow| r.label.target().is_some();
    let train_rows: Vec<&ImageRow> = rows
        .iter()
        .filter(|r| r.split == Some(Split::Train))
        .filter(in_task)
        .collect();
    // Validation and test score original images only (augmented copies are for training).
    let val_rows: Vec<&ImageRow> = rows
        .iter()
        .filter(|r| r.split == Some(Split::Val) && r.is_original())
        .filter(in_task)
        .collect();
    let mut test_rows: Vec<ImageRow> = rows
        .iter()
        .filter(|r| r.split == Some(Split::Test) && r.is_original())
        .filter(in_task)
        .cloned()
        .collect();
    for tm in &cfg.test_manifests {
        let m = Manifest::read(tm)?;
        let (extra, _) = rows_from_manifest(&m, &cfg.image_column, tm)?;
        test_rows.extend(
            extra
                .into_iter()
                .filter(|r| r.is_original() && r.label.target().is_some()),
        );
    }
    for (what, n) in [("train", train_rows.len()), ("val", val_rows.len())] {
        if n == 0 {
            return Err(ModelError::Data {
                path: cfg.manifest.clone(),
                message: format!(
                    "no {what} rows (split column = {what}, label covid or pneumonia) with a `{}` image",
                    cfg.image_column
                ),
            });
        }
    }
    tracing::info!(train = train_rows.len(), val = val_rows.len(), test = test_rows.len(), backbone = %cfg.backbone, mode = %cfg.mode, "training");

    let model = build_classifier(cfg, &device)?;
    let provenance = Provenance::of(cfg)?;
    let trainable = model.trainable_parameter_count();
    let mut adam = Adam::new(model.params().trainable(), cfg.learning_rate)?;
    let ckpt_path = out_dir.join(CHECKPOINT);
    let mut state = CkptState {
        config_hash: cfg.hash(),
        epochs_done: 0,
        best_epoch: 0,
        best_val_accuracy: -1.0,
        best_val_loss: f64::INFINITY,
        since_best: 0,
        adam_t: 0,
        finished: false,
        log: Vec::new(),
    };
    let mut best: Option<BTreeMap<String, Tensor>> = None;
    let mut resumed = false;
    if opts.resume {
        if ckpt_path.exists() {
            resumed = true;
            let (s, b) = load_checkpoint(&ckpt_path, &model, &mut adam, &state.config_hash)?;
            tracing::info!(
                epochs_done = s.epochs_done,
                "resumed from {}",
                ckpt_path.display()
            );
            state = s;
            best = b;
        } else {
            tracing::warn!(
                "--resume: no checkpoint at {}; starting from scratch",
                ckpt_path.display()
            );
        }
    }

    // Frozen mode: the backbone is fixed, so features are computed once.
    let size = cfg.image_size;
    let (train_in, val_in) = if cfg.mode == Mode::Frozen {
        tracing::info!("frozen backbone: caching features");
        (
            Inputs::Features(features_of(&model, &train_rows, size, cfg.batch_size)?),
            Inputs::Features(features_of(&model, &val_rows, size, cfg.batch_size)?),
        )
    } else {
        (
            Inputs::Images {
                rows: train_rows.clone(),
                size,
            },
            Inputs::Images {
                rows: val_rows.clone(),
                size,
            },
        )
    };
    // The head's input standardisation comes from the initial backbone's features of the training images
    // (a checkpoint already holds it; a classifier given as `init` keeps its own).
    if cfg.feature_norm && !resumed && cfg.init.is_none() {
        let features = match &train_in {
            Inputs::Features(t) => t.clone(),
            Inputs::Images { .. } => features_of(&model, &train_rows, size, cfg.batch_size)?,
        };
        model.set_feature_norm(&features)?;
    }
    let train_targets = targets_of(&train_rows);
    let val_targets = targets_of(&val_rows);

    while !state.finished && state.epochs_done < cfg.max_epochs {
        if opts
            .stop_after_epochs
            .is_some_and(|k| state.epochs_done >= k)
        {
            return Ok(TrainReport {
                completed: false,
                epochs_run: state.epochs_done,
                best_epoch: state.best_epoch,
                best_val_accuracy: state.best_val_accuracy,
                stopped_early: false,
                trainable_parameters: trainable,
                pretrained: provenance.pretrained(),
                provenance,
                log: state.log,
                predictions: Vec::new(),
                out_dir: out_dir.to_path_buf(),
            });
        }
        let epoch = state.epochs_done + 1;
        let t0 = Instant::now();
        let mut rng = epoch_rng(cfg.seed, epoch);
        let mut order: Vec<usize> = (0..train_in.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            // A batch of one has no batch statistics: skip the remainder (it is reshuffled next epoch).
            if chunk.len() < 2 {
                continue;
            }
            let x = train_in.batch(chunk, &device)?;
            let y: Vec<f32> = chunk.iter().map(|&i| train_targets[i]).collect();
            let yt = Tensor::new(y.as_slice(), &device).ctx(|| "targets".into())?;
            let logits = match &train_in {
                Inputs::Images { .. } => model.forward_train(&x, &mut rng),
                Inputs::Features(_) => model.head_train(&x, &mut rng),
            }
            .ctx(|| "training forward".into())?;
            let loss = bce_with_logits(&logits, &yt).ctx(|| "loss".into())?;
            let grads = loss.backward().ctx(|| "backward".into())?;
            adam.step(&grads)?;
            let l = logits.to_vec1::<f32>().ctx(|| "logits".into())?;
            let (bl, ba) = loss_and_accuracy(&l, &y);
            loss_sum += bl * y.len() as f64;
            correct += (ba * y.len() as f64).round() as usize;
            seen += y.len();
        }
        let val_logits = eval_logits(&model, &val_in, cfg.batch_size)?;
        let (val_loss, val_acc) = loss_and_accuracy(&val_logits, &val_targets);
        let better = val_acc > state.best_val_accuracy
            || (val_acc == state.best_val_accuracy && val_loss < state.best_val_loss);
        if better {
            state.best_val_accuracy = val_acc;
            state.best_val_loss = val_loss;
            state.best_epoch = epoch;
            state.since_best = 0;
            best = Some(model.params().snapshot(mutable)?);
        } else {
            state.since_best += 1;
        }
        let row = LogRow {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy: val_acc,
            best_val_accuracy: state.best_val_accuracy,
            seconds: t0.elapsed().as_secs_f64(),
        };
        tracing::info!(
            epoch,
            train_loss = row.train_loss,
            train_acc = row.train_accuracy,
            val_loss,
            val_acc,
            secs = row.seconds,
            "{}",
            epoch_progress(
                epoch,
                cfg.max_epochs,
                row.seconds,
                state.since_best,
                cfg.patience
            )
        );
        state.log.push(row);
        state.epochs_done = epoch;
        state.adam_t = adam.t;
        if state.since_best >= cfg.patience {
            tracing::info!(
                epoch,
                best_epoch = state.best_epoch,
                "early stopping: validation accuracy (ties: loss) has not improved for {} epochs",
                cfg.patience
            );
            state.finished = true;
        }
        write_log(&out_dir.join("training_log.csv"), &state.log)?;
        save_checkpoint(&ckpt_path, &model, &adam, &state, best.as_ref())?;
    }

    // Best weights back, then the outputs.
    if let Some(b) = &best {
        model.params().restore(b, &ckpt_path)?;
    }
    let stopped_early = state.finished && state.epochs_done < cfg.max_epochs;
    model.save(&out_dir.join("model.safetensors"))?;
    let test_refs: Vec<&ImageRow> = test_rows.iter().collect();
    let test_in = if cfg.mode == Mode::Frozen {
        Inputs::Features(features_of(&model, &test_refs, size, cfg.batch_size)?)
    } else {
        Inputs::Images {
            rows: test_refs.clone(),
            size,
        }
    };
    let logits = eval_logits(&model, &test_in, cfg.batch_size)?;
    let name = cfg.model_name();
    let to_prediction = |r: &ImageRow, l: f32, split: Split| Prediction {
        id: r.id.clone(),
        source: r.source.clone(),
        split,
        label: r.label,
        score: sigmoid(l),
        patient: r.patient.clone(),
        model: name.clone(),
    };
    let predictions: Vec<Prediction> = test_rows
        .iter()
        .zip(&logits)
        .map(|(r, &l)| to_prediction(r, l, r.split.unwrap_or(Split::Test)))
        .collect();
    // The validation rows too (best weights), so that the evaluation chooses its operating threshold on
    // them as documented; every test metric filters on `split`.
    let val_logits = eval_logits(&model, &val_in, cfg.batch_size)?;
    let val_predictions: Vec<Prediction> = val_rows
        .iter()
        .zip(&val_logits)
        .map(|(r, &l)| to_prediction(r, l, Split::Val))
        .collect();
    let all: Vec<Prediction> = val_predictions
        .into_iter()
        .chain(predictions.iter().cloned())
        .collect();
    cxr_core::write_predictions(&out_dir.join("predictions.csv"), &all)?;
    write_log(&out_dir.join("training_log.csv"), &state.log)?;
    let run = serde_json::json!({
        "model": name,
        "backbone": cfg.backbone.to_string(),
        "mode": cfg.mode.to_string(),
        "pretrained": provenance.pretrained(),
        "random_init": provenance.origin == "random",
        "provenance": provenance,
        "weights": cfg.weights.as_ref().map(|p| p.display().to_string()),
        "trainable_parameters": trainable,
        "epochs_run": state.epochs_done,
        "best_epoch": state.best_epoch,
        "best_val_accuracy": state.best_val_accuracy,
        "stopped_early": stopped_early,
        "seed": cfg.seed,
        "train_images": train_rows.len(),
        "val_images": val_rows.len(),
        "test_images": test_rows.len(),
        "config": cfg,
    });
    let bytes = serde_json::to_vec_pretty(&run).map_err(|e| ModelError::Invalid(e.to_string()))?;
    cxr_core::fsutil::write_atomic(&out_dir.join("run.json"), &bytes)?;
    Ok(TrainReport {
        completed: true,
        epochs_run: state.epochs_done,
        best_epoch: state.best_epoch,
        best_val_accuracy: state.best_val_accuracy,
        stopped_early,
        trainable_parameters: trainable,
        pretrained: provenance.pretrained(),
        provenance,
        log: state.log,
        predictions,
        out_dir: out_dir.to_path_buf(),
    })
}

fn write_log(path: &Path, log: &[LogRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in log {
        w.serialize(r).map_err(|e| ModelError::Data {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let bytes = w.into_inner().map_err(|e| ModelError::Data {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(cxr_core::fsutil::write_atomic(path, &bytes)?)
}

/// `epoch 3/50: 1.2 s; at most 56 s left, 4 s if validation accuracy stops improving now`: where a training
/// stands and how long it may still take (the epochs left times this epoch's time; early stopping ends it after
/// `patience` epochs without improvement).
pub fn epoch_progress(
    epoch: usize,
    max_epochs: usize,
    secs: f64,
    since_best: usize,
    patience: usize,
) -> String {
    let left = max_epochs.saturating_sub(epoch);
    let stall = patience.saturating_sub(since_best).min(left);
    if left == 0 {
        return format!("epoch {epoch}/{max_epochs}: {secs:.1} s; last epoch");
    }
    format!(
        "epoch {epoch}/{max_epochs}: {secs:.1} s; at most {:.0} s left, {:.0} s if validation accuracy stops \
         improving now",
        secs * left as f64,
        secs * stall as f64
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn epoch_progress_counts_epochs_and_estimates_the_time_left() {
        let p = super::epoch_progress(3, 50, 2.0, 1, 5);
        assert!(p.starts_with("epoch 3/50: 2.0 s"), "{p}");
        assert!(p.contains("at most 94 s left, 8 s if"), "{p}");
        assert!(super::epoch_progress(50, 50, 2.0, 0, 5).contains("last epoch"));
    }

    use super::*;

    /// Provenance through a chain: ImageNet file → fine-tuned → fine-tuned again stays ImageNet, with both
    /// starting models recorded nearest first; an `init` without a `run.json` is of unknown origin.
    #[test]
    fn provenance_follows_a_chain_of_fine_tunings() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::new(dir.path().join("m.csv"));
        cfg.weights = Some(dir.path().join("imagenet.safetensors"));
        let root = Provenance::of(&cfg).unwrap();
        assert!(root.pretrained() && root.fine_tuned_from.is_empty());
        cfg.weights = None;
        assert_eq!(Provenance::of(&cfg).unwrap().origin, "random");

        let step = |name: &str, parent: &Provenance| {
            let run_dir = dir.path().join(name);
            std::fs::create_dir_all(&run_dir).unwrap();
            std::fs::write(run_dir.join("model.safetensors"), name).unwrap();
            let run = serde_json::json!({"pretrained": parent.pretrained(), "provenance": parent});
            std::fs::write(run_dir.join("run.json"), run.to_string()).unwrap();
            run_dir.join("model.safetensors")
        };
        let first = step("first", &root);
        cfg.init = Some(first.clone());
        let p1 = Provenance::of(&cfg).unwrap();
        assert!(p1.pretrained());
        assert_eq!(p1.fine_tuned_from.len(), 1);
        let second = step("second", &p1);
        cfg.init = Some(second.clone());
        let p2 = Provenance::of(&cfg).unwrap();
        assert!(p2.pretrained());
        let paths: Vec<&str> = p2.fine_tuned_from.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [second.display().to_string(), first.display().to_string()]
        );
        assert_ne!(p2.fine_tuned_from[0].sha256, p2.fine_tuned_from[1].sha256);
        assert_eq!(
            p2.describe(),
            "ImageNet, fine-tuned from second/model.safetensors"
        );

        std::fs::remove_file(dir.path().join("first/run.json")).unwrap();
        cfg.init = Some(first);
        assert_eq!(Provenance::of(&cfg).unwrap().origin, "unknown");
    }

    /// The random-initialisation warning names the file of the backbone at hand.
    #[test]
    fn weights_hint_names_the_backbone_file() {
        let vgg = weights_hint(&Arch::vgg16());
        assert!(vgg.contains("vgg16") && !vgg.contains("resnet50"), "{vgg}");
        let resnet = weights_hint(&Arch::resnet50());
        assert!(
            resnet.contains("resnet50") && !resnet.contains("vgg"),
            "{resnet}"
        );
    }

    /// The documented experiment file parses, relative paths resolve against its folder, typos are refused.
    #[test]
    fn config_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(
            &path,
            r#"
manifest = "manifests/split.csv"
image_column = "png8"
image_size = 224
batch_size = 16
seed = 42
backbone = "vgg16"
mode = "finetune2"
weights = "weights/vgg16/model.safetensors"
test_manifests = ["/abs/unseen.csv"]
"#,
        )
        .unwrap();
        let cfg = TrainConfig::from_file(&path).unwrap();
        assert_eq!(cfg.manifest, dir.path().join("manifests/split.csv"));
        assert_eq!(
            cfg.weights.as_deref(),
            Some(dir.path().join("weights/vgg16/model.safetensors").as_path())
        );
        assert_eq!(cfg.test_manifests, [PathBuf::from("/abs/unseen.csv")]);
        assert_eq!(
            (cfg.backbone.clone(), cfg.mode),
            (Arch::vgg16(), Mode::Finetune2)
        );
        assert_eq!(
            (cfg.max_epochs, cfg.patience, cfg.learning_rate),
            (200, 5, 1e-4)
        );
        assert_eq!(cfg.model_name(), "vgg16-finetune2");

        std::fs::write(&path, "manifest = \"m.csv\"\nbatchsize = 8\n").unwrap();
        let msg = TrainConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            msg.contains("exp.toml") && msg.contains("batchsize"),
            "{msg}"
        );
        std::fs::write(&path, "manifest = \"m.csv\"\nmode = \"finetune3\"\n").unwrap();
        assert!(TrainConfig::from_file(&path).is_err());
        assert!(device_by_name("cpu").is_ok());
        assert!(device_by_name("tpu").is_err());
    }
}
