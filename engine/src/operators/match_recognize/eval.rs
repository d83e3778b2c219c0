//! Evaluating MATCH_RECOGNIZE's DEFINE conditions and measures.
//!
//! A [`MatchExpr`](crate::plan::match_recognize::MatchExpr) is an expression over channels
//! (`A.price`, `PREV(price)`, `SUM(A.x)`, `CLASSIFIER()`, ...). Here it becomes a physical
//! expression plus [`CompiledChannel`]s; [`CompiledExpr::evaluate`] computes the channels of
//! many [`Point`]s (a labelling of rows and the row it is evaluated at) and evaluates the
//! expression once over all of them. The rows themselves live in [`PartitionRows`]: the
//! released rows of one partition, in order, with the channels' argument columns computed per
//! segment of released rows.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch, interleave};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};

use crate::error::{EngineError, EngineResult};
use crate::operators::match_recognize::pattern::VarId;
use crate::operators::match_recognize::scalar::{ScalarCondition, Val, value_at};
use crate::plan::match_recognize::{ChannelSource, MatchExpr, Navigation};

/// A channel ready to compute.
#[derive(Debug)]
pub enum ChannelKind {
    /// Argument column `arg` of [`PartitionRows`] at the navigated row.
    Value {
        vars: Option<Vec<VarId>>,
        nav: Navigation,
        arg: usize,
    },
    Aggregate {
        vars: Option<Vec<VarId>>,
        aggregate: Arc<AggregateFunctionExpr>,
        filter: Option<Arc<dyn PhysicalExpr>>,
    },
    Classifier {
        vars: Option<Vec<VarId>>,
    },
    MatchNumber,
    MatchStatus,
}

#[derive(Debug)]
pub struct CompiledChannel {
    pub kind: ChannelKind,
    pub running: bool,
}

/// A DEFINE condition or measure, ready to evaluate.
#[derive(Debug)]
pub struct CompiledExpr {
    pub expr: Arc<dyn PhysicalExpr>,
    pub schema: SchemaRef,
    pub channels: Vec<CompiledChannel>,
    /// The condition's scalar form, when it has one and reads only values (and the match
    /// number): [`CompiledExpr::holds`] evaluates it without Arrow arrays.
    pub scalar: Option<ScalarCondition>,
}

/// Turns [`MatchExpr`]s into [`CompiledExpr`]s, collecting the distinct argument
/// expressions of value channels (computed once per released row).
pub struct ExprCompiler<'a> {
    state: &'a SessionState,
    input: &'a DFSchema,
    pub args: Vec<(Expr, Arc<dyn PhysicalExpr>)>,
}

impl<'a> ExprCompiler<'a> {
    pub fn new(state: &'a SessionState, input: &'a DFSchema) -> Self {
        Self {
            state,
            input,
            args: Vec::new(),
        }
    }

    pub fn compile(&mut self, m: &MatchExpr) -> EngineResult<CompiledExpr> {
        let expr = self.state.create_physical_expr(m.expr.clone(), &m.schema)?;
        let mut channels = Vec::new();
        for c in &m.channels {
            let kind = match &c.source {
                ChannelSource::Value { vars, nav, arg } => ChannelKind::Value {
                    vars: vars.clone(),
                    nav: *nav,
                    arg: self.arg(arg)?,
                },
                ChannelSource::Aggregate { vars, aggregate } => {
                    let planning = PhysicalPlanningContext::default();
                    let lowered = LoweredAggregateBuilder::new(
                        aggregate,
                        self.input,
                        self.input.as_arrow(),
                        self.state.execution_props(),
                        &planning,
                    )
                    .build()?;
                    ChannelKind::Aggregate {
                        vars: vars.clone(),
                        aggregate: lowered.aggregate,
                        filter: lowered.filter,
                    }
                }
                ChannelSource::Classifier { vars } => {
                    ChannelKind::Classifier { vars: vars.clone() }
                }
                ChannelSource::MatchNumber => ChannelKind::MatchNumber,
                ChannelSource::MatchStatus => ChannelKind::MatchStatus,
            };
            channels.push(CompiledChannel {
                kind,
                running: c.running,
            });
        }
        let values_only = channels
            .iter()
            .all(|c| matches!(c.kind, ChannelKind::Value { .. } | ChannelKind::MatchNumber));
        let scalar = if values_only {
            ScalarCondition::compile(&m.expr, &m.schema)
        } else {
            None
        };
        Ok(CompiledExpr {
            expr,
            schema: Arc::new(m.schema.as_arrow().clone()),
            channels,
            scalar,
        })
    }

