//! What a process costs, read from Linux's `/proc`: resident memory, CPU time and
//! context switches (each one a wake-up: the thread slept and was woken, or was preempted).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Resident set size, KiB (`VmRSS`).
    pub(crate) rss_kib: u64,
    /// User + system CPU time of every thread, living or exited, in seconds.
    pub(crate) cpu_secs: f64,
    /// Voluntary + involuntary context switches, per thread id.
    switches: HashMap<u32, u64>,
}

impl Sample {
    /// Context switches between `self` (earlier) and `later`, over the threads alive at
    /// `later`. A thread that exited in between takes its count with it (Linux keeps no
    /// total), so this is a lower bound when threads come and go.
    pub(crate) fn switches_until(&self, later: &Sample) -> u64 {
        later
            .switches
            .iter()
            .map(|(tid, n)| n.saturating_sub(self.switches.get(tid).copied().unwrap_or(0)))
            .sum()
    }

    /// CPU seconds between `self` and `later`.
    pub(crate) fn cpu_until(&self, later: &Sample) -> f64 {
        (later.cpu_secs - self.cpu_secs).max(0.0)
    }
}

/// Reads `/proc/PID/{status,stat,task/*/status}`.
pub(crate) fn sample(pid: u32) -> Result<Sample> {
    let base = format!("/proc/{pid}");
    let status = fs::read_to_string(format!("{base}/status"))
        .with_context(|| format!("cannot read {base}/status (has the process exited?)"))?;
    let rss_kib = status_field(&status, "VmRSS:").unwrap_or(0);
    let stat = fs::read_to_string(format!("{base}/stat"))
        .with_context(|| format!("cannot read {base}/stat"))?;
    let cpu_secs = cpu_ticks(&stat)? as f64 / TICKS_PER_SEC;
    let mut switches = HashMap::new();
    let tasks = Path::new(&base).join("task");
    for entry in fs::read_dir(&tasks).with_context(|| format!("cannot list {}", tasks.display()))? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may exit between listing and reading.
        let Ok(text) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let n = status_field(&text, "voluntary_ctxt_switches:").unwrap_or(0)
            + status_field(&text, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        switches.insert(tid, n);
    }
    Ok(Sample {
        rss_kib,
        cpu_secs,
        switches,
    })
}

/// This process's own CPU seconds (the load generator's share of the machine).
pub(crate) fn own_cpu_secs() -> f64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_ticks(&s).ok())
        .map_or(0.0, |t| t as f64 / TICKS_PER_SEC)
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` from a `stat` line (fields 14 and 15; the command name may hold spaces).
fn cpu_ticks(stat: &str) -> Result<u64> {
    let Some(close) = stat.rfind(')') else {
        bail!("unexpected /proc stat format");
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let get = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat line")?
            .parse::<u64>()
            .context("bad number in /proc stat")
    };
    Ok(get(11)? + get(12)?)
}

/// Processes that look like another build sharing the machine (rustc, cc1, ld…).
pub(crate) fn builds_running() -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
        .filter(|comm| {
            matches!(
                comm.trim(),
                "rustc" | "cc1" | "cc1plus" | "ld" | "ld.lld" | "lld" | "mold" | "clang"
            )
        })
        .count()
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(!s.switches.is_empty());
        assert!(s.cpu_secs >= 0.0);
    }

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(line).unwrap(), 300);
    }
}
