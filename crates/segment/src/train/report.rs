//! What a training run reports (`W.report.json`): the epochs' log, the split, held-out Dice per source with its
//! spread, the worst cases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::TrainConfig;

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
