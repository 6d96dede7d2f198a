//! The one compose file that runs: the checked model written out whole, as JSON (every string
//! quoted, every `$` escaped as `$$`, so compose reads exactly these values and interpolates
//! nothing), with what the build agent adds — the image it built, the `agent-{name}` container on
//! the agents network under that name only, the `nasiko.*` labels, the platform's environment,
//! the caps shared out per package and `no-new-privileges`. Package-local binds are read-only;
//! networks the package calls external become networks of its own project. Pure.

use super::model::{Cmd, Mount, Package, Service};
use super::policy::{entry_service, Caps};
use super::refusal::Refusal;
use nasiko_contract::labels;
use serde_json::{json, Map, Value};

/// What the build agent adds to the package.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub agent: &'a str,
    /// The entry service's image (built by the build agent).
    pub image: &'a str,
    /// The Docker network the entry service joins: the agent's own, or (legacy) the shared one.
    pub network: &'a str,
    /// The stack's shared agents network (DOCKER_NETWORK), which names the stack.
    pub stack: &'a str,
    pub owner: &'a str,
    pub version: &'a str,
    pub upload_id: &'a str,
    /// The entry service's environment from the platform, in order (later wins; wins over the
    /// package's own).
    pub env: &'a [(String, String)],
    /// PUBLISH_AGENT_PORTS: container ports published on 127.0.0.1 (else only exposed).
    pub publish: bool,
    /// The deploy slot: it names the entry's container (its service is `agent-{name}` in both).
    pub slot: nasiko_contract::Slot,
}

/// The rendered file and what rendering changed, for the build log.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub doc: Value,
    pub notes: Vec<String>,
}

/// Docker's own default interval, written out for every service.
const DEFAULT_HEALTH_INTERVAL_MS: u64 = 30_000;

fn ms(v: u64) -> Value {
    Value::String(format!("{v}ms"))
}

fn nasiko_labels(spec: &Spec, ty: &str) -> Vec<(String, String)> {
    let mut l = vec![
        (labels::TYPE.to_string(), ty.to_string()),
        (labels::NAME.to_string(), spec.agent.to_string()),
        (labels::OWNER.to_string(), spec.owner.to_string()),
        (labels::STACK.to_string(), spec.stack.to_string()),
    ];
    if !spec.version.is_empty() {
        l.push((labels::VERSION.into(), spec.version.into()));
    }
    if !spec.upload_id.is_empty() {
        l.push((labels::UPLOAD_ID.into(), spec.upload_id.into()));
    }
    l
}

/// The labels of the networks the build agent makes for a package: made by it, for the stack
/// (so that `local-down.sh --agents` removes its own stack's, never another's).
fn owner_labels(spec: &Spec) -> [(String, String); 2] {
    let (k, v) = super::docker::NETWORK_OWNER_LABEL
        .split_once('=')
        .unwrap_or_default();
    [
        (k.into(), v.into()),
        (labels::STACK.to_string(), spec.stack.to_string()),
    ]
}

fn object(pairs: impl IntoIterator<Item = (String, String)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k, Value::String(v));
    }
    Value::Object(m)
}

