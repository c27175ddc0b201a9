//! `cargo xtask bench model`: ResNet50 frozen-backbone embedding and Finetune1 steps, ours vs torchvision.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use cxr_model::{Arch, Classifier, Mode};

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
