//! The daemon: joins the consumer group, finishes its own pending entries first, then reads new
//! ones; a reaper claims entries abandoned by dead consumers; a heartbeat keeps held entries
//! owned; an entry whose attempts keep dying goes to the dead-letter stream. SIGTERM drains within a grace period.

use crate::attempts::Mark;
use crate::config::Config;
use crate::deploy::docker::{ComposeCmd, NoCompose};
use crate::deploy::Deployer;
use crate::http::HttpClient;
use crate::job::{self, DeployJob, Paths, Rejection};
use crate::pipeline::{rejection_subject, subject, Pipeline};
use crate::report::{Facts, Reporter, Stage};
use crate::retry::{until_ok, Backoff};
use crate::runner::Runner;
use crate::stream::{Entry, Stream};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

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
    Ok(until_ok(
        Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
        || ConnectionManager::new_with_config(client.clone(), cfg.clone()),
        |e, delay| tracing::warn!("cannot reach Redis at {url}: {e}; retrying in {delay:?} (is redis-server up? set REDIS_HOST/REDIS_PORT)"),
    )
    .await)
}

/// The deploy stage for `cfg` (None under NOOP_DEPLOY), with what a previous run of this
/// consumer left behind cleaned up: orphaned agent networks.
async fn deployer(cfg: &Arc<Config>, stream: &Stream) -> Result<Option<Deployer>, StartError> {
    if cfg.noop_deploy {
        tracing::warn!("NOOP_DEPLOY is set: jobs are acknowledged without building or deploying");
        return Ok(None);
    }
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
    if cfg.agent_networks == crate::deploy::network::AgentNetworks::Shared {
        tracing::warn!(network = %cfg.network, "AGENT_NETWORKS=shared (legacy): every agent joins {}, where any agent can call any other directly, past the gateway's permission check and chat logging; unset it to give each agent a network of its own", cfg.network);
    }
    let orphans = crate::deploy::network::remove_orphans(&cfg.network).await;
    if orphans > 0 {
        tracing::info!("removed {orphans} agent network(s) of deploys that never finished");
    }
    Ok(Some(Deployer {
        cfg: cfg.clone(),
        compose,
        log: Arc::new(crate::buildlog::RedisBuildLog {
            con: stream.con.clone(),
            progress: Some(stream.clone()),
        }),
    }))
}

