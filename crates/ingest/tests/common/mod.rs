//! Helpers shared by the ingest integration tests.

use std::path::{Path, PathBuf};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$CXR_SHARED_DATA` (default `../shared/data`, relative paths from the repository root), when it exists.
pub fn shared_data() -> Option<PathBuf> {
    let root = repo_root();
    let dir = std::env::var("CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        root.join(dir)
    };
    dir.is_dir().then_some(dir)
}
