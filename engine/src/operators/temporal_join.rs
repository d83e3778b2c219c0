//! `TemporalJoinOperator`: an event-time temporal join (Flink's `JOIN versioned FOR
//! SYSTEM_TIME AS OF left.ts`). Each left row joins the version of its key that the right side
//! (a versioned table) held at the row's time: the right row with that key and the greatest
//! version time not after it. INNER drops a left row without one; LEFT pads it with NULLs.
//!
//! Input 0 is the left side (append-only), input 1 the versioned table: a changelog of an
//! upsert source (`+` rows are versions, `-` rows deletes) or append-only rows, each a new
//! version of its key (a versioned view). A version starts at its row's time attribute. A
//! delete (a `-` not followed by a `+` of the same key in the same batch, which would make it
//! an update) carries no time of its own: it takes effect after the watermark it arrives at
//! (and never before the version it deletes), so rows not yet joined no longer find the key.
//!
//! Emission: a left row waits until the watermark (the minimum of both inputs') reaches its
//! time, because a version at or before it may still arrive; then rows are joined in time
//! order (ties in arrival order) and the watermark is forwarded after them. Output is
//! append-only and the left's time attribute stays one. A left row at or behind the watermark
//! when it arrives, or a version at or behind it, is late: dropped and counted (rows it would
//! have changed are out already). A left row whose time is NULL never waits: LEFT pads it at
//! once. A NULL key never matches.
//!
//! State: the waiting left rows, and per key the versions a later row may still need: once the
//! watermark passes a version's successor, nothing can find it and it is dropped (a key whose
//! only version is a past delete goes). Held in Arrow's row format.
//!
//! Snapshot: table `temporal_join` holds the watermark; `left_rows` the waiting left rows in
//! the order they are emitted; `right_rows` every version (its row, then `version_time` and
//! `deleted`), key by key in version order. Restore puts them back in that order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, new_null_array,
};
use datafusion::arrow::compute::{cast, interleave, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter};
use datafusion::physical_expr::PhysicalExpr;

use super::join_rows::{JoinKind, KeyEncoder, SIDE_TABLES, residual_mask, restore_join_watermark};
use super::{Operator, OperatorContext, OperatorInfo, changelog_inserts, conform_batch};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::{Epoch, EventTime, WATERMARK_END};
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot table of the operator's values (its watermark).
const META_TABLE: &str = "temporal_join";
/// The snapshot columns after a version's row.
const VERSION_TIME: &str = "version_time";
const DELETED: &str = "deleted";

/// The state tables of a temporal join on `left_keys = right_keys` (as the plan names them).
pub fn state_tables(left_keys: &[String], right_keys: &[String]) -> Vec<StateTable> {
    let [left, right] = SIDE_TABLES;
    vec![
        StateTable::fixed(META_TABLE, "the watermark"),
        StateTable::new(
            left,
            left_keys.to_vec(),
            "left rows until the watermark passes them",
            Freed::Watermark,
        ),
        StateTable::new(
            right,
            right_keys.to_vec(),
            "the versions rows may still join",
            Freed::Watermark,
        ),
    ]
}

/// What a temporal join computes.
pub struct TemporalJoinSpec {
    /// INNER or LEFT.
    pub kind: JoinKind,
    pub left_schema: SchemaRef,
    pub left_keys: KeyEncoder,
    pub left_time: usize,
    pub left_unit_ns: i64,
    /// The versioned table's rows, without `__op`.
    pub right_schema: SchemaRef,
    /// The right input is a changelog led by `__op`.
    pub right_updating: bool,
    /// Over `right_schema`.
    pub right_keys: KeyEncoder,
    pub right_time: usize,
    pub right_unit_ns: i64,
    /// The right columns of the output.
    pub right_columns: Vec<usize>,
    /// A condition on the version found, over `right_schema`.
    pub right_filter: Option<Arc<dyn PhysicalExpr>>,
    /// A condition on the joined row, over the output schema.
    pub residual: Option<Arc<dyn PhysicalExpr>>,
}

/// One version of a key.
struct Version {
    time: i64,
    row: OwnedRow,
    deleted: bool,
    /// The right filter holds for the row.
    passes: bool,
}

