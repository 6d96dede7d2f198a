//! The developer commands: `submit` (XADD a job as the backend does; `--wait` for its outcome),
//! `status`, `logs`, `plan` (the effective compose, nothing run), `undeploy`, and `names` (the
//! names an agent has, for scripts). Each failure says whether to fix the input, wait for a service, or look at the
//! agent, and exits with a code that tells a script the same.

use crate::config::{Common, Config, ConfigError, RunArgs, SubmitArgs};
use crate::deploy::{self, compose, docker, error::Cause, package, DeployError, Prepared};
use crate::job::{valid_agent_name, Action, DeployJob};
use crate::worker::connect;
use clap::Parser;
use nasiko_contract::{stream, Slot};
use std::time::Duration;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The input is wrong (a bad name, a folder that is not a package): fix it. Exit 2.
    Usage(String),
    /// Redis or the Docker engine cannot be used now: try again when it is up. Exit 69
    /// (EX_UNAVAILABLE).
    Unavailable(String),
    /// The command ran and failed (e.g. the package is refused). Exit 1.
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unavailable(_) => 69,
            CliError::Failed(_) => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Unavailable(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

/// A setting that cannot work is the input to fix.
impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<DeployError> for CliError {
    fn from(e: DeployError) -> Self {
        match e.cause {
            Cause::Package => CliError::Failed(e.message),
            Cause::Machine | Cause::DockerMissing => CliError::Unavailable(e.message),
            Cause::DockerCommand { .. } => CliError::Failed(e.message),
        }
    }
}

fn check_name(name: &str) -> Result<(), CliError> {
    if valid_agent_name(name) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "'{name}' is not a valid agent name: lower-case letters, digits, '_', '.', '-', starting with a letter or digit, at most {} characters",
            nasiko_contract::MAX_NAME_LEN
        )))
    }
}

/// The names an agent goes by, one line per agent for scripts (tab-separated: name, container,
/// compose project, image repository, Kong service, Kong route, its own network, and the green
/// slot's container and compose project). Every name is checked first.
pub fn names(c: &Common, names: &[String]) -> Result<String, CliError> {
    let mut out = String::new();
    for n in names {
        check_name(n)?;
        let container = compose::container_name(n);
        out.push_str(&format!(
            "{n}\t{container}\t{}\t{}\t{container}\t{container}-route\t{}\t{}\t{}\n",
            compose::project_name(n),
            deploy::image_repo(n),
            nasiko_contract::agent_network(&c.docker_network, n),
            Slot::Green.container(n),
            Slot::Green.project(n),
        ));
    }
    Ok(out)
}

/// The daemon's settings (flags' defaults and the environment), for commands that need them.
#[derive(Parser)]
struct RunDefaults {
    #[command(flatten)]
    run: RunArgs,
}

async fn redis(c: &Common) -> Result<redis::aio::ConnectionManager, CliError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        connect(&c.redis_url(), Duration::from_secs(5)),
    )
    .await
    .map_err(|_| {
        CliError::Unavailable(format!(
            "cannot reach Redis at {}; is it up? Set REDIS_HOST/REDIS_PORT or REDIS_URL",
            c.redis_url()
        ))
    })?
    .map_err(|e| CliError::Usage(format!("bad Redis URL {}: {e}", c.redis_url())))
}

