//! The deploy stages over a validated job: prepare (private copy, content hash) → build (skipped
//! when the image exists) → up (validated override, wait for running/healthy, put the previous
//! image back on failure) → prune old images.

pub mod compose;
pub mod docker;
pub mod error;
pub mod package;
pub mod policy;

pub use error::{DeployError, Verdict};

use crate::config::Config;
use crate::job::DeployJob;
use compose::OverrideSpec;
use docker::ComposeCmd;
use nasiko_contract::labels;
use redis::aio::ConnectionManager;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct Deployer {
    pub cfg: Arc<Config>,
    pub compose: ComposeCmd,
    pub redis: ConnectionManager,
}

/// A package copied into the build directory.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub build_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub hash: String,
    pub tag: String,
    /// The package's compose file, read and past the policy (None: a Dockerfile alone).
    pub compose: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone)]
pub struct Deployed {
    pub container_id: String,
    pub image: String,
}

pub fn image_repo(agent: &str) -> String {
    format!("nasiko-agent-{agent}")
}

pub fn buildlog_key(agent: &str) -> String {
    format!("agent:buildlog:{agent}")
}

/// The entry service's environment (contracts.md §4.3), with the `.env` of the package in
/// `package_dir`; later entries win.
pub fn agent_env(cfg: &Config, job: &DeployJob, package_dir: &Path) -> Vec<(String, String)> {
    let dotenv = std::fs::read_to_string(package_dir.join(".env"))
        .map(|t| compose::parse_dotenv(&t))
        .unwrap_or_default();
    let mut env = cfg.agent_env.clone();
    env.push(("AGENT_PROJECT_NAME".into(), job.agent.clone()));
    env.extend(dotenv);
    env.push(("AGENT_NAME".into(), job.agent.clone()));
    env.push(("OWNER_ID".into(), job.owner_id.clone()));
    if let Some(w) = &job.webhook_url {
        env.push(("WEBHOOK_URL".into(), w.clone()));
    }
    // de-duplicate, keeping the last value
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        out.retain(|(ok, _)| *ok != k);
        out.push((k, v));
    }
    out
}

fn read_user_compose(file: &Path) -> Result<serde_yaml_ng::Value, DeployError> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let text = std::fs::read_to_string(file)
        .map_err(|e| DeployError::package(format!("cannot read {name}: {e}")))?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| DeployError::package(format!("{name} is not valid YAML: {e}")))
}

/// The package's compose file in `dir`, read and checked against the policy for `agent` on the
/// agents network `network`; None without one.
pub fn package_compose(
    dir: &Path,
    agent: &str,
    network: &str,
) -> Result<Option<serde_yaml_ng::Value>, DeployError> {
    let Some(f) = compose::find_compose_file(dir) else {
        return Ok(None);
    };
    let u = read_user_compose(&f)?;
    policy::check(&u, dir)?;
    let entry = compose::entry_service(&u, agent)?;
    policy::check_agents_network(&u, &entry, &compose::container_name(agent), network)?;
    Ok(Some(u))
}

/// The compose files of one deploy, in the order compose takes them, and what the package needs.
#[derive(Debug, Clone)]
pub struct ComposeFiles {
    pub files: Vec<String>,
    /// External networks of the package's own (created, labelled as ours, before `up`).
    pub own_networks: Vec<String>,
    /// What normalization changed, for the build log.
    pub notes: Vec<String>,
    /// A hash of the effective configuration (image, package file, override), also put on the
    /// entry container as `nasiko.deploy-hash`: equal means there is nothing to hand over.
    pub deploy_hash: String,
}

/// The label that tells what configuration a running agent container was deployed with.
pub const DEPLOY_HASH_LABEL: &str = "nasiko.deploy-hash";
/// Labels of an update's stand-by container: which job made it, and which consumer ran that job.
pub const STANDBY_JOB_LABEL: &str = "nasiko.handover-job";
pub const STANDBY_CONSUMER_LABEL: &str = "nasiko.handover-consumer";

