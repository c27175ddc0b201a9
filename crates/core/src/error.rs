//! Errors that cross stage boundaries: the ones about shared files (manifests, predictions) and values.

use std::path::PathBuf;

/// An error about a shared file or value. Every variant names the file (and line, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: missing required column `{column}`")]
    MissingColumn { path: PathBuf, column: String },
    /// Every column a reader needs that the file lacks, named at once ([`crate::Manifest::read_lenient`]).
    #[error("{path}: missing columns {}", .columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))]
    MissingColumns { path: PathBuf, columns: Vec<String> },
    #[error("{path}: line {line}: column `{column}`: invalid value {value:?}: {expected}")]
    InvalidValue {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
        expected: String,
    },
    #[error("{path}: duplicate id `{id}` at line {line}")]
    DuplicateId {
        path: PathBuf,
        line: u64,
        id: String,
    },
    #[error("invalid {what}: {value:?} ({expected})")]
    Parse {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    /// An 8-bit grey image that could not be decoded or encoded ([`crate::png8`]).
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    /// An output path naming one of the run's inputs ([`crate::fsutil::refuse_inputs`]).
    #[error("{output}: this output would overwrite the input {input}; choose another --out")]
    OutputIsInput { output: PathBuf, input: PathBuf },
    /// Sharding: a bad `--shard`, a half-set cluster environment, or parts that cannot be merged.
    #[error("shard: {0}")]
    Shard(String),
}

impl CoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
