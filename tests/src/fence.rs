//! The fence tried by address (issue 20, item 7): what a deployed agent, or a build, can open a
//! TCP connection to. Targets are read from the engine (`docker inspect`, `docker network
//! inspect`), never guessed, and tried from inside a container by one script that runs the probes
//! in parallel with a 1 s connect timeout (`tests/agents/build-probe/probe.sh`, busybox `nc`).
//!
//! Every address tried is on this machine: the stack's containers, and the host through its
//! addresses. Names are tried from a twin of the agent (a container on the same networks) whose
//! resolver has `ndots:1`: Docker's embedded DNS then answers a one-label name it does not know
//! with "no address" itself, where for the agent it would ask the host's resolver, off this
//! machine.

use crate::docker::{docker, docker_ok, ensure_busybox_image, unique, TEST_LABEL};
use serde_json::Value;
use std::collections::BTreeSet;

/// The platform's ports, tried on every platform address whatever a container exposes: Redis,
/// the backend, Kong's admin, the sidecar's API, chat history, auth, MongoDB, Postgres,
/// Phoenix, Kong's host ports.
pub const KNOWN_PORTS: &[u16] = &[
    6379, 8000, 8001, 8080, 8002, 8082, 27017, 5432, 4317, 4318, 6006, 9100, 9101, 9102, 9443,
];
/// The Docker engine's TCP API, tried on every host address.
pub const DOCKER_API_PORTS: &[u16] = &[2375, 2376];
/// The names of the platform's services and aliases (with the containers' names, tried too).
pub const PLATFORM_NAMES: &[&str] = &[
    "kong-admin",
    "kong-gateway",
    "redis",
    "nasiko-backend",
    "nasiko-auth-service",
    "kong-service-registry",
    "nasiko-worker",
];

/// One TCP target, `host:port` when printed.
pub type Target = (String, u16);

pub fn show(t: &Target) -> String {
    format!("{}:{}", t.0, t.1)
}

/// A container of the stack, as the engine has it.
#[derive(Debug, Clone)]
pub struct PlatformContainer {
    pub name: String,
    pub service: String,
    /// (network, IPv4 address) on every network it is on.
    pub addresses: Vec<(String, String)>,
    /// (network, gateway address) of every network it is on.
    pub gateways: Vec<(String, String)>,
    /// Container ports it exposes (tcp).
    pub exposed: BTreeSet<u16>,
    /// Host ports it is published on.
    pub published: BTreeSet<u16>,
}

fn inspect(ids: &[String]) -> Vec<Value> {
    if ids.is_empty() {
        return vec![];
    }
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    serde_json::from_str(&docker_ok(&args)).expect("docker inspect is JSON")
}

fn tcp_port(key: &str) -> Option<u16> {
    key.strip_suffix("/tcp")?.parse().ok()
}

/// A container from its `docker inspect` entry.
pub fn container_of(c: &Value) -> PlatformContainer {
    let mut addresses = vec![];
    let mut gateways = vec![];
    for (net, n) in c["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if let Some(ip) = n["IPAddress"].as_str().filter(|s| !s.is_empty()) {
            addresses.push((net.clone(), ip.to_string()));
        }
        if let Some(gw) = n["Gateway"].as_str().filter(|s| !s.is_empty()) {
            gateways.push((net.clone(), gw.to_string()));
        }
    }
    let exposed = c["Config"]["ExposedPorts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| tcp_port(k))
        .collect();
    let mut published = BTreeSet::new();
    for (k, binds) in c["NetworkSettings"]["Ports"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if tcp_port(k).is_none() {
            continue;
        }
        for b in binds.as_array().into_iter().flatten() {
            if let Some(p) = b["HostPort"].as_str().and_then(|p| p.parse().ok()) {
                published.insert(p);
            }
        }
    }
    PlatformContainer {
        name: c["Name"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string(),
        service: c["Config"]["Labels"]["com.docker.compose.service"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        addresses,
        gateways,
        exposed,
        published,
    }
}

/// Every container of compose project `project` on networks of its own (not the agent guard, in
/// the host's namespace: the host is tried as the host).
pub fn platform(project: &str) -> Vec<PlatformContainer> {
    let ids: Vec<String> = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ])
    .split_whitespace()
    .map(String::from)
    .collect();
    inspect(&ids)
        .iter()
        .filter(|c| c["HostConfig"]["NetworkMode"] != "host")
        .map(container_of)
        .collect()
}

