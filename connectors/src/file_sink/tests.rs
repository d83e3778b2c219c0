//! Tests of the file sink writers against the files they leave on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use eddy_engine::connector::{
    ConnectorError, ConnectorOptions, SinkConnector, SinkContext, SinkMetrics,
};
use eddy_engine::paths::PathPolicy;

use super::FileSinkConnector;

const HOUR_MS: i64 = 3_600_000;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("eddy-sink-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.2),
            )),
        ],
    )
    .unwrap()
}

fn context(options: &[(&str, &str)], metrics: &Arc<SinkMetrics>) -> SinkContext {
    SinkContext {
        schema: schema(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<ConnectorOptions>(),
        time_columns: vec![2],
        metrics: Arc::clone(metrics),
        exactly_once: false,
    }
}

/// Every file under `root`, relative, sorted; Parquet files with their row count.
fn files(root: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let rows = if rel.ends_with(".parquet") {
                let f = std::fs::File::open(&p).unwrap();
                ParquetRecordBatchReaderBuilder::try_new(f)
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(|b| b.unwrap().num_rows())
                    .sum()
            } else {
                0
            };
            out.insert(rel, rows);
        }
    }
    out
}

/// Strips the run id from `part-<run>-00001.parquet`.
fn shape(files: &BTreeMap<String, usize>) -> Vec<String> {
    files
        .iter()
        .map(|(name, rows)| {
            let generic: String = match name.rfind("part-") {
                _ if name.ends_with(".inprogress") => "IN PROGRESS".to_string(),
                Some(i) => format!("{}part.{}", &name[..i], name.rsplit('.').next().unwrap()),
                None => name.clone(),
            };
            format!("{generic} {rows}")
        })
        .collect()
}

