//! The up stage: the new version started in the slot `slots::choose` picks and waited for. An
//! update starts beside the running version (blue/green): the old one serves until the new one
//! is ready and the sidecar has moved the traffic, then goes (or, with `cleanup_old=False`,
//! stops). In place (a first deploy, `recreate`, a package that cannot run twice), a failed start
//! puts the previous image back.

use super::slots::{self, Now, Way};
use super::{
    docker, make_bind_sources, network, read_back, render_compose, write_compose_files,
    ComposeFiles, DeployError, Deployed, Deployer, Prepared,
};
use crate::job::DeployJob;
use nasiko_contract::Slot;
use std::time::Duration;
use tokio::time::Instant;

/// How long a replaced version has to finish what it serves when it goes (it gets no new
/// request once drained).
const RETIRE_GRACE: Duration = Duration::from_secs(3);

/// The compose project label.
const PROJECT_LABEL: &str = "com.docker.compose.project";

impl Deployer {
    /// Start the prepared version and wait for it; see the module's comment for how.
    pub async fn up(&self, job: &DeployJob, p: &Prepared) -> Result<Deployed, DeployError> {
        let agent = &job.agent;
        let mut now: Now = docker::agent_slots(agent).await;
        if drop_older_naming(agent, now[Slot::Blue as usize].as_ref()).await {
            now[Slot::Blue as usize] = None;
        }
        let (_, hash) = render_compose(&self.cfg, job, p, &p.tag, Slot::Blue)?;
        let way = slots::choose(&now, &hash, job.strategy, slots::doubles(&p.package));
        let (slot, started) = match way {
            Way::Unchanged(slot) => {
                self.note(
                    job,
                    "the running container has this exact configuration; compose recreates nothing",
                )
                .await;
                (slot, self.start_in(job, p, slot, &p.tag, false).await)
            }
            Way::InPlace { slot, why } => {
                self.note(job, why).await;
                let previous = now[slot as usize]
                    .as_ref()
                    .map(|c| c.image.clone())
                    .filter(|img| *img != p.tag);
                let started = match (self.start_in(job, p, slot, &p.tag, false).await, previous) {
                    (Err(e), Some(prev)) => Err(self.put_back(job, p, slot, &prev, e).await),
                    (r, _) => r,
                };
                (slot, started)
            }
            Way::BlueGreen { live, new, rolling } => {
                let msg = format!(
                    "{}: the new version starts in the {} slot beside the {} one, which serves until it is ready{}",
                    if rolling { "rolling" } else { "blue/green" },
                    new.as_str(),
                    live.as_str(),
                    if rolling { ", a replica at a time" } else { "" }
                );
                self.note(job, &msg).await;
                let _ = docker::remove_project(&new.project(agent)).await;
                match self.start_in(job, p, new, &p.tag, rolling).await {
                    Ok(id) => (new, Ok(id)),
                    Err(e) => {
                        let _ = docker::remove_project(&new.project(agent)).await;
                        let serving = live.container(agent);
                        return Err(e.explain(|m| {
                            format!("{m}; the version before it ({serving}) keeps serving")
                        }));
                    }
                }
            }
        };
        let id = started?;
        self.retire(job, slot.other()).await;
        Ok(Deployed {
            container_id: id,
            image: p.tag.clone(),
        })
    }

    async fn note(&self, job: &DeployJob, line: &str) {
        self.log_line(&job.agent, &job.stream_id, &format!("=== {line}"))
            .await;
    }

    /// The agent's other slot, once the one in `slot.other()` is up: a running version there
    /// gets HANDOVER_SECS more (the sidecar moves the traffic to the new one when it is ready)
    /// and then goes — removed, or stopped with `cleanup_old=False`. A stopped one (kept by an
    /// earlier update) goes unless this job keeps old versions too.
    async fn retire(&self, job: &DeployJob, slot: Slot) {
        let agent = &job.agent;
        let Some(c) = docker::container_state(&slot.container(agent)).await else {
            return;
        };
        let project = slot.project(agent);
        if c.running() {
            tokio::time::sleep(self.cfg.handover_wait).await;
            if let Err(e) = docker::stop_project(&project, RETIRE_GRACE).await {
                tracing::warn!("could not stop the replaced version in {project}: {e}");
            }
        }
        let line = if job.keep_old {
            format!(
                "the replaced version is kept, stopped, in the {} slot (cleanup_old=False)",
                slot.as_str()
            )
        } else {
            if let Err(e) = docker::remove_project(&project).await {
                tracing::warn!("could not remove the replaced version in {project}: {e}");
            }
            format!(
                "the replaced version in the {} slot is removed",
                slot.as_str()
            )
        };
        self.note(job, &line).await;
    }

