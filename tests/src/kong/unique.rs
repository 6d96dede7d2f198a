//! The store's unique keys, looked up as Postgres looks them up in its unique indexes: a name
//! (a consumer's username and custom_id), a plugin's and a target's cache key. A write's checks
//! and a lookup by name then cost the same with 5 rows or 5,000, as they do in Kong's database.

use super::entities::Kind;
use super::store::Row;
use serde_json::{json, Value};
use std::collections::HashMap;

/// One unique key of a row: which constraint, and the values it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The entity's endpoint key (`name`, `username`, `instance_name`) with its value.
    Named(Kind, String),
    /// A consumer's `custom_id`.
    CustomId(String),
    /// A plugin's `{consumer, name, route, service}` or a target's `{target, upstream}`.
    Cache(Kind, String),
}

impl Key {
    /// The answer's `fields` for a violation of this key, by the row that would break it.
    pub fn violated(&self, kind: Kind, row: &Row) -> Value {
        match self {
            Key::Named(..) => json!({ kind.endpoint_key(): row[kind.endpoint_key()] }),
            Key::CustomId(_) => json!({ "custom_id": row["custom_id"] }),
            Key::Cache(..) => cache_key(kind, row).expect("a cache key"),
        }
    }
}

/// A row's cache key as Kong prints it in a violation (plugins and targets only).
fn cache_key(kind: Kind, row: &Row) -> Option<Value> {
    let f = |name: &str| row.get(name).cloned().unwrap_or(Value::Null);
    match kind {
        Kind::Plugins => Some(json!({"consumer": f("consumer"), "name": f("name"),
            "route": f("route"), "service": f("service")})),
        Kind::Targets => Some(json!({"target": f("target"), "upstream": f("upstream")})),
        _ => None,
    }
}

/// The unique keys of a row of `kind`.
pub fn keys(kind: Kind, row: &Row) -> Vec<Key> {
    let mut keys = Vec::new();
    // a target's address is unique per upstream only: its cache key
    if kind != Kind::Targets {
        if let Some(v) = row.get(kind.endpoint_key()).filter(|v| !v.is_null()) {
            keys.push(Key::Named(kind, v.to_string()));
        }
    }
    if kind == Kind::Consumers {
        if let Some(v) = row.get("custom_id").filter(|v| !v.is_null()) {
            keys.push(Key::CustomId(v.to_string()));
        }
    }
    if let Some(ck) = cache_key(kind, row) {
        keys.push(Key::Cache(kind, ck.to_string()));
    }
    keys
}

/// The key a lookup by endpoint key (a name in a URL) finds a row of `kind` by.
pub fn named(kind: Kind, value: &str) -> Key {
    Key::Named(kind, Value::from(value).to_string())
}

/// Unique key → the id of the row holding it.
#[derive(Debug, Default)]
pub struct Index(HashMap<Key, String>);

impl Index {
    pub fn get(&self, key: &Key) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn insert(&mut self, kind: Kind, id: &str, row: &Row) {
        self.add(keys(kind, row), id);
    }

    /// These keys held by row `id`.
    pub fn add(&mut self, keys: Vec<Key>, id: &str) {
        for k in keys {
            self.0.insert(k, id.to_string());
        }
    }

    /// The keys of row `id`, gone or about to change.
    pub fn remove(&mut self, kind: Kind, id: &str, row: &Row) {
        for k in keys(kind, row) {
            if self.get(&k) == Some(id) {
                self.0.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kong::admin::{handle, AdminRequest};
    use crate::kong::store::Store;
    use serde_json::{json, Value};

    fn req(s: &mut Store, method: &str, path: &str, body: Value) -> u16 {
        let body = body.to_string();
        let r = AdminRequest {
            method,
            path,
            query: "",
            content_type: Some("application/json"),
            body: body.as_bytes(),
        };
        handle(s, &r).status
    }

    #[test]
    fn a_key_is_taken_while_its_row_holds_it_and_free_once_the_row_changes_or_goes() {
        let mut s = Store::new(vec!["cors".into()]);
        let svc = json!({"url": "http://a:80"});
        assert_eq!(req(&mut s, "PUT", "/services/a", svc.clone()), 200);
        assert_eq!(
            req(
                &mut s,
                "POST",
                "/services",
                json!({"name": "a", "url": "http://b"})
            ),
            409
        );
        // renamed: the old name is free and unknown, the new one taken
        assert_eq!(
            req(&mut s, "PATCH", "/services/a", json!({"name": "b"})),
            200
        );
        assert_eq!(req(&mut s, "GET", "/services/a", json!(null)), 404);
        assert_eq!(req(&mut s, "GET", "/services/b", json!(null)), 200);
        assert_eq!(
            req(
                &mut s,
                "POST",
                "/services",
                json!({"name": "a", "url": "http://c"})
            ),
            201
        );
        // a plugin's cache key: taken, then freed by its service's delete (the cascade)
        let cors = json!({"name": "cors", "service": {"name": "b"}});
        assert_eq!(req(&mut s, "POST", "/plugins", cors.clone()), 201);
        assert_eq!(req(&mut s, "POST", "/plugins", cors.clone()), 409);
        assert_eq!(req(&mut s, "DELETE", "/services/b", json!(null)), 204);
        assert_eq!(req(&mut s, "PUT", "/services/b", svc), 200);
        assert_eq!(req(&mut s, "POST", "/plugins", cors), 201);
        // a target's address is unique per upstream, freed with its upstream
        for u in ["u1", "u2"] {
            assert_eq!(
                req(&mut s, "PUT", &format!("/upstreams/{u}"), json!({})),
                200
            );
        }
        let t = json!({"target": "10.0.0.2:5000"});
        assert_eq!(req(&mut s, "POST", "/upstreams/u1/targets", t.clone()), 201);
        assert_eq!(req(&mut s, "POST", "/upstreams/u1/targets", t.clone()), 409);
        assert_eq!(req(&mut s, "POST", "/upstreams/u2/targets", t.clone()), 201);
        assert_eq!(req(&mut s, "DELETE", "/upstreams/u1", json!(null)), 204);
        assert_eq!(req(&mut s, "PUT", "/upstreams/u1", json!({})), 200);
        assert_eq!(req(&mut s, "POST", "/upstreams/u1/targets", t), 201);
    }
}
