//! The Admin API router: maps method + path onto store operations, parses bodies
//! (JSON, form; 415 for anything else) and serves `GET /`, `/status`, `/plugins/enabled`.

use super::entities::Kind;
use super::errors::Answer;
use super::paging::{parse_query, unescape_uri};
use super::store::{Row, Store};
use super::{balancer, dbless};
use serde_json::{json, Map, Value};

pub struct AdminRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// The `Allow` list for OPTIONS on `path`: collections and entities; None for unknown paths.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let known = |s: &str| Kind::from_segment(s).is_some();
    match segs.as_slice() {
        [] | ["status"] => Some("GET, HEAD, OPTIONS"),
        [e] if known(e) => Some("GET, HEAD, OPTIONS, POST"),
        [e, _] if known(e) => Some("DELETE, GET, HEAD, OPTIONS, PATCH, PUT"),
        ["routes", _, "service"] => Some("GET, HEAD, OPTIONS, PATCH, PUT"),
        [p, _, c] if known(p) && known(c) => Some("GET, HEAD, OPTIONS, POST"),
        [p, _, c, _] if known(p) && known(c) => Some("DELETE, GET, HEAD, OPTIONS, PATCH, PUT"),
        _ => None,
    }
}

pub fn handle(store: &mut Store, req: &AdminRequest) -> Answer {
    let path = if req.path.len() > 1 {
        req.path.trim_end_matches('/')
    } else {
        req.path
    };
    let raw: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let segs: Vec<String> = raw.iter().map(|s| unescape_uri(s)).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method;
    let query = parse_query(req.query);
    let body = || parse_body(req);

    match s.as_slice() {
        [] => match m {
            "GET" | "HEAD" => Answer::ok(200, root_info(store)),
            _ => Answer::method_not_allowed(),
        },
        ["status"] => match m {
            "GET" | "HEAD" => Answer::ok(200, status_info(store)),
            _ => Answer::method_not_allowed(),
        },
        // targets live under their upstream only
        ["targets", ..] => Answer::not_found(),
        ["tags", tag] if m == "GET" => store.list_tag(tag, &query),
        ["config"] if !store.dbless => Answer::message(
            400,
            "this endpoint is only available when Kong is configured to not use a database",
        ),
        ["config"] => match m {
            "GET" => dbless::export(store),
            "POST" => dbless::post_config(store, req.query, req.content_type, req.body),
            _ => Answer::method_not_allowed(),
        },
        [e, rest @ ..]
            if store.dbless
                && matches!(m, "POST" | "PUT" | "PATCH" | "DELETE")
                && Kind::from_segment(e).is_some()
                && rest.len() <= 3 =>
        {
            dbless_write(store, &s, m)
        }
        ["plugins", "enabled"] if m == "GET" => {
            Answer::ok(200, json!({ "enabled_plugins": store.available_plugins }))
        }
        [e] => {
            let Some(kind) = Kind::from_segment(e) else {
                return Answer::not_found();
            };
            match m {
                "GET" => store.list(kind, None, &query, &format!("/{}", kind.name())),
                "POST" => match body() {
                    Ok(b) => store.create(kind, b, None),
                    Err(a) => a,
                },
                _ => Answer::method_not_allowed(),
            }
        }
        [e, id] => {
            let Some(kind) = Kind::from_segment(e) else {
                return Answer::not_found();
            };
            entity_op(store, kind, id, m, body, None)
        }
        ["routes", r, "service"] => route_service(store, r, m, body),
        ["upstreams", u, rest @ ..] if matches!(rest.first(), Some(&"targets" | &"health")) => {
            let base = format!("/upstreams/{}/{}", raw[1], rest.join("/"));
            balancer::handle(store, u, rest, m, body, &query, &base)
        }
        [p, pid, c, rest @ ..] if rest.len() <= 1 => {
            nested(store, (p, pid, c), rest, m, body, &query, raw[1])
        }
        _ => Answer::not_found(),
    }
}

