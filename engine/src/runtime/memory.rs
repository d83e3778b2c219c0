//! Memory limits on operator state: a query's (`SET max_state_bytes`, a job's
//! `max.state.bytes`) and the server's (`--max-memory`).
//!
//! Every operator instance of a dataflow holds a [`StateAccount`] in its query's
//! [`QueryMemory`], which draws on the engine's [`MemoryPool`]. After the operator's hooks ran,
//! the driver measures what its state tables hold (`Operator::state_usage`, in bytes) and
//! charges the account with it. State the watermark freed is gone from that figure before the
//! charge, so it never counts. A charge that would take the query's total past its limit, or
//! the server's total past the server's, is refused: the account keeps its previous figure, the
//! operator's task fails with [`StateLimitExceeded`], the query's dataflow is dropped and its
//! accounts give their bytes back. Charges are compare-and-swap on the totals, so of queries
//! growing at once only the one whose growth crosses the limit fails.
//!
//! Only operator state counts: channel buffers between tasks, batches in flight, a view's rows
//! and a sink's open files, the result encoder and connector buffers do not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::size::format_size;

/// The server-wide budget of operator state, shared by every query and job.
#[derive(Debug, Default)]
pub struct MemoryPool {
    limit: Option<usize>,
    used: AtomicUsize,
}

