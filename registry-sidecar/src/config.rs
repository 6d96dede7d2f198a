//! Configuration: the clap arguments (every env var of contracts.md §2, each also a flag) and
//! the validated `Config` the daemon runs with.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryMode {
    /// Watch the Docker engine for agent containers on the agents network.
    Docker,
    /// Watch the Services of the agents namespace through the Kubernetes API.
    Kubernetes,
}

/// Keeps Kong's services, routes and plugins in step with the Nasiko agent containers running on
/// the agents network, plus the platform's static proxies. A drop-in for `kong-service-registry`.
///
/// Docker mode (the default): agent containers are found by the label `nasiko.type=agent` (or,
/// unlabelled, by a name starting with `agent-`). Kubernetes mode: the Services of
/// AGENTS_NAMESPACE. Every Kong entity it writes carries an ownership tag; it never touches others.
#[derive(Debug, Parser)]
#[command(name = "registry-sidecar", version)]
pub struct Args {
    /// Kong Admin API base URL.
    #[arg(
        long,
        env = "KONG_ADMIN_URL",
        default_value = "http://kong-gateway:8001"
    )]
    pub kong_admin_url: String,

    /// Seconds between full resyncs with Kong (events trigger syncs in between).
    #[arg(long, env = "REGISTRY_INTERVAL", default_value_t = 30)]
    pub registry_interval: u64,

    /// The stack's shared agents network: legacy agents are attached to it, and each agent's
    /// own network is named after it (`{AGENTS_NETWORK}-agent-{name}`). An agent is routed at
    /// its IP on its own network when it is on it, else at its IP on this one.
    #[arg(long, env = "AGENTS_NETWORK", default_value = "nasiko-network")]
    pub agents_network: String,

    /// Docker mode: the containers kept connected to every agent's own network, comma-separated,
    /// each `container` or `container=alias` (the name agents call it by there), e.g.
    /// `kong-gateway,phoenix-observability` or `my-gw=kong-gateway`. A member that does not run
    /// is skipped; one that starts (a recreated gateway) is joined to every agent network again.
    /// Empty: none (agents on their own networks then cannot reach the gateway).
    #[arg(
        long,
        env = "AGENT_NETWORK_MEMBERS",
        default_value = nasiko_contract::AGENT_NETWORK_MEMBERS
    )]
    pub agent_network_members: String,

    /// Docker mode: a folder where, once a member is on every agent network (at start, and after
    /// each rejoin), the sidecar writes a file named after the member holding its container id.
    /// A member's entrypoint can wait for it, so that a recreated gateway serves only once it can
    /// reach every agent (the stack files make the gateway wait, at most 60 s). Unset: none.
    #[arg(long, env = "MEMBERS_READY_DIR")]
    pub members_ready_dir: Option<std::path::PathBuf>,

    /// Where agents are discovered: docker or kubernetes.
    #[arg(long, env = "DISCOVERY_MODE", value_enum)]
    pub discovery_mode: Option<DiscoveryMode>,

    /// Legacy switch of the Python registry, parsed as it parsed it: 1, true, yes, y or on (any
    /// case) mean kubernetes, anything else docker. DISCOVERY_MODE wins when both are set; with
    /// neither, kubernetes inside a pod (KUBERNETES_SERVICE_HOST is set), docker elsewhere.
    #[arg(long, env = "K8S_ENABLED")]
    pub k8s_enabled: Option<String>,

    /// Host of the backend API proxy upstream [docker: nasiko-backend; kubernetes: nasiko-backend.{PLATFORM_NAMESPACE}.svc.cluster.local].
    #[arg(long, env = "KONG_BACKEND_HOST")]
    pub kong_backend_host: Option<String>,
    /// Host of the web app upstream [docker: nasiko-web; kubernetes: nasiko-web.{PLATFORM_NAMESPACE}.svc.cluster.local].
    #[arg(long, env = "KONG_WEB_HOST")]
    pub kong_web_host: Option<String>,
    /// Route path of the web app.
    #[arg(long, env = "KONG_WEB_PATH", default_value = "/app")]
    pub kong_web_path: String,
    /// Host of the auth service, for the auth proxy and the nasiko-auth plugin [docker: nasiko-auth-service; kubernetes: nasiko-auth.{PLATFORM_NAMESPACE}.svc.cluster.local].
    #[arg(long, env = "KONG_AUTH_HOST")]
    pub kong_auth_host: Option<String>,
    /// Port of the auth service.
    #[arg(long, env = "KONG_AUTH_PORT", default_value_t = 8001)]
    pub kong_auth_port: u16,
    /// Full auth service URL for the nasiko-auth plugin (overrides host and port).
    #[arg(long, env = "KONG_AUTH_SERVICE_URL")]
    pub kong_auth_service_url: Option<String>,
    /// Host of the router upstream [docker: nasiko-router; kubernetes: nasiko-router.{PLATFORM_NAMESPACE}.svc.cluster.local].
    #[arg(long, env = "KONG_ROUTER_HOST")]
    pub kong_router_host: Option<String>,
    /// Host of the n8n upstream [docker: n8n; kubernetes: n8n.{PLATFORM_NAMESPACE}.svc.cluster.local].
    #[arg(long, env = "KONG_N8N_HOST")]
    pub kong_n8n_host: Option<String>,

    /// URL of the chat-logger plugin's chat history service [docker: http://nasiko-chat-history:8002;
    /// kubernetes: http://localhost:8002].
    #[arg(long, env = "CHAT_LOGGER_URL")]
    pub chat_logger_url: Option<String>,

    /// Kubernetes mode: the namespace whose Services are agents.
    #[arg(long, env = "AGENTS_NAMESPACE", default_value = "nasiko-agents")]
    pub agents_namespace: String,
    /// Kubernetes mode: the namespace of the platform services (static proxy upstreams).
    #[arg(long, env = "PLATFORM_NAMESPACE", default_value = "nasiko")]
    pub platform_namespace: String,

    /// Docker endpoint (unix:///var/run/docker.sock, tcp://host:2375). Unset: the local socket.
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// The declarative static-proxies file (reloaded on change). Missing: built-in defaults.
    #[arg(
        long,
        env = "STATIC_ROUTES_FILE",
        default_value = "/etc/nasiko/static-routes.yml"
    )]
    pub static_routes_file: PathBuf,

    /// Address of the HTTP API (/health, /status, /services, /sync, /agents, /metrics).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Ownership tag put on every Kong entity the sidecar writes (no `,` or `/`).
    #[arg(long, env = "OWNER_TAG", default_value = "managed-by-nasiko-registry")]
    pub owner_tag: String,

    /// Timeout of one Kong Admin API request, in milliseconds.
    #[arg(long, env = "KONG_TIMEOUT_MS", default_value_t = 5000)]
    pub kong_timeout_ms: u64,

    /// Concurrent Kong writes during a sync.
    #[arg(long, env = "KONG_WRITE_CONCURRENCY", default_value_t = 8)]
    pub write_concurrency: usize,

    /// Seconds a container without a health check that is not seen listening on its port is held
    /// back; it is routed then anyway. Where its sockets cannot be read (see HOST_PROC), how long
    /// a second container of the same agent runs before it takes the agent's traffic.
    #[arg(long, env = "ROUTE_WARMUP_SECS", default_value_t = 3.0)]
    pub route_warmup_secs: f64,

    /// The Docker host's /proc, where the sidecar reads whether a new container without a health
    /// check listens on its port: it is routed, and takes the traffic, once it does. In a
    /// container, mount the host's (`/proc:/host/proc:ro`) and set `/host/proc`. Empty: not
    /// read; a new container is routed at once (a few ms sooner: a socket table costs the kernel
    /// a walk of the host's connection hash) and takes the traffic from another of its agent
    /// ROUTE_WARMUP_SECS after its start.
    #[arg(long, env = "HOST_PROC", default_value = "/proc")]
    pub host_proc: PathBuf,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Without a command: run the sidecar.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Started as root (as the image starts), switch to this uid:gid, keeping the Docker socket's
    /// group, before doing anything else: no `group_add` is needed. Empty: stay as started.
    #[arg(long, env = "RUN_AS_USER", default_value = "10001:10001")]
    pub run_as_user: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub kong_admin_url: String,
    pub interval: Duration,
    pub agents_network: String,
    pub members: Vec<crate::members::Member>,
    pub members_ready_dir: Option<std::path::PathBuf>,
    pub mode: DiscoveryMode,
    pub agents_namespace: String,
    pub hosts: crate::static_routes::HostOverrides,
    pub docker_host: Option<String>,
    pub static_routes_file: PathBuf,
    pub listen: SocketAddr,
    pub owner_tag: String,
    pub kong_timeout: Duration,
    pub write_concurrency: usize,
    pub route_warmup: Duration,
    pub host_proc: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Compare Kong with what the sidecar wants now (the same reading of Docker, the static routes
    /// file and Kong as a sync), and write nothing. Prints each write a sync would make; exits 0
    /// when there is none, 1 when there is, 2 when something cannot be read. In the stack:
    /// `docker exec <the sidecar's container> registry-sidecar check`, or scripts/kong-check.sh.
    Check,
}

