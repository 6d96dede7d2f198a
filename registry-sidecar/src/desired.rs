//! The desired Kong state: agent endpoints + static proxies + the plugins the node has, as named
//! services, routes and plugins (contracts.md §2), and for each Docker agent an upstream whose
//! targets are its containers, weighted by `weigh`. Pure and table-tested.

use crate::endpoint::{AgentEndpoint, Discovered};
use crate::model::{
    plugin_instance_name, PluginFields, PluginSpec, RouteFields, RouteSpec, ServiceFields,
    ServiceSpec, ServiceUrl, TargetFields, TargetKey, TargetSpec, UpstreamFields, UpstreamSpec,
    FULL_WEIGHT,
};
use crate::static_routes::{StaticConfig, StaticProxy};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The path of agent service `svc`'s route: `/agents/{svc}` and what lies below it, and nothing
/// else — a regex path (`~`), since Kong matches a plain path as a prefix and `/agents/agent-a`
/// would take `/agents/agent-ab/…` whenever agent `ab` has no route of its own. Kong anchors it at
/// the start (`kong/router/compat.lua`, `get_expression`: `"^" .. path`), strips what it matched
/// (`atc.lua`: the `http.path` match), so the agent sees what it saw under the prefix path, and
/// ranks a regex path above every prefix path (`get_priority`, `REGEX_URL_BIT`). `.` (allowed in
/// names) is escaped; the other characters of a Kong name mean themselves in a regex.
pub fn agent_route_path(svc: &str) -> String {
    format!("~/agents/{}(?:/|$)", svc.replace('.', "\\."))
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    pub targets: BTreeMap<TargetKey, TargetSpec>,
    pub services: BTreeMap<String, ServiceSpec>,
    pub routes: BTreeMap<String, RouteSpec>,
    pub plugins: BTreeMap<String, PluginSpec>,
    /// Plugins wanted but not available on the Kong node (reported, not retried).
    pub missing_plugins: BTreeSet<String>,
    /// Agents left out, with the reason (e.g. a name clash).
    pub skipped: Vec<String>,
}

pub const AGENT_TAG: &str = "nasiko-agent";
pub const STATIC_TAG: &str = "nasiko-static";

pub struct Inputs<'a> {
    pub agents: &'a [Arc<AgentEndpoint>],
    pub statics: &'a StaticConfig,
    /// `None` when unknown (Kong unreachable): then no plugin is planned.
    pub available_plugins: Option<&'a BTreeSet<String>>,
    pub owner_tag: &'a str,
    /// Unix seconds now, and how long a container runs before it may take an agent's route
    /// from another running container of the same agent.
    pub now: f64,
    pub warmup: f64,
}

fn is_warm(a: &AgentEndpoint, now: f64, warmup: f64) -> bool {
    a.started_unix().is_none_or(|t| t + warmup <= now)
}

/// Ready for traffic: it passed its health check, or (without one) it was seen listening on its
/// port, or it has run `warmup` seconds.
fn is_ready(a: &AgentEndpoint, now: f64, warmup: f64) -> bool {
    a.health_checked || a.listening == Some(true) || is_warm(a, now, warmup)
}

/// Not routed yet: it was seen not listening on its port, and its warm-up is not over. A route
/// or target to it would only fail, and failures take a target out of Kong's rotation until an
/// active probe brings it back (5 s).
pub fn is_held(a: &AgentEndpoint, now: f64, warmup: f64) -> bool {
    a.listening == Some(false) && !is_warm(a, now, warmup)
}

