//! Training the lung UNet: BCE + Dice loss, Adam, augmentation, validation Dice each epoch, early stopping,
//! and a checkpoint (weights + Adam moments + state) written atomically after every epoch, from which a
//! killed run resumes exactly (every epoch's randomness is derived from the seed and the epoch number).
//!
//! Files, for `--out W.safetensors`: `W.safetensors` (best weights by validation Dice), `W.ckpt.safetensors`
//! (the latest epoch's checkpoint) and `W.report.json` ([`TrainReport`]). The held-out test part is scored
//! once at the end with the full inference pipeline (post-processing, mask resized back to the original
//! size, Dice against the original mask).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use cxr_core::Grey8;
use cxr_ops::{Adam, AdamConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{self, Augment, Part, Sample};
use crate::error::TensorContext;
use crate::infer::{Segmenter, dice};
use crate::{SegmentError, UNet, UNetConfig, unet};

/// Everything a training run depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training folders, each in one of [`crate::data`]'s layouts (Shenzhen/Montgomery, the Cohen lung
    /// masks, a synthetic world / its `lung-masks`), trained on together. A single path is accepted when
    /// read back (reports written before several folders could be given).
    #[serde(deserialize_with = "one_or_many")]
    pub data: Vec<PathBuf>,
    /// Best weights go here; the checkpoint and report beside it.
    pub out: PathBuf,
    pub unet: UNetConfig,
    /// Maximum epochs.
    pub epochs: usize,
    pub batch: usize,
    /// Adam learning rate (the paper's 1e-4; see [`TrainConfig::cpu_default`] for why the CPU default differs):
    /// the peak of [`TrainConfig::schedule`].
    pub lr: f64,
    /// How the learning rate changes over the run (constant when absent from a saved config).
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub schedule: LrSchedule,
    /// Stop after this many epochs without a better validation Dice.
    pub patience: usize,
    pub seed: u64,
    /// Fractions of patients held out for validation (early stopping) and test (the reported Dice).
    pub val_fraction: f64,
    pub test_fraction: f64,
    /// Random augmentation of training pairs; `None` to train on the pairs as they are.
    pub augment: Option<Augment>,
    /// Source balancing in [0, 1]: each epoch repeats the training pairs of a smaller source
    /// `round(balance x largest / its size)` times (at least once), so a small source is not drowned by a
    /// large one. 0 = every pair once (configs written before it existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub balance: f64,
    /// Stop after the epoch that would otherwise overrun this wall-clock budget (seconds, all runs of a
    /// resumed training together).
    pub time_budget_s: Option<f64>,
    /// Use only the first N pairs (sorted by name) — for tests and quick runs.
    pub max_pairs: Option<usize>,
    /// Resume from the checkpoint when one exists for the same configuration.
    pub resume: bool,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

impl TrainConfig {
    /// The default of `cargo xtask segment train`: sized to finish within 30 minutes on a shared 2-core
    /// CPU. Base 8 at 128 px (the paper's 64 at 256 costs ~250x more per image; base 16 measured 5 s per
    /// batch of 8 under the machine's concurrent load, base 8 3 s, so base 8 gets twice the steps); Adam at
    /// 1e-3 rather than the paper's 1e-4, because a network without BatchNorm at 1e-4 needs far more steps
    /// than 30 minutes allow (the paper's GPU setting is [`TrainConfig::paper`]). A 27-minute budget stops
    /// training in time for the final held-out evaluation. The rate decays along a cosine over that budget
    /// (or the epochs, whichever runs out first) to 2 % of the peak: at a constant 1e-3 the validation Dice
    /// of the last epochs swung between 0.937 and 0.956 from one epoch to the next. No early stopping
    /// (patience = epochs): at the high rates of the first half the validation Dice swings, and a patience
    /// of 6 stopped a run at epoch 12 of a planned ~25, at half the peak rate, with test Dice 0.947; the
    /// budget bounds the run and the best-validation weights are kept anyway.
    pub fn cpu_default(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            data: vec![data.into()],
            out: out.into(),
            unet: UNetConfig { base: 8, size: 128 },
            epochs: 40,
            batch: 8,
            lr: 1e-3,
            schedule: LrSchedule::Cosine { floor: 0.02 },
            patience: 40,
            seed: 2021,
            val_fraction: 0.1,
            test_fraction: 0.2,
            // Geometric only: on the Cohen held-out patients the archive appearance shifts did not help at
            // any strength measured (docs/PERFORMANCE.md); `Augment::archive()` keeps them for other data.
            augment: Some(Augment::default()),
            balance: 0.5,
            time_budget_s: Some(27.0 * 60.0),
            max_pairs: None,
            resume: true,
        }
    }

    /// About a minute and a half on 2 cores: a narrow UNet (base 8) at 64 px, for the integrator's
    /// 10-minute reproduce on the synthetic masks. Good enough to find the lungs for a crop, not a
    /// measurement of segmentation quality. (Base 4 at Adam 3e-3 was tried: it collapsed to empty masks.)
    pub fn quick(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            unet: UNetConfig { base: 8, size: 64 },
            epochs: 30,
            batch: 8,
            patience: 5,
            time_budget_s: Some(90.0),
            max_pairs: Some(400),
            // Kept as measured (and as cached by `reproduce`): a 90 s run is too short to settle anyway.
            schedule: LrSchedule::Constant,
            balance: 0.0,
            ..Self::cpu_default(data, out)
        }
    }

    /// The paper's setting (base 64, 256 px, Adam 1e-4): for a GPU (`--features cuda`).
    pub fn paper(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            unet: UNetConfig {
                base: 64,
                size: 256,
            },
            epochs: 100,
            batch: 8,
            lr: 1e-4,
            schedule: LrSchedule::Constant,
            patience: 10,
            time_budget_s: None,
            ..Self::cpu_default(data, out)
        }
    }

    /// Checkpoint path beside the weights: `W.ckpt.safetensors`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.out.with_extension("ckpt.safetensors")
    }

    /// Report path beside the weights: `W.report.json`.
    pub fn report_path(&self) -> PathBuf {
        self.out.with_extension("report.json")
    }

    fn validate(&self) -> Result<(), SegmentError> {
        self.unet.validate()?;
        let bad = |m: String| Err(SegmentError::Config(m));
        if self.batch == 0 || self.epochs == 0 {
            return bad("batch and epochs must be > 0".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("learning rate {} must be > 0", self.lr));
        }
        if let LrSchedule::Cosine { floor } = self.schedule
            && !(0.0..=1.0).contains(&floor)
        {
            return bad(format!("cosine schedule floor {floor} must be in [0, 1]"));
        }
        let (v, t) = (self.val_fraction, self.test_fraction);
        if !(0.0..1.0).contains(&v) || !(0.0..1.0).contains(&t) || v + t >= 1.0 || v <= 0.0 {
            return bad(format!(
                "val fraction {v} must be in (0, 1), test {t} in [0, 1), their sum below 1"
            ));
        }
        Ok(())
    }

    /// The fields that must match for a checkpoint to be resumed: everything but paths and patience, and
    /// the epoch and time budgets too when the learning rate is constant (a constant-rate run may be
    /// extended). A decaying schedule is laid out over those budgets, so changing them would change the
    /// rates of the epochs still to come: such a checkpoint resumes only under the same budgets.
    pub fn fingerprint(&self) -> String {
        let mut c = self.clone();
        c.out = PathBuf::new();
        c.resume = false;
        c.patience = 0;
        if c.schedule.is_constant() {
            c.time_budget_s = None;
            c.epochs = 0;
        }
        serde_json::to_string(&c).unwrap_or_default()
    }

    /// How far through the run the next epoch starts, in [0, 1]: the larger of the fraction of epochs and
    /// the fraction of the time budget used. Both come from the checkpointed state, so a resumed run
    /// carries on along the same schedule.
    pub fn progress(&self, epochs_done: usize, train_seconds: f64) -> f64 {
        let by_epochs = epochs_done as f64 / self.epochs.max(1) as f64;
        let by_time = match self.time_budget_s {
            Some(b) if b > 0.0 => train_seconds / b,
            _ => 0.0,
        };
        by_epochs.max(by_time).clamp(0.0, 1.0)
    }

    /// Learning rate of the epoch that starts after `epochs_done` epochs and `train_seconds` of training.
    pub fn lr_at(&self, epochs_done: usize, train_seconds: f64) -> f64 {
        self.lr
            * self
                .schedule
                .factor(self.progress(epochs_done, train_seconds))
    }
}

