//! `LeadOperator`: `LEAD(x [, n [, default]]) OVER (PARTITION BY k ORDER BY <time attribute>)`
//! over the rows of an OVER aggregation, which come in time order per partition (ties in
//! arrival order), each final (the watermark has passed it).
//!
//! A row's `LEAD(x, n)` is `x` of the `n`-th row after it in its partition, so the row waits
//! for that row: it is emitted, followed by one column per `LEAD`, as soon as its partition
//! holds `n` rows after it (the largest `n` of the query's LEADs). At the end of the input the
//! rows still waiting are emitted with the default (NULL without one) where no row follows.
//! Output is append-only, but not in time order across partitions, and a row of a partition
//! that receives no more rows waits until the end of the input. Watermark: held back behind
//! the earliest waiting row (one nanosecond before its time), so a waiting row is never late
//! downstream; a quiet partition holds every later window back with it.
//!
//! State: per partition, the waiting rows (at most `n` each), in Arrow's row format, with their
//! values of the LEAD arguments. Snapshot: `lead_meta` holds the input watermark, `lead_rows`
//! the waiting rows, partition by partition in order; restore re-adds them in that order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;

use super::over_aggregate::{partition_key_converter, partition_keys_and_times};
use super::{Operator, OperatorContext, OperatorInfo, conform_batch};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::{Epoch, EventTime, WATERMARK_END};
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

const META: &str = "lead_meta";
const ROWS: &str = "lead_rows";

/// The state tables of LEAD partitioned by `keys` (as the plan names them).
pub fn state_tables(keys: &[String]) -> Vec<StateTable> {
    vec![
        StateTable::fixed(META, "the watermark"),
        StateTable::new(
            ROWS,
            keys.to_vec(),
            "the rows waiting for the rows LEAD reads",
            Freed::Never("the rows after it free a row"),
        ),
    ]
}

/// `LEAD(value, offset, default)`.
pub struct Lead {
    pub value: Arc<dyn PhysicalExpr>,
    pub offset: usize,
    /// Of the value's type.
    pub default: ScalarValue,
}

/// What LEAD partitions by and reads.
pub struct LeadSpec {
    /// PARTITION BY expressions (none: one partition).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The ORDER BY time attribute, and nanoseconds per unit of it.
    pub time: Arc<dyn PhysicalExpr>,
    pub time_unit_ns: i64,
    /// In output order.
    pub leads: Vec<Lead>,
}

struct Waiting {
    time: EventTime,
    /// Arrival number: the end of the input emits waiting rows by (time, arrival).
    seq: u64,
    row: OwnedRow,
    /// Per LEAD, its argument at this row.
    values: Vec<ScalarValue>,
}

pub struct LeadOperator {
    info: OperatorInfo,
    input_schema: SchemaRef,
    spec: LeadSpec,
    rows: RowConverter,
    key_rows: RowConverter,
    partitions: HashMap<Box<[u8]>, VecDeque<Waiting>>,
    /// Rows after a row that its LEADs read.
    reach: usize,
    waiting: usize,
    next_seq: u64,
    watermark: Option<EventTime>,
    /// The watermark last forwarded.
    forwarded: Option<EventTime>,
}

impl LeadOperator {
    pub fn try_new(
        info: OperatorInfo,
        input_schema: SchemaRef,
        spec: LeadSpec,
    ) -> EngineResult<Self> {
        let rows = super::row_converter(&input_schema)?;
        let reach = spec.leads.iter().map(|l| l.offset).max().unwrap_or(0);
        let key_rows = partition_key_converter(&spec.keys, &input_schema)?;
        Ok(Self {
            info,
            input_schema,
            spec,
            rows,
            key_rows,
            partitions: HashMap::new(),
            reach,
            waiting: 0,
            next_seq: 0,
            watermark: None,
            forwarded: None,
        })
    }

