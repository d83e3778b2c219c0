//! The trait every streaming operator implements, and the context its hooks get.
//!
//! The runtime (`driver.rs`) drives an [`Operator`]: it receives each message of its inputs
//! through a hook and writes what it produces into its [`OperatorContext`]. Every hook has a default, so
//! a stateless operator only implements [`Operator::on_batch`]. The operators themselves live
//! in `crate::operators`, one per module; they import this trait, the runtime imports none of
//! them.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::EngineResult;
use crate::late_rows::{LateRowTable, LateRows};
use crate::runtime::memory::StateAccount;
use crate::runtime::message::{Epoch, EventTime, Message};
use crate::state::{StateSnapshot, StateTable, StateUsage};

/// Static facts about an operator, apart from the code that runs it.
#[derive(Debug, Clone)]
pub struct OperatorInfo {
    /// A short name for logs and EXPLAIN, e.g. `Filter`.
    pub name: String,
    /// The schema of the batches it emits.
    pub schema: SchemaRef,
}

/// What the runtime tells an operator instance, and what its hooks write into.
///
/// Every hook gets the instance's context: which plan node and instance it runs, the combined
/// input watermark, its late-row counter (and, for a job created `WITH (late.rows = ...)`, the
/// table its late rows go to) and the state tables its plan node declares; the
/// hook writes the messages it produces into it (the runtime forwards them, tests read them
/// with [`OperatorContext::drain`]). The late-row count and the watermark are checkpointed
/// with the operator's snapshot, so after a restore they continue exactly.
#[derive(Debug, Default)]
pub struct OperatorContext {
    messages: Vec<Message>,
    node: usize,
    instance: usize,
    watermark: Option<EventTime>,
    late_rows: u64,
    /// The query's late-row total (`SHOW JOBS`, the session's notice), if attached to one.
    query_late_rows: Option<Arc<AtomicU64>>,
    /// The job's late-row table and the operator's name there (`WITH (late.rows = ...)`).
    late_table: Option<(Arc<LateRowTable>, String)>,
    tables: Vec<StateTable>,
    /// Where the runtime charges the instance's state (its query's and the server's limits).
    memory: Option<StateAccount>,
}

impl OperatorContext {
    /// The context of instance `instance` of plan node `node` (numbered as EXPLAIN ANALYZE
    /// numbers them), whose state tables are `tables`, counting late rows also into
    /// `query_late_rows`.
    pub fn new(
        node: usize,
        instance: usize,
        tables: Vec<StateTable>,
        query_late_rows: Arc<AtomicU64>,
    ) -> Self {
        Self {
            node,
            instance,
            tables,
            query_late_rows: Some(query_late_rows),
            ..Self::default()
        }
    }

