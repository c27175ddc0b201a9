//! `cxr segment train|predict|crop`: the lung UNet stage
//! (`cxr-segment`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cxr_segment::{LrSchedule, SegmentOptions, Segmenter, TrainConfig, TrainEvent};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Train the lung UNet on image/mask pairs (Shenzhen/Montgomery layout or a synthetic world).
    Train(TrainArgs),
    /// Predict lung masks for a folder of images or, given a manifest (png8 column), masks + crops + columns.
    Predict(PredictArgs),
    /// Crop from the masks already in a manifest's `mask` column (no UNet).
    Crop(CropArgs),
    /// Held-out Dice per source of given weights on the test patients of training folders (the split
    /// `segment train` makes for the same seed and fractions).
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// UNet weights (default: the shipped lung UNet).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Lung-mask folders (default: every set under $CXR_SHARED_DATA, as `segment train`).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    #[arg(long, default_value_t = 2021)]
    seed: u64,
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Without the test-time flip (by default each image's probabilities are averaged with its mirror's).
    #[arg(long)]
    no_flip: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// Base 8 at 128 px, Adam 1e-3 with cosine decay over a fixed 36 epochs (no early stopping, no clock;
    /// ~25 min on 2 cores): the CPU default, and the recipe of the shipped lung UNet.
    Cpu,
    /// Base 8 at 64 px, a fixed 20 epochs: for the 10-minute reproduce on synthetic masks.
    Quick,
    /// The paper: base 64 at 256 px, Adam 1e-4 (GPU, `--features cuda`).
    Paper,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScheduleArg {
    /// The peak rate throughout.
    Constant,
    /// Cosine decay to 2 % of the peak over the epochs (never the clock).
    Cosine,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training folder(s), trained on together: `cxr_256/ + masks_256/ + manifest.csv` (Shenzhen/Montgomery),
    /// `masks.csv` (the Cohen lung masks), or a world with `lung-masks/{images,masks}`. Repeat the flag or
    /// give several paths. Default: every lung-mask set under $CXR_SHARED_DATA (or ../shared/data):
    /// shenzhen-montgomery-lung-masks and cohen-lung-masks-v7labs-dev.
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Best weights (safetensors); `W.ckpt.safetensors` and `W.report.json` are written beside it.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = Preset::Cpu)]
    preset: Preset,
    /// Width multiplier: filters of the first level (the paper: 64).
    #[arg(long)]
    base: Option<usize>,
    /// Model input side in pixels (multiple of 16; the paper: 256).
    #[arg(long)]
    size: Option<u32>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule (default: the preset's; cosine for `cpu`, constant for `quick`, `paper`).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Opt-in guard: stop after the epoch that would pass this wall-clock budget in minutes (0 = none, the
    /// default of every preset). It never changes the learning rate, so a stopped run is a prefix of the
    /// full one; but its weights then depend on the machine's speed and load.
    #[arg(long)]
    budget_min: Option<f64>,
    /// Use only the first N pairs.
    #[arg(long)]
    max_pairs: Option<usize>,
    /// Ignore an existing checkpoint and start again.
    #[arg(long)]
    fresh: bool,
    /// Train without augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Geometric augmentation only (no contrast, gamma, blur, noise, text, opacities or film borders).
    #[arg(long)]
    no_appearance: bool,
    /// Only these appearance shifts (comma-separated: border, contrast, blur, noise, text, opacity).
    #[arg(long, value_delimiter = ',')]
    appearance: Vec<String>,
    /// Strength of the appearance shifts: probabilities and ranges times this factor (default 1).
    #[arg(long)]
    appearance_scale: Option<f64>,
    /// Source balancing in [0, 1]: a smaller source's pairs repeat up to this fraction of the largest
    /// source's count each epoch (0 = each pair once; the `cpu` preset: 0.5).
    #[arg(long)]
    balance: Option<f64>,
    /// Fraction of patients held out for the reported test Dice (default 0.2).
    #[arg(long)]
    test_fraction: Option<f64>,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// UNet weights written by `segment train` (default: the shipped lung UNet, embedded in `cxr`;
    /// crates/segment/weights/README.md).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A folder of images (PNG/JPEG by content) or a manifest CSV with a `png8` column.
    #[arg(long)]
    input: PathBuf,
    /// Output folder (masks; for a manifest also crops/, manifest.csv, rejects.csv).
    #[arg(long)]
    out: PathBuf,
    /// Manifest column with the 8-bit image.
    #[arg(long, default_value = "png8")]
    image_column: String,
    /// Without the test-time flip (by default each image's probabilities are averaged with its mirror's).
    #[arg(long)]
    no_flip: bool,
    #[command(flatten)]
    shard: crate::shard::ShardArgs,
}

#[derive(Debug, Args)]
pub struct CropArgs {
    /// Manifest with `mask` and `png8` columns.
    #[arg(long)]
    manifest: PathBuf,
    /// Output folder (crops/, manifest.csv, rejects.csv).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "png8")]
    image_column: String,
}

