//! A Kong 3.4 Admin API emulator (DB mode, or DB-less with `--database off`) with a proxy
//! listener that balances across upstreams' targets, fault switches and a request record, for
//! tests and manual trials (Kong itself cannot be installed here).
//!
//! Control endpoints live under `/__emulator/` (a prefix Kong does not use) on both the admin
//! and the proxy listener, so they stay reachable while the admin listener refuses connections:
//! `GET|DELETE /__emulator/requests`, `PUT /__emulator/fault {"mode":"none|refuse|error500|delay","delay_ms":N}`,
//! `PUT /__emulator/plugins {"available":[…]}`.
//!
//! The proxy sees Admin API writes when Kong's would (`TIMING.md`): it routes with a router and a
//! plugins iterator built from the store, rebuilt under `worker_consistency = eventual` (Kong's
//! default) by two timers of their own, under `strict` on the request after a change, and
//! without a database at once. `Options::default()` is Kong's defaults; tests that need a write
//! in the proxy at once say `Options::strict()`.

pub mod admin;
pub mod balancer;
pub mod dbless;
pub mod declarative;
pub mod entities;
pub mod errors;
pub mod iterator;
pub mod paging;
pub mod proxy;
pub mod router;
pub mod store;
pub mod timing;
pub mod unique;

use crate::http::{json_response, spawn_connection, HttpClient, ReadRequest, Resp, SendError};
use bytes::Bytes;
use iterator::PluginsIterator;
use router::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;
pub use timing::{Consistency, Timing};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The plugins a stock node offers, plus Nasiko's two custom ones.
pub const DEFAULT_PLUGINS: &[&str] = &[
    "cors",
    "request-termination",
    "key-auth",
    "rate-limiting",
    "nasiko-auth",
    "chat-logger",
];

/// How the admin listener misbehaves, for fault tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Fault {
    #[default]
    None,
    /// Close the admin listener: connections are refused until the fault is cleared.
    Refuse,
    /// Answer every Admin API request with 500 `An unexpected error occurred`.
    Error500,
    /// Answer after `delay_ms`.
    Delay { delay_ms: u64 },
}

/// One Admin API request as the emulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

struct Shared {
    store: Mutex<Store>,
    record: Mutex<Vec<Recorded>>,
    fault: watch::Sender<Fault>,
    kill: watch::Sender<u64>,
    client: HttpClient,
    /// The router and the plugins iterator the proxy uses (`TIMING.md`).
    built: Mutex<Built>,
}

/// What the proxy routes with: built from the store, replaced whole (a request holds the pair it
/// started with).
struct Built {
    router: Arc<Router>,
    plugins: Arc<PluginsIterator>,
}

impl Shared {
    /// The router and plugins iterator for a request. Under `strict` (`get_updated_router`,
    /// `get_updated_plugins_iterator`) and without a database (`POST /config` rebuilds both at
    /// once, `reconfigure_handler`), a stale one is rebuilt first, both from the same store state;
    /// under `eventual` the timers rebuild them and a request takes what they built.
    fn for_request(&self) -> (Arc<Router>, Arc<PluginsIterator>) {
        let store = self.store.lock().expect("store lock");
        let mut b = self.built.lock().expect("built lock");
        if store.dbless || store.timing.consistency == Consistency::Strict {
            if b.plugins.version != store.plugins_version() {
                b.plugins = Arc::new(PluginsIterator::build(&store));
            }
            if b.router.version != store.router_version() {
                b.router = Arc::new(Router::build(&store));
            }
        }
        (b.router.clone(), b.plugins.clone())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub admin: SocketAddr,
    pub proxy: SocketAddr,
    pub plugins: Vec<String>,
    /// DB-less mode (`database=off`): configuration only through `POST /config`.
    pub dbless: bool,
    /// `worker_consistency` and `worker_state_update_frequency` (Kong's defaults unless set).
    pub timing: Timing,
}

impl Options {
    /// The defaults with `worker_consistency = strict`: a write is in the proxy from the next
    /// request on (what a test that proxies right after a write needs).
    pub fn strict() -> Self {
        Options {
            timing: Timing::strict(),
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            admin: "127.0.0.1:0".parse().expect("literal address"),
            proxy: "127.0.0.1:0".parse().expect("literal address"),
            plugins: DEFAULT_PLUGINS.iter().map(|s| s.to_string()).collect(),
            dbless: false,
            timing: Timing::default(),
        }
    }
}

/// A running emulator. Dropping it stops both listeners.
pub struct KongEmulator {
    pub admin_addr: SocketAddr,
    pub proxy_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KongEmulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.kill.send_modify(|g| *g += 1);
    }
}

