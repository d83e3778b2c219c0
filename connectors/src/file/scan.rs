//! The stream of one file source: every file its path names, in name order, and — when
//! following — the files and lines that appear later.
//!
//! A [`FileScan`] lists the path, then reads the files one after the other, each in steps of
//! at most a chunk (text) or a batch (Parquet) run on tokio's blocking pool, so worker threads
//! never wait on the disk; the next text step starts while the last one's batches are handed
//! on, so that reading and decoding overlap with the operators. Rows keep their file order;
//! nothing is sorted. When following, after
//! a round over every file with new data it lists the path again: new files join at the end
//! (in name order), text files that grew are read on from where they stopped, and a round that
//! read nothing sleeps [`POLL_INTERVAL`] first. A new Parquet file is read once its size has not
//! changed between two listings (it is probably still being written otherwise). Dropping the
//! stream cancels it; a step already on a blocking thread finishes and is discarded.
//!
//! A scan restored from a checkpoint starts after its first `start_row` rows, counted in the
//! order it produces them (malformed rows do not count). Parquet files skip them by their
//! metadata where no row can be malformed ([`ParquetCursor::open_at`]); otherwise, and for
//! CSV and JSON lines (where a quoted line break, a header or a malformed line decide what a
//! row is), the rows are decoded and dropped before they leave the scan. Each step is told
//! how many of the rows it produces are still covered, so that the malformed rows among them,
//! which the run that took the checkpoint reported, are not sent to the dead-letter table
//! again (see the `decode` module).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{ConnectorError, ConnectorResult};

use super::decode::DecodeConfig;
use super::listing::{ListedFile, PathSpec};
use super::options::FileFormat;
use super::parquet::ParquetCursor;
use super::text::{Progress, StepOutput, TextCursor, TextDecoder};

/// How long a following source waits before looking for new data again.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What every step of a scan needs, shared with the blocking threads.
pub(crate) struct ScanConfig {
    pub spec: PathSpec,
    /// The directories the scan may read.
    pub paths: std::sync::Arc<eddy_engine::paths::PathPolicy>,
    pub format: FileFormat,
    /// The text decoder; `None` for Parquet.
    pub decoder: Option<TextDecoder>,
    pub decode: DecodeConfig,
    pub csv_header: bool,
    pub follow: bool,
    /// Rows an earlier run already read ([`eddy_engine::connector::SourceContext::start_row`]).
    pub start_row: u64,
    /// Threads that may decode parts of one text chunk at once (the query's parallelism).
    pub decode_threads: usize,
}

/// Where reading one file stands.
enum FileState {
    Text(Box<TextCursor>),
    /// A Parquet file not opened yet.
    ParquetPending,
    ParquetOpen(Box<ParquetCursor>),
    /// A Parquet file found while following, with its size at the last listing.
    ParquetSettling(u64),
    /// Read completely (or gone); never read again.
    Finished,
    /// Moved to a blocking thread for a step.
    InUse,
}

struct TrackedFile {
    path: PathBuf,
    display: Arc<str>,
    state: FileState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The path has not been listed yet.
    Start,
    /// Reading the files in `queue`.
    Read,
    /// Following: waiting for, and looking for, new data.
    Poll,
    Finished,
}

/// The state of one source stream.
pub(crate) struct FileScan {
    config: Arc<ScanConfig>,
    files: Vec<TrackedFile>,
    known: HashSet<PathBuf>,
    /// Indices into `files` with data to read, in reading order.
    queue: VecDeque<usize>,
    ready: VecDeque<RecordBatch>,
    phase: Phase,
    read_since_poll: bool,
    /// Rows still to pass over before producing any.
    skip: u64,
    /// A text step started ahead, while the batches of the one before are handed on: the
    /// file's index (taken off `queue`) and the step on a blocking thread.
    ahead: Option<(usize, StepHandle)>,
}

/// A step running on a blocking thread.
type StepHandle = tokio::task::JoinHandle<ConnectorResult<(FileState, StepOutput)>>;

impl FileScan {
    pub(crate) fn new(config: ScanConfig) -> Self {
        let skip = config.start_row;
        Self {
            config: Arc::new(config),
            files: Vec::new(),
            known: HashSet::new(),
            queue: VecDeque::new(),
            ready: VecDeque::new(),
            phase: Phase::Start,
            read_since_poll: false,
            skip,
            ahead: None,
        }
    }

