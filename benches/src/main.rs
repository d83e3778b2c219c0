//! Nexmark benchmarks: Eddy's streaming runtime against a DataFusion batch run of the same
//! query over the same events, in the same process.
//!
//! ```text
//! cargo run --release -p eddy-benches -- [--events N] [--workers W] [--query NAME]
//! cargo run -p eddy-benches -- --check [--events N]
//! cargo run --release -p eddy-benches -- --checkpoint-interval D [--events N] [--workers W] [--query NAME]
//! cargo run --release -p eddy-benches -- --kafka-decode [--events N]
//! cargo build --release -p eddy-server && cargo run --release -p eddy-benches -- --server [--events N] [--workers W] [--query NAME]
//! cargo build --release -p eddy-server && cargo run --release -p eddy-benches -- --latency [--events N] [--workers W]
//! cargo build --release -p eddy-server && cargo run --release -p eddy-benches -- --soak [--minutes M] [--rate R] [--workers W]
//! ```
//!
//! The measuring run ([`bench`](mod@bench)) prints one markdown table row per query (see
//! `docs/benchmarks.md` for the columns); `--check` ([`check`]) runs every query at parallelism
//! 1 and 2 and against DataFusion and compares the rows, and exits non-zero on a difference.
//! `--checkpoint-interval` ([`jobs`]) runs the queries as materialized views' jobs that
//! checkpoint. `--kafka-decode` ([`kafka`]) measures the Kafka source's JSON decoding.
//! `--server` ([`server`]) measures the real server over CSV files through the Postgres
//! protocol, by the server process's CPU time; `--latency` ([`latency`]) measures how soon an
//! inserted row's result reaches a client following a query; `--soak` ([`soak`]) runs paced
//! jobs on the real server for a long time and watches its memory, watermarks and checkpoints.
//! The queries are in [`queries`] (the server run's in [`server`]).

mod batch;
mod bench;
mod check;
mod csv_file;
mod eddy;
mod jobs;
mod kafka;
#[cfg(target_os = "linux")]
mod latency;
mod measure;
mod queries;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod soak;

use std::time::Duration;

use eddy_engine::checkpoints::parse_interval;
use queries::{EXPORTS, Export, QUERIES, Query, SKIPPED};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: eddy-bench [--events N] [--workers W] [--query NAME]
                  [--check | --checkpoint-interval D | --kafka-decode | --server | --latency]

  --events N    events of the Nexmark stream (default 10000000; 20000 with --check)
  --workers W   parallel instances of each keyed operator, runtime threads and DataFusion
                partitions (default 1)
  --query NAME  run only this query
  --check       compare every query's rows at parallelism 1 and 2 and with DataFusion
  --checkpoint-interval D
                run each query as a materialized view's job (CREATE MATERIALIZED VIEW ...
                WITH (checkpoint.interval = 'D')) in an engine with a temporary data dir,
                first with the interval 0, then with D (e.g. 10s, 500ms; 0: only the
                first), and report the checkpoints; no DataFusion run. Only the queries
                whose result a view can keep: q5, q7, q8, q11, tumble-10s, hop-10s-2s,
                pattern-vshape, pattern-vshape-above-start, and open-keys-1h (count per
                auction and bidder in one-hour windows: ~1 M open keys at 2 M events)
  --kafka-decode
                decode N Nexmark bids as JSON messages through the kafka source (an
                in-memory client, one reader), then with arrow-json alone
  --server      write the bids and N stock ticks to CSV files, start the real server
                (the eddy binary next to this one, --workers W) on 127.0.0.1, declare the
                files as sources and run the server queries through the Postgres protocol
                (COPY ... TO STDOUT), measuring the server process's CPU time against
                DataFusion's batch query over the same file (Linux)
  --latency     start the real server as --server does, follow a stateless query and a
                1-second TUMBLE over push tables with COPY ... TO STDOUT, insert N rows
                one at a time (default 1000) and report how soon each result arrives
                after its INSERT is acknowledged: p50, p99, max (Linux)
  --soak        start the real server as --server does, run five checkpointing jobs (HOP,
                interval join, MATCH_RECOGNIZE, updating aggregate, Parquet sink) over
                paced Nexmark sources and sample its memory, watermarks and checkpoints
                every 10 s; fails if a job stops, a watermark lags over 30 s or (runs of
                10 min or more) memory grows over 10 % after the warm-up (Linux)
  --minutes M   length of the --soak run (default 60)
  --rate R      events per second of each --soak source (default 10000)
  --checkpoint-interval D
                with --soak: the jobs' checkpoint interval (default 10s)";

