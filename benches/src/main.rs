//! Nexmark benchmarks: Eddy's streaming runtime against a DataFusion batch run of the same
//! query over the same events, in the same process.
//!
//! `cargo run --release -p eddy-benches -- [--events N] [--query NAME]`
//!
//! Each query reads a bounded Nexmark bid stream (`events.max = N`; the interval join also
//! reads the auctions of the same N events). The streaming figure
//! includes generating the events (the source is the generator); the batch baseline first
//! collects the same events into memory, so the figure printed for it is query time only, and
//! generation alone is reported too. Rates are events per second on one core (the runtime is
//! pinned to one worker thread).

use std::sync::Arc;
use std::time::Instant;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_engine::connector::ConnectorRegistry;
use eddy_engine::session::{Engine, EngineConfig, StatementResult};
use eddy_engine::sql::parser::parse_sql;
use futures::StreamExt;

/// (name, streaming query over `bids`, the same query for DataFusion in batch, or `None` when
/// it is the same text).
const QUERIES: &[(&str, &str, Option<&str>)] = &[
    (
        "q0-passthrough",
        "SELECT auction, bidder, price, date_time FROM bids",
        None,
    ),
    (
        "q1-currency",
        "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bids",
        None,
    ),
    (
        "q2-selection",
        "SELECT auction, price FROM bids WHERE auction % 123 = 0",
        None,
    ),
    (
        "tumble-10s",
        "SELECT auction, window_start, window_end, count(*), sum(price), max(price) \
         FROM TUMBLE(bids, date_time, INTERVAL '10' SECOND) \
         GROUP BY auction, window_start, window_end",
        Some(
            "SELECT auction, date_bin(INTERVAL '10' SECOND, date_time) AS window_start, \
             count(*), sum(price), max(price) FROM bids \
             GROUP BY auction, date_bin(INTERVAL '10' SECOND, date_time)",
        ),
    ),
    (
        "hop-10s-2s",
        "SELECT auction, window_start, window_end, count(*), sum(price), max(price) \
         FROM HOP(bids, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
         GROUP BY auction, window_start, window_end",
        Some(
            "SELECT auction, date_bin(INTERVAL '2' SECOND, date_time) - d AS ws, \
             count(*), sum(price), max(price) \
             FROM bids CROSS JOIN (VALUES (INTERVAL '0' SECOND), (INTERVAL '2' SECOND), \
             (INTERVAL '4' SECOND), (INTERVAL '6' SECOND), (INTERVAL '8' SECOND)) AS o(d) \
             GROUP BY auction, date_bin(INTERVAL '2' SECOND, date_time) - d",
        ),
    ),
    (
        "interval-join",
        "SELECT B.auction, B.price, A.seller FROM bids B JOIN auctions A \
         ON B.auction = A.id \
         AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '10' SECOND",
        None,
    ),
    (
        // Bids as price ticks per auction: a fall then a rise. DataFusion has no
        // MATCH_RECOGNIZE; its figure is the lower bound of any batch plan: sorting each
        // auction's bids and computing the DEFINE conditions with LAG.
        "pattern-vshape",
        "SELECT * FROM bids MATCH_RECOGNIZE ( \
           PARTITION BY auction ORDER BY date_time \
           MEASURES A.price AS start_price, LAST(B.price) AS bottom_price, \
             C.price AS end_price, MATCH_NUMBER() AS n \
           ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
           PATTERN (A B+ C) \
           DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
        Some(
            "SELECT count(*) FILTER (WHERE price < prev), count(*) FILTER (WHERE price > prev) \
             FROM (SELECT price, LAG(price) OVER (PARTITION BY auction ORDER BY date_time) \
             AS prev FROM bids)",
        ),
    ),
    (
        // The same V-shape whose rise must pass the first price: C's condition reads another
        // variable's row, so it is evaluated per candidate, not per batch.
        "pattern-vshape-above-start",
        "SELECT * FROM bids MATCH_RECOGNIZE ( \
           PARTITION BY auction ORDER BY date_time \
           MEASURES A.price AS start_price, LAST(B.price) AS bottom_price, \
             C.price AS end_price \
           ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
           PATTERN (A B+ C) \
           DEFINE B AS B.price < PREV(B.price), C AS C.price > A.price)",
        Some(
            "SELECT count(*) FILTER (WHERE price < prev), count(*) FILTER (WHERE price > prev) \
             FROM (SELECT price, LAG(price) OVER (PARTITION BY auction ORDER BY date_time) \
             AS prev FROM bids)",
        ),
    ),
];

