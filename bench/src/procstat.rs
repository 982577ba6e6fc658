//! CPU accounting and machine facts from /proc: a process's or thread's utime + stime, the
//! process named `sluice`, the CPU model, core count and kernel.

use std::fs;
use std::path::PathBuf;

use anyhow::Context;

use crate::sys;

/// utime + stime (clock ticks) from the text of /proc/PID/stat (proc(5)). The command name
/// may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The command name of a /proc/PID/stat text (between the first `(` and the last `)`).
pub fn parse_stat_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// Resident set size (bytes) from the text of /proc/PID/status (`VmRSS:  1234 kB`).
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_status_rss(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// CPU time (ns) of every thread of `pid`, summed per thread name (`sluice-worker-0`,
/// `tokio-runtime-w`, ...), sorted by name. Threads that exit meanwhile are skipped.
pub fn thread_times(pid: u32) -> Vec<(String, u64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let tick_ns = 1_000_000_000 / sys::clock_ticks_per_sec();
    let mut by_name = std::collections::BTreeMap::<String, u64>::new();
    for entry in dir.filter_map(Result::ok) {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let (Some(name), Some(ticks)) = (parse_stat_name(&stat), parse_stat_ticks(&stat)) {
            *by_name.entry(name.to_string()).or_default() += ticks * tick_ns;
        }
    }
    by_name.into_iter().collect()
}

/// Per-name CPU spent between two `thread_times` snapshots, busiest first, idle ones dropped.
pub fn thread_delta(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = after
        .iter()
        .map(|(name, ns)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v);
            (name.clone(), ns.saturating_sub(was))
        })
        .filter(|(_, ns)| *ns > 0)
        .collect();
    out.sort_by_key(|(_, ns)| std::cmp::Reverse(*ns));
    out
}

/// Whose CPU time to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuSource {
    /// Every thread of a process.
    Process(u32),
    /// One thread of this process (the in-process reflector).
    OwnThread(u32),
}

impl CpuSource {
    fn path(&self) -> PathBuf {
        match self {
            CpuSource::Process(pid) => format!("/proc/{pid}/stat").into(),
            CpuSource::OwnThread(tid) => format!("/proc/self/task/{tid}/stat").into(),
        }
    }

    /// CPU time consumed so far, in nanoseconds (clock-tick resolution, usually 10 ms).
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        let path = self.path();
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let ticks = parse_stat_ticks(&text)
            .with_context(|| format!("unexpected format of {}", path.display()))?;
        Ok(ticks * (1_000_000_000 / sys::clock_ticks_per_sec()))
    }
}

/// Processes whose command name (/proc/PID/comm) is exactly `name`.
pub fn find_pids(name: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// What the numbers were measured on.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    /// 1-minute load average when detected: other work on the machine skews the numbers.
    pub loadavg: f64,
}

/// The first `model name` of /proc/cpuinfo, and how many processors it lists.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, usize) {
    let mut model = None;
    let mut count = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => count += 1,
            "model name" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    (model, count)
}

impl Machine {
    pub fn detect() -> Machine {
        let (model, listed) =
            parse_cpuinfo(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
        let cores = std::thread::available_parallelism().map_or(listed.max(1), usize::from);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Machine {
            cpu_model: model.unwrap_or_else(|| "unknown".into()),
            cores,
            kernel: kernel.trim().to_string(),
            loadavg: loadavg
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (sl uice) w) S 1 4242 4242 0 -1 4194560 300 0 0 0 1234 567 0 0 20 0 3 0 99 \
                    1000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
        assert_eq!(parse_stat_name(stat), Some("sl uice) w"));
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn process_and_thread_clocks_are_readable() {
        let me = CpuSource::Process(std::process::id());
        let t0 = me.cpu_ns().unwrap();
        assert!(me.cpu_ns().unwrap() >= t0);
        assert!(CpuSource::OwnThread(sys::gettid()).cpu_ns().is_ok());
        assert!(CpuSource::Process(u32::MAX).cpu_ns().is_err());
    }

    #[test]
    fn thread_deltas_are_per_name_and_sorted() {
        let before = [("a".to_string(), 10), ("b".to_string(), 5)];
        let after = [
            ("a".to_string(), 15),
            ("b".to_string(), 5),
            ("c".to_string(), 7),
        ];
        assert_eq!(
            thread_delta(&before, &after),
            vec![("c".to_string(), 7), ("a".to_string(), 5)]
        );
        assert!(!thread_times(std::process::id()).is_empty());
    }

    #[test]
    fn cpuinfo_gives_model_and_count() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpuinfo(text), (Some("AMD EPYC 7B13".into()), 2));
        let m = Machine::detect();
        assert!(m.cores >= 1 && !m.kernel.is_empty());
    }

    #[test]
    fn this_process_is_found_by_name() {
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert!(find_pids(comm.trim_end()).contains(&std::process::id()));
        assert!(find_pids("no-such-process-name").is_empty());
    }
}
