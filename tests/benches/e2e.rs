//! End-to-end benchmarks (not tests) on the standalone stack (both daemons as containers built by
//! scripts/build-images.sh): job queued → agent answering through the gateway, fresh build and
//! cached image; Admin API writes per minute at rest with 50 agents; the memory of both daemons at
//! rest and under a burst (the process's RSS, and its container's cgroup with its page cache);
//! image sizes; an update and a rollback under 50 requests/s (failed requests, Admin API writes,
//! image ready → new version answering); the edit-and-see loop (deploy-agent.sh --watch on
//! examples/hello-agent and examples/python-a2a-agent: save → the new version answering through
//! the gateway).
//! Run: cargo bench -p nasiko-tests --bench e2e   (after scripts/build-images.sh);
//! BENCH_ONLY=edit runs the edit loops alone, BENCH_ONLY=burst the burst (its concurrency:
//! NASIKO_MAX_CONCURRENT_JOBS; BENCH_BURST=cached: packages whose layers the builder has).

use nasiko_tests::docker::{docker, docker_ok};
use nasiko_tests::http::HttpClient;
use nasiko_tests::procfs;
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
    let pid: u32 = pid.trim().parse().unwrap_or(0);
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    // cgroup v1 (usage_in_bytes, `cache`) or v2 (memory.current, `file`)
    let (dir, v1) = procfs::cgroup_dir(pid, "memory");
    let (usage_file, cache_key) = match v1 {
        true => ("memory.usage_in_bytes", "cache"),
        false => ("memory.current", "file"),
    };
    let usage: f64 = read(format!("{dir}/{usage_file}"))
        .trim()
        .parse()
        .unwrap_or(0.0);
    let cache: f64 = read(format!("{dir}/memory.stat"))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{cache_key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    Memory {
        process: procfs::rss_mib(pid),
        cgroup: usage / 1048576.0,
        cache: cache / 1048576.0,
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

/// `deploy-agent.sh --watch` on a copy of `examples/{example}` deployed as `name`; then five
/// one-line edits of `file` (its "You said"), each timed from the save to the edited answer
/// through the gateway. Returns the median and the max, in seconds.
async fn edit_loop(
    http: &HttpClient,
    stack: &Stack,
    example: &str,
    name: &str,
    file: &str,
) -> (f64, f64) {
    let (mut watch, src) = stack.watch_example(example, name);
    answering(http, stack, name).await;
    let mut took = Vec::new();
    let original = std::fs::read_to_string(src.join(file)).unwrap();
    assert!(
        original.contains("You said"),
        "{example}/{file} answers \"You said\""
    );
    for i in 1..=5 {
        let marker = format!("You said (edit {i})");
        std::fs::write(src.join(file), original.replace("You said", &marker)).unwrap();
        let t = Instant::now();
        loop {
            let text = stack
                .ask(http, name)
                .await
                .map(|r| r["result"]["parts"][0]["text"].to_string())
                .unwrap_or_default();
            if text.contains(&marker) {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(stack.dir.join(format!("watch-{name}.log")));
                let sidecar = stack.container("kong-service-registry");
                let sidecar = docker(&["logs", "--tail", "40", &sidecar]);
                panic!(
                    "{example}: edit {i} never answered; the last answer: {text}\n--watch said:\n{}\nthe sidecar said:\n{}",
                    log.unwrap_or_default(),
                    String::from_utf8_lossy(&sidecar.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took.push(t.elapsed().as_secs_f64());
    }
    watch.signal(2);
    watch.wait_exit(Duration::from_secs(10));
    took.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (took[2], took[4])
}

/// The edit-and-see loop of each example: hello-agent, and python-a2a-agent where a
/// `python:3.12-slim` can be had (`python_base`).
async fn edit_loops(
    http: &HttpClient,
    stack: &Stack,
    python: &Result<nasiko_tests::python_base::PythonBase, String>,
    pid: u32,
) {
    // the edit-and-see loop: deploy-agent.sh --watch, then one-line edits of the agent's source
    let hello = format!("hello{pid}");
    let (median, max) = edit_loop(http, stack, "hello-agent", &hello, "agent.sh").await;
    println!(
        "--watch, one-line edit of hello-agent -> the new version answering through the gateway (5 edits): median {median:.2} s, max {max:.2} s"
    );
    match python {
        Ok(base) => {
            let name = format!("pya2a{pid}");
            let (median, max) =
                edit_loop(http, stack, "python-a2a-agent", &name, "src/__main__.py").await;
            let standin = if base.is_standin() {
                " (python:3.12-slim a stand-in from the host's Debian python3: no registry)"
            } else {
                ""
            };
            println!(
                "--watch, one-line edit of python-a2a-agent -> the new version answering through the gateway (5 edits): median {median:.2} s, max {max:.2} s{standin}"
            );
        }
        Err(e) => println!("--watch, python-a2a-agent: not measured: {e}"),
    }
}

/// 48 agents queued together, until all answer through the gateway: the wall time; where the
/// jobs' time went, stage by stage (from each one's final status); and what the machine did
/// meanwhile (its CPU, the engine's share, the build agent's own with the CLIs it runs, disk
/// writes).
async fn burst(http: &HttpClient, stack: &Stack, sidecar: &str, worker: &str, pid: u32) {
    let names: Vec<String> = (0..48).map(|i| format!("b{i}x{pid}")).collect();
    // each a new upload, whose build runs its steps (BENCH_BURST=cached: the same agent.sh for
    // all, whose layers the builder has from the run before)
    let fresh = std::env::var("BENCH_BURST").as_deref() != Ok("cached");
    let packages: Vec<_> = names
        .iter()
        .map(|n| {
            let p = stack.add_package("dockerfile-only", n, "v1.0.0");
            if fresh {
                let script = stack.agents_dir.join(n).join("v1.0.0/agent.sh");
                let text = std::fs::read_to_string(&script).expect("agent.sh");
                std::fs::write(&script, format!("{text}\n# {n}\n")).expect("agent.sh");
            }
            p
        })
        .collect();
    let before = Machine::now(worker);
    let t = Instant::now();
    for (n, p) in names.iter().zip(&packages) {
        stack.queue(n, p, "v1.0.0", None);
    }
    let mut peak = (0.0f64, 0.0f64);
    for n in &names {
        answering(http, stack, n).await;
        let (m, w) = (memory(sidecar), memory(worker));
        peak = (peak.0.max(m.process), peak.1.max(w.process));
    }
    let wall = t.elapsed().as_secs_f64();
    let used = Machine::now(worker).since(&before);
    let concurrency = match stack.env_value("NASIKO_MAX_CONCURRENT_JOBS") {
        v if v.is_empty() => "the default, 4 per core".to_string(),
        v => v,
    };
    println!(
        "burst of 48 agents queued together -> all answering: {wall:.1} s (MAX_CONCURRENT_JOBS={concurrency}; {})",
        if fresh { "each a new upload, built step by step" } else { "their layers in the builder's cache" }
    );
    let mut stages: Vec<(String, Vec<f64>)> = Vec::new();
    for n in &names {
        // an agent answers before its job has registered it and written its final status
        let deadline = Instant::now() + Duration::from_secs(60);
        while stack.agent_status(n, "status") != "completed" {
            assert!(Instant::now() < deadline, "{n}'s job did not complete");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let message = stack.agent_status(n, "message");
        for (name, secs) in stage_times(&message) {
            match stages.iter_mut().find(|(s, _)| *s == name) {
                Some((_, v)) => v.push(secs),
                None => stages.push((name, vec![secs])),
            }
        }
    }
    let job_secs: f64 = stages.iter().flat_map(|(_, v)| v).sum();
    let per_stage: Vec<String> = stages
        .iter()
        .map(|(name, v)| {
            let sum: f64 = v.iter().sum();
            format!(
                "{name} {:.2} s ({:.0}%)",
                sum / v.len() as f64,
                100.0 * sum / job_secs
            )
        })
        .collect();
    println!(
        "  per job, mean: {} ({} jobs; {job_secs:.0} job-seconds in {wall:.0} s of wall time: {:.1} jobs at once on average)",
        per_stage.join(", "),
        stages.first().map_or(0, |(_, v)| v.len()),
        job_secs / wall
    );
    println!("  the machine meanwhile: {used}");
    println!(
        "process RSS under the burst (peak seen): registry-sidecar {:.1} MiB, build-agent {:.1} MiB",
        peak.0, peak.1
    );
}

/// The stages' times in a final status: "deployed in 2.1s (prepare 0.05s, build 1.20s, …)".
fn stage_times(message: &str) -> Vec<(String, f64)> {
    let Some(inner) = message
        .strip_prefix("deployed in ")
        .and_then(|m| m.split_once(" ("))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inner, _)| inner)
    else {
        return Vec::new();
    };
    inner
        .split(", ")
        .filter_map(|part| {
            let (name, secs) = part.rsplit_once(' ')?;
            Some((name.to_string(), secs.trim_end_matches('s').parse().ok()?))
        })
        .collect()
}

/// Counters of the whole machine and of its daemons, to see what a stretch of time used.
struct Machine {
    /// /proc/stat's first line: user, nice, system, idle, iowait, irq, softirq, steal (ticks)
    cpu: Vec<f64>,
    /// dockerd's and containerd's own CPU (s)
    engine: f64,
    /// the build agent container's cgroup CPU (s): itself and the docker and compose CLIs it runs
    worker: f64,
    /// sectors written to whole disks
    sectors: f64,
}

impl Machine {
    fn now(worker: &str) -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        let engine = ["dockerd", "containerd"]
            .iter()
            .filter_map(|n| procfs::pid_of(n))
            .map(procfs::cpu_secs)
            .sum();
        let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", worker]);
        let diskstats = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
        let sectors = diskstats
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // whole disks only (sda, vda, nvme0n1), not their partitions or loop devices
                let name = *f.get(2)?;
                let whole =
                    (name.starts_with("sd") || name.starts_with("vd") || name.starts_with("xvd"))
                        && !name.ends_with(|c: char| c.is_ascii_digit())
                        || name.starts_with("nvme") && !name.contains('p');
                whole.then(|| f.get(9)?.parse::<f64>().ok())?
            })
            .sum();
        Machine {
            cpu,
            engine,
            worker: cgroup_cpu(pid.trim().parse().unwrap_or(0)),
            sectors,
        }
    }

    fn since(&self, before: &Machine) -> Used {
        let d: Vec<f64> = self
            .cpu
            .iter()
            .zip(&before.cpu)
            .map(|(a, b)| a - b)
            .collect();
        let total: f64 = d.iter().sum();
        let tick = 100.0; // USER_HZ
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Used {
            busy: (total - d.get(3).unwrap_or(&0.0) - d.get(4).unwrap_or(&0.0)) / total.max(1.0),
            iowait: d.get(4).unwrap_or(&0.0) / total.max(1.0),
            cpu_secs: (total - d.get(3).unwrap_or(&0.0) - d.get(4).unwrap_or(&0.0)) / tick,
            cores,
            engine: self.engine - before.engine,
            worker: self.worker - before.worker,
            written_mb: (self.sectors - before.sectors) * 512.0 / 1e6,
        }
    }
}

struct Used {
    busy: f64,
    iowait: f64,
    cpu_secs: f64,
    cores: f64,
    engine: f64,
    worker: f64,
    written_mb: f64,
}

impl std::fmt::Display for Used {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU {:.0}% busy of {} cores ({:.0} CPU-seconds: dockerd and containerd {:.0}, the build agent with its CLIs {:.0}, the rest — builds' steps, agents, the stack — {:.0}), {:.0}% iowait; {:.0} MB written to disk",
            self.busy * 100.0,
            self.cores,
            self.cpu_secs,
            self.engine,
            self.worker,
            self.cpu_secs - self.engine - self.worker,
            self.iowait * 100.0,
            self.written_mb
        )
    }
}

/// The CPU seconds of the cgroup that process `pid` is in (cgroup v1 cpuacct, or v2).
fn cgroup_cpu(pid: u32) -> f64 {
    let (dir, v1) = procfs::cgroup_dir(pid, "cpuacct");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_default();
    if v1 {
        return read("cpuacct.usage").trim().parse::<f64>().unwrap_or(0.0) / 1e9;
    }
    read("cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|us| us.trim().parse::<f64>().ok())
        .map_or(0.0, |us| us / 1e6)
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
    // before the stack, so that it goes after the agents built on it
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let python = if only == "burst" {
        Err("not needed".to_string())
    } else {
        nasiko_tests::python_base::PythonBase::ensure()
    };
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
    if only == "edit" {
        return edit_loops(&http, &stack, &python, pid).await;
    }
    if only == "burst" {
        return burst(&http, &stack, &sidecar, &worker, pid).await;
    }
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

    edit_loops(&http, &stack, &python, pid).await;

    // a burst of 48 more agents (50 in all), then a minute at rest
    burst(&http, &stack, &sidecar, &worker, pid).await;
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
