//! Developer tasks of cxr-confounders: `cargo xtask bench ...` and `cargo xtask fuzz`, as rust-analyzer's
//! xtask holds only what a developer of the project runs.
//!
//! Every user command (`reproduce`, `audit`, `score`, `segment`, ...) belongs to the `cxr` command
//! (`crates/cli`); `cargo xtask <command>` forwards it there unchanged, so `cargo xtask reproduce` keeps working
//! without an install and both spell the same thing. No algorithm lives here.

use std::ffi::OsString;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod bench_audit;
mod bench_merge;
mod bench_model;
mod bench_onnx;
mod bench_ops;
mod bench_preprocess;
mod bench_stages;
mod fuzz;

pub use cxr_cli::error_chain;

/// The repository root (xtask's parent folder).
pub(crate) fn repo_root() -> std::path::PathBuf {
    let up = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    up.canonicalize().unwrap_or(up)
}

/// The real data folder: `$CXR_SHARED_DATA`, else `../shared/data` (relative to where the bench runs: `cargo
/// xtask` runs from the repository root).
pub(crate) fn shared_data() -> std::path::PathBuf {
    std::env::var_os("CXR_SHARED_DATA")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "../shared/data".into())
}

/// cxr-confounders developer tasks; every other command is the `cxr` command's (`cargo xtask reproduce`
/// = `cxr reproduce`).
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    version,
    long_about = None,
    after_help = "Every other command is the `cxr` command's, forwarded unchanged: `cargo xtask reproduce` = \
                  `cxr reproduce` (`cargo xtask help` lists them; `cargo install --path crates/cli --locked` \
                  installs `cxr`)."
)]
struct DevCli {
    /// More log output (repeat for more); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Benchmarks (speed goals live here, never in timed tests).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Fuzz the ingest readers, CSV parsers, ONNX loader and model spec (`fuzz/`, nightly): `--seconds N` per target.
    Fuzz(fuzz::FuzzArgs),
}

/// The developer tasks' names; any other command goes to `cxr`.
const DEV_COMMANDS: [&str; 2] = ["bench", "fuzz"];

/// Parses `args` (the first one is the program name) and runs the command: a developer task here, anything
/// else through `cxr_cli::run`.
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'));
    // No command (`cargo xtask`, `cargo xtask --help`): the developer tasks' help, which points to `cxr`'s.
    if command.is_some_and(|c| !DEV_COMMANDS.contains(&c)) {
        return cxr_cli::run(args);
    }
    let cli = DevCli::try_parse_from(&args).map_err(|e| {
        if matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
        ) {
            let _ = e.print();
            std::process::exit(0);
        }
        let msg = e.to_string();
        anyhow::anyhow!("{}", msg.trim_start_matches("error: ").trim_end())
    })?;
    cxr_cli::init_tracing(cli.verbose);
    match cli.command {
        DevCommand::Bench(cmd) => bench::run(cmd),
        DevCommand::Fuzz(args) => fuzz::run(args),
    }
}
