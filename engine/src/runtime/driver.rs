//! The task loops that drive sources and operators.
//!
//! Each source and each operator runs as one tokio task. Channels are bounded, so a slow
//! consumer slows its producers (backpressure). A task stops when its output channel is closed
//! (the consumer went away, or a downstream `LIMIT` is satisfied), which drops its inputs and so
//! stops everything upstream of it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::connector::{ConnectorPosition, SourceMetrics, SourcePartitions};
use crate::error::EngineResult;
use crate::runtime::checkpoint::{CheckpointHandle, PartId, SourcePosition};
use crate::runtime::message::{Epoch, EventTime, Message, WATERMARK_END};
use crate::runtime::metrics::OperatorMetrics;
use crate::runtime::operator::{Operator, OperatorContext};
use crate::runtime::partition_watermarks::PartitionWatermarks;
use crate::runtime::source::{BoundedSourceGroup, Segment, WatermarkGenerator};
use crate::state::StateSnapshot;

/// Measuring a large state takes time: an operator task measures its operator's state again
/// only once it ran at least this many times as long as the last measurement took, so
/// measuring never costs more than 1/20 (5%) of the operator's time.
const MEASURE_SPACING: u32 = 20;

/// Everything a source task needs.
pub(crate) struct SourceTask {
    pub name: String,
    pub stream: BoxStream<'static, EngineResult<RecordBatch>>,
    pub bounded: bool,
    /// Columns of the source's batches to send on.
    pub projection: Option<Vec<usize>>,
    pub watermark: Option<WatermarkGenerator>,
    /// The partitions of a partitioned source's reader (one watermark per partition).
    pub partitions: Option<Arc<SourcePartitions>>,
    pub output: mpsc::Sender<Message>,
    /// This reader's counters.
    pub metrics: Arc<OperatorMetrics>,
    /// The job's checkpoints, when it takes them: this reader's identity, and where it starts.
    pub checkpoint: Option<SourceCheckpoint>,
    /// The connector's position after the last batch `stream` yielded, if it publishes one.
    pub connector_position: Option<Arc<ConnectorPosition>>,
}

/// A source reader's part in checkpoints.
pub(crate) struct SourceCheckpoint {
    pub handle: Arc<CheckpointHandle>,
    pub part: PartId,
    /// Where the reader starts (a restored checkpoint's position; zero for a fresh start).
    pub start: SourcePosition,
}

/// Injects barriers for a source reader: between two batches, whenever the job triggers a
/// checkpoint, it reports the reader's position and sends `Barrier(epoch)` downstream. It
/// also tells a connector that publishes positions which of them a completed checkpoint
/// holds (Kafka commits those offsets to its consumer group).
struct BarrierInjector {
    handle: Arc<CheckpointHandle>,
    part: PartId,
    triggers: watch::Receiver<Epoch>,
    /// The connector positions reported for checkpoints not known to be complete yet.
    positions: VecDeque<(Epoch, String)>,
    connector_position: Option<Arc<ConnectorPosition>>,
}

