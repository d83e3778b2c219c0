//! Background jobs: continuous queries that outlive the client that started them.
//!
//! A [`Job`] runs the dataflow of a materialized view in a tokio task of its own and feeds
//! the rows it emits into the view's [`ViewStore`]. The [`JobManager`] lists every job for
//! `SHOW JOBS`; a job that fails stays listed with its error, and a job whose input ended stays
//! listed as finished, until its view is dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::error::EngineError;
use crate::plan::StreamPlan;
use crate::runtime::message::{EventTime, Message};
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
    /// Rows the job emitted into its view (an updating view counts each `+` and `-`).
    rows_out: AtomicU64,
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

    pub fn rows_out(&self) -> u64 {
        self.rows_out.load(Ordering::Relaxed)
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

/// Every job of the engine, by id.
#[derive(Default)]
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
            rows_out: AtomicU64::new(0),
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
        }
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
                if let Message::Data(batch) = &message {
                    job.rows_out
                        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                }
                if let Err(e) = job.view.apply(message).await {
                    fail(&job, e).await;
                    return;
                }
            }
            Ok(None) => {
                job.set_status(JobStatus::Finished);
                job.view.finish().await;
                tracing::info!(job = job.id, view = %job.name, "job finished: its input ended");
                return;
            }
            Err(e) => {
                fail(&job, e).await;
                return;
            }
        }
    }
}

async fn fail(job: &Job, error: EngineError) {
    tracing::error!(job = job.id, view = %job.name, %error, "job failed");
    let message = error.to_string();
    job.set_status(JobStatus::Failed(message.clone()));
    job.view.fail(message).await;
}
