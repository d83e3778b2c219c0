//! The MATCH_RECOGNIZE operator: row pattern matching per partition, in event-time order.
//!
//! Rows wait in their arrival batches until the watermark passes them (a row at or behind the
//! watermark on arrival is late: dropped and counted). When the watermark advances, the rows it
//! passed are released: grouped by partition and sorted by event time, the further ORDER BY
//! keys and arrival into one shared [`Segment`], their channel arguments are computed once,
//! and every DEFINE condition that depends only on the row and the rows around it
//! (`B.price < PREV(B.price)`) is evaluated for all of them at once as a boolean column (one
//! that reads `NEXT` rows, once those rows are released). Each partition's
//! [`PartitionMatcher`] then consumes its new rows; conditions that depend on the labelling
//! (`LAST(A.x)`, `SUM(A.x)`) are evaluated per candidate. Matches are turned into output rows with their measures, and rows no pending
//! match or navigation can reach are freed. At the end of the input every partition ends:
//! patterns are finished as at the end of a batch query.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{
    cast, concat, concat_batches, filter_record_batch, interleave, take,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;

use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;

use crate::error::{EngineError, EngineResult};
use crate::operators::match_eval::{
    ChannelKind, CompiledExpr, ExprCompiler, PartitionRows, Point, Segment, as_condition,
    copy_segment, gather_arg, gather_rows,
};
use crate::operators::pattern_matcher::{Conditions, Found, History, Match, PartitionMatcher};
use crate::operators::{Operator, OperatorInfo, Output, conform_batch};
use crate::plan::MatchRecognizeStreamNode;
use crate::plan::pattern::VarId;
use crate::plan::window::unit_nanos;
use crate::runtime::message::EventTime;
use crate::sql::match_recognize::{EmptyMatches, MatchOutput, MatchSpec, RowsMode};
use crate::state::StateTableInfo;

/// Everything the operator needs, compiled against the input schema.
pub struct MatchRecognizeSpec {
    pub spec: Arc<MatchSpec>,
    pub input_schema: SchemaRef,
    /// PARTITION BY columns, then the ORDER BY keys (the time column first).
    pub partition_fields: Vec<SortField>,
    pub order: Vec<(Arc<dyn PhysicalExpr>, SortField)>,
    /// Argument expressions of value channels, over the input.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub defines: Vec<Option<CompiledExpr>>,
    pub measures: Vec<CompiledExpr>,
    pub time_unit_ns: i64,
    /// The time column has no watermark: match only at the end of the input.
    pub no_watermark: bool,
}

/// Rows waiting for the watermark: a batch as it arrived, with its event times.
struct PendingBatch {
    batch: RecordBatch,
    times: Vec<i64>,
    max_time: i64,
    min_time: i64,
}

/// What one partition's matcher found, by partition id.
type PartitionFound = (usize, Vec<Found>);

impl MatchRecognizeSpec {
    /// The clause's keys, arguments and expressions, compiled against its input.
    pub fn try_new(m: &MatchRecognizeStreamNode, state: &SessionState) -> EngineResult<Self> {
        let input_schema = m.input.schema();
        let input_schema = input_schema.as_ref();
        let spec = &m.spec;
        let arrow_schema = Arc::new(input_schema.as_arrow().clone());
        let partition_fields = spec
            .partition_by
            .iter()
            .map(|i| SortField::new(input_schema.field(*i).data_type().clone()))
            .collect();
        let time_type = input_schema.field(spec.time).data_type().clone();
        let time_unit_ns = match &time_type {
            DataType::Timestamp(unit, _) => unit_nanos(*unit),
            other => {
                return Err(EngineError::Internal(format!(
                    "MATCH_RECOGNIZE ordered by a {other} column"
                )));
            }
        };
        let time_column = Expr::Column(datafusion::common::Column::from(
            input_schema.qualified_field(spec.time),
        ));
        let mut order = vec![(
            state.create_physical_expr(time_column, input_schema)?,
            SortField::new(time_type),
        )];
        for o in &spec.order_by {
            let e = state.create_physical_expr(o.expr.clone(), input_schema)?;
            let t = e.data_type(&arrow_schema)?;
            order.push((
                e,
                SortField::new_with_options(
                    t,
                    datafusion::arrow::compute::SortOptions {
                        descending: !o.asc,
                        nulls_first: o.nulls_first,
                    },
                ),
            ));
        }
        let mut compiler = ExprCompiler::new(state, input_schema);
        let defines = spec
            .defines
            .iter()
            .map(|d| d.as_ref().map(|d| compiler.compile(d)).transpose())
            .collect::<EngineResult<Vec<_>>>()?;
        let measures = spec
            .measures
            .iter()
            .map(|(_, m)| compiler.compile(m))
            .collect::<EngineResult<Vec<_>>>()?;
        Ok(MatchRecognizeSpec {
            spec: Arc::clone(spec),
            input_schema: arrow_schema,
            partition_fields,
            order,
            args: compiler.args.into_iter().map(|(_, e)| e).collect(),
            defines,
            measures,
            time_unit_ns,
            no_watermark: m.no_watermark,
        })
    }
}

