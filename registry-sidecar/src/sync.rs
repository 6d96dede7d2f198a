//! One sync, apart from the loop that decides when to run it: what the sidecar wants, the plan
//! against what Kong holds, and the ordered writes (DB mode) or one declarative push (DB-less).
//! It speaks to Kong through `KongApi`, which `KongClient` implements; the reconciler, the
//! `check` command and the benchmarks run it.

use crate::desired::{build, DesiredState, Inputs};
use crate::diff::{plan, KongWrite, OwnedState, Plan};
use crate::endpoint::AgentEndpoint;
use crate::kong::{KongClient, KongError, Node};
use crate::model::TargetRow;
use crate::plugin_gate::PluginGate;
use crate::static_routes::StaticConfig;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a sync asks of Kong's Admin API.
pub trait KongApi: Sync {
    /// The node's plugins, whether it runs without a database, when its proxy sees a write.
    fn node(&self) -> impl Future<Output = Result<Node, KongError>> + Send;
    /// What Kong holds of ours (DB mode); the targets of `refresh` (upstream names) listed afresh.
    fn read_owned(
        &self,
        refresh: &BTreeSet<String>,
    ) -> impl Future<Output = Result<OwnedState, KongError>> + Send;
    /// Our writes changed these upstreams: list their targets afresh next time.
    fn forget_targets(&self, upstreams: &BTreeSet<String>);
    /// Every target Kong holds on the upstream of this id, listed afresh.
    fn targets_of(
        &self,
        upstream_id: &str,
    ) -> impl Future<Output = Result<Vec<TargetRow>, KongError>> + Send;
    /// One write; the row Kong answered with (None for a delete).
    fn apply(&self, w: &KongWrite)
        -> impl Future<Output = Result<Option<Value>, KongError>> + Send;
    /// DB-less: the configuration Kong holds, parsed.
    fn read_config(&self) -> impl Future<Output = Result<Value, KongError>> + Send;
    /// DB-less: push the whole configuration; false when Kong already held exactly this.
    fn push_config(&self, raw: &str) -> impl Future<Output = Result<bool, KongError>> + Send;
}

impl KongApi for KongClient {
    fn node(&self) -> impl Future<Output = Result<Node, KongError>> + Send {
        KongClient::node(self)
    }
    fn read_owned(
        &self,
        refresh: &BTreeSet<String>,
    ) -> impl Future<Output = Result<OwnedState, KongError>> + Send {
        KongClient::read_owned(self, refresh)
    }
    fn forget_targets(&self, upstreams: &BTreeSet<String>) {
        KongClient::forget_targets(self, upstreams)
    }
    fn targets_of(
        &self,
        upstream_id: &str,
    ) -> impl Future<Output = Result<Vec<TargetRow>, KongError>> + Send {
        KongClient::targets_of(self, upstream_id)
    }
    fn apply(
        &self,
        w: &KongWrite,
    ) -> impl Future<Output = Result<Option<Value>, KongError>> + Send {
        KongClient::apply(self, w)
    }
    fn read_config(&self) -> impl Future<Output = Result<Value, KongError>> + Send {
        KongClient::read_config(self)
    }
    fn push_config(&self, raw: &str) -> impl Future<Output = Result<bool, KongError>> + Send {
        KongClient::push_config(self, raw)
    }
}

/// What one sync did.
pub struct SyncReport {
    pub writes: usize,
    /// What the sidecar wants of every agent, for the report; None after an event's sync that
    /// wrote nothing, which changed nothing the last report showed (building it costs as much as
    /// every agent's plan).
    pub desired: Option<DesiredState>,
    /// Writes were held back until their service's plugins settle: sync again then.
    pub recheck_at: Option<Instant>,
    /// What Kong held of ours when it ended (DB mode), for the next event's plan.
    pub snapshot: Option<Snapshot>,
}

