//! Background jobs: continuous queries that outlive the client that started them.
//!
//! A [`Job`] runs the dataflow of a materialized view or of a sink in a tokio task of its own.
//! A view's job feeds the rows it emits into the view's [`ViewStore`]; a sink's job hands
//! rows, watermarks and the passing of time to the sink's [`SinkWriter`]. The [`JobManager`]
//! lists every job for `SHOW JOBS`; a job that fails stays listed with its error, and a job
//! whose input ended stays listed as finished, until its view or sink is dropped.

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

use crate::checkpoints::{CheckpointData, JobCheckpoints, ViewContents, Written};
use crate::connector::SinkMetrics;
use crate::error::{EngineError, EngineResult};
use crate::operators::sink::{SharedSinkWriter, with_writer};
use crate::operators::window::format_duration;
use crate::plan::StreamPlan;
use crate::runtime::checkpoint::EpochParts;
use crate::runtime::message::{Epoch, EventTime, Message, WATERMARK_END};
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
    /// Where the job's rows go.
    pub output: JobOutput,
    /// The job's checkpoints (`None`: it does not checkpoint).
    pub checkpoints: Option<Arc<JobCheckpoints>>,
    status: Mutex<JobStatus>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set to ask the job's task to stop, and why.
    stop: tokio::sync::watch::Sender<Option<StopReason>>,
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
        match &self.output {
            JobOutput::View(view) => view.watermark(),
            // What the dataflow emitted last; the end of the input is no time.
            JobOutput::Sink(_) => self
                .metrics
                .output_watermark()
                .filter(|w| *w != WATERMARK_END),
        }
    }

    /// The view the job maintains, if it is a view's job.
    pub fn view(&self) -> Option<&Arc<ViewStore>> {
        match &self.output {
            JobOutput::View(view) => Some(view),
            JobOutput::Sink(_) => None,
        }
    }

    /// Bytes the job holds beyond its operators' state: a view's rows, a sink's open files.
    fn output_bytes(&self) -> u64 {
        match &self.output {
            JobOutput::View(view) => view.bytes() as u64,
            JobOutput::Sink(sink) => SinkMetrics::get(&sink.metrics.buffered_bytes),
        }
    }

    /// Stops the job's dataflow and frees what it holds. The job first finishes a checkpoint
    /// it is writing, and a sink's job the files it has open (see [`StopReason`]), so when
    /// this returns nothing of the job touches the disk any more.
    pub async fn stop(&self, reason: StopReason) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut task) = task else { return };
        self.stop.send_replace(Some(reason));
        match tokio::time::timeout(STOP_TIMEOUT, &mut task).await {
            Ok(_) => return,
            Err(_) => tracing::warn!(job = self.id, "the job did not stop in time"),
        }
        task.abort();
    }
}

/// How long stopping a job waits for it to finish its checkpoint and open files.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a job's rows go.
#[derive(Debug)]
pub enum JobOutput {
    /// A materialized view.
    View(Arc<ViewStore>),
    /// A sink.
    Sink(Arc<SinkState>),
}

/// Why a job is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its view or sink is dropped: a sink finishes and publishes its open files.
    Dropped,
    /// The server shuts down: a sink that checkpoints leaves its files after the last
    /// checkpoint hidden, for the restart to redo; one that does not publishes them.
    Shutdown,
}

/// What a sink's job shares with `SHOW SINKS`.
#[derive(Debug)]
pub struct SinkState {
    pub metrics: Arc<SinkMetrics>,
}

