//! The emulator's database: services, routes, plugins, upstreams and targets in DB-mode
//! (Postgres) semantics — ids ordered ascending, unique names, foreign-key refusal, the plugin
//! and target cascades (kong-admin-3.4.md §1–5, `UPSTREAMS.md`) — and the balancer's health state.

use super::entities::{self, foreign_keys, is_uuid, valid_name, Kind};
use super::errors::{self, Answer, FieldErrors};
use super::paging;
use super::unique;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub type Row = Map<String, Value>;

/// A nested collection's parent: (foreign-key field on the child, parent id).
pub type Scope<'a> = Option<(&'a str, &'a str)>;

pub struct Store {
    services: BTreeMap<String, Row>,
    routes: BTreeMap<String, Row>,
    plugins: BTreeMap<String, Row>,
    consumers: BTreeMap<String, Row>,
    upstreams: BTreeMap<String, Row>,
    targets: BTreeMap<String, Row>,
    /// What the proxy's balancer knows of each target (by target id): health, round-robin.
    pub balancer: super::balancer::BalancerState,
    pub available_plugins: Vec<String>,
    pub node_id: String,
    seed: u64,
    counter: u64,
    /// DB-less mode (`database=off`): entities come only from `POST /config` (dbless.rs).
    pub dbless: bool,
    /// `worker_consistency` and `worker_state_update_frequency`, as `GET /` reports them.
    pub timing: super::timing::Timing,
    /// md5 of the loaded declarative configuration (DB-less), zeros before the first.
    pub config_hash: String,
    /// Entity kinds loaded in DB-less mode that the emulator keeps without modelling them.
    pub opaque: Map<String, Value>,
    /// Bumped by every write to routes or services (Kong invalidates `router:version`,
    /// `kong/runloop/events.lua`): a router built from an older one is stale.
    router_version: u64,
    /// Bumped by every write to plugins (`plugins_iterator:version`).
    plugins_version: u64,
    /// When each route (by name) was last written, in unix seconds: the moment a read sees it,
    /// for a benchmark to time a change without polling the store.
    routes_written: std::collections::HashMap<String, f64>,
    /// The unique keys of every row (`unique`), kept with each write.
    unique: unique::Index,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn route_name(row: &Row) -> Option<String> {
    row.get("name").and_then(|v| v.as_str()).map(String::from)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    pub fn new(available_plugins: Vec<String>) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            ^ (std::process::id() as u64).rotate_left(32);
        let mut s = Store {
            services: BTreeMap::new(),
            routes: BTreeMap::new(),
            plugins: BTreeMap::new(),
            consumers: BTreeMap::new(),
            upstreams: BTreeMap::new(),
            targets: BTreeMap::new(),
            balancer: Default::default(),
            available_plugins,
            node_id: String::new(),
            seed,
            counter: 0,
            dbless: false,
            timing: Default::default(),
            config_hash: super::dbless::EMPTY_HASH.to_string(),
            opaque: Map::new(),
            router_version: 0,
            plugins_version: 0,
            routes_written: Default::default(),
            unique: Default::default(),
        };
        s.node_id = s.new_uuid();
        s
    }

