//! Training the lung UNet: BCE + Dice loss, Adam, augmentation, validation Dice each epoch, early stopping,
//! and a checkpoint (weights + Adam moments + state) written atomically after every epoch, from which a
//! killed run resumes exactly (every epoch's randomness is derived from the seed and the epoch number).
//!
//! Files, for `--out W.safetensors`: `W.safetensors` (best weights by validation Dice), `W.ckpt.safetensors`
//! (the latest epoch's checkpoint) and `W.report.json` ([`TrainReport`]). The held-out test part is scored
//! once at the end with the full inference pipeline (post-processing, mask resized back to the original
//! size, Dice against the original mask).
//!
//! This file is the loop; the config and schedule are in `train/config.rs`, the report's types in
//! `train/report.rs`, the checkpoint in `train/checkpoint.rs`, the held-out test in `train/held_out.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use candle_core::Tensor;
use cxr_ops::{Adam, AdamConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::{self, Part, Sample};
use crate::error::TensorContext;
use crate::infer::{Segmenter, dice};
use crate::{SegmentError, UNet};

mod checkpoint;
mod config;
mod held_out;
mod report;

use checkpoint::{State, load_checkpoint, save_checkpoint};
pub use config::{CPU_DEFAULT_EPOCHS, LrSchedule, TrainConfig};
use held_out::write_worst_gallery;
pub use held_out::{HeldOut, WORST_SHOWN, evaluate_held_out, held_out_dice};
pub use report::{DiceStats, EpochLog, SplitCounts, TrainReport, WorstCase};

/// Events for a progress display.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// Data loaded: (train, val, test) pairs.
    Loaded(usize, usize, usize),
    /// A batch finished: (epoch, batches done this epoch, batches per epoch, loss).
    Batch(usize, usize, usize, f64),
    Epoch(EpochLog),
}

/// The UNet's Adam: Keras' defaults (epsilon 1e-7), as in the paper, which trained its UNet in Keras. The
/// classifier keeps PyTorch's 1e-8; each training keeps the epsilon it always had, so no result moves
/// (`cxr_ops::AdamConfig` says more).
fn adam_config(lr: f64) -> AdamConfig {
    AdamConfig::keras(lr)
}

