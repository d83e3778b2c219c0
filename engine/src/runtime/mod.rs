//! Running a streaming plan: tasks, channels and watermarks.
//!
//! [`launch`] instantiates a [`StreamPlan`] as a dataflow of tokio tasks connected by bounded
//! channels of [`Message`]s, and returns a [`RunningQuery`] from which the caller pulls result
//! batches. Dropping the `RunningQuery` aborts every task of the query and frees what it held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::execution::SessionState;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::connector::{ConnectorRegistry, SourceContext, SourceMetrics};
use crate::error::{EngineError, EngineResult};
use crate::operators::filter::FilterOperator;
use crate::operators::limit::LimitOperator;
use crate::operators::project::ProjectOperator;
use crate::operators::source::{BoundedSourceGroup, WatermarkGenerator};
use crate::operators::union::UnionOperator;
use crate::operators::{Operator, OperatorInfo};
use crate::plan::{SourceNode, StreamPlan};

pub mod driver;
pub mod message;

use message::Message;

/// Messages a channel holds before its producer waits.
const CHANNEL_CAPACITY: usize = 16;

/// What launching a query needs from the engine.
pub struct LaunchContext<'a> {
    /// For creating physical expressions (session time zone, functions).
    pub state: &'a SessionState,
    pub connectors: &'a ConnectorRegistry,
    /// Preferred rows per source batch.
    pub batch_size: usize,
    /// Counts the dataflow tasks alive in the engine (for tests and monitoring).
    pub live_tasks: Arc<std::sync::atomic::AtomicUsize>,
}

/// Held by every dataflow task; dropped when the task ends or is aborted.
struct LiveTask(Arc<std::sync::atomic::AtomicUsize>);

impl LiveTask {
    fn new(counter: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters of one running query.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    /// Rows dropped because they arrived after their window or state was emitted.
    pub late_rows: AtomicU64,
    /// Per source: its name and its row counters.
    pub sources: Vec<(String, Arc<SourceMetrics>)>,
}

impl QueryMetrics {
    pub fn late_rows(&self) -> u64 {
        self.late_rows.load(Ordering::Relaxed)
    }
}

/// A continuous query in flight.
pub struct RunningQuery {
    schema: SchemaRef,
    output: mpsc::Receiver<Message>,
    tasks: JoinSet<EngineResult<()>>,
    metrics: Arc<QueryMetrics>,
    finished: bool,
}

impl RunningQuery {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.metrics
    }

    /// The next batch of results; `None` once the query has ended.
    pub async fn next_batch(&mut self) -> EngineResult<Option<RecordBatch>> {
        if self.finished {
            return Ok(None);
        }
        loop {
            match self.output.recv().await {
                Some(Message::Data(batch)) => return Ok(Some(batch)),
                Some(Message::Watermark(_)) | Some(Message::Barrier(_)) => continue,
                Some(Message::End) => {
                    self.finished = true;
                    return Ok(None);
                }
                None => {
                    self.finished = true;
                    return Err(self.failure().await);
                }
            }
        }
    }

    /// Why the dataflow stopped without reaching its end.
    async fn failure(&mut self) -> EngineError {
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Err(e)) => return e,
                Ok(Ok(())) => {}
                Err(join) if join.is_panic() => {
                    return EngineError::Internal(format!("a query task panicked: {join}"));
                }
                Err(_) => {}
            }
        }
        EngineError::Internal("the dataflow stopped before its end".to_string())
    }
}

/// Starts the dataflow of `plan`.
pub fn launch(plan: &StreamPlan, ctx: &LaunchContext<'_>) -> EngineResult<RunningQuery> {
    let mut builder = Builder {
        ctx,
        tasks: JoinSet::new(),
        sources: Vec::new(),
        metrics: QueryMetrics::default(),
    };
    let output = builder.build(plan)?;
    // Sources start last, once every connector opened and the bounded ones are counted.
    let group = BoundedSourceGroup::new(builder.sources.iter().filter(|s| s.bounded).count());
    for source in builder.sources {
        let live = LiveTask::new(&ctx.live_tasks);
        let group = Arc::clone(&group);
        builder.tasks.spawn(async move {
            let _live = live;
            driver::run_source(source, group).await
        });
    }
    Ok(RunningQuery {
        schema: Arc::new(plan.schema().as_arrow().clone()),
        output,
        tasks: builder.tasks,
        metrics: Arc::new(builder.metrics),
        finished: false,
    })
}

