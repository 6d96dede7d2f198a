//! The peer bench (issue 24), not a test: upstream's Python registry
//! (`agent-gateway/registry/registry.py`, from the user's own Nasiko checkout, in a venv that
//! `scripts/bench.sh --peer` makes from its `requirements.txt`) beside our registry sidecar. Each
//! has a Kong emulator of its own (the stack's `strict` setting); both watch the same agent
//! containers on one Docker network, each at its own default interval (the Python registry's
//! REGISTRY_INTERVAL, 30 s; the sidecar's events). Prints the comparison with ratios.
//!
//! Run: scripts/bench.sh --peer [NASIKO_CHECKOUT]. It sets PEER_CHECKOUT and PEER_PYTHON; without
//! them this says what it needs and skips. PEER_STARTS (5) start/stop cycles, PEER_AGENTS
//! (20,100) for the cold start and the minute at rest.

use nasiko_tests::docker::{docker, docker_ok, ensure_busybox_image, unique, TestNet};
use nasiko_tests::kong::{KongEmulator, Options};
use nasiko_tests::process::{free_port, ChildGuard};
use nasiko_tests::procfs::{cpu_secs, rss_mib};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The Python registry's default REGISTRY_INTERVAL.
const PYTHON_INTERVAL: Duration = Duration::from_secs(30);

/// How long a registry may take to show a change: the Python registry's 30 s interval, and its
/// sync of every agent after it.
const PATIENCE: Duration = Duration::from_secs(75);

/// One side of the comparison: a registry process and the Kong it configures.
struct Side {
    label: &'static str,
    kong: KongEmulator,
    process: ChildGuard,
}

/// What the Python registry needs: the checkout and the venv's python.
struct PeerSetup {
    registry_dir: PathBuf,
    python: PathBuf,
}

impl PeerSetup {
    fn from_env() -> Result<PeerSetup, String> {
        let checkout = std::env::var_os("PEER_CHECKOUT")
            .ok_or("PEER_CHECKOUT (a Nasiko checkout) is not set")?;
        let python = std::env::var_os("PEER_PYTHON").ok_or(
            "PEER_PYTHON (the venv's python, with the registry's requirements) is not set",
        )?;
        let registry_dir = Path::new(&checkout).join("agent-gateway/registry");
        if !registry_dir.join("registry.py").is_file() {
            return Err(format!("{} has no registry.py", registry_dir.display()));
        }
        Ok(PeerSetup {
            registry_dir,
            python: PathBuf::from(python),
        })
    }
}

/// One line of the comparison: the figure, the Python registry's, ours, and how many times
/// better ours is (the Python registry's over ours, where both are a cost).
struct Row {
    figure: String,
    python: String,
    ours: String,
    ratio: String,
}