/// BCE (stable, on logits) + soft Dice loss over the batch.
pub fn bce_dice_loss(logits: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    // relu(z) - z*y + log(1 + exp(-|z|)): finite for any logit (candle's own version overflows at |z|~40).
    let bce = ((logits.relu()? - (logits * target)?)?
        + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?
    .mean_all()?;
    let p = candle_nn::ops::sigmoid(logits)?;
    let inter = (&p * target)?.sum_all()?;
    let denom = ((p.sum_all()? + target.sum_all()?)? + 1.0)?;
    let dice = (((inter * 2.0)? + 1.0)? / denom)?;
    bce + (1.0 - dice)?
}

/// Trains with no progress display. See [`train_with_progress`].
pub fn train(config: &TrainConfig) -> Result<TrainReport, SegmentError> {
    train_with_progress(config, &mut |_| {})
}

/// Trains a UNet per `config`, resuming from its checkpoint when allowed, and returns the report (also
/// written to [`TrainConfig::report_path`]). The best weights are at `config.out`.
pub fn train_with_progress(
    config: &TrainConfig,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<TrainReport, SegmentError> {
    config.validate()?;
    let device = crate::default_device();
    let side = config.unet.size;
    let s = side as usize;

    if config.data.is_empty() {
        return Err(SegmentError::Config("no training folder given".into()));
    }
    let mut pairs = data::list_all(&config.data)?;
    if let Some(n) = config.max_pairs {
        pairs.truncate(n);
    }
    let mut by_part: HashMap<Part, Vec<data::PairFile>> = HashMap::new();
    for p in pairs {
        let part = data::part_of(
            &p.patient,
            config.seed,
            config.val_fraction,
            config.test_fraction,
        );
        by_part.entry(part).or_default().push(p);
    }
    let split = split_counts(&by_part);
    let take = |part| by_part.get(&part).cloned().unwrap_or_default();
    let train_set = data::load_pairs(&take(Part::Train), side, false)?;
    let val_set = data::load_pairs(&take(Part::Val), side, false)?;
    let test_set = data::load_pairs(&take(Part::Test), side, true)?;
    if train_set.is_empty() || val_set.is_empty() {
        return Err(SegmentError::data(
            &config.data[0],
            format!(
                "{} training and {} validation pairs: need at least one of each",
                train_set.len(),
                val_set.len()
            ),
        ));
    }
    tracing::info!(
        train = train_set.len(),
        val = val_set.len(),
        test = test_set.len(),
        base = config.unet.base,
        size = side,
        "segment: training data loaded"
    );
    progress(TrainEvent::Loaded(
        train_set.len(),
        val_set.len(),
        test_set.len(),
    ));

    // Fresh or resumed state.
    let ckpt = config.checkpoint_path();
    let fingerprint = config.fingerprint();
    let resumed = if config.resume && ckpt.is_file() {
        Some(load_checkpoint(&ckpt, &device, &fingerprint)?)
    } else {
        None
    };
    let (model, mut adam, mut state) = match resumed {
        Some((tensors, moments, state)) => {
            let (model, vars) = UNet::from_tensors_trainable(config.unet, tensors, &device)
                .map_err(|e| SegmentError::weights(&ckpt, e.to_string()))?;
            let mut adam = Adam::new(vars, adam_config(config.lr)).ctx(|| "Adam state".into())?;
            if let Some(missing) = adam.restore(&moments, state.adam_t) {
                return Err(SegmentError::weights(
                    &ckpt,
                    format!("missing or mis-shaped `{missing}`"),
                ));
            }
            tracing::info!(
                epochs_done = state.epochs_done,
                "segment: resuming from {}",
                ckpt.display()
            );
            (model, adam, state)
        }
        None => {
            let (model, vars) = UNet::trainable(config.unet, config.seed, &device)?;
            let adam = Adam::new(vars, adam_config(config.lr)).ctx(|| "Adam state".into())?;
            let state = State {
                fingerprint: fingerprint.clone(),
                epochs_done: 0,
                adam_t: 0,
                best_val_dice: -1.0,
                best_epoch: 0,
                bad_epochs: 0,
                train_seconds: 0.0,
                history: Vec::new(),
                stopped: None,
            };
            (model, adam, state)
        }
    };

    let aug = config.augment;
    let epoch_pairs = balanced_indices(&train_set, config.balance);
    let batches = epoch_pairs.len().div_ceil(config.batch);
    while state.stopped.is_none() {
        if state.epochs_done >= config.epochs {
            state.stopped = Some(format!("reached {} epochs", config.epochs));
            break;
        }
        let started = Instant::now();
        let epoch = state.epochs_done + 1;
        adam.config.lr = config.lr_at(state.epochs_done);
        let mut rng = ChaCha8Rng::seed_from_u64(
            config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut order = epoch_pairs.clone();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for (bi, idx) in order.chunks(config.batch).enumerate() {
            let seeds: Vec<u64> = idx.iter().map(|_| rng.random()).collect();
            let pairs: Vec<(Vec<f32>, Vec<f32>)> = idx
                .par_iter()
                .zip(seeds)
                .map(|(&i, seed)| {
                    let smp = &train_set[i];
                    let img = crate::imageio::to_unit(&smp.image);
                    let mask = crate::imageio::to_unit(&smp.mask);
                    match &aug {
                        Some(a) => data::augment_pair(
                            &img,
                            &mask,
                            s,
                            a,
                            &mut ChaCha8Rng::seed_from_u64(seed),
                        ),
                        None => (img, mask),
                    }
                })
                .collect();
            let n = pairs.len();
            let (xs, ys): (Vec<Vec<f32>>, Vec<Vec<f32>>) = pairs.into_iter().unzip();
            let x = Tensor::from_vec(xs.concat(), (n, 1, s, s), &device).ctx(|| "batch".into())?;
            let y = Tensor::from_vec(ys.concat(), (n, 1, s, s), &device).ctx(|| "batch".into())?;
            let loss = model
                .forward(&x, Some(&mut rng))
                .and_then(|z| bce_dice_loss(&z, &y))
                .ctx(|| format!("epoch {epoch}: forward"))?;
            let lv = loss
                .to_scalar::<f32>()
                .ctx(|| format!("epoch {epoch}: loss"))? as f64;
            if !lv.is_finite() {
                return Err(SegmentError::Config(format!(
                    "epoch {epoch}: the loss became {lv}; lower the learning rate"
                )));
            }
            let grads = loss.backward().ctx(|| format!("epoch {epoch}: backward"))?;
            adam.step(&grads)
                .ctx(|| format!("epoch {epoch}: Adam step"))?;
            loss_sum += lv * n as f64;
            progress(TrainEvent::Batch(epoch, bi + 1, batches, lv));
        }
        let val_by_source = model_side_dice(&model, &val_set)?;
        let val_dice = macro_mean(&val_by_source);
        let log = EpochLog {
            epoch,
            train_loss: loss_sum / order.len().max(1) as f64,
            val_dice,
            val_dice_by_source: val_by_source,
            seconds: started.elapsed().as_secs_f64(),
            lr: adam.config.lr,
        };
        tracing::info!(
            epoch,
            lr = log.lr,
            loss = log.train_loss,
            val_dice,
            seconds = log.seconds,
            "segment: epoch done"
        );
        state.epochs_done = epoch;
        state.adam_t = adam.t;
        state.train_seconds += log.seconds;
        state.history.push(log.clone());
        if val_dice > state.best_val_dice {
            state.best_val_dice = val_dice;
            state.best_epoch = epoch;
            state.bad_epochs = 0;
            model.save(&config.out)?;
        } else {
            state.bad_epochs += 1;
        }
        if state.bad_epochs >= config.patience {
            state.stopped = Some(format!(
                "early stop: no better validation Dice for {} epochs",
                config.patience
            ));
        } else if let Some(budget) = config.time_budget_s {
            let mean = state.train_seconds / state.history.len() as f64;
            if state.train_seconds + mean > budget {
                state.stopped = Some(format!(
                    "time budget: {:.0} s used, another epoch (~{mean:.0} s) would pass {budget:.0} s",
                    state.train_seconds
                ));
            }
        }
        save_checkpoint(&ckpt, &model, &adam, &state)?;
        progress(TrainEvent::Epoch(log));
    }
    let stopped = state.stopped.clone().unwrap_or_default();
    tracing::info!(%stopped, best_epoch = state.best_epoch, "segment: training finished");

    // Held-out test with the full pipeline, on the best weights, with and without the test-time flip.
    let mut best = Segmenter::new(UNet::load(&config.out, &device)?);
    best.flip_tta = false;
    let plain = held_out_dice(&best, &test_set)?;
    best.flip_tta = true;
    let flipped = held_out_dice(&best, &test_set)?;
    let worst = write_worst_gallery(config, &test_set, &plain)?;
    let (test_dice, test_dice_min, by_prefix) = plain.summary();
    let report = TrainReport {
        config: config.clone(),
        parameters: config.unet.parameter_count(),
        train_pairs: train_set.len(),
        val_pairs: val_set.len(),
        test_pairs: test_set.len(),
        epoch_pairs: epoch_pairs.len(),
        split,
        epochs_run: state.epochs_done,
        best_epoch: state.best_epoch,
        best_val_dice: state.best_val_dice,
        test_dice,
        test_dice_min,
        test_dice_by_prefix: by_prefix,
        test_by_source: plain.by_source(),
        test_by_source_flip: flipped.by_source(),
        test_dice_flip: flipped.summary().0,
        worst,
        stopped_because: stopped,
        train_seconds: state.train_seconds,
        history: state.history.clone(),
    };
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| SegmentError::data(config.report_path(), e.to_string()))?;
    cxr_core::fsutil::write_atomic(&config.report_path(), &json)?;
    Ok(report)
}

/// Mean per-image Dice at the model side (threshold 0.5, no post-processing) per source: the cheap
/// validation score.
fn model_side_dice(model: &UNet, set: &[Sample]) -> Result<BTreeMap<String, f64>, SegmentError> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for chunk in set.chunks(16) {
        let images: Vec<_> = chunk.iter().map(|s| s.image.clone()).collect();
        let probs = crate::infer::probabilities(model, &images, 8, false)?;
        for (smp, p) in chunk.iter().zip(probs) {
            let pred: Vec<u8> = p.iter().map(|&v| u8::from(v > 0.5)).collect();
            let e = sums.entry(smp.source.clone()).or_default();
            e.0 += dice(&pred, &smp.mask.data);
            e.1 += 1;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(k, (s, n))| (k, s / n.max(1) as f64))
        .collect())
}

/// The mean of the per-source means: every source weighs the same in the choice of the best epoch, however
/// few images it has.
fn macro_mean(by_source: &BTreeMap<String, f64>) -> f64 {
    if by_source.is_empty() {
        return 0.0;
    }
    by_source.values().sum::<f64>() / by_source.len() as f64
}

/// Indices of one epoch's training pairs: every pair once, a smaller source's pairs repeated to
/// `balance` x the largest source's count (see [`TrainConfig::balance`]).
fn balanced_indices(set: &[Sample], balance: f64) -> Vec<usize> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for s in set {
        *count.entry(&s.source).or_default() += 1;
    }
    let largest = count.values().copied().max().unwrap_or(0) as f64;
    let mut out = Vec::with_capacity(set.len());
    for (i, s) in set.iter().enumerate() {
        let n = count.get(s.source.as_str()).copied().unwrap_or(1) as f64;
        let repeat = ((balance * largest / n).round() as usize).max(1);
        out.extend(std::iter::repeat_n(i, repeat));
    }
    out
}