pub struct TemporalJoinOperator {
    info: OperatorInfo,
    spec: TemporalJoinSpec,
    converter: RowConverter,
    watermark: Option<EventTime>,
    /// Waiting left rows by (time, arrival): (batch id, row).
    waiting: BTreeMap<(i64, u64), (u64, u32)>,
    /// The batches holding waiting rows, with how many of their rows still wait.
    left_batches: HashMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    next_seq: u64,
    /// Per encoded key, its versions in version-time order (ties in arrival order).
    versions: HashMap<Box<[u8]>, Vec<Version>>,
    /// Keys with more than one version, or a delete: the ones the watermark may prune.
    prunable: HashSet<Box<[u8]>>,
    version_count: usize,
    version_bytes: usize,
}

fn times(batch: &RecordBatch, index: usize, unit_ns: i64) -> EngineResult<Vec<Option<i64>>> {
    let column = cast(batch.column(index), &DataType::Int64)?;
    let column = column.as_primitive::<Int64Type>();
    Ok((0..batch.num_rows())
        .map(|r| {
            column
                .is_valid(r)
                .then(|| column.value(r).checked_mul(unit_ns))
                .flatten()
        })
        .collect())
}

impl TemporalJoinOperator {
    pub fn try_new(info: OperatorInfo, spec: TemporalJoinSpec) -> EngineResult<Self> {
        if !matches!(spec.kind, JoinKind::Inner | JoinKind::Left) {
            return Err(EngineError::Internal(format!(
                "a {} temporal join",
                spec.kind
            )));
        }
        let converter = super::row_converter(&spec.right_schema)?;
        Ok(Self {
            info,
            spec,
            converter,
            watermark: None,
            waiting: BTreeMap::new(),
            left_batches: HashMap::new(),
            next_batch: 0,
            next_seq: 0,
            versions: HashMap::new(),
            prunable: HashSet::new(),
            version_count: 0,
            version_bytes: 0,
        })
    }

    fn is_late(&self, time: i64) -> bool {
        self.watermark.is_some_and(|w| time <= w)
    }

    /// Holds `batch`'s rows at `rows` (row, time) until the watermark passes them.
    fn wait(&mut self, batch: RecordBatch, rows: &[(usize, i64)]) {
        if rows.is_empty() {
            return;
        }
        let id = self.next_batch;
        self.next_batch += 1;
        for &(row, time) in rows {
            self.waiting.insert((time, self.next_seq), (id, row as u32));
            self.next_seq += 1;
        }
        self.left_batches.insert(id, (batch, rows.len()));
    }

    /// Adds a version of `key` (a delete when `deleted`).
    fn add_version(&mut self, key: &[u8], version: Version) {
        self.version_count += 1;
        self.version_bytes += version.row.as_ref().len();
        let versions = self.versions.entry(key.into()).or_default();
        let at = versions.partition_point(|v| v.time <= version.time);
        versions.insert(at, version);
        if versions.len() > 1 || versions[0].deleted {
            self.prunable.insert(key.into());
        }
    }

    /// The joined rows of `left` (rows already emitted in order), each with the version its
    /// key had at its time (`None`: none).
    fn join_rows(
        &self,
        left: &RecordBatch,
        times: &[Option<i64>],
    ) -> EngineResult<Option<RecordBatch>> {
        let (keys, valid) = self.spec.left_keys.encode(left)?;
        let mut found: Vec<Option<&OwnedRow>> = Vec::with_capacity(left.num_rows());
        for row in 0..left.num_rows() {
            let version = match (valid[row], times[row]) {
                (true, Some(time)) => self.versions.get(keys.row(row).data()).and_then(|vs| {
                    let at = vs.partition_point(|v| v.time <= time);
                    at.checked_sub(1)
                        .map(|i| &vs[i])
                        .filter(|v| !v.deleted && v.passes)
                        .map(|v| &v.row)
                }),
                _ => None,
            };
            found.push(version);
        }
        let joined = self.assemble(left, &found)?;
        let keep: Vec<bool> = match &self.spec.residual {
            Some(residual) => {
                let mask = residual_mask(residual, &joined)?;
                let passed: Vec<bool> = (0..joined.num_rows())
                    .map(|r| found[r].is_some() && mask.value(r))
                    .collect();
                if self.spec.kind == JoinKind::Left
                    && passed.iter().zip(&found).any(|(p, f)| !p && f.is_some())
                {
                    // Rows whose version fails the condition are padded instead.
                    let found: Vec<Option<&OwnedRow>> = found
                        .iter()
                        .zip(&passed)
                        .map(|(f, p)| f.filter(|_| *p))
                        .collect();
                    let joined = self.assemble(left, &found)?;
                    return Ok(Some(joined));
                }
                passed
            }
            None => found.iter().map(Option::is_some).collect(),
        };
        let joined = if self.spec.kind == JoinKind::Left || keep.iter().all(|k| *k) {
            joined
        } else {
            super::join_rows::keep(&joined, &BooleanArray::from(keep))?
        };
        Ok((joined.num_rows() > 0).then_some(joined))
    }

