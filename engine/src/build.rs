//! Building a dataflow from a streaming plan: one operator (or one per parallel instance) per
//! plan node, wired with channels and hash exchanges, sources last.
//!
//! [`launch`] turns a [`StreamPlan`] into a [`RunningQuery`]: it compiles each node's
//! expressions with DataFusion, creates its operators, restores their state when the dataflow
//! continues from a checkpoint, and spawns the tasks of [`crate::runtime::driver`]. It is the
//! one place that knows every operator: the modules import one way, plan -> operators ->
//! runtime, and this builder sits above them.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, SortExpr};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::create_physical_sort_exprs;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::aggregates::PhysicalGroupBy;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::connector::{OnError, SourceContext, SourceMetrics, SourceSplit};
use crate::error::{EngineError, EngineResult};
use crate::operators::accumulators::AggregateExprs;
use crate::operators::changelog_normalize::ChangelogNormalizeOperator;
use crate::operators::deduplicate::{DeduplicateOperator, DeduplicateSpec};
use crate::operators::filter::FilterOperator;
use crate::operators::interval_join::{IntervalJoinOperator, IntervalJoinSpec, IntervalSide};
use crate::operators::join_rows::KeyEncoder;
use crate::operators::lead::{Lead, LeadOperator, LeadSpec};
use crate::operators::limit::LimitOperator;
use crate::operators::lookup_join::{LookupJoinOperator, LookupJoinSpec, LookupTable};
use crate::operators::match_recognize::{MatchRecognizeOperator, MatchRecognizeSpec};
use crate::operators::over_aggregate::{
    Lag, OverAggregateOperator, OverAggregateSpec, OverFunction,
};
use crate::operators::processing_time::ProcessingTimeOperator;
use crate::operators::project::ProjectOperator;
use crate::operators::regular_join::{
    RegularJoinOperator, RegularJoinSide, RegularJoinSpec, wall_clock,
};
use crate::operators::session_window::SessionWindowOperator;
use crate::operators::temporal_join::{TemporalJoinOperator, TemporalJoinSpec};
use crate::operators::top_n::{TopNOperator, TopNSpec};
use crate::operators::ttl::StateTtl;
use crate::operators::union::UnionOperator;
use crate::operators::updating_aggregate::UpdatingAggregateOperator;
use crate::operators::window::{WindowKind, unit_nanos};
use crate::operators::window_aggregate::WindowAggregateOperator;
use crate::operators::window_assign::WindowAssignOperator;
use crate::operators::window_join::{WindowJoinOperator, WindowJoinSide, WindowJoinSpec};
use crate::operators::window_top_n::{WindowTopNOperator, WindowTopNSpec};
use crate::operators::{Operator, OperatorContext, OperatorInfo};
use crate::panics;
use crate::plan::{JoinInputs, Partitioning, SourceNode, StreamPlan};
use crate::runtime::checkpoint::{self, PartId};
use crate::runtime::exchange::{self, HashPartitioner};
use crate::runtime::memory::StateAccount;
use crate::runtime::message::Message;
use crate::runtime::source::{BoundedSourceGroup, WatermarkGenerator};
use crate::runtime::{
    CHANNEL_CAPACITY, LaunchContext, LiveTask, NodeMetrics, OperatorMetrics, QueryMetrics,
    RunningQuery, driver,
};
use crate::state::StateTable;

/// The part id of a sink's operator (no plan node: it follows the plan's last one).
pub const SINK_NODE: usize = usize::MAX - 1;
/// The part id of the merge of the last node's instances (no plan node either).
const MERGE_NODE: usize = usize::MAX;

/// Starts the dataflow of `plan`.
pub fn launch(plan: &StreamPlan, ctx: &LaunchContext<'_>) -> EngineResult<RunningQuery> {
    launch_into(plan, ctx, None)
}

/// Starts the dataflow of `plan` ending in `sink` (a sink's job; [`SINK_NODE`]), which then
/// consumes every row: the query's output carries only its watermarks, barriers and end.
/// A restored dataflow's sink gets its part of the checkpoint first, as any operator.
pub fn launch_into(
    plan: &StreamPlan,
    ctx: &LaunchContext<'_>,
    sink: Option<(Box<dyn Operator>, Vec<StateTable>)>,
) -> EngineResult<RunningQuery> {
    let mut builder = Builder {
        ctx,
        tasks: JoinSet::new(),
        sources: Vec::new(),
        metrics: QueryMetrics::default(),
        next_id: 0,
    };
    let mut outputs = builder.build(plan)?;
    let bounded = outputs.iter().all(|o| o.bounded);
    let mut output = if outputs.len() == 1 {
        outputs.remove(0).rx
    } else {
        // The instances of the last node feed the consumer through one merge.
        // It is no plan node: its counters are those of the last node's instances.
        let merge = UnionOperator::new(info("Merge", &plan.schema()));
        let inputs = outputs.into_iter().map(|o| (0, o)).collect();
        let counters = Arc::new(OperatorMetrics::default());
        let part = PartId {
            node: MERGE_NODE,
            instance: 0,
        };
        let ctx = OperatorContext::new(part.node, 0, Vec::new(), Arc::default());
        builder
            .operator(part, (Box::new(merge), ctx, counters), inputs)?
            .rx
    };
    if let Some((sink, tables)) = sink {
        let part = PartId {
            node: SINK_NODE,
            instance: 0,
        };
        let late = Arc::clone(&builder.metrics.late_rows);
        let ctx = OperatorContext::new(part.node, 0, tables, late);
        let counters = Arc::new(OperatorMetrics::default());
        let input = Input {
            rx: output,
            bounded,
        };
        output = builder
            .operator(part, (sink, ctx, counters), vec![(0, input)])?
            .rx;
    }
    // Sources start last, once every connector opened and the bounded ones are counted.
    // Bounded sources with a watermark advance in step (watermark alignment).
    let bounded = builder.sources.iter().filter(|s| s.bounded).count();
    let aligned = builder
        .sources
        .iter()
        .filter(|s| s.bounded && s.watermark.is_some())
        .count();
    let group = BoundedSourceGroup::new(bounded, aligned);
    let mut unbounded_sources: Vec<String> = Vec::new();
    for source in builder.sources.iter().filter(|s| !s.bounded) {
        if !unbounded_sources.contains(&source.name) {
            unbounded_sources.push(source.name.clone());
        }
    }
    builder.metrics.operators.sort_by_key(|n| n.id);
    builder.metrics.output_node = plan.output_node();
    builder.metrics.parallelism = ctx.parallelism.max(1);
    let mut next_aligned = 0;
    for source in builder.sources {
        let live = LiveTask::new(&ctx.live_tasks);
        let group = Arc::clone(&group);
        let index = (source.bounded && source.watermark.is_some()).then(|| {
            next_aligned += 1;
            next_aligned - 1
        });
        let place = format!("source {}", source.name);
        builder.tasks.spawn(async move {
            let _live = live;
            panics::guard(&place, driver::run_source(source, group, index)).await
        });
    }
    Ok(RunningQuery {
        schema: Arc::new(plan.schema().as_arrow().clone()),
        output,
        tasks: builder.tasks,
        metrics: Arc::new(builder.metrics),
        unbounded_sources,
        memory: Arc::clone(&ctx.memory),
        finished: false,
    })
}

