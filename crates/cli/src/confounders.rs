//! `cxr audit-confounders`: the counterfactual confounder test (`cxr_audit::run_confounder_test`, over
//! `cxr_explain::confounders`) of any model on a synthetic world; here the options and the printed table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use cxr_audit::ConfounderConfig;
use cxr_explain::KindResult;
use cxr_synth::ConfounderKind;

use crate::explain::ModelArgs;

/// `cxr audit-confounders --world W --model RUN|--model-spec S --manifest M`: does the model follow a planted
/// confounder? (Counterfactual swaps of one confounder group at a time; synthetic worlds only.)
#[derive(Debug, Parser)]
#[command(name = "audit-confounders")]
pub struct AuditConfoundersArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The synthetic world the model's data came from (the folder with `world.json`, or the file).
    #[arg(long)]
    pub world: PathBuf,
    /// The experiment's split manifest (`split` column; its train rows say which sources hold which class).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Counterfactual pairs per confounder and direction (towards Covid, towards pneumonia).
    #[arg(long, default_value_t = 24)]
    pub pairs: usize,
    /// Smallest |mean score shift| (probability) that flags a confounder.
    #[arg(long, default_value_t = 0.05)]
    pub threshold: f64,
    /// Bootstrap resamples for the 95 % CI of the mean shift.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Seed of the rendered patients and of the bootstrap.
    #[arg(long, default_value_t = 20210204)]
    pub seed: u64,
    /// Only these confounder groups (comma-separated: framing, intensity, blur, noise, grid, collimation,
    /// text, marker); default: all.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<ConfounderKind>,
    /// Rendered image height; default: the world's (`world.json` config.size).
    #[arg(long)]
    pub world_size: Option<usize>,
    /// The preprocess stage's output size (longest side); default: the manifest's `pre_size`, else the world
    /// size.
    #[arg(long)]
    pub preprocess_size: Option<u32>,
    /// Keep the rendered model inputs under `<out>/images/`.
    #[arg(long)]
    pub keep_images: bool,
    /// Output folder (default `target/audit-confounders/<model name>`): `confounders.json`,
    /// `confounders.csv`, `confounder_pairs.csv`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl AuditConfoundersArgs {
    /// The library's configuration for a model reading `column`, writing into `out`.
    fn to_config(&self, column: String, out: PathBuf) -> Result<ConfounderConfig> {
        Ok(ConfounderConfig {
            world: self.world.clone(),
            column: Some(column),
            pairs: self.pairs,
            threshold: self.threshold,
            bootstrap: self.bootstrap,
            seed: self.seed,
            kinds: self.kinds.clone(),
            world_size: self.world_size,
            preprocess_size: self.preprocess_size,
            keep_images: self.keep_images,
            batch_size: self.model.batch_size,
            out: Some(out),
            model: Some(self.model.source()?),
        })
    }
}

fn print_table(results: &[KindResult]) {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.3}"));
    println!(
        "{:<12} {:>5} {:>5} {:>4} {:>8} {:>18} {:>8}  status",
        "confounder", "assoc", "V", "n", "shift", "95% CI", "|shift|"
    );
    for r in results {
        println!(
            "{:<12} {:>5} {:>5.2} {:>4} {:>8} {:>18} {:>8}  {}{}",
            r.kind,
            if r.label_associated { "yes" } else { "no" },
            r.cramers_v,
            r.n,
            f(r.mean_shift),
            format!("[{}, {}]", f(r.ci_low), f(r.ci_high)),
            r.mean_abs_shift.map_or("-".into(), |v| format!("{v:.3}")),
            r.status,
            if r.flagged { "  <- FLAG" } else { "" }
        );
    }
}

/// Runs the test for the model the arguments name, writes `confounders.json`, `confounders.csv` and
/// `confounder_pairs.csv` into the output folder, prints a table and returns the JSON it wrote.
pub fn audit_confounders(args: AuditConfoundersArgs) -> Result<serde_json::Value> {
    let (loaded, column) = args.model.load().context("audit-confounders")?;
    let scorer = loaded.scorer.as_ref();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/audit-confounders").join(cxr_core::outname::safe_stem(scorer.name()))
    });
    let cfg = args.to_config(column, out.clone())?;
    let done = cxr_audit::run_confounder_test(scorer, &args.manifest, &cfg)
        .context("audit-confounders")?;
    print_table(&done.results);
    println!("-> {}", out.join("confounders.json").display());
    println!(
        "audit-confounders of {}: {}",
        scorer.name(),
        done.json["verdict"].as_str().unwrap_or("")
    );
    Ok(done.json)
}

/// The command's entry point (the JSON is written and printed; the caller needs nothing back).
pub fn run(args: AuditConfoundersArgs) -> Result<()> {
    audit_confounders(args).map(|_| ())
}