    fn arg(&mut self, e: &Expr) -> EngineResult<usize> {
        if let Some(i) = self.args.iter().position(|(a, _)| a == e) {
            return Ok(i);
        }
        let physical = self.state.create_physical_expr(e.clone(), self.input)?;
        self.args.push((e.clone(), physical));
        Ok(self.args.len() - 1)
    }
}

/// The rows released by one watermark, sorted by partition, with what is computed per row.
/// Partitions refer to their runs of it.
#[derive(Debug)]
pub struct Segment {
    pub batch: RecordBatch,
    /// The argument columns of value channels.
    pub args: Vec<ArrayRef>,
    /// Per variable with a row-local DEFINE: whether each row satisfies it.
    pub bits: Vec<Option<BooleanArray>>,
    /// Event times, nanoseconds.
    pub times: Vec<i64>,
    /// The release that made it (segments from old releases get compacted).
    pub release: u64,
    /// Names the segment in snapshots: unique in the operator instance, kept by a restore,
    /// so a checkpoint writes a segment once however many checkpoints hold it.
    pub id: u64,
}

/// A run of consecutive rows of one partition: rows `offset .. offset + len` of a segment.
#[derive(Debug)]
struct Chunk {
    /// The partition row number of the chunk's first row.
    first: usize,
    segment: Arc<Segment>,
    offset: usize,
    len: usize,
}

/// The released rows of one partition still needed by a match or a navigation.
#[derive(Debug, Default)]
pub struct PartitionRows {
    chunks: VecDeque<Chunk>,
    /// Rows ever released (row numbers run from 0).
    len: usize,
    /// Row-local conditions that read rows after their own (`NEXT`), evaluated once those
    /// rows are released: a bit per variable for rows `ahead_first ..`.
    ahead: VecDeque<u64>,
    ahead_first: usize,
}

impl PartitionRows {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A partition whose rows before `row` are gone: rows pushed next are numbered from
    /// `row` on (a restored partition, whose earlier rows no match can reach any more).
    pub fn starting_at(row: usize) -> Self {
        Self {
            len: row,
            ahead_first: row,
            ..Self::default()
        }
    }

    /// The first row still held (`len()` when none is).
    pub fn first_held(&self) -> usize {
        self.chunks.front().map_or(self.len, |c| c.first)
    }

    /// Appends rows `offset .. offset + len` of `segment`.
    pub fn push(&mut self, segment: &Arc<Segment>, offset: usize, len: usize) {
        self.chunks.push_back(Chunk {
            first: self.len,
            segment: Arc::clone(segment),
            offset,
            len,
        });
        self.len += len;
    }

    /// The segment holding row `row` and the row's index in it.
    pub fn locate(&self, row: usize) -> Option<(&Segment, usize)> {
        if row >= self.len {
            return None;
        }
        let i = self
            .chunks
            .partition_point(|c| c.first <= row)
            .checked_sub(1)?;
        let chunk = &self.chunks[i];
        let at = row - chunk.first;
        (at < chunk.len).then_some((chunk.segment.as_ref(), chunk.offset + at))
    }

    pub fn time(&self, row: usize) -> Option<i64> {
        self.locate(row).map(|(c, i)| c.times[i])
    }