/// The command line.
#[derive(Debug)]
pub struct Args {
    pub events: u64,
    pub workers: usize,
    pub query: Option<String>,
    pub check: bool,
    /// `--checkpoint-interval`: run the queries as jobs that checkpoint this often.
    pub checkpoint_interval: Option<Duration>,
    /// `--kafka-decode`: measure the Kafka source's JSON decoding instead.
    pub kafka_decode: bool,
    /// `--server`: measure the real server over CSV files instead.
    pub server: bool,
    /// `--latency`: measure how soon results reach a following client instead.
    pub latency: bool,
    /// `--soak`: run paced jobs on the real server and watch it instead.
    pub soak: bool,
    /// `--minutes`: the length of a soak run.
    pub minutes: f64,
    /// `--rate`: events per second of each soak source.
    pub rate: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut events = None;
    let mut args = Args {
        events: 0,
        workers: 1,
        query: None,
        check: false,
        checkpoint_interval: None,
        kafka_decode: false,
        server: false,
        latency: false,
        soak: false,
        minutes: 60.0,
        rate: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--events" => {
                let v = value("--events")?;
                events = Some(
                    v.parse()
                        .map_err(|_| format!("--events {v}: not a count"))?,
                );
            }
            "--workers" => {
                let v = value("--workers")?;
                args.workers = v
                    .parse()
                    .ok()
                    .filter(|w| *w >= 1)
                    .ok_or(format!("--workers {v}: not a positive number"))?;
            }
            "--query" => args.query = Some(value("--query")?),
            "--check" => args.check = true,
            "--kafka-decode" => args.kafka_decode = true,
            "--server" => args.server = true,
            "--latency" => args.latency = true,
            "--soak" => args.soak = true,
            "--minutes" => {
                let v = value("--minutes")?;
                args.minutes = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| *m > 0.0 && m.is_finite())
                    .ok_or(format!("--minutes {v}: not a positive number"))?;
            }
            "--rate" => {
                let v = value("--rate")?;
                args.rate = v
                    .parse()
                    .ok()
                    .filter(|r| *r >= 1)
                    .ok_or(format!("--rate {v}: not a positive count"))?;
            }
            "--checkpoint-interval" => {
                let v = value("--checkpoint-interval")?;
                args.checkpoint_interval =
                    Some(parse_interval(&v).map_err(|e| format!("--checkpoint-interval: {e}"))?);
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let modes = [
        args.check,
        args.checkpoint_interval.is_some() && !args.soak,
        args.kafka_decode,
        args.server,
        args.latency,
        args.soak,
    ];
    if modes.iter().filter(|m| **m).count() > 1 {
        return Err(
            "choose one of --check, --checkpoint-interval, --kafka-decode, --server, --latency \
             and --soak"
                .to_string(),
        );
    }
    args.events = events.unwrap_or(if args.check {
        20_000
    } else if args.latency {
        1_000
    } else {
        10_000_000
    });
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> BenchResult<()> {
    if args.kafka_decode {
        return runtime(1)?.block_on(kafka::run(args.events));
    }
    if args.server {
        #[cfg(target_os = "linux")]
        return runtime(args.workers)?.block_on(server::run(args));
        #[cfg(not(target_os = "linux"))]
        return Err("--server reads the server's CPU time from /proc: Linux only".into());
    }
    if args.latency {
        #[cfg(target_os = "linux")]
        return runtime(2)?.block_on(latency::run(args));
        #[cfg(not(target_os = "linux"))]
        return Err("--latency runs the server as --server does: Linux only".into());
    }
    if args.soak {
        #[cfg(target_os = "linux")]
        return runtime(2)?.block_on(soak::run(args, args.minutes, args.rate));
        #[cfg(not(target_os = "linux"))]
        return Err("--soak reads the server's memory from /proc: Linux only".into());
    }
    if let Some(interval) = args.checkpoint_interval {
        let queries = jobs::select(args.query.as_deref())?;
        return runtime(args.workers)?.block_on(jobs::run(args, interval, &queries));
    }
    let selected: Vec<&Query> = QUERIES
        .iter()
        .filter(|q| args.query.as_deref().is_none_or(|name| name == q.name))
        .collect();
    let exports: Vec<&Export> = EXPORTS
        .iter()
        .filter(|e| args.query.as_deref().is_none_or(|name| name == e.name))
        .collect();
    if let Some(name) = &args.query {
        if let Some((_, reason)) = SKIPPED.iter().find(|(q, _)| q == name) {
            println!("{name}: skipped ({reason})");
            return Ok(());
        }
        if selected.is_empty() && exports.is_empty() {
            let names: Vec<&str> = QUERIES
                .iter()
                .map(|q| q.name)
                .chain(EXPORTS.iter().map(|e| e.name))
                .collect();
            return Err(format!("no query {name}; the queries are {}", names.join(", ")).into());
        }
    }
    // The check runs two instances of keyed operators: give them two threads.
    let threads = if args.check { 2 } else { args.workers };
    let runtime = runtime(threads)?;
    if args.check {
        runtime.block_on(check::run(args, &selected, &exports))
    } else {
        runtime.block_on(bench::run(args, &selected, &exports))
    }
}

/// The runtime every query runs in, with `threads` worker threads.
fn runtime(threads: usize) -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}
