//! Checkpoints of background jobs on disk, and their history for `SHOW CHECKPOINTS`.
//!
//! Each job that checkpoints has a folder `<data dir>/checkpoints/<job>/`. Checkpoint `epoch`
//! is written into `<epoch>.inprogress/`: one file per operator instance that holds state
//! (its [`StateSnapshot`] encoded by [`crate::state::checkpoint`]), the view's contents for a
//! view's job, and last `manifest.json` (format version, the job's query and plan, parallelism,
//! source positions, the files with their sizes). A sink's pre-commit record is its sink
//! operator's part, like any operator's state. Every file is synced,
//! then the folder is renamed to `<epoch>/` and its parent synced: a folder named by a number
//! is a complete checkpoint, anything else is torn and deleted. Once a checkpoint is complete
//! the older ones are deleted.
//!
//! A job whose input ended writes a final checkpoint whose manifest says so (`finished`): it
//! holds the view's contents and no operator state, and a restart restores the view (or lists
//! the sink as finished) without running the job again.
//!
//! Two kinds of state are written once and referred to by later checkpoints, beside the
//! epochs: an append-only view's parts (`view-parts/`, the rows each checkpoint added) and
//! operators' shared batches (`shared/`, see [`StateSnapshot::add_shared`]): a shared batch
//! is written the first time a checkpoint holds it (a later snapshot may even refer to it
//! without its rows, see [`StateSnapshot::add_shared_unchanged`]), and the manifest lists, per
//! operator instance, the files of every shared batch its snapshot holds. Such a file is synced before
//! the manifest that lists it, is never rewritten while a complete checkpoint lists it (its
//! name carries the epoch that wrote it), and is deleted once no complete checkpoint does.
//!
//! Reading back refuses (never misreads) a checkpoint of another format version or plan, or
//! whose files do not have the sizes its manifest lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, EngineResult};
use crate::runtime::checkpoint::{
    CheckpointHandle, EpochParts, PartId, RestoredState, SourcePosition,
};
use crate::runtime::message::{Epoch, EventTime};
use crate::state::checkpoint::{decode, encode, encode_batches};
use crate::state::{StateSnapshot, is_unchanged, shared_id, table_of};

/// The version of the checkpoint format this build writes and reads.
/// Version 2 added shared operator batches (`FileEntry::shared`), and MATCH_RECOGNIZE keeps its
/// rows in them.
pub const FORMAT_VERSION: u32 = 2;

/// How long a checkpoint's barrier may take to come back unless the server
/// (`--checkpoint-timeout`) or the job (`checkpoint.timeout`) says otherwise: Flink's default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The shortest checkpoint timeout (Flink's too).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// The system table of checkpoints (what `SHOW CHECKPOINTS` shows).
pub const CHECKPOINTS_TABLE: &str = "eddy_checkpoints";

/// The folder under the data directory that holds every job's checkpoints.
const CHECKPOINTS_DIR: &str = "checkpoints";
const MANIFEST: &str = "manifest.json";
const IN_PROGRESS: &str = ".inprogress";
const VIEW_FILE: &str = "view.state";
/// The folder (beside the epochs) of an append-only view's parts.
const VIEW_PARTS_DIR: &str = "view-parts";
/// The folder (beside the epochs) of operators' shared batches.
const SHARED_DIR: &str = "shared";

/// What a checkpoint's manifest records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub job: String,
    /// The job's query, as the user wrote it.
    pub query: String,
    /// The streaming plan (EXPLAIN text): operator state is keyed by plan node, so a
    /// checkpoint restores only into the same plan.
    pub plan: String,
    pub parallelism: usize,
    pub epoch: Epoch,
    pub created_at_ms: i64,
    pub sources: Vec<SourceEntry>,
    pub operators: Vec<FileEntry>,
    /// A view's contents at the barrier (an updating view, or one with a retention).
    pub view: Option<ViewEntry>,
    /// An append-only view's rows, as the parts each checkpoint added (in order), when the
    /// view keeps every row it receives.
    #[serde(default)]
    pub view_parts: Option<ViewParts>,
    /// What the sink's pre-commit returned, in checkpoints written before the sink became
    /// the dataflow's last operator (now its part holds it); read, no longer written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    pub state_bytes: u64,
    /// The job's late-row count when the barrier reached its end (for information: a
    /// restore takes each operator instance's own count from its part).
    #[serde(default)]
    pub late_rows: u64,
    /// The job's final checkpoint, written when its input ended: a restart restores its
    /// output and does not run it again. No operator state (the operators emitted
    /// everything at the end of input); the sources are at their ends.
    #[serde(default)]
    pub finished: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceEntry {
    pub node: usize,
    pub instance: usize,
    pub rows: u64,
    pub watermark: Option<EventTime>,
    /// The connector's position (Kafka: the next offset per partition); absent for sources
    /// that resume from `rows`, and in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Each partition's watermark, for readers of partitioned sources (Kafka).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partition_watermarks: BTreeMap<i32, EventTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub node: usize,
    pub instance: usize,
    pub file: String,
    pub bytes: u64,
    /// The shared batches the instance's snapshot holds besides its file, each written once.
    pub shared: Vec<SharedFile>,
}

