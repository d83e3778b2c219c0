//! Parquet decoding: the declared columns of a Parquet file, by name, cast to their declared
//! types.
//!
//! Columns are matched by name (exactly, else ignoring ASCII case); only they are decoded. A
//! declared column the file lacks, or whose type cannot be cast to the declared one, is an
//! error when the file is opened. Values that do not survive the cast (an overflowing number)
//! make their row malformed, as for text formats; a Parquet row has no text of its own, so its
//! dead letter's `raw` is its values as read, rendered as a JSON object. Files are read with the synchronous reader,
//! one batch per call, so callers run [`ParquetCursor::next_batch`] on a blocking thread.
//!
//! A cursor can start after a number of rows (a source restored from a checkpoint): when no
//! row of the file can be malformed (every declared column has exactly the file's type and
//! admits its NULLs), the rows are skipped by the reader's row selection, which skips whole
//! row groups and pages by their metadata without decoding them. Otherwise the caller decodes
//! and drops them, since malformed rows do not count.

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use eddy_engine::connector::{ConnectorError, ConnectorResult};

use super::decode::{DecodeConfig, RawRows, RowOrigin, RowPositions, conform};

/// Reading position in one Parquet file.
pub(crate) struct ParquetCursor {
    reader: ParquetRecordBatchReader,
    /// For each declared column, its index in the reader's (projected) batches.
    columns: Vec<usize>,
    /// Rows read so far, to number rows in messages.
    rows_read: u64,
    /// Rows skipped without decoding when opened (all of them well-formed).
    skipped: u64,
}

impl ParquetCursor {
    /// Opens `path` and checks it has every declared column.
    pub(crate) fn open(path: &Path, config: &DecodeConfig) -> ConnectorResult<Self> {
        Self::open_at(path, config, 0)
    }

    /// Opens `path` to read after its first `skip` well-formed rows, skipping as many of them
    /// as it can without decoding ([`ParquetCursor::skipped`] says how many).
    pub(crate) fn open_at(path: &Path, config: &DecodeConfig, skip: u64) -> ConnectorResult<Self> {
        // The parquet crate panics on some corrupt footers (an overflowing sum of row-group
        // row counts, found by the parquet fuzz target): such a file is not readable.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_unguarded(path, config, skip)
        }))
        .unwrap_or_else(|payload| {
            Err(ConnectorError::Io(format!(
                "'{}' is not a readable Parquet file: corrupt metadata ({})",
                path.display(),
                eddy_engine::panics::panic_message(payload.as_ref())
            )))
        })
    }

    fn open_unguarded(path: &Path, config: &DecodeConfig, skip: u64) -> ConnectorResult<Self> {
        let file = File::open(path)
            .map_err(|e| ConnectorError::Io(format!("cannot open '{}': {e}", path.display())))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
            ConnectorError::Io(format!(
                "'{}' is not a readable Parquet file: {e}",
                path.display()
            ))
        })?;
        let file_schema = builder.schema().clone();
        let roots = resolve_columns(path, &file_schema, config)?;
        let mut projected: Vec<usize> = roots.clone();
        projected.sort_unstable();
        projected.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), projected.iter().copied());
        // Rows can be skipped unread only if none of them can be malformed: no cast that
        // might fail and no NULL where the declared column refuses it.
        let always_well_formed =
            roots
                .iter()
                .zip(config.schema.fields())
                .all(|(&root, declared)| {
                    let found = file_schema.field(root);
                    found.data_type() == declared.data_type()
                        && (declared.is_nullable() || !found.is_nullable())
                });
        let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let skipped = if always_well_formed {
            skip.min(total)
        } else {
            0
        };
        let mut builder = builder
            .with_projection(mask)
            .with_batch_size(config.batch_size);
        if skipped > 0 {
            let (Ok(skip_rows), Ok(rest)) =
                (usize::try_from(skipped), usize::try_from(total - skipped))
            else {
                return Err(ConnectorError::Io(format!(
                    "'{}' has too many rows",
                    path.display()
                )));
            };
            builder = builder.with_row_selection(RowSelection::from(vec![
                RowSelector::skip(skip_rows),
                RowSelector::select(rest),
            ]));
        }
        let reader = builder
            .build()
            .map_err(|e| ConnectorError::Io(format!("cannot read '{}': {e}", path.display())))?;
        // The projection keeps the file's column order; find each declared column in it.
        let columns = roots
            .iter()
            .map(|root| projected.iter().position(|p| p == root).unwrap_or(0))
            .collect();
        Ok(Self {
            reader,
            columns,
            rows_read: skipped,
            skipped,
        })
    }

    /// How many rows [`ParquetCursor::open_at`] skipped without decoding.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Decodes the next batch (up to `batch_size` rows, fewer once malformed rows are dropped);
    /// `None` at the end of the file.
    /// `covered`: how many well-formed rows from here a restored checkpoint already covers.
    pub(crate) fn next_batch(
        &mut self,
        file: &str,
        config: &DecodeConfig,
        covered: u64,
    ) -> ConnectorResult<Option<RecordBatch>> {
        // The parquet crate panics on some corrupt pages (e.g. "Decoder for dict should have
        // been set", found by the parquet fuzz target): a broken file fails its reader with an
        // error instead.
        let reader = &mut self.reader;
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next()))
            .map_err(|payload| {
                ConnectorError::Io(format!(
                    "cannot read '{file}': corrupt Parquet data ({})",
                    eddy_engine::panics::panic_message(payload.as_ref())
                ))
            })?;
        let Some(batch) = next else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| ConnectorError::Io(format!("cannot read '{file}': {e}")))?;
        let inputs: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = batch.num_rows() as u64;
        let positions: Vec<u64> = (self.rows_read + 1..=self.rows_read + rows).collect();
        self.rows_read += rows;
        let at = RowPositions {
            file,
            origin: RowOrigin::Row,
            positions: &positions,
            raw: if config.metrics.keeps_raw() {
                RawRows::Values
            } else {
                RawRows::None
            },
            covered,
        };
        conform(&config.schema, inputs, &at, &config.metrics).map(Some)
    }
}

/// The root column index in the file of each declared column.
fn resolve_columns(
    path: &Path,
    file_schema: &Schema,
    config: &DecodeConfig,
) -> ConnectorResult<Vec<usize>> {
    let fields = file_schema.fields();
    config
        .schema
        .fields()
        .iter()
        .map(|declared| {
            let name = declared.name();
            let index = fields
                .iter()
                .position(|f| f.name() == name)
                .or_else(|| {
                    fields
                        .iter()
                        .position(|f| f.name().eq_ignore_ascii_case(name))
                })
                .ok_or_else(|| {
                    let available: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                    ConnectorError::InvalidOption(format!(
                        "Parquet file '{}' has no column '{name}' (it has: {})",
                        path.display(),
                        available.join(", ")
                    ))
                })?;
            let found = fields[index].data_type();
            if !can_cast_types(found, declared.data_type()) {
                return Err(ConnectorError::Unsupported(format!(
                    "column '{name}' of Parquet file '{}' is {found}, which cannot be read as {}",
                    path.display(),
                    declared.data_type()
                )));
            }
            Ok(index)
        })
        .collect()
}

/// Checks that the Parquet file at `path` has the declared columns (used at `CREATE SOURCE`).
pub(crate) fn check_file(path: &Path, config: &DecodeConfig) -> ConnectorResult<()> {
    ParquetCursor::open(path, config).map(|_| ())
}
