//! Errors of the preprocessing stage. Pixel-level errors ([`PixelError`]) know no file; every
//! [`PreprocessError`] names one.

use std::path::PathBuf;

/// Something wrong with an image's values or metadata (the caller adds the file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PixelError {
    #[error("no finite pixel value")]
    NoFiniteValue,
    #[error("invalid window {center}/{width} ({function}): {reason}")]
    InvalidWindow {
        center: f64,
        width: f64,
        function: &'static str,
        reason: &'static str,
    },
    #[error("{what} index {index} requested, the image has {available}")]
    NoSuchVoi {
        what: &'static str,
        index: usize,
        available: usize,
    },
    #[error("{which} LUT is empty or has {bits} bits per entry (8..=16 expected)")]
    BadLut { which: &'static str, bits: u16 },
    #[error("invalid percentile clip {lo}..{hi} (0 <= lo < hi <= 100 expected)")]
    BadPercentile { lo: f64, hi: f64 },
    #[error("cannot resize {from_w}x{from_h} to {to_w}x{to_h}: {message}")]
    Resize {
        from_w: u32,
        from_h: u32,
        to_w: u32,
        to_h: u32,
        message: String,
    },
    #[error("image buffer does not match its dimensions: {0}")]
    Buffer(String),
}

/// An error of the preprocessing stage; every variant names the file (or the config / manifest).
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("{file}: {source}")]
    Pixels {
        file: PathBuf,
        #[source]
        source: PixelError,
    },
    #[error("{file}: cannot read image: {message}")]
    Read { file: PathBuf, message: String },
    #[error("{path}: invalid preprocessing config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error(transparent)]
    Core(#[from] cxr_core::CoreError),
}

impl PreprocessError {
    pub(crate) fn pixels(file: impl Into<PathBuf>, source: PixelError) -> Self {
        Self::Pixels {
            file: file.into(),
            source,
        }
    }
}
