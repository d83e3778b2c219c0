//! Tests of the file connector over small files written to a fresh temporary folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::ArrowWriter;
use eddy_engine::connector::{
    BatchStream, ConnectorError, ConnectorOptions, ConnectorResult, DeadLetterSink, MalformedRow,
    OnError, SourceConnector, SourceContext, SourceMetrics,
};
use futures::StreamExt;

use super::FileConnector;
use super::csv::{CsvDecoder, CsvFileState};
use super::decode::{DecodeConfig, TextBatchBuilder};
use super::options::CsvOptions;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A folder under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "eddy-file-{name}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    fn append(&self, name: &str, contents: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.0.join(name))
            .unwrap();
        file.write_all(contents.as_bytes()).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, data_type)| Field::new(*name, data_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn open(
    schema: &SchemaRef,
    options: ConnectorOptions,
    batch_size: usize,
) -> (BatchStream, bool, Arc<SourceMetrics>) {
    open_projected(schema, options, batch_size, None)
}

fn open_projected(
    schema: &SchemaRef,
    options: ConnectorOptions,
    batch_size: usize,
    projection: Option<Vec<usize>>,
) -> (BatchStream, bool, Arc<SourceMetrics>) {
    open_at(schema, options, batch_size, projection, 0)
}

fn open_at(
    schema: &SchemaRef,
    options: ConnectorOptions,
    batch_size: usize,
    projection: Option<Vec<usize>>,
    start_row: u64,
) -> (BatchStream, bool, Arc<SourceMetrics>) {
    open_with(
        schema,
        options,
        batch_size,
        projection,
        start_row,
        SourceMetrics::default(),
        1,
    )
}

/// Opens a reader of a query with `parallelism` whose malformed rows go to `metrics` (and
/// what its policy says).
fn open_with(
    schema: &SchemaRef,
    options: ConnectorOptions,
    batch_size: usize,
    projection: Option<Vec<usize>>,
    start_row: u64,
    metrics: SourceMetrics,
    parallelism: usize,
) -> (BatchStream, bool, Arc<SourceMetrics>) {
    FileConnector::default().validate(schema, &options).unwrap();
    let metrics = Arc::new(metrics);
    let reader = FileConnector::default()
        .open(SourceContext {
            source_name: "test".to_string(),
            start_row,
            start_position: None,
            metadata: Vec::new(),
            schema: Arc::clone(schema),
            options,
            metrics: Arc::clone(&metrics),
            batch_size,
            split: eddy_engine::connector::SourceSplit::WHOLE,
            parallelism,
            projection,
        })
        .unwrap();
    (reader.stream, reader.bounded, metrics)
}

/// Reads the columns `projection` of a bounded source to its end.
async fn read_projected(
    schema: &SchemaRef,
    options: ConnectorOptions,
    projection: Vec<usize>,
) -> (Vec<RecordBatch>, Arc<SourceMetrics>) {
    let expected = Arc::new(schema.project(&projection).unwrap());
    let (stream, _, metrics) = open_projected(schema, options, 1024, Some(projection));
    let batches = tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("bounded stream ends")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    for batch in &batches {
        assert_eq!(
            batch.schema(),
            expected,
            "every batch has the projected schema"
        );
    }
    (batches, metrics)
}

#[tokio::test]
async fn csv_decodes_only_the_projected_columns() {
    let dir = TempDir::new("csv-projection");
    // Row 2 has a bad number in `auction`, which the projection does not read; row 3 has too
    // few fields, which is malformed whatever is read.
    let path = dir.write(
        "bids.csv",
        "auction,channel,date_time
1,web,2023-05-06T16:51:00
abc,app,2023-05-06T16:51:01
3,x
",
    );
    let opts = || options(&[("path", &path), ("format", "csv"), ("header", "true")]);
    let (batches, metrics) = read_projected(&bids_schema(), opts(), vec![2, 1]).await;
    assert_eq!(
        rows(&batches),
        ["2023-05-06T16:51:00|web", "2023-05-06T16:51:01|app"]
    );
    assert_eq!(metrics.malformed(), 1, "only the short row");
    // Reading `auction` too makes row 2 malformed.
    let (batches, metrics) = read_projected(&bids_schema(), opts(), vec![0]).await;
    assert_eq!(rows(&batches), ["1"]);
    assert_eq!(metrics.malformed(), 2);
}

#[tokio::test]
async fn json_and_parquet_decode_only_the_projected_columns() {
    let dir = TempDir::new("json-projection");
    let path = dir.write(
        "bids.json",
        "{\"auction\": 1, \"channel\": \"web\", \"date_time\": \"2023-05-06T16:51:00\"}\n",
    );
    let (batches, _) = read_projected(
        &bids_schema(),
        options(&[("path", &path), ("format", "json")]),
        vec![1],
    )
    .await;
    assert_eq!(rows(&batches), ["web"]);

    let path = dir.join("data.parquet");
    write_parquet(&path);
    let s = schema(&[
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("ts", ts_ms()),
    ]);
    let (batches, _) = read_projected(&s, options(&[("path", &path)]), vec![2, 0]).await;
    assert_eq!(
        rows(&batches),
        [
            "2023-05-06T16:51:00|1",
            "2023-05-06T16:51:01|2",
            "2023-05-06T16:51:02|3"
        ]
    );
}

/// Reads a bounded source to its end.
async fn read_all(
    schema: &SchemaRef,
    options: ConnectorOptions,
) -> (Vec<RecordBatch>, Arc<SourceMetrics>) {
    let (stream, bounded, metrics) = open(schema, options, 1024);
    assert!(bounded);
    let batches = tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("bounded stream ends")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    for batch in &batches {
        assert_eq!(
            &batch.schema(),
            schema,
            "every batch has the declared schema"
        );
    }
    (batches, metrics)
}

/// Each row as `a|b|c`, NULL spelled `NULL`.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(row) {
                        "NULL".to_string()
                    } else {
                        array_value_to_string(c, row).unwrap()
                    }
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

fn bids_schema() -> SchemaRef {
    schema(&[
        ("auction", DataType::Int64),
        ("channel", DataType::Utf8),
        ("date_time", ts_ms()),
    ])
}

#[tokio::test]
async fn csv_with_header() {
    let dir = TempDir::new("header");
    let path = dir.write(
        "bids.csv",
        "auction,channel,date_time\n1,web,2023-05-06T16:51:00\n2,app,2023-05-06 16:51:01.5\n",
    );
    let (batches, metrics) = read_all(
        &bids_schema(),
        options(&[("path", &path), ("format", "csv"), ("header", "true")]),
    )
    .await;
    assert_eq!(
        rows(&batches),
        ["1|web|2023-05-06T16:51:00", "2|app|2023-05-06T16:51:01.500"]
    );
    assert_eq!(metrics.rows(), 2);
    assert_eq!(metrics.malformed(), 0);
}

