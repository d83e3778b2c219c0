//! Streaming equals batch for regular joins (issue 19 item 1; DESIGN.md 1.7 rule 5): over
//! bounded nexmark inputs, the final state of a regular join's changelog (or its appended rows,
//! for an inner join of append-only inputs) equals DataFusion's batch result of the same SQL,
//! at parallelism 1 and 2.
//!
//! The two inputs are read concurrently, so rows of one side arrive before, between and after
//! their partners on the other: outer rows are padded, retracted when a partner arrives and
//! (over a changelog input) padded again, in an order that varies from run to run; only the
//! final state is fixed, and that is what is compared. 20 000 events: about 400 persons, 1 200
//! auctions and 18 400 bids.

#[path = "common/oracle.rs"]
#[allow(dead_code)] // shared by the oracle tests; this one uses part of it
mod oracle;

use datafusion::arrow::record_batch::RecordBatch;
use oracle::{assert_same_rows, fold_changelog, nexmark_rows, render, run_batch, run_parallel};

const EVENTS_MAX: &str = "20000";
/// Rows per source batch: small, so that the sides interleave.
const STREAM_BATCH_ROWS: usize = 300;

const DDL: &str = "CREATE SOURCE persons WITH (connector = 'nexmark', nexmark.table = 'person', \
       events.max = '20000'); \
     CREATE SOURCE auctions WITH (connector = 'nexmark', nexmark.table = 'auction', \
       events.max = '20000'); \
     CREATE SOURCE bids WITH (connector = 'nexmark', nexmark.table = 'bid', \
       events.max = '20000')";

/// Runs `query` streaming at parallelism 1 and 2 and as a batch query, and compares the
/// streaming final state with the batch rows; the batch side must have `at_least` rows, of
/// which `padded` hold a NULL.
async fn assert_final_state_equals_batch(
    query: &str,
    updating: bool,
    at_least: usize,
    padded: usize,
) {
    let persons = nexmark_rows("person", EVENTS_MAX).await;
    let auctions = nexmark_rows("auction", EVENTS_MAX).await;
    let bids = nexmark_rows("bid", EVENTS_MAX).await;
    let tables: [(&str, &[RecordBatch]); 3] = [
        ("persons", &persons),
        ("auctions", &auctions),
        ("bids", &bids),
    ];
    let expected = render(&run_batch(&tables, query).await);
    let nulls = expected.iter().filter(|r| r.contains("NULL")).count();
    assert!(
        expected.len() >= at_least && nulls >= padded,
        "the batch side has only {} rows ({nulls} with a NULL); the comparison would prove \
         little",
        expected.len()
    );
    for parallelism in [1, 2] {
        let run = run_parallel(DDL, query, STREAM_BATCH_ROWS, parallelism).await;
        let is_changelog = run
            .batches
            .first()
            .is_some_and(|b| matches!(b.schema().field(0).name().as_str(), "op" | "__op"));
        assert_eq!(
            is_changelog,
            updating,
            "whether the result is a changelog: {} batches, {:?}",
            run.batches.len(),
            run.batches.first().map(|b| b.schema())
        );
        assert_eq!(run.late, 0, "a regular join drops no row as late");
        assert!(run.warnings.is_empty(), "warnings: {:?}", run.warnings);
        let state = if updating {
            fold_changelog(&run.batches).0
        } else {
            render(&run.batches)
        };
        assert_same_rows(
            &state,
            &expected,
            &format!("parallelism {parallelism}\nquery:\n{query}"),
        );
    }
}

/// Nexmark q3's join: an inner join of append-only inputs appends its rows.
#[tokio::test]
async fn inner_join_appends_the_batch_rows() {
    assert_final_state_equals_batch(
        "SELECT P.name, P.city, P.state, A.id FROM auctions A JOIN persons P \
         ON A.seller = P.id WHERE A.category = 10",
        false,
        50,
        0,
    )
    .await;
}

/// Every bid with its auction if the bid is above the reserve: bids of auctions not yet (or
/// never) seen stay padded.
#[tokio::test]
async fn left_join_with_a_residual_equals_batch() {
    assert_final_state_equals_batch(
        "SELECT B.auction, B.bidder, B.price, A.seller, A.reserve FROM bids B LEFT JOIN auctions A \
         ON B.auction = A.id AND B.price > A.reserve",
        true,
        10_000,
        100,
    )
    .await;
}

#[tokio::test]
async fn full_join_equals_batch() {
    assert_final_state_equals_batch(
        "SELECT A.id, A.category, P.id, P.state FROM auctions A FULL JOIN persons P \
         ON A.seller = P.id AND A.category < 12",
        true,
        1_000,
        100,
    )
    .await;
}

/// A join that consumes a changelog: each auction's bid count and top price (an updating
/// aggregate, retracting its last values with each bid), right-joined with the auctions.
#[tokio::test]
async fn join_of_an_updating_aggregate_equals_batch() {
    assert_final_state_equals_batch(
        "SELECT A.id, A.seller, C.n, C.top FROM \
           (SELECT auction, count(*) AS n, max(price) AS top FROM bids GROUP BY auction) C \
         RIGHT JOIN auctions A ON C.auction = A.id",
        true,
        1_000,
        4,
    )
    .await;
}

/// Nexmark q4: the average winning price per category. The inner aggregate's maxima over an
/// (append-only) regular join are a changelog, which the outer average consumes, retracting
/// each auction's old maximum as it rises.
#[tokio::test]
async fn nexmark_q4_aggregates_a_changelog_as_batch_does() {
    assert_final_state_equals_batch(
        "SELECT Q.category, AVG(Q.final) AS avg_final, count(*) AS auctions FROM ( \
           SELECT MAX(B.price) AS final, A.category FROM auctions A, bids B \
           WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires \
           GROUP BY A.id, A.category) Q \
         GROUP BY Q.category",
        true,
        5,
        0,
    )
    .await;
}

/// Semi and anti joins: the auctions whose seller is (or is not) among the persons in Oregon.
#[tokio::test]
async fn semi_and_anti_joins_equal_batch() {
    assert_final_state_equals_batch(
        "SELECT A.id, A.seller FROM auctions A \
         WHERE A.seller IN (SELECT P.id FROM persons P WHERE P.state = 'OR')",
        false,
        10,
        0,
    )
    .await;
    assert_final_state_equals_batch(
        "SELECT A.id, A.seller FROM auctions A \
         WHERE NOT EXISTS (SELECT 1 FROM persons P WHERE P.id = A.seller AND P.state = 'OR')",
        true,
        100,
        0,
    )
    .await;
}
