//! From message values to batches of the declared (projected) schema.
//!
//! - `json`: arrow-json's [`Decoder`] decodes every value of a poll into columns at once (no
//!   per-row JSON values). Fields are matched to columns by exact name, unknown fields are
//!   ignored, a missing field or `null` is NULL. Should the values together fail to decode,
//!   they are decoded again one by one to find and skip the malformed ones.
//! - `csv`: the file connector's CSV decoder ([`crate::file::csv`]), one record per value,
//!   with the file connector's NULL rule and casts.
//! - `raw`: the value as the only column, VARCHAR (must be UTF-8) or BYTEA.
//!
//! A malformed value (invalid JSON, not an object, a value that does not fit its column, a
//! tombstone or empty value in `json`/`csv`) is handed to the source's metrics at position
//! `topic/partition@offset`, with the value as its raw bytes, and left out; the source's
//! `format.on-error` says what happens to it then (`'fail'` fails the decoding).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryBuilder, StringBuilder};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{ConnectorError, ConnectorResult, MalformedRow, SourceMetrics};

use super::client::KafkaRecord;
use super::options::KafkaFormat;
use crate::file::csv::{CsvDecoder, CsvFileState};
use crate::file::decode::{
    DecodeConfig, RowOrigin, TextBatchBuilder, check_supported, is_string_type,
};
use crate::file::options::FileFormat;

/// Decodes the values of one source's messages.
pub(crate) struct ValueDecoder {
    topic: String,
    schema: SchemaRef,
    metrics: Arc<SourceMetrics>,
    kind: Kind,
}

enum Kind {
    Json,
    Csv {
        decoder: CsvDecoder,
        config: DecodeConfig,
    },
    Raw {
        utf8: bool,
    },
}

/// Where a message is, as malformed-row reports show it: `topic/partition@offset`.
pub(crate) fn message_position(topic: &str, record: &KafkaRecord) -> String {
    RowOrigin::Offset.describe(
        &format!("{topic}/{}", record.partition),
        record.offset as u64,
    )
}

/// Checks at `CREATE SOURCE` time that `format` can produce every declared column.
pub(crate) fn check_schema(schema: &SchemaRef, format: &KafkaFormat) -> ConnectorResult<()> {
    match format {
        KafkaFormat::Csv(_) => check_supported(schema, FileFormat::Csv),
        KafkaFormat::Json => {
            check_supported(schema, FileFormat::Json)?;
            json_decoder(Arc::clone(schema), 1).map(|_| ())
        }
        KafkaFormat::Raw => match schema.fields().as_ref() {
            [field]
                if is_string_type(field.data_type())
                    || matches!(field.data_type(), DataType::Binary) =>
            {
                Ok(())
            }
            _ => Err(ConnectorError::InvalidOption(
                "format 'raw' needs exactly one column, of type VARCHAR or BYTEA".to_string(),
            )),
        },
    }
}

/// A decoder that holds at most `rows` rows before a flush.
fn json_decoder(schema: SchemaRef, rows: usize) -> ConnectorResult<Decoder> {
    Ok(ReaderBuilder::new(schema)
        .with_strict_mode(false)
        .with_batch_size(rows.max(1))
        .build_decoder()?)
}

impl ValueDecoder {
    /// A decoder producing `schema` (the declared schema projected to what the query reads;
    /// `declared` and `projection` tell CSV which fields of a record those are).
    pub(crate) fn new(
        topic: &str,
        format: &KafkaFormat,
        declared: &SchemaRef,
        projection: Option<&[usize]>,
        schema: SchemaRef,
        metrics: Arc<SourceMetrics>,
        batch_size: usize,
    ) -> Self {
        let kind = match format {
            KafkaFormat::Json => Kind::Json,
            KafkaFormat::Csv(csv) => {
                let decoder = CsvDecoder::new(csv);
                let decoder = match projection {
                    Some(columns) => {
                        decoder.with_projection(declared.fields().len(), columns.to_vec())
                    }
                    None => decoder,
                };
                Kind::Csv {
                    decoder,
                    config: DecodeConfig {
                        schema: Arc::clone(&schema),
                        null_value: csv.null_value.clone(),
                        metrics: Arc::clone(&metrics),
                        batch_size: batch_size.max(1),
                    },
                }
            }
            KafkaFormat::Raw => Kind::Raw {
                utf8: schema
                    .fields()
                    .first()
                    .is_some_and(|f| is_string_type(f.data_type())),
            },
        };
        Self {
            topic: topic.to_string(),
            schema,
            metrics,
            kind,
        }
    }