impl KongEmulator {
    pub async fn start(opts: Options) -> std::io::Result<KongEmulator> {
        let admin = TcpListener::bind(opts.admin).await?;
        let proxy = TcpListener::bind(opts.proxy).await?;
        let admin_addr = admin.local_addr()?;
        let proxy_addr = proxy.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new({
                let mut s = Store::new(opts.plugins);
                s.dbless = opts.dbless;
                s.timing = opts.timing;
                s
            }),
            record: Mutex::new(Vec::new()),
            fault: watch::channel(Fault::None).0,
            kill: watch::channel(0).0,
            client: HttpClient::new(Duration::from_secs(300)),
            built: Mutex::new(Built {
                router: Arc::new(Router::default()),
                plugins: Arc::new(PluginsIterator::default()),
            }),
        });
        let mut tasks = vec![
            tokio::spawn(admin_loop(admin, admin_addr, shared.clone())),
            tokio::spawn(proxy_loop(proxy, shared.clone())),
            tokio::spawn(probe_loop(shared.clone())),
        ];
        // DB mode: the `router-rebuild` and `plugins-iterator-rebuild` timers run whatever the
        // consistency (`init_worker`); under `strict` a request rebuilds first anyway
        if !opts.dbless {
            let f = opts.timing.frequency;
            tasks.push(tokio::spawn(rebuild_loop(
                shared.clone(),
                f,
                f,
                Rebuild::Router,
            )));
            tasks.push(tokio::spawn(rebuild_loop(
                shared.clone(),
                opts.timing.plugins_timer_start(),
                f,
                Rebuild::PluginsIterator,
            )));
        }
        Ok(KongEmulator {
            admin_addr,
            proxy_addr,
            shared,
            tasks,
        })
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }
    pub fn set_fault(&self, f: Fault) {
        set_fault(&self.shared, f);
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.record.lock().expect("record lock").clone()
    }
    pub fn clear_requests(&self) {
        self.shared.record.lock().expect("record lock").clear();
    }
    pub fn set_available_plugins(&self, plugins: Vec<String>) {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .available_plugins = plugins;
    }
    /// Run a closure over the store (for direct inspection in tests).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.shared.store.lock().expect("store lock"))
    }

    /// The store holds a route named `name` (read past the Admin API and any fault).
    pub fn has_route(&self, name: &str) -> bool {
        self.with_store(|s| s.all(entities::Kind::Routes).any(|r| r["name"] == name))
    }

    /// When the route named `name` was last written (unix seconds): from then on a read sees it.
    pub fn route_written_at(&self, name: &str) -> Option<f64> {
        self.with_store(|s| s.route_written_at(name))
    }
}

fn set_fault(shared: &Shared, f: Fault) {
    if f == Fault::Refuse {
        // drop live keep-alive connections too, as a stopped Kong would
        shared.kill.send_modify(|g| *g += 1);
    }
    shared.fault.send_replace(f);
}

async fn admin_loop(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    let mut fault_rx = shared.fault.subscribe();
    let handler = {
        let shared = shared.clone();
        Arc::new(move |req: ReadRequest| admin_request(shared.clone(), req))
    };
    loop {
        let refusing = *fault_rx.borrow() == Fault::Refuse;
        if refusing {
            listener = None;
            if fault_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!("emulator could not re-bind {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let l = listener.as_ref().expect("bound above");
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    spawn_connection(stream, handler.clone(), shared.kill.subscribe());
                }
            }
            r = fault_rx.changed() => if r.is_err() { return },
        }
    }
}