/// Learning-rate schedule, applied per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// The peak rate throughout (the paper's setting).
    #[default]
    Constant,
    /// Half a cosine from the peak at progress 0 down to `floor` x the peak at progress 1 (see
    /// [`TrainConfig::progress`]), so that the last epochs take small steps and settle.
    Cosine { floor: f64 },
}

impl LrSchedule {
    pub fn is_constant(&self) -> bool {
        matches!(self, Self::Constant)
    }

    /// Multiplier of the peak rate at `progress` in [0, 1].
    pub fn factor(&self, progress: f64) -> f64 {
        match *self {
            Self::Constant => 1.0,
            Self::Cosine { floor } => {
                let p = progress.clamp(0.0, 1.0);
                floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

/// One epoch of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    /// Mean per-image Dice on the validation patients at the model side (threshold 0.5, no
    /// post-processing).
    pub val_dice: f64,
    /// The same per source; `val_dice` is their mean, so every source weighs alike (absent in reports
    /// written before several sources).
    #[serde(default)]
    pub val_dice_by_source: BTreeMap<String, f64>,
    pub seconds: f64,
    /// Learning rate of the epoch (absent in reports written before schedules existed).
    #[serde(default)]
    pub lr: f64,
}

/// Result of a training run (also written to `W.report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub config: TrainConfig,
    pub parameters: usize,
    pub train_pairs: usize,
    pub val_pairs: usize,
    pub test_pairs: usize,
    /// Training pairs one epoch goes through (after [`TrainConfig::balance`]).
    #[serde(default)]
    pub epoch_pairs: usize,
    /// Pairs and patients per source in each part of the split by patient.
    #[serde(default)]
    pub split: BTreeMap<String, SplitCounts>,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_val_dice: f64,
    /// Mean per-image Dice on the held-out test patients, full pipeline at the original resolution.
    pub test_dice: Option<f64>,
    /// Lowest per-image test Dice.
    pub test_dice_min: Option<f64>,
    /// Test Dice per file-name prefix (e.g. `CHNCXR` = Shenzhen, `MCUCXR` = Montgomery).
    pub test_dice_by_prefix: BTreeMap<String, f64>,
    /// Held-out Dice per source (`shenzhen`, `montgomery`, `cohen`, ...) with its spread.
    #[serde(default)]
    pub test_by_source: BTreeMap<String, DiceStats>,
    /// The same with the test-time horizontal flip (probabilities of the image and its mirror averaged).
    #[serde(default)]
    pub test_by_source_flip: BTreeMap<String, DiceStats>,
    #[serde(default)]
    pub test_dice_flip: Option<f64>,
    /// The worst held-out cases, worst first, with overlays beside the weights.
    #[serde(default)]
    pub worst: Vec<WorstCase>,
    pub stopped_because: String,
    /// Wall-clock seconds of training (all resumed runs together), excluding the final test.
    pub train_seconds: f64,
    pub history: Vec<EpochLog>,
}

/// Pairs and patients of one source in each part of the split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitCounts {
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub train_patients: usize,
    pub val_patients: usize,
    pub test_patients: usize,
}

/// Spread of per-image Dice over a group of held-out images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiceStats {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub median: f64,
    /// 10th percentile (nearest rank): a tenth of the images score below it.
    pub p10: f64,
    pub min: f64,
}

