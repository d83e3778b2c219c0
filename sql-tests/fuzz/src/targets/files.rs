//! Targets `csv`, `json` and `parquet`: the file source's decoders. The input is written as a
//! file in the scratch directory and read to its end through the `file` connector, as a
//! query's source would read it, with a schema declared from the input's first record
//! ([`crate::infer`]). Options vary with the input: CSV's delimiter, header and NULL text come
//! from its first line; the input's length picks a projection, a restored start row and the
//! number of decoding threads. Every batch must have the projected schema.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use eddy_connectors::file::FileConnector;
use eddy_engine::connector::{
    ConnectorOptions, SourceConnector, SourceContext, SourceMetrics, SourceSplit,
};
use futures::StreamExt;

use crate::infer;
use crate::runtime::{runtime, scratch_dir};

pub fn run_csv(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let delimiter = infer::delimiter(first);
    let header = first
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && !first.starts_with("true")
        && !first.starts_with("false");
    let sample = if header { lines.next() } else { Some(first) };
    let schema = infer::csv_schema(header.then_some(first), sample, delimiter);
    let mut options = vec![
        ("format", "csv".to_string()),
        ("header", header.to_string()),
        ("delimiter", delimiter.to_string()),
    ];
    if text.contains("NULL") {
        options.push(("null_value", "NULL".to_string()));
    }
    read_file(input, "csv", &schema, &options);
}

pub fn run_json(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let schema = infer::json_schema(text.lines());
    read_file(input, "json", &schema, &[("format", "json".to_string())]);
}

pub fn run_parquet(input: &[u8]) {
    // The declared schema is the file's own when its footer reads (what a user would declare);
    // a fixed one otherwise, so that a broken file still reaches the reader.
    // The parquet crate panics on some corrupt footers; Eddy's reader guards against that
    // (connectors/src/file/parquet.rs), the harness's own look at the footer does too.
    let footer = std::panic::catch_unwind(|| {
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(input))
            .map(|b| Arc::clone(b.schema()))
    });
    let schema = match footer {
        Ok(Ok(schema)) => schema,
        _ => infer::json_schema(std::iter::empty()),
    };
    read_file(
        input,
        "parquet",
        &schema,
        &[("format", "parquet".to_string())],
    );
}

/// Writes `input` as `input.<extension>` and reads it to the end with `options`.
fn read_file(input: &[u8], extension: &str, schema: &SchemaRef, options: &[(&str, String)]) {
    let path = scratch_dir().join(format!("input.{extension}"));
    if let Err(e) = std::fs::write(&path, input) {
        panic!("harness: cannot write {}: {e}", path.display());
    }
    let mut options: ConnectorOptions = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    options.insert("path".to_string(), path.display().to_string());
    let connector = FileConnector::default();
    if connector.validate(schema, &options).is_err() {
        return;
    }
    let columns = schema.fields().len();
    let projection = (input.len().is_multiple_of(3) && columns > 1)
        .then(|| (0..columns).rev().step_by(2).collect::<Vec<_>>());
    let expected = match &projection {
        Some(p) => match schema.project(p) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("harness: projection: {e}"),
        },
        None => Arc::clone(schema),
    };
    let ctx = SourceContext {
        source_name: "fuzz".to_string(),
        schema: Arc::clone(schema),
        projection,
        options,
        metrics: Arc::new(SourceMetrics::default()),
        batch_size: 7,
        split: SourceSplit::WHOLE,
        parallelism: 1 + input.len() % 2,
        start_row: if input.len().is_multiple_of(5) { 1 } else { 0 },
        start_position: None,
        metadata: Vec::new(),
    };
    let Ok(rt) = runtime() else {
        panic!("harness: no tokio runtime");
    };
    rt.block_on(async {
        let Ok(reader) = connector.open(ctx) else {
            return;
        };
        let mut stream = reader.stream;
        while let Some(item) = stream.next().await {
            match item {
                Ok(batch) => assert_eq!(
                    batch.schema(),
                    expected,
                    "a batch without the projected schema"
                ),
                Err(_) => break,
            }
        }
    });
}
