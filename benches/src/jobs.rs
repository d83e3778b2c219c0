//! The checkpoint run (`--checkpoint-interval D`): each selected query as the background job of
//! a materialized view, in an engine with a temporary data directory (deleted at the end):
//!
//! ```text
//! CREATE MATERIALIZED VIEW bench_<n> WITH (checkpoint.interval = 'D') AS <query>
//! ```
//!
//! A run lasts from that statement until the job's status is finished (polled every
//! [`POLL`]); a failed job ends the benchmark with its error. Each query runs first with the
//! interval `0`, the job path without checkpoints, then with `D`, so that what the view and
//! the job's loop cost is in both and the difference is the checkpoints'; with
//! `--checkpoint-interval 0` only the first. The view is dropped after each run (which deletes
//! its checkpoints).
//!
//! Besides the rates of the client-query run, a row gives the checkpoints of the job
//! ([`JobCheckpoints::history`](eddy_engine::checkpoints::JobCheckpoints::history), read at
//! every poll, as it keeps only the recent attempts), the largest and the longest of them, what
//! the last one taken while the job ran holds (the files its manifest lists, some written by
//! earlier checkpoints: the operators' state and the view's contents, which grow with the
//! view; the job's final checkpoint, written when the input ended, holds no operator state and
//! replaces it on disk, so it is sampled at every poll), and the operators' state in memory at
//! its peak (sampled at every poll).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use eddy_engine::checkpoints::{CheckpointRecord, CheckpointStatus, Manifest};
use eddy_engine::jobs::{Job, JobStatus};
use eddy_engine::session::EngineConfig;

use crate::csv_file::TempDir;
use crate::eddy::{Events, Streaming};
use crate::measure::{Cost, Meter, mebibytes, millions};
use crate::queries::{EXPORTS, JOB_QUERIES, QUERIES, Query};
use crate::{Args, BenchResult};

/// How often a run looks at its job.
const POLL: Duration = Duration::from_millis(5);

/// The queries of the checkpoint run: `name`'s, or every one that runs as a job.
pub fn select(name: Option<&str>) -> BenchResult<Vec<&'static Query>> {
    let jobs = || QUERIES.iter().filter(|q| q.runs_as_job).chain(JOB_QUERIES);
    let Some(name) = name else {
        return Ok(jobs().collect());
    };
    if let Some(query) = jobs().find(|q| q.name == name) {
        return Ok(vec![query]);
    }
    let names: Vec<&str> = jobs().map(|q| q.name).collect();
    let names = names.join(", ");
    let known = QUERIES
        .iter()
        .map(|q| q.name)
        .chain(EXPORTS.iter().map(|e| e.name));
    if known.into_iter().any(|q| q == name) {
        Err(format!(
            "{name} does not run with --checkpoint-interval (its result is about every bid, \
             too much for a view, or it reads the CSV file); the queries that do are {names}"
        )
        .into())
    } else {
        Err(format!("no query {name}; with --checkpoint-interval the queries are {names}").into())
    }
}

/// One run of a query's job.
struct JobRow<'a> {
    query: &'a Query,
    interval: Duration,
    cost: Cost,
    rows: usize,
    late_rows: u64,
    /// Every checkpoint attempt, by epoch.
    attempts: BTreeMap<u64, CheckpointRecord>,
    /// Bytes of the files of the last checkpoint completed while the job ran (not its final
    /// one): the operators', the view's.
    last: Option<(u64, u64)>,
    /// The most state the operators held, as sampled.
    peak_state: u64,
}

pub async fn run(args: &Args, interval: Duration, queries: &[&Query]) -> BenchResult<()> {
    let dir = TempDir::new()?;
    let config = EngineConfig {
        parallelism: args.workers,
        data_dir: Some(dir.path().to_path_buf()),
        checkpoint_interval: interval,
        ..EngineConfig::default()
    };
    let events = Events {
        count: args.events,
        base_time: None,
    };
    let mut eddy = Streaming::new(config, &events).await?;
    let intervals = if interval.is_zero() {
        vec![Duration::ZERO]
    } else {
        vec![Duration::ZERO, interval]
    };
    let mut rows = Vec::new();
    for query in queries {
        for &interval in &intervals {
            let name = format!("bench_{}", rows.len() + 1);
            eprintln!(
                "job {} ({name}) with checkpoint.interval = '{}' ...",
                query.name,
                interval_text(interval)
            );
            rows.push(run_job(&mut eddy, dir.path(), &name, query, interval).await?);
        }
    }
    print_table(args, &rows);
    Ok(())
}

