//! `cxr preprocess` and `cxr convert`: cxr-ingest's reader
//! wired into cxr-preprocess (which never decodes files itself).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use cxr_core::Manifest;
use cxr_preprocess::{
    BatchOptions, DisplayOptions, Filter, Geometry, PreprocessConfig, ResizeMode, Streamed,
    WindowMode, convert_file, run_batch,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `cxr preprocess`.
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Input manifest (written by ingest).
    #[arg(long)]
    manifest: PathBuf,
    /// Output folder: `manifest.csv`, `png8/` (the cache), `rejects.csv`, `summary.json`.
    #[arg(long)]
    out: PathBuf,
    /// Preprocessing config (TOML, see `cxr_preprocess::config`); default: longest side 512, bilinear,
    /// file/metadata windows, min-max otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the config's output size (longest side, or the square side).
    #[arg(long)]
    size: Option<u32>,
    /// Also write the paper's 10 augmented variants per image (rows `<id>.aug<k>`).
    #[arg(long)]
    augment: bool,
    /// Hash every input file instead of trusting the manifest's `sha256` column.
    #[arg(long)]
    verify_hash: bool,
    #[command(flatten)]
    shard: crate::shard::ShardArgs,
}

fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

pub fn preprocess(args: PreprocessArgs) -> Result<()> {
    let context = || format!("preprocess: reading manifest {}", args.manifest.display());
    let mut config = match &args.config {
        Some(p) => PreprocessConfig::from_toml_file(p).context("preprocess")?,
        None => PreprocessConfig::default(),
    };
    if let Some(size) = args.size {
        config.size = size;
    }
    let shard = args.shard.resolve("preprocess")?;
    let options = BatchOptions {
        augment: args.augment,
        verify_hash: args.verify_hash,
        shard,
    };
    // Streamed twice: a first pass checks every row (a bad row is reported before any work) and counts the
    // shard's; the second feeds the stage, so the manifest is never held (docs/PERFORMANCE.md).
    let mut total = 0usize;
    for r in Manifest::stream(&args.manifest, None).with_context(context)? {
        let r = r.with_context(context)?;
        total += usize::from(shard.is_none_or(|s| s.owns_record(&r)));
    }
    let rows = Manifest::stream(&args.manifest, None).with_context(context)?;
    let bar = progress_bar(total, "preprocess");
    let summary = run_batch(
        Streamed {
            header: rows.header.clone(),
            rows,
            total,
        },
        &args.out,
        &config,
        &options,
        |p: &Path| cxr_ingest::read_image(p),
        &|p| {
            bar.set_position(p.done as u64);
            if p.rejected > 0 {
                bar.set_message(format!("preprocess ({} rejected)", p.rejected));
            }
        },
    )
    .with_context(|| format!("preprocess: writing to {}", args.out.display()))?;
    bar.finish_and_clear();
    if let Some(s) = shard {
        let config_hash = cxr_core::fsutil::sha256_bytes(
            format!("{} augment={}", config.hash(), args.augment).as_bytes(),
        );
        crate::shard::write_sidecars(
            "preprocess",
            s,
            &args.manifest,
            &config_hash,
            &[],
            &[summary.manifest.clone(), summary.rejects.clone()],
        )?;
    }
    println!(
        "preprocess: {} images: {} processed, {} from the cache, {} rejected; {} rows in {} ({:.1} s)",
        summary.total,
        summary.processed,
        summary.cached,
        summary.rejected,
        summary.rows,
        summary.manifest.display(),
        summary.elapsed_s
    );
    if summary.rejected > 0 {
        println!("rejects: {}", summary.rejects.display());
    }
    Ok(())
}

/// Window choice of `cxr convert`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConvertWindow {
    /// The file's VOI LUT or window when it has one, min-max otherwise.
    Auto,
    /// Min-max stretch, ignoring any window.
    Minmax,
    /// No window: the full range of the stored bits maps onto 0..255.
    None,
}

/// Arguments of `cxr convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input image (DICOM, NIfTI, PNG or JPEG; detected by content).
    input: PathBuf,
    /// Output 8-bit grey PNG.
    output: PathBuf,
    /// Resize so that the longest side is N pixels (default: keep the size).
    #[arg(long)]
    size: Option<u32>,
    /// Resize to N x N instead (the network input), ignoring the aspect ratio.
    #[arg(long, requires = "size")]
    square: bool,
    #[arg(long, value_enum, default_value = "auto")]
    window: ConvertWindow,
}

pub fn convert(args: ConvertArgs) -> Result<()> {
    let opts = DisplayOptions {
        window: match args.window {
            ConvertWindow::Auto => WindowMode::Auto,
            ConvertWindow::Minmax => WindowMode::Minmax,
            ConvertWindow::None => WindowMode::None,
        },
        ..DisplayOptions::default()
    };
    let geometry = Geometry {
        size: args.size.unwrap_or(0),
        resize: match (args.size, args.square) {
            (None, _) => ResizeMode::Keep,
            (Some(_), true) => ResizeMode::Square,
            (Some(_), false) => ResizeMode::Longest,
        },
        filter: Filter::Bilinear,
    };
    // A decoder panic must not escape as a panic: report it as an error about the file.
    let result = std::panic::catch_unwind(|| {
        convert_file(
            &args.input,
            &args.output,
            |p: &Path| cxr_ingest::read_image(p),
            &opts,
            &geometry,
        )
    })
    .map_err(|_| anyhow::anyhow!("{}: the decoder panicked", args.input.display()))?;
    let p = result.map_err(anyhow::Error::from)?;
    let a = &p.applied;
    println!(
        "{} -> {}: {}x{} -> {}x{}, {}{}{}",
        args.input.display(),
        args.output.display(),
        p.input_size.0,
        p.input_size.1,
        p.image.width,
        p.image.height,
        a.source.as_str(),
        if a.window.is_some() {
            format!(" {}", a.window_string())
        } else {
            String::new()
        },
        if a.inverted { ", inverted" } else { "" }
    );
    Ok(())
}
