//! Kubernetes discovery: the Services of the agents namespace, watched with kube-rs's watcher
//! (list, then watch from the resourceVersion; re-list on 410 Gone and after reconnects; backoff),
//! turned into agent endpoints with the Python registry's exclusion and port rules. Publishes the
//! same `AgentsView` as Docker discovery, so the reconciler does not know the difference.

use crate::discovery::AgentsView;
use crate::endpoint::{AgentEndpoint, Discovered};
use crate::status::{Counters, DiscoveryState, Publisher};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// System services the Python registry skipped.
const EXCLUDED_NAMES: &[&str] = &[
    "kubernetes",
    "kube-dns",
    "kube-proxy",
    "metrics-server",
    "coredns",
];
/// Stateful services (by a part of the name) that are never agents.
const EXCLUDED_PARTS: &[&str] = &[
    "headless",
    "postgres",
    "redis",
    "mongodb",
    "mysql",
    "elasticsearch",
    "kafka",
    "zookeeper",
    "cassandra",
    "etcd",
];
const HTTP_PORT_NAMES: &[&str] = &["http", "api", "web", "rest"];

/// Why a Service is not an agent, or its endpoint.
pub fn classify_service(svc: &Service, namespace: &str) -> Result<AgentEndpoint, String> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    if EXCLUDED_NAMES.contains(&name.as_str()) {
        return Err(format!("{name}: a system service"));
    }
    if let Some(part) = EXCLUDED_PARTS.iter().find(|p| name.contains(*p)) {
        return Err(format!("{name}: a stateful service ({part})"));
    }
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| format!("{name}: no spec"))?;
    if spec.cluster_ip.as_deref() == Some("None") {
        return Err(format!("{name}: a headless service"));
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| {
            p.name
                .as_deref()
                .is_some_and(|n| HTTP_PORT_NAMES.contains(&n))
        })
        .or_else(|| ports.first())
        .ok_or_else(|| format!("{name}: no ports"))?;
    let port =
        u16::try_from(port.port).map_err(|_| format!("{name}: port {} out of range", port.port))?;
    if !crate::model::valid_kong_name(&name) {
        return Err(format!("{name}: not a valid Kong name"));
    }
    Ok(AgentEndpoint {
        name: name.strip_prefix("agent-").unwrap_or(&name).to_string(),
        kong_name: name.clone(),
        container_id: svc.metadata.uid.clone().unwrap_or_default(),
        container_name: name.clone(),
        ip: format!("{name}.{namespace}.svc.cluster.local"),
        network: String::new(),
        port,
        owner: svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(nasiko_contract::labels::OWNER).cloned())
            .unwrap_or_default(),
        version: svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(nasiko_contract::labels::VERSION).cloned()),
        upload_id: None,
        discovered_by: Discovered::KubernetesService,
        started_at: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        created_at: String::new(),
        generation: String::new(),
        health_checked: false,
        listening: None,
        pid: None,
    })
}

pub struct KubeDiscovery {
    pub namespace: String,
    /// Discovery's own state, for the API.
    pub report: Publisher<DiscoveryState>,
    pub counters: Arc<Counters>,
    pub tx: watch::Sender<AgentsView>,
}

fn explain(e: &watcher::Error, ns: &str) -> String {
    let api = |k: &kube::Error| {
        match k {
        kube::Error::Api(s) if s.code == 403 => Some(format!(
            "the Kubernetes API refused to list/watch services in namespace {ns} (403 Forbidden: {}). Grant the sidecar's service account get/list/watch on services there",
            s.message
        )),
        kube::Error::Api(s) if s.code == 404 => Some(format!("namespace {ns} or the services API was not found (404); check AGENTS_NAMESPACE")),
        _ => None,
    }
    };
    let specific = match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => api(k),
        _ => None,
    };
    specific.unwrap_or_else(|| format!("Kubernetes discovery: {e}. Is the API server reachable (in-cluster service account or KUBECONFIG)?"))
}