/// The discovery mode: DISCOVERY_MODE, else the legacy K8S_ENABLED as upstream's registry read
/// it (`1 true yes y on`, any case, is Kubernetes), else Kubernetes inside a pod, else Docker.
pub fn resolve_mode(
    explicit: Option<DiscoveryMode>,
    k8s_enabled: Option<&str>,
    in_pod: bool,
) -> DiscoveryMode {
    match (explicit, k8s_enabled) {
        (Some(m), _) => m,
        (None, Some(v)) => {
            let v = v.trim().to_ascii_lowercase();
            if ["1", "true", "yes", "y", "on"].contains(&v.as_str()) {
                DiscoveryMode::Kubernetes
            } else {
                DiscoveryMode::Docker
            }
        }
        (None, None) if in_pod => DiscoveryMode::Kubernetes,
        (None, None) => DiscoveryMode::Docker,
    }
}

impl Args {
    /// Validate into a `Config`; the error says what to change.
    pub fn into_config(self) -> Result<Config, String> {
        let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty());
        let mode = resolve_mode(self.discovery_mode, self.k8s_enabled.as_deref(), in_pod);
        if self.owner_tag.is_empty() || self.owner_tag.contains([',', '/']) {
            return Err(format!(
                "OWNER_TAG '{}' is not a valid Kong tag: it must be non-empty and contain no ',' or '/'",
                self.owner_tag
            ));
        }
        let url = self.kong_admin_url.trim_end_matches('/').to_string();
        if !url.starts_with("http://") {
            return Err(format!(
                "KONG_ADMIN_URL '{url}' must be an http:// URL, e.g. http://kong-gateway:8001"
            ));
        }
        if self.registry_interval == 0 {
            return Err("REGISTRY_INTERVAL must be at least 1 second".into());
        }
        let k8s = mode == DiscoveryMode::Kubernetes;
        let pns = &self.platform_namespace;
        let host = |given: &Option<String>, docker: &str, k8s_svc: &str| match given {
            Some(h) if !h.is_empty() => h.clone(),
            _ if k8s => format!("{k8s_svc}.{pns}.svc.cluster.local"),
            _ => docker.to_string(),
        };
        let auth_host = host(&self.kong_auth_host, "nasiko-auth-service", "nasiko-auth");
        let auth_url = self
            .kong_auth_service_url
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}", auth_host, self.kong_auth_port));
        let chat_logger_url = self.chat_logger_url.clone().unwrap_or_else(|| {
            let url = if k8s {
                "http://localhost:8002"
            } else {
                "http://nasiko-chat-history:8002"
            };
            url.to_string()
        });
        let members = crate::members::parse_members(&self.agent_network_members)?;
        Ok(Config {
            kong_admin_url: url,
            interval: Duration::from_secs(self.registry_interval),
            agents_network: self.agents_network,
            members,
            members_ready_dir: self.members_ready_dir.clone(),
            mode,
            agents_namespace: self.agents_namespace.clone(),
            hosts: crate::static_routes::HostOverrides {
                backend: host(&self.kong_backend_host, "nasiko-backend", "nasiko-backend"),
                web: host(&self.kong_web_host, "nasiko-web", "nasiko-web"),
                web_path: self.kong_web_path.clone(),
                auth: auth_host,
                auth_port: self.kong_auth_port,
                auth_service_url: auth_url,
                router: host(&self.kong_router_host, "nasiko-router", "nasiko-router"),
                n8n: host(&self.kong_n8n_host, "n8n", "n8n"),
                chat_logger_url,
            },
            docker_host: self.docker_host,
            static_routes_file: self.static_routes_file,
            listen: self.listen,
            owner_tag: self.owner_tag,
            kong_timeout: Duration::from_millis(self.kong_timeout_ms.max(100)),
            write_concurrency: self.write_concurrency.clamp(1, 64),
            route_warmup: Duration::from_secs_f64(self.route_warmup_secs.clamp(0.0, 600.0)),
            host_proc: self.host_proc.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiscoveryMode::{Docker, Kubernetes};

    #[test]
    fn k8s_enabled_is_read_as_upstreams_registry_read_it() {
        for v in ["1", "true", "True", " TRUE ", "yes", "y", "on"] {
            assert_eq!(resolve_mode(None, Some(v), false), Kubernetes, "{v:?}");
        }
        for v in ["0", "false", "False", "no", "off", "", "nonsense"] {
            assert_eq!(resolve_mode(None, Some(v), true), Docker, "{v:?}");
        }
    }

    #[test]
    fn with_no_setting_a_pod_means_kubernetes_and_elsewhere_docker() {
        // upstream's Helm chart sets no K8S_ENABLED: upstream then meant Kubernetes
        assert_eq!(resolve_mode(None, None, true), Kubernetes);
        assert_eq!(resolve_mode(None, None, false), Docker);
        assert_eq!(resolve_mode(Some(Docker), Some("true"), true), Docker);
    }
}
