//! Eddy's fuzz targets and the pieces of a small, stable-Rust fuzzer that drives them.
//!
//! Each target ([`targets::TARGETS`]) is a `fn(&[u8])` that must neither panic nor hang nor
//! allocate without bound on any input: a panic (also one Eddy catches itself, which the
//! driver's panic hook sees) or a finding the target checks (a server that stops answering)
//! is a failure. The `eddy-fuzz` binary loads a seed corpus in libFuzzer's format (one file per
//! input, `sql-tests/fuzz/corpus/<target>/`), mutates it deterministically ([`mutate`], plus
//! [`grammar`] for SQL) and runs every input under a deadline. The same functions can be
//! called from cargo-fuzz targets for coverage-guided runs (docs/fuzzing.md).

pub mod error;
pub mod grammar;
pub mod infer;
pub mod mutate;
pub mod rng;
pub mod runtime;
pub mod targets;

pub use error::FuzzError;
