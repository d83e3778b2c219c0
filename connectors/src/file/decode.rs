//! From decoded fields to batches of exactly the declared schema.
//!
//! Text formats (CSV, JSON lines) collect each row's fields as strings in a
//! [`TextBatchBuilder`]; Parquet hands over its own columns. Either way [`conform`] casts each
//! column to its declared type with Arrow's *safe* cast kernels and treats a value that was
//! present but did not survive the cast (`abc` for a BIGINT, a bad timestamp) — or a NULL in a
//! NOT NULL column — as a malformed row: it is handed to the [`SourceMetrics`] with its
//! position, its reason and (for dead letters) its raw text, and filtered out. What happens to
//! it then is the source's `format.on-error`: only `'fail'` fails the stream.
//!
//! # Rows a restored reader passes again
//! A reader restored from a checkpoint decodes the rows the checkpoint already covers again
//! (to find where to start) and drops them. A malformed row among them — one followed by a
//! well-formed row the checkpoint covers — was recorded by the run that took the checkpoint,
//! so it is reported as replayed ([`SourceMetrics::replayed_malformed_row`]): counted, not
//! sent to the dead-letter table twice.
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
use eddy_engine::connector::{
    ConnectorError, ConnectorResult, MalformedRow, OnError, SourceMetrics,
};

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
    /// A 1-based line number (text formats): `file:line`.
    Line,
    /// A 1-based row number (Parquet): `file:row n`.
    Row,
    /// A Kafka offset, the "file" being `topic/partition`: `topic/partition@offset`.
    Offset,
}

impl RowOrigin {
    /// The position of row `position` of `file`, as messages and dead letters show it.
    pub(crate) fn describe(self, file: &str, position: u64) -> String {
        match self {
            RowOrigin::Line => format!("{file}:{position}"),
            RowOrigin::Row => format!("{file}:row {position}"),
            RowOrigin::Offset => format!("{file}@{position}"),
        }
    }
}

/// The raw bytes of a batch's rows, for dead letters.
pub(crate) enum RawRows<'a> {
    /// Not kept (the source does not send dead letters).
    None,
    /// Row `r` is `data[offsets[r]..offsets[r + 1]]` (text formats).
    Text {
        data: &'a [u8],
        offsets: &'a [usize],
    },
    /// The decoded values, rendered as a JSON object (Parquet, which has no row text).
    Values,
}

/// Where a batch's rows come from, for malformed-row reports.
pub(crate) struct RowPositions<'a> {
    pub file: &'a str,
    pub origin: RowOrigin,
    /// One position per row of the batch.
    pub positions: &'a [u64],
    pub raw: RawRows<'a>,
    /// How many of the batch's well-formed rows (from its first) a restored checkpoint
    /// already covers: a malformed row before the last of them is replayed.
    pub covered: u64,
}

impl RowPositions<'_> {
    fn position(&self, row: usize) -> String {
        let position = self.positions.get(row).copied().unwrap_or(0);
        self.origin.describe(self.file, position)
    }
}

/// Reports a malformed row found before its fields reached a builder (bad JSON, a wrong field
/// count, invalid UTF-8); `replayed` when a restored checkpoint already covers it.
pub(crate) fn report_malformed(
    metrics: &SourceMetrics,
    replayed: bool,
    row: impl FnOnce() -> MalformedRow,
) -> ConnectorResult<()> {
    if replayed {
        metrics.replayed_malformed_row(row)
    } else {
        metrics.malformed_row(row)
    }
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
    let mut good_before = 0u64;
    for (row, is_bad) in bad.iter().enumerate() {
        if is_bad != Some(true) {
            good_before += 1;
            continue;
        }
        let replayed = good_before < at.covered;
        report_malformed(metrics, replayed, || {
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
            let raw = match &at.raw {
                RawRows::None => None,
                RawRows::Text { data, offsets } => offsets
                    .get(row..row + 2)
                    .and_then(|o| data.get(o[0]..o[1]))
                    .map(<[u8]>::to_vec),
                RawRows::Values => Some(values_as_json(schema, &inputs, row).into_bytes()),
            };
            MalformedRow {
                position: at.position(row),
                reason,
                raw,
            }
        })?;
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

/// Row `row` of `inputs` (the values as read, before the casts) as a JSON object keyed by the
/// declared column names: numbers and booleans as such, anything else as text.
fn values_as_json(schema: &SchemaRef, inputs: &[ArrayRef], row: usize) -> String {
    let mut object = serde_json::Map::new();
    for (input, field) in inputs.iter().zip(schema.fields()) {
        let value = if input.is_null(row) {
            serde_json::Value::Null
        } else {
            let text = array_value_to_string(input, row).unwrap_or_default();
            let literal = input.data_type().is_numeric() || input.data_type() == &DataType::Boolean;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)))
                    if literal =>
                {
                    value
                }
                _ => serde_json::Value::String(text),
            }
        };
        object.insert(field.name().clone(), value);
    }
    serde_json::Value::Object(object).to_string()
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
    origin: RowOrigin,
    string_columns: Vec<bool>,
    builders: Vec<StringBuilder>,
    lines: Vec<u64>,
    /// The pushed rows' raw bytes, when the source keeps them for dead letters: row `r` is
    /// `raw[raw_offsets[r]..raw_offsets[r + 1]]`.
    raw: Option<(Vec<u8>, Vec<usize>)>,
    /// Well-formed rows a restored checkpoint still covers, from the next one produced.
    covered: u64,
    batches: Vec<RecordBatch>,
}

