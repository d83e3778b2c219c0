//! Decoding Postgres binary COPY data (`COPY t FROM STDIN (FORMAT binary)`) into Arrow
//! columns, for asyncpg's `copy_records_to_table` and psycopg's binary copy.
//!
//! The format: an 11-byte signature, flags and a header extension; then per row a 16-bit field
//! count and, per field, a 32-bit length (-1 for NULL) and the value in its binary send format;
//! a field count of -1 ends the data.

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::ScalarValue;
use postgres_types::{FromSql, Type};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days and microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A reader over the COPY bytes that reports truncation instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or("binary COPY data is truncated")?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes `data` into one array per field; returns the arrays and the row count.
pub fn decode(data: &[u8], fields: &[FieldRef]) -> Result<(Vec<ArrayRef>, usize), String> {
    let mut r = Reader { data, pos: 0 };
    if r.take(SIGNATURE.len())? != SIGNATURE {
        return Err("COPY file signature not recognized".to_string());
    }
    let _flags = r.i32()?;
    let extension = usize::try_from(r.i32()?).map_err(|_| "invalid COPY header extension")?;
    r.take(extension)?;
    let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); fields.len()];
    let mut rows = 0;
    loop {
        let count = r.i16()?;
        if count == -1 {
            break;
        }
        if count as usize != fields.len() {
            return Err(format!(
                "row {} has {count} field(s), expected {}",
                rows + 1,
                fields.len()
            ));
        }
        for (field, column) in fields.iter().zip(values.iter_mut()) {
            let len = r.i32()?;
            let value = if len < 0 {
                ScalarValue::try_from(field.data_type()).map_err(|e| e.to_string())?
            } else {
                let raw = r.take(len as usize)?;
                decode_value(raw, field.data_type())
                    .map_err(|e| format!("row {}, column {}: {e}", rows + 1, field.name()))?
            };
            column.push(value);
        }
        rows += 1;
    }
    let arrays = fields
        .iter()
        .zip(values)
        .map(|(field, column)| {
            if column.is_empty() {
                return Ok(new_null_array(field.data_type(), 0));
            }
            ScalarValue::iter_to_array(column).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((arrays, rows))
}

type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// One value in the binary format of the column's Postgres type.
fn decode_value(raw: &[u8], data_type: &DataType) -> Result<ScalarValue, DecodeError> {
    // Integers and floats: accept any width the client chose and convert.
    let integer = || -> Result<i64, DecodeError> {
        Ok(match raw.len() {
            2 => i64::from(i16::from_sql(&Type::INT2, raw)?),
            4 => i64::from(i32::from_sql(&Type::INT4, raw)?),
            8 => i64::from_sql(&Type::INT8, raw)?,
            n => return Err(format!("an integer of {n} bytes").into()),
        })
    };
    let value = match data_type {
        DataType::Boolean => ScalarValue::Boolean(Some(bool::from_sql(&Type::BOOL, raw)?)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            ScalarValue::Int64(Some(integer()?))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            ScalarValue::Int64(Some(integer()?))
        }
        DataType::Float32 | DataType::Float64 => ScalarValue::Float64(Some(match raw.len() {
            4 => f64::from(f32::from_sql(&Type::FLOAT4, raw)?),
            _ => f64::from_sql(&Type::FLOAT8, raw)?,
        })),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            ScalarValue::Utf8(Some(std::str::from_utf8(raw)?.to_string()))
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            ScalarValue::Binary(Some(raw.to_vec()))
        }
        DataType::Date32 | DataType::Date64 => {
            ScalarValue::Date32(Some(i32::from_sql(&Type::INT4, raw)? + PG_EPOCH_DAYS))
        }
        DataType::Timestamp(_, tz) => ScalarValue::TimestampMicrosecond(
            Some(i64::from_sql(&Type::INT8, raw)? + PG_EPOCH_MICROS),
            tz.clone(),
        ),
        DataType::Decimal128(_, _) => {
            let d = rust_decimal::Decimal::from_sql(&Type::NUMERIC, raw)?;
            ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8)
        }
        other => {
            return Err(format!("binary COPY into a {other} column is not supported").into());
        }
    };
    if &value.data_type() == data_type {
        return Ok(value);
    }
    Ok(value.cast_to(data_type)?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array};
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Field, Int64Type};

    use super::*;

    #[test]
    fn decodes_rows_and_nulls() {
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        for (a, s) in [(Some(7i64), Some("x")), (None, None)] {
            data.extend_from_slice(&2i16.to_be_bytes());
            match a {
                Some(a) => {
                    data.extend_from_slice(&8i32.to_be_bytes());
                    data.extend_from_slice(&a.to_be_bytes());
                }
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            match s {
                Some(s) => {
                    data.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    data.extend_from_slice(s.as_bytes());
                }
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let fields: Vec<FieldRef> = vec![
            Arc::new(Field::new("a", DataType::Int64, true)),
            Arc::new(Field::new("s", DataType::Utf8, true)),
        ];
        let (arrays, rows) = decode(&data, &fields).unwrap();
        assert_eq!(rows, 2);
        assert_eq!(
            arrays[0].as_primitive::<Int64Type>(),
            &Int64Array::from(vec![Some(7), None])
        );
        assert_eq!(arrays[1].as_string::<i32>().value(0), "x");
        assert!(arrays[1].is_null(1));
        // Truncated data is an error, not a panic.
        assert!(decode(&data[..data.len() - 5], &fields).is_err());
    }
}
