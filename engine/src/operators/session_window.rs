//! `SessionWindowOperator`: the SESSION table function.
//!
//! Per partition key, a row at `ts` opens the session `[ts, ts + gap)`; sessions that overlap
//! or touch it merge (rows exactly `gap` apart share a session, whose end is its last row +
//! gap). A session *closes* once the watermark reaches its end, and *expires* once the
//! watermark reaches its end plus the allowed lateness (0 without one, so it expires as it
//! closes). Its rows are emitted with `window_start`, `window_end` and `window_time` (= end -
//! 1 ms).
//!
//! Emission ([`Emission`]): by default a session's rows are emitted once, final, when it
//! closes. When the aggregate over the sessions emits early results or allows lateness, the
//! rows are a changelog led by `__op`, kept until the session expires: with `EMIT ON UPDATE`
//! every batch's rows are emitted at once with their session's current bounds; otherwise a
//! session's rows are emitted when it closes, and a later row within the lateness may still
//! join it. Whenever a session that has emitted rows changes its bounds (it grows, or merges
//! with another), its emitted rows are retracted (`-`, with the old bounds) and all its rows
//! emitted again (`+`, with the new ones); rows added within the same bounds are only added.
//! A session absorbed by a merge retracts the rows it emitted. Within one batch of output the
//! retractions come first, then the additions, each in order of session bounds, then key.
//! Re-emitting a grown session costs its row count: the price of rows that carry their
//! session's bounds.
//!
//! State: the kept sessions per key (their bounds, row references and what they last
//! emitted) and the input batches those rows live in, freed once no kept session refers to
//! them; per key, the end of its last expired session while a row could still touch it.
//! Lateness: a row is late when it touches an expired session, or touches no kept session and
//! its own session would already have expired; it is dropped and counted. Rows whose time is
//! NULL belong to no session and are skipped. Watermark: forwarded after the sessions it
//! closes are emitted. Sessions closed by one watermark are emitted in order of their bounds,
//! then of their key.
//!
//! Snapshot: the watermark, each kept session's bounds with its rows (the input columns, so
//! the retained batches need not be kept whole) and, in the changelog modes, the bounds and
//! number of rows it last emitted; and the end of each key's last expired session still kept,
//! with the key columns. A restored instance holds its rows in one batch.

use std::collections::HashMap;
use std::ops::Range;

use datafusion::common::HashMap as KeyMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::{cast, interleave_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use super::window_aggregate::Emission;
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::operators::window::{MILLISECOND, unit_nanos};
use crate::runtime::message::Epoch;
use crate::runtime::message::EventTime;
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// Snapshot tables and values.
const META: &str = "meta";
const SESSIONS: &str = "sessions";
const ROWS: &str = "rows";
const EMITTED: &str = "emitted";
const WATERMARK: &str = "watermark";
/// The `sessions` columns of the changelog modes: what each session last emitted.
const SHOWN: [&str; 3] = ["shown_start", "shown_end", "shown_rows"];

/// The state tables of a session window partitioned by `keys` (as the plan names them).
pub fn state_tables(keys: &[String]) -> Vec<StateTable> {
    let mut key = keys.to_vec();
    key.push("session".to_string());
    vec![
        StateTable::fixed(META, "the watermark"),
        StateTable::index(
            SESSIONS,
            key.clone(),
            "bounds of a kept session (open, or closed within the allowed lateness)",
            Freed::Watermark,
        ),
        StateTable::new(ROWS, key, "rows of kept sessions", Freed::Watermark),
        StateTable::index(
            EMITTED,
            keys.to_vec(),
            "end of the key's last expired session",
            Freed::Watermark,
        ),
    ]
}

/// The bounds a session's rows were last emitted with, and how many of its first rows were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shown {
    start: i64,
    end: i64,
    rows: usize,
}

#[derive(Debug)]
struct Session {
    start: i64,
    last: i64,
    /// (batch id, row) of each row, in arrival order (a merge appends the absorbed
    /// sessions' rows, so the rows it emitted stay in front).
    rows: Vec<(u64, u32)>,
    /// In the changelog modes, what it last emitted (`None`: nothing, or retracted).
    shown: Option<Shown>,
}

/// Rows to emit: `+` or `-` with a session's bounds; sorted by the tuple's order.
type Change = (bool, i64, i64, Vec<u8>, Vec<(u64, u32)>);

/// True when a session ending at `end` shows its rows under `watermark`: at once when
/// emitting on update, else once closed.
fn shows(emit: Emission, watermark: Option<EventTime>, end: i64) -> bool {
    emit.on_update || watermark.is_some_and(|wm| end <= wm)
}

impl Session {
    /// The retraction of the rows it showed (key `key`), if it showed any.
    fn retraction(&self, key: &[u8]) -> Option<Change> {
        let shown = self.shown?;
        Some((
            false,
            shown.start,
            shown.end,
            key.to_vec(),
            self.rows[..shown.rows].to_vec(),
        ))
    }
}

