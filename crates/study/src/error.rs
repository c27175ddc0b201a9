//! The study's one error type. Every failure says which stage, which file or which experiment; the cause
//! (a stage library's own typed error) stays attached as `source`, so a front end prints the whole chain.

use std::path::PathBuf;

/// Boxed cause of a [`StudyError::Context`].
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a study run.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A step failed; `what` names the step and its file (`training resnet50-finetune1`, `reading x.csv`).
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Cause,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An experiment definition, split design or setting that cannot run.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`StudyError`].
pub type Result<T, E = StudyError> = std::result::Result<T, E>;

impl StudyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StudyError::Io {
            path: path.into(),
            source,
        }
    }
}

/// An error and its causes, joined by `: ` (for a log line).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

/// `anyhow`-style context for the library's typed errors: the cause is kept, the step is named.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E> Context<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| StudyError::Context {
            what: what(),
            source: Box::new(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_cause() {
        let r: std::result::Result<(), std::io::Error> = Err(std::io::Error::other("disk full"));
        let e = r.ctx(|| "writing x.csv".into()).unwrap_err();
        assert_eq!(e.to_string(), "writing x.csv");
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("disk full"));
        assert_eq!(chain(&e), "writing x.csv: disk full");
    }
}