impl SinkState {
    pub fn new(metrics: Arc<SinkMetrics>) -> Self {
        Self { metrics }
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
    pub output: JobOutput,
    pub checkpoints: Option<Arc<JobCheckpoints>>,
}

impl JobManager {
    /// Starts a job pulling from `running` into its view, or into `writer` for a sink.
    pub fn start(
        &self,
        spec: JobSpec,
        running: RunningQuery,
        writer: Option<SharedSinkWriter>,
    ) -> Arc<Job> {
        let job = self.add(spec, Arc::clone(running.metrics()), JobStatus::Running);
        let stop = job.stop.subscribe();
        let task = match (&job.output, writer) {
            (JobOutput::Sink(_), Some(writer)) => tokio::spawn(fail_on_panic(
                Arc::clone(&job),
                run_sink(Arc::clone(&job), running, writer, stop),
            )),
            _ => tokio::spawn(fail_on_panic(
                Arc::clone(&job),
                run(Arc::clone(&job), running, stop),
            )),
        };
        *job.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        job
    }

    /// Lists a job that has nothing left to do: one restored after its input ended (a view
    /// from its final checkpoint, a sink whose files are all published). Its dataflow does
    /// not run, so its figures start at zero.
    pub fn finished(&self, spec: JobSpec) -> Arc<Job> {
        self.add(spec, Arc::default(), JobStatus::Finished)
    }

    /// Lists a job that cannot run (its checkpoint cannot be restored), with why.
    pub fn failed(&self, spec: JobSpec, error: String) -> Arc<Job> {
        let job = self.add(spec, Arc::default(), JobStatus::Failed(error.clone()));
        if let Some(view) = job.view() {
            view.fail(error);
        }
        job
    }

