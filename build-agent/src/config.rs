//! Configuration: clap arguments (every env var of contracts.md §5, each also a flag) and the
//! validated `Config`.

/// Whether the arguments are upstream's legacy worker command (`python -u
/// /app/orchestrator/redis_stream_listener.py`, kept by upstream's compose file when our image
/// replaces theirs): that command meant "run the consumer", so it still does.
pub fn is_legacy_listener_command(argv: &[String]) -> bool {
    let Some(first) = argv.get(1) else {
        return false;
    };
    let prog = first.rsplit('/').next().unwrap_or(first);
    let python = prog == "python"
        || prog
            .strip_prefix("python")
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    python || first.ends_with("redis_stream_listener.py")
}

use clap::{Args as ClapArgs, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Builds and deploys Nasiko agents: consumes deployment jobs from the Redis stream
/// `orchestration:commands` (consumer group `orchestrator`), builds each agent with `docker build`,
/// runs it with `docker compose` on the shared network with the `nasiko.*` labels, and reports
/// progress to Redis and the Nasiko backend.
#[derive(Debug, Parser)]
#[command(name = "build-agent", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker daemon (the default).
    Run(Box<RunArgs>),
    /// Queue a deployment job exactly as the Nasiko backend does (XADD).
    Submit(SubmitArgs),
    /// Print an agent's status hash.
    Status {
        /// Agent name.
        name: String,
    },
    /// Print an agent's latest build log lines.
    Logs {
        /// Agent name.
        name: String,
        /// How many lines (from the end).
        #[arg(long, default_value_t = 200)]
        lines: usize,
    },
    /// Print the effective compose configuration for a package, without running anything.
    Plan {
        /// The agent package directory.
        dir: PathBuf,
        /// Agent name (default: the directory's parent name, as in {root}/{name}/{version}).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "")]
        owner_id: String,
    },
    /// Stop and remove an agent's containers.
    Undeploy {
        /// Agent name.
        name: String,
    },
    /// Say where the changed files of a package go in its running container, for an edit loop
    /// that syncs them instead of building (`deploy-agent.sh --watch`): one line per file,
    /// `sync<TAB>FILE<TAB>PATH` (files no COPY takes are left out), or one line
    /// `build<TAB>REASON` when only a build gives what a deploy would (the Dockerfile, the
    /// compose file or the card changed, a file a RUN step may read, a COPY it cannot be sure of).
    SyncPlan {
        /// The package folder.
        dir: PathBuf,
        /// The changed files, relative to the package folder.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Keep the agent guard's firewall rules in place until stopped (SIGTERM, Ctrl-C), then
    /// remove them: the host routes nothing from an agent's, a build's or a package's network
    /// into another Docker bridge, even while Docker before 28.0 lifts its own isolation for a
    /// moment as it makes a network. Runs in the host's network namespace with NET_ADMIN (the
    /// stack's `agent-guard` service); the rules are tagged with the stack (DOCKER_NETWORK).
    Guard {
        /// Seconds between checks that the rules are still there (a firewall reload removes them).
        #[arg(long, default_value_t = 5)]
        every: u64,
        /// Put the rules in place once and exit (they stay until `--remove`).
        #[arg(long, conflicts_with = "remove")]
        once: bool,
        /// Remove this stack's rules and exit.
        #[arg(long)]
        remove: bool,
    },
    /// Check agent names and print the names each goes by, one tab-separated line per agent:
    /// name, container, compose project, image repository, Kong service, Kong route. Exits 2
    /// with the rule when a name is not valid (the scripts ask this instead of knowing the rule).
    Names {
        /// Agent names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Settings every subcommand shares.
#[derive(Debug, Clone, ClapArgs)]
pub struct Common {
    /// Redis URL; overrides REDIS_HOST/REDIS_PORT/REDIS_DB when set.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Redis host.
    #[arg(long, env = "REDIS_HOST", default_value = "localhost", global = true)]
    pub redis_host: String,
    /// Redis port.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379, global = true)]
    pub redis_port: u16,
    /// Redis database number.
    #[arg(long, env = "REDIS_DB", default_value_t = 0, global = true)]
    pub redis_db: u32,
    /// Stream the backend writes jobs to.
    #[arg(
        long,
        env = "STREAM_KEY",
        default_value = nasiko_contract::stream::KEY,
        global = true
    )]
    pub stream: String,
    /// Consumer group.
    #[arg(
        long,
        env = "CONSUMER_GROUP",
        default_value = nasiko_contract::stream::GROUP,
        global = true
    )]
    pub group: String,
    /// Docker network agents join (created by the platform stack; agent compose files use it as external).
    #[arg(
        long,
        env = "DOCKER_NETWORK",
        default_value = nasiko_contract::AGENTS_NETWORK,
        global = true
    )]
    pub docker_network: String,
    /// Agents root on this machine (the backend's uploads folder).
    #[arg(
        long,
        env = "AGENTS_ROOT",
        default_value = "/app/agents",
        global = true
    )]
    pub agents_root: PathBuf,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
}

