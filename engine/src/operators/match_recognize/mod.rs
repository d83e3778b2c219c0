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
//! (`LAST(A.x)`, `SUM(A.x)`) are evaluated per candidate. Matches are turned into output rows
//! with their measures, and rows no pending match or navigation can reach are freed. At the
//! end of the input every partition ends: patterns are finished as at the end of a batch
//! query.
//!
//! WITHIN: an attempt's window closes at its first row outside it, or when the watermark
//! shows that no later row can fall inside (`expire`), or at the end of the input. With
//! `WITH TIMEOUTS`, an attempt that could still have grown when its window closed and found
//! no match is emitted too, as its partial match with `MATCH_STATUS()` = `'TIMED_OUT'`. The
//! partial match is rebuilt by the replay after a restore, like the rest of the attempt: it
//! adds nothing to the snapshot.
//!
//! State: the waiting rows (`waiting_rows`) and each partition's held rows
//! (`partition_rows`); the watermark frees the first, matches and AFTER MATCH SKIP the second.
//! A snapshot holds the waiting rows as they arrived; the watermark and the release, segment
//! and block counters; per partition (`partitions`), its key, how many rows it released, the
//! first row held, where its next or running attempt starts, MATCH_NUMBER() so far and the
//! rows matches covered; and the partitions' rows from the attempt's start (less the rows
//! PREV can reach back) on, as references into the segments: per partition its runs
//! (`partition_runs`: segment id, offset, length), and every segment a run refers to as a
//! shared batch named by its id (its input rows and row-local conditions).
//!
//! Checkpoints are incremental because little of this changes between two of them:
//! - Segments never change once made (compaction makes new ones), so a checkpoint writes a
//!   segment only the first time it holds it.
//! - A segment is written whole, while partitions may need only a few of its rows (the
//!   others wait for their chunk to be freed, or belong to partitions that moved on). So that
//!   a checkpoint holds about the rows a restore needs, not every segment a needed row keeps
//!   alive (in the V-shape benchmark, 4 times as many), a snapshot first frees each changed
//!   partition's rows before the attempt's start (less PREV's reach) and copies the held rows
//!   of the segments made since the last snapshot that are under half held into one new
//!   segment, as compaction does every `COMPACT_EVERY` (64) releases for older segments
//!   under a quarter held (which a later checkpoint writes, the old ones dropping out). So a
//!   checkpoint holds at most about four times the needed rows, usually much less, and a
//!   restored operator holds the segments the original held.
//! - The `partitions` and `partition_runs` tables are written in blocks of `PARTITION_BLOCK`
//!   (4096) partitions, each a shared batch: a block none of whose partitions changed (new
//!   rows, matcher moved, rows freed or moved by compaction) keeps its id, and once a
//!   checkpoint holding it completed (`Operator::checkpoint_completed`) a snapshot refers to
//!   it without building it again ([`StateSnapshot::add_shared_unchanged`]). Keys come and go
//!   in a stream, so most partitions stay as they are, and a checkpoint costs, on the
//!   operator's task and on disk, the partitions that changed and the segments made since the
//!   last one, not every partition and held row. A block refers to its runs' segments until it
//!   is rebuilt: a segment compaction freed may stay alive until the next snapshot.
//!
//! A snapshot does not hold the matcher's threads: a restore computes the rows' look-ahead
//! conditions again (the other row-local ones come with the segments, as they read earlier
//! segments' rows) and replays the running attempt over them (the matcher is deterministic),
//! emitting nothing, and refuses a snapshot whose replay does not end where the original
//! attempt was.

