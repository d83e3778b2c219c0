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

use super::{FileSinkConnector, SUCCESS_FILE};

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
        sink_name: "s".to_string(),
        schema: schema(),
        changelog: false,
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

// Exactly-once: the two-phase commit.

fn eo_context(options: &[(&str, &str)], metrics: &Arc<SinkMetrics>) -> SinkContext {
    SinkContext {
        exactly_once: true,
        ..context(options, metrics)
    }
}

fn is_hidden(rel: &str) -> bool {
    rel.split('/').any(|part| part.starts_with('.'))
}

/// Visible files (relative, sorted) with their Parquet row counts.
fn visible(root: &Path) -> BTreeMap<String, usize> {
    files(root)
        .into_iter()
        .filter(|(name, _)| !is_hidden(name))
        .collect()
}

/// Hidden files, relative.
fn hidden(root: &Path) -> Vec<String> {
    files(root)
        .into_keys()
        .filter(|name| is_hidden(name))
        .collect()
}

/// The `(k, v)` rows of every visible Parquet file, sorted.
fn visible_rows(root: &Path) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    for name in visible(root).keys().filter(|n| n.ends_with(".parquet")) {
        let f = std::fs::File::open(root.join(name)).unwrap();
        for b in ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let k = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                rows.push((k.value(i).to_string(), v.value(i)));
            }
        }
    }
    rows.sort();
    rows
}

fn rows(keys: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut out: Vec<_> = keys.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    out.sort();
    out
}

fn open_eo(
    sink: &FileSinkConnector,
    path: &Path,
    extra: &[(&str, &str)],
    metrics: &Arc<SinkMetrics>,
) -> Box<dyn eddy_engine::connector::SinkWriter> {
    let path_text = path.display().to_string();
    let mut options = vec![
        ("path", path_text.as_str()),
        ("partition.pattern", "dt=%Y-%m-%d/hour=%H"),
    ];
    options.extend_from_slice(extra);
    sink.open(eo_context(&options, metrics)).unwrap()
}

