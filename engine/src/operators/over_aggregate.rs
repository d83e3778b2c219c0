//! `OverAggregateOperator`: `agg(...) OVER (PARTITION BY k ORDER BY <time attribute> ROWS |
//! RANGE BETWEEN ... PRECEDING AND CURRENT ROW)` and `LAG(x [, n [, default]])` over an
//! append-only stream: Flink's OVER aggregation.
//!
//! Emission is append-only, on watermark. Input rows wait until the watermark reaches their
//! time (a row at or behind the watermark on arrival is late: dropped and counted); then the
//! rows it passes are processed in time order (ties in arrival order), each emitted as the
//! input row followed by one column per OVER function. A ROWS frame holds the current row
//! and the `n` rows before it in its partition; a RANGE frame the rows whose time is within
//! the interval before the current row's, inclusive, peers (equal time) included, so peers
//! get the same values. Aggregates are DataFusion accumulators: sliding ones for bounded
//! frames (`update_batch` as rows enter, `retract_batch` as they leave, in time order, which
//! is the order sliding min/max support), plain ones for `UNBOUNDED PRECEDING`. `LAG` reads
//! the row `n` rows earlier in the partition. Watermark: forwarded after emitting.
//!
//! State: `pending`, the input rows not emitted yet (freed by the watermark); `held`, per
//! partition the rows of the current frame (at most `n + 1` for ROWS, the interval for
//! RANGE, none for unbounded frames) and the last rows `LAG` reads; `accumulators`, for
//! unbounded frames, each partition's accumulator state. Partitions are never freed.
//!
//! Snapshot: `meta` (the watermark), `pending` (the rows in the order they are due), `held`
//! (the rows, each partition's in order, and whether each is in the frame: on restore those
//! are added to fresh sliding accumulators again) and `accumulators` (per partition its key
//! columns `k0...` and the accumulator state columns, merged into fresh accumulators).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::{Epoch, EventTime};
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// Snapshot tables and values.
const META: &str = "meta";
const PENDING: &str = "pending";
const HELD: &str = "held";
const ACCUMULATORS: &str = "accumulators";
const WATERMARK: &str = "watermark";

/// The frame of an OVER aggregation; `None` bounds are `UNBOUNDED PRECEDING`. Both end at the
/// current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(Option<u64>),
    /// `RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW`, in nanoseconds.
    Range(Option<i64>),
}

impl OverFrame {
    /// True when rows leave the frame (sliding accumulators, rows held).
    pub fn is_bounded(&self) -> bool {
        matches!(self, OverFrame::Rows(Some(_)) | OverFrame::Range(Some(_)))
    }
}

/// The state tables of an OVER aggregation partitioned by `keys` (as the plan names them).
pub fn state_tables(keys: &[String], frame: OverFrame) -> Vec<StateTable> {
    let mut tables = vec![
        StateTable::fixed(META, "the watermark"),
        StateTable::new(
            PENDING,
            keys.to_vec(),
            "the input rows until the watermark passes them",
            Freed::Watermark,
        ),
        StateTable::new(
            HELD,
            keys.to_vec(),
            match frame {
                OverFrame::Rows(Some(_)) => "the last n + 1 rows and the rows LAG reads",
                OverFrame::Range(Some(_)) => "the rows within the interval and the rows LAG reads",
                _ => "the rows LAG reads",
            },
            Freed::Never("per partition, bounded by the frame"),
        ),
    ];
    if !frame.is_bounded() {
        tables.push(StateTable::new(
            ACCUMULATORS,
            keys.to_vec(),
            "the accumulators of each partition",
            Freed::Never(""),
        ));
    }
    tables
}

/// `LAG(value, offset, default)`.
pub struct Lag {
    pub value: Arc<dyn PhysicalExpr>,
    pub offset: usize,
    /// Of the value's type.
    pub default: ScalarValue,
}

/// One OVER column.
pub enum OverFunction {
    Aggregate(Arc<AggregateFunctionExpr>),
    Lag(Lag),
}

/// What an OVER aggregation partitions by, orders by and computes.
pub struct OverAggregateSpec {
    /// PARTITION BY expressions (none: one partition).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The ORDER BY: the time attribute, ascending.
    pub time: Arc<dyn PhysicalExpr>,
    /// Nanoseconds per unit of the time attribute.
    pub time_unit_ns: i64,
    pub frame: OverFrame,
    /// The OVER columns, in output order.
    pub functions: Vec<OverFunction>,
}