/// One shared batch of an operator instance: its table and id, and the file that holds it
/// (relative to the job's folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    pub table: String,
    pub id: u64,
    pub file: String,
    pub bytes: u64,
}

/// What names a shared batch: the operator instance, the table and the id.
type SharedKey = (PartId, String, u64);

/// The parts of an append-only view's rows, each written once, by the checkpoint that first
/// held its rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewParts {
    pub parts: Vec<ViewPart>,
    pub watermark: Option<EventTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewPart {
    /// Relative to the job's folder.
    pub file: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewEntry {
    pub file: String,
    pub bytes: u64,
    pub watermark: Option<EventTime>,
}

/// What one checkpoint writes: everything the dataflow reported at the barrier, and the
/// job's output.
pub struct CheckpointData {
    pub epoch: Epoch,
    pub parts: EpochParts,
    /// A view's contents and watermark.
    pub view: Option<(ViewContents, Option<EventTime>)>,
    pub late_rows: u64,
    /// The job's final checkpoint ([`Manifest::finished`]).
    pub finished: bool,
}

/// What a view's job writes of its view.
pub enum ViewContents {
    /// Every row (an updating view, or one whose retention drops rows).
    Full(StateSnapshot),
    /// The rows appended since the checkpoint whose parts are `previous` (an append-only
    /// view that keeps every row): written as one more part.
    Appended {
        rows: StateSnapshot,
        previous: Vec<ViewPart>,
    },
}

/// What writing a checkpoint did.
#[derive(Debug)]
pub struct Written {
    pub bytes: u64,
    /// The view's parts, for the next checkpoint to add to.
    pub view_parts: Option<Vec<ViewPart>>,
}

/// A complete checkpoint read back.
pub struct LoadedCheckpoint {
    pub manifest: Manifest,
    pub restored: Arc<RestoredState>,
    /// A view's contents and watermark.
    pub view: Option<(StateSnapshot, Option<EventTime>)>,
}

/// The checkpoint folder of one job.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    /// The shared batches the last checkpoint this store wrote or loaded lists: a later one
    /// refers to their files instead of writing them again.
    shared: Arc<Mutex<BTreeMap<SharedKey, SharedFile>>>,
}

