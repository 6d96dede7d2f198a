//! Each agent's own network (`nasiko_contract::agent_network`): made before the agent starts,
//! with a small subnet from the stack's pool (AGENT_SUBNET_POOL) and the agent's label, and gone
//! with the agent. Only the agent's entry container joins it; the registry sidecar joins the
//! gateway and Phoenix. Agents on different networks cannot address each other: Docker drops
//! traffic between bridge networks.

use super::DeployError;
use crate::process::{argv, run, CmdError};
use nasiko_contract::{agent_bridge, agent_network, build_network, labels};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The bridge driver's option that names the network's Linux bridge.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

const SHORT: Duration = Duration::from_secs(60);

/// An IPv4 prefix, `base/len`, with `base` its first address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: u32,
    pub len: u8,
}

impl Subnet {
    /// `a.b.c.d/len`, with no host bits set.
    pub fn parse(s: &str) -> Result<Subnet, SubnetError> {
        let bad = || SubnetError::NotASubnet(s.to_string());
        let (ip, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
        let base = u32::from(ip);
        if base & !mask(len) != 0 {
            return Err(SubnetError::HostBits {
                given: s.to_string(),
                subnet: Subnet {
                    base: base & mask(len),
                    len,
                },
            });
        }
        Ok(Subnet { base, len })
    }
    fn last(&self) -> u32 {
        self.base | !mask(self.len)
    }
    pub fn overlaps(&self, o: &Subnet) -> bool {
        self.base <= o.last() && o.base <= self.last()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// Where agents' networks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentNetworks {
    /// A network per agent, each a `/prefix` of `pool`.
    Own { pool: Subnet, prefix: u8 },
    /// Legacy: every agent on the one shared network (DOCKER_NETWORK). Agents can reach each
    /// other directly there, past the gateway's auth and chat logging.
    Shared,
}

impl AgentNetworks {
    pub fn new(mode: &str, pool: &str, prefix: u8) -> Result<AgentNetworks, NetworksError> {
        match mode {
            "shared" => Ok(AgentNetworks::Shared),
            "own" => {
                let pool = Subnet::parse(pool).map_err(NetworksError::Pool)?;
                if !(pool.len..=29).contains(&prefix) || prefix < 16 || prefix - pool.len > 16 {
                    return Err(NetworksError::Prefix {
                        prefix,
                        pool_len: pool.len,
                    });
                }
                Ok(AgentNetworks::Own { pool, prefix })
            }
            other => Err(NetworksError::Mode(other.to_string())),
        }
    }
}

/// Why a text is not a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetError {
    /// Not `a.b.c.d/len` with `len` at most 32.
    NotASubnet(String),
    /// The address has bits set past the prefix; `subnet` is the one meant, likely.
    HostBits { given: String, subnet: Subnet },
}

impl std::fmt::Display for SubnetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubnetError::NotASubnet(s) => write!(
                f,
                "'{s}' is not an IPv4 subnet; write it as e.g. 10.213.0.0/16"
            ),
            SubnetError::HostBits { given, subnet } => {
                write!(f, "'{given}' has host bits set; the subnet is {subnet}")
            }
        }
    }
}

impl std::error::Error for SubnetError {}

/// Why AGENT_NETWORKS, AGENT_SUBNET_POOL and AGENT_SUBNET_PREFIX cannot work together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworksError {
    /// AGENT_SUBNET_POOL is not a subnet.
    Pool(SubnetError),
    /// AGENT_SUBNET_PREFIX does not fit the pool (or gives too many networks to look through).
    Prefix { prefix: u8, pool_len: u8 },
    /// AGENT_NETWORKS is neither own nor shared.
    Mode(String),
}

impl std::fmt::Display for NetworksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworksError::Pool(e) => write!(f, "AGENT_SUBNET_POOL: {e}"),
            NetworksError::Prefix { prefix, pool_len } => write!(
                f,
                "AGENT_SUBNET_PREFIX {prefix} must be between 16 and 29, no shorter than AGENT_SUBNET_POOL's /{pool_len} and at most 16 bits longer (28, the default, gives each agent 13 addresses)"
            ),
            NetworksError::Mode(other) => write!(
                f,
                "AGENT_NETWORKS '{other}' must be own (a network per agent, the default) or shared (legacy: every agent on DOCKER_NETWORK, able to call every other agent past the gateway)"
            ),
        }
    }
}

impl std::error::Error for NetworksError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetworksError::Pool(e) => Some(e),
            NetworksError::Prefix { .. } | NetworksError::Mode(_) => None,
        }
    }
}

