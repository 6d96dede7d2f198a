//! Real deploys on the real Docker engine with docker compose: the sample packages of
//! tests/agents/ deploy (or are refused) as specified; everything created is removed.

mod support;

use nasiko_tests::agents::AgentCleanup;
use nasiko_tests::backend::Call;
use nasiko_tests::docker::{docker_ok, ensure_busybox_image, unique, TestNet};
use nasiko_tests::http::HttpClient;
use nasiko_tests::process::{free_port, wait_for};
use serde_json::{json, Value};
use std::time::Duration;
use support::{Harness, T};

fn inspect(container: &str) -> Value {
    let out = docker_ok(&["inspect", container]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn env_of(c: &Value) -> Vec<String> {
    c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// One JSON-RPC `message/send` to the container's IP on its agent's own network, else on `net`
/// (the shared network, legacy); None when it does not answer.
async fn try_ask(container: &str, net: &str) -> Option<Value> {
    let out = nasiko_tests::docker::docker(&["inspect", container]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let nets = &v[0]["NetworkSettings"]["Networks"];
    let own = v[0]["Config"]["Labels"]["nasiko.name"]
        .as_str()
        .map(|a| nasiko_contract::agent_network(net, a))
        .filter(|n| nets.get(n).is_some());
    let ip = nets[own.as_deref().unwrap_or(net)]["IPAddress"]
        .as_str()?
        .to_string();
    let http = HttpClient::new(Duration::from_secs(5));
    let req = json!({"jsonrpc": "2.0", "id": "req-1", "method": "message/send", "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}}});
    let (s, v) = http
        .json("POST", &format!("http://{ip}:5000/"), Some(&req))
        .await
        .ok()?;
    (s == 200).then_some(v)
}

/// What the agent says (the text of its answer), once it answers.
async fn says(container: &str, net: &str) -> String {
    let r = ask(container, net).await;
    r["result"]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Ask until the agent answers.
async fn ask(container: &str, net: &str) -> Value {
    wait_for("the agent to answer", T, || try_ask(container, net)).await
}

fn calls_to(h: &Harness, suffix: &str) -> Vec<Call> {
    h.backend
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with(suffix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn the_real_template_deploys_with_labels_network_env_card_and_answers() {
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("echo");
    let _clean = AgentCleanup::new(&[&a]);
    let mut h = Harness::new(&net.name).await;
    h.extra_env
        .push(("OPENAI_API_KEY".into(), "sk-test".into()));
    let path = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let _w = h.spawn("c1");
    let mut fields = h.deploy_fields(&a, &path, "owner-7");
    fields.webhook_url = Some("http://n8n:5678/webhook/x".into());
    h.queue(&fields).await;
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    // where the time went, stage by stage
    let stages = ["(prepare ", "s, build ", "s, start ", "s, register "];
    assert!(
        s["message"].starts_with("deployed in ") && stages.iter().all(|t| s["message"].contains(t)),
        "{s:?}"
    );
    let c = inspect(&format!("agent-{a}"));
    let labels = &c["Config"]["Labels"];
    assert_eq!(
        (
            labels["nasiko.type"].as_str(),
            labels["nasiko.name"].as_str(),
            labels["nasiko.owner"].as_str()
        ),
        (Some("agent"), Some(a.as_str()), Some("owner-7"))
    );
    // agents-net is the agent's own network: on it alone, which is labelled as the agent's
    let own = nasiko_contract::agent_network(&net.name, &a);
    let nets: Vec<&String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(nets, [&own], "only on its own network");
    let n = &serde_json::from_str::<Value>(&docker_ok(&["network", "inspect", &own])).unwrap()[0];
    assert_eq!(n["Labels"]["nasiko.agent-network"], a.as_str());
    assert_eq!(n["Labels"]["nasiko.managed-by"], "build-agent");
    assert_eq!(n["Labels"]["nasiko.stack"], net.name.as_str());
    assert_eq!(labels["nasiko.stack"], net.name.as_str());
    let subnet = n["IPAM"]["Config"][0]["Subnet"].as_str().unwrap();
    assert!(
        subnet.starts_with("10.213.") && subnet.ends_with("/28"),
        "{subnet}"
    );
    let env = env_of(&c);
    for want in [
        format!("AGENT_NAME={a}"),
        "OWNER_ID=owner-7".into(),
        "GREETING=hi there".into(),
        "FROM_COMPOSE=yes".into(),
        "WEBHOOK_URL=http://n8n:5678/webhook/x".into(),
        "OPENAI_API_KEY=from-dotenv".into(),
        "TRACING_ENABLED=false".into(),
        format!("AGENT_PROJECT_NAME={a}"),
    ] {
        assert!(env.contains(&want), "{want} in {env:?}");
    }
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    let reply = ask(&format!("agent-{a}"), &net.name).await;
    assert_eq!(reply["id"], "req-1");
    assert_eq!(
        reply["result"]["parts"][0]["text"],
        format!("hello from {a} v1.0.0")
    );
    // the backend saw the stage table, the card (with its skills) and the permissions call
    wait_for("the completion at the backend", T, || async {
        calls_to(&h, "/latest")
            .iter()
            .any(|c| c.body["status"] == "completed")
            .then_some(())
    })
    .await;
    let seq: Vec<String> = calls_to(&h, "/latest")
        .iter()
        .map(|c| c.body["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        seq,
        [
            "orchestration_processing",
            "building",
            "deploying",
            "registering",
            "completed"
        ]
    );
    let reg = calls_to(&h, &format!("/api/v1/registry/agent/{a}"));
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0].body["skills"][0]["id"], "hello");
    assert_eq!(
        (
            reg[0].body["id"].as_str(),
            reg[0].body["owner_id"].as_str(),
            reg[0].body["deployment_type"].as_str()
        ),
        (Some(a.as_str()), Some("owner-7"), Some("docker-local"))
    );
    assert_eq!(
        reg[0].body["url"],
        format!("http://gateway.test:9100/agents/agent-{a}")
    );
    let perm = calls_to(&h, "/permissions");
    assert_eq!(
        (perm.len(), perm[0].query.as_str()),
        (1, "owner_id=owner-7")
    );
    // the source package was not touched
    let src = h.root.path.join(&a).join("v1.0.0");
    let mut files: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            ".env",
            "AgentCard.json",
            "Dockerfile",
            "agent.sh",
            "docker-compose.yml"
        ],
        "the build agent writes its files in its work folder, never in the upload"
    );
    // an unchanged redeploy skips the build
    h.queue(&h.deploy_fields(&a, &path, "owner-7")).await;
    // the first deploy's status still reads "deployed": wait for the backend's second completion
    wait_for("the redeploy's completion", T, || async {
        let done = h
            .upload_statuses(&a)
            .iter()
            .filter(|c| c.body["status"] == "completed")
            .count();
        (done == 2).then_some(())
    })
    .await;
    let logs = h.command("c1").args(["logs", &a]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("is up to date; not rebuilding"), "{logs}");
    assert!(
        logs.contains("=== building"),
        "the first build's output is in the log: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn fixed_port_dockerfile_only_and_two_service_packages_deploy() {
    ensure_busybox_image();
    let net = TestNet::new();
    let (p, d, t) = (unique("fixedport"), unique("plain"), unique("twosvc"));
    let _clean = AgentCleanup::new(&[&p, &d, &t]);
    let mut h = Harness::new(&net.name).await;
    // debugging: the package's ports published, but on loopback only and never the fixed one
    h.extra_env
        .push(("PUBLISH_AGENT_PORTS".into(), "true".into()));
    let port = free_port();
    let pp = h.root.add("compose-fixed-port", &p, "v1.0.0", Some(port));
    let pd = h.root.add("dockerfile-only", &d, "v1.0.0", None);
    let pt = h.root.add("two-services", &t, "v1.0.0", None);
    let _w = h.spawn("c1");
    for (a, path) in [(&p, &pp), (&d, &pd), (&t, &pt)] {
        h.queue(&h.deploy_fields(a, path, "u1")).await;
    }
    for a in [&p, &d, &t] {
        let s = h.wait_terminal(a).await;
        assert_eq!(s["status"], "completed", "{a}: {s:?}");
        let reply = ask(&format!("agent-{a}"), &net.name).await;
        assert_eq!(
            reply["result"]["parts"][0]["text"],
            format!("hello from {a} v1.0.0")
        );
    }
    // published on 127.0.0.1 at a port of Docker's choosing, not on the package's fixed port
    let bindings = &inspect(&format!("agent-{p}"))["NetworkSettings"]["Ports"]["5000/tcp"];
    assert_eq!(bindings.as_array().map(Vec::len), Some(1), "{bindings}");
    assert_eq!(bindings[0]["HostIp"], "127.0.0.1");
    let host_port = bindings[0]["HostPort"].as_str().unwrap().to_string();
    assert_ne!(host_port, port.to_string());
    let http = HttpClient::new(Duration::from_secs(5));
    let (s, v) = http
        .json(
            "POST",
            &format!("http://127.0.0.1:{host_port}/"),
            Some(&json!({"id": "x"})),
        )
        .await
        .unwrap();
    assert_eq!((s, v["id"].clone()), (200, json!("x")));
    // the dependency is labelled, not on the shared network, and keeps its own network
    let project = format!("label=com.docker.compose.project=agent-{t}");
    let ids = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &project,
        "--filter",
        "label=nasiko.type=agent-dependency",
    ]);
    assert_eq!(ids.lines().count(), 1);
    let db = inspect(ids.trim());
    assert_eq!(db["Config"]["Labels"]["nasiko.name"], t.as_str());
    assert!(db["NetworkSettings"]["Networks"].get(&net.name).is_none());
    assert!(db["NetworkSettings"]["Networks"]
        .get(nasiko_contract::agent_network(&net.name, &t))
        .is_none());
    let entry = inspect(&format!("agent-{t}"));
    assert_eq!(
        entry["NetworkSettings"]["Networks"]
            .as_object()
            .unwrap()
            .len(),
        2,
        "its own network + its backend network"
    );
    wait_for("the minimal card", T, || async {
        (!calls_to(&h, &format!("/api/v1/registry/agent/{d}")).is_empty()).then_some(())
    })
    .await;
    let card = calls_to(&h, &format!("/api/v1/registry/agent/{d}"));
    for k in ["id", "name", "description", "url", "owner_id"] {
        assert!(card[0].body.get(k).is_some(), "minimal card has {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn packages_shaped_like_upstreams_agents_deploy_unpublished_with_their_own_network() {
    ensure_busybox_image();
    let net = TestNet::new();
    let (a, f) = (unique("realshaped"), unique("foreignnet"));
    let _clean = AgentCleanup::new(&[&a, &f]);
    let foreign = format!("{f}-foreign");
    docker_ok(&["network", "create", &foreign]);
    struct RmNet(String);
    impl Drop for RmNet {
        fn drop(&mut self) {
            nasiko_tests::docker::docker(&["network", "rm", &self.0]);
        }
    }
    let _foreign = RmNet(foreign.clone());
    let h = Harness::new(&net.name).await;
    let pa = h.root.add("real-shaped", &a, "v1.0.0", None);
    let pf = h.root.add("foreign-network", &f, "v1.0.0", None);
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &pa, "u1")).await;
    h.queue(&h.deploy_fields(&f, &pf, "u1")).await;
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    let c = inspect(&format!("agent-{a}"));
    // no host port: reached only through the gateway, on the shared network
    assert!(
        c["NetworkSettings"]["Ports"]
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_null)),
        "{}",
        c["NetworkSettings"]["Ports"]
    );
    assert_eq!(c["Config"]["Tty"], true);
    assert_eq!(c["Config"]["OpenStdin"], true);
    // the operator's caps and no-new-privileges, whatever the package says (issue 15)
    let hc = &c["HostConfig"];
    assert_eq!(hc["Memory"], 1024 * 1024 * 1024, "{hc}");
    assert_eq!(hc["NanoCpus"], 500_000_000u64, "{hc}");
    assert_eq!(hc["PidsLimit"], 512, "{hc}");
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges:true"]), "{hc}");
    // the package's second external network is a network of its own project, labelled as the
    // build agent's (not a network shared by every package that names it)
    let own = format!("agent-{a}_db-{a}");
    assert!(c["NetworkSettings"]["Networks"].get(&own).is_some());
    let n: Value = serde_json::from_str(&docker_ok(&["network", "inspect", &own])).unwrap();
    assert_eq!(n[0]["Labels"]["nasiko.managed-by"], "build-agent");
    let reply = ask(&format!("agent-{a}"), &net.name).await;
    assert_eq!(
        reply["result"]["parts"][0]["text"],
        format!("hello from {a} v1.0.0")
    );
    // a network named explicitly (it could be the platform's) is refused, before `up`
    let s = h.wait_terminal(&f).await;
    assert_eq!(s["status"], "failed", "{s:?}");
    assert!(s["message"].contains("names the Docker network"), "{s:?}");
    assert!(
        !nasiko_tests::docker::docker(&["inspect", &format!("agent-{f}")])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn failing_builds_crashing_containers_and_unsafe_packages_end_failed_with_the_reason() {
    ensure_busybox_image();
    let net = TestNet::new();
    let (b, x, u) = (unique("buildfail"), unique("crash"), unique("unsafe"));
    let _clean = AgentCleanup::new(&[&b, &x, &u]);
    let h = Harness::new(&net.name).await;
    let pb = h.root.add("build-fails", &b, "v1.0.0", None);
    let px = h.root.add("exits-at-start", &x, "v1.0.0", None);
    let pu = h.root.add("unsafe", &u, "v1.0.0", None);
    let _w = h.spawn("c1");
    for (a, path) in [(&b, &pb), (&x, &px), (&u, &pu)] {
        h.queue(&h.deploy_fields(a, path, "u1")).await;
    }
    let s = h.wait_terminal(&b).await;
    assert_eq!(s["status"], "failed");
    assert!(
        s["message"].contains("docker build failed") && s["message"].contains("compiling..."),
        "{}",
        s["message"]
    );
    let s = h.wait_terminal(&x).await;
    assert_eq!(s["status"], "failed");
    assert!(
        s["message"].contains("exited at start")
            && s["message"].contains("cannot start: missing OPENAI_API_KEY"),
        "{}",
        s["message"]
    );
    let s = h.wait_terminal(&u).await;
    assert_eq!(s["status"], "failed");
    assert!(s["message"].contains("privileged"), "{}", s["message"]);
    assert!(
        nasiko_tests::docker::docker(&["inspect", &format!("agent-{u}")])
            .status
            .code()
            != Some(0),
        "nothing was started for the unsafe package"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn healthy_jobs_behind_a_build_that_keeps_dying_run_and_only_it_is_dead_lettered() {
    // issue 12, finding 1: re-reads after restarts used to count as deliveries, so the healthy
    // jobs read ahead behind a hanging build were dead-lettered without ever starting
    ensure_busybox_image();
    let net = TestNet::new();
    let hang = unique("hang");
    let healthy: Vec<String> = (0..3).map(|i| unique(&format!("healthy{i}"))).collect();
    let mut all: Vec<&str> = healthy.iter().map(String::as_str).collect();
    all.push(&hang);
    let _clean = AgentCleanup::new(&all);
    let mut h = Harness::new(&net.name).await;
    h.extra_env.push(("MAX_CONCURRENT_JOBS".into(), "1".into()));
    let hp = h.root.add_slow("dockerfile-only", &hang, "v1.0.0", 600);
    let hang_id = h.queue(&h.deploy_fields(&hang, &hp, "u1")).await;
    for a in &healthy {
        let p = h.root.add("dockerfile-only", a, "v1.0.0", None);
        h.queue(&h.deploy_fields(a, &p, "u1")).await;
    }
    let con = h.con().await;
    // the hanging step (FROM, COPY, then `RUN chmod … && sleep`): a first attempt killed before
    // it would let the second pass it, which is progress, and the count would start again
    let hanging = 200_000 + 3;
    for kill in 1..=3u64 {
        let mut w = h.spawn("c1");
        wait_for("the hanging build to start again", T, || {
            let mut con = con.clone();
            let id = hang_id.clone();
            let agent = hang.clone();
            let h = &h;
            async move {
                let n: Option<u64> = redis::cmd("HGET")
                    .arg("orchestration:commands:attempts")
                    .arg(&id)
                    .query_async(&mut con)
                    .await
                    .ok()?;
                let building =
                    h.status(&agent).await.get("status").map(String::as_str) == Some("building");
                let at_the_hang = reached(h, &id).await == Some(hanging);
                (n == Some(kill) && building && at_the_hang).then_some(())
            }
        })
        .await;
        w.signal(9);
        w.wait_exit(Duration::from_secs(10));
    }
    let _w = h.spawn("c1");
    let s = h.wait_terminal(&hang).await;
    assert_eq!(s["status"], "failed", "{s:?}");
    assert!(s["message"].contains("started 3 times"), "{s:?}");
    for a in &healthy {
        let s = h.wait_terminal(a).await;
        assert_eq!(s["status"], "completed", "{a}: {s:?}");
    }
    let dead = h.dead_letters().await;
    assert_eq!(
        dead.len(),
        1,
        "only the hanging job is dead-lettered: {dead:#?}"
    );
}

/// The furthest progress mark any attempt of entry `id` left (`attempts.rs`), if any.
async fn reached(h: &Harness, id: &str) -> Option<u64> {
    redis::cmd("HGET")
        .arg("orchestration:commands:attempts")
        .arg(format!("{id}:reached"))
        .query_async(&mut h.con().await)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_job_killed_three_times_each_time_further_along_completes() {
    // issue 23 item 6: an attempt counts against a job only when it got no further than the ones
    // before it. Three slow build steps; the worker is killed in each in turn (the steps before
    // it are cached by then), so each start gets further: the job is not poison
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("further");
    let _clean = AgentCleanup::new(&[&a]);
    let h = Harness::new(&net.name).await;
    let steps = "\nRUN sleep 4 && echo one\nRUN sleep 4 && echo two\nRUN sleep 4 && echo three";
    let path = h.root.add_steps("compose-agents-net", &a, "v1.0.0", steps);
    let id = h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    // the legacy builder's steps: FROM, COPY, chmod, then the sleeps are steps 4, 5 and 6
    let building = 200_000;
    for step in 4..=6u64 {
        let mut w = h.spawn("c1");
        wait_for(&format!("the build at step {step}"), T, || async {
            (reached(&h, &id).await == Some(building + step)).then_some(())
        })
        .await;
        w.signal(9);
        w.wait_exit(Duration::from_secs(10));
    }
    let _w = h.spawn("c1");
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed", "started 4 times, 3 killed: {s:?}");
    assert!(h.dead_letters().await.is_empty());
    assert_eq!(
        says(&format!("agent-{a}"), &net.name).await,
        format!("hello from {a} v1.0.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_job_out_of_attempts_whose_agent_already_serves_it_completes() {
    // issue 23 item 6: the soak found a job dead-lettered as failed while the container its
    // earlier attempt had started was up and serving
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("serving");
    let _clean = AgentCleanup::new(&[&a]);
    let h = Harness::new(&net.name).await;
    let path = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let mut fields = h.deploy_fields(&a, &path, "u1");
    fields.upload_id = Some("upload-42".into());
    let mut w = h.spawn("c1");
    h.queue(&fields).await;
    assert_eq!(h.wait_terminal(&a).await["status"], "completed");
    w.signal(15);
    w.wait_exit(Duration::from_secs(30));
    // the same job again, as if its attempts had died after the container was up, three times
    let id = h.queue(&fields).await;
    h.as_if_started_and_died(&id, 3).await;
    h.as_if_its_container_got_up(&id).await;
    let mut w = h.spawn("c1");
    let s = h.wait_terminal_of(&a, &id, T).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    assert!(s["message"].contains("is serving"), "{s:?}");
    assert!(h.dead_letters().await.is_empty());
    // a different upload of the same version is not taken as served, though an attempt got as
    // far: it is dead-lettered; so is a job whose attempts never got its container up (the
    // running one is another job's: a_stand_by_never_outlives_its_job_… kills an update so)
    w.signal(15);
    w.wait_exit(Duration::from_secs(30));
    let mut other = fields.clone();
    other.upload_id = Some("upload-43".into());
    let id = h.queue(&other).await;
    h.as_if_started_and_died(&id, 3).await;
    h.as_if_its_container_got_up(&id).await;
    let _w = h.spawn("c1");
    let s = h.wait_terminal_of(&a, &id, Duration::from_secs(90)).await;
    assert_eq!(s["status"], "failed", "{s:?}");
    assert!(s["message"].contains("started 3 times"), "{s:?}");
}

/// Agent `a`'s running containers (its replicas), sorted by name.
fn running(a: &str) -> Vec<String> {
    let names = docker_ok(&[
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=nasiko.name={a}"),
        "--filter",
        "label=nasiko.type=agent",
    ]);
    let mut v: Vec<String> = names.lines().map(String::from).collect();
    v.sort();
    v
}

/// The name of agent `a`'s one running container (its serving slot's); panics unless one runs.
fn serving(a: &str) -> String {
    let names = running(a);
    assert_eq!(names.len(), 1, "{a}: one running container, not {names:?}");
    names[0].clone()
}

/// Wait until the backend has heard of `n` completions of agent `a`, then give one more report
/// a second to show up: it hears of each exactly once.
async fn completions_settle_at(h: &Harness, a: &str, n: usize) {
    let completed = || {
        h.upload_statuses(a)
            .iter()
            .filter(|c| c.body["status"] == "completed")
            .count()
    };
    wait_for("the backend to hear of the completion", T, || async {
        (completed() >= n).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(completed(), n);
}

/// Which of agent `a`'s slot containers exist, running or not.
fn slots_present(a: &str) -> Vec<String> {
    nasiko_contract::Slot::BOTH
        .iter()
        .map(|s| s.container(a))
        .filter(|c| exists(c))
        .collect()
}

fn container_id(name: &str) -> String {
    inspect(name)["Id"].as_str().unwrap().to_string()
}

fn exists(name: &str) -> bool {
    nasiko_tests::docker::docker(&["inspect", name])
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn an_unchanged_redeploy_starts_no_second_slot_and_recreates_nothing() {
    // issue 12, finding 3
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("same");
    let _clean = AgentCleanup::new(&[&a]);
    let mut h = Harness::new(&net.name).await;
    h.extra_env.push(("HANDOVER_SECS".into(), "3".into()));
    let path = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    assert_eq!(h.wait_terminal(&a).await["status"], "completed");
    let first = container_id(&format!("agent-{a}"));
    let mut c = h.con().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("agent:status:{a}"))
        .query_async(&mut c)
        .await
        .unwrap();
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    let green = nasiko_contract::Slot::Green.container(&a);
    let saw_green = std::sync::atomic::AtomicBool::new(false);
    let s = wait_for("the redeploy", T, || async {
        if exists(&green) {
            saw_green.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let s = h.status(&a).await;
        matches!(
            s.get("status").map(String::as_str),
            Some("completed" | "failed")
        )
        .then_some(s)
    })
    .await;
    let saw_green = saw_green.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(s["status"], "completed", "{s:?}");
    assert!(!saw_green, "no second slot for an unchanged redeploy");
    assert_eq!(
        container_id(&format!("agent-{a}")),
        first,
        "the container was not recreated"
    );
    let log = h.stream_entries(&format!("agent:buildlog:{a}")).await;
    assert!(format!("{log:?}").contains("compose recreates nothing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_switch_killed_midway_leaves_one_version_and_completes_once_on_restart() {
    // issue 23: a SIGKILL during a blue/green switch, with both versions up
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("switch");
    let _clean = AgentCleanup::new(&[&a]);
    let mut h = Harness::new(&net.name).await;
    h.extra_env.push(("HANDOVER_SECS".into(), "30".into()));
    let v1 = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let mut w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &v1, "u1")).await;
    assert_eq!(h.wait_terminal(&a).await["status"], "completed");
    let v2 = h.root.add("compose-agents-net", &a, "v2.0.0", None);
    let mut f = h.deploy_fields(&a, &v2, "u1");
    f.action = Some(nasiko_contract::stream::Action::Update);
    f.version = Some("v2.0.0".into());
    let job = h.queue(&f).await;
    let green = nasiko_contract::Slot::Green.container(&a);
    // the new version is up in the green slot; blue still serves through the switch's wait
    wait_for("the new version beside the old", T, || async {
        let r = try_ask(&green, &net.name).await?;
        (r["result"]["parts"][0]["text"] == format!("hello from {a} v2.0.0")).then_some(())
    })
    .await;
    assert_eq!(
        says(&format!("agent-{a}"), &net.name).await,
        format!("hello from {a} v1.0.0"),
        "the old version serves until the switch is done"
    );
    w.signal(9);
    w.wait_exit(Duration::from_secs(10));
    assert_eq!(slots_present(&a).len(), 2, "the kill left both versions up");
    h.extra_env.push(("HANDOVER_SECS".into(), "1".into()));
    let _w2 = h.spawn("c1");
    let s = h.wait_terminal_of(&a, &job, T).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    assert_eq!(serving(&a), green, "the new version serves");
    assert_eq!(
        slots_present(&a),
        [green.as_str()],
        "the old version is gone"
    );
    assert_eq!(
        says(&green, &net.name).await,
        format!("hello from {a} v2.0.0")
    );
    // the backend hears of each deploy's completion once: v1's, then the update's
    completions_settle_at(&h, &a, 2).await;
}

/// Add `version` of `a`, its agent's service asking for `replicas` (`deploy.replicas`).
fn add_with_replicas(h: &Harness, a: &str, version: &str, replicas: &str) -> String {
    let path = h.root.add("compose-agents-net", a, version, None);
    nasiko_tests::agents::ask_replicas(&h.root.path, a, version, replicas);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn replicas_a_package_asks_for_run_alike_update_together_and_are_capped() {
    // issue 23, item 3
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("reps");
    let _clean = AgentCleanup::new(&[&a]);
    let mut h = Harness::new(&net.name).await;
    h.extra_env.push(("AGENT_MAX_REPLICAS".into(), "3".into()));
    let _w = h.spawn("c1");
    let v1 = add_with_replicas(&h, &a, "v1.0.0", "3");
    let t = std::time::Instant::now();
    let id = h.queue(&h.deploy_fields(&a, &v1, "u1")).await;
    let s = h.wait_terminal_of(&a, &id, T).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    println!("three replicas: queued -> completed in {:?}", t.elapsed());
    let blue = nasiko_contract::Slot::Blue;
    let mut want: Vec<String> = (1..=3).map(|i| blue.replica(&a, i)).collect();
    want.sort();
    assert_eq!(running(&a), want);
    let first = inspect(&want[0]);
    for c in &want {
        assert_eq!(
            says(c, &net.name).await,
            format!("hello from {a} v1.0.0"),
            "{c}"
        );
        let i = inspect(c);
        for key in [
            "/HostConfig/Memory",
            "/HostConfig/NanoCpus",
            "/HostConfig/PidsLimit",
        ] {
            assert_eq!(i.pointer(key), first.pointer(key), "{c}: {key}");
        }
        assert_eq!(
            i["Config"]["Labels"]["nasiko.deploy-hash"],
            first["Config"]["Labels"]["nasiko.deploy-hash"]
        );
        assert!(
            i["NetworkSettings"]["Networks"]
                .get(nasiko_contract::agent_network(&net.name, &a))
                .is_some(),
            "{c} is on the agent's own network"
        );
    }
    // an update replaces them all, beside them: three in the green slot, none left in blue
    let v2 = add_with_replicas(&h, &a, "v2.0.0", "3");
    let mut f = h.deploy_fields(&a, &v2, "u1");
    f.action = Some(nasiko_contract::stream::Action::Update);
    let id = h.queue(&f).await;
    let s = h.wait_terminal_of(&a, &id, T).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    let green = nasiko_contract::Slot::Green;
    let mut want: Vec<String> = (1..=3).map(|i| green.replica(&a, i)).collect();
    want.sort();
    assert_eq!(running(&a), want);
    for c in &want {
        assert_eq!(says(c, &net.name).await, format!("hello from {a} v2.0.0"));
    }
    assert!(
        (1..=3).all(|i| !exists(&blue.replica(&a, i))),
        "blue is gone"
    );
    // rolling: the new replicas start one at a time, each HANDOVER_SECS (1 here) after the one
    // before was up
    let v3 = add_with_replicas(&h, &a, "v3.0.0", "3");
    let mut f = h.deploy_fields(&a, &v3, "u1");
    f.action = Some(nasiko_contract::stream::Action::Update);
    f.update_strategy = Some("rolling".into());
    let id = h.queue(&f).await;
    let s = h.wait_terminal_of(&a, &id, T).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    let mut want: Vec<String> = (1..=3).map(|i| blue.replica(&a, i)).collect();
    want.sort();
    assert_eq!(running(&a), want);
    let started: Vec<String> = (1..=3)
        .map(|i| {
            inspect(&blue.replica(&a, i))["State"]["StartedAt"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let secs = |t: &str| -> f64 {
        // HH:MM:SS.fraction of the same day is enough for gaps of seconds
        let hms = &t[11..t.len() - 1];
        let mut f = hms.split(':').map(|x| x.parse::<f64>().unwrap());
        f.next().unwrap() * 3600.0 + f.next().unwrap() * 60.0 + f.next().unwrap()
    };
    for w in started.windows(2) {
        let gap = secs(&w[1]) - secs(&w[0]);
        assert!(gap >= 1.0, "replicas started {gap:.2} s apart: {started:?}");
    }
    let log = format!(
        "{:?}",
        h.stream_entries(&format!("agent:buildlog:{a}")).await
    );
    assert!(log.contains("a replica at a time"), "{log}");
    // more than the operator allows: refused with the cap named, and v3 serves on
    let want = running(&a);
    let v3 = add_with_replicas(&h, &a, "v4.0.0", "4");
    let mut f = h.deploy_fields(&a, &v3, "u1");
    f.action = Some(nasiko_contract::stream::Action::Update);
    let id = h.queue(&f).await;
    let s = h.wait_terminal_of(&a, &id, T).await;
    assert_eq!(s["status"], "failed", "{s:?}");
    assert!(s["message"].contains("AGENT_MAX_REPLICAS"), "{s:?}");
    assert_eq!(running(&a), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_job_waits_while_docker_is_unreachable_and_completes_when_it_returns() {
    // issue 12, finding 6: trouble of the machine is retried, never a failed job
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("nodocker");
    let _clean = AgentCleanup::new(&[&a]);
    let proxy = nasiko_tests::sockproxy::SocketProxy::start("/var/run/docker.sock").await;
    let mut h = Harness::new(&net.name).await;
    h.extra_env
        .push(("DOCKER_HOST".into(), proxy.docker_host()));
    let path = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    proxy.cut();
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    let waiting = wait_for("the job to wait for Docker", T, || async {
        let s = h.status(&a).await;
        assert_ne!(s.get("status").map(String::as_str), Some("failed"), "{s:?}");
        s.get("message")
            .filter(|m| m.contains("waiting for the machine"))
            .cloned()
    })
    .await;
    assert!(
        waiting.contains("Docker engine does not answer"),
        "{waiting}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.pending().await, 1, "the job stays pending while it waits");
    proxy.restore();
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    assert_eq!(
        says(&format!("agent-{a}"), &net.name).await,
        format!("hello from {a} v1.0.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_kill_soak_loses_nothing_and_leaves_one_container_per_agent() {
    // issue 12: SIGKILLs landing during builds, deploys and handovers, one build that hangs
    ensure_busybox_image();
    let net = TestNet::new();
    let names: Vec<String> = (0..10).map(|i| unique(&format!("soak{i}"))).collect();
    let hang = unique("soakhang");
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push(&hang);
    let _clean = AgentCleanup::new(&all);
    let mut h = Harness::new(&net.name).await;
    // two jobs at once, as when the soak was laid out: at the default four, the jobs are done
    // before 14 kills have landed (the rest of the settings are the defaults)
    h.extra_env.push(("MAX_CONCURRENT_JOBS".into(), "2".into()));
    let h = h;
    let slow = |agent: &str, version: &str, secs: u32| {
        h.root.add_slow("compose-agents-net", agent, version, secs)
    };
    let hp = slow(&hang, "v1.0.0", 600);
    let hang_job = h.queue(&h.deploy_fields(&hang, &hp, "u1")).await;
    let mut last_job = std::collections::HashMap::new();
    for a in &names {
        let p = slow(a, "v1.0.0", 1);
        last_job.insert(a.clone(), h.queue(&h.deploy_fields(a, &p, "u1")).await);
    }
    // six updates: blue/green switches to land kills in
    for a in &names[..6] {
        let p = slow(a, "v2.0.0", 1);
        let mut f = h.deploy_fields(a, &p, "u1");
        f.action = Some(nasiko_contract::stream::Action::Update);
        last_job.insert(a.clone(), h.queue(&f).await);
    }
    let mut kills = 0;
    // entries acknowledged so far (read by the group, no longer pending)
    let acked = || async {
        let mut c = h.con().await;
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("orchestration:commands")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        let int = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        groups
            .first()
            .map(|g| int(g.get("entries-read")) - int(g.get("pending")))
            .unwrap_or(0)
    };
    let total = 1 + 10 + 6;
    // how often each healthy job was running when a kill landed: a job started three times
    // without finishing is dead-lettered, by design (the hanging one's fate), so a healthy job
    // may be killed twice and must then be let finish
    let mut killed_in: std::collections::HashMap<String, u32> = Default::default();
    for k in 0..40u64 {
        if acked().await >= total {
            break; // everything is done: nothing left to kill
        }
        let twice: Vec<String> = killed_in
            .iter()
            .filter(|(_, n)| **n >= 2)
            .map(|(id, _)| id.clone())
            .collect();
        let mut w = h.spawn("c1");
        wait_for(
            "jobs killed twice finished, and one running",
            Duration::from_secs(180),
            || async {
                let pending = h.pending_ids().await;
                let healthy = pending.iter().any(|id| *id != hang_job);
                (twice.iter().all(|id| !pending.contains(id))
                    && (healthy || acked().await >= total))
                    .then_some(())
            },
        )
        .await;
        // the kill lands 0 to 1.5 s later: in a build, a compose up or a switch
        tokio::time::sleep(Duration::from_millis((k * 7919) % 1500)).await;
        w.signal(9);
        w.wait_exit(Duration::from_secs(10));
        kills += 1;
        // what was not acknowledged when it died was running (or about to run)
        for id in h
            .pending_ids()
            .await
            .into_iter()
            .filter(|id| *id != hang_job)
        {
            *killed_in.entry(id).or_default() += 1;
        }
    }
    println!("kill soak: {kills} SIGKILLs");
    let interrupted = killed_in.values().filter(|n| **n > 0).count();
    println!("kill soak: {interrupted} healthy jobs interrupted, {killed_in:?}");
    assert!(kills >= 14, "too few kills landed: {kills}");
    let _w = h.spawn("c1");
    for a in &names {
        let s = h
            .wait_terminal_of(a, &last_job[a], Duration::from_secs(180))
            .await;
        assert_eq!(s["status"], "completed", "{a} after {kills} kills: {s:?}");
    }
    let s = h.wait_terminal(&hang).await;
    assert_eq!(s["status"], "failed", "{s:?}");
    assert!(s["message"].contains("started 3 times"), "{s:?}");
    wait_for("nothing pending", T, || async {
        (h.pending().await == 0).then_some(())
    })
    .await;
    let dead = h.dead_letters().await;
    assert_eq!(
        dead.len(),
        1,
        "only the hanging job is dead-lettered: {dead:#?}; interrupted per job: {killed_in:?}"
    );
    for a in &names {
        assert_eq!(running(a).len(), 1, "{a}: one routable container");
        assert_eq!(
            slots_present(a),
            [serving(a)],
            "{a}: a replaced version is left"
        );
    }
    for a in &names[..6] {
        assert_eq!(
            says(&serving(a), &net.name).await,
            format!("hello from {a} v2.0.0")
        );
    }
    // no orphan network: one per agent, holding the agent alone (the hanging one never got
    // past its build, so it has none)
    let stack = format!("label=nasiko.stack={}", net.name);
    let mut nets: Vec<String> =
        docker_ok(&["network", "ls", "--filter", &stack, "--format", "{{.Name}}"])
            .lines()
            .map(String::from)
            .collect();
    nets.sort();
    let mut want: Vec<String> = names
        .iter()
        .map(|a| nasiko_contract::agent_network(&net.name, a))
        .collect();
    want.sort();
    assert_eq!(nets, want, "the agent networks after {kills} kills");
    for a in &names {
        let on = docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{range .Containers}}{{.Name}} {{end}}",
            &nasiko_contract::agent_network(&net.name, a),
        ]);
        assert_eq!(on.trim(), serving(a), "{a}'s network");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_failed_update_puts_the_previous_version_back_and_it_keeps_serving() {
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("update");
    let _clean = AgentCleanup::new(&[&a]);
    let h = Harness::new(&net.name).await;
    let v1 = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &v1, "u1")).await;
    assert_eq!(h.wait_terminal(&a).await["status"], "completed");
    // a good update: v2 replaces v1
    let v2 = h.root.add("compose-agents-net", &a, "v2.0.0", None);
    let mut f = h.deploy_fields(&a, &v2, "u1");
    f.action = Some(nasiko_contract::stream::Action::Update);
    f.version = Some("v2.0.0".into());
    f.cleanup_old = Some("False".into());
    let id = h.queue(&f).await;
    let s = h.wait_terminal_of(&a, &id, T).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    let (blue, green) = (
        format!("agent-{a}"),
        nasiko_contract::Slot::Green.container(&a),
    );
    assert_eq!(
        serving(&a),
        green,
        "v2 started beside v1, in the other slot"
    );
    assert_eq!(
        inspect(&blue)["State"]["Status"],
        "exited",
        "cleanup_old=False: v1 is kept, stopped"
    );
    assert_eq!(
        says(&green, &net.name).await,
        format!("hello from {a} v2.0.0")
    );
    // a broken update: the container exits; v2 is put back
    let v3 = h.root.add("exits-at-start", &a, "v3.0.0", None);
    let mut f = h.deploy_fields(&a, &v3, "u1");
    f.action = Some(nasiko_contract::stream::Action::Update);
    f.version = Some("v3.0.0".into());
    h.queue(&f).await;
    wait_for("the broken update to fail", T, || async {
        h.status(&a)
            .await
            .get("status")
            .filter(|s| *s == "failed")
            .map(|_| ())
    })
    .await;
    let st = h.status(&a).await;
    assert!(
        st["message"].contains(&format!("the version before it ({green}) keeps serving")),
        "{}",
        st["message"]
    );
    assert_eq!(serving(&a), green, "v2 was never stopped");
    assert_eq!(
        slots_present(&a),
        [green.as_str()],
        "the broken v3 is removed (it took the kept v1's slot)"
    );
    assert_eq!(
        says(&green, &net.name).await,
        format!("hello from {a} v2.0.0")
    );
    // each version's image is tagged by version too; a rollback to v1 starts it without a build
    let repo = format!("nasiko-agent-{a}");
    let id_of = |tag: &str| docker_ok(&["image", "inspect", "-f", "{{.Id}}", tag]);
    let v1_image = id_of(&format!("{repo}:version-v1.0.0"));
    id_of(&format!("{repo}:version-v2.0.0"));
    let mut f = h.deploy_fields(&a, &v1, "u1");
    f.action = Some(nasiko_contract::stream::Action::Rollback);
    f.target_version = Some("v1.0.0".into());
    f.version = None;
    let t0 = std::time::Instant::now();
    let id = h.queue(&f).await;
    let st = h.wait_terminal_of(&a, &id, T).await;
    let took = t0.elapsed();
    assert_eq!(st["status"], "completed", "{st:?}");
    assert_eq!(serving(&a), blue, "the rollback started beside v2, in blue");
    assert_eq!(slots_present(&a), [blue.as_str()], "v2 went");
    assert_eq!(
        says(&blue, &net.name).await,
        format!("hello from {a} v1.0.0")
    );
    println!("rollback to a kept version: queued -> completed in {took:?}");
    let log = format!(
        "{:?}",
        h.stream_entries(&format!("agent:buildlog:{a}")).await
    );
    assert!(
        log.contains("is up to date; not rebuilding"),
        "the rollback built: {log}"
    );
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.Image}}", &format!("agent-{a}")]),
        v1_image,
        "v1's kept image serves"
    );
    // replaced in place (update_strategy=recreate), a broken version puts the previous back
    let mut f = h.deploy_fields(&a, &v3, "u1");
    f.action = Some(nasiko_contract::stream::Action::Update);
    f.version = Some("v3.0.0".into());
    f.update_strategy = Some("recreate".into());
    let id = h.queue(&f).await;
    let st = h.wait_terminal_of(&a, &id, T).await;
    assert_eq!(st["status"], "failed", "{st:?}");
    assert!(
        st["message"].contains("was put back and is serving"),
        "{}",
        st["message"]
    );
    assert_eq!(serving(&a), blue);
    assert_eq!(
        says(&blue, &net.name).await,
        format!("hello from {a} v1.0.0")
    );
    // at most AGENT_KEEP_VERSIONS (3) images of the agent are kept, each with all its tags
    let imgs = docker_ok(&["images", "-q", "--filter", &format!("reference={repo}")]);
    let ids: std::collections::BTreeSet<&str> = imgs.lines().collect();
    assert!(ids.len() <= 3, "{imgs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_build_agent_killed_mid_build_resumes_the_job_and_completes_it_once() {
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("slowbuild");
    let _clean = AgentCleanup::new(&[&a]);
    let h = Harness::new(&net.name).await;
    let path = h.root.add_slow("dockerfile-only", &a, "v1.0.0", 4);
    let mut w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    wait_for("the build to start", T, || async {
        h.status(&a)
            .await
            .get("status")
            .filter(|s| *s == "building")
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.signal(9);
    w.wait_exit(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let orphans = std::process::Command::new("pgrep")
        .args(["-f", &format!("docker build .*nasiko-agent-{a}")])
        .output()
        .unwrap();
    assert!(
        orphans.stdout.is_empty(),
        "the build died with the build agent: {}",
        String::from_utf8_lossy(&orphans.stdout)
    );
    assert_eq!(
        h.pending().await,
        1,
        "the job is still pending after the crash"
    );
    let _w2 = h.spawn("c1");
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    wait_for("nothing pending", T, || async {
        (h.pending().await == 0).then_some(())
    })
    .await;
    // the backend hears of it once: the report goes out after the terminal status (the outbox),
    // so wait for it, then give a second report time to show up
    completions_settle_at(&h, &a, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn hostile_packages_are_refused_by_a_deploy_before_any_docker_command() {
    // (tests/cli.rs: the same corpus through `plan` with no docker on PATH)
    ensure_busybox_image();
    let cases = nasiko_tests::agents::hostile_corpus();
    assert!(cases.len() >= 100, "the corpus shrank: {}", cases.len());
    let net = TestNet::new();
    let h = Harness::new(&net.name).await;
    // a giant compose file (made here, not kept in the repository)
    let giant = format!(
        "services:\n  a:\n    build: .\n    environment:\n{}",
        "      X: \"0123456789012345678901234567890123456789\"\n".repeat(6000)
    );
    let mut agents = Vec::new();
    for (i, (case, needle)) in cases.iter().enumerate() {
        let a = unique(&format!("hostile{i}"));
        let path = h.root.add(&format!("hostile/{case}"), &a, "v1.0.0", None);
        agents.push((a, path, case.clone(), needle.clone()));
    }
    let a = unique("hostilegiant");
    let path = h.root.add("hostile/privileged", &a, "v1.0.0", None);
    std::fs::write(
        h.root.path.join(&a).join("v1.0.0/docker-compose.yml"),
        &giant,
    )
    .unwrap();
    agents.push((a, path, "giant".into(), "at most 256 KiB".into()));
    let names: Vec<&str> = agents.iter().map(|(a, ..)| a.as_str()).collect();
    let _clean = AgentCleanup::new(&names);
    // deploys of every one, then a healthy package: the build agent survives them all
    let _w = h.spawn("c1");
    for (a, path, ..) in &agents {
        h.queue(&h.deploy_fields(a, path, "u1")).await;
    }
    let good = unique("afterhostile");
    let _clean_good = AgentCleanup::new(&[&good]);
    let gp = h.root.add("compose-agents-net", &good, "v1.0.0", None);
    h.queue(&h.deploy_fields(&good, &gp, "u1")).await;
    for (a, _, case, needle) in &agents {
        let s = h.wait_terminal(a).await;
        assert_eq!(s["status"], "failed", "{case}: {s:?}");
        assert!(
            s["message"].contains(needle.as_str()),
            "{case}: wanted '{needle}', got {s:?}"
        );
    }
    assert_eq!(h.wait_terminal(&good).await["status"], "completed");
    // nothing was built or started for any of them
    let built = docker_ok(&[
        "images",
        "--format",
        "{{.Repository}}",
        "--filter",
        "reference=nasiko-agent-hostile*",
    ]);
    assert!(built.trim().is_empty(), "built: {built}");
    let started = docker_ok(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        "name=agent-hostile",
    ]);
    assert!(started.trim().is_empty(), "started: {started}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn the_python_example_plans_as_upstreams_agents_deploy() {
    // examples/python-a2a-agent needs python:3.12-slim (no registry here): checked with plan
    let net = TestNet::new();
    let h = Harness::new(&net.name).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-a2a-agent");
    let out = h
        .command("c1")
        .args(["plan", dir.to_str().unwrap(), "--name", "python-a2a-agent"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "container_name: agent-python-a2a-agent",
        "nasiko.type: agent",
        "not published on the host",
        "no-new-privileges:true",
        &nasiko_contract::agent_network(&net.name, "python-a2a-agent"),
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(!text.contains("published:"), "a host port:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn plan_prints_the_effective_compose_and_undeploy_removes_the_agent() {
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("planned");
    let _clean = AgentCleanup::new(&[&a]);
    let h = Harness::new(&net.name).await;
    let path = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let dir = h.root.path.join(&a).join("v1.0.0");
    let out = h
        .command("c1")
        .args(["plan", dir.to_str().unwrap(), "--owner-id", "u5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("container_name: agent-{a}"))
            && text.contains("nasiko.owner: u5")
            && text.contains(&nasiko_contract::agent_network(&net.name, &a)),
        "{text}"
    );
    assert!(
        nasiko_tests::docker::docker(&["inspect", &format!("agent-{a}")])
            .status
            .code()
            != Some(0),
        "plan runs nothing"
    );
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    assert_eq!(h.wait_terminal(&a).await["status"], "completed");
    // a gateway joined to the agent's network does not keep the network alive
    let own = nasiko_contract::agent_network(&net.name, &a);
    net.run(&format!("{a}-gw"), &[], &["sleep", "600"]);
    docker_ok(&[
        "network",
        "connect",
        "--alias",
        "kong-gateway",
        &own,
        &format!("{a}-gw"),
    ]);
    let out = h.command("c1").args(["undeploy", &a]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 1 container"),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        nasiko_tests::docker::docker(&["inspect", &format!("agent-{a}")])
            .status
            .code()
            != Some(0)
    );
    assert!(
        !nasiko_tests::docker::docker(&["network", "inspect", &own])
            .status
            .success(),
        "the agent's network went with it"
    );
    assert!(
        inspect(&format!("{a}-gw"))["State"]["Running"] == true,
        "the gateway stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn legacy_shared_mode_puts_agents_on_the_shared_network_and_makes_none() {
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("legacy");
    let _clean = AgentCleanup::new(&[&a]);
    let mut h = Harness::new(&net.name).await;
    h.extra_env.push(("AGENT_NETWORKS".into(), "shared".into()));
    let path = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    assert_eq!(h.wait_terminal(&a).await["status"], "completed");
    let c = inspect(&format!("agent-{a}"));
    let nets: Vec<&String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(nets, [&net.name]);
    assert!(!nasiko_tests::docker::docker(&[
        "network",
        "inspect",
        &nasiko_contract::agent_network(&net.name, &a)
    ])
    .status
    .success());
    ask(&format!("agent-{a}"), &net.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn the_compose_v2_plugin_deploys_the_template_too() {
    ensure_busybox_image();
    let v2 = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .unwrap();
    assert!(
        v2.status.success(),
        "the compose v2 plugin is missing; scripts/test.sh installs it"
    );
    let net = TestNet::new();
    let a = unique("vtwo");
    let _clean = AgentCleanup::new(&[&a]);
    let mut h = Harness::new(&net.name).await;
    h.extra_env.push(("COMPOSE_FLAVOR".into(), "v2".into()));
    let path = h.root.add("compose-agents-net", &a, "v1.0.0", None);
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &path, "u2")).await;
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    let c = inspect(&format!("agent-{a}"));
    assert_eq!(c["Config"]["Labels"]["nasiko.owner"], "u2");
    assert!(c["NetworkSettings"]["Networks"]
        .get(nasiko_contract::agent_network(&net.name, &a))
        .is_some());
    let reply = ask(&format!("agent-{a}"), &net.name).await;
    assert_eq!(
        reply["result"]["parts"][0]["text"],
        format!("hello from {a} v1.0.0")
    );
}

/// `nslookup name` from a fresh container on `net`: whether Docker's DNS answers it.
fn resolves_on(net: &str, name: &str) -> bool {
    nasiko_tests::docker::docker(&[
        "run",
        "--rm",
        "--network",
        net,
        "nasiko-test-busybox:1",
        "nslookup",
        name,
    ])
    .status
    .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn ways_in_closed_without_a_refusal_are_closed_on_the_running_container() {
    // tests/agents/closed-without-refusal: each line of its compose file, read where it acts
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("closed");
    let _clean = AgentCleanup::new(&[&a]);
    let h = Harness::new(&net.name).await;
    let path = h.root.add("closed-without-refusal", &a, "v1.0.0", None);
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    // build.dockerfile is what is built (the root's Dockerfile fails)
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed", "{s:?}");
    let container = format!("agent-{a}");
    let c = inspect(&container);
    // the package's .env configured nothing of compose's (DOCKER_HOST, COMPOSE_PROJECT_NAME)
    assert_eq!(
        c["Config"]["Labels"]["com.docker.compose.project"],
        nasiko_contract::compose_project(&a)
    );
    // `$` reaches the agent as written in .env; `$$` in the compose file is compose's `$`;
    // `${…}` is never the build agent's own environment
    let env = env_of(&c);
    for want in [
        "SECRET=pa$$word$x",
        "LITERAL=a$b",
        "LEAK_REDIS=",
        "LEAK_HOME=unset",
    ] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    // on its own network the agent answers to agent-{name} only, whatever its key
    let own = nasiko_contract::agent_network(&net.name, &a);
    let on_own = &c["NetworkSettings"]["Networks"][&own];
    assert!(on_own.is_object(), "not on its own network {own}");
    let aliases = on_own["Aliases"].to_string();
    assert!(
        !aliases.to_lowercase().contains("kong-gateway"),
        "{aliases}"
    );
    assert!(resolves_on(&own, &container), "the DNS probe itself works");
    for name in ["kong-gateway", "Kong-Gateway", "helper"] {
        assert!(
            !resolves_on(&own, name),
            "{name} resolves on the agent's network"
        );
    }
    // on the package's own network its dependency still finds it by its key
    let helper = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!(
            "label=com.docker.compose.project={}",
            nasiko_contract::compose_project(&a)
        ),
        "--filter",
        "label=com.docker.compose.service=helper",
    ]);
    let helper = helper.trim();
    assert!(!helper.is_empty(), "the helper runs");
    let found = nasiko_tests::docker::docker(&["exec", helper, "nslookup", "Kong-Gateway"]);
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
    // binds of the package are read-only: the agent cannot swap its build folder
    for path in ["/app/x", "/data/x"] {
        let w = nasiko_tests::docker::docker(&["exec", &container, "touch", path]);
        assert!(!w.status.success(), "{path} is writable");
        assert!(
            String::from_utf8_lossy(&w.stderr).contains("Read-only"),
            "{}",
            String::from_utf8_lossy(&w.stderr)
        );
    }
    // the caps are the agent's, shared out: two services, 1 GiB and half a CPU in all
    let hc_helper = inspect(helper);
    let mem = c["HostConfig"]["Memory"].as_u64().unwrap()
        + hc_helper["HostConfig"]["Memory"].as_u64().unwrap();
    let cpu = c["HostConfig"]["NanoCpus"].as_u64().unwrap()
        + hc_helper["HostConfig"]["NanoCpus"].as_u64().unwrap();
    assert!(mem <= 1 << 30 && mem > 1000 << 20, "{mem}");
    assert!((490_000_000..=500_000_000).contains(&cpu), "{cpu}");
}

/// The first `docker` on PATH: the real one a wrapper hands over to.
fn real_docker() -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
        .expect("docker is on PATH")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn an_image_removed_between_its_build_and_its_start_is_built_again() {
    // Docker 20.10's builder gives identical builds one image, so another agent's image cleanup
    // can take the one a build has just tagged (CI saw compose then try to pull it). Here the
    // docker on the build agent's PATH runs the real one and, after the first build, removes the
    // image it built.
    ensure_busybox_image();
    let net = TestNet::new();
    let a = unique("gone");
    let _clean = AgentCleanup::new(&[&a]);
    let mut h = Harness::new(&net.name).await;
    // a temporary folder, removed on drop
    let wrapper_dir = nasiko_tests::agents::AgentsRoot::new();
    let bin = wrapper_dir.path.clone();
    let wrapper = bin.join("docker");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\"{real}\" \"$@\"; rc=$?\nprev=; tag=\nfor x in \"$@\"; do [ \"$prev\" = -t ] && tag=$x; prev=$x; done\n\
             if [ \"$1\" = build ] && [ $rc = 0 ] && mkdir \"{once}\" 2>/dev/null; then \"{real}\" rmi \"$tag\" >/dev/null; fi\nexit $rc\n",
            real = real_docker().display(),
            once = bin.join("removed").display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    h.extra_env
        .push(("PATH".into(), path.to_string_lossy().into_owned()));
    let pkg = h.root.add("dockerfile-only", &a, "v1.0.0", None);
    let _w = h.spawn("c1");
    h.queue(&h.deploy_fields(&a, &pkg, "u1")).await;
    let s = h.wait_terminal(&a).await;
    assert!(
        bin.join("removed").exists(),
        "the wrapper removed the image"
    );
    assert_eq!(s["status"], "completed", "{s:?}");
    let log = h.stream_entries(&format!("agent:buildlog:{a}")).await;
    assert!(
        format!("{log:?}").contains("is gone since its build; building it again"),
        "{log:?}"
    );
    let reply = ask(&format!("agent-{a}"), &net.name).await;
    assert_eq!(
        reply["result"]["parts"][0]["text"],
        format!("hello from {a} v1.0.0")
    );
}