#[test]
fn exactly_once_files_and_markers_wait_for_the_commit() {
    let root = dir("eo-commit");
    let path = root.join("out");
    let metrics = Arc::new(SinkMetrics::default());
    let sink = FileSinkConnector::parquet(Arc::default());
    let mut w = open_eo(&sink, &path, &[], &metrics);
    // 00:10 and 00:50 (hour 00), 01:05 (hour 01).
    w.write(&batch(&[
        ("a", 1, HOUR_MS / 6),
        ("b", 2, 5 * HOUR_MS / 6),
        ("c", 3, HOUR_MS + 300_000),
    ]))
    .unwrap();
    // The watermark completes hour 00: its file is finished, but hidden, and no marker.
    w.watermark(HOUR_MS * 1_000_000).unwrap();
    assert!(visible(&path).is_empty(), "{:?}", files(&path));
    let pending: Vec<String> = hidden(&path)
        .into_iter()
        .filter(|n| n.ends_with(".parquet.pending"))
        .collect();
    assert_eq!(pending.len(), 1, "{:?}", files(&path));
    assert!(pending[0].starts_with("dt=1970-01-01/hour=00/.part-"));
    assert_eq!(SinkMetrics::get(&metrics.files), 0);
    assert_eq!(SinkMetrics::get(&metrics.partitions_committed), 0);

    // The first phase finishes hour 01's open file too; still nothing visible.
    let manifest: serde_json::Value = serde_json::from_str(&w.pre_commit(1).unwrap()).unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), 2, "{manifest}");
    assert_eq!(
        manifest["success"],
        serde_json::json!(["dt=1970-01-01/hour=00"])
    );
    for file in manifest["files"].as_array().unwrap() {
        let (p, f) = (
            file["pending"].as_str().unwrap(),
            file["final"].as_str().unwrap(),
        );
        assert!(!Path::new(p).is_absolute() && path.join(p).is_file(), "{p}");
        assert!(!path.join(f).exists(), "{f}");
    }
    assert!(visible(&path).is_empty());
    assert_eq!(hidden(&path).len(), 2);

    // The second phase makes them visible, then the due marker.
    w.commit(1).unwrap();
    assert_eq!(
        shape(&visible(&path)),
        vec![
            "dt=1970-01-01/hour=00/_SUCCESS 0",
            "dt=1970-01-01/hour=00/part.parquet 2",
            "dt=1970-01-01/hour=01/part.parquet 1",
        ]
    );
    assert!(hidden(&path).is_empty());
    assert_eq!(visible_rows(&path), rows(&[("a", 1), ("b", 2), ("c", 3)]));
    assert_eq!(SinkMetrics::get(&metrics.files), 2);
    assert_eq!(SinkMetrics::get(&metrics.partitions_committed), 1);
    // Idempotent; and a checkpoint with nothing pending lists nothing.
    w.commit(1).unwrap();
    assert_eq!(SinkMetrics::get(&metrics.files), 2);
    let empty: serde_json::Value = serde_json::from_str(&w.pre_commit(2).unwrap()).unwrap();
    assert!(empty["files"].as_array().unwrap().is_empty(), "{empty}");
    assert!(empty["success"].as_array().unwrap().is_empty(), "{empty}");
    w.commit(2).unwrap();

    // Rolling by size also stays hidden until a commit.
    w.write(&batch(&[("d", 4, HOUR_MS + 1)])).unwrap();
    w.watermark(2 * HOUR_MS * 1_000_000).unwrap();
    assert_eq!(visible(&path).len(), 3);
    // The input ends: everything is committed, and the folder gets its `_SUCCESS`.
    w.finish().unwrap();
    assert_eq!(
        shape(&visible(&path)),
        vec![
            "_SUCCESS 0",
            "dt=1970-01-01/hour=00/_SUCCESS 0",
            "dt=1970-01-01/hour=00/part.parquet 2",
            "dt=1970-01-01/hour=01/_SUCCESS 0",
            "dt=1970-01-01/hour=01/part.parquet 1",
            "dt=1970-01-01/hour=01/part.parquet 1",
        ]
    );
    assert!(hidden(&path).is_empty());
    assert!(sink.completed(&eo_context(
        &[("path", path.display().to_string().as_str())],
        &metrics
    )));
    assert_eq!(SinkMetrics::get(&metrics.partitions_committed), 2);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn exactly_once_rolled_files_are_hidden_until_commit() {
    let root = dir("eo-roll");
    let path = root.join("out");
    let path_text = path.display().to_string();
    let metrics = Arc::new(SinkMetrics::default());
    let sink = FileSinkConnector::file(Arc::default());
    let mut w = sink
        .open(eo_context(
            &[
                ("path", path_text.as_str()),
                ("format", "csv"),
                ("rollover.size", "1"),
            ],
            &metrics,
        ))
        .unwrap();
    w.write(&batch(&[("a", 1, 0)])).unwrap();
    w.write(&batch(&[("b", 2, 0)])).unwrap();
    assert!(visible(&path).is_empty());
    assert_eq!(hidden(&path).len(), 2);
    w.pre_commit(7).unwrap();
    w.commit(7).unwrap();
    let mut texts: Vec<String> = visible(&path)
        .keys()
        .map(|n| std::fs::read_to_string(path.join(n)).unwrap())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        vec!["a,1,1970-01-01 00:00:00\n", "b,2,1970-01-01 00:00:00\n"]
    );
    // A failure removes the file being written and keeps pending ones for recovery.
    w.write(&batch(&[("c", 3, 0)])).unwrap();
    let mut w2 = sink
        .open(eo_context(
            &[("path", path_text.as_str()), ("format", "csv")],
            &metrics,
        ))
        .unwrap();
    w2.write(&batch(&[("d", 4, 0)])).unwrap();
    w2.abort();
    assert_eq!(hidden(&path).len(), 1, "{:?}", files(&path));
    assert!(hidden(&path)[0].ends_with(".csv.pending"));
    let _ = std::fs::remove_dir_all(&root);
}

