//! MATCH_RECOGNIZE through a checkpoint: for every cut of an input (batches, watermarks, the
//! end), running the prefix, taking a snapshot, sending it through the checkpoint bytes,
//! restoring a new operator from it and running the rest must give exactly the messages
//! (rows, in order, and watermarks) of the uninterrupted run. The original operator, going on
//! after its snapshot, must not change either.
//!
//! The queries cover ONE ROW and ALL ROWS PER MATCH (WITH UNMATCHED ROWS too), every AFTER
//! MATCH SKIP, MATCH_NUMBER(), greedy and reluctant quantifiers that backtrack, conditions
//! that depend on the labelling (threads kept apart) and ones that read ahead (NEXT), WITHIN
//! (attempts given up by the watermark, one waiting only at `$`), several partitions or none,
//! and a time column without watermark (matching only at the end). The inputs hold rows out of
//! order (waiting for the watermark), late rows, and attempts open at the cut; random inputs
//! (a tiny LCG) are cut everywhere (a long one, past segment compaction, at random cuts), and
//! restored at every step in a chain.
//!
//! With `WITH TIMEOUTS`, the same inputs without late rows, cut into random batches with
//! watermarks (some one millisecond short of a second) in between, must also give the rows of
//! one batch of the whole input followed by its end (DESIGN.md 1.7 rule 5): an attempt timed
//! out by the watermark before its window closed, or a timeout missed, would differ.
//!
//! Operators are built as in `match_recognize_state.rs`: the query is planned with a session
//! and the `MatchRecognizeOperator` driven directly.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::SessionState;
use eddy_engine::connector::ConnectorRegistry;
use eddy_engine::operators::match_recognize::{MatchRecognizeOperator, MatchRecognizeSpec};
use eddy_engine::operators::{Operator, OperatorContext, OperatorInfo};
use eddy_engine::plan::{MatchRecognizeStreamNode, StreamPlan};
use eddy_engine::runtime::message::{Message, WATERMARK_END};
use eddy_engine::session::{Engine, EngineConfig};
use eddy_engine::sql::parser::parse_sql;
use eddy_engine::state::StateSnapshot;
use eddy_engine::state::checkpoint::round_trip;

const MS: i64 = 1_000_000;

fn find_match_recognize(plan: &StreamPlan) -> Option<MatchRecognizeStreamNode> {
    match plan {
        StreamPlan::MatchRecognize(m) => Some(m.as_ref().clone()),
        StreamPlan::Project { input, .. }
        | StreamPlan::Filter { input, .. }
        | StreamPlan::Alias { input, .. }
        | StreamPlan::Limit { input, .. } => find_match_recognize(input),
        _ => None,
    }
}

/// Builds fresh operators of one query, as the runtime does for each instance.
struct Factory {
    node: MatchRecognizeStreamNode,
    state: SessionState,
    input: SchemaRef,
}

impl Factory {
    async fn new(query: &str) -> Self {
        let engine = Engine::new(EngineConfig::default(), ConnectorRegistry::default(), None);
        let mut session = engine.new_session();
        for ddl in [
            "CREATE TABLE ticks (sym BIGINT, ts TIMESTAMP(3), price BIGINT, seq BIGINT, \
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
            "CREATE TABLE plain (sym BIGINT, ts TIMESTAMP(3), price BIGINT, seq BIGINT)",
        ] {
            for s in parse_sql(ddl).unwrap() {
                session.execute(&s, &[]).await.unwrap();
            }
        }
        let (plan, state) = session.stream_plan(query).await.unwrap();
        let node = find_match_recognize(&plan).expect("a MATCH_RECOGNIZE node");
        let input = Arc::new(node.input.schema().as_arrow().clone());
        Factory { node, state, input }
    }

    fn make(&self) -> MatchRecognizeOperator {
        let info = OperatorInfo {
            name: "MatchRecognize".to_string(),
            schema: Arc::new(self.node.schema.as_arrow().clone()),
        };
        let spec = MatchRecognizeSpec::try_new(&self.node, &self.state).unwrap();
        MatchRecognizeOperator::try_new(info, spec).unwrap()
    }

    /// Input rows `(sym, ts in seconds, price)`; `seq` numbers them in the step.
    fn batch(&self, rows: &[(i64, i64, i64)]) -> RecordBatch {
        self.batch_in(rows, 1000)
    }

