//! Issue 25, attacked: an agent reaches another agent only through the gateway.
//!
//! Each agent's entry container is on a network of its own (`{stack}-agent-{name}`), which the
//! registry sidecar joins the gateway to under the alias `kong-gateway`. Here the build agent
//! deploys two agents for real, alpha and beta, from tests/agents/isolation-agent: an entry that
//! answers on 5000 (published on 127.0.0.1: PUBLISH_AGENT_PORTS) and 8080, on its own network and
//! on the package's `backend` network, where a dependency answers on 6379. A stand-in gateway
//! (busybox answering on 8000) is on the stack's network and joins both agent networks as the
//! sidecar joins Kong. Then alpha — code running in it, without NET_RAW or NET_ADMIN, or the
//! package it came in — tries beta:
//!
//! - by address, from inside alpha: every address of beta's containers on every network they
//!   are on, on every port they expose and 5000; the gateway's addresses on every network but
//!   alpha's own; the host's side of every network of both agents and of the default bridge, on
//!   beta's ports and on beta's published host port. TCP, then UDP; and beta's own packet
//!   counters must not move, so a packet that got in but whose answer was lost is seen too;
//! - by route: through the gateway, which forwards IPv4 as every container here does, if alpha
//!   could make it its next hop: alpha can add no route, no neighbour, and no source routing;
//! - by name: beta's names, from a twin of alpha whose resolver never leaves this machine;
//! - by build: a package's `RUN` step tries the same addresses;
//! - by package: compose files aimed at beta's network or containers are refused with the reason
//!   (a table), and one that squats beta's names wherever the policy allows it is deployed and
//!   lands on networks of its own.
//!
//! Only the gateway on alpha's own network answers, and it must: a probe that connects nowhere
//! proves nothing. From beta's side the same targets answer, so the probes are not blind.
//! Everything made here (containers, networks, images) is removed on drop, failed or not.

mod support;

use nasiko_tests::agents::AgentCleanup;
use nasiko_tests::docker::{docker, docker_ok, ensure_busybox_image, unique, TestNet};
use nasiko_tests::fence::{self, show, PlatformContainer, Target};
use nasiko_tests::process::ChildGuard;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use support::Harness;

/// One test at a time: their builds share layers (`COPY agent.sh`), and one test's cleanup
/// removing its images could take a layer from under another's build in flight (the legacy
/// builder then fails with "unknown parent image ID").
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The sample both agents are deployed from.
const SAMPLE: &str = "isolation-agent";
/// The gateway's proxy port: the one thing an agent may connect to.
const PROXY_PORT: u16 = 8000;

// ---------------------------------------------------------------------------------------------
// The stack: a build agent, the agents it deployed, a stand-in gateway

/// A stack of the test's own: its shared network (the build agent's DOCKER_NETWORK, which names
/// it), a build agent consuming its jobs, a stand-in gateway, and the agents deployed.
/// Dropped in field order: the build agent stops, the agents and their networks go (the gateway
/// is taken off them), then the stack's network and the gateway.
struct Stack {
    _worker: ChildGuard,
    agents: AgentCleanup,
    h: Harness,
    net: TestNet,
    /// The stand-in gateway's container.
    gateway: String,
}

impl Stack {
    async fn new() -> Stack {
        ensure_busybox_image();
        let net = TestNet::new();
        let mut h = Harness::new(&net.name).await;
        h.extra_env
            .push(("PUBLISH_AGENT_PORTS".into(), "true".into()));
        let gateway = unique("isol-gateway");
        net.run(
            &gateway,
            &["--network", &net.name],
            &["nc", "-ll", "-p", "8000", "-e", "echo", "HTTP/1.0 200 OK"],
        );
        Stack {
            _worker: h.spawn("c1"),
            agents: AgentCleanup::new(&[]),
            h,
            net,
            gateway,
        }
    }

    /// The agent's own network in this stack.
    fn network_of(&self, agent: &str) -> String {
        nasiko_contract::agent_network(&self.net.name, agent)
    }

    /// Put `sample` in the agents root as `agent`'s package, its compose file's `__BETA__` and
    /// `__BETA_NETWORK__` written as `beta` and beta's network; returns its path.
    fn add(&mut self, sample: &str, agent: &str, beta: &str) -> String {
        self.agents.agents.push(agent.to_string());
        let path = self.h.root.add(sample, agent, "v1.0.0", None);
        let file = self.package_dir(agent).join("docker-compose.yml");
        if let Ok(text) = std::fs::read_to_string(&file) {
            let text = text
                .replace("__BETA_NETWORK__", &self.network_of(beta))
                .replace("__BETA__", beta);
            std::fs::write(&file, text).unwrap();
        }
        path
    }

    fn package_dir(&self, agent: &str) -> std::path::PathBuf {
        self.h.root.path.join(agent).join("v1.0.0")
    }

    /// Queue the deploys of these packages (agent, path), then wait for each to end; returns
    /// each one's status and message.
    async fn deploy(&self, packages: &[(&str, &str)]) -> Vec<(String, String)> {
        for (agent, path) in packages {
            self.h.queue(&self.h.deploy_fields(agent, path, "u1")).await;
        }
        let mut out = vec![];
        for (agent, _) in packages {
            let s = self.h.wait_terminal(agent).await;
            out.push((
                s["status"].clone(),
                s.get("message").cloned().unwrap_or_default(),
            ));
        }
        out
    }

    /// Deploy these agents from `sample`; each must complete.
    async fn deploy_ok(&mut self, sample: &str, agents: &[&str]) {
        let paths: Vec<String> = agents.iter().map(|a| self.add(sample, a, "")).collect();
        let jobs: Vec<(&str, &str)> = agents
            .iter()
            .copied()
            .zip(paths.iter().map(String::as_str))
            .collect();
        for ((status, message), a) in self.deploy(&jobs).await.into_iter().zip(agents) {
            assert_eq!(status, "completed", "{a}: {message}");
        }
    }