impl<'a> TextBatchBuilder<'a> {
    /// A builder for rows of `file`, whose first `covered` well-formed rows a restored
    /// checkpoint already covers.
    pub(crate) fn new(config: &'a DecodeConfig, file: &'a str, covered: u64) -> Self {
        let fields = config.schema.fields();
        Self {
            config,
            file,
            origin: RowOrigin::Line,
            string_columns: fields
                .iter()
                .map(|f| is_string_type(f.data_type()))
                .collect(),
            builders: fields.iter().map(|_| StringBuilder::new()).collect(),
            lines: Vec::new(),
            raw: config.metrics.keeps_raw().then(|| (Vec::new(), vec![0])),
            covered,
            batches: Vec::new(),
        }
    }

    /// Rows are numbered by `origin` (Kafka's offsets), not by line.
    pub(crate) fn with_origin(mut self, origin: RowOrigin) -> Self {
        self.origin = origin;
        self
    }

    pub(crate) fn columns(&self) -> usize {
        self.builders.len()
    }

    pub(crate) fn file(&self) -> &'a str {
        self.file
    }

    /// Reports a row that could not even be split into fields; `raw` is its text (`None` for
    /// a Kafka message without a value).
    pub(crate) fn malformed(
        &mut self,
        line: u64,
        reason: &str,
        raw: Option<&[u8]>,
    ) -> ConnectorResult<()> {
        let metrics = &self.config.metrics;
        if metrics.on_error() != OnError::Skip || metrics.malformed() == 0 {
            // Rows are reported in order (the first one is kept, 'fail' fails at the first
            // one, dead letters keep the input's order, and whether a row is replayed depends
            // on the well-formed rows before it): the rows before this one, whose values are
            // checked when the batch is built, must be checked first.
            self.flush()?;
        }
        let keep_raw = self.raw.is_some();
        let (file, origin) = (self.file, self.origin);
        report_malformed(metrics, self.covered > 0, || MalformedRow {
            position: origin.describe(file, line),
            reason: reason.to_string(),
            raw: raw.filter(|_| keep_raw).map(<[u8]>::to_vec),
        })
    }

    /// Appends one row; `fields` must yield exactly one value per declared column (`None` is
    /// NULL); `raw` is the row's text. Applies the module's NULL rule.
    pub(crate) fn push_row<'s>(
        &mut self,
        line: u64,
        raw: &[u8],
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
        if let Some((data, offsets)) = &mut self.raw {
            data.extend_from_slice(raw);
            offsets.push(data.len());
        }
        self.lines.push(line);
        if self.lines.len() >= self.config.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends a batch decoded elsewhere (with the builder's schema, all rows well-formed),
    /// after the rows pushed so far.
    pub(crate) fn push_batch(&mut self, batch: RecordBatch) -> ConnectorResult<()> {
        self.flush()?;
        self.covered = self.covered.saturating_sub(batch.num_rows() as u64);
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
            origin: self.origin,
            positions: &self.lines,
            raw: match &self.raw {
                Some((data, offsets)) => RawRows::Text { data, offsets },
                None => RawRows::None,
            },
            covered: self.covered,
        };
        let batch = conform(&self.config.schema, inputs, &at, &self.config.metrics)?;
        self.lines.clear();
        if let Some((data, offsets)) = &mut self.raw {
            data.clear();
            offsets.truncate(1);
        }
        self.covered = self.covered.saturating_sub(batch.num_rows() as u64);
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