    /// Keys, times and LEAD arguments of `batch`'s rows.
    fn add(
        &mut self,
        batch: &RecordBatch,
        ready: &mut Vec<(Waiting, Vec<ScalarValue>)>,
    ) -> EngineResult<()> {
        let n = batch.num_rows();
        let (keys, times) = partition_keys_and_times(
            &self.key_rows,
            &self.spec.keys,
            &self.spec.time,
            self.spec.time_unit_ns,
            batch,
        )?;
        let values = self
            .spec
            .leads
            .iter()
            .map(|l| Ok(l.value.evaluate(batch)?.into_array(n)?))
            .collect::<EngineResult<Vec<_>>>()?;
        let rows = self.rows.convert_columns(batch.columns())?;
        for (i, time) in times.into_iter().enumerate() {
            let waiting = Waiting {
                time,
                seq: self.next_seq,
                row: rows.row(i).owned(),
                values: values
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, i))
                    .collect::<Result<_, _>>()?,
            };
            let partition = self
                .partitions
                .entry(keys.row(i).data().into())
                .or_default();
            partition.push_back(waiting);
            self.waiting += 1;
            if partition.len() > self.reach {
                let row = partition
                    .pop_front()
                    .ok_or_else(|| EngineError::Internal("a waiting row".into()))?;
                self.waiting -= 1;
                let leads = leads_of(&self.spec.leads, &row, partition);
                ready.push((row, leads));
            }
        }
        self.partitions.retain(|_, p| !p.is_empty());
        Ok(())
    }
}

/// The LEAD values of `row`, whose successors in its partition are `after`.
fn leads_of(leads: &[Lead], row: &Waiting, after: &VecDeque<Waiting>) -> Vec<ScalarValue> {
    leads
        .iter()
        .enumerate()
        .map(|(l, lead)| match lead.offset {
            0 => row.values[l].clone(),
            n => after
                .get(n - 1)
                .map_or_else(|| lead.default.clone(), |next| next.values[l].clone()),
        })
        .collect()
}

impl LeadOperator {
    fn emit(
        &self,
        ready: Vec<(Waiting, Vec<ScalarValue>)>,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        if ready.is_empty() {
            return Ok(());
        }
        let mut columns = self
            .rows
            .convert_rows(ready.iter().map(|(w, _)| w.row.row()))?;
        for l in 0..self.spec.leads.len() {
            columns.push(ScalarValue::iter_to_array(
                ready.iter().map(|(_, values)| values[l].clone()),
            )?);
        }
        out.batch(conform_batch(&self.info.schema, columns)?);
        Ok(())
    }

    /// Emits every waiting row (the end of the input): defaults where no row follows.
    fn flush(&mut self, out: &mut OperatorContext) -> EngineResult<()> {
        let mut ready = Vec::new();
        for (_, mut partition) in std::mem::take(&mut self.partitions) {
            while let Some(row) = partition.pop_front() {
                let leads = leads_of(&self.spec.leads, &row, &partition);
                ready.push((row, leads));
            }
        }
        self.waiting = 0;
        ready.sort_by_key(|(w, _)| (w.time, w.seq));
        self.emit(ready, out)
    }

    /// The watermark to forward: the input's, held behind the earliest waiting row.
    fn held_watermark(&self, watermark: EventTime) -> EventTime {
        self.partitions
            .values()
            .filter_map(|p| p.front())
            .map(|w| w.time.saturating_sub(1))
            .fold(watermark, EventTime::min)
    }
}

