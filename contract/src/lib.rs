//! The contract between the two binaries (and the tests): the Docker labels, the `agent-{name}`
//! naming, each agent's own network and the containers that join it, the rule for agent names,
//! and the job stream's names (`docs/contracts.md`).
//! The binaries never talk to each other; this is all they share. No dependencies.

/// The labels the build agent puts on agent containers and the sidecar reads (contracts §1).
pub mod labels {
    pub const TYPE: &str = "nasiko.type";
    pub const NAME: &str = "nasiko.name";
    pub const OWNER: &str = "nasiko.owner";
    pub const PORT: &str = "nasiko.port";
    pub const VERSION: &str = "nasiko.version";
    pub const UPLOAD_ID: &str = "nasiko.upload-id";
    /// `nasiko.type` of an agent's entry service (routed).
    pub const TYPE_AGENT: &str = "agent";
    /// `nasiko.type` of an agent's other services (never routed).
    pub const TYPE_DEPENDENCY: &str = "agent-dependency";
    /// The prefix every label of ours has; packages may not set labels with it.
    pub const PREFIX: &str = "nasiko.";
    /// On an agent's own network (see [`super::agent_network`]): the agent's name.
    pub const AGENT_NETWORK: &str = "nasiko.agent-network";
    /// On an agent's containers and its own network: the stack it belongs to, named by the
    /// stack's shared agents network (the build agent's DOCKER_NETWORK, the sidecar's
    /// AGENTS_NETWORK). A sidecar routes, and joins its gateway to, its own stack's agents only.
    pub const STACK: &str = "nasiko.stack";
    /// On the network builds run on (see [`super::build_network`]): the stack it serves.
    pub const BUILD_NETWORK: &str = "nasiko.build-network";
}

/// The containers that join every agent's own network, and the name each has there: the
/// gateway (agents reach the platform only through it) and Phoenix, under the names agents have
/// always used for them. `container=alias`, or a container name alone (its alias).
pub const AGENT_NETWORK_MEMBERS: &str = "kong-gateway,phoenix-observability";

/// One member of [`AGENT_NETWORK_MEMBERS`]: `(container, alias)`.
pub fn parse_member(m: &str) -> Option<(&str, &str)> {
    let m = m.trim();
    let (c, a) = m.split_once('=').unwrap_or((m, m));
    let (c, a) = (c.trim(), a.trim());
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    (ok(c) && ok(a)).then_some((c, a))
}

/// The Redis stream of deploy jobs: its names, the one encoder and the one decoder (contracts §3).
pub mod stream;

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

/// The path an agent is routed at on the gateway (its Kong route's path, and its URL's path):
/// `/agents/agent-{name}`.
pub fn agent_route_path(name: &str) -> String {
    format!("/agents/{}", agent_ref(name))
}

/// The stack's shared agents network by default (the build agent's DOCKER_NETWORK, the
/// sidecar's AGENTS_NETWORK); each agent's own network is named after it ([`agent_network`]).
pub const AGENTS_NETWORK: &str = "nasiko-network";

/// The name upstream's agent packages give the shared agents network in their compose files;
/// the build agent reads it (and [`AGENTS_NETWORK`]) as the agents network.
pub const LEGACY_AGENTS_NETWORK: &str = "agents-net";

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

