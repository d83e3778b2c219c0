//! Streaming equals batch (DESIGN.md 1.7 rule 5): over a bounded input, a continuous window
//! query returns what the same computation returns as a batch query, minus the late rows.
//!
//! Each test runs a window query through Eddy's engine over a bounded nexmark bid source and
//! compares it, as a sorted multiset of rows rendered to text, with plain DataFusion over
//! exactly the same events (the nexmark connector opened with the same options, collected into
//! a `MemTable`). The batch side never uses Eddy's window code: TUMBLE is `date_bin`, HOP and
//! CUMULATE join every bid with a generated table of window bounds, SESSION numbers sessions
//! with `lag` and a running `sum`.
//!
//! Nexmark bids come in event-time order, so no row is late: each query must report none.
//! 20 000 events span 2 s of event time (10 000 events per second), so the windows are
//! milliseconds wide. Every query runs twice: with the watermark 4 s behind (the usual Nexmark
//! delay: nothing closes before the end of input, every window fires at the end) and 4 ms
//! behind (windows close while the stream runs, between the engine's small source batches).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_engine::connector::{ConnectorOptions, ConnectorRegistry, SourceContext};
use eddy_engine::session::{Engine, EngineConfig, StatementResult};
use eddy_engine::sql::parser::parse_sql;
use futures::TryStreamExt;

const EVENTS_MAX: &str = "20000";
/// Rows per source batch in the streaming engine: small, so that the watermark advances (and
/// windows close) many times during the stream.
const STREAM_BATCH_ROWS: usize = 500;
/// The watermark delays each query runs with (SQL interval literals).
const DELAYS: [&str; 2] = ["INTERVAL '4' SECOND", "INTERVAL '4' MILLISECOND"];

fn nexmark_options() -> ConnectorOptions {
    [
        ("connector", "nexmark"),
        ("nexmark.table", "bid"),
        ("events.max", EVENTS_MAX),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn connectors() -> ConnectorRegistry {
    let mut registry = ConnectorRegistry::default();
    eddy_connectors::register_all(&mut registry);
    registry
}

/// The bids the nexmark connector produces with [`nexmark_options`].
async fn nexmark_bids() -> Vec<RecordBatch> {
    let registry = connectors();
    let connector = registry.source("nexmark").expect("nexmark is registered");
    let options = nexmark_options();
    let schema = connector
        .default_schema(&options)
        .unwrap()
        .expect("nexmark knows the bid schema");
    let reader = connector
        .open(SourceContext {
            source_name: "bids".to_string(),
            schema,
            options,
            metrics: Arc::default(),
            batch_size: 4096,
        })
        .unwrap();
    assert!(reader.bounded, "events.max bounds the source");
    reader.stream.try_collect().await.unwrap()
}

/// Every row of `batches` as text, columns separated by `|`. Timestamps are rendered at
/// millisecond precision whatever their unit (DataFusion's `generate_series` yields
/// nanoseconds).
fn render(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<Arc<dyn Array>> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Timestamp(_, tz) => {
                    cast(c, &DataType::Timestamp(TimeUnit::Millisecond, tz.clone())).unwrap()
                }
                _ => Arc::clone(c),
            })
            .collect();
        let formatters: Vec<ArrayFormatter> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

/// Runs `ddl` then `query` through a fresh engine; returns the rows and the query's warnings.
async fn run_streaming(ddl: &str, query: &str) -> (Vec<RecordBatch>, u64, Vec<String>) {
    let engine = Engine::new(
        EngineConfig {
            data_dir: None,
            batch_size: STREAM_BATCH_ROWS,
        },
        connectors(),
        None,
    );
    let mut session = engine.new_session();
    for statement in parse_sql(ddl).unwrap() {
        session.execute(&statement, &[]).await.unwrap();
    }
    let statements = parse_sql(query).unwrap();
    assert_eq!(statements.len(), 1);
    let mut output = match session.execute(&statements[0], &[]).await {
        Ok(StatementResult::Rows(output)) => output,
        Ok(_) => panic!("not a query: {query}"),
        Err(e) => panic!("streaming query failed: {e}\n{query}"),
    };
    let mut batches = Vec::new();
    while let Some(batch) = output.next_batch().await.unwrap() {
        batches.push(batch);
    }
    let late = output
        .metrics()
        .expect("a query over a source is continuous")
        .late_rows();
    (batches, late, output.warnings())
}

/// Runs `query` with plain DataFusion over `bids` (registered as table `bids`).
async fn run_batch(bids: &[RecordBatch], query: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(bids[0].schema(), vec![bids.to_vec()]).unwrap();
    ctx.register_table("bids", Arc::new(table)).unwrap();
    let frame = ctx
        .sql(query)
        .await
        .unwrap_or_else(|e| panic!("batch query failed to plan: {e}\n{query}"));
    frame
        .collect()
        .await
        .unwrap_or_else(|e| panic!("batch query failed: {e}\n{query}"))
}

/// The smallest and largest `date_time` of the bids, in epoch milliseconds.
fn time_range(bids: &[RecordBatch]) -> (i64, i64) {
    let mut range = (i64::MAX, i64::MIN);
    for batch in bids {
        let index = batch.schema().index_of("date_time").unwrap();
        let times = batch
            .column(index)
            .as_primitive::<TimestampMillisecondType>();
        for t in times.iter().flatten() {
            range = (range.0.min(t), range.1.max(t));
        }
    }
    range
}

/// A SQL timestamp literal for epoch milliseconds.
fn timestamp_literal(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).expect("a representable time");
    format!(
        "TIMESTAMP '{}'",
        t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f")
    )
}

