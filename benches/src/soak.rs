//! `--soak`: the real server under a steady load for a long time, watched from the outside.
//!
//! The server is started as for `--server` (the release `eddy` next to this binary, on
//! 127.0.0.1, a data directory of its own). Three paced Nexmark sources (people are not
//! needed: bids and auctions, the same event stream, stamped from the wall clock at the start
//! so that event time runs with the clock) feed five background jobs that checkpoint every
//! `--checkpoint-interval` (default 10 s):
//!
//! - `soak_hop`: a HOP window aggregate per auction (a materialized view keeping a minute);
//! - `soak_join`: an interval join of auctions and their bids (a view keeping a minute);
//! - `soak_pattern`: MATCH_RECOGNIZE per channel with `WITHIN`, its matches counted per
//!   channel (a view of the counts: a pattern's rows have no event time to keep a minute by);
//! - `soak_totals`: an updating aggregate per channel (a view, replaced in place);
//! - `soak_parquet`: a TUMBLE aggregate exported exactly-once to Parquet files.
//!
//! Every `SAMPLE_EVERY` it reads the server's resident memory (`/proc/<pid>/status`), its CPU
//! time, and each job's status, watermark, state size and last checkpoint from `eddy_jobs`, and
//! prints one line. At the end it reports resident memory after the warm-up (the first fifth of
//! the run, at least one sample), the largest watermark lag and the checkpoints, and fails
//! (exit status 1) when a job stopped or reported an error, when a watermark lagged more than
//! `MAX_LAG` behind the clock, when a job took no checkpoint, or — for runs of at least
//! `RSS_CHECK_MINUTES` — when resident memory grew more than 10 % after the warm-up.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::csv_file::TempDir;
use crate::server::ServerProcess;
use crate::{Args, BenchResult};

/// How often the run samples the server.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The largest watermark lag that passes: the sources' watermark delay (4 s), a window's
/// length (10 s) and room for a checkpoint and a slow sample.
const MAX_LAG: Duration = Duration::from_secs(30);

/// Runs shorter than this do not judge resident memory (it is still growing to its level).
const RSS_CHECK_MINUTES: f64 = 10.0;

/// The jobs of the run, in the order they are created.
const JOBS: &[&str] = &[
    "soak_hop",
    "soak_join",
    "soak_pattern",
    "soak_totals",
    "soak_parquet",
];

/// The statements that set the run up; `{rate}`, `{base}`, `{interval}` and `{sink}` are
/// replaced.
const SETUP: &[&str] = &[
    "CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
     WITH (connector = 'nexmark', nexmark.table = 'bid', events.per.second = '{rate}', \
     base.time = '{base}')",
    "CREATE SOURCE auctions (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
     WITH (connector = 'nexmark', nexmark.table = 'auction', events.per.second = '{rate}', \
     base.time = '{base}')",
    "CREATE MATERIALIZED VIEW soak_hop \
     WITH (retention = '1 min', checkpoint.interval = '{interval}') AS \
     SELECT auction, window_start, window_end, count(*) AS bids, max(price) AS top \
     FROM HOP(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
     GROUP BY auction, window_start, window_end",
    "CREATE MATERIALIZED VIEW soak_join \
     WITH (retention = '1 min', checkpoint.interval = '{interval}') AS \
     SELECT a.id, a.seller, b.bidder, b.price, b.date_time \
     FROM auctions a JOIN bids b ON a.id = b.auction \
     AND b.date_time BETWEEN a.date_time AND a.date_time + INTERVAL '10' SECOND",
    "CREATE MATERIALIZED VIEW soak_pattern WITH (checkpoint.interval = '{interval}') AS \
     SELECT channel, count(*) AS matches, min(bottom_price) AS lowest \
     FROM bids MATCH_RECOGNIZE ( \
       PARTITION BY channel ORDER BY date_time \
       MEASURES A.price AS start_price, LAST(B.price) AS bottom_price, C.price AS end_price \
       ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
       PATTERN (A B+ C) WITHIN INTERVAL '10' SECOND \
       DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price)) \
     GROUP BY channel",
    "CREATE MATERIALIZED VIEW soak_totals WITH (checkpoint.interval = '{interval}') AS \
     SELECT channel, count(*) AS bids, max(price) AS top FROM bids GROUP BY channel",
    "CREATE SINK soak_parquet AS \
     SELECT auction, window_start, window_end, count(*) AS bids \
     FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) \
     GROUP BY auction, window_start, window_end \
     WITH (connector = 'parquet', path = '{sink}', checkpoint.interval = '{interval}')",
];

