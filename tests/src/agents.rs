//! Sample agent packages (tests/agents/) materialized into a temporary agents root, and a guard
//! that removes everything an agent's deployment created (containers, networks, volumes, images).

use crate::docker::docker;
use std::path::{Path, PathBuf};

/// Copy `sample` to `{root}/{agent}/{version}` with placeholders filled; returns the path as the
/// backend would write it (`/app/agents/{agent}/{version}`).
pub fn add_package(
    root: &Path,
    sample: &str,
    agent: &str,
    version: &str,
    port: Option<u16>,
) -> String {
    let src = samples_dir().join(sample);
    let dest = root.join(agent).join(version);
    std::fs::create_dir_all(&dest).expect("package dir");
    for e in std::fs::read_dir(&src).expect("sample exists").flatten() {
        let text = std::fs::read_to_string(e.path()).expect("sample files are text");
        let text = text
            .replace("__AGENT__", agent)
            .replace("__VERSION__", version)
            .replace("__PORT__", &port.unwrap_or(0).to_string());
        std::fs::write(dest.join(e.file_name()), text).expect("write package file");
    }
    let dockerfile = std::fs::read_to_string(dest.join("Dockerfile")).unwrap_or_default();
    // the samples build FROM the test base image: a test run alone has it too
    crate::docker::ensure_busybox_image();
    if dockerfile.contains("agent.sh") {
        std::fs::copy(samples_dir().join("common/agent.sh"), dest.join("agent.sh"))
            .expect("agent.sh");
    }
    format!("/app/agents/{agent}/{version}")
}

/// Have the package `agent`/`version` under `root` (a compose sample) ask for `replicas` of its
/// agent's service (`deploy.replicas`).
pub fn ask_replicas(root: &Path, agent: &str, version: &str, replicas: &str) {
    let f = root.join(agent).join(version).join("docker-compose.yml");
    let text = std::fs::read_to_string(&f).expect("a compose sample");
    let asked = format!("    build: .\n    deploy:\n      replicas: {replicas}\n");
    assert!(
        text.contains("    build: .\n"),
        "{} has no build",
        f.display()
    );
    std::fs::write(&f, text.replacen("    build: .\n", &asked, 1)).expect("write the compose file");
}

/// The hostile corpus (tests/agents/hostile/): every package's folder name, with the words its
/// refusal must have (its `refused-because`), sorted.
pub fn hostile_corpus() -> Vec<(String, String)> {
    let dir = samples_dir().join("hostile");
    let mut cases: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("tests/agents/hostile")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let needle = std::fs::read_to_string(e.path().join("refused-because"))
                .unwrap_or_else(|_| panic!("{name} has no refused-because"));
            (name, needle.trim().to_string())
        })
        .collect();
    cases.sort();
    cases
}

pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents")
}

/// A temporary agents root (the backend's uploads folder), removed on drop.
pub struct AgentsRoot {
    pub path: PathBuf,
}

impl AgentsRoot {
    pub fn new() -> AgentsRoot {
        let path = std::env::temp_dir().join(crate::docker::unique("agents-root"));
        std::fs::create_dir_all(&path).expect("agents root");
        AgentsRoot { path }
    }

    /// Copy `sample` into this root; see [`add_package`].
    pub fn add(&self, sample: &str, agent: &str, version: &str, port: Option<u16>) -> String {
        add_package(&self.path, sample, agent, version, port)
    }

    /// [`add`](Self::add) a sample whose build takes `secs` seconds longer (a build to kill or
    /// hang): its `RUN chmod` step also sleeps.
    pub fn add_slow(&self, sample: &str, agent: &str, version: &str, secs: u32) -> String {
        self.add_steps(sample, agent, version, &format!("&& sleep {secs}"))
    }

    /// Add `sample` with `then` written after its `RUN chmod +x /agent.sh` step: more of that
    /// command (`&& sleep 5`), or steps of their own (`\nRUN …`).
    pub fn add_steps(&self, sample: &str, agent: &str, version: &str, then: &str) -> String {
        let path = self.add(sample, agent, version, None);
        let df = self.path.join(agent).join(version).join("Dockerfile");
        let text = std::fs::read_to_string(&df).expect("the sample's Dockerfile");
        let step = "RUN chmod +x /agent.sh";
        assert!(text.contains(step), "{sample} has no RUN step");
        std::fs::write(&df, text.replace(step, &format!("{step} {then}")))
            .expect("write the Dockerfile");
        path
    }
}

impl Default for AgentsRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AgentsRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes an agent's containers, compose networks and volumes, and images, on drop.
pub struct AgentCleanup {
    pub agents: Vec<String>,
}

impl AgentCleanup {
    pub fn new(agents: &[&str]) -> AgentCleanup {
        AgentCleanup {
            agents: agents.iter().map(|s| s.to_string()).collect(),
        }
    }
}

fn ids(args: &[&str]) -> Vec<String> {
    String::from_utf8_lossy(&docker(args).stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

impl Drop for AgentCleanup {
    fn drop(&mut self) {
        for a in &self.agents {
            let project = format!(
                "label=com.docker.compose.project={}",
                nasiko_contract::compose_project(a)
            );
            let mut c = ids(&["ps", "-aq", "--filter", &project]);
            c.extend(ids(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=nasiko.name={a}"),
            ]));
            c.extend(ids(&[
                "ps",
                "-aq",
                "--filter",
                &format!("name=^agent-{a}$"),
            ]));
            if !c.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(c.iter().map(String::as_str));
                docker(&args);
            }
            let green = format!(
                "label=com.docker.compose.project={}",
                nasiko_contract::Slot::Green.project(a)
            );
            for filter in [&project, &green] {
                for n in ids(&["network", "ls", "-q", "--filter", filter]) {
                    docker(&["network", "rm", &n]);
                }
            }
            // the agent's own network, with whoever the test or a sidecar joined to it
            let own = format!("label=nasiko.agent-network={a}");
            for n in ids(&["network", "ls", "-q", "--filter", &own]) {
                crate::docker::remove_network(&n);
            }
            // networks the build agent made for the package (named after the agent in samples)
            for n in ids(&[
                "network",
                "ls",
                "-q",
                "--filter",
                "label=nasiko.managed-by=build-agent",
                "--filter",
                &format!("name={a}"),
            ]) {
                docker(&["network", "rm", &n]);
            }
            for v in ids(&["volume", "ls", "-q", "--filter", &project]) {
                docker(&["volume", "rm", "-f", &v]);
            }
            // by tag, not by id: identical builds of other agents share an image id
            let tags = ids(&[
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "--filter",
                &format!("reference=nasiko-agent-{a}"),
            ]);
            if !tags.is_empty() {
                let mut args = vec!["rmi"];
                args.extend(tags.iter().map(String::as_str));
                docker(&args);
            }
        }
    }
}