/// Multiset difference `a - b` (at most `limit` rows).
fn missing_from(a: &[String], b: &[String], limit: usize) -> Vec<String> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for row in b {
        *counts.entry(row).or_default() += 1;
    }
    let mut out = Vec::new();
    for row in a {
        let n = counts.entry(row).or_default();
        if *n > 0 {
            *n -= 1;
        } else if out.len() < limit {
            out.push(row.clone());
        }
    }
    out
}

/// Runs `streaming` (with `{delay}` replaced by each watermark delay) and compares it with
/// `batch`. `min_rows` keeps the comparison from passing vacuously.
async fn assert_streaming_equals_batch(
    bids: &[RecordBatch],
    streaming: &str,
    batch: &str,
    min_rows: usize,
) {
    let expected = render(&run_batch(bids, batch).await);
    assert!(
        expected.len() >= min_rows,
        "the batch side has only {} rows; the comparison would prove little",
        expected.len()
    );
    for delay in DELAYS {
        let ddl = format!(
            "CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - {delay}) \
             WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '{EVENTS_MAX}')"
        );
        let (batches, late, warnings) = run_streaming(&ddl, streaming).await;
        assert_eq!(late, 0, "nexmark bids are in order: no row may be late");
        assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
        let actual = render(&batches);
        if actual != expected {
            panic!(
                "streaming (watermark delay {delay}) differs from batch: {} rows vs {} rows\n\
                 only in streaming (first 10):\n  {}\nonly in batch (first 10):\n  {}\n\
                 streaming query:\n{streaming}\nbatch query:\n{batch}",
                actual.len(),
                expected.len(),
                missing_from(&actual, &expected, 10).join("\n  "),
                missing_from(&expected, &actual, 10).join("\n  "),
            );
        }
    }
}

#[tokio::test]
async fn tumble_equals_date_bin_grouping() {
    assert_streaming_equals_batch(
        &nexmark_bids().await,
        "SELECT window_start, window_end, auction, count(*), sum(price), max(price), avg(price), \
                count(DISTINCT bidder), approx_distinct(bidder) \
         FROM TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND) \
         GROUP BY window_start, window_end, auction",
        "SELECT ws, ws + INTERVAL '100 milliseconds', auction, count(*), sum(price), max(price), \
                avg(price), count(DISTINCT bidder), approx_distinct(bidder) \
         FROM (SELECT *, date_bin(INTERVAL '100 milliseconds', date_time) AS ws FROM bids) \
         GROUP BY ws, auction",
        1000,
    )
    .await;
}

