//! Streaming equals batch for stream-stream joins (DESIGN.md 1.5, 1.7 rule 5): over bounded
//! inputs, a continuous interval or window join returns what the same join returns as a batch
//! query.
//!
//! Each test runs a join through Eddy's engine over bounded nexmark auction and bid sources
//! and compares it, as a sorted multiset of rows rendered to text, with plain DataFusion over
//! exactly the same events (see `common/oracle.rs`). An interval join's batch side is the same
//! SQL: DataFusion runs the BETWEEN / `<` / `>` condition as an ordinary join filter, outer
//! joins included. A window join's batch side never uses Eddy's window code: TUMBLE is
//! `date_bin`, HOP a join with a generated table of window starts, and the window join an
//! ordinary join on the window start.
//!
//! Nexmark events come in event-time order (checked), so no row is late: each query must
//! report none. 20 000 events span 2 s of event time: about 1 200 auctions and 18 400 bids,
//! each bid for a recent auction. Every query runs twice: with the watermark 4 s behind
//! (nothing is pruned, padded or joined before the end of input) and 4 ms behind (join state
//! is pruned, outer rows padded and windows joined while the stream runs, between the
//! engine's small source batches).

#[path = "common/oracle.rs"]
mod oracle;

use datafusion::arrow::record_batch::RecordBatch;
use oracle::{
    assert_same_rows, nexmark_rows, render, run_batch, run_streaming, time_range_in_order,
    timestamp_literal,
};

const EVENTS_MAX: &str = "20000";
/// Rows per source batch in the streaming engine: small, so that the watermark advances many
/// times during the stream.
const STREAM_BATCH_ROWS: usize = 500;
/// The watermark delays each query runs with (SQL interval literals).
const DELAYS: [&str; 2] = ["INTERVAL '4' SECOND", "INTERVAL '4' MILLISECOND"];

/// The bounded nexmark streams the joins read.
struct Events {
    auctions: Vec<RecordBatch>,
    bids: Vec<RecordBatch>,
}

impl Events {
    async fn load() -> Self {
        let events = Self {
            auctions: nexmark_rows("auction", EVENTS_MAX).await,
            bids: nexmark_rows("bid", EVENTS_MAX).await,
        };
        // In event-time order, so that no row can be behind its own source's watermark.
        time_range_in_order(&events.auctions);
        time_range_in_order(&events.bids);
        events
    }

    /// The first bid's and the last bid's time, in epoch milliseconds.
    fn bid_time_range(&self) -> (i64, i64) {
        time_range_in_order(&self.bids)
    }
}

/// How many rows the batch side must have for a comparison to prove something.
#[derive(Clone, Copy)]
struct AtLeast {
    rows: usize,
    /// Rows with a NULL (an outer join's padded rows).
    padded: usize,
}

const fn at_least(rows: usize, padded: usize) -> AtLeast {
    AtLeast { rows, padded }
}

