//! Bind parameters: Postgres wire values (text or binary) to DataFusion scalars.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::error::PgWireResult;

use super::encode::arrow_type;
use super::errors::protocol_error;

/// Decodes parameter `i` of `portal`. `declared` is the type the client gave (or the one we
/// told it at Describe); `wanted` is the type the plan expects, if known.
pub fn decode<S: Clone>(
    portal: &Portal<S>,
    i: usize,
    declared: &Type,
    wanted: Option<&DataType>,
) -> PgWireResult<ScalarValue> {
    let bad = |e: pgwire::error::PgWireError| {
        protocol_error(
            "22P02",
            format!(
                "invalid value for parameter ${} of type {}: {e}",
                i + 1,
                declared.name()
            ),
        )
    };
    let value = match *declared {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, declared).map_err(bad)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, declared).map_err(bad)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, declared).map_err(bad)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, declared).map_err(bad)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, declared).map_err(bad)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, declared).map_err(bad)?),
        Type::NUMERIC => {
            let d = portal
                .parameter::<rust_decimal::Decimal>(i, declared)
                .map_err(bad)?;
            match d {
                Some(d) => ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8),
                None => ScalarValue::Decimal128(None, 38, 10),
            }
        }
        Type::BYTEA => ScalarValue::Binary(portal.parameter::<Vec<u8>>(i, declared).map_err(bad)?),
        Type::DATE => {
            let d = portal.parameter::<NaiveDate>(i, declared).map_err(bad)?;
            ScalarValue::Date32(d.map(|d| {
                (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
            }))
        }
        Type::TIMESTAMP => {
            let t = portal
                .parameter::<NaiveDateTime>(i, declared)
                .map_err(bad)?;
            ScalarValue::TimestampMicrosecond(t.map(|t| t.and_utc().timestamp_micros()), None)
        }
        Type::TIMESTAMPTZ => {
            let t = portal
                .parameter::<DateTime<chrono::FixedOffset>>(i, declared)
                .map_err(bad)?
                .map(|t| t.with_timezone(&Utc));
            ScalarValue::TimestampMicrosecond(
                t.map(|t| t.timestamp_micros()),
                Some("+00:00".into()),
            )
        }
        _ => ScalarValue::Utf8(portal.parameter::<String>(i, declared).map_err(bad)?),
    };
    match wanted {
        Some(t) if &value.data_type() != t => value.cast_to(t).map_err(|e| {
            protocol_error(
                "22P02",
                format!("parameter ${} cannot be converted to {t}: {e}", i + 1),
            )
        }),
        _ => Ok(value),
    }
}

/// The Postgres type to announce for a parameter the plan wants as `t`.
pub fn announced_type(t: Option<&DataType>) -> Type {
    match t {
        Some(DataType::Timestamp(TimeUnit::Nanosecond, None)) => Type::TIMESTAMP,
        Some(t) => super::encode::pg_type(t),
        None => Type::TEXT,
    }
}

/// The Arrow type of a Postgres type the client declared, if we decode it natively.
pub fn declared_arrow_type(t: &Type) -> Option<DataType> {
    arrow_type(t)
}
