//! Metrics from /proc: memory, CPU time, uptime, and a bounded process table.

use spore_idm::proto::{MetricsResponse, ProcessInfo};

use crate::sys;

/// At most this many processes are reported (the rest is flagged as truncated), and command
/// lines are cut, so a response always fits one IDM frame.
pub const MAX_PROCESSES: usize = 2048;
pub const MAX_CMDLINE: usize = 256;

/// `MemTotal` and `MemAvailable` from /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib.saturating_mul(1024))
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// (busy ticks, idle ticks, cpu count) from /proc/stat.
pub fn parse_stat(text: &str) -> (u64, u64, u32) {
    let mut busy = 0u64;
    let mut idle = 0u64;
    let mut cpus = 0u32;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cpu") => {
                let v: Vec<u64> = words.map(|w| w.parse().unwrap_or(0)).collect();
                let get = |i: usize| v.get(i).copied().unwrap_or(0);
                // user nice system idle iowait irq softirq steal
                busy = [0, 1, 2, 5, 6, 7]
                    .iter()
                    .map(|&i| get(i))
                    .fold(0u64, u64::saturating_add);
                idle = get(3).saturating_add(get(4));
            }
            Some(w) if w.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (busy, idle, cpus)
}

/// The fields of /proc/PID/stat we use: (state, ppid, utime+stime ticks, rss pages). The
/// command name is in parentheses and may itself contain spaces and parentheses, so parsing
/// starts after the last ')'.
pub fn parse_pid_stat(text: &str) -> Option<(String, u32, u64, u64)> {
    let after = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] = state (field 3), f[1] = ppid (4), f[11] = utime (14), f[12] = stime (15),
    // f[21] = rss (24)
    let state = f.first()?.to_string();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    Some((state, ppid, utime.saturating_add(stime), rss.max(0) as u64))
}

fn uid_of(status: &str) -> u32 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn process(pid: u32, tick_ns: u64, page: u64) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, ppid, ticks, rss_pages) = parse_pid_stat(&stat)?;
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|mut c| {
            c.truncate(MAX_CMDLINE);
            let text: String = String::from_utf8_lossy(&c).replace('\0', " ");
            text.trim_end().to_string()
        })
        .unwrap_or_default();
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| uid_of(&s))
        .unwrap_or(0);
    Some(ProcessInfo {
        pid,
        ppid,
        command,
        cmdline,
        rss_bytes: rss_pages.saturating_mul(page),
        cpu_ns: ticks.saturating_mul(tick_ns),
        uid,
        state,
    })
}

pub fn collect(with_processes: bool) -> MetricsResponse {
    let tick_ns = 1_000_000_000 / sys::clock_ticks_per_second().max(1);
    let (total, available) =
        parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let (busy, idle, cpus) = parse_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
    let mut response = MetricsResponse {
        uptime_ns: sys::boottime_ns(),
        memory_total_bytes: total,
        memory_used_bytes: total.saturating_sub(available),
        memory_available_bytes: available,
        cpu_busy_ns: busy.saturating_mul(tick_ns),
        cpu_idle_ns: idle.saturating_mul(tick_ns),
        cpu_count: cpus,
        processes: Vec::new(),
        processes_truncated: false,
        process_count: 0,
    };
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    response.process_count = pids.len().min(u32::MAX as usize) as u32;
    if with_processes {
        let page = sys::page_size();
        pids.sort_unstable();
        response.processes_truncated = pids.len() > MAX_PROCESSES;
        response.processes = pids
            .into_iter()
            .take(MAX_PROCESSES)
            .filter_map(|pid| process(pid, tick_ns, page))
            .collect();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:        2000 kB\nMemFree:  100 kB\nMemAvailable:     1500 kB\n";
        assert_eq!(parse_meminfo(text), (2000 * 1024, 1500 * 1024));
        assert_eq!(parse_meminfo("garbage\nMemTotal: x kB"), (0, 0));
    }

    #[test]
    fn stat() {
        let text = "cpu  10 1 5 100 4 2 3 1 0 0\ncpu0 5 0 2 50 2 1 1 0 0 0\ncpu1 5 1 3 50 2 1 2 1 0 0\nintr 1 2\n";
        assert_eq!(parse_stat(text), (10 + 1 + 5 + 2 + 3 + 1, 104, 2));
        assert_eq!(parse_stat(""), (0, 0, 0));
    }

    #[test]
    fn pid_stat_with_hostile_comm() {
        let text = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000000 25 18446744073709551615 0";
        assert_eq!(parse_pid_stat(text), Some(("S".into(), 1, 10, 25)));
        assert_eq!(parse_pid_stat("42 (x"), None);
        assert_eq!(parse_pid_stat("42 (x) S"), None);
        assert_eq!(parse_pid_stat(""), None);
    }

    #[test]
    fn collect_on_this_machine() {
        let m = collect(true);
        assert!(m.memory_total_bytes > 0 && m.memory_used_bytes <= m.memory_total_bytes);
        assert!(m.cpu_count >= 1 && m.cpu_busy_ns > 0);
        let me = std::process::id();
        let p = m
            .processes
            .iter()
            .find(|p| p.pid == me)
            .expect("own process listed");
        assert!(p.rss_bytes > 0);
        assert!(p.cmdline.len() <= MAX_CMDLINE);
        assert!(m.process_count as usize >= m.processes.len());
        let summary = collect(false);
        assert!(summary.processes.is_empty() && summary.process_count > 0);
    }
}
