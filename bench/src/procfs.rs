//! What a process costs, read from Linux's `/proc`: resident memory, CPU time and
//! context switches (each one a wake-up: the thread slept and was woken, or was preempted).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`, 100 on every Linux architecture).
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Resident set size, KiB (`VmRSS`).
    pub(crate) rss_kib: u64,
    /// CPU time of every thread, living or exited, in seconds: in the program itself
    /// (`utime`) and in the kernel on its behalf (`stime`).
    pub(crate) cpu: Cpu,
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

    /// CPU seconds between `self` and `later`, user and kernel together.
    pub(crate) fn cpu_until(&self, later: &Sample) -> f64 {
        let spent = self.cpu_split_until(later);
        spent.user_secs + spent.system_secs
    }

    /// CPU seconds between `self` and `later`, user and kernel apart.
    pub(crate) fn cpu_split_until(&self, later: &Sample) -> Cpu {
        Cpu {
            user_secs: (later.cpu.user_secs - self.cpu.user_secs).max(0.0),
            system_secs: (later.cpu.system_secs - self.cpu.system_secs).max(0.0),
        }
    }
}

/// CPU time in user space and in the kernel, in seconds. Linux counts both in clock ticks
/// (10 ms), splitting the precisely measured run time between them by where the process
/// was at each timer tick: figures need many ticks' worth of work to mean much.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    pub(crate) user_secs: f64,
    pub(crate) system_secs: f64,
}

impl Cpu {
    /// Microseconds of each per `n` things done (deliveries, say); `None` for none.
    pub(crate) fn micros_per(self, n: u64) -> Option<(f64, f64)> {
        (n > 0).then(|| {
            let n = n as f64;
            (self.user_secs * 1e6 / n, self.system_secs * 1e6 / n)
        })
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
    let cpu = cpu_ticks(&stat)?;
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
        cpu,
        switches,
    })
}

/// This process's own CPU seconds (the load generator's share of the machine).
pub(crate) fn own_cpu_secs() -> f64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_ticks(&s).ok())
        .map_or(0.0, |c| c.user_secs + c.system_secs)
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime` and `stime` from a `stat` line (fields 14 and 15; the command name may hold
/// spaces).
fn cpu_ticks(stat: &str) -> Result<Cpu> {
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
    Ok(Cpu {
        user_secs: get(11)? as f64 / TICKS_PER_SEC,
        system_secs: get(12)? as f64 / TICKS_PER_SEC,
    })
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
        assert!(s.cpu.user_secs >= 0.0 && s.cpu.system_secs >= 0.0);
    }

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let cpu = cpu_ticks(line).unwrap();
        assert_eq!((cpu.user_secs, cpu.system_secs), (2.5, 0.5));
        assert_eq!(cpu.micros_per(1000), Some((2500.0, 500.0)));
        assert_eq!(cpu.micros_per(0), None);
    }
}
