//! `FilterOperator`: keeps the rows for which a predicate is true.
//!
//! Emits final rows (it never retracts); stateless; forwards watermarks unchanged.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};

pub struct FilterOperator {
    info: OperatorInfo,
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    pub fn new(info: OperatorInfo, predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self { info, predicate }
    }
}

/// Keeps the rows of `batch` where `predicate` is true (NULL counts as false).
pub fn filter_batch(
    predicate: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> EngineResult<RecordBatch> {
    let mask = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    if mask.data_type() != &DataType::Boolean {
        return Err(EngineError::Internal(format!(
            "filter predicate returned {}",
            mask.data_type()
        )));
    }
    Ok(filter_record_batch(batch, mask.as_boolean())?)
}

impl Operator for FilterOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        out.batch(filter_batch(&self.predicate, &batch)?);
        Ok(())
    }
}
