//! Background jobs: continuous queries that outlive the client that started them.
//!
//! A [`Job`] runs the dataflow of a materialized view in a tokio task of its own and feeds
//! the rows it emits into the view's [`ViewStore`]. The [`JobManager`] lists every job for
//! `SHOW JOBS`; a job that fails stays listed with its error, and a job whose input ended stays
//! listed as finished, until its view is dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, DurationMillisecondArray, Int64Array, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, EngineResult};
use crate::plan::StreamPlan;
use crate::runtime::message::EventTime;
use crate::runtime::{QueryMetrics, RunningQuery};
use crate::view::ViewStore;

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    /// Every input ended and every result was emitted; the view keeps its rows.
    Finished,
    /// The dataflow failed; the view keeps the rows it had.
    Failed(String),
}

impl JobStatus {
    /// The status as SHOW JOBS prints it.
    pub fn name(&self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::Failed(_) => "failed",
        }
    }
}

/// One background job.
pub struct Job {
    pub id: u64,
    /// The view the job maintains.
    pub name: String,
    /// The query the job runs, as the user wrote it.
    pub query: String,
    pub started_at: SystemTime,
    /// The streaming plan the job runs (EXPLAIN of the view).
    pub plan: StreamPlan,
    /// Parallel instances of its keyed operators.
    pub parallelism: usize,
    pub metrics: Arc<QueryMetrics>,
    pub view: Arc<ViewStore>,
    status: Mutex<JobStatus>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Job {
    pub fn status(&self) -> JobStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_status(&self, status: JobStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// The job's output watermark (nanoseconds since the epoch).
    pub fn watermark(&self) -> Option<EventTime> {
        self.view.watermark()
    }

    /// Stops the job's dataflow and frees what it holds.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// The system table that lists the jobs (what `SHOW JOBS` shows, for `SELECT`).
pub const JOBS_TABLE: &str = "eddy_jobs";

/// Every job of the engine, by id.
#[derive(Debug, Default)]
pub struct JobManager {
    jobs: RwLock<BTreeMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
}

/// What starting a job needs.
pub struct JobSpec {
    pub name: String,
    pub query: String,
    pub plan: StreamPlan,
    pub parallelism: usize,
    pub view: Arc<ViewStore>,
}

impl JobManager {
    /// Starts a job pulling from `running` into its view.
    pub fn start(&self, spec: JobSpec, running: RunningQuery) -> Arc<Job> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            name: spec.name,
            query: spec.query,
            started_at: SystemTime::now(),
            plan: spec.plan,
            parallelism: spec.parallelism,
            metrics: Arc::clone(running.metrics()),
            view: spec.view,
            status: Mutex::new(JobStatus::Running),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(Arc::clone(&job), running));
        *job.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        self.write().insert(id, Arc::clone(&job));
        job
    }

    /// All jobs, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.read().values().cloned().collect()
    }

    /// The job maintaining view `name`.
    pub fn for_view(&self, name: &str) -> Option<Arc<Job>> {
        self.read().values().find(|j| j.name == name).cloned()
    }

    /// Stops and forgets the job maintaining view `name`.
    pub fn remove_view(&self, name: &str) {
        let job = {
            let mut jobs = self.write();
            let id = jobs.values().find(|j| j.name == name).map(|j| j.id);
            id.and_then(|id| jobs.remove(&id))
        };
        if let Some(job) = job {
            job.stop();
            // Queries still following the view learn it is gone.
            job.view
                .fail(format!("materialized view \"{name}\" was dropped"));
        }
    }

    /// What `SHOW JOBS` and the `eddy_jobs` table show: one row per job.
    pub fn report(&self) -> EngineResult<RecordBatch> {
        let jobs = self.list();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut ids = Vec::new();
        let mut names = Vec::new();
        let mut queries = Vec::new();
        let mut statuses = Vec::new();
        let mut started = Vec::new();
        let mut rows_in = Vec::new();
        let mut rows_out = Vec::new();
        let mut late = Vec::new();
        let mut watermarks = Vec::new();
        let mut lags = Vec::new();
        let mut state_bytes = Vec::new();
        let mut errors = Vec::new();
        for job in &jobs {
            ids.push(job.id as i64);
            names.push(job.name.clone());
            queries.push(job.query.clone());
            let status = job.status();
            statuses.push(status.name().to_string());
            errors.push(match status {
                crate::jobs::JobStatus::Failed(e) => Some(e),
                _ => None,
            });
            started.push(
                job.started_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64),
            );
            rows_in.push(job.metrics.rows_in() as i64);
            rows_out.push(job.metrics.rows_out() as i64);
            late.push(job.metrics.late_rows() as i64);
            let watermark = job.watermark().map(|w| w.div_euclid(1_000_000));
            watermarks.push(watermark);
            lags.push(watermark.map(|w| now_ms - w));
            state_bytes.push((job.view.bytes() as u64 + job.metrics.state_bytes()) as i64);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(queries)),
            Arc::new(StringArray::from(statuses)),
            Arc::new(TimestampMicrosecondArray::from(started).with_timezone("UTC")),
            Arc::new(Int64Array::from(rows_in)),
            Arc::new(Int64Array::from(rows_out)),
            Arc::new(Int64Array::from(late)),
            Arc::new(TimestampMillisecondArray::from(watermarks)),
            Arc::new(DurationMillisecondArray::from(lags)),
            Arc::new(Int64Array::from(state_bytes)),
            Arc::new(StringArray::from(errors)),
        ];
        Ok(RecordBatch::try_new(jobs_schema(), columns)?)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The job's task: every message of the dataflow into the view, until the end or a failure.
async fn run(job: Arc<Job>, mut running: RunningQuery) {
    loop {
        match running.next_message().await {
            Ok(Some(message)) => {
                if let Err(e) = job.view.apply(message).await {
                    fail(&job, e);
                    return;
                }
            }
            Ok(None) => {
                job.set_status(JobStatus::Finished);
                job.view.finish();
                tracing::info!(job = job.id, view = %job.name, "job finished: its input ended");
                return;
            }
            Err(e) => {
                fail(&job, e);
                return;
            }
        }
    }
}

fn fail(job: &Job, error: EngineError) {
    tracing::error!(job = job.id, view = %job.name, %error, "job failed");
    let message = error.to_string();
    job.set_status(JobStatus::Failed(message.clone()));
    job.view.fail(format!(
        "the job of materialized view \"{}\" failed: {message}",
        job.name
    ));
}

/// The columns of `SHOW JOBS` and the `eddy_jobs` table.
pub fn jobs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new(
            "started_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("rows_out", DataType::Int64, false),
        Field::new("late_rows", DataType::Int64, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new(
            "watermark_lag",
            DataType::Duration(TimeUnit::Millisecond),
            true,
        ),
        Field::new("state_bytes", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}
