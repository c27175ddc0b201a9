//! `cxr reproduce`: the whole study in one command.
//!
//! Stages, in order, each cached by content and config (a `stage.json` holding the key beside its outputs):
//! data (the synthetic world, or a real dataset root) → ingest (manifests) → preprocess (8-bit PNGs) →
//! segment (UNet trained or loaded; masks and lung crops) → per experiment (`data-manifests/experiments`):
//! split → train → evaluate → audit (source probe, occlusion, Grad-CAM) → `results.json` + `report.html`.
//!
//! Profiles: `quick` (CPU, small images, the `frozen` fast path instead of Finetune1/2, said plainly in the
//! report) and `paper` (224 px, the published modes, epochs and early stopping; meant for a GPU and real data).

mod audit;
mod data;
mod experiment;
mod rejections;
mod report_build;
mod sensitivity;
mod stage;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

pub(crate) use data::shared_data;
pub use experiment::ExperimentSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorldArg {
    /// Each source holds one class, as in the paper (the confounded world).
    Paper,
    /// Every source holds both classes 50/50 (the control: the source says nothing about the label).
    Clean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
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
    /// Only these experiments (names of data-manifests/experiments/*.toml); default all.
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
    /// Folder of experiment definitions.
    #[arg(long, default_value = "data-manifests/experiments")]
    pub experiments_dir: PathBuf,
    /// Folder of split designs.
    #[arg(long, default_value = "data-manifests/splits")]
    pub splits_dir: PathBuf,
}

/// Everything the profile fixes.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub per_source: usize,
    pub world_size: u32,
    pub preprocess_size: u32,
    pub image_size: usize,
    /// `Some(mode)` replaces every experiment's mode (the quick profile's frozen fast path).
    pub mode_override: Option<&'static str>,
    pub max_epochs: usize,
    pub patience: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub segment_quick: bool,
    /// Images per source and class explained with Grad-CAM.
    pub gradcam_per_group: usize,
    /// Test images per source and class in the occlusion tests.
    pub occlusion_per_group: usize,
    /// Occlusion fills (`mean`, `noise`).
    pub occlusion_fills: &'static str,
    /// Counterfactual pairs per confounder and direction in the confounder test (synthetic worlds; 0 = off).
    pub confounder_pairs: usize,
    pub notes: Vec<String>,
}

impl Profile {
    pub fn of(args: &ReproduceArgs) -> Self {
        let mut p = match args.profile {
            ProfileArg::Quick => Profile {
                name: "quick",
                per_source: 60,
                world_size: 256,
                preprocess_size: 256,
                image_size: 128,
                mode_override: Some("frozen"),
                max_epochs: 300,
                patience: 40,
                batch_size: 8,
                learning_rate: 1e-3,
                segment_quick: true,
                gradcam_per_group: 4,
                occlusion_per_group: 40,
                occlusion_fills: "mean",
                confounder_pairs: 16,
                notes: vec![
                    "Quick profile (CPU): the backbone runs in inference mode and only the paper's head is trained \
                     (mode `frozen`) instead of Finetune1/Finetune2, so models named finetune1/finetune2 are \
                     trained identically here; images are 128 px instead of 224; Adam at 1e-3 instead of 1e-4, \
                     batch 8 and early-stopping patience 40, because a head on a few dozen cached feature vectors needs \
                     many small steps; the head's input is standardised with the training images' feature \
                     means and standard deviations (random-backbone features sit at arbitrary scales), and \
                     equal validation accuracies are told apart by the validation loss; no 10x \
                     augmentation (it would multiply the backbone passes by ten). Use `--profile paper` on a \
                     GPU for the published setting."
                        .into(),
                ],
            },
            ProfileArg::Paper => Profile {
                name: "paper",
                per_source: 200,
                world_size: 512,
                preprocess_size: 512,
                image_size: 224,
                mode_override: None,
                max_epochs: 200,
                patience: 5,
                batch_size: 32,
                learning_rate: 1e-4,
                segment_quick: false,
                gradcam_per_group: 8,
                occlusion_per_group: 1000,
                occlusion_fills: "mean,noise",
                confounder_pairs: 48,
                notes: vec![
                    "Paper profile: 224 px, Finetune1/Finetune2 as published, Adam 1e-4, at most 200 epochs, \
                     early stopping after 5 epochs without a better validation accuracy."
                        .into(),
                ],
            },
        };
        if let Some(n) = args.per_source {
            p.per_source = n;
        }
        if let Some(s) = args.world_size {
            p.world_size = s;
            p.preprocess_size = p.preprocess_size.max(s);
        }
        if let Some(s) = args.image_size {
            p.image_size = s;
        }
        if !args.device.trim().eq_ignore_ascii_case("cpu") {
            p.notes.push(format!(
                "Classifiers trained on device `{}`; explanations and audits ran on the CPU.",
                args.device.trim()
            ));
        }
        p.notes.push(if args.no_per_image_norm {
            "Inputs: each image as it is, ImageNet normalisation only (`--no-per-image-norm`).".into()
        } else {
            "Inputs: every image is standardised on its own pixels (mean 0, standard deviation 1) before the \
             backbone, which removes each source's global brightness and contrast; texture, sharpness and the \
             shape of the grey curve remain. `--no-per-image-norm` feeds the images as they are."
                .into()
        });
        p
    }
}

