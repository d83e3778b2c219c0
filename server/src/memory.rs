//! The default of `--max-memory`: 80 % of the memory the server may use, which is the
//! machine's (`MemTotal` of `/proc/meminfo`) or its cgroup's limit if that is lower (cgroup v2
//! `memory.max`, v1 `memory.limit_in_bytes`).

use std::path::Path;

/// The share of the available memory operator state may take by default, in percent.
pub const DEFAULT_SHARE_PERCENT: usize = 80;

/// `--max-memory`'s default: [`DEFAULT_SHARE_PERCENT`] of [`available_memory`]; `None` where
/// the memory cannot be read (not Linux): no limit.
pub fn default_max_memory() -> Option<usize> {
    available_memory().map(|bytes| bytes / 100 * DEFAULT_SHARE_PERCENT)
}

/// The memory the process may use: the machine's, or its cgroup's limit if lower.
pub fn available_memory() -> Option<usize> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text));
    let cgroup = cgroup_limit(Path::new("/sys/fs/cgroup"));
    match (machine, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: usize = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The memory limit of the cgroup mounted at `root` (v2, else v1); `None` when there is none
/// (`max`, or v1's huge "unlimited" value).
fn cgroup_limit(root: &Path) -> Option<usize> {
    let read = |file: &str| std::fs::read_to_string(root.join(file)).ok();
    let text = read("memory.max").or_else(|| read("memory/memory.limit_in_bytes"))?;
    let value: u64 = text.trim().parse().ok()?;
    // cgroup v1 writes "no limit" as the largest page-aligned i64.
    if value >= 1 << 60 {
        return None;
    }
    usize::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total_in_bytes() {
        let text = "MemTotal:       24683784 kB\nMemFree:  100 kB\n";
        assert_eq!(mem_total(text), Some(24683784 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn reads_a_cgroup_limit_and_ignores_none() {
        let dir = std::env::temp_dir().join(format!("eddy-cgroup-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("memory")).unwrap();
        assert_eq!(cgroup_limit(&dir), None);
        std::fs::write(
            dir.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_limit(&dir), None, "v1's 'unlimited'");
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(&dir), None, "v2's 'max'");
        std::fs::write(dir.join("memory.max"), "2147483648\n").unwrap();
        assert_eq!(cgroup_limit(&dir), Some(2 << 30));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_default_is_a_share_of_what_is_available() {
        if let Some(available) = available_memory() {
            let default = default_max_memory().unwrap();
            assert!(default < available && default >= available / 10 * 7);
        }
    }
}
