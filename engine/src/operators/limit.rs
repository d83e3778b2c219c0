//! `LimitOperator`: `LIMIT n [OFFSET m]` on a stream.
//!
//! Emits the first `n` rows after skipping `m`, then reports itself finished so the runtime
//! ends the query and frees its sources. State: two counters (rows still to skip, rows
//! still to emit), which are its snapshot.

use datafusion::arrow::record_batch::RecordBatch;

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::EngineResult;
use crate::runtime::message::Epoch;
use crate::state::{StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot's table and values.
const COUNTERS: &str = "counters";
const SKIP: &str = "skip";
const REMAINING: &str = "remaining";

/// The state table of a LIMIT: its two counters.
pub fn state_tables() -> Vec<StateTable> {
    vec![StateTable::fixed(
        COUNTERS,
        "rows still to skip and to emit",
    )]
}

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
        out: &mut OperatorContext,
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

    fn state_usage(&self) -> Vec<StateUsage> {
        vec![StateUsage {
            table: COUNTERS,
            rows: 1,
            bytes: 2 * std::mem::size_of::<usize>(),
        }]
    }

    fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
        let count = |n: usize| i64::try_from(n).ok();
        let mut snapshot = StateSnapshot::new();
        snapshot.add_values(
            COUNTERS,
            &[
                (SKIP, count(self.skip)),
                (REMAINING, self.remaining.and_then(count)),
            ],
        )?;
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        if snapshot.is_empty() {
            return Ok(());
        }
        if snapshot.table_names() != [COUNTERS] {
            return Err(corrupt(format!(
                "a limit has no tables {:?}",
                snapshot.table_names()
            )));
        }
        let values = snapshot.values(COUNTERS)?;
        let count = |name: &str| -> EngineResult<Option<usize>> {
            match values.get(name) {
                None => Err(corrupt(format!("a limit without {name}"))),
                Some(v) => v
                    .map(|v| usize::try_from(v).map_err(|_| corrupt(format!("{name} is {v}"))))
                    .transpose(),
            }
        };
        let skip = count(SKIP)?.ok_or_else(|| corrupt("a limit without skip"))?;
        let remaining = count(REMAINING)?;
        // The counters only go down, and the same plan has the same limit (or none).
        if values.len() != 2
            || skip > self.skip
            || remaining.is_some() != self.remaining.is_some()
            || remaining > self.remaining
        {
            return Err(corrupt("limit counters of another plan"));
        }
        self.skip = skip;
        self.remaining = remaining;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::operators::checkpoint_harness::{Step, check_every_cut_forwarding};
    use crate::runtime::message::Message;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    fn rows(out: &mut OperatorContext) -> Vec<i64> {
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
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[1, 2]), &mut out).unwrap();
        assert_eq!(rows(&mut out), Vec::<i64>::new());
        op.on_batch(0, batch(&[3, 4, 5]), &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![4, 5]);
        assert!(!op.is_finished());
        op.on_batch(0, batch(&[6, 7, 8]), &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![6, 7]);
        assert!(op.is_finished());
    }

    #[test]
    fn restores_its_counters_at_every_cut() {
        let steps: Vec<Step> = [vec![1, 2], vec![3, 4, 5], vec![], vec![6], vec![7, 8, 9]]
            .into_iter()
            .map(|v| Step::Batch(batch(&v)))
            .chain([Step::Watermark(3), Step::Batch(batch(&[10])), Step::End])
            .collect();
        for (skip, fetch) in [(3, Some(4)), (0, Some(2)), (2, None), (0, Some(100))] {
            let make = || {
                let info = OperatorInfo {
                    name: "Limit".into(),
                    schema: batch(&[]).schema(),
                };
                Box::new(LimitOperator::new(info, skip, fetch)) as Box<dyn Operator>
            };
            check_every_cut_forwarding(&make, &state_tables(), &steps);
        }
    }

    #[test]
    fn counters_of_another_limit_are_refused() {
        let info = OperatorInfo {
            name: "Limit".into(),
            schema: batch(&[]).schema(),
        };
        let mut op = LimitOperator::new(info.clone(), 1, Some(5));
        let mut out = OperatorContext::default();
        op.on_batch(0, batch(&[1, 2, 3]), &mut out).unwrap();
        let good = op.snapshot(1).unwrap();
        assert!(
            LimitOperator::new(info.clone(), 1, None)
                .restore(good.clone())
                .is_err()
        );
        assert!(
            LimitOperator::new(info.clone(), 0, Some(1))
                .restore(good.clone())
                .is_err()
        );
        let mut foreign = StateSnapshot::new();
        foreign
            .add_values("meta", &[("watermark", Some(1))])
            .unwrap();
        assert!(
            LimitOperator::new(info.clone(), 1, Some(5))
                .restore(foreign)
                .is_err()
        );
        let mut restored = LimitOperator::new(info, 1, Some(5));
        restored.restore(good).unwrap();
        assert_eq!((restored.skip, restored.remaining), (0, Some(3)));
    }
}
