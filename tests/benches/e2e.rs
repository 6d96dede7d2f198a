//! End-to-end benchmarks (not tests) on the standalone stack (both daemons as containers built by
//! scripts/build-images.sh): job queued → agent answering through the gateway, fresh build and
//! cached image; Admin API writes per minute at rest with 50 agents; the memory of both daemons at
//! rest and under a burst (the process's RSS, and its container's cgroup with its page cache);
//! image sizes; an update and a rollback under 50 requests/s (failed requests, Admin API writes,
//! image ready → new version answering); the edit-and-see loop (deploy-agent.sh --watch on
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

/// A container's memory: its main process's RSS (/proc/PID/status VmRSS, as the host sees it),
/// and its cgroup's usage (what `docker stats` starts from) with the page cache within it: the
/// files the container read (its binaries, the docker and compose CLIs it runs, curl for a health
/// check), reclaimable and not the process's memory.
struct Memory {
    process: f64,
    cgroup: f64,
    cache: f64,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB RSS (cgroup {:.1} MiB, of which {:.1} MiB page cache)",
            self.process, self.cgroup, self.cache
        )
    }
}

fn memory(container: &str) -> Memory {
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", container]);
    let pid = pid.trim();
    let mib = |kib: f64| kib / 1024.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let process = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .map_or(0.0, mib);
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    let stat_of = |text: &str, key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0.0, |b| b / 1048576.0)
    };
    // cgroup v1 (a memory controller line: usage_in_bytes, `cache`) or v2 (the unified line:
    // memory.current, `file`)
    let v1 = groups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
    let (dir, usage_file, cache_key) = match v1 {
        Some(path) => (
            format!("/sys/fs/cgroup/memory{path}"),
            "memory.usage_in_bytes",
            "cache",
        ),
        None => {
            let path = groups
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("");
            (format!("/sys/fs/cgroup{path}"), "memory.current", "file")
        }
    };
    let usage: f64 = read(format!("{dir}/{usage_file}"))
        .trim()
        .parse()
        .unwrap_or(0.0);
    let cgroup = usage / 1048576.0;
    let cache = stat_of(&read(format!("{dir}/memory.stat")), cache_key);
    Memory {
        process,
        cgroup,
        cache,
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

/// What requests through the gateway saw while a job replaced agent `name`'s version.
struct Switch {
    /// Queued → the first answer of the new version, and → the last answer of the old one.
    first_new: Option<f64>,
    last_old: Option<f64>,
    /// Queued → the job's `deploying` stage (its image built or found).
    built: Option<f64>,
    /// Queued → completed.
    completed: f64,
    answered: u64,
    failed: u64,
    /// Admin API writes on the agent's entities meanwhile (method and path).
    writes: Vec<String>,
}

/// Queue `action` of `name` to the package at `path` (`version`, which the agent's answers
/// name) while requests go to it through the gateway every 20 ms (at most 50 a second), and
/// watch the switch until the job completes and the old version's target is gone.
async fn switch_under_load(
    http: &HttpClient,
    stack: &Stack,
    name: &str,
    path: &str,
    version: &str,
    action: &str,
) -> Switch {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let requests = format!("{}/__emulator/requests", stack.gateway());
    http.json("DELETE", &requests, None).await.unwrap();
    let t = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen: Arc<Mutex<(Option<f64>, Option<f64>)>> = Arc::default();
    let load = {
        let (stop, answered, failed, seen) =
            (stop.clone(), answered.clone(), failed.clone(), seen.clone());
        let (http, url, version) = (http.clone(), stack.agent_url(name), version.to_string());
        let req = nasiko_tests::stack::a2a_request("load");
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http.json("POST", &url, Some(&req)).await {
                    Ok((200, r)) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        let text = r["result"]["parts"][0]["text"].to_string();
                        let at = t.elapsed().as_secs_f64();
                        let mut s = seen.lock().unwrap();
                        if text.contains(&version) {
                            s.0.get_or_insert(at);
                        } else {
                            s.1 = Some(at);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let job = stack.queue(name, path, version, Some(action));
    let mut built = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let completed = loop {
        let (id, status) = (
            stack.agent_status(name, "stream_id"),
            stack.agent_status(name, "status"),
        );
        if id == job && built.is_none() && stack.agent_status(name, "stage") == "deploying" {
            built = Some(t.elapsed().as_secs_f64());
        }
        if id == job && status == "completed" {
            break t.elapsed().as_secs_f64();
        }
        assert!(
            id != job || status != "failed",
            "{name}: {}",
            stack.agent_status(name, "message")
        );
        assert!(
            Instant::now() < deadline,
            "{name}: the {action} never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // the old version's removal (its target's) comes a moment after the completion at most
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (_, rec) = http.json("GET", &requests, None).await.unwrap();
    let writes = rec["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["method"] != "GET")
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("agent-{name}"))
        })
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or("")
            )
        })
        .collect();
    let (first_new, last_old) = *seen.lock().unwrap();
    Switch {
        first_new,
        last_old,
        built,
        completed,
        answered: answered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        writes,
    }
}

impl std::fmt::Display for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.2} s"));
        let from_built = match (self.built, self.first_new) {
            (Some(b), Some(n)) => format!("{:.2} s", n - b),
            _ => "?".into(),
        };
        write!(
            f,
            "queued -> first answer of the new version {}, last of the old {}, completed {:.2} s; image ready -> new version answering {from_built}; {} answered, {} failed; {} Admin API writes on the agent: {:?}",
            s(self.first_new),
            s(self.last_old),
            self.completed,
            self.answered,
            self.failed,
            self.writes.len(),
            self.writes
        )
    }
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
        "memory at rest: registry-sidecar {}; build-agent {}",
        memory(&sidecar),
        memory(&worker)
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

    // an update (blue/green), then a rollback to the kept version, under load
    let v2 = stack.add_package("compose-agents-net", &cached, "v2.0.0");
    let update = switch_under_load(&http, &stack, &cached, &v2, "v2.0.0", "update_agent").await;
    println!("update under 50 requests/s: {update}");
    let rollback = switch_under_load(&http, &stack, &cached, &p, "v1.0.0", "rollback_agent").await;
    println!("rollback to the kept v1 under 50 requests/s: {rollback}");
    let v3 = stack.add_replicated("compose-agents-net", &cached, "v3.0.0", 3);
    let t = Instant::now();
    let scale = switch_under_load(&http, &stack, &cached, &v3, "v3.0.0", "update_agent").await;
    println!(
        "scale-up to 3 replicas (a new version) under 50 requests/s: {scale}; {:.2} s per replica",
        t.elapsed().as_secs_f64() / 3.0
    );
    let v4 = stack.add_replicated("compose-agents-net", &cached, "v4.0.0", 3);
    let across = switch_under_load(&http, &stack, &cached, &v4, "v4.0.0", "update_agent").await;
    println!("update across 3 replicas under 50 requests/s: {across}");

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
        let (m, w) = (memory(&sidecar), memory(&worker));
        peak = (peak.0.max(m.process), peak.1.max(w.process));
    }
    println!(
        "burst of 48 agents queued together -> all answering: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "process RSS under the burst (peak seen): registry-sidecar {:.1} MiB, build-agent {:.1} MiB",
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
        "memory at rest with 50 agents: registry-sidecar {}; build-agent {}",
        memory(&sidecar),
        memory(&worker)
    );
    drop(stack);
    let _ = docker(&["ps"]);
}