impl BarrierInjector {
    /// Resolves when a checkpoint is triggered (never without checkpoints).
    async fn triggered(this: &mut Option<Self>) -> Epoch {
        match this {
            Some(injector) => match injector.triggers.changed().await {
                Ok(()) => *injector.triggers.borrow_and_update(),
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    fn report(&mut self, epoch: Epoch, position: SourcePosition) {
        self.notify_completed();
        if let (Some(_), Some(text)) = (&self.connector_position, &position.connector) {
            self.positions.push_back((epoch, text.clone()));
        }
        self.handle.report_source(epoch, self.part, position);
    }

    /// Hands the connector the position of the newest checkpoint completed since the last
    /// call (checked every [`TICK`] and when a checkpoint is triggered).
    fn notify_completed(&mut self) {
        let completed = self.handle.last_completed();
        let mut newest = None;
        while self.positions.front().is_some_and(|(e, _)| *e <= completed) {
            newest = self.positions.pop_front();
        }
        if let (Some((_, text)), Some(position)) = (newest, &self.connector_position) {
            position.checkpoint_completed(text);
        }
    }
}

/// How often a reader of a partitioned source checks for idle partitions, and a reader
/// that publishes positions for completed checkpoints.
const TICK: Duration = Duration::from_millis(100);

/// How a reader keeps its watermark: none declared, one generator over all its rows, or one
/// per partition.
enum ReaderClock {
    None,
    Single(WatermarkGenerator),
    /// The partitions' watermarks, what the connector says of its partitions, and the
    /// generation of its assignment last taken in.
    Partitioned(PartitionWatermarks, Arc<SourcePartitions>, u64),
}

impl ReaderClock {
    fn new(
        watermark: Option<WatermarkGenerator>,
        partitions: Option<Arc<SourcePartitions>>,
    ) -> Self {
        match (watermark, partitions) {
            (None, _) => ReaderClock::None,
            (Some(w), None) => ReaderClock::Single(w),
            (Some(w), Some(p)) => {
                ReaderClock::Partitioned(PartitionWatermarks::new(w, p.idle_timeout()), p, 0)
            }
        }
    }

    fn current(&self) -> Option<EventTime> {
        match self {
            ReaderClock::None => None,
            ReaderClock::Single(w) => w.current(),
            ReaderClock::Partitioned(w, ..) => w.current(),
        }
    }

    /// Continues from a checkpoint's position.
    fn restore(&mut self, start: &SourcePosition) {
        match self {
            ReaderClock::None => {}
            ReaderClock::Single(w) => {
                if let Some(restored) = start.watermark {
                    w.restore(restored);
                }
            }
            ReaderClock::Partitioned(w, ..) => {
                w.restore(start.watermark, start.partition_watermarks.clone())
            }
        }
    }

    fn position(&self, rows: u64, connector: Option<String>) -> SourcePosition {
        SourcePosition {
            rows,
            watermark: self.current(),
            connector,
            partition_watermarks: match self {
                ReaderClock::Partitioned(w, ..) => w.partition_watermarks(),
                _ => Default::default(),
            },
        }
    }

    fn segments(&mut self, batch: &RecordBatch) -> EngineResult<Vec<Segment>> {
        match self {
            ReaderClock::None => Ok(vec![(0..batch.num_rows(), None)]),
            ReaderClock::Single(w) => w.segments(batch),
            ReaderClock::Partitioned(w, partitions, taken) => {
                // Every assigned partition first: a partition without rows yet holds the
                // watermark back from the first batch on.
                Self::take_assigned(w, partitions, taken, Instant::now());
                let partition = partitions.current().ok_or_else(|| {
                    crate::error::EngineError::Internal(
                        "a partitioned source yielded a batch without saying its partition"
                            .to_string(),
                    )
                })?;
                w.segments(partition, batch, Instant::now())
            }
        }
    }

    /// Takes in the partitions the connector assigned since the last call.
    fn take_assigned(
        w: &mut PartitionWatermarks,
        partitions: &SourcePartitions,
        taken: &mut u64,
        now: Instant,
    ) {
        let generation = partitions.generation();
        if generation != *taken
            && let Some(assigned) = partitions.assigned()
        {
            w.assign(&assigned, now);
            *taken = generation;
        }
    }

    /// A partitioned reader's periodic check: takes in newly assigned partitions and turns
    /// quiet ones idle. Returns the watermark if it advanced, and whether the reader is idle.
    fn check_idle(&mut self) -> (Option<EventTime>, bool) {
        match self {
            ReaderClock::Partitioned(w, partitions, taken) => {
                let now = Instant::now();
                Self::take_assigned(w, partitions, taken, now);
                (w.check_idle(now), w.is_idle())
            }
            _ => (None, false),
        }
    }
}

/// Runs a source; `aligned` is its number in `group`'s watermark alignment, if it takes part.
pub(crate) async fn run_source(
    task: SourceTask,
    group: std::sync::Arc<BoundedSourceGroup>,
    aligned: Option<usize>,
) -> EngineResult<()> {
    let SourceTask {
        name,
        mut stream,
        bounded,
        projection,
        watermark,
        partitions,
        output,
        metrics,
        checkpoint,
        connector_position,
    } = task;
    let partitioned = watermark.is_some() && partitions.is_some();
    // Ticks check for idle partitions and pass completed checkpoints' positions on.
    let ticking = partitioned || (checkpoint.is_some() && connector_position.is_some());
    let mut clock = ReaderClock::new(watermark, partitions);
    let mut rows_read = 0u64;
    let mut injector = None;
    if let Some(c) = checkpoint {
        rows_read = c.start.rows;
        clock.restore(&c.start);
        if let Some(restored) = c
            .start
            .watermark
            .filter(|_| !matches!(clock, ReaderClock::None))
        {
            // Downstream operators restored their own watermarks; this primes the inputs'.
            if output.send(Message::Watermark(restored)).await.is_err() {
                return Ok(());
            }
            if let Some(index) = aligned {
                group.advance(index, restored);
            }
        }
        let mut triggers = c.handle.subscribe();
        triggers.mark_unchanged();
        injector = Some(BarrierInjector {
            handle: c.handle,
            part: c.part,
            triggers,
            positions: VecDeque::new(),
            connector_position: connector_position.clone(),
        });
    }
    // Read between batches only, so the connector's position covers exactly the rows sent.
    let position = |rows: u64, clock: &ReaderClock| {
        clock.position(rows, connector_position.as_ref().and_then(|p| p.get()))
    };
    // Whether the reader told downstream it is idle (and has sent nothing since).
    let mut idle_sent = false;
    let mut idle_check = tokio::time::interval(TICK);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(index) = aligned {
            loop {
                tokio::select! {
                    _ = group.wait_aligned(index) => break,
                    epoch = BarrierInjector::triggered(&mut injector) => {
                        if let Some(i) = &mut injector {
                            i.report(epoch, position(rows_read, &clock));
                        }
                        if output.send(Message::Barrier(epoch)).await.is_err() {
                            return Ok(());
                        }
                    }
                    _ = output.closed() => return Ok(()),
                }
            }
        }
        let next = tokio::select! {
            next = stream.next() => next,
            epoch = BarrierInjector::triggered(&mut injector) => {
                if let Some(i) = &mut injector {
                    i.report(epoch, position(rows_read, &clock));
                }
                if output.send(Message::Barrier(epoch)).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            _ = idle_check.tick(), if ticking => {
                if let Some(i) = &mut injector {
                    i.notify_completed();
                }
                let (advanced, idle) = clock.check_idle();
                if let Some(w) = advanced {
                    tracing::debug!(source = %name, watermark = w, "watermark after idleness");
                    if output.send(Message::Watermark(w)).await.is_err() {
                        return Ok(());
                    }
                    metrics.set_watermark(w);
                    if let Some(index) = aligned {
                        group.advance(index, w);
                    }
                }
                if idle && !idle_sent {
                    tracing::debug!(source = %name, "source reader idle");
                    if output.send(Message::Idle).await.is_err() {
                        return Ok(());
                    }
                    idle_sent = true;
                }
                continue;
            }
            _ = output.closed() => return Ok(()),
        };
        let batch = match next {
            Some(batch) => batch?,
            None => break,
        };
        rows_read += batch.num_rows() as u64;
        let segments = clock.segments(&batch)?;
        let batch = match &projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        for (rows, advanced) in segments {
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                batch.slice(rows.start, rows.len())
            };
            let rows = part.num_rows();
            if rows > 0 {
                if output.send(Message::Data(part)).await.is_err() {
                    return Ok(());
                }
                idle_sent = false;
                metrics.add_in(rows);
                metrics.add_out(rows);
            }
            if let Some(w) = advanced {
                if output.send(Message::Watermark(w)).await.is_err() {
                    return Ok(());
                }
                idle_sent = false;
                metrics.set_watermark(w);
                if let Some(index) = aligned {
                    group.advance(index, w);
                }
            }
        }
    }
    tracing::debug!(source = %name, "source reached the end of its input");
    if let Some(i) = &injector {
        i.handle.report_end(i.part, position(rows_read, &clock));
    }
    if bounded {
        group.end(aligned);
        loop {
            tokio::select! {
                _ = group.wait_all_ended() => break,
                epoch = BarrierInjector::triggered(&mut injector) => {
                    if let Some(i) = &mut injector {
                        i.report(epoch, position(rows_read, &clock));
                    }
                    if output.send(Message::Barrier(epoch)).await.is_err() {
                        return Ok(());
                    }
                }
                _ = output.closed() => return Ok(()),
            }
        }
        if output
            .send(Message::Watermark(WATERMARK_END))
            .await
            .is_err()
        {
            return Ok(());
        }
        metrics.set_watermark(WATERMARK_END);
    }
    let _ = output.send(Message::End).await;
    Ok(())
}

/// Runs a source that follows a materialized view: the view's rows, then its job's changes
/// and watermarks as they come, ending when the job's input ends.
pub(crate) async fn run_view_source(
    mut stream: BoxStream<'static, EngineResult<Message>>,
    schema: SchemaRef,
    metrics: Arc<SourceMetrics>,
    counters: Arc<OperatorMetrics>,
    output: mpsc::Sender<Message>,
) -> EngineResult<()> {
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = output.closed() => return Ok(()),
        };
        let message = match next.transpose()? {
            Some(Message::Data(batch)) => {
                let rows = batch.num_rows();
                metrics.add_rows(rows as u64);
                counters.add_in(rows);
                counters.add_out(rows);
                // The query's own column names (and no columns at all for `count(*)`).
                Message::Data(RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    batch.columns().to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(rows)),
                )?)
            }
            Some(Message::Watermark(w)) => {
                counters.set_watermark(w);
                Message::Watermark(w)
            }
            Some(message) => message,
            None => Message::End,
        };
        let end = matches!(message, Message::End);
        if output.send(message).await.is_err() || end {
            return Ok(());
        }
    }
}