    /// `left`'s columns, then the right columns of each row's version (NULLs for `None`).
    fn assemble(
        &self,
        left: &RecordBatch,
        found: &[Option<&OwnedRow>],
    ) -> EngineResult<RecordBatch> {
        let rows: Vec<_> = found.iter().flatten().map(|r| r.row()).collect();
        let right = if rows.is_empty() {
            None
        } else {
            Some(self.converter.convert_rows(rows)?)
        };
        let mut next = 0;
        let indices: Vec<(usize, usize)> = found
            .iter()
            .map(|f| match f {
                Some(_) => {
                    next += 1;
                    (0, next - 1)
                }
                None => (1, 0),
            })
            .collect();
        let mut columns: Vec<ArrayRef> = left.columns().to_vec();
        for &c in &self.spec.right_columns {
            let field = self.spec.right_schema.field(c);
            let null = new_null_array(field.data_type(), 1);
            let column = match &right {
                Some(right) => interleave(&[right[c].as_ref(), null.as_ref()], &indices)?,
                None => new_null_array(field.data_type(), left.num_rows()),
            };
            columns.push(column);
        }
        conform_batch(&self.info.schema, columns)
    }

    /// Emits the waiting rows at or before `watermark`, in time order.
    fn emit_until(&mut self, watermark: EventTime, out: &mut OperatorContext) -> EngineResult<()> {
        let ready = if watermark == WATERMARK_END {
            std::mem::take(&mut self.waiting)
        } else {
            let rest = self.waiting.split_off(&(watermark + 1, 0));
            std::mem::replace(&mut self.waiting, rest)
        };
        if ready.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<u64> = ready.values().map(|(b, _)| *b).collect();
        ids.sort_unstable();
        ids.dedup();
        let batches: Vec<&RecordBatch> = ids.iter().map(|id| &self.left_batches[id].0).collect();
        let indices: Vec<(usize, usize)> = ready
            .values()
            .map(|(b, r)| (ids.binary_search(b).unwrap_or(0), *r as usize))
            .collect();
        let columns = (0..self.spec.left_schema.fields().len())
            .map(|c| {
                let sources: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&sources, &indices)?)
            })
            .collect::<EngineResult<Vec<ArrayRef>>>()?;
        let left = RecordBatch::try_new(Arc::clone(&self.spec.left_schema), columns)?;
        let times: Vec<Option<i64>> = ready.keys().map(|(t, _)| Some(*t)).collect();
        if let Some(joined) = self.join_rows(&left, &times)? {
            out.batch(joined);
        }
        for (b, _) in ready.values() {
            if let Some(entry) = self.left_batches.get_mut(b) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.left_batches.remove(b);
                }
            }
        }
        Ok(())
    }

    /// Drops the versions no row can find once the watermark is at `watermark`.
    fn prune(&mut self, watermark: EventTime) {
        let mut settled = Vec::new();
        for key in &self.prunable {
            let Some(versions) = self.versions.get_mut(key) else {
                settled.push(key.clone());
                continue;
            };
            // The last version at or before the watermark is the one later rows may find.
            let at = versions.partition_point(|v| v.time <= watermark);
            if at > 1 {
                for v in versions.drain(..at - 1) {
                    self.version_count -= 1;
                    self.version_bytes -= v.row.as_ref().len();
                }
            }
            if versions.len() == 1 && versions[0].deleted && versions[0].time <= watermark {
                let v = versions.remove(0);
                self.version_count -= 1;
                self.version_bytes -= v.row.as_ref().len();
            }
            if versions.is_empty() {
                self.versions.remove(key);
                settled.push(key.clone());
            } else if versions.len() == 1 && !versions[0].deleted {
                settled.push(key.clone());
            }
        }
        for key in settled {
            self.prunable.remove(&key);
        }
    }

    fn on_left(&mut self, batch: RecordBatch, out: &mut OperatorContext) -> EngineResult<()> {
        let times = times(&batch, self.spec.left_time, self.spec.left_unit_ns)?;
        let mut waiting = Vec::new();
        let mut timeless = Vec::new();
        let mut late = Vec::new();
        for (row, time) in times.iter().enumerate() {
            match time {
                None => timeless.push(row as u32),
                Some(t) if self.is_late(*t) => late.push((row, Some(*t))),
                Some(t) => waiting.push((row, *t)),
            }
        }
        out.drop_late(&batch, &late)?;
        if self.spec.kind == JoinKind::Left && !timeless.is_empty() {
            let rows = take_record_batch(
                &batch,
                &datafusion::arrow::array::UInt32Array::from(timeless.clone()),
            )?;
            let none = vec![None; rows.num_rows()];
            if let Some(padded) = self.join_rows(&rows, &none)? {
                out.batch(padded);
            }
        }
        self.wait(batch, &waiting);
        Ok(())
    }

    fn on_right(&mut self, batch: RecordBatch, out: &mut OperatorContext) -> EngineResult<()> {
        let (batch, inserts) = if self.spec.right_updating {
            let inserts = changelog_inserts(&batch)?;
            let columns: Vec<usize> = (1..batch.num_columns()).collect();
            (batch.project(&columns)?, inserts)
        } else {
            let rows = batch.num_rows();
            (batch, vec![true; rows])
        };
        let batch = RecordBatch::try_new(
            Arc::clone(&self.spec.right_schema),
            batch.columns().to_vec(),
        )?;
        let times = times(&batch, self.spec.right_time, self.spec.right_unit_ns)?;
        let (keys, valid) = self.spec.right_keys.encode(&batch)?;
        let passes: Vec<bool> = match &self.spec.right_filter {
            Some(filter) => {
                let mask = residual_mask(filter, &batch)?;
                (0..batch.num_rows()).map(|r| mask.value(r)).collect()
            }
            None => vec![true; batch.num_rows()],
        };
        let rows = self.converter.convert_columns(batch.columns())?;
        // Deletes of this batch not followed by an upsert of their key: key -> row. (Keys are
        // independent, so the order they are applied in does not matter.)
        let mut deletes: HashMap<Box<[u8]>, usize> = HashMap::new();
        let mut late = Vec::new();
        for row in 0..batch.num_rows() {
            if !valid[row] {
                continue;
            }
            let key = keys.row(row).data();
            if !inserts[row] {
                deletes.insert(key.into(), row);
                continue;
            }
            deletes.remove(key);
            match times[row] {
                Some(t) if !self.is_late(t) => self.add_version(
                    key,
                    Version {
                        time: t,
                        row: rows.row(row).owned(),
                        deleted: false,
                        passes: passes[row],
                    },
                ),
                time => late.push((row, time)),
            }
        }
        out.drop_late(&batch, &late)?;
        for (key, row) in deletes {
            let Some(latest) = self.versions.get(&key).and_then(|vs| vs.last()) else {
                continue;
            };
            let after_watermark = self.watermark.map_or(i64::MIN, |w| w.saturating_add(1));
            let time = latest.time.max(after_watermark);
            self.add_version(
                &key,
                Version {
                    time,
                    row: rows.row(row).owned(),
                    deleted: true,
                    passes: false,
                },
            );
        }
        Ok(())
    }

    /// The waiting left rows in emission order.
    fn export_waiting(&self) -> EngineResult<Option<RecordBatch>> {
        if self.waiting.is_empty() {
            return Ok(None);
        }
        let mut ids: Vec<u64> = self.left_batches.keys().copied().collect();
        ids.sort_unstable();
        let batches: Vec<&RecordBatch> = ids.iter().map(|id| &self.left_batches[id].0).collect();
        let indices: Vec<(usize, usize)> = self
            .waiting
            .values()
            .map(|(b, r)| (ids.binary_search(b).unwrap_or(0), *r as usize))
            .collect();
        let columns = (0..self.spec.left_schema.fields().len())
            .map(|c| {
                let sources: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&sources, &indices)?)
            })
            .collect::<EngineResult<Vec<ArrayRef>>>()?;
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.spec.left_schema),
            columns,
        )?))
    }

    fn versions_schema(&self) -> SchemaRef {
        let mut fields: Vec<Arc<Field>> = self.spec.right_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(VERSION_TIME, DataType::Int64, false)));
        fields.push(Arc::new(Field::new(DELETED, DataType::Boolean, false)));
        Arc::new(Schema::new(fields))
    }

    /// Every version, key by key in version order.
    fn export_versions(&self) -> EngineResult<Option<RecordBatch>> {
        if self.version_count == 0 {
            return Ok(None);
        }
        let all: Vec<&Version> = self.versions.values().flatten().collect();
        let mut columns = self
            .converter
            .convert_rows(all.iter().map(|v| v.row.row()))?;
        columns.push(Arc::new(Int64Array::from_iter_values(
            all.iter().map(|v| v.time),
        )));
        columns.push(Arc::new(BooleanArray::from(
            all.iter().map(|v| v.deleted).collect::<Vec<_>>(),
        )));
        Ok(Some(RecordBatch::try_new(self.versions_schema(), columns)?))
    }

    fn restore_versions(&mut self, batch: &RecordBatch) -> EngineResult<()> {
        let width = self.spec.right_schema.fields().len();
        let shaped = batch.num_columns() == width + 2
            && batch
                .schema()
                .fields()
                .iter()
                .zip(self.versions_schema().fields())
                .all(|(f, e)| f.data_type() == e.data_type());
        let (true, Some(times), Some(deleted)) = (
            shaped,
            batch
                .columns()
                .get(width)
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
            batch
                .columns()
                .get(width + 1)
                .and_then(|c| c.as_boolean_opt()),
        ) else {
            return Err(corrupt(format!(
                "right_rows of a temporal join has columns {:?}, not the versioned table's, \
                 `{VERSION_TIME}` and `{DELETED}`",
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            )));
        };
        let rows_batch = RecordBatch::try_new(
            Arc::clone(&self.spec.right_schema),
            batch.columns()[..width].to_vec(),
        )?;
        let (keys, _) = self.spec.right_keys.encode(&rows_batch)?;
        let passes: Vec<bool> = match &self.spec.right_filter {
            Some(filter) => {
                let mask = residual_mask(filter, &rows_batch)?;
                (0..rows_batch.num_rows()).map(|r| mask.value(r)).collect()
            }
            None => vec![true; rows_batch.num_rows()],
        };
        let rows = self.converter.convert_columns(rows_batch.columns())?;
        for (row, passes) in passes.into_iter().enumerate() {
            let deleted = deleted.value(row);
            self.add_version(
                keys.row(row).data(),
                Version {
                    time: times.value(row),
                    row: rows.row(row).owned(),
                    deleted,
                    passes: passes && !deleted,
                },
            );
        }
        Ok(())
    }
}

