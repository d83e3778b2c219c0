//! `IntervalJoinOperator`: an equi-join of two streams whose event times are bounded against
//! each other, `lower <= left.ts - right.ts <= upper` (bounds in nanoseconds, inclusive; the
//! planner turns `<`/`>` into inclusive bounds one nanosecond in).
//!
//! Each arriving row is probed against the other side's stored rows with the same key and a
//! time in range, then stored itself. Joined rows are final the moment they are produced.
//!
//! State: each side's rows (by key and by time) and the batches holding them. The watermark
//! prunes it: a left row can meet only right rows later than the watermark, so it is dropped
//! once `ts - lower <= watermark`; a right row once `ts + upper <= watermark`. Memory is
//! therefore bounded by the interval. An outer join emits a pruned row that never matched,
//! padded with NULLs: that is when the watermark proves no partner can arrive. Lateness: a
//! row at or behind the watermark may have missed partners already pruned; it is dropped and
//! counted. Watermark: forwarded held back by the interval (`max(upper, -lower)`), because a
//! joined row can carry a time that far behind the input watermark.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::join_rows::{JoinKind, KeyEncoder, RowRef, gather, output_batch, residual_mask};
use super::{Operator, OperatorInfo, Output};
use crate::error::EngineResult;
use crate::runtime::message::{EventTime, WATERMARK_END};
use crate::state::StateTableInfo;

/// One side of an interval join.
pub struct IntervalSide {
    pub schema: SchemaRef,
    pub keys: KeyEncoder,
    /// The event-time column and nanoseconds per unit of it.
    pub time_index: usize,
    pub time_unit_ns: i64,
}

pub struct IntervalJoinSpec {
    pub kind: JoinKind,
    pub left: IntervalSide,
    pub right: IntervalSide,
    /// Inclusive bounds of `left.ts - right.ts`, in nanoseconds.
    pub lower: i64,
    pub upper: i64,
    /// Non-equi conditions besides the time bounds, over the joined row.
    pub residual: Option<Arc<dyn PhysicalExpr>>,
}

struct StoredRow {
    batch: u64,
    row: u32,
    ts: i64,
    key: Vec<u8>,
    matched: bool,
}

#[derive(Default)]
struct SideState {
    batches: HashMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    slots: Vec<Option<StoredRow>>,
    free: Vec<usize>,
    by_key: HashMap<Vec<u8>, Vec<usize>>,
    by_time: BTreeSet<(i64, usize)>,
}

impl SideState {
    fn insert(&mut self, stored: StoredRow) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Some(entry) = self.batches.get_mut(&stored.batch) {
            entry.1 += 1;
        }
        self.by_key
            .entry(stored.key.clone())
            .or_default()
            .push(slot);
        self.by_time.insert((stored.ts, slot));
        self.slots[slot] = Some(stored);
    }

    /// Removes every row with `ts <= bound`.
    fn prune(&mut self, bound: i64) {
        while let Some(&(ts, slot)) = self.by_time.first() {
            if ts > bound {
                break;
            }
            self.by_time.pop_first();
            let Some(stored) = self.slots[slot].take() else {
                continue;
            };
            self.free.push(slot);
            if let Some(slots) = self.by_key.get_mut(&stored.key) {
                if let Some(i) = slots.iter().position(|s| *s == slot) {
                    slots.swap_remove(i);
                }
                if slots.is_empty() {
                    self.by_key.remove(&stored.key);
                }
            }
            self.release(stored.batch);
        }
    }

    fn release(&mut self, batch: u64) {
        if let Some(entry) = self.batches.get_mut(&batch) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.batches.remove(&batch);
            }
        }
    }

    fn rows(&self) -> usize {
        self.by_time.len()
    }
}

pub struct IntervalJoinOperator {
    info: OperatorInfo,
    spec: IntervalJoinSpec,
    state: [SideState; 2],
    watermark: Option<EventTime>,
    late_rows: Arc<AtomicU64>,
}

