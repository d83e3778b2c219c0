//! `SinkOperator`: the last operator of a sink's dataflow, writing its input into the sink's
//! writer.
//!
//! Rows and watermarks go to the writer as they arrive. At a checkpoint barrier the writer
//! pre-commits (the first phase of the two-phase commit: every open file is finished under a
//! hidden name) and what it returns is the operator's snapshot, stored in the checkpoint with
//! the other operators' parts. The second phase, the commit that makes those files visible,
//! needs to know that the whole checkpoint is on disk, which only the job knows: the job
//! holds the same writer ([`SharedSinkWriter`]) and commits through it, as Flink's committer
//! does after `notifyCheckpointComplete`. The job also drives what depends on wall-clock time
//! or on the job's end (time-based rolling, `finish`, `close`, `abort`).
//!
//! State: the pre-commit record of the last barrier only (`pre_commit`, fixed size). A
//! restore hands the record to the writer's `recover`, which makes that checkpoint's files
//! visible and deletes later ones, before any row. Emission: no rows; watermarks and barriers
//! are forwarded so the job sees them.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;

use super::{Operator, OperatorContext, OperatorInfo};
use crate::connector::SinkWriter;
use crate::error::{EngineError, EngineResult};
use crate::runtime::blocking;
use crate::runtime::message::{Epoch, EventTime};
use crate::state::{StateSnapshot, StateTable, StateUsage, corrupt};

/// The snapshot table holding the writer's pre-commit record.
const PRE_COMMIT: &str = "pre_commit";

/// A sink's writer, shared by its operator (rows, watermarks, pre-commit) and its job (tick,
/// commit, finish, close, abort). Each call holds the lock for its duration only.
pub type SharedSinkWriter = Arc<Mutex<Box<dyn SinkWriter>>>;

/// The writer's open files, measured (not checkpointed: a restored sink starts new files).
const OPEN_FILES: &str = "open_files";

/// The state tables of a sink operator.
pub fn state_tables() -> Vec<StateTable> {
    vec![
        StateTable::fixed(
            PRE_COMMIT,
            "the files finished for the last barrier, still hidden",
        ),
        StateTable::fixed(OPEN_FILES, "rows written to open files, not yet flushed"),
    ]
}

/// Runs `call` on the writer, on a thread that may block (file I/O).
pub fn with_writer<T>(
    writer: &SharedSinkWriter,
    call: impl FnOnce(&mut dyn SinkWriter) -> Result<T, crate::connector::ConnectorError>,
) -> EngineResult<T> {
    blocking(|| {
        let mut guard = writer
            .lock()
            .map_err(|_| EngineError::Internal("a sink writer call panicked".to_string()))?;
        Ok(call(guard.as_mut())?)
    })
}

pub struct SinkOperator {
    info: OperatorInfo,
    writer: SharedSinkWriter,
}

impl SinkOperator {
    pub fn new(info: OperatorInfo, writer: SharedSinkWriter) -> Self {
        Self { info, writer }
    }
}

impl Operator for SinkOperator {
    fn info(&self) -> &OperatorInfo {
        &self.info
    }

    fn on_batch(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _out: &mut OperatorContext,
    ) -> EngineResult<()> {
        with_writer(&self.writer, |w| w.write(&batch))
    }

    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        with_writer(&self.writer, |w| w.watermark(watermark))?;
        out.watermark(watermark);
        Ok(())
    }

    /// What the writer holds in memory (open files' unflushed rows) counts as the sink's
    /// state, against the job's memory limits.
    fn state_usage(&self) -> Vec<StateUsage> {
        let bytes = match self.writer.lock() {
            Ok(writer) => writer.buffered_bytes(),
            Err(_) => 0,
        };
        vec![StateUsage {
            table: OPEN_FILES,
            rows: 0,
            bytes,
        }]
    }

    fn snapshot(&mut self, epoch: Epoch) -> EngineResult<StateSnapshot> {
        let record = with_writer(&self.writer, |w| w.pre_commit(epoch))?;
        let mut snapshot = StateSnapshot::new();
        snapshot.add(
            PRE_COMMIT,
            RecordBatch::try_from_iter([(
                "record",
                Arc::new(StringArray::from(vec![record])) as Arc<dyn Array>,
            )])?,
        )?;
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        let batches = snapshot.table(PRE_COMMIT);
        let record = match batches.as_slice() {
            [batch] if batch.num_rows() == 1 => batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .filter(|r| r.is_valid(0))
                .map(|r| r.value(0).to_string()),
            _ => None,
        }
        .ok_or_else(|| corrupt("a sink's state without its pre-commit record"))?;
        with_writer(&self.writer, |w| w.recover(Some(&record)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::ConnectorResult;
    use crate::state::checkpoint::round_trip;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// Records every call it gets.
    #[derive(Default)]
    struct Recording(Arc<Mutex<Vec<String>>>);

    impl SinkWriter for Recording {
        fn write(&mut self, batch: &RecordBatch) -> ConnectorResult<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("write {}", batch.num_rows()));
            Ok(())
        }
        fn watermark(&mut self, watermark: i64) -> ConnectorResult<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("watermark {watermark}"));
            Ok(())
        }
        fn tick(&mut self) -> ConnectorResult<()> {
            Ok(())
        }
        fn finish(&mut self) -> ConnectorResult<()> {
            Ok(())
        }
        fn close(&mut self) -> ConnectorResult<()> {
            Ok(())
        }
        fn abort(&mut self) {}
        fn pre_commit(&mut self, epoch: u64) -> ConnectorResult<String> {
            self.0.lock().unwrap().push(format!("pre_commit {epoch}"));
            Ok(format!("files of {epoch}"))
        }
        fn recover(&mut self, pre_committed: Option<&str>) -> ConnectorResult<()> {
            self.0
                .lock()
                .unwrap()
                .push(format!("recover {pre_committed:?}"));
            Ok(())
        }
    }

    fn sink() -> (SinkOperator, Arc<Mutex<Vec<String>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let writer: Box<dyn SinkWriter> = Box::new(Recording(Arc::clone(&calls)));
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let op = SinkOperator::new(
            OperatorInfo {
                name: "Sink".to_string(),
                schema,
            },
            Arc::new(Mutex::new(writer)),
        );
        (op, calls)
    }

    #[test]
    fn rows_go_to_the_writer_and_a_barrier_s_record_comes_back_on_restore() {
        let (mut op, calls) = sink();
        let mut out = OperatorContext::default();
        let batch = RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from(vec![1, 2])) as Arc<dyn Array>,
        )])
        .unwrap();
        op.on_batch(0, batch, &mut out).unwrap();
        op.on_watermark(7, &mut out).unwrap();
        let snapshot = round_trip(&op.snapshot(3).unwrap()).unwrap();
        // No rows leave the sink; the watermark goes on to the job.
        let emitted: Vec<_> = out.drain().collect();
        assert!(matches!(
            emitted.as_slice(),
            [crate::runtime::message::Message::Watermark(7)]
        ));
        assert_eq!(
            *calls.lock().unwrap(),
            vec!["write 2", "watermark 7", "pre_commit 3"]
        );

        let (mut restored, calls) = sink();
        restored.restore(snapshot).unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            vec![r#"recover Some("files of 3")"#]
        );
        assert!(restored.restore(StateSnapshot::new()).is_err());
    }
}