/// An agent's two deploy slots. An update starts the new version in the slot that is not
/// serving, beside the one that is; the sidecar moves the agent's traffic to it once it is ready
/// (each slot is its own generation: its own compose project), and the old slot then goes.
/// Blue's names are the agent's names of before (`agent-{name}`); green's begin `agentgreen-`,
/// which no agent's `agent-…` name can (`agent-green-x` is agent `green-x`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::Blue, Slot::Green];

    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// The slot's entry container: `agent-{name}` or `agentgreen-{name}`.
    pub fn container(self, name: &str) -> String {
        match self {
            Slot::Blue => agent_ref(name),
            Slot::Green => format!("agentgreen-{name}"),
        }
    }

    /// The slot's container of replica `i` (from 1): the first is [`Slot::container`], the
    /// others `agent{i}-{name}` or `agentgreen{i}-{name}` (no agent's `agent-…` name, and no
    /// other slot's, begins so).
    pub fn replica(self, name: &str, i: u64) -> String {
        match (self, i) {
            (_, 0 | 1) => self.container(name),
            (Slot::Blue, i) => format!("agent{i}-{name}"),
            (Slot::Green, i) => format!("agentgreen{i}-{name}"),
        }
    }

    /// The slot's compose project: [`compose_project`], or `agentgreen-…` with the same rest.
    pub fn project(self, name: &str) -> String {
        let p = compose_project(name);
        match self {
            Slot::Blue => p,
            Slot::Green => format!("agentgreen-{}", &p["agent-".len()..]),
        }
    }
}

/// The agent's own network in `stack` (the stack's shared agents network: DOCKER_NETWORK,
/// AGENTS_NETWORK): its entry container, the gateway and Phoenix, nothing else. Named
/// `{stack}-agent-…`, with the agent's compose project after the stack's name, because:
/// - Docker gives a container with several networks its default route and published ports on
///   the network whose name sorts first, and the gateway must keep them on the platform network,
///   whose name sorts before the stack's (scripts/local-up.sh checks it), so before these;
/// - compose names a project's networks `{project}_{key}`, never `{stack}-…`;
/// - each stack's agent networks are its own.
pub fn agent_network(stack: &str, name: &str) -> String {
    format!("{stack}-{}", compose_project(name))
}

/// The network the build agent runs builds on in `stack`: a bridge of its own with traffic
/// between its containers off, so a package's `RUN` reaches neither another build nor what runs on
/// Docker's default bridge. Not an agent network (no agent project is named `builds`).
pub fn build_network(stack: &str) -> String {
    format!("{stack}-builds")
}

/// The start of the Linux bridge name of every network the build agent makes or writes into a
/// package's compose file (agents', builds', a package's own): the agent guard
/// (`build-agent guard`) keys its firewall rules on it, whatever the networks' subnets.
pub const AGENT_BRIDGE_PREFIX: &str = "nsk";

/// The Linux bridge of Docker network `network` (`com.docker.network.bridge.name`): the prefix
/// and 12 hex digits of the name's 64-bit FNV-1a hash, 15 characters, the kernel's limit for an
/// interface name.
pub fn agent_bridge(network: &str) -> String {
    let hash = network.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{AGENT_BRIDGE_PREFIX}{:012x}", hash >> 16)
}

