//! `cargo xtask bench ops`: cxr-ops against candle's stock ops and PyTorch, per convolution layer (GFLOP/s) and
//! for whole networks (ResNet50 inference, a Finetune1 step, a UNet training step). The timing code lives in
//! `cxr_ops::bench`; PyTorch runs `crates/ops/scripts/bench_torch.py` with `$CXR_PYTHON` (default
//! `/work/pyvenv/bin/python`) and is skipped with a message when absent.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;
use cxr_ops::bench::{self, ConvLayer, Ops};

#[derive(Debug, Args)]
pub struct BenchOpsArgs {
    /// Timed repetitions per layer (median; one warm-up call first).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Timed repetitions per whole-network figure (median; one warm-up call first).
    #[arg(long, default_value_t = 1)]
    pub net_reps: usize,
    /// ResNet50 batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// UNet batch size (base 16, 256x256).
    #[arg(long, default_value_t = 4)]
    pub unet_batch: usize,
    /// Skip the per-layer table.
    #[arg(long)]
    pub skip_layers: bool,
    /// Skip the whole-network figures.
    #[arg(long)]
    pub skip_nets: bool,
    /// Skip candle's stock ops in the whole-network figures (they are slow).
    #[arg(long)]
    pub skip_stock_nets: bool,
}

pub(crate) fn python() -> PathBuf {
    std::env::var_os("CXR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/pyvenv/bin/python"))
}

