//! `cxr synth`: write the synthetic multi-source world (`cxr-synth`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use cxr_synth::{WorldConfig, WorldKind};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (one dataset root per source, world.json, truth.csv, lung-masks/).
    #[arg(long, default_value = "target/synth")]
    pub out: PathBuf,
    /// `paper`: one class per source (the confounded world); `clean`: both classes in every source.
    #[arg(long, default_value = "paper")]
    pub world: String,
    /// Images per source that pass the dataset's selection rule (distractors come on top).
    #[arg(long, default_value_t = 80)]
    pub per_source: usize,
    /// Nominal image height in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    #[arg(long, default_value_t = WorldConfig::default().seed)]
    pub seed: u64,
    /// Pathology strength (0 = none, 1 = default).
    #[arg(long, default_value_t = 1.0)]
    pub signal: f32,
    /// Images in the lung-mask training set.
    #[arg(long, default_value_t = 200)]
    pub lung_masks: usize,
    /// Also write gallery.png (4 images per source) into the output folder.
    #[arg(long)]
    pub gallery: bool,
    /// Plant one confounder group alone (framing, intensity, blur, noise, grid, collimation, text, marker): the
    /// sources share one broad signature for everything else (`cxr_synth::isolate`).
    #[arg(long)]
    pub only: Option<cxr_synth::ConfounderKind>,
}

impl SynthArgs {
    pub fn config(&self) -> Result<WorldConfig> {
        Ok(WorldConfig {
            kind: self.world.parse::<WorldKind>().context("--world")?,
            per_source: self.per_source,
            size: self.size,
            seed: self.seed,
            signal: self.signal,
            lung_mask_count: self.lung_masks,
            gallery: self.gallery,
            only: self.only,
            ..WorldConfig::default()
        })
    }
}

pub fn run(args: SynthArgs) -> Result<()> {
    let cfg = args.config()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("synth {bar:40} {pos}/{len} images ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let summary = cxr_synth::generate_with_progress(&cfg, &args.out, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| {
        format!(
            "synth: writing the {} world into {}",
            cfg.kind.as_str(),
            args.out.display()
        )
    })?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{} world in {}: {} source images + {} lung-mask pairs in {secs:.1} s",
        cfg.kind.as_str(),
        summary.root.display(),
        summary.images_written,
        summary.lung_masks
    );
    for s in &summary.sources {
        println!(
            "  {:<14} {:<44} selected {:>4} (covid {:>4}, pneumonia {:>4}), distractors {:>3}",
            s.id,
            s.root.display(),
            s.selected,
            s.covid,
            s.pneumonia,
            s.distractors
        );
    }
    println!(
        "  ground truth: {} and {}",
        summary.world_json.display(),
        summary.truth_csv.display()
    );
    if let Some(g) = &summary.gallery {
        println!("  gallery: {}", g.display());
    }
    Ok(())
}
