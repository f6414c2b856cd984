//! CPU time and resident memory of a process and its descendants, from /proc.
//! CPU comes from schedstat (nanoseconds), so short runs still measure precisely.

use std::path::Path;

/// `root` and every process descending from it.
pub fn tree(root: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent(pid) {
                all.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) of all threads of `pids`, in nanoseconds.
pub fn cpu_ns(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|pid| {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return 0;
            };
            tasks
                .flatten()
                .map(|t| schedstat_ns(&t.path().join("schedstat")))
                .sum::<u64>()
        })
        .sum()
}

fn schedstat_ns(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pids`, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Resident memory of `pids` once it has settled: sampled every 500 ms until two
/// samples a second apart differ by under 1%, for at most `limit`. Allocators hand
/// memory freed after a config load back to the OS over seconds, not at once.
pub fn settled_rss_kib(pids: &[u32], limit: std::time::Duration) -> u64 {
    let started = std::time::Instant::now();
    let mut samples = vec![rss_kib(pids)];
    while started.elapsed() < limit {
        std::thread::sleep(std::time::Duration::from_millis(500));
        samples.push(rss_kib(pids));
        if let [.., a, _, b] = samples[..] {
            if a.abs_diff(b) * 100 < a.max(1) {
                break;
            }
        }
    }
    samples.last().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let busy: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(busy > 0);
        assert!(cpu_ns(&[me]) > 0);
        assert!(rss_kib(&[me]) > 1000);
        assert_eq!(tree(me)[0], me);
    }
}
