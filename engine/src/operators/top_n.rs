//! `TopNOperator`: `ROW_NUMBER()`, `RANK()` or `DENSE_RANK()` `OVER (PARTITION BY k ORDER BY
//! ...)` filtered by `rn <= N`, over a whole stream (no window): Flink's Top-N.
//!
//! Emission: updating. After each input batch, every partition the batch touched compares the
//! rows it ranks within N (with their numbers) before and after the batch, and emits `-` for
//! each row (and number) that left, in the old order, then `+` for each that entered, in the
//! new order. A row whose number changed is retracted and inserted again with the new number
//! when the number reaches the output; when the query projects the number away, only rows
//! that enter or leave the top N are emitted (Flink's "no ranking number" optimization). Rows
//! that tie in the ORDER BY are numbered by ROW_NUMBER in arrival order; RANK gives them one
//! number (then skips), DENSE_RANK one number (without skipping); with RANK and DENSE_RANK
//! every row numbered N or less is emitted. Nothing is emitted at the end, no row is ever
//! late, and watermarks are forwarded unchanged.
//!
//! Input: append-only rows, or a changelog led by `__op` (e.g. an updating aggregate's),
//! whose `-` rows remove an equal row from their partition (possibly pulling in the next row).
//!
//! State: per partition, its rows in ORDER BY order (ties in arrival order), held in Arrow's
//! row format. Over an append-only input only the rows numbered N or less are kept (a row
//! pushed out can never come back), so a partition holds about N rows (more with ties under
//! RANK or DENSE_RANK); over a changelog every row of the partition is kept, since a
//! retraction can bring any row back in. Partitions are never freed without a TTL
//! (`state=unbounded`). With one (`SET state.ttl`, module `ttl`) a partition expires that long
//! after a row last changed it, in processing time, without emitting anything (Flink's
//! `table.exec.state.ttl`): a later row of the partition starts it afresh, and a retraction
//! of a row it no longer holds is ignored. Partitions restored from a checkpoint count their
//! TTL from the restore.
//!
//! Snapshot: one table, `rows`: every held row (the input's columns without `__op`),
//! partition by partition in ORDER BY order, so a restored instance ranks ties the same way.

use std::collections::BTreeMap;

use datafusion::common::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::ttl::StateTtl;
use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::Epoch;
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot's table.
const ROWS: &str = "rows";

/// The state table of a Top-N partitioned by `partition` (as the plan names it).
pub fn state_tables(partition: &[String], updating_input: bool, ttl: bool) -> Vec<StateTable> {
    let (value, freed) = if ttl {
        let value = if updating_input {
            "every row of each partition"
        } else {
            "the rows ranked within N per partition"
        };
        (value, Freed::Ttl)
    } else if updating_input {
        (
            "every row of each partition",
            Freed::Never("a retraction frees its row"),
        )
    } else {
        ("the rows ranked within N per partition", Freed::Never(""))
    };
    vec![StateTable::new(ROWS, partition.to_vec(), value, freed)]
}

/// The ranking function a Top-N filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankFunction {
    /// `ROW_NUMBER()`: 1, 2, 3, ... (ties in arrival order).
    RowNumber,
    /// `RANK()`: ties share a number, the next row's number skips them (1, 1, 3).
    Rank,
    /// `DENSE_RANK()`: ties share a number, without gaps (1, 1, 2).
    DenseRank,
}

impl RankFunction {
    /// The function DataFusion names `name`, if it is a ranking function.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "row_number" => Some(Self::RowNumber),
            "rank" => Some(Self::Rank),
            "dense_rank" => Some(Self::DenseRank),
            _ => None,
        }
    }

    /// The number of the row at `index` (from 0) in ORDER BY order, given the number of the
    /// row before it (`previous`) and whether the two tie.
    pub fn next_number(self, previous: u64, index: usize, tie: bool) -> u64 {
        match self {
            Self::RowNumber => index as u64 + 1,
            Self::Rank | Self::DenseRank if tie => previous,
            Self::Rank => index as u64 + 1,
            Self::DenseRank => previous + 1,
        }
    }

    /// Numbers rows given in ORDER BY order: `same[i]` says row `i` ties with row `i - 1`.
    /// Calls `number(i, n)` for each row numbered `limit` or less, and stops at the first row
    /// numbered above it (later rows are numbered higher still).
    pub fn number_rows(
        self,
        limit: usize,
        mut same: impl FnMut(usize) -> bool,
        rows: usize,
        mut number: impl FnMut(usize, u64),
    ) {
        let mut current = 0u64;
        for i in 0..rows {
            current = self.next_number(current, i, i > 0 && same(i));
            if current > limit as u64 {
                return;
            }
            number(i, current);
        }
    }
}