/// How an agent's running containers share its traffic, as (container, weight) — the targets of
/// its upstream. A generation is the containers of one image in one deploy slot; the serving one
/// is the newest with a ready container (none ready, as on a first deploy: the oldest, routed at
/// once). All of its containers take traffic — replicas starting beside ready ones included: Kong
/// tries another peer while one does not listen yet. Ready containers of other generations are
/// drained (weight 0) until they stop, one for each ready container of the serving generation
/// (the rest serve on), so an old version gets no new request once as many of the new one
/// answer; a newer generation not ready yet gets nothing. A blue/green update of one container
/// is thus two target writes: the new version in, the old one drained; then its removal when it
/// stops. A rolling one moves the traffic a replica at a time.
pub fn weigh<'a>(
    candidates: &[&'a AgentEndpoint],
    now: f64,
    warmup: f64,
) -> Vec<(&'a AgentEndpoint, u16)> {
    let ready = |a: &AgentEndpoint| is_ready(a, now, warmup);
    // generation → (newest and oldest creation of its containers, has a ready one)
    let mut generations: BTreeMap<&str, (f64, f64, bool)> = BTreeMap::new();
    for a in candidates {
        let created = a.created_unix().unwrap_or(0.0);
        let g = generations
            .entry(a.generation.as_str())
            .or_insert((created, created, false));
        g.0 = g.0.max(created);
        g.1 = g.1.min(created);
        g.2 |= ready(a);
    }
    let serving = generations
        .iter()
        .filter(|(_, g)| g.2)
        .max_by(|(_, a), (_, b)| a.0.total_cmp(&b.0))
        .or_else(|| {
            generations
                .iter()
                .min_by(|(_, a), (_, b)| a.1.total_cmp(&b.1))
        })
        .map(|(generation, _)| *generation);
    let of_serving = |a: &AgentEndpoint| Some(a.generation.as_str()) == serving;
    // an older ready container is drained for each ready one of the serving generation: a
    // rolling update moves the traffic a replica at a time (the newest old ones serve longest)
    let serving_ready = candidates
        .iter()
        .filter(|a| of_serving(a) && ready(a))
        .count();
    let mut old: Vec<&&AgentEndpoint> = candidates
        .iter()
        .filter(|a| !of_serving(a) && ready(a))
        .collect();
    old.sort_by(|a, b| {
        let created = |x: &AgentEndpoint| x.created_unix().unwrap_or(0.0);
        created(b)
            .total_cmp(&created(a))
            .then_with(|| a.container_id.cmp(&b.container_id))
    });
    let still_serving: Vec<&str> = old
        .iter()
        .take(old.len().saturating_sub(serving_ready))
        .map(|a| a.container_id.as_str())
        .collect();
    candidates
        .iter()
        .filter_map(|a| {
            let weight = if of_serving(a) || still_serving.contains(&a.container_id.as_str()) {
                Some(FULL_WEIGHT)
            } else {
                ready(a).then_some(0)
            };
            weight.map(|w| (*a, w))
        })
        .collect()
}

/// When the targets may change next by time alone, after unix time `since` (a resync is due
/// then): a held container's warm-up ends (it is routed), or that of a container beside another
/// of its agent, of unknown readiness (it takes the traffic).
pub fn next_warmup<'a>(
    agents: impl Iterator<Item = &'a AgentEndpoint> + Clone,
    since: f64,
    warmup: f64,
) -> Option<f64> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for a in agents.clone() {
        *count.entry(a.name.as_str()).or_default() += 1;
    }
    agents
        .filter(|a| {
            a.listening == Some(false)
                || (a.listening.is_none() && !a.health_checked && count[a.name.as_str()] > 1)
        })
        .filter_map(|a| a.started_unix().map(|t| t + warmup))
        .filter(|t| *t > since)
        .min_by(|a, b| a.total_cmp(b))
}