/// The input channels of an operator, read in turn; a channel can be paused (while barrier
/// alignment waits for the others), which `select_all` cannot do.
struct InputChannels {
    receivers: Vec<mpsc::Receiver<Message>>,
    /// Channels that delivered the barrier being aligned: not read until it is complete.
    paused: Vec<bool>,
    /// Channels whose sender is gone.
    closed: Vec<bool>,
    /// The channel read first next time, so no busy channel starves the others.
    next: usize,
}

impl InputChannels {
    fn new(receivers: Vec<mpsc::Receiver<Message>>) -> Self {
        let n = receivers.len();
        Self {
            receivers,
            paused: vec![false; n],
            closed: vec![false; n],
            next: 0,
        }
    }

    /// The next message of any channel that is not paused; `None` once every channel that is
    /// not paused has closed.
    async fn next(&mut self) -> Option<(usize, Message)> {
        std::future::poll_fn(|cx| {
            let n = self.receivers.len();
            let mut open = false;
            for k in 0..n {
                let i = (self.next + k) % n;
                if self.paused[i] || self.closed[i] {
                    continue;
                }
                match self.receivers[i].poll_recv(cx) {
                    std::task::Poll::Ready(Some(m)) => {
                        self.next = (i + 1) % n;
                        return std::task::Poll::Ready(Some((i, m)));
                    }
                    std::task::Poll::Ready(None) => self.closed[i] = true,
                    std::task::Poll::Pending => open = true,
                }
            }
            if open {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(None)
            }
        })
        .await
    }
}