fn redis_failed(what: &str, e: redis::RedisError) -> CliError {
    CliError::Unavailable(format!("{what} failed: {e}"))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub async fn submit(c: &Common, a: &SubmitArgs) -> Result<String, CliError> {
    check_name(&a.agent_name)?;
    let action = match a.action.as_str() {
        "" => None,
        s => Some(Action::from_action(s).ok_or_else(|| {
            CliError::Usage(format!(
                "unknown --action '{s}'; use update_agent or rollback_agent (or none for a deploy)"
            ))
        })?),
    };
    let upload_type = if action == Some(Action::Update) {
        stream::UPLOAD_UPDATE
    } else {
        stream::UPLOAD_DIRECTORY
    };
    let mut con = redis(c).await?;
    let fields = stream::encode(&stream::JobEntry {
        action,
        agent_name: a.agent_name.clone(),
        agent_path: Some(a.agent_path.clone()),
        base_url: Some(a.base_url.clone()),
        owner_id: Some(a.owner_id.clone()),
        upload_id: Some(a.upload_id.clone()),
        upload_type: Some(upload_type.into()),
        version: Some(a.version.clone()),
        timestamp: Some(format!("{:.6}", unix_now())),
        source: Some("build-agent submit".into()),
        update_strategy: Some(a.update_strategy.clone()).filter(|s| !s.is_empty()),
        cleanup_old: Some(a.cleanup_old.clone()).filter(|s| !s.is_empty()),
        ..stream::JobEntry::default()
    });
    redis::cmd("XADD")
        .arg(&c.stream)
        .arg("*")
        .arg(&fields)
        .query_async::<String>(&mut con)
        .await
        .map_err(|e| redis_failed(&format!("XADD to {}", c.stream), e))
}

/// Wait (at most `secs`) until agent `name`'s status is job `id`'s, completed or failed: the
/// completion's line (`completed in N ms: URL`), or the failure as an error.
pub async fn wait_for_job(c: &Common, name: &str, id: &str, secs: u64) -> Result<String, CliError> {
    let t0 = std::time::Instant::now();
    let field = |v: &[(String, String)], k: &str| {
        v.iter()
            .find(|(f, _)| f == k)
            .map(|(_, x)| x.clone())
            .unwrap_or_default()
    };
    loop {
        let s = status(c, name).await?;
        if field(&s, "stream_id") == id {
            let ms = t0.elapsed().as_millis();
            match field(&s, "status").as_str() {
                "completed" => return Ok(format!("completed in {ms} ms: {}", field(&s, "url"))),
                "failed" => {
                    return Err(CliError::Failed(format!(
                        "job {id} failed after {ms} ms: {}. The build log: build-agent logs {name}",
                        field(&s, "message")
                    )))
                }
                _ => {}
            }
        }
        if t0.elapsed() >= Duration::from_secs(secs) {
            return Err(CliError::Failed(format!(
                "job {id} of agent '{name}' has not finished after {secs} s (is the build agent running? build-agent status {name}, build-agent logs {name})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn status(c: &Common, name: &str) -> Result<Vec<(String, String)>, CliError> {
    let mut con = redis(c).await?;
    let mut v: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(crate::report::status_key(name))
        .query_async(&mut con)
        .await
        .map_err(|e| redis_failed("HGETALL", e))?;
    v.sort();
    Ok(v)
}

pub async fn logs(c: &Common, name: &str, lines: usize) -> Result<Vec<String>, CliError> {
    let mut con = redis(c).await?;
    let v: redis::Value = redis::cmd("XREVRANGE")
        .arg(deploy::buildlog_key(name))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(lines)
        .query_async(&mut con)
        .await
        .map_err(|e| redis_failed("XREVRANGE", e))?;
    let mut out = Vec::new();
    if let redis::Value::Array(items) = v {
        for it in items {
            if let redis::Value::Array(p) = it {
                if let Some(redis::Value::Array(kv)) = p.get(1) {
                    for pair in kv.chunks(2) {
                        if let (
                            Some(redis::Value::BulkString(k)),
                            Some(redis::Value::BulkString(val)),
                        ) = (pair.first(), pair.get(1))
                        {
                            if k == b"line" {
                                out.push(String::from_utf8_lossy(val).into_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// The effective compose for `dir`, as `docker compose config` renders it (nothing is started).
pub async fn plan(
    c: &Common,
    dir: &std::path::Path,
    name: Option<String>,
    owner: &str,
) -> Result<String, CliError> {
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
    let name = name.unwrap_or_else(|| {
        dir.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    check_name(&name).map_err(|e| CliError::Usage(format!("{e} (pass --name)")))?;
    let cfg = Config::new(c, RunDefaults::parse_from(["build-agent"]).run)?;
    let hash = package::content_hash(&dir)?;
    // the package is read where it is (a deploy reads its copy), by the deploy's own code
    let tmp = std::env::temp_dir().join(format!("build-agent-plan-{}", std::process::id()));
    let p = Prepared::read(dir.clone(), tmp.clone(), hash, &name, &cfg)?;
    std::fs::create_dir_all(&tmp)
        .map_err(|e| CliError::Unavailable(format!("cannot create {}: {e}", tmp.display())))?;
    let job = DeployJob {
        stream_id: "plan".into(),
        action: Action::Deploy,
        agent: name.clone(),
        package: dir.clone(),
        owner_id: owner.into(),
        upload_id: String::new(),
        upload_type: String::new(),
        version: String::new(),
        backend_url: None,
        webhook_url: None,
        strategy: Default::default(),
        keep_old: false,
    };
    let result = async {
        let cf = deploy::write_compose_files(&cfg, &job, &p, &p.tag, Slot::Blue)?;
        let mut head: String = cf.notes.iter().map(|n| format!("# {n}\n")).collect();
        head.push_str(&format!(
            "# build: docker build -f {} {}\n",
            p.build.dockerfile.display(),
            p.build.context.display()
        ));
        let (cmd, _) = docker::ComposeCmd::detect("auto")
            .await
            .map_err(|e| CliError::Unavailable(e.to_string()))?;
        // compose's own reading, checked against what was written: the verdict a deploy gets
        let theirs = deploy::read_back(&cmd, &compose::project_name(&name), &cf).await?;
        head.push_str("# compose reads this file as written (`$$` is a literal `$`)\n");
        Ok(head + &serde_yaml_ng::to_string(&theirs).unwrap_or_default())
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Remove the agent's containers, its project's networks and its own network.
pub async fn undeploy(c: &Common, name: &str) -> Result<usize, CliError> {
    check_name(name)?;
    let failed = |e| CliError::from(DeployError::docker("undeploy failed", e));
    let n = docker::undeploy(name).await.map_err(failed)?;
    deploy::network::remove(&c.docker_network, name)
        .await
        .map_err(failed)?;
    Ok(n)
}
