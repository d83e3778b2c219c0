//! `WindowAggregateOperator`: `GROUP BY window_start, window_end, keys...` over a window TVF,
//! emitting each window's final rows once the watermark passes its end, or, when it emits
//! early results or allows lateness, a changelog of each window's rows.
//!
//! Rows are aggregated into *slices*: for TUMBLE a slice is the window, for HOP a
//! `gcd(slide, size)` pane, for CUMULATE one step (the window TVF upstream tags each row with
//! its slice instead of copying it into every window). When a window fires, its slices'
//! intermediate states are merged, so a row is aggregated once however many windows hold it.
//! Rows that already carry a whole window (SESSION, or a TVF whose window columns are used
//! before the aggregate) are aggregated per window, one slice each.
//!
//! Emission ([`Emission`]): by default final rows only (no updates), when the watermark passes
//! a window's end. With `EMIT ON UPDATE` the rows are a changelog led by `__op`: after each
//! input batch, every window the batch changed emits, per group whose values changed, `-` with
//! the values it last emitted (unless new) and `+` with its current values; nothing more is
//! emitted when the window closes, so its last `+` rows are the final rows. With an allowed
//! lateness (and emission on close) a window emits its `+` rows when the watermark passes its
//! end, and a later row that still falls within the lateness updates it the same way (`-` old,
//! `+` new) after the batch that brought it. A window's current values are read from its
//! slices without consuming them (each slice's live groups are turned into their state and
//! rebuilt, as a checkpoint does).
//!
//! State: the live slices, each with DataFusion accumulators per group and the intermediate
//! states taken when one of its windows fired; in the updating modes, also the rows each open
//! window last emitted. A window *expires* when the watermark passes its end plus the allowed
//! lateness (0 without one, so it expires as it fires); a slice is freed once every window
//! holding it has expired, and so are a window's emitted rows. Lateness: a row is late for a
//! window that has expired; it still counts towards its slice's other windows (HOP, CUMULATE),
//! and is dropped and counted only when all of them have expired (as Flink counts). Watermark:
//! forwarded after the windows it closes are emitted.
//!
//! Snapshot: the watermark, and every slice (its bounds) with its taken states and its live
//! groups' intermediate state (`GroupsState` batches: key columns, then each aggregate's
//! state columns); in the updating modes, each open window's emitted rows. The live groups
//! are rebuilt from that state at the snapshot, as a restore rebuilds them, so later results
//! are the same either way. The late-row count is the context's, checkpointed by the runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;

use super::accumulators::{AggregateExprs, Groups, GroupsState};
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::operators::window::{MILLISECOND, Span, WindowKind};
use crate::runtime::message::Epoch;
use crate::runtime::message::EventTime;
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// Snapshot tables and values.
const META: &str = "meta";
const SLICES: &str = "slices";
const GROUPS: &str = "groups";
const EMITTED: &str = "emitted";
const WATERMARK: &str = "watermark";

/// The state tables of a window aggregate grouping by `keys` (as the plan names them), over
/// slices shared by windows (`sliced`) or whole windows; an `updating` one (early results or
/// an allowed lateness) also keeps the rows each open window last emitted.
pub fn state_tables(keys: &[String], sliced: bool, updating: bool) -> Vec<StateTable> {
    let unit = if sliced { "slice" } else { "window" };
    let mut key = vec![unit.to_string()];
    key.extend(keys.iter().cloned());
    let mut window_key = vec!["window".to_string()];
    window_key.extend(keys.iter().cloned());
    let emitted = updating.then(|| {
        StateTable::new(
            EMITTED,
            window_key,
            "values last emitted per open window and key",
            Freed::Watermark,
        )
    });
    [
        StateTable::fixed(META, "the watermark"),
        StateTable::index(
            SLICES,
            vec![unit.to_string()],
            "bounds and taken states of an open one",
            Freed::Watermark,
        ),
        StateTable::new(
            GROUPS,
            key,
            if sliced {
                "aggregates per open slice and key"
            } else {
                "aggregates per open window and key"
            },
            Freed::Watermark,
        ),
    ]
    .into_iter()
    .chain(emitted)
    .collect()
}

/// Which window bound an input or output column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowColumn {
    Start,
    End,
    Time,
}

/// A window-bound column of the input: its index, what it holds, and nanoseconds per unit.
#[derive(Debug, Clone, Copy)]
pub struct BoundColumn {
    pub index: usize,
    pub column: WindowColumn,
    pub unit_ns: i64,
}

/// What each output column is.
#[derive(Debug, Clone, Copy)]
pub enum OutputColumn {
    /// A window bound, written in the output field's type.
    Window(WindowColumn),
    /// The i-th interned key column (group keys, then `__grouping_id`).
    Key(usize),
    /// The i-th aggregate.
    Aggregate(usize),
}

/// When a window aggregate emits its rows, and how long a window takes late rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Emission {
    /// `EMIT ON UPDATE`: a changelog of each window's current rows after every batch.
    pub on_update: bool,
    /// `allowed.lateness` in nanoseconds (0: none): how long after it fires a window still
    /// takes rows, re-emitting its changed rows.
    pub lateness: i64,
}

impl Emission {
    /// True when the rows are a changelog (led by `__op`) rather than final rows.
    pub fn is_updating(&self) -> bool {
        self.on_update || self.lateness > 0
    }
}

/// How rows map to slices and slices to windows.
#[derive(Debug, Clone)]
pub struct Windowing {
    pub kind: WindowKind,
    /// True when input rows carry their slice (fused with the TVF), false when they carry
    /// their whole window.
    pub sliced: bool,
    /// A window fires when `watermark >= window_end - lag` (the time column's resolution, or 0
    /// for sessions, which a row exactly at their end still extends).
    pub lag: i64,
    /// The input columns the slice or window is read from.
    pub bounds: Vec<BoundColumn>,
    pub emit: Emission,
}

/// The window-bound columns of one batch.
pub struct BoundValues {
    columns: Vec<(BoundColumn, Int64Array)>,
}

impl BoundValues {
    pub fn read(bounds: &[BoundColumn], batch: &RecordBatch) -> EngineResult<Self> {
        let columns = bounds
            .iter()
            .map(|b| {
                let c = cast(batch.column(b.index), &DataType::Int64)?;
                Ok((*b, c.as_primitive::<Int64Type>().clone()))
            })
            .collect::<EngineResult<Vec<_>>>()?;
        Ok(Self { columns })
    }

