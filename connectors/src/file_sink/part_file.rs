//! One output file: written under a hidden in-progress name, made visible by a rename.
//!
//! A file is written as `.<name>.<id>.inprogress` beside its final name. [`PartFile::commit`]
//! finishes the format (the Parquet footer), syncs the data to disk, renames the file to its
//! final name and syncs the folder, so a reader either sees the whole file or nothing.
//! [`PartFile::finish_as`] finishes it the same way under another name (an exactly-once sink's
//! hidden pending name, made visible by a later rename).
//! [`PartFile::discard`] removes an unfinished file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use eddy_engine::connector::{ConnectorError, ConnectorResult};

use super::options::{Compression, OutputFormat};

/// How the rows of one file are encoded.
enum Encoder {
    Parquet(ArrowWriter<File>),
    Csv(Box<datafusion::arrow::csv::Writer<CountingWriter>>),
    Json(datafusion::arrow::json::LineDelimitedWriter<CountingWriter>),
}

/// A buffered file that counts the bytes written to it.
///
/// `flush` does nothing: the encoders flush after every batch (and arrow's CSV writer would
/// panic on a failed flush when finished); the buffer is flushed, with its error reported, by
/// [`PartFile::commit`].
pub(crate) struct CountingWriter {
    inner: BufWriter<File>,
    bytes: Arc<AtomicU64>,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How files are encoded: format, compression, row group size, CSV header.
#[derive(Debug, Clone)]
pub(crate) struct Encoding {
    pub format: OutputFormat,
    pub compression: Compression,
    pub row_group_size: Option<usize>,
    pub header: bool,
}

impl Encoding {
    pub(crate) fn of(options: &super::options::SinkOptions) -> Self {
        Self {
            format: options.format,
            compression: options.compression,
            row_group_size: options.row_group_size,
            header: options.header,
        }
    }
}

/// Checks that rows of `schema` can be encoded, by encoding a row of NULLs in memory, so a
/// type the format cannot hold (a nanosecond interval in Parquet, a list in CSV) is refused
/// before anything runs.
pub(crate) fn check_encodable(schema: &SchemaRef, encoding: &Encoding) -> ConnectorResult<()> {
    let nulls: Vec<datafusion::arrow::array::ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), 1))
        .collect();
    let nullable = Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(Arc::clone(&nullable), nulls)?;
    let result: Result<(), String> = match encoding.format {
        OutputFormat::Parquet => ArrowWriter::try_new(Vec::new(), nullable, None)
            .and_then(|mut w| {
                w.write(&batch)?;
                w.close().map(|_| ())
            })
            .map_err(|e| e.to_string()),
        OutputFormat::Csv => datafusion::arrow::csv::WriterBuilder::new()
            .build(Vec::new())
            .write(&batch)
            .map_err(|e| e.to_string()),
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
            w.write(&batch)
                .and_then(|()| w.finish())
                .map_err(|e| e.to_string())
        }
    };
    result.map_err(|e| {
        ConnectorError::Unsupported(format!(
            "{} output of these columns ({})",
            match encoding.format {
                OutputFormat::Parquet => "Parquet",
                OutputFormat::Csv => "CSV",
                OutputFormat::Json => "JSON",
            },
            e
        ))
    })
}

/// The write buffer of a CSV or JSON file.
const TEXT_BUFFER: usize = 1 << 20;

/// A file being written.
pub(crate) struct PartFile {
    in_progress: PathBuf,
    final_path: PathBuf,
    encoder: Encoder,
    /// Bytes a CSV or JSON encoder has written.
    text_bytes: Arc<AtomicU64>,
    pub opened_at: Instant,
    pub last_write: Instant,
    pub rows: u64,
}

