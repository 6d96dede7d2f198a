//! The reconcile loop: every trigger (Docker change, static file change, POST /sync, the periodic
//! resync, a retry after failure) runs the same idempotent sync: read → desired → diff → ordered
//! writes. An isolated change is applied at once; a burst is coalesced (at most one sync per 250 ms).

use crate::backoff::Backoff;
use crate::desired::{build, Inputs};
use crate::diff::{plan, KongWrite};
use crate::discovery::AgentsView;
use crate::kong::{KongClient, KongError};
use crate::static_routes::StaticConfig;
use crate::status::{format_time, now_unix, Counters, Status};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// The least time between two event-driven syncs: a burst of events is applied together, and
/// a crash-looping container cannot cause more than four syncs a second.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// How often an unreachable Kong is probed (one cheap GET): the sync after its return starts
/// within this much of it, whatever the backoff says.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// The result of one sync, as POST /sync reports it.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub agents: usize,
    pub writes: usize,
    pub error: Option<String>,
    /// The error was Kong not answering (rather than answering with an error).
    pub kong_unreachable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Docker or the static routes changed.
    Event,
    /// The periodic resync, a retry, a warm-up, or POST /sync.
    Timer,
    /// Time to see whether an unreachable Kong answers again.
    Probe,
}

pub type SyncRequest = oneshot::Sender<SyncOutcome>;

pub struct Reconciler {
    pub kong: KongClient,
    pub status: Arc<Status>,
    pub agents: watch::Receiver<AgentsView>,
    pub statics: watch::Receiver<Arc<StaticConfig>>,
    pub sync_requests: mpsc::Receiver<SyncRequest>,
    pub interval: Duration,
    pub owner_tag: String,
    pub concurrency: usize,
    /// How long a second container of an agent runs before it takes the route (update handover).
    pub warmup: Duration,
}

