//! The file-source variant's input: the run's bids (auction, bidder, price, date_time) written
//! to a CSV file in a temporary directory, in generation order, with a header line.
//!
//! Both Eddy's `file` source and DataFusion's `register_csv` read this one file, so the two
//! figures differ only in how each engine reads and aggregates it.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;

use crate::BenchResult;
use crate::eddy::Streaming;

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> BenchResult<Self> {
        let path = std::env::temp_dir().join(format!("eddy-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in /tmp is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The written file.
pub struct BidsCsv {
    pub path: PathBuf,
    /// The columns as Arrow types, for DataFusion to read them with.
    pub schema: SchemaRef,
    pub rows: usize,
    pub bytes: u64,
}

/// Streams the bids of `streaming`'s generator into `dir/bids.csv`, timestamps in
/// `timestamp_format` (chrono's syntax; arrow's default, RFC 3339, without one).
pub async fn write_bids(
    streaming: &mut Streaming,
    dir: &Path,
    timestamp_format: Option<&str>,
) -> BenchResult<BidsCsv> {
    let path = dir.join("bids.csv");
    let mut builder = WriterBuilder::new().with_header(true);
    if let Some(format) = timestamp_format {
        builder = builder.with_timestamp_format(format.to_string());
    }
    let mut writer = builder.build(BufWriter::new(File::create(&path)?));
    let mut schema = None;
    let outcome = streaming
        .run("SELECT auction, bidder, price, date_time FROM bids", |b| {
            schema.get_or_insert_with(|| b.schema());
            Ok(writer.write(b)?)
        })
        .await?;
    writer
        .into_inner()
        .into_inner()
        .map_err(|e| e.into_error())?;
    Ok(BidsCsv {
        bytes: std::fs::metadata(&path)?.len(),
        path,
        schema: schema.ok_or("the generator produced no bids")?,
        rows: outcome.rows,
    })
}