    /// A random-looking v4 UUID (splitmix64 over a per-process seed; unique, not cryptographic).
    pub fn new_uuid(&mut self) -> String {
        let mut next = || {
            self.counter += 1;
            let mut z = self
                .seed
                .wrapping_add(self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (next(), next());
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
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

    /// DB-less: the entities of a newly loaded configuration replace all of these.
    pub fn replace_with(&mut self, loaded: Store, opaque: Map<String, Value>) {
        self.services = loaded.services;
        self.routes = loaded.routes;
        self.plugins = loaded.plugins;
        self.consumers = loaded.consumers;
        self.upstreams = loaded.upstreams;
        self.targets = loaded.targets;
        self.opaque = opaque;
        let mut index = unique::Index::default();
        for kind in Kind::ALL {
            for (id, row) in self.table(kind) {
                index.insert(kind, id, row);
            }
        }
        self.unique = index;
        let names: Vec<String> = self.routes.values().filter_map(route_name).collect();
        for name in names {
            self.routes_written.insert(name, unix_now());
        }
        self.balancer.forget_missing(&self.upstreams, &self.targets);
        self.router_version += 1;
        self.plugins_version += 1;
    }

    /// The version of the routes and services (see `router::Router::build`).
    pub fn router_version(&self) -> u64 {
        self.router_version
    }

    /// The version of the plugins (see `iterator::PluginsIterator::build`).
    pub fn plugins_version(&self) -> u64 {
        self.plugins_version
    }

    fn table(&self, kind: Kind) -> &BTreeMap<String, Row> {
        match kind {
            Kind::Services => &self.services,
            Kind::Routes => &self.routes,
            Kind::Plugins => &self.plugins,
            Kind::Consumers => &self.consumers,
            Kind::Upstreams => &self.upstreams,
            Kind::Targets => &self.targets,
        }
    }
    /// A row created or replaced (a route's write time noted).
    fn commit(&mut self, kind: Kind, id: String, row: Row) {
        if let Some(name) = route_name(&row).filter(|_| kind == Kind::Routes) {
            self.routes_written.insert(name, unix_now());
        }
        let keys = unique::keys(kind, &row);
        if let Some(old) = self.table_mut(kind).insert(id.clone(), row) {
            self.unique.remove(kind, &id, &old);
        }
        self.unique.add(keys, &id);
    }

    /// Rows of `kind` removed (the only way one goes).
    fn drop_rows(&mut self, kind: Kind, gone: impl Fn(&Row) -> bool) {
        let ids: Vec<String> = self
            .table(kind)
            .iter()
            .filter(|(_, r)| gone(r))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.drop_row(kind, &id);
        }
    }

    fn drop_row(&mut self, kind: Kind, id: &str) {
        if let Some(row) = self.table_mut(kind).remove(id) {
            self.unique.remove(kind, id, &row);
        }
    }

    /// When the route named `name` was last written (unix seconds), if it ever was.
    pub fn route_written_at(&self, name: &str) -> Option<f64> {
        self.routes_written.get(name).copied()
    }

    /// Every write goes through here, and marks the router or the plugins iterator stale.
    fn table_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Row> {
        match kind {
            Kind::Services | Kind::Routes => self.router_version += 1,
            Kind::Plugins => self.plugins_version += 1,
            Kind::Consumers | Kind::Upstreams | Kind::Targets => {}
        }
        match kind {
            Kind::Services => &mut self.services,
            Kind::Routes => &mut self.routes,
            Kind::Plugins => &mut self.plugins,
            Kind::Consumers => &mut self.consumers,
            Kind::Upstreams => &mut self.upstreams,
            Kind::Targets => &mut self.targets,
        }
    }

    pub fn all(&self, kind: Kind) -> impl Iterator<Item = &Row> {
        self.table(kind).values()
    }

    /// Resolve a path segment: a UUID is always an id, anything else the endpoint key.
    /// Err is the 400 code-10 answer for an invalid name.
    pub fn find(&self, kind: Kind, seg: &str) -> Result<Option<String>, Answer> {
        if is_uuid(seg) {
            let id = seg.to_ascii_lowercase();
            return Ok(self.table(kind).contains_key(&id).then_some(id));
        }
        if kind == Kind::Targets {
            return Ok(None);
        }
        // a username is any string (`consumers.lua`: `type = "string"`), not a name
        if kind != Kind::Consumers && !valid_name(seg) {
            return Err(errors::invalid_unique(kind.endpoint_key(), seg));
        }
        Ok(self.unique.get(&unique::named(kind, seg)).map(String::from))
    }

    fn belongs(&self, kind: Kind, id: &str, scope: Scope) -> bool {
        match scope {
            None => true,
            Some((fk, parent)) => {
                self.table(kind)[id]
                    .get(fk)
                    .and_then(|v| v.get("id"))
                    .and_then(|v| v.as_str())
                    == Some(parent)
            }
        }
    }

    pub fn get(&self, kind: Kind, seg: &str, scope: Scope) -> Answer {
        match self.find(kind, seg) {
            Err(a) => a,
            Ok(Some(id)) if self.belongs(kind, &id, scope) => {
                Answer::ok(200, Value::Object(self.table(kind)[&id].clone()))
            }
            Ok(_) => Answer::not_found(),
        }
    }

    /// Turn `{"name": …}` foreign references into `{"id": …}`; code 13 / code 2 on failure.
    fn resolve_foreign(&self, kind: Kind, body: &mut Row) -> Result<(), Answer> {
        for (fk, target) in foreign_keys(kind) {
            let Some(Value::Object(r)) = body.get(*fk).cloned() else {
                continue;
            };
            if let Some(id) = r.get("id").filter(|v| !v.is_null()) {
                body.insert((*fk).into(), json!({ "id": id }));
                continue;
            }
            let key = if *target == "consumers" {
                "username"
            } else {
                "name"
            };
            match r.get(key).and_then(|v| v.as_str()) {
                Some(name) => {
                    let found = match Kind::from_segment(target) {
                        Some(k) if k != Kind::Targets => self.find(k, name).ok().flatten(),
                        _ => None,
                    };
                    match found {
                        Some(id) => {
                            body.insert((*fk).into(), json!({ "id": id }));
                        }
                        None => return Err(errors::fk_unresolved(fk, key, name, target)),
                    }
                }
                None => {
                    let mut e = FieldErrors::default();
                    e.nested(fk, json!({"id": "missing primary key"}));
                    return Err(e.into_answer());
                }
            }
        }
        Ok(())
    }

    /// Foreign ids must exist (code 4); uniqueness (code 5) and plugin protocol checks.
    fn check_relations(&self, kind: Kind, row: &Row, self_id: Option<&str>) -> Result<(), Answer> {
        for (fk, target) in foreign_keys(kind) {
            if let Some(id) = row.get(*fk).and_then(|v| v.get("id")) {
                let Some(id_s) = id.as_str().filter(|s| is_uuid(s)) else {
                    let mut e = FieldErrors::default();
                    e.nested(fk, json!({"id": "expected a valid UUID"}));
                    return Err(e.into_answer());
                };
                let exists = Kind::from_segment(target)
                    .is_some_and(|k| self.table(k).contains_key(&id_s.to_ascii_lowercase()));
                if !exists {
                    return Err(errors::fk_unknown_id(fk, target, id_s));
                }
            }
        }
        for k in unique::keys(kind, row) {
            if self
                .unique
                .get(&k)
                .is_some_and(|other| Some(other) != self_id)
            {
                return Err(errors::unique_violation(k.violated(kind, row)));
            }
        }
        if kind == Kind::Plugins {
            if let Some(rid) = row["route"].get("id").and_then(|v| v.as_str()) {
                let rp: Vec<&Value> = self.routes[&rid.to_ascii_lowercase()]["protocols"]
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                let pp = row["protocols"].as_array().cloned().unwrap_or_default();
                if !pp.iter().any(|p| rp.contains(&p)) {
                    let mut e = FieldErrors::default();
                    e.field("protocols", "must match the associated route's protocols");
                    return Err(e.into_answer());
                }
            }
        }
        Ok(())
    }

    fn force_scope(body: &mut Row, scope: Scope) {
        if let Some((fk, parent)) = scope {
            body.insert(fk.into(), json!({ "id": parent }));
        }
    }

    pub fn create(&mut self, kind: Kind, mut body: Row, scope: Scope) -> Answer {
        Self::force_scope(&mut body, scope);
        if let Err(a) = self.resolve_foreign(kind, &mut body) {
            return a;
        }
        let mut row = match entities::validate_full(kind, body, &self.available_plugins) {
            Ok(r) => r,
            Err(e) => return e.into_answer(),
        };
        let id = match row.get("id").and_then(|v| v.as_str()) {
            Some(id) if is_uuid(id) => {
                let id = id.to_ascii_lowercase();
                if self.table(kind).contains_key(&id) {
                    return errors::primary_key_violation(&id);
                }
                id
            }
            Some(_) => {
                let mut e = FieldErrors::default();
                e.field("id", "expected a valid UUID");
                return e.into_answer();
            }
            None => self.new_uuid(),
        };
        if let Err(a) = self.check_relations(kind, &row, None) {
            return a;
        }
        let t = now_of(kind);
        row.insert("id".into(), json!(id));
        stamp(&mut row, "created_at", &t);
        stamp(&mut row, "updated_at", &t);
        self.commit(kind, id, row.clone());
        Answer::ok(201, Value::Object(row))
    }

    /// PUT: an upsert that fully replaces the row; the URL key wins over the body.
    pub fn upsert(&mut self, kind: Kind, seg: &str, mut body: Row, scope: Scope) -> Answer {
        let existing = match self.find(kind, seg) {
            Ok(e) => e,
            Err(a) => return a,
        };
        if let (Some(id), Some(_)) = (&existing, scope) {
            if !self.belongs(kind, id, scope) {
                return Answer::not_found();
            }
        }
        Self::force_scope(&mut body, scope);
        if is_uuid(seg) {
            body.insert("id".into(), json!(seg.to_ascii_lowercase()));
        } else {
            body.insert(kind.endpoint_key().into(), json!(seg));
        }
        if let Err(a) = self.resolve_foreign(kind, &mut body) {
            return a;
        }
        let mut row = match entities::validate_full(kind, body, &self.available_plugins) {
            Ok(r) => r,
            Err(e) => return e.into_answer(),
        };
        let id = match &existing {
            Some(id) => id.clone(),
            None => match row.get("id").and_then(|v| v.as_str()) {
                Some(id) if is_uuid(id) => id.to_ascii_lowercase(),
                _ => self.new_uuid(),
            },
        };
        if let Err(a) = self.check_relations(kind, &row, Some(&id)) {
            return a;
        }
        let t = now_of(kind);
        row.insert("id".into(), json!(id));
        stamp(&mut row, "created_at", &t);
        row.insert("updated_at".into(), t);
        self.commit(kind, id, row.clone());
        Answer::ok(200, Value::Object(row))
    }

    pub fn patch(&mut self, kind: Kind, seg: &str, mut body: Row, scope: Scope) -> Answer {
        let partial = entities::check_partial(kind, &body);
        if !partial.is_empty() {
            return partial.into_answer();
        }
        let existing = match self.find(kind, seg) {
            Ok(e) => e,
            Err(a) => return a,
        };
        let Some(id) = existing.filter(|id| self.belongs(kind, id, scope)) else {
            if kind == Kind::Plugins || scope.is_some() {
                return Answer::not_found();
            }
            return if is_uuid(seg) {
                errors::dao_not_found("id", &seg.to_ascii_lowercase())
            } else {
                errors::dao_not_found(kind.endpoint_key(), seg)
            };
        };
        if let Err(a) = self.resolve_foreign(kind, &mut body) {
            return a;
        }
        let old = self.table(kind)[&id].clone();
        let mut merged = old.clone();
        for (k, v) in body {
            let v = if kind == Kind::Plugins && k == "config"
                || kind == Kind::Upstreams && k == "healthchecks"
            {
                entities::merge_config(&old[&k], &v)
            } else {
                v
            };
            merged.insert(k, v);
        }
        if kind == Kind::Plugins {
            // name, route, service and consumer come from the stored row unless given
            merged.insert("id".into(), json!(id));
        }
        let mut row = match entities::validate_full(kind, merged, &self.available_plugins) {
            Ok(r) => r,
            Err(e) => return e.into_answer(),
        };
        if let Err(a) = self.check_relations(kind, &row, Some(&id)) {
            return a;
        }
        row.insert("id".into(), json!(id));
        row.insert("created_at".into(), old["created_at"].clone());
        row.insert("updated_at".into(), now_of(kind));
        self.commit(kind, id, row.clone());
        Answer::ok(200, Value::Object(row))
    }

    pub fn delete(&mut self, kind: Kind, seg: &str, scope: Scope) -> Answer {
        let id = match self.find(kind, seg) {
            Err(a) => return a,
            Ok(None) => return Answer::no_content(),
            Ok(Some(id)) => id,
        };
        if !self.belongs(kind, &id, scope) {
            return Answer::not_found();
        }
        let refs = |r: &Row, fk: &str| {
            r.get(fk).and_then(|v| v.get("id")).and_then(|v| v.as_str()) == Some(id.as_str())
        };
        if kind == Kind::Services && self.routes.values().any(|r| refs(r, "service")) {
            return errors::fk_referenced_by("routes", "services");
        }
        let fk = match kind {
            Kind::Services => Some("service"),
            Kind::Routes => Some("route"),
            Kind::Consumers => Some("consumer"),
            _ => None,
        };
        if let Some(fk) = fk {
            self.drop_rows(Kind::Plugins, |p| refs(p, fk));
        }
        if kind == Kind::Upstreams {
            self.drop_rows(Kind::Targets, |t| refs(t, "upstream"));
        }
        self.drop_row(kind, &id);
        self.balancer.forget_missing(&self.upstreams, &self.targets);
        Answer::no_content()
    }

    /// GET a collection (top-level or nested), with `size`, `offset` and (top-level only) `tags`.
    pub fn list(
        &self,
        kind: Kind,
        scope: Scope,
        query: &[(String, String)],
        base_path: &str,
    ) -> Answer {
        let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (size, after) = match page_options(query) {
            Ok(p) => p,
            Err(a) => return a,
        };
        let tags = if scope.is_none() {
            match q("tags").map(paging::TagFilter::parse) {
                None => None,
                Some(Ok(f)) => Some(f),
                Some(Err(why)) => return errors::invalid_tags_option(why),
            }
        } else {
            None
        };
        let rows: Vec<&Row> = self
            .table(kind)
            .iter()
            .filter(|(id, _)| after.as_ref().is_none_or(|a| id.as_str() > a.as_str()))
            .filter(|(id, _)| self.belongs(kind, id, scope))
            .filter(|(_, r)| tags.as_ref().is_none_or(|f| f.matches(r.get("tags"))))
            .map(|(_, r)| r)
            .collect();
        let page: Vec<Value> = rows
            .iter()
            .take(size)
            .map(|r| Value::Object((*r).clone()))
            .collect();
        if rows.len() > size {
            let last = page
                .last()
                .and_then(|r| r["id"].as_str())
                .unwrap_or_default();
            let token = paging::encode_offset(last);
            let mut next = format!("{base_path}?offset={}", paging::escape_uri(&token));
            if scope.is_none() {
                if let Some(t) = q("tags") {
                    next.push_str(&format!("&tags={}", paging::escape_uri(t)));
                }
                if let Some(s) = q("size") {
                    next.push_str(&format!("&size={s}"));
                }
            }
            Answer::ok(200, json!({"data": page, "next": next, "offset": token}))
        } else {
            Answer::ok(200, json!({"data": page, "next": null}))
        }
    }

    /// `GET /tags/{tag}`: every entity carrying `tag`, as `{entity_name, entity_id, tag}`, by
    /// entity id, paged like any collection (`kong/api/routes/tags.lua`, `dao/tags.lua`).
    pub fn list_tag(&self, tag: &str, query: &[(String, String)]) -> Answer {
        let (size, after) = match page_options(query) {
            Ok(p) => p,
            Err(a) => return a,
        };
        let mut rows: Vec<(String, &str)> = Kind::ALL
            .iter()
            .flat_map(|k| {
                self.table(*k)
                    .iter()
                    .filter(|(_, r)| {
                        r.get("tags")
                            .and_then(Value::as_array)
                            .is_some_and(|t| t.iter().any(|x| x == tag))
                    })
                    .map(move |(id, _)| (id.clone(), k.name()))
            })
            .filter(|(id, _)| after.as_ref().is_none_or(|a| id > a))
            .collect();
        rows.sort();
        let more = rows.len() > size;
        let page: Vec<Value> = rows
            .iter()
            .take(size)
            .map(|(id, kind)| json!({"entity_name": kind, "entity_id": id, "tag": tag}))
            .collect();
        if more {
            let token = paging::encode_offset(&rows[size - 1].0);
            let next = format!(
                "/tags/{}?offset={}",
                paging::escape_uri(tag),
                paging::escape_uri(&token)
            );
            Answer::ok(200, json!({"data": page, "offset": token, "next": next}))
        } else {
            Answer::ok(200, json!({"data": page, "next": null}))
        }
    }

    /// Distinct plugin names in use (`enabled_in_cluster`).
    pub fn plugins_in_use(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&str> = self
            .plugins
            .values()
            .filter_map(|p| p["name"].as_str())
            .collect();
        names.into_iter().map(String::from).collect()
    }

    /// The id a route's `service` points at, if any.
    pub fn route_service(&self, route_id: &str) -> Option<String> {
        self.routes
            .get(route_id)
            .and_then(|r| r["service"].get("id"))
            .and_then(|v| v.as_str())
            .map(String::from)
    }

    pub fn row(&self, kind: Kind, id: &str) -> Option<&Row> {
        self.table(kind).get(id)
    }

    /// A target of `upstream_id` by id or by its address exactly as stored (`host:port`).
    pub fn find_target(&self, upstream_id: &str, seg: &str) -> Option<String> {
        let of_upstream = |r: &Row| r["upstream"]["id"].as_str() == Some(upstream_id);
        if is_uuid(seg) {
            let id = seg.to_ascii_lowercase();
            return self.targets.get(&id).filter(|r| of_upstream(r)).map(|_| id);
        }
        // `select_by_upstream_filter` (`kong/db/dao/targets.lua`): the segment as written against
        // the stored `host:port`, so a target named without its port is not found
        self.targets
            .iter()
            .find(|(_, r)| of_upstream(r) && r["target"].as_str() == Some(seg))
            .map(|(id, _)| id.clone())
    }

    /// The upstream named `host` (a service's host), if there is one.
    pub fn upstream_named(&self, host: &str) -> Option<&Row> {
        self.unique
            .get(&unique::named(Kind::Upstreams, host))
            .and_then(|id| self.upstreams.get(id))
    }

    /// The targets of an upstream, oldest first (`created_at`, then id), as the balancer sees them.
    pub fn targets_of(&self, upstream_id: &str) -> Vec<&Row> {
        let mut v: Vec<&Row> = self
            .targets
            .values()
            .filter(|t| t["upstream"]["id"].as_str() == Some(upstream_id))
            .collect();
        v.sort_by(|a, b| {
            let t = |r: &Row| r["created_at"].as_f64().unwrap_or(0.0);
            t(a).total_cmp(&t(b))
                .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
        });
        v
    }
}

/// A page's `size` (100 when not given; 1–1000) and the id its `offset` token continues after.
fn page_options(query: &[(String, String)]) -> Result<(usize, Option<String>), Answer> {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let size = match q("size") {
        None => 100,
        Some(s) => match s.parse::<f64>() {
            Err(_) => return Err(errors::invalid_size("size must be a number")),
            Ok(n) if n.fract() != 0.0 || !(1.0..=1000.0).contains(&n) => {
                return Err(errors::invalid_size(
                    "size must be an integer between 1 and 1000",
                ))
            }
            Ok(n) => n as usize,
        },
    };
    let after = match q("offset") {
        None => None,
        Some(tok) => match paging::decode_offset(tok) {
            Ok(id) => Some(id),
            Err(why) => return Err(errors::invalid_offset(tok, why)),
        },
    };
    Ok((size, after))
}

fn stamp(row: &mut Row, key: &str, t: &Value) {
    if row.get(key).is_none_or(|v| v.is_null()) {
        row.insert(key.into(), t.clone());
    }
}

/// Now, as the kind stores it: seconds, or (targets: `auto_timestamp_ms`) seconds with millis.
fn now_of(kind: Kind) -> Value {
    if kind != Kind::Targets {
        return json!(now());
    }
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    json!(ms as f64 / 1000.0)
}
