//! `cargo xtask fuzz`: runs the libFuzzer targets of `fuzz/` (its own workspace, built with nightly by
//! `fuzz/build.sh`) through `fuzz/run.sh`, which seeds the corpora from `$CXR_SHARED_DATA` at run time.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Targets (default: read_dicom read_nifti read_raster manifest_csv predictions_csv).
    targets: Vec<String>,
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/run.sh");
    let status = std::process::Command::new("sh")
        .arg(&script)
        .arg(args.seconds.to_string())
        .args(&args.targets)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see docs/RELIABILITY.md",
            script.display()
        );
    }
    Ok(())
}
