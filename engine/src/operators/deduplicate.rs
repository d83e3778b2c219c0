//! `DeduplicateOperator`: `ROW_NUMBER() OVER (PARTITION BY k ORDER BY <time attribute>
//! ASC|DESC)` filtered by `rn = 1` (or `rn <= 1`) over an append-only stream: Flink's
//! deduplication, keeping the first or the last row of each key in event time.
//!
//! Keep first (`ASC`): emission is append-only, on watermark. Each key's candidate is its
//! earliest row so far (ties: the one that arrived first); once the watermark reaches the
//! candidate's time no earlier row can come, so it is emitted (with number 1) and the key
//! keeps only a marker of that time. A later row of the key is dropped; one ordered before the
//! emitted row is late (counted). A candidate already behind the watermark when it arrives
//! is emitted after its batch. Watermark: forwarded after emitting the candidates it passes.
//!
//! Keep last (`DESC`): emission is updating. Each key holds its latest row (ties: the one
//! that arrived last). After each batch, every key whose row changed emits `-` the row it
//! emitted before (unless it is new) and `+` the new row; an older row than the one held is
//! dropped (never late). Watermarks are forwarded unchanged.
//!
//! State: keep first, a candidate row per key not yet emitted (freed by the watermark) and a
//! marker (the key and the emitted time) per key emitted; keep last, the latest row of every
//! key. Markers and latest rows are never freed without a TTL (`state=unbounded`); with one
//! (`SET state.ttl`, module `ttl`) they expire that long after they were written, in
//! processing time, without emitting anything, as in Flink: a later row of an expired key is
//! kept again (keep first emits it again; keep last emits `+` with no `-` before it). Entries
//! restored from a checkpoint count their TTL from the restore. Rows and keys are held in
//! Arrow's row format.
//!
//! Snapshot: keep first, `meta` (the watermark), `candidates` (the candidate rows in emission
//! order) and `emitted` (each marker's key columns and time); keep last, `rows` (the held
//! rows).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::ttl::StateTtl;
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::{Epoch, EventTime};
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// Snapshot tables and values.
const META: &str = "meta";
const CANDIDATES: &str = "candidates";
const EMITTED: &str = "emitted";
const ROWS: &str = "rows";
const WATERMARK: &str = "watermark";

/// Which row of each key a deduplication keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The first in event time (`ORDER BY time ASC`): append-only.
    First,
    /// The last in event time (`ORDER BY time DESC`): updating.
    Last,
}

/// The state tables of a deduplication by `keys` (as the plan names them), with a TTL or not.
pub fn state_tables(keys: &[String], keep: Keep, ttl: bool) -> Vec<StateTable> {
    let freed = if ttl { Freed::Ttl } else { Freed::Never("") };
    match keep {
        Keep::First => vec![
            StateTable::fixed(META, "the watermark"),
            StateTable::new(
                CANDIDATES,
                keys.to_vec(),
                "the first row of each key until the watermark passes it",
                Freed::Watermark,
            ),
            StateTable::new(
                EMITTED,
                keys.to_vec(),
                "the time of each key's emitted row",
                freed,
            ),
        ],
        Keep::Last => vec![StateTable::new(
            ROWS,
            keys.to_vec(),
            "the last row of each key",
            freed,
        )],
    }
}

/// What a deduplication keys by and keeps.
pub struct DeduplicateSpec {
    /// PARTITION BY expressions (none: one key).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The ORDER BY: the time attribute, ascending (first) or descending (last).
    pub order: PhysicalSortExpr,
    /// Nanoseconds per unit of the time attribute.
    pub time_unit_ns: i64,
    pub keep: Keep,
}

/// A candidate of keep-first: not emitted yet.
struct Candidate {
    /// The ORDER BY key (row format: bytes compare in ORDER BY order).
    order: Box<[u8]>,
    /// Its place in `pending`.
    due: (EventTime, u64),
    row: OwnedRow,
}

/// A held row of keep-last.
struct Latest {
    order: Box<[u8]>,
    row: OwnedRow,
    /// When it was written (processing time, ms; with a TTL).
    written_at: i64,
}

