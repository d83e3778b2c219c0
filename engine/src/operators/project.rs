//! `ProjectOperator`: computes the output columns from each input row.
//!
//! Emits final rows; stateless; forwards watermarks unchanged.

use std::sync::Arc;

use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::EngineResult;

pub struct ProjectOperator {
    info: OperatorInfo,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl ProjectOperator {
    pub fn new(info: OperatorInfo, exprs: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        Self { info, exprs }
    }
}

impl Operator for ProjectOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let n = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(n))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        out.batch(RecordBatch::try_new_with_options(
            Arc::clone(&self.info.schema),
            columns,
            &options,
        )?);
        Ok(())
    }
}