impl Reconciler {
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut retry_at: Option<Instant> = None;
        let mut next_periodic = Instant::now();
        let mut last_run: Option<Instant> = None;
        // set while Kong is unreachable: probe it cheaply and often, sync as soon as it answers
        let mut probe_at: Option<Instant> = None;
        // a source whose sender is gone (its task ended) is no longer waited on; it never stops
        // the reconciler, which keeps the last version it had
        let (mut agents_open, mut statics_open) = (true, true);
        loop {
            let mut waiters: Vec<SyncRequest> = Vec::new();
            let far = Instant::now() + Duration::from_secs(86400);
            let retry = retry_at.unwrap_or(far);
            let probe = probe_at.unwrap_or(far);
            let warmed = {
                let now = now_unix();
                let view = self.agents.borrow();
                crate::desired::next_warmup(view.agents.values(), now, self.warmup.as_secs_f64())
                    .map(|t| Instant::now() + Duration::from_secs_f64((t - now).max(0.0) + 0.05))
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400))
            };
            let trigger = tokio::select! {
                r = self.agents.changed(), if agents_open => {
                    if r.is_err() { agents_open = false; tracing::error!("discovery has stopped; keeping the last agents it saw"); continue }
                    Trigger::Event
                }
                r = self.statics.changed(), if statics_open => {
                    if r.is_err() { statics_open = false; tracing::error!("the static routes watcher has stopped; keeping the last routes"); continue }
                    Trigger::Event
                }
                w = self.sync_requests.recv() => match w { Some(w) => { waiters.push(w); Trigger::Timer } None => return },
                _ = tokio::time::sleep_until(next_periodic) => Trigger::Timer,
                _ = tokio::time::sleep_until(retry) => Trigger::Timer,
                _ = tokio::time::sleep_until(warmed) => Trigger::Timer,
                _ = tokio::time::sleep_until(probe) => Trigger::Probe,
            };
            if trigger == Trigger::Probe {
                if !self.kong.answers().await {
                    probe_at = Some(Instant::now() + PROBE_EVERY);
                    continue;
                }
                tracing::info!("Kong answers again; syncing now");
            }
            // in a burst (a sync ran less than MIN_GAP ago), gather what else arrives until the
            // gap has passed: at most one sync per MIN_GAP, an isolated change at once
            if trigger == Trigger::Event {
                if let Some(t) = last_run.filter(|t| t.elapsed() < MIN_GAP) {
                    let until = t + MIN_GAP;
                    loop {
                        tokio::select! {
                            r = self.agents.changed(), if agents_open => if r.is_err() { agents_open = false },
                            r = self.statics.changed(), if statics_open => if r.is_err() { statics_open = false },
                            Some(w) = self.sync_requests.recv() => waiters.push(w),
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                }
            }
            let outcome = self.sync_once().await;
            last_run = Some(Instant::now());
            next_periodic = Instant::now() + self.interval;
            probe_at = None;
            retry_at = match &outcome.error {
                Some(e) if outcome.kong_unreachable => {
                    tracing::warn!("sync failed: {e}; probing Kong every {PROBE_EVERY:?} and syncing as soon as it answers");
                    probe_at = Some(Instant::now() + PROBE_EVERY);
                    None
                }
                Some(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!("sync failed: {e}; retrying in {d:?}");
                    Some(Instant::now() + d)
                }
                None => {
                    backoff.reset();
                    None
                }
            };
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }

    async fn sync_once(&mut self) -> SyncOutcome {
        let view = self.agents.borrow_and_update().clone();
        let statics = self.statics.borrow_and_update().clone();
        let agents: Vec<_> = view.agents.values().cloned().collect();
        let c = &self.status.counters;
        Counters::inc(&c.syncs);
        let run = SyncRun {
            kong: &self.kong,
            owner_tag: &self.owner_tag,
            warmup: self.warmup,
            concurrency: self.concurrency,
        };
        let result = run.converge(view.complete, &statics, &agents).await;
        let now = now_unix();
        let outcome = match result {
            Ok((writes, desired)) => {
                if let Some(t) = view.last_event_unix {
                    let lag = ((now - t) * 1000.0).max(0.0) as u64;
                    c.event_lag_ms_sum
                        .fetch_add(lag, std::sync::atomic::Ordering::Relaxed);
                    Counters::inc(&c.event_lag_count);
                }
                self.status.update(|s| {
                    s.kong_reachable = true;
                    s.kong_failing = None;
                    s.last_sync = Some(format_time(now));
                    s.last_sync_unix = Some(now);
                    s.last_sync_writes = writes;
                    s.missing_plugins = desired.missing_plugins.clone();
                    s.managed_services = desired.services.keys().cloned().collect();
                    s.sync_error = None;
                });
                SyncOutcome {
                    agents: agents.len(),
                    writes,
                    error: None,
                    kong_unreachable: false,
                }
            }
            Err((e, writes)) => {
                Counters::inc(&c.sync_failures);
                let kong_error = match &e {
                    SyncError::Kong(k) | SyncError::Write(_, k) => k,
                };
                let unreachable = matches!(kong_error, KongError::Unreachable(_));
                self.status.update(|s| {
                    if unreachable {
                        s.kong_reachable = false;
                    }
                    // Kong answering 5xx is not a healthy Kong
                    if let KongError::Status { status, .. } = kong_error {
                        if *status >= 500 {
                            s.kong_failing = Some(kong_error.to_string());
                        }
                    }
                    s.sync_error = Some(e.to_string());
                });
                SyncOutcome {
                    agents: agents.len(),
                    writes,
                    error: Some(e.to_string()),
                    kong_unreachable: unreachable,
                }
            }
        };
        self.status.update(|s| {
            s.agents = agents;
            s.waiting = view.waiting.values().cloned().collect();
            s.malformed = view.malformed.values().cloned().collect();
        });
        outcome
    }
}

/// One sync's work, apart from the loop that decides when to run it (also what the benchmarks run).
pub struct SyncRun<'a> {
    pub kong: &'a KongClient,
    pub owner_tag: &'a str,
    /// How long a second container of an agent runs before it takes the route.
    pub warmup: Duration,
    /// Writes in flight at once (DB mode).
    pub concurrency: usize,
}

