//! The auth window under Kong's `worker_consistency = eventual` (DB mode): the router and the
//! plugins iterator are rebuilt by two separate timers, every `worker_state_update_frequency`
//! seconds in each worker (`kong/runloop/handler.lua`, `init_worker`). Writing the plugins before
//! the route is then not enough: a request between the router's rebuild and the plugins
//! iterator's runs without them. So nothing gives a service traffic until its plugins are settled
//! (certainly in every worker's iterator): an agent's first target waits (its upstream is empty
//! meanwhile, and Kong answers 503 without reaching anyone); a service without an upstream (a
//! static proxy, a Kubernetes agent) has its route wait instead. Under `strict`, and DB-less, Kong
//! sees every write on the next request, and nothing waits.

use crate::desired::DesiredState;
use crate::diff::{KongWrite, Plan};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// When a node's proxy sees an Admin API write (`GET /`'s `configuration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// `strict`, or DB-less: from the next request on.
    NextRequest,
    /// `eventual`: at each timer's next tick, every `worker_state_update_frequency`.
    Eventual(Duration),
}

impl Propagation {
    /// Kong's own defaults (`kong/templates/kong_defaults.lua`): eventual, every 5 s.
    pub const KONG_DEFAULT: Propagation = Propagation::Eventual(Duration::from_secs(5));

    /// From `GET /`'s `configuration`; what it does not say is Kong's default.
    pub fn of(configuration: &serde_json::Value) -> Propagation {
        if configuration["worker_consistency"] == "strict" {
            return Propagation::NextRequest;
        }
        match configuration["worker_state_update_frequency"].as_f64() {
            Some(s) if s > 0.0 && s.is_finite() => {
                Propagation::Eventual(Duration::from_secs_f64(s.min(3600.0)))
            }
            _ => Self::KONG_DEFAULT,
        }
    }
}

/// A rebuild's own duration and the worker events' delivery, on top of one timer period. A
/// rebuild already running when a write lands builds the old state; the next tick, one period
/// later, builds the new one (`rebuild_plugins_iterator_timer`): this margin covers that
/// rebuild's length, which is milliseconds for the routes of a local stack.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(1);

/// The services whose plugins this process wrote, and when.
#[derive(Debug)]
pub struct PluginGate {
    /// Plugins found in Kong without a write of ours were written at the latest at our start.
    started: Instant,
    written: Mutex<HashMap<String, Instant>>,
}