struct Builder<'a, 'b> {
    ctx: &'a LaunchContext<'b>,
    tasks: JoinSet<EngineResult<()>>,
    sources: Vec<driver::SourceTask>,
    metrics: QueryMetrics,
}

impl Builder<'_, '_> {
    fn build(&mut self, plan: &StreamPlan) -> EngineResult<mpsc::Receiver<Message>> {
        match plan {
            StreamPlan::Source(source) => self.source(source),
            StreamPlan::Alias { input, .. } => self.build(input),
            StreamPlan::Filter { input, predicate } => {
                let input_schema = input.schema();
                let rx = self.build(input)?;
                let predicate = self
                    .ctx
                    .state
                    .create_physical_expr(predicate.clone(), &input_schema)?;
                let op = FilterOperator::new(info("Filter", &input_schema), predicate);
                Ok(self.operator(Box::new(op), vec![rx]))
            }
            StreamPlan::Project {
                input,
                exprs,
                schema,
            } => {
                let input_schema = input.schema();
                let rx = self.build(input)?;
                let exprs = exprs
                    .iter()
                    .map(|e| {
                        self.ctx
                            .state
                            .create_physical_expr(e.clone(), &input_schema)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let op = ProjectOperator::new(info("Project", schema), exprs);
                Ok(self.operator(Box::new(op), vec![rx]))
            }
            StreamPlan::Union { inputs, schema } => {
                let rxs = inputs
                    .iter()
                    .map(|i| self.build(i))
                    .collect::<EngineResult<Vec<_>>>()?;
                let op = UnionOperator::new(info("Union", schema));
                Ok(self.operator(Box::new(op), rxs))
            }
            StreamPlan::Limit { input, skip, fetch } => {
                let schema = input.schema();
                let rx = self.build(input)?;
                let op = LimitOperator::new(info("Limit", &schema), *skip, *fetch);
                Ok(self.operator(Box::new(op), vec![rx]))
            }
        }
    }

    fn operator(
        &mut self,
        op: Box<dyn Operator>,
        inputs: Vec<mpsc::Receiver<Message>>,
    ) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let live = LiveTask::new(&self.ctx.live_tasks);
        self.tasks.spawn(async move {
            let _live = live;
            driver::run_operator(op, inputs, tx).await
        });
        rx
    }

    fn source(&mut self, node: &SourceNode) -> EngineResult<mpsc::Receiver<Message>> {
        let relation = &node.relation;
        let metrics = Arc::new(SourceMetrics::default());
        let (stream, bounded) = match (&relation.table, &relation.connector) {
            (Some(table), _) => {
                let m = Arc::clone(&metrics);
                let stream = table
                    .follow()
                    .map(move |b| {
                        m.add_rows(b.num_rows() as u64);
                        Ok(b)
                    })
                    .boxed();
                (stream, false)
            }
            (None, Some(connector)) => {
                let connector = self.ctx.connectors.source(connector).ok_or_else(|| {
                    EngineError::Internal(format!("connector {connector} is not registered"))
                })?;
                let reader = connector.open(SourceContext {
                    source_name: relation.name.clone(),
                    schema: Arc::clone(&relation.schema),
                    options: relation.options.clone(),
                    metrics: Arc::clone(&metrics),
                    batch_size: self.ctx.batch_size,
                })?;
                let stream = reader.stream.map(|r| r.map_err(EngineError::from)).boxed();
                (stream, reader.bounded)
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
        let watermark = match &relation.watermark {
            Some(spec) => {
                let schema = DFSchema::try_from_qualified_schema(
                    relation.name.as_str(),
                    relation.schema.as_ref(),
                )?;
                let expr = self
                    .ctx
                    .state
                    .create_logical_expr(&spec.expr_sql, &schema)?;
                let expr = self.ctx.state.create_physical_expr(expr, &schema)?;
                Some(WatermarkGenerator::new(expr))
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        self.sources.push(driver::SourceTask {
            name: relation.name.clone(),
            stream,
            bounded,
            projection: node.projection.clone(),
            watermark,
            output: tx,
        });
        Ok(rx)
    }
}

fn info(name: &str, schema: &DFSchema) -> OperatorInfo {
    OperatorInfo {
        name: name.to_string(),
        schema: Arc::new(schema.as_arrow().clone()),
    }
}
