//! The `WITH (...)` options of a nexmark source, parsed and checked.
//!
//! Every option is checked here, once, so that `CREATE SOURCE` reports a mistake with the option
//! name and the offending value, and `open` can rely on a well-formed [`NexmarkOptions`].

use std::fmt;

use eddy_engine::connector::{ConnectorError, ConnectorOptions, ConnectorResult};

/// `nexmark.table`: which of the three Nexmark streams the source reads (required).
pub const OPTION_TABLE: &str = "nexmark.table";
/// `events.per.second`: wall-clock rate of the combined event stream; 0 = as fast as possible.
pub const OPTION_EVENTS_PER_SECOND: &str = "events.per.second";
/// `events.max`: number of events of the combined stream after which the source ends.
pub const OPTION_EVENTS_MAX: &str = "events.max";
/// `seed`: seed of the generator; the same seed always yields the same rows.
pub const OPTION_SEED: &str = "seed";
/// `base.time`: event time of the first event (epoch milliseconds or an RFC 3339 timestamp).
pub const OPTION_BASE_TIME: &str = "base.time";

/// Every option a nexmark source accepts. `connector` names the connector itself.
pub const ACCEPTED_OPTIONS: &[&str] = &[
    "connector",
    OPTION_TABLE,
    OPTION_EVENTS_PER_SECOND,
    OPTION_EVENTS_MAX,
    OPTION_SEED,
    OPTION_BASE_TIME,
];

/// Seed used when the `seed` option is absent.
pub const DEFAULT_SEED: u64 = 0x4e65_786d_6172_6b21;
/// 2023-01-01T00:00:00Z: the event time of event 0 unless `base.time` says otherwise.
pub const DEFAULT_BASE_TIME_MS: i64 = 1_672_531_200_000;
/// Event-time rate of the stream when `events.per.second` is unlimited: Nexmark's default
/// first-event rate, which puts consecutive events 0.1 ms apart.
pub const DEFAULT_EVENT_TIME_RATE: u64 = 10_000;
/// Upper bound of `events.per.second`: above it, event timestamps (milliseconds) would collapse
/// and the rate limit would be meaningless anyway.
pub const MAX_EVENTS_PER_SECOND: u64 = 1_000_000_000;

/// One of the three Nexmark streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NexmarkTable {
    Person,
    Auction,
    Bid,
}

impl NexmarkTable {
    /// Parses the value of `nexmark.table`; plural spellings are accepted.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "person" | "persons" | "people" => Some(Self::Person),
            "auction" | "auctions" => Some(Self::Auction),
            "bid" | "bids" => Some(Self::Bid),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Auction => "auction",
            Self::Bid => "bid",
        }
    }
}

impl fmt::Display for NexmarkTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The checked options of one nexmark source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexmarkOptions {
    pub table: NexmarkTable,
    /// Wall-clock rate limit of the combined stream; `None` = as fast as possible.
    pub events_per_second: Option<u64>,
    /// Number of events of the combined stream to generate; `None` = unbounded.
    pub events_max: Option<u64>,
    pub seed: u64,
    /// Event time of event 0, in epoch milliseconds.
    pub base_time_ms: i64,
}

impl NexmarkOptions {
    /// Parses and checks the options of a `CREATE SOURCE ... WITH (connector = 'nexmark', ...)`.
    pub fn parse(options: &ConnectorOptions) -> ConnectorResult<Self> {
        if let Some(unknown) = options
            .keys()
            .find(|key| !ACCEPTED_OPTIONS.contains(&key.as_str()))
        {
            return Err(ConnectorError::InvalidOption(format!(
                "unknown option '{unknown}' for connector 'nexmark'; accepted options are: {}",
                ACCEPTED_OPTIONS.join(", ")
            )));
        }

        let table = match options.get(OPTION_TABLE) {
            None => {
                return Err(ConnectorError::InvalidOption(format!(
                    "connector 'nexmark' requires option '{OPTION_TABLE}' \
                     ('bid', 'person' or 'auction')"
                )));
            }
            Some(value) => NexmarkTable::parse(value).ok_or_else(|| {
                ConnectorError::InvalidOption(format!(
                    "invalid value '{value}' for option '{OPTION_TABLE}': \
                     expected 'bid', 'person' or 'auction'"
                ))
            })?,
        };

        let events_per_second = match parse_u64(options, OPTION_EVENTS_PER_SECOND)? {
            None | Some(0) => None,
            Some(rate) if rate > MAX_EVENTS_PER_SECOND => {
                return Err(ConnectorError::InvalidOption(format!(
                    "invalid value '{rate}' for option '{OPTION_EVENTS_PER_SECOND}': \
                     at most {MAX_EVENTS_PER_SECOND} events per second (0 = unlimited)"
                )));
            }
            Some(rate) => Some(rate),
        };

        Ok(Self {
            table,
            events_per_second,
            events_max: parse_u64(options, OPTION_EVENTS_MAX)?,
            seed: parse_u64(options, OPTION_SEED)?.unwrap_or(DEFAULT_SEED),
            base_time_ms: match options.get(OPTION_BASE_TIME) {
                None => DEFAULT_BASE_TIME_MS,
                Some(value) => parse_base_time(value)?,
            },
        })
    }

