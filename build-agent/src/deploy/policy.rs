//! The compose policy for uploaded packages, over the typed model (`model` has already refused
//! every key outside the README's table and every path outside the package): which service is the
//! agent, what may join the agents network and under which names, labels, volumes, dependencies,
//! health-check pace, and the operator's caps shared out per package. Each refusal is one line
//! that names the service and what to do instead. Pure.

use super::model::{Mount, Package, Service};
use crate::config::AgentLimits;

pub use super::refusal::Refusal;

fn err<T>(msg: String) -> Result<T, Refusal> {
    Err(Refusal(msg))
}

/// The shortest health-check interval: the engine execs into the container at that pace, outside
/// the agent's caps.
pub const MIN_HEALTH_INTERVAL_MS: u64 = 1000;
/// Docker's smallest memory limit.
const MIN_MEMORY: u64 = 6 << 20;

/// Labels the build agent and compose set, compared as Docker's clients might (any case).
fn reserved_label(k: &str) -> bool {
    let l = k.to_ascii_lowercase();
    l.starts_with(nasiko_contract::labels::PREFIX) || l.starts_with("com.docker.")
}

/// The service that is the agent: key = name, else container_name = name, else the only one,
/// else the first with a `build`.
pub fn entry_service<'p>(pkg: &'p Package, agent: &str) -> Result<&'p Service, Refusal> {
    let s = &pkg.services;
    s.iter()
        .find(|x| x.key == agent)
        .or_else(|| s.iter().find(|x| x.container_name.as_deref() == Some(agent)))
        .or_else(|| (s.len() == 1).then(|| &s[0]))
        .or_else(|| s.iter().find(|x| x.build.is_some()))
        .ok_or_else(|| {
            Refusal(format!("cannot tell which service is the agent: name one service '{agent}' (or give it container_name: {agent})"))
        })
}

/// The network keys a service joins that are the shared agents network.
fn shared_keys<'s>(
    pkg: &Package,
    svc: &'s Service,
    is_shared: &dyn Fn(&str) -> bool,
) -> Vec<&'s str> {
    svc.networks
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| {
            pkg.networks
                .iter()
                .find(|d| d.key == *k)
                .map_or(is_shared(k), |d| d.shared)
        })
        .collect()
}

/// How much of the machine one package may ask for in containers: services, and replicas of
/// its agent's service.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub services: usize,
    pub replicas: u64,
}

/// Check the package for `agent`, whose container on the agents network is `agent_container`.
/// `is_shared` tells a network key that means the agents network without a declaration.
pub fn check(
    pkg: &Package,
    agent: &str,
    agent_container: &str,
    most: Counts,
    is_shared: &dyn Fn(&str) -> bool,
) -> Result<(), Refusal> {
    if pkg.services.len() > most.services {
        return err(format!(
            "the package has {} services; an agent may have at most {} (MAX_AGENT_SERVICES). Merge or drop some",
            pkg.services.len(),
            most.services
        ));
    }
    let entry = entry_service(pkg, agent)?;
    replicas(pkg, entry, most.replicas)?;
    for d in &pkg.networks {
        if let Some((k, _)) = d.labels.iter().find(|(k, _)| reserved_label(k)) {
            return err(format!(
                "network '{}' sets the label '{k}'; nasiko.* and com.docker.* labels are the build agent's and compose's to set (remove it)",
                d.key
            ));
        }
    }
    // volumes, networks and dependencies are written with '_' as '-' (render::resource_key)
    let mut seen: Vec<(&str, String, &str)> = Vec::new();
    for (what, k) in pkg
        .volumes
        .iter()
        .map(|v| ("volume", v.as_str()))
        .chain(pkg.networks.iter().map(|d| ("network", d.key.as_str())))
        .chain(pkg.services.iter().map(|s| ("service", s.key.as_str())))
    {
        let written = k.replace('_', "-").to_ascii_lowercase();
        if let Some((_, _, other)) = seen.iter().find(|(w, n, _)| *w == what && *n == written) {
            return err(format!(
                "the {what}s '{other}' and '{k}' differ only in '_' and '-' or in case, which the build agent writes alike; rename one"
            ));
        }
        seen.push((what, written, k));
    }
    let whole = Whole {
        pkg,
        entry,
        agent_container,
        is_shared,
    };
    for s in &pkg.services {
        check_service(&whole, s)?;
    }
    Ok(())
}

