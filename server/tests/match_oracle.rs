//! Streaming equals batch for MATCH_RECOGNIZE (DESIGN.md 1.6, 1.7 rules 2 and 5): a bounded
//! source fed in many batch sizes and arrival orders gives the same matches as one pass over
//! the sorted whole input.
//!
//! The input is seeded, generated price ticks `(symbol, ts, price, seq)` for a few symbols:
//! a random walk of prices, timestamps that sometimes repeat within a symbol (ties are broken by
//! the second ORDER BY key `seq`, a unique number unrelated to arrival), symbols interleaved.
//! The reference is the query over the rows sorted by `(ts, seq)`, read as one source batch.
//! Each query is compared with it, as a sorted multiset of rows, when the same rows come
//! - sorted, in source batches of 1, 2, 3, 7 and 64 rows (the watermark advances after every
//!   batch, so the operator releases and matches rows in many small steps), and
//! - out of order, but never by 10 s or more behind the newest row so far, while the
//!   watermark is 10 s behind it: no row may be late, and none may be reported as such. One
//!   order sorts by time plus a random delay of up to 9.999 s; another reverses blocks of
//!   9.5 s of rows (the newest row of a block comes first).
//!
//! A push-table variant inserts the rows in random chunks (some in `BEGIN ... COMMIT` blocks
//! of several INSERTs) while the query runs. A push table never ends, so it is fed rows that
//! finish every pattern: each symbol ends with three rows without a price (every DEFINE compares
//! the current row's price, so none can be part of a match, and three rows outlast the longest
//! NEXT offset), then a row of another symbol far ahead moves the watermark past them all. Its
//! reference is the same rows as a bounded file read in one batch.

#[path = "common/oracle.rs"]
#[allow(dead_code)]
mod oracle;

use std::path::{Path, PathBuf};
use std::time::Duration;

use eddy_engine::session::{Engine, EngineConfig, Session, StatementResult};
use eddy_engine::sql::parser::parse_sql;
use oracle::{assert_same_rows, connectors, render, run_streaming};

const SYMBOLS: [&str; 4] = ["AAA", "BBB", "CCC", "DDD"];
const ROWS_PER_SYMBOL: usize = 300;
/// 2024-01-01 00:00:00 UTC.
const T0_MS: i64 = 1_704_067_200_000;
/// The source's watermark delay; rows are never this far behind the newest row.
const DELAY_MS: i64 = 10_000;
/// A source batch larger than the input: the reference reads it at once.
const ONE_BATCH: usize = 1 << 20;
/// The partition of the push table's last row, which only moves the watermark.
const FLUSH_SYMBOL: &str = "ZZZ";

/// SplitMix64: a small seeded generator (no new crates).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as i64) as usize;
            items.swap(i, j);
        }
    }
}

#[derive(Clone, Debug)]
struct Tick {
    symbol: &'static str,
    ts: i64,
    price: Option<i64>,
    seq: i64,
}

impl Tick {
    fn ts_text(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.ts)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string()
    }
}

/// The ticks, sorted by `(ts, seq)`. With `terminated`, each symbol ends with three rows
/// without a price and a [`FLUSH_SYMBOL`] row follows far ahead.
fn ticks(terminated: bool) -> Vec<Tick> {
    let mut rng = Rng(0x5EED_0001);
    let n = SYMBOLS.len() * (ROWS_PER_SYMBOL + 3) + 1;
    let mut seqs: Vec<i64> = (0..n as i64).collect();
    rng.shuffle(&mut seqs);
    let mut seqs = seqs.into_iter();
    let mut out = Vec::new();
    for symbol in SYMBOLS {
        let mut ts = T0_MS + rng.range(0, 3_000);
        let mut price = rng.range(80, 120);
        for _ in 0..ROWS_PER_SYMBOL {
            out.push(Tick {
                symbol,
                ts,
                price: Some(price),
                seq: seqs.next().unwrap(),
            });
            // Some timestamps repeat: `seq` orders them.
            ts += if rng.range(0, 99) < 15 {
                0
            } else {
                rng.range(200, 3_000)
            };
            price = (price + rng.range(-4, 4)).clamp(50, 150);
        }
        if terminated {
            for _ in 0..3 {
                ts += 1_000;
                out.push(Tick {
                    symbol,
                    ts,
                    price: None,
                    seq: seqs.next().unwrap(),
                });
            }
        }
    }
    if terminated {
        let last = out.iter().map(|t| t.ts).max().unwrap();
        out.push(Tick {
            symbol: FLUSH_SYMBOL,
            ts: last + 3_600_000,
            price: Some(100),
            seq: seqs.next().unwrap(),
        });
    }
    out.sort_by_key(|t| (t.ts, t.seq));
    out
}

