//! `--shard K/N` for the per-image commands, and the sidecars of their parts (`cxr_core::shard` holds the
//! rule, the environment mapping and the merge; `docs/SCALE.md` the cluster recipes).
//!
//! A command joins in with one line, `#[command(flatten)] shard: ShardArgs`, then `args.shard.resolve("name")?`
//! and, after writing its parts, [`write_sidecars`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use cxr_core::Shard;
use cxr_core::shard::{PartMeta, ShardSource};

/// `--shard K/N`; without it the shard comes from a Slurm array or a Kubernetes Indexed Job.
#[derive(Debug, Clone, Default, Args)]
pub struct ShardArgs {
    /// Process only shard K of N (0-based; rows by SHA-256 of the image id) and write `*.part-K-of-N.csv`
    /// for `cxr manifest merge`. Default: from SLURM_ARRAY_TASK_* or JOB_COMPLETION_INDEX +
    /// CXR_SHARD_COUNT, else the whole run.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
}

impl ShardArgs {
    /// The shard of this run (the flag, then the environment), logged with where it came from.
    pub fn resolve(&self, command: &str) -> Result<Option<Shard>> {
        let r = cxr_core::shard::resolve(self.shard, |k| std::env::var(k).ok())
            .with_context(|| format!("{command}: choosing the shard"))?;
        if let Some((s, source)) = r {
            tracing::info!("{command}: shard {s} (from {source})");
            if source != ShardSource::Flag {
                println!("{command}: shard {s} from {source}");
            }
        }
        Ok(r.map(|(s, _)| s))
    }
}

/// Writes the sidecar (`<part>.json`: N, input manifest and its hash, config hash, rows, the part's content
/// hash, and `inputs`: the content hash of every other input file that shaped it, by role) of each part.
pub fn write_sidecars(
    stage: &str,
    shard: Shard,
    input_manifest: &Path,
    config_hash: &str,
    inputs: &[(&str, String)],
    parts: &[PathBuf],
) -> Result<()> {
    let input_sha256 = cxr_core::fsutil::sha256_file(input_manifest)
        .with_context(|| format!("{stage}: hashing the input manifest"))?;
    // Absolute: the parts' folder is usually elsewhere (manifest paths are absolute or relative to their
    // folder, never to the working directory).
    let input_abs = std::path::absolute(input_manifest)
        .with_context(|| format!("{stage}: {}", input_manifest.display()))?;
    for part in parts {
        let meta = PartMeta {
            stage: stage.to_string(),
            shard: shard.index,
            count: shard.count,
            input_manifest: input_abs.clone(),
            input_sha256: input_sha256.clone(),
            config_hash: config_hash.to_string(),
            rows: cxr_core::shard::count_csv_rows(part)?,
            part_sha256: String::new(),
            inputs: inputs
                .iter()
                .filter(|(_, sha)| !sha.is_empty())
                .map(|(role, sha)| (role.to_string(), sha.clone()))
                .collect(),
        };
        cxr_core::shard::write_part_meta(part, &meta)
            .with_context(|| format!("{stage}: sidecar of {}", part.display()))?;
    }
    Ok(())
}

/// `cxr manifest merge DIR [--input M.csv]`.
pub fn merge(dir: &Path, input: Option<&Path>) -> Result<()> {
    let t = std::time::Instant::now();
    let merged = cxr_core::shard::merge_dir(dir, input)
        .with_context(|| format!("manifest merge {}", dir.display()))?;
    for m in &merged {
        println!(
            "merged {} parts -> {} ({} rows)",
            m.parts,
            m.path.display(),
            m.rows
        );
    }
    println!(
        "manifest merge: {:.2} s, peak RSS {} KiB",
        t.elapsed().as_secs_f64(),
        peak_rss_kib().map_or("?".into(), |k| k.to_string())
    );
    Ok(())
}

/// Peak resident set of this process (VmHWM), KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
