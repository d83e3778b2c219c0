//! The one place where engine errors and startup refusals become Postgres errors: SQLSTATE,
//! message, position.

use eddy_engine::connector::ConnectorError;
use eddy_engine::error::EngineError;
use pgwire::error::{ErrorInfo, PgWireError, SEVERITY_ERROR, SEVERITY_FATAL, SEVERITY_NOTICE};

use crate::security::policy::Refusal;

/// The SQLSTATE of an engine error.
pub fn sqlstate(e: &EngineError) -> &'static str {
    match e {
        EngineError::Syntax { .. } => "42601",
        EngineError::UnknownRelation { .. } => "42P01",
        EngineError::UnknownObject(_) => "42704",
        EngineError::UnknownColumn { .. } => "42703",
        EngineError::UnknownFunction { .. } => "42883",
        EngineError::WrongObjectType(_) => "42809",
        EngineError::DuplicateRelation(_) => "42P07",
        EngineError::DependentObjects(_) => "2BP01",
        EngineError::ViewUnavailable(_) => "55000",
        EngineError::DuplicateCursor(_) => "42P03",
        EngineError::Unsupported(_) => "0A000",
        EngineError::Plan { .. } => "42000",
        EngineError::Data(message) => data_sqlstate(message),
        EngineError::InvalidInput(_) => "22P02",
        EngineError::NotNullViolation(_) => "23502",
        EngineError::UnknownVariable(_) => "42704",
        EngineError::InvalidParameterValue(_) => "22023",
        EngineError::UnknownCursor(_) => "34000",
        EngineError::UnknownPreparedStatement(_) => "26000",
        EngineError::InvalidTransactionState(m) if m.starts_with("current transaction") => "25P02",
        EngineError::InvalidTransactionState(_) => "25P01",
        EngineError::Canceled => "57014",
        EngineError::Connector(ConnectorError::InvalidOption(_)) => "22023",
        EngineError::Connector(ConnectorError::Unsupported(_)) => "0A000",
        EngineError::Connector(ConnectorError::PermissionDenied(_)) => "42501",
        EngineError::Connector(ConnectorError::Io(_)) => "58030",
        EngineError::Connector(ConnectorError::Arrow(_)) => "22000",
        EngineError::Connector(ConnectorError::MalformedRow { .. }) => "22P02",
        EngineError::Io(_) => "58030",
        EngineError::Checkpoint(_) => "58000",
        EngineError::OutOfMemory(_) => "53200",
        EngineError::FollowerFellBehind { .. } => "53000",
        EngineError::DataFusion(_) | EngineError::Internal(_) | EngineError::Panic { .. } => {
            "XX000"
        }
    }
}

/// Data errors carry no variant of their own in DataFusion; recognise the common ones.
fn data_sqlstate(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("divide by zero") || m.contains("division by zero") {
        "22012"
    } else if m.contains("overflow") {
        "22003"
    } else if m.contains("cannot cast") || m.contains("cast") || m.contains("parse") {
        "22P02"
    } else {
        "22000"
    }
}

/// The position (1-based character offset into the statement text) of an error, if any.
fn position(e: &EngineError) -> Option<usize> {
    match e {
        EngineError::Syntax { position, .. }
        | EngineError::UnknownRelation { position, .. }
        | EngineError::UnknownColumn { position, .. }
        | EngineError::UnknownFunction { position, .. }
        | EngineError::Plan { position, .. } => *position,
        _ => None,
    }
}

/// The ErrorResponse for an engine error. `offset` is the character offset of the statement
/// within the query string the client sent (positions are reported against the whole string).
pub fn error_info(e: &EngineError, offset: usize) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        SEVERITY_ERROR.to_string(),
        sqlstate(e).to_string(),
        e.to_string(),
    );
    info.position = position(e).map(|p| (p + offset).to_string());
    if matches!(e, EngineError::Unsupported(_)) {
        info.hint = Some(
            "see docs/sql-reference.md for what Eddy supports and what is planned".to_string(),
        );
    }
    info
}

pub fn user_error(e: &EngineError, offset: usize) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e, offset)))
}

pub fn notice(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(
        SEVERITY_NOTICE.to_string(),
        "00000".to_string(),
        message.into(),
    )
}

pub fn warning(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("WARNING".to_string(), "01000".to_string(), message.into())
}

/// An error raised by the protocol layer itself (bad parameter bytes, wrong message order).
pub fn protocol_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        SEVERITY_ERROR.to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// The SQLSTATE of a client turned away at startup.
pub fn refusal_sqlstate(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::TooManyClients { .. } => "53300",
        Refusal::TlsRequired | Refusal::NotLoopback { .. } => "28000",
        Refusal::PasswordFailed { .. } => "28P01",
    }
}

/// The FATAL ErrorResponse that turns a client away at startup.
pub fn refusal_info(refusal: &Refusal) -> ErrorInfo {
    ErrorInfo::new(
        SEVERITY_FATAL.to_string(),
        refusal_sqlstate(refusal).to_string(),
        refusal.to_string(),
    )
}

/// [`refusal_info`] as an error.
pub fn refusal_error(refusal: &Refusal) -> PgWireError {
    PgWireError::UserError(Box::new(refusal_info(refusal)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_fatal_with_postgres_sqlstates() {
        for (refusal, code, message) in [
            (
                Refusal::TooManyClients { max_connections: 3 },
                "53300",
                "sorry, too many clients already",
            ),
            (
                Refusal::PasswordFailed {
                    user: "alice".to_string(),
                },
                "28P01",
                "password authentication failed for user \"alice\"",
            ),
            (Refusal::TlsRequired, "28000", "SSL required"),
            (
                Refusal::NotLoopback {
                    peer: "10.0.0.1".parse().unwrap(),
                },
                "28000",
                "--password",
            ),
        ] {
            let info = refusal_info(&refusal);
            assert_eq!(info.severity, "FATAL");
            assert_eq!(info.code, code);
            assert!(info.message.contains(message), "{}", info.message);
        }
    }
}