/// Runs `query` as the job of view `name` until it finishes, then drops the view.
async fn run_job<'a>(
    eddy: &mut Streaming,
    data_dir: &Path,
    name: &str,
    query: &'a Query,
    interval: Duration,
) -> BenchResult<JobRow<'a>> {
    let meter = Meter::start();
    eddy.execute(&format!(
        "CREATE MATERIALIZED VIEW {name} WITH (checkpoint.interval = '{}') AS {}",
        interval_text(interval),
        query.streaming
    ))
    .await?;
    let job = eddy
        .engine()
        .jobs()
        .for_name(name)
        .ok_or_else(|| format!("materialized view {name} has no job"))?;
    let mut attempts = BTreeMap::new();
    // The files of each completed checkpoint seen while polling, by epoch.
    let mut files = BTreeMap::new();
    let mut peak_state = 0;
    let (cost, status) = loop {
        let status = job.status();
        if status != JobStatus::Running {
            break (meter.stop(), status);
        }
        record(&job, &mut attempts);
        if let Some(epoch) = job.checkpoints.as_ref().and_then(|c| c.last_completed())
            && !files.contains_key(&epoch)
            && let Some(sizes) = checkpoint_files(data_dir, name, epoch)
        {
            files.insert(epoch, sizes);
        }
        peak_state = peak_state.max(job.metrics.state_bytes());
        // A blocking sleep: this thread is not one of the runtime's workers, and a timer of
        // the runtime can fire long after its time while the dataflow keeps every worker busy
        // (seen at 1 and 2 workers: a 5 ms `tokio::time::sleep` here lasted the whole run).
        std::thread::sleep(POLL);
    };
    // The last attempts ended as the job did; the very last is its final checkpoint.
    record(&job, &mut attempts);
    let last_attempt = attempts.keys().next_back().copied().unwrap_or(u64::MAX);
    let last = files.range(..last_attempt).next_back().map(|(_, f)| *f);
    let row = JobRow {
        query,
        interval,
        cost,
        rows: job.view().map_or(0, |v| v.num_rows()),
        late_rows: job.metrics.late_rows(),
        attempts,
        last,
        peak_state,
    };
    drop(job);
    eddy.execute(&format!("DROP MATERIALIZED VIEW {name}"))
        .await?;
    for r in row.attempts.values() {
        if let CheckpointStatus::Failed(why) = &r.status {
            eprintln!("  checkpoint {} failed: {why}", r.epoch);
        }
    }
    match status {
        JobStatus::Failed(error) => Err(format!("{}: the job failed: {error}", query.name).into()),
        _ => Ok(row),
    }
}

/// Adds the job's checkpoint attempts to `attempts`, as they are now.
fn record(job: &Job, attempts: &mut BTreeMap<u64, CheckpointRecord>) {
    if let Some(checkpoints) = &job.checkpoints {
        for r in checkpoints.history() {
            attempts.insert(r.epoch, r);
        }
    }
}

/// The bytes of the state files checkpoint `epoch` holds, `(operators, view)`, from its
/// manifest `<data dir>/checkpoints/<job>/<epoch>/manifest.json` (see
/// `eddy_engine::checkpoints`; a `bench_<n>` name is its own folder name): each operator
/// instance's file with the shared batches it lists (written by this checkpoint or an earlier
/// one), and the view's contents, whole or as the parts it lists. `None` if there is no such
/// manifest.
fn checkpoint_files(data_dir: &Path, job: &str, epoch: u64) -> Option<(u64, u64)> {
    let path = data_dir
        .join("checkpoints")
        .join(job)
        .join(epoch.to_string())
        .join("manifest.json");
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let operators = manifest
        .operators
        .iter()
        .map(|o| o.bytes + o.shared.iter().map(|s| s.bytes).sum::<u64>())
        .sum();
    let view = manifest.view.map_or(0, |v| v.bytes)
        + manifest
            .view_parts
            .map_or(0, |v| v.parts.iter().map(|p| p.bytes).sum());
    Some((operators, view))
}