    /// The start and end (nanoseconds) row `row` carries, as far as its columns tell
    /// (`window_time` gives the end: it is end - 1 ms); `None` if a bound is NULL.
    pub fn at(&self, row: usize) -> Option<(Option<i64>, Option<i64>)> {
        let (mut start, mut end) = (None, None);
        for (bound, values) in &self.columns {
            if values.is_null(row) {
                return None;
            }
            let v = values.value(row).checked_mul(bound.unit_ns)?;
            match bound.column {
                WindowColumn::Start => start = Some(v),
                WindowColumn::End => end = Some(v),
                WindowColumn::Time => end = end.or(Some(v + MILLISECOND)),
            }
        }
        Some((start, end))
    }
}

impl BoundValues {
    /// The rows of the batch grouped by the window of `kind` they carry (rows whose bounds
    /// are NULL are in none).
    pub fn rows_by_window(&self, kind: &WindowKind, rows: usize) -> BTreeMap<Span, Vec<u32>> {
        let mut by_window: BTreeMap<Span, Vec<u32>> = BTreeMap::new();
        for row in 0..rows {
            if let Some(w) = self
                .at(row)
                .and_then(|(start, end)| kind.window_from_bounds(start, end))
            {
                by_window.entry(w).or_default().push(row as u32);
            }
        }
        by_window
    }
}

impl Windowing {
    /// The slice (or window) of row `row`, from the bound columns.
    fn span_of(&self, bounds: &BoundValues, row: usize) -> Option<Span> {
        let (start, end) = bounds.at(row)?;
        if self.sliced {
            let width = self.kind.slice_width()?;
            match (start, end) {
                (Some(s), _) => Some(Span::new(s, s + width)),
                (None, Some(e)) => Some(Span::new(e - width, e)),
                _ => None,
            }
        } else {
            self.kind.window_from_bounds(start, end)
        }
    }

    fn windows_of(&self, span: Span) -> Vec<Span> {
        if self.sliced {
            self.kind.windows_of_slice(span)
        } else {
            vec![span]
        }
    }

    fn slices_of(&self, window: Span) -> Vec<Span> {
        if self.sliced {
            self.kind.slices_of_window(window)
        } else {
            vec![window]
        }
    }

    fn fires_at(&self, window: Span, watermark: Option<EventTime>) -> bool {
        window.closed_by(self.lag, watermark)
    }

    /// True once `watermark` is past the window's end plus the allowed lateness: its state is
    /// gone and a row for it is late.
    fn expires_at(&self, window: Span, watermark: Option<EventTime>) -> bool {
        window.closed_by(self.lag.saturating_sub(self.emit.lateness), watermark)
    }
}

/// The rows a window last emitted: per group key, its aggregate values.
type Emitted = HashMap<Vec<ScalarValue>, Vec<ScalarValue>>;

#[derive(Default)]
struct Slice {
    /// Groups aggregating new rows.
    live: Option<Groups>,
    /// States taken from `live` when one of the slice's windows fired.
    states: Vec<GroupsState>,
}

pub struct WindowAggregateOperator {
    info: OperatorInfo,
    exprs: AggregateExprs,
    windowing: Windowing,
    output: Vec<OutputColumn>,
    slices: BTreeMap<Span, Slice>,
    /// In the updating modes, the rows each window emitted, until it expires.
    emitted: BTreeMap<Span, Emitted>,
    watermark: Option<EventTime>,
}

impl WindowAggregateOperator {
    pub fn new(
        info: OperatorInfo,
        exprs: AggregateExprs,
        windowing: Windowing,
        output: Vec<OutputColumn>,
    ) -> Self {
        Self {
            info,
            exprs,
            windowing,
            output,
            slices: BTreeMap::new(),
            emitted: BTreeMap::new(),
            watermark: None,
        }
    }

    fn updating(&self) -> bool {
        self.windowing.emit.is_updating()
    }

