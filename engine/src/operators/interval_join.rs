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
//!
//! Snapshot: table `interval_join` holds the watermark; tables `left_rows` and `right_rows`
//! hold each side's stored rows in arrival order, one batch per batch holding them (its
//! columns, `take`n, plus a last column `matched`: whether the row has joined, which decides
//! an outer join's padding). Restore re-inserts them in that order, so later probes and
//! pruning (and the order of what they emit) are those of the original; keys, times and
//! hashes are recomputed from the rows.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::Rows;
use datafusion::common::HashMap;
use datafusion::common::hash_utils::RandomState;
use datafusion::physical_expr::PhysicalExpr;

use super::conform_batch;
use super::join_rows::{
    JoinKind, KeyEncoder, RowRef, SIDE_TABLES, gather, residual_mask, restore_join_watermark,
};
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::Epoch;
use crate::runtime::message::{EventTime, WATERMARK_END};
use crate::state::{StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot table of the operator's values (its watermark).
const META_TABLE: &str = "interval_join";
/// The last column of a snapshot's stored rows: whether the row has joined.
const MATCHED: &str = "matched";

/// The state tables of an interval join on `left_keys = right_keys` (as the plan names them).
pub fn state_tables(left_keys: &[String], right_keys: &[String]) -> Vec<StateTable> {
    super::join_rows::join_state_tables(
        META_TABLE,
        left_keys,
        right_keys,
        "event time",
        "rows within the interval",
    )
}

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

/// No slot: the end of a key's list.
const NONE: usize = usize::MAX;

/// Hashes encoded keys, the same for both sides, so a row's hash serves its probe and its
/// insertion.
const KEY_HASHER: RandomState = RandomState::with_seed(0x1a7e_5a1d);

fn key_hash(key: &[u8]) -> u64 {
    KEY_HASHER.hash_one(key)
}

struct StoredRow {
    batch: u64,
    row: u32,
    ts: i64,
    /// Arrival order on this side: pruning takes rows by (time, arrival), so the order in
    /// which rows are pruned (and padded) depends on nothing but the rows held.
    seq: u64,
    /// The key has a NULL: stored apart, never matched.
    null_key: bool,
    matched: bool,
    /// The hash of the encoded key ([`key_hash`]; unused for a NULL key), and the neighbours
    /// in that hash's list of slots.
    key_hash: u64,
    prev: usize,
    next: usize,
}

/// A stored batch: its rows, their encoded keys, and how many stored rows refer to it.
type StoredBatch = (RecordBatch, usize, Rows);

/// The stored rows of one side.
///
/// Rows live in `slots`. Each key hash has a doubly linked list of its slots in arrival order
/// (rows of different keys with equal hashes share one; probes compare the keys), so storing
/// and pruning a row allocate nothing for its key. For pruning by time, rows that arrive in
/// time order queue up at O(1) each; only rows older than the newest before them go to a
/// min-heap. Both orders (probing: arrival; pruning: time, then arrival) are functions of the
/// rows held and their arrival order alone, so re-inserting a snapshot's rows in arrival order
/// rebuilds a state that behaves the same.
#[derive(Default)]
struct SideState {
    batches: HashMap<u64, StoredBatch>,
    next_batch: u64,
    next_seq: u64,
    slots: Vec<Option<StoredRow>>,
    free: Vec<usize>,
    /// Per key hash: its list's first and last slot.
    by_key: HashMap<u64, (usize, usize)>,
    /// (time, arrival, slot) of the rows that arrived in time order, oldest first.
    in_order: VecDeque<(i64, u64, usize)>,
    /// (time, arrival, slot) of the others.
    out_of_order: BinaryHeap<Reverse<(i64, u64, usize)>>,
}

impl SideState {
    /// The encoded key of a stored row.
    fn key_of(&self, stored: &StoredRow) -> Option<&[u8]> {
        let (_, _, keys) = self.batches.get(&stored.batch)?;
        Some(keys.row(stored.row as usize).data())
    }

    /// The slots whose rows have exactly `key` (whose [`key_hash`] is `hash`), in arrival
    /// order.
    fn matching<'a>(
        &'a self,
        key: &'a [u8],
        hash: u64,
    ) -> impl Iterator<Item = (usize, &'a StoredRow)> + 'a {
        let mut next = self.by_key.get(&hash).map_or(NONE, |(head, _)| *head);
        std::iter::from_fn(move || {
            while next != NONE {
                let slot = next;
                let stored = self.slots[slot].as_ref()?;
                next = stored.next;
                if self.key_of(stored) == Some(key) {
                    return Some((slot, stored));
                }
            }
            None
        })
    }

    /// Stores a row; it gets the next arrival number.
    fn insert(&mut self, mut stored: StoredRow) {
        stored.seq = self.next_seq;
        self.next_seq += 1;
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
        if !stored.null_key {
            match self.by_key.get_mut(&stored.key_hash) {
                Some((_, tail)) => {
                    stored.prev = *tail;
                    let before = std::mem::replace(tail, slot);
                    if let Some(previous) = self.slots[before].as_mut() {
                        previous.next = slot;
                    }
                }
                None => {
                    self.by_key.insert(stored.key_hash, (slot, slot));
                }
            }
        }
        let entry = (stored.ts, stored.seq, slot);
        match self.in_order.back() {
            Some(&(newest, _, _)) if stored.ts < newest => self.out_of_order.push(Reverse(entry)),
            _ => self.in_order.push_back(entry),
        }
        self.slots[slot] = Some(stored);
    }

    /// Takes the slots of every row with `ts <= bound` off the time order, oldest first; they
    /// stay readable until [`Self::remove`].
    fn expired(&mut self, bound: i64) -> Vec<usize> {
        let mut slots = Vec::new();
        loop {
            let queued = self.in_order.front().copied();
            let heaped = self.out_of_order.peek().map(|Reverse(e)| *e);
            let oldest = match (queued, heaped) {
                (Some(q), Some(h)) => q.min(h),
                (Some(e), None) | (None, Some(e)) => e,
                (None, None) => break,
            };
            if oldest.0 > bound {
                break;
            }
            if queued == Some(oldest) {
                self.in_order.pop_front();
            } else {
                self.out_of_order.pop();
            }
            slots.push(oldest.2);
        }
        slots
    }

    /// Removes the rows of `slots` (from [`Self::expired`]).
    fn remove(&mut self, slots: &[usize]) {
        for &slot in slots {
            let Some(stored) = self.slots[slot].take() else {
                continue;
            };
            self.free.push(slot);
            if !stored.null_key {
                if stored.prev != NONE
                    && let Some(previous) = self.slots[stored.prev].as_mut()
                {
                    previous.next = stored.next;
                }
                if stored.next != NONE
                    && let Some(next) = self.slots[stored.next].as_mut()
                {
                    next.prev = stored.prev;
                }
                match (stored.prev, stored.next) {
                    (NONE, NONE) => {
                        self.by_key.remove(&stored.key_hash);
                    }
                    (NONE, next) => {
                        if let Some(ends) = self.by_key.get_mut(&stored.key_hash) {
                            ends.0 = next;
                        }
                    }
                    (prev, NONE) => {
                        if let Some(ends) = self.by_key.get_mut(&stored.key_hash) {
                            ends.1 = prev;
                        }
                    }
                    _ => {}
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
        self.in_order.len() + self.out_of_order.len()
    }

    /// The rows held, in arrival order, as one batch per batch holding them (the rows
    /// `take`n from it, plus a last column [`MATCHED`]).
    fn export(&self) -> EngineResult<Vec<RecordBatch>> {
        let mut rows: Vec<&StoredRow> = self.slots.iter().flatten().collect();
        rows.sort_unstable_by_key(|r| r.seq);
        let mut out = Vec::new();
        // A batch's rows were stored together, in row order.
        for run in rows.chunk_by(|a, b| a.batch == b.batch) {
            let Some((batch, _, _)) = run.first().and_then(|r| self.batches.get(&r.batch)) else {
                return Err(EngineError::Internal(
                    "interval join: a stored row outlived its batch".to_string(),
                ));
            };
            let whole = run.len() == batch.num_rows()
                && run.iter().enumerate().all(|(i, r)| r.row as usize == i);
            let taken = if whole {
                batch.clone()
            } else {
                take_record_batch(
                    batch,
                    &UInt32Array::from_iter_values(run.iter().map(|r| r.row)),
                )?
            };
            let mut fields = taken.schema().fields().to_vec();
            fields.push(Arc::new(Field::new(MATCHED, DataType::Boolean, false)));
            let mut columns = taken.columns().to_vec();
            columns.push(Arc::new(BooleanArray::from_iter(
                run.iter().map(|r| Some(r.matched)),
            )));
            out.push(RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns,
            )?);
        }
        Ok(out)
    }
}

/// The event times of a side's rows in nanoseconds; `None` where NULL or out of range.
fn event_times(side: &IntervalSide, batch: &RecordBatch) -> EngineResult<Vec<Option<i64>>> {
    let times = cast(batch.column(side.time_index), &DataType::Int64)?;
    let times = times.as_primitive::<Int64Type>();
    Ok((0..batch.num_rows())
        .map(|row| {
            times
                .is_valid(row)
                .then(|| times.value(row).checked_mul(side.time_unit_ns))
                .flatten()
        })
        .collect())
}

pub struct IntervalJoinOperator {
    info: OperatorInfo,
    spec: IntervalJoinSpec,
    state: [SideState; 2],
    watermark: Option<EventTime>,
}

/// Input 0 is the left side, input 1 the right.
const LEFT: usize = 0;

impl IntervalJoinOperator {
    pub fn new(info: OperatorInfo, spec: IntervalJoinSpec) -> Self {
        Self {
            info,
            spec,
            state: [SideState::default(), SideState::default()],
            watermark: None,
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
        conform_batch(&self.info.schema, columns)
    }

    /// Re-inserts the rows of a snapshot's table of `input`, in their order.
    fn restore_side(&mut self, input: usize, batches: Vec<RecordBatch>) -> EngineResult<()> {
        let table = SIDE_TABLES[input];
        for batch in batches {
            let side = self.side(input);
            let width = side.schema.fields().len();
            let schema = batch.schema();
            let shaped = schema.fields().len() == width + 1
                && schema
                    .fields()
                    .iter()
                    .zip(side.schema.fields())
                    .all(|(f, expected)| f.data_type() == expected.data_type());
            let matched = batch
                .columns()
                .get(width)
                .and_then(|c| c.as_boolean_opt())
                .filter(|m| m.null_count() == 0);
            let (true, Some(matched)) = (shaped, matched) else {
                return Err(corrupt(format!(
                    "{table} of an interval join has columns {:?}, not those of the side \
                     and `{MATCHED}`",
                    schema
                        .fields()
                        .iter()
                        .map(|f| format!("{}: {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                )));
            };
            let matched = matched.clone();
            let rows = RecordBatch::try_new(
                Arc::new(Schema::new(schema.fields()[..width].to_vec())),
                batch.columns()[..width].to_vec(),
            )?;
            let times = event_times(side, &rows)?;
            let (keys, key_valid) = side.keys.encode(&rows)?;
            let hashes: Vec<u64> = (0..rows.num_rows())
                .map(|row| {
                    if key_valid[row] {
                        key_hash(keys.row(row).data())
                    } else {
                        0
                    }
                })
                .collect();
            let state = &mut self.state[input];
            let id = state.next_batch;
            state.next_batch += 1;
            state.batches.insert(id, (rows, 0, keys));
            for (row, ts) in times.into_iter().enumerate() {
                let Some(ts) = ts else {
                    return Err(corrupt(format!("{table} holds a row without a time")));
                };
                state.insert(StoredRow {
                    batch: id,
                    row: row as u32,
                    ts,
                    seq: 0,
                    null_key: !key_valid[row],
                    matched: matched.value(row),
                    key_hash: hashes[row],
                    prev: NONE,
                    next: NONE,
                });
            }
            if state.batches.get(&id).is_some_and(|e| e.1 == 0) {
                state.batches.remove(&id);
            }
        }
        Ok(())
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

    fn on_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let other = 1 - input;
        let side = self.side(input);
        let times = event_times(side, &batch)?;
        let (keys, key_valid) = side.keys.encode(&batch)?;
        let (lower, upper) = (self.spec.lower, self.spec.upper);
        // Candidate pairs: (row of this batch, slot of the other side).
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        // Rows to store: (row, time, key hash).
        let mut on_time: Vec<(usize, i64, u64)> = Vec::new();
        let mut unjoinable: Vec<usize> = Vec::new();
        let mut late = Vec::new();
        for (row, key_ok) in key_valid.iter().enumerate() {
            let Some(ts) = times[row] else {
                unjoinable.push(row);
                continue;
            };
            if self.watermark.is_some_and(|wm| ts <= wm) {
                late.push((row, Some(ts)));
                continue;
            }
            if !key_ok {
                on_time.push((row, ts, 0));
                continue;
            }
            let key = keys.row(row).data();
            let hash = key_hash(key);
            on_time.push((row, ts, hash));
            for (slot, stored) in self.state[other].matching(key, hash) {
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
        out.drop_late(&batch, &late)?;
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
        self.state[input]
            .batches
            .insert(id, (batch.clone(), 0, keys));
        if pads && !unjoinable.is_empty() {
            let rows: Vec<(u64, u32)> = unjoinable.iter().map(|r| (id, *r as u32)).collect();
            let padded = self.padded(input, &rows)?;
            out.batch(padded);
        }
        for (row, ts, hash) in on_time {
            // A NULL key never matches: stored apart (for padding and pruning only).
            self.state[input].insert(StoredRow {
                batch: id,
                row: row as u32,
                ts,
                null_key: !key_valid[row],
                matched: matched_here[row],
                seq: 0,
                key_hash: hash,
                prev: NONE,
                next: NONE,
            });
        }
        if self.state[input].batches.get(&id).is_some_and(|e| e.1 == 0) {
            self.state[input].batches.remove(&id);
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
            let expired = self.state[side].expired(bound);
            let unmatched: Vec<(u64, u32)> = if !pads {
                Vec::new()
            } else {
                let state = &self.state[side];
                expired
                    .iter()
                    .filter_map(|slot| state.slots[*slot].as_ref())
                    .filter(|r| !r.matched)
                    .map(|r| (r.batch, r.row))
                    .collect()
            };
            if pads && !unmatched.is_empty() {
                let padded = self.padded(side, &unmatched)?;
                out.batch(padded);
            }
            self.state[side].remove(&expired);
        }
        let delay = upper.max(lower.saturating_neg()).max(0);
        out.watermark(if watermark == WATERMARK_END {
            WATERMARK_END
        } else {
            watermark.saturating_sub(delay)
        });
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        SIDE_TABLES
            .into_iter()
            .zip(&self.state)
            .map(|(table, s)| StateUsage {
                table,
                rows: s.rows(),
                bytes: s
                    .batches
                    .values()
                    .map(|(b, _, keys)| b.get_array_memory_size() + keys.size())
                    .sum(),
            })
            .collect()
    }

    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(META_TABLE, &[("watermark", self.watermark)])?;
        for (state, table) in self.state.iter().zip(SIDE_TABLES) {
            for batch in state.export()? {
                snapshot.add(table, batch)?;
            }
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        if self.watermark.is_some() || self.state.iter().any(|s| s.rows() > 0) {
            return Err(EngineError::Internal(
                "interval join: restore into an operator that already ran".to_string(),
            ));
        }
        let watermark = restore_join_watermark(&snapshot, "an interval join", META_TABLE)?;
        for (input, table) in SIDE_TABLES.into_iter().enumerate() {
            self.restore_side(input, snapshot.table(table))?;
        }
        self.watermark = watermark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::runtime::message::Message;

    const MS: i64 = 1_000_000;

    fn schema(name: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{name}_k"), DataType::Int64, true),
            Field::new(
                format!("{name}_ts"),
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]))
    }

    fn side(name: &str) -> IntervalSide {
        IntervalSide {
            schema: schema(name),
            keys: KeyEncoder::try_new(vec![Arc::new(Column::new("k", 0))], &[DataType::Int64])
                .unwrap(),
            time_index: 1,
            time_unit_ns: MS,
        }
    }

    /// `lower <= l.ts - r.ts <= upper` (milliseconds).
    fn join(kind: JoinKind, lower: i64, upper: i64) -> IntervalJoinOperator {
        let mut fields = schema("l").fields().to_vec();
        fields.extend(schema("r").fields().iter().cloned());
        IntervalJoinOperator::new(
            OperatorInfo {
                name: "IntervalJoin".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            IntervalJoinSpec {
                kind,
                left: side("l"),
                right: side("r"),
                lower: lower * MS,
                upper: upper * MS,
                residual: None,
            },
        )
    }

    fn batch(name: &str, rows: &[(Option<i64>, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(name),
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap()
    }

    /// Joined rows as (left ts, right ts) in ms, NULL padding as None; and the watermarks.
    /// A joined row as (left ts, right ts) in ms; None is NULL padding.
    type Pair = (Option<i64>, Option<i64>);

    fn drain(out: &mut OperatorContext) -> (Vec<Pair>, Vec<i64>) {
        let (mut rows, mut watermarks) = (Vec::new(), Vec::new());
        for m in out.drain() {
            match m {
                Message::Data(b) => {
                    let l = b
                        .column(1)
                        .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
                    let r = b
                        .column(3)
                        .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
                    for i in 0..b.num_rows() {
                        rows.push((
                            l.is_valid(i).then(|| l.value(i)),
                            r.is_valid(i).then(|| r.value(i)),
                        ));
                    }
                }
                Message::Watermark(w) => watermarks.push(w),
                _ => {}
            }
        }
        rows.sort();
        (rows, watermarks)
    }

    #[test]
    fn bounds_are_inclusive_and_asymmetric_in_either_arrival_order() {
        // 1 s <= l.ts - r.ts <= 3 s.
        for left_first in [true, false] {
            let mut op = join(JoinKind::Inner, 1000, 3000);
            let mut out = OperatorContext::default();
            let left = batch(
                "l",
                &[
                    (Some(1), 10_999),
                    (Some(1), 11_000),
                    (Some(1), 13_000),
                    (Some(1), 13_001),
                ],
            );
            let right = batch("r", &[(Some(1), 10_000), (Some(2), 12_000)]);
            if left_first {
                op.on_batch(0, left, &mut out).unwrap();
                op.on_batch(1, right, &mut out).unwrap();
            } else {
                op.on_batch(1, right, &mut out).unwrap();
                op.on_batch(0, left, &mut out).unwrap();
            }
            let (rows, _) = drain(&mut out);
            assert_eq!(
                rows,
                vec![(Some(11_000), Some(10_000)), (Some(13_000), Some(10_000))],
                "left first: {left_first}"
            );
        }
    }

    #[test]
    fn the_watermark_prunes_state_and_pads_outer_rows_once_final() {
        // -5 s <= l.ts - r.ts <= 6 s (Flink's example), FULL OUTER.
        let mut op = join(JoinKind::Full, -5000, 6000);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch("l", &[(Some(1), 1_000), (None, 2_000)]), &mut out)
            .unwrap();
        op.on_batch(1, batch("r", &[(Some(2), 1_000)]), &mut out)
            .unwrap();
        // The left row at 1 s can meet right rows up to 1 s + 5 s: still open at W = 5.999 s.
        op.on_watermark(5_999 * MS, &mut out).unwrap();
        assert_eq!(drain(&mut out).0, vec![]);
        // W = 6 s: the left row at 1 s is final (ts - lower <= W): padded. The one at 2 s (a
        // NULL key, it can never match) waits for W = 7 s like any other; the right row at
        // 1 s waits until W >= 1 s + 6 s.
        op.on_watermark(6_000 * MS, &mut out).unwrap();
        let (rows, watermarks) = drain(&mut out);
        assert_eq!(rows, vec![(Some(1_000), None)]);
        // The output watermark is held back by max(upper, -lower) = 6 s.
        assert_eq!(watermarks, vec![0]);
        assert_eq!(
            op.state_usage()[0].rows,
            1,
            "left state pruned to the open row"
        );
        assert_eq!(op.state_usage()[1].rows, 1);
        op.on_watermark(WATERMARK_END, &mut out).unwrap();
        let (rows, watermarks) = drain(&mut out);
        assert_eq!(rows, vec![(None, Some(1_000)), (Some(2_000), None)]);
        assert_eq!(watermarks, vec![WATERMARK_END]);
        assert_eq!(op.state_usage()[0].rows, 0);
        assert_eq!(op.state_usage()[1].rows, 0);
    }

    #[test]
    fn state_stays_bounded_by_the_interval() {
        let mut op = join(JoinKind::Inner, -1000, 1000);
        let mut out = OperatorContext::default();
        let mut most = 0;
        for second in 0..200i64 {
            let rows: Vec<(Option<i64>, i64)> = (0..10)
                .map(|i| (Some(i), second * 1000 + i * 100))
                .collect();
            op.on_batch(0, batch("l", &rows), &mut out).unwrap();
            op.on_batch(1, batch("r", &rows), &mut out).unwrap();
            op.on_watermark((second * 1000 + 900) * MS, &mut out)
                .unwrap();
            let held: usize = op.state_usage().iter().map(|t| t.rows).sum();
            most = most.max(held);
            drain(&mut out);
        }
        assert!(
            most <= 60,
            "state grew to {most} rows; the interval holds about 40"
        );
        assert!(op.state[0].batches.len() <= 4, "old batches are released");
    }

    #[test]
    fn null_keys_never_match_and_late_rows_are_dropped() {
        let mut op = join(JoinKind::Left, -1000, 1000);
        let mut out = OperatorContext::default();
        op.on_batch(1, batch("r", &[(None, 5_000)]), &mut out)
            .unwrap();
        op.on_batch(0, batch("l", &[(None, 5_000)]), &mut out)
            .unwrap();
        assert_eq!(drain(&mut out).0, vec![]);
        op.on_watermark(7_000 * MS, &mut out).unwrap();
        // The NULL-key left row is padded once final; the NULL-key right row is not emitted
        // by a LEFT join.
        assert_eq!(drain(&mut out).0, vec![(Some(5_000), None)]);
        op.on_batch(0, batch("l", &[(Some(1), 7_000)]), &mut out)
            .unwrap();
        assert_eq!(out.late_rows(), 1);
    }

    // Snapshot and restore.

    use super::super::join_rows::checkpoint_tests::{Lcg, Step, check_every_cut, output_rows, run};
    use crate::operators::checkpoint_harness::restore_declared;
    use crate::state::checkpoint::round_trip;
    use datafusion::arrow::array::StringArray;
    use datafusion::logical_expr::Operator as BinaryOp;
    use datafusion::physical_expr::expressions::{binary, col};

    fn valued_schema(name: &str) -> SchemaRef {
        let mut fields = schema(name).fields().to_vec();
        fields.push(Arc::new(Field::new(
            format!("{name}_v"),
            DataType::Utf8,
            true,
        )));
        Arc::new(Schema::new(fields))
    }

    /// A join of (k, ts, v) rows, `lower <= l.ts - r.ts <= upper` (ms), with `l_v <> r_v` as
    /// residual condition if `residual`.
    fn valued_join(kind: JoinKind, lower: i64, upper: i64, residual: bool) -> IntervalJoinOperator {
        let (left, right) = (valued_schema("l"), valued_schema("r"));
        let fields: Vec<_> = left
            .fields()
            .iter()
            .chain(right.fields().iter())
            .cloned()
            .collect();
        let joined = Schema::new(fields);
        let residual = residual.then(|| {
            binary(
                col("l_v", &joined).unwrap(),
                BinaryOp::NotEq,
                col("r_v", &joined).unwrap(),
                &joined,
            )
            .unwrap()
        });
        let side = |schema: &SchemaRef| IntervalSide {
            schema: Arc::clone(schema),
            keys: KeyEncoder::try_new(vec![Arc::new(Column::new("k", 0))], &[DataType::Int64])
                .unwrap(),
            time_index: 1,
            time_unit_ns: MS,
        };
        IntervalJoinOperator::new(
            OperatorInfo {
                name: "IntervalJoin".to_string(),
                schema: Arc::new(joined),
            },
            IntervalJoinSpec {
                kind,
                left: side(&left),
                right: side(&right),
                lower: lower * MS,
                upper: upper * MS,
                residual,
            },
        )
    }

    fn declared() -> Vec<StateTable> {
        state_tables(&["k".to_string()], &["k".to_string()])
    }

    /// A random stream of both sides: keys 0..3 (some NULL), times on a 100 ms grid (so rows
    /// tie) around a clock with disorder (so some rows are late), values a..c (some NULL),
    /// a few NULL times, watermarks 500 ms behind the clock, then the end of input.
    fn random_steps(seed: u64, len: usize) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut clock: i64 = 10_000;
        let mut watermark = i64::MIN;
        let mut steps = Vec::new();
        while steps.len() < len {
            if rng.below(10) < 7 {
                let input = rng.below(2) as usize;
                let n = 1 + rng.below(4) as usize;
                let mut keys = Vec::new();
                let mut times = Vec::new();
                let mut values = Vec::new();
                for _ in 0..n {
                    keys.push((rng.below(8) != 0).then(|| rng.below(3) as i64));
                    let ts = clock - 600 + rng.below(10) as i64 * 100;
                    times.push((rng.below(20) != 0).then_some(ts / 100 * 100));
                    values
                        .push((rng.below(6) != 0).then(|| ["a", "b", "c"][rng.below(3) as usize]));
                }
                let name = ["l", "r"][input];
                let batch = RecordBatch::try_new(
                    valued_schema(name),
                    vec![
                        Arc::new(Int64Array::from(keys)),
                        Arc::new(TimestampMillisecondArray::from(times)),
                        Arc::new(StringArray::from(values)),
                    ],
                )
                .unwrap();
                steps.push(Step::Rows(input, batch));
                clock += rng.below(300) as i64;
            } else if (clock - 500) * MS > watermark {
                watermark = (clock - 500) * MS;
                steps.push(Step::Watermark(watermark));
            }
        }
        steps.push(Step::Watermark(WATERMARK_END));
        steps
    }

    #[test]
    fn a_restored_join_emits_what_the_uninterrupted_one_did_at_every_cut() {
        for seed in [1, 2, 3] {
            let steps = random_steps(seed, 40);
            for residual in [false, true] {
                let mut rows = Vec::new();
                for kind in [
                    JoinKind::Inner,
                    JoinKind::Left,
                    JoinKind::Right,
                    JoinKind::Full,
                ] {
                    let out = check_every_cut(
                        || valued_join(kind, -300, 500, residual),
                        &declared(),
                        &steps,
                    );
                    rows.push(output_rows(&out));
                }
                let [inner, left, right, full] = rows[..] else {
                    unreachable!()
                };
                assert!(inner > 0, "seed {seed}: rows join");
                assert!(
                    left > inner && right > inner,
                    "seed {seed}: outer rows are padded"
                );
                assert_eq!(full + inner, left + right, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_restore_keeps_the_order_of_tied_rows() {
        // Rows at equal times, several keys, arriving out of time order, stored in slots that
        // pruning freed: the padding of a FULL join after the restore lists them as the
        // original would.
        let rows = |name: &str, keys: &[i64], times: &[i64]| {
            Step::Rows(
                usize::from(name == "r"),
                RecordBatch::try_new(
                    valued_schema(name),
                    vec![
                        Arc::new(Int64Array::from(keys.to_vec())),
                        Arc::new(TimestampMillisecondArray::from(times.to_vec())),
                        Arc::new(StringArray::from(vec!["x"; keys.len()])),
                    ],
                )
                .unwrap(),
            )
        };
        let steps = vec![
            rows("l", &[1, 2, 3, 1], &[2_000, 1_000, 2_000, 1_000]),
            rows("r", &[9, 8], &[1_000, 1_000]),
            rows("l", &[2, 3], &[1_000, 3_000]),
            Step::Watermark(1_500 * MS),
            rows("r", &[1, 7, 3], &[2_000, 2_000, 1_900]),
            // Stored in the slots of the three left rows at 1 s, in reverse; the row at 1.2 s
            // is late.
            rows("l", &[5, 6, 4, 1], &[2_000, 2_000, 2_000, 1_200]),
            rows("l", &[7, 3], &[1_900, 2_000]),
            Step::Watermark(2_600 * MS),
            Step::Watermark(WATERMARK_END),
        ];
        for residual in [false, true] {
            check_every_cut(
                || valued_join(JoinKind::Full, -100, 100, residual),
                &declared(),
                &steps,
            );
        }
    }

    #[test]
    fn snapshots_of_another_shape_are_refused() {
        let restore = |snapshot: StateSnapshot| {
            restore_declared(
                &mut valued_join(JoinKind::Full, -300, 500, true),
                &declared(),
                snapshot,
            )
        };
        let refused = |result: EngineResult<()>, what: &str| match result {
            Err(EngineError::Checkpoint(_)) => {}
            other => panic!("{what}: {other:?}"),
        };
        // A good one, to take apart.
        let mut op = valued_join(JoinKind::Full, -300, 500, true);
        let steps = random_steps(7, 12);
        run(&mut op, &steps[..steps.len() - 1]);
        let good = op.snapshot(1).unwrap();
        assert!(!good.table("left_rows").is_empty());
        restore(round_trip(&good).unwrap()).unwrap();

        refused(restore(StateSnapshot::new()), "no watermark");
        refused(restore(good.clone().without(META_TABLE)), "no watermark");
        let mut extra = good.clone();
        extra.add_values("windows", &[("n", Some(1))]).unwrap();
        refused(restore(extra), "another operator's table");
        let mut values = good.clone().without(META_TABLE);
        values
            .add_values(META_TABLE, &[("watermark", None), ("count", Some(3))])
            .unwrap();
        refused(restore(values), "unknown values");

        // Rows without the values column: an interval join of (k, ts) rows.
        let mut narrow = join(JoinKind::Full, -300, 500);
        narrow
            .on_batch(
                0,
                batch("l", &[(Some(1), 1_000)]),
                &mut OperatorContext::default(),
            )
            .unwrap();
        refused(restore(narrow.snapshot(1).unwrap()), "narrower rows");
        // Without `matched`, or with NULLs in it.
        let rows = good.table("left_rows")[0].clone();
        let width = rows.num_columns() - 1;
        let mut cut = good.clone().without("left_rows");
        cut.add(
            "left_rows",
            rows.project(&(0..width).collect::<Vec<_>>()).unwrap(),
        )
        .unwrap();
        refused(restore(cut), "no matched column");
        let mut nulls = good.clone().without("left_rows");
        let mut fields = rows.schema().fields().to_vec();
        fields[width] = Arc::new(Field::new(MATCHED, DataType::Boolean, true));
        let mut columns = rows.columns().to_vec();
        columns[width] = Arc::new(BooleanArray::from(vec![None; rows.num_rows()]));
        nulls
            .add(
                "left_rows",
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
            )
            .unwrap();
        refused(restore(nulls), "NULL matched");
        // A key of another type.
        let mut typed = good.without("left_rows");
        let mut fields = rows.schema().fields().to_vec();
        fields[0] = Arc::new(Field::new("l_k", DataType::Utf8, true));
        let mut columns = rows.columns().to_vec();
        columns[0] = Arc::new(StringArray::from(vec![Some("1"); rows.num_rows()]));
        typed
            .add(
                "left_rows",
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
            )
            .unwrap();
        refused(restore(typed), "a key of another type");
    }
}
