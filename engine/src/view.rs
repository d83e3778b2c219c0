//! The contents of a materialized view, and the queries that follow it.
//!
//! A [`ViewStore`] receives what its job's dataflow emits. An append-only view keeps the rows
//! emitted so far (minus those older than its retention, measured in event time against the
//! job's watermark); an updating view applies the changelog (`+` adds a row, `-` removes one)
//! to a multiset of rows, so it always holds the latest result. `SELECT` reads a snapshot;
//! a continuous query or another view reading the view *follows* it: it receives the snapshot
//! (as `+` rows for an updating view) and then every change and watermark, in order, ending
//! when the job's input ends.
//!
//! How a follower keeps pace is its [`FollowerPace`]. Another job reading the view (a view or
//! sink over it) applies backpressure: the view's job waits for it, as an operator waits for its
//! consumer, so it loses nothing. A client's query may fall a bounded number of bytes behind
//! and is cut off past that ([`EngineError::FollowerFellBehind`]): a client that stops reading
//! never holds back the view's job.
//!
//! The view's rows count against its job's memory limits (`max.state.bytes` and the server's
//! `--max-memory`) through a [`StateAccount`]: a change that would take them past a limit
//! fails the job with [`EngineError::OutOfMemory`], and the view gives its rows (and their
//! memory) back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::kernels::boolean::or_kleene;
use datafusion::arrow::compute::kernels::cmp::gt_eq;
use datafusion::arrow::compute::{cast, filter_record_batch, is_null, max, min};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::{EngineError, EngineResult};
use crate::operators::window::unit_nanos;
use crate::runtime::memory::StateAccount;
use crate::runtime::message::{EventTime, Message, WATERMARK_END};
use crate::state::StateSnapshot;

/// The table of a view's rows in its checkpoint.
const VIEW_ROWS: &str = "rows";

/// Messages a job following the view may be behind before the view's job waits for it.
const FOLLOWER_CAPACITY: usize = 16;

/// What a watermark counts for in a cut-off follower's budget.
const WATERMARK_BYTES: usize = 64;

/// How a follower of a view keeps pace with the view's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerPace {
    /// The view's job waits for the follower (another job: a view or sink over the view).
    Backpressure,
    /// The follower (a client's query) may be this many bytes of changes behind; one further
    /// behind is cut off with [`EngineError::FollowerFellBehind`] and the job goes on.
    CutOffBehind(usize),
}

/// The sending end of one follower.
enum Follower {
    /// A follower the job waits for.
    Waited(mpsc::Sender<(u64, Message)>),
    /// A follower cut off when it falls `limit` bytes behind.
    Bounded {
        /// Each change with the bytes it counts for in the lag.
        tx: mpsc::UnboundedSender<(u64, Message, usize)>,
        lag: Arc<Lag>,
    },
}

/// How far a bounded follower is behind, shared by the view (adds what it sends) and the
/// follower (takes off what it receives).
struct Lag {
    limit: usize,
    queued: AtomicUsize,
    /// Set when the follower was cut off: its stream ends with an error.
    cut_off: AtomicBool,
}

/// The receiving end of one follower.
enum Receiver {
    Waited(mpsc::Receiver<(u64, Message)>),
    Bounded {
        rx: mpsc::UnboundedReceiver<(u64, Message, usize)>,
        lag: Arc<Lag>,
        /// The view's name, for the message when the follower is cut off.
        view: String,
    },
}

impl Receiver {
    /// The next change; `None` once the view's job ended or the follower was cut off.
    async fn recv(&mut self) -> Option<(u64, Message)> {
        match self {
            Receiver::Waited(rx) => rx.recv().await,
            Receiver::Bounded { rx, lag, .. } => {
                let (sequence, message, bytes) = rx.recv().await?;
                lag.queued.fetch_sub(bytes, Ordering::Relaxed);
                Some((sequence, message))
            }
        }
    }

    /// Why the follower ended early, if it was cut off.
    fn cut_off(&self) -> Option<EngineError> {
        match self {
            Receiver::Bounded { lag, view, .. } if lag.cut_off.load(Ordering::Relaxed) => {
                Some(EngineError::FollowerFellBehind {
                    view: view.clone(),
                    limit: lag.limit,
                })
            }
            _ => None,
        }
    }
}

/// Bytes a message counts for in a bounded follower's lag.
fn lag_bytes(message: &Message) -> usize {
    match message {
        Message::Data(batch) => batch.get_array_memory_size(),
        _ => WATERMARK_BYTES,
    }
}

/// What a view keeps of its job's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// Rows are only added (windows, joins, patterns): the view holds the rows emitted so far.
    Append,
    /// A changelog (aggregates without a window): the view holds the latest result.
    Updating,
}

