//! Parallel execution gives the results of one instance: every kind of keyed operator, run
//! with 1, 2 and 3 instances behind the hash exchange, returns the same rows (as a sorted
//! multiset) and drops the same late rows.
//!
//! The nexmark sources are read by one reader per instance when the connector splits them;
//! the file source, with rows out of order and some late, by one reader whose rows the
//! exchange spreads.

#[path = "common/oracle.rs"]
#[allow(dead_code)]
mod oracle;

use std::fmt::Write;

use oracle::{assert_same_rows, render, run_parallel};

/// 6 seconds of nexmark event time.
const EVENTS: &str = "60000";

fn nexmark_ddl() -> String {
    ["bid", "auction", "person"]
        .iter()
        .map(|table| {
            format!(
                "CREATE SOURCE {table}s (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND) \
                 WITH (connector = 'nexmark', nexmark.table = '{table}', events.max = '{EVENTS}');"
            )
        })
        .collect()
}

/// Runs `query` with 1, 2 and 3 instances; returns the rows of one instance after checking
/// that the others match them.
async fn same_at_every_parallelism(ddl: &str, query: &str) -> Vec<String> {
    let single = run_parallel(ddl, query, 700, 1).await;
    let expected = render(&single.batches);
    assert!(!expected.is_empty(), "the query returns rows: {query}");
    for parallelism in [2, 3] {
        let parallel = run_parallel(ddl, query, 700, parallelism).await;
        let widest = parallel.instances.iter().map(|(_, n)| *n).max();
        assert!(
            widest >= Some(parallelism),
            "some node runs {parallelism} instances: {:?}\n{query}",
            parallel.instances
        );
        assert_same_rows(
            &render(&parallel.batches),
            &expected,
            &format!("parallelism {parallelism} against 1: {query}"),
        );
        assert_eq!(
            parallel.late, single.late,
            "late rows at parallelism {parallelism}: {query}"
        );
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_queries_are_the_same_at_every_parallelism() {
    let ddl = nexmark_ddl();
    let queries = [
        // Stateless: one pipeline per reader.
        "SELECT auction, bidder, price FROM bids WHERE auction % 7 = 0",
        // Window aggregates keyed by auction: TUMBLE, HOP (slices), CUMULATE.
        "SELECT auction, window_start, count(*), sum(price), max(price) \
         FROM TUMBLE(bids, date_time, INTERVAL '1' SECOND) GROUP BY auction, window_start, window_end",
        "SELECT auction, window_start, count(*), min(price) \
         FROM HOP(bids, date_time, INTERVAL '250' MILLISECOND, INTERVAL '1' SECOND) \
         GROUP BY auction, window_start, window_end",
        "SELECT bidder, window_start, window_end, count(*) \
         FROM CUMULATE(bids, date_time, INTERVAL '500' MILLISECOND, INTERVAL '2' SECOND) \
         GROUP BY bidder, window_start, window_end",
        // No key: one instance.
        "SELECT window_start, count(*), max(price) FROM TUMBLE(bids, date_time, INTERVAL '1' SECOND) \
         GROUP BY window_start, window_end",
        // A rolled-up key is not a partitioning key.
        "SELECT window_start, auction, bidder, count(*) \
         FROM TUMBLE(bids, date_time, INTERVAL '1' SECOND) \
         GROUP BY window_start, window_end, auction, ROLLUP (bidder)",
        // Session windows keyed by bidder.
        "SELECT window_start, window_end, bidder, count(*) \
         FROM SESSION(bids, date_time, INTERVAL '100' MILLISECOND, bidder) \
         GROUP BY window_start, window_end, bidder",
        // Window Top-N per window (partitioned by the window columns).
        "SELECT * FROM (SELECT window_start, auction, price, bidder, ROW_NUMBER() OVER \
         (PARTITION BY window_start, window_end ORDER BY price DESC, bidder, auction) AS rn \
         FROM TUMBLE(bids, date_time, INTERVAL '1' SECOND)) WHERE rn <= 3",
        // Interval join keyed by auction id on both sides.
        "SELECT B.auction, B.price, A.seller FROM bids B JOIN auctions A ON B.auction = A.id \
         AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '1' SECOND",
        // Window join (Nexmark q8): persons and sellers of one window.
        "SELECT P.id, P.name, P.window_start FROM \
         (SELECT id, name, window_start, window_end FROM TUMBLE(persons, date_time, INTERVAL '1' SECOND) \
          GROUP BY id, name, window_start, window_end) P \
         JOIN (SELECT seller, window_start, window_end FROM TUMBLE(auctions, date_time, INTERVAL '1' SECOND) \
          GROUP BY seller, window_start, window_end) A \
         ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end",
        // MATCH_RECOGNIZE per auction; ties in time keep their order within a reader.
        "SELECT * FROM bids MATCH_RECOGNIZE (PARTITION BY auction ORDER BY date_time \
         MEASURES A.price AS start_price, LAST(B.price) AS bottom, C.price AS end_price, \
         MATCH_NUMBER() AS n ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
         PATTERN (A B+ C) DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
        // A union of two streams, then a keyed aggregate over it.
        "SELECT k, window_start, count(*) FROM TUMBLE((SELECT auction AS k, date_time FROM bids \
         UNION ALL SELECT id AS k, date_time FROM auctions), date_time, INTERVAL '1' SECOND) \
         GROUP BY k, window_start, window_end",
    ];
    for query in queries {
        same_at_every_parallelism(&ddl, query).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_are_the_same_at_every_parallelism() {
    // Times wander backwards now and then, so some rows arrive after their window fired.
    let dir = std::env::temp_dir().join(format!("eddy-parallel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ticks.csv");
    let mut csv = String::from("k,v,ts\n");
    let mut state: u64 = 7;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    for i in 0..4000u64 {
        let jitter = next() % 3000;
        let ms = (i * 50).saturating_sub(jitter);
        let k = next() % 40;
        writeln!(
            csv,
            "k{k},{},2024-01-01T00:{:02}:{:02}.{:03}",
            next() % 100,
            ms / 60_000,
            ms / 1000 % 60,
            ms % 1000
        )
        .unwrap();
    }
    std::fs::write(&path, csv).unwrap();
    let ddl = format!(
        "CREATE SOURCE ticks (k VARCHAR, v BIGINT, ts TIMESTAMP(3), \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'file', path = '{}', format = 'csv', header = 'true')",
        path.display()
    );
    for query in [
        "SELECT k, window_start, count(*), sum(v) FROM TUMBLE(ticks, ts, INTERVAL '1' SECOND) \
         GROUP BY k, window_start, window_end",
        "SELECT window_start, window_end, k, count(*) \
         FROM SESSION(ticks, ts, INTERVAL '400' MILLISECOND, k) GROUP BY window_start, window_end, k",
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY k ORDER BY ts \
         MEASURES FIRST(A.v) AS first_v, LAST(A.v) AS last_v, COUNT(A.*) AS n \
         ONE ROW PER MATCH PATTERN (A{2,}) DEFINE A AS A.v >= PREV(A.v))",
    ] {
        let single = run_parallel(&ddl, query, 100, 1).await;
        assert!(single.late > 0, "the input has late rows: {query}");
        same_at_every_parallelism(&ddl, query).await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_over_parallel_readers_stops_the_query() {
    let ddl = nexmark_ddl();
    let out = run_parallel(&ddl, "SELECT auction FROM bids LIMIT 5", 700, 2).await;
    assert_eq!(render(&out.batches).len(), 5);
}
