//! Docker discovery: subscribe to events (replayed from just before the list, so there is no
//! start-up gap), list, then follow events; re-list after every reconnect; reconnect forever with
//! backoff; an idle watchdog pings the daemon so a stalled stream cannot freeze discovery.
//! Publishes the agents it sees on a watch channel. It watches the shared agents network and
//! every agent's own network of this stack (`endpoint::watched_network`); it never connects or
//! disconnects anything (the membership keeper, `members`, joins the gateway to agent networks).
//! A new container without a health check is held (not routed) until it listens on its port
//! (`listening`): read when it is seen, then as often as its age says (`due`) until it does or its
//! warm-up ends.

use crate::backoff::Backoff;
use crate::endpoint::{classify, watched_network, AgentEndpoint, Classified, ContainerFacts};
use crate::listening::Probe;
use crate::status::{now_unix, Counters, DiscoveryState, Publisher};
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often held containers' sockets are looked at (their namespace's socket counts, and their
/// socket tables when those changed), only while a container is held; every `FIRST_POLL` while
/// one is in its first `FIRST_WINDOW` seconds, when a quick starter begins to listen.
const LISTEN_POLL: Duration = Duration::from_millis(5);
const FIRST_POLL: Duration = Duration::from_millis(1);
const FIRST_WINDOW: f64 = 0.05;

/// What discovery currently sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentsView {
    /// container id → endpoint, shared: the reconciler's copy of a view costs a reference count
    /// per agent, and an event's update copies only its own container's endpoint
    pub agents: BTreeMap<String, Arc<AgentEndpoint>>,
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
    /// Reads whether held containers listen yet (here on an event, and in a task of its own that
    /// polls them, which a slow `inspect` cannot hold up).
    pub probe: Arc<Probe>,
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
        let poller = tokio::spawn(listen_for_held(self.tx.clone(), self.probe.clone()));
        let _poller = AbortOnDrop(poller);
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
        let mut view = match self.list(&docker).await {
            Ok(v) => v,
            Err(e) => return Disconnect::List(e),
        };
        let n = view.agents.len();
        self.tx.send_if_modified(|v| {
            for (id, a) in view.agents.iter_mut() {
                if let Some(was) = v.agents.get(id) {
                    still_listening(was, Arc::make_mut(a));
                }
            }
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
        list_agents(docker, &self.shared_network, &self.probe).await
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
        let seen = now_unix();
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
        let published = self.tx.send_if_modified(|v| {
            // what the view held of this container (an event changes no other)
            let (agent, waiting, malformed) = (
                v.agents.remove(&id),
                v.waiting.remove(&id),
                v.malformed.remove(&id),
            );
            if let Some(c) = &outcome {
                apply(v, &id, c);
            }
            if let Some(a) = v.agents.get_mut(&id).map(Arc::make_mut) {
                if let Some(was) = &agent {
                    still_listening(was, a);
                }
                self.probe.hear(a, now_unix());
                let ms = |t: f64| (t * 1000.0).round();
                tracing::debug!(
                    container = %a.container_name,
                    "{action}: seen {} ms after it happened, inspected in {} ms; {}",
                    ms(seen - when.unwrap_or(seen)),
                    ms(now_unix() - seen),
                    if self.probe.holds(a, now_unix()) { "held until it listens" } else { "routable" }
                );
            }
            if let Some(m) = v.malformed.get(&id) {
                if malformed.as_ref() != Some(m) {
                    tracing::warn!("skipping container: {m}");
                }
            }
            let changed = v.agents.get(&id) != agent.as_ref()
                || v.waiting.get(&id) != waiting.as_ref()
                || v.malformed.get(&id) != malformed.as_ref();
            if changed {
                v.last_event_unix = when;
            }
            changed
        });
        if published {
            // the reconciler was woken on this thread: let it start the change's sync before
            // the next event's inspect (seen to wait a millisecond or more behind it)
            tokio::task::yield_now().await;
        }
    }
}

