//! The diff: desired state against the Kong entities we own (tag-scoped), as an ordered plan of
//! writes — upstreams with new services, then targets with plugins, changed services, routes,
//! drained targets; deletes in reverse. Converged state gives an empty plan. Pure.

use crate::desired::DesiredState;
use crate::model::rule::{matches, Agrees, Spec};
use crate::model::{
    Head, LinkKind, PluginRow, PluginSpec, RouteRow, RouteSpec, Row, ServiceRow, ServiceSpec,
    TargetKey, TargetRow, TargetSpec, UpstreamRow, UpstreamSpec,
};
use std::collections::{BTreeMap, BTreeSet};

/// What we read from Kong: every entity carrying the ownership tag.
#[derive(Debug, Clone, Default)]
pub struct OwnedState {
    pub services: Vec<ServiceRow>,
    pub routes: Vec<RouteRow>,
    pub plugins: Vec<PluginRow>,
    pub upstreams: Vec<UpstreamRow>,
    /// The targets of our upstreams that carry the tag.
    pub targets: Vec<TargetRow>,
    /// Targets found on our upstreams without the tag (someone else's, or the Python era's).
    pub foreign_targets: Vec<TargetRow>,
    /// Some upstreams' targets are those listed by an earlier read, confirmed by Kong's ids:
    /// good to tell that nothing is to be done there, not to plan target writes from.
    pub reused_targets: bool,
}

impl OwnedState {
    /// What it holds of these services (by name) and of no service: each service named, its
    /// routes and plugins, the upstream of its name with its targets, and the rows linked to no
    /// service or upstream. An event's sync plans the agents it changed and the static routes
    /// against this, so its cost is theirs, not every agent's: a plan from it leaves every other
    /// service alone (its rows are not there to delete).
    pub fn only_services(&self, names: &BTreeSet<&str>) -> OwnedState {
        let named = |h: &Head| h.name().is_some_and(|n| names.contains(n));
        let ids = |rows: &mut dyn Iterator<Item = &Head>| -> BTreeSet<String> {
            rows.filter(|h| named(h))
                .filter_map(|h| h.id().map(String::from))
                .collect()
        };
        let services = ids(&mut self.services.iter().map(|r| &r.head));
        let upstreams = ids(&mut self.upstreams.iter().map(|r| &r.head));
        let on = |h: &Head, kind: LinkKind, ids: &BTreeSet<String>| {
            h.link(kind).is_none_or(|id| ids.contains(id))
        };
        fn keep<F: Clone>(rows: &[Row<F>], keep: impl Fn(&Head) -> bool) -> Vec<Row<F>> {
            rows.iter().filter(|r| keep(&r.head)).cloned().collect()
        }
        OwnedState {
            services: keep(&self.services, named),
            routes: keep(&self.routes, |h| on(h, LinkKind::Service, &services)),
            plugins: keep(&self.plugins, |h| on(h, LinkKind::Service, &services)),
            upstreams: keep(&self.upstreams, named),
            targets: keep(&self.targets, |h| on(h, LinkKind::Upstream, &upstreams)),
            foreign_targets: keep(&self.foreign_targets, |h| {
                on(h, LinkKind::Upstream, &upstreams)
            }),
            reused_targets: self.reused_targets,
        }
    }