    fn malformed(&self, record: &KafkaRecord, reason: &str) -> ConnectorResult<()> {
        self.metrics.malformed_row(|| MalformedRow {
            position: message_position(&self.topic, record),
            reason: reason.to_string(),
            raw: record.payload.clone().filter(|_| self.metrics.keeps_raw()),
        })
    }

    /// The rows of `records` (in order), malformed ones counted and left out.
    pub(crate) fn decode(&self, records: &[KafkaRecord]) -> ConnectorResult<RecordBatch> {
        match &self.kind {
            Kind::Json => self.decode_json(records),
            Kind::Csv { decoder, config } => self.decode_csv(records, decoder, config),
            Kind::Raw { utf8 } => self.decode_raw(records, *utf8),
        }
    }

    fn decode_json(&self, records: &[KafkaRecord]) -> ConnectorResult<RecordBatch> {
        if records.iter().all(|r| r.payload.is_some())
            && let Ok(batch) = self.decode_json_together(records)
            && batch.num_rows() == records.len()
        {
            return Ok(batch);
        }
        // Some value is malformed: decode one at a time to keep the others.
        let mut batches = Vec::with_capacity(records.len());
        for record in records {
            let Some(payload) = &record.payload else {
                self.malformed(record, "no value (a tombstone)")?;
                continue;
            };
            match self.decode_json_together(std::slice::from_ref(record)) {
                Ok(batch) if batch.num_rows() == 1 => batches.push(batch),
                Ok(batch) => self.malformed(
                    record,
                    &format!(
                        "expected one JSON object, found {} values{}",
                        batch.num_rows(),
                        if payload.is_empty() { " (empty)" } else { "" }
                    ),
                )?,
                Err(e) => self.malformed(record, &format!("invalid JSON: {e}"))?,
            }
        }
        Ok(concat_batches(&self.schema, &batches)?)
    }

