//! One job from received to its terminal status: prepare → build → deploy → register, each stage
//! reported; the terminal status is recorded before the entry is acknowledged.

use crate::attempts::Mark;
use crate::card;
use crate::config::Config;
use crate::deploy::{docker, DeployError, Deployer, Verdict};
use crate::job::{DeployJob, Rejection};
use crate::report::{Facts, Reporter, Stage, Subject};
use crate::retry::{until_ok, Backoff};
use crate::runner::Execute;
use crate::stream::Stream;
use nasiko_contract::stream::Action;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// First and longest wait before a job retries after trouble of the machine.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub struct Pipeline {
    pub cfg: Arc<Config>,
    pub reporter: Reporter,
    pub stream: Stream,
    /// None: the no-op deploy of the lifecycle benchmark.
    pub deployer: Option<Deployer>,
}

/// The span every log line about one job is in: its stream id and its agent.
pub fn job_span(id: &str, agent: &str) -> tracing::Span {
    tracing::info_span!("job", job = %id, agent = %agent)
}

/// Whom a status is about: a job, or a rejected entry (reported when it names a usable agent).
pub fn subject(job: &DeployJob) -> Subject {
    Subject {
        agent: job.agent.clone(),
        stream_id: job.stream_id.clone(),
        owner_id: job.owner_id.clone(),
        upload_id: job.upload_id.clone(),
        upload_type: job.upload_type.clone(),
        backend_url: job.backend_url.clone(),
    }
}

pub fn rejection_subject(r: &Rejection) -> Subject {
    Subject {
        agent: r.agent.clone().unwrap_or_default(),
        stream_id: r.stream_id.clone(),
        owner_id: r.owner_id.clone(),
        upload_id: r.upload_id.clone(),
        upload_type: String::new(),
        backend_url: r.backend_url.clone(),
    }
}

impl Pipeline {
    async fn stage(&self, s: &Subject, stage: Stage, message: &str, f: &Facts) {
        tracing::info!(stage = stage.name(), "{message}");
        if let Err(e) = self.reporter.write_hash(s, stage, message, f).await {
            tracing::warn!("could not write the status hash: {e}");
        }
        self.reporter.upload_status(s, stage, message, f, None);
        // after the status, which people wait for (a kill in between only loses this mark)
        match self.stream.reached(&s.stream_id, Mark::stage(stage)).await {
            Ok(true) => tracing::info!("further than any earlier attempt: the attempts counted against this job start again"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot mark the job's progress ({e}); going on"),
        }
    }

    /// [`finish`](Self::finish) a job that may have run: a failure says what is still serving.
    /// (Rejections never ran: plain `finish`.)
    pub async fn finish_run(&self, s: &Subject, stage: Stage, message: &str, f: &Facts) {
        let mut message = message.to_string();
        if self.deployer.is_some() && stage == Stage::Failed && !message.contains("serving") {
            let slots = docker::agent_slots(&s.agent).await;
            for (slot, c) in nasiko_contract::Slot::BOTH.iter().zip(&slots) {
                if let Some(c) = c.as_ref().filter(|c| c.running()) {
                    let container = slot.container(&s.agent);
                    message.push_str(&format!("; {container} ({}) is still serving", c.image));
                }
            }
        }
        self.finish(s, stage, &message, f).await
    }

    /// Record a terminal status (retrying the Redis write until it lands), then acknowledge.
    pub async fn finish(&self, s: &Subject, stage: Stage, message: &str, f: &Facts) {
        let level_fail = stage == Stage::Failed;
        if level_fail {
            tracing::warn!(stage = stage.name(), "{message}");
        } else {
            tracing::info!(stage = stage.name(), "{message}");
        }
        if !s.agent.is_empty() {
            until_ok(
                Backoff::redis(),
                || self.reporter.write_hash(s, stage, message, f),
                |e, delay| {
                    tracing::warn!(
                        "cannot record the terminal status yet ({e}); retrying in {delay:?}"
                    )
                },
            )
            .await;
            self.reporter
                .upload_status(s, stage, message, f, level_fail.then_some(message));
        }
        self.ack(&s.stream_id).await;
    }

    pub async fn ack(&self, id: &str) {
        until_ok(
            Backoff::redis(),
            || self.stream.ack(id),
            |e, delay| tracing::warn!("cannot acknowledge yet ({e}); retrying in {delay:?}"),
        )
        .await;
    }

    pub async fn reject(&self, r: &Rejection) {
        let s = rejection_subject(r);
        if s.agent.is_empty() {
            tracing::warn!("rejected: {}", r.reason);
        }
        self.finish(
            &s,
            Stage::Failed,
            &format!("rejected: {}", r.reason),
            &Facts::default(),
        )
        .await;
    }

    async fn run_job(&self, job: &DeployJob) {
        let s = subject(job);
        let started = Instant::now();
        // counted before anything is done: an attempt that dies (SIGKILL, OOM) still counts
        if let Err(e) = self.stream.start_attempt(&job.stream_id).await {
            tracing::warn!("cannot count the attempt ({e}); going on");
        }
        self.stage(
            &s,
            Stage::Received,
            &format!("{} received", job.action.as_str()),
            &Facts::default(),
        )
        .await;
        let Some(d) = &self.deployer else {
            tokio::time::sleep(self.cfg.noop_deploy_time).await;
            let f = Facts {
                url: Some(self.agent_url(&job.agent)),
                ..Default::default()
            };
            self.finish(&s, Stage::Done, "deployed (no-op)", &f).await;
            return;
        };
        // the error policy: a broken package fails the job at once; trouble of the machine
        // (Docker not answering, a tool missing, the disk full) keeps it, retried with backoff
        let mut wait = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            let e = match self.deploy(d, job, &s).await {
                Ok((f, stages, note)) => {
                    let msg = format!(
                        "deployed in {:.1}s ({stages}){note}",
                        started.elapsed().as_secs_f64()
                    );
                    return self.finish_run(&s, Stage::Done, &msg, &f).await;
                }
                Err(e) => e,
            };
            let engine_answers = !e.needs_engine_check() || docker::engine_answers().await;
            match e.verdict(engine_answers) {
                Verdict::Fail(m) => {
                    return self
                        .finish_run(&s, Stage::Failed, &m, &Facts::default())
                        .await
                }
                Verdict::Retry(m) => {
                    let msg = format!(
                        "waiting for the machine, not failed: {m}; retrying in {}s",
                        wait.peek().as_secs()
                    );
                    self.stage(&s, Stage::Received, &msg, &Facts::default())
                        .await;
                    wait.wait().await;
                }
            }
        }
    }