/// Render `pkg` for `spec`, with each service's caps (`caps[i]` for `pkg.services[i]`).
pub fn render(
    pkg: &Package,
    caps: &[Caps],
    spec: &Spec,
    is_shared: &dyn Fn(&str) -> bool,
) -> Result<Rendered, Refusal> {
    let entry_key = entry_service(pkg, spec.agent)?.key.clone();
    let container = nasiko_contract::agent_ref(spec.agent);
    let shared = |k: &str| {
        pkg.networks
            .iter()
            .find(|d| d.key == k)
            .map_or(is_shared(k), |d| d.shared)
    };
    let rename = |k: &str| {
        if k == entry_key {
            container.clone()
        } else {
            k.to_string()
        }
    };
    let mut notes = Vec::new();
    let mut services = Map::new();
    for (s, c) in pkg.services.iter().zip(caps) {
        let entry = s.key == entry_key;
        let mut out = service(s, c, spec, entry, &mut notes);
        // networks: the entry joins the agents network under its container's name only, and
        // keeps its old name as an alias on the package's own networks
        let mut nets = Map::new();
        let mut own: Vec<(String, Vec<String>)> = s
            .networks
            .iter()
            .filter(|(k, _)| !shared(k))
            .cloned()
            .collect();
        // the project's default network only where another service may be met on it: a network
        // per single-service agent would use up Docker's address pools after a few dozen agents
        if s.networks.is_empty() && pkg.services.len() > 1 {
            own.push(("default".into(), vec![]));
        }
        if entry {
            nets.insert(spec.network.to_string(), json!({}));
        }
        for (k, mut aliases) in own {
            if entry && s.key != container {
                aliases.push(s.key.clone());
            }
            let v = if aliases.is_empty() {
                json!({})
            } else {
                json!({ "aliases": aliases })
            };
            nets.insert(resource_key(&k), v);
        }
        out.insert("networks".into(), Value::Object(nets));
        if !s.depends_on.is_empty() {
            let mut d = Map::new();
            for (k, cond) in &s.depends_on {
                d.insert(rename(k), json!({ "condition": cond }));
            }
            out.insert("depends_on".into(), Value::Object(d));
        }
        // replicas: copies of the entry under their own container names, one target each
        let copies = if entry { s.replicas.unwrap_or(1) } else { 1 };
        let copy = out.clone();
        services.insert(rename(&s.key), Value::Object(out));
        for i in 2..=copies {
            let mut copy = copy.clone();
            let name = spec.slot.replica(spec.agent, i);
            copy.insert("container_name".into(), Value::String(name));
            services.insert(format!("{container}-{i}"), Value::Object(copy));
        }
    }
    let networks = networks(pkg, spec, &services, &mut notes);
    let volumes: Map<String, Value> = pkg
        .volumes
        .iter()
        .map(|v| (resource_key(v), json!({})))
        .collect();
    let mut doc = json!({ "services": services, "networks": networks });
    if !volumes.is_empty() {
        doc["volumes"] = Value::Object(volumes);
    }
    escape_dollars(&mut doc);
    Ok(Rendered { doc, notes })
}

fn service(
    s: &Service,
    c: &Caps,
    spec: &Spec,
    entry: bool,
    notes: &mut Vec<String>,
) -> Map<String, Value> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    if entry {
        put("image", Value::String(spec.image.into()));
        put(
            "container_name",
            Value::String(spec.slot.container(spec.agent)),
        );
        put("restart", Value::String("unless-stopped".into()));
    } else {
        if let Some(i) = &s.image {
            put("image", Value::String(i.clone()));
        }
        put(
            "container_name",
            Value::String(dependency_container(spec.agent, &s.key)),
        );
        if let Some(r) = &s.restart {
            put("restart", Value::String(r.clone()));
        }
    }
    let mut labels = s.labels.clone();
    let ty = if entry {
        labels::TYPE_AGENT
    } else {
        labels::TYPE_DEPENDENCY
    };
    labels.extend(nasiko_labels(spec, ty));
    put("labels", object(labels));
    let mut env = s.environment.clone();
    if entry {
        for (k, v) in spec.env {
            env.retain(|(e, _)| e != k);
            env.push((k.clone(), v.clone()));
        }
    }
    if !env.is_empty() {
        put("environment", object(env));
    }
    for (k, cmd) in [("command", &s.command), ("entrypoint", &s.entrypoint)] {
        match cmd {
            Some(Cmd::Shell(t)) => put(k, Value::String(t.clone())),
            Some(Cmd::Exec(v)) => put(k, json!(v)),
            None => {}
        }
    }
    let (published, expose) = ports(s, spec.publish, notes);
    if let Some(p) = published {
        put("ports", p);
    }
    if !expose.is_empty() {
        put("expose", json!(expose));
    }
    if !s.volumes.is_empty() {
        put("volumes", mounts(&s.volumes));
    }
    if !s.tmpfs.is_empty() {
        put("tmpfs", json!(s.tmpfs));
    }
    put("healthcheck", healthcheck(s));
    runtime(&mut o, s, c);
    o
}

/// The compose file's networks: the agents network (external), the package's own (labelled as
/// the build agent's, each for this agent alone) and the project's default when a service uses it.
fn networks(
    pkg: &Package,
    spec: &Spec,
    services: &Map<String, Value>,
    notes: &mut Vec<String>,
) -> Map<String, Value> {
    let mut networks = Map::new();
    networks.insert(
        spec.network.to_string(),
        json!({"external": true, "name": spec.network}),
    );
    for d in pkg.networks.iter().filter(|d| !d.shared) {
        if d.external {
            notes.push(format!(
                "network '{}' is the package's own: created for this agent alone, not shared with other agents",
                d.key
            ));
        }
        let key = resource_key(&d.key);
        let mut n = Map::new();
        let mut labels = d.labels.clone();
        labels.extend(owner_labels(spec));
        n.insert("labels".into(), object(labels));
        n.insert("driver_opts".into(), bridge_name(spec, &key));
        if d.internal {
            n.insert("internal".into(), Value::Bool(true));
        }
        networks.insert(key, Value::Object(n));
    }
    // the project's default network, when used and not declared, is labelled as ours too
    let uses_default = services
        .values()
        .any(|svc| svc["networks"].get("default").is_some());
    if uses_default && !networks.contains_key("default") {
        networks.insert(
            "default".into(),
            json!({ "labels": object(owner_labels(spec)), "driver_opts": bridge_name(spec, "default") }),
        );
    }
    networks
}

