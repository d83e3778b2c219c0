//! The shape of the combined Nexmark event stream, as in the standard generator's
//! `GeneratorConfig` (Apache Beam, Flink's nexmark): which event number is a person, an auction
//! or a bid, the event time of each event, and which person and auction ids an event may refer
//! to.
//!
//! Everything here is a pure function of the event number (and of a per-event random stream for
//! the `next_*` choices), so any event can be generated without generating the ones before it:
//! a source reading bids skips persons and auctions without computing them.

use std::ops::Range;

use super::config::{NexmarkOptions, NexmarkTable};
use super::random::Rng;

/// Out of every [`TOTAL_PROPORTION`] events, this many are persons, auctions and bids, in that
/// order (event `n` is a person when `n % 50 == 0`, an auction when it is 1..=3, else a bid).
pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Ids start here so that small runs still produce joinable, non-trivial ids.
pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
pub const FIRST_CATEGORY_ID: u64 = 10;
pub const NUM_CATEGORIES: u64 = 5;

/// Number of not-yet-created person and auction ids that may be referred to, which makes new
/// people and auctions appear to arrive after the bids and auctions that name them.
pub const PERSON_ID_LEAD: u64 = 10;
pub const AUCTION_ID_LEAD: u64 = 10;

/// Hot auctions, bidders and sellers are the first (second for bidders) of each group of this
/// many ids.
pub const HOT_AUCTION_RATIO: u64 = 100;
pub const HOT_BIDDER_RATIO: u64 = 100;
pub const HOT_SELLER_RATIO: u64 = 100;

/// One in this many bids is for a cold auction (1 - 1/2 of bids go to a hot auction).
pub const HOT_AUCTIONS_RATIO: u64 = 2;
/// One in this many auctions has a cold seller.
pub const HOT_SELLERS_RATIO: u64 = 4;
/// One in this many bids has a cold bidder.
pub const HOT_BIDDERS_RATIO: u64 = 4;

/// People and auctions that cold references are drawn from.
pub const NUM_ACTIVE_PEOPLE: u64 = 1000;
pub const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;

/// Average byte sizes the `extra` padding column brings each row to.
pub const AVG_PERSON_BYTE_SIZE: usize = 200;
pub const AVG_AUCTION_BYTE_SIZE: usize = 500;
pub const AVG_BID_BYTE_SIZE: usize = 100;

/// Where each table's events sit inside a group of [`TOTAL_PROPORTION`] events.
const fn offset_and_proportion(table: NexmarkTable) -> (u64, u64) {
    match table {
        NexmarkTable::Person => (0, PERSON_PROPORTION),
        NexmarkTable::Auction => (PERSON_PROPORTION, AUCTION_PROPORTION),
        NexmarkTable::Bid => (PERSON_PROPORTION + AUCTION_PROPORTION, BID_PROPORTION),
    }
}

/// The deterministic parameters of one generated stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Event time of event 0, epoch milliseconds.
    pub base_time_ms: i64,
    /// Events per second of event time (1 to [`super::config::MAX_EVENTS_PER_SECOND`]).
    pub event_rate: u64,
}

impl GeneratorConfig {
    pub fn new(options: &NexmarkOptions) -> Self {
        Self {
            seed: options.seed,
            base_time_ms: options.base_time_ms,
            event_rate: options.event_time_rate().max(1),
        }
    }

    /// Event time of event `event`: `base + event / rate` seconds, truncated to milliseconds
    /// (the standard `baseTime + eventNumber * interEventDelayUs / 1000`, computed without
    /// rounding the inter-event delay to whole microseconds).
    pub fn timestamp_ms(&self, event: u64) -> i64 {
        self.clock_at(event).timestamp_ms()
    }

    /// A clock standing at event `event`, to read the times of the events after it without a
    /// division each.
    pub fn clock_at(&self, event: u64) -> EventClock {
        let rate = self.event_rate;
        // With `rate <= MAX_EVENTS_PER_SECOND`, `in_second * 1000` cannot overflow.
        let in_second = (event % rate) * 1000;
        EventClock {
            base_ms: self.base_time_ms,
            offset_ms: (event / rate)
                .saturating_mul(1000)
                .saturating_add(in_second / rate),
            remainder: in_second % rate,
            rate,
            step_ms: 1000 / rate,
            step_remainder: 1000 % rate,
        }
    }

    /// The first event after `event` whose time is later than `event`'s, or `u64::MAX` when
    /// there is none (times saturate at the end of `i64`). Events of equal time are
    /// consecutive, so this is where the next millisecond starts.
    pub fn next_time_event(&self, event: u64) -> u64 {
        // Event n is at floor(1000 n / rate) ms after the base; the first event of
        // millisecond m is ceil(m * rate / 1000).
        let next_ms = u128::from(self.clock_at(event).offset_ms) + 1;
        let first = (next_ms * u128::from(self.event_rate)).div_ceil(1000);
        match u64::try_from(first) {
            Ok(next) if self.timestamp_ms(next) > self.timestamp_ms(event) => next,
            _ => u64::MAX,
        }
    }