    /// What Kong holds after write `w` went through, told by Kong's answer to it: the row it
    /// answered with (`row`, for a write that creates or changes one; a PUT of an existing
    /// entity keeps its id), or the row `w` deleted gone, with what Kong 3.4 deletes with it (an
    /// upstream's targets, a service's or a route's plugins: `on_delete = "cascade"` in
    /// `kong/db/schema/entities/targets.lua` and `plugins.lua`). A target is ours when it carries
    /// `owner_tag`. False when the answer does not tell (a write that changes a row answered
    /// without one): then only a reading does.
    pub fn written(
        &mut self,
        w: &KongWrite,
        row: Option<&serde_json::Value>,
        owner_tag: &str,
    ) -> bool {
        fn put<F: serde::de::DeserializeOwned>(rows: &mut Vec<Row<F>>, v: &serde_json::Value) {
            let row = Row::<F>::read(v);
            rows.retain(|r| r.id() != row.id());
            rows.push(row);
        }
        fn gone<F>(rows: &mut Vec<Row<F>>, gone: impl Fn(&Head) -> bool) {
            rows.retain(|r| !gone(&r.head));
        }
        if row.is_some_and(|v| v["id"].as_str().is_none_or(str::is_empty)) {
            return false;
        }
        let linked = |kind: LinkKind, id: &str| {
            let id = id.to_string();
            move |h: &Head| h.link(kind) == Some(id.as_str())
        };
        match (w, row) {
            (KongWrite::PutUpstream(_), Some(v)) => put(&mut self.upstreams, v),
            (KongWrite::PutService(_), Some(v)) => put(&mut self.services, v),
            (KongWrite::PutRoute(_), Some(v)) => put(&mut self.routes, v),
            (KongWrite::PutPlugin(_), Some(v)) => put(&mut self.plugins, v),
            (KongWrite::AddTarget(_) | KongWrite::UpdateTarget { .. }, Some(v)) => {
                let row = TargetRow::read(v);
                self.without_target(row.id());
                match row.has_tag(owner_tag) {
                    true => self.targets.push(row),
                    false => self.foreign_targets.push(row),
                }
            }
            (KongWrite::DeleteTarget { id, .. }, _) => self.without_target(Some(id)),
            (KongWrite::DeleteUpstream { id, .. }, _) => {
                gone(&mut self.upstreams, |h| h.id() == Some(id));
                gone(&mut self.targets, linked(LinkKind::Upstream, id));
                gone(&mut self.foreign_targets, linked(LinkKind::Upstream, id));
            }
            (KongWrite::DeleteService { id, .. }, _) => {
                gone(&mut self.services, |h| h.id() == Some(id));
                gone(&mut self.plugins, linked(LinkKind::Service, id));
            }
            (KongWrite::DeleteRoute { id, .. }, _) => {
                gone(&mut self.routes, |h| h.id() == Some(id));
                gone(&mut self.plugins, linked(LinkKind::Route, id));
            }
            (KongWrite::DeletePlugin { id, .. }, _) => {
                gone(&mut self.plugins, |h| h.id() == Some(id))
            }
            (_, None) => return false,
        }
        true
    }

    /// Without the target of this id, ours or not.
    fn without_target(&mut self, id: Option<&str>) {
        self.targets.retain(|t| t.id() != id);
        self.foreign_targets.retain(|t| t.id() != id);
    }
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
            KongWrite::PutService(s) => {
                format!("upsert service {} -> {}", s.name, s.fields.url())
            }
            KongWrite::PutUpstream(u) => format!("upsert upstream {}", u.name),
            KongWrite::AddTarget(t) => format!(
                "add target {} ({}) to {} at weight {}",
                t.target,
                t.container,
                t.upstream,
                t.weight()
            ),
            KongWrite::UpdateTarget { spec: t, .. } if t.weight() == 0 => format!(
                "drain target {} ({}) of {}: weight 0",
                t.target, t.container, t.upstream
            ),
            KongWrite::UpdateTarget { spec: t, .. } => format!(
                "set target {} ({}) of {} to weight {}",
                t.target,
                t.container,
                t.upstream,
                t.weight()
            ),
            KongWrite::DeleteTarget {
                upstream, target, ..
            } => format!("remove target {target} from {upstream}"),
            KongWrite::DeleteUpstream { name, .. } => format!("delete upstream {name}"),
            KongWrite::PutRoute(r) => format!("upsert route {} {:?}", r.name, r.fields.paths),
            KongWrite::PutPlugin(p) => format!("upsert plugin {} on {}", p.name(), p.service),
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

/// Rows by the name a spec is keyed on.
fn by_name<F>(rows: &[Row<F>], key: impl Fn(&Row<F>) -> Option<&str>) -> BTreeMap<&str, &Row<F>> {
    rows.iter().filter_map(|r| Some((key(r)?, r))).collect()
}

/// Our rows in Kong, looked up the way the specs name them.
struct Owned<'a> {
    services: BTreeMap<&'a str, &'a ServiceRow>,
    routes: BTreeMap<&'a str, &'a RouteRow>,
    plugins: BTreeMap<&'a str, &'a PluginRow>,
    upstreams: BTreeMap<&'a str, &'a UpstreamRow>,
    /// Targets on our upstreams by (upstream name, address): tagged ones, and untagged ones
    /// (adopted when wanted, else they keep their upstream).
    targets: BTreeMap<TargetKey, &'a TargetRow>,
    foreign_targets: BTreeMap<TargetKey, &'a TargetRow>,
}