impl PluginGate {
    pub fn new(started: Instant) -> PluginGate {
        PluginGate {
            started,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// A plugin write of `service`'s succeeded at `at`.
    pub fn written(&self, w: &KongWrite, at: Instant) {
        if let KongWrite::PutPlugin(p) = w {
            self.written
                .lock()
                .expect("plugin gate lock")
                .insert(p.service.clone(), at);
        }
    }

    /// When `service`'s plugins are certainly in every worker's plugins iterator.
    fn settled_at(&self, service: &str, period: Duration) -> Instant {
        let at = self
            .written
            .lock()
            .expect("plugin gate lock")
            .get(service)
            .copied();
        at.unwrap_or(self.started) + period + SETTLE_MARGIN
    }

    /// Take out of `plan` each write that would give traffic to a service whose plugins are not
    /// settled at `now`: a target with a weight (of an agent's upstream), or the route of a
    /// service without an upstream. Returns the services held back, for [`PluginGate::recheck_at`].
    pub fn hold(
        &self,
        plan: &mut Plan,
        desired: &DesiredState,
        propagation: Propagation,
        now: Instant,
    ) -> BTreeSet<String> {
        let Propagation::Eventual(period) = propagation else {
            return BTreeSet::new();
        };
        let writing_plugins: BTreeSet<String> = plan
            .phases
            .iter()
            .flatten()
            .filter_map(|w| match w {
                KongWrite::PutPlugin(p) => Some(p.service.clone()),
                _ => None,
            })
            .collect();
        let has_plugins = |svc: &str| desired.plugins.values().any(|p| p.service == svc);
        let unsettled = |svc: &str| {
            has_plugins(svc)
                && (writing_plugins.contains(svc) || self.settled_at(svc, period) > now)
        };
        let mut held = BTreeSet::new();
        for phase in &mut plan.phases {
            phase.retain(|w| match gives_traffic(w, desired) {
                Some(svc) if unsettled(&svc) => {
                    tracing::info!(
                        "holding back: {} (the plugins of {svc} are not yet in every Kong worker; worker_consistency = eventual, every {period:?})",
                        w.describe()
                    );
                    held.insert(svc);
                    false
                }
                _ => true,
            });
        }
        plan.phases.retain(|p| !p.is_empty());
        held
    }

    /// When to sync again for the writes held back: the last of their services to settle.
    pub fn recheck_at(&self, held: &BTreeSet<String>, propagation: Propagation) -> Option<Instant> {
        let Propagation::Eventual(period) = propagation else {
            return None;
        };
        held.iter().map(|s| self.settled_at(s, period)).max()
    }
}

/// The service a write would send traffic to, if it opens a way to one: a target with a weight
/// (its upstream's service), or the route of a service that has no upstream of ours.
fn gives_traffic(w: &KongWrite, desired: &DesiredState) -> Option<String> {
    // an agent's upstream and service share its name, and the service's host names the upstream
    let service_of_upstream = |up: &str| {
        desired
            .services
            .get(up)
            .filter(|s| s.fields.host == up)
            .map(|s| s.name.clone())
    };
    match w {
        KongWrite::AddTarget(t) | KongWrite::UpdateTarget { spec: t, .. } if t.weight() > 0 => {
            service_of_upstream(&t.upstream)
        }
        KongWrite::PutRoute(r) => {
            let upstream = desired.services.get(&r.service).map(|s| &s.fields.host);
            let own_upstream = upstream.is_some_and(|h| desired.upstreams.contains_key(h));
            (!own_upstream).then(|| r.service.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{plan, OwnedState};
    use serde_json::json;

    const EVERY_2S: Propagation = Propagation::Eventual(Duration::from_secs(2));

    fn desired(agents: &[&str]) -> DesiredState {
        let with_ips: Vec<(&str, String)> = agents
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, format!("10.0.0.{}", i + 2)))
            .collect();
        let pairs: Vec<(&str, &str)> = with_ips.iter().map(|(n, ip)| (*n, ip.as_str())).collect();
        crate::diff::tests::desired(&pairs)
    }

    fn kinds(p: &Plan) -> Vec<String> {
        p.phases
            .iter()
            .flatten()
            .map(|w| {
                w.describe()
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn the_node_says_how_writes_propagate_and_silence_means_kongs_default() {
        let of = |c| Propagation::of(&c);
        assert_eq!(
            of(json!({"worker_consistency": "strict", "worker_state_update_frequency": 5})),
            Propagation::NextRequest
        );
        assert_eq!(
            of(json!({"worker_consistency": "eventual", "worker_state_update_frequency": 0.25})),
            Propagation::Eventual(Duration::from_millis(250))
        );
        assert_eq!(of(json!({})), Propagation::KONG_DEFAULT);
        assert_eq!(
            of(json!({"worker_consistency": "eventual", "worker_state_update_frequency": -1})),
            Propagation::KONG_DEFAULT
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_eventual_a_new_agent_gets_everything_but_its_target_until_its_plugins_settle() {
        let gate = PluginGate::new(Instant::now());
        let d = desired(&["a"]);
        let mut p = plan(&d, &OwnedState::default(), true);
        let before = p.len();
        let held = gate.hold(&mut p, &d, EVERY_2S, Instant::now());
        // the agent's one target, and the routes of the static proxies that carry plugins
        let statics_with_plugins: BTreeSet<String> = d
            .plugins
            .values()
            .map(|p| p.service.clone())
            .filter(|s| s != "agent-a")
            .collect();
        assert_eq!(held.len(), 1 + statics_with_plugins.len(), "{held:?}");
        assert!(held.contains("agent-a"));
        assert_eq!(p.len(), before - held.len());
        let k = kinds(&p);
        assert!(!k.iter().any(|w| w == "add target"), "{k:?}");
        assert!(
            k.iter().any(|w| w == "upsert route"),
            "the agent's route is written: {k:?}"
        );
        assert!(k.iter().any(|w| w == "upsert plugin"), "{k:?}");
        // the plugins are written now: the target may go in one period and the margin later
        let t0 = Instant::now();
        for w in p.phases.iter().flatten() {
            gate.written(w, t0);
        }
        let due = gate.recheck_at(&held, EVERY_2S).unwrap();
        assert_eq!(due, t0 + Duration::from_secs(2) + SETTLE_MARGIN);
        // what Kong holds next has everything but the target: it waits until then, not after
        let target = d.targets.values().next().unwrap().clone();
        let only_target = || Plan {
            phases: vec![vec![KongWrite::AddTarget(target.clone())]],
        };
        let early = gate.hold(
            &mut only_target(),
            &d,
            EVERY_2S,
            due - Duration::from_millis(1),
        );
        assert!(early.contains("agent-a"));
        tokio::time::advance(due - t0).await;
        let mut on_time = only_target();
        assert!(gate
            .hold(&mut on_time, &d, EVERY_2S, Instant::now())
            .is_empty());
        assert_eq!(kinds(&on_time), ["add target"]);
    }

    #[tokio::test(start_paused = true)]
    async fn under_strict_nothing_waits() {
        let gate = PluginGate::new(Instant::now());
        let d = desired(&["a", "b"]);
        let mut p = plan(&d, &OwnedState::default(), true);
        let before = p.len();
        assert!(gate
            .hold(&mut p, &d, Propagation::NextRequest, Instant::now())
            .is_empty());
        assert_eq!(p.len(), before);
        assert_eq!(
            gate.recheck_at(
                &BTreeSet::from(["agent-a".into()]),
                Propagation::NextRequest
            ),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn plugins_found_at_start_count_as_written_then_and_a_draining_target_never_waits() {
        let gate = PluginGate::new(Instant::now());
        let d = desired(&["a"]);
        let only = |w: KongWrite| Plan {
            phases: vec![vec![w]],
        };
        let target = d.targets.values().next().unwrap().clone();
        let mut add = only(KongWrite::AddTarget(target.clone()));
        assert_eq!(gate.hold(&mut add, &d, EVERY_2S, Instant::now()).len(), 1);
        let mut drain = only(KongWrite::UpdateTarget {
            id: "t".into(),
            spec: crate::model::TargetSpec {
                fields: crate::model::TargetFields { weight: 0 },
                ..target.clone()
            },
        });
        assert!(gate
            .hold(&mut drain, &d, EVERY_2S, Instant::now())
            .is_empty());
        tokio::time::advance(Duration::from_secs(2) + SETTLE_MARGIN).await;
        let mut add = only(KongWrite::AddTarget(target));
        assert!(gate.hold(&mut add, &d, EVERY_2S, Instant::now()).is_empty());
        assert_eq!(add.len(), 1);
    }
}