/// Writes epoch 1 (`a`, `b`), optionally commits it, writes epoch 2 (`c`, `d`), pre-commits
/// it, then writes rows no checkpoint covers (`e` in a pending file, `f` in progress) and
/// crashes. Returns what the two pre-commits returned.
fn run_until_crash(sink: &FileSinkConnector, path: &Path, commit_1: bool) -> (String, String) {
    let metrics = Arc::new(SinkMetrics::default());
    let mut w = open_eo(sink, path, &[], &metrics);
    w.write(&batch(&[("a", 1, 10), ("b", 2, HOUR_MS + 10)]))
        .unwrap();
    w.watermark(HOUR_MS * 1_000_000).unwrap();
    let first = w.pre_commit(1).unwrap();
    if commit_1 {
        w.commit(1).unwrap();
    }
    w.write(&batch(&[("c", 3, HOUR_MS + 20), ("d", 4, 2 * HOUR_MS)]))
        .unwrap();
    w.watermark(2 * HOUR_MS * 1_000_000).unwrap();
    let second = w.pre_commit(2).unwrap();
    w.write(&batch(&[("e", 5, 2 * HOUR_MS + 1)])).unwrap();
    w.watermark(3 * HOUR_MS * 1_000_000).unwrap();
    w.write(&batch(&[("f", 6, 3 * HOUR_MS)])).unwrap();
    // The crash: the writer vanishes without finishing, closing or aborting.
    drop(w);
    assert!(
        hidden(path).iter().any(|n| n.ends_with(".inprogress")),
        "{:?}",
        files(path)
    );
    (first, second)
}

