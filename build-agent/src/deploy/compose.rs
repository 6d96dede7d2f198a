//! Compose handling as data in, data out: find and read the user's compose file, make it
//! deployable, pick the entry service, and generate the override that adds the image, name,
//! labels, shared network, environment and limits. The user's file is never edited (the policy
//! it must pass is `policy`). Pure.

use super::policy::Refusal;
use nasiko_contract::labels;
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

pub const COMPOSE_FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
];
/// The network name real agent packages use; mapped onto the shared network.
pub const LEGACY_NETWORK: &str = "agents-net";

pub fn find_compose_file(dir: &Path) -> Option<PathBuf> {
    COMPOSE_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// What the override needs to say.
#[derive(Debug, Clone)]
pub struct OverrideSpec<'a> {
    pub agent: &'a str,
    pub image: &'a str,
    /// The Docker network every agent joins (DOCKER_NETWORK).
    pub network: &'a str,
    pub owner: &'a str,
    pub version: &'a str,
    pub upload_id: &'a str,
    /// The entry service's environment, in order (later wins).
    pub env: &'a [(String, String)],
    /// Caps put on every service of the package.
    pub limits: &'a crate::config::AgentLimits,
}

/// The caps and hardening every container of an agent gets, whatever its package says.
fn harden(svc: &mut Mapping, limits: &crate::config::AgentLimits) {
    if !limits.memory.is_empty() {
        svc.insert(s("mem_limit"), s(&limits.memory));
    }
    if limits.cpus > 0.0 {
        svc.insert(s("cpus"), Value::Number(limits.cpus.into()));
    }
    if limits.pids > 0 {
        svc.insert(s("pids_limit"), Value::Number(limits.pids.into()));
    }
    svc.insert(
        s("security_opt"),
        Value::Sequence(vec![s("no-new-privileges:true")]),
    );
}

pub fn container_name(agent: &str) -> String {
    nasiko_contract::agent_ref(agent)
}

pub fn project_name(agent: &str) -> String {
    nasiko_contract::agent_ref(&agent.replace('.', "-"))
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn services(user: &Value) -> Result<&Mapping, Refusal> {
    user.get("services")
        .and_then(Value::as_mapping)
        .ok_or_else(|| Refusal("the compose file has no 'services' mapping".into()))
}

/// The service that is the agent: key = name, else container_name = name, else the only one,
/// else the first with a `build`.
pub fn entry_service(user: &Value, agent: &str) -> Result<String, Refusal> {
    let svcs = services(user)?;
    let keys: Vec<&str> = svcs.keys().filter_map(Value::as_str).collect();
    if keys.contains(&agent) {
        return Ok(agent.to_string());
    }
    for (k, v) in svcs {
        if v.get("container_name").and_then(Value::as_str) == Some(agent) {
            return Ok(k.as_str().unwrap_or_default().to_string());
        }
    }
    if keys.len() == 1 {
        return Ok(keys[0].to_string());
    }
    for (k, v) in svcs {
        if v.get("build").is_some() {
            return Ok(k.as_str().unwrap_or_default().to_string());
        }
    }
    Err(Refusal(format!("cannot tell which service is the agent: name one service '{agent}' (or give it container_name: {agent})")))
}

/// Whether the file format needs the old `external: {name: …}` form (compose v1, versions 2.x–3.4).
fn old_external_form(version: Option<&str>) -> bool {
    match version {
        None => false,
        Some(v) => {
            let mut it = v.split('.');
            let major: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(3);
            let minor: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            major < 3 || (major == 3 && minor < 5)
        }
    }
}

fn external(network: &str, old: bool) -> Value {
    let mut m = Mapping::new();
    if old {
        let mut e = Mapping::new();
        e.insert(s("name"), s(network));
        m.insert(s("external"), Value::Mapping(e));
    } else {
        m.insert(s("external"), Value::Bool(true));
        m.insert(s("name"), s(network));
    }
    Value::Mapping(m)
}

fn labels(spec: &OverrideSpec, ty: &str) -> Value {
    let mut l = Mapping::new();
    l.insert(s(labels::TYPE), s(ty));
    l.insert(s(labels::NAME), s(spec.agent));
    l.insert(s(labels::OWNER), s(spec.owner));
    if !spec.version.is_empty() {
        l.insert(s(labels::VERSION), s(spec.version));
    }
    if !spec.upload_id.is_empty() {
        l.insert(s(labels::UPLOAD_ID), s(spec.upload_id));
    }
    Value::Mapping(l)
}

fn service_networks(svc: &Value) -> Vec<String> {
    match svc.get("networks") {
        Some(Value::Sequence(v)) => v
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Some(Value::Mapping(m)) => m
            .keys()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => vec![],
    }
}

/// The package's compose file made deployable as the Python listener deployed it: what
/// normalization changed (for the build log) and the external networks of the package's own that
/// must exist before `up` (agents-net and the shared network are mapped by the override).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Normalized {
    pub notes: Vec<String>,
    pub own_networks: Vec<String>,
}