pub struct SessionWindowOperator {
    info: OperatorInfo,
    gap: i64,
    emit: Emission,
    time_index: usize,
    time_unit_ns: i64,
    window_type: DataType,
    window_unit_ns: i64,
    key_indices: Vec<usize>,
    converter: Option<RowConverter>,
    /// Kept sessions per encoded partition key.
    sessions: KeyMap<Vec<u8>, Vec<Session>>,
    /// Per key, the end of its last expired session, while a row could still touch it.
    expired_end: KeyMap<Vec<u8>, i64>,
    /// Input batches with the number of kept-session rows that refer to each.
    batches: HashMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    watermark: Option<EventTime>,
}

impl SessionWindowOperator {
    /// A session window emitting as `emit` says: final rows by default, a changelog when it
    /// emits on update or allows lateness (its schema then leads with `__op`).
    pub fn try_new(
        info: OperatorInfo,
        gap: i64,
        emit: Emission,
        time_index: usize,
        key_indices: Vec<usize>,
        input_types: &[DataType],
    ) -> EngineResult<Self> {
        let window_type = info
            .schema
            .field(info.schema.fields().len() - 1)
            .data_type()
            .clone();
        let (DataType::Timestamp(time_unit, _), DataType::Timestamp(window_unit, _)) =
            (&input_types[time_index], &window_type)
        else {
            return Err(EngineError::Internal(
                "SESSION over a non-timestamp column".to_string(),
            ));
        };
        let converter = if key_indices.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                key_indices
                    .iter()
                    .map(|i| SortField::new(input_types[*i].clone()))
                    .collect(),
            )?)
        };
        Ok(Self {
            time_unit_ns: unit_nanos(*time_unit),
            window_unit_ns: unit_nanos(*window_unit),
            info,
            gap,
            emit,
            time_index,
            window_type,
            key_indices,
            converter,
            sessions: KeyMap::default(),
            expired_end: KeyMap::default(),
            batches: HashMap::new(),
            next_batch: 0,
            watermark: None,
        })
    }

    fn open_rows(&self) -> usize {
        self.sessions
            .values()
            .flat_map(|s| s.iter().map(|s| s.rows.len()))
            .sum()
    }

    /// The output columns that are the input's (after `__op` in the changelog modes).
    fn input_columns(&self) -> Range<usize> {
        let first = usize::from(self.emit.is_updating());
        first..self.info.schema.fields().len().saturating_sub(3)
    }

    /// Brings what the sessions of `key` show up to date, adding the rows to emit.
    fn show(&mut self, key: &[u8], changes: &mut Vec<Change>) {
        let (emit, watermark, gap) = (self.emit, self.watermark, self.gap);
        let Some(sessions) = self.sessions.get_mut(key) else {
            return;
        };
        for s in sessions {
            let end = s.last.saturating_add(gap);
            let wanted = shows(emit, watermark, end);
            if let Some(shown) = s.shown {
                if wanted && shown.start == s.start && shown.end == end {
                    if shown.rows < s.rows.len() {
                        changes.push((
                            true,
                            s.start,
                            end,
                            key.to_vec(),
                            s.rows[shown.rows..].to_vec(),
                        ));
                        s.shown = Some(Shown {
                            rows: s.rows.len(),
                            ..shown
                        });
                    }
                    continue;
                }
                changes.extend(s.retraction(key));
                s.shown = None;
            }
            if wanted {
                changes.push((true, s.start, end, key.to_vec(), s.rows.clone()));
                s.shown = Some(Shown {
                    start: s.start,
                    end,
                    rows: s.rows.len(),
                });
            }
        }
    }

    /// Emits `changes` as one batch: retractions first, then additions, each by bounds and
    /// key (led by `__op` in the changelog modes).
    fn output(&self, mut changes: Vec<Change>, out: &mut OperatorContext) -> EngineResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        changes.sort_by(|a, b| (a.0, a.1, a.2, &a.3).cmp(&(b.0, b.1, b.2, &b.3)));
        let ids: Vec<u64> = {
            let mut ids: Vec<u64> = changes
                .iter()
                .flat_map(|c| c.4.iter().map(|r| r.0))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let position: HashMap<u64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut batches = Vec::with_capacity(ids.len());
        for id in &ids {
            let (batch, _) = self.batches.get(id).ok_or_else(|| {
                EngineError::Internal(format!("session row of a dropped batch {id}"))
            })?;
            batches.push(batch);
        }
        let mut indices = Vec::new();
        let (mut ops, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        for (add, start, end, _, rows) in &changes {
            for (id, row) in rows {
                indices.push((position[id], *row as usize));
                ops.push(if *add { "+" } else { "-" });
                starts.push(*start);
                ends.push(*end);
            }
        }
        let rows = interleave_record_batch(&batches, &indices)?;
        let unit = self.window_unit_ns;
        let column = |values: Vec<i64>| -> EngineResult<ArrayRef> {
            let values: ArrayRef = Arc::new(Int64Array::from_iter_values(
                values.into_iter().map(|v| v / unit),
            ));
            Ok(cast(&values, &self.window_type)?)
        };
        let mut columns: Vec<ArrayRef> = Vec::new();
        if self.emit.is_updating() {
            columns.push(Arc::new(StringArray::from(ops)));
        }
        columns.extend(rows.columns().iter().cloned());
        columns.push(column(starts)?);
        columns.push(column(ends.clone())?);
        columns.push(column(ends.iter().map(|e| e - MILLISECOND).collect())?);
        out.batch(RecordBatch::try_new(
            Arc::clone(&self.info.schema),
            columns,
        )?);
        Ok(())
    }

    /// Lets go of `rows`' references to their batches.
    fn release(&mut self, rows: &[(u64, u32)]) {
        for (id, _) in rows {
            if let Some(entry) = self.batches.get_mut(id) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.batches.remove(id);
                }
            }
        }
    }
}

