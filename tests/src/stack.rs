//! The standalone stack (compose-templates/docker-compose.standalone.yml) brought up through
//! scripts/local-up.sh with a private project, network, ports and folders, and torn down through
//! scripts/local-down.sh on drop.

use crate::docker::{docker, unique};
use crate::process::free_port;
use nasiko_contract::stream::{self, Action, JobEntry};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const IMAGES: &[&str] = &[
    "registry-sidecar",
    "build-agent",
    "kong-emulator",
    "backend-standin",
    "redis",
];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub struct Stack {
    pub project: String,
    pub network: String,
    /// The platform's network (sorts before `network`, as local-up.sh requires).
    pub platform_network: String,
    pub dir: PathBuf,
    pub env_file: PathBuf,
    pub agents_dir: PathBuf,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub registry_port: u16,
}

impl Stack {
    /// Write a private env file and run `local-up.sh --standalone --no-build`.
    pub fn up() -> Stack {
        Self::up_with(&[])
    }

    /// `up`, with more arguments for local-up.sh (e.g. `--dbless`).
    ///
    /// A port chosen free can be taken before the stack binds it (by a test beside this one), and
    /// then compose fails on it: that start is torn down and tried again with new ports, twice at
    /// most. Any other failure fails the test.
    pub fn up_with(extra: &[&str]) -> Stack {
        for i in IMAGES {
            let img = format!("nasiko/{i}:local");
            assert!(
                docker(&["image", "inspect", &img]).status.success(),
                "image {img} is missing: run scripts/build-images.sh first"
            );
        }
        let mut attempt = 1;
        loop {
            let s = Self::configured();
            let mut args = vec!["--standalone", "--no-build", "--timeout", "120"];
            args.extend_from_slice(extra);
            let out = s.script("local-up.sh", &args);
            if out.status.success() {
                return s;
            }
            let said = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let port_taken = ["port is already allocated", "address already in use"]
                .iter()
                .any(|m| said.contains(m));
            assert!(
                port_taken && attempt < 3,
                "local-up.sh failed (attempt {attempt}):\n{said}"
            );
            eprintln!(
                "a port of stack {} was taken before it bound it; trying new ports",
                s.project
            );
            drop(s);
            attempt += 1;
        }
    }

    /// A stack's private project, folders, ports and env file, not yet started.
    fn configured() -> Stack {
        let project = unique("e2e").replace('-', "");
        let dir = std::env::temp_dir().join(&project);
        let agents_dir = dir.join("agents");
        let work = dir.join("work");
        std::fs::create_dir_all(&agents_dir).expect("agents dir");
        std::fs::create_dir_all(&work).expect("work dir");
        let (proxy_port, admin_port, registry_port) = (free_port(), free_port(), free_port());
        let network = format!("{project}-net");
        let platform_network = format!("{project}-core");
        let example =
            std::fs::read_to_string(repo_root().join("compose-templates/nasiko.env.example"))
                .expect("env example");
        // the gateway's container, which the sidecar joins to every agent network: one per stack
        let mut env = format!("NASIKO_GATEWAY_CONTAINER={project}-kong-gateway\n");
        for line in example.lines() {
            let key = line.split('=').next().unwrap_or("");
            let v = match key {
                "NASIKO_PROJECT" => Some(project.clone()),
                "NASIKO_NETWORK" => Some(network.clone()),
                "NASIKO_PLATFORM_NETWORK" => Some(platform_network.clone()),
                "NASIKO_AGENTS_DIR" => Some(agents_dir.display().to_string()),
                "NASIKO_WORK_DIR" => Some(work.display().to_string()),
                "NASIKO_PORT_KONG" => Some(proxy_port.to_string()),
                "NASIKO_PORT_KONG_ADMIN" => Some(admin_port.to_string()),
                "NASIKO_PORT_SERVICE_REGISTRY" => Some(registry_port.to_string()),
                "REGISTRY_INTERVAL" => Some("5".into()),
                // a run may choose Kong's timing (e.g. its defaults for the eventual figures) and
                // the build agent's concurrency (the burst's figures)
                "NASIKO_KONG_WORKER_CONSISTENCY"
                | "NASIKO_KONG_WORKER_STATE_UPDATE_FREQUENCY"
                | "NASIKO_MAX_CONCURRENT_JOBS" => std::env::var(key).ok(),
                _ => None,
            };
            match v {
                Some(v) => env.push_str(&format!("{key}={v}\n")),
                None => env.push_str(&format!("{}\n", line.replace("=GENERATE", "=test-secret"))),
            }
        }
        let env_file = dir.join("env");
        std::fs::write(&env_file, env).expect("env file");
        Stack {
            project,
            network,
            platform_network,
            dir,
            env_file,
            agents_dir,
            proxy_port,
            admin_port,
            registry_port,
        }
    }

