//! DB-less Kong (`database=off`): the whole configuration is one declarative document, pushed at
//! once. `document` merges what we want into what Kong holds: every entity we do not own is
//! carried over unchanged (whatever its kind: consumers, upstreams, certificates, …), ours are
//! replaced by the desired state, keeping their ids so nothing that points at them breaks. An
//! entity of ours that something foreign still points at stays, as Kong in DB mode would refuse
//! its delete; while Docker has not been listed completely, none of ours is dropped. `canonical`
//! writes it the same way every time, so Kong's hash check (`POST /config?check_hash=1`) turns an
//! unchanged state into a 304 and no write. Pure.

use crate::desired::DesiredState;
use crate::diff::has_tag;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The entity lists we write; other kinds are only carried over.
const OURS: [&str; 5] = ["upstreams", "targets", "services", "routes", "plugins"];

/// The key an entity of `kind` is matched on between Kong and the desired state (a target's:
/// its upstream, as written, and its address).
fn key(kind: &str, e: &Value) -> Option<String> {
    match kind {
        "plugins" => e["instance_name"].as_str().map(String::from),
        "targets" => Some(format!(
            "{}|{}",
            fk_id(e, "upstream").or(e["upstream"]["name"].as_str())?,
            e["target"].as_str()?
        )),
        _ => e["name"].as_str().map(String::from),
    }
}

