//! `UnionOperator`: `UNION ALL` of several streams.
//!
//! Emits final rows in arrival order; stateless; its watermark is the minimum over its inputs
//! (the runtime computes that before calling `on_watermark`).

use std::sync::Arc;

use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::EngineResult;

pub struct UnionOperator {
    info: OperatorInfo,
}

impl UnionOperator {
    pub fn new(info: OperatorInfo) -> Self {
        Self { info }
    }
}

impl Operator for UnionOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        // Inputs agree on types but may name their columns differently.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.batch(RecordBatch::try_new_with_options(
            Arc::clone(&self.info.schema),
            batch.columns().to_vec(),
            &options,
        )?);
        Ok(())
    }
}
