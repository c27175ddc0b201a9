//! The `cxr` command of cxr-confounders (`cargo install --path crates/cli --locked`).
//!
//! Role: the user-facing front end. Each subcommand parses its arguments (clap), turns them into a library's
//! typed configuration, calls that library (or, for `reproduce`, the study), shows progress and prints a
//! summary. Libraries return typed errors; here they get `anyhow` context naming the file and the stage.
//! `cxr <command>` forwards every user command here, so both spell the same thing.
//!
//! Inputs: command-line arguments, TOML configs, manifests. Outputs: whatever the stage writes, under the
//! folders the user names (default `target/...`).

use std::ffi::OsString;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod audit_protocol;
mod confounders;
mod evaluate;
mod explain;
pub mod logfile;
mod manifest;
mod model;
mod preprocess;
mod report;
mod reproduce;
pub mod score;
mod segment;
pub mod shard;
mod synth;

/// cxr-confounders: does a chest X-ray classifier see Covid-19, or the hospital? The study, and an audit of
/// any classifier.
#[derive(Debug, Parser)]
#[command(name = "cxr", version, long_about = None)]
pub struct Cli {
    /// More log output (repeat for more); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manifests (cxr-ingest): `--dataset NAME --root DIR --out FILE.csv` builds one; subcommands check,
    /// split (apply a design), lint (Cramér's V, leaks), export-four, datasets.
    Manifest(manifest::ManifestArgs),
    /// Grad-CAM of a trained model (cxr-explain): overlays, galleries per source/class, lung_energy.csv.
    Explain(explain::ExplainArgs),
    /// Shortcut audit of any classifier (cxr-explain): source probe, occlusion AUCs, split design, saliency,
    /// audit.json; `audit prepare` / `audit finish` for a model scored outside (to_score.csv → scores CSV).
    Audit(explain::AuditCommand),
    /// Counterfactual confounder test on a synthetic world: swaps one planted confounder at a time between
    /// the training split's Covid and pneumonia sources and flags those the model's score follows
    /// (confounders.json).
    AuditConfounders(confounders::AuditConfoundersArgs),
    /// Train a classifier from an experiment config (cxr-model): predictions.csv, training_log.csv, checkpoints.
    Train(model::TrainArgs),
    /// Backbone features per image (cxr-model): features.csv (`id, f0 … fN`).
    Embed(model::EmbedArgs),
    /// Write the synthetic multi-source world (cxr-synth): six datasets in their native layouts.
    Synth(synth::SynthArgs),
    /// Manifest → 8-bit PNGs (cxr-preprocess): windowing, resize, optional 10x augmentation, cached by content.
    Preprocess(preprocess::PreprocessArgs),
    /// One image → an 8-bit PNG through the same pipeline (exit 1 with a one-line error on bad input).
    Convert(preprocess::ConvertArgs),
    /// Lung UNet (cxr-segment): `train` on mask pairs, `predict` masks (+ crops and manifest columns), `crop`.
    #[command(subcommand)]
    Segment(segment::SegmentCommand),
    /// Metrics with DeLong and bootstrap CIs per split, source, seen/unseen (cxr-eval): metrics.json,
    /// metrics.csv, tables.md, plots/*.svg.
    #[command(after_help = evaluate::input_help())]
    Evaluate(evaluate::EvaluateArgs),
    /// Any classifier over a manifest (cxr-onnx spec or a trained run): predictions.csv for `evaluate`,
    /// predictions.rejects.csv for unreadable images.
    Score(score::ScoreArgs),
    /// The whole study in one command: world or real data → … → results.json and report.html.
    Reproduce(reproduce::ReproduceArgs),
}

/// Parses `args` (the first one is the program name) and runs the command.
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| {
        // Help and version are not failures, but clap reports them as errors: print and stop cleanly.
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            let _ = e.print();
            std::process::exit(0);
        }
        // clap's message starts with its own `error: `; main adds one.
        let msg = e.to_string();
        anyhow::anyhow!("{}", msg.trim_start_matches("error: ").trim_end())
    })?;
    init_tracing(cli.verbose);
    match cli.command {
        Command::Manifest(cmd) => manifest::run(cmd),
        Command::Explain(args) => explain::explain(args),
        Command::Audit(cmd) => explain::audit_command(cmd),
        Command::AuditConfounders(args) => confounders::run(args),
        Command::Train(args) => model::train(args),
        Command::Embed(args) => model::embed(args),
        Command::Synth(args) => synth::run(args),
        Command::Preprocess(args) => preprocess::preprocess(args),
        Command::Convert(args) => preprocess::convert(args),
        Command::Segment(cmd) => segment::run(cmd),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Score(args) => score::run(args),
        Command::Reproduce(args) => reproduce::run(args).map(|_| ()),
    }
}

/// An error and its causes joined by `: `, each part said once: a library error that prints its source, or
/// a message that names a path its context names too, would otherwise repeat it
/// (`x.dcm: cannot read image: x.dcm: No such file ...: No such file ...`).
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        for part in cause.to_string().split(": ") {
            let part = part.trim();
            // A part that an earlier one already holds (`reading manifest x.csv`, then `x.csv`) adds nothing;
            // very short parts (a number, a word) may repeat by chance and stay.
            let said = parts
                .iter()
                .any(|p| p == part || (part.len() >= 4 && p.contains(part)));
            if !part.is_empty() && !said {
                parts.push(part.to_string());
            }
        }
    }
    parts.join(": ")
}

pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // jpeg2k (OpenJPEG) logs every header it reads at info level: keep it to warnings.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},jpeg2k=warn")));
    // `try_init`: tests call `run` many times in one process.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a person at a terminal, never in a CI log or a redirected file.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| logfile::FileTee)
                .with_ansi(false)
                .with_target(false),
        )
        .try_init();
}

/// The exit status of an audit whose verdict fails `--fail-on`: the command ran, the model failed the audit.
/// Distinct from 1 (the command itself failed, bad arguments included), so a CI can tell the two apart.
pub const EXIT_AUDIT_FAILED: u8 = 3;

pub use explain::VerdictFailed;

/// Runs `args` as a command and turns the outcome into the process's exit status ([`exit_status`]).
pub fn main_with<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    exit_status(run(args))
}

/// A command's outcome as the process's exit status, printing an error once (its causes, most specific
/// last, so the failing file is always named): 0 success, 1 failure, [`EXIT_AUDIT_FAILED`] for a verdict
/// that fails `--fail-on` (one line says why).
pub fn exit_status(outcome: Result<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<VerdictFailed>() {
            Some(failed) => {
                eprintln!("{failed}");
                std::process::ExitCode::from(EXIT_AUDIT_FAILED)
            }
            None => {
                eprintln!("error: {}", error_chain(&err));
                std::process::ExitCode::FAILURE
            }
        },
    }
}
