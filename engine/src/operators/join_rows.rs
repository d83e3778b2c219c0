//! Pieces shared by the stream-stream join operators: join keys and building joined rows.
//!
//! Keys are encoded with Arrow's row format, so any key types compare byte-wise; a key with a
//! NULL in it never matches (SQL `=`). Joined rows are gathered from the stored batches of the
//! two sides by reference; a missing side (an outer join's padding) is filled with NULLs.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, new_null_array};
use datafusion::arrow::compute::{filter_record_batch, interleave};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{EngineError, EngineResult};

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    /// Left rows with a partner (`IN`, `EXISTS`).
    LeftSemi,
    /// Left rows without a partner (`NOT EXISTS`); `null_aware` gives `NOT IN`'s rule that a
    /// NULL on the right removes every row.
    LeftAnti {
        null_aware: bool,
    },
    RightSemi,
    RightAnti,
}

impl std::fmt::Display for JoinKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinKind::Inner => "Inner",
            JoinKind::Left => "Left",
            JoinKind::Right => "Right",
            JoinKind::Full => "Full",
            JoinKind::LeftSemi => "LeftSemi",
            JoinKind::LeftAnti { null_aware: false } => "LeftAnti",
            JoinKind::LeftAnti { null_aware: true } => "LeftAnti (NOT IN)",
            JoinKind::RightSemi => "RightSemi",
            JoinKind::RightAnti => "RightAnti",
        })
    }
}

impl JoinKind {
    /// Unmatched left rows are emitted, padded.
    pub fn pads_left(&self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Full)
    }

    /// Unmatched right rows are emitted, padded.
    pub fn pads_right(&self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Full)
    }
}

/// Encodes join keys; `None` for a row whose key has a NULL.
pub struct KeyEncoder {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
}

impl KeyEncoder {
    /// Keys from `exprs` of `types`; with no expressions every row has the same key.
    pub fn try_new(exprs: Vec<Arc<dyn PhysicalExpr>>, types: &[DataType]) -> EngineResult<Self> {
        let fields = if exprs.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            types.iter().map(|t| SortField::new(t.clone())).collect()
        };
        let converter = RowConverter::new(fields)?;
        Ok(Self { exprs, converter })
    }

    /// The encoded keys of a batch and, per row, whether the key is free of NULLs.
    pub fn encode(&self, batch: &RecordBatch) -> EngineResult<(Rows, Vec<bool>)> {
        let rows = batch.num_rows();
        let columns = if self.exprs.is_empty() {
            vec![Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef]
        } else {
            self.exprs
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
                .collect::<EngineResult<Vec<ArrayRef>>>()?
        };
        let valid = (0..rows)
            .map(|r| columns.iter().all(|c| c.is_valid(r)))
            .collect();
        Ok((self.converter.convert_columns(&columns)?, valid))
    }
}

/// One side's part of a joined row: (index into that side's batch list, row), or `None` for
/// NULL padding.
pub type RowRef = Option<(usize, usize)>;

/// The state tables of a join's snapshot holding each side's rows.
pub const SIDE_TABLES: [&str; 2] = ["left_rows", "right_rows"];

/// A join's state tables: its watermark in `meta`, and each side's rows keyed by the join
/// keys (as the plan names them) and `unit` (an event time, a window), holding `value`.
pub fn join_state_tables(
    meta: &'static str,
    left_keys: &[String],
    right_keys: &[String],
    unit: &str,
    value: &'static str,
) -> Vec<crate::state::StateTable> {
    use crate::state::{Freed, StateTable};
    let key = |keys: &[String]| {
        let mut key = keys.to_vec();
        key.push(unit.to_string());
        key
    };
    let [left, right] = SIDE_TABLES;
    vec![
        StateTable::fixed(meta, "the watermark"),
        StateTable::new(left, key(left_keys), value, Freed::Watermark),
        StateTable::new(right, key(right_keys), value, Freed::Watermark),
    ]
}

/// Reads the watermark a join's snapshot holds in `meta`; `operator` names the join in
/// messages.
pub fn restore_join_watermark(
    snapshot: &crate::state::StateSnapshot,
    operator: &str,
    meta: &str,
) -> EngineResult<Option<crate::runtime::message::EventTime>> {
    let values = snapshot.values(meta)?;
    match (values.get("watermark"), values.len()) {
        (Some(w), 1) => Ok(*w),
        _ => Err(crate::state::corrupt(format!(
            "{operator}'s {meta} holds {values:?}, not its watermark"
        ))),
    }
}

/// The columns of `schema` for the referenced rows of `batches`.
pub fn gather(
    schema: &SchemaRef,
    batches: &[&RecordBatch],
    rows: &[RowRef],
) -> EngineResult<Vec<ArrayRef>> {
    let padding = batches.len();
    let indices: Vec<(usize, usize)> = rows.iter().map(|r| r.unwrap_or((padding, 0))).collect();
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let null = new_null_array(field.data_type(), 1);
            let mut sources: Vec<&dyn Array> =
                batches.iter().map(|b| b.column(i).as_ref()).collect();
            sources.push(null.as_ref());
            Ok(interleave(&sources, &indices)?)
        })
        .collect()
}

