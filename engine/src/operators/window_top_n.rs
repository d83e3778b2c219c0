//! `WindowTopNOperator`: `ROW_NUMBER()`, `RANK()` or `DENSE_RANK()` `OVER (PARTITION BY
//! window_start, window_end [, k] ORDER BY ...)` filtered by `rn <= N`, per window.
//!
//! Rows are kept per window until the watermark passes the window's end; then each partition's
//! rows numbered N or less by the ORDER BY are emitted with their number (N = 1 with an
//! ascending time order is deduplication). ROW_NUMBER numbers ties in the order rows are held;
//! RANK and DENSE_RANK give ties one number, so every row of a tie numbered N or less is
//! emitted. While a window is open, its rows are cut back to the top N per
//! partition whenever they grow past a threshold, so state stays near N rows per partition.
//!
//! State: per open window, its candidate rows. Emission: final rows only. Lateness: a row for
//! a window that already fired is dropped and counted. Watermark: forwarded after the windows
//! it closes are emitted.
//!
//! Snapshot: the watermark and each open window's batches as held (with its row counts, which
//! decide when it is next cut back), so a restored instance ranks exactly the same rows in
//! the same order.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{
    SortColumn, concat_batches, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::top_n::RankFunction;
use super::window_aggregate::{BoundColumn, BoundValues};
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::EngineResult;
use crate::operators::window::{Span, WindowKind, take_closed};
use crate::runtime::message::Epoch;
use crate::runtime::message::EventTime;
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// Snapshot tables and values.
const META: &str = "meta";
const WINDOWS: &str = "windows";
const ROWS: &str = "rows";
const WATERMARK: &str = "watermark";

/// The state tables of a window Top-N partitioned by `partition` (as the plan names it) within
/// each window.
pub fn state_tables(partition: &[String]) -> Vec<StateTable> {
    let mut key = vec!["window".to_string()];
    key.extend(partition.iter().cloned());
    vec![
        StateTable::fixed(META, "the watermark"),
        StateTable::index(
            WINDOWS,
            vec!["window".to_string()],
            "row counts of an open window",
            Freed::Watermark,
        ),
        StateTable::new(
            ROWS,
            key,
            "top rows per open window and partition",
            Freed::Watermark,
        ),
    ]
}

/// Rows a window may hold before they are cut back to the top N per partition.
const COMPACT_AT: usize = 4096;

/// What the operator ranks by and how many rows it keeps.
pub struct WindowTopNSpec {
    pub kind: WindowKind,
    /// A window fires when `watermark >= window_end - lag`.
    pub lag: i64,
    /// Where the window bounds are in the input.
    pub bounds: Vec<BoundColumn>,
    /// PARTITION BY expressions other than the window columns.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    pub order: Vec<PhysicalSortExpr>,
    pub function: RankFunction,
    pub limit: usize,
}

#[derive(Default)]
struct WindowRows {
    batches: Vec<RecordBatch>,
    rows: usize,
    /// Rows after the last cut (the next cut happens at twice this, at least `COMPACT_AT`).
    kept: usize,
}

pub struct WindowTopNOperator {
    info: OperatorInfo,
    input_schema: SchemaRef,
    spec: WindowTopNSpec,
    windows: BTreeMap<Span, WindowRows>,
    watermark: Option<EventTime>,
}

impl WindowTopNOperator {
    pub fn new(info: OperatorInfo, input_schema: SchemaRef, spec: WindowTopNSpec) -> Self {
        Self {
            info,
            input_schema,
            spec,
            windows: BTreeMap::new(),
            watermark: None,
        }
    }

