//! Upstreams' targets and the ring-balancer: the `/upstreams/{upstream}/targets` endpoints (create
//! by POST only, update by PUT or PATCH of an existing target, delete, health), the choice of a
//! peer for a proxied request (weighted round-robin over healthy targets of weight > 0), and the
//! health checks: passive counters fed by the proxy, active probes that bring unhealthy targets
//! back (`UPSTREAMS.md`).

use super::entities::Kind;
use super::errors::Answer;
use super::store::{Row, Store};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the balancer knows of one target.
#[derive(Debug, Clone, Default)]
pub struct TargetHealth {
    pub unhealthy: bool,
    tcp_failures: u64,
    http_failures: u64,
    timeouts: u64,
    successes: u64,
    last_probe: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct BalancerState {
    /// target id → health
    health: BTreeMap<String, TargetHealth>,
    /// upstream id → target id → smooth weighted round-robin credit
    credit: BTreeMap<String, BTreeMap<String, i64>>,
}

impl BalancerState {
    /// Drop what belongs to targets or upstreams that no longer exist (a re-added target starts
    /// healthy, as Kong's healthchecker forgets a removed target).
    pub fn forget_missing(
        &mut self,
        upstreams: &BTreeMap<String, Row>,
        targets: &BTreeMap<String, Row>,
    ) {
        self.health.retain(|id, _| targets.contains_key(id));
        self.credit.retain(|id, _| upstreams.contains_key(id));
        for c in self.credit.values_mut() {
            c.retain(|id, _| targets.contains_key(id));
        }
    }
}

/// What the proxy learnt from one try at a target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Status(u16),
    TcpFailure,
    Timeout,
}

/// A peer for one try: the target's id and address.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub target_id: String,
    pub address: String,
}

fn hc<'a>(upstream: &'a Row, path: &[&str]) -> &'a Value {
    let mut v = &upstream["healthchecks"];
    for p in path {
        v = &v[*p];
    }
    v
}

fn counter(upstream: &Row, path: &[&str]) -> u64 {
    hc(upstream, path).as_u64().unwrap_or(0)
}

fn statuses(upstream: &Row, path: &[&str]) -> Vec<u16> {
    hc(upstream, path)
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|n| n as u16))
                .collect()
        })
        .unwrap_or_default()
}

/// Health checks are on for an upstream when any counter or probe interval is set.
fn checks_on(upstream: &Row) -> bool {
    [
        &["active", "healthy", "interval"][..],
        &["active", "unhealthy", "interval"],
        &["passive", "unhealthy", "tcp_failures"],
        &["passive", "unhealthy", "http_failures"],
        &["passive", "unhealthy", "timeouts"],
    ]
    .iter()
    .any(|p| hc(upstream, p).as_f64().unwrap_or(0.0) > 0.0)
}