/// Write the normalized package file and the override (or one whole file) for `image`.
pub fn write_compose_files(
    cfg: &Config,
    job: &DeployJob,
    p: &Prepared,
    image: &str,
) -> Result<ComposeFiles, DeployError> {
    let env = agent_env(cfg, job, &p.build_dir);
    let spec = OverrideSpec {
        agent: &job.agent,
        image,
        network: &cfg.network,
        owner: &job.owner_id,
        version: &job.version,
        upload_id: &job.upload_id,
        env: &env,
        limits: &cfg.limits,
    };
    let write = |name: &str, v: &serde_yaml_ng::Value| -> Result<String, DeployError> {
        let text = serde_yaml_ng::to_string(v)
            .map_err(|e| DeployError::package(format!("cannot write {name} as YAML: {e}")))?;
        let path = p.agent_dir.join(name);
        std::fs::write(&path, text).map_err(|e| {
            DeployError::machine(format!(
                "cannot write {}: {e} (free space, or set WORK_DIR to a writable folder)",
                path.display()
            ))
        })?;
        Ok(path.display().to_string())
    };
    let mut out = ComposeFiles {
        files: Vec::new(),
        own_networks: Vec::new(),
        notes: Vec::new(),
        deploy_hash: String::new(),
    };
    let user = match &p.compose {
        Some(u) => {
            let mut u = u.clone();
            let n = compose::normalize_package(&mut u, &cfg.network, cfg.publish_agent_ports)?;
            out.own_networks = n.own_networks;
            out.notes = n.notes;
            // our copy of the user's file; relative paths resolve against --project-directory
            out.files.push(write("nasiko.package.yml", &u)?);
            Some(u)
        }
        None => None,
    };
    let mut ov = compose::build_override(user.as_ref(), &spec)?;
    let effective = format!(
        "{}\n---\n{}",
        serde_yaml_ng::to_string(&user).unwrap_or_default(),
        serde_yaml_ng::to_string(&ov).unwrap_or_default()
    );
    out.deploy_hash = package::text_hash(&effective);
    compose::add_entry_label(&mut ov, DEPLOY_HASH_LABEL, &out.deploy_hash);
    let name = if user.is_some() {
        "nasiko.override.yml"
    } else {
        "nasiko.compose.yml"
    };
    out.files.push(write(name, &ov)?);
    Ok(out)
}

impl Deployer {
    /// Copy the package to `{work}/{agent}/{hash}` and work out the image tag.
    pub async fn prepare(&self, job: &DeployJob) -> Result<Prepared, DeployError> {
        let src = job.package.clone();
        let agent_dir = self.cfg.work_dir.join(&job.agent);
        let repo = image_repo(&job.agent);
        let (agent, network) = (job.agent.clone(), self.cfg.network.clone());
        tokio::task::spawn_blocking(move || {
            let hash = package::content_hash(&src)?;
            std::fs::create_dir_all(&agent_dir).map_err(|e| {
                DeployError::machine(format!(
                    "cannot create the build directory {}: {e}. Set WORK_DIR",
                    agent_dir.display()
                ))
            })?;
            // named by its content and moved into place whole (copy_tree): present means complete
            let build_dir = agent_dir.join(&hash);
            if !build_dir.is_dir() {
                package::copy_tree(&src, &build_dir)?;
            }
            // the policy before any docker command: a refused package builds nothing
            let compose = package_compose(&build_dir, &agent, &network)?;
            let tag = format!("{repo}:{hash}");
            Ok(Prepared {
                build_dir,
                agent_dir,
                hash,
                tag,
                compose,
            })
        })
        .await
        .map_err(|e| DeployError::machine(format!("the prepare task died: {e}")))?
    }

