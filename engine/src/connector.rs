//! The traits that connectors implement (sources and sinks), and the registry the server fills.
//!
//! A connector turns the options of a `CREATE SOURCE ... WITH (...)` statement into a
//! stream of Arrow batches with exactly the declared schema. It knows nothing of watermarks,
//! operators or pgwire: the engine runs every source stream in a source task
//! ([`crate::runtime::source`]) that computes watermarks and counts rows.
//!
//! A connector hands every malformed input row to the [`SourceMetrics`] it was given
//! ([`SourceMetrics::malformed_row`]), which applies the source's `format.on-error` ([`OnError`]):
//! count and skip it, fail the stream, or send it to the engine's dead-letter table. A
//! connector never decides that itself, and never sees the option.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;

/// Options of a `WITH (...)` clause. Keys are lower-cased and unquoted; values are unquoted.
pub type ConnectorOptions = BTreeMap<String, String>;

/// Errors a connector reports, both at `CREATE SOURCE` time and while reading.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// An option is missing, unknown or has a bad value (a user mistake: SQLSTATE 22023/42601).
    #[error("{0}")]
    InvalidOption(String),
    /// The connector cannot do what the options ask (SQLSTATE 0A000).
    #[error("feature not supported: {0}")]
    Unsupported(String),
    /// A path outside the directories the server allows (SQLSTATE 42501).
    #[error("{0}")]
    PermissionDenied(String),
    /// Reading the external system failed (a file vanished, a broker is down).
    #[error("{0}")]
    Io(String),
    /// Arrow or DataFusion failed while decoding.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A malformed row in a source with `format.on-error = 'fail'` (a data exception).
    #[error(
        "malformed row in source \"{source_name}\" at {position}: {reason} (format.on-error = 'fail')"
    )]
    MalformedRow {
        source_name: String,
        position: String,
        reason: String,
    },
}

pub type ConnectorResult<T> = Result<T, ConnectorError>;

/// A stream of batches whose schema equals the declared source schema.
pub type BatchStream = BoxStream<'static, ConnectorResult<RecordBatch>>;

/// What a connector needs to open one reader of a source.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The source's name in the catalog (for messages).
    pub source_name: String,
    /// The declared schema.
    pub schema: SchemaRef,
    /// The columns of `schema` the query reads, in this order; `None` for all of them. Every
    /// batch must have exactly the projected schema ([`SourceContext::output_schema`]), so a
    /// connector can skip producing (parsing, generating) the other columns.
    pub projection: Option<Vec<usize>>,
    /// The `WITH (...)` options.
    pub options: ConnectorOptions,
    /// Counters the connector must update.
    pub metrics: Arc<SourceMetrics>,
    /// Preferred number of rows per batch.
    pub batch_size: usize,
    /// Which part of the source this reader produces, when the query reads it with several
    /// readers (only for connectors whose [`SourceConnector::splittable`] says so).
    pub split: SourceSplit,
    /// The query's parallelism (at least 1). A reader that is not split may use up to this
    /// many threads to decode one stream, as long as its rows keep their order.
    pub parallelism: usize,
    /// Where to start: the number of rows of this split that a restored checkpoint has
    /// already accounted for. The reader must produce exactly the rows that an uninterrupted
    /// reader would produce after its first `start_row` rows (malformed rows, which are
    /// skipped, do not count). 0 for a fresh start.
    pub start_row: u64,
    /// Where to start, for connectors that publish a [`SourceReader::position`]: the position
    /// the reader held at the restored checkpoint's barrier (the same text the connector
    /// wrote). The reader must continue exactly after the rows it had yielded then. `None` for
    /// a fresh start (and for connectors without positions).
    pub start_position: Option<String>,
    /// The declared columns whose values are the messages' metadata (`col TYPE METADATA FROM
    /// 'partition'`), not decoded from their values; only keys the connector offers
    /// ([`SourceConnector::metadata`]).
    pub metadata: Vec<MetadataColumn>,
}

/// A column of a source filled from each message's metadata (Flink's `METADATA FROM 'key'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    /// The column's index in the declared schema.
    pub column: usize,
    /// The metadata key (`partition`, `offset`, `timestamp`...).
    pub key: String,
}

impl SourceContext {
    /// The schema of the batches the reader must produce: the declared schema, projected.
    pub fn output_schema(&self) -> ConnectorResult<SchemaRef> {
        match &self.projection {
            Some(columns) => Ok(std::sync::Arc::new(self.schema.project(columns)?)),
            None => Ok(std::sync::Arc::clone(&self.schema)),
        }
    }
}

