//! Sinks and COPY TO a file through the server: the files a sink over a bounded Nexmark
//! source leaves (rows, partitions, `_SUCCESS` markers), commits driven by the watermark, a
//! sink failing visibly without harming finished files, `--allow-path`, and restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDateTime;
use datafusion::arrow::array::{Array, Int64Array, TimestampMillisecondArray};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use eddy_server::{Server, ServerConfig};
use tokio_postgres::Client;

mod common;
use common::{connect_with_socket, start, temp_dir, text_rows as rows};

/// Polls the job named `name` (bounded) until its status is `status`; returns its row.
async fn job_status(client: &Client, name: &str, status: &str) -> Vec<String> {
    let sql = format!("SELECT status, error FROM eddy_jobs WHERE name = '{name}'");
    let mut last = Vec::new();
    for _ in 0..400 {
        last = rows(client, &sql).await;
        if last.first().is_some_and(|r| r[0] == status) {
            return last.remove(0);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {name}: {last:?}, expected status {status}");
}

/// Polls until the only job has handed `n` rows to its sink.
async fn wait_for_rows_out(client: &Client, n: &str) {
    for _ in 0..400 {
        if rows(client, "SELECT rows_out FROM eddy_jobs").await == [[n]] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the sink never received {n} rows");
}

/// Every file under `root`, relative path to full path.
/// Waits (bounded) until sink `name` has completed a checkpoint triggered after this call.
async fn wait_for_checkpoint_after_now(client: &Client, name: &str) {
    let sql = format!("SELECT last_checkpoint FROM eddy_jobs WHERE name = '{name}'");
    let epoch = |rows: Vec<Vec<String>>| -> i64 {
        rows.first().and_then(|r| r[0].parse().ok()).unwrap_or(0)
    };
    let now = epoch(rows(client, &sql).await);
    for _ in 0..400 {
        if epoch(rows(client, &sql).await) > now + 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("sink {name} completed no checkpoint");
}

fn walk(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, path);
            }
        }
    }
    out
}

/// (auction, window_end in ms, count) of every row of a Parquet file.
fn window_rows(path: &Path) -> Vec<(i64, i64, i64)> {
    let file = std::fs::File::open(path).unwrap();
    let mut out = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let column = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let auction = column("auction");
        let auction = auction.as_any().downcast_ref::<Int64Array>().unwrap();
        let end = column("window_end");
        let end = end
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("window_end is a millisecond timestamp in the file");
        let n = column("n");
        let n = n.as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..batch.num_rows() {
            out.push((auction.value(i), end.value(i), n.value(i)));
        }
    }
    out
}