impl std::fmt::Display for RankFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RowNumber => "ROW_NUMBER",
            Self::Rank => "RANK",
            Self::DenseRank => "DENSE_RANK",
        })
    }
}

/// What a Top-N ranks by and what it emits.
pub struct TopNSpec {
    /// PARTITION BY expressions, over the input (none: one partition).
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    pub order: Vec<PhysicalSortExpr>,
    pub function: RankFunction,
    /// N: rows numbered N or less are emitted.
    pub limit: usize,
    /// The number reaches the output: a row whose number changes is emitted again.
    pub rank_output: bool,
    /// The input is a changelog led by `__op`.
    pub updating_input: bool,
}

/// A held row's place: its ORDER BY key (row format, so bytes compare in ORDER BY order),
/// then its arrival number (ties in arrival order).
type Place = (Box<[u8]>, u64);

/// One partition's rows in ORDER BY order.
#[derive(Default)]
struct Partition {
    rows: BTreeMap<Place, OwnedRow>,
    /// Bytes held by the keys and rows.
    bytes: usize,
    /// When a row last changed it (processing time, ms; with a TTL).
    written_at: i64,
}

impl Partition {
    /// The rows numbered N or less: (place, row, number). Reads only those rows (and the
    /// one after them), however many the partition holds.
    fn top(&self, spec: &TopNSpec) -> Vec<(&Place, &OwnedRow, u64)> {
        let mut out: Vec<(&Place, &OwnedRow, u64)> = Vec::new();
        let mut current = 0u64;
        for (i, (place, row)) in self.rows.iter().enumerate() {
            let tie = out.last().is_some_and(|(p, _, _)| p.0 == place.0);
            current = spec.function.next_number(current, i, tie);
            if current > spec.limit as u64 {
                break;
            }
            out.push((place, row, current));
        }
        out
    }

    fn insert(&mut self, place: Place, row: OwnedRow) {
        self.bytes += place.0.len() + row.row().as_ref().len();
        self.rows.insert(place, row);
    }

    fn remove(&mut self, place: &Place) {
        if let Some(row) = self.rows.remove(place) {
            self.bytes -= place.0.len() + row.row().as_ref().len();
        }
    }

    /// Drops the rows numbered above N (over an append-only input they never come back).
    fn prune(&mut self, spec: &TopNSpec) {
        if spec.function == RankFunction::RowNumber {
            while self.rows.len() > spec.limit {
                if let Some((place, row)) = self.rows.pop_last() {
                    self.bytes -= place.0.len() + row.row().as_ref().len();
                }
            }
            return;
        }
        let kept = self.top(spec).len();
        if kept < self.rows.len() {
            let first_dropped = self.rows.keys().nth(kept).cloned();
            if let Some(place) = first_dropped {
                let dropped = self.rows.split_off(&place);
                for (p, r) in &dropped {
                    self.bytes -= p.0.len() + r.row().as_ref().len();
                }
            }
        }
    }

    /// True when a new row ordered at `key` cannot be numbered N or less (append-only input,
    /// with the partition pruned).
    fn excludes(&self, spec: &TopNSpec, key: &[u8]) -> bool {
        let Some(((last, _), _)) = self.rows.last_key_value() else {
            return false;
        };
        match spec.function {
            RankFunction::RowNumber => self.rows.len() >= spec.limit && key >= last.as_ref(),
            RankFunction::Rank => self.rows.len() >= spec.limit && key > last.as_ref(),
            RankFunction::DenseRank => {
                key > last.as_ref() && {
                    let mut distinct = 0;
                    let mut previous: Option<&[u8]> = None;
                    for (k, _) in self.rows.keys() {
                        if previous != Some(k.as_ref()) {
                            distinct += 1;
                            previous = Some(k);
                        }
                    }
                    distinct >= spec.limit
                }
            }
        }
    }
}

/// A partition's rows numbered N or less before a batch: (row, number).
type Ranked = Vec<(OwnedRow, u64)>;

