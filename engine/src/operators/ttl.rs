//! State TTL in processing time (Flink's `table.exec.state.ttl`, Eddy's `SET state.ttl` and a
//! view's `state.ttl` option): the clock operators read it with, and when they look for
//! expired entries.
//!
//! An entry (a group, a key's row, a partition) expires `ttl` after it was last written, as
//! Flink's default `OnCreateAndWrite`. Operators that keep entries in hash maps scan them for
//! expired ones at most every tenth of the TTL (at least every second, at most every
//! millisecond), so an entry lives at most that much longer than the TTL; the regular join,
//! whose rows are kept in storing order, drops them as it goes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Processing time now, in milliseconds since the epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

/// A TTL and its clock, deciding when an operator scans for expired entries.
pub struct StateTtl {
    ttl_ms: i64,
    period_ms: i64,
    clock: Clock,
    next_scan: i64,
}

impl StateTtl {
    pub fn new(ttl: Duration, clock: Clock) -> Self {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        Self {
            ttl_ms,
            period_ms: (ttl_ms / 10).clamp(1, 1000),
            clock,
            next_scan: i64::MIN,
        }
    }

    /// Processing time now (ms): what an entry written now records.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// When a scan is due: the cutoff, entries last written at or before it have expired.
    pub fn due(&mut self) -> Option<i64> {
        let now = self.now();
        if now < self.next_scan {
            return None;
        }
        self.next_scan = now.saturating_add(self.period_ms);
        Some(now.saturating_sub(self.ttl_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[test]
    fn scans_come_a_tenth_of_the_ttl_apart_with_the_cutoff_one_ttl_back() {
        let now = Arc::new(AtomicI64::new(100_000));
        let clock = Arc::clone(&now);
        let mut ttl = StateTtl::new(
            Duration::from_secs(5),
            Arc::new(move || clock.load(Ordering::Relaxed)),
        );
        assert_eq!(ttl.due(), Some(95_000));
        now.store(100_499, Ordering::Relaxed);
        assert_eq!(ttl.due(), None, "within half a second of the last scan");
        now.store(100_500, Ordering::Relaxed);
        assert_eq!(ttl.due(), Some(95_500));
        // A long TTL scans every second.
        let mut long = StateTtl::new(Duration::from_secs(3600), Arc::new(|| 0));
        assert_eq!(long.period_ms, 1000);
        assert_eq!(long.due(), Some(-3_600_000));
    }
}
