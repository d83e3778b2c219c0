//! Streaming operators, one per module. Each implements the runtime's [`Operator`] trait
//! (`crate::runtime::operator`, re-exported here): the runtime drives them and knows none of
//! them; the builder (`crate::build`) is the one place that creates them.

pub use crate::runtime::operator::{Operator, OperatorContext, OperatorInfo, conform_batch};

pub mod accumulators;
pub mod changelog_normalize;
#[cfg(test)]
pub(crate) mod checkpoint_harness;
pub mod deduplicate;
pub mod filter;
pub mod interval_join;
pub mod join_rows;
pub mod lead;
pub mod limit;
pub mod lookup_join;
pub mod match_recognize;
pub mod over_aggregate;
pub mod processing_time;
pub mod project;
pub mod regular_join;
pub mod retractable_extreme;
pub mod session_window;
pub mod sink;
pub mod temporal_join;
pub mod top_n;
pub mod ttl;
pub mod union;
pub mod updating_aggregate;
pub mod window;
pub mod window_aggregate;
pub mod window_assign;
pub mod window_join;
pub mod window_top_n;

/// A row-format converter of every column of `schema` (rows held in state).
pub fn row_converter(
    schema: &datafusion::arrow::datatypes::Schema,
) -> crate::error::EngineResult<datafusion::arrow::row::RowConverter> {
    use datafusion::arrow::row::{RowConverter, SortField};
    Ok(RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )?)
}

/// Per row of a changelog batch (led by `__op`), whether it is an insert (`+`); every other
/// row is a delete.
pub fn changelog_inserts(
    batch: &datafusion::arrow::record_batch::RecordBatch,
) -> crate::error::EngineResult<Vec<bool>> {
    use datafusion::arrow::array::{Array, AsArray};
    let ops = batch.column(0).as_string_opt::<i32>().ok_or_else(|| {
        crate::error::EngineError::Internal("a changelog's op column is not text".to_string())
    })?;
    Ok((0..ops.len())
        .map(|r| ops.is_valid(r) && ops.value(r) == "+")
        .collect())
}
