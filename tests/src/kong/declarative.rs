//! Loading a declarative configuration (DB-less `POST /config`) into a fresh store, with Kong's
//! checks in Kong's order (`kong/db/schema/others/declarative_config.lua`, `flatten`), one job
//! per function:
//! 1. the document itself (`_format_version`, unknown keys) and each entity's schema: errors at
//!    the entity's index;
//! 2. `validate_references`: a duplicate endpoint key or primary key, a plain message at the
//!    entity's index; a reference to nothing, a list of messages under the entity's endpoint key
//!    (or id);
//! 3. the unique fields that are not endpoint keys (a consumer's `custom_id`), under the entity's
//!    endpoint key (or id).
//!
//! Kong stops at the first phase that finds anything. `DBLESS.md` has the facts and sources.

use super::entities::{foreign_keys, is_uuid, normalize_target, Kind};
use super::store::{Row, Store};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// `_format_version`s Kong 3.4 accepts.
const FORMAT_VERSIONS: &[&str] = &["1.1", "2.1", "3.0"];
/// The namespace of Kong's deterministic (UUIDv5) ids.
const ID_NAMESPACE: &str = "fd02801f-0957-4a15-a55a-c8d9606f30b5";
/// Entity kinds of Kong 3.4 the emulator keeps without modelling them.
pub const OPAQUE: &[&str] = &[
    "certificates",
    "ca_certificates",
    "snis",
    "vaults",
    "key_sets",
    "keys",
];

/// What a load gives: the new store and the kinds kept verbatim.
pub struct Loaded {
    pub store: Store,
    pub opaque: Map<String, Value>,
}

impl Loaded {
    /// 201's body: each kind as a map of id to entity (`kong/api/routes/config.lua`).
    pub fn entities_by_id(&self) -> Value {
        let mut out = Map::new();
        for kind in Kind::ALL {
            let m: Map<String, Value> = self
                .store
                .all(kind)
                .map(|r| {
                    let id = r["id"].as_str().unwrap_or_default().to_string();
                    (id, Value::Object(r.clone()))
                })
                .collect();
            out.insert(kind.name().into(), Value::Object(m));
        }
        for (k, v) in &self.opaque {
            out.insert(k.clone(), v.clone());
        }
        Value::Object(out)
    }
}

/// A failed load: Kong's `fields` and the flattened list (`flatten_errors=1`).
pub type LoadError = Box<(Value, Value)>;