/// The `driver_opts` that give a package network (compose names it `{project}_{key}`) a bridge
/// the agent guard knows, so its containers are not routed to another bridge either.
fn bridge_name(spec: &Spec, key: &str) -> Value {
    let network = format!("{}_{key}", nasiko_contract::compose_project(spec.agent));
    json!({ super::network::BRIDGE_NAME_OPTION: nasiko_contract::agent_bridge(&network) })
}

/// How a service runs: its process settings, no raw sockets, the operator's caps, no new
/// privileges.
fn runtime(o: &mut Map<String, Value>, s: &Service, c: &Caps) {
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    for (k, v) in [
        ("working_dir", &s.working_dir),
        ("user", &s.user),
        ("stop_signal", &s.stop_signal),
    ] {
        if let Some(v) = v {
            put(k, Value::String(v.clone()));
        }
    }
    if let Some(g) = s.stop_grace_period {
        put("stop_grace_period", ms(g));
    }
    for (k, v) in [
        ("stdin_open", s.stdin_open),
        ("tty", s.tty),
        ("read_only", s.read_only),
        ("init", s.init),
    ] {
        if let Some(v) = v {
            put(k, Value::Bool(v));
        }
    }
    // no raw sockets: no ARP or packet spoofing on the agents network
    let mut cap_drop = s.cap_drop.clone();
    if !cap_drop
        .iter()
        .any(|c| c.eq_ignore_ascii_case("NET_RAW") || c.eq_ignore_ascii_case("ALL"))
    {
        cap_drop.push("NET_RAW".into());
    }
    put("cap_drop", json!(cap_drop));
    if let Some(m) = c.memory {
        put("mem_limit", json!(m));
        // no swap beyond the cap
        put("memswap_limit", json!(m));
    }
    if let Some(r) = s.mem_reservation {
        put("mem_reservation", json!(r));
    }
    if let Some(cpus) = c.cpus {
        put("cpus", json!(cpus));
    }
    if let Some(sh) = s.cpu_shares {
        put("cpu_shares", json!(sh));
    }
    if let Some(p) = c.pids {
        put("pids_limit", json!(p));
    }
    put("security_opt", json!(["no-new-privileges:true"]));
}

/// A service's ports: published on 127.0.0.1 only under PUBLISH_AGENT_PORTS, else exposed on
/// its networks only; each case noted for the build log. The ports to publish, and to expose.
fn ports(s: &Service, publish: bool, notes: &mut Vec<String>) -> (Option<Value>, Vec<String>) {
    let mut expose = s.expose.clone();
    let mut published = None;
    if !s.ports.is_empty() {
        if publish {
            let p: Vec<String> = s.ports.iter().map(|p| format!("127.0.0.1::{p}")).collect();
            published = Some(json!(p));
            notes.push(format!(
                "service '{}': ports {} published on 127.0.0.1 only (PUBLISH_AGENT_PORTS)",
                s.key,
                s.ports.join(", ")
            ));
        } else {
            for p in &s.ports {
                if !expose.contains(p) {
                    expose.push(p.clone());
                }
            }
            notes.push(format!(
                "service '{}': ports {} are not published on the host; the agent is reached through the gateway (set PUBLISH_AGENT_PORTS=true to publish them on 127.0.0.1)",
                s.key,
                s.ports.join(", ")
            ));
        }
    }
    (published, expose)
}

/// A service's mounts as the compose file says them (binds read-only, volumes by their key).
fn mounts(volumes: &[Mount]) -> Value {
    let v: Vec<Value> = volumes
            .iter()
            .map(|m| match m {
                Mount::Bind { source, target } => json!({"type": "bind", "source": source.display().to_string(), "target": target, "read_only": true}),
                Mount::Volume { source: Some(src), target, read_only } => {
                    let mut v = json!({"type": "volume", "source": resource_key(src), "target": target});
                    if *read_only {
                        v["read_only"] = Value::Bool(true);
                    }
                    v
                }
                Mount::Volume { source: None, target, .. } => json!({"type": "volume", "target": target}),
                Mount::Tmpfs { target, size } => match size {
                    Some(sz) => json!({"type": "tmpfs", "target": target, "tmpfs": {"size": sz}}),
                    None => json!({"type": "tmpfs", "target": target}),
                },
            })
            .collect();
    Value::Array(v)
}