    /// Write the files for `image` in `slot`, have compose read them back, and start it there
    /// (`one_at_a_time`: a replica at a time).
    async fn start_in(
        &self,
        job: &DeployJob,
        p: &Prepared,
        slot: Slot,
        image: &str,
        one_at_a_time: bool,
    ) -> Result<String, DeployError> {
        let project = slot.project(&job.agent);
        let cf = write_compose_files(&self.cfg, job, p, image, slot)?;
        if image == p.tag {
            for note in &cf.notes {
                self.note(job, note).await;
            }
        }
        read_back(&self.compose, &project, &cf).await?;
        make_bind_sources(p)?;
        // Docker 20.10's builder gives identical builds one image, so removing another agent's
        // copy (or a prune) can take ours between its build and here: build it again, or compose
        // would try to pull it from a registry.
        if image == p.tag && !docker::image_exists(&p.tag).await {
            let gone = format!("{} is gone since its build; building it again", p.tag);
            self.note(job, &gone).await;
            self.build(job, p).await?;
        }
        let network =
            network::ensure(&self.cfg.agent_networks, &self.cfg.network, &job.agent).await?;
        let mut started = self.start(&project, &cf, &job.agent, one_at_a_time).await;
        if network_went_away(&started, &network) {
            // A worker that died while removing an orphaned network (remove_orphans) may have
            // left its removal in flight at the engine: it lands after our `ensure`. Make the
            // network again and start once more.
            tracing::warn!(%network, "the agent's network was removed under this deploy; making it again");
            network::ensure(&self.cfg.agent_networks, &self.cfg.network, &job.agent).await?;
            started = self.start(&project, &cf, &job.agent, one_at_a_time).await;
        }
        started
    }

    /// The new version failed to start in place (`e`): start image `prev` again, the version
    /// that served before, and say in the error whether it serves.
    async fn put_back(
        &self,
        job: &DeployJob,
        p: &Prepared,
        slot: Slot,
        prev: &str,
        e: DeployError,
    ) -> DeployError {
        tracing::warn!("new version failed ({e}); putting {prev} back");
        match self.start_in(job, p, slot, prev, false).await {
            Ok(_) => e.explain(|m| {
                format!("{m}; the previous version ({prev}) was put back and is serving")
            }),
            Err(e2) => e.explain(|m| {
                format!("{m}; putting the previous version ({prev}) back also failed: {e2}")
            }),
        }
    }

    /// `compose up` the file, then wait for each of the agent's containers (its replicas); the
    /// first one's id. `one_at_a_time`: each replica is started alone and waited for, and gets
    /// HANDOVER_SECS to take traffic (the sidecar drains an old replica for it) before the next.
    async fn start(
        &self,
        project: &str,
        cf: &ComposeFiles,
        agent: &str,
        one_at_a_time: bool,
    ) -> Result<String, DeployError> {
        let entry = super::compose::container_name(agent);
        let replicas = super::replica_keys(&cf.doc, &entry);
        let steps: Vec<Vec<String>> = if one_at_a_time && replicas.len() > 1 {
            replicas.iter().map(|k| vec![k.clone()]).collect()
        } else {
            vec![vec![]]
        };
        let mut first = None;
        for (n, services) in steps.iter().enumerate() {
            if n > 0 {
                tokio::time::sleep(self.cfg.handover_wait).await;
            }
            let mut args = vec!["up", "-d", "--no-build", "--timeout", "3"];
            if services.is_empty() {
                args.push("--remove-orphans");
            } else {
                args.push("--no-deps");
                args.extend(services.iter().map(String::as_str));
            }
            docker::compose(&self.compose, project, cf, &args, Duration::from_secs(300))
                .await
                .map_err(|e| DeployError::docker("docker compose up failed", e))?;
            let waited = if services.is_empty() {
                &replicas
            } else {
                services
            };
            for k in waited {
                let name = cf.doc["services"][k]["container_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let id = self.wait_running(&name).await?;
                first.get_or_insert(id);
            }
        }
        first.ok_or_else(|| {
            DeployError::machine(format!("the compose file of {agent} has no agent service"))
        })
    }

    /// Running (and healthy, with a health check) and stable for a second; else why not.
    async fn wait_running(&self, container: &str) -> Result<String, DeployError> {
        let deadline = Instant::now() + self.cfg.start_timeout;
        let mut stable_since: Option<(Instant, u64)> = None;
        loop {
            let Some(c) = docker::container_state(container).await else {
                return Err(DeployError::package(format!(
                    "container {container} was not created"
                )));
            };
            let crashed = matches!(c.status.as_str(), "exited" | "dead" | "restarting")
                || stable_since.is_some_and(|(_, r)| c.restarts > r);
            if crashed || c.health == "unhealthy" {
                let tail = docker::logs_tail(container, 20).await;
                let why = if c.health == "unhealthy" {
                    "is unhealthy".to_string()
                } else {
                    format!("exited at start ({})", c.status)
                };
                return Err(DeployError::package(format!(
                    "container {container} {why}; last log lines:\n{tail}"
                )));
            }
            if c.running() && (c.health.is_empty() || c.health == "healthy") {
                match stable_since {
                    Some((t, _)) if t.elapsed() >= Duration::from_secs(1) => return Ok(c.id),
                    Some(_) => {}
                    None => stable_since = Some((Instant::now(), c.restarts)),
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

/// An agent deployed under the project naming of before (names with '.' or '_'): its
/// containers go, or compose could not take the container's name. `blue` is its blue container
/// as inspected; true when it went.
async fn drop_older_naming(agent: &str, blue: Option<&docker::Container>) -> bool {
    let Some(old) = blue.and_then(|c| c.label(PROJECT_LABEL)) else {
        return false;
    };
    if old == Slot::Blue.project(agent) {
        return false;
    }
    let _ = docker::remove_project(old).await;
    let _ = docker::remove_container(&Slot::Blue.container(agent)).await;
    true
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
