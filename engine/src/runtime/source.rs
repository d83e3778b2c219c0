//! Sources: how a connector's batches become a stream with watermarks.
//!
//! For each batch it keeps the requested columns and advances the watermark to
//! `max(watermark, max over the batch of the WATERMARK expression)` (DESIGN.md 1.7 rule 1).
//! [`WatermarkGenerator::segments`] cuts batches so that downstream operators, which judge a
//! batch with the watermark before it, see rule 2's per-row view. State: the current watermark. End of input is coordinated by
//! [`BoundedSourceGroup`]: a bounded source holds its watermark until every bounded source of
//! the query has ended, then all of them jump to the end together (rule 5).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::Notify;

use crate::error::{EngineError, EngineResult};
use crate::runtime::message::EventTime;

/// How the watermark candidate of each row is computed.
#[derive(Clone)]
enum RowWatermark {
    /// Any expression, evaluated on the source's full batches; yields a timestamp per row.
    Expr(Arc<dyn PhysicalExpr>),
    /// `column - INTERVAL ...` (the usual form), computed on the integers directly: arrow's
    /// timestamp-minus-interval kernel goes through calendar arithmetic per value.
    Shifted {
        index: usize,
        unit_ns: i64,
        minus_ns: i64,
    },
}

/// Computes a source's watermark from its `WATERMARK FOR ... AS expr` definition.
#[derive(Clone)]
pub struct WatermarkGenerator {
    values: RowWatermark,
    /// The `WATERMARK FOR` column (index in the source's batches, nanoseconds per unit).
    time: Option<(usize, i64)>,
    current: Option<EventTime>,
}

/// A run of rows of a batch, then the watermark to send after it (if it advanced).
pub type Segment = (std::ops::Range<usize>, Option<EventTime>);

impl WatermarkGenerator {
    /// The watermark so far (what a checkpoint records).
    pub fn current(&self) -> Option<EventTime> {
        self.current
    }

    /// Continues from a checkpoint's watermark.
    pub fn restore(&mut self, watermark: EventTime) {
        self.current = Some(self.current.map_or(watermark, |c| c.max(watermark)));
    }

    pub fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            values: RowWatermark::Expr(expr),
            time: None,
            current: None,
        }
    }

    /// The watermark of `column - minus_ns` for a timestamp column with `unit_ns` nanoseconds
    /// per unit.
    pub fn shifted(index: usize, unit_ns: i64, minus_ns: i64) -> Self {
        Self {
            values: RowWatermark::Shifted {
                index,
                unit_ns,
                minus_ns,
            },
            time: None,
            current: None,
        }
    }

    /// Also split batches so that rows behind the watermark are judged row by row (see
    /// [`WatermarkGenerator::segments`]); `unit_ns` is nanoseconds per unit of the column.
    pub fn with_time_column(mut self, index: usize, unit_ns: i64) -> Self {
        self.time = Some((index, unit_ns));
        self
    }

    /// Splits `batch` into runs of rows to send each followed by its watermark, and advances
    /// the watermark past the batch.
    ///
    /// DESIGN.md 1.7 rule 2: a row is late when its window closed under the watermark of the
    /// rows *before* it. Downstream operators judge a whole batch with the watermark before
    /// it, so a batch is cut before every row whose time is at or behind the watermark that
    /// rose within the batch: only such a row could belong to a window that rose past it.
    /// In-order input stays in one piece.
    pub fn segments(&mut self, batch: &RecordBatch) -> EngineResult<Vec<Segment>> {
        let values = self.row_values(batch)?;
        let values = values.as_primitive::<Int64Type>();
        let times = match self.time {
            Some((index, unit_ns)) => {
                let t = cast(batch.column(index), &DataType::Int64)?;
                Some((t.as_primitive::<Int64Type>().clone(), unit_ns))
            }
            None => None,
        };
        let mut out = Vec::new();
        let mut start = 0;
        let mut start_watermark = self.current;
        for row in 0..batch.num_rows() {
            if let (Some((times, unit_ns)), Some(before)) = (&times, self.current)
                && row > start
                && start_watermark.is_none_or(|w| before > w)
                && times.is_valid(row)
                && (times.value(row) as i128 * *unit_ns as i128) < before as i128 + *unit_ns as i128
            {
                out.push((start..row, Some(before)));
                start = row;
                start_watermark = Some(before);
            }
            if values.is_valid(row) {
                let v = values.value(row);
                self.current = Some(self.current.map_or(v, |c| c.max(v)));
            }
        }
        let advanced = match (self.current, start_watermark) {
            (Some(c), Some(s)) if c <= s => None,
            (c, _) => c,
        };
        out.push((start..batch.num_rows(), advanced));
        Ok(out)
    }

    /// The watermark expression of each row, in nanoseconds (NULL where the row has none).
    fn row_values(&self, batch: &RecordBatch) -> EngineResult<Arc<dyn Array>> {
        let expr = match &self.values {
            RowWatermark::Expr(expr) => expr,
            RowWatermark::Shifted {
                index,
                unit_ns,
                minus_ns,
            } => {
                let times = cast(batch.column(*index), &DataType::Int64)?;
                let shifted: datafusion::arrow::array::Int64Array = times
                    .as_primitive::<Int64Type>()
                    .unary(|v| v.saturating_mul(*unit_ns).saturating_sub(*minus_ns));
                return Ok(Arc::new(shifted));
            }
        };
        let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
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
}