/// Barrier alignment: which live channels delivered the barrier of the epoch being aligned.
#[derive(Default)]
struct Alignment {
    epoch: Option<Epoch>,
}

impl Alignment {
    /// Whether every channel that has not ended delivered the barrier.
    fn complete(channels: &InputChannels, ended: &[bool]) -> bool {
        channels
            .paused
            .iter()
            .zip(ended)
            .all(|(paused, ended)| *paused || *ended)
    }
}

/// An operator instance's part in checkpoints.
pub(crate) struct OperatorCheckpoint {
    pub handle: Arc<CheckpointHandle>,
    pub part: PartId,
}

/// The table the driver adds to each operator snapshot, for the context's state.
pub(crate) const DRIVER_TABLE: &str = "__driver";
/// The combined input watermark, in [`DRIVER_TABLE`].
const COMBINED_WATERMARK: &str = "combined_watermark";
/// The instance's late-row count, in [`DRIVER_TABLE`].
const LATE_ROWS: &str = "late_rows";

/// An instance's snapshot at a barrier: the operator's declared tables (stateless operators
/// are not asked) and the context's watermark and late-row count.
fn snapshot(
    op: &mut dyn Operator,
    ctx: &OperatorContext,
    epoch: Epoch,
) -> EngineResult<StateSnapshot> {
    let mut snapshot = if ctx.state_tables().is_empty() {
        StateSnapshot::new()
    } else {
        let s = op.snapshot(epoch)?;
        s.check_declared(&op.info().name, ctx.state_tables(), &[])?;
        s
    };
    let late = i64::try_from(ctx.late_rows()).unwrap_or(i64::MAX);
    snapshot.add_values(
        DRIVER_TABLE,
        &[
            (COMBINED_WATERMARK, ctx.input_watermark()),
            (LATE_ROWS, Some(late)),
        ],
    )?;
    Ok(snapshot)
}

/// Puts an instance's snapshot back into the operator and its context, before any input.
pub(crate) fn restore(
    op: &mut dyn Operator,
    ctx: &mut OperatorContext,
    snapshot: StateSnapshot,
) -> EngineResult<()> {
    snapshot.check_declared(&op.info().name, ctx.state_tables(), &[DRIVER_TABLE])?;
    let values = snapshot.values(DRIVER_TABLE)?;
    ctx.set_input_watermark(values.get(COMBINED_WATERMARK).copied().flatten());
    let late = values.get(LATE_ROWS).copied().flatten().unwrap_or(0);
    ctx.restore_late_rows(u64::try_from(late).unwrap_or(0));
    let snapshot = snapshot.without(DRIVER_TABLE);
    if ctx.state_tables().is_empty() && snapshot.is_empty() {
        return Ok(());
    }
    op.restore(snapshot)
}

/// Per-input watermarks and the combined (minimum) watermark.
///
/// A bounded input that reaches the end of time keeps counting with its last watermark until
/// every bounded input of the operator has reached it (DESIGN.md 1.7 rule 5, applied at each
/// operator): the jump of one bounded input must not overtake rows of another that are still
/// on their way, which would make them late.
///
/// An idle input ([`Message::Idle`]) is left out of the minimum until it sends rows or a
/// watermark again; when every input is idle the combined watermark is the maximum of theirs
/// (Flink's `StatusWatermarkValve`).
struct InputWatermarks {
    inputs: Vec<Option<EventTime>>,
    bounded: Vec<bool>,
    ended: Vec<bool>,
    idle: Vec<bool>,
    combined: Option<EventTime>,
}

impl InputWatermarks {
    fn new(bounded: Vec<bool>) -> Self {
        let n = bounded.len();
        Self {
            inputs: vec![None; n],
            bounded,
            ended: vec![false; n],
            idle: vec![false; n],
            combined: None,
        }
    }

    /// Records input `i`'s watermark; returns the combined watermark if it advanced.
    fn update(&mut self, i: usize, watermark: EventTime) -> Option<EventTime> {
        self.idle[i] = false;
        if watermark == WATERMARK_END && self.bounded[i] {
            self.ended[i] = true;
        } else {
            let slot = &mut self.inputs[i];
            *slot = Some(slot.map_or(watermark, |w| w.max(watermark)));
        }
        self.combine()
    }

    /// Input `i` is idle; returns the combined watermark if leaving it out advanced it.
    fn set_idle(&mut self, i: usize) -> Option<EventTime> {
        self.idle[i] = true;
        self.combine()
    }

    /// Input `i` sent rows: it is active again.
    fn set_active(&mut self, i: usize) {
        self.idle[i] = false;
    }

