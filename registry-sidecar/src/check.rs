//! `registry-sidecar check`: what Kong lacks, read as the sidecar reads it — the same Docker
//! listing, static routes file, desired state and diff as a sync, without writing anything. Each
//! write a sync would make is a difference; none means Kong holds what the sidecar wants.

use crate::config::{Config, DiscoveryMode};
use crate::desired::DesiredState;
use crate::kong::KongClient;
use crate::plugin_gate::PluginGate;
use crate::sync::SyncRun;
use std::sync::Arc;

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Agents routed, and the static proxies.
    pub agents: usize,
    pub proxies: usize,
    /// What the sidecar wants, a line per service: its route, plugins and targets.
    pub wanted: Vec<String>,
    /// Agents discovery sees but does not route yet, with why.
    pub waiting: Vec<String>,
    /// The writes a sync would make now, one line each.
    pub differences: Vec<String>,
}

/// Compare Kong with what `cfg`'s sidecar wants now. The error says what could not be read.
pub async fn check(cfg: &Config) -> Result<Report, String> {
    if cfg.mode == DiscoveryMode::Kubernetes {
        return Err("check reads Docker; in Kubernetes mode, read the sidecar's /status".into());
    }
    let docker = crate::discovery::connect(cfg.docker_host.as_deref()).await?;
    let probe = crate::listening::Probe::new(cfg.host_proc.clone(), cfg.route_warmup);
    let view = crate::discovery::list_agents(&docker, &cfg.agents_network, &probe).await?;
    let (statics, _) = crate::static_watch::load(&cfg.static_routes_file, &cfg.hosts)?;
    let kong = KongClient::new(
        &cfg.kong_admin_url,
        cfg.kong_timeout,
        &cfg.owner_tag,
        Arc::default(),
    );
    let node = kong.node().await.map_err(|e| e.to_string())?;
    if node.dbless {
        return Err("Kong runs without a database: a sync pushes the whole configuration, and an unchanged one is a 304 (see the sidecar's /status for its last push)".into());
    }
    let agents: Vec<_> = view.agents.values().cloned().collect();
    // the sync's own reading: its desired state and its plan, without the writes
    let gate = PluginGate::new(tokio::time::Instant::now());
    let run = SyncRun {
        kong: &kong,
        owner_tag: &cfg.owner_tag,
        warmup: cfg.route_warmup,
        concurrency: 1,
        gate: &gate,
    };
    let desired = run.wanted(&node, &statics, &agents);
    let differences = run
        .plan_writes(&desired, true)
        .await
        .map_err(|e| e.to_string())?
        .0
        .phases
        .iter()
        .flatten()
        .map(|w| w.describe())
        .collect();
    Ok(Report {
        wanted: wanted(&desired),
        agents: agents.len(),
        proxies: statics.proxies.len(),
        waiting: view.waiting.values().cloned().collect(),
        differences,
    })
}

/// A line per service of `d`: `name: route R, plugins P Q, targets ip:port at weight`.
fn wanted(d: &DesiredState) -> Vec<String> {
    d.services
        .keys()
        .map(|svc| {
            let routes: Vec<&str> = d
                .routes
                .values()
                .filter(|r| &r.service == svc)
                .map(|r| r.name.as_str())
                .collect();
            let mut plugins: Vec<&str> = d
                .plugins
                .values()
                .filter(|p| &p.service == svc)
                .map(|p| p.name())
                .collect();
            plugins.sort();
            let mut line = format!(
                "{svc}: route {}, plugins {}",
                routes.join(" "),
                plugins.join(" ")
            );
            if d.upstreams.contains_key(svc) {
                let targets: Vec<String> = d
                    .targets
                    .values()
                    .filter(|t| &t.upstream == svc)
                    .map(|t| format!("{} at {}", t.target, t.weight()))
                    .collect();
                line.push_str(&format!(", targets {}", targets.join(" ")));
            }
            line
        })
        .collect()
}
