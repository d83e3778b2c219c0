//! An interval join's state stays flat over a long stream: the watermark prunes it.
//!
//! A running query's state figures (`QueryMetrics`, `EXPLAIN ANALYZE`) are refreshed at most
//! every 100 ms, so to see the state after each step these tests drive an
//! `IntervalJoinOperator` directly, as the runtime does (a batch on each input, then the
//! combined watermark), and read what it reports through `state_tables()`: the rows it holds
//! per side and the bytes of the batches they keep alive.
//!
//! The stream: each side gets one row per millisecond of event time, in batches of 1 000
//! (one second). Left keys cycle through 0..1000, right keys through 500..1500, so half of each
//! side's rows have partners and half are padded (a FULL join). Bounds: -1 s <= left.ts -
//! right.ts <= 1 s. The watermark after each pair of batches is the newest time minus 100 ms.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::expressions::col;
use eddy_engine::operators::interval_join::{IntervalJoinOperator, IntervalJoinSpec, IntervalSide};
use eddy_engine::operators::join_rows::{JoinKind, KeyEncoder};
use eddy_engine::operators::{Operator, OperatorContext, OperatorInfo};
use eddy_engine::runtime::message::WATERMARK_END;

const MS: i64 = 1_000_000;
const SECOND: i64 = 1_000 * MS;
/// Rows per batch per side: one second of event time.
const BATCH_ROWS: i64 = 1_000;
/// The watermark delay.
const DELAY: i64 = 100 * MS;

fn side_schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}k"), DataType::Int64, true),
        Field::new(
            format!("{prefix}ts"),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new(format!("{prefix}v"), DataType::Int64, true),
    ]))
}

fn side(schema: &SchemaRef, key: &str) -> IntervalSide {
    IntervalSide {
        schema: Arc::clone(schema),
        keys: KeyEncoder::try_new(vec![col(key, schema).unwrap()], &[DataType::Int64]).unwrap(),
        time_index: 1,
        time_unit_ns: MS,
    }
}

struct Join {
    op: IntervalJoinOperator,
    left: SchemaRef,
    right: SchemaRef,
    ctx: OperatorContext,
}

fn full_join() -> Join {
    let left = side_schema("l_");
    let right = side_schema("r_");
    let joined: Vec<Field> = left
        .fields()
        .iter()
        .chain(right.fields().iter())
        .map(|f| f.as_ref().clone())
        .collect();
    let op = IntervalJoinOperator::new(
        OperatorInfo {
            name: "IntervalJoin".to_string(),
            schema: Arc::new(Schema::new(joined)),
        },
        IntervalJoinSpec {
            kind: JoinKind::Full,
            left: side(&left, "l_k"),
            right: side(&right, "r_k"),
            lower: -SECOND,
            upper: SECOND,
            residual: None,
        },
    );
    Join {
        op,
        left,
        right,
        ctx: OperatorContext::default(),
    }
}

/// Batch `i` of one side: rows at milliseconds i * BATCH_ROWS .. (i + 1) * BATCH_ROWS, with
/// keys `n % 1000 + key_offset`.
fn batch(schema: &SchemaRef, i: i64, key_offset: i64) -> RecordBatch {
    let n = (i * BATCH_ROWS)..((i + 1) * BATCH_ROWS);
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(Int64Array::from_iter_values(
                n.clone().map(|n| n % 1000 + key_offset),
            )),
            Arc::new(TimestampMillisecondArray::from_iter_values(n.clone())),
            Arc::new(Int64Array::from_iter_values(n)),
        ],
    )
    .unwrap()
}

/// (rows, bytes) held per side.
fn state(op: &IntervalJoinOperator) -> [(usize, usize); 2] {
    let tables = op.state_usage();
    assert_eq!(tables.len(), 2, "left_rows and right_rows");
    [
        (tables[0].rows, tables[0].bytes),
        (tables[1].rows, tables[1].bytes),
    ]
}

impl Join {
    /// Feeds batch `i` of both sides; then the watermark, unless `advance` is false. Outputs
    /// are dropped (the runtime would send them on).
    fn step(&mut self, i: i64, advance: bool) {
        let out = &mut self.ctx;
        self.op.on_batch(0, batch(&self.left, i, 0), out).unwrap();
        self.op
            .on_batch(1, batch(&self.right, i, 500), out)
            .unwrap();
        if advance {
            let newest = ((i + 1) * BATCH_ROWS - 1) * MS;
            self.op.on_watermark(newest - DELAY, out).unwrap();
        }
    }
}

#[test]
fn interval_join_state_is_bounded_by_the_interval_over_a_long_stream() {
    // 600 s of event time: 600 000 rows per side.
    const BATCHES: i64 = 600;
    let mut join = full_join();
    // After a watermark W a side keeps the rows that may still meet a future row: left rows
    // with ts - lower > W, right rows with ts + upper > W, i.e. ts > W - 1 s on both sides:
    // the last 1.1 s of rows (1 100), whatever the stream's length.
    let bound = (SECOND + DELAY) / MS;
    let mut bytes_early = [0; 2];
    for i in 0..BATCHES {
        join.step(i, true);
        let held = state(&join.op);
        for (side, (rows, _)) in held.iter().enumerate() {
            assert!(
                *rows as i64 <= bound,
                "after {} s the {} side holds {rows} rows; the interval allows {bound}",
                i + 1,
                ["left", "right"][side]
            );
        }
        if i == BATCHES / 10 {
            bytes_early = [held[0].1, held[1].1];
        }
        if i == BATCHES - 1 {
            for side in 0..2 {
                assert_eq!(held[side].0 as i64, bound, "the last 1.1 s stay held");
                assert!(
                    held[side].1 <= bytes_early[side],
                    "bytes held grew from {} (at 10% of the stream) to {} (at its end)",
                    bytes_early[side],
                    held[side].1
                );
            }
        }
    }
    assert_eq!(join.ctx.late_rows(), 0, "no row was late");
    // The end of input releases (and pads) everything.
    join.op
        .on_watermark(WATERMARK_END, &mut OperatorContext::default())
        .unwrap();
    assert_eq!(state(&join.op), [(0, 0), (0, 0)]);
}

#[test]
fn without_a_watermark_the_state_holds_every_row() {
    // The counter-test: the same stream with no watermark cannot prune anything, and the
    // state tables report every row (so the bound above is a real observation).
    const BATCHES: i64 = 50;
    let mut join = full_join();
    for i in 0..BATCHES {
        join.step(i, false);
    }
    let held = state(&join.op);
    for (rows, bytes) in held {
        assert_eq!(rows as i64, BATCHES * BATCH_ROWS);
        assert!(bytes > 0);
    }
    // One watermark later only the last 1.1 s remain.
    let newest = (BATCHES * BATCH_ROWS - 1) * MS;
    join.op
        .on_watermark(newest - DELAY, &mut OperatorContext::default())
        .unwrap();
    for (rows, _) in state(&join.op) {
        assert_eq!(rows as i64, (SECOND + DELAY) / MS);
    }
}
