//! The reconcile loop: every trigger (Docker change, static file change, POST /sync, the periodic
//! resync, a retry after failure) runs the same idempotent sync: read → desired → diff → ordered
//! writes. An isolated change is applied at once; a burst is coalesced (at most one sync per 250 ms).
//! A Docker or static-file change plans from the snapshot the last sync left (`sync::Snapshot`),
//! so its writes go out without a listing first, and a Docker change plans only the agents it
//! changed; every other trigger reads Kong afresh.

use crate::discovery::AgentsView;
use crate::endpoint::AgentEndpoint;
use crate::kong::{KongClient, KongError};
use crate::plugin_gate::PluginGate;
use crate::schedule::{Due, Ended, Schedule, PROBE_EVERY};
use crate::static_routes::StaticConfig;
use crate::status::{format_time, now_unix, Counters, Publisher, SyncState};
use crate::sync::{Snapshot, Start, SyncError, SyncReport, SyncRun};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// The result of one sync, as POST /sync reports it.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub agents: usize,
    pub writes: usize,
    pub error: Option<String>,
    /// The error was Kong not answering, or answering 5xx (its database down, a proxy in front of
    /// it answering 502): Kong is probed until it answers well, rather than retried with backoff.
    pub kong_down: bool,
}

pub type SyncRequest = oneshot::Sender<SyncOutcome>;

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    /// Kong answers well, and (DB-less) holds what our last sync left.
    Same,
    /// Kong is away or answers badly: probe it.
    Away,
    /// Kong's configuration changed behind us: sync.
    Changed,
}

/// What the last sync left: Kong's snapshot and the inputs it applied, so that the next event's
/// sync plans only the agents that changed since.
struct Left {
    snapshot: Snapshot,
    agents: BTreeMap<String, Arc<AgentEndpoint>>,
    statics: Arc<StaticConfig>,
    complete: bool,
}

impl Left {
    /// How an event's sync starts from it: only the agents whose containers changed, while the
    /// static routes and Docker's completeness are the same; else every agent.
    fn start(self, view: &AgentsView, statics: &Arc<StaticConfig>) -> Start {
        if !Arc::ptr_eq(&self.statics, statics) || self.complete != view.complete {
            return Start::From(self.snapshot);
        }
        Start::Changed(self.snapshot, changed_agents(&self.agents, &view.agents))
    }
}

/// The Kong service names of the agents a container was added to, removed from or changed in,
/// between two views (container id → endpoint; an endpoint discovery did not touch since is the
/// same one, and costs no comparison).
fn changed_agents(
    before: &BTreeMap<String, Arc<AgentEndpoint>>,
    now: &BTreeMap<String, Arc<AgentEndpoint>>,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (id, a) in now {
        match before.get(id) {
            Some(b) if Arc::ptr_eq(b, a) || b == a => {}
            Some(b) => {
                names.insert(b.kong_name.clone());
                names.insert(a.kong_name.clone());
            }
            None => {
                names.insert(a.kong_name.clone());
            }
        }
    }
    for (id, b) in before {
        if !now.contains_key(id) {
            names.insert(b.kong_name.clone());
        }
    }
    names
}

pub struct Reconciler {
    pub kong: KongClient,
    /// The reconciler's own state, for the API.
    pub report: Publisher<SyncState>,
    pub counters: Arc<Counters>,
    pub agents: watch::Receiver<AgentsView>,
    pub statics: watch::Receiver<Arc<StaticConfig>>,
    pub sync_requests: mpsc::Receiver<SyncRequest>,
    pub interval: Duration,
    pub owner_tag: String,
    pub concurrency: usize,
    /// How long a newer generation's container runs before it takes the route (blue/green update).
    pub warmup: Duration,
    /// Under `worker_consistency = eventual`: what waits for its service's plugins to settle.
    pub gate: PluginGate,
}

/// Which sources are still open. A source whose sender is gone (its task ended) is no longer
/// waited on; it never stops the reconciler, which keeps the last version it had.
#[derive(Debug, Clone, Copy)]
struct Sources {
    agents: bool,
    statics: bool,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            agents: true,
            statics: true,
        }
    }
}