/// Sorted by time plus a random delay below [`DELAY_MS`]: a row comes after rows up to
/// 9.999 s newer than it, so the watermark (10 s behind the newest row) never reaches it.
fn jittered(sorted: &[Tick], seed: u64) -> Vec<Tick> {
    let mut rng = Rng(seed);
    let mut keyed: Vec<(i64, Tick)> = sorted
        .iter()
        .map(|t| (t.ts + rng.range(0, DELAY_MS - 1), t.clone()))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, t)| t).collect()
}

/// Blocks of 9.5 s of rows (at a random alignment), each in reverse order: the newest row of a
/// block comes first, the oldest at most 9.5 s behind it.
fn reversed_blocks(sorted: &[Tick], seed: u64) -> Vec<Tick> {
    let block = 9_500;
    let offset = Rng(seed).range(0, block - 1);
    let mut out = sorted.to_vec();
    out.sort_by_key(|t| {
        (
            (t.ts - T0_MS + offset).div_euclid(block),
            std::cmp::Reverse((t.ts, t.seq)),
        )
    });
    out
}

/// Checks that no row of `order` is at or behind the watermark of the rows before it.
fn assert_never_late(order: &[Tick]) {
    let mut newest = i64::MIN;
    for t in order {
        assert!(
            newest == i64::MIN || t.ts > newest - DELAY_MS,
            "the generated order makes {t:?} late"
        );
        newest = newest.max(t.ts);
    }
}

fn write_csv(path: &Path, rows: &[Tick]) {
    let mut text = String::from("symbol,ts,price,seq\n");
    for t in rows {
        let price = t.price.map(|p| p.to_string()).unwrap_or_default();
        text.push_str(&format!("{},{},{price},{}\n", t.symbol, t.ts_text(), t.seq));
    }
    std::fs::write(path, text).unwrap();
}

const COLUMNS: &str = "symbol VARCHAR, ts TIMESTAMP(3), price BIGINT, seq BIGINT, \
                       WATERMARK FOR ts AS ts - INTERVAL '10' SECOND";

fn file_source(path: &Path) -> String {
    format!(
        "CREATE SOURCE ticks ({COLUMNS}) \
         WITH (connector = 'file', path = '{}', format = 'csv', header = 'true')",
        path.display()
    )
}

