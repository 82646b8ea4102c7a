use std::path::PathBuf;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use thiserror::Error;

/// What can go wrong on the DataFusion side.
#[derive(Debug, Error)]
pub enum SqlError {
    /// Planning or running a query failed (bad SQL names the column or function).
    #[error("query failed: {0}")]
    DataFusion(#[from] DataFusionError),
    /// Building or converting an Arrow batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// The runtime that executes the per-batch plan could not start.
    #[error("cannot start the query runtime: {0}")]
    Runtime(std::io::Error),
    /// A history file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A history file whose kind or format we cannot tell from its name.
    #[error("{path}: {problem}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A query ran past its time and was cancelled.
    #[error(
        "the query ran longer than {0:?} and was cancelled: narrow it (WHERE, LIMIT) or raise sql.timeout_ms"
    )]
    TimedOut(std::time::Duration),
    /// A query returned more rows than an answer may hold.
    #[error("the answer has more than {0} rows: add a LIMIT, filter or aggregate (or raise sql.max_rows)")]
    TooManyRows(usize),
    /// A result column does not have the type the feature table needs.
    #[error("column `{column}` of the batch feature query: {problem}")]
    Column {
        /// Column name.
        column: String,
        /// What is wrong.
        problem: String,
    },
}