/// Reader `index` of `count` parallel readers of one source. The readers of a source together
/// produce every row exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSplit {
    pub index: usize,
    pub count: usize,
}

impl SourceSplit {
    /// The only reader of its source.
    pub const WHOLE: SourceSplit = SourceSplit { index: 0, count: 1 };
}

/// An opened source: its batches and whether they end.
pub struct SourceReader {
    pub stream: BatchStream,
    /// True when the stream ends by itself (a file read once, `events.max`).
    pub bounded: bool,
    /// For connectors that cannot resume from a row count (Kafka offsets): where the reader
    /// stands after the last batch its stream yielded. The engine reads it at each checkpoint
    /// barrier and hands it back as [`SourceContext::start_position`] after a restore.
    pub position: Option<Arc<ConnectorPosition>>,
    /// For connectors whose rows come from independently ordered partitions (Kafka's): which
    /// partition each batch comes from, so the engine keeps a watermark per partition.
    pub partitions: Option<Arc<SourcePartitions>>,
}

/// A reader's resumable position, opaque to the engine (the connector chooses the text, e.g.
/// the next offset to read per partition).
///
/// The connector must [`set`](Self::set) it before its stream yields a batch, to the position
/// *after* that batch, and never to a position past a batch it has not yielded yet: the engine
/// records it between batches, so it must describe exactly the rows sent downstream.
#[derive(Debug, Default)]
pub struct ConnectorPosition(Mutex<PositionState>);

#[derive(Debug, Default)]
struct PositionState {
    position: Option<String>,
    /// The position of the newest completed checkpoint, until the connector takes it.
    completed: Option<String>,
}

impl ConnectorPosition {
    /// A position starting at `start` (what the reader was opened with).
    pub fn new(start: Option<String>) -> Self {
        Self(Mutex::new(PositionState {
            position: start,
            completed: None,
        }))
    }

    pub fn set(&self, position: String) {
        self.lock().position = Some(position);
    }

    pub fn get(&self) -> Option<String> {
        self.lock().position.clone()
    }

    /// The engine: a checkpoint holding `position` (a text this connector [`set`](Self::set))
    /// is complete. Only the newest one is kept until the connector takes it.
    pub fn checkpoint_completed(&self, position: String) {
        self.lock().completed = Some(position);
    }

