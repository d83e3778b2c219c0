//! `LimitOperator`: `LIMIT n [OFFSET m]` on a stream.
//!
//! Emits the first `n` rows after skipping `m`, then reports itself finished so the runtime
//! ends the query and frees its sources. State: two counters.

use datafusion::arrow::record_batch::RecordBatch;

use super::{Operator, OperatorInfo, Output};
use crate::error::EngineResult;

pub struct LimitOperator {
    info: OperatorInfo,
    skip: usize,
    /// Rows still to emit; `None` is no limit (only an OFFSET).
    remaining: Option<usize>,
}

impl LimitOperator {
    pub fn new(info: OperatorInfo, skip: usize, fetch: Option<usize>) -> Self {
        Self {
            info,
            skip,
            remaining: fetch,
        }
    }
}

impl Operator for LimitOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Output,
    ) -> EngineResult<()> {
        let mut batch = batch;
        if self.skip > 0 {
            let skipped = self.skip.min(batch.num_rows());
            self.skip -= skipped;
            batch = batch.slice(skipped, batch.num_rows() - skipped);
        }
        match &mut self.remaining {
            None => out.batch(batch),
            Some(remaining) => {
                let take = (*remaining).min(batch.num_rows());
                *remaining -= take;
                out.batch(batch.slice(0, take));
            }
        }
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.remaining == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::runtime::message::Message;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn rows(out: &mut Output) -> Vec<i64> {
        out.drain()
            .flat_map(|m| match m {
                Message::Data(b) => b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn skips_then_takes_across_batches() {
        let info = OperatorInfo {
            name: "Limit".into(),
            schema: batch(&[]).schema(),
        };
        let mut op = LimitOperator::new(info, 3, Some(4));
        let mut out = Output::default();
        op.on_batch(0, batch(&[1, 2]), &mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<i64>::new());
        op.on_batch(0, batch(&[3, 4, 5]), &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![4, 5]);
        assert!(!op.is_finished());
        op.on_batch(0, batch(&[6, 7, 8]), &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![6, 7]);
        assert!(op.is_finished());
    }
}