struct Partition {
    rows: PartitionRows,
    matcher: PartitionMatcher,
}

pub struct MatchRecognizeOperator {
    info: OperatorInfo,
    s: MatchRecognizeSpec,
    /// Per variable: its DEFINE is evaluated per batch (bits in each segment, or, for
    /// `ahead` ones, in the partition once the rows it reads ahead are released).
    row_local: Vec<bool>,
    ahead: Vec<bool>,
    lookback: usize,
    lookahead: usize,
    partition_converter: RowConverter,
    order_converter: RowConverter,
    pending: Vec<PendingBatch>,
    /// Partitions by first appearance; `partition_ids` finds them by key.
    partitions: Vec<Partition>,
    partition_ids: HashMap<Box<[u8]>, usize>,
    watermark: Option<EventTime>,
    late_rows: Arc<AtomicU64>,
    /// Releases so far (each makes one segment), and the last one that compacted.
    releases: u64,
    compacted: u64,
}

/// Every this many releases, the rows partitions still hold from segments older than this are
/// compacted.
const COMPACT_EVERY: u64 = 64;

impl MatchRecognizeOperator {
    pub fn try_new(
        info: OperatorInfo,
        s: MatchRecognizeSpec,
        late_rows: Arc<AtomicU64>,
    ) -> EngineResult<Self> {
        let spec = &s.spec;
        let row_local: Vec<bool> = spec
            .defines
            .iter()
            .enumerate()
            .map(|(v, d)| d.as_ref().is_none_or(|d| d.is_row_local(v as VarId)))
            .collect();
        let ahead = spec
            .defines
            .iter()
            .enumerate()
            .map(|(v, d)| d.as_ref().is_some_and(|d| row_local[v] && d.reach().1 > 0))
            .collect::<Vec<_>>();
        // A look-ahead bit per variable fits in a u64; beyond that, evaluate per candidate.
        let (row_local, ahead): (Vec<bool>, Vec<bool>) = row_local
            .into_iter()
            .zip(ahead)
            .enumerate()
            .map(|(v, (local, ahead))| (local && !(ahead && v >= 64), ahead && v < 64))
            .unzip();
        let (mut lookback, mut lookahead) = (0, 0);
        for e in spec
            .defines
            .iter()
            .flatten()
            .chain(spec.measures.iter().map(|(_, m)| m))
        {
            let (back, ahead) = e.reach();
            lookback = lookback.max(back);
            lookahead = lookahead.max(ahead);
        }
        let partition_converter = RowConverter::new(if s.partition_fields.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            s.partition_fields.clone()
        })?;
        let order_converter = RowConverter::new(s.order.iter().map(|(_, f)| f.clone()).collect())?;
        Ok(Self {
            info,
            row_local,
            ahead,
            lookback,
            lookahead,
            partition_converter,
            order_converter,
            pending: Vec::new(),
            partitions: Vec::new(),
            partition_ids: HashMap::new(),
            watermark: None,
            late_rows,
            releases: 0,
            compacted: 0,
            s,
        })
    }

    fn times(&self, batch: &RecordBatch) -> EngineResult<Vec<Option<i64>>> {
        let column = cast(batch.column(self.s.spec.time), &DataType::Int64)?;
        let unit = self.s.time_unit_ns;
        Ok(column
            .as_primitive::<Int64Type>()
            .iter()
            .map(|t| t.and_then(|t| t.checked_mul(unit)))
            .collect())
    }

    /// Releases the rows at or before `watermark` and matches them; `ended`: no more rows
    /// will come, every partition ends.
    fn release(&mut self, watermark: EventTime, ended: bool, out: &mut Output) -> EngineResult<()> {
        let mut released = Vec::new();
        let mut released_times: Vec<i64> = Vec::new();
        let mut kept = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            if p.max_time <= watermark {
                released_times.extend_from_slice(&p.times);
                released.push(p.batch);
            } else if p.min_time > watermark {
                kept.push(p);
            } else {
                let mask: BooleanArray = p.times.iter().map(|t| Some(*t <= watermark)).collect();
                released.push(filter_record_batch(&p.batch, &mask)?);
                released_times.extend(p.times.iter().filter(|t| **t <= watermark));
                let rest: Vec<i64> = p.times.iter().copied().filter(|t| *t > watermark).collect();
                let not = datafusion::arrow::compute::not(&mask)?;
                kept.push(PendingBatch {
                    batch: filter_record_batch(&p.batch, &not)?,
                    max_time: p.max_time,
                    min_time: rest.iter().copied().min().unwrap_or(p.max_time),
                    times: rest,
                });
            }
        }
        self.pending = kept;
        let mut touched: Vec<usize> = Vec::new();
        if !released.is_empty() {
            let batch = concat_batches(&self.s.input_schema, &released)?;
            touched = self.append(batch, released_times)?;
        }
        let ids: Vec<usize> = if ended {
            (0..self.partitions.len()).collect()
        } else {
            touched
        };
        self.ahead_bits(&ids, ended)?;
        let mut found: Vec<PartitionFound> = Vec::new();
        for &id in &ids {
            let f = self.advance(id, ended)?;
            if !f.is_empty() {
                found.push((id, f));
            }
        }
        if let Some(within) = self.s.spec.within
            && !ended
        {
            found.extend(self.expire(watermark, within)?);
        }
        if !found.is_empty() {
            let batch = self.output(&found)?;
            out.batch(batch);
        }
        self.trim(ids.iter().chain(found.iter().map(|(id, _)| id)));
        if self.releases >= self.compacted + COMPACT_EVERY && !ended {
            self.compact(self.releases - COMPACT_EVERY)?;
            self.compacted = self.releases;
        }
        Ok(())
    }

    /// Sorts released rows into partitions and appends them; returns the partitions touched.
    /// The id of the partition with key `key`, created if new.
    fn partition_id(&mut self, key: &[u8]) -> usize {
        if let Some(&id) = self.partition_ids.get(key) {
            return id;
        }
        let id = self.partitions.len();
        self.partitions.push(Partition {
            rows: PartitionRows::default(),
            matcher: PartitionMatcher::new(
                Arc::clone(&self.s.spec.program),
                self.s.spec.skip.clone(),
                self.row_local.iter().all(|r| *r),
                matches!(self.s.spec.rows, RowsMode::All(EmptyMatches::WithUnmatched)),
            ),
        });
        self.partition_ids.insert(key.into(), id);
        id
    }

    fn append(&mut self, batch: RecordBatch, times: Vec<i64>) -> EngineResult<Vec<usize>> {
        let n = batch.num_rows();
        let partition_columns: Vec<ArrayRef> = if self.s.spec.partition_by.is_empty() {
            vec![Arc::new(BooleanArray::from(vec![true; n]))]
        } else {
            self.s
                .spec
                .partition_by
                .iter()
                .map(|i| Arc::clone(batch.column(*i)))
                .collect()
        };
        let partition_rows = self
            .partition_converter
            .convert_columns(&partition_columns)?;
        // Each row's partition (created on first sight), then the rows grouped by partition in
        // order of first arrival, each group in arrival order (a counting sort).
        let mut row_partition: Vec<u32> = Vec::with_capacity(n);
        let mut groups: HashMap<usize, u32> = HashMap::new();
        let mut group_partition: Vec<usize> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for i in 0..n {
            let id = self.partition_id(partition_rows.row(i).data());
            let g = *groups.entry(id).or_insert_with(|| {
                group_partition.push(id);
                counts.push(0);
                (counts.len() - 1) as u32
            });
            counts[g as usize] += 1;
            row_partition.push(g);
        }
        let mut starts = Vec::with_capacity(counts.len());
        let mut next = 0;
        for c in &counts {
            starts.push(next);
            next += c;
        }
        let mut fill = starts.clone();
        let mut indices: Vec<u32> = vec![0; n];
        for (i, g) in row_partition.iter().enumerate() {
            indices[fill[*g as usize]] = i as u32;
            fill[*g as usize] += 1;
        }
        // Each group in ORDER BY order, ties in arrival order (stable sorts).
        let order_rows = if self.s.order.len() == 1 {
            None
        } else {
            let order_columns = self
                .s
                .order
                .iter()
                .map(|(e, _)| Ok(e.evaluate(&batch)?.into_array(n)?))
                .collect::<EngineResult<Vec<_>>>()?;
            Some(self.order_converter.convert_columns(&order_columns)?)
        };
        let mut runs: Vec<(usize, usize, usize)> = Vec::with_capacity(counts.len());
        for (g, (&start, &len)) in starts.iter().zip(&counts).enumerate() {
            let group = &mut indices[start..start + len];
            match &order_rows {
                None => group.sort_by_key(|&i| times[i as usize]),
                Some(rows) => {
                    group.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)))
                }
            }
            runs.push((group_partition[g], start, len));
        }
        let times: Vec<i64> = indices.iter().map(|&i| times[i as usize]).collect();
        let index_array = UInt32Array::from(indices);
        let columns = batch
            .columns()
            .iter()
            .map(|c| take(c, &index_array, None))
            .collect::<Result<Vec<_>, _>>()?;
        let sorted = RecordBatch::try_new(Arc::clone(&self.s.input_schema), columns)?;
        let args = self
            .s
            .args
            .iter()
            .map(|e| Ok(e.evaluate(&sorted)?.into_array(n)?))
            .collect::<EngineResult<Vec<_>>>()?;
        let bits = self.row_local_bits(&runs, &args, n)?;

        self.releases += 1;
        let segment = Arc::new(Segment {
            batch: sorted,
            args,
            bits,
            times,
            release: self.releases,
        });
        let mut touched = Vec::with_capacity(runs.len());
        for (id, start, len) in runs {
            self.partitions[id].rows.push(&segment, start, len);
            touched.push(id);
        }
        Ok(touched)
    }

    /// Row-local DEFINE conditions over the released rows (sorted, in runs per partition),
    /// with PREV reaching back into each partition's earlier rows.
    fn row_local_bits(
        &self,
        runs: &[(usize, usize, usize)],
        args: &[ArrayRef],
        n: usize,
    ) -> EngineResult<Vec<Option<BooleanArray>>> {
        let mut bits = Vec::new();
        for (v, define) in self.s.defines.iter().enumerate() {
            let Some(define) = define
                .as_ref()
                .filter(|_| self.row_local[v] && !self.ahead[v])
            else {
                bits.push(None);
                continue;
            };
            let mut columns = Vec::with_capacity(define.channels.len());
            for (channel, field) in define.channels.iter().zip(define.schema.fields()) {
                let crate::operators::match_eval::ChannelKind::Value { nav, arg, .. } =
                    &channel.kind
                else {
                    return Err(EngineError::Internal("row-local channel".to_string()));
                };
                let back = (-nav.physical).max(0) as usize;
                let column = if back == 0 {
                    Arc::clone(&args[*arg])
                } else {
                    self.shifted(runs, &args[*arg], *arg, back, field.data_type(), n)?
                };
                columns.push(column);
            }
            bits.push(Some(define.evaluate_columns(columns, n)?));
        }
        Ok(bits)
    }

    /// `column` shifted `back` rows within each run, the first rows of a run reading the
    /// partition's earlier rows (NULL before the partition's first row).
    fn shifted(
        &self,
        runs: &[(usize, usize, usize)],
        column: &ArrayRef,
        arg: usize,
        back: usize,
        data_type: &DataType,
        n: usize,
    ) -> EngineResult<ArrayRef> {
        let mut history = Vec::new();
        let mut indices: Vec<Option<u32>> = Vec::with_capacity(n);
        for &(id, start, len) in runs {
            let rows = &self.partitions[id].rows;
            let earlier = rows.history(rows.len(), back);
            // Position of the run's row 0 - back in `history` (padded with NULLs).
            let pad = back - earlier.len();
            let base = history.len();
            for _ in 0..pad {
                history.push(None);
            }
            history.extend(earlier.into_iter().map(Some));
            for j in 0..len {
                if j >= back {
                    indices.push(Some((start + j - back) as u32));
                } else {
                    indices.push(Some((n + base + j) as u32));
                }
            }
        }
        let history = gather_arg(&history, arg, data_type)?;
        let all = concat(&[column.as_ref(), history.as_ref()])?;
        Ok(take(&all, &UInt32Array::from(indices), None)?)
    }

    /// Row-local conditions that read ahead (`NEXT`), for the rows of partitions `ids` whose
    /// next rows are now released (all rows when the input `ended`), evaluated at once.
    fn ahead_bits(&mut self, ids: &[usize], ended: bool) -> EngineResult<()> {
        if !self.ahead.iter().any(|a| *a) {
            return Ok(());
        }
        let mut todo: Vec<(usize, usize)> = Vec::new();
        for &id in ids {
            let rows = &self.partitions[id].rows;
            let to = if ended {
                rows.len()
            } else {
                rows.len().saturating_sub(self.lookahead)
            };
            todo.extend((rows.ahead_end()..to).map(|r| (id, r)));
        }
        if todo.is_empty() {
            return Ok(());
        }
        let mut masks = vec![0u64; todo.len()];
        for (v, define) in self.s.defines.iter().enumerate() {
            let Some(define) = define.as_ref().filter(|_| self.ahead[v]) else {
                continue;
            };
            let mut columns = Vec::with_capacity(define.channels.len());
            for (channel, field) in define.channels.iter().zip(define.schema.fields()) {
                let ChannelKind::Value { nav, arg, .. } = &channel.kind else {
                    return Err(EngineError::Internal("row-local channel".to_string()));
                };
                let refs: Vec<_> = todo
                    .iter()
                    .map(|&(id, r)| {
                        let target = r as i64 + nav.physical;
                        (target >= 0)
                            .then(|| self.partitions[id].rows.locate(target as usize))
                            .flatten()
                    })
                    .collect();
                columns.push(gather_arg(&refs, *arg, field.data_type())?);
            }
            let holds = define.evaluate_columns(columns, todo.len())?;
            for (i, mask) in masks.iter_mut().enumerate() {
                if holds.value(i) {
                    *mask |= 1 << v;
                }
            }
        }
        for ((id, _), mask) in todo.into_iter().zip(masks) {
            self.partitions[id].rows.push_ahead(mask);
        }
        Ok(())
    }

    /// Runs one partition's matcher over its available rows.
    fn advance(&mut self, id: usize, ended: bool) -> EngineResult<Vec<Found>> {
        let Some(partition) = self.partitions.get_mut(id) else {
            return Ok(Vec::new());
        };
        let available = if ended {
            partition.rows.len()
        } else {
            partition.rows.len().saturating_sub(self.lookahead)
        };
        let mut cond = Oracle {
            s: &self.s,
            row_local: &self.row_local,
            ahead: &self.ahead,
            rows: &partition.rows,
        };
        let mut found = Vec::new();
        partition
            .matcher
            .advance(available, ended, &mut cond, &mut found)?;
        Ok(found)
    }

    /// Gives up pending attempts that no future row can extend within WITHIN.
    fn expire(&mut self, watermark: EventTime, within: i64) -> EngineResult<Vec<PartitionFound>> {
        let mut expired = Vec::new();
        let next_time = watermark.saturating_add(self.s.time_unit_ns.max(1));
        for (id, partition) in self.partitions.iter_mut().enumerate() {
            let Some(start) = partition.matcher.pending_start() else {
                continue;
            };
            if partition.matcher.waiting_row() < Some(partition.rows.len()) {
                continue;
            }
            let Some(start_time) = partition.rows.time(start) else {
                continue;
            };
            if next_time.saturating_sub(start_time) < within {
                continue;
            }
            let mut found = Vec::new();
            partition.matcher.expire(&mut found)?;
            let mut cond = Oracle {
                s: &self.s,
                row_local: &self.row_local,
                ahead: &self.ahead,
                rows: &partition.rows,
            };
            let available = partition.rows.len().saturating_sub(self.lookahead);
            partition
                .matcher
                .advance(available, false, &mut cond, &mut found)?;
            if !found.is_empty() {
                expired.push((id, found));
            }
        }
        Ok(expired)
    }

    /// Copies the rows partitions still hold from segments made before release `before` that
    /// are mostly freed (under a quarter of their rows held) into one new segment, so that
    /// partitions that stay quiet with an attempt open hold only their rows, not the releases
    /// they came in.
    fn compact(&mut self, before: u64) -> EngineResult<()> {
        let mut held: HashMap<*const Segment, (usize, usize)> = HashMap::new();
        for p in &self.partitions {
            for (segment, _, len) in p.rows.runs() {
                if segment.release < before {
                    let entry = held
                        .entry(Arc::as_ptr(segment))
                        .or_insert((0, segment.batch.num_rows()));
                    entry.0 += len;
                }
            }
        }
        let sparse = |segment: &Arc<Segment>| {
            held.get(&Arc::as_ptr(segment))
                .is_some_and(|(rows, total)| rows * 4 < *total)
        };
        // (partition, run, offset in the new segment) and the rows to copy.
        let mut moves: Vec<(usize, usize, usize)> = Vec::new();
        let mut refs: Vec<(&Segment, usize)> = Vec::new();
        for (id, p) in self.partitions.iter().enumerate() {
            for (k, (segment, offset, len)) in p.rows.runs().enumerate() {
                if sparse(segment) {
                    moves.push((id, k, refs.len()));
                    refs.extend((offset..offset + len).map(|i| (segment.as_ref(), i)));
                }
            }
        }
        if refs.is_empty() {
            return Ok(());
        }
        let segment = Arc::new(copy_segment(&refs, self.releases)?);
        drop(refs);
        for (id, k, offset) in moves {
            self.partitions[id].rows.rebase(k, &segment, offset);
        }
        Ok(())
    }

    /// Frees rows that no pending match or navigation can reach.
    fn trim<'k>(&mut self, ids: impl Iterator<Item = &'k usize>) {
        for &id in ids {
            let Some(partition) = self.partitions.get_mut(id) else {
                continue;
            };
            let keep = partition
                .matcher
                .first_needed_row()
                .saturating_sub(self.lookback);
            partition.rows.trim(keep);
        }
    }

    /// Output rows for the matches found.
    fn output(&self, found: &[PartitionFound]) -> EngineResult<RecordBatch> {
        let spec = &self.s.spec;
        // One entry per output row: (partition rows, input row, point index or None).
        let mut rows_out: Vec<(&PartitionRows, usize, Option<usize>)> = Vec::new();
        let mut points: Vec<Point<'_>> = Vec::new();
        for (id, items) in found {
            let Some(partition) = self.partitions.get(*id) else {
                continue;
            };
            let rows = &partition.rows;
            for item in items {
                match item {
                    Found::Unmatched(row) => rows_out.push((rows, *row, None)),
                    Found::Match(m) => self.match_rows(rows, m, &mut rows_out, &mut points),
                }
            }
        }
        let mut measures = Vec::with_capacity(spec.measures.len());
        for m in &self.s.measures {
            measures.push(m.evaluate(&points, &self.s.input_schema, &spec.variables)?);
        }
        let refs: Vec<(&Segment, usize)> = rows_out
            .iter()
            .map(|(rows, row, _)| {
                rows.locate(*row)
                    .ok_or_else(|| EngineError::Internal(format!("row {row} was freed")))
            })
            .collect::<EngineResult<_>>()?;
        let input = gather_rows(&self.s.input_schema, &refs)?;
        let mut columns = Vec::with_capacity(spec.output.len());
        for o in &spec.output {
            columns.push(match o {
                MatchOutput::Input(i) => Arc::clone(input.column(*i)),
                MatchOutput::Measure(k) => {
                    let values = &measures[*k];
                    if rows_out.iter().all(|(_, _, p)| p.is_some()) {
                        Arc::clone(values)
                    } else {
                        let null = datafusion::arrow::array::new_null_array(values.data_type(), 1);
                        let indices: Vec<(usize, usize)> = rows_out
                            .iter()
                            .map(|(_, _, p)| p.map_or((1, 0), |p| (0, p)))
                            .collect();
                        interleave(&[values.as_ref(), null.as_ref()], &indices)?
                    }
                }
            });
        }
        conform_batch(&self.info.schema, columns)
    }

    /// The output rows of one match and the points their measures are evaluated at.
    fn match_rows<'a>(
        &self,
        rows: &'a PartitionRows,
        m: &'a Match,
        rows_out: &mut Vec<(&'a PartitionRows, usize, Option<usize>)>,
        points: &mut Vec<Point<'a>>,
    ) {
        let point = |current| Point {
            rows,
            labels: &m.labels,
            start: m.start,
            current,
            number: m.number,
        };
        match self.s.spec.rows {
            RowsMode::One => {
                rows_out.push((rows, m.start, Some(points.len())));
                points.push(point(m.labels.len().checked_sub(1)));
            }
            RowsMode::All(mode) => {
                if m.labels.is_empty() {
                    if mode != EmptyMatches::Omit {
                        rows_out.push((rows, m.start, Some(points.len())));
                        points.push(point(None));
                    }
                    return;
                }
                for (j, excluded) in m.excluded.iter().enumerate() {
                    if !excluded {
                        rows_out.push((rows, m.start + j, Some(points.len())));
                        points.push(point(Some(j)));
                    }
                }
            }
        }
    }
}