/// An emitted row a partition still needs (in the frame, or read by LAG).
struct Held {
    time: EventTime,
    row: OwnedRow,
    /// Per aggregate, its arguments at this row (values, not slices, which would keep the
    /// batch they come from alive).
    args: Vec<Vec<ScalarValue>>,
    /// Per LAG, its value at this row.
    lags: Vec<ScalarValue>,
}

struct Partition {
    held: VecDeque<Held>,
    /// The number of the first held row (rows are numbered per partition from 0).
    first: u64,
    /// The number of the next row.
    next: u64,
    /// The number of the first row in the accumulators (bounded frames); `next` otherwise.
    frame_start: u64,
    /// One per aggregate.
    accumulators: Vec<Box<dyn Accumulator>>,
}

pub struct OverAggregateOperator {
    info: OperatorInfo,
    input_schema: SchemaRef,
    spec: OverAggregateSpec,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    lags: Vec<Lag>,
    rows: RowConverter,
    key_rows: RowConverter,
    /// The rows not emitted yet, by (time, arrival).
    pending: BTreeMap<(EventTime, u64), OwnedRow>,
    partitions: HashMap<Box<[u8]>, Partition>,
    next_seq: u64,
    watermark: Option<EventTime>,
    /// The rows LAG needs before the current one.
    lag_rows: u64,
    /// Whether each output column is an aggregate or a LAG, in output order.
    order: Vec<Kind>,
}

impl OverAggregateOperator {
    pub fn try_new(
        info: OperatorInfo,
        input_schema: SchemaRef,
        mut spec: OverAggregateSpec,
    ) -> EngineResult<Self> {
        let rows = super::row_converter(&input_schema)?;

        let mut aggregates = Vec::new();
        let mut lags = Vec::new();
        let mut order = Vec::new();
        for f in std::mem::take(&mut spec.functions) {
            match f {
                OverFunction::Aggregate(a) => {
                    aggregates.push(a);
                    order.push(Kind::Aggregate);
                }
                OverFunction::Lag(l) => {
                    lags.push(l);
                    order.push(Kind::Lag);
                }
            }
        }
        let lag_rows = lags.iter().map(|l| l.offset as u64).max().unwrap_or(0);
        let key_rows = partition_key_converter(&spec.keys, &input_schema)?;
        let op = Self {
            info,
            input_schema,
            spec,
            aggregates,
            lags,
            rows,
            key_rows,
            pending: BTreeMap::new(),
            partitions: HashMap::new(),
            next_seq: 0,
            watermark: None,
            lag_rows,
            order,
        };
        if op.spec.frame.is_bounded() {
            for a in op.new_accumulators()? {
                if !a.supports_retract_batch() {
                    return Err(EngineError::Internal(
                        "an OVER aggregate over a bounded frame without retraction".to_string(),
                    ));
                }
            }
        }
        Ok(op)
    }

    fn new_accumulators(&self) -> EngineResult<Vec<Box<dyn Accumulator>>> {
        Ok(self
            .aggregates
            .iter()
            .map(|a| {
                if self.spec.frame.is_bounded() {
                    a.create_sliding_accumulator()
                } else {
                    a.create_accumulator()
                }
            })
            .collect::<Result<_, _>>()?)
    }

    fn new_partition(&self) -> EngineResult<Partition> {
        Ok(Partition {
            held: VecDeque::new(),
            first: 0,
            next: 0,
            frame_start: 0,
            accumulators: self.new_accumulators()?,
        })
    }

    /// Partition keys and event times (nanoseconds; NULL is the end of time) of `batch`.
    fn keys_and_times(&self, batch: &RecordBatch) -> EngineResult<(Rows, Vec<EventTime>)> {
        partition_keys_and_times(
            &self.key_rows,
            &self.spec.keys,
            &self.spec.time,
            self.spec.time_unit_ns,
            batch,
        )
    }