#[test]
fn recover_completes_the_last_checkpoint_and_drops_the_rest() {
    for commit_1 in [true, false] {
        let root = dir(&format!("eo-recover-{commit_1}"));
        let path = root.join("out");
        let sink = FileSinkConnector::parquet(Arc::default());
        let (_, second) = run_until_crash(&sink, &path, commit_1);
        if commit_1 {
            assert_eq!(visible_rows(&path), rows(&[("a", 1), ("b", 2)]));
        } else {
            assert!(visible(&path).is_empty());
        }
        let metrics = Arc::new(SinkMetrics::default());
        let mut w = open_eo(&sink, &path, &[], &metrics);
        w.recover(Some(&second)).unwrap();
        assert!(hidden(&path).is_empty(), "{:?}", files(&path));
        assert_eq!(
            visible_rows(&path),
            rows(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)])
        );
        // Hours 00 and 01 were completed by the watermark before checkpoint 2; hour 02 not.
        let markers: Vec<String> = visible(&path)
            .into_keys()
            .filter(|n| n.ends_with(SUCCESS_FILE))
            .collect();
        assert_eq!(
            markers,
            vec![
                "dt=1970-01-01/hour=00/_SUCCESS",
                "dt=1970-01-01/hour=01/_SUCCESS"
            ]
        );
        // Recovering twice from the same checkpoint changes nothing.
        let before = visible(&path);
        w.recover(Some(&second)).unwrap();
        assert_eq!(visible(&path), before);
        // Hour 02 was still open at the checkpoint: when the restored job's watermark passes
        // its end, it is marked complete, though no new row arrives for it.
        w.watermark(3 * HOUR_MS * 1_000_000).unwrap();
        w.pre_commit(3).unwrap();
        w.commit(3).unwrap();
        assert!(
            visible(&path).contains_key("dt=1970-01-01/hour=02/_SUCCESS"),
            "{:?}",
            files(&path)
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn recover_from_an_older_checkpoint_deletes_later_files() {
    for commit_1 in [true, false] {
        let root = dir(&format!("eo-older-{commit_1}"));
        let path = root.join("out");
        let sink = FileSinkConnector::parquet(Arc::default());
        let (first, _) = run_until_crash(&sink, &path, commit_1);
        let metrics = Arc::new(SinkMetrics::default());
        let mut w = open_eo(&sink, &path, &[], &metrics);
        w.recover(Some(&first)).unwrap();
        assert!(hidden(&path).is_empty(), "{:?}", files(&path));
        assert_eq!(visible_rows(&path), rows(&[("a", 1), ("b", 2)]));
        assert_eq!(
            shape(&visible(&path)),
            vec![
                "dt=1970-01-01/hour=00/_SUCCESS 0",
                "dt=1970-01-01/hour=00/part.parquet 1",
                "dt=1970-01-01/hour=01/part.parquet 1",
            ]
        );
        // The restarted job writes its rows again, into new names.
        w.write(&batch(&[("c", 3, HOUR_MS + 20)])).unwrap();
        w.pre_commit(2).unwrap();
        w.commit(2).unwrap();
        assert_eq!(visible_rows(&path), rows(&[("a", 1), ("b", 2), ("c", 3)]));
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn recover_without_a_checkpoint_removes_only_hidden_files() {
    let root = dir("eo-none");
    let path = root.join("out");
    let sink = FileSinkConnector::parquet(Arc::default());
    run_until_crash(&sink, &path, true);
    // Other hidden files are not the writer's and stay.
    std::fs::write(path.join(".keep"), b"").unwrap();
    let metrics = Arc::new(SinkMetrics::default());
    let mut w = open_eo(&sink, &path, &[], &metrics);
    w.recover(None).unwrap();
    assert_eq!(hidden(&path), vec![".keep".to_string()]);
    assert_eq!(visible_rows(&path), rows(&[("a", 1), ("b", 2)]));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_bad_commit_record_is_refused_and_deletes_nothing() {
    let root = dir("eo-bad");
    let path = root.join("out");
    let sink = FileSinkConnector::parquet(Arc::default());
    let (first, _) = run_until_crash(&sink, &path, false);
    let before = files(&path);
    let escape = first.replace("dt=1970-01-01", "../../dt=1970-01-01");
    let absolute = first.replace("\"dt=1970-01-01", "\"/tmp/dt=1970-01-01");
    let renamed = first.replace(".parquet.pending", ".parquet.other");
    let visible_source = first.replace("/.part-", "/part-");
    let root_marker = first.replace("\"success\":[", "\"success\":[\"\",");
    assert_ne!(root_marker, first);
    for bad in [
        "",
        "not json",
        "{\"files\": 3}",
        escape.as_str(),
        absolute.as_str(),
        renamed.as_str(),
        visible_source.as_str(),
        root_marker.as_str(),
    ] {
        let metrics = Arc::new(SinkMetrics::default());
        let mut w = open_eo(&sink, &path, &[], &metrics);
        assert!(
            matches!(w.recover(Some(bad)), Err(ConnectorError::Io(_))),
            "{bad}"
        );
        assert_eq!(files(&path), before, "{bad}");
    }
    // A file the record lists that is gone (neither pending nor final) is an error too.
    let gone = first.replace("part-", "part-gone");
    let metrics = Arc::new(SinkMetrics::default());
    let mut w = open_eo(&sink, &path, &[], &metrics);
    assert!(w.recover(Some(&gone)).is_err());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn without_exactly_once_there_is_no_first_phase() {
    let root = dir("eo-off");
    let path = root.join("out");
    let metrics = Arc::new(SinkMetrics::default());
    let sink = FileSinkConnector::parquet(Arc::default());
    let path_text = path.display().to_string();
    let mut w = sink
        .open(context(&[("path", path_text.as_str())], &metrics))
        .unwrap();
    assert!(matches!(
        w.pre_commit(1),
        Err(ConnectorError::Unsupported(_))
    ));
    let _ = std::fs::remove_dir_all(&root);
}
