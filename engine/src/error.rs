//! The engine's error type: one variant per failure mode a user can tell apart.
//!
//! The SQLSTATE for each variant is chosen at the pgwire boundary (the server), not here.

use datafusion::error::DataFusionError;

use crate::connector::ConnectorError;

/// Every error the engine returns.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQL text does not parse. `position` is the 1-based character offset.
    #[error("syntax error: {message}")]
    Syntax {
        message: String,
        position: Option<usize>,
    },
    /// A table, source or view that does not exist.
    #[error("relation \"{name}\" does not exist")]
    UnknownRelation {
        name: String,
        position: Option<usize>,
    },
    /// A column that does not exist.
    #[error("{message}")]
    UnknownColumn {
        message: String,
        position: Option<usize>,
    },
    /// A function that does not exist.
    #[error("{message}")]
    UnknownFunction {
        message: String,
        position: Option<usize>,
    },
    /// A relation of the wrong kind for the statement (`DROP SOURCE` on a table).
    #[error("{0}")]
    WrongObjectType(String),
    /// An object other than a relation (a sink) that does not exist.
    #[error("{0}")]
    UnknownObject(String),
    /// A cursor declared twice.
    #[error("cursor \"{0}\" already exists")]
    DuplicateCursor(String),
    /// A NULL for a NOT NULL column.
    #[error("null value in column \"{0}\" violates not-null constraint")]
    NotNullViolation(String),
    /// A relation that others depend on (a source a view reads), dropped without CASCADE.
    #[error("{0}")]
    DependentObjects(String),
    /// A materialized view a query follows failed or was dropped.
    #[error("{0}")]
    ViewUnavailable(String),
    /// A client's query following a materialized view fell too far behind the view's job and
    /// was cut off, so that the job goes on (`--client-follow-buffer`).
    #[error(
        "the query fell more than {} behind materialized view \"{view}\" and was ended so that \
         the view's job goes on (the server's --client-follow-buffer); read the view's rows \
         faster, or follow it again",
        crate::size::format_size(*limit)
    )]
    FollowerFellBehind { view: String, limit: usize },
    /// A relation created twice.
    #[error("relation \"{0}\" already exists")]
    DuplicateRelation(String),
    /// A feature Eddy does not have (yet); the text names it.
    #[error("feature not supported: {0}")]
    Unsupported(String),
    /// A statement that is well-formed but means nothing here (wrong option, wrong type).
    #[error("{message}")]
    Plan {
        message: String,
        position: Option<usize>,
    },
    /// A value that cannot be converted or computed (bad cast, division by zero).
    #[error("{0}")]
    Data(String),
    /// Input text that does not convert to its column's type (COPY FROM).
    #[error("{0}")]
    InvalidInput(String),
    /// `SET` of a variable to a value it cannot take.
    #[error("{0}")]
    InvalidParameterValue(String),
    /// `SHOW` or `SET` of a variable that does not exist.
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownVariable(String),
    /// A prepared statement that does not exist (`DEALLOCATE name`).
    #[error("prepared statement \"{0}\" does not exist")]
    UnknownPreparedStatement(String),
    /// A cursor or prepared object that does not exist.
    #[error("cursor \"{0}\" does not exist")]
    UnknownCursor(String),
    /// A command that is not allowed in the current transaction state.
    #[error("{0}")]
    InvalidTransactionState(String),
    /// The query was cancelled by the client.
    #[error("canceling statement due to user request")]
    Canceled,
    /// A connector failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// DataFusion failed in a way not classified above.
    #[error(transparent)]
    DataFusion(Box<DataFusionError>),
    /// Reading or writing the data directory failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A checkpoint cannot be written, or one on disk cannot be used (torn, another format
    /// version, another plan).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A query's or job's operator state would exceed its memory limit (`max_state_bytes`) or
    /// the server's (`--max-memory`); the message names the operator and the limit.
    #[error("{0}")]
    OutOfMemory(Box<crate::runtime::memory::StateLimitExceeded>),
    /// A bug in Eddy.
    #[error("internal error: {0}")]
    Internal(String),
    /// A panic (a bug in Eddy or a dependency), caught where it happened: `place` names the
    /// operator, source, job or server stage (see [`crate::panics`]).
    #[error("internal error in {place}: {message}")]
    Panic { place: String, message: String },
}

pub type EngineResult<T> = Result<T, EngineError>;