/// One container (by name or id).
pub fn container(name: &str) -> PlatformContainer {
    container_of(&inspect(&[name.to_string()])[0])
}

/// The gateways `docker network inspect` gives a network (IPAM Config Gateway); empty when the
/// engine chose it itself (the default bridge): then a container's `Gateway` on it says it.
pub fn network_gateways(network: &str) -> Vec<String> {
    docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        network,
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// This host's own IPv4 addresses (`ip -4 addr`, global scope): where anyone on its networks
/// reaches what is published on all interfaces. Empty when `ip` is missing.
pub fn host_addresses() -> Vec<String> {
    addresses_by_device().into_iter().map(|(_, a)| a).collect()
}

/// The host's addresses that stay while the check runs: none on another network's bridge
/// (`br-…`, `nsk…`), which other tests make and remove meanwhile; an address that left the
/// machine and came back during a probe leads off it in between. The stack's own gateways and
/// the default bridge's are tried by name of their network.
pub fn stable_host_addresses() -> Vec<String> {
    addresses_by_device()
        .into_iter()
        .filter(|(dev, _)| {
            !dev.starts_with("br-") && !dev.starts_with(nasiko_contract::AGENT_BRIDGE_PREFIX)
        })
        .map(|(_, a)| a)
        .collect()
}

/// `ip -4 -o addr show scope global`: each address with its device.
fn addresses_by_device() -> Vec<(String, String)> {
    let Ok(o) = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
    else {
        return vec![];
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let dev = w.nth(1)?.to_string();
            w.find(|x| *x == "inet")?;
            Some((dev, w.next()?.split('/').next()?.to_string()))
        })
        .collect()
}

/// The probe script (tests/agents/build-probe/probe.sh), the one a build runs too.
pub fn probe_script() -> String {
    std::fs::read_to_string(crate::agents::samples_dir().join("build-probe/probe.sh"))
        .expect("tests/agents/build-probe/probe.sh")
}

/// Targets as the script reads them: one "HOST PORT" line each.
pub fn target_lines(targets: &BTreeSet<Target>) -> String {
    targets.iter().map(|(h, p)| format!("{h} {p}\n")).collect()
}

/// What a run of the probe script said.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Probed {
    /// How many targets it tried ("probed N").
    pub tried: Option<usize>,
    /// The targets that accepted a connection.
    pub open: BTreeSet<String>,
}

impl Probed {
    /// Set aside the answers from host addresses (of `was_host`, this host's when the plan was
    /// made) that are no longer this host's: a network another test removed meanwhile. Such an
    /// address leads off this machine, where this CI's network accepts any TCP connection (tried:
    /// from a container, every port of an address on no interface here answers), so its answer
    /// says nothing about the host. Returns what was set aside, for the log.
    pub fn without_departed_host_addresses(&mut self, was_host: &BTreeSet<String>) -> Vec<String> {
        let now: BTreeSet<String> = host_addresses().into_iter().collect();
        self.without_departed(was_host, &now)
    }

    /// [`Probed::without_departed_host_addresses`] with this host's addresses now given.
    fn without_departed(
        &mut self,
        was_host: &BTreeSet<String>,
        now_host: &BTreeSet<String>,
    ) -> Vec<String> {
        let departed = |t: &String| {
            let ip = t.rsplit_once(':').map_or(t.as_str(), |(ip, _)| ip);
            was_host.contains(ip) && !now_host.contains(ip)
        };
        let gone: Vec<String> = self.open.iter().filter(|t| departed(t)).cloned().collect();
        self.open.retain(|t| !departed(t));
        gone
    }
}

pub fn parse_probe(out: &str) -> Probed {
    let mut p = Probed::default();
    for l in out.lines() {
        if let Some(t) = l.strip_prefix("open ") {
            p.open.insert(t.trim().to_string());
        } else if let Some(n) = l.strip_prefix("probed ") {
            p.tried = n.trim().parse().ok();
        }
    }
    p
}

