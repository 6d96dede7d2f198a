//! A sync that plans from the last sync's snapshot (an event's sync) against the Kong emulator,
//! without Docker: its writes go out before any listing of Kong's entities, it leaves Kong as a fresh sync would, and a
//! snapshot Kong has moved past fails the sync rather than leaving a wrong state, which a fresh
//! reading then repairs.

use nasiko_tests::http::HttpClient;
use nasiko_tests::kong::{KongEmulator, Options, Recorded};
use registry_sidecar::diff::OwnedState;
use registry_sidecar::endpoint::AgentEndpoint;
use registry_sidecar::kong::KongClient;
use registry_sidecar::model::Row;
use registry_sidecar::plugin_gate::PluginGate;
use registry_sidecar::static_routes::{parse, HostOverrides, StaticConfig, EMBEDDED};
use registry_sidecar::sync::{Snapshot, Start, SyncRun};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const TAG: &str = "managed-by-nasiko-registry";

struct Harness {
    kong: KongEmulator,
    client: KongClient,
    statics: StaticConfig,
    gate: PluginGate,
}

impl Harness {
    async fn new() -> Harness {
        let kong = KongEmulator::start(Options::strict()).await.unwrap();
        let client = KongClient::new(
            &kong.admin_url(),
            Duration::from_secs(5),
            TAG,
            Arc::default(),
        );
        Harness {
            kong,
            client,
            statics: parse(EMBEDDED, &HostOverrides::default()).unwrap(),
            gate: PluginGate::new(tokio::time::Instant::now()),
        }
    }

    /// One sync of `agents` from `start`: its writes and the snapshot it left, or its error.
    async fn sync(
        &self,
        agents: &[AgentEndpoint],
        start: Start,
    ) -> Result<(usize, Snapshot), String> {
        let run = SyncRun {
            kong: &self.client,
            owner_tag: TAG,
            warmup: Duration::ZERO,
            concurrency: 8,
            gate: &self.gate,
        };
        let agents: Vec<_> = agents.iter().cloned().map(std::sync::Arc::new).collect();
        let r = run
            .converge(true, &self.statics, &agents, start)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            r.writes,
            r.snapshot.expect("a DB-mode sync leaves a snapshot"),
        ))
    }

    /// One Admin API request, as someone else's tool would send it: its status and body.
    async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.kong.admin_url());
        HttpClient::default()
            .json(method, &url, body)
            .await
            .unwrap()
    }

    /// The targets Kong holds for agent `name`'s upstream.
    async fn targets(&self, name: &str) -> Vec<String> {
        let (_, v) = self
            .admin("GET", &format!("/upstreams/agent-{name}/targets"), None)
            .await;
        let mut t: Vec<String> = v["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|t| t["target"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        t.sort();
        t
    }
}

fn agent(name: &str, ip: &str) -> AgentEndpoint {
    AgentEndpoint::labelled(name, &format!("c-{name}-{ip}"), ip, "nasiko-network")
}

fn show(r: &[Recorded]) -> Vec<String> {
    r.iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

/// Every row of a reading, each table sorted by id.
fn rows(o: &OwnedState) -> Vec<Vec<String>> {
    fn sorted<F: std::fmt::Debug>(rows: &[Row<F>]) -> Vec<String> {
        let mut v: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.head.id.clone(), format!("{r:?}")))
            .collect();
        v.sort();
        v.into_iter().map(|(_, r)| r).collect()
    }
    vec![
        sorted(&o.services),
        sorted(&o.routes),
        sorted(&o.plugins),
        sorted(&o.upstreams),
        sorted(&o.targets),
        sorted(&o.foreign_targets),
    ]
}

#[tokio::test]
async fn an_events_sync_from_the_snapshot_writes_first_and_leaves_what_a_fresh_one_would() {
    event_syncs(false).await;
}

#[tokio::test]
async fn an_events_sync_of_the_agents_it_changed_alone_leaves_what_a_fresh_one_would() {
    event_syncs(true).await;
}