impl Operator for SessionWindowOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let id = self.next_batch;
        self.next_batch += 1;
        let times = cast(batch.column(self.time_index), &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let keys = match &self.converter {
            Some(c) => {
                let columns: Vec<ArrayRef> = self
                    .key_indices
                    .iter()
                    .map(|i| Arc::clone(batch.column(*i)))
                    .collect();
                Some(c.convert_columns(&columns)?)
            }
            None => None,
        };
        let updating = self.emit.is_updating();
        let horizon = self.gap.saturating_add(self.emit.lateness);
        let mut refs = 0;
        let mut late = Vec::new();
        let mut changes: Vec<Change> = Vec::new();
        let mut touched: Vec<Vec<u8>> = Vec::new();
        for row in 0..batch.num_rows() {
            if times.is_null(row) {
                continue;
            }
            let Some(ts) = times.value(row).checked_mul(self.time_unit_ns) else {
                continue;
            };
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(row).data());
            // Touching an expired session makes the row part of it: late.
            if self.expired_end.get(key).is_some_and(|end| ts <= *end) {
                late.push((row, Some(ts)));
                continue;
            }
            let sessions = self.sessions.entry_ref(key).or_default();
            let gap = self.gap;
            let touching =
                |s: &Session| s.start <= ts.saturating_add(gap) && s.last.saturating_add(gap) >= ts;
            let mut merged: Vec<Session> = sessions.extract_if(.., |s| touching(s)).collect();
            // Alone, and its own session would already have expired: late.
            if merged.is_empty()
                && self
                    .watermark
                    .is_some_and(|wm| ts.saturating_add(horizon) <= wm)
            {
                late.push((row, Some(ts)));
                continue;
            }
            // The earliest touching session absorbs the row and any session it bridges to
            // (so a growing session's rows are not copied again for every new row).
            merged.sort_by_key(|s| s.start);
            let mut merged = merged.into_iter();
            let mut session = merged.next().unwrap_or(Session {
                start: ts,
                last: ts,
                rows: Vec::new(),
                shown: None,
            });
            session.start = session.start.min(ts);
            session.last = session.last.max(ts);
            for s in merged {
                // An absorbed session takes back what it showed.
                changes.extend(s.retraction(key));
                session.last = session.last.max(s.last);
                session.rows.extend(s.rows);
            }
            session.rows.push((id, row as u32));
            refs += 1;
            sessions.push(session);
            if updating && touched.last().is_none_or(|k| k.as_slice() != key) {
                touched.push(key.to_vec());
            }
        }
        out.drop_late(&batch, &late)?;
        if refs > 0 {
            self.batches.insert(id, (batch, refs));
        }
        if updating {
            touched.sort_unstable();
            touched.dedup();
            for key in &touched {
                self.show(key, &mut changes);
            }
            self.output(changes, out)?;
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        // After a restore the runtime may repeat the watermark of the checkpoint.
        if self.watermark.is_some_and(|w| watermark <= w) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        let (gap, lateness) = (self.gap, self.emit.lateness);
        // Sessions it closes show their rows (emitting on update, they already have).
        let mut changes = Vec::new();
        let closing: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, sessions)| {
                sessions.iter().any(|s| {
                    s.shown.is_none()
                        && shows(self.emit, Some(watermark), s.last.saturating_add(gap))
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &closing {
            self.show(key, &mut changes);
        }
        self.output(changes, out)?;
        // Sessions it expires go.
        let mut expired: Vec<Session> = Vec::new();
        let expired_end = &mut self.expired_end;
        self.sessions.retain(|key, sessions| {
            let (gone, kept): (Vec<Session>, Vec<Session>) = std::mem::take(sessions)
                .into_iter()
                .partition(|s| s.last.saturating_add(gap).saturating_add(lateness) <= watermark);
            for s in &gone {
                let end = expired_end.entry(key.clone()).or_insert(i64::MIN);
                *end = (*end).max(s.last.saturating_add(gap));
            }
            expired.extend(gone);
            *sessions = kept;
            !sessions.is_empty()
        });
        for s in expired {
            self.release(&s.rows);
        }
        // A row not late by the watermark alone is later than `watermark - lateness - gap`;
        // an expired session ending before that can only be reached through a kept session
        // of its key.
        let reach = watermark.saturating_sub(lateness).saturating_sub(gap);
        let sessions = &self.sessions;
        self.expired_end
            .retain(|key, end| sessions.contains_key(key) || *end > reach);
        out.watermark(watermark);
        Ok(())
    }

    /// Tables: `meta` (the watermark), `sessions` (start, last row time and row count of
    /// each kept session, key by key; in the changelog modes also the bounds and number of
    /// rows it last emitted, NULL when none), `rows` (the rows of those sessions, in that
    /// order, with the input's columns; absent without kept sessions) and `emitted` (the key
    /// columns and end of each key's last expired session still kept).
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(META, &[(WATERMARK, self.watermark)])?;
        let (mut starts, mut lasts, mut counts) = (vec![], vec![], vec![]);
        let mut shown: [Vec<Option<i64>>; 3] = Default::default();
        let ids: Vec<u64> = self.batches.keys().copied().collect();
        let position: HashMap<u64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut indices = Vec::new();
        for sessions in self.sessions.values() {
            for s in sessions {
                starts.push(s.start);
                lasts.push(s.last);
                counts.push(s.rows.len() as i64);
                shown[0].push(s.shown.map(|s| s.start));
                shown[1].push(s.shown.map(|s| s.end));
                shown[2].push(s.shown.map(|s| s.rows as i64));
                for (id, row) in &s.rows {
                    let batch = position.get(id).ok_or_else(|| {
                        EngineError::Internal(format!("session row of a dropped batch {id}"))
                    })?;
                    indices.push((*batch, *row as usize));
                }
            }
        }
        let column = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        let mut columns = vec![
            ("start", column(starts)),
            ("last", column(lasts)),
            ("rows", column(counts)),
        ];
        if self.emit.is_updating() {
            for (name, values) in SHOWN.into_iter().zip(shown) {
                columns.push((name, Arc::new(Int64Array::from(values)) as ArrayRef));
            }
        }
        snapshot.add(SESSIONS, RecordBatch::try_from_iter(columns)?)?;
        if !indices.is_empty() {
            let batches: Vec<&RecordBatch> = ids.iter().map(|id| &self.batches[id].0).collect();
            snapshot.add(ROWS, interleave_record_batch(&batches, &indices)?)?;
        }
        let (keys, ends): (Vec<&Vec<u8>>, Vec<i64>) = self.expired_end.iter().unzip();
        let mut columns: Vec<(String, ArrayRef)> = match &self.converter {
            Some(c) => {
                let parser = c.parser();
                let rows = keys.iter().map(|k| parser.parse(k));
                c.convert_rows(rows)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| (format!("key{i}"), a))
                    .collect()
            }
            None => Vec::new(),
        };
        columns.push(("end".to_string(), column(ends)));
        snapshot.add(EMITTED, RecordBatch::try_from_iter(columns)?)?;
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        let meta = snapshot.values(META)?;
        if meta.keys().any(|k| k != WATERMARK)
            || (!snapshot.is_empty() && !meta.contains_key(WATERMARK))
        {
            return Err(corrupt("unexpected session window values"));
        }
        self.watermark = meta.get(WATERMARK).copied().flatten();
        let input_types: Vec<&DataType> = self.info.schema.fields()[self.input_columns()]
            .iter()
            .map(|f| f.data_type())
            .collect();
        let ints = |batch: &RecordBatch, name: &str| -> EngineResult<Int64Array> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .filter(|c| c.null_count() == 0)
                .cloned()
                .ok_or_else(|| corrupt(format!("session window state without {name}")))
        };
        let rows = match snapshot.table(ROWS).as_slice() {
            [] => None,
            [rows] => {
                let types: Vec<&DataType> = rows.columns().iter().map(|c| c.data_type()).collect();
                if types != input_types {
                    return Err(corrupt("session window rows of another schema"));
                }
                Some(rows.clone())
            }
            _ => return Err(corrupt("session window rows in several batches")),
        };
        let keys = match (&self.converter, &rows) {
            (Some(c), Some(rows)) => {
                let columns: Vec<ArrayRef> = self
                    .key_indices
                    .iter()
                    .map(|i| Arc::clone(rows.column(*i)))
                    .collect();
                Some(c.convert_columns(&columns)?)
            }
            _ => None,
        };
        let updating = self.emit.is_updating();
        let mut next = 0usize;
        for batch in snapshot.table(SESSIONS) {
            if batch.num_columns() != 3 + if updating { SHOWN.len() } else { 0 } {
                return Err(corrupt("session window sessions of another shape"));
            }
            let (starts, lasts, counts) = (
                ints(&batch, "start")?,
                ints(&batch, "last")?,
                ints(&batch, "rows")?,
            );
            let shown: Vec<Int64Array> = if updating {
                SHOWN
                    .iter()
                    .map(|name| {
                        batch
                            .column_by_name(name)
                            .and_then(|c| c.as_primitive_opt::<Int64Type>())
                            .cloned()
                            .ok_or_else(|| corrupt(format!("session window state without {name}")))
                    })
                    .collect::<EngineResult<_>>()?
            } else {
                Vec::new()
            };
            for i in 0..batch.num_rows() {
                let count = usize::try_from(counts.value(i)).unwrap_or(0);
                let end = next
                    .checked_add(count)
                    .filter(|end| count > 0 && *end <= rows.as_ref().map_or(0, |r| r.num_rows()))
                    .ok_or_else(|| corrupt("a session without its rows"))?;
                let key: Vec<u8> = keys
                    .as_ref()
                    .map_or(Vec::new(), |k| k.row(next).data().to_vec());
                if keys
                    .as_ref()
                    .is_some_and(|k| (next..end).any(|r| k.row(r).data() != key))
                {
                    return Err(corrupt("a session of several keys"));
                }
                let shown = match shown.as_slice() {
                    [s, e, n] if s.is_valid(i) && e.is_valid(i) && n.is_valid(i) => {
                        let rows = usize::try_from(n.value(i))
                            .ok()
                            .filter(|n| *n <= count)
                            .ok_or_else(|| corrupt("a session that showed rows it lacks"))?;
                        Some(Shown {
                            start: s.value(i),
                            end: e.value(i),
                            rows,
                        })
                    }
                    [s, e, n] if s.is_valid(i) || e.is_valid(i) || n.is_valid(i) => {
                        return Err(corrupt("a session's emitted bounds in part"));
                    }
                    _ => None,
                };
                self.sessions.entry(key).or_default().push(Session {
                    start: starts.value(i),
                    last: lasts.value(i),
                    rows: (next..end).map(|r| (0, r as u32)).collect(),
                    shown,
                });
                next = end;
            }
        }
        if let Some(rows) = rows {
            if next != rows.num_rows() {
                return Err(corrupt("session window rows of no session"));
            }
            self.batches.insert(0, (rows, next));
            self.next_batch = 1;
        }
        for batch in snapshot.table(EMITTED) {
            let key_columns = self.key_indices.len();
            if batch.num_columns() != key_columns + 1 {
                return Err(corrupt("session window emitted ends of another shape"));
            }
            let ends = ints(&batch, "end")?;
            let keys = match &self.converter {
                Some(c) => {
                    let columns = &batch.columns()[..key_columns];
                    for (column, i) in columns.iter().zip(&self.key_indices) {
                        if Some(column.data_type()) != input_types.get(*i).copied() {
                            return Err(corrupt("a session window key of another type"));
                        }
                    }
                    Some(c.convert_columns(columns)?)
                }
                None => None,
            };
            for i in 0..batch.num_rows() {
                let key = keys
                    .as_ref()
                    .map_or(Vec::new(), |k| k.row(i).data().to_vec());
                self.expired_end.insert(key, ends.value(i));
            }
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        vec![StateUsage {
            table: ROWS,
            rows: self.open_rows(),
            bytes: self
                .batches
                .values()
                .map(|(b, _)| b.get_array_memory_size())
                .sum(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;
    use crate::operators::checkpoint_harness::{
        Lcg, Step, check_every_cut, final_rows, restore_declared, shifted,
    };
    use crate::runtime::message::Message;

    const MS: i64 = 1_000_000;
    const GAP: i64 = 5_000 * MS;

    fn ts_type() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, None)
    }

    fn operator() -> SessionWindowOperator {
        operator_by(vec![0])
    }

    fn operator_by(keys: Vec<usize>) -> SessionWindowOperator {
        operator_emitting(keys, Emission::default())
    }

    /// A session window emitting as `emit` says (a changelog when it is updating).
    fn operator_emitting(keys: Vec<usize>, emit: Emission) -> SessionWindowOperator {
        let op = emit
            .is_updating()
            .then(|| Field::new("__op", DataType::Utf8, false));
        let schema = Arc::new(Schema::new(
            op.into_iter()
                .chain([
                    Field::new("k", DataType::Int64, false),
                    Field::new("ts", ts_type(), true),
                    Field::new("window_start", ts_type(), false),
                    Field::new("window_end", ts_type(), false),
                    Field::new("window_time", ts_type(), false),
                ])
                .collect::<Vec<_>>(),
        ));
        SessionWindowOperator::try_new(
            OperatorInfo {
                name: "Window".to_string(),
                schema,
            },
            GAP,
            emit,
            1,
            keys,
            &[DataType::Int64, ts_type()],
        )
        .unwrap()
    }

    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", ts_type(), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap()
    }

    /// Column `i` of `b` as BIGINT (timestamps in ms).
    fn ints(b: &RecordBatch, i: usize) -> Int64Array {
        cast(b.column(i), &DataType::Int64)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    }

    /// Emitted rows as (key, ts, start, end) in ms, sorted.
    fn rows(out: &mut OperatorContext) -> Vec<(i64, i64, i64, i64)> {
        let mut rows = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let int = |i: usize| ints(&b, i);
                let (k, t, s, e) = (int(0), int(1), int(2), int(3));
                for r in 0..b.num_rows() {
                    rows.push((k.value(r), t.value(r), s.value(r), e.value(r)));
                }
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn rows_exactly_a_gap_apart_share_a_session_and_bridges_merge() {
        let mut op = operator();
        let mut out = OperatorContext::default();
        // Key 1: 0 and 5000 are exactly one gap apart -> one session [0, 10000).
        // Key 2: sessions [0, 5000) and [9000, 14000), then 4500 bridges them.
        op.on_batch(0, batch(&[(1, 0), (1, 5000), (2, 0), (2, 9000)]), &mut out)
            .unwrap();
        op.on_batch(0, batch(&[(2, 4500)]), &mut out).unwrap();
        // Nothing closes before its end.
        op.on_watermark(9_999 * MS, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![]);
        op.on_watermark(10_000 * MS, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![(1, 0, 0, 10_000), (1, 5000, 0, 10_000)]
        );
        op.on_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![
                (2, 0, 0, 14_000),
                (2, 4500, 0, 14_000),
                (2, 9000, 0, 14_000)
            ]
        );
        assert_eq!(
            op.state_usage()[0].rows,
            0,
            "closed sessions free their rows"
        );
        assert!(
            op.batches.is_empty(),
            "no batch is kept once its rows are emitted"
        );
        assert_eq!(out.late_rows(), 0);
    }

    #[test]
    fn a_row_touching_an_emitted_session_is_late() {
        let mut op = operator();
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 0)]), &mut out).unwrap();
        op.on_watermark(6_000 * MS, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![(1, 0, 0, 5000)]);
        // 4000 is within a gap of the emitted row at 0: it belongs to that session.
        op.on_batch(0, batch(&[(1, 4_000)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1);
        // 5500 is more than a gap after 0 (a session of its own) and not behind the
        // watermark by a whole gap: on time.
        op.on_batch(0, batch(&[(1, 5_500)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1);
        op.on_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![(1, 5_500, 5_500, 10_500)]);
        assert!(op.expired_end.is_empty() || op.sessions.is_empty());
    }

    #[test]
    fn a_row_whose_session_already_closed_is_late() {
        let mut op = operator();
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 0), (1, 20_000)]), &mut out)
            .unwrap();
        op.on_watermark(12_000 * MS, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![(1, 0, 0, 5000)]);
        // Behind the watermark but touching the open session [20000, 25000): merged.
        op.on_batch(0, batch(&[(1, 15_000)]), &mut out).unwrap();
        // Behind the watermark, alone, its session would have closed at 7000: late.
        op.on_batch(0, batch(&[(1, 2_000)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1);
        op.on_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![(1, 15_000, 15_000, 25_000), (1, 20_000, 15_000, 25_000)]
        );
    }

    /// Rows of (k, ts ms or NULL).
    fn batch_with_nulls(rows: &[(i64, Option<i64>)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", ts_type(), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap()
    }

    fn checkpoint_sequence(seed: u64) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut steps = Vec::new();
        let mut watermark = 0;
        for _ in 0..40 {
            if rng.next(3) == 0 {
                watermark += 2000 + rng.next(10) as i64 * 1000;
                steps.push(Step::Watermark(watermark * MS));
                continue;
            }
            let rows: Vec<(i64, Option<i64>)> = (0..1 + rng.next(3))
                .map(|_| {
                    let ts = (watermark + rng.next(24) as i64 * 1000 - 9000).max(0);
                    (rng.next(6) as i64, (rng.next(10) != 0).then_some(ts))
                })
                .collect();
            steps.push(Step::Batch(batch_with_nulls(&rows)));
        }
        steps.push(Step::End);
        steps
    }

    #[test]
    fn restores_at_every_cut() {
        for (keys, seed) in [(vec![0], 1), (vec![0], 2), (vec![], 3)] {
            let make = || Box::new(operator_by(keys.clone())) as Box<dyn Operator>;
            let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
            let tables = state_tables(&names);
            let (output, late) = check_every_cut(&make, &tables, &checkpoint_sequence(seed));
            assert!(output.iter().filter(|m| m.starts_with('+')).count() > 1);
            assert!(late > 0, "the sequence has late rows");
        }
    }

    #[test]
    fn a_snapshot_of_another_shape_is_refused() {
        let mut op = operator();
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 0), (2, 20_000)]), &mut out)
            .unwrap();
        op.on_watermark(6_000 * MS, &mut out).unwrap();
        let good = op.snapshot(1).unwrap();
        assert_eq!(good.table(EMITTED)[0].num_rows(), 1);
        let fresh = || operator();
        fresh().restore(StateSnapshot::new()).unwrap();
        // Rows of another schema.
        let mut wrong = good.clone().without(ROWS);
        wrong
            .add(ROWS, good.table(ROWS)[0].project(&[1, 0]).unwrap())
            .unwrap();
        assert!(fresh().restore(wrong).is_err());
        // Sessions without their rows.
        assert!(fresh().restore(good.clone().without(ROWS)).is_err());
        // Another operator's table.
        let mut foreign = good.clone();
        foreign.add("slices", batch(&[(1, 0)])).unwrap();
        let declared = state_tables(&["k".to_string()]);
        assert!(restore_declared(&mut fresh(), &declared, foreign).is_err());
        // Emitted ends without their key.
        let mut keyless = good.clone().without(EMITTED);
        keyless
            .add(EMITTED, good.table(EMITTED)[0].project(&[1]).unwrap())
            .unwrap();
        assert!(fresh().restore(keyless).is_err());
        // State without its watermark.
        assert!(fresh().restore(good.clone().without("meta")).is_err());
        fresh().restore(good).unwrap();
    }

    /// Emitted changes as `op key ts [start, end)` in ms, in order.
    fn changes(out: &mut OperatorContext) -> Vec<String> {
        let mut changes = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let op = b.column(0).as_string::<i32>().clone();
                let int = |i: usize| ints(&b, i);
                let (k, t, s, e) = (int(1), int(2), int(3), int(4));
                for r in 0..b.num_rows() {
                    changes.push(format!(
                        "{} {} {} [{}, {})",
                        op.value(r),
                        k.value(r),
                        t.value(r),
                        s.value(r),
                        e.value(r)
                    ));
                }
            }
        }
        changes
    }

    const ON_UPDATE: Emission = Emission {
        on_update: true,
        lateness: 0,
    };
    const LATENESS: Emission = Emission {
        on_update: false,
        lateness: 3_000 * MS,
    };
    const BOTH: Emission = Emission {
        on_update: true,
        lateness: 3_000 * MS,
    };

    #[test]
    fn emit_on_update_emits_rows_at_once_and_re_emits_a_session_that_grows_or_merges() {
        let mut op = operator_emitting(vec![0], ON_UPDATE);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 0)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), ["+ 1 0 [0, 5000)"]);
        // The session grows: its row is retracted with the old bounds, both come with the new.
        op.on_batch(0, batch(&[(1, 3_000)]), &mut out).unwrap();
        assert_eq!(
            changes(&mut out),
            ["- 1 0 [0, 5000)", "+ 1 0 [0, 8000)", "+ 1 3000 [0, 8000)"]
        );
        // A row within the bounds is only added.
        op.on_batch(0, batch(&[(1, 2_000)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), ["+ 1 2000 [0, 8000)"]);
        op.on_batch(0, batch(&[(1, 12_000), (2, 0)]), &mut out)
            .unwrap();
        assert_eq!(
            changes(&mut out),
            ["+ 2 0 [0, 5000)", "+ 1 12000 [12000, 17000)"]
        );
        // 7000 bridges [0, 8000) and [12000, 17000): both retract, the union comes.
        op.on_batch(0, batch(&[(1, 7_000)]), &mut out).unwrap();
        assert_eq!(
            changes(&mut out),
            [
                "- 1 0 [0, 8000)",
                "- 1 3000 [0, 8000)",
                "- 1 2000 [0, 8000)",
                "- 1 12000 [12000, 17000)",
                "+ 1 0 [0, 17000)",
                "+ 1 3000 [0, 17000)",
                "+ 1 2000 [0, 17000)",
                "+ 1 12000 [0, 17000)",
                "+ 1 7000 [0, 17000)",
            ]
        );
        // Closing emits nothing more; without lateness the sessions go at once.
        op.on_watermark(17_000 * MS, &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        assert_eq!(op.state_usage()[0].rows, 0);
        assert!(op.batches.is_empty());
        op.on_batch(0, batch(&[(1, 16_000)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1, "touches a closed session");
    }

    #[test]
    fn allowed_lateness_emits_on_close_and_updates_a_closed_session_within_it() {
        let mut op = operator_emitting(vec![0], LATENESS);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 0), (1, 2_000)]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        op.on_watermark(7_000 * MS, &mut out).unwrap();
        assert_eq!(changes(&mut out), ["+ 1 0 [0, 7000)", "+ 1 2000 [0, 7000)"]);
        // Behind the watermark, it extends the closed session past it: retracted, and
        // emitted again when it closes.
        op.on_batch(0, batch(&[(1, 6_000)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), ["- 1 0 [0, 7000)", "- 1 2000 [0, 7000)"]);
        op.on_watermark(11_000 * MS, &mut out).unwrap();
        assert_eq!(
            changes(&mut out),
            [
                "+ 1 0 [0, 11000)",
                "+ 1 2000 [0, 11000)",
                "+ 1 6000 [0, 11000)"
            ]
        );
        // Closed but within the lateness (it expires at 14000): a row inside it is added.
        op.on_batch(0, batch(&[(1, 1_000)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), ["+ 1 1000 [0, 11000)"]);
        assert_eq!(out.late_rows(), 0);
        op.on_watermark(14_000 * MS, &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        assert_eq!(
            op.state_usage()[0].rows,
            0,
            "expired sessions free their rows"
        );
        // Touching the expired session: late. Alone and past the lateness: late. Alone
        // within it: a session of its own, already closed, emitted at once.
        op.on_batch(0, batch(&[(1, 100), (2, 0), (2, 7_000)]), &mut out)
            .unwrap();
        assert_eq!(out.late_rows(), 2);
        assert_eq!(changes(&mut out), ["+ 2 7000 [7000, 12000)"]);
        op.on_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        assert!(op.batches.is_empty());
    }

    #[test]
    fn updating_emissions_end_with_the_rows_of_emission_on_close() {
        let mut lateness_took_rows = 0;
        for seed in 1..=6 {
            let steps = checkpoint_sequence(seed);
            for keys in [vec![0], vec![]] {
                let on_close = final_rows(&mut operator_by(keys.clone()), &steps, false);
                assert!(on_close.len() > 5);
                // EMIT ON UPDATE: the same sessions, the same late rows, the same rows.
                let mut op = operator_emitting(keys.clone(), ON_UPDATE);
                assert_eq!(final_rows(&mut op, &steps, true), on_close, "seed {seed}");
                // Allowed lateness of 3 s: what emission on close gives when every watermark
                // comes 3 s later.
                let expected = final_rows(
                    &mut operator_by(keys.clone()),
                    &shifted(&steps, 3_000 * MS),
                    false,
                );
                lateness_took_rows += usize::from(expected != on_close);
                for emit in [LATENESS, BOTH] {
                    let mut op = operator_emitting(keys.clone(), emit);
                    assert_eq!(final_rows(&mut op, &steps, true), expected, "seed {seed}");
                }
            }
        }
        assert!(lateness_took_rows > 3, "the lateness takes rows in");
    }

    #[test]
    fn updating_emissions_restore_at_every_cut() {
        for (emit, seed) in [(ON_UPDATE, 4), (LATENESS, 5), (BOTH, 6), (LATENESS, 7)] {
            let mut retracted = false;
            for keys in [vec![0], vec![]] {
                let make = || Box::new(operator_emitting(keys.clone(), emit)) as Box<dyn Operator>;
                let names: Vec<String> = keys.iter().map(|k| format!("k{k}")).collect();
                let (output, late) =
                    check_every_cut(&make, &state_tables(&names), &checkpoint_sequence(seed));
                retracted |= output.iter().any(|m| m.contains("| - "));
                assert!(late > 0, "the sequence has late rows");
            }
            assert!(
                retracted,
                "{emit:?}, seed {seed}: the sequence retracts emitted rows"
            );
        }
    }

    #[test]
    fn a_snapshot_of_the_other_emission_is_refused() {
        let mut op = operator_emitting(vec![0], LATENESS);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 0), (2, 20_000)]), &mut out)
            .unwrap();
        op.on_watermark(6_000 * MS, &mut out).unwrap();
        let updating = op.snapshot(1).unwrap();
        assert!(operator().restore(updating.clone()).is_err());
        let mut op = operator();
        op.on_batch(0, batch(&[(1, 0)]), &mut out).unwrap();
        let on_close = op.snapshot(1).unwrap();
        assert!(
            operator_emitting(vec![0], LATENESS)
                .restore(on_close)
                .is_err()
        );
        operator_emitting(vec![0], LATENESS)
            .restore(updating)
            .unwrap();
    }
}