    /// `docker build` unless the content-derived tag exists. Output goes to the agent's build log.
    pub async fn build(&self, job: &DeployJob, p: &Prepared) -> Result<bool, DeployError> {
        if docker::image_exists(&p.tag).await {
            self.log_line(
                &job.agent,
                &job.stream_id,
                &format!("=== {} is up to date; not rebuilding", p.tag),
            )
            .await;
            return Ok(false);
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let mut redis = self.redis.clone();
        let key = buildlog_key(&job.agent);
        let jid = job.stream_id.clone();
        let _ = tx.send(format!("=== building {} for job {}", p.tag, job.stream_id));
        let pump = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let _: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(2000)
                    .arg("*")
                    .arg("job")
                    .arg(&jid)
                    .arg("line")
                    .arg(&line)
                    .query_async(&mut redis)
                    .await;
            }
        });
        let r = docker::build(
            &p.build_dir.display().to_string(),
            &p.tag,
            self.cfg.build_timeout,
            tx,
        )
        .await;
        let _ = pump.await;
        r.map(|_| true)
            .map_err(|e| DeployError::docker("docker build failed", e))
    }

    async fn log_line(&self, agent: &str, job: &str, line: &str) {
        let mut r = self.redis.clone();
        let _: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(buildlog_key(agent))
            .arg("MAXLEN")
            .arg("~")
            .arg(2000)
            .arg("*")
            .arg("job")
            .arg(job)
            .arg("line")
            .arg(line)
            .query_async(&mut r)
            .await;
    }

    /// Validate, start, wait; on failure put the previous image back (when there was one).
    pub async fn up(&self, job: &DeployJob, p: &Prepared) -> Result<Deployed, DeployError> {
        let container = compose::container_name(&job.agent);
        let project = compose::project_name(&job.agent);
        let previous = docker::container_state(&container)
            .await
            .map(|s| s.2)
            .filter(|img| *img != p.tag);
        let cf = write_compose_files(&self.cfg, job, p, &p.tag)?;
        // the running container has exactly this configuration (an unchanged redeploy, or a
        // resumed job): nothing to hand over, and compose recreates nothing
        let unchanged = docker::label_of_running(&container, DEPLOY_HASH_LABEL)
            .await
            .as_deref()
            == Some(cf.deploy_hash.as_str());
        for note in &cf.notes {
            self.log_line(&job.agent, &job.stream_id, &format!("=== {note}"))
                .await;
        }
        for net in &cf.own_networks {
            docker::ensure_agent_network(net).await?;
        }
        let files = cf.files;
        let dir = p.build_dir.display().to_string();
        docker::compose(
            &self.compose,
            &project,
            &dir,
            &files,
            &["config", "-q"],
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| DeployError::docker("the compose configuration is invalid", e))?;
        let handover = if unchanged || job.recreate {
            let why = if unchanged {
                "=== the running container has this exact configuration; no handover"
            } else {
                "=== update_strategy=recreate: replacing without a stand-by"
            };
            self.log_line(&job.agent, &job.stream_id, why).await;
            None
        } else {
            self.start_handover(job, p).await
        };
        let started = self.start(&project, &dir, &files, &container).await;
        if let Some(h) = &handover {
            if started.is_ok() {
                // the sidecar moves the route to the new container once it has warmed up
                tokio::time::sleep(self.cfg.handover_wait).await;
            }
            let _ = docker::remove_container(h).await;
        }
        match started {
            Ok(id) => Ok(Deployed {
                container_id: id,
                image: p.tag.clone(),
            }),
            Err(e) => {
                let Some(prev) = previous else { return Err(e) };
                tracing::warn!(job = %job.stream_id, agent = %job.agent, "new version failed ({e}); putting {prev} back");
                let files = write_compose_files(&self.cfg, job, p, &prev)?.files;
                match self.start(&project, &dir, &files, &container).await {
                    Ok(_) => Err(e.explain(|m| {
                        format!("{m}; the previous version ({prev}) was put back and is serving")
                    })),
                    Err(e2) => Err(e.explain(|m| {
                        format!("{m}; putting the previous version ({prev}) back also failed: {e2}")
                    })),
                }
            }
        }
    }

    /// Replacing a running agent: start a stand-by of the new version on the shared network
    /// first. The sidecar gives the route to an agent's newest container once it has run
    /// ROUTE_WARMUP_SECS, so the route moves to the stand-by while the old container still serves,
    /// stays there while compose recreates the entry container, and moves to the new one before the
    /// stand-by is removed: an update without dropped requests. Best effort: without a stand-by the
    /// update goes on (and may drop requests for a moment).
    async fn start_handover(&self, job: &DeployJob, p: &Prepared) -> Option<String> {
        let container = compose::container_name(&job.agent);
        let running = docker::container_state(&container)
            .await
            .is_some_and(|s| s.0 == "running");
        if !running || self.cfg.handover_wait.is_zero() {
            return None;
        }
        let name = format!("{container}-handover");
        let _ = docker::remove_container(&name).await;
        let mut args: Vec<String> = [
            "docker",
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.cfg.network,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in [
            (labels::TYPE, labels::TYPE_AGENT),
            (labels::NAME, job.agent.as_str()),
            (labels::OWNER, job.owner_id.as_str()),
            (labels::HANDOVER, "true"),
            (STANDBY_JOB_LABEL, job.stream_id.as_str()),
            (STANDBY_CONSUMER_LABEL, self.cfg.standby_owner().as_str()),
        ] {
            args.extend(["--label".to_string(), format!("{k}={v}")]);
        }
        for (k, v) in agent_env(&self.cfg, job, &p.build_dir) {
            args.extend(["-e".to_string(), format!("{k}={v}")]);
        }
        // the stand-by gets the same caps as the agent's containers
        let l = &self.cfg.limits;
        args.extend(["--security-opt".into(), "no-new-privileges:true".into()]);
        if !l.memory.is_empty() {
            args.extend(["--memory".into(), l.memory.clone()]);
        }
        if l.cpus > 0.0 {
            args.extend(["--cpus".into(), l.cpus.to_string()]);
        }
        if l.pids > 0 {
            args.extend(["--pids-limit".into(), l.pids.to_string()]);
        }
        args.push(p.tag.clone());
        if let Err(e) = crate::process::run(&args, Duration::from_secs(60), None).await {
            tracing::warn!(job = %job.stream_id, agent = %job.agent, "no stand-by for the update ({e}); requests may drop while the container is recreated");
            return None;
        }
        match self.wait_running(&name).await {
            Ok(_) => {
                tokio::time::sleep(self.cfg.handover_wait).await;
                Some(name)
            }
            Err(e) => {
                tracing::warn!(job = %job.stream_id, agent = %job.agent, "the stand-by did not start ({e}); updating without it");
                let _ = docker::remove_container(&name).await;
                None
            }
        }
    }

    async fn start(
        &self,
        project: &str,
        dir: &str,
        files: &[String],
        container: &str,
    ) -> Result<String, DeployError> {
        docker::compose(
            &self.compose,
            project,
            dir,
            files,
            &[
                "up",
                "-d",
                "--no-build",
                "--remove-orphans",
                "--timeout",
                "3",
            ],
            Duration::from_secs(300),
        )
        .await
        .map_err(|e| DeployError::docker("docker compose up failed", e))?;
        self.wait_running(container).await
    }

    /// Running (and healthy, with a health check) and stable for a second; else why not.
    async fn wait_running(&self, container: &str) -> Result<String, DeployError> {
        let deadline = Instant::now() + self.cfg.start_timeout;
        let mut stable_since: Option<(Instant, u64)> = None;
        loop {
            match docker::container_state(container).await {
                None => {
                    return Err(DeployError::package(format!(
                        "container {container} was not created"
                    )))
                }
                Some((status, health, _, id, restarts)) => {
                    let crashed = matches!(status.as_str(), "exited" | "dead" | "restarting")
                        || stable_since.is_some_and(|(_, r)| restarts > r);
                    if crashed || health == "unhealthy" {
                        let tail = docker::logs_tail(container, 20).await;
                        let why = if health == "unhealthy" {
                            "is unhealthy".to_string()
                        } else {
                            format!("exited at start ({status})")
                        };
                        return Err(DeployError::package(format!(
                            "container {container} {why}; last log lines:\n{tail}"
                        )));
                    }
                    if status == "running" && (health.is_empty() || health == "healthy") {
                        match stable_since {
                            Some((t, _)) if t.elapsed() >= Duration::from_secs(1) => return Ok(id),
                            Some(_) => {}
                            None => stable_since = Some((Instant::now(), restarts)),
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(DeployError::package(format!(
                    "container {container} did not become ready within {}s",
                    self.cfg.start_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
