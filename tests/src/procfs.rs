//! What the host's `/proc` says of a process, for the benchmarks: its memory (`status`), its CPU
//! time (`stat`), and its cgroup's directory.

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `RssAnon:`, `VmHWM:`, …) in KiB; 0 when absent.
pub fn status_kib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_of(&status, key)
}

/// A `kB` field of one reading of `/proc/PID/status`; 0 when absent.
fn kib_of(status: &str, key: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A process's RSS, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / 1024.0
}

/// User and system CPU time of a process so far, seconds (clock ticks of 1/100 s).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command's closing parenthesis, from field 3 (the state): utime and
    // stime are fields 14 and 15
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The pid of the host process whose command is `name` (the first found).
pub fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

/// The directory of process `pid`'s cgroup for `controller` (`memory`, `cpuacct`), and whether it
/// is cgroup v1's hierarchy of that controller (else v2's unified one).
pub fn cgroup_dir(pid: u32, controller: &str) -> (String, bool) {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut unified = String::new();
    for l in groups.lines() {
        let mut parts = l.splitn(3, ':');
        let (controllers, path) = (parts.nth(1).unwrap_or(""), parts.next().unwrap_or(""));
        if controllers.split(',').any(|c| c == controller) {
            return (format!("/sys/fs/cgroup/{controllers}{path}"), true);
        }
        if controllers.is_empty() {
            unified = format!("/sys/fs/cgroup{path}");
        }
    }
    (unified, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_shows_its_memory_cpu_and_cgroup() {
        let me = std::process::id();
        assert!(rss_mib(me) > 0.0);
        // one reading: the other tests' threads grow the RSS between two reads
        let status = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
        let (hwm, rss) = (kib_of(&status, "VmHWM:"), kib_of(&status, "VmRSS:"));
        assert!(rss > 0.0 && hwm >= rss, "VmHWM {hwm} kB, VmRSS {rss} kB");
        // CPU time counts: spin in user space until a fifth of a second more is counted (on a
        // loaded machine that takes longer than a fifth of a second of wall time)
        let (before, start) = (cpu_secs(me), std::time::Instant::now());
        let mut x: u64 = 1;
        while cpu_secs(me) < before + 0.2 && start.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert!(
            cpu_secs(me) >= before + 0.2,
            "{before} then {} s of CPU",
            cpu_secs(me)
        );
        let (dir, _) = cgroup_dir(me, "memory");
        assert!(std::path::Path::new(&dir).is_dir(), "{dir}");
        assert_eq!(pid_of("no-such-command-here"), None);
    }
}