/// What Kong held of ours at the end of a sync: the reading the sync planned from when it wrote
/// nothing, else one taken after its writes (off the path of the change it applied), and the node
/// it read. The next event's sync plans from it and goes straight to its writes, with no request
/// before them: not even `GET /`, which Kong 3.4 answers by reading every plugin row from its
/// database (`kong/api/routes/kong.lua`, `kong.db.plugins:each()`), and whose facts (the plugins
/// the node can run, its database mode, its timing) change only when Kong restarts or reloads.
/// It is only ever a reading of Kong, never a guess: a write
/// that finds Kong changed behind it fails (409, 404), the sync is retried from a fresh reading,
/// and every other trigger (the periodic resync, a retry, `POST /sync`, Kong's return) reads
/// afresh. A plan that would delete an upstream first lists that upstream's targets afresh: the
/// snapshot may not show a target someone else put on it since, which the delete would take
/// with it; if one is there, the plan is made from a fresh reading (which keeps the upstream).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub owned: OwnedState,
    pub node: Node,
}

/// Where a sync starts: a fresh reading of Kong, or the last sync's snapshot.
#[derive(Debug, Clone)]
pub enum Start {
    Fresh,
    From(Snapshot),
    /// Only these agents (by Kong service name) changed since the snapshot: plan them and the
    /// static routes alone, against the snapshot's rows of theirs (`OwnedState::only_services`):
    /// the cost of an event's plan is its own agents', not every agent's.
    Changed(Snapshot, BTreeSet<String>),
}

/// One sync's settings and the Kong it speaks to.
pub struct SyncRun<'a, K: KongApi = KongClient> {
    pub kong: &'a K,
    pub owner_tag: &'a str,
    /// How long a second container of an agent runs before it takes the route.
    pub warmup: Duration,
    /// Writes in flight at once (DB mode).
    pub concurrency: usize,
    pub gate: &'a PluginGate,
}

