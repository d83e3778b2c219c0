//! How a background job's checkpoints are set up when its view or sink is created or
//! restored after a restart, and `SHOW CHECKPOINTS`.

use std::sync::Arc;
use std::time::Duration;

use super::{QueryOutput, Session, StatementResult};
use crate::checkpoints::{
    CheckpointStore, JobCheckpoints, JobIdentity, LoadedCheckpoint, parse_interval, parse_timeout,
};
use crate::error::{EngineError, EngineResult};
use crate::plan::{ExplainOptions, StreamPlan};
use crate::runtime::{CheckpointSetup, QueryMetrics};

/// The option of `CREATE MATERIALIZED VIEW` and `CREATE SINK` that sets a job's interval.
pub(crate) const CHECKPOINT_INTERVAL: &str = "checkpoint.interval";
/// The option that sets how long a job's checkpoint barrier may take to come back.
pub(crate) const CHECKPOINT_TIMEOUT: &str = "checkpoint.timeout";

/// A job's own checkpoint options; the server's settings stand in for those not given.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CheckpointOptions {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

impl CheckpointOptions {
    pub const KEYS: [&str; 2] = [CHECKPOINT_INTERVAL, CHECKPOINT_TIMEOUT];

    /// Takes option `key` if it is one of [`CheckpointOptions::KEYS`] (`Ok(false)` if not); a
    /// bad value is `22023`.
    pub fn read(&mut self, key: &str, value: &str) -> EngineResult<bool> {
        let (slot, parsed) = match key {
            CHECKPOINT_INTERVAL => (&mut self.interval, parse_interval(value)),
            CHECKPOINT_TIMEOUT => (&mut self.timeout, parse_timeout(value)),
            _ => return Ok(false),
        };
        let value = parsed
            .map_err(|e| EngineError::InvalidParameterValue(format!("{e} (option {key})")))?;
        *slot = Some(value);
        Ok(true)
    }
}

/// What a job's options (beyond checkpoints) decide about how its dataflow runs.
#[derive(Debug, Default)]
pub(crate) struct JobOptions {
    /// Its state limit (`max.state.bytes`, else the session's).
    pub max_state_bytes: Option<usize>,
    /// Where its late rows go (`late.rows`).
    pub late_rows: Option<Arc<crate::late_rows::LateRowTable>>,
}

/// A job's checkpointing as its creation decided it.
pub(crate) struct JobCheckpointing {
    pub checkpoints: Option<Arc<JobCheckpoints>>,
    /// The checkpoint the job resumes from.
    pub loaded: Option<LoadedCheckpoint>,
    /// The parallelism to launch with (a restored checkpoint's).
    pub parallelism: usize,
    /// A checkpoint exists but cannot be used: the job is listed as failed with this.
    pub refused: Option<String>,
    /// When reading the checkpoint began (the restore time is logged once the job runs).
    pub restore_started: Option<std::time::Instant>,
}

impl JobCheckpointing {
    /// How the job's dataflow takes part.
    pub fn setup(&self) -> Option<CheckpointSetup> {
        let c = self.checkpoints.as_ref()?;
        Some(CheckpointSetup {
            handle: Arc::clone(&c.handle),
            restore: self.loaded.as_ref().map(|l| Arc::clone(&l.restored)),
        })
    }
}

impl JobCheckpointing {
    /// Starts the job's dataflow, ending in `sink` for a sink's job, with its state limit
    /// (`max.state.bytes`): from its checkpoint
    /// when it has one (each operator instance, the sink's included, restores its own state
    /// and late-row count, so the job's total continues exactly).
    pub fn launch(
        &self,
        session: &Session,
        job: &str,
        plan: &StreamPlan,
        options: &JobOptions,
        sink: Option<Box<dyn crate::operators::Operator>>,
    ) -> EngineResult<crate::runtime::RunningQuery> {
        let sink = sink.map(|s| (s, crate::operators::sink::state_tables()));
        let state_limit = crate::runtime::memory::StateLimit {
            bytes: options.max_state_bytes,
            setting: super::views::MAX_STATE_BYTES,
        };
        let running = session.launch_with(
            plan,
            super::query::JobLaunch {
                job,
                checkpoint: self.setup(),
                parallelism: self.parallelism,
                state_limit,
                sink,
                late_rows: options.late_rows.clone(),
                // A job never loses rows of a view it reads: the view's job waits for it.
                pace: crate::view::FollowerPace::Backpressure,
            },
        )?;
        if let (Some(loaded), Some(started)) = (&self.loaded, self.restore_started) {
            // Reading the files, the view's contents and every operator's state: all done
            // before the dataflow's first row.
            tracing::info!(
                job = %loaded.manifest.job,
                epoch = loaded.manifest.epoch,
                state_bytes = loaded.manifest.state_bytes,
                restore_ms = started.elapsed().as_millis() as u64,
                "job restored from its checkpoint"
            );
        }
        Ok(running)
    }

