//! The rows one side of a regular join holds, kept columnar.
//!
//! Held rows live in Arrow batches, in the order they were stored: an arriving batch itself
//! when every row of it is held, else the held rows `take`n from it. Rows are numbered
//! consecutively across the batches (a row's *id*). Each join key maps to its held rows' ids
//! in storing order, with each row's partner count and storing time ([`Held`], 24 bytes).
//! Joined columns are gathered from the batches with `interleave`, so holding a row costs its
//! columns, its [`Held`] and a share of its key's entry; nothing is allocated per row.
//!
//! What frees memory: a batch is dropped once none of its rows is held; a run of small
//! trailing batches is concatenated into one (so a stream of tiny batches does not pay a
//! batch's overhead per row); and when the stored batches hold more than twice as many rows
//! as are still held, the held ones are copied into fresh batches and renumbered in the same
//! order (so retractions scattered over many batches cannot pin them all).
//!
//! With a TTL, the ranges of ids stored at one processing time are queued oldest first; a
//! range that expires is looked up by re-encoding its rows' keys, and each such key drops the
//! leading rows of its list stored at or before the cutoff (a key's rows are in storing
//! order).

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{concat_batches, interleave};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::Rows;
use datafusion::common::HashMap;

use crate::error::{EngineError, EngineResult};
use crate::operators::join_rows::KeyEncoder;

/// A trailing run of this many batches of the same merge level, each smaller than
/// [`SMALL_BATCH`] rows, is concatenated into one batch of the next level.
const MERGED_RUN: usize = 16;
/// Batches with fewer rows than this are merged with their neighbours.
const SMALL_BATCH: usize = 1024;
/// Rows per batch when the held rows are copied into fresh batches.
const COMPACTED_BATCH: usize = 8192;
/// Rows no longer held that the stored batches may keep beyond as many as are held.
const DEAD_SLACK: usize = 8192;

/// A held row: where its columns are, how many partners it has now, and when it was stored.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub id: u64,
    pub partners: u32,
    pub stored_at: i64,
}

/// A stored batch: its rows have the ids `first..first + len`.
struct Chunk {
    first: u64,
    batch: RecordBatch,
    /// How many of its rows are held.
    live: usize,
    bytes: usize,
    /// How many times rows were concatenated into it ([`MERGED_RUN`]).
    level: u8,
}

impl Chunk {
    fn new(first: u64, batch: RecordBatch, live: usize, level: u8) -> Self {
        let bytes = batch.get_array_memory_size();
        Self {
            first,
            batch,
            live,
            bytes,
            level,
        }
    }

    fn len(&self) -> usize {
        self.batch.num_rows()
    }

    fn end(&self) -> u64 {
        self.first + self.len() as u64
    }
}

/// The stored batches of one side, by id.
///
/// Rows are first held *pending* (ids from [`Batches::next_id`] on, handed out while a batch
/// is joined), then stored together by [`Batches::append`].
struct Batches {
    schema: SchemaRef,
    /// In id order; a batch whose rows are all released is removed.
    chunks: VecDeque<Chunk>,
    next_id: u64,
    /// Pending rows released before they were stored.
    pending_released: usize,
    /// Rows of the stored batches, held or not.
    stored_rows: usize,
    bytes: usize,
}

