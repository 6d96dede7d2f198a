//! Sidecar benchmarks (not tests): container start → route readable in Kong (p50/p95/p99, real
//! Docker, the release binary as a process, the Kong emulator; the agent on the shared network,
//! then on a network of its own); Admin API requests of a converged resync and of a cold sync
//! with 100 and 500 agents (the reconcile code over real HTTP, synthetic endpoints); sidecar RSS;
//! Kong's return → converged (outages of 3 s with a change made while Kong is away); a new agent
//! and a replica → answering through the gateway, with the emulator in the stack's `strict` and
//! at Kong's defaults (`eventual`, every 5 s). DB-less, our side of a sync on its own: the desired
//! state, the document and its canonical text, without Kong.
//! Run: cargo bench -p registry-sidecar   (BENCH_STARTS=N to change N; BENCH_ONLY=syncs for the
//! sync costs alone)

use nasiko_tests::docker::{docker, docker_ok, ensure_busybox_image, unique, AgentNet, TestNet};
use nasiko_tests::kong::{KongEmulator, Options};
use nasiko_tests::process::{free_port, ChildGuard};
use registry_sidecar::endpoint::AgentEndpoint;
use registry_sidecar::kong::KongClient;
use registry_sidecar::plugin_gate::PluginGate;
use registry_sidecar::static_routes::{parse, HostOverrides, EMBEDDED};
use registry_sidecar::sync::SyncRun;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The release sidecar as a process against `kong`, watching `net`, keeping `members` on the
/// agent networks; given a second to start.
async fn spawn_sidecar(kong: &KongEmulator, net: &TestNet, members: &str) -> ChildGuard {
    let port = free_port();
    let bin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/registry-sidecar");
    let mut cmd = Command::new(&bin);
    cmd.env("KONG_ADMIN_URL", kong.admin_url())
        .env("AGENTS_NETWORK", &net.name)
        .env("AGENT_NETWORK_MEMBERS", members)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("STATIC_ROUTES_FILE", "/nonexistent")
        .env("RUST_LOG", "error");
    let sidecar = ChildGuard::spawn("registry-sidecar", &mut cmd);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sidecar
}

/// Start → route, the agent on the shared network (legacy) or, with `own`, on a network of its
/// own that a stand-in gateway has joined (as the sidecar's membership keeper joins it).
async fn start_to_route(n: usize, own: bool) {
    ensure_busybox_image();
    let kong = KongEmulator::start(Options::strict()).await.unwrap();
    let net = TestNet::new();
    let name = unique("bench");
    let gw = format!("gw-{name}");
    net.run(
        &gw,
        &[&format!("--network={}", net.name)],
        &["sleep", "100000"],
    );
    let agent_net = own.then(|| AgentNet::new(&net.name, &name, &net.run));
    let sidecar = spawn_sidecar(&kong, &net, &format!("{gw}=kong-gateway")).await;
    let c = format!("c-{name}");
    let on = agent_net.as_ref().map_or(&net.name, |a| &a.name);
    let net_arg = format!("--network={on}");
    let (l1, l2, l3) = (
        "nasiko.type=agent".to_string(),
        format!("nasiko.name={name}"),
        format!("nasiko.stack={}", net.name),
    );
    net.run(
        &c,
        &[&net_arg, "--label", &l1, "--label", &l2, "--label", &l3],
        &["sleep", "100000"],
    );
    docker_ok(&["stop", "-t", "0", &c]);
    let svc = format!("agent-{name}");
    while kong.has_route(&format!("{svc}-route")) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss_rest = rss_kb(sidecar.pid());
    let mut lat = Vec::new();
    for _ in 0..n {
        let out = docker(&["start", &c]);
        assert!(out.status.success());
        let started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &c]);
        let t_start = registry_sidecar::endpoint::parse_rfc3339(&started).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !kong.has_route(&format!("{svc}-route")) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        lat.push((now - t_start) * 1000.0);
        docker_ok(&["stop", "-t", "0", &c]);
        while kong.has_route(&format!("{svc}-route")) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // an isolated start: nothing else happened in the last moment
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rss_after = rss_kb(sidecar.pid());
    let (p50, p95, p99) = (
        pct(&mut lat, 50.0),
        pct(&mut lat, 95.0),
        pct(&mut lat, 99.0),
    );
    let on = if own {
        "on its own network"
    } else {
        "on the shared network"
    };
    println!("container start -> route readable in Kong ({n} starts, {on}): p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms, max {:.1} ms", lat.last().unwrap());
    println!(
        "sidecar RSS: {} KiB at rest, {} KiB after {n} start/stop cycles",
        rss_rest, rss_after
    );
    drop(sidecar);
}

