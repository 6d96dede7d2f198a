//! DB-less mode (`database=off`, kong-admin-3.4.md §7): `POST /config` replaces the whole
//! configuration at once — validated by loading it into a fresh store with the DB-mode rules —
//! with the hash check; `GET /config` exports it (`_transform: false`, foreign keys as ids); and
//! entity writes are refused as Kong refuses them without a database. Entity kinds the emulator
//! does not model (consumers, certificates, …) are kept and exported verbatim.

use super::entities::{is_uuid, Kind};
use super::errors::{pretty, Answer};
use super::paging::parse_query;
use super::store::{Row, Store};
use serde_json::{json, Map, Value};

/// `_format_version`s Kong 3.4 accepts.
const FORMAT_VERSIONS: &[&str] = &["1.1", "2.1", "3.0"];
/// The namespace of Kong's deterministic (UUIDv5) ids.
const ID_NAMESPACE: &str = "fd02801f-0957-4a15-a55a-c8d9606f30b5";
/// Entity kinds of Kong 3.4 the emulator keeps without modelling them.
const OPAQUE: &[&str] = &[
    "consumers",
    "certificates",
    "ca_certificates",
    "snis",
    "vaults",
    "key_sets",
    "keys",
];

/// The hash Kong reports before any configuration is loaded.
pub const EMPTY_HASH: &str = "00000000000000000000000000000000";

fn truthy(v: Option<&str>) -> bool {
    matches!(
        v.map(str::to_ascii_lowercase).as_deref(),
        Some("true" | "1" | "on" | "yes")
    )
}

fn md5_hex(s: &str) -> String {
    format!("{:x}", md5::compute(s.as_bytes()))
}

/// Kong's deterministic id of an entity of `kind` with unique key `key`.
fn deterministic_id(kind: &str, key: &str) -> String {
    let base = uuid::Uuid::parse_str(ID_NAMESPACE).expect("literal uuid");
    let ns = uuid::Uuid::new_v5(&base, kind.as_bytes());
    uuid::Uuid::new_v5(&ns, key.as_bytes()).to_string()
}

fn invalid(fields: Value, flattened: Option<Value>) -> Answer {
    let mut body = json!({
        "code": 14,
        "name": "invalid declarative configuration",
        "message": format!("declarative config is invalid: {}", pretty_fields(&fields)),
        "fields": fields,
    });
    if let Some(f) = flattened {
        body["flattened_errors"] = f;
    }
    Answer::ok(400, body)
}

/// Lua-style rendering of nested error tables (arrays as `{[2]=…}`).
fn pretty_fields(v: &Value) -> String {
    match v {
        Value::Array(a) => {
            let inner: Vec<String> = a
                .iter()
                .enumerate()
                .filter(|(_, x)| !x.is_null())
                .map(|(i, x)| format!("[{}]={}", i + 1, pretty_fields(x)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}={}", pretty_fields(&m[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => pretty(other),
    }
}

/// `POST /config`.
pub fn post_config(
    store: &mut Store,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let q = parse_query(query);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let check_hash = get("check_hash") == Some("1");
    let flatten = truthy(get("flatten_errors"));
    let ct = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    let text = String::from_utf8_lossy(body).into_owned();
    // the three input forms: a table with _format_version, {"config": string}, or a raw body
    let mut raw: Option<String> = None;
    let mut table: Option<Value> = None;
    match ct.as_deref() {
        Some("application/json") => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) if m.contains_key("_format_version") => {
                table = Some(Value::Object(m))
            }
            Ok(Value::Object(m)) if m.get("config").is_some_and(Value::is_string) => {
                raw = m["config"].as_str().map(String::from)
            }
            Ok(_) if !text.trim().is_empty() => raw = Some(text.clone()),
            Ok(_) => {}
            Err(_) if text.trim().is_empty() => {}
            Err(_) => return Answer::message(400, "Cannot parse JSON body"),
        },
        Some("application/x-www-form-urlencoded") => {
            raw = parse_query(&text)
                .into_iter()
                .find(|(k, _)| k == "config")
                .map(|(_, v)| v)
        }
        _ if !text.is_empty() => raw = Some(text.clone()),
        _ => {}
    }
    let new_hash = raw.as_deref().map(md5_hex);
    let table = match (table, &raw) {
        (Some(t), _) => t,
        (None, Some(r)) => {
            let parsed = serde_json::from_str::<Value>(r)
                .ok()
                .or_else(|| serde_yaml_ng::from_str::<Value>(r).ok());
            match parsed {
                Some(v @ Value::Object(_)) => v,
                _ => {
                    let e = "failed parsing declarative configuration: expected an object";
                    return Answer::ok(
                        400,
                        json!({"code": 14, "name": "invalid declarative configuration",
                               "message": format!("declarative config is invalid: {{error=\"{e}\"}}"),
                               "fields": {"error": e}}),
                    );
                }
            }
        }
        (None, None) => return Answer::message(400, "expected a declarative configuration"),
    };
    if check_hash && new_hash.as_deref() == Some(store.config_hash.as_str()) {
        return Answer {
            status: 304,
            body: None,
        };
    }
    let loaded = match load(&table, &store.available_plugins) {
        Ok(l) => l,
        Err(e) => {
            let (fields, flat) = *e;
            return invalid(fields, flatten.then_some(flat));
        }
    };
    let answer = Answer::ok(201, loaded.entities_by_id());
    store.config_hash =
        new_hash.unwrap_or_else(|| md5_hex(&serde_json::to_string(&table).unwrap_or_default()));
    store.replace_with(loaded.store, loaded.opaque);
    answer
}

