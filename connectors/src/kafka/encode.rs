//! From rows to message keys and values, one byte string per row, in the forms the kafka
//! source's decoder ([`super::decode`]) reads back.
//!
//! - `json`: one JSON object per row, made by arrow-json's encoder: fields named after the
//!   columns, NULL written as `null` (Flink writes it too). Flink's JSON conventions: a
//!   `TIMESTAMP(p)` in its `SQL` standard, `yyyy-MM-dd HH:mm:ss` plus `p` fractional digits
//!   (`2024-01-01 10:00:01.500` for `TIMESTAMP(3)`); a `TIMESTAMP WITH TIME ZONE` in UTC with a
//!   trailing `Z`; a date `yyyy-MM-dd`; a time `HH:mm:ss[.f]`; a decimal as a plain number.
//!   Unlike Flink, `BYTEA` is a hex string (Flink writes base64), and NaN and infinities are
//!   `null` (JSON has no such numbers).
//! - `csv`: one CSV record per row, without a line end, through the `csv` crate (quoting
//!   fields that need it): each field as arrow displays it, timestamps as for JSON; NULL is an
//!   empty field, or `csv.null-literal`.
//! - `raw`: the only column's bytes (`VARCHAR` as UTF-8, `BYTEA` as it is); NULL is no bytes at
//!   all (a null key, or a null value: a tombstone).

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StructArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{
    Encoder, EncoderFactory, EncoderOptions, NullableEncoder, make_encoder,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_engine::connector::{ConnectorError, ConnectorResult};

use super::options::KafkaFormat;
use crate::file::options::CsvOptions;

/// Encodes some columns of each row (a key's or a value's) in one format.
#[derive(Debug, Clone)]
pub(crate) struct RowEncoder {
    format: KafkaFormat,
    columns: Vec<usize>,
}

impl RowEncoder {
    /// An encoder of `columns` of `schema`; refuses (0A000, naming the column) a type the
    /// format cannot write. `what` says which part of the message it encodes (`key`, `value`).
    pub(crate) fn new(
        schema: &SchemaRef,
        columns: Vec<usize>,
        format: KafkaFormat,
        what: &str,
    ) -> ConnectorResult<Self> {
        for &column in &columns {
            let field = schema.field(column);
            if !encodable(field.data_type(), &format) {
                let (name, types) = match &format {
                    KafkaFormat::Json => (
                        "json",
                        "integers, REAL/DOUBLE, DECIMAL, BOOLEAN, VARCHAR, DATE, TIME, TIMESTAMP [WITH TIME ZONE], BYTEA",
                    ),
                    KafkaFormat::Csv(_) => (
                        "csv",
                        "integers, REAL/DOUBLE, DECIMAL, BOOLEAN, VARCHAR, DATE, TIME, TIMESTAMP [WITH TIME ZONE]",
                    ),
                    KafkaFormat::Raw => ("raw", "VARCHAR, BYTEA"),
                };
                return Err(ConnectorError::Unsupported(format!(
                    "column '{}' has type {}, which a Kafka sink cannot write in format '{name}' \
                     (the message {what}); supported types: {types}",
                    field.name(),
                    field.data_type()
                )));
            }
        }
        Ok(Self { format, columns })
    }

    /// Each row's bytes, in row order; `None` only for a NULL in `raw`.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> ConnectorResult<Vec<Option<Vec<u8>>>> {
        let columns = self
            .columns
            .iter()
            .map(|c| in_utc(batch.column(*c)))
            .collect::<ConnectorResult<Vec<_>>>()?;
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|c| batch.schema_ref().field(*c).name().as_str())
            .collect();
        match &self.format {
            KafkaFormat::Json => encode_json(&names, columns, batch.num_rows()),
            KafkaFormat::Csv(csv) => encode_csv(csv, &columns, batch.num_rows()),
            KafkaFormat::Raw => encode_raw(&columns[0]),
        }
    }
}

fn encodable(data_type: &DataType, format: &KafkaFormat) -> bool {
    use DataType::*;
    let text = matches!(data_type, Utf8 | LargeUtf8 | Utf8View);
    let binary = matches!(data_type, Binary | LargeBinary | BinaryView);
    let scalar = matches!(
        data_type,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float16
            | Float32
            | Float64
            | Decimal32(_, _)
            | Decimal64(_, _)
            | Decimal128(_, _)
            | Decimal256(_, _)
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
    );
    match format {
        KafkaFormat::Json => text || binary || scalar,
        KafkaFormat::Csv(_) => text || scalar,
        KafkaFormat::Raw => text || binary,
    }
}

