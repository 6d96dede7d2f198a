//! The HTTP API on :8080 — the Python registry's shapes (`/health`, `/status`, `/services`,
//! `POST /sync`) plus `/agents` and Prometheus `/metrics`.

use crate::config::DiscoveryMode;
use crate::reconciler::SyncRequest;
use crate::status::{now_unix, Counters, Status};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

#[derive(Clone)]
pub struct Api {
    pub status: Arc<Status>,
    pub sync: mpsc::Sender<SyncRequest>,
    pub mode: DiscoveryMode,
}

/// The last rejoin of the gateway (the member agents call `kong-gateway`).
fn gateway_rejoin(s: &crate::status::Snapshot) -> Option<&crate::status::Rejoin> {
    s.members
        .rejoins
        .values()
        .filter(|r| r.alias == crate::members::GATEWAY_ALIAS)
        .max_by(|a, b| a.at_unix.total_cmp(&b.at_unix))
}

fn respond(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )))
        .expect("static response parts are valid")
}

impl Api {
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // e.g. out of file descriptors: pause instead of spinning
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let api = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let api = api.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            api.handle(req.method().as_str(), req.uri().path()).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    async fn handle(&self, method: &str, path: &str) -> Response<Full<Bytes>> {
        match (method, path.trim_end_matches('/')) {
            ("GET" | "HEAD", "/health") => {
                // the process is alive and serving (compose health checks); a part that is not
                // working is named here and in /status, which says "degraded"
                let s = self.status.read();
                let mut body = json!({"status": "healthy", "timestamp": now_unix()});
                if let Some(e) = &s.statics.watch_error {
                    body["static_routes_watch"] = json!(e);
                }
                respond(200, &body)
            }
            ("GET", "/status") => respond(200, &self.status_body()),
            ("GET", "/services") => {
                let s = self.status.read();
                respond(200, &json!({"services": s.sync.managed_services}))
            }
            ("GET", "/agents") => {
                let s = self.status.read();
                respond(
                    200,
                    &json!({"agents": s.sync.agents, "waiting": s.sync.waiting, "skipped_malformed": s.sync.malformed}),
                )
            }
            ("GET", "/metrics") => Response::builder()
                .status(200)
                .header("content-type", "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(self.metrics())))
                .expect("static response parts are valid"),
            ("POST", "/sync") => {
                let (tx, rx) = oneshot::channel();
                if self.sync.send(tx).await.is_err() {
                    return respond(503, &json!({"message": "the reconciler is not running"}));
                }
                match tokio::time::timeout(Duration::from_secs(60), rx).await {
                    Ok(Ok(o)) => match o.error {
                        None => respond(
                            200,
                            &json!({"message": format!("Sync completed. Registered {} Docker services.", o.agents), "writes": o.writes}),
                        ),
                        Some(e) => respond(
                            503,
                            &json!({"message": format!("Sync failed: {e}"), "writes": o.writes}),
                        ),
                    },
                    _ => respond(
                        504,
                        &json!({"message": "Sync did not finish within 60 s; see /status"}),
                    ),
                }
            }
            (_, "/health" | "/status" | "/services" | "/agents" | "/metrics" | "/sync") => {
                respond(405, &json!({"message": "Method not allowed"}))
            }
            _ => respond(
                404,
                &json!({"message": "Not found", "endpoints": ["/health", "/status", "/services", "POST /sync", "/agents", "/metrics"]}),
            ),
        }
    }

    fn status_body(&self) -> Value {
        let s = self.status.read();
        let c = &self.status.counters;
        let healthy = s.sync.kong_reachable
            && s.discovery.reachable
            && s.sync.error.is_none()
            && s.discovery.error.is_none()
            && s.statics.file_error.is_none()
            && s.statics.watch_error.is_none()
            && s.sync.kong_failing.is_none()
            && s.members.errors.is_empty();
        json!({
            "status": if healthy { "healthy" } else { "degraded" },
            "services_count": s.sync.managed_services.len(),
            "last_sync": s.sync.last_sync.clone().unwrap_or_else(|| "never".into()),
            "kong_status": if s.sync.kong_reachable && s.sync.kong_failing.is_none() { "healthy" } else { "unhealthy" },
            "discovery_mode": match self.mode { DiscoveryMode::Docker => "docker", DiscoveryMode::Kubernetes => "kubernetes" },
            "docker_status": if self.mode == DiscoveryMode::Kubernetes { "not used" } else if s.discovery.reachable { "healthy" } else { "unhealthy" },
            "kubernetes_status": if self.mode == DiscoveryMode::Docker { "not used" } else if s.discovery.reachable { "healthy" } else { "unhealthy" },
            "docker_listed": self.mode == DiscoveryMode::Docker && s.discovery.listed,
            "discovery_listed": s.discovery.listed,
            "discovery_status": if s.discovery.reachable { "healthy" } else { "unhealthy" },
            "discovery_error": s.discovery.error,
            "sync_error": s.sync.error,
            // the Python shape's one field: the sync's error, else discovery's
            "last_error": s.sync.error.clone().or(s.discovery.error.clone()),
            "last_sync_writes": s.sync.last_sync_writes,
            "static_proxies": s.statics.proxies,
            "static_routes_source": s.statics.file,
            "static_routes_error": s.statics.file_error,
            "static_routes_watch": s.statics.watch_error.clone().unwrap_or_else(|| "watching".into()),
            "agents": s.sync.agents.iter().map(|a| a.service_name()).collect::<Vec<_>>(),
            "agents_waiting": s.sync.waiting,
            "agents_skipped_malformed": s.sync.malformed,
            "missing_plugins": s.sync.missing_plugins,
            // the membership keeper's: the gateway's last rejoin to every agent network after it
            // started, each member's, and the agent networks a member could not join
            "gateway_rejoin_ms": gateway_rejoin(&s).map(|r| r.ms),
            "agent_network_members": {"rejoins": s.members.rejoins, "errors": s.members.errors},
            "counters": c.totals().iter().map(|(k, _, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }

    fn metrics(&self) -> String {
        let c = &self.status.counters;
        let s = self.status.read();
        let mut out = String::new();
        let mut m = |name: &str, kind: &str, help: &str, v: f64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        for (name, help, v) in c.totals() {
            m(&format!("registry_{name}_total"), "counter", help, v as f64);
        }
        m(
            "registry_event_lag_seconds_sum",
            "counter",
            "Sum of Docker event to Kong applied lags.",
            Counters::get(&c.event_lag_ms_sum) as f64 / 1000.0,
        );
        m(
            "registry_event_lag_seconds_count",
            "counter",
            "Number of lags summed.",
            Counters::get(&c.event_lag_count) as f64,
        );
        if let Some(r) = gateway_rejoin(&s) {
            m(
                "registry_gateway_rejoin_seconds",
                "gauge",
                "How long the gateway's last rejoin to every agent network took, from its start event.",
                r.ms as f64 / 1000.0,
            );
        }
        m(
            "registry_agents",
            "gauge",
            "Agents routed.",
            s.sync.agents.len() as f64,
        );
        m(
            "registry_kong_up",
            "gauge",
            "Kong reachable at the last sync.",
            if s.sync.kong_reachable { 1.0 } else { 0.0 },
        );
        m(
            "registry_discovery_up",
            "gauge",
            "The discovery source (Docker or the Kubernetes API) reachable.",
            if s.discovery.reachable { 1.0 } else { 0.0 },
        );
        out
    }
}