    /// A job restored from its final checkpoint (not launched: no operator restores a count)
    /// takes its late-row count from the manifest.
    pub fn restore_late_rows(&self, metrics: &QueryMetrics) {
        if let Some(loaded) = &self.loaded {
            metrics.late_rows.store(
                loaded.manifest.late_rows,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Whether the job resumes from its final checkpoint: its input ended before the
    /// restart, so it is restored without running.
    pub fn finished(&self) -> bool {
        self.loaded.as_ref().is_some_and(|l| l.manifest.finished)
    }
}

impl JobCheckpointing {
    /// A restored job that fails to start from its checkpoint (an operator, the view or the
    /// sink refuses its part) is listed as failed with why (`Err(Ok(why))`), so the relation
    /// stays in the catalog; any other failure is the statement's (`Err(Err(e))`).
    pub fn refuse_restore<T>(
        &self,
        name: &str,
        started: EngineResult<T>,
    ) -> Result<T, EngineResult<String>> {
        match (started, &self.loaded) {
            (Ok(t), _) => Ok(t),
            (Err(e), Some(loaded)) => {
                let why = format!(
                    "checkpoint {} of \"{name}\" cannot be restored: {e}; drop and re-create \
                     the job to start over",
                    loaded.manifest.epoch
                );
                tracing::error!(job = %name, error = %why, "checkpoint refused");
                Err(Ok(why))
            }
            (Err(e), None) => Err(Err(e)),
        }
    }
}

impl Session {
    /// Decides whether job `name` checkpoints, and when the server is restoring it after a
    /// restart, loads its latest checkpoint. A job checkpoints when the engine has a data
    /// directory, its interval (its own option, else the server's) is not zero, and it reads
    /// no materialized view (a job over a view recomputes from the view's restored contents).
    /// A fresh job starts with no checkpoint: old ones under its name are deleted.
    pub(crate) fn job_checkpointing(
        &self,
        name: &str,
        query: &str,
        plan: &StreamPlan,
        options: CheckpointOptions,
        reads_views: bool,
    ) -> EngineResult<JobCheckpointing> {
        let parallelism = self.parallelism()?;
        let none = JobCheckpointing {
            checkpoints: None,
            loaded: None,
            parallelism,
            refused: None,
            restore_started: None,
        };
        let Some(data_dir) = &self.engine.config.data_dir else {
            return Ok(none);
        };
        let store = CheckpointStore::new(data_dir, name);
        let interval = options
            .interval
            .unwrap_or(self.engine.config.checkpoint_interval);
        let timeout = options
            .timeout
            .unwrap_or(self.engine.config.checkpoint_timeout);
        if interval.is_zero() || reads_views {
            if reads_views {
                tracing::info!(job = %name, "the job reads a materialized view: it does not checkpoint");
            }
            store.delete_all()?;
            return Ok(none);
        }
        let mut identity = JobIdentity {
            job: name.to_string(),
            query: query.to_string(),
            // Operator state is keyed by plan node: the plan's shape, at parallelism 1.
            plan: plan.explain_with(&ExplainOptions { parallelism: 1 }),
            parallelism,
        };
        let mut loaded = None;
        let mut refused = None;
        let restore_started = self.restoring.then(std::time::Instant::now);
        if self.restoring {
            match store.load_latest(&identity) {
                Ok(Some(checkpoint)) => {
                    identity.parallelism = checkpoint.manifest.parallelism;
                    loaded = Some(checkpoint);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(job = %name, error = %e, "checkpoint refused");
                    refused = Some(e.to_string());
                }
            }
        } else {
            store.delete_all()?;
        }
        let restored_from = loaded.as_ref().map(|l: &LoadedCheckpoint| l.manifest.epoch);
        let parallelism = identity.parallelism;
        let checkpoints = JobCheckpoints::new(interval, timeout, store, identity, restored_from);
        if let Some(parts) = loaded.as_ref().and_then(|l| l.manifest.view_parts.as_ref()) {
            checkpoints.set_view_parts(parts.parts.clone());
        }
        Ok(JobCheckpointing {
            checkpoints: Some(Arc::new(checkpoints)),
            loaded,
            parallelism,
            refused,
            restore_started,
        })
    }

    /// `SHOW CHECKPOINTS`.
    pub(crate) fn show_checkpoints(&self) -> EngineResult<StatementResult> {
        let batch = self.engine.jobs.checkpoints_report()?;
        Ok(StatementResult::Rows(QueryOutput::ready(
            batch.schema(),
            vec![batch],
            "SHOW",
        )))
    }
}