    /// Lists a new job (without a task yet).
    fn add(&self, spec: JobSpec, metrics: Arc<QueryMetrics>, status: JobStatus) -> Arc<Job> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            name: spec.name,
            query: spec.query,
            started_at: SystemTime::now(),
            plan: spec.plan,
            parallelism: spec.parallelism,
            metrics,
            output: spec.output,
            checkpoints: spec.checkpoints,
            status: Mutex::new(status),
            task: Mutex::new(None),
            stop: tokio::sync::watch::Sender::new(None),
        });
        self.write().insert(id, Arc::clone(&job));
        job
    }

    /// All jobs, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.read().values().cloned().collect()
    }

    /// The job maintaining view or sink `name`.
    pub fn for_name(&self, name: &str) -> Option<Arc<Job>> {
        self.read().values().find(|j| j.name == name).cloned()
    }

    /// Stops and forgets the job maintaining view or sink `name`.
    pub async fn remove(&self, name: &str) {
        let job = {
            let mut jobs = self.write();
            let id = jobs.values().find(|j| j.name == name).map(|j| j.id);
            id.and_then(|id| jobs.remove(&id))
        };
        if let Some(job) = job {
            job.stop(StopReason::Dropped).await;
            if let Some(c) = &job.checkpoints
                && let Err(e) = c.store.delete_all()
            {
                tracing::warn!(job = job.id, error = %e, "cannot delete the checkpoints of a dropped job");
            }
            if let Some(view) = job.view() {
                // Queries still following the view learn it is gone; its rows go now, not when
                // the last reference to it does.
                view.drop_rows(format!("materialized view \"{name}\" was dropped"));
            }
        }
    }

    /// Stops every job, as the server shuts down: sinks finish their open files first. The
    /// jobs stay listed.
    pub async fn stop_all(&self) {
        for job in self.list() {
            job.stop(StopReason::Shutdown).await;
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
        let mut malformed = Vec::new();
        let mut dead_letters = Vec::new();
        let mut watermarks = Vec::new();
        let mut lags = Vec::new();
        let mut state_bytes = Vec::new();
        let mut last_checkpoint = Vec::new();
        let mut restored_from = Vec::new();
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
            malformed.push(job.metrics.malformed_rows() as i64);
            dead_letters.push(job.metrics.dead_letters() as i64);
            let watermark = job.watermark().map(|w| w.div_euclid(1_000_000));
            watermarks.push(watermark);
            lags.push(watermark.map(|w| now_ms - w));
            state_bytes.push((job.output_bytes() + job.metrics.state_bytes()) as i64);
            let checkpoints = job.checkpoints.as_ref();
            last_checkpoint.push(
                checkpoints
                    .and_then(|c| c.last_completed())
                    .map(|e| e as i64),
            );
            restored_from.push(checkpoints.and_then(|c| c.restored_from).map(|e| e as i64));
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
            Arc::new(Int64Array::from(malformed)),
            Arc::new(Int64Array::from(dead_letters)),
            Arc::new(TimestampMillisecondArray::from(watermarks)),
            Arc::new(DurationMillisecondArray::from(lags)),
            Arc::new(Int64Array::from(state_bytes)),
            Arc::new(Int64Array::from(last_checkpoint)),
            Arc::new(Int64Array::from(restored_from)),
            Arc::new(StringArray::from(errors)),
        ];
        Ok(RecordBatch::try_new(jobs_schema(), columns)?)
    }

    /// What `SHOW CHECKPOINTS` and the `eddy_checkpoints` table show: the recent checkpoint
    /// attempts of every job that checkpoints.
    pub fn checkpoints_report(&self) -> EngineResult<RecordBatch> {
        let jobs: Vec<_> = self
            .list()
            .iter()
            .filter_map(|j| Some((j.name.clone(), j.checkpoints.as_ref()?.history())))
            .collect();
        crate::checkpoints::checkpoints_report(&jobs)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the coordinator has to say to its job's loop.
enum CoordinatorEvent {
    /// Time to trigger the next checkpoint.
    Due,
    /// A checkpoint finished writing: its epoch if it completed.
    Written(Option<Epoch>),
    /// The barrier of the checkpoint in flight did not come back in time (recorded).
    TimedOut,
}

/// A job's side of its checkpoints: when to take the next, and the one being written.
///
/// The job triggers checkpoint `e` every interval (when none is in flight); the barrier of
/// `e` comes back at the end of the dataflow once every source and operator has reported;
/// the job adds its output's part (a view's contents, a sink's pre-commit) and writes it all
/// on a blocking thread while the dataflow runs on. Once written, a sink commits. A barrier
/// waits behind backpressure, so a stalled consumer can hold it: after the job's timeout the
/// checkpoint fails, and the next one starts afresh at the next interval. When the input
/// ends, the job writes its final checkpoint ([`Coordinator::finish`]).
struct Coordinator {
    checkpoints: Arc<JobCheckpoints>,
    /// The job's late-row counter, recorded with each checkpoint.
    late_rows: Arc<AtomicU64>,
    timer: tokio::time::Interval,
    /// The checkpoint whose barrier is on its way, and when it must be back.
    in_flight: Option<Epoch>,
    deadline: tokio::time::Instant,
    writing: Option<tokio::task::JoinHandle<(Epoch, EngineResult<Written>)>>,
    /// The view the job maintains, and how many of its batches the checkpoint being
    /// written holds (an append-only view's checkpoints write only new batches).
    view: Option<Arc<ViewStore>>,
    view_upto: Option<usize>,
}

impl Coordinator {
    fn new(job: &Job) -> Option<Self> {
        let checkpoints = job.checkpoints.clone()?;
        let interval = checkpoints.interval;
        let mut timer = tokio::time::interval_at(after(interval), interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(Self {
            checkpoints,
            late_rows: Arc::clone(&job.metrics.late_rows),
            timer,
            in_flight: None,
            deadline: tokio::time::Instant::now(),
            writing: None,
            view: job.view().cloned(),
            view_upto: None,
        })
    }

    /// Resolves when the next checkpoint is due (`Due`), or when the one being written is
    /// on disk or failed (`Written`, recorded); never without checkpoints.
    async fn next(this: &mut Option<Self>) -> CoordinatorEvent {
        let Some(c) = this else {
            return std::future::pending().await;
        };
        if c.writing.is_some() {
            return CoordinatorEvent::Written(c.written().await);
        }
        match c.in_flight {
            None => {
                c.timer.tick().await;
                CoordinatorEvent::Due
            }
            Some(epoch) => {
                tokio::time::sleep_until(c.deadline).await;
                c.time_out(epoch);
                CoordinatorEvent::TimedOut
            }
        }
    }

    fn begin(&mut self) {
        self.in_flight = Some(self.checkpoints.begin());
        self.deadline = after(self.checkpoints.timeout);
    }

    /// The barrier of `epoch` is not back by its deadline: the checkpoint fails.
    fn time_out(&mut self, epoch: Epoch) {
        self.in_flight = None;
        let timeout = i64::try_from(self.checkpoints.timeout.as_nanos()).unwrap_or(i64::MAX);
        self.checkpoints.failed(
            epoch,
            format!(
                "its barrier did not come back within {}",
                format_duration(timeout)
            ),
        );
    }

    /// The barrier of `epoch` reached the job: collects the parts and starts writing them.
    fn barrier(&mut self, epoch: Epoch) -> EngineResult<()> {
        if self.in_flight != Some(epoch) || self.writing.is_some() {
            return Ok(());
        }
        let parts = self.checkpoints.handle.take(epoch);
        // Late, though the job was too busy to notice the deadline: it failed all the same.
        if tokio::time::Instant::now() > self.deadline {
            self.time_out(epoch);
            return Ok(());
        }
        if let Some(why) = parts.failures.first() {
            self.in_flight = None;
            self.checkpoints.failed(epoch, why.clone());
            return Ok(());
        }
        self.write(epoch, parts, false)
    }

    /// The input ended: writes the job's final checkpoint and waits until it is on disk. It
    /// says the job finished, so a restart restores the view's contents (or lists the sink
    /// as finished) and does not run the job again. It holds the sources' final positions
    /// but no operator state (the end of input made every operator emit what it held) and
    /// no sink record (the writer's `finish` published every file before). A failure is
    /// listed as the checkpoint's and the job still finished: after a restart a view then
    /// resumes from its previous checkpoint and reads the rest of its input again, and a
    /// sink's output still says it is complete.
    async fn finish(this: &mut Option<Self>) {
        let Some(c) = this else { return };
        // A checkpoint being written completes first; the final one comes after it.
        c.written().await;
        let epoch = c.checkpoints.begin_final(c.in_flight.take());
        let parts = EpochParts {
            sources: c.checkpoints.handle.take_final(),
            ..EpochParts::default()
        };
        if c.write(epoch, parts, true).is_ok() {
            c.written().await;
        }
    }

    /// Adds the output's part (a view's contents; a sink's pre-commit record is its sink
    /// operator's part) to `parts` and starts writing checkpoint `epoch`. An error is recorded as the
    /// checkpoint's failure, and returned.
    fn write(&mut self, epoch: Epoch, parts: EpochParts, finished: bool) -> EngineResult<()> {
        let view = match &self.view {
            Some(v) => {
                let contents = v.checkpoint_contents();
                if let Err(e) = &contents {
                    self.in_flight = None;
                    self.checkpoints.failed(epoch, e.to_string());
                }
                let (rows, watermark, upto) = contents?;
                self.view_upto = upto;
                let contents = match upto {
                    Some(_) => ViewContents::Appended {
                        rows,
                        previous: self.checkpoints.view_parts(),
                    },
                    None => ViewContents::Full(rows),
                };
                Some((contents, watermark))
            }
            None => None,
        };
        let data = CheckpointData {
            epoch,
            parts,
            view,
            late_rows: self.late_rows.load(std::sync::atomic::Ordering::Relaxed),
            finished,
        };
        let store = self.checkpoints.store.clone();
        let identity = self.checkpoints.identity.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            (epoch, store.write(&identity, data))
        }));
        Ok(())
    }

    /// Waits for the checkpoint being written; records how it ended; its epoch if it
    /// completed.
    async fn written(&mut self) -> Option<Epoch> {
        let writing = self.writing.as_mut()?;
        let result = writing.await;
        self.writing = None;
        self.in_flight = None;
        match result {
            Ok((epoch, Ok(written))) => {
                if let Some(parts) = written.view_parts {
                    self.checkpoints.set_view_parts(parts);
                }
                if let (Some(view), Some(upto)) = (&self.view, self.view_upto.take()) {
                    view.checkpointed(upto);
                }
                self.checkpoints.completed(epoch, written.bytes);
                Some(epoch)
            }
            Ok((epoch, Err(e))) => {
                self.checkpoints.failed(epoch, e.to_string());
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint writer task failed");
                None
            }
        }
    }

    /// The job failed at the end of its input with a checkpoint still in flight: its barrier
    /// will not come.
    fn abandon(this: &mut Option<Self>) {
        if let Some(c) = this
            && c.writing.is_none()
            && let Some(epoch) = c.in_flight.take()
        {
            c.checkpoints.failed(
                epoch,
                "the job failed before the barrier came back".to_string(),
            );
        }
    }
}

