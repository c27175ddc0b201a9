//! File helpers every stage uses: atomic writes, content hashes, and the guard on untrusted input files
//! ([`open_regular`], [`read_bounded`]: special files refused by path before any read, sizes bounded).
//!
//! Every output of the pipeline (manifests, caches, checkpoints, reports) is written to a temporary file in
//! the destination folder and renamed over the target, so a run killed at any instant leaves either the old
//! file or the new one, never half of one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::CoreError;

/// Refuses any of `outputs` that is (after resolving `..` and links) one of `inputs`: writing it would destroy
/// the input (`cxr score --out M.csv --manifest M.csv`). Paths that do not exist yet are compared lexically.
pub fn refuse_inputs(outputs: &[&Path], inputs: &[&Path]) -> Result<(), CoreError> {
    let key = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| crate::absolute_path(p));
    for o in outputs {
        let ko = key(o);
        if let Some(i) = inputs.iter().find(|i| key(i) == ko) {
            return Err(CoreError::OutputIsInput {
                output: o.to_path_buf(),
                input: i.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Every regular file under `root` (recursively, links not followed), sorted: what a run wrote, for checks
/// that every output stays inside its folder and for comparing two runs' folders.
pub fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `bytes` to `path` atomically, creating parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with a closure that streams into the temporary file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), CoreError> {
    replace_with(path, true, write)
}

/// Temporary file + rename like [`write_atomic`] (a killed run never leaves half a file under the final name),
/// without `fsync`: for regenerable bulk outputs (caches, synthetic images), where an fsync per file would
/// dominate the run time. A power loss may lose such a file, never corrupt it under its name.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    replace_with(path, false, |w| w.write_all(bytes))
}

fn replace_with(
    path: &Path,
    sync: bool,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), CoreError> {
    let mut f = AtomicFile::create(path)?;
    f.sync = sync;
    let w = f.writer.as_mut().map(write);
    match w {
        Some(Err(e)) => Err(CoreError::io(path, e)),
        _ => f.commit(),
    }
}

/// A file streamed under a temporary name in its destination folder and renamed over its path by
/// [`AtomicFile::commit`] (after `fsync`): the streaming form of [`write_atomic`], for an output too large to
/// hold. Dropped without a commit, the temporary file is removed; a killed process leaves it, hidden
/// (`.NAME.tmp-*`, or `.NAME.partial` from [`AtomicFile::create_partial`]), never under the final name.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<std::io::BufWriter<std::fs::File>>,
    sync: bool,
}

impl AtomicFile {
    /// A temporary file unique to this call (concurrent writers of one path never share it).
    pub fn create(path: &Path) -> Result<Self, CoreError> {
        Self::open(path, format!("tmp-{}-{}", process_token(), unique()))
    }

    /// The temporary file `.NAME.partial` beside `path`, truncated: for an output with one writer at a time
    /// (a stage's own output), so that the partial file of a killed run is replaced by the rerun's rather than
    /// left behind.
    pub fn create_partial(path: &Path) -> Result<Self, CoreError> {
        Self::open(path, "partial".into())
    }

    fn open(path: &Path, suffix: String) -> Result<Self, CoreError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::io(&dir, e))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.{suffix}"));
        let file = std::fs::File::create(&tmp).map_err(|e| CoreError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            writer: Some(std::io::BufWriter::new(file)),
            sync: true,
        })
    }

    /// Flushes, syncs and renames the file over its path.
    pub fn commit(mut self) -> Result<(), CoreError> {
        let result = (|| {
            let Some(w) = self.writer.take() else {
                return Ok(());
            };
            let file = w.into_inner().map_err(|e| e.into_error())?;
            if self.sync {
                file.sync_all()?;
            }
            std::fs::rename(&self.tmp, &self.path)
        })();
        result.map_err(|e| CoreError::io(&self.path, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.writer {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("the file was committed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.writer {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed (an error, a panic) or a failed rename: the temporary file goes.
        if self.writer.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A token unique to this process across machines: shards on different hosts share one folder (and one
/// content-keyed cache) over a network filesystem, where process ids alone can collide. Hash of the host
/// name, the process id and the start time.
fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = format!("{}\0{}\0{nanos}", host.trim(), std::process::id());
        format!(
            "{}-{}",
            std::process::id(),
            &sha256_bytes(seed.as_bytes())[..12]
        )
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Opens an input file for reading, refusing anything but a regular file (a directory, FIFO, socket or
/// device) with its path named, *before* opening it: opening a FIFO blocks until a writer comes, and
/// `/dev/zero` never ends. The type is checked again on the open handle, so a file swapped in between is
/// caught too.
pub fn open_regular(path: &Path) -> Result<std::fs::File, CoreError> {
    let special = |kind: &str| {
        CoreError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a regular file ({kind})"),
            ),
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| CoreError::io(path, e))?;
    if !meta.is_file() {
        return Err(special(file_kind(&meta)));
    }
    let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let meta = file.metadata().map_err(|e| CoreError::io(path, e))?;
    if !meta.is_file() {
        return Err(special(file_kind(&meta)));
    }
    Ok(file)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a plain file"
    }
}

/// Reads a whole input file of at most `max_bytes` bytes ([`open_regular`]'s guard first): a larger file is
/// refused from its size before anything is allocated, and the read itself stops at the limit in case the
/// file grows meanwhile.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, CoreError> {
    let file = open_regular(path)?;
    let too_large = |n: u64| {
        CoreError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{n} bytes is over the limit of {max_bytes} bytes for this kind of file"),
            ),
        )
    };
    let len = file.metadata().map_err(|e| CoreError::io(path, e))?.len();
    if len > max_bytes {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CoreError::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Runs a third-party parser or decoder on untrusted input, turning a panic inside it into `Err` with the
/// panic's message, for the caller to wrap in its error naming the file (an allocation failure still aborts:
/// callers check sizes before).
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// SHA-256 of a file's bytes, lower-case hex, streamed (constant memory); special files are refused
/// ([`open_regular`]).
pub fn sha256_file(path: &Path) -> Result<String, CoreError> {
    let mut file = open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| CoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// SHA-256 of bytes, lower-case hex (cache keys: hash the input's hash plus the serialised config).
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/out.txt");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        write_replace(&p, b"third").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"third");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |_| Err(std::io::Error::other("boom"))).unwrap_err();
        assert!(err.to_string().contains("out.txt"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn special_files_and_oversized_files_are_refused_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(dir.path(), 10).unwrap_err().to_string();
        assert!(
            e.contains("a directory") && e.contains(&*dir.path().to_string_lossy()),
            "{e}"
        );
        #[cfg(unix)]
        {
            let e = read_bounded(Path::new("/dev/zero"), 10)
                .unwrap_err()
                .to_string();
            assert!(e.contains("/dev/zero") && e.contains("a device"), "{e}");
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                // Would block forever if the guard opened it.
                let e = sha256_file(&fifo).unwrap_err().to_string();
                assert!(e.contains("fifo") && e.contains("a FIFO"), "{e}");
            } else {
                println!("skipped: no mkfifo for the FIFO case");
            }
        }
        let p = dir.path().join("big");
        std::fs::write(&p, [7u8; 11]).unwrap();
        let e = read_bounded(&p, 10).unwrap_err().to_string();
        assert!(e.contains("big") && e.contains("11 bytes"), "{e}");
        assert_eq!(read_bounded(&p, 11).unwrap(), vec![7u8; 11]);
    }

    #[test]
    fn hashes_match_known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), expected);
        assert_eq!(sha256_bytes(b"abc"), expected);
        assert!(
            sha256_file(&dir.path().join("missing"))
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
