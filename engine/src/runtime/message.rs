//! What flows between operators.

use datafusion::arrow::record_batch::RecordBatch;

/// Event time and watermarks: nanoseconds since the Unix epoch.
pub type EventTime = i64;

/// The watermark of an input that can produce no more rows.
pub const WATERMARK_END: EventTime = EventTime::MAX;

/// A checkpoint epoch.
pub type Epoch = u64;

/// One message on a dataflow channel.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows.
    Data(RecordBatch),
    /// No row with an event time at or below this will follow (rows that do are late).
    Watermark(EventTime),
    /// A checkpoint barrier: state up to here belongs to this epoch.
    Barrier(Epoch),
    /// The input sends no rows for now (its partitions are idle): operators combine their
    /// input watermarks without it until it sends rows or a watermark again (Flink's
    /// `WatermarkStatus.IDLE`).
    Idle,
    /// The input has ended; nothing follows.
    End,
}
