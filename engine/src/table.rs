//! Push tables: append-only streams fed by `INSERT` and `COPY FROM STDIN`.
//!
//! A [`TableLog`] keeps every batch ever inserted, in order, and wakes the queries that follow
//! it. When the engine has a data directory, each batch is also appended to an Arrow IPC stream
//! file and synced to disk before `append` returns (so before `INSERT`, `COPY FROM` or `COMMIT`
//! is acknowledged), so acknowledged rows survive a crash; a torn last message (a crash
//! mid-write, never acknowledged) is dropped on load and everything before it is kept. A
//! table's rows are numbered in append order, which is the position a checkpoint records for
//! a job reading it ([`TableLog::follow_from`]).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::error::{EngineError, EngineResult};

/// The rows of one push table.
pub struct TableLog {
    schema: SchemaRef,
    batches: Mutex<Vec<RecordBatch>>,
    /// Number of batches appended so far; followers wait on it.
    appended: watch::Sender<usize>,
    file: Option<(PathBuf, Mutex<StreamWriter<BufWriter<File>>>)>,
}

impl std::fmt::Debug for TableLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLog")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl TableLog {
    /// A table kept in memory only.
    pub fn in_memory(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Mutex::default(),
            appended: watch::Sender::new(0),
            file: None,
        }
    }

    /// A table persisted at `path`, loading whatever rows the file already holds.
    pub fn open(schema: SchemaRef, path: &Path) -> EngineResult<Self> {
        let mut batches = Vec::new();
        if path.exists() {
            let reader = StreamReader::try_new(File::open(path)?, None)?;
            if reader.schema() != schema {
                return Err(EngineError::Internal(format!(
                    "table file {} has a different schema than the table",
                    path.display()
                )));
            }
            for batch in reader {
                match batch {
                    Ok(b) => batches.push(b),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "dropping torn tail of table file");
                        break;
                    }
                }
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Rewrite the file with the rows that loaded cleanly, then append from there.
        let tmp = path.with_extension("arrows.tmp");
        let mut writer = StreamWriter::try_new(BufWriter::new(File::create(&tmp)?), &schema)?;
        for b in &batches {
            writer.write(b)?;
        }
        writer.flush()?;
        writer.get_ref().get_ref().sync_all()?;
        std::fs::rename(&tmp, path)?;
        let n = batches.len();
        Ok(Self {
            schema,
            batches: Mutex::new(batches),
            appended: watch::Sender::new(n),
            file: Some((path.to_path_buf(), Mutex::new(writer))),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends rows (already in the table's schema) and wakes followers.
    pub fn append(&self, batch: RecordBatch) -> EngineResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if let Some((_, writer)) = &self.file {
            // On disk before the statement is acknowledged: a crash right after keeps it.
            let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
            writer.write(&batch)?;
            writer.flush()?;
            writer.get_ref().get_ref().sync_data()?;
        }
        let n = {
            let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
            batches.push(batch);
            batches.len()
        };
        self.appended.send_replace(n);
        Ok(())
    }

    /// The batches appended after the first `from`, without waiting (a lookup join reads what
    /// is there as each row arrives).
    pub fn batches_from(&self, from: usize) -> Vec<RecordBatch> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches
            .get(from..)
            .map(<[RecordBatch]>::to_vec)
            .unwrap_or_default()
    }

    /// Number of rows in the table.
    pub fn num_rows(&self) -> usize {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| b.num_rows())
            .sum()
    }

    /// Deletes the table's file (after `DROP TABLE`).
    pub fn delete_file(&self) -> EngineResult<()> {
        if let Some((path, _)) = &self.file
            && path.exists()
        {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    /// Every row from the first, then each new batch as it is appended. Never ends while the
    /// table exists.
    pub fn follow(self: &std::sync::Arc<Self>) -> BoxStream<'static, RecordBatch> {
        self.follow_from(0)
    }

    /// Like [`TableLog::follow`], without the first `skip` rows (a restored checkpoint's
    /// position).
    pub fn follow_from(self: &std::sync::Arc<Self>, skip: u64) -> BoxStream<'static, RecordBatch> {
        let log = std::sync::Arc::clone(self);
        let rx = self.appended.subscribe();
        Box::pin(futures::stream::unfold(
            (log, rx, 0usize, Vec::<RecordBatch>::new(), skip),
            |(log, mut rx, mut next, mut pending, mut skip)| async move {
                loop {
                    if let Some(b) = pending.pop() {
                        return Some((b, (log, rx, next, pending, skip)));
                    }
                    {
                        let batches = log.batches.lock().unwrap_or_else(|e| e.into_inner());
                        if next < batches.len() {
                            let mut fresh = Vec::new();
                            for b in &batches[next..] {
                                let rows = b.num_rows() as u64;
                                if skip >= rows {
                                    skip -= rows;
                                } else {
                                    fresh
                                        .push(b.slice(skip as usize, b.num_rows() - skip as usize));
                                    skip = 0;
                                }
                            }
                            pending = fresh.into_iter().rev().collect();
                            next = batches.len();
                            continue;
                        }
                        rx.mark_unchanged();
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        ))
    }
}
