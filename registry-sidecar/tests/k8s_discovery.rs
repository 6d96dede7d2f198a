//! Kubernetes mode against a fake API server that speaks real Kubernetes JSON (list, watch,
//! 410 Gone, dropped watches, 403): services appear, change port, disappear, and Kong follows.

use nasiko_tests::docker::unique;
use nasiko_tests::http::HttpClient;
use nasiko_tests::k8s_api::FakeKubeApi;
use nasiko_tests::kong::{KongEmulator, Options};
use nasiko_tests::process::{free_port, wait_for, ChildGuard};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct K8s {
    api: FakeKubeApi,
    kong: KongEmulator,
    http: HttpClient,
    sidecar_api: String,
    _sidecar: ChildGuard,
    dir: std::path::PathBuf,
}

impl Drop for K8s {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl K8s {
    async fn start(prepare: impl FnOnce(&FakeKubeApi)) -> K8s {
        let api = FakeKubeApi::start("nasiko-agents").await;
        prepare(&api);
        let kong = KongEmulator::start(Options::strict()).await.unwrap();
        let dir = std::env::temp_dir().join(unique("k8s"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).unwrap();
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry-sidecar"));
        cmd.env("DISCOVERY_MODE", "kubernetes")
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KONG_ADMIN_URL", kong.admin_url())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("STATIC_ROUTES_FILE", dir.join("none.yml"))
            .env("RUST_LOG", "warn");
        let sidecar = ChildGuard::spawn("registry-sidecar", &mut cmd);
        let k = K8s {
            api,
            kong,
            http: HttpClient::default(),
            sidecar_api: format!("http://127.0.0.1:{port}"),
            _sidecar: sidecar,
            dir,
        };
        wait_for("the sidecar API", T, || async {
            k.http
                .json("GET", &format!("{}/health", k.sidecar_api), None)
                .await
                .ok()
                .map(drop)
        })
        .await;
        k
    }

    async fn service(&self, name: &str) -> Option<Value> {
        match self
            .http
            .json(
                "GET",
                &format!("{}/services/{name}", self.kong.admin_url()),
                None,
            )
            .await
        {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    async fn wait_service(&self, name: &str, what: &str, pred: impl Fn(Option<&Value>) -> bool) {
        let pred = &pred;
        wait_for(what, T, || async move {
            pred(self.service(name).await.as_ref()).then_some(())
        })
        .await;
    }

    async fn status(&self) -> Value {
        self.http
            .json("GET", &format!("{}/status", self.sidecar_api), None)
            .await
            .unwrap()
            .1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_appear_change_port_and_disappear_and_kong_follows() {
    let k = K8s::start(|api| {
        api.upsert_service(
            "agent-translator",
            &[(Some("metrics"), 9090), (Some("http"), 8080)],
            "10.96.0.10",
        );
        for (n, ip) in [
            ("kube-dns", "10.96.0.2"),
            ("redis-master", "10.96.0.3"),
            ("agent-x-headless", "None"),
            ("plain-headless-svc", "None"),
        ] {
            api.upsert_service(n, &[(None, 80)], ip);
        }
    })
    .await;
    k.wait_service("agent-translator", "the listed service", |s| {
        s.is_some_and(|s| {
            s["host"] == "agent-translator.nasiko-agents.svc.cluster.local" && s["port"] == 8080
        })
    })
    .await;
    // the route is written last (after the service's plugins): wait for it
    let route_url = format!("{}/routes/agent-translator-route", k.kong.admin_url());
    let r = wait_for("the route, written last", T, || async {
        let (s, r) = k.http.json("GET", &route_url, None).await.ok()?;
        (s == 200).then_some(r)
    })
    .await;
    assert_eq!(
        r["paths"][0].as_str(),
        Some("~/agents/agent-translator(?:/|$)")
    );
    // static proxies use cluster DNS names of the platform namespace, the auth host nasiko-auth,
    // and chat-logger on localhost
    let backend = k.service("backend-api-proxy").await.unwrap();
    assert_eq!(backend["host"], "nasiko-backend.nasiko.svc.cluster.local");
    // services, then routes, then plugins: wait for the last phase
    let purl = format!("{}/services/agent-translator/plugins", k.kong.admin_url());
    wait_for("the agent's plugins", T, || async {
        (k.http.json("GET", &purl, None).await.ok()?.1["data"]
            .as_array()?
            .len()
            == 3)
            .then_some(())
    })
    .await;
    let (_, plugins) = k
        .http
        .json(
            "GET",
            &format!("{}/services/agent-translator/plugins", k.kong.admin_url()),
            None,
        )
        .await
        .unwrap();
    let cfg = |name: &str| {
        plugins["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["config"].clone())
            .unwrap()
    };
    assert_eq!(
        cfg("chat-logger")["chat_service_url"],
        "http://localhost:8002"
    );
    assert_eq!(
        cfg("nasiko-auth")["auth_service_url"],
        "http://nasiko-auth.nasiko.svc.cluster.local:8001"
    );
    // a new service, then a port change, then a delete (watch events)
    k.api
        .upsert_service("summarizer", &[(None, 7000)], "10.96.0.11");
    k.wait_service("summarizer", "an added service", |s| {
        s.is_some_and(|s| s["port"] == 7000)
    })
    .await;
    k.api
        .upsert_service("summarizer", &[(Some("web"), 7100)], "10.96.0.11");
    k.wait_service("summarizer", "the port change", |s| {
        s.is_some_and(|s| s["port"] == 7100)
    })
    .await;
    k.api.delete_service("summarizer");
    k.wait_service("summarizer", "the deleted service to go", |s| s.is_none())
        .await;
    // excluded services never appear
    for n in [
        "kube-dns",
        "redis-master",
        "agent-x-headless",
        "plain-headless-svc",
    ] {
        assert!(k.service(n).await.is_none(), "{n} must not be routed");
    }
    let st = k.status().await;
    assert_eq!(st["discovery_mode"], "kubernetes");
    assert_eq!(st["discovery_status"], "healthy");
    // Kubernetes mode reports as Kubernetes, not through docker_* fields
    assert_eq!(st["kubernetes_status"], "healthy");
    assert_eq!(st["docker_status"], "not used");
    assert_eq!(st["docker_listed"], false);
    // watch, not poll: one list, then watches
    let reqs = k.api.requests();
    assert!(
        reqs.iter().filter(|r| !r.contains("watch=")).count() <= 2,
        "{reqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_and_a_dropped_watch_lead_to_a_re_list_that_misses_nothing() {
    let k = K8s::start(|api| api.upsert_service("first", &[(None, 5000)], "10.96.0.20")).await;
    k.wait_service("first", "the first service", |s| s.is_some())
        .await;
    // the watch drops and the next one is answered 410 Gone: the watcher must re-list
    k.api.gone_on_next_watch();
    k.api.drop_watches();
    let lists = || {
        k.api
            .requests()
            .iter()
            .filter(|r| !r.contains("watch="))
            .count()
    };
    wait_for("a re-list after 410 Gone", T, || async {
        (lists() >= 2).then_some(())
    })
    .await;
    k.api
        .upsert_service("second", &[(None, 5000)], "10.96.0.21");
    k.wait_service("second", "a service added after the re-list", |s| {
        s.is_some()
    })
    .await;
    k.api.drop_watches();
    k.api.delete_service("first");
    k.wait_service("first", "a delete after a dropped watch", |s| s.is_none())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbac_403_is_reported_clearly_and_nothing_is_deleted() {
    let k = K8s::start(|api| api.set_forbidden(true)).await;
    let st = wait_for("the 403 in /status", T, || async {
        let s = k.status().await;
        s["last_error"]
            .as_str()
            .filter(|e| e.contains("403"))
            .map(|_| s.clone())
    })
    .await;
    let err = st["last_error"].as_str().unwrap();
    assert!(
        err.contains("nasiko-agents") && err.contains("service account"),
        "{err}"
    );
    assert_eq!(st["discovery_status"], "unhealthy");
    assert_eq!(st["status"], "degraded");
    // the grant is fixed: discovery recovers
    k.api.set_forbidden(false);
    k.api
        .upsert_service("agent-late", &[(None, 5000)], "10.96.0.30");
    k.wait_service("agent-late", "discovery after the RBAC fix", |s| {
        s.is_some()
    })
    .await;
    assert!(k.kong.requests().iter().all(|r| r.method != "DELETE"));
}