impl Batches {
    fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            chunks: VecDeque::new(),
            next_id: 0,
            pending_released: 0,
            stored_rows: 0,
            bytes: 0,
        }
    }

    /// The position of the chunk holding row `id`.
    fn locate(&self, id: u64) -> Option<usize> {
        let after = self.chunks.partition_point(|c| c.first <= id);
        let at = after.checked_sub(1)?;
        (id < self.chunks[at].end()).then_some(at)
    }

    fn push(&mut self, chunk: Chunk) {
        self.stored_rows += chunk.len();
        self.bytes += chunk.bytes;
        self.chunks.push_back(chunk);
    }

    /// Stores the pending rows, `batch`; returns their ids, or `None` when every one of them
    /// was released already (their ids are then handed out again).
    fn append(&mut self, batch: RecordBatch) -> EngineResult<Option<(u64, u64)>> {
        let len = batch.num_rows();
        let released = std::mem::take(&mut self.pending_released);
        if len == released {
            return Ok(None);
        }
        let first = self.next_id;
        self.next_id += len as u64;
        self.push(Chunk::new(first, batch, len - released, 0));
        self.merge_tail()?;
        Ok(Some((first, first + len as u64)))
    }

    /// Concatenates trailing runs of small batches, level by level.
    fn merge_tail(&mut self) -> EngineResult<()> {
        while let Some(last) = self.chunks.back() {
            let (level, mut next) = (last.level, last.end());
            let run = self
                .chunks
                .iter()
                .rev()
                .take_while(|c| {
                    let fits = c.level == level && c.len() < SMALL_BATCH && c.end() == next;
                    next = c.first;
                    fits
                })
                .count();
            if run < MERGED_RUN {
                return Ok(());
            }
            let merged: Vec<Chunk> = self.chunks.drain(self.chunks.len() - run..).collect();
            let batches: Vec<&RecordBatch> = merged.iter().map(|c| &c.batch).collect();
            let batch = concat_batches(&self.schema, batches)?;
            for c in &merged {
                self.stored_rows -= c.len();
                self.bytes -= c.bytes;
            }
            let live = merged.iter().map(|c| c.live).sum();
            self.push(Chunk::new(merged[0].first, batch, live, level + 1));
        }
        Ok(())
    }

    /// Row `id` is no longer held.
    fn release(&mut self, id: u64) -> EngineResult<()> {
        if id >= self.next_id {
            self.pending_released += 1;
            return Ok(());
        }
        let at = self.locate(id).ok_or_else(vanished)?;
        let chunk = &mut self.chunks[at];
        chunk.live -= 1;
        if chunk.live == 0 {
            self.stored_rows -= chunk.len();
            self.bytes -= chunk.bytes;
            self.chunks.remove(at);
        }
        Ok(())
    }

    /// The columns (those `needed`, the others all NULL) of the stored rows `ids`; `None`
    /// gives a row of NULLs.
    fn gather(&self, ids: &[Option<u64>], needed: Option<&[bool]>) -> EngineResult<Vec<ArrayRef>> {
        // The chunks referred to, as sources of `interleave`; the last source is NULLs.
        let mut sources: Vec<usize> = Vec::new();
        let mut source_of: HashMap<usize, usize> = HashMap::new();
        let mut last: Option<(u64, u64, usize)> = None;
        let mut padded = false;
        let mut indices: Vec<(usize, usize)> = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(id) = *id else {
                padded = true;
                indices.push((usize::MAX, 0));
                continue;
            };
            let (first, source) = match last {
                Some((first, end, source)) if (first..end).contains(&id) => (first, source),
                _ => {
                    let at = self.locate(id).ok_or_else(vanished)?;
                    let chunk = &self.chunks[at];
                    let source = *source_of.entry(at).or_insert_with(|| {
                        sources.push(at);
                        sources.len() - 1
                    });
                    last = Some((chunk.first, chunk.end(), source));
                    (chunk.first, source)
                }
            };
            indices.push((source, (id - first) as usize));
        }
        let nulls = sources.len();
        for index in indices.iter_mut().filter(|(s, _)| *s == usize::MAX) {
            index.0 = nulls;
        }
        self.schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, field)| {
                if needed.is_some_and(|needed| !needed[c]) {
                    return Ok(new_null_array(field.data_type(), ids.len()));
                }
                let null = padded.then(|| new_null_array(field.data_type(), 1));
                let arrays: Vec<&dyn Array> = sources
                    .iter()
                    .map(|&at| self.chunks[at].batch.column(c).as_ref())
                    .chain(null.as_deref())
                    .collect();
                Ok(interleave(&arrays, &indices)?)
            })
            .collect()
    }
}