impl Operator for LeadOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let mut ready = Vec::new();
        self.add(&batch, &mut ready)?;
        self.emit(ready, out)
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
        if watermark == WATERMARK_END {
            self.flush(out)?;
        }
        self.watermark = Some(watermark);
        let held = self.held_watermark(watermark);
        if self.forwarded.is_none_or(|f| held > f) {
            self.forwarded = Some(held);
            out.watermark(held);
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        vec![StateUsage {
            table: ROWS,
            rows: self.waiting,
            bytes: self
                .partitions
                .values()
                .flatten()
                .map(|w| w.row.as_ref().len())
                .sum(),
        }]
    }

    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(
            META,
            &[("watermark", self.watermark), ("forwarded", self.forwarded)],
        )?;
        if self.waiting > 0 {
            // By (time, arrival), so that a restore numbers arrivals in the same order.
            let mut waiting: Vec<&Waiting> = self.partitions.values().flatten().collect();
            waiting.sort_by_key(|w| (w.time, w.seq));
            let columns = self
                .rows
                .convert_rows(waiting.iter().map(|w| w.row.row()))?;
            snapshot.add(
                ROWS,
                RecordBatch::try_new(Arc::clone(&self.input_schema), columns)?,
            )?;
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        if self.watermark.is_some() || self.waiting > 0 {
            return Err(EngineError::Internal(
                "LEAD: restore into an operator that already ran".into(),
            ));
        }
        let values = snapshot.values(META)?;
        let (Some(watermark), Some(forwarded), 2) = (
            values.get("watermark"),
            values.get("forwarded"),
            values.len(),
        ) else {
            return Err(corrupt(format!("LEAD's {META} holds {values:?}")));
        };
        for batch in snapshot.table(ROWS) {
            let fits = batch.num_columns() == self.input_schema.fields().len()
                && batch
                    .columns()
                    .iter()
                    .zip(self.input_schema.fields())
                    .all(|(c, f)| c.data_type() == f.data_type());
            if !fits {
                return Err(corrupt(
                    "LEAD's waiting rows do not have the input's columns",
                ));
            }
            let batch =
                RecordBatch::try_new(Arc::clone(&self.input_schema), batch.columns().to_vec())?;
            // Each partition held fewer rows than LEAD reads ahead: nothing is emitted.
            let mut ready = Vec::new();
            self.add(&batch, &mut ready)?;
            if !ready.is_empty() {
                return Err(corrupt(
                    "LEAD's snapshot holds more rows than a partition waits for",
                ));
            }
        }
        self.watermark = *watermark;
        self.forwarded = *forwarded;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::operators::join_rows::checkpoint_tests::{Emitted, Step, run};

    const MS: i64 = 1_000_000;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    fn operator() -> LeadOperator {
        let mut fields: Vec<Field> = input_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("next", DataType::Int64, true));
        fields.push(Field::new("second", DataType::Int64, true));
        let column =
            |name: &str, i: usize| -> Arc<dyn PhysicalExpr> { Arc::new(Column::new(name, i)) };
        LeadOperator::try_new(
            OperatorInfo {
                name: "Lead".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            input_schema(),
            LeadSpec {
                keys: vec![column("k", 0)],
                time: column("ts", 2),
                time_unit_ns: MS,
                leads: vec![
                    Lead {
                        value: column("v", 1),
                        offset: 1,
                        default: ScalarValue::Int64(None),
                    },
                    Lead {
                        value: column("v", 1),
                        offset: 2,
                        default: ScalarValue::Int64(Some(-1)),
                    },
                ],
            },
        )
        .unwrap()
    }

    fn rows(emitted: &[Emitted]) -> Vec<String> {
        let mut out = Vec::new();
        for e in emitted {
            match e {
                Emitted::Rows(b) => {
                    let v = b.column(1).as_primitive::<Int64Type>();
                    let next = b.column(3).as_primitive::<Int64Type>();
                    let second = b.column(4).as_primitive::<Int64Type>();
                    for r in 0..b.num_rows() {
                        let next = if next.is_valid(r) {
                            next.value(r).to_string()
                        } else {
                            "NULL".into()
                        };
                        out.push(format!("{}>{next},{}", v.value(r), second.value(r)));
                    }
                }
                Emitted::Watermark(w) => out.push(format!("wm {}", w / MS)),
            }
        }
        out
    }

    #[test]
    fn a_row_waits_for_the_rows_its_leads_read_and_holds_the_watermark_back() {
        let mut op = operator();
        let emitted = run(
            &mut op,
            &[
                Step::Rows(0, batch(&[(1, 10, 1), (2, 20, 2), (1, 11, 3)])),
                Step::Watermark(3 * MS),
                Step::Rows(0, batch(&[(1, 12, 4), (1, 13, 5)])),
                Step::Watermark(5 * MS),
                Step::Watermark(WATERMARK_END),
            ],
        );
        assert_eq!(
            rows(&emitted),
            [
                // Nothing is complete: the watermark stays behind row 10 (time 1).
                "wm 0",
                "10>11,12",
                "11>12,13",
                // Row 20 (time 2) of partition 2 still waits.
                "wm 1",
                "20>NULL,-1",
                "12>13,-1",
                "13>NULL,-1",
                format!("wm {}", WATERMARK_END / MS).as_str(),
            ]
        );
    }

    #[test]
    fn restores_at_every_cut() {
        use crate::operators::checkpoint_harness::{Step as Cut, check_every_cut};
        let steps = vec![
            Cut::Batch(batch(&[(1, 10, 1), (2, 20, 2), (1, 11, 3)])),
            Cut::Watermark(3 * MS),
            Cut::Batch(batch(&[(2, 21, 4), (1, 12, 4)])),
            Cut::Batch(batch(&[(1, 13, 5), (2, 22, 6), (2, 23, 7)])),
            Cut::Watermark(7 * MS),
            Cut::Batch(batch(&[(3, 30, 8)])),
            Cut::End,
        ];
        let make = || Box::new(operator()) as Box<dyn Operator>;
        let (output, _) = check_every_cut(&make, &state_tables(&["k".to_string()]), &steps);
        assert!(output.len() > 3, "the sequence emits rows");
    }
}
