//! The Docker and compose commands the deploy stages run (argument vectors only): compose
//! detection, image existence, build, up, container state, logs, image pruning, undeploy.

use crate::process::{argv, run, run_with, CmdError, Output};
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
    pub async fn detect(flavor: &str) -> Result<(ComposeCmd, String), NoCompose> {
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
        found.ok_or(NoCompose)
    }
}

/// Neither compose flavour answers on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoCompose;

impl std::fmt::Display for NoCompose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("neither `docker compose` (v2 plugin) nor `docker-compose` (v1) works on this host; install one (e.g. apt-get install docker-compose)")
    }
}

impl std::error::Error for NoCompose {}

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

/// `docker build` of the agent's own service as the package asks: its context, its Dockerfile,
/// its build args and target (checked by `read_package`).
/// Its `RUN` steps run on `network` (see [`super::network::ensure_builds`]), which only the
/// legacy builder can do (BuildKit knows the default bridge, `host` and `none` alone): it is
/// chosen whatever DOCKER_BUILDKIT the build agent was given, and it is the builder whose reading
/// of a Dockerfile the policy checks.
pub async fn build(
    b: &super::model::Build,
    tag: &str,
    network: &str,
    timeout: Duration,
    lines: mpsc::UnboundedSender<String>,
) -> Result<Output, CmdError> {
    // no --label: the legacy builder commits a layer for it (about 2 s on fuse-overlayfs); the
    // repository (nasiko-agent-{name}) names the agent and the tag is the content hash
    let mut a = argv(&["docker", "build", "--pull=false", "--force-rm", "-t", tag]);
    a.extend(["--network".into(), network.to_string()]);
    a.extend(["-f".into(), b.dockerfile.display().to_string()]);
    for (k, v) in &b.args {
        a.extend(["--build-arg".into(), format!("{k}={v}")]);
    }
    if let Some(t) = &b.target {
        a.extend(["--target".into(), t.clone()]);
    }
    a.push(b.context.display().to_string());
    run_with(&a, &[("DOCKER_BUILDKIT", "0")], timeout, Some(lines)).await
}