    /// Emits rows (an empty batch is dropped).
    pub fn batch(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.messages.push(Message::Data(batch));
        }
    }

    /// Emits a watermark.
    pub fn watermark(&mut self, watermark: EventTime) {
        self.messages.push(Message::Watermark(watermark));
    }

    /// Emits a checkpoint barrier.
    pub fn barrier(&mut self, epoch: Epoch) {
        self.messages.push(Message::Barrier(epoch));
    }

    /// Takes the messages produced so far (the runtime forwards them; tests read them).
    pub fn drain(&mut self) -> std::vec::Drain<'_, Message> {
        self.messages.drain(..)
    }

    pub fn node(&self) -> usize {
        self.node
    }

    pub fn instance(&self) -> usize {
        self.instance
    }

    /// The combined input watermark hooks have heard of (`None` before the first).
    pub fn input_watermark(&self) -> Option<EventTime> {
        self.watermark
    }

    pub(crate) fn set_input_watermark(&mut self, watermark: Option<EventTime>) {
        self.watermark = watermark;
    }

    /// Drops `rows` of input `batch` as late (each with its event time): counts them and, when
    /// the job records its late rows, appends them to its table, with the input watermark.
    pub fn drop_late(&mut self, batch: &RecordBatch, rows: &LateRows) -> EngineResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.count_late(rows.len() as u64);
        match &self.late_table {
            Some((table, operator)) => table.append(operator, batch, rows, self.watermark),
            None => Ok(()),
        }
    }

    /// Sends the rows [`OperatorContext::drop_late`] drops to `table`, as operator `operator`
    /// (its name in EXPLAIN).
    pub(crate) fn set_late_table(&mut self, table: Arc<LateRowTable>, operator: String) {
        self.late_table = Some((table, operator));
    }

    /// Counts `rows` input rows dropped as late (see [`OperatorContext::drop_late`], which
    /// also records them).
    fn count_late(&mut self, rows: u64) {
        self.late_rows += rows;
        if let Some(total) = &self.query_late_rows {
            total.fetch_add(rows, Ordering::Relaxed);
        }
    }

    /// The late rows this instance dropped (restored ones included).
    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// Puts back a restored late-row count (added to the query's total too).
    pub(crate) fn restore_late_rows(&mut self, rows: u64) {
        self.late_rows = 0;
        self.count_late(rows);
    }

    /// Charges the instance's state to `account` (the runtime does, after the hooks ran).
    pub(crate) fn set_state_account(&mut self, account: StateAccount) {
        self.memory = Some(account);
    }

    /// Takes the instance's state account out, for the task that drives it.
    pub(crate) fn take_state_account(&mut self) -> Option<StateAccount> {
        self.memory.take()
    }

    /// The state tables the instance's plan node declares (empty when stateless).
    pub fn state_tables(&self) -> &[StateTable] {
        &self.tables
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
    fn on_batch(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut OperatorContext,
    ) -> EngineResult<()>;

    /// The combined input watermark advanced.
    fn on_watermark(
        &mut self,
        watermark: EventTime,
        out: &mut OperatorContext,
    ) -> EngineResult<()> {
        out.watermark(watermark);
        Ok(())
    }

    /// Every input delivered the barrier of `epoch`.
    fn on_barrier(&mut self, epoch: Epoch, out: &mut OperatorContext) -> EngineResult<()> {
        out.barrier(epoch);
        Ok(())
    }

    /// How often the runtime calls [`Operator::on_timer`]; `None` (the default): never. An
    /// operator on processing time uses it to act when no input comes.
    fn timer(&self) -> Option<std::time::Duration> {
        None
    }

    /// The timer of [`Operator::timer`] fired (not while the operator waits for a barrier on
    /// some of its inputs).
    fn on_timer(&mut self, _out: &mut OperatorContext) -> EngineResult<()> {
        Ok(())
    }

    /// Every input ended: flush what is held.
    fn on_end(&mut self, _out: &mut OperatorContext) -> EngineResult<()> {
        Ok(())
    }

    /// True once the operator needs no more input (a satisfied `LIMIT`): the runtime then
    /// ends it early and releases its inputs.
    fn is_finished(&self) -> bool {
        false
    }

    /// What each of its state tables holds now (none for stateless operators); the runtime
    /// reports the totals (`EXPLAIN ANALYZE`, `SHOW JOBS`). Every table named must be one its
    /// plan node declares ([`OperatorContext::state_tables`]).
    fn state_usage(&self) -> Vec<StateUsage> {
        Vec::new()
    }

    /// Its state at the barrier of `epoch`: called after every input delivered the barrier
    /// and before [`Operator::on_barrier`], so the snapshot holds exactly the effect of the
    /// rows and watermarks before the barrier, as batches of the tables its plan node
    /// declares. Must not change what the operator emits later (an export may move live
    /// accumulators into their intermediate state, as long as results stay the same).
    ///
    /// The runtime calls it only for a node that declares state tables; the default refuses,
    /// so a checkpoint never silently misses state.
    fn snapshot(&mut self, epoch: Epoch) -> EngineResult<StateSnapshot> {
        Err(crate::error::EngineError::Checkpoint(format!(
            "operator {} cannot snapshot its state (epoch {epoch})",
            self.info().name
        )))
    }

    /// Checkpoint `epoch` is complete: written with the snapshot this instance took at its
    /// barrier. Called before a later snapshot (with the latest complete epoch: some may be
    /// skipped). Until it is called, no checkpoint holds what the instance's snapshots held.
    /// An operator may then refer to a shared batch its snapshot at `epoch` or earlier held,
    /// unchanged since, without handing its rows over again
    /// ([`StateSnapshot::add_shared_unchanged`]).
    fn checkpoint_completed(&mut self, _epoch: Epoch) {}

    /// Puts back the state of a [`Operator::snapshot`] taken by the same operator (same plan
    /// node and instance), before any input arrives; the runtime has checked that it holds
    /// only declared tables. After it, the operator must behave exactly as the one that took
    /// the snapshot did after the barrier.
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