    /// The current groups of `window`, merged from its slices without consuming them
    /// (`live` caches each slice's live state for the windows of one round); `None` when no
    /// slice of it holds a row.
    fn current(
        &mut self,
        window: Span,
        live: &mut HashMap<Span, GroupsState>,
    ) -> EngineResult<Option<Groups>> {
        let mut merged: Option<Groups> = None;
        for span in self.windowing.slices_of(window) {
            let Some(slice) = self.slices.get_mut(&span) else {
                continue;
            };
            let groups = match merged.as_mut() {
                Some(g) => g,
                None => merged.insert(Groups::try_new(&self.exprs)?),
            };
            for state in &slice.states {
                groups.merge(state)?;
            }
            if let Some(l) = slice.live.as_mut() {
                let state = match live.entry(span) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(l.snapshot(&self.exprs)?)
                    }
                };
                groups.merge(state)?;
            }
        }
        Ok(merged)
    }

    /// Emits the changes of `windows` (in that order) since they last emitted: per group
    /// whose values changed, `-` with the old values (unless new), then `+` with the new.
    fn emit_changes(&mut self, windows: &[Span], out: &mut OperatorContext) -> EngineResult<()> {
        let mut live = HashMap::new();
        for &window in windows {
            let Some(groups) = self.current(window, &mut live)? else {
                continue;
            };
            let rows = groups.num_groups();
            if rows == 0 {
                continue;
            }
            let (keys, values) = groups.evaluate(&self.exprs)?;
            let emitted = self.emitted.entry(window).or_default();
            let mut ops: Vec<&str> = Vec::new();
            let mut changed_keys: Vec<Vec<ScalarValue>> = vec![Vec::new(); keys.len()];
            let mut changed_values: Vec<Vec<ScalarValue>> = vec![Vec::new(); values.len()];
            let mut push = |op, key: &[ScalarValue], row: &[ScalarValue]| {
                ops.push(op);
                for (column, v) in changed_keys.iter_mut().zip(key) {
                    column.push(v.clone());
                }
                for (column, v) in changed_values.iter_mut().zip(row) {
                    column.push(v.clone());
                }
            };
            for r in 0..rows {
                let key = keys
                    .iter()
                    .map(|k| ScalarValue::try_from_array(k, r))
                    .collect::<Result<Vec<_>, _>>()?;
                let row = values
                    .iter()
                    .map(|v| ScalarValue::try_from_array(v, r))
                    .collect::<Result<Vec<_>, _>>()?;
                match emitted.get(&key) {
                    Some(old) if *old == row => continue,
                    Some(old) => push("-", &key, old),
                    None => {}
                }
                push("+", &key, &row);
                emitted.insert(key, row);
            }
            if ops.is_empty() {
                continue;
            }
            let n = ops.len();
            let schema = Arc::clone(&self.info.schema);
            let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(ops))];
            for (column, field) in self.output.iter().zip(schema.fields().iter().skip(1)) {
                columns.push(match column {
                    OutputColumn::Key(i) => {
                        ScalarValue::iter_to_array(std::mem::take(&mut changed_keys[*i]))?
                    }
                    OutputColumn::Aggregate(i) => {
                        ScalarValue::iter_to_array(std::mem::take(&mut changed_values[*i]))?
                    }
                    OutputColumn::Window(w) => {
                        window_array(bound(window, *w), field.data_type(), n)?
                    }
                });
            }
            out.batch(super::conform_batch(&schema, columns)?);
        }
        Ok(())
    }

    /// Adds `batch`'s rows (all in `span`) to the slice.
    fn add(&mut self, span: Span, batch: &RecordBatch) -> EngineResult<()> {
        let slice = self.slices.entry(span).or_default();
        if slice.live.is_none() {
            slice.live = Some(Groups::try_new(&self.exprs)?);
        }
        if let Some(live) = slice.live.as_mut() {
            live.update(&self.exprs, batch)?;
        }
        Ok(())
    }

    /// Emits `window`'s rows.
    fn fire(&mut self, window: Span, out: &mut OperatorContext) -> EngineResult<()> {
        let slices = self.windowing.slices_of(window);
        let present: Vec<Span> = slices
            .into_iter()
            .filter(|s| self.slices.contains_key(s))
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        // A window that is its only slice's only window (TUMBLE, SESSION) is evaluated
        // directly from the slice's accumulators.
        let single = present.len() == 1 && {
            let span = present[0];
            self.slices[&span].states.is_empty() && self.windowing.windows_of(span).len() == 1
        };
        let groups = if single {
            match self.slices.get_mut(&present[0]).and_then(|s| s.live.take()) {
                Some(live) => live,
                None => return Ok(()),
            }
        } else {
            let mut merged = Groups::try_new(&self.exprs)?;
            for span in &present {
                let Some(slice) = self.slices.get_mut(span) else {
                    continue;
                };
                if let Some(live) = slice.live.take() {
                    slice.states.push(live.into_state()?);
                }
                for state in &slice.states {
                    merged.merge(state)?;
                }
            }
            merged
        };
        if groups.num_groups() == 0 {
            return Ok(());
        }
        let rows = groups.num_groups();
        let (keys, values) = groups.evaluate(&self.exprs)?;
        let schema = Arc::clone(&self.info.schema);
        let columns = self
            .output
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| -> EngineResult<ArrayRef> {
                Ok(match column {
                    OutputColumn::Key(i) => Arc::clone(&keys[*i]),
                    OutputColumn::Aggregate(i) => Arc::clone(&values[*i]),
                    OutputColumn::Window(w) => {
                        window_array(bound(window, *w), field.data_type(), rows)?
                    }
                })
            })
            .collect::<EngineResult<Vec<_>>>()?;
        out.batch(super::conform_batch(&schema, columns)?);
        Ok(())
    }
}

/// The bound `column` of `window`, in nanoseconds.
fn bound(window: Span, column: WindowColumn) -> i64 {
    match column {
        WindowColumn::Start => window.start,
        WindowColumn::End => window.end,
        WindowColumn::Time => window.end - MILLISECOND,
    }
}

/// A column of `rows` copies of the timestamp `ns`, in `data_type`.
fn window_array(ns: i64, data_type: &DataType, rows: usize) -> EngineResult<ArrayRef> {
    let unit_ns = match data_type {
        DataType::Timestamp(unit, _) => crate::operators::window::unit_nanos(*unit),
        other => {
            return Err(EngineError::Internal(format!(
                "window column of type {other}"
            )));
        }
    };
    let values: ArrayRef = Arc::new(Int64Array::from_value(ns / unit_ns, rows));
    Ok(cast(&values, data_type)?)
}

