//! The writers: [`PartitionedWriter`] for continuous sinks (rolling files, partitions,
//! `_SUCCESS` markers, the two-phase commit of exactly-once sinks) and [`SingleFileWriter`]
//! for `COPY ... TO 'file'`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::array::{Array, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{ConnectorResult, SinkMetrics, SinkWriter};

use super::options::SinkOptions;
use super::part_file::{Encoding, PartFile, io_error, sync_dir};
use super::partition::{HiveValues, NULL_PARTITION, nanos};
use super::two_phase::{CommitManifest, StagedFile, publish, remove_hidden};

/// The marker of a complete partition (Flink's and Hadoop's name).
pub const SUCCESS_FILE: &str = "_SUCCESS";

/// A name part that differs between writers, so two runs (or two sinks) never write the same
/// file name.
pub(crate) fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed =
        nanos ^ (u64::from(std::process::id()) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:012x}", mixed & 0xFFFF_FFFF_FFFF)
}

/// Which partition a row belongs to: the start of its event-time period (`None` for a NULL
/// time or without a pattern) and its Hive folders (`""` without `partition.by`).
type PartitionKey = (Option<i64>, String);

/// One partition's state: its open file, and whether it is committed.
struct Partition {
    file: Option<PartFile>,
    /// Its `_SUCCESS` marker is written.
    committed: bool,
}

/// The writer of a continuous file sink.
///
/// Without `exactly_once` a finished file is renamed to its final name at once and a complete
/// partition gets its `_SUCCESS` at once. With it, finished files wait under hidden pending
/// names and due markers wait in `staged` until a checkpoint's [`SinkWriter::pre_commit`]
/// moves them to `pre_committed`, and its [`SinkWriter::commit`] publishes them.
pub(crate) struct PartitionedWriter {
    root: PathBuf,
    schema: SchemaRef,
    options: SinkOptions,
    encoding: Encoding,
    run: String,
    seq: u64,
    /// By folder relative to `root` (`""` when not partitioned).
    partitions: HashMap<String, Partition>,
    /// Event-time partitions not yet committed, by end.
    pending: BTreeMap<i64, HashSet<String>>,
    metrics: Arc<SinkMetrics>,
    /// Files and markers become visible only through the two-phase commit.
    exactly_once: bool,
    /// Finished (pending) files and due markers no checkpoint has pre-committed yet.
    staged: CommitManifest,
    /// What each checkpoint pre-committed that is not committed yet, by epoch.
    pre_committed: BTreeMap<u64, CommitManifest>,
}

impl PartitionedWriter {
    pub(crate) fn new(
        root: PathBuf,
        schema: SchemaRef,
        options: SinkOptions,
        metrics: Arc<SinkMetrics>,
        exactly_once: bool,
    ) -> ConnectorResult<Self> {
        std::fs::create_dir_all(&root).map_err(|e| io_error("create folder", &root, e))?;
        // Files are coming: the folder is not complete any more.
        let marker = root.join(SUCCESS_FILE);
        if marker.is_file() {
            std::fs::remove_file(&marker).map_err(|e| io_error("remove", &marker, e))?;
        }
        let encoding = Encoding::of(&options);
        Ok(Self {
            root,
            schema,
            options,
            encoding,
            run: unique_id(),
            seq: 0,
            partitions: HashMap::new(),
            pending: BTreeMap::new(),
            metrics,
            exactly_once,
            staged: CommitManifest::default(),
            pre_committed: BTreeMap::new(),
        })
    }