/// A service's health check, always with an interval.
fn healthcheck(s: &Service) -> Value {
    // always an interval: without one the engine takes the image's (a Dockerfile's
    // `HEALTHCHECK --interval=1ms` would exec into the container without pause)
    let h = s.healthcheck.clone().unwrap_or_default();
    let mut m = Map::new();
    if let Some(t) = &h.test {
        m.insert("test".into(), json!(t));
    }
    let interval = (!h.disable).then(|| h.interval.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS));
    for (k, v) in [
        ("interval", interval),
        ("timeout", h.timeout),
        ("start_period", h.start_period),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), ms(v));
        }
    }
    if let Some(r) = h.retries {
        m.insert("retries".into(), json!(r));
    }
    if h.disable {
        m.insert("disable".into(), Value::Bool(true));
    }
    Value::Object(m)
}

/// The key a package's own volume or network is written under. Compose names it
/// `{project}_{key}`; a project may hold `_` (`nasiko_contract::compose_project`) but the key then
/// holds none, so the last `_` splits any name into one project and one key: no package names
/// another agent's volume or network (agent `a`'s `db_data` is not agent `a.b`'s `data`).
pub fn resource_key(key: &str) -> String {
    key.replace('_', "-")
}

/// A dependency's container name: not `agent-…` (an agent's own container could be called that)
/// and, like volumes, one project and one service key per name.
pub fn dependency_container(agent: &str, service: &str) -> String {
    let project = nasiko_contract::compose_project(agent);
    format!(
        "agentdep{}_{}",
        &project["agent".len()..],
        resource_key(service)
    )
}

