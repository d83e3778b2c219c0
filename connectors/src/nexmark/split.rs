//! How parallel readers share one nexmark source.
//!
//! The combined event stream is cut into blocks of about [`BLOCK_EVENTS`] events, and reader
//! `index` of `count` reads the blocks `k` with `k % count == index`. Block `k` nominally
//! starts at event `k * BLOCK_EVENTS`; the start is moved forward to the first event of the
//! next millisecond, so that events of equal time, and hence the rows of a table with equal
//! `date_time`, are always in one block. So the readers together produce every row once, each
//! reader in event order, and rows of equal time stay in one reader in their order, as
//! [`SourceConnector::splittable`](eddy_engine::connector::SourceConnector::splittable)
//! requires. The boundaries depend only on the options, so every reader computes the same
//! ones, whatever its batch size.

use std::ops::Range;

use eddy_engine::connector::SourceSplit;

use super::config::NexmarkTable;
use super::generator_config::{GeneratorConfig, count_before, event_of};

/// Nominal size of a block, in events of the combined stream: 0.8 s of event time at the
/// default 10,000 events per second, so parallel readers stay close in event time, and large
/// enough that skipping the other readers' blocks costs nothing.
pub const BLOCK_EVENTS: u64 = 8192;

/// The blocks of the combined stream one reader owns.
#[derive(Debug, Clone)]
pub struct SplitBlocks {
    config: GeneratorConfig,
    count: u64,
    /// The owned block the reader is in, or reads next.
    block: u64,
}

impl SplitBlocks {
    /// The blocks of reader `split.index` of `split.count` (a count of 0 or 1: everything).
    pub fn new(config: GeneratorConfig, split: SourceSplit) -> Self {
        Self {
            config,
            count: split.count.max(1) as u64,
            block: split.index as u64,
        }
    }

    /// The first event of block `block`; `u64::MAX` past the end of the stream.
    fn block_start(&self, block: u64) -> u64 {
        match block.checked_mul(BLOCK_EVENTS) {
            Some(0) => 0,
            Some(nominal) => self.config.next_time_event(nominal - 1),
            None => u64::MAX,
        }
    }

    /// The events from `event` on that the reader owns, up to the end of the block they are
    /// in: `from..to` with `event <= from`, where the events `event..from` belong to other
    /// readers. `event` must not decrease from one call to the next.
    pub fn owned_from(&mut self, event: u64) -> Range<u64> {
        if self.count == 1 {
            return event..u64::MAX;
        }
        loop {
            let start = self.block_start(self.block);
            let end = self.block_start(self.block.saturating_add(1));
            if event < end || end == u64::MAX {
                return event.max(start)..end;
            }
            self.block = self.block.saturating_add(self.count);
        }
    }

    /// The event of the reader's row `row` (0-based, counting only rows of `table` in the
    /// blocks it owns): where a reader resumes after its first `row` rows. Walks the owned
    /// blocks by their row counts, generating nothing; `u64::MAX` beyond the stream. Must be
    /// called before [`SplitBlocks::owned_from`].
    pub fn event_of_row(&mut self, table: NexmarkTable, row: u64) -> u64 {
        if self.count == 1 {
            return event_of(table, row);
        }
        let mut left = row;
        let mut event = 0;
        loop {
            let owned = self.owned_from(event);
            let first = count_before(table, owned.start);
            if owned.end == u64::MAX {
                return event_of(table, first.saturating_add(left));
            }
            let available = count_before(table, owned.end) - first;
            if left < available {
                return event_of(table, first + left);
            }
            left -= available;
            event = owned.end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(event_rate: u64) -> GeneratorConfig {
        GeneratorConfig {
            seed: 0,
            base_time_ms: 0,
            event_rate,
        }
    }

    /// The events `0..end` reader `index` of `count` visits.
    fn owned_events(config: GeneratorConfig, index: usize, count: usize, end: u64) -> Vec<u64> {
        let mut blocks = SplitBlocks::new(config, SourceSplit { index, count });
        let mut events = Vec::new();
        let mut next = 0;
        while next < end {
            let owned = blocks.owned_from(next);
            events.extend(owned.start.min(end)..owned.end.min(end));
            next = owned.end;
        }
        events
    }

    #[test]
    fn a_row_of_a_split_maps_to_its_event() {
        // Every row of every reader, block boundaries included, against the events the
        // reader visits.
        for event_rate in [10_000, 7, 30_000_000] {
            let config = config(event_rate);
            let end = 60_000;
            for table in [
                NexmarkTable::Bid,
                NexmarkTable::Person,
                NexmarkTable::Auction,
            ] {
                for count in 1..=3 {
                    for index in 0..count {
                        let rows: Vec<u64> = owned_events(config, index, count, end)
                            .into_iter()
                            .filter(|&e| super::super::generator_config::table_of(e) == table)
                            .collect();
                        for (row, &event) in rows.iter().enumerate() {
                            let mut blocks = SplitBlocks::new(config, SourceSplit { index, count });
                            assert_eq!(
                                blocks.event_of_row(table, row as u64),
                                event,
                                "{table:?} row {row} of reader {index} of {count}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn readers_share_the_events_and_never_a_millisecond() {
        // The first event of reader 1 of 2, which starts with block 1. 10,000 events per
        // second: 10 events a millisecond, so block 1 starts at 8200, not 8192. 7 events per
        // second: 143 ms between events, every block starts on time. 30,000,000 per second:
        // 30,000 events a millisecond, so blocks 1, 2 and 3 all start at 30,000: blocks 1 and
        // 2 are empty and reader 1 starts with block 3.
        for (event_rate, first_of_reader_1) in [(10_000, 8200), (7, 8192), (30_000_000, 30_000)] {
            let config = config(event_rate);
            let end = 200_000;
            assert_eq!(
                owned_events(config, 1, 2, end).first(),
                Some(&first_of_reader_1),
                "rate {event_rate}"
            );
            for count in 1..=3 {
                let mut all = Vec::new();
                let mut times_of_reader = Vec::new();
                for index in 0..count {
                    let events = owned_events(config, index, count, end);
                    assert!(events.windows(2).all(|pair| pair[0] < pair[1]));
                    let times: std::collections::HashSet<i64> =
                        events.iter().map(|&e| config.timestamp_ms(e)).collect();
                    for other in &times_of_reader {
                        assert!(times.is_disjoint(other), "rate {event_rate}");
                    }
                    times_of_reader.push(times);
                    all.extend(events);
                }
                all.sort_unstable();
                assert_eq!(all, (0..end).collect::<Vec<_>>(), "rate {event_rate}");
            }
        }
    }
}
