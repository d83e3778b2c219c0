//! Pieces shared by the stream-stream join operators: join keys and building joined rows.
//!
//! Keys are encoded with Arrow's row format, so any key types compare byte-wise; a key with a
//! NULL in it never matches (SQL `=`). Joined rows are gathered from the stored batches of the
//! two sides by reference; a missing side (an outer join's padding) is filled with NULLs.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, new_null_array};
use datafusion::arrow::compute::{filter_record_batch, interleave};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{EngineError, EngineResult};

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    /// Left rows with a partner (`IN`, `EXISTS`).
    LeftSemi,
    /// Left rows without a partner (`NOT EXISTS`); `null_aware` gives `NOT IN`'s rule that a
    /// NULL on the right removes every row.
    LeftAnti {
        null_aware: bool,
    },
    RightSemi,
    RightAnti,
}

impl std::fmt::Display for JoinKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinKind::Inner => "Inner",
            JoinKind::Left => "Left",
            JoinKind::Right => "Right",
            JoinKind::Full => "Full",
            JoinKind::LeftSemi => "LeftSemi",
            JoinKind::LeftAnti { null_aware: false } => "LeftAnti",
            JoinKind::LeftAnti { null_aware: true } => "LeftAnti (NOT IN)",
            JoinKind::RightSemi => "RightSemi",
            JoinKind::RightAnti => "RightAnti",
        })
    }
}

impl JoinKind {
    /// Unmatched left rows are emitted, padded.
    pub fn pads_left(&self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Full)
    }

    /// Unmatched right rows are emitted, padded.
    pub fn pads_right(&self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Full)
    }
}

/// Encodes join keys; `None` for a row whose key has a NULL.
pub struct KeyEncoder {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
}

impl KeyEncoder {
    /// Keys from `exprs` of `types`; with no expressions every row has the same key.
    pub fn try_new(exprs: Vec<Arc<dyn PhysicalExpr>>, types: &[DataType]) -> EngineResult<Self> {
        let fields = if exprs.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            types.iter().map(|t| SortField::new(t.clone())).collect()
        };
        let converter = RowConverter::new(fields)?;
        Ok(Self { exprs, converter })
    }

    /// The encoded keys of a batch and, per row, whether the key is free of NULLs.
    pub fn encode(&self, batch: &RecordBatch) -> EngineResult<(Rows, Vec<bool>)> {
        let rows = batch.num_rows();
        let columns = if self.exprs.is_empty() {
            vec![Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef]
        } else {
            self.exprs
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
                .collect::<EngineResult<Vec<ArrayRef>>>()?
        };
        let valid = (0..rows)
            .map(|r| columns.iter().all(|c| c.is_valid(r)))
            .collect();
        Ok((self.converter.convert_columns(&columns)?, valid))
    }
}

/// One side's part of a joined row: (index into that side's batch list, row), or `None` for
/// NULL padding.
pub type RowRef = Option<(usize, usize)>;

/// The columns of `schema` for the referenced rows of `batches`.
pub fn gather(
    schema: &SchemaRef,
    batches: &[&RecordBatch],
    rows: &[RowRef],
) -> EngineResult<Vec<ArrayRef>> {
    let padding = batches.len();
    let indices: Vec<(usize, usize)> = rows.iter().map(|r| r.unwrap_or((padding, 0))).collect();
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let null = new_null_array(field.data_type(), 1);
            let mut sources: Vec<&dyn Array> =
                batches.iter().map(|b| b.column(i).as_ref()).collect();
            sources.push(null.as_ref());
            Ok(interleave(&sources, &indices)?)
        })
        .collect()
}

/// Evaluates a join's residual condition on joined rows (NULL counts as false).
pub fn residual_mask(
    residual: &Arc<dyn PhysicalExpr>,
    joined: &RecordBatch,
) -> EngineResult<BooleanArray> {
    let mask = residual.evaluate(joined)?.into_array(joined.num_rows())?;
    if mask.data_type() != &DataType::Boolean {
        return Err(EngineError::Internal(format!(
            "join condition returned {}",
            mask.data_type()
        )));
    }
    let mask = mask.as_boolean();
    Ok(mask.iter().map(|v| Some(v == Some(true))).collect())
}

/// Keeps the rows of `batch` where `mask` is true.
pub fn keep(batch: &RecordBatch, mask: &BooleanArray) -> EngineResult<RecordBatch> {
    Ok(filter_record_batch(batch, mask)?)
}