/// Bounds an append-only view's rows by event time.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// The view column whose time is compared with the watermark.
    pub column: usize,
    /// How far behind the watermark a row may be and still be kept (nanoseconds).
    pub nanos: i64,
}

/// The rows of one materialized view.
pub struct ViewStore {
    /// The view's columns (for an updating view, without the changelog's `op` column).
    schema: SchemaRef,
    mode: ViewMode,
    retention: Option<Retention>,
    /// The columns that carry event time the job's watermark speaks for; `None` when the
    /// job's inputs have no watermark.
    time_columns: Option<Vec<usize>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ViewStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewStore")
            .field("schema", &self.schema)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// What the job's end left the view with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    Running,
    /// The input ended: the view is complete and followers end too.
    Ended,
    /// The job failed; followers fail with this message.
    Failed(String),
}

struct Inner {
    /// An append-only view's rows, oldest first, with each batch's least and greatest time
    /// (when the view has a retention).
    batches: VecDeque<(RecordBatch, EventTime, EventTime)>,
    /// An updating view's rows: each distinct row (in the row format) and how many times it is
    /// present.
    rows: HashMap<Box<[u8]>, usize>,
    converter: Option<RowConverter>,
    bytes: usize,
    num_rows: usize,
    watermark: Option<EventTime>,
    ending: Ending,
    /// Changes applied so far; a follower skips changes its snapshot already holds.
    sequence: u64,
    /// Changes of the contents so far (rows, or rows a watermark expired): a reader that saw
    /// the contents at one count knows they are the same while it stays.
    contents_version: u64,
    followers: Vec<Follower>,
    /// The view's rows charged to its job's memory limits; `None` until the job attaches it.
    account: Option<StateAccount>,
    /// Why the view gave its rows back (it grew past a memory limit): reads fail with it.
    discarded: Option<String>,
    /// For an append-only view that keeps every row: how many of its first batches a
    /// completed checkpoint holds (a checkpoint writes only the batches after them).
    checkpointed: usize,
}