async fn admin_request(shared: Arc<Shared>, req: ReadRequest) -> Resp {
    if req.path.starts_with("/__emulator/") {
        return control(&shared, req);
    }
    if req.method == "OPTIONS" {
        if let Some(allow) = admin::allowed_methods(&req.path) {
            return hyper::Response::builder()
                .status(204)
                .header("Server", "kong/3.4.2")
                .header("Allow", allow)
                .header("Access-Control-Allow-Methods", allow)
                .header("Access-Control-Allow-Headers", "Content-Type")
                .header("Access-Control-Allow-Origin", "*")
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("static response parts are valid");
        }
    }
    let fault = *shared.fault.borrow();
    let answer = match fault {
        Fault::Error500 => errors::Answer::message(500, "An unexpected error occurred"),
        _ => {
            if let Fault::Delay { delay_ms } = fault {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            let ct = req
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let mut store = shared.store.lock().expect("store lock");
            admin::handle(
                &mut store,
                &admin::AdminRequest {
                    method: &req.method,
                    path: &req.path,
                    query: &req.query,
                    content_type: ct.as_deref(),
                    body: &req.body,
                },
            )
        }
    };
    let path = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    shared.record.lock().expect("record lock").push(Recorded {
        method: req.method.clone(),
        path,
        status: answer.status,
    });
    let body = if req.method == "HEAD" {
        None
    } else {
        answer.body.as_ref()
    };
    json_response(answer.status, body)
}

fn control(shared: &Shared, req: ReadRequest) -> Resp {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/__emulator/requests") => {
            let rec = shared.record.lock().expect("record lock").clone();
            json_response(200, Some(&json!({ "requests": rec })))
        }
        ("DELETE", "/__emulator/requests") => {
            shared.record.lock().expect("record lock").clear();
            json_response(204, None)
        }
        ("GET", "/__emulator/fault") => {
            let f = *shared.fault.borrow();
            json_response(200, Some(&json!(f)))
        }
        ("PUT", "/__emulator/fault") => match serde_json::from_slice::<Fault>(&req.body) {
            Ok(f) => {
                set_fault(shared, f);
                json_response(200, Some(&json!(f)))
            }
            Err(e) => json_response(
                400,
                Some(
                    &json!({"message": format!("bad fault: {e}; expected {{\"mode\":\"none|refuse|error500|delay\",\"delay_ms\":N}}")}),
                ),
            ),
        },
        ("PUT", "/__emulator/plugins") => {
            let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let Some(list) = v["available"].as_array() else {
                return json_response(
                    400,
                    Some(&json!({"message": "expected {\"available\":[names]}"})),
                );
            };
            let names = list
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            shared.store.lock().expect("store lock").available_plugins = names;
            json_response(200, Some(&v))
        }
        _ => json_response(404, Some(&json!({"message": "Not found"}))),
    }
}

async fn proxy_loop(listener: TcpListener, shared: Arc<Shared>) {
    let handler = {
        let shared = shared.clone();
        Arc::new(move |req: ReadRequest| proxy_request(shared.clone(), req))
    };
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            // proxy connections are not killed by admin faults
            spawn_connection(stream, handler.clone(), watch::channel(0).1);
        }
    }
}

/// The header that names the plugins the plugins iterator ran for a proxied request.
pub const PLUGINS_HEADER: &str = "x-emulator-plugins";

async fn proxy_request(shared: Arc<Shared>, req: ReadRequest) -> Resp {
    if req.path.starts_with("/__emulator/") {
        return control(&shared, req);
    }
    let (router, plugins) = shared.for_request();
    let sel = router.select(&req.method, &req.path);
    let id = |r: Option<&store::Row>| r.and_then(|r| r["id"].as_str()).map(String::from);
    let (route_id, service_id) = (
        id(sel.as_ref().map(|s| s.route)),
        id(sel.as_ref().and_then(|s| s.service)),
    );
    let names = plugins
        .names_for(route_id.as_deref(), service_id.as_deref())
        .join(",");
    let mut resp = forward(&shared, &req, sel.as_ref()).await;
    if let Ok(v) = hyper::header::HeaderValue::from_str(&names) {
        resp.headers_mut().insert(PLUGINS_HEADER, v);
    }
    resp
}

