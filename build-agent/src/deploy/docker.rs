//! The Docker and compose commands the deploy stages run (argument vectors only): compose
//! detection, image existence, build, up, container state, logs, image pruning, undeploy.

use super::DeployError;
use crate::process::{argv, run, CmdError, Output};
use std::time::Duration;
use tokio::sync::mpsc;

const SHORT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeCmd {
    /// `docker compose` (the v2 plugin)
    V2,
    /// `docker-compose` (v1)
    V1,
}

impl ComposeCmd {
    pub fn argv(&self) -> Vec<String> {
        match self {
            ComposeCmd::V2 => argv(&["docker", "compose"]),
            ComposeCmd::V1 => argv(&["docker-compose"]),
        }
    }
    /// Find the compose command this host has (`flavor`: auto, v1, v2).
    pub async fn detect(flavor: &str) -> Result<(ComposeCmd, String), String> {
        let try_one = |c: ComposeCmd| async move {
            let mut a = c.argv();
            a.push("version".into());
            run(&a, Duration::from_secs(20), None)
                .await
                .ok()
                .map(|o| (c, o.stdout.lines().next().unwrap_or("").to_string()))
        };
        let found = match flavor {
            "v2" => try_one(ComposeCmd::V2).await,
            "v1" => try_one(ComposeCmd::V1).await,
            _ => match try_one(ComposeCmd::V2).await {
                Some(x) => Some(x),
                None => try_one(ComposeCmd::V1).await,
            },
        };
        found.ok_or_else(|| "neither `docker compose` (v2 plugin) nor `docker-compose` (v1) works on this host; install one (e.g. apt-get install docker-compose)".to_string())
    }
}

/// Whether the Docker engine answers now (`docker version`, 10 s at most).
pub async fn engine_answers() -> bool {
    run(
        &argv(&["docker", "version", "--format", "{{.Server.Version}}"]),
        Duration::from_secs(10),
        None,
    )
    .await
    .is_ok()
}

pub async fn image_exists(tag: &str) -> bool {
    run(
        &argv(&["docker", "image", "inspect", "--format", "{{.Id}}", tag]),
        SHORT,
        None,
    )
    .await
    .is_ok()
}

pub async fn build(
    dir: &str,
    tag: &str,
    timeout: Duration,
    lines: mpsc::UnboundedSender<String>,
) -> Result<Output, CmdError> {
    // no --label: the legacy builder commits a layer for it (about 2 s on fuse-overlayfs); the
    // repository (nasiko-agent-{name}) names the agent and the tag is the content hash
    let a = vec![
        "docker".into(),
        "build".into(),
        "--pull=false".into(),
        "--force-rm".into(),
        "-t".into(),
        tag.into(),
        dir.into(),
    ];
    run(&a, timeout, Some(lines)).await
}

/// `compose -p P --project-directory D -f … <args>`
pub async fn compose(
    cmd: &ComposeCmd,
    project: &str,
    project_dir: &str,
    files: &[String],
    args: &[&str],
    timeout: Duration,
) -> Result<Output, CmdError> {
    let mut a = cmd.argv();
    a.extend([
        "-p".into(),
        project.into(),
        "--project-directory".into(),
        project_dir.into(),
    ]);
    for f in files {
        a.extend(["-f".into(), f.clone()]);
    }
    a.extend(args.iter().map(|s| s.to_string()));
    run(&a, timeout, None).await
}

/// The label on networks the build agent created for agent packages.
pub const NETWORK_OWNER_LABEL: &str = "nasiko.managed-by=build-agent";

/// Make sure an external network a package names (other than the agents network) exists: create
/// it, labelled as ours, when absent; refuse one that exists and is not ours (it could be the
/// platform's, which agents must not join).
pub async fn ensure_agent_network(name: &str) -> Result<(), DeployError> {
    let inspect = run(
        &argv(&[
            "docker",
            "network",
            "inspect",
            "--format",
            "{{json .Labels}}",
            name,
        ]),
        SHORT,
        None,
    )
    .await;
    let (key, value) = NETWORK_OWNER_LABEL.split_once('=').unwrap_or_default();
    match inspect {
        Ok(o) => {
            let labels: serde_json::Value =
                serde_json::from_str(o.stdout.trim()).unwrap_or_default();
            if labels.get(key).and_then(|v| v.as_str()) == Some(value) {
                Ok(())
            } else {
                Err(DeployError::package(format!("the package joins the existing network '{name}', which the build agent did not create; an agent may join only agents-net and networks of its own (rename the network in the package)")))
            }
        }
        Err(_) => run(
            &argv(&[
                "docker",
                "network",
                "create",
                "--label",
                NETWORK_OWNER_LABEL,
                name,
            ]),
            SHORT,
            None,
        )
        .await
        .map(drop)
        .or_else(|e| {
            // created meanwhile by a parallel deploy of another agent: fine if it is ours now
            if e.to_string().contains("already exists") {
                Ok(())
            } else {
                Err(DeployError::docker(
                    &format!("cannot create the package's network '{name}'"),
                    e,
                ))
            }
        }),
    }
}

