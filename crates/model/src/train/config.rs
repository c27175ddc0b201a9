//! What a training run is given: the experiment config ([`TrainConfig`], TOML) and how to run it
//! ([`TrainOptions`]).

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{CandleContext, ModelError, Result};
use crate::net::{Arch, Mode};

fn default_column() -> String {
    "crop".into()
}
fn default_size() -> usize {
    224
}
fn default_batch() -> usize {
    32
}
fn default_epochs() -> usize {
    200
}
fn default_patience() -> usize {
    5
}
fn default_lr() -> f64 {
    1e-4
}
fn default_arch() -> Arch {
    Arch::resnet50()
}

/// An experiment (`cargo xtask train --config FILE.toml`). Relative paths in a file are relative to its folder.
///
/// ```toml
/// manifest = "manifests/split.csv"      # needs `split` (train / val / test) and the image column
/// image_column = "crop"                 # default; or "png8"
/// image_size = 224
/// batch_size = 32
/// max_epochs = 200                      # early stopping: `patience` = 5 epochs without a better val accuracy
/// seed = 42
/// backbone = "resnet50"                 # or "vgg16"
/// mode = "finetune1"                    # finetune2, frozen, full
/// weights = "weights/resnet50/model.safetensors"   # optional: random init (announced) without
/// test_manifests = ["unseen.csv"]       # optional extra test sets
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Manifest with `split` (train / val / test) and the image column.
    pub manifest: PathBuf,
    /// Image column: `crop` (segment's lung crops, the default) or `png8`.
    #[serde(default = "default_column")]
    pub image_column: String,
    #[serde(default = "default_size")]
    pub image_size: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_epochs")]
    pub max_epochs: usize,
    /// Early stopping: epochs without a better validation accuracy (equal accuracy with a lower validation
    /// loss counts as better) before stopping.
    #[serde(default = "default_patience")]
    pub patience: usize,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    #[serde(default)]
    pub seed: u64,
    /// `resnet50`, `vgg16` (or a reduced form, see [`Arch`]).
    #[serde(default = "default_arch")]
    pub backbone: Arch,
    #[serde(default)]
    pub mode: Mode,
    /// torchvision/timm backbone weights (safetensors). Absent: random initialisation, announced loudly.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Written in the `model` column of predictions (default `<backbone>-<mode>`).
    #[serde(default)]
    pub name: String,
    /// More test sets: every row of these manifests is scored too (split kept, `test` when absent).
    #[serde(default)]
    pub test_manifests: Vec<PathBuf>,
    /// `cpu` (default) or `cuda` / `cuda:N` (needs a build with the `cuda` feature, see docs/GPU.md).
    #[serde(default = "default_device")]
    pub device: String,
    /// Start from a trained classifier (`model.safetensors` of another run, same backbone) instead of a new
    /// head: the local fine-tuning of the paper's Table 4.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Standardise the pooled features in front of the head with the training images' mean and std
    /// (default true; see [`crate::Classifier::set_feature_norm`]). Not done when starting from `init`, whose
    /// standardisation is kept. `false` gives the paper's head exactly.
    #[serde(default = "default_true")]
    pub feature_norm: bool,
    /// Standardise every input image on its own pixels before the backbone (default false; see
    /// [`crate::Classifier::set_per_image_norm`]). Saved with the model; a classifier given as `init` keeps its own.
    #[serde(default)]
    pub per_image_norm: bool,
}

fn default_true() -> bool {
    true
}

fn default_device() -> String {
    "cpu".into()
}

/// `cpu`, `cuda` or `cuda:N` → a candle device (CUDA fails clearly in a build without the `cuda` feature).
pub fn device_by_name(name: &str) -> Result<Device> {
    let n = name.trim().to_ascii_lowercase();
    if n == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match n.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|r| r.parse::<usize>().ok())
            .ok_or_else(|| {
                ModelError::Invalid(format!("device `{name}`: expected cpu, cuda or cuda:N"))
            })?,
        None => {
            return Err(ModelError::Invalid(format!(
                "device `{name}`: expected cpu, cuda or cuda:N"
            )));
        }
    };
    Device::new_cuda(ordinal)
        .ctx(|| format!("opening device `{name}` (built without the `cuda` feature?)"))
}

impl TrainConfig {
    /// A config with the defaults of the paper for `manifest`.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            image_column: default_column(),
            image_size: default_size(),
            batch_size: default_batch(),
            max_epochs: default_epochs(),
            patience: default_patience(),
            learning_rate: default_lr(),
            seed: 0,
            backbone: default_arch(),
            mode: Mode::default(),
            weights: None,
            name: String::new(),
            test_manifests: Vec::new(),
            device: default_device(),
            init: None,
            feature_norm: true,
            per_image_norm: false,
        }
    }

    /// Reads a TOML file; relative paths are resolved against its folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let mut cfg: TrainConfig = toml::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.manifest);
        if let Some(w) = cfg.weights.as_mut() {
            fix(w);
        }
        if let Some(w) = cfg.init.as_mut() {
            fix(w);
        }
        cfg.test_manifests.iter_mut().for_each(fix);
        cfg.validate().map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    pub(super) fn validate(&self) -> std::result::Result<(), String> {
        if self.image_size < 32 {
            return Err(format!("image_size {} is below 32", self.image_size));
        }
        if self.batch_size < 2 {
            return Err("batch_size must be at least 2 (BatchNorm needs a batch)".into());
        }
        if self.max_epochs == 0 {
            return Err("max_epochs must be positive".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(format!(
                "learning_rate {} must be positive",
                self.learning_rate
            ));
        }
        Ok(())
    }

    /// `model` column value.
    pub fn model_name(&self) -> String {
        if self.name.is_empty() {
            format!("{}-{}", self.backbone, self.mode)
        } else {
            self.name.clone()
        }
    }

    /// Hash of everything that changes the result (a checkpoint of another config is never resumed).
    pub(super) fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        cxr_core::fsutil::sha256_bytes(&json)
    }
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `checkpoint.safetensors` in the output folder when there is one.
    pub resume: bool,
    /// Stop (after writing the checkpoint) once this many epochs are done, as if killed; for tests and for
    /// splitting a long run.
    pub stop_after_epochs: Option<usize>,
}
