//! The fuzz targets. Each is a `fn(&[u8])` that panics on a finding; `init` does the costly
//! setup once (the pgwire target's server) so that it is not charged to the first input.

pub mod files;
pub mod kafka;
pub mod pattern;
pub mod pgwire;
pub mod sql;

use crate::FuzzError;
use crate::rng::Rng;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// One-time setup before the first input.
    pub init: fn() -> Result<(), FuzzError>,
    /// Runs one input; panics on a finding.
    pub run: fn(&[u8]),
    /// Generates a fresh input from the target's grammar, for targets that have one.
    pub generate: Option<fn(&mut Rng) -> Vec<u8>>,
    /// Words for token-level mutations (text targets); empty: byte mutations only.
    pub dictionary: &'static [&'static str],
}

fn no_init() -> Result<(), FuzzError> {
    Ok(())
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "sql",
        init: sql::init,
        run: sql::run,
        generate: Some(sql::generate),
        dictionary: crate::grammar::DICTIONARY,
    },
    Target {
        name: "pgwire",
        init: pgwire::init,
        run: pgwire::run,
        generate: None,
        dictionary: &[],
    },
    Target {
        name: "csv",
        init: no_init,
        run: files::run_csv,
        generate: None,
        dictionary: &[],
    },
    Target {
        name: "json",
        init: no_init,
        run: files::run_json,
        generate: None,
        dictionary: &[],
    },
    Target {
        name: "parquet",
        init: no_init,
        run: files::run_parquet,
        generate: None,
        dictionary: &[],
    },
    Target {
        name: "kafka",
        init: no_init,
        run: kafka::run,
        generate: None,
        dictionary: &[],
    },
    Target {
        name: "pattern",
        init: no_init,
        run: pattern::run,
        generate: None,
        dictionary: pattern::DICTIONARY,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Result<&'static Target, FuzzError> {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| FuzzError::UnknownTarget(name.to_string()))
}