/// Input 0 is the left side, input 1 the right.
const LEFT: usize = 0;

impl IntervalJoinOperator {
    pub fn new(info: OperatorInfo, spec: IntervalJoinSpec, late_rows: Arc<AtomicU64>) -> Self {
        Self {
            info,
            spec,
            state: [SideState::default(), SideState::default()],
            watermark: None,
            late_rows,
        }
    }

    fn side(&self, input: usize) -> &IntervalSide {
        if input == LEFT {
            &self.spec.left
        } else {
            &self.spec.right
        }
    }

    /// Joined rows of the given (left, right) references; `batches` resolves batch ids.
    fn joined(
        &self,
        left: (&[&RecordBatch], &[RowRef]),
        right: (&[&RecordBatch], &[RowRef]),
    ) -> EngineResult<RecordBatch> {
        let mut columns = gather(&self.spec.left.schema, left.0, left.1)?;
        columns.extend(gather(&self.spec.right.schema, right.0, right.1)?);
        output_batch(&self.info.schema, columns)
    }

    /// Rows of `side` that never matched, padded with NULLs on the other side.
    fn padded(&self, side: usize, rows: &[(u64, u32)]) -> EngineResult<RecordBatch> {
        let state = &self.state[side];
        let mut ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let batches: Vec<&RecordBatch> = ids.iter().map(|id| &state.batches[id].0).collect();
        let refs: Vec<RowRef> = rows
            .iter()
            .map(|(id, row)| Some((ids.binary_search(id).unwrap_or(0), *row as usize)))
            .collect();
        let none: Vec<RowRef> = vec![None; rows.len()];
        if side == LEFT {
            self.joined((&batches, &refs), (&[], &none))
        } else {
            self.joined((&[], &none), (&batches, &refs))
        }
    }
}

