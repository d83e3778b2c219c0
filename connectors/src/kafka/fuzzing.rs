//! An entry point for the fuzz harness (`sql-tests/fuzz`, target `kafka`): decodes message
//! values the way a source's reader does, without a broker. Not part of the connector's API:
//! it exists so that the decoders in [`super::decode`] can be fed arbitrary bytes directly.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{ConnectorOptions, ConnectorResult, SourceMetrics};

use super::client::{KafkaRecord, TimestampType};
use super::decode::{ValueDecoder, check_schema};
use super::options::KafkaOptions;

/// Decodes `values` (`None`: a tombstone) as the values of a source declared with `schema` and
/// `options` (which must name a `topic` and a `format`), one batch per call as a poll would.
/// Returns the rows and the number of values counted as malformed.
pub fn decode_values(
    schema: &SchemaRef,
    options: &ConnectorOptions,
    values: &[Option<Vec<u8>>],
    batch_size: usize,
) -> ConnectorResult<(RecordBatch, u64)> {
    let parsed = KafkaOptions::parse(options)?;
    check_schema(schema, &parsed.format)?;
    let metrics = Arc::new(SourceMetrics::default());
    let decoder = ValueDecoder::new(
        &parsed.topic,
        &parsed.format,
        schema,
        None,
        Arc::clone(schema),
        Arc::clone(&metrics),
        batch_size,
    );
    let records: Vec<KafkaRecord> = values
        .iter()
        .enumerate()
        .map(|(offset, payload)| KafkaRecord {
            partition: 0,
            offset: offset as i64,
            payload: payload.clone(),
            key: None,
            timestamp_ms: None,
            timestamp_type: TimestampType::None,
            headers: Vec::new(),
        })
        .collect();
    let batch = decoder.decode(&records)?;
    Ok((batch, metrics.malformed()))
}
