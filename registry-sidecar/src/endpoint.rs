//! From a container's facts to an `AgentEndpoint` (contracts.md §1): labels, the naming
//! fallback, the IP on the agent's own network (else the shared one), the port rule and the
//! health gate. Pure.

use nasiko_contract::labels;
use serde::Serialize;
use std::collections::HashMap;

pub const DEFAULT_AGENT_PORT: u16 = 5000;

/// What discovery knows about one container (taken from `docker inspect`).
#[derive(Debug, Clone, Default)]
pub struct ContainerFacts {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    /// `None` when the container has no health check.
    pub health: Option<String>,
    /// network name → IP address
    pub networks: HashMap<String, String>,
    /// e.g. `5000/tcp`
    pub exposed_ports: Vec<String>,
    pub started_at: String,
    /// When the container was created (RFC 3339): orders an agent's generations.
    pub created_at: String,
    /// The image id it runs: containers of one image are one generation of the agent.
    pub image: String,
    /// Its main process on the Docker host (`State.Pid`; None when not running).
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovered {
    Label,
    NameFallback,
    KubernetesService,
}

/// A routable agent: one Kong service + route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentEndpoint {
    pub name: String,
    /// The Kong service name: `agent-{name}` for Docker, the Service's name for Kubernetes.
    pub kong_name: String,
    pub container_id: String,
    pub container_name: String,
    pub ip: String,
    /// The Docker network `ip` is on: the agent's own (`{shared}-agent-…`) or the shared one (empty
    /// for Kubernetes).
    pub network: String,
    pub port: u16,
    pub owner: String,
    pub version: Option<String>,
    pub upload_id: Option<String>,
    pub discovered_by: Discovered,
    pub started_at: String,
    /// When the container was created (RFC 3339; empty when unknown).
    pub created_at: String,
    /// Its generation: the image id it runs and its compose project (empty when unknown). An
    /// agent's containers of one image in one project (a deploy slot) are one generation; a
    /// blue/green update of the same image is still a new one.
    pub generation: String,
    /// It has a health check, and passed it: ready for traffic now, without a warm-up.
    pub health_checked: bool,
    /// Without a health check, whether it was seen listening on its port (`listening`):
    /// `Some(true)` ready; `Some(false)` not yet, and not routed until it does or its warm-up
    /// ends; `None` unknown (a health check decides, or its sockets cannot be read: then it is
    /// routed at once, and beside another container of its agent ready after its warm-up).
    pub listening: Option<bool>,
    /// Its main process on the Docker host, where its sockets are read (`listening`).
    #[serde(skip)]
    pub pid: Option<u32>,
}

impl AgentEndpoint {
    /// A Docker agent found by its labels, in container `container_id`, at `ip:5000` on
    /// `network`, and nothing more known: synthetic agents (benchmarks, tests) start here.
    pub fn labelled(name: &str, container_id: &str, ip: &str, network: &str) -> AgentEndpoint {
        AgentEndpoint {
            kong_name: nasiko_contract::agent_ref(name),
            name: name.into(),
            container_id: container_id.into(),
            container_name: nasiko_contract::agent_ref(name),
            ip: ip.into(),
            network: network.into(),
            port: DEFAULT_AGENT_PORT,
            owner: String::new(),
            version: None,
            upload_id: None,
            discovered_by: Discovered::Label,
            started_at: String::new(),
            created_at: String::new(),
            generation: String::new(),
            health_checked: false,
            listening: None,
            pid: None,
        }
    }

    pub fn service_name(&self) -> String {
        self.kong_name.clone()
    }
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }
    /// Its address as a Kong target: `ip:port`.
    pub fn target(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
    /// When the container was created, in unix seconds (None when unknown).
    pub fn created_unix(&self) -> Option<f64> {
        parse_rfc3339(&self.created_at)
    }
    /// When the container started, in unix seconds (None when unknown).
    pub fn started_unix(&self) -> Option<f64> {
        parse_rfc3339(&self.started_at)
    }
}

/// Docker's `State.StartedAt` (RFC 3339, UTC, nanoseconds) as unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let time = time.strip_suffix('Z')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 || d[0] < 1971 {
        return None;
    }
    let (y, m, day) = (d[0], d[1], d[2]);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    let frac: f64 = format!("0.{frac}").parse().unwrap_or(0.0);
    Some((days * 86400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64 + frac)
}