/// One job's row of `eddy_jobs` at a sample.
#[derive(Debug, Clone)]
struct JobSample {
    name: String,
    status: String,
    /// Wall clock minus watermark; `None` before the first watermark.
    lag: Option<Duration>,
    state_bytes: u64,
    last_checkpoint: Option<u64>,
    error: Option<String>,
}

/// One sample of the run.
struct Sample {
    at: Duration,
    rss: u64,
    cpu: Duration,
    jobs: Vec<JobSample>,
}

/// Runs the soak for `minutes` at `rate` events per second per source.
pub async fn run(args: &Args, minutes: f64, rate: u64) -> BenchResult<()> {
    let dir = TempDir::new()?;
    let interval = args
        .checkpoint_interval
        .map_or_else(|| "10s".to_string(), |d| format!("{}ms", d.as_millis()));
    let server = ServerProcess::start(dir.path(), args.workers)?;
    let (client, connection) = server.connect().await?;
    tokio::spawn(connection);
    let base = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let sink = dir.path().join("sink");
    for statement in SETUP {
        let sql = statement
            .replace("{rate}", &rate.to_string())
            .replace("{base}", &base.to_string())
            .replace("{interval}", &interval)
            .replace("{sink}", &sink.display().to_string());
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("{sql}: {} ({})", db.message(), db.code().code()),
                None => format!("{sql}: {e}"),
            })?;
    }
    println!(
        "soak: {minutes} min, {rate} events/s per source, {} workers, checkpoints every {interval}",
        args.workers
    );
    println!("| t s | RSS MB | CPU s | job: lag s / state KB / last checkpoint |");
    println!("|---|---|---|---|");
    let start = Instant::now();
    let length = Duration::from_secs_f64(minutes * 60.0);
    let mut samples = Vec::new();
    loop {
        let wait = SAMPLE_EVERY.min(length.saturating_sub(start.elapsed()));
        tokio::time::sleep(wait).await;
        let sample = Sample {
            at: start.elapsed(),
            rss: server.rss()?,
            cpu: server.cpu()?,
            jobs: jobs(&client).await?,
        };
        println!("{}", describe(&sample));
        let stopped = sample.jobs.iter().any(|j| j.status != "running");
        samples.push(sample);
        // A last sample less than a second before the end would repeat this one.
        if stopped || start.elapsed() + Duration::from_secs(1) >= length {
            break;
        }
    }
    // Every view can be read at the end.
    for job in JOBS.iter().filter(|j| **j != "soak_parquet") {
        client
            .simple_query(&format!("SELECT count(*) FROM {job}"))
            .await
            .map_err(|e| format!("reading view {job}: {e}"))?;
    }
    let files = count_files(&sink, "parquet");
    judge(&samples, minutes, files)
}

/// Every job's row of `eddy_jobs`, with its lag measured against this process's clock (the
/// server's clock, on the same machine).
async fn jobs(client: &tokio_postgres::Client) -> BenchResult<Vec<JobSample>> {
    let rows = client
        .query(
            "SELECT name, status, CAST(watermark AS BIGINT), state_bytes, last_checkpoint, \
             error FROM eddy_jobs ORDER BY id",
            &[],
        )
        .await?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    rows.iter()
        .map(|row| {
            let watermark: Option<i64> = row.try_get(2)?;
            let lag = watermark
                .map(|w| Duration::from_millis(u64::try_from(now.saturating_sub(w)).unwrap_or(0)));
            Ok(JobSample {
                name: row.try_get(0)?,
                status: row.try_get(1)?,
                lag,
                state_bytes: u64::try_from(row.try_get::<_, i64>(3)?).unwrap_or(0),
                last_checkpoint: row
                    .try_get::<_, Option<i64>>(4)?
                    .and_then(|c| u64::try_from(c).ok()),
                error: row.try_get(5)?,
            })
        })
        .collect()
}

