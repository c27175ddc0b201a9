//! Errors of `cxr-eval`. Every message names the file, the plot or the option at fault.

use std::path::PathBuf;

use cxr_core::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading a predictions file or a manifest (the core error names the file and line).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A predictions file that parses but cannot be evaluated as it stands.
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// Nothing left to evaluate (no rows of the binary task).
    #[error("no predictions to evaluate: {0}")]
    Empty(String),
    /// An option out of range.
    #[error("invalid evaluation option: {0}")]
    Option(String),
    /// Rendering a plot failed.
    #[error("plot {name}: {message}")]
    Plot { name: String, message: String },
    /// Serialising an output failed.
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
}