/// A UUID-shaped id from an entity's kind and key (FNV-1a, two seeds): stable, and only used for
/// an entity Kong does not hold yet.
fn derived_id(kind: &str, key: &str) -> String {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in kind.bytes().chain([0]).chain(key.bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A foreign key's id: written as the id string (Kong's export) or as `{id}`.
fn fk_id<'v>(e: &'v Value, fk: &str) -> Option<&'v str> {
    match &e[fk] {
        Value::String(id) => Some(id),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// Ids that foreign entities reference.
fn referenced_ids(foreign: &[Value]) -> BTreeSet<String> {
    foreign
        .iter()
        .flat_map(|e| ["service", "route", "consumer", "upstream"].map(|fk| fk_id(e, fk)))
        .flatten()
        .map(String::from)
        .collect()
}

/// The document to push: Kong's current configuration (`GET /config`, parsed) with our entities
/// replaced by `desired`. `keep_unlisted` keeps ours that `desired` lacks (discovery is blind).
pub fn document(
    desired: &DesiredState,
    current: &Value,
    owner_tag: &str,
    keep_unlisted: bool,
) -> Value {
    let mut doc = Map::new();
    doc.insert("_format_version".into(), json!("3.0"));
    // what Kong exports is already transformed (hashed credentials and the like)
    doc.insert("_transform".into(), json!(false));
    // Kong's export names a target's upstream by id; the desired state by name
    let upstream_name: BTreeMap<String, String> = current["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| Some((u["id"].as_str()?.into(), u["name"].as_str()?.into())))
        .collect();
    let match_key = |kind: &str, e: &Value| -> Option<String> {
        if kind != "targets" {
            return key(kind, e);
        }
        let up = fk_id(e, "upstream")?;
        let up = upstream_name.get(up).map(String::as_str).unwrap_or(up);
        Some(format!("{up}|{}", e["target"].as_str()?))
    };
    let mut foreign: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut ours_now: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (kind, list) in current.as_object().into_iter().flatten() {
        if kind.starts_with('_') {
            continue;
        }
        let Some(list) = list.as_array() else {
            continue;
        };
        let is_ours = |e: &Value| OURS.contains(&kind.as_str()) && has_tag(e, owner_tag);
        foreign
            .entry(kind.as_str())
            .or_default()
            .extend(list.iter().filter(|e| !is_ours(e)).cloned());
        ours_now
            .entry(kind.as_str())
            .or_default()
            .extend(list.iter().filter(|e| is_ours(e)).cloned());
    }
    let wanted: BTreeMap<&str, BTreeMap<String, Value>> = [
        (
            "upstreams",
            desired
                .upstreams
                .values()
                .map(|u| (u.name.clone(), u.body()))
                .collect(),
        ),
        (
            "targets",
            desired
                .targets
                .values()
                .map(|t| {
                    let mut b = t.body();
                    b["upstream"] = json!(t.upstream);
                    (format!("{}|{}", t.upstream, t.target), b)
                })
                .collect(),
        ),
        (
            "services",
            desired
                .services
                .values()
                .map(|s| (s.name.clone(), s.body()))
                .collect(),
        ),
        (
            "routes",
            desired
                .routes
                .values()
                .map(|r| (r.name.clone(), r.body()))
                .collect(),
        ),
        (
            "plugins",
            desired
                .plugins
                .values()
                .map(|p| (p.instance_name.clone(), p.body()))
                .collect(),
        ),
    ]
    .into_iter()
    .collect();
    adopt(&mut foreign, &mut ours_now, desired, &match_key);
    let all_foreign: Vec<Value> = foreign.values().flatten().cloned().collect();
    let pinned = referenced_ids(&all_foreign);
    for kind in OURS {
        let now = ours_now.remove(kind).unwrap_or_default();
        let want = &wanted[kind];
        let id_of: BTreeMap<String, Value> = now
            .iter()
            .filter_map(|e| Some((match_key(kind, e)?, e["id"].clone())))
            .collect();
        let mut list = foreign.remove(kind).unwrap_or_default();
        // ours that the desired state lacks: kept while blind or while something points at them
        for e in &now {
            let listed = match_key(kind, e).is_some_and(|k| want.contains_key(&k));
            let is_pinned = e["id"].as_str().is_some_and(|id| pinned.contains(id));
            if !listed && (keep_unlisted || is_pinned) {
                list.push(e.clone());
            }
        }
        for (k, body) in want {
            let mut body = body.clone();
            // references by name, as a declarative document writes them at the top level
            for fk in ["service", "route"] {
                if let Some(name) = body[fk]["name"].as_str().map(String::from) {
                    body[fk] = json!(name);
                }
            }
            // the id it has in Kong, else one derived from its key: the document names every id,
            // so the next read gives back exactly what was pushed (and the hash check holds)
            body["id"] = id_of
                .get(k)
                .filter(|v| v.is_string())
                .cloned()
                .unwrap_or_else(|| json!(derived_id(kind, k)));
            list.push(body);
        }
        if !list.is_empty() {
            doc.insert(kind.into(), Value::Array(list));
        }
    }
    for (kind, list) in foreign {
        if !list.is_empty() {
            doc.insert(kind.into(), Value::Array(list));
        }
    }
    Value::Object(doc)
}

/// Untagged entities with the names we use (left by the Python registry, which tagged nothing)
/// become ours, as a PUT by name adopts them in DB mode: an upstream, service or route of a
/// desired name, a target at a desired address of one of our upstreams, and a plugin of a desired
/// name on one of our services (service-wide). Their ids are kept.
fn adopt<'a>(
    foreign: &mut BTreeMap<&'a str, Vec<Value>>,
    ours: &mut BTreeMap<&'a str, Vec<Value>>,
    desired: &DesiredState,
    match_key: &dyn Fn(&str, &Value) -> Option<String>,
) {
    for kind in ["upstreams", "services", "routes"] {
        let Some(list) = foreign.get_mut(kind) else {
            continue;
        };
        let wanted = |n: &str| match kind {
            "upstreams" => desired.upstreams.contains_key(n),
            "services" => desired.services.contains_key(n),
            _ => desired.routes.contains_key(n),
        };
        let (adopted, kept): (Vec<Value>, Vec<Value>) = std::mem::take(list)
            .into_iter()
            .partition(|e| e["name"].as_str().is_some_and(wanted));
        *list = kept;
        ours.entry(kind).or_default().extend(adopted);
    }
    let our_upstreams: BTreeSet<&str> = ours
        .get("upstreams")
        .into_iter()
        .flatten()
        .filter_map(|u| u["id"].as_str())
        .collect();
    if let Some(list) = foreign.get_mut("targets") {
        let (adopted, kept): (Vec<Value>, Vec<Value>) =
            std::mem::take(list).into_iter().partition(|t| {
                fk_id(t, "upstream").is_some_and(|u| our_upstreams.contains(u))
                    && match_key("targets", t).is_some_and(|k| {
                        desired
                            .targets
                            .values()
                            .any(|d| format!("{}|{}", d.upstream, d.target) == k)
                    })
            });
        *list = kept;
        ours.entry("targets").or_default().extend(adopted);
    }
    // our services' ids (adopted ones included) → names, to match plugins by their service
    let service_name: BTreeMap<&str, &str> = ours
        .get("services")
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["id"].as_str()?, s["name"].as_str()?)))
        .collect();
    let mut adopted = Vec::new();
    if let Some(list) = foreign.get_mut("plugins") {
        for mut e in std::mem::take(list) {
            let on = fk_id(&e, "service").and_then(|id| service_name.get(id).copied());
            let ours_too = desired.plugins.values().find(|p| {
                Some(p.service.as_str()) == on
                    && e["name"] == p.name.as_str()
                    && fk_id(&e, "route").is_none()
                    && fk_id(&e, "consumer").is_none()
            });
            match ours_too {
                // matched on instance_name later: give it ours
                Some(p) => {
                    e["instance_name"] = json!(p.instance_name);
                    adopted.push(e);
                }
                None => list.push(e),
            }
        }
    }
    ours.entry("plugins").or_default().extend(adopted);
}