/// Runs `streaming` with each watermark delay and compares it with `batch` (run by DataFusion
/// over the same auctions and bids).
async fn assert_streaming_equals_batch(
    events: &Events,
    streaming: &str,
    batch: &str,
    at_least: AtLeast,
) {
    let tables: [(&str, &[RecordBatch]); 2] =
        [("auctions", &events.auctions), ("bids", &events.bids)];
    let expected = render(&run_batch(&tables, batch).await);
    let padded = expected.iter().filter(|r| r.contains("NULL")).count();
    assert!(
        expected.len() >= at_least.rows && padded >= at_least.padded,
        "the batch side has only {} rows ({padded} with a NULL); the comparison would prove \
         little",
        expected.len()
    );
    for delay in DELAYS {
        let ddl = format!(
            "CREATE SOURCE auctions (WATERMARK FOR date_time AS date_time - {delay}) \
             WITH (connector = 'nexmark', nexmark.table = 'auction', events.max = '{EVENTS_MAX}'); \
             CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - {delay}) \
             WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '{EVENTS_MAX}')"
        );
        let run = run_streaming(&ddl, streaming, STREAM_BATCH_ROWS).await;
        assert_eq!(
            run.late, 0,
            "nexmark events are in order: no row may be late (delay {delay})"
        );
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

/// An interval join whose batch side is the same SQL.
async fn assert_interval_join_equals_batch(query: &str, at_least: AtLeast) {
    assert_streaming_equals_batch(&Events::load().await, query, query, at_least).await;
}

/// Bids for an auction 5 to 40 ms after its creation (both bounds on one side:
/// -40 ms <= A.date_time - B.date_time <= -5 ms), joined as `kind`. About a fifth of the bids
/// and four in five auctions find a partner.
fn auction_bids(kind: &str) -> String {
    format!(
        "SELECT A.id, A.seller, A.date_time, B.auction, B.bidder, B.price, B.date_time \
         FROM auctions A {kind} JOIN bids B \
         ON A.id = B.auction \
            AND B.date_time BETWEEN A.date_time + INTERVAL '5' MILLISECOND \
                                AND A.date_time + INTERVAL '40' MILLISECOND"
    )
}

#[tokio::test]
async fn inner_interval_join_equals_batch() {
    assert_interval_join_equals_batch(&auction_bids("INNER"), at_least(1000, 0)).await;
}

#[tokio::test]
async fn left_interval_join_equals_batch() {
    // Auctions without a bid 5 to 40 ms after their creation are padded.
    assert_interval_join_equals_batch(&auction_bids("LEFT"), at_least(1000, 100)).await;
}

#[tokio::test]
async fn right_interval_join_equals_batch() {
    // Bids outside 5 to 40 ms after their auction's creation are padded.
    assert_interval_join_equals_batch(&auction_bids("RIGHT"), at_least(10_000, 5000)).await;
}

#[tokio::test]
async fn full_interval_join_equals_batch() {
    assert_interval_join_equals_batch(&auction_bids("FULL"), at_least(10_000, 5000)).await;
}

#[tokio::test]
async fn self_interval_join_with_strict_bounds_and_residual_equals_batch() {
    // Bids for the same auction by bidders of the same class (a derived key), strictly less
    // than 5 ms before to strictly less than 3 ms after each other, at a lower price (a
    // residual condition); a LEFT join, so the residual also decides which bids are padded.
    assert_interval_join_equals_batch(
        "SELECT B1.auction, B1.bidder, B1.price, B1.date_time, \
                B2.auction, B2.bidder, B2.price, B2.date_time \
         FROM bids B1 LEFT JOIN bids B2 \
         ON B1.auction = B2.auction AND B1.bidder % 10 = B2.bidder % 10 \
            AND B1.date_time > B2.date_time - INTERVAL '5' MILLISECOND \
            AND B2.date_time + INTERVAL '3' MILLISECOND > B1.date_time \
            AND B1.price > B2.price",
        at_least(10_000, 1000),
    )
    .await;
}

/// `rel` with the TUMBLE 100 ms window start of each row, for the batch side.
fn date_bin_100ms(rel: &str) -> String {
    format!("(SELECT *, date_bin(INTERVAL '100 milliseconds', date_time) AS ws FROM {rel})")
}

/// A window join of auctions and bids per TUMBLE 100 ms window, joined as `kind`: the
/// streaming query and its batch counterpart.
fn tumble_auction_bids(kind: &str) -> (String, String) {
    (
        format!(
            "SELECT COALESCE(A.window_start, B.window_start), COALESCE(A.window_end, B.window_end), \
                    A.id, A.seller, B.auction, B.bidder, B.price, B.date_time \
             FROM TUMBLE(auctions, date_time, INTERVAL '100' MILLISECOND) A \
             {kind} JOIN TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND) B \
             ON A.id = B.auction AND A.window_start = B.window_start \
                AND A.window_end = B.window_end"
        ),
        format!(
            "SELECT COALESCE(A.ws, B.ws), COALESCE(A.ws, B.ws) + INTERVAL '100 milliseconds', \
                    A.id, A.seller, B.auction, B.bidder, B.price, B.date_time \
             FROM {} A {kind} JOIN {} B ON A.id = B.auction AND A.ws = B.ws",
            date_bin_100ms("auctions"),
            date_bin_100ms("bids")
        ),
    )
}

#[tokio::test]
async fn inner_window_join_equals_batch() {
    let (streaming, batch) = tumble_auction_bids("INNER");
    assert_streaming_equals_batch(&Events::load().await, &streaming, &batch, at_least(1000, 0))
        .await;
}

#[tokio::test]
async fn left_window_join_equals_batch() {
    let (streaming, batch) = tumble_auction_bids("LEFT");
    assert_streaming_equals_batch(
        &Events::load().await,
        &streaming,
        &batch,
        at_least(1000, 50),
    )
    .await;
}

#[tokio::test]
async fn full_window_join_equals_batch() {
    let (streaming, batch) = tumble_auction_bids("FULL");
    assert_streaming_equals_batch(
        &Events::load().await,
        &streaming,
        &batch,
        at_least(10_000, 5000),
    )
    .await;
}

#[tokio::test]
async fn semi_window_joins_equal_batch() {
    let events = Events::load().await;
    // IN: auctions with a bid in the same window.
    assert_streaming_equals_batch(
        &events,
        "SELECT A.window_start, A.id, A.seller FROM TUMBLE(auctions, date_time, INTERVAL '100' MILLISECOND) A \
         WHERE A.id IN (SELECT auction FROM TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND) B \
                        WHERE A.window_start = B.window_start AND A.window_end = B.window_end)",
        &format!(
            "SELECT A.ws, A.id, A.seller FROM {} A \
             WHERE A.id IN (SELECT auction FROM {} B WHERE A.ws = B.ws)",
            date_bin_100ms("auctions"),
            date_bin_100ms("bids")
        ),
        at_least(200, 0),
    )
    .await;
    // EXISTS, from the bid side: bids for an auction created in the same window.
    assert_streaming_equals_batch(
        &events,
        "SELECT B.window_start, B.auction, B.bidder, B.price, B.date_time \
         FROM TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND) B \
         WHERE EXISTS (SELECT * FROM TUMBLE(auctions, date_time, INTERVAL '100' MILLISECOND) A \
                       WHERE A.id = B.auction AND A.window_start = B.window_start \
                         AND A.window_end = B.window_end)",
        &format!(
            "SELECT B.ws, B.auction, B.bidder, B.price, B.date_time FROM {} B \
             WHERE EXISTS (SELECT * FROM {} A WHERE A.id = B.auction AND A.ws = B.ws)",
            date_bin_100ms("bids"),
            date_bin_100ms("auctions")
        ),
        at_least(500, 0),
    )
    .await;
}

#[tokio::test]
async fn anti_window_joins_equal_batch() {
    let events = Events::load().await;
    // NOT EXISTS: auctions without a bid in their window.
    assert_streaming_equals_batch(
        &events,
        "SELECT A.window_start, A.id, A.seller FROM TUMBLE(auctions, date_time, INTERVAL '100' MILLISECOND) A \
         WHERE NOT EXISTS (SELECT * FROM TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND) B \
                           WHERE A.id = B.auction AND A.window_start = B.window_start \
                             AND A.window_end = B.window_end)",
        &format!(
            "SELECT A.ws, A.id, A.seller FROM {} A \
             WHERE NOT EXISTS (SELECT * FROM {} B WHERE A.id = B.auction AND A.ws = B.ws)",
            date_bin_100ms("auctions"),
            date_bin_100ms("bids")
        ),
        at_least(100, 0),
    )
    .await;
    // NOT IN, where some windows have a NULL among the bids' auctions (the bids at a price
    // divisible by 997 count as NULL): those windows return no auction at all. DataFusion's
    // batch join cannot run a correlated NOT IN (a NULL-aware anti join on more than one
    // column), so the batch side spells out its rule: x NOT IN S holds unless some s in S
    // has s = x, s NULL or x NULL.
    assert_streaming_equals_batch(
        &events,
        "SELECT A.window_start, A.id, A.seller FROM TUMBLE(auctions, date_time, INTERVAL '100' MILLISECOND) A \
         WHERE A.id NOT IN (SELECT CASE WHEN price % 997 = 0 THEN NULL ELSE auction END \
                            FROM TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND) B \
                            WHERE A.window_start = B.window_start AND A.window_end = B.window_end)",
        &format!(
            "SELECT A.ws, A.id, A.seller FROM {} A \
             WHERE NOT EXISTS (SELECT * FROM (SELECT ws, CASE WHEN price % 997 = 0 THEN NULL \
                                                          ELSE auction END AS k FROM {}) B \
                               WHERE A.ws = B.ws AND (B.k = A.id OR B.k IS NULL OR A.id IS NULL))",
            date_bin_100ms("auctions"),
            date_bin_100ms("bids")
        ),
        at_least(50, 0),
    )
    .await;
}

#[tokio::test]
async fn hop_window_join_equals_batch() {
    // HOP(slide 50 ms, size 100 ms) on both sides: each row is in two windows.
    let events = Events::load().await;
    let (first, last) = events.bid_time_range();
    let start = (first - 100).div_euclid(50) * 50;
    let windowed = |rel: &str| {
        format!(
            "(SELECT w.ws, r.* FROM {rel} r JOIN (SELECT value AS ws FROM generate_series({}, {}, \
                  INTERVAL '50 milliseconds')) w \
              ON r.date_time >= w.ws AND r.date_time < w.ws + INTERVAL '100 milliseconds')",
            timestamp_literal(start),
            timestamp_literal(last)
        )
    };
    assert_streaming_equals_batch(
        &events,
        "SELECT A.window_start, A.window_end, A.id, B.bidder, B.price, B.date_time \
         FROM HOP(auctions, date_time, INTERVAL '50' MILLISECOND, INTERVAL '100' MILLISECOND) A \
         JOIN HOP(bids, date_time, INTERVAL '50' MILLISECOND, INTERVAL '100' MILLISECOND) B \
         ON A.id = B.auction AND A.window_start = B.window_start AND A.window_end = B.window_end",
        &format!(
            "SELECT A.ws, A.ws + INTERVAL '100 milliseconds', A.id, B.bidder, B.price, B.date_time \
             FROM {} A JOIN {} B ON A.id = B.auction AND A.ws = B.ws",
            windowed("auctions"),
            windowed("bids")
        ),
        at_least(1000, 0),
    )
    .await;
}

#[tokio::test]
async fn window_join_of_window_aggregates_equals_batch() {
    // Nexmark q8's shape: persons who both sold (auctions per seller) and bid (bids per
    // bidder) in the same window, as a FULL join so both sides' lone groups are padded.
    assert_streaming_equals_batch(
        &Events::load().await,
        "SELECT COALESCE(S.window_start, B.window_start), S.seller, S.auctions, B.bidder, B.bids, \
                B.top \
         FROM (SELECT seller, count(*) AS auctions, window_start, window_end \
               FROM TUMBLE(auctions, date_time, INTERVAL '100' MILLISECOND) \
               GROUP BY seller, window_start, window_end) S \
         FULL JOIN (SELECT bidder, count(*) AS bids, max(price) AS top, window_start, window_end \
                    FROM TUMBLE(bids, date_time, INTERVAL '100' MILLISECOND) \
                    GROUP BY bidder, window_start, window_end) B \
         ON S.seller = B.bidder AND S.window_start = B.window_start AND S.window_end = B.window_end",
        &format!(
            "SELECT COALESCE(S.ws, B.ws), S.seller, S.auctions, B.bidder, B.bids, B.top \
             FROM (SELECT seller, count(*) AS auctions, ws FROM {} GROUP BY seller, ws) S \
             FULL JOIN (SELECT bidder, count(*) AS bids, max(price) AS top, ws FROM {} \
                        GROUP BY bidder, ws) B \
             ON S.seller = B.bidder AND S.ws = B.ws",
            date_bin_100ms("auctions"),
            date_bin_100ms("bids")
        ),
        at_least(1000, 500),
    )
    .await;
}