/// An interval as `checkpoint.interval` takes it: `0`, whole seconds, or milliseconds.
fn interval_text(interval: Duration) -> String {
    if interval.is_zero() {
        "0".to_string()
    } else if interval.subsec_nanos() == 0 {
        format!("{}s", interval.as_secs())
    } else {
        format!("{}ms", interval.as_secs_f64() * 1000.0)
    }
}

fn print_table(args: &Args, rows: &[JobRow<'_>]) {
    println!(
        "events={} workers={} each query as a materialized view's job, checkpoints off (0) and \
         on",
        args.events, args.workers
    );
    println!();
    println!(
        "| query | checkpoint.interval | Eddy M events/s (wall) | Eddy M events/CPU-s | workers | \
         Eddy peak RSS MiB (at start) | time / time with 0 (CPU) | checkpoints completed / \
         failed / cut off | largest checkpoint MiB (ms) | longest checkpoint ms | last \
         checkpoint MiB: operators / view | peak operator state MiB | rows out |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let events = args.events;
    for row in rows {
        let off = rows
            .iter()
            .find(|r| r.interval.is_zero() && std::ptr::eq(r.query, row.query));
        let versus = match off {
            Some(off) if !row.interval.is_zero() => {
                let cpu = row.cost.cpu.zip(off.cost.cpu).map_or_else(
                    || "n/a".to_string(),
                    |(on, off)| format!("{:.2}", on.as_secs_f64() / off.as_secs_f64().max(1e-9)),
                );
                format!(
                    "{:.2} ({cpu})",
                    row.cost.wall.as_secs_f64() / off.cost.wall.as_secs_f64().max(1e-9)
                )
            }
            _ => "-".to_string(),
        };
        let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
        let ms = |d: Option<Duration>| {
            d.map_or_else(|| "n/a".to_string(), |d| d.as_millis().to_string())
        };
        let completed: Vec<&CheckpointRecord> = row
            .attempts
            .values()
            .filter(|r| r.status == CheckpointStatus::Completed)
            .collect();
        // The job's final checkpoint, written when its input ended, is its last attempt: if
        // it did not complete (its reason is printed with the failures) it counts as "cut
        // off", not as failed.
        let cut_off = row
            .attempts
            .values()
            .next_back()
            .filter(|r| r.status != CheckpointStatus::Completed)
            .map(|r| r.epoch);
        let failed = row
            .attempts
            .values()
            .filter(|r| matches!(r.status, CheckpointStatus::Failed(_)))
            .filter(|r| Some(r.epoch) != cut_off)
            .count();
        let largest = completed
            .iter()
            .max_by_key(|r| r.state_bytes.unwrap_or(0))
            .map_or_else(
                || "n/a".to_string(),
                |r| format!("{} ({})", mib(r.state_bytes.unwrap_or(0)), ms(r.duration)),
            );
        let longest = ms(completed.iter().filter_map(|r| r.duration).max());
        let last = row.last.map_or_else(
            || "n/a".to_string(),
            |(ops, view)| format!("{} / {}", mib(ops), mib(view)),
        );
        let late = if row.late_rows > 0 {
            format!(", {} late", row.late_rows)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} ({}) | {versus} | {} / {failed} / {} | {largest} | \
             {longest} | {last} | {} | {}{late} |",
            row.query.name,
            interval_text(row.interval),
            millions(Some(row.cost.per_second(events))),
            millions(row.cost.per_cpu_second(events)),
            args.workers,
            mebibytes(row.cost.peak_rss),
            mebibytes(row.cost.start_rss),
            completed.len(),
            usize::from(cut_off.is_some()),
            mib(row.peak_state),
            row.rows,
        );
    }
}