    /// Whether every input that has not reached its end is idle (and one is).
    fn all_idle(&self) -> bool {
        let live = (0..self.inputs.len())
            .filter(|&i| self.inputs[i] != Some(WATERMARK_END) && !self.ended[i]);
        let mut any = false;
        for i in live {
            if !self.idle[i] {
                return false;
            }
            any = true;
        }
        any
    }

    fn combine(&mut self) -> Option<EventTime> {
        let bounded_done = self
            .bounded
            .iter()
            .zip(&self.ended)
            .all(|(bounded, ended)| !bounded || *ended);
        let watermark = |i: usize| {
            if self.ended[i] && bounded_done {
                Some(WATERMARK_END)
            } else {
                self.inputs[i]
            }
        };
        let min = if self.idle.iter().all(|idle| *idle) {
            // Every input is idle: the maximum of their watermarks, as Flink's
            // StatusWatermarkValve does, so that what they sent is not held back forever.
            (0..self.inputs.len()).filter_map(watermark).max()
        } else {
            (0..self.inputs.len())
                .filter(|&i| !self.idle[i])
                .map(watermark)
                .min()
                .flatten()
        };
        match (min, self.combined) {
            (Some(m), Some(c)) if m <= c => None,
            (Some(m), _) => {
                self.combined = Some(m);
                Some(m)
            }
            (None, _) => None,
        }
    }
}

/// What one input channel of an operator instance carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputChannel {
    /// The operator's input (a join's side) its rows belong to. With parallel instances an
    /// input arrives on several channels, one per upstream instance.
    pub input: usize,
    /// Whether everything upstream of the channel is bounded.
    pub bounded: bool,
}

