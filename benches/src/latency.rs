//! `--latency`: how fast a result reaches a client, measured as a user meets it. The real
//! server is started on 127.0.0.1 (as for `--server`); one connection follows a continuous
//! query with `COPY (query) TO STDOUT` while another inserts rows into a push table, one
//! `INSERT` at a time, waiting for each row's result before the next.
//!
//! Two cases:
//! - **stateless**: `SELECT id, ts FROM clicks WHERE id >= 0`; the figure is the time from the
//!   `INSERT`'s acknowledgement (`CommandComplete` read by the client) to the row arriving at the
//!   follower, and from sending the `INSERT` to the row arriving.
//! - **window close**: `TUMBLE(ticks, ts, INTERVAL '1' SECOND)` with `WATERMARK FOR ts AS ts`;
//!   the n-th row's time lies half a second into the n-th second, so its watermark closes the
//!   window of the row before it. The figure is the time from that `INSERT`'s acknowledgement
//!   (the watermark is the row's own, so this bounds the time from the watermark) to the closed
//!   window's row arriving.
//!
//! Times are measured in this process with one monotonic clock; each arrival is stamped by the
//! task that reads the `COPY` stream as soon as its chunk is read. Each `INSERT` is synced to
//! disk before it is acknowledged (push tables are durable), so the send-to-arrival figure
//! includes an fsync of the server's data directory.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::csv_file::TempDir;
use crate::server::ServerProcess;
use crate::{Args, BenchResult};

/// The first row's time.
const BASE_TIME: &str = "2024-01-01 00:00:00";

/// Inserts first, before measuring: the follower's query has started and the paths are warm.
const WARM_UP: u64 = 20;

/// One case of the run.
struct Case {
    name: &'static str,
    table: &'static str,
    /// The followed query; its first column is the id the measuring loop waits for.
    query: &'static str,
    /// The id whose row the n-th insert makes arrive (`None`: none does, e.g. the first row
    /// of a window case, which closes no window).
    awaited: fn(u64) -> Option<u64>,
}

const CASES: &[Case] = &[
    Case {
        name: "stateless: INSERT ack -> row",
        table: "clicks",
        query: "SELECT id, ts FROM clicks WHERE id >= 0",
        awaited: Some,
    },
    Case {
        name: "TUMBLE 1 s: INSERT ack (the watermark closing the window) -> window row",
        table: "ticks",
        query: "SELECT max(id), window_start, window_end, count(*) \
                FROM TUMBLE(ticks, ts, INTERVAL '1' SECOND) \
                GROUP BY window_start, window_end",
        awaited: |n| n.checked_sub(1),
    },
];

/// Runs both cases and prints a markdown table of their latencies.
pub async fn run(args: &Args) -> BenchResult<()> {
    let dir = TempDir::new()?;
    let server = ServerProcess::start(dir.path(), args.workers)?;
    let (writer, connection) = server.connect().await?;
    let writer_connection = tokio::spawn(connection);
    writer
        .batch_execute(
            "CREATE TABLE clicks (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts); \
             CREATE TABLE ticks (id BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)",
        )
        .await?;
    println!(
        "latency run: {} measured inserts per case after {WARM_UP} to warm up, one at a time; \
         server with --workers {}",
        args.events, args.workers
    );
    println!("| case | inserts | p50 ms | p99 ms | max ms | INSERT sent -> row, p50 / p99 ms |");
    println!("|---|---|---|---|---|---|");
    for case in CASES {
        let figures = measure(&server, &writer, case, args.events).await?;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} |",
            case.name,
            args.events,
            millis(percentile(&figures.after_ack, 50)),
            millis(percentile(&figures.after_ack, 99)),
            millis(figures.after_ack.last().copied().unwrap_or_default()),
            millis(percentile(&figures.after_send, 50)),
            millis(percentile(&figures.after_send, 99)),
        );
    }
    drop(writer);
    let _ = writer_connection.await;
    Ok(())
}

/// The measured latencies of one case, each sorted.
struct Figures {
    after_ack: Vec<Duration>,
    after_send: Vec<Duration>,
}

/// Follows `case.query` and inserts `inserts` rows (after the warm-up) into its table.
async fn measure(
    server: &ServerProcess,
    writer: &tokio_postgres::Client,
    case: &Case,
    inserts: u64,
) -> BenchResult<Figures> {
    let (follower, connection) = server.connect().await?;
    let follower_connection = tokio::spawn(connection);
    let (arrivals, mut arrived) = mpsc::unbounded_channel();
    let stream = follower
        .copy_out(&format!("COPY ({}) TO STDOUT", case.query))
        .await?;
    let reader = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            let at = Instant::now();
            let chunk = chunk.map_err(|e| e.to_string())?;
            for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let id = std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| l.split('\t').next())
                    .and_then(|id| id.parse::<u64>().ok())
                    .ok_or_else(|| {
                        format!("an unexpected row {:?}", String::from_utf8_lossy(line))
                    })?;
                if arrivals.send((id, at)).is_err() {
                    return Ok(());
                }
            }
        }
        Ok::<(), String>(())
    });

    let mut figures = Figures {
        after_ack: Vec::new(),
        after_send: Vec::new(),
    };
    for n in 0..WARM_UP + inserts {
        let statement = format!(
            "INSERT INTO {} VALUES ({n}, TIMESTAMP '{BASE_TIME}' + INTERVAL '{n}.5' SECOND)",
            case.table
        );
        let sent = Instant::now();
        writer.batch_execute(&statement).await?;
        let acknowledged = Instant::now();
        let Some(awaited) = (case.awaited)(n) else {
            continue;
        };
        let arrival = loop {
            let next = tokio::time::timeout(Duration::from_secs(10), arrived.recv()).await;
            match next {
                Ok(Some((id, at))) if id == awaited => break at,
                Ok(Some((id, _))) if id < awaited => continue,
                Ok(Some((id, _))) => {
                    return Err(format!("{}: row {id} came before {awaited}", case.name).into());
                }
                Ok(None) => {
                    let why = match reader.await {
                        Ok(Err(e)) => e,
                        _ => "the COPY stream ended".to_string(),
                    };
                    return Err(format!("{}: {why}", case.name).into());
                }
                Err(_) => {
                    return Err(format!("{}: row {awaited} did not come in 10 s", case.name).into());
                }
            }
        };
        if n >= WARM_UP {
            figures
                .after_ack
                .push(arrival.saturating_duration_since(acknowledged));
            figures
                .after_send
                .push(arrival.saturating_duration_since(sent));
        }
    }
    // Ends the follower's query: the server cancels it when its connection closes.
    reader.abort();
    drop(follower);
    follower_connection.abort();
    figures.after_ack.sort();
    figures.after_send.sort();
    Ok(figures)
}

/// The `p`-th percentile of sorted `values` (nearest rank).
fn percentile(values: &[Duration], p: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = (values.len() * p).div_ceil(100).max(1);
    values[rank.min(values.len()) - 1]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