impl KubeDiscovery {
    /// Run until the task is dropped. `client` comes from the in-cluster config or a kubeconfig.
    pub async fn run(self, client: Client) {
        let api: Api<Service> = Api::namespaced(client, &self.namespace);
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut pending: Option<BTreeMap<String, Service>> = None;
        while let Some(item) = stream.next().await {
            match item {
                Err(e) => {
                    let msg = explain(&e, &self.namespace);
                    tracing::warn!("{msg}; retrying with backoff");
                    Counters::inc(&self.counters.docker_reconnects);
                    self.report.update(|s| {
                        s.reachable = false;
                        s.error = Some(msg);
                    });
                    self.tx
                        .send_if_modified(|v| std::mem::replace(&mut v.complete, false));
                    continue;
                }
                Ok(Event::Init) => pending = Some(BTreeMap::new()),
                Ok(Event::InitApply(s)) => {
                    if let (Some(p), Some(n)) = (pending.as_mut(), s.metadata.name.clone()) {
                        p.insert(n, s);
                    }
                }
                Ok(Event::InitDone) => {
                    services = pending.take().unwrap_or_default();
                    tracing::info!(namespace = %self.namespace, services = services.len(), "listed Kubernetes services");
                    self.report.update(|s| {
                        s.reachable = true;
                        s.listed = true;
                        s.error = None;
                    });
                    self.publish(&services, true);
                }
                Ok(Event::Apply(s)) => {
                    Counters::inc(&self.counters.docker_events);
                    if let Some(n) = s.metadata.name.clone() {
                        services.insert(n, s);
                    }
                    let complete = self.tx.borrow().complete; // the borrow ends before publish writes
                    self.publish(&services, complete);
                }
                Ok(Event::Delete(s)) => {
                    Counters::inc(&self.counters.docker_events);
                    if let Some(n) = &s.metadata.name {
                        services.remove(n);
                    }
                    let complete = self.tx.borrow().complete; // the borrow ends before publish writes
                    self.publish(&services, complete);
                }
            }
        }
    }

    fn publish(&self, services: &BTreeMap<String, Service>, complete: bool) {
        let mut view = AgentsView {
            complete,
            last_event_unix: Some(crate::status::now_unix()),
            ..Default::default()
        };
        for (name, svc) in services {
            match classify_service(svc, &self.namespace) {
                Ok(a) => {
                    view.agents.insert(name.clone(), std::sync::Arc::new(a));
                }
                Err(why) => {
                    view.waiting
                        .insert(name.clone(), format!("not an agent: {why}"));
                }
            }
        }
        self.tx.send_if_modified(|v| {
            let changed =
                v.agents != view.agents || v.complete != view.complete || v.waiting != view.waiting;
            if changed {
                *v = view;
            }
            changed
        });
    }
}

/// A client from the in-cluster service account, else the kubeconfig (KUBECONFIG or ~/.kube/config).
pub async fn client() -> Result<Client, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!("no Kubernetes configuration: {e}. Run in a pod with a service account, or set KUBECONFIG")
    })?;
    Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_service_becomes_an_endpoint_with_the_cluster_dns_name_and_http_port() {
        let s = svc(
            json!({"metadata": {"name": "agent-translator", "uid": "u1"},
            "spec": {"clusterIP": "10.0.0.5", "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]}}),
        );
        let a = classify_service(&s, "nasiko-agents").unwrap();
        assert_eq!(a.service_name(), "agent-translator");
        assert_eq!(
            a.url(),
            "http://agent-translator.nasiko-agents.svc.cluster.local:8080"
        );
        let s = svc(
            json!({"metadata": {"name": "plain"}, "spec": {"ports": [{"port": 7000}, {"port": 7001}]}}),
        );
        assert_eq!(
            classify_service(&s, "ns").unwrap().port,
            7000,
            "no http-ish name: the first port"
        );
    }

    #[test]
    fn the_creation_time_is_kept_as_rfc3339_and_parses() {
        // it was written with Debug formatting ("Time(...)") and never parsed (issue 12, 14)
        let s = svc(
            json!({"metadata": {"name": "agent-t", "creationTimestamp": "2026-11-24T10:00:05Z"},
            "spec": {"clusterIP": "10.0.0.5", "ports": [{"port": 8080}]}}),
        );
        let a = classify_service(&s, "ns").unwrap();
        assert_eq!(a.started_at, "2026-11-24T10:00:05Z");
        assert!(a.started_unix().is_some());
    }

    #[test]
    fn system_stateful_and_headless_services_are_never_agents() {
        for (name, ip) in [
            ("kube-dns", "10.0.0.1"),
            ("kubernetes", "10.0.0.1"),
            ("coredns", "1.1.1.1"),
            ("redis-master", "10.0.0.2"),
            ("my-postgres", "10.0.0.3"),
            ("kafka-0", "10.0.0.4"),
            ("agent-headless", "10.0.0.5"),
            ("agent-x", "None"),
        ] {
            let s = svc(
                json!({"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}),
            );
            assert!(classify_service(&s, "ns").is_err(), "{name}");
        }
        let s = svc(json!({"metadata": {"name": "noports"}, "spec": {"ports": []}}));
        assert!(classify_service(&s, "ns").unwrap_err().contains("no ports"));
    }
}
