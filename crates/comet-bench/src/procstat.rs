//! The server's resource use, read from `/proc/PID` (Linux): resident memory and CPU time of a
//! process and all its descendants (nginx workers, Pushpin's helper processes).

use std::collections::BTreeSet;

use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on every Linux ABI in use).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// Sum of `VmRSS` over the tree, KiB.
    pub rss_kib: u64,
    /// Sum of user + system CPU time over the tree, seconds.
    pub cpu_secs: f64,
    /// Processes read.
    pub processes: usize,
}

/// `pid` and every process descending from it.
pub fn process_tree(roots: &[u32]) -> BTreeSet<u32> {
    let mut set: BTreeSet<u32> = roots.iter().copied().collect();
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = read_stat(pid).map(|s| s.0) {
                parents.push((pid, ppid));
            }
        }
    }
    // Bounded: a tree deeper than 8 levels is not a server we start.
    for _ in 0..8 {
        let before = set.len();
        for &(pid, ppid) in &parents {
            if set.contains(&ppid) {
                set.insert(pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    set
}

/// (ppid, utime + stime ticks) from `/proc/PID/stat`.
fn read_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 4 (ppid) is index 1 here; utime/stime (14, 15) are 11, 12.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn read_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&text)
}

/// The `VmRSS:` line of a `/proc/PID/status` text, in KiB.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads the tree rooted at `roots` now (descendants are looked up afresh each time).
pub fn sample(roots: &[u32]) -> Option<ProcSample> {
    if roots.is_empty() {
        return None;
    }
    let mut s = ProcSample::default();
    for pid in process_tree(roots) {
        if let (Some((_, ticks)), Some(rss)) = (read_stat(pid), read_rss_kib(pid)) {
            s.cpu_secs += ticks as f64 / TICKS_PER_SEC;
            s.rss_kib += rss;
            s.processes += 1;
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_itself() {
        let me = std::process::id();
        let s = sample(&[me]).unwrap();
        assert!(s.processes >= 1 && s.rss_kib > 0);
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t  1234 kB\n"), Some(1234));
    }
}