    /// Events per second of *event time*: the rate limit when there is one, so that event time
    /// advances like wall-clock time, otherwise Nexmark's default first-event rate. Either way it
    /// depends only on the options, never on the clock.
    pub fn event_time_rate(&self) -> u64 {
        self.events_per_second.unwrap_or(DEFAULT_EVENT_TIME_RATE)
    }
}

fn parse_u64(options: &ConnectorOptions, key: &str) -> ConnectorResult<Option<u64>> {
    options
        .get(key)
        .map(|value| {
            value.trim().replace('_', "").parse::<u64>().map_err(|_| {
                ConnectorError::InvalidOption(format!(
                    "invalid value '{value}' for option '{key}': expected a non-negative integer"
                ))
            })
        })
        .transpose()
}

fn parse_base_time(value: &str) -> ConnectorResult<i64> {
    let trimmed = value.trim();
    if let Ok(ms) = trimmed.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(trimmed)
        .map(|time| time.timestamp_millis())
        .map_err(|_| {
            ConnectorError::InvalidOption(format!(
                "invalid value '{value}' for option '{OPTION_BASE_TIME}': expected epoch \
                 milliseconds or an RFC 3339 timestamp such as '2023-01-01T00:00:00Z'"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        match NexmarkOptions::parse(&options(pairs)) {
            Err(ConnectorError::InvalidOption(message)) => message,
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let parsed = NexmarkOptions::parse(&options(&[
            ("connector", "nexmark"),
            ("nexmark.table", "Bids"),
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            NexmarkOptions {
                table: NexmarkTable::Bid,
                events_per_second: None,
                events_max: None,
                seed: DEFAULT_SEED,
                base_time_ms: DEFAULT_BASE_TIME_MS,
            }
        );
        assert_eq!(parsed.event_time_rate(), 10_000);
    }

    #[test]
    fn every_option() {
        let parsed = NexmarkOptions::parse(&options(&[
            ("nexmark.table", "person"),
            ("events.per.second", "1_000"),
            ("events.max", "500"),
            ("seed", "7"),
            ("base.time", "2024-02-29T12:00:00Z"),
        ]))
        .unwrap();
        assert_eq!(parsed.table, NexmarkTable::Person);
        assert_eq!(parsed.events_per_second, Some(1000));
        assert_eq!(parsed.event_time_rate(), 1000);
        assert_eq!(parsed.events_max, Some(500));
        assert_eq!(parsed.seed, 7);
        assert_eq!(parsed.base_time_ms, 1_709_208_000_000);

        let unlimited = NexmarkOptions::parse(&options(&[
            ("nexmark.table", "auctions"),
            ("events.per.second", "0"),
        ]))
        .unwrap();
        assert_eq!(unlimited.table, NexmarkTable::Auction);
        assert_eq!(unlimited.events_per_second, None);
    }

    #[test]
    fn bad_options_name_the_option_and_value() {
        let message = error(&[("nexmark.table", "bid"), ("rate", "5")]);
        assert!(message.contains("'rate'"), "{message}");
        assert!(message.contains("events.per.second"), "{message}");

        let message = error(&[]);
        assert!(message.contains("nexmark.table"), "{message}");

        let message = error(&[("nexmark.table", "bidz")]);
        assert!(message.contains("'bidz'"), "{message}");

        let message = error(&[("nexmark.table", "bid"), ("events.max", "-1")]);
        assert!(
            message.contains("'-1'") && message.contains("events.max"),
            "{message}"
        );

        let message = error(&[("nexmark.table", "bid"), ("events.per.second", "fast")]);
        assert!(message.contains("'fast'"), "{message}");

        let message = error(&[
            ("nexmark.table", "bid"),
            ("events.per.second", "2000000000"),
        ]);
        assert!(message.contains("'2000000000'"), "{message}");

        let message = error(&[("nexmark.table", "bid"), ("seed", "1.5")]);
        assert!(
            message.contains("'1.5'") && message.contains("seed"),
            "{message}"
        );

        let message = error(&[("nexmark.table", "bid"), ("base.time", "yesterday")]);
        assert!(message.contains("'yesterday'"), "{message}");
    }
}