/// A connector's stream whose dead letters (`format.on-error = 'dead-letter'`) are stored
/// before each batch is passed on and at its end: a malformed row is in `eddy_dead_letters`
/// before any row read after it goes downstream (or a checkpoint covers it).
fn with_dead_letters(
    stream: crate::connector::BatchStream,
    metrics: Arc<SourceMetrics>,
) -> futures::stream::BoxStream<'static, EngineResult<datafusion::arrow::record_batch::RecordBatch>>
{
    let at_end = Arc::clone(&metrics);
    stream
        .map(move |item| {
            metrics.flush_dead_letters()?;
            Ok(item?)
        })
        .chain(
            futures::stream::once(async move { at_end.flush_dead_letters() }).filter_map(
                |flushed| async move { flushed.err().map(|e| Err(EngineError::from(e))) },
            ),
        )
        .boxed()
}

/// The output of a built plan node, and whether everything upstream of it is bounded.
struct Input {
    rx: mpsc::Receiver<Message>,
    bounded: bool,
}

struct Builder<'a, 'b> {
    ctx: &'a LaunchContext<'b>,
    tasks: JoinSet<EngineResult<()>>,
    sources: Vec<driver::SourceTask>,
    metrics: QueryMetrics,
    /// The id of the next plan node built.
    next_id: usize,
}