    /// The held form of `batch`'s rows (with their keys), not yet added to any partition.
    fn to_held(&self, batch: &RecordBatch) -> EngineResult<(Rows, Vec<Held>)> {
        let n = batch.num_rows();
        let (keys, times) = self.keys_and_times(batch)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let args = self
            .aggregates
            .iter()
            .map(|a| {
                a.expressions()
                    .iter()
                    .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                    .collect::<EngineResult<Vec<_>>>()
            })
            .collect::<EngineResult<Vec<_>>>()?;
        let lags = self
            .lags
            .iter()
            .map(|l| Ok(l.value.evaluate(batch)?.into_array(n)?))
            .collect::<EngineResult<Vec<_>>>()?;
        let held = (0..n)
            .map(|i| {
                Ok(Held {
                    time: times[i],
                    row: rows.row(i).owned(),
                    args: args
                        .iter()
                        .map(|a| {
                            a.iter()
                                .map(|c| ScalarValue::try_from_array(c, i))
                                .collect::<Result<_, _>>()
                        })
                        .collect::<Result<_, _>>()?,
                    lags: lags
                        .iter()
                        .map(|c| ScalarValue::try_from_array(c, i))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<EngineResult<_>>()?;
        Ok((keys, held))
    }

    /// Emits the pending rows the watermark has reached, in time order.
    fn emit(&mut self, out: &mut OperatorContext) -> EngineResult<()> {
        let Some(watermark) = self.watermark else {
            return Ok(());
        };
        let mut due = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            due.push(entry.remove());
        }
        if due.is_empty() {
            return Ok(());
        }
        let columns = self.rows.convert_rows(due.iter().map(|r| r.row()))?;
        let batch = RecordBatch::try_new(Arc::clone(&self.input_schema), columns)?;
        let (keys, held) = self.to_held(&batch)?;
        let n = held.len();
        let mut aggregate_values = vec![Vec::with_capacity(n); self.aggregates.len()];
        let mut lag_values = vec![Vec::with_capacity(n); self.lags.len()];
        let mut held = held.into_iter().enumerate().peekable();
        while let Some((first, row)) = held.next() {
            // Peers: the rows of this time, all added before a RANGE frame is evaluated.
            let time = row.time;
            let mut group = vec![(first, row)];
            while let Some((i, r)) = held.next_if(|(_, r)| r.time == time) {
                group.push((i, r));
            }
            let mut added = Vec::with_capacity(group.len());
            for (i, row) in group {
                let key = keys.row(i).data();
                if !self.partitions.contains_key(key) {
                    let partition = self.new_partition()?;
                    self.partitions.insert(key.into(), partition);
                }
                let partition = self
                    .partitions
                    .get_mut(key)
                    .ok_or_else(|| EngineError::Internal("a partition just made".into()))?;
                let number = partition.next;
                for (l, lag) in self.lags.iter().enumerate() {
                    let value = if lag.offset == 0 {
                        row.lags[l].clone()
                    } else {
                        match number.checked_sub(lag.offset as u64) {
                            Some(at) if at >= partition.first => partition
                                .held
                                .get((at - partition.first) as usize)
                                .map_or_else(|| lag.default.clone(), |h| h.lags[l].clone()),
                            _ => lag.default.clone(),
                        }
                    };
                    lag_values[l].push(value);
                }
                add(partition, row, self.spec.frame.is_bounded())?;
                if let OverFrame::Rows(_) = self.spec.frame {
                    retract(partition, self.spec.frame, time)?;
                    for (a, acc) in partition.accumulators.iter_mut().enumerate() {
                        aggregate_values[a].push((i, acc.evaluate()?));
                    }
                }
                added.push(i);
            }
            for i in added {
                let partition = self
                    .partitions
                    .get_mut(keys.row(i).data())
                    .ok_or_else(|| EngineError::Internal("a partition just used".into()))?;
                if let OverFrame::Range(_) = self.spec.frame {
                    retract(partition, self.spec.frame, time)?;
                    for (a, acc) in partition.accumulators.iter_mut().enumerate() {
                        aggregate_values[a].push((i, acc.evaluate()?));
                    }
                }
                trim(partition, self.lag_rows);
            }
        }
        let mut columns = batch.columns().to_vec();
        let mut aggregate_values = aggregate_values.into_iter();
        let mut lag_values = lag_values.into_iter();
        for f in &self.order {
            let values = match f {
                Kind::Aggregate => {
                    let mut values = aggregate_values
                        .next()
                        .ok_or_else(|| EngineError::Internal("an OVER column".into()))?;
                    values.sort_by_key(|(i, _)| *i);
                    values.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
                }
                Kind::Lag => lag_values
                    .next()
                    .ok_or_else(|| EngineError::Internal("an OVER column".into()))?,
            };
            columns.push(ScalarValue::iter_to_array(values)?);
        }
        out.batch(super::conform_batch(&self.info.schema, columns)?);
        Ok(())
    }

    /// A snapshot batch of the input's rows as an input batch.
    fn as_input(&self, columns: &[ArrayRef]) -> EngineResult<RecordBatch> {
        let expected: Vec<&DataType> = self
            .input_schema
            .fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        let found: Vec<&DataType> = columns.iter().map(|c| c.data_type()).collect();
        if found != expected {
            return Err(corrupt(format!(
                "OVER aggregation rows of types {found:?}, expected {expected:?}"
            )));
        }
        RecordBatch::try_new(Arc::clone(&self.input_schema), columns.to_vec()).map_err(|e| {
            corrupt(format!(
                "OVER aggregation rows that do not fit the input: {e}"
            ))
        })
    }

    fn row_columns<'a>(
        &self,
        rows: impl Iterator<Item = &'a OwnedRow>,
    ) -> EngineResult<Option<(Vec<Field>, Vec<ArrayRef>)>> {
        let rows: Vec<_> = rows.map(|r| r.row()).collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = self.rows.convert_rows(rows)?;
        let fields = self
            .input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Ok(Some((fields, columns)))
    }

    /// Per partition with accumulators only (unbounded frames): key columns `k0...` and each
    /// accumulator's state columns `s0...`.
    fn accumulator_batch(&mut self) -> EngineResult<Option<RecordBatch>> {
        if self.spec.frame.is_bounded() || self.aggregates.is_empty() || self.partitions.is_empty()
        {
            return Ok(None);
        }
        let mut keys = Vec::new();
        let mut states: Vec<Vec<ScalarValue>> = Vec::new();
        for (key, partition) in self.partitions.iter_mut() {
            keys.push(key.clone());
            let mut column = 0;
            for (a, acc) in partition.accumulators.iter_mut().enumerate() {
                let state = acc.state()?;
                // `state` may consume what it reports: continue from a merged copy.
                let mut copy = self.aggregates[a].create_accumulator()?;
                let arrays = state
                    .iter()
                    .map(|s| s.to_array())
                    .collect::<Result<Vec<_>, _>>()?;
                copy.merge_batch(&arrays)?;
                *acc = copy;
                for s in state {
                    if states.len() <= column {
                        states.push(Vec::new());
                    }
                    states[column].push(s);
                    column += 1;
                }
            }
        }
        let parser = self.key_rows.parser();
        let mut columns = self
            .key_rows
            .convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        let key_columns = columns.len();
        for state in states {
            columns.push(ScalarValue::iter_to_array(state)?);
        }
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = if i < key_columns {
                    format!("k{i}")
                } else {
                    format!("s{}", i - key_columns)
                };
                Field::new(name, c.data_type().clone(), true)
            })
            .collect();
        Ok(Some(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?))
    }
}

