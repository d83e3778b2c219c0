//! From decoded fields to batches of exactly the declared schema.
//!
//! Text formats (CSV, JSON lines) collect each row's fields as strings in a
//! [`TextBatchBuilder`]; Parquet hands over its own columns. Either way [`conform`] casts each
//! column to its declared type with Arrow's *safe* cast kernels and treats a value that was
//! present but did not survive the cast (`abc` for a BIGINT, a bad timestamp) — or a NULL in a
//! NOT NULL column — as a malformed row: it is counted in the [`SourceMetrics`] with its file
//! and line and filtered out. Decoding never fails the stream because of a row's content.
//!
//! # NULL rule for text
//! A field becomes SQL NULL when
//! 1. it is a JSON `null` or a JSON field that is missing, or
//! 2. `null_value` is given (CSV only) and the field equals it exactly (before trimming), in any
//!    column — with `null_value = ''` an empty field is NULL even in a VARCHAR column, or
//! 3. the column is not a string column and the field is empty or only whitespace.
//!
//! Otherwise a string column keeps the field verbatim (an empty field is the empty string) and
//! any other column parses the field with surrounding whitespace trimmed. Timestamps accept
//! `2023-05-06T16:51:00` and `2023-05-06 16:51:00`, optional fractional seconds and an optional
//! offset; booleans accept `true`/`false`, `t`/`f`, `yes`/`no`, `on`/`off` and `1`/`0`, in any case.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringBuilder, new_null_array};
use datafusion::arrow::compute::{
    CastOptions, FilterBuilder, and, can_cast_types, cast_with_options, concat, is_not_null,
    is_null, not, or,
};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use eddy_engine::connector::{ConnectorError, ConnectorResult, SourceMetrics};

use super::options::FileFormat;

/// What decoding needs to know about the source, shared by all its files.
#[derive(Debug)]
pub(crate) struct DecodeConfig {
    pub schema: SchemaRef,
    /// The CSV `null_value`, if given (always `None` for other formats).
    pub null_value: Option<String>,
    pub metrics: Arc<SourceMetrics>,
    /// Rows per batch, at least 1.
    pub batch_size: usize,
}

/// Longest value quoted in full in a malformed-row message.
const MAX_VALUE_CHARS: usize = 80;

/// How a row's position in its file is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowOrigin {
    /// A 1-based line number (text formats).
    Line,
    /// A 1-based row number (Parquet).
    Row,
}

/// Where a batch's rows come from, for malformed-row messages.
pub(crate) struct RowPositions<'a> {
    pub file: &'a str,
    pub origin: RowOrigin,
    /// One position per row of the batch.
    pub positions: &'a [u64],
}

impl RowPositions<'_> {
    fn describe(&self, row: usize, reason: &str) -> String {
        let position = self.positions.get(row).copied().unwrap_or(0);
        match self.origin {
            RowOrigin::Line => format!("{}:{position}: {reason}", self.file),
            RowOrigin::Row => format!("{}: row {position}: {reason}", self.file),
        }
    }
}

/// Records a malformed row found before its fields reached a builder (bad JSON, a wrong field
/// count, invalid UTF-8).
pub(crate) fn report_malformed(metrics: &SourceMetrics, file: &str, line: u64, reason: &str) {
    metrics.add_malformed(|| format!("{file}:{line}: {reason}"));
}

/// Checks that the decoder can produce every declared column from `format`.
pub(crate) fn check_supported(schema: &SchemaRef, format: FileFormat) -> ConnectorResult<()> {
    for field in schema.fields() {
        if !supported(field.data_type(), format) {
            let binary = if format == FileFormat::Parquet {
                ", BYTEA"
            } else {
                " (BYTEA needs format 'parquet')"
            };
            return Err(ConnectorError::Unsupported(format!(
                "column '{}' has type {}, which the file connector cannot read from {} files; \
                 supported types: integers, REAL/DOUBLE, DECIMAL, BOOLEAN, VARCHAR, DATE, TIME, \
                 TIMESTAMP [WITH TIME ZONE]{binary}",
                field.name(),
                field.data_type(),
                format.name()
            )));
        }
    }
    Ok(())
}

