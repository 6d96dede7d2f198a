//! The Kong Admin API client: reads the entities we own (tag-scoped, paginated), reads the node's
//! plugins, and applies writes with a per-request timeout and retries on 5xx/connection errors.

use crate::diff::{has_tag, KongWrite, OwnedState};
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
    counters: Arc<crate::status::Status>,
    targets_seen: Arc<std::sync::Mutex<TargetsSeen>>,
}

impl KongClient {
    pub fn new(
        base: &str,
        timeout: Duration,
        owner_tag: &str,
        status: Arc<crate::status::Status>,
    ) -> Self {
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
            counters: status,
            targets_seen: Arc::default(),
        }
    }

    async fn request_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), KongError> {
        let c = &self.counters.counters;
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

    /// One cheap `GET /status`, no retry: does Kong answer (at all, any status) right now?
    pub async fn answers(&self) -> bool {
        !matches!(
            self.request_once("GET", "/status", None).await,
            Err(KongError::Unreachable(_))
        )
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

    /// Every entity carrying our tag, and every target of our upstreams (Kong 3.4 lists
    /// targets only per upstream, untagged ones included: those are kept apart). Targets are
    /// listed for the upstreams that are new or named in `refresh`, the others kept from before
    /// while Kong's tagged target ids confirm them (`TargetsSeen`).
    pub async fn read_owned(&self, refresh: &BTreeSet<String>) -> Result<OwnedState, KongError> {
        let q = format!("tags={}&size=1000", self.owner_tag);
        let (services, routes, plugins, upstreams) = tokio::try_join!(
            self.list_all(format!("/services?{q}")),
            self.list_all(format!("/routes?{q}")),
            self.list_all(format!("/plugins?{q}")),
            self.list_all(format!("/upstreams?{q}")),
        )?;
        let ups: Vec<(String, String)> = upstreams
            .iter()
            .filter_map(|u| Some((u["id"].as_str()?.into(), u["name"].as_str()?.into())))
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
        let (targets, foreign_targets): (Vec<Value>, Vec<Value>) = seen
            .all()
            .cloned()
            .partition(|t| has_tag(t, &self.owner_tag));
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
    ) -> Result<BTreeMap<String, Vec<Value>>, KongError> {
        let lists: Vec<Result<(String, Vec<Value>), KongError>> =
            futures_util::stream::iter(upstream_ids)
                .map(|id| async move {
                    let path = format!("/upstreams/{id}/targets?size=1000");
                    self.list_all(path).await.map(|t| (id, t))
                })
                .buffer_unordered(8)
                .collect()
                .await;
        lists.into_iter().collect()
    }

    /// Our writes changed these upstreams (by name): their targets are listed afresh next time.
    pub fn forget_targets(&self, upstreams: &BTreeSet<String>) {
        self.targets_seen
            .lock()
            .expect("targets lock")
            .forget(upstreams);
    }

    /// What the node says about itself (`GET /`): its plugins, and whether it runs without a
    /// database (`configuration.database` = `off`), where only `POST /config` configures it.
    pub async fn node(&self) -> Result<Node, KongError> {
        let (_, root) = self.request("GET", "/", None).await?;
        Ok(Node {
            plugins: root["plugins"]["available_on_server"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            dbless: root["configuration"]["database"] == "off",
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

    pub async fn apply(&self, w: &KongWrite) -> Result<(), KongError> {
        match w {
            KongWrite::PutUpstream(u) => self
                .request("PUT", &format!("/upstreams/{}", u.name), Some(&u.body()))
                .await
                .map(drop),
            KongWrite::AddTarget(t) => {
                let path = format!("/upstreams/{}/targets", t.upstream);
                match self.request("POST", &path, Some(&t.body())).await {
                    // already there (untagged, or added by a sync that did not see its answer)
                    Err(KongError::Status { status: 409, .. }) => self
                        .request("PATCH", &format!("{path}/{}", t.target), Some(&t.body()))
                        .await
                        .map(drop),
                    other => other.map(drop),
                }
            }
            KongWrite::UpdateTarget { id, spec } => self
                .request(
                    "PATCH",
                    &format!("/upstreams/{}/targets/{id}", spec.upstream),
                    Some(&spec.body()),
                )
                .await
                .map(drop),
            KongWrite::DeleteTarget { upstream, id, .. } => self
                .request(
                    "DELETE",
                    &format!("/upstreams/{upstream}/targets/{id}"),
                    None,
                )
                .await
                .map(drop),
            KongWrite::DeleteUpstream { id, .. } => self
                .request("DELETE", &format!("/upstreams/{id}"), None)
                .await
                .map(drop),
            KongWrite::PutService(s) => self
                .request("PUT", &format!("/services/{}", s.name), Some(&s.body()))
                .await
                .map(drop),
            KongWrite::PutRoute(r) => self
                .request("PUT", &format!("/routes/{}", r.name), Some(&r.body()))
                .await
                .map(drop),
            KongWrite::PutPlugin(p) => {
                match self
                    .request(
                        "PUT",
                        &format!("/plugins/{}", p.instance_name),
                        Some(&p.body()),
                    )
                    .await
                {
                    // an untagged plugin of the same name on the service (the Python registry's): adopt it
                    Err(KongError::Status { status: 409, .. }) => {
                        let (_, list) = self
                            .request("GET", &format!("/services/{}/plugins", p.service), None)
                            .await?;
                        let existing = list["data"].as_array().and_then(|d| {
                            d.iter().find(|x| {
                                x["name"] == p.name.as_str()
                                    && x["route"].is_null()
                                    && x["consumer"].is_null()
                            })
                        });
                        match existing.and_then(|x| x["id"].as_str()) {
                            Some(id) => {
                                tracing::info!(plugin = %p.name, service = %p.service, "adopting an untagged plugin");
                                self.request("PUT", &format!("/plugins/{id}"), Some(&p.body()))
                                    .await
                                    .map(drop)
                            }
                            None => Err(KongError::Status {
                                method: "PUT".into(),
                                path: format!("/plugins/{}", p.instance_name),
                                status: 409,
                                body: "conflict with a plugin we cannot find".into(),
                            }),
                        }
                    }
                    other => other.map(drop),
                }
            }
            KongWrite::DeletePlugin { id, .. } => self
                .request("DELETE", &format!("/plugins/{id}"), None)
                .await
                .map(drop),
            KongWrite::DeleteRoute { id, .. } => self
                .request("DELETE", &format!("/routes/{id}"), None)
                .await
                .map(drop),
            KongWrite::DeleteService { id, .. } => self
                .request("DELETE", &format!("/services/{id}"), None)
                .await
                .map(drop),
        }
    }
}

/// A node's facts for a sync.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub plugins: BTreeSet<String>,
    pub dbless: bool,
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
