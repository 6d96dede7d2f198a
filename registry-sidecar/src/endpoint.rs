//! From a container's facts to an `AgentEndpoint` (contracts.md §1): labels, the naming
//! fallback, the IP on the agents network, the port rule and the health gate. Pure.

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
    pub port: u16,
    pub owner: String,
    pub version: Option<String>,
    pub upload_id: Option<String>,
    pub discovered_by: Discovered,
    pub started_at: String,
    /// When the container was created (RFC 3339; empty when unknown).
    pub created_at: String,
    /// The image id it runs (empty when unknown): one image, one generation of the agent.
    pub image: String,
    /// It has a health check, and passed it: ready for traffic now, without a warm-up.
    pub health_checked: bool,
    /// The build agent's update stand-by (`nasiko.handover`): it serves while the entry
    /// container is recreated, and gives way to it.
    pub handover: bool,
}

impl AgentEndpoint {
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

pub fn classify(c: &ContainerFacts, network: &str) -> Classified {
    // not attached to the agents network at all: none of our business, and it costs no sync (a
    // `network connect` event brings it back for a look)
    if !c.networks.contains_key(network) {
        return Classified::NotAgent;
    }
    let ty = c.labels.get(labels::TYPE).map(String::as_str);
    let (name, discovered_by) = match ty {
        Some(labels::TYPE_AGENT) => match c.labels.get(labels::NAME).map(|s| s.trim()) {
            None | Some("") => {
                return Classified::Malformed(format!(
                    "container {} is labelled nasiko.type=agent but nasiko.name is empty or missing; set nasiko.name",
                    c.name
                ))
            }
            Some(n) if !valid_agent_name(n) => {
                return Classified::Malformed(format!(
                    "container {}: nasiko.name '{n}' is not a valid agent name (lower-case letters, digits, '_', '.', '-')",
                    c.name
                ))
            }
            Some(n) => (n.to_string(), Discovered::Label),
        },
        Some(_) => return Classified::NotAgent,
        None => match nasiko_contract::name_from_container(&c.name) {
            Some(n) => (n.to_string(), Discovered::NameFallback),
            None => return Classified::NotAgent,
        },
    };
    let port = match c.labels.get(labels::PORT).map(|s| s.trim()) {
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Classified::Malformed(format!(
                    "agent '{name}' (container {}): nasiko.port '{p}' is not a port number 1-65535",
                    c.name
                ))
            }
        },
        None => match c.exposed_ports.as_slice() {
            [one] => match one.split('/').next().and_then(|p| p.parse::<u16>().ok()) {
                Some(p) if p > 0 => p,
                _ => DEFAULT_AGENT_PORT,
            },
            _ => DEFAULT_AGENT_PORT,
        },
    };
    if !c.running {
        return Classified::Waiting(format!(
            "agent '{name}': container {} is not running",
            c.name
        ));
    }
    if let Some(h) = &c.health {
        if h != "healthy" {
            return Classified::Waiting(format!(
                "agent '{name}': container {} is {h}, routed once healthy",
                c.name
            ));
        }
    }
    let Some(ip) = c.networks.get(network).filter(|ip| !ip.is_empty()) else {
        return Classified::Waiting(format!(
            "agent '{name}': container {} has no IP on network {network}",
            c.name
        ));
    };
    Classified::Agent(Box::new(AgentEndpoint {
        kong_name: nasiko_contract::agent_ref(&name),
        name,
        container_id: c.id.clone(),
        container_name: c.name.clone(),
        ip: ip.clone(),
        port,
        owner: c.labels.get(labels::OWNER).cloned().unwrap_or_default(),
        version: c.labels.get(labels::VERSION).cloned(),
        upload_id: c.labels.get(labels::UPLOAD_ID).cloned(),
        discovered_by,
        started_at: c.started_at.clone(),
        created_at: c.created_at.clone(),
        image: c.image.clone(),
        health_checked: c.health.is_some(),
        handover: c.labels.get(labels::HANDOVER).is_some_and(|v| v == "true"),
    }))
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
}