/// How far (event time, nanoseconds) a bounded source may run ahead of the slowest bounded
/// source of its query before it waits.
pub const MAX_DRIFT: EventTime = 1_000_000_000;

/// The bounded sources of one query, which reach the end of time together and advance in step.
///
/// Bounded sources replay history as fast as they can, and one may race ahead of another: a
/// join would then hold everything the fast side sent until the slow side's watermark caught
/// up, memory growing with the length of the input. So a bounded source whose watermark is
/// more than [`MAX_DRIFT`] ahead of the slowest running bounded source, or that has a
/// watermark while another running one has none yet, waits before it reads on (Flink's
/// watermark alignment, applied to every bounded source). Only
/// sources wait, never operators, and the slowest source never waits, so alignment cannot
/// stall a query: operators read whatever arrives. Unbounded sources take no part (a quiet
/// live stream must not stop an active one).
#[derive(Debug)]
pub struct BoundedSourceGroup {
    running: AtomicUsize,
    all_ended: Notify,
    /// Per aligned source: `None` once ended, else its watermark (if it has one yet).
    watermarks: Mutex<Vec<Option<Option<EventTime>>>>,
    advanced: Notify,
}

impl BoundedSourceGroup {
    /// A group of `bounded_sources` sources, of which the first `aligned` have watermarks and
    /// are numbered `0..aligned` for [`Self::advance`] and [`Self::wait_aligned`].
    pub fn new(bounded_sources: usize, aligned: usize) -> Arc<Self> {
        Arc::new(Self {
            running: AtomicUsize::new(bounded_sources),
            all_ended: Notify::new(),
            watermarks: Mutex::new(vec![Some(None); aligned]),
            advanced: Notify::new(),
        })
    }

    fn watermarks(&self) -> std::sync::MutexGuard<'_, Vec<Option<Option<EventTime>>>> {
        self.watermarks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Aligned source `index` reached `watermark`.
    pub fn advance(&self, index: usize, watermark: EventTime) {
        if let Some(slot) = self.watermarks().get_mut(index) {
            *slot = Some(Some(watermark));
        }
        self.advanced.notify_waiters();
    }

    /// Whether aligned source `index` is too far ahead of the slowest running one.
    fn ahead(&self, index: usize) -> bool {
        let watermarks = self.watermarks();
        let Some(Some(Some(mine))) = watermarks.get(index).copied() else {
            return false;
        };
        let mut floor = EventTime::MAX;
        for watermark in watermarks.iter().flatten() {
            match watermark {
                // A running source has not reported a watermark yet: it may be far behind
                // (not scheduled yet, say), so wait for its first one. It never waits itself.
                None => return true,
                Some(w) => floor = floor.min(*w),
            }
        }
        mine > floor.saturating_add(MAX_DRIFT)
    }

    /// Returns once aligned source `index` may read on.
    pub async fn wait_aligned(&self, index: usize) {
        loop {
            let notified = self.advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.ahead(index) {
                return;
            }
            notified.await;
        }
    }

