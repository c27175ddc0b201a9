//! A copy of the log in a file: `reproduce` keeps `reproduce.log` in its output folder, so that a run can be
//! read (and checked for patient data) after the terminal is gone. Plain text, appended, so a resumed run
//! continues the same log.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};

static LOG_FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// The tracing writer of the file layer: writes to the file while one is set, else nowhere.
pub struct FileTee;

impl Write for FileTee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut guard) = LOG_FILE.lock()
            && let Some(f) = guard.as_mut()
        {
            f.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Ok(mut guard) = LOG_FILE.lock()
            && let Some(f) = guard.as_mut()
        {
            f.flush()?;
        }
        Ok(())
    }
}

/// Copies the log into `path` (appending) until the guard is dropped.
pub fn copy_to(path: &Path) -> Result<LogGuard> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    if let Ok(mut guard) = LOG_FILE.lock() {
        *guard = Some(file);
    }
    Ok(LogGuard)
}

/// Stops the copy when dropped.
pub struct LogGuard;

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Ok(mut guard) = LOG_FILE.lock() {
            *guard = None;
        }
    }
}
