//! Agents on their own networks (issue 25), against the real Docker engine and the Kong
//! emulator: discovery routes an agent at its address on its own network; the membership keeper
//! keeps the member containers (the gateway) on every agent network under their alias — at
//! start, when a member is recreated, when a network is made — and connects nothing else.
//!
//! A file of its own: its agents sit on networks named after each test's own stack, and cargo
//! runs test files one after another, so the other Docker tests never see them.

use nasiko_contract::labels;
use nasiko_tests::docker::{docker_ok, unique, AgentNet, TestNet};
use nasiko_tests::http::HttpClient;
use nasiko_tests::kong::{KongEmulator, Options};
use nasiko_tests::process::{free_port, wait_for, ChildGuard};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// The sidecar with its Kong emulator, shared network (the stack) and agent networks. Fields
/// drop in order: the sidecar first (nothing is joined during cleanup), then the agent networks,
/// then the containers and the shared network.
struct Harness {
    sidecar: Option<ChildGuard>,
    agent_nets: Vec<AgentNet>,
    net: TestNet,
    kong: KongEmulator,
    http: HttpClient,
    api: String,
    port: u16,
    /// AGENT_NETWORK_MEMBERS of this test: `{gw}=kong-gateway`.
    gw: String,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    async fn prepare() -> Harness {
        let dir = std::env::temp_dir().join(unique("sidecar-agentnets"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        Harness {
            sidecar: None,
            agent_nets: Vec::new(),
            net: TestNet::new(),
            kong: KongEmulator::start(Options::strict()).await.unwrap(),
            http: HttpClient::default(),
            api: format!("http://127.0.0.1:{port}"),
            port,
            gw: unique("gw"),
            dir,
        }
    }

    async fn start_sidecar(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry-sidecar"));
        cmd.env("KONG_ADMIN_URL", self.kong.admin_url())
            .env("AGENTS_NETWORK", &self.net.name)
            .env("AGENT_NETWORK_MEMBERS", format!("{}=kong-gateway", self.gw))
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("STATIC_ROUTES_FILE", self.dir.join("static-routes.yml"))
            .env("REGISTRY_INTERVAL", "30")
            .env("MEMBERS_READY_DIR", self.ready_dir())
            .env("RUST_LOG", "warn,registry_sidecar::members=info")
            .env_remove("DOCKER_HOST");
        self.sidecar = Some(ChildGuard::spawn("registry-sidecar", &mut cmd));
        self.wait_status("the sidecar's first sync", |s| {
            s["last_sync"] != "never" && s["docker_listed"] == true
        })
        .await;
    }

    /// MEMBERS_READY_DIR of this test's sidecar (made here).
    fn ready_dir(&self) -> std::path::PathBuf {
        let d = self.dir.join("ready");
        std::fs::create_dir_all(&d).expect("the ready folder");
        // the sidecar drops root (RUN_AS_USER)
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        d
    }

    /// What the sidecar told member `gw` (its ready file), trimmed; empty when nothing.
    fn told(&self) -> String {
        std::fs::read_to_string(self.ready_dir().join(&self.gw))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// A new agent network of this stack, for agent `agent`; returns its name.
    fn agent_net(&mut self, agent: &str) -> String {
        let n = AgentNet::new(&self.net.name, agent, &self.net.run);
        let name = n.name.clone();
        self.agent_nets.push(n);
        name
    }

    /// Agent `name`'s entry container on `network` only, labelled as the build agent labels it
    /// (or, with `labelled` false, only named `agent-{name}`): serves HTTP on 5000.
    fn agent_on(&self, container: &str, name: &str, network: &str, labelled: bool) -> String {
        let net = format!("--network={network}");
        let mut extra = vec![net];
        if labelled {
            for l in [
                format!("{}={}", labels::TYPE, labels::TYPE_AGENT),
                format!("{}={name}", labels::NAME),
                format!("{}={}", labels::STACK, self.net.name),
            ] {
                extra.extend(["--label".to_string(), l]);
            }
        }
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.net.run(
            container,
            &refs,
            &["httpd", "-f", "-p", "5000", "-h", "/www"],
        )
    }

    /// The member (the gateway) on the shared network, as Kong is on the platform's: answers
    /// `GET /id` on 5000 with its container name.
    fn start_gateway(&self) {
        let script = format!(
            "mkdir -p /w && echo {} > /w/id && exec httpd -f -p 5000 -h /w",
            self.gw
        );
        let net = format!("--network={}", self.net.name);
        self.net.run(&self.gw, &[&net], &["sh", "-c", &script]);
    }

    async fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let pred = &pred;
        wait_for(what, T, || async move {
            let url = format!("{}/status", self.api);
            let (_, s) = self.http.json("GET", &url, None).await.ok()?;
            pred(&s).then_some(s)
        })
        .await
    }

    /// Wait until upstream `agent-{name}` has exactly the targets `want`.
    async fn wait_targets(&self, name: &str, want: &[String]) {
        let url = format!("{}/upstreams/agent-{name}/targets", self.kong.admin_url());
        let what = format!("agent {name} routed at {want:?}");
        wait_for(&what, T, || async {
            let (_, l) = self.http.json("GET", &url, None).await.ok()?;
            let mut got: Vec<String> = l["data"]
                .as_array()?
                .iter()
                .map(|t| t["target"].as_str().unwrap_or_default().to_string())
                .collect();
            got.sort();
            (got == want).then_some(())
        })
        .await;
    }

    async fn service_status(&self, name: &str) -> u16 {
        let url = format!("{}/services/agent-{name}", self.kong.admin_url());
        self.http.json("GET", &url, None).await.unwrap().0
    }
}

/// A container's networks: name → (IP, aliases).
fn networks_of(container: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let j = docker_ok(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        container,
    ]);
    let v: BTreeMap<String, Value> = serde_json::from_str(&j).unwrap();
    v.into_iter()
        .map(|(n, e)| {
            let ip = e["IPAddress"].as_str().unwrap_or_default().to_string();
            let aliases = e["Aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            (n, (ip, aliases))
        })
        .collect()
}

/// Wait until `container` is on each of `nets` as `kong-gateway`.
async fn wait_member_on(container: &str, nets: &[String]) {
    let what = format!("{container} on {nets:?} as kong-gateway");
    wait_for(&what, T, || async {
        let on = networks_of(container);
        let all = nets.iter().all(|n| {
            on.get(n).is_some_and(|(ip, aliases)| {
                !ip.is_empty() && aliases.iter().any(|a| a == "kong-gateway")
            })
        });
        all.then_some(())
    })
    .await;
}

fn ip_on(container: &str, network: &str) -> String {
    networks_of(container)
        .remove(network)
        .unwrap_or_else(|| panic!("{container} is not on {network}"))
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn an_agent_on_its_own_network_is_routed_at_its_address_there() {
    let mut h = Harness::prepare().await;
    // before the sidecar starts (found by the list) and after (found by events)
    let early = unique("early");
    let early_net = h.agent_net(&early);
    h.agent_on(&format!("c-{early}"), &early, &early_net, true);
    h.start_sidecar().await;
    let ip = ip_on(&format!("c-{early}"), &early_net);
    h.wait_targets(&early, &[format!("{ip}:5000")]).await;

    let late = unique("late");
    let late_net = h.agent_net(&late);
    h.agent_on(&format!("c-{late}"), &late, &late_net, true);
    let ip = ip_on(&format!("c-{late}"), &late_net);
    h.wait_targets(&late, &[format!("{ip}:5000")]).await;

    // the naming fallback: an unlabelled agent-{name} container on its own network
    let legacy = unique("fallback");
    let legacy_net = h.agent_net(&legacy);
    h.agent_on(&format!("agent-{legacy}"), &legacy, &legacy_net, false);
    let ip = ip_on(&format!("agent-{legacy}"), &legacy_net);
    h.wait_targets(&legacy, &[format!("{ip}:5000")]).await;

    // on its own network and the shared one: its own network wins
    docker_ok(&["network", "connect", &h.net.name, &format!("c-{late}")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ip = ip_on(&format!("c-{late}"), &late_net);
    h.wait_targets(&late, &[format!("{ip}:5000")]).await;

    // a container labelled alpha on beta's network only is not routed there: it waits
    let (alpha, beta) = (unique("alpha"), unique("beta"));
    let beta_net = h.agent_net(&beta);
    h.agent_on(&format!("c-{alpha}"), &alpha, &beta_net, true);
    let s = h
        .wait_status("alpha waiting, on beta's network", |s| {
            s["agents_waiting"]
                .to_string()
                .contains(&format!("agent '{alpha}'"))
        })
        .await;
    assert!(s["agents_waiting"].to_string().contains(&beta_net), "{s}");
    assert_eq!(h.service_status(&alpha).await, 404, "alpha is not routed");
    // ... until it joins its own network
    let alpha_net = h.agent_net(&alpha);
    docker_ok(&["network", "connect", &alpha_net, &format!("c-{alpha}")]);
    let ip = ip_on(&format!("c-{alpha}"), &alpha_net);
    h.wait_targets(&alpha, &[format!("{ip}:5000")]).await;

    // leaving its own network (and every other we watch) unroutes it
    docker_ok(&["network", "disconnect", &early_net, &format!("c-{early}")]);
    let what = format!("agent-{early} unrouted after it left its network");
    wait_for(&what, T, || async {
        (h.service_status(&early).await == 404).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_member_joins_the_agent_networks_at_start_under_its_alias() {
    let mut h = Harness::prepare().await;
    h.start_gateway();
    let name = unique("reach");
    let own = h.agent_net(&name);
    let agent = format!("c-{name}");
    h.agent_on(&agent, &name, &own, true);
    h.start_sidecar().await;
    wait_member_on(&h.gw, std::slice::from_ref(&own)).await;
    let gw_ip = ip_on(&h.gw, &own);
    // routed, and by then the gateway could reach it
    h.wait_targets(&name, &[format!("{}:5000", ip_on(&agent, &own))])
        .await;
    // from the agent, kong-gateway is the member, at its address on the agent's network
    let looked_up = docker_ok(&["exec", &agent, "nslookup", "kong-gateway"]);
    assert!(
        looked_up
            .lines()
            .any(|l| l.contains("Address") && l.contains(&gw_ip)),
        "kong-gateway should resolve to {gw_ip} on {own}: {looked_up}"
    );
    // ... and answers there (by address, with nc: the static busybox's wget crashes here)
    let get = format!("printf 'GET /id HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {gw_ip} 5000");
    let answer = docker_ok(&["exec", &agent, "sh", "-c", &get]);
    assert!(
        answer.starts_with("HTTP/1.") && answer.ends_with(&h.gw),
        "{answer}"
    );

    // the counter says so
    let s = h
        .wait_status("the connect counted", |s| {
            s["counters"]["member_connects"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(
        s["agent_network_members"]["errors"],
        serde_json::json!({}),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_recreated_member_is_rejoined_to_every_agent_network_and_the_time_is_reported() {
    let n: usize = std::env::var("NASIKO_REJOIN_NETWORKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut h = Harness::prepare().await;
    h.start_gateway();
    let nets: Vec<String> = (0..n)
        .map(|i| h.agent_net(&unique(&format!("rejoin{i}"))))
        .collect();
    h.start_sidecar().await;
    wait_member_on(&h.gw, &nets).await;
    let syncs = |s: &Value| s["counters"]["syncs"].as_u64().unwrap_or(0);
    // settled: the start-up syncs are done (no sync for 2 s)
    let mut before = syncs(&h.wait_status("a first sync", |s| syncs(s) > 0).await);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = syncs(&h.wait_status("the status", |_| true).await);
        if now == before {
            break;
        }
        before = now;
    }
    let old_id = docker_ok(&["inspect", "-f", "{{.Id}}", &h.gw]);
    assert_eq!(
        h.told(),
        old_id,
        "the member is told once it is on every agent network"
    );
    // compose recreates the gateway: a new container, on its compose networks only
    docker_ok(&["rm", "-f", &h.gw]);
    let t0 = Instant::now();
    h.start_gateway();
    wait_member_on(&h.gw, &nets).await;
    let seen = t0.elapsed();
    let gw = h.gw.clone();
    h.wait_status("the rejoin reported", |s| {
        s["agent_network_members"]["rejoins"][&gw]["connected"] == n
    })
    .await;
    // the new container is told it is on every agent network: its entrypoint may serve now
    let new_id = docker_ok(&["inspect", "-f", "{{.Id}}", &gw]);
    assert_ne!(new_id, old_id);
    assert_eq!(h.told(), new_id);
    // the rejoined gateway is synced at once, not at the next interval (REGISTRY_INTERVAL=30):
    // one that came back without its configuration gets it now
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let (_, s) = h
            .http
            .json("GET", &format!("{}/status", h.api), None)
            .await
            .unwrap();
        if syncs(&s) > before || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(syncs(&s) > before, "no sync after the rejoin: {s}");
    let rejoin = &s["agent_network_members"]["rejoins"][&gw];
    assert_eq!(rejoin["networks"], n, "{s}");
    assert_eq!(rejoin["alias"], "kong-gateway", "{s}");
    let ms = s["gateway_rejoin_ms"]
        .as_u64()
        .expect("gateway_rejoin_ms is reported");
    assert_eq!(rejoin["ms"].as_u64(), Some(ms), "{s}");
    assert!(ms < 10_000, "rejoining {n} networks took {ms} ms");
    eprintln!("rejoin of {n} agent networks: {ms} ms reported by the sidecar, {} ms seen by the test from docker run", seen.as_millis());
    let metrics = h
        .http
        .send(
            "GET",
            &format!("{}/metrics", h.api),
            &[],
            Default::default(),
        )
        .await
        .unwrap()
        .2;
    assert!(String::from_utf8_lossy(&metrics).contains("registry_gateway_rejoin_seconds "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn an_agent_network_made_later_gets_the_members_at_once() {
    let mut h = Harness::prepare().await;
    h.start_gateway();
    h.start_sidecar().await;
    let name = unique("later");
    let t0 = Instant::now();
    let own = h.agent_net(&name);
    wait_member_on(&h.gw, std::slice::from_ref(&own)).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the member joined a new network after {took:?}"
    );
    eprintln!(
        "a new agent network had its member {} ms after docker network create began",
        took.as_millis()
    );
    // and its agent is routed there
    let agent = format!("c-{name}");
    h.agent_on(&agent, &name, &own, true);
    h.wait_targets(&name, &[format!("{}:5000", ip_on(&agent, &own))])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_container_that_is_not_a_member_is_never_connected() {
    let mut h = Harness::prepare().await;
    h.start_gateway();
    // a bystander with a name like the gateway's, and an agent: neither is a member
    let bystander = format!("{}-x", h.gw);
    let net = format!("--network={}", h.net.name);
    h.net.run(&bystander, &[&net], &["sleep", "600"]);
    let name = unique("alone");
    let own = h.agent_net(&name);
    let agent = format!("c-{name}");
    h.agent_on(&agent, &name, &own, true);
    h.start_sidecar().await;
    let second = h.agent_net(&unique("second"));
    docker_ok(&["restart", "-t", "0", &bystander]);
    docker_ok(&["restart", "-t", "0", &h.gw]);
    let third = h.agent_net(&unique("third"));
    wait_member_on(&h.gw, &[own.clone(), second, third]).await;
    h.wait_targets(&name, &[format!("{}:5000", ip_on(&agent, &own))])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nets = |c: &str| networks_of(c).into_keys().collect::<Vec<_>>();
    assert_eq!(
        nets(&bystander),
        [h.net.name.clone()],
        "the bystander is on its own network only"
    );
    assert_eq!(nets(&agent), [own], "the agent is on its own network only");
}

#[test]
#[ignore = "needs docker"]
fn a_bad_members_setting_stops_the_sidecar_and_says_what_to_write() {
    let out = Command::new(env!("CARGO_BIN_EXE_registry-sidecar"))
        .env("AGENT_NETWORK_MEMBERS", "kong-gateway,my gw=kong-gateway")
        .env("RUN_AS_USER", "")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'my gw=kong-gateway'") && err.contains("container=alias"),
        "{err}"
    );
}