fn millis(text: &str) -> i64 {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

const WINDOWS: &str = "SELECT auction, window_start, window_end, count(*) AS n \
     FROM TUMBLE(bids, date_time, INTERVAL '1' SECOND) \
     GROUP BY auction, window_start, window_end";

#[tokio::test]
async fn a_sink_over_bounded_nexmark_writes_every_row_in_its_partition() {
    let dir = temp_dir("nexmark-sink");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let out = dir.join("out");
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
             WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '30000');
             CREATE SINK windows AS {WINDOWS}
             WITH (connector = 'parquet', path = '{}', partition.pattern = 'dt=%Y-%m-%d/t=%H%M%S',
                   row_group.size = '50')",
            out.display()
        ))
        .await
        .unwrap();
    job_status(&client, "windows", "finished").await;
    // The same query over pgwire: what the files must hold.
    let mut expected: Vec<(i64, i64, i64)> = rows(&client, WINDOWS)
        .await
        .iter()
        .map(|r| (r[0].parse().unwrap(), millis(&r[2]), r[3].parse().unwrap()))
        .collect();
    expected.sort_unstable();
    assert!(expected.len() > 100, "{} windows", expected.len());

    let files = walk(&out);
    assert!(files.keys().all(|f| !f.contains("inprogress")), "{files:?}");
    assert!(
        files.contains_key("_SUCCESS"),
        "the finished sink marks its folder"
    );
    let mut written = Vec::new();
    let mut folders = std::collections::BTreeSet::new();
    for (rel, path) in &files {
        if !rel.ends_with(".parquet") {
            continue;
        }
        let folder = Path::new(rel).parent().unwrap().display().to_string();
        for row in window_rows(path) {
            // Each row is in the partition of its window_end's second.
            let end = chrono::DateTime::from_timestamp_millis(row.1).unwrap();
            assert_eq!(folder, end.format("dt=%Y-%m-%d/t=%H%M%S").to_string());
            written.push(row);
        }
        folders.insert(folder);
    }
    written.sort_unstable();
    assert_eq!(written, expected, "the files hold exactly the query's rows");
    assert!(folders.len() > 1, "{folders:?}");
    // Every partition is complete: the watermark passed its end when the input ended.
    for folder in &folders {
        assert!(
            files.contains_key(&format!("{folder}/_SUCCESS")),
            "{folder} has no _SUCCESS"
        );
    }
    // A partition's windows arrive in one batch when the watermark passes them: one file each.
    let parquet_files = files.keys().filter(|f| f.ends_with(".parquet")).count();
    assert_eq!(parquet_files, folders.len());

    let sinks = rows(&client, "SHOW SINKS").await;
    assert_eq!(sinks.len(), 1);
    let sink = &sinks[0];
    assert_eq!(sink[0..2], ["windows".to_string(), "parquet".to_string()]);
    assert_eq!(sink[4], "finished");
    assert_eq!(sink[5], expected.len().to_string(), "rows");
    assert_eq!(sink[6], parquet_files.to_string(), "files");
    assert_eq!(sink[7], folders.len().to_string(), "partitions committed");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn commits_follow_the_watermark_and_a_failure_spares_finished_files() {
    let dir = temp_dir("sink-failure");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let out = dir.join("out");
    client
        .batch_execute(&format!(
            "CREATE TABLE events (k VARCHAR, ts TIMESTAMP(3), WATERMARK FOR ts AS ts);
             CREATE SINK hourly FROM events
             WITH (connector = 'parquet', path = '{}', partition.pattern = 'h=%Y%m%d%H',
                   checkpoint.interval = '100ms');
             INSERT INTO events VALUES ('a', '2024-01-01 10:00:00'), ('b', '2024-01-01 10:59:00');
             INSERT INTO events VALUES ('c', '2024-01-01 11:00:00');",
            out.display()
        ))
        .await
        .unwrap();
    let hour10 = out.join("h=2024010110");
    for _ in 0..400 {
        if hour10.join("_SUCCESS").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let files = walk(&out);
    let finished: Vec<&String> = files
        .keys()
        .filter(|f| f.starts_with("h=2024010110/part-"))
        .collect();
    assert_eq!(finished.len(), 1, "{files:?}");
    assert!(files.contains_key("h=2024010110/_SUCCESS"));
    // Hour 11 is not over: no _SUCCESS. Its rows are in a hidden file in progress, or, once a
    // checkpoint covered them, in a committed file (a checkpoint finishes the open files, as
    // Flink's bulk formats roll on every checkpoint); the partition is marked complete only
    // when the watermark passes its end.
    assert!(!files.contains_key("h=2024010111/_SUCCESS"));
    // A file where hour 12's folder must go: the sink cannot write, and fails.
    std::fs::write(out.join("h=2024010112"), b"in the way").unwrap();
    client
        .batch_execute("INSERT INTO events VALUES ('d', '2024-01-01 12:00:00')")
        .await
        .unwrap();
    let failed = job_status(&client, "hourly", "failed").await;
    assert!(failed[1].contains("h=2024010112"), "{failed:?}");
    let sinks = rows(&client, "SHOW SINKS").await;
    assert_eq!(sinks[0][4], "failed");
    // The finished file is untouched and whole; the unfinished one is gone.
    let after = walk(&out);
    assert!(
        after.keys().all(|f| !f.ends_with(".inprogress")),
        "{after:?}"
    );
    let file = std::fs::File::open(&after[finished[0].as_str()]).unwrap();
    let read: usize = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(read, 2);
    client.batch_execute("DROP SINK hourly").await.unwrap();
    assert!(rows(&client, "SHOW SINKS").await.is_empty());
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn allow_path_opens_a_directory_and_nothing_else() {
    let dir = temp_dir("allow-path");
    let extra = temp_dir("allow-path-extra");
    let other = temp_dir("allow-path-other");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.clone()),
        parallelism: 1,
        allowed_paths: vec![extra.clone()],
        checkpoint_interval: std::time::Duration::from_secs(10),
        checkpoint_timeout: eddy_engine::checkpoints::DEFAULT_TIMEOUT,
        security: Default::default(),
        client_send_timeout: eddy_server::wire::send_timeout::DEFAULT_CLIENT_SEND_TIMEOUT,
        test_faults: false,
        max_memory: None,
        client_follow_buffer: Some(eddy_engine::session::DEFAULT_CLIENT_FOLLOW_BUFFER),
    })
    .await
    .unwrap();
    let (client, _socket) = connect_with_socket(&server).await;
    let copy = |path: PathBuf| format!("COPY (SELECT 1 AS a) TO '{}'", path.display());
    client
        .batch_execute(&copy(extra.join("one.parquet")))
        .await
        .unwrap();
    assert!(extra.join("one.parquet").exists());
    client
        .batch_execute(&copy(dir.join("in-data-dir.parquet")))
        .await
        .unwrap();
    // A symbolic link inside an allowed directory does not lead out of it.
    std::os::unix::fs::symlink(&other, extra.join("link")).unwrap();
    for path in [other.join("x.parquet"), extra.join("link/x.parquet")] {
        let err = client.batch_execute(&copy(path.clone())).await.unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{path:?}: {err:?}"
        );
    }
    assert!(walk(&other).is_empty());
    server.shutdown().await;
    for d in [dir, extra, other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test]