/// The next peer of `upstream` for a request, skipping the targets already `tried` (retries go
/// to another peer when there is one): weighted round-robin over healthy targets of weight > 0.
/// None is Kong's 503 `failure to get a peer from the ring-balancer`.
pub fn pick(store: &mut Store, upstream: &Row, tried: &[String]) -> Option<Peer> {
    let uid = upstream["id"].as_str().unwrap_or_default().to_string();
    let live: Vec<(String, String, i64)> = store
        .targets_of(&uid)
        .into_iter()
        .filter(|t| t["weight"].as_i64().unwrap_or(0) > 0)
        .filter(|t| {
            let id = t["id"].as_str().unwrap_or_default();
            !store.balancer.health.get(id).is_some_and(|h| h.unhealthy)
        })
        .map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                t["target"].as_str().unwrap_or_default().to_string(),
                t["weight"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let fresh: Vec<&(String, String, i64)> = live
        .iter()
        .filter(|(id, _, _)| !tried.contains(id))
        .collect();
    let pool = if fresh.is_empty() {
        live.iter().collect()
    } else {
        fresh
    };
    if pool.is_empty() {
        return None;
    }
    let credit = store.balancer.credit.entry(uid).or_default();
    let total: i64 = pool.iter().map(|(_, _, w)| w).sum();
    let mut best: Option<(&str, &str, i64)> = None;
    for (id, addr, w) in &pool {
        let c = credit.entry(id.clone()).or_insert(0);
        *c += w;
        if best.is_none_or(|(_, _, b)| *c > b) {
            best = Some((id, addr, *c));
        }
    }
    let (id, addr, _) = best?;
    if let Some(c) = credit.get_mut(id) {
        *c -= total;
    }
    Some(Peer {
        target_id: id.to_string(),
        address: addr.to_string(),
    })
}

/// Passive health checks: count what a proxied try gave; a target reaching one of the upstream's
/// `passive.unhealthy` counters becomes unhealthy (gets no traffic); `passive.healthy.successes`
/// successes bring it back. A result of the other kind resets the counters.
pub fn report(store: &mut Store, target_id: &str, outcome: Outcome) {
    let Some(t) = store.row(Kind::Targets, target_id) else {
        return;
    };
    let Some(uid) = t["upstream"]["id"].as_str().map(String::from) else {
        return;
    };
    let Some(up) = store.row(Kind::Upstreams, &uid).cloned() else {
        return;
    };
    let h = store
        .balancer
        .health
        .entry(target_id.to_string())
        .or_default();
    let p = |k: &str| counter(&up, &["passive", "unhealthy", k]);
    let reached = |n: u64, limit: u64| limit > 0 && n >= limit;
    let failed = match outcome {
        Outcome::TcpFailure => {
            h.tcp_failures += 1;
            reached(h.tcp_failures, p("tcp_failures"))
        }
        Outcome::Timeout => {
            h.timeouts += 1;
            reached(h.timeouts, p("timeouts"))
        }
        Outcome::Status(s)
            if statuses(&up, &["passive", "unhealthy", "http_statuses"]).contains(&s) =>
        {
            h.http_failures += 1;
            reached(h.http_failures, p("http_failures"))
        }
        Outcome::Status(s) => {
            if statuses(&up, &["passive", "healthy", "http_statuses"]).contains(&s) {
                h.successes += 1;
                (h.tcp_failures, h.http_failures, h.timeouts) = (0, 0, 0);
                let need = counter(&up, &["passive", "healthy", "successes"]);
                if h.unhealthy && reached(h.successes, need) {
                    h.unhealthy = false;
                }
            }
            return;
        }
    };
    h.successes = 0;
    if failed {
        h.unhealthy = true;
    }
}

/// One active probe that is due: a target marked unhealthy whose upstream probes unhealthy
/// targets (`active.healthy.interval` > 0).
#[derive(Debug, Clone)]
pub struct Probe {
    pub target_id: String,
    pub address: String,
    /// `None`: a TCP connect; `Some(path)`: an HTTP GET whose status is checked.
    pub http_path: Option<String>,
    pub healthy_statuses: Vec<u16>,
    pub timeout: Duration,
}

pub fn due_probes(store: &mut Store) -> Vec<Probe> {
    let now = Instant::now();
    let mut out = Vec::new();
    let unhealthy: Vec<String> = store
        .balancer
        .health
        .iter()
        .filter(|(_, h)| h.unhealthy)
        .map(|(id, _)| id.clone())
        .collect();
    for id in unhealthy {
        let Some(t) = store.row(Kind::Targets, &id).cloned() else {
            continue;
        };
        let Some(up) = t["upstream"]["id"]
            .as_str()
            .and_then(|u| store.row(Kind::Upstreams, u))
            .cloned()
        else {
            continue;
        };
        let interval = hc(&up, &["active", "healthy", "interval"])
            .as_f64()
            .unwrap_or(0.0);
        if interval <= 0.0 {
            continue;
        }
        let h = store.balancer.health.entry(id.clone()).or_default();
        if h.last_probe
            .is_some_and(|p| now.duration_since(p).as_secs_f64() < interval)
        {
            continue;
        }
        h.last_probe = Some(now);
        let kind = hc(&up, &["active", "type"]).as_str().unwrap_or("http");
        out.push(Probe {
            target_id: id,
            address: t["target"].as_str().unwrap_or_default().to_string(),
            http_path: (kind != "tcp").then(|| {
                hc(&up, &["active", "http_path"])
                    .as_str()
                    .unwrap_or("/")
                    .to_string()
            }),
            healthy_statuses: statuses(&up, &["active", "healthy", "http_statuses"]),
            timeout: Duration::from_secs_f64(
                hc(&up, &["active", "timeout"])
                    .as_f64()
                    .unwrap_or(1.0)
                    .max(0.05),
            ),
        });
    }
    out
}

/// An active probe's result: `active.healthy.successes` good probes (at least one) bring the
/// target back.
pub fn probe_result(store: &mut Store, target_id: &str, ok: bool) {
    let need = store
        .row(Kind::Targets, target_id)
        .and_then(|t| t["upstream"]["id"].as_str())
        .and_then(|u| store.row(Kind::Upstreams, u))
        .map(|up| counter(up, &["active", "healthy", "successes"]).max(1))
        .unwrap_or(1);
    let Some(h) = store.balancer.health.get_mut(target_id) else {
        return;
    };
    if !ok {
        h.successes = 0;
        return;
    }
    h.successes += 1;
    if h.successes >= need {
        *h = TargetHealth::default();
    }
}

/// `/upstreams/{upstream}/targets[/{target}[/healthy|unhealthy]]` and `/upstreams/{u}/health`
/// (`kong/api/routes/upstreams.lua`). `rest` is what follows the upstream segment.
pub fn handle(
    store: &mut Store,
    upstream_seg: &str,
    rest: &[&str],
    method: &str,
    body: impl Fn() -> Result<Row, Answer>,
    query: &[(String, String)],
    base: &str,
) -> Answer {
    let uid = match store.find(Kind::Upstreams, upstream_seg) {
        Err(a) => return a,
        Ok(None) => return Answer::not_found(),
        Ok(Some(id)) => id,
    };
    let scope = Some(("upstream", uid.as_str()));
    match rest {
        ["health"] if method == "GET" => health(store, &uid),
        ["health"] => Answer::method_not_allowed(),
        ["targets"] if method == "GET" => list_newest_first(store, &uid, query, base),
        // `page_for_upstream_raw`: the DAO's own paging
        ["targets", "all"] if method == "GET" => store.list(Kind::Targets, scope, query, base),
        ["targets"] if method == "POST" => match body() {
            Ok(b) => store.create(Kind::Targets, b, scope),
            Err(a) => a,
        },
        ["targets"] => Answer::method_not_allowed(),
        ["targets", t, rest @ ..] => {
            let Some(tid) = store.find_target(&uid, t) else {
                return Answer::not_found();
            };
            match (rest, method) {
                ([], "GET") => store.get(Kind::Targets, &tid, scope),
                // PUT is an update of an existing target, like PATCH (`update_target_cb`)
                ([], "PUT" | "PATCH") => match body() {
                    Ok(b) => store.patch(Kind::Targets, &tid, b, scope),
                    Err(a) => a,
                },
                ([], "DELETE") => {
                    let a = store.delete(Kind::Targets, &tid, scope);
                    store.balancer.health.remove(&tid);
                    a
                }
                ([state @ ("healthy" | "unhealthy")], "PUT") => {
                    // `post_health` (`kong/runloop/balancer/init.lua`): an upstream that checks
                    // nothing has no healthchecker (`create_healthchecker`)
                    if !store.row(Kind::Upstreams, &uid).is_some_and(checks_on) {
                        let name = store
                            .row(Kind::Upstreams, &uid)
                            .and_then(|u| u["name"].as_str())
                            .unwrap_or_default();
                        return Answer::message(400, &format!("no healthchecker found for {name}"));
                    }
                    let h = store.balancer.health.entry(tid).or_default();
                    *h = TargetHealth {
                        unhealthy: *state == "unhealthy",
                        ..TargetHealth::default()
                    };
                    Answer::no_content()
                }
                ([], _) | ([_], _) => Answer::method_not_allowed(),
                _ => Answer::not_found(),
            }
        }
        _ => Answer::not_found(),
    }
}

/// `GET /upstreams/{u}/targets` (`page_for_upstream`, `kong/db/dao/targets.lua`): every target of
/// the upstream, **newest first** (sorted by `created_at` then id, read from the end); `offset`
/// is a plain index into that list and `next` is `/upstreams/{u}/targets?offset=N`
/// (`get_collection_endpoint`, `kong/api/endpoints.lua`).
fn list_newest_first(store: &Store, uid: &str, query: &[(String, String)], base: &str) -> Answer {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let size = match q("size").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return super::errors::invalid_size("size must be an integer between 1 and 1000")
        }
    };
    let offset = match q("offset").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Answer::message(500, "An unexpected error occurred"),
    };
    let all: Vec<Value> = store
        .targets_of(uid)
        .into_iter()
        .rev()
        .map(|t| Value::Object(t.clone()))
        .collect();
    let page: Vec<Value> = all.iter().skip(offset).take(size).cloned().collect();
    if all.len() > offset + size {
        let next = offset + size;
        Answer::ok(
            200,
            json!({"data": page, "offset": next.to_string(), "next": format!("{base}?offset={next}")}),
        )
    } else {
        Answer::ok(200, json!({"data": page, "next": null}))
    }
}

