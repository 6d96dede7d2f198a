//! The deploy stages over a validated job: prepare (private copy, named by its content; the
//! compose file and Dockerfile read and checked) → build (skipped when the image exists) → up
//! (the one rendered compose file, compose's read-back, wait for running/healthy, put the
//! previous image back on failure) → prune old images.

pub mod compose;
pub mod docker;
pub mod dockerfile;
pub mod error;
pub mod interpolate;
pub mod model;
pub mod network;
pub mod package;
pub mod policy;
pub mod readback;
pub mod refusal;
pub mod render;
pub mod yaml;

pub use error::{DeployError, Verdict};

use crate::buildlog::BuildLog;
use crate::config::Config;
use crate::job::DeployJob;
use docker::ComposeCmd;
use model::{Build, Package};
use nasiko_contract::labels;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct Deployer {
    pub cfg: Arc<Config>,
    pub compose: ComposeCmd,
    /// Where the build log goes.
    pub log: Arc<dyn BuildLog>,
}

/// A package copied into the build directory, read and past the policy.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub build_dir: PathBuf,
    pub agent_dir: PathBuf,
    pub hash: String,
    pub tag: String,
    /// The package as it will run (a Dockerfile alone is one service).
    pub package: Package,
    /// What `docker build` runs for the agent's own service.
    pub build: Build,
    /// The operator's caps shared out over the package's services (`caps[i]` for service `i`).
    pub caps: Vec<policy::Caps>,
}