/// `v` with object keys sorted at every level and each top-level entity list sorted by name (or
/// id): the same state is always the same string, so Kong's hash check sees it unchanged.
pub fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    let mut top = sort(v);
    if let Some(m) = top.as_object_mut() {
        for (kind, list) in m.iter_mut() {
            if let Value::Array(a) = list {
                let k = |e: &Value| {
                    (
                        key(kind, e).unwrap_or_default(),
                        e["id"].as_str().unwrap_or_default().to_string(),
                        e.to_string(),
                    )
                };
                a.sort_by_key(k);
            }
        }
    }
    top.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{PluginSpec, RouteSpec, ServiceSpec, Upstream};

    fn desired(names: &[&str]) -> DesiredState {
        let mut d = DesiredState::default();
        for n in names {
            let svc = format!("agent-{n}");
            d.services.insert(
                svc.clone(),
                ServiceSpec {
                    name: svc.clone(),
                    upstream: Upstream::parse("http://10.0.0.2:5000").unwrap(),
                    connect_timeout: 1,
                    read_timeout: 1,
                    write_timeout: 1,
                    retries: 1,
                    tags: vec!["owner".into()],
                },
            );
            d.routes.insert(
                format!("{svc}-route"),
                RouteSpec {
                    name: format!("{svc}-route"),
                    service: svc.clone(),
                    paths: vec![format!("/agents/{svc}")],
                    methods: vec!["GET".into()],
                    strip_path: true,
                    preserve_host: false,
                    tags: vec!["owner".into()],
                },
            );
            d.plugins.insert(
                format!("{svc}.cors"),
                PluginSpec {
                    instance_name: format!("{svc}.cors"),
                    name: "cors".into(),
                    service: svc.clone(),
                    config: json!({}),
                    tags: vec!["owner".into()],
                },
            );
        }
        d
    }

    fn names(doc: &Value, kind: &str) -> Vec<String> {
        let mut v: Vec<String> = doc[kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| key(kind, e))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn foreign_entities_of_every_kind_are_carried_over_and_ours_replaced() {
        let current = json!({
            "_format_version": "3.0", "_transform": false,
            "services": [
                {"id": "s-old", "name": "agent-old", "host": "x", "tags": ["owner"]},
                {"id": "s-f", "name": "theirs", "host": "y", "tags": ["someone"]},
                {"id": "s-a", "name": "agent-a", "host": "z", "tags": ["owner"]}
            ],
            "routes": [{"id": "r-f", "name": "their-route", "service": "s-f", "tags": null}],
            "consumers": [{"id": "c1", "username": "alice"}]
        });
        let doc = document(&desired(&["a", "b"]), &current, "owner", false);
        assert_eq!(names(&doc, "services"), ["agent-a", "agent-b", "theirs"]);
        assert_eq!(
            names(&doc, "routes"),
            ["agent-a-route", "agent-b-route", "their-route"]
        );
        assert_eq!(doc["consumers"], current["consumers"]);
        let a = doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "agent-a")
            .unwrap();
        assert_eq!(a["id"], "s-a", "ours keep their ids");
        assert_eq!(a["host"], "10.0.0.2");
        let theirs = doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "theirs")
            .unwrap();
        assert_eq!(
            theirs, &current["services"][1],
            "foreign ones are untouched"
        );
        let r = doc["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "agent-b-route")
            .unwrap();
        assert_eq!(r["service"], "agent-b", "references by name");
    }

    #[test]
    fn untagged_entities_with_our_names_are_adopted_keeping_their_ids() {
        let current = json!({
            "services": [{"id": "s-py", "name": "agent-a", "host": "old"}],
            "plugins": [
                {"id": "p-py", "name": "cors", "service": "s-py"},
                {"id": "p-other", "name": "rate-limiting", "service": "s-py"}
            ]
        });
        let doc = document(&desired(&["a"]), &current, "owner", false);
        let svcs = doc["services"].as_array().unwrap();
        assert_eq!(svcs.len(), 1, "{doc}");
        assert_eq!(
            (svcs[0]["id"].as_str(), svcs[0]["host"].as_str()),
            (Some("s-py"), Some("10.0.0.2"))
        );
        let plugins = doc["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 2, "{doc}");
        let cors = plugins.iter().find(|p| p["name"] == "cors").unwrap();
        assert_eq!(cors["id"], "p-py");
        assert_eq!(cors["service"], "agent-a");
        assert!(
            plugins.iter().any(|p| p["id"] == "p-other"),
            "a foreign plugin of another name stays"
        );
    }

    #[test]
    fn ours_stay_while_discovery_is_blind_or_while_something_foreign_points_at_them() {
        let current = json!({
            "services": [
                {"id": "s-gone", "name": "agent-gone", "host": "x", "tags": ["owner"]},
                {"id": "s-pinned", "name": "agent-pinned", "host": "x", "tags": ["owner"]}
            ],
            "plugins": [{"id": "p-f", "name": "rate-limiting", "service": "s-pinned", "tags": ["ops"]}]
        });
        let doc = document(&desired(&[]), &current, "owner", false);
        assert_eq!(names(&doc, "services"), ["agent-pinned"]);
        let blind = document(&desired(&[]), &current, "owner", true);
        assert_eq!(names(&blind, "services"), ["agent-gone", "agent-pinned"]);
    }

    #[test]
    fn targets_keep_their_ids_a_foreign_target_rides_along_and_pins_our_upstream() {
        use crate::desired::{TargetSpec, UpstreamSpec};
        let with_target = |addr: &str| {
            let mut d = desired(&["a"]);
            d.upstreams.insert(
                "agent-a".into(),
                UpstreamSpec {
                    name: "agent-a".into(),
                    tags: vec!["owner".into()],
                },
            );
            d.targets.insert(
                ("agent-a".into(), addr.into()),
                TargetSpec {
                    upstream: "agent-a".into(),
                    target: addr.into(),
                    weight: 100,
                    container: "agent-a".into(),
                    tags: vec!["owner".into()],
                },
            );
            d
        };
        // as Kong exports: foreign keys as ids
        let current = json!({
            "upstreams": [{"id": "u-a", "name": "agent-a", "tags": ["owner"]}],
            "targets": [
                {"id": "t-1", "target": "10.0.0.2:5000", "upstream": "u-a", "weight": 100, "tags": ["owner"]},
                {"id": "t-old", "target": "10.0.0.1:5000", "upstream": "u-a", "weight": 0, "tags": ["owner"]},
                {"id": "t-ops", "target": "10.9.9.9:80", "upstream": "u-a", "weight": 1, "tags": ["ops"]}
            ]
        });
        let doc = document(&with_target("10.0.0.2:5000"), &current, "owner", false);
        let targets = doc["targets"].as_array().unwrap();
        let ids: BTreeSet<&str> = targets.iter().filter_map(|t| t["id"].as_str()).collect();
        assert_eq!(
            ids,
            ["t-1", "t-ops"].into(),
            "the stopped one goes, the foreign one stays"
        );
        let ours = targets.iter().find(|t| t["id"] == "t-1").unwrap();
        assert_eq!(ours["upstream"], "agent-a", "referenced by name");
        assert_eq!(doc["upstreams"][0]["id"], "u-a");
        // the agent goes: its upstream stays while the foreign target points at it
        let gone = document(&desired(&[]), &current, "owner", false);
        assert_eq!(names(&gone, "upstreams"), ["agent-a"]);
        let ids: Vec<&str> = gone["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["id"].as_str())
            .collect();
        assert_eq!(ids, ["t-ops"]);
    }

    #[test]
    fn the_same_state_is_the_same_string_whatever_the_order() {
        let current = json!({"services": [
            {"id": "2", "name": "b", "host": "h", "tags": ["x"]},
            {"id": "1", "name": "a", "host": "h", "tags": ["x"]}]});
        let swapped = json!({"services": [
            {"name": "a", "tags": ["x"], "host": "h", "id": "1"},
            {"host": "h", "name": "b", "id": "2", "tags": ["x"]}]});
        let d = desired(&["q", "p"]);
        assert_eq!(
            canonical(&document(&d, &current, "owner", false)),
            canonical(&document(&d, &swapped, "owner", false))
        );
    }
}