    /// The next batch; `None` once a bounded scan has read everything (or failed).
    pub(crate) async fn next_batch(&mut self) -> Option<ConnectorResult<RecordBatch>> {
        loop {
            if let Some(mut batch) = self.ready.pop_front() {
                if self.skip > 0 {
                    let rows = batch.num_rows() as u64;
                    let dropped = self.skip.min(rows);
                    self.skip -= dropped;
                    if dropped == rows {
                        continue;
                    }
                    // `dropped < rows`, a usize.
                    batch = batch.slice(dropped as usize, (rows - dropped) as usize);
                }
                self.read_ahead();
                self.config.decode.metrics.add_rows(batch.num_rows() as u64);
                return Some(Ok(batch));
            }
            match self.advance().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.phase = Phase::Finished;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Does one unit of work; `false` when there is nothing left to do.
    async fn advance(&mut self) -> ConnectorResult<bool> {
        match self.phase {
            Phase::Start => {
                let listing = self.list().await?;
                if listing.is_empty() && matches!(self.config.spec, PathSpec::File(_)) {
                    return Err(ConnectorError::Io(format!(
                        "no file matches path '{}'",
                        spec_text(&self.config.spec)
                    )));
                }
                for file in listing {
                    let index = self.track(file.path, false, file.size);
                    self.queue.push_back(index);
                }
                self.phase = Phase::Read;
            }
            Phase::Read => match self.next_step()? {
                Some((index, step)) => {
                    let output = self.finish_step(index, step).await?;
                    self.skip = self.skip.saturating_sub(output.skipped);
                    self.read_since_poll |= output.read_bytes;
                    self.ready.extend(output.batches);
                    if output.progress == Progress::More {
                        self.queue.push_front(index);
                    }
                }
                None if self.config.follow => self.phase = Phase::Poll,
                None => self.phase = Phase::Finished,
            },
            Phase::Poll => {
                if !self.read_since_poll {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                self.read_since_poll = false;
                let listing = self.list().await?;
                self.schedule(listing);
                self.phase = Phase::Read;
            }
            Phase::Finished => return Ok(false),
        }
        Ok(true)
    }

    /// Lists the path on a blocking thread. (A method on `&self` would make the stream's
    /// future hold a `&FileScan`, which is not `Sync`: Parquet readers are not.)
    fn list(&self) -> impl Future<Output = ConnectorResult<Vec<ListedFile>>> + Send + 'static {
        let config = Arc::clone(&self.config);
        blocking(move || config.spec.list_allowed(&config.paths))
    }

    /// Starts tracking a file; `settle` makes a Parquet file wait for its size to settle.
    fn track(&mut self, path: PathBuf, settle: bool, size: u64) -> usize {
        let display: Arc<str> = Arc::from(path.display().to_string());
        let state = match self.config.format {
            FileFormat::Parquet if settle => FileState::ParquetSettling(size),
            FileFormat::Parquet => FileState::ParquetPending,
            FileFormat::Csv | FileFormat::Json => FileState::Text(Box::new(TextCursor::new(
                path.clone(),
                Arc::clone(&display),
                self.config.csv_header,
            ))),
        };
        self.known.insert(path.clone());
        self.files.push(TrackedFile {
            path,
            display,
            state,
        });
        self.files.len() - 1
    }

    /// Queues the files that changed since the last listing, then the new ones.
    fn schedule(&mut self, listing: Vec<ListedFile>) {
        let mut sizes = std::collections::HashMap::with_capacity(listing.len());
        let mut new_files = Vec::new();
        for file in listing {
            if self.known.contains(&file.path) {
                sizes.insert(file.path, file.size);
            } else {
                new_files.push(file);
            }
        }
        for index in 0..self.files.len() {
            let file = &mut self.files[index];
            let size = sizes.get(&file.path).copied();
            match (&mut file.state, size) {
                (FileState::Finished | FileState::InUse, _) => {}
                (FileState::Text(cursor), Some(size)) => {
                    if size != cursor.read_offset() {
                        self.queue.push_back(index);
                    }
                }
                (FileState::ParquetSettling(last), Some(size)) => {
                    if *last == size {
                        file.state = FileState::ParquetPending;
                        self.queue.push_back(index);
                    } else {
                        *last = size;
                    }
                }
                (FileState::ParquetPending | FileState::ParquetOpen(_), Some(_)) => {}
                // Gone (deleted or renamed): should it come back, it is a new file.
                (_, None) => {
                    file.state = FileState::Finished;
                    self.known.remove(&file.path);
                }
            }
        }
        for file in new_files {
            let index = self.track(file.path, true, file.size);
            if !matches!(self.files[index].state, FileState::ParquetSettling(_)) {
                self.queue.push_back(index);
            }
        }
    }

    /// The step to wait for next: the one started ahead, or a new one over the next file in
    /// line; `None` when no file has data to read.
    fn next_step(&mut self) -> ConnectorResult<Option<(usize, StepHandle)>> {
        if let Some(ahead) = self.ahead.take() {
            return Ok(Some(ahead));
        }
        let Some(index) = self.queue.pop_front() else {
            return Ok(None);
        };
        // Every row before this step has been produced or dropped: `ready` is empty here.
        Ok(Some((index, self.start_step(index, self.skip)?)))
    }

    /// Starts a step over file `index` on a blocking thread; `skip`: the rows a restored
    /// checkpoint covers from the step's first row on.
    fn start_step(&mut self, index: usize, skip: u64) -> ConnectorResult<StepHandle> {
        let Some(file) = self.files.get_mut(index) else {
            return Err(ConnectorError::Io(format!("file scan lost file #{index}")));
        };
        let state = std::mem::replace(&mut file.state, FileState::InUse);
        let display = Arc::clone(&file.display);
        let path = file.path.clone();
        let config = Arc::clone(&self.config);
        Ok(tokio::task::spawn_blocking(move || {
            step_file(state, &path, &display, &config, skip)
        }))
    }

    /// Waits for a step over file `index` and puts the file's state back.
    async fn finish_step(&mut self, index: usize, step: StepHandle) -> ConnectorResult<StepOutput> {
        let (state, output) = step
            .await
            .map_err(|e| ConnectorError::Io(format!("file reader task failed: {e}")))??;
        if let Some(file) = self.files.get_mut(index) {
            file.state = state;
        }
        Ok(output)
    }

    /// Starts the next text step while the batches of the last one are handed on, so that
    /// reading and decoding overlap with the operators downstream: only while reading (not
    /// polling), one step at a time, and only for the text file next in line (a Parquet step
    /// that opens its file needs every earlier row produced first, to skip restored rows).
    fn read_ahead(&mut self) {
        if self.ahead.is_some() || self.phase != Phase::Read {
            return;
        }
        let Some(&index) = self.queue.front() else {
            return;
        };
        if !matches!(
            self.files.get(index).map(|f| &f.state),
            Some(FileState::Text(_))
        ) {
            return;
        }
        self.queue.pop_front();
        // The rows a restored checkpoint covers that the batches still in `ready` do not.
        let waiting: u64 = self.ready.iter().map(|b| b.num_rows() as u64).sum();
        let covered = self.skip.saturating_sub(waiting);
        match self.start_step(index, covered) {
            Ok(step) => self.ahead = Some((index, step)),
            // Not reachable (the file was just looked up); read it the ordinary way.
            Err(_) => self.queue.push_front(index),
        }
    }
}

/// One step over one file: a chunk of text or a batch of Parquet.
fn step_file(
    state: FileState,
    path: &std::path::Path,
    display: &str,
    config: &ScanConfig,
    skip: u64,
) -> ConnectorResult<(FileState, StepOutput)> {
    match state {
        FileState::Text(mut cursor) => {
            let Some(decoder) = &config.decoder else {
                return Err(ConnectorError::Io(format!(
                    "no text decoder for '{display}'"
                )));
            };
            let output = cursor.step(
                decoder,
                &config.decode,
                config.follow,
                config.decode_threads,
                skip,
            )?;
            let state = if output.progress == Progress::Done {
                FileState::Finished
            } else {
                FileState::Text(cursor)
            };
            Ok((state, output))
        }
        FileState::ParquetPending => {
            let cursor = ParquetCursor::open_at(path, &config.decode, skip)?;
            let skipped = cursor.skipped();
            let (state, mut output) = parquet_step(
                Box::new(cursor),
                display,
                config,
                skip.saturating_sub(skipped),
            )?;
            output.skipped = skipped;
            Ok((state, output))
        }
        FileState::ParquetOpen(cursor) => parquet_step(cursor, display, config, skip),
        other @ (FileState::ParquetSettling(_) | FileState::Finished | FileState::InUse) => Ok((
            other,
            StepOutput {
                batches: Vec::new(),
                progress: Progress::Done,
                read_bytes: false,
                skipped: 0,
            },
        )),
    }
}

/// One batch of a Parquet file, whose first `covered` well-formed rows a restored checkpoint
/// already covers.
fn parquet_step(
    mut cursor: Box<ParquetCursor>,
    display: &str,
    config: &ScanConfig,
    covered: u64,
) -> ConnectorResult<(FileState, StepOutput)> {
    Ok(match cursor.next_batch(display, &config.decode, covered)? {
        Some(batch) => (
            FileState::ParquetOpen(cursor),
            StepOutput {
                batches: if batch.num_rows() > 0 {
                    vec![batch]
                } else {
                    Vec::new()
                },
                progress: Progress::More,
                read_bytes: true,
                skipped: 0,
            },
        ),
        None => (
            FileState::Finished,
            StepOutput {
                batches: Vec::new(),
                progress: Progress::Done,
                read_bytes: true,
                skipped: 0,
            },
        ),
    })
}

fn spec_text(spec: &PathSpec) -> String {
    match spec {
        PathSpec::File(path) | PathSpec::Folder(path) => path.display().to_string(),
        PathSpec::Glob(pattern) => pattern.clone(),
    }
}

/// Runs blocking file-system work off the tokio worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ConnectorResult<T> + Send + 'static,
) -> ConnectorResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ConnectorError::Io(format!("file reader task failed: {e}")))?
}
