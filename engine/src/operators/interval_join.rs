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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::Rows;
use datafusion::common::HashMap;
use datafusion::common::hash_utils::RandomState;
use datafusion::physical_expr::PhysicalExpr;

use super::conform_batch;
use super::join_rows::{JoinKind, KeyEncoder, RowRef, gather, residual_mask};
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
/// min-heap.
#[derive(Default)]
struct SideState {
    batches: HashMap<u64, StoredBatch>,
    next_batch: u64,
    slots: Vec<Option<StoredRow>>,
    free: Vec<usize>,
    /// Per key hash: its list's first and last slot.
    by_key: HashMap<u64, (usize, usize)>,
    /// (time, slot) of the rows that arrived in time order, oldest first.
    in_order: VecDeque<(i64, usize)>,
    /// (time, slot) of the others.
    out_of_order: BinaryHeap<Reverse<(i64, usize)>>,
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

    fn insert(&mut self, mut stored: StoredRow) {
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
        let entry = (stored.ts, slot);
        match self.in_order.back() {
            Some(&(newest, _)) if stored.ts < newest => self.out_of_order.push(Reverse(entry)),
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
            slots.push(oldest.1);
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
        conform_batch(&self.info.schema, columns)
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
        // Rows to store: (row, time, key hash).
        let mut on_time: Vec<(usize, i64, u64)> = Vec::new();
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
                    .map(|(b, _, keys)| b.get_array_memory_size() + keys.size())
                    .sum(),
            })
            .collect()
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
            Arc::new(AtomicU64::new(0)),
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

    fn drain(out: &mut Output) -> (Vec<Pair>, Vec<i64>) {
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
            let mut out = Output::default();
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
        let mut out = Output::default();
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
            op.state_tables()[0].rows,
            1,
            "left state pruned to the open row"
        );
        assert_eq!(op.state_tables()[1].rows, 1);
        op.on_watermark(WATERMARK_END, &mut out).unwrap();
        let (rows, watermarks) = drain(&mut out);
        assert_eq!(rows, vec![(None, Some(1_000)), (Some(2_000), None)]);
        assert_eq!(watermarks, vec![WATERMARK_END]);
        assert_eq!(op.state_tables()[0].rows, 0);
        assert_eq!(op.state_tables()[1].rows, 0);
    }

    #[test]
    fn state_stays_bounded_by_the_interval() {
        let mut op = join(JoinKind::Inner, -1000, 1000);
        let mut out = Output::default();
        let mut most = 0;
        for second in 0..200i64 {
            let rows: Vec<(Option<i64>, i64)> = (0..10)
                .map(|i| (Some(i), second * 1000 + i * 100))
                .collect();
            op.on_batch(0, batch("l", &rows), &mut out).unwrap();
            op.on_batch(1, batch("r", &rows), &mut out).unwrap();
            op.on_watermark((second * 1000 + 900) * MS, &mut out)
                .unwrap();
            let held: usize = op.state_tables().iter().map(|t| t.rows).sum();
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
        let mut out = Output::default();
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
        assert_eq!(op.late_rows.load(Ordering::Relaxed), 1);
    }
}