impl Operator for IntervalJoinOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> EngineResult<()> {
        let other = 1 - input;
        let side = self.side(input);
        let times = cast(batch.column(side.time_index), &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let unit = side.time_unit_ns;
        let (keys, key_valid) = side.keys.encode(&batch)?;
        let (lower, upper) = (self.spec.lower, self.spec.upper);
        // Candidate pairs: (row of this batch, slot of the other side).
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let mut on_time: Vec<(usize, i64)> = Vec::new();
        let mut unjoinable: Vec<usize> = Vec::new();
        for (row, key_ok) in key_valid.iter().enumerate() {
            let Some(ts) = times
                .is_valid(row)
                .then(|| times.value(row).checked_mul(unit))
                .flatten()
            else {
                unjoinable.push(row);
                continue;
            };
            if self.watermark.is_some_and(|wm| ts <= wm) {
                self.late_rows.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            on_time.push((row, ts));
            if !key_ok {
                continue;
            }
            let Some(slots) = self.state[other].by_key.get(keys.row(row).as_ref()) else {
                continue;
            };
            for &slot in slots {
                let Some(stored) = &self.state[other].slots[slot] else {
                    continue;
                };
                let diff = if input == LEFT {
                    ts as i128 - stored.ts as i128
                } else {
                    stored.ts as i128 - ts as i128
                };
                if diff >= lower as i128 && diff <= upper as i128 {
                    pairs.push((row, slot));
                }
            }
        }
        let mut matched_here = vec![false; batch.num_rows()];
        if !pairs.is_empty() {
            let other_state = &self.state[other];
            let mut ids: Vec<u64> = pairs
                .iter()
                .filter_map(|(_, s)| other_state.slots[*s].as_ref().map(|r| r.batch))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let other_batches: Vec<&RecordBatch> =
                ids.iter().map(|id| &other_state.batches[id].0).collect();
            let this_refs: Vec<RowRef> = pairs.iter().map(|(r, _)| Some((0, *r))).collect();
            let other_refs: Vec<RowRef> = pairs
                .iter()
                .map(|(_, s)| {
                    other_state.slots[*s]
                        .as_ref()
                        .map(|r| (ids.binary_search(&r.batch).unwrap_or(0), r.row as usize))
                })
                .collect();
            let this_batches = [&batch];
            let joined = if input == LEFT {
                self.joined((&this_batches, &this_refs), (&other_batches, &other_refs))?
            } else {
                self.joined((&other_batches, &other_refs), (&this_batches, &this_refs))?
            };
            let (joined, kept) = match &self.spec.residual {
                Some(residual) => {
                    let mask = residual_mask(residual, &joined)?;
                    let kept: Vec<bool> = mask.iter().map(|v| v == Some(true)).collect();
                    (super::join_rows::keep(&joined, &mask)?, kept)
                }
                None => (joined, vec![true; pairs.len()]),
            };
            for ((row, slot), kept) in pairs.iter().zip(kept) {
                if kept {
                    matched_here[*row] = true;
                    if let Some(stored) = self.state[other].slots[*slot].as_mut() {
                        stored.matched = true;
                    }
                }
            }
            out.batch(joined);
        }
        // Rows that can never join (NULL time) are padded at once by an outer join.
        let pads = if input == LEFT {
            self.spec.kind.pads_left()
        } else {
            self.spec.kind.pads_right()
        };
        // Store this batch's on-time rows for the other side's future rows.
        let id = self.state[input].next_batch;
        self.state[input].next_batch += 1;
        self.state[input].batches.insert(id, (batch.clone(), 0));
        if pads && !unjoinable.is_empty() {
            let rows: Vec<(u64, u32)> = unjoinable.iter().map(|r| (id, *r as u32)).collect();
            let padded = self.padded(input, &rows)?;
            out.batch(padded);
        }
        for (row, ts) in on_time {
            let key = if key_valid[row] {
                keys.row(row).as_ref().to_vec()
            } else {
                // A NULL key never matches: store it apart (padding and pruning only).
                Vec::new()
            };
            self.state[input].insert(StoredRow {
                batch: id,
                row: row as u32,
                ts,
                key,
                matched: matched_here[row],
            });
        }
        if self.state[input].batches.get(&id).is_some_and(|e| e.1 == 0) {
            self.state[input].batches.remove(&id);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output) -> EngineResult<()> {
        self.watermark = Some(watermark);
        let (lower, upper) = (self.spec.lower, self.spec.upper);
        let bounds = [
            watermark.saturating_add(lower),
            watermark.saturating_sub(upper),
        ];
        for side in [0, 1] {
            let bound = if watermark == WATERMARK_END {
                i64::MAX
            } else {
                bounds[side]
            };
            // Pad before pruning releases the batches.
            let pads = if side == LEFT {
                self.spec.kind.pads_left()
            } else {
                self.spec.kind.pads_right()
            };
            let unmatched: Vec<(u64, u32)> = {
                let state = &self.state[side];
                state
                    .by_time
                    .iter()
                    .take_while(|(ts, _)| *ts <= bound)
                    .filter_map(|(_, slot)| state.slots[*slot].as_ref())
                    .filter(|r| !r.matched)
                    .map(|r| (r.batch, r.row))
                    .collect()
            };
            if pads && !unmatched.is_empty() {
                let padded = self.padded(side, &unmatched)?;
                out.batch(padded);
            }
            self.state[side].prune(bound);
        }
        let delay = upper.max(lower.saturating_neg()).max(0);
        out.watermark(if watermark == WATERMARK_END {
            WATERMARK_END
        } else {
            watermark.saturating_sub(delay)
        });
        Ok(())
    }

    fn state_tables(&self) -> Vec<StateTableInfo> {
        ["left_rows", "right_rows"]
            .into_iter()
            .zip(&self.state)
            .map(|(name, s)| StateTableInfo {
                name,
                key: vec!["join key".to_string(), "event time".to_string()],
                rows: s.rows(),
                bytes: s
                    .batches
                    .values()
                    .map(|(b, _)| b.get_array_memory_size())
                    .sum(),
            })
            .collect()
    }
}
