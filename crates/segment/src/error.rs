//! The error type of the segment stage. Every variant names the file (or tensor) it is about.

use std::path::PathBuf;

/// An error of the segment stage.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {message}")]
    Image { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Tensor {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: weights: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Core(#[from] cxr_core::CoreError),
}

impl SegmentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Adds context (which tensor or step) to a candle error.
pub(crate) trait TensorContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, SegmentError>;
}

impl<T> TensorContext<T> for candle_core::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, SegmentError> {
        self.map_err(|source| SegmentError::Tensor {
            context: context(),
            source,
        })
    }
}