    /// The connector: the position of the newest checkpoint completed since the last call
    /// (Kafka commits it to the consumer group, so lag tools see the job's progress).
    pub fn take_completed(&self) -> Option<String> {
        self.lock().completed.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PositionState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The partitions of one reader whose rows come from independently ordered partitions (a
/// Kafka topic's), shared by the connector and the engine. The engine keeps a watermark per
/// partition and combines them by minimum (Flink's per-split watermarks); a partition that
/// yields nothing for the idle timeout stops holding the reader's watermark back until it
/// yields again, and a reader with no partition at all is idle.
///
/// The connector [`assign`](Self::assign)s the partitions it reads once it knows them (more
/// may follow), and before its stream yields a batch says with
/// [`batch_from`](Self::batch_from) which partition every row of that batch comes from.
#[derive(Debug, Default)]
pub struct SourcePartitions {
    state: Mutex<PartitionsState>,
    idle_timeout: Option<Duration>,
    /// Bumped by every [`assign`](Self::assign), so the engine can tell cheaply, before each
    /// batch, whether there are partitions it has not taken in yet.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct PartitionsState {
    /// `None` until the connector has assigned its partitions.
    assigned: Option<BTreeSet<i32>>,
    current: Option<i32>,
}

impl SourcePartitions {
    /// Partitions that turn idle after `idle_timeout` without a row (`None`: never).
    pub fn new(idle_timeout: Option<Duration>) -> Self {
        Self {
            state: Mutex::default(),
            idle_timeout,
            generation: AtomicU64::new(0),
        }
    }

    /// The reader reads these partitions (too).
    pub fn assign(&self, partitions: impl IntoIterator<Item = i32>) {
        self.lock()
            .assigned
            .get_or_insert_with(BTreeSet::new)
            .extend(partitions);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes with every [`assign`](Self::assign).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every row of the batch the stream yields next comes from `partition`.
    pub fn batch_from(&self, partition: i32) {
        self.lock().current = Some(partition);
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The assigned partitions; `None` before the connector assigned any.
    pub fn assigned(&self) -> Option<Vec<i32>> {
        self.lock()
            .assigned
            .as_ref()
            .map(|a| a.iter().copied().collect())
    }

    /// The partition of the batch the stream yielded last.
    pub fn current(&self) -> Option<i32> {
        self.lock().current
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartitionsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A source connector (`file`, `nexmark`, ...). One instance serves every source using it.
/// The last column of an upsert source's batches ([`SourceConnector::upserts`]).
pub const UPSERT_FLAG: &str = "__upsert";

pub trait SourceConnector: Send + Sync + 'static {
    /// The name used in `connector = '...'`.
    fn name(&self) -> &'static str;

    /// Other accepted names (Flink's `filesystem` for `file`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// The schema to use when `CREATE SOURCE` lists no columns, if the connector knows one
    /// (nexmark does; files do not).
    fn default_schema(&self, _options: &ConnectorOptions) -> ConnectorResult<Option<SchemaRef>> {
        Ok(None)
    }

    /// Checks the options and the declared schema at `CREATE SOURCE` time, so that mistakes
    /// are reported when the source is declared, not when a query first reads it. `schema`
    /// holds the columns read from the data: without the metadata columns.
    fn validate(&self, schema: &SchemaRef, options: &ConnectorOptions) -> ConnectorResult<()>;

    /// The metadata keys a source of this connector can read into columns, each with the type
    /// it produces (a declared column must be of a type it casts to). A key produced as
    /// `DataType::Null` is known but not implemented (refused with 0A000). None by default.
    fn metadata(&self) -> Vec<(&'static str, DataType)> {
        Vec::new()
    }

    /// Whether the source's messages are upserts and deletes of rows identified by the
    /// source's `PRIMARY KEY` (Flink's `upsert-kafka`), which queries read as a changelog.
    /// Such a source must declare a primary key; its columns reach [`validate`](Self::validate)
    /// and [`open`](Self::open) as the option `key.fields` (`'a;b'`), and its readers' batches
    /// carry, after the columns, a non-null BOOLEAN column [`UPSERT_FLAG`]: true for an upsert
    /// of the row, false for a delete of the row with that key (whose other columns are NULL).
    fn upserts(&self) -> bool {
        false
    }

    /// Whether a query may read the source with several parallel readers, each opened with
    /// its own [`SourceSplit`]. Rows of equal event time must stay in one split, in order, so
    /// that ties reach keyed operators in the same order whatever the parallelism.
    fn splittable(&self, _options: &ConnectorOptions) -> bool {
        false
    }

    /// Opens a reader. Called once per query that reads the source (once per split when the
    /// source is [`splittable`](Self::splittable) and the query runs in parallel).
    fn open(&self, ctx: SourceContext) -> ConnectorResult<SourceReader>;
}

/// The source option that says what a malformed row does.
pub const ON_ERROR_OPTION: &str = "format.on-error";

/// What a source does with a malformed row (`format.on-error`, an option of every source that
/// the engine takes out of the options before the connector sees them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// Count it, report the first one, go on without it (the default).
    #[default]
    Skip,
    /// Fail the query (or the job) with the row's position and reason.
    Fail,
    /// Drop it from the stream and append it to the dead-letter table.
    DeadLetter,
}

impl OnError {
    /// Takes [`ON_ERROR_OPTION`] out of a source's options: the policy, and the options the
    /// connector gets. A bad value is [`ConnectorError::InvalidOption`].
    pub fn split_options(
        options: &ConnectorOptions,
    ) -> ConnectorResult<(OnError, ConnectorOptions)> {
        let mut rest = options.clone();
        let Some(value) = rest.remove(ON_ERROR_OPTION) else {
            return Ok((OnError::Skip, rest));
        };
        let policy = match value.trim().to_ascii_lowercase().as_str() {
            "skip" => OnError::Skip,
            "fail" => OnError::Fail,
            "dead-letter" => OnError::DeadLetter,
            _ => {
                return Err(ConnectorError::InvalidOption(format!(
                    "invalid value '{value}' for option '{ON_ERROR_OPTION}'; expected 'skip', \
                     'fail' or 'dead-letter'"
                )));
            }
        };
        Ok((policy, rest))
    }

    pub fn name(self) -> &'static str {
        match self {
            OnError::Skip => "skip",
            OnError::Fail => "fail",
            OnError::DeadLetter => "dead-letter",
        }
    }
}

/// A malformed row as a connector found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedRow {
    /// Where it is in the input: `path:line` (text files), `path:row n` (Parquet),
    /// `topic/partition@offset` (Kafka).
    pub position: String,
    /// Why it was refused.
    pub reason: String,
    /// The row as read (the line, the message value or key that failed); `None` when there is
    /// none (a Kafka tombstone). Connectors fill it only when
    /// [`SourceMetrics::keeps_raw`] says it is wanted.
    pub raw: Option<Vec<u8>>,
}

impl MalformedRow {
    /// The row's report: `position: reason`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.position, self.reason)
    }
}

/// Where a source's dead letters go: the engine's `eddy_dead_letters` table, for one job or
/// query.
pub trait DeadLetterSink: Send + Sync + std::fmt::Debug {
    /// Appends malformed rows of source `source` durably, in order.
    fn append(&self, source: &str, rows: Vec<MalformedRow>) -> ConnectorResult<()>;
}

/// Rows of a dead-letter source buffered before one append: each append is synced to disk,
/// so rows are appended in groups (and always before the stream yields its next batch).
const DEAD_LETTER_BUFFER: usize = 1024;

/// What the source does with malformed rows, with what it needs for it.
#[derive(Debug, Default)]
enum Policy {
    #[default]
    Skip,
    Fail,
    DeadLetter {
        sink: Arc<dyn DeadLetterSink>,
        pending: Mutex<Vec<MalformedRow>>,
    },
}

/// Row counters of one source (all its readers), shared between the connector and the engine,
/// and the source's handling of malformed rows.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// The source's name, for messages.
    source: String,
    rows: AtomicU64,
    malformed: AtomicU64,
    dead_letters: AtomicU64,
    first_error: Mutex<Option<String>>,
    policy: Policy,
}

impl SourceMetrics {
    /// The counters of source `source`, whose malformed rows do what `on_error` says;
    /// dead letters go to `dead_letters` (without one, `DeadLetter` is refused as unsupported).
    pub fn new(
        source: &str,
        on_error: OnError,
        dead_letters: Option<Arc<dyn DeadLetterSink>>,
    ) -> ConnectorResult<Self> {
        let policy = match (on_error, dead_letters) {
            (OnError::Skip, _) => Policy::Skip,
            (OnError::Fail, _) => Policy::Fail,
            (OnError::DeadLetter, Some(sink)) => Policy::DeadLetter {
                sink,
                pending: Mutex::default(),
            },
            (OnError::DeadLetter, None) => {
                return Err(ConnectorError::Unsupported(format!(
                    "format.on-error = 'dead-letter' for source \"{source}\" here (no dead-letter \
                     table)"
                )));
            }
        };
        Ok(Self {
            source: source.to_string(),
            policy,
            ..Self::default()
        })
    }