/// `/{parents}/{parent}/{children}[/{child}]`: a service's routes and plugins, a route's plugins,
/// scoped to the parent (`raw_parent`: the parent segment as written, for `next`).
fn nested(
    store: &mut Store,
    (p, pid, c): (&str, &str, &str),
    rest: &[&str],
    m: &str,
    body: impl Fn() -> Result<Row, Answer>,
    query: &[(String, String)],
    raw_parent: &str,
) -> Answer {
    let (Some(pk), Some(ck)) = (Kind::from_segment(p), Kind::from_segment(c)) else {
        return Answer::not_found();
    };
    let fk = match (pk, ck) {
        (Kind::Services, Kind::Routes) => "service",
        (Kind::Services, Kind::Plugins) => "service",
        (Kind::Routes, Kind::Plugins) => "route",
        (Kind::Consumers, Kind::Plugins) => "consumer",
        _ => return Answer::not_found(),
    };
    let parent = match store.find(pk, pid) {
        Err(a) => return a,
        Ok(None) => return Answer::not_found(),
        Ok(Some(id)) => id,
    };
    let scope = Some((fk, parent.as_str()));
    match rest {
        [] => match m {
            "GET" => store.list(ck, scope, query, &format!("/{p}/{raw_parent}/{c}")),
            "POST" => match body() {
                Ok(b) => store.create(ck, b, scope),
                Err(a) => a,
            },
            _ => Answer::method_not_allowed(),
        },
        [cid] => entity_op(store, ck, cid, m, body, scope),
        _ => Answer::not_found(),
    }
}

/// A write on an entity path in DB-less mode: the entity it names (the last kind/segment pair)
/// decides the refusal.
fn dbless_write(store: &Store, s: &[&str], m: &str) -> Answer {
    // a target is found within its upstream, by address or id (`target_endpoint`)
    if let ["upstreams", u, "targets", t] = s {
        let found = store
            .find(Kind::Upstreams, u)
            .ok()
            .flatten()
            .and_then(|uid| store.find_target(&uid, t));
        return match found {
            None => Answer::not_found(),
            Some(id) => dbless::refuse_write(store, Kind::Targets, Some(&id), m),
        };
    }
    let (kind, seg) = match s {
        [e] | [_, _, e] => (Kind::from_segment(e), None),
        [e, id] | [_, _, e, id] => (Kind::from_segment(e), Some(*id)),
        _ => (None, None),
    };
    match kind {
        Some(k) => dbless::refuse_write(store, k, seg, m),
        None => Answer::not_found(),
    }
}

fn entity_op(
    store: &mut Store,
    kind: Kind,
    seg: &str,
    method: &str,
    body: impl Fn() -> Result<Row, Answer>,
    scope: Option<(&str, &str)>,
) -> Answer {
    match method {
        "GET" => store.get(kind, seg, scope),
        "DELETE" => store.delete(kind, seg, scope),
        "PUT" => match body() {
            Ok(b) => store.upsert(kind, seg, b, scope),
            Err(a) => a,
        },
        "PATCH" => match body() {
            Ok(b) => store.patch(kind, seg, b, scope),
            Err(a) => a,
        },
        _ => Answer::method_not_allowed(),
    }
}