    /// The rows of `batch` ranked within their partitions: (row index, number), for numbers
    /// up to the limit, ordered by partition then rank.
    fn top_n(&self, batch: &RecordBatch) -> EngineResult<Vec<(u32, u64)>> {
        let rows = batch.num_rows();
        let partition: Vec<ArrayRef> = self
            .spec
            .partition
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
            .collect::<EngineResult<_>>()?;
        let order: Vec<SortColumn> = self
            .spec
            .order
            .iter()
            .map(|o| {
                Ok(SortColumn {
                    values: o.expr.evaluate(batch)?.into_array(rows)?,
                    options: Some(o.options),
                })
            })
            .collect::<EngineResult<_>>()?;
        let mut columns: Vec<SortColumn> = partition
            .iter()
            .map(|values| SortColumn {
                values: Arc::clone(values),
                options: None,
            })
            .collect();
        columns.extend(order.iter().cloned());
        if columns.is_empty() {
            // One partition, every row tied.
            let mut out = Vec::new();
            self.spec.function.number_rows(
                self.spec.limit,
                |_| true,
                rows,
                |i, n| out.push((i as u32, n)),
            );
            return Ok(out);
        }
        let sorted = lexsort_to_indices(&columns, None)?;
        let encode = |columns: Vec<SortColumn>| -> EngineResult<Option<Rows>> {
            if columns.is_empty() {
                return Ok(None);
            }
            let converter = RowConverter::new(
                columns
                    .iter()
                    .map(|c| {
                        SortField::new_with_options(
                            c.values.data_type().clone(),
                            c.options.unwrap_or_default(),
                        )
                    })
                    .collect(),
            )?;
            let values: Vec<ArrayRef> = columns.into_iter().map(|c| c.values).collect();
            Ok(Some(converter.convert_columns(&values)?))
        };
        let keys = encode(
            partition
                .iter()
                .map(|values| SortColumn {
                    values: Arc::clone(values),
                    options: None,
                })
                .collect(),
        )?;
        // Ties only matter to RANK and DENSE_RANK.
        let order_keys = if self.spec.function == RankFunction::RowNumber {
            None
        } else {
            encode(order)?
        };
        let sorted = sorted.values();
        let mut out = Vec::new();
        let mut start = 0;
        while start < sorted.len() {
            let same_partition = |a: u32, b: u32| match &keys {
                Some(k) => k.row(a as usize) == k.row(b as usize),
                None => true,
            };
            let mut end = start + 1;
            while end < sorted.len() && same_partition(sorted[start], sorted[end]) {
                end += 1;
            }
            let group = &sorted[start..end];
            self.spec.function.number_rows(
                self.spec.limit,
                |i| match &order_keys {
                    Some(k) => k.row(group[i] as usize) == k.row(group[i - 1] as usize),
                    None => true,
                },
                group.len(),
                |i, n| out.push((group[i], n)),
            );
            start = end;
        }
        Ok(out)
    }

    fn window_batch(&self, rows: &WindowRows) -> EngineResult<RecordBatch> {
        Ok(concat_batches(&self.input_schema, &rows.batches)?)
    }
}

