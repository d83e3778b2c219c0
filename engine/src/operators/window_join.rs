//! `WindowJoinOperator`: joins two inputs that carry the same windows, on `window_start`,
//! `window_end` and keys, once per window when it closes.
//!
//! Both inputs' rows are kept per window. When the watermark passes a window's end the window's
//! rows are joined with a hash join on the keys (NULL keys never match) and emitted: INNER,
//! LEFT, RIGHT, FULL (unmatched rows padded with NULLs), SEMI (`IN`, `EXISTS`) and ANTI
//! (`NOT EXISTS`, and `NOT IN` with its NULL rule).
//!
//! State: each open window's rows of both sides, freed when the window fires. Emission: final
//! rows only. Lateness: a row for a window that already fired is dropped and counted.
//! Watermark: forwarded after the windows it closes are emitted.
//!
//! Snapshot: table `window_join` holds the watermark; tables `left_rows` and `right_rows` hold
//! each side's batches of the open windows as they are kept (window by window, in arrival
//! order; no copy). Every row carries its window's bounds, so restore puts each batch back
//! into the window its rows name, in the same order: a window joins exactly the rows, in the
//! same order, it would have.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::conform_batch;
use super::join_rows::{
    JoinKind, KeyEncoder, RowRef, SIDE_TABLES, gather, keep, residual_mask, restore_join_watermark,
};
use super::window_aggregate::{BoundColumn, BoundValues};
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::operators::window::{Span, WindowKind, take_closed};
use crate::runtime::message::Epoch;
use crate::runtime::message::EventTime;
use crate::state::{StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot table of the operator's values (its watermark).
const META_TABLE: &str = "window_join";

/// The state tables of a window join on `left_keys = right_keys` (as the plan names them).
pub fn state_tables(left_keys: &[String], right_keys: &[String]) -> Vec<StateTable> {
    super::join_rows::join_state_tables(
        META_TABLE,
        left_keys,
        right_keys,
        "window",
        "rows per open window",
    )
}

/// One input of a window join.
pub struct WindowJoinSide {
    pub schema: SchemaRef,
    pub keys: KeyEncoder,
    /// Where the input's window bounds are.
    pub bounds: Vec<BoundColumn>,
}

pub struct WindowJoinSpec {
    pub kind: JoinKind,
    pub window: WindowKind,
    /// A window fires when `watermark >= window_end - lag`.
    pub lag: i64,
    pub left: WindowJoinSide,
    pub right: WindowJoinSide,
    /// Non-equi conditions, over the joined row.
    pub residual: Option<Arc<dyn PhysicalExpr>>,
}

#[derive(Default)]
struct WindowRows {
    sides: [Vec<RecordBatch>; 2],
}

pub struct WindowJoinOperator {
    info: OperatorInfo,
    spec: WindowJoinSpec,
    windows: BTreeMap<Span, WindowRows>,
    watermark: Option<EventTime>,
}

impl WindowJoinOperator {
    pub fn new(info: OperatorInfo, spec: WindowJoinSpec) -> Self {
        Self {
            info,
            spec,
            windows: BTreeMap::new(),
            watermark: None,
        }
    }

    fn side(&self, input: usize) -> &WindowJoinSide {
        if input == 0 {
            &self.spec.left
        } else {
            &self.spec.right
        }
    }

    /// Puts back the batches of a snapshot's table of `input`, in their order.
    fn restore_side(&mut self, input: usize, batches: Vec<RecordBatch>) -> EngineResult<()> {
        let expected = Arc::clone(&self.side(input).schema);
        let bounds = self.side(input).bounds.clone();
        for batch in batches {
            let schema = batch.schema();
            let shaped = schema.fields().len() == expected.fields().len()
                && schema
                    .fields()
                    .iter()
                    .zip(expected.fields())
                    .all(|(f, expected)| f.data_type() == expected.data_type());
            if !shaped {
                return Err(corrupt(format!(
                    "{} of a window join has columns {:?}, not those of the side",
                    SIDE_TABLES[input],
                    schema
                        .fields()
                        .iter()
                        .map(|f| format!("{}: {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                )));
            }
            let batch = RecordBatch::try_new(
                Arc::new(datafusion::arrow::datatypes::Schema::new(
                    schema.fields().clone(),
                )),
                batch.columns().to_vec(),
            )?;
            let by_window = BoundValues::read(&bounds, &batch)?
                .rows_by_window(&self.spec.window, batch.num_rows());
            if by_window.values().map(Vec::len).sum::<usize>() != batch.num_rows() {
                return Err(corrupt(format!(
                    "{} of a window join holds rows without a window",
                    SIDE_TABLES[input]
                )));
            }
            for (window, rows) in by_window {
                let part = if rows.len() == batch.num_rows() {
                    batch.clone()
                } else {
                    take_record_batch(&batch, &UInt32Array::from(rows))?
                };
                self.windows.entry(window).or_default().sides[input].push(part);
            }
        }
        Ok(())
    }

    /// Joins one window's rows.
    fn join(&self, rows: WindowRows) -> EngineResult<Vec<RecordBatch>> {
        let [left, right] = rows.sides;
        let left = concat_batches(&self.spec.left.schema, &left)?;
        let right = concat_batches(&self.spec.right.schema, &right)?;
        let (left_keys, left_valid) = self.spec.left.keys.encode(&left)?;
        let (right_keys, right_valid) = self.spec.right.keys.encode(&right)?;
        let mut index: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for (r, valid) in right_valid.iter().enumerate() {
            if *valid {
                index.entry(right_keys.row(r).data()).or_default().push(r);
            }
        }
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for (l, valid) in left_valid.iter().enumerate() {
            if !valid {
                continue;
            }
            if let Some(matches) = index.get(left_keys.row(l).data()) {
                pairs.extend(matches.iter().map(|r| (l, *r)));
            }
        }
        let (lb, rb) = ([&left], [&right]);
        let pair_batch = |pairs: &[(usize, usize)]| -> EngineResult<RecordBatch> {
            let lrefs: Vec<RowRef> = pairs.iter().map(|(l, _)| Some((0, *l))).collect();
            let rrefs: Vec<RowRef> = pairs.iter().map(|(_, r)| Some((0, *r))).collect();
            let mut columns = gather(&self.spec.left.schema, &lb, &lrefs)?;
            columns.extend(gather(&self.spec.right.schema, &rb, &rrefs)?);
            Ok(RecordBatch::try_new(
                joined_schema(&self.spec.left.schema, &self.spec.right.schema),
                columns,
            )?)
        };
        // Apply the residual condition to the candidate pairs.
        let mut joined = None;
        if let Some(residual) = &self.spec.residual
            && !pairs.is_empty()
        {
            let candidates = pair_batch(&pairs)?;
            let mask = residual_mask(residual, &candidates)?;
            pairs = pairs
                .into_iter()
                .zip(mask.iter())
                .filter(|(_, keep)| *keep == Some(true))
                .map(|(p, _)| p)
                .collect();
            joined = Some(keep(&candidates, &mask)?);
        }
        let mut left_matched = vec![false; left.num_rows()];
        let mut right_matched = vec![false; right.num_rows()];
        for (l, r) in &pairs {
            left_matched[*l] = true;
            right_matched[*r] = true;
        }
        let schema = &self.info.schema;
        let mut out = Vec::new();
        let padded = |side: usize, rows: Vec<usize>| -> EngineResult<RecordBatch> {
            let refs: Vec<RowRef> = rows.iter().map(|r| Some((0, *r))).collect();
            let none: Vec<RowRef> = vec![None; rows.len()];
            let (lrefs, rrefs) = if side == 0 {
                (&refs, &none)
            } else {
                (&none, &refs)
            };
            let mut columns = gather(&self.spec.left.schema, &lb, lrefs)?;
            columns.extend(gather(&self.spec.right.schema, &rb, rrefs)?);
            conform_batch(schema, columns)
        };
        let unmatched = |matched: &[bool]| -> Vec<usize> {
            (0..matched.len()).filter(|i| !matched[*i]).collect()
        };
        let select = |batch: &RecordBatch, rows: Vec<usize>| -> EngineResult<RecordBatch> {
            let indices = UInt32Array::from_iter_values(rows.iter().map(|r| *r as u32));
            conform_batch(
                schema,
                take_record_batch(batch, &indices)?.columns().to_vec(),
            )
        };
        match self.spec.kind {
            JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full => {
                if !pairs.is_empty() {
                    let joined = match joined {
                        Some(j) => j,
                        None => pair_batch(&pairs)?,
                    };
                    out.push(conform_batch(schema, joined.columns().to_vec())?);
                }
                if self.spec.kind.pads_left() {
                    out.push(padded(0, unmatched(&left_matched))?);
                }
                if self.spec.kind.pads_right() {
                    out.push(padded(1, unmatched(&right_matched))?);
                }
            }
            JoinKind::LeftSemi => {
                out.push(select(
                    &left,
                    (0..left.num_rows()).filter(|l| left_matched[*l]).collect(),
                )?);
            }
            JoinKind::LeftAnti { null_aware } => {
                let rows: Vec<usize> = if null_aware && right.num_rows() > 0 {
                    // NOT IN: a NULL among the right keys makes every comparison unknown, and
                    // a NULL left key is never NOT IN a non-empty set.
                    if right_valid.iter().any(|v| !v) {
                        Vec::new()
                    } else {
                        (0..left.num_rows())
                            .filter(|l| left_valid[*l] && !left_matched[*l])
                            .collect()
                    }
                } else {
                    unmatched(&left_matched)
                };
                out.push(select(&left, rows)?);
            }
            JoinKind::RightSemi => {
                out.push(select(
                    &right,
                    (0..right.num_rows())
                        .filter(|r| right_matched[*r])
                        .collect(),
                )?);
            }
            JoinKind::RightAnti => {
                out.push(select(&right, unmatched(&right_matched))?);
            }
        }
        Ok(out)
    }
}

/// The schema of a left row followed by a right row (all nullable, for padding).
fn joined_schema(left: &SchemaRef, right: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = left
        .fields()
        .iter()
        .chain(right.fields().iter())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
}

impl Operator for WindowJoinOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let by_window = BoundValues::read(&self.side(input).bounds, &batch)?
            .rows_by_window(&self.spec.window, batch.num_rows());
        for (window, rows) in by_window {
            if window.closed_by(self.spec.lag, self.watermark) {
                // The input carries the row's window, not its time: the latest time the
                // window holds stands for it.
                let time = window.end - self.spec.lag;
                let late: Vec<_> = rows.iter().map(|r| (*r as usize, Some(time))).collect();
                out.drop_late(&batch, &late)?;
                continue;
            }
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(&batch, &UInt32Array::from(rows))?
            };
            self.windows.entry(window).or_default().sides[input].push(part);
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        // After a restore the runtime may repeat the restored watermark: already done.
        if self.watermark.is_some_and(|w| watermark <= w) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        for (_, rows) in take_closed(&mut self.windows, self.spec.lag, watermark) {
            for batch in self.join(rows)? {
                out.batch(batch);
            }
        }
        out.watermark(watermark);
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        let usage = |side: usize| -> (usize, usize) {
            self.windows
                .values()
                .flat_map(|w| w.sides[side].iter())
                .fold((0, 0), |(rows, bytes), b| {
                    (rows + b.num_rows(), bytes + b.get_array_memory_size())
                })
        };
        SIDE_TABLES
            .into_iter()
            .enumerate()
            .map(|(side, table)| {
                let (rows, bytes) = usage(side);
                StateUsage { table, rows, bytes }
            })
            .collect()
    }

    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(META_TABLE, &[("watermark", self.watermark)])?;
        for (input, table) in SIDE_TABLES.into_iter().enumerate() {
            for rows in self.windows.values() {
                for batch in &rows.sides[input] {
                    snapshot.add(table, batch.clone())?;
                }
            }
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        if self.watermark.is_some() || !self.windows.is_empty() {
            return Err(EngineError::Internal(
                "window join: restore into an operator that already ran".to_string(),
            ));
        }
        let watermark = restore_join_watermark(&snapshot, "a window join", META_TABLE)?;
        for (input, table) in SIDE_TABLES.into_iter().enumerate() {
            self.restore_side(input, snapshot.table(table))?;
        }
        // A window the watermark closed fired before the snapshot: it cannot be held.
        if let Some(window) = self
            .windows
            .keys()
            .find(|w| w.closed_by(self.spec.lag, watermark))
        {
            return Err(corrupt(format!(
                "a window join holds rows of window {window:?}, closed by its watermark \
                 {watermark:?}"
            )));
        }
        self.watermark = watermark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::logical_expr::Operator as BinaryOp;
    use datafusion::physical_expr::expressions::{Column, binary, col};

    use super::*;
    use crate::error::EngineError;
    use crate::operators::checkpoint_harness::restore_declared;
    use crate::operators::join_rows::checkpoint_tests::{
        Lcg, Step, check_every_cut, output_rows, run,
    };
    use crate::operators::window_aggregate::WindowColumn;
    use crate::runtime::message::WATERMARK_END;
    use crate::state::checkpoint::round_trip;

    const MS: i64 = 1_000_000;
    /// The tumbling windows' size, in ms.
    const SIZE: i64 = 1_000;

    fn schema(name: &str) -> SchemaRef {
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        Arc::new(Schema::new(vec![
            Field::new(format!("{name}_k"), DataType::Int64, true),
            Field::new(format!("{name}_start"), time.clone(), false),
            Field::new(format!("{name}_end"), time, false),
            Field::new(format!("{name}_v"), DataType::Utf8, true),
        ]))
    }

    fn side(name: &str) -> WindowJoinSide {
        let bound = |index, column| BoundColumn {
            index,
            column,
            unit_ns: MS,
        };
        WindowJoinSide {
            schema: schema(name),
            keys: KeyEncoder::try_new(vec![Arc::new(Column::new("k", 0))], &[DataType::Int64])
                .unwrap(),
            bounds: vec![bound(1, WindowColumn::Start), bound(2, WindowColumn::End)],
        }
    }

    /// A window join on TUMBLE(1 s) and the key, with `l_v <> r_v` as residual condition if
    /// `residual`; and its late-row counter.
    fn declared() -> Vec<StateTable> {
        state_tables(&["k".to_string()], &["k".to_string()])
    }

    fn window_join(kind: JoinKind, residual: bool) -> WindowJoinOperator {
        let (left, right) = (side("l"), side("r"));
        let joined = joined_schema(&left.schema, &right.schema);
        let schema = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti { .. } => Arc::clone(&left.schema),
            JoinKind::RightSemi | JoinKind::RightAnti => Arc::clone(&right.schema),
            _ => Arc::clone(&joined),
        };
        let residual = residual.then(|| {
            binary(
                col("l_v", &joined).unwrap(),
                BinaryOp::NotEq,
                col("r_v", &joined).unwrap(),
                &joined,
            )
            .unwrap()
        });
        WindowJoinOperator::new(
            OperatorInfo {
                name: "WindowJoin".to_string(),
                schema,
            },
            WindowJoinSpec {
                kind,
                window: WindowKind::Tumble {
                    size: SIZE * MS,
                    offset: 0,
                },
                lag: MS,
                left,
                right,
                residual,
            },
        )
    }

    /// Rows of one side: (key, time in ms, value), each carrying its tumbling window.
    fn rows(name: &str, rows: &[(Option<i64>, i64, Option<&str>)]) -> RecordBatch {
        let start = |ts: i64| ts.div_euclid(SIZE) * SIZE;
        RecordBatch::try_new(
            schema(name),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| start(r.1)),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| start(r.1) + SIZE),
                )),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// A random stream of both sides: keys 0..3 (some NULL), times around a clock with
    /// disorder (so some rows are late for their window), values a..c (some NULL), watermarks
    /// 500 ms behind the clock, then the end of input.
    fn random_steps(seed: u64, len: usize) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut clock: i64 = 10_000;
        let mut watermark = i64::MIN;
        let mut steps = Vec::new();
        while steps.len() < len {
            if rng.below(10) < 7 {
                let input = rng.below(2) as usize;
                let n = 1 + rng.below(5) as usize;
                let batch: Vec<_> = (0..n)
                    .map(|_| {
                        let key = (rng.below(8) != 0).then(|| rng.below(3) as i64);
                        let ts = clock - 800 + rng.below(12) as i64 * 100;
                        let value =
                            (rng.below(6) != 0).then(|| ["a", "b", "c"][rng.below(3) as usize]);
                        (key, ts, value)
                    })
                    .collect();
                steps.push(Step::Rows(input, rows(["l", "r"][input], &batch)));
                clock += rng.below(250) as i64;
            } else if (clock - 500) * MS > watermark {
                watermark = (clock - 500) * MS;
                steps.push(Step::Watermark(watermark));
            }
        }
        steps.push(Step::Watermark(WATERMARK_END));
        steps
    }

    #[test]
    fn a_restored_window_join_emits_what_the_uninterrupted_one_did_at_every_cut() {
        let kinds = [
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
            JoinKind::LeftSemi,
            JoinKind::LeftAnti { null_aware: false },
            JoinKind::LeftAnti { null_aware: true },
            JoinKind::RightSemi,
            JoinKind::RightAnti,
        ];
        for seed in [1, 2, 3] {
            let steps = random_steps(seed, 40);
            for residual in [false, true] {
                let rows: Vec<usize> = kinds
                    .iter()
                    .map(|kind| {
                        output_rows(&check_every_cut(
                            || window_join(*kind, residual),
                            &declared(),
                            &steps,
                        ))
                    })
                    .collect();
                let [
                    inner,
                    left,
                    right,
                    full,
                    semi,
                    anti,
                    not_in,
                    right_semi,
                    right_anti,
                ] = rows[..]
                else {
                    unreachable!()
                };
                let what = format!("seed {seed}, residual {residual}: {rows:?}");
                assert!(inner > 0 && left > inner && right > inner, "{what}");
                assert_eq!(full + inner, left + right, "{what}");
                assert!(
                    semi > 0 && anti > 0 && right_semi > 0 && right_anti > 0,
                    "{what}"
                );
                assert!(not_in <= anti, "{what}");
            }
        }
    }

    #[test]
    fn windows_open_on_both_sides_at_the_cut_join_after_the_restore() {
        // Two windows open on both sides, the earlier one fired between them.
        let steps = vec![
            Step::Rows(
                0,
                rows(
                    "l",
                    &[(Some(1), 1_100, Some("a")), (Some(2), 2_100, Some("a"))],
                ),
            ),
            Step::Rows(
                1,
                rows(
                    "r",
                    &[(Some(1), 1_900, Some("b")), (None, 1_500, Some("c"))],
                ),
            ),
            Step::Rows(
                1,
                rows(
                    "r",
                    &[(Some(2), 2_500, Some("a")), (Some(1), 1_200, Some("a"))],
                ),
            ),
            Step::Watermark(1_999 * MS),
            // Late: its window [1 s, 2 s) fired.
            Step::Rows(
                0,
                rows("l", &[(Some(1), 1_950, Some("z")), (Some(2), 2_600, None)]),
            ),
            Step::Rows(1, rows("r", &[(Some(3), 3_000, Some("q"))])),
            Step::Watermark(WATERMARK_END),
        ];
        for residual in [false, true] {
            for kind in [JoinKind::Full, JoinKind::LeftAnti { null_aware: true }] {
                let out = check_every_cut(|| window_join(kind, residual), &declared(), &steps);
                // FULL: [1 s, 2 s) joins key 1 twice and pads the NULL key; [2 s, 3 s) joins
                // key 2 twice; [3 s, 4 s) pads key 3. With the residual condition the first
                // keeps one pair and pads two right rows, the second keeps none and pads its
                // three rows. NOT IN:
                // the NULL key on the right empties [1 s, 2 s); key 2 has its partner in
                // [2 s, 3 s) unless the residual condition rejects both pairs.
                let expected = match (kind, residual) {
                    (JoinKind::Full, false) => 6,
                    (JoinKind::Full, true) => 7,
                    (_, false) => 0,
                    (_, true) => 2,
                };
                assert_eq!(output_rows(&out), expected, "{kind}, residual {residual}");
            }
        }
    }

    #[test]
    fn window_join_snapshots_of_another_shape_are_refused() {
        let refused = |snapshot: StateSnapshot, what: &str| match restore_declared(
            &mut window_join(JoinKind::Full, false),
            &declared(),
            snapshot,
        ) {
            Err(EngineError::Checkpoint(_)) => {}
            other => panic!("{what}: {other:?}"),
        };
        let mut op = window_join(JoinKind::Full, false);
        run(
            &mut op,
            &[
                Step::Rows(0, rows("l", &[(Some(1), 1_100, Some("a"))])),
                Step::Rows(1, rows("r", &[(Some(1), 1_900, Some("b"))])),
            ],
        );
        let good = op.snapshot(1).unwrap();
        window_join(JoinKind::Full, false)
            .restore(round_trip(&good).unwrap())
            .unwrap();

        refused(StateSnapshot::new(), "no watermark");
        refused(good.clone().without(META_TABLE), "no watermark");
        let mut values = good.clone().without(META_TABLE);
        values
            .add_values(META_TABLE, &[("watermark", None), ("count", Some(3))])
            .unwrap();
        refused(values, "unknown values");
        let mut closed = good.clone().without(META_TABLE);
        closed
            .add_values(META_TABLE, &[("watermark", Some(2_000 * MS))])
            .unwrap();
        refused(closed, "rows of a window its watermark closed");
        // An interval join's: its table of values, and rows with a `matched` column.
        let mut interval = good.clone().without(META_TABLE);
        interval
            .add_values("interval_join", &[("watermark", None)])
            .unwrap();
        refused(interval, "another operator's table");
        let left = good.table("left_rows")[0].clone();
        let mut fields = left.schema().fields().to_vec();
        fields.push(Arc::new(Field::new("matched", DataType::Boolean, false)));
        let mut columns = left.columns().to_vec();
        columns.push(Arc::new(datafusion::arrow::array::BooleanArray::from(
            vec![false],
        )));
        let mut wider = good.clone().without("left_rows");
        wider
            .add(
                "left_rows",
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
            )
            .unwrap();
        refused(wider, "rows with another column");
        // A window bound of another type.
        let mut fields = left.schema().fields().to_vec();
        fields[1] = Arc::new(Field::new("l_start", DataType::Utf8, false));
        let mut columns = left.columns().to_vec();
        columns[1] = Arc::new(StringArray::from(vec!["1970-01-01"]));
        let mut typed = good.without("left_rows");
        typed
            .add(
                "left_rows",
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
            )
            .unwrap();
        refused(typed, "a bound of another type");
    }
}
