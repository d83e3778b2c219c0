//! Target `kafka`: the Kafka source's message decoders (connectors/src/kafka/decode.rs),
//! without a broker. Each line of the input is one message value (a line `~` is a tombstone);
//! the format is `json` when the first value starts with `{` or `[`, `raw` when the input's
//! length is a multiple of 7, else `csv`; the schema is declared from the first value.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use eddy_connectors::kafka::fuzzing::decode_values;
use eddy_engine::connector::ConnectorOptions;

use crate::infer;

/// At most this many messages per poll (more lines are decoded in further polls).
const POLL: usize = 16;

pub fn run(input: &[u8]) {
    let values: Vec<Option<Vec<u8>>> = input
        .split(|b| *b == b'\n')
        .map(|line| (line != b"~").then(|| line.to_vec()))
        .collect();
    let first = values
        .first()
        .and_then(|v| v.as_deref())
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let (format, schema) = if input.len().is_multiple_of(7) {
        let data_type = if input.len().is_multiple_of(2) {
            DataType::Utf8
        } else {
            DataType::Binary
        };
        (
            "raw",
            Arc::new(Schema::new(vec![Field::new("v", data_type, true)])),
        )
    } else if first.starts_with('{') || first.starts_with('[') {
        ("json", infer::json_schema(std::iter::once(first.as_ref())))
    } else {
        let delimiter = infer::delimiter(&first);
        ("csv", infer::csv_schema(None, Some(&first), delimiter))
    };
    let options: ConnectorOptions = [
        ("connector", "kafka"),
        ("topic", "t"),
        ("properties.bootstrap.servers", "127.0.0.1:9092"),
        ("format", format),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for poll in values.chunks(POLL) {
        if let Ok((batch, malformed)) = decode_values(&schema, &options, poll, 4) {
            assert_eq!(
                batch.schema(),
                schema,
                "a batch without the declared schema"
            );
            assert!(
                batch.num_rows() as u64 + malformed <= poll.len() as u64,
                "more rows and malformed values ({} + {malformed}) than messages ({})",
                batch.num_rows(),
                poll.len()
            );
        }
    }
}