    /// The runs of held rows: (segment, offset, len), in row order.
    pub fn runs(&self) -> impl Iterator<Item = (&Arc<Segment>, usize, usize)> {
        self.chunks.iter().map(|c| (&c.segment, c.offset, c.len))
    }

    /// The runs of rows `row ..` (the first one cut to begin at `row`), in row order.
    pub fn runs_from(&self, row: usize) -> impl Iterator<Item = (&Arc<Segment>, usize, usize)> {
        self.chunks
            .iter()
            .filter(move |c| c.first + c.len > row)
            .map(move |c| {
                let skip = row.saturating_sub(c.first);
                (&c.segment, c.offset + skip, c.len - skip)
            })
    }

    /// Points run `k` (of [`PartitionRows::runs`]) at a copy of its rows in `segment`.
    pub fn rebase(&mut self, k: usize, segment: &Arc<Segment>, offset: usize) {
        if let Some(chunk) = self.chunks.get_mut(k) {
            chunk.segment = Arc::clone(segment);
            chunk.offset = offset;
        }
    }

    /// How many rows are held (released and not freed).
    pub fn held_rows(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }

    /// The segments the held rows live in (one per chunk; a segment may repeat).
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.chunks.iter().map(|c| c.segment.as_ref())
    }

    /// The first row whose look-ahead conditions are not evaluated yet.
    pub fn ahead_end(&self) -> usize {
        self.ahead_first + self.ahead.len()
    }

    /// Records the look-ahead conditions of row `ahead_end()`: bit v for variable v.
    pub fn push_ahead(&mut self, mask: u64) {
        self.ahead.push_back(mask);
    }

    /// Whether row `row` satisfies the look-ahead condition of variable `var`.
    pub fn ahead_holds(&self, row: usize, var: VarId) -> bool {
        row.checked_sub(self.ahead_first)
            .and_then(|i| self.ahead.get(i))
            .is_some_and(|mask| mask >> var & 1 == 1)
    }

    /// Frees the chunks whose rows all precede `row`.
    pub fn trim(&mut self, row: usize) {
        while self.ahead_first < row && !self.ahead.is_empty() {
            self.ahead.pop_front();
            self.ahead_first += 1;
        }
        while let Some(c) = self.chunks.front() {
            if c.first + c.len <= row {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
    }

    /// Frees the rows before `row`, cutting into the chunk that holds it ([`Self::trim`]
    /// frees whole chunks only).
    pub fn cut(&mut self, row: usize) {
        self.trim(row);
        if let Some(c) = self.chunks.front_mut()
            && c.first < row
        {
            // `trim` left only chunks that end after `row`.
            let skip = row - c.first;
            c.first = row;
            c.offset += skip;
            c.len -= skip;
        }
    }

    /// The last `n` rows before row `before`, oldest first, as (segment, index) references.
    pub fn history(&self, before: usize, n: usize) -> Vec<(&Segment, usize)> {
        let mut out = Vec::new();
        let mut row = before;
        while out.len() < n && row > 0 {
            row -= 1;
            match self.locate(row) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out.reverse();
        out
    }

    /// The input rows `rows` as one batch.
    pub fn gather(&self, schema: &SchemaRef, rows: &[usize]) -> EngineResult<RecordBatch> {
        let refs = rows
            .iter()
            .map(|&r| {
                self.locate(r)
                    .ok_or_else(|| EngineError::Internal(format!("row {r} was freed")))
            })
            .collect::<EngineResult<Vec<_>>>()?;
        gather_rows(schema, &refs)
    }
}

/// Input rows given as (chunk, index) references, as one batch of `schema`.
pub fn gather_rows(schema: &SchemaRef, refs: &[(&Segment, usize)]) -> EngineResult<RecordBatch> {
    if refs.is_empty() {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    }
    let gather = RowGather::new(refs.iter().map(|r| Some(*r)));
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(col, f)| gather.column(f.data_type(), |s| s.batch.column(col).as_ref()))
        .collect::<EngineResult<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Rows of several segments, gathered column by column; a missing row (None) is NULL.
struct RowGather<'a> {
    segments: Vec<&'a Segment>,
    /// (segment, row); a missing row points one past the segments, at a one-row NULL.
    indices: Vec<(usize, usize)>,
    has_nulls: bool,
}

impl<'a> RowGather<'a> {
    fn new(refs: impl IntoIterator<Item = Option<(&'a Segment, usize)>>) -> Self {
        let mut segments: Vec<&Segment> = Vec::new();
        let mut missing = Vec::new();
        let mut indices = Vec::new();
        for r in refs {
            let Some((c, i)) = r else {
                missing.push(indices.len());
                indices.push((0, 0));
                continue;
            };
            let k = match segments.iter().rposition(|s| std::ptr::eq(*s, c)) {
                Some(k) => k,
                None => {
                    segments.push(c);
                    segments.len() - 1
                }
            };
            indices.push((k, i));
        }
        for m in &missing {
            indices[*m] = (segments.len(), 0);
        }
        Self {
            segments,
            indices,
            has_nulls: !missing.is_empty(),
        }
    }

    /// The column `column` of each row, of type `data_type`.
    fn column(
        &self,
        data_type: &DataType,
        column: impl Fn(&'a Segment) -> &'a dyn Array,
    ) -> EngineResult<ArrayRef> {
        if self.indices.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(data_type));
        }
        let null = datafusion::arrow::array::new_null_array(data_type, 1);
        let mut arrays: Vec<&dyn Array> = self.segments.iter().map(|s| column(s)).collect();
        if self.has_nulls {
            arrays.push(null.as_ref());
        }
        Ok(interleave(&arrays, &self.indices)?)
    }
}

/// One segment holding the rows `refs` of other segments (their columns, arguments, bits and
/// times), made by release `release` and named `id`.
pub fn copy_segment(refs: &[(&Segment, usize)], release: u64, id: u64) -> EngineResult<Segment> {
    let Some((first, _)) = refs.first() else {
        return Err(EngineError::Internal("an empty segment".to_string()));
    };
    let gather = RowGather::new(refs.iter().map(|r| Some(*r)));
    let batch = gather_rows(&first.batch.schema(), refs)?;
    let args = first
        .args
        .iter()
        .enumerate()
        .map(|(k, a)| gather.column(a.data_type(), |s| s.args[k].as_ref()))
        .collect::<EngineResult<Vec<_>>>()?;
    // Every segment of an operator has bits for the same variables.
    let bits = (0..first.bits.len())
        .map(|v| {
            let arrays: Option<Vec<&dyn Array>> = gather
                .segments
                .iter()
                .map(|s| s.bits.get(v)?.as_ref().map(|b| b as &dyn Array))
                .collect();
            match arrays {
                Some(arrays) => Ok(Some(
                    interleave(&arrays, &gather.indices)?.as_boolean().clone(),
                )),
                None => Ok(None),
            }
        })
        .collect::<EngineResult<Vec<_>>>()?;
    Ok(Segment {
        batch,
        args,
        bits,
        times: refs.iter().map(|(s, i)| s.times[*i]).collect(),
        release,
        id,
    })
}

/// Where an expression is evaluated: a labelling of rows `start ..` and the row evaluated at.
#[derive(Debug, Clone, Copy)]
pub struct Point<'a> {
    /// The partition's rows.
    pub rows: &'a PartitionRows,
    /// The labels of the match (for DEFINE: of the rows so far, the current row included).
    pub labels: &'a [VarId],
    pub start: usize,
    /// Index into `labels` of the current row (RUNNING sees labels up to it); None for an
    /// empty match.
    pub current: Option<usize>,
    pub number: u64,
    /// The labelling is the partial match of an attempt that timed out (no match:
    /// `MATCH_NUMBER()` is NULL, `MATCH_STATUS()` `'TIMED_OUT'`).
    pub timed_out: bool,
}

