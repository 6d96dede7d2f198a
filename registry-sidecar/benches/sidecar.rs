//! Sidecar benchmarks (not tests): container start → route readable in Kong (p50/p95/p99, real
//! Docker, the release binary as a process, the Kong emulator; the agent on the shared network,
//! then on a network of its own); Admin API requests of a converged resync and of a cold sync
//! with 100 and 500 agents (the reconcile code over real HTTP, synthetic endpoints); sidecar RSS;
//! Kong's return → converged (outages of 3 s with a change made while Kong is away); a new agent
//! and a replica → answering through the gateway, with the emulator in the stack's `strict` and
//! at Kong's defaults (`eventual`, every 5 s). DB-less, our side of a sync on its own: the desired
//! state, the document and its canonical text, without Kong.
//! Run: cargo bench -p registry-sidecar   (BENCH_STARTS=N to change N; BENCH_ONLY=syncs for the
//! sync costs alone (100 and 500 agents), BENCH_ONLY=route for start → route at 0, 100 and 500
//! other agents, BENCH_AGENTS=0,500 for some; BENCH_SIDECAR_LOG=registry_sidecar=debug for the
//! sidecar's timings of each stage in its log; BENCH_ONLY=memory for its RSS with 50 agents;
//! BENCH_SIDECAR_BIN=path to run another build of the sidecar, or a wrapper that profiles it)

use nasiko_tests::docker::{docker, docker_ok, ensure_busybox_image, unique, AgentNet, TestNet};
use nasiko_tests::kong::{KongEmulator, Options};
use nasiko_tests::process::{free_port, ChildGuard};
use nasiko_tests::procfs;
use registry_sidecar::endpoint::AgentEndpoint;
use registry_sidecar::kong::KongClient;
use registry_sidecar::plugin_gate::PluginGate;
use registry_sidecar::static_routes::{parse, HostOverrides, EMBEDDED};
use registry_sidecar::sync::{Start, SyncRun};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

fn rss_kb(pid: u32) -> f64 {
    procfs::status_kib(pid, "VmRSS:")
}

/// A process's memory as its `/proc/PID/status` says it: "RSS 16.1 MiB (10.2 + 5.9), peak 16.2
/// MiB, 5 threads".
fn memory_of(pid: u32) -> String {
    let mib = |key: &str| procfs::status_kib(pid, key) / 1024.0;
    format!(
        "RSS {:.1} MiB ({:.1} + {:.1}), peak {:.1} MiB, {} threads",
        mib("VmRSS:"),
        mib("RssAnon:"),
        mib("RssFile:"),
        mib("VmHWM:"),
        procfs::status_kib(pid, "Threads:")
    )
}

/// The emulator (`strict`), a test network, a run name (`prefix` made unique) and a stand-in
/// gateway container on the network, `gw-{name}`: the member the sidecar keeps on agent networks.
async fn with_gateway(prefix: &str) -> (KongEmulator, TestNet, String, String) {
    ensure_busybox_image();
    let kong = KongEmulator::start(Options::strict()).await.unwrap();
    let net = TestNet::new();
    let name = unique(prefix);
    let gw = format!("gw-{name}");
    net.run(
        &gw,
        &[&format!("--network={}", net.name)],
        &["sleep", "100000"],
    );
    (kong, net, name, gw)
}

/// The release sidecar as a process against `kong`, watching `net`, keeping `members` on the
/// agent networks; given a second to start.
async fn spawn_sidecar(kong: &KongEmulator, net: &TestNet, members: &str) -> ChildGuard {
    let port = free_port();
    // BENCH_SIDECAR_BIN: another build of the sidecar, for a before and after in one setting
    let bin = std::env::var_os("BENCH_SIDECAR_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/release/registry-sidecar")
        });
    let mut cmd = Command::new(&bin);
    cmd.env("KONG_ADMIN_URL", kong.admin_url())
        .env("AGENTS_NETWORK", &net.name)
        .env("AGENT_NETWORK_MEMBERS", members)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("STATIC_ROUTES_FILE", "/nonexistent")
        // BENCH_SIDECAR_LOG=debug: the sidecar's timings of each stage, in its log
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SIDECAR_LOG").unwrap_or_else(|_| "error".into()),
        );
    let sidecar = ChildGuard::spawn("registry-sidecar", &mut cmd);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sidecar
}

