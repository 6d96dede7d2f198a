//! The membership keeper: keeps every member container of AGENT_NETWORK_MEMBERS (the gateway,
//! Phoenix) connected to every agent's own network of this stack, under the alias agents call it
//! by, so an agent reaches the platform only through them. It joins them when Docker is
//! (re)connected, when a member starts (compose gives a recreated gateway no agent networks),
//! when an agent network is created, and before an agent on its own network reaches the
//! reconciler: it stands between discovery and the reconciler and holds such an agent back
//! (waiting) until the members have joined its network, so no route is written to an address
//! the gateway cannot reach. It connects configured members only: never an agent, never any
//! other container, and it never disconnects anything (the build agent's undeploy does).

mod rules;

pub use rules::{connect_refusal, gate, is_agent_network, parse_members, Connect, Joins, Member};

use crate::backoff::Backoff;
use crate::discovery::AgentsView;
use crate::reconciler::SyncRequest;
use crate::status::{now_unix, Counters, MembersState, Publisher, Rejoin};
use bollard::errors::Error as DockerError;
use bollard::models::{
    EndpointSettings, EventMessage, EventMessageTypeEnum, NetworkConnectRequest,
};
use bollard::query_parameters::{EventsOptions, ListNetworksOptions};
use bollard::Docker;
use futures_util::StreamExt;
use nasiko_contract::{agent_of_network, labels};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The alias of the gateway on agent networks (the name agents have always called it by).
pub const GATEWAY_ALIAS: &str = "kong-gateway";
/// Connects in flight at once.
const CONCURRENCY: usize = 8;
/// The longest one Docker call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connect member `m`, container `id` (by id: never another container that a name could
/// match), to `network` under its alias.
async fn connect(docker: &Docker, m: &Member, id: &str, network: &str) -> Result<Connect, String> {
    let request = NetworkConnectRequest {
        container: id.to_string(),
        endpoint_config: Some(EndpointSettings {
            aliases: Some(vec![m.alias.clone()]),
            ..Default::default()
        }),
    };
    match tokio::time::timeout(CALL_TIMEOUT, docker.connect_network(network, request)).await {
        Err(_) => Err(format!("Docker did not answer within {CALL_TIMEOUT:?}")),
        Ok(Ok(())) => Ok(Connect::Connected),
        Ok(Err(DockerError::DockerResponseServerError {
            status_code,
            message,
        })) => connect_refusal(status_code, &message),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

pub struct Keeper {
    pub docker_host: Option<String>,
    /// The stack's shared agents network (AGENTS_NETWORK): agent networks are named after it.
    pub stack: String,
    pub members: Vec<Member>,
    /// How often networks that failed are tried again (and Docker is pinged).
    pub retry_every: Duration,
    /// The keeper's own state, for the API.
    pub report: Publisher<MembersState>,
    pub counters: Arc<Counters>,
    /// Discovery's view in; the gated view out, to the reconciler.
    pub discovered: watch::Receiver<AgentsView>,
    pub tx: watch::Sender<AgentsView>,
    pub joins: Joins,
    /// Discovery's view as last admitted (its agents' networks looked at).
    pub admitted: AgentsView,
    /// Members found missing, logged once (at debug) until they are seen again.
    pub missing: HashSet<String>,
    /// When this session's join of every network began (unix seconds): member starts before
    /// it are done.
    pub listed_at: f64,
    /// A join of every network failed: the timer tries it again.
    pub join_all_due: bool,
    /// Asks the reconciler for a sync: after a member's rejoin, a gateway that came back without
    /// its configuration (DB-less, or a new database) gets it now, not at the next interval.
    pub resync: mpsc::Sender<SyncRequest>,
    /// MEMBERS_READY_DIR: where a member on every agent network is told so (a file named after
    /// it, holding its container id), for its entrypoint to wait on.
    pub ready_dir: Option<std::path::PathBuf>,
}

/// A running member: the member, its container id, and the networks it is on.
type Running = Vec<(Member, String, HashSet<String>)>;

/// What the keeper is wired to: discovery's view in, the gated view out, the reconciler's sync
/// requests.
pub struct Wiring {
    pub discovered: watch::Receiver<AgentsView>,
    pub tx: watch::Sender<AgentsView>,
    pub resync: mpsc::Sender<SyncRequest>,
}

impl Keeper {
    pub fn new(
        docker_host: Option<String>,
        stack: String,
        members: Vec<Member>,
        retry_every: Duration,
        (report, counters): (Publisher<MembersState>, Arc<Counters>),
        wiring: Wiring,
    ) -> Keeper {
        let Wiring {
            discovered,
            tx,
            resync,
        } = wiring;
        Keeper {
            docker_host,
            stack,
            members,
            retry_every,
            report,
            counters,
            discovered,
            tx,
            joins: Joins::default(),
            admitted: AgentsView::default(),
            missing: HashSet::new(),
            listed_at: 0.0,
            join_all_due: false,
            resync,
            ready_dir: None,
        }
    }

    /// Run forever (until the task is dropped): a session per Docker connection, reconnecting
    /// with backoff, and discovery's view passed on meanwhile.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            let why = self.session(&mut backoff).await;
            self.joins.listed = false;
            self.publish();
            let d = backoff.next_delay();
            tracing::warn!("agent network members: {why}; reconnecting in {d:?}");
            let until = tokio::time::Instant::now() + d;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    r = self.discovered.changed() => match r {
                        Ok(()) => self.take_view(),
                        Err(_) => { tokio::time::sleep_until(until).await; break }
                    },
                }
                self.publish();
            }
        }
    }

    async fn session(&mut self, backoff: &mut Backoff) -> String {
        let docker = match crate::discovery::connect(self.docker_host.as_deref()).await {
            Ok(d) => d,
            Err(e) => return e,
        };
        let mut events = docker.events(Some(EventsOptions {
            since: Some((now_unix() as i64 - 2).to_string()),
            until: None,
            filters: Some(HashMap::from([
                ("type".into(), vec!["container".into(), "network".into()]),
                (
                    "event".into(),
                    vec!["start".into(), "create".into(), "destroy".into()],
                ),
            ])),
        }));
        self.listed_at = now_unix();
        if let Err(e) = self.join_all(&docker).await {
            return e;
        }
        self.joins.listed = true;
        self.take_view();
        self.admit(&docker).await;
        backoff.reset();
        let mut tick = tokio::time::interval(self.retry_every);
        tick.tick().await;
        let mut discovery_open = true;
        loop {
            let changed = tokio::select! {
                r = self.discovered.changed(), if discovery_open => match r {
                    Ok(()) => { self.take_view(); self.admit(&docker).await; true }
                    Err(_) => { discovery_open = false; false }
                },
                ev = events.next() => match ev {
                    Some(Ok(e)) => self.on_event(&docker, e).await,
                    Some(Err(e)) => return format!("the Docker event stream failed: {e}"),
                    None => return "the Docker event stream ended".into(),
                },
                _ = tick.tick() => {
                    if !matches!(tokio::time::timeout(Duration::from_secs(5), docker.ping()).await, Ok(Ok(_))) {
                        return "the Docker daemon stopped answering pings".into();
                    }
                    self.retry(&docker).await;
                    true
                }
            };
            if changed {
                self.publish();
            }
        }
    }

    /// On the timer: the networks that failed, and every network if a rejoin could not list
    /// them.
    async fn retry(&mut self, docker: &Docker) {
        if self.join_all_due {
            match self.join_all(docker).await {
                Ok(()) => self.join_all_due = false,
                Err(e) => tracing::warn!(
                    "agent network members: {e}; tried again in {:?}",
                    self.retry_every
                ),
            }
        }
        let failed: Vec<String> = self.joins.failed.keys().cloned().collect();
        self.ensure(docker, &failed).await;
    }

    /// Take discovery's newest view as the one to admit.
    fn take_view(&mut self) {
        self.admitted = self.discovered.borrow_and_update().clone();
    }

    /// Pass the admitted view on, gated; and report the networks that failed.
    fn publish(&self) {
        let out = gate(&self.admitted, &self.stack, &self.joins, &self.members);
        self.tx.send_if_modified(|v| {
            let changed = *v != out;
            *v = out;
            changed
        });
        let errors = self.joins.failed.clone();
        self.report.update(|s| s.errors = errors);
    }

    /// Join the members to the own networks of the admitted agents that they have not joined
    /// (nor failed to join: those wait for the timer).
    async fn admit(&mut self, docker: &Docker) {
        let pending: BTreeSet<String> = self
            .admitted
            .agents
            .values()
            .filter(|a| agent_of_network(&self.stack, &a.network).is_some())
            .map(|a| a.network.clone())
            .filter(|n| !self.joins.joined.contains(n) && !self.joins.failed.contains_key(n))
            .collect();
        if !pending.is_empty() {
            self.ensure(docker, &pending.into_iter().collect::<Vec<_>>())
                .await;
        }
    }

    /// At start and after each reconnect: every running member onto every agent network.
    async fn join_all(&mut self, docker: &Docker) -> Result<(), String> {
        let t0 = Instant::now();
        let networks = self.agent_networks(docker).await?;
        let keep: HashSet<&String> = networks.iter().collect();
        self.joins.joined.retain(|n| keep.contains(n));
        self.joins.failed.retain(|n, _| keep.contains(n));
        let (connected, running) = self.join(docker, &networks).await;
        tracing::info!(
            networks = networks.len(),
            connected,
            ms = t0.elapsed().as_millis() as u64,
            "agent network members joined to every agent network"
        );
        for (m, id) in &running {
            self.mark_ready(m, id);
        }
        Ok(())
    }

    /// Tell member `m` (container `id`) that it is on every agent network: `{dir}/{container}`
    /// holds its id, written whole (a temporary file renamed).
    fn mark_ready(&self, m: &Member, id: &str) {
        let Some(dir) = &self.ready_dir else { return };
        let file = dir.join(&m.container);
        let tmp = dir.join(format!(".{}.tmp", m.container));
        let written =
            std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            tracing::warn!(member = %m, "cannot write {}: {e}; the member's entrypoint waits for it (give MEMBERS_READY_DIR a folder the sidecar can write)", file.display());
        }
    }

    /// The own networks of this stack's agents, by their label (and name).
    async fn agent_networks(&self, docker: &Docker) -> Result<Vec<String>, String> {
        let filters =
            HashMap::from([("label".to_string(), vec![labels::AGENT_NETWORK.to_string()])]);
        let options = ListNetworksOptions {
            filters: Some(filters),
        };
        let list = tokio::time::timeout(CALL_TIMEOUT, docker.list_networks(Some(options)))
            .await
            .map_err(|_| "listing the agent networks timed out".to_string())?
            .map_err(|e| format!("cannot list the agent networks: {e}"))?;
        Ok(list
            .into_iter()
            .filter_map(|n| {
                let name = n.name?;
                is_agent_network(&self.stack, &name, &n.labels.unwrap_or_default()).then_some(name)
            })
            .collect())
    }

    /// Join `networks` once each is confirmed an agent network (inspected: its label). Each
    /// is one an agent is on, or one that failed: one that is not labelled is reported.
    async fn ensure(&mut self, docker: &Docker, networks: &[String]) {
        let mut confirmed = Vec::new();
        for name in networks {
            match self.confirm(docker, name).await {
                Ok(Some(true)) => confirmed.push(name.clone()),
                Ok(Some(false)) => {
                    let agent = agent_of_network(&self.stack, name).unwrap_or_default();
                    self.fail(name, format!(
                        "network {name} lacks the label {}={agent}, so it is not the agent's own network as the build agent makes it and no member joins it; remove it (docker network rm {name}) and deploy the agent again",
                        labels::AGENT_NETWORK
                    ));
                }
                Ok(None) => self.forget(name),
                Err(e) => self.fail(name, e),
            }
        }
        if !confirmed.is_empty() {
            self.join(docker, &confirmed).await;
        }
    }

    /// Is network `name` an agent network of this stack (its label)? `None`: it is gone.
    async fn confirm(&self, docker: &Docker, name: &str) -> Result<Option<bool>, String> {
        match tokio::time::timeout(CALL_TIMEOUT, docker.inspect_network(name, None)).await {
            Ok(Ok(n)) => {
                let net_labels = n.labels.unwrap_or_default();
                Ok(Some(is_agent_network(&self.stack, name, &net_labels)))
            }
            Ok(Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            })) => Ok(None),
            Ok(Err(e)) => Err(format!("cannot inspect network {name}: {e}")),
            Err(_) => Err(format!("inspecting network {name} timed out")),
        }
    }

    fn forget(&mut self, network: &str) {
        self.joins.joined.remove(network);
        self.joins.failed.remove(network);
    }

    /// Network `network` could not be joined: logged (once while the reason stays the same),
    /// reported, and tried again on the timer.
    fn fail(&mut self, network: &str, why: String) {
        if self.joins.failed.get(network) != Some(&why) {
            tracing::warn!(
                "agent network members: {why}; tried again every {:?}",
                self.retry_every
            );
        }
        self.joins.failed.insert(network.to_string(), why);
    }

    /// Connect every running member to each of `networks` it is not on, a few at a time.
    /// Returns how many connects were made, and the members found running (with their ids).
    async fn join(
        &mut self,
        docker: &Docker,
        networks: &[String],
    ) -> (usize, Vec<(Member, String)>) {
        let running = match self.running_members(docker).await {
            Ok(r) => r,
            Err(e) => {
                for n in networks {
                    self.fail(n, e.clone());
                }
                return (0, Vec::new());
            }
        };
        let ids: Vec<(Member, String)> = running
            .iter()
            .map(|(m, id, _)| (m.clone(), id.clone()))
            .collect();
        let pairs: Vec<(Member, String, String)> = networks
            .iter()
            .flat_map(|n| {
                running
                    .iter()
                    .filter(|(_, _, on)| !on.contains(n))
                    .map(move |(m, id, _)| (m.clone(), id.clone(), n.clone()))
            })
            .collect();
        let results: Vec<(Member, String, Result<Connect, String>)> =
            futures_util::stream::iter(pairs)
                .map(|(m, id, n)| {
                    let docker = docker.clone();
                    async move {
                        let r = connect(&docker, &m, &id, &n).await;
                        (m, n, r)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        let mut gone: HashSet<String> = HashSet::new();
        let mut connected = 0;
        for (m, n, r) in results {
            match r {
                Ok(Connect::Connected) => connected += 1,
                Ok(Connect::Already | Connect::MemberGone) => {}
                Ok(Connect::NetworkGone) => drop(gone.insert(n)),
                Err(e) => {
                    drop(errors.insert(n.clone(), format!("{m} could not join network {n}: {e}")))
                }
            }
        }
        self.record(networks, connected, errors, gone);
        (connected, ids)
    }

    /// After a join: which networks are joined, failed or gone; the counters.
    fn record(
        &mut self,
        networks: &[String],
        connected: usize,
        mut errors: BTreeMap<String, String>,
        gone: HashSet<String>,
    ) {
        let c = &self.counters;
        c.member_connects
            .fetch_add(connected as u64, std::sync::atomic::Ordering::Relaxed);
        for n in networks {
            if gone.contains(n) {
                self.forget(n);
            } else if let Some(e) = errors.remove(n) {
                // a network joined before stays joined: its agents keep their routes (the
                // member is back on it at the next try), as a failed rejoin must not unroute
                Counters::inc(&self.counters.member_connect_failures);
                self.fail(n, format!("{e}; check the member with docker inspect"));
            } else {
                self.joins.failed.remove(n);
                self.joins.joined.insert(n.clone());
            }
        }
    }

    /// The members that exist and run, each with the networks it is on. A missing member is
    /// skipped (Phoenix often does not run), logged once at debug.
    async fn running_members(&mut self, docker: &Docker) -> Result<Running, String> {
        let mut running = Vec::new();
        for m in &self.members {
            let r =
                tokio::time::timeout(CALL_TIMEOUT, docker.inspect_container(&m.container, None))
                    .await;
            match r {
                // Docker also finds a container by a prefix of its id: only the exact name counts
                Ok(Ok(c)) if c.name.as_deref() == Some(&format!("/{}", m.container)) => {
                    self.missing.remove(&m.container);
                    let state = c.state.as_ref();
                    if state.and_then(|s| s.running) != Some(true) {
                        continue;
                    }
                    let on = c
                        .network_settings
                        .and_then(|n| n.networks)
                        .unwrap_or_default();
                    let id = c.id.unwrap_or_default();
                    running.push((m.clone(), id, on.into_keys().collect()));
                }
                Ok(Ok(_))
                | Ok(Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                })) => {
                    if self.missing.insert(m.container.clone()) {
                        tracing::debug!(member = %m, "agent network member does not exist; skipped");
                    }
                }
                Ok(Err(e)) => return Err(format!("cannot inspect member {m}: {e}")),
                Err(_) => return Err(format!("inspecting member {m} timed out")),
            }
        }
        Ok(running)
    }

    /// A member started: rejoin it (and any member missing) to every agent network. An agent
    /// network created: join the members now. One destroyed: forget it. Whether the joins
    /// changed.
    async fn on_event(&mut self, docker: &Docker, e: EventMessage) -> bool {
        let attrs = e.actor.as_ref().and_then(|a| a.attributes.as_ref());
        let name = attrs
            .and_then(|a| a.get("name"))
            .cloned()
            .unwrap_or_default();
        let when = e.time_nano.map(|n| n as f64 / 1e9);
        match (e.typ, e.action.as_deref().unwrap_or_default()) {
            (Some(EventMessageTypeEnum::CONTAINER), "start") => {
                let Some(m) = self.members.iter().find(|m| m.container == name).cloned() else {
                    return false;
                };
                // replayed from before this session's join of every network: done already
                if when.is_some_and(|t| t < self.listed_at) {
                    return false;
                }
                self.rejoin(docker, &m, when).await;
            }
            (Some(EventMessageTypeEnum::NETWORK), "create")
                if agent_of_network(&self.stack, &name).is_some() =>
            {
                self.forget(&name);
                match self.confirm(docker, &name).await {
                    Ok(Some(true)) => drop(self.join(docker, &[name]).await),
                    Ok(_) => {
                        tracing::debug!(network = %name, "not labelled as an agent network; no member joins it")
                    }
                    Err(e) => self.fail(&name, e),
                }
            }
            (Some(EventMessageTypeEnum::NETWORK), "destroy") => self.forget(&name),
            _ => return false,
        }
        true
    }

    /// Rejoin member `m`, started at `since` (unix seconds, Docker's clock), to every agent
    /// network; log and report how long the agents' networks were without it.
    async fn rejoin(&mut self, docker: &Docker, m: &Member, since: Option<f64>) {
        let t0 = Instant::now();
        let networks = match self.agent_networks(docker).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(member = %m, "cannot rejoin the started member to the agent networks: {e}; tried again in {:?}", self.retry_every);
                self.join_all_due = true;
                return;
            }
        };
        let (connected, running) = self.join(docker, &networks).await;
        for (r, id) in running.iter().filter(|(r, _)| r == m) {
            self.mark_ready(r, id);
        }
        let local = t0.elapsed().as_secs_f64();
        let secs = since.map_or(local, |s| (now_unix() - s).max(local));
        let ms = (secs * 1000.0).round() as u64;
        tracing::info!(
            member = %m,
            networks = networks.len(),
            connected,
            ms,
            "member started: rejoined to {} agent networks in {ms} ms",
            networks.len()
        );
        let rejoin = Rejoin {
            alias: m.alias.clone(),
            networks: networks.len(),
            connected,
            ms,
            at_unix: now_unix(),
        };
        let container = m.container.clone();
        self.report
            .update(|s| drop(s.rejoins.insert(container, rejoin)));
        // nobody waits for the outcome; a full queue means a sync is coming anyway
        let _ = self.resync.try_send(oneshot::channel().0);
    }
}
