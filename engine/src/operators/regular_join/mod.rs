//! `RegularJoinOperator`: an equi-join of two streams without time bounds or windows (Flink's
//! regular join), over append-only inputs or changelogs, emitting a changelog.
//!
//! Each arriving row is probed against the other side's held rows with the same key (the
//! residual condition decides which of them are partners), then held itself; a retraction
//! (`-` from an updating input) is probed the same way and removes one held row equal to it.
//!
//! Emission: for an inner join of two append-only inputs, append (every joined row is final:
//! nothing it joined can be retracted). Otherwise updating, led by `__op`: a `+` row joins
//! every partner (`+` joined rows) and a `-` row retracts them (`-` joined rows). An outer
//! join's row without a partner is emitted padded with NULLs; when its first partner arrives
//! the padded row is retracted before the joined one is added, and when its last partner is
//! retracted the padded row comes back (Flink's semantics). Rows come out in input order, so
//! the changelog is deterministic for a given order of batches. A row whose key has a NULL
//! never joins (SQL `=`); it is not held, only padded on an outer side. No row is ever late
//! and watermarks are forwarded unchanged (the join's time columns are not time attributes:
//! the planner refuses windows over its result).
//!
//! State: both sides' rows, columnar (module `held`): the batches they arrived in, and per
//! join key the held rows' places in them, in storing order, each with the number of
//! partners it has now (which decides an outer row's padding). Output columns are gathered
//! from the arriving batch and the held batches with `take` and `interleave`. Without a TTL
//! nothing is freed but a retraction (`state=unbounded` in EXPLAIN). With a TTL (`SET
//! state.ttl`, or a view's `state.ttl` option) a held row expires that long after it was
//! stored, in processing time, as Flink's `table.exec.state.ttl`: expired rows are dropped
//! without emitting anything, whenever the operator next handles a batch, watermark or
//! barrier. A row arriving after its partner expired does not join it; a retraction of an
//! expired row is ignored.
//!
//! Snapshot: tables `left_rows` and `right_rows` hold each side's rows (its columns, then
//! `partners` and `stored_at`, the processing time it was stored in milliseconds), in the
//! order they were stored within each key; restore puts them back as they were.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;

use super::join_rows::{JoinKind, KeyEncoder, SIDE_TABLES, residual_mask};
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::{Epoch, EventTime};
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};
use held::{Held, HeldRows};

mod held;

/// The snapshot column after a held row's columns: how many partners it has.
const PARTNERS: &str = "partners";
/// The snapshot column after that: when the row was stored (processing time, milliseconds).
const STORED_AT: &str = "stored_at";

/// The state tables of a regular join on `left_keys = right_keys` (as the plan names them),
/// freed by a TTL when there is one.
pub fn state_tables(left_keys: &[String], right_keys: &[String], ttl: bool) -> Vec<StateTable> {
    let freed = || {
        if ttl { Freed::Ttl } else { Freed::Never("") }
    };
    let [left, right] = SIDE_TABLES;
    vec![
        StateTable::new(left, left_keys.to_vec(), "every left row", freed()),
        StateTable::new(right, right_keys.to_vec(), "every right row", freed()),
    ]
}

pub use super::ttl::{Clock, wall_clock};

/// One side of a regular join.
pub struct RegularJoinSide {
    /// The side's columns (without `__op` when `updating`).
    pub schema: SchemaRef,
    /// Its rows are a changelog led by `__op`.
    pub updating: bool,
    /// The join keys, over the side's columns.
    pub keys: KeyEncoder,
}

pub struct RegularJoinSpec {
    /// Inner, Left, Right or Full.
    pub kind: JoinKind,
    pub left: RegularJoinSide,
    pub right: RegularJoinSide,
    /// Non-equi conditions, over a left row followed by a right row.
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    /// How long a held row lives; `None`: until it is retracted.
    pub ttl: Option<Duration>,
    /// The output is a changelog led by `__op` (see [`RegularJoinSpec::emits_changelog`]).
    pub updating: bool,
}

impl RegularJoinSpec {
    /// Whether a join of `kind` over inputs that are (`left`, `right`) updating emits a
    /// changelog: all but an inner or semi join of append-only inputs do (an anti join's row
    /// is retracted when a partner arrives).
    pub fn emits_changelog(kind: JoinKind, left: bool, right: bool) -> bool {
        !matches!(
            kind,
            JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
        ) || left
            || right
    }
}

