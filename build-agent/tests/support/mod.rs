//! Shared harness of the build-agent tests: a real redis-server, the backend stand-in, an agents
//! root, and the build-agent binary as a process.

#![allow(dead_code)]

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

    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        self.redis
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// XADD a job exactly as the backend does.
    pub async fn queue(&self, fields: &[(&str, &str)]) -> String {
        let mut c = self.con().await;
        redis::cmd("XADD")
            .arg("orchestration:commands")
            .arg("*")
            .arg(fields)
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

    pub fn deploy_fields<'a>(
        &self,
        agent: &'a str,
        path: &'a str,
        owner: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("command", "deploy_agent"),
            ("agent_name", agent),
            ("agent_path", path),
            (
                "base_url",
                "http://nasiko-backend.nasiko.svc.cluster.local:8000",
            ),
            ("owner_id", owner),
            ("upload_id", "up-1"),
            ("upload_type", "directory"),
            ("version", "v1.0.0"),
        ]
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