impl Common {
    pub fn redis_url(&self) -> String {
        self.redis_url.clone().unwrap_or_else(|| {
            format!(
                "redis://{}:{}/{}",
                self.redis_host, self.redis_port, self.redis_db
            )
        })
    }
}

#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    /// Consumer name in the group (default: the hostname).
    #[arg(long, env = "CONSUMER_NAME")]
    pub consumer: Option<String>,
    /// Nasiko backend base URL, used when a job's base_url is missing or a *.svc.cluster.local URL.
    #[arg(long, env = "NASIKO_API_URL")]
    pub nasiko_api_url: Option<String>,
    /// Public gateway URL; an agent's URL is {this}/agents/agent-{name}.
    #[arg(
        long,
        env = "KONG_GATEWAY_URL",
        default_value = "http://localhost:9100"
    )]
    pub kong_gateway_url: String,
    /// Auth service base URL (agent permissions).
    #[arg(
        long,
        env = "AUTH_SERVICE_URL",
        default_value = "http://nasiko-auth-service:8001"
    )]
    pub auth_service_url: String,
    /// Given to agents when set.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Given to agents when set.
    #[arg(long, env = "OPENROUTER_API_KEY", hide_env_values = true)]
    pub openrouter_api_key: Option<String>,
    /// Given to agents when set.
    #[arg(long, env = "MINIMAX_API_KEY", hide_env_values = true)]
    pub minimax_api_key: Option<String>,
    /// Phoenix collector endpoint given to agents (upstream's listener gave these three values).
    #[arg(
        long,
        env = "PHOENIX_COLLECTOR_ENDPOINT",
        default_value = "http://phoenix-observability:6006/v1/traces"
    )]
    pub phoenix_collector_endpoint: String,
    /// Phoenix gRPC endpoint given to agents.
    #[arg(
        long,
        env = "PHOENIX_GRPC_ENDPOINT",
        default_value = "http://phoenix-observability:4317"
    )]
    pub phoenix_grpc_endpoint: String,
    /// Phoenix HTTP endpoint given to agents.
    #[arg(
        long,
        env = "PHOENIX_HTTP_ENDPOINT",
        default_value = "http://phoenix-observability:6006"
    )]
    pub phoenix_http_endpoint: String,
    /// TRACING_ENABLED given to agents.
    #[arg(long, env = "TRACING_ENABLED", default_value = "false")]
    pub tracing_enabled: String,
    /// Jobs run at once; empty: 4 per core, at most 16. Most of a deploy waits on the engine (a
    /// build step's container, its layer; the new container must stay up a second), so more jobs
    /// than cores keep the machine busy: 48 new small agents on 2 cores took 147 s two at a time,
    /// 86 s four at a time and 52 s eight at a time (CPU 29%, 49%, 79% busy).
    #[arg(long, env = "MAX_CONCURRENT_JOBS")]
    pub concurrency: Option<String>,
    /// Started attempts (that died before finishing: SIGKILL, OOM, a crash) after which a job goes
    /// to the dead-letter stream instead of starting again. Only attempts that actually started
    /// count, not re-reads after a restart, and an attempt that got further than every earlier one
    /// (a stage, a build step) clears the count.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 3)]
    pub max_deliveries: u64,
    /// Seconds a pending job must be idle before another consumer claims it (longer than the heartbeat).
    #[arg(long, env = "CLAIM_IDLE_SECS", default_value_t = 60)]
    pub claim_idle_secs: u64,
    /// Seconds between heartbeats that keep a running job owned.
    #[arg(long, env = "HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Seconds running jobs get to finish after SIGTERM before they are left pending.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 60)]
    pub grace_secs: u64,
    /// docker build timeout, seconds (the whole process group is killed).
    #[arg(long, env = "BUILD_TIMEOUT_SECS", default_value_t = 900)]
    pub build_timeout_secs: u64,
    /// Seconds to wait for the agent container to run (and be healthy).
    #[arg(long, env = "START_TIMEOUT_SECS", default_value_t = 120)]
    pub start_timeout_secs: u64,
    /// Private build directory (copies of packages).
    #[arg(long, env = "WORK_DIR", default_value = "/var/lib/nasiko-build-agent")]
    pub work_dir: PathBuf,
    /// How the backend writes agent paths; this prefix is mapped onto AGENTS_ROOT.
    #[arg(long, env = "AGENTS_PATH_PREFIX", default_value = "/app/agents")]
    pub agents_path_prefix: PathBuf,
    /// Compose command: auto, v2 (docker compose) or v1 (docker-compose).
    #[arg(long, env = "COMPOSE_FLAVOR", default_value = "auto")]
    pub compose: String,
    /// Seconds a blue/green update keeps the old version after the new one is ready: the
    /// sidecar moves the traffic meanwhile (for an agent without a health check, once the new
    /// version listens on its port, at most its ROUTE_WARMUP_SECS), so keep it longer than that.
    #[arg(long, env = "HANDOVER_SECS", default_value_t = 4)]
    pub handover_secs: u64,
    /// Publish the container ports an agent package lists on 127.0.0.1 (random host ports), for
    /// debugging. Off: agents are reached only through the gateway, never on a host port.
    #[arg(long, env = "PUBLISH_AGENT_PORTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub publish_agent_ports: bool,
    /// Memory cap of an agent, all its package's services together (e.g. 512m, 2g); empty: none.
    /// What a service asks for it gets, the rest is split evenly among the others.
    #[arg(long, env = "AGENT_MEMORY_LIMIT", default_value = "1g")]
    pub agent_memory_limit: String,
    /// CPU cap of an agent, all its services together, in CPUs (upstream's runtime gives an
    /// agent half a CPU); 0: none.
    #[arg(long, env = "AGENT_CPU_LIMIT", default_value_t = 0.5)]
    pub agent_cpu_limit: f64,
    /// Process cap of an agent, all its services together; 0: none.
    #[arg(long, env = "AGENT_PIDS_LIMIT", default_value_t = 512)]
    pub agent_pids_limit: u64,
    /// The most services an agent's package may have.
    #[arg(long, env = "MAX_AGENT_SERVICES", default_value_t = 8)]
    pub max_agent_services: usize,
    /// The most replicas (`deploy.replicas`, `scale`) of its own service a package may ask for;
    /// each is a container with the agent's limits, and a target of its Kong upstream.
    #[arg(long, env = "AGENT_MAX_REPLICAS", default_value_t = 3)]
    pub agent_max_replicas: u64,
    /// Where agents are attached: `own` gives each agent a network of its own, which the
    /// registry sidecar joins the gateway and Phoenix to, so agents reach each other only through
    /// the gateway. `shared` (legacy) puts every agent on DOCKER_NETWORK, where any agent can call
    /// any other directly, past the gateway's auth and chat logging.
    #[arg(long, env = "AGENT_NETWORKS", default_value = "own")]
    pub agent_networks: String,
    /// The address range agents' own networks are cut from. It must not overlap the host's
    /// networks or routes (VPNs included); scripts/local-up.sh checks the host's routes.
    #[arg(long, env = "AGENT_SUBNET_POOL", default_value = "10.213.0.0/16")]
    pub agent_subnet_pool: String,
    /// The prefix length of each agent's network: 28 is 13 addresses (the agent, the gateway,
    /// Phoenix, an update's second slot and room for replicas); a /16 pool holds 4096 of them.
    #[arg(long, env = "AGENT_SUBNET_PREFIX", default_value_t = 28)]
    pub agent_subnet_prefix: u8,
    /// Versions whose images are kept per agent, the one serving included (older ones are
    /// removed): a rollback to a kept version starts its image without a build. Each image is
    /// tagged by its content and by its version (`version-{version}`).
    #[arg(long, env = "AGENT_KEEP_VERSIONS", default_value_t = 3)]
    pub keep_versions: usize,
    /// Skip docker build/compose and report success (for load benchmarks of the job lifecycle only).
    #[arg(long, env = "NOOP_DEPLOY", hide = true)]
    pub noop_deploy: bool,
    /// With NOOP_DEPLOY: how long the no-op deploy takes, in milliseconds (a job in flight).
    #[arg(long, env = "NOOP_DEPLOY_MS", hide = true, default_value_t = 0)]
    pub noop_deploy_ms: u64,
}

