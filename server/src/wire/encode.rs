//! Arrow values to Postgres wire values: type mapping, DataRows, and COPY data.
//!
//! Text format follows Postgres's own output (`t`/`f`, `2023-05-06 16:51:00`, `\x0102`,
//! `1 day 02:00:00`), so psql and drivers show what they would show against Postgres. Binary
//! format uses `postgres-types` encoders, the same code the Rust Postgres client uses.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, Utc};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, DecimalType, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, IntervalUnit, Schema, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::{DataRow, FieldDescription};
use postgres_types::{IsNull, ToSql};

type EncodeResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

use datafusion::arrow::array::timezone::Tz;

/// The time zone `timestamptz` values are written in as text: the session's `TimeZone`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextZone(Option<Tz>);

impl TextZone {
    /// The zone a `TimeZone` setting names (UTC if it names none).
    pub fn named(name: &str) -> Self {
        Self(name.parse().ok())
    }
}

/// UTC, the time zone of a session that set none.
pub fn utc() -> TextZone {
    TextZone::default()
}

/// The Postgres type a column of `data_type` is sent as: the engine's mapping, which the
/// catalogs (`pg_attribute`, `information_schema.columns`) show too.
pub fn pg_type(data_type: &DataType) -> Type {
    Type::from_oid(eddy_engine::pg_catalog::types::pg_type(data_type).oid).unwrap_or(Type::TEXT)
}

/// The Arrow type a Postgres parameter type is read as (`None`: not a type we decode).
pub fn arrow_type(pg: &Type) -> Option<DataType> {
    Some(match *pg {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => DataType::Decimal128(38, 10),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        _ => return None,
    })
}

/// RowDescription fields for a schema, one format per column.
pub fn field_descriptions(schema: &Schema, formats: &[FieldFormat]) -> Vec<FieldDescription> {
    schema
        .fields()
        .iter()
        .zip(formats)
        .map(|(f, format)| {
            let ty = pg_type(f.data_type());
            FieldDescription::new(
                f.name().clone(),
                0,
                0,
                ty.oid(),
                type_size(&ty),
                -1,
                format.value(),
            )
        })
        .collect()
}

/// The same description as pgwire's `FieldInfo`s (for Describe responses).
pub fn field_infos(schema: &Schema, formats: &[FieldFormat]) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .zip(formats)
        .map(|(f, format)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                *format,
            )
        })
        .collect()
}

fn type_size(ty: &Type) -> i16 {
    match *ty {
        Type::BOOL => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::TIME => 8,
        Type::INTERVAL => 16,
        _ => -1,
    }
}

/// Encodes every row of `batch` as a DataRow.
/// `tz` is the session's TimeZone, in which `timestamptz` values are written as text.
pub fn data_rows(
    batch: &RecordBatch,
    formats: &[FieldFormat],
    tz: &TextZone,
) -> EncodeResult<Vec<DataRow>> {
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut buf = BytesMut::with_capacity(64 * batch.num_columns());
    let mut scratch = String::new();
    for row in 0..batch.num_rows() {
        for (column, format) in batch.columns().iter().zip(formats) {
            write_length_prefixed(column.as_ref(), row, *format, &mut buf, &mut scratch, tz)?;
        }
        rows.push(DataRow::new(buf.split(), batch.num_columns() as i16));
    }
    Ok(rows)
}

/// Writes one value with its 4-byte length (-1 for NULL).
/// Whether a value is NULL: a `NullArray` (an untyped `NULL` column) has no null buffer, so
/// `Array::is_null` says false for its rows.
fn is_null_at(array: &dyn Array, row: usize) -> bool {
    array.is_null(row) || array.data_type() == &DataType::Null
}