/// The instant `duration` from now; a duration too long to add (a user's `'9999999999h'`)
/// is about thirty years, as tokio's far future.
fn after(duration: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(86_400 * 365 * 30))
}

/// A view's job: every message of the dataflow into the view, until the end or a failure;
/// checkpoints at its interval.
async fn run(
    job: Arc<Job>,
    mut running: RunningQuery,
    mut stop: tokio::sync::watch::Receiver<Option<StopReason>>,
) {
    let Some(view) = job.view().cloned() else {
        return;
    };
    let mut coordinator = Coordinator::new(&job);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                // A checkpoint being written is finished, so nothing writes after the stop.
                Coordinator::finish_writing(&mut coordinator).await;
                return;
            }
            message = running.next_event() => match message {
                Ok(Some(Message::Barrier(epoch))) => {
                    if let Some(c) = &mut coordinator
                        && let Err(e) = c.barrier(epoch)
                    {
                        fail(&job, e);
                        return;
                    }
                }
                Ok(Some(message)) => {
                    if let Err(e) = view.apply(message).await {
                        fail(&job, e);
                        return;
                    }
                }
                Ok(None) => {
                    // The final checkpoint first: a job listed finished has it on disk.
                    Coordinator::finish(&mut coordinator).await;
                    job.set_status(JobStatus::Finished);
                    view.finish();
                    tracing::info!(job = job.id, view = %job.name, "job finished: its input ended");
                    return;
                }
                Err(e) => {
                    fail(&job, e);
                    return;
                }
            },
            event = Coordinator::next(&mut coordinator) => {
                if let (CoordinatorEvent::Due, Some(c)) = (event, &mut coordinator) {
                    c.begin();
                }
            }
        }
    }
}