    /// `scripts/deploy-agent.sh examples/hello-agent --name NAME --wait`, the README's command.
    pub fn deploy_hello(&self, name: &str) -> std::process::Output {
        let example = repo_root().join("examples/hello-agent");
        self.script(
            "deploy-agent.sh",
            &[
                example.to_str().expect("utf-8 path"),
                "--name",
                name,
                "--wait",
            ],
        )
    }

    /// `scripts/deploy-agent.sh COPY --name NAME --watch` on a fresh copy of examples/hello-agent
    /// in this stack's folder, its output in `watch-{NAME}.log` there. Returns the watcher and the
    /// copy.
    pub fn watch_hello(&self, name: &str) -> (crate::process::ChildGuard, PathBuf) {
        self.watch_example("hello-agent", name)
    }

    /// `watch_hello` on a copy of `examples/{example}` (its package files, not its README).
    pub fn watch_example(
        &self,
        example: &str,
        name: &str,
    ) -> (crate::process::ChildGuard, PathBuf) {
        let src = self.dir.join(format!("{name}-src"));
        copy_package(&repo_root().join("examples").join(example), &src);
        let log =
            std::fs::File::create(self.dir.join(format!("watch-{name}.log"))).expect("watch log");
        let watch = crate::process::ChildGuard::spawn_keeping_stdout(
            "deploy-agent.sh --watch",
            Command::new(repo_root().join("scripts/deploy-agent.sh"))
                .args([src.to_str().expect("utf-8"), "--name", name, "--watch"])
                .args(["--env-file", self.env_file.to_str().expect("utf-8")])
                .stdout(log),
        );
        (watch, src)
    }

    /// Run one of the scripts with this stack's env file.
    pub fn script(&self, name: &str, args: &[&str]) -> std::process::Output {
        Command::new(repo_root().join("scripts").join(name))
            .args(args)
            .args(["--env-file", self.env_file.to_str().expect("utf-8 path")])
            .env_remove("NASIKO_PROJECT")
            .output()
            .expect("the script runs")
    }

    /// Recreate one service's container as compose does after a change of its configuration:
    /// a new container, with the networks of the stack file only.
    pub fn recreate(&self, service: &str) -> std::process::Output {
        Command::new("docker")
            .args(["compose", "-p", &self.project, "--env-file"])
            .arg(&self.env_file)
            .arg("-f")
            .arg(repo_root().join("compose-templates/docker-compose.standalone.yml"))
            .args(["up", "-d", "--force-recreate", "--no-deps", service])
            .output()
            .expect("docker compose runs")
    }

    /// The container id of a compose service of this stack.
    pub fn container(&self, service: &str) -> String {
        let p = format!("label=com.docker.compose.project={}", self.project);
        let s = format!("label=com.docker.compose.service={service}");
        let o = docker(&["ps", "-aq", "--filter", &p, "--filter", &s]);
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no container for service {service}"))
            .to_string()
    }

