//! DB-less Kong (`database=off`): the whole configuration is one declarative document, pushed at
//! once. `document` merges what we want into what Kong holds: every entity we do not own is
//! carried over unchanged (whatever its kind: consumers, upstreams, certificates, …), ours are
//! replaced by the desired state, keeping their ids so nothing that points at them breaks. An
//! entity of ours that something foreign still points at stays, as Kong in DB mode would refuse
//! its delete; while Docker has not been listed completely, none of ours is dropped. `canonical`
//! writes it the same way every time, so Kong's hash check (`POST /config?check_hash=1`) turns an
//! unchanged state into a 304 and no write. Pure.

use crate::desired::DesiredState;
use crate::model::rule::takes_place_of;
use crate::model::{Body, Head, LinkKind, TargetKey};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The entity lists we write; other kinds are only carried over.
const OURS: [&str; 5] = ["upstreams", "targets", "services", "routes", "plugins"];

/// The key an entity of `kind` is matched on between Kong and the desired state (a target's:
/// its upstream, as written, and its address).
fn key(kind: &str, e: &Value) -> Option<String> {
    let h = Head::of(e);
    match kind {
        "plugins" => h.instance_name,
        "targets" => {
            let up = h
                .link(LinkKind::Upstream)
                .or(e["upstream"]["name"].as_str())?;
            Some(TargetKey::new(up, h.target.as_deref()?).to_string())
        }
        _ => h.name,
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

/// Ids that foreign entities reference.
fn referenced_ids(foreign: &[Value]) -> BTreeSet<String> {
    foreign
        .iter()
        .flat_map(|e| {
            let h = Head::of(e);
            LinkKind::ALL.map(|l| h.link(l).map(String::from))
        })
        .flatten()
        .collect()
}

/// Entities by kind.
type ByKind<'a> = BTreeMap<&'a str, Vec<Value>>;

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
    let keys = Keys::of(current);
    let (mut foreign, mut ours_now) = split(current, owner_tag);
    adopt(&mut foreign, &mut ours_now, desired, &keys);
    let all_foreign: Vec<Value> = foreign.values().flatten().cloned().collect();
    let pinned = referenced_ids(&all_foreign);
    for (kind, want) in wanted(desired) {
        let now = ours_now.remove(kind).unwrap_or_default();
        let mut list = foreign.remove(kind).unwrap_or_default();
        // ours that the desired state lacks: kept while blind or while something points at them
        let unlisted_kept = |e: &&Value| {
            let listed = keys
                .of_entity(kind, e)
                .is_some_and(|k| want.contains_key(&k));
            let is_pinned = Head::of(e).id().is_some_and(|id| pinned.contains(id));
            !listed && (keep_unlisted || is_pinned)
        };
        list.extend(now.iter().filter(unlisted_kept).cloned());
        list.extend(written(kind, &want, &now, &keys));
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

/// Matching keys in Kong's export, which names a target's upstream by id where the desired
/// state names it.
struct Keys {
    upstream_name: BTreeMap<String, String>,
}

impl Keys {
    fn of(current: &Value) -> Keys {
        let upstream_name = current["upstreams"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Head::of)
            .filter_map(|u| Some((u.id()?.to_string(), u.name?)))
            .collect();
        Keys { upstream_name }
    }

    fn of_entity(&self, kind: &str, e: &Value) -> Option<String> {
        if kind != "targets" {
            return key(kind, e);
        }
        let h = Head::of(e);
        let up = h.link(LinkKind::Upstream)?;
        let up = self.upstream_name.get(up).map(String::as_str).unwrap_or(up);
        Some(TargetKey::new(up, h.target.as_deref()?).to_string())
    }
}

/// Kong's entities, foreign and ours (the kinds we write, carrying our tag).
fn split<'a>(current: &'a Value, owner_tag: &str) -> (ByKind<'a>, ByKind<'a>) {
    let (mut foreign, mut ours) = (ByKind::new(), ByKind::new());
    for (kind, list) in current.as_object().into_iter().flatten() {
        let Some(list) = list.as_array().filter(|_| !kind.starts_with('_')) else {
            continue;
        };
        for e in list {
            let is_ours = OURS.contains(&kind.as_str()) && Head::of(e).has_tag(owner_tag);
            let side = if is_ours { &mut ours } else { &mut foreign };
            side.entry(kind.as_str()).or_default().push(e.clone());
        }
        foreign.entry(kind.as_str()).or_default();
    }
    (foreign, ours)
}

/// The desired state's entities by kind and key, as request bodies.
fn wanted(desired: &DesiredState) -> [(&'static str, BTreeMap<String, Value>); 5] {
    fn by<'a, S: Body + 'a>(
        specs: impl Iterator<Item = &'a S>,
        key: impl Fn(&S) -> String,
    ) -> BTreeMap<String, Value> {
        specs.map(|s| (key(s), s.body())).collect()
    }
    [
        (
            "upstreams",
            by(desired.upstreams.values(), |u| u.name.clone()),
        ),
        (
            "targets",
            desired
                .targets
                .values()
                .map(|t| {
                    let mut b = t.body();
                    b["upstream"] = json!(t.upstream);
                    (t.key().to_string(), b)
                })
                .collect(),
        ),
        (
            "services",
            by(desired.services.values(), |s| s.name.clone()),
        ),
        ("routes", by(desired.routes.values(), |r| r.name.clone())),
        (
            "plugins",
            by(desired.plugins.values(), |p| p.instance_name.clone()),
        ),
    ]
}

/// The wanted entities of `kind` as the document writes them: references by name, as a
/// declarative document writes them at the top level, and the id each has in Kong (`now`), else
/// one derived from its key — the document names every id, so the next read gives back exactly
/// what was pushed (and the hash check holds).
fn written(kind: &str, want: &BTreeMap<String, Value>, now: &[Value], keys: &Keys) -> Vec<Value> {
    let id_of: BTreeMap<String, String> = now
        .iter()
        .filter_map(|e| Some((keys.of_entity(kind, e)?, Head::of(e).id()?.to_string())))
        .collect();
    want.iter()
        .map(|(k, body)| {
            let mut body = body.clone();
            for fk in ["service", "route"] {
                if let Some(name) = body[fk]["name"].as_str().map(String::from) {
                    body[fk] = json!(name);
                }
            }
            let id = id_of.get(k).cloned();
            body["id"] = json!(id.unwrap_or_else(|| derived_id(kind, k)));
            body
        })
        .collect()
}

/// Untagged entities with the names we use (left by the Python registry, which tagged nothing)
/// become ours, as a PUT by name adopts them in DB mode: an upstream, service or route of a
/// desired name, a target at a desired address of one of our upstreams, and a plugin that takes a
/// desired plugin's place (`rule::takes_place_of`) on one of our services. Their ids are kept.
fn adopt<'a>(foreign: &mut ByKind<'a>, ours: &mut ByKind<'a>, desired: &DesiredState, keys: &Keys) {
    fn take<'a>(
        (foreign, ours): (&mut ByKind<'a>, &mut ByKind<'a>),
        kind: &'a str,
        adopted: &dyn Fn(&Value) -> bool,
    ) {
        let Some(list) = foreign.get_mut(kind) else {
            return;
        };
        let (taken, kept): (Vec<Value>, Vec<Value>) =
            std::mem::take(list).into_iter().partition(|e| adopted(e));
        *list = kept;
        ours.entry(kind).or_default().extend(taken);
    }
    let named = |e: &Value| Head::of(e).name;
    take((foreign, ours), "upstreams", &|e| {
        named(e).is_some_and(|n| desired.upstreams.contains_key(&n))
    });
    take((foreign, ours), "services", &|e| {
        named(e).is_some_and(|n| desired.services.contains_key(&n))
    });
    take((foreign, ours), "routes", &|e| {
        named(e).is_some_and(|n| desired.routes.contains_key(&n))
    });
    let ids = |ours: &ByKind, kind: &str| -> BTreeMap<String, String> {
        ours.get(kind)
            .into_iter()
            .flatten()
            .map(Head::of)
            .filter_map(|h| Some((h.id()?.to_string(), h.name?)))
            .collect()
    };
    let our_upstreams = ids(ours, "upstreams");
    let wanted_targets: BTreeSet<String> =
        desired.targets.keys().map(TargetKey::to_string).collect();
    take((foreign, ours), "targets", &|t| {
        Head::of(t)
            .link(LinkKind::Upstream)
            .is_some_and(|u| our_upstreams.contains_key(u))
            && keys
                .of_entity("targets", t)
                .is_some_and(|k| wanted_targets.contains(&k))
    });
    // our services' ids (adopted ones included) → names, to match plugins by their service
    let service_name = ids(ours, "services");
    let Some(list) = foreign.get_mut("plugins") else {
        return;
    };
    let mut adopted = Vec::new();
    for mut e in std::mem::take(list) {
        let h = Head::of(&e);
        let on = h
            .link(LinkKind::Service)
            .and_then(|id| service_name.get(id));
        let ours_too = desired
            .plugins
            .values()
            .find(|p| Some(&p.service) == on && takes_place_of(p, &h));
        match ours_too {
            // matched on instance_name later: give it ours
            Some(p) => {
                e["instance_name"] = json!(p.instance_name);
                adopted.push(e);
            }
            None => list.push(e),
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
                a.sort_by_cached_key(k);
            }
        }
    }
    top.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        PluginFields, PluginSpec, RouteFields, RouteSpec, ServiceFields, ServiceSpec, ServiceUrl,
    };

    fn desired(names: &[&str]) -> DesiredState {
        let mut d = DesiredState::default();
        for n in names {
            let svc = format!("agent-{n}");
            d.services.insert(
                svc.clone(),
                ServiceSpec {
                    name: svc.clone(),
                    fields: ServiceFields {
                        connect_timeout: 1,
                        read_timeout: 1,
                        write_timeout: 1,
                        retries: 1,
                        ..ServiceFields::at(ServiceUrl::parse("http://10.0.0.2:5000").unwrap())
                    },
                    tags: vec!["owner".into()],
                },
            );
            d.routes.insert(
                format!("{svc}-route"),
                RouteSpec {
                    name: format!("{svc}-route"),
                    service: svc.clone(),
                    fields: RouteFields::new(
                        vec![format!("/agents/{svc}")],
                        Some(vec!["GET".into()]),
                        true,
                        false,
                    ),
                    tags: vec!["owner".into()],
                },
            );
            d.plugins.insert(
                format!("{svc}.cors"),
                PluginSpec {
                    instance_name: format!("{svc}.cors"),
                    service: svc.clone(),
                    fields: PluginFields {
                        name: "cors".into(),
                        config: json!({}).into(),
                        enabled: true,
                    },
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
        use crate::model::{TargetFields, TargetSpec, UpstreamFields, UpstreamSpec};
        let with_target = |addr: &str| {
            let mut d = desired(&["a"]);
            d.upstreams.insert(
                "agent-a".into(),
                UpstreamSpec {
                    name: "agent-a".into(),
                    fields: UpstreamFields::agent(),
                    tags: vec!["owner".into()],
                },
            );
            d.targets.insert(
                TargetKey::new("agent-a", addr),
                TargetSpec {
                    upstream: "agent-a".into(),
                    target: addr.into(),
                    fields: TargetFields { weight: 100 },
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