impl ViewStore {
    pub fn try_new(
        schema: SchemaRef,
        mode: ViewMode,
        retention: Option<Retention>,
        time_columns: Option<Vec<usize>>,
    ) -> EngineResult<Self> {
        let converter = match mode {
            ViewMode::Append => None,
            ViewMode::Updating => Some(RowConverter::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?),
        };
        Ok(Self {
            schema,
            mode,
            retention,
            time_columns,
            inner: Mutex::new(Inner {
                batches: VecDeque::new(),
                rows: HashMap::new(),
                converter,
                bytes: 0,
                num_rows: 0,
                watermark: None,
                ending: Ending::Running,
                sequence: 0,
                contents_version: 0,
                followers: Vec::new(),
                account: None,
                discarded: None,
                checkpointed: 0,
            }),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn mode(&self) -> ViewMode {
        self.mode
    }

    /// The view's event-time columns (`None`: its job has no watermark).
    pub fn time_columns(&self) -> Option<&[usize]> {
        self.time_columns.as_deref()
    }

    /// The schema of the changelog an updating view's followers receive: `op`, then the
    /// view's columns.
    pub fn changelog_schema(&self, op_column: &str) -> SchemaRef {
        let mut fields = vec![Arc::new(Field::new(op_column, DataType::Utf8, false))];
        fields.extend(self.schema.fields().iter().cloned());
        Arc::new(Schema::new(fields))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while the view's job runs (its followers have no end yet).
    pub fn is_running(&self) -> bool {
        self.lock().ending == Ending::Running
    }

    /// Rows currently in the view.
    pub fn num_rows(&self) -> usize {
        self.lock().num_rows
    }

    /// Approximate bytes the view's rows take.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The last watermark the job emitted.
    pub fn watermark(&self) -> Option<EventTime> {
        self.lock().watermark
    }

    /// How many times the view's contents changed: a reader that saw them at one count knows
    /// they are unchanged while it stays the same (a lookup join re-reads them when it moves).
    pub fn contents_version(&self) -> u64 {
        self.lock().contents_version
    }

    /// The view's current contents.
    pub fn snapshot(&self) -> EngineResult<Vec<RecordBatch>> {
        let inner = self.lock();
        self.contents(&inner)
    }

    fn contents(&self, inner: &Inner) -> EngineResult<Vec<RecordBatch>> {
        if let Some(why) = &inner.discarded {
            return Err(EngineError::ViewUnavailable(why.clone()));
        }
        match self.mode {
            ViewMode::Append => Ok(inner.batches.iter().map(|(b, _, _)| b.clone()).collect()),
            ViewMode::Updating => {
                let Some(converter) = &inner.converter else {
                    return Ok(Vec::new());
                };
                if inner.rows.is_empty() {
                    return Ok(Vec::new());
                }
                let parser = converter.parser();
                let rows = inner
                    .rows
                    .iter()
                    .flat_map(|(row, count)| std::iter::repeat_n(parser.parse(row), *count));
                let columns = converter.convert_rows(rows)?;
                Ok(vec![RecordBatch::try_new(
                    Arc::clone(&self.schema),
                    columns,
                )?])
            }
        }
    }

    /// Whether the view only ever appends batches and never changes them (an append-only
    /// view without retention): its checkpoints then write only what is new.
    fn appends_only(&self) -> bool {
        self.mode == ViewMode::Append && self.retention.is_none()
    }

    /// The view's rows and watermark for a checkpoint. For a view that only appends, only
    /// the batches after the last completed checkpoint's, with `Some(n)`: once this checkpoint
    /// completes, [`ViewStore::checkpointed`]`(n)`. Otherwise every row, with `None`.
    pub fn checkpoint_contents(
        &self,
    ) -> EngineResult<(StateSnapshot, Option<EventTime>, Option<usize>)> {
        let inner = self.lock();
        let mut snapshot = StateSnapshot::new();
        if self.appends_only() {
            for (batch, _, _) in inner.batches.iter().skip(inner.checkpointed) {
                snapshot.add(VIEW_ROWS, batch.clone())?;
            }
            return Ok((snapshot, inner.watermark, Some(inner.batches.len())));
        }
        for batch in self.contents(&inner)? {
            snapshot.add(VIEW_ROWS, batch)?;
        }
        Ok((snapshot, inner.watermark, None))
    }

    /// A checkpoint holding the view's first `batches` batches completed.
    pub fn checkpointed(&self, batches: usize) {
        let mut inner = self.lock();
        inner.checkpointed = inner.checkpointed.max(batches);
    }

    /// Puts back the contents a checkpoint holds, before the job runs.
    pub fn restore(
        &self,
        snapshot: StateSnapshot,
        watermark: Option<EventTime>,
    ) -> EngineResult<()> {
        let mut inner = self.lock();
        for batch in snapshot.table(VIEW_ROWS) {
            if batch.num_columns() != self.schema.fields().len() {
                return Err(crate::state::corrupt(format!(
                    "the view's rows have {} columns, the view has {}",
                    batch.num_columns(),
                    self.schema.fields().len()
                )));
            }
            match self.mode {
                ViewMode::Append => {
                    let batch =
                        RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec())
                            .map_err(|e| crate::state::corrupt(e.to_string()))?;
                    let (least, greatest) = match &self.retention {
                        Some(r) => time_range(batch.column(r.column))?,
                        None => (EventTime::MIN, EventTime::MAX),
                    };
                    inner.bytes += batch.get_array_memory_size();
                    inner.num_rows += batch.num_rows();
                    inner.batches.push_back((batch, least, greatest));
                }
                ViewMode::Updating => {
                    let ops: ArrayRef = Arc::new(StringArray::from(vec!["+"; batch.num_rows()]));
                    let mut columns = vec![ops];
                    columns.extend(batch.columns().iter().cloned());
                    let mut fields = vec![Arc::new(Field::new("op", DataType::Utf8, false))];
                    fields.extend(batch.schema().fields().iter().cloned());
                    let changes = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
                    self.apply_changes(&mut inner, &changes)?;
                }
            }
        }
        inner.watermark = watermark;
        inner.contents_version += 1;
        // What was restored is in the checkpoint already.
        inner.checkpointed = inner.batches.len();
        Ok(())
    }

    /// Charges the view's rows to its job's memory limits from now on (its restored rows at
    /// once): a job attaches the account of its budget when it starts.
    pub fn attach_account(&self, account: StateAccount) -> EngineResult<()> {
        let mut inner = self.lock();
        inner.account = Some(account);
        Self::charge(&mut inner)
    }

    /// Charges what the view holds now; past a limit the view gives its rows back and every
    /// read of it fails with the limit's message.
    fn charge(inner: &mut Inner) -> EngineResult<()> {
        let bytes = inner.bytes;
        let Some(account) = &mut inner.account else {
            return Ok(());
        };
        let Err(exceeded) = account.charge(bytes) else {
            return Ok(());
        };
        Self::discard(
            inner,
            format!("the materialized view gave its rows back: {exceeded}"),
        );
        Err(EngineError::OutOfMemory(exceeded))
    }

    /// Applies one message of the job's output: rows (a changelog with a leading `op` column
    /// for an updating view) or a watermark. Returns once every follower the job waits for
    /// has room for it; a follower cut off when behind gets it at once, or is cut off.
    pub async fn apply(&self, message: Message) -> EngineResult<()> {
        let (sequence, waited) = {
            let mut inner = self.lock();
            match &message {
                Message::Data(batch) => {
                    match self.mode {
                        ViewMode::Append => self.append(&mut inner, batch)?,
                        ViewMode::Updating => self.apply_changes(&mut inner, batch)?,
                    }
                    inner.contents_version += 1;
                    Self::charge(&mut inner)?;
                }
                // The end of input is passed on, but it neither expires rows (a finished view
                // keeps what its retention held at the last real watermark) nor is shown.
                Message::Watermark(WATERMARK_END) => {}
                Message::Watermark(w) => {
                    inner.watermark = Some(*w);
                    let rows = inner.num_rows;
                    self.expire(&mut inner, *w)?;
                    if inner.num_rows != rows {
                        inner.contents_version += 1;
                        Self::charge(&mut inner)?;
                    }
                }
                Message::Barrier(_) | Message::Idle | Message::End => return Ok(()),
            }
            inner.sequence += 1;
            let sequence = inner.sequence;
            // Measured once, and only when a client follows.
            let mut measured = None;
            let mut waited = Vec::new();
            // Followers that went away, or were cut off here, leave the list.
            inner.followers.retain(|follower| match follower {
                Follower::Waited(tx) => {
                    waited.push(tx.clone());
                    !tx.is_closed()
                }
                Follower::Bounded { tx, lag } => {
                    let bytes = *measured.get_or_insert_with(|| lag_bytes(&message));
                    let behind = lag.queued.fetch_add(bytes, Ordering::Relaxed) + bytes;
                    if behind > lag.limit {
                        lag.cut_off.store(true, Ordering::Relaxed);
                        return false;
                    }
                    tx.send((sequence, message.clone(), bytes)).is_ok()
                }
            });
            (sequence, waited)
        };
        for follower in waited {
            // A follower that went away is dropped from the list at the next change.
            let _ = follower.send((sequence, message.clone())).await;
        }
        Ok(())
    }

    fn append(&self, inner: &mut Inner, batch: &RecordBatch) -> EngineResult<()> {
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec())?;
        let entry = match (&self.retention, inner.watermark) {
            // Only the new rows can be behind the cutoff: the others were trimmed with it.
            (Some(r), Some(w)) => retain(batch, r, w.saturating_sub(r.nanos))?,
            (Some(r), None) => {
                let (least, greatest) = time_range(batch.column(r.column))?;
                Some((batch, least, greatest))
            }
            (None, _) => Some((batch, EventTime::MIN, EventTime::MAX)),
        };
        if let Some((batch, least, greatest)) = entry {
            inner.bytes += batch.get_array_memory_size();
            inner.num_rows += batch.num_rows();
            inner.batches.push_back((batch, least, greatest));
        }
        Ok(())
    }

    /// Drops the rows of an append-only view that fell out of its retention.
    fn expire(&self, inner: &mut Inner, watermark: EventTime) -> EngineResult<()> {
        let Some(retention) = &self.retention else {
            return Ok(());
        };
        let cutoff = watermark.saturating_sub(retention.nanos);
        if !inner.batches.iter().any(|(_, least, _)| *least < cutoff) {
            return Ok(());
        }
        let mut kept = VecDeque::with_capacity(inner.batches.len());
        let (mut bytes, mut rows) = (0, 0);
        for (batch, least, greatest) in inner.batches.drain(..) {
            let entry = if least >= cutoff {
                Some((batch, least, greatest))
            } else {
                retain(batch, retention, cutoff)?
            };
            if let Some((batch, least, greatest)) = entry {
                bytes += batch.get_array_memory_size();
                rows += batch.num_rows();
                kept.push_back((batch, least, greatest));
            }
        }
        inner.batches = kept;
        inner.bytes = bytes;
        inner.num_rows = rows;
        Ok(())
    }

    fn apply_changes(&self, inner: &mut Inner, batch: &RecordBatch) -> EngineResult<()> {
        let ops = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| EngineError::Internal("changelog without an op column".to_string()))?;
        let Some(converter) = &inner.converter else {
            return Ok(());
        };
        let rows = converter.convert_columns(&batch.columns()[1..])?;
        let mut changes = Vec::with_capacity(batch.num_rows());
        for (i, row) in rows.iter().enumerate() {
            changes.push((ops.value(i) == "+", Box::<[u8]>::from(row.as_ref())));
        }
        for (insert, row) in changes {
            let len = row.len();
            if insert {
                let count = inner.rows.entry(row).or_insert(0);
                *count += 1;
                if *count == 1 {
                    inner.bytes += len + ROW_OVERHEAD;
                }
                inner.num_rows += 1;
            } else if let Some(count) = inner.rows.get_mut(&row) {
                *count -= 1;
                inner.num_rows -= 1;
                if *count == 0 {
                    inner.rows.remove(&row);
                    inner.bytes -= len + ROW_OVERHEAD;
                }
            } else {
                return Err(EngineError::Internal(
                    "a changelog deleted a row the view does not hold".to_string(),
                ));
            }
        }
        Ok(())
    }

    /// The job's input ended: the view is complete, and its followers end.
    pub fn finish(&self) {
        self.close(Ending::Ended);
    }

    /// The job failed or was stopped: its followers fail with `message`.
    pub fn fail(&self, message: String) {
        self.close(Ending::Failed(message));
    }

    /// The view was dropped: its followers fail with `message`, its rows and their memory
    /// are given back, and any read left fails with `message`.
    pub fn drop_rows(&self, message: String) {
        {
            let mut inner = self.lock();
            Self::discard(&mut inner, message.clone());
        }
        self.close(Ending::Failed(message));
    }

    /// Gives the view's rows and their memory back; reads fail with `why` from now on.
    fn discard(inner: &mut Inner, why: String) {
        inner.batches.clear();
        inner.rows.clear();
        inner.bytes = 0;
        inner.num_rows = 0;
        inner.checkpointed = 0;
        inner.contents_version += 1;
        inner.discarded = Some(why);
        if let Some(account) = &mut inner.account {
            let _ = account.charge(0);
        }
    }

    fn close(&self, ending: Ending) {
        let followers = {
            let mut inner = self.lock();
            inner.ending = ending;
            inner.sequence += 1;
            std::mem::take(&mut inner.followers)
        };
        // Dropping the senders ends each follower after the messages it has not taken yet.
        drop(followers);
    }

    /// The view (named `name` in messages) as a stream: its current contents, its watermark,
    /// then every change, at `pace`. Rows come in `columns` of the view (all if `None`); an
    /// updating view's rows are preceded by the `op` column (the snapshot as `+` rows).
    pub fn follow(
        self: &Arc<Self>,
        columns: Option<Vec<usize>>,
        pace: FollowerPace,
        name: &str,
    ) -> EngineResult<BoxStream<'static, EngineResult<Message>>> {
        let (receiver, lag) = match pace {
            FollowerPace::Backpressure => {
                let (tx, rx) = mpsc::channel(FOLLOWER_CAPACITY);
                (Receiver::Waited(rx), Follower::Waited(tx))
            }
            FollowerPace::CutOffBehind(limit) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let lag = Arc::new(Lag {
                    limit,
                    queued: AtomicUsize::new(0),
                    cut_off: AtomicBool::new(false),
                });
                let receiver = Receiver::Bounded {
                    rx,
                    lag: Arc::clone(&lag),
                    view: name.to_string(),
                };
                (receiver, Follower::Bounded { tx, lag })
            }
        };
        let (snapshot, watermark, sequence, ending) = {
            let mut inner = self.lock();
            let snapshot = self.contents(&inner)?;
            if inner.ending == Ending::Running {
                inner.followers.push(lag);
            }
            (
                snapshot,
                inner.watermark,
                inner.sequence,
                inner.ending.clone(),
            )
        };
        let updating = self.mode == ViewMode::Updating;
        let shape = move |batch: RecordBatch, insert: bool| -> EngineResult<RecordBatch> {
            let batch = match (&columns, updating && !insert) {
                // A changelog batch: keep `op`, then the wanted columns.
                (Some(c), true) => {
                    let mut wanted = vec![0];
                    wanted.extend(c.iter().map(|i| i + 1));
                    batch.project(&wanted)?
                }
                (Some(c), false) => batch.project(c)?,
                (None, _) => batch,
            };
            if updating && insert {
                let ops: ArrayRef = Arc::new(StringArray::from(vec!["+"; batch.num_rows()]));
                let mut fields = vec![Arc::new(Field::new("op", DataType::Utf8, false))];
                fields.extend(batch.schema().fields().iter().cloned());
                let mut columns = vec![ops];
                columns.extend(batch.columns().iter().cloned());
                return Ok(RecordBatch::try_new(
                    Arc::new(Schema::new(fields)),
                    columns,
                )?);
            }
            Ok(batch)
        };
        let mut head: Vec<EngineResult<Message>> = Vec::new();
        for batch in snapshot {
            head.push(shape(batch, true).map(Message::Data));
        }
        if let Some(w) = watermark {
            head.push(Ok(Message::Watermark(w)));
        }
        let tail: BoxStream<'static, EngineResult<Message>> = match ending {
            Ending::Running => {
                let store = Arc::clone(self);
                Box::pin(futures::stream::unfold(
                    (receiver, store, false),
                    move |(mut rx, store, done)| {
                        let shape = shape.clone();
                        async move {
                            if done {
                                return None;
                            }
                            loop {
                                match rx.recv().await {
                                    Some((seq, _)) if seq <= sequence => continue,
                                    Some((_, Message::Data(b))) => {
                                        return Some((
                                            shape(b, false).map(Message::Data),
                                            (rx, store, false),
                                        ));
                                    }
                                    Some((_, m)) => return Some((Ok(m), (rx, store, false))),
                                    None => {
                                        let end = match (rx.cut_off(), store.lock().ending.clone())
                                        {
                                            (Some(e), _) => Err(e),
                                            (None, Ending::Failed(e)) => {
                                                Err(EngineError::ViewUnavailable(e))
                                            }
                                            (None, _) => Ok(Message::End),
                                        };
                                        return Some((end, (rx, store, true)));
                                    }
                                }
                            }
                        }
                    },
                ))
            }
            Ending::Ended => Box::pin(futures::stream::iter([Ok(Message::End)])),
            Ending::Failed(e) => Box::pin(futures::stream::iter([Err(
                EngineError::ViewUnavailable(e),
            )])),
        };
        Ok(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(head),
            tail,
        )))
    }
}

