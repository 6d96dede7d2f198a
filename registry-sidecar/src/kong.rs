//! The Kong Admin API client: reads the entities we own (tag-scoped, paginated), reads the node's
//! plugins, and applies writes with a per-request timeout and retries on 5xx/connection errors.

use crate::diff::{KongWrite, OwnedState};
use crate::model::rule::takes_place_of;
use crate::model::{Body, Head, PluginSpec, Row, TargetRow};
use crate::plugin_gate::Propagation;
use crate::status::Counters;
use crate::targets_seen::TargetsSeen;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum KongError {
    /// Connection refused, reset, or timed out: Kong is not there.
    Unreachable(String),
    /// Kong answered with an error status.
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
}

impl KongError {
    pub fn is_retryable(&self) -> bool {
        match self {
            KongError::Unreachable(_) => true,
            KongError::Status { status, .. } => *status >= 500,
        }
    }
}

impl std::fmt::Display for KongError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KongError::Unreachable(e) => write!(
                f,
                "Kong Admin API unreachable: {e}. Is Kong up? Check KONG_ADMIN_URL"
            ),
            KongError::Status {
                method,
                path,
                status,
                body,
            } => write!(f, "Kong answered {status} to {method} {path}: {body}"),
        }
    }
}

impl std::error::Error for KongError {}

#[derive(Clone)]
pub struct KongClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    owner_tag: String,
    counters: Arc<Counters>,
    targets_seen: Arc<std::sync::Mutex<TargetsSeen>>,
}