impl PartFile {
    /// Creates the in-progress file for `final_path` (and its folder).
    pub(crate) fn create(
        final_path: PathBuf,
        schema: &SchemaRef,
        encoding: &Encoding,
    ) -> ConnectorResult<Self> {
        let dir = final_path
            .parent()
            .ok_or_else(|| ConnectorError::Io(format!("{} has no folder", final_path.display())))?;
        std::fs::create_dir_all(dir).map_err(|e| io_error("create folder", dir, e))?;
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ConnectorError::Io(format!("bad file name {}", final_path.display())))?;
        let in_progress = dir.join(format!(".{name}.{}.inprogress", super::writer::unique_id()));
        let file = File::create(&in_progress).map_err(|e| io_error("create", &in_progress, e))?;
        let text_bytes = Arc::new(AtomicU64::new(0));
        let counting = || -> std::io::Result<CountingWriter> {
            Ok(CountingWriter {
                inner: BufWriter::with_capacity(TEXT_BUFFER, file.try_clone()?),
                bytes: Arc::clone(&text_bytes),
            })
        };
        let encoder = match encoding.format {
            OutputFormat::Parquet => {
                let mut props =
                    WriterProperties::builder().set_compression(encoding.compression.parquet());
                if let Some(rows) = encoding.row_group_size {
                    props = props.set_max_row_group_row_count(Some(rows));
                }
                Encoder::Parquet(
                    ArrowWriter::try_new(file, Arc::clone(schema), Some(props.build()))
                        .map_err(|e| ConnectorError::Io(format!("parquet writer: {e}")))?,
                )
            }
            OutputFormat::Csv => Encoder::Csv(Box::new(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(encoding.header)
                    .with_timestamp_format("%Y-%m-%d %H:%M:%S%.f".to_string())
                    .build(counting().map_err(|e| io_error("open", &in_progress, e))?),
            )),
            OutputFormat::Json => Encoder::Json(datafusion::arrow::json::LineDelimitedWriter::new(
                counting().map_err(|e| io_error("open", &in_progress, e))?,
            )),
        };
        let now = Instant::now();
        Ok(Self {
            in_progress,
            final_path,
            encoder,
            text_bytes,
            opened_at: now,
            last_write: now,
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> ConnectorResult<()> {
        let result = match &mut self.encoder {
            Encoder::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            Encoder::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
            Encoder::Json(w) => w.write(batch).map_err(|e| e.to_string()),
        };
        result.map_err(|e| {
            ConnectorError::Io(format!("writing {}: {e}", self.in_progress.display()))
        })?;
        self.rows += batch.num_rows() as u64;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Bytes the file will have about now (written plus buffered).
    pub(crate) fn size(&self) -> u64 {
        match &self.encoder {
            Encoder::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            Encoder::Csv(_) | Encoder::Json(_) => self.text_bytes.load(Ordering::Relaxed),
        }
    }

    /// Bytes the file's encoder holds in memory: a Parquet writer's unflushed row group, a
    /// text encoder's write buffer.
    pub(crate) fn buffered_bytes(&self) -> usize {
        match &self.encoder {
            Encoder::Parquet(w) => w.memory_size(),
            Encoder::Csv(_) | Encoder::Json(_) => TEXT_BUFFER,
        }
    }

    /// The name the file gets when committed.
    pub(crate) fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Finishes the file and makes it visible under its final name.
    pub(crate) fn commit(self) -> ConnectorResult<()> {
        let target = self.final_path.clone();
        self.finish_as(&target)
    }

    /// Finishes the file (format footer, data synced to disk) and renames it to `target`, in
    /// the same folder, then syncs the folder: the rename is durable when this returns.
    pub(crate) fn finish_as(self, target: &Path) -> ConnectorResult<()> {
        let in_progress = self.in_progress.clone();
        let file = match self.encoder {
            Encoder::Parquet(w) => w.into_inner().map_err(|e| {
                ConnectorError::Io(format!("finishing {}: {e}", in_progress.display()))
            })?,
            Encoder::Csv(w) => finish_text((*w).into_inner(), &in_progress)?,
            Encoder::Json(mut w) => {
                w.finish().map_err(|e| {
                    ConnectorError::Io(format!("finishing {}: {e}", in_progress.display()))
                })?;
                finish_text(w.into_inner(), &in_progress)?
            }
        };
        file.sync_all()
            .map_err(|e| io_error("sync", &in_progress, e))?;
        drop(file);
        std::fs::rename(&in_progress, target).map_err(|e| io_error("rename", &in_progress, e))?;
        sync_dir(target.parent());
        Ok(())
    }

    /// Removes the unfinished file.
    pub(crate) fn discard(self) {
        let path = self.in_progress.clone();
        drop(self.encoder);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an unfinished file");
        }
    }
}

fn finish_text(writer: CountingWriter, path: &Path) -> ConnectorResult<File> {
    writer
        .inner
        .into_inner()
        .map_err(|e| io_error("flush", path, e.into_error()))
}

/// Makes a rename durable (best effort: not every file system can sync a folder).
pub(crate) fn sync_dir(dir: Option<&Path>) {
    if let Some(dir) = dir
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> ConnectorError {
    ConnectorError::Io(format!("cannot {what} {}: {e}", path.display()))
}