    /// Input rows `(sym, ts in units of `ms` milliseconds, price)`.
    fn batch_in(&self, rows: &[(i64, i64, i64)], ms: i64) -> RecordBatch {
        let columns: Vec<Arc<dyn Array>> = self
            .input
            .fields()
            .iter()
            .map(|f| -> Arc<dyn Array> {
                match f.name().as_str() {
                    "sym" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                    "ts" => Arc::new(TimestampMillisecondArray::from_iter_values(
                        rows.iter().map(|r| r.1 * ms),
                    )),
                    "price" => Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                    "seq" => Arc::new(Int64Array::from_iter_values(
                        (0..rows.len() as i64).map(|i| (i * 7) % 5),
                    )),
                    other => panic!("unexpected column {other}"),
                }
            })
            .collect();
        RecordBatch::try_new(Arc::clone(&self.input), columns).unwrap()
    }
}

#[derive(Debug, Clone)]
enum Step {
    Rows(Vec<(i64, i64, i64)>),
    /// Rows with their times in milliseconds.
    RowsMs(Vec<(i64, i64, i64)>),
    /// A watermark, in seconds.
    Watermark(i64),
    /// A watermark, in milliseconds.
    WatermarkMs(i64),
    /// The input ends: the end watermark, then `on_end`.
    End,
}

/// Runs `steps` on `op`; the messages it emits, printed.
fn run(f: &Factory, op: &mut MatchRecognizeOperator, steps: &[Step]) -> Vec<String> {
    let mut out = OperatorContext::default();
    let mut printed = Vec::new();
    for step in steps {
        match step {
            Step::Rows(rows) => op.on_batch(0, f.batch(rows), &mut out).unwrap(),
            Step::RowsMs(rows) => op.on_batch(0, f.batch_in(rows, 1), &mut out).unwrap(),
            Step::Watermark(s) => op.on_watermark(s * 1000 * MS, &mut out).unwrap(),
            Step::WatermarkMs(ms) => op.on_watermark(ms * MS, &mut out).unwrap(),
            Step::End => {
                op.on_watermark(WATERMARK_END, &mut out).unwrap();
                op.on_end(&mut out).unwrap();
            }
        }
        printed.extend(print(&mut out));
    }
    printed
}