/// Run the probe script in `container` (`docker exec -i … sh -c`), the targets on its stdin.
pub fn probe_from(container: &str, targets: &BTreeSet<Target>) -> Probed {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .args(["exec", "-i", container, "sh", "-c", &probe_script()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker exec runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(target_lines(targets).as_bytes())
        .expect("write the targets");
    let o = child.wait_with_output().expect("docker exec ends");
    assert!(
        o.status.success(),
        "the probe in {container} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    parse_probe(&String::from_utf8_lossy(&o.stdout))
}

/// A test container, removed (with its anonymous volumes) on drop.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

/// A busybox container on Docker's default bridge listening on port 5000: whatever else runs on
/// this host, which neither an agent nor a build may reach (builds run on the stack's build
/// network). Returns it, its address and the bridge's gateway.
pub fn bridge_listener() -> (Container, String, String) {
    let name = unique("fence-listener");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{TEST_LABEL}={name}"),
        "--network",
        "bridge",
        ensure_busybox_image(),
        "nc",
        "-ll",
        "-p",
        "5000",
        "-e",
        "true",
    ]);
    let guard = Container(name.clone());
    let ip = docker_ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.bridge.IPAddress}}",
        &name,
    ]);
    assert!(
        !ip.is_empty(),
        "{name} has no address on the default bridge"
    );
    let mut gateway = network_gateways("bridge")
        .into_iter()
        .next()
        .unwrap_or_default();
    if gateway.is_empty() {
        gateway = docker_ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.bridge.Gateway}}",
            &name,
        ]);
    }
    assert!(!gateway.is_empty(), "no gateway on the default bridge");
    (guard, ip, gateway)
}

/// A listener of the test's on this host at the gateway of `stack`'s build network (the host, as
/// a build sees it), on a port the kernel chooses: the build probe's proof that it connects at
/// all. The network exists once the build agent has built for the stack.
pub fn build_listener(stack: &str) -> (std::net::TcpListener, Target) {
    let net = nasiko_contract::build_network(stack);
    let gateway = network_gateways(&net)
        .into_iter()
        .next()
        .or_else(|| bridge_address(&net))
        .unwrap_or_else(|| panic!("the build network {net} has no gateway"));
    let l = std::net::TcpListener::bind((gateway.as_str(), 0))
        .unwrap_or_else(|e| panic!("cannot listen on {gateway}, the gateway of {net}: {e}"));
    let port = l.local_addr().expect("bound").port();
    (l, (gateway, port))
}

/// The host's address on user-defined bridge network `network`: its interface, the bridge name
/// it was given (`com.docker.network.bridge.name`, as the build agent names its networks') or
/// `br-{id}` (Docker leaves a gateway it chose itself out of the network's IPAM config).
fn bridge_address(network: &str) -> Option<String> {
    let said = docker_ok(&[
        "network",
        "inspect",
        "-f",
        r#"{{.Id}} {{index .Options "com.docker.network.bridge.name"}}"#,
        network,
    ]);
    let mut words = said.split_whitespace();
    let id = words.next()?;
    let dev = words.next().map_or_else(
        || format!("br-{}", id.get(..12).unwrap_or(id)),
        str::to_string,
    );
    let o = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &dev])
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&o.stdout);
    let cidr = out.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
    Some(cidr.split('/').next()?.to_string())
}

/// A twin of `agent` for trying names: a busybox container on each of the agent's networks, its
/// resolver set to `ndots:1` so that Docker's DNS never forwards a one-label name it does not
/// know to the host's resolver (checked before it is used).
pub fn name_twin(agent: &PlatformContainer) -> Container {
    let name = unique("fence-twin");
    let (first, rest) = agent
        .addresses
        .split_first()
        .expect("the agent is on a network");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{TEST_LABEL}={name}"),
        "--network",
        &first.0,
        "--dns-opt",
        "ndots:1",
        ensure_busybox_image(),
        "sleep",
        "600",
    ]);
    let guard = Container(name.clone());
    for (net, _) in rest {
        docker_ok(&["network", "connect", net, &name]);
    }
    let conf = docker_ok(&["exec", &name, "cat", "/etc/resolv.conf"]);
    assert!(
        conf.lines()
            .any(|l| l.starts_with("options") && l.contains("ndots:1")),
        "the twin's resolver is not ndots:1; names would be asked of the host's resolver: {conf}"
    );
    guard
}

