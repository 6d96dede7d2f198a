//! End-to-end benchmarks (not tests) on the standalone stack (both daemons as containers built by
//! scripts/build-images.sh): job queued → agent answering through the gateway, fresh build and
//! cached image; Admin API writes per minute at rest with 50 agents; RSS of both daemons at rest and
//! under a burst; image sizes; the edit-and-see loop (deploy-agent.sh --watch on
//! examples/hello-agent: save → the new version answering through the gateway).
//! Run: cargo bench -p nasiko-tests   (after scripts/build-images.sh)

use nasiko_tests::docker::{docker, docker_ok};
use nasiko_tests::http::HttpClient;
use nasiko_tests::stack::{Stack, IMAGES};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn answering(http: &HttpClient, stack: &Stack, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while stack.ask(http, name).await.is_none() {
        assert!(Instant::now() < deadline, "agent {name} never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rss_mib(container: &str) -> f64 {
    let out = docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        container,
    ]);
    let used = out.split('/').next().unwrap_or("").trim().to_string();
    let (num, unit) = used.split_at(
        used.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(used.len()),
    );
    let v: f64 = num.trim().parse().unwrap_or(0.0);
    match unit {
        "KiB" | "kB" => v / 1024.0,
        "GiB" | "GB" => v * 1024.0,
        "B" => v / 1048576.0,
        _ => v,
    }
}

async fn admin_writes(http: &HttpClient, stack: &Stack) -> usize {
    let (_, rec) = http
        .json(
            "GET",
            &format!("{}/__emulator/requests", stack.gateway()),
            None,
        )
        .await
        .unwrap();
    rec["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] != "GET")
        .count()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("== end to end (standalone stack)");
    for i in IMAGES {
        let size = docker_ok(&[
            "image",
            "inspect",
            "--format",
            "{{.Size}}",
            &format!("nasiko/{i}:local"),
        ]);
        println!(
            "image nasiko/{i}:local: {:.1} MB",
            size.parse::<f64>().unwrap_or(0.0) / 1e6
        );
    }
    let stack = tokio::task::spawn_blocking(Stack::up).await.unwrap();
    let http = HttpClient::new(Duration::from_secs(10));
    let (sidecar, worker) = (
        stack.container("kong-service-registry"),
        stack.container("nasiko-worker"),
    );
    println!(
        "RSS at rest: registry-sidecar {:.1} MiB, build-agent {:.1} MiB",
        rss_mib(&sidecar),
        rss_mib(&worker)
    );

    let pid = std::process::id();
    let fresh = format!("fresh{pid}");
    let p = stack.add_package("compose-agents-net", &fresh, "v1.0.0");
    let t = Instant::now();
    stack.queue(&fresh, &p, "v1.0.0", None);
    answering(&http, &stack, &fresh).await;
    println!(
        "job queued -> answering through the gateway, fresh build: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let cached = format!("cached{pid}");
    let p = stack.add_package("compose-agents-net", &cached, "v1.0.0");
    // same files, other name: every layer but the labels comes from the build cache
    let t = Instant::now();
    stack.queue(&cached, &p, "v1.0.0", None);
    answering(&http, &stack, &cached).await;
    println!(
        "job queued -> answering through the gateway, cached layers: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    stack.queue(&cached, &p, "v1.0.0", None);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if stack.agent_status(&cached, "message").contains("deployed")
            && stack.agent_status(&cached, "status") == "completed"
            && t.elapsed() > Duration::from_millis(200)
        {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answering(&http, &stack, &cached).await;
    println!(
        "job queued -> answering again, unchanged package (image exists, no build): {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // the edit-and-see loop: deploy-agent.sh --watch, then one-line edits of agent.sh
    let hello = format!("hello{pid}");
    let (mut watch, src) = stack.watch_hello(&hello);
    answering(&http, &stack, &hello).await;
    let mut took = Vec::new();
    let script = std::fs::read_to_string(src.join("agent.sh")).unwrap();
    for i in 1..=5 {
        let marker = format!("You said (edit {i})");
        std::fs::write(src.join("agent.sh"), script.replace("You said", &marker)).unwrap();
        let t = Instant::now();
        loop {
            let text = stack
                .ask(&http, &hello)
                .await
                .map(|r| r["result"]["parts"][0]["text"].to_string())
                .unwrap_or_default();
            if text.contains(&marker) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "edit {i} never answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took.push(t.elapsed().as_secs_f64());
    }
    watch.signal(2);
    watch.wait_exit(Duration::from_secs(10));
    took.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "--watch, one-line edit of hello-agent -> the new version answering through the gateway (5 edits): median {:.2} s, max {:.2} s",
        took[2], took[4]
    );

    // a burst of 48 more agents (50 in all), then a minute at rest
    let names: Vec<String> = (0..48).map(|i| format!("b{i}x{pid}")).collect();
    let t = Instant::now();
    for n in &names {
        let p = stack.add_package("dockerfile-only", n, "v1.0.0");
        stack.queue(n, &p, "v1.0.0", None);
    }
    let mut peak = (0.0f64, 0.0f64);
    for n in &names {
        answering(&http, &stack, n).await;
        peak = (peak.0.max(rss_mib(&sidecar)), peak.1.max(rss_mib(&worker)));
    }
    println!(
        "burst of 48 agents queued together -> all answering: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "RSS under the burst (peak seen): registry-sidecar {:.1} MiB, build-agent {:.1} MiB",
        peak.0, peak.1
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    http.json(
        "DELETE",
        &format!("{}/__emulator/requests", stack.gateway()),
        None,
    )
    .await
    .unwrap();
    let rest = Duration::from_secs(60);
    tokio::time::sleep(rest).await;
    let (_, agents): (u16, Value) = http
        .json("GET", &format!("{}/agents", stack.registry()), None)
        .await
        .unwrap();
    println!(
        "Admin API writes at rest with {} agents over {} s (REGISTRY_INTERVAL=5): {} (Python registry: ~{} per minute)",
        agents["agents"].as_array().map_or(0, |a| a.len()),
        rest.as_secs(),
        admin_writes(&http, &stack).await,
        7 * 50 * 2
    );
    println!(
        "RSS at rest with 50 agents: registry-sidecar {:.1} MiB, build-agent {:.1} MiB",
        rss_mib(&sidecar),
        rss_mib(&worker)
    );
    drop(stack);
    let _ = docker(&["ps"]);
}