/// Three changes in turn, each as an event's sync from the snapshot the sync before it left:
/// every agent planned, or (`partial`) the one it changed alone.
async fn event_syncs(partial: bool) {
    let b = Harness::new().await;
    let mut agents = vec![agent("a0", "10.9.0.2"), agent("a1", "10.9.0.3")];
    let (writes, mut snap) = b.sync(&agents, Start::Fresh).await.unwrap();
    assert!(writes > 0);
    // three changes in turn, each as an event's sync: a new agent, a container replaced (a new
    // address), an agent gone (its upstream deleted: its targets listed afresh first, and
    // nothing else read)
    type Change = fn(&mut Vec<AgentEndpoint>);
    let steps: [(&str, Change, &str, bool); 3] = [
        (
            "a new agent",
            |a| a.push(agent("a2", "10.9.0.4")),
            "agent-a2",
            true,
        ),
        (
            "a replaced container",
            |a| a[0] = agent("a0", "10.9.0.9"),
            "agent-a0",
            true,
        ),
        (
            "an agent gone",
            |a| {
                a.remove(1);
            },
            "agent-a1",
            false,
        ),
    ];
    for (what, change, changed, writes_first) in steps {
        change(&mut agents);
        b.kong.clear_requests();
        let start = match partial {
            true => Start::Changed(snap, [changed.to_string()].into()),
            false => Start::From(snap),
        };
        let (writes, next) = b.sync(&agents, start).await.unwrap();
        snap = next;
        let reqs = b.kong.requests();
        assert!(writes > 0, "{what}: nothing written: {:#?}", show(&reqs));
        // no request before the writes, not even `GET /` (the snapshot holds the node); a listing
        // of Kong's entities only after the writes; a plan that deletes an upstream lists that
        // upstream's targets first, and nothing more
        let last_write = reqs.iter().rposition(Recorded::is_write).unwrap();
        let read_before: Vec<&Recorded> = reqs[..last_write]
            .iter()
            .filter(|r| !r.is_write())
            .collect();
        assert_eq!(
            read_before.is_empty(),
            writes_first,
            "{what}: the writes first? {:#?}",
            show(&reqs)
        );
        assert!(
            read_before
                .iter()
                .all(|r| r.path.starts_with("/upstreams/") && r.path.contains("/targets")),
            "{what}: only the deleted upstream's targets are read first: {:#?}",
            show(&reqs)
        );
        // and nothing is read after them: the snapshot left is Kong's answers to the writes
        assert!(
            reqs[last_write..].iter().all(Recorded::is_write),
            "{what}: read after the writes: {:#?}",
            show(&reqs)
        );
        assert!(
            reqs.iter().all(|r| r.status < 400),
            "{what}: {:#?}",
            show(&reqs)
        );
        // nothing but the changed agent is written (deletes name ids, not agents)
        assert!(
            !writes_first
                || reqs
                    .iter()
                    .filter(|r| r.is_write())
                    .all(|r| r.path.contains(changed)),
            "{what}: {:#?}",
            show(&reqs)
        );
        // a fresh reading finds nothing left to do, and the snapshot left is that reading, row
        // for row
        b.kong.clear_requests();
        let (fresh, from_fresh) = b.sync(&agents, Start::Fresh).await.unwrap();
        assert_eq!(fresh, 0, "{what}: {:#?}", show(&b.kong.requests()));
        assert_eq!(rows(&snap.owned), rows(&from_fresh.owned), "{what}");
    }
    assert_eq!(b.targets("a0").await, ["10.9.0.9:5000"]);
    assert_eq!(b.targets("a2").await, ["10.9.0.4:5000"]);
    let (_, v) = b.admin("GET", "/services/agent-a1", None).await;
    assert_eq!(v["message"], "Not found", "a1 is gone: {v}");
}

#[tokio::test]
async fn a_snapshot_kong_has_moved_past_fails_the_sync_and_a_fresh_reading_repairs_it() {
    let b = Harness::new().await;
    let (_, snap) = b
        .sync(&[agent("a0", "10.9.0.2")], Start::Fresh)
        .await
        .unwrap();
    // behind our back: the agent's upstream (and its targets) deleted
    let (status, _) = b.admin("DELETE", "/upstreams/agent-a0", None).await;
    assert_eq!(status, 204);
    // its container replaced: the snapshot's plan adds a target to an upstream that is gone
    let now = [agent("a0", "10.9.0.7")];
    let err = b.sync(&now, Start::From(snap)).await.unwrap_err();
    assert!(err.contains("404") || err.contains("Not found"), "{err}");
    // the reconciler's retry reads afresh: the upstream and its one target are back
    let (writes, _) = b.sync(&now, Start::Fresh).await.unwrap();
    assert!(writes >= 2, "{writes}");
    assert_eq!(b.targets("a0").await, ["10.9.0.7:5000"]);
    let (writes, _) = b.sync(&now, Start::Fresh).await.unwrap();
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn an_agent_gone_keeps_its_upstream_for_a_target_someone_put_on_it_after_the_snapshot() {
    let b = Harness::new().await;
    let (_, snap) = b
        .sync(&[agent("a0", "10.9.0.2")], Start::Fresh)
        .await
        .unwrap();
    // someone else's target on the agent's upstream, under their own tag: no tagged id of ours
    // changes, so only a fresh listing of the upstream shows it
    let body = serde_json::json!({"target": "10.1.1.2:80", "tags": ["ops"]});
    let (status, _) = b
        .admin("POST", "/upstreams/agent-a0/targets", Some(&body))
        .await;
    assert_eq!(status, 201);
    b.sync(&[], Start::From(snap)).await.unwrap();
    assert_eq!(
        b.targets("a0").await,
        ["10.1.1.2:80"],
        "their target survives"
    );
}
