//! `ProcessingTimeOperator`: turns a `PROCTIME()` column into a time attribute, for windows
//! on processing time (Flink's `TUMBLE(p_time, ...)` over `p_time AS PROCTIME()`).
//!
//! It stamps each row's processing-time column with this instance's wall clock when the row
//! reaches it (never decreasing, so no row is late), and replaces the input's event-time
//! watermarks with the wall clock: after each batch, and on a timer every [`TICK`] so that a
//! window closes when the clock passes its end even when no row comes. A window downstream is
//! then an ordinary window whose watermark is the clock. Rows stamped upstream of an exchange
//! are never behind the watermark either: each instance sends its rows before a watermark
//! that passes them.
//!
//! Emits final rows; stateless (processing time is not replayed: after a restore the clock
//! just goes on, as in Flink). At the end of a bounded input the downstream windows close as
//! at the end of any input.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use super::{Operator, OperatorContext, OperatorInfo};
use crate::error::{EngineError, EngineResult};
use crate::runtime::message::EventTime;

/// How often the operator moves its watermark to the wall clock when no row comes.
pub const TICK: Duration = Duration::from_millis(10);

/// The wall clock, in milliseconds since the Unix epoch (`PROCTIME()`'s precision).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub struct ProcessingTimeOperator {
    info: OperatorInfo,
    /// The processing-time column.
    column: usize,
    /// The clock's last reading (ms): stamps and watermarks never go below it.
    clock_ms: i64,
    /// The last watermark emitted.
    watermark: Option<EventTime>,
    /// Reads the wall clock (a fixed clock in tests).
    now_ms: fn() -> i64,
}

impl ProcessingTimeOperator {
    /// Stamps column `column` of `info.schema`, which must be a millisecond timestamp.
    pub fn new(info: OperatorInfo, column: usize) -> EngineResult<Self> {
        match info.schema.fields().get(column).map(|f| f.data_type()) {
            Some(DataType::Timestamp(TimeUnit::Millisecond, _)) => Ok(Self {
                info,
                column,
                clock_ms: i64::MIN,
                watermark: None,
                now_ms: wall_clock_ms,
            }),
            other => Err(EngineError::Internal(format!(
                "the processing-time column is {other:?}, not TIMESTAMP(3)"
            ))),
        }
    }

    #[cfg(test)]
    fn with_clock(mut self, now_ms: fn() -> i64) -> Self {
        self.now_ms = now_ms;
        self
    }

    /// Reads the clock (never going back).
    fn tick(&mut self) -> i64 {
        self.clock_ms = self.clock_ms.max((self.now_ms)());
        self.clock_ms
    }

    /// Emits the watermark of clock reading `ms`: rows stamped later carry `ms` or more.
    fn advance(&mut self, ms: i64, out: &mut OperatorContext) {
        let watermark = ms.saturating_mul(1_000_000).saturating_sub(1);
        if self.watermark.is_none_or(|w| watermark > w) {
            self.watermark = Some(watermark);
            out.watermark(watermark);
        }
    }
}

impl Operator for ProcessingTimeOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        let ms = self.tick();
        let timezone = match self.info.schema.field(self.column).data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let stamps: ArrayRef = Arc::new(
            TimestampMillisecondArray::from_value(ms, batch.num_rows()).with_timezone_opt(timezone),
        );
        let mut columns = batch.columns().to_vec();
        columns[self.column] = stamps;
        out.batch(RecordBatch::try_new(
            Arc::clone(&self.info.schema),
            columns,
        )?);
        self.advance(ms, out);
        Ok(())
    }

    /// The input's watermarks are on event time: the clock replaces them.
    fn on_watermark(
        &mut self,
        _watermark: EventTime,
        _out: &mut OperatorContext,
    ) -> EngineResult<()> {
        Ok(())
    }

    fn timer(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn on_timer(&mut self, out: &mut OperatorContext) -> EngineResult<()> {
        let ms = self.tick();
        self.advance(ms, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::message::Message;
    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema, TimestampMillisecondType};

    fn operator(now_ms: fn() -> i64) -> ProcessingTimeOperator {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new(
                "p_time",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        ProcessingTimeOperator::new(
            OperatorInfo {
                name: "ProcessingTime".to_string(),
                schema,
            },
            1,
        )
        .unwrap()
        .with_clock(now_ms)
    }

    fn batch(op: &ProcessingTimeOperator, stamp: i64) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(&op.info.schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(TimestampMillisecondArray::from(vec![stamp, stamp])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_get_the_clock_and_the_watermark_follows_it() {
        let mut op = operator(|| 5_000);
        let mut out = OperatorContext::default();
        // The stamp PROCTIME() gave upstream is replaced; an event-time watermark is dropped.
        op.on_watermark(9_000_000_000_000, &mut out).unwrap();
        op.on_batch(0, batch(&op, 1), &mut out).unwrap();
        let messages: Vec<Message> = out.drain().collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        let Message::Data(rows) = &messages[0] else {
            panic!("rows first: {messages:?}")
        };
        let stamps = rows.column(1).as_primitive::<TimestampMillisecondType>();
        assert_eq!(stamps.values().to_vec(), vec![5_000, 5_000]);
        assert!(matches!(messages[1], Message::Watermark(w) if w == 5_000_000_000 - 1));
        // A timer tick at the same reading emits nothing new.
        op.on_timer(&mut out).unwrap();
        assert_eq!(out.drain().count(), 0);
    }

    #[test]
    fn the_clock_never_goes_back() {
        static NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(7_000);
        let mut op = operator(|| NOW.load(std::sync::atomic::Ordering::Relaxed));
        let mut out = OperatorContext::default();
        op.on_timer(&mut out).unwrap();
        NOW.store(6_000, std::sync::atomic::Ordering::Relaxed);
        op.on_batch(0, batch(&op, 0), &mut out).unwrap();
        let messages: Vec<Message> = out.drain().collect();
        assert!(matches!(messages[0], Message::Watermark(w) if w == 7_000_000_000 - 1));
        let Message::Data(rows) = &messages[1] else {
            panic!("{messages:?}")
        };
        let stamps = rows.column(1).as_primitive::<TimestampMillisecondType>();
        assert!(stamps.iter().all(|s| s == Some(7_000)), "{stamps:?}");
        assert!(stamps.null_count() == 0);
        assert_eq!(
            messages.len(),
            2,
            "no watermark behind the last: {messages:?}"
        );
    }
}
