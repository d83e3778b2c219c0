//! What a run costs: wall time, CPU time of the whole process and its peak resident memory.
//!
//! CPU time is `getrusage(RUSAGE_SELF)` (user + system, every thread of the process), read
//! before and after a run: the standard library has no process CPU clock. Peak memory is Linux's
//! `VmHWM` from `/proc/self/status`, reset before each run by writing `5` to
//! `/proc/self/clear_refs` (Linux 4.0 and later), so that it is the peak of that run, not of the
//! process so far. Where either is unavailable (not Linux, not Unix) the figure is `None` and is
//! printed as `n/a`: a figure that is not what it claims is worse than none.

use std::time::{Duration, Instant};

/// The cost of one run.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    /// User + system CPU time of the process during the run.
    pub cpu: Option<Duration>,
    /// Peak resident memory during the run, in bytes.
    pub peak_rss: Option<u64>,
    /// Resident memory when the run started, in bytes.
    pub start_rss: Option<u64>,
}

impl Cost {
    /// Events per second of wall time.
    pub fn per_second(&self, events: u64) -> f64 {
        events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Events per second of CPU time.
    pub fn per_cpu_second(&self, events: u64) -> Option<f64> {
        self.cpu
            .map(|cpu| events as f64 / cpu.as_secs_f64().max(1e-9))
    }
}

/// Measures one run, started with [`Meter::start`] and ended with [`Meter::stop`].
pub struct Meter {
    started: Instant,
    cpu: Option<Duration>,
    start_rss: Option<u64>,
    peak_reset: bool,
}

impl Meter {
    pub fn start() -> Self {
        let peak_reset = reset_peak_rss();
        Self {
            start_rss: status_kib("VmRSS:").map(|kib| kib * 1024),
            cpu: process_cpu_time(),
            started: Instant::now(),
            peak_reset,
        }
    }

    pub fn stop(self) -> Cost {
        let wall = self.started.elapsed();
        let cpu = process_cpu_time()
            .zip(self.cpu)
            .map(|(end, start)| end.saturating_sub(start));
        let peak_rss = if self.peak_reset {
            status_kib("VmHWM:").map(|kib| kib * 1024)
        } else {
            None
        };
        Cost {
            wall,
            cpu,
            peak_rss,
            start_rss: self.start_rss,
        }
    }
}

/// User + system CPU time of the whole process so far.
#[cfg(unix)]
fn process_cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `getrusage` only writes a `rusage` into the pointer it is given, which points to
    // memory of that type; it is initialised when the call returns 0.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(t.tv_usec).ok()?))
    };
    time(usage.ru_utime)?.checked_add(time(usage.ru_stime)?)
}

#[cfg(not(unix))]
fn process_cpu_time() -> Option<Duration> {
    None
}

/// Resets the kernel's peak resident set size of this process to its current size; false
/// where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` field of `/proc/self/status`, e.g. `VmHWM:`.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Millions of events per second, or `n/a`.
pub fn millions(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_string(), |r| format!("{:.2}", r / 1e6))
}

/// Bytes as MiB, or `n/a`.
pub fn mebibytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_string(),
        |b| format!("{:.0}", b as f64 / (1024.0 * 1024.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let meter = Meter::start();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        let cost = meter.stop();
        if cfg!(unix) {
            assert!(cost.cpu.is_some_and(|cpu| cpu > Duration::ZERO));
        }
    }

    #[test]
    fn peak_memory_sees_an_allocation() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        let meter = Meter::start();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        drop(block);
        let cost = meter.stop();
        if let (Some(peak), Some(start)) = (cost.peak_rss, cost.start_rss) {
            assert!(peak >= start + (60 << 20), "peak {peak}, start {start}");
        }
    }
}