/// A sink's job: rows and watermarks into the writer, a tick for time-based rolling, until
/// the input ends (every file finished and committed), the sink is dropped (open files
/// finished) or something fails (unfinished files removed). With checkpoints, the writer
/// pre-commits at each barrier and commits once the checkpoint is on disk.
async fn run_sink(
    job: Arc<Job>,
    mut running: RunningQuery,
    writer: SharedSinkWriter,
    mut stop: tokio::sync::watch::Receiver<Option<StopReason>>,
) {
    /// What the job's loop waits for.
    enum Event {
        Message(EngineResult<Option<Message>>),
        Stop,
        Failed(EngineError),
    }
    let interval = match writer.lock() {
        Ok(w) => w.tick_interval(),
        Err(_) => {
            return fail(
                &job,
                EngineError::Internal("a sink writer call panicked".into()),
            );
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut coordinator = Coordinator::new(&job);
    loop {
        // The pending `next_event` is kept across ticks: it is never cancelled midway.
        let event = {
            let next = running.next_event();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    message = &mut next => break Event::Message(message),
                    _ = tick.tick() => {
                        if let Err(e) = with_writer(&writer, |w| w.tick()) {
                            break Event::Failed(e);
                        }
                    }
                    event = Coordinator::next(&mut coordinator) => match (event, &mut coordinator) {
                        (CoordinatorEvent::Due, Some(c)) => c.begin(),
                        (CoordinatorEvent::Written(Some(epoch)), _) => {
                            if let Err(e) = with_writer(&writer, |w| w.commit(epoch)) {
                                break Event::Failed(e);
                            }
                        }
                        _ => {}
                    },
                    _ = stop.changed() => break Event::Stop,
                }
            }
        };
        // The sink operator writes the rows and pre-commits at each barrier; the job
        // completes checkpoints and commits.
        let error = match event {
            Event::Message(Ok(Some(Message::Barrier(epoch)))) => match &mut coordinator {
                Some(c) => c.barrier(epoch).err(),
                None => None,
            },
            Event::Message(Ok(Some(_))) => None,
            Event::Message(Ok(None)) => {
                // A checkpoint being written still commits its files before the last ones.
                if let Some(epoch) = Coordinator::finish_writing(&mut coordinator).await
                    && let Err(e) = with_writer(&writer, |w| w.commit(epoch))
                {
                    return give_up(&job, running, &writer, e).await;
                }
                match with_writer(&writer, |w| w.finish()) {
                    Ok(()) => {
                        // Every file is published: the final checkpoint records that the sink
                        // finished.
                        Coordinator::finish(&mut coordinator).await;
                        job.set_status(JobStatus::Finished);
                        tracing::info!(job = job.id, sink = %job.name, "sink finished: its input ended");
                    }
                    Err(e) => {
                        Coordinator::abandon(&mut coordinator);
                        give_up(&job, running, &writer, e).await;
                    }
                }
                return;
            }
            Event::Message(Err(e)) | Event::Failed(e) => Some(e),
            Event::Stop => {
                // A checkpoint being written is finished (and its files committed), and the
                // dataflow stopped, so nothing writes after the stop.
                if let Some(epoch) = Coordinator::finish_writing(&mut coordinator).await
                    && let Err(e) = with_writer(&writer, |w| w.commit(epoch))
                {
                    return give_up(&job, running, &writer, e).await;
                }
                running.stop().await;
                let reason = *stop.borrow();
                if reason == Some(StopReason::Shutdown) && coordinator.is_some() {
                    // Files after the last checkpoint stay hidden: after the restart the sink
                    // resumes from that checkpoint and writes their rows again, so publishing
                    // them now would duplicate rows.
                    abort_writer(&writer);
                } else if let Err(e) = with_writer(&writer, |w| w.close()) {
                    abort_writer(&writer);
                    fail(&job, e);
                }
                return;
            }
        };
        if let Some(e) = error {
            return give_up(&job, running, &writer, e).await;
        }
    }
}