/// Runs an operator over its input channels (`wiring[i]` describes channel `i`). Watermarks
/// and barriers are combined over the channels, the end is reached when every channel ended.
/// Rows in and out and the output watermark are counted into `metrics` as they pass. The
/// operator's state is measured after the hooks a message ran, as often as [`StateMeter`]
/// allows (after every message while measuring is cheap; also when no further message comes,
/// and at the end): the figures go into `metrics` and are charged to the query's and the
/// server's memory limits, and a charge over a limit fails the task.
pub(crate) async fn run_operator(
    mut op: Box<dyn Operator>,
    mut ctx: OperatorContext,
    inputs: Vec<mpsc::Receiver<Message>>,
    wiring: Vec<InputChannel>,
    output: mpsc::Sender<Message>,
    metrics: Arc<OperatorMetrics>,
    checkpoint: Option<OperatorCheckpoint>,
) -> EngineResult<()> {
    let mut meter = StateMeter {
        account: ctx.take_state_account(),
        metrics: Arc::clone(&metrics),
        next: Instant::now(),
    };
    // When the state may next be measured, and whether a hook ran since the last measurement.
    let refresh = tokio::time::sleep_until(meter.next);
    tokio::pin!(refresh);
    let mut changed = false;
    let n = inputs.len();
    let mut merged = InputChannels::new(inputs);
    let mut watermarks = InputWatermarks::new(wiring.iter().map(|w| w.bounded).collect());
    // A restored operator's combined watermark: inputs must pass it before hooks hear of it.
    watermarks.combined = ctx.input_watermark();
    let mut ended = vec![false; n];
    let mut alignment = Alignment::default();
    // Whether the instance told downstream it is idle (and has sent nothing since).
    let mut idle_sent = false;
    // The last complete checkpoint the operator was told of.
    let mut notified = 0;
    // An operator on processing time is called on its timer, and is never idle.
    let mut timer = op.timer().map(|period| {
        let mut timer = tokio::time::interval(period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    loop {
        let next = tokio::select! {
            next = merged.next() => Some(next),
            _ = output.closed() => return Ok(()),
            _ = &mut refresh, if changed => {
                meter.measure(op.as_ref())?;
                changed = false;
                refresh.as_mut().reset(meter.next);
                continue;
            }
            _ = async { timer.as_mut()?.tick().await; Some(()) },
                if timer.is_some() && alignment.epoch.is_none() => None,
        };
        let mut all_ended = false;
        let Some(next) = next else {
            op.on_timer(&mut ctx)?;
            if !forward(&mut ctx, &output, &metrics, &mut idle_sent).await {
                return Ok(());
            }
            continue;
        };
        // All inputs closed without `End`: an upstream task failed; its error reaches the
        // consumer through the query's task set.
        let Some((i, message)) = next else {
            return Ok(());
        };
        match message {
            Message::Data(batch) => {
                watermarks.set_active(i);
                metrics.add_in(batch.num_rows());
                op.on_batch(wiring[i].input, batch, &mut ctx)?
            }
            Message::Watermark(w) => {
                if let Some(w) = watermarks.update(i, w) {
                    ctx.set_input_watermark(Some(w));
                    op.on_watermark(w, &mut ctx)?;
                }
            }
            Message::Idle => {
                if let Some(w) = watermarks.set_idle(i) {
                    ctx.set_input_watermark(Some(w));
                    op.on_watermark(w, &mut ctx)?;
                }
            }
            Message::Barrier(epoch) => {
                merged.paused[i] = true;
                alignment.epoch = Some(epoch);
            }
            Message::End => {
                ended[i] = true;
                if let Some(w) = watermarks.update(i, WATERMARK_END) {
                    ctx.set_input_watermark(Some(w));
                    op.on_watermark(w, &mut ctx)?;
                }
                if ended.iter().all(|e| *e) {
                    op.on_end(&mut ctx)?;
                    all_ended = true;
                }
            }
        }
        if let Some(epoch) = alignment.epoch
            && Alignment::complete(&merged, &ended)
            && !all_ended
        {
            // Every live input is at the barrier: the state holds exactly what came before.
            if let Some(c) = &checkpoint {
                let completed = c.handle.last_completed();
                if completed > notified {
                    op.checkpoint_completed(completed);
                    notified = completed;
                }
                // A snapshot that fails fails this checkpoint, not the query.
                match snapshot(op.as_mut(), &ctx, epoch) {
                    Ok(s) => c.handle.report_operator(epoch, c.part, s),
                    Err(e) => c.handle.report_failure(epoch, e.to_string()),
                }
            }
            op.on_barrier(epoch, &mut ctx)?;
            alignment.epoch = None;
            merged.paused.iter_mut().for_each(|p| *p = false);
        }
        let finished = all_ended || op.is_finished();
        changed = true;
        // After the hooks: state the watermark freed is gone before it is charged.
        if finished || Instant::now() >= meter.next {
            meter.measure(op.as_ref())?;
            changed = false;
            refresh.as_mut().reset(meter.next);
        }
        if !forward(&mut ctx, &output, &metrics, &mut idle_sent).await {
            return Ok(());
        }
        // Every input is idle: so is this instance's output, until it sends something.
        if !finished && !idle_sent && timer.is_none() && watermarks.all_idle() {
            if output.send(Message::Idle).await.is_err() {
                return Ok(());
            }
            idle_sent = true;
        }
        if finished {
            let _ = output.send(Message::End).await;
            return Ok(());
        }
    }
}

/// Measures an operator instance's state: its figures for `EXPLAIN ANALYZE` and `SHOW JOBS`,
/// and the charge to its query's and the server's memory limits.
///
/// `Operator::state_usage` walks the state (most operators sum a size over their groups,
/// rows or batches), so it is called again only once the operator ran [`MEASURE_SPACING`]
/// times as long as the last call took: after every message while the state is small, less
/// often as it grows. How far a query can overshoot its limit is what it adds in that time.
struct StateMeter {
    /// `None` for an instance outside any query's budget (tests).
    account: Option<crate::runtime::memory::StateAccount>,
    metrics: Arc<OperatorMetrics>,
    /// When the state may be measured again.
    next: Instant,
}

impl StateMeter {
    fn measure(&mut self, op: &dyn Operator) -> EngineResult<()> {
        let started = Instant::now();
        let (rows, bytes) = op
            .state_usage()
            .iter()
            .fold((0, 0), |(r, b), t| (r + t.rows, b + t.bytes));
        self.metrics.set_state(rows, bytes);
        let now = Instant::now();
        self.next = now + (now - started) * MEASURE_SPACING;
        match &mut self.account {
            Some(account) => Ok(account.charge(bytes)?),
            None => Ok(()),
        }
    }
}

/// Sends what the operator produced downstream, counting it; false when the consumer is
/// gone. `idle_sent` is cleared by rows and watermarks.
async fn forward(
    ctx: &mut OperatorContext,
    output: &mpsc::Sender<Message>,
    metrics: &OperatorMetrics,
    idle_sent: &mut bool,
) -> bool {
    for m in ctx.drain() {
        let (rows, watermark) = match &m {
            Message::Data(batch) => (batch.num_rows(), None),
            Message::Watermark(w) => (0, Some(*w)),
            _ => (0, None),
        };
        if matches!(m, Message::Data(_) | Message::Watermark(_)) {
            *idle_sent = false;
        }
        if output.send(m).await.is_err() {
            return false;
        }
        metrics.add_out(rows);
        if let Some(w) = watermark {
            metrics.set_watermark(w);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::operator::OperatorInfo;
    use crate::state::{StateTable, StateUsage};
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// Remembers every value it was given, and every completed checkpoint it is told of as
    /// minus its epoch; its snapshot is that list.
    struct Recorder {
        info: OperatorInfo,
        seen: Vec<i64>,
    }

    impl Operator for Recorder {
        fn info(&self) -> &OperatorInfo {
            &self.info
        }

        fn on_batch(
            &mut self,
            _input: usize,
            batch: RecordBatch,
            _out: &mut OperatorContext,
        ) -> EngineResult<()> {
            let values = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            self.seen.extend(values.values().iter().copied());
            Ok(())
        }

        fn checkpoint_completed(&mut self, epoch: Epoch) {
            self.seen.push(-(epoch as i64));
        }

        fn state_usage(&self) -> Vec<StateUsage> {
            vec![StateUsage {
                table: "seen",
                rows: self.seen.len(),
                bytes: 0,
            }]
        }

        fn snapshot(&mut self, _epoch: Epoch) -> EngineResult<StateSnapshot> {
            let mut s = StateSnapshot::new();
            let batch = RecordBatch::try_new(
                Arc::clone(&self.info.schema),
                vec![Arc::new(Int64Array::from(self.seen.clone()))],
            )?;
            s.add("seen", batch)?;
            Ok(s)
        }

        fn restore(&mut self, snapshot: StateSnapshot) -> EngineResult<()> {
            for batch in snapshot.table("seen") {
                let values = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                self.seen.extend(values.values().iter().copied());
            }
            Ok(())
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    fn data(v: i64) -> Message {
        Message::Data(
            RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![v]))]).unwrap(),
        )
    }

    fn snapshot_values(handle: &CheckpointHandle, epoch: Epoch) -> Vec<i64> {
        let parts = handle.take(epoch);
        let snapshot = parts
            .operators
            .values()
            .next()
            .expect("the operator reported");
        snapshot.table("seen")[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[tokio::test]
    async fn an_input_that_delivered_the_barrier_waits_for_the_others() {
        let handle = Arc::new(CheckpointHandle::default());
        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let op = Box::new(Recorder {
            info: OperatorInfo {
                name: "Recorder".to_string(),
                schema: schema(),
            },
            seen: Vec::new(),
        });
        let wiring = vec![
            InputChannel {
                input: 0,
                bounded: false,
            },
            InputChannel {
                input: 1,
                bounded: false,
            },
        ];
        let tables = vec![StateTable::new(
            "seen",
            Vec::new(),
            "every value",
            crate::state::Freed::Never(""),
        )];
        let ctx = OperatorContext::new(1, 0, tables, Arc::default());
        let task = tokio::spawn(run_operator(
            op,
            ctx,
            vec![rx0, rx1],
            wiring,
            out_tx,
            Arc::default(),
            Some(OperatorCheckpoint {
                handle: Arc::clone(&handle),
                part: PartId {
                    node: 1,
                    instance: 0,
                },
            }),
        ));
        // Input 0 reaches the barrier and goes on; input 1 is still before it.
        for m in [data(1), Message::Barrier(1), data(2), data(3)] {
            tx0.send(m).await.unwrap();
        }
        tx1.send(data(10)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(handle.take(1).operators.is_empty(), "not aligned yet");
        tx1.send(Message::Barrier(1)).await.unwrap();
        tx1.send(data(11)).await.unwrap();
        // The barrier comes out once aligned.
        loop {
            match out_rx.recv().await.unwrap() {
                Message::Barrier(1) => break,
                Message::Data(_) | Message::Watermark(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // Rows 2 and 3 came after input 0's barrier: the snapshot holds neither.
        let mut seen = snapshot_values(&handle, 1);
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 10]);
        // An input that ends stops counting towards the alignment.
        tx0.send(Message::Barrier(2)).await.unwrap();
        tx1.send(Message::End).await.unwrap();
        loop {
            if let Message::Barrier(2) = out_rx.recv().await.unwrap() {
                break;
            }
        }
        let mut seen = snapshot_values(&handle, 2);
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 3, 10, 11]);
        tx0.send(Message::End).await.unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_operator_hears_of_a_completed_checkpoint_before_its_next_snapshot() {
        let handle = Arc::new(CheckpointHandle::default());
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let ctx = OperatorContext::new(1, 0, declared("seen"), Arc::default());
        let wiring = vec![InputChannel {
            input: 0,
            bounded: false,
        }];
        let task = tokio::spawn(run_operator(
            Box::new(recorder()),
            ctx,
            vec![rx],
            wiring,
            out_tx,
            Arc::default(),
            Some(OperatorCheckpoint {
                handle: Arc::clone(&handle),
                part: PartId {
                    node: 1,
                    instance: 0,
                },
            }),
        ));
        let mut barrier = async |epoch: Epoch, before: Message| {
            tx.send(before).await.unwrap();
            tx.send(Message::Barrier(epoch)).await.unwrap();
            while !matches!(out_rx.recv().await.unwrap(), Message::Barrier(e) if e == epoch) {}
            snapshot_values(&handle, epoch)
        };
        assert_eq!(barrier(1, data(1)).await, vec![4, 2, 1]);
        // Checkpoint 1 is written: told once, before snapshot 2, not again before 3.
        handle.completed(1);
        assert_eq!(barrier(2, data(5)).await, vec![4, 2, 1, 5, -1]);
        assert_eq!(barrier(3, data(6)).await, vec![4, 2, 1, 5, -1, 6]);
        tx.send(Message::End).await.unwrap();
        task.await.unwrap().unwrap();
    }

    fn recorder() -> Recorder {
        Recorder {
            info: OperatorInfo {
                name: "Recorder".to_string(),
                schema: schema(),
            },
            seen: vec![4, 2],
        }
    }

    fn declared(name: &'static str) -> Vec<StateTable> {
        vec![StateTable::new(
            name,
            Vec::new(),
            "every value",
            crate::state::Freed::Never(""),
        )]
    }

    #[test]
    fn the_context_s_watermark_and_late_rows_come_back_with_the_state() {
        let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut ctx = OperatorContext::new(1, 0, declared("seen"), Arc::clone(&total));
        ctx.set_input_watermark(Some(5));
        let rows =
            RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4]))])
                .unwrap();
        ctx.drop_late(&rows, &[(0, Some(1)), (1, None), (3, Some(2))])
            .unwrap();
        let part = snapshot(&mut recorder(), &ctx, 1).unwrap();

        // After a restart the job's total starts at zero; the instance adds its own count.
        let restarted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut ctx = OperatorContext::new(1, 0, declared("seen"), Arc::clone(&restarted));
        let mut op = recorder();
        op.seen.clear();
        restore(&mut op, &mut ctx, part).unwrap();
        assert_eq!(op.seen, vec![4, 2]);
        assert_eq!(ctx.input_watermark(), Some(5));
        assert_eq!(ctx.late_rows(), 3);
        assert_eq!(restarted.load(std::sync::atomic::Ordering::Relaxed), 3);
        ctx.drop_late(&rows, &[(2, Some(3))]).unwrap();
        assert_eq!(restarted.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[test]
    fn state_a_node_does_not_declare_is_refused_both_ways() {
        // The operator writes `seen`, but its node declares another table.
        let ctx = OperatorContext::new(1, 0, declared("other"), Arc::default());
        let err = snapshot(&mut recorder(), &ctx, 1).unwrap_err();
        assert!(err.to_string().contains("no state table seen"), "{err}");
        // A part holding `seen` does not restore into a node declaring `other`.
        let good = OperatorContext::new(1, 0, declared("seen"), Arc::default());
        let part = snapshot(&mut recorder(), &good, 1).unwrap();
        let mut ctx = OperatorContext::new(1, 0, declared("other"), Arc::default());
        assert!(restore(&mut recorder(), &mut ctx, part).is_err());
        // A stateless node is not asked for a snapshot: only the context's values.
        let stateless = OperatorContext::new(1, 0, Vec::new(), Arc::default());
        let part = snapshot(&mut recorder(), &stateless, 1).unwrap();
        assert_eq!(part.table_names(), vec![DRIVER_TABLE.to_string()]);
    }

    #[test]
    fn a_bounded_input_at_its_end_waits_for_the_other_bounded_inputs() {
        let mut w = InputWatermarks::new(vec![true, true]);
        assert_eq!(w.update(0, 10), None);
        assert_eq!(w.update(1, 5), Some(5));
        // Input 1 reached the end of time, but input 0 may still have rows in flight: input 1
        // counts with its last watermark (5), not with +infinity.
        assert_eq!(w.update(1, WATERMARK_END), None);
        assert_eq!(w.update(0, 12), None);
        assert_eq!(w.update(0, WATERMARK_END), Some(WATERMARK_END));
    }

    #[test]
    fn an_unbounded_input_does_not_wait_for_a_bounded_one() {
        let mut w = InputWatermarks::new(vec![true, false]);
        assert_eq!(w.update(0, 10), None);
        assert_eq!(w.update(1, 5), Some(5));
        assert_eq!(w.update(0, WATERMARK_END), None, "input 1 is still at 5");
        assert_eq!(
            w.update(1, 50),
            Some(50),
            "the ended bounded input no longer holds it back"
        );
    }

    #[test]
    fn combined_watermark_is_min_and_monotonic() {
        let mut w = InputWatermarks::new(vec![false, false]);
        assert_eq!(w.update(0, 10), None, "input 1 has no watermark yet");
        assert_eq!(w.update(1, 5), Some(5));
        assert_eq!(w.update(1, 20), Some(10));
        assert_eq!(w.update(0, 8), None, "a watermark never goes back");
        assert_eq!(w.update(0, WATERMARK_END), Some(20));
    }

    #[test]
    fn an_idle_input_is_left_out_of_the_combined_watermark_until_it_speaks_again() {
        let mut w = InputWatermarks::new(vec![false, false, false]);
        assert_eq!(w.update(0, 10), None);
        assert_eq!(w.set_idle(1), None, "input 2 has no watermark yet");
        assert!(!w.all_idle());
        assert_eq!(w.update(2, 30), Some(10), "input 1 is idle");
        // Input 1 comes back behind: the combined watermark does not go back, but input 1
        // holds it from now on.
        w.set_active(1);
        assert_eq!(w.update(1, 5), None);
        assert_eq!(w.update(0, 40), None);
        assert_eq!(w.update(1, 35), Some(30));
        assert_eq!(w.set_idle(2), Some(35), "input 2 idle: min(40, 35)");
        w.set_idle(0);
        assert!(!w.all_idle(), "input 1 is active");
        assert_eq!(w.set_idle(1), Some(40), "every input idle: the maximum");
        assert!(w.all_idle());
        assert_eq!(w.update(0, 50), Some(50), "the only active input");
        assert!(!w.all_idle());
    }
}
