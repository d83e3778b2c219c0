//! The task loops that drive sources and operators.
//!
//! Each source and each operator runs as one tokio task. Channels are bounded, so a slow
//! consumer slows its producers (backpressure). A task stops when its output channel is closed
//! (the consumer went away, or a downstream `LIMIT` is satisfied), which drops its inputs and so
//! stops everything upstream of it.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::connector::SourceMetrics;
use crate::error::EngineResult;
use crate::operators::source::{BoundedSourceGroup, WatermarkGenerator};
use crate::operators::{Operator, Output};
use crate::runtime::message::{EventTime, Message, WATERMARK_END};
use crate::runtime::metrics::OperatorMetrics;

/// How often at most an operator task asks its operator for its state tables (which walks
/// the state) to refresh its state figures, besides at its end.
const STATE_REFRESH: Duration = Duration::from_millis(100);

/// Everything a source task needs.
pub(crate) struct SourceTask {
    pub name: String,
    pub stream: BoxStream<'static, EngineResult<RecordBatch>>,
    pub bounded: bool,
    /// Columns of the source's batches to send on.
    pub projection: Option<Vec<usize>>,
    pub watermark: Option<WatermarkGenerator>,
    pub output: mpsc::Sender<Message>,
    /// This reader's counters.
    pub metrics: Arc<OperatorMetrics>,
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
        mut watermark,
        output,
        metrics,
    } = task;
    loop {
        if let Some(index) = aligned {
            tokio::select! {
                _ = group.wait_aligned(index) => {}
                _ = output.closed() => return Ok(()),
            }
        }
        let next = tokio::select! {
            next = stream.next() => next,
            _ = output.closed() => return Ok(()),
        };
        let batch = match next {
            Some(batch) => batch?,
            None => break,
        };
        let segments = match &mut watermark {
            Some(w) => w.segments(&batch)?,
            None => vec![(0..batch.num_rows(), None)],
        };
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
                metrics.add_in(rows);
                metrics.add_out(rows);
            }
            if let Some(w) = advanced {
                if output.send(Message::Watermark(w)).await.is_err() {
                    return Ok(());
                }
                metrics.set_watermark(w);
                if let Some(index) = aligned {
                    group.advance(index, w);
                }
            }
        }
    }
    tracing::debug!(source = %name, "source reached the end of its input");
    if bounded {
        tokio::select! {
            _ = group.end_and_wait(aligned) => {}
            _ = output.closed() => return Ok(()),
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

/// Merges the inputs of an operator into one stream of `(input index, message)`.
fn merge_inputs(
    inputs: Vec<mpsc::Receiver<Message>>,
) -> futures::stream::SelectAll<BoxStream<'static, (usize, Message)>> {
    futures::stream::select_all(inputs.into_iter().enumerate().map(|(i, rx)| {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
            .map(move |m| (i, m))
            .boxed()
    }))
}

/// Per-input watermarks and the combined (minimum) watermark.
///
/// A bounded input that reaches the end of time keeps counting with its last watermark until
/// every bounded input of the operator has reached it (DESIGN.md 1.7 rule 5, applied at each
/// operator): the jump of one bounded input must not overtake rows of another that are still
/// on their way, which would make them late.
struct InputWatermarks {
    inputs: Vec<Option<EventTime>>,
    bounded: Vec<bool>,
    ended: Vec<bool>,
    combined: Option<EventTime>,
}

impl InputWatermarks {
    fn new(bounded: Vec<bool>) -> Self {
        let n = bounded.len();
        Self {
            inputs: vec![None; n],
            bounded,
            ended: vec![false; n],
            combined: None,
        }
    }

    /// Records input `i`'s watermark; returns the combined watermark if it advanced.
    fn update(&mut self, i: usize, watermark: EventTime) -> Option<EventTime> {
        if watermark == WATERMARK_END && self.bounded[i] {
            self.ended[i] = true;
        } else {
            let slot = &mut self.inputs[i];
            *slot = Some(slot.map_or(watermark, |w| w.max(watermark)));
        }
        let bounded_done = self
            .bounded
            .iter()
            .zip(&self.ended)
            .all(|(bounded, ended)| !bounded || *ended);
        let min = (0..self.inputs.len())
            .map(|i| {
                if self.ended[i] && bounded_done {
                    Some(WATERMARK_END)
                } else {
                    self.inputs[i]
                }
            })
            .min()
            .flatten();
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
/// Rows in and out and the output watermark are counted into `metrics` as they pass; the
/// state figures are refreshed at most every [`STATE_REFRESH`], within that time of a change
/// (also when no further message comes), and at the end.
pub(crate) async fn run_operator(
    mut op: Box<dyn Operator>,
    inputs: Vec<mpsc::Receiver<Message>>,
    wiring: Vec<InputChannel>,
    output: mpsc::Sender<Message>,
    metrics: Arc<OperatorMetrics>,
) -> EngineResult<()> {
    // When the state figures may next be refreshed, and whether a hook ran since the last.
    let refresh = tokio::time::sleep(STATE_REFRESH);
    tokio::pin!(refresh);
    let mut changed = false;
    // Measuring a large state takes time: the next refresh waits at least 20 times as long as
    // this one took, so measuring never costs more than 5% of the operator's time.
    let refresh_state = |op: &dyn Operator| -> Instant {
        let started = Instant::now();
        let (rows, bytes) = op
            .state_tables()
            .iter()
            .fold((0, 0), |(r, b), t| (r + t.rows, b + t.bytes));
        metrics.set_state(rows, bytes);
        let now = Instant::now();
        now + STATE_REFRESH.max((now - started) * 20)
    };
    let n = inputs.len();
    let mut merged = merge_inputs(inputs);
    let mut watermarks = InputWatermarks::new(wiring.iter().map(|w| w.bounded).collect());
    let mut ended = vec![false; n];
    let mut barriers: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut out = Output::default();
    loop {
        let next = tokio::select! {
            next = merged.next() => next,
            _ = output.closed() => return Ok(()),
            _ = &mut refresh, if changed => {
                let next = refresh_state(op.as_ref());
                changed = false;
                refresh.as_mut().reset(next);
                continue;
            }
        };
        // All inputs closed without `End`: an upstream task failed; its error reaches the
        // consumer through the query's task set.
        let Some((i, message)) = next else {
            return Ok(());
        };
        let mut all_ended = false;
        match message {
            Message::Data(batch) => {
                metrics.add_in(batch.num_rows());
                op.on_batch(wiring[i].input, batch, &mut out)?
            }
            Message::Watermark(w) => {
                if let Some(w) = watermarks.update(i, w) {
                    op.on_watermark(w, &mut out)?;
                }
            }
            Message::Barrier(epoch) => {
                let seen = barriers.entry(epoch).or_insert(0);
                *seen += 1;
                if *seen == n - ended.iter().filter(|e| **e).count() {
                    barriers.remove(&epoch);
                    op.on_barrier(epoch, &mut out)?;
                }
            }
            Message::End => {
                ended[i] = true;
                if let Some(w) = watermarks.update(i, WATERMARK_END) {
                    op.on_watermark(w, &mut out)?;
                }
                if ended.iter().all(|e| *e) {
                    op.on_end(&mut out)?;
                    all_ended = true;
                }
            }
        }
        let finished = all_ended || op.is_finished();
        changed = true;
        if finished || Instant::now() >= refresh.deadline() {
            let next = refresh_state(op.as_ref());
            changed = false;
            refresh.as_mut().reset(next);
        }
        for m in out.drain() {
            let (rows, watermark) = match &m {
                Message::Data(batch) => (batch.num_rows(), None),
                Message::Watermark(w) => (0, Some(*w)),
                _ => (0, None),
            };
            if output.send(m).await.is_err() {
                return Ok(());
            }
            metrics.add_out(rows);
            if let Some(w) = watermark {
                metrics.set_watermark(w);
            }
        }
        if finished {
            let _ = output.send(Message::End).await;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