impl KongClient {
    pub fn new(base: &str, timeout: Duration, owner_tag: &str, counters: Arc<Counters>) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        KongClient {
            base: base.trim_end_matches('/').to_string(),
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(conn),
            timeout,
            owner_tag: owner_tag.to_string(),
            counters,
            targets_seen: Arc::default(),
        }
    }

    async fn request_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), KongError> {
        let c = &self.counters;
        Counters::inc(&c.kong_requests);
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        let bytes = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(bytes))
            .map_err(|e| KongError::Unreachable(e.to_string()))?;
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| KongError::Unreachable(root_cause(&e)))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| KongError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        };
        let out = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(KongError::Unreachable(format!(
                "{method} {path} timed out after {:?}",
                self.timeout
            ))),
        };
        // a write is a request that changed something: a 304 (DB-less hash check) did not
        if method != "GET" && !matches!(out, Ok((304, _))) {
            Counters::inc(&c.kong_writes);
        }
        match out {
            Ok((status, v)) if status >= 400 => Err(KongError::Status {
                method: method.into(),
                path: path.into(),
                status,
                body: error_text(&v),
            }),
            other => other,
        }
        .inspect_err(|_| Counters::inc(&c.kong_errors))
    }

    /// One cheap `GET /status`, no retry: `Some(configuration_hash)` (DB-less; `None` in DB mode)
    /// when Kong answers well, the error otherwise (`kong/api/routes/health.lua`).
    pub async fn status_hash(&self) -> Result<Option<String>, KongError> {
        let (_, v) = self.request_once("GET", "/status", None).await?;
        if v["database"]["reachable"] == Value::Bool(false) {
            return Err(KongError::Status {
                method: "GET".into(),
                path: "/status".into(),
                status: 200,
                body: "database.reachable is false".into(),
            });
        }
        Ok(v["configuration_hash"].as_str().map(String::from))
    }

    /// One cheap `GET /status`, no retry: does Kong answer well right now — 2xx, and with its
    /// database reachable? (`kong/api/routes/health.lua`: in DB mode `/status` answers 200 with
    /// `database.reachable = false` when it cannot connect, where writes answer 5xx.)
    pub async fn answers_well(&self) -> bool {
        self.status_hash().await.is_ok()
    }

    /// A request retried (3 attempts, 200 ms then 400 ms) on connection errors and 5xx.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), KongError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.request_once(method, path, body).await {
                Err(e) if e.is_retryable() && attempt < 3 => {
                    tracing::debug!("retrying {method} {path} in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Every row of a collection, following `next` — with the first page's `size`, which some
    /// of Kong's `next` links drop (`/tags/{tag}`, nested collections): 100 rows a page else.
    async fn list_all(&self, first: String) -> Result<Vec<Value>, KongError> {
        let size = first
            .split(['?', '&'])
            .find(|p| p.starts_with("size="))
            .map(String::from);
        let mut rows = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next {
            let (_, page) = self.request("GET", &path, None).await?;
            if let Some(data) = page["data"].as_array() {
                rows.extend(data.iter().cloned());
            }
            next = page["next"].as_str().map(|n| match &size {
                Some(s) if !n.contains("size=") => format!("{n}&{s}"),
                _ => n.to_string(),
            });
        }
        Ok(rows)
    }

    /// Every row of a collection, read into `F`'s row.
    async fn list_rows<F: serde::de::DeserializeOwned>(
        &self,
        first: String,
    ) -> Result<Vec<Row<F>>, KongError> {
        Ok(self.list_all(first).await?.iter().map(Row::read).collect())
    }

    /// Every entity carrying our tag, and every target of our upstreams (Kong 3.4 lists
    /// targets only per upstream, untagged ones included: those are kept apart). Targets are
    /// listed for the upstreams that are new or named in `refresh`, the others kept from before
    /// while Kong's tagged target ids confirm them (`TargetsSeen`).
    pub async fn read_owned(&self, refresh: &BTreeSet<String>) -> Result<OwnedState, KongError> {
        let q = format!("tags={}&size=1000", self.owner_tag);
        let (services, routes, plugins, upstreams) = tokio::try_join!(
            self.list_rows(format!("/services?{q}")),
            self.list_rows(format!("/routes?{q}")),
            self.list_rows(format!("/plugins?{q}")),
            self.list_rows(format!("/upstreams?{q}")),
        )?;
        let ups: Vec<(String, String)> = upstreams
            .iter()
            .filter_map(|u: &Row<_>| Some((u.id()?.into(), u.name()?.into())))
            .collect();
        let mut seen = self.targets_seen.lock().expect("targets lock").clone();
        let wanted = seen.to_list(&ups, refresh);
        let mut trusted = wanted.len() < ups.len();
        seen.take(&ups, self.list_targets(wanted).await?, trusted);
        if trusted {
            let tagged = self
                .list_all(format!("/tags/{}?size=1000", self.owner_tag))
                .await?;
            let ids: BTreeSet<String> = tagged
                .iter()
                .filter(|t| t["entity_name"] == "targets")
                .filter_map(|t| t["entity_id"].as_str().map(String::from))
                .collect();
            if ids != seen.tagged_ids(&self.owner_tag) {
                // something changed what we kept: list everything
                trusted = false;
                let all = ups.iter().map(|(id, _)| id.clone()).collect();
                seen.take(&ups, self.list_targets(all).await?, false);
            }
        }
        let (targets, foreign_targets): (Vec<TargetRow>, Vec<TargetRow>) = seen
            .all()
            .cloned()
            .partition(|t| t.has_tag(&self.owner_tag));
        *self.targets_seen.lock().expect("targets lock") = seen;
        Ok(OwnedState {
            services,
            routes,
            plugins,
            upstreams,
            targets,
            foreign_targets,
            reused_targets: trusted,
        })
    }

    /// Every target of these upstreams (by id), one listing each.
    async fn list_targets(
        &self,
        upstream_ids: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<TargetRow>>, KongError> {
        let lists: Vec<Result<(String, Vec<TargetRow>), KongError>> =
            futures_util::stream::iter(upstream_ids)
                .map(|id| async move { self.targets_of(&id).await.map(|t| (id, t)) })
                .buffer_unordered(8)
                .collect()
                .await;
        lists.into_iter().collect()
    }

    /// Every target of the upstream of this id, listed afresh.
    pub async fn targets_of(&self, upstream_id: &str) -> Result<Vec<TargetRow>, KongError> {
        self.list_rows(format!("/upstreams/{upstream_id}/targets?size=1000"))
            .await
    }

    /// Our writes changed these upstreams (by name): their targets are listed afresh next time.
    pub fn forget_targets(&self, upstreams: &BTreeSet<String>) {
        self.targets_seen
            .lock()
            .expect("targets lock")
            .forget(upstreams);
    }

    /// What the node says about itself (`GET /`): its plugins, whether it runs without a
    /// database (`configuration.database` = `off`), where only `POST /config` configures it, and
    /// when its proxy sees a write.
    pub async fn node(&self) -> Result<Node, KongError> {
        let (_, root) = self.request("GET", "/", None).await?;
        let dbless = root["configuration"]["database"] == "off";
        Ok(Node {
            plugins: root["plugins"]["available_on_server"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            dbless,
            // DB-less: `POST /config` swaps router, plugins and balancer together
            propagation: if dbless {
                Propagation::NextRequest
            } else {
                Propagation::of(&root["configuration"])
            },
        })
    }

    /// DB-less: the configuration Kong holds (`GET /config`, YAML), parsed.
    pub async fn read_config(&self) -> Result<Value, KongError> {
        let (_, body) = self.request("GET", "/config", None).await?;
        let text = body["config"].as_str().unwrap_or_default();
        serde_yaml_ng::from_str::<Value>(text).map_err(|e| KongError::Status {
            method: "GET".into(),
            path: "/config".into(),
            status: 200,
            body: format!("the exported configuration is not YAML: {e}"),
        })
    }

    /// DB-less: push the whole configuration as a string (so Kong's hash check applies): true
    /// when Kong loaded it, false when it already held exactly this (304).
    pub async fn push_config(&self, raw: &str) -> Result<bool, KongError> {
        let (status, _) = self
            .request(
                "POST",
                "/config?check_hash=1&flatten_errors=1",
                Some(&serde_json::json!({ "config": raw })),
            )
            .await?;
        Ok(status != 304)
    }

    /// Send one write; Kong's answer: the row it wrote (None for a delete). Two conflicts are
    /// ours to resolve: a target already at the address (untagged, or added by a sync that did
    /// not see its answer) is patched instead, and an untagged plugin in a spec's place (the
    /// Python registry's) is adopted by its id.
    pub async fn apply(&self, w: &KongWrite) -> Result<Option<Value>, KongError> {
        let (method, path, body) = request_for(w);
        let answer = match (self.request(method, &path, body.as_ref()).await, w) {
            (Err(KongError::Status { status: 409, .. }), KongWrite::AddTarget(t)) => {
                let path = format!("{path}/{}", t.target);
                self.request("PATCH", &path, body.as_ref()).await
            }
            (Err(KongError::Status { status: 409, .. }), KongWrite::PutPlugin(p)) => {
                self.adopt_plugin(p).await
            }
            (other, _) => other,
        };
        answer.map(|(_, row)| Some(row).filter(Value::is_object))
    }

    /// Take over the untagged plugin that holds `p`'s place on its service: PUT by its id.
    async fn adopt_plugin(&self, p: &PluginSpec) -> Result<(u16, Value), KongError> {
        let (_, list) = self
            .request("GET", &format!("/services/{}/plugins", p.service), None)
            .await?;
        let rows: Vec<Head> = list["data"]
            .as_array()
            .map(|d| d.iter().map(Head::of).collect())
            .unwrap_or_default();
        match rows
            .iter()
            .find(|r| takes_place_of(p, r))
            .and_then(Head::id)
        {
            Some(id) => {
                tracing::info!(plugin = %p.name(), service = %p.service, "adopting an untagged plugin");
                self.request("PUT", &format!("/plugins/{id}"), Some(&p.body()))
                    .await
            }
            None => Err(KongError::Status {
                method: "PUT".into(),
                path: format!("/plugins/{}", p.instance_name),
                status: 409,
                body: "conflict with a plugin we cannot find".into(),
            }),
        }
    }
}

/// The Admin API request of a write: method, path and body.
fn request_for(w: &KongWrite) -> (&'static str, String, Option<Value>) {
    match w {
        KongWrite::PutUpstream(u) => ("PUT", format!("/upstreams/{}", u.name), Some(u.body())),
        KongWrite::AddTarget(t) => (
            "POST",
            format!("/upstreams/{}/targets", t.upstream),
            Some(t.body()),
        ),
        KongWrite::UpdateTarget { id, spec } => (
            "PATCH",
            format!("/upstreams/{}/targets/{id}", spec.upstream),
            Some(spec.body()),
        ),
        KongWrite::DeleteTarget { upstream, id, .. } => (
            "DELETE",
            format!("/upstreams/{upstream}/targets/{id}"),
            None,
        ),
        KongWrite::DeleteUpstream { id, .. } => ("DELETE", format!("/upstreams/{id}"), None),
        KongWrite::PutService(s) => ("PUT", format!("/services/{}", s.name), Some(s.body())),
        KongWrite::PutRoute(r) => ("PUT", format!("/routes/{}", r.name), Some(r.body())),
        KongWrite::PutPlugin(p) => (
            "PUT",
            format!("/plugins/{}", p.instance_name),
            Some(p.body()),
        ),
        KongWrite::DeletePlugin { id, .. } => ("DELETE", format!("/plugins/{id}"), None),
        KongWrite::DeleteRoute { id, .. } => ("DELETE", format!("/routes/{id}"), None),
        KongWrite::DeleteService { id, .. } => ("DELETE", format!("/services/{id}"), None),
    }
}

/// A node's facts for a sync.
#[derive(Debug, Clone)]
pub struct Node {
    pub plugins: BTreeSet<String>,
    pub dbless: bool,
    pub propagation: Propagation,
}

/// The useful part of an error body: its message, and for a refused declarative configuration
/// the first flattened errors (which entity, which field).
fn error_text(v: &Value) -> String {
    let mut text = v
        .get("message")
        .and_then(|m| m.as_str())
        .map(String::from)
        .unwrap_or_else(|| v.to_string());
    if let Some(flat) = v.get("flattened_errors").and_then(Value::as_array) {
        let first: Vec<String> = flat
            .iter()
            .take(3)
            .map(|f| {
                format!(
                    "{} {}: {}",
                    f["entity_type"].as_str().unwrap_or("?"),
                    f["entity_name"].as_str().unwrap_or("?"),
                    f["errors"]
                )
            })
            .collect();
        text = format!(
            "{} ({})",
            text.chars().take(300).collect::<String>(),
            first.join("; ")
        );
    }
    text
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    let mut msg = cur.to_string();
    while let Some(src) = cur.source() {
        msg = src.to_string();
        cur = src;
    }
    msg
}