    /// A bounded source of the group reached the end of its input (`aligned` is its number
    /// if it is aligned); call once per source, then [`Self::wait_all_ended`].
    pub fn end(&self, aligned: Option<usize>) {
        if let Some(index) = aligned {
            if let Some(slot) = self.watermarks().get_mut(index) {
                *slot = None;
            }
            self.advanced.notify_waiters();
        }
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_ended.notify_waiters();
        }
    }

    /// Resolves once every source of the group has ended. Cancel-safe: a source may stop
    /// waiting (to pass on a checkpoint barrier) and wait again.
    pub async fn wait_all_ended(&self) {
        loop {
            let notified = self.all_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod alignment_tests {
    use super::*;

    const S: EventTime = 1_000_000_000;

    async fn waits(group: &BoundedSourceGroup, index: usize) -> bool {
        tokio::time::timeout(
            std::time::Duration::from_millis(50),
            group.wait_aligned(index),
        )
        .await
        .is_err()
    }

    #[tokio::test]
    async fn a_source_ahead_of_the_slowest_waits_until_it_catches_up_or_ends() {
        let group = BoundedSourceGroup::new(2, 2);
        assert!(!waits(&group, 0).await, "no source has a watermark yet");
        group.advance(0, 5 * S);
        assert!(waits(&group, 0).await, "source 1 has no watermark yet");
        assert!(
            !waits(&group, 1).await,
            "a source without a watermark never waits"
        );
        group.advance(1, S);
        assert!(waits(&group, 0).await, "4 s ahead of source 1");
        assert!(!waits(&group, 1).await, "the slowest never waits");
        group.advance(1, 4 * S + S / 2);
        assert!(!waits(&group, 0).await, "within the drift");
        group.advance(0, 20 * S);
        assert!(waits(&group, 0).await);
        let waiting = {
            let group = Arc::clone(&group);
            tokio::spawn(async move { group.wait_aligned(0).await })
        };
        let ended = {
            let group = Arc::clone(&group);
            tokio::spawn(async move {
                group.end(Some(1));
                group.wait_all_ended().await
            })
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("source 1 ended, so source 0 reads on")
            .unwrap();
        group.end(Some(0));
        group.wait_all_ended().await;
        ended.await.unwrap();
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
    fn watermark_is_running_max_and_ignores_nulls() {
        let mut g = WatermarkGenerator::new(Arc::new(Column::new("ts", 0)));
        let b = batch(&[Some(5), Some(3), None, Some(9), Some(7)]);
        let ms = 1_000_000;
        // Without a time column to judge rows by, a batch is one segment, then its maximum.
        assert_eq!(g.segments(&b).unwrap(), vec![(0..5, Some(9 * ms))]);
        // An older batch does not move the watermark back.
        assert_eq!(g.segments(&batch(&[Some(1)])).unwrap(), vec![(0..1, None)]);
    }

    #[test]
    fn batches_are_cut_before_rows_behind_a_risen_watermark() {
        let ms = 1_000_000;
        // WATERMARK FOR ts AS ts (no delay, to keep the arithmetic short).
        let mut g = WatermarkGenerator::new(Arc::new(Column::new("ts", 0))).with_time_column(0, ms);
        // In order: one segment, watermark 30 after it.
        let segments = g.segments(&batch(&[Some(10), Some(20), Some(30)])).unwrap();
        assert_eq!(segments, vec![(0..3, Some(30 * ms))]);
        // 50 raises the watermark to 50; 40 is behind it, so it must be judged after the
        // watermark 50 has been sent: cut before it. 45 is behind 50 too, but the watermark
        // did not rise since the cut, so it stays with 40.
        let segments = g
            .segments(&batch(&[Some(50), Some(40), Some(45), Some(60)]))
            .unwrap();
        assert_eq!(segments, vec![(0..1, Some(50 * ms)), (1..4, Some(60 * ms))]);
        // Rows behind the watermark from before the batch need no cut.
        let segments = g.segments(&batch(&[Some(1), Some(2)])).unwrap();
        assert_eq!(segments, vec![(0..2, None)]);
    }

    #[tokio::test]
    async fn bounded_sources_end_together() {
        let group = BoundedSourceGroup::new(2, 0);
        let g2 = Arc::clone(&group);
        let first = tokio::spawn(async move {
            {
                g2.end(None);
                g2.wait_all_ended().await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !first.is_finished(),
            "first source must wait for the second"
        );
        {
            group.end(None);
            group.wait_all_ended().await
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), first)
            .await
            .unwrap()
            .unwrap();
    }
}