impl Operator for TemporalJoinOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        if input == 0 {
            self.on_left(batch, out)
        } else {
            self.on_right(batch, out)
        }
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
        self.emit_until(watermark, out)?;
        self.watermark = Some(watermark);
        self.prune(watermark);
        out.watermark(watermark);
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        let [left, right] = SIDE_TABLES;
        vec![
            StateUsage {
                table: left,
                rows: self.waiting.len(),
                bytes: self
                    .left_batches
                    .values()
                    .map(|(b, _)| b.get_array_memory_size())
                    .sum(),
            },
            StateUsage {
                table: right,
                rows: self.version_count,
                bytes: self.version_bytes,
            },
        ]
    }

    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(META_TABLE, &[("watermark", self.watermark)])?;
        let [left, right] = SIDE_TABLES;
        if let Some(batch) = self.export_waiting()? {
            snapshot.add(left, batch)?;
        }
        if let Some(batch) = self.export_versions()? {
            snapshot.add(right, batch)?;
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        if self.watermark.is_some() || !self.waiting.is_empty() || self.version_count > 0 {
            return Err(EngineError::Internal(
                "temporal join: restore into an operator that already ran".to_string(),
            ));
        }
        let watermark = restore_join_watermark(&snapshot, "a temporal join", META_TABLE)?;
        let [left, right] = SIDE_TABLES;
        for batch in snapshot.table(left) {
            let shaped = batch.num_columns() == self.spec.left_schema.fields().len()
                && batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(self.spec.left_schema.fields())
                    .all(|(f, e)| f.data_type() == e.data_type());
            if !shaped {
                return Err(corrupt(
                    "left_rows of a temporal join do not have the left input's columns",
                ));
            }
            let batch =
                RecordBatch::try_new(Arc::clone(&self.spec.left_schema), batch.columns().to_vec())?;
            let times = times(&batch, self.spec.left_time, self.spec.left_unit_ns)?;
            let rows: Vec<(usize, i64)> = times
                .iter()
                .enumerate()
                .map(|(r, t)| t.map(|t| (r, t)))
                .collect::<Option<_>>()
                .ok_or_else(|| corrupt("a waiting left row of a temporal join without a time"))?;
            self.wait(batch, &rows);
        }
        for batch in snapshot.table(right) {
            self.restore_versions(&batch)?;
        }
        self.watermark = watermark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::operators::checkpoint_harness::restore_declared;
    use crate::operators::join_rows::checkpoint_tests::{Emitted, Step, check_every_cut, run};

    const MS: i64 = 1_000_000;

    fn ts_field(name: &str) -> Field {
        Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, None), true)
    }

    /// Orders (id, cur, ts) and rates (cur, rate, ts), rates updating when `changelog`.
    fn schemas(changelog: bool) -> (SchemaRef, SchemaRef, SchemaRef) {
        let left = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("cur", DataType::Utf8, true),
            ts_field("ts"),
        ]));
        let right = Arc::new(Schema::new(vec![
            Field::new("r_cur", DataType::Utf8, true),
            Field::new("rate", DataType::Int64, true),
            ts_field("r_ts"),
        ]));
        let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("rate", DataType::Int64, true));
        let _ = changelog;
        (left, right, Arc::new(Schema::new(fields)))
    }

    fn join(kind: JoinKind, changelog: bool) -> TemporalJoinOperator {
        let (left, right, output) = schemas(changelog);
        let key = |name: &str, index: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(Column::new(name, index))
        };
        let spec = TemporalJoinSpec {
            kind,
            left_schema: Arc::clone(&left),
            left_keys: KeyEncoder::try_new(vec![key("cur", 1)], &[DataType::Utf8]).unwrap(),
            left_time: 2,
            left_unit_ns: MS,
            right_schema: right,
            right_updating: changelog,
            right_keys: KeyEncoder::try_new(vec![key("r_cur", 0)], &[DataType::Utf8]).unwrap(),
            right_time: 2,
            right_unit_ns: MS,
            right_columns: vec![1],
            right_filter: None,
            residual: None,
        };
        TemporalJoinOperator::try_new(
            OperatorInfo {
                name: "TemporalJoin".to_string(),
                schema: output,
            },
            spec,
        )
        .unwrap()
    }

    fn orders(rows: &[(i64, Option<&str>, i64)]) -> RecordBatch {
        let (left, _, _) = schemas(false);
        RecordBatch::try_new(
            left,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    /// Append-only rate rows (currency, rate, time).
    fn versions(rows: &[(Option<&str>, i64, i64)]) -> RecordBatch {
        let (_, right, _) = schemas(false);
        RecordBatch::try_new(
            right,
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    /// Changelog rate rows (currency, op, rate, time).
    fn rates(rows: &[(Option<&str>, &str, i64, i64)]) -> RecordBatch {
        let rows_only = versions(&rows.iter().map(|r| (r.0, r.2, r.3)).collect::<Vec<_>>());
        let mut fields = vec![Arc::new(Field::new("__op", DataType::Utf8, false))];
        fields.extend(rows_only.schema().fields().iter().cloned());
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.1),
        ))];
        columns.extend(rows_only.columns().iter().cloned());
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    fn output(emitted: &[Emitted]) -> Vec<String> {
        let mut rows = Vec::new();
        for e in emitted {
            if let Emitted::Rows(b) = e {
                let ids = b.column(0).as_primitive::<Int64Type>();
                let rates = b.column(3).as_primitive::<Int64Type>();
                for r in 0..b.num_rows() {
                    let rate = if rates.is_valid(r) {
                        rates.value(r).to_string()
                    } else {
                        "NULL".to_string()
                    };
                    rows.push(format!("{}:{rate}", ids.value(r)));
                }
            }
        }
        rows
    }

    #[test]
    fn each_row_joins_the_version_valid_at_its_time_once_the_watermark_passes_it() {
        let mut op = join(JoinKind::Left, true);
        let emitted = run(
            &mut op,
            &[
                Step::Rows(
                    1,
                    rates(&[(Some("EUR"), "+", 100, 10), (Some("USD"), "+", 7, 10)]),
                ),
                Step::Rows(
                    0,
                    orders(&[
                        (1, Some("EUR"), 15),
                        (2, Some("EUR"), 5),
                        (3, Some("GBP"), 20),
                    ]),
                ),
                // An update at 20: -old then +new.
                Step::Rows(
                    1,
                    rates(&[(Some("EUR"), "-", 100, 10), (Some("EUR"), "+", 110, 20)]),
                ),
                Step::Rows(
                    0,
                    orders(&[(4, Some("EUR"), 25), (5, Some("EUR"), 20), (6, None, 21)]),
                ),
                Step::Watermark(19 * MS),
                // Order 7 at 19 is late now.
                Step::Rows(0, orders(&[(7, Some("EUR"), 19)])),
                // A delete of USD takes effect after the watermark (19).
                Step::Rows(1, rates(&[(Some("USD"), "-", 7, 10)])),
                Step::Rows(0, orders(&[(8, Some("USD"), 20)])),
                Step::Watermark(30 * MS),
            ],
        );
        assert_eq!(
            output(&emitted),
            // By time: 2 at 5 (no rate yet), 1 at 15, 3 at 20 (GBP: none) ...
            [
                "2:NULL", "1:100", "3:NULL", "5:110", "8:NULL", "6:NULL", "4:110"
            ]
        );
        assert_eq!(op.watermark, Some(30 * MS));
    }

    #[test]
    fn versions_behind_the_watermark_are_pruned_but_the_current_one_is_kept() {
        let mut op = join(JoinKind::Inner, false);
        let emitted = run(
            &mut op,
            &[
                Step::Rows(
                    1,
                    versions(&[
                        (Some("EUR"), 1, 10),
                        (Some("EUR"), 2, 20),
                        (Some("EUR"), 3, 30),
                    ]),
                ),
                Step::Watermark(25 * MS),
                Step::Rows(0, orders(&[(1, Some("EUR"), 26), (2, Some("EUR"), 31)])),
                Step::Watermark(40 * MS),
            ],
        );
        assert_eq!(output(&emitted), ["1:2", "2:3"]);
        // After 25 the version at 10 can no longer be found; after 40 only the one at 30.
        assert_eq!(op.version_count, 1);
    }

    #[test]
    fn restoring_at_every_cut_gives_the_same_output() {
        let steps = vec![
            Step::Rows(
                1,
                rates(&[(Some("EUR"), "+", 100, 10), (Some("USD"), "+", 7, 10)]),
            ),
            Step::Rows(0, orders(&[(1, Some("EUR"), 15), (2, Some("EUR"), 5)])),
            Step::Watermark(8 * MS),
            Step::Rows(
                1,
                rates(&[(Some("EUR"), "-", 100, 10), (Some("EUR"), "+", 110, 20)]),
            ),
            Step::Rows(0, orders(&[(4, Some("EUR"), 25), (5, Some("USD"), 20)])),
            Step::Rows(1, rates(&[(Some("USD"), "-", 7, 10)])),
            Step::Watermark(22 * MS),
            Step::Rows(0, orders(&[(6, Some("EUR"), 30), (9, Some("EUR"), 21)])),
            Step::Watermark(WATERMARK_END),
        ];
        check_every_cut(
            || join(JoinKind::Left, true),
            &state_tables(&[], &[]),
            &steps,
        );
    }

    #[test]
    fn snapshots_of_another_shape_are_refused() {
        let mut op = join(JoinKind::Left, true);
        let mut snapshot = StateSnapshot::new();
        snapshot
            .add_values(META_TABLE, &[("watermark", Some(5))])
            .unwrap();
        snapshot
            .add(SIDE_TABLES[1], orders(&[(1, Some("EUR"), 15)]))
            .unwrap();
        assert!(matches!(
            restore_declared(&mut op, &state_tables(&[], &[]), snapshot),
            Err(EngineError::Checkpoint(_))
        ));
    }
}