impl CheckpointStore {
    pub fn new(data_dir: &Path, job: &str) -> Self {
        Self {
            dir: data_dir.join(CHECKPOINTS_DIR).join(folder_name(job)),
            shared: Arc::default(),
        }
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, BTreeMap<SharedKey, SharedFile>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes every checkpoint of the job (a dropped or re-created view or sink).
    pub fn delete_all(&self) -> EngineResult<()> {
        self.lock_shared().clear();
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes checkpoint `data` and makes it the job's latest.
    pub fn write(&self, identity: &JobIdentity, data: CheckpointData) -> EngineResult<Written> {
        let folder = self.dir.join(format!("{}{IN_PROGRESS}", data.epoch));
        if folder.exists() {
            std::fs::remove_dir_all(&folder)?;
        }
        std::fs::create_dir_all(&folder)?;
        let mut total = 0u64;
        let mut operators = Vec::new();
        // Shared batches the last complete checkpoint lists are referred to, not written.
        let known = self.lock_shared().clone();
        let mut listed = BTreeMap::new();
        let mut wrote_shared = false;
        for (part, snapshot) in &data.parts.operators {
            if snapshot.is_empty() {
                continue;
            }
            let mut own = Vec::new();
            let mut files = Vec::new();
            for batch in snapshot.batches() {
                let Some(id) = shared_id(batch)? else {
                    own.push(batch);
                    continue;
                };
                let key = (*part, table_of(batch).unwrap_or_default().to_string(), id);
                if listed.contains_key(&key) {
                    return Err(EngineError::Checkpoint(format!(
                        "operator {}-{} holds shared batch {id} of {} twice",
                        part.node, part.instance, key.1
                    )));
                }
                let entry = match known.get(&key) {
                    Some(entry) => entry.clone(),
                    None if is_unchanged(batch) => {
                        return Err(EngineError::Checkpoint(format!(
                            "operator {}-{} refers to shared batch {id} of {}, which no \
                             complete checkpoint holds",
                            part.node, part.instance, key.1
                        )));
                    }
                    None => {
                        let entry = self.write_shared(&key, data.epoch, batch)?;
                        total += entry.bytes;
                        wrote_shared = true;
                        entry
                    }
                };
                files.push(entry.clone());
                listed.insert(key, entry);
            }
            let file = format!("op-{}-{}.state", part.node, part.instance);
            let bytes = write_synced(&folder.join(&file), &encode_batches(own)?)?;
            total += bytes;
            operators.push(FileEntry {
                node: part.node,
                instance: part.instance,
                file,
                bytes,
                shared: files,
            });
        }
        if wrote_shared {
            sync_dir(&self.dir.join(SHARED_DIR));
        }
        let (mut view, mut view_parts) = (None, None);
        match &data.view {
            Some((ViewContents::Full(contents), watermark)) => {
                let bytes = write_synced(&folder.join(VIEW_FILE), &encode(contents)?)?;
                total += bytes;
                view = Some(ViewEntry {
                    file: VIEW_FILE.to_string(),
                    bytes,
                    watermark: *watermark,
                });
            }
            Some((ViewContents::Appended { rows, previous }, watermark)) => {
                let mut parts = previous.clone();
                if !rows.is_empty() {
                    let dir = self.dir.join(VIEW_PARTS_DIR);
                    std::fs::create_dir_all(&dir)?;
                    let file = format!("{VIEW_PARTS_DIR}/part-{}.state", data.epoch);
                    let bytes = write_synced(&self.dir.join(&file), &encode(rows)?)?;
                    sync_dir(&dir);
                    total += bytes;
                    parts.push(ViewPart { file, bytes });
                }
                view_parts = Some(ViewParts {
                    parts,
                    watermark: *watermark,
                });
            }
            None => {}
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            job: identity.job.clone(),
            query: identity.query.clone(),
            plan: identity.plan.clone(),
            parallelism: identity.parallelism,
            epoch: data.epoch,
            created_at_ms: now_ms(),
            sources: data
                .parts
                .sources
                .iter()
                .map(|(part, p)| SourceEntry {
                    node: part.node,
                    instance: part.instance,
                    rows: p.rows,
                    watermark: p.watermark,
                    connector: p.connector.clone(),
                    partition_watermarks: p.partition_watermarks.clone(),
                })
                .collect(),
            operators,
            view,
            view_parts: view_parts.clone(),
            sink: None,
            state_bytes: total,
            late_rows: data.late_rows,
            finished: data.finished,
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| EngineError::Checkpoint(format!("manifest: {e}")))?;
        write_synced(&folder.join(MANIFEST), &text)?;
        sync_dir(&folder);
        let done = self.dir.join(data.epoch.to_string());
        if done.exists() {
            std::fs::remove_dir_all(&done)?;
        }
        std::fs::rename(&folder, &done)?;
        sync_dir(&self.dir);
        self.delete_older_than(data.epoch);
        let view_parts = view_parts.map(|v| v.parts);
        if let Some(parts) = &view_parts {
            self.delete_parts_but(parts);
        }
        self.delete_shared_but(&listed);
        *self.lock_shared() = listed;
        Ok(Written {
            bytes: total,
            view_parts,
        })
    }

    /// Writes shared batch `key` for checkpoint `epoch` (synced; the caller syncs the folder).
    fn write_shared(
        &self,
        key: &SharedKey,
        epoch: Epoch,
        batch: &RecordBatch,
    ) -> EngineResult<SharedFile> {
        let (part, table, id) = key;
        std::fs::create_dir_all(self.dir.join(SHARED_DIR))?;
        // The epoch in the name: a file a complete checkpoint lists is never rewritten.
        let file = format!(
            "{SHARED_DIR}/op-{}-{}-{}-{id}.{epoch}.state",
            part.node,
            part.instance,
            folder_name(table)
        );
        let bytes = write_synced(&self.dir.join(&file), &encode_batches([batch])?)?;
        Ok(SharedFile {
            table: table.clone(),
            id: *id,
            file,
            bytes,
        })
    }

    /// Deletes the shared files the latest complete checkpoint does not list (those only
    /// older or failed checkpoints did).
    fn delete_shared_but(&self, kept: &BTreeMap<SharedKey, SharedFile>) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(SHARED_DIR)) else {
            return;
        };
        let kept: std::collections::HashSet<&str> =
            kept.values().map(|f| f.file.as_str()).collect();
        for entry in entries.flatten() {
            let name = format!("{SHARED_DIR}/{}", entry.file_name().to_string_lossy());
            if !kept.contains(name.as_str()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Deletes the view parts no complete checkpoint lists any more (a failed checkpoint's).
    fn delete_parts_but(&self, kept: &[ViewPart]) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(VIEW_PARTS_DIR)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = format!("{VIEW_PARTS_DIR}/{}", entry.file_name().to_string_lossy());
            if !kept.iter().any(|p| p.file == name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Deletes complete checkpoints older than `epoch`, and torn ones.
    fn delete_older_than(&self, epoch: Epoch) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name == VIEW_PARTS_DIR || name == SHARED_DIR {
                continue;
            }
            let stale = match name.parse::<Epoch>() {
                Ok(e) => e < epoch,
                Err(_) => true,
            };
            if stale && let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete an old checkpoint");
            }
        }
    }

    /// The latest complete checkpoint, checked against the job it is to restore. Torn
    /// checkpoints (a crash while writing) are deleted; `Ok(None)` when there is none.
    pub fn load_latest(&self, identity: &JobIdentity) -> EngineResult<Option<LoadedCheckpoint>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(None);
        };
        let mut complete = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name == VIEW_PARTS_DIR || name == SHARED_DIR {
                continue;
            }
            match name.parse::<Epoch>() {
                Ok(epoch) => complete.push(epoch),
                Err(_) => {
                    tracing::info!(path = %entry.path().display(), "deleting a torn checkpoint");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let Some(epoch) = complete.into_iter().max() else {
            return Ok(None);
        };
        self.load(epoch, identity).map(Some)
    }

    fn load(&self, epoch: Epoch, identity: &JobIdentity) -> EngineResult<LoadedCheckpoint> {
        let folder = self.dir.join(epoch.to_string());
        let refuse = |why: String| {
            EngineError::Checkpoint(format!(
                "checkpoint {epoch} of \"{}\" ({}) cannot be restored: {why}; drop and \
                 re-create the job to start over",
                identity.job,
                folder.display()
            ))
        };
        let text = std::fs::read(folder.join(MANIFEST))
            .map_err(|e| refuse(format!("its manifest cannot be read ({e})")))?;
        let version: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| refuse(format!("its manifest is not JSON ({e})")))?;
        let found = version.get("format_version").and_then(|v| v.as_u64());
        if found != Some(u64::from(FORMAT_VERSION)) {
            return Err(refuse(format!(
                "it has format version {}, this server reads version {FORMAT_VERSION}",
                found.map_or_else(|| "(none)".to_string(), |v| v.to_string())
            )));
        }
        let manifest: Manifest = serde_json::from_value(version)
            .map_err(|e| refuse(format!("its manifest is malformed ({e})")))?;
        if manifest.epoch != epoch || manifest.job != identity.job {
            return Err(refuse("its manifest names another checkpoint".to_string()));
        }
        if manifest.query != identity.query || manifest.plan != identity.plan {
            return Err(refuse(
                "it was taken by another query or plan (the server was upgraded, or the job \
                 re-created)"
                    .to_string(),
            ));
        }
        let read_at = |at: &Path, file: &str, bytes: u64| -> EngineResult<StateSnapshot> {
            let data = std::fs::read(at.join(file))
                .map_err(|e| refuse(format!("{file} cannot be read ({e})")))?;
            if data.len() as u64 != bytes {
                return Err(refuse(format!(
                    "{file} has {} bytes, its manifest says {bytes}",
                    data.len()
                )));
            }
            decode(&data).map_err(|e| refuse(format!("{file}: {e}")))
        };
        let read = |file: &str, bytes: u64| read_at(&folder, file, bytes);
        let mut operators = BTreeMap::new();
        let mut shared = BTreeMap::new();
        for entry in &manifest.operators {
            let part = PartId {
                node: entry.node,
                instance: entry.instance,
            };
            let mut batches = read(&entry.file, entry.bytes)?.batches().to_vec();
            if batches.iter().any(|b| !matches!(shared_id(b), Ok(None))) {
                return Err(refuse(format!("{} holds a shared batch", entry.file)));
            }
            for s in &entry.shared {
                if !s.file.starts_with(&format!("{SHARED_DIR}/")) || s.file.contains("..") {
                    return Err(refuse(format!("a shared batch at {}", s.file)));
                }
                match read_at(&self.dir, &s.file, s.bytes)?.batches() {
                    [batch]
                        if table_of(batch) == Some(s.table.as_str())
                            && matches!(shared_id(batch), Ok(Some(id)) if id == s.id) =>
                    {
                        batches.push(batch.clone())
                    }
                    _ => {
                        return Err(refuse(format!(
                            "{} does not hold shared batch {} of {}",
                            s.file, s.id, s.table
                        )));
                    }
                }
                shared.insert((part, s.table.clone(), s.id), s.clone());
            }
            operators.insert(part, StateSnapshot::from_batches(batches));
        }
        let mut view = match &manifest.view {
            Some(v) => Some((read(&v.file, v.bytes)?, v.watermark)),
            None => None,
        };
        if let Some(parts) = &manifest.view_parts {
            let mut batches = Vec::new();
            for part in &parts.parts {
                if !part.file.starts_with(&format!("{VIEW_PARTS_DIR}/")) || part.file.contains("..")
                {
                    return Err(refuse(format!("a view part at {}", part.file)));
                }
                batches.extend(
                    read_at(&self.dir, &part.file, part.bytes)?
                        .batches()
                        .iter()
                        .cloned(),
                );
            }
            view = Some((StateSnapshot::from_batches(batches), parts.watermark));
        }
        let sources = manifest
            .sources
            .iter()
            .map(|s| {
                (
                    PartId {
                        node: s.node,
                        instance: s.instance,
                    },
                    SourcePosition {
                        rows: s.rows,
                        watermark: s.watermark,
                        connector: s.connector.clone(),
                        partition_watermarks: s.partition_watermarks.clone(),
                    },
                )
            })
            .collect();
        // The restored job's next checkpoint refers to these files.
        *self.lock_shared() = shared;
        Ok(LoadedCheckpoint {
            restored: Arc::new(RestoredState {
                operators: Mutex::new(operators),
                sources,
            }),
            view,
            manifest,
        })
    }
}

/// What identifies the job a checkpoint belongs to.
#[derive(Debug, Clone)]
pub struct JobIdentity {
    pub job: String,
    pub query: String,
    pub plan: String,
    pub parallelism: usize,
}

/// Writes `data` to `path` and syncs it; returns its length.
fn write_synced(path: &Path, data: &[u8]) -> EngineResult<u64> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(data)?;
    file.sync_all()?;
    Ok(data.len() as u64)
}

