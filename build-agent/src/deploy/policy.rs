//! The compose policy for uploaded packages: an allowlist. A package's compose file may use only
//! the keys an agent needs (the table in the README); anything else is refused with one line that
//! names the key, the service and what to do instead, before any docker command runs. Paths must
//! stay inside the package and may not use `${…}` interpolation (a package's `.env` could
//! otherwise point them anywhere). Pure.

use serde_yaml_ng::Value;
use std::path::{Component, Path, PathBuf};

/// A refused package: the one line to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Service keys an agent may use. Each is decided on purpose (README, "What an agent may ask for").
pub const SERVICE_KEYS: &[&str] = &[
    "build",
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "networks",
    "depends_on",
    "healthcheck",
    "working_dir",
    "user",
    "labels",
    "restart",
    "stdin_open",
    "tty",
    "read_only",
    "cap_drop",
    "init",
    "stop_signal",
    "stop_grace_period",
    "container_name",
    "mem_limit",
    "mem_reservation",
    "cpus",
    "cpu_shares",
    "pids_limit",
];

const TOP_KEYS: &[&str] = &["services", "networks", "volumes", "name", "version"];
const BUILD_KEYS: &[&str] = &["context", "dockerfile", "args", "target"];
const NETWORK_KEYS: &[&str] = &["external", "name", "internal", "labels", "driver"];
const VOLUME_KEYS: &[&str] = &["name", "labels"];

/// What to do instead, for the keys people reach for.
fn instead(key: &str) -> &'static str {
    match key {
        "privileged" | "cap_add" | "devices" | "security_opt" | "userns_mode" | "cgroup"
        | "cgroup_parent" | "oom_kill_disable" | "oom_score_adj" | "sysctls" | "ulimits" => {
            "agents run unprivileged with the operator's limits; remove it"
        }
        "pid" | "ipc" | "uts" | "network_mode" | "extra_hosts" | "dns" | "dns_search"
        | "links" | "external_links" | "hostname" | "domainname" | "mac_address" => {
            "agents live on the agents network and reach the platform through the gateway; remove it"
        }
        "volumes_from" => "mount a named volume of the package's own instead",
        "secrets" | "configs" => "put the values in the package's .env file instead",
        "logging" => "logs go to `docker logs` and the build agent; remove it",
        "deploy" => "use mem_limit / cpus / pids_limit (the operator's caps apply)",
        "extends" | "include" => "put everything in the one docker-compose.yml of the package",
        _ => "remove it (see the README's table of what an agent may ask for)",
    }
}

fn key_str(k: &Value) -> String {
    k.as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("{k:?}"))
}