    pub fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// The source's `format.on-error`.
    pub fn on_error(&self) -> OnError {
        match self.policy {
            Policy::Skip => OnError::Skip,
            Policy::Fail => OnError::Fail,
            Policy::DeadLetter { .. } => OnError::DeadLetter,
        }
    }

    /// Whether malformed rows should carry their raw bytes (only dead letters keep them, so
    /// connectors need not copy them otherwise).
    pub fn keeps_raw(&self) -> bool {
        matches!(self.policy, Policy::DeadLetter { .. })
    }

    /// A connector found a malformed row (built lazily: only what the policy needs is built).
    /// `skip`: counted, the first one logged and kept for the report; `fail`: the error to
    /// end the stream with; `dead-letter`: counted and queued for the dead-letter table.
    pub fn malformed_row(&self, row: impl FnOnce() -> MalformedRow) -> ConnectorResult<()> {
        self.malformed_row_as(row, false)
    }

    /// Like [`Self::malformed_row`], for a row that a restored checkpoint had already passed
    /// (a reader re-reads it to find where to start): counted, but not sent to the dead-letter
    /// table again.
    pub fn replayed_malformed_row(
        &self,
        row: impl FnOnce() -> MalformedRow,
    ) -> ConnectorResult<()> {
        self.malformed_row_as(row, true)
    }