impl Point<'_> {
    fn seen(&self, running: bool) -> &[VarId] {
        if running {
            &self.labels[..self.current.map_or(0, |c| c + 1)]
        } else {
            self.labels
        }
    }
}

fn in_vars(vars: &Option<Vec<VarId>>, v: VarId) -> bool {
    vars.as_ref().is_none_or(|vs| vs.contains(&v))
}

/// The partition row a value channel reads at `point`, if any.
fn navigate(
    vars: &Option<Vec<VarId>>,
    nav: &Navigation,
    running: bool,
    point: &Point<'_>,
) -> Option<usize> {
    let rows = point.rows;
    let seen = point.seen(running);
    let mut matching = seen.iter().enumerate().filter(|(_, v)| in_vars(vars, **v));
    let index = if nav.from_first {
        matching.nth(nav.logical)?.0
    } else {
        matching.rev().nth(nav.logical)?.0
    };
    let row = (point.start + index) as i64 + nav.physical;
    (row >= 0 && (row as usize) < rows.len()).then_some(row as usize)
}

impl CompiledExpr {
    /// Evaluates the expression at each point.
    pub fn evaluate(
        &self,
        points: &[Point<'_>],
        input_schema: &SchemaRef,
        variables: &[String],
    ) -> EngineResult<ArrayRef> {
        let mut columns = Vec::with_capacity(self.channels.len());
        for (channel, field) in self.channels.iter().zip(self.schema.fields()) {
            let array = match &channel.kind {
                // Values are gathered from the rows' argument columns, without scalars.
                ChannelKind::Value { vars, nav, arg } => {
                    let refs: Vec<Option<(&Segment, usize)>> = points
                        .iter()
                        .map(|p| {
                            navigate(vars, nav, channel.running, p).and_then(|r| p.rows.locate(r))
                        })
                        .collect();
                    gather_arg(&refs, *arg, field.data_type())?
                }
                ChannelKind::MatchNumber => Arc::new(
                    points
                        .iter()
                        .map(|p| (!p.timed_out).then_some(p.number as i64))
                        .collect::<datafusion::arrow::array::Int64Array>(),
                ),
                ChannelKind::MatchStatus => Arc::new(
                    points
                        .iter()
                        .map(|p| Some(if p.timed_out { "TIMED_OUT" } else { "MATCHED" }))
                        .collect::<datafusion::arrow::array::StringArray>(),
                ),
                _ => {
                    let values = points
                        .iter()
                        .map(|p| channel_value(channel, p, input_schema, variables))
                        .collect::<EngineResult<Vec<_>>>()?;
                    if values.is_empty() {
                        datafusion::arrow::array::new_empty_array(field.data_type())
                    } else {
                        ScalarValue::iter_to_array(values)?
                    }
                }
            };
            let array = if array.data_type() == field.data_type() {
                array
            } else {
                cast(&array, field.data_type())?
            };
            columns.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(points.len())),
        )?;
        Ok(self.expr.evaluate(&batch)?.into_array(points.len())?)
    }