#[derive(Debug, Clone, ClapArgs)]
pub struct SubmitArgs {
    /// Agent name.
    #[arg(long)]
    pub agent_name: String,
    /// Package path as the backend writes it, e.g. /app/agents/NAME/v1.0.0.
    #[arg(long)]
    pub agent_path: String,
    #[arg(long, default_value = "")]
    pub owner_id: String,
    #[arg(long, default_value = "")]
    pub upload_id: String,
    /// Backend base URL put in the job.
    #[arg(long, default_value = "")]
    pub base_url: String,
    /// update_agent or rollback_agent (empty: a plain deploy).
    #[arg(long, default_value = "")]
    pub action: String,
    #[arg(long, default_value = "v1.0.0")]
    pub version: String,
    /// update_strategy put in the job: blue-green or rolling (the default: the new version
    /// starts beside the old one, which serves until the new one is ready), or recreate
    /// (replaced in place: faster, may drop requests for a moment).
    #[arg(long, default_value = "")]
    pub update_strategy: String,
    /// cleanup_old put in the job: False keeps the replaced version's container, stopped.
    #[arg(long, default_value = "")]
    pub cleanup_old: String,
    /// Wait for this job's own outcome, at most this many seconds (a bare --wait: 600), and
    /// print it: exit 0 when the agent is deployed, 1 when the job failed or the wait ran out.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "600")]
    pub wait: Option<u64>,
}

