//! The diff: desired state against the Kong entities we own (tag-scoped), as an ordered plan of
//! writes — upstreams and new targets, services, plugins, routes, then drained targets; deletes in
//! reverse. Converged state gives an empty plan. Pure.

use crate::desired::{DesiredState, PluginSpec, RouteSpec, ServiceSpec, TargetSpec, UpstreamSpec};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What we read from Kong: every entity carrying the ownership tag.
#[derive(Debug, Clone, Default)]
pub struct OwnedState {
    pub services: Vec<Value>,
    pub routes: Vec<Value>,
    pub plugins: Vec<Value>,
    pub upstreams: Vec<Value>,
    /// The targets of our upstreams that carry the tag.
    pub targets: Vec<Value>,
    /// Targets found on our upstreams without the tag (someone else's, or the Python era's).
    pub foreign_targets: Vec<Value>,
    /// Some upstreams' targets are those listed by an earlier read, confirmed by Kong's ids:
    /// good to tell that nothing is to be done there, not to plan target writes from.
    pub reused_targets: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KongWrite {
    PutUpstream(UpstreamSpec),
    /// `POST /upstreams/{u}/targets` (Kong 3.4 has no PUT that creates a target).
    AddTarget(TargetSpec),
    /// `PATCH /upstreams/{u}/targets/{id}`: its weight (and our tag, adopting an untagged one).
    UpdateTarget {
        id: String,
        spec: TargetSpec,
    },
    DeleteTarget {
        upstream: String,
        id: String,
        target: String,
    },
    DeleteUpstream {
        id: String,
        name: String,
    },
    PutService(ServiceSpec),
    PutRoute(RouteSpec),
    PutPlugin(PluginSpec),
    DeletePlugin {
        id: String,
        label: String,
    },
    DeleteRoute {
        id: String,
        name: String,
    },
    DeleteService {
        id: String,
        name: String,
    },
}

impl KongWrite {
    /// One line for the logs: what changes.
    pub fn describe(&self) -> String {
        match self {
            KongWrite::PutService(s) => format!(
                "upsert service {} -> {}://{}:{}{}",
                s.name,
                s.upstream.protocol,
                s.upstream.host,
                s.upstream.port,
                s.upstream.path.as_deref().unwrap_or("")
            ),
            KongWrite::PutUpstream(u) => format!("upsert upstream {}", u.name),
            KongWrite::AddTarget(t) => format!(
                "add target {} ({}) to {} at weight {}",
                t.target, t.container, t.upstream, t.weight
            ),
            KongWrite::UpdateTarget { spec: t, .. } if t.weight == 0 => format!(
                "drain target {} ({}) of {}: weight 0",
                t.target, t.container, t.upstream
            ),
            KongWrite::UpdateTarget { spec: t, .. } => format!(
                "set target {} ({}) of {} to weight {}",
                t.target, t.container, t.upstream, t.weight
            ),
            KongWrite::DeleteTarget {
                upstream, target, ..
            } => format!("remove target {target} from {upstream}"),
            KongWrite::DeleteUpstream { name, .. } => format!("delete upstream {name}"),
            KongWrite::PutRoute(r) => format!("upsert route {} {:?}", r.name, r.paths),
            KongWrite::PutPlugin(p) => format!("upsert plugin {} on {}", p.name, p.service),
            KongWrite::DeletePlugin { label, .. } => format!("delete plugin {label}"),
            KongWrite::DeleteRoute { name, .. } => format!("delete route {name}"),
            KongWrite::DeleteService { name, .. } => format!("delete service {name}"),
        }
    }
}

/// Writes grouped in phases; each phase may run concurrently, phases run in order.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub phases: Vec<Vec<KongWrite>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.phases.iter().all(|p| p.is_empty())
    }
    pub fn len(&self) -> usize {
        self.phases.iter().map(Vec::len).sum()
    }
    /// The upstreams (by name) whose targets this plan changes.
    pub fn upstreams_touched(&self) -> BTreeSet<String> {
        self.phases
            .iter()
            .flatten()
            .filter_map(|w| match w {
                KongWrite::PutUpstream(u) => Some(u.name.clone()),
                KongWrite::AddTarget(t) | KongWrite::UpdateTarget { spec: t, .. } => {
                    Some(t.upstream.clone())
                }
                KongWrite::DeleteTarget { upstream, .. } => Some(upstream.clone()),
                KongWrite::DeleteUpstream { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The entity carries `tag` (our ownership tag, say).
pub fn has_tag(e: &Value, tag: &str) -> bool {
    e["tags"]
        .as_array()
        .is_some_and(|tags| tags.iter().any(|x| x == tag))
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(|x| x.as_str())
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

fn same_tags(want: &[String], have: &Value) -> bool {
    let mut w: Vec<&str> = want.iter().map(String::as_str).collect();
    let mut h = str_list(have);
    w.sort();
    h.sort();
    w == h
}

fn service_matches(want: &ServiceSpec, have: &Value) -> bool {
    let u = &want.upstream;
    s(have, "protocol") == Some(u.protocol.as_str())
        && s(have, "host") == Some(u.host.as_str())
        && have["port"].as_u64() == Some(u.port as u64)
        && s(have, "path") == u.path.as_deref()
        && have["connect_timeout"].as_u64() == Some(want.connect_timeout)
        && have["read_timeout"].as_u64() == Some(want.read_timeout)
        && have["write_timeout"].as_u64() == Some(want.write_timeout)
        && have["retries"].as_u64() == Some(want.retries)
        && have["enabled"] != Value::Bool(false)
        && same_tags(&want.tags, &have["tags"])
}

fn route_matches(want: &RouteSpec, have: &Value, service_id: Option<&str>) -> bool {
    service_id.is_some()
        && have["service"].get("id").and_then(|x| x.as_str()) == service_id
        && str_list(&have["paths"]) == want.paths.iter().map(String::as_str).collect::<Vec<_>>()
        && str_list(&have["methods"]) == want.methods.iter().map(String::as_str).collect::<Vec<_>>()
        && have["strip_path"].as_bool() == Some(want.strip_path)
        && have["preserve_host"].as_bool() == Some(want.preserve_host)
        && str_list(&have["protocols"]) == ["http", "https"]
        && same_tags(&want.tags, &have["tags"])
}

/// `want` is contained in `have`: every key of `want` (at every level of objects) has the same
/// value in `have`, which may hold more (Kong fills in defaults).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v))),
        (h, w) => h == w,
    }
}

fn upstream_matches(want: &UpstreamSpec, have: &Value) -> bool {
    contains(have, &want.body()) && same_tags(&want.tags, &have["tags"])
}

fn plugin_matches(want: &PluginSpec, have: &Value, service_id: Option<&str>) -> bool {
    let config_ok = !want.config.is_object() || contains(&have["config"], &want.config);
    service_id.is_some()
        && have["service"].get("id").and_then(|x| x.as_str()) == service_id
        && have["route"].is_null()
        && s(have, "name") == Some(want.name.as_str())
        && have["enabled"] == Value::Bool(true)
        && config_ok
        && same_tags(&want.tags, &have["tags"])
}

/// Plan the writes that take `owned` to `desired`. Deletes only when `allow_deletes`.
pub fn plan(desired: &DesiredState, owned: &OwnedState, allow_deletes: bool) -> Plan {
    let by_name = |rows: &[Value], key: &str| -> BTreeMap<String, Value> {
        rows.iter()
            .filter_map(|r| s(r, key).map(|n| (n.to_string(), r.clone())))
            .collect()
    };
    let services = by_name(&owned.services, "name");
    let routes = by_name(&owned.routes, "name");
    let plugins = by_name(&owned.plugins, "instance_name");
    let service_id = |name: &str| {
        services
            .get(name)
            .and_then(|r| s(r, "id"))
            .map(String::from)
    };

    let upstreams = by_name(&owned.upstreams, "name");
    let upstream_name: BTreeMap<&str, &str> = owned
        .upstreams
        .iter()
        .filter_map(|u| Some((s(u, "id")?, s(u, "name")?)))
        .collect();
    // targets on our upstreams, by (upstream name, address)
    let keyed = |list: &'_ [Value]| -> BTreeMap<(String, String), Value> {
        list.iter()
            .filter_map(|t| {
                let up = upstream_name.get(t["upstream"].get("id")?.as_str()?)?;
                Some(((up.to_string(), s(t, "target")?.to_string()), t.clone()))
            })
            .collect()
    };
    let ours = keyed(&owned.targets);
    let foreign = keyed(&owned.foreign_targets);

    let mut put_upstreams = Vec::new();
    for (name, want) in &desired.upstreams {
        if !upstreams
            .get(name)
            .is_some_and(|have| upstream_matches(want, have))
        {
            put_upstreams.push(KongWrite::PutUpstream(want.clone()));
        }
    }
    let (mut raise_targets, mut drain_targets) = (Vec::new(), Vec::new());
    for (key, want) in &desired.targets {
        // an untagged one at the address is adopted (PATCH), as a PUT by name adopts a service
        match ours.get(key).or_else(|| foreign.get(key)) {
            None => raise_targets.push(KongWrite::AddTarget(want.clone())),
            Some(have) => {
                let weight = have["weight"].as_u64().unwrap_or(0);
                if weight == want.weight as u64 && same_tags(&want.tags, &have["tags"]) {
                    continue;
                }
                let w = KongWrite::UpdateTarget {
                    id: s(have, "id").unwrap_or_default().to_string(),
                    spec: want.clone(),
                };
                // a weight that drops waits until everything else is in place
                if (want.weight as u64) < weight {
                    drain_targets.push(w);
                } else {
                    raise_targets.push(w);
                }
            }
        }
    }
    let mut put_services = Vec::new();
    for (name, want) in &desired.services {
        if !services
            .get(name)
            .is_some_and(|have| service_matches(want, have))
        {
            put_services.push(KongWrite::PutService(want.clone()));
        }
    }
    let mut put_routes = Vec::new();
    for (name, want) in &desired.routes {
        let sid = service_id(&want.service);
        if !routes
            .get(name)
            .is_some_and(|have| route_matches(want, have, sid.as_deref()))
        {
            put_routes.push(KongWrite::PutRoute(want.clone()));
        }
    }
    let mut put_plugins = Vec::new();
    for (inst, want) in &desired.plugins {
        let sid = service_id(&want.service);
        if !plugins
            .get(inst)
            .is_some_and(|have| plugin_matches(want, have, sid.as_deref()))
        {
            put_plugins.push(KongWrite::PutPlugin(want.clone()));
        }
    }
    // an upstream has its targets before a service is pointed at it; a service's plugins
    // (nasiko-auth among them) exist before the route that exposes it, and the route goes before
    // its plugins on removal: no request reaches an agent unauthenticated; a drained target keeps
    // serving until everything else is in place
    let mut phases = vec![
        put_upstreams,
        raise_targets,
        put_services,
        put_plugins,
        put_routes,
        drain_targets,
    ];
    if allow_deletes {
        let mut del_plugins = Vec::new();
        for p in &owned.plugins {
            let keep = s(p, "instance_name").is_some_and(|i| desired.plugins.contains_key(i));
            if !keep {
                if let Some(id) = s(p, "id") {
                    let label = s(p, "instance_name")
                        .map(String::from)
                        .unwrap_or_else(|| format!("{} ({id})", s(p, "name").unwrap_or("?")));
                    del_plugins.push(KongWrite::DeletePlugin {
                        id: id.into(),
                        label,
                    });
                }
            }
        }
        let mut del_routes = Vec::new();
        for r in &owned.routes {
            let keep = s(r, "name").is_some_and(|n| desired.routes.contains_key(n));
            if let (false, Some(id)) = (keep, s(r, "id")) {
                del_routes.push(KongWrite::DeleteRoute {
                    id: id.into(),
                    name: s(r, "name").unwrap_or(id).into(),
                });
            }
        }
        let mut del_services = Vec::new();
        for sv in &owned.services {
            let keep = s(sv, "name").is_some_and(|n| desired.services.contains_key(n));
            if let (false, Some(id)) = (keep, s(sv, "id")) {
                del_services.push(KongWrite::DeleteService {
                    id: id.into(),
                    name: s(sv, "name").unwrap_or(id).into(),
                });
            }
        }
        let mut del_upstreams = Vec::new();
        let mut kept_upstreams: Vec<&str> = Vec::new();
        for u in &owned.upstreams {
            let (Some(id), Some(name)) = (s(u, "id"), s(u, "name")) else {
                continue;
            };
            if desired.upstreams.contains_key(name) {
                continue;
            }
            // a target we do not own would go with it (Kong cascades): then it stays
            if foreign.keys().any(|(up, _)| up == name) {
                kept_upstreams.push(name);
                continue;
            }
            del_upstreams.push(KongWrite::DeleteUpstream {
                id: id.into(),
                name: name.into(),
            });
        }
        for ((up, addr), t) in &ours {
            let kept = desired.upstreams.contains_key(up) || kept_upstreams.contains(&up.as_str());
            if !kept || desired.targets.contains_key(&(up.clone(), addr.clone())) {
                continue; // goes with its upstream, or wanted
            }
            if let Some(id) = s(t, "id") {
                del_services.push(KongWrite::DeleteTarget {
                    upstream: up.clone(),
                    id: id.into(),
                    target: addr.clone(),
                });
            }
        }
        phases.extend([del_routes, del_plugins, del_services, del_upstreams]);
    }
    phases.retain(|p| !p.is_empty());
    Plan { phases }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{build, Inputs};
    use crate::endpoint::AgentEndpoint;
    use crate::static_routes::{parse, HostOverrides, EMBEDDED};
    use serde_json::json;
    use std::collections::BTreeSet;

    fn desired(agents: &[(&str, &str)]) -> DesiredState {
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let all: BTreeSet<String> = ["cors", "nasiko-auth", "chat-logger"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let agents: Vec<AgentEndpoint> = agents
            .iter()
            .map(|(n, ip)| AgentEndpoint::labelled(n, n, ip, "nasiko-network"))
            .collect();
        build(&Inputs {
            agents: &agents,
            statics: &statics,
            available_plugins: Some(&all),
            owner_tag: "own",
            now: 0.0,
            warmup: 0.0,
        })
    }

    /// What Kong would hold after applying `d` (the full shape, as the emulator answers).
    fn as_kong(d: &DesiredState) -> OwnedState {
        let sid = |n: &str| format!("id-{n}");
        let uid = |n: &str| format!("uid-{n}");
        OwnedState {
            upstreams: d
                .upstreams
                .values()
                .map(|u| {
                    let mut b = u.body();
                    b["id"] = json!(uid(&u.name));
                    b["slots"] = json!(10000);
                    b
                })
                .collect(),
            targets: d
                .targets
                .values()
                .map(|t| {
                    let mut b = t.body();
                    b["id"] = json!(format!("tid-{}", t.target));
                    b["upstream"] = json!({"id": uid(&t.upstream)});
                    b
                })
                .collect(),
            foreign_targets: vec![],
            reused_targets: false,
            services: d
                .services
                .values()
                .map(|s| {
                    let mut b = s.body();
                    b["id"] = json!(sid(&s.name));
                    b["enabled"] = json!(true);
                    b
                })
                .collect(),
            routes: d
                .routes
                .values()
                .map(|r| {
                    let mut b = r.body();
                    b["id"] = json!(format!("rid-{}", r.name));
                    b["service"] = json!({"id": sid(&r.service)});
                    b
                })
                .collect(),
            plugins: d
                .plugins
                .values()
                .map(|p| {
                    let mut b = p.body();
                    b["id"] = json!(format!("pid-{}", p.instance_name));
                    b["service"] = json!({"id": sid(&p.service)});
                    b["route"] = Value::Null;
                    let mut cfg = p.config.clone();
                    cfg["some_default"] = json!(1);
                    b["config"] = cfg;
                    b
                })
                .collect(),
        }
    }

    #[test]
    fn converged_state_plans_zero_writes() {
        let d = desired(&[("a", "10.0.0.2"), ("b", "10.0.0.3")]);
        assert_eq!(plan(&d, &as_kong(&d), true), Plan::default());
    }

    fn kinds(phase: &[KongWrite]) -> Vec<&'static str> {
        let mut v: Vec<&str> = phase
            .iter()
            .map(|w| match w {
                KongWrite::PutUpstream(_) => "put upstream",
                KongWrite::AddTarget(_) => "add target",
                KongWrite::UpdateTarget { spec, .. } if spec.weight == 0 => "drain target",
                KongWrite::UpdateTarget { .. } => "weigh target",
                KongWrite::DeleteTarget { .. } => "delete target",
                KongWrite::DeleteUpstream { .. } => "delete upstream",
                KongWrite::PutService(_) => "put service",
                KongWrite::PutRoute(_) => "put route",
                KongWrite::PutPlugin(_) => "put plugin",
                KongWrite::DeletePlugin { .. } => "delete plugin",
                KongWrite::DeleteRoute { .. } => "delete route",
                KongWrite::DeleteService { .. } => "delete service",
            })
            .collect();
        v.dedup();
        v
    }

    #[test]
    fn an_empty_kong_gets_upstreams_targets_services_plugins_then_routes() {
        let d = desired(&[("a", "10.0.0.2")]);
        let p = plan(&d, &OwnedState::default(), true);
        let order: Vec<Vec<&str>> = p.phases.iter().map(|ph| kinds(ph)).collect();
        assert_eq!(
            order,
            [
                vec!["put upstream"],
                vec!["add target"],
                vec!["put service"],
                vec!["put plugin"],
                vec!["put route"]
            ]
        );
        assert_eq!(p.phases[2].len(), 9);
    }

    #[test]
    fn a_moved_agent_adds_its_new_target_and_removes_the_old_one_only() {
        let before = desired(&[("a", "10.0.0.2")]);
        let after = desired(&[("a", "10.0.0.9")]);
        let p = plan(&after, &as_kong(&before), true);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(matches!(&p.phases[0][0], KongWrite::AddTarget(t) if t.target == "10.0.0.9:5000"));
        assert!(
            matches!(&p.phases[1][0], KongWrite::DeleteTarget { target, .. } if target == "10.0.0.2:5000")
        );
        assert!(
            plan(&after, &as_kong(&before), false).len() == 1,
            "the old target stays while deletes are unsafe"
        );
    }

    #[test]
    fn a_drained_target_goes_to_weight_0_after_the_new_one_is_in() {
        let before = desired(&[("a", "10.0.0.2")]);
        let mut after = desired(&[("a", "10.0.0.2"), ("a", "10.0.0.3")]);
        after
            .targets
            .get_mut(&("agent-a".to_string(), "10.0.0.2:5000".to_string()))
            .unwrap()
            .weight = 0;
        let p = plan(&after, &as_kong(&before), true);
        let order: Vec<Vec<&str>> = p.phases.iter().map(|ph| kinds(ph)).collect();
        assert_eq!(order, [vec!["add target"], vec!["drain target"]]);
    }

    #[test]
    fn a_gone_agent_is_deleted_route_then_plugins_then_service_then_upstream_and_only_when_allowed()
    {
        let before = desired(&[("a", "10.0.0.2"), ("b", "10.0.0.3")]);
        let after = desired(&[("a", "10.0.0.2")]);
        let p = plan(&after, &as_kong(&before), true);
        let order: Vec<Vec<&str>> = p.phases.iter().map(|ph| kinds(ph)).collect();
        assert_eq!(
            order,
            [
                vec!["delete route"],
                vec!["delete plugin"],
                vec!["delete service"],
                vec!["delete upstream"]
            ],
            "its target goes with its upstream"
        );
        assert_eq!(
            p.phases[0],
            vec![KongWrite::DeleteRoute {
                id: "rid-agent-b-route".into(),
                name: "agent-b-route".into()
            }]
        );
        assert_eq!(p.phases[1].len(), 3);
        assert!(
            plan(&after, &as_kong(&before), false).is_empty(),
            "no deletes while unsafe"
        );
    }

    #[test]
    fn a_foreign_target_on_our_upstream_is_adopted_at_our_address_and_pins_the_upstream() {
        let d = desired(&[("a", "10.0.0.2")]);
        let mut k = as_kong(&d);
        // an untagged target at our address: adopted by a PATCH, not added (POST would 409)
        let mut t = k.targets.remove(0);
        t["tags"] = Value::Null;
        k.foreign_targets.push(t);
        let p = plan(&d, &k, true);
        assert!(
            matches!(&p.phases[..], [ph] if matches!(&ph[..], [KongWrite::UpdateTarget { id, .. }] if id == "tid-10.0.0.2:5000")),
            "{p:?}"
        );
        // the agent goes, but someone else's target is on its upstream: the upstream stays
        let mut k = as_kong(&d);
        k.foreign_targets
            .push(json!({"id": "theirs", "target": "10.9.9.9:80",
                                      "upstream": {"id": "uid-agent-a"}, "tags": ["ops"]}));
        let p = plan(&desired(&[]), &k, true);
        let all: Vec<&str> = p.phases.iter().flat_map(|ph| kinds(ph)).collect();
        assert!(!all.contains(&"delete upstream"), "{all:?}");
        assert!(
            all.contains(&"delete target"),
            "our own target still goes: {all:?}"
        );
    }

    #[test]
    fn drift_in_kong_is_corrected() {
        let d = desired(&[("a", "10.0.0.2")]);
        let mut k = as_kong(&d);
        k.routes
            .iter_mut()
            .find(|r| r["name"] == "agent-a-route")
            .unwrap()["strip_path"] = json!(false);
        k.plugins
            .iter_mut()
            .find(|p| p["instance_name"] == "agent-a.cors")
            .unwrap()["config"]["max_age"] = json!(1);
        let p = plan(&d, &k, true);
        assert_eq!(p.len(), 2);
    }
}
