//! What the sidecar writes to Kong: one typed spec per entity kind. A spec's serde form is its
//! request body (PUT/POST in DB mode) and its entity in a DB-less document; the part Kong stores
//! as written is a `*Fields` struct that the rows Kong returns are read into too, so a Kong field
//! is added in one place (its `*Fields` struct) and compared, written and pushed from there.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;

/// Kong's `utf8_name` rule, ASCII part.
pub fn valid_kong_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c))
}

/// Where a service sends its requests, split the way Kong splits the `url` shorthand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
}

/// Why a service URL cannot be used; each says how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    NoScheme(String),
    Scheme(String),
    Port { url: String, port: String },
    NoHost(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NoScheme(url) => {
                write!(f, "url '{url}' has no scheme; write http://host:port")
            }
            UrlError::Scheme(url) => {
                write!(
                    f,
                    "url '{url}': only http and https upstreams are supported"
                )
            }
            UrlError::Port { url, port } => write!(f, "url '{url}': bad port '{port}'"),
            UrlError::NoHost(url) => write!(f, "url '{url}' has no host"),
        }
    }
}

impl std::error::Error for UrlError {}

impl ServiceUrl {
    pub fn parse(url: &str) -> Result<ServiceUrl, UrlError> {
        let (protocol, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::NoScheme(url.into()))?;
        if protocol != "http" && protocol != "https" {
            return Err(UrlError::Scheme(url.into()));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().map_err(|_| UrlError::Port {
                    url: url.into(),
                    port: p.into(),
                })?,
            ),
            None => (authority, if protocol == "https" { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(url.into()));
        }
        Ok(ServiceUrl {
            protocol: protocol.into(),
            host: host.into(),
            port,
            path,
        })
    }

    /// An agent's upstream by name: the host names it, Kong takes the port from the target.
    pub fn upstream(name: &str) -> ServiceUrl {
        ServiceUrl {
            protocol: "http".into(),
            host: name.into(),
            port: 80,
            path: None,
        }
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.as_deref().unwrap_or("");
        write!(f, "{}://{}:{}{path}", self.protocol, self.host, self.port)
    }
}

/// Timeouts and retries of every service the sidecar writes, agents and static proxies alike
/// (upstream's registry raised them for long `/router` and `/api` calls; contracts.md §2).
pub const CONNECT_TIMEOUT_MS: u64 = 60_000;
pub const READ_WRITE_TIMEOUT_MS: u64 = 300_000;
pub const RETRIES: u64 = 3;

/// A service's fields as Kong stores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFields {
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub connect_timeout: u64,
    pub read_timeout: u64,
    pub write_timeout: u64,
    pub retries: u64,
}

impl ServiceFields {
    /// A service at `url` with the sidecar's timeouts and retries.
    pub fn at(url: ServiceUrl) -> ServiceFields {
        ServiceFields {
            protocol: url.protocol,
            host: url.host,
            port: url.port,
            path: url.path,
            connect_timeout: CONNECT_TIMEOUT_MS,
            read_timeout: READ_WRITE_TIMEOUT_MS,
            write_timeout: READ_WRITE_TIMEOUT_MS,
            retries: RETRIES,
        }
    }

