//! Declared operator state.
//!
//! Operators do not hide maps in their fields: each one lists its state tables, so the runtime
//! can measure them (`EXPLAIN ANALYZE`, `SHOW JOBS`) and, with checkpoints, snapshot and
//! restore them without touching the operator's logic. Stateless operators declare none.

/// What an operator reports about one of its state tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTableInfo {
    /// The table's name within the operator (e.g. `windows`, `left_rows`).
    pub name: &'static str,
    /// The key columns, for EXPLAIN.
    pub key: Vec<String>,
    /// Rows currently held.
    pub rows: usize,
    /// Approximate bytes currently held.
    pub bytes: usize,
}
