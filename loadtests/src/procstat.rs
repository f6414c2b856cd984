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
    schedstat(pids).0
}

/// What the threads of each group of processes did while nothing was asked of them,
/// watched together over `span`: per group, CPU microseconds per second and times a
/// thread was scheduled per second (its wake-ups: a timer thread ticking every 10 ms
/// shows as 100).
pub fn idle_activity(groups: &[Vec<u32>], span: std::time::Duration) -> Vec<(f64, f64)> {
    let before: Vec<_> = groups.iter().map(|pids| schedstat(pids)).collect();
    std::thread::sleep(span);
    let secs = span.as_secs_f64();
    groups
        .iter()
        .zip(before)
        .map(|(pids, (cpu_before, runs_before))| {
            let (cpu_after, runs_after) = schedstat(pids);
            (
                cpu_after.saturating_sub(cpu_before) as f64 / 1000.0 / secs,
                runs_after.saturating_sub(runs_before) as f64 / secs,
            )
        })
        .collect()
}

/// Run time in nanoseconds and times scheduled, summed over the threads of `pids`.
fn schedstat(pids: &[u32]) -> (u64, u64) {
    let mut total = (0, 0);
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let (ns, runs) = thread_schedstat(&t.path().join("schedstat"));
            total.0 += ns;
            total.1 += runs;
        }
    }
    total
}

/// A thread's schedstat: nanoseconds on the CPU, nanoseconds waiting to run, times run.
fn thread_schedstat(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut fields = text.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.nth(1).unwrap_or(0))
}

/// Resident memory of `pids`, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    status_kib(pids, "VmRSS:")
}

/// The most resident memory each of `pids` has had (its high-water mark), summed, in KiB.
pub fn peak_rss_kib(pids: &[u32]) -> u64 {
    status_kib(pids, "VmHWM:")
}

/// Resident memory of `pids` split into private memory (RssAnon: heap, stacks) and
/// file-backed pages (RssFile: mostly the executable, shared by every process that
/// maps the same file), in KiB.
pub fn rss_split_kib(pids: &[u32]) -> (u64, u64) {
    (status_kib(pids, "RssAnon:"), status_kib(pids, "RssFile:"))
}

/// Busy time of CPU `core` since boot (user, nice, system, irq, softirq, steal), in
/// nanoseconds, from /proc/stat; 10 ms resolution (its unit, USER_HZ, is 100 on Linux).
pub fn core_busy_ns(core: usize) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{core}");
    let Some(line) = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
    else {
        return 0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| ticks.get(*i))
        .sum::<u64>()
        * 10_000_000
}

fn status_kib(pids: &[u32], field: &str) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with(field))?;
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
        assert!(peak_rss_kib(&[me]) >= rss_kib(&[me]));
        let (anon, file) = rss_split_kib(&[me]);
        assert!(anon > 0 && file > 0 && anon + file <= rss_kib(&[me]) + 64);
        assert!(core_busy_ns(0) > 0);
        assert_eq!(tree(me)[0], me);
    }

    #[test]
    fn idle_activity_tells_a_sleeping_process_from_a_busy_one() {
        let mut sleeper = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = stop.clone();
        let spinner = std::thread::spawn(move || {
            while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let groups = [vec![sleeper.id()], vec![std::process::id()]];
        let measured = idle_activity(&groups, std::time::Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = spinner.join();
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let [(sleeping_cpu, sleeping_runs), (busy_cpu, _)] = measured[..] else {
            panic!("{measured:?}")
        };
        // Microseconds per second: the sleeper next to nothing, the spinner a good part of a
        // core (at least a tenth, on a loaded machine).
        assert!(sleeping_cpu < 50_000.0 && sleeping_runs < 20.0, "{measured:?}");
        assert!(busy_cpu > 100_000.0, "{measured:?}");
    }
}