/// Names a package may not take for a network of its own.
const RESERVED_NETWORKS: &[&str] = &["host", "bridge", "none", "default"];

/// The container side of a `ports:` entry: "5000", "8085:5000", "127.0.0.1:8085:5000/udp",
/// "5000-5001", or the long form's `target` (and `protocol`).
fn container_port(entry: &Value) -> Option<String> {
    match entry {
        Value::Number(n) => Some(n.to_string()),
        Value::String(spec) => {
            let (addr, proto) = match spec.rsplit_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (spec.as_str(), None),
            };
            let port = addr.rsplit(':').next()?.trim();
            (!port.is_empty()).then(|| match proto {
                Some(p) if p != "tcp" => format!("{port}/{p}"),
                _ => port.to_string(),
            })
        }
        Value::Mapping(m) => {
            let target = match m.get("target")? {
                Value::Number(n) => n.to_string(),
                Value::String(t) => t.clone(),
                _ => return None,
            };
            Some(match m.get("protocol").and_then(Value::as_str) {
                Some(p) if p != "tcp" => format!("{target}/{p}"),
                _ => target,
            })
        }
        _ => None,
    }
}

/// Make a package's compose file deployable, in place (on our copy of it):
/// - `environment:` with no entries is an empty environment (compose itself refuses it);
/// - `ports:` never reach the host: the container ports become `expose` (reached through the
///   gateway), or with `publish` are published on 127.0.0.1 at random host ports;
/// - external networks other than the agents network are the package's own: listed so the build
///   agent can create them (labelled as its own) before `up`.
pub fn normalize_package(
    user: &mut Value,
    shared: &str,
    publish: bool,
) -> Result<Normalized, Refusal> {
    let mut out = Normalized::default();
    // without `version`, compose v1 (1.27+) and v2 both read the file as the Compose Specification
    if let Some(m) = user.as_mapping_mut() {
        m.remove("version");
    }
    let svcs = user
        .get_mut("services")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| Refusal("the compose file has no 'services' mapping".into()))?;
    for (name, svc) in svcs.iter_mut() {
        let n = name.as_str().unwrap_or("?").to_string();
        let Some(svc) = svc.as_mapping_mut() else {
            return Err(Refusal(format!("service '{n}' is not a mapping")));
        };
        if svc.get("environment").is_some_and(Value::is_null) {
            svc.remove("environment");
        }

        let Some(ports) = svc.remove("ports") else {
            continue;
        };
        let ports = match ports {
            Value::Sequence(v) => v,
            Value::Null => vec![],
            _ => return Err(Refusal(format!("service '{n}': 'ports' must be a list"))),
        };
        let mut targets = Vec::new();
        for p in &ports {
            let t = container_port(p).ok_or_else(|| {
                Refusal(format!("service '{n}': cannot read the port entry {p:?}"))
            })?;
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        if targets.is_empty() {
            continue;
        }
        if publish {
            let published = targets
                .iter()
                .map(|t| s(&format!("127.0.0.1::{t}")))
                .collect();
            svc.insert(s("ports"), Value::Sequence(published));
            out.notes.push(format!(
                "service '{n}': ports {} published on 127.0.0.1 only (PUBLISH_AGENT_PORTS)",
                targets.join(", ")
            ));
        } else {
            let expose = svc
                .entry(s("expose"))
                .or_insert_with(|| Value::Sequence(vec![]));
            if let Value::Sequence(e) = expose {
                for t in &targets {
                    if !e.iter().any(|x| x.as_str() == Some(t)) {
                        e.push(s(t));
                    }
                }
            }
            out.notes.push(format!(
                "service '{n}': ports {} are not published on the host; the agent is reached through the gateway (set PUBLISH_AGENT_PORTS=true to publish them on 127.0.0.1)",
                targets.join(", ")
            ));
        }
    }
    for (key, def) in user
        .get("networks")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let key = key.as_str().unwrap_or_default();
        let external = def.get("external");
        let is_external = match external {
            Some(Value::Bool(b)) => *b,
            Some(Value::Mapping(_)) => true,
            _ => false,
        };
        if !is_external {
            continue;
        }
        let name = external
            .and_then(|e| e.get("name"))
            .or_else(|| def.get("name"))
            .and_then(Value::as_str)
            .unwrap_or(key);
        if [LEGACY_NETWORK, "nasiko-network", shared].contains(&key)
            || [LEGACY_NETWORK, "nasiko-network", shared].contains(&name)
        {
            continue;
        }
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && name.len() <= 64;
        if !valid || RESERVED_NETWORKS.contains(&name) {
            return Err(Refusal(format!("the package joins the external network '{name}', which an agent may not use; name a network of the agent's own (letters, digits, '_', '.', '-'), or use agents-net")));
        }
        if !out.own_networks.iter().any(|x| x == name) {
            out.own_networks.push(name.to_string());
        }
    }
    Ok(out)
}