    /// Join the gateway to the agent's own network under `kong-gateway`, as the sidecar does.
    fn join_gateway(&self, agent: &str) {
        docker_ok(&[
            "network",
            "connect",
            "--alias",
            "kong-gateway",
            &self.network_of(agent),
            &self.gateway,
        ]);
    }
}

// ---------------------------------------------------------------------------------------------
// What the engine says about an agent

/// Every container of `agent`, as the engine has it, its entry container first.
fn containers_of(agent: &str) -> Vec<PlatformContainer> {
    let ids = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=nasiko.name={agent}"),
    ]);
    let mut all: Vec<PlatformContainer> = ids.split_whitespace().map(fence::container).collect();
    all.sort_by_key(|c| c.name != format!("agent-{agent}"));
    assert!(
        all.first()
            .is_some_and(|c| c.name == format!("agent-{agent}")),
        "agent {agent} has no entry container: {:?}",
        all.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    all
}

/// The names of the containers on `network`.
fn members(network: &str) -> BTreeSet<String> {
    docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{end}}",
        network,
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// The networks `c` is on.
fn networks(c: &PlatformContainer) -> BTreeSet<String> {
    c.addresses.iter().map(|(n, _)| n.clone()).collect()
}

/// `c`'s address on `network`.
fn address_on(c: &PlatformContainer, network: &str) -> String {
    c.addresses
        .iter()
        .find(|(n, _)| n == network)
        .map(|(_, ip)| ip.clone())
        .unwrap_or_else(|| panic!("{} is not on {network}", c.name))
}

/// The first IPv4 subnet of `network`.
fn subnet_of(network: &str) -> String {
    docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        network,
    ])
    .split_whitespace()
    .next()
    .unwrap_or_else(|| panic!("{network} has no subnet"))
    .to_string()
}

/// A container's IPv4 counters, from its own /proc/net/snmp: packets taken in (InReceives) and
/// forwarded (ForwDatagrams).
#[derive(Debug, Clone, Copy, PartialEq)]
struct IpCounters {
    received: u64,
    forwarded: u64,
}

fn ip_counters(container: &str) -> IpCounters {
    let snmp = docker_ok(&["exec", container, "cat", "/proc/net/snmp"]);
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let row: BTreeMap<&str, u64> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
        .collect();
    IpCounters {
        received: row["InReceives"],
        forwarded: row["ForwDatagrams"],
    }
}

