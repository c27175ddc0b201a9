//! Readers: any supported file → [`RawImage`] (stored values as `f32` + [`cxr_core::PixelMeta`]).
//!
//! The format is detected from content ([`crate::format`]). Dimensions are checked against [`Limits`] from the
//! header, before any pixel buffer is allocated. Decoders from dependencies run inside `catch_unwind`, so a
//! panic on a hostile file becomes [`IngestError::Panic`] naming the file.

use std::path::Path;

use cxr_core::{ImageFormat, RawImage};

use crate::error::{IngestError, Result};
use crate::format::detect_format_reader;

mod dicom;
mod dicom_guard;
mod jpeg12;
mod nifti;
mod raster;

/// Size limits checked before allocation (decompression bombs, corrupt headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest width or height accepted.
    pub max_side: u64,
    /// Largest width × height accepted.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Detector panels are at most ~4300 px a side; 30000 / 400 Mpx leaves room for anything real.
        Self {
            max_side: 30_000,
            max_pixels: 400_000_000,
        }
    }
}

impl Limits {
    pub(crate) fn check(&self, path: &Path, width: u64, height: u64) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(IngestError::Parse {
                path: path.to_path_buf(),
                format: "image",
                message: format!("zero dimension {width}x{height}"),
            });
        }
        if width > self.max_side
            || height > self.max_side
            || width.saturating_mul(height) > self.max_pixels
        {
            return Err(IngestError::TooLarge {
                path: path.to_path_buf(),
                width,
                height,
                max_side: self.max_side,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// Options of [`read_image_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    pub limits: Limits,
    /// NIfTI volumes with more than one slice (3-D, 4-D) are refused by default, because a chest radiograph
    /// is 2-D and a volume here means a wrong file. `Some(k)` reads slice `z = k` (first volume of a 4-D file).
    pub volume_slice: Option<usize>,
}

/// Reads an image file (DICOM, NIfTI-1/-2 incl. `.nii.gz`, PNG, JPEG) with default options.
///
/// Takes `&Path` (not `impl AsRef<Path>`) so that `cxr_ingest::read_image` itself is a `Fn(&Path)` and can be
/// passed where a reader callback is expected.
pub fn read_image(path: &Path) -> Result<RawImage> {
    read_image_with(path, &ReadOptions::default())
}

/// Reads an image file; see [`ReadOptions`].
pub fn read_image_with(path: &Path, options: &ReadOptions) -> Result<RawImage> {
    let file = std::fs::File::open(path).map_err(|e| IngestError::io(path, e))?;
    let detected = detect_format_reader(std::io::BufReader::new(file))
        .map_err(|e| IngestError::io(path, e))?;
    let Some((format, flavour, _gz)) = detected else {
        return Err(IngestError::UnknownFormat {
            path: path.to_path_buf(),
            detail: "not DICOM, NIfTI-1/-2, PNG or JPEG by its first bytes".into(),
        });
    };
    guard(path, || match format {
        ImageFormat::Dicom => dicom::read(path, flavour, options),
        ImageFormat::Nifti => nifti::read(path, options),
        ImageFormat::Png | ImageFormat::Jpeg => raster::read(path, format, options),
    })
}

/// Runs a decoder, turning a panic inside a dependency into an error naming the file.
fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    cxr_core::fsutil::catch_panic(f).unwrap_or_else(|message| {
        tracing::warn!(file = %path.display(), "decoder panicked: {message}");
        Err(IngestError::Panic {
            path: path.to_path_buf(),
            message,
        })
    })
}

/// ITU-R BT.601 luma, computed in f64 so that grey stored as RGB comes back as its grey value.
pub(crate) fn luma(r: f64, g: f64, b: f64) -> f32 {
    (0.299 * r + 0.587 * g + 0.114 * b) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_absurd_sizes() {
        let l = Limits::default();
        let p = Path::new("x.png");
        assert!(l.check(p, 2048, 2500).is_ok());
        let e = l.check(p, 40_000, 10).unwrap_err().to_string();
        assert!(e.contains("x.png") && e.contains("40000x10"), "{e}");
        assert!(l.check(p, 25_000, 25_000).is_err());
        assert!(l.check(p, 0, 5).is_err());
    }

    #[test]
    fn unknown_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, b"just some text, not an image").unwrap();
        let e = read_image(&p).unwrap_err();
        assert!(matches!(e, IngestError::UnknownFormat { .. }));
        assert!(e.to_string().contains("notes.txt"));
        let e = read_image(&dir.path().join("absent.dcm")).unwrap_err();
        assert!(e.to_string().contains("absent.dcm"), "{e}");
    }

    #[test]
    fn panics_become_errors() {
        let e = guard::<()>(Path::new("evil.dcm"), || panic!("boom")).unwrap_err();
        assert!(matches!(e, IngestError::Panic { .. }));
        assert!(e.to_string().contains("evil.dcm") && e.to_string().contains("boom"));
    }
}