fn print(out: &mut OperatorContext) -> Vec<String> {
    out.drain()
        .map(|m| match m {
            Message::Data(batch) => pretty_format_batches(&[batch]).unwrap().to_string(),
            Message::Watermark(w) => format!("watermark {w}"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn last_watermark(steps: &[Step]) -> Option<i64> {
    steps.iter().rev().find_map(|s| match s {
        Step::Watermark(w) => Some(w * 1000 * MS),
        Step::WatermarkMs(w) => Some(w * MS),
        Step::End => Some(WATERMARK_END),
        Step::Rows(_) | Step::RowsMs(_) => None,
    })
}

/// A new operator restored from `op`'s snapshot, through the checkpoint bytes.
fn restored(f: &Factory, op: &mut MatchRecognizeOperator) -> MatchRecognizeOperator {
    let snapshot = round_trip(&op.snapshot(1).unwrap()).unwrap();
    let mut fresh = f.make();
    fresh.restore(snapshot).unwrap();
    fresh
}

/// The property, for the cuts `cuts` of `steps`; returns how many data messages the
/// uninterrupted run emitted (so a caller can check the case matches something).
fn check_cuts(f: &Factory, steps: &[Step], cuts: impl Iterator<Item = usize>) -> usize {
    let whole = run(f, &mut f.make(), steps);
    for cut in cuts {
        let mut first = f.make();
        let prefix = run(f, &mut first, &steps[..cut]);
        let mut second = restored(f, &mut first);
        // The runtime may repeat the checkpoint's watermark after a restore: nothing happens.
        if let Some(w) = last_watermark(&steps[..cut]) {
            let mut out = OperatorContext::default();
            second.on_watermark(w, &mut out).unwrap();
            assert!(
                print(&mut out).is_empty(),
                "cut {cut}: a repeated watermark emitted"
            );
        }
        let mut got = prefix.clone();
        got.extend(run(f, &mut second, &steps[cut..]));
        assert_eq!(got, whole, "restored at cut {cut} of {steps:#?}");
        // Taking the snapshot changed nothing for the original.
        let mut original = prefix;
        original.extend(run(f, &mut first, &steps[cut..]));
        assert_eq!(
            original, whole,
            "the original after its snapshot at cut {cut}"
        );
    }
    // Restored at every step, in a chain.
    let mut op = f.make();
    let mut got = Vec::new();
    for step in steps {
        got.extend(run(f, &mut op, std::slice::from_ref(step)));
        op = restored(f, &mut op);
    }
    assert_eq!(got, whole, "restored after every step");
    whole.iter().filter(|m| !m.starts_with("watermark")).count()
}

/// Three symbols, rows out of order within and across batches, late rows, and the end with
/// attempts open.
fn small_input() -> Vec<Step> {
    use Step::*;
    vec![
        Rows(vec![(1, 1, 5), (2, 1, 9), (1, 3, 3), (1, 2, 4), (3, 2, 1)]),
        Rows(vec![(2, 2, 8), (2, 4, 7), (1, 4, 4)]),
        Watermark(2),
        // (1, 2, ...) and (3, 1, ...) are late.
        Rows(vec![(1, 2, 0), (3, 1, 7), (1, 5, 6), (2, 3, 6), (3, 3, 2)]),
        Watermark(3),
        Rows(vec![(1, 6, 2), (2, 5, 8), (3, 4, 3), (1, 7, 1), (3, 5, 0)]),
        Watermark(4),
        Rows(vec![(1, 8, 3), (2, 6, 9), (3, 6, 4), (2, 7, 3), (1, 9, 8)]),
        Watermark(6),
        Rows(vec![
            (3, 7, 6),
            (1, 10, 2),
            (2, 8, 2),
            (3, 8, 5),
            (1, 11, 1),
        ]),
        Watermark(9),
        Rows(vec![(1, 12, 4), (2, 9, 5), (3, 9, 9), (2, 10, 1)]),
        Watermark(10),
        Rows(vec![(1, 13, 2), (1, 14, 6), (3, 11, 8), (2, 12, 0)]),
        End,
    ]
}

/// A tiny deterministic LCG.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as i64
    }
}

/// `n` random steps over three symbols, then the end: batches of up to 5 rows a few seconds
/// around the watermark (some late), watermarks advancing by 0 to 3 seconds.
fn random_input(seed: u64, n: usize) -> Vec<Step> {
    let mut rng = Lcg(seed);
    let mut watermark = 0;
    let mut steps = Vec::new();
    for _ in 0..n {
        if rng.below(3) == 0 {
            watermark += 1 + rng.below(3);
            steps.push(Step::Watermark(watermark));
        } else {
            let rows = (0..rng.below(6))
                .map(|_| (rng.below(3), watermark + rng.below(5), rng.below(10)))
                .collect();
            steps.push(Step::Rows(rows));
        }
    }
    steps.push(Step::End);
    steps
}

/// Snapshots `op` after every step: a shared batch's table and id always name the same rows
/// (what `StateSnapshot::add_shared` promises, so that a checkpoint may write it once).
fn check_shared_ids(f: &Factory, steps: &[Step]) {
    let mut op = f.make();
    let mut seen: std::collections::HashMap<(&str, u64), RecordBatch> = Default::default();
    for (k, step) in steps.iter().enumerate() {
        run(f, &mut op, std::slice::from_ref(step));
        let snapshot = op.snapshot(1).unwrap();
        for table in ["partitions", "partition_runs", "partition_rows"] {
            for (id, batch) in snapshot.shared(table).unwrap() {
                if let Some(before) = seen.insert((table, id), batch.clone()) {
                    assert_eq!(
                        before.columns(),
                        batch.columns(),
                        "{table} {id} at step {k}"
                    );
                }
            }
        }
    }
}

/// Every cut of the small input and of a random one, and every step of the random one.
async fn check(query: &str) {
    let f = Factory::new(query).await;
    let small = small_input();
    let emitted = check_cuts(&f, &small, 0..=small.len());
    assert!(emitted > 0, "the small input matches nothing for {query}");
    check_shared_ids(&f, &small);
    for seed in [7, 2024] {
        let steps = random_input(seed, 40);
        check_cuts(&f, &steps, 0..=steps.len());
        check_shared_ids(&f, &steps);
    }
    // Long enough for the operator to compact its segments (every 64 releases), at random
    // cuts.
    let steps = random_input(99, 300);
    let mut rng = Lcg(5);
    let cuts: Vec<usize> = (0..8)
        .map(|_| rng.below(steps.len() as i64 + 1) as usize)
        .collect();
    check_cuts(&f, &steps, cuts.into_iter());
    check_shared_ids(&f, &steps);
}

#[tokio::test]
async fn one_row_per_match_greedy_skip_past_last_row() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, A.price AS p0, LAST(B.price) AS bottom, \
         C.price AS up, COUNT(*) AS n, FIRST(A.ts) AS t0 \
         ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
         PATTERN (A B+ C) DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
    )
    .await;
}

#[tokio::test]
async fn all_rows_per_match_reluctant_skip_to_next_row() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, CLASSIFIER() AS cls, SUM(B.price) AS sb, \
         RUNNING COUNT(*) AS n \
         ALL ROWS PER MATCH AFTER MATCH SKIP TO NEXT ROW \
         PATTERN (A B*? C) DEFINE A AS A.price > 2, B AS B.price <= PREV(B.price), \
         C AS C.price > A.price)",
    )
    .await;
}