#[tokio::test]
async fn csv_without_header_reads_the_first_line_and_a_last_line_without_newline() {
    let dir = TempDir::new("noheader");
    let path = dir.write(
        "bids.csv",
        "1,web,2023-05-06T16:51:00\n2,app,2023-05-06T16:52:00",
    );
    // The format comes from the extension.
    let (batches, metrics) = read_all(&bids_schema(), options(&[("path", &path)])).await;
    assert_eq!(
        rows(&batches),
        ["1|web|2023-05-06T16:51:00", "2|app|2023-05-06T16:52:00"]
    );
    assert_eq!(metrics.malformed(), 0);
}

#[tokio::test]
async fn csv_delimiters_quotes_crlf_and_bom() {
    let dir = TempDir::new("delim");
    let semi = dir.write(
        "semi.csv",
        "\u{feff}1;\"a;b\";2023-05-06T16:51:00\r\n2;\"say \"\"hi\"\"\";2023-05-06T16:51:01\r\n",
    );
    let pipe = dir.write("pipe.csv", "1|x,y|2023-05-06T16:51:00\n");
    let (batches, metrics) = read_all(
        &bids_schema(),
        options(&[("path", &semi), ("delimiter", ";")]),
    )
    .await;
    assert_eq!(
        rows(&batches),
        [
            "1|a;b|2023-05-06T16:51:00",
            "2|say \"hi\"|2023-05-06T16:51:01"
        ]
    );
    assert_eq!(metrics.malformed(), 0);
    let (batches, _) = read_all(
        &bids_schema(),
        options(&[("path", &pipe), ("csv.field-delimiter", "|")]),
    )
    .await;
    assert_eq!(rows(&batches), ["1|x,y|2023-05-06T16:51:00"]);
}

#[tokio::test]
async fn null_value_rule() {
    let dir = TempDir::new("nulls");
    let path = dir.write("n.csv", "NULL,NULL,NULL\n,,\n 7 ,,2023-05-06T16:51:00\n");
    let s = bids_schema();

    // Without null_value: empty is NULL only outside string columns; `NULL` is text.
    let (batches, metrics) = read_all(&s, options(&[("path", &path)])).await;
    assert_eq!(rows(&batches), ["NULL||NULL", "7||2023-05-06T16:51:00"]);
    assert_eq!(metrics.malformed(), 1, "NULL is not a BIGINT");

    // null_value = 'NULL': the text is NULL in every column.
    let (batches, metrics) =
        read_all(&s, options(&[("path", &path), ("null_value", "NULL")])).await;
    assert_eq!(
        rows(&batches),
        ["NULL|NULL|NULL", "NULL||NULL", "7||2023-05-06T16:51:00"]
    );
    assert_eq!(metrics.malformed(), 0);

    // null_value = '': empty fields are NULL in string columns too, and `NULL` is text again.
    let (batches, metrics) =
        read_all(&s, options(&[("path", &path), ("csv.null-literal", "")])).await;
    assert_eq!(
        rows(&batches),
        ["NULL|NULL|NULL", "7|NULL|2023-05-06T16:51:00"]
    );
    assert_eq!(metrics.malformed(), 1);
}

#[tokio::test]
async fn malformed_rows_are_counted_and_skipped() {
    let dir = TempDir::new("malformed");
    let path = dir.write(
        "bad.csv",
        "1,a,2023-05-06T16:51:00\n\
         x,b,2023-05-06T16:51:00\n\
         3,c,yesterday\n\
         4,d\n\
         \n\
         5,e,2023-05-06T16:51:00,extra\n\
         6,f,2023-05-06T16:51:06\n",
    );
    let (batches, metrics) = read_all(&bids_schema(), options(&[("path", &path)])).await;
    assert_eq!(
        rows(&batches),
        ["1|a|2023-05-06T16:51:00", "6|f|2023-05-06T16:51:06"]
    );
    assert_eq!(metrics.rows(), 2);
    assert_eq!(metrics.malformed(), 4);
    let first = metrics.first_error().unwrap();
    assert!(first.starts_with(&format!("{path}:2: ")), "{first}");
    assert!(
        first.contains("'x'") && first.contains("auction"),
        "{first}"
    );
}

#[tokio::test]
async fn malformed_line_numbers_follow_blank_lines_and_multiline_fields() {
    let dir = TempDir::new("lines");
    let path = dir.write("l.csv", "1,\"two\nlines\",2023-05-06T16:51:00\n\n\n4,d\n");
    let (batches, metrics) = read_all(&bids_schema(), options(&[("path", &path)])).await;
    assert_eq!(rows(&batches), ["1|two\nlines|2023-05-06T16:51:00"]);
    assert_eq!(
        metrics.first_error().unwrap(),
        format!("{path}:5: expected 3 fields, found 2")
    );
}

#[tokio::test]
async fn timestamps_booleans_decimals_and_dates() {
    let dir = TempDir::new("types");
    let path = dir.write(
        "t.csv",
        "2023-05-06T16:51:00,2023-05-06 16:51:00.123456,2023-05-06T16:51:00Z,true,11.5,2023-05-06\n\
         2023-05-06 16:51:00.5,2023-05-06T16:51:00,2023-05-06 18:51:00+02:00,F,11,2023-05-07\n\
         2023-05-06 16:51:00,2023-05-06T16:51:00,2023-05-06T16:51:00,1,0.25,2023-05-08\n\
         2023-05-06 16:51:00,2023-05-06T16:51:00,2023-05-06T16:51:00,maybe,1,2023-05-08\n",
    );
    let s = schema(&[
        ("a", ts_ms()),
        ("b", DataType::Timestamp(TimeUnit::Microsecond, None)),
        (
            "c",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ),
        ("d", DataType::Boolean),
        ("e", DataType::Decimal128(10, 2)),
        ("f", DataType::Date32),
    ]);
    let (batches, metrics) = read_all(&s, options(&[("path", &path)])).await;
    assert_eq!(
        rows(&batches),
        [
            "2023-05-06T16:51:00|2023-05-06T16:51:00.123456|2023-05-06T16:51:00Z|true|11.50|2023-05-06",
            "2023-05-06T16:51:00.500|2023-05-06T16:51:00|2023-05-06T16:51:00Z|false|11.00|2023-05-07",
            "2023-05-06T16:51:00|2023-05-06T16:51:00|2023-05-06T16:51:00Z|true|0.25|2023-05-08",
        ]
    );
    assert_eq!(metrics.malformed(), 1, "'maybe' is not a boolean");
}

