//! The desired Kong state: agent endpoints + static proxies + the plugins the node has, as named
//! services, routes and plugins (contracts.md §2), and for each Docker agent an upstream whose
//! targets are its containers, weighted by `weigh`. Pure and table-tested.

use crate::endpoint::{AgentEndpoint, Discovered};
use crate::static_routes::{StaticConfig, DEFAULT_METHODS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Kong's `utf8_name` rule, ASCII part.
pub fn valid_kong_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c))
}

/// A service upstream split the way Kong splits the `url` shorthand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let (protocol, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("url '{url}' has no scheme; write http://host:port"))?;
        if protocol != "http" && protocol != "https" {
            return Err(format!(
                "url '{url}': only http and https upstreams are supported"
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("url '{url}': bad port '{p}'"))?,
            ),
            None => (authority, if protocol == "https" { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("url '{url}' has no host"));
        }
        Ok(Upstream {
            protocol: protocol.into(),
            host: host.into(),
            port,
            path,
        })
    }
}

/// Timeouts and retries of every service the sidecar writes, agents and static proxies alike
/// (upstream's registry raised them for long `/router` and `/api` calls; contracts.md §2).
pub const CONNECT_TIMEOUT_MS: u64 = 60_000;
pub const READ_WRITE_TIMEOUT_MS: u64 = 300_000;
pub const RETRIES: u64 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub upstream: Upstream,
    pub connect_timeout: u64,
    pub read_timeout: u64,
    pub write_timeout: u64,
    pub retries: u64,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub name: String,
    pub service: String,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub instance_name: String,
    pub name: String,
    pub service: String,
    pub config: Value,
    pub tags: Vec<String>,
}

/// An agent's upstream, `agent-{name}`: Kong balances its service across the targets.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: String,
    pub tags: Vec<String>,
}

/// One container of an agent as a target of its upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub upstream: String,
    /// `ip:port`, as Kong stores it.
    pub target: String,
    pub weight: u16,
    /// The container's name, for the logs.
    pub container: String,
    pub tags: Vec<String>,
}

/// The weight of a container that takes traffic; 0 drains one (no new requests).
pub const FULL_WEIGHT: u16 = 100;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    /// (upstream, target) → target
    pub targets: BTreeMap<(String, String), TargetSpec>,
    pub services: BTreeMap<String, ServiceSpec>,
    pub routes: BTreeMap<String, RouteSpec>,
    pub plugins: BTreeMap<String, PluginSpec>,
    /// Plugins wanted but not available on the Kong node (reported, not retried).
    pub missing_plugins: BTreeSet<String>,
    /// Agents left out, with the reason (e.g. a name clash).
    pub skipped: Vec<String>,
}

impl ServiceSpec {
    pub fn body(&self) -> Value {
        json!({
            "name": self.name,
            "protocol": self.upstream.protocol,
            "host": self.upstream.host,
            "port": self.upstream.port,
            "path": self.upstream.path,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "write_timeout": self.write_timeout,
            "retries": self.retries,
            "tags": self.tags,
        })
    }
}

impl RouteSpec {
    pub fn body(&self) -> Value {
        json!({
            "name": self.name,
            "service": {"name": self.service},
            "paths": self.paths,
            "methods": self.methods,
            "protocols": ["http", "https"],
            "strip_path": self.strip_path,
            "preserve_host": self.preserve_host,
            "tags": self.tags,
        })
    }
}

/// Health checks of an agent's upstream. Passive: two failed connections (or three timeouts) in a
/// row take a container out of the rotation, between its crash and the sidecar's removal of it;
/// active: such a container is probed (a TCP connect every 5 s) and comes back on the first
/// success. Agents have no health endpoint (contracts.md §4.1), so nothing probes healthy ones.
pub fn agent_healthchecks() -> Value {
    json!({
        "active": {"type": "tcp", "timeout": 1,
                   "healthy": {"interval": 5, "successes": 1},
                   "unhealthy": {"interval": 0}},
        "passive": {"type": "http",
                    "unhealthy": {"tcp_failures": 2, "timeouts": 3, "http_failures": 0}}
    })
}

impl UpstreamSpec {
    pub fn body(&self) -> Value {
        json!({
            "name": self.name,
            "algorithm": "round-robin",
            "healthchecks": agent_healthchecks(),
            "tags": self.tags,
        })
    }
}