/// The override for a package with a compose file, or the whole file for one without (`user` None).
pub fn build_override(user: Option<&Value>, spec: &OverrideSpec) -> Result<Value, Refusal> {
    let mut root = Mapping::new();
    let version = user.and_then(|u| u.get("version")).and_then(|v| {
        v.as_str()
            .map(String::from)
            .or_else(|| v.as_f64().map(|f| f.to_string()))
    });
    if let Some(v) = &version {
        root.insert(s("version"), s(v));
    }
    let old = old_external_form(version.as_deref());
    let mut svcs = Mapping::new();
    let mut nets = Mapping::new();
    let entry = match user {
        Some(u) => entry_service(u, spec.agent)?,
        None => spec.agent.to_string(),
    };
    // the network key the entry service joins
    let entry_nets = user
        .and_then(|u| u.get("services"))
        .and_then(|x| x.get(entry.as_str()))
        .map(service_networks)
        .unwrap_or_default();
    let user_net_key = [LEGACY_NETWORK, "nasiko-network", spec.network]
        .into_iter()
        .find(|k| entry_nets.iter().any(|n| n == k));
    for key in [LEGACY_NETWORK, "nasiko-network", spec.network] {
        let declared = user
            .and_then(|u| u.get("networks"))
            .and_then(|n| n.get(key))
            .is_some();
        let used = user
            .and_then(|u| u.get("services"))
            .and_then(Value::as_mapping)
            .is_some_and(|m| {
                m.values()
                    .any(|svc| service_networks(svc).iter().any(|n| n == key))
            });
        if declared || used {
            nets.insert(s(key), external(spec.network, old));
        }
    }
    let mut e = Mapping::new();
    e.insert(s("image"), s(spec.image));
    e.insert(s("container_name"), s(&container_name(spec.agent)));
    e.insert(s("labels"), labels(spec, labels::TYPE_AGENT));
    e.insert(s("restart"), s("unless-stopped"));
    let mut env = Mapping::new();
    for (k, v) in spec.env {
        env.insert(s(k), s(v));
    }
    e.insert(s("environment"), Value::Mapping(env));
    if user_net_key.is_none() {
        let key = "nasiko-network";
        nets.insert(s(key), external(spec.network, old));
        let mut n = Mapping::new();
        n.insert(s(key), Value::Mapping(Mapping::new()));
        if user.is_some() && entry_nets.is_empty() {
            // keep the project's default network so dependencies stay reachable
            n.insert(s("default"), Value::Mapping(Mapping::new()));
        } else {
            for other in &entry_nets {
                n.insert(s(other), Value::Mapping(Mapping::new()));
            }
        }
        e.insert(s("networks"), Value::Mapping(n));
    }
    if user.is_none() {
        e.insert(s("expose"), Value::Sequence(vec![s("5000")]));
    }
    harden(&mut e, spec.limits);
    svcs.insert(s(&entry), Value::Mapping(e));
    if let Some(u) = user {
        for (k, svc) in services(u)? {
            let Some(k) = k.as_str() else { continue };
            if k != entry {
                let mut d = Mapping::new();
                d.insert(s("labels"), labels(spec, labels::TYPE_DEPENDENCY));
                // container names are the build agent's to give: a package's own could take
                // another agent's or a platform container's name
                if svc.get("container_name").is_some() {
                    d.insert(
                        s("container_name"),
                        s(&format!("{}-{k}", container_name(spec.agent))),
                    );
                }
                harden(&mut d, spec.limits);
                svcs.insert(s(k), Value::Mapping(d));
            }
        }
    }
    root.insert(s("services"), Value::Mapping(svcs));
    root.insert(s("networks"), Value::Mapping(nets));
    Ok(Value::Mapping(root))
}