/// The caps of one agent, shared out over its package's services (the operator widens them; a
/// package cannot).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLimits {
    /// A compose/docker memory size ("1g"); empty: no cap.
    pub memory: String,
    /// CPUs; 0: no cap.
    pub cpus: f64,
    /// Processes; 0: no cap.
    pub pids: u64,
}

/// The validated daemon settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub redis_url: String,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub dead_letter_stream: String,
    pub network: String,
    pub agents_root: PathBuf,
    pub agents_path_prefix: PathBuf,
    pub work_dir: PathBuf,
    pub nasiko_api_url: Option<String>,
    pub kong_gateway_url: String,
    pub auth_service_url: String,
    pub agent_env: Vec<(String, String)>,
    pub concurrency: usize,
    pub max_deliveries: u64,
    pub claim_idle: Duration,
    pub heartbeat: Duration,
    pub grace: Duration,
    pub build_timeout: Duration,
    pub start_timeout: Duration,
    pub compose: String,
    pub keep_versions: usize,
    pub publish_agent_ports: bool,
    pub limits: AgentLimits,
    /// What one package may ask for: services, and replicas of its agent's service.
    pub most: crate::deploy::policy::Counts,
    pub agent_networks: crate::deploy::network::AgentNetworks,
    pub handover_wait: Duration,
    pub noop_deploy: bool,
    pub noop_deploy_time: Duration,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "build-agent".into())
}