impl TargetSpec {
    pub fn body(&self) -> Value {
        json!({
            "target": self.target,
            "weight": self.weight,
            "tags": self.tags,
        })
    }
}

impl PluginSpec {
    pub fn body(&self) -> Value {
        json!({
            "name": self.name,
            "instance_name": self.instance_name,
            "service": {"name": self.service},
            "config": self.config,
            "enabled": true,
            "tags": self.tags,
        })
    }
}

pub const AGENT_TAG: &str = "nasiko-agent";
pub const STATIC_TAG: &str = "nasiko-static";

/// The instance name that makes a plugin addressable by PUT: `{service}.{plugin}`.
pub fn plugin_instance_name(service: &str, plugin: &str) -> String {
    format!("{service}.{plugin}")
}

pub struct Inputs<'a> {
    pub agents: &'a [AgentEndpoint],
    pub statics: &'a StaticConfig,
    /// `None` when unknown (Kong unreachable): then no plugin is planned.
    pub available_plugins: Option<&'a BTreeSet<String>>,
    pub owner_tag: &'a str,
    /// Unix seconds now, and how long a container runs before it may take an agent's route
    /// from another running container of the same agent.
    pub now: f64,
    pub warmup: f64,
}

fn is_warm(a: &AgentEndpoint, now: f64, warmup: f64) -> bool {
    a.started_unix().is_none_or(|t| t + warmup <= now)
}

/// Ready for traffic: it passed its health check, or (without one) it has run `warmup` seconds.
fn is_ready(a: &AgentEndpoint, now: f64, warmup: f64) -> bool {
    a.health_checked || is_warm(a, now, warmup)
}

/// How an agent's running containers share its traffic, as (container, weight) — the targets of
/// its upstream. A generation is the containers of one image; the serving one is the newest with
/// a ready container (none ready, as on a first deploy: the oldest, routed at once). All of its
/// containers take traffic — replicas starting beside ready ones included: Kong tries another
/// peer while one does not listen yet — except in an update handover: while the build agent's
/// stand-by is the generation's only ready container, its recreated entry container waits until
/// it is ready, and then the stand-by gives way (weight 0). Ready containers of other generations
/// are drained (weight 0) until they stop, so an old version gets no new request once the new one
/// answers; a newer generation not ready yet gets nothing.
pub fn weigh<'a>(
    candidates: &[&'a AgentEndpoint],
    now: f64,
    warmup: f64,
) -> Vec<(&'a AgentEndpoint, u16)> {
    let ready = |a: &AgentEndpoint| is_ready(a, now, warmup);
    // image → (newest and oldest creation of its containers, has a ready one)
    let mut generations: BTreeMap<&str, (f64, f64, bool)> = BTreeMap::new();
    for a in candidates {
        let created = a.created_unix().unwrap_or(0.0);
        let g = generations
            .entry(a.image.as_str())
            .or_insert((created, created, false));
        g.0 = g.0.max(created);
        g.1 = g.1.min(created);
        g.2 |= ready(a);
    }
    let serving = generations
        .iter()
        .filter(|(_, g)| g.2)
        .max_by(|(_, a), (_, b)| a.0.total_cmp(&b.0))
        .or_else(|| {
            generations
                .iter()
                .min_by(|(_, a), (_, b)| a.1.total_cmp(&b.1))
        })
        .map(|(image, _)| *image);
    let of_serving = |a: &&AgentEndpoint| Some(a.image.as_str()) == serving;
    let entry_ready = candidates
        .iter()
        .any(|a| of_serving(a) && !a.handover && ready(a));
    let standby_serving = !entry_ready
        && candidates
            .iter()
            .any(|a| of_serving(a) && a.handover && ready(a));
    candidates
        .iter()
        .filter_map(|a| {
            let weight = if !of_serving(a) {
                ready(a).then_some(0)
            } else if a.handover {
                Some(if entry_ready { 0 } else { FULL_WEIGHT })
            } else if standby_serving && !ready(a) {
                None
            } else {
                Some(FULL_WEIGHT)
            };
            weight.map(|w| (*a, w))
        })
        .collect()
}

