//! Stage caching: a stage's folder holds `stage.json` with the key of what produced it (config + inputs) and
//! a small serialisable result. A stage whose key matches is skipped; a stage killed half-way has no
//! `stage.json` (it is written last, atomically) and runs again.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp<T> {
    key: String,
    value: T,
}

/// Hash of any serialisable key material.
pub fn key_of(parts: &impl Serialize) -> String {
    let json = serde_json::to_vec(parts).unwrap_or_default();
    cxr_core::fsutil::sha256_bytes(&json)
}

/// Hash of a file's bytes (for manifests that feed a stage).
pub fn file_key(path: &Path) -> Result<String> {
    cxr_core::fsutil::sha256_file(path).with_context(|| format!("hashing {}", path.display()))
}

/// Runs `work` unless `dir/stage.json` holds the same key; returns the (stored or new) value.
pub fn cached<T, F>(name: &str, dir: &Path, key: &str, work: F) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T>,
{
    let stamp_path = dir.join("stage.json");
    if let Ok(bytes) = std::fs::read(&stamp_path)
        && let Ok(stamp) = serde_json::from_slice::<Stamp<T>>(&bytes)
        && stamp.key == key
    {
        tracing::info!(stage = name, "up to date: {}", dir.display());
        return Ok(stamp.value);
    }
    let start = std::time::Instant::now();
    tracing::info!(stage = name, "running → {}", dir.display());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let value = work().with_context(|| format!("stage `{name}`"))?;
    let bytes = serde_json::to_vec_pretty(&Stamp {
        key: key.to_string(),
        value: &value,
    })?;
    cxr_core::fsutil::write_atomic(&stamp_path, &bytes)?;
    tracing::info!(
        stage = name,
        seconds = format!("{:.1}", start.elapsed().as_secs_f64()),
        "done"
    );
    Ok(value)
}

/// A spinner-style progress bar for a stage (hidden when stderr is not a terminal).
pub fn bar(name: &str, total: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(name.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_runs_once_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = 0;
        let a: u32 = cached("t", dir.path(), "k1", || {
            runs += 1;
            Ok(7)
        })
        .unwrap();
        let b: u32 = cached("t", dir.path(), "k1", || {
            runs += 1;
            Ok(8)
        })
        .unwrap();
        assert_eq!((a, b, runs), (7, 7, 1));
        let c: u32 = cached("t", dir.path(), "k2", || Ok(9)).unwrap();
        assert_eq!(c, 9);
        // A failing stage leaves no stamp, so it runs again.
        let d = dir.path().join("f");
        assert!(cached::<u32, _>("t", &d, "k", || anyhow::bail!("boom")).is_err());
        assert!(!d.join("stage.json").exists());
    }
}
