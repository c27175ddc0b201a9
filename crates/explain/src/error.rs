//! The error type of `cxr-explain`. Every message names the file, tensor or column it is about.

use std::path::PathBuf;

/// Everything that can go wrong while explaining or auditing a model.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// A candle operation failed; `what` names the tensor or step.
    #[error("{what}: {source}")]
    Tensor {
        what: String,
        #[source]
        source: candle_core::Error,
    },
    /// A tensor or image has the wrong shape or size.
    #[error("{what}: {message}")]
    Shape { what: String, message: String },
    /// Explaining changed the model (a weight or running statistic is no longer bit-identical).
    #[error("explaining changed the model: {} variable(s) differ: {}", .names.len(), .names.join(", "))]
    ModelMutated { names: Vec<String> },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    /// A CSV file is malformed; `line` is 1-based where known.
    #[error("{path}: line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// Inputs that cannot support the requested computation (too few groups, a single class, ...).
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error(transparent)]
    Core(#[from] cxr_core::CoreError),
    /// The scorer (the audited model) failed; the message names the model.
    #[error(transparent)]
    Score(#[from] cxr_core::ScoreError),
}

impl ExplainError {
    pub(crate) fn tensor(what: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Self {
        let what = what.into();
        move |source| Self::Tensor { what, source }
    }

    pub(crate) fn shape(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Shape {
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = ExplainError> = std::result::Result<T, E>;