pub struct TopNOperator {
    info: OperatorInfo,
    /// The input's schema (with `__op` first over a changelog).
    input_schema: SchemaRef,
    spec: TopNSpec,
    /// Converts the input's row columns (without `__op`) to and from the row format.
    rows: RowConverter,
    /// Partition keys to row format (none without PARTITION BY).
    partition_rows: Option<RowConverter>,
    /// ORDER BY values to row format, with their sort options (none without ORDER BY).
    order_rows: Option<RowConverter>,
    partitions: HashMap<Box<[u8]>, Partition>,
    /// The next row's arrival number.
    next_seq: u64,
    ttl: Option<StateTtl>,
}

/// The changes of one batch, as they leave.
#[derive(Default)]
struct Changes {
    ops: Vec<&'static str>,
    rows: Vec<OwnedRow>,
    numbers: Vec<u64>,
}

impl TopNOperator {
    pub fn try_new(
        info: OperatorInfo,
        input_schema: SchemaRef,
        spec: TopNSpec,
    ) -> EngineResult<Self> {
        let skip = usize::from(spec.updating_input);
        let rows = RowConverter::new(
            input_schema
                .fields()
                .iter()
                .skip(skip)
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let partition_rows = if spec.partition.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                spec.partition
                    .iter()
                    .map(|e| Ok(SortField::new(e.data_type(&input_schema)?)))
                    .collect::<EngineResult<_>>()?,
            )?)
        };
        let order_rows = if spec.order.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                spec.order
                    .iter()
                    .map(|o| {
                        Ok(SortField::new_with_options(
                            o.expr.data_type(&input_schema)?,
                            o.options,
                        ))
                    })
                    .collect::<EngineResult<_>>()?,
            )?)
        };
        Ok(Self {
            info,
            input_schema,
            spec,
            rows,
            partition_rows,
            order_rows,
            partitions: HashMap::new(),
            next_seq: 0,
            ttl: None,
        })
    }

    /// Partitions expire `ttl` after a row last changed them.
    pub fn with_ttl(mut self, ttl: Option<StateTtl>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Drops the partitions the TTL has passed, when a scan is due.
    fn expire(&mut self) {
        let Some(cutoff) = self.ttl.as_mut().and_then(StateTtl::due) else {
            return;
        };
        self.partitions.retain(|_, p| p.written_at > cutoff);
        if self.partitions.len() * 4 < self.partitions.capacity() {
            self.partitions.shrink_to_fit();
        }
    }

    /// The partition keys and ORDER BY keys of `batch`'s rows (row format).
    fn keys(&self, batch: &RecordBatch) -> EngineResult<(Option<Rows>, Option<Rows>)> {
        let n = batch.num_rows();
        let convert = |converter: &Option<RowConverter>,
                       exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>|
         -> EngineResult<Option<Rows>> {
            let Some(converter) = converter else {
                return Ok(None);
            };
            let columns = exprs
                .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                .collect::<EngineResult<Vec<ArrayRef>>>()?;
            Ok(Some(converter.convert_columns(&columns)?))
        };
        Ok((
            convert(&self.partition_rows, &mut self.spec.partition.iter())?,
            convert(
                &self.order_rows,
                &mut self.spec.order.iter().map(|o| &o.expr),
            )?,
        ))
    }

    /// Applies `batch` to the held rows; returns, per partition the batch touched (in the
    /// order of its first row), its key and its ranked rows before the batch.
    fn apply(&mut self, batch: &RecordBatch) -> EngineResult<Vec<(Box<[u8]>, Ranked)>> {
        let skip = usize::from(self.spec.updating_input);
        let inserts = if self.spec.updating_input {
            Some(super::changelog_inserts(batch)?)
        } else {
            None
        };
        let (partition_keys, order_keys) = self.keys(batch)?;
        let rows = self.rows.convert_columns(&batch.columns()[skip..])?;
        let mut touched: Vec<(Box<[u8]>, Ranked)> = Vec::new();
        let mut touched_index: HashSet<Box<[u8]>> = HashSet::new();
        let now = self.ttl.as_ref().map_or(0, StateTtl::now);
        let ttl = self.ttl.is_some();
        for i in 0..batch.num_rows() {
            let partition: &[u8] = partition_keys.as_ref().map_or(&[], |k| k.row(i).data());
            let order: &[u8] = order_keys.as_ref().map_or(&[], |k| k.row(i).data());
            let insert = inserts.as_ref().is_none_or(|o| o[i]);
            let held = self.partitions.get(partition);
            if insert
                && !self.spec.updating_input
                && held.is_some_and(|p| p.excludes(&self.spec, order))
            {
                continue;
            }
            if !touched_index.contains(partition) {
                let before = held.map_or_else(Vec::new, |p| {
                    p.top(&self.spec)
                        .into_iter()
                        .map(|(_, r, n)| (r.clone(), n))
                        .collect()
                });
                touched_index.insert(partition.into());
                touched.push((partition.into(), before));
            }
            let entry = self.partitions.entry(partition.into()).or_default();
            entry.written_at = now;
            if insert {
                entry.insert((order.into(), self.next_seq), rows.row(i).owned());
                self.next_seq += 1;
                if !self.spec.updating_input {
                    entry.prune(&self.spec);
                }
            } else {
                let row = rows.row(i);
                let place = entry
                    .rows
                    .range((Box::from(order), 0)..=(Box::from(order), u64::MAX))
                    .rev()
                    .find(|(_, held)| held.row() == row)
                    .map(|(place, _)| place.clone());
                match place {
                    Some(place) => entry.remove(&place),
                    // Its partition expired since: Flink drops the retraction too.
                    None if ttl => {}
                    None => {
                        return Err(EngineError::Internal(
                            "a changelog retracted a row the Top-N does not hold".to_string(),
                        ));
                    }
                }
            }
        }
        Ok(touched)
    }

    /// The changes of the touched partitions: `-` for ranked rows that left, `+` for those
    /// that entered (with their numbers when the number reaches the output).
    fn changes(&mut self, touched: Vec<(Box<[u8]>, Ranked)>) -> Changes {
        let mut changes = Changes::default();
        let number_key = |n: u64| if self.spec.rank_output { n } else { 0 };
        for (key, before) in touched {
            let after: Vec<(&OwnedRow, u64)> = self
                .partitions
                .get(&key)
                .map(|p| {
                    p.top(&self.spec)
                        .into_iter()
                        .map(|(_, r, n)| (r, n))
                        .collect()
                })
                .unwrap_or_default();
            let mut counts: HashMap<(&[u8], u64), i64> = HashMap::new();
            for (row, n) in &after {
                *counts
                    .entry((row.row().data(), number_key(*n)))
                    .or_default() += 1;
            }
            let mut removed: HashMap<(&[u8], u64), i64> = HashMap::new();
            for (row, n) in &before {
                let count = counts
                    .entry((row.row().data(), number_key(*n)))
                    .or_default();
                if *count > 0 {
                    *count -= 1;
                    *removed
                        .entry((row.row().data(), number_key(*n)))
                        .or_default() += 1;
                } else {
                    changes.ops.push("-");
                    changes.rows.push(row.clone());
                    changes.numbers.push(*n);
                }
            }
            // `removed` now counts the rows kept from before: the rest of `after` entered.
            for (row, n) in &after {
                let kept = removed
                    .entry((row.row().data(), number_key(*n)))
                    .or_default();
                if *kept > 0 {
                    *kept -= 1;
                } else {
                    changes.ops.push("+");
                    changes.rows.push((*row).clone());
                    changes.numbers.push(*n);
                }
            }
            // (The maps borrow rows of the partition until they are dropped.)
            drop((counts, removed));
            if self.partitions.get(&key).is_some_and(|p| p.rows.is_empty()) {
                self.partitions.remove(&key);
            }
        }
        changes
    }

    fn output(&self, changes: Changes, out: &mut OperatorContext) -> EngineResult<()> {
        if changes.ops.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(changes.ops))];
        columns.extend(
            self.rows
                .convert_rows(changes.rows.iter().map(|r| r.row()))?,
        );
        columns.push(Arc::new(UInt64Array::from(changes.numbers)));
        out.batch(super::conform_batch(&self.info.schema, columns)?);
        Ok(())
    }

    /// The held rows as they are snapshot: row columns only.
    fn held_rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.partitions
            .values()
            .flat_map(|p| p.rows.values().map(|r| r.row()))
    }
}