/// The agent whose own network in `stack` this is, from the network's name alone (the inverse
/// of [`agent_network`]; `None` for any other network).
pub fn agent_of_network(stack: &str, network: &str) -> Option<String> {
    let enc = network.strip_prefix(stack)?.strip_prefix("-agent-")?;
    let mut out = String::new();
    let mut chars = enc.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                '_' => out.push('_'),
                'd' => out.push('.'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    valid_agent_name(&out).then_some(out)
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
    fn an_agent_bridge_is_15_characters_under_the_prefix_and_one_per_name() {
        let a = agent_bridge("nasiko-network-agent-translator");
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with(AGENT_BRIDGE_PREFIX), "{a}");
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_eq!(a, agent_bridge("nasiko-network-agent-translator"));
        let names: std::collections::BTreeSet<String> = (0..10_000)
            .map(|i| agent_bridge(&format!("nasiko-network-agent-a{i}")))
            .collect();
        assert_eq!(names.len(), 10_000, "two names share a bridge");
        // FNV-1a's published vector: "a" hashes to 0xaf63dc4c8601ec8c
        assert_eq!(
            agent_bridge("a"),
            format!("nsk{:012x}", 0xaf63dc4c8601ec8cu64 >> 16)
        );
    }

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
        assert_eq!(agent_route_path("x"), "/agents/agent-x");
        assert_eq!(name_from_container("agent-x"), Some("x"));
        assert_eq!(name_from_container("agent-Bad"), None);
        assert_eq!(name_from_container("redis"), None);
    }

    #[test]
    fn an_agents_slots_are_its_own_and_no_other_agents() {
        assert_eq!(Slot::Blue.container("foo"), "agent-foo");
        assert_eq!(Slot::Blue.project("f.o"), "agent-f_do");
        assert_eq!(Slot::Green.container("foo"), "agentgreen-foo");
        assert_eq!(Slot::Green.project("f.o"), "agentgreen-f_do");
        assert!(name_from_container(&Slot::Green.container("foo")).is_none());
        // no slot of one name is any slot of another
        let names = [
            "foo",
            "green-foo",
            "foo-green",
            "agentgreen-foo",
            "g",
            "f.o",
            "f_do",
            "2-foo",
            "foo-2",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for n in names {
            for slot in Slot::BOTH {
                for i in 1..=12 {
                    assert!(seen.insert(slot.replica(n, i)), "{n} {slot:?} {i}");
                }
                assert!(seen.insert(format!("project {}", slot.project(n))), "{n}");
            }
        }
        assert_eq!(Slot::Blue.replica("foo", 1), "agent-foo");
        assert_eq!(Slot::Blue.replica("foo", 2), "agent2-foo");
        assert_eq!(Slot::Green.replica("foo", 3), "agentgreen3-foo");
        assert!(name_from_container(&Slot::Blue.replica("foo", 2)).is_none());
        assert_eq!(Slot::Blue.other(), Slot::Green);
        assert_eq!(Slot::Green.other().as_str(), "blue");
    }

    #[test]
    fn agent_networks_are_one_per_name_and_read_back() {
        let names = [
            "foo",
            "foo_default",
            "foo.d",
            "foo_d",
            "a-b",
            "x__y",
            "v1.2_x",
        ];
        let nets: Vec<String> = names
            .iter()
            .map(|n| agent_network("nasiko-network", n))
            .collect();
        assert_eq!(nets[0], "nasiko-network-agent-foo");
        for (n, net) in names.iter().zip(&nets) {
            assert_eq!(
                agent_of_network("nasiko-network", net).as_deref(),
                Some(*n),
                "{net}"
            );
            assert_eq!(agent_of_network("other", net), None, "{net}");
            // after the platform network in name order, and never a compose project's network
            assert!(
                net.as_str() > "nasiko-core" && !net.starts_with("agent-"),
                "{net}"
            );
        }
        let mut unique = nets.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), nets.len(), "{nets:?}");
        for other in [
            "nasiko-network",
            "agent-foo",
            "nasiko-network-agent-",
            "nasiko-network-agent-a_x",
            "nasiko-network-agent-A",
            "nasiko-network-agent-a_",
            "nasiko-networkagent-a",
        ] {
            assert_eq!(agent_of_network("nasiko-network", other), None, "{other}");
        }
    }

    #[test]
    fn members_are_container_and_alias() {
        assert_eq!(
            parse_member("kong-gateway"),
            Some(("kong-gateway", "kong-gateway"))
        );
        assert_eq!(
            parse_member(" e2e-gw = kong-gateway "),
            Some(("e2e-gw", "kong-gateway"))
        );
        for bad in ["", "=x", "x=", "a b", "a=b c", "a/b"] {
            assert_eq!(parse_member(bad), None, "{bad:?}");
        }
        let all: Vec<_> = AGENT_NETWORK_MEMBERS.split(',').map(parse_member).collect();
        assert_eq!(
            all,
            [
                Some(("kong-gateway", "kong-gateway")),
                Some(("phoenix-observability", "phoenix-observability"))
            ]
        );
    }
}