fn supported(data_type: &DataType, format: FileFormat) -> bool {
    use DataType::*;
    let listed = match data_type {
        Boolean
        | Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Float16
        | Float32
        | Float64
        | Decimal32(_, _)
        | Decimal64(_, _)
        | Decimal128(_, _)
        | Decimal256(_, _)
        | Utf8
        | LargeUtf8
        | Utf8View
        | Date32
        | Date64
        | Time32(_)
        | Time64(_)
        | Timestamp(_, _) => true,
        Binary | LargeBinary | BinaryView => format == FileFormat::Parquet,
        _ => false,
    };
    listed && (format == FileFormat::Parquet || can_cast_types(&Utf8, data_type))
}

pub(crate) fn is_string_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Casts `inputs` (one array per declared column, in order) to the declared schema, drops and
/// counts the malformed rows, and returns what is left (possibly no rows).
pub(crate) fn conform(
    schema: &SchemaRef,
    inputs: Vec<ArrayRef>,
    at: &RowPositions<'_>,
    metrics: &SourceMetrics,
) -> ConnectorResult<RecordBatch> {
    let mut outputs = Vec::with_capacity(inputs.len());
    let mut bad_by_column: Vec<Option<BooleanArray>> = Vec::with_capacity(inputs.len());
    let mut bad: Option<BooleanArray> = None;
    for (input, field) in inputs.iter().zip(schema.fields()) {
        let output = cast_column(input, field.data_type())?;
        let column_bad = if field.is_nullable() {
            and(&is_not_null(input)?, &is_null(&output)?)?
        } else {
            is_null(&output)?
        };
        if column_bad.true_count() > 0 {
            bad = Some(match bad {
                Some(acc) => or(&acc, &column_bad)?,
                None => column_bad.clone(),
            });
            bad_by_column.push(Some(column_bad));
        } else {
            bad_by_column.push(None);
        }
        outputs.push(output);
    }
    let Some(bad) = bad else {
        return Ok(RecordBatch::try_new(Arc::clone(schema), outputs)?);
    };
    for row in bad.iter().enumerate().filter_map(|(r, b)| b?.then_some(r)) {
        metrics.add_malformed(|| {
            let reason = inputs
                .iter()
                .zip(schema.fields())
                .zip(&bad_by_column)
                .find_map(|((input, field), column_bad)| {
                    column_bad
                        .as_ref()?
                        .value(row)
                        .then(|| malformed_reason(input, field, row))
                })
                .unwrap_or_else(|| "malformed row".to_string());
            at.describe(row, &reason)
        });
    }
    // Filter column by column: a NOT NULL column may still hold NULLs in the rows dropped here,
    // so no batch with the declared schema can exist before the filter.
    let keep = FilterBuilder::new(&not(&bad)?).optimize().build();
    let kept = outputs
        .iter()
        .map(|column| keep.filter(column))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), kept)?)
}

fn malformed_reason(input: &ArrayRef, field: &Field, row: usize) -> String {
    if input.is_null(row) {
        return format!(
            "column '{}' is NOT NULL but the value is missing",
            field.name()
        );
    }
    let mut value = array_value_to_string(input, row).unwrap_or_default();
    if let Some((cut, _)) = value.char_indices().nth(MAX_VALUE_CHARS) {
        value.truncate(cut);
        value.push_str("...");
    }
    format!(
        "column '{}': cannot read '{}' as {}",
        field.name(),
        value,
        field.data_type()
    )
}