/// The first `/prefix` of `pool`, from slot `hint` on and round, that overlaps none of `used`.
pub fn pick(pool: Subnet, prefix: u8, used: &[Subnet], hint: u64) -> Option<Subnet> {
    let slots = 1u64 << (prefix - pool.len);
    (0..slots)
        .map(|i| (hint + i) % slots)
        .map(|i| Subnet {
            base: pool.base + ((i as u32) << (32 - prefix)),
            len: prefix,
        })
        .find(|s| !used.iter().any(|u| u.overlaps(s)))
}

/// A slot of the pool per agent name, so an agent tends to keep its subnet and concurrent
/// deploys start apart (FNV-1a).
fn hint(agent: &str) -> u64 {
    agent.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The value of `key` on network `name`: `None` when there is no such network.
async fn label(name: &str, key: &str) -> Option<String> {
    let format = format!("{{{{index .Labels \"{key}\"}}}}");
    let o = run(
        &argv(&["docker", "network", "inspect", "--format", &format, name]),
        SHORT,
        None,
    )
    .await
    .ok()?;
    let v = o.stdout.trim();
    Some(if v == "<no value>" { "" } else { v }.to_string())
}

/// Every IPv4 subnet Docker's networks hold now. A network removed between the listing and the
/// inspect (another deploy's, a test's) makes the inspect fail, in words that differ between
/// Docker versions ("not found", "No such network"): list again, a few times.
async fn used_subnets() -> Result<Vec<Subnet>, CmdError> {
    let mut tries = 0;
    loop {
        let ids = run(&argv(&["docker", "network", "ls", "-q"]), SHORT, None).await?;
        let mut a = argv(&[
            "docker",
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        ]);
        a.extend(ids.stdout.split_whitespace().map(String::from));
        match run(&a, SHORT, None).await {
            Ok(o) => {
                return Ok(o
                    .stdout
                    .split_whitespace()
                    .filter_map(|s| Subnet::parse(s).ok())
                    .collect())
            }
            Err(CmdError::Failed(..)) if tries < 5 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// One allocation at a time in this process; another process's is caught by Docker, which
/// refuses an overlapping subnet.
static ALLOCATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A network the build agent makes: its name, the label that says whose it is, and what it is
/// for (in messages).
struct Wanted<'a> {
    name: &'a str,
    label: (&'a str, &'a str),
    /// An agent's network: the stack the agent is in (`nasiko.stack`), and the label of networks
    /// made for packages, which `local-down.sh --agents` removes whatever their stack. Neither
    /// for the build network, which another stack's builds may be using.
    agents_stack: Option<&'a str>,
    whose: String,
    /// `-o` options of the bridge driver.
    options: &'a [&'a str],
}

/// The agent's own network, made when missing and labelled with the stack (`shared`, the
/// stack's shared agents network, names it). Shared mode: `shared` itself.
pub async fn ensure(
    mode: &AgentNetworks,
    shared: &str,
    agent: &str,
) -> Result<String, DeployError> {
    let AgentNetworks::Own { pool, prefix } = *mode else {
        return Ok(shared.to_string());
    };
    let name = agent_network(shared, agent);
    let wanted = Wanted {
        name: &name,
        label: (labels::AGENT_NETWORK, agent),
        agents_stack: Some(shared),
        whose: format!("agent '{agent}''s"),
        options: &[],
    };
    make(&wanted, Some((pool, prefix, hint(agent)))).await?;
    Ok(name)
}

/// The network builds run on ([`nasiko_contract::build_network`]), made when missing: a bridge
/// whose containers cannot reach each other (`enable_icc=false`) and, as every bridge, cannot
/// reach another bridge's. Its subnet comes from the pool in `own` mode, from Docker's in
/// `shared` mode.
pub async fn ensure_builds(mode: &AgentNetworks, shared: &str) -> Result<String, DeployError> {
    let name = build_network(shared);
    let wanted = Wanted {
        name: &name,
        label: (labels::BUILD_NETWORK, shared),
        agents_stack: None,
        whose: format!("the build network of stack '{shared}'"),
        options: &["com.docker.network.bridge.enable_icc=false"],
    };
    let pool = match *mode {
        AgentNetworks::Own { pool, prefix } => Some((pool, prefix, hint(&name))),
        AgentNetworks::Shared => None,
    };
    make(&wanted, pool).await?;
    Ok(name)
}

/// Make `w` unless it exists with its label; `pool`: where its subnet comes from (`None`:
/// Docker chooses).
async fn make(w: &Wanted<'_>, pool: Option<(Subnet, u8, u64)>) -> Result<(), DeployError> {
    let name = w.name;
    let (key, value) = w.label;
    let _one = ALLOCATING.lock().await;
    let mut refused = Vec::new();
    for _ in 0..8 {
        match label(name, key).await {
            Some(v) if v == value => return Ok(()),
            Some(_) => {
                return Err(DeployError::machine(format!(
                    "a Docker network named {name} exists and is not {} (it lacks the label {key}={value}); remove it (docker network rm {name}) and deploy again",
                    w.whose
                )))
            }
            None => {}
        }
        let subnet = match pool {
            None => None,
            Some((pool, prefix, hint)) => {
                let mut used = used_subnets()
                    .await
                    .map_err(|e| DeployError::docker("cannot list Docker's networks", e))?;
                used.extend(&refused);
                let Some(subnet) = pick(pool, prefix, &used, hint) else {
                    return Err(DeployError::machine(format!(
                        "AGENT_SUBNET_POOL {pool} has no free /{prefix} left for {}; undeploy agents you no longer need, or give a larger pool",
                        w.whose
                    )));
                };
                Some(subnet)
            }
        };
        match create(w, subnet).await {
            Ok(()) => {
                let subnet = subnet.map_or("Docker's choice".to_string(), |s| s.to_string());
                tracing::info!(network = %name, %subnet, "made {}", w.whose);
                return Ok(());
            }
            // taken meanwhile by another engine client: look again
            Err(CmdError::Failed(_, _, m)) if m.contains("overlap") => refused.extend(subnet),
            Err(CmdError::Failed(_, _, m)) if m.contains("already exists") => {}
            Err(e) => return Err(DeployError::docker(&format!("cannot make {}", w.whose), e)),
        }
    }
    Err(DeployError::machine(format!(
        "cannot make network {name}: every subnet tried was taken meanwhile; deploy again"
    )))
}

async fn create(w: &Wanted<'_>, subnet: Option<Subnet>) -> Result<(), CmdError> {
    let mut marks = vec![format!("{}={}", w.label.0, w.label.1)];
    if let Some(stack) = w.agents_stack {
        marks.push(format!("{}={stack}", labels::STACK));
        marks.push(super::docker::NETWORK_OWNER_LABEL.to_string());
    }
    let mut a = argv(&["docker", "network", "create", "--driver", "bridge"]);
    if let Some(s) = subnet {
        a.extend(["--subnet".to_string(), s.to_string()]);
    }
    for o in w.options {
        a.extend(["-o".to_string(), o.to_string()]);
    }
    // a bridge name the agent guard knows (`build-agent guard`)
    a.extend([
        "-o".to_string(),
        format!("{BRIDGE_NAME_OPTION}={}", agent_bridge(w.name)),
    ]);
    for l in marks {
        a.extend(["--label".to_string(), l]);
    }
    a.push(w.name.to_string());
    run(&a, SHORT, None).await.map(drop)
}

/// Remove the agent's own network in `stack`, first taking out whoever is still on it (the
/// gateway, Phoenix). A network of that name that is not the agent's is left alone.
pub async fn remove(stack: &str, agent: &str) -> Result<bool, CmdError> {
    let name = agent_network(stack, agent);
    if label(&name, labels::AGENT_NETWORK).await.as_deref() != Some(agent) {
        return Ok(false);
    }
    // the sidecar may join a member again between the two steps (a gateway starting): again
    let mut last = None;
    for _ in 0..3 {
        let o = run(
            &argv(&[
                "docker",
                "network",
                "inspect",
                "--format",
                "{{range $id, $c := .Containers}}{{$id}} {{end}}",
                &name,
            ]),
            SHORT,
            None,
        )
        .await?;
        for id in o.stdout.split_whitespace() {
            let _ = run(
                &argv(&["docker", "network", "disconnect", "-f", &name, id]),
                SHORT,
                None,
            )
            .await;
        }
        match run(&argv(&["docker", "network", "rm", &name]), SHORT, None).await {
            Ok(_) => return Ok(true),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried"))
}

/// At start: remove agent networks left by a deploy that never finished (killed after making
/// the network, its job not run again): no container of the agent exists, and the network is
/// older than a minute (a deploy of another consumer may have just made it).
pub async fn remove_orphans(stack: &str) -> usize {
    let filter = format!("label={}={stack}", labels::STACK);
    let Ok(ids) = run(
        &argv(&["docker", "network", "ls", "-q", "--filter", &filter]),
        SHORT,
        None,
    )
    .await
    else {
        return 0;
    };
    if ids.stdout.trim().is_empty() {
        return 0;
    }
    let format = format!(
        "{{{{index .Labels \"{}\"}}}} {{{{.Created.Unix}}}}",
        labels::AGENT_NETWORK
    );
    let mut a = argv(&["docker", "network", "inspect", "--format", &format]);
    a.extend(ids.stdout.split_whitespace().map(String::from));
    let Ok(o) = run(&a, SHORT, None).await else {
        return 0;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut removed = 0;
    for line in o.stdout.lines() {
        let Some((agent, created)) = line.split_once(' ') else {
            continue;
        };
        let young = created.trim().parse::<u64>().map_or(true, |c| now < c + 60);
        if young || has_containers(agent).await {
            continue;
        }
        if let Ok(true) = remove(stack, agent).await {
            tracing::info!(agent, "removed the network of a deploy that never finished");
            removed += 1;
        }
    }
    removed
}

async fn has_containers(agent: &str) -> bool {
    let filter = format!("label={}={agent}", labels::NAME);
    match run(
        &argv(&["docker", "ps", "-aq", "--filter", &filter]),
        SHORT,
        None,
    )
    .await
    {
        Ok(o) => !o.stdout.trim().is_empty(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Subnet {
        Subnet::parse(x).unwrap()
    }

    #[test]
    fn subnets_read_and_overlap() {
        assert_eq!(s("10.213.0.0/16").to_string(), "10.213.0.0/16");
        assert!(Subnet::parse("10.213.0.1/16")
            .unwrap_err()
            .to_string()
            .contains("10.213.0.0/16"));
        for bad in ["10.213.0.0", "10.213.0/16", "10.213.0.0/33", "x/8", ""] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        assert!(s("10.0.0.0/8").overlaps(&s("10.213.4.16/28")));
        assert!(s("10.213.4.16/28").overlaps(&s("10.0.0.0/8")));
        assert!(!s("10.213.4.16/28").overlaps(&s("10.213.4.32/28")));
        assert!(s("0.0.0.0/0").overlaps(&s("198.18.0.0/15")));
    }

    #[test]
    fn pick_skips_what_is_used_and_wraps_round() {
        let pool = s("10.213.0.0/24");
        assert_eq!(pick(pool, 28, &[], 0), Some(s("10.213.0.0/28")));
        assert_eq!(pick(pool, 28, &[], 17), Some(s("10.213.0.16/28")));
        let used = [s("10.213.0.16/28"), s("10.213.0.32/27")];
        assert_eq!(pick(pool, 28, &used, 1), Some(s("10.213.0.64/28")));
        // the last slot taken: round to the first
        assert_eq!(
            pick(pool, 28, &[s("10.213.0.240/28")], 15),
            Some(s("10.213.0.0/28"))
        );
        // a platform network over the whole pool leaves nothing
        assert_eq!(pick(pool, 28, &[s("10.213.0.0/16")], 3), None);
        // 16 slots of a /24, all handed out without a repeat
        let mut taken = Vec::new();
        while let Some(n) = pick(pool, 28, &taken, 5) {
            assert!(!taken.contains(&n));
            taken.push(n);
        }
        assert_eq!(taken.len(), 16);
    }

    #[test]
    fn the_setting_says_what_to_write() {
        assert_eq!(
            AgentNetworks::new("own", "10.213.0.0/16", 28),
            Ok(AgentNetworks::Own {
                pool: s("10.213.0.0/16"),
                prefix: 28
            })
        );
        assert_eq!(
            AgentNetworks::new("shared", "junk", 0),
            Ok(AgentNetworks::Shared)
        );
        assert!(AgentNetworks::new("own", "10.213.0.0/16", 30)
            .unwrap_err()
            .to_string()
            .contains("28"));
        assert!(AgentNetworks::new("own", "10.213.0.0/24", 20).is_err());
        // at most 65536 networks to look through
        assert!(AgentNetworks::new("own", "10.0.0.0/8", 28).is_err());
        assert!(AgentNetworks::new("own", "10.0.0.0/8", 24).is_ok());
        assert!(AgentNetworks::new("own", "10.213.0.1/16", 28)
            .unwrap_err()
            .to_string()
            .contains("host bits"));
        assert!(AgentNetworks::new("per-agent", "10.213.0.0/16", 28)
            .unwrap_err()
            .to_string()
            .contains("own"));
    }
}