fn describe(sample: &Sample) -> String {
    let jobs: Vec<String> = sample
        .jobs
        .iter()
        .map(|j| {
            let lag = j
                .lag
                .map_or_else(|| "-".to_string(), |l| format!("{:.1}", l.as_secs_f64()));
            let checkpoint = j
                .last_checkpoint
                .map_or_else(|| "-".to_string(), |c| c.to_string());
            let status = if j.status == "running" {
                String::new()
            } else {
                format!(" {} ({})", j.status, j.error.as_deref().unwrap_or(""))
            };
            format!(
                "{}: {lag} / {} / {checkpoint}{status}",
                j.name,
                j.state_bytes / 1024
            )
        })
        .collect();
    format!(
        "| {:.0} | {:.1} | {:.1} | {} |",
        sample.at.as_secs_f64(),
        sample.rss as f64 / 1e6,
        sample.cpu.as_secs_f64(),
        jobs.join("; ")
    )
}

/// The verdict of the run: a summary, and an error for every failed criterion.
fn judge(samples: &[Sample], minutes: f64, files: usize) -> BenchResult<()> {
    let Some(last) = samples.last() else {
        return Err("the run took no sample".into());
    };
    let mut failures = Vec::new();
    for job in JOBS {
        match last.jobs.iter().find(|j| j.name == *job) {
            None => failures.push(format!("job {job} is missing from eddy_jobs")),
            Some(j) if j.status != "running" || j.error.is_some() => failures.push(format!(
                "job {job} is {}: {}",
                j.status,
                j.error.as_deref().unwrap_or("no error")
            )),
            Some(j) if j.last_checkpoint.is_none() => {
                failures.push(format!("job {job} took no checkpoint"))
            }
            Some(_) => {}
        }
    }
    // The first sample may precede the first watermark; after that every job has one.
    let worst_lag = samples
        .iter()
        .skip(1)
        .flat_map(|s| s.jobs.iter().map(move |j| (s.at, j)))
        .map(|(at, j)| (at, j.name.clone(), j.lag))
        .max_by_key(|(_, _, lag)| lag.unwrap_or(Duration::MAX));
    if let Some((at, name, lag)) = &worst_lag {
        match lag {
            None => failures.push(format!(
                "job {name} had no watermark at {:.0} s",
                at.as_secs_f64()
            )),
            Some(lag) if *lag > MAX_LAG => failures.push(format!(
                "job {name}'s watermark lagged {:.1} s behind the clock at {:.0} s (at most {} s)",
                lag.as_secs_f64(),
                at.as_secs_f64(),
                MAX_LAG.as_secs()
            )),
            Some(_) => {}
        }
    }
    let warm_up = (samples.len() / 5).max(1).min(samples.len() - 1);
    let after = &samples[warm_up..];
    let first = after.first().map_or(0, |s| s.rss);
    let peak = after.iter().map(|s| s.rss).max().unwrap_or(0);
    let growth = if first > 0 {
        peak as f64 / first as f64 - 1.0
    } else {
        0.0
    };
    println!(
        "\nRSS after the warm-up ({:.0} s): {:.1} MB at first, {:.1} MB at most ({:+.1} %); \
         last {:.1} MB",
        after.first().map_or(0.0, |s| s.at.as_secs_f64()),
        first as f64 / 1e6,
        peak as f64 / 1e6,
        growth * 100.0,
        last.rss as f64 / 1e6
    );
    if let Some((_, name, Some(lag))) = &worst_lag {
        println!("largest watermark lag: {:.1} s ({name})", lag.as_secs_f64());
    }
    println!(
        "server CPU: {:.1} s in {:.0} s; checkpoints: {}; Parquet files: {files}",
        last.cpu.as_secs_f64(),
        last.at.as_secs_f64(),
        last.jobs
            .iter()
            .map(|j| format!("{} {}", j.name, j.last_checkpoint.map_or(0, |c| c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if minutes >= RSS_CHECK_MINUTES && growth > 0.10 {
        failures.push(format!(
            "resident memory grew {:.1} % after the warm-up (at most 10 %)",
            growth * 100.0
        ));
    }
    if files == 0 && last.at > Duration::from_secs(30) {
        failures.push("the Parquet sink published no file".to_string());
    }
    if failures.is_empty() {
        println!("soak: passed");
        Ok(())
    } else {
        Err(format!("soak failed:\n  {}", failures.join("\n  ")).into())
    }
}

/// Files with `extension` under `dir`, recursively.
fn count_files(dir: &Path, extension: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                count_files(&path, extension)
            } else {
                usize::from(path.extension().is_some_and(|e| e == extension))
            }
        })
        .sum()
}