impl<'a> Owned<'a> {
    fn index(owned: &'a OwnedState) -> Owned<'a> {
        let upstream_name: BTreeMap<&str, &str> = owned
            .upstreams
            .iter()
            .filter_map(|u| Some((u.id()?, u.name()?)))
            .collect();
        let keyed = |list: &'a [TargetRow]| -> BTreeMap<TargetKey, &'a TargetRow> {
            list.iter()
                .filter_map(|t| {
                    let up = upstream_name.get(t.link(LinkKind::Upstream)?)?;
                    Some((TargetKey::new(*up, t.head.target.as_deref()?), t))
                })
                .collect()
        };
        Owned {
            services: by_name(&owned.services, |r| r.name()),
            routes: by_name(&owned.routes, |r| r.name()),
            plugins: by_name(&owned.plugins, |p| p.head.instance_name.as_deref()),
            upstreams: by_name(&owned.upstreams, |r| r.name()),
            targets: keyed(&owned.targets),
            foreign_targets: keyed(&owned.foreign_targets),
        }
    }

    fn service_id(&self, name: &str) -> Option<&'a str> {
        self.services.get(name).and_then(|r| r.id())
    }

    /// The specs whose row does not match, as writes.
    fn unmatched<S: Spec + Clone>(
        &self,
        wanted: &BTreeMap<String, S>,
        rows: &BTreeMap<&str, &Row<S::Fields>>,
        write: fn(S) -> KongWrite,
    ) -> Vec<KongWrite>
    where
        S::Fields: Agrees,
    {
        wanted
            .iter()
            .filter(|(name, want)| {
                let sid = want.service().and_then(|s| self.service_id(s));
                !rows
                    .get(name.as_str())
                    .is_some_and(|have| matches(*want, have, sid))
            })
            .map(|(_, want)| write(want.clone()))
            .collect()
    }
}

/// Plan the writes that take `owned` to `desired`. Deletes only when `allow_deletes`.
pub fn plan(desired: &DesiredState, owned: &OwnedState, allow_deletes: bool) -> Plan {
    let o = Owned::index(owned);
    let (raise_targets, drain_targets) = target_writes(desired, &o);
    // Three round trips for a new agent, in an order that never lets a request through
    // unauthenticated or to nothing: its upstream and service together (no route reaches the
    // service yet); its target and its plugins (nasiko-auth among them) together; then the route
    // that exposes it. A service Kong already has, whose route may be serving, is re-pointed only
    // once the upstream it now names has its targets. A drained target keeps serving until
    // everything else is in place; on removal the route goes before its plugins.
    let (new_services, changed_services): (Vec<KongWrite>, Vec<KongWrite>) = o
        .unmatched(&desired.services, &o.services, KongWrite::PutService)
        .into_iter()
        .partition(
            |w| matches!(w, KongWrite::PutService(s) if !o.services.contains_key(s.name.as_str())),
        );
    let upstreams = o.unmatched(&desired.upstreams, &o.upstreams, KongWrite::PutUpstream);
    let plugins = o.unmatched(&desired.plugins, &o.plugins, KongWrite::PutPlugin);
    let mut phases = vec![
        [upstreams, new_services].concat(),
        [raise_targets, plugins].concat(),
        changed_services,
        o.unmatched(&desired.routes, &o.routes, KongWrite::PutRoute),
        drain_targets,
    ];
    if allow_deletes {
        phases.extend(deletes(desired, owned, &o));
    }
    phases.retain(|p| !p.is_empty());
    Plan { phases }
}

/// The target writes: those that add or raise a target, and those that drain one (a weight that
/// drops waits until everything else is in place). An untagged target at a wanted address is
/// adopted (PATCH), as a PUT by name adopts a service.
fn target_writes(desired: &DesiredState, o: &Owned) -> (Vec<KongWrite>, Vec<KongWrite>) {
    let (mut raise, mut drain) = (Vec::new(), Vec::new());
    for (key, want) in &desired.targets {
        let Some(have) = o.targets.get(key).or_else(|| o.foreign_targets.get(key)) else {
            raise.push(KongWrite::AddTarget(want.clone()));
            continue;
        };
        if matches(want, have, None) {
            continue;
        }
        let weight = have.fields.as_ref().map_or(0, |f| f.weight);
        let w = KongWrite::UpdateTarget {
            id: have.id().unwrap_or_default().to_string(),
            spec: want.clone(),
        };
        if want.weight() < weight {
            drain.push(w);
        } else {
            raise.push(w);
        }
    }
    (raise, drain)
}

