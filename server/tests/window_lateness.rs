//! Early results (`EMIT ON UPDATE`) and allowed lateness (`WITH (allowed.lateness = ...)`) of
//! window aggregates: a continuous query with `EMIT ON UPDATE` streams each window's changes to
//! the client as rows arrive (the user guide's example); across a restart, views checkpoint the
//! windows they may still update (the slices and the rows each window last emitted; for
//! SESSION windows the kept sessions with the rows they emitted), and a job restored in the
//! middle of a window goes on updating it exactly as an uninterrupted job would.

use std::time::Duration;

use futures::{Stream, StreamExt, pin_mut};
use tokio_postgres::Client;

mod common;
use common::{
    connect_with_socket, eventually, start_checkpointing, table, temp_dir, text_rows as rows,
};

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

/// Session windows of 5 s per key over a push table whose watermark is the latest ts:
/// `s_late` keeps a session 3 s after it closes, `s_early` shows each as it grows.
const SESSION_SETUP: &str = "
    CREATE TABLE st (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts);
    CREATE MATERIALIZED VIEW s_late WITH (allowed.lateness = '3 seconds') AS
      SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total
      FROM SESSION(st, ts, INTERVAL '5' SECOND, k) GROUP BY k, window_start, window_end;
    CREATE MATERIALIZED VIEW s_early AS
      SELECT k, window_start, window_end, count(*) AS n, sum(v) AS total
      FROM SESSION(st, ts, INTERVAL '5' SECOND, k) GROUP BY k, window_start, window_end
      EMIT ON UPDATE;
    INSERT INTO st VALUES (1, 10, '2024-01-01 00:00:00');
    INSERT INTO st VALUES (1, 20, '2024-01-01 00:00:02');
    INSERT INTO st VALUES (2, 1, '2024-01-01 00:00:08');";

fn session_query(view: &str) -> String {
    format!(
        "SELECT k, CAST(window_start AS VARCHAR) AS s, CAST(window_end AS VARCHAR) AS e, n, \
         total FROM {view} ORDER BY k, s"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_may_still_change_resume_from_a_checkpoint() {
    let dir = temp_dir("session-lateness");
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, socket) = connect_with_socket(&server).await;
    client.batch_execute(SESSION_SETUP).await.unwrap();
    // Watermark 00:00:08: key 1's [0, 7) has closed (s_late keeps it until 00:00:10); key
    // 2's [8, 13) is open, shown only by s_early.
    eventually(
        &client,
        &session_query("s_late"),
        &[&["1", "2024-01-01T00:00:00", "2024-01-01T00:00:07", "2", "30"]],
    )
    .await;
    eventually(
        &client,
        &session_query("s_early"),
        &[
            &["1", "2024-01-01T00:00:00", "2024-01-01T00:00:07", "2", "30"],
            &["2", "2024-01-01T00:00:08", "2024-01-01T00:00:13", "1", "1"],
        ],
    )
    .await;
    checkpointed(&client, "s_late").await;
    checkpointed(&client, "s_early").await;
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
        table(&[&["s_early", "t", "running"], &["s_late", "t", "running"]])
    );
    eventually(
        &client,
        &session_query("s_late"),
        &[&["1", "2024-01-01T00:00:00", "2024-01-01T00:00:07", "2", "30"]],
    )
    .await;
    // 00:00:06 stretches the closed [0, 7) to [0, 11), past the watermark: the restored
    // SESSION retracts the rows its predecessor emitted (s_late loses the row), then emits
    // the grown session when it closes. For s_early the row is late.
    client
        .batch_execute("INSERT INTO st VALUES (1, 5, '2024-01-01 00:00:06')")
        .await
        .unwrap();
    eventually(&client, &session_query("s_late"), &[]).await;
    // 00:00:11: [0, 11) closes; key 2's restored session grows to [8, 16) in s_early.
    client
        .batch_execute("INSERT INTO st VALUES (2, 2, '2024-01-01 00:00:11')")
        .await
        .unwrap();
    eventually(
        &client,
        &session_query("s_late"),
        &[&["1", "2024-01-01T00:00:00", "2024-01-01T00:00:11", "3", "35"]],
    )
    .await;
    eventually(
        &client,
        &session_query("s_early"),
        &[
            &["1", "2024-01-01T00:00:00", "2024-01-01T00:00:07", "2", "30"],
            &["2", "2024-01-01T00:00:08", "2024-01-01T00:00:16", "2", "3"],
        ],
    )
    .await;
    eventually(
        &client,
        "SELECT name, late_rows FROM eddy_jobs ORDER BY name",
        &[&["s_early", "1"], &["s_late", "0"]],
    )
    .await;
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How long to wait for a row that must come (generous: CI machines are slow).
const ROW_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to watch for a row that must not come.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// The next COPY rows, as text (one chunk: the rows of one change may come together).
async fn next_rows<S>(stream: &mut std::pin::Pin<&mut S>, waiting_for: &str) -> String
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    let chunk = tokio::time::timeout(ROW_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{waiting_for} not emitted within {ROW_TIMEOUT:?}"))
        .expect("the query over a push table never ends")
        .unwrap();
    String::from_utf8(chunk.to_vec()).unwrap()
}

/// The next `n` COPY rows.
async fn rows_of<S>(stream: &mut std::pin::Pin<&mut S>, n: usize, waiting_for: &str) -> String
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    let mut text = String::new();
    while text.lines().count() < n {
        text.push_str(&next_rows(stream, waiting_for).await);
    }
    text
}

