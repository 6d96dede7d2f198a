//! Real-Docker helpers for tests: a tiny busybox image made locally (no registry here),
//! per-test networks and containers that are removed on drop, even when the test panics.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub const BUSYBOX_IMAGE: &str = "nasiko-test-busybox:1";
/// Label on everything a test creates, so cleanup can find it.
pub const TEST_LABEL: &str = "nasiko.test-run";

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// Run docker and return trimmed stdout; panics with stderr on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Build (once per machine) a busybox image from the host's busybox-static: `docker import` of a
/// root with /bin/busybox and its applet links.
pub fn ensure_busybox_image() -> &'static str {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if docker(&["image", "inspect", BUSYBOX_IMAGE])
        .status
        .success()
    {
        return BUSYBOX_IMAGE;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox-static is installed (apt-get install -y busybox-static)");
    let dir = std::env::temp_dir().join(format!("nasiko-busybox-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["bin", "tmp", "www", "etc"] {
        std::fs::create_dir_all(dir.join(d)).expect("temp dir");
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    let st = Command::new(dir.join("bin/busybox"))
        .args([
            "--install",
            "-s",
            dir.join("bin").to_str().expect("utf-8 path"),
        ])
        .status()
        .expect("busybox --install");
    assert!(st.success());
    // busybox --install -s links to the absolute path it was run from: relink to /bin/busybox
    for e in std::fs::read_dir(dir.join("bin"))
        .expect("read bin")
        .flatten()
    {
        if e.file_name() != "busybox" {
            let _ = std::fs::remove_file(e.path());
            std::os::unix::fs::symlink("/bin/busybox", e.path()).expect("symlink");
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
    let cmd = format!(
        "tar -C {} -c . | docker import -c 'ENV PATH=/bin' -c 'CMD [\"/bin/sh\"]' - {BUSYBOX_IMAGE}",
        dir.display()
    );
    let o = Command::new("sh").args(["-c", &cmd]).output().expect("sh");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        o.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    BUSYBOX_IMAGE
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Docker network and every container started through it; all removed on drop.
pub struct TestNet {
    pub name: String,
    pub run: String,
}

impl TestNet {
    pub fn new() -> TestNet {
        let name = unique("nasiko-test-net");
        let run = name.clone();
        docker_ok(&[
            "network",
            "create",
            "--label",
            &format!("{TEST_LABEL}={run}"),
            &name,
        ]);
        TestNet { name, run }
    }

    /// `docker run -d` with the run label and the given extra args, image and command.
    pub fn run(&self, container: &str, extra: &[&str], cmd: &[&str]) -> String {
        self.run_image(container, extra, ensure_busybox_image(), cmd)
    }

    /// `run` with another image.
    pub fn run_image(&self, container: &str, extra: &[&str], image: &str, cmd: &[&str]) -> String {
        let label = format!("{TEST_LABEL}={}", self.run);
        let mut args = vec!["run", "-d", "--name", container, "--label", &label];
        args.extend_from_slice(extra);
        args.push(image);
        args.extend_from_slice(cmd);
        docker_ok(&args)
    }

    /// A replica of agent `name` in `container`, from `image`: it answers `GET /id` with its
    /// container name, so a test sees which replica served a request.
    pub fn replica(
        &self,
        container: &str,
        name: &str,
        image: &str,
        extra_labels: &[(&str, &str)],
    ) -> String {
        self.replica_serving(container, name, image, extra_labels, "-p 5000", false)
    }

    /// `replica`, its server started with `httpd_listen` (`-p 5000`, `-p 127.0.0.1:5000`); when
    /// `gated`, only once the test calls `let_serve`, so "before it listens" never depends on how
    /// long `docker run` took.
    pub fn replica_serving(
        &self,
        container: &str,
        name: &str,
        image: &str,
        extra_labels: &[(&str, &str)],
        httpd_listen: &str,
        gated: bool,
    ) -> String {
        let mut labels = vec![("nasiko.type", "agent"), ("nasiko.name", name)];
        labels.extend_from_slice(extra_labels);
        let extra = self.on_network_with(&labels);
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        let gate = if gated {
            "until [ -e /w/go ]; do sleep 0.05; done && "
        } else {
            ""
        };
        let script = format!(
            "mkdir -p /w && echo {container} > /w/id && {gate}exec httpd -f {httpd_listen} -h /w"
        );
        self.run_image(container, &refs, image, &["sh", "-c", &script])
    }

    /// Lets a gated `replica_serving` container start its server.
    pub fn let_serve(&self, container: &str) {
        docker_ok(&["exec", container, "touch", "/w/go"]);
    }

    /// An agent-like container on this network that serves HTTP on 5000 (busybox httpd).
    /// An agent named `name` as the build agent labels one (type and name), in container
    /// `c-{name}`; returns the container id.
    pub fn labelled_agent(&self, name: &str) -> String {
        self.agent(
            &format!("c-{name}"),
            &[("nasiko.type", "agent"), ("nasiko.name", name)],
        )
    }

    pub fn agent(&self, container: &str, labels: &[(&str, &str)]) -> String {
        let extra = self.on_network_with(labels);
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.run(
            container,
            &refs,
            &["httpd", "-f", "-p", "5000", "-h", "/www"],
        )
    }

    /// `docker run` arguments: this network and these labels.
    fn on_network_with(&self, labels: &[(&str, &str)]) -> Vec<String> {
        let mut extra = vec![format!("--network={}", self.name)];
        for (k, v) in labels {
            extra.push("--label".into());
            extra.push(format!("{k}={v}"));
        }
        extra
    }

    pub fn ip_of(&self, container: &str) -> String {
        docker_ok(&[
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.name
            ),
            container,
        ])
    }
}

/// An image of another generation: the busybox image with one more label (another image id),
/// removed on drop.
pub struct NextImage {
    pub tag: String,
}

impl NextImage {
    pub fn new() -> NextImage {
        let tag = format!("nasiko-test-next:{}", unique("gen"));
        let dockerfile = format!(
            "FROM {}\nLABEL nasiko-test-gen={tag}\n",
            ensure_busybox_image()
        );
        let mut child = std::process::Command::new("docker")
            .args(["build", "-q", "-t", &tag, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker build");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(dockerfile.as_bytes())
            .expect("write the Dockerfile");
        let out = child.wait_with_output().expect("docker build");
        assert!(
            out.status.success(),
            "docker build of {tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NextImage { tag }
    }
}

impl Default for NextImage {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NextImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={TEST_LABEL}={}", self.run),
        ]);
        let ids = String::from_utf8_lossy(&ids.stdout).to_string();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        // a few at a time: the CLI removes all it is given at once, and 500 removals at once
        // wedged Docker 20.10's network controller (the call hung for 25 minutes, half done)
        for some in ids.chunks(16) {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(some);
            let _ = docker(&args);
        }
        // whoever is still on it (a container Docker is still releasing, a gateway a sidecar
        // joined) is disconnected first: a bare `network rm` left networks behind
        remove_network(&self.name);
        // the build agent's build network for this stack, when a test built on it
        remove_network(&nasiko_contract::build_network(&self.name));
    }
}

/// An agent's own network in a test's stack, made as the build agent makes it (its labels, a
/// small subnet of its own so tests never drain Docker's default pools); on drop, whoever is on
/// it is disconnected and it is removed.
pub struct AgentNet {
    pub name: String,
}

impl AgentNet {
    pub fn new(stack: &str, agent: &str, run: &str) -> AgentNet {
        let name = nasiko_contract::agent_network(stack, agent);
        let labels = [
            format!("{}={agent}", nasiko_contract::labels::AGENT_NETWORK),
            format!("{}={stack}", nasiko_contract::labels::STACK),
            format!("{TEST_LABEL}={run}"),
        ];
        // a free /28 of 10.214.0.0/16, starting where this process and call are unlikely to meet
        // another test's
        let start = (std::process::id() as usize * 7 + net_seq()) * 37;
        for i in 0..4096 {
            let slot = (start + i) % 4096;
            let subnet = format!("10.214.{}.{}/28", slot / 16, (slot % 16) * 16);
            let mut args = vec!["network", "create", "--subnet", &subnet];
            for l in &labels {
                args.extend(["--label", l]);
            }
            args.push(&name);
            let o = docker(&args);
            if o.status.success() {
                return AgentNet { name };
            }
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("overlap"), "docker {args:?} failed: {err}");
        }
        panic!("no free /28 in 10.214.0.0/16 for {name}");
    }
}

fn net_seq() -> usize {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Drop for AgentNet {
    fn drop(&mut self) {
        remove_network(&self.name);
    }
}

/// Remove network `name` with whoever is on it (disconnected first; again if a sidecar joined
/// its gateway meanwhile). Nothing when there is no such network.
pub fn remove_network(name: &str) {
    for _ in 0..3 {
        let f = "{{range $id, $c := .Containers}}{{$id}} {{end}}";
        let on = docker(&["network", "inspect", "-f", f, name]);
        for id in String::from_utf8_lossy(&on.stdout).split_whitespace() {
            let _ = docker(&["network", "disconnect", "-f", name, id]);
        }
        if docker(&["network", "rm", name]).status.success() || !on.status.success() {
            return;
        }
        // Docker may still be releasing the endpoints of containers just removed
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