/// A+ always holds and is greedy: the attempt stays open, and the match comes from
/// backtracking; B and C depend on the labelling (threads are kept apart).
#[tokio::test]
async fn history_conditions_backtrack_skip_to_last() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, COUNT(A.price) AS na, LAST(B.price) AS b, \
         C.price AS c \
         ONE ROW PER MATCH AFTER MATCH SKIP TO LAST B \
         PATTERN (A+ B{1,2} C) WITHIN INTERVAL '6' SECOND \
         DEFINE B AS B.price < AVG(A.price), C AS C.price > SUM(B.price))",
    )
    .await;
}

#[tokio::test]
async fn within_gives_up_attempts_and_skip_to_first() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, FIRST(A.ts) AS t0, LAST(ts) AS t1, COUNT(*) AS n \
         ALL ROWS PER MATCH AFTER MATCH SKIP TO FIRST C \
         PATTERN (A B* C+) WITHIN INTERVAL '3' SECOND \
         DEFINE A AS A.price > 5, B AS B.price < 5, C AS C.price >= 5)",
    )
    .await;
}

/// `A+ $` WITHIN: the watermark gives up A+ and leaves the attempt waiting only at `$`.
#[tokio::test]
async fn within_leaves_an_attempt_waiting_at_the_end() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, COUNT(*) AS n \
         ONE ROW PER MATCH PATTERN (A+ $) WITHIN INTERVAL '2' SECOND \
         DEFINE A AS A.price >= 0)",
    )
    .await;
}

#[tokio::test]
async fn unmatched_rows_and_look_ahead() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, CLASSIFIER() AS cls, NEXT(P.price) AS after \
         ALL ROWS PER MATCH WITH UNMATCHED ROWS AFTER MATCH SKIP TO NEXT ROW \
         PATTERN (P Q?) DEFINE P AS P.price > PREV(P.price) AND P.price > NEXT(P.price), \
         Q AS Q.price < 3)",
    )
    .await;
}

/// SKIP TO NEXT ROW starts attempts inside the last match: those that fail are no
/// unmatched rows, also when the match was before the cut and the failure after it.
#[tokio::test]
async fn unmatched_rows_inside_matches() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, CLASSIFIER() AS cls \
         ALL ROWS PER MATCH WITH UNMATCHED ROWS AFTER MATCH SKIP TO NEXT ROW \
         PATTERN (A B+ C) DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
    )
    .await;
}

/// One partition, ordered by time and then another key.
#[tokio::test]
async fn no_partition_two_order_keys() {
    check(
        "SELECT * FROM ticks MATCH_RECOGNIZE (ORDER BY ts, seq \
         MEASURES MATCH_NUMBER() AS mn, FIRST(A.sym) AS s, LAST(C.price) AS c \
         ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
         PATTERN (A (B | C){2,}? C) DEFINE A AS A.price > 6, B AS B.price < PREV(B.price), \
         C AS C.price >= PREV(C.price))",
    )
    .await;
}

/// A time column without watermark: everything waits for the end.
#[tokio::test]
async fn without_watermark_everything_waits() {
    check(
        "SELECT * FROM plain MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, A.price AS p0, C.price AS up \
         ONE ROW PER MATCH PATTERN (A B+ C) \
         DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
    )
    .await;
}

