//! Consumer-group semantics against a real redis-server and the backend stand-in, with the
//! build-agent binary as a process (deploy stage as a no-op, so these run without Docker builds).

mod support;

use nasiko_contract::stream::JobEntry;
use nasiko_tests::backend::Mode;
use nasiko_tests::docker::unique;
use nasiko_tests::process::wait_for;
use std::time::Duration;
use support::{Harness, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn malformed_entries_each_end_failed_with_a_clear_reason_and_are_acknowledged() {
    let h = Harness::new("nasiko-network").await;
    let good = unique("good");
    h.root.add("dockerfile-only", &good, "v1.0.0", None);
    let _w = h.spawn_noop("c1");
    type Case<'a> = (String, Vec<(&'a str, &'a [u8])>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "missing-path".into(),
            vec![
                ("command", b"deploy_agent"),
                ("agent_name", b"missing-path"),
            ],
            "missing required field 'agent_path'",
        ),
        (
            "dotdot".into(),
            vec![
                ("command", b"deploy_agent"),
                ("agent_name", b"dotdot"),
                ("agent_path", b"/app/agents/../../etc"),
            ],
            "contains '..'",
        ),
        (
            "absolute".into(),
            vec![
                ("command", b"deploy_agent"),
                ("agent_name", b"absolute"),
                ("agent_path", b"/etc"),
            ],
            "outside the agents root",
        ),
        (
            "unknown-action".into(),
            vec![
                ("command", b"deploy_agent"),
                ("action", b"explode_agent"),
                ("agent_name", b"unknown-action"),
                ("agent_path", b"/app/agents/x"),
            ],
            "unknown action 'explode_agent'",
        ),
        (
            "junk".into(),
            vec![
                ("command", b"deploy_agent"),
                ("agent_name", b"junk"),
                ("agent_path", &[0xff, 0xfe, 0x00, 0x9f]),
            ],
            "not valid UTF-8",
        ),
    ];
    for (_, fields, _) in &cases {
        h.queue_raw(fields).await;
    }
    // names that cannot be reported under (spaces, upper case) and entries without a command
    h.queue(&JobEntry::deploy("My Agent", "/app/agents/x"))
        .await;
    h.queue(&JobEntry::deploy("UPPER", "/app/agents/x")).await;
    h.queue_raw(&[("\u{1}\u{2}", &[0xc3, 0x28])]).await;
    let path = format!("/app/agents/{good}/v1.0.0");
    h.queue(&h.deploy_fields(&good, &path, "u1")).await;
    for (agent, _, reason) in &cases {
        let s = h.wait_terminal(agent).await;
        assert_eq!(s["status"], "failed", "{agent}: {s:?}");
        assert!(s["message"].contains(reason), "{agent}: {}", s["message"]);
        let last = wait_for("the backend to hear of the failure", T, || async {
            h.upload_statuses(agent)
                .into_iter()
                .find(|c| c.body["status"] == "failed")
        })
        .await;
        assert_eq!(last.body["status"], "failed");
        assert!(last.body["error_details"][0]
            .as_str()
            .unwrap()
            .contains(reason));
    }
    assert_eq!(
        h.wait_terminal(&good).await["status"],
        "completed",
        "a good job after bad ones still runs"
    );
    wait_for("every entry acknowledged", T, || async {
        (h.pending().await == 0).then_some(())
    })
    .await;
    // the three without a usable name are in the dead-letter stream, with the reason, for an
    // operator to see (issue 12, finding 5)
    let dead = h.dead_letters().await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(
        dead.iter().all(|d| d["reason"].starts_with("rejected: ")),
        "{dead:?}"
    );
    assert!(dead
        .iter()
        .any(|d| d.get("agent_name").map(String::as_str) == Some("My Agent")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_backend_that_never_answers_does_not_slow_the_reader_and_reasons_are_capped() {
    // issue 12, finding 4: reports used to be sent inside the reader loop, with retries
    let h = Harness::new("nasiko-network").await;
    h.backend.set_mode(Mode {
        status: None,
        delay_ms: 120_000,
    });
    let _w = h.spawn_noop("c1");
    let n = 300;
    let huge = format!("/app/agents/{}", "x".repeat(200_000));
    let started = std::time::Instant::now();
    for i in 0..n {
        let name = format!("hostile{i}");
        let path = if i == 0 { huge.as_str() } else { "/etc" };
        h.queue(&JobEntry {
            base_url: Some(h.backend.url()),
            ..JobEntry::deploy(&name, path)
        })
        .await;
    }
    let good = unique("good");
    let path = h.root.add("dockerfile-only", &good, "v1.0.0", None);
    h.queue(&h.deploy_fields(&good, &path, "u1")).await;
    assert_eq!(h.wait_terminal(&good).await["status"], "completed");
    wait_for("every entry acknowledged", T, || async {
        (h.pending().await == 0).then_some(())
    })
    .await;
    let took = started.elapsed();
    println!(
        "{} hostile entries and a good one consumed in {took:?} ({:.0} entries/s) with a backend that never answers",
        n,
        (n + 1) as f64 / took.as_secs_f64()
    );
    let s = h.status("hostile0").await;
    assert_eq!(s["status"], "failed");
    assert!(
        s["message"].len() < 1000,
        "the stored reason is capped: {} bytes",
        s["message"].len()
    );
    assert!(s["message"].contains("more bytes"), "{}", s["message"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_job_goes_through_the_stage_table_and_the_hash_has_no_stale_fields() {
    let h = Harness::new("nasiko-network").await;
    let a = unique("stages");
    let path = h.root.add("dockerfile-only", &a, "v1.0.0", None);
    // a stale field from an earlier run
    let mut c = h.con().await;
    let _: () = redis::cmd("HSET")
        .arg(format!("agent:status:{a}"))
        .arg("error")
        .arg("old failure")
        .query_async(&mut c)
        .await
        .unwrap();
    let _w = h.spawn_noop("c1");
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "completed");
    assert!(!s.contains_key("error"), "stale fields are gone: {s:?}");
    for k in [
        "agent_name",
        "last_updated",
        "updated_by",
        "owner_id",
        "upload_id",
        "url",
    ] {
        assert!(s.contains_key(k), "{k} in {s:?}");
    }
    assert_eq!(
        s["url"],
        format!("http://gateway.test:9100/agents/agent-{a}")
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("agent:status:{a}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 86000 && ttl <= 86400, "{ttl}");
    wait_for("the completion to reach the backend", T, || async {
        (h.upload_statuses(&a).len() >= 2).then_some(())
    })
    .await;
    let seq: Vec<(String, u64)> = h
        .upload_statuses(&a)
        .iter()
        .map(|c| {
            (
                c.body["status"].as_str().unwrap().to_string(),
                c.body["progress_percentage"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seq,
        [
            ("orchestration_processing".to_string(), 5),
            ("completed".to_string(), 100)
        ],
        "the cluster base_url fell back to NASIKO_API_URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_poison_entry_reaches_the_dead_letter_stream_after_n_started_attempts() {
    let h = Harness::new("nasiko-network").await;
    let a = unique("poison");
    let path = h.root.add("dockerfile-only", &a, "v1.0.0", None);
    let mut c = h.con().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("orchestration:commands")
        .arg("orchestrator")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await
        .unwrap();
    let id = h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    // delivered to a consumer that died holding it, after three attempts had started and died
    h.as_if_started_and_died(&id, 3).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // idle longer than CLAIM_IDLE_SECS
    let _w = h.spawn_noop("c1");
    let s = h.wait_terminal(&a).await;
    assert_eq!(s["status"], "failed");
    assert!(s["message"].contains("started 3 times"), "{}", s["message"]);
    let text = format!("{:?}", h.dead_letters().await);
    assert!(text.contains(&id) && text.contains(&a), "{text}");
    wait_for("the poison entry acknowledged", T, || async {
        (h.pending().await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_job_abandoned_by_a_killed_consumer_is_reclaimed_but_a_live_one_is_never_stolen() {
    let h = Harness::new("nasiko-network").await;
    let live = unique("live");
    let path = h.root.add("dockerfile-only", &live, "v1.0.0", None);
    // each job stays in flight for a while
    let slow = |consumer: &str| {
        let mut c = h.command(consumer);
        c.env("NOOP_DEPLOY", "true").env("NOOP_DEPLOY_MS", "3000");
        nasiko_tests::process::ChildGuard::spawn("build-agent", &mut c)
    };
    let mut a = slow("consumer-a");
    h.queue(&h.deploy_fields(&live, &path, "u1")).await;
    wait_for("consumer-a to take the job", T, || async {
        h.status(&live).await.get("updated_by").cloned()
    })
    .await;
    let b = h.spawn_noop("consumer-b");
    let s = h.wait_terminal(&live).await;
    assert_eq!(
        s["updated_by"], "build-agent@consumer-a",
        "the live job stays with its consumer: {s:?}"
    );
    wait_for("the completion to reach the backend", T, || async {
        h.upload_statuses(&live)
            .iter()
            .any(|c| c.body["status"] == "completed")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // longer than CLAIM_IDLE_SECS: nobody else runs it
    let completions = h
        .upload_statuses(&live)
        .iter()
        .filter(|c| c.body["status"] == "completed")
        .count();
    assert_eq!(completions, 1);
    drop(b);

    // now consumer-a dies holding a job; consumer-b takes it over
    let dead = unique("abandoned");
    let path = h.root.add("dockerfile-only", &dead, "v1.0.0", None);
    h.queue(&h.deploy_fields(&dead, &path, "u1")).await;
    wait_for("consumer-a to take the second job", T, || async {
        h.status(&dead).await.get("updated_by").cloned()
    })
    .await;
    a.signal(9);
    a.wait_exit(Duration::from_secs(5));
    let _b2 = h.spawn_noop("consumer-b");
    let s = h.wait_terminal(&dead).await;
    assert_eq!(
        (s["status"].as_str(), s["updated_by"].as_str()),
        ("completed", "build-agent@consumer-b"),
        "{s:?}"
    );
    wait_for("nothing pending", T, || async {
        (h.pending().await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_dead_backend_does_not_stall_the_queue_and_a_restarted_redis_loses_nothing() {
    let mut h = Harness::new("nasiko-network").await;
    let mut w = h.spawn_noop("c1");
    h.backend.set_mode(Mode {
        status: Some(500),
        delay_ms: 0,
    });
    let a = unique("be-down");
    let path = h.root.add("dockerfile-only", &a, "v1.0.0", None);
    h.queue(&h.deploy_fields(&a, &path, "u1")).await;
    assert_eq!(h.wait_terminal(&a).await["status"], "completed");
    wait_for(
        "two stage reports, three bounded attempts each",
        T,
        || async { (h.upload_statuses(&a).len() >= 6).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.upload_statuses(&a).len(),
        6,
        "no more than three attempts per report"
    );
    h.backend.set_mode(Mode::default());

    h.redis.restart();
    let b = unique("after-restart");
    let path = h.root.add("dockerfile-only", &b, "v1.0.0", None);
    h.queue(&h.deploy_fields(&b, &path, "u1")).await;
    assert_eq!(
        h.wait_terminal(&b).await["status"],
        "completed",
        "the worker reconnected to the restarted Redis"
    );
    assert!(w.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn sigterm_lets_the_running_job_finish_and_leaves_queued_ones_pending() {
    let h = Harness::new("nasiko-network").await;
    let a = unique("graceful");
    let b = unique("queued");
    let pa = h.root.add("dockerfile-only", &a, "v1.0.0", None);
    let pb = h.root.add("dockerfile-only", &b, "v1.0.0", None);
    let mut c = h.command("c1");
    c.env("NOOP_DEPLOY", "true")
        .env("NOOP_DEPLOY_MS", "1500")
        .env("MAX_CONCURRENT_JOBS", "1");
    let mut w = nasiko_tests::process::ChildGuard::spawn("build-agent", &mut c);
    h.queue(&h.deploy_fields(&a, &pa, "u1")).await;
    h.queue(&h.deploy_fields(&b, &pb, "u1")).await;
    wait_for("the first job to start", T, || async {
        h.status(&a).await.get("status").cloned()
    })
    .await;
    w.signal(15);
    let code = w
        .wait_exit(Duration::from_secs(30))
        .expect("exits within the grace period");
    assert!(code.success(), "{code:?}");
    assert_eq!(
        h.status(&a).await["status"],
        "completed",
        "the running job finished"
    );
    assert!(
        h.status(&b).await.is_empty(),
        "the queued job did not start"
    );
    // the reader takes no more than it can start (issue 12, finding 1): the queued job was
    // never read, so it waits in the stream, undelivered, for the next start
    assert_eq!(h.pending().await, 0, "the queued job was not read ahead");
    let _w2 = h.spawn_noop("c1");
    assert_eq!(
        h.wait_terminal(&b).await["status"],
        "completed",
        "resumed on the next start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn submit_queues_a_job_like_the_backend_and_status_prints_the_hash() {
    let h = Harness::new("nasiko-network").await;
    let a = unique("cli");
    let path = h.root.add("dockerfile-only", &a, "v1.0.0", None);
    let out = h
        .command("c1")
        .args([
            "submit",
            "--agent-name",
            &a,
            "--agent-path",
            &path,
            "--owner-id",
            "u9",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _w = h.spawn_noop("c1");
    assert_eq!(h.wait_terminal(&a).await["owner_id"], "u9");
    let out = h.command("c1").args(["status", &a]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("status: completed") && text.contains(&format!("agent_name: {a}")),
        "{text}"
    );
    let bad = h
        .command("c1")
        .args(["submit", "--agent-name", "Bad Name", "--agent-path", "/x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid agent name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_dead_letter_is_written_once_when_its_ack_was_lost_to_a_crash() {
    // a worker killed between the dead-letter write and the ack meets the entry again on restart
    let h = Harness::new("nasiko-network").await;
    let client = redis::Client::open(h.redis.url()).unwrap();
    let stream = build_agent::stream::Stream {
        con: redis::aio::ConnectionManager::new(client).await.unwrap(),
        key: "orchestration:commands".into(),
        group: "orchestrator".into(),
        consumer: "c1".into(),
        dead_letter: "orchestration:commands:dead-letter".into(),
    };
    let entry = |id: &str| build_agent::stream::Entry {
        id: id.into(),
        fields: Some(vec![("agent_name".into(), b"poison".to_vec())]),
    };
    for _ in 0..2 {
        stream
            .dead_letter(&entry("1-0"), "started 3 times", 3)
            .await
            .unwrap();
    }
    stream
        .dead_letter(&entry("2-0"), "started 3 times", 3)
        .await
        .unwrap();
    let dead = h.dead_letters().await;
    let ids: Vec<&str> = dead.iter().map(|d| d["original_id"].as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0"], "{dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn submit_wait_prints_the_job_and_its_outcome_and_exits_with_it() {
    let h = Harness::new("nasiko-network").await;
    let submit = |name: &str, path: &str, wait: &str| {
        let mut c = h.command("cli");
        c.args([
            "submit",
            "--agent-name",
            name,
            "--agent-path",
            path,
            "--wait",
            wait,
        ]);
        c.output().unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    // nobody consumes yet: the wait runs out, and says where to look
    let late = unique("late");
    h.root.add("dockerfile-only", &late, "v1.0.0", None);
    let o = submit(&late, &format!("/app/agents/{late}/v1.0.0"), "1");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("has not finished after 1 s"),
        "{}",
        text(&o.stderr)
    );
    let _w = h.spawn_noop("c1");
    // a deploy: the job's id, then its completion
    let good = unique("good");
    h.root.add("dockerfile-only", &good, "v1.0.0", None);
    let o = submit(&good, &format!("/app/agents/{good}/v1.0.0"), "60");
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains('-'), "a stream id first: {out}");
    assert_eq!(h.status(&good).await["stream_id"], lines[0]);
    assert!(lines[1].starts_with("completed in "), "{out}");
    // a job that fails: exit 1 with the reason
    let bad = unique("bad");
    let o = submit(&bad, "/app/agents/../../etc", "60");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(err.contains("failed") && err.contains("'..'"), "{err}");
}