fn ratio(python: f64, ours: f64) -> String {
    if ours > 0.0 {
        format!("{:.0}x", python / ours)
    } else {
        "-".into()
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

/// An agent container as both registries see one: named `agent-{name}` (the Python registry's
/// rule), labelled as the build agent labels it (the sidecar's), on `net`. Created, not started.
fn create_agent(net: &TestNet, name: &str) -> String {
    let c = format!("agent-{name}");
    let label = format!("{}={}", nasiko_tests::docker::TEST_LABEL, net.run);
    docker_ok(&[
        "create",
        "--name",
        &c,
        "--network",
        &net.name,
        "--label",
        &label,
        "--label",
        "nasiko.type=agent",
        "--label",
        &format!("nasiko.name={name}"),
        "--label",
        &format!("nasiko.stack={}", net.name),
        ensure_busybox_image(),
        "sleep",
        "100000",
    ]);
    c
}

async fn kong() -> KongEmulator {
    KongEmulator::start(Options::strict())
        .await
        .expect("emulator")
}

fn ours(kong: KongEmulator, net: &TestNet) -> Side {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/registry-sidecar");
    let mut cmd = Command::new(bin);
    cmd.env("KONG_ADMIN_URL", kong.admin_url())
        .env("AGENTS_NETWORK", &net.name)
        .env("AGENT_NETWORK_MEMBERS", "")
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn");
    Side {
        label: "registry-sidecar",
        process: ChildGuard::spawn("registry-sidecar", &mut cmd),
        kong,
    }
}

fn python(kong: KongEmulator, net: &TestNet, peer: &PeerSetup) -> Side {
    let mut cmd = Command::new(&peer.python);
    cmd.current_dir(&peer.registry_dir)
        .args(["-m", "uvicorn", "registry:app", "--host", "127.0.0.1"])
        .args(["--port", &free_port().to_string()])
        .env("KONG_ADMIN_URL", kong.admin_url())
        .env("K8S_ENABLED", "false")
        .env("AGENTS_NETWORK", &net.name)
        .env("PYTHONUNBUFFERED", "1");
    Side {
        label: "Python registry",
        process: ChildGuard::spawn("python-registry", &mut cmd),
        kong,
    }
}

fn routed(side: &Side, container: &str) -> bool {
    side.kong.has_route(&format!("{container}-route"))
}

/// Wait until `done` holds for each side, polling both every 2 ms: the time each took from
/// `t0`, or None after PATIENCE.
async fn until(
    sides: &[Side; 2],
    t0: Instant,
    done: impl Fn(&Side) -> bool,
) -> [Option<Duration>; 2] {
    let mut took = [None, None];
    while t0.elapsed() < PATIENCE && took.iter().any(Option::is_none) {
        for (t, s) in took.iter_mut().zip(sides) {
            if t.is_none() && done(s) {
                *t = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    took
}

fn secs(d: Option<Duration>) -> String {
    d.map_or(format!("not within {} s", PATIENCE.as_secs()), |d| {
        format!("{:.2} s", d.as_secs_f64())
    })
}

/// Admin API requests, writes and errors (4xx/5xx) a side's Kong has recorded.
fn traffic(side: &Side) -> (usize, usize, usize) {
    let r = side.kong.requests();
    (
        r.len(),
        r.iter().filter(|x| x.is_write()).count(),
        r.iter().filter(|x| x.status >= 400).count(),
    )
}

/// `n` agents running before either registry starts: cold start → every route, with the
/// requests it took; then a minute at rest: requests, writes and errors, CPU and RSS.
async fn cold_and_at_rest(n: usize, peer: &PeerSetup) -> Vec<Row> {
    let net = TestNet::new();
    let names: Vec<String> = (0..n).map(|i| format!("{}-{i}", unique("peer"))).collect();
    let containers: Vec<String> = names.iter().map(|a| create_agent(&net, a)).collect();
    for c in &containers {
        docker_ok(&["start", c]);
    }
    let t0 = Instant::now();
    let sides = [ours(kong().await, &net), python(kong().await, &net, peer)];
    let all = |s: &Side| containers.iter().all(|c| routed(s, c));
    let took = until(&sides, t0, all).await;
    let cold: Vec<_> = took
        .iter()
        .zip(&sides)
        .map(|(t, s)| (*t, traffic(s)))
        .collect();
    let cold_text = |i: usize| {
        let (took, (req, _, err)) = &cold[i];
        format!("{}, {req} requests ({err} errors)", secs(*took))
    };
    let took = |i: usize| cold[i].0.map_or(PATIENCE, |d| d).as_secs_f64();
    let mut rows = vec![Row {
        figure: format!("cold start -> every route, {n} agents"),
        python: cold_text(1),
        ours: cold_text(0),
        ratio: ratio(took(1), took(0)),
    }];
    // a full interval of the Python registry's after it converged, then the minute
    tokio::time::sleep(Duration::from_secs(31)).await;
    let before: Vec<f64> = sides.iter().map(|s| cpu_secs(s.process.pid())).collect();
    for s in &sides {
        s.kong.clear_requests();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let rest: Vec<((usize, usize, usize), f64, f64)> = sides
        .iter()
        .zip(before)
        .map(|(s, cpu0)| {
            let pid = s.process.pid();
            (traffic(s), cpu_secs(pid) - cpu0, rss_mib(pid))
        })
        .collect();
    let req = |i: usize| {
        let (r, w, e) = rest[i].0;
        format!("{r}/min: {w} writes, {e} errors")
    };
    rows.push(Row {
        figure: format!("Admin API requests at rest, {n} agents"),
        python: req(1),
        ours: req(0),
        ratio: ratio(rest[1].0 .0 as f64, rest[0].0 .0 as f64),
    });
    rows.push(Row {
        figure: format!("CPU at rest, {n} agents"),
        python: format!("{:.2} s per minute", rest[1].1),
        ours: format!("{:.2} s per minute", rest[0].1),
        ratio: ratio(rest[1].1, rest[0].1),
    });
    rows.push(Row {
        figure: format!("RSS at rest, {n} agents"),
        python: format!("{:.1} MiB", rest[1].2),
        ours: format!("{:.1} MiB", rest[0].2),
        ratio: ratio(rest[1].2, rest[0].2),
    });
    drop(sides);
    rows
}

/// A new agent's container started and stopped `cycles` times with 20 others running: start →
/// route and stop → route gone, from the moment `docker start` / `docker stop` returned.
async fn start_and_stop(cycles: usize, peer: &PeerSetup) -> Vec<Row> {
    let net = TestNet::new();
    let base = unique("peer");
    let others: Vec<String> = (0..20)
        .map(|i| create_agent(&net, &format!("{base}-{i}")))
        .collect();
    for c in &others {
        docker_ok(&["start", c]);
    }
    let sides = [ours(kong().await, &net), python(kong().await, &net, peer)];
    let took = until(&sides, Instant::now(), |s| {
        others.iter().all(|c| routed(s, c))
    })
    .await;
    for (t, s) in took.iter().zip(&sides) {
        assert!(t.is_some(), "{} never routed the 20 agents", s.label);
    }
    let c = create_agent(&net, &format!("{base}-new"));
    let (mut up, mut down) = ([vec![], vec![]], [vec![], vec![]]);
    let mut calls = vec![];
    for i in 0..cycles {
        // Each change is seen by the Python registry at its next sync, and the cycle before ended
        // at one: wait a share of its interval first, so the starts and stops sample its phase
        // evenly (0, 1/n, 2/n … of the interval) rather than all land just after a sync.
        let offset = PYTHON_INTERVAL.mul_f64(i as f64 / cycles as f64);
        tokio::time::sleep(offset).await;
        let t_call = Instant::now();
        assert!(docker(&["start", &c]).status.success());
        let t0 = Instant::now();
        calls.push(t0 - t_call);
        for (i, t) in until(&sides, t0, |s| routed(s, &c))
            .await
            .iter()
            .enumerate()
        {
            up[i].push(t.map_or(PATIENCE, |d| d).as_secs_f64());
        }
        tokio::time::sleep(offset).await;
        docker_ok(&["stop", "-t", "0", &c]);
        let t0 = Instant::now();
        for (i, t) in until(&sides, t0, |s| !routed(s, &c))
            .await
            .iter()
            .enumerate()
        {
            down[i].push(t.map_or(PATIENCE, |d| d).as_secs_f64());
        }
    }
    let call: Vec<f64> = calls.iter().map(Duration::as_secs_f64).collect();
    println!(
        "peer: `docker start` itself took {:.2}-{:.2} s",
        pct(&call, 0.0),
        pct(&call, 100.0)
    );
    let text = |v: &[f64]| format!("p50 {:.3} s, max {:.3} s", pct(v, 50.0), pct(v, 100.0));
    // [ours, python] samples of one figure, compared at their medians
    let row = |figure: String, s: &[Vec<f64>]| Row {
        figure,
        python: text(&s[1]),
        ours: text(&s[0]),
        ratio: ratio(pct(&s[1], 50.0), pct(&s[0], 50.0)),
    };
    vec![
        row(
            format!(
                "container start -> route usable ({cycles} starts, after `docker start` returned)"
            ),
            &up,
        ),
        row(
            format!("container stop -> route gone ({cycles} stops, after `docker stop` returned)"),
            &down,
        ),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("== peer: upstream's Python registry beside registry-sidecar");
    let peer = match PeerSetup::from_env() {
        Ok(p) => p,
        Err(why) => {
            println!("peer: skipped: {why}; run scripts/bench.sh --peer NASIKO_CHECKOUT");
            return;
        }
    };
    let cycles = std::env::var("PEER_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut rows = start_and_stop(cycles, &peer).await;
    let counts = std::env::var("PEER_AGENTS").unwrap_or_else(|_| "20,100".into());
    for n in counts.split(',').filter_map(|n| n.trim().parse().ok()) {
        rows.extend(cold_and_at_rest(n, &peer).await);
    }
    println!("\n| figure | Python registry | registry-sidecar | ratio |\n|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} |", r.figure, r.python, r.ours, r.ratio);
    }
}
