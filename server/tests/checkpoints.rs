//! Checkpoints through the server: views resume from their last checkpoint after a restart
//! (`restored_from`), exactly, and go on; a torn checkpoint is ignored; one of another format
//! version is refused with a message in `eddy_jobs`, and the view can be dropped and re-created.
//! A view whose bounded input ended writes a final checkpoint and comes back from it without
//! reading its source again; `checkpoint.timeout` fails a checkpoint whose barrier is late.
//! (`sql-tests/clients/test_crash.py` kills a real server with SIGKILL.)

use std::path::Path;
use std::time::Duration;

use tokio_postgres::Client;

mod common;
use common::{
    connect_with_socket, eventually, start_checkpointing, table, temp_dir, text_rows as rows,
};

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

/// Polls `eddy_jobs` (bounded) until job `name` has `status`.
async fn job_status(client: &Client, name: &str, status: &str) {
    let sql = format!("SELECT status, coalesce(error, '') FROM eddy_jobs WHERE name = '{name}'");
    let mut last = Vec::new();
    for _ in 0..400 {
        last = rows(client, &sql).await;
        if last.first().is_some_and(|r| r[0] == status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {name} is not {status}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_view_keeps_its_final_checkpoint_and_is_not_run_again() {
    let dir = temp_dir("ckpt-final");
    let input = dir.join("input");
    std::fs::create_dir_all(&input).unwrap();
    let csv = input.join("bids.csv");
    std::fs::write(
        &csv,
        "1,10,2024-01-01 00:00:01\n2,7,2024-01-01 00:00:02\n\
         1,12,2024-01-01 00:00:05\n1,3,2024-01-01 00:00:12\n",
    )
    .unwrap();
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, socket) = connect_with_socket(&server).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
                                 WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
               WITH (connector = 'file', path = '{}', format = 'csv');
             CREATE MATERIALIZED VIEW per_window AS
               SELECT auction, window_end, count(*) AS n, sum(price) AS total
               FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)
               GROUP BY auction, window_start, window_end;
             CREATE MATERIALIZED VIEW best AS
               SELECT auction, max(price) AS best FROM bids GROUP BY auction",
            csv.display()
        ))
        .await
        .unwrap();
    for job in ["per_window", "best"] {
        job_status(&client, job, "finished").await;
    }
    // The end of input flushed both windows; the updating view holds its last result.
    let windows = table(&[
        &["1", "2024-01-01T00:00:10", "2", "22"],
        &["2", "2024-01-01T00:00:10", "1", "7"],
        &["1", "2024-01-01T00:00:20", "1", "3"],
    ]);
    assert_eq!(rows(&client, WINDOWS).await, windows);
    assert_eq!(
        rows(&client, BEST).await,
        table(&[&["1", "12"], &["2", "7"]])
    );

    // Each job's last checkpoint is its final one, completed; none failed.
    let checkpoints = rows(
        &client,
        "SELECT job, epoch, status, coalesce(error, '') FROM eddy_checkpoints ORDER BY job, epoch",
    )
    .await;
    assert!(
        checkpoints.iter().all(|c| c[2] == "completed"),
        "{checkpoints:?}"
    );
    let jobs_sql = "SELECT name, status, last_checkpoint, CAST(watermark AS VARCHAR) \
                    FROM eddy_jobs ORDER BY name";
    let before = rows(&client, jobs_sql).await;
    for job in &before {
        let last = checkpoints.iter().rfind(|c| c[0] == job[0]);
        assert_eq!(
            last.map(|c| &c[1]),
            Some(&job[2]),
            "{job:?} {checkpoints:?}"
        );
    }
    assert_eq!(before[1][3], "2024-01-01T00:00:11", "{before:?}");
    drop(client);
    socket.abort();
    server.shutdown().await;

    // Rows appended to the file would show if the source were read again.
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str("1,100,2024-01-01 00:00:03\n3,5,2024-01-01 00:00:31\n");
    std::fs::write(&csv, text).unwrap();

    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, _socket) = connect_with_socket(&server).await;
    let after = rows(
        &client,
        "SELECT name, status, restored_from, CAST(watermark AS VARCHAR), rows_in, rows_out, \
                coalesce(error, '') FROM eddy_jobs ORDER BY name",
    )
    .await;
    let expected: Vec<Vec<String>> = before
        .iter()
        .map(|b| {
            let mut row = vec![
                b[0].clone(),
                "finished".to_string(),
                b[2].clone(),
                b[3].clone(),
            ];
            row.extend(["0", "0", ""].map(String::from));
            row
        })
        .collect();
    assert_eq!(
        after, expected,
        "restored as finished, the dataflow not run"
    );
    assert_eq!(rows(&client, WINDOWS).await, windows);
    assert_eq!(
        rows(&client, BEST).await,
        table(&[&["1", "12"], &["2", "7"]])
    );
    // Only the final checkpoint is kept (the append-only view's rows are in its parts).
    for job in ["per_window", "best"] {
        let mut kept: Vec<String> = std::fs::read_dir(checkpoint_dir(&dir, job))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n != "view-parts")
            .collect();
        kept.sort();
        let last = &before.iter().find(|b| b[0] == job).unwrap()[2];
        assert_eq!(kept, [last.as_str()], "{job}");
    }
    // A view over the finished view reads its restored contents, and ends.
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW busy_windows AS SELECT auction, n FROM per_window WHERE n > 1",
        )
        .await
        .unwrap();
    job_status(&client, "busy_windows", "finished").await;
    assert_eq!(
        rows(&client, "SELECT auction, n FROM busy_windows").await,
        table(&[&["1", "2"]])
    );
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_timeout_is_checked_and_fails_a_late_barrier() {
    let dir = temp_dir("ckpt-timeout");
    let server = start_checkpointing(&dir, INTERVAL).await;
    let (client, _socket) = connect_with_socket(&server).await;
    client
        .batch_execute(
            "CREATE SOURCE fast (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
               WITH (connector = 'nexmark', nexmark.table = 'bid')",
        )
        .await
        .unwrap();
    let query = "SELECT window_end, count(*) AS n FROM TUMBLE(fast, date_time, INTERVAL '1' SECOND) \
                 GROUP BY window_start, window_end";
    let out = dir.join("out");
    for (option, value, message) in [
        ("checkpoint.timeout", "soon", "invalid timeout 'soon'"),
        ("checkpoint.timeout", "0", "it must be at least 1ms"),
        ("checkpoint.interval", "2 days", "invalid interval '2 days'"),
    ] {
        let statements = [
            format!("CREATE MATERIALIZED VIEW bad WITH ({option} = '{value}') AS {query}"),
            format!(
                "CREATE SINK bad AS {query} WITH (connector = 'parquet', path = '{}', \
                 {option} = '{value}')",
                out.display()
            ),
        ];
        for sql in statements {
            let e = client.batch_execute(&sql).await.unwrap_err();
            let db = e.as_db_error().unwrap();
            assert_eq!(db.code().code(), "22023", "{sql}: {db:?}");
            assert!(
                db.message().contains(message) && db.message().contains(option),
                "{sql}: {}",
                db.message()
            );
        }
    }

    // A busy dataflow: each barrier waits behind full channels of bids, far longer than 1 ms.
    client
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW busy
               WITH (checkpoint.interval = '20ms', checkpoint.timeout = '1ms') AS {query}"
        ))
        .await
        .unwrap();
    let sql = "SELECT count(*) FROM eddy_checkpoints WHERE job = 'busy' AND status = 'failed' \
               AND error = 'its barrier did not come back within 1ms'";
    let mut timed_out = false;
    for _ in 0..400 {
        if rows(&client, sql).await[0][0] != "0" {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let history = rows(
        &client,
        "SELECT epoch, status, coalesce(error, '') FROM eddy_checkpoints WHERE job = 'busy'",
    )
    .await;
    assert!(timed_out, "no checkpoint timed out: {history:?}");
    // The job goes on.
    job_status(&client, "busy", "running").await;
    client
        .batch_execute("DROP MATERIALIZED VIEW busy")
        .await
        .unwrap();
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