/// The outcome for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Agent(Box<AgentEndpoint>),
    /// Not an agent at all (infrastructure, dependency, other project): silently ignored.
    NotAgent,
    /// An agent that cannot be routed now (not running, unhealthy, not on the network).
    Waiting(String),
    /// An agent whose labels are malformed: skipped with this reason (logged once per change).
    Malformed(String),
}

pub use nasiko_contract::valid_agent_name;

/// A network discovery looks at: the shared agents network `shared` (legacy), or the own network
/// of an agent of this stack (`{shared}-agent-…`, see `nasiko_contract::agent_network`).
pub fn watched_network(network: &str, shared: &str) -> bool {
    network == shared || nasiko_contract::agent_of_network(shared, network).is_some()
}

/// Classify one container. `shared` is the shared agents network (AGENTS_NETWORK): an agent is
/// routed at its IP on its own network when it is on it, else at its IP on `shared`.
pub fn classify(c: &ContainerFacts, shared: &str) -> Classified {
    // on no network we watch: none of our business, and it costs no sync (a `network connect`
    // event brings it back for a look)
    if !c.networks.keys().any(|n| watched_network(n, shared)) {
        return Classified::NotAgent;
    }
    // another stack's agent (its build agent has another shared network): its sidecar's
    if c.labels.get(labels::STACK).is_some_and(|s| s != shared) {
        return Classified::NotAgent;
    }
    let (name, discovered_by) = match identify(c) {
        Ok(Some(found)) => found,
        Ok(None) => return Classified::NotAgent,
        Err(why) => return Classified::Malformed(why),
    };
    let port = match port_of(c, &name) {
        Ok(p) => p,
        Err(why) => return Classified::Malformed(why),
    };
    if !c.running {
        return Classified::Waiting(format!(
            "agent '{name}': container {} is not running",
            c.name
        ));
    }
    if let Some(h) = c.health.as_deref().filter(|h| *h != "healthy") {
        return Classified::Waiting(format!(
            "agent '{name}': container {} is {h}, routed once healthy",
            c.name
        ));
    }
    let (network, ip) = match address(c, &name, shared) {
        Ok(at) => at,
        Err(why) => return Classified::Waiting(why),
    };
    Classified::Agent(Box::new(AgentEndpoint {
        kong_name: nasiko_contract::agent_ref(&name),
        name,
        container_id: c.id.clone(),
        container_name: c.name.clone(),
        ip,
        network,
        port,
        owner: c.labels.get(labels::OWNER).cloned().unwrap_or_default(),
        version: c.labels.get(labels::VERSION).cloned(),
        upload_id: c.labels.get(labels::UPLOAD_ID).cloned(),
        discovered_by,
        started_at: c.started_at.clone(),
        created_at: c.created_at.clone(),
        generation: generation(c),
        health_checked: c.health.is_some(),
        // read by discovery (`listening`) until it is seen listening or its warm-up ends
        listening: (c.health.is_none() && c.pid.is_some()).then_some(false),
        pid: c.pid,
    }))
}

/// The container's generation: its image in its compose project (see `AgentEndpoint`).
fn generation(c: &ContainerFacts) -> String {
    match c.labels.get(COMPOSE_PROJECT) {
        Some(p) => format!("{} in {p}", c.image),
        None => c.image.clone(),
    }
}

/// The compose project a container belongs to (compose's own label).
const COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// The agent's name and how it was found: `Ok(None)` for a container that is no agent.
fn identify(c: &ContainerFacts) -> Result<Option<(String, Discovered)>, String> {
    match c.labels.get(labels::TYPE).map(String::as_str) {
        Some(labels::TYPE_AGENT) => match c.labels.get(labels::NAME).map(|s| s.trim()) {
            None | Some("") => Err(format!(
                "container {} is labelled nasiko.type=agent but nasiko.name is empty or missing; set nasiko.name",
                c.name
            )),
            Some(n) if !valid_agent_name(n) => Err(format!(
                "container {}: nasiko.name '{n}' is not a valid agent name (lower-case letters, digits, '_', '.', '-')",
                c.name
            )),
            Some(n) => Ok(Some((n.to_string(), Discovered::Label))),
        },
        Some(_) => Ok(None),
        None => Ok(nasiko_contract::name_from_container(&c.name)
            .map(|n| (n.to_string(), Discovered::NameFallback))),
    }
}