/// Pairs and patients per source in each part of the split.
fn split_counts(by_part: &HashMap<Part, Vec<data::PairFile>>) -> BTreeMap<String, SplitCounts> {
    let mut out: BTreeMap<String, SplitCounts> = BTreeMap::new();
    let mut patients: BTreeMap<(String, &str), std::collections::BTreeSet<&str>> = BTreeMap::new();
    for (part, pairs) in by_part {
        let key = match part {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        };
        for p in pairs {
            let c = out.entry(p.source.clone()).or_default();
            match part {
                Part::Train => c.train += 1,
                Part::Val => c.val += 1,
                Part::Test => c.test += 1,
            }
            patients
                .entry((p.source.clone(), key))
                .or_default()
                .insert(&p.patient);
        }
    }
    for ((source, key), set) in patients {
        if let Some(c) = out.get_mut(&source) {
            match key {
                "train" => c.train_patients = set.len(),
                "val" => c.val_patients = set.len(),
                _ => c.test_patients = set.len(),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn loss_is_finite_for_extreme_logits_and_small_when_right() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[[-200f32, 200.0], [-30.0, 30.0]], &dev).unwrap();
        let y = Tensor::new(&[[0f32, 1.0], [0.0, 1.0]], &dev).unwrap();
        let l = bce_dice_loss(&z, &y).unwrap().to_scalar::<f32>().unwrap();
        assert!(l.is_finite() && l < 0.01, "{l}");
        let wrong = bce_dice_loss(&z.neg().unwrap(), &y)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(wrong.is_finite() && wrong > 50.0, "{wrong}");
    }

    #[test]
    fn cosine_schedule_decays_from_peak_to_floor() {
        let s = LrSchedule::Cosine { floor: 0.02 };
        assert!((s.factor(0.0) - 1.0).abs() < 1e-12);
        assert!((s.factor(0.5) - 0.51).abs() < 1e-12);
        assert!((s.factor(1.0) - 0.02).abs() < 1e-12);
        assert!((s.factor(7.0) - 0.02).abs() < 1e-12 && (s.factor(-1.0) - 1.0).abs() < 1e-12);
        let f: Vec<f64> = (0..=20).map(|i| s.factor(i as f64 / 20.0)).collect();
        assert!(f.windows(2).all(|w| w[1] < w[0]), "{f:?}");
        assert!(LrSchedule::Constant.factor(0.9) == 1.0);
    }

    #[test]
    fn progress_counts_epochs_only() {
        let mut c = TrainConfig::cpu_default("d", "w.safetensors");
        // The default is a fixed amount of work: no clock, and early stopping must not cut the decaying
        // schedule short.
        assert_eq!(c.time_budget_s, None);
        assert!(c.patience >= c.epochs);
        c.epochs = 40;
        assert_eq!(c.progress(0), 0.0);
        assert!((c.progress(10) - 0.25).abs() < 1e-12);
        assert!((c.lr_at(20) - 1e-3 * 0.51).abs() < 1e-15);
        assert_eq!(c.progress(50), 1.0);
        // A time budget is a guard on where to stop: it never moves the rate.
        let before: Vec<f64> = (0..40).map(|e| c.lr_at(e)).collect();
        c.time_budget_s = Some(1.0);
        assert_eq!(before, (0..40).map(|e| c.lr_at(e)).collect::<Vec<_>>());
        assert_eq!(TrainConfig::quick("d", "w").time_budget_s, None);
        // The paper's preset keeps its constant 1e-4.
        let p = TrainConfig::paper("d", "w.safetensors");
        assert_eq!(p.lr_at(0), 1e-4);
        assert_eq!(p.lr_at(99), 1e-4);
    }

    #[test]
    fn fingerprint_pins_the_epochs_of_a_decaying_schedule_only() {
        let a = TrainConfig::cpu_default("d", "a.safetensors");
        let mut b = TrainConfig::cpu_default("d", "b.safetensors");
        b.patience = 1;
        assert_eq!(a.fingerprint(), b.fingerprint());
        // The opt-in clock guard may change between runs: it does not shape any epoch.
        b.time_budget_s = Some(45.0 * 60.0);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut b = a.clone();
        b.epochs += 1;
        assert_ne!(a.fingerprint(), b.fingerprint());
        // A constant rate may be extended, as before schedules existed: same fingerprint string, too.
        let mut c = a.clone();
        c.schedule = LrSchedule::Constant;
        let mut d = c.clone();
        d.epochs = 80;
        d.time_budget_s = None;
        assert_eq!(c.fingerprint(), d.fingerprint());
        assert!(!c.fingerprint().contains("schedule") && a.fingerprint().contains("cosine"));
        let back: TrainConfig = serde_json::from_str(&c.fingerprint()).unwrap();
        assert_eq!(back.schedule, LrSchedule::Constant);
    }
}