impl Reconciler {
    pub async fn run(mut self) {
        let mut schedule = Schedule::new(self.interval);
        // DB-less: the configuration hash Kong showed after our last sync (None: not seen yet)
        let mut hash_after_sync: Option<Option<String>> = None;
        let mut sources = Sources::default();
        let mut left: Option<Left> = None;
        // unix time just before the last sync planned: a warm-up that ended after it may not
        // have been planned for
        let mut planned_since = 0.0;
        loop {
            let mut waiters: Vec<SyncRequest> = Vec::new();
            let (at, due) = schedule.next(self.next_warmup(planned_since));
            let trigger = tokio::select! {
                r = self.agents.changed(), if sources.agents => {
                    if r.is_err() { sources.agents = false; tracing::error!("discovery has stopped; keeping the last agents it saw"); continue }
                    None
                }
                r = self.statics.changed(), if sources.statics => {
                    if r.is_err() { sources.statics = false; tracing::error!("the static routes watcher has stopped; keeping the last routes"); continue }
                    None
                }
                w = self.sync_requests.recv() => match w { Some(w) => { waiters.push(w); Some(Due::Sync) } None => return },
                _ = tokio::time::sleep_until(at) => Some(due),
            };
            match trigger {
                Some(Due::Heartbeat) => {
                    let beat = self.beat(&mut hash_after_sync).await;
                    schedule.beaten(Instant::now(), beat == Beat::Away);
                    if beat != Beat::Changed {
                        continue;
                    }
                }
                Some(Due::Probe) => {
                    if !self.kong.answers_well().await {
                        schedule.still_away(Instant::now());
                        continue;
                    }
                    tracing::info!("Kong answers again; syncing now");
                }
                Some(Due::Sync) => {}
                // an event, in a burst (a sync ran less than MIN_GAP ago): gather what else
                // arrives until the gap has passed — at most one sync per MIN_GAP, an isolated
                // change at once
                None => {
                    if let Some(until) = schedule.gather_until(Instant::now()) {
                        self.gather(until, &mut sources, &mut waiters).await;
                    }
                }
            }
            // an event's sync plans from what the last sync left; every other trigger reads;
            // a warm-up that ended since the last sync changes its agent with no event: plan all
            let event = trigger.is_none() && !self.warmed_since(planned_since);
            // an event's sync from a snapshot (DB mode) that writes nothing costs no request
            let from_snapshot = event && left.is_some();
            planned_since = now_unix();
            let (outcome, recheck, next) = self.sync_once(event, left.take()).await;
            left = next;
            crate::memory::give_back();
            hash_after_sync = None;
            let ended = match (&outcome.error, outcome.kong_down) {
                (None, _) if outcome.writes == 0 && from_snapshot => Ended::Unchanged,
                (None, _) => Ended::Converged,
                (Some(_), true) => Ended::KongDown,
                (Some(_), false) => Ended::Failed,
            };
            let retry = schedule.synced(Instant::now(), ended, recheck);
            if let Some(e) = &outcome.error {
                match retry {
                    None => tracing::warn!("sync failed: {e}; probing Kong every {PROBE_EVERY:?} and syncing as soon as it answers well"),
                    Some(d) => tracing::warn!("sync failed: {e}; retrying in {d:?}"),
                }
            }
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    /// Take in the events and sync requests that arrive until `until`.
    async fn gather(
        &mut self,
        until: Instant,
        sources: &mut Sources,
        waiters: &mut Vec<SyncRequest>,
    ) {
        loop {
            tokio::select! {
                r = self.agents.changed(), if sources.agents => if r.is_err() { sources.agents = false },
                r = self.statics.changed(), if sources.statics => if r.is_err() { sources.statics = false },
                Some(w) = self.sync_requests.recv() => waiters.push(w),
                _ = tokio::time::sleep_until(until) => break,
            }
        }
    }

    /// When a container has warmed up next, after unix time `since` (its agent's targets change
    /// then): at once when that was between the last sync's planning and now.
    fn next_warmup(&self, since: f64) -> Option<Instant> {
        let now = now_unix();
        self.warm_at(since)
            .map(|t| Instant::now() + Duration::from_secs_f64((t - now).max(0.0) + 0.05))
    }

    /// Whether a container's warm-up ended between unix time `since` and now.
    fn warmed_since(&self, since: f64) -> bool {
        self.warm_at(since).is_some_and(|t| t <= now_unix())
    }

    /// The unix time of the first warm-up to end after `since` (`desired::next_warmup`).
    fn warm_at(&self, since: f64) -> Option<f64> {
        let view = self.agents.borrow();
        crate::desired::next_warmup(
            view.agents.values().map(|a| &**a),
            since,
            self.warmup.as_secs_f64(),
        )
    }

    /// One heartbeat: is Kong still the one we configured? `hash_after_sync` is the DB-less
    /// configuration hash seen since our last sync (learned on the first beat after it).
    async fn beat(&self, hash_after_sync: &mut Option<Option<String>>) -> Beat {
        match self.kong.status_hash().await {
            Err(e) => {
                tracing::warn!("Kong does not answer well ({e}); probing it every {PROBE_EVERY:?} and syncing as soon as it does");
                Beat::Away
            }
            Ok(hash) => {
                match hash_after_sync {
                    None => {
                        *hash_after_sync = Some(hash);
                        Beat::Same
                    }
                    Some(seen) if *seen == hash => Beat::Same,
                    Some(_) => {
                        tracing::info!("Kong's configuration changed behind us (restarted empty?); syncing now");
                        Beat::Changed
                    }
                }
            }
        }
    }

    /// One sync from what the last one `left` when an `event` started it, else from a fresh
    /// reading. Its outcome, when to sync again for what it held back, and what it leaves (nothing
    /// after a failure: the next sync reads Kong).
    async fn sync_once(
        &mut self,
        event: bool,
        left: Option<Left>,
    ) -> (SyncOutcome, Option<Instant>, Option<Left>) {
        let view = self.agents.borrow_and_update().clone();
        let statics = self.statics.borrow_and_update().clone();
        if let Some(t) = view.last_event_unix.filter(|_| event) {
            tracing::debug!(
                "an event's sync starts {:.1} ms after the last event",
                (now_unix() - t) * 1000.0
            );
        }
        let start = match left.filter(|_| event) {
            Some(l) => l.start(&view, &statics),
            None => Start::Fresh,
        };
        let agents: Vec<_> = view.agents.values().cloned().collect();
        Counters::inc(&self.counters.syncs);
        let run = SyncRun {
            kong: &self.kong,
            owner_tag: &self.owner_tag,
            warmup: self.warmup,
            concurrency: self.concurrency,
            gate: &self.gate,
        };
        let result = run.converge(view.complete, &statics, &agents, start).await;
        let recheck = result.as_ref().ok().and_then(|c| c.recheck_at);
        let mut snapshot = None;
        let outcome = match result {
            Ok(mut report) => {
                snapshot = report.snapshot.take();
                self.converged(&report, view.last_event_unix);
                SyncOutcome {
                    agents: agents.len(),
                    writes: report.writes,
                    error: None,
                    kong_down: false,
                }
            }
            Err(e) => SyncOutcome {
                agents: agents.len(),
                writes: e.writes(),
                kong_down: self.failed(&e),
                error: Some(e.to_string()),
            },
        };
        self.report.update(|s| {
            s.agents = agents;
            s.waiting = view.waiting.values().cloned().collect();
            s.malformed = view.malformed.values().cloned().collect();
        });
        let leaves = snapshot.map(|snapshot| Left {
            snapshot,
            agents: view.agents,
            statics,
            complete: view.complete,
        });
        (outcome, recheck, leaves)
    }

    /// Report a converged sync; count the lag from the event it applied.
    fn converged(&self, c: &SyncReport, last_event_unix: Option<f64>) {
        let now = now_unix();
        if let Some(t) = last_event_unix {
            let lag = ((now - t) * 1000.0).max(0.0) as u64;
            let n = &self.counters;
            n.event_lag_ms_sum
                .fetch_add(lag, std::sync::atomic::Ordering::Relaxed);
            Counters::inc(&n.event_lag_count);
        }
        self.report.update(|s| {
            s.kong_reachable = true;
            s.kong_failing = None;
            s.last_sync = Some(format_time(now));
            s.last_sync_unix = Some(now);
            s.last_sync_writes = c.writes;
            if let Some(d) = &c.desired {
                s.missing_plugins = d.missing_plugins.clone();
                s.managed_services = d.services.keys().cloned().collect();
            }
            s.error = None;
        });
    }

    /// Report a failed sync: was it Kong not answering, or answering 5xx?
    fn failed(&self, e: &SyncError) -> bool {
        Counters::inc(&self.counters.sync_failures);
        let kong_error = e.kong();
        let unreachable = matches!(kong_error, KongError::Unreachable(_));
        // Kong answering 5xx is not a healthy Kong
        let failing = matches!(kong_error, KongError::Status { status, .. } if *status >= 500);
        self.report.update(|s| {
            if unreachable {
                s.kong_reachable = false;
            }
            if failing {
                s.kong_failing = Some(kong_error.to_string());
            }
            s.error = Some(e.to_string());
        });
        unreachable || failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(of: &[(&str, &str, &str)]) -> BTreeMap<String, Arc<AgentEndpoint>> {
        of.iter()
            .map(|(id, name, ip)| {
                let a = AgentEndpoint::labelled(name, id, ip, "net");
                (id.to_string(), Arc::new(a))
            })
            .collect()
    }

    #[test]
    fn the_agents_an_event_changed_are_those_with_a_container_added_removed_or_changed() {
        let before = view(&[
            ("c1", "a", "10.0.0.2"),
            ("c2", "b", "10.0.0.3"),
            ("c3", "c", "10.0.0.4"),
        ]);
        assert!(changed_agents(&before, &before).is_empty());
        // b's container has a new address, d is new, c is gone, a is as it was
        let now = view(&[
            ("c1", "a", "10.0.0.2"),
            ("c2", "b", "10.0.0.9"),
            ("c4", "d", "10.0.0.5"),
        ]);
        let names: Vec<String> = changed_agents(&before, &now).into_iter().collect();
        assert_eq!(names, ["agent-b", "agent-c", "agent-d"]);
        // a container that now claims another agent's name changes both
        let moved = view(&[
            ("c1", "e", "10.0.0.2"),
            ("c2", "b", "10.0.0.3"),
            ("c3", "c", "10.0.0.4"),
        ]);
        let names: Vec<String> = changed_agents(&before, &moved).into_iter().collect();
        assert_eq!(names, ["agent-a", "agent-e"]);
    }
}
