//! Materialized views through the server: a view's job outlives the client that created it,
//! `COPY ... TO STDOUT` follows a view (an updating one as a changelog), `DROP MATERIALIZED
//! VIEW` stops the job, and views come back after a restart.

use std::time::Duration;

use futures::{StreamExt, pin_mut};
use tokio_postgres::Client;

mod common;
use common::{
    connect_with_socket, copy_lines, start, temp_dir, text_rows as rows, wait_for_no_tasks,
};

/// Polls `sql` (bounded) until it returns `expected`: a view's job runs on its own.
async fn eventually(client: &Client, sql: &str, expected: &[&[&str]]) {
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect();
    let mut last = Vec::new();
    for _ in 0..200 {
        last = rows(client, sql).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{sql} returned {last:?}, expected {expected:?}");
}

#[tokio::test]
async fn a_view_outlives_its_client_and_drop_stops_its_job() {
    let dir = temp_dir("outlive");
    let server = start(&dir).await;
    let (creator, socket) = connect_with_socket(&server).await;
    creator
        .batch_execute(
            "CREATE TABLE bids (auction BIGINT, price BIGINT);
             CREATE MATERIALIZED VIEW best AS
               SELECT auction, max(price) AS best FROM bids GROUP BY auction",
        )
        .await
        .unwrap();
    // The creating client goes away; the job keeps running.
    drop(creator);
    socket.abort();
    let (client, _socket) = connect_with_socket(&server).await;
    client
        .batch_execute("INSERT INTO bids VALUES (1, 10), (2, 7), (1, 12)")
        .await
        .unwrap();
    eventually(
        &client,
        "SELECT auction, best FROM best ORDER BY auction",
        &[&["1", "12"], &["2", "7"]],
    )
    .await;
    eventually(
        &client,
        "SELECT name, status, rows_in FROM eddy_jobs",
        &[&["best", "running", "3"]],
    )
    .await;
    assert!(server.engine().live_tasks() > 0);
    client
        .batch_execute("DROP MATERIALIZED VIEW best")
        .await
        .unwrap();
    // Its dataflow is gone and so is the job.
    wait_for_no_tasks(&server).await;
    assert!(rows(&client, "SHOW JOBS").await.is_empty());
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn copy_follows_an_updating_view_as_a_changelog() {
    let dir = temp_dir("follow");
    let server = start(&dir).await;
    let (writer, _w) = connect_with_socket(&server).await;
    let (reader, _r) = connect_with_socket(&server).await;
    writer
        .batch_execute(
            "CREATE TABLE bids (auction BIGINT, price BIGINT);
             CREATE MATERIALIZED VIEW totals AS
               SELECT auction, sum(price) AS total FROM bids GROUP BY auction;
             INSERT INTO bids VALUES (1, 10)",
        )
        .await
        .unwrap();
    eventually(&writer, "SELECT * FROM totals", &[&["1", "10"]]).await;
    // A plain SELECT reads the current contents and ends; COPY follows: the contents as `+`
    // rows, then each change.
    let stream = reader
        .copy_out("COPY (SELECT auction, total FROM totals) TO STDOUT")
        .await
        .unwrap();
    pin_mut!(stream);
    assert_eq!(copy_lines(&mut stream, 1).await, "+\t1\t10\n");
    writer
        .batch_execute("INSERT INTO bids VALUES (1, 5)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut stream, 2).await, "-\t1\t10\n+\t1\t15\n");
    writer
        .batch_execute("INSERT INTO bids VALUES (2, 1)")
        .await
        .unwrap();
    assert_eq!(copy_lines(&mut stream, 1).await, "+\t2\t1\n");
    // Dropping the view ends its followers with an error that says so.
    writer
        .batch_execute("DROP MATERIALIZED VIEW totals")
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the follower did not end within 10 s")
        .expect("the COPY ended without an error");
    let error = end.unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000");
    assert_eq!(db.message(), "materialized view \"totals\" was dropped");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn views_come_back_after_a_restart() {
    let dir = temp_dir("restart");
    {
        let server = start(&dir).await;
        let (client, _socket) = connect_with_socket(&server).await;
        client
            .batch_execute(
                "CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
                   WATERMARK FOR ts AS ts);
                 CREATE MATERIALIZED VIEW per_window AS
                   SELECT auction, window_start, count(*) AS n
                   FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)
                   GROUP BY auction, window_start, window_end;
                 CREATE MATERIALIZED VIEW totals AS
                   SELECT auction, sum(n) AS n FROM per_window GROUP BY auction;
                 INSERT INTO bids VALUES (1, 10, '2024-01-01 00:00:01'),
                   (1, 11, '2024-01-01 00:00:02'), (2, 5, '2024-01-01 00:00:03'),
                   (1, 12, '2024-01-01 00:00:30')",
            )
            .await
            .unwrap();
        eventually(
            &client,
            "SELECT * FROM totals ORDER BY auction",
            &[&["1", "2"], &["2", "1"]],
        )
        .await;
        server.shutdown().await;
    }
    // The catalog replays the views; their jobs recompute from the table's saved rows.
    let server = start(&dir).await;
    let (client, _socket) = connect_with_socket(&server).await;
    eventually(
        &client,
        "SELECT name, status FROM eddy_jobs ORDER BY name",
        &[&["per_window", "running"], &["totals", "running"]],
    )
    .await;
    eventually(
        &client,
        "SELECT auction, window_start, n FROM per_window ORDER BY auction",
        &[
            &["1", "2024-01-01 00:00:00", "2"],
            &["2", "2024-01-01 00:00:00", "1"],
        ],
    )
    .await;
    eventually(
        &client,
        "SELECT * FROM totals ORDER BY auction",
        &[&["1", "2"], &["2", "1"]],
    )
    .await;
    // And they keep following their inputs.
    client
        .batch_execute("INSERT INTO bids VALUES (2, 1, '2024-01-01 00:01:00')")
        .await
        .unwrap();
    eventually(
        &client,
        "SELECT * FROM totals ORDER BY auction",
        &[&["1", "3"], &["2", "1"]],
    )
    .await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
