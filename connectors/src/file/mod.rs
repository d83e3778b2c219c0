//! The `file` source connector (Flink's `filesystem`): CSV, JSON lines or Parquet files.
//!
//! ```sql
//! CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP(3), ...)
//! WITH (connector = 'file', path = 'data/bids.csv', format = 'csv', header = 'true');
//! ```
//!
//! # Options
//! - `path` (required): a file, a folder (its regular files, not recursively, sorted by name;
//!   hidden files and names starting with `_`, such as a sink's `_SUCCESS`, skipped) or a glob
//!   (`data/*.csv`). Relative paths are relative to the
//!   server's current directory. A path without glob characters must exist when the source is
//!   created; a glob or folder may match nothing yet.
//! - `format`: `csv`, `json` (JSON lines; also `json-lines`, `jsonl`, `ndjson`) or `parquet`.
//!   Default: from the extension of the file, of the glob (`*.csv`), or of the files found
//!   (`.csv`, `.json`/`.jsonl`/`.ndjson`, `.parquet`/`.pq`, all the same), else an error.
//! - `follow`: `'true'` makes the source unbounded: after reading everything it polls every
//!   200 ms for new files and for complete lines appended to files already read.
//! - CSV only: `header` (`'true'` skips the first record of every file; default `'false'`;
//!   alias `csv.ignore-first-line`), `delimiter` (one ASCII character or `\t`, default `,`;
//!   alias `csv.field-delimiter`), `null_value` (alias `csv.null-literal`; see below), `quote`
//!   (default `"`, `''` turns quoting off; alias `csv.quote-character`).
//!
//! Any other key is an error that lists the accepted ones.
//!
//! # Rows
//! CSV columns are matched by position, JSON fields and Parquet columns by name. The NULL rule
//! for text: a field is NULL if it is a missing or `null` JSON field; or, when `null_value` is
//! given, if it equals `null_value` exactly (in any column, strings included); or, in a
//! non-string column, if it is empty or blank. Without `null_value` an empty CSV field in a
//! VARCHAR column is the empty string. The `decode` module documents the value syntax.
//!
//! A malformed row (wrong field count, invalid JSON, a value that does not parse as its
//! column's type, NULL in a NOT NULL column) is skipped and counted in the source's metrics as
//! `file:line: reason`; it never fails the stream. Empty lines are skipped silently. I/O
//! errors (a file vanished mid-read, a corrupt Parquet file) and a Parquet file lacking a
//! declared column do fail the stream.
//!
//! # Restarting from a checkpoint
//! The source is not splittable (one reader). A reader opened with a `start_row` produces the
//! rows after the first `start_row` ones, counted in the order it produces them (sorted
//! listing; malformed rows do not count): Parquet skips them by metadata when no row can be
//! malformed, otherwise they are decoded and dropped (see the `scan` module).

pub(crate) mod csv;
mod csv_fast;
pub(crate) mod decode;
mod json;
mod listing;
pub(crate) mod options;
mod parquet;
mod scan;
mod text;
mod timestamp_text;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use eddy_engine::connector::{
    ConnectorError, ConnectorOptions, ConnectorResult, SourceConnector, SourceContext, SourceReader,
};
use eddy_engine::paths::PathPolicy;
use futures::StreamExt;

use self::csv::CsvDecoder;
use self::csv_fast::FastCsv;
use self::decode::{DecodeConfig, check_supported};
use self::json::JsonDecoder;
use self::listing::PathSpec;
use self::options::{FileFormat, FileOptions};
use self::scan::{FileScan, ScanConfig};
use self::text::TextDecoder;

/// The `file` source connector (alias `filesystem`).
#[derive(Debug, Clone, Default)]
pub struct FileConnector {
    /// The directories sources may read; the default allows every path.
    paths: Arc<PathPolicy>,
}

/// Options, path and format of a source, checked.
struct Resolved {
    options: FileOptions,
    spec: PathSpec,
    format: FileFormat,
}

impl FileConnector {
    /// A connector that reads only where `paths` allows.
    pub fn new(paths: Arc<PathPolicy>) -> Self {
        Self { paths }
    }

