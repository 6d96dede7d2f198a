//! registry-sidecar: Docker → Kong. Discovery publishes agent endpoints; the reconciler turns them,
//! with the static proxies and the node's plugins, into a desired state and converges Kong to it.

pub mod api;
pub mod backoff;
pub mod check;
pub mod config;
pub mod declarative;
pub mod desired;
pub mod diff;
pub mod discovery;
pub mod endpoint;
pub mod kong;
pub mod kubernetes;
pub mod listening;
pub mod members;
pub mod memory;
pub mod model;
pub mod plugin_gate;
pub mod privileges;
pub mod reconciler;
pub mod schedule;
pub mod static_routes;
pub mod static_watch;
pub mod status;
pub mod sync;
pub mod targets_seen;

use config::{Config, DiscoveryMode};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What Docker discovery and the membership keeper publish: their own states, and the counters.
type DiscoveryReports = (
    status::Publisher<status::DiscoveryState>,
    status::Publisher<status::MembersState>,
    Arc<status::Counters>,
);

/// Docker discovery, and the membership keeper between it and the reconciler when there are
/// members to keep on the agent networks.
fn docker_discovery(
    cfg: &Config,
    (discovery, members, counters): DiscoveryReports,
    agents_tx: watch::Sender<discovery::AgentsView>,
    resync: mpsc::Sender<reconciler::SyncRequest>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (discovered_tx, discovered_rx) = watch::channel(discovery::AgentsView::default());
    let tx = if cfg.members.is_empty() {
        tracing::warn!("AGENT_NETWORK_MEMBERS is empty: no container is joined to the agents' own networks, so the gateway cannot reach agents on them");
        agents_tx
    } else {
        let mut keeper = members::Keeper::new(
            cfg.docker_host.clone(),
            cfg.agents_network.clone(),
            cfg.members.clone(),
            cfg.interval,
            (members, counters.clone()),
            members::Wiring {
                discovered: discovered_rx,
                tx: agents_tx,
                resync,
            },
        );
        keeper.ready_dir = cfg.members_ready_dir.clone();
        tasks.push(tokio::spawn(keeper.run()));
        discovered_tx
    };
    let d = discovery::Discovery {
        docker_host: cfg.docker_host.clone(),
        shared_network: cfg.agents_network.clone(),
        idle_ping: Duration::from_secs(30),
        probe: Arc::new(listening::Probe::new(
            cfg.host_proc.clone(),
            cfg.route_warmup,
        )),
        report: discovery,
        counters,
        tx,
    };
    tasks.push(tokio::spawn(d.run()));
    tasks
}

/// The HTTP API's listener, and the line that says what the sidecar watches.
async fn listen(cfg: &Config) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}. Is the port taken? Set LISTEN_ADDR",
                cfg.listen
            )
        })?;
    match cfg.mode {
        DiscoveryMode::Docker => {
            tracing::info!(listen = %cfg.listen, kong = %cfg.kong_admin_url, network = %cfg.agents_network, "registry-sidecar starting (docker discovery)")
        }
        DiscoveryMode::Kubernetes => {
            tracing::info!(listen = %cfg.listen, kong = %cfg.kong_admin_url, namespace = %cfg.agents_namespace, "registry-sidecar starting (kubernetes discovery)")
        }
    }
    Ok(listener)
}

/// Run the sidecar until `shutdown` completes.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let kube_client = match cfg.mode {
        DiscoveryMode::Kubernetes => Some(kubernetes::client().await?),
        DiscoveryMode::Docker => None,
    };
    let (publishers, status) = status::Status::channels();
    let status = Arc::new(status);
    let status::Publishers {
        counters,
        discovery: discovery_report,
        sync: sync_report,
        statics: statics_report,
        members: members_report,
    } = publishers;
    let listener = listen(&cfg).await?;
    let statics = static_watch::initial(&cfg.static_routes_file, &cfg.hosts, &statics_report);
    let (statics_tx, statics_rx) = watch::channel(Arc::new(statics));
    let (agents_tx, agents_rx) = watch::channel(discovery::AgentsView::default());
    let (sync_tx, sync_rx) = mpsc::channel(16);

    let discovery_tasks = match kube_client {
        Some(client) => {
            let d = kubernetes::KubeDiscovery {
                namespace: cfg.agents_namespace.clone(),
                report: discovery_report,
                counters: counters.clone(),
                tx: agents_tx,
            };
            vec![tokio::spawn(d.run(client))]
        }
        None => docker_discovery(
            &cfg,
            (discovery_report, members_report, counters.clone()),
            agents_tx,
            sync_tx.clone(),
        ),
    };
    let reconciler = reconciler::Reconciler {
        kong: kong::KongClient::new(
            &cfg.kong_admin_url,
            cfg.kong_timeout,
            &cfg.owner_tag,
            counters.clone(),
        ),
        report: sync_report,
        counters,
        agents: agents_rx,
        statics: statics_rx,
        sync_requests: sync_rx,
        interval: cfg.interval,
        owner_tag: cfg.owner_tag.clone(),
        concurrency: cfg.write_concurrency,
        warmup: cfg.route_warmup,
        gate: plugin_gate::PluginGate::new(tokio::time::Instant::now()),
    };
    let api = api::Api {
        status: status.clone(),
        sync: sync_tx,
        mode: cfg.mode,
    };
    let mut tasks = discovery_tasks;
    tasks.extend([
        tokio::spawn(reconciler.run()),
        tokio::spawn(api.serve(listener)),
        tokio::spawn(static_watch::watch_file(
            cfg.static_routes_file.clone(),
            cfg.hosts.clone(),
            statics_report,
            statics_tx,
        )),
    ]);
    shutdown.await;
    tracing::info!("registry-sidecar stopping");
    for t in tasks {
        t.abort();
    }
    Ok(())
}