/// Keep first: an emitted key's marker.
struct Marker {
    /// The ORDER BY key of its emitted row.
    order: Box<[u8]>,
    /// When it was emitted (processing time, ms; with a TTL).
    written_at: i64,
}

pub struct DeduplicateOperator {
    info: OperatorInfo,
    input_schema: SchemaRef,
    spec: DeduplicateSpec,
    rows: RowConverter,
    key_rows: RowConverter,
    order_rows: RowConverter,
    /// Keep first: candidates by key, and their keys by (time, arrival) to emit in order.
    candidates: HashMap<Box<[u8]>, Candidate>,
    pending: BTreeMap<(EventTime, u64), Box<[u8]>>,
    /// Keep first: each emitted key's marker.
    emitted: HashMap<Box<[u8]>, Marker>,
    /// Keep last: the latest row of each key.
    latest: HashMap<Box<[u8]>, Latest>,
    next_seq: u64,
    watermark: Option<EventTime>,
    ttl: Option<StateTtl>,
}

impl DeduplicateOperator {
    pub fn try_new(
        info: OperatorInfo,
        input_schema: SchemaRef,
        spec: DeduplicateSpec,
    ) -> EngineResult<Self> {
        let rows = super::row_converter(&input_schema)?;
        // A key without PARTITION BY: one constant column.
        let key_rows = super::over_aggregate::partition_key_converter(&spec.keys, &input_schema)?;
        let order_rows = RowConverter::new(vec![SortField::new_with_options(
            spec.order.expr.data_type(&input_schema)?,
            spec.order.options,
        )])?;
        Ok(Self {
            info,
            input_schema,
            spec,
            rows,
            key_rows,
            order_rows,
            candidates: HashMap::new(),
            pending: BTreeMap::new(),
            emitted: HashMap::new(),
            latest: HashMap::new(),
            next_seq: 0,
            watermark: None,
            ttl: None,
        })
    }

    /// Markers and latest rows expire `ttl` after they were written.
    pub fn with_ttl(mut self, ttl: Option<StateTtl>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Processing time now, with a TTL (0 without).
    fn now(&self) -> i64 {
        self.ttl.as_ref().map_or(0, StateTtl::now)
    }

    /// Drops the markers and latest rows the TTL has passed, when a scan is due.
    fn expire(&mut self) {
        let Some(cutoff) = self.ttl.as_mut().and_then(StateTtl::due) else {
            return;
        };
        self.emitted.retain(|_, m| m.written_at > cutoff);
        self.latest.retain(|_, l| l.written_at > cutoff);
        if self.emitted.len() * 4 < self.emitted.capacity() {
            self.emitted.shrink_to_fit();
        }
        if self.latest.len() * 4 < self.latest.capacity() {
            self.latest.shrink_to_fit();
        }
    }

    /// Keys, ORDER BY keys and event times (nanoseconds; NULL sorts as the end of time) of
    /// `batch`'s rows.
    fn evaluate(&self, batch: &RecordBatch) -> EngineResult<(Rows, Rows, Vec<EventTime>)> {
        let n = batch.num_rows();
        let keys: Vec<ArrayRef> = if self.spec.keys.is_empty() {
            vec![Arc::new(datafusion::arrow::array::BooleanArray::from(
                vec![true; n],
            ))]
        } else {
            self.spec
                .keys
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                .collect::<EngineResult<_>>()?
        };
        let order = self.spec.order.expr.evaluate(batch)?.into_array(n)?;
        let times = cast(&order, &DataType::Int64)?;
        let times = times
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| EngineError::Internal("a time attribute that is not a time".into()))?;
        let times = (0..n)
            .map(|i| {
                if times.is_valid(i) {
                    times.value(i).saturating_mul(self.spec.time_unit_ns)
                } else {
                    EventTime::MAX
                }
            })
            .collect();
        Ok((
            self.key_rows.convert_columns(&keys)?,
            self.order_rows.convert_columns(&[order])?,
            times,
        ))
    }