/// Wall-clock seconds (Docker's clock is the same host's).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `n` labelled agents on `net` besides the measured one (busybox httpd), four `docker run`s at
/// a time; returns once Kong routes them all.
fn fill(net: &TestNet, kong: &KongEmulator, n: usize, run: &str) {
    std::thread::scope(|s| {
        for w in 0..4 {
            s.spawn(move || {
                for i in (w..n).step_by(4) {
                    net.labelled_agent(&format!("{run}-f{i}"));
                }
            });
        }
    });
    let routes = || {
        kong.with_store(|s| {
            s.all(nasiko_tests::kong::entities::Kind::Routes)
                .filter(|r| r["name"].as_str().is_some_and(|n| n.contains(run)))
                .count()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while routes() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} agents routed",
            routes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The limit of one start → route, measured beside it: the start event reaching a subscriber,
/// one `inspect`, and a new agent's writes alone (the requests the sidecar sends, phase by phase:
/// upstream and service, then target and plugins, then route, the order that closes the auth
/// window).
struct Limit {
    event_ms: Vec<f64>,
    inspect_ms: Vec<f64>,
    writes_ms: Vec<f64>,
}

impl Limit {
    /// The sum of the three medians.
    fn total_p50(&mut self) -> f64 {
        pct(&mut self.event_ms, 50.0)
            + pct(&mut self.inspect_ms, 50.0)
            + pct(&mut self.writes_ms, 50.0)
    }
}

/// A new agent's writes, timed alone against `kong`, `n` times: the plan the sidecar would make
/// for it, sent phase by phase with each phase's writes together, under another tag (which the
/// sidecar leaves alone), then removed.
async fn new_agent_writes(kong: &KongEmulator, n: usize) -> Vec<f64> {
    let client = KongClient::new(
        &kong.admin_url(),
        Duration::from_secs(5),
        "bench-limit",
        Arc::default(),
    );
    let mut statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
    statics.proxies.clear();
    let gate = PluginGate::new(tokio::time::Instant::now());
    let run = SyncRun {
        kong: &client,
        owner_tag: "bench-limit",
        warmup: Duration::ZERO,
        concurrency: 8,
        gate: &gate,
    };
    let node = client.node().await.unwrap();
    let probe = [Arc::new(AgentEndpoint::labelled(
        "limitprobe",
        "c-limitprobe",
        "10.250.1.2",
        "nasiko-network",
    ))];
    let mut ms = Vec::new();
    for _ in 0..n {
        let desired = run.wanted(&node, &statics, &probe);
        let p = registry_sidecar::diff::plan(&desired, &Default::default(), true);
        assert_eq!(
            p.phases.iter().filter(|p| !p.is_empty()).count(),
            3,
            "{:?}",
            p.phases
        );
        let t = Instant::now();
        for phase in &p.phases {
            for r in futures_util::future::join_all(phase.iter().map(|w| client.apply(w))).await {
                r.unwrap();
            }
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        run.converge(true, &statics, &[], Start::Fresh)
            .await
            .unwrap();
    }
    ms
}

/// Start → route readable in Kong, `n` isolated starts of one agent's container among `agents`
/// others, on the shared network (legacy) or, with `own`, on a network of its own that a stand-in
/// gateway has joined (as the sidecar's membership keeper joins it). The route is watched from
/// before `docker start` by a thread that reads the emulator's store every 0.2 ms; the time is
/// counted from the container's `StartedAt`. Beside it, the limit (`Limit`).
async fn start_to_route(n: usize, own: bool, agents: usize) {
    let (kong, net, name, gw) = with_gateway("bench").await;
    let agent_net = own.then(|| AgentNet::new(&net.name, &name, &net.run));
    let sidecar = spawn_sidecar(&kong, &net, &format!("{gw}=kong-gateway")).await;
    fill(&net, &kong, agents, &name);
    let c = format!("c-{name}");
    let on = agent_net.as_ref().map_or(&net.name, |a| &a.name);
    let net_arg = format!("--network={on}");
    let (l1, l2, l3) = (
        "nasiko.type=agent".to_string(),
        format!("nasiko.name={name}"),
        format!("nasiko.stack={}", net.name),
    );
    // an agent that listens on its port at once (busybox httpd): it is routed once it does
    net.run(
        &c,
        &[&net_arg, "--label", &l1, "--label", &l2, "--label", &l3],
        &["httpd", "-f", "-p", "5000", "-h", "/"],
    );
    docker_ok(&["stop", "-t", "0", &c]);
    let route = format!("agent-{name}-route");
    while kong.has_route(&route) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // the start events, as a subscriber like the sidecar receives them
    let engine = registry_sidecar::discovery::connect(None).await.unwrap();
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let listener = {
        let (engine, arrivals, c) = (engine.clone(), arrivals.clone(), c.clone());
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let filters = [
                ("type".to_string(), vec!["container".to_string()]),
                ("event".to_string(), vec!["start".to_string()]),
                ("container".to_string(), vec![c]),
            ];
            let mut events = engine.events(Some(bollard::query_parameters::EventsOptions {
                since: None,
                until: None,
                filters: Some(filters.into_iter().collect()),
            }));
            while let Some(Ok(_)) = events.next().await {
                arrivals.lock().unwrap().push(unix_now());
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_rest = rss_kb(sidecar.pid());
    let (mut lat, mut limit) = (
        Vec::new(),
        Limit {
            event_ms: Vec::new(),
            inspect_ms: Vec::new(),
            writes_ms: new_agent_writes(&kong, 20).await,
        },
    );
    for _ in 0..n {
        // the emulator notes when it wrote the route: the moment a read sees it, with no poll
        // beside the sidecar competing for the store or the CPU
        let before = kong.route_written_at(&route);
        assert!(docker(&["start", &c]).status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            match kong.route_written_at(&route) {
                Some(t) if Some(t) != before && kong.has_route(&route) => break t,
                _ if Instant::now() > deadline => panic!("no route within 10 s"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &c]);
        let t_start = registry_sidecar::endpoint::parse_rfc3339(&started).unwrap();
        lat.push((seen - t_start) * 1000.0);
        if let Some(at) = arrivals.lock().unwrap().pop() {
            limit.event_ms.push((at - t_start) * 1000.0);
        }
        docker_ok(&["stop", "-t", "0", &c]);
        while kong.has_route(&route) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // an isolated start: nothing else happened in the last moment
        tokio::time::sleep(Duration::from_millis(300)).await;
        // one inspect, timed while nothing else runs (this process also hosts the emulator)
        let t = Instant::now();
        engine.inspect_container(&c, None).await.unwrap();
        limit.inspect_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    listener.abort();
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
    let floor = limit.total_p50();
    println!(
        "container start -> route readable in Kong ({n} starts, {on}, {agents} other agents): p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        lat.last().unwrap()
    );
    println!(
        "  limit, measured beside it: start event delivered p50 {:.1} ms + one inspect p50 {:.1} ms + a new agent's writes alone (3 phases) p50 {:.1} ms = {floor:.1} ms; our p50 is {:.1}x the limit, p95 {:.1}x",
        pct(&mut limit.event_ms, 50.0),
        pct(&mut limit.inspect_ms, 50.0),
        pct(&mut limit.writes_ms, 50.0),
        p50 / floor,
        p95 / floor
    );
    println!(
        "sidecar RSS: {} KiB at rest, {} KiB after {n} start/stop cycles",
        rss_rest, rss_after
    );
    drop(sidecar);
}

/// The sidecar's RSS as a host process: at rest, once `agents` agents (busybox httpd, on the
/// shared network) are routed, and after its idle connections time out (35 s); the peak. With
/// `BENCH_SIDECAR_BIN` pointing at a wrapper that runs it under heaptrack, a heap profile of the
/// same (the wrapper's own RSS is then what is printed).
async fn memory(agents: usize) {
    let (kong, net, name, gw) = with_gateway("mem").await;
    let sidecar = spawn_sidecar(&kong, &net, &format!("{gw}=kong-gateway")).await;
    let rest = memory_of(sidecar.pid());
    let t = Instant::now();
    fill(&net, &kong, agents, &name);
    let routed = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = memory_of(sidecar.pid());
    tokio::time::sleep(Duration::from_secs(35)).await;
    let settled = memory_of(sidecar.pid());
    println!(
        "sidecar memory as a host process (RSS: anonymous + files mapped; peak; threads): at rest {rest}; with {agents} agents (all routed in {:.1} s) {loaded}; 35 s later {settled}",
        routed.as_secs_f64()
    );
    // SIGTERM: a profiler around it writes its data out
    sidecar.signal(15);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(sidecar);
}

fn synthetic(n: usize) -> Vec<Arc<AgentEndpoint>> {
    (0..n)
        .map(|i| {
            let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            Arc::new(AgentEndpoint::labelled(
                &format!("agent{i}"),
                &format!("c{i}"),
                &ip,
                "nasiko-network",
            ))
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
        if let Err(e) = run.converge(true, &statics, &agents, Start::Fresh).await {
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
    } else {
        event_sync(&run, &kong, &statics, &agents).await;
    }
}

/// DB mode: an event's sync among `agents` (a new agent, planned from the snapshot the sync
/// before it left), its time and Admin API requests before its route is in; then the agent
/// removed again (its upstream deleted), as another event's sync, timed too. The median of 5.
async fn event_sync(
    run: &SyncRun<'_>,
    kong: &KongEmulator,
    statics: &registry_sidecar::static_routes::StaticConfig,
    agents: &[Arc<AgentEndpoint>],
) {
    let mut snap = run
        .converge(true, statics, agents, Start::Fresh)
        .await
        .unwrap()
        .snapshot;
    let mut with = agents.to_vec();
    with.push(Arc::new(AgentEndpoint::labelled(
        "newcomer",
        "c-new",
        "10.250.0.2",
        "nasiko-network",
    )));
    let (mut ms, mut until_route, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    let mut removal_ms = Vec::new();
    for _ in 0..5 {
        kong.clear_requests();
        let t = Instant::now();
        let newcomer = ["agent-newcomer".to_string()].into();
        let start = Start::Changed(snap.take().expect("a snapshot"), newcomer);
        let began = unix_now();
        let report = run.converge(true, statics, &with, start).await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        // the route's time: when the emulator wrote it
        let written = kong
            .route_written_at("agent-newcomer-route")
            .expect("the route");
        until_route.push((written - began) * 1000.0);
        let reqs = kong.requests();
        let last_write = reqs.iter().rposition(|r| r.is_write()).unwrap_or(0);
        reads.push(reqs[..last_write].iter().filter(|r| !r.is_write()).count() as f64);
        let t = Instant::now();
        let gone = ["agent-newcomer".to_string()].into();
        let start = Start::Changed(report.snapshot.unwrap(), gone);
        snap = run
            .converge(true, statics, agents, start)
            .await
            .unwrap()
            .snapshot;
        removal_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut node_ms: Vec<f64> = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        run.kong.node().await.unwrap();
        node_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "{} agents, DB mode: an event's sync (a new agent alone, from the snapshot): route in after {:.1} ms (median of 5), the whole sync with the snapshot it leaves {:.1} ms, the agent's removal (another event's sync) {:.1} ms; reads before its last write: {:.0} (GET / alone, which the snapshot spares it: {:.1} ms)",
        agents.len(),
        pct(&mut until_route, 50.0),
        pct(&mut ms, 50.0),
        pct(&mut removal_ms, 50.0),
        pct(&mut reads, 50.0),
        pct(&mut node_ms, 50.0)
    );
}

/// DB-less: our side of a sync alone (the desired state, the document, its canonical text), cold
/// (Kong empty) and at rest (Kong holding it all): the median of 5.
async fn dbless_our_side(
    run: &SyncRun<'_>,
    client: &KongClient,
    statics: &registry_sidecar::static_routes::StaticConfig,
    agents: &[Arc<AgentEndpoint>],
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
        for agents in [100, 500] {
            for dbless in [false, true] {
                sync_costs(agents, dbless).await;
            }
        }
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("memory") {
        memory(50).await;
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("route") {
        // BENCH_AGENTS=0,500: only these counts of other agents
        let counts: Vec<usize> = std::env::var("BENCH_AGENTS")
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|_| vec![0, 100, 500]);
        for agents in counts {
            start_to_route(n, false, agents).await;
        }
        return;
    }
    start_to_route(n, false, 0).await;
    start_to_route(n, true, 0).await;
    for agents in [100, 500] {
        start_to_route(n.min(40), false, agents).await;
    }
    memory(50).await;
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
