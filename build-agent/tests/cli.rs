//! The developer commands' contract with scripts: `names` prints what the daemon itself uses and
//! refuses what its rule refuses (exit 2); a Redis that does not answer is exit 69, "try later".

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
        ]
    );
    // compose project names may not hold '.': the project differs from the container
    assert_eq!(
        lines[1][2], "agent-v1_d2__x",
        "one project per name (rtcoll.x is not rtcoll-x)"
    );
    assert_eq!(lines[1][1], "agent-v1.2_x");
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
