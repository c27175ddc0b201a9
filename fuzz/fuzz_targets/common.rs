// Shared by the reader targets: the readers take a path (format is detected from content), so each input is
// written to one scratch file per process and read back through the public entry point.
use std::path::PathBuf;

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxr-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Reads `data` through `cxr_ingest::read_image`. Any `Err` is fine; a panic (not caught by the reader's
/// own guard), an abort or an out-of-memory is a finding. A decoded image must be self-consistent.
pub fn read_bytes(name: &str, data: &[u8]) {
    let path = scratch(name);
    if std::fs::write(&path, data).is_err() {
        return;
    }
    match cxr_ingest::read_image(&path) {
        Ok(img) => {
            assert_eq!(img.pixels.len(), img.width as usize * img.height as usize);
            assert!(img.width > 0 && img.height > 0);
        }
        Err(e) => {
            // Every error names the file.
            let msg = e.to_string();
            assert!(msg.contains(name), "error does not name the file: {msg}");
        }
    }
}
