//! The batch stream of an opened nexmark source: generation in batches, the optional
//! wall-clock rate limit, the end of the stream after `events.max` events, and the blocks of a
//! split reader ([`super::split`]).
//!
//! Event `n` of the combined stream is due `n / events.per.second` seconds after the first
//! poll (for a restored reader, `(n - s) / events.per.second` seconds, where `s` follows the
//! last row it had produced: it resumes the pace from its position, without a burst). Event times never depend on the wall clock.
//! A reader opened with `start_row` jumps straight to the event of that row of its split. A rate-limited reader sleeps (never spins) until a full batch of its table is due or
//! [`FLUSH_INTERVAL`] has passed since its last batch, then emits whatever is due, so that slow
//! streams still deliver rows promptly. Unlimited readers emit full batches back to back. The
//! stream holds no resources besides memory: dropping it cancels it.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_engine::connector::{BatchStream, ConnectorResult, SourceMetrics, SourceSplit};
use futures::StreamExt;
use tokio::time::Instant;

use super::config::NexmarkOptions;
use super::generator::NexmarkGenerator;
use super::generator_config::{GeneratorConfig, count_before, event_of};
use super::schema::OutputPlan;
use super::split::SplitBlocks;

/// Longest time a rate-limited reader holds back rows that are due.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Cap on rows per batch, which also keeps every string column far below Arrow's 2 GiB.
const MAX_BATCH_ROWS: usize = 1 << 20;

/// What `open` hands to [`batch_stream`].
pub struct ReaderParams {
    pub options: NexmarkOptions,
    pub plan: OutputPlan,
    pub metrics: Arc<SourceMetrics>,
    pub batch_size: usize,
    pub split: SourceSplit,
    /// Rows of this split (of the table) already produced by an earlier run.
    pub start_row: u64,
}

/// The stream of batches of one reader.
pub fn batch_stream(params: ReaderParams) -> BatchStream {
    let ReaderParams {
        options,
        plan,
        metrics,
        batch_size,
        split,
        start_row,
    } = params;
    let config = GeneratorConfig::new(&options);
    let generator = NexmarkGenerator::new(config, options.table, plan.wanted());
    let mut blocks = SplitBlocks::new(config, split);
    // Rows are a function of their event number: a restored reader jumps to its next row.
    let next_event = blocks.clone().event_of_row(options.table, start_row);
    // The pace counts from the event after the last row already produced, as the events of
    // other tables in between take their time in an uninterrupted run too.
    let pace_origin = match start_row.checked_sub(1) {
        None => 0,
        Some(last) => blocks.event_of_row(options.table, last).saturating_add(1),
    };
    let reader = Reader {
        generator,
        blocks,
        plan,
        metrics,
        batch_size: batch_size.clamp(1, MAX_BATCH_ROWS),
        next_event,
        end_event: options.events_max.unwrap_or(u64::MAX),
        pacing: options
            .events_per_second
            .map(|rate| Pacing::new(rate, pace_origin)),
        failed: false,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next_batch().await?;
        Some((item, reader))
    })
    .boxed()
}

struct Reader {
    generator: NexmarkGenerator,
    /// The events this reader owns.
    blocks: SplitBlocks,
    plan: OutputPlan,
    metrics: Arc<SourceMetrics>,
    batch_size: usize,
    /// The first event of the combined stream not generated yet.
    next_event: u64,
    /// The first event that will never be generated.
    end_event: u64,
    pacing: Option<Pacing>,
    /// Set after an error, which ends the stream.
    failed: bool,
}