    /// Splits a batch by partition folder.
    fn split(
        &self,
        batch: &RecordBatch,
    ) -> ConnectorResult<Vec<(String, Option<i64>, RecordBatch)>> {
        if self.options.time_partition.is_none() && self.options.partition_by.is_empty() {
            return Ok(vec![(String::new(), None, batch.clone())]);
        }
        let times = match &self.options.time_partition {
            Some((_, column)) => Some(nanos(batch.column(*column))?),
            None => None,
        };
        let hive_columns: Vec<_> = self
            .options
            .partition_by
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let format = datafusion::arrow::util::display::FormatOptions::default();
        let hive = HiveValues::try_new(
            self.options
                .partition_by
                .iter()
                .map(|&i| self.schema.field(i).name().clone())
                .collect(),
            &hive_columns,
            &format,
        )?;
        // Rows are grouped by the start of their event-time period (NULL time: `None`) and
        // their Hive folders; a period's folder name is formatted once per group, not per row.
        let pattern = self.options.time_partition.as_ref().map(|(p, _)| p);
        let mut groups: Vec<(PartitionKey, Vec<u32>)> = Vec::new();
        let mut index: HashMap<PartitionKey, usize> = HashMap::new();
        for row in 0..batch.num_rows() {
            let start = match (pattern, &times) {
                (Some(pattern), Some(times)) if times.is_valid(row) => {
                    Some(pattern.period_start(times.value(row)))
                }
                _ => None,
            };
            let hive_folder = if self.options.partition_by.is_empty() {
                String::new()
            } else {
                hive.folder(row)
            };
            let key = (start, hive_folder);
            let at = match index.get(&key) {
                Some(&at) => at,
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[at].1.push(row as u32);
        }
        groups
            .into_iter()
            .map(|((start, hive_folder), rows)| {
                let (mut folder, end) = match (pattern, start) {
                    (Some(pattern), Some(start)) => {
                        let (folder, end) = pattern.partition(start);
                        (folder, Some(end))
                    }
                    (Some(_), None) => (NULL_PARTITION.to_string(), None),
                    (None, _) => (String::new(), None),
                };
                if !hive_folder.is_empty() {
                    if !folder.is_empty() {
                        folder.push('/');
                    }
                    folder.push_str(&hive_folder);
                }
                let rows = UInt32Array::from(rows);
                Ok((folder, end, take_record_batch(batch, &rows)?))
            })
            .collect()
    }

    /// A new file's final path. The run id makes names differ between writers; a name
    /// that exists anyway (visible or pending) is skipped, so no file is ever overwritten.
    fn file_path(&mut self, folder: &str) -> PathBuf {
        loop {
            self.seq += 1;
            let name = format!(
                "part-{}-{:05}.{}",
                self.run,
                self.seq,
                self.options.format.extension()
            );
            let dir = if folder.is_empty() {
                self.root.clone()
            } else {
                self.root.join(folder)
            };
            let taken = dir.join(&name).exists() || dir.join(format!(".{name}.pending")).exists();
            if !taken {
                return dir.join(name);
            }
        }
    }

    fn write_partition(
        &mut self,
        folder: String,
        end: Option<i64>,
        rows: &RecordBatch,
    ) -> ConnectorResult<()> {
        let path = if self
            .partitions
            .get(&folder)
            .is_some_and(|p| p.file.is_some())
        {
            None
        } else {
            Some(self.file_path(&folder))
        };
        let partition = self.partitions.entry(folder.clone()).or_insert(Partition {
            file: None,
            committed: false,
        });
        if partition.committed {
            // Rows for a partition already marked complete: they get a file of their own.
            SinkMetrics::add(&self.metrics.late_rows, rows.num_rows() as u64);
        }
        if let Some(end) = end
            && (partition.committed || partition.file.is_none())
        {
            self.pending.entry(end).or_default().insert(folder.clone());
        }
        if let Some(path) = path {
            partition.file = Some(PartFile::create(path, &self.schema, &self.encoding)?);
        }
        let Some(file) = partition.file.as_mut() else {
            return Ok(());
        };
        file.write(rows)?;
        SinkMetrics::add(&self.metrics.rows, rows.num_rows() as u64);
        if file.size() >= self.options.rollover_size {
            self.roll(&folder)?;
        }
        Ok(())
    }

    /// Finishes the open file of a partition, if any: visible at once, or, exactly-once,
    /// under its pending name until a checkpoint commits it.
    fn roll(&mut self, folder: &str) -> ConnectorResult<()> {
        let Some(file) = self.partitions.get_mut(folder).and_then(|p| p.file.take()) else {
            return Ok(());
        };
        if !self.exactly_once {
            file.commit()?;
            SinkMetrics::add(&self.metrics.files, 1);
            return Ok(());
        }
        let relative = file
            .final_path()
            .strip_prefix(&self.root)
            .map_err(|_| {
                eddy_engine::connector::ConnectorError::Io(format!(
                    "{} is outside the sink's folder",
                    file.final_path().display()
                ))
            })?
            .to_path_buf();
        let staged = StagedFile::for_final(&relative)?;
        file.finish_as(&self.root.join(&staged.pending))?;
        self.staged.files.push(staged);
        Ok(())
    }

    /// Finishes a partition's file and writes its `_SUCCESS` marker (exactly-once: makes the
    /// marker due at the next checkpoint).
    fn commit_partition(&mut self, folder: &str) -> ConnectorResult<()> {
        self.roll(folder)?;
        let was_committed = self.partitions.get(folder).is_some_and(|p| p.committed);
        if self.exactly_once {
            // A partition's marker is written once; late files join it without a new one.
            if !was_committed && !self.staged.success.iter().any(|f| f == folder) {
                self.staged.success.push(folder.to_string());
            }
        } else {
            write_marker(&self.root.join(folder))?;
            if !was_committed {
                SinkMetrics::add(&self.metrics.partitions_committed, 1);
            }
        }
        if let Some(p) = self.partitions.get_mut(folder) {
            p.committed = true;
        }
        Ok(())
    }

    /// Exactly-once: publishes everything finished, pre-committed or not (the input ended or
    /// the sink is dropped, so no checkpoint will).
    fn publish_all(&mut self) -> ConnectorResult<()> {
        while let Some((_, manifest)) = self.pre_committed.first_key_value() {
            publish(&self.root, manifest, &self.metrics)?;
            self.pre_committed.pop_first();
        }
        publish(&self.root, &self.staged, &self.metrics)?;
        self.staged = CommitManifest::default();
        Ok(())
    }

    fn update_buffered(&self) {
        let bytes: u64 = self
            .partitions
            .values()
            .filter_map(|p| p.file.as_ref())
            .map(PartFile::size)
            .sum();
        SinkMetrics::set(&self.metrics.buffered_bytes, bytes);
    }

    /// Finishes every open file.
    fn roll_all(&mut self) -> ConnectorResult<()> {
        let mut folders: Vec<String> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.file.is_some())
            .map(|(f, _)| f.clone())
            .collect();
        folders.sort();
        for folder in folders {
            self.roll(&folder)?;
        }
        self.update_buffered();
        Ok(())
    }
}