#[tokio::test]
async fn not_null_columns_reject_nulls() {
    let dir = TempDir::new("notnull");
    let path = dir.write("n.csv", "1,a\n,b\n3,c\n");
    let s = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8View, true),
    ]));
    let (batches, metrics) = read_all(&s, options(&[("path", &path)])).await;
    assert_eq!(rows(&batches), ["1|a", "3|c"]);
    assert_eq!(metrics.malformed(), 1);
    assert!(
        metrics
            .first_error()
            .unwrap()
            .contains(":2: column 'id' is NOT NULL")
    );
}

#[tokio::test]
async fn batches_hold_at_most_batch_size_rows() {
    let dir = TempDir::new("batches");
    let lines: String = (1..=10).map(|i| format!("{i}\n")).collect();
    let path = dir.write("n.csv", &lines);
    let s = schema(&[("n", DataType::Int32)]);
    let (stream, _, metrics) = open(&s, options(&[("path", &path)]), 3);
    let batches: Vec<RecordBatch> = stream.map(|b| b.unwrap()).collect().await;
    let sizes: Vec<usize> = batches.iter().map(|b| b.num_rows()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(metrics.rows(), 10);
}

#[tokio::test]
async fn json_lines() {
    let dir = TempDir::new("json");
    let path = dir.write(
        "events.jsonl",
        "{\"auction\": 1, \"channel\": \"web\", \"date_time\": \"2023-05-06T16:51:00\"}\n\
         {\"auction\": 2, \"date_time\": \"2023-05-06 16:51:01\"}\n\
         \n\
         {\"auction\": 3, \"channel\": \n\
         [1, 2]\n\
         {\"AUCTION\": \"4\", \"Channel\": {\"k\": [1]}, \"date_time\": null, \"other\": true}\n\
         {\"auction\": 5.5, \"channel\": 5, \"date_time\": \"2023-05-06T16:51:05\"}\n",
    );
    let (batches, metrics) = read_all(&bids_schema(), options(&[("path", &path)])).await;
    assert_eq!(
        rows(&batches),
        [
            "1|web|2023-05-06T16:51:00",
            "2|NULL|2023-05-06T16:51:01",
            "4|{\"k\":[1]}|NULL"
        ]
    );
    // The cut-off object, the array and 5.5 as a BIGINT.
    assert_eq!(metrics.malformed(), 3);
    assert!(
        metrics
            .first_error()
            .unwrap()
            .starts_with(&format!("{path}:4: invalid JSON"))
    );
}

fn write_parquet(path: &str) {
    let file_schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("unused", DataType::Int32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3])),
        Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            1_683_391_860_000_000,
            1_683_391_861_000_000,
            1_683_391_862_000_000,
        ])),
        Arc::new(Int32Array::from(vec![0, 0, 0])),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&file_schema), columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, file_schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test]
async fn parquet_round_trip_by_name_with_casts() {
    let dir = TempDir::new("parquet");
    let path = dir.join("data.parquet");
    write_parquet(&path);
    // Declared in another order and case, with wider types.
    let s = schema(&[
        ("TS", ts_ms()),
        ("name", DataType::Utf8View),
        ("id", DataType::Int64),
    ]);
    let (batches, metrics) = read_all(&s, options(&[("path", &path)])).await;
    assert_eq!(
        rows(&batches),
        [
            "2023-05-06T16:51:00|a|1",
            "2023-05-06T16:51:01|NULL|2",
            "2023-05-06T16:51:02|c|3"
        ]
    );
    assert_eq!(metrics.rows(), 3);

    let missing = schema(&[("id", DataType::Int64), ("price", DataType::Int64)]);
    let err = FileConnector::default()
        .validate(&missing, &options(&[("path", &path)]))
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::InvalidOption(m) if m.contains("no column 'price'")),
        "{err}"
    );
    let err = FileConnector::default()
        .validate(&s, &options(&[("path", &path), ("header", "true")]))
        .unwrap_err();
    assert!(
        err.to_string().contains("applies only to format 'csv'"),
        "{err}"
    );
    let binary = schema(&[("name", DataType::Binary)]);
    FileConnector::default()
        .validate(&binary, &options(&[("path", &path)]))
        .unwrap();
}

#[tokio::test]
async fn parquet_missing_column_fails_the_stream() {
    let dir = TempDir::new("parquet-missing");
    let folder = dir.path().join("p");
    std::fs::create_dir(&folder).unwrap();
    let pattern = format!("{}/*.parquet", folder.display());
    let s = schema(&[("price", DataType::Int64)]);
    // Nothing matches yet, so CREATE succeeds; the first query finds the column missing.
    let (stream, _, _) = open(&s, options(&[("path", &pattern)]), 16);
    write_parquet(&format!("{}/a.parquet", folder.display()));
    let results: Vec<_> = stream.collect().await;
    assert_eq!(results.len(), 1);
    let err = results.into_iter().next().unwrap().unwrap_err();
    assert!(err.to_string().contains("no column 'price'"), "{err}");
}

#[tokio::test]
async fn folder_and_glob_read_files_in_name_order() {
    let dir = TempDir::new("order");
    dir.write("b.csv", "2\n3\n");
    dir.write("a.csv", "1\n");
    dir.write("c.csv", "4\n");
    dir.write(".hidden.csv", "99\n");
    dir.write("notes.txt", "98\n");
    std::fs::create_dir(dir.path().join("sub.csv")).unwrap();
    let s = schema(&[("n", DataType::Int64)]);

    let folder = dir.path().display().to_string();
    let (batches, _) = read_all(&s, options(&[("path", &folder), ("format", "csv")])).await;
    assert_eq!(rows(&batches), ["1", "2", "3", "4", "98"]);

    let glob = dir.join("*.csv");
    let (batches, _) = read_all(&s, options(&[("path", &glob)])).await;
    assert_eq!(rows(&batches), ["1", "2", "3", "4"]);

    // A glob that matches nothing is a valid, empty source.
    let none = dir.join("*.json");
    let (batches, _) = read_all(&s, options(&[("path", &none)])).await;
    assert!(batches.is_empty());

    // A folder of mixed extensions needs an explicit format.
    let err = FileConnector::default()
        .validate(&s, &options(&[("path", &folder)]))
        .unwrap_err();
    assert!(err.to_string().contains("cannot infer the format"), "{err}");
}

/// The next batch's rows, failing the test after a timeout.
async fn next_rows(stream: &mut BatchStream) -> Vec<String> {
    let batch = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("a batch arrives in time")
        .expect("the stream goes on")
        .unwrap();
    rows(&[batch])
}

