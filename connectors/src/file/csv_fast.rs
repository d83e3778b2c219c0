//! The fast path for CSV: Arrow's own CSV decoder, for regions it decodes exactly as the
//! row path ([`super::csv`]) would.
//!
//! Arrow's decoder parses fields straight into typed columns (no per-field string copy and
//! cast), which is how DataFusion reads CSV. It has no notion of a malformed row: one bad
//! field fails the whole region. So a region is first tried here, and on any error it is
//! decoded again by the row path, which keeps the good rows and reports the bad ones with
//! their lines. Rows are identical either way: the fast path is used only for column types
//! whose Arrow parsers are the ones the row path's cast kernels use (integers, floats, dates,
//! timestamps without time zone, strings), without `null_value`, with a quote character, and
//! for regions that hold no quote character (so every record ends at a line break) and no
//! header. Timestamp columns are read as text by Arrow's decoder and parsed by
//! [`super::timestamp_text`] (Arrow's own parser for the values it declines), which gives
//! Arrow's values at a fraction of the cost. Empty fields are NULL in Arrow's decoder; in a string column the row path keeps
//! them as empty strings, so the fast path drops string columns' null masks (the value bytes
//! of such a slot are already empty). A NULL in a NOT NULL column is malformed: the region
//! goes to the row path.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use super::timestamp_text;

/// Arrow's CSV decoder, set up for one source.
#[derive(Debug)]
pub(crate) struct FastCsv {
    /// The declared schema with timestamp columns as text: Arrow's decoder reads records with
    /// it (and checks every record's field count against it).
    text: SchemaRef,
    projection: Option<Vec<usize>>,
    /// The batches' schema: the declared one, projected.
    output: SchemaRef,
    delimiter: u8,
    quote: u8,
    batch_size: usize,
}

impl FastCsv {
    /// The fast path for this source, or `None` when some row could come out differently.
    pub(crate) fn try_new(
        declared: SchemaRef,
        projection: Option<Vec<usize>>,
        delimiter: u8,
        quote: Option<u8>,
        null_value: Option<&str>,
        batch_size: usize,
    ) -> Option<Self> {
        let quote = quote?;
        if null_value.is_some() {
            return None;
        }
        let output = match &projection {
            Some(columns) => Arc::new(declared.project(columns).ok()?),
            None => Arc::clone(&declared),
        };
        if !output.fields().iter().all(|f| same_parse(f.data_type())) {
            return None;
        }
        let text = Arc::new(Schema::new(
            declared
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Timestamp(_, None) => {
                        Arc::new(Field::new(f.name(), DataType::Utf8, f.is_nullable()))
                    }
                    _ => Arc::clone(f),
                })
                .collect::<Vec<_>>(),
        ));
        Some(Self {
            text,
            projection,
            output,
            delimiter,
            quote,
            batch_size: batch_size.max(1),
        })
    }

    /// Whether the fast path may try `region`.
    pub(crate) fn accepts(&self, region: &[u8], header_pending: bool) -> bool {
        !header_pending && !region.contains(&self.quote)
    }

    /// Decodes every record of `region` (which ends at a line break unless `last`), or fails
    /// if any record cannot be decoded as is.
    pub(crate) fn decode(&self, region: &[u8]) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut builder = ReaderBuilder::new(Arc::clone(&self.text))
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
            .with_batch_size(self.batch_size);
        if let Some(columns) = &self.projection {
            builder = builder.with_projection(columns.clone());
        }
        let mut decoder = builder.build_decoder();
        let mut batches = Vec::new();
        let mut rest = region;
        loop {
            let consumed = decoder.decode(rest)?;
            rest = &rest[consumed..];
            if decoder.capacity() == 0 {
                if let Some(batch) = decoder.flush()? {
                    batches.push(self.conform(batch)?);
                }
                continue;
            }
            if rest.is_empty() {
                // An empty input tells the decoder the input ended (a last record may lack
                // its line break).
                decoder.decode(&[])?;
                if let Some(batch) = decoder.flush()? {
                    batches.push(self.conform(batch)?);
                }
                return Ok(batches);
            }
        }
    }

    /// Applies the row path's NULL rule to a decoded batch.
    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (column, field) in batch.columns().iter().zip(self.output.fields()) {
            let column = match field.data_type() {
                DataType::Utf8 if column.null_count() > 0 => {
                    let strings = column
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| ArrowError::CastError("expected strings".into()))?;
                    let (offsets, values, _) = strings.clone().into_parts();
                    Arc::new(StringArray::try_new(offsets, values, None)?) as ArrayRef
                }
                // A timestamp's text is NULL exactly where its value will be.
                _ if !field.is_nullable() && column.null_count() > 0 => {
                    return Err(ArrowError::InvalidArgumentError(format!(
                        "NULL in NOT NULL column {}",
                        field.name()
                    )));
                }
                DataType::Timestamp(unit, None) => timestamp_text::parse_column(column, *unit)?,
                _ => Arc::clone(column),
            };
            columns.push(column);
        }
        RecordBatch::try_new(Arc::clone(&self.output), columns)
    }
}

/// Types whose Arrow CSV parser accepts exactly what the row path's cast accepts, giving the
/// same value.
fn same_parse(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Utf8
            | Date32
            | Timestamp(_, None)
    )
}
