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

use std::path::PathBuf;

/// This crate's folder (corpora, artifacts; the SQL tests' data beside it), found when the
/// binary runs, not where it was built: `EDDY_FUZZ_DIR`, else `CARGO_MANIFEST_DIR` as cargo
/// sets it for `cargo run`, else `sql-tests/fuzz` under the working directory (a run from the
/// repository's root, as `.ci/run` does), else the folder it was built from. A binary built in
/// one checkout and run from another (a shared target directory) uses the other's files.
pub fn crate_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDDY_FUZZ_DIR").or_else(|| {
        std::env::var_os("CARGO_MANIFEST_DIR").filter(|d| PathBuf::from(d).join("corpus").is_dir())
    }) {
        return PathBuf::from(dir);
    }
    let under_cwd = PathBuf::from("sql-tests/fuzz");
    if under_cwd.join("corpus").is_dir()
        && let Ok(dir) = std::path::absolute(&under_cwd)
    {
        return dir;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