/// A timestamp with a time zone, as the same instants in UTC (so it formats as UTC).
fn in_utc(column: &ArrayRef) -> ConnectorResult<ArrayRef> {
    match column.data_type() {
        DataType::Timestamp(unit, Some(tz)) if tz.as_ref() != UTC => {
            Ok(cast(column, &DataType::Timestamp(*unit, Some(UTC.into())))?)
        }
        _ => Ok(Arc::clone(column)),
    }
}

const UTC: &str = "+00:00";

/// Flink's `SQL` timestamp standard at the column's precision; `Z` after a zoned one (shown in
/// UTC by [`in_utc`]).
fn timestamp_format(unit: TimeUnit, zoned: bool) -> &'static str {
    match (unit, zoned) {
        (TimeUnit::Second, false) => "%Y-%m-%d %H:%M:%S",
        (TimeUnit::Millisecond, false) => "%Y-%m-%d %H:%M:%S%.3f",
        (TimeUnit::Microsecond, false) => "%Y-%m-%d %H:%M:%S%.6f",
        (TimeUnit::Nanosecond, false) => "%Y-%m-%d %H:%M:%S%.9f",
        (TimeUnit::Second, true) => "%Y-%m-%d %H:%M:%SZ",
        (TimeUnit::Millisecond, true) => "%Y-%m-%d %H:%M:%S%.3fZ",
        (TimeUnit::Microsecond, true) => "%Y-%m-%d %H:%M:%S%.6fZ",
        (TimeUnit::Nanosecond, true) => "%Y-%m-%d %H:%M:%S%.9fZ",
    }
}

/// How a column's values are displayed as text (CSV fields, JSON timestamps).
fn format_options(data_type: &DataType, null: &'static str) -> FormatOptions<'static> {
    let options = FormatOptions::new()
        .with_display_error(true)
        .with_null(null);
    match data_type {
        DataType::Timestamp(unit, zone) => {
            let format = timestamp_format(*unit, zone.is_some());
            options
                .with_timestamp_format(Some(format))
                .with_timestamp_tz_format(Some(format))
        }
        _ => options,
    }
}

/// JSON timestamps in Flink's form (arrow-json's default is RFC 3339 with a `T`).
#[derive(Debug)]
struct SqlTimestamps;

impl EncoderFactory for SqlTimestamps {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        if !matches!(array.data_type(), DataType::Timestamp(_, _)) {
            return Ok(None);
        }
        let formatter = ArrayFormatter::try_new(array, &format_options(array.data_type(), ""))?;
        Ok(Some(NullableEncoder::new(
            Box::new(Quoted(formatter)),
            array.nulls().cloned(),
        )))
    }
}

/// A displayed value as a JSON string (the timestamp forms need no escaping).
struct Quoted<'a>(ArrayFormatter<'a>);

impl Encoder for Quoted<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.push(b'"');
        // Writing to a Vec cannot fail; a value that cannot be displayed shows its error.
        let _ = write!(out, "{}", self.0.value(idx));
        out.push(b'"');
    }
}

fn encode_json(
    names: &[&str],
    columns: Vec<ArrayRef>,
    rows: usize,
) -> ConnectorResult<Vec<Option<Vec<u8>>>> {
    let fields: Fields = names
        .iter()
        .zip(&columns)
        .map(|(name, column)| Field::new(*name, column.data_type().clone(), true))
        .collect();
    let row = StructArray::try_new(fields.clone(), columns, None)?;
    let field: FieldRef = Arc::new(Field::new("row", DataType::Struct(fields), false));
    let options = EncoderOptions::default()
        .with_explicit_nulls(true)
        .with_encoder_factory(Arc::new(SqlTimestamps));
    let mut encoder = make_encoder(&field, &row, &options)?;
    let mut out = Vec::with_capacity(rows);
    for index in 0..rows {
        let mut bytes = Vec::new();
        encoder.encode(index, &mut bytes);
        out.push(Some(bytes));
    }
    Ok(out)
}

fn encode_csv(
    csv: &CsvOptions,
    columns: &[ArrayRef],
    rows: usize,
) -> ConnectorResult<Vec<Option<Vec<u8>>>> {
    let formatters = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &format_options(c.data_type(), "")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut writer = ::csv::WriterBuilder::new()
        .delimiter(csv.delimiter)
        .quote(csv.quote.unwrap_or(b'"'))
        .quote_style(if csv.quote.is_some() {
            ::csv::QuoteStyle::Necessary
        } else {
            ::csv::QuoteStyle::Never
        })
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let mut ends = Vec::with_capacity(rows);
    let mut fields: Vec<String> = Vec::with_capacity(columns.len());
    for index in 0..rows {
        fields.clear();
        for (column, formatter) in columns.iter().zip(&formatters) {
            fields.push(if column.is_null(index) {
                csv.null_value.clone().unwrap_or_default()
            } else {
                formatter.value(index).try_to_string()?
            });
        }
        writer
            .write_record(&fields)
            .map_err(|e| ConnectorError::Io(format!("encoding a CSV record: {e}")))?;
        writer
            .flush()
            .map_err(|e| ConnectorError::Io(format!("encoding a CSV record: {e}")))?;
        ends.push(writer.get_ref().len());
    }
    let text = writer
        .into_inner()
        .map_err(|e| ConnectorError::Io(format!("encoding a CSV record: {e}")))?;
    let mut start = 0;
    Ok(ends
        .into_iter()
        .map(|end| {
            // Without the line end: one record per message.
            let record = text[start..end - 1].to_vec();
            start = end;
            Some(record)
        })
        .collect())
}