/// What to try around one deployed agent of a stack, read from the engine.
#[derive(Debug)]
pub struct Plan {
    /// The agent the probes run in.
    pub agent: PlatformContainer,
    /// Every container of the stack.
    pub platform: Vec<PlatformContainer>,
    /// The host's addresses: the gateways of the agent's networks, of the agents' and the
    /// platform's networks and of the default bridge, and the host's own addresses.
    pub host: BTreeSet<String>,
    /// The gateways of the agents' and the platform's networks (they must be tried).
    pub network_gateways: BTreeSet<String>,
    /// The ports the stack publishes on the host, the stack's chosen ones included.
    pub host_ports: BTreeSet<u16>,
    /// The gateway's proxy as the agent reaches it: its address on the agent's own network, port
    /// 8000.
    pub proxy: Target,
}

impl Plan {
    /// The plan for `agent` (a container name) in `stack`; `bridge_gateway` is the default
    /// bridge's gateway (see [`bridge_listener`]).
    pub fn new(stack: &crate::stack::Stack, agent: &str, bridge_gateway: &str) -> Plan {
        let agent = container(agent);
        let platform = platform(&stack.project);
        assert!(
            platform.len() >= 5,
            "the stack's containers: {:?}",
            platform.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
        let gw = platform
            .iter()
            .find(|c| c.service == "kong-gateway")
            .expect("the gateway's container");
        // the proxy as the agent reaches it: the gateway's address on the agent's own network
        let own = agent
            .addresses
            .iter()
            .map(|(n, _)| n)
            .find(|n| nasiko_contract::agent_of_network(&stack.network, n).is_some())
            .expect("the agent is on a network of its own")
            .clone();
        let proxy_ip = gw
            .addresses
            .iter()
            .find(|(n, _)| *n == own)
            .map(|(_, ip)| ip.clone())
            .expect("the gateway is on the agent's own network");
        let mut network_gateways = BTreeSet::new();
        for net in [&stack.network, &stack.platform_network] {
            let mut gws = self::network_gateways(net);
            // a network whose IPAM chose its gateway itself: the containers on it know it
            gws.extend(
                platform
                    .iter()
                    .flat_map(|c| c.gateways.iter())
                    .filter(|(n, _)| n == net)
                    .map(|(_, g)| g.clone()),
            );
            assert!(!gws.is_empty(), "no gateway address for network {net}");
            network_gateways.extend(gws);
        }
        let mut host: BTreeSet<String> = network_gateways.clone();
        host.extend(agent.gateways.iter().map(|(_, g)| g.clone()));
        host.insert(bridge_gateway.to_string());
        host.extend(stable_host_addresses());
        let mut host_ports: BTreeSet<u16> = platform
            .iter()
            .flat_map(|c| c.published.iter().copied())
            .collect();
        host_ports.extend([stack.proxy_port, stack.admin_port, stack.registry_port]);
        Plan {
            agent,
            platform,
            host,
            network_gateways,
            host_ports,
            proxy: (proxy_ip, 8000),
        }
    }

    /// Every platform address on its exposed ports and the platform's known ports.
    pub fn platform_targets(&self) -> BTreeSet<Target> {
        let mut t = BTreeSet::new();
        for c in &self.platform {
            for (_, ip) in &c.addresses {
                for p in KNOWN_PORTS.iter().chain(c.exposed.iter()) {
                    t.insert((ip.clone(), *p));
                }
            }
        }
        t
    }

    /// Every host address on every port the stack publishes and on the Docker API's ports.
    pub fn host_targets(&self) -> BTreeSet<Target> {
        let mut t = BTreeSet::new();
        for h in &self.host {
            for p in self.host_ports.iter().chain(DOCKER_API_PORTS) {
                t.insert((h.clone(), *p));
            }
        }
        t
    }

    /// Every port tried somewhere: the known ones, the exposed ones, the published ones.
    pub fn all_ports(&self) -> BTreeSet<u16> {
        let mut ports: BTreeSet<u16> = KNOWN_PORTS.iter().copied().collect();
        ports.extend(DOCKER_API_PORTS);
        ports.extend(self.host_ports.iter().copied());
        ports.extend(self.platform.iter().flat_map(|c| c.exposed.iter().copied()));
        ports
    }

    /// The platform's names and its containers' names, on every port tried.
    pub fn name_targets(&self) -> BTreeSet<Target> {
        let mut names: BTreeSet<String> = PLATFORM_NAMES.iter().map(|s| s.to_string()).collect();
        names.extend(self.platform.iter().map(|c| c.name.clone()));
        let mut t = BTreeSet::new();
        for n in &names {
            // a one-label name only: ndots:1 keeps those from the host's resolver
            assert!(
                !n.contains('.'),
                "a name with a dot would leave the machine: {n}"
            );
            for p in self.all_ports() {
                t.insert((n.clone(), p));
            }
        }
        t
    }

    /// The gateway's container's name: on the agents' network it is the proxy too.
    pub fn gateway_container(&self) -> &str {
        &self
            .platform
            .iter()
            .find(|c| c.service == "kong-gateway")
            .expect("the gateway's container")
            .name
    }
}

/// The agent guard's rules of any stack in the host's `mangle FORWARD`.
pub fn agent_guard_rules() -> Vec<String> {
    let o = std::process::Command::new("iptables")
        .args(["-w", "-t", "mangle", "-S", "FORWARD"])
        .output()
        .expect("iptables runs (the docker tier runs as root)");
    assert!(
        o.status.success(),
        "iptables -t mangle -S FORWARD: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("nasiko-agent-guard"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_output_is_read_line_by_line() {
        let p = parse_probe("open 172.23.0.2:8000\nopen 10.0.0.1:9101\nprobed 48\n");
        assert_eq!(p.tried, Some(48));
        assert_eq!(
            p.open.iter().map(String::as_str).collect::<Vec<_>>(),
            ["10.0.0.1:9101", "172.23.0.2:8000"]
        );
        assert_eq!(parse_probe("").tried, None);
    }

    #[test]
    fn a_container_is_read_from_docker_inspect() {
        let c: Value = serde_json::from_str(
            r#"{"Name": "/p-kong-gateway-1",
                "Config": {"Labels": {"com.docker.compose.service": "kong-gateway"},
                           "ExposedPorts": {"8000/tcp": {}, "8001/tcp": {}, "53/udp": {}}},
                "NetworkSettings": {
                  "Ports": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9100"}],
                            "8001/tcp": null},
                  "Networks": {"p-core": {"IPAddress": "172.22.0.4", "Gateway": "172.22.0.1"},
                               "p-net": {"IPAddress": "172.23.0.2", "Gateway": "172.23.0.1"}}}}"#,
        )
        .unwrap();
        let k = container_of(&c);
        assert_eq!(
            (k.name.as_str(), k.service.as_str()),
            ("p-kong-gateway-1", "kong-gateway")
        );
        assert_eq!(k.exposed, BTreeSet::from([8000, 8001]));
        assert_eq!(k.published, BTreeSet::from([9100]));
        assert_eq!(
            k.addresses,
            [
                ("p-core".to_string(), "172.22.0.4".to_string()),
                ("p-net".to_string(), "172.23.0.2".to_string())
            ]
        );
        assert_eq!(k.gateways[1].1, "172.23.0.1");
    }

    #[test]
    fn only_answers_from_host_addresses_gone_since_the_plan_are_set_aside() {
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        let mut p = Probed {
            tried: Some(4),
            open: set(&[
                "10.213.5.1:2375",
                "172.18.0.1:2375",
                "10.9.9.9:8000",
                "10.213.6.1:80",
            ]),
        };
        let was = set(&["10.213.5.1", "172.18.0.1", "10.213.6.1"]);
        let now = set(&["172.18.0.1", "10.213.6.1"]);
        let gone = p.without_departed(&was, &now);
        assert_eq!(gone, ["10.213.5.1:2375"]);
        // a host address still here, and an address never the host's, stay: they count
        assert_eq!(
            p.open,
            set(&["172.18.0.1:2375", "10.9.9.9:8000", "10.213.6.1:80"])
        );
    }
}