impl Operator for TopNOperator {
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
        let touched = self.apply(&batch)?;
        let changes = self.changes(touched);
        self.output(changes, out)
    }

    /// One table, `rows`: the held rows (the input's columns without `__op`), partition by
    /// partition in ORDER BY order; no batch when none is held.
    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        if self.partitions.is_empty() {
            return Ok(snapshot);
        }
        let skip = usize::from(self.spec.updating_input);
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.input_schema.fields()[skip..].to_vec(),
        ));
        let columns = self.rows.convert_rows(self.held_rows())?;
        snapshot.add(ROWS, RecordBatch::try_new(schema, columns)?)?;
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        let skip = usize::from(self.spec.updating_input);
        let expected: Vec<DataType> = self.input_schema.fields()[skip..]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        for batch in snapshot.table(ROWS) {
            let found: Vec<DataType> = batch
                .columns()
                .iter()
                .map(|c| c.data_type().clone())
                .collect();
            if found != expected {
                return Err(corrupt(format!(
                    "Top-N rows of types {found:?}, expected {expected:?}"
                )));
            }
            // Held rows are put back as the insertions they were, in the order they were
            // held (so ties keep their order); nothing is emitted.
            let mut columns = batch.columns().to_vec();
            if self.spec.updating_input {
                columns.insert(
                    0,
                    Arc::new(StringArray::from(vec!["+"; batch.num_rows()])) as ArrayRef,
                );
            }
            let input = RecordBatch::try_new(Arc::clone(&self.input_schema), columns)
                .map_err(|e| corrupt(format!("Top-N rows that do not fit the input: {e}")))?;
            let before = self.held_rows().count();
            self.apply(&input)?;
            if self.held_rows().count() != before + batch.num_rows() {
                return Err(corrupt("Top-N rows beyond its limit"));
            }
        }
        Ok(())
    }

    fn state_usage(&self) -> Vec<StateUsage> {
        vec![StateUsage {
            table: ROWS,
            rows: self.partitions.values().map(|p| p.rows.len()).sum(),
            bytes: self.partitions.iter().map(|(k, p)| k.len() + p.bytes).sum(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::operators::checkpoint_harness::{
        Lcg, Step, check_every_cut_forwarding, restore_declared, rows,
    };

    /// (k, v), led by `__op` when `updating`.
    fn input_schema(updating: bool) -> SchemaRef {
        let mut fields = Vec::new();
        if updating {
            fields.push(Field::new("__op", DataType::Utf8, false));
        }
        fields.push(Field::new("k", DataType::Int64, false));
        fields.push(Field::new("v", DataType::Int64, true));
        Arc::new(Schema::new(fields))
    }

    fn batch(rows: &[(i64, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(false),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn changes(rows: &[(&str, i64, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(true),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// Top `limit` by v DESC (NULLs last) [per k].
    fn operator(
        function: RankFunction,
        limit: usize,
        partitioned: bool,
        rank_output: bool,
        updating_input: bool,
    ) -> TopNOperator {
        let input = input_schema(updating_input);
        let skip = usize::from(updating_input);
        let mut fields = vec![Field::new("__op", DataType::Utf8, false)];
        fields.extend(input.fields()[skip..].iter().map(|f| f.as_ref().clone()));
        fields.push(Field::new("rn", DataType::UInt64, false));
        TopNOperator::try_new(
            OperatorInfo {
                name: "TopN".to_string(),
                schema: Arc::new(Schema::new(fields)),
            },
            input,
            TopNSpec {
                partition: if partitioned {
                    vec![Arc::new(Column::new("k", skip))]
                } else {
                    vec![]
                },
                order: vec![PhysicalSortExpr::new(
                    Arc::new(Column::new("v", skip + 1)),
                    SortOptions {
                        descending: true,
                        nulls_first: false,
                    },
                )],
                function,
                limit,
                rank_output,
                updating_input,
            },
        )
        .unwrap()
    }

    #[test]
    fn rows_entering_the_top_push_others_out_and_renumber_them() {
        let mut op = operator(RankFunction::RowNumber, 2, true, true, false);
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            batch(&[(1, Some(10)), (1, Some(30)), (2, Some(5))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["+ 1 30 1", "+ 1 10 2", "+ 2 5 1"]);
        // 20 takes second place from 10.
        op.on_batch(0, batch(&[(1, Some(20))]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["- 1 10 2", "+ 1 20 2"]);
        // 40 comes first: 30 moves to second place, 20 leaves.
        op.on_batch(0, batch(&[(1, Some(40))]), &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 1 30 1", "- 1 20 2", "+ 1 40 1", "+ 1 30 2"]
        );
        // Below the top: nothing, and nothing is held for it.
        op.on_batch(0, batch(&[(1, Some(1)), (1, None)]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
        assert_eq!(op.state_usage()[0].rows, 3);
        // Several changes to one partition in a batch are one net change.
        op.on_batch(0, batch(&[(1, Some(50)), (1, Some(45))]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 1 40 1", "- 1 30 2", "+ 1 50 1", "+ 1 45 2"]
        );
    }

    #[test]
    fn without_the_number_only_rows_entering_or_leaving_are_emitted() {
        let mut op = operator(RankFunction::RowNumber, 2, true, false, false);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, Some(10)), (1, Some(30))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["+ 1 30 1", "+ 1 10 2"]);
        // 40 enters and 10 leaves; 30's move to second place is not emitted.
        op.on_batch(0, batch(&[(1, Some(40))]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["- 1 10 2", "+ 1 40 1"]);
    }

    #[test]
    fn rank_and_dense_rank_keep_every_tie_within_n() {
        let mut op = operator(RankFunction::Rank, 2, false, true, false);
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            batch(&[(1, Some(10)), (2, Some(10)), (3, Some(5))]),
            &mut out,
        )
        .unwrap();
        // 10, 10 are both first; 5 is third.
        assert_eq!(rows(&mut out), ["+ 1 10 1", "+ 2 10 1"]);
        op.on_batch(0, batch(&[(4, Some(20))]), &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 1 10 1", "- 2 10 1", "+ 4 20 1", "+ 1 10 2", "+ 2 10 2"]
        );
        // A third 10 ties for second place.
        op.on_batch(0, batch(&[(5, Some(10))]), &mut out).unwrap();
        assert_eq!(rows(&mut out), ["+ 5 10 2"]);

        let mut op = operator(RankFunction::DenseRank, 2, false, true, false);
        op.on_batch(
            0,
            batch(&[(1, Some(10)), (2, Some(10)), (3, Some(5)), (4, Some(1))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["+ 1 10 1", "+ 2 10 1", "+ 3 5 2"]);
        op.on_batch(0, batch(&[(5, Some(5)), (6, Some(3))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["+ 5 5 2"]);
        assert_eq!(op.state_usage()[0].rows, 4);
    }

    #[test]
    fn a_retraction_pulls_the_next_row_in() {
        let mut op = operator(RankFunction::RowNumber, 2, true, true, true);
        let mut out = OperatorContext::default();
        op.on_batch(
            0,
            changes(&[("+", 1, Some(10)), ("+", 1, Some(20)), ("+", 1, Some(30))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["+ 1 30 1", "+ 1 20 2"]);
        // Every row is held: 10 comes back when 30 leaves.
        assert_eq!(op.state_usage()[0].rows, 3);
        op.on_batch(0, changes(&[("-", 1, Some(30))]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&mut out),
            ["- 1 30 1", "- 1 20 2", "+ 1 20 1", "+ 1 10 2"]
        );
        // An update (`-` then `+`) of the second row replaces it in place.
        op.on_batch(
            0,
            changes(&[("-", 1, Some(10)), ("+", 1, Some(15))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["- 1 10 2", "+ 1 15 2"]);
        // The last rows leave: the partition is freed.
        op.on_batch(
            0,
            changes(&[("-", 1, Some(20)), ("-", 1, Some(15))]),
            &mut out,
        )
        .unwrap();
        assert_eq!(rows(&mut out), ["- 1 20 1", "- 1 15 2"]);
        assert_eq!(op.state_usage()[0].rows, 0);
        // A retraction of a row never held is a broken changelog.
        assert!(
            op.on_batch(0, changes(&[("-", 1, Some(7))]), &mut out)
                .is_err()
        );
    }

    fn sequence(seed: u64, updating: bool) -> Vec<Step> {
        let mut rng = Lcg(seed);
        let mut held: Vec<(i64, Option<i64>)> = Vec::new();
        let mut steps = Vec::new();
        for w in 0..30 {
            if rng.next(4) == 0 {
                steps.push(Step::Watermark(w));
                continue;
            }
            let mut rows = Vec::new();
            for _ in 0..1 + rng.next(5) {
                if updating && !held.is_empty() && rng.next(3) == 0 {
                    let (k, v) = held.swap_remove(rng.next(held.len() as u64) as usize);
                    rows.push(("-", k, v));
                } else {
                    let row = (
                        rng.next(3) as i64,
                        (rng.next(8) != 0).then(|| rng.next(6) as i64),
                    );
                    held.push(row);
                    rows.push(("+", row.0, row.1));
                }
            }
            steps.push(Step::Batch(if updating {
                changes(&rows)
            } else {
                batch(&rows.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>())
            }));
        }
        steps.push(Step::End);
        steps
    }

    #[test]
    fn restores_at_every_cut_with_the_same_changelog() {
        let cases = [
            (RankFunction::RowNumber, 2, true, true, false, 1),
            (RankFunction::RowNumber, 3, false, false, false, 2),
            (RankFunction::Rank, 2, true, true, false, 3),
            (RankFunction::DenseRank, 2, false, true, false, 4),
            (RankFunction::RowNumber, 2, true, true, true, 5),
            (RankFunction::Rank, 1, false, false, true, 6),
            (RankFunction::DenseRank, 2, true, true, true, 7),
        ];
        for (function, limit, partitioned, rank_output, updating, seed) in cases {
            let make = || {
                Box::new(operator(
                    function,
                    limit,
                    partitioned,
                    rank_output,
                    updating,
                )) as Box<dyn Operator>
            };
            let tables = state_tables(&["k".to_string()], updating, false);
            let (output, _) = check_every_cut_forwarding(&make, &tables, &sequence(seed, updating));
            let text = output.join("\n");
            assert!(text.contains("| - "), "{function} retracts rows");
        }
    }

    #[test]
    fn a_snapshot_of_another_shape_is_refused() {
        let mut op = operator(RankFunction::RowNumber, 2, true, true, false);
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[(1, Some(1)), (2, None)]), &mut out)
            .unwrap();
        let good = op.snapshot(1).unwrap();
        let fresh = || operator(RankFunction::RowNumber, 2, true, true, false);
        // Rows of other columns.
        let mut wrong = StateSnapshot::new();
        for b in good.table(ROWS) {
            wrong.add(ROWS, b.project(&[0]).unwrap()).unwrap();
        }
        assert!(fresh().restore(wrong).is_err());
        // More rows of a partition than its top holds.
        let mut more = StateSnapshot::new();
        more.add(ROWS, batch(&[(1, Some(1)), (1, Some(2)), (1, Some(3))]))
            .unwrap();
        assert!(fresh().restore(more).is_err());
        // Another operator's table.
        let mut foreign = good.clone();
        foreign.add("groups", batch(&[(1, None)])).unwrap();
        let tables = state_tables(&["k".to_string()], false, false);
        assert!(restore_declared(&mut fresh(), &tables, foreign).is_err());
        fresh().restore(good).unwrap();
    }

    #[test]
    fn with_a_ttl_partitions_expire_and_retractions_of_their_rows_are_ignored() {
        use std::sync::atomic::{AtomicI64, Ordering};
        let now = Arc::new(AtomicI64::new(0));
        let clock = Arc::clone(&now);
        let mut op =
            operator(RankFunction::RowNumber, 1, true, true, true).with_ttl(Some(StateTtl::new(
                std::time::Duration::from_secs(3600),
                Arc::new(move || clock.load(Ordering::Relaxed)),
            )));
        let mut out = OperatorContext::default();
        let rows_in: Vec<(&str, i64, Option<i64>)> =
            (0..1_000_000).map(|k| ("+", k, Some(k))).collect();
        op.on_batch(0, changes(&rows_in), &mut out).unwrap();
        out.drain().count();
        assert_eq!(op.state_usage()[0].rows, 1_000_000);
        now.store(1_800_000, Ordering::Relaxed);
        op.on_batch(0, changes(&[("+", 7, Some(70))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["- 7 7 1", "+ 7 70 1"]);
        now.store(3_600_000, Ordering::Relaxed);
        // The retraction of an expired partition's row is dropped; key 7 is still held.
        op.on_batch(0, changes(&[("-", 5, Some(5))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), Vec::<String>::new());
        assert_eq!(op.state_usage()[0].rows, 2, "key 7's rows only");
        op.on_batch(0, changes(&[("+", 5, Some(1))]), &mut out)
            .unwrap();
        assert_eq!(rows(&mut out), ["+ 5 1 1"], "a new partition");
    }
}
