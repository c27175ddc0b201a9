//! `cargo xtask train`, `cargo xtask embed` and `cargo xtask bench model`: the model stage (`cxr-model`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use cxr_model::{Arch, Classifier, EmbedOptions, Mode, TrainConfig, TrainOptions};

/// `cargo xtask train --config FILE.toml [--out DIR] [--resume]`.
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

/// `cargo xtask embed --backbone resnet50|vgg16 [--weights W] --input DIR_OR_MANIFEST --out features.csv`.
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

/// `cargo xtask bench model` options.
#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// Embedding batch sizes.
    #[arg(long, default_value = "8,32", value_delimiter = ',')]
    batches: Vec<usize>,
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Timed repetitions per measurement (after one warm-up).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Batch of the Finetune1 training step.
    #[arg(long, default_value_t = 8)]
    train_batch: usize,
    #[arg(long, default_value_t = 2)]
    train_iters: usize,
    /// `cpu` or `cuda` / `cuda:N` (needs a build with the `cuda` feature, see docs/GPU.md); the PyTorch peer
    /// runs on the same kind of device.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Python with torch + torchvision (default `$CXR_PYTHON`, else /work/pyvenv/bin/python, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
}

fn random_input(
    b: usize,
    size: usize,
    seed: u64,
    dev: &candle_core::Device,
) -> Result<candle_core::Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..b * 3 * size * size)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    Ok(candle_core::Tensor::from_vec(
        data,
        (b, 3, size, size),
        dev,
    )?)
}

pub fn bench(args: BenchModelArgs) -> Result<()> {
    let dev = cxr_model::device_by_name(&args.device).context("bench model: --device")?;
    let where_ = if dev.is_cpu() {
        format!("CPU ({} threads)", rayon::current_num_threads())
    } else {
        format!("{dev:?}")
    };
    println!(
        "bench model: ResNet50, {}x{} px, f32, {where_}",
        args.size, args.size,
    );
    let model = Classifier::new(&Arch::resnet50(), Mode::Finetune1, 0, &dev)?;
    let mut ours = Vec::new();
    for &b in &args.batches {
        let x = random_input(b, args.size, b as u64, &dev)?;
        model.features(&x)?;
        dev.synchronize()?;
        let t = Instant::now();
        for _ in 0..args.iters {
            model.features(&x)?;
        }
        // GPU work is queued asynchronously: wait for it before reading the clock.
        dev.synchronize()?;
        let ips = (b * args.iters) as f64 / t.elapsed().as_secs_f64();
        println!("  ours  embed batch {b:>2}: {ips:7.2} images/s");
        ours.push((b, ips));
    }
    // Finetune1 training step: convs frozen, BN (batch stats) + head trainable, Adam.
    let b = args.train_batch;
    let x = random_input(b, args.size, 1, &dev)?;
    let y: Vec<f32> = (0..b).map(|i| (i % 2) as f32).collect();
    let y = candle_core::Tensor::new(y.as_slice(), &dev)?;
    let mut adam = cxr_model::optim::Adam::new(model.params().trainable(), 1e-4)?;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut step = || -> Result<()> {
        let logits = model.forward_train(&x, &mut rng)?;
        let loss = cxr_model::bce_with_logits(&logits, &y)?;
        let grads = loss.backward()?;
        adam.step(&grads)?;
        Ok(())
    };
    step()?;
    dev.synchronize()?;
    let t = Instant::now();
    for _ in 0..args.train_iters {
        step()?;
    }
    dev.synchronize()?;
    let ours_steps = args.train_iters as f64 / t.elapsed().as_secs_f64();
    println!(
        "  ours  finetune1 step batch {b}: {ours_steps:.3} steps/s ({:.2} images/s; {} trainable parameters)",
        ours_steps * b as f64,
        model.trainable_parameter_count()
    );

    let torch = run_torch(&args)?;
    let Some(torch) = torch else { return Ok(()) };
    for (b, ips) in &ours {
        if let Some(t) = torch
            .iter()
            .find(|v| v["what"] == "embed" && v["batch"] == *b)
        {
            let tp = t["images_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "  torch embed batch {b:>2}: {tp:7.2} images/s   ratio ours/torch {:.2}x",
                ips / tp
            );
        }
    }
    if let Some(t) = torch.iter().find(|v| v["what"] == "finetune1_step") {
        let ts = t["steps_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "  torch finetune1 step batch {b}: {ts:.3} steps/s   ratio ours/torch {:.2}x",
            ours_steps / ts
        );
    }
    Ok(())
}

fn dev_is_cuda(name: &str) -> bool {
    name.trim().to_ascii_lowercase().starts_with("cuda")
}

fn run_torch(args: &BenchModelArgs) -> Result<Option<Vec<serde_json::Value>>> {
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var_os("CXR_PYTHON").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("/work/pyvenv/bin/python")).filter(|p| p.exists()))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/model/scripts/bench_torch.py");
    let batches: Vec<String> = args.batches.iter().map(|b| b.to_string()).collect();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([
            "--batches",
            &batches.join(","),
            "--size",
            &args.size.to_string(),
        ])
        .args([
            "--iters",
            &args.iters.to_string(),
            "--train-batch",
            &args.train_batch.to_string(),
        ])
        .args(["--train-iters", &args.train_iters.to_string()])
        .args([
            "--device",
            if dev_is_cuda(&args.device) {
                "cuda"
            } else {
                "cpu"
            },
        ])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            println!(
                "  skipped: PyTorch peer failed with {} ({}): {}",
                python.display(),
                o.status,
                err.lines().last().unwrap_or("")
            );
            return Ok(None);
        }
        Err(e) => {
            println!(
                "  skipped: cannot run {} ({e}); set CXR_PYTHON to a Python with torch + torchvision",
                python.display()
            );
            return Ok(None);
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if let Some(info) = rows.iter().find(|v| v["what"] == "info") {
        println!(
            "  torch {} ({} threads, device {}), script {}",
            info["torch"],
            info["threads"],
            info["device"],
            script.display()
        );
    }
    Ok(Some(rows))
}