#[tokio::test]
async fn hop_equals_a_join_with_every_window() {
    // HOP(slide 30 ms, size 100 ms): the slide does not divide the size (10 ms panes).
    let bids = nexmark_bids().await;
    let (first, last) = time_range(&bids);
    // Window starts are the multiples of the slide from before the first row's earliest
    // window to the last row.
    let start = (first - 100).div_euclid(30) * 30;
    let batch = format!(
        "SELECT w.ws, w.ws + INTERVAL '100 milliseconds', b.bidder % 10 AS k, count(*), \
                sum(b.price), max(b.price), avg(b.price), count(DISTINCT b.auction) \
         FROM bids b \
         JOIN (SELECT value AS ws FROM generate_series({}, {}, INTERVAL '30 milliseconds')) w \
           ON b.date_time >= w.ws AND b.date_time < w.ws + INTERVAL '100 milliseconds' \
         GROUP BY w.ws, b.bidder % 10",
        timestamp_literal(start),
        timestamp_literal(last)
    );
    assert_streaming_equals_batch(
        &bids,
        "SELECT window_start, window_end, bidder % 10 AS k, count(*), sum(price), max(price), \
                avg(price), count(DISTINCT auction) \
         FROM HOP(bids, date_time, INTERVAL '30' MILLISECOND, INTERVAL '100' MILLISECOND) \
         GROUP BY window_start, window_end, bidder % 10",
        &batch,
        500,
    )
    .await;
}

#[tokio::test]
async fn cumulate_equals_a_join_with_every_window() {
    // CUMULATE(step 25 ms, max_size 100 ms): a window per step end, starting at its block.
    let bids = nexmark_bids().await;
    let (first, last) = time_range(&bids);
    let first_end = first.div_euclid(25) * 25 + 25;
    let last_end = last.div_euclid(100) * 100 + 100;
    // The window ending at `we` starts at the block holding its last instant (we - 1 ms).
    let batch = format!(
        "SELECT w.ws, w.we, b.auction, count(*), sum(b.price), max(b.price), avg(b.price), \
                count(DISTINCT b.bidder) \
         FROM bids b \
         JOIN (SELECT date_bin(INTERVAL '100 milliseconds', value - INTERVAL '1 millisecond') AS ws, \
                      value AS we \
               FROM generate_series({}, {}, INTERVAL '25 milliseconds')) w \
           ON b.date_time >= w.ws AND b.date_time < w.we \
         GROUP BY w.ws, w.we, b.auction",
        timestamp_literal(first_end),
        timestamp_literal(last_end)
    );
    assert_streaming_equals_batch(
        &bids,
        "SELECT window_start, window_end, auction, count(*), sum(price), max(price), avg(price), \
                count(DISTINCT bidder) \
         FROM CUMULATE(bids, date_time, INTERVAL '25' MILLISECOND, INTERVAL '100' MILLISECOND) \
         GROUP BY window_start, window_end, auction",
        &batch,
        1000,
    )
    .await;
}

#[tokio::test]
async fn session_equals_lag_and_running_sum() {
    // A bid starts a new session of its bidder when it is more than the gap (20 ms) after the
    // bidder's previous bid: bids exactly one gap apart share a session, which ends at its
    // last bid + gap.
    assert_streaming_equals_batch(
        &nexmark_bids().await,
        "SELECT window_start, window_end, bidder, count(*), sum(price), max(price), avg(price), \
                count(DISTINCT auction) \
         FROM SESSION(bids, date_time, INTERVAL '20' MILLISECOND, bidder) \
         GROUP BY window_start, window_end, bidder",
        "WITH flagged AS ( \
           SELECT *, CASE WHEN date_time <= lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time) \
                                            + INTERVAL '20 milliseconds' \
                          THEN 0 ELSE 1 END AS new_session \
           FROM bids), \
         numbered AS ( \
           SELECT *, sum(new_session) OVER (PARTITION BY bidder ORDER BY date_time \
                                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session \
           FROM flagged) \
         SELECT min(date_time), max(date_time) + INTERVAL '20 milliseconds', bidder, count(*), \
                sum(price), max(price), avg(price), count(DISTINCT auction) \
         FROM numbered GROUP BY bidder, session",
        1000,
    )
    .await;
}

