//! Scale benchmark (issue 25), not a test: BENCH_AGENTS (200) agents on the standalone stack, each
//! on a network of its own. Deploy time; memory (RSS) of the engine (dockerd), the gateway
//! stand-in and both daemons; container start → route with that many networks; a request through the
//! gateway; the sidecar's Admin API traffic at rest and for a full resync; and the gateway
//! recreated: how long it takes to rejoin every agent network, and until every agent answers.
//! Run: cargo bench -p nasiko-tests --bench scale   (after scripts/build-images.sh)

use nasiko_tests::docker::docker_ok;
use nasiko_tests::http::HttpClient;
use nasiko_tests::stack::Stack;
use serde_json::Value;
use std::time::{Duration, Instant};

/// RSS of a host process by pid, MiB.
fn rss_pid_mib(pid: &str) -> f64 {
    nasiko_tests::procfs::rss_mib(pid.trim().parse().unwrap_or(0))
}

fn dockerd_mib() -> f64 {
    nasiko_tests::procfs::pid_of("dockerd").map_or(0.0, nasiko_tests::procfs::rss_mib)
}

/// RSS of a container's main process, MiB.
fn container_mib(container: &str) -> f64 {
    rss_pid_mib(&docker_ok(&["inspect", "-f", "{{.State.Pid}}", container]))
}

/// An RFC 3339 time (Docker's StartedAt, with nanoseconds) in unix seconds, as date(1) reads it.
fn unix_time(rfc3339: &str) -> f64 {
    let o = std::process::Command::new("date")
        .args(["-u", "-d", rfc3339.trim(), "+%s.%N"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("a time date(1) reads")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p / 100.0).round() as usize]
}

async fn route_present(http: &HttpClient, stack: &Stack, name: &str) -> bool {
    let url = format!("{}/routes/agent-{name}-route", stack.admin());
    matches!(http.json("GET", &url, None).await, Ok((200, _)))
}

async fn answering(http: &HttpClient, stack: &Stack, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(900);
    while stack.ask(http, name).await.is_none() {
        assert!(Instant::now() < deadline, "agent {name} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Memory {
    dockerd: f64,
    gateway: f64,
    sidecar: f64,
    worker: f64,
}

fn memory(stack: &Stack) -> Memory {
    Memory {
        dockerd: dockerd_mib(),
        gateway: container_mib(&stack.container("kong-gateway")),
        sidecar: container_mib(&stack.container("kong-service-registry")),
        worker: container_mib(&stack.container("nasiko-worker")),
    }
}

fn show(label: &str, m: &Memory) {
    println!(
        "memory {label}: dockerd {:.1} MiB, gateway stand-in {:.1} MiB, registry-sidecar {:.1} MiB, build-agent {:.1} MiB (RSS)",
        m.dockerd, m.gateway, m.sidecar, m.worker
    );
}

/// Admin API requests (all, and writes) recorded by the gateway stand-in since the last reset.
async fn admin_requests(http: &HttpClient, stack: &Stack) -> (usize, usize) {
    let url = format!("{}/__emulator/requests", stack.gateway());
    let (_, rec) = http.json("GET", &url, None).await.unwrap();
    let all = rec["requests"].as_array().cloned().unwrap_or_default();
    let writes = all.iter().filter(|r| r["method"] != "GET").count();
    (all.len(), writes)
}

async fn reset_requests(http: &HttpClient, stack: &Stack) {
    let url = format!("{}/__emulator/requests", stack.gateway());
    http.json("DELETE", &url, None).await.unwrap();
}

/// Container start → route readable through the Admin API, `n` times on one agent.
async fn start_to_route(http: &HttpClient, stack: &Stack, name: &str, n: usize) -> Vec<f64> {
    let c = format!("agent-{name}");
    let mut lat = Vec::new();
    for _ in 0..n {
        docker_ok(&["stop", "-t", "0", &c]);
        while route_present(http, stack, name).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        docker_ok(&["start", &c]);
        let started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &c]);
        let t0 = unix_time(&started);
        while !route_present(http, stack, name).await {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        lat.push((now - t0) * 1000.0);
    }
    answering(http, stack, name).await;
    lat
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    println!("== scale: {n} agents, each on a network of its own (standalone stack)");
    let stack = tokio::task::spawn_blocking(Stack::up).await.unwrap();
    let http = HttpClient::new(Duration::from_secs(10));
    show("with no agent", &memory(&stack));

    let pid = std::process::id();
    let names: Vec<String> = (0..n).map(|i| format!("s{i}x{pid}")).collect();
    let t = Instant::now();
    for name in &names {
        let p = stack.add_package("dockerfile-only", name, "v1.0.0");
        stack.queue(name, &p, "v1.0.0", None);
    }
    let mut peak = (0.0f64, 0.0f64);
    for (i, name) in names.iter().enumerate() {
        answering(&http, &stack, name).await;
        if i % 20 == 0 {
            peak = (
                peak.0.max(dockerd_mib()),
                peak.1.max(memory(&stack).gateway),
            );
        }
    }
    let took = t.elapsed().as_secs_f64();
    let nets = docker_ok(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=nasiko.stack={}", stack.network),
    ])
    .lines()
    .count();
    println!(
        "{n} agents queued together -> all answering through the gateway: {took:.1} s ({:.2} s per agent); {nets} agent networks",
        took / n as f64
    );
    println!(
        "peak seen while deploying: dockerd {:.1} MiB, gateway stand-in {:.1} MiB",
        peak.0, peak.1
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    show(&format!("with {n} agents"), &memory(&stack));

    let mut lat = start_to_route(&http, &stack, &names[n / 2], 20).await;
    println!(
        "container start -> route readable with {n} agent networks (20 starts): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        pct(&mut lat, 50.0),
        pct(&mut lat, 95.0),
        pct(&mut lat, 100.0)
    );
    let mut req = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        stack.ask(&http, &names[0]).await.expect("answers");
        req.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "a request through the gateway to an agent, {n} agent networks (50 requests): p50 {:.1} ms, p95 {:.1} ms",
        pct(&mut req, 50.0),
        pct(&mut req, 95.0)
    );

    reset_requests(&http, &stack).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (all, writes) = admin_requests(&http, &stack).await;
    println!("Admin API requests at rest with {n} agents over 60 s (REGISTRY_INTERVAL=5): {all}, of which writes {writes}");
    reset_requests(&http, &stack).await;
    let t = Instant::now();
    let (code, _) = http
        .json("POST", &format!("{}/sync", stack.registry()), None)
        .await
        .unwrap();
    let (all, writes) = admin_requests(&http, &stack).await;
    println!(
        "a full resync with {n} agents (POST /sync, {code}): {:.0} ms, {all} Admin API requests, {writes} writes",
        t.elapsed().as_secs_f64() * 1000.0
    );

    // the gateway recreated: it comes back with the stack file's networks only
    let t = Instant::now();
    let out = stack.recreate("kong-gateway");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recreated = t.elapsed().as_secs_f64();
    for name in &names {
        answering(&http, &stack, name).await;
    }
    let all_answer = t.elapsed().as_secs_f64();
    let (_, st): (u16, Value) = http
        .json("GET", &format!("{}/status", stack.registry()), None)
        .await
        .unwrap();
    println!(
        "gateway recreated (compose up --force-recreate took {recreated:.1} s): rejoined {} agent networks in {} ms after its start; all {n} agents answering again {all_answer:.1} s after the recreate began",
        nets, st["gateway_rejoin_ms"]
    );
    let t = Instant::now();
    drop(stack);
    println!(
        "local-down.sh --agents with {n} agents: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