/// When the targets may change next by a container warming up (a resync is due then).
pub fn next_warmup<'a>(
    agents: impl Iterator<Item = &'a AgentEndpoint> + Clone,
    now: f64,
    warmup: f64,
) -> Option<f64> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for a in agents.clone() {
        *count.entry(a.name.as_str()).or_default() += 1;
    }
    agents
        .filter(|a| count[a.name.as_str()] > 1 && !a.health_checked)
        .filter_map(|a| a.started_unix().map(|t| t + warmup))
        .filter(|t| *t > now)
        .min_by(|a, b| a.total_cmp(b))
}

pub fn build(inp: &Inputs) -> DesiredState {
    let mut d = DesiredState::default();
    let add_plugins = |d: &mut DesiredState, service: &str, names: &[String], tags: &[String]| {
        for p in names {
            let available = inp.available_plugins.is_some_and(|a| a.contains(p));
            if !available {
                if inp.available_plugins.is_some() {
                    d.missing_plugins.insert(p.clone());
                }
                continue;
            }
            let inst = plugin_instance_name(service, p);
            d.plugins.insert(
                inst.clone(),
                PluginSpec {
                    instance_name: inst,
                    name: p.clone(),
                    service: service.to_string(),
                    config: inp.statics.plugins.get(p).cloned().unwrap_or(json!({})),
                    tags: tags.to_vec(),
                },
            );
        }
    };
    let static_tags = vec![inp.owner_tag.to_string(), STATIC_TAG.to_string()];
    for p in &inp.statics.proxies {
        let Ok(upstream) = Upstream::parse(&p.url) else {
            continue;
        };
        d.services.insert(
            p.name.clone(),
            ServiceSpec {
                name: p.name.clone(),
                upstream,
                connect_timeout: CONNECT_TIMEOUT_MS,
                read_timeout: READ_WRITE_TIMEOUT_MS,
                write_timeout: READ_WRITE_TIMEOUT_MS,
                retries: RETRIES,
                tags: static_tags.clone(),
            },
        );
        let route = format!("{}-route", p.name);
        d.routes.insert(
            route.clone(),
            RouteSpec {
                name: route,
                service: p.name.clone(),
                paths: p.paths.clone(),
                methods: p
                    .methods
                    .clone()
                    .unwrap_or_else(|| DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()),
                strip_path: p.strip_path,
                preserve_host: p.preserve_host,
                tags: static_tags.clone(),
            },
        );
        add_plugins(&mut d, &p.name, &p.plugins, &static_tags);
    }
    // each agent's containers, weighed (see `weigh`)
    let mut groups: BTreeMap<&str, Vec<&AgentEndpoint>> = BTreeMap::new();
    for a in inp.agents {
        groups.entry(a.name.as_str()).or_default().push(a);
    }
    let agent_tags = vec![inp.owner_tag.to_string(), AGENT_TAG.to_string()];
    for containers in groups.values() {
        let weighed = weigh(containers, inp.now, inp.warmup);
        let Some((first, _)) = weighed.first() else {
            continue;
        };
        let svc = first.service_name();
        if d.services.contains_key(&svc) {
            d.skipped.push(format!(
                "agent '{}': service name {svc} is taken by a static proxy",
                first.name
            ));
            continue;
        }
        // a Kubernetes Service is balanced by the cluster: the service points at it directly
        let upstream = if first.discovered_by == Discovered::KubernetesService {
            Upstream {
                protocol: "http".into(),
                host: first.ip.clone(),
                port: first.port,
                path: None,
            }
        } else {
            d.upstreams.insert(
                svc.clone(),
                UpstreamSpec {
                    name: svc.clone(),
                    tags: agent_tags.clone(),
                },
            );
            for (a, weight) in &weighed {
                d.targets.insert(
                    (svc.clone(), a.target()),
                    TargetSpec {
                        upstream: svc.clone(),
                        target: a.target(),
                        weight: *weight,
                        container: a.container_name.clone(),
                        tags: agent_tags.clone(),
                    },
                );
            }
            // the host names the upstream; Kong takes the port from the target
            Upstream {
                protocol: "http".into(),
                host: svc.clone(),
                port: 80,
                path: None,
            }
        };
        d.services.insert(
            svc.clone(),
            ServiceSpec {
                name: svc.clone(),
                upstream,
                connect_timeout: CONNECT_TIMEOUT_MS,
                read_timeout: READ_WRITE_TIMEOUT_MS,
                write_timeout: READ_WRITE_TIMEOUT_MS,
                retries: RETRIES,
                tags: agent_tags.clone(),
            },
        );
        let route = format!("{svc}-route");
        d.routes.insert(
            route.clone(),
            RouteSpec {
                name: route,
                service: svc.clone(),
                paths: vec![format!("/agents/{svc}")],
                methods: DEFAULT_METHODS.iter().map(|m| m.to_string()).collect(),
                strip_path: true,
                preserve_host: false,
                tags: agent_tags.clone(),
            },
        );
        add_plugins(&mut d, &svc, &inp.statics.agent_plugins, &agent_tags);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::static_routes::{parse, HostOverrides, EMBEDDED};

    fn agent(name: &str, ip: &str, started: &str) -> AgentEndpoint {
        AgentEndpoint {
            started_at: started.into(),
            created_at: started.into(),
            image: "v1".into(),
            ..AgentEndpoint::labelled(name, &format!("c-{name}-{ip}"), ip, "nasiko-network")
        }
    }

    #[test]
    fn an_agent_becomes_a_service_a_route_and_three_plugins_in_order() {
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let all: BTreeSet<String> = ["cors", "nasiko-auth", "chat-logger"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let agents = [agent("translator", "10.0.0.2", "t1")];
        let d = build(&Inputs {
            agents: &agents,
            statics: &statics,
            available_plugins: Some(&all),
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        let s = &d.services["agent-translator"];
        assert_eq!(
            s.upstream,
            Upstream {
                protocol: "http".into(),
                host: "agent-translator".into(),
                port: 80,
                path: None
            },
            "the service's host names the agent's upstream"
        );
        assert_eq!(d.upstreams["agent-translator"].tags, ["own", AGENT_TAG]);
        let t = &d.targets[&("agent-translator".to_string(), "10.0.0.2:5000".to_string())];
        assert_eq!((t.weight, t.upstream.as_str()), (100, "agent-translator"));
        assert_eq!(d.targets.len(), 1);
        assert_eq!(
            (
                s.connect_timeout,
                s.read_timeout,
                s.write_timeout,
                s.retries
            ),
            (60000, 300000, 300000, 3)
        );
        let r = &d.routes["agent-translator-route"];
        assert_eq!(r.paths, ["/agents/agent-translator"]);
        assert_eq!(
            r.methods,
            ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        );
        assert!(r.strip_path && !r.preserve_host);
        for p in ["cors", "nasiko-auth", "chat-logger"] {
            assert!(d.plugins.contains_key(&format!("agent-translator.{p}")));
        }
        assert_eq!(d.services.len(), 9, "eight static proxies and the agent");
        assert!(d.missing_plugins.is_empty());
        assert_eq!(s.tags, ["own", AGENT_TAG]);
    }

    #[test]
    fn plugins_the_node_lacks_are_reported_not_planned() {
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let only_cors: BTreeSet<String> = ["cors".to_string()].into();
        let agents = [agent("a", "10.0.0.2", "t1")];
        let d = build(&Inputs {
            agents: &agents,
            statics: &statics,
            available_plugins: Some(&only_cors),
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        assert!(d.plugins.values().all(|p| p.name == "cors"));
        assert_eq!(
            d.missing_plugins,
            ["chat-logger".to_string(), "nasiko-auth".to_string()].into()
        );
        let d = build(&Inputs {
            agents: &agents,
            statics: &statics,
            available_plugins: None,
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        assert!(d.plugins.is_empty() && d.missing_plugins.is_empty());
    }

    #[test]
    fn static_proxies_get_the_long_timeouts_of_upstreams_registry() {
        // /router and /api calls run for minutes: 60 s read timeouts gave 504s (issue 11)
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let d = build(&Inputs {
            agents: &[],
            statics: &statics,
            available_plugins: None,
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        for name in ["nasiko-router", "backend-api-proxy"] {
            let s = &d.services[name];
            assert_eq!(
                (
                    s.connect_timeout,
                    s.read_timeout,
                    s.write_timeout,
                    s.retries
                ),
                (60_000, 300_000, 300_000, 3),
                "{name}"
            );
        }
    }

    fn weights(c: &[&AgentEndpoint], now: f64) -> Vec<(String, u16)> {
        weigh(c, now, 3.0)
            .into_iter()
            .map(|(a, w)| (a.ip.clone(), w))
            .collect()
    }

    #[test]
    fn an_update_hands_the_traffic_to_the_new_generation_once_it_is_ready() {
        let t = |secs: u32| format!("2026-11-24T00:00:{secs:02}Z");
        let base = 1795478400.0;
        let old = agent("a", "10.0.0.2", &t(0));
        let mut standby = agent("a", "10.0.0.3", &t(10));
        standby.image = "v2".into();
        standby.handover = true;
        assert_eq!(
            weights(&[&old, &standby], base + 11.0),
            [("10.0.0.2".to_string(), 100)],
            "the stand-by warms up: not a target yet"
        );
        assert_eq!(
            weights(&[&old, &standby], base + 13.0),
            [("10.0.0.2".to_string(), 0), ("10.0.0.3".to_string(), 100)],
            "ready: the new version serves, the old one is drained"
        );
        let mut new = agent("a", "10.0.0.4", &t(20));
        new.image = "v2".into();
        assert_eq!(
            weights(&[&standby, &new], base + 21.0),
            [("10.0.0.3".to_string(), 100)],
            "the recreated entry container warms up while the stand-by serves"
        );
        assert_eq!(
            weights(&[&standby, &new], base + 23.0),
            [("10.0.0.3".to_string(), 0), ("10.0.0.4".to_string(), 100)],
            "the stand-by gives way to its generation's entry container"
        );
        let agents = [old.clone(), standby.clone()];
        assert_eq!(
            next_warmup(agents.iter(), base + 11.0, 3.0),
            Some(base + 13.0)
        );
        assert_eq!(next_warmup(agents.iter(), base + 14.0, 3.0), None);
    }

    #[test]
    fn replicas_share_the_traffic_and_a_lone_or_fresh_agent_is_routed_at_once() {
        let t = |secs: u32| format!("2026-11-24T00:00:{secs:02}Z");
        let base = 1795478400.0;
        let one = agent("a", "10.0.0.5", &t(20));
        assert_eq!(
            weights(&[&one], base + 20.5),
            [("10.0.0.5".to_string(), 100)],
            "alone, a container is routed at once"
        );
        let two = agent("a", "10.0.0.6", &t(21));
        assert_eq!(
            weights(&[&one, &two], base + 21.5),
            [("10.0.0.5".to_string(), 100), ("10.0.0.6".to_string(), 100)],
            "none warm yet (a first deploy of two replicas): both"
        );
        assert_eq!(
            weights(&[&one, &two], base + 30.0),
            [("10.0.0.5".to_string(), 100), ("10.0.0.6".to_string(), 100)],
            "replicas of one image share the traffic"
        );
        let mut next = agent("a", "10.0.0.8", &t(21));
        next.image = "v2".into();
        assert_eq!(
            weights(&[&one, &two, &next], base + 22.0),
            [("10.0.0.5".to_string(), 100), ("10.0.0.6".to_string(), 100)],
            "a newer image joining while none is warm waits: no target comes and goes"
        );
        let late = agent("a", "10.0.0.9", &t(29));
        assert_eq!(
            weights(&[&one, &two, &late], base + 29.5),
            [
                ("10.0.0.5".to_string(), 100),
                ("10.0.0.6".to_string(), 100),
                ("10.0.0.9".to_string(), 100)
            ],
            "a replica joining its serving generation is in at once (Kong retries past it)"
        );
        let mut checked = agent("a", "10.0.0.7", &t(29));
        checked.health_checked = true;
        checked.image = "v2".into();
        assert_eq!(
            weights(&[&one, &checked], base + 29.5),
            [("10.0.0.5".to_string(), 0), ("10.0.0.7".to_string(), 100)],
            "a container that passed its health check is ready without a warm-up"
        );
    }

    #[test]
    fn upstream_urls_split_like_kong() {
        assert_eq!(
            Upstream::parse("http://web:4000/app/").unwrap(),
            Upstream {
                protocol: "http".into(),
                host: "web".into(),
                port: 4000,
                path: Some("/app/".into())
            }
        );
        assert_eq!(Upstream::parse("https://x").unwrap().port, 443);
        assert!(Upstream::parse("x:1").is_err());
        assert!(Upstream::parse("http://x:notaport").is_err());
    }
}