/// Why the daemon cannot start.
#[derive(Debug)]
pub enum StartError {
    /// REDIS_URL (or REDIS_HOST/PORT/DB) can never work: fix the setting.
    RedisUrl(redis::RedisError),
    /// The consumer group cannot be created (Redis refuses: a key of another type, no rights).
    Group(String),
    /// Neither compose flavour works on this host: install one.
    NoCompose(NoCompose),
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
            StartError::NoCompose(e) => e.fmt(f),
            StartError::Group(m) | StartError::WorkDir(m) => f.write_str(m),
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
        let deployer = deployer(&cfg, &stream).await?;
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
        let span = tracing::info_span!("job", job = %e.id, agent = tracing::field::Empty);
        self.dispatch_in_span(e, redelivered).instrument(span).await
    }

    /// Skip an entry already running; acknowledge one deleted while pending; give up on one
    /// out of attempts; hand the rest over.
    async fn dispatch_in_span(&self, e: Entry, redelivered: bool) {
        if self.runner.holds(&e.id) {
            return;
        }
        let attempts = self.earlier_attempts(&e.id, redelivered).await;
        let Some(fields) = &e.fields else {
            tracing::warn!("the entry was deleted from the stream while pending; acknowledging it");
            self.pipeline.ack(&e.id).await;
            return;
        };
        let parsed = self.read_job(&e.id, fields);
        if attempts >= self.cfg.max_deliveries {
            self.out_of_attempts(&e, &parsed, attempts).await;
            return;
        }
        self.hand_over(&e, parsed, redelivered, attempts).await;
    }

    /// How many attempts of the entry started before: none for an entry never delivered before.
    async fn earlier_attempts(&self, id: &str, redelivered: bool) -> u64 {
        if redelivered {
            self.stream.attempts(id).await.unwrap_or(0)
        } else {
            0
        }
    }

    /// The entry's job or rejection, with the agent it is about recorded on the job's span.
    // as in `job::parse`: built once and moved; boxing buys nothing
    #[allow(clippy::result_large_err)]
    fn read_job(&self, id: &str, fields: &[(String, Vec<u8>)]) -> Result<DeployJob, Rejection> {
        let paths = Paths {
            agents_root: &self.cfg.agents_root,
            backend_prefix: &self.cfg.agents_path_prefix,
            nasiko_api_url: self.cfg.nasiko_api_url.as_deref(),
        };
        let parsed = job::parse(id, fields, &paths);
        let agent = match &parsed {
            Ok(j) => Some(j.agent.as_str()),
            Err(r) => r.agent.as_deref(),
        };
        if let Some(a) = agent {
            tracing::Span::current().record("agent", a);
        }
        parsed
    }

    /// An entry that used up MAX_DELIVERIES: done when an earlier attempt got the agent up and it
    /// still serves, else dead-lettered.
    async fn out_of_attempts(
        &self,
        e: &Entry,
        parsed: &Result<DeployJob, Rejection>,
        attempts: u64,
    ) {
        if let Ok(j) = parsed {
            if self.up_before_restart(&e.id, j).await {
                // its last attempt died after the agent was up: what it asked for is done
                let f = Facts {
                    url: Some(self.pipeline.agent_url(&j.agent)),
                    ..Default::default()
                };
                let msg = format!("deployed: {} {} is serving (this job's container, up before the build agent restarted)", j.agent, j.version);
                self.pipeline
                    .finish_run(&subject(j), Stage::Done, &msg, &f)
                    .await;
                return;
            }
        }
        self.dead_letter_exhausted(e, parsed, attempts).await;
    }

    /// Whether an earlier attempt of this very job got its container up, and it still serves.
    async fn up_before_restart(&self, id: &str, j: &DeployJob) -> bool {
        let up = Mark::stage(Stage::Registering);
        let got_up = matches!(self.stream.furthest(id).await, Ok(Some(m)) if m >= up);
        got_up && serving(j).await
    }

    /// Move an entry whose attempts keep dying to the dead-letter stream, and report it failed.
    async fn dead_letter_exhausted(
        &self,
        e: &Entry,
        parsed: &Result<DeployJob, Rejection>,
        attempts: u64,
    ) {
        let reason = format!(
            "started {attempts} times without finishing or getting further than an earlier start (limit {}); moved to {}",
            self.cfg.max_deliveries, self.cfg.dead_letter_stream
        );
        self.dead_letter(e, &reason, attempts).await;
        let none = Default::default();
        match parsed {
            // it ran, and died: the status says what still serves
            Ok(j) => {
                self.pipeline
                    .finish_run(&subject(j), Stage::Failed, &reason, &none)
                    .await
            }
            Err(r) => {
                self.pipeline
                    .finish(&rejection_subject(r), Stage::Failed, &reason, &none)
                    .await
            }
        }
    }

    /// A job with attempts left goes to the runner (unless a redelivery finished before its
    /// ack); a rejection is reported, and dead-lettered when it names no agent to report to.
    async fn hand_over(
        &self,
        e: &Entry,
        parsed: Result<DeployJob, Rejection>,
        redelivered: bool,
        attempts: u64,
    ) {
        match parsed {
            Ok(job) if redelivered && self.already_finished(&job.agent, &e.id).await => {
                // killed after recording its terminal status, before the ack: done, not rerun
                tracing::info!("already finished before a restart; acknowledging");
                self.pipeline.ack(&e.id).await;
            }
            Ok(job) => {
                tracing::info!(
                    action = job.action.as_str(),
                    earlier_attempts = attempts,
                    "job accepted"
                );
                self.runner.submit(job);
            }
            Err(r) => {
                if r.agent.is_none() {
                    // no agent to report to: the dead-letter stream is where an operator sees it
                    self.dead_letter(e, &format!("rejected: {}", r.reason), attempts)
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
        until_ok(
            Backoff::redis(),
            || self.stream.dead_letter(e, reason, attempts),
            |err, _| tracing::warn!("cannot write the dead-letter entry yet ({err}); retrying"),
        )
        .await;
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
        const FIRST: Duration = Duration::from_millis(500);
        let mut delay = Backoff::new(FIRST, Duration::from_secs(10));
        // take no more than can start: what is read but not started would only wait, pending
        let limit = self.cfg.concurrency;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.runner.wait_capacity(limit) => {}
            }
            if last_reap.elapsed() >= self.cfg.claim_idle / 4 {
                last_reap = tokio::time::Instant::now();
                self.reap().await;
            }
            let want = limit.saturating_sub(self.runner.in_flight()).max(1);
            let read = tokio::select! {
                _ = &mut shutdown => break,
                r = self.stream.read(&mut self.reader, ">", want, Some(2000)) => r,
            };
            match read {
                Ok(entries) => {
                    delay.reset(FIRST);
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
                        "reading {} failed: {e}; retrying in {:?}",
                        self.cfg.stream,
                        delay.peek()
                    );
                    delay.wait().await;
                }
            }
        }
        self.stop(hb).await;
    }

    /// Claim and dispatch entries other consumers left pending longer than CLAIM_IDLE (they died).
    async fn reap(&self) {
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

/// A running slot of the agent runs this upload at this version (after an earlier attempt of
/// the job got its container up: that attempt's, unless another job replaced it since). A job
/// without an upload id is never taken as done.
async fn serving(job: &DeployJob) -> bool {
    if job.upload_id.is_empty() || job.version.is_empty() {
        return false;
    }
    use nasiko_contract::labels::{UPLOAD_ID, VERSION};
    crate::deploy::docker::agent_slots(&job.agent)
        .await
        .iter()
        .flatten()
        .any(|c| {
            c.running()
                && c.label(UPLOAD_ID) == Some(job.upload_id.as_str())
                && c.label(VERSION) == Some(job.version.as_str())
        })
}
