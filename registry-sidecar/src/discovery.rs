//! Docker discovery: subscribe to events (replayed from just before the list, so there is no
//! start-up gap), list, then follow events; re-list after every reconnect; reconnect forever with
//! backoff; an idle watchdog pings the daemon so a stalled stream cannot freeze discovery.
//! Publishes the agents it sees on a watch channel. It watches the shared agents network and
//! every agent's own network of this stack (`endpoint::watched_network`); it never connects or
//! disconnects anything (the membership keeper, `members`, joins the gateway to agent networks).

use crate::backoff::Backoff;
use crate::endpoint::{classify, watched_network, AgentEndpoint, Classified, ContainerFacts};
use crate::status::{now_unix, Counters, DiscoveryState, Publisher};
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What discovery currently sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentsView {
    /// container id → endpoint
    pub agents: BTreeMap<String, AgentEndpoint>,
    /// container id → why it is not routed yet
    pub waiting: BTreeMap<String, String>,
    /// container id → why its labels were rejected
    pub malformed: BTreeMap<String, String>,
    /// Docker answered and a complete list has been taken since the last (re)connect.
    pub complete: bool,
    /// Unix time of the newest event applied (for the lag metric).
    pub last_event_unix: Option<f64>,
}

pub struct Discovery {
    pub docker_host: Option<String>,
    /// The shared agents network (AGENTS_NETWORK); agents' own networks are named after it.
    pub shared_network: String,
    pub idle_ping: Duration,
    /// Discovery's own state, for the API.
    pub report: Publisher<DiscoveryState>,
    pub counters: Arc<Counters>,
    pub tx: watch::Sender<AgentsView>,
}

#[derive(Debug)]
enum Disconnect {
    Connect(String),
    List(String),
    Stream(String),
    Ended,
    Stalled,
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disconnect::Connect(e) => write!(f, "{e}"),
            Disconnect::List(e) => write!(f, "failed to list containers: {e}"),
            Disconnect::Stream(e) => write!(f, "the Docker event stream failed: {e}"),
            Disconnect::Ended => write!(f, "the Docker event stream ended"),
            Disconnect::Stalled => write!(f, "the Docker daemon stopped answering pings"),
        }
    }
}

impl std::error::Error for Disconnect {}

/// A Docker client for `docker_host` (None: the local socket), its API version negotiated.
pub async fn connect(docker_host: Option<&str>) -> Result<Docker, String> {
    let why = |e: String| {
        format!("cannot connect to Docker: {e}. Is the socket mounted? Check DOCKER_HOST")
    };
    let docker = match docker_host {
        Some(h) => Docker::connect_with_host(h),
        None => Docker::connect_with_defaults(),
    }
    .map_err(|e| why(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version()).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(why(e.to_string())),
        Err(_) => Err(why("version negotiation timed out".into())),
    }
}

