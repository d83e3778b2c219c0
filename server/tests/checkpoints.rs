//! Checkpoints through the server: views resume from their last checkpoint after a restart
//! (`restored_from`), exactly, and go on; a torn checkpoint is ignored; one of another format
//! version is refused with a message in `eddy_jobs`, and the view can be dropped and re-created.
//! (`sql-tests/clients/test_crash.py` kills a real server with SIGKILL.)

use std::path::Path;
use std::time::Duration;

use tokio_postgres::Client;

mod common;
use common::{connect_with_socket, start_checkpointing, temp_dir, text_rows as rows};

const INTERVAL: Duration = Duration::from_millis(100);

const SETUP: &str = "
    CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
                       WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
    CREATE MATERIALIZED VIEW per_window AS
      SELECT auction, window_end, count(*) AS n, sum(price) AS total
      FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end;
    CREATE MATERIALIZED VIEW best AS SELECT auction, max(price) AS best FROM bids GROUP BY auction;
    INSERT INTO bids VALUES (1, 10, '2024-01-01 00:00:01'), (2, 7, '2024-01-01 00:00:02');
    INSERT INTO bids VALUES (1, 12, '2024-01-01 00:00:05'), (1, 3, '2024-01-01 00:00:12');";

const WINDOWS: &str = "SELECT auction, CAST(window_end AS VARCHAR) AS w, n, total \
                       FROM per_window ORDER BY w, auction";
const BEST: &str = "SELECT auction, best FROM best ORDER BY auction";

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

/// The job's last completed checkpoint (bounded wait for one at least `after`).
async fn checkpoint_after(client: &Client, job: &str, after: i64) -> i64 {
    let sql = format!("SELECT last_checkpoint FROM eddy_jobs WHERE name = '{job}'");
    for _ in 0..400 {
        if let Some(Ok(epoch)) = rows(client, &sql)
            .await
            .first()
            .map(|r| r[0].parse::<i64>())
            && epoch > after
        {
            return epoch;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job} completed no checkpoint after {after}");
}

/// Waits until both views show the first rows, then until each job has completed a
/// checkpoint triggered after that (so it holds them).
async fn first_rows_checkpointed(client: &Client) -> (i64, i64) {
    eventually(
        client,
        WINDOWS,
        &[
            &["1", "2024-01-01T00:00:10", "2", "22"],
            &["2", "2024-01-01T00:00:10", "1", "7"],
        ],
    )
    .await;
    eventually(client, BEST, &[&["1", "12"], &["2", "7"]]).await;
    let mut epochs = Vec::new();
    for job in ["per_window", "best"] {
        let seen = checkpoint_after(client, job, 0).await;
        epochs.push(checkpoint_after(client, job, seen + 1).await);
    }
    (epochs[0], epochs[1])
}

fn checkpoint_dir(dir: &Path, job: &str) -> std::path::PathBuf {
    dir.join("checkpoints").join(job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_resume_from_their_checkpoint_exactly_after_a_restart() {
    let dir = temp_dir("ckpt-resume");
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, socket) = connect_with_socket(&server).await;
    client.batch_execute(SETUP).await.unwrap();
    first_rows_checkpointed(&client).await;
    let checkpoints = rows(
        &client,
        "SELECT DISTINCT job, status FROM eddy_checkpoints WHERE status = 'completed' \
         ORDER BY job",
    )
    .await;
    assert_eq!(
        checkpoints,
        table(&[&["best", "completed"], &["per_window", "completed"]]),
        "SHOW CHECKPOINTS lists completed checkpoints of both jobs"
    );
    drop(client);
    socket.abort();
    server.shutdown().await;

    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let restored = rows(
        &client,
        "SELECT name, restored_from IS NOT NULL, status, coalesce(error, '') FROM eddy_jobs ORDER BY name",
    )
    .await;
    assert_eq!(
        restored,
        table(&[
            &["best", "t", "running", ""],
            &["per_window", "t", "running", ""]
        ])
    );
    // The views hold what they held, once, and go on from there.
    eventually(
        &client,
        WINDOWS,
        &[
            &["1", "2024-01-01T00:00:10", "2", "22"],
            &["2", "2024-01-01T00:00:10", "1", "7"],
        ],
    )
    .await;
    client
        .batch_execute("INSERT INTO bids VALUES (2, 30, '2024-01-01 00:00:25')")
        .await
        .unwrap();
    eventually(
        &client,
        WINDOWS,
        &[
            &["1", "2024-01-01T00:00:10", "2", "22"],
            &["2", "2024-01-01T00:00:10", "1", "7"],
            &["1", "2024-01-01T00:00:20", "1", "3"],
        ],
    )
    .await;
    eventually(&client, BEST, &[&["1", "12"], &["2", "30"]]).await;
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_checkpoint_is_ignored_and_another_version_refused() {
    let dir = temp_dir("ckpt-torn");
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, socket) = connect_with_socket(&server).await;
    client.batch_execute(SETUP).await.unwrap();
    first_rows_checkpointed(&client).await;
    drop(client);
    socket.abort();
    server.shutdown().await;

    // A crash while writing the next checkpoint leaves a folder without its final name.
    let best = checkpoint_dir(&dir, "best");
    let complete: Vec<i64> = std::fs::read_dir(&best)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(complete.len(), 1, "only the latest checkpoint is kept");
    let torn = best.join(format!("{}.inprogress", complete[0] + 1));
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("op-0-0.state"), b"half").unwrap();

    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, socket) = connect_with_socket(&server).await;
    let restored = rows(
        &client,
        "SELECT restored_from FROM eddy_jobs WHERE name = 'best'",
    )
    .await;
    assert_eq!(restored, vec![vec![complete[0].to_string()]]);
    eventually(&client, BEST, &[&["1", "12"], &["2", "7"]]).await;
    assert!(!torn.exists(), "the torn checkpoint is deleted");
    // Let the restored job take a checkpoint of its own, then stop.
    checkpoint_after(&client, "best", complete[0]).await;
    drop(client);
    socket.abort();
    server.shutdown().await;

    // A checkpoint written by another format version is refused, never misread.
    for entry in std::fs::read_dir(&best).unwrap() {
        let manifest = entry.unwrap().path().join("manifest.json");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replace(
                &format!(
                    "\"format_version\": {}",
                    eddy_engine::checkpoints::FORMAT_VERSION
                ),
                "\"format_version\": 99",
            ),
        )
        .unwrap();
    }
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let status = rows(
        &client,
        "SELECT status, error FROM eddy_jobs WHERE name = 'best'",
    )
    .await;
    assert_eq!(status[0][0], "failed");
    assert!(
        status[0][1].contains("format version 99") && status[0][1].contains("drop and re-create"),
        "{status:?}"
    );
    // The other job is not affected, and the refused view can be dropped and re-created.
    let windows = rows(
        &client,
        "SELECT status FROM eddy_jobs WHERE name = 'per_window'",
    )
    .await;
    assert_eq!(windows, table(&[&["running"]]));
    client
        .batch_execute(
            "DROP MATERIALIZED VIEW best;
             CREATE MATERIALIZED VIEW best AS SELECT auction, max(price) AS best FROM bids GROUP BY auction",
        )
        .await
        .unwrap();
    eventually(&client, BEST, &[&["1", "12"], &["2", "7"]]).await;
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