    pub fn agent_url(&self, agent: &str) -> String {
        format!(
            "{}{}",
            self.cfg.kong_gateway_url,
            nasiko_contract::agent_route_path(agent)
        )
    }

    async fn deploy(
        &self,
        d: &Deployer,
        job: &DeployJob,
        s: &Subject,
    ) -> Result<(Facts, String, String), DeployError> {
        let mut stages = Stages::new();
        let p = d.prepare(job).await?;
        stages.end("prepare");
        self.stage(
            s,
            Stage::Building,
            &format!("building {}", p.tag),
            &Facts::default(),
        )
        .await;
        let built = d.build(job, &p).await?;
        stages.end("build");
        let rollback = job.action == Action::Rollback;
        let msg = match (built, rollback) {
            (true, false) => format!("built {}; starting", p.tag),
            (false, false) => format!("{} unchanged; starting without a rebuild", p.tag),
            (false, true) => format!(
                "rolling back to {}: its image {} is kept; starting it without a build",
                job.version, p.tag
            ),
            (true, true) => format!(
                "rolling back to {}: its image was no longer kept (AGENT_KEEP_VERSIONS={}), so it was built again; starting",
                job.version, self.cfg.keep_versions
            ),
        };
        self.stage(s, Stage::Deploying, &msg, &Facts::default())
            .await;
        let dep = d.up(job, &p).await?;
        stages.end("start");
        let url = self.agent_url(&job.agent);
        let mut f = Facts {
            url: Some(url.clone()),
            container_id: Some(dep.container_id.clone()),
            ..Default::default()
        };
        self.stage(s, Stage::Registering, "registering the agent card", &f)
            .await;
        let (card, note) = card::registry_card(
            &p.build_dir,
            &job.agent,
            &job.owner_id,
            &self.cfg.kong_gateway_url,
        );
        let registered = self.reporter.registry(s, &card).await;
        f.registry_updated = Some(registered);
        if registered {
            f.registry_id = Some(job.agent.clone());
        }
        let mut notes = String::new();
        if let Some(n) = note {
            notes.push_str(&format!("; {n}"));
        }
        if registered {
            if let Err(e) = self.reporter.permissions(s).await {
                notes.push_str(&format!("; permissions not set: {e}"));
            }
        }
        if rollback && built {
            notes.push_str(&format!(
                "; version {}'s image was no longer kept (AGENT_KEEP_VERSIONS={}) and was built again",
                job.version, self.cfg.keep_versions
            ));
        }
        if !job.version.is_empty() {
            if let Err(e) = docker::tag_version(&job.agent, &dep.image, &job.version).await {
                tracing::warn!("cannot tag {} with its version: {e}", dep.image);
            }
        }
        let removed = docker::prune_images(&job.agent, self.cfg.keep_versions, &dep.image).await;
        if !removed.is_empty() {
            tracing::info!("removed old images: {}", removed.join(", "));
        }
        stages.end("register");
        Ok((f, stages.to_string(), notes))
    }
}

/// How long each stage of one deploy took (its status writes included), said in its final
/// status so a slow deploy shows where its time went.
struct Stages {
    since: Instant,
    took: Vec<(&'static str, Duration)>,
}

impl Stages {
    fn new() -> Stages {
        Stages {
            since: Instant::now(),
            took: Vec::new(),
        }
    }

    /// Stage `name` ended now.
    fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        self.took.push((name, now - self.since));
        self.since = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.took.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.2}s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl Execute for Pipeline {
    fn execute(&self, job: DeployJob) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let span = job_span(&job.stream_id, &job.agent);
        Box::pin(async move { self.run_job(&job).await }.instrument(span))
    }

    fn superseded(
        &self,
        old: DeployJob,
        by: &DeployJob,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let by = by.stream_id.clone();
        let span = job_span(&old.stream_id, &old.agent);
        Box::pin(
            async move {
                tracing::info!("superseded by the newer job {by}; acknowledged without running");
                self.ack(&old.stream_id).await;
            }
            .instrument(span),
        )
    }
}