/// Whether an output column is an aggregate or a LAG.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Aggregate,
    Lag,
}

/// Adds `row` to `partition`: to its accumulators when the frame is bounded or unbounded
/// (the frame always ends at the current row), and to its held rows.
/// The converter of PARTITION BY `keys` over `schema` (without keys: one constant column).
pub(crate) fn partition_key_converter(
    keys: &[Arc<dyn PhysicalExpr>],
    schema: &Schema,
) -> EngineResult<RowConverter> {
    let fields = if keys.is_empty() {
        vec![SortField::new(DataType::Boolean)]
    } else {
        keys.iter()
            .map(|e| Ok(SortField::new(e.data_type(schema)?)))
            .collect::<EngineResult<_>>()?
    };
    Ok(RowConverter::new(fields)?)
}

/// The partition keys (with `converter`, of `keys`) and event times (`time` in nanoseconds;
/// NULL is the end of time) of `batch`'s rows.
pub(crate) fn partition_keys_and_times(
    converter: &RowConverter,
    keys: &[Arc<dyn PhysicalExpr>],
    time: &Arc<dyn PhysicalExpr>,
    time_unit_ns: i64,
    batch: &RecordBatch,
) -> EngineResult<(Rows, Vec<EventTime>)> {
    let n = batch.num_rows();
    let keys: Vec<ArrayRef> = if keys.is_empty() {
        vec![Arc::new(BooleanArray::from(vec![true; n]))]
    } else {
        keys.iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
            .collect::<EngineResult<_>>()?
    };
    let time = cast(&time.evaluate(batch)?.into_array(n)?, &DataType::Int64)?;
    let time = time
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| EngineError::Internal("a time attribute that is not a time".into()))?;
    let times = (0..n)
        .map(|i| {
            if time.is_valid(i) {
                time.value(i).saturating_mul(time_unit_ns)
            } else {
                EventTime::MAX
            }
        })
        .collect();
    Ok((converter.convert_columns(&keys)?, times))
}

