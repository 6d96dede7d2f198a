//! The diff: desired state against the Kong entities we own (tag-scoped), as an ordered plan of
//! writes — services, routes, plugins; deletes in reverse. Converged state gives an empty plan. Pure.

use crate::desired::{DesiredState, PluginSpec, RouteSpec, ServiceSpec};
use serde_json::Value;
use std::collections::BTreeMap;

/// What we read from Kong: every entity carrying the ownership tag.
#[derive(Debug, Clone, Default)]
pub struct OwnedState {
    pub services: Vec<Value>,
    pub routes: Vec<Value>,
    pub plugins: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KongWrite {
    PutService(ServiceSpec),
    PutRoute(RouteSpec),
    PutPlugin(PluginSpec),
    DeletePlugin { id: String, label: String },
    DeleteRoute { id: String, name: String },
    DeleteService { id: String, name: String },
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

fn plugin_matches(want: &PluginSpec, have: &Value, service_id: Option<&str>) -> bool {
    let config_ok = match want.config.as_object() {
        Some(m) => m.iter().all(|(k, v)| have["config"].get(k) == Some(v)),
        None => true,
    };
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
    // a service's plugins (nasiko-auth among them) exist before the route that exposes it, and
    // the route goes before its plugins on removal: no request reaches an agent unauthenticated
    let mut phases = vec![put_services, put_plugins, put_routes];
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
        phases.extend([del_routes, del_plugins, del_services]);
    }
    phases.retain(|p| !p.is_empty());
    Plan { phases }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{build, Inputs};
    use crate::endpoint::{AgentEndpoint, Discovered};
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
            .map(|(n, ip)| AgentEndpoint {
                kong_name: format!("agent-{n}"),
                name: n.to_string(),
                container_id: n.to_string(),
                container_name: format!("agent-{n}"),
                ip: ip.to_string(),
                port: 5000,
                owner: String::new(),
                version: None,
                upload_id: None,
                discovered_by: Discovered::Label,
                started_at: String::new(),
            })
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
        OwnedState {
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

    #[test]
    fn an_empty_kong_gets_services_then_plugins_then_routes() {
        let d = desired(&[("a", "10.0.0.2")]);
        let p = plan(&d, &OwnedState::default(), true);
        assert_eq!(p.phases.len(), 3);
        assert!(p.phases[0]
            .iter()
            .all(|w| matches!(w, KongWrite::PutService(_))));
        assert!(p.phases[1]
            .iter()
            .all(|w| matches!(w, KongWrite::PutPlugin(_))));
        assert!(p.phases[2]
            .iter()
            .all(|w| matches!(w, KongWrite::PutRoute(_))));
        assert_eq!(p.phases[0].len(), 9);
    }

    #[test]
    fn a_moved_agent_rewrites_only_its_service() {
        let before = desired(&[("a", "10.0.0.2")]);
        let after = desired(&[("a", "10.0.0.9")]);
        let p = plan(&after, &as_kong(&before), true);
        assert_eq!(p.len(), 1);
        assert!(
            matches!(&p.phases[0][0], KongWrite::PutService(s) if s.upstream.host == "10.0.0.9")
        );
    }

    #[test]
    fn a_gone_agent_is_deleted_route_then_plugins_then_service_and_only_when_allowed() {
        let before = desired(&[("a", "10.0.0.2"), ("b", "10.0.0.3")]);
        let after = desired(&[("a", "10.0.0.2")]);
        let p = plan(&after, &as_kong(&before), true);
        assert_eq!(p.phases.len(), 3);
        assert_eq!(
            p.phases[0],
            vec![KongWrite::DeleteRoute {
                id: "rid-agent-b-route".into(),
                name: "agent-b-route".into()
            }]
        );
        assert_eq!(p.phases[1].len(), 3);
        assert!(p.phases[1]
            .iter()
            .all(|w| matches!(w, KongWrite::DeletePlugin { .. })));
        assert_eq!(
            p.phases[2],
            vec![KongWrite::DeleteService {
                id: "id-agent-b".into(),
                name: "agent-b".into()
            }]
        );
        assert!(
            plan(&after, &as_kong(&before), false).is_empty(),
            "no deletes while unsafe"
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
