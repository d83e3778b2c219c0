//! The trait every streaming operator implements, and what its hooks write into.
//!
//! The runtime (`driver.rs`) drives an [`Operator`]: it receives each message of its inputs
//! through a hook and writes what it produces into an [`Output`]. Every hook has a default, so
//! a stateless operator only implements [`Operator::on_batch`]. The operators themselves live
//! in `crate::operators`, one per module; they import this trait, the runtime imports none of
//! them.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::EngineResult;
use crate::runtime::message::{Epoch, EventTime, Message};
use crate::state::{StateSnapshot, StateTableInfo};

/// Static facts about an operator, apart from the code that runs it.
#[derive(Debug, Clone)]
pub struct OperatorInfo {
    /// A short name for logs and EXPLAIN, e.g. `Filter`.
    pub name: String,
    /// The schema of the batches it emits.
    pub schema: SchemaRef,
}

/// Messages an operator produces during one hook.
#[derive(Debug, Default)]
pub struct Output {
    messages: Vec<Message>,
}

impl Output {
    pub fn batch(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.messages.push(Message::Data(batch));
        }
    }

    pub fn watermark(&mut self, watermark: EventTime) {
        self.messages.push(Message::Watermark(watermark));
    }

    pub fn barrier(&mut self, epoch: Epoch) {
        self.messages.push(Message::Barrier(epoch));
    }

    /// Takes the messages produced so far (the runtime forwards them; tests read them).
    pub fn drain(&mut self) -> std::vec::Drain<'_, Message> {
        self.messages.drain(..)
    }
}

/// A streaming operator.
///
/// The runtime guarantees: hooks are called from one task, never concurrently; `on_watermark`
/// receives the minimum watermark over all inputs, only when it advances; `on_end` is called
/// once, after every input ended. An implementor must emit batches with exactly
/// `info().schema`, and decide which watermark to forward (the default forwards it unchanged,
/// which is right for operators that neither hold nor delay rows).
pub trait Operator: Send + 'static {
    fn info(&self) -> &OperatorInfo;

    /// Rows arrived on input `input`.
    fn on_batch(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> EngineResult<()>;

    /// The combined input watermark advanced.
    fn on_watermark(&mut self, watermark: EventTime, out: &mut Output) -> EngineResult<()> {
        out.watermark(watermark);
        Ok(())
    }

    /// Every input delivered the barrier of `epoch`.
    fn on_barrier(&mut self, epoch: Epoch, out: &mut Output) -> EngineResult<()> {
        out.barrier(epoch);
        Ok(())
    }

    /// Every input ended: flush what is held.
    fn on_end(&mut self, _out: &mut Output) -> EngineResult<()> {
        Ok(())
    }

    /// True once the operator needs no more input (a satisfied `LIMIT`): the runtime then
    /// ends it early and releases its inputs.
    fn is_finished(&self) -> bool {
        false
    }

    /// The operator's state tables (none for stateless operators).
    fn state_tables(&self) -> Vec<StateTableInfo> {
        Vec::new()
    }

    /// Its state at a checkpoint barrier: called after every input delivered the barrier and
    /// before [`Operator::on_barrier`], so the snapshot holds exactly the effect of the rows
    /// and watermarks before the barrier. Must not change what the operator emits later
    /// (an export may move live accumulators into their intermediate state, as long as
    /// results stay the same).
    ///
    /// The default serves stateless operators; an operator that declares state tables must
    /// implement it (the default refuses, so a checkpoint never silently misses state).
    fn snapshot(&mut self) -> EngineResult<StateSnapshot> {
        if self.state_tables().is_empty() {
            Ok(StateSnapshot::new())
        } else {
            Err(crate::error::EngineError::Checkpoint(format!(
                "operator {} cannot snapshot its state",
                self.info().name
            )))
        }
    }

    /// Puts back the state of a [`Operator::snapshot`] taken by the same operator (same plan
    /// node and instance), before any input arrives. After it, the operator must behave
    /// exactly as the one that took the snapshot did after the barrier.
    fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
        if snapshot.is_empty() {
            Ok(())
        } else {
            Err(crate::state::corrupt(format!(
                "operator {} has no state to restore, but the checkpoint holds {:?}",
                self.info().name,
                snapshot.table_names()
            )))
        }
    }
}

/// Assembles output columns into a batch of `schema`, casting a column whose type differs
/// only in form from the logical plan's (e.g. an aggregate's result type).
pub fn conform_batch(
    schema: &SchemaRef,
    columns: Vec<datafusion::arrow::array::ArrayRef>,
) -> EngineResult<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                datafusion::arrow::compute::cast(&c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(
        std::sync::Arc::clone(schema),
        columns,
    )?)
}
