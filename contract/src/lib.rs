//! The contract between the two binaries (and the tests): the Docker labels, the `agent-{name}`
//! naming, the rule for agent names, and the job stream's names (`../shared/docs/contracts.md`).
//! The binaries never talk to each other; this is all they share. No dependencies.

/// The labels the build agent puts on agent containers and the sidecar reads (contracts §1).
pub mod labels {
    pub const TYPE: &str = "nasiko.type";
    pub const NAME: &str = "nasiko.name";
    pub const OWNER: &str = "nasiko.owner";
    pub const PORT: &str = "nasiko.port";
    pub const VERSION: &str = "nasiko.version";
    pub const UPLOAD_ID: &str = "nasiko.upload-id";
    /// `true` on the build agent's update stand-by: it serves while the entry container is
    /// recreated, then gives way to it (the sidecar weights it 0 once that one is ready).
    pub const HANDOVER: &str = "nasiko.handover";
    /// `nasiko.type` of an agent's entry service (routed).
    pub const TYPE_AGENT: &str = "agent";
    /// `nasiko.type` of an agent's other services (never routed).
    pub const TYPE_DEPENDENCY: &str = "agent-dependency";
    /// The prefix every label of ours has; packages may not set labels with it.
    pub const PREFIX: &str = "nasiko.";
}

/// The Redis stream of deploy jobs, its consumer group and the fields the backend writes.
pub mod stream {
    pub const KEY: &str = "orchestration:commands";
    pub const GROUP: &str = "orchestrator";
    pub const COMMAND: &str = "command";
    pub const ACTION: &str = "action";
    pub const AGENT_NAME: &str = "agent_name";
    pub const AGENT_ID: &str = "agent_id";
    pub const AGENT_PATH: &str = "agent_path";
    pub const BASE_URL: &str = "base_url";
    pub const OWNER_ID: &str = "owner_id";
    pub const UPLOAD_ID: &str = "upload_id";
    pub const UPLOAD_TYPE: &str = "upload_type";
    pub const VERSION: &str = "version";
    pub const TARGET_VERSION: &str = "target_version";
    pub const WEBHOOK_URL: &str = "webhook_url";
    pub const UPDATE_STRATEGY: &str = "update_strategy";
}

/// The longest agent name (Docker container and compose project names stay well within limits).
pub const MAX_NAME_LEN: usize = 128;

/// Agent names: lower-case `[a-z0-9][a-z0-9_.-]*`, at most [`MAX_NAME_LEN`] (contracts §4.2).
pub fn valid_agent_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && n.len() <= MAX_NAME_LEN
}

/// `agent-{name}`: the agent's container, and its Kong service.
pub fn agent_ref(name: &str) -> String {
    format!("agent-{name}")
}

/// The agent's compose project: `agent-{name}` with `_` written `__` and `.` written `_d`
/// (compose projects take neither `.` nor upper case), so two agent names never share a project
/// — one's `up --remove-orphans` or undeploy would remove the other's containers.
pub fn compose_project(name: &str) -> String {
    let mut p = String::from("agent-");
    for c in name.chars() {
        match c {
            '_' => p.push_str("__"),
            '.' => p.push_str("_d"),
            c => p.push(c),
        }
    }
    p
}

/// The container that serves an agent while its own is replaced (the update stand-by). Not
/// `agent-…`: that could be another agent's container (`agent-foo-handover` is agent
/// `foo-handover`'s).
pub fn standby_container(name: &str) -> String {
    format!("agentstandby-{}", &compose_project(name)["agent-".len()..])
}

/// The name an agent has when only its container name is known (the Python registry's fallback).
pub fn name_from_container(container: &str) -> Option<&str> {
    container
        .strip_prefix("agent-")
        .filter(|n| valid_agent_name(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_rule_and_the_naming() {
        for ok in [
            "a",
            "translator",
            "a2a-github-agent",
            "v1.2_x",
            &"a".repeat(128),
        ] {
            assert!(valid_agent_name(ok), "{ok}");
        }
        for bad in [
            "",
            "My Agent",
            "UPPER",
            "-x",
            ".x",
            "a/b",
            "a b",
            &"a".repeat(129),
        ] {
            assert!(!valid_agent_name(bad), "{bad:?}");
        }
        assert_eq!(agent_ref("x"), "agent-x");
        assert_eq!(name_from_container("agent-x"), Some("x"));
        assert_eq!(name_from_container("agent-Bad"), None);
        assert_eq!(name_from_container("redis"), None);
        assert_eq!(standby_container("foo"), "agentstandby-foo");
        assert!(name_from_container(&standby_container("foo")).is_none());
    }
}
