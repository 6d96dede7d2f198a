//! The daemon: joins the consumer group, finishes its own pending entries first, then reads new
//! ones; a reaper claims entries abandoned by dead consumers; a heartbeat keeps held entries
//! owned; an entry whose attempts keep dying goes to the dead-letter stream. SIGTERM drains within a grace period.

use crate::config::Config;
use crate::deploy::{docker::ComposeCmd, Deployer};
use crate::http::HttpClient;
use crate::job::{self, Paths};
use crate::pipeline::{rejection_subject, subject, Pipeline};
use crate::report::{Reporter, Stage};
use crate::runner::Runner;
use crate::stream::{Entry, Stream};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A Redis connection, waited for (with backoff) while Redis does not answer. Fails only for a
/// URL that can never work.
pub async fn connect(
    url: &str,
    response_timeout: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let mut delay = Duration::from_millis(500);
    loop {
        match ConnectionManager::new_with_config(client.clone(), cfg.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!("cannot reach Redis at {url}: {e}; retrying in {delay:?} (is redis-server up? set REDIS_HOST/REDIS_PORT)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Why the daemon cannot start.
#[derive(Debug)]
pub enum StartError {
    /// REDIS_URL (or REDIS_HOST/PORT/DB) can never work: fix the setting.
    RedisUrl(redis::RedisError),
    /// The consumer group cannot be created (Redis refuses: a key of another type, no rights).
    Group(String),
    /// Neither compose flavour works on this host: install one.
    NoCompose(String),
    /// WORK_DIR cannot be created: fix the setting or the folder's rights.
    WorkDir(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::RedisUrl(e) => write!(
                f,
                "bad Redis URL: {e} (set REDIS_URL or REDIS_HOST/REDIS_PORT/REDIS_DB)"
            ),
            StartError::Group(m) | StartError::NoCompose(m) | StartError::WorkDir(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for StartError {}

pub struct Worker {
    cfg: Arc<Config>,
    stream: Stream,
    reader: ConnectionManager,
    runner: Arc<Runner>,
    pipeline: Arc<Pipeline>,
}

impl Worker {
    pub async fn start(cfg: Config) -> Result<Worker, StartError> {
        let cfg = Arc::new(cfg);
        let con = connect(&cfg.redis_url, Duration::from_secs(10))
            .await
            .map_err(StartError::RedisUrl)?;
        let reader = connect(&cfg.redis_url, Duration::from_secs(10))
            .await
            .map_err(StartError::RedisUrl)?;
        let stream = Stream {
            con: con.clone(),
            key: cfg.stream.clone(),
            group: cfg.group.clone(),
            consumer: cfg.consumer.clone(),
            dead_letter: cfg.dead_letter_stream.clone(),
        };
        stream.ensure_group().await.map_err(|e| {
            StartError::Group(format!(
                "cannot create consumer group {} on {}: {e}",
                cfg.group, cfg.stream
            ))
        })?;
        let deployer = if cfg.noop_deploy {
            tracing::warn!(
                "NOOP_DEPLOY is set: jobs are acknowledged without building or deploying"
            );
            None
        } else {
            let (compose, version) = ComposeCmd::detect(&cfg.compose)
                .await
                .map_err(StartError::NoCompose)?;
            tracing::info!(compose = ?compose, "{version}");
            std::fs::create_dir_all(&cfg.work_dir).map_err(|e| {
                StartError::WorkDir(format!(
                    "cannot create WORK_DIR {}: {e}",
                    cfg.work_dir.display()
                ))
            })?;
            // stand-bys of updates this consumer was running when it died: their jobs resume
            // (and make a new one) or are dead-lettered, never both
            let reaped = crate::deploy::docker::remove_standbys(
                crate::deploy::STANDBY_CONSUMER_LABEL,
                &cfg.standby_owner(),
            )
            .await;
            if reaped > 0 {
                tracing::info!(
                    "removed {reaped} update stand-by(s) left by this consumer's previous run"
                );
            }
            if cfg.agent_networks == crate::deploy::network::AgentNetworks::Shared {
                tracing::warn!(network = %cfg.network, "AGENT_NETWORKS=shared (legacy): every agent joins {}, where any agent can call any other directly, past the gateway's permission check and chat logging; unset it to give each agent a network of its own", cfg.network);
            }
            let orphans = crate::deploy::network::remove_orphans(&cfg.network).await;
            if orphans > 0 {
                tracing::info!("removed {orphans} agent network(s) of deploys that never finished");
            }
            Some(Deployer {
                cfg: cfg.clone(),
                compose,
                redis: con.clone(),
            })
        };
        let http = HttpClient::new(Duration::from_secs(5));
        let reporter = Reporter {
            redis: con.clone(),
            outbox: crate::outbox::Outbox::start(http.clone(), Default::default()),
            http,
            updated_by: format!("build-agent@{}", cfg.consumer),
            auth_service_url: cfg.auth_service_url.clone(),
        };
        let pipeline = Arc::new(Pipeline {
            cfg: cfg.clone(),
            reporter,
            stream: stream.clone(),
            deployer,
        });
        let runner = Runner::new(cfg.concurrency, pipeline.clone());
        tracing::info!(stream = %cfg.stream, group = %cfg.group, consumer = %cfg.consumer, concurrency = cfg.concurrency, "build-agent ready");
        Ok(Worker {
            cfg,
            stream,
            reader,
            runner,
            pipeline,
        })
    }

    /// Turn one entry into work: dead-letter, rejection, or a job for the runner. Only an entry
    /// delivered before (`redelivered`: resumed or claimed) can have earlier attempts, or have
    /// finished before its ack; a new one costs no look-up.
    async fn dispatch(&self, e: Entry, redelivered: bool) {
        if self.runner.holds(&e.id) {
            return;
        }
        let attempts = if redelivered {
            self.stream.attempts(&e.id).await.unwrap_or(0)
        } else {
            0
        };
        let Some(fields) = &e.fields else {
            tracing::warn!(job = %e.id, "the entry was deleted from the stream while pending; acknowledging it");
            self.pipeline.ack(&e.id).await;
            return;
        };
        let paths = Paths {
            agents_root: &self.cfg.agents_root,
            backend_prefix: &self.cfg.agents_path_prefix,
            nasiko_api_url: self.cfg.nasiko_api_url.as_deref(),
        };
        let parsed = job::parse(&e.id, fields, &paths);
        if attempts >= self.cfg.max_deliveries {
            let reason = format!(
                "started {attempts} times without finishing (limit {}); moved to {}",
                self.cfg.max_deliveries, self.cfg.dead_letter_stream
            );
            self.dead_letter(&e, &reason, attempts).await;
            let none = Default::default();
            match &parsed {
                // it ran, and died: its stand-by goes too
                Ok(j) => {
                    let s = subject(j);
                    self.pipeline
                        .finish_run(&s, Stage::Failed, &reason, &none)
                        .await
                }
                Err(r) => {
                    let s = rejection_subject(r);
                    self.pipeline
                        .finish(&s, Stage::Failed, &reason, &none)
                        .await
                }
            }
            return;
        }
        match parsed {
            Ok(job) if redelivered && self.already_finished(&job.agent, &e.id).await => {
                // killed after recording its terminal status, before the ack: done, not rerun
                tracing::info!(job = %e.id, agent = %job.agent, "already finished before a restart; acknowledging");
                self.pipeline.ack(&e.id).await;
            }
            Ok(job) => {
                tracing::info!(job = %job.stream_id, agent = %job.agent, action = job.action.as_str(), earlier_attempts = attempts, "job accepted");
                self.runner.submit(job);
            }
            Err(r) => {
                if r.agent.is_none() {
                    // no agent to report to: the dead-letter stream is where an operator sees it
                    self.dead_letter(&e, &format!("rejected: {}", r.reason), attempts)
                        .await;
                }
                self.pipeline.reject(&r).await
            }
        }
    }

    /// Whether the agent's status hash records a terminal status of this very entry.
    async fn already_finished(&self, agent: &str, id: &str) -> bool {
        let mut c = self.stream.con.clone();
        let v: redis::RedisResult<(Option<String>, Option<String>)> = redis::cmd("HMGET")
            .arg(crate::report::status_key(agent))
            .arg("stream_id")
            .arg("status")
            .query_async(&mut c)
            .await;
        matches!(v, Ok((Some(sid), Some(st))) if sid == id && (st == "completed" || st == "failed"))
    }

    /// Copy the entry to the dead-letter stream with the reason (retried until it lands).
    async fn dead_letter(&self, e: &Entry, reason: &str, attempts: u64) {
        let mut delay = Duration::from_millis(250);
        while let Err(err) = self.stream.dead_letter(e, reason, attempts).await {
            tracing::warn!(job = %e.id, "cannot write the dead-letter entry yet ({err}); retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Run until `shutdown`, then drain.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let me = Arc::new(WorkerRef {
            stream: self.stream.clone(),
            runner: self.runner.clone(),
            cfg: self.cfg.clone(),
        });
        let hb = tokio::spawn(heartbeat(me.clone()));
        tokio::pin!(shutdown);
        // 1. our own pending entries (a previous run of this consumer died holding them)
        let mut cursor = "0".to_string();
        loop {
            let batch = tokio::select! {
                _ = &mut shutdown => { self.stop(hb).await; return }
                r = self.stream.read(&mut self.reader, &cursor, 50, None) => r,
            };
            match batch {
                Ok(b) if b.is_empty() => break,
                Ok(b) => {
                    tracing::info!("resuming {} pending job(s) of this consumer", b.len());
                    cursor = b.last().map(|e| e.id.clone()).unwrap_or(cursor);
                    for e in b {
                        self.dispatch(e, true).await;
                    }
                }
                Err(e) => {
                    tracing::warn!("reading pending entries failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // 2. new entries, with the reaper between reads
        let mut last_reap = tokio::time::Instant::now() - self.cfg.claim_idle;
        let mut delay = Duration::from_millis(500);
        // take no more than can start: what is read but not started would only wait, pending
        let limit = self.cfg.concurrency;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.runner.wait_capacity(limit) => {}
            }
            if last_reap.elapsed() >= self.cfg.claim_idle / 4 {
                last_reap = tokio::time::Instant::now();
                match self
                    .stream
                    .autoclaim(self.cfg.claim_idle.as_millis() as u64, 10)
                    .await
                {
                    Ok(claimed) => {
                        for e in claimed {
                            tracing::info!(job = %e.id, "claimed an entry abandoned by a dead consumer");
                            self.dispatch(e, true).await;
                        }
                    }
                    Err(e) => tracing::debug!("autoclaim failed: {e}"),
                }
            }
            let want = limit.saturating_sub(self.runner.in_flight()).max(1);
            let read = tokio::select! {
                _ = &mut shutdown => break,
                r = self.stream.read(&mut self.reader, ">", want, Some(2000)) => r,
            };
            match read {
                Ok(entries) => {
                    delay = Duration::from_millis(500);
                    for e in entries {
                        self.dispatch(e, false).await;
                    }
                }
                Err(e) => {
                    if e.code() == Some("NOGROUP") {
                        tracing::warn!("the consumer group is gone (Redis restarted without data?); recreating it");
                        let _ = self.stream.ensure_group().await;
                        continue;
                    }
                    tracing::warn!(
                        "reading {} failed: {e}; retrying in {delay:?}",
                        self.cfg.stream
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.stop(hb).await;
    }

    async fn stop(&self, hb: tokio::task::JoinHandle<()>) {
        tracing::info!(
            "stopping: no new jobs; waiting up to {:?} for running ones",
            self.cfg.grace
        );
        if self.runner.drain(self.cfg.grace).await {
            tracing::info!("all running jobs finished");
        } else {
            tracing::warn!(
                "grace period over; unfinished jobs stay pending and resume on the next start"
            );
        }
        hb.abort();
    }
}

struct WorkerRef {
    stream: Stream,
    runner: Arc<Runner>,
    cfg: Arc<Config>,
}

async fn heartbeat(w: Arc<WorkerRef>) {
    loop {
        tokio::time::sleep(w.cfg.heartbeat).await;
        let held = w.runner.held();
        if let Err(e) = w.stream.heartbeat(&held).await {
            tracing::warn!("heartbeat for {} job(s) failed: {e}", held.len());
        }
    }
}