#[tokio::test]
async fn follow_picks_up_appended_lines_and_new_files() {
    let dir = TempDir::new("follow");
    dir.write("a.csv", "1\n");
    let s = schema(&[("n", DataType::Int64)]);
    let glob = dir.join("*.csv");
    let (mut stream, bounded, metrics) =
        open(&s, options(&[("path", &glob), ("follow", "true")]), 1024);
    assert!(!bounded);
    assert_eq!(next_rows(&mut stream).await, ["1"]);

    // Only complete lines are read: `3` waits for its line break.
    dir.append("a.csv", "2\n3");
    assert_eq!(next_rows(&mut stream).await, ["2"]);
    dir.append("a.csv", "\nx\n");
    assert_eq!(next_rows(&mut stream).await, ["3"]);

    dir.write("b.csv", "4\n5\n");
    assert_eq!(next_rows(&mut stream).await, ["4", "5"]);
    assert_eq!(metrics.rows(), 5);
    assert_eq!(metrics.malformed(), 1);

    // Nothing more: the stream waits rather than ends.
    let idle = tokio::time::timeout(Duration::from_millis(600), stream.next()).await;
    assert!(idle.is_err(), "a following source does not end");
}

#[tokio::test]
async fn follow_a_single_file() {
    let dir = TempDir::new("follow-file");
    let path = dir.write("log.jsonl", "");
    let s = schema(&[("n", DataType::Int64)]);
    let (mut stream, _, _) = open(&s, options(&[("path", &path), ("follow", "true")]), 1024);
    dir.append("log.jsonl", "{\"n\": 1}\n{\"n\": 2}\n");
    let mut seen = next_rows(&mut stream).await;
    if seen.len() < 2 {
        seen.extend(next_rows(&mut stream).await);
    }
    assert_eq!(seen, ["1", "2"]);
}

#[test]
fn option_errors() {
    let s = bids_schema();
    let dir = TempDir::new("options");
    let path = dir.write("bids.csv", "");
    let p = path.as_str();
    let txt = dir.write("bids.txt", "");

    let err = FileConnector::default()
        .validate(&s, &options(&[("path", p), ("scan.startup.mode", "x")]))
        .unwrap_err();
    let ConnectorError::InvalidOption(message) = &err else {
        panic!("{err}")
    };
    assert!(message.contains("'scan.startup.mode'"), "{message}");
    assert!(
        message.contains("path") && message.contains("null_value"),
        "{message}"
    );

    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "'path' is required"),
        (
            &[("path", "/definitely/not/here.csv")],
            "no file matches path '/definitely/not/here.csv'",
        ),
        (&[("path", p), ("format", "avro")], "'avro'"),
        (&[("path", p), ("header", "yes")], "'header'"),
        (&[("path", p), ("delimiter", ";;")], "one ASCII character"),
        (
            &[
                ("path", p),
                ("header", "true"),
                ("csv.ignore-first-line", "true"),
            ],
            "give only one",
        ),
        (
            &[("path", p), ("format", "json"), ("null_value", "NULL")],
            "only to format 'csv'",
        ),
        (&[("path", txt.as_str())], "cannot infer the format"),
        (&[("path", "data/[")], "invalid glob"),
    ];
    for (pairs, expected) in cases {
        let err = FileConnector::default()
            .validate(&s, &options(pairs))
            .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidOption(m) if m.contains(expected)),
            "{pairs:?}: {err}"
        );
    }

    // Flink's spelling of the connector, options and a quoted-key `connector` entry.
    FileConnector::default()
        .validate(
            &s,
            &options(&[
                ("connector", "filesystem"),
                ("path", p),
                ("format", "csv"),
                ("csv.ignore-first-line", "true"),
                ("csv.quote-character", "'"),
            ]),
        )
        .unwrap();
}

#[test]
fn unsupported_types() {
    let dir = TempDir::new("types-unsupported");
    let path = dir.write("a.csv", "");
    for data_type in [
        DataType::Binary,
        DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
        DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
    ] {
        let s = schema(&[("c", data_type.clone())]);
        let err = FileConnector::default()
            .validate(&s, &options(&[("path", &path)]))
            .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Unsupported(m) if m.contains("column 'c'")),
            "{data_type}: {err}"
        );
    }
}

#[test]
fn csv_region_keeps_an_unfinished_quoted_record() {
    let s = schema(&[("n", DataType::Int64), ("t", DataType::Utf8)]);
    let config = DecodeConfig {
        schema: s,
        null_value: None,
        metrics: Default::default(),
        batch_size: 100,
    };
    let decoder = CsvDecoder::new(&CsvOptions::default());
    let mut state = CsvFileState {
        header_pending: false,
    };
    let region = b"1,a\n2,\"b\nstill b\n";
    let mut out = TextBatchBuilder::new(&config, "r.csv", 0);
    let consumed = decoder
        .decode(region, false, 1, &mut state, &mut out)
        .unwrap();
    assert_eq!(
        consumed, 4,
        "the open quote keeps record 2 for the next chunk"
    );
    assert_eq!(rows(&out.finish().unwrap()), ["1|a"]);

    let region = b"1,a\n2,\"b\nc\"\n";
    let mut out = TextBatchBuilder::new(&config, "r.csv", 0);
    let consumed = decoder
        .decode(region, false, 1, &mut state, &mut out)
        .unwrap();
    assert_eq!(consumed, region.len());
    assert_eq!(rows(&out.finish().unwrap()), ["1|a", "2|b\nc"]);
    assert_eq!(config.metrics.malformed(), 0);
}

#[tokio::test]
async fn csv_record_spanning_chunks() {
    let dir = TempDir::new("chunks");
    // A quoted two-line field whose line break is in the first chunk and whose closing
    // quote is in the second.
    let record = "2,\"first line\nsecond line\"\n";
    let prefix_len = super::text::CHUNK_BYTES - 20;
    let filler = "1,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n";
    let mut contents = String::new();
    let mut count = 0;
    while contents.len() + filler.len() + 4 <= prefix_len {
        contents.push_str(filler);
        count += 1;
    }
    let rest = prefix_len - contents.len();
    contents.push_str(&format!("1,{}\n", "b".repeat(rest - 3)));
    count += 1;
    assert_eq!(contents.len(), prefix_len);
    assert!(prefix_len + record.find('\n').unwrap() < super::text::CHUNK_BYTES);
    assert!(prefix_len + record.len() > super::text::CHUNK_BYTES);
    contents.push_str(record);
    contents.push_str("3,end\n");
    let path = dir.write("big.csv", &contents);
    let s = schema(&[("n", DataType::Int64), ("t", DataType::Utf8)]);
    let (batches, metrics) = read_all(&s, options(&[("path", &path)])).await;
    let all = rows(&batches);
    assert_eq!(all.len(), count + 2);
    assert_eq!(all[count], "2|first line\nsecond line");
    assert_eq!(all[count + 1], "3|end");
    assert_eq!(metrics.malformed(), 0);
}