impl MemoryPool {
    /// A pool of `limit` bytes (`None`: unlimited).
    pub fn new(limit: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Bytes of state every query and job holds now, as last measured.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// A query's own limit on its state, and the setting it comes from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimit {
    /// `None`: only the server's limit applies.
    pub bytes: Option<usize>,
    /// `max_state_bytes` (a session's query) or `max.state.bytes` (a job's).
    pub setting: &'static str,
}

/// One query's or job's state budget, within the server's.
#[derive(Debug)]
pub struct QueryMemory {
    pool: Arc<MemoryPool>,
    limit: StateLimit,
    used: AtomicUsize,
}

impl QueryMemory {
    /// A query's budget, drawing on `pool`.
    pub fn new(pool: Arc<MemoryPool>, limit: StateLimit) -> Arc<Self> {
        Arc::new(Self {
            pool,
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> StateLimit {
        self.limit
    }

    /// Bytes of state the query's operators hold now, as last measured.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Adds `grow` to `counter` unless that takes it past `limit`; `Err` holds the total it would
/// have reached.
fn try_add(counter: &AtomicUsize, grow: usize, limit: Option<usize>) -> Result<(), usize> {
    match limit {
        None => {
            counter.fetch_add(grow, Ordering::Relaxed);
            Ok(())
        }
        Some(limit) => counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(grow).filter(|total| *total <= limit)
            })
            .map(|_| ())
            .map_err(|used| used.saturating_add(grow)),
    }
}

/// One operator instance's share of its query's and the server's state budgets. Dropping it
/// (the task ends or is aborted) gives its bytes back.
#[derive(Debug)]
pub struct StateAccount {
    query: Arc<QueryMemory>,
    operator: String,
    instance: usize,
    held: usize,
}

impl StateAccount {
    /// The account of instance `instance` of operator `operator` (named as EXPLAIN names it).
    pub fn new(query: Arc<QueryMemory>, operator: impl Into<String>, instance: usize) -> Self {
        Self {
            query,
            operator: operator.into(),
            instance,
            held: 0,
        }
    }

    /// Bytes the account holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The operator's state now holds `bytes`: charged if both limits allow it, else refused
    /// (the account then keeps its previous figure).
    pub fn charge(&mut self, bytes: usize) -> Result<(), Box<StateLimitExceeded>> {
        let query = &self.query;
        if bytes <= self.held {
            let freed = self.held - bytes;
            query.used.fetch_sub(freed, Ordering::Relaxed);
            query.pool.used.fetch_sub(freed, Ordering::Relaxed);
            self.held = bytes;
            return Ok(());
        }
        let grow = bytes - self.held;
        let exceeded = |total: usize, limit: Option<usize>, scope: LimitScope| {
            Box::new(StateLimitExceeded {
                operator: self.operator.clone(),
                instance: self.instance,
                operator_bytes: bytes,
                total_bytes: total,
                limit: limit.unwrap_or(0),
                scope,
                setting: query.limit.setting,
            })
        };
        if let Err(total) = try_add(&query.used, grow, query.limit.bytes) {
            return Err(exceeded(total, query.limit.bytes, LimitScope::Query));
        }
        if let Err(total) = try_add(&query.pool.used, grow, query.pool.limit) {
            query.used.fetch_sub(grow, Ordering::Relaxed);
            return Err(exceeded(total, query.pool.limit, LimitScope::Server));
        }
        self.held = bytes;
        Ok(())
    }
}

impl Drop for StateAccount {
    fn drop(&mut self) {
        // Zero always fits: this only gives bytes back.
        let _ = self.charge(0);
    }
}

/// Which limit a query's state went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The query's own: `SET max_state_bytes`, a job's `max.state.bytes`.
    Query,
    /// The server's `--max-memory`, shared by every query and job.
    Server,
}

/// An operator's state would take its query (or the server) past a memory limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLimitExceeded {
    /// The operator whose state grew, as EXPLAIN names it.
    pub operator: String,
    pub instance: usize,
    /// What its state would hold.
    pub operator_bytes: usize,
    /// What the query's (or every query's and job's) state would hold in all.
    pub total_bytes: usize,
    pub limit: usize,
    pub scope: LimitScope,
    /// The query's setting, named in the message when it is the limit passed.
    pub setting: &'static str,
}

impl std::fmt::Display for StateLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "operator {} instance {} holds {} of state",
            self.operator,
            self.instance,
            format_size(self.operator_bytes)
        )?;
        let limit = format_size(self.limit);
        let setting = self.setting;
        match self.scope {
            LimitScope::Query if self.total_bytes == self.operator_bytes => {
                write!(f, ", over {setting} {limit}")
            }
            LimitScope::Query => write!(
                f,
                ", bringing the query's state to {}, over {setting} {limit}",
                format_size(self.total_bytes)
            ),
            LimitScope::Server => write!(
                f,
                ", bringing the state of all queries and jobs to {}, over the server's \
                 --max-memory {limit}",
                format_size(self.total_bytes)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes: Option<usize>) -> StateLimit {
        StateLimit {
            bytes,
            setting: "max_state_bytes",
        }
    }

    #[test]
    fn a_query_over_its_limit_is_refused_and_dropping_gives_bytes_back() {
        let pool = MemoryPool::new(None);
        let query = QueryMemory::new(Arc::clone(&pool), limit(Some(1000)));
        let mut a = StateAccount::new(Arc::clone(&query), "UpdatingAggregate", 0);
        let mut b = StateAccount::new(Arc::clone(&query), "RegularJoin", 1);
        a.charge(600).unwrap();
        b.charge(300).unwrap();
        let e = b.charge(500).unwrap_err();
        assert_eq!(e.scope, LimitScope::Query);
        assert_eq!(e.total_bytes, 1100);
        assert_eq!(
            e.to_string(),
            "operator RegularJoin instance 1 holds 500 bytes of state, bringing the query's \
             state to 1.1 kB, over max_state_bytes 1000 bytes"
        );
        assert_eq!((b.held(), query.used(), pool.used()), (300, 900, 900));
        // Freed state (the watermark fired windows) is given back before the next charge.
        a.charge(100).unwrap();
        b.charge(500).unwrap();
        assert_eq!(query.used(), 600);
        drop(a);
        drop(b);
        assert_eq!((query.used(), pool.used()), (0, 0));
    }

    #[test]
    fn the_query_that_grows_past_the_server_limit_fails_not_the_others() {
        let pool = MemoryPool::new(Some(10 << 20));
        let first = QueryMemory::new(Arc::clone(&pool), limit(None));
        let second = QueryMemory::new(Arc::clone(&pool), limit(None));
        let mut a = StateAccount::new(first, "TopN", 0);
        let mut b = StateAccount::new(Arc::clone(&second), "RegularJoin", 0);
        a.charge(6 << 20).unwrap();
        let e = b.charge(5 << 20).unwrap_err();
        assert_eq!(e.scope, LimitScope::Server);
        assert_eq!(
            e.to_string(),
            "operator RegularJoin instance 0 holds 5 MB of state, bringing the state of all \
             queries and jobs to 11 MB, over the server's --max-memory 10 MB"
        );
        // Nothing of the refused charge stays counted, in the query or the server.
        assert_eq!((second.used(), pool.used()), (0, 6 << 20));
        a.charge(6 << 20).unwrap();
        drop(a);
        b.charge(5 << 20).unwrap();
        assert_eq!(pool.used(), 5 << 20);
    }

    #[test]
    fn one_operator_over_the_limit_alone_is_named_so() {
        let query = QueryMemory::new(MemoryPool::new(None), limit(Some(512 << 20)));
        let mut a = StateAccount::new(query, "HashJoin", 0);
        let e = a.charge(530 << 20).unwrap_err();
        assert_eq!(
            e.to_string(),
            "operator HashJoin instance 0 holds 530 MB of state, over max_state_bytes 512 MB"
        );
    }
}