impl From<Box<crate::runtime::memory::StateLimitExceeded>> for EngineError {
    fn from(e: Box<crate::runtime::memory::StateLimitExceeded>) -> Self {
        EngineError::OutOfMemory(e)
    }
}

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        classify_datafusion_error(e, None)
    }
}

impl EngineError {
    /// Classifies a DataFusion error raised while planning `sql`, turning the span of its
    /// diagnostic (if any) into a character position within `sql`.
    pub fn from_datafusion(e: DataFusionError, sql: &str) -> Self {
        classify_datafusion_error(e, Some(sql))
    }
}

impl From<datafusion::arrow::error::ArrowError> for EngineError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        classify_datafusion_error(DataFusionError::ArrowError(Box::new(e), None), None)
    }
}

/// Sorts a DataFusion error into the variant a user would recognise.
fn classify_datafusion_error(e: DataFusionError, sql: Option<&str>) -> EngineError {
    let position = sql.and_then(|sql| {
        let start = e.diagnostic()?.span?.start;
        Some(char_position(
            sql,
            datafusion::sql::sqlparser::tokenizer::Location {
                line: start.line,
                column: start.column,
            },
        ))
    });
    match e.find_root() {
        DataFusionError::SchemaError(inner, _) => {
            use datafusion::common::SchemaError;
            let message = match inner.as_ref() {
                SchemaError::FieldNotFound { field, .. } => {
                    format!("column \"{}\" does not exist", field.name())
                }
                other => other.to_string(),
            };
            if matches!(inner.as_ref(), SchemaError::FieldNotFound { .. }) {
                EngineError::UnknownColumn { message, position }
            } else {
                EngineError::Plan { message, position }
            }
        }
        DataFusionError::NotImplemented(m) => EngineError::Unsupported(m.clone()),
        DataFusionError::SQL(err, _) => EngineError::Syntax {
            message: err.to_string(),
            position: None,
        },
        DataFusionError::Plan(m) => {
            if let Some(name) = m
                .strip_prefix("table '")
                .and_then(|r| r.strip_suffix("' not found"))
            {
                let name = name.rsplit('.').next().unwrap_or(name).to_string();
                return EngineError::UnknownRelation { name, position };
            }
            if m.starts_with("Invalid function") {
                return EngineError::UnknownFunction {
                    message: m.clone(),
                    position,
                };
            }
            EngineError::Plan {
                message: m.clone(),
                position,
            }
        }
        DataFusionError::ArrowError(a, _) => {
            use datafusion::arrow::error::ArrowError;
            match a.as_ref() {
                ArrowError::CastError(m)
                | ArrowError::ParseError(m)
                | ArrowError::ComputeError(m)
                | ArrowError::InvalidArgumentError(m) => EngineError::Data(m.clone()),
                ArrowError::DivideByZero => EngineError::Data("division by zero".to_string()),
                ArrowError::ArithmeticOverflow(m) => EngineError::Data(m.clone()),
                other => EngineError::Data(other.to_string()),
            }
        }
        DataFusionError::Execution(m) => EngineError::Data(m.clone()),
        // Our own error, passed through DataFusion (a view's scan that cannot read the view).
        DataFusionError::External(inner) => match inner.downcast_ref::<EngineError>() {
            Some(EngineError::ViewUnavailable(m)) => EngineError::ViewUnavailable(m.clone()),
            _ => EngineError::DataFusion(Box::new(e)),
        },
        _ => EngineError::DataFusion(Box::new(e)),
    }
}

/// Builds an [`EngineError::Plan`] without a position.
pub fn plan_error(message: impl Into<String>) -> EngineError {
    EngineError::Plan {
        message: message.into(),
        position: None,
    }
}

/// Byte offset of a sqlparser location (1-based line and column, columns counted in chars).
pub fn byte_offset(sql: &str, location: datafusion::sql::sqlparser::tokenizer::Location) -> usize {
    if location.line == 0 {
        return 0;
    }
    let mut offset = 0;
    for (i, line) in sql.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == location.line {
            let col = (location.column.max(1) - 1) as usize;
            return offset
                + line
                    .char_indices()
                    .nth(col)
                    .map(|(b, _)| b)
                    .unwrap_or(line.len());
        }
        offset += line.len();
    }
    sql.len()
}

/// The 1-based character position Postgres reports for a location.
pub fn char_position(
    sql: &str,
    location: datafusion::sql::sqlparser::tokenizer::Location,
) -> usize {
    let bytes = byte_offset(sql, location);
    sql.get(..bytes).map(|s| s.chars().count()).unwrap_or(0) + 1
}