#[tokio::test]
async fn follow_reads_new_parquet_files_once_written() {
    let dir = TempDir::new("follow-parquet");
    write_parquet(&dir.join("a.parquet"));
    let s = schema(&[("id", DataType::Int64)]);
    let glob = dir.join("*.parquet");
    let (mut stream, bounded, _) = open(&s, options(&[("path", &glob), ("follow", "true")]), 1024);
    assert!(!bounded);
    assert_eq!(next_rows(&mut stream).await, ["1", "2", "3"]);
    write_parquet(&dir.join("b.parquet"));
    assert_eq!(next_rows(&mut stream).await, ["1", "2", "3"]);
}

#[tokio::test]
async fn follow_rereads_a_truncated_file() {
    let dir = TempDir::new("follow-truncate");
    let path = dir.write("log.csv", "1\n2\n");
    let s = schema(&[("n", DataType::Int64)]);
    let (mut stream, _, _) = open(&s, options(&[("path", &path), ("follow", "true")]), 1024);
    assert_eq!(next_rows(&mut stream).await, ["1", "2"]);
    dir.write("log.csv", "3\n");
    assert_eq!(next_rows(&mut stream).await, ["3"]);
}

/// Decodes `region` as one last region, with or without the fast path; returns the rows,
/// the malformed count and whether the fast path decoded it.
fn decode_region(
    s: &SchemaRef,
    projection: Option<Vec<usize>>,
    region: &[u8],
    fast: bool,
) -> (Vec<String>, u64) {
    let output = match &projection {
        Some(p) => Arc::new(s.project(p).unwrap()),
        None => Arc::clone(s),
    };
    let config = DecodeConfig {
        schema: output,
        null_value: None,
        metrics: Default::default(),
        batch_size: 7,
    };
    let options = CsvOptions::default();
    let mut decoder = CsvDecoder::new(&options);
    if fast {
        let fast = super::csv_fast::FastCsv::try_new(
            Arc::clone(s),
            projection.clone(),
            options.delimiter,
            options.quote,
            None,
            7,
        );
        assert!(fast.is_some(), "these types take the fast path");
        decoder = decoder.with_fast_path(fast);
    }
    if let Some(p) = projection {
        decoder = decoder.with_projection(s.fields().len(), p);
    }
    let mut state = CsvFileState {
        header_pending: false,
    };
    let mut out = TextBatchBuilder::new(&config, "f.csv", 0);
    let consumed = decoder
        .decode(region, true, 1, &mut state, &mut out)
        .unwrap();
    assert_eq!(consumed, region.len());
    let rows = rows(&out.finish().unwrap());
    (rows, config.metrics.malformed())
}

#[test]
fn csv_fast_path_gives_the_rows_of_the_row_path() {
    let s = schema(&[
        ("i", DataType::Int64),
        ("f", DataType::Float64),
        ("t", DataType::Utf8),
        ("ts", ts_ms()),
        ("d", DataType::Date32),
        ("u", DataType::UInt16),
    ]);
    let fields: [&[&str]; 6] = [
        &["1", "-7", "", " 3", "x", "9223372036854775807", "1.5"],
        &["1.5", "-0", "", "1e3", "nan", " 2", "abc"],
        &["a", "", " b ", "héllo", "x y"],
        &[
            "2023-05-06T16:51:00",
            "2023-05-06 16:51:00.123",
            "",
            "2023-05-06T16:51:00Z",
            "2023-05-06",
            "bad",
            " 2023-05-06T16:51:00",
        ],
        &["2023-05-06", "", "2023-02-30", "20230506"],
        &["0", "65535", "65536", "-1", ""],
    ];
    let mut seed: u64 = 42;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let mut fast_regions = 0;
    for case in 0..400 {
        let mut region = String::new();
        for _ in 0..1 + next(12) {
            match next(20) {
                0 => region.push('\n'),
                1 => region.push_str("1,2\n"),
                _ => {
                    // Mostly good values; the first of each list is always good.
                    let row: Vec<&str> = fields
                        .iter()
                        .map(|f| if next(4) == 0 { f[next(f.len())] } else { f[0] })
                        .collect();
                    region.push_str(&row.join(","));
                    region.push_str(if next(5) == 0 { "\r\n" } else { "\n" });
                }
            }
        }
        if next(3) == 0 {
            region.pop(); // the last record without its line break
        }
        let projection = match case % 3 {
            0 => None,
            1 => Some(vec![3, 0, 2]),
            _ => Some(vec![5]),
        };
        let slow = decode_region(&s, projection.clone(), region.as_bytes(), false);
        let fast = decode_region(&s, projection.clone(), region.as_bytes(), true);
        assert_eq!(
            fast, slow,
            "case {case}: {region:?} projection {projection:?}"
        );
        let decoded_fast = super::csv_fast::FastCsv::try_new(
            Arc::clone(&s),
            projection,
            b',',
            Some(b'"'),
            None,
            7,
        )
        .unwrap()
        .decode(region.as_bytes());
        if decoded_fast.is_ok() {
            fast_regions += 1;
        }
    }
    assert!(
        fast_regions > 50,
        "the fast path itself decoded {fast_regions} of 400 regions"
    );
}

// Starting at a row (a source restored from a checkpoint).

/// The rows of a bounded source read from `start_row`, and its metrics.
async fn rows_from(
    schema: &SchemaRef,
    options: &ConnectorOptions,
    batch_size: usize,
    start_row: u64,
) -> (Vec<String>, Vec<usize>, Arc<SourceMetrics>) {
    let (stream, _, metrics) = open_at(schema, options.clone(), batch_size, None, start_row);
    let batches = tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("bounded stream ends")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let sizes = batches.iter().map(RecordBatch::num_rows).collect();
    (rows(&batches), sizes, metrics)
}

/// Reading from row `k` gives the rows from `k` of a full read, for `k` at the start, inside
/// the first batch, at batch boundaries, in the middle, at the end and beyond, and for every
/// `k` when there are few rows.
async fn check_start_rows(schema: &SchemaRef, options: ConnectorOptions, batch_size: usize) {
    let (all, sizes, metrics) = rows_from(schema, &options, batch_size, 0).await;
    let total = all.len() as u64;
    assert!(sizes.len() >= 3, "several batches: {sizes:?}");
    let malformed = metrics.malformed();
    let mut starts: Vec<u64> = if total <= 40 {
        (0..=total + 1).collect()
    } else {
        vec![0, 1, total / 2, total - 1, total, total + 1]
    };
    let mut boundary = 0;
    for size in &sizes {
        boundary += *size as u64;
        starts.push(boundary);
    }
    starts.push(total + 100);
    for start in starts {
        let (rest, _, metrics) = rows_from(schema, &options, batch_size, start).await;
        let skip = (start as usize).min(all.len());
        assert_eq!(rest, all[skip..], "from row {start}");
        assert_eq!(metrics.rows(), rest.len() as u64, "from row {start}");
        // Dropped rows were decoded or skipped, never reported again as malformed twice.
        assert!(metrics.malformed() <= malformed, "from row {start}");
    }
}