/// One side's held rows and how to encode them.
struct SideState {
    schema: SchemaRef,
    updating: bool,
    keys: KeyEncoder,
    /// Encodes the side's rows, to find the held row a retraction removes.
    converter: RowConverter,
    held: HeldRows,
}

impl SideState {
    fn try_new(side: RegularJoinSide, ttl: bool) -> EngineResult<Self> {
        let fields: Vec<SortField> = side
            .schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            held: HeldRows::new(Arc::clone(&side.schema), ttl),
            converter: RowConverter::new(fields)?,
            schema: side.schema,
            updating: side.updating,
            keys: side.keys,
        })
    }
}

/// Held rows compared at once when a retraction looks for the one it removes.
const RELEASE_BLOCK: usize = 64;

/// The partners each row of an arriving batch joins (those passing the residual condition),
/// as positions in the other side's list under the row's key: row `i`'s are
/// `positions[starts[i]..starts[i + 1]]`.
struct Partners {
    starts: Vec<usize>,
    positions: Vec<usize>,
}

impl Partners {
    fn of(&self, i: usize) -> &[usize] {
        &self.positions[self.starts[i]..self.starts[i + 1]]
    }
}

/// Rows to emit (or to test against the residual): per row, the arriving row (an index into
/// the arriving batch) and the other side's held row (an id), `None` for NULL padding.
#[derive(Default)]
struct Pairs {
    arriving: Vec<Option<u32>>,
    held: Vec<Option<u64>>,
}

impl Pairs {
    fn push(&mut self, arriving: Option<usize>, held: Option<u64>) {
        self.arriving.push(arriving.map(|i| i as u32));
        self.held.push(held);
    }
}

pub struct RegularJoinOperator {
    info: OperatorInfo,
    kind: JoinKind,
    sides: [SideState; 2],
    residual: Option<Arc<dyn PhysicalExpr>>,
    /// The residual's input: a left row followed by a right row.
    joined_schema: SchemaRef,
    /// The columns of `joined_schema` the residual reads (the others are left NULL).
    residual_columns: Vec<bool>,
    ttl: Option<Duration>,
    updating: bool,
    clock: Clock,
}

