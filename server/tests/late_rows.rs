//! Late rows as data across a restart: a view created `WITH (late.rows = 'late')` comes back
//! from its checkpoint still writing its late rows to the same table, which the catalog
//! restored first (with the rows it held); a late row dropped before the checkpoint is not
//! appended again, the `late_rows` count continues from the checkpoint, and a client following
//! the table with `COPY ... TO STDOUT` receives the rows as they are dropped.

use std::time::Duration;

use tokio_postgres::Client;

mod common;
use common::{connect_with_socket, start_checkpointing, temp_dir, text_rows as rows};

const INTERVAL: Duration = Duration::from_millis(100);

const SETUP: &str = "
    CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
                       WATERMARK FOR ts AS ts);
    CREATE MATERIALIZED VIEW per_window WITH (late.rows = 'late') AS
      SELECT auction, window_end, count(*) AS n
      FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end;
    INSERT INTO bids VALUES (1, 10, '2024-01-01 00:00:01'), (1, 12, '2024-01-01 00:00:12');";

/// Polls `sql` (bounded) until it returns `expected`.
async fn eventually(client: &Client, sql: &str, expected: &[&str]) {
    let mut last = Vec::new();
    for _ in 0..400 {
        last = rows(client, sql).await;
        if last.iter().map(|r| r.join("|")).collect::<Vec<_>>() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{sql} returned {last:?}, expected {expected:?}");
}

/// The job's last completed checkpoint, once it is past `after` (bounded wait).
async fn checkpoint_after(client: &Client, after: i64) -> i64 {
    let sql = "SELECT last_checkpoint FROM eddy_jobs WHERE name = 'per_window'";
    for _ in 0..400 {
        if let Some(Ok(epoch)) = rows(client, sql).await.first().map(|r| r[0].parse::<i64>())
            && epoch > after
        {
            return epoch;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("per_window completed no checkpoint after {after}");
}

const LATE: &str = "SELECT job, operator, CAST(event_time AS VARCHAR), CAST(watermark AS VARCHAR), \"row\" \
                    FROM late LIMIT 1";
const COUNT: &str = "SELECT late_rows FROM eddy_jobs WHERE name = 'per_window'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_view_keeps_writing_its_late_rows_once() {
    let dir = temp_dir("late-rows-restore");
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, socket) = connect_with_socket(&server).await;
    client.batch_execute(SETUP).await.unwrap();
    eventually(
        &client,
        "SELECT n FROM per_window",
        &["1"], // [00:00:00, 00:00:10) fired at watermark 00:00:12
    )
    .await;
    // 00:00:05 belongs to the fired window: late.
    client
        .batch_execute("INSERT INTO bids VALUES (1, 99, '2024-01-01 00:00:05')")
        .await
        .unwrap();
    eventually(&client, COUNT, &["1"]).await;
    let first = "per_window|WindowAggregate|2024-01-01T00:00:09.999|2024-01-01T00:00:12|\
                 {\"auction\":1,\"window_start\":\"2024-01-01T00:00:00\",\
                 \"window_end\":\"2024-01-01T00:00:10\"}";
    eventually(&client, LATE, &[first]).await;
    // A checkpoint triggered after the drop holds it: the restored job does not drop it again.
    let seen = checkpoint_after(&client, 0).await;
    checkpoint_after(&client, seen + 1).await;
    drop(client);
    socket.abort();
    server.shutdown().await;

    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, _socket) = connect_with_socket(&server).await;
    assert_eq!(
        rows(
            &client,
            "SELECT status, restored_from IS NOT NULL FROM eddy_jobs WHERE name = 'per_window'"
        )
        .await,
        vec![vec!["running".to_string(), "t".to_string()]]
    );
    // The table came back with its row, the count from the checkpoint.
    eventually(&client, COUNT, &["1"]).await;
    eventually(&client, LATE, &[first]).await;
    // A client follows the table (COPY TO STDOUT) on a connection of its own.
    let (follower, _follower_socket) = connect_with_socket(&server).await;
    let copy = follower
        .copy_out("COPY (SELECT job, operator, CAST(event_time AS VARCHAR) FROM late) TO STDOUT")
        .await
        .unwrap();
    let mut copy = std::pin::pin!(copy);
    assert_eq!(
        common::copy_lines(&mut copy, 1).await,
        "per_window\tWindowAggregate\t2024-01-01T00:00:09.999\n"
    );
    // The watermark came back too (00:00:12): 00:00:03 is late, and appended after the first.
    client
        .batch_execute("INSERT INTO bids VALUES (2, 7, '2024-01-01 00:00:03')")
        .await
        .unwrap();
    eventually(&client, COUNT, &["2"]).await;
    let late = rows(&client, "SELECT \"row\" FROM late LIMIT 2").await;
    assert_eq!(
        late,
        vec![
            vec![first.rsplit('|').next().unwrap().to_string()],
            vec![
                "{\"auction\":2,\"window_start\":\"2024-01-01T00:00:00\",\
                 \"window_end\":\"2024-01-01T00:00:10\"}"
                    .to_string()
            ],
        ]
    );
    // The follower receives it as it comes.
    assert_eq!(
        common::copy_lines(&mut copy, 1).await,
        "per_window\tWindowAggregate\t2024-01-01T00:00:09.999\n"
    );
    // SHOW TABLES: exactly two rows, the second not a copy of the first.
    let tables = rows(&client, "SHOW TABLES").await;
    let late_table = tables.iter().find(|r| r[0] == "late").unwrap();
    assert_eq!(late_table[3], "2", "{tables:?}");
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