/// Send the request where the router's choice `sel` leads (Kong's balancer retries included), or
/// answer as Kong answers when it cannot.
async fn forward(shared: &Shared, req: &ReadRequest, sel: Option<&router::Selected<'_>>) -> Resp {
    let mut tried: Vec<String> = Vec::new();
    loop {
        let m = {
            let mut store = shared.store.lock().expect("store lock");
            proxy::route_request(&mut store, sel, &req.path, &req.query, &tried)
        };
        let up = match m {
            proxy::Match::To(up) => up,
            refused => return refusal(refused),
        };
        let headers = upstream_headers(req, up.preserve_host);
        let hdrs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sent = shared
            .client
            .forward(&req.method, &up.url, &hdrs, req.body.clone())
            .await;
        let report = |o: balancer::Outcome| {
            if let Some(t) = &up.target {
                let mut store = shared.store.lock().expect("store lock");
                balancer::report(&mut store, t, o);
            }
        };
        match sent {
            Ok((status, h, body)) => {
                report(balancer::Outcome::Status(status));
                let mut b = hyper::Response::builder().status(status);
                for (k, v) in h.iter() {
                    if k != "connection" && k != "transfer-encoding" && k != "content-length" {
                        b = b.header(k, v);
                    }
                }
                return b
                    .header("Via", "kong/3.4.2")
                    .body(http_body_util::Full::new(body))
                    .unwrap_or_else(|_| json_response(502, None));
            }
            Err(e) => {
                let outcome = match e {
                    SendError::Timeout(_) => balancer::Outcome::Timeout,
                    _ => balancer::Outcome::TcpFailure,
                };
                report(outcome);
                // nothing was sent: the balancer tries another peer, `retries` times at most
                if let (SendError::Connect(_), Some(t)) = (&e, &up.target) {
                    if (tried.len() as u64) < up.retries {
                        tried.push(t.clone());
                        continue;
                    }
                }
                tracing::debug!("proxy to {} failed: {e}", up.url);
                return json_response(
                    502,
                    Some(
                        &json!({"message": "An invalid response was received from the upstream server"}),
                    ),
                );
            }
        }
    }
}

/// Kong's answer when a request cannot be sent anywhere.
fn refusal(m: proxy::Match) -> Resp {
    let (status, message) = match m {
        proxy::Match::NoRoute => (404, "no Route matched with those values"),
        proxy::Match::NoService => (503, "no Service found with those values"),
        proxy::Match::NoPeer => (503, "failure to get a peer from the ring-balancer"),
        proxy::Match::To(_) => (500, "An unexpected error occurred"),
    };
    json_response(status, Some(&json!({ "message": message })))
}

/// The request's headers as they go upstream: no hop-by-hop ones, and `Host` only with
/// `preserve_host`.
fn upstream_headers(req: &ReadRequest, preserve_host: bool) -> Vec<(String, String)> {
    req.headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !(k == "host" && !preserve_host || k == "connection" || k == "content-length")
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Which of the two DB-mode timers.
#[derive(Clone, Copy)]
enum Rebuild {
    Router,
    PluginsIterator,
}

/// Kong's `router-rebuild` / `plugins-iterator-rebuild` timer (`init_worker`,
/// `kong.timer:named_every(name, worker_state_update_frequency, …)`): first at `first`, then every
/// `period`, rebuild when the store's version moved on.
async fn rebuild_loop(shared: Arc<Shared>, first: Duration, period: Duration, which: Rebuild) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let store = shared.store.lock().expect("store lock");
        let mut b = shared.built.lock().expect("built lock");
        match which {
            Rebuild::Router if b.router.version != store.router_version() => {
                b.router = Arc::new(Router::build(&store));
            }
            Rebuild::PluginsIterator if b.plugins.version != store.plugins_version() => {
                b.plugins = Arc::new(PluginsIterator::build(&store));
            }
            _ => {}
        }
    }
}

/// Active health checks: every 200 ms, probe the unhealthy targets that are due (a TCP connect,
/// or an HTTP GET of `http_path`) and bring back those that answer.
async fn probe_loop(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let due = {
            let mut store = shared.store.lock().expect("store lock");
            balancer::due_probes(&mut store)
        };
        for p in due {
            let ok = match &p.http_path {
                None => tokio::time::timeout(
                    p.timeout,
                    tokio::net::TcpStream::connect(p.address.as_str()),
                )
                .await
                .is_ok_and(|r| r.is_ok()),
                Some(path) => {
                    let url = format!("http://{}{path}", p.address);
                    let fut = shared.client.forward("GET", &url, &[], Bytes::new());
                    matches!(tokio::time::timeout(p.timeout, fut).await,
                             Ok(Ok((s, _, _))) if p.healthy_statuses.contains(&s))
                }
            };
            let mut store = shared.store.lock().expect("store lock");
            balancer::probe_result(&mut store, &p.target_id, ok);
        }
    }
}