fn write_length_prefixed(
    array: &dyn Array,
    row: usize,
    format: FieldFormat,
    buf: &mut BytesMut,
    scratch: &mut String,
    tz: &TextZone,
) -> EncodeResult<()> {
    if is_null_at(array, row) {
        buf.put_i32(-1);
        return Ok(());
    }
    let start = buf.len();
    buf.put_i32(0);
    match format {
        FieldFormat::Text => {
            scratch.clear();
            write_text(array, row, scratch, tz)?;
            buf.put_slice(scratch.as_bytes());
        }
        FieldFormat::Binary => write_binary(array, row, buf)?,
    }
    let len = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The Postgres text representation of a non-null value (`timestamptz` in time zone `tz`).
pub fn write_text(
    array: &dyn Array,
    row: usize,
    out: &mut String,
    tz: &TextZone,
) -> EncodeResult<()> {
    match array.data_type() {
        DataType::Boolean => out.push(if array.as_boolean().value(row) {
            't'
        } else {
            'f'
        }),
        DataType::Int8 => write_integer(array.as_primitive::<Int8Type>().value(row), out),
        DataType::Int16 => write_integer(array.as_primitive::<Int16Type>().value(row), out),
        DataType::Int32 => write_integer(array.as_primitive::<Int32Type>().value(row), out),
        DataType::Int64 => write_integer(array.as_primitive::<Int64Type>().value(row), out),
        DataType::UInt8 => write_integer(array.as_primitive::<UInt8Type>().value(row), out),
        DataType::UInt16 => write_integer(array.as_primitive::<UInt16Type>().value(row), out),
        DataType::UInt32 => write_integer(array.as_primitive::<UInt32Type>().value(row), out),
        DataType::UInt64 => write_integer(array.as_primitive::<UInt64Type>().value(row), out),
        DataType::Float16 => write_float(
            f64::from(array.as_primitive::<Float16Type>().value(row).to_f32()),
            out,
        ),
        DataType::Float32 => write_float32(array.as_primitive::<Float32Type>().value(row), out),
        DataType::Float64 => write_float(array.as_primitive::<Float64Type>().value(row), out),
        DataType::Decimal128(precision, scale) => out.push_str(&Decimal128Type::format_decimal(
            array.as_primitive::<Decimal128Type>().value(row),
            *precision,
            *scale,
        )),
        DataType::Utf8 => out.push_str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(array.as_string_view().value(row)),
        DataType::Binary => write_hex(array.as_binary::<i32>().value(row), out),
        DataType::LargeBinary => write_hex(array.as_binary::<i64>().value(row), out),
        DataType::BinaryView => write_hex(array.as_binary_view().value(row), out),
        DataType::FixedSizeBinary(_) => write_hex(array.as_fixed_size_binary().value(row), out),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            match Date32Type::to_naive_date_opt(days) {
                Some(d) => write!(out, "{}", d.format("%Y-%m-%d"))?,
                None => return Err(format!("date out of range: {days} days").into()),
            }
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(row);
            match DateTime::from_timestamp_millis(ms) {
                Some(d) => write!(out, "{}", d.format("%Y-%m-%d"))?,
                None => return Err(format!("date out of range: {ms} ms").into()),
            }
        }
        DataType::Timestamp(unit, with_zone) => {
            let nanos = timestamp_nanos(array, row, *unit)?;
            let dt = DateTime::from_timestamp_nanos(nanos).naive_utc();
            if with_zone.is_some() {
                // As Postgres prints it: local time in the session's TimeZone and its offset.
                match &tz.0 {
                    Some(zone) => {
                        let local = DateTime::from_timestamp_nanos(nanos).with_timezone(zone);
                        write_naive_datetime(&local.naive_local(), out);
                        write_offset(local.offset().fix().local_minus_utc(), out);
                    }
                    None => {
                        write_naive_datetime(&dt, out);
                        out.push_str("+00");
                    }
                }
            } else {
                write_naive_datetime(&dt, out);
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let t = time_value(array, row)?;
            write!(out, "{}", t.format("%H:%M:%S"))?;
            write_fraction(t.format("%f").to_string().parse::<u32>().unwrap_or(0), out);
        }
        DataType::Interval(_) | DataType::Duration(_) => {
            let (months, days, micros) = interval_parts(array, row)?;
            out.push_str(&pg_interval::Interval::new(months, days, micros).to_postgres());
        }
        _ => {
            let formatter = ArrayFormatter::try_new(array, &FormatOptions::default())?;
            write!(out, "{}", formatter.value(row))?;
        }
    }
    Ok(())
}

/// A UTC offset as Postgres prints it: `+02`, `-03:30`, `+00:09:21`.
fn write_offset(seconds: i32, out: &mut String) {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    let _ = write!(out, "{sign}{:02}", s / 3600);
    if !s.is_multiple_of(3600) {
        let _ = write!(out, ":{:02}", s % 3600 / 60);
    }
    if !s.is_multiple_of(60) {
        let _ = write!(out, ":{:02}", s % 60);
    }
}

fn write_float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{v}");
    }
}