    /// Length of a new auction: uniform in `1..=2 * horizon`, where the horizon is the event time
    /// until [`NUM_IN_FLIGHT_AUCTIONS`] more auctions have been created, so that about that
    /// many auctions are open at any time.
    pub fn auction_length_ms(&self, event: u64, timestamp_ms: i64, rng: &mut Rng) -> i64 {
        let events_for_auctions = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let future = self.timestamp_ms(event.saturating_add(events_for_auctions));
        let horizon = u64::try_from(future.saturating_sub(timestamp_ms)).unwrap_or(0);
        let length = 1 + rng.below(horizon.saturating_mul(2).max(1));
        i64::try_from(length).unwrap_or(i64::MAX)
    }
}

/// The event times of consecutive events. The time of event `n` is `floor(1000 n / rate)`
/// milliseconds after the base: the clock keeps that quotient and its remainder, and moving to
/// the next event adds `1000 / rate` with a carry, where [`GeneratorConfig::timestamp_ms`]
/// needs two divisions (a notable share of the cost of a bid row).
#[derive(Debug, Clone)]
pub struct EventClock {
    base_ms: i64,
    /// `floor(1000 n / rate)` for the current event `n` (saturated).
    offset_ms: u64,
    /// `1000 n mod rate`.
    remainder: u64,
    rate: u64,
    step_ms: u64,
    step_remainder: u64,
}

impl EventClock {
    /// The time of the current event, epoch milliseconds.
    pub fn timestamp_ms(&self) -> i64 {
        self.base_ms
            .saturating_add(i64::try_from(self.offset_ms).unwrap_or(i64::MAX))
    }

    /// Moves to the next event.
    pub fn tick(&mut self) {
        self.remainder += self.step_remainder;
        let carry = u64::from(self.remainder >= self.rate);
        self.remainder -= carry * self.rate;
        self.offset_ms = self.offset_ms.saturating_add(self.step_ms + carry);
    }
}

/// The kind of event number `event`.
pub fn table_of(event: u64) -> NexmarkTable {
    let offset = event % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        NexmarkTable::Person
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        NexmarkTable::Auction
    } else {
        NexmarkTable::Bid
    }
}

/// How many of the events `0..events` are of kind `table`.
pub fn count_before(table: NexmarkTable, events: u64) -> u64 {
    let (first, proportion) = offset_and_proportion(table);
    let groups = events / TOTAL_PROPORTION;
    let in_last_group = (events % TOTAL_PROPORTION)
        .saturating_sub(first)
        .min(proportion);
    groups * proportion + in_last_group
}

/// The event number of the `index`-th (0-based) event of kind `table`; saturates at
/// `u64::MAX` for indexes beyond any representable event.
pub fn event_of(table: NexmarkTable, index: u64) -> u64 {
    let (first, proportion) = offset_and_proportion(table);
    (index / proportion)
        .saturating_mul(TOTAL_PROPORTION)
        .saturating_add(first + index % proportion)
}

/// The event numbers of the rows `rows` of `table` (row `i` is the `i`-th event of that kind),
/// as runs of consecutive events: one run per group of [`TOTAL_PROPORTION`] events.
pub fn event_runs(table: NexmarkTable, rows: Range<u64>) -> impl Iterator<Item = Range<u64>> {
    let (_, proportion) = offset_and_proportion(table);
    let mut row = rows.start;
    std::iter::from_fn(move || {
        if row >= rows.end {
            return None;
        }
        let group_end = (row / proportion + 1).saturating_mul(proportion);
        let len = group_end.min(rows.end) - row;
        let first = event_of(table, row);
        row += len;
        Some(first..first.saturating_add(len))
    })
}

/// The 0-based id of the last person created at or before `event`.
pub fn last_base0_person_id(event: u64) -> u64 {
    let group = event / TOTAL_PROPORTION;
    let offset = event % TOTAL_PROPORTION;
    // Past the group's people, the last person is the group's last one.
    let person_in_group = if offset >= PERSON_PROPORTION {
        PERSON_PROPORTION - 1
    } else {
        offset
    };
    group * PERSON_PROPORTION + person_in_group
}