/// Lexically normalize `p` against `base` (no filesystem access).
fn normalize(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A path of the package (`what` for the message): inside `base`, no interpolation, no `~`.
fn inside(svc: &str, what: &str, path: &str, base: &Path, dir: &Path) -> Result<(), Refusal> {
    if path.contains('$') {
        return Err(Refusal(format!(
            "service '{svc}': {what} '{path}' uses ${{…}} interpolation; write the path inside the package literally"
        )));
    }
    if path.contains("docker.sock") {
        return Err(Refusal(format!(
            "service '{svc}': {what} '{path}' is the Docker socket; agents may not control the Docker engine"
        )));
    }
    if path.starts_with('~')
        || !normalize(base, Path::new(path)).starts_with(normalize(dir, Path::new(".")))
    {
        return Err(Refusal(format!(
            "service '{svc}': {what} '{path}' is outside the package; use a path inside the package"
        )));
    }
    Ok(())
}

fn is_bind_source(src: &str) -> bool {
    src.starts_with('/') || src.starts_with('.') || src.starts_with('~') || src.contains('/')
}

/// Check a package's compose file against the allowlist. `dir` is the package's folder.
pub fn check(user: &Value, dir: &Path) -> Result<(), Refusal> {
    let Some(top) = user.as_mapping() else {
        return Err(Refusal("the compose file is not a mapping".into()));
    };
    for k in top.keys() {
        let k = key_str(k);
        if !TOP_KEYS.contains(&k.as_str()) && !k.starts_with("x-") {
            return Err(Refusal(format!(
                "the compose file's top-level '{k}' is not allowed for agents: {}",
                instead(&k)
            )));
        }
    }
    let declared_volumes = user.get("volumes").and_then(Value::as_mapping);
    for (name, def) in declared_volumes.into_iter().flatten() {
        let name = key_str(name);
        for k in def.as_mapping().into_iter().flat_map(|m| m.keys()) {
            let k = key_str(k);
            if !VOLUME_KEYS.contains(&k.as_str()) {
                return Err(Refusal(format!(
                    "volume '{name}' sets '{k}'; an agent's volumes are plain local volumes of its own (remove '{k}')"
                )));
            }
        }
    }
    for (name, def) in user
        .get("networks")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let name = key_str(name);
        for (k, v) in def.as_mapping().into_iter().flatten() {
            let k = key_str(k);
            if !NETWORK_KEYS.contains(&k.as_str())
                || (k == "driver" && v.as_str() != Some("bridge"))
            {
                return Err(Refusal(format!(
                    "network '{name}' sets '{k}'; an agent's networks are plain bridge networks (remove '{k}')"
                )));
            }
        }
    }
    let Some(services) = user.get("services").and_then(Value::as_mapping) else {
        return Err(Refusal("the compose file has no 'services' mapping".into()));
    };
    for (name, svc) in services {
        let n = key_str(name);
        let Some(svc) = svc.as_mapping() else {
            return Err(Refusal(format!("service '{n}' is not a mapping")));
        };
        for (k, v) in svc {
            let k = key_str(k);
            if !SERVICE_KEYS.contains(&k.as_str()) {
                return Err(Refusal(format!(
                    "service '{n}' asks for '{k}', which an agent may not have: {}",
                    instead(&k)
                )));
            }
            match k.as_str() {
                "build" => check_build(&n, v, dir)?,
                "env_file" => {
                    let files: Vec<&str> = match v {
                        Value::String(f) => vec![f.as_str()],
                        Value::Sequence(s) => s
                            .iter()
                            .filter_map(|x| {
                                x.as_str().or_else(|| x.get("path").and_then(Value::as_str))
                            })
                            .collect(),
                        _ => vec![],
                    };
                    for f in files {
                        inside(&n, "env_file", f, dir, dir)?;
                    }
                }
                "volumes" => check_volumes(&n, v, dir, declared_volumes)?,
                "labels" => {
                    let keys: Vec<String> = match v {
                        Value::Mapping(m) => m.keys().map(key_str).collect(),
                        Value::Sequence(s) => s
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|l| l.split('=').next().unwrap_or("").to_string())
                            .collect(),
                        _ => vec![],
                    };
                    if let Some(l) = keys
                        .iter()
                        .find(|l| l.starts_with(nasiko_contract::labels::PREFIX))
                    {
                        return Err(Refusal(format!(
                            "service '{n}' sets the label '{l}'; nasiko.* labels are the build agent's to set (remove it)"
                        )));
                    }
                }
                "networks" => {
                    if let Value::Mapping(m) = v {
                        for (net, opts) in m {
                            for ok in opts.as_mapping().into_iter().flat_map(|o| o.keys()) {
                                let ok = key_str(ok);
                                if ok != "aliases" {
                                    return Err(Refusal(format!(
                                        "service '{n}' sets '{ok}' on network '{}'; only aliases may be set (remove '{ok}')",
                                        key_str(net)
                                    )));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Names the platform answers to on the agents network (compose service and container names of
/// the gateway and Phoenix, and Kong's admin alias): a package's service there may not take them.
const PLATFORM_NAMES: &[&str] = &[
    "kong",
    "kong-gateway",
    "kong-admin",
    "phoenix",
    "phoenix-observability",
];

/// On the agents network every name is a way in: Docker's DNS answers a service's name (and its
/// aliases) to every container there, so a package that took the gateway's or another agent's name
/// would receive their traffic. Only the agent's own service (`entry`) joins it, under a name that
/// is not the platform's nor another agent's, and without aliases. `agents_network` is the shared
/// network's name; the package may call it `agents-net` or `nasiko-network`.
pub fn check_agents_network(
    user: &Value,
    entry: &str,
    agent_container: &str,
    agents_network: &str,
) -> Result<(), Refusal> {
    let shared = [
        crate::deploy::compose::LEGACY_NETWORK,
        "nasiko-network",
        agents_network,
    ];
    let declared = user.get("networks").and_then(Value::as_mapping);
    let is_shared = |key: &str| {
        shared.contains(&key)
            || declared
                .and_then(|d| d.get(key))
                .and_then(|def| {
                    def.get("name")
                        .or_else(|| def.get("external").and_then(|e| e.get("name")))
                })
                .and_then(Value::as_str)
                .is_some_and(|n| shared.contains(&n))
    };
    for (name, svc) in user
        .get("services")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let n = key_str(name);
        let joins: Vec<(String, Option<&Value>)> = match svc.get("networks") {
            Some(Value::Sequence(v)) => v
                .iter()
                .filter_map(Value::as_str)
                .map(|k| (k.to_string(), None))
                .collect(),
            Some(Value::Mapping(m)) => m.iter().map(|(k, o)| (key_str(k), Some(o))).collect(),
            _ => vec![],
        };
        for (key, opts) in joins.into_iter().filter(|(k, _)| is_shared(k)) {
            if n != entry {
                return Err(Refusal(format!(
                    "service '{n}' joins the agents network '{key}'; only the agent's own service ('{entry}') may. Put '{n}' on a network of the package's own"
                )));
            }
            if opts.and_then(|o| o.get("aliases")).is_some() {
                return Err(Refusal(format!(
                    "service '{n}' sets aliases on the agents network '{key}'; there the agent is {agent_container}, the name the build agent gives it (remove the aliases)"
                )));
            }
            if PLATFORM_NAMES.contains(&n.as_str())
                || (n.starts_with("agent-") && n != agent_container)
            {
                return Err(Refusal(format!(
                    "service '{n}' would answer to the name '{n}' on the agents network, which is the platform's or another agent's; rename the service (e.g. to the agent's name)"
                )));
            }
        }
    }
    Ok(())
}

fn check_build(svc: &str, v: &Value, dir: &Path) -> Result<(), Refusal> {
    let (context, dockerfile) = match v {
        Value::String(c) => (c.as_str(), None),
        Value::Mapping(m) => {
            for k in m.keys() {
                let k = key_str(k);
                if !BUILD_KEYS.contains(&k.as_str()) {
                    return Err(Refusal(format!(
                        "service '{svc}': build.{k} is not allowed for agents (it reaches outside the package or the build sandbox); use only context, dockerfile, args and target"
                    )));
                }
            }
            (
                m.get("context").and_then(Value::as_str).unwrap_or("."),
                m.get("dockerfile").and_then(Value::as_str),
            )
        }
        _ => {
            return Err(Refusal(format!(
                "service '{svc}': 'build' must be a path or a mapping"
            )))
        }
    };
    inside(svc, "build context", context, dir, dir)?;
    if let Some(df) = dockerfile {
        let ctx = normalize(dir, Path::new(context));
        inside(svc, "build.dockerfile", df, &ctx, dir)?;
    }
    Ok(())
}

fn check_volumes(
    svc: &str,
    v: &Value,
    dir: &Path,
    declared: Option<&serde_yaml_ng::Mapping>,
) -> Result<(), Refusal> {
    let named_ok = |name: &str| -> Result<(), Refusal> {
        if declared.is_some_and(|d| d.contains_key(name)) {
            Ok(())
        } else {
            Err(Refusal(format!(
                "service '{svc}' mounts the volume '{name}', which the package does not declare; declare it under the top-level volumes (an agent may not use other volumes)"
            )))
        }
    };
    for entry in v.as_sequence().into_iter().flatten() {
        match entry {
            Value::String(spec) => {
                if spec.contains('$') {
                    return Err(Refusal(format!(
                        "service '{svc}': the volume '{spec}' uses ${{…}} interpolation; write it literally"
                    )));
                }
                let Some((src, _)) = spec.split_once(':') else {
                    continue; // an anonymous volume
                };
                if is_bind_source(src) {
                    inside(svc, "bind mount", src, dir, dir)?;
                } else {
                    named_ok(src)?;
                }
            }
            Value::Mapping(m) => {
                let ty = m.get("type").and_then(Value::as_str).unwrap_or("volume");
                let src = m.get("source").and_then(Value::as_str).unwrap_or("");
                for k in m.keys() {
                    let k = key_str(k);
                    if ![
                        "type",
                        "source",
                        "target",
                        "read_only",
                        "bind",
                        "volume",
                        "tmpfs",
                    ]
                    .contains(&k.as_str())
                    {
                        return Err(Refusal(format!(
                            "service '{svc}': volume option '{k}' is not allowed for agents (remove it)"
                        )));
                    }
                }
                match ty {
                    "bind" => inside(svc, "bind mount", src, dir, dir)?,
                    "volume" if !src.is_empty() => named_ok(src)?,
                    "volume" | "tmpfs" => {}
                    other => {
                        return Err(Refusal(format!(
                            "service '{svc}': volumes of type '{other}' are not allowed for agents; use a bind mount inside the package or a named volume"
                        )))
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(t: &str) -> Value {
        serde_yaml_ng::from_str(t).unwrap()
    }

    fn refused(t: &str) -> String {
        check(&y(t), Path::new("/work/pkg")).unwrap_err().0
    }

    #[test]
    fn each_way_around_the_old_denylist_is_refused_with_the_key_and_what_to_do() {
        // the rows of issue 15's table, and the denylist's own cases
        for (compose, needle) in [
            ("services: {a: {build: ., volumes: ['x:/host']}}\nvolumes: {x: {driver: local, driver_opts: {type: none, o: bind, device: /}}}", "volume 'x' sets 'driver'"),
            ("services: {a: {build: ., secrets: [s]}}\nsecrets: {s: {file: /etc/shadow}}", "top-level 'secrets'"),
            ("services: {a: {build: ., configs: [c]}}", "'configs'"),
            ("services: {a: {build: ., volumes_from: ['container:redis']}}", "'volumes_from'"),
            ("services: {a: {build: {context: /etc}}}", "outside the package"),
            ("services: {a: {build: {context: ., dockerfile: /etc/passwd}}}", "outside the package"),
            ("services: {a: {build: {context: ., additional_contexts: {root: /}}}}", "build.additional_contexts"),
            ("services: {a: {build: {context: ., secrets: [s]}}}", "build.secrets"),
            ("services: {a: {build: {context: ., ssh: [default]}}}", "build.ssh"),
            ("services: {a: {build: {context: ., network: host}}}", "build.network"),
            ("services: {a: {build: ., security_opt: ['seccomp:unconfined']}}", "'security_opt'"),
            ("services: {a: {build: ., cgroup: host}}", "'cgroup'"),
            ("services: {a: {build: ., cgroup_parent: /}}", "'cgroup_parent'"),
            ("services: {a: {build: ., oom_kill_disable: true}}", "'oom_kill_disable'"),
            ("services: {a: {build: ., oom_score_adj: -1000}}", "'oom_score_adj'"),
            ("services: {a: {build: ., sysctls: {net.core.somaxconn: 1024}}}", "'sysctls'"),
            ("services: {a: {build: ., privileged: true}}", "'privileged'"),
            ("services: {a: {build: ., cap_add: [SYS_ADMIN]}}", "'cap_add'"),
            ("services: {a: {build: ., network_mode: host}}", "'network_mode'"),
            ("services: {a: {build: ., pid: host}}", "'pid'"),
            ("services: {a: {build: ., volumes: ['/var/run/docker.sock:/var/run/docker.sock']}}", "Docker socket"),
            ("services: {a: {build: ., volumes: ['../../:/up']}}", "outside the package"),
            ("services: {a: {build: ., volumes: ['${HOME}:/h']}}", "interpolation"),
            ("services: {a: {build: ., volumes: [{type: bind, source: /, target: /host}]}}", "outside the package"),
            ("services: {a: {build: ., volumes: ['platform-data:/data']}}", "does not declare"),
            ("services: {a: {build: ., env_file: /etc/shadow}}", "outside the package"),
            ("services: {a: {build: ., labels: {nasiko.type: agent}}}", "nasiko.type"),
            ("services: {a: {build: ., deploy: {replicas: 3}}}", "mem_limit"),
            ("services: {a: {build: .}}\nnetworks: {n: {driver: host}}", "network 'n' sets 'driver'"),
            ("include: [other.yml]\nservices: {a: {build: .}}", "top-level 'include'"),
        ] {
            let e = refused(compose);
            assert!(e.contains(needle), "{compose}\n→ {e}");
        }
    }

    #[test]
    fn on_the_agents_network_only_the_agent_answers_and_only_to_its_own_names() {
        let on = |t: &str, entry: &str| {
            check_agents_network(&y(t), entry, "agent-me", "nasiko-network").map_err(|r| r.0)
        };
        for (compose, entry, needle) in [
            // a dependency on the agents network would answer to its service name there
            ("services: {me: {build: ., networks: [agents-net]}, db: {image: m, networks: [agents-net]}}", "me", "service 'db' joins the agents network"),
            ("services: {me: {build: .}, db: {image: m, networks: {shared: {}}}}\nnetworks: {shared: {external: true, name: nasiko-network}}", "me", "service 'db' joins"),
            ("services: {me: {build: ., networks: {agents-net: {aliases: [kong-gateway]}}}}", "me", "sets aliases"),
            ("services: {kong-gateway: {build: ., networks: [agents-net]}}", "kong-gateway", "the platform's or another agent's"),
            ("services: {agent-other: {build: ., networks: [nasiko-network]}}", "agent-other", "another agent's"),
        ] {
            let e = on(compose, entry).expect_err(compose);
            assert!(e.contains(needle), "{compose}\n→ {e}");
        }
        // upstream's packages, and a dependency on a network of the package's own
        on("services: {a2a-translator: {build: ., container_name: a2a-translator, networks: [agents-net]}}\nnetworks: {agents-net: {external: true}}", "a2a-translator").unwrap();
        on("services: {me: {build: ., networks: [agents-net, db]}, db: {image: m, networks: {db: {aliases: [mongo]}}}}", "me").unwrap();
        on(
            "services: {agent-me: {build: ., networks: [agents-net]}}",
            "agent-me",
        )
        .unwrap();
    }

    #[test]
    fn what_real_agents_use_is_allowed() {
        let ok = "services:\n  a:\n    build: .\n    container_name: a\n    environment: [X=1]\n    stdin_open: true\n    tty: true\n    ports: ['5000']\n    networks: [agents-net, db]\n    volumes: ['data:/data', './cfg:/cfg:ro', {type: tmpfs, target: /tmp}]\n    healthcheck: {test: [CMD, true]}\n    mem_limit: 256m\n    labels: {com.example.team: x}\n  db:\n    image: mongo\n    depends_on: [a]\nnetworks:\n  agents-net: {external: true}\n  db: {external: true}\nvolumes:\n  data: {}\nx-common: &c {}\n";
        check(&y(ok), Path::new("/work/pkg")).unwrap();
    }
}