#[tokio::test]
async fn csv_starts_at_a_row() {
    let dir = TempDir::new("start-csv");
    // A header per file, blank lines, a quoted line break, malformed rows (not counted).
    dir.write(
        "a.csv",
        "auction,channel,date_time\n1,web,2023-05-06 17:31:00\n\nx,bad,2023-05-06 17:31:00\n\
         2,\"two\nlines\",2023-05-06 17:31:01\n3,app,2023-05-06 17:31:02\n4,,\n",
    );
    dir.write("b.csv", "auction,channel,date_time\n");
    dir.write(
        "c.csv",
        "auction,channel,date_time\n5,web,2023-05-06 17:32:00\n6,web\n7,app,2023-05-06 17:32:02\n\
         8,\"a,b\",2023-05-06 17:32:03\n9,web,2023-05-06 17:32:04",
    );
    let folder = dir.path().display().to_string();
    let options = options(&[("path", &folder), ("format", "csv"), ("header", "true")]);
    let (all, _, metrics) = rows_from(&bids_schema(), &options, 3, 0).await;
    assert_eq!(all.len(), 8, "{all:?}");
    assert_eq!(metrics.malformed(), 2);
    check_start_rows(&bids_schema(), options, 3).await;
}

#[tokio::test]
async fn json_lines_start_at_a_row() {
    let dir = TempDir::new("start-json");
    let mut text = String::new();
    for n in 0..25 {
        if n % 7 == 3 {
            text.push_str("{not json\n\n");
        }
        text.push_str(&format!("{{\"n\": {n}, \"s\": \"row {n}\"}}\n"));
    }
    dir.write("a.jsonl", &text);
    dir.write("b.jsonl", "{\"n\": 100}\n{\"n\": \"x\"}\n{\"n\": 101}");
    let glob = dir.join("*.jsonl");
    let s = schema(&[("n", DataType::Int64), ("s", DataType::Utf8)]);
    check_start_rows(&s, options(&[("path", &glob)]), 4).await;
}

/// A Parquet file of `ids` (BIGINT NOT NULL) and `v` (BIGINT), in row groups of 3 rows.
fn write_parquet_rows(path: &str, ids: std::ops::Range<i64>) {
    use datafusion::arrow::array::Int64Array;
    use datafusion::parquet::file::properties::WriterProperties;
    let file_schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]));
    // Every fifth `v` does not fit an INT (a malformed row when read as one).
    let v: Vec<Option<i64>> = ids
        .clone()
        .map(|i| match i % 5 {
            0 => Some(i64::MAX - i),
            1 => None,
            _ => Some(i * 10),
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids)),
        Arc::new(Int64Array::from(v)),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&file_schema), columns).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(3))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, file_schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test]
async fn parquet_starts_at_a_row() {
    let dir = TempDir::new("start-parquet");
    write_parquet_rows(&dir.join("a.parquet"), 0..11);
    write_parquet_rows(&dir.join("b.parquet"), 11..13);
    write_parquet_rows(&dir.join("c.parquet"), 13..30);
    let folder = dir.path().display().to_string();
    let options = options(&[("path", &folder)]);
    // The file's types: no row can be malformed, rows are skipped by the row selection.
    let exact = schema(&[("id", DataType::Int64), ("v", DataType::Int64)]);
    check_start_rows(&exact, options.clone(), 4).await;
    // `v` as INT: some rows are malformed, so rows are decoded and dropped.
    let narrow = schema(&[("id", DataType::Int64), ("v", DataType::Int32)]);
    let (all, _, metrics) = rows_from(&narrow, &options, 4, 0).await;
    assert_eq!(all.len(), 24);
    assert_eq!(metrics.malformed(), 6);
    check_start_rows(&narrow, options, 4).await;
}

#[test]
fn parquet_skips_rows_unread_only_when_none_can_be_malformed() {
    let dir = TempDir::new("skip-parquet");
    let path = dir.join("a.parquet");
    write_parquet_rows(&path, 0..11);
    let config = |columns: &[(&str, DataType)]| DecodeConfig {
        schema: schema(columns),
        null_value: None,
        metrics: Default::default(),
        batch_size: 100,
    };
    let ids = |cursor: &mut super::parquet::ParquetCursor, config: &DecodeConfig| {
        let batch = cursor.next_batch("a", config, 0).unwrap().unwrap();
        rows(&[batch])
    };
    let exact = config(&[("id", DataType::Int64), ("v", DataType::Int64)]);
    for skip in [0, 2, 3, 7, 11, 20] {
        let mut cursor =
            super::parquet::ParquetCursor::open_at(Path::new(&path), &exact, skip).unwrap();
        assert_eq!(cursor.skipped(), skip.min(11));
        if skip < 11 {
            let first = ids(&mut cursor, &exact);
            assert_eq!(first.len(), 11 - skip as usize);
            assert!(first[0].starts_with(&format!("{skip}|")), "{first:?}");
        } else {
            assert!(cursor.next_batch("a", &exact, 0).unwrap().is_none());
        }
    }
    let narrow = config(&[("id", DataType::Int64), ("v", DataType::Int32)]);
    let cursor = super::parquet::ParquetCursor::open_at(Path::new(&path), &narrow, 5).unwrap();
    assert_eq!(cursor.skipped(), 0);
    // A NOT NULL declared column over a nullable file column may drop rows too.
    let strict = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Int64, false),
    ]));
    let strict = DecodeConfig {
        schema: strict,
        null_value: None,
        metrics: Default::default(),
        batch_size: 100,
    };
    let cursor = super::parquet::ParquetCursor::open_at(Path::new(&path), &strict, 5).unwrap();
    assert_eq!(cursor.skipped(), 0);
}