/// `compose -p P --project-directory D --env-file E -f F <args>`: compose reads the one file we
/// wrote, from a folder holding nothing else, with an empty env file.
pub async fn compose(
    cmd: &ComposeCmd,
    project: &str,
    cf: &super::ComposeFiles,
    args: &[&str],
    timeout: Duration,
) -> Result<Output, CmdError> {
    let mut a = cmd.argv();
    a.extend(
        [
            "-p",
            project,
            "--project-directory",
            &cf.project_dir,
            "--env-file",
            &cf.env_file,
            "-f",
            &cf.file,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a.extend(args.iter().map(|s| s.to_string()));
    run(&a, timeout, None).await
}

/// The label on networks the build agent makes for agent packages.
pub const NETWORK_OWNER_LABEL: &str = "nasiko.managed-by=build-agent";

/// What the deploy stages read of a container (`docker inspect`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    pub id: String,
    /// `created`, `running`, `exited`, …
    pub status: String,
    /// The health check's status; empty without one.
    pub health: String,
    /// The image as configured (our tag).
    pub image: String,
    pub restarts: u64,
    /// When it was created (RFC 3339 Nano).
    pub created: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Container {
    pub fn running(&self) -> bool {
        self.status == "running"
    }
    /// The value of `label`; None when absent or empty.
    pub fn label(&self, label: &str) -> Option<&str> {
        self.labels
            .get(label)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Container `name` as Docker has it now; None when absent (or Docker does not answer).
pub async fn container_state(name: &str) -> Option<Container> {
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
    let labels = c
        .pointer("/Config/Labels")
        .and_then(|l| l.as_object())
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(Container {
        id: s("/Id"),
        status: s("/State/Status"),
        health: s("/State/Health/Status"),
        image: s("/Config/Image"),
        restarts: c["RestartCount"].as_u64().unwrap_or(0),
        created: s("/Created"),
        labels,
    })
}

/// Agent `agent`'s deploy slots as Docker has them now: the entry container of each, blue then
/// green (`Slot as usize`).
pub async fn agent_slots(agent: &str) -> [Option<Container>; 2] {
    use nasiko_contract::Slot;
    [
        container_state(&Slot::Blue.container(agent)).await,
        container_state(&Slot::Green.container(agent)).await,
    ]
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

/// The tag that names an agent's image by version (`version-{version}`): the version's
/// characters outside Docker's tag alphabet become `_`, at most 128 characters in all.
pub fn version_tag(version: &str) -> String {
    let clean: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tag = format!("version-{clean}");
    tag.chars().take(128).collect()
}

/// Tag `image` as `agent`'s image of `version`, beside its content tag.
pub async fn tag_version(agent: &str, image: &str, version: &str) -> Result<String, CmdError> {
    let tag = format!("{}:{}", super::image_repo(agent), version_tag(version));
    run(&argv(&["docker", "tag", image, &tag]), SHORT, None).await?;
    Ok(tag)
}

/// Remove the images of `agent` beyond the newest `keep` (an image and every tag it has: its
/// content and its versions), never `in_use`'s; scoped by repository.
pub async fn prune_images(agent: &str, keep: usize, in_use: &str) -> Vec<String> {
    let label = format!("reference={}", super::image_repo(agent));
    let Ok(o) = run(
        &argv(&[
            "docker",
            "images",
            "--filter",
            &label,
            "--format",
            "{{.ID}}|{{.CreatedAt}}|{{.Repository}}:{{.Tag}}",
        ]),
        SHORT,
        None,
    )
    .await
    else {
        return vec![];
    };
    let mut removed = Vec::new();
    for tag in beyond_kept(&o.stdout, keep, in_use) {
        if run(&argv(&["docker", "rmi", &tag]), SHORT, None)
            .await
            .is_ok()
        {
            removed.push(tag);
        }
    }
    removed
}

/// Of `docker images` rows (`ID|CreatedAt|repo:tag`), the tags of the images past the newest
/// `keep`, except `in_use`'s image.
fn beyond_kept(rows: &str, keep: usize, in_use: &str) -> Vec<String> {
    let rows: Vec<(&str, &str, &str)> = rows
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '|');
            Some((f.next()?, f.next()?, f.next()?))
        })
        .collect();
    let serving = rows.iter().find(|r| r.2 == in_use).map(|r| r.0);
    let mut images: Vec<(&str, &str)> = rows.iter().map(|r| (r.0, r.1)).collect();
    images.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    images.dedup_by_key(|i| i.0);
    let kept: Vec<&str> = images.iter().take(keep).map(|i| i.0).collect();
    rows.iter()
        .filter(|r| !kept.contains(&r.0) && Some(r.0) != serving && !r.2.ends_with(":<none>"))
        .map(|r| r.2.to_string())
        .collect()
}

/// Remove every container of compose project `project`, running or not, and the networks it
/// made; returns how many containers went. Named volumes stay (the agent's data).
pub async fn remove_project(project: &str) -> Result<usize, CmdError> {
    let filter = format!("label=com.docker.compose.project={project}");
    let n = remove_labelled(&filter).await?;
    if let Ok(o) = run(
        &argv(&["docker", "network", "ls", "-q", "--filter", &filter]),
        SHORT,
        None,
    )
    .await
    {
        for net in o.stdout.split_whitespace() {
            let _ = run(&argv(&["docker", "network", "rm", net]), SHORT, None).await;
        }
    }
    Ok(n)
}

/// Stop every running container of compose project `project`, giving each `grace` to finish
/// what it serves; they stay, stopped.
pub async fn stop_project(project: &str, grace: Duration) -> Result<(), CmdError> {
    let filter = format!("label=com.docker.compose.project={project}");
    let ids = ids(&["docker", "ps", "-q", "--no-trunc", "--filter", &filter]).await?;
    if ids.is_empty() {
        return Ok(());
    }
    let mut a = argv(&["docker", "stop", "-t", &grace.as_secs().to_string()]);
    a.extend(ids);
    run(&a, SHORT + grace, None).await.map(drop)
}

async fn ids(args: &[&str]) -> Result<Vec<String>, CmdError> {
    let o = run(&argv(args), SHORT, None).await?;
    Ok(o.stdout.split_whitespace().map(String::from).collect())
}

/// `docker rm -f -v` every container `filter` (a `docker ps` filter) matches; how many went.
async fn remove_labelled(filter: &str) -> Result<usize, CmdError> {
    let ids = ids(&["docker", "ps", "-aq", "--no-trunc", "--filter", filter]).await?;
    if !ids.is_empty() {
        let mut a = argv(&["docker", "rm", "-f", "-v"]);
        a.extend(ids.iter().cloned());
        run(&a, SHORT, None).await?;
    }
    Ok(ids.len())
}

/// Remove every container of the agent — both slots' compose projects and their fixed-name
/// containers, and any labelled with its name (a project of an older naming) — and the
/// projects' networks. Named volumes stay (the agent's data).
pub async fn undeploy(agent: &str) -> Result<usize, CmdError> {
    let mut n = 0;
    for slot in nasiko_contract::Slot::BOTH {
        n += remove_project(&slot.project(agent)).await?;
        if container_state(&slot.container(agent)).await.is_some() {
            n += usize::from(remove_container(&slot.container(agent)).await.is_ok());
        }
    }
    n += remove_labelled(&format!("label={}={agent}", nasiko_contract::labels::NAME)).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_kept_or_removed_with_all_its_tags_newest_first_and_the_serving_one_kept() {
        let rows = "\
a1|2026-12-05 10:00:00 +0000 UTC|nasiko-agent-x:aaa
a1|2026-12-05 10:00:00 +0000 UTC|nasiko-agent-x:version-v1
b2|2026-12-05 11:00:00 +0000 UTC|nasiko-agent-x:bbb
b2|2026-12-05 11:00:00 +0000 UTC|nasiko-agent-x:version-v2
c3|2026-12-05 12:00:00 +0000 UTC|nasiko-agent-x:ccc
c3|2026-12-05 12:00:00 +0000 UTC|nasiko-agent-x:version-v3
d4|2026-12-05 09:00:00 +0000 UTC|nasiko-agent-x:<none>
";
        assert_eq!(
            beyond_kept(rows, 2, "nasiko-agent-x:ccc"),
            ["nasiko-agent-x:aaa", "nasiko-agent-x:version-v1"]
        );
        // a rollback to v1 serves the oldest image: it stays, the next oldest goes
        assert_eq!(
            beyond_kept(rows, 2, "nasiko-agent-x:aaa"),
            Vec::<String>::new(),
            "v1 serves, v2 and v3 are the newest two"
        );
        assert_eq!(
            beyond_kept(rows, 1, "nasiko-agent-x:version-v1"),
            ["nasiko-agent-x:bbb", "nasiko-agent-x:version-v2"]
        );
        assert!(beyond_kept(rows, 3, "nasiko-agent-x:ccc").is_empty());
    }

    #[test]
    fn a_version_tag_is_in_dockers_alphabet_and_length() {
        assert_eq!(version_tag("v1.0.0"), "version-v1.0.0");
        assert_eq!(version_tag("v1+build/7 x"), "version-v1_build_7_x");
        assert_eq!(version_tag(&"9".repeat(300)).len(), 128);
    }
}
