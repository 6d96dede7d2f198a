//! Shared harness of the build-agent tests: a real redis-server, the backend stand-in, an agents
//! root, and the build-agent binary as a process.

#![allow(dead_code)]

use nasiko_contract::stream;
use nasiko_tests::agents::AgentsRoot;
use nasiko_tests::backend::{BackendStandin, Call};
use nasiko_tests::docker::unique;
use nasiko_tests::process::{wait_for, ChildGuard};
use nasiko_tests::redis_server::RedisServer;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

/// Stream entries as XRANGE returns them: id and raw fields.
type RawEntries = Vec<(String, HashMap<Vec<u8>, Vec<u8>>)>;

pub const T: Duration = Duration::from_secs(60);

pub struct Harness {
    pub redis: RedisServer,
    pub backend: BackendStandin,
    pub root: AgentsRoot,
    pub work: std::path::PathBuf,
    pub network: String,
    pub extra_env: Vec<(String, String)>,
}

impl Harness {
    pub async fn new(network: &str) -> Harness {
        let work = std::env::temp_dir().join(unique("ba-work"));
        Harness {
            redis: RedisServer::start(),
            backend: BackendStandin::start("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
            root: AgentsRoot::new(),
            work,
            network: network.to_string(),
            extra_env: vec![],
        }
    }

    pub fn command(&self, consumer: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_build-agent"));
        c.env("REDIS_URL", self.redis.url())
            .env("AGENTS_ROOT", &self.root.path)
            .env("AGENTS_PATH_PREFIX", "/app/agents")
            .env("WORK_DIR", &self.work)
            .env("DOCKER_NETWORK", &self.network)
            .env("NASIKO_API_URL", self.backend.url())
            .env("AUTH_SERVICE_URL", self.backend.url())
            .env("KONG_GATEWAY_URL", "http://gateway.test:9100")
            .env("CONSUMER_NAME", consumer)
            .env("HEARTBEAT_SECS", "1")
            .env("CLAIM_IDLE_SECS", "4")
            .env("START_TIMEOUT_SECS", "30")
            // v1 here; the end-to-end stack runs the worker image with the v2 plugin
            .env("COMPOSE_FLAVOR", "v1")
            .env("HANDOVER_SECS", "1")
            .env("SHUTDOWN_GRACE_SECS", "20")
            .env("RUST_LOG", "warn,build_agent=info")
            .env_remove("OPENAI_API_KEY");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn spawn(&self, consumer: &str) -> ChildGuard {
        ChildGuard::spawn("build-agent", &mut self.command(consumer))
    }

    pub fn spawn_noop(&self, consumer: &str) -> ChildGuard {
        let mut c = self.command(consumer);
        c.env("NOOP_DEPLOY", "true");
        ChildGuard::spawn("build-agent", &mut c)
    }

    /// A connection to the test's Redis; one that a just-restarted server resets is tried again
    /// (for up to 5 s: it accepts TCP a moment before it serves).
    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            // a restarted redis-server takes connections while it loads its data, and answers
            // LOADING until it is done: ready once it answers PING
            let ready = match self.redis.client().get_multiplexed_async_connection().await {
                Ok(mut c) => match redis::cmd("PING").query_async::<String>(&mut c).await {
                    Ok(_) => Ok(c),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match ready {
                Ok(c) => return c,
                Err(e) if tokio::time::Instant::now() < end => {
                    eprintln!("redis not ready yet ({e}); trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot connect to the test's redis-server: {e}"),
            }
        }
    }

    /// XADD a job exactly as the backend does (the contract's encoder).
    pub async fn queue(&self, job: &stream::JobEntry) -> String {
        let mut c = self.con().await;
        redis::cmd("XADD")
            .arg(stream::KEY)
            .arg("*")
            .arg(stream::encode(job))
            .query_async(&mut c)
            .await
            .unwrap()
    }

    pub async fn queue_raw(&self, fields: &[(&str, &[u8])]) -> String {
        let mut c = self.con().await;
        let mut cmd = redis::cmd("XADD");
        cmd.arg("orchestration:commands").arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut c).await.unwrap()
    }

    /// A deploy job with the fields the Nasiko backend sends (a cluster base_url, which the
    /// worker replaces by NASIKO_API_URL).
    pub fn deploy_fields(&self, agent: &str, path: &str, owner: &str) -> stream::JobEntry {
        stream::JobEntry {
            base_url: Some("http://nasiko-backend.nasiko.svc.cluster.local:8000".into()),
            owner_id: Some(owner.into()),
            upload_id: Some("up-1".into()),
            upload_type: Some(stream::UPLOAD_DIRECTORY.into()),
            version: Some("v1.0.0".into()),
            ..stream::JobEntry::deploy(agent, path)
        }
    }

    /// Every entry of a stream (`orchestration:commands:dead-letter`, `agent:buildlog:{name}`),
    /// its fields as text (lossy: hostile entries may hold any bytes).
    pub async fn stream_entries(&self, key: &str) -> Vec<HashMap<String, String>> {
        let mut c = self.con().await;
        let v: RawEntries = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        v.into_iter()
            .map(|(id, f)| {
                let mut m: HashMap<String, String> =
                    f.iter().map(|(k, v)| (text(k), text(v))).collect();
                m.insert("id".into(), id);
                m
            })
            .collect()
    }

    /// As if the next new entry had been started `attempts` times by a consumer that died
    /// holding it ("ghost"): delivered to it, with the attempts counted against it. (The group
    /// must exist and no live consumer be reading.)
    pub async fn as_if_started_and_died(&self, id: &str, attempts: u64) {
        let mut c = self.con().await;
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("orchestrator")
            .arg("ghost")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("orchestration:commands")
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg("orchestration:commands:attempts")
            .arg(id)
            .arg(attempts)
            .query_async(&mut c)
            .await
            .unwrap();
    }

    /// As if an attempt of entry `id` had got its container up (the `Registering` mark).
    pub async fn as_if_its_container_got_up(&self, id: &str) {
        let _: i64 = redis::cmd("HSET")
            .arg("orchestration:commands:attempts")
            .arg(format!("{id}:reached"))
            .arg(400_000)
            .query_async(&mut self.con().await)
            .await
            .unwrap();
    }

    pub async fn dead_letters(&self) -> Vec<HashMap<String, String>> {
        self.stream_entries("orchestration:commands:dead-letter")
            .await
    }

    pub async fn status(&self, agent: &str) -> HashMap<String, String> {
        let mut c = self.con().await;
        redis::cmd("HGETALL")
            .arg(format!("agent:status:{agent}"))
            .query_async(&mut c)
            .await
            .unwrap()
    }

    pub async fn pending(&self) -> i64 {
        let mut c = self.con().await;
        let v: redis::Value = redis::cmd("XPENDING")
            .arg("orchestration:commands")
            .arg("orchestrator")
            .query_async(&mut c)
            .await
            .unwrap_or(redis::Value::Nil);
        match v {
            redis::Value::Array(p) => match p.first() {
                Some(redis::Value::Int(n)) => *n,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// Ids of the entries delivered and not yet acknowledged.
    pub async fn pending_ids(&self) -> Vec<String> {
        let mut c = self.con().await;
        let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg("orchestration:commands")
            .arg("orchestrator")
            .arg("-")
            .arg("+")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        v.into_iter().map(|(id, ..)| id).collect()
    }

    /// Wait for the agent's hash to reach a terminal status (completed/failed).
    pub async fn wait_terminal(&self, agent: &str) -> HashMap<String, String> {
        let agent = agent.to_string();
        wait_for(
            &format!("agent {agent} to reach a terminal status"),
            T,
            || {
                let agent = agent.clone();
                async move {
                    let s = self.status(&agent).await;
                    matches!(
                        s.get("status").map(String::as_str),
                        Some("completed") | Some("failed")
                    )
                    .then_some(s)
                }
            },
        )
        .await
    }

    /// Wait (up to `within`) for agent `agent`'s terminal status of stream entry `id`.
    pub async fn wait_terminal_of(
        &self,
        agent: &str,
        id: &str,
        within: Duration,
    ) -> HashMap<String, String> {
        wait_for(&format!("{agent}'s job {id} to end"), within, || async {
            let s = self.status(agent).await;
            (s.get("stream_id").map(String::as_str) == Some(id)
                && matches!(
                    s.get("status").map(String::as_str),
                    Some("completed" | "failed")
                ))
            .then_some(s)
        })
        .await
    }

    pub fn upload_statuses(&self, agent: &str) -> Vec<Call> {
        let p = format!("/api/v1/upload-status/agent/{agent}/latest");
        self.backend
            .calls()
            .into_iter()
            .filter(|c| c.path == p)
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
