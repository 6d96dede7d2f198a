//! Our images dropped into upstream's own compose files, as they are: the build-agent image under
//! upstream's legacy worker command, and the sidecar image with the Docker socket mounted and no
//! `group_add`, the socket's group differing from the image user's.

use nasiko_contract::stream;
use nasiko_tests::agents::AgentsRoot;
use nasiko_tests::backend::BackendStandin;
use nasiko_tests::docker::{docker, docker_ok, ensure_busybox_image, unique, TestNet};
use nasiko_tests::http::HttpClient;
use nasiko_tests::kong::{KongEmulator, Options};
use nasiko_tests::process::{free_port, wait_for};
use nasiko_tests::redis_server::RedisServer;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn image(name: &str) -> String {
    let img = format!("nasiko/{name}:local");
    assert!(
        docker(&["image", "inspect", &img]).status.success(),
        "image {img} is missing: run scripts/build-images.sh first"
    );
    img
}

/// A container removed on drop.
struct Container(String);
impl Drop for Container {
    fn drop(&mut self) {
        docker(&["rm", "-f", "-v", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn the_build_agent_image_under_upstreams_legacy_command_consumes_jobs() {
    let img = image("build-agent");
    let redis = RedisServer::start();
    let backend = BackendStandin::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let root = AgentsRoot::new();
    let agent = unique("legacy").replace('-', "");
    let path = root.add("compose-agents-net", &agent, "v1.0.0", None);
    std::fs::set_permissions(&root.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = unique("legacy-worker");
    let _c = Container(name.clone());
    let mount = format!("{}:/app/agents:ro", root.path.display());
    // upstream's docker-compose.local.yml keeps this command for its worker service
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-v",
        &mount,
        "-e",
        &format!("REDIS_URL={}", redis.url()),
        "-e",
        &format!("NASIKO_API_URL={}", backend.url()),
        "-e",
        "NOOP_DEPLOY=true",
        "-e",
        "WORK_DIR=/tmp/work",
        &img,
        "python",
        "-u",
        "/app/orchestrator/redis_stream_listener.py",
    ]);
    let mut con = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream::KEY)
        .arg("*")
        .arg(stream::encode(&stream::JobEntry {
            owner_id: Some("u1".into()),
            ..stream::JobEntry::deploy(&agent, &path)
        }))
        .query_async(&mut con)
        .await
        .unwrap();
    let status = wait_for("the job to complete", T, || {
        let mut con = con.clone();
        let key = format!("agent:status:{agent}");
        async move {
            let s: String = redis::cmd("HGET")
                .arg(&key)
                .arg("status")
                .query_async(&mut con)
                .await
                .ok()?;
            (s == "completed" || s == "failed").then_some(s)
        }
    })
    .await;
    let logs = docker(&["logs", &name]);
    let logs = String::from_utf8_lossy(&logs.stderr).to_string();
    assert_eq!(status, "completed", "{logs}");
    assert!(logs.contains("Python listener's command"), "{logs}");
}

/// A unix socket at `path` forwarding to the engine's socket, so its owner and mode are ours.
async fn socket_relay(path: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(&path).expect("bind relay socket");
    tokio::spawn(async move {
        while let Ok((mut a, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn the_sidecar_image_reads_a_socket_of_another_group_without_group_add() {
    let img = image("registry-sidecar");
    ensure_busybox_image();
    let kong = KongEmulator::start(Options::strict()).await.unwrap();
    let net = TestNet::new();
    // a socket owned by root and a group that is neither root's nor the image user's, 0660: as
    // a standard engine's socket (root:docker) looks to a container user outside that group
    let dir = std::env::temp_dir().join(unique("sock"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("docker.sock");
    let relay = socket_relay(sock.clone()).await;
    std::os::unix::fs::chown(&sock, Some(0), Some(4242)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).unwrap();
    let name = unique("sidecar-dropin");
    let _c = Container(name.clone());
    let port = free_port();
    // upstream's kong-service-registry service: the socket mounted read-only, no group_add, no
    // DISCOVERY_MODE; its K8S_ENABLED "false"
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-v",
        &format!("{}:/var/run/docker.sock:ro", sock.display()),
        "-e",
        &format!("KONG_ADMIN_URL={}", kong.admin_url()),
        "-e",
        &format!("AGENTS_NETWORK={}", net.name),
        "-e",
        &format!("LISTEN_ADDR=127.0.0.1:{port}"),
        "-e",
        "K8S_ENABLED=false",
        &img,
    ]);
    let agent = unique("dropin").replace('-', "");
    net.agent(
        &format!("agent-{agent}"),
        &[("nasiko.type", "agent"), ("nasiko.name", &agent)],
    );
    let http = HttpClient::new(Duration::from_secs(5));
    let url = format!("{}/services/agent-{agent}", kong.admin_url());
    let logs = || String::from_utf8_lossy(&docker(&["logs", &name]).stderr).to_string();
    wait_for("the agent's Kong service", T, || async {
        matches!(http.json("GET", &url, None).await, Ok((200, _))).then_some(())
    })
    .await;
    // and it runs unprivileged, holding exactly the socket's group
    let status = docker_ok(&["exec", &name, "cat", "/proc/1/status"]);
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "10001 10001 10001 10001", "{}", logs());
    assert_eq!(field("Groups:"), "4242");
    relay.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