impl<K: KongApi> SyncRun<'_, K> {
    /// What the sidecar wants of `node` for `agents` and `statics`, now.
    pub fn wanted(
        &self,
        node: &Node,
        statics: &StaticConfig,
        agents: &[Arc<AgentEndpoint>],
    ) -> DesiredState {
        build(&Inputs {
            now: crate::status::now_unix(),
            warmup: self.warmup.as_secs_f64(),
            agents,
            statics,
            available_plugins: Some(&node.plugins),
            owner_tag: self.owner_tag,
        })
    }

    /// The writes that take what Kong holds of ours (DB mode) to `desired`, and the reading they
    /// were planned from. Target writes are planned from a fresh listing of the upstreams they
    /// touch, which are then listed afresh next time too (the writes change them).
    pub async fn plan_writes(
        &self,
        desired: &DesiredState,
        allow_deletes: bool,
    ) -> Result<(Plan, OwnedState), KongError> {
        let mut owned = self.kong.read_owned(&BTreeSet::new()).await?;
        let mut p = plan(desired, &owned, allow_deletes);
        let mut touched = p.upstreams_touched();
        if !touched.is_empty() {
            if owned.reused_targets {
                owned = self.kong.read_owned(&touched).await?;
                p = plan(desired, &owned, allow_deletes);
                touched.extend(p.upstreams_touched());
            }
            self.kong.forget_targets(&touched);
        }
        Ok((p, owned))
    }

    /// Whether each upstream plan `p` deletes holds, listed afresh, only targets that `owned`
    /// (the snapshot it was planned from) holds on it: Kong deletes an upstream's targets with it,
    /// and one put there since the snapshot is someone else's to keep.
    async fn deletes_known_targets(&self, p: &Plan, owned: &OwnedState) -> Result<bool, SyncError> {
        for w in p.phases.iter().flatten() {
            let KongWrite::DeleteUpstream { id, .. } = w else {
                continue;
            };
            let known: BTreeSet<&str> = (owned.targets.iter())
                .chain(&owned.foreign_targets)
                .filter(|t| t.upstream.as_ref().is_some_and(|l| l.0 == *id))
                .filter_map(|t| t.id())
                .collect();
            let now = self.kong.targets_of(id).await.map_err(SyncError::Kong)?;
            if now
                .iter()
                .any(|t| t.id().is_none_or(|i| !known.contains(i)))
            {
                tracing::debug!("a target the snapshot does not show is on the upstream {id}: planning from a fresh reading");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The snapshot a sync leaves: the reading it planned from, with what Kong answered to each
    /// of its writes (`OwnedState::written`), and the node it planned for; if an answer did not
    /// tell, Kong and its node read again (none if that read fails: the next sync reads).
    async fn snapshot(
        &self,
        mut read: OwnedState,
        written: Vec<(KongWrite, Option<Value>)>,
        node: Node,
    ) -> Option<Snapshot> {
        let told = written
            .iter()
            .all(|(w, row)| read.written(w, row.as_ref(), self.owner_tag));
        if told {
            return Some(Snapshot { owned: read, node });
        }
        let all = BTreeSet::new();
        match tokio::try_join!(self.kong.read_owned(&all), self.kong.node()) {
            Ok((owned, node)) => Some(Snapshot { owned, node }),
            Err(e) => {
                tracing::debug!("no snapshot after the writes ({e}): the next sync reads Kong");
                None
            }
        }
    }

    /// Converge Kong to the desired state of `agents` and `statics`: a diff and ordered writes
    /// (DB mode), or one declarative push (DB-less). `complete`: Docker has been listed
    /// completely since the last connect (else nothing of ours is removed). `start`: read Kong
    /// afresh, or plan from the last sync's snapshot.
    pub async fn converge(
        &self,
        complete: bool,
        statics: &StaticConfig,
        agents: &[Arc<AgentEndpoint>],
        start: Start,
    ) -> Result<SyncReport, SyncError> {
        let began = Instant::now();
        // a snapshot (DB mode only) holds the node it was read from
        let (node, snapshot, only) = match start {
            Start::Fresh => (self.kong.node().await.map_err(SyncError::Kong)?, None, None),
            Start::From(s) => (s.node.clone(), Some(s), None),
            Start::Changed(s, names) => (s.node.clone(), Some(s), Some(names)),
        };
        if node.dbless {
            let desired = self.wanted(&node, statics, agents);
            return self.push_declarative(complete, desired).await;
        }
        let allow_deletes = complete;
        let desired = match &only {
            Some(names) => {
                let changed: Vec<Arc<AgentEndpoint>> = agents
                    .iter()
                    .filter(|a| names.contains(&a.kong_name))
                    .cloned()
                    .collect();
                self.wanted(&node, statics, &changed)
            }
            None => self.wanted(&node, statics, agents),
        };
        let from_snapshot = snapshot.map(|s| {
            let p = match &only {
                Some(names) => {
                    // the changed agents (those gone included) and the static routes
                    let planned: BTreeSet<&str> = (names.iter())
                        .chain(desired.services.keys())
                        .chain(desired.upstreams.keys())
                        .map(String::as_str)
                        .collect();
                    plan(&desired, &s.owned.only_services(&planned), allow_deletes)
                }
                None => plan(&desired, &s.owned, allow_deletes),
            };
            (p, s.owned)
        });
        let from_snapshot = match from_snapshot {
            Some((p, owned)) if self.deletes_known_targets(&p, &owned).await? => Some((p, owned)),
            _ => None,
        };
        let snapshot_used = from_snapshot.is_some();
        let partial = only.is_some() && snapshot_used;
        let (mut p, read, desired) = match from_snapshot {
            Some((p, owned)) => {
                self.kong.forget_targets(&p.upstreams_touched());
                (p, owned, desired)
            }
            None => {
                // every agent, from a fresh reading
                let desired = match only {
                    Some(_) => self.wanted(&node, statics, agents),
                    None => desired,
                };
                let (p, owned) = self
                    .plan_writes(&desired, allow_deletes)
                    .await
                    .map_err(SyncError::Kong)?;
                (p, owned, desired)
            }
        };
        let held = self
            .gate
            .hold(&mut p, &desired, node.propagation, Instant::now());
        if !allow_deletes {
            tracing::debug!("not deleting anything: Docker has not been listed completely since the last connect");
        }
        let planned = began.elapsed();
        let (written, first_failure) = self.write(p).await;
        let writes = written.len();
        let writes_done = began.elapsed();
        match first_failure {
            None => {
                let report = SyncReport {
                    writes,
                    recheck_at: self.gate.recheck_at(&held, node.propagation),
                    snapshot: self.snapshot(read, written, node.clone()).await,
                    // what the report shows is every agent's, built once the writes are out
                    desired: match (partial, writes) {
                        (false, _) => Some(desired),
                        (true, 0) => None,
                        (true, _) => Some(self.wanted(&node, statics, agents)),
                    },
                };
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                tracing::debug!(
                    "synced {} agents ({}): planned by {:.1} ms, {writes} writes done by {:.1} ms, ended at {:.1} ms",
                    agents.len(),
                    match (snapshot_used, partial) {
                        (_, true) => "those an event changed, from the last snapshot",
                        (true, false) => "from the last snapshot",
                        (false, false) => "from a fresh reading",
                    },
                    ms(planned),
                    ms(writes_done),
                    ms(began.elapsed())
                );
                Ok(report)
            }
            Some((what, e)) => Err(SyncError::Write {
                what,
                error: e,
                writes,
            }),
        }
    }

    /// Apply a plan phase by phase, each phase's writes `concurrency` at a time; stop after a
    /// phase in which Kong went away. The writes done with Kong's answer to each, in order, and
    /// the first that failed.
    async fn write(
        &self,
        p: Plan,
    ) -> (Vec<(KongWrite, Option<Value>)>, Option<(String, KongError)>) {
        let mut written = Vec::new();
        let mut failures = Vec::new();
        for phase in p.phases {
            let results: Vec<(KongWrite, Result<Option<Value>, KongError>)> =
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
                    Ok(row) => {
                        self.gate.written(&w, Instant::now());
                        tracing::info!("{}", w.describe());
                        written.push((w, row));
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
        (written, failures.into_iter().next())
    }

    /// DB-less Kong: read what it holds, put the desired state in place of ours, push it whole.
    /// The push is atomic (no request can see a route before its plugins), and an unchanged
    /// document is a 304 (no write).
    async fn push_declarative(
        &self,
        complete: bool,
        desired: DesiredState,
    ) -> Result<SyncReport, SyncError> {
        let current = self.kong.read_config().await.map_err(SyncError::Kong)?;
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
                Ok(SyncReport {
                    writes: 1,
                    desired: Some(desired),
                    recheck_at: None,
                    snapshot: None,
                })
            }
            Ok(false) => Ok(SyncReport {
                writes: 0,
                desired: Some(desired),
                recheck_at: None,
                snapshot: None,
            }),
            Err(e) => Err(SyncError::Write {
                what: "push the declarative configuration".into(),
                error: e,
                writes: 0,
            }),
        }
    }
}

#[derive(Debug)]
pub enum SyncError {
    /// Reading what Kong holds failed: nothing was written.
    Kong(KongError),
    /// A write failed, after `writes` others went through.
    Write {
        what: String,
        error: KongError,
        writes: usize,
    },
}

impl SyncError {
    /// Kong's own error.
    pub fn kong(&self) -> &KongError {
        match self {
            SyncError::Kong(e) | SyncError::Write { error: e, .. } => e,
        }
    }

    /// The writes done before the failure.
    pub fn writes(&self) -> usize {
        match self {
            SyncError::Kong(_) => 0,
            SyncError::Write { writes, .. } => *writes,
        }
    }
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Kong(e) => write!(f, "failed to read Kong state: {e}"),
            SyncError::Write { what, error, .. } => write!(f, "failed to {what}: {error}"),
        }
    }
}

impl std::error::Error for SyncError {}