/// The 0-based id of the last auction created at or before `event` (0 before the first one).
pub fn last_base0_auction_id(event: u64) -> u64 {
    let group = event / TOTAL_PROPORTION;
    let offset = event % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // A person: the last auction is the last one of the previous group.
        (group * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        // A bid: the last auction is the last one of this group.
        group * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        group * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

/// A random person among the [`NUM_ACTIVE_PEOPLE`] most recent ones, or one of the
/// [`PERSON_ID_LEAD`] next ones.
pub fn next_base0_person_id(event: u64, rng: &mut Rng) -> u64 {
    random_base0_person_id(last_base0_person_id(event), rng)
}

/// [`next_base0_person_id`] for an event whose last person is `last_person`.
pub fn random_base0_person_id(last_person: u64, rng: &mut Rng) -> u64 {
    let num_people = last_person + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    num_people - active + rng.below(active + PERSON_ID_LEAD)
}

/// A random auction among the [`NUM_IN_FLIGHT_AUCTIONS`] most recent ones, or one of the
/// [`AUCTION_ID_LEAD`] next ones.
pub fn next_base0_auction_id(event: u64, rng: &mut Rng) -> u64 {
    random_base0_auction_id(last_base0_auction_id(event), rng)
}

/// [`next_base0_auction_id`] for an event whose last auction is `max_auction`.
pub fn random_base0_auction_id(max_auction: u64, rng: &mut Rng) -> u64 {
    let min_auction = max_auction.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min_auction + rng.below(max_auction - min_auction + 1 + AUCTION_ID_LEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_and_ids() {
        assert_eq!(table_of(0), NexmarkTable::Person);
        assert_eq!(table_of(1), NexmarkTable::Auction);
        assert_eq!(table_of(3), NexmarkTable::Auction);
        assert_eq!(table_of(4), NexmarkTable::Bid);
        assert_eq!(table_of(49), NexmarkTable::Bid);
        assert_eq!(table_of(50), NexmarkTable::Person);

        assert_eq!(last_base0_person_id(0), 0);
        assert_eq!(last_base0_person_id(49), 0);
        assert_eq!(last_base0_person_id(50), 1);
        assert_eq!(last_base0_auction_id(1), 0);
        assert_eq!(last_base0_auction_id(3), 2);
        assert_eq!(last_base0_auction_id(4), 2);
        assert_eq!(last_base0_auction_id(50), 2);
        assert_eq!(last_base0_auction_id(51), 3);
    }

    #[test]
    fn count_before_and_event_of_agree_with_table_of() {
        for table in [
            NexmarkTable::Person,
            NexmarkTable::Auction,
            NexmarkTable::Bid,
        ] {
            let mut count = 0;
            for event in 0..500 {
                assert_eq!(count_before(table, event), count, "{table} before {event}");
                if table_of(event) == table {
                    assert_eq!(event_of(table, count), event);
                    count += 1;
                }
            }
        }
        assert_eq!(count_before(NexmarkTable::Bid, 1000), 920);
        assert_eq!(event_of(NexmarkTable::Bid, u64::MAX), u64::MAX);
    }

    #[test]
    fn timestamps_follow_the_event_rate() {
        let config = GeneratorConfig {
            seed: 0,
            base_time_ms: 1000,
            event_rate: 10_000,
        };
        assert_eq!(config.timestamp_ms(0), 1000);
        assert_eq!(config.timestamp_ms(9), 1000);
        assert_eq!(config.timestamp_ms(10), 1001);
        assert_eq!(config.timestamp_ms(10_000), 2000);
        assert_eq!(config.timestamp_ms(u64::MAX), 1000 + (u64::MAX / 10) as i64);

        let slow = GeneratorConfig {
            event_rate: 3,
            ..config
        };
        assert_eq!(slow.timestamp_ms(1), 1333);
        assert_eq!(slow.timestamp_ms(4), 2333);
        let slowest = GeneratorConfig {
            event_rate: 1,
            ..config
        };
        assert_eq!(slowest.timestamp_ms(u64::MAX), i64::MAX);
    }

    #[test]
    fn the_clock_and_next_time_event_agree_with_timestamp_ms() {
        for event_rate in [1, 3, 7, 999, 1000, 1001, 10_000, 123_457, 1_000_000_000] {
            let config = GeneratorConfig {
                seed: 0,
                base_time_ms: -5,
                event_rate,
            };
            for start in [0, 1, 999, 5_000_003, 1 << 40] {
                let mut clock = config.clock_at(start);
                for event in start..start + 3000 {
                    let time = config.timestamp_ms(event);
                    assert_eq!(
                        clock.timestamp_ms(),
                        time,
                        "rate {event_rate} event {event}"
                    );
                    clock.tick();
                    let next = config.next_time_event(event);
                    assert!(next > event);
                    assert!(config.timestamp_ms(next) > time);
                    assert_eq!(config.timestamp_ms(next - 1), time, "rate {event_rate}");
                }
            }
        }
        // Past the end of i64, times saturate and no later one exists.
        let slowest = GeneratorConfig {
            seed: 0,
            base_time_ms: 0,
            event_rate: 1,
        };
        assert_eq!(slowest.next_time_event(u64::MAX - 5), u64::MAX);
    }

    #[test]
    fn event_runs_are_the_events_of_the_rows() {
        for table in [
            NexmarkTable::Person,
            NexmarkTable::Auction,
            NexmarkTable::Bid,
        ] {
            for rows in [0..0, 0..1, 3..200, 45..47, 46..92] {
                let events: Vec<u64> = event_runs(table, rows.clone()).flatten().collect();
                let expected: Vec<u64> = rows.clone().map(|row| event_of(table, row)).collect();
                assert_eq!(events, expected, "{table} {rows:?}");
                assert!(event_runs(table, rows.clone()).all(|run| !run.is_empty()));
            }
        }
    }
}