/// Add a label to the entry service of an override made by [`build_override`] (the one service
/// with a `container_name`).
pub fn add_entry_label(ov: &mut Value, key: &str, value: &str) {
    let Some(svcs) = ov.get_mut("services").and_then(Value::as_mapping_mut) else {
        return;
    };
    for svc in svcs.values_mut() {
        if svc.get("container_name").is_some() {
            if let Some(Value::Mapping(l)) = svc.get_mut("labels") {
                l.insert(s(key), s(value));
            }
        }
    }
}

/// Parse a package's `.env`: `KEY=VALUE` lines, `#` comments, optional quotes, `export ` prefix.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v.split(" #").next().unwrap_or(v).trim_end()
        };
        out.push((k.to_string(), v.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(t: &str) -> Value {
        serde_yaml_ng::from_str(t).unwrap()
    }

    static LIMITS: crate::config::AgentLimits = crate::config::AgentLimits {
        memory: String::new(),
        cpus: 0.5,
        pids: 512,
    };

    fn spec<'a>(env: &'a [(String, String)]) -> OverrideSpec<'a> {
        OverrideSpec {
            limits: &LIMITS,
            agent: "translator",
            image: "nasiko-agent-translator:abc",
            network: "nasiko-network",
            owner: "u1",
            version: "v1",
            upload_id: "up1",
            env,
        }
    }

    const TEMPLATE: &str = "version: '3.8'\nservices:\n  translator:\n    build: .\n    container_name: translator\n    ports: ['5000']\n    networks: [agents-net]\nnetworks:\n  agents-net:\n    external: true\n";

    #[test]
    fn the_legacy_agents_net_is_mapped_onto_the_shared_network() {
        let env = vec![("AGENT_NAME".to_string(), "translator".to_string())];
        let o = build_override(Some(&y(TEMPLATE)), &spec(&env)).unwrap();
        assert_eq!(o["version"], s("3.8"));
        let e = &o["services"]["translator"];
        assert_eq!(e["image"], s("nasiko-agent-translator:abc"));
        assert_eq!(e["container_name"], s("agent-translator"));
        assert_eq!(e["labels"]["nasiko.type"], s("agent"));
        assert_eq!(e["labels"]["nasiko.owner"], s("u1"));
        assert_eq!(e["environment"]["AGENT_NAME"], s("translator"));
        assert!(
            e.get("networks").is_none(),
            "the service keeps its agents-net, now pointing at nasiko-network"
        );
        assert_eq!(o["networks"]["agents-net"]["name"], s("nasiko-network"));
        assert_eq!(o["networks"]["agents-net"]["external"], Value::Bool(true));
    }

    #[test]
    fn old_file_versions_get_the_old_external_form() {
        let o = build_override(Some(&y(&TEMPLATE.replace("3.8", "3.3"))), &spec(&[])).unwrap();
        assert_eq!(
            o["networks"]["agents-net"]["external"]["name"],
            s("nasiko-network")
        );
    }

    #[test]
    fn a_service_on_the_default_network_joins_the_shared_one_and_keeps_default() {
        let u = y("services:\n  translator:\n    build: .\n  db:\n    image: postgres\n");
        let o = build_override(Some(&u), &spec(&[])).unwrap();
        let nets = o["services"]["translator"]["networks"]
            .as_mapping()
            .unwrap();
        assert!(nets.contains_key("nasiko-network") && nets.contains_key("default"));
        assert_eq!(
            o["services"]["db"]["labels"]["nasiko.type"],
            s("agent-dependency")
        );
        assert!(
            o["services"]["db"].get("image").is_none(),
            "dependencies keep their own image"
        );
    }

    #[test]
    fn without_a_compose_file_a_single_service_is_generated() {
        let o = build_override(None, &spec(&[])).unwrap();
        let e = &o["services"]["translator"];
        assert_eq!(e["expose"][0], s("5000"));
        assert!(e["networks"]
            .as_mapping()
            .unwrap()
            .contains_key("nasiko-network"));
        assert_eq!(o["networks"]["nasiko-network"]["name"], s("nasiko-network"));
    }

    #[test]
    fn the_entry_service_is_found_by_key_container_name_or_build() {
        assert_eq!(
            entry_service(
                &y("services: {a: {image: x}, translator: {image: y}}"),
                "translator"
            )
            .unwrap(),
            "translator"
        );
        assert_eq!(
            entry_service(
                &y("services: {app: {container_name: translator}, db: {}}"),
                "translator"
            )
            .unwrap(),
            "app"
        );
        assert_eq!(
            entry_service(&y("services: {app: {image: x}}"), "translator").unwrap(),
            "app"
        );
        assert_eq!(
            entry_service(
                &y("services: {db: {image: x}, app: {build: .}}"),
                "translator"
            )
            .unwrap(),
            "app"
        );
        assert!(
            entry_service(&y("services: {a: {image: x}, b: {image: y}}"), "translator")
                .unwrap_err()
                .0
                .contains("cannot tell")
        );
    }

    #[test]
    fn real_packages_are_normalized_as_the_python_listener_deployed_them() {
        // shaped like upstream's a2a-github-agent and a2a-compliance-checker
        let mut u = y("services:\n  a:\n    build: .\n    environment:\n    stdin_open: true\n    tty: true\n    ports: ['5000', '8085:5000', '127.0.0.1:9000:9000/udp', {target: 7000, published: 7000}]\n    networks: [agents-net, agents-db-net]\nnetworks:\n  agents-net: {external: true}\n  agents-db-net: {external: true}\n");
        let n = normalize_package(&mut u, "nasiko-network", false).unwrap();
        let a = &u["services"]["a"];
        assert!(a.get("environment").is_none(), "an empty environment");
        assert!(a.get("ports").is_none(), "nothing published on the host");
        assert_eq!(
            a["expose"],
            y("['5000', '9000/udp', '7000']"),
            "container ports stay reachable on the network"
        );
        assert_eq!(n.own_networks, ["agents-db-net"]);
        assert_eq!(a["stdin_open"], Value::Bool(true));

        let mut u = y("services: {a: {build: ., ports: ['5000']}}");
        normalize_package(&mut u, "nasiko-network", true).unwrap();
        assert_eq!(u["services"]["a"]["ports"], y("['127.0.0.1::5000']"));
    }

    #[test]
    fn a_package_may_not_join_reserved_or_odd_networks() {
        for net in ["host", "bridge", "none", "-x", "a b"] {
            let mut u = y(&format!(
                "services: {{a: {{build: .}}}}\nnetworks: {{n: {{external: true, name: '{net}'}}}}"
            ));
            let e = normalize_package(&mut u, "nasiko-network", false).unwrap_err();
            assert!(e.0.contains("may not use"), "{net}: {e}");
        }
        let mut u =
            y("services: {a: {build: .}}\nnetworks: {shared: {external: {name: nasiko-network}}}");
        assert!(normalize_package(&mut u, "nasiko-network", false)
            .unwrap()
            .own_networks
            .is_empty());
    }

    #[test]
    fn dotenv_lines_comments_and_quotes() {
        let v = parse_dotenv(
            "# c\nA=1\nexport B=\"two words\"\nC='x'\nbad line\nD=v # trailing\n=nokey\n",
        );
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into()),
                ("D".into(), "v".into())
            ]
        );
    }
}