    pub fn url(&self) -> ServiceUrl {
        ServiceUrl {
            protocol: self.protocol.clone(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(flatten)]
    pub fields: ServiceFields,
    pub tags: Vec<String>,
}

/// The methods of every route that names none.
pub const DEFAULT_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// A route's fields as Kong stores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteFields {
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub protocols: Vec<String>,
    pub strip_path: bool,
    pub preserve_host: bool,
}

impl RouteFields {
    /// A route of `paths` over http and https; `methods` None: `DEFAULT_METHODS`.
    pub fn new(
        paths: Vec<String>,
        methods: Option<Vec<String>>,
        strip_path: bool,
        preserve_host: bool,
    ) -> RouteFields {
        RouteFields {
            paths,
            methods: methods
                .unwrap_or_else(|| DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()),
            protocols: vec!["http".into(), "https".into()],
            strip_path,
            preserve_host,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSpec {
    pub name: String,
    /// Its service, by name.
    #[serde(serialize_with = "by_name")]
    pub service: String,
    #[serde(flatten)]
    pub fields: RouteFields,
    pub tags: Vec<String>,
}

/// A plugin's fields as Kong stores them; Kong fills in the config's defaults, so the config
/// is compared by containment (`rule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginFields {
    pub name: String,
    #[serde(with = "super::shared")]
    pub config: Arc<Value>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginSpec {
    /// `{service}.{plugin}`: what makes it addressable by PUT.
    pub instance_name: String,
    /// Its service, by name; service-wide (no route, no consumer).
    #[serde(serialize_with = "by_name")]
    pub service: String,
    #[serde(flatten)]
    pub fields: PluginFields,
    pub tags: Vec<String>,
}

/// The instance name that makes a plugin addressable by PUT: `{service}.{plugin}`.
pub fn plugin_instance_name(service: &str, plugin: &str) -> String {
    format!("{service}.{plugin}")
}

impl PluginSpec {
    pub fn name(&self) -> &str {
        &self.fields.name
    }
}

/// An upstream's fields as Kong stores them (Kong fills in the health checks' defaults:
/// compared by containment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamFields {
    pub algorithm: String,
    #[serde(with = "super::shared")]
    pub healthchecks: Arc<Value>,
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

impl UpstreamFields {
    /// An agent's upstream: round robin over its containers, with `agent_healthchecks`.
    pub fn agent() -> UpstreamFields {
        UpstreamFields {
            algorithm: "round-robin".into(),
            healthchecks: Arc::new(agent_healthchecks()),
        }
    }
}

/// An agent's upstream, `agent-{name}`: Kong balances its service across the targets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamSpec {
    pub name: String,
    #[serde(flatten)]
    pub fields: UpstreamFields,
    pub tags: Vec<String>,
}

/// A target's place: its upstream (by name) and its address, `ip:port` as Kong stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    pub upstream: String,
    pub target: String,
}

impl TargetKey {
    pub fn new(upstream: impl Into<String>, target: impl Into<String>) -> TargetKey {
        TargetKey {
            upstream: upstream.into(),
            target: target.into(),
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}|{}", self.upstream, self.target)
    }
}

/// The weight of a container that takes traffic; 0 drains one (no new requests).
pub const FULL_WEIGHT: u16 = 100;

/// A target's fields as Kong stores them (its address is its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFields {
    pub weight: u16,
}

/// One container of an agent as a target of its upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSpec {
    #[serde(skip)]
    pub upstream: String,
    /// `ip:port`, as Kong stores it.
    pub target: String,
    #[serde(flatten)]
    pub fields: TargetFields,
    /// The container's name, for the logs.
    #[serde(skip)]
    pub container: String,
    pub tags: Vec<String>,
}

impl TargetSpec {
    pub fn key(&self) -> TargetKey {
        TargetKey::new(&self.upstream, &self.target)
    }

    pub fn weight(&self) -> u16 {
        self.fields.weight
    }
}

/// A spec's request body: its serde form.
pub trait Body: Serialize {
    fn body(&self) -> Value {
        serde_json::to_value(self).expect("a spec serialises to JSON")
    }
}

impl Body for ServiceSpec {}
impl Body for RouteSpec {}
impl Body for PluginSpec {}
impl Body for UpstreamSpec {}
impl Body for TargetSpec {}

/// A reference to another entity by name, as the Admin API takes it: `{"name": …}`.
fn by_name<S: Serializer>(name: &str, s: S) -> Result<S::Ok, S::Error> {
    json!({ "name": name }).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_split_like_kong() {
        assert_eq!(
            ServiceUrl::parse("http://web:4000/app/").unwrap(),
            ServiceUrl {
                protocol: "http".into(),
                host: "web".into(),
                port: 4000,
                path: Some("/app/".into())
            }
        );
        assert_eq!(ServiceUrl::parse("https://x").unwrap().port, 443);
        assert!(ServiceUrl::parse("x:1").is_err());
        assert!(ServiceUrl::parse("http://x:notaport").is_err());
    }
}