pub(crate) fn write_marker(dir: &std::path::Path) -> ConnectorResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("create folder", dir, e))?;
    let marker = dir.join(SUCCESS_FILE);
    std::fs::write(&marker, b"").map_err(|e| io_error("write", &marker, e))?;
    sync_dir(Some(dir));
    Ok(())
}

impl SinkWriter for PartitionedWriter {
    fn write(&mut self, batch: &RecordBatch) -> ConnectorResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (folder, end, rows) in self.split(batch)? {
            self.write_partition(folder, end, &rows)?;
        }
        self.update_buffered();
        Ok(())
    }

    fn buffered_bytes(&self) -> usize {
        self.partitions
            .values()
            .filter_map(|p| p.file.as_ref())
            .map(PartFile::buffered_bytes)
            .sum()
    }

    fn watermark(&mut self, watermark: i64) -> ConnectorResult<()> {
        // Every partition that ends at or before the watermark is complete.
        let still_open = self.pending.split_off(&watermark.saturating_add(1));
        let complete = std::mem::replace(&mut self.pending, still_open);
        for (_, folders) in complete {
            let mut folders: Vec<String> = folders.into_iter().collect();
            folders.sort();
            for folder in folders {
                self.commit_partition(&folder)?;
            }
        }
        self.update_buffered();
        Ok(())
    }

    fn tick(&mut self) -> ConnectorResult<()> {
        let interval = self.options.rollover_interval;
        let inactivity = self.options.rollover_inactivity;
        if interval.is_none() && inactivity.is_none() {
            return Ok(());
        }
        let due: Vec<String> = self
            .partitions
            .iter()
            .filter(|(_, p)| {
                p.file.as_ref().is_some_and(|f| {
                    interval.is_some_and(|i| f.opened_at.elapsed() >= i)
                        || inactivity.is_some_and(|i| f.last_write.elapsed() >= i)
                })
            })
            .map(|(f, _)| f.clone())
            .collect();
        for folder in due {
            self.roll(&folder)?;
        }
        self.update_buffered();
        Ok(())
    }

    fn tick_interval(&self) -> Duration {
        let shortest = [
            self.options.rollover_interval,
            self.options.rollover_inactivity,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1));
        (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    fn finish(&mut self) -> ConnectorResult<()> {
        self.roll_all()?;
        let pending = std::mem::take(&mut self.pending);
        let mut folders: Vec<String> = pending.into_values().flatten().collect();
        folders.sort();
        folders.dedup();
        for folder in folders {
            self.commit_partition(&folder)?;
        }
        if self.exactly_once {
            self.publish_all()?;
        }
        // The whole output is final, as Hadoop and Spark mark a finished job.
        write_marker(&self.root)
    }

    fn close(&mut self) -> ConnectorResult<()> {
        self.roll_all()?;
        if self.exactly_once {
            // Dropped for good: no restart will commit what is pending, so it is made
            // visible now (the markers only of partitions the watermark completed).
            self.publish_all()?;
        }
        Ok(())
    }

    fn abort(&mut self) {
        for partition in self.partitions.values_mut() {
            if let Some(file) = partition.file.take() {
                file.discard();
            }
        }
        SinkMetrics::set(&self.metrics.buffered_bytes, 0);
    }

    fn pre_commit(&mut self, epoch: u64) -> ConnectorResult<String> {
        if !self.exactly_once {
            return Err(eddy_engine::connector::ConnectorError::Unsupported(
                "a checkpoint of a file sink opened without exactly-once output".to_string(),
            ));
        }
        self.roll_all()?;
        let mut staged = std::mem::take(&mut self.staged);
        staged.epoch = epoch;
        self.pre_committed
            .entry(epoch)
            .or_insert_with(|| CommitManifest {
                epoch,
                ..CommitManifest::default()
            })
            .extend(&staged);
        // Everything not yet committed: a crash before the commits of earlier checkpoints
        // must not lose their files.
        let mut all = CommitManifest {
            epoch,
            ..CommitManifest::default()
        };
        for manifest in self.pre_committed.values() {
            all.extend(manifest);
        }
        all.epoch = epoch;
        all.open = self
            .pending
            .iter()
            .flat_map(|(end, folders)| folders.iter().map(move |f| (*end, f.clone())))
            .collect();
        all.to_json()
    }

    fn commit(&mut self, epoch: u64) -> ConnectorResult<()> {
        // One epoch at a time, removed once published, so a failed commit can be retried.
        while let Some((&first, manifest)) = self.pre_committed.first_key_value() {
            if first > epoch {
                break;
            }
            publish(&self.root, manifest, &self.metrics)?;
            self.pre_committed.pop_first();
        }
        Ok(())
    }

    fn recover(&mut self, pre_committed: Option<&str>) -> ConnectorResult<()> {
        if let Some(text) = pre_committed {
            let manifest = CommitManifest::from_json(text)?;
            publish(&self.root, &manifest, &self.metrics)?;
            // Partitions still open at the checkpoint get their `_SUCCESS` when the restored
            // job's watermark passes their end, as they would have.
            for (end, folder) in manifest.open {
                self.pending.entry(end).or_default().insert(folder.clone());
                self.partitions.entry(folder).or_insert(Partition {
                    file: None,
                    committed: false,
                });
            }
        }
        // The rest holds rows after the checkpoint, which the restarted job produces again.
        remove_hidden(&self.root)
    }
}