/// Fails if a row arrives within [`QUIET_PERIOD`].
async fn assert_no_row<S>(stream: &mut std::pin::Pin<&mut S>, why: &str)
where
    S: Stream<Item = Result<bytes::Bytes, tokio_postgres::Error>>,
{
    if let Ok(item) = tokio::time::timeout(QUIET_PERIOD, stream.next()).await {
        let row = item.map(|r| r.map(|b| String::from_utf8_lossy(&b).into_owned()));
        panic!("{why}, but the query emitted {row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_on_update_streams_each_window_as_it_fills() {
    let dir = temp_dir("window-early");
    let server = common::start(&dir).await;
    let (writer, _) = connect_with_socket(&server).await;
    let (reader, _reader_socket) = connect_with_socket(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE page_views (user_id BIGINT, page VARCHAR, ts TIMESTAMP(3), \
             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)",
        )
        .await
        .unwrap();
    let stream = reader
        .copy_out(
            "COPY (SELECT window_start, page, count(*) AS views \
             FROM TUMBLE(page_views, ts, INTERVAL '1' MINUTE) \
             GROUP BY window_start, window_end, page EMIT ON UPDATE) TO STDOUT",
        )
        .await
        .unwrap();
    pin_mut!(stream);
    let insert = |values: &'static str| {
        let writer = &writer;
        async move {
            writer
                .batch_execute(&format!("INSERT INTO page_views VALUES {values}"))
                .await
                .unwrap()
        }
    };
    // The window [10:00, 10:01) shows up with its first row, long before it closes.
    insert("(1, 'home', '2024-01-01 10:00:10')").await;
    assert_eq!(
        rows_of(&mut stream, 1, "the first row").await,
        "+\t2024-01-01 10:00:00\thome\t1\n"
    );
    insert("(2, 'home', '2024-01-01 10:00:20')").await;
    assert_eq!(
        rows_of(&mut stream, 2, "the update").await,
        "-\t2024-01-01 10:00:00\thome\t1\n+\t2024-01-01 10:00:00\thome\t2\n"
    );
    // Watermark 10:01:05 closes [10:00, 10:01): nothing more for it; [10:01, 10:02) opens.
    insert("(3, 'home', '2024-01-01 10:01:10')").await;
    assert_eq!(
        rows_of(&mut stream, 1, "the next window").await,
        "+\t2024-01-01 10:01:00\thome\t1\n"
    );
    // A row of the closed window is late: dropped, nothing emitted.
    insert("(4, 'home', '2024-01-01 10:00:30')").await;
    assert_no_row(&mut stream, "a late row changes no window").await;
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