impl Config {
    /// The network an agent's entry container is on: its own, or (legacy) the shared one.
    pub fn agent_network(&self, agent: &str) -> String {
        match self.agent_networks {
            crate::deploy::network::AgentNetworks::Own { .. } => {
                nasiko_contract::agent_network(&self.network, agent)
            }
            crate::deploy::network::AgentNetworks::Shared => self.network.clone(),
        }
    }

    pub fn new(c: &Common, r: RunArgs) -> Result<Config, ConfigError> {
        check(&r)?;
        let agent_networks = crate::deploy::network::AgentNetworks::new(
            &r.agent_networks,
            &r.agent_subnet_pool,
            r.agent_subnet_prefix,
        )
        .map_err(ConfigError::Networks)?;
        if let crate::deploy::network::AgentNetworks::Own { prefix, .. } = agent_networks {
            // the network's own address, its broadcast and its gateway, then the members
            let members = nasiko_contract::AGENT_NETWORK_MEMBERS.split(',').count() as u64;
            let room = (1u64 << (32 - u32::from(prefix))).saturating_sub(3 + members);
            let replicas = r.agent_max_replicas.max(1);
            if 2 * replicas > room {
                return Err(ConfigError::Replicas {
                    replicas,
                    prefix,
                    room,
                });
            }
        }
        let agent_env = agent_env(&r);
        Ok(Config {
            redis_url: c.redis_url(),
            stream: c.stream.clone(),
            group: c.group.clone(),
            consumer: r.consumer.unwrap_or_else(hostname),
            dead_letter_stream: format!("{}:dead-letter", c.stream),
            network: c.docker_network.clone(),
            agents_root: c.agents_root.clone(),
            agents_path_prefix: r.agents_path_prefix,
            work_dir: r.work_dir,
            nasiko_api_url: r
                .nasiko_api_url
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string()),
            kong_gateway_url: r.kong_gateway_url.trim_end_matches('/').to_string(),
            auth_service_url: r.auth_service_url.trim_end_matches('/').to_string(),
            agent_env,
            publish_agent_ports: r.publish_agent_ports,
            limits: AgentLimits {
                memory: r.agent_memory_limit.trim().to_string(),
                cpus: r.agent_cpu_limit.max(0.0),
                pids: r.agent_pids_limit,
            },
            most: crate::deploy::policy::Counts {
                services: r.max_agent_services.max(1),
                replicas: r.agent_max_replicas.max(1),
            },
            agent_networks,
            concurrency: concurrency(r.concurrency.as_deref())?,
            max_deliveries: r.max_deliveries,
            claim_idle: Duration::from_secs(r.claim_idle_secs),
            heartbeat: Duration::from_secs(r.heartbeat_secs),
            grace: Duration::from_secs(r.grace_secs),
            build_timeout: Duration::from_secs(r.build_timeout_secs.max(1)),
            start_timeout: Duration::from_secs(r.start_timeout_secs.max(1)),
            compose: r.compose,
            keep_versions: r.keep_versions.max(1),
            handover_wait: Duration::from_secs(r.handover_secs),
            noop_deploy: r.noop_deploy,
            noop_deploy_time: Duration::from_millis(r.noop_deploy_ms),
        })
    }
}