/// `/routes/{r}/service`: the parent as a sub-resource (DELETE is 405).
fn route_service(
    store: &mut Store,
    r: &str,
    method: &str,
    body: impl Fn() -> Result<Row, Answer>,
) -> Answer {
    let route = match store.find(Kind::Routes, r) {
        Err(a) => return a,
        Ok(None) => return Answer::not_found(),
        Ok(Some(id)) => id,
    };
    let svc = store.route_service(&route);
    match (method, svc) {
        ("GET", Some(s)) => store.get(Kind::Services, &s, None),
        ("GET", None) => Answer::not_found(),
        ("PATCH", Some(s)) => match body() {
            Ok(b) => store.patch(Kind::Services, &s, b, None),
            Err(a) => a,
        },
        ("PATCH", None) => Answer::not_found(),
        ("PUT", existing) => {
            let b = match body() {
                Ok(b) => b,
                Err(a) => return a,
            };
            let sid = existing.unwrap_or_else(|| store.new_uuid());
            let a = store.upsert(Kind::Services, &sid, b, None);
            if a.status == 200 {
                let patch: Row = json!({"service": {"id": sid}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                store.patch(Kind::Routes, &route, patch, None);
            }
            a
        }
        _ => Answer::method_not_allowed(),
    }
}

/// Parse a POST/PUT/PATCH body. JSON is taken as is; form input is type-inferred.
fn parse_body(req: &AdminRequest) -> Result<Row, Answer> {
    let ct = req.content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match ct.as_deref() {
        None if req.body.is_empty() => Ok(Map::new()),
        Some("application/json") => {
            if req.body.iter().all(|b| b.is_ascii_whitespace()) {
                return Ok(Map::new());
            }
            match serde_json::from_slice::<Value>(req.body) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) | Err(_) => Err(Answer::message(400, "Cannot parse JSON body")),
            }
        }
        Some("application/x-www-form-urlencoded") => {
            Ok(form_to_row(&String::from_utf8_lossy(req.body)))
        }
        Some("multipart/form-data") => Ok(Map::new()),
        _ => Err(Answer::message(415, "Unsupported Media Type")),
    }
}

/// `a=1&b.c=x&paths[]=/p&paths[]=/q` → `{"a":1,"b":{"c":"x"},"paths":["/p","/q"]}`.
fn form_to_row(body: &str) -> Row {
    let mut out = Map::new();
    for (k, v) in parse_query(body) {
        let infer = |v: &str| -> Value {
            if let Ok(n) = v.parse::<i64>() {
                json!(n)
            } else if v == "true" || v == "false" {
                json!(v == "true")
            } else {
                json!(v)
            }
        };
        let (key, is_array) = match k.find('[') {
            Some(i) => (k[..i].to_string(), true),
            None => (k.clone(), false),
        };
        if let Some((a, b)) = key.split_once('.') {
            let e = out.entry(a.to_string()).or_insert_with(|| json!({}));
            if let Some(o) = e.as_object_mut() {
                o.insert(b.to_string(), infer(&v));
            }
        } else if is_array {
            let e = out.entry(key).or_insert_with(|| json!([]));
            if let Some(a) = e.as_array_mut() {
                a.push(json!(v));
            }
        } else {
            out.insert(key, infer(&v));
        }
    }
    out
}

fn root_info(store: &Store) -> Value {
    let available: Map<String, Value> = store
        .available_plugins
        .iter()
        .map(|p| (p.clone(), json!({"version": "3.4.2", "priority": 1000})))
        .collect();
    json!({
        "tagline": "Welcome to kong",
        "version": "3.4.2",
        "hostname": "kong-emulator",
        "node_id": store.node_id,
        "timers": {"running": 0, "pending": 0},
        "plugins": {"available_on_server": available, "enabled_in_cluster": store.plugins_in_use()},
        "lua_version": "LuaJIT 2.1.0-20230410",
        "configuration": {"database": if store.dbless { "off" } else { "postgres" }, "admin_listen": ["0.0.0.0:8001"], "pg_password": "******",
                          "worker_consistency": store.timing.consistency.as_str(),
                          "worker_state_update_frequency": store.timing.frequency_json()},
        "pids": {"master": std::process::id(), "workers": [std::process::id()]},
    })
}

fn status_info(store: &Store) -> Value {
    let mut v = json!({
        "memory": {
            "lua_shared_dicts": {"kong": {"allocated_slabs": "0.04 MiB", "capacity": "5.00 MiB"},
                                  "kong_db_cache": {"allocated_slabs": "0.80 MiB", "capacity": "128.00 MiB"}},
            "workers_lua_vms": [{"http_allocated_gc": "40.21 MiB", "pid": std::process::id()}]
        },
        "server": {"connections_accepted": 0, "connections_active": 0, "connections_handled": 0,
                   "connections_reading": 0, "connections_waiting": 0, "connections_writing": 0,
                   "total_requests": 0}
    });
    // DB mode: database.reachable and no hash; DB-less: the configuration's hash, no database
    if store.dbless {
        v["configuration_hash"] = json!(store.config_hash);
    } else {
        v["database"] = json!({"reachable": true});
    }
    v
}