/// `nasiko.port`, else the single exposed port, else [`DEFAULT_AGENT_PORT`].
fn port_of(c: &ContainerFacts, name: &str) -> Result<u16, String> {
    match c.labels.get(labels::PORT).map(|s| s.trim()) {
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!(
                "agent '{name}' (container {}): nasiko.port '{p}' is not a port number 1-65535",
                c.name
            )),
        },
        None => Ok(match c.exposed_ports.as_slice() {
            [one] => match one.split('/').next().and_then(|p| p.parse::<u16>().ok()) {
                Some(p) if p > 0 => p,
                _ => DEFAULT_AGENT_PORT,
            },
            _ => DEFAULT_AGENT_PORT,
        }),
    }
}

/// Where agent `name` is routed: `(network, ip)` on its own network when it is attached to it,
/// else on the shared one; why not (a waiting reason) when neither gives an address.
///
/// A container on another agent's network only (labelled `alpha`, on beta's own network)
/// is never routed there: that network is beta's, and only beta's entry container belongs on it;
/// routing alpha's traffic into it would hand beta's network a stranger's requests. It is
/// Waiting, not NotAgent: it carries our labels and sits on a network we watch, so it is an
/// agent of ours in the wrong place, and `/status` says so (a silent NotAgent would leave the
/// operator wondering why alpha has no route); it is routed once it joins its own network.
fn address(c: &ContainerFacts, name: &str, shared: &str) -> Result<(String, String), String> {
    let own = nasiko_contract::agent_network(shared, name);
    let network = if c.networks.contains_key(&own) {
        own
    } else if c.networks.contains_key(shared) {
        shared.to_string()
    } else {
        let mut others: Vec<&str> = c.networks.keys().map(String::as_str).collect();
        others.sort_unstable();
        return Err(format!(
            "agent '{name}': container {} is on {} but not on its own network {own} (nor on {shared}); routed once it joins {own}",
            c.name,
            others.join(", ")
        ));
    };
    match c.networks.get(&network).filter(|ip| !ip.is_empty()) {
        Some(ip) => Ok((network, ip.clone())),
        None => Err(format!(
            "agent '{name}': container {} has no IP on network {network}",
            c.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, labels: &[(&str, &str)]) -> ContainerFacts {
        ContainerFacts {
            id: format!("id-{name}"),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: true,
            health: None,
            networks: [("nasiko-network".to_string(), "172.20.0.5".to_string())].into(),
            exposed_ports: vec![],
            started_at: "2026-01-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            image: "sha256:1".into(),
            pid: None,
        }
    }

    fn agent(c: &ContainerFacts) -> AgentEndpoint {
        match classify(c, "nasiko-network") {
            Classified::Agent(a) => *a,
            other => panic!("expected an agent, got {other:?}"),
        }
    }

    #[test]
    fn docker_start_times_parse_to_unix_seconds() {
        assert_eq!(
            parse_rfc3339("1970-01-02T00:00:00Z"),
            None,
            "before 1971 means unset (0001-01-01 in Docker)"
        );
        assert_eq!(parse_rfc3339("2026-11-24T00:00:00.5Z"), Some(1795478400.5));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn a_labelled_container_is_an_agent_with_the_default_port() {
        let a = agent(&facts(
            "agent-x",
            &[
                ("nasiko.type", "agent"),
                ("nasiko.name", "translator"),
                ("nasiko.owner", "u1"),
            ],
        ));
        assert_eq!(
            (a.name.as_str(), a.port, a.owner.as_str()),
            ("translator", 5000, "u1")
        );
        assert_eq!(a.service_name(), "agent-translator");
        assert_eq!(a.url(), "http://172.20.0.5:5000");
        assert_eq!(a.generation, "sha256:1", "no project: the image alone");
    }

    #[test]
    fn each_deploy_slot_of_one_image_is_a_generation_of_its_own() {
        let slot = |project: &str| {
            agent(&facts(
                "c",
                &[
                    ("nasiko.type", "agent"),
                    ("nasiko.name", "x"),
                    (COMPOSE_PROJECT, project),
                ],
            ))
            .generation
        };
        let (blue, green) = (
            slot(&nasiko_contract::Slot::Blue.project("x")),
            slot(&nasiko_contract::Slot::Green.project("x")),
        );
        assert_ne!(blue, green);
        assert_eq!(blue, slot("agent-x"), "replicas of a slot share one");
    }

    #[test]
    fn the_port_comes_from_the_label_then_the_single_exposed_port() {
        let mut c = facts("agent-x", &[("nasiko.type", "agent"), ("nasiko.name", "x")]);
        c.exposed_ports = vec!["8080/tcp".into()];
        assert_eq!(agent(&c).port, 8080);
        c.exposed_ports = vec!["8080/tcp".into(), "9090/tcp".into()];
        assert_eq!(
            agent(&c).port,
            5000,
            "several exposed ports: the convention"
        );
        c.labels.insert("nasiko.port".into(), "7000".into());
        assert_eq!(agent(&c).port, 7000);
    }

    #[test]
    fn unlabelled_agent_containers_use_the_python_naming_fallback() {
        let a = agent(&facts("agent-legacy", &[]));
        assert_eq!(
            (a.name.as_str(), a.discovered_by.clone()),
            ("legacy", Discovered::NameFallback)
        );
        assert_eq!(
            classify(&facts("redis", &[]), "nasiko-network"),
            Classified::NotAgent
        );
        assert_eq!(
            classify(
                &facts("agent-db", &[("nasiko.type", "agent-dependency")]),
                "nasiko-network"
            ),
            Classified::NotAgent
        );
        assert_eq!(
            classify(&facts("agent-Bad Name", &[]), "nasiko-network"),
            Classified::NotAgent
        );
    }

    #[test]
    fn malformed_labels_are_skipped_with_a_reason() {
        for (labels, needle) in [
            (
                vec![("nasiko.type", "agent")],
                "nasiko.name is empty or missing",
            ),
            (
                vec![("nasiko.type", "agent"), ("nasiko.name", " ")],
                "nasiko.name is empty",
            ),
            (
                vec![("nasiko.type", "agent"), ("nasiko.name", "Bad Name")],
                "not a valid agent name",
            ),
            (
                vec![
                    ("nasiko.type", "agent"),
                    ("nasiko.name", "x"),
                    ("nasiko.port", "http"),
                ],
                "not a port number",
            ),
            (
                vec![
                    ("nasiko.type", "agent"),
                    ("nasiko.name", "x"),
                    ("nasiko.port", "0"),
                ],
                "not a port number",
            ),
            (
                vec![
                    ("nasiko.type", "agent"),
                    ("nasiko.name", "x"),
                    ("nasiko.port", "70000"),
                ],
                "not a port number",
            ),
        ] {
            match classify(&facts("c", &labels), "nasiko-network") {
                Classified::Malformed(m) => assert!(m.contains(needle), "{m}"),
                other => panic!("{labels:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unhealthy_stopped_or_ip_less_agents_wait_and_off_network_ones_cost_nothing() {
        let mut c = facts("agent-x", &[("nasiko.type", "agent"), ("nasiko.name", "x")]);
        c.health = Some("starting".into());
        assert!(matches!(
            classify(&c, "nasiko-network"),
            Classified::Waiting(_)
        ));
        c.health = Some("healthy".into());
        assert!(matches!(
            classify(&c, "nasiko-network"),
            Classified::Agent(_)
        ));
        // on another network only: not ours to track (issue 12, finding 11)
        assert!(matches!(classify(&c, "other-net"), Classified::NotAgent));
        c.networks.insert("nasiko-network".into(), String::new());
        assert!(matches!(
            classify(&c, "nasiko-network"),
            Classified::Waiting(_)
        ));
        c.running = false;
        assert!(matches!(
            classify(&c, "nasiko-network"),
            Classified::Waiting(_)
        ));
    }

    fn on(mut c: ContainerFacts, nets: &[(&str, &str)]) -> ContainerFacts {
        c.networks = nets
            .iter()
            .map(|(n, ip)| (n.to_string(), ip.to_string()))
            .collect();
        c
    }

    #[test]
    fn an_agent_is_routed_on_its_own_network_before_the_shared_one() {
        let labelled = facts(
            "c-alpha",
            &[("nasiko.type", "agent"), ("nasiko.name", "a.b_c")],
        );
        let own = nasiko_contract::agent_network("nasiko-network", "a.b_c");
        assert_eq!(own, "nasiko-network-agent-a_db__c");
        let both = on(
            labelled.clone(),
            &[("nasiko-network", "172.20.0.5"), (&own, "10.213.0.2")],
        );
        let a = agent(&both);
        assert_eq!(
            (a.ip.as_str(), a.network.as_str()),
            ("10.213.0.2", own.as_str())
        );
        let only_own = on(labelled.clone(), &[(&own, "10.213.0.2")]);
        assert_eq!(agent(&only_own).target(), "10.213.0.2:5000");
        // legacy: the shared network alone, as before
        let legacy = agent(&labelled);
        assert_eq!(
            (legacy.ip.as_str(), legacy.network.as_str()),
            ("172.20.0.5", "nasiko-network")
        );
        // on its own network with no IP yet: waiting, not routed on the shared one
        let no_ip = on(labelled, &[(&own, "")]);
        match classify(&no_ip, "nasiko-network") {
            Classified::Waiting(w) => {
                assert!(
                    w.contains("no IP on network nasiko-network-agent-a_db__c"),
                    "{w}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_container_on_another_agents_network_is_never_routed_there() {
        // labelled alpha, attached to beta's network only: beta's network is not alpha's
        // address; it is an agent of ours in the wrong place, so it waits and says why
        let c = on(
            facts(
                "c-alpha",
                &[("nasiko.type", "agent"), ("nasiko.name", "alpha")],
            ),
            &[("nasiko-network-agent-beta", "10.213.0.7")],
        );
        match classify(&c, "nasiko-network") {
            Classified::Waiting(w) => {
                assert!(w.contains("nasiko-network-agent-beta"), "{w}");
                assert!(
                    w.contains("its own network nasiko-network-agent-alpha"),
                    "{w}"
                );
            }
            other => panic!("{other:?}"),
        }
        // beside the shared network, alpha is routed there (legacy), never on beta's
        let c = on(
            c,
            &[
                ("nasiko-network-agent-beta", "10.213.0.7"),
                ("nasiko-network", "172.20.0.9"),
            ],
        );
        assert_eq!(agent(&c).ip, "172.20.0.9");
        // a dependency or a stranger on an agent network is still nothing of ours
        let dep = on(
            facts("agent-beta-db", &[("nasiko.type", "agent-dependency")]),
            &[("nasiko-network-agent-beta", "10.213.0.8")],
        );
        assert_eq!(classify(&dep, "nasiko-network"), Classified::NotAgent);
        let gw = on(
            facts("kong-gateway", &[]),
            &[("nasiko-network-agent-beta", "10.213.0.3")],
        );
        assert_eq!(classify(&gw, "nasiko-network"), Classified::NotAgent);
    }

    #[test]
    fn the_name_fallback_works_on_the_own_network_too() {
        let c = on(
            facts("agent-legacy", &[]),
            &[("nasiko-network-agent-legacy", "10.213.0.4")],
        );
        let a = agent(&c);
        assert_eq!(
            (a.name.as_str(), a.ip.as_str(), a.discovered_by),
            ("legacy", "10.213.0.4", Discovered::NameFallback)
        );
        // malformed labels are reported on an agent network as on the shared one
        let bad = on(
            facts("c", &[("nasiko.type", "agent")]),
            &[("nasiko-network-agent-x", "10.213.0.5")],
        );
        assert!(matches!(
            classify(&bad, "nasiko-network"),
            Classified::Malformed(_)
        ));
        // a network merely named like one of ours but malformed is not watched
        let odd = on(
            facts("agent-odd", &[]),
            &[("nasiko-network-agent-Odd", "10.213.0.6")],
        );
        assert_eq!(classify(&odd, "nasiko-network"), Classified::NotAgent);
    }

    #[test]
    fn another_stacks_agents_are_not_ours() {
        let labelled = facts("c-x", &[("nasiko.type", "agent"), ("nasiko.name", "x")]);
        // on the own network of another stack (another shared network): not watched
        let c = on(labelled.clone(), &[("other-net-agent-x", "10.213.0.2")]);
        assert_eq!(classify(&c, "nasiko-network"), Classified::NotAgent);
        // labelled as another stack's: not ours even on our networks
        let mut c = on(labelled, &[("nasiko-network-agent-x", "10.213.0.2")]);
        c.labels.insert("nasiko.stack".into(), "other-net".into());
        assert_eq!(classify(&c, "nasiko-network"), Classified::NotAgent);
        c.labels
            .insert("nasiko.stack".into(), "nasiko-network".into());
        assert_eq!(agent(&c).ip, "10.213.0.2");
    }
}