/// The rows of a run, sorted, without the flush partition's.
fn rows_of(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<String> {
    render(batches)
        .into_iter()
        .filter(|r| !r.starts_with(&format!("{FLUSH_SYMBOL}|")))
        .collect()
}

/// A directory of its own for each test.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eddy-match-oracle-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `query` over the file and checks that no row was late.
async fn run_file(path: &Path, query: &str, batch_size: usize, what: &str) -> Vec<String> {
    let run = run_streaming(&file_source(path), query, batch_size).await;
    assert_eq!(run.late, 0, "{what}: no row may be late\n{query}");
    assert!(
        run.warnings.is_empty(),
        "{what}: unexpected warnings {:?}\n{query}",
        run.warnings
    );
    rows_of(&run.batches)
}

/// Executes the statements of `sql`, panicking on an error.
async fn execute(session: &mut Session, sql: &str) {
    for statement in parse_sql(sql).unwrap() {
        if let Err(e) = session.execute(&statement, &[]).await {
            panic!("{e}\n{sql}");
        }
    }
}

/// The query over a push table fed `rows` in random chunks while it runs; waits for
/// `expected` rows (then briefly for any extra one).
async fn run_push(rows: &[Tick], query: &str, expected: usize, seed: u64) -> Vec<String> {
    let engine = Engine::new(
        EngineConfig {
            parallelism: 1,
            data_dir: None,
            batch_size: 8192,
            ..EngineConfig::default()
        },
        connectors(),
        None,
    );
    let mut writer = engine.new_session();
    let mut reader = engine.new_session();
    execute(&mut writer, &format!("CREATE TABLE ticks ({COLUMNS})")).await;
    let statements = parse_sql(query).unwrap();
    let mut output = match reader.execute(&statements[0], &[]).await {
        Ok(StatementResult::Rows(output)) => output,
        Ok(_) => panic!("not a query: {query}"),
        Err(e) => panic!("streaming query failed: {e}\n{query}"),
    };

    let values = |chunk: &[Tick]| {
        chunk
            .iter()
            .map(|t| {
                let price = t.price.map(|p| p.to_string()).unwrap_or("NULL".into());
                format!("('{}', '{}', {price}, {})", t.symbol, t.ts_text(), t.seq)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let insert = async {
        let mut rng = Rng(seed);
        let mut rest = rows;
        while !rest.is_empty() {
            let n = (rng.range(1, 40) as usize).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            if rng.range(0, 2) == 0 {
                execute(
                    &mut writer,
                    &format!("INSERT INTO ticks VALUES {}", values(chunk)),
                )
                .await;
            } else {
                // Several INSERTs appended together at COMMIT.
                let cut = rng.range(0, n as i64) as usize;
                let mut sql = String::from("BEGIN; ");
                for part in [&chunk[..cut], &chunk[cut..]] {
                    if !part.is_empty() {
                        sql.push_str(&format!("INSERT INTO ticks VALUES {}; ", values(part)));
                    }
                }
                sql.push_str("COMMIT");
                execute(&mut writer, &sql).await;
            }
            tokio::task::yield_now().await;
        }
    };
    let read = async {
        let mut batches = Vec::new();
        let mut count = 0;
        loop {
            let wait = if count < expected {
                Duration::from_secs(20)
            } else {
                Duration::from_millis(300)
            };
            match tokio::time::timeout(wait, output.next_batch()).await {
                Ok(batch) => {
                    let batch = batch.unwrap().expect("a push table never ends");
                    count += rows_of(std::slice::from_ref(&batch)).len();
                    batches.push(batch);
                }
                Err(_) if count >= expected => break,
                Err(_) => panic!("push table: only {count} of {expected} rows came\n{query}"),
            }
        }
        batches
    };
    let ((), batches) = tokio::join!(insert, read);
    let late = output.metrics().unwrap().late_rows();
    assert_eq!(late, 0, "push table: no row may be late\n{query}");
    rows_of(&batches)
}

/// Compares `query` over every arrival order and batch size with the reference; `min_rows`
/// keeps the comparison from passing vacuously.
async fn assert_streaming_equals_batch(name: &str, query: &str, min_rows: usize) {
    let dir = test_dir(name);
    let sorted = ticks(false);
    let sorted_path = dir.join("sorted.csv");
    write_csv(&sorted_path, &sorted);

    let expected = run_file(&sorted_path, query, ONE_BATCH, "reference").await;
    assert!(
        expected.len() >= min_rows,
        "the reference has only {} rows; the comparison would prove little\n{query}",
        expected.len()
    );
    let context = |what: &str| format!("{what}\nquery:\n{query}");

    for batch_size in [1, 2, 3, 7, 64] {
        let what = format!("sorted input, source batches of {batch_size} rows");
        let got = run_file(&sorted_path, query, batch_size, &what).await;
        assert_same_rows(&got, &expected, &context(&what));
    }

    let orders = [
        ("jittered-1", jittered(&sorted, 11), [1, 9]),
        ("jittered-2", jittered(&sorted, 12), [4, 64]),
        ("reversed-blocks", reversed_blocks(&sorted, 13), [2, 32]),
    ];
    for (order_name, order, batch_sizes) in orders {
        assert_never_late(&order);
        assert_ne!(
            order.iter().map(|t| t.seq).collect::<Vec<_>>(),
            sorted.iter().map(|t| t.seq).collect::<Vec<_>>(),
            "{order_name} is out of order"
        );
        let path = dir.join(format!("{order_name}.csv"));
        write_csv(&path, &order);
        for batch_size in batch_sizes {
            let what = format!("{order_name} input, source batches of {batch_size} rows");
            let got = run_file(&path, query, batch_size, &what).await;
            assert_same_rows(&got, &expected, &context(&what));
        }
    }

    // The push table, with rows that finish every pattern; its reference is those rows read
    // as one batch.
    let terminated = ticks(true);
    let terminated_path = dir.join("terminated.csv");
    write_csv(&terminated_path, &terminated);
    let push_expected = run_file(&terminated_path, query, ONE_BATCH, "push reference").await;
    assert!(push_expected.len() >= min_rows);
    let order = jittered(&terminated, 21);
    assert_never_late(&order);
    let got = run_push(&order, query, push_expected.len(), 22).await;
    assert_same_rows(
        &got,
        &push_expected,
        &context("push table, jittered input in random INSERT chunks"),
    );

    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn v_shape_one_row_per_match() {
    assert_streaming_equals_batch(
        "v-shape",
        "SELECT * FROM ticks MATCH_RECOGNIZE ( \
           PARTITION BY symbol ORDER BY ts, seq \
           MEASURES FIRST(A.seq) AS start_seq, FIRST(A.ts) AS start_ts, LAST(B.seq) AS bottom_seq, \
                    MIN(B.price) AS bottom, LAST(C.seq) AS end_seq, LAST(C.ts) AS end_ts, \
                    COUNT(B.price) AS drops, COUNT(*) AS len, MATCH_NUMBER() AS n \
           ONE ROW PER MATCH \
           AFTER MATCH SKIP PAST LAST ROW \
           PATTERN (A B+ C) \
           DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
        100,
    )
    .await;
}

/// The V-shape with its DEFINE written in logical navigation, as Flink's documentation writes
/// it, finds the matches the physical one (`PREV`) finds: in `A B+ C`, B's previous B row
/// (`LAST(B.price, 1)`, NULL at the first B, whose previous row is A) and C's last B are the
/// previous row. The logical conditions depend on the match, so they go through the scalar
/// evaluator (and DataFusion where it does not apply); the physical ones are evaluated per
/// batch by DataFusion.
#[tokio::test]
async fn logical_navigation_finds_the_matches_of_physical_navigation() {
    let measures = "MEASURES FIRST(A.seq) AS start_seq, LAST(B.seq) AS bottom_seq, \
        MIN(B.price) AS bottom, LAST(C.seq) AS end_seq, COUNT(*) AS len, MATCH_NUMBER() AS n \
        ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW PATTERN (A B+ C)";
    let logical = format!(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY symbol ORDER BY ts, seq {measures} \
         DEFINE B AS (LAST(B.price, 1) IS NULL AND B.price < A.price) \
                  OR B.price < LAST(B.price, 1), \
                C AS C.price > LAST(B.price))"
    );
    let physical = format!(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY symbol ORDER BY ts, seq {measures} \
         DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))"
    );
    let dir = test_dir("logical-navigation");
    let path = dir.join("sorted.csv");
    write_csv(&path, &ticks(false));
    let expected = run_file(&path, &physical, ONE_BATCH, "physical navigation").await;
    assert!(expected.len() >= 100, "only {} matches", expected.len());
    for batch_size in [ONE_BATCH, 7] {
        let what = format!("logical navigation, source batches of {batch_size} rows");
        let got = run_file(&path, &logical, batch_size, &what).await;
        assert_same_rows(&got, &expected, &what);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn history_dependent_defines_with_backtracking() {
    // A+ is greedy while the running sum stays below 400; B must beat the average of the A
    // rows, so a failed B makes A+ give rows back. C must stay below the first A.
    assert_streaming_equals_batch(
        "history",
        "SELECT * FROM ticks MATCH_RECOGNIZE ( \
           PARTITION BY symbol ORDER BY ts, seq \
           MEASURES FIRST(A.seq) AS start_seq, COUNT(A.price) AS a_rows, SUM(A.price) AS a_sum, \
                    B.seq AS b_seq, COUNT(C.price) AS c_rows, LAST(seq) AS end_seq, \
                    MATCH_NUMBER() AS n \
           ONE ROW PER MATCH \
           AFTER MATCH SKIP PAST LAST ROW \
           PATTERN (A+ B C*) \
           DEFINE A AS A.price > 0 AND SUM(A.price) < 400, \
                  B AS B.price > AVG(A.price) + 1, \
                  C AS C.price < FIRST(A.price) AND C.price <= PREV(C.price))",
        50,
    )
    .await;
}

#[tokio::test]
async fn all_rows_per_match_with_classifier_and_running_final() {
    assert_streaming_equals_batch(
        "all-rows",
        "SELECT symbol, ts, seq, price, cls, n, run_last, final_last, run_count, final_count, \
                run_min \
         FROM ticks MATCH_RECOGNIZE ( \
           PARTITION BY symbol ORDER BY ts, seq \
           MEASURES CLASSIFIER() AS cls, MATCH_NUMBER() AS n, \
                    RUNNING LAST(price) AS run_last, FINAL LAST(price) AS final_last, \
                    RUNNING COUNT(*) AS run_count, FINAL COUNT(*) AS final_count, \
                    RUNNING MIN(B.price) AS run_min \
           ALL ROWS PER MATCH \
           AFTER MATCH SKIP PAST LAST ROW \
           PATTERN (A B+ C+) \
           DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
        300,
    )
    .await;
}

#[tokio::test]
async fn skip_to_next_row_overlapping_matches() {
    // Rises then falls, reluctant flat rows in between; every row starts an attempt.
    assert_streaming_equals_batch(
        "skip-next",
        "SELECT * FROM ticks MATCH_RECOGNIZE ( \
           PARTITION BY symbol ORDER BY ts, seq \
           MEASURES FIRST(U.seq) AS start_seq, LAST(U.price) AS top, COUNT(U.price) AS ups, \
                    COUNT(F.price) AS flats, LAST(D.seq) AS end_seq, MATCH_NUMBER() AS n \
           ONE ROW PER MATCH \
           AFTER MATCH SKIP TO NEXT ROW \
           PATTERN (U+ F*? D{2,}) \
           DEFINE U AS U.price > PREV(U.price), F AS F.price = PREV(F.price), \
                  D AS D.price < PREV(D.price))",
        100,
    )
    .await;
}

#[tokio::test]
async fn within_bounds_the_match_duration() {
    // Flink's example shape: a drop of more than 5 within 15 s of the first row.
    assert_streaming_equals_batch(
        "within",
        "SELECT * FROM ticks MATCH_RECOGNIZE ( \
           PARTITION BY symbol ORDER BY ts, seq \
           MEASURES A.seq AS start_seq, C.seq AS drop_seq, C.ts AS drop_ts, \
                    A.price - C.price AS drop_diff, COUNT(B.price) AS between_rows, \
                    MATCH_NUMBER() AS n \
           ONE ROW PER MATCH \
           AFTER MATCH SKIP TO LAST C \
           PATTERN (A B* C) WITHIN INTERVAL '15' SECOND \
           DEFINE B AS B.price > A.price - 5, C AS C.price < A.price - 5)",
        50,
    )
    .await;
}

#[tokio::test]
async fn within_with_timeouts() {
    // The drop of more than 5 within 15 s, with the attempts that ran out of time (B* keeps
    // growing while prices stay near the first). The flush row (price 100) and the rows
    // without a price start no attempt, so a push table that never ends has no attempt left
    // open that the end of the bounded reference would time out.
    let query = "SELECT * FROM ticks MATCH_RECOGNIZE ( \
           PARTITION BY symbol ORDER BY ts, seq \
           MEASURES A.seq AS start_seq, C.seq AS drop_seq, COUNT(B.price) AS between_rows, \
                    LAST(seq) AS last_seq, MATCH_NUMBER() AS n, MATCH_STATUS() AS status, \
                    CLASSIFIER() AS cls \
           ONE ROW PER MATCH WITH TIMEOUTS \
           AFTER MATCH SKIP TO LAST C \
           PATTERN (A B* C) WITHIN INTERVAL '15' SECOND \
           DEFINE A AS A.price <> 100, B AS B.price > A.price - 5, \
                  C AS C.price < A.price - 5)";
    assert_streaming_equals_batch("timeouts", query, 50).await;
    // Both kinds of rows are there to compare.
    let dir = test_dir("timeouts-kinds");
    let path = dir.join("sorted.csv");
    write_csv(&path, &ticks(false));
    let rows = run_file(&path, query, ONE_BATCH, "reference").await;
    for status in ["|MATCHED|", "|TIMED_OUT|"] {
        let n = rows.iter().filter(|r| r.contains(status)).count();
        assert!(n >= 10, "{n} rows with {status}: {rows:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn next_looks_ahead() {
    // Rises to a local top: a row above both the previous and the next two rows.
    assert_streaming_equals_batch(
        "next",
        "SELECT * FROM ticks MATCH_RECOGNIZE ( \
           PARTITION BY symbol ORDER BY ts, seq \
           MEASURES FIRST(U.seq) AS start_seq, T.seq AS top_seq, T.price AS top, \
                    NEXT(T.price, 2) AS after_top, COUNT(U.price) AS ups, MATCH_NUMBER() AS n \
           ONE ROW PER MATCH \
           AFTER MATCH SKIP PAST LAST ROW \
           PATTERN (U+ T) \
           DEFINE U AS U.price > PREV(U.price), \
                  T AS T.price > PREV(T.price) AND T.price > NEXT(T.price) \
                       AND T.price >= NEXT(T.price, 2))",
        50,
    )
    .await;
}