impl Operator for WindowAggregateOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let bounds = BoundValues::read(&self.windowing.bounds, &batch)?;
        // Rows grouped by slice, in order of first appearance. In-order input holds one or
        // two slices per batch, in runs: a row is compared with its predecessor's slice, and
        // only a change of slice looks the slice up.
        let mut groups: Vec<(Span, Vec<u32>)> = Vec::new();
        let mut index: HashMap<Span, usize> = HashMap::new();
        let mut current: Option<usize> = None;
        for row in 0..batch.num_rows() {
            let Some(span) = self.windowing.span_of(&bounds, row) else {
                continue;
            };
            let at = match current {
                Some(at) if groups[at].0 == span => at,
                _ => *index.entry(span).or_insert_with(|| {
                    groups.push((span, Vec::new()));
                    groups.len() - 1
                }),
            };
            groups[at].1.push(row as u32);
            current = Some(at);
        }
        let whole = groups.len() == 1 && groups[0].1.len() == batch.num_rows();
        // Updating: the windows the batch changes that emit now (open ones with EMIT ON
        // UPDATE, fired ones within the lateness), by end.
        let mut changed: BTreeSet<(i64, i64)> = BTreeSet::new();
        for (span, rows) in groups {
            let windows = self.windowing.windows_of(span);
            let expired = windows
                .iter()
                .filter(|w| self.windowing.expires_at(**w, self.watermark))
                .count();
            // Late for every window: dropped and counted. Late for some (HOP, CUMULATE): it
            // still counts in the windows that have not expired.
            if expired == windows.len() {
                if expired > 0 {
                    // The input carries the row's slice, not its time: the latest time the
                    // slice holds stands for it.
                    let time = span.end - self.windowing.lag;
                    let late: Vec<_> = rows.iter().map(|r| (*r as usize, Some(time))).collect();
                    out.drop_late(&batch, &late)?;
                }
                continue;
            }
            if self.updating() {
                let emit = self.windowing.emit;
                changed.extend(
                    windows
                        .iter()
                        .filter(|w| {
                            !self.windowing.expires_at(**w, self.watermark)
                                && (emit.on_update || self.windowing.fires_at(**w, self.watermark))
                        })
                        .map(|w| (w.end, w.start)),
                );
            }
            if whole {
                self.add(span, &batch)?;
            } else {
                let indices = UInt32Array::from(rows);
                let part = take_record_batch(&batch, &indices)?;
                self.add(span, &part)?;
            }
        }
        let changed: Vec<Span> = changed.into_iter().map(|(e, s)| Span::new(s, e)).collect();
        self.emit_changes(&changed, out)
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
        let previous = self.watermark;
        self.watermark = Some(watermark);
        // Windows closing now: not closed by the previous watermark, closed by this one.
        let mut closing: BTreeSet<(i64, i64)> = BTreeSet::new();
        for span in self.slices.keys() {
            for w in self.windowing.windows_of(*span) {
                if self.windowing.fires_at(w, Some(watermark))
                    && !self.windowing.fires_at(w, previous)
                {
                    closing.insert((w.end, w.start));
                }
            }
        }
        if !self.updating() {
            for (end, start) in closing {
                self.fire(Span::new(start, end), out)?;
            }
        } else if !self.windowing.emit.on_update {
            // Emission on close within a lateness: the first `+` rows of each window.
            let closing: Vec<Span> = closing.into_iter().map(|(e, s)| Span::new(s, e)).collect();
            self.emit_changes(&closing, out)?;
        }
        let windowing = &self.windowing;
        self.emitted
            .retain(|w, _| !windowing.expires_at(*w, Some(watermark)));
        self.slices.retain(|span, _| {
            !windowing
                .windows_of(*span)
                .iter()
                .all(|w| windowing.expires_at(*w, Some(watermark)))
        });
        out.watermark(watermark);
        Ok(())
    }

    /// Tables: `meta` (the watermark), `slices` (one row per slice: start, end, how many taken
    /// states it has, whether it has live groups) and `groups` (per slice in that order, each
    /// taken state and then the live groups' state, as [`GroupsState::to_batch`] writes them).
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(META, &[(WATERMARK, self.watermark)])?;
        let (mut starts, mut ends, mut taken, mut live) = (vec![], vec![], vec![], vec![]);
        let mut groups = Vec::new();
        for (span, slice) in &mut self.slices {
            starts.push(span.start);
            ends.push(span.end);
            taken.push(slice.states.len() as i64);
            live.push(i64::from(slice.live.is_some()));
            for state in &slice.states {
                groups.push(state.to_batch(&self.exprs)?);
            }
            if let Some(g) = slice.live.as_mut() {
                groups.push(g.snapshot(&self.exprs)?.to_batch(&self.exprs)?);
            }
        }
        let column = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        snapshot.add(
            SLICES,
            RecordBatch::try_from_iter([
                ("start", column(starts)),
                ("end", column(ends)),
                ("states", column(taken)),
                ("live", column(live)),
            ])?,
        )?;
        for batch in groups {
            snapshot.add(GROUPS, batch)?;
        }
        for (window, rows) in &self.emitted {
            snapshot.add(EMITTED, emitted_batch(*window, rows)?)?;
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        let meta = snapshot.values(META)?;
        self.watermark = meta.get(WATERMARK).copied().flatten();
        if meta.keys().any(|k| k != WATERMARK)
            || (!snapshot.is_empty() && !meta.contains_key(WATERMARK))
        {
            return Err(corrupt("unexpected window aggregate values"));
        }
        let mut groups = snapshot.table(GROUPS).into_iter();
        self.slices.clear();
        for batch in snapshot.table(SLICES) {
            let column = |name: &str| -> EngineResult<Int64Array> {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_primitive_opt::<Int64Type>())
                    .filter(|c| c.null_count() == 0)
                    .cloned()
                    .ok_or_else(|| corrupt(format!("window aggregate slices without {name}")))
            };
            let (starts, ends) = (column("start")?, column("end")?);
            let (taken, live) = (column("states")?, column("live")?);
            for row in 0..batch.num_rows() {
                let mut next = || {
                    groups
                        .next()
                        .ok_or_else(|| corrupt("window aggregate slice without its groups"))
                        .and_then(|b| GroupsState::from_batch(&self.exprs, &b))
                };
                let mut slice = Slice::default();
                for _ in 0..taken.value(row).max(0) {
                    slice.states.push(next()?);
                }
                if live.value(row) != 0 {
                    slice.live = Some(Groups::from_state(&self.exprs, &next()?)?);
                }
                let span = Span::new(starts.value(row), ends.value(row));
                let width = span.end.checked_sub(span.start).filter(|w| *w > 0);
                if width.is_none()
                    || (self.windowing.sliced && width != self.windowing.kind.slice_width())
                {
                    return Err(corrupt(format!("window aggregate slice {span:?}")));
                }
                if self.slices.insert(span, slice).is_some() {
                    return Err(corrupt("a window aggregate slice twice"));
                }
            }
        }
        if groups.next().is_some() {
            return Err(corrupt("window aggregate groups of no slice"));
        }
        self.emitted.clear();
        let tables = snapshot.table(EMITTED);
        if !tables.is_empty() && !self.updating() {
            return Err(corrupt(
                "emitted rows of a window aggregate that emits final rows",
            ));
        }
        let key_columns = self.exprs.num_key_columns();
        let values = self.exprs.aggregates.len();
        for batch in tables {
            if batch.num_columns() != 2 + key_columns + values || batch.num_rows() == 0 {
                return Err(corrupt("window aggregate emitted rows of another shape"));
            }
            let bound = |i: usize| {
                batch
                    .column(i)
                    .as_primitive_opt::<Int64Type>()
                    .filter(|c| c.null_count() == 0)
                    .map(|c| c.value(0))
                    .ok_or_else(|| corrupt("window aggregate emitted rows without their window"))
            };
            let window = Span::new(bound(0)?, bound(1)?);
            let mut rows = Emitted::new();
            for r in 0..batch.num_rows() {
                let scalars = |range: std::ops::Range<usize>| {
                    range
                        .map(|c| ScalarValue::try_from_array(batch.column(c), r))
                        .collect::<Result<Vec<_>, _>>()
                };
                rows.insert(
                    scalars(2..2 + key_columns)?,
                    scalars(2 + key_columns..batch.num_columns())?,
                );
            }
            if self.emitted.insert(window, rows).is_some() {
                return Err(corrupt("a window's emitted rows twice"));
            }
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        let (rows, bytes) = self.slices.values().fold((0, 0), |(r, b), s| {
            let live = s
                .live
                .as_ref()
                .map_or((0, 0), |g| (g.num_groups(), g.size()));
            let states = s
                .states
                .iter()
                .fold((0, 0), |(r, b), st| (r + st.num_groups(), b + st.size()));
            (r + live.0 + states.0, b + live.1 + states.1)
        });
        let mut usage = vec![StateUsage {
            table: GROUPS,
            rows,
            bytes,
        }];
        if self.updating() {
            let (rows, bytes) = self
                .emitted
                .values()
                .flatten()
                .fold((0, 0), |(r, b), (k, v)| {
                    let size: usize = k.iter().chain(v).map(ScalarValue::size).sum();
                    (r + 1, b + size)
                });
            usage.push(StateUsage {
                table: EMITTED,
                rows,
                bytes,
            });
        }
        usage
    }
}