    /// Whether the condition holds at each point (NULL: it does not): by its scalar form where
    /// it has one and every value fits it, else by DataFusion over all the points.
    pub fn holds(
        &self,
        points: &[Point<'_>],
        input_schema: &SchemaRef,
        variables: &[String],
    ) -> EngineResult<Vec<bool>> {
        if let Some(scalar) = &self.scalar {
            let mut answers = Vec::with_capacity(points.len());
            for point in points {
                let mut channel = |i: usize| -> Option<Val> {
                    let channel = &self.channels[i];
                    match &channel.kind {
                        ChannelKind::Value { vars, nav, arg } => {
                            match navigate(vars, nav, channel.running, point)
                                .and_then(|r| point.rows.locate(r))
                            {
                                Some((segment, at)) => value_at(&segment.args[*arg], at),
                                None => Some(Val::Null),
                            }
                        }
                        ChannelKind::MatchNumber if !point.timed_out => {
                            Some(Val::Int(point.number as i64))
                        }
                        _ => None,
                    }
                };
                match scalar.holds(&mut channel) {
                    Some(holds) => answers.push(holds),
                    None => break,
                }
            }
            if answers.len() == points.len() {
                return Ok(answers);
            }
        }
        let result = as_condition(&self.evaluate(points, input_schema, variables)?);
        Ok((0..points.len()).map(|i| result.value(i)).collect())
    }

    /// Evaluates a row-local condition for whole runs of rows: `channels` are the argument
    /// columns already shifted by each channel's navigation.
    pub fn evaluate_columns(
        &self,
        columns: Vec<ArrayRef>,
        rows: usize,
    ) -> EngineResult<BooleanArray> {
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let result = self.expr.evaluate(&batch)?.into_array(rows)?;
        Ok(as_condition(&result))
    }
}

/// A condition's result as booleans, NULL counting as false.
pub fn as_condition(array: &ArrayRef) -> BooleanArray {
    match array.as_boolean_opt() {
        Some(b) if b.null_count() == 0 => b.clone(),
        Some(b) => b.iter().map(|v| Some(v == Some(true))).collect(),
        None => BooleanArray::from(vec![false; array.len()]),
    }
}

fn channel_value(
    channel: &CompiledChannel,
    point: &Point<'_>,
    input_schema: &SchemaRef,
    variables: &[String],
) -> EngineResult<ScalarValue> {
    let rows = point.rows;
    match &channel.kind {
        // Gathered as whole columns by `CompiledExpr::evaluate`.
        ChannelKind::Value { .. } | ChannelKind::MatchNumber | ChannelKind::MatchStatus => {
            Err(EngineError::Internal(
                "value channels are gathered, not computed one by one".to_string(),
            ))
        }
        ChannelKind::Classifier { vars } => {
            let seen = point.seen(channel.running);
            let label = seen.iter().rev().find(|v| in_vars(vars, **v));
            Ok(ScalarValue::Utf8(
                label.and_then(|v| variables.get(*v as usize)).cloned(),
            ))
        }
        ChannelKind::Aggregate {
            vars,
            aggregate,
            filter,
        } => {
            let seen = point.seen(channel.running);
            let selected: Vec<usize> = seen
                .iter()
                .enumerate()
                .filter(|(_, v)| in_vars(vars, **v))
                .map(|(i, _)| point.start + i)
                .collect();
            let mut batch = rows.gather(input_schema, &selected)?;
            if let Some(f) = filter {
                let mask = f.evaluate(&batch)?.into_array(batch.num_rows())?;
                batch = filter_record_batch(&batch, &as_condition(&mask))?;
            }
            // An order-sensitive aggregate (`array_agg(x ORDER BY y)`) takes its ORDER BY
            // columns after its arguments, as DataFusion's AggregateExec passes them.
            let args = aggregate
                .expressions()
                .iter()
                .chain(aggregate.order_bys().iter().map(|o| &o.expr))
                .map(|e| Ok(e.evaluate(&batch)?.into_array(batch.num_rows())?))
                .collect::<EngineResult<Vec<_>>>()?;
            let mut acc = aggregate.create_accumulator()?;
            if batch.num_rows() > 0 {
                acc.update_batch(&args)?;
            }
            Ok(acc.evaluate()?)
        }
    }
}

/// The values of argument `arg` for rows given as (chunk, index) references, or NULL.
pub fn gather_arg(
    refs: &[Option<(&Segment, usize)>],
    arg: usize,
    data_type: &DataType,
) -> EngineResult<ArrayRef> {
    RowGather::new(refs.iter().copied()).column(data_type, |s| s.args[arg].as_ref())
}
