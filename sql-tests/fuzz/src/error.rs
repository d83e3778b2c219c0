//! Errors of the harness itself (setting a target up, reading the corpus): never findings.

use std::path::PathBuf;

/// Why the harness could not run.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("unknown target '{0}' (targets: sql, pgwire, csv, json, parquet, kafka, pattern)")]
    UnknownTarget(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the server: {0}")]
    Server(String),
    #[error("{0}")]
    Usage(String),
}

impl FuzzError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