#[tokio::test]
async fn a_following_source_starts_at_a_row() {
    let dir = TempDir::new("start-follow");
    dir.write("a.csv", "1\nx\n2\n");
    let s = schema(&[("n", DataType::Int64)]);
    let glob = dir.join("*.csv");
    let (mut stream, _, metrics) = open_at(
        &s,
        options(&[("path", &glob), ("follow", "true")]),
        1024,
        None,
        3,
    );
    // Rows 1 and 2 were read before; the third is still to come.
    dir.append("a.csv", "3\n4\n");
    // Whether `3` and `4` arrive with the first rows or later, the first batch is `4`.
    assert_eq!(next_rows(&mut stream).await, ["4"]);
    dir.write("b.csv", "5\n");
    assert_eq!(next_rows(&mut stream).await, ["5"]);
    assert_eq!(metrics.rows(), 2);
}

/// Reads a bounded source to its end with `parallelism` decode threads.
async fn read_with(
    schema: &SchemaRef,
    options: ConnectorOptions,
    start_row: u64,
    parallelism: usize,
) -> (Vec<String>, Arc<SourceMetrics>) {
    let (stream, _, metrics) = open_with(
        schema,
        options,
        1000,
        None,
        start_row,
        SourceMetrics::default(),
        parallelism,
    );
    let batches = tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("bounded stream ends")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (rows(&batches), metrics)
}

/// A CSV file of several chunks is decoded by several threads at once where its regions allow
/// (no quote character, no header): the rows, their order, the malformed rows and the first
/// error are those of one thread, with a header, with malformed rows in a later part (which
/// sends that region to the row path), with a quoted record, and from a restored start row.
#[tokio::test]
async fn parallel_decoding_gives_the_rows_of_one_thread() {
    let dir = TempDir::new("parallel");
    let mut text = String::from("auction,channel,date_time\n");
    let lines = 200_000;
    for i in 0..lines {
        let second = i % 60;
        let millis = i % 1000;
        match i {
            // Malformed rows far into the file: a bad number, a missing field.
            190_001 => text.push_str("x,web,2023-05-06 16:51:00\n"),
            195_002 => text.push_str("7,web\n"),
            // A quoted record: that region cannot be cut at line breaks.
            60_003 => text.push_str("60003,\"a, \"\"quoted\"\" one\",2023-05-06 16:51:00\n"),
            _ => text.push_str(&format!(
                "{i},{},2023-05-06 16:{:02}:{second:02}.{millis:03}\n",
                ["web", "app", "partner"][i % 3],
                (i / 60) % 60
            )),
        }
    }
    assert!(text.len() > 6 * super::text::CHUNK_BYTES, "several chunks");
    let path = dir.write("bids.csv", &text);
    let opts = || options(&[("path", &path), ("header", "true")]);
    let (one, one_metrics) = read_with(&bids_schema(), opts(), 0, 1).await;
    assert_eq!(one.len(), lines - 2);
    assert_eq!(one_metrics.malformed(), 2);
    assert!(one.contains(&"60003|a, \"quoted\" one|2023-05-06T16:51:00".to_string()));
    let (many, metrics) = read_with(&bids_schema(), opts(), 0, 2).await;
    assert!(many == one, "two threads: the rows of one thread, in order");
    assert_eq!(metrics.malformed(), 2);
    assert_eq!(metrics.first_error(), one_metrics.first_error());
    assert!(
        metrics
            .first_error()
            .is_some_and(|e| e.starts_with(&format!("{path}:190003: "))),
        "{:?}",
        metrics.first_error()
    );
    let (rest, _) = read_with(&bids_schema(), opts(), 123_457, 3).await;
    assert!(
        rest[..] == one[123_457..],
        "three threads from a restored row"
    );
}

// format.on-error: 'fail' and 'dead-letter' (the engine takes the option; the connector hands
// every malformed row to the metrics it was given).

/// Records the dead letters it is given.
#[derive(Debug, Default)]
struct Letters(std::sync::Mutex<Vec<MalformedRow>>);

impl DeadLetterSink for Letters {
    fn append(&self, _source: &str, rows: Vec<MalformedRow>) -> ConnectorResult<()> {
        self.0.lock().unwrap().extend(rows);
        Ok(())
    }
}

impl Letters {
    /// `position | raw | reason` of each dead letter, in order.
    fn rows(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let raw = r.raw.as_deref().map_or("NULL".to_string(), |b| {
                    String::from_utf8_lossy(b).into_owned()
                });
                format!("{} | {raw} | {}", r.position, r.reason)
            })
            .collect()
    }
}

/// Reads a bounded source to its end with dead letters on: its rows and its dead letters.
async fn read_dead_letters(
    schema: &SchemaRef,
    options: ConnectorOptions,
    batch_size: usize,
    start_row: u64,
) -> (Vec<String>, Vec<String>, Arc<SourceMetrics>) {
    let letters = Arc::new(Letters::default());
    let metrics = SourceMetrics::new(
        "s",
        OnError::DeadLetter,
        Some(Arc::clone(&letters) as Arc<dyn DeadLetterSink>),
    )
    .unwrap();
    let (stream, _, metrics) = open_with(schema, options, batch_size, None, start_row, metrics, 1);
    let batches = tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("bounded stream ends")
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    metrics.flush_dead_letters().unwrap();
    (rows(&batches), letters.rows(), metrics)
}

/// Bad rows of every kind, among good ones (read as `bids_schema` with a NOT NULL auction).
const BAD_CSV: &[u8] = b"1,a,2023-05-06T16:51:00\r\n\
x,b,2023-05-06T16:51:00\n\
3,c\n\
\n\
4,\"q\nq\",2023-05-06T16:51:04\n\
,e,2023-05-06T16:51:05\n\
6,\xff,2023-05-06T16:51:06\n\
7,g,2023-05-06T16:51:07,extra\n\
8,h,2023-05-06T16:51:08";

fn not_null_bids() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, true),
        Field::new("date_time", ts_ms(), true),
    ]))
}

#[tokio::test]
async fn dead_letters_keep_each_bad_line_in_order_with_its_position_and_reason() {
    let dir = TempDir::new("dead-letters");
    let path = dir.0.join("bad.csv");
    std::fs::write(&path, BAD_CSV).unwrap();
    let path = path.display().to_string();
    for batch_size in [1, 2, 1024] {
        let (rows, letters, metrics) =
            read_dead_letters(&not_null_bids(), options(&[("path", &path)]), batch_size, 0).await;
        assert_eq!(
            rows,
            [
                "1|a|2023-05-06T16:51:00",
                "4|q\nq|2023-05-06T16:51:04",
                "8|h|2023-05-06T16:51:08"
            ],
            "batch size {batch_size}"
        );
        assert_eq!(
            letters,
            [
                format!(
                    "{path}:2 | x,b,2023-05-06T16:51:00 | column 'auction': cannot read 'x' as Int64"
                ),
                format!("{path}:3 | 3,c | expected 3 fields, found 2"),
                format!(
                    "{path}:7 | ,e,2023-05-06T16:51:05 | column 'auction' is NOT NULL but the value is missing"
                ),
                format!("{path}:8 | 6,\u{FFFD},2023-05-06T16:51:06 | field 2 is not valid UTF-8"),
                format!("{path}:9 | 7,g,2023-05-06T16:51:07,extra | expected 3 fields, found 4"),
            ],
            "batch size {batch_size}"
        );
        assert_eq!((metrics.malformed(), metrics.dead_letters()), (5, 5));
    }
}