impl DiceStats {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                n,
                mean: f64::NAN,
                sd: f64::NAN,
                median: f64::NAN,
                p10: f64::NAN,
                min: f64::NAN,
            };
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let rank = ((0.1 * n as f64).ceil() as usize).clamp(1, n) - 1;
        Self {
            n,
            mean,
            sd: if n > 1 { var.sqrt() } else { 0.0 },
            median,
            p10: v[rank],
            min: v[0],
        }
    }
}

/// One of the worst held-out cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorstCase {
    pub name: String,
    pub source: String,
    pub dice: f64,
    /// Overlay PNG, relative to the weights' folder (`W.worst/NN-source-name.png`).
    pub overlay: String,
}

/// Events for a progress display.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// Data loaded: (train, val, test) pairs.
    Loaded(usize, usize, usize),
    /// A batch finished: (epoch, batches done this epoch, batches per epoch, loss).
    Batch(usize, usize, usize, f64),
    Epoch(EpochLog),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    fingerprint: String,
    epochs_done: usize,
    adam_t: u64,
    best_val_dice: f64,
    best_epoch: usize,
    bad_epochs: usize,
    train_seconds: f64,
    history: Vec<EpochLog>,
    stopped: Option<String>,
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
        adam.config.lr = config.lr_at(state.epochs_done, state.train_seconds);
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