#[tokio::test]
async fn tumble_with_grouping_sets_and_filters_equals_batch() {
    assert_streaming_equals_batch(
        &nexmark_bids().await,
        "SELECT window_start, window_end, channel, count(*), \
                count(*) FILTER (WHERE price > 5000), sum(price) FILTER (WHERE bidder % 2 = 0), \
                max(price) \
         FROM TUMBLE(bids, date_time, INTERVAL '200' MILLISECOND) \
         GROUP BY window_start, window_end, GROUPING SETS ((channel), ())",
        "SELECT ws, ws + INTERVAL '200 milliseconds', channel, count(*), \
                count(*) FILTER (WHERE price > 5000), sum(price) FILTER (WHERE bidder % 2 = 0), \
                max(price) \
         FROM (SELECT *, date_bin(INTERVAL '200 milliseconds', date_time) AS ws FROM bids) \
         GROUP BY GROUPING SETS ((ws, channel), (ws))",
        40,
    )
    .await;
}

#[tokio::test]
async fn top_n_over_a_window_aggregate_equals_row_number_in_batch() {
    // Nexmark q5's shape: the auctions with the most bids per window.
    let bids = nexmark_bids().await;
    let (first, last) = time_range(&bids);
    let start = (first - 100).div_euclid(50) * 50;
    let batch = format!(
        "SELECT ws, ws + INTERVAL '100 milliseconds', auction, num, rn FROM ( \
           SELECT *, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY num DESC, auction) AS rn \
           FROM (SELECT w.ws, b.auction, count(*) AS num FROM bids b \
                 JOIN (SELECT value AS ws FROM generate_series({}, {}, \
                       INTERVAL '50 milliseconds')) w \
                   ON b.date_time >= w.ws AND b.date_time < w.ws + INTERVAL '100 milliseconds' \
                 GROUP BY w.ws, b.auction)) \
         WHERE rn <= 3",
        timestamp_literal(start),
        timestamp_literal(last)
    );
    assert_streaming_equals_batch(
        &bids,
        "SELECT window_start, window_end, auction, num, rn FROM ( \
           SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end \
                                        ORDER BY num DESC, auction) AS rn \
           FROM (SELECT window_start, window_end, auction, count(*) AS num \
                 FROM HOP(bids, date_time, INTERVAL '50' MILLISECOND, INTERVAL '100' MILLISECOND) \
                 GROUP BY window_start, window_end, auction)) \
         WHERE rn <= 3",
        &batch,
        100,
    )
    .await;
}

#[tokio::test]
async fn top_n_over_a_window_function_equals_row_number_in_batch() {
    // The two highest prices per window and bidder class, straight from the window function
    // (only order keys and the rank are compared, so ties cannot make the sides differ).
    assert_streaming_equals_batch(
        &nexmark_bids().await,
        "SELECT window_start, k, price, rn FROM ( \
           SELECT window_start, bidder % 5 AS k, price, ROW_NUMBER() OVER ( \
             PARTITION BY window_start, window_end, bidder % 5 ORDER BY price DESC) AS rn \
           FROM TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND)) \
         WHERE rn <= 2",
        "SELECT ws, k, price, rn FROM ( \
           SELECT ws, bidder % 5 AS k, price, ROW_NUMBER() OVER ( \
             PARTITION BY ws, bidder % 5 ORDER BY price DESC) AS rn \
           FROM (SELECT *, date_bin(INTERVAL '100 milliseconds', date_time) AS ws FROM bids)) \
         WHERE rn <= 2",
        100,
    )
    .await;
}
