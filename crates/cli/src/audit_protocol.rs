//! `cxr audit prepare` and `cxr audit finish`: the audit of a model that cannot be exported, in two steps
//! (`cxr_audit::protocol` holds the recording and replaying scorers and `prepare.json`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use cxr_audit::{ConfounderConfig, FailOn, FinishOptions};

use crate::explain::{AuditOptions, check_verdict, print_outcome};

/// The two steps.
#[derive(Debug, Subcommand)]
pub enum AuditStep {
    /// Write every image the audit needs scored, and `to_score.csv` (`id,path`).
    Prepare(PrepareArgs),
    /// Read the scores (`id,score`) and write `audit.json` and `report.html`.
    Finish(FinishArgs),
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The model's training manifest (columns: docs/AUDIT.md).
    #[arg(long)]
    manifest: PathBuf,
    /// Folder for the images, `to_score.csv`, `prepare.json` and (after `finish`) `audit.json`.
    #[arg(long)]
    out: PathBuf,
    /// The image column the model reads.
    #[arg(long, default_value = "png8")]
    column: String,
    /// The synthetic world the manifest comes from (its folder or `world.json`): adds the counterfactual pairs.
    #[arg(long)]
    world: Option<PathBuf>,
    /// Counterfactual pairs per confounder and direction (with `--world`).
    #[arg(long, default_value_t = 24)]
    pairs: usize,
    #[command(flatten)]
    options: AuditOptions,
}

#[derive(Debug, Args)]
pub struct FinishArgs {
    /// The folder `audit prepare` wrote.
    #[arg(long)]
    dir: PathBuf,
    /// The scores: a CSV with `id,score` (P(Covid-19) in [0, 1]) for every id of `to_score.csv`.
    #[arg(long)]
    scores: PathBuf,
    /// The model's name in `audit.json` (default: the `--name` given to `prepare`, else `scored-outside`).
    #[arg(long)]
    name: Option<String>,
    /// The model's features (`id, f0 … fN`) for the source probe, if `prepare` was not given them.
    #[arg(long)]
    features: Option<PathBuf>,
    /// Exit with status 3 when the verdict is at least this bad (`shortcut`, or `suspicious`: either).
    #[arg(long, value_name = "VERDICT")]
    fail_on: Option<FailOn>,
}

pub fn run(step: AuditStep) -> Result<()> {
    match step {
        AuditStep::Prepare(a) => prepare(a),
        AuditStep::Finish(a) => finish(a),
    }
}

/// The images per scorer call when nothing is scored here (the recorder answers at once).
const RECORD_BATCH: usize = 8;

fn prepare(a: PrepareArgs) -> Result<()> {
    let cfg = a.options.to_config(a.column.clone(), RECORD_BATCH);
    let confounders = a.world.as_ref().map(|w| ConfounderConfig {
        pairs: a.pairs,
        ..ConfounderConfig::new(w)
    });
    let done = cxr_audit::prepare(&a.manifest, &a.out, &cfg, confounders.as_ref())
        .context("audit prepare")?;
    for w in &done.warnings {
        println!("WARNING: {w}");
    }
    println!(
        "audit prepare: {} images to score -> {} (then: cxr audit finish --dir {} --scores S.csv)",
        done.images,
        done.to_score.display(),
        a.out.display()
    );
    Ok(())
}

fn finish(a: FinishArgs) -> Result<()> {
    let opts = FinishOptions {
        name: a.name.clone(),
        features: a.features.clone(),
    };
    let done = cxr_audit::finish(&a.dir, &a.scores, &opts).context("audit finish")?;
    print_outcome(&done.audit);
    if let Some(c) = &done.confounders {
        println!(
            "audit-confounders: {}",
            c.json["verdict"].as_str().unwrap_or("")
        );
    }
    check_verdict(&done.audit, a.fail_on)
}
