//! DB-less mode (`database=off`, kong-admin-3.4.md §7): `POST /config` replaces the whole
//! configuration at once — validated by loading it into a fresh store (`declarative.rs`) —
//! with the hash check; `GET /config` exports it (`_transform: false`, foreign keys as ids); and
//! entity writes are refused as Kong refuses them without a database. Entity kinds the emulator
//! does not model (consumers, certificates, …) are kept and exported verbatim.

use super::declarative::load;
use super::entities::{is_uuid, Kind};
use super::errors::{pretty, Answer};
use super::paging::parse_query;
use super::store::Store;
use serde_json::{json, Map, Value};

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