pub mod eval;
pub mod matcher;
pub mod pattern;
pub mod scalar;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{
    cast, concat, concat_batches, filter_record_batch, interleave, take,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashMap;
use datafusion::physical_expr::PhysicalExpr;

use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;

use crate::error::{EngineError, EngineResult};
use crate::operators::match_recognize::eval::{
    ChannelKind, CompiledExpr, ExprCompiler, PartitionRows, Point, Segment, copy_segment,
    gather_arg, gather_rows,
};
use crate::operators::match_recognize::matcher::{
    Conditions, Found, History, Match, PartitionMatcher,
};
use crate::operators::match_recognize::pattern::VarId;
use crate::operators::window::unit_nanos;
use crate::operators::{Operator, OperatorContext, OperatorInfo, conform_batch};
use crate::plan::MatchRecognizeStreamNode;
use crate::plan::match_recognize::{EmptyMatches, MatchOutput, MatchSpec, RowsMode};
use crate::runtime::message::Epoch;
use crate::runtime::message::EventTime;
use crate::state::{Freed, StateSnapshot, StateTable, StateUsage, corrupt};

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

/// What snapshots hold of one block of [`PARTITION_BLOCK`] partitions (its rows of the
/// `partitions` and `partition_runs` tables, one shared batch each).
#[derive(Default)]
struct Block {
    /// Its id in the last snapshot (None: in none yet).
    id: Option<u64>,
    /// The epoch of the snapshot that first held it under that id.
    since: Epoch,
    /// Whether a partition of it changed since the last snapshot: set by everything that
    /// changes a partition's rows or matcher ([`changed`]).
    changed: bool,
    /// The segments its runs refer to, for a snapshot that refers to it without rebuilding
    /// it (they stay alive until the block changes and a snapshot rebuilds it).
    segments: Vec<Arc<Segment>>,
}

/// Partition `id` changed: its block is snapshotted afresh.
fn changed(blocks: &mut Vec<Block>, id: usize) {
    let b = id / PARTITION_BLOCK;
    if blocks.len() <= b {
        blocks.resize_with(b + 1, Block::default);
    }
    blocks[b].changed = true;
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
    /// The last watermark received (and forwarded); one at or below it is ignored.
    forwarded: Option<EventTime>,
    /// Releases so far (each makes one segment), and the last one that compacted.
    releases: u64,
    compacted: u64,
    /// Segments made so far (released, compacted): the next one's id.
    segments: u64,
    /// The segments made before the last snapshot (ids below this), which a checkpoint may
    /// hold already.
    snapshotted: u64,
    /// The partitions' blocks, how many block ids were given out, and the last complete
    /// checkpoint the runtime told of.
    blocks: Vec<Block>,
    block_ids: u64,
    completed: Epoch,
}

/// Partitions per block of the snapshot's `partitions` and `partition_runs` tables. A block is
/// a shared batch: one whose partitions did not change since the last snapshot keeps its id
/// and is not written again, and once a checkpoint that held it is complete, a snapshot refers
/// to it without even building it. So a checkpoint costs the partitions that changed (a
/// stream's keys come and go: most partitions stay as they are), not every partition.
const PARTITION_BLOCK: usize = 4096;

/// Every this many releases, the rows partitions still hold from segments older than this are
/// compacted.
const COMPACT_EVERY: u64 = 64;

impl MatchRecognizeOperator {
    pub fn try_new(info: OperatorInfo, s: MatchRecognizeSpec) -> EngineResult<Self> {
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
            forwarded: None,
            releases: 0,
            compacted: 0,
            segments: 0,
            snapshotted: 0,
            blocks: Vec::new(),
            block_ids: 0,
            completed: 0,
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
    fn release(
        &mut self,
        watermark: EventTime,
        ended: bool,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
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

    /// The id of the partition with key `key`, created if new.
    fn partition_id(&mut self, key: &[u8]) -> usize {
        if let Some(&id) = self.partition_ids.get(key) {
            return id;
        }
        let id = self.partitions.len();
        let partition = self.new_partition(PartitionRows::default());
        self.partitions.push(partition);
        self.partition_ids.insert(key.into(), id);
        changed(&mut self.blocks, id);
        id
    }

    fn new_partition(&self, rows: PartitionRows) -> Partition {
        Partition {
            rows,
            matcher: PartitionMatcher::new(
                Arc::clone(&self.s.spec.program),
                self.s.spec.skip.clone(),
                self.row_local.iter().all(|r| *r),
                matches!(self.s.spec.rows, RowsMode::All(EmptyMatches::WithUnmatched)),
            )
            .report_timeouts(self.s.spec.timeouts),
        }
    }

    /// The partition key of each row, in the row format `partition_ids` is keyed by.
    fn partition_keys(&self, batch: &RecordBatch) -> EngineResult<Rows> {
        let columns: Vec<ArrayRef> = if self.s.spec.partition_by.is_empty() {
            vec![Arc::new(BooleanArray::from(vec![true; batch.num_rows()]))]
        } else {
            self.s
                .spec
                .partition_by
                .iter()
                .map(|i| Arc::clone(batch.column(*i)))
                .collect()
        };
        Ok(self.partition_converter.convert_columns(&columns)?)
    }

    /// Sorts released rows into partitions and appends them; returns the partitions touched.
    fn append(&mut self, batch: RecordBatch, times: Vec<i64>) -> EngineResult<Vec<usize>> {
        let n = batch.num_rows();
        let partition_rows = self.partition_keys(&batch)?;
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
        self.releases += 1;
        self.add_segment(sorted, times, runs, self.releases)
    }

    /// Appends rows sorted into runs of partitions, `(partition, offset, len)`, as one
    /// segment made by release `release`, computing their arguments and row-local conditions;
    /// returns the partitions touched.
    fn add_segment(
        &mut self,
        sorted: RecordBatch,
        times: Vec<i64>,
        runs: Vec<(usize, usize, usize)>,
        release: u64,
    ) -> EngineResult<Vec<usize>> {
        let n = sorted.num_rows();
        let args = self
            .s
            .args
            .iter()
            .map(|e| Ok(e.evaluate(&sorted)?.into_array(n)?))
            .collect::<EngineResult<Vec<_>>>()?;
        let bits = self.row_local_bits(&runs, &args, n)?;
        let id = self.segments;
        self.segments += 1;
        let segment = Arc::new(Segment {
            batch: sorted,
            args,
            bits,
            times,
            release,
            id,
        });
        let mut touched = Vec::with_capacity(runs.len());
        for (id, start, len) in runs {
            self.partitions[id].rows.push(&segment, start, len);
            changed(&mut self.blocks, id);
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
                let crate::operators::match_recognize::eval::ChannelKind::Value {
                    nav, arg, ..
                } = &channel.kind
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
        changed(&mut self.blocks, id);
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
            changed(&mut self.blocks, id);
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
        let held = self.held_per_segment(|_| true, |s| s.release < before);
        self.copy_runs(
            |_| true,
            |s| {
                held.get(&s.id)
                    .is_some_and(|rows| rows * 4 < s.batch.num_rows())
            },
        )
    }

    /// Before a snapshot: frees the rows no restore needs (each partition's rows before its
    /// attempt's start, less what PREV reaches back), then copies the rows still held of the
    /// segments no snapshot has held yet that are mostly freed (under half their rows held)
    /// into one new segment. A checkpoint writes a segment whole, once: this keeps what it
    /// writes near the rows a restore needs, as compaction does for older segments.
    ///
    /// Only the blocks of partitions that changed since the last snapshot need looking at:
    /// the others were cut then, and every row in a segment made since belongs to a partition
    /// that changed. Those blocks get new ids, the others keep theirs.
    fn prepare_snapshot(&mut self, epoch: Epoch) -> EngineResult<()> {
        if epoch <= self.completed {
            // A block first held now would count as held by a complete checkpoint.
            return Err(EngineError::Internal(format!(
                "a snapshot at epoch {epoch}, after checkpoint {} completed",
                self.completed
            )));
        }
        self.blocks.resize_with(
            self.partitions.len().div_ceil(PARTITION_BLOCK),
            Block::default,
        );
        let fresh: Vec<bool> = self
            .blocks
            .iter()
            .map(|b| b.changed || b.id.is_none())
            .collect();
        let partitions = self.partitions.len();
        for (b, _) in fresh.iter().enumerate().filter(|(_, f)| **f) {
            let range = b * PARTITION_BLOCK..partitions.min((b + 1) * PARTITION_BLOCK);
            for p in &mut self.partitions[range] {
                let first = p.matcher.first_needed_row().saturating_sub(self.lookback);
                p.rows.cut(first);
            }
        }
        let fresh_partition = |i: usize| fresh[i / PARTITION_BLOCK];
        let from = self.snapshotted;
        let held = self.held_per_segment(fresh_partition, |s| s.id >= from);
        self.copy_runs(fresh_partition, |s| {
            held.get(&s.id)
                .is_some_and(|rows| rows * 2 < s.batch.num_rows())
        })?;
        self.snapshotted = self.segments;
        // A block none of whose partitions changed keeps its id: it holds the same rows.
        for (block, fresh) in self.blocks.iter_mut().zip(fresh) {
            if fresh {
                *block = Block {
                    id: Some(self.block_ids),
                    since: epoch,
                    changed: false,
                    segments: Vec::new(),
                };
                self.block_ids += 1;
            }
        }
        Ok(())
    }

    /// How many rows the partitions `partitions` selects hold of each segment `which`
    /// selects, by segment id.
    fn held_per_segment(
        &self,
        partitions: impl Fn(usize) -> bool,
        which: impl Fn(&Segment) -> bool,
    ) -> HashMap<u64, usize> {
        let mut held: HashMap<u64, usize> = HashMap::new();
        let selected = self.partitions.iter().enumerate();
        for (_, p) in selected.filter(|(i, _)| partitions(*i)) {
            for (segment, _, len) in p.rows.runs() {
                if which(segment) {
                    *held.entry(segment.id).or_default() += len;
                }
            }
        }
        held
    }

    /// Copies the rows the partitions `partitions` selects hold of the segments `sparse`
    /// selects into one new segment and points their runs at it, so the old segments can be
    /// freed.
    fn copy_runs(
        &mut self,
        partitions: impl Fn(usize) -> bool,
        sparse: impl Fn(&Segment) -> bool,
    ) -> EngineResult<()> {
        // (partition, run, offset in the new segment) and the rows to copy.
        let mut moves: Vec<(usize, usize, usize)> = Vec::new();
        let mut refs: Vec<(&Segment, usize)> = Vec::new();
        for (id, p) in self
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| partitions(*i))
        {
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
        let id = self.segments;
        self.segments += 1;
        let segment = Arc::new(copy_segment(&refs, self.releases, id)?);
        drop(refs);
        for (id, k, offset) in moves {
            self.partitions[id].rows.rebase(k, &segment, offset);
            changed(&mut self.blocks, id);
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
            changed(&mut self.blocks, id);
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
                    Found::Match(m) => self.match_rows(rows, m, false, &mut rows_out, &mut points),
                    Found::TimedOut(m) => {
                        self.match_rows(rows, m, true, &mut rows_out, &mut points)
                    }
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

    /// The output rows of one match (or, `timed_out`, of the partial match of an attempt that
    /// timed out) and the points their measures are evaluated at.
    fn match_rows<'a>(
        &self,
        rows: &'a PartitionRows,
        m: &'a Match,
        timed_out: bool,
        rows_out: &mut Vec<(&'a PartitionRows, usize, Option<usize>)>,
        points: &mut Vec<Point<'a>>,
    ) {
        let point = |current| Point {
            rows,
            labels: &m.labels,
            start: m.start,
            current,
            number: m.number,
            timed_out,
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

/// The snapshot's tables: named values, rows waiting for the watermark (as they arrived),
/// one row per partition, the segments holding the rows partitions hold (shared batches,
/// named by segment id), and each partition's runs of rows in them (in partition order).
const META: &str = "match_meta";
const WAITING: &str = "waiting_rows";
const PARTITIONS: &str = "partitions";
const ROWS: &str = "partition_rows";
const RUNS: &str = "partition_runs";

/// Per run: its partition (index in `partitions`), its segment's id, and rows
/// `offset .. offset + len` of that segment.
const RUN_COLUMNS: [&str; 4] = ["partition", "segment", "offset", "len"];

/// How MATCH_RECOGNIZE's retained rows are freed, as the plan sees it.
pub enum RowsFreed {
    /// By the watermark: matches end or time out (WITHIN), attempts move on.
    Watermark,
    /// The pattern has an unbounded quantifier and no WITHIN: an attempt may hold its rows
    /// for ever.
    Unbounded,
    /// There is no watermark: rows wait for the end of the input.
    EndOfInput,
}

/// The state tables of MATCH_RECOGNIZE partitioned by `partition` and ordered by `time` (as
/// the plan names them).
pub fn state_tables(partition: &[String], time: &str, rows: RowsFreed) -> Vec<StateTable> {
    let freed = match rows {
        RowsFreed::Watermark => Freed::Watermark,
        RowsFreed::Unbounded => {
            Freed::Never("the pattern has an unbounded quantifier and no WITHIN")
        }
        RowsFreed::EndOfInput => Freed::EndOfInput,
    };
    let waiting = match rows {
        RowsFreed::EndOfInput => Freed::EndOfInput,
        _ => Freed::Watermark,
    };
    let mut row_key = partition.to_vec();
    row_key.push("row".to_string());
    let mut run_key = partition.to_vec();
    run_key.push("segment".to_string());
    vec![
        StateTable::fixed(META, "the watermark and counters"),
        StateTable::index(
            WAITING,
            vec![time.to_string()],
            "rows waiting for the watermark to be ordered",
            waiting,
        ),
        if partition.is_empty() {
            StateTable::fixed(PARTITIONS, "the matcher's position")
        } else {
            StateTable::new(
                PARTITIONS,
                partition.to_vec(),
                "a matcher's position per partition key",
                Freed::Never(""),
            )
        },
        StateTable::index(
            RUNS,
            run_key,
            "runs of a partition's held rows in segments",
            freed.clone(),
        ),
        StateTable::new(ROWS, row_key, "rows of open matches", freed),
    ]
}

/// Per partition, beside its key columns `key_0 ..`: rows released so far, the first row
/// held in the snapshot, where the next or running attempt starts, the row the running
/// attempt waits for (NULL: none runs), MATCH_NUMBER() so far, rows covered by matches, and
/// whether the running attempt waits only at `$` (WITHIN gave up its other threads).
const PARTITION_COLUMNS: [&str; 7] = [
    "rows",
    "first_row",
    "start",
    "attempt_row",
    "matches",
    "covered",
    "at_end_only",
];

fn as_i64(v: impl TryInto<i64>) -> EngineResult<i64> {
    v.try_into()
        .map_err(|_| EngineError::Internal("a row count beyond i64".to_string()))
}

/// A count or row number read from a snapshot: present and not negative.
fn as_index(v: Option<i64>, what: &str) -> EngineResult<usize> {
    v.and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| corrupt(format!("MATCH_RECOGNIZE state with {what} {v:?}")))
}

/// What one partition's row of the snapshot says.
struct PartitionState {
    rows: usize,
    first_row: usize,
    start: usize,
    attempt_row: Option<usize>,
    matches: u64,
    covered: usize,
    at_end_only: bool,
}

impl PartitionState {
    fn read(columns: &[&Int64Array], i: usize) -> EngineResult<Self> {
        let get = |k: usize| {
            columns
                .get(k)
                .and_then(|c| c.is_valid(i).then(|| c.value(i)))
        };
        let field = |k: usize| as_index(get(k), PARTITION_COLUMNS[k]);
        let state = PartitionState {
            rows: field(0)?,
            first_row: field(1)?,
            start: field(2)?,
            attempt_row: get(3)
                .map(|v| as_index(Some(v), "attempt_row"))
                .transpose()?,
            matches: field(4)? as u64,
            covered: field(5)?,
            at_end_only: match get(6) {
                Some(0) => false,
                Some(1) => true,
                other => return Err(corrupt(format!("at_end_only {other:?}"))),
            },
        };
        let consistent = state.first_row <= state.start
            && state.start <= state.rows
            && state.covered <= state.rows
            && state
                .attempt_row
                .is_none_or(|a| state.start <= a && a <= state.rows)
            && (!state.at_end_only || state.attempt_row.is_some());
        if consistent {
            Ok(state)
        } else {
            Err(corrupt(format!(
                "partition {i}: rows {}, first row {}, start {}, attempt at {:?}, covered {}",
                state.rows, state.first_row, state.start, state.attempt_row, state.covered
            )))
        }
    }
}

impl MatchRecognizeOperator {
    fn snapshot_state(&mut self) -> EngineResult<StateSnapshot> {
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(
            META,
            &[
                ("watermark", self.watermark),
                ("forwarded", self.forwarded),
                ("releases", Some(as_i64(self.releases)?)),
                ("compacted", Some(as_i64(self.compacted)?)),
                ("segments", Some(as_i64(self.segments)?)),
                ("blocks", Some(as_i64(self.block_ids)?)),
            ],
        )?;
        for p in &self.pending {
            snapshot.add(WAITING, p.batch.clone())?;
        }
        // A block a complete checkpoint holds is referred to, the others are built (and
        // only they need the keys).
        let build: Vec<bool> = self
            .blocks
            .iter()
            .map(|b| b.since > self.completed)
            .collect();
        let mut keys: Vec<&[u8]> = Vec::new();
        if build.iter().any(|b| *b) {
            keys = vec![&[]; self.partitions.len()];
            for (key, &id) in &self.partition_ids {
                if let Some(slot) = keys.get_mut(id) {
                    *slot = key;
                }
            }
        }
        let mut segments: std::collections::BTreeMap<u64, Arc<Segment>> = Default::default();
        let mut built = Vec::new();
        for (b, block) in self.partitions.chunks(PARTITION_BLOCK).enumerate() {
            let (Some(info), Some(&build)) = (self.blocks.get(b), build.get(b)) else {
                return Err(EngineError::Internal(format!(
                    "partition block {b} unknown"
                )));
            };
            let id = info
                .id
                .ok_or_else(|| EngineError::Internal(format!("partition block {b} has no id")))?;
            let used = if build {
                let first = b * PARTITION_BLOCK;
                let keys = keys.get(first..first + block.len()).unwrap_or_default();
                let (partitions, runs, used) = self.partition_block(first, block, keys)?;
                snapshot.add_shared(PARTITIONS, id, partitions)?;
                snapshot.add_shared(RUNS, id, runs)?;
                built.push((b, used));
                &built[built.len() - 1].1
            } else {
                snapshot.add_shared_unchanged(PARTITIONS, id)?;
                snapshot.add_shared_unchanged(RUNS, id)?;
                &info.segments
            };
            for segment in used {
                segments
                    .entry(segment.id)
                    .or_insert_with(|| Arc::clone(segment));
            }
        }
        // Segments never change: each is written once, however many checkpoints hold it.
        for (id, segment) in &segments {
            snapshot.add_shared(ROWS, *id, self.segment_rows(segment)?)?;
        }
        for (b, used) in built {
            self.blocks[b].segments = used;
        }
        Ok(snapshot)
    }

    /// The snapshot's rows of partitions `first ..` (`block`, with their keys `keys`): one
    /// row per partition, its runs, and the segments the runs refer to.
    fn partition_block(
        &self,
        first: usize,
        block: &[Partition],
        keys: &[&[u8]],
    ) -> EngineResult<(RecordBatch, RecordBatch, Vec<Arc<Segment>>)> {
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let parser = self.partition_converter.parser();
        let mut columns = self
            .partition_converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        let mut fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("key_{i}"), c.data_type().clone(), true))
            .collect();
        let mut values: Vec<Vec<Option<i64>>> = vec![Vec::new(); PARTITION_COLUMNS.len()];
        let mut runs: Vec<Vec<i64>> = vec![Vec::new(); RUN_COLUMNS.len()];
        for (id, p) in (first..).zip(block) {
            let start = p.matcher.first_needed_row();
            // The rows a condition or measure can still read: from `lookback` rows before
            // the attempt's start (more may be held, in chunks not yet freed).
            let first = p.rows.first_held().max(start.saturating_sub(self.lookback));
            let mut held = 0;
            for (segment, offset, len) in p.rows.runs_from(first) {
                if !segments.iter().rev().any(|s| s.id == segment.id) {
                    segments.push(Arc::clone(segment));
                }
                let run = [
                    as_i64(id)?,
                    as_i64(segment.id)?,
                    as_i64(offset)?,
                    as_i64(len)?,
                ];
                for (column, value) in runs.iter_mut().zip(run) {
                    column.push(value);
                }
                held += len;
            }
            if first + held != p.rows.len() {
                return Err(EngineError::Internal(format!(
                    "partition {id} holds {held} rows from row {first} of {}",
                    p.rows.len()
                )));
            }
            let row = [
                Some(as_i64(p.rows.len())?),
                Some(as_i64(first)?),
                Some(as_i64(start)?),
                p.matcher.waiting_row().map(as_i64).transpose()?,
                Some(as_i64(p.matcher.matches())?),
                Some(as_i64(p.matcher.covered())?),
                Some(i64::from(p.matcher.waits_only_at_end())),
            ];
            for (column, value) in values.iter_mut().zip(row) {
                column.push(value);
            }
        }
        for (name, column) in PARTITION_COLUMNS.iter().zip(values) {
            fields.push(Field::new(*name, DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from(column)));
        }
        let partitions = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = RUN_COLUMNS
            .iter()
            .zip(runs)
            .map(|(name, values)| {
                (
                    Field::new(*name, DataType::Int64, false),
                    Arc::new(Int64Array::from(values)) as ArrayRef,
                )
            })
            .unzip();
        let runs = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok((partitions, runs, segments))
    }

    /// A segment's rows as a snapshot holds them: the input columns, then its row-local
    /// conditions (`bit_<variable>`), which read rows of earlier segments (`PREV`) and so are
    /// kept rather than evaluated again.
    fn segment_rows(&self, segment: &Segment) -> EngineResult<RecordBatch> {
        let mut fields: Vec<Field> = self
            .s
            .input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = segment.batch.columns().to_vec();
        for (v, bits) in segment.bits.iter().enumerate() {
            if let Some(bits) = bits {
                fields.push(Field::new(format!("bit_{v}"), DataType::Boolean, true));
                columns.push(Arc::new(bits.clone()));
            }
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// A segment put back from its snapshot rows (see [`Self::segment_rows`]), or a refusal.
    fn restored_segment(&self, id: u64, rows: &RecordBatch, release: u64) -> EngineResult<Segment> {
        let inputs = self.s.input_schema.fields().len();
        let input = rows
            .project(&(0..inputs.min(rows.num_columns())).collect::<Vec<_>>())
            .map_err(|e| corrupt(format!("MATCH_RECOGNIZE segment {id}: {e}")))?;
        let (batch, times) = self.input_rows(&input)?;
        let mut extra = rows
            .schema_ref()
            .fields()
            .iter()
            .zip(rows.columns())
            .skip(inputs);
        let mut bits = Vec::with_capacity(self.s.defines.len());
        for (v, define) in self.s.defines.iter().enumerate() {
            if define.is_none() || !self.row_local[v] || self.ahead[v] {
                bits.push(None);
                continue;
            }
            let column = extra
                .next()
                .filter(|(f, _)| f.name() == &format!("bit_{v}"))
                .and_then(|(_, c)| c.as_any().downcast_ref::<BooleanArray>());
            match column {
                Some(column) => bits.push(Some(column.clone())),
                None => {
                    return Err(corrupt(format!(
                        "MATCH_RECOGNIZE segment {id} without the conditions of variable {v}"
                    )));
                }
            }
        }
        if extra.next().is_some() {
            return Err(corrupt(format!(
                "MATCH_RECOGNIZE segment {id} with more columns than conditions"
            )));
        }
        let n = batch.num_rows();
        let args = self
            .s
            .args
            .iter()
            .map(|e| Ok(e.evaluate(&batch)?.into_array(n)?))
            .collect::<EngineResult<Vec<_>>>()?;
        Ok(Segment {
            batch,
            args,
            bits,
            times,
            release,
            id,
        })
    }

    /// Rows of the input schema, or a refusal.
    fn input_rows(&self, batch: &RecordBatch) -> EngineResult<(RecordBatch, Vec<i64>)> {
        let batch =
            RecordBatch::try_new(Arc::clone(&self.s.input_schema), batch.columns().to_vec())
                .map_err(|e| corrupt(format!("MATCH_RECOGNIZE rows of another shape: {e}")))?;
        let times = self
            .times(&batch)?
            .into_iter()
            .map(|t| t.ok_or_else(|| corrupt("a MATCH_RECOGNIZE row without event time")))
            .collect::<EngineResult<Vec<i64>>>()?;
        Ok((batch, times))
    }

    /// Puts back a snapshot: the waiting rows as they were; each partition's held rows as
    /// one segment, their conditions computed again; then each matcher replays its running
    /// attempt over them without reporting anything (the replay must end where the
    /// snapshot says, or the snapshot is refused).
    fn restore_state(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        if snapshot.is_empty() {
            return Ok(());
        }
        let meta = snapshot.values(META)?;
        let value = |name: &str| {
            meta.get(name)
                .copied()
                .ok_or_else(|| corrupt(format!("MATCH_RECOGNIZE state without {name}")))
        };
        let watermark = value("watermark")?;
        let forwarded = value("forwarded")?;
        let releases = as_index(value("releases")?, "releases")? as u64;
        let compacted = as_index(value("compacted")?, "compacted")? as u64;
        let next_segment = as_index(value("segments")?, "segments")? as u64;
        let blocks = as_index(value("blocks")?, "blocks")? as u64;

        let mut pending = Vec::new();
        for batch in snapshot.table(WAITING) {
            let (batch, times) = self.input_rows(&batch)?;
            let (Some(&min_time), Some(&max_time)) = (times.iter().min(), times.iter().max())
            else {
                continue;
            };
            pending.push(PendingBatch {
                batch,
                times,
                max_time,
                min_time,
            });
        }

        // The partitions in order, in blocks (see `PARTITION_BLOCK`).
        let mut states: Vec<(Box<[u8]>, PartitionState)> = Vec::new();
        for batch in snapshot.table(PARTITIONS) {
            let keys = (0..self.s.partition_fields.len().max(1))
                .map(|i| {
                    batch
                        .column_by_name(&format!("key_{i}"))
                        .cloned()
                        .ok_or_else(|| corrupt(format!("partitions without key_{i}")))
                })
                .collect::<EngineResult<Vec<ArrayRef>>>()?;
            let keys = self
                .partition_converter
                .convert_columns(&keys)
                .map_err(|e| corrupt(format!("partition keys: {e}")))?;
            let columns = PARTITION_COLUMNS
                .iter()
                .map(|name| {
                    batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                        .ok_or_else(|| corrupt(format!("partitions without {name}")))
                })
                .collect::<EngineResult<Vec<_>>>()?;
            for i in 0..batch.num_rows() {
                states.push((
                    keys.row(i).data().into(),
                    PartitionState::read(&columns, i)?,
                ));
            }
        }
        // The segments, whole, as the snapshot holds them (never inline rows).
        let shared = snapshot.shared(ROWS)?;
        if shared.len() != snapshot.table(ROWS).len() {
            return Err(corrupt("MATCH_RECOGNIZE rows outside its segments"));
        }
        let mut segments: HashMap<u64, (Arc<Segment>, Rows)> = HashMap::new();
        for (id, rows) in shared {
            if id >= next_segment {
                return Err(corrupt(format!("segment {id} of {next_segment} made")));
            }
            let segment = self.restored_segment(id, &rows, releases)?;
            let keys = self.partition_keys(&segment.batch)?;
            if segments.insert(id, (Arc::new(segment), keys)).is_some() {
                return Err(corrupt(format!("segment {id} twice")));
            }
        }
        // The runs, in blocks as the partitions are: (partition, segment, offset, len).
        let mut runs: Vec<[i64; 4]> = Vec::new();
        for batch in snapshot.table(RUNS) {
            let columns = RUN_COLUMNS
                .iter()
                .map(|name| {
                    batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                        .filter(|c| c.null_count() == 0)
                        .ok_or_else(|| corrupt(format!("runs without {name}")))
                })
                .collect::<EngineResult<Vec<_>>>()?;
            runs.extend((0..batch.num_rows()).map(|i| [0, 1, 2, 3].map(|c| columns[c].value(i))));
        }

        self.watermark = watermark;
        self.forwarded = forwarded;
        self.releases = releases;
        self.compacted = compacted;
        self.segments = next_segment;
        self.snapshotted = next_segment;
        // Blocks get new ids (above every id given out) and are written at the next snapshot.
        self.blocks = Vec::new();
        self.block_ids = blocks;
        self.completed = 0;
        self.pending = pending;
        self.partitions = Vec::with_capacity(states.len());
        self.partition_ids = HashMap::new();
        for (id, (key, p)) in states.iter().enumerate() {
            let mut partition = self.new_partition(PartitionRows::starting_at(p.first_row));
            partition.matcher.resume(p.start, p.matches, p.covered);
            self.partitions.push(partition);
            if self.partition_ids.insert(key.clone(), id).is_some() {
                return Err(corrupt(format!("partition {id} repeats a key")));
            }
        }
        // Each partition's runs, in partition and row order: rows of that partition, in time
        // order, from its first held row to its last.
        let mut last: Option<(usize, i64)> = None;
        for (i, run) in runs.iter().enumerate() {
            let [id, segment, offset, len] = run.map(usize::try_from);
            let (Ok(id), Ok(segment), Ok(offset), Ok(len)) = (id, segment, offset, len) else {
                return Err(corrupt(format!("run {i} with a negative number")));
            };
            let (Some((key, _)), Some((segment, keys))) =
                (states.get(id), segments.get(&(segment as u64)))
            else {
                return Err(corrupt(format!(
                    "run {i} of a missing partition or segment"
                )));
            };
            let rows = offset..offset.saturating_add(len);
            let times = segment.times.get(rows.clone()).unwrap_or_default();
            let (Some(&from), Some(&to)) = (times.first(), times.last()) else {
                return Err(corrupt(format!("run {i} beyond its segment")));
            };
            if last.is_some_and(|(p, t)| p > id || (p == id && t > from))
                || times.windows(2).any(|w| w[0] > w[1])
                || rows.clone().any(|r| keys.row(r).data() != key.as_ref())
            {
                return Err(corrupt(format!(
                    "run {i}: rows of another partition or out of order"
                )));
            }
            last = Some((id, to));
            self.partitions[id].rows.push(segment, offset, len);
        }
        for (id, (_, p)) in states.iter().enumerate() {
            if self.partitions[id].rows.len() != p.rows {
                return Err(corrupt(format!(
                    "partition {id} holds rows up to {} where it says {}",
                    self.partitions[id].rows.len(),
                    p.rows
                )));
            }
        }
        let ids: Vec<usize> = (0..states.len()).collect();
        self.ahead_bits(&ids, false)?;
        for (id, (_, p)) in states.iter().enumerate() {
            let mut found = self.advance(id, false)?;
            let Some(partition) = self.partitions.get_mut(id) else {
                continue;
            };
            if p.at_end_only {
                partition.matcher.expire(&mut found)?;
            }
            let matcher = &partition.matcher;
            if !found.is_empty()
                || matcher.first_needed_row() != p.start
                || matcher.waiting_row() != p.attempt_row
                || matcher.waits_only_at_end() != p.at_end_only
            {
                return Err(corrupt(format!(
                    "partition {id}: its rows do not replay to the checkpointed attempt"
                )));
            }
        }
        Ok(())
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
        if let Some(holds) = self.looked_up(var, row) {
            return Ok(holds);
        }
        Ok(self.holds_all(row, &[(var, history)])?.first() == Some(&true))
    }

    /// WITHIN: the row's time minus the attempt's first row's time is strictly less than the
    /// interval. (A row no longer held counts as outside; the matcher never asks about one.)
    fn in_window(&mut self, start: usize, row: usize) -> bool {
        let Some(within) = self.s.spec.within else {
            return true;
        };
        match (self.rows.time(start), self.rows.time(row)) {
            (Some(first), Some(now)) => now.saturating_sub(first) < within,
            _ => false,
        }
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
        for (i, (var, _)) in requests.iter().enumerate() {
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
                    timed_out: false,
                })
                .collect();
            let result = define.holds(&points, &self.s.input_schema, &self.s.spec.variables)?;
            for (k, &i) in asking.iter().enumerate() {
                answers[i] = result[k];
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
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let times = self.times(&batch)?;
        let watermark = self.watermark;
        let keep: BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| watermark.is_none_or(|w| t > w))))
            .collect();
        let late: Vec<_> = times
            .iter()
            .enumerate()
            .filter(|(row, _)| !keep.value(*row))
            .map(|(row, time)| (row, *time))
            .collect();
        out.drop_late(&batch, &late)?;
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

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        // After a restore the runtime may repeat the checkpoint's watermark: it was handled.
        if self.forwarded.is_some_and(|w| watermark <= w) {
            return Ok(());
        }
        self.forwarded = Some(watermark);
        if self.s.no_watermark {
            out.watermark(watermark);
            return Ok(());
        }
        self.watermark = Some(watermark);
        self.release(watermark, false, out)?;
        out.watermark(watermark);
        Ok(())
    }

    fn on_end(&mut self, out: &mut OperatorContext) -> EngineResult<()> {
        self.release(EventTime::MAX, true, out)
    }

    fn snapshot(&mut self, epoch: Epoch) -> EngineResult<StateSnapshot> {
        self.prepare_snapshot(epoch)?;
        self.snapshot_state()
    }

    fn checkpoint_completed(&mut self, epoch: Epoch) {
        self.completed = self.completed.max(epoch);
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        self.restore_state(snapshot)
    }

    fn state_usage(&self) -> Vec<StateUsage> {
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
            StateUsage {
                table: WAITING,
                rows: self.pending.iter().map(|p| p.batch.num_rows()).sum(),
                bytes: self
                    .pending
                    .iter()
                    .map(|p| p.batch.get_array_memory_size())
                    .sum(),
            },
            StateUsage {
                table: ROWS,
                rows: held,
                bytes,
            },
        ]
    }
}
