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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::conform_batch;
use super::join_rows::{JoinKind, KeyEncoder, RowRef, gather, keep, residual_mask};
use super::window_aggregate::{BoundColumn, BoundValues};
use super::{Operator, OperatorInfo, Output};
use crate::error::EngineResult;
use crate::plan::window::{Span, WindowKind, take_closed};
use crate::runtime::message::EventTime;
use crate::state::StateTableInfo;

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
    late_rows: Arc<AtomicU64>,
}

impl WindowJoinOperator {
    pub fn new(info: OperatorInfo, spec: WindowJoinSpec, late_rows: Arc<AtomicU64>) -> Self {
        Self {
            info,
            spec,
            windows: BTreeMap::new(),
            watermark: None,
            late_rows,
        }
    }

    fn side(&self, input: usize) -> &WindowJoinSide {
        if input == 0 {
            &self.spec.left
        } else {
            &self.spec.right
        }
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
        _out: &mut Output,
    ) -> EngineResult<()> {
        let by_window = BoundValues::read(&self.side(input).bounds, &batch)?
            .rows_by_window(&self.spec.window, batch.num_rows());
        for (window, rows) in by_window {
            if window.closed_by(self.spec.lag, self.watermark) {
                self.late_rows
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
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

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output) -> EngineResult<()> {
        self.watermark = Some(watermark);
        for (_, rows) in take_closed(&mut self.windows, self.spec.lag, watermark) {
            for batch in self.join(rows)? {
                out.batch(batch);
            }
        }
        out.watermark(watermark);
        Ok(())
    }

    fn state_tables(&self) -> Vec<StateTableInfo> {
        let rows = |side: usize| -> usize {
            self.windows
                .values()
                .flat_map(|w| w.sides[side].iter().map(|b| b.num_rows()))
                .sum()
        };
        vec![
            StateTableInfo {
                name: "left_rows",
                key: vec!["window".to_string(), "join key".to_string()],
                rows: rows(0),
                bytes: 0,
            },
            StateTableInfo {
                name: "right_rows",
                key: vec!["window".to_string(), "join key".to_string()],
                rows: rows(1),
                bytes: 0,
            },
        ]
    }
}