fn vanished() -> EngineError {
    EngineError::Internal("a held join row vanished".to_string())
}

/// Bytes of an encoded key kept in place (a BIGINT key encodes to 9, two to 18).
const INLINE_KEY: usize = 22;

/// An encoded join key, in place when short, so that most keys cost no allocation of their
/// own and comparing one reads no other memory. Hashes and compares as its bytes.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(key.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(bytes) => bytes,
        }
    }
}

/// What a key's entry in the lists costs, in bytes.
fn key_cost(key: &[u8]) -> usize {
    let heap = if key.len() > INLINE_KEY { key.len() } else { 0 };
    size_of::<(Key, Vec<Held>)>() + heap
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

/// One side's held rows, by encoded join key.
pub struct HeldRows {
    batches: Batches,
    lists: HashMap<Key, Vec<Held>>,
    rows: usize,
    key_bytes: usize,
    /// With a TTL: (stored_at, ids) of the rows stored at one time, oldest first.
    stored: Option<VecDeque<(i64, u64, u64)>>,
}

impl HeldRows {
    /// Rows of `schema`; `ttl`: they expire.
    pub fn new(schema: SchemaRef, ttl: bool) -> Self {
        Self {
            batches: Batches::new(schema),
            lists: HashMap::new(),
            rows: 0,
            key_bytes: 0,
            stored: ttl.then(VecDeque::new),
        }
    }

    /// How many rows are held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximately how many bytes they take.
    pub fn bytes(&self) -> usize {
        self.batches.bytes + self.key_bytes + self.rows * size_of::<Held>()
    }

    /// The id the next row held gets.
    pub fn next_id(&self) -> u64 {
        self.batches.next_id
    }

    /// The rows held under `key`, in storing order.
    pub fn list(&self, key: &[u8]) -> Option<&[Held]> {
        self.lists.get(key).map(Vec::as_slice)
    }

    /// The same, to change their partner counts.
    pub fn list_mut(&mut self, key: &[u8]) -> Option<&mut [Held]> {
        self.lists.get_mut(key).map(Vec::as_mut_slice)
    }

    /// Holds a row under `key`: a pending one (its columns come with the next
    /// [`HeldRows::append`]) or one of a batch stored already.
    pub fn hold(&mut self, key: &[u8], held: Held) {
        self.rows += 1;
        match self.lists.get_mut(key) {
            Some(list) => list.push(held),
            None => {
                self.key_bytes += key_cost(key);
                self.lists.insert(Key::new(key), vec![held]);
            }
        }
    }

    /// Releases the row at `at` of `key`'s list.
    pub fn release(&mut self, key: &[u8], at: usize) -> EngineResult<()> {
        let list = self.lists.get_mut(key).ok_or_else(vanished)?;
        if at >= list.len() {
            return Err(vanished());
        }
        let held = list.remove(at);
        if list.is_empty() {
            self.lists.remove(key);
            self.key_bytes -= key_cost(key);
        }
        self.rows -= 1;
        self.batches.release(held.id)
    }

    /// Stores the pending rows, `batch`, in the order their ids were handed out; they were
    /// held at `stored_at`.
    pub fn append(&mut self, batch: RecordBatch, stored_at: i64) -> EngineResult<()> {
        if let (Some((first, end)), Some(stored)) = (self.batches.append(batch)?, &mut self.stored)
        {
            stored.push_back((stored_at, first, end));
        }
        self.compact_if_sparse()
    }

    /// The columns (those `needed`, the others all NULL) of the held rows `ids`, `None`
    /// giving a row of NULLs. Pending rows have no columns yet.
    pub fn gather(
        &self,
        ids: &[Option<u64>],
        needed: Option<&[bool]>,
    ) -> EngineResult<Vec<ArrayRef>> {
        self.batches.gather(ids, needed)
    }

    /// Drops the rows stored at or before `cutoff`; `keys` encodes their keys.
    pub fn expire(&mut self, cutoff: i64, keys: &KeyEncoder) -> EngineResult<()> {
        let Some(stored) = &mut self.stored else {
            return Ok(());
        };
        let mut ranges = Vec::new();
        while let Some(&(at, first, end)) = stored.front() {
            if at > cutoff {
                break;
            }
            stored.pop_front();
            ranges.push((first, end));
        }
        for (first, end) in ranges {
            // The keys of the range's rows still stored (a key's expired rows lead its list).
            let mut encoded: Vec<(Rows, Vec<bool>)> = Vec::new();
            let chunks = &self.batches.chunks;
            let start = chunks.partition_point(|c| c.end() <= first);
            for chunk in chunks.range(start..).take_while(|c| c.first < end) {
                let (from, to) = (first.max(chunk.first), end.min(chunk.end()));
                let rows = chunk
                    .batch
                    .slice((from - chunk.first) as usize, (to - from) as usize);
                encoded.push(keys.encode(&rows)?);
            }
            for (keys, valid) in &encoded {
                for (r, valid) in valid.iter().enumerate() {
                    if *valid {
                        self.expire_key(keys.row(r).data(), cutoff)?;
                    }
                }
            }
        }
        self.compact_if_sparse()
    }

    fn expire_key(&mut self, key: &[u8], cutoff: i64) -> EngineResult<()> {
        let Some(list) = self.lists.get_mut(key) else {
            return Ok(());
        };
        let expired = list.iter().take_while(|h| h.stored_at <= cutoff).count();
        for held in list.drain(..expired) {
            self.batches.release(held.id)?;
        }
        self.rows -= expired;
        if list.is_empty() {
            self.lists.remove(key);
            self.key_bytes -= key_cost(key);
        }
        Ok(())
    }

    /// Copies the held rows into fresh batches, in id order, when the stored batches hold
    /// more than twice as many rows (and [`DEAD_SLACK`] more).
    fn compact_if_sparse(&mut self) -> EngineResult<()> {
        if self.batches.stored_rows <= 2 * self.rows + DEAD_SLACK {
            return Ok(());
        }
        let mut ids: Vec<u64> = self.lists.values().flatten().map(|h| h.id).collect();
        ids.sort_unstable();
        let mut fresh = Batches::new(Arc::clone(&self.batches.schema));
        for (n, part) in ids.chunks(COMPACTED_BATCH).enumerate() {
            let part: Vec<Option<u64>> = part.iter().copied().map(Some).collect();
            let columns = self.batches.gather(&part, None)?;
            let batch = RecordBatch::try_new(Arc::clone(&fresh.schema), columns)?;
            fresh.push(Chunk::new(
                (n * COMPACTED_BATCH) as u64,
                batch,
                part.len(),
                0,
            ));
        }
        fresh.next_id = ids.len() as u64;
        let renumbered = |id: u64| ids.partition_point(|&old| old < id) as u64;
        for held in self.lists.values_mut().flatten() {
            held.id = renumbered(held.id);
        }
        if let Some(stored) = &mut self.stored {
            *stored = stored
                .iter()
                .map(|&(at, first, end)| (at, renumbered(first), renumbered(end)))
                .filter(|(_, first, end)| first < end)
                .collect();
        }
        self.batches = fresh;
        Ok(())
    }

    /// The held rows in a fixed order (keys in byte order, each key's rows in storing order):
    /// their columns, then their partner counts (UInt32) and storing times (Int64); `None`
    /// when none is held.
    pub fn snapshot(&self) -> EngineResult<Option<Vec<ArrayRef>>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let mut keys: Vec<&Key> = self.lists.keys().collect();
        keys.sort_by(|a, b| a.bytes().cmp(b.bytes()));
        let held: Vec<&Held> = keys.iter().flat_map(|k| &self.lists[*k]).collect();
        let ids: Vec<Option<u64>> = held.iter().map(|h| Some(h.id)).collect();
        let mut columns = self.gather(&ids, None)?;
        columns.push(Arc::new(UInt32Array::from_iter_values(
            held.iter().map(|h| h.partners),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            held.iter().map(|h| h.stored_at),
        )));
        Ok(Some(columns))
    }

    /// Stores `batch` as held rows again, in its order: row `r` under key `keys.row(r)`, with
    /// `partners[r]` partners, stored at `stored_at[r]`. Returns each row's storing time and
    /// id, for [`HeldRows::restore_expiry`].
    pub fn restore(
        &mut self,
        batch: RecordBatch,
        keys: &Rows,
        partners: &[u32],
        stored_at: &[i64],
    ) -> EngineResult<Vec<(i64, u64)>> {
        let first = self.batches.next_id;
        let len = batch.num_rows();
        self.batches.next_id += len as u64;
        self.batches.push(Chunk::new(first, batch, len, 0));
        let mut stored = Vec::with_capacity(len);
        for r in 0..len {
            let id = first + r as u64;
            self.hold(
                keys.row(r).data(),
                Held {
                    id,
                    partners: partners[r],
                    stored_at: stored_at[r],
                },
            );
            stored.push((stored_at[r], id));
        }
        Ok(stored)
    }

    /// Queues the restored rows for expiry by their storing time.
    pub fn restore_expiry(&mut self, mut restored: Vec<(i64, u64)>) {
        let Some(stored) = &mut self.stored else {
            return;
        };
        restored.sort_unstable();
        stored.clear();
        for (at, id) in restored {
            match stored.back_mut() {
                Some((last, _, end)) if *last == at && *end == id => *end += 1,
                _ => stored.push_back((at, id, id + 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    /// Rows of (k, v) BIGINT, keyed by k.
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn keys() -> KeyEncoder {
        let k: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
        KeyEncoder::try_new(vec![k], &[DataType::Int64]).unwrap()
    }

    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    /// Holds `rows` (all of them) as one arriving batch, stored at `at`.
    fn store(held: &mut HeldRows, rows: &[(i64, i64)], at: i64) {
        let b = batch(rows);
        let (encoded, _) = keys().encode(&b).unwrap();
        for r in 0..rows.len() {
            let id = held.next_id() + r as u64;
            let row = Held {
                id,
                partners: 0,
                stored_at: at,
            };
            held.hold(encoded.row(r).data(), row);
        }
        held.append(b, at).unwrap();
    }

    fn key(k: i64) -> Box<[u8]> {
        let (encoded, _) = keys().encode(&batch(&[(k, 0)])).unwrap();
        encoded.row(0).data().into()
    }

    /// The v of the rows held under k, in storing order.
    fn values(held: &HeldRows, k: i64) -> Vec<i64> {
        let ids: Vec<Option<u64>> = held
            .list(&key(k))
            .unwrap_or_default()
            .iter()
            .map(|h| Some(h.id))
            .collect();
        let columns = held.gather(&ids, None).unwrap();
        columns[1].as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn rows_arriving_one_by_one_end_up_in_a_few_batches() {
        let mut held = HeldRows::new(schema(), false);
        for v in 0..5000 {
            store(&mut held, &[(v % 7, v)], 0);
        }
        let batches = held.batches.chunks.len();
        assert!(
            batches <= 5000 / SMALL_BATCH + 3 * MERGED_RUN,
            "{batches} batches for 5000 rows"
        );
        assert_eq!(held.rows(), 5000);
        let expected: Vec<i64> = (0..5000).filter(|v| v % 7 == 3).collect();
        assert_eq!(
            values(&held, 3),
            expected,
            "each key's rows, in storing order"
        );
    }

    #[test]
    fn releasing_most_rows_copies_the_others_into_fresh_batches() {
        let mut held = HeldRows::new(schema(), false);
        let rows: Vec<(i64, i64)> = (0..100_000).map(|v| (v % 10, v)).collect();
        for part in rows.chunks(8192) {
            store(&mut held, part, 0);
        }
        // Every key keeps one row in a hundred.
        for k in 0..10 {
            let len = held.list(&key(k)).unwrap().len();
            for at in (0..len).rev().filter(|at| at % 100 != 0) {
                held.release(&key(k), at).unwrap();
            }
        }
        // The batch after the releases finds the stored rows sparse.
        held.append(RecordBatch::new_empty(schema()), 0).unwrap();
        assert_eq!(held.rows(), 1000);
        assert!(
            held.batches.stored_rows <= 2 * held.rows() + DEAD_SLACK,
            "{} rows stored for {} held",
            held.batches.stored_rows,
            held.rows()
        );
        let expected: Vec<i64> = (0..100_000)
            .filter(|v| v % 10 == 4 && v % 1000 < 10)
            .collect();
        assert_eq!(values(&held, 4), expected);
        // Rows held later get ids after the renumbered ones.
        store(&mut held, &[(4, -1)], 0);
        assert_eq!(values(&held, 4).last(), Some(&-1));
    }

    #[test]
    fn a_row_released_before_its_batch_is_stored_takes_no_room() {
        let mut held = HeldRows::new(schema(), false);
        let first = held.next_id();
        let k = key(1);
        held.hold(
            &k,
            Held {
                id: first,
                partners: 0,
                stored_at: 0,
            },
        );
        held.release(&k, 0).unwrap();
        held.append(batch(&[(1, 10)]), 0).unwrap();
        assert_eq!((held.rows(), held.batches.chunks.len()), (0, 0));
        assert_eq!(held.next_id(), first, "its id is handed out again");
        store(&mut held, &[(1, 11)], 0);
        assert_eq!(values(&held, 1), [11]);
    }

    #[test]
    fn long_and_short_keys_find_their_own_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let k: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
        let keys = KeyEncoder::try_new(vec![k], &[DataType::Utf8]).unwrap();
        let long = "a key longer than the bytes kept in place";
        let values = ["a", long, "b", long];
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from_iter_values(values))],
        )
        .unwrap();
        let (encoded, _) = keys.encode(&b).unwrap();
        assert!(encoded.row(1).data().len() > INLINE_KEY);
        let mut held = HeldRows::new(schema, false);
        for r in 0..values.len() {
            let row = Held {
                id: r as u64,
                partners: 0,
                stored_at: 0,
            };
            held.hold(encoded.row(r).data(), row);
        }
        held.append(b, 0).unwrap();
        let ids = |r: usize| -> Vec<u64> {
            let list = held.list(encoded.row(r).data()).unwrap();
            list.iter().map(|h| h.id).collect()
        };
        assert_eq!((ids(0), ids(1), ids(2)), (vec![0], vec![1, 3], vec![2]));
    }

    #[test]
    fn expiry_drops_the_rows_stored_at_or_before_the_cutoff() {
        let mut held = HeldRows::new(schema(), true);
        store(&mut held, &[(1, 10), (2, 20)], 100);
        store(&mut held, &[(1, 11)], 200);
        store(&mut held, &[(2, 21), (1, 12)], 300);
        held.expire(200, &keys()).unwrap();
        assert_eq!((values(&held, 1), values(&held, 2)), (vec![12], vec![21]));
        assert_eq!(held.rows(), 2);
        held.expire(300, &keys()).unwrap();
        assert_eq!(held.rows(), 0);
        assert!(held.list(&key(1)).is_none(), "an empty key is dropped");
        assert_eq!(held.bytes(), 0, "and so are the batches");
    }
}
