//! The study's resolved settings: what `cxr reproduce`'s flags mean once parsed, as one serialisable value.
//! A front end (the `cxr` command, a test, a notebook binding) builds a [`StudyConfig`] and calls
//! [`crate::run`]; nothing here knows about command lines.

use std::path::PathBuf;

use cxr_synth::ConfounderKind;
use serde::{Deserialize, Serialize};

/// The synthetic world of the main run (ignored with real data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Each source holds one class, as in the paper (the confounded world).
    Paper,
    /// Every source holds both classes 50/50 (the control: the source says nothing about the label).
    Clean,
}

/// The profile's name; [`crate::Profile::of`] says what each fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    /// CPU, minutes: small images, frozen backbone + trained head.
    Quick,
    /// The paper's setting: 224 px, Finetune1/2, 200 epochs, patience 5 (for a GPU and real data).
    Paper,
}

/// Everything a study run needs. `Default` gives `cxr reproduce` without flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StudyConfig {
    /// Synthetic world to generate (ignored with `data_root`).
    pub world: World,
    /// Real data instead of the synthetic world: a folder holding the dataset roots (or, with
    /// `dataset = "cohen"`, the Cohen collection itself).
    pub data_root: Option<PathBuf>,
    /// With `data_root`: which dataset(s), comma-separated; `None`: the six paper datasets.
    pub dataset: Option<String>,
    pub profile: ProfileName,
    /// Output folder (created).
    pub out: PathBuf,
    /// Continue interrupted trainings from their checkpoints (finished stages are always reused).
    pub resume: bool,
    /// Lung UNet weights instead of training one.
    pub segmenter: Option<PathBuf>,
    /// ImageNet ResNet50 / VGG16 weights; random initialisation otherwise.
    pub weights_resnet50: Option<PathBuf>,
    pub weights_vgg16: Option<PathBuf>,
    /// Only these experiments (names of the experiment definitions); empty: all.
    pub experiments: Vec<String>,
    /// Synthetic world: images per source (`None`: the profile's).
    pub per_source: Option<usize>,
    /// Synthetic world: nominal image height in pixels.
    pub world_size: Option<u32>,
    /// Synthetic world: pathology strength (`None`: 1).
    pub signal: Option<f32>,
    /// Model input size in pixels (`None`: the profile's).
    pub image_size: Option<usize>,
    /// Run the clean-world control of the synthetic default (paper world, no `data_root`).
    pub control: bool,
    /// Also run the audit's sensitivity study (synthetic worlds only): one world per planted group.
    pub sensitivity: bool,
    /// With `sensitivity`: only these groups; empty: all eight.
    pub sensitivity_groups: Vec<ConfounderKind>,
    /// Standardise every image on its own pixels before the backbone (`cxr_model::Classifier`).
    pub per_image_norm: bool,
    /// Where the classifiers train: `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub seed: u64,
    /// Bootstrap resamples per metric.
    pub resamples: usize,
    /// Folder of experiment definitions; `None`: the ones built into this library ([`crate::designs`]).
    pub experiments_dir: Option<PathBuf>,
    /// Folder of split designs; `None`: the built-in ones.
    pub splits_dir: Option<PathBuf>,
    /// The command line, as the report and `results.json` show it.
    pub command: String,
}

impl Default for StudyConfig {
    fn default() -> Self {
        Self {
            world: World::Paper,
            data_root: None,
            dataset: None,
            profile: ProfileName::Quick,
            out: PathBuf::from("target/reproduce"),
            resume: false,
            segmenter: None,
            weights_resnet50: None,
            weights_vgg16: None,
            experiments: Vec::new(),
            per_source: None,
            world_size: None,
            signal: None,
            image_size: None,
            control: true,
            sensitivity: false,
            sensitivity_groups: Vec::new(),
            per_image_norm: true,
            device: "cpu".into(),
            seed: 2021,
            resamples: 2000,
            experiments_dir: None,
            splits_dir: None,
            command: "cxr reproduce".into(),
        }
    }
}

impl StudyConfig {
    /// Whether the run includes the clean-world control: the synthetic paper world, asked for.
    pub fn runs_control(&self) -> bool {
        self.data_root.is_none() && self.world == World::Paper && self.control
    }

    /// Where experiment definitions and split designs come from.
    pub fn definitions(&self) -> crate::designs::Definitions {
        crate::designs::Definitions {
            experiments: self.experiments_dir.clone(),
            splits: self.splits_dir.clone(),
        }
    }
}
