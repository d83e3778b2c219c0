//! The file sink connector (`parquet`, or `file` with a `format`): continuous export of a
//! query's rows to Parquet, CSV or JSON-lines files, and the writer behind
//! `COPY ... TO 'file'`.
//!
//! ```sql
//! CREATE SINK hourly FROM bids_per_hour WITH (
//!   connector = 'parquet', path = 'out/bids', partition.pattern = 'dt=%Y-%m-%d/hour=%H');
//! ```
//!
//! # Guarantees
//! - A file is visible under its final name only once complete: it is written under a hidden
//!   `.<name>.<id>.inprogress` name, synced, then renamed. Readers never see a partial file.
//! - An event-time partition gets a `_SUCCESS` file once the watermark reaches its end; rows
//!   that still arrive for it (only possible when partitioning by a column the watermark does
//!   not bound) go to a new file in it and are counted as late.
//! - When the input ends every file is finished and the sink's folder gets a `_SUCCESS` too;
//!   a writer that opens removes it (the folder is no longer complete), and a sink restored
//!   after a restart whose folder has it is not run again.
//! - A failure removes the unfinished files and leaves finished ones alone.
//!
//! # Exactly-once output (a checkpointing job, [`SinkContext::exactly_once`])
//! Files and markers become visible only when the checkpoint covering their rows completes,
//! a two-phase commit as in Flink's `FileSink`:
//! - A finished file (rolled by size, interval or inactivity, or by the watermark completing
//!   its partition) is synced and renamed to a hidden `.<name>.pending` beside its final name;
//!   due `_SUCCESS` markers are held back.
//! - `pre_commit(epoch)` (the barrier) finishes every open file the same way and returns a
//!   JSON record of every pending file not yet committed (pending and final paths, relative
//!   to the sink's folder) and the due markers; the checkpoint stores it.
//! - `commit(epoch)` (the checkpoint completed) renames the files of that epoch and earlier
//!   to their final names, syncs their folders, then writes the markers. It is idempotent.
//! - `recover(record)` on a restarted sink completes the record's commit (a file already
//!   renamed is fine) and then deletes every hidden `.part-*` in-progress or pending file of
//!   the folder: their rows come after the checkpoint and will be written again.
//!   `recover(None)` only deletes them. A visible file is never deleted.
//! - `finish()` (the input ended) and `close()` (DROP SINK) publish every pending file, since
//!   no later checkpoint will: after a DROP SINK nothing is restarted, so the rows written
//!   since the last checkpoint are kept rather than left hidden forever. `abort()` removes
//!   the files being written and leaves pending ones for `recover` to decide.
//! - File names carry the writer's run id, and a name already taken is skipped, so a run
//!   never overwrites a file of an earlier one.
//!
//! Without it (the job does not checkpoint) files and markers become visible at once.
//!
//! # Options
//! `path` (the folder, required), `format` (`parquet`, `csv`, `json`), `compression` (Parquet:
//! `zstd` (default), `snappy`, `gzip`, `lz4`, `none`), `row_group.size` (rows),
//! `rollover.size` (default `128MB`), `rollover.interval`, `rollover.inactivity`,
//! `partition.pattern` with `partition.time_column`, `partition.by`, `header` (CSV).

pub(crate) mod options;
mod part_file;
mod partition;
mod two_phase;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use eddy_engine::connector::{ConnectorResult, SinkConnector, SinkContext, SinkWriter};
use eddy_engine::paths::PathPolicy;

use self::options::{OutputFormat, SinkOptions};
use self::part_file::{Encoding, check_encodable};
use self::writer::{PartitionedWriter, SingleFileWriter};

pub use self::writer::SUCCESS_FILE;

/// The file sink connector, under one name and default format.
#[derive(Debug, Clone)]
pub struct FileSinkConnector {
    name: &'static str,
    aliases: &'static [&'static str],
    default_format: OutputFormat,
    paths: Arc<PathPolicy>,
}

impl FileSinkConnector {
    /// `connector = 'parquet'`.
    pub fn parquet(paths: Arc<PathPolicy>) -> Self {
        Self {
            name: "parquet",
            aliases: &[],
            default_format: OutputFormat::Parquet,
            paths,
        }
    }

    /// `connector = 'file'` (alias `filesystem`), Parquet unless `format` says otherwise.
    pub fn file(paths: Arc<PathPolicy>) -> Self {
        Self {
            name: "file",
            aliases: &["filesystem"],
            default_format: OutputFormat::Parquet,
            paths,
        }
    }

    fn options(&self, ctx: &SinkContext) -> ConnectorResult<SinkOptions> {
        SinkOptions::parse_sink(
            &ctx.options,
            &ctx.schema,
            &ctx.time_columns,
            self.default_format,
        )
    }
}

impl SinkConnector for FileSinkConnector {
    fn name(&self) -> &'static str {
        self.name
    }

    fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }

    fn validate(&self, ctx: &SinkContext) -> ConnectorResult<()> {
        let options = self.options(ctx)?;
        self.paths.check_new(Path::new(&options.path))?;
        check_encodable(&ctx.schema, &Encoding::of(&options))
    }

    fn open(&self, ctx: SinkContext) -> ConnectorResult<Box<dyn SinkWriter>> {
        let options = self.options(&ctx)?;
        let root = self.paths.check_new(Path::new(&options.path))?;
        Ok(Box::new(PartitionedWriter::new(
            root,
            ctx.schema,
            options,
            ctx.metrics,
            ctx.exactly_once,
        )?))
    }

    /// The folder's `_SUCCESS`: written when the input ended, removed when a writer opens.
    fn completed(&self, ctx: &SinkContext) -> bool {
        self.options(ctx)
            .and_then(|o| self.paths.check_new(Path::new(&o.path)))
            .is_ok_and(|root| root.join(SUCCESS_FILE).is_file())
    }

    fn open_file(
        &self,
        ctx: SinkContext,
        path: &str,
    ) -> Option<ConnectorResult<Box<dyn SinkWriter>>> {
        let open = || -> ConnectorResult<Box<dyn SinkWriter>> {
            let default = Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .and_then(OutputFormat::from_name)
                .unwrap_or(self.default_format);
            let options = SinkOptions::parse_copy(&ctx.options, path, default)?;
            let resolved = self.paths.check_new(Path::new(path))?;
            check_encodable(&ctx.schema, &Encoding::of(&options))?;
            Ok(Box::new(SingleFileWriter::new(
                resolved,
                ctx.schema,
                &options,
                ctx.metrics,
            )?))
        };
        Some(open())
    }
}
