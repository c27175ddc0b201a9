//! `cargo xtask manifest ...`: manifest commands.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use cxr_core::Manifest;

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Parse a manifest, check its columns and values, and print images per source and label.
    Check {
        /// The manifest CSV.
        file: PathBuf,
    },
}

pub fn run(cmd: ManifestCommand) -> Result<()> {
    match cmd {
        ManifestCommand::Check { file } => {
            let summary = check(&file)?;
            print!("{summary}");
            Ok(())
        }
    }
}

/// Reads a manifest and renders a `source × label` count table.
pub fn check(file: &std::path::Path) -> Result<String> {
    let manifest =
        Manifest::read(file).with_context(|| format!("reading manifest {}", file.display()))?;
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &manifest.records {
        *counts
            .entry((r.source.to_string(), r.label.to_string()))
            .or_default() += 1;
    }
    let mut out = format!("{}: {} images\n", file.display(), manifest.records.len());
    for ((source, label), n) in counts {
        out.push_str(&format!("  {source:<24} {label:<10} {n}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_and_reports_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("m.csv");
        std::fs::write(
            &good,
            "id,source,label,patient,view,path,format,sha256\n\
             a,nih,pneumonia,p1,PA,a.png,png,00\n\
             b,nih,pneumonia,p2,PA,b.png,png,00\n\
             c,bimcv,covid,p3,AP,c.png,png,00\n",
        )
        .unwrap();
        let out = check(&good).unwrap();
        assert!(out.contains("3 images"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.contains("nih") && l.trim_end().ends_with('2')),
            "{out}"
        );

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "id,source\na,nih\n").unwrap();
        let msg = format!("{:#}", check(&bad).unwrap_err());
        assert!(msg.contains("bad.csv") && msg.contains("label"), "{msg}");
    }

    #[test]
    fn cli_parses_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("m.csv");
        std::fs::write(
            &good,
            "id,source,label,patient,view,path,format,sha256\na,nih,pneumonia,p1,PA,a.png,png,00\n",
        )
        .unwrap();
        crate::run(["xtask", "manifest", "check", good.to_str().unwrap()]).unwrap();
        let err = crate::run(["xtask", "manifest", "check", "/nonexistent/m.csv"]).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/m.csv"));
        assert!(crate::run(["xtask", "no-such-command"]).is_err());
    }
}
