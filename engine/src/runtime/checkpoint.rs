//! The dataflow's side of checkpoints: barrier injection, snapshot collection and restore.
//!
//! A job that checkpoints launches its dataflow with a [`CheckpointHandle`]. To take checkpoint
//! `epoch` the job calls [`CheckpointHandle::trigger`]: every source task injects
//! `Barrier(epoch)` between two of its batches and reports its position (rows read, watermark).
//! Operators align the barrier over their inputs (`driver::run_operator` stops reading an
//! input that delivered it until every live input has), then report their
//! [`StateSnapshot`] and forward the barrier. When the barrier reaches the job at the end of
//! the dataflow, every part has reported (each part reports before it forwards), and
//! [`CheckpointHandle::take`] hands the job everything of that epoch to write.
//!
//! Once the job has written a checkpoint it calls [`CheckpointHandle::completed`]; each
//! operator instance hears of it (`Operator::checkpoint_completed`) before its next snapshot.
//!
//! A dataflow restored from a checkpoint is launched with a [`RestoredState`]: each operator
//! instance gets its snapshot before it runs, each source reader its position.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::runtime::message::{Epoch, EventTime};
use crate::state::StateSnapshot;

/// Identifies one instance of one plan node: the node's pre-order number in the plan (what
/// EXPLAIN ANALYZE matches) and the instance (or source reader) index. Stable for the same
/// plan at the same parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartId {
    pub node: usize,
    pub instance: usize,
}

/// Where a source reader stands at a barrier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcePosition {
    /// Rows read from the connector (or push table) so far.
    pub rows: u64,
    /// The reader's watermark, if it has one yet.
    pub watermark: Option<EventTime>,
    /// For readers of partitioned sources (Kafka): each partition's watermark.
    pub partition_watermarks: BTreeMap<i32, EventTime>,
    /// The connector's own position after the rows read, for connectors that publish one
    /// ([`crate::connector::SourceReader::position`]; Kafka offsets). Opaque to the engine.
    pub connector: Option<String>,
}

/// What the parts of a dataflow reported for one epoch.
#[derive(Debug, Default)]
pub struct EpochParts {
    pub operators: BTreeMap<PartId, StateSnapshot>,
    pub sources: BTreeMap<PartId, SourcePosition>,
    /// Why parts could not snapshot: the checkpoint fails, the job goes on.
    pub failures: Vec<String>,
}

/// Shared by a job and the tasks of its dataflow.
#[derive(Debug)]
pub struct CheckpointHandle {
    trigger: watch::Sender<Epoch>,
    parts: Mutex<BTreeMap<Epoch, EpochParts>>,
    /// The final position of each source reader that reached its end (it injects no more
    /// barriers, and its position no longer changes).
    ended: Mutex<BTreeMap<PartId, SourcePosition>>,
    /// The last checkpoint written completely (0: none yet).
    completed: AtomicU64,
}

impl Default for CheckpointHandle {
    fn default() -> Self {
        Self {
            trigger: watch::Sender::new(0),
            parts: Mutex::default(),
            ended: Mutex::default(),
            completed: AtomicU64::new(0),
        }
    }
}

impl CheckpointHandle {
    /// Asks every source to inject `Barrier(epoch)`.
    pub fn trigger(&self, epoch: Epoch) {
        self.trigger.send_replace(epoch);
    }

    /// Checkpoint `epoch` is on disk, with every part reported for it.
    pub fn completed(&self, epoch: Epoch) {
        self.completed.fetch_max(epoch, Ordering::Relaxed);
    }

    /// The last checkpoint written completely (0: none yet).
    pub(crate) fn last_completed(&self) -> Epoch {
        self.completed.load(Ordering::Relaxed)
    }

    /// For source tasks: changes when a checkpoint is triggered.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Epoch> {
        self.trigger.subscribe()
    }

    /// An operator instance's state at `epoch`'s barrier.
    pub(crate) fn report_operator(&self, epoch: Epoch, part: PartId, snapshot: StateSnapshot) {
        self.lock_parts()
            .entry(epoch)
            .or_default()
            .operators
            .insert(part, snapshot);
    }

    /// An operator instance could not snapshot its state at `epoch`'s barrier.
    pub(crate) fn report_failure(&self, epoch: Epoch, why: String) {
        self.lock_parts()
            .entry(epoch)
            .or_default()
            .failures
            .push(why);
    }

    /// A source reader's position at `epoch`'s barrier.
    pub(crate) fn report_source(&self, epoch: Epoch, part: PartId, position: SourcePosition) {
        self.lock_parts()
            .entry(epoch)
            .or_default()
            .sources
            .insert(part, position);
    }

    /// A source reader read its last row.
    pub(crate) fn report_end(&self, part: PartId, position: SourcePosition) {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(part, position);
    }

    /// Everything reported for `epoch` (called when its barrier reached the end of the
    /// dataflow), with the final positions of the readers that ended before it; forgets that
    /// epoch and any older one.
    pub fn take(&self, epoch: Epoch) -> EpochParts {
        let mut parts = self.lock_parts();
        let mut taken = parts.remove(&epoch).unwrap_or_default();
        parts.retain(|e, _| *e > epoch);
        drop(parts);
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        for (part, position) in ended.iter() {
            taken
                .sources
                .entry(*part)
                .or_insert_with(|| position.clone());
        }
        taken
    }

    /// The final position of every source reader, once the dataflow ended (for the job's
    /// final checkpoint); forgets what any epoch's parts reported.
    pub fn take_final(&self) -> BTreeMap<PartId, SourcePosition> {
        self.lock_parts().clear();
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock_parts(&self) -> std::sync::MutexGuard<'_, BTreeMap<Epoch, EpochParts>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A checkpoint's contents, for launching a dataflow that continues from it.
#[derive(Debug, Default)]
pub struct RestoredState {
    pub operators: Mutex<BTreeMap<PartId, StateSnapshot>>,
    pub sources: BTreeMap<PartId, SourcePosition>,
}

impl RestoredState {
    /// The snapshot of operator instance `part` (taken: each is restored once).
    pub(crate) fn take_operator(&self, part: PartId) -> Option<StateSnapshot> {
        self.operators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&part)
    }

    pub(crate) fn source(&self, part: PartId) -> SourcePosition {
        self.sources.get(&part).cloned().unwrap_or_default()
    }
}
