//! Nexmark benchmarks: Eddy's streaming runtime against a DataFusion batch run of the same
//! query over the same events, in the same process.
//!
//! ```text
//! cargo run --release -p eddy-benches -- [--events N] [--workers W] [--query NAME]
//! cargo run -p eddy-benches -- --check [--events N]
//! ```
//!
//! The measuring run ([`bench`](mod@bench)) prints one markdown table row per query (see
//! `docs/benchmarks.md` for the columns); `--check` ([`check`]) runs every query at parallelism
//! 1 and 2 and against DataFusion and compares the rows, and exits non-zero on a difference.
//! The queries are in [`queries`].

mod batch;
mod bench;
mod check;
mod csv_file;
mod eddy;
mod measure;
mod queries;

use queries::{EXPORTS, Export, QUERIES, Query, SKIPPED};

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: eddy-bench [--events N] [--workers W] [--query NAME] [--check]

  --events N    events of the Nexmark stream (default 10000000; 20000 with --check)
  --workers W   parallel instances of each keyed operator, runtime threads and DataFusion
                partitions (default 1)
  --query NAME  run only this query
  --check       compare every query's rows at parallelism 1 and 2 and with DataFusion";

/// The command line.
#[derive(Debug)]
pub struct Args {
    pub events: u64,
    pub workers: usize,
    pub query: Option<String>,
    pub check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut events = None;
    let mut args = Args {
        events: 0,
        workers: 1,
        query: None,
        check: false,
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
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    args.events = events.unwrap_or(if args.check { 20_000 } else { 10_000_000 });
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    if args.check {
        runtime.block_on(check::run(args, &selected, &exports))
    } else {
        runtime.block_on(bench::run(args, &selected, &exports))
    }
}