/// Our rows (with their ids) whose key `desired` lacks.
fn unwanted<'a, F, S>(
    rows: &'a [Row<F>],
    key: impl Fn(&'a Row<F>) -> Option<&'a str>,
    wanted: &'a BTreeMap<String, S>,
) -> impl Iterator<Item = (&'a str, &'a Row<F>)> {
    rows.iter().filter_map(move |r| {
        let listed = key(r).is_some_and(|k| wanted.contains_key(k));
        Some((r.id()?, r)).filter(|_| !listed)
    })
}

/// The deletes of ours that `desired` lacks, in four phases: routes, plugins, services (and
/// targets), upstreams.
fn deletes(desired: &DesiredState, owned: &OwnedState, o: &Owned) -> [Vec<KongWrite>; 4] {
    let del_plugins = unwanted(
        &owned.plugins,
        |p| p.head.instance_name.as_deref(),
        &desired.plugins,
    )
    .map(|(id, p)| KongWrite::DeletePlugin {
        id: id.into(),
        label: p
            .head
            .instance_name
            .clone()
            .unwrap_or_else(|| format!("{} ({id})", p.name().unwrap_or("?"))),
    })
    .collect();
    let del_routes = unwanted(&owned.routes, |r| r.name(), &desired.routes)
        .map(|(id, r)| KongWrite::DeleteRoute {
            id: id.into(),
            name: r.name().unwrap_or(id).into(),
        })
        .collect();
    let mut del_services: Vec<KongWrite> =
        unwanted(&owned.services, |s| s.name(), &desired.services)
            .map(|(id, s)| KongWrite::DeleteService {
                id: id.into(),
                name: s.name().unwrap_or(id).into(),
            })
            .collect();
    let mut del_upstreams = Vec::new();
    let mut kept_upstreams: Vec<&str> = Vec::new();
    for u in &owned.upstreams {
        let (Some(id), Some(name)) = (u.id(), u.name()) else {
            continue;
        };
        if desired.upstreams.contains_key(name) {
            continue;
        }
        // a target we do not own would go with it (Kong cascades): then it stays
        if o.foreign_targets.keys().any(|k| k.upstream == name) {
            kept_upstreams.push(name);
            continue;
        }
        del_upstreams.push(KongWrite::DeleteUpstream {
            id: id.into(),
            name: name.into(),
        });
    }
    for (key, t) in &o.targets {
        let kept = desired.upstreams.contains_key(&key.upstream)
            || kept_upstreams.contains(&key.upstream.as_str());
        if !kept || desired.targets.contains_key(key) {
            continue; // goes with its upstream, or wanted
        }
        if let Some(id) = t.id() {
            del_services.push(KongWrite::DeleteTarget {
                upstream: key.upstream.clone(),
                id: id.into(),
                target: key.target.clone(),
            });
        }
    }
    [del_routes, del_plugins, del_services, del_upstreams]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::desired::{build, Inputs};
    use crate::endpoint::AgentEndpoint;
    use crate::model::Body;
    use crate::static_routes::{parse, HostOverrides, EMBEDDED};
    use serde_json::{json, Value};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    /// The embedded static proxies, every plugin available, and `agents` as (name, ip).
    pub(crate) fn desired(agents: &[(&str, &str)]) -> DesiredState {
        let statics = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let all: BTreeSet<String> = ["cors", "nasiko-auth", "chat-logger"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let agents: Vec<_> = agents
            .iter()
            .map(|(n, ip)| Arc::new(AgentEndpoint::labelled(n, n, ip, "nasiko-network")))
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

    /// Kong's answers, as JSON, before the client reads them.
    #[derive(Default)]
    struct Answers {
        services: Vec<Value>,
        routes: Vec<Value>,
        plugins: Vec<Value>,
        upstreams: Vec<Value>,
        targets: Vec<Value>,
        foreign_targets: Vec<Value>,
    }

    impl Answers {
        /// As the client reads them.
        fn read(&self) -> OwnedState {
            fn rows<F: serde::de::DeserializeOwned>(v: &[Value]) -> Vec<Row<F>> {
                v.iter().map(Row::read).collect()
            }
            OwnedState {
                services: rows(&self.services),
                routes: rows(&self.routes),
                plugins: rows(&self.plugins),
                upstreams: rows(&self.upstreams),
                targets: rows(&self.targets),
                foreign_targets: rows(&self.foreign_targets),
                reused_targets: false,
            }
        }
    }

    /// What Kong answers to a write, applied to a reading: an untagged target adopted (its
    /// answer carries our tag) becomes ours; a deleted service takes its plugins, a deleted
    /// upstream its targets; an answer without a row does not tell.
    #[test]
    fn a_reading_follows_kongs_answers_to_the_writes() {
        let d = desired(&[("a", "10.0.0.2")]);
        let mut k = as_kong(&d);
        k.foreign_targets = std::mem::take(&mut k.targets);
        k.foreign_targets[0]["tags"] = json!([]); // the Python era's
        let mut o = k.read();
        let (tid, sid) = (o.foreign_targets[0].head.id.clone(), "id-agent-a");
        let spec = d.targets.values().next().unwrap().clone();
        let mut answer = k.foreign_targets[0].clone();
        answer["tags"] = json!(["own", "agent"]);
        let adopt = KongWrite::UpdateTarget {
            id: tid.clone(),
            spec,
        };
        assert!(o.written(&adopt, Some(&answer), "own"));
        assert!(o.foreign_targets.is_empty());
        assert_eq!(o.targets.len(), 1);
        let plugins_of_a = |o: &OwnedState| {
            (o.plugins.iter())
                .filter(|p| p.link(LinkKind::Service) == Some(sid))
                .count()
        };
        assert_eq!(plugins_of_a(&o), 3);
        let (routes, plugins) = (o.routes.len(), o.plugins.len());
        let service = KongWrite::DeleteService {
            id: sid.into(),
            name: "agent-a".into(),
        };
        assert!(o.written(&service, None, "own"));
        assert_eq!(plugins_of_a(&o), 0);
        assert_eq!(o.plugins.len(), plugins - 3, "no other service's plugin");
        assert_eq!(
            o.routes.len(),
            routes,
            "routes are not cascaded (Kong refuses)"
        );
        let upstream = KongWrite::DeleteUpstream {
            id: "uid-agent-a".into(),
            name: "agent-a".into(),
        };
        assert!(o.written(&upstream, None, "own"));
        assert!(o.targets.is_empty() && o.upstreams.is_empty());
        // a PUT answered without its row, or with a row without an id: only a reading tells
        let put = KongWrite::PutUpstream(d.upstreams.values().next().unwrap().clone());
        assert!(!o.written(&put, None, "own"));
        assert!(!o.written(&put, Some(&json!({"name": "agent-a"})), "own"));
    }

    /// What Kong would hold after applying `d` (the full shape, as the emulator answers).
    fn as_kong(d: &DesiredState) -> Answers {
        let sid = |n: &str| format!("id-{n}");
        let uid = |n: &str| format!("uid-{n}");
        Answers {
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
                    let mut cfg = (*p.fields.config).clone();
                    cfg["some_default"] = json!(1);
                    b["config"] = cfg;
                    b
                })
                .collect(),
        }
    }

    #[test]
    fn only_the_named_services_rows_are_kept_with_what_is_no_services() {
        let d = desired(&[("a", "10.0.0.2"), ("b", "10.0.0.3"), ("c", "10.0.0.4")]);
        let mut answers = as_kong(&d);
        // a plugin of ours on no service (global) stays in any view
        answers
            .plugins
            .push(json!({"id": "pid-global", "name": "cors", "tags": ["own"]}));
        let all = answers.read();
        let statics = desired(&[]);
        let names: BTreeSet<&str> = ["agent-b"]
            .into_iter()
            .chain(statics.services.keys().map(String::as_str))
            .collect();
        let only = all.only_services(&names);
        let service_names: BTreeSet<&str> = only.services.iter().filter_map(|r| r.name()).collect();
        assert_eq!(service_names, names, "b's service and the static ones");
        let upstreams: Vec<_> = only.upstreams.iter().filter_map(|r| r.name()).collect();
        assert_eq!(upstreams, ["agent-b"]);
        assert_eq!(only.targets.len(), 1, "b's one target");
        let b_and_statics = desired(&[("b", "10.0.0.3")]);
        assert_eq!(only.routes.len(), b_and_statics.routes.len());
        assert_eq!(
            only.plugins.len(),
            b_and_statics.plugins.len() + 1,
            "and the global one"
        );
        // planned against it, b's desired state is converged, and a and c are left alone: the
        // one write is the global plugin's delete (not wanted, and no service's, as in any plan)
        let p = plan(&b_and_statics, &only, true);
        let writes: Vec<_> = p.phases.iter().flatten().map(|w| w.describe()).collect();
        assert_eq!(writes, ["delete plugin cors (pid-global)"]);
        // while against everything, the same plan would delete a and c
        assert!(!plan(&b_and_statics, &all, true).is_empty());
    }

    #[test]
    fn converged_state_plans_zero_writes() {
        let d = desired(&[("a", "10.0.0.2"), ("b", "10.0.0.3")]);
        assert_eq!(plan(&d, &as_kong(&d).read(), true), Plan::default());
    }

    fn kinds(phase: &[KongWrite]) -> Vec<&'static str> {
        let mut v: Vec<&str> = phase
            .iter()
            .map(|w| match w {
                KongWrite::PutUpstream(_) => "put upstream",
                KongWrite::AddTarget(_) => "add target",
                KongWrite::UpdateTarget { spec, .. } if spec.weight() == 0 => "drain target",
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
    fn a_new_agent_takes_three_round_trips_and_its_route_comes_last() {
        let d = desired(&[("a", "10.0.0.2")]);
        let p = plan(&d, &OwnedState::default(), true);
        let order: Vec<Vec<&str>> = p.phases.iter().map(|ph| kinds(ph)).collect();
        assert_eq!(
            order,
            [
                vec!["put upstream", "put service"],
                vec!["add target", "put plugin"],
                vec!["put route"]
            ]
        );
        assert_eq!(p.phases[0].len(), 10, "its upstream and nine services");
    }

    #[test]
    fn a_serving_service_is_repointed_only_once_its_upstream_has_targets() {
        let d = desired(&[("a", "10.0.0.2")]);
        let mut k = as_kong(&d);
        // as the sidecar left it before agents were upstreams: the service at the container
        k.services
            .iter_mut()
            .find(|s| s["name"] == "agent-a")
            .unwrap()["host"] = json!("10.0.0.2");
        k.upstreams.clear();
        k.targets.clear();
        let p = plan(&d, &k.read(), true);
        let order: Vec<Vec<&str>> = p.phases.iter().map(|ph| kinds(ph)).collect();
        assert_eq!(
            order,
            [
                vec!["put upstream"],
                vec!["add target"],
                vec!["put service"]
            ]
        );
    }

    #[test]
    fn a_moved_agent_adds_its_new_target_and_removes_the_old_one_only() {
        let before = desired(&[("a", "10.0.0.2")]);
        let after = desired(&[("a", "10.0.0.9")]);
        let p = plan(&after, &as_kong(&before).read(), true);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(matches!(&p.phases[0][0], KongWrite::AddTarget(t) if t.target == "10.0.0.9:5000"));
        assert!(
            matches!(&p.phases[1][0], KongWrite::DeleteTarget { target, .. } if target == "10.0.0.2:5000")
        );
        assert!(
            plan(&after, &as_kong(&before).read(), false).len() == 1,
            "the old target stays while deletes are unsafe"
        );
    }

    #[test]
    fn a_drained_target_goes_to_weight_0_after_the_new_one_is_in() {
        let before = desired(&[("a", "10.0.0.2")]);
        let mut after = desired(&[("a", "10.0.0.2"), ("a", "10.0.0.3")]);
        after
            .targets
            .get_mut(&TargetKey::new("agent-a", "10.0.0.2:5000"))
            .unwrap()
            .fields
            .weight = 0;
        let p = plan(&after, &as_kong(&before).read(), true);
        let order: Vec<Vec<&str>> = p.phases.iter().map(|ph| kinds(ph)).collect();
        assert_eq!(order, [vec!["add target"], vec!["drain target"]]);
    }

    #[test]
    fn a_gone_agent_is_deleted_route_then_plugins_then_service_then_upstream_and_only_when_allowed()
    {
        let before = desired(&[("a", "10.0.0.2"), ("b", "10.0.0.3")]);
        let after = desired(&[("a", "10.0.0.2")]);
        let p = plan(&after, &as_kong(&before).read(), true);
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
            plan(&after, &as_kong(&before).read(), false).is_empty(),
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
        let p = plan(&d, &k.read(), true);
        assert!(
            matches!(&p.phases[..], [ph] if matches!(&ph[..], [KongWrite::UpdateTarget { id, .. }] if id == "tid-10.0.0.2:5000")),
            "{p:?}"
        );
        // the agent goes, but someone else's target is on its upstream: the upstream stays
        let mut k = as_kong(&d);
        k.foreign_targets
            .push(json!({"id": "theirs", "target": "10.9.9.9:80",
                                      "upstream": {"id": "uid-agent-a"}, "tags": ["ops"]}));
        let p = plan(&desired(&[]), &k.read(), true);
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
        let p = plan(&d, &k.read(), true);
        assert_eq!(p.len(), 2);
    }
}