/// The writer of `COPY ... TO 'file'`: one file, visible once finished.
pub(crate) struct SingleFileWriter {
    file: Option<PartFile>,
    metrics: Arc<SinkMetrics>,
}

impl SingleFileWriter {
    pub(crate) fn new(
        path: PathBuf,
        schema: SchemaRef,
        options: &SinkOptions,
        metrics: Arc<SinkMetrics>,
    ) -> ConnectorResult<Self> {
        if path.is_dir() {
            return Err(eddy_engine::connector::ConnectorError::InvalidOption(
                format!("'{}' is a folder; COPY TO writes one file", path.display()),
            ));
        }
        let encoding = Encoding::of(options);
        Ok(Self {
            file: Some(PartFile::create(path, &schema, &encoding)?),
            metrics,
        })
    }
}

impl SinkWriter for SingleFileWriter {
    fn write(&mut self, batch: &RecordBatch) -> ConnectorResult<()> {
        if let Some(file) = &mut self.file {
            file.write(batch)?;
            SinkMetrics::add(&self.metrics.rows, batch.num_rows() as u64);
        }
        Ok(())
    }

    fn buffered_bytes(&self) -> usize {
        self.file.as_ref().map_or(0, PartFile::buffered_bytes)
    }

    fn watermark(&mut self, _watermark: i64) -> ConnectorResult<()> {
        Ok(())
    }

    fn tick(&mut self) -> ConnectorResult<()> {
        Ok(())
    }

    fn finish(&mut self) -> ConnectorResult<()> {
        if let Some(file) = self.file.take() {
            file.commit()?;
            SinkMetrics::add(&self.metrics.files, 1);
        }
        Ok(())
    }

    fn close(&mut self) -> ConnectorResult<()> {
        self.finish()
    }

    fn abort(&mut self) {
        if let Some(file) = self.file.take() {
            file.discard();
        }
    }
}
