//! The error type of `cxr-audit`. Every message names the file, column or step it is about.

use std::path::PathBuf;

/// Everything that can go wrong while auditing, scoring or testing a model.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A manifest lacks columns the audit reads: all of them, in one message, each with what to do.
    #[error("{path}: missing column{} {}", if .columns.len() == 1 { "" } else { "s" }, describe_missing(.columns))]
    MissingColumns {
        path: PathBuf,
        /// `(column, what produces it)`, in the order of the input contract (docs/AUDIT.md).
        columns: Vec<(String, String)>,
    },
    /// A user's file (manifest, score table, features, `prepare.json`) does not fit.
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// An option or a combination of options that cannot run.
    #[error("{what}: {message}")]
    Config { what: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One step of a run failed; the message says which, then why.
    #[error("{step}: {cause}")]
    Step {
        step: String,
        cause: Box<AuditError>,
    },
    #[error(transparent)]
    Explain(#[from] cxr_explain::ExplainError),
    #[error(transparent)]
    Core(#[from] cxr_core::CoreError),
    #[error(transparent)]
    Score(#[from] cxr_core::ScoreError),
    #[error(transparent)]
    Model(#[from] cxr_model::ModelError),
    #[error(transparent)]
    Onnx(#[from] cxr_onnx::OnnxError),
    #[error(transparent)]
    Synth(#[from] cxr_synth::SynthError),
    #[error(transparent)]
    Segment(#[from] cxr_segment::SegmentError),
}

fn describe_missing(columns: &[(String, String)]) -> String {
    columns
        .iter()
        .map(|(c, why)| format!("`{c}` ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl AuditError {
    pub(crate) fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Input {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn config(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// `result.step("scoring full images")`: says which step of a run failed, as `anyhow`'s context would.
pub(crate) trait StepExt<T> {
    fn step(self, step: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<AuditError>> StepExt<T> for std::result::Result<T, E> {
    fn step(self, step: impl Into<String>) -> Result<T> {
        self.map_err(|e| AuditError::Step {
            step: step.into(),
            cause: Box::new(e.into()),
        })
    }
}

/// Result type of this crate.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