/// A setting that cannot work, alone or with another: the daemon refuses to start with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// CLAIM_IDLE_SECS is not more than twice HEARTBEAT_SECS (or the heartbeat is 0).
    ClaimIdle {
        claim_idle_secs: u64,
        heartbeat_secs: u64,
    },
    /// MAX_DELIVERIES is 0.
    MaxDeliveries,
    /// COMPOSE_FLAVOR is not auto, v1 or v2.
    ComposeFlavor(String),
    /// AGENT_MEMORY_LIMIT is not a size.
    MemoryLimit(String),
    /// MAX_CONCURRENT_JOBS is not a number from 1 to 64.
    Concurrency(String),
    /// AGENT_NETWORKS, AGENT_SUBNET_POOL and AGENT_SUBNET_PREFIX do not work together.
    Networks(crate::deploy::network::NetworksError),
    /// AGENT_MAX_REPLICAS needs more addresses than an agent's own network holds.
    Replicas {
        replicas: u64,
        prefix: u8,
        room: u64,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::ClaimIdle {
                claim_idle_secs,
                heartbeat_secs,
            } => write!(
                f,
                "CLAIM_IDLE_SECS ({claim_idle_secs}) must be more than twice HEARTBEAT_SECS ({heartbeat_secs}), or running jobs could be stolen"
            ),
            ConfigError::MaxDeliveries => f.write_str("MAX_DELIVERIES must be at least 1"),
            ConfigError::ComposeFlavor(c) => {
                write!(f, "COMPOSE_FLAVOR '{c}' must be auto, v1 or v2")
            }
            ConfigError::MemoryLimit(m) => write!(
                f,
                "AGENT_MEMORY_LIMIT '{m}' is not a size; write e.g. 512m or 1g (empty: no cap)"
            ),
            ConfigError::Concurrency(v) => write!(
                f,
                "MAX_CONCURRENT_JOBS '{v}' must be a number from 1 to 64 (empty: 4 per core, at most 16)"
            ),
            ConfigError::Networks(e) => e.fmt(f),
            ConfigError::Replicas { replicas, prefix, room } => write!(
                f,
                "AGENT_MAX_REPLICAS={replicas} needs {} addresses on each agent's own network (both deploy slots run during an update), but a /{prefix} (AGENT_SUBNET_PREFIX) holds {room} besides the gateway and Phoenix; lower AGENT_MAX_REPLICAS or AGENT_SUBNET_PREFIX",
                2 * replicas
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Networks(e) => e.source(),
            _ => None,
        }
    }
}

/// The settings that cannot work together or at all, refused before anything starts.
fn check(r: &RunArgs) -> Result<(), ConfigError> {
    if r.heartbeat_secs == 0 || r.claim_idle_secs <= r.heartbeat_secs * 2 {
        return Err(ConfigError::ClaimIdle {
            claim_idle_secs: r.claim_idle_secs,
            heartbeat_secs: r.heartbeat_secs,
        });
    }
    if r.max_deliveries == 0 {
        return Err(ConfigError::MaxDeliveries);
    }
    if !["auto", "v1", "v2"].contains(&r.compose.as_str()) {
        return Err(ConfigError::ComposeFlavor(r.compose.clone()));
    }
    let memory = r.agent_memory_limit.trim();
    if !memory.is_empty() && crate::deploy::model::parse_bytes(memory).is_none() {
        return Err(ConfigError::MemoryLimit(memory.to_string()));
    }
    Ok(())
}

/// What every agent container gets in its environment: the model keys that are set and the
/// tracing endpoints.
fn agent_env(r: &RunArgs) -> Vec<(String, String)> {
    let mut agent_env = Vec::new();
    for (k, v) in [
        ("OPENAI_API_KEY", &r.openai_api_key),
        ("OPENROUTER_API_KEY", &r.openrouter_api_key),
        ("MINIMAX_API_KEY", &r.minimax_api_key),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            agent_env.push((k.to_string(), v.clone()));
        }
    }
    agent_env.push((
        "PHOENIX_COLLECTOR_ENDPOINT".into(),
        r.phoenix_collector_endpoint.clone(),
    ));
    agent_env.push((
        "PHOENIX_GRPC_ENDPOINT".into(),
        r.phoenix_grpc_endpoint.clone(),
    ));
    agent_env.push((
        "PHOENIX_HTTP_ENDPOINT".into(),
        r.phoenix_http_endpoint.clone(),
    ));
    agent_env.push(("TRACING_ENABLED".into(), r.tracing_enabled.clone()));
    agent_env
}

