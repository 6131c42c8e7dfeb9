//! CPU time and peak memory of a process tree, read from `/proc`.

use std::collections::BTreeSet;

/// The fields of `/proc/PID/stat` the benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses one `/proc/PID/stat` line.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    // The command name sits in parentheses and may itself hold spaces and parentheses,
    // so fields are counted from the last ')'.
    let (head, tail) = line.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5).
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        pid,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        cpu_ticks: field(14)?.parse::<u64>().ok()? + field(15)?.parse::<u64>().ok()?,
    })
}

/// Parses `VmHWM` (peak resident set size) out of `/proc/PID/status`, in KiB.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The pids of `root`, its process group, and all their descendants.
///
/// nginx forks its workers; they stay in the master's group and name it as their parent, and
/// either link alone would find them, but both are cheap and cover a proxy that re-parents.
pub fn tree(all: &[ProcStat], root: u32) -> BTreeSet<u32> {
    let mut found: BTreeSet<u32> = all
        .iter()
        .filter(|p| p.pid == root || p.pgrp == root)
        .map(|p| p.pid)
        .collect();
    loop {
        let before = found.len();
        for p in all {
            if found.contains(&p.ppid) {
                found.insert(p.pid);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// Every process's stat line that could be read (processes come and go while scanning).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|line| parse_stat(&line))
        .collect()
}

/// Ticks per second of the CPU times in `/proc/PID/stat`.
fn clock_ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // 100 is what Linux reports on every architecture the benchmark runs on.
        _ => 100.0,
    }
}

/// What one look at a process tree found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeUsage {
    /// Processes in the tree.
    pub processes: usize,
    /// User plus system CPU seconds used so far, summed over the tree.
    pub cpu_secs: f64,
    /// Peak resident set size, summed over the tree, KiB.
    pub peak_rss_kib: u64,
}

/// Samples the CPU time and peak RSS of `root`'s tree (see [`tree`]).
pub fn usage(root: u32) -> TreeUsage {
    let all = all_processes();
    let pids = tree(&all, root);
    let ticks: u64 = all
        .iter()
        .filter(|p| pids.contains(&p.pid))
        .map(|p| p.cpu_ticks)
        .sum();
    let peak_rss_kib = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| parse_vm_hwm_kib(&status))
        .sum();
    TreeUsage {
        processes: pids.len(),
        cpu_secs: ticks as f64 / clock_ticks_per_sec(),
        peak_rss_kib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (nginx: worker (x) ) S 4200 4200 4200 0 -1 4194624 1480 0 0 0 \
                    250 75 0 0 20 0 1 0 12345 11111111 2222 18446744073709551615 1 1 0 0 0 0 0 \
                    4096 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                ppid: 4200,
                pgrp: 4200,
                cpu_ticks: 325,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_own_stat() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let stat = parse_stat(&own).unwrap();
        assert_eq!(stat.pid, std::process::id());
    }

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    5123 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(5123));
        assert_eq!(parse_vm_hwm_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn tree_follows_groups_and_parents() {
        let p = |pid, ppid, pgrp| ProcStat {
            pid,
            ppid,
            pgrp,
            cpu_ticks: 0,
        };
        let all = [
            p(1, 0, 1),
            p(100, 1, 100),   // the proxy, its own group leader
            p(101, 100, 100), // worker
            p(102, 100, 102), // a child that made its own group
            p(103, 102, 102), // ... and its child
            p(200, 1, 200),   // unrelated
            p(201, 1, 100),   // re-parented to init but still in the group
        ];
        let found: Vec<u32> = tree(&all, 100).into_iter().collect();
        assert_eq!(found, [100, 101, 102, 103, 201]);
    }

    #[test]
    fn usage_of_self_is_sane() {
        let usage = usage(std::process::id());
        assert!(usage.processes >= 1);
        assert!(usage.peak_rss_kib > 0);
        assert!(usage.cpu_secs >= 0.0);
    }
}