pub fn run(cmd: SegmentCommand) -> Result<()> {
    match cmd {
        SegmentCommand::Train(a) => train(a),
        SegmentCommand::Predict(a) => predict(a),
        SegmentCommand::Crop(a) => crop(a),
        SegmentCommand::Eval(a) => eval(a),
    }
}

/// `--data` as given, else the default lung-mask sets found under the shared data root (said on stdout).
fn data_or_default(data: &[PathBuf], what: &str) -> Result<Vec<PathBuf>> {
    if !data.is_empty() {
        return Ok(data.to_vec());
    }
    let root = crate::reproduce::shared_data();
    let found = cxr_segment::data::discover(&root)
        .with_context(|| format!("segment {what}: no --data given"))?;
    println!("segment {what}: {}", found.describe());
    Ok(found.found)
}

fn eval(a: EvalArgs) -> Result<()> {
    let data = data_or_default(&a.data, "eval")?;
    let mut seg = Segmenter::load_or_default(a.weights.as_deref()).with_context(|| {
        format!(
            "segment eval: weights {}",
            weights_name(a.weights.as_deref())
        )
    })?;
    seg.flip_tta = !a.no_flip;
    let stats =
        cxr_segment::train::evaluate_held_out(&seg, &data, a.seed, a.val_fraction, a.test_fraction)
            .context("segment eval")?;
    for (source, s) in &stats {
        println!(
            "{source:<11} n {:>3}: mean {:.4} (sd {:.4}), median {:.4}, 10th percentile {:.4}, min {:.4}",
            s.n, s.mean, s.sd, s.median, s.p10, s.min
        );
    }
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let data = data_or_default(&a.data, "train")?;
    let mut cfg = match a.preset {
        Preset::Cpu => TrainConfig::cpu_default(&data[0], &a.out),
        Preset::Quick => TrainConfig::quick(&data[0], &a.out),
        Preset::Paper => TrainConfig::paper(&data[0], &a.out),
    };
    cfg.data = data;
    if let Some(v) = a.base {
        cfg.unet.base = v;
    }
    if let Some(v) = a.size {
        cfg.unet.size = v;
    }
    if let Some(v) = a.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = a.batch {
        cfg.batch = v;
    }
    if let Some(v) = a.lr {
        cfg.lr = v;
    }
    if let Some(v) = a.schedule {
        cfg.schedule = match v {
            ScheduleArg::Constant => LrSchedule::Constant,
            ScheduleArg::Cosine => LrSchedule::Cosine { floor: 0.02 },
        };
    }
    if let Some(v) = a.patience {
        cfg.patience = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(m) = a.budget_min {
        cfg.time_budget_s = (m > 0.0).then_some(m * 60.0);
    }
    if a.max_pairs.is_some() {
        cfg.max_pairs = a.max_pairs;
    }
    if a.no_augment {
        cfg.augment = None;
    }
    if a.no_appearance
        && let Some(aug) = cfg.augment.as_mut()
    {
        aug.appearance = None;
    }
    if !a.appearance.is_empty() {
        let names: Vec<&str> = a.appearance.iter().map(String::as_str).collect();
        let only = cxr_segment::appearance::Appearance::only(&names)
            .map_err(anyhow::Error::msg)
            .context("segment train --appearance")?;
        let aug = cfg.augment.get_or_insert_with(Default::default);
        aug.appearance = Some(only);
    }
    if let Some(k) = a.appearance_scale
        && let Some(ap) = cfg.augment.as_mut().and_then(|g| g.appearance.as_mut())
    {
        *ap = ap.scaled(k);
    }
    if let Some(b) = a.balance {
        cfg.balance = b;
    }
    if let Some(t) = a.test_fraction {
        cfg.test_fraction = t;
    }
    cfg.resume = !a.fresh;
    println!(
        "segment train: base {} at {} px, {} parameters, {} epochs, batch {}, lr {} ({:?}), time guard {}",
        cfg.unet.base,
        cfg.unet.size,
        cfg.unet.parameter_count(),
        cfg.epochs,
        cfg.batch,
        cfg.lr,
        cfg.schedule,
        cfg.time_budget_s
            .map(|s| format!("{:.0} min", s / 60.0))
            .unwrap_or_else(|| "none".into())
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let report = cxr_segment::train_with_progress(&cfg, &mut |ev| match ev {
        TrainEvent::Loaded(tr, va, te) => {
            say(
                &bar,
                format!("pairs: {tr} train, {va} validation, {te} test"),
            );
        }
        TrainEvent::Batch(epoch, done, total, loss) => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_prefix(format!("epoch {epoch}"));
            bar.set_message(format!("loss {loss:.4}"));
        }
        TrainEvent::Epoch(log) => say(
            &bar,
            format!(
                "epoch {:>3}: lr {:.2e}, loss {:.4}, val Dice {:.4} ({}), {:.0} s",
                log.epoch,
                log.lr,
                log.train_loss,
                log.val_dice,
                log.val_dice_by_source
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                log.seconds
            ),
        ),
    })
    .with_context(|| {
        format!(
            "segment train: data {}",
            cfg.data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    bar.finish_and_clear();
    println!(
        "segment train: {} ({} epochs, best val Dice {:.4} at epoch {}, training {:.0} s)",
        report.stopped_because,
        report.epochs_run,
        report.best_val_dice,
        report.best_epoch,
        report.train_seconds
    );
    match report.test_dice {
        Some(d) => {
            println!(
                "held-out test ({} pairs of patients never trained on, full pipeline at original size): mean Dice {d:.4}, min {:.4}",
                report.test_pairs,
                report.test_dice_min.unwrap_or(f64::NAN),
            );
            for (source, s) in &report.test_by_source {
                let flip = report.test_by_source_flip.get(source).map(|f| f.mean);
                println!(
                    "  {source:<11} n {:>3}: mean {:.4} (sd {:.4}), median {:.4}, 10th percentile {:.4}, min {:.4}; with test-time flip {:.4}",
                    s.n,
                    s.mean,
                    s.sd,
                    s.median,
                    s.p10,
                    s.min,
                    flip.unwrap_or(f64::NAN)
                );
            }
        }
        None => println!("no held-out test pairs"),
    }
    println!(
        "weights {}; report {}; total {:.0} s",
        cfg.out.display(),
        cfg.report_path().display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A line above the progress bar, or plain stdout when the bar is hidden (output not a terminal), where
/// indicatif's `println` would print nothing.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar
}

fn predict(a: PredictArgs) -> Result<()> {
    let mut seg = Segmenter::load_or_default(a.weights.as_deref()).with_context(|| {
        format!(
            "segment predict: weights {}",
            weights_name(a.weights.as_deref())
        )
    })?;
    if a.weights.is_none() {
        println!(
            "segment predict: no --weights: the shipped default lung UNet (base {}, {} px)",
            seg.unet().config().base,
            seg.unet().config().size
        );
    }
    seg.flip_tta = !a.no_flip;
    let pb = bar(0, "segment");
    let mut progress = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    };
    let shard = a.shard.resolve("segment predict")?;
    let summary = if a.input.is_dir() {
        if shard.is_some() {
            anyhow::bail!(
                "segment predict: {}: a folder cannot be sharded (its order is not a manifest's): give a manifest",
                a.input.display()
            );
        }
        cxr_segment::predict_folder(&seg, &a.input, &a.out, &mut progress)
    } else {
        let opts = SegmentOptions {
            image_column: a.image_column.clone(),
            shard,
            ..Default::default()
        };
        cxr_segment::segment_manifest(&seg, &a.input, &a.out, &opts, &mut progress)
    }
    .with_context(|| {
        format!(
            "segment predict: input {}, output {}",
            a.input.display(),
            a.out.display()
        )
    })?;
    pb.finish_and_clear();
    if let Some(s) = shard {
        let weights = match &a.weights {
            Some(w) => cxr_core::fsutil::sha256_file(w)
                .with_context(|| format!("segment predict: weights {}", w.display()))?,
            None => cxr_core::fsutil::sha256_bytes(cxr_segment::DEFAULT_LUNG_UNET),
        };
        let config_hash = cxr_core::fsutil::sha256_bytes(
            format!("weights={weights} column={}", a.image_column).as_bytes(),
        );
        let parts = [
            s.part_path(&a.out.join("manifest.csv")),
            s.part_path(&a.out.join("rejects.csv")),
        ];
        let inputs = [("weights", weights)];
        crate::shard::write_sidecars("segment", s, &a.input, &config_hash, &inputs, &parts)?;
    }
    println!(
        "segment predict: {} images, {} kept, rejected {:?}; outputs in {}",
        summary.images,
        summary.kept,
        summary.rejected,
        a.out.display()
    );
    Ok(())
}

/// The weights file, or the shipped default's name.
fn weights_name(weights: Option<&std::path::Path>) -> String {
    weights.map_or_else(
        || cxr_segment::DEFAULT_LUNG_UNET_NAME.to_string(),
        |w| w.display().to_string(),
    )
}

fn crop(a: CropArgs) -> Result<()> {
    let pb = bar(0, "crop");
    let opts = SegmentOptions {
        image_column: a.image_column.clone(),
        ..Default::default()
    };
    let summary = cxr_segment::crop_manifest(&a.manifest, &a.out, &opts, &mut |d, t| {
        pb.set_length(t as u64);
        pb.set_position(d as u64);
    })
    .with_context(|| format!("segment crop: manifest {}", a.manifest.display()))?;
    pb.finish_and_clear();
    println!(
        "segment crop: {} images, {} kept, rejected {:?}; manifest {}",
        summary.images,
        summary.kept,
        summary.rejected,
        a.out.join("manifest.csv").display()
    );
    Ok(())
}
