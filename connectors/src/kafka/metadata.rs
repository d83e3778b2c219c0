//! Metadata columns (`col TYPE METADATA FROM 'partition'`, Flink's names) and how a reader's
//! batches are laid out: the declared columns the query reads, some decoded from the message
//! values, some from the message keys (`key.fields` with `value.fields-include =
//! 'EXCEPT_KEY'`), the others filled from each message's metadata.
//!
//! | key | produces | |
//! |---|---|---|
//! | `topic` | VARCHAR | the topic |
//! | `partition` | INT | the partition |
//! | `offset` | BIGINT | the message's offset |
//! | `timestamp` | TIMESTAMP(3) WITH TIME ZONE | the message's timestamp (NULL without one) |
//! | `timestamp-type` | VARCHAR | `NoTimestampType`, `CreateTime` or `LogAppendTime` |
//! | `key` | BYTEA | the message's key, raw (NULL without one; castable to VARCHAR) |
//! | `headers` | `STRUCT<key VARCHAR, value BYTEA>[]` | the headers in order (Flink has a MAP) |
//!
//! `leader-epoch` is known but not implemented (`0A000`).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Int32Array, Int64Array, ListArray, StringArray,
    StructArray, TimestampMillisecondArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use eddy_engine::connector::{ConnectorError, ConnectorResult, MetadataColumn, UPSERT_FLAG};

use super::client::{KafkaRecord, TimestampType};

/// The metadata keys of a Kafka message, with the type each produces. A key produced as
/// `Null` is known but not implemented: refused with `0A000` when a source declares it.
pub(crate) fn offered() -> Vec<(&'static str, DataType)> {
    vec![
        ("topic", DataType::Utf8),
        ("partition", DataType::Int32),
        ("offset", DataType::Int64),
        (
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ),
        ("timestamp-type", DataType::Utf8),
        ("key", DataType::Binary),
        ("headers", headers_type()),
        ("leader-epoch", DataType::Null),
    ]
}

/// The type `headers` produces: the message's headers in order, each a (key, value) pair,
/// `ARRAY<STRUCT<key VARCHAR, value BYTEA>>` (RisingWave's shape: Eddy has no MAP column
/// type, and a key may repeat).
fn headers_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(header_fields()),
        true,
    )))
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Binary, true),
    ])
}

/// One metadata key a reader fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetadataKey {
    Topic,
    Partition,
    Offset,
    Timestamp,
    TimestampType,
    Key,
    Headers,
}

impl MetadataKey {
    fn parse(key: &str) -> ConnectorResult<Self> {
        Ok(match key {
            "topic" => MetadataKey::Topic,
            "partition" => MetadataKey::Partition,
            "offset" => MetadataKey::Offset,
            "timestamp" => MetadataKey::Timestamp,
            "timestamp-type" => MetadataKey::TimestampType,
            "key" => MetadataKey::Key,
            "headers" => MetadataKey::Headers,
            "leader-epoch" => {
                return Err(ConnectorError::Unsupported(format!(
                    "the kafka metadata column '{key}' (not implemented yet)"
                )));
            }
            other => {
                return Err(ConnectorError::InvalidOption(format!(
                    "connector 'kafka' has no metadata key '{other}'"
                )));
            }
        })
    }

    /// The key's values of `records`, as `target`.
    fn values(
        self,
        topic: &str,
        records: &[&KafkaRecord],
        target: &DataType,
    ) -> ConnectorResult<ArrayRef> {
        let natural: ArrayRef = match self {
            MetadataKey::Topic => Arc::new(StringArray::from(vec![topic; records.len()])),
            MetadataKey::Partition => Arc::new(Int32Array::from_iter_values(
                records.iter().map(|r| r.partition),
            )),
            MetadataKey::Offset => Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| r.offset),
            )),
            MetadataKey::Timestamp => Arc::new(
                TimestampMillisecondArray::from_iter(records.iter().map(|r| r.timestamp_ms))
                    .with_timezone("UTC"),
            ),
            MetadataKey::TimestampType => Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| match r.timestamp_type {
                    TimestampType::None => "NoTimestampType",
                    TimestampType::CreateTime => "CreateTime",
                    TimestampType::LogAppendTime => "LogAppendTime",
                }),
            )),
            MetadataKey::Key => Arc::new(BinaryArray::from_iter(
                records.iter().map(|r| r.key.as_deref()),
            )),
            MetadataKey::Headers => {
                let headers: Vec<&(String, Option<Vec<u8>>)> =
                    records.iter().flat_map(|r| &r.headers).collect();
                let keys = StringArray::from_iter_values(headers.iter().map(|(k, _)| k));
                let values = BinaryArray::from_iter(headers.iter().map(|(_, v)| v.as_deref()));
                let pairs = StructArray::new(
                    header_fields(),
                    vec![Arc::new(keys) as ArrayRef, Arc::new(values)],
                    None,
                );
                let DataType::List(item) = headers_type() else {
                    unreachable!("headers are a list")
                };
                Arc::new(ListArray::new(
                    item,
                    OffsetBuffer::from_lengths(records.iter().map(|r| r.headers.len())),
                    Arc::new(pairs),
                    None,
                ))
            }
        };
        Ok(cast(&natural, target)?)
    }
}

/// Where one column of a reader's batches comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// This column of the decoded values.
    Value(usize),
    /// This column of the decoded keys.
    Key(usize),
    Metadata(MetadataKey),
}