fn synthetic(n: usize) -> Vec<AgentEndpoint> {
    (0..n)
        .map(|i| {
            let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            AgentEndpoint::labelled(
                &format!("agent{i}"),
                &format!("c{i}"),
                &ip,
                "nasiko-network",
            )
        })
        .collect()
}

async fn sync_costs(n: usize, dbless: bool) {
    let kong = KongEmulator::start(Options {
        dbless,
        ..Options::strict()
    })
    .await
    .unwrap();
    let client = KongClient::new(
        &kong.admin_url(),
        Duration::from_secs(10),
        "managed-by-nasiko-registry",
        Arc::default(),
    );
    let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
    let agents = synthetic(n);
    let gate = PluginGate::new(tokio::time::Instant::now());
    let run = SyncRun {
        kong: &client,
        owner_tag: "managed-by-nasiko-registry",
        warmup: Duration::ZERO,
        concurrency: 8,
        gate: &gate,
    };
    let sync = || async {
        if let Err(e) = run.converge(true, &statics, &agents).await {
            panic!("sync failed: {e}");
        }
    };
    let t = Instant::now();
    sync().await;
    let cold = t.elapsed();
    let cold_req = kong.requests();
    // the first sync after writes lists every upstream's targets afresh; a sync at rest after it
    // reuses that listing while Kong's tagged ids are unchanged
    kong.clear_requests();
    let t = Instant::now();
    sync().await;
    let after = t.elapsed();
    let after_req = kong.requests().len();
    kong.clear_requests();
    let t = Instant::now();
    sync().await;
    let warm = t.elapsed();
    let warm_req = kong.requests();
    let writes = |r: &[nasiko_tests::kong::Recorded]| {
        r.iter().filter(|r| r.is_write() && r.status != 304).count()
    };
    println!(
        "{n} agents, {}: cold sync {:.0} ms, {} requests ({} writes); first resync {:.1} ms, {} requests; converged resync {:.1} ms, {} requests, {} writes (Python registry: ~{} calls per 30 s cycle)",
        if dbless { "DB-less" } else { "DB mode" },
        cold.as_secs_f64() * 1000.0,
        cold_req.len(),
        writes(&cold_req),
        after.as_secs_f64() * 1000.0,
        after_req,
        warm.as_secs_f64() * 1000.0,
        warm_req.len(),
        writes(&warm_req),
        7 * n
    );
    if dbless {
        dbless_our_side(&run, &client, &statics, &agents).await;
    }
}

/// DB-less: our side of a sync alone (the desired state, the document, its canonical text), cold
/// (Kong empty) and at rest (Kong holding it all): the median of 5.
async fn dbless_our_side(
    run: &SyncRun<'_>,
    client: &KongClient,
    statics: &registry_sidecar::static_routes::StaticConfig,
    agents: &[AgentEndpoint],
) {
    use registry_sidecar::declarative::{canonical, document};
    let node = client.node().await.unwrap();
    let current = client.read_config().await.unwrap();
    let empty = serde_json::json!({});
    let mut line = format!("{} agents, DB-less, our side alone:", agents.len());
    for (what, holding) in [("cold", &empty), ("at rest", &current)] {
        let mut ms: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let desired = run.wanted(&node, statics, agents);
                let doc = document(&desired, holding, run.owner_tag, false);
                std::hint::black_box(canonical(&doc).len());
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        line += &format!(" {what} {:.0} ms,", pct(&mut ms, 50.0));
    }
    println!("{}", line.trim_end_matches(','));
}