fn write_float32(v: f32, out: &mut String) {
    if v.is_nan() || v.is_infinite() {
        write_float(f64::from(v), out);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn write_hex(bytes: &[u8], out: &mut String) {
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// The stored value of a timestamp column at `row` (in the column's unit), `None` for other
/// types.
fn timestamp_value(array: &dyn Array, row: usize) -> Option<i64> {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            Some(array.as_primitive::<TimestampSecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Some(array.as_primitive::<TimestampMillisecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Some(array.as_primitive::<TimestampNanosecondType>().value(row))
        }
        _ => None,
    }
}

/// An integer in decimal (itoa: `write!` goes through the formatting machinery per value).
fn write_integer(value: impl itoa::Integer, out: &mut String) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]`, the fraction without trailing zeros, as Postgres prints.
/// Years 0 to 9999 are written digit by digit (a result's timestamps are most of what a
/// window query sends: chrono's `format` parses its pattern for every value), others by
/// chrono.
fn write_naive_datetime(dt: &NaiveDateTime, out: &mut String) {
    use chrono::{Datelike, Timelike};
    let year = dt.year();
    if (0..=9999).contains(&year) {
        let mut text = [0u8; 19];
        digits(&mut text[0..4], year as u32);
        text[4] = b'-';
        digits(&mut text[5..7], dt.month());
        text[7] = b'-';
        digits(&mut text[8..10], dt.day());
        text[10] = b' ';
        digits(&mut text[11..13], dt.hour());
        text[13] = b':';
        digits(&mut text[14..16], dt.minute());
        text[16] = b':';
        digits(&mut text[17..19], dt.second());
        // ASCII digits and separators.
        out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    } else {
        let _ = write!(out, "{}", dt.format("%Y-%m-%d %H:%M:%S"));
    }
    write_fraction(dt.and_utc().timestamp_subsec_nanos(), out);
}

/// Writes `value` as `out.len()` decimal digits, zero-padded (its lowest digits if longer).
fn digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `.ffffff` without trailing zeros; Postgres keeps microseconds, so nanoseconds are cut.
fn write_fraction(nanos: u32, out: &mut String) {
    let mut micros = nanos / 1000;
    if micros == 0 {
        return;
    }
    let mut width = 6;
    while micros.is_multiple_of(10) {
        micros /= 10;
        width -= 1;
    }
    let mut text = [0u8; 6];
    digits(&mut text[..width], micros);
    out.push('.');
    text[..width].iter().for_each(|b| out.push(char::from(*b)));
}

fn timestamp_nanos(array: &dyn Array, row: usize, unit: TimeUnit) -> EncodeResult<i64> {
    use datafusion::arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let overflow =
        || -> Box<dyn std::error::Error + Send + Sync> { "timestamp out of range".into() };
    Ok(match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .checked_mul(1_000_000_000)
            .ok_or_else(overflow)?,
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .checked_mul(1_000_000)
            .ok_or_else(overflow)?,
        TimeUnit::Microsecond => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .checked_mul(1_000)
            .ok_or_else(overflow)?,
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
    })
}

fn time_value(array: &dyn Array, row: usize) -> EncodeResult<NaiveTime> {
    use datafusion::arrow::datatypes::{
        Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
    };
    let nanos: i64 = match array.data_type() {
        DataType::Time32(TimeUnit::Second) => {
            i64::from(array.as_primitive::<Time32SecondType>().value(row)) * 1_000_000_000
        }
        DataType::Time32(_) => {
            i64::from(array.as_primitive::<Time32MillisecondType>().value(row)) * 1_000_000
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            array.as_primitive::<Time64MicrosecondType>().value(row) * 1_000
        }
        _ => array.as_primitive::<Time64NanosecondType>().value(row),
    };
    NaiveTime::from_num_seconds_from_midnight_opt(
        (nanos / 1_000_000_000) as u32,
        (nanos % 1_000_000_000) as u32,
    )
    .ok_or_else(|| "time out of range".into())
}

/// (months, days, microseconds) of an interval or duration value.
fn interval_parts(array: &dyn Array, row: usize) -> EncodeResult<(i32, i32, i64)> {
    use datafusion::arrow::datatypes::{
        DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
        DurationSecondType, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalYearMonthType,
    };
    Ok(match array.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => (
            array.as_primitive::<IntervalYearMonthType>().value(row),
            0,
            0,
        ),
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = array.as_primitive::<IntervalDayTimeType>().value(row);
            (0, v.days, i64::from(v.milliseconds) * 1000)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            (v.months, v.days, v.nanoseconds / 1000)
        }
        DataType::Duration(TimeUnit::Second) => (
            0,
            0,
            array.as_primitive::<DurationSecondType>().value(row) * 1_000_000,
        ),
        DataType::Duration(TimeUnit::Millisecond) => (
            0,
            0,
            array.as_primitive::<DurationMillisecondType>().value(row) * 1000,
        ),
        DataType::Duration(TimeUnit::Microsecond) => (
            0,
            0,
            array.as_primitive::<DurationMicrosecondType>().value(row),
        ),
        DataType::Duration(TimeUnit::Nanosecond) => (
            0,
            0,
            array.as_primitive::<DurationNanosecondType>().value(row) / 1000,
        ),
        other => return Err(format!("not an interval: {other}").into()),
    })
}

/// The Postgres binary representation of a non-null value.
fn write_binary(array: &dyn Array, row: usize, buf: &mut BytesMut) -> EncodeResult<()> {
    let ty = pg_type(array.data_type());
    let is_null = match array.data_type() {
        DataType::Boolean => array.as_boolean().value(row).to_sql(&ty, buf)?,
        DataType::Int8 => {
            i16::from(array.as_primitive::<Int8Type>().value(row)).to_sql(&ty, buf)?
        }
        DataType::Int16 => array
            .as_primitive::<Int16Type>()
            .value(row)
            .to_sql(&ty, buf)?,
        DataType::Int32 => array
            .as_primitive::<Int32Type>()
            .value(row)
            .to_sql(&ty, buf)?,
        DataType::Int64 => array
            .as_primitive::<Int64Type>()
            .value(row)
            .to_sql(&ty, buf)?,
        DataType::UInt8 => {
            i16::from(array.as_primitive::<UInt8Type>().value(row)).to_sql(&ty, buf)?
        }
        DataType::UInt16 => {
            i32::from(array.as_primitive::<UInt16Type>().value(row)).to_sql(&ty, buf)?
        }
        DataType::UInt32 => {
            i64::from(array.as_primitive::<UInt32Type>().value(row)).to_sql(&ty, buf)?
        }
        DataType::UInt64 => {
            rust_decimal::Decimal::from(array.as_primitive::<UInt64Type>().value(row))
                .to_sql(&ty, buf)?
        }
        DataType::Float16 => array
            .as_primitive::<Float16Type>()
            .value(row)
            .to_f32()
            .to_sql(&ty, buf)?,
        DataType::Float32 => array
            .as_primitive::<Float32Type>()
            .value(row)
            .to_sql(&ty, buf)?,
        DataType::Float64 => array
            .as_primitive::<Float64Type>()
            .value(row)
            .to_sql(&ty, buf)?,
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            let d = rust_decimal::Decimal::try_from_i128_with_scale(v, (*scale).max(0) as u32)
                .map_err(|e| format!("numeric value out of range for binary format: {e}"))?;
            d.to_sql(&ty, buf)?
        }
        DataType::Binary => array.as_binary::<i32>().value(row).to_sql(&ty, buf)?,
        DataType::LargeBinary => array.as_binary::<i64>().value(row).to_sql(&ty, buf)?,
        DataType::BinaryView => array.as_binary_view().value(row).to_sql(&ty, buf)?,
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().value(row).to_sql(&ty, buf)?,
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let d: NaiveDate = Date32Type::to_naive_date_opt(days).ok_or("date out of range")?;
            d.to_sql(&ty, buf)?
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(row);
            let d = DateTime::from_timestamp_millis(ms).ok_or("date out of range")?;
            d.date_naive().to_sql(&ty, buf)?
        }
        DataType::Timestamp(unit, tz) => {
            let nanos = timestamp_nanos(array, row, *unit)?;
            let dt: DateTime<Utc> = DateTime::from_timestamp_nanos(nanos);
            if tz.is_some() {
                dt.to_sql(&ty, buf)?
            } else {
                dt.naive_utc().to_sql(&ty, buf)?
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => time_value(array, row)?.to_sql(&ty, buf)?,
        DataType::Interval(_) | DataType::Duration(_) => {
            let (months, days, micros) = interval_parts(array, row)?;
            buf.put_i64(micros);
            buf.put_i32(days);
            buf.put_i32(months);
            IsNull::No
        }
        _ => {
            // Sent as TEXT, whose binary form is its UTF-8 bytes.
            let mut s = String::new();
            write_text(array, row, &mut s, &utc())?;
            buf.put_slice(s.as_bytes());
            IsNull::No
        }
    };
    if let IsNull::Yes = is_null {
        return Err("unexpected NULL from a non-null value".into());
    }
    Ok(())
}

/// How `COPY ... TO STDOUT` writes rows.
pub enum CopyWriter {
    Text {
        delimiter: char,
        null: String,
    },
    Csv {
        delimiter: char,
        null: String,
        quote: char,
    },
    Binary,
}

impl CopyWriter {
    pub fn from_format(format: &eddy_engine::session::CopyFormat) -> Self {
        use eddy_engine::session::CopyFormat;
        match format {
            CopyFormat::Text { delimiter, null } => Self::Text {
                delimiter: *delimiter,
                null: null.clone(),
            },
            CopyFormat::Csv {
                delimiter,
                null,
                quote,
                ..
            } => Self::Csv {
                delimiter: *delimiter,
                null: null.clone(),
                quote: *quote,
            },
            CopyFormat::Binary => Self::Binary,
        }
    }

    /// The wire format code of the COPY (0 text, 1 binary).
    pub fn format_code(&self) -> i8 {
        match self {
            Self::Binary => 1,
            _ => 0,
        }
    }

    /// What precedes the rows: the binary signature, or the CSV header line.
    pub fn header(&self, schema: &Arc<Schema>, csv_header: bool) -> Option<BytesMut> {
        match self {
            Self::Binary => {
                let mut b = BytesMut::new();
                b.put_slice(b"PGCOPY\n\xff\r\n\0");
                b.put_i32(0);
                b.put_i32(0);
                Some(b)
            }
            Self::Csv {
                delimiter, quote, ..
            } if csv_header => {
                let mut line = String::new();
                for (i, f) in schema.fields().iter().enumerate() {
                    if i > 0 {
                        line.push(*delimiter);
                    }
                    csv_field(f.name(), *delimiter, *quote, &mut line);
                }
                line.push('\n');
                Some(BytesMut::from(line.as_bytes()))
            }
            _ => None,
        }
    }

    /// What follows the rows (the binary trailer).
    pub fn trailer(&self) -> Option<BytesMut> {
        match self {
            Self::Binary => {
                let mut b = BytesMut::new();
                b.put_i16(-1);
                Some(b)
            }
            _ => None,
        }
    }

    /// One COPY data message per row of `batch`, as Postgres sends them (clients such as
    /// psycopg read rows message by message).
    pub fn encode_batch(&self, batch: &RecordBatch, tz: &TextZone) -> EncodeResult<Vec<BytesMut>> {
        let mut buf = BytesMut::with_capacity(batch.num_rows() * 32);
        let mut rows = Vec::with_capacity(batch.num_rows());
        let mut value = String::new();
        let mut line = String::new();
        let mut timestamps = vec![(None, String::new()); batch.num_columns()];
        for row in 0..batch.num_rows() {
            match self {
                Self::Binary => {
                    buf.put_i16(batch.num_columns() as i16);
                    for column in batch.columns() {
                        write_length_prefixed(
                            column.as_ref(),
                            row,
                            FieldFormat::Binary,
                            &mut buf,
                            &mut value,
                            tz,
                        )?;
                    }
                }
                Self::Text { delimiter, null } => {
                    write_delimited_row(
                        batch,
                        row,
                        *delimiter,
                        null,
                        (&mut line, &mut value),
                        &mut timestamps,
                        tz,
                        |v, out| {
                            // Most values (numbers, timestamps) have nothing to escape.
                            let special = |b: &u8| {
                                matches!(b, b'\\' | b'\n' | b'\r' | b'\t')
                                    || u32::from(*b) == u32::from(*delimiter)
                            };
                            if delimiter.is_ascii() && !v.as_bytes().iter().any(special) {
                                out.push_str(v);
                                return;
                            }
                            for c in v.chars() {
                                match c {
                                    '\\' => out.push_str("\\\\"),
                                    '\n' => out.push_str("\\n"),
                                    '\r' => out.push_str("\\r"),
                                    '\t' => out.push_str("\\t"),
                                    c if c == *delimiter => {
                                        out.push('\\');
                                        out.push(c);
                                    }
                                    c => out.push(c),
                                }
                            }
                        },
                    )?;
                    buf.put_slice(line.as_bytes());
                }
                Self::Csv {
                    delimiter,
                    null,
                    quote,
                } => {
                    write_delimited_row(
                        batch,
                        row,
                        *delimiter,
                        null,
                        (&mut line, &mut value),
                        &mut timestamps,
                        tz,
                        |v, out| {
                            if v.is_empty() || v == null {
                                // Quoted, so it reads back as a value and not as NULL.
                                out.push(*quote);
                                out.push_str(v);
                                out.push(*quote);
                            } else {
                                csv_field(v, *delimiter, *quote, out);
                            }
                        },
                    )?;
                    buf.put_slice(line.as_bytes());
                }
            }
            rows.push(buf.split());
        }
        Ok(rows)
    }
}

/// One line of delimited text: each value's text is written by `write_value`, NULLs as `null`.
/// `timestamps` holds each column's last timestamp and its text: a window's rows repeat their
/// `window_start` and `window_end`, which are then written once.
#[allow(clippy::too_many_arguments)]
fn write_delimited_row(
    batch: &RecordBatch,
    row: usize,
    delimiter: char,
    null: &str,
    (line, value): (&mut String, &mut String),
    timestamps: &mut [(Option<i64>, String)],
    tz: &TextZone,
    write_value: impl Fn(&str, &mut String),
) -> EncodeResult<()> {
    line.clear();
    for (i, column) in batch.columns().iter().enumerate() {
        if i > 0 {
            line.push(delimiter);
        }
        if is_null_at(column.as_ref(), row) {
            line.push_str(null);
            continue;
        }
        if let (Some(raw), Some((last, text))) =
            (timestamp_value(column.as_ref(), row), timestamps.get_mut(i))
        {
            if *last != Some(raw) {
                text.clear();
                write_text(column.as_ref(), row, text, tz)?;
                *last = Some(raw);
            }
            write_value(text, line);
            continue;
        }
        value.clear();
        write_text(column.as_ref(), row, value, tz)?;
        write_value(value, line);
    }
    line.push('\n');
    Ok(())
}

fn csv_field(value: &str, delimiter: char, quote: char, out: &mut String) {
    let needs_quotes = value
        .chars()
        .any(|c| c == delimiter || c == quote || c == '\n' || c == '\r')
        || value.starts_with(' ')
        || value.ends_with(' ');
    if !needs_quotes {
        out.push_str(value);
        return;
    }
    out.push(quote);
    for c in value.chars() {
        if c == quote {
            out.push(quote);
        }
        out.push(c);
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, IntervalMonthDayNanoArray, StringArray,
        TimestampMillisecondArray,
    };
    use datafusion::arrow::datatypes::IntervalMonthDayNano;

    use super::*;

    fn text(array: ArrayRef) -> Vec<String> {
        (0..array.len())
            .map(|i| {
                let mut s = String::new();
                write_text(array.as_ref(), i, &mut s, &utc()).unwrap();
                s
            })
            .collect()
    }

    #[test]
    fn text_matches_postgres_output() {
        assert_eq!(
            text(Arc::new(BooleanArray::from(vec![true, false]))),
            ["t", "f"]
        );
        assert_eq!(
            text(Arc::new(TimestampMillisecondArray::from(vec![
                1_683_391_860_000,
                1_683_391_860_250
            ]))),
            ["2023-05-06 16:51:00", "2023-05-06 16:51:00.25"]
        );
        assert_eq!(
            text(Arc::new(
                datafusion::arrow::array::TimestampNanosecondArray::from(vec![1_123_456_789])
            )),
            ["1970-01-01 00:00:01.123456"]
        );
        // Microseconds with zeros inside, and before 1970.
        assert_eq!(
            text(Arc::new(
                datafusion::arrow::array::TimestampMicrosecondArray::from(vec![1_000_500, -1])
            )),
            ["1970-01-01 00:00:01.0005", "1969-12-31 23:59:59.999999"]
        );
        assert_eq!(
            text(Arc::new(Float64Array::from(vec![
                1.5,
                f64::INFINITY,
                f64::NAN
            ]))),
            ["1.5", "Infinity", "NaN"]
        );
        assert_eq!(
            text(Arc::new(IntervalMonthDayNanoArray::from(vec![
                IntervalMonthDayNano::new(0, 1, 7_200_000_000_000)
            ]))),
            ["1 day 02:00:00"]
        );
    }

    /// The COPY lines `w` writes for `batch`.
    fn copy_lines(w: &CopyWriter, batch: &RecordBatch) -> Vec<String> {
        w.encode_batch(batch, &utc())
            .unwrap()
            .iter()
            .map(|r| String::from_utf8(r.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let schema = Arc::new(Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("a", DataType::Utf8, true),
            datafusion::arrow::datatypes::Field::new("b", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![Some("x,y"), Some(""), None])),
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            ],
        )
        .unwrap();
        let w = CopyWriter::Csv {
            delimiter: ',',
            null: String::new(),
            quote: '"',
        };
        let out = copy_lines(&w, &batch);
        assert_eq!(out, ["\"x,y\",1\n", "\"\",\n", ",3\n"]);
        let header = w.header(&schema, true).unwrap();
        assert_eq!(&header[..], b"a,b\n");
    }

    #[test]
    fn text_rows_repeat_and_change_timestamps_and_escape_values() {
        let schema = Arc::new(Schema::new(vec![
            datafusion::arrow::datatypes::Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            datafusion::arrow::datatypes::Field::new("s", DataType::Utf8, true),
            datafusion::arrow::datatypes::Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_704_067_200_366),
                    Some(1_704_067_200_366),
                    None,
                    Some(1_704_067_210_000),
                    Some(1_704_067_200_366),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("a\tb"),
                    Some("plain"),
                    Some("back\\slash"),
                    Some("line\nbreak"),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(-42),
                    Some(i64::MIN),
                    Some(0),
                    None,
                    Some(i64::MAX),
                ])),
            ],
        )
        .unwrap();
        let w = CopyWriter::Text {
            delimiter: '\t',
            null: "\\N".to_string(),
        };
        let out = copy_lines(&w, &batch);
        assert_eq!(
            out,
            [
                "2024-01-01 00:00:00.366\ta\\tb\t-42\n",
                "2024-01-01 00:00:00.366\tplain\t-9223372036854775808\n",
                "\\N\tback\\\\slash\t0\n",
                "2024-01-01 00:00:10\tline\\nbreak\t\\N\n",
                "2024-01-01 00:00:00.366\t\\N\t9223372036854775807\n",
            ]
        );
    }
}
