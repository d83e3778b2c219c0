//! What the targets share: one tokio runtime, a scratch directory for files they write, fresh
//! in-memory engines, and the rule that an error Eddy reports is fine unless it is a caught
//! panic or an internal error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use eddy_engine::connector::ConnectorRegistry;
use eddy_engine::error::EngineError;
use eddy_engine::paths::PathPolicy;
use eddy_engine::session::{Engine, EngineConfig, QueryOutput, Session, StatementResult};
use eddy_engine::sql::parser::parse_sql;

use crate::FuzzError;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// The runtime every target runs its async work on (two workers, like a small server).
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, FuzzError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(FuzzError::Runtime)?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Sets the directory targets write their files into (the driver makes a fresh one per run).
pub fn set_scratch_dir(dir: &Path) -> Result<(), FuzzError> {
    std::fs::create_dir_all(dir).map_err(|e| FuzzError::io(dir, e))?;
    let dir = dir.canonicalize().map_err(|e| FuzzError::io(dir, e))?;
    let _ = SCRATCH.set(dir);
    Ok(())
}

/// The scratch directory: the one set, else a folder under the system's temporary directory.
pub fn scratch_dir() -> &'static Path {
    SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("eddy-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir.canonicalize().unwrap_or(dir)
    })
}

/// Every connector, with files limited to the scratch directory.
pub fn connectors() -> ConnectorRegistry {
    // Should the scratch directory vanish, allow no path at all rather than every path.
    let paths = PathPolicy::allow([scratch_dir().to_path_buf()])
        .or_else(|_| PathPolicy::allow(Vec::<PathBuf>::new()))
        .unwrap_or_default();
    let mut registry = ConnectorRegistry::default();
    eddy_connectors::register_all(&mut registry, Arc::new(paths));
    registry
}

/// A fresh in-memory engine (no data directory, nothing shared with earlier inputs).
pub fn fresh_engine() -> Arc<Engine> {
    Engine::new(
        EngineConfig {
            data_dir: None,
            batch_size: 64,
            parallelism: 1,
            ..EngineConfig::default()
        },
        connectors(),
        None,
    )
}

/// Panics (a finding) when Eddy reports a panic it caught or an internal error; any other
/// error is a proper answer to a bad input.
pub fn check(result: Result<(), EngineError>, input: &str) {
    if verbose()
        && let Err(e) = &result
    {
        eprintln!("error (fine): {e}");
    }
    if let Err(e @ (EngineError::Panic { .. } | EngineError::Internal(_))) = result {
        panic!("Eddy reported a bug: {e}\n--- for input ---\n{input}");
    }
}

/// `EDDY_FUZZ_VERBOSE=1` prints the errors inputs get (to see how deep inputs go).
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("EDDY_FUZZ_VERBOSE").is_some())
}

/// Runs each statement of `sql` that must succeed (the targets' own setup).
pub async fn setup(session: &mut Session, sql: &str) -> Result<(), EngineError> {
    for statement in parse_sql(sql)? {
        if let StatementResult::Rows(output) = session.execute(&statement, &[]).await? {
            drain(output, usize::MAX).await?;
        }
    }
    Ok(())
}

/// Reads up to `max_batches` batches of a result (all of a bounded one).
pub async fn drain(mut output: QueryOutput, max_batches: usize) -> Result<usize, EngineError> {
    let mut rows = 0;
    for _ in 0..max_batches {
        match output.next_batch().await? {
            Some(batch) => rows += batch.num_rows(),
            None => break,
        }
    }
    Ok(rows)
}