impl SyncRun<'_> {
    /// Converge Kong to the desired state of `agents` and `statics`: a diff and ordered writes
    /// (DB mode), or one declarative push (DB-less). `complete`: Docker has been listed
    /// completely since the last connect (else nothing of ours is removed). Returns the writes.
    pub async fn converge(
        &self,
        complete: bool,
        statics: &StaticConfig,
        agents: &[crate::endpoint::AgentEndpoint],
    ) -> Result<(usize, crate::desired::DesiredState), (SyncError, usize)> {
        let node = self
            .kong
            .node()
            .await
            .map_err(|e| (SyncError::Kong(e), 0))?;
        let desired = build(&Inputs {
            now: crate::status::now_unix(),
            warmup: self.warmup.as_secs_f64(),
            agents,
            statics,
            available_plugins: Some(&node.plugins),
            owner_tag: self.owner_tag,
        });
        if node.dbless {
            return self.push_declarative(complete, desired).await;
        }
        let allow_deletes = complete;
        let owned = self
            .kong
            .read_owned(&BTreeSet::new())
            .await
            .map_err(|e| (SyncError::Kong(e), 0))?;
        let mut p = plan(&desired, &owned, allow_deletes);
        let mut touched = p.upstreams_touched();
        if !touched.is_empty() {
            // target writes are planned from what Kong holds now, and change it
            if owned.reused_targets {
                let fresh = self
                    .kong
                    .read_owned(&touched)
                    .await
                    .map_err(|e| (SyncError::Kong(e), 0))?;
                p = plan(&desired, &fresh, allow_deletes);
                touched.extend(p.upstreams_touched());
            }
            self.kong.forget_targets(&touched);
        }
        if !allow_deletes {
            tracing::debug!("not deleting anything: Docker has not been listed completely since the last connect");
        }
        let mut writes = 0;
        let mut failures = Vec::new();
        for phase in p.phases {
            let results: Vec<(KongWrite, Result<(), KongError>)> =
                futures_util::stream::iter(phase)
                    .map(|w| async move {
                        let r = self.kong.apply(&w).await;
                        (w, r)
                    })
                    .buffer_unordered(self.concurrency)
                    .collect()
                    .await;
            for (w, r) in results {
                match r {
                    Ok(()) => {
                        writes += 1;
                        tracing::info!("{}", w.describe());
                    }
                    Err(e) => {
                        tracing::warn!("{} failed: {e}", w.describe());
                        failures.push((w.describe(), e));
                    }
                }
            }
            if failures
                .iter()
                .any(|(_, e)| matches!(e, KongError::Unreachable(_)))
            {
                break; // Kong went away mid-sync: stop, retry with backoff
            }
        }
        match failures.into_iter().next() {
            None => Ok((writes, desired)),
            Some((what, e)) => Err((SyncError::Write(what, e), writes)),
        }
    }

    /// DB-less Kong: read what it holds, put the desired state in place of ours, push it whole.
    /// The push is atomic (no request can see a route before its plugins), and an unchanged
    /// document is a 304 (no write).
    async fn push_declarative(
        &self,
        complete: bool,
        desired: crate::desired::DesiredState,
    ) -> Result<(usize, crate::desired::DesiredState), (SyncError, usize)> {
        let current = self
            .kong
            .read_config()
            .await
            .map_err(|e| (SyncError::Kong(e), 0))?;
        if !complete {
            tracing::debug!("keeping every agent route: Docker has not been listed completely since the last connect");
        }
        let doc = crate::declarative::document(&desired, &current, self.owner_tag, !complete);
        match self
            .kong
            .push_config(&crate::declarative::canonical(&doc))
            .await
        {
            Ok(true) => {
                tracing::info!(
                    services = desired.services.len(),
                    routes = desired.routes.len(),
                    plugins = desired.plugins.len(),
                    "pushed the declarative configuration (DB-less Kong)"
                );
                Ok((1, desired))
            }
            Ok(false) => Ok((0, desired)),
            Err(e) => Err((
                SyncError::Write("push the declarative configuration".into(), e),
                0,
            )),
        }
    }
}

#[derive(Debug)]
pub enum SyncError {
    Kong(KongError),
    Write(String, KongError),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Kong(e) => write!(f, "failed to read Kong state: {e}"),
            SyncError::Write(what, e) => write!(f, "failed to {what}: {e}"),
        }
    }
}

impl std::error::Error for SyncError {}