impl Discovery {
    /// Run forever (until the task is dropped).
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut first = true;
        loop {
            let err = self.session(&mut backoff, first).await;
            first = false;
            Counters::inc(&self.counters.docker_reconnects);
            self.tx.send_if_modified(|v| {
                let was = v.complete;
                v.complete = false;
                was
            });
            self.report.update(|s| {
                s.reachable = false;
                s.listed = false;
                s.error = Some(err.to_string());
            });
            let d = backoff.next_delay();
            tracing::warn!("{err}; reconnecting in {d:?}");
            tokio::time::sleep(d).await;
        }
    }

    async fn session(&self, backoff: &mut Backoff, first: bool) -> Disconnect {
        let docker = match connect(self.docker_host.as_deref()).await {
            Ok(d) => d,
            Err(e) => return Disconnect::Connect(e),
        };
        // Subscribe with `since` a little in the past: events during the list are replayed.
        let since = (now_unix() as i64 - 2).to_string();
        let mut filters = HashMap::new();
        filters.insert(
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        );
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since),
            until: None,
            filters: Some(filters),
        }));
        let view = match self.list(&docker).await {
            Ok(v) => v,
            Err(e) => return Disconnect::List(e),
        };
        let n = view.agents.len();
        self.tx.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
        self.report.update(|s| {
            s.reachable = true;
            s.listed = true;
            s.error = None;
        });
        if first {
            tracing::info!(agents = n, network = %self.shared_network, "docker discovery started");
        } else {
            tracing::info!(agents = n, "docker reconnected; re-listed containers");
        }
        backoff.reset();
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(e)) => {
                        Counters::inc(&self.counters.docker_events);
                        self.on_event(&docker, e).await;
                    }
                    Some(Err(e)) => return Disconnect::Stream(e.to_string()),
                    None => return Disconnect::Ended,
                },
                _ = tokio::time::sleep(self.idle_ping) => {
                    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
                        Ok(Ok(_)) => {}
                        _ => return Disconnect::Stalled,
                    }
                }
            }
        }
    }

    /// [`list_agents`] on the networks this discovery watches.
    async fn list(&self, docker: &Docker) -> Result<AgentsView, String> {
        list_agents(docker, &self.shared_network).await
    }

    /// The container an event may change the view of; `None` for events that cannot.
    fn subject(&self, e: &EventMessage, action: &str) -> Option<String> {
        let attrs = e.actor.as_ref().and_then(|a| a.attributes.as_ref());
        let attr = |k: &str| attrs.and_then(|a| a.get(k));
        match e.typ {
            Some(EventMessageTypeEnum::CONTAINER) => {
                let relevant = [
                    "start", "die", "stop", "destroy", "rename", "pause", "unpause", "restart",
                    "kill", "oom",
                ]
                .contains(&action)
                    || action.starts_with("health_status");
                let id = e
                    .actor
                    .as_ref()
                    .and_then(|a| a.id.clone())
                    .filter(|_| relevant)?;
                // container events carry the labels and name: skip the inspect for containers
                // that can be no agent (most of a busy host's events), unless we track them
                let candidate = attr(nasiko_contract::labels::TYPE).is_some()
                    || attr("name")
                        .is_some_and(|n| nasiko_contract::name_from_container(n).is_some());
                let v = self.tx.borrow();
                let known = v.agents.contains_key(&id)
                    || v.waiting.contains_key(&id)
                    || v.malformed.contains_key(&id);
                (candidate || known).then_some(id)
            }
            Some(EventMessageTypeEnum::NETWORK) => {
                let watched =
                    attr("name").is_some_and(|n| watched_network(n, &self.shared_network));
                let moved = action == "connect" || action == "disconnect";
                attr("container").filter(|_| watched && moved).cloned()
            }
            _ => None,
        }
    }

    async fn on_event(&self, docker: &Docker, e: EventMessage) {
        let action = e.action.clone().unwrap_or_default();
        let Some(id) = self.subject(&e, &action) else {
            return;
        };
        let outcome = if action == "destroy" {
            None
        } else {
            match docker.inspect_container(&id, None).await {
                Ok(c) => Some(classify(&facts(&c), &self.shared_network)),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => None,
                Err(err) => {
                    tracing::warn!(container = %short(&id), "inspect after {action} failed: {err}; will re-check on the next list");
                    return;
                }
            }
        };
        let when = e
            .time_nano
            .map(|n| n as f64 / 1e9)
            .or(e.time.map(|t| t as f64));
        self.tx.send_if_modified(|v| {
            let before = v.clone();
            v.agents.remove(&id);
            v.waiting.remove(&id);
            v.malformed.remove(&id);
            if let Some(c) = &outcome {
                apply(v, &id, c);
            }
            if let Some(m) = v.malformed.get(&id) {
                if before.malformed.get(&id) != Some(m) {
                    tracing::warn!("skipping container: {m}");
                }
            }
            let changed = before.agents != v.agents
                || before.waiting != v.waiting
                || before.malformed != v.malformed;
            if changed {
                v.last_event_unix = when;
            }
            changed
        });
    }
}

fn apply(view: &mut AgentsView, id: &str, c: &Classified) {
    match c {
        Classified::Agent(a) => {
            view.agents.insert(id.to_string(), (**a).clone());
        }
        Classified::Waiting(w) => {
            view.waiting.insert(id.to_string(), w.clone());
        }
        Classified::Malformed(m) => {
            view.malformed.insert(id.to_string(), m.clone());
        }
        Classified::NotAgent => {}
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Every container on a network of this stack (the shared one, `shared`, or an agent's own),
/// inspected and classified. One list of all containers, kept to those on a watched network (a
/// filter by label would miss the unlabelled `agent-…` containers of the naming fallback).
pub async fn list_agents(docker: &Docker, shared: &str) -> Result<AgentsView, String> {
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<String> = list
        .into_iter()
        .filter(|c| {
            let nets = c
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref());
            nets.is_some_and(|m| m.keys().any(|n| watched_network(n, shared)))
        })
        .filter_map(|c| c.id)
        .collect();
    let inspected: Vec<_> = futures_util::stream::iter(ids)
        .map(|id| async move { (id.clone(), docker.inspect_container(&id, None).await) })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut view = AgentsView {
        complete: true,
        ..Default::default()
    };
    for (id, r) in inspected {
        match r {
            Ok(c) => apply(&mut view, &id, &classify(&facts(&c), shared)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(format!("inspect {id}: {e}")),
        }
    }
    Ok(view)
}

/// The facts discovery needs from `docker inspect`.
pub fn facts(c: &ContainerInspectResponse) -> ContainerFacts {
    let state = c.state.as_ref();
    let config = c.config.as_ref();
    let health = state
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status)
        .and_then(|st| {
            use bollard::models::HealthStatusEnum as H;
            match st {
                H::EMPTY | H::NONE => None,
                other => Some(other.to_string()),
            }
        });
    ContainerFacts {
        id: c.id.clone().unwrap_or_default(),
        name: c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: config.and_then(|c| c.labels.clone()).unwrap_or_default(),
        running: state.and_then(|s| s.running).unwrap_or(false)
            && !state.and_then(|s| s.paused).unwrap_or(false),
        health,
        networks: c
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.ip_address.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
        exposed_ports: config
            .and_then(|c| c.exposed_ports.clone())
            .unwrap_or_default(),
        started_at: state.and_then(|s| s.started_at.clone()).unwrap_or_default(),
        created_at: c.created.clone().unwrap_or_default(),
        image: c.image.clone().unwrap_or_default(),
    }
}