/// State of a container: (status, health or "", image, id, restart count). None when absent.
pub async fn container_state(name: &str) -> Option<(String, String, String, String, u64)> {
    let o = run(
        &argv(&["docker", "inspect", "--type", "container", name]),
        SHORT,
        None,
    )
    .await
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&o.stdout).ok()?;
    let c = v.get(0)?;
    let s = |p: &str| {
        c.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    Some((
        s("/State/Status"),
        s("/State/Health/Status"),
        s("/Config/Image"),
        s("/Id"),
        c["RestartCount"].as_u64().unwrap_or(0),
    ))
}

/// The value of `label` on container `name` when it is running; None otherwise.
pub async fn label_of_running(name: &str, label: &str) -> Option<String> {
    let format = format!("{{{{.State.Running}}}} {{{{index .Config.Labels \"{label}\"}}}}");
    let o = run(
        &argv(&[
            "docker",
            "inspect",
            "--type",
            "container",
            "--format",
            &format,
            name,
        ]),
        SHORT,
        None,
    )
    .await
    .ok()?;
    let out = o.stdout.trim().to_string();
    let value = out.strip_prefix("true ")?.trim();
    (!value.is_empty() && value != "<no value>").then(|| value.to_string())
}

/// Remove the update stand-by containers whose `label` is `value` (a job's id, or a consumer's
/// name); returns how many went.
pub async fn remove_standbys(label: &str, value: &str) -> usize {
    let filter = format!("label={label}={value}");
    let Ok(o) = run(
        &argv(&["docker", "ps", "-aq", "--no-trunc", "--filter", &filter]),
        SHORT,
        None,
    )
    .await
    else {
        return 0;
    };
    let ids: Vec<String> = o.stdout.split_whitespace().map(String::from).collect();
    if ids.is_empty() {
        return 0;
    }
    let mut a = argv(&["docker", "rm", "-f", "-v"]);
    a.extend(ids.iter().cloned());
    match run(&a, SHORT, None).await {
        Ok(_) => ids.len(),
        Err(_) => 0,
    }
}

pub async fn remove_container(name: &str) -> Result<(), CmdError> {
    run(&argv(&["docker", "rm", "-f", "-v", name]), SHORT, None)
        .await
        .map(drop)
}

pub async fn logs_tail(name: &str, n: usize) -> String {
    match run(
        &argv(&["docker", "logs", "--tail", &n.to_string(), name]),
        SHORT,
        None,
    )
    .await
    {
        Ok(o) => o.tail(n),
        Err(e) => e.to_string(),
    }
}

/// Remove images of `agent` beyond the newest `keep`, never `in_use`; scoped by repository.
pub async fn prune_images(agent: &str, keep: usize, in_use: &str) -> Vec<String> {
    let label = format!("reference={}", super::image_repo(agent));
    let Ok(o) = run(
        &argv(&[
            "docker",
            "images",
            "--filter",
            &label,
            "--format",
            "{{.CreatedAt}}|{{.Repository}}:{{.Tag}}",
        ]),
        SHORT,
        None,
    )
    .await
    else {
        return vec![];
    };
    let mut rows: Vec<(String, String)> = o
        .stdout
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    let mut removed = Vec::new();
    for (_, tag) in rows.into_iter().skip(keep) {
        if tag == in_use || tag.ends_with(":<none>") {
            continue;
        }
        if run(&argv(&["docker", "rmi", &tag]), SHORT, None)
            .await
            .is_ok()
        {
            removed.push(tag);
        }
    }
    removed
}

/// Remove every container of the agent's compose project, and the fixed-name container.
pub async fn undeploy(project: &str, container: &str) -> Result<usize, CmdError> {
    let label = format!("label=com.docker.compose.project={project}");
    let o = run(
        &argv(&["docker", "ps", "-aq", "--no-trunc", "--filter", &label]),
        SHORT,
        None,
    )
    .await?;
    let mut ids: Vec<String> = o.stdout.split_whitespace().map(String::from).collect();
    for name in [container.to_string(), format!("{container}-handover")] {
        if let Some((_, _, _, id, _)) = container_state(&name).await {
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut a = argv(&["docker", "rm", "-f", "-v"]);
    a.extend(ids.iter().cloned());
    run(&a, SHORT, None).await?;
    Ok(ids.len())
}