/// The rows `window` emitted as one batch: its start and end, then the key columns and the
/// aggregate values of each row.
fn emitted_batch(window: Span, rows: &Emitted) -> EngineResult<RecordBatch> {
    let n = rows.len();
    let width = rows.keys().next().map_or(0, |k| k.len());
    let mut columns: Vec<(String, ArrayRef)> = vec![
        (
            "start".to_string(),
            Arc::new(Int64Array::from_value(window.start, n)),
        ),
        (
            "end".to_string(),
            Arc::new(Int64Array::from_value(window.end, n)),
        ),
    ];
    let mut scalars: Vec<Vec<ScalarValue>> = Vec::new();
    for (key, values) in rows {
        if scalars.is_empty() {
            scalars = vec![Vec::with_capacity(n); key.len() + values.len()];
        }
        for (column, v) in scalars.iter_mut().zip(key.iter().chain(values)) {
            column.push(v.clone());
        }
    }
    for (i, column) in scalars.into_iter().enumerate() {
        let name = if i < width {
            format!("key{i}")
        } else {
            format!("value{}", i - width)
        };
        columns.push((name, ScalarValue::iter_to_array(column)?));
    }
    let fields: Vec<_> = columns
        .iter()
        .map(|(name, c)| {
            datafusion::arrow::datatypes::Field::new(name, c.data_type().clone(), true)
        })
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns.into_iter().map(|(_, c)| c).collect(),
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::common::DFSchema;
    use datafusion::execution::context::ExecutionProps;
    use datafusion::functions_aggregate::expr_fn::{count, sum};
    use datafusion::logical_expr::col;
    use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
    use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
    use datafusion::physical_expr::create_physical_expr;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;

    use super::*;
    use crate::runtime::message::Message;

    const S: i64 = 1_000_000_000;

    /// Input rows: (slice start in ms, key, value), as the window function in slice mode
    /// produces them (`window_start` holds the slice start).
    fn input_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]))
    }

    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.0 * 1000),
                )),
            ],
        )
        .unwrap()
    }

    /// `SELECT k, window_start, window_end, count(*), sum(v) ... GROUP BY k, window_start,
    /// window_end` over `kind`, fed slices.
    fn operator(kind: WindowKind) -> WindowAggregateOperator {
        operator_with(kind, Emission::default())
    }

    /// [`operator`] emitting as `emit` says (led by `__op` when updating).
    fn operator_with(kind: WindowKind, emit: Emission) -> WindowAggregateOperator {
        let schema = input_schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let props = ExecutionProps::new();
        let planning = PhysicalPlanningContext::default();
        let key = create_physical_expr(&col("k"), &df_schema, &props, &planning).unwrap();
        let mut aggregates = Vec::new();
        for e in [count(col("v")), sum(col("v"))] {
            let lowered = LoweredAggregateBuilder::new(&e, &df_schema, &schema, &props, &planning)
                .build()
                .unwrap();
            aggregates.push(lowered.aggregate);
        }
        let exprs = AggregateExprs::try_new(
            aggregates,
            vec![None, None],
            PhysicalGroupBy::new_single(vec![(key, "k".to_string())]),
            &schema,
        )
        .unwrap();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let mut fields = vec![
            Field::new("k", DataType::Int64, false),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
            Field::new("count", DataType::Int64, false),
            Field::new("sum", DataType::Int64, true),
        ];
        if emit.is_updating() {
            fields.insert(0, Field::new("__op", DataType::Utf8, false));
        }
        let out_schema = Arc::new(Schema::new(fields));
        WindowAggregateOperator::new(
            OperatorInfo {
                name: "WindowAggregate".to_string(),
                schema: out_schema,
            },
            exprs,
            Windowing {
                kind,
                sliced: true,
                lag: MILLISECOND,
                bounds: vec![BoundColumn {
                    index: 2,
                    column: WindowColumn::Start,
                    unit_ns: MILLISECOND,
                }],
                emit,
            },
            vec![
                OutputColumn::Key(0),
                OutputColumn::Window(WindowColumn::Start),
                OutputColumn::Window(WindowColumn::End),
                OutputColumn::Aggregate(0),
                OutputColumn::Aggregate(1),
            ],
        )
    }

    /// The rows emitted, as (key, start s, end s, count, sum), sorted.
    fn rows(out: &mut OperatorContext) -> Vec<(i64, i64, i64, i64, i64)> {
        let mut rows = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let int = |i: usize| {
                    cast(b.column(i), &DataType::Int64)
                        .unwrap()
                        .as_primitive::<Int64Type>()
                        .clone()
                };
                let (k, s, e, c, v) = (int(0), int(1), int(2), int(3), int(4));
                for r in 0..b.num_rows() {
                    rows.push((
                        k.value(r),
                        s.value(r) / 1000,
                        e.value(r) / 1000,
                        c.value(r),
                        v.value(r),
                    ));
                }
            }
        }
        rows.sort();
        rows
    }

    fn state_rows(op: &WindowAggregateOperator) -> usize {
        op.state_usage().iter().map(|t| t.rows).sum()
    }

    /// The changelog rows emitted, as `op key start(s) end(s) count sum`, in order.
    fn changes(out: &mut OperatorContext) -> Vec<String> {
        crate::operators::checkpoint_harness::rows(out)
            .into_iter()
            .map(|r| {
                let v: Vec<&str> = r.split(' ').collect();
                // Timestamps print as 1970-01-01T00:00:10: keep the seconds.
                let secs = |t: &str| {
                    t.rsplit(':')
                        .next()
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(-1)
                };
                format!(
                    "{} {} {} {} {} {}",
                    v[0],
                    v[1],
                    secs(v[2]),
                    secs(v[3]),
                    v[4],
                    v[5]
                )
            })
            .collect()
    }

    #[test]
    fn emit_on_update_emits_each_window_as_it_fills_and_its_last_rows_are_final() {
        let kind = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        let emit = Emission {
            on_update: true,
            lateness: 0,
        };
        let mut op = operator_with(kind, emit);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(0, 1, 1), (0, 2, 7)]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), vec!["+ 1 0 10 1 1", "+ 2 0 10 1 7"]);
        // Key 1 changes, key 2 does not; a row of the next window opens it.
        op.on_batch(0, batch(&[(0, 1, 2), (10, 1, 5)]), &mut out)
            .unwrap();
        assert_eq!(
            changes(&mut out),
            vec!["- 1 0 10 1 1", "+ 1 0 10 2 3", "+ 1 10 20 1 5"]
        );
        // Closing emits nothing more: the last rows were the final ones.
        op.on_watermark(10 * S - MILLISECOND, &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        // A row of a closed window is late, as with emission on close.
        op.on_batch(0, batch(&[(0, 1, 100)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        assert_eq!(out.late_rows(), 1);
        op.on_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        assert_eq!(state_rows(&op), 0, "state freed as windows close");
    }

    #[test]
    fn emit_on_update_over_hop_updates_every_window_of_a_row_in_order_of_their_end() {
        let kind = WindowKind::Hop {
            slide: 5 * S,
            size: 10 * S,
            offset: 0,
        };
        let emit = Emission {
            on_update: true,
            lateness: 0,
        };
        let mut op = operator_with(kind, emit);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(5, 1, 1)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), vec!["+ 1 0 10 1 1", "+ 1 5 15 1 1"]);
        op.on_watermark(10 * S - MILLISECOND, &mut out).unwrap();
        // [0, 10) has closed: only [5, 15) takes the row.
        op.on_batch(0, batch(&[(5, 1, 2)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), vec!["- 1 5 15 1 1", "+ 1 5 15 2 3"]);
        assert_eq!(out.late_rows(), 0);
    }

    #[test]
    fn allowed_lateness_re_emits_a_late_updated_window_and_drops_rows_past_it() {
        let kind = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        let emit = Emission {
            on_update: false,
            lateness: 5 * S,
        };
        let mut op = operator_with(kind, emit);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(0, 1, 1)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new(), "open: nothing yet");
        // Fires as without lateness: at end - 1 ms.
        op.on_watermark(10 * S - MILLISECOND, &mut out).unwrap();
        assert_eq!(changes(&mut out), vec!["+ 1 0 10 1 1"]);
        // A late row within the lateness updates the window.
        op.on_batch(0, batch(&[(0, 1, 2), (0, 2, 7)]), &mut out)
            .unwrap();
        assert_eq!(
            changes(&mut out),
            vec!["- 1 0 10 1 1", "+ 1 0 10 2 3", "+ 2 0 10 1 7"]
        );
        // Kept until the watermark passes end - 1 ms + 5 s.
        op.on_watermark(15 * S - 2 * MILLISECOND, &mut out).unwrap();
        op.on_batch(0, batch(&[(0, 1, 4)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), vec!["- 1 0 10 2 3", "+ 1 0 10 3 7"]);
        assert!(state_rows(&op) > 0);
        op.on_watermark(15 * S - MILLISECOND, &mut out).unwrap();
        assert_eq!(state_rows(&op), 0, "expired: its state is gone");
        op.on_batch(0, batch(&[(0, 1, 8)]), &mut out).unwrap();
        assert_eq!(changes(&mut out), Vec::<String>::new());
        assert_eq!(
            out.late_rows(),
            1,
            "later than the lateness: late as before"
        );
    }

    #[test]
    fn hop_combines_slices_and_frees_them() {
        // HOP(slide 5 s, size 10 s): 5 s slices.
        let kind = WindowKind::Hop {
            slide: 5 * S,
            size: 10 * S,
            offset: 0,
        };
        let mut op = operator(kind);
        let mut out = OperatorContext::default();
        // Slices [0,5), [5,10), [10,15); key 1 in all, key 2 only in [5,10).
        op.on_batch(0, batch(&[(0, 1, 1), (5, 1, 10), (5, 2, 7)]), &mut out)
            .unwrap();
        op.on_batch(0, batch(&[(10, 1, 100)]), &mut out).unwrap();
        assert!(state_rows(&op) > 0);
        // Watermark 9.999 s closes the windows ending at 10 s or before.
        op.on_watermark(10 * S - MILLISECOND, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![(1, -5, 5, 1, 1), (1, 0, 10, 2, 11), (2, 0, 10, 1, 7)]
        );
        // Slice [0,5) is freed; [5,10) is still needed by [5,15).
        assert!(state_rows(&op) > 0);
        op.on_watermark(20 * S, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![(1, 5, 15, 2, 110), (1, 10, 20, 1, 100), (2, 5, 15, 1, 7)]
        );
        assert_eq!(
            state_rows(&op),
            0,
            "every slice freed once its windows fired"
        );
        assert_eq!(out.late_rows(), 0);
    }

    #[test]
    fn a_row_late_for_one_window_still_counts_in_the_next() {
        let kind = WindowKind::Hop {
            slide: 5 * S,
            size: 10 * S,
            offset: 0,
        };
        let mut op = operator(kind);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(5, 1, 1)]), &mut out).unwrap();
        op.on_watermark(10 * S, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![(1, 0, 10, 1, 1)]);
        // [0,10) has fired; [5,15) has not: the row counts there, so it is not dropped.
        op.on_batch(0, batch(&[(5, 1, 2)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 0);
        // A row only in fired windows is dropped.
        op.on_batch(0, batch(&[(0, 1, 1000)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1);
        op.on_watermark(i64::MAX, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![(1, 5, 15, 2, 3)]);
        assert_eq!(state_rows(&op), 0);
    }

    #[test]
    fn tumble_fires_at_end_minus_resolution_and_drops_late_rows() {
        let kind = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        let mut op = operator(kind);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(0, 1, 1), (0, 1, 2)]), &mut out)
            .unwrap();
        op.on_watermark(10 * S - 2 * MILLISECOND, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![], "still open at end - 2 ms");
        op.on_watermark(10 * S - MILLISECOND, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![(1, 0, 10, 2, 3)]);
        assert_eq!(state_rows(&op), 0);
        op.on_batch(0, batch(&[(0, 1, 5)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1);
        assert_eq!(state_rows(&op), 0);
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::common::{DFSchema, ScalarValue};
    use datafusion::execution::context::ExecutionProps;
    use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
    use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
    use datafusion::logical_expr::{Expr, col, lit};
    use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
    use datafusion::physical_expr::create_physical_expr;
    use datafusion::physical_expr::expressions::Literal;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;

    use super::*;
    use crate::operators::checkpoint_harness::{
        Lcg, Step, check_every_cut, final_rows, restore_declared, shifted,
    };

    const S: i64 = 1_000_000_000;

    fn ts() -> DataType {
        DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None)
    }

    fn input_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
        ]))
    }

    /// Rows of (k, v, start ms, end ms).
    fn batch(rows: &[(i64, Option<i64>, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.3),
                )),
            ],
        )
        .unwrap()
    }

    #[derive(Clone, Copy)]
    enum Keys {
        /// GROUP BY k
        K,
        /// GROUPING SETS ((k), ())
        KAndAll,
        /// no key besides the window
        None,
    }

    /// count(v), sum(v), min(v), max(v), avg(v), count(DISTINCT v), sum(v) FILTER (WHERE
    /// v > 3), grouped by `keys` and the window.
    fn operator(kind: WindowKind, keys: Keys) -> WindowAggregateOperator {
        operator_with(kind, keys, Emission::default())
    }

    /// [`operator`] emitting as `emit` says (led by `__op` when updating).
    fn operator_with(kind: WindowKind, keys: Keys, emit: Emission) -> WindowAggregateOperator {
        let schema = input_schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let props = ExecutionProps::new();
        let planning = PhysicalPlanningContext::default();
        let physical = |e: &Expr| create_physical_expr(e, &df_schema, &props, &planning).unwrap();
        let aggregates: Vec<(Expr, Option<Expr>)> = vec![
            (count(col("v")), None),
            (sum(col("v")), None),
            (min(col("v")), None),
            (max(col("v")), None),
            (
                avg(datafusion::logical_expr::cast(col("v"), DataType::Float64)),
                None,
            ),
            (count_distinct(col("v")), None),
            (sum(col("v")), Some(col("v").gt(lit(3i64)))),
        ];
        let mut lowered = Vec::new();
        let mut filters = Vec::new();
        let mut fields = Vec::new();
        for (e, filter) in &aggregates {
            let a = LoweredAggregateBuilder::new(e, &df_schema, &schema, &props, &planning)
                .build()
                .unwrap()
                .aggregate;
            fields.push(Field::new(
                format!("a{}", fields.len()),
                a.field().data_type().clone(),
                true,
            ));
            lowered.push(a);
            filters.push(filter.as_ref().map(physical));
        }
        let k = (physical(&col("k")), "k".to_string());
        let group_by = match keys {
            Keys::K => PhysicalGroupBy::new_single(vec![k]),
            Keys::KAndAll => PhysicalGroupBy::new(
                vec![k],
                vec![(
                    Arc::new(Literal::new(ScalarValue::Int64(None))) as _,
                    "k".to_string(),
                )],
                vec![vec![false], vec![true]],
                true,
            ),
            Keys::None => PhysicalGroupBy::new_single(vec![]),
        };
        let exprs = AggregateExprs::try_new(lowered, filters, group_by, &schema).unwrap();
        let mut output = vec![
            OutputColumn::Window(WindowColumn::Start),
            OutputColumn::Window(WindowColumn::End),
        ];
        let mut out_fields = vec![
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
        ];
        match keys {
            Keys::K => {
                output.push(OutputColumn::Key(0));
                out_fields.push(Field::new("k", DataType::Int64, true));
            }
            Keys::KAndAll => {
                output.push(OutputColumn::Key(0));
                output.push(OutputColumn::Key(1));
                out_fields.push(Field::new("k", DataType::Int64, true));
                out_fields.push(Field::new("__grouping_id", DataType::UInt8, true));
            }
            Keys::None => {}
        }
        for i in 0..aggregates.len() {
            output.push(OutputColumn::Aggregate(i));
        }
        out_fields.extend(fields);
        if emit.is_updating() {
            out_fields.insert(0, Field::new("__op", DataType::Utf8, false));
        }
        let sliced = !matches!(kind, WindowKind::Session { .. });
        let bound = |index, column| BoundColumn {
            index,
            column,
            unit_ns: MILLISECOND,
        };
        let bounds = if sliced {
            vec![bound(2, WindowColumn::Start)]
        } else {
            vec![bound(2, WindowColumn::Start), bound(3, WindowColumn::End)]
        };
        WindowAggregateOperator::new(
            OperatorInfo {
                name: "WindowAggregate".to_string(),
                schema: Arc::new(Schema::new(out_fields)),
            },
            exprs,
            Windowing {
                kind,
                sliced,
                lag: if sliced { MILLISECOND } else { 0 },
                bounds,
                emit,
            },
            output,
        )
    }

    /// A random sequence: rows around an advancing watermark (some late), several keys,
    /// NULLs, watermarks that leave windows open, and the end of input.
    fn sequence(kind: WindowKind, seed: u64, steps: usize) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut out = Vec::new();
        let mut watermark = 0i64;
        for _ in 0..steps {
            if rng.next(3) == 0 {
                watermark += 1000 + rng.next(5) as i64 * 1000;
                out.push(Step::Watermark(watermark * MILLISECOND));
                continue;
            }
            let rows: Vec<_> = (0..1 + rng.next(4))
                .map(|_| {
                    let t = (watermark + rng.next(30) as i64 * 1000 - 20_000).max(0);
                    let v = (rng.next(8) != 0).then(|| rng.next(7) as i64);
                    let (start, end) = match kind.slice_of(t * MILLISECOND) {
                        Some(s) => (s.start / MILLISECOND, s.end / MILLISECOND),
                        // SESSION windows upstream: a few fixed ones around t.
                        None => {
                            let start = t - t % 3000;
                            (start, start + 4000 + (start % 2000))
                        }
                    };
                    (rng.next(3) as i64, v, start, end)
                })
                .collect();
            out.push(Step::Batch(batch(&rows)));
        }
        out.push(Step::End);
        out
    }

    fn check(kind: WindowKind, keys: Keys, seed: u64) {
        let make = || Box::new(operator(kind, keys)) as Box<dyn Operator>;
        let sliced = !matches!(kind, WindowKind::Session { .. });
        let tables = state_tables(&["k".to_string()], sliced, false);
        let (output, late) = check_every_cut(&make, &tables, &sequence(kind, seed, 40));
        assert!(output.iter().filter(|m| m.starts_with('+')).count() > 3);
        assert!(late > 0, "the sequence has late rows");
    }

    /// Like [`check`] for an updating emission: restores at every cut give the same
    /// changelog, which updates rows (`-`), and rows past the lateness are late.
    fn check_updating(kind: WindowKind, keys: Keys, emit: Emission, seed: u64) {
        let make = || Box::new(operator_with(kind, keys, emit)) as Box<dyn Operator>;
        let tables = state_tables(&["k".to_string()], true, true);
        let (output, late) = check_every_cut(&make, &tables, &sequence(kind, seed, 40));
        assert!(
            output.iter().any(|m| m.contains("| - ")),
            "the sequence updates emitted rows"
        );
        assert!(late > 0, "the sequence has late rows");
    }

    #[test]
    fn updating_emissions_end_with_the_rows_of_emission_on_close() {
        let kinds = [
            WindowKind::Tumble {
                size: 10 * S,
                offset: 0,
            },
            WindowKind::Hop {
                slide: 5 * S,
                size: 15 * S,
                offset: 0,
            },
            WindowKind::Cumulate {
                step: 5 * S,
                max_size: 20 * S,
                offset: 0,
            },
        ];
        for (seed, kind) in kinds.into_iter().enumerate() {
            let steps = sequence(kind, 20 + seed as u64, 60);
            let on_close = final_rows(&mut operator(kind, Keys::KAndAll), &steps, false);
            assert!(on_close.len() > 5);
            // EMIT ON UPDATE: the same windows, the same late rows, the same final values.
            let on_update = Emission {
                on_update: true,
                lateness: 0,
            };
            let mut op = operator_with(kind, Keys::KAndAll, on_update);
            assert_eq!(final_rows(&mut op, &steps, true), on_close, "{kind}");
            // Allowed lateness of 3 s: what emission on close gives when every watermark
            // comes 3 s later (the late rows are those later than the lateness).
            let late = Emission {
                on_update: false,
                lateness: 3 * S,
            };
            let expected = final_rows(
                &mut operator(kind, Keys::KAndAll),
                &shifted(&steps, 3 * S),
                false,
            );
            let mut op = operator_with(kind, Keys::KAndAll, late);
            assert_eq!(final_rows(&mut op, &steps, true), expected, "{kind}");
            assert_ne!(expected, on_close, "{kind}: the lateness takes rows in");
            // Both: updates as rows come, and within the lateness after closing.
            let both = Emission {
                on_update: true,
                lateness: 3 * S,
            };
            let mut op = operator_with(kind, Keys::KAndAll, both);
            assert_eq!(final_rows(&mut op, &steps, true), expected, "{kind}");
        }
    }

    #[test]
    fn emit_on_update_restores_at_every_cut() {
        let emit = Emission {
            on_update: true,
            lateness: 0,
        };
        let tumble = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        check_updating(tumble, Keys::K, emit, 11);
        check_updating(tumble, Keys::None, emit, 12);
        let hop = WindowKind::Hop {
            slide: 5 * S,
            size: 15 * S,
            offset: 0,
        };
        check_updating(hop, Keys::KAndAll, emit, 13);
    }

    #[test]
    fn allowed_lateness_restores_at_every_cut() {
        let emit = Emission {
            on_update: false,
            lateness: 3 * S,
        };
        let tumble = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        check_updating(tumble, Keys::K, emit, 14);
        let cumulate = WindowKind::Cumulate {
            step: 5 * S,
            max_size: 20 * S,
            offset: 0,
        };
        check_updating(cumulate, Keys::K, emit, 15);
        check_updating(
            tumble,
            Keys::KAndAll,
            Emission {
                on_update: true,
                lateness: 3 * S,
            },
            16,
        );
    }

    #[test]
    fn tumble_restores_at_every_cut() {
        let kind = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        check(kind, Keys::K, 1);
        check(kind, Keys::None, 2);
    }

    #[test]
    fn hop_restores_at_every_cut() {
        let kind = WindowKind::Hop {
            slide: 5 * S,
            size: 15 * S,
            offset: 0,
        };
        check(kind, Keys::K, 3);
        check(kind, Keys::KAndAll, 4);
    }

    #[test]
    fn cumulate_restores_at_every_cut() {
        let kind = WindowKind::Cumulate {
            step: 5 * S,
            max_size: 20 * S,
            offset: 0,
        };
        check(kind, Keys::K, 5);
    }

    #[test]
    fn grouping_sets_restore_at_every_cut() {
        let kind = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        check(kind, Keys::KAndAll, 6);
    }

    #[test]
    fn session_windows_restore_at_every_cut() {
        check(WindowKind::Session { gap: 2 * S }, Keys::K, 7);
    }

    #[test]
    fn a_snapshot_of_another_shape_is_refused() {
        let kind = WindowKind::Tumble {
            size: 10 * S,
            offset: 0,
        };
        let mut op = operator(kind, Keys::K);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, Some(1), 0, 10_000)]), &mut out)
            .unwrap();
        let good = op.snapshot(1).unwrap();
        // An empty snapshot is an operator without state.
        operator(kind, Keys::K)
            .restore(StateSnapshot::new())
            .unwrap();
        // Groups of another aggregation (fewer aggregate columns).
        let mut other = StateSnapshot::new();
        for b in good.batches() {
            let b = if b.num_columns() > 4 && b.schema().field(0).name() != "start" {
                b.project(&[0, 1, 2]).unwrap()
            } else {
                b.clone()
            };
            let table = b.schema().metadata()["eddy.state.table"].clone();
            other.add(&table, b).unwrap();
        }
        let fresh = || operator(kind, Keys::K);
        let restore = |snapshot| {
            let tables = state_tables(&["k".to_string()], true, false);
            restore_declared(&mut fresh(), &tables, snapshot)
        };
        assert!(fresh().restore(other).is_err());
        // A slice whose groups are missing.
        assert!(fresh().restore(good.clone().without(GROUPS)).is_err());
        // Another operator's tables.
        let mut foreign = StateSnapshot::new();
        foreign
            .add("rows", batch(&[(1, Some(1), 0, 10_000)]))
            .unwrap();
        assert!(restore(foreign).is_err());
        // A key column of the wrong type.
        let mut wrong = good.clone().without(GROUPS);
        let g = &good.table(GROUPS)[0];
        let mut columns = g.columns().to_vec();
        columns[0] = cast(&columns[0], &DataType::Utf8).unwrap();
        wrong
            .add(
                GROUPS,
                RecordBatch::try_from_iter(
                    g.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .zip(columns),
                )
                .unwrap(),
            )
            .unwrap();
        assert!(fresh().restore(wrong).is_err());
        // State without its watermark.
        assert!(fresh().restore(good.clone().without("meta")).is_err());
        fresh().restore(good).unwrap();
    }
}
