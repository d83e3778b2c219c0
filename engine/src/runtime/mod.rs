//! Running a streaming plan: tasks, channels, watermarks and checkpoint barriers.
//!
//! [`crate::build::launch`] instantiates a `StreamPlan` as a dataflow of tokio tasks connected
//! by bounded channels of [`Message`]s (re-exported here as [`launch`]), and returns a
//! [`RunningQuery`] from which the caller pulls result batches. Dropping the `RunningQuery`
//! aborts every task of the query and frees what it held.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SessionState;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::connector::ConnectorRegistry;
use crate::error::{EngineError, EngineResult};

pub use crate::build::{launch, launch_into};

pub mod checkpoint;
pub mod driver;
pub(crate) mod exchange;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod partition_watermarks;
pub mod source;

pub use metrics::{NodeMetrics, NodeTotals, OperatorMetrics, QueryMetrics};

use checkpoint::{CheckpointHandle, RestoredState};
use message::Message;

/// Messages a channel holds before its producer waits.
pub(crate) const CHANNEL_CAPACITY: usize = 16;

/// What launching a query needs from the engine.
pub struct LaunchContext<'a> {
    /// For creating physical expressions (session time zone, functions).
    pub state: &'a SessionState,
    pub connectors: &'a ConnectorRegistry,
    /// Preferred rows per source batch.
    pub batch_size: usize,
    /// Parallel instances of each keyed operator and of each splittable source.
    pub parallelism: usize,
    /// Counts the dataflow tasks alive in the engine (for tests and monitoring).
    pub live_tasks: Arc<std::sync::atomic::AtomicUsize>,
    /// For a job that checkpoints: the handle its sources and operators report to, and the
    /// checkpoint it continues from, if any.
    pub checkpoint: Option<CheckpointSetup>,
    /// The query's state budget: each operator instance charges its state to it.
    pub memory: Arc<memory::QueryMemory>,
    /// Where sources with `format.on-error = 'dead-letter'` send their malformed rows (the
    /// engine's `eddy_dead_letters`, under this job's name); `None` refuses such sources.
    pub dead_letters: Option<Arc<dyn crate::connector::DeadLetterSink>>,
    /// How the dataflow's readers of materialized views keep pace with the views' jobs: a
    /// job's wait for them, a client's query is cut off when too far behind.
    pub follow_pace: crate::view::FollowerPace,
    /// Where operators append the rows they drop as late (a job's `WITH (late.rows = ...)`);
    /// `None`: they only count them.
    pub late_rows: Option<Arc<crate::late_rows::LateRowTable>>,
}

/// How a dataflow takes part in checkpoints.
#[derive(Clone)]
pub struct CheckpointSetup {
    pub handle: Arc<CheckpointHandle>,
    pub restore: Option<Arc<RestoredState>>,
}

/// Runs file work (encoding, writing, syncing) without holding up the runtime's other tasks
/// where the runtime allows it (a multi-threaded one: the worker hands its queue to another
/// thread meanwhile).
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Held by every dataflow task; dropped when the task ends or is aborted.
pub(crate) struct LiveTask(Arc<std::sync::atomic::AtomicUsize>);

impl LiveTask {
    pub(crate) fn new(counter: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A continuous query in flight.
pub struct RunningQuery {
    pub(crate) schema: SchemaRef,
    pub(crate) output: mpsc::Receiver<Message>,
    pub(crate) tasks: JoinSet<EngineResult<()>>,
    pub(crate) metrics: Arc<QueryMetrics>,
    /// The sources read by a reader that never ends, by name.
    pub(crate) unbounded_sources: Vec<String>,
    pub(crate) finished: bool,
    /// The query's state budget (a view's job charges the view's rows to it too).
    pub(crate) memory: Arc<memory::QueryMemory>,
}

impl RunningQuery {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Stops the dataflow and waits until each of its tasks has ended, so none runs any
    /// more (a sink's job closes its writer only after that).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }

    pub fn metrics(&self) -> &Arc<QueryMetrics> {
        &self.metrics
    }

    /// The query's state budget.
    pub fn memory(&self) -> &Arc<memory::QueryMemory> {
        &self.memory
    }

    /// The sources of the query that never end (push tables, followed files, Kafka, nexmark
    /// without `events.max`): a query reading none of them runs to completion.
    pub fn unbounded_sources(&self) -> &[String] {
        &self.unbounded_sources
    }

    /// The next batch of results; `None` once the query has ended.
    pub async fn next_batch(&mut self) -> EngineResult<Option<RecordBatch>> {
        if self.finished {
            return Ok(None);
        }
        loop {
            match self.recv().await? {
                Some(Message::Data(batch)) => return Ok(Some(batch)),
                Some(Message::Watermark(_) | Message::Barrier(_) | Message::Idle) => continue,
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

    /// The next rows or watermark of the results; `None` once the query has ended.
    pub async fn next_message(&mut self) -> EngineResult<Option<Message>> {
        if self.finished {
            return Ok(None);
        }
        loop {
            match self.recv().await? {
                Some(m @ (Message::Data(_) | Message::Watermark(_))) => return Ok(Some(m)),
                Some(Message::Barrier(_) | Message::Idle) => continue,
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

    /// The next rows, watermark or checkpoint barrier of the results; `None` once the query
    /// has ended.
    pub async fn next_event(&mut self) -> EngineResult<Option<Message>> {
        if self.finished {
            return Ok(None);
        }
        match self.recv().await? {
            Some(Message::End) => {
                self.finished = true;
                Ok(None)
            }
            Some(m) => Ok(Some(m)),
            None => {
                self.finished = true;
                Err(self.failure().await)
            }
        }
    }

    /// The next message of the output, or the error of a task that failed: a failed task
    /// fails the query at once, as other tasks may wait for it forever (a bounded source
    /// waits for every other bounded source of the query to end). `Ok(None)`: the output
    /// closed without a failure seen yet.
    async fn recv(&mut self) -> EngineResult<Option<Message>> {
        loop {
            tokio::select! {
                biased;
                message = self.output.recv() => return Ok(message),
                Some(result) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    let error = match result {
                        Ok(Err(e)) => e,
                        Err(join) if join.is_panic() => task_panicked(join),
                        Ok(Ok(())) | Err(_) => continue,
                    };
                    self.finished = true;
                    return Err(error);
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
                Err(join) if join.is_panic() => return task_panicked(join),
                Err(_) => {}
            }
        }
        EngineError::Internal("the dataflow stopped before its end".to_string())
    }
}

/// The error of a dataflow task whose panic escaped its guard (each task runs inside
/// [`crate::panics::guard`], which names the operator; tokio catches the rest).
fn task_panicked(join: tokio::task::JoinError) -> EngineError {
    let payload = join.into_panic();
    crate::panics::caught("a dataflow task", &*payload)
}