/// Syncs a folder so a rename in it is durable (best effort: not every platform can).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A job name as a folder name: letters, digits and `_` as they are, anything else escaped.
fn folder_name(job: &str) -> String {
    let mut out = String::new();
    for c in job.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02x}"));
            }
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How a checkpoint attempt ended (or that it has not yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Failed(String),
}

/// One checkpoint attempt, for `SHOW CHECKPOINTS`.
#[derive(Debug, Clone)]
pub struct CheckpointRecord {
    pub epoch: Epoch,
    pub status: CheckpointStatus,
    pub started_at: SystemTime,
    pub duration: Option<Duration>,
    pub state_bytes: Option<u64>,
}

/// Attempts kept per job in the history.
const HISTORY: usize = 20;

/// A job's checkpointing: its interval and timeout, its folder, the handle its dataflow
/// reports to, and the history of its attempts.
#[derive(Debug)]
pub struct JobCheckpoints {
    pub interval: Duration,
    /// How long a checkpoint's barrier may take to come back before the checkpoint fails.
    pub timeout: Duration,
    pub store: CheckpointStore,
    pub identity: JobIdentity,
    pub handle: Arc<CheckpointHandle>,
    /// The epoch the job resumed from after a restart.
    pub restored_from: Option<Epoch>,
    last_epoch: AtomicU64,
    last_completed: AtomicU64,
    history: Mutex<Vec<CheckpointRecord>>,
    /// An append-only view's parts in the last completed checkpoint.
    view_parts: Mutex<Vec<ViewPart>>,
}