/// Per-image held-out Dice of the full pipeline.
pub struct HeldOut {
    /// (name, source, Dice, predicted mask) in the test set's order.
    pub cases: Vec<(String, String, f64, Grey8)>,
}

impl HeldOut {
    /// (mean, min, mean per file-name prefix) over every case.
    fn summary(&self) -> (Option<f64>, Option<f64>, BTreeMap<String, f64>) {
        if self.cases.is_empty() {
            return (None, None, BTreeMap::new());
        }
        let d: Vec<f64> = self.cases.iter().map(|c| c.2).collect();
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let min = d.iter().copied().fold(f64::INFINITY, f64::min);
        let mut groups: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for (name, _, dice, _) in &self.cases {
            // `CHNCXR_0001_0` → `CHNCXR` (Shenzhen), `lung-00012` → `lung` (synthetic).
            let prefix = name.split(['_', '-']).next().unwrap_or("").to_string();
            let g = groups.entry(prefix).or_default();
            g.0 += dice;
            g.1 += 1;
        }
        (
            Some(mean),
            Some(min),
            groups
                .into_iter()
                .map(|(k, (s, n))| (k, s / n as f64))
                .collect(),
        )
    }

    /// Dice statistics per source.
    pub fn by_source(&self) -> BTreeMap<String, DiceStats> {
        let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (_, source, dice, _) in &self.cases {
            groups.entry(source.clone()).or_default().push(*dice);
        }
        groups
            .into_iter()
            .map(|(k, v)| (k, DiceStats::of(&v)))
            .collect()
    }
}

/// Full-pipeline Dice on held-out pairs, one case per pair.
pub fn held_out_dice(seg: &Segmenter, set: &[Sample]) -> Result<HeldOut, SegmentError> {
    let mut cases = Vec::with_capacity(set.len());
    for chunk in set.chunks(16) {
        let images: Vec<_> = chunk
            .iter()
            .map(|s| s.full_image.clone().unwrap_or_else(|| s.image.clone()))
            .collect();
        let masks = seg.predict_masks(&images)?;
        for (smp, m) in chunk.iter().zip(masks) {
            let truth = smp.full_mask.as_ref().unwrap_or(&smp.mask);
            let d = dice(&m.data, &truth.data);
            cases.push((smp.name.clone(), smp.source.clone(), d, m));
        }
    }
    Ok(HeldOut { cases })
}

/// Held-out Dice per source of any weights on the test patients of `dirs` under the split that `seed` and
/// the fractions define (the same split [`train`] makes): compares UNets trained on different folders on
/// the same patients, e.g. one trained without the Cohen masks on the Cohen test patients.
pub fn evaluate_held_out(
    seg: &Segmenter,
    dirs: &[PathBuf],
    seed: u64,
    val_fraction: f64,
    test_fraction: f64,
) -> Result<BTreeMap<String, DiceStats>, SegmentError> {
    let test: Vec<data::PairFile> = data::list_all(dirs)?
        .into_iter()
        .filter(|p| data::part_of(&p.patient, seed, val_fraction, test_fraction) == Part::Test)
        .collect();
    let set = data::load_pairs(&test, seg.unet().config().size, true)?;
    Ok(held_out_dice(seg, &set)?.by_source())
}

/// How many of the worst held-out cases get an overlay in `W.worst/`.
pub const WORST_SHOWN: usize = 12;