/// Send one UDP datagram to each target from inside `container` (busybox `tftp`, 2 s each, all
/// at once). Nothing is read back: the receivers' counters tell whether it arrived.
fn udp_from(container: &str, targets: &BTreeSet<Target>) {
    let script = "while read -r h p; do timeout 2 tftp -g -r probe -l /dev/null \"$h\" \"$p\" >/dev/null 2>&1 & done; wait";
    let mut child = std::process::Command::new("docker")
        .args(["exec", "-i", container, "sh", "-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(fence::target_lines(targets).as_bytes())
        .unwrap();
    child.wait().unwrap();
}

/// The IPv4 addresses `name` resolves to from inside `container` (empty: it does not resolve).
fn resolve_from(container: &str, name: &str) -> BTreeSet<String> {
    let o = docker(&["exec", container, "nslookup", "-type=a", name]);
    let out = String::from_utf8_lossy(&o.stdout);
    // the answer's addresses come after "Name:"; the server's own "Address:" line before it
    out.lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect()
}

/// Run `sh -c script` in `container`: its exit status and what it said.
fn sh_in(container: &str, script: &str) -> (bool, String) {
    let o = docker(&["exec", container, "sh", "-c", script]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), said.trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// Alpha and beta

/// Alpha and beta deployed from [`SAMPLE`] and the gateway joined to both, as the engine has
/// them.
struct Scene {
    beta: String,
    /// Alpha's containers, its entry first.
    mine: Vec<PlatformContainer>,
    /// Beta's containers, its entry first.
    theirs: Vec<PlatformContainer>,
    gateway: PlatformContainer,
    /// The gateway's proxy on alpha's own network: the one target that must answer.
    proxy: Target,
    /// Beta's own network.
    their_net: String,
}

impl Scene {
    async fn deploy(s: &mut Stack) -> Scene {
        let (alpha, beta) = (unique("isolalpha"), unique("isolbeta"));
        s.deploy_ok(SAMPLE, &[&alpha, &beta]).await;
        s.join_gateway(&alpha);
        s.join_gateway(&beta);
        let (mine, theirs) = (containers_of(&alpha), containers_of(&beta));
        let gateway = fence::container(&s.gateway);
        let own = s.network_of(&alpha);
        assert!(
            networks(&mine[0]).contains(&own) && !networks(&mine[0]).contains(&s.net.name),
            "alpha is on its own network, not the stack's: {:?}",
            mine[0].addresses
        );
        assert_eq!(theirs.len(), 2, "beta's entry and its dependency");
        Scene {
            proxy: (address_on(&gateway, &own), PROXY_PORT),
            their_net: s.network_of(&beta),
            beta,
            mine,
            theirs,
            gateway,
        }
    }

    fn alpha(&self) -> &PlatformContainer {
        &self.mine[0]
    }

    /// Every port of beta's: those its containers expose, and 5000.
    fn their_ports(&self) -> BTreeSet<u16> {
        self.theirs
            .iter()
            .flat_map(|c| c.exposed.iter().copied())
            .chain([5000])
            .collect()
    }

    /// The host ports beta is published on (127.0.0.1).
    fn their_host_ports(&self) -> BTreeSet<u16> {
        self.theirs
            .iter()
            .flat_map(|c| c.published.clone())
            .collect()
    }

    fn their_addresses(&self) -> BTreeSet<String> {
        self.theirs
            .iter()
            .flat_map(|c| c.addresses.iter().map(|(_, ip)| ip.clone()))
            .collect()
    }

    /// What alpha tries by address: every address of beta's containers on their ports; the
    /// gateway on every network but alpha's own; the host's side of every network of both agents
    /// and of the default bridge (`bridge_gateway`) on beta's ports and host ports; beta's host
    /// ports on alpha's own loopback; and the gateway's proxy on alpha's network.
    fn address_targets(&self, bridge_gateway: &str) -> BTreeSet<Target> {
        let their_ports = self.their_ports();
        let their_host_ports = self.their_host_ports();
        assert!(
            !their_host_ports.is_empty(),
            "beta's 5000 is published on 127.0.0.1 (PUBLISH_AGENT_PORTS)"
        );
        let mut t: BTreeSet<Target> = self.theirs.iter().flat_map(every_address).collect();
        for (_, ip) in &self.gateway.addresses {
            if *ip != self.proxy.0 {
                t.extend([PROXY_PORT, 5000].map(|p| (ip.clone(), p)));
            }
        }
        let mut host: BTreeSet<String> = self
            .mine
            .iter()
            .chain(&self.theirs)
            .flat_map(|c| c.gateways.iter().map(|(_, g)| g.clone()))
            .collect();
        host.insert(bridge_gateway.to_string());
        assert!(
            host.len() >= 5,
            "the gateways of 4 agent networks and of the bridge: {host:?}"
        );
        for h in &host {
            for p in their_ports.iter().chain(&their_host_ports) {
                t.insert((h.clone(), *p));
            }
        }
        // not beta's own ports there: alpha's own 5000 and 8080 answer on its loopback
        t.extend(
            their_host_ports
                .iter()
                .map(|p| ("127.0.0.1".to_string(), *p)),
        );
        t.insert(self.proxy.clone());
        t
    }

    /// What must answer from beta's side (a twin on the networks of beta's entry): each of
    /// beta's containers at its addresses there, on the ports it exposes (the sample listens on
    /// all of them), and the gateway on beta's network.
    fn live_from_betas_side(&self) -> BTreeSet<String> {
        let there = networks(&self.theirs[0]);
        let mut live: BTreeSet<String> = self
            .theirs
            .iter()
            .flat_map(|c| {
                let on_betas = c.addresses.iter().filter(|(n, _)| there.contains(n));
                on_betas
                    .flat_map(move |(_, ip)| c.exposed.iter().map(move |p| show(&(ip.clone(), *p))))
            })
            .collect();
        let gateway_there = address_on(&self.gateway, &self.their_net);
        live.insert(show(&(gateway_there, PROXY_PORT)));
        live
    }

    /// Beta's names: its container's, its old service key, its containers' and services' names.
    fn their_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> =
            [format!("agent-{}", self.beta), self.beta.clone()].into();
        for c in &self.theirs {
            names.insert(c.name.clone());
            names.insert(c.service.clone());
        }
        // a name with a dot would be asked of the host's resolver, off this machine
        names.retain(|n| !n.is_empty() && !n.contains('.'));
        names
    }

    /// What alpha runs to make the gateway its next hop to beta, or to take source-routed
    /// packets: each command with whether it worked and what it said.
    fn route_through_the_gateway(&self) -> Vec<(String, bool, String)> {
        let me = self.alpha();
        [
            format!(
                "ip route add {} via {}",
                subnet_of(&self.their_net),
                self.proxy.0
            ),
            format!("arp -i eth0 -s {} 02:42:00:00:00:01", me.gateways[0].1),
            "echo 1 > /proc/sys/net/ipv4/conf/all/accept_source_route".to_string(),
            "ip link set eth0 promisc on".to_string(),
        ]
        .into_iter()
        .map(|cmd| {
            let (ok, said) = sh_in(&me.name, &cmd);
            (cmd, ok, said)
        })
        .collect()
    }
}

/// Every address of `c` on every port it exposes and 5000.
fn every_address(c: &PlatformContainer) -> BTreeSet<Target> {
    let ports: BTreeSet<u16> = c.exposed.iter().copied().chain([5000]).collect();
    c.addresses
        .iter()
        .flat_map(|(_, ip)| ports.iter().map(move |p| (ip.clone(), *p)))
        .collect()
}

/// A line for each way a probe went wrong: not every target tried, `must` (the proof that it
/// connects at all) silent, or something outside `allowed` answered.
fn judge(
    who: &str,
    got: &fence::Probed,
    tried: usize,
    must: &str,
    allowed: &[&str],
) -> Vec<String> {
    let mut failures = vec![];
    if got.tried != Some(tried) {
        failures.push(format!("{who}: tried {:?} of {tried} targets", got.tried));
    }
    if !got.open.contains(must) {
        failures.push(format!(
            "{who}: {must} did not answer: the probe proves nothing"
        ));
    }
    let bad: Vec<&String> = got
        .open
        .iter()
        .filter(|t| !allowed.contains(&t.as_str()))
        .collect();
    if !bad.is_empty() {
        failures.push(format!("{who}: answered and must not: {bad:?}"));
    }
    failures
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Alpha against beta by address, route, name and build (see the top of the file); only the
/// gateway on alpha's own network answers, and it must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn from_inside_alpha_nothing_of_beta_answers_only_the_gateway_on_alphas_network() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let mut s = Stack::new().await;
    let scene = Scene::deploy(&mut s).await;
    let deployed = t0.elapsed();
    let me = scene.alpha().name.clone();
    let (_on_bridge, bridge_ip, bridge_gateway) = fence::bridge_listener();
    let by_address = scene.address_targets(&bridge_gateway);
    let mut failures = vec![];

    // not blind: from beta's side (a twin of beta's entry, on its networks) the targets answer,
    // and beta answers on its host port from the host
    let from_beta_side = {
        let twin = fence::name_twin(&scene.theirs[0]);
        fence::probe_from(&twin.0, &by_address)
    };
    let silent: Vec<String> = scene
        .live_from_betas_side()
        .difference(&from_beta_side.open)
        .cloned()
        .collect();
    assert!(silent.is_empty(), "from beta's side, silent: {silent:?}");
    let host_port = *scene.their_host_ports().iter().next().unwrap();
    let http = nasiko_tests::http::HttpClient::new(std::time::Duration::from_secs(5));
    let (status, _) = http
        .json(
            "POST",
            &format!("http://127.0.0.1:{host_port}/"),
            Some(&serde_json::json!({"id": "x"})),
        )
        .await
        .expect("beta answers on its published port, from the host");
    assert_eq!(status, 200);

    // by address, from alpha: UDP (with a datagram to the gateway on alpha's network, the proof
    // that it sends, and multicast to the link's hosts and to an administratively scoped group),
    // then TCP; beta's containers' counters must not move, nor the gateway's forwarding
    std::thread::sleep(std::time::Duration::from_secs(1));
    let watched: Vec<&str> = scene
        .theirs
        .iter()
        .map(|c| c.name.as_str())
        .chain([s.gateway.as_str()])
        .collect();
    let counters = || -> Vec<IpCounters> { watched.iter().map(|c| ip_counters(c)).collect() };
    let before = counters();
    let t1 = Instant::now();
    let mut udp = by_address.clone();
    udp.insert((scene.proxy.0.clone(), 69));
    udp.extend([
        ("224.0.0.1".to_string(), 5000),
        ("239.255.255.250".to_string(), 5000),
    ]);
    udp_from(&me, &udp);
    let after_udp = counters();
    let from_alpha = fence::probe_from(&me, &by_address);
    let probe_time = t1.elapsed();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let after = counters();
    println!(
        "isolation: deployed in {deployed:?}; from alpha {} targets by TCP and UDP in {probe_time:?}, answered: {:?} \
         (from beta's side: {:?})",
        by_address.len(),
        from_alpha.open,
        from_beta_side.open
    );
    println!(
        "isolation: IP counters (taken in, forwarded) of {watched:?}: before {before:?}, after UDP {after_udp:?}, after TCP {after:?}"
    );
    failures.extend(judge(
        "from alpha, by address",
        &from_alpha,
        by_address.len(),
        &show(&scene.proxy),
        &[&show(&scene.proxy)],
    ));
    let (gw_before, gw_after_udp) = (before.last().unwrap(), after_udp.last().unwrap());
    if gw_after_udp.received == gw_before.received {
        failures.push("the gateway took in no UDP from alpha: the UDP probe proves nothing".into());
    }
    for ((who, b), a) in watched.iter().zip(&before).zip(&after) {
        if *who == s.gateway && a.forwarded != b.forwarded {
            failures.push(format!(
                "the gateway forwarded {} packets",
                a.forwarded - b.forwarded
            ));
        }
        if *who != s.gateway && a.received != b.received {
            failures.push(format!(
                "{who} took in {} packets while alpha probed",
                a.received - b.received
            ));
        }
    }

    // by route: the gateway forwards (as every container here: Docker's hosts forward, and a
    // new network namespace copies the host's setting), so alpha must not be able to make it
    // its next hop; and alpha has no IPv6 to try
    let gw_forwards = sh_in(&s.gateway, "cat /proc/sys/net/ipv4/ip_forward").1;
    let routing = scene.route_through_the_gateway();
    let ipv6 = sh_in(&me, "cat /proc/net/if_inet6").1;
    println!(
        "isolation: the gateway's ip_forward is {gw_forwards}; alpha tried {routing:?}; alpha's IPv6 addresses: {ipv6:?}"
    );
    for (cmd, ok, said) in &routing {
        if *ok {
            failures.push(format!("alpha could: {cmd} ({said})"));
        }
    }
    if !ipv6.is_empty() {
        failures.push(format!("alpha has IPv6 addresses: {ipv6}"));
    }

    // by name, from a twin of alpha: beta's names resolve to none of beta's addresses, and on
    // beta's ports only kong-gateway answers — and `db`, which is alpha's own dependency too
    let names = scene.their_names();
    let mut by_name: BTreeSet<Target> = names
        .iter()
        .flat_map(|n| scene.their_ports().into_iter().map(move |p| (n.clone(), p)))
        .collect();
    by_name.insert(("kong-gateway".into(), PROXY_PORT));
    let twin = fence::name_twin(scene.alpha());
    assert_eq!(
        resolve_from(&twin.0, "kong-gateway"),
        BTreeSet::from([scene.proxy.0.clone()]),
        "the twin's resolver works, and kong-gateway is the gateway on alpha's network"
    );
    let resolved: BTreeMap<&String, BTreeSet<String>> = names
        .iter()
        .map(|n| (n, resolve_from(&twin.0, n)))
        .collect();
    let from_twin = fence::probe_from(&twin.0, &by_name);
    println!(
        "isolation: {} names from alpha's twin, answered: {:?}; resolved: {resolved:?}",
        by_name.len(),
        from_twin.open
    );
    failures.extend(judge(
        "from alpha's twin, by name",
        &from_twin,
        by_name.len(),
        &format!("kong-gateway:{PROXY_PORT}"),
        &[&format!("kong-gateway:{PROXY_PORT}"), "db:6379"],
    ));
    let alphas_db = scene.mine[1].addresses[0].1.clone();
    let their_addresses = scene.their_addresses();
    for (n, ips) in &resolved {
        let theirs: Vec<&String> = ips.intersection(&their_addresses).collect();
        if !theirs.is_empty() {
            failures.push(format!(
                "from alpha's twin, {n} resolves to beta's {theirs:?}"
            ));
        }
        if *n == "db" && *ips != BTreeSet::from([alphas_db.clone()]) {
            failures.push(format!(
                "db is alpha's own dependency ({alphas_db}) and resolves to {ips:?}"
            ));
        }
    }

    // by build: a package's RUN step tries the same addresses, and a listener on Docker's
    // default bridge (whatever else runs on the host); a listener of the test's on the host, at
    // the gateway of the build network, proves that it connects at all
    let builder = unique("isolbuild");
    let path = s.add("build-probe", &builder, "");
    let (_host_listener, listener) = fence::build_listener(&s.net.name);
    let mut by_build = by_address.clone();
    by_build.insert(listener.clone());
    by_build.insert((bridge_ip, 5000));
    std::fs::write(
        s.package_dir(&builder).join("targets"),
        format!("# {}\n{}", unique("run"), fence::target_lines(&by_build)),
    )
    .unwrap();
    let done = s.deploy(&[(&builder, &path)]).await;
    assert_eq!(done[0].0, "completed", "{done:?}");
    let from_build = fence::parse_probe(&docker_ok(&[
        "exec",
        &format!("agent-{builder}"),
        "cat",
        "/probe.txt",
    ]));
    println!(
        "isolation: from a build, {} targets, answered: {:?}; the test took {:?}",
        by_build.len(),
        from_build.open,
        t0.elapsed()
    );
    failures.extend(judge(
        "from a build",
        &from_build,
        by_build.len(),
        &show(&listener),
        &[&show(&listener)],
    ));
    assert!(
        failures.is_empty(),
        "beta was reached:\n{}",
        failures.join("\n")
    );
}

/// Compose files aimed at another agent (`{beta}`, whose network is `{beta_net}`, on stack
/// `{stack}`, at address `{beta_ip}`), each with the words its refusal must have.
const AIMED_AT_BETA: &[(&str, &str, &str)] = &[
    ("beta's network, by name",
     "services:\n  x: {build: ., networks: [agents-net, n]}\nnetworks: {agents-net: {external: true}, n: {external: true, name: '{beta_net}'}}",
     "names the Docker network '{beta_net}'"),
    ("beta's network, by external.name",
     "services:\n  x: {build: ., networks: [agents-net, n]}\nnetworks: {agents-net: {external: true}, n: {external: {name: '{beta_net}'}}}",
     "names the Docker network '{beta_net}'"),
    ("beta's network, by name without external",
     "services:\n  x: {build: ., networks: [agents-net, n]}\nnetworks: {agents-net: {external: true}, n: {name: '{beta_net}'}}",
     "names the Docker network '{beta_net}'"),
    ("beta's network, joined without a declaration",
     "services:\n  x: {build: ., networks: [agents-net, '{beta_net}']}\nnetworks: {agents-net: {external: true}}",
     "joins the network '{beta_net}', which the package does not declare"),
    ("the default bridge, by name",
     "services:\n  x: {build: ., networks: [agents-net, n]}\nnetworks: {agents-net: {external: true}, n: {external: true, name: bridge}}",
     "names the Docker network 'bridge'"),
    ("beta's network namespace",
     "services:\n  x: {build: ., network_mode: 'container:agent-{beta}'}",
     "asks for 'network_mode'"),
    ("the host's network namespace",
     "services:\n  x: {build: ., network_mode: host}",
     "asks for 'network_mode'"),
    ("a dependency in the entry's network namespace",
     "services:\n  x: {build: ., networks: [agents-net]}\n  d: {image: nasiko-test-busybox:1, network_mode: 'service:x'}\nnetworks: {agents-net: {external: true}}",
     "service 'd' asks for 'network_mode'"),
    ("beta's process namespace",
     "services:\n  x: {build: ., pid: 'container:agent-{beta}'}",
     "asks for 'pid'"),
    ("beta's IPC namespace",
     "services:\n  x: {build: ., ipc: 'container:agent-{beta}'}",
     "asks for 'ipc'"),
    ("beta's volumes",
     "services:\n  x: {build: ., volumes_from: ['agent-{beta}']}",
     "asks for 'volumes_from'"),
    ("a link to beta",
     "services:\n  x: {build: ., links: ['agent-{beta}']}",
     "asks for 'links'"),
    ("an external link to beta",
     "services:\n  x: {build: ., external_links: ['agent-{beta}:beta']}",
     "asks for 'external_links'"),
    ("beta's address as a host name",
     "services:\n  x: {build: ., extra_hosts: ['beta:{beta_ip}']}",
     "asks for 'extra_hosts'"),
    ("a resolver of its own",
     "services:\n  x: {build: ., dns: ['{beta_ip}']}",
     "asks for 'dns'"),
    ("beta's host name",
     "services:\n  x: {build: ., hostname: 'agent-{beta}'}",
     "asks for 'hostname'"),
    ("a chosen MAC address",
     "services:\n  x: {build: ., mac_address: '02:42:0a:d5:00:02'}",
     "asks for 'mac_address'"),
    ("a dependency on the agents network",
     "services:\n  x: {build: ., networks: [agents-net]}\n  d: {image: nasiko-test-busybox:1, networks: [agents-net]}\nnetworks: {agents-net: {external: true}}",
     "service 'd' joins the agents network 'agents-net'"),
    ("a dependency on the stack's network, by name",
     "services:\n  x: {build: ., networks: [agents-net]}\n  d: {image: nasiko-test-busybox:1, networks: [s]}\nnetworks: {agents-net: {external: true}, s: {external: true, name: '{stack}'}}",
     "service 'd' joins the agents network 's'"),
    ("a fixed address on the agents network",
     "services:\n  x: {build: ., networks: {agents-net: {ipv4_address: '{beta_ip}'}}}\nnetworks: {agents-net: {external: true}}",
     "'networks.agents-net.ipv4_address' is not allowed"),
    ("a fixed address on a network of its own",
     "services:\n  x: {build: ., networks: {own: {ipv4_address: '{beta_ip}'}}}\nnetworks: {own: {}}",
     "'networks.own.ipv4_address' is not allowed"),
    ("a link-local address on a network of its own",
     "services:\n  x: {build: ., networks: {own: {link_local_ips: ['169.254.0.2']}}}\nnetworks: {own: {}}",
     "'networks.own.link_local_ips' is not allowed"),
    ("beta's name as an alias on the agents network",
     "services:\n  x: {build: ., networks: {agents-net: {aliases: ['agent-{beta}']}}}\nnetworks: {agents-net: {external: true}}",
     "sets aliases on the agents network"),
    ("a network of its own labelled as beta's",
     "services:\n  x: {build: ., networks: [agents-net, own]}\nnetworks: {agents-net: {external: true}, own: {labels: {nasiko.agent-network: '{beta}', nasiko.stack: '{stack}'}}}",
     "network 'own' sets the label 'nasiko.agent-network'"),
    ("beta's subnet for a network of its own",
     "services:\n  x: {build: ., networks: [own]}\nnetworks: {own: {ipam: {config: [{subnet: '{beta_subnet}'}]}}}",
     "network 'own' sets 'ipam'"),
    ("IPv6 on a network of its own",
     "services:\n  x: {build: ., networks: [own]}\nnetworks: {own: {enable_ipv6: true}}",
     "network 'own' sets 'enable_ipv6'"),
    ("a macvlan network",
     "services:\n  x: {build: ., networks: [own]}\nnetworks: {own: {driver: macvlan}}",
     "network 'own' sets 'driver'"),
    ("bridge options (no inter-network drop)",
     "services:\n  x: {build: ., networks: [own]}\nnetworks: {own: {driver_opts: {com.docker.network.bridge.enable_icc: 'true'}}}",
     "network 'own' sets 'driver_opts'"),
    ("an attachable network",
     "services:\n  x: {build: ., networks: [own]}\nnetworks: {own: {attachable: true}}",
     "network 'own' sets 'attachable'"),
    ("beta's name on the entry",
     "services:\n  x: {build: ., labels: {nasiko.name: '{beta}'}}",
     "sets the label 'nasiko.name'"),
    ("beta's compose project",
     "services:\n  x: {build: ., labels: ['com.docker.compose.project=agent-{beta}']}",
     "sets the label 'com.docker.compose.project'"),
    ("routes: NET_ADMIN",
     "services:\n  x: {build: ., cap_add: [NET_ADMIN]}",
     "asks for 'cap_add'"),
    ("source routing through the gateway",
     "services:\n  x: {build: ., sysctls: {net.ipv4.conf.all.accept_source_route: 1}}",
     "asks for 'sysctls'"),
    ("the host's user namespace",
     "services:\n  x: {build: ., userns_mode: host}",
     "asks for 'userns_mode'"),
    ("a build on beta's network",
     "services:\n  x: {build: {context: ., network: '{beta_net}'}}",
     "'build.network' is not allowed"),
];

/// Every package of [`AIMED_AT_BETA`], and a Dockerfile whose build step asks for the host's
/// network, deployed while beta runs: each ends failed with its reason, nothing of it is made,
/// and beta's network holds beta and the gateway alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn packages_aimed_at_another_agent_are_refused_with_the_reason() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let mut s = Stack::new().await;
    let beta = unique("isolbeta");
    s.deploy_ok(SAMPLE, &[&beta]).await;
    s.join_gateway(&beta);
    let their_net = s.network_of(&beta);
    let entry = fence::container(&format!("agent-{beta}"));
    let (their_ip, their_subnet, stack) = (
        address_on(&entry, &their_net),
        subnet_of(&their_net),
        s.net.name.clone(),
    );
    let fill = |t: &str| {
        t.replace("{beta_net}", &their_net)
            .replace("{beta_ip}", &their_ip)
            .replace("{beta_subnet}", &their_subnet)
            .replace("{stack}", &stack)
            .replace("{beta}", &beta)
    };
    let members_before = members(&their_net);
    assert_eq!(
        members_before,
        BTreeSet::from([format!("agent-{beta}"), s.gateway.clone()])
    );

    let mut cases = vec![];
    for (i, (what, compose, _)) in AIMED_AT_BETA.iter().enumerate() {
        let a = unique(&format!("aimed{i}"));
        let path = s.add(SAMPLE, &a, &beta);
        std::fs::write(s.package_dir(&a).join("docker-compose.yml"), fill(compose)).unwrap();
        cases.push((a, path, *what));
    }
    // and a Dockerfile whose build step runs in the host's network
    let a = unique("aimeddf");
    let path = s.add(SAMPLE, &a, &beta);
    std::fs::write(
        s.package_dir(&a).join("Dockerfile"),
        fill("FROM nasiko-test-busybox:1\nRUN --network=host nc -w 1 {beta_ip} 5000 -e true\n"),
    )
    .unwrap();
    cases.push((a, path, "a build step in the host's network"));
    let mut wanted: Vec<String> = AIMED_AT_BETA.iter().map(|(_, _, w)| fill(w)).collect();
    wanted.push("RUN --network=host is refused".into());

    let jobs: Vec<(&str, &str)> = cases
        .iter()
        .map(|(a, p, _)| (a.as_str(), p.as_str()))
        .collect();
    let ended = s.deploy(&jobs).await;
    let mut failures = vec![];
    for (((a, _, what), (status, message)), want) in cases.iter().zip(&ended).zip(&wanted) {
        if status != "failed" || !message.contains(want.as_str()) {
            failures.push(format!(
                "{what} ({a}): {status}, wanted '{want}' in: {message}"
            ));
        }
        if docker(&["inspect", &format!("agent-{a}")]).status.success() {
            failures.push(format!("{what} ({a}): a container was made"));
        }
    }
    assert_eq!(
        members(&their_net),
        members_before,
        "someone joined beta's network"
    );
    println!(
        "isolation: {} packages aimed at beta refused in {:?}",
        cases.len(),
        t0.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// tests/agents/isolation-squatter, deployed as agent `{beta}_d` while beta runs: what it calls
/// beta's network is a network of its own project, its aliases and service keys name its own
/// containers, its container names are its own; beta's network holds beta and the gateway
/// alone, and from the squatter's entry and dependency none of beta's addresses answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn a_package_squatting_betas_names_lands_on_networks_of_its_own_and_reaches_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let mut s = Stack::new().await;
    let beta = unique("isolbeta");
    s.deploy_ok(SAMPLE, &[&beta]).await;
    s.join_gateway(&beta);
    let their_net = s.network_of(&beta);
    // named like beta with a suffix that an encoding without `__` would confuse (`{beta}.`)
    let squatter = format!("{beta}_d");
    let path = s.add("isolation-squatter", &squatter, &beta);
    let done = s.deploy(&[(&squatter, &path)]).await;
    assert_eq!(done[0].0, "completed", "{done:?}");
    s.join_gateway(&squatter);

    let theirs = containers_of(&beta);
    let squatters = containers_of(&squatter);
    assert_eq!(squatters.len(), 2, "the squatter's entry and dependency");
    let their_networks: BTreeSet<String> = theirs.iter().flat_map(networks).collect();
    let mut failures = vec![];
    for c in &squatters {
        let on: BTreeSet<String> = networks(c);
        let shared: Vec<&String> = on.intersection(&their_networks).collect();
        if !shared.is_empty() {
            failures.push(format!("{} is on beta's {shared:?}", c.name));
        }
        if c.name == format!("agent-{beta}") {
            failures.push(format!(
                "the squatter took beta's container name {}",
                c.name
            ));
        }
    }
    let squatted = format!(
        "{}_{}",
        nasiko_contract::compose_project(&squatter),
        their_net
    );
    assert!(
        networks(&squatters[1]).contains(&squatted),
        "the network keyed as beta's is the squatter's own project's: {:?}",
        networks(&squatters[1])
    );
    assert_ne!(s.network_of(&squatter), their_net);
    if members(&their_net) != BTreeSet::from([format!("agent-{beta}"), s.gateway.clone()]) {
        failures.push(format!("beta's network holds {:?}", members(&their_net)));
    }

    // from the squatter's entry and its dependency: none of beta's addresses; from the entry,
    // the gateway on its own network answers (the proof that it connects)
    let gw = fence::container(&s.gateway);
    let proxy: Target = (address_on(&gw, &s.network_of(&squatter)), PROXY_PORT);
    let mut targets: BTreeSet<Target> = theirs.iter().flat_map(every_address).collect();
    targets.insert((address_on(&gw, &their_net), PROXY_PORT));
    targets.insert(proxy.clone());
    let from_entry = fence::probe_from(&squatters[0].name, &targets);
    failures.extend(judge(
        "from the squatter",
        &from_entry,
        targets.len(),
        &show(&proxy),
        &[&show(&proxy)],
    ));
    let from_dependency = fence::probe_from(&squatters[1].name, &targets);
    let reached: Vec<&String> = from_dependency.open.iter().collect();
    if from_dependency.tried != Some(targets.len()) || !reached.is_empty() {
        failures.push(format!(
            "from the squatter's dependency: tried {:?}, answered {reached:?}",
            from_dependency.tried
        ));
    }
    // beta's names, asked by the squatter: its own containers or nothing, never beta's
    let their_addresses: BTreeSet<String> = theirs
        .iter()
        .flat_map(|c| c.addresses.iter().map(|(_, ip)| ip.clone()))
        .collect();
    let twin = fence::name_twin(&squatters[0]);
    for n in [format!("agent-{beta}"), "kong-gateway".into(), beta.clone()] {
        let ips = resolve_from(&twin.0, &n);
        let theirs_too: Vec<&String> = ips.intersection(&their_addresses).collect();
        println!("isolation: from the squatter's twin, {n} resolves to {ips:?}");
        if !theirs_too.is_empty() {
            failures.push(format!(
                "from the squatter, {n} resolves to beta's {theirs_too:?}"
            ));
        }
    }
    println!(
        "isolation: the squatter is on {:?} and {:?}; answered from its entry {:?}; took {:?}",
        networks(&squatters[0]),
        networks(&squatters[1]),
        from_entry.open,
        t0.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The agent guard: Docker's isolation, lifted while it makes a network

/// `build-agent guard` of a stack, as the stack's agent-guard service runs it; on drop stopped
/// (SIGTERM, so it removes its rules) and its rules removed whatever happened.
struct Guard {
    stack: String,
    child: ChildGuard,
}

impl Guard {
    fn start(stack: &str) -> Guard {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_build-agent"));
        cmd.args(["guard", "--every", "1", "--docker-network", stack]);
        let child = ChildGuard::spawn("agent-guard", &mut cmd);
        let tag = format!("nasiko-agent-guard {stack}");
        let t0 = Instant::now();
        while fence::agent_guard_rules()
            .iter()
            .filter(|r| r.contains(&tag))
            .count()
            < 3
        {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "the guard's rules are not in place after 20 s: {:?}",
                fence::agent_guard_rules()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Guard {
            stack: stack.to_string(),
            child,
        }
    }

    /// Stop it as compose does; returns how it ended.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.child.signal(15);
        self.child.wait_exit(std::time::Duration::from_secs(20))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.child.is_running() {
            self.stop();
        }
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_build-agent"))
            .args(["guard", "--remove", "--docker-network", &self.stack])
            .output();
    }
}

/// Networks the test makes and removes at once, each one a moment in which Docker before 28.0
/// has no isolation between bridges; any left over are removed on drop.
struct Churn(Vec<String>);

impl Churn {
    /// Make and remove `n` networks; returns whether any agent guard's rules (another stack's,
    /// running beside this test) were in place meanwhile.
    fn run(&mut self, n: usize) -> bool {
        let mut guarded = false;
        for _ in 0..n {
            let name = unique("guard-churn");
            self.0.push(name.clone());
            docker_ok(&["network", "create", &name]);
            guarded |= !fence::agent_guard_rules().is_empty();
            docker_ok(&["network", "rm", &name]);
            self.0.pop();
        }
        guarded
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

/// From inside `container`, a connection to each target every 25 ms, `rounds` times (each
/// attempt in the background, 1 s to connect), and to `control` every 50th round; returns how
/// many times each target accepted, by "HOST:PORT".
fn spray(
    container: &str,
    targets: &[Target],
    control: &Target,
    rounds: usize,
) -> std::process::Child {
    let try_one = |(h, p): &Target| {
        format!("(nc -w 1 {h} {p} -e true </dev/null >/dev/null 2>&1 && echo 'hit {h}:{p}') & ")
    };
    let each: String = targets.iter().map(try_one).collect();
    let script = format!(
        "i=0; while [ $i -lt {rounds} ]; do {each} [ $((i % 50)) -ne 0 ] || {} busybox usleep 25000; i=$((i + 1)); done; wait",
        try_one(control)
    );
    std::process::Command::new("docker")
        .args(["exec", container, "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker exec runs")
}

fn hits(child: std::process::Child) -> BTreeMap<String, usize> {
    let o = child.wait_with_output().expect("the spray ends");
    assert!(
        o.status.success(),
        "the spray failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut n = BTreeMap::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(t) = l.strip_prefix("hit ") {
            *n.entry(t.to_string()).or_default() += 1;
        }
    }
    n
}

/// The engine's major version.
fn engine_major() -> u32 {
    docker_ok(&["version", "--format", "{{.Server.Version}}"])
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("the engine's version")
}

/// Docker before 28.0 deletes and inserts again the jump to its isolation chain each time it
/// makes a bridge network, and in between the host routes between bridges. Alpha tries beta (on
/// beta's own network) and the gateway's address on the stack's network every 25 ms while the
/// test makes networks:
/// - without the guard, some get through (on such an engine, and when no other stack's guard is
///   running): the danger, and the proof that the spray would see one. A reverse-path filter in
///   the gateway would not stop them: Docker masquerades what leaves a bridge for another, so
///   they arrive from the host's address on the gateway's own network;
/// - with `build-agent guard` running, none does, while the gateway's proxy on alpha's own
///   network (switched by alpha's bridge, not routed) still answers;
/// - stopped, the guard leaves no rule behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker"]
async fn while_docker_makes_networks_the_agent_guard_keeps_alpha_from_beta_and_the_stack() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut s = Stack::new().await;
    let scene = Scene::deploy(&mut s).await;
    let me = scene.alpha().name.clone();
    let beta = (address_on(&scene.theirs[0], &scene.their_net), 8080);
    let gateway_on_stack = (address_on(&scene.gateway, &s.net.name), PROXY_PORT);
    let forbidden = [beta.clone(), gateway_on_stack.clone()];
    let mut churn = Churn(vec![]);
    let round = |churn: &mut Churn| {
        let spraying = spray(&me, &forbidden, &scene.proxy, 400);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let guarded = churn.run(25);
        (hits(spraying), guarded)
    };

    let (unguarded, others) = round(&mut churn);
    let through: usize = forbidden
        .iter()
        .map(|t| unguarded.get(&show(t)).copied().unwrap_or(0))
        .sum();
    println!("agent guard: without it, {through} connections from alpha to {forbidden:?} in 25 network creations (engine {}): {unguarded:?}", engine_major());
    if engine_major() < 28 && !others {
        assert!(
            through > 0,
            "no connection got through without the guard: the spray cannot see the moment it guards ({unguarded:?})"
        );
    }

    let mut guard = Guard::start(&s.net.name);
    let (guarded, _) = round(&mut churn);
    println!("agent guard: with it: {guarded:?}");
    for t in &forbidden {
        assert_eq!(
            guarded.get(&show(t)),
            None,
            "with the guard, {} answered alpha while Docker made networks: {guarded:?}",
            show(t)
        );
    }
    assert!(
        guarded.get(&show(&scene.proxy)).copied().unwrap_or(0) > 0,
        "the gateway's proxy on alpha's own network did not answer with the guard: {guarded:?}"
    );
    let ended = guard.stop();
    assert!(
        ended.is_some_and(|e| e.success()),
        "the guard ended with {ended:?}"
    );
    let tag = format!("nasiko-agent-guard {}", s.net.name);
    let left: Vec<String> = fence::agent_guard_rules()
        .into_iter()
        .filter(|r| r.contains(&tag))
        .collect();
    assert!(left.is_empty(), "the stopped guard left {left:?}");
}