    /// Keep first: takes `batch`'s rows as candidates, dropping those of emitted keys (and
    /// adding the late ones, with their event time, to `late`).
    fn hold_first(
        &mut self,
        batch: &RecordBatch,
        late: &mut Vec<(usize, Option<EventTime>)>,
    ) -> EngineResult<()> {
        let (keys, orders, times) = self.evaluate(batch)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        for (i, time) in times.into_iter().enumerate() {
            let key = keys.row(i);
            let order = orders.row(i);
            if let Some(first) = self.emitted.get(key.data()) {
                if order.data() < first.order.as_ref() {
                    late.push((i, (time != EventTime::MAX).then_some(time)));
                }
                continue;
            }
            if let Some(held) = self.candidates.get(key.data())
                && held.order.as_ref() <= order.data()
            {
                continue;
            }
            let due = (time, self.next_seq);
            self.next_seq += 1;
            let candidate = Candidate {
                order: order.data().into(),
                due,
                row: rows.row(i).owned(),
            };
            if let Some(old) = self.candidates.insert(key.data().into(), candidate) {
                self.pending.remove(&old.due);
            }
            self.pending.insert(due, key.data().into());
        }
        Ok(())
    }

    /// Keep first: emits the candidates the watermark has reached, in time order.
    fn emit_first(&mut self, out: &mut OperatorContext) -> EngineResult<()> {
        let Some(watermark) = self.watermark else {
            return Ok(());
        };
        let mut rows = Vec::new();
        let now = self.now();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let key = entry.remove();
            let candidate = self
                .candidates
                .remove(&key)
                .ok_or_else(|| EngineError::Internal("a pending key without its row".into()))?;
            self.emitted.insert(
                key,
                Marker {
                    order: candidate.order,
                    written_at: now,
                },
            );
            rows.push(candidate.row);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut columns = self.rows.convert_rows(rows.iter().map(|r| r.row()))?;
        columns.push(Arc::new(UInt64Array::from(vec![1u64; rows.len()])));
        out.batch(super::conform_batch(&self.info.schema, columns)?);
        Ok(())
    }

    /// Keep last: holds `batch`'s rows; returns the changes (op and row) of the keys whose
    /// row changed, in the order of each key's first row in the batch.
    fn hold_last(&mut self, batch: &RecordBatch) -> EngineResult<Vec<(&'static str, OwnedRow)>> {
        let (keys, orders, _) = self.evaluate(batch)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        // Per key the batch changed: the row it had before the batch.
        let mut touched: Vec<(Box<[u8]>, Option<OwnedRow>)> = Vec::new();
        let mut seen: HashSet<Box<[u8]>> = HashSet::new();
        let written_at = self.now();
        for i in 0..batch.num_rows() {
            let key = keys.row(i);
            let order = orders.row(i);
            let held = self.latest.get(key.data());
            if held.is_some_and(|h| h.order.as_ref() < order.data()) {
                continue;
            }
            if !seen.contains(key.data()) {
                seen.insert(key.data().into());
                touched.push((key.data().into(), held.map(|h| h.row.clone())));
            }
            self.latest.insert(
                key.data().into(),
                Latest {
                    order: order.data().into(),
                    row: rows.row(i).owned(),
                    written_at,
                },
            );
        }
        let mut changes = Vec::new();
        for (key, before) in touched {
            let Some(after) = self.latest.get(&key) else {
                continue;
            };
            if before.as_ref().is_some_and(|b| b.row() == after.row.row()) {
                continue;
            }
            if let Some(before) = before {
                changes.push(("-", before));
            }
            changes.push(("+", after.row.clone()));
        }
        Ok(changes)
    }