#[test]
fn hourly_partitions_commit_with_the_watermark() {
    let root = dir("hourly");
    let metrics = Arc::new(SinkMetrics::default());
    let sink = FileSinkConnector::parquet(Arc::default());
    let path = root.join("out");
    let path_text = path.display().to_string();
    let mut w = sink
        .open(context(
            &[
                ("path", path_text.as_str()),
                ("partition.pattern", "dt=%Y-%m-%d/hour=%H"),
            ],
            &metrics,
        ))
        .unwrap();
    // 1970-01-01 00:10, 00:50 and 01:05.
    w.write(&batch(&[
        ("a", 1, HOUR_MS / 6),
        ("b", 2, 5 * HOUR_MS / 6),
        ("c", 3, HOUR_MS + 300_000),
    ]))
    .unwrap();
    // Nothing is visible yet: both files are in progress.
    assert!(
        shape(&files(&path))
            .iter()
            .all(|f| f.starts_with("IN PROGRESS"))
    );
    // The watermark reaches 01:00: hour 00 is complete.
    w.watermark(HOUR_MS * 1_000_000).unwrap();
    assert_eq!(
        shape(&files(&path)),
        vec![
            "dt=1970-01-01/hour=00/_SUCCESS 0",
            "dt=1970-01-01/hour=00/part.parquet 2",
            "IN PROGRESS 0",
        ]
    );
    // A late row for hour 00 goes to a new file there, and is counted.
    w.write(&batch(&[("d", 4, 1)])).unwrap();
    assert_eq!(SinkMetrics::get(&metrics.late_rows), 1);
    w.finish().unwrap();
    assert_eq!(
        shape(&files(&path)),
        vec![
            "_SUCCESS 0",
            "dt=1970-01-01/hour=00/_SUCCESS 0",
            "dt=1970-01-01/hour=00/part.parquet 2",
            "dt=1970-01-01/hour=00/part.parquet 1",
            "dt=1970-01-01/hour=01/_SUCCESS 0",
            "dt=1970-01-01/hour=01/part.parquet 1",
        ]
    );
    let total: usize = files(&path).values().sum();
    assert_eq!(total, 4);
    assert_eq!(SinkMetrics::get(&metrics.files), 3);
    assert_eq!(SinkMetrics::get(&metrics.partitions_committed), 2);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn rolling_by_size_and_abort() {
    let root = dir("roll");
    let metrics = Arc::new(SinkMetrics::default());
    let path = root.join("out");
    let path_text = path.display().to_string();
    let sink = FileSinkConnector::file(Arc::default());
    let mut w = sink
        .open(context(
            &[
                ("path", path_text.as_str()),
                ("format", "csv"),
                ("rollover.size", "1"),
                ("partition.by", "k"),
            ],
            &metrics,
        ))
        .unwrap();
    // Every write reaches the 1-byte size: each batch's rows of a key make one file.
    w.write(&batch(&[("a", 1, 0), ("b/c", 2, 0), ("a", 3, 0)]))
        .unwrap();
    w.write(&batch(&[("a", 4, 0)])).unwrap();
    let listed = files(&path);
    let names: Vec<&String> = listed.keys().collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().filter(|n| n.starts_with("k=a/")).count() == 2);
    assert!(names.iter().any(|n| n.starts_with("k=b%2Fc/")));
    let first_a = std::fs::read_to_string(path.join(names[0])).unwrap();
    assert_eq!(
        first_a,
        "a,1,1970-01-01 00:00:00\na,3,1970-01-01 00:00:00\n"
    );
    // A file in progress is removed when the sink fails; finished ones stay.
    let mut w = sink
        .open(context(
            &[("path", path_text.as_str()), ("format", "json")],
            &metrics,
        ))
        .unwrap();
    w.write(&batch(&[("z", 9, 0)])).unwrap();
    assert!(
        shape(&files(&path))
            .iter()
            .any(|f| f.starts_with("IN PROGRESS"))
    );
    w.abort();
    assert_eq!(files(&path).len(), 3);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn single_file_appears_when_finished() {
    let root = dir("single");
    let metrics = Arc::new(SinkMetrics::default());
    let sink = FileSinkConnector::file(Arc::default());
    let target = root.join("result.parquet");
    let mut w = sink
        .open_file(
            context(
                &[("compression", "snappy"), ("row_group.size", "2")],
                &metrics,
            ),
            &target.display().to_string(),
        )
        .unwrap()
        .unwrap();
    w.write(&batch(&[("a", 1, 0), ("b", 2, 1), ("c", 3, 2)]))
        .unwrap();
    assert!(!target.exists());
    w.finish().unwrap();
    let f = std::fs::File::open(&target).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 2);
    assert_eq!(
        reader.schema().field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, None)
    );
    assert_eq!(files(&root).len(), 1);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn paths_outside_the_policy_are_refused() {
    let root = dir("policy");
    let allowed = root.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let policy = Arc::new(PathPolicy::allow([allowed.clone()]).unwrap());
    let sink = FileSinkConnector::parquet(policy);
    let metrics = Arc::new(SinkMetrics::default());
    let outside = root.join("elsewhere").display().to_string();
    let escape = allowed.join("../elsewhere").display().to_string();
    for path in [outside.as_str(), escape.as_str()] {
        let err = sink
            .validate(&context(&[("path", path)], &metrics))
            .unwrap_err();
        assert!(
            matches!(err, ConnectorError::PermissionDenied(_)),
            "{err:?}"
        );
        let err = sink
            .open_file(context(&[], &metrics), &format!("{path}/x.parquet"))
            .unwrap()
            .err()
            .unwrap();
        assert!(
            matches!(err, ConnectorError::PermissionDenied(_)),
            "{err:?}"
        );
    }
    let inside = allowed.join("out").display().to_string();
    sink.validate(&context(&[("path", inside.as_str())], &metrics))
        .unwrap();
    // Options are checked before anything is written.
    for bad in [
        vec![("path", inside.as_str()), ("rollover.size", "big")],
        vec![("path", inside.as_str()), ("compression", "brotli9")],
        vec![("path", inside.as_str()), ("partition.pattern", "%H")],
        vec![("path", inside.as_str()), ("partition.by", "nope")],
        vec![("path", inside.as_str()), ("colour", "blue")],
        vec![],
    ] {
        assert!(
            matches!(
                sink.validate(&context(&bad, &metrics)),
                Err(ConnectorError::InvalidOption(_))
            ),
            "{bad:?}"
        );
    }
    assert!(!allowed.join("out").exists());
    let _ = std::fs::remove_dir_all(&root);
}
