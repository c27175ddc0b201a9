//! Helpers for the end-to-end tests in `tests/tests/`.
//!
//! Role: locate the repository and the shared real data (`CXR_SHARED_DATA`, default `../shared/data`), and
//! say `skipped: ...` when data a test needs is absent. Inputs: environment. Outputs: paths.

use std::path::{Path, PathBuf};

/// The repository root (the folder holding the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The shared real-data folder: `$CXR_SHARED_DATA`, else `../shared/data` beside the repository.
pub fn shared_data() -> PathBuf {
    match std::env::var_os("CXR_SHARED_DATA") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        }
        _ => repo_root().join("../shared/data"),
    }
}

/// `Some(path)` of a file or folder inside the shared data, or `None` after printing a `skipped:` line.
pub fn shared_or_skip(relative: &str, test: &str) -> Option<PathBuf> {
    let p = shared_data().join(relative);
    if p.exists() {
        Some(p)
    } else {
        println!(
            "skipped: {test}: {} not found (set CXR_SHARED_DATA)",
            p.display()
        );
        None
    }
}
