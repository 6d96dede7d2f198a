//! External commands: argument vectors only (never a shell), a timeout that kills the whole
//! process group, children that die with the build agent, output captured and optionally
//! streamed line by line.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    /// stdout and stderr interleaved, in arrival order.
    pub lines: Vec<String>,
    pub stdout: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }
}

#[derive(Debug)]
pub enum CmdError {
    Spawn(String, std::io::Error),
    TimedOut(String, Duration, String),
    Failed(String, Option<i32>, String),
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CmdError::Spawn(c, e) => write!(f, "cannot run `{c}`: {e}. Is it installed?"),
            CmdError::TimedOut(c, d, tail) => write!(
                f,
                "`{c}` timed out after {}s and was killed; last output:\n{tail}",
                d.as_secs()
            ),
            CmdError::Failed(c, code, tail) => write!(
                f,
                "`{c}` exited with {}: {tail}",
                code.map_or("a signal".into(), |c| c.to_string())
            ),
        }
    }
}

impl std::error::Error for CmdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CmdError::Spawn(_, e) => Some(e),
            CmdError::TimedOut(..) | CmdError::Failed(..) => None,
        }
    }
}

fn describe(argv: &[String]) -> String {
    argv.iter().take(3).cloned().collect::<Vec<_>>().join(" ")
}

/// What a child gets of the build agent's environment: where to find programs and the Docker
/// engine the operator chose, nothing else — no token, no Redis address, no COMPOSE_* setting.
pub const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
];

/// Run `argv` with `timeout`, in a clean environment (`PASSED_ENV`). Every output line is also
/// sent to `lines` when given.
pub async fn run(
    argv: &[String],
    timeout: Duration,
    lines: Option<mpsc::UnboundedSender<String>>,
) -> Result<Output, CmdError> {
    run_with(argv, &[], timeout, lines).await
}

/// [`run`] with `env` set on top of the clean environment.
pub async fn run_with(
    argv: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
    lines: Option<mpsc::UnboundedSender<String>>,
) -> Result<Output, CmdError> {
    let what = describe(argv);
    let mut cmd = command(argv);
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().map_err(|e| CmdError::Spawn(what.clone(), e))?;
    let pgid = child.id();
    let (tx, mut rx) = mpsc::unbounded_channel::<(bool, String)>();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let t1 = tx.clone();
    tokio::spawn(async move {
        let mut r = BufReader::new(out).lines();
        while let Ok(Some(l)) = r.next_line().await {
            let _ = t1.send((true, l));
        }
    });
    tokio::spawn(async move {
        let mut r = BufReader::new(err).lines();
        while let Ok(Some(l)) = r.next_line().await {
            let _ = tx.send((false, l));
        }
    });
    let mut all = Vec::new();
    let mut stdout = String::new();
    let collect = async {
        while let Some((is_out, l)) = rx.recv().await {
            if let Some(s) = &lines {
                let _ = s.send(l.clone());
            }
            if is_out {
                stdout.push_str(&l);
                stdout.push('\n');
            }
            all.push(l);
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(status)) => {
            let o = Output {
                code: status.code(),
                lines: all,
                stdout,
            };
            if o.success() {
                Ok(o)
            } else {
                Err(CmdError::Failed(what, o.code, o.tail(20)))
            }
        }
        Ok(Err(e)) => Err(CmdError::Spawn(what, e)),
        Err(_) => {
            if let Some(pid) = pgid {
                // the whole group: docker build's children too
                // SAFETY: killpg on the group we created for this child; no memory involved.
                unsafe {
                    libc::killpg(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            let start = all.len().saturating_sub(20);
            Err(CmdError::TimedOut(what, timeout, all[start..].join("\n")))
        }
    }
}

/// `argv` as a child process: no shell, a clean environment (PASSED_ENV only), output piped,
/// a process group of its own, killed when dropped and when the build agent dies.
fn command(argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear();
    for k in PASSED_ENV {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // If the build agent itself dies (SIGKILL included), its children die too: an orphaned
    // `docker build` must not go on after the job has been handed to the next run. (The signal
    // follows the spawning thread: tokio's core worker threads live as long as the runtime.)
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

pub fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_captured_and_failures_carry_status_and_stderr() {
        let o = run(
            &argv(&["sh", "-c", "echo out; echo err >&2"]),
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap();
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.lines.len(), 2);
        let e = run(
            &argv(&["sh", "-c", "echo boom >&2; exit 3"]),
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("exited with 3: boom"), "{e}");
        let e = run(&argv(&["no-such-binary-xyz"]), Duration::from_secs(5), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("Is it installed?"));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let marker = format!("ba-timeout-{}", std::process::id());
        let script = format!("sleep 30 & echo started; sleep 31; echo {marker}");
        let e = run(
            &argv(&["sh", "-c", &script]),
            Duration::from_millis(500),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CmdError::TimedOut(..)), "{e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ps = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap();
        assert!(ps.stdout.is_empty(), "the group's children were killed");
    }
}
