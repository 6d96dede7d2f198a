//! Child processes for tests (killed on drop) and polling helpers.
//!
//! A daemon a test starts writes its log to a file under `$TMPDIR/nasiko-test-logs`, not to the
//! terminal. The log's end is printed when its test fails (the guard is dropped while panicking),
//! as cargo prints a failing test's own output; every log stays in the folder for a day, for a
//! failure that shows only later (a worker a test killed and started again).
//! `NASIKO_TEST_LOGS=inherit` sends every log to the terminal instead.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
    /// Where its output goes (None: the terminal).
    pub log: Option<PathBuf>,
}

/// How many lines of a daemon's log a failing test prints (the end, where the failure is).
const LOG_TAIL_LINES: usize = 300;

impl ChildGuard {
    /// Start `cmd` with its stdout and stderr in a log file.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        Self::start(name, cmd, true)
    }

    /// Start `cmd` with its stderr in a log file and its stdout as the caller set it.
    pub fn spawn_keeping_stdout(name: &str, cmd: &mut Command) -> ChildGuard {
        Self::start(name, cmd, false)
    }

    fn start(name: &str, cmd: &mut Command, stdout: bool) -> ChildGuard {
        let log =
            (std::env::var("NASIKO_TEST_LOGS").as_deref() != Ok("inherit")).then(|| log_file(name));
        if let Some(path) = &log {
            let file = std::fs::File::create(path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            if stdout {
                cmd.stdout(file.try_clone().expect("clone the log file"));
            }
            cmd.stderr(file);
        }
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
            log,
        }
    }

    /// What it has logged so far (empty when its log goes to the terminal).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Send a signal by number (e.g. 15 for SIGTERM, 9 for SIGKILL).
    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// Wait up to `d` for the process to exit; its exit code if it did.
    pub fn wait_exit(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Some(path) = &self.log else { return };
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "---- {} log ({} lines, the last {} here; all of it in {}) ----\n{}",
                self.name,
                lines.len(),
                tail.len(),
                path.display(),
                tail.join("\n")
            );
        }
    }
}

/// A new log file for a daemon named `name`, under the system's temporary folder.
fn log_file(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    let dir = std::env::temp_dir().join("nasiko-test-logs");
    std::fs::create_dir_all(&dir).expect("create the test log folder");
    SWEEP.call_once(|| remove_logs_older_than(&dir, Duration::from_secs(24 * 3600)));
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    dir.join(format!(
        "{safe}-{}-{}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Poll `f` until it returns Some, or panic after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A free loopback port (bound then released), for a process or container to bind later.
///
/// It is chosen below the kernel's ephemeral range, which Docker also allocates a container's
/// unnamed host ports from (`127.0.0.1::8000`, as the build agent publishes them): a port from
/// there could be handed to another test's container before ours binds it. Each call tries the
/// next port, from a point set by this process's id, so tests beside each other rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = (10_000, ephemeral_low().max(20_000));
    let span = high - low;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port in {low}..{high}")
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn remove_logs_older_than(dir: &std::path::Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a > age);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ephemeral_low, free_port};

    #[test]
    fn free_ports_are_bindable_distinct_and_below_the_ephemeral_range() {
        let low = ephemeral_low() as u16;
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!((10_000..low).contains(&p), "port {p} is not below {low}");
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("still free");
        }
    }
}