fn add(partition: &mut Partition, row: Held, bounded: bool) -> EngineResult<()> {
    for (acc, args) in partition.accumulators.iter_mut().zip(&row.args) {
        acc.update_batch(&arrays(args)?)?;
    }
    partition.held.push_back(row);
    partition.next += 1;
    if !bounded {
        partition.frame_start = partition.next;
    }
    Ok(())
}

/// Retracts the rows that left the frame of the current row (the last added, at `time`).
fn retract(partition: &mut Partition, frame: OverFrame, time: EventTime) -> EngineResult<()> {
    loop {
        if partition.frame_start >= partition.next {
            return Ok(());
        }
        let oldest = partition
            .held
            .get((partition.frame_start - partition.first) as usize)
            .ok_or_else(|| EngineError::Internal("a frame row not held".into()))?;
        let leaves = match frame {
            OverFrame::Rows(Some(n)) => {
                partition.next - partition.frame_start > n.saturating_add(1)
            }
            OverFrame::Range(Some(nanos)) => oldest.time.saturating_add(nanos) < time,
            _ => false,
        };
        if !leaves {
            return Ok(());
        }
        for (acc, args) in partition.accumulators.iter_mut().zip(&oldest.args) {
            acc.retract_batch(&arrays(args)?)?;
        }
        partition.frame_start += 1;
    }
}

/// One-row arrays of `values`.
fn arrays(values: &[ScalarValue]) -> EngineResult<Vec<ArrayRef>> {
    Ok(values
        .iter()
        .map(|v| v.to_array())
        .collect::<Result<_, _>>()?)
}

/// Drops the held rows neither the frame nor LAG (`lag_rows` back) needs.
fn trim(partition: &mut Partition, lag_rows: u64) {
    let keep_from = partition
        .frame_start
        .min(partition.next.saturating_sub(lag_rows));
    while partition.first < keep_from && partition.held.pop_front().is_some() {
        partition.first += 1;
    }
}