impl Operator for WindowTopNOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let by_window = BoundValues::read(&self.spec.bounds, &batch)?
            .rows_by_window(&self.spec.kind, batch.num_rows());
        for (window, rows) in by_window {
            if window.closed_by(self.spec.lag, self.watermark) {
                // The input carries the row's window, not its time: the latest time the
                // window holds stands for it.
                let time = window.end - self.spec.lag;
                let late: Vec<_> = rows.iter().map(|r| (*r as usize, Some(time))).collect();
                out.drop_late(&batch, &late)?;
                continue;
            }
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(&batch, &UInt32Array::from(rows))?
            };
            let entry = self.windows.entry(window).or_default();
            entry.rows += part.num_rows();
            entry.batches.push(part);
            if entry.rows >= COMPACT_AT.max(2 * entry.kept) {
                let entry = self.windows.remove(&window).unwrap_or_default();
                let all = self.window_batch(&entry)?;
                let keep: Vec<u32> = self.top_n(&all)?.into_iter().map(|(r, _)| r).collect();
                let kept = take_record_batch(&all, &UInt32Array::from(keep))?;
                self.windows.insert(
                    window,
                    WindowRows {
                        rows: kept.num_rows(),
                        kept: kept.num_rows(),
                        batches: vec![kept],
                    },
                );
            }
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
        for (_, rows) in take_closed(&mut self.windows, self.spec.lag, watermark) {
            let all = self.window_batch(&rows)?;
            let ranked = self.top_n(&all)?;
            let indices = UInt32Array::from_iter_values(ranked.iter().map(|(r, _)| *r));
            let kept = take_record_batch(&all, &indices)?;
            let mut columns = kept.columns().to_vec();
            columns.push(Arc::new(UInt64Array::from_iter_values(
                ranked.iter().map(|(_, n)| *n),
            )));
            out.batch(super::conform_batch(&self.info.schema, columns)?);
        }
        out.watermark(watermark);
        Ok(())
    }

    /// Tables: `meta` (the watermark), `windows` (per open window: start, end, how many
    /// batches it holds, its row count and its rows after the last cut) and `rows` (those
    /// batches as they are held, window by window, so ranking ties fall the same way).
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(META, &[(WATERMARK, self.watermark)])?;
        let mut columns: [Vec<i64>; 5] = Default::default();
        for (span, w) in &self.windows {
            let values = [
                span.start,
                span.end,
                w.batches.len() as i64,
                w.rows as i64,
                w.kept as i64,
            ];
            for (column, v) in columns.iter_mut().zip(values) {
                column.push(v);
            }
        }
        let [starts, ends, batches, rows, kept] =
            columns.map(|c| Arc::new(Int64Array::from(c)) as ArrayRef);
        snapshot.add(
            WINDOWS,
            RecordBatch::try_from_iter([
                ("start", starts),
                ("end", ends),
                ("batches", batches),
                ("rows", rows),
                ("kept", kept),
            ])?,
        )?;
        for w in self.windows.values() {
            for b in &w.batches {
                snapshot.add(ROWS, b.clone())?;
            }
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        let meta = snapshot.values(META)?;
        if meta.keys().any(|k| k != WATERMARK)
            || (!snapshot.is_empty() && !meta.contains_key(WATERMARK))
        {
            return Err(corrupt("unexpected window Top-N values"));
        }
        self.watermark = meta.get(WATERMARK).copied().flatten();
        let types: Vec<&DataType> = self
            .input_schema
            .fields()
            .iter()
            .map(|f| f.data_type())
            .collect();
        let mut rows = snapshot.table(ROWS).into_iter();
        for batch in snapshot.table(WINDOWS) {
            let column = |name: &str| -> EngineResult<Int64Array> {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_primitive_opt::<Int64Type>())
                    .filter(|c| c.null_count() == 0)
                    .cloned()
                    .ok_or_else(|| corrupt(format!("window Top-N windows without {name}")))
            };
            let [starts, ends, batches, counts, kept] =
                ["start", "end", "batches", "rows", "kept"].map(column);
            let (starts, ends, batches, counts, kept) = (starts?, ends?, batches?, counts?, kept?);
            for i in 0..batch.num_rows() {
                let mut window = WindowRows {
                    kept: usize::try_from(kept.value(i))
                        .map_err(|_| corrupt("a negative window Top-N count"))?,
                    ..WindowRows::default()
                };
                for _ in 0..batches.value(i).max(0) {
                    let b = rows
                        .next()
                        .ok_or_else(|| corrupt("a window Top-N window without its rows"))?;
                    let held: Vec<&DataType> = b.columns().iter().map(|c| c.data_type()).collect();
                    if held != types {
                        return Err(corrupt("window Top-N rows of another schema"));
                    }
                    window.rows += b.num_rows();
                    window.batches.push(b);
                }
                if i64::try_from(window.rows).ok() != Some(counts.value(i)) {
                    return Err(corrupt("a window Top-N row count that is not its rows'"));
                }
                let span = Span::new(starts.value(i), ends.value(i));
                if self.windows.insert(span, window).is_some() {
                    return Err(corrupt("a window Top-N window twice"));
                }
            }
        }
        if rows.next().is_some() {
            return Err(corrupt("window Top-N rows of no window"));
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        vec![StateUsage {
            table: ROWS,
            rows: self.windows.values().map(|w| w.rows).sum(),
            bytes: self
                .windows
                .values()
                .flat_map(|w| w.batches.iter().map(|b| b.get_array_memory_size()))
                .sum(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::Column;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Int64Type};

    use super::*;
    use crate::operators::window::MILLISECOND;
    use crate::operators::window_aggregate::WindowColumn;
    use crate::runtime::message::Message;

    fn input_schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        Arc::new(Schema::new(vec![
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    /// Rows of the window [0 s, 10 s): (k, v).
    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        let n = rows.len();
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![0; n])),
                Arc::new(TimestampMillisecondArray::from(vec![10_000; n])),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn keeps_the_top_n_per_partition_and_compacts_while_open() {
        let mut fields = input_schema().fields().to_vec();
        fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        let mut op = WindowTopNOperator::new(
            OperatorInfo {
                name: "WindowTopN".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            input_schema(),
            WindowTopNSpec {
                kind: WindowKind::Tumble {
                    size: 10_000 * MILLISECOND,
                    offset: 0,
                },
                lag: MILLISECOND,
                bounds: vec![
                    BoundColumn {
                        index: 0,
                        column: WindowColumn::Start,
                        unit_ns: MILLISECOND,
                    },
                    BoundColumn {
                        index: 1,
                        column: WindowColumn::End,
                        unit_ns: MILLISECOND,
                    },
                ],
                partition: vec![Arc::new(Column::new("k", 2))],
                order: vec![PhysicalSortExpr::new(
                    Arc::new(Column::new("v", 3)),
                    SortOptions {
                        descending: true,
                        nulls_first: false,
                    },
                )],
                function: RankFunction::RowNumber,
                limit: 2,
            },
        );
        let mut out = OperatorContext::default();
        // 20,000 rows over three keys; the best two of key k are 19_99x values.
        for chunk in 0..20 {
            let rows: Vec<(i64, i64)> = (0..1000)
                .map(|i| {
                    let v = chunk * 1000 + i;
                    (v % 3, v)
                })
                .collect();
            op.on_batch(0, batch(&rows), &mut out).unwrap();
            let held = op.state_usage()[0].rows;
            assert!(
                held < COMPACT_AT + 1000,
                "compacted while open, held {held}"
            );
        }
        op.on_watermark(10_000 * MILLISECOND - MILLISECOND, &mut out)
            .unwrap();
        let mut rows = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let k = b.column(2).as_primitive::<Int64Type>();
                let v = b.column(3).as_primitive::<Int64Type>();
                let rn = b
                    .column(4)
                    .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
                for r in 0..b.num_rows() {
                    rows.push((k.value(r), v.value(r), rn.value(r)));
                }
            }
        }
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (0, 19_995, 2),
                (0, 19_998, 1),
                (1, 19_996, 2),
                (1, 19_999, 1),
                (2, 19_994, 2),
                (2, 19_997, 1)
            ]
        );
        assert_eq!(op.state_usage()[0].rows, 0);
        // The window has fired: another row for it is late.
        op.on_batch(0, batch(&[(0, 1_000_000)]), &mut out).unwrap();
        assert_eq!(out.late_rows(), 1);
    }

    #[test]
    fn rank_and_dense_rank_keep_every_tie_through_a_cut_back() {
        let count_by_value = |function: RankFunction| {
            let mut fields = input_schema().fields().to_vec();
            fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
            let mut op = WindowTopNOperator::new(
                OperatorInfo {
                    name: "WindowTopN".to_string(),
                    schema: Arc::new(Schema::new(fields)),
                },
                input_schema(),
                WindowTopNSpec {
                    kind: WindowKind::Tumble {
                        size: 10_000 * MILLISECOND,
                        offset: 0,
                    },
                    lag: MILLISECOND,
                    bounds: vec![
                        BoundColumn {
                            index: 0,
                            column: WindowColumn::Start,
                            unit_ns: MILLISECOND,
                        },
                        BoundColumn {
                            index: 1,
                            column: WindowColumn::End,
                            unit_ns: MILLISECOND,
                        },
                    ],
                    partition: vec![],
                    order: vec![PhysicalSortExpr::new(
                        Arc::new(Column::new("v", 3)),
                        SortOptions {
                            descending: true,
                            nulls_first: false,
                        },
                    )],
                    function,
                    limit: 2,
                },
            );
            let mut out = OperatorContext::default();
            // 9,000 rows of values 0, 1, 2 (3,006, 2,997, 2,997): cut back while the window is open.
            for chunk in 0..9 {
                let rows: Vec<(i64, i64)> = (0..1000).map(|i| (chunk, i % 3)).collect();
                op.on_batch(0, batch(&rows), &mut out).unwrap();
            }
            assert!(op.windows.values().any(|w| w.kept > 0), "cut back");
            op.on_watermark(10_000 * MILLISECOND, &mut out).unwrap();
            let mut counts = std::collections::BTreeMap::new();
            for m in out.drain() {
                if let Message::Data(b) = m {
                    let v = b.column(3).as_primitive::<Int64Type>();
                    let rn = b
                        .column(4)
                        .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
                    for r in 0..b.num_rows() {
                        *counts.entry((v.value(r), rn.value(r))).or_insert(0) += 1;
                    }
                }
            }
            counts.into_iter().collect::<Vec<_>>()
        };
        // RANK: the 2,997 rows of 2 tie for first; the 1s are 2,998th.
        assert_eq!(count_by_value(RankFunction::Rank), [((2, 1), 2997)]);
        // DENSE_RANK: the 1s are second.
        assert_eq!(
            count_by_value(RankFunction::DenseRank),
            [((1, 2), 2997), ((2, 1), 2997)]
        );
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::operators::checkpoint_harness::{Lcg, Step, check_every_cut, restore_declared};
    use crate::operators::window::MILLISECOND;
    use crate::operators::window_aggregate::WindowColumn;

    const SIZE_MS: i64 = 10_000;

    fn input_schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        Arc::new(Schema::new(vec![
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// Rows of (window start ms, k, v) in 10 s TUMBLE windows.
    fn batch(rows: &[(i64, i64, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.0 + SIZE_MS),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn declared() -> Vec<StateTable> {
        state_tables(&["k".to_string()])
    }

    /// Top `limit` by v DESC (NULLs last) per window [and k].
    fn operator(limit: usize, partitioned: bool) -> WindowTopNOperator {
        let mut fields = input_schema().fields().to_vec();
        fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        let bound = |index, column| BoundColumn {
            index,
            column,
            unit_ns: MILLISECOND,
        };
        WindowTopNOperator::new(
            OperatorInfo {
                name: "WindowTopN".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            input_schema(),
            WindowTopNSpec {
                kind: WindowKind::Tumble {
                    size: SIZE_MS * MILLISECOND,
                    offset: 0,
                },
                lag: MILLISECOND,
                bounds: vec![bound(0, WindowColumn::Start), bound(1, WindowColumn::End)],
                partition: if partitioned {
                    vec![Arc::new(Column::new("k", 2))]
                } else {
                    vec![]
                },
                order: vec![PhysicalSortExpr::new(
                    Arc::new(Column::new("v", 3)),
                    SortOptions {
                        descending: true,
                        nulls_first: false,
                    },
                )],
                function: RankFunction::RowNumber,
                limit,
            },
        )
    }

    /// Batches of `rows_per_batch` rows around an advancing watermark, with ties and late
    /// rows, and the end of input.
    fn sequence(seed: u64, steps: usize, rows_per_batch: u64) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut out = Vec::new();
        let mut watermark = 0i64;
        for _ in 0..steps {
            if rng.next(3) == 0 {
                watermark += 2000 + rng.next(6) as i64 * 1000;
                out.push(Step::Watermark(watermark * MILLISECOND));
                continue;
            }
            let rows: Vec<_> = (0..1 + rng.next(rows_per_batch))
                .map(|_| {
                    let t = (watermark + rng.next(30) as i64 * 1000 - 15_000).max(0);
                    let v = (rng.next(10) != 0).then(|| rng.next(5) as i64);
                    (t - t % SIZE_MS, rng.next(3) as i64, v)
                })
                .collect();
            out.push(Step::Batch(batch(&rows)));
        }
        out.push(Step::End);
        out
    }

    #[test]
    fn top_n_restores_at_every_cut() {
        for (limit, partitioned, seed) in [(2, true, 1), (3, false, 2), (1, true, 3)] {
            let make = || Box::new(operator(limit, partitioned)) as Box<dyn Operator>;
            let (output, late) = check_every_cut(&make, &declared(), &sequence(seed, 40, 4));
            assert!(output.iter().filter(|m| m.starts_with('+')).count() > 3);
            assert!(late > 0, "the sequence has late rows");
        }
    }

    #[test]
    fn top_n_restores_across_a_cut_back() {
        // Batches of up to 2,000 rows: windows are cut back to the top N while open.
        let make = || Box::new(operator(2, true)) as Box<dyn Operator>;
        let steps = sequence(4, 14, 2000);
        let mut op = operator(2, true);
        let mut out = OperatorContext::default();
        let mut cut_back = false;
        for step in &steps {
            if let Step::Batch(b) = step {
                op.on_batch(0, b.clone(), &mut out).unwrap();
                cut_back |= op.windows.values().any(|w| w.kept > 0);
            }
        }
        assert!(cut_back, "the sequence cuts a window back");
        check_every_cut(&make, &declared(), &steps);
    }

    #[test]
    fn a_snapshot_of_another_shape_is_refused() {
        let mut op = operator(2, true);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(0, 1, Some(1)), (10_000, 2, None)]), &mut out)
            .unwrap();
        let good = op.snapshot(1).unwrap();
        let fresh = || operator(2, true);
        fresh().restore(StateSnapshot::new()).unwrap();
        // Rows of another schema.
        let mut wrong = good.clone().without(ROWS);
        for b in good.table(ROWS) {
            wrong.add(ROWS, b.project(&[0, 1, 2]).unwrap()).unwrap();
        }
        assert!(fresh().restore(wrong).is_err());
        // Windows without their rows.
        assert!(fresh().restore(good.clone().without(ROWS)).is_err());
        // Another operator's table.
        let mut foreign = good.clone();
        foreign.add("groups", batch(&[(0, 1, None)])).unwrap();
        assert!(restore_declared(&mut fresh(), &declared(), foreign).is_err());
        // State without its watermark.
        assert!(fresh().restore(good.clone().without("meta")).is_err());
        fresh().restore(good).unwrap();
    }
}