impl Builder<'_, '_> {
    /// Instantiates `plan`: the output channels of its instances.
    fn build(&mut self, plan: &StreamPlan) -> EngineResult<Vec<Input>> {
        // Pre-order, every node counted: the ids `StreamPlan::explain_analyze` matches.
        let id = self.next_id;
        self.next_id += 1;
        match plan {
            StreamPlan::Source(source) => self.source(id, source),
            StreamPlan::Alias { input, .. } => self.build(input),
            StreamPlan::Filter { input, predicate } => {
                let input_schema = input.schema();
                let inputs = self.build(input)?;
                let predicate = self
                    .ctx
                    .state
                    .create_physical_expr(predicate.clone(), &input_schema)?;
                let ops = self.instances(&Distribution::PerChannel, &[&inputs], || {
                    Ok(Box::new(FilterOperator::new(
                        info("Filter", &input_schema),
                        Arc::clone(&predicate),
                    )))
                })?;
                self.stage(id, plan, ops, vec![inputs], Distribution::PerChannel)
            }
            StreamPlan::Project {
                input,
                exprs,
                schema,
            } => {
                let input_schema = input.schema();
                let inputs = self.build(input)?;
                let exprs = exprs
                    .iter()
                    .map(|e| {
                        self.ctx
                            .state
                            .create_physical_expr(e.clone(), &input_schema)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let ops = self.instances(&Distribution::PerChannel, &[&inputs], || {
                    Ok(Box::new(ProjectOperator::new(
                        info("Project", schema),
                        exprs.clone(),
                    )))
                })?;
                self.stage(id, plan, ops, vec![inputs], Distribution::PerChannel)
            }
            StreamPlan::Union { inputs, schema } => {
                // Each channel of each input is renamed on its own; the consumer merges them.
                let channels: Vec<Input> = inputs
                    .iter()
                    .map(|i| self.build(i))
                    .collect::<EngineResult<Vec<_>>>()?
                    .into_iter()
                    .flatten()
                    .collect();
                let ops = self.instances(&Distribution::PerChannel, &[&channels], || {
                    Ok(Box::new(UnionOperator::new(info("Union", schema))))
                })?;
                self.stage(id, plan, ops, vec![channels], Distribution::PerChannel)
            }
            StreamPlan::ProcessingTime { input, column } => {
                let input_schema = input.schema();
                let inputs = self.build(input)?;
                let ops = self.instances(&Distribution::PerChannel, &[&inputs], || {
                    Ok(Box::new(ProcessingTimeOperator::new(
                        info("ProcessingTime", &input_schema),
                        *column,
                    )?))
                })?;
                self.stage(id, plan, ops, vec![inputs], Distribution::PerChannel)
            }
            StreamPlan::Window(w) => {
                let input_schema = w.input.schema();
                let inputs = self.build(&w.input)?;
                let input_types: Vec<DataType> = input_schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect();
                match w.kind {
                    WindowKind::Session { gap } => {
                        let distribution = self.distribution(plan)?;
                        let ops = self.instances(&distribution, &[&inputs], || {
                            Ok(Box::new(SessionWindowOperator::try_new(
                                info("Window", &w.schema),
                                gap,
                                w.emit,
                                w.time_index,
                                w.key_indices.clone(),
                                &input_types,
                            )?))
                        })?;
                        self.stage(id, plan, ops, vec![inputs], distribution)
                    }
                    kind => {
                        let ops = self.instances(&Distribution::PerChannel, &[&inputs], || {
                            Ok(Box::new(WindowAssignOperator::try_new(
                                info("Window", &w.schema),
                                kind,
                                w.time_index,
                                &input_types[w.time_index],
                                w.slices,
                            )?))
                        })?;
                        self.stage(id, plan, ops, vec![inputs], Distribution::PerChannel)
                    }
                }
            }
            StreamPlan::WindowAggregate(a) => {
                let input_schema = a.input.schema();
                let inputs = self.build(&a.input)?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    Ok(Box::new(WindowAggregateOperator::new(
                        info("WindowAggregate", &a.schema),
                        self.aggregate_exprs(
                            &a.keys,
                            a.grouping_sets.as_ref(),
                            &a.aggregates,
                            &input_schema,
                        )?,
                        a.windowing.clone(),
                        a.output.clone(),
                    )))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::ChangelogNormalize(n) => {
                let input_schema = n.input.schema();
                let inputs = self.build(&n.input)?;
                let distribution = self.distribution(plan)?;
                // The source's columns: the input's but its last (the upsert flag).
                let columns = Arc::new(input_schema.as_arrow().project(
                    &(0..input_schema.fields().len().saturating_sub(1)).collect::<Vec<_>>(),
                )?);
                let keys = n
                    .keys
                    .iter()
                    .map(|k| match k {
                        Expr::Column(c) => Ok(input_schema.index_of_column(c)?),
                        other => Err(EngineError::Internal(format!(
                            "a primary key column that is not a column: {other}"
                        ))),
                    })
                    .collect::<EngineResult<Vec<_>>>()?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    Ok(Box::new(ChangelogNormalizeOperator::try_new(
                        info("ChangelogNormalize", &n.schema),
                        Arc::clone(&columns),
                        keys.clone(),
                    )?))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::UpdatingAggregate(a) => {
                let input_schema = a.input.schema();
                let inputs = self.build(&a.input)?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    Ok(Box::new(
                        UpdatingAggregateOperator::try_new_over(
                            info("UpdatingAggregate", &a.schema),
                            self.aggregate_exprs(
                                &a.keys,
                                a.grouping_sets.as_ref(),
                                &a.aggregates,
                                &input_schema,
                            )?,
                            a.input.is_updating(),
                        )?
                        .with_ttl(a.ttl.map(|ttl| StateTtl::new(ttl, wall_clock())))
                        .with_expiry(a.expiry.clone()),
                    ))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::WindowTopN(t) => {
                let input_schema = t.input.schema();
                let inputs = self.build(&t.input)?;
                let partition = self.physical_exprs(&t.partition, &input_schema)?;
                let order = self.physical_order(&t.order, &input_schema)?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    let spec = WindowTopNSpec {
                        kind: t.kind,
                        lag: t.lag,
                        bounds: t.bounds.clone(),
                        partition: partition.clone(),
                        order: order.clone(),
                        function: t.function,
                        limit: t.limit,
                    };
                    Ok(Box::new(WindowTopNOperator::new(
                        info("WindowTopN", &t.schema),
                        Arc::new(input_schema.as_arrow().clone()),
                        spec,
                    )))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::TopN(t) => {
                let input_schema = t.input.schema();
                let inputs = self.build(&t.input)?;
                let partition = self.physical_exprs(&t.partition, &input_schema)?;
                let order = self.physical_order(&t.order, &input_schema)?;
                let updating_input = t.input.is_updating();
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    let spec = TopNSpec {
                        partition: partition.clone(),
                        order: order.clone(),
                        function: t.function,
                        limit: t.limit,
                        rank_output: t.rank_output,
                        updating_input,
                    };
                    Ok(Box::new(
                        TopNOperator::try_new(
                            info("TopN", &t.schema),
                            Arc::new(input_schema.as_arrow().clone()),
                            spec,
                        )?
                        .with_ttl(t.ttl.map(|ttl| StateTtl::new(ttl, wall_clock()))),
                    ))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::Deduplicate(d) => {
                let input_schema = d.input.schema();
                let inputs = self.build(&d.input)?;
                let keys = self.physical_exprs(&d.keys, &input_schema)?;
                let mut order =
                    self.physical_order(std::slice::from_ref(&d.order), &input_schema)?;
                let order = order.pop().ok_or_else(|| {
                    EngineError::Internal("a deduplication without its order".to_string())
                })?;
                let time_unit_ns = match order.expr.data_type(input_schema.as_arrow())? {
                    DataType::Timestamp(unit, _) => unit_nanos(unit),
                    other => {
                        return Err(EngineError::Internal(format!(
                            "a deduplication ordered by a {other} column"
                        )));
                    }
                };
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    let spec = DeduplicateSpec {
                        keys: keys.clone(),
                        order: order.clone(),
                        time_unit_ns,
                        keep: d.keep,
                    };
                    Ok(Box::new(
                        DeduplicateOperator::try_new(
                            info("Deduplicate", &d.schema),
                            Arc::new(input_schema.as_arrow().clone()),
                            spec,
                        )?
                        .with_ttl(d.ttl.map(|ttl| StateTtl::new(ttl, wall_clock()))),
                    ))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::Lead(l) => {
                let input_schema = l.input.schema();
                let inputs = self.build(&l.input)?;
                let keys = self.physical_exprs(&l.partition, &input_schema)?;
                let time = self
                    .ctx
                    .state
                    .create_physical_expr(l.order.expr.clone(), &input_schema)?;
                let time_unit_ns =
                    timestamp_unit_ns(&time.data_type(input_schema.as_arrow())?, "LEAD's order")?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    // LEAD has LAG's arguments: value, offset, default.
                    let leads = self
                        .over_functions(&l.functions, &input_schema)?
                        .into_iter()
                        .map(|f| match f {
                            OverFunction::Lag(Lag {
                                value,
                                offset,
                                default,
                            }) => Ok(Lead {
                                value,
                                offset,
                                default,
                            }),
                            OverFunction::Aggregate(_) => Err(EngineError::Internal(
                                "an aggregate among LEAD functions".to_string(),
                            )),
                        })
                        .collect::<EngineResult<Vec<_>>>()?;
                    Ok(Box::new(LeadOperator::try_new(
                        info("Lead", &l.schema),
                        Arc::new(input_schema.as_arrow().clone()),
                        LeadSpec {
                            keys: keys.clone(),
                            time: Arc::clone(&time),
                            time_unit_ns,
                            leads,
                        },
                    )?))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::OverAggregate(o) => {
                let input_schema = o.input.schema();
                let inputs = self.build(&o.input)?;
                let state = self.ctx.state;
                let keys = self.physical_exprs(&o.partition, &input_schema)?;
                let time = state.create_physical_expr(o.order.expr.clone(), &input_schema)?;
                let time_unit_ns = timestamp_unit_ns(
                    &time.data_type(input_schema.as_arrow())?,
                    "an OVER aggregation's order",
                )?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    let spec = OverAggregateSpec {
                        keys: keys.clone(),
                        time: Arc::clone(&time),
                        time_unit_ns,
                        frame: o.frame,
                        functions: self.over_functions(&o.functions, &input_schema)?,
                    };
                    Ok(Box::new(OverAggregateOperator::try_new(
                        info("OverAggregate", &o.schema),
                        Arc::new(input_schema.as_arrow().clone()),
                        spec,
                    )?))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::IntervalJoin(j) => {
                let (left, right) = (self.build(&j.join.left)?, self.build(&j.join.right)?);
                let left_schema = j.join.left.schema();
                let right_schema = j.join.right.schema();
                let side =
                    |schema: &DFSchema, keys: &[Expr], time: usize| -> EngineResult<IntervalSide> {
                        let unit = match schema.field(time).data_type() {
                            DataType::Timestamp(unit, _) => unit_nanos(*unit),
                            other => {
                                return Err(EngineError::Internal(format!(
                                    "interval join over a {other} column"
                                )));
                            }
                        };
                        Ok(IntervalSide {
                            schema: Arc::new(schema.as_arrow().clone()),
                            keys: self.key_encoder(keys, schema)?,
                            time_index: time,
                            time_unit_ns: unit,
                        })
                    };
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&left, &right], || {
                    let spec = IntervalJoinSpec {
                        kind: j.join.kind,
                        left: side(&left_schema, &j.join.left_keys, j.left_time)?,
                        right: side(&right_schema, &j.join.right_keys, j.right_time)?,
                        lower: j.lower,
                        upper: j.upper,
                        residual: self.residual(&j.join)?,
                    };
                    Ok(Box::new(IntervalJoinOperator::new(
                        info("IntervalJoin", &j.join.schema),
                        spec,
                    )))
                })?;
                self.stage(id, plan, ops, vec![left, right], distribution)
            }
            StreamPlan::WindowJoin(j) => {
                let (left, right) = (self.build(&j.join.left)?, self.build(&j.join.right)?);
                let left_schema = j.join.left.schema();
                let right_schema = j.join.right.schema();
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&left, &right], || {
                    let spec = WindowJoinSpec {
                        kind: j.join.kind,
                        window: j.window,
                        lag: j.lag,
                        left: WindowJoinSide {
                            schema: Arc::new(left_schema.as_arrow().clone()),
                            keys: self.key_encoder(&j.join.left_keys, &left_schema)?,
                            bounds: j.left_bounds.clone(),
                        },
                        right: WindowJoinSide {
                            schema: Arc::new(right_schema.as_arrow().clone()),
                            keys: self.key_encoder(&j.join.right_keys, &right_schema)?,
                            bounds: j.right_bounds.clone(),
                        },
                        residual: self.residual(&j.join)?,
                    };
                    Ok(Box::new(WindowJoinOperator::new(
                        info("WindowJoin", &j.join.schema),
                        spec,
                    )))
                })?;
                self.stage(id, plan, ops, vec![left, right], distribution)
            }
            StreamPlan::RegularJoin(j) => {
                let (left, right) = (self.build(&j.join.left)?, self.build(&j.join.right)?);
                let left_schema = without_op(&j.join.left)?;
                let right_schema = without_op(&j.join.right)?;
                let both = left_schema.join(&right_schema)?;
                let residual = j
                    .join
                    .residual
                    .as_ref()
                    .map(|r| self.ctx.state.create_physical_expr(r.clone(), &both))
                    .transpose()?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&left, &right], || {
                    let side = |schema: &DFSchema, keys: &[Expr], updating: bool| {
                        Ok::<_, EngineError>(RegularJoinSide {
                            schema: Arc::new(schema.as_arrow().clone()),
                            updating,
                            keys: self.key_encoder(keys, schema)?,
                        })
                    };
                    let spec = RegularJoinSpec {
                        kind: j.join.kind,
                        left: side(&left_schema, &j.join.left_keys, j.join.left.is_updating())?,
                        right: side(
                            &right_schema,
                            &j.join.right_keys,
                            j.join.right.is_updating(),
                        )?,
                        residual: residual.clone(),
                        ttl: j.ttl,
                        updating: j.updating,
                    };
                    Ok(Box::new(RegularJoinOperator::try_new(
                        info("RegularJoin", &j.schema),
                        spec,
                        wall_clock(),
                    )?))
                })?;
                self.stage(id, plan, ops, vec![left, right], distribution)
            }
            StreamPlan::TemporalJoin(j) => {
                let (left, right) = (self.build(&j.left)?, self.build(&j.right)?);
                let left_schema = j.left.schema();
                let unit = |schema: &DFSchema, index: usize| {
                    timestamp_unit_ns(schema.field(index).data_type(), "a temporal join's time")
                };
                let (left_unit_ns, right_unit_ns) = (
                    unit(&left_schema, j.left_time)?,
                    unit(&j.right_schema, j.right_time)?,
                );
                let compile = |expr: &Option<Expr>, schema: &DFSchema| {
                    expr.as_ref()
                        .map(|e| self.ctx.state.create_physical_expr(e.clone(), schema))
                        .transpose()
                };
                let residual = compile(&j.residual, &j.schema)?;
                let right_filter = compile(&j.right_filter, &j.right_schema)?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&left, &right], || {
                    let spec = TemporalJoinSpec {
                        kind: j.kind,
                        left_schema: Arc::new(left_schema.as_arrow().clone()),
                        left_keys: self.key_encoder(&j.left_keys, &left_schema)?,
                        left_time: j.left_time,
                        left_unit_ns,
                        right_schema: Arc::new(j.right_schema.as_arrow().clone()),
                        right_updating: j.right.is_updating(),
                        right_keys: self.key_encoder(&j.right_keys, &j.right_schema)?,
                        right_time: j.right_time,
                        right_unit_ns,
                        right_columns: j.right_columns.clone(),
                        right_filter: right_filter.clone(),
                        residual: residual.clone(),
                    };
                    Ok(Box::new(TemporalJoinOperator::try_new(
                        info("TemporalJoin", &j.schema),
                        spec,
                    )?))
                })?;
                self.stage(id, plan, ops, vec![left, right], distribution)
            }
            StreamPlan::LookupJoin(j) => {
                let inputs = self.build(&j.left)?;
                let left_schema = j.left.schema();
                let compile = |expr: &Option<Expr>, schema: &DFSchema| {
                    expr.as_ref()
                        .map(|e| self.ctx.state.create_physical_expr(e.clone(), schema))
                        .transpose()
                };
                let residual = compile(&j.residual, &j.schema)?;
                let right_filter = compile(&j.right_filter, &j.right_schema)?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    let table = match (&j.relation.table, &j.relation.view) {
                        (Some(log), _) => LookupTable::Table(Arc::clone(log)),
                        (None, Some(view)) => LookupTable::View(Arc::clone(view)),
                        (None, None) => {
                            return Err(EngineError::Internal(format!(
                                "a lookup join on {}, which has no rows to read",
                                j.relation.name
                            )));
                        }
                    };
                    let spec = LookupJoinSpec {
                        kind: j.kind,
                        left_keys: self.key_encoder(&j.left_keys, &left_schema)?,
                        right_schema: Arc::new(j.right_schema.as_arrow().clone()),
                        right_keys: self.key_encoder(&j.right_keys, &j.right_schema)?,
                        right_columns: j.right_columns.clone(),
                        right_filter: right_filter.clone(),
                        residual: residual.clone(),
                    };
                    Ok(Box::new(LookupJoinOperator::try_new(
                        info("LookupJoin", &j.schema),
                        spec,
                        table,
                    )?))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::MatchRecognize(m) => {
                let inputs = self.build(&m.input)?;
                let distribution = self.distribution(plan)?;
                let ops = self.instances(&distribution, &[&inputs], || {
                    let spec = MatchRecognizeSpec::try_new(m, self.ctx.state)?;
                    Ok(Box::new(MatchRecognizeOperator::try_new(
                        info("MatchRecognize", &m.schema),
                        spec,
                    )?))
                })?;
                self.stage(id, plan, ops, vec![inputs], distribution)
            }
            StreamPlan::Limit { input, skip, fetch } => {
                let schema = input.schema();
                let inputs = self.build(input)?;
                let op = LimitOperator::new(info("Limit", &schema), *skip, *fetch);
                self.stage(
                    id,
                    plan,
                    vec![Box::new(op)],
                    vec![inputs],
                    Distribution::Single,
                )
            }
        }
    }

    /// The operators of a node: one per instance its distribution asks for.
    fn instances(
        &self,
        distribution: &Distribution,
        inputs: &[&Vec<Input>],
        make: impl Fn() -> EngineResult<Box<dyn Operator>>,
    ) -> EngineResult<Vec<Box<dyn Operator>>> {
        let count = match distribution {
            Distribution::PerChannel => inputs.iter().map(|i| i.len()).sum(),
            Distribution::Single => 1,
            Distribution::Keyed(_) => self.ctx.parallelism.max(1),
        };
        (0..count).map(|_| make()).collect()
    }

    /// How the instances of `plan`'s operator get their rows ([`StreamPlan::partitioning`],
    /// which EXPLAIN prints), with the keys compiled over each input.
    fn distribution(&self, plan: &StreamPlan) -> EngineResult<Distribution> {
        Ok(match plan.partitioning() {
            None | Some(Partitioning::Single) => Distribution::Single,
            Some(Partitioning::PerChannel) => Distribution::PerChannel,
            Some(Partitioning::Hash(keys)) => Distribution::Keyed(
                keys.into_iter()
                    .zip(plan.inputs())
                    .map(|(keys, input)| {
                        let schema = input.schema();
                        keys.into_iter()
                            .map(|e| self.ctx.state.create_physical_expr(e, &schema))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        })
    }

    /// Spawns the instances `ops` of node `plan` (numbered `id`), each with a context holding
    /// the state tables the node declares, over `inputs` (per logical input, its channels),
    /// wired as `distribution` says; returns their output channels.
    fn stage(
        &mut self,
        id: usize,
        plan: &StreamPlan,
        ops: Vec<Box<dyn Operator>>,
        inputs: Vec<Vec<Input>>,
        distribution: Distribution,
    ) -> EngineResult<Vec<Input>> {
        let tables = plan.state_tables();
        let parallel = ops.len();
        let name = ops.first().map(|op| op.info().name.clone());
        let node = NodeMetrics::new(id, name.clone().unwrap_or_default(), false, parallel);
        let ops: Vec<_> = ops
            .into_iter()
            .zip(node.instances.clone())
            .enumerate()
            .map(|(instance, (op, metrics))| {
                let late = Arc::clone(&self.metrics.late_rows);
                let ctx = OperatorContext::new(id, instance, tables.clone(), late);
                (op, ctx, metrics)
            })
            .collect();
        self.metrics.operators.push(node);
        if let Some(name) = name {
            self.metrics.instances.push((name, parallel));
        }
        match distribution {
            Distribution::PerChannel => {
                let channels = inputs.into_iter().flatten();
                ops.into_iter()
                    .zip(channels)
                    .enumerate()
                    .map(|(instance, (op, input))| {
                        self.operator(PartId { node: id, instance }, op, vec![(0, input)])
                    })
                    .collect()
            }
            Distribution::Keyed(keys) if parallel > 1 => {
                // Per instance, its channels from every exchange, tagged with the input.
                let mut wired: Vec<Vec<(usize, Input)>> =
                    (0..parallel).map(|_| Vec::new()).collect();
                for ((side, channels), keys) in inputs.into_iter().enumerate().zip(keys) {
                    for input in channels {
                        let (senders, receivers): (Vec<_>, Vec<_>) = (0..parallel)
                            .map(|_| mpsc::channel(CHANNEL_CAPACITY))
                            .unzip();
                        let partitioner = HashPartitioner::new(keys.clone(), parallel);
                        let live = LiveTask::new(&self.ctx.live_tasks);
                        self.tasks.spawn(async move {
                            let _live = live;
                            let exchange = exchange::run_exchange(partitioner, input.rx, senders);
                            panics::guard("a hash exchange", exchange).await
                        });
                        for (instance, rx) in receivers.into_iter().enumerate() {
                            wired[instance].push((
                                side,
                                Input {
                                    rx,
                                    bounded: input.bounded,
                                },
                            ));
                        }
                    }
                }
                ops.into_iter()
                    .zip(wired)
                    .enumerate()
                    .map(|(instance, (op, inputs))| {
                        self.operator(PartId { node: id, instance }, op, inputs)
                    })
                    .collect()
            }
            Distribution::Single | Distribution::Keyed(_) => {
                let inputs = inputs
                    .into_iter()
                    .enumerate()
                    .flat_map(|(side, channels)| channels.into_iter().map(move |c| (side, c)))
                    .collect();
                let mut outputs = Vec::new();
                if let Some(op) = ops.into_iter().next() {
                    outputs.push(self.operator(
                        PartId {
                            node: id,
                            instance: 0,
                        },
                        op,
                        inputs,
                    )?);
                }
                Ok(outputs)
            }
        }
    }

    /// Join keys evaluated over one input.
    /// DataFusion's physical expressions of `exprs` over `schema`.
    fn physical_exprs(
        &self,
        exprs: &[Expr],
        schema: &DFSchema,
    ) -> EngineResult<Vec<Arc<dyn PhysicalExpr>>> {
        Ok(exprs
            .iter()
            .map(|e| self.ctx.state.create_physical_expr(e.clone(), schema))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// DataFusion's physical sort expressions of `order` over `schema`.
    fn physical_order(
        &self,
        order: &[SortExpr],
        schema: &DFSchema,
    ) -> EngineResult<Vec<PhysicalSortExpr>> {
        Ok(create_physical_sort_exprs(
            order,
            schema,
            self.ctx.state.execution_props(),
            &PhysicalPlanningContext::default(),
        )?)
    }

    fn key_encoder(&self, keys: &[Expr], schema: &DFSchema) -> EngineResult<KeyEncoder> {
        let exprs = self.physical_exprs(keys, schema)?;
        let types = exprs
            .iter()
            .map(|e| e.data_type(schema.as_arrow()))
            .collect::<Result<Vec<_>, _>>()?;
        KeyEncoder::try_new(exprs, &types)
    }

    /// A join's residual condition, over a left row followed by a right row (of append-only
    /// inputs).
    fn residual(&self, join: &JoinInputs) -> EngineResult<Option<Arc<dyn PhysicalExpr>>> {
        let Some(residual) = &join.residual else {
            return Ok(None);
        };
        let both = join.left.schema().join(&join.right.schema())?;
        Ok(Some(
            self.ctx
                .state
                .create_physical_expr(residual.clone(), &both)?,
        ))
    }
    /// DataFusion's physical group keys and aggregate functions for an aggregate (window
    /// columns excluded from `keys`).
    fn aggregate_exprs(
        &self,
        keys: &[Expr],
        grouping_sets: Option<&Vec<Vec<bool>>>,
        aggregate_exprs: &[Expr],
        input_schema: &DFSchema,
    ) -> EngineResult<AggregateExprs> {
        let arrow_schema = input_schema.as_arrow();
        let state = self.ctx.state;
        let keys = keys
            .iter()
            .map(|e| {
                Ok((
                    state.create_physical_expr(e.clone(), input_schema)?,
                    e.schema_name().to_string(),
                ))
            })
            .collect::<EngineResult<Vec<_>>>()?;
        let group_by = match grouping_sets {
            Some(masks) => {
                let nulls = keys
                    .iter()
                    .map(|(e, name)| {
                        let t = e.data_type(arrow_schema)?;
                        let null: Arc<dyn PhysicalExpr> =
                            Arc::new(Literal::new(ScalarValue::try_from(&t)?));
                        Ok((null, name.clone()))
                    })
                    .collect::<EngineResult<Vec<_>>>()?;
                PhysicalGroupBy::new(keys, nulls, masks.clone(), true)
            }
            None => PhysicalGroupBy::new_single(keys),
        };
        let planning = PhysicalPlanningContext::default();
        let mut aggregates = Vec::new();
        let mut filters = Vec::new();
        for e in aggregate_exprs {
            let lowered = LoweredAggregateBuilder::new(
                e,
                input_schema,
                arrow_schema,
                state.execution_props(),
                &planning,
            )
            .build()?;
            aggregates.push(lowered.aggregate);
            filters.push(lowered.filter);
        }
        AggregateExprs::try_new(aggregates, filters, group_by, arrow_schema)
    }

    /// The physical form of an OVER aggregation's window functions: aggregates lowered as
    /// DataFusion lowers them, `LAG(x, n, default)` with its constant offset and default.
    fn over_functions(
        &self,
        functions: &[Expr],
        input_schema: &DFSchema,
    ) -> EngineResult<Vec<OverFunction>> {
        use datafusion::logical_expr::expr::{AggregateFunction, WindowFunctionDefinition};
        let state = self.ctx.state;
        let arrow_schema = input_schema.as_arrow();
        let planning = PhysicalPlanningContext::default();
        let mut out = Vec::new();
        for e in functions {
            let mut expr = e;
            while let Expr::Alias(a) = expr {
                expr = &a.expr;
            }
            let Expr::WindowFunction(w) = expr else {
                return Err(EngineError::Internal(format!("{e} is no window function")));
            };
            match &w.fun {
                WindowFunctionDefinition::AggregateUDF(udaf) => {
                    let aggregate = Expr::AggregateFunction(AggregateFunction::new_udf(
                        Arc::clone(udaf),
                        w.params.args.clone(),
                        w.params.distinct,
                        None,
                        Vec::new(),
                        w.params.null_treatment,
                    ))
                    .alias(e.schema_name().to_string());
                    let lowered = LoweredAggregateBuilder::new(
                        &aggregate,
                        input_schema,
                        arrow_schema,
                        state.execution_props(),
                        &planning,
                    )
                    .build()?;
                    out.push(OverFunction::Aggregate(lowered.aggregate));
                }
                WindowFunctionDefinition::WindowUDF(_) => {
                    let (offset, default) = crate::plan::planner::lag_parts(w)?;
                    let value_expr = w.params.args.first().cloned().ok_or_else(|| {
                        EngineError::Internal("LAG without its argument".to_string())
                    })?;
                    let value = state.create_physical_expr(value_expr, input_schema)?;
                    let default = default.cast_to(&value.data_type(arrow_schema)?)?;
                    out.push(OverFunction::Lag(Lag {
                        value,
                        offset,
                        default,
                    }));
                }
            }
        }
        Ok(out)
    }

    /// Spawns one operator instance over its input channels, each tagged with the logical
    /// input (join side) it belongs to; a restored dataflow's instance first gets its state.
    fn operator(
        &mut self,
        part: PartId,
        (mut op, mut ctx, metrics): (Box<dyn Operator>, OperatorContext, Arc<OperatorMetrics>),
        inputs: Vec<(usize, Input)>,
    ) -> EngineResult<Input> {
        let checkpoint = match &self.ctx.checkpoint {
            Some(setup) => {
                if let Some(snapshot) = setup.restore.as_ref().and_then(|r| r.take_operator(part)) {
                    driver::restore(op.as_mut(), &mut ctx, snapshot)?;
                }
                Some(driver::OperatorCheckpoint {
                    handle: Arc::clone(&setup.handle),
                    part,
                })
            }
            None => None,
        };
        if let Some(table) = &self.ctx.late_rows {
            ctx.set_late_table(Arc::clone(table), op.info().name.clone());
        }
        ctx.set_state_account(StateAccount::new(
            Arc::clone(&self.ctx.memory),
            op.info().name.clone(),
            part.instance,
        ));
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let live = LiveTask::new(&self.ctx.live_tasks);
        let bounded = inputs.iter().all(|(_, i)| i.bounded);
        let mut receivers = Vec::with_capacity(inputs.len());
        let mut wiring = Vec::with_capacity(inputs.len());
        for (side, input) in inputs {
            receivers.push(input.rx);
            wiring.push(driver::InputChannel {
                input: side,
                bounded: input.bounded,
            });
        }
        let place = format!("operator {}", op.info().name);
        self.tasks.spawn(async move {
            let _live = live;
            let run = driver::run_operator(op, ctx, receivers, wiring, tx, metrics, checkpoint);
            panics::guard(&place, run).await
        });
        Ok(Input { rx, bounded })
    }

    /// The readers of a source: one, or one per instance when its connector can split it.
    fn source(&mut self, id: usize, node: &SourceNode) -> EngineResult<Vec<Input>> {
        let relation = &node.relation;
        // `format.on-error` is the engine's: the connector gets the other options.
        let (on_error, options) = OnError::split_options(&relation.options)?;
        let metrics = Arc::new(SourceMetrics::new(
            &relation.name,
            on_error,
            self.ctx.dead_letters.clone(),
        )?);
        if let Some(view) = &relation.view {
            // A view's rows come with its job's watermarks: nothing to compute here.
            let stream = view.follow(
                node.projection.clone(),
                self.ctx.follow_pace,
                &relation.name,
            )?;
            self.metrics
                .sources
                .push((relation.name.clone(), Arc::clone(&metrics)));
            let name = format!("Source {}", relation.name);
            self.metrics.instances.push((name.clone(), 1));
            let node_metrics = NodeMetrics::new(id, name, true, 1);
            let counters = Arc::clone(&node_metrics.instances[0]);
            self.metrics.operators.push(node_metrics);
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            let schema = Arc::new(node.schema.as_arrow().clone());
            let live = LiveTask::new(&self.ctx.live_tasks);
            let place = format!("source {}", relation.name);
            self.tasks.spawn(async move {
                let _live = live;
                let run = driver::run_view_source(stream, schema, metrics, counters, tx);
                panics::guard(&place, run).await
            });
            return Ok(vec![Input { rx, bounded: false }]);
        }
        let mut streams = Vec::new();
        // What a connector reader produces: the columns the query reads, then those only the
        // watermark reads (which the source task drops after computing the watermark). A
        // table's rows come whole, and the source task projects them.
        let (read, projection) = match (&node.projection, &relation.table) {
            (Some(wanted), None) => {
                let mut read = wanted.clone();
                for column in self.watermark_columns(relation)? {
                    if !read.contains(&column) {
                        read.push(column);
                    }
                }
                let projection = (read.len() > wanted.len()).then(|| (0..wanted.len()).collect());
                (Some(read), projection)
            }
            (wanted, _) => (None, wanted.clone()),
        };
        let read_schema = match &read {
            Some(columns) => Arc::new(relation.schema.project(columns)?),
            None => Arc::clone(&relation.schema),
        };
        match (&relation.table, &relation.connector) {
            (Some(table), _) => {
                let m = Arc::clone(&metrics);
                let start = self
                    .start_of(PartId {
                        node: id,
                        instance: 0,
                    })
                    .rows;
                let stream = table
                    .follow_from(start)
                    .map(move |b| {
                        m.add_rows(b.num_rows() as u64);
                        Ok(b)
                    })
                    .boxed();
                streams.push((stream, false, None, None));
            }
            (None, Some(connector)) => {
                let connector = self.ctx.connectors.source(connector).ok_or_else(|| {
                    EngineError::Internal(format!("connector {connector} is not registered"))
                })?;
                let count = if connector.splittable(&relation.options) {
                    self.ctx.parallelism.max(1)
                } else {
                    1
                };
                for index in 0..count {
                    let start = self.start_of(PartId {
                        node: id,
                        instance: index,
                    });
                    let reader = connector.open(SourceContext {
                        source_name: relation.name.clone(),
                        schema: Arc::clone(&relation.schema),
                        projection: read.clone(),
                        options: options.clone(),
                        metrics: Arc::clone(&metrics),
                        batch_size: self.ctx.batch_size,
                        split: SourceSplit { index, count },
                        parallelism: self.ctx.parallelism.max(1),
                        start_row: start.rows,
                        start_position: start.connector,
                        metadata: relation.metadata.clone(),
                    })?;
                    let stream = with_dead_letters(reader.stream, Arc::clone(&metrics));
                    streams.push((stream, reader.bounded, reader.position, reader.partitions));
                }
            }
            (None, None) => {
                return Err(EngineError::Internal(format!(
                    "relation {} has neither rows nor a connector",
                    relation.name
                )));
            }
        };
        self.metrics
            .sources
            .push((relation.name.clone(), Arc::clone(&metrics)));
        let name = format!("Source {}", relation.name);
        self.metrics.instances.push((name.clone(), streams.len()));
        let node = NodeMetrics::new(id, name, true, streams.len());
        let counters = node.instances.clone();
        self.metrics.operators.push(node);
        let mut outputs = Vec::with_capacity(streams.len());
        for (instance, ((stream, bounded, connector_position, partitions), metrics)) in
            streams.into_iter().zip(counters).enumerate()
        {
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            let part = PartId { node: id, instance };
            let checkpoint = self
                .ctx
                .checkpoint
                .as_ref()
                .map(|setup| driver::SourceCheckpoint {
                    handle: Arc::clone(&setup.handle),
                    part,
                    start: self.start_of(part),
                });
            self.sources.push(driver::SourceTask {
                name: relation.name.clone(),
                stream,
                bounded,
                projection: projection.clone(),
                watermark: self.watermark_generator(relation, &read_schema)?,
                partitions,
                output: tx,
                metrics,
                checkpoint,
                connector_position,
            });
            outputs.push(Input { rx, bounded });
        }
        Ok(outputs)
    }

    /// Where source reader `part` starts: a restored checkpoint's position, or the beginning.
    fn start_of(&self, part: PartId) -> checkpoint::SourcePosition {
        self.ctx
            .checkpoint
            .as_ref()
            .and_then(|c| c.restore.as_ref())
            .map(|r| r.source(part))
            .unwrap_or_default()
    }

    /// The columns of `relation` its watermark expression reads.
    fn watermark_columns(
        &self,
        relation: &crate::catalog::RelationDef,
    ) -> EngineResult<Vec<usize>> {
        let Some(spec) = &relation.watermark else {
            return Ok(Vec::new());
        };
        let schema =
            DFSchema::try_from_qualified_schema(relation.name.as_str(), relation.schema.as_ref())?;
        let expr = self
            .ctx
            .state
            .create_logical_expr(&spec.expr_sql, &schema)?;
        let mut columns = vec![schema.index_of_column_by_name(None, &spec.column)];
        columns.extend(
            expr.column_refs()
                .into_iter()
                .map(|c| schema.index_of_column(c).ok()),
        );
        Ok(columns.into_iter().flatten().collect())
    }

    /// The watermark generator of one reader of `relation` whose batches have `schema`, if the
    /// relation declares a watermark.
    fn watermark_generator(
        &self,
        relation: &crate::catalog::RelationDef,
        read_schema: &SchemaRef,
    ) -> EngineResult<Option<WatermarkGenerator>> {
        let Some(spec) = &relation.watermark else {
            return Ok(None);
        };
        let schema =
            DFSchema::try_from_qualified_schema(relation.name.as_str(), read_schema.as_ref())?;
        let expr = self
            .ctx
            .state
            .create_logical_expr(&spec.expr_sql, &schema)?;
        let time = read_schema.index_of(&spec.column).ok().and_then(|i| {
            match read_schema.field(i).data_type() {
                DataType::Timestamp(unit, _) => Some((i, unit_nanos(*unit))),
                _ => None,
            }
        });
        let generator = match (time, shifted_column(&expr, &schema)) {
            (Some((i, unit_ns)), Some((j, minus_ns))) if i == j => {
                WatermarkGenerator::shifted(i, unit_ns, minus_ns)
            }
            _ => WatermarkGenerator::new(self.ctx.state.create_physical_expr(expr, &schema)?),
        };
        Ok(Some(match time {
            Some((i, unit_ns)) => generator.with_time_column(i, unit_ns),
            None => generator,
        }))
    }
}

/// How the instances of an operator get their input rows.
enum Distribution {
    /// One instance per input channel, fed by that channel alone: stateless operators.
    PerChannel,
    /// One instance reading every channel of every input: state over all rows.
    Single,
    /// One instance per unit of parallelism; the rows of input `i` are spread by the hash of
    /// `keys[i]` (one list per input, of matching types), so equal keys meet in one instance.
    Keyed(Vec<Vec<Arc<dyn PhysicalExpr>>>),
}

/// `column` or `column - INTERVAL ...` (days and smaller units): the column's index and the
/// interval in nanoseconds.
fn shifted_column(expr: &Expr, schema: &DFSchema) -> Option<(usize, i64)> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    match expr {
        Expr::Column(c) => Some((schema.index_of_column(c).ok()?, 0)),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Minus,
            right,
        }) => {
            let Expr::Column(c) = left.as_ref() else {
                return None;
            };
            let minus = match right.as_ref() {
                Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
                    // Past the i64 range (about 292 years): not a delay a watermark can use.
                    (v.days as i64)
                        .checked_mul(86_400_000_000_000)?
                        .checked_add(v.nanoseconds)?
                }
                Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
                    v.days as i64 * 86_400_000_000_000 + v.milliseconds as i64 * 1_000_000
                }
                _ => return None,
            };
            Some((schema.index_of_column(c).ok()?, minus))
        }
        _ => None,
    }
}

fn info(name: &str, schema: &DFSchema) -> OperatorInfo {
    OperatorInfo {
        name: name.to_string(),
        schema: Arc::new(schema.as_arrow().clone()),
    }
}

/// The columns of `input`'s rows without the leading `__op` of a changelog.
/// Nanoseconds per unit of a time attribute of type `data_type` (`what` names it in the error).
fn timestamp_unit_ns(data_type: &DataType, what: &str) -> EngineResult<i64> {
    match data_type {
        DataType::Timestamp(unit, _) => Ok(unit_nanos(*unit)),
        other => Err(EngineError::Internal(format!(
            "{what} is a {other} column, not a timestamp"
        ))),
    }
}

fn without_op(input: &StreamPlan) -> EngineResult<DFSchema> {
    let schema = input.schema();
    if !input.is_updating() {
        return Ok(schema.as_ref().clone());
    }
    let fields = schema
        .iter()
        .skip(1)
        .map(|(q, f)| (q.cloned(), Arc::clone(f)))
        .collect();
    Ok(DFSchema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )?)
}