    /// Decodes the values as one stream of JSON objects (each value is one or more of them).
    fn decode_json_together(&self, records: &[KafkaRecord]) -> ConnectorResult<RecordBatch> {
        let mut decoder = json_decoder(Arc::clone(&self.schema), records.len())?;
        for record in records {
            let payload = record.payload.as_deref().unwrap_or_default();
            let mut rest = payload;
            while !rest.is_empty() {
                let read = decoder.decode(rest)?;
                if read == 0 {
                    // Full: the values hold more objects than there are messages.
                    return Err(ConnectorError::InvalidOption(
                        "more JSON values than messages".to_string(),
                    ));
                }
                rest = &rest[read..];
            }
            if decoder.has_partial_record() {
                return Err(ConnectorError::InvalidOption(
                    "a JSON value is cut off".to_string(),
                ));
            }
        }
        Ok(decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.schema))))
    }

    fn decode_csv(
        &self,
        records: &[KafkaRecord],
        decoder: &CsvDecoder,
        config: &DecodeConfig,
    ) -> ConnectorResult<RecordBatch> {
        let mut batches = Vec::new();
        // One builder per run of a partition: positions are `topic/partition@offset`.
        for run in records.chunk_by(|a, b| a.partition == b.partition) {
            let file = format!("{}/{}", self.topic, run[0].partition);
            let mut out = TextBatchBuilder::new(config, &file, 0).with_origin(RowOrigin::Offset);
            for record in run {
                let Some(payload) = &record.payload else {
                    out.malformed(record.offset as u64, "no value (a tombstone)", None)?;
                    continue;
                };
                let mut state = CsvFileState {
                    header_pending: false,
                };
                // The "line" of every record of the value is its offset.
                let line = record.offset as u64;
                let body = payload.strip_suffix(b"\n").unwrap_or(payload);
                let body = body.strip_suffix(b"\r").unwrap_or(body);
                if body.iter().all(u8::is_ascii_whitespace) {
                    // Blank lines of a file are layout; an empty message is a bad message.
                    out.malformed(line, "empty value", Some(payload))?;
                    continue;
                }
                // A carriage return ends a CSV record as a line feed does: either inside a
                // value would make one message several rows.
                if body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
                    out.malformed(
                        line,
                        "a CSV value must hold one record (one line)",
                        Some(payload),
                    )?;
                    continue;
                }
                decoder.decode(body, true, line, &mut state, &mut out)?;
            }
            batches.extend(out.finish()?);
        }
        Ok(concat_batches(&self.schema, &batches)?)
    }

    fn decode_raw(&self, records: &[KafkaRecord], utf8: bool) -> ConnectorResult<RecordBatch> {
        let column: ArrayRef = if utf8 {
            let mut builder = StringBuilder::new();
            for record in records {
                match record.payload.as_deref().map(std::str::from_utf8) {
                    None => builder.append_null(),
                    Some(Ok(text)) => builder.append_value(text),
                    Some(Err(_)) => self.malformed(record, "the value is not valid UTF-8")?,
                }
            }
            Arc::new(builder.finish())
        } else {
            let mut builder = BinaryBuilder::new();
            for record in records {
                builder.append_option(record.payload.as_deref());
            }
            Arc::new(builder.finish())
        };
        let column = datafusion::arrow::compute::cast(&column, self.schema.field(0).data_type())?;
        Ok(RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![column],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;
    use crate::file::options::CsvOptions;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn records(values: &[&str]) -> Vec<KafkaRecord> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| KafkaRecord {
                partition: 0,
                offset: i as i64,
                payload: Some(v.as_bytes().to_vec()),
                key: None,
                timestamp_ms: None,
                timestamp_type: Default::default(),
                headers: Vec::new(),
            })
            .collect()
    }

    fn decode(format: KafkaFormat, values: &[&str]) -> (String, Arc<SourceMetrics>) {
        let metrics = Arc::new(SourceMetrics::default());
        let decoder = ValueDecoder::new(
            "t",
            &format,
            &schema(),
            None,
            schema(),
            Arc::clone(&metrics),
            100,
        );
        let batch = decoder.decode(&records(values)).unwrap();
        (
            pretty_format_batches(&[batch]).unwrap().to_string(),
            metrics,
        )
    }

    #[test]
    fn json_values_decode_together_and_bad_ones_are_skipped() {
        let (good, metrics) = decode(
            KafkaFormat::Json,
            &[
                r#"{"k":"a","v":1,"ts":"2024-01-01 00:00:01","extra":true}"#,
                r#"{"v":2,"ts":"2024-01-01T00:00:02"}"#,
            ],
        );
        assert_eq!(metrics.malformed(), 0);
        assert!(good.contains("| a | 1 | 2024-01-01T00:00:01 |"), "{good}");
        assert!(good.contains("|   | 2 | 2024-01-01T00:00:02 |"), "{good}");

        let (rows, metrics) = decode(
            KafkaFormat::Json,
            &[
                r#"{"k":"a","v":1}"#,
                "not json",
                r#"{"k":"b","v":"x"}"#,
                "[1,2]",
                r#"{"k":"c","v":3}"#,
            ],
        );
        assert_eq!(metrics.malformed(), 3, "{rows}");
        assert!(
            metrics
                .first_error()
                .unwrap()
                .starts_with("t/0@1: invalid JSON"),
            "{:?}",
            metrics.first_error()
        );
        assert!(rows.contains("| a |") && rows.contains("| c |") && !rows.contains("| b |"));
    }

    #[test]
    fn csv_values_use_the_file_connectors_rules() {
        let (rows, metrics) = decode(
            KafkaFormat::Csv(CsvOptions::default()),
            &[
                "a,1,2024-01-01 00:00:01\n",
                "b,x,2024-01-01 00:00:02",
                "c,3",
            ],
        );
        assert_eq!(metrics.malformed(), 2, "{rows}");
        assert!(rows.contains("| a | 1 | 2024-01-01T00:00:01 |"), "{rows}");
        assert_eq!(
            metrics.first_error().unwrap(),
            "t/0@1: column 'v': cannot read 'x' as Int64"
        );
    }

    /// Found by the `kafka` fuzz target: a carriage return inside a value split it into two
    /// CSV records, so one message became two rows (or a row and a malformed count).
    #[test]
    fn a_csv_value_with_a_carriage_return_inside_is_one_malformed_message() {
        let (rows, metrics) = decode(
            KafkaFormat::Csv(CsvOptions::default()),
            &[
                "a,1,2024-01-01 00:00:01\rb,2,2024-01-01 00:00:02",
                "c,3,2024-01-01 00:00:03\r\n",
                "d,4,2024-01-01 00:00:04\r",
            ],
        );
        assert_eq!(metrics.malformed(), 1, "{rows}");
        assert_eq!(
            metrics.first_error().unwrap(),
            "t/0@0: a CSV value must hold one record (one line)"
        );
        assert!(!rows.contains("| a |") && !rows.contains("| b |"), "{rows}");
        assert!(
            rows.contains("| c | 3 |") && rows.contains("| d | 4 |"),
            "{rows}"
        );
    }
}