/// Casts with NULL for values that do not convert. Should a kernel still fail as a whole, the
/// column is cast row by row so that only the offending rows become NULL (and malformed).
fn cast_column(input: &ArrayRef, target: &DataType) -> ConnectorResult<ArrayRef> {
    if input.data_type() == target {
        return Ok(Arc::clone(input));
    }
    let options = CastOptions::default();
    if let Ok(output) = cast_with_options(input, target, &options) {
        return Ok(output);
    }
    let rows: Vec<ArrayRef> = (0..input.len())
        .map(|row| {
            cast_with_options(&input.slice(row, 1), target, &options)
                .unwrap_or_else(|_| new_null_array(target, 1))
        })
        .collect();
    if rows.is_empty() {
        return Ok(new_null_array(target, 0));
    }
    let refs: Vec<&dyn Array> = rows.iter().map(|a| a.as_ref()).collect();
    Ok(concat(&refs)?)
}

/// Collects text rows column by column and turns every `batch_size` of them into a batch.
pub(crate) struct TextBatchBuilder<'a> {
    config: &'a DecodeConfig,
    file: &'a str,
    string_columns: Vec<bool>,
    builders: Vec<StringBuilder>,
    lines: Vec<u64>,
    batches: Vec<RecordBatch>,
}

impl<'a> TextBatchBuilder<'a> {
    pub(crate) fn new(config: &'a DecodeConfig, file: &'a str) -> Self {
        let fields = config.schema.fields();
        Self {
            config,
            file,
            string_columns: fields
                .iter()
                .map(|f| is_string_type(f.data_type()))
                .collect(),
            builders: fields.iter().map(|_| StringBuilder::new()).collect(),
            lines: Vec::new(),
            batches: Vec::new(),
        }
    }

    pub(crate) fn columns(&self) -> usize {
        self.builders.len()
    }

    pub(crate) fn file(&self) -> &'a str {
        self.file
    }

    /// Counts a row that could not even be split into fields.
    pub(crate) fn malformed(&mut self, line: u64, reason: &str) -> ConnectorResult<()> {
        if self.config.metrics.malformed() == 0 {
            // Only the first message is kept: the rows before this one, whose values are
            // checked when the batch is built, must be checked first.
            self.flush()?;
        }
        report_malformed(&self.config.metrics, self.file, line, reason);
        Ok(())
    }

    /// Appends one row; `fields` must yield exactly one value per declared column (`None` is
    /// NULL). Applies the module's NULL rule.
    pub(crate) fn push_row<'s>(
        &mut self,
        line: u64,
        fields: impl IntoIterator<Item = Option<&'s str>>,
    ) -> ConnectorResult<()> {
        let null_value = self.config.null_value.as_deref();
        for ((builder, is_string), field) in self
            .builders
            .iter_mut()
            .zip(&self.string_columns)
            .zip(fields)
        {
            match field {
                None => builder.append_null(),
                Some(text) if Some(text) == null_value => builder.append_null(),
                Some(text) if *is_string => builder.append_value(text),
                Some(text) => match text.trim() {
                    "" => builder.append_null(),
                    trimmed => builder.append_value(trimmed),
                },
            }
        }
        self.lines.push(line);
        if self.lines.len() >= self.config.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends a batch decoded elsewhere (with the builder's schema), after the rows pushed so
    /// far.
    pub(crate) fn push_batch(&mut self, batch: RecordBatch) -> ConnectorResult<()> {
        self.flush()?;
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
        Ok(())
    }

    /// Turns the rows collected so far into a batch.
    fn flush(&mut self) -> ConnectorResult<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let inputs: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let at = RowPositions {
            file: self.file,
            origin: RowOrigin::Line,
            positions: &self.lines,
        };
        let batch = conform(&self.config.schema, inputs, &at, &self.config.metrics)?;
        self.lines.clear();
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
        Ok(())
    }

    /// The batches of every row pushed.
    pub(crate) fn finish(mut self) -> ConnectorResult<Vec<RecordBatch>> {
        self.flush()?;
        Ok(self.batches)
    }
}
