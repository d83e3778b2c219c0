//! Early results (`EMIT ON UPDATE`) and allowed lateness (`WITH (allowed.lateness = ...)`) of
//! window aggregates across a restart: views checkpoint the windows they may still update
//! (the slices and the rows each window last emitted), and a job restored in the middle of a
//! window goes on updating it exactly as an uninterrupted job would.

use std::time::Duration;

use tokio_postgres::Client;

mod common;
use common::{connect_with_socket, start_checkpointing, temp_dir, text_rows as rows};

const INTERVAL: Duration = Duration::from_millis(100);

/// The watermark is the latest ts. `late` fires [0, 10) at 9.999 s and keeps it until the
/// watermark passes 14.999 s; `early` shows each window as it fills.
const SETUP: &str = "
    CREATE TABLE t (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts);
    CREATE MATERIALIZED VIEW late WITH (allowed.lateness = '5 seconds') AS
      SELECT k, window_start, count(*) AS n, sum(v) AS total
      FROM TUMBLE(t, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end;
    CREATE MATERIALIZED VIEW early AS
      SELECT k, window_start, count(*) AS n, sum(v) AS total
      FROM TUMBLE(t, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end
      EMIT ON UPDATE;
    INSERT INTO t VALUES (1, 10, '2024-01-01 00:00:01');
    INSERT INTO t VALUES (1, 20, '2024-01-01 00:00:12');";

fn query(view: &str) -> String {
    format!("SELECT k, CAST(window_start AS VARCHAR) AS w, n, total FROM {view} ORDER BY w, k")
}

fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect()
}

/// Polls `sql` (bounded) until it returns `expected`.
async fn eventually(client: &Client, sql: &str, expected: &[&[&str]]) {
    let expected = table(expected);
    let mut last = Vec::new();
    for _ in 0..400 {
        last = rows(client, sql).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{sql} returned {last:?}, expected {expected:?}");
}

/// Waits for a checkpoint of `job` triggered after the rows seen so far.
async fn checkpointed(client: &Client, job: &str) {
    let sql = format!("SELECT coalesce(last_checkpoint, 0) FROM eddy_jobs WHERE name = '{job}'");
    let epoch = |r: Vec<Vec<String>>| r.first().and_then(|r| r[0].parse::<i64>().ok());
    let seen = epoch(rows(client, &sql).await).unwrap_or(0);
    for _ in 0..400 {
        if epoch(rows(client, &sql).await).is_some_and(|e| e > seen + 1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job} completed no checkpoint after {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_that_may_still_update_resume_from_a_checkpoint() {
    let dir = temp_dir("window-lateness");
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, socket) = connect_with_socket(&server).await;
    client.batch_execute(SETUP).await.unwrap();
    // Watermark 00:00:12: late has fired [0, 10); early has it and the open [10, 20).
    eventually(
        &client,
        &query("late"),
        &[&["1", "2024-01-01T00:00:00", "1", "10"]],
    )
    .await;
    eventually(
        &client,
        &query("early"),
        &[
            &["1", "2024-01-01T00:00:00", "1", "10"],
            &["1", "2024-01-01T00:00:10", "1", "20"],
        ],
    )
    .await;
    checkpointed(&client, "late").await;
    checkpointed(&client, "early").await;
    drop(client);
    socket.abort();
    server.shutdown().await;

    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let restored = rows(
        &client,
        "SELECT name, restored_from IS NOT NULL, status FROM eddy_jobs ORDER BY name",
    )
    .await;
    assert_eq!(
        restored,
        table(&[&["early", "t", "running"], &["late", "t", "running"]])
    );
    // A row for [0, 10) within the lateness: late updates its row (the restored job retracts
    // the row its predecessor emitted); for early it is late.
    client
        .batch_execute("INSERT INTO t VALUES (1, 5, '2024-01-01 00:00:08')")
        .await
        .unwrap();
    eventually(
        &client,
        &query("late"),
        &[&["1", "2024-01-01T00:00:00", "2", "15"]],
    )
    .await;
    // A row for the open [10, 20): early adds it to the restored window.
    client
        .batch_execute("INSERT INTO t VALUES (1, 30, '2024-01-01 00:00:13')")
        .await
        .unwrap();
    eventually(
        &client,
        &query("early"),
        &[
            &["1", "2024-01-01T00:00:00", "1", "10"],
            &["1", "2024-01-01T00:00:10", "2", "50"],
        ],
    )
    .await;
    eventually(
        &client,
        "SELECT name, late_rows FROM eddy_jobs ORDER BY name",
        &[&["early", "1"], &["late", "0"]],
    )
    .await;
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