/// Kong refuses connections for 3 s while an agent starts; time from Kong's return until the
/// agent's route is readable. `n` outages.
async fn kong_return(n: usize) {
    ensure_busybox_image();
    let kong = KongEmulator::start(Options::strict()).await.unwrap();
    let net = TestNet::new();
    let _sidecar = spawn_sidecar(&kong, &net, "").await;
    let mut took = Vec::new();
    for i in 0..n {
        kong.set_fault(nasiko_tests::kong::Fault::Refuse);
        let name = unique(&format!("back{i}"));
        net.labelled_agent(&name);
        tokio::time::sleep(Duration::from_secs(3)).await;
        kong.set_fault(nasiko_tests::kong::Fault::None);
        let t = Instant::now();
        let svc = format!("agent-{name}");
        while !kong.has_route(&format!("{svc}-route")) {
            assert!(t.elapsed() < Duration::from_secs(60), "never converged");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "Kong back after a 3 s outage -> converged ({n} outages): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        pct(&mut took, 50.0),
        pct(&mut took, 95.0),
        pct(&mut took, 100.0)
    );
}

/// The emulator's `worker_consistency` for a figure: the stack's (`strict`) or Kong's defaults
/// (`eventual`, every 5 s).
fn kong_setting(eventual: bool) -> (Options, &'static str) {
    if eventual {
        (Options::default(), "Kong's defaults, eventual every 5 s")
    } else {
        (Options::strict(), "the stack's strict")
    }
}

/// GET `url` through the gateway until `who` answers it (`GET /id` names the replica).
async fn served_by(http: &nasiko_tests::http::HttpClient, url: &str, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _, b)) = http.send("GET", url, &[], Default::default()).await {
            if String::from_utf8_lossy(&b).trim() == who {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{who} never served");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Unix seconds now, and when container `c` started (Docker's clock, the same host's).
fn since_started(c: &str) -> f64 {
    let started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", c]);
    let t_start = registry_sidecar::endpoint::parse_rfc3339(&started).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    (now - t_start) * 1000.0
}

/// A new agent (its route, plugins, upstream and target all new): time from its container's
/// start until it answers through the gateway. `n` starts of one container, each after its
/// entities were removed.
async fn start_to_answering(n: usize, eventual: bool) {
    let image = ensure_busybox_image();
    let (opts, setting) = kong_setting(eventual);
    let kong = KongEmulator::start(opts).await.unwrap();
    let net = TestNet::new();
    let _sidecar = spawn_sidecar(&kong, &net, "").await;
    let name = unique("answer");
    let c = format!("{name}-r0");
    net.replica(&c, &name, image, &[]);
    let http = nasiko_tests::http::HttpClient::default();
    let url = format!("{}/agents/agent-{name}/id", kong.proxy_url());
    let svc = format!("agent-{name}");
    let mut lat = Vec::new();
    for i in 0..=n {
        if i > 0 {
            docker_ok(&["start", &c]);
        }
        served_by(&http, &url, &c).await;
        if i > 0 {
            lat.push(since_started(&c));
        }
        docker_ok(&["stop", "-t", "0", &c]);
        while kong.has_route(&format!("{svc}-route")) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "new agent: container start -> answering through the gateway ({n} starts, {setting}): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        pct(&mut lat, 50.0),
        pct(&mut lat, 95.0),
        pct(&mut lat, 100.0)
    );
}

/// A replica joins a serving agent: time from its start until a request through the gateway
/// is served by it, and the Admin API writes it costs (added, then removed when it goes).
async fn replica_to_traffic(n: usize, eventual: bool) {
    ensure_busybox_image();
    let (opts, setting) = kong_setting(eventual);
    let kong = KongEmulator::start(opts).await.unwrap();
    let net = TestNet::new();
    let _sidecar = spawn_sidecar(&kong, &net, "").await;
    let name = unique("scale");
    let image = ensure_busybox_image();
    net.replica(&format!("{name}-r0"), &name, image, &[]);
    let http = nasiko_tests::http::HttpClient::default();
    let url = format!("{}/agents/agent-{name}/id", kong.proxy_url());
    served_by(&http, &url, &format!("{name}-r0")).await;
    let (mut lat, mut writes) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let c = format!("{name}-r{i}");
        kong.clear_requests();
        net.replica(&c, &name, image, &[]);
        served_by(&http, &url, &c).await;
        lat.push(since_started(&c));
        docker_ok(&["rm", "-f", &c]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        writes.push(kong.requests().iter().filter(|r| r.is_write()).count() as f64);
    }
    println!(
        "replica start -> serving through the gateway ({n} replicas, {setting}): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; Admin API writes per replica (in and out): {:.0}",
        pct(&mut lat, 50.0),
        pct(&mut lat, 95.0),
        pct(&mut lat, 100.0),
        pct(&mut writes, 50.0)
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("BENCH_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    println!("== registry-sidecar");
    if std::env::var("BENCH_ONLY").as_deref() == Ok("syncs") {
        for dbless in [false, true] {
            sync_costs(500, dbless).await;
        }
        return;
    }
    start_to_route(n, false).await;
    start_to_route(n, true).await;
    for agents in [100, 500] {
        for dbless in [false, true] {
            sync_costs(agents, dbless).await;
        }
    }
    kong_return(10).await;
    for eventual in [false, true] {
        start_to_answering(if eventual { 8 } else { 20 }, eventual).await;
        replica_to_traffic(20, eventual).await;
    }
}