/// Bytes a distinct row of an updating view costs beyond its encoding (map entry and count).
const ROW_OVERHEAD: usize = 48;

/// A time column's values as integers in its own unit, and that unit in nanoseconds.
fn time_values(column: &ArrayRef) -> EngineResult<(Int64Array, i64)> {
    let DataType::Timestamp(unit, _) = column.data_type() else {
        return Err(EngineError::Internal(format!(
            "retention over a {} column",
            column.data_type()
        )));
    };
    let values = cast(column, &DataType::Int64)?;
    Ok((
        values.as_primitive::<Int64Type>().clone(),
        unit_nanos(*unit),
    ))
}

/// The least and greatest time of a time column, for deciding without looking at its rows
/// whether a batch is all kept or all expired. A batch with a NULL time (never expired) has
/// no greatest time.
fn time_range(column: &ArrayRef) -> EngineResult<(EventTime, EventTime)> {
    let (values, scale) = time_values(column)?;
    let least = min(&values).map_or(EventTime::MAX, |v| v.saturating_mul(scale));
    let greatest = match max(&values) {
        Some(v) if values.null_count() == 0 => v.saturating_mul(scale),
        _ => EventTime::MAX,
    };
    Ok((least, greatest))
}

/// The rows of `batch` at or after `cutoff` in the retention's column (and those without a
/// time), with their time range; `None` when no row is left.
fn retain(
    batch: RecordBatch,
    retention: &Retention,
    cutoff: EventTime,
) -> EngineResult<Option<(RecordBatch, EventTime, EventTime)>> {
    let column = batch.column(retention.column);
    let (least, greatest) = time_range(column)?;
    if greatest < cutoff {
        return Ok(None);
    }
    if least >= cutoff {
        return Ok(Some((batch, least, greatest)));
    }
    // t * scale >= cutoff, in the column's unit: t >= ceil(cutoff / scale).
    let (values, scale) = time_values(column)?;
    let threshold = cutoff.div_euclid(scale) + i64::from(cutoff.rem_euclid(scale) != 0);
    let recent = gt_eq(&values, &Int64Array::new_scalar(threshold))?;
    let keep = or_kleene(&recent, &is_null(&values)?)?;
    let batch = filter_record_batch(&batch, &keep)?;
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let (least, greatest) = time_range(batch.column(retention.column))?;
    Ok(Some((batch, least, greatest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::TimeUnit;
    use futures::StreamExt;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn rows(keys: &[i64], times: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(keys.to_vec())),
                Arc::new(TimestampMillisecondArray::from(times.to_vec())),
            ],
        )
        .unwrap()
    }

    fn changes(ops: &[&str], keys: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("op", DataType::Utf8, false),
            Field::new("k", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ops.to_vec())),
                Arc::new(Int64Array::from(keys.to_vec())),
            ],
        )
        .unwrap()
    }

    fn keys(batches: &[RecordBatch], column: usize) -> Vec<i64> {
        let mut out: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(column)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn retention_drops_rows_older_than_the_watermark_minus_the_retention() {
        let retention = Retention {
            column: 1,
            nanos: 10_000_000_000,
        };
        let view =
            ViewStore::try_new(schema(), ViewMode::Append, Some(retention), Some(vec![1])).unwrap();
        view.apply(Message::Data(rows(&[1, 2, 3], &[1_000, 15_000, 30_000])))
            .await
            .unwrap();
        assert_eq!(view.num_rows(), 3);
        // Cutoff 25 s - 10 s = 15 s: the row at 1 s goes, the one at exactly 15 s stays.
        view.apply(Message::Watermark(25_000_000_000))
            .await
            .unwrap();
        assert_eq!(keys(&view.snapshot().unwrap(), 0), vec![2, 3]);
        assert_eq!(view.num_rows(), 2);
    }

    #[tokio::test]
    async fn retention_keeps_rows_without_a_time_and_expires_the_others_beside_them() {
        let retention = Retention {
            column: 1,
            nanos: 10_000_000_000,
        };
        let view =
            ViewStore::try_new(schema(), ViewMode::Append, Some(retention), Some(vec![1])).unwrap();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_000),
                    None,
                    Some(30_000),
                ])),
            ],
        )
        .unwrap();
        view.apply(Message::Data(batch)).await.unwrap();
        view.apply(Message::Watermark(25_000_000_000))
            .await
            .unwrap();
        assert_eq!(keys(&view.snapshot().unwrap(), 0), vec![2, 3]);
    }

    #[tokio::test]
    async fn an_updating_view_holds_the_latest_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let view = ViewStore::try_new(schema, ViewMode::Updating, None, None).unwrap();
        view.apply(Message::Data(changes(&["+", "+", "+"], &[1, 2, 2])))
            .await
            .unwrap();
        view.apply(Message::Data(changes(&["-", "+"], &[1, 3])))
            .await
            .unwrap();
        assert_eq!(keys(&view.snapshot().unwrap(), 0), vec![2, 2, 3]);
        assert_eq!(view.num_rows(), 3);
        let bad = view.apply(Message::Data(changes(&["-"], &[7]))).await;
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn a_follower_gets_the_snapshot_then_each_change_once_then_the_end() {
        let view =
            Arc::new(ViewStore::try_new(schema(), ViewMode::Append, None, Some(vec![1])).unwrap());
        view.apply(Message::Data(rows(&[1], &[1_000])))
            .await
            .unwrap();
        let mut follower = view
            .follow(Some(vec![0]), FollowerPace::Backpressure, "v")
            .unwrap();
        let writer = Arc::clone(&view);
        let job = tokio::spawn(async move {
            writer
                .apply(Message::Data(rows(&[2], &[2_000])))
                .await
                .unwrap();
            writer.apply(Message::Watermark(5)).await.unwrap();
            writer.finish();
        });
        let mut seen = Vec::new();
        let mut watermarks = Vec::new();
        while let Some(m) = follower.next().await {
            match m.unwrap() {
                Message::Data(b) => {
                    assert_eq!(b.num_columns(), 1);
                    seen.extend(keys(&[b], 0));
                }
                Message::Watermark(w) => watermarks.push(w),
                Message::End => break,
                Message::Barrier(_) | Message::Idle => {}
            }
        }
        job.await.unwrap();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(watermarks, vec![5]);
    }

    #[tokio::test]
    async fn an_updating_view_is_followed_as_a_changelog() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let view = Arc::new(ViewStore::try_new(schema, ViewMode::Updating, None, None).unwrap());
        view.apply(Message::Data(changes(&["+"], &[1])))
            .await
            .unwrap();
        let mut follower = view.follow(None, FollowerPace::Backpressure, "v").unwrap();
        view.apply(Message::Data(changes(&["-", "+"], &[1, 2])))
            .await
            .unwrap();
        view.finish();
        let mut ops = Vec::new();
        while let Some(m) = follower.next().await {
            if let Message::Data(b) = m.unwrap() {
                let op = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                let k = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                for i in 0..b.num_rows() {
                    ops.push(format!("{}{}", op.value(i), k.value(i)));
                }
            }
        }
        assert_eq!(ops, vec!["+1", "-1", "+2"]);
    }

    #[tokio::test]
    async fn dropping_a_view_fails_its_followers_after_what_they_had() {
        let view =
            Arc::new(ViewStore::try_new(schema(), ViewMode::Append, None, Some(vec![1])).unwrap());
        view.apply(Message::Data(rows(&[1], &[1_000])))
            .await
            .unwrap();
        let mut follower = view
            .follow(Some(vec![0]), FollowerPace::Backpressure, "v")
            .unwrap();
        view.fail("materialized view \"v\" was dropped".to_string());
        let Some(Ok(Message::Data(first))) = follower.next().await else {
            panic!("the snapshot should come first");
        };
        assert_eq!(keys(&[first], 0), vec![1]);
        let end = follower.next().await.unwrap();
        assert!(
            end.unwrap_err()
                .to_string()
                .contains("materialized view \"v\" was dropped")
        );
        assert!(follower.next().await.is_none());
        // A follower that starts after the drop fails at once, after the snapshot.
        let late = view
            .follow(Some(vec![0]), FollowerPace::Backpressure, "v")
            .unwrap();
        let messages: Vec<_> = late.collect().await;
        assert!(messages.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn a_job_following_the_view_holds_it_back_a_client_falling_behind_is_cut_off() {
        use futures::FutureExt;
        let view =
            Arc::new(ViewStore::try_new(schema(), ViewMode::Append, None, Some(vec![1])).unwrap());
        let batch = rows(&[1, 2, 3], &[1_000, 2_000, 3_000]);
        let size = batch.get_array_memory_size();
        // A job reading the view: once its channel is full the view's job waits for it.
        let waited = view.follow(None, FollowerPace::Backpressure, "v").unwrap();
        for _ in 0..FOLLOWER_CAPACITY {
            view.apply(Message::Data(batch.clone())).await.unwrap();
        }
        assert!(
            view.apply(Message::Data(batch.clone()))
                .now_or_never()
                .is_none(),
            "the view's job should wait for a job that follows it"
        );
        drop(waited);
        // A client may be 4 batches behind: the fifth change it has not taken cuts it off,
        // and the view's job never waits for it.
        let snapshot = view.snapshot().unwrap().len();
        let mut client = view
            .follow(None, FollowerPace::CutOffBehind(4 * size), "v")
            .unwrap();
        for _ in 0..10 {
            let applied = view.apply(Message::Data(batch.clone())).now_or_never();
            assert!(matches!(applied, Some(Ok(()))), "the view's job waited");
        }
        // The client gets the snapshot's batches, the four changes it had room for, then the
        // error.
        let mut changes = 0;
        let mut error = None;
        while let Some(m) = client.next().await {
            match m {
                Ok(Message::Data(_)) => changes += 1,
                Ok(_) => {}
                Err(e) => error = Some(e),
            }
        }
        assert_eq!(changes, snapshot + 4);
        let error = error.expect("the client should end with an error");
        assert!(matches!(error, EngineError::FollowerFellBehind { .. }));
        let expected = format!(
            "the query fell more than {} behind materialized view \"v\"",
            crate::size::format_size(4 * size)
        );
        assert!(error.to_string().starts_with(&expected), "{error}");
        // The view's job goes on with its other followers.
        view.apply(Message::Data(batch)).await.unwrap();
        assert_eq!(view.num_rows(), 3 * (FOLLOWER_CAPACITY + 1 + 10 + 1));
    }

    #[tokio::test]
    async fn a_client_that_keeps_up_is_never_cut_off() {
        let view =
            Arc::new(ViewStore::try_new(schema(), ViewMode::Append, None, Some(vec![1])).unwrap());
        let batch = rows(&[1], &[1_000]);
        let mut client = view
            .follow(
                None,
                FollowerPace::CutOffBehind(2 * batch.get_array_memory_size()),
                "v",
            )
            .unwrap();
        for _ in 0..50 {
            view.apply(Message::Data(batch.clone())).await.unwrap();
            assert!(matches!(client.next().await, Some(Ok(Message::Data(_)))));
        }
        view.finish();
        assert!(matches!(client.next().await, Some(Ok(Message::End))));
    }

    #[tokio::test]
    async fn a_view_past_its_memory_limit_fails_and_gives_its_rows_back() {
        use crate::runtime::memory::{MemoryPool, QueryMemory, StateLimit};
        let pool = MemoryPool::new(None);
        let batch = rows(&[1, 2, 3], &[1_000, 2_000, 3_000]);
        let size = batch.get_array_memory_size();
        let limit = StateLimit {
            bytes: Some(2 * size + size / 2),
            setting: "max.state.bytes",
        };
        let query = QueryMemory::new(Arc::clone(&pool), limit);
        let view =
            Arc::new(ViewStore::try_new(schema(), ViewMode::Append, None, Some(vec![1])).unwrap());
        view.attach_account(StateAccount::new(query, "MaterializedView v", 0))
            .unwrap();
        view.apply(Message::Data(batch.clone())).await.unwrap();
        view.apply(Message::Data(batch.clone())).await.unwrap();
        assert_eq!(pool.used(), 2 * size);
        let e = view.apply(Message::Data(batch)).await.unwrap_err();
        assert!(matches!(e, EngineError::OutOfMemory(_)));
        assert!(
            e.to_string()
                .starts_with("operator MaterializedView v instance 0 holds"),
            "{e}"
        );
        assert!(e.to_string().contains("over max.state.bytes"), "{e}");
        // Its memory is returned, and reading it says why it holds nothing.
        assert_eq!((pool.used(), view.num_rows(), view.bytes()), (0, 0, 0));
        let read = view.snapshot().unwrap_err();
        assert!(matches!(read, EngineError::ViewUnavailable(_)));
        assert!(read.to_string().contains("gave its rows back"), "{read}");
    }
}