/// Validate and load a declarative table into a fresh store.
pub fn load(table: &Value, available: &[String]) -> Result<Loaded, LoadError> {
    let top = table.as_object().cloned().unwrap_or_default();
    let mut errs = Errors::default();
    check_document(&top, &mut errs);
    let opaque = top
        .iter()
        .filter(|(k, _)| OPAQUE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut store = Store::new(available.to_vec());
    store.dbless = true;
    for it in hoist(&top) {
        add(&mut store, it, &mut errs);
    }
    errs.into_result(Loaded { store, opaque })
}

/// One entity of the input, hoisted out of its nesting: its kind, its index among the entities
/// of its kind, and its body (references to its parent included).
struct Item {
    kind: Kind,
    index: usize,
    body: Row,
}

/// The document's own checks: a known `_format_version`, no unknown top-level key.
fn check_document(top: &Row, errs: &mut Errors) {
    match top.get("_format_version").and_then(Value::as_str) {
        Some(v) if FORMAT_VERSIONS.contains(&v) => {}
        Some(_) => errs.document(
            "_format_version",
            json!(format!("expected one of: {}", FORMAT_VERSIONS.join(", "))),
        ),
        None => errs.document("_format_version", json!("required field missing")),
    }
    for k in top.keys() {
        let known = k.starts_with('_')
            || Kind::from_segment(k).is_some_and(|k| k != Kind::Targets)
            || k == "targets"
            || OPAQUE.contains(&k.as_str());
        if !known {
            errs.document(k, json!("unknown field"));
        }
    }
}

/// Every entity of the document in load order (each before what refers to it): services, routes,
/// consumers, plugins, upstreams, targets; nested routes, plugins and targets after the top-level
/// ones of their kind, pointing at their parent by its name (else id).
fn hoist(top: &Row) -> Vec<Item> {
    let list = |k: &str| -> Vec<Row> {
        top.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| x.as_object().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (mut nested_routes, mut nested_plugins, mut nested_targets) = (vec![], vec![], vec![]);
    let mut services = list("services");
    for s in &mut services {
        let key = name_or_id(s);
        move_children(s, "routes", "service", &key, &mut nested_routes);
        move_children(s, "plugins", "service", &key, &mut nested_plugins);
    }
    let mut routes = list("routes");
    routes.append(&mut nested_routes);
    for r in &mut routes {
        let key = r.get("name").cloned().unwrap_or(Value::Null);
        move_children(r, "plugins", "route", &key, &mut nested_plugins);
    }
    let mut consumers = list("consumers");
    for c in &mut consumers {
        let key = c
            .get("username")
            .or_else(|| c.get("id"))
            .cloned()
            .unwrap_or(Value::Null);
        move_children(c, "plugins", "consumer", &key, &mut nested_plugins);
    }
    let mut plugins = list("plugins");
    plugins.append(&mut nested_plugins);
    let mut upstreams = list("upstreams");
    for u in &mut upstreams {
        let key = name_or_id(u);
        move_children(u, "targets", "upstream", &key, &mut nested_targets);
    }
    let mut targets = list("targets");
    targets.append(&mut nested_targets);
    [
        (Kind::Services, services),
        (Kind::Routes, routes),
        (Kind::Consumers, consumers),
        (Kind::Plugins, plugins),
        (Kind::Upstreams, upstreams),
        (Kind::Targets, targets),
    ]
    .into_iter()
    .flat_map(|(kind, rows)| {
        rows.into_iter()
            .enumerate()
            .map(move |(index, body)| Item { kind, index, body })
    })
    .collect()
}

/// How a nested entity names its parent: by name, else by id.
fn name_or_id(parent: &Row) -> Value {
    parent
        .get("name")
        .or_else(|| parent.get("id"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Move the entities nested under `parent`'s `list` into `into`, each pointing back at the
/// parent (`fk` = the parent's `key`).
fn move_children(parent: &mut Row, list: &str, fk: &str, key: &Value, into: &mut Vec<Row>) {
    if let Some(Value::Array(a)) = parent.remove(list) {
        for mut child in a.into_iter().filter_map(|x| x.as_object().cloned()) {
            child.insert(fk.into(), key.clone());
            into.push(child);
        }
    }
}

/// Load one entity: its id, its references, its uniqueness, then the DB-mode schema rules of
/// `Store::create`; each failure goes to its phase.
fn add(store: &mut Store, it: Item, errs: &mut Errors) {
    let original = it.body.clone();
    let mut body = it.body;
    let id = entity_id(store, it.kind, &body);
    // `at` of a reference error: the endpoint key when it is unique, else the id
    let at = endpoint_value(it.kind, &body).unwrap_or_else(|| id.clone());
    let mut refs = Vec::new();
    for (fk, target) in foreign_keys(it.kind) {
        if let Err(msg) = resolve(store, &mut body, fk, target) {
            refs.push(msg);
        }
    }
    if let Some(msg) = duplicate(store, it.kind, &body, &id) {
        errs.reference_at_index(it.kind, it.index, msg, &original);
        return;
    }
    if !refs.is_empty() {
        errs.references_of(it.kind, at, refs, &original);
        return;
    }
    if !id.is_empty() {
        body.insert("id".into(), json!(id));
    }
    let a = store.create(it.kind, body, None);
    let b = a.body.unwrap_or(Value::Null);
    match a.status {
        201 => {}
        // the only unique field left to collide here is a consumer's custom_id (phase 3)
        409 if it.kind == Kind::Consumers => {
            let c = b["fields"]["custom_id"].as_str().unwrap_or_default();
            let key = endpoint_value(it.kind, &original).unwrap_or(id);
            errs.unique_field(it.kind, key, uniqueness(it.kind, "custom_id", c));
        }
        _ => errs.schema(it.kind, it.index, &b, &original),
    }
}

/// The entity's id: given (lowercased; empty when it is not a UUID, which the schema then
/// refuses), else Kong's deterministic one (`generate_ids`).
fn entity_id(store: &mut Store, kind: Kind, body: &Row) -> String {
    match body.get("id").and_then(Value::as_str) {
        Some(id) if is_uuid(id) => id.to_ascii_lowercase(),
        Some(_) => String::new(),
        None => match unique_key(kind, body) {
            Some(u) => deterministic_id(kind.name(), &u),
            None => store.new_uuid(),
        },
    }
}

/// The key Kong derives an id from: the cache key (plugins, targets), else the endpoint key.
fn unique_key(kind: Kind, body: &Row) -> Option<String> {
    let fk = |k: &str| match body.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.get("id").and_then(Value::as_str).unwrap_or("").into(),
        None => String::new(),
    };
    match kind {
        Kind::Plugins => Some(format!(
            "plugins:{}:{}:{}:{}:",
            body.get("name").and_then(Value::as_str).unwrap_or(""),
            fk("route"),
            fk("service"),
            fk("consumer"),
        )),
        Kind::Targets => Some(format!(
            "targets:{}:{}:",
            fk("upstream"),
            body.get("target")
                .and_then(Value::as_str)
                .and_then(normalize_target)
                .unwrap_or_default(),
        )),
        _ => endpoint_value(kind, body),
    }
}

/// The entity's endpoint key when the schema makes it unique (services, routes, upstreams:
/// `name`; consumers: `username`; plugins: `instance_name`).
fn endpoint_value(kind: Kind, body: &Row) -> Option<String> {
    if kind == Kind::Targets {
        return None;
    }
    body.get(kind.endpoint_key())
        .and_then(Value::as_str)
        .map(String::from)
}

/// Kong's deterministic id of an entity of `kind` with unique key `key`.
fn deterministic_id(kind: &str, key: &str) -> String {
    let base = uuid::Uuid::parse_str(ID_NAMESPACE).expect("literal uuid");
    let ns = uuid::Uuid::new_v5(&base, kind.as_bytes());
    uuid::Uuid::new_v5(&ns, key.as_bytes()).to_string()
}

/// Resolve the reference in `fk` (a name, an id, or `{"id"|"name": …}`) to `{"id": …}`; Err is
/// Kong's `invalid reference` message.
fn resolve(store: &Store, body: &mut Row, fk: &str, target: &str) -> Result<(), String> {
    let key = match body.get(fk) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => {
            let k = o.get("id").or_else(|| o.get("name"));
            match k.and_then(Value::as_str) {
                Some(k) => k.to_string(),
                None => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    let Some(kind) = Kind::from_segment(target) else {
        body.insert(fk.into(), json!({ "id": key }));
        return Ok(());
    };
    match store.find(kind, &key).ok().flatten() {
        Some(id) => {
            body.insert(fk.into(), json!({ "id": id }));
            Ok(())
        }
        None => Err(format!(
            "invalid reference '{fk}: {key}' (no such entry in '{target}')"
        )),
    }
}

/// `uniqueness_error_msg`.
fn uniqueness(kind: Kind, key: &str, value: &str) -> String {
    format!(
        "uniqueness violation: '{}' entity with {key} set to '{value}' already declared",
        kind.name()
    )
}

/// A second entity with the same unique endpoint key, else with the same primary key
/// (`populate_references`, `add_to_by_key`).
fn duplicate(store: &Store, kind: Kind, body: &Row, id: &str) -> Option<String> {
    if let Some(key) = endpoint_value(kind, body) {
        if store.find(kind, &key).ok().flatten().is_some() {
            return Some(uniqueness(kind, kind.endpoint_key(), &key));
        }
    }
    (!id.is_empty() && store.row(kind, id).is_some()).then(|| uniqueness(kind, "primary key", id))
}

/// Where an error goes in `fields[kind]`: the entity's index, or a key.
#[derive(Clone, PartialEq)]
enum At {
    Index(usize),
    Key(String),
}

/// The errors of a load, by phase (Kong returns the first phase that has any).
#[derive(Default)]
struct Errors {
    /// Phase 1: the document's own keys.
    document: Map<String, Value>,
    /// Phase 1: each entity's schema errors, at its index.
    schema: BTreeMap<&'static str, Vec<(At, Value)>>,
    /// Phase 2: `validate_references`.
    references: BTreeMap<&'static str, Vec<(At, Value)>>,
    /// Phase 3: the other unique fields.
    unique: BTreeMap<&'static str, Vec<(At, Value)>>,
    /// The flattened list, per phase.
    flat: [Vec<Value>; 3],
}

impl Errors {
    fn document(&mut self, key: &str, msg: Value) {
        self.document.insert(key.into(), msg);
    }

    fn schema(&mut self, kind: Kind, index: usize, answer: &Value, original: &Row) {
        let mut e = answer
            .get("fields")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if e.is_empty() {
            let m = answer["message"].as_str().unwrap_or("invalid");
            e.insert("@entity".into(), json!([m]));
        }
        let mut flat: Vec<Value> = Vec::new();
        for (f, m) in &e {
            if f == "@entity" {
                let all = m.as_array().cloned().unwrap_or_default();
                flat.extend(all.iter().map(|m| json!({"type": "entity", "message": m})));
            } else {
                flat.push(json!({"type": "field", "field": f, "message": m}));
            }
        }
        self.flat[0].push(flat_entry(kind, original, flat));
        let list = self.schema.entry(kind.name()).or_default();
        list.push((At::Index(index), Value::Object(e)));
    }

    fn reference_at_index(&mut self, kind: Kind, index: usize, msg: String, original: &Row) {
        let flat = vec![json!({"type": "entity", "message": msg})];
        self.flat[1].push(flat_entry(kind, original, flat));
        let list = self.references.entry(kind.name()).or_default();
        list.push((At::Index(index), json!(msg)));
    }

    fn references_of(&mut self, kind: Kind, at: String, msgs: Vec<String>, original: &Row) {
        let flat = msgs
            .iter()
            .map(|m| json!({"type": "entity", "message": m}))
            .collect();
        self.flat[1].push(flat_entry(kind, original, flat));
        let list = self.references.entry(kind.name()).or_default();
        list.push((At::Key(at), json!(msgs)));
    }

    fn unique_field(&mut self, kind: Kind, key: String, msg: String) {
        let flat = vec![json!({"type": "entity", "message": msg})];
        self.flat[2].push(json!({"entity_type": singular(kind), "errors": flat}));
        let list = self.unique.entry(kind.name()).or_default();
        list.push((At::Key(key), json!(msg)));
    }

    /// The first phase with errors, as `fields` and the flattened list.
    fn into_result(self, loaded: Loaded) -> Result<Loaded, LoadError> {
        let [f0, f1, f2] = self.flat;
        let (phase, flat) = if !self.document.is_empty() || !self.schema.is_empty() {
            (self.schema, f0)
        } else if !self.references.is_empty() {
            (self.references, f1)
        } else if !self.unique.is_empty() {
            (self.unique, f2)
        } else {
            return Ok(loaded);
        };
        let mut fields = self.document;
        for (kind, entries) in phase {
            fields.insert(kind.into(), render(entries));
        }
        Err(Box::new((Value::Object(fields), Value::Array(flat))))
    }
}

/// A kind's errors as Lua's cjson writes the table: an array (nulls between) when every key is
/// an index, else an object (an index `i` as the key `"i+1"`).
fn render(entries: Vec<(At, Value)>) -> Value {
    if entries.iter().all(|(at, _)| matches!(at, At::Index(_))) {
        let mut a: Vec<Value> = Vec::new();
        for (at, v) in entries {
            if let At::Index(i) = at {
                while a.len() <= i {
                    a.push(Value::Null);
                }
                a[i] = v;
            }
        }
        return Value::Array(a);
    }
    let mut m = Map::new();
    for (at, v) in entries {
        let k = match at {
            At::Index(i) => (i + 1).to_string(),
            At::Key(k) => k,
        };
        m.insert(k, v);
    }
    Value::Object(m)
}

fn singular(kind: Kind) -> &'static str {
    kind.name().trim_end_matches('s')
}

/// One entry of `flattened_errors`.
fn flat_entry(kind: Kind, original: &Row, errors: Vec<Value>) -> Value {
    let mut item = json!({
        "entity_type": singular(kind),
        "entity": Value::Object(original.clone()),
        "errors": errors,
    });
    for (k, from) in [
        ("entity_name", "name"),
        ("entity_id", "id"),
        ("entity_tags", "tags"),
    ] {
        if let Some(v) = original.get(from) {
            item[k] = v.clone();
        }
    }
    item
}