    /// `docker exec` into a service; stdout.
    pub fn exec(&self, service: &str, args: &[&str]) -> String {
        let c = self.container(service);
        let mut a = vec!["exec", c.as_str()];
        a.extend_from_slice(args);
        let o = docker(&a);
        assert!(
            o.status.success(),
            "exec {args:?} in {service}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Put a sample package into the stack's agents folder; the path as the backend writes it.
    pub fn add_package(&self, sample: &str, name: &str, version: &str) -> String {
        crate::agents::add_package(&self.agents_dir, sample, name, version, None)
    }

    /// [`add_package`](Self::add_package), asking for `replicas` of the agent's service.
    pub fn add_replicated(&self, sample: &str, name: &str, version: &str, replicas: u8) -> String {
        let path = self.add_package(sample, name, version);
        crate::agents::ask_replicas(&self.agents_dir, name, version, &replicas.to_string());
        path
    }

    /// XADD a job through the stack's own Redis with the fields the Nasiko backend sends
    /// (contracts.md §3); `action` makes it an update or rollback.
    pub fn queue(&self, name: &str, path: &str, version: &str, action: Option<&str>) -> String {
        let action =
            action.map(|a| Action::from_action(a).expect("update_agent or rollback_agent"));
        let upload_type = match action {
            Some(_) => stream::UPLOAD_UPDATE,
            None => stream::UPLOAD_DIRECTORY,
        };
        let fields = stream::encode(&JobEntry {
            action,
            base_url: Some("http://nasiko-backend:8000".into()),
            owner_id: Some("owner-e2e".into()),
            upload_id: Some("up-e2e".into()),
            upload_type: Some(upload_type.into()),
            version: Some(version.into()),
            timestamp: Some("1795000000.0".into()),
            ..JobEntry::deploy(name, path)
        });
        let mut args = vec!["redis-cli", "XADD", stream::KEY, "*"];
        for (k, v) in &fields {
            args.extend([*k, v.as_str()]);
        }
        self.exec("redis", &args).trim().to_string()
    }

    /// A variable's value in this stack's env file ("" when it has none).
    pub fn env_value(&self, key: &str) -> String {
        let text = std::fs::read_to_string(&self.env_file).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    }

    /// One field of the agent's status hash, through the stack's Redis ("" when unset).
    pub fn agent_status(&self, name: &str, field: &str) -> String {
        let key = format!("agent:status:{name}");
        self.exec("redis", &["redis-cli", "HGET", &key, field])
            .trim()
            .to_string()
    }

    /// One A2A `message/send` (id "e2e") to the agent through the gateway; the reply on a 200.
    pub async fn ask(
        &self,
        http: &crate::http::HttpClient,
        name: &str,
    ) -> Option<serde_json::Value> {
        let (s, v) = http
            .json("POST", &self.agent_url(name), Some(&a2a_request("e2e")))
            .await
            .ok()?;
        (s == 200).then_some(v)
    }

    /// Agent `name`'s URL on the gateway.
    pub fn agent_url(&self, name: &str) -> String {
        format!("{}/agents/agent-{name}", self.gateway())
    }

    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }
    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
    pub fn registry(&self) -> String {
        format!("http://127.0.0.1:{}", self.registry_port)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.script("local-down.sh", &["--agents", "--volumes", "--yes"]);
        // agents already undeployed have no container left for --agents to find: clean by name
        let names: Vec<String> = std::fs::read_dir(&self.agents_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        drop(crate::agents::AgentCleanup { agents: names });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An A2A `message/send` saying "hi", with JSON-RPC id `id`.
pub fn a2a_request(id: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "message/send",
        "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}}})
}

/// A package's files, folders included, but its README.
fn copy_package(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("copy dir");
    for entry in std::fs::read_dir(from).expect("the example") {
        let entry = entry.expect("the example");
        let (path, target) = (entry.path(), to.join(entry.file_name()));
        if path.is_dir() {
            copy_package(&path, &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(&path, &target).expect("copy the example");
        }
    }
}
