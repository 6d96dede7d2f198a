//! The desired Kong state: agent endpoints + static proxies + the plugins the node has,
//! as named services, routes and plugins (contracts.md §2). Pure and table-tested.

use crate::endpoint::AgentEndpoint;
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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
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

/// Which container of an agent gets the route: the newest of those running for `warmup` seconds,
/// else (none warmed up yet) the oldest. So a replacement started beside a running container takes
/// over only once it has had time to start listening: the build agent's update handover.
pub fn pick<'a>(candidates: &[&'a AgentEndpoint], now: f64, warmup: f64) -> &'a AgentEndpoint {
    let key = |a: &&&AgentEndpoint| (a.started_at.clone(), a.container_id.clone());
    let newest_warm = candidates
        .iter()
        .filter(|a| is_warm(a, now, warmup))
        .max_by_key(key);
    match newest_warm {
        Some(a) => a,
        None => candidates
            .iter()
            .min_by_key(key)
            .expect("at least one candidate"),
    }
}

/// When the route choice may change next by a container warming up (a resync is due then).
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
        .filter(|a| count[a.name.as_str()] > 1)
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
    // one endpoint per agent name (see `pick`)
    let mut groups: BTreeMap<&str, Vec<&AgentEndpoint>> = BTreeMap::new();
    for a in inp.agents {
        groups.entry(a.name.as_str()).or_default().push(a);
    }
    let by_name: BTreeMap<&str, &AgentEndpoint> = groups
        .iter()
        .map(|(n, c)| (*n, pick(c, inp.now, inp.warmup)))
        .collect();
    let agent_tags = vec![inp.owner_tag.to_string(), AGENT_TAG.to_string()];
    for a in by_name.values() {
        let svc = a.service_name();
        if d.services.contains_key(&svc) {
            d.skipped.push(format!(
                "agent '{}': service name {svc} is taken by a static proxy",
                a.name
            ));
            continue;
        }
        d.services.insert(
            svc.clone(),
            ServiceSpec {
                name: svc.clone(),
                upstream: Upstream {
                    protocol: "http".into(),
                    host: a.ip.clone(),
                    port: a.port,
                    path: None,
                },
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
    use crate::endpoint::Discovered;
    use crate::static_routes::{parse, HostOverrides, EMBEDDED};

    fn agent(name: &str, ip: &str, started: &str) -> AgentEndpoint {
        AgentEndpoint {
            kong_name: format!("agent-{name}"),
            name: name.into(),
            container_id: format!("c-{name}-{ip}"),
            container_name: format!("agent-{name}"),
            ip: ip.into(),
            port: 5000,
            owner: String::new(),
            version: None,
            upload_id: None,
            discovered_by: Discovered::Label,
            started_at: started.into(),
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
                host: "10.0.0.2".into(),
                port: 5000,
                path: None
            }
        );
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

    #[test]
    fn a_replacement_takes_the_route_only_once_warmed_up() {
        let t = |secs: u32| format!("2026-11-24T00:00:{secs:02}Z");
        let base = 1795478400.0;
        let old = agent("a", "10.0.0.2", &t(0));
        let new = agent("a", "10.0.0.3", &t(10));
        let both = [&old, &new];
        assert_eq!(
            pick(&both, base + 11.0, 3.0).ip,
            "10.0.0.2",
            "the new one is still warming up"
        );
        assert_eq!(
            pick(&both, base + 13.0, 3.0).ip,
            "10.0.0.3",
            "warmed up: the newest takes over"
        );
        assert_eq!(
            pick(&[&new], base + 10.5, 3.0).ip,
            "10.0.0.3",
            "alone, a container is routed at once"
        );
        let fresh_pair = [
            &agent("a", "10.0.0.4", &t(20)),
            &agent("a", "10.0.0.5", &t(21)),
        ];
        assert_eq!(
            pick(&fresh_pair, base + 21.5, 3.0).ip,
            "10.0.0.4",
            "none warm: the oldest"
        );
        let agents = [old.clone(), new.clone()];
        assert_eq!(
            next_warmup(agents.iter(), base + 11.0, 3.0),
            Some(base + 13.0)
        );
        assert_eq!(next_warmup(agents.iter(), base + 14.0, 3.0), None);
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
