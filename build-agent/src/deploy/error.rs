//! Why a deploy stage failed, typed where it happens, and the error policy that turns it into a
//! verdict (the shape of kube-rs's `reconcile` + `error_policy`): a package that cannot be
//! deployed as it is fails the job at once, with the reason; trouble of the machine — the Docker
//! engine not answering, the docker CLI missing, the disk full, the work folder not writable —
//! leaves the job waiting and retrying, never `failed`.

use crate::deploy::refusal::Refusal;
use crate::process::CmdError;

/// What caused a failure: decides, with the engine's state, whether the job waits or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The package: refused by the policy, an invalid compose file, a container that exits.
    Package,
    /// The machine: the work folder cannot be written, a background task died.
    Machine,
    /// The docker CLI (or compose) cannot be started: not installed, not on PATH.
    DockerMissing,
    /// A docker command failed or timed out. The package's fault when the engine answers,
    /// unless the CLI says the disk is full.
    DockerCommand { disk_full: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployError {
    pub cause: Cause,
    /// For the job's status and the operator: what failed and what to do.
    pub message: String,
}

/// What the error policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the job now, with this reason.
    Fail(String),
    /// Keep the job and try again later; the reason goes into the status message.
    Retry(String),
}

/// The docker CLI's words for a full disk (no exit code tells it apart from a broken build).
const DISK_FULL: &[&str] = &["no space left on device", "disk quota exceeded"];

impl DeployError {
    pub fn package(message: impl Into<String>) -> Self {
        DeployError {
            cause: Cause::Package,
            message: message.into(),
        }
    }

    pub fn machine(message: impl Into<String>) -> Self {
        DeployError {
            cause: Cause::Machine,
            message: message.into(),
        }
    }

    /// A docker command's failure; `doing` says which step (e.g. "docker build failed").
    pub fn docker(doing: &str, e: CmdError) -> Self {
        let cause = match &e {
            CmdError::Spawn(..) => Cause::DockerMissing,
            CmdError::TimedOut(_, _, tail) | CmdError::Failed(_, _, tail) => {
                let tail = tail.to_ascii_lowercase();
                Cause::DockerCommand {
                    disk_full: DISK_FULL.iter().any(|m| tail.contains(m)),
                }
            }
        };
        DeployError {
            cause,
            message: format!("{doing}: {e}"),
        }
    }

    /// The same failure with more said about it (e.g. what was put back).
    pub fn explain(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.message = f(&self.message);
        self
    }

    /// Whether the verdict depends on the Docker engine answering (ask it only then).
    pub fn needs_engine_check(&self) -> bool {
        matches!(self.cause, Cause::Package | Cause::DockerCommand { .. })
    }

    /// The error policy. `engine_answers` is asked after the failure: an engine that does not
    /// answer explains any failure of a stage that talks to it.
    pub fn verdict(self, engine_answers: bool) -> Verdict {
        let m = self.message;
        match self.cause {
            Cause::Machine => Verdict::Retry(m),
            Cause::DockerMissing => {
                Verdict::Retry(format!("{m} (install the docker CLI, or fix PATH)"))
            }
            _ if !engine_answers => Verdict::Retry(format!(
                "{m} (the Docker engine does not answer: is it running? DOCKER_HOST?)"
            )),
            Cause::DockerCommand { disk_full: true } => Verdict::Retry(format!(
                "{m} (the disk is full: free space, e.g. docker system prune)"
            )),
            Cause::Package | Cause::DockerCommand { disk_full: false } => Verdict::Fail(m),
        }
    }
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeployError {}

impl From<Refusal> for DeployError {
    fn from(r: Refusal) -> Self {
        DeployError::package(r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn failed(tail: &str) -> CmdError {
        CmdError::Failed("docker build".into(), Some(1), tail.into())
    }

    #[test]
    fn the_machine_and_the_package_are_told_apart() {
        let broken =
            DeployError::docker("docker build failed", failed("unknown instruction: FORM"));
        assert!(matches!(broken.clone().verdict(true), Verdict::Fail(m) if m.contains("FORM")));
        assert!(
            matches!(broken.verdict(false), Verdict::Retry(m) if m.contains("does not answer"))
        );
        let full = DeployError::docker(
            "docker build failed",
            failed("write /var/lib/docker/tmp/x: no space left on device"),
        );
        assert!(matches!(full.verdict(true), Verdict::Retry(m) if m.contains("disk is full")));
        let missing = DeployError::docker(
            "docker build failed",
            CmdError::Spawn("docker build".into(), std::io::ErrorKind::NotFound.into()),
        );
        assert!(!missing.needs_engine_check());
        assert!(matches!(missing.verdict(true), Verdict::Retry(_)));
        let hung = DeployError::docker(
            "docker build failed",
            CmdError::TimedOut("docker build".into(), Duration::from_secs(5), String::new()),
        );
        assert!(matches!(hung.verdict(true), Verdict::Fail(_)));
        assert!(matches!(
            DeployError::machine("cannot write").verdict(true),
            Verdict::Retry(_)
        ));
        let refused: DeployError = Refusal("service 'a' asks for 'privileged'".into()).into();
        assert!(matches!(refused.verdict(true), Verdict::Fail(_)));
    }

    #[test]
    fn more_said_keeps_the_cause() {
        let e = DeployError::docker("docker compose up failed", failed("boom"))
            .explain(|m| format!("{m}; the previous version was put back"));
        assert!(e.message.ends_with("put back"));
        assert_eq!(e.cause, Cause::DockerCommand { disk_full: false });
    }
}