/// Writes overlays of the worst held-out cases (truth outline green, prediction red, lung box yellow) to
/// `W.worst/NN-<source>-<name>.png` and lists them, worst first.
fn write_worst_gallery(
    config: &TrainConfig,
    set: &[Sample],
    held: &HeldOut,
) -> Result<Vec<WorstCase>, SegmentError> {
    let dir = config.out.with_extension("worst");
    let mut order: Vec<usize> = (0..held.cases.len()).collect();
    order.sort_by(|&a, &b| held.cases[a].2.total_cmp(&held.cases[b].2));
    let mut out = Vec::new();
    for (rank, &i) in order.iter().take(WORST_SHOWN).enumerate() {
        let (name, source, d, pred) = &held.cases[i];
        let smp = &set[i];
        let image = smp.full_image.as_ref().unwrap_or(&smp.image);
        let truth = smp.full_mask.as_ref().unwrap_or(&smp.mask);
        let file = format!("{:02}-{source}-{name}.png", rank + 1);
        crate::gallery::write_overlay(&dir.join(&file), image, truth, pred)?;
        out.push(WorstCase {
            name: name.clone(),
            source: source.clone(),
            dice: *d,
            overlay: format!(
                "{}/{file}",
                dir.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        });
    }
    Ok(out)
}

fn save_checkpoint(
    path: &Path,
    model: &UNet,
    adam: &Adam,
    state: &State,
) -> Result<(), SegmentError> {
    let mut tensors = model.tensors();
    tensors.extend(adam.state());
    let state = serde_json::to_value(state).map_err(|e| SegmentError::data(path, e.to_string()))?;
    let bytes = unet::serialize(&tensors, model.config(), Some(state))?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// The UNet's tensors, the Adam moments (`adam.m.*`, `adam.v.*`) and the training state.
type Loaded = (HashMap<String, Tensor>, BTreeMap<String, Tensor>, State);

fn load_checkpoint(
    path: &Path,
    device: &Device,
    fingerprint: &str,
) -> Result<Loaded, SegmentError> {
    let (_, mut tensors, meta) = unet::read_weights(path, device)?;
    let state: State = meta
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or_else(|| SegmentError::weights(path, "no training state: not a checkpoint"))?;
    if state.fingerprint != fingerprint {
        return Err(SegmentError::weights(
            path,
            "checkpoint of a different configuration (data, width, size, lr, seed, batch, split or \
             augmentation differ): delete it or train without resuming",
        ));
    }
    let names: Vec<String> = tensors
        .keys()
        .filter(|k| k.starts_with("adam."))
        .cloned()
        .collect();
    let moments = names
        .into_iter()
        .filter_map(|k| tensors.remove(&k).map(|t| (k, t)))
        .collect();
    Ok((tensors, moments, state))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn progress_follows_whichever_budget_runs_out_first() {
        let mut c = TrainConfig::cpu_default("d", "w.safetensors");
        // Early stopping must not cut the decaying schedule short.
        assert!(c.patience >= c.epochs);
        c.epochs = 40;
        c.time_budget_s = Some(1000.0);
        assert_eq!(c.progress(0, 0.0), 0.0);
        assert!((c.progress(10, 100.0) - 0.25).abs() < 1e-12); // epochs lead
        assert!((c.progress(10, 600.0) - 0.6).abs() < 1e-12); // time leads
        assert_eq!(c.progress(50, 2000.0), 1.0);
        assert!((c.lr_at(10, 500.0) - 1e-3 * 0.51).abs() < 1e-15);
        c.time_budget_s = None;
        assert!((c.progress(30, 1e9) - 0.75).abs() < 1e-12);
        // The paper's preset keeps its constant 1e-4.
        let p = TrainConfig::paper("d", "w.safetensors");
        assert_eq!(p.lr_at(0, 0.0), 1e-4);
        assert_eq!(p.lr_at(99, 1e6), 1e-4);
    }

    #[test]
    fn fingerprint_pins_the_budgets_of_a_decaying_schedule_only() {
        let a = TrainConfig::cpu_default("d", "a.safetensors");
        let mut b = TrainConfig::cpu_default("d", "b.safetensors");
        b.patience = 1;
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.time_budget_s = Some(45.0 * 60.0);
        assert_ne!(a.fingerprint(), b.fingerprint());
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