/// Every `$` in a string value becomes `$$`: compose then reads the value as written.
fn escape_dollars(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Value::Array(a) => a.iter_mut().for_each(escape_dollars),
        Value::Object(m) => m.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::interpolate::Vars;
    use super::super::model::{read, Context};
    use super::super::policy::caps;
    use super::*;
    use crate::config::AgentLimits;
    use std::path::Path;

    fn rendered(agent: &str, compose: &str) -> Value {
        rendered_in(nasiko_contract::Slot::Blue, agent, compose)
    }

    fn rendered_in(slot: nasiko_contract::Slot, agent: &str, compose: &str) -> Value {
        let vars = Vars::default();
        let cx = Context::new(Path::new("/work/pkg"), &vars, "nasiko-network");
        let pkg = read(&super::super::yaml::read(compose).unwrap(), &cx).unwrap();
        let limits = AgentLimits {
            memory: "1g".into(),
            cpus: 0.5,
            pids: 512,
        };
        let env = vec![
            ("AGENT_NAME".to_string(), agent.to_string()),
            ("PRICE".to_string(), "5$".to_string()),
        ];
        let spec = Spec {
            agent,
            image: "img:1",
            network: "nasiko-network",
            stack: "nasiko-network",
            owner: "u",
            version: "v1",
            upload_id: "",
            env: &env,
            publish: false,
            slot,
        };
        let shared = |k: &str| ["agents-net", "nasiko-network"].contains(&k);
        render(&pkg, &caps(&pkg, &limits).unwrap(), &spec, &shared)
            .unwrap()
            .doc
    }

    /// The Docker names compose gives a rendered file's volumes and networks.
    fn docker_names(agent: &str, doc: &Value) -> Vec<String> {
        let project = nasiko_contract::compose_project(agent);
        ["volumes", "networks"]
            .iter()
            .flat_map(|k| doc[k].as_object().into_iter().flatten())
            .filter(|(_, d)| d.get("external").is_none())
            .map(|(k, _)| format!("{project}_{k}"))
            .collect()
    }

    #[test]
    fn no_package_can_name_another_agents_volume_or_network() {
        // agent `a`'s `db_data` would be agent `a.b`'s `data` (project agent-a_db) as compose names it
        let attacker = rendered("a", "services:\n  a: {build: ., volumes: ['db_data:/v'], networks: [db_default]}\nnetworks: {db_default: {}}\nvolumes: {db_data: {}}\n");
        let victim = rendered("a.b", "services:\n  a.b: {build: ., volumes: ['data:/v'], networks: [agents-net, default]}\nvolumes: {data: {}}\n");
        let (x, y) = (docker_names("a", &attacker), docker_names("a.b", &victim));
        assert_eq!(x, ["agent-a_db-data", "agent-a_db-default"]);
        assert!(y.contains(&"agent-a_db_data".to_string()), "{y:?}");
        assert!(x.iter().all(|n| !y.contains(n)), "{x:?} {y:?}");
    }

    #[test]
    fn the_entry_is_the_agents_name_on_the_agents_network_and_values_are_literal() {
        let doc = rendered("me", "services:\n  kong-gateway: {build: ., networks: [agents-net, own], environment: {D: 'a$$b'}}\n  db_1: {image: m, networks: [own]}\nnetworks: {agents-net: {external: true}, own: {}}\n");
        let e = &doc["services"]["agent-me"];
        assert_eq!(e["networks"]["nasiko-network"], json!({}));
        assert_eq!(e["networks"]["own"]["aliases"], json!(["kong-gateway"]));
        assert!(doc["services"].get("kong-gateway").is_none());
        assert_eq!(
            e["environment"]["D"], "a$$b",
            "the package's $$ stays compose's $$"
        );
        assert_eq!(e["environment"]["PRICE"], "5$$", "a literal $ is escaped");
        assert_eq!(e["security_opt"], json!(["no-new-privileges:true"]));
        assert_eq!(e["healthcheck"]["interval"], "30000ms", "never the image's");
        assert_eq!(e["cap_drop"], json!(["NET_RAW"]));
        let d = &doc["services"]["db_1"];
        assert_eq!(d["container_name"], "agentdep-me_db-1");
        assert!(d["networks"].get("nasiko-network").is_none());
        assert_eq!(
            doc["networks"]["own"]["labels"]["nasiko.managed-by"],
            "build-agent"
        );
        assert_eq!(
            doc["networks"]["own"]["labels"]["nasiko.stack"], "nasiko-network",
            "local-down removes its own stack's networks only"
        );
    }

    #[test]
    fn a_slot_names_the_entrys_container_and_nothing_else() {
        let pkg = "services:\n  solo: {build: ., ports: ['5000']}\n";
        let blue = rendered("solo", pkg);
        let green = rendered_in(nasiko_contract::Slot::Green, "solo", pkg);
        assert_eq!(
            blue["services"]["agent-solo"]["container_name"],
            "agent-solo"
        );
        assert_eq!(
            green["services"]["agent-solo"]["container_name"],
            "agentgreen-solo"
        );
        let mut same = green.clone();
        same["services"]["agent-solo"]["container_name"] = json!("agent-solo");
        assert_eq!(same, blue, "the slots' files differ in that name alone");
    }

    #[test]
    fn replicas_are_copies_of_the_entry_under_their_slots_names() {
        let doc = rendered_in(
            nasiko_contract::Slot::Green,
            "rep",
            "services:\n  rep: {build: ., deploy: {replicas: 3}, mem_limit: 64m}\n",
        );
        let s = doc["services"].as_object().unwrap();
        let names: Vec<(&str, &Value)> = s
            .iter()
            .map(|(k, v)| (k.as_str(), &v["container_name"]))
            .collect();
        assert_eq!(
            names,
            [
                ("agent-rep", &json!("agentgreen-rep")),
                ("agent-rep-2", &json!("agentgreen2-rep")),
                ("agent-rep-3", &json!("agentgreen3-rep"))
            ]
        );
        for v in s.values() {
            let mut v = v.clone();
            v["container_name"] = Value::Null;
            let mut first = s["agent-rep"].clone();
            first["container_name"] = Value::Null;
            assert_eq!(v, first, "the same labels, limits and networks");
        }
    }

    #[test]
    fn a_single_service_agent_gets_no_network_of_its_own() {
        // Docker's default address pools hold a few dozen networks
        let doc = rendered("solo", "services:\n  solo: {build: .}\n");
        assert_eq!(
            doc["services"]["agent-solo"]["networks"],
            json!({"nasiko-network": {}})
        );
        let two = rendered("duo", "services:\n  duo: {build: .}\n  db: {image: m}\n");
        assert_eq!(
            two["services"]["agent-duo"]["networks"],
            json!({"nasiko-network": {}, "default": {"aliases": ["duo"]}})
        );
        assert_eq!(two["services"]["db"]["networks"], json!({"default": {}}));
        assert_eq!(
            two["networks"]["default"]["labels"]["nasiko.managed-by"],
            "build-agent"
        );
        assert!(doc["networks"].get("default").is_none());
    }
}