    fn resolve(&self, schema: &SchemaRef, raw: &ConnectorOptions) -> ConnectorResult<Resolved> {
        let options = FileOptions::parse(raw)?;
        if schema.fields().is_empty() {
            return Err(ConnectorError::InvalidOption(
                "a file source needs its columns declared: CREATE SOURCE name (col TYPE, ...) \
                 WITH (connector = 'file', ...)"
                    .to_string(),
            ));
        }
        PathSpec::check_base(&options.path, &self.paths)?;
        let spec = PathSpec::parse(&options.path)?;
        let format = match options.format.or_else(|| spec.format_hint()) {
            Some(format) => format,
            None => infer_format(&options.path, &spec, &self.paths)?,
        };
        options.check_format(format, raw)?;
        check_supported(schema, format)?;
        Ok(Resolved {
            options,
            spec,
            format,
        })
    }
}

/// The format of the files a folder or glob matches now, if they all have the same known
/// extension.
fn infer_format(path: &str, spec: &PathSpec, paths: &PathPolicy) -> ConnectorResult<FileFormat> {
    let files = spec.list_allowed(paths)?;
    let mut formats = files.iter().map(|f| FileFormat::from_extension(&f.path));
    let first = formats.next().flatten();
    match first {
        Some(format) if formats.all(|f| f == Some(format)) => Ok(format),
        _ => Err(ConnectorError::InvalidOption(format!(
            "cannot infer the format of path '{path}' from file extensions; \
             set format = 'csv', 'json' or 'parquet'"
        ))),
    }
}

impl SourceConnector for FileConnector {
    fn name(&self) -> &'static str {
        "file"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["filesystem"]
    }

    fn validate(&self, schema: &SchemaRef, options: &ConnectorOptions) -> ConnectorResult<()> {
        let resolved = self.resolve(schema, options)?;
        let files = resolved.spec.list_allowed(&self.paths)?;
        if resolved.format == FileFormat::Parquet {
            // Catch a column the data lacks now rather than at the first query.
            if let Some(first) = files.first() {
                let config = DecodeConfig {
                    schema: Arc::clone(schema),
                    null_value: None,
                    metrics: Default::default(),
                    batch_size: 1,
                };
                parquet::check_file(&first.path, &config)?;
            }
        }
        Ok(())
    }

    fn open(&self, ctx: SourceContext) -> ConnectorResult<SourceReader> {
        let Resolved {
            options,
            spec,
            format,
        } = self.resolve(&ctx.schema, &ctx.options)?;
        // Only the columns the query reads are decoded (CSV by position, JSON and Parquet by
        // name).
        let schema = ctx.output_schema()?;
        let decoder = match format {
            FileFormat::Csv => {
                let fast = FastCsv::try_new(
                    Arc::clone(&ctx.schema),
                    ctx.projection.clone(),
                    options.csv.delimiter,
                    options.csv.quote,
                    options.csv.null_value.as_deref(),
                    ctx.batch_size,
                );
                let csv = CsvDecoder::new(&options.csv).with_fast_path(fast);
                Some(TextDecoder::Csv(match &ctx.projection {
                    Some(columns) => {
                        csv.with_projection(ctx.schema.fields().len(), columns.clone())
                    }
                    None => csv,
                }))
            }
            FileFormat::Json => Some(TextDecoder::Json(JsonDecoder::new(
                schema.fields().iter().map(|f| f.name().clone()),
            ))),
            FileFormat::Parquet => None,
        };
        let null_value = match format {
            FileFormat::Csv => options.csv.null_value.clone(),
            FileFormat::Json | FileFormat::Parquet => None,
        };
        let follow = options.follow;
        let scan = FileScan::new(ScanConfig {
            spec,
            paths: Arc::clone(&self.paths),
            format,
            decoder,
            decode: DecodeConfig {
                schema,
                null_value,
                metrics: ctx.metrics,
                batch_size: ctx.batch_size.max(1),
            },
            csv_header: format == FileFormat::Csv && options.csv.header,
            follow,
            start_row: ctx.start_row,
            decode_threads: ctx.parallelism.max(1),
        });
        let stream = futures::stream::unfold(scan, |mut scan| async move {
            let item = scan.next_batch().await?;
            Some((item, scan))
        })
        .boxed();
        Ok(SourceReader {
            stream,
            bounded: !follow,
            position: None,
            partitions: None,
        })
    }
}
