//! What a failed deploy stage means for the job: the package cannot be deployed as it is (fail
//! the job now, with the reason), or the machine is not ready — the Docker engine does not
//! answer, a tool is missing, the disk is full — and the job waits and retries (the error policy
//! in `pipeline`).

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployError {
    /// A broken package (bad Dockerfile, invalid compose file, a container that exits): final.
    Package(String),
    /// Trouble of the machine, not of the package: retried with backoff, never `failed`.
    Infrastructure(String),
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeployError::Package(e) | DeployError::Infrastructure(e) => f.write_str(e),
        }
    }
}

impl From<String> for DeployError {
    /// A stage's own message describes the package unless classified otherwise.
    fn from(e: String) -> Self {
        DeployError::Package(e)
    }
}

/// Output of the Docker CLI that means the machine, not the package.
const MACHINE_TROUBLE: &[&str] = &[
    "no space left on device",
    "Cannot connect to the Docker daemon",
    "Is the docker daemon running",
    "error during connect",
    "connection refused",
    "device or resource busy",
    // our own message for a command that could not be started (process::CmdError::Spawn)
    "is it installed?",
];

impl DeployError {
    /// Classify a failure given whether the Docker engine answers now: an engine that does not
    /// answer explains any failure; a missing tool or a full disk is the machine's too.
    pub fn classify(message: String, engine_answers: bool) -> DeployError {
        if !engine_answers {
            return DeployError::Infrastructure(format!(
                "{message} (the Docker engine does not answer: is it running? DOCKER_HOST?)"
            ));
        }
        let lower = message.to_ascii_lowercase();
        if MACHINE_TROUBLE
            .iter()
            .any(|m| lower.contains(&m.to_ascii_lowercase()))
        {
            return DeployError::Infrastructure(message);
        }
        DeployError::Package(message)
    }

    pub fn is_infrastructure(&self) -> bool {
        matches!(self, DeployError::Infrastructure(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::CmdError;

    #[test]
    fn the_machine_and_the_package_are_told_apart() {
        let dockerfile =
            "docker build failed: `docker build` exited with 1: unknown instruction: FORM"
                .to_string();
        assert!(!DeployError::classify(dockerfile.clone(), true).is_infrastructure());
        assert!(DeployError::classify(dockerfile, false).is_infrastructure());
        assert!(DeployError::classify(
            "write /var/lib/docker/tmp/x: no space left on device".into(),
            true
        )
        .is_infrastructure());
        let spawn = CmdError::Spawn(
            "docker build".into(),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(DeployError::classify(spawn.to_string(), true).is_infrastructure());
    }
}
