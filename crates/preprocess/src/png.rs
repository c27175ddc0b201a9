//! Writing the stage's output files: 8-bit grey PNGs, encoded by `cxr_core::png8` (the pipeline's one reader
//! and writer of them; read them back with `cxr_core::png8::read_grey8`).

use std::path::Path;

use crate::PreprocessError;

/// Writes an 8-bit grey PNG into the batch cache: temporary file + rename like `fsutil::write_atomic` (a killed
/// run never leaves half a file under the final name), but without `fsync`. The cache can always be rebuilt and
/// an fsync per file (about 3.4 ms here, two per image) was a third of the batch time; the manifest, rejects
/// and summary still go through `write_atomic`.
pub fn write_cache_file(path: &Path, bytes: &[u8]) -> Result<(), PreprocessError> {
    Ok(cxr_core::fsutil::write_replace(path, bytes)?)
}