impl RegularJoinOperator {
    pub fn try_new(info: OperatorInfo, spec: RegularJoinSpec, clock: Clock) -> EngineResult<Self> {
        if matches!(spec.kind, JoinKind::LeftAnti { null_aware: true }) {
            return Err(EngineError::Internal(format!(
                "a regular join of kind {}",
                spec.kind
            )));
        }
        let joined_schema = Arc::new(Schema::new(
            spec.left
                .schema
                .fields()
                .iter()
                .chain(spec.right.schema.fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<Field>>(),
        ));
        let mut residual_columns = vec![false; joined_schema.fields().len()];
        if let Some(residual) = &spec.residual {
            for column in collect_columns(residual) {
                let read = residual_columns.get_mut(column.index()).ok_or_else(|| {
                    EngineError::Internal(format!("a join condition reads {column}"))
                })?;
                *read = true;
            }
        }
        let ttl = spec.ttl.is_some();
        Ok(Self {
            info,
            kind: spec.kind,
            sides: [
                SideState::try_new(spec.left, ttl)?,
                SideState::try_new(spec.right, ttl)?,
            ],
            residual: spec.residual,
            joined_schema,
            residual_columns,
            ttl: spec.ttl,
            updating: spec.updating,
            clock,
        })
    }

    /// For a semi or anti join: the side whose rows it emits, and whether it is a semi join.
    fn filtering(&self) -> Option<(usize, bool)> {
        match self.kind {
            JoinKind::LeftSemi => Some((0, true)),
            JoinKind::LeftAnti { .. } => Some((0, false)),
            JoinKind::RightSemi => Some((1, true)),
            JoinKind::RightAnti => Some((1, false)),
            _ => None,
        }
    }

    /// Whether side `side`'s unmatched rows are emitted padded.
    fn pads(&self, side: usize) -> bool {
        if side == 0 {
            self.kind.pads_left()
        } else {
            self.kind.pads_right()
        }
    }

    fn expire(&mut self) -> EngineResult<()> {
        if let Some(ttl) = self.ttl {
            let cutoff = (self.clock)() - ttl.as_millis() as i64;
            for side in &mut self.sides {
                side.held.expire(cutoff, &side.keys)?;
            }
        }
        Ok(())
    }

    /// The partners of each row of `batch`, arriving on `side` with the encoded `keys`
    /// (`valid`: free of NULLs).
    fn partners(
        &self,
        side: usize,
        batch: &RecordBatch,
        keys: &Rows,
        valid: &[bool],
    ) -> EngineResult<Partners> {
        let other = &self.sides[1 - side].held;
        // The candidates: (arriving row, position in its key's list, held row).
        let mut candidates: Vec<(usize, usize, u64)> = Vec::new();
        for (i, ok) in valid.iter().enumerate() {
            if let Some(list) = ok.then(|| other.list(keys.row(i).data())).flatten() {
                candidates.extend(list.iter().enumerate().map(|(j, held)| (i, j, held.id)));
            }
        }
        let passes = match &self.residual {
            Some(residual) if !candidates.is_empty() => {
                let mut pairs = Pairs::default();
                for &(i, _, id) in &candidates {
                    pairs.push(Some(i), Some(id));
                }
                let needed = Some(self.residual_columns.as_slice());
                let mut columns = self.side_columns(0, side, batch, &pairs, needed)?;
                columns.extend(self.side_columns(1, side, batch, &pairs, needed)?);
                let joined = RecordBatch::try_new(Arc::clone(&self.joined_schema), columns)?;
                Some(residual_mask(residual, &joined)?)
            }
            _ => None,
        };
        let mut starts = Vec::with_capacity(valid.len() + 1);
        let mut positions = Vec::with_capacity(candidates.len());
        let mut next = candidates.iter().enumerate().peekable();
        starts.push(0);
        for i in 0..valid.len() {
            while let Some((p, &(_, j, _))) = next.next_if(|(_, (row, _, _))| *row == i) {
                if passes.as_ref().is_none_or(|mask| mask.value(p)) {
                    positions.push(j);
                }
            }
            starts.push(positions.len());
        }
        Ok(Partners { starts, positions })
    }

    /// Side `s`'s columns (those `needed`, over both sides' columns; the others all NULL) of
    /// the rows `pairs`, for a batch arriving on `side`.
    fn side_columns(
        &self,
        s: usize,
        side: usize,
        batch: &RecordBatch,
        pairs: &Pairs,
        needed: Option<&[bool]>,
    ) -> EngineResult<Vec<ArrayRef>> {
        let offset = if s == 0 {
            0
        } else {
            self.sides[0].schema.fields().len()
        };
        let needed = needed.map(|n| &n[offset..offset + self.sides[s].schema.fields().len()]);
        if s != side {
            return self.sides[s].held.gather(&pairs.held, needed);
        }
        let indices = UInt32Array::from(pairs.arriving.clone());
        batch
            .columns()
            .iter()
            .enumerate()
            .map(|(c, column)| {
                if needed.is_some_and(|needed| !needed[c]) {
                    Ok(new_null_array(column.data_type(), indices.len()))
                } else {
                    Ok(take(column, &indices, None)?)
                }
            })
            .collect()
    }

    /// The other side's list under `key`, to update the partners `found` of a row arriving
    /// on `side`; `None` when there are none.
    fn partner_list(&mut self, side: usize, key: &[u8], found: &[usize]) -> Option<&mut [Held]> {
        if found.is_empty() {
            return None;
        }
        self.sides[1 - side].held.list_mut(key)
    }

    /// Releases the held row of `side` under `key` equal to row `i` of `rows` (the arriving
    /// batch in row format); false if none is held. `pending` are the arriving rows held
    /// so far (with ids from `first` on), which have no stored columns yet.
    fn release(
        &mut self,
        side: usize,
        key: &[u8],
        rows: &Rows,
        i: usize,
        pending: &[u32],
        first: u64,
    ) -> EngineResult<bool> {
        let state = &mut self.sides[side];
        let Some(list) = state.held.list(key) else {
            return Ok(false);
        };
        let row = rows.row(i);
        let mut found = None;
        'blocks: for (b, block) in list.chunks(RELEASE_BLOCK).enumerate() {
            let stored: Vec<Option<u64>> = block
                .iter()
                .filter(|h| h.id < first)
                .map(|h| Some(h.id))
                .collect();
            let stored = if stored.is_empty() {
                None
            } else {
                let columns = state.held.gather(&stored, None)?;
                Some(state.converter.convert_columns(&columns)?)
            };
            let mut s = 0;
            for (k, held) in block.iter().enumerate() {
                let equal = match (&stored, held.id.checked_sub(first)) {
                    (_, Some(p)) => rows.row(pending[p as usize] as usize) == row,
                    (Some(stored), None) => {
                        s += 1;
                        stored.row(s - 1) == row
                    }
                    (None, None) => false,
                };
                if equal {
                    found = Some(b * RELEASE_BLOCK + k);
                    break 'blocks;
                }
            }
        }
        match found {
            Some(at) => {
                state.held.release(key, at)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Joins a batch of `side`'s columns whose ops (`+` true) are `adds`.
    fn join(
        &mut self,
        side: usize,
        columns: &[ArrayRef],
        adds: &[bool],
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let n = adds.len();
        let batch = RecordBatch::try_new(Arc::clone(&self.sides[side].schema), columns.to_vec())?;
        let (keys, valid) = self.sides[side].keys.encode(&batch)?;
        // A retraction finds the held row it removes by comparing rows in row format.
        let rows = if adds.iter().all(|add| *add) {
            None
        } else {
            Some(self.sides[side].converter.convert_columns(columns)?)
        };
        let partners = self.partners(side, &batch, &keys, &valid)?;
        let (pads_this, pads_other) = (self.pads(side), self.pads(1 - side));
        let filtering = self.filtering();
        let now = if self.ttl.is_some() {
            (self.clock)()
        } else {
            0
        };
        // The arriving rows held, in order: row `pending[k]` has id `first + k`.
        let first = self.sides[side].held.next_id();
        let mut pending: Vec<u32> = Vec::new();
        let mut ops: Vec<bool> = Vec::new();
        let mut pairs = Pairs::default();
        let mut emit = |add: bool, this: Option<usize>, other: Option<u64>| {
            ops.push(add);
            pairs.push(this, other);
        };
        for i in 0..n {
            let key = keys.row(i).data();
            if !valid[i] {
                // Never joins and is not held: only an outer side pads it, and an anti
                // join keeps it.
                if pads_this || filtering == Some((side, false)) {
                    emit(adds[i], Some(i), None);
                }
                continue;
            }
            if !adds[i] {
                let rows = rows.as_ref().ok_or_else(|| {
                    EngineError::Internal("a retraction without its rows".to_string())
                })?;
                if !self.release(side, key, rows, i, &pending, first)? {
                    // Not held (never added, or expired): nothing of it was emitted that
                    // this could retract.
                    continue;
                }
            }
            let found = partners.of(i);
            if let Some((kept, semi)) = filtering {
                // A semi or anti join emits the kept side's rows alone: as they arrive (with
                // a partner, for semi; without, for anti), and as their partners come and go.
                if kept == side {
                    if found.is_empty() != semi {
                        emit(adds[i], Some(i), None);
                    }
                } else if let Some(list) = self.partner_list(side, key, found) {
                    for &j in found {
                        let held = &mut list[j];
                        let before = held.partners;
                        held.partners = if adds[i] {
                            before + 1
                        } else {
                            before.saturating_sub(1)
                        };
                        if (before == 0) != (held.partners == 0) {
                            // Semi: the row gains its first partner (+) or loses its last
                            // (-); anti the other way round.
                            emit(adds[i] == semi, None, Some(held.id));
                        }
                    }
                }
            } else {
                if found.is_empty() && pads_this {
                    emit(adds[i], Some(i), None);
                }
                if let Some(list) = self.partner_list(side, key, found) {
                    for &j in found {
                        let held = &mut list[j];
                        if adds[i] {
                            if pads_other && held.partners == 0 {
                                emit(false, None, Some(held.id));
                            }
                            held.partners += 1;
                            emit(true, Some(i), Some(held.id));
                        } else {
                            held.partners = held.partners.saturating_sub(1);
                            emit(false, Some(i), Some(held.id));
                            if pads_other && held.partners == 0 {
                                emit(true, None, Some(held.id));
                            }
                        }
                    }
                }
            }
            if adds[i] {
                let held = Held {
                    id: first + pending.len() as u64,
                    partners: found.len() as u32,
                    stored_at: now,
                };
                self.sides[side].held.hold(key, held);
                pending.push(i as u32);
            }
        }
        let stored = if pending.len() == n {
            batch.clone()
        } else {
            take_record_batch(&batch, &UInt32Array::from(pending))?
        };
        self.sides[side].held.append(stored, now)?;
        if ops.is_empty() {
            return Ok(());
        }
        let mut output: Vec<ArrayRef> = Vec::with_capacity(self.info.schema.fields().len());
        if self.updating {
            let ops: StringArray = ops
                .iter()
                .map(|add| Some(if *add { "+" } else { "-" }))
                .collect();
            output.push(Arc::new(ops));
        } else if ops.iter().any(|add| !add) {
            return Err(EngineError::Internal(
                "an append-only join retracted a row".to_string(),
            ));
        }
        // Left's columns, then right's; a semi or anti join emits the kept side's alone.
        for s in 0..2 {
            if filtering.is_none_or(|(kept, _)| kept == s) {
                output.extend(self.side_columns(s, side, &batch, &pairs, None)?);
            }
        }
        out.batch(super::conform_batch(&self.info.schema, output)?);
        Ok(())
    }
}

impl Operator for RegularJoinOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        if input > 1 {
            return Err(EngineError::Internal(format!("join input {input}")));
        }
        self.expire()?;
        let side = &self.sides[input];
        let (columns, adds) = if side.updating {
            (
                batch.columns()[1..].to_vec(),
                super::changelog_inserts(&batch)?,
            )
        } else {
            (batch.columns().to_vec(), vec![true; batch.num_rows()])
        };
        if columns.len() != side.schema.fields().len() {
            return Err(EngineError::Internal(format!(
                "a join input batch of {} columns, expected {}",
                columns.len(),
                side.schema.fields().len()
            )));
        }
        self.join(input, &columns, &adds, out)
    }

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        self.expire()?;
        out.watermark(watermark);
        Ok(())
    }