/// MAX_CONCURRENT_JOBS: a number from 1 to 64; empty, 4 per core, at most 16.
fn concurrency(given: Option<&str>) -> Result<usize, ConfigError> {
    match given.map(str::trim).filter(|v| !v.is_empty()) {
        None => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok((4 * cores).clamp(2, 16))
        }
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err(ConfigError::Concurrency(v.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// The configuration of `build-agent run` with these flags.
    fn configured(flags: &[&str]) -> Result<Config, ConfigError> {
        let mut a = vec!["build-agent", "run"];
        a.extend(flags);
        let cli = Cli::parse_from(a);
        let Some(Command::Run(r)) = cli.command else {
            panic!("run")
        };
        Config::new(&cli.common, *r)
    }

    fn refused(flags: &[&str]) -> String {
        configured(flags).unwrap_err().to_string()
    }

    #[test]
    fn refused_settings_say_what_to_write() {
        assert_eq!(
            refused(&["--claim-idle-secs", "20", "--heartbeat-secs", "10"]),
            "CLAIM_IDLE_SECS (20) must be more than twice HEARTBEAT_SECS (10), or running jobs could be stolen"
        );
        assert_eq!(
            refused(&["--max-deliveries", "0"]),
            "MAX_DELIVERIES must be at least 1"
        );
        assert_eq!(
            refused(&["--compose", "v3"]),
            "COMPOSE_FLAVOR 'v3' must be auto, v1 or v2"
        );
        assert_eq!(
            refused(&["--agent-memory-limit", " lots "]),
            "AGENT_MEMORY_LIMIT 'lots' is not a size; write e.g. 512m or 1g (empty: no cap)"
        );
        assert_eq!(
            refused(&[
                "--agent-networks",
                "own",
                "--agent-subnet-pool",
                "10.213.0.1/16"
            ]),
            "AGENT_SUBNET_POOL: '10.213.0.1/16' has host bits set; the subnet is 10.213.0.0/16"
        );
        // a /28 holds 16 addresses: 3 the network's own, 2 the gateway and Phoenix, 11 for two
        // slots of replicas
        assert_eq!(
            refused(&["--agent-max-replicas", "6"]),
            "AGENT_MAX_REPLICAS=6 needs 12 addresses on each agent's own network (both deploy slots run during an update), but a /28 (AGENT_SUBNET_PREFIX) holds 11 besides the gateway and Phoenix; lower AGENT_MAX_REPLICAS or AGENT_SUBNET_PREFIX"
        );
        assert_eq!(
            refused(&["--concurrency", "lots"]),
            "MAX_CONCURRENT_JOBS 'lots' must be a number from 1 to 64 (empty: 4 per core, at most 16)"
        );
        assert_eq!(
            refused(&["--concurrency", "0"]),
            "MAX_CONCURRENT_JOBS '0' must be a number from 1 to 64 (empty: 4 per core, at most 16)"
        );
        assert!(
            configured(&["--agent-max-replicas", "5"]).is_ok(),
            "5 fit a /28"
        );
    }

    #[test]
    fn upstreams_legacy_worker_command_means_run() {
        let upstream = [
            "build-agent",
            "python",
            "-u",
            "/app/orchestrator/redis_stream_listener.py",
        ];
        assert!(is_legacy_listener_command(&argv(&upstream)));
        assert!(is_legacy_listener_command(&argv(&[
            "build-agent",
            "/usr/local/bin/python3.12",
            "x.py"
        ])));
        assert!(is_legacy_listener_command(&argv(&[
            "build-agent",
            "orchestrator/redis_stream_listener.py"
        ])));
        for ours in [
            &["build-agent"][..],
            &["build-agent", "run"],
            &["build-agent", "plan", "python"],
            &["build-agent", "pythonic"],
        ] {
            assert!(!is_legacy_listener_command(&argv(ours)), "{ours:?}");
        }
    }
}
