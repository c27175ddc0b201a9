//! `cxr train` and `cxr embed`: the model stage (`cxr-model`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use cxr_model::{Arch, EmbedOptions, TrainConfig, TrainOptions};

/// `cxr train --config FILE.toml [--out DIR] [--resume]`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (TOML; see `cxr_model::TrainConfig`).
    #[arg(long)]
    config: PathBuf,
    /// Run folder (default `target/train/<config file stem>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the run folder's `checkpoint.safetensors`.
    #[arg(long)]
    resume: bool,
    /// Stop after this many epochs (checkpoint written; continue later with `--resume`).
    #[arg(long)]
    stop_after_epochs: Option<usize>,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let cfg = TrainConfig::from_file(&args.config)
        .with_context(|| format!("train: reading config {}", args.config.display()))?;
    let out = args.out.unwrap_or_else(|| {
        let stem = args
            .config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        PathBuf::from("target/train").join(stem)
    });
    let opts = TrainOptions {
        resume: args.resume,
        stop_after_epochs: args.stop_after_epochs,
    };
    let t = Instant::now();
    let r = cxr_model::train(&cfg, &out, &opts).with_context(|| {
        format!(
            "train: config {}, run folder {}",
            args.config.display(),
            out.display()
        )
    })?;
    if !r.pretrained {
        println!(
            "WARNING: backbone randomly initialised (no `weights` in the config): not the paper's ImageNet start"
        );
    }
    if r.completed {
        println!(
            "train: {} epochs ({}), best val accuracy {:.4} at epoch {}, {} trainable parameters, {} test predictions, {:.0} s",
            r.epochs_run,
            if r.stopped_early {
                "early stop"
            } else {
                "epoch budget"
            },
            r.best_val_accuracy,
            r.best_epoch,
            r.trainable_parameters,
            r.predictions.len(),
            t.elapsed().as_secs_f64()
        );
        println!("outputs in {}", out.display());
    } else {
        println!(
            "train: stopped after {} epochs; resume with --resume (run folder {})",
            r.epochs_run,
            out.display()
        );
    }
    Ok(())
}

/// `cxr embed --backbone resnet50|vgg16 [--weights W] --input DIR_OR_MANIFEST --out features.csv`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// `resnet50` or `vgg16`.
    #[arg(long, default_value = "resnet50")]
    backbone: String,
    /// torchvision/timm weights (safetensors); random initialisation without.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A folder of PNGs or a manifest (CSV).
    #[arg(long)]
    input: PathBuf,
    /// Output CSV (`id, f0 … fN`).
    #[arg(long)]
    out: PathBuf,
    /// Manifest image column (default `crop` if present, else `png8`).
    #[arg(long)]
    column: Option<String>,
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// With a shard, `--out DIR/features.csv` becomes `DIR/features.part-K-of-N.csv` (+ its sidecar).
    #[command(flatten)]
    shard: crate::shard::ShardArgs,
}

pub fn embed(args: EmbedArgs) -> Result<()> {
    let backbone: Arch = args.backbone.parse().context("embed: --backbone")?;
    let shard = args.shard.resolve("embed")?;
    let weights_sha = match &args.weights {
        Some(w) if shard.is_some() => cxr_core::fsutil::sha256_file(w)
            .with_context(|| format!("embed: weights {}", w.display()))?,
        _ => String::new(),
    };
    let config_hash = cxr_core::fsutil::sha256_bytes(
        format!(
            "backbone={} weights={weights_sha} size={} batch={} column={:?} seed=0",
            args.backbone, args.image_size, args.batch_size, args.column
        )
        .as_bytes(),
    );
    let out = match shard {
        Some(s) => s.part_path(&args.out),
        None => args.out.clone(),
    };
    let opts = EmbedOptions {
        backbone,
        weights: args.weights,
        image_size: args.image_size,
        batch_size: args.batch_size,
        column: args.column,
        seed: 0,
        shard,
    };
    let t = Instant::now();
    let r = cxr_model::embed(&args.input, &out, &opts).with_context(|| {
        format!(
            "embed: input {}, output {}",
            args.input.display(),
            args.out.display()
        )
    })?;
    if let Some(s) = shard {
        crate::shard::write_sidecars(
            "embed",
            s,
            &args.input,
            &config_hash,
            &[("weights", weights_sha)],
            std::slice::from_ref(&out),
        )?;
    }
    if !r.pretrained {
        println!("WARNING: backbone randomly initialised (no --weights)");
    }
    println!(
        "embed: {} images x {} features -> {} ({:.1} s)",
        r.images,
        r.dim,
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
