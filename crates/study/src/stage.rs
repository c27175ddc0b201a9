//! Stage caching: a stage's folder holds `stage.json` with the key of what produced it (config + inputs) and
//! a small serialisable result. A stage whose key matches is skipped; a stage killed half-way has no
//! `stage.json` (it is written last, atomically) and runs again.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Context as _, Result, StudyError};

#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp<T> {
    key: String,
    value: T,
}

/// Only the key, to tell "another key" from "this key, but a value this version cannot read".
#[derive(serde::Deserialize)]
struct KeyOnly {
    key: String,
}

/// Hash of any serialisable key material.
pub fn key_of(parts: &impl Serialize) -> String {
    let json = serde_json::to_vec(parts).unwrap_or_default();
    cxr_core::fsutil::sha256_bytes(&json)
}

/// Hash of a file's bytes (for manifests that feed a stage).
pub fn file_key(path: &Path) -> Result<String> {
    cxr_core::fsutil::sha256_file(path).ctx(|| format!("hashing {}", path.display()))
}

/// Runs `work` unless `dir/stage.json` holds the same key; returns the (stored or new) value.
pub fn cached<T, F>(name: &str, dir: &Path, key: &str, work: F) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T>,
{
    let stamp_path = dir.join("stage.json");
    if let Ok(bytes) = std::fs::read(&stamp_path) {
        match serde_json::from_slice::<Stamp<T>>(&bytes) {
            Ok(stamp) if stamp.key == key => {
                tracing::info!(stage = name, "up to date: {}", dir.display());
                return Ok(stamp.value);
            }
            Ok(_) => {}
            // Same inputs, but a result this version cannot read back (written by an older layout): say why
            // the stage runs again.
            Err(e) if serde_json::from_slice::<KeyOnly>(&bytes).is_ok_and(|k| k.key == key) => {
                tracing::warn!(
                    stage = name,
                    "{} unreadable ({e}): running the stage again",
                    stamp_path.display()
                );
            }
            Err(_) => {}
        }
    }
    let start = std::time::Instant::now();
    tracing::info!(stage = name, "running → {}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| StudyError::io(dir, e))?;
    let value = work().ctx(|| format!("stage `{name}`"))?;
    let bytes = serde_json::to_vec_pretty(&Stamp {
        key: key.to_string(),
        value: &value,
    })
    .ctx(|| format!("stage `{name}`: serialising its result"))?;
    cxr_core::fsutil::write_atomic(&stamp_path, &bytes)
        .ctx(|| format!("writing {}", stamp_path.display()))?;
    tracing::info!(
        stage = name,
        seconds = format!("{:.1}", start.elapsed().as_secs_f64()),
        "done"
    );
    Ok(value)
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
        assert!(
            cached::<u32, _>("t", &d, "k", || Err(StudyError::Invalid("boom".into()))).is_err()
        );
        assert!(!d.join("stage.json").exists());
        // A stamp with this key whose value no longer parses runs the stage again.
        let s: String = cached("t", dir.path(), "k2", || Ok("new".into())).unwrap();
        assert_eq!(s, "new");
    }
}