impl JobCheckpoints {
    pub fn new(
        interval: Duration,
        timeout: Duration,
        store: CheckpointStore,
        identity: JobIdentity,
        restored_from: Option<Epoch>,
    ) -> Self {
        let last = restored_from.unwrap_or(0);
        Self {
            interval,
            timeout,
            store,
            identity,
            handle: Arc::default(),
            restored_from,
            last_epoch: AtomicU64::new(last),
            last_completed: AtomicU64::new(last),
            history: Mutex::default(),
            view_parts: Mutex::default(),
        }
    }

    /// An append-only view's parts in the last completed checkpoint (what the next one adds
    /// to).
    pub fn view_parts(&self) -> Vec<ViewPart> {
        self.view_parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_view_parts(&self, parts: Vec<ViewPart>) {
        *self.view_parts.lock().unwrap_or_else(|e| e.into_inner()) = parts;
    }

    /// The last completed checkpoint's epoch (a restored one counts).
    pub fn last_completed(&self) -> Option<Epoch> {
        Some(self.last_completed.load(Ordering::Relaxed)).filter(|e| *e > 0)
    }

    /// Starts the next checkpoint: records it and triggers its barriers.
    pub fn begin(&self) -> Epoch {
        let epoch = self.record_next();
        self.handle.trigger(epoch);
        epoch
    }

    /// The epoch of the job's final checkpoint, once its input ended: the one in flight,
    /// whose barrier cannot come back now, or else the next, recorded without triggering
    /// barriers (the dataflow has ended).
    pub fn begin_final(&self, in_flight: Option<Epoch>) -> Epoch {
        in_flight.unwrap_or_else(|| self.record_next())
    }

    /// Numbers the next checkpoint and lists it `in_progress`.
    fn record_next(&self) -> Epoch {
        let epoch = self.last_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut history = self.lock();
        history.push(CheckpointRecord {
            epoch,
            status: CheckpointStatus::InProgress,
            started_at: SystemTime::now(),
            duration: None,
            state_bytes: None,
        });
        let excess = history.len().saturating_sub(HISTORY);
        history.drain(..excess);
        epoch
    }

    /// Checkpoint `epoch` is complete.
    pub fn completed(&self, epoch: Epoch, bytes: u64) {
        self.last_completed.fetch_max(epoch, Ordering::Relaxed);
        self.handle.completed(epoch);
        self.finish(epoch, CheckpointStatus::Completed, Some(bytes));
    }

    /// Checkpoint `epoch` failed; the job goes on and tries again at the next interval.
    pub fn failed(&self, epoch: Epoch, reason: String) {
        tracing::warn!(job = %self.identity.job, epoch, %reason, "checkpoint failed");
        self.finish(epoch, CheckpointStatus::Failed(reason), None);
    }

    fn finish(&self, epoch: Epoch, status: CheckpointStatus, bytes: Option<u64>) {
        let mut history = self.lock();
        if let Some(r) = history.iter_mut().rev().find(|r| r.epoch == epoch) {
            r.duration = r.started_at.elapsed().ok();
            r.status = status;
            r.state_bytes = bytes;
        }
    }

    pub fn history(&self) -> Vec<CheckpointRecord> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CheckpointRecord>> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The columns of `SHOW CHECKPOINTS` and `eddy_checkpoints`.
pub fn checkpoints_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new(
            "started_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("duration_ms", DataType::Int64, true),
        Field::new("state_bytes", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// The rows of `SHOW CHECKPOINTS`: each job's recent attempts, oldest first.
pub fn checkpoints_report(jobs: &[(String, Vec<CheckpointRecord>)]) -> EngineResult<RecordBatch> {
    let mut names = Vec::new();
    let mut epochs = Vec::new();
    let mut statuses = Vec::new();
    let mut started = Vec::new();
    let mut durations = Vec::new();
    let mut bytes = Vec::new();
    let mut errors = Vec::new();
    for (job, records) in jobs {
        for r in records {
            names.push(job.clone());
            epochs.push(r.epoch as i64);
            let (status, error) = match &r.status {
                CheckpointStatus::InProgress => ("in_progress", None),
                CheckpointStatus::Completed => ("completed", None),
                CheckpointStatus::Failed(e) => ("failed", Some(e.clone())),
            };
            statuses.push(status);
            errors.push(error);
            started.push(
                r.started_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64),
            );
            durations.push(r.duration.map(|d| d.as_millis() as i64));
            bytes.push(r.state_bytes.map(|b| b as i64));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(names)),
        Arc::new(Int64Array::from(epochs)),
        Arc::new(StringArray::from(statuses)),
        Arc::new(TimestampMicrosecondArray::from(started).with_timezone("UTC")),
        Arc::new(Int64Array::from(durations)),
        Arc::new(Int64Array::from(bytes)),
        Arc::new(StringArray::from(errors)),
    ];
    Ok(RecordBatch::try_new(checkpoints_schema(), columns)?)
}

/// Parses a checkpoint interval: `'10s'`, `'500ms'`, `'2 min'`, `'1h'`, or `'0'` (off).
pub fn parse_interval(value: &str) -> Result<Duration, String> {
    let text = value.trim().trim_matches('\'').trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid interval '{value}': expected e.g. '10s', '500ms' or '0'"))?;
    let seconds = match unit.trim() {
        "" if number == 0.0 => 0.0,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => number / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => number,
        "m" | "min" | "mins" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        _ => {
            return Err(format!(
                "invalid interval '{value}': expected e.g. '10s', '500ms', '2 min' or '0'"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid interval '{value}'"))
}

/// Parses a checkpoint timeout: an interval as [`parse_interval`] reads it, at least 1 ms.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid timeout '{value}': expected e.g. '30s', '500ms' or '10 min'");
    let timeout = parse_interval(value).map_err(|_| invalid())?;
    if timeout < MIN_TIMEOUT {
        return Err(format!(
            "invalid timeout '{value}': it must be at least 1ms"
        ));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> JobIdentity {
        JobIdentity {
            job: "v".to_string(),
            query: "SELECT 1".to_string(),
            plan: "Plan".to_string(),
            parallelism: 2,
        }
    }

    fn data(epoch: Epoch) -> CheckpointData {
        let mut snapshot = StateSnapshot::new();
        snapshot
            .add_values("meta", &[("watermark", Some(epoch as i64))])
            .unwrap();
        let mut parts = EpochParts::default();
        parts.operators.insert(
            PartId {
                node: 3,
                instance: 1,
            },
            snapshot,
        );
        parts.sources.insert(
            PartId {
                node: 5,
                instance: 0,
            },
            SourcePosition {
                rows: 10 * epoch,
                watermark: Some(7),
                connector: Some(format!("offsets at {epoch}")),
                partition_watermarks: BTreeMap::from([(0, 7), (1, 9)]),
            },
        );
        CheckpointData {
            epoch,
            parts,
            view: None,
            late_rows: 0,
            finished: false,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("eddy-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_latest_complete_checkpoint_is_restored_and_older_ones_deleted() {
        let dir = temp_dir("latest");
        let store = CheckpointStore::new(&dir, "v");
        store.write(&identity(), data(1)).unwrap();
        store.write(&identity(), data(2)).unwrap();
        // A crash while writing checkpoint 3 leaves a torn folder.
        std::fs::create_dir_all(store.dir.join("3.inprogress")).unwrap();
        let loaded = store.load_latest(&identity()).unwrap().unwrap();
        assert_eq!(loaded.manifest.epoch, 2);
        let part = PartId {
            node: 3,
            instance: 1,
        };
        let snapshot = loaded.restored.take_operator(part).unwrap();
        assert_eq!(snapshot.values("meta").unwrap()["watermark"], Some(2));
        let source = loaded.restored.source(PartId {
            node: 5,
            instance: 0,
        });
        assert_eq!(source.rows, 20);
        assert_eq!(source.connector.as_deref(), Some("offsets at 2"));
        assert_eq!(
            source.partition_watermarks,
            BTreeMap::from([(0, 7), (1, 9)])
        );
        let left: Vec<String> = std::fs::read_dir(&store.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            left,
            vec!["2".to_string()],
            "epoch 1 and the torn 3 are gone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_version_plan_or_damaged_file_is_refused_not_misread() {
        let dir = temp_dir("refuse");
        let store = CheckpointStore::new(&dir, "v");
        store.write(&identity(), data(1)).unwrap();
        let mut other = identity();
        other.plan = "Other plan".to_string();
        let e = store.load_latest(&other).err().unwrap().to_string();
        assert!(e.contains("another query or plan"), "{e}");

        let manifest = store.dir.join("1").join(MANIFEST);
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replace(
                &format!("\"format_version\": {FORMAT_VERSION}"),
                "\"format_version\": 99",
            ),
        )
        .unwrap();
        let e = store.load_latest(&identity()).err().unwrap().to_string();
        assert!(e.contains("format version 99"), "{e}");
        std::fs::write(&manifest, text).unwrap();

        let state = store.dir.join("1").join("op-3-1.state");
        let bytes = std::fs::read(&state).unwrap();
        std::fs::write(&state, &bytes[..bytes.len() - 1]).unwrap();
        let e = store.load_latest(&identity()).err().unwrap().to_string();
        assert!(e.contains("bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_append_only_view_is_written_once_in_parts() {
        let dir = temp_dir("parts");
        let store = CheckpointStore::new(&dir, "v");
        let rows = |values: &[i64]| {
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
                vec![Arc::new(Int64Array::from(values.to_vec()))],
            )
            .unwrap();
            let mut s = StateSnapshot::new();
            s.add("rows", batch).unwrap();
            s
        };
        let with_view = |epoch, new: &[i64], previous: Vec<ViewPart>| {
            let mut d = data(epoch);
            d.view = Some((
                ViewContents::Appended {
                    rows: rows(new),
                    previous,
                },
                Some(epoch as i64),
            ));
            d
        };
        let first = store
            .write(&identity(), with_view(1, &[1, 2], Vec::new()))
            .unwrap();
        let parts = first.view_parts.unwrap();
        assert_eq!(parts.len(), 1);
        // Checkpoint 2 fails after writing its part; 3 adds to checkpoint 1's parts.
        std::fs::write(store.dir.join("view-parts/part-2.state"), b"orphan").unwrap();
        let third = store
            .write(&identity(), with_view(3, &[3], parts.clone()))
            .unwrap();
        let parts = third.view_parts.unwrap();
        assert_eq!(parts.len(), 2);
        assert!(
            !store.dir.join("view-parts/part-2.state").exists(),
            "the orphan is gone"
        );
        assert!(
            !store.dir.join("1").exists(),
            "checkpoint 1 is gone, its part is not"
        );
        let loaded = store.load_latest(&identity()).unwrap().unwrap();
        let (view, watermark) = loaded.view.unwrap();
        assert_eq!(watermark, Some(3));
        let values: Vec<i64> = view
            .table("rows")
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(values, vec![1, 2, 3]);
        // A part of the wrong size is refused.
        std::fs::write(store.dir.join(&parts[1].file), b"short").unwrap();
        assert!(store.load_latest(&identity()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_final_checkpoint_says_the_job_finished_and_older_manifests_did_not() {
        let dir = temp_dir("final");
        let store = CheckpointStore::new(&dir, "v");
        store.write(&identity(), data(1)).unwrap();
        let loaded = store.load_latest(&identity()).unwrap().unwrap();
        assert!(!loaded.manifest.finished);
        // A manifest written before the field existed reads as not finished.
        let manifest = store.dir.join("1").join(MANIFEST);
        let text = std::fs::read_to_string(&manifest).unwrap();
        let older = text.replace(",\n  \"finished\": false", "");
        assert!(!older.contains("finished"), "{text}");
        std::fs::write(&manifest, older).unwrap();
        let loaded = store.load_latest(&identity()).unwrap().unwrap();
        assert!(!loaded.manifest.finished);

        let mut last = data(2);
        last.parts.operators.clear();
        last.finished = true;
        store.write(&identity(), last).unwrap();
        let loaded = store.load_latest(&identity()).unwrap().unwrap();
        assert_eq!(loaded.manifest.epoch, 2);
        assert!(loaded.manifest.finished);
        assert!(
            !store.dir.join("1").exists(),
            "the older checkpoint is deleted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shared_batches_are_written_once_and_deleted_when_no_checkpoint_lists_them() {
        let dir = temp_dir("shared");
        let store = CheckpointStore::new(&dir, "v");
        let part = PartId {
            node: 3,
            instance: 1,
        };
        let batch = |id: u64| {
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
                vec![Arc::new(Int64Array::from(vec![id as i64; 4]))],
            )
            .unwrap()
        };
        let with_shared = |epoch, ids: &[u64]| {
            let mut d = data(epoch);
            let snapshot = d.parts.operators.get_mut(&part).unwrap();
            for &id in ids {
                snapshot.add_shared("rows", id, batch(id)).unwrap();
            }
            d
        };
        let files = |store: &CheckpointStore| {
            let mut names: Vec<String> = std::fs::read_dir(store.dir.join(SHARED_DIR))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            names.sort();
            names
        };
        let only_meta = store.write(&identity(), data(1)).unwrap().bytes;
        let first = store.write(&identity(), with_shared(2, &[1, 2])).unwrap();
        assert!(first.bytes > only_meta);
        assert_eq!(
            files(&store),
            vec!["op-3-1-rows-1.2.state", "op-3-1-rows-2.2.state"]
        );
        // Checkpoint 3 holds batch 2 again and a new 3: only 3 is written, 1 is deleted.
        let second = store.write(&identity(), with_shared(3, &[2, 3])).unwrap();
        assert!(second.bytes < first.bytes);
        assert_eq!(
            files(&store),
            vec!["op-3-1-rows-2.2.state", "op-3-1-rows-3.3.state"]
        );
        // Checkpoint 4 fails after writing a batch; 5 writes nothing new and deletes it.
        std::fs::write(store.dir.join("shared/op-3-1-rows-4.4.state"), b"torn").unwrap();
        let third = store.write(&identity(), with_shared(5, &[2, 3])).unwrap();
        assert_eq!(third.bytes, only_meta, "nothing shared is written again");
        assert_eq!(
            files(&store),
            vec!["op-3-1-rows-2.2.state", "op-3-1-rows-3.3.state"]
        );

        // After a restart the batches come back with their ids, and the next checkpoint of
        // the restored job refers to them.
        let restarted = CheckpointStore::new(&dir, "v");
        let loaded = restarted.load_latest(&identity()).unwrap().unwrap();
        let snapshot = loaded.restored.take_operator(part).unwrap();
        let shared = snapshot.shared("rows").unwrap();
        assert_eq!(shared.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(shared[1].1.column(0).as_ref(), batch(3).column(0).as_ref());
        assert_eq!(snapshot.values("meta").unwrap()["watermark"], Some(5));
        let fourth = restarted
            .write(&identity(), with_shared(6, &[3, 4]))
            .unwrap();
        assert!(fourth.bytes > only_meta && fourth.bytes < first.bytes);
        assert_eq!(
            files(&restarted),
            vec!["op-3-1-rows-3.3.state", "op-3-1-rows-4.6.state"]
        );

        // A reference without rows to a batch the last checkpoint holds lists its file; one
        // to a batch no complete checkpoint holds fails the checkpoint.
        let mut d = with_shared(7, &[3]);
        let snapshot = d.parts.operators.get_mut(&part).unwrap();
        snapshot.add_shared_unchanged("rows", 4).unwrap();
        assert_eq!(restarted.write(&identity(), d).unwrap().bytes, only_meta);
        assert_eq!(
            files(&restarted),
            vec!["op-3-1-rows-3.3.state", "op-3-1-rows-4.6.state"]
        );
        let mut d = with_shared(8, &[3]);
        let snapshot = d.parts.operators.get_mut(&part).unwrap();
        snapshot.add_shared_unchanged("rows", 9).unwrap();
        let e = restarted.write(&identity(), d).unwrap_err().to_string();
        assert!(e.contains("no complete checkpoint holds"), "{e}");

        // A shared file that is missing, cut short or holds another batch is refused.
        let refused = |why: &str| {
            let e = CheckpointStore::new(&dir, "v")
                .load_latest(&identity())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(why), "{e}");
        };
        let three = store.dir.join("shared/op-3-1-rows-3.3.state");
        let four = store.dir.join("shared/op-3-1-rows-4.6.state");
        let bytes = std::fs::read(&three).unwrap();
        std::fs::write(&three, std::fs::read(&four).unwrap()).unwrap();
        refused("does not hold shared batch 3 of rows");
        std::fs::write(&three, &bytes[..bytes.len() - 1]).unwrap();
        refused("bytes, its manifest says");
        std::fs::remove_file(&three).unwrap();
        refused("cannot be read");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_final_checkpoint_takes_the_epoch_in_flight_or_the_next() {
        let checkpoints = JobCheckpoints::new(
            Duration::from_secs(1),
            DEFAULT_TIMEOUT,
            CheckpointStore::new(&temp_dir("final-epoch"), "v"),
            identity(),
            Some(4),
        );
        let in_flight = checkpoints.begin();
        assert_eq!(in_flight, 5);
        assert_eq!(checkpoints.begin_final(Some(in_flight)), 5);
        checkpoints.completed(5, 0);
        assert_eq!(checkpoints.begin_final(None), 6);
        let history: Vec<_> = checkpoints
            .history()
            .iter()
            .map(|r| (r.epoch, r.status.clone()))
            .collect();
        assert_eq!(
            history,
            vec![
                (5, CheckpointStatus::Completed),
                (6, CheckpointStatus::InProgress)
            ]
        );
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_timeout("10min").unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(parse_timeout("1ms").unwrap(), Duration::from_millis(1));
        for bad in ["0", "0.5ms", "soon", "2 days"] {
            let e = parse_timeout(bad).unwrap_err();
            assert!(e.starts_with(&format!("invalid timeout '{bad}'")), "{e}");
        }
        // Too long for a duration: refused, not a panic.
        assert!(parse_interval("99999999999999999999999h").is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_interval("'500ms'").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_interval("2 min").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_interval("0").unwrap(), Duration::ZERO);
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("5 parsecs").is_err());
    }

    #[test]
    fn job_names_make_safe_folder_names() {
        assert_eq!(folder_name("v_1"), "v_1");
        assert_eq!(folder_name("a/../b"), "a%2f%2e%2e%2fb");
    }
}
