//! A fake Kubernetes API server for the sidecar's Kubernetes mode: real Kubernetes JSON for the
//! list and watch of Services in one namespace, with switches for a 410 Gone on the next watch, a
//! dropped watch, and RBAC-style 403s.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Inner {
    rv: u64,
    services: BTreeMap<String, Value>,
    log: Vec<(u64, Value)>,
    forbidden: bool,
    gone_next: bool,
    requests: Vec<String>,
}

struct State {
    namespace: String,
    inner: Mutex<Inner>,
    events: broadcast::Sender<(u64, Value)>,
    drop_watches: watch::Sender<u64>,
}

pub struct FakeKubeApi {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
        self.state.drop_watches.send_modify(|g| *g += 1);
    }
}

fn full(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default())).boxed_unsync())
        .expect("static response parts are valid")
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

impl FakeKubeApi {
    pub async fn start(namespace: &str) -> FakeKubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            namespace: namespace.to_string(),
            inner: Mutex::new(Inner {
                rv: 1000,
                ..Default::default()
            }),
            events: broadcast::channel(1024).0,
            drop_watches: watch::channel(0).0,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeKubeApi { addr, state, task }
    }

    /// Add or change a Service: `ports` as (name, port); cluster_ip "None" makes it headless.
    pub fn upsert_service(&self, name: &str, ports: &[(Option<&str>, u16)], cluster_ip: &str) {
        let mut g = self.state.inner.lock().expect("lock");
        g.rv += 1;
        let rv = g.rv;
        let kind = if g.services.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let uid = g
            .services
            .get(name)
            .and_then(|s| s["metadata"]["uid"].as_str().map(String::from))
            .unwrap_or_else(|| format!("uid-{name}-{rv}"));
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP", "targetPort": p}))
            .collect();
        let obj = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": self.state.namespace, "uid": uid, "resourceVersion": rv.to_string(), "creationTimestamp": "2026-11-24T00:00:00Z"},
            "spec": {"clusterIP": cluster_ip, "ports": ports, "type": "ClusterIP"}
        });
        g.services.insert(name.to_string(), obj.clone());
        let ev = json!({"type": kind, "object": obj});
        g.log.push((rv, ev.clone()));
        let _ = self.state.events.send((rv, ev));
    }

    pub fn delete_service(&self, name: &str) {
        let mut g = self.state.inner.lock().expect("lock");
        let Some(mut obj) = g.services.remove(name) else {
            return;
        };
        g.rv += 1;
        let rv = g.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ev = json!({"type": "DELETED", "object": obj});
        g.log.push((rv, ev.clone()));
        let _ = self.state.events.send((rv, ev));
    }

    /// Answer every request with 403, as a missing RBAC grant does.
    pub fn set_forbidden(&self, on: bool) {
        self.state.inner.lock().expect("lock").forbidden = on;
    }

    /// The next watch gets `410 Gone` (resource version too old): the client must re-list.
    pub fn gone_on_next_watch(&self) {
        self.state.inner.lock().expect("lock").gone_next = true;
    }

    /// Forget the event history (as etcd compaction does): old resource versions become 410.
    pub fn compact(&self) {
        self.state.inner.lock().expect("lock").log.clear();
    }

    /// End every open watch (a dropped connection).
    pub fn drop_watches(&self) {
        self.state.drop_watches.send_modify(|g| *g += 1);
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.inner.lock().expect("lock").requests.clone()
    }

    /// A kubeconfig pointing at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {}\ncurrent-context: fake\n",
            self.addr, self.state.namespace
        )
    }
}

fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut g = st.inner.lock().expect("lock");
    g.requests.push(format!("{} {}", req.method(), req.uri()));
    if g.forbidden {
        let msg = format!("services is forbidden: User \"system:serviceaccount:nasiko:registry\" cannot list resource \"services\" in API group \"\" in the namespace \"{}\"", st.namespace);
        return full(403, &status_body(403, "Forbidden", &msg));
    }
    let expected = format!("/api/v1/namespaces/{}/services", st.namespace);
    if path != expected {
        return full(
            404,
            &status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        let items: Vec<Value> = g.services.values().cloned().collect();
        return full(
            200,
            &json!({"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": g.rv.to_string()}, "items": items}),
        );
    }
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let oldest_known = g.log.first().map(|(rv, _)| *rv).unwrap_or(g.rv);
    let too_old = since + 1 < oldest_known && since < g.rv;
    if std::mem::take(&mut g.gone_next) || too_old {
        return expired(since, g.rv);
    }
    let backlog: Vec<Value> = g
        .log
        .iter()
        .filter(|(rv, _)| *rv > since)
        .map(|(_, e)| e.clone())
        .collect();
    drop(g);
    watch(&st, since, backlog)
}

/// A watch from a resource version the server no longer has: one ERROR line, 410 Expired.
fn expired(since: u64, now: u64) -> Response<Body> {
    let line = json!({"type": "ERROR", "object": status_body(410, "Expired", &format!("too old resource version: {since} ({now})"))});
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .expect("valid")
}

/// A watch stream: the events after `since` already logged, then each new one, a JSON line each,
/// until the test drops the watches.
fn watch(st: &State, since: u64, backlog: Vec<Value>) -> Response<Body> {
    let mut rx = st.events.subscribe();
    let mut dropped = st.drop_watches.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let send = |v: &Value| {
            let mut b = serde_json::to_vec(v).unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        };
        for e in backlog {
            if tx.send(send(&e)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok((rv, e)) if rv > since => if tx.send(send(&e)).await.is_err() { return },
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = dropped.changed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), out))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
        .expect("valid")
}