struct Loaded {
    store: Store,
    opaque: Map<String, Value>,
}

impl Loaded {
    /// 201's body: each kind as a map of id to entity.
    fn entities_by_id(&self) -> Value {
        let mut out = Map::new();
        for kind in Kind::ALL {
            let m: Map<String, Value> = self
                .store
                .all(kind)
                .map(|r| {
                    (
                        r["id"].as_str().unwrap_or_default().to_string(),
                        Value::Object(r.clone()),
                    )
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

/// One entity of the input, hoisted out of its nesting: which list, where, and its references.
struct Item {
    kind: Kind,
    index: usize,
    body: Row,
}

/// Validate and load a declarative table into a fresh store. Errors: Kong's `fields` shape and
/// the flattened list.
fn load(table: &Value, available: &[String]) -> Result<Loaded, Box<(Value, Value)>> {
    let mut fields = Map::new();
    let mut flat: Vec<Value> = Vec::new();
    let top = table.as_object().cloned().unwrap_or_default();
    match top.get("_format_version").and_then(Value::as_str) {
        Some(v) if FORMAT_VERSIONS.contains(&v) => {}
        Some(_) => {
            fields.insert(
                "_format_version".into(),
                json!(format!("expected one of: {}", FORMAT_VERSIONS.join(", "))),
            );
        }
        None => {
            fields.insert("_format_version".into(), json!("required field missing"));
        }
    }
    let mut opaque = Map::new();
    for (k, v) in &top {
        if k.starts_with('_') || Kind::from_segment(k).is_some() {
            continue;
        }
        if OPAQUE.contains(&k.as_str()) {
            opaque.insert(k.clone(), v.clone());
        } else {
            fields.insert(k.clone(), json!("unknown field"));
        }
    }
    // hoist nested routes and plugins, remembering their parent by the parent's key
    let mut items: Vec<Item> = Vec::new();
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
    let mut nested_routes: Vec<Row> = Vec::new();
    let mut nested_plugins: Vec<Row> = Vec::new();
    for (i, mut s) in list("services").into_iter().enumerate() {
        let key = name_or_id(&s);
        hoist(&mut s, "routes", "service", &key, &mut nested_routes);
        hoist(&mut s, "plugins", "service", &key, &mut nested_plugins);
        items.push(Item {
            kind: Kind::Services,
            index: i,
            body: s,
        });
    }
    for (i, mut r) in list("routes").into_iter().chain(nested_routes).enumerate() {
        let key = r.get("name").cloned().unwrap_or(Value::Null);
        hoist(&mut r, "plugins", "route", &key, &mut nested_plugins);
        items.push(Item {
            kind: Kind::Routes,
            index: i,
            body: r,
        });
    }
    for (i, p) in list("plugins")
        .into_iter()
        .chain(nested_plugins)
        .enumerate()
    {
        items.push(Item {
            kind: Kind::Plugins,
            index: i,
            body: p,
        });
    }
    let mut nested_targets: Vec<Row> = Vec::new();
    for (i, mut u) in list("upstreams").into_iter().enumerate() {
        let key = name_or_id(&u);
        hoist(&mut u, "targets", "upstream", &key, &mut nested_targets);
        items.push(Item {
            kind: Kind::Upstreams,
            index: i,
            body: u,
        });
    }
    for (i, t) in list("targets")
        .into_iter()
        .chain(nested_targets)
        .enumerate()
    {
        items.push(Item {
            kind: Kind::Targets,
            index: i,
            body: t,
        });
    }

    let mut store = Store::new(available.to_vec());
    store.dbless = true;
    let mut errors: Map<String, Value> = Map::new();
    for it in items {
        let name = it.kind.name();
        let mut body = it.body;
        let original = body.clone();
        let mut entity_errors: Vec<String> = Vec::new();
        // references: a string holding a name or an id
        for (fk, target) in super::entities::foreign_keys(it.kind) {
            let Some(v) = body.get(*fk).cloned() else {
                continue;
            };
            let key = match &v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o
                    .get("id")
                    .or_else(|| o.get("name"))
                    .and_then(Value::as_str)
                    .map(String::from),
                _ => None,
            };
            let Some(key) = key else { continue };
            let tk = match *target {
                "services" => Kind::Services,
                "routes" => Kind::Routes,
                "upstreams" => Kind::Upstreams,
                _ => {
                    body.insert((*fk).into(), json!({ "id": key }));
                    continue;
                }
            };
            match store.find(tk, &key).ok().flatten() {
                Some(id) => {
                    body.insert((*fk).into(), json!({ "id": id }));
                }
                None => entity_errors.push(format!(
                    "invalid reference '{fk}: {key}' (no such entry in '{target}')"
                )),
            }
        }
        // ids: given, else deterministic from the unique key (plugins: their cache key)
        let given_id = body.get("id").and_then(Value::as_str).map(String::from);
        let unique = match it.kind {
            Kind::Plugins => Some(format!(
                "plugins:{}:{}:{}:{}:",
                body.get("name").and_then(Value::as_str).unwrap_or(""),
                fk_id(&body, "route"),
                fk_id(&body, "service"),
                fk_id(&body, "consumer"),
            )),
            Kind::Targets => Some(format!(
                "targets:{}:{}:",
                fk_id(&body, "upstream"),
                body.get("target")
                    .and_then(Value::as_str)
                    .and_then(super::entities::normalize_target)
                    .unwrap_or_default(),
            )),
            _ => body.get("name").and_then(Value::as_str).map(String::from),
        };
        if let Some(n) = body.get("name").and_then(Value::as_str) {
            if !matches!(it.kind, Kind::Plugins | Kind::Targets)
                && store.find(it.kind, n).ok().flatten().is_some()
            {
                entity_errors.push(format!(
                    "uniqueness violation: '{name}' entity with name set to '{n}' already declared"
                ));
            }
        }
        let id = match given_id {
            Some(id) if is_uuid(&id) => id.to_ascii_lowercase(),
            Some(_) => String::new(),
            None => match &unique {
                Some(u) => deterministic_id(name, u),
                None => store.new_uuid(),
            },
        };
        if !id.is_empty() && store.row(it.kind, &id).is_some() {
            entity_errors.push(format!(
                "uniqueness violation: '{name}' entity with primary key set to '{id}' already declared"
            ));
        }
        let mut field_errors = Map::new();
        if entity_errors.is_empty() {
            if !id.is_empty() {
                body.insert("id".into(), json!(id));
            }
            let a = store.create(it.kind, body, None);
            if a.status != 201 {
                let b = a.body.unwrap_or(Value::Null);
                match b.get("fields").and_then(Value::as_object) {
                    Some(f) => field_errors = f.clone(),
                    None => entity_errors.push(
                        b.get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("invalid")
                            .to_string(),
                    ),
                }
            }
        }
        if entity_errors.is_empty() && field_errors.is_empty() {
            continue;
        }
        let mut e = field_errors.clone();
        if !entity_errors.is_empty() {
            e.insert("@entity".into(), json!(entity_errors));
        }
        let slot = errors.entry(name.to_string()).or_insert_with(|| json!([]));
        if let Value::Array(a) = slot {
            while a.len() <= it.index {
                a.push(Value::Null);
            }
            a[it.index] = Value::Object(e);
        }
        let mut errs: Vec<Value> = field_errors
            .iter()
            .map(|(f, m)| json!({"type": "field", "field": f, "message": m}))
            .collect();
        errs.extend(
            entity_errors
                .iter()
                .map(|m| json!({"type": "entity", "message": m})),
        );
        let mut item = json!({
            "entity_type": name.trim_end_matches('s'),
            "entity": Value::Object(original.clone()),
            "errors": errs,
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
        flat.push(item);
    }
    for (k, v) in errors {
        fields.insert(k, v);
    }
    if fields.is_empty() {
        Ok(Loaded { store, opaque })
    } else {
        Err(Box::new((Value::Object(fields), Value::Array(flat))))
    }
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
fn hoist(parent: &mut Row, list: &str, fk: &str, key: &Value, into: &mut Vec<Row>) {
    if let Some(Value::Array(a)) = parent.remove(list) {
        for mut child in a.into_iter().filter_map(|x| x.as_object().cloned()) {
            child.insert(fk.into(), key.clone());
            into.push(child);
        }
    }
}

fn fk_id(body: &Row, fk: &str) -> String {
    body.get(fk)
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `GET /config`: the loaded configuration as YAML, foreign keys as ids, `_transform: false`.
pub fn export(store: &Store) -> Answer {
    let mut doc = Map::new();
    doc.insert("_format_version".into(), json!("3.0"));
    doc.insert("_transform".into(), json!(false));
    for kind in Kind::ALL {
        let rows: Vec<Value> = store
            .all(kind)
            .map(|r| {
                let mut r = r.clone();
                for (fk, _) in super::entities::foreign_keys(kind) {
                    if let Some(id) = r.get(*fk).and_then(|v| v.get("id")).cloned() {
                        r.insert((*fk).into(), id);
                    }
                }
                Value::Object(r)
            })
            .collect();
        if !rows.is_empty() {
            doc.insert(kind.name().into(), Value::Array(rows));
        }
    }
    for (k, v) in &store.opaque {
        doc.insert(k.clone(), v.clone());
    }
    let yaml = serde_yaml_ng::to_string(&Value::Object(doc)).unwrap_or_default();
    Answer::ok(200, json!({ "config": yaml }))
}

/// An entity write without a database: 405 code 12 (DELETE of a missing entity is 204 and
/// PATCH of one 404, as Kong's order of checks gives).
pub fn refuse_write(store: &Store, kind: Kind, seg: Option<&str>, method: &str) -> Answer {
    let e = kind.name();
    let by_name = seg.is_some_and(|s| !is_uuid(s));
    let exists = seg.is_some_and(|s| store.find(kind, s).ok().flatten().is_some());
    let by = if by_name {
        format!(" by '{}'", kind.endpoint_key())
    } else {
        String::new()
    };
    let message = match (method, seg) {
        ("POST", None) => format!("cannot create '{e}' entities when not using a database"),
        ("PUT", Some(_)) => {
            format!("cannot create or update '{e}' entities{by} when not using a database")
        }
        ("PATCH", Some(s)) if !exists => {
            return super::errors::dao_not_found(
                if by_name { kind.endpoint_key() } else { "id" },
                s,
            )
        }
        ("PATCH", Some(_)) => format!("cannot update '{e}' entities{by} when not using a database"),
        ("DELETE", Some(_)) if !exists => return Answer::no_content(),
        ("DELETE", Some(_)) => {
            format!("cannot remove '{e}' entities{by} when not using a database")
        }
        _ => return Answer::method_not_allowed(),
    };
    Answer::ok(
        405,
        json!({"code": 12, "name": "operation unsupported", "message": message}),
    )
}