pub fn build(inp: &Inputs) -> DesiredState {
    let mut d = DesiredState::default();
    let static_tags = vec![inp.owner_tag.to_string(), STATIC_TAG.to_string()];
    for p in &inp.statics.proxies {
        add_static_proxy(&mut d, inp, p, &static_tags);
    }
    // each agent's containers, weighed (see `weigh`)
    let mut groups: BTreeMap<&str, Vec<&AgentEndpoint>> = BTreeMap::new();
    for a in inp
        .agents
        .iter()
        .filter(|a| !is_held(a, inp.now, inp.warmup))
    {
        groups.entry(a.name.as_str()).or_default().push(a);
    }
    let agent_tags = vec![inp.owner_tag.to_string(), AGENT_TAG.to_string()];
    for containers in groups.values() {
        add_agent(&mut d, inp, containers, &agent_tags);
    }
    d
}

/// A static proxy: its service, its route and its plugins.
fn add_static_proxy(d: &mut DesiredState, inp: &Inputs, p: &StaticProxy, tags: &[String]) {
    let Ok(url) = ServiceUrl::parse(&p.url) else {
        return;
    };
    add_service(d, &p.name, url, tags);
    let fields = RouteFields::new(
        p.paths.clone(),
        p.methods.clone(),
        p.strip_path,
        p.preserve_host,
    );
    add_route(d, &p.name, fields, tags);
    add_plugins(d, inp, &p.name, &p.plugins, tags);
}

/// An agent: an upstream with its weighed containers as targets (a Kubernetes Service, balanced
/// by the cluster, is the service's host instead), its service, its route and its plugins.
fn add_agent(d: &mut DesiredState, inp: &Inputs, containers: &[&AgentEndpoint], tags: &[String]) {
    let weighed = weigh(containers, inp.now, inp.warmup);
    let Some((first, _)) = weighed.first() else {
        return;
    };
    let svc = first.service_name();
    if d.services.contains_key(&svc) {
        d.skipped.push(format!(
            "agent '{}': service name {svc} is taken by a static proxy",
            first.name
        ));
        return;
    }
    let url = if first.discovered_by == Discovered::KubernetesService {
        ServiceUrl {
            protocol: "http".into(),
            host: first.ip.clone(),
            port: first.port,
            path: None,
        }
    } else {
        let upstream = UpstreamSpec {
            name: svc.clone(),
            fields: UpstreamFields::agent(),
            tags: tags.to_vec(),
        };
        d.upstreams.insert(svc.clone(), upstream);
        for (a, weight) in &weighed {
            let t = TargetSpec {
                upstream: svc.clone(),
                target: a.target(),
                fields: TargetFields { weight: *weight },
                container: a.container_name.clone(),
                tags: tags.to_vec(),
            };
            d.targets.insert(t.key(), t);
        }
        ServiceUrl::upstream(&svc)
    };
    add_service(d, &svc, url, tags);
    let fields = RouteFields::new(vec![agent_route_path(&svc)], None, true, false);
    add_route(d, &svc, fields, tags);
    add_plugins(d, inp, &svc, &inp.statics.agent_plugins, tags);
}

fn add_service(d: &mut DesiredState, name: &str, url: ServiceUrl, tags: &[String]) {
    let s = ServiceSpec {
        name: name.into(),
        fields: ServiceFields::at(url),
        tags: tags.to_vec(),
    };
    d.services.insert(name.into(), s);
}

/// The route of `service`, named `{service}-route`.
fn add_route(d: &mut DesiredState, service: &str, fields: RouteFields, tags: &[String]) {
    let name = format!("{service}-route");
    let r = RouteSpec {
        name: name.clone(),
        service: service.into(),
        fields,
        tags: tags.to_vec(),
    };
    d.routes.insert(name, r);
}