impl Reader {
    async fn next_batch(&mut self) -> Option<ConnectorResult<RecordBatch>> {
        loop {
            if self.failed || self.next_event >= self.end_event {
                return None;
            }
            let to = match self.pacing.as_mut() {
                None => self.end_event,
                Some(pacing) => {
                    let table = self.generator.table();
                    let rows_before = count_before(table, self.next_event);
                    let full_at = event_of(table, rows_before + self.batch_size as u64 - 1)
                        .saturating_add(1)
                        .min(self.end_event);
                    match pacing.due(self.next_event, full_at, self.end_event) {
                        Ok(due) => due,
                        Err(wake_at) => {
                            tokio::time::sleep_until(wake_at).await;
                            continue;
                        }
                    }
                }
            };

            let rows = self.take_rows(to);
            let num_rows = rows
                .iter()
                .map(|range| range.end - range.start)
                .sum::<u64>() as usize;
            if num_rows == 0 {
                // Only events of the other tables, or of other readers, were due.
                continue;
            }
            let columns = match self.generator.generate(&rows) {
                Ok(columns) => columns,
                Err(error) => return Some(Err(self.fail(error))),
            };
            if let Some(pacing) = self.pacing.as_mut() {
                pacing.flushed();
            }
            return Some(match self.plan.assemble(&columns, num_rows) {
                Ok(batch) => {
                    self.metrics.add_rows(num_rows as u64);
                    Ok(batch)
                }
                Err(error) => Err(self.fail(error)),
            });
        }
    }

    /// The rows of the next batch among events `next_event..to`: at most `batch_size` of this
    /// reader's table, from the blocks it owns, as ranges of row numbers of the table. Moves
    /// `next_event` past them.
    fn take_rows(&mut self, to: u64) -> Vec<Range<u64>> {
        let table = self.generator.table();
        let mut rows = Vec::new();
        let mut wanted = self.batch_size as u64;
        while wanted > 0 && self.next_event < to {
            let owned = self.blocks.owned_from(self.next_event);
            let (from, until) = (owned.start.min(to), owned.end.min(to));
            let first = count_before(table, from);
            let available = count_before(table, until) - first;
            let taken = available.min(wanted);
            if taken > 0 {
                rows.push(first..first + taken);
            }
            wanted -= taken;
            self.next_event = if taken < available {
                event_of(table, first + taken)
            } else {
                until
            };
        }
        rows
    }

    fn fail<E>(&mut self, error: E) -> E {
        self.failed = true;
        error
    }
}

/// The wall-clock schedule of a rate-limited reader.
struct Pacing {
    events_per_second: u64,
    /// The event due at the first poll: 0, or for a restored reader the event after the last
    /// row it had produced. The schedule counts from it, so a restored reader neither bursts
    /// through the time of the events before it nor waits for it.
    origin: u64,
    /// When event `origin` was due: the first poll, so a source opened long before it is read
    /// does not start with a burst.
    start: Option<Instant>,
    /// When due rows must be emitted even if they do not fill a batch.
    flush_at: Option<Instant>,
}

impl Pacing {
    fn new(events_per_second: u64, origin: u64) -> Self {
        Self {
            events_per_second,
            origin,
            start: None,
            flush_at: None,
        }
    }

    /// When event `event` is due, or `None` beyond any representable instant.
    fn due_time(&self, start: Instant, event: u64) -> Option<Instant> {
        let nanos = u128::from(event.saturating_sub(self.origin)) * 1_000_000_000
            / u128::from(self.events_per_second);
        start.checked_add(Duration::from_nanos(u64::try_from(nanos).ok()?))
    }

    /// How many events are due at `now`: those whose due time is not after it.
    fn due_count(&self, start: Instant, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(start).as_nanos();
        let due = elapsed * u128::from(self.events_per_second) / 1_000_000_000 + 1;
        u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_add(self.origin)
    }

    /// `Ok(to)` when events `next..to` should be generated now; `Err(instant)` to sleep until
    /// something may be: the batch filling up (event `full_at - 1` due) or the flush deadline,
    /// but never before another event is due.
    fn due(&mut self, next: u64, full_at: u64, end: u64) -> Result<u64, Instant> {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let flush_at = *self.flush_at.get_or_insert(now);
        let due = self.due_count(start, now).min(end);
        if due >= full_at || (due > next && now >= flush_at) {
            return Ok(due);
        }
        let far = now + Duration::from_secs(3600);
        let batch_full = self.due_time(start, full_at - 1).unwrap_or(far);
        let next_due = self.due_time(start, next).unwrap_or(far);
        Err(batch_full.min(flush_at).max(next_due))
    }

    fn flushed(&mut self) {
        self.flush_at = Some(Instant::now() + FLUSH_INTERVAL);
    }
}