/// `GET /upstreams/{u}/health`: each target with its health — `HEALTHCHECKS_OFF` when the
/// upstream checks nothing or the target's weight is 0, else `HEALTHY` / `UNHEALTHY`.
fn health(store: &Store, uid: &str) -> Answer {
    let Some(up) = store.row(Kind::Upstreams, uid) else {
        return Answer::not_found();
    };
    let on = checks_on(up);
    let data: Vec<Value> = store
        .targets_of(uid)
        .into_iter()
        .rev()
        .map(|t| {
            let id = t["id"].as_str().unwrap_or_default();
            let weight = t["weight"].as_i64().unwrap_or(0);
            let health = if !on || weight == 0 {
                "HEALTHCHECKS_OFF"
            } else if store.balancer.health.get(id).is_some_and(|h| h.unhealthy) {
                "UNHEALTHY"
            } else {
                "HEALTHY"
            };
            let (ip, port) = t["target"]
                .as_str()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(h, p)| (h.to_string(), p.parse::<u64>().unwrap_or(0)))
                .unwrap_or_default();
            let mut row = Value::Object(t.clone());
            row["health"] = json!(health);
            row["data"] = json!({"weight": {"total": weight, "available": if health == "UNHEALTHY" { 0 } else { weight }, "unavailable": 0},
                                 "addresses": [{"ip": ip, "port": port, "health": health, "weight": weight}]});
            row
        })
        .collect();
    Answer::ok(
        200,
        json!({"data": data, "next": null, "node_id": store.node_id}),
    )
}