/// The plugins of `service` that the node has; the others are reported missing (when the node's
/// plugins are known at all).
fn add_plugins(
    d: &mut DesiredState,
    inp: &Inputs,
    service: &str,
    names: &[String],
    tags: &[String],
) {
    for p in names {
        let Some(available) = inp.available_plugins else {
            continue;
        };
        if !available.contains(p) {
            d.missing_plugins.insert(p.clone());
            continue;
        }
        let instance_name = plugin_instance_name(service, p);
        let spec = PluginSpec {
            instance_name: instance_name.clone(),
            service: service.to_string(),
            fields: PluginFields {
                name: p.clone(),
                config: inp
                    .statics
                    .plugins
                    .get(p)
                    .cloned()
                    .unwrap_or(json!({}))
                    .into(),
                enabled: true,
            },
            tags: tags.to_vec(),
        };
        d.plugins.insert(instance_name, spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::static_routes::{parse, HostOverrides, EMBEDDED};

    fn agent(name: &str, ip: &str, started: &str) -> AgentEndpoint {
        AgentEndpoint {
            started_at: started.into(),
            created_at: started.into(),
            generation: "v1".into(),
            ..AgentEndpoint::labelled(name, &format!("c-{name}-{ip}"), ip, "nasiko-network")
        }
    }

    #[test]
    fn an_agent_becomes_a_service_a_route_and_three_plugins_in_order() {
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let all: BTreeSet<String> = ["cors", "nasiko-auth", "chat-logger"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let agents = [Arc::new(agent("translator", "10.0.0.2", "t1"))];
        let d = build(&Inputs {
            agents: &agents,
            statics: &statics,
            available_plugins: Some(&all),
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        let s = &d.services["agent-translator"];
        assert_eq!(
            s.fields.url(),
            ServiceUrl {
                protocol: "http".into(),
                host: "agent-translator".into(),
                port: 80,
                path: None
            },
            "the service's host names the agent's upstream"
        );
        assert_eq!(d.upstreams["agent-translator"].tags, ["own", AGENT_TAG]);
        let t = &d.targets[&TargetKey::new("agent-translator", "10.0.0.2:5000")];
        assert_eq!((t.weight(), t.upstream.as_str()), (100, "agent-translator"));
        assert_eq!(d.targets.len(), 1);
        assert_eq!(
            (
                s.fields.connect_timeout,
                s.fields.read_timeout,
                s.fields.write_timeout,
                s.fields.retries
            ),
            (60000, 300000, 300000, 3)
        );
        let r = &d.routes["agent-translator-route"];
        assert_eq!(r.fields.paths, ["~/agents/agent-translator(?:/|$)"]);
        assert_eq!(
            agent_route_path("agent-a.b_c~d"),
            "~/agents/agent-a\\.b_c~d(?:/|$)",
            "a name's '.' matches a '.' only"
        );
        assert_eq!(
            r.fields.methods,
            ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        );
        assert!(r.fields.strip_path && !r.fields.preserve_host);
        for p in ["cors", "nasiko-auth", "chat-logger"] {
            assert!(d.plugins.contains_key(&format!("agent-translator.{p}")));
        }
        assert_eq!(d.services.len(), 9, "eight static proxies and the agent");
        assert!(d.missing_plugins.is_empty());
        assert_eq!(s.tags, ["own", AGENT_TAG]);
    }

    #[test]
    fn plugins_the_node_lacks_are_reported_not_planned() {
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let only_cors: BTreeSet<String> = ["cors".to_string()].into();
        let agents = [Arc::new(agent("a", "10.0.0.2", "t1"))];
        let d = build(&Inputs {
            agents: &agents,
            statics: &statics,
            available_plugins: Some(&only_cors),
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        assert!(d.plugins.values().all(|p| p.name() == "cors"));
        assert_eq!(
            d.missing_plugins,
            ["chat-logger".to_string(), "nasiko-auth".to_string()].into()
        );
        let d = build(&Inputs {
            agents: &agents,
            statics: &statics,
            available_plugins: None,
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        assert!(d.plugins.is_empty() && d.missing_plugins.is_empty());
    }

    #[test]
    fn static_proxies_get_the_long_timeouts_of_upstreams_registry() {
        // /router and /api calls run for minutes: 60 s read timeouts gave 504s (issue 11)
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let d = build(&Inputs {
            agents: &[],
            statics: &statics,
            available_plugins: None,
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        });
        for name in ["nasiko-router", "backend-api-proxy"] {
            let s = &d.services[name];
            assert_eq!(
                (
                    s.fields.connect_timeout,
                    s.fields.read_timeout,
                    s.fields.write_timeout,
                    s.fields.retries
                ),
                (60_000, 300_000, 300_000, 3),
                "{name}"
            );
        }
    }

    fn weights(c: &[&AgentEndpoint], now: f64) -> Vec<(String, u16)> {
        weigh(c, now, 3.0)
            .into_iter()
            .map(|(a, w)| (a.ip.clone(), w))
            .collect()
    }

    #[test]
    fn an_update_hands_the_traffic_to_the_new_generation_once_it_is_ready() {
        let t = |secs: u32| format!("2026-11-24T00:00:{secs:02}Z");
        let base = 1795478400.0;
        let old = agent("a", "10.0.0.2", &t(0));
        // the other slot: the same image, another project
        let mut green = agent("a", "10.0.0.3", &t(10));
        green.generation = "v1 in agentgreen-a".into();
        assert_eq!(
            weights(&[&old, &green], base + 11.0),
            [("10.0.0.2".to_string(), 100)],
            "the new slot warms up: not a target yet"
        );
        assert_eq!(
            weights(&[&old, &green], base + 13.0),
            [("10.0.0.2".to_string(), 0), ("10.0.0.3".to_string(), 100)],
            "ready: the new version serves, the old one is drained"
        );
        assert_eq!(
            weights(&[&green], base + 14.0),
            [("10.0.0.3".to_string(), 100)],
            "the old slot stopped: its target goes"
        );
        let agents = [old.clone(), green.clone()];
        assert_eq!(
            next_warmup(agents.iter(), base + 11.0, 3.0),
            Some(base + 13.0)
        );
        assert_eq!(next_warmup(agents.iter(), base + 14.0, 3.0), None);
        // seen listening: ready before its warm-up ends
        let mut listening = green.clone();
        listening.listening = Some(true);
        assert_eq!(
            weights(&[&old, &listening], base + 10.5),
            [("10.0.0.2".to_string(), 0), ("10.0.0.3".to_string(), 100)],
            "listening: the new version serves at once"
        );
        assert_eq!(
            next_warmup([old.clone(), listening].iter(), base + 10.5, 3.0),
            None
        );
    }

    #[test]
    fn a_container_seen_not_listening_is_held_until_it_listens_or_its_warm_up_ends() {
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let base = 1795478400.0;
        let mut lone = agent("a", "10.0.0.2", "2026-11-24T00:00:00Z");
        lone.listening = Some(false);
        let services = |a: &AgentEndpoint, now: f64| -> Vec<String> {
            let d = build(&Inputs {
                agents: &[Arc::new(a.clone())],
                statics: &statics,
                available_plugins: None,
                owner_tag: "own",
                now,
                warmup: 3.0,
            });
            d.services
                .keys()
                .filter(|k| k.starts_with("agent-"))
                .cloned()
                .collect()
        };
        assert!(services(&lone, base + 1.0).is_empty(), "held: not routed");
        assert_eq!(
            next_warmup(std::iter::once(&lone), base + 1.0, 3.0),
            Some(base + 3.0)
        );
        assert_eq!(
            services(&lone, base + 3.0),
            ["agent-a"],
            "its warm-up is over"
        );
        lone.listening = Some(true);
        assert_eq!(services(&lone, base + 1.0), ["agent-a"], "it listens");
        lone.listening = None;
        assert_eq!(services(&lone, base + 1.0), ["agent-a"], "unknown: at once");
        assert_eq!(next_warmup(std::iter::once(&lone), base + 1.0, 3.0), None);
    }

    #[test]
    fn an_old_replica_is_drained_for_each_new_one_ready() {
        let t = |secs: u32| format!("2026-11-24T00:00:{secs:02}Z");
        let base = 1795478400.0;
        let old: Vec<AgentEndpoint> = (0..3)
            .map(|i| agent("a", &format!("10.0.0.{}", 10 + i), &t(i)))
            .collect();
        let new = |i: u32, at: u32| {
            let mut n = agent("a", &format!("10.0.1.{i}"), &t(at));
            n.generation = "v1 in agentgreen-a".into();
            n
        };
        let (n1, n2, n3) = (new(1, 20), new(2, 30), new(3, 40));
        let mut all: Vec<&AgentEndpoint> = old.iter().collect();
        all.push(&n1);
        assert_eq!(
            weights(&all, base + 21.0),
            [
                ("10.0.0.10".to_string(), 100),
                ("10.0.0.11".to_string(), 100),
                ("10.0.0.12".to_string(), 100)
            ],
            "the first new replica warms up"
        );
        assert_eq!(
            weights(&all, base + 24.0),
            [
                ("10.0.0.10".to_string(), 0),
                ("10.0.0.11".to_string(), 100),
                ("10.0.0.12".to_string(), 100),
                ("10.0.1.1".to_string(), 100)
            ],
            "one new ready: the oldest old one is drained"
        );
        all.push(&n2);
        all.push(&n3);
        assert_eq!(
            weights(&all, base + 34.0),
            [
                ("10.0.0.10".to_string(), 0),
                ("10.0.0.11".to_string(), 0),
                ("10.0.0.12".to_string(), 100),
                ("10.0.1.1".to_string(), 100),
                ("10.0.1.2".to_string(), 100),
                ("10.0.1.3".to_string(), 100)
            ],
            "two ready (the third starting beside them takes traffic too): one old one serves on"
        );
        assert!(weights(&all, base + 44.0)
            .iter()
            .all(|(ip, w)| (*w == 0) == ip.starts_with("10.0.0.")));
    }

    #[test]
    fn replicas_share_the_traffic_and_a_lone_or_fresh_agent_is_routed_at_once() {
        let t = |secs: u32| format!("2026-11-24T00:00:{secs:02}Z");
        let base = 1795478400.0;
        let one = agent("a", "10.0.0.5", &t(20));
        assert_eq!(
            weights(&[&one], base + 20.5),
            [("10.0.0.5".to_string(), 100)],
            "alone, a container is routed at once"
        );
        let two = agent("a", "10.0.0.6", &t(21));
        assert_eq!(
            weights(&[&one, &two], base + 21.5),
            [("10.0.0.5".to_string(), 100), ("10.0.0.6".to_string(), 100)],
            "none warm yet (a first deploy of two replicas): both"
        );
        assert_eq!(
            weights(&[&one, &two], base + 30.0),
            [("10.0.0.5".to_string(), 100), ("10.0.0.6".to_string(), 100)],
            "replicas of one image share the traffic"
        );
        let mut next = agent("a", "10.0.0.8", &t(21));
        next.generation = "v2".into();
        assert_eq!(
            weights(&[&one, &two, &next], base + 22.0),
            [("10.0.0.5".to_string(), 100), ("10.0.0.6".to_string(), 100)],
            "a newer image joining while none is warm waits: no target comes and goes"
        );
        let late = agent("a", "10.0.0.9", &t(29));
        assert_eq!(
            weights(&[&one, &two, &late], base + 29.5),
            [
                ("10.0.0.5".to_string(), 100),
                ("10.0.0.6".to_string(), 100),
                ("10.0.0.9".to_string(), 100)
            ],
            "a replica joining its serving generation is in at once (Kong retries past it)"
        );
        let mut checked = agent("a", "10.0.0.7", &t(29));
        checked.health_checked = true;
        checked.generation = "v2".into();
        assert_eq!(
            weights(&[&one, &checked], base + 29.5),
            [("10.0.0.5".to_string(), 0), ("10.0.0.7".to_string(), 100)],
            "a container that passed its health check is ready without a warm-up"
        );
    }
}
