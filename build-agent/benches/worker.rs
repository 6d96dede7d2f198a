//! build-agent benchmarks (not tests), with a real redis-server and the backend stand-in:
//! XADD → first status write (p50/p95); jobs per second through the whole lifecycle with the
//! no-op deploy stage; time to resume after SIGKILL; and, on the real Docker engine, deploy wall
//! time of a small agent: first build, unchanged redeploy, changed redeploy.
//! Run: cargo bench -p build-agent

use nasiko_contract::stream;
use nasiko_tests::agents::{AgentCleanup, AgentsRoot};
use nasiko_tests::backend::{BackendStandin, Mode};
use nasiko_tests::docker::{ensure_busybox_image, unique, TestNet};
use nasiko_tests::process::ChildGuard;
use nasiko_tests::redis_server::RedisServer;
use std::process::Command;
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize).min(v.len() - 1)]
}

struct Env {
    redis: RedisServer,
    backend: BackendStandin,
    root: AgentsRoot,
    work: std::path::PathBuf,
}

impl Env {
    async fn new() -> Env {
        Env {
            redis: RedisServer::start(),
            backend: BackendStandin::start("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
            root: AgentsRoot::new(),
            work: std::env::temp_dir().join(unique("ba-bench-work")),
        }
    }
    fn worker(&self, noop: bool, network: &str) -> ChildGuard {
        let bin =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/build-agent");
        let mut c = Command::new(bin);
        c.env("REDIS_URL", self.redis.url())
            .env("AGENTS_ROOT", &self.root.path)
            .env("WORK_DIR", &self.work)
            .env("NASIKO_API_URL", self.backend.url())
            .env("AUTH_SERVICE_URL", self.backend.url())
            .env("DOCKER_NETWORK", network)
            .env("CONSUMER_NAME", "bench")
            .env("RUST_LOG", "error")
            .env("COMPOSE_FLAVOR", "v1")
            .env("MAX_CONCURRENT_JOBS", "2");
        if noop {
            c.env("NOOP_DEPLOY", "true");
        }
        ChildGuard::spawn("build-agent", &mut c)
    }
    async fn con(&self) -> redis::aio::MultiplexedConnection {
        self.redis
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

async fn xadd(c: &mut redis::aio::MultiplexedConnection, agent: &str, path: &str) -> String {
    redis::cmd("XADD")
        .arg(stream::KEY)
        .arg("*")
        .arg(stream::encode(&stream::JobEntry {
            owner_id: Some("bench".into()),
            upload_type: Some(stream::UPLOAD_DIRECTORY.into()),
            ..stream::JobEntry::deploy(agent, path)
        }))
        .query_async(c)
        .await
        .unwrap()
}

async fn status(c: &mut redis::aio::MultiplexedConnection, agent: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(format!("agent:status:{agent}"))
        .arg("status")
        .query_async(c)
        .await
        .unwrap()
}

async fn wait_terminal(c: &mut redis::aio::MultiplexedConnection, agent: &str) -> String {
    loop {
        if let Some(s) = status(c, agent)
            .await
            .filter(|s| s == "completed" || s == "failed")
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn lifecycle() {
    let env = Env::new().await;
    let n = 200;
    for i in 0..n {
        env.root
            .add("dockerfile-only", &format!("a{i}"), "v1", None);
    }
    let _w = env.worker(true, "nasiko-network");
    let mut c = env.con().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // latency to the first status write, one job at a time
    let mut lat = Vec::new();
    for i in 0..n.min(100) {
        let agent = format!("a{i}");
        let t = Instant::now();
        xadd(&mut c, &agent, &format!("/app/agents/{agent}/v1")).await;
        while status(&mut c, &agent).await.is_none() {
            tokio::task::yield_now().await;
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        wait_terminal(&mut c, &agent).await;
    }
    println!(
        "XADD -> first status write ({} jobs): p50 {:.2} ms, p95 {:.2} ms",
        lat.len(),
        pct(&mut lat, 50.0),
        pct(&mut lat, 95.0)
    );
    // throughput: every job queued at once
    let mut c2 = env.con().await;
    let _: () = redis::cmd("DEL")
        .arg(
            (0..n)
                .map(|i| format!("agent:status:a{i}"))
                .collect::<Vec<_>>(),
        )
        .query_async(&mut c2)
        .await
        .unwrap();
    let t = Instant::now();
    for i in 0..n {
        xadd(&mut c, &format!("a{i}"), &format!("/app/agents/a{i}/v1")).await;
    }
    for i in 0..n {
        wait_terminal(&mut c, &format!("a{i}")).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("lifecycle throughput, no-op deploy, 2 at a time, backend stand-in: {n} jobs in {secs:.2} s = {:.0} jobs/s", n as f64 / secs);
}

async fn resume_after_kill() {
    let env = Env::new().await;
    env.root.add("dockerfile-only", "k", "v1", None);
    env.backend.set_mode(Mode {
        status: None,
        delay_ms: 2000,
    });
    let mut w = env.worker(true, "nasiko-network");
    let mut c = env.con().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    xadd(&mut c, "k", "/app/agents/k/v1").await;
    while status(&mut c, "k").await.is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.signal(9);
    w.wait_exit(Duration::from_secs(5));
    env.backend.set_mode(Mode::default());
    let t = Instant::now();
    let _w2 = env.worker(true, "nasiko-network");
    loop {
        if status(&mut c, "k").await.as_deref() == Some("completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "resume after SIGKILL: restart -> the interrupted job completed in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}

async fn deploy_times() {
    ensure_busybox_image();
    let net = TestNet::new();
    let env = Env::new().await;
    let agent = unique("benchagent");
    let _clean = AgentCleanup::new(&[&agent]);
    let path = env.root.add("compose-agents-net", &agent, "v1.0.0", None);
    let _w = env.worker(false, &net.name);
    let c = env.con().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = |label: &'static str| {
        let path = path.clone();
        let agent = agent.clone();
        let mut c = c.clone();
        async move {
            let _: () = redis::cmd("DEL")
                .arg(format!("agent:status:{agent}"))
                .query_async(&mut c)
                .await
                .unwrap();
            let t = Instant::now();
            xadd(&mut c, &agent, &path).await;
            let s = wait_terminal(&mut c, &agent).await;
            println!("deploy, {label}: {:.2} s ({s})", t.elapsed().as_secs_f64());
        }
    };
    run("first build").await;
    run("unchanged redeploy").await;
    let f = env.root.path.join(&agent).join("v1.0.0/AgentCard.json");
    std::fs::write(&f, r#"{"name":"changed"}"#).unwrap();
    run("changed redeploy").await;
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("== build-agent");
    lifecycle().await;
    resume_after_kill().await;
    deploy_times().await;
}
