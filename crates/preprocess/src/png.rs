//! 8-bit grey PNG encoding and decoding (the stage's output format).

use std::path::Path;

use cxr_core::Grey8;
use image::ImageEncoder;

use crate::PreprocessError;

/// PNG bytes of an 8-bit grey image.
pub fn encode_png(img: &Grey8, path_for_errors: &Path) -> Result<Vec<u8>, PreprocessError> {
    let mut out = Vec::with_capacity(img.data.len() / 2 + 1024);
    // Fast compression: these PNGs are a cache and a hand-over to the next stage, written once per image.
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(
        &img.data,
        img.width,
        img.height,
        image::ExtendedColorType::L8,
    )
    .map_err(|e| PreprocessError::Png {
        path: path_for_errors.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(out)
}

/// Writes an 8-bit grey PNG atomically.
pub fn write_png(img: &Grey8, path: &Path) -> Result<(), PreprocessError> {
    let bytes = encode_png(img, path)?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Writes an 8-bit grey PNG into the batch cache: temporary file + rename like `fsutil::write_atomic` (a killed
/// run never leaves half a file under the final name), but without `fsync`. The cache can always be rebuilt and
/// an fsync per file (about 3.4 ms here, two per image) was a third of the batch time; the manifest, rejects
/// and summary still go through `write_atomic`.
pub fn write_cache_file(path: &Path, bytes: &[u8]) -> Result<(), PreprocessError> {
    Ok(cxr_core::fsutil::write_replace(path, bytes)?)
}

/// Reads an 8-bit grey PNG (as written by [`write_png`]); other colour types are converted to luma.
pub fn read_png(path: &Path) -> Result<Grey8, PreprocessError> {
    let err = |message: String| PreprocessError::Png {
        path: path.to_path_buf(),
        message,
    };
    let img = image::ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?
        .decode()
        .map_err(|e| err(e.to_string()))?
        .into_luma8();
    let (w, h) = img.dimensions();
    Grey8::new(w, h, img.into_raw()).map_err(|e| err(e.to_string()))
}
