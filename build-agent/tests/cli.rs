//! The developer commands' contract with scripts: `names` prints what the daemon itself uses and
//! refuses what its rule refuses (exit 2); a Redis that does not answer is exit 69, "try later";
//! `plan` refuses every hostile package before any docker command (none is on its PATH here).

use std::process::Command;

fn build_agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_build-agent"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("build-agent runs")
}

#[test]
fn names_prints_the_names_the_daemon_uses_and_refuses_bad_ones_with_the_rule() {
    let o = build_agent(&["names", "a2a-translator", "v1.2_x"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "a2a-translator",
            &build_agent::deploy::compose::container_name("a2a-translator"),
            &build_agent::deploy::compose::project_name("a2a-translator"),
            &build_agent::deploy::image_repo("a2a-translator"),
            "agent-a2a-translator",
            "agent-a2a-translator-route",
            "nasiko-network-agent-a2a-translator",
            "agentgreen-a2a-translator",
            "agentgreen-a2a-translator",
        ]
    );
    // compose project names may not hold '.': the project differs from the container
    assert_eq!(
        lines[1][2], "agent-v1_d2__x",
        "one project per name (rtcoll.x is not rtcoll-x)"
    );
    assert_eq!(lines[1][1], "agent-v1.2_x");
    assert_eq!(lines[1][6], "nasiko-network-agent-v1_d2__x");
    assert_eq!(lines[1][7..], ["agentgreen-v1.2_x", "agentgreen-v1_d2__x"]);
    for bad in ["../x", "My Agent", "", &"a".repeat(129)] {
        let o = build_agent(&["names", "ok", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(
            o.stdout.is_empty(),
            "nothing printed for a list with a bad name"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("not a valid agent name") && err.contains("at most 128"),
            "{err}"
        );
    }
}

#[test]
fn a_redis_that_does_not_answer_is_exit_69_and_says_what_to_set() {
    // a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = build_agent(&[
        "--redis-url",
        &format!("redis://127.0.0.1:{port}"),
        "status",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&o.stderr).contains("REDIS_HOST"));
}

#[test]
fn plan_refuses_every_hostile_package_before_any_docker_command() {
    let cases = nasiko_tests::agents::hostile_corpus();
    assert!(cases.len() >= 100, "the corpus shrank: {}", cases.len());
    let root = nasiko_tests::agents::AgentsRoot::new();
    // no docker and no compose to run: a refusal that needed one would say so instead
    let empty = root.path.join("no-docker");
    std::fs::create_dir_all(&empty).unwrap();
    for (i, (case, needle)) in cases.iter().enumerate() {
        let a = format!("hostile{i}");
        root.add(&format!("hostile/{case}"), &a, "v1", None);
        let dir = root.path.join(&a).join("v1");
        let out = Command::new(env!("CARGO_BIN_EXE_build-agent"))
            .args(["plan", dir.to_str().unwrap(), "--name", &a])
            .env("PATH", &empty)
            .env("RUST_LOG", "error")
            .output()
            .expect("build-agent runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: plan did not refuse it: {err}"
        );
        assert!(
            err.contains(needle.as_str()),
            "{case}: wanted '{needle}', got: {err}"
        );
    }
    // a package that passes goes on to compose, which is not there: so it is not refused early
    root.add("compose-agents-net", "fine", "v1", None);
    let out = Command::new(env!("CARGO_BIN_EXE_build-agent"))
        .args([
            "plan",
            root.path.join("fine/v1").to_str().unwrap(),
            "--name",
            "fine",
        ])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither `docker compose`"), "{err}");
}
