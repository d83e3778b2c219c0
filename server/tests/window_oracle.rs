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

#[path = "common/oracle.rs"]
mod oracle;

use datafusion::arrow::record_batch::RecordBatch;
use oracle::{
    assert_same_rows, nexmark_rows, render, run_batch, run_streaming, time_range_in_order,
    timestamp_literal,
};

const EVENTS_MAX: &str = "20000";
/// Rows per source batch in the streaming engine: small, so that the watermark advances (and
/// windows close) many times during the stream.
const STREAM_BATCH_ROWS: usize = 500;
/// The watermark delays each query runs with (SQL interval literals).
const DELAYS: [&str; 2] = ["INTERVAL '4' SECOND", "INTERVAL '4' MILLISECOND"];

/// The bids of a bounded nexmark source with `events.max` = [`EVENTS_MAX`].
async fn nexmark_bids() -> Vec<RecordBatch> {
    nexmark_rows("bid", EVENTS_MAX).await
}

/// Runs `streaming` (with `{delay}` replaced by each watermark delay) and compares it with
/// `batch`. `min_rows` keeps the comparison from passing vacuously.
async fn assert_streaming_equals_batch(
    bids: &[RecordBatch],
    streaming: &str,
    batch: &str,
    min_rows: usize,
) {
    let expected = render(&run_batch(&[("bids", bids)], batch).await);
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
        let run = run_streaming(&ddl, streaming, STREAM_BATCH_ROWS).await;
        assert_eq!(run.late, 0, "nexmark bids are in order: no row may be late");
        assert!(
            run.warnings.is_empty(),
            "unexpected warnings: {:?}",
            run.warnings
        );
        assert_same_rows(
            &render(&run.batches),
            &expected,
            &format!(
                "watermark delay {delay}\nstreaming query:\n{streaming}\nbatch query:\n{batch}"
            ),
        );
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
    let (first, last) = time_range_in_order(&bids);
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
    let (first, last) = time_range_in_order(&bids);
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
    let (first, last) = time_range_in_order(&bids);
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