impl Operator for OverAggregateOperator {
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
        let (_, times) = self.keys_and_times(&batch)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let mut late = Vec::new();
        for (i, time) in times.into_iter().enumerate() {
            if self.watermark.is_some_and(|w| time <= w) {
                late.push((i, Some(time)));
                continue;
            }
            self.pending
                .insert((time, self.next_seq), rows.row(i).owned());
            self.next_seq += 1;
        }
        out.drop_late(&batch, &late)?;
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
        self.emit(out)?;
        out.watermark(watermark);
        Ok(())
    }

    /// `meta` (the watermark), `pending` (the rows in the order they are due), `held` (the
    /// held rows of each partition in order, then a `framed` column) and, for unbounded
    /// frames, `accumulators`. No batch for an empty table.
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(META, &[(WATERMARK, self.watermark)])?;
        if let Some((fields, columns)) = self.row_columns(self.pending.values())? {
            snapshot.add(
                PENDING,
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?,
            )?;
        }
        let mut framed = Vec::new();
        let mut rows = Vec::new();
        for partition in self.partitions.values() {
            for (i, held) in partition.held.iter().enumerate() {
                framed.push(partition.first + i as u64 >= partition.frame_start);
                rows.push(&held.row);
            }
        }
        if let Some((mut fields, mut columns)) = self.row_columns(rows.into_iter())? {
            fields.push(Field::new("framed", DataType::Boolean, true));
            columns.push(Arc::new(BooleanArray::from(framed)));
            snapshot.add(
                HELD,
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?,
            )?;
        }
        if let Some(batch) = self.accumulator_batch()? {
            snapshot.add(ACCUMULATORS, batch)?;
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        let meta = snapshot.values(META)?;
        if meta.keys().any(|k| k != WATERMARK)
            || (!snapshot.is_empty() && !meta.contains_key(WATERMARK))
        {
            return Err(corrupt("unexpected OVER aggregation values"));
        }
        self.watermark = meta.get(WATERMARK).copied().flatten();
        let state_columns: usize = self
            .new_accumulators()?
            .iter_mut()
            .map(|a| a.state().map(|s| s.len()))
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .sum();
        for batch in snapshot.table(ACCUMULATORS) {
            let key_columns = batch.num_columns().saturating_sub(state_columns);
            if self.spec.frame.is_bounded() || key_columns == 0 {
                return Err(corrupt("OVER aggregation accumulators of another shape"));
            }
            let keys = self
                .key_rows
                .convert_columns(&batch.columns()[..key_columns])
                .map_err(|e| corrupt(format!("OVER aggregation partition keys: {e}")))?;
            for r in 0..batch.num_rows() {
                let mut partition = self.new_partition()?;
                let mut column = key_columns;
                for acc in partition.accumulators.iter_mut() {
                    let width = acc.state()?.len();
                    let states: Vec<ArrayRef> = batch.columns()[column..column + width]
                        .iter()
                        .map(|c| c.slice(r, 1))
                        .collect();
                    acc.merge_batch(&states)
                        .map_err(|e| corrupt(format!("OVER aggregation state: {e}")))?;
                    column += width;
                }
                if self
                    .partitions
                    .insert(keys.row(r).data().into(), partition)
                    .is_some()
                {
                    return Err(corrupt("an OVER aggregation partition twice"));
                }
            }
        }
        for batch in snapshot.table(HELD) {
            let Some((framed, columns)) = batch.columns().split_last() else {
                return Err(corrupt("OVER aggregation rows without columns"));
            };
            let framed = framed
                .as_boolean_opt()
                .ok_or_else(|| corrupt("OVER aggregation rows without `framed`"))?
                .clone();
            let input = self.as_input(columns)?;
            let (keys, held) = self.to_held(&input)?;
            for (i, row) in held.into_iter().enumerate() {
                let key = keys.row(i).data();
                if !self.partitions.contains_key(key) {
                    let partition = self.new_partition()?;
                    self.partitions.insert(key.into(), partition);
                }
                let partition = self
                    .partitions
                    .get_mut(key)
                    .ok_or_else(|| EngineError::Internal("a partition just made".into()))?;
                if framed.value(i) {
                    if !self.spec.frame.is_bounded() {
                        return Err(corrupt("an OVER aggregation row framed without a bound"));
                    }
                    add(partition, row, true)?;
                } else {
                    if partition.frame_start < partition.next {
                        return Err(corrupt("OVER aggregation rows out of order"));
                    }
                    partition.held.push_back(row);
                    partition.next += 1;
                    partition.frame_start = partition.next;
                }
            }
        }
        for batch in snapshot.table(PENDING) {
            let input = self.as_input(batch.columns())?;
            let (_, times) = self.keys_and_times(&input)?;
            let rows = self.rows.convert_columns(input.columns())?;
            for (i, time) in times.into_iter().enumerate() {
                self.pending
                    .insert((time, self.next_seq), rows.row(i).owned());
                self.next_seq += 1;
            }
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        let mut usage = vec![
            StateUsage {
                table: PENDING,
                rows: self.pending.len(),
                bytes: self.pending.values().map(|r| r.row().as_ref().len()).sum(),
            },
            StateUsage {
                table: HELD,
                rows: self.partitions.values().map(|p| p.held.len()).sum(),
                bytes: self
                    .partitions
                    .values()
                    .flat_map(|p| p.held.iter())
                    .map(|h| h.row.row().as_ref().len())
                    .sum(),
            },
        ];
        if !self.spec.frame.is_bounded() {
            usage.push(StateUsage {
                table: ACCUMULATORS,
                rows: self.partitions.len(),
                bytes: self
                    .partitions
                    .iter()
                    .map(|(k, p)| k.len() + p.accumulators.iter().map(|a| a.size()).sum::<usize>())
                    .sum(),
            });
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::operators::checkpoint_harness::{Lcg, Step, check_every_cut, rows};
    use crate::operators::window::MILLISECOND;

    const SECOND: i64 = 1_000_000_000;

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

    fn aggregate(udaf: Arc<AggregateUDF>, name: &str) -> OverFunction {
        OverFunction::Aggregate(Arc::new(
            AggregateExprBuilder::new(udaf, vec![Arc::new(Column::new("v", 2))])
                .schema(input_schema())
                .alias(name)
                .build()
                .unwrap(),
        ))
    }

    /// `sum(v)`, `max(v)`, `min(v)` over `frame`, then `LAG(v, 2, -1)`, by `k`.
    fn operator(frame: OverFrame) -> OverAggregateOperator {
        let mut fields: Vec<Field> = input_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for name in ["s", "mx", "mn", "lag"] {
            fields.push(Field::new(name, DataType::Int64, true));
        }
        OverAggregateOperator::try_new(
            OperatorInfo {
                name: "OverAggregate".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            input_schema(),
            OverAggregateSpec {
                keys: vec![Arc::new(Column::new("k", 0))],
                time: Arc::new(Column::new("ts", 1)),
                time_unit_ns: MILLISECOND,
                frame,
                functions: vec![
                    aggregate(sum_udaf(), "s"),
                    aggregate(max_udaf(), "mx"),
                    aggregate(min_udaf(), "mn"),
                    OverFunction::Lag(Lag {
                        value: Arc::new(Column::new("v", 2)),
                        offset: 2,
                        default: ScalarValue::Int64(Some(-1)),
                    }),
                ],
            },
        )
        .unwrap()
    }

    #[test]
    fn rows_frames_slide_and_wait_for_the_watermark() {
        let mut op = operator(OverFrame::Rows(Some(1)));
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, 1, 5), (1, 2, 3), (2, 1, 7)]), &mut out)
            .unwrap();
        op.on_batch(0, batch(&[(1, 3, 9)]), &mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
        // The watermark reaches 2 s: the rows at 1 s and 2 s, in time order.
        op.on_watermark(2 * SECOND, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            [
                "1 1970-01-01T00:00:01 5 5 5 5 -1",
                "2 1970-01-01T00:00:01 7 7 7 7 -1",
                "1 1970-01-01T00:00:02 3 8 5 3 -1"
            ]
        );
        // A row at the watermark is late.
        op.on_batch(0, batch(&[(1, 2, 100)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1);
        op.on_watermark(crate::runtime::message::WATERMARK_END, &mut out)
            .unwrap();
        // 5 left the frame: sum 3 + 9, max 9, min 3; LAG(v, 2) is 5.
        assert_eq!(rows(&mut out), ["1 1970-01-01T00:00:03 9 12 9 3 5"]);
    }

    #[test]
    fn range_frames_include_peers_and_drop_rows_outside_the_interval() {
        let mut op = operator(OverFrame::Range(Some(2 * SECOND)));
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            batch(&[(1, 1, 5), (1, 3, 3), (1, 3, 4), (1, 4, 1), (1, 6, 2)]),
            &mut out,
        )
        .unwrap();
        op.on_watermark(10 * SECOND, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            [
                "1 1970-01-01T00:00:01 5 5 5 5 -1",
                "1 1970-01-01T00:00:03 3 12 5 3 -1",
                "1 1970-01-01T00:00:03 4 12 5 3 5",
                "1 1970-01-01T00:00:04 1 8 4 1 3",
                "1 1970-01-01T00:00:06 2 3 2 1 4"
            ]
        );
        // The frame holds 4 s and 6 s, LAG needs two rows: three rows at most.
        assert!(op.state_usage()[1].rows <= 3);
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
                        rng.next(3) as i64,
                        (watermark + rng.next(6) as i64 - 1).max(0),
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
        for frame in [
            OverFrame::Rows(Some(2)),
            OverFrame::Range(Some(3 * SECOND)),
            OverFrame::Rows(None),
            OverFrame::Range(None),
        ] {
            let mut late_rows = 0;
            for seed in [1, 2, 3] {
                let make = || Box::new(operator(frame)) as Box<dyn Operator>;
                let tables = state_tables(&["k".to_string()], frame);
                let (output, late) = check_every_cut(&make, &tables, &sequence(seed));
                assert!(output.len() > 3, "the sequence emits rows");
                late_rows += late;
            }
            assert!(late_rows > 0, "the sequences have late rows");
        }
    }
}