    /// Key columns (`k0`, ...) and ORDER BY values (`time`) of row-format keys.
    fn marker_batch(&self) -> EngineResult<Option<RecordBatch>> {
        if self.emitted.is_empty() {
            return Ok(None);
        }
        let order_parser = self.order_rows.parser();
        let key_parser = self.key_rows.parser();
        let mut columns = self
            .key_rows
            .convert_rows(self.emitted.keys().map(|k| key_parser.parse(k)))?;
        columns.extend(
            self.order_rows
                .convert_rows(self.emitted.values().map(|m| order_parser.parse(&m.order)))?,
        );
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = if i + 1 == columns.len() {
                    "time".to_string()
                } else {
                    format!("k{i}")
                };
                Field::new(name, c.data_type().clone(), true)
            })
            .collect();
        Ok(Some(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?))
    }

    fn row_batch<'a>(
        &self,
        rows: impl Iterator<Item = &'a OwnedRow>,
    ) -> EngineResult<Option<RecordBatch>> {
        let rows: Vec<_> = rows.map(|r| r.row()).collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = self.rows.convert_rows(rows)?;
        Ok(Some(RecordBatch::try_new(
            Arc::new(nullable(&self.input_schema)),
            columns,
        )?))
    }

    /// A snapshot batch of the input's rows as an input batch.
    fn as_input(&self, batch: &RecordBatch) -> EngineResult<RecordBatch> {
        let expected: Vec<&DataType> = self
            .input_schema
            .fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        let found: Vec<&DataType> = batch.columns().iter().map(|c| c.data_type()).collect();
        if found != expected {
            return Err(corrupt(format!(
                "deduplication rows of types {found:?}, expected {expected:?}"
            )));
        }
        RecordBatch::try_new(Arc::clone(&self.input_schema), batch.columns().to_vec())
            .map_err(|e| corrupt(format!("deduplication rows that do not fit the input: {e}")))
    }
}

/// `schema` with every field nullable (snapshot tables).
fn nullable(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    )
}