/// Looks at the held containers while there are any (each as often as its age says, `due`), else
/// waits for the view to change; publishes those that listen.
async fn listen_for_held(tx: watch::Sender<AgentsView>, probe: Arc<Probe>) {
    let mut changes = tx.subscribe();
    // the poll's own clock, in milliseconds of steps taken
    let mut clock: u64 = 0;
    loop {
        let now = now_unix();
        let youngest = changes
            .borrow_and_update()
            .agents
            .values()
            .filter(|a| probe.holds(a, now))
            .map(|a| age(a, now))
            .min_by(f64::total_cmp);
        let Some(youngest) = youngest else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let step = match youngest < FIRST_WINDOW {
            true => FIRST_POLL,
            false => LISTEN_POLL,
        };
        tokio::time::sleep(step).await;
        let before = clock;
        clock += step.as_millis() as u64;
        let now = now_unix();
        tx.send_if_modified(|v| {
            let mut changed = false;
            let looked_at = v
                .agents
                .values_mut()
                .filter(|a| probe.holds(a, now) && due(age(a, now), before, clock));
            for a in looked_at {
                // (an endpoint the reconciler shares is copied only when it changes)
                if let Some(listening) = probe.heard(a, now) {
                    Arc::make_mut(a).listening = listening;
                    changed = true;
                }
            }
            let held = v.agents.values().filter(|a| probe.holds(a, now));
            probe.keep_only(held.map(|a| a.container_id.as_str()));
            changed
        });
    }
}

/// Aborts its task when dropped: the poller goes with discovery.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Seconds since a container started, at unix time `now` (0 when unknown).
fn age(a: &AgentEndpoint, now: f64) -> f64 {
    a.started_unix().map_or(0.0, |t| now - t)
}

/// Whether a held container of `age` seconds is looked at when the poll's clock moves from
/// `before` to `now` (milliseconds): every millisecond in its first 50 ms, every 5 ms until
/// 250 ms, every 20 ms until 1 s, then every 100 ms. A quick starter is routed within a
/// millisecond or two of listening; a burst of slow starters costs little.
fn due(age: f64, before: u64, now: u64) -> bool {
    let every = match age {
        x if x < FIRST_WINDOW => 1,
        x if x < 0.25 => 5,
        x if x < 1.0 => 20,
        _ => 100,
    };
    now / every != before / every
}

/// What was heard of a container's sockets holds while its process is the same (a later inspect
/// knows nothing of it): its traffic does not go back and forth.
fn still_listening(was: &AgentEndpoint, a: &mut AgentEndpoint) {
    // a fresh reading (it listens; unreadable) stands
    if was.pid == a.pid && was.started_at == a.started_at && a.listening == Some(false) {
        a.listening = was.listening;
    }
}

fn apply(view: &mut AgentsView, id: &str, c: &Classified) {
    match c {
        Classified::Agent(a) => {
            view.agents.insert(id.to_string(), Arc::new((**a).clone()));
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
pub async fn list_agents(
    docker: &Docker,
    shared: &str,
    probe: &Probe,
) -> Result<AgentsView, String> {
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
    let now = now_unix();
    for a in view.agents.values_mut() {
        probe.hear(Arc::make_mut(a), now);
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
        pid: state
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_container_is_looked_at_less_often_as_it_ages() {
        // how often each age is looked at over one second of the poll's steps
        let looks = |age: f64, step: u64| {
            (0..1000 / step)
                .filter(|i| due(age, i * step, (i + 1) * step))
                .count()
        };
        assert_eq!(looks(0.01, 1), 1000, "every step in its first 50 ms");
        assert_eq!(looks(0.1, 1), 200);
        assert_eq!(looks(0.1, 5), 200, "steps of 5 ms cross every 5 ms too");
        assert_eq!(looks(0.5, 5), 50);
        assert_eq!(looks(2.0, 5), 10);
        assert_eq!(looks(2.0, 1), 10);
    }

    #[test]
    fn a_container_heard_listening_stays_so_while_its_process_is_the_same() {
        let heard = |pid: u32, listening: Option<bool>| {
            let mut a = AgentEndpoint::labelled("a", "c1", "10.0.0.2", "n");
            a.pid = Some(pid);
            a.started_at = "2026-12-06T00:00:00Z".into();
            a.listening = listening;
            a
        };
        let before = heard(7, Some(true));
        let mut again = heard(7, Some(false));
        still_listening(&before, &mut again);
        assert_eq!(
            again.listening,
            Some(true),
            "a new inspect of the same process"
        );
        let mut restarted = heard(8, Some(false));
        still_listening(&before, &mut restarted);
        assert_eq!(
            restarted.listening,
            Some(false),
            "another process is heard again"
        );
    }
}