/// Queries whose batch figure is a lower bound computed by a different query (so their row
/// counts differ).
const LOWER_BOUND_BASELINES: &[&str] = &["pattern-vshape", "pattern-vshape-above-start"];

struct Args {
    events: u64,
    query: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 10_000_000,
        query: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--events" => {
                if let Some(n) = it.next().and_then(|v| v.parse().ok()) {
                    args.events = n;
                }
            }
            "--query" => args.query = it.next(),
            _ => {}
        }
    }
    args
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut connectors = ConnectorRegistry::default();
    eddy_connectors::register_all(&mut connectors);
    let engine = Engine::new(EngineConfig::default(), connectors, None);
    let mut session = engine.new_session();
    for table in ["bid", "auction"] {
        let ddl = format!(
            "CREATE SOURCE {table}s (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
             WITH (connector = 'nexmark', nexmark.table = '{table}', events.max = '{}')",
            args.events
        );
        for s in parse_sql(&ddl)? {
            session.execute(&s, &[]).await?;
        }
    }

    // The same events, in memory, for the batch baseline.
    let started = Instant::now();
    let batches = collect(&mut session, "SELECT * FROM bids").await?;
    let generate_secs = started.elapsed().as_secs_f64();
    let bid_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or("the generator produced no bids")?;
    let ctx = SessionContext::new();
    ctx.register_table("bids", Arc::new(MemTable::try_new(schema, vec![batches])?))?;
    let auctions = collect(&mut session, "SELECT * FROM auctions").await?;
    let auction_schema = auctions
        .first()
        .map(|b| b.schema())
        .ok_or("the generator produced no auctions")?;
    ctx.register_table(
        "auctions",
        Arc::new(MemTable::try_new(auction_schema, vec![auctions])?),
    )?;

    println!(
        "events={} bids={} generate+stream={:.2}s ({:.2} M events/s)",
        args.events,
        bid_rows,
        generate_secs,
        args.events as f64 / generate_secs / 1e6
    );
    println!("| query | Eddy streaming (M events/s) | DataFusion batch (M events/s) | rows out |");
    println!("|---|---|---|---|");
    for (name, sql, batch_sql) in QUERIES {
        if args.query.as_deref().is_some_and(|q| q != *name) {
            continue;
        }
        let started = Instant::now();
        let out = collect(&mut session, sql).await?;
        let streaming = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let batch_rows: usize = ctx
            .sql(batch_sql.unwrap_or(sql))
            .await?
            .execute_stream()
            .await?
            .fold(0usize, |n, b| async move {
                n + b.map(|b| b.num_rows()).unwrap_or(0)
            })
            .await;
        let batch = started.elapsed().as_secs_f64();
        let rows: usize = out.iter().map(|b| b.num_rows()).sum();
        if rows != batch_rows && !LOWER_BOUND_BASELINES.contains(name) {
            return Err(format!("{name}: streaming gave {rows} rows, batch {batch_rows}").into());
        }
        println!(
            "| {name} | {:.2} | {:.2} | {rows} |",
            args.events as f64 / streaming / 1e6,
            args.events as f64 / batch / 1e6
        );
    }
    Ok(())
}

async fn collect(
    session: &mut eddy_engine::session::Session,
    sql: &str,
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>, Box<dyn std::error::Error>> {
    let mut statements = parse_sql(sql)?;
    let statement = statements.pop().ok_or("empty query")?;
    let StatementResult::Rows(mut output) = session.execute(&statement, &[]).await? else {
        return Err("not a query".into());
    };
    let mut batches = Vec::new();
    while let Some(b) = output.next_batch().await? {
        batches.push(b);
    }
    Ok(batches)
}