#[tokio::test]
async fn on_error_fail_stops_at_the_first_bad_row_in_file_order() {
    let dir = TempDir::new("fail");
    let path = dir.0.join("bad.csv");
    std::fs::write(&path, BAD_CSV).unwrap();
    let path = path.display().to_string();
    let metrics = SourceMetrics::new("s", OnError::Fail, None).unwrap();
    let (stream, _, metrics) = open_with(
        &not_null_bids(),
        options(&[("path", &path)]),
        1024,
        None,
        0,
        metrics,
        1,
    );
    let results: Vec<_> = tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("the stream ends");
    let error = results
        .into_iter()
        .find_map(Result::err)
        .expect("the stream fails");
    // Line 3's wrong field count is found while parsing, before line 2's value is cast: the
    // error must still be line 2's.
    match &error {
        ConnectorError::MalformedRow {
            source_name,
            position,
            reason,
        } => {
            assert_eq!(source_name, "s");
            assert_eq!(position, &format!("{path}:2"));
            assert!(reason.contains("cannot read 'x' as Int64"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(metrics.malformed(), 1);
}

#[tokio::test]
async fn json_and_parquet_dead_letters() {
    let dir = TempDir::new("dead-letters-json");
    let path = dir.write(
        "e.jsonl",
        "{\"auction\": 1, \"channel\": \"web\"}\r\n\
         {\"auction\": 2, \n\
         {\"auction\": \"two\", \"channel\": \"app\"}\n\
         [1]\n",
    );
    let (rows, letters, _) =
        read_dead_letters(&bids_schema(), options(&[("path", &path)]), 1024, 0).await;
    assert_eq!(rows, ["1|web|NULL"]);
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(
        letters[0].starts_with(&format!("{path}:2 | {{\"auction\": 2,  | invalid JSON")),
        "{letters:?}"
    );
    assert_eq!(
        letters[1],
        format!(
            "{path}:3 | {{\"auction\": \"two\", \"channel\": \"app\"}} | column 'auction': cannot read 'two' as Int64"
        )
    );
    assert_eq!(
        letters[2],
        format!("{path}:4 | [1] | expected a JSON object, found an array")
    );

    // A Parquet row has no text: its dead letter shows its values as read.
    let path = dir.join("data.parquet");
    write_parquet(&path);
    let s = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, false),
    ]));
    let (rows, letters, _) = read_dead_letters(&s, options(&[("path", &path)]), 1024, 0).await;
    assert_eq!(rows, ["1|a", "3|c"]);
    assert_eq!(
        letters,
        [format!(
            "{path}:row 2 | {{\"id\":2,\"name\":null}} | column 'name' is NOT NULL but the value is missing"
        )]
    );
}

#[tokio::test]
async fn a_restored_reader_does_not_send_the_dead_letters_its_checkpoint_covers_again() {
    let dir = TempDir::new("dead-letters-restore");
    let path = dir.0.join("bad.csv");
    std::fs::write(&path, BAD_CSV).unwrap();
    let path = path.display().to_string();
    let opts = options(&[("path", &path)]);
    for batch_size in [1, 2, 1024] {
        // The checkpoint covers 2 rows (1 and 4, line 5): the bad lines 2 and 3 come before
        // line 5 and were recorded by the run that took it; lines 7, 8 and 9 come after it.
        let (rows, letters, metrics) =
            read_dead_letters(&not_null_bids(), opts.clone(), batch_size, 2).await;
        assert_eq!(rows, ["8|h|2023-05-06T16:51:08"], "batch size {batch_size}");
        let positions: Vec<&str> = letters
            .iter()
            .map(|l| l.split(" | ").next().unwrap())
            .collect();
        let expected: Vec<String> = [7, 8, 9].iter().map(|l| format!("{path}:{l}")).collect();
        assert_eq!(positions, expected, "batch size {batch_size}");
        assert_eq!(metrics.malformed(), 5, "replayed rows are still counted");
        assert_eq!(metrics.dead_letters(), 3);
        // Covering every row: nothing is recorded again.
        let (rows, letters, _) =
            read_dead_letters(&not_null_bids(), opts.clone(), batch_size, 3).await;
        assert!(
            rows.is_empty() && letters.is_empty(),
            "{rows:?} {letters:?}"
        );
    }
}

/// Found by the parquet fuzz target: a corrupt page made the parquet crate panic ("Decoder
/// for dict should have been set") while a reader decoded it; the reader now fails with an
/// error.
#[tokio::test]
async fn a_corrupt_parquet_page_fails_the_reader_with_an_error() {
    let dir = TempDir::new("parquet-corrupt");
    let path = dir.path().join("bad.parquet");
    std::fs::write(
        &path,
        include_bytes!("../../../sql-tests/fuzz/corpus/parquet/regress-dict-decoder-panic.parquet"),
    )
    .unwrap();
    let schema = schema(&[
        ("a", DataType::Int64),
        ("b", DataType::Utf8),
        ("ts", ts_ms()),
        ("d", DataType::Float64),
        ("f", DataType::Boolean),
    ]);
    let path = path.display().to_string();
    let (stream, _, _) = open(
        &schema,
        options(&[("path", &path), ("format", "parquet")]),
        7,
    );
    let results = tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("the reader ends");
    let error = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error for the corrupt page");
    assert!(
        error.to_string().contains("corrupt Parquet data"),
        "{error}"
    );
}

/// Found by the parquet fuzz target: a footer whose row-group row counts overflow when summed
/// made the parquet crate panic while the file was opened (at CREATE SOURCE); it is now
/// refused as not readable.
#[test]
fn a_parquet_footer_with_overflowing_row_counts_is_refused() {
    let dir = TempDir::new("parquet-overflow");
    let path = dir.path().join("bad.parquet");
    std::fs::write(
        &path,
        include_bytes!("../../../sql-tests/fuzz/corpus/parquet/regress-row-count-overflow.parquet"),
    )
    .unwrap();
    let schema = schema(&[("a", DataType::Int64)]);
    let path = path.display().to_string();
    let error = FileConnector::default()
        .validate(&schema, &options(&[("path", &path), ("format", "parquet")]))
        .unwrap_err();
    assert!(error.to_string().contains("corrupt metadata"), "{error}");
}
