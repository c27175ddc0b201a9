//! The crate's error type. Every variant names the file it is about.

use std::path::PathBuf;

use cxr_core::CoreError;

/// An ingest failure. Batch callers record it (`rejects.csv`) and go on; nothing here panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unrecognised image format ({detail})")]
    UnknownFormat { path: PathBuf, detail: String },
    #[error("{path}: cannot parse {format} file: {message}")]
    Parse {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("{path}: cannot decode pixel data: {message}")]
    Decode { path: PathBuf, message: String },
    #[error("{path}: unsupported: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error(
        "{path}: refusing a {width}x{height} image (limits: {max_side} px a side, {max_pixels} pixels): \
         corrupt header or decompression bomb"
    )]
    TooLarge {
        path: PathBuf,
        width: u64,
        height: u64,
        max_side: u64,
        max_pixels: u64,
    },
    #[error("{path}: decoder panicked: {message}")]
    Panic { path: PathBuf, message: String },
    #[error(
        "{path}: a volume of dimensions {dims:?} ({slices} slices), not a 2-D radiograph; \
         choose a slice with ReadOptions::volume_slice"
    )]
    Volume {
        path: PathBuf,
        dims: Vec<usize>,
        slices: usize,
    },
    #[error("{path}: line {line}: {message}")]
    Metadata {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Dataset { path: PathBuf, message: String },
    #[error("{path}: split design: {message}")]
    SplitDesign { path: PathBuf, message: String },
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl IngestError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn dataset(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Dataset {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