/// An empty snapshot restores a fresh operator; anything of another shape is refused.
#[tokio::test]
async fn snapshots_of_another_shape_are_refused() {
    let f = Factory::new(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, COUNT(*) AS n PATTERN (A B+ C) \
         DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
    )
    .await;
    let steps = small_input();
    assert!(f.make().restore(StateSnapshot::new()).is_ok());

    let mut op = f.make();
    run(&f, &mut op, &steps[..8]);
    let good = round_trip(&op.snapshot(1).unwrap()).unwrap();
    assert!(f.make().restore(good.clone()).is_ok());
    assert!(good.table("partition_rows")[0].num_rows() > 0);
    assert!(good.table("waiting_rows")[0].num_rows() > 0);

    let ints = |name: &str, values: Vec<i64>| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(values))],
        )
        .unwrap()
    };
    let refused = |snapshot: StateSnapshot, what: &str| {
        let err = f
            .make()
            .restore(round_trip(&snapshot).unwrap())
            .expect_err(what);
        assert!(err.to_string().contains("unreadable"), "{what}: {err}");
    };

    // Another operator's tables.
    let mut other = StateSnapshot::new();
    other.add("windows", ints("window_start", vec![1])).unwrap();
    other.add_values("meta", &[("watermark", Some(5))]).unwrap();
    refused(other, "another operator's snapshot");
    // Held rows with the wrong columns, or waiting rows.
    for table in ["partition_rows", "waiting_rows"] {
        let mut s = good.clone().without(table);
        s.add(table, ints("x", vec![1, 2])).unwrap();
        refused(s, table);
    }
    // Held rows missing, or too many.
    let rows = good.table("partition_rows");
    let mut s = good.clone().without("partition_rows");
    refused(s.clone(), "held rows missing");
    s.add("partition_rows", rows[0].clone()).unwrap();
    s.add("partition_rows", rows[0].clone()).unwrap();
    refused(s, "held rows twice");
    // Held rows in reverse: each partition's rows out of order or another partition's.
    let reversed = {
        let n = rows[0].num_rows() as u32;
        let indices = datafusion::arrow::array::UInt32Array::from_iter_values((0..n).rev());
        datafusion::arrow::compute::take_record_batch(&rows[0], &indices).unwrap()
    };
    let mut s = good.clone().without("partition_rows");
    s.add("partition_rows", reversed).unwrap();
    refused(s, "held rows reversed");
    // Partitions without a column, with a negative row number, with a start past the rows,
    // with keys of another type.
    let partitions = good.table("partitions").remove(0);
    let altered = |column: &str, change: &dyn Fn(&Int64Array) -> Option<Int64Array>| {
        let schema = partitions.schema();
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (field, c) in schema.fields().iter().zip(partitions.columns()) {
            let replaced = if field.name() == column {
                match c.as_any().downcast_ref::<Int64Array>() {
                    Some(ints) => change(ints).map(|a| Arc::new(a) as Arc<dyn Array>),
                    None => Some(Arc::new(Int64Array::from(vec![0; c.len()])) as Arc<dyn Array>),
                }
            } else {
                Some(Arc::clone(c))
            };
            if let Some(replaced) = replaced {
                fields.push(Field::new(field.name(), replaced.data_type().clone(), true));
                columns.push(replaced);
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let mut s = good.clone().without("partitions");
        s.add("partitions", batch).unwrap();
        s
    };
    refused(altered("start", &|_| None), "partitions without start");
    refused(
        altered("first_row", &|a| {
            Some(Int64Array::from_iter_values(a.values().iter().map(|_| -1)))
        }),
        "a negative row",
    );
    refused(
        altered("start", &|a| {
            Some(Int64Array::from_iter_values(
                a.values().iter().map(|v| v + 1000),
            ))
        }),
        "a start past the rows",
    );
    refused(
        altered("matches", &|a| {
            Some(Int64Array::from_iter(a.values().iter().map(|_| None)))
        }),
        "no match count",
    );
    // A start the rows do not replay to: the attempt is elsewhere.
    refused(
        altered("attempt_row", &|a| {
            Some(Int64Array::from_iter(a.iter().map(|v| match v {
                Some(_) => None,
                None => Some(0),
            })))
        }),
        "an attempt that does not replay",
    );
    let mut s = good.clone().without("match_meta");
    s.add_values("match_meta", &[("watermark", Some(1))])
        .unwrap();
    refused(s, "meta without counters");
}

/// Consecutive checkpoints share the segments that did not change: an attempt open for many
/// releases (symbol 1 falls for 15 seconds) keeps its rows' segments, and the second
/// checkpoint writes only the segments made since the first; restored from it, the operator
/// goes on as the original does.
#[tokio::test]
async fn consecutive_checkpoints_write_only_new_segments() {
    use eddy_engine::checkpoints::{CheckpointData, CheckpointStore, JobIdentity};
    use eddy_engine::runtime::checkpoint::{EpochParts, PartId};
    use std::collections::BTreeMap;

    let f = Factory::new(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, A.price AS p0, LAST(B.price) AS bottom, \
         C.price AS up ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
         PATTERN (A B+ C) DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
    )
    .await;
    let mut steps = Vec::new();
    for t in 1..=20 {
        // Symbol 2 rises and falls (matches, freeing its rows); 1 falls until second 16.
        let price = if t <= 16 { 100 - t } else { 100 + t };
        steps.push(Step::Rows(vec![(1, t, price), (2, t, (t * 7) % 5)]));
        steps.push(Step::Watermark(t));
    }
    steps.push(Step::End);
    let (first_cut, second_cut) = (20, 30);

    let mut op = f.make();
    let mut original = run(&f, &mut op, &steps[..first_cut]);
    let first = op.snapshot(1).unwrap();
    original.extend(run(&f, &mut op, &steps[first_cut..second_cut]));
    let second = op.snapshot(2).unwrap();
    let segments = |s: &StateSnapshot| -> BTreeMap<u64, RecordBatch> {
        s.shared("partition_rows").unwrap().into_iter().collect()
    };
    let (a, b) = (segments(&first), segments(&second));
    let kept: Vec<u64> = b.keys().filter(|id| a.contains_key(id)).copied().collect();
    let new = b.len() - kept.len();
    assert!(
        kept.len() >= 5 && new >= 3,
        "kept {kept:?} of {a:?}, {new} new"
    );
    for id in &kept {
        assert_eq!(a[id], b[id], "segment {id} names the same rows in both");
    }

    // Through the checkpoint store: the second checkpoint writes the new segments only.
    let dir = std::env::temp_dir().join(format!("eddy-mr-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = CheckpointStore::new(&dir, "v");
    let identity = JobIdentity {
        job: "v".to_string(),
        query: "q".to_string(),
        plan: "p".to_string(),
        parallelism: 1,
    };
    let part = PartId {
        node: 1,
        instance: 0,
    };
    let data = |epoch, snapshot: StateSnapshot| {
        let mut parts = EpochParts::default();
        parts.operators.insert(part, snapshot);
        CheckpointData {
            epoch,
            parts,
            view: None,
            late_rows: 0,
            finished: false,
        }
    };
    // Segment files: `op-<node>-<instance>-partition_rows-<id>.<epoch>.state`.
    let written_by = |epoch: u64| {
        std::fs::read_dir(dir.join("checkpoints/v/shared"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.contains("-partition_rows-") && name.ends_with(&format!(".{epoch}.state"))
            })
            .count()
    };
    let one = store.write(&identity, data(1, first)).unwrap();
    assert_eq!(written_by(1), a.len());
    let two = store.write(&identity, data(2, second)).unwrap();
    assert_eq!(written_by(2), new, "only the new segments are written");
    assert_eq!(
        written_by(1),
        kept.len(),
        "the first one's files are referred to"
    );
    assert!(two.bytes < one.bytes, "{two:?} against {one:?}");

    // A restart restores the second checkpoint, and the operator goes on as the original.
    let loaded = CheckpointStore::new(&dir, "v")
        .load_latest(&identity)
        .unwrap()
        .unwrap();
    let snapshot = loaded
        .restored
        .operators
        .lock()
        .unwrap()
        .remove(&part)
        .unwrap();
    let mut restored = f.make();
    restored.restore(snapshot).unwrap();
    let rest = run(&f, &mut restored, &steps[second_cut..]);
    let continued = run(&f, &mut op, &steps[second_cut..]);
    assert!(rest.iter().any(|m| !m.starts_with("watermark")), "{rest:?}");
    assert_eq!(rest, continued);
    original.extend(continued);
    assert_eq!(original, run(&f, &mut f.make(), &steps));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 5,000 symbols send one row each and stay idle, their attempts open for ever, beside symbol
/// 2's 16,000 rows in the same segment: the second block of partitions (all idle) stays the
/// same until, symbol 2 having matched, compaction moves the idle rows into a new segment.
fn idle_partitions_input() -> Vec<Step> {
    // Symbol 2 first (partition 0), falling, then the idle ones (partitions 1 ..).
    let first: Vec<(i64, i64, i64)> = (0..16_000)
        .map(|i| (2, 1, 20_000 - i))
        .chain((0..5_000).map(|s| (1_000 + s, 1, 5)))
        .collect();
    let mut steps = vec![Step::Rows(first), Step::Watermark(1)];
    for t in 2..150 {
        steps.push(Step::Rows(vec![(2, t, (t * 7) % 5)]));
        steps.push(Step::Watermark(t));
    }
    steps.push(Step::End);
    steps
}

const V_SHAPE: &str = "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
     MEASURES MATCH_NUMBER() AS mn, A.price AS p0, C.price AS up \
     ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
     PATTERN (A B+ C) DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))";

/// Compaction under idle partitions changes their block: the snapshot's block must then name
/// new rows, not keep its id.
#[tokio::test]
async fn compaction_under_idle_partitions_changes_their_block() {
    let f = Factory::new(V_SHAPE).await;
    let steps = idle_partitions_input();
    check_shared_ids(&f, &steps);
    check_cuts(&f, &steps, [3, 150, 290].into_iter());
}

/// Checkpoints through the store, each taken after the runtime said the one before completed:
/// the idle partitions' block is referred to without its rows (and not built), the store
/// lists the file it wrote before, and every checkpoint restores into an operator that goes
/// on exactly as the original, before and after compaction changed that block.
#[tokio::test]
async fn checkpoints_refer_to_blocks_a_complete_checkpoint_holds() {
    use eddy_engine::checkpoints::{CheckpointData, CheckpointStore, JobIdentity};
    use eddy_engine::runtime::checkpoint::{EpochParts, PartId};
    use eddy_engine::state::is_unchanged;

    let f = Factory::new(V_SHAPE).await;
    let steps = idle_partitions_input();
    let whole = run(&f, &mut f.make(), &steps);
    let dir = std::env::temp_dir().join(format!("eddy-mr-refs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = CheckpointStore::new(&dir, "v");
    let identity = JobIdentity {
        job: "v".to_string(),
        query: "q".to_string(),
        plan: "p".to_string(),
        parallelism: 1,
    };
    let part = PartId {
        node: 1,
        instance: 0,
    };
    let mut op = f.make();
    let mut emitted = Vec::new();
    let mut references = Vec::new();
    let mut at = 0;
    for (epoch, cut) in (1..).zip((2..steps.len()).step_by(16)) {
        emitted.extend(run(&f, &mut op, &steps[at..cut]));
        at = cut;
        let snapshot = op.snapshot(epoch).unwrap();
        references.push(
            snapshot
                .batches()
                .iter()
                .filter(|b| is_unchanged(b))
                .count(),
        );
        let mut parts = EpochParts::default();
        parts.operators.insert(part, snapshot);
        let data = CheckpointData {
            epoch,
            parts,
            view: None,
            late_rows: 0,
            finished: false,
        };
        store.write(&identity, data).unwrap();
        op.checkpoint_completed(epoch);
        // A restart from this checkpoint goes on as the uninterrupted run.
        let loaded = CheckpointStore::new(&dir, "v")
            .load_latest(&identity)
            .unwrap()
            .unwrap();
        let snapshot = loaded.restored.operators.lock().unwrap().remove(&part);
        let mut restored = f.make();
        restored.restore(snapshot.unwrap()).unwrap();
        let mut got = emitted.clone();
        got.extend(run(&f, &mut restored, &steps[cut..]));
        assert_eq!(got, whole, "restored from checkpoint {epoch} at step {cut}");
    }
    // The first checkpoint holds every block; the later ones refer to the idle block (its
    // two batches), except the one after compaction changed it, then to its new version.
    let rebuilt: Vec<usize> = (0..references.len())
        .filter(|&k| references[k] == 0)
        .collect();
    assert!(
        rebuilt.len() == 2 && rebuilt[0] == 0 && rebuilt[1] + 1 < references.len(),
        "{references:?}"
    );
    assert!(
        references.iter().all(|r| *r == 0 || *r == 2),
        "{references:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// [`check`], for a query whose output must hold timed-out attempts (`WITH TIMEOUTS`): the
/// small input and a random one do time some out, so a restore that lost or repeated a
/// timeout (or its partial match) would show.
async fn check_with_timeouts(query: &str) {
    let f = Factory::new(query).await;
    for steps in [small_input(), random_input(7, 40)] {
        let whole = run(&f, &mut f.make(), &steps).join("\n");
        assert!(
            whole.contains("TIMED_OUT") && whole.contains("MATCHED"),
            "{query} times nothing out, or matches nothing:\n{whole}"
        );
    }
    check(query).await;
}

#[tokio::test]
async fn timeouts_one_row_per_match() {
    check_with_timeouts(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, MATCH_STATUS() AS st, CLASSIFIER() AS cls, \
         A.price AS p0, LAST(B.price) AS bottom, C.price AS up, COUNT(*) AS n \
         ONE ROW PER MATCH WITH TIMEOUTS AFTER MATCH SKIP PAST LAST ROW \
         PATTERN (A B+ C) WITHIN INTERVAL '3' SECOND \
         DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
    )
    .await;
}

/// All rows of timed-out attempts, attempts that overlap (TO NEXT ROW), conditions that
/// depend on the labelling, and `$`: an attempt the watermark leaves waiting only at `$`
/// after cutting its other ways is timed out if the next row kills it.
#[tokio::test]
async fn timeouts_all_rows_per_match_and_end_anchor() {
    check_with_timeouts(
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_NUMBER() AS mn, MATCH_STATUS() AS st, CLASSIFIER() AS cls, \
         RUNNING COUNT(*) AS n, FINAL LAST(ts) AS t1 \
         ALL ROWS PER MATCH WITH TIMEOUTS AFTER MATCH SKIP TO NEXT ROW \
         PATTERN (A (B+ $ | B+ C)) WITHIN INTERVAL '3' SECOND \
         DEFINE A AS A.price >= 3, B AS B.price < FIRST(A.price), C AS C.price >= FIRST(A.price))",
    )
    .await;
}

/// Timeouts decided behind a look-ahead (NEXT), with one partition.
#[tokio::test]
async fn timeouts_with_look_ahead() {
    check_with_timeouts(
        "SELECT * FROM ticks MATCH_RECOGNIZE (ORDER BY ts \
         MEASURES MATCH_STATUS() AS st, FIRST(A.sym) AS s, NEXT(LAST(A.price)) AS after, \
         COUNT(*) AS n \
         ONE ROW PER MATCH WITH TIMEOUTS \
         PATTERN (A{2,} B) WITHIN INTERVAL '2' SECOND \
         DEFINE A AS A.price < NEXT(A.price) + 5, B AS B.price = 0)",
    )
    .await;
}

/// The output rows in `printed` (tables and watermarks), sorted, without the `seq` column
/// (which numbers rows within their input batch, so depends on how the input is cut).
fn rows_of(printed: &[String]) -> Vec<String> {
    // Cells without the padding, which depends on the table's widest value.
    let cells = |l: &str| {
        l.split('|')
            .map(|c| c.trim().to_string())
            .collect::<Vec<_>>()
    };
    let mut rows: Vec<String> = printed
        .iter()
        .filter(|m| !m.starts_with("watermark"))
        .flat_map(|table| {
            let mut lines = table.lines().filter(|l| l.starts_with('|'));
            let header = lines.next().map(cells).unwrap_or_default();
            let seq = header.iter().position(|c| c == "seq");
            lines
                .map(|l| {
                    let mut row = cells(l);
                    if let Some(k) = seq {
                        row.remove(k);
                    }
                    row.join("|")
                })
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    rows
}

/// `n` random steps over three symbols without late rows (each row after the watermark), times
/// and watermarks in milliseconds (a second, or a millisecond short of one), then the end.
fn in_time_input(seed: u64, n: usize) -> Vec<Step> {
    let mut rng = Lcg(seed);
    let mut watermark_ms = 0;
    let mut steps = Vec::new();
    for _ in 0..n {
        if rng.below(3) == 0 {
            let second = watermark_ms / 1000 + 1 + rng.below(3);
            watermark_ms = second * 1000 - rng.below(2);
            steps.push(Step::WatermarkMs(watermark_ms));
        } else {
            let first = watermark_ms / 1000 + 1;
            let rows = (0..rng.below(6))
                .map(|_| {
                    let ms = (first + rng.below(5)) * 1000 - rng.below(2);
                    (rng.below(3), ms.max(watermark_ms + 1), rng.below(10))
                })
                .collect();
            steps.push(Step::RowsMs(rows));
        }
    }
    steps.push(Step::End);
    steps
}

/// Streaming equals batch for timeout queries, over random inputs (see the module
/// documentation), and the timeouts are there.
#[tokio::test]
async fn timeouts_stream_as_a_batch_query_finds_them() {
    for query in [
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_STATUS() AS st, MATCH_NUMBER() AS mn, FIRST(A.ts) AS t0, \
         LAST(ts) AS t1, COUNT(*) AS n \
         ONE ROW PER MATCH WITH TIMEOUTS PATTERN (A B) WITHIN INTERVAL '3' SECOND \
         DEFINE A AS A.price < 5, B AS B.price >= 5)",
        "SELECT * FROM ticks MATCH_RECOGNIZE (PARTITION BY sym ORDER BY ts \
         MEASURES MATCH_STATUS() AS st, CLASSIFIER() AS cls, RUNNING COUNT(*) AS n \
         ALL ROWS PER MATCH WITH TIMEOUTS AFTER MATCH SKIP TO NEXT ROW \
         PATTERN (A B+ C) WITHIN INTERVAL '4' SECOND \
         DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price))",
        "SELECT * FROM ticks MATCH_RECOGNIZE (ORDER BY ts \
         MEASURES MATCH_STATUS() AS st, FIRST(A.sym) AS s, SUM(A.price) AS total \
         ONE ROW PER MATCH WITH TIMEOUTS \
         PATTERN (A+ B) WITHIN INTERVAL '2' SECOND \
         DEFINE A AS SUM(A.price) < 12, B AS B.price = 9)",
    ] {
        let f = Factory::new(query).await;
        let mut timed_out = 0;
        for seed in 0..12 {
            let steps = in_time_input(seed, 60);
            let all: Vec<(i64, i64, i64)> = steps
                .iter()
                .flat_map(|s| match s {
                    Step::RowsMs(rows) => rows.clone(),
                    _ => Vec::new(),
                })
                .collect();
            let streamed = rows_of(&run(&f, &mut f.make(), &steps));
            let batch = rows_of(&run(&f, &mut f.make(), &[Step::RowsMs(all), Step::End]));
            assert_eq!(streamed, batch, "seed {seed} of {query}: {steps:?}");
            timed_out += streamed.iter().filter(|r| r.contains("TIMED_OUT")).count();
        }
        assert!(timed_out > 0, "nothing timed out for {query}");
    }
}