impl Operator for DeduplicateOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.expire();
        match self.spec.keep {
            Keep::First => {
                let mut late = Vec::new();
                self.hold_first(&batch, &mut late)?;
                out.drop_late(&batch, &late)?;
                self.emit_first(out)
            }
            Keep::Last => {
                let changes = self.hold_last(&batch)?;
                if changes.is_empty() {
                    return Ok(());
                }
                let ops: StringArray = changes.iter().map(|(op, _)| Some(*op)).collect();
                let mut columns: Vec<ArrayRef> = vec![Arc::new(ops)];
                columns.extend(
                    self.rows
                        .convert_rows(changes.iter().map(|(_, r)| r.row()))?,
                );
                columns.push(Arc::new(UInt64Array::from(vec![1u64; changes.len()])));
                out.batch(super::conform_batch(&self.info.schema, columns)?);
                Ok(())
            }
        }
    }

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        self.expire();
        if self.spec.keep == Keep::Last {
            out.watermark(watermark);
            return Ok(());
        }
        // After a restore the runtime may repeat the watermark of the checkpoint.
        if self.watermark.is_some_and(|w| watermark <= w) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        self.emit_first(out)?;
        out.watermark(watermark);
        Ok(())
    }

    /// Keep first: `meta` (the watermark), `candidates` (the candidate rows, in the order
    /// they are due) and `emitted` (per emitted key, its key columns `k0...` and the emitted
    /// row's `time`). Keep last: `rows` (the held rows). No batch for an empty table.
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        match self.spec.keep {
            Keep::First => {
                snapshot.add_values(META, &[(WATERMARK, self.watermark)])?;
                let due = self
                    .pending
                    .values()
                    .filter_map(|k| self.candidates.get(k).map(|c| &c.row));
                if let Some(batch) = self.row_batch(due)? {
                    snapshot.add(CANDIDATES, batch)?;
                }
                if let Some(batch) = self.marker_batch()? {
                    snapshot.add(EMITTED, batch)?;
                }
            }
            Keep::Last => {
                if let Some(batch) = self.row_batch(self.latest.values().map(|l| &l.row))? {
                    snapshot.add(ROWS, batch)?;
                }
            }
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        match self.spec.keep {
            Keep::First => {
                let meta = snapshot.values(META)?;
                if meta.keys().any(|k| k != WATERMARK)
                    || (!snapshot.is_empty() && !meta.contains_key(WATERMARK))
                {
                    return Err(corrupt("unexpected deduplication values"));
                }
                self.watermark = meta.get(WATERMARK).copied().flatten();
                for batch in snapshot.table(EMITTED) {
                    let key_columns = batch.num_columns().saturating_sub(1);
                    if batch.num_columns() < 2 {
                        return Err(corrupt("deduplication markers without their time"));
                    }
                    let keys = self
                        .key_rows
                        .convert_columns(&batch.columns()[..key_columns])
                        .map_err(|e| corrupt(format!("deduplication marker keys: {e}")))?;
                    let orders = self
                        .order_rows
                        .convert_columns(&batch.columns()[key_columns..])
                        .map_err(|e| corrupt(format!("deduplication marker times: {e}")))?;
                    let written_at = self.now();
                    for i in 0..batch.num_rows() {
                        let marker = Marker {
                            order: orders.row(i).data().into(),
                            written_at,
                        };
                        if self
                            .emitted
                            .insert(keys.row(i).data().into(), marker)
                            .is_some()
                        {
                            return Err(corrupt("a deduplication key emitted twice"));
                        }
                    }
                }
                for batch in snapshot.table(CANDIDATES) {
                    let input = self.as_input(&batch)?;
                    let before = self.candidates.len();
                    let mut late = Vec::new();
                    self.hold_first(&input, &mut late)?;
                    if !late.is_empty() || self.candidates.len() != before + batch.num_rows() {
                        return Err(corrupt("a deduplication candidate twice"));
                    }
                }
            }
            Keep::Last => {
                for batch in snapshot.table(ROWS) {
                    let input = self.as_input(&batch)?;
                    let before = self.latest.len();
                    self.hold_last(&input)?;
                    if self.latest.len() != before + batch.num_rows() {
                        return Err(corrupt("a deduplication key held twice"));
                    }
                }
            }
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        match self.spec.keep {
            Keep::First => vec![
                StateUsage {
                    table: CANDIDATES,
                    rows: self.candidates.len(),
                    bytes: self
                        .candidates
                        .iter()
                        .map(|(k, c)| k.len() + c.order.len() + c.row.row().as_ref().len())
                        .sum(),
                },
                StateUsage {
                    table: EMITTED,
                    rows: self.emitted.len(),
                    bytes: self
                        .emitted
                        .iter()
                        .map(|(k, m)| k.len() + m.order.len())
                        .sum(),
                },
            ],
            Keep::Last => vec![StateUsage {
                table: ROWS,
                rows: self.latest.len(),
                bytes: self
                    .latest
                    .iter()
                    .map(|(k, l)| k.len() + l.order.len() + l.row.row().as_ref().len())
                    .sum(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::operators::checkpoint_harness::{
        Lcg, Step, check_every_cut, check_every_cut_forwarding, restore_declared, rows,
    };
    use crate::operators::window::MILLISECOND;
    use crate::runtime::message::Message;

    /// (k, ts, v).
    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    /// Rows of (k, ts in seconds, v).
    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1 * 1000),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn operator(keep: Keep) -> DeduplicateOperator {
        let mut fields = Vec::new();
        if keep == Keep::Last {
            fields.push(Field::new("__op", DataType::Utf8, false));
        }
        fields.extend(input_schema().fields().iter().map(|f| f.as_ref().clone()));
        fields.push(Field::new("rn", DataType::UInt64, false));
        DeduplicateOperator::try_new(
            OperatorInfo {
                name: "Deduplicate".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            input_schema(),
            DeduplicateSpec {
                keys: vec![Arc::new(Column::new("k", 0))],
                order: PhysicalSortExpr::new(
                    Arc::new(Column::new("ts", 1)),
                    SortOptions {
                        descending: keep == Keep::Last,
                        nulls_first: keep == Keep::Last,
                    },
                ),
                time_unit_ns: MILLISECOND,
                keep,
            },
        )
        .unwrap()
    }

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn keep_first_emits_each_keys_earliest_row_once_the_watermark_passes_it() {
        let mut op = operator(Keep::First);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 5, 10), (1, 3, 11), (2, 4, 20)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
        // The watermark reaches 3.5 s: key 1's earliest row (3 s) is final.
        op.on_watermark(3 * SECOND + SECOND / 2, &mut out).unwrap();
        let messages: Vec<Message> = out.drain().collect();
        assert!(matches!(messages.last(), Some(Message::Watermark(_))));
        let mut out = OperatorContext::default();
        for m in messages {
            if let Message::Data(b) = m {
                out.batch(b);
            }
        }
        assert_eq!(rows(&mut out), ["1 1970-01-01T00:00:03 11 1"]);
        // Key 1 again: before its emitted row it is late, after it a duplicate. Key 2's new
        // earliest row is already behind the watermark: it is emitted after its batch.
        op.on_batch(0, batch(&[(1, 2, 12), (1, 6, 13), (2, 1, 21)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["2 1970-01-01T00:00:01 21 1"]);
        assert_eq!(out.late_rows(), 1);
        let usage = op.state_usage();
        assert_eq!((usage[0].rows, usage[1].rows), (0, 2));
        // The end emits what is left.
        op.on_batch(0, batch(&[(3, 9, 30)]), &mut out).unwrap();
        op.on_watermark(crate::runtime::message::WATERMARK_END, &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["3 1970-01-01T00:00:09 30 1"]);
    }

    #[test]
    fn keep_last_retracts_each_keys_previous_row() {
        let mut op = operator(Keep::Last);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 5, 10), (1, 3, 11), (2, 4, 20)]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&mut out),
            [
                "+ 1 1970-01-01T00:00:05 10 1",
                "+ 2 1970-01-01T00:00:04 20 1"
            ]
        );
        // An older row of key 1 changes nothing (and is not late); a newer one and a tie
        // replace it (the last to arrive wins a tie).
        op.on_batch(0, batch(&[(1, 4, 12), (2, 4, 21), (1, 7, 13)]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&mut out),
            [
                "- 2 1970-01-01T00:00:04 20 1",
                "+ 2 1970-01-01T00:00:04 21 1",
                "- 1 1970-01-01T00:00:05 10 1",
                "+ 1 1970-01-01T00:00:07 13 1"
            ]
        );
        assert_eq!(out.late_rows(), 0);
        assert_eq!(op.state_usage()[0].rows, 2);
    }

    fn sequence(seed: u64) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut steps = Vec::new();
        let mut watermark = 0;
        for _ in 0..30 {
            if rng.next(3) == 0 {
                watermark += 1 + rng.next(3) as i64;
                steps.push(Step::Watermark(watermark * SECOND));
                continue;
            }
            let rows: Vec<(i64, i64, i64)> = (0..1 + rng.next(4))
                .map(|_| {
                    (
                        rng.next(4) as i64,
                        (watermark + rng.next(8) as i64 - 4).max(0),
                        rng.next(100) as i64,
                    )
                })
                .collect();
            steps.push(Step::Batch(batch(&rows)));
        }
        steps.push(Step::End);
        steps
    }

    #[test]
    fn restores_at_every_cut() {
        let mut late_rows = 0;
        for seed in [1, 2, 3] {
            let make = || Box::new(operator(Keep::First)) as Box<dyn Operator>;
            let tables = state_tables(&["k".to_string()], Keep::First, false);
            let (output, late) = check_every_cut(&make, &tables, &sequence(seed));
            assert!(output.len() > 3, "the sequence emits rows");
            late_rows += late;
            let make = || Box::new(operator(Keep::Last)) as Box<dyn Operator>;
            let tables = state_tables(&["k".to_string()], Keep::Last, false);
            let (output, _) = check_every_cut_forwarding(&make, &tables, &sequence(seed));
            assert!(output.join("\n").contains("| - "), "the sequence retracts");
        }
        assert!(late_rows > 0, "the sequences have late rows");
    }

    #[test]
    fn a_snapshot_of_another_shape_is_refused() {
        let mut op = operator(Keep::First);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 1, 1), (2, 5, 2)]), &mut out)
            .unwrap();
        op.on_watermark(2 * SECOND, &mut out).unwrap();
        let good = op.snapshot(1).unwrap();
        assert_eq!(good.table(EMITTED).len(), 1);
        assert_eq!(good.table(CANDIDATES).len(), 1);
        // Candidates of other columns.
        let mut wrong = good.clone().without(CANDIDATES);
        wrong
            .add(
                CANDIDATES,
                good.table(CANDIDATES)[0].project(&[0, 1]).unwrap(),
            )
            .unwrap();
        assert!(operator(Keep::First).restore(wrong).is_err());
        // Without its watermark.
        assert!(
            operator(Keep::First)
                .restore(good.clone().without(META))
                .is_err()
        );
        // Keep-last's table in a keep-first operator.
        let mut foreign = good.clone();
        foreign.add(ROWS, batch(&[(1, 1, 1)])).unwrap();
        let tables = state_tables(&["k".to_string()], Keep::First, false);
        assert!(restore_declared(&mut operator(Keep::First), &tables, foreign).is_err());
        operator(Keep::First).restore(good).unwrap();
    }

    /// `operator(keep)` whose markers and rows expire an hour after they were written, and
    /// the clock it reads.
    fn with_ttl(keep: Keep) -> (Arc<std::sync::atomic::AtomicI64>, DeduplicateOperator) {
        let now = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let clock = Arc::clone(&now);
        let op = operator(keep).with_ttl(Some(StateTtl::new(
            std::time::Duration::from_secs(3600),
            Arc::new(move || clock.load(std::sync::atomic::Ordering::Relaxed)),
        )));
        (now, op)
    }

    #[test]
    fn with_a_ttl_an_expired_key_is_kept_again() {
        use std::sync::atomic::Ordering;
        // Keep last: a million keys' rows go an hour after they were written.
        let (now, mut op) = with_ttl(Keep::Last);
        let mut out = OperatorContext::default();
        let rows_in: Vec<(i64, i64, i64)> = (0..1_000_000).map(|k| (k, 1, k)).collect();
        op.on_batch(0, batch(&rows_in), &mut out).unwrap();
        out.drain().count();
        assert_eq!(op.state_usage()[0].rows, 1_000_000);
        now.store(1_800_000, Ordering::Relaxed);
        op.on_batch(0, batch(&[(7, 2, 70)]), &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            [
                "- 7 1970-01-01T00:00:01 7 1",
                "+ 7 1970-01-01T00:00:02 70 1"
            ]
        );
        now.store(3_600_000, Ordering::Relaxed);
        op.on_watermark(SECOND, &mut out).unwrap();
        assert_eq!(op.state_usage()[0].rows, 1, "only key 7 is held");
        // An expired key's row comes again: `+` alone, as in Flink.
        op.on_batch(0, batch(&[(5, 3, 50)]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["+ 5 1970-01-01T00:00:03 50 1"]);

        // Keep first: once the marker expired, a later row of the key is emitted again.
        let (now, mut op) = with_ttl(Keep::First);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 1, 10)]), &mut out).unwrap();
        op.on_watermark(2 * SECOND, &mut out).unwrap();
        out.drain().count();
        op.on_batch(0, batch(&[(1, 3, 11)]), &mut out).unwrap();
        op.on_watermark(4 * SECOND, &mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new(), "a duplicate");
        now.store(3_600_000, Ordering::Relaxed);
        op.on_batch(0, batch(&[(1, 5, 12)]), &mut out).unwrap();
        op.on_watermark(6 * SECOND, &mut out).unwrap();
        let emitted: Vec<String> = out
            .drain()
            .filter_map(|m| match m {
                Message::Data(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| {
                let mut one = OperatorContext::default();
                one.batch(b);
                rows(&mut one)
            })
            .collect();
        assert_eq!(emitted, ["1 1970-01-01T00:00:05 12 1"]);
    }
}
