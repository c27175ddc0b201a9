//! `cargo xtask bench <what>`: speed measurements. Speed goals live here, never in timed tests.
//!
//! Each stage adds a variant with its own module; figures are recorded in `docs/PERFORMANCE.md` with the
//! machine and the command.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, SourceId};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Convolution/pooling ops: per-layer GFLOP/s (ResNet50, UNet) and whole-network speeds, cxr-ops vs candle's
    /// stock ops vs PyTorch.
    Ops(crate::bench_ops::BenchOpsArgs),
    /// Batch preprocessing (images/s, peak RSS) on real files, ours vs a pydicom + numpy + Pillow pipeline.
    Preprocess(crate::preprocess::BenchArgs),
    /// ResNet50 frozen-backbone embedding (images/s) and Finetune1 training steps/s, ours vs PyTorch.
    Model(crate::model::BenchModelArgs),
    /// Manifest CSV write + parse throughput (rows/s) on a generated manifest.
    Manifest {
        /// Rows in the generated manifest.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
    },
    /// Sharding costs: `manifest merge` time and peak RSS on a generated manifest split in parts, and
    /// preprocess as three shards against one unsharded run.
    Merge(crate::bench_merge::BenchMergeArgs),
    /// Synthetic world rendering + writing throughput (images/s), paper world.
    Synth {
        /// Images per source (the lung-mask set gets as many).
        #[arg(long, default_value_t = 100)]
        per_source: usize,
        /// Image height in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
    },
    /// Lung UNet inference (images/s) at 256 px for each width (cxr-segment).
    Segment {
        /// Width multipliers to measure (the CPU default 16, the paper's 64).
        #[arg(long, value_delimiter = ',', default_value = "16,64")]
        bases: Vec<usize>,
        /// Images per width.
        #[arg(long, default_value_t = 16)]
        images: usize,
        #[arg(long, default_value_t = 4)]
        batch: usize,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Ops(args) => crate::bench_ops::run(args),
        BenchCommand::Preprocess(args) => crate::preprocess::bench(args),
        BenchCommand::Model(args) => crate::model::bench(args),
        BenchCommand::Manifest { rows } => bench_manifest(rows),
        BenchCommand::Merge(args) => crate::bench_merge::run(args),
        BenchCommand::Synth { per_source, size } => crate::synth::bench(per_source, size),
        BenchCommand::Segment {
            bases,
            images,
            batch,
        } => crate::segment::bench(&bases, images, batch),
    }
}

fn bench_manifest(rows: usize) -> Result<()> {
    let source = SourceId::new(SourceId::NIH)?;
    let records = (0..rows)
        .map(|i| {
            let mut r = ManifestRecord {
                id: format!("img-{i:07}"),
                source: source.clone(),
                label: if i % 2 == 0 {
                    Label::Covid
                } else {
                    Label::Pneumonia
                },
                patient: format!("pat-{:016x}", i / 3),
                view: "PA".into(),
                path: format!("images/{i:07}.png").into(),
                format: ImageFormat::Png,
                sha256: format!("{i:064x}"),
                split: None,
                extra: Default::default(),
            };
            r.set("png8", format!("cache/{i:07}.png"));
            r
        })
        .collect();
    let manifest = Manifest::new(records);
    let dir = tempfile_dir()?;
    let path = dir.join("bench-manifest.csv");
    let t = Instant::now();
    manifest.write(&path)?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = Manifest::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let read_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        back.records.len() == rows,
        "read {} rows, wrote {rows}",
        back.records.len()
    );
    println!(
        "manifest: {rows} rows; write {:.0} rows/s; parse {:.0} rows/s",
        rows as f64 / write_s,
        rows as f64 / read_s
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("cxr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
