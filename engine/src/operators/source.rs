//! Sources: how a connector's batches become a stream with watermarks.
//!
//! For each batch it keeps the requested columns and advances the watermark to
//! `max(watermark, max over the batch of the WATERMARK expression)` (DESIGN.md 1.7 rule 1).
//! [`WatermarkGenerator::row_watermarks`] gives the per-row view of rule 2 for operators that
//! must judge lateness row by row. State: the current watermark. End of input is coordinated by
//! [`BoundedSourceGroup`]: a bounded source holds its watermark until every bounded source of
//! the query has ended, then all of them jump to the end together (rule 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::Notify;

use crate::error::{EngineError, EngineResult};
use crate::runtime::message::EventTime;

/// Computes a source's watermark from its `WATERMARK FOR ... AS expr` definition.
pub struct WatermarkGenerator {
    /// Evaluated on the source's full batches; yields a timestamp per row.
    expr: Arc<dyn PhysicalExpr>,
    current: Option<EventTime>,
}

impl WatermarkGenerator {
    pub fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            expr,
            current: None,
        }
    }

    /// The watermark so far (`None` before any row with an event time).
    pub fn current(&self) -> Option<EventTime> {
        self.current
    }

    /// The watermark expression of each row, in nanoseconds (NULL where the row has none).
    fn row_values(&self, batch: &RecordBatch) -> EngineResult<Arc<dyn Array>> {
        let values = self.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        match values.data_type() {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let nanos = cast(&values, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
                Ok(cast(&nanos, &DataType::Int64)?)
            }
            other => Err(EngineError::Plan {
                message: format!("WATERMARK expression must be a timestamp, not {other}"),
                position: None,
            }),
        }
    }

    /// Advances the watermark past `batch`; returns the new watermark if it moved.
    pub fn observe(&mut self, batch: &RecordBatch) -> EngineResult<Option<EventTime>> {
        let values = self.row_values(batch)?;
        let max = datafusion::arrow::compute::max(values.as_primitive::<Int64Type>());
        match (max, self.current) {
            (Some(m), Some(c)) if m <= c => Ok(None),
            (Some(m), _) => {
                self.current = Some(m);
                Ok(Some(m))
            }
            (None, _) => Ok(None),
        }
    }

    /// The watermark in force *before* each row of `batch` (the prefix maximum, DESIGN.md 1.7
    /// rule 2), given the watermark before the batch. `None` means no watermark yet.
    pub fn row_watermarks(
        &self,
        before: Option<EventTime>,
        batch: &RecordBatch,
    ) -> EngineResult<Vec<Option<EventTime>>> {
        let values = self.row_values(batch)?;
        let values = values.as_primitive::<Int64Type>();
        let mut current = before;
        Ok((0..values.len())
            .map(|i| {
                let here = current;
                if values.is_valid(i) {
                    let v = values.value(i);
                    current = Some(current.map_or(v, |c| c.max(v)));
                }
                here
            })
            .collect())
    }
}

/// The bounded sources of one query, which reach the end of time together.
#[derive(Debug)]
pub struct BoundedSourceGroup {
    running: AtomicUsize,
    all_ended: Notify,
}

impl BoundedSourceGroup {
    pub fn new(bounded_sources: usize) -> Arc<Self> {
        Arc::new(Self {
            running: AtomicUsize::new(bounded_sources),
            all_ended: Notify::new(),
        })
    }

    /// Called by a bounded source at the end of its input; returns once every bounded source of
    /// the query has ended.
    pub async fn end_and_wait(&self) {
        let notified = self.all_ended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_ended.notify_waiters();
            return;
        }
        loop {
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.as_mut().await;
            notified.set(self.all_ended.notified());
            notified.as_mut().enable();
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    fn batch(ms: &[Option<i64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMillisecondArray::from(ms.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn watermark_is_running_max_and_prefix_per_row() {
        let mut g = WatermarkGenerator::new(Arc::new(Column::new("ts", 0)));
        let b = batch(&[Some(5), Some(3), None, Some(9), Some(7)]);
        let per_row = g.row_watermarks(None, &b).unwrap();
        let ms = 1_000_000;
        assert_eq!(
            per_row,
            vec![None, Some(5 * ms), Some(5 * ms), Some(5 * ms), Some(9 * ms)]
        );
        assert_eq!(g.observe(&b).unwrap(), Some(9 * ms));
        // An older batch does not move the watermark back.
        assert_eq!(g.observe(&batch(&[Some(1)])).unwrap(), None);
        assert_eq!(g.current(), Some(9 * ms));
    }

    #[tokio::test]
    async fn bounded_sources_end_together() {
        let group = BoundedSourceGroup::new(2);
        let g2 = Arc::clone(&group);
        let first = tokio::spawn(async move { g2.end_and_wait().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !first.is_finished(),
            "first source must wait for the second"
        );
        group.end_and_wait().await;
        tokio::time::timeout(std::time::Duration::from_secs(5), first)
            .await
            .unwrap()
            .unwrap();
    }
}