/// The columns of a reader's batches: the declared columns the query reads, each from the
/// decoded values or from the messages' metadata.
pub(crate) struct Layout {
    /// The declared columns that messages' values hold (the metadata columns left out).
    pub value_schema: SchemaRef,
    /// The columns of `value_schema` to decode; `None` for all of them.
    pub value_projection: Option<Vec<usize>>,
    /// The schema of the decoded values.
    pub decoded: SchemaRef,
    /// The schema of the batches the reader yields.
    pub output: SchemaRef,
    /// The declared columns the message keys hold (`key.fields` with
    /// `value.fields-include = 'EXCEPT_KEY'`), in key order; `None` when keys are not read.
    pub key_schema: Option<SchemaRef>,
    columns: Vec<Source>,
    has_metadata: bool,
}

impl Layout {
    /// The layout of a reader of a source declared `declared`, with these metadata columns,
    /// of which the query reads `projection` (`None`: every column).
    /// `key_columns` are the declared columns read from the message keys instead of the
    /// values (`EXCEPT_KEY`), in key order.
    pub(crate) fn new(
        declared: &SchemaRef,
        projection: Option<&[usize]>,
        metadata: &[MetadataColumn],
        key_columns: &[usize],
    ) -> ConnectorResult<Self> {
        let key_of = |column: usize| metadata.iter().find(|m| m.column == column);
        let value_columns: Vec<usize> = (0..declared.fields().len())
            .filter(|c| key_of(*c).is_none() && !key_columns.contains(c))
            .collect();
        let key_schema = if key_columns.is_empty() {
            None
        } else {
            Some(Arc::new(declared.project(key_columns)?))
        };
        let value_schema = Arc::new(declared.project(&value_columns)?);
        let read: Vec<usize> = match projection {
            Some(columns) => columns.to_vec(),
            None => (0..declared.fields().len()).collect(),
        };
        let output = Arc::new(declared.project(&read)?);
        // The value columns the query reads, as indices into `value_schema`; with none (only
        // metadata, or `count(*)`), every value column is decoded so that malformed values
        // are still told apart, then dropped.
        let wanted: Vec<usize> = read
            .iter()
            .filter_map(|c| value_columns.iter().position(|v| v == c))
            .collect();
        let all =
            wanted.len() == value_columns.len() && wanted.iter().enumerate().all(|(i, w)| i == *w);
        let value_projection = (!wanted.is_empty() && !all).then_some(wanted);
        let decoded = match &value_projection {
            Some(columns) => Arc::new(value_schema.project(columns)?),
            None => Arc::clone(&value_schema),
        };
        let mut columns = Vec::with_capacity(read.len());
        for c in &read {
            if let Some(k) = key_columns.iter().position(|k| k == c) {
                columns.push(Source::Key(k));
                continue;
            }
            match key_of(*c) {
                Some(m) => columns.push(Source::Metadata(MetadataKey::parse(&m.key)?)),
                None => {
                    let v = value_columns
                        .iter()
                        .position(|v| v == c)
                        .expect("a value column");
                    let at = match &value_projection {
                        Some(columns) => columns.iter().position(|w| *w == v).expect("read"),
                        None => v,
                    };
                    columns.push(Source::Value(at));
                }
            }
        }
        Ok(Self {
            value_schema,
            value_projection,
            decoded,
            output,
            key_schema,
            columns,
            has_metadata: !metadata.is_empty(),
        })
    }

    /// The layout of an upsert source's reader: every column may be NULL (a delete has
    /// only its key), and [`with_upsert_flags`](Self::with_upsert_flags) appends the flag.
    pub(crate) fn for_upserts(mut self) -> Self {
        let fields: Vec<Field> = self
            .output
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        self.output = Arc::new(Schema::new(fields));
        self
    }

    /// An upsert source's batch: `batch` (assembled by this layout) and, last, the
    /// [`UPSERT_FLAG`] column `upserts` (true: upsert, false: delete).
    pub(crate) fn with_upsert_flags(
        &self,
        batch: RecordBatch,
        upserts: BooleanArray,
    ) -> ConnectorResult<RecordBatch> {
        let mut fields: Vec<Field> = self
            .output
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(UPSERT_FLAG, DataType::Boolean, false));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(upserts));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?)
    }

    /// Whether batches need to know the message each decoded row came from.
    pub(crate) fn needs_alignment(&self) -> bool {
        self.has_metadata || self.key_schema.is_some()
    }

    /// The reader's batch from the decoded values (and keys) of `records`: `kept` are the
    /// indices of the records whose values (and keys) decoded (every record when `None`), in
    /// order; `decoded` and `keys` hold exactly their rows.
    pub(crate) fn assemble(
        &self,
        topic: &str,
        decoded: RecordBatch,
        keys: Option<&RecordBatch>,
        records: &[KafkaRecord],
        kept: Option<&[usize]>,
    ) -> ConnectorResult<RecordBatch> {
        if !self.has_metadata
            && self.key_schema.is_none()
            && self.columns.len() == decoded.num_columns()
        {
            // The decoded values are the batch (the usual case).
            return Ok(decoded.with_schema(Arc::clone(&self.output))?);
        }
        let rows: Vec<&KafkaRecord> = match kept {
            Some(kept) => kept.iter().map(|i| &records[*i]).collect(),
            None => records.iter().collect(),
        };
        let columns = self
            .columns
            .iter()
            .zip(self.output.fields())
            .map(|(source, field)| match source {
                Source::Value(i) => Ok(Arc::clone(decoded.column(*i))),
                Source::Key(i) => keys
                    .map(|k| Arc::clone(k.column(*i)))
                    .ok_or_else(|| ConnectorError::Io("kafka: keys were not decoded".to_string())),
                Source::Metadata(key) => key.values(topic, &rows, field.data_type()),
            })
            .collect::<ConnectorResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.output),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(decoded.num_rows())),
        )?)
    }
}
