//! `cxr reproduce`: the whole study in one command. The study itself is the `cxr-study` library; this
//! module holds its flags, their conversion into a [`cxr_study::StudyConfig`], the progress bars, the log
//! file and the printed summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

pub(crate) use cxr_study::data::shared_data;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorldArg {
    /// Each source holds one class, as in the paper (the confounded world).
    Paper,
    /// Every source holds both classes 50/50 (the control: the source says nothing about the label).
    Clean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// CPU, minutes: small images, frozen backbone + trained head.
    Quick,
    /// The paper's setting: 224 px, Finetune1/2, 200 epochs, patience 5 (for a GPU and real data).
    Paper,
}

/// Arguments of `cxr reproduce`.
#[derive(Debug, Clone, Args)]
pub struct ReproduceArgs {
    /// Synthetic world to generate (ignored with --data-root).
    #[arg(long, value_enum, default_value_t = WorldArg::Paper)]
    pub world: WorldArg,
    /// Real data instead of the synthetic world: a folder holding the dataset roots (or, with
    /// `--dataset cohen`, the Cohen collection itself).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// With --data-root: which dataset(s). `cohen` runs the leave-locations-out study on the Cohen collection;
    /// the default reads the six paper datasets from sub-folders named as in docs/DATASETS.md.
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, value_enum, default_value_t = ProfileArg::Quick)]
    pub profile: ProfileArg,
    /// Output folder.
    #[arg(long, default_value = "target/reproduce")]
    pub out: PathBuf,
    /// Continue interrupted trainings from their checkpoints (finished stages are always reused).
    #[arg(long)]
    pub resume: bool,
    /// Lung UNet weights (safetensors) instead of training one.
    #[arg(long)]
    pub segmenter: Option<PathBuf>,
    /// ImageNet ResNet50 weights (torchvision/timm safetensors); random initialisation otherwise.
    #[arg(long)]
    pub weights_resnet50: Option<PathBuf>,
    /// ImageNet VGG16 weights (torchvision safetensors); random initialisation otherwise.
    #[arg(long)]
    pub weights_vgg16: Option<PathBuf>,
    /// Only these experiments (names of the experiment definitions, data-manifests/experiments/*.toml);
    /// default all.
    #[arg(long = "experiment")]
    pub experiments: Vec<String>,
    /// Synthetic world: images per source (default: 60 quick, 200 paper).
    #[arg(long)]
    pub per_source: Option<usize>,
    /// Synthetic world: nominal image height in pixels.
    #[arg(long)]
    pub world_size: Option<u32>,
    /// Synthetic world: pathology strength (1 = the default).
    #[arg(long)]
    pub signal: Option<f32>,
    /// Model input size in pixels (default: 128 quick, 224 paper).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Skip the clean-world control run of the synthetic default.
    #[arg(long)]
    pub no_control: bool,
    /// Also run the audit's sensitivity study (synthetic worlds only): one extra world per planted confounder
    /// group with that group planted alone, each with the whole-image model (see `reproduce::sensitivity`).
    /// Shows whether the audit catches each kind of confounder when a model uses it; about a minute per group
    /// in the quick profile.
    #[arg(long)]
    pub sensitivity: bool,
    /// With `--sensitivity`: only these groups (comma-separated: framing, intensity, blur, noise, grid,
    /// collimation, text, marker); default all eight.
    #[arg(long, value_delimiter = ',')]
    pub sensitivity_groups: Vec<cxr_synth::ConfounderKind>,
    /// Feed the backbone each image as it is (ImageNet normalisation only) instead of standardising every
    /// image on its own pixels first (the default, see `cxr_model::Classifier::set_per_image_norm`).
    #[arg(long)]
    pub no_per_image_norm: bool,
    /// Where the classifiers train: `cpu` (default) or `cuda` / `cuda:N` (a build with the `cuda` feature, see
    /// docs/GPU.md). Grad-CAM, the audit and the confounder test run on the CPU either way.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 2021)]
    pub seed: u64,
    /// Bootstrap resamples per metric (≥ 2,000 for the published figures).
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Folder of experiment definitions (default: the definitions of data-manifests/experiments, built into
    /// the program).
    #[arg(long)]
    pub experiments_dir: Option<PathBuf>,
    /// Folder of split designs (default: data-manifests/splits, built in).
    #[arg(long)]
    pub splits_dir: Option<PathBuf>,
}

impl ReproduceArgs {
    /// The study's resolved settings; `command` is the command line the report shows.
    pub fn to_config(&self, command: String) -> cxr_study::StudyConfig {
        cxr_study::StudyConfig {
            world: match self.world {
                WorldArg::Paper => cxr_study::World::Paper,
                WorldArg::Clean => cxr_study::World::Clean,
            },
            data_root: self.data_root.clone(),
            dataset: self.dataset.clone(),
            profile: match self.profile {
                ProfileArg::Quick => cxr_study::ProfileName::Quick,
                ProfileArg::Paper => cxr_study::ProfileName::Paper,
            },
            out: self.out.clone(),
            resume: self.resume,
            segmenter: self.segmenter.clone(),
            weights_resnet50: self.weights_resnet50.clone(),
            weights_vgg16: self.weights_vgg16.clone(),
            experiments: self.experiments.clone(),
            per_source: self.per_source,
            world_size: self.world_size,
            signal: self.signal,
            image_size: self.image_size,
            control: !self.no_control,
            sensitivity: self.sensitivity,
            sensitivity_groups: self.sensitivity_groups.clone(),
            per_image_norm: !self.no_per_image_norm,
            device: self.device.clone(),
            seed: self.seed,
            resamples: self.resamples,
            experiments_dir: self.experiments_dir.clone(),
            splits_dir: self.splits_dir.clone(),
            command,
        }
    }
}

/// Runs the whole study. Returns the path of `report.html`.
pub fn run(args: ReproduceArgs) -> Result<PathBuf> {
    let command = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let config = args.to_config(command);
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let _log = crate::logfile::copy_to(&config.out.join("reproduce.log"))?;
    let outcome = cxr_study::run(&config, &Bars::default())?;
    println!("report: {}", outcome.report_html.display());
    println!("results: {}", outcome.results_json.display());
    for line in cxr_study::report::summary::lines(&outcome.results) {
        println!("{line}");
    }
    Ok(outcome.report_html)
}

/// One progress bar per running stage (hidden when stderr is not a terminal).
#[derive(Default)]
struct Bars(Mutex<BTreeMap<String, indicatif::ProgressBar>>);

impl Bars {
    fn bar(name: &str) -> indicatif::ProgressBar {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_prefix(name.to_string());
        pb
    }
}

impl cxr_study::Progress for Bars {
    fn update(&self, stage: &str, done: u64, total: u64) {
        if let Ok(mut bars) = self.0.lock() {
            let pb = bars
                .entry(stage.to_string())
                .or_insert_with(|| Self::bar(stage));
            pb.set_length(total);
            pb.set_position(done);
        }
    }

    fn finish(&self, stage: &str) {
        if let Ok(mut bars) = self.0.lock()
            && let Some(pb) = bars.remove(stage)
        {
            pb.finish_and_clear();
        }
    }
}
