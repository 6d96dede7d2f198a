//! The deploy stages over a validated job: prepare (private copy, named by its content; the
//! compose file and Dockerfile read and checked) → build (skipped when the image exists) → up
//! (`up.rs`: in the slot `slots::choose` picks, blue/green or in place) → prune old images.

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
pub mod slots;
mod up;
pub mod yaml;

pub use error::{DeployError, Verdict};

use crate::buildlog::BuildLog;
use crate::config::Config;
use crate::job::DeployJob;
use docker::ComposeCmd;
use model::{Build, Package};
use nasiko_contract::Slot;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    policy::check(&pkg, agent, &container, cfg.most, &shared)?;
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

/// The package rendered for `image` in `slot`, with the configuration's hash on each of the
/// agent's containers (`nasiko.deploy-hash`). The hash is the same in either slot: it leaves out
/// the containers' names.
pub fn render_compose(
    cfg: &Config,
    job: &DeployJob,
    p: &Prepared,
    image: &str,
    slot: Slot,
) -> Result<(render::Rendered, String), DeployError> {
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
        slot,
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
    let replicas = replica_keys(&r.doc, &compose::container_name(&job.agent));
    let mut nameless = r.doc.clone();
    for k in &replicas {
        nameless["services"][k]["container_name"] = serde_json::Value::Null;
    }
    let hash = package::text_hash(&nameless.to_string());
    for k in &replicas {
        r.doc["services"][k]["labels"][DEPLOY_HASH_LABEL] = serde_json::Value::String(hash.clone());
    }
    Ok((r, hash))
}

/// [`render_compose`] into `{agent_dir}/compose-{slot}/` (made anew): `compose.json`, and
/// `compose.env`, empty, for `--env-file` (so neither the package's `.env` nor anything else
/// configures compose).
pub fn write_compose_files(
    cfg: &Config,
    job: &DeployJob,
    p: &Prepared,
    image: &str,
    slot: Slot,
) -> Result<ComposeFiles, DeployError> {
    let (r, deploy_hash) = render_compose(cfg, job, p, image, slot)?;
    let dir = p.agent_dir.join(format!("compose-{}", slot.as_str()));
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

/// The services of a rendered file that are the agent (`entry`, the first, and its replicas):
/// those labelled `nasiko.type=agent`.
pub fn replica_keys(doc: &serde_json::Value, entry: &str) -> Vec<String> {
    let mut keys: Vec<String> = doc["services"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, s)| {
            s["labels"][nasiko_contract::labels::TYPE] == nasiko_contract::labels::TYPE_AGENT
        })
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort_by_key(|k| k != entry);
    keys
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
}