/// Evaluates a join's residual condition on joined rows (NULL counts as false).
pub fn residual_mask(
    residual: &Arc<dyn PhysicalExpr>,
    joined: &RecordBatch,
) -> EngineResult<BooleanArray> {
    let mask = residual.evaluate(joined)?.into_array(joined.num_rows())?;
    if mask.data_type() != &DataType::Boolean {
        return Err(EngineError::Internal(format!(
            "join condition returned {}",
            mask.data_type()
        )));
    }
    let mask = mask.as_boolean();
    Ok(mask.iter().map(|v| Some(v == Some(true))).collect())
}

/// Keeps the rows of `batch` where `mask` is true.
pub fn keep(batch: &RecordBatch, mask: &BooleanArray) -> EngineResult<RecordBatch> {
    Ok(filter_record_batch(batch, mask)?)
}

/// The harness of the join operators' snapshot tests.
#[cfg(test)]
pub(crate) mod checkpoint_tests {
    use datafusion::arrow::record_batch::RecordBatch;

    use crate::operators::checkpoint_harness::restore_declared;
    use crate::operators::{Operator, OperatorContext};
    use crate::runtime::message::Message;
    use crate::state::StateTable;
    use crate::state::checkpoint::round_trip;

    /// One input message.
    #[derive(Clone)]
    pub enum Step {
        Rows(usize, RecordBatch),
        Watermark(i64),
    }

    /// An output message, compared exactly.
    #[derive(Debug, PartialEq)]
    pub enum Emitted {
        Rows(RecordBatch),
        Watermark(i64),
    }

    /// A tiny deterministic generator (Knuth's MMIX LCG).
    pub struct Lcg(pub u64);

    impl Lcg {
        pub fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    pub fn run(op: &mut dyn Operator, steps: &[Step]) -> Vec<Emitted> {
        run_in(op, &mut OperatorContext::default(), steps)
    }

    /// [`run`] with the context `out`, which keeps the late-row count.
    fn run_in(op: &mut dyn Operator, out: &mut OperatorContext, steps: &[Step]) -> Vec<Emitted> {
        for step in steps {
            match step {
                Step::Rows(input, batch) => op.on_batch(*input, batch.clone(), out),
                Step::Watermark(w) => op.on_watermark(*w, out),
            }
            .unwrap();
        }
        emitted(out)
    }

    fn emitted(out: &mut OperatorContext) -> Vec<Emitted> {
        out.drain()
            .map(|m| match m {
                Message::Data(b) => Emitted::Rows(b),
                Message::Watermark(w) => Emitted::Watermark(w),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn held(op: &dyn Operator) -> Vec<usize> {
        op.state_usage().iter().map(|t| t.rows).collect()
    }

    pub fn output_rows(emitted: &[Emitted]) -> usize {
        emitted
            .iter()
            .map(|e| match e {
                Emitted::Rows(b) => b.num_rows(),
                Emitted::Watermark(_) => 0,
            })
            .sum()
    }

    /// Runs `steps` whole, and cut at every point: the prefix, a snapshot through the bytes
    /// of a checkpoint, a new operator restored from it (hearing the restored watermark
    /// again, as the runtime may send it), the rest. Both runs together must emit exactly
    /// what the whole run did, and count the same late rows; the operator that took the
    /// snapshot must carry on as if it had not. `make` builds an operator whose plan node
    /// declares `tables`. Returns the whole run's output.
    pub fn check_every_cut<O: Operator>(
        make: impl Fn() -> O,
        tables: &[StateTable],
        steps: &[Step],
    ) -> Vec<Emitted> {
        let mut whole_ctx = OperatorContext::default();
        let expected = run_in(&mut make(), &mut whole_ctx, steps);
        let expected_late = whole_ctx.late_rows();
        let mut cut_with_both_sides_held = false;
        for cut in 0..=steps.len() {
            let mut first = make();
            let mut first_ctx = OperatorContext::default();
            let mut got = run_in(&mut first, &mut first_ctx, &steps[..cut]);
            let late = first_ctx.late_rows();
            let rows_held = held(&first);
            cut_with_both_sides_held |= rows_held.iter().all(|r| *r > 0);
            let snapshot = first.snapshot(1).unwrap();
            snapshot.check_declared("a join", tables, &[]).unwrap();
            let snapshot = round_trip(&snapshot).unwrap();

            let mut carried_on = run(&mut first, &steps[cut..]);
            let mut before = run(&mut make(), &steps[..cut]);
            before.append(&mut carried_on);
            assert!(
                before == expected,
                "the snapshot at {cut} changed the operator"
            );

            let mut second = make();
            let mut second_ctx = OperatorContext::default();
            restore_declared(&mut second, tables, snapshot).unwrap();
            assert_eq!(
                held(&second),
                rows_held,
                "rows held after a restore at {cut}"
            );
            let repeated = steps[..cut].iter().rev().find_map(|s| match s {
                Step::Watermark(w) => Some(*w),
                Step::Rows(..) => None,
            });
            if let Some(w) = repeated {
                second.on_watermark(w, &mut second_ctx).unwrap();
                got.extend(emitted(&mut second_ctx));
            }
            got.extend(run_in(&mut second, &mut second_ctx, &steps[cut..]));
            assert!(
                got == expected,
                "restored at {cut} of {}:\n{got:#?}\nexpected\n{expected:#?}",
                steps.len()
            );
            assert_eq!(
                late + second_ctx.late_rows(),
                expected_late,
                "late rows with a restore at {cut}"
            );
        }
        assert!(expected_late > 0, "the stream has late rows");
        assert!(
            cut_with_both_sides_held,
            "some cut holds rows on both sides"
        );
        expected
    }
}