    fn malformed_row_as(
        &self,
        row: impl FnOnce() -> MalformedRow,
        replayed: bool,
    ) -> ConnectorResult<()> {
        let first = self.malformed.fetch_add(1, Ordering::Relaxed) == 0;
        match &self.policy {
            Policy::Skip => {
                if first {
                    let message = row().message();
                    tracing::warn!(source = %self.source, error = %message, "a source reader skipped its first malformed row");
                    self.keep_first(message);
                }
                Ok(())
            }
            Policy::Fail => {
                let row = row();
                self.keep_first(row.message());
                Err(ConnectorError::MalformedRow {
                    source_name: self.source.clone(),
                    position: row.position,
                    reason: row.reason,
                })
            }
            Policy::DeadLetter { pending, .. } => {
                let row = row();
                if first {
                    self.keep_first(row.message());
                }
                if replayed {
                    return Ok(());
                }
                let full = {
                    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                    pending.push(row);
                    pending.len() >= DEAD_LETTER_BUFFER
                };
                if full {
                    self.flush_dead_letters()?;
                }
                Ok(())
            }
        }
    }

    /// Appends the queued dead letters to the dead-letter table. The engine calls it before
    /// it passes on each batch of the source and at its end, so a row's dead letters are
    /// stored before any row after it is sent downstream.
    pub fn flush_dead_letters(&self) -> ConnectorResult<()> {
        let Policy::DeadLetter { sink, pending } = &self.policy else {
            return Ok(());
        };
        let rows = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len() as u64;
        sink.append(&self.source, rows)?;
        self.dead_letters.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn keep_first(&self, message: String) {
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(message);
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Malformed rows appended to the dead-letter table.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }
}

/// What a sink connector needs to open a writer.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The sink's name in the catalog (for messages, and for names derived from it, such as a
    /// Kafka sink's transactional id).
    pub sink_name: String,
    /// The schema of the rows the writer receives.
    pub schema: SchemaRef,
    /// True when the rows are an updating query's changelog: every batch then has a leading
    /// `op` column (Utf8, `+` insert or `-` delete, [`crate::plan::CHANGELOG_OP`]) before the
    /// columns of [`SinkContext::schema`]. Only for connectors that
    /// [accept a changelog](SinkConnector::accepts_changelog).
    pub changelog: bool,
    /// The `WITH (...)` options.
    pub options: ConnectorOptions,
    /// The columns of `schema` that carry event time and follow the watermark (a window's
    /// `window_end`, a source's WATERMARK column), first the preferred one.
    pub time_columns: Vec<usize>,
    /// Counters the writer must update.
    pub metrics: Arc<SinkMetrics>,
    /// True when the sink's job checkpoints: the writer then gets [`SinkWriter::pre_commit`] at
    /// each barrier and [`SinkWriter::commit`] once the checkpoint is complete, so its output
    /// can become visible only with the checkpoint that covers it (a file sink's finished files
    /// and `_SUCCESS` markers stay hidden until then).
    pub exactly_once: bool,
}

/// Where an opened sink writes: rows, watermarks and the passing of processing time in; files
/// out. The engine calls it from one task, in order. Rows become visible only in finished
/// files, so a reader never sees a partial file.
pub trait SinkWriter: Send {
    /// Writes rows (their schema is [`SinkContext::schema`]).
    fn write(&mut self, batch: &RecordBatch) -> ConnectorResult<()>;

    /// The input's watermark (nanoseconds since the epoch): no row at or below it will
    /// follow, so whatever it completes (an event-time partition) can be committed.
    fn watermark(&mut self, watermark: i64) -> ConnectorResult<()>;

    /// Called about every [`SinkWriter::tick_interval`] so time-based rolling happens when no
    /// rows arrive.
    fn tick(&mut self) -> ConnectorResult<()>;

    /// Bytes of rows the writer holds in memory (open files' buffers and unflushed row
    /// groups): they count against the job's memory limits, as operator state does.
    fn buffered_bytes(&self) -> usize {
        0
    }

    /// How often [`SinkWriter::tick`] is wanted.
    fn tick_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    /// The input ended: finishes every file and commits everything.
    fn finish(&mut self) -> ConnectorResult<()>;

    /// The sink is dropped while its input runs: finishes the open files, commits nothing
    /// the watermark has not completed.
    fn close(&mut self) -> ConnectorResult<()>;

    /// The job failed: removes unfinished files, leaves finished ones alone.
    fn abort(&mut self);

    /// A checkpoint barrier of `epoch` reached the sink (first phase of the two-phase
    /// commit, only when [`SinkContext::exactly_once`]): finishes every open file under a
    /// hidden name and returns what [`SinkWriter::commit`] and [`SinkWriter::recover`] need to
    /// make them visible (the checkpoint stores it). Nothing becomes visible here.
    fn pre_commit(&mut self, epoch: u64) -> ConnectorResult<String> {
        let _ = epoch;
        Err(ConnectorError::Unsupported(
            "exactly-once output (checkpoints) for this sink".to_string(),
        ))
    }