async fn a_sink_comes_back_after_a_restart() {
    let dir = temp_dir("sink-restart");
    let out = dir.join("out");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE events (k VARCHAR, v BIGINT);
             CREATE SINK copy_out FROM events WITH (connector = 'file', format = 'csv', path = '{}',
                                                    checkpoint.interval = '100ms');
             INSERT INTO events VALUES ('a', 1);",
            out.display()
        ))
        .await
        .unwrap();
    wait_for_rows_out(&client, "1").await;
    // A checkpoint taken after the row arrived covers it and makes its file visible.
    wait_for_checkpoint_after_now(&client, "copy_out").await;
    server.shutdown().await;
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    job_status(&client, "copy_out", "running").await;
    let restored = rows(&client, "SELECT restored_from IS NOT NULL FROM eddy_jobs").await;
    assert_eq!(restored, [["t"]]);
    client
        .batch_execute("INSERT INTO events VALUES ('b', 2)")
        .await
        .unwrap();
    // The restored job resumes after a,1: only b,2 is new. Dropping it finishes its file.
    wait_for_rows_out(&client, "1").await;
    client.batch_execute("DROP SINK copy_out").await.unwrap();
    let text: String = walk(&out)
        .iter()
        .filter(|(f, _)| f.ends_with(".csv"))
        .map(|(_, p)| std::fs::read_to_string(p).unwrap())
        .collect();
    // Exactly once: the checkpoint committed a,1's file, and the restarted job went on from
    // there instead of exporting the table again.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["a,1", "b,2"]);
    assert!(walk(&out).keys().all(|f| !f.ends_with(".inprogress")));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_finished_sink_is_not_run_again_after_a_restart() {
    let dir = temp_dir("sink-finished-restart");
    let out = dir.join("out");
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '500');
             CREATE SINK all_bids AS SELECT auction, price FROM bids
             WITH (connector = 'parquet', path = '{}');",
            out.display()
        ))
        .await
        .unwrap();
    job_status(&client, "all_bids", "finished").await;
    let before = walk(&out);
    assert!(before.contains_key("_SUCCESS"));
    // Its input ended before its first interval: its one checkpoint is the final one.
    assert_eq!(
        rows(&client, "SELECT epoch, status FROM eddy_checkpoints").await,
        [["1", "completed"]]
    );
    server.shutdown().await;

    // Its final checkpoint and its folder say the export is complete: the restored sink
    // does not export it twice. Either says it alone (a crash between the folder's
    // `_SUCCESS` and the final checkpoint leaves only the first).
    let marker = out.join("_SUCCESS");
    let checkpoints = dir.join("checkpoints").join("all_bids");
    let saved = dir.join("saved-checkpoints");
    for (case, restored_from) in [("both", "1"), ("checkpoint", "1"), ("folder", "NULL")] {
        match case {
            "checkpoint" => std::fs::remove_file(&marker).unwrap(),
            "folder" => {
                std::fs::write(&marker, b"").unwrap();
                std::fs::rename(&checkpoints, &saved).unwrap();
            }
            _ => {}
        }
        let server = start(&dir).await;
        let (client, _socket) = connect_with_socket(&server).await;
        job_status(&client, "all_bids", "finished").await;
        assert_eq!(
            rows(&client, "SELECT restored_from, rows_in FROM eddy_jobs").await,
            [[restored_from, "0"]],
            "{case}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut expected: Vec<&String> = before.keys().collect();
        if case == "checkpoint" {
            expected.retain(|f| *f != "_SUCCESS");
        }
        assert_eq!(walk(&out).keys().collect::<Vec<_>>(), expected, "{case}");
        server.shutdown().await;
    }
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;

    // Created anew, a sink over the folder runs: the marker goes while it writes and comes
    // back when its input ends.
    client
        .batch_execute(&format!(
            "DROP SINK all_bids;
             CREATE SINK all_bids AS SELECT auction, price FROM bids
             WITH (connector = 'parquet', path = '{}');",
            out.display()
        ))
        .await
        .unwrap();
    job_status(&client, "all_bids", "finished").await;
    let after = walk(&out);
    assert!(after.contains_key("_SUCCESS"));
    let parquet = |files: &BTreeMap<String, PathBuf>| {
        files.keys().filter(|f| f.ends_with(".parquet")).count()
    };
    assert_eq!(parquet(&after), 2 * parquet(&before));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