fn encode_raw(column: &ArrayRef) -> ConnectorResult<Vec<Option<Vec<u8>>>> {
    if matches!(
        column.data_type(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    ) {
        let bytes = cast(column, &DataType::Binary)?;
        Ok(bytes
            .as_binary::<i32>()
            .iter()
            .map(|v| v.map(<[u8]>::to_vec))
            .collect())
    } else {
        let text = cast(column, &DataType::Utf8)?;
        Ok(text
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(|s| s.as_bytes().to_vec()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
        StringArray, TimestampMillisecondArray, TimestampSecondArray,
    };
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use eddy_engine::connector::SourceMetrics;

    use super::super::client::KafkaRecord;
    use super::super::decode::ValueDecoder;
    use super::*;

    /// 2024-01-01 10:00:01.500 UTC.
    const TS: i64 = 1_704_103_201_500;

    fn batch() -> RecordBatch {
        let zoned = TimestampMillisecondArray::from(vec![Some(TS), None, Some(TS + 1)])
            .with_timezone("+02:00");
        RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(StringArray::from(vec![Some("a"), Some("b,\"c\""), None])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)])) as ArrayRef,
            ),
            (
                "price",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), Some(-5), None])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ) as ArrayRef,
            ),
            (
                "ok",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])) as ArrayRef,
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![Some(0.5), Some(f64::NAN), None])) as ArrayRef,
            ),
            (
                "d",
                Arc::new(Date32Array::from(vec![Some(19723), None, Some(0)])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(TS),
                    Some(TS - 500),
                    None,
                ])) as ArrayRef,
            ),
            (
                "secs",
                Arc::new(TimestampSecondArray::from(vec![
                    Some(TS / 1000),
                    None,
                    None,
                ])) as ArrayRef,
            ),
            ("tz", Arc::new(zoned) as ArrayRef),
        ])
        .unwrap()
    }

    fn text(encoded: Vec<Option<Vec<u8>>>) -> Vec<Option<String>> {
        encoded
            .into_iter()
            .map(|v| v.map(|b| String::from_utf8(b).unwrap()))
            .collect()
    }

    fn all_columns(format: KafkaFormat) -> RowEncoder {
        let b = batch();
        RowEncoder::new(
            b.schema_ref(),
            (0..b.num_columns()).collect(),
            format,
            "value",
        )
        .unwrap()
    }

    #[test]
    fn json_values_follow_flinks_conventions() {
        let rows = text(all_columns(KafkaFormat::Json).encode(&batch()).unwrap());
        assert_eq!(
            rows,
            vec![
                Some(
                    r#"{"k":"a","n":1,"price":123.45,"ok":true,"x":0.5,"d":"2024-01-01","ts":"2024-01-01 10:00:01.500","secs":"2024-01-01 10:00:01","tz":"2024-01-01 10:00:01.500Z"}"#
                        .to_string()
                ),
                Some(
                    r#"{"k":"b,\"c\"","n":null,"price":-0.05,"ok":false,"x":null,"d":null,"ts":"2024-01-01 10:00:01.000","secs":null,"tz":null}"#
                        .to_string()
                ),
                Some(
                    r#"{"k":null,"n":-3,"price":null,"ok":null,"x":null,"d":"1970-01-01","ts":null,"secs":null,"tz":"2024-01-01 10:00:01.501Z"}"#
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn csv_values_quote_what_needs_it_and_write_null_as_said() {
        let rows = text(
            all_columns(KafkaFormat::Csv(CsvOptions::default()))
                .encode(&batch())
                .unwrap(),
        );
        assert_eq!(
            rows[0].as_deref(),
            Some(
                "a,1,123.45,true,0.5,2024-01-01,2024-01-01 10:00:01.500,2024-01-01 10:00:01,2024-01-01 10:00:01.500Z"
            )
        );
        assert_eq!(
            rows[1].as_deref(),
            Some(r#""b,""c""",,-0.05,false,NaN,,2024-01-01 10:00:01.000,,"#)
        );
        let with_null = CsvOptions {
            delimiter: b';',
            null_value: Some("\\N".to_string()),
            ..CsvOptions::default()
        };
        let b = batch();
        let rows = text(
            RowEncoder::new(
                b.schema_ref(),
                vec![0, 1],
                KafkaFormat::Csv(with_null),
                "key",
            )
            .unwrap()
            .encode(&b)
            .unwrap(),
        );
        assert_eq!(
            rows,
            vec![
                Some("a;1".to_string()),
                // A quote in a field is quoted, whatever the delimiter.
                Some(r#""b,""c""";\N"#.to_string()),
                Some(r#"\N;-3"#.to_string())
            ]
        );
    }

    #[test]
    fn raw_is_the_columns_bytes_and_null_is_no_bytes() {
        let b = batch();
        let keys = RowEncoder::new(b.schema_ref(), vec![0], KafkaFormat::Raw, "key")
            .unwrap()
            .encode(&b)
            .unwrap();
        assert_eq!(
            keys,
            vec![Some(b"a".to_vec()), Some(b"b,\"c\"".to_vec()), None]
        );
        let bytes = RecordBatch::try_from_iter([(
            "b",
            Arc::new(BinaryArray::from(vec![Some(&[0u8, 255][..]), None])) as ArrayRef,
        )])
        .unwrap();
        let encoded = RowEncoder::new(bytes.schema_ref(), vec![0], KafkaFormat::Raw, "value")
            .unwrap()
            .encode(&bytes)
            .unwrap();
        assert_eq!(encoded, vec![Some(vec![0, 255]), None]);
    }

    #[test]
    fn types_a_format_cannot_write_are_refused_naming_the_column() {
        let b = batch();
        let refused = |columns: Vec<usize>, format: KafkaFormat| match RowEncoder::new(
            b.schema_ref(),
            columns,
            format,
            "key",
        ) {
            Err(ConnectorError::Unsupported(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = refused(vec![1], KafkaFormat::Raw);
        assert!(m.contains("column 'n'") && m.contains("'raw'"), "{m}");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "i",
            DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
            true,
        )]));
        for format in [KafkaFormat::Json, KafkaFormat::Csv(CsvOptions::default())] {
            assert!(matches!(
                RowEncoder::new(&schema, vec![0], format, "value"),
                Err(ConnectorError::Unsupported(_))
            ));
        }
        let binary = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, true)]));
        assert!(
            RowEncoder::new(&binary, vec![0], KafkaFormat::Json, "value").is_ok()
                && RowEncoder::new(
                    &binary,
                    vec![0],
                    KafkaFormat::Csv(CsvOptions::default()),
                    "value"
                )
                .is_err()
        );
    }

    /// What the sink writes, the kafka source reads back as the same rows.
    #[test]
    fn the_kafka_source_reads_back_what_the_sink_writes() {
        let original = batch().project(&[0, 1, 2, 3, 5, 6, 7, 8]).unwrap();
        // The source reads a zoned timestamp back in its declared zone: compare in UTC.
        let mut columns = original.columns().to_vec();
        columns[7] = in_utc(&columns[7]).unwrap();
        let original = RecordBatch::try_from_iter(
            original
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .zip(columns),
        )
        .unwrap();
        let schema = original.schema();
        for format in [
            KafkaFormat::Json,
            KafkaFormat::Csv(CsvOptions {
                null_value: Some("\\N".to_string()),
                ..CsvOptions::default()
            }),
        ] {
            let encoded = RowEncoder::new(
                &schema,
                (0..schema.fields().len()).collect(),
                format.clone(),
                "value",
            )
            .unwrap()
            .encode(&original)
            .unwrap();
            let records: Vec<KafkaRecord> = encoded
                .into_iter()
                .enumerate()
                .map(|(offset, payload)| KafkaRecord {
                    partition: 0,
                    offset: offset as i64,
                    payload,
                    key: None,
                    timestamp_ms: None,
                    timestamp_type: Default::default(),
                    headers: Vec::new(),
                })
                .collect();
            let metrics = Arc::new(SourceMetrics::default());
            let decoder = ValueDecoder::new(
                "t",
                &format,
                &schema,
                None,
                Arc::clone(&schema),
                Arc::clone(&metrics),
                100,
            );
            let decoded = decoder.decode(&records).unwrap();
            assert_eq!(metrics.first_error(), None, "{format:?}");
            assert_eq!(
                pretty_format_batches(&[decoded]).unwrap().to_string(),
                pretty_format_batches(std::slice::from_ref(&original))
                    .unwrap()
                    .to_string(),
                "{format:?}"
            );
        }
    }
}
