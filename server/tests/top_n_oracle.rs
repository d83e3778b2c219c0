//! Streaming equals batch for Top-N and deduplication (DESIGN.md 1.7 rule 5, issue 19): over
//! bounded input, the changelog of a continuous Top-N, applied in order, ends with exactly the
//! rows DataFusion's batch query returns; an append-only deduplication returns those rows
//! outright.
//!
//! Each query runs through Eddy's engine over bounded nexmark bids, at parallelism 1 and 2 and
//! with the watermark 4 s and 4 ms behind (a deduplication keeping the first row emits as the
//! watermark passes), and is compared with plain DataFusion over the same bids (see
//! `common/oracle.rs`). `ROW_NUMBER()` numbers rows that tie in the ORDER BY in no particular
//! order in a batch query, so those queries output only the partition, ORDER BY and number
//! columns, which tied rows share. Nexmark events come in event-time order, so no row is late.

#[path = "common/oracle.rs"]
mod oracle;

use datafusion::arrow::record_batch::RecordBatch;
use oracle::{
    assert_same_rows, fold_changelog, nexmark_rows_in_order, render, run_batch, run_parallel,
};

const EVENTS_MAX: &str = "20000";
/// Rows per source batch: small, so that partitions change over many batches.
const STREAM_BATCH_ROWS: usize = 500;
const DELAYS: [&str; 2] = ["INTERVAL '4' SECOND", "INTERVAL '4' MILLISECOND"];

/// How a query's result arrives.
#[derive(Clone, Copy, PartialEq)]
enum Emits {
    /// A changelog, folded into its final rows.
    Updating,
    /// Append-only rows.
    Append,
}

/// Runs `query` over the nexmark bids at parallelism 1 and 2 with each watermark delay, and
/// compares its final rows with DataFusion's over the same bids. The batch side must have at
/// least `at_least` rows, and an updating result must retract at least one row.
async fn assert_streaming_equals_batch(
    bids: &[RecordBatch],
    query: &str,
    emits: Emits,
    at_least: usize,
) {
    let expected = render(&run_batch(&[("bids", bids)], query).await);
    assert!(
        expected.len() >= at_least,
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
            let got = match emits {
                Emits::Updating => {
                    let (rows, retractions) = fold_changelog(&run.batches);
                    assert!(retractions > 0, "the changelog retracts rows:\n{query}");
                    rows
                }
                Emits::Append => render(&run.batches),
            };
            assert_same_rows(
                &got,
                &expected,
                &format!("parallelism {parallelism}, watermark delay {delay}\n{query}"),
            );
        }
    }
}

#[tokio::test]
async fn row_number_top_n_per_partition_equals_batch() {
    // Nexmark q19's shape: the three highest prices of each auction, with their numbers.
    assert_streaming_equals_batch(
        &nexmark_rows_in_order("bid", EVENTS_MAX).await,
        "SELECT auction, price, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction \
         ORDER BY price DESC) AS rn FROM bids) WHERE rn <= 3",
        Emits::Updating,
        1000,
    )
    .await;
}

#[tokio::test]
async fn rank_and_dense_rank_top_n_equal_batch() {
    let bids = nexmark_rows_in_order("bid", EVENTS_MAX).await;
    // Every bid tied for the two highest prices of its auction (whole rows: ties all stay).
    assert_streaming_equals_batch(
        &bids,
        "SELECT auction, bidder, price, date_time, extra, r FROM (SELECT *, RANK() OVER \
         (PARTITION BY auction ORDER BY price DESC) AS r FROM bids) WHERE r <= 2",
        Emits::Updating,
        1000,
    )
    .await;
    // Each bidder's bids at its two lowest prices, without the number (only rows entering or
    // leaving are emitted).
    assert_streaming_equals_batch(
        &bids,
        "SELECT bidder, auction, price, date_time FROM (SELECT *, DENSE_RANK() OVER \
         (PARTITION BY bidder ORDER BY price) AS r FROM bids) WHERE r <= 2",
        Emits::Updating,
        500,
    )
    .await;
}

#[tokio::test]
async fn top_n_without_partition_equals_batch() {
    // One instance ranks every bid.
    assert_streaming_equals_batch(
        &nexmark_rows_in_order("bid", EVENTS_MAX).await,
        "SELECT price, rn FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY price DESC, auction) AS \
         rn FROM bids) WHERE rn < 6",
        Emits::Updating,
        5,
    )
    .await;
}

#[tokio::test]
async fn top_n_over_an_updating_aggregate_equals_batch() {
    let bids = nexmark_rows_in_order("bid", EVENTS_MAX).await;
    // The five auctions with the most bids (ties included), over the aggregate's changelog:
    // each count's update retracts the old count.
    assert_streaming_equals_batch(
        &bids,
        "SELECT auction, n, r FROM (SELECT auction, n, RANK() OVER (ORDER BY n DESC) AS r \
         FROM (SELECT auction, count(*) AS n FROM bids GROUP BY auction)) WHERE r <= 5",
        Emits::Updating,
        5,
    )
    .await;
    // Per bidder, the two auctions it bid on most (ties broken by auction).
    assert_streaming_equals_batch(
        &bids,
        "SELECT bidder, auction, n, rn FROM (SELECT bidder, auction, n, ROW_NUMBER() OVER \
         (PARTITION BY bidder ORDER BY n DESC, auction) AS rn FROM (SELECT bidder, auction, \
         count(*) AS n FROM bids GROUP BY bidder, auction)) WHERE rn <= 2",
        Emits::Updating,
        500,
    )
    .await;
}

#[tokio::test]
async fn deduplication_equals_batch() {
    let bids = nexmark_rows_in_order("bid", EVENTS_MAX).await;
    // Each bidder's first bid on each auction: append-only, emitted as the watermark passes.
    assert_streaming_equals_batch(
        &bids,
        "SELECT bidder, auction, date_time FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY \
         bidder, auction ORDER BY date_time) AS rn FROM bids) WHERE rn = 1",
        Emits::Append,
        1000,
    )
    .await;
    // Nexmark q18's shape: the last (updating, each later bid retracting the one before).
    assert_streaming_equals_batch(
        &bids,
        "SELECT bidder, auction, date_time FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY \
         bidder, auction ORDER BY date_time DESC) AS rn FROM bids) WHERE rn <= 1",
        Emits::Updating,
        1000,
    )
    .await;
}