/// DEFINE conditions for one partition's matcher.
struct Oracle<'a> {
    s: &'a MatchRecognizeSpec,
    row_local: &'a [bool],
    ahead: &'a [bool],
    rows: &'a PartitionRows,
}

impl Oracle<'_> {
    /// The answer for a variable without DEFINE or with a condition evaluated per batch; None
    /// for a condition that depends on the labelling.
    fn looked_up(&self, var: VarId, row: usize) -> Option<bool> {
        let v = var as usize;
        if self.s.defines[v].is_none() {
            Some(true)
        } else if self.ahead[v] {
            Some(self.rows.ahead_holds(row, var))
        } else if self.row_local[v] {
            Some(
                self.rows
                    .locate(row)
                    .and_then(|(segment, at)| segment.bits[v].as_ref().map(|b| b.value(at)))
                    .unwrap_or(false),
            )
        } else {
            None
        }
    }
}

impl Conditions for Oracle<'_> {
    fn holds(&mut self, var: VarId, row: usize, history: History<'_>) -> EngineResult<bool> {
        if self.s.spec.within.is_none()
            && let Some(holds) = self.looked_up(var, row)
        {
            return Ok(holds);
        }
        Ok(self.holds_all(row, &[(var, history)])?.first() == Some(&true))
    }

    /// Conditions evaluated per batch are looked up; the others are evaluated together, one
    /// evaluation per variable for all the threads that ask.
    fn holds_all(
        &mut self,
        row: usize,
        requests: &[(VarId, History<'_>)],
    ) -> EngineResult<Vec<bool>> {
        let mut answers = vec![false; requests.len()];
        let mut per_match: Vec<Vec<usize>> = Vec::new();
        let now = self.rows.time(row);
        for (i, (var, history)) in requests.iter().enumerate() {
            if let Some(within) = self.s.spec.within {
                let (Some(first), Some(now)) = (self.rows.time(history.start()), now) else {
                    continue;
                };
                if now.saturating_sub(first) >= within {
                    continue;
                }
            }
            match self.looked_up(*var, row) {
                Some(holds) => answers[i] = holds,
                None => {
                    let v = *var as usize;
                    if per_match.len() <= v {
                        per_match.resize(v + 1, Vec::new());
                    }
                    per_match[v].push(i);
                }
            }
        }
        for (v, asking) in per_match.iter().enumerate() {
            let Some(define) = self.s.defines[v].as_ref().filter(|_| !asking.is_empty()) else {
                continue;
            };
            let labels: Vec<Vec<VarId>> = asking
                .iter()
                .map(|&i| {
                    let mut labels = requests[i].1.labels();
                    labels.push(v as VarId);
                    labels
                })
                .collect();
            let points: Vec<Point<'_>> = asking
                .iter()
                .zip(&labels)
                .map(|(&i, labels)| Point {
                    rows: self.rows,
                    labels,
                    start: requests[i].1.start(),
                    current: Some(labels.len() - 1),
                    number: 0,
                })
                .collect();
            let result = define.evaluate(&points, &self.s.input_schema, &self.s.spec.variables)?;
            let result = as_condition(&result);
            for (k, &i) in asking.iter().enumerate() {
                answers[i] = result.value(k);
            }
        }
        Ok(answers)
    }
}

impl Operator for MatchRecognizeOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut Output,
    ) -> EngineResult<()> {
        let times = self.times(&batch)?;
        let watermark = self.watermark;
        let keep: BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| watermark.is_none_or(|w| t > w))))
            .collect();
        let late = batch.num_rows() - keep.true_count();
        if late > 0 {
            self.late_rows.fetch_add(late as u64, Ordering::Relaxed);
        }
        let batch = if keep.true_count() == batch.num_rows() {
            batch
        } else if keep.true_count() > 0 {
            filter_record_batch(&batch, &keep)?
        } else {
            return Ok(());
        };
        let times: Vec<i64> = times
            .into_iter()
            .zip(keep.values().iter())
            .filter_map(|(t, k)| if k { t } else { None })
            .collect();
        self.pending.push(PendingBatch {
            max_time: times.iter().copied().max().unwrap_or(EventTime::MIN),
            min_time: times.iter().copied().min().unwrap_or(EventTime::MIN),
            batch,
            times,
        });
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output) -> EngineResult<()> {
        if self.s.no_watermark {
            out.watermark(watermark);
            return Ok(());
        }
        self.watermark = Some(watermark);
        self.release(watermark, false, out)?;
        out.watermark(watermark);
        Ok(())
    }

    fn on_end(&mut self, out: &mut Output) -> EngineResult<()> {
        self.release(EventTime::MAX, true, out)
    }

    fn state_tables(&self) -> Vec<StateTableInfo> {
        // Partitions share segments: count each once (a set, as there may be many).
        let mut segments: std::collections::HashSet<*const Segment> =
            std::collections::HashSet::new();
        let mut bytes = 0;
        let mut held = 0;
        for p in &self.partitions {
            held += p.rows.held_rows();
            for segment in p.rows.segments() {
                if segments.insert(segment as *const Segment) {
                    bytes += segment.batch.get_array_memory_size();
                }
            }
        }
        vec![
            StateTableInfo {
                name: "waiting_rows",
                key: vec!["event time".to_string()],
                rows: self.pending.iter().map(|p| p.batch.num_rows()).sum(),
                bytes: self
                    .pending
                    .iter()
                    .map(|p| p.batch.get_array_memory_size())
                    .sum(),
            },
            StateTableInfo {
                name: "partition_rows",
                key: vec!["partition".to_string(), "row".to_string()],
                rows: held,
                bytes,
            },
        ]
    }
}