/// A sink's job failed: the dataflow stops (its sink operator writes no more), then the
/// writer removes its unfinished files.
async fn give_up(job: &Job, running: RunningQuery, writer: &SharedSinkWriter, error: EngineError) {
    running.stop().await;
    abort_writer(writer);
    fail(job, error);
}

fn abort_writer(writer: &SharedSinkWriter) {
    if let Ok(mut w) = writer.lock() {
        w.abort();
    }
}

impl Coordinator {
    /// Waits for the checkpoint being written, if any.
    async fn finish_writing(this: &mut Option<Self>) -> Option<Epoch> {
        match this {
            Some(c) => c.written().await,
            None => None,
        }
    }
}

/// Runs a job's loop; a panic in it (its view's or sink's bookkeeping) fails the job, as a
/// panic in its dataflow does, and drops its dataflow.
async fn fail_on_panic(job: Arc<Job>, work: impl std::future::Future<Output = ()>) {
    let place = format!("the job of \"{}\"", job.name);
    if let Err(e) = crate::panics::catch_future(&place, work).await {
        fail(&job, e);
    }
}

fn fail(job: &Job, error: EngineError) {
    tracing::error!(job = job.id, name = %job.name, %error, "job failed");
    let message = error.to_string();
    job.set_status(JobStatus::Failed(message.clone()));
    if let Some(view) = job.view() {
        view.fail(format!(
            "the job of materialized view \"{}\" failed: {message}",
            job.name
        ));
    }
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
        Field::new("malformed_rows", DataType::Int64, false),
        Field::new("dead_letters", DataType::Int64, false),
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
        Field::new("last_checkpoint", DataType::Int64, true),
        Field::new("restored_from", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}
