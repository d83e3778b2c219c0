//! Streaming equals batch for OVER aggregations (DESIGN.md 1.7 rule 5, issue 19 item 3): over
//! bounded input, the append-only rows of `agg(...) OVER (PARTITION BY k ORDER BY date_time
//! <frame>)`, `LAG` and `LEAD` are exactly the rows DataFusion's batch query returns.
//!
//! Each query runs through Eddy's engine over bounded nexmark bids, at parallelism 1 and 2 and
//! with the watermark 4 s and 4 ms behind, and is compared with plain DataFusion over the same
//! bids (see `common/oracle.rs`). Bids can share a timestamp. A RANGE frame includes every
//! peer, so its values do not depend on the order of tied rows; a ROWS frame and LAG do, so
//! those queries aggregate only the time column itself, whose sequence within a partition is
//! the same whatever order tied rows take, and output only the partition and time columns
//! beside. Nexmark events come in event-time order, so no row is late.

#[path = "common/oracle.rs"]
mod oracle;

use datafusion::arrow::record_batch::RecordBatch;
use oracle::{assert_same_rows, nexmark_rows_in_order, render, run_batch, run_parallel};

const EVENTS_MAX: &str = "20000";
/// Rows per source batch: small, so that rows wait for the watermark across batches.
const STREAM_BATCH_ROWS: usize = 500;
const DELAYS: [&str; 2] = ["INTERVAL '4' SECOND", "INTERVAL '4' MILLISECOND"];

/// Runs `query` over the nexmark bids at parallelism 1 and 2 with each watermark delay, and
/// compares its rows with DataFusion's over the same bids.
async fn assert_streaming_equals_batch(bids: &[RecordBatch], query: &str) {
    let expected = render(&run_batch(&[("bids", bids)], query).await);
    assert!(
        expected.len() >= 1000,
        "the batch side has only {} rows; the comparison would prove little",
        expected.len()
    );
    for parallelism in [1, 2] {
        for delay in DELAYS {
            let ddl = format!(
                "CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - {delay}) \
                 WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '{EVENTS_MAX}')"
            );
            let run = run_parallel(&ddl, query, STREAM_BATCH_ROWS, parallelism).await;
            assert_eq!(run.late, 0, "nexmark bids are in order: none may be late");
            assert!(run.warnings.is_empty(), "warnings: {:?}", run.warnings);
            assert_same_rows(
                &render(&run.batches),
                &expected,
                &format!("parallelism {parallelism}, watermark delay {delay}\n{query}"),
            );
        }
    }
}

#[tokio::test]
async fn range_frames_equal_batch() {
    let bids = nexmark_rows_in_order("bid", EVENTS_MAX).await;
    // Per auction, the bids of the last 10 s (peers included): sliding sum, count, avg, min
    // and max.
    assert_streaming_equals_batch(
        &bids,
        "SELECT auction, bidder, price, date_time, sum(price) OVER w, count(*) OVER w, \
         avg(price) OVER w, min(price) OVER w, max(price) OVER w FROM bids \
         WINDOW w AS (PARTITION BY auction ORDER BY date_time \
         RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)",
    )
    .await;
    // Two frames of one partition: one operator per frame, stacked.
    assert_streaming_equals_batch(
        &bids,
        "SELECT auction, price, date_time, sum(price) OVER (PARTITION BY auction ORDER BY \
         date_time RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW), \
         max(price) OVER (PARTITION BY auction ORDER BY date_time RANGE BETWEEN \
         INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) FROM bids",
    )
    .await;
    // ORDER BY alone: RANGE UNBOUNDED PRECEDING, a running total per bidder; and without
    // PARTITION BY, one running maximum over every bid.
    assert_streaming_equals_batch(
        &bids,
        "SELECT bidder, price, date_time, sum(price) OVER (PARTITION BY bidder ORDER BY \
         date_time), count(*) OVER (PARTITION BY bidder ORDER BY date_time) FROM bids",
    )
    .await;
    assert_streaming_equals_batch(
        &bids,
        "SELECT price, date_time, max(price) OVER (ORDER BY date_time) FROM bids",
    )
    .await;
}

#[tokio::test]
async fn rows_frames_and_lag_equal_batch() {
    let bids = nexmark_rows_in_order("bid", EVENTS_MAX).await;
    assert_streaming_equals_batch(
        &bids,
        "SELECT auction, date_time, count(*) OVER w, min(date_time) OVER w, \
         max(date_time) OVER w FROM bids \
         WINDOW w AS (PARTITION BY auction ORDER BY date_time \
         ROWS BETWEEN 3 PRECEDING AND CURRENT ROW)",
    )
    .await;
    assert_streaming_equals_batch(
        &bids,
        "SELECT bidder, date_time, LAG(date_time) OVER (PARTITION BY bidder ORDER BY \
         date_time), LAG(date_time, 3, TIMESTAMP '2000-01-01 00:00:00') OVER (PARTITION BY \
         bidder ORDER BY date_time) FROM bids",
    )
    .await;
    // LEAD waits for the rows it reads (the last of each bidder's rows until the end).
    assert_streaming_equals_batch(
        &bids,
        "SELECT bidder, date_time, LEAD(date_time) OVER (PARTITION BY bidder ORDER BY \
         date_time), LEAD(date_time, 2, TIMESTAMP '2000-01-01 00:00:00') OVER (PARTITION BY \
         bidder ORDER BY date_time) FROM bids",
    )
    .await;
}