/// Replicas: of the agent's own service only, at least one, at most the operator's cap.
fn replicas(pkg: &Package, entry: &Service, most: u64) -> Result<(), Refusal> {
    for s in &pkg.services {
        match s.replicas {
            Some(n) if s.key != entry.key && n != 1 => {
                return err(format!(
                    "service '{}' asks for {n} replicas; only the agent's own service ('{}') may have replicas (remove deploy.replicas / scale)",
                    s.key, entry.key
                ))
            }
            Some(0) => {
                return err(format!(
                    "service '{}' asks for 0 replicas; an agent runs at least one (remove deploy.replicas / scale to stop it instead)",
                    s.key
                ))
            }
            Some(n) if n > most => {
                return err(format!(
                    "service '{}' asks for {n} replicas; this platform runs at most {most} of an agent (AGENT_MAX_REPLICAS)",
                    s.key
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// What each service is checked against: the package, its entry service, the agent's container
/// name and the test for a network key that means the agents network.
struct Whole<'a> {
    pkg: &'a Package,
    entry: &'a Service,
    agent_container: &'a str,
    is_shared: &'a dyn Fn(&str) -> bool,
}

/// One service of the package: its name, build and image, labels, volumes, networks,
/// dependencies, health-check pace, and what it does on the agents network.
fn check_service(w: &Whole, s: &Service) -> Result<(), Refusal> {
    let Whole {
        pkg,
        entry,
        agent_container,
        is_shared,
    } = *w;
    let n = &s.key;
    if s.key != entry.key && s.key.eq_ignore_ascii_case(agent_container) {
        return err(format!(
            "service '{n}' would take the agent's own name {agent_container}; rename it"
        ));
    }
    if s.key != entry.key && s.build.is_some() {
        return err(format!(
            "service '{n}' has a 'build'; only the agent's own service ('{}') is built. Give '{n}' an image",
            entry.key
        ));
    }
    if s.key != entry.key && s.image.is_none() {
        return err(format!("service '{n}' has no image; give it one"));
    }
    for (k, _) in &s.labels {
        if reserved_label(k) {
            return err(format!(
                "service '{n}' sets the label '{k}'; nasiko.* and com.docker.* labels are the build agent's and compose's to set (remove it)"
            ));
        }
    }
    for m in &s.volumes {
        if let Mount::Volume {
            source: Some(v), ..
        } = m
        {
            if !pkg.volumes.contains(v) {
                return err(format!(
                    "service '{n}' mounts the volume '{v}', which the package does not declare; declare it under the top-level volumes (an agent may not use other volumes)"
                ));
            }
        }
    }
    for (k, _) in &s.networks {
        if k != "default" && !is_shared(k) && !pkg.networks.iter().any(|d| d.key == *k) {
            return err(format!(
                "service '{n}' joins the network '{k}', which the package does not declare; declare it under the top-level networks"
            ));
        }
    }
    for (d, _) in &s.depends_on {
        if !pkg.services.iter().any(|o| o.key == *d) {
            return err(format!(
                "service '{n}' depends on '{d}', which is not a service of the package"
            ));
        }
    }
    if let Some(i) = s.healthcheck.as_ref().and_then(|h| h.interval) {
        if i < MIN_HEALTH_INTERVAL_MS {
            return err(format!(
                "service '{n}' checks its health every {i} ms; the least interval is 1s (the engine runs each check outside the agent's caps)"
            ));
        }
    }
    on_agents_network(w, s)
}

/// What a service does on the agents network: only the agent's own service joins it, without
/// aliases of its own.
fn on_agents_network(w: &Whole, s: &Service) -> Result<(), Refusal> {
    let Whole {
        pkg,
        entry,
        agent_container,
        is_shared,
    } = *w;
    let n = &s.key;
    for key in shared_keys(pkg, s, is_shared) {
        if s.key != entry.key {
            return err(format!(
                "service '{n}' joins the agents network '{key}'; only the agent's own service ('{}') may. Put '{n}' on a network of the package's own",
                entry.key
            ));
        }
        let aliases = &s
            .networks
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        if !aliases.is_empty() {
            return err(format!(
                "service '{n}' sets aliases on the agents network '{key}'; there the agent answers to {agent_container} only, the name the build agent gives it (remove the aliases)"
            ));
        }
    }
    Ok(())
}

/// The caps one service runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Caps {
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
}

/// Share the operator's caps for one agent out over the package's services: what a service asks
/// for it gets, the rest is split evenly among those that ask for nothing; the total never exceeds
/// the cap. Without a cap (0 or empty), a service keeps what it asks for.
pub fn caps(pkg: &Package, limits: &AgentLimits) -> Result<Vec<Caps>, Refusal> {
    let n = pkg.services.len();
    let mut out = vec![Caps::default(); n];
    let cap_mem = (!limits.memory.is_empty())
        .then(|| super::model::parse_bytes(&limits.memory))
        .flatten();
    share(
        pkg,
        "memory",
        "AGENT_MEMORY_LIMIT",
        cap_mem.map(|c| c as f64),
        MIN_MEMORY as f64,
        |s| s.mem_limit.map(|m| m as f64),
        |c, v| c.memory = Some(v as u64),
        &mut out,
        |v| format!("{} MiB", v / (1 << 20) as f64),
    )?;
    share(
        pkg,
        "CPU",
        "AGENT_CPU_LIMIT",
        (limits.cpus > 0.0).then_some(limits.cpus),
        0.01,
        |s| s.cpus,
        |c, v| c.cpus = Some((v * 100.0).floor() / 100.0),
        &mut out,
        |v| format!("{v:.2} CPUs"),
    )?;
    share(
        pkg,
        "processes",
        "AGENT_PIDS_LIMIT",
        (limits.pids > 0).then_some(limits.pids as f64),
        1.0,
        |s| s.pids_limit.map(|p| p as f64),
        |c, v| c.pids = Some(v.floor() as u64),
        &mut out,
        |v| format!("{v:.0} processes"),
    )?;
    for (s, c) in pkg.services.iter().zip(&out) {
        if let (Some(r), Some(m)) = (s.mem_reservation, c.memory) {
            if r > m {
                return err(format!(
                    "service '{}' reserves more memory ({} MiB) than its limit ({} MiB); lower mem_reservation",
                    s.key,
                    r >> 20,
                    m >> 20
                ));
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn share(
    pkg: &Package,
    what: &str,
    setting: &str,
    cap: Option<f64>,
    least: f64,
    asked: impl Fn(&Service) -> Option<f64>,
    set: impl Fn(&mut Caps, f64),
    out: &mut [Caps],
    show: impl Fn(f64) -> String,
) -> Result<(), Refusal> {
    let Some(cap) = cap else {
        for (s, c) in pkg.services.iter().zip(out.iter_mut()) {
            if let Some(v) = asked(s) {
                set(c, v);
            }
        }
        return Ok(());
    };
    let total: f64 = pkg.services.iter().filter_map(&asked).sum();
    if total > cap {
        return err(format!(
            "the package asks for {} of {what} in total; an agent may have {} ({setting}). Lower the services' limits",
            show(total),
            show(cap)
        ));
    }
    let rest = pkg.services.iter().filter(|s| asked(s).is_none()).count();
    let each = if rest > 0 {
        (cap - total) / rest as f64
    } else {
        0.0
    };
    for (s, c) in pkg.services.iter().zip(out.iter_mut()) {
        let v = asked(s).unwrap_or(each);
        if v < least {
            return err(format!(
                "service '{}' would get {} of {what}, too little to run ({} of {setting} over {} services); lower the other services' limits or drop a service",
                s.key,
                show(v),
                show(cap),
                pkg.services.len()
            ));
        }
        set(c, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::interpolate::Vars;
    use super::super::model::{read, Context};
    use super::*;
    use std::path::Path;

    const MOST: Counts = Counts {
        services: 8,
        replicas: 3,
    };

    fn pkg(t: &str) -> Result<Package, Refusal> {
        let vars = Vars::default();
        let cx = Context::new(Path::new("/work/pkg"), &vars, "nasiko-network");
        read(&super::super::yaml::read(t)?, &cx)
    }

    fn shared(k: &str) -> bool {
        ["agents-net", "nasiko-network"].contains(&k)
    }

    fn refused(t: &str, agent: &str) -> String {
        let p = pkg(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        check(&p, agent, &format!("agent-{agent}"), MOST, &shared)
            .unwrap_err()
            .0
    }

    fn limits() -> AgentLimits {
        AgentLimits {
            memory: "1g".into(),
            cpus: 0.5,
            pids: 512,
        }
    }

    #[test]
    fn keys_outside_the_table_are_refused_by_the_model_with_what_to_do() {
        let cases = [
            ("services: {a: {build: ., volumes: ['x:/host']}}\nvolumes: {x: {driver: local, driver_opts: {device: /}}}", "volume 'x' sets 'driver'"),
            ("services: {a: {build: ., volumes: ['x:/host']}}\nvolumes: {x: {name: nasiko_nasiko-secrets}}", "volume 'x' sets 'name'"),
            ("services: {a: {build: ., networks: [n]}}\nnetworks: {n: {name: nasiko-core}}", "names the Docker network 'nasiko-core'"),
            ("services: {a: {build: ., networks: [n]}}\nnetworks: {n: {external: true, name: host}}", "names the Docker network 'host'"),
            ("services: {a: {build: .}}\nsecrets: {s: {file: /etc/shadow}}", "top-level 'secrets'"),
            ("services: {a: {build: ., configs: [c]}}", "'configs'"),
            ("services: {a: {build: ., volumes_from: ['container:redis']}}", "'volumes_from'"),
            ("services: {a: {build: {context: /etc}}}", "outside the package"),
            ("services: {a: {build: {context: ., dockerfile: ../../etc/passwd}}}", "outside the package"),
            ("services: {a: {build: {context: ., additional_contexts: {root: /}}}}", "build.additional_contexts"),
            ("services: {a: {build: {context: ., network: host}}}", "build.network"),
            ("services: {a: {build: ., security_opt: ['seccomp:unconfined']}}", "'security_opt'"),
            ("services: {a: {build: ., privileged: true}}", "'privileged'"),
            ("services: {a: {build: ., cap_add: [SYS_ADMIN]}}", "'cap_add'"),
            ("services: {a: {build: ., network_mode: host}}", "'network_mode'"),
            ("services: {a: {build: ., pid: host}}", "'pid'"),
            ("services: {a: {build: ., volumes: ['/var/run/docker.sock:/var/run/docker.sock']}}", "Docker socket"),
            ("services: {a: {build: ., volumes: ['../../:/up']}}", "outside the package"),
            ("services: {a: {build: ., volumes: ['./x:/x:z']}}", "mode 'z'"),
            ("services: {a: {build: ., volumes: [{type: bind, source: /, target: /host}]}}", "outside the package"),
            ("services: {a: {build: ., volumes: [{type: bind, source: ., target: /h, bind: {propagation: rshared}}]}}", "volumes.bind"),
            ("services: {a: {build: ., env_file: /etc/shadow}}", "outside the package"),
            ("services: {a: {build: ., deploy: {resources: {limits: {memory: 1g}}}}}", "use only replicas"),
            ("services: {a: {build: ., scale: 2, deploy: {replicas: 3}}}", "two numbers of replicas"),
            ("services: {a: {build: .}}\nnetworks: {n: {driver: host}}", "network 'n' sets 'driver'"),
            ("include: [other.yml]\nservices: {a: {build: .}}", "top-level 'include'"),
            ("services: {a: {build: ., networks: {agents-net: {ipv4_address: 1.2.3.4}}}}", "only aliases"),
        ];
        assert_eq!(cases.len(), 27);
        for (t, needle) in cases {
            let e = pkg(t).unwrap_err().0;
            assert!(e.contains(needle), "{t}\n→ {e}");
        }
    }

    #[test]
    fn replicas_are_the_agents_own_between_one_and_the_operators_cap() {
        for (t, needle) in [
            (
                "services: {a: {build: ., deploy: {replicas: 4}}}",
                "at most 3 of an agent (AGENT_MAX_REPLICAS)",
            ),
            ("services: {a: {build: ., scale: 0}}", "at least one"),
            (
                "services: {a: {build: .}, db: {image: m, deploy: {replicas: 2}}}",
                "only the agent's own service ('a') may have replicas",
            ),
        ] {
            let e = refused(t, "a");
            assert!(e.contains(needle), "{t}\n→ {e}");
        }
        for t in [
            "services: {a: {build: ., deploy: {replicas: 3}}}",
            "services: {a: {build: ., scale: '2'}}",
            "services: {a: {build: ., deploy: {}}, db: {image: m, scale: 1}}",
        ] {
            let p = pkg(t).unwrap();
            check(&p, "a", "agent-a", MOST, &shared).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        let p = pkg("services: {a: {build: ., deploy: {replicas: 3}}}").unwrap();
        assert_eq!(p.services[0].replicas, Some(3));
    }

    #[test]
    fn names_labels_volumes_and_the_agents_network() {
        let cases = [
            ("services: {me: {build: ., networks: [agents-net]}, db: {image: m, networks: [agents-net]}}", "me", "service 'db' joins the agents network"),
            ("services: {me: {build: .}, db: {image: m, networks: [shared]}}\nnetworks: {shared: {external: true, name: nasiko-network}}", "me", "service 'db' joins"),
            ("services: {me: {build: ., networks: {agents-net: {aliases: [kong-gateway]}}}}", "me", "sets aliases"),
            ("services: {me: {build: .}, AGENT-ME: {image: x}}", "me", "would take the agent's own name"),
            ("services: {me: {build: .}, Me: {image: x}}", "me", "differ only in '_' and '-' or in case"),
            ("services: {me: {build: ., volumes: ['a_b:/x', 'a-b:/y']}}\nvolumes: {a_b: {}, a-b: {}}", "me", "volumes 'a_b' and 'a-b'"),
            ("services: {me: {build: ., labels: {nasiko.type: agent}}}", "me", "nasiko.type"),
            ("services: {me: {build: ., labels: [NASIKO.name=x]}}", "me", "NASIKO.name"),
            ("services: {me: {build: ., labels: {com.docker.compose.project: agent-victim}}}", "me", "com.docker.compose.project"),
            ("services: {me: {build: ., volumes: ['platform-data:/data']}}", "me", "does not declare"),
            ("services: {me: {build: ., networks: [nasiko-core]}}", "me", "does not declare"),
            ("services: {me: {build: ., healthcheck: {test: [CMD, 'true'], interval: 1ms}}}", "me", "every 1 ms"),
            ("services: {me: {build: .}, db: {build: .}}", "me", "only the agent's own service"),
            ("services: {me: {build: ., depends_on: [ghost]}}", "me", "depends on 'ghost'"),
            ("services: {a: {image: x}, b: {image: y}}", "me", "cannot tell"),
        ];
        assert_eq!(cases.len(), 15);
        for (t, agent, needle) in cases {
            let e = refused(t, agent);
            assert!(e.contains(needle), "{t}\n→ {e}");
        }
        let nine: String = (0..9).map(|i| format!("  s{i}: {{image: x}}\n")).collect();
        assert!(
            refused(&format!("services:\n  me: {{build: .}}\n{nine}"), "me").contains("at most 8")
        );
    }

    #[test]
    fn what_real_agents_use_is_allowed() {
        let ok = "services:\n  a:\n    build: .\n    container_name: a\n    environment:\n    stdin_open: true\n    tty: true\n    ports: ['5000']\n    networks: [agents-net, db]\n    volumes: ['data:/data', './cfg:/cfg:ro', {type: tmpfs, target: /tmp}]\n    healthcheck: {test: [CMD, 'true'], interval: 5s}\n    mem_limit: 256m\n    labels: {com.example.team: x}\n  mongo:\n    image: mongo\n    depends_on: [a]\n    networks: [db]\nnetworks:\n  agents-net: {external: true}\n  db: {external: true}\nvolumes:\n  data: {}\nx-common: {a: 1}\nversion: '3.8'\n";
        let p = pkg(ok).unwrap();
        check(&p, "a", "agent-a", MOST, &shared).unwrap();
        assert_eq!(entry_service(&p, "a").unwrap().key, "a");
    }

    #[test]
    fn caps_are_shared_out_per_package() {
        let p = pkg("services: {a: {build: .}, b: {image: x, mem_limit: 256m}, c: {image: y}}")
            .unwrap();
        let c = caps(&p, &limits()).unwrap();
        assert_eq!(c[1].memory, Some(256 << 20));
        assert_eq!(c[0].memory, Some(384 << 20));
        assert_eq!(c[2].memory, Some(384 << 20));
        let cpus: f64 = c.iter().map(|c| c.cpus.unwrap()).sum();
        assert!(cpus <= 0.5 && cpus > 0.45, "{cpus}");
        let pids: u64 = c.iter().map(|c| c.pids.unwrap()).sum();
        assert!((510..=512).contains(&pids), "{pids}");
        let e = caps(
            &pkg("services: {a: {build: ., cpus: 0.4}, b: {image: x, cpus: 0.4}}").unwrap(),
            &limits(),
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("0.80 CPUs of CPU in total; an agent may have 0.50"),
            "{e}"
        );
        let e = caps(
            &pkg("services: {a: {build: ., mem_limit: 1g}, b: {image: x}}").unwrap(),
            &limits(),
        )
        .unwrap_err()
        .0;
        assert!(e.contains("service 'b' would get 0 MiB"), "{e}");
        let none = AgentLimits {
            memory: String::new(),
            cpus: 0.0,
            pids: 0,
        };
        let c = caps(&pkg("services: {a: {build: ., cpus: 4}}").unwrap(), &none).unwrap();
        assert_eq!(
            c[0],
            Caps {
                memory: None,
                cpus: Some(4.0),
                pids: None
            }
        );
    }
}