    /// The checkpoint of `epoch` is complete (second phase): makes the files pre-committed at
    /// `epoch` and before visible, and writes the `_SUCCESS` markers they complete.
    fn commit(&mut self, epoch: u64) -> ConnectorResult<()> {
        let _ = epoch;
        Ok(())
    }

    /// Called once after [`SinkConnector::open`] of a sink restored after a restart, before
    /// any row: commits the files of the last complete checkpoint (`pre_committed` is what its
    /// [`SinkWriter::pre_commit`] returned; `None` when the sink has no complete checkpoint)
    /// and deletes every file of the sink that no complete checkpoint covers.
    fn recover(&mut self, pre_committed: Option<&str>) -> ConnectorResult<()> {
        let _ = pre_committed;
        Ok(())
    }
}

/// A sink connector (`parquet`, `file`). One instance serves every sink using it.
pub trait SinkConnector: Send + Sync + 'static {
    /// The name used in `connector = '...'`.
    fn name(&self) -> &'static str;

    /// Other accepted names.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the connector writes an updating query's changelog ([`SinkContext::changelog`]).
    /// `CREATE SINK` of an updating query into a connector that does not is refused (SQLSTATE
    /// 0A000) with [`SinkConnector::changelog_hint`].
    fn accepts_changelog(&self) -> bool {
        false
    }

    /// Why the connector refuses an updating query and what to do instead, completing "a sink
    /// over an updating query into connector 'x', which ...".
    fn changelog_hint(&self) -> &'static str {
        "appends rows; window the aggregate, or keep it in a materialized view"
    }

    /// Checks the options against the schema at `CREATE SINK` time.
    fn validate(&self, ctx: &SinkContext) -> ConnectorResult<()>;

    /// Opens a writer for a continuous sink.
    fn open(&self, ctx: SinkContext) -> ConnectorResult<Box<dyn SinkWriter>>;

    /// Whether the sink's output says an earlier run wrote everything its input held (its
    /// input ended): a sink restored after a restart is then not run again.
    fn completed(&self, _ctx: &SinkContext) -> bool {
        false
    }

    /// Opens a writer for `COPY ... TO 'path'`: one file at exactly `path`, made visible by
    /// [`SinkWriter::finish`]. `None` if the connector cannot write single files.
    fn open_file(
        &self,
        _ctx: SinkContext,
        _path: &str,
    ) -> Option<ConnectorResult<Box<dyn SinkWriter>>> {
        None
    }
}

/// Counters of one sink, shared between the writer and the engine.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub rows: AtomicU64,
    /// Finished (visible) files.
    pub files: AtomicU64,
    /// Event-time partitions marked complete (`_SUCCESS`).
    pub partitions_committed: AtomicU64,
    /// Rows written into a partition after it was committed.
    pub late_rows: AtomicU64,
    /// Bytes buffered in the files being written.
    pub buffered_bytes: AtomicU64,
}

impl SinkMetrics {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }
}

/// The connectors a server knows, by name and alias.
#[derive(Default, Clone)]
pub struct ConnectorRegistry {
    sources: HashMap<String, Arc<dyn SourceConnector>>,
    sinks: HashMap<String, Arc<dyn SinkConnector>>,
}

impl ConnectorRegistry {
    pub fn register_source(&mut self, connector: Arc<dyn SourceConnector>) {
        for alias in connector.aliases() {
            self.sources
                .insert(alias.to_string(), Arc::clone(&connector));
        }
        self.sources.insert(connector.name().to_string(), connector);
    }

    pub fn source(&self, name: &str) -> Option<&Arc<dyn SourceConnector>> {
        self.sources.get(&name.to_ascii_lowercase())
    }

    /// Names of the registered connectors, for error messages.
    pub fn source_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.sources.values().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    pub fn register_sink(&mut self, connector: Arc<dyn SinkConnector>) {
        for alias in connector.aliases() {
            self.sinks.insert(alias.to_string(), Arc::clone(&connector));
        }
        self.sinks.insert(connector.name().to_string(), connector);
    }

    pub fn sink(&self, name: &str) -> Option<&Arc<dyn SinkConnector>> {
        self.sinks.get(&name.to_ascii_lowercase())
    }

    /// Names of the registered sink connectors, for error messages.
    pub fn sink_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.sinks.values().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}