/// PyTorch's seconds per layer and per ResNet50 batch, or None (with the reason printed) when unavailable.
fn torch_times(layers: &[ConvLayer], args: &BenchOpsArgs) -> Result<Option<serde_json::Value>> {
    let py = python();
    // From xtask the script is at ../crates/ops/scripts; from cxr-ops' own dev runner at ./scripts.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = [
        here.join("../crates/ops/scripts/bench_torch.py"),
        here.join("scripts/bench_torch.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or_else(|| here.join("../crates/ops/scripts/bench_torch.py"));
    let probe = Command::new(&py).args(["-c", "import torch"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(_) => {
            println!("PyTorch: skipped ({} cannot import torch)", py.display());
            return Ok(None);
        }
        Err(e) => {
            println!(
                "PyTorch: skipped (no python at {}: {e}; set CXR_PYTHON)",
                py.display()
            );
            return Ok(None);
        }
    }
    let spec = serde_json::json!({
        "reps": args.reps,
        "net_reps": args.net_reps.max(2),
        "resnet50_batch": if args.skip_nets { 0 } else { args.batch },
        "layers": layers.iter().map(|l| serde_json::json!({
            "n": l.n, "cin": l.cin, "h": l.h, "w": l.w, "cout": l.cout, "k": l.k, "stride": l.stride, "pad": l.pad,
        })).collect::<Vec<_>>(),
    });
    let dir = std::env::temp_dir().join(format!("cxr-bench-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec_path = dir.join("layers.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)
        .with_context(|| format!("writing {}", spec_path.display()))?;
    println!("PyTorch: running {} {}", py.display(), script.display());
    let out = Command::new(&py)
        .arg(&script)
        .arg(&spec_path)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        println!(
            "PyTorch: skipped ({} failed: {})",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the output of {}", script.display()))?;
    Ok(Some(v))
}

fn gflops(flops: f64, s: f64) -> f64 {
    flops / s / 1e9
}

pub fn run(args: BenchOpsArgs) -> Result<()> {
    println!(
        "cxr-ops bench: {} rayon threads; load average now: {}",
        rayon::current_num_threads(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut layers = bench::resnet50_layers(args.batch);
    layers.extend(bench::unet_layers(args.unet_batch, 16, 256));
    let torch = torch_times(if args.skip_layers { &[] } else { &layers }, &args)?;
    let torch_layer = |i: usize| -> Option<f64> { torch.as_ref()?.get("layers")?.get(i)?.as_f64() };

    if !args.skip_layers {
        println!(
            "\n{:<9} {:<24} {:>5} {:>5} {:>4} {:>4} {:>3} | {:>8} {:>8} {:>8} | {:>7} {:>7}",
            "net",
            "layer",
            "cin",
            "cout",
            "hw",
            "k/s",
            "x",
            "ours",
            "candle",
            "torch",
            "/candle",
            "/torch"
        );
        println!(
            "{:<9} {:<24} {:>31} | {:>26} | {:>15}",
            "", "", "", "GFLOP/s (forward)", "speed-up"
        );
        let mut sums: std::collections::BTreeMap<&str, [f64; 4]> = Default::default();
        for (i, l) in layers.iter().enumerate() {
            let t = bench::time_layer(l, args.reps)?;
            let f = l.flops();
            let pt = torch_layer(i);
            let e = sums.entry(l.net).or_default();
            e[0] += l.count as f64 * t.ours_s;
            e[1] += l.count as f64 * t.stock_s;
            e[2] += l.count as f64 * pt.unwrap_or(f64::NAN);
            e[3] += l.count as f64 * f;
            println!(
                "{:<9} {:<24} {:>5} {:>5} {:>4} {:>4} {:>3} | {:>8.1} {:>8.1} {:>8} | {:>7.2} {:>7}",
                l.net,
                l.name,
                l.cin,
                l.cout,
                l.h,
                format!("{}/{}", l.k, l.stride),
                l.count,
                gflops(f, t.ours_s),
                gflops(f, t.stock_s),
                pt.map_or("-".into(), |p| format!("{:.1}", gflops(f, p))),
                t.stock_s / t.ours_s,
                pt.map_or("-".into(), |p| format!("{:.2}", p / t.ours_s)),
            );
        }
        for (net, [o, s, p, f]) in sums {
            println!(
                "{net}: all convolutions (weighted by count): ours {:.1} GFLOP/s, candle {:.1}, torch {}; ours/candle {:.2}x, ours/torch {}",
                gflops(f, o),
                gflops(f, s),
                if p.is_nan() {
                    "-".into()
                } else {
                    format!("{:.1}", gflops(f, p))
                },
                s / o,
                if p.is_nan() {
                    "-".into()
                } else {
                    format!("{:.2}x", p / o)
                },
            );
        }
    }
    if args.skip_nets {
        return Ok(());
    }

    println!("\nWhole networks (random weights, f32, CPU):");
    let b = args.batch;
    let net = bench::ResNet50::new()?;
    let x = bench::uniform(&[b, 3, 224, 224], 1.0, 3)?;
    let ours = bench::time_median(args.net_reps, || net.infer(&x, Ops::Ours).map(|_| ()))?;
    println!(
        "ResNet50 inference b={b}: ours {:.2} img/s",
        b as f64 / ours
    );
    let stock = if args.skip_stock_nets {
        None
    } else {
        let s = bench::time_median(args.net_reps, || net.infer(&x, Ops::Stock).map(|_| ()))?;
        println!(
            "ResNet50 inference b={b}: candle stock {:.2} img/s",
            b as f64 / s
        );
        Some(s)
    };
    let torch_r50 = torch
        .as_ref()
        .and_then(|t| t.get("resnet50_infer_s")?.as_f64());
    if let Some(p) = torch_r50 {
        println!(
            "ResNet50 inference b={b}: PyTorch {:.2} img/s",
            b as f64 / p
        );
    }
    let ft_ours = bench::time_median(args.net_reps, || net.finetune1_step(&x, Ops::Ours))?;
    println!(
        "Finetune1 step b={b}: ours {:.2} s ({:.2} img/s)",
        ft_ours,
        b as f64 / ft_ours
    );
    let ft_stock = if args.skip_stock_nets {
        None
    } else {
        let s = bench::time_median(args.net_reps, || net.finetune1_step(&x, Ops::Stock))?;
        println!(
            "Finetune1 step b={b}: candle stock {:.2} s ({:.2} img/s)",
            s,
            b as f64 / s
        );
        Some(s)
    };
    let ub = args.unet_batch;
    let unet = bench::UNet::new(16)?;
    let xu = bench::uniform(&[ub, 1, 256, 256], 1.0, 4)?;
    let un_ours = bench::time_median(args.net_reps, || unet.train_step(&xu, Ops::Ours))?;
    println!("UNet step b={ub} (base 16, 256x256): ours {:.2} s", un_ours);
    let un_stock = if args.skip_stock_nets {
        None
    } else {
        let s = bench::time_median(args.net_reps, || unet.train_step(&xu, Ops::Stock))?;
        println!(
            "UNet step b={ub} (base 16, 256x256): candle stock {:.2} s",
            s
        );
        Some(s)
    };

    println!("\nRatios (targets from issue 6):");
    match torch_r50 {
        Some(p) => println!(
            "  ResNet50 inference, ours/PyTorch images/s: {:.2}x (target >= 1.0x)",
            p / ours
        ),
        None => println!("  ResNet50 inference, ours/PyTorch: - (PyTorch skipped)"),
    }
    if let Some(s) = stock {
        println!("  ResNet50 inference, ours/candle stock: {:.2}x", s / ours);
    }
    if let Some(s) = ft_stock {
        println!(
            "  Finetune1 step, ours/candle stock: {:.2}x (target >= 2x)",
            s / ft_ours
        );
    }
    if let Some(s) = un_stock {
        println!(
            "  UNet step, ours/candle stock: {:.2}x (target >= 3x)",
            s / un_ours
        );
    }
    Ok(())
}