impl Prepared {
    /// The package in `build_dir` (whose content hash is `hash`) read and checked for `agent`,
    /// and the image it becomes: what a deploy builds and `build-agent plan` shows. The policy
    /// runs before any docker command, so a refused package builds nothing.
    pub fn read(
        build_dir: PathBuf,
        agent_dir: PathBuf,
        hash: String,
        agent: &str,
        cfg: &Config,
    ) -> Result<Prepared, DeployError> {
        let Checked {
            package,
            build,
            caps,
        } = read_package(&build_dir, agent, cfg)?;
        Ok(Prepared {
            tag: format!("{}:{hash}", image_repo(agent)),
            build_dir,
            agent_dir,
            hash,
            package,
            build,
            caps,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Deployed {
    pub container_id: String,
    pub image: String,
}

pub fn image_repo(agent: &str) -> String {
    format!("nasiko-agent-{agent}")
}

pub use crate::buildlog::buildlog_key;

fn dotenv(package_dir: &Path) -> Vec<(String, String)> {
    package::read_regular(&package_dir.join(".env"), yaml::MAX_BYTES)
        .map(|t| model::parse_dotenv(&t))
        .unwrap_or_default()
}

/// The variables a package's compose file may use: what the platform gives agents, then the
/// package's own `.env` (literal text). Never the build agent's own environment.
pub fn package_vars(cfg: &Config, package_dir: &Path) -> interpolate::Vars {
    let mut v = cfg.agent_env.clone();
    v.extend(dotenv(package_dir));
    interpolate::Vars(v)
}

/// The entry service's environment from the platform (contracts.md §4.3), with the `.env` of the
/// package in `package_dir`; later entries win.
pub fn agent_env(cfg: &Config, job: &DeployJob, package_dir: &Path) -> Vec<(String, String)> {
    let mut env = cfg.agent_env.clone();
    env.push(("AGENT_PROJECT_NAME".into(), job.agent.clone()));
    env.extend(dotenv(package_dir));
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

/// The package in `dir` read for `agent` and checked — compose file (strict YAML, typed, the
/// policy, the caps) and the Dockerfile its agent is built from — before any docker command.
pub fn read_package(dir: &Path, agent: &str, cfg: &Config) -> Result<Checked, DeployError> {
    let env = dir.join(".env");
    if env.exists() {
        package::read_regular(&env, yaml::MAX_BYTES).map_err(|e| {
            DeployError::package(format!(
                "the package's .env cannot be read ({e}); it is a plain file of a few settings"
            ))
        })?;
    }
    let vars = package_vars(cfg, dir);
    let cx = model::Context::new(dir, &vars, &cfg.network);
    let pkg = match compose::find_compose_file(dir) {
        None => Package::dockerfile_only(dir, agent),
        Some(f) => {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = package::read_regular(&f, yaml::MAX_BYTES).map_err(|e| {
                DeployError::package(format!(
                    "cannot read {name} ({e}); an agent's compose file is a plain file of a few KiB (at most {} KiB)",
                    yaml::MAX_BYTES / 1024
                ))
            })?;
            model::read(&yaml::read(&text)?, &cx)?
        }
    };
    let shared = |k: &str| cx.is_shared(k);
    let container = compose::container_name(agent);
    policy::check(&pkg, agent, &container, cfg.max_services, &shared)?;
    let caps = policy::caps(&pkg, &cfg.limits)?;
    let entry = policy::entry_service(&pkg, agent)?;
    let build = entry
        .build
        .clone()
        .unwrap_or_else(|| Build::default_in(dir));
    let rel = build
        .dockerfile
        .strip_prefix(dir)
        .unwrap_or(&build.dockerfile)
        .display()
        .to_string();
    let text = package::read_regular(&build.dockerfile, 1 << 20).map_err(|e| {
        DeployError::package(format!(
            "cannot read the Dockerfile '{rel}' ({e}); add it to the package or point build.dockerfile at it"
        ))
    })?;
    dockerfile::check(&text, &build.args)
        .map_err(|r| DeployError::package(format!("{rel}: {r}")))?;
    Ok(Checked {
        package: pkg,
        build,
        caps,
    })
}

/// A package read and past every check: what will run, what is built, each service's caps.
pub struct Checked {
    pub package: Package,
    pub build: Build,
    pub caps: Vec<policy::Caps>,
}

/// The one compose file of a deploy, in a folder of its own, and what it needs.
#[derive(Debug, Clone)]
pub struct ComposeFiles {
    /// The folder compose runs in: the file, an empty env file, nothing else.
    pub project_dir: String,
    pub file: String,
    pub env_file: String,
    /// What rendering changed, for the build log.
    pub notes: Vec<String>,
    /// A hash of the effective configuration, also put on the entry container as
    /// `nasiko.deploy-hash`: equal means there is nothing to hand over.
    pub deploy_hash: String,
    /// The file as written.
    pub doc: serde_json::Value,
}

/// The label that tells what configuration a running agent container was deployed with.
pub const DEPLOY_HASH_LABEL: &str = "nasiko.deploy-hash";
/// Labels of an update's stand-by container: which job made it, and which consumer ran that job.
pub const STANDBY_JOB_LABEL: &str = "nasiko.handover-job";
pub const STANDBY_CONSUMER_LABEL: &str = "nasiko.handover-consumer";

/// The entry service's environment as it runs: the package's own, then the platform's.
pub fn entry_env(cfg: &Config, job: &DeployJob, p: &Prepared) -> Vec<(String, String)> {
    let mut env = policy::entry_service(&p.package, &job.agent)
        .map(|s| s.environment.clone())
        .unwrap_or_default();
    for (k, v) in agent_env(cfg, job, &p.build_dir) {
        env.retain(|(e, _)| *e != k);
        env.push((k, v));
    }
    env
}

/// Render the package for `image` into `{agent_dir}/compose/` (made anew): `compose.json`, and
/// `compose.env`, empty, for `--env-file` (so neither the package's `.env` nor anything else
/// configures compose).
pub fn write_compose_files(
    cfg: &Config,
    job: &DeployJob,
    p: &Prepared,
    image: &str,
) -> Result<ComposeFiles, DeployError> {
    let env = agent_env(cfg, job, &p.build_dir);
    let network = cfg.agent_network(&job.agent);
    let spec = render::Spec {
        agent: &job.agent,
        image,
        network: &network,
        stack: &cfg.network,
        owner: &job.owner_id,
        version: &job.version,
        upload_id: &job.upload_id,
        env: &env,
        publish: cfg.publish_agent_ports,
    };
    let shared = |k: &str| {
        [
            model::LEGACY_NETWORK,
            model::SHARED_NETWORK,
            cfg.network.as_str(),
        ]
        .contains(&k)
    };
    let mut r = render::render(&p.package, &p.caps, &spec, &shared)?;
    let deploy_hash = package::text_hash(&r.doc.to_string());
    let entry = compose::container_name(&job.agent);
    r.doc["services"][&entry]["labels"][DEPLOY_HASH_LABEL] =
        serde_json::Value::String(deploy_hash.clone());
    let dir = p.agent_dir.join("compose");
    let unwritable = |path: &Path, e: std::io::Error| {
        DeployError::machine(format!(
            "cannot write {}: {e} (free space, or set WORK_DIR to a writable folder)",
            path.display()
        ))
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| unwritable(&dir, e))?;
    let file = dir.join("compose.json");
    let text = serde_json::to_string_pretty(&r.doc).unwrap_or_default();
    std::fs::write(&file, text).map_err(|e| unwritable(&file, e))?;
    let env_file = dir.join("compose.env");
    std::fs::write(&env_file, "").map_err(|e| unwritable(&env_file, e))?;
    Ok(ComposeFiles {
        project_dir: dir.display().to_string(),
        file: file.display().to_string(),
        env_file: env_file.display().to_string(),
        notes: r.notes,
        deploy_hash,
        doc: r.doc,
    })
}

/// A bind's missing folder is made inside the package's build copy, as compose's short form
/// would (the long form we write does not); the model keeps every source inside the package.
fn make_bind_sources(p: &Prepared) -> Result<(), DeployError> {
    for s in &p.package.services {
        for m in &s.volumes {
            if let model::Mount::Bind { source, .. } = m {
                if !source.exists() {
                    std::fs::create_dir_all(source).map_err(|e| {
                        DeployError::machine(format!(
                            "cannot create {}: {e} (free space, or set WORK_DIR to a writable folder)",
                            source.display()
                        ))
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Compose's own reading of the file must be the file: `config` through the same compose, in
/// the same clean folder, compared with what was written.
pub async fn read_back(
    cmd: &ComposeCmd,
    project: &str,
    cf: &ComposeFiles,
) -> Result<serde_json::Value, DeployError> {
    let args: &[&str] = match cmd {
        ComposeCmd::V2 => &["config", "--format", "json"],
        ComposeCmd::V1 => &["config"],
    };
    let o = docker::compose(cmd, project, cf, args, Duration::from_secs(60))
        .await
        .map_err(|e| DeployError::docker("the compose configuration is invalid", e))?;
    let theirs = readback::parse(&o.stdout)?;
    readback::compare(&cf.doc, &theirs, project)?;
    Ok(theirs)
}

impl Deployer {
    /// Copy the package to `{work}/{agent}/{hash}` and work out the image tag.
    pub async fn prepare(&self, job: &DeployJob) -> Result<Prepared, DeployError> {
        let src = job.package.clone();
        let agent_dir = self.cfg.work_dir.join(&job.agent);
        let (agent, cfg) = (job.agent.clone(), self.cfg.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&agent_dir).map_err(|e| {
                DeployError::machine(format!(
                    "cannot create the build directory {}: {e}. Set WORK_DIR",
                    agent_dir.display()
                ))
            })?;
            // copied first, then named by what was copied: the copy is what is checked and
            // built. A build folder of that name is reused only while it still holds exactly that
            // content (nothing a running agent changed, no links)
            let staging = agent_dir.join("incoming");
            let hash = package::copy_tree(&src, &staging)?;
            let build_dir = agent_dir.join(&hash);
            let intact =
                build_dir.is_dir() && package::content_hash(&build_dir).is_ok_and(|h| h == hash);
            if intact {
                let _ = std::fs::remove_dir_all(&staging);
            } else {
                let _ = std::fs::remove_dir_all(&build_dir);
                std::fs::rename(&staging, &build_dir).map_err(|e| {
                    DeployError::machine(format!(
                        "cannot move the package into {}: {e}",
                        build_dir.display()
                    ))
                })?;
            }
            Prepared::read(build_dir, agent_dir, hash, &agent, &cfg)
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
        let network = network::ensure_builds(&self.cfg.agent_networks, &self.cfg.network).await?;
        let log = self.log.open(&job.agent, &job.stream_id);
        let _ = log
            .tx
            .send(format!("=== building {} for job {}", p.tag, job.stream_id));
        let tx = log.tx.clone();
        let r = docker::build(&p.build, &p.tag, &network, self.cfg.build_timeout, tx).await;
        log.close().await;
        r.map(|_| true)
            .map_err(|e| DeployError::docker("docker build failed", e))
    }

    async fn log_line(&self, agent: &str, job: &str, line: &str) {
        let log = self.log.open(agent, job);
        let _ = log.tx.send(line.to_string());
        log.close().await;
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
        read_back(&self.compose, &project, &cf).await?;
        make_bind_sources(p)?;
        // Docker 20.10's builder gives identical builds one image, so removing another agent's
        // copy (or a prune) can take ours between its build and here: build it again, or compose
        // would try to pull it from a registry.
        if !docker::image_exists(&p.tag).await {
            let gone = format!("=== {} is gone since its build; building it again", p.tag);
            self.log_line(&job.agent, &job.stream_id, &gone).await;
            self.build(job, p).await?;
        }
        let network =
            network::ensure(&self.cfg.agent_networks, &self.cfg.network, &job.agent).await?;
        // an agent deployed under the project naming of before (names with '.' or '_'): its
        // containers go, or compose could not take the container's name
        if let Some(old) = docker::label_of(&container, "com.docker.compose.project").await {
            if old != project {
                let _ = docker::undeploy(&old, &container, &job.agent).await;
            }
        }
        let handover = if unchanged || job.recreate {
            let why = if unchanged {
                "=== the running container has this exact configuration; no handover"
            } else {
                "=== update_strategy=recreate: replacing without a stand-by"
            };
            self.log_line(&job.agent, &job.stream_id, why).await;
            None
        } else {
            self.start_handover(job, p, &network).await
        };
        let mut started = self.start(&project, &cf, &container).await;
        if network_went_away(&started, &network) {
            // A worker that died while removing an orphaned network (remove_orphans) may have
            // left its removal in flight at the engine: it lands after our `ensure`. Make the
            // network again and start once more.
            tracing::warn!(%network, "the agent's network was removed under this deploy; making it again");
            network::ensure(&self.cfg.agent_networks, &self.cfg.network, &job.agent).await?;
            started = self.start(&project, &cf, &container).await;
        }
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
            Err(e) => match previous {
                Some(prev) => Err(self.put_back(job, p, &prev, e).await),
                None => Err(e),
            },
        }
    }

    /// The new version failed to start (`e`): start image `prev` again, the version that served
    /// before, and say in the error whether it serves.
    async fn put_back(
        &self,
        job: &DeployJob,
        p: &Prepared,
        prev: &str,
        e: DeployError,
    ) -> DeployError {
        tracing::warn!("new version failed ({e}); putting {prev} back");
        let project = compose::project_name(&job.agent);
        let container = compose::container_name(&job.agent);
        let cf = match write_compose_files(&self.cfg, job, p, prev) {
            Ok(cf) => cf,
            Err(e2) => return e2,
        };
        if let Err(e2) = read_back(&self.compose, &project, &cf).await {
            return e2;
        }
        match self.start(&project, &cf, &container).await {
            Ok(_) => e.explain(|m| {
                format!("{m}; the previous version ({prev}) was put back and is serving")
            }),
            Err(e2) => e.explain(|m| {
                format!("{m}; putting the previous version ({prev}) back also failed: {e2}")
            }),
        }
    }

    /// Replacing a running agent: start a stand-by of the new version on the shared network
    /// first. The sidecar gives the route to an agent's newest container once it has run
    /// ROUTE_WARMUP_SECS, so the route moves to the stand-by while the old container still serves,
    /// stays there while compose recreates the entry container, and moves to the new one before the
    /// stand-by is removed: an update without dropped requests. Best effort: without a stand-by the
    /// update goes on (and may drop requests for a moment).
    async fn start_handover(&self, job: &DeployJob, p: &Prepared, network: &str) -> Option<String> {
        let container = compose::container_name(&job.agent);
        let running = docker::container_state(&container)
            .await
            .is_some_and(|s| s.0 == "running");
        if !running || self.cfg.handover_wait.is_zero() {
            return None;
        }
        let name = nasiko_contract::standby_container(&job.agent);
        let _ = docker::remove_container(&name).await;
        let mut args: Vec<String> = ["docker", "run", "-d", "--name", &name, "--network", network]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (k, v) in [
            (labels::TYPE, labels::TYPE_AGENT),
            (labels::NAME, job.agent.as_str()),
            (labels::OWNER, job.owner_id.as_str()),
            (labels::HANDOVER, "true"),
            (labels::STACK, self.cfg.network.as_str()),
            (STANDBY_JOB_LABEL, job.stream_id.as_str()),
            (STANDBY_CONSUMER_LABEL, self.cfg.standby_owner().as_str()),
        ] {
            args.extend(["--label".to_string(), format!("{k}={v}")]);
        }
        for (k, v) in entry_env(&self.cfg, job, p) {
            args.extend(["-e".to_string(), format!("{k}={v}")]);
        }
        // the stand-by gets the agent's own container's caps
        args.extend(["--security-opt".into(), "no-new-privileges:true".into()]);
        args.extend(["--cap-drop".into(), "NET_RAW".into()]);
        let entry = policy::entry_service(&p.package, &job.agent).ok()?;
        let i = p.package.services.iter().position(|s| s.key == entry.key)?;
        let caps = p.caps[i];
        if let Some(m) = caps.memory {
            args.extend(["--memory".into(), m.to_string()]);
            args.extend(["--memory-swap".into(), m.to_string()]);
        }
        if let Some(c) = caps.cpus {
            args.extend(["--cpus".into(), c.to_string()]);
        }
        if let Some(n) = caps.pids {
            args.extend(["--pids-limit".into(), n.to_string()]);
        }
        args.push(p.tag.clone());
        if let Err(e) = crate::process::run(&args, Duration::from_secs(60), None).await {
            tracing::warn!("no stand-by for the update ({e}); requests may drop while the container is recreated");
            return None;
        }
        match self.wait_running(&name).await {
            Ok(_) => {
                tokio::time::sleep(self.cfg.handover_wait).await;
                Some(name)
            }
            Err(e) => {
                tracing::warn!("the stand-by did not start ({e}); updating without it");
                let _ = docker::remove_container(&name).await;
                None
            }
        }
    }

    async fn start(
        &self,
        project: &str,
        cf: &ComposeFiles,
        container: &str,
    ) -> Result<String, DeployError> {
        docker::compose(
            &self.compose,
            project,
            cf,
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

/// Whether `started` failed because the engine has no network named `network`: compose v1 says
/// "Network X declared as external, but could not be found", v2 passes on the engine's
/// "network X not found".
fn network_went_away(started: &Result<String, DeployError>, network: &str) -> bool {
    started.as_ref().err().is_some_and(|e| {
        let m = e.to_string();
        m.contains(&format!(
            "{network} declared as external, but could not be found"
        )) || m.contains(&format!("network {network} not found"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_removed_under_a_deploy_is_recognised_in_both_composes_words() {
        let failed = |m: &str| Err(DeployError::machine(m.to_string()));
        // as docker-compose 1.29.2 and docker compose 2.26.1 print them
        let v1 = "Network n-agent-a declared as external, but could not be found. Please create the network manually using `docker network create n-agent-a` and try again.";
        let v2 = "Error response from daemon: network n-agent-a not found";
        for m in [v1, v2] {
            assert!(network_went_away(&failed(m), "n-agent-a"), "{m}");
            assert!(!network_went_away(&failed(m), "n-agent-b"), "{m}");
        }
        assert!(!network_went_away(
            &failed("no space left on device"),
            "n-agent-a"
        ));
        assert!(!network_went_away(&Ok("id".into()), "n-agent-a"));
    }
}