/// Runs the whole study. Returns the path of `report.html`.
pub fn run(mut args: ReproduceArgs) -> Result<PathBuf> {
    let started = Instant::now();
    // Relative definition folders are the repository's when the current folder has none (e.g. in tests).
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in [&mut args.experiments_dir, &mut args.splits_dir] {
        if dir.is_relative() && !dir.exists() && repo.join(&*dir).exists() {
            *dir = repo.join(&*dir);
        }
    }
    let profile = Profile::of(&args);
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let _log = crate::logfile::copy_to(&out.join("reproduce.log"))?;
    // Frozen backbones embed the same images in every experiment and in the audit: compute each vector once.
    cxr_model::feature_cache::set_cache_dir(Some(out.join("feature-cache")));
    let specs = experiment::load_specs(&args.experiments_dir, &args.experiments)?;
    if specs.is_empty() {
        bail!(
            "no experiment selected in {}",
            args.experiments_dir.display()
        );
    }
    let mut study = experiment::Study::new(&args, &profile)?;
    // The main world (or the real data).
    let main = data::prepare(&args, &profile, data::DataChoice::main(&args), &out, None)?;
    // Count what will actually run: the designs that fit this data, and the clean-world control's.
    let fitting = specs.iter().filter(|s| experiment::fits(s, &main)).count();
    let runs_control =
        args.data_root.is_none() && args.world == WorldArg::Paper && !args.no_control;
    let control_n = if runs_control {
        specs.iter().filter(|s| s.kind == "figure4").count()
    } else {
        0
    };
    study.planned = fitting + control_n;
    tracing::info!(
        profile = profile.name,
        out = %out.display(),
        "reproduce: {} experiments ({fitting} on {}{})",
        study.planned,
        main.tag,
        if control_n > 0 {
            format!(", {control_n} on the clean-world control")
        } else {
            String::new()
        }
    );
    let seg_weights = main.segmenter.clone();
    let results_main = study.run_all(&main, &specs, &out.join("experiments"))?;
    // The control: the same split, same pipeline, on the clean world (synthetic default only).
    let control = if args.data_root.is_none() && args.world == WorldArg::Paper && !args.no_control {
        let split1: Vec<ExperimentSpec> = specs
            .iter()
            .filter(|s| s.kind == "figure4")
            .cloned()
            .collect();
        if split1.is_empty() {
            None
        } else {
            let ctl = data::prepare(
                &args,
                &profile,
                data::DataChoice::Synthetic(WorldArg::Clean),
                &out,
                Some(seg_weights.clone()),
            )?;
            Some(study.run_all(&ctl, &split1, &out.join("control-clean"))?)
        }
    } else {
        None
    };
    let sensitivity = if args.sensitivity && args.data_root.is_none() {
        Some(sensitivity::run(
            &args,
            &profile,
            &args.sensitivity_groups,
            seg_weights,
            &out,
        )?)
    } else {
        if args.sensitivity {
            tracing::warn!("--sensitivity needs a synthetic world: skipped with --data-root");
        }
        None
    };
    let elapsed = started.elapsed().as_secs_f64();
    report_build::write(
        &args,
        &profile,
        &main,
        report_build::Runs {
            main: results_main,
            control,
            sensitivity,
        },
        elapsed,
        &out,
    )
}