    fn on_barrier(&mut self, epoch: Epoch, out: &mut OperatorContext) -> EngineResult<()> {
        self.expire()?;
        out.barrier(epoch);
        Ok(())
    }

    /// Tables `left_rows` and `right_rows`: each side's held rows, their partner counts and
    /// when they were stored; no batch for a side that holds none.
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        for (side, table) in self.sides.iter().zip(SIDE_TABLES) {
            let Some(columns) = side.held.snapshot()? else {
                continue;
            };
            let mut fields: Vec<Field> = side
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            fields.push(Field::new(PARTNERS, DataType::UInt32, false));
            fields.push(Field::new(STORED_AT, DataType::Int64, false));
            snapshot.add(
                table,
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?,
            )?;
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        for (side, table) in self.sides.iter_mut().zip(SIDE_TABLES) {
            let mut restored: Vec<(i64, u64)> = Vec::new();
            for batch in snapshot.table(table) {
                let width = side.schema.fields().len();
                let found: Vec<&DataType> = batch.columns().iter().map(|c| c.data_type()).collect();
                let mut expected: Vec<&DataType> =
                    side.schema.fields().iter().map(|f| f.data_type()).collect();
                expected.extend([&DataType::UInt32, &DataType::Int64]);
                if found != expected {
                    return Err(corrupt(format!(
                        "regular join {table} of types {found:?}, expected {expected:?}"
                    )));
                }
                let partners = batch.column(width).as_primitive::<UInt32Type>();
                let stored_at = batch.column(width + 1).as_primitive::<Int64Type>();
                let data = RecordBatch::try_new(
                    Arc::clone(&side.schema),
                    batch.columns()[..width].to_vec(),
                )?;
                let (keys, valid) = side.keys.encode(&data)?;
                if valid.iter().any(|valid| !valid) {
                    return Err(corrupt(format!("regular join {table} holds a NULL key")));
                }
                restored.extend(side.held.restore(
                    data,
                    &keys,
                    partners.values(),
                    stored_at.values(),
                )?);
            }
            // Expiry goes by storing time, whatever the order of the snapshot's keys.
            side.held.restore_expiry(restored);
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        self.sides
            .iter()
            .zip(SIDE_TABLES)
            .map(|(side, table)| StateUsage {
                table,
                rows: side.held.rows(),
                bytes: side.held.bytes(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::logical_expr::Operator as BinaryOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column};

    use super::*;
    use crate::operators::checkpoint_harness::{Lcg, Step, check_every_cut_forwarding, rows};

    /// A side of (k, v) BIGINT rows.
    fn columns(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(format!("{prefix}v"), DataType::Int64, true),
        ]))
    }

    fn side(prefix: &str, updating: bool) -> RegularJoinSide {
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&format!("{prefix}k"), 0));
        RegularJoinSide {
            schema: columns(prefix),
            updating,
            keys: KeyEncoder::try_new(vec![key], &[DataType::Int64]).unwrap(),
        }
    }

    struct Options {
        kind: JoinKind,
        left_updating: bool,
        right_updating: bool,
        /// `lv < rv` as the residual.
        residual: bool,
        ttl: Option<Duration>,
    }

    fn operator(o: &Options, clock: Clock) -> RegularJoinOperator {
        let updating = RegularJoinSpec::emits_changelog(o.kind, o.left_updating, o.right_updating);
        let mut fields = vec![];
        if updating {
            fields.push(Field::new("__op", DataType::Utf8, false));
        }
        let sides: &[&str] = match o.kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti { .. } => &["l"],
            JoinKind::RightSemi | JoinKind::RightAnti => &["r"],
            _ => &["l", "r"],
        };
        for prefix in sides {
            fields.extend(columns(prefix).fields().iter().map(|f| f.as_ref().clone()));
        }
        let residual: Option<Arc<dyn PhysicalExpr>> = o.residual.then(|| {
            Arc::new(BinaryExpr::new(
                Arc::new(Column::new("lv", 1)),
                BinaryOp::Lt,
                Arc::new(Column::new("rv", 3)),
            )) as Arc<dyn PhysicalExpr>
        });
        RegularJoinOperator::try_new(
            OperatorInfo {
                name: "RegularJoin".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            RegularJoinSpec {
                kind: o.kind,
                left: side("l", o.left_updating),
                right: side("r", o.right_updating),
                residual,
                ttl: o.ttl,
                updating,
            },
            clock,
        )
        .unwrap()
    }

    fn options(kind: JoinKind) -> Options {
        Options {
            kind,
            left_updating: false,
            right_updating: false,
            residual: false,
            ttl: None,
        }
    }

    fn fixed_clock() -> Clock {
        Arc::new(|| 0)
    }

    /// Rows of (k, v), with ops when `ops` is given.
    fn batch(prefix: &str, ops: Option<&str>, rows: &[(Option<i64>, i64)]) -> RecordBatch {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        if let Some(ops) = ops {
            fields.push(Field::new("__op", DataType::Utf8, false));
            let ops: StringArray = ops.chars().map(|c| Some(c.to_string())).collect();
            arrays.push(Arc::new(ops));
        }
        fields.extend(columns(prefix).fields().iter().map(|f| f.as_ref().clone()));
        arrays.push(Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))));
        arrays.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.1),
        )));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    #[test]
    fn an_inner_join_of_append_only_inputs_appends_each_pair_once() {
        let mut op = operator(&options(JoinKind::Inner), fixed_clock());
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            batch("l", None, &[(Some(1), 10), (Some(2), 20)]),
            &mut out,
        )
        .unwrap();
        assert!(rows(&mut out).is_empty(), "nothing to join yet");
        op.on_batch(
            1,
            batch("r", None, &[(Some(1), 100), (None, 0), (Some(1), 101)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["1 10 1 100", "1 10 1 101"]);
        op.on_batch(0, batch("l", None, &[(Some(1), 11)]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&mut out),
            ["1 11 1 100", "1 11 1 101"],
            "a later left row joins every held right row"
        );
        // The NULL key is never held.
        assert_eq!(
            op.state_usage().iter().map(|u| u.rows).collect::<Vec<_>>(),
            [3, 2]
        );
    }

    #[test]
    fn an_outer_row_is_padded_until_its_first_partner_and_again_after_its_last() {
        let mut op = operator(
            &Options {
                right_updating: true,
                ..options(JoinKind::Left)
            },
            fixed_clock(),
        );
        let mut out = OperatorContext::default();
        op.on_batch(0, batch("l", None, &[(Some(1), 10), (None, 5)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["+ 1 10 NULL NULL", "+ NULL 5 NULL NULL"]);
        op.on_batch(
            1,
            batch("r", Some("++"), &[(Some(1), 100), (Some(1), 101)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 1 10 NULL NULL", "+ 1 10 1 100", "+ 1 10 1 101"],
            "the first partner retracts the padded row"
        );
        op.on_batch(
            1,
            batch("r", Some("--"), &[(Some(1), 100), (Some(1), 101)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 1 10 1 100", "- 1 10 1 101", "+ 1 10 NULL NULL"],
            "the last partner's retraction brings the padded row back"
        );
        // A retraction of a row never added changes nothing.
        op.on_batch(1, batch("r", Some("-"), &[(Some(1), 100)]), &mut out)
            .unwrap();
        assert!(rows(&mut out).is_empty());
    }

    #[test]
    fn a_retraction_removes_a_row_added_earlier_in_its_own_batch() {
        let mut op = operator(
            &Options {
                left_updating: true,
                ..options(JoinKind::Left)
            },
            fixed_clock(),
        );
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            batch(
                "l",
                Some("++-"),
                &[(Some(1), 10), (Some(1), 10), (Some(1), 10)],
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            ["+ 1 10 NULL NULL", "+ 1 10 NULL NULL", "- 1 10 NULL NULL"]
        );
        assert_eq!(op.state_usage()[0].rows, 1);
        op.on_batch(1, batch("r", None, &[(Some(1), 100)]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 1 10 NULL NULL", "+ 1 10 1 100"],
            "one left row is left to join"
        );
    }

    #[test]
    fn a_full_join_with_a_residual_pads_both_sides() {
        let mut op = operator(
            &Options {
                residual: true,
                left_updating: true,
                ..options(JoinKind::Full)
            },
            fixed_clock(),
        );
        let mut out = OperatorContext::default();
        op.on_batch(1, batch("r", None, &[(Some(1), 50)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["+ NULL NULL 1 50"]);
        // 60 < 50 fails the residual: both rows stay padded.
        op.on_batch(
            0,
            batch("l", Some("++"), &[(Some(1), 60), (Some(1), 40)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            ["+ 1 60 NULL NULL", "- NULL NULL 1 50", "+ 1 40 1 50"]
        );
        op.on_batch(0, batch("l", Some("-"), &[(Some(1), 40)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["- 1 40 1 50", "+ NULL NULL 1 50"]);
    }

    #[test]
    fn semi_and_anti_joins_emit_the_kept_rows_as_their_partners_come_and_go() {
        let updating_right = |kind| Options {
            right_updating: true,
            ..options(kind)
        };
        let mut semi = operator(&updating_right(JoinKind::LeftSemi), fixed_clock());
        let mut anti = operator(
            &updating_right(JoinKind::LeftAnti { null_aware: false }),
            fixed_clock(),
        );
        let steps: Vec<(usize, RecordBatch)> = vec![
            (0, batch("l", None, &[(Some(1), 10), (None, 5)])),
            (1, batch("r", Some("++"), &[(Some(1), 100), (Some(1), 101)])),
            (1, batch("r", Some("-"), &[(Some(1), 100)])),
            (1, batch("r", Some("-"), &[(Some(1), 101)])),
            (0, batch("l", None, &[(Some(2), 20)])),
        ];
        let mut got = (Vec::new(), Vec::new());
        for (input, b) in steps {
            let mut out = OperatorContext::default();
            semi.on_batch(input, b.clone(), &mut out).unwrap();
            got.0.push(rows(&mut out).join(", "));
            anti.on_batch(input, b, &mut out).unwrap();
            got.1.push(rows(&mut out).join(", "));
        }
        assert_eq!(
            got.0,
            ["", "+ 1 10", "", "- 1 10", ""],
            "semi: a row is in while it has a partner (a NULL key never has one)"
        );
        assert_eq!(
            got.1,
            ["+ 1 10, + NULL 5", "- 1 10", "", "+ 1 10", "+ 2 20"],
            "anti: a row is in while it has no partner"
        );
        // A semi join of append-only inputs appends.
        let mut op = operator(&options(JoinKind::RightSemi), fixed_clock());
        let mut out = OperatorContext::default();
        op.on_batch(1, batch("r", None, &[(Some(3), 1)]), &mut out)
            .unwrap();
        op.on_batch(0, batch("l", None, &[(Some(3), 7), (Some(3), 8)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["3 1"], "once, for its first partner");
    }

    #[test]
    fn a_ttl_drops_rows_stored_that_long_ago_over_a_million_keys() {
        let now = Arc::new(AtomicI64::new(0));
        let clock: Clock = {
            let now = Arc::clone(&now);
            Arc::new(move || now.load(Ordering::Relaxed))
        };
        let mut op = operator(
            &Options {
                ttl: Some(Duration::from_secs(3600)),
                ..options(JoinKind::Inner)
            },
            clock,
        );
        let mut out = OperatorContext::default();
        let keys = 1_000_000;
        let left: Vec<(Option<i64>, i64)> = (0..keys).map(|k| (Some(k), k)).collect();
        op.on_batch(0, batch("l", None, &left), &mut out).unwrap();
        let held = |op: &RegularJoinOperator| op.state_usage()[0].rows;
        assert_eq!(held(&op), keys as usize);
        // Half an hour later a second half of keys arrives on the left.
        now.store(1_800_000, Ordering::Relaxed);
        op.on_batch(0, batch("l", None, &[(Some(-1), 0)]), &mut out)
            .unwrap();
        assert_eq!(held(&op), keys as usize + 1, "nothing expired yet");
        // Just past the hour the million rows expire, at the next watermark.
        now.store(3_600_001, Ordering::Relaxed);
        op.on_watermark(1, &mut out).unwrap();
        assert_eq!(held(&op), 1, "only the row stored later is held");
        op.on_batch(
            1,
            batch("r", None, &[(Some(7), 1), (Some(-1), 2)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            ["-1 0 -1 2"],
            "an expired row no longer joins"
        );
    }

    #[test]
    fn restores_at_every_cut_with_the_same_changelog() {
        let mut rng = Lcg(5);
        let mut steps = Vec::new();
        // The left side is a changelog whose retractions remove rows it added.
        let mut added: Vec<(Option<i64>, i64)> = Vec::new();
        for w in 0..14 {
            let input = rng.next(2) as usize;
            if input == 0 {
                let mut ops = String::new();
                let mut rows = Vec::new();
                for _ in 0..1 + rng.next(3) {
                    if !added.is_empty() && rng.next(3) == 0 {
                        let at = rng.next(added.len() as u64) as usize;
                        rows.push(added.remove(at));
                        ops.push('-');
                    } else {
                        let k = (rng.next(4) != 0).then(|| rng.next(3) as i64);
                        let row = (k, rng.next(5) as i64);
                        added.push(row);
                        rows.push(row);
                        ops.push('+');
                    }
                }
                steps.push(Step::BatchOn(0, batch("l", Some(&ops), &rows)));
            } else {
                let rows: Vec<(Option<i64>, i64)> = (0..1 + rng.next(3))
                    .map(|_| (Some(rng.next(3) as i64), rng.next(5) as i64))
                    .collect();
                steps.push(Step::BatchOn(1, batch("r", None, &rows)));
            }
            steps.push(Step::Watermark(w));
        }
        steps.push(Step::End);
        let o = Options {
            left_updating: true,
            residual: true,
            ..options(JoinKind::Full)
        };
        let make = || Box::new(operator(&o, fixed_clock())) as Box<dyn Operator>;
        let tables = state_tables(&["lk".to_string()], &["rk".to_string()], false);
        let (output, _) = check_every_cut_forwarding(&make, &tables, &steps);
        let text = output.join("\n");
        assert!(text.contains("| - "), "the sequence retracts rows");
        assert!(text.contains("|    |    |"), "the sequence pads rows");
    }
}
