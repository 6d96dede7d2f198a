//! The two rules that say what a row of Kong's is to us, shared by the DB-mode diff, the client
//! and the DB-less document: when a row already is what a spec asks (`matches`), and when an
//! untagged row is to be taken over rather than written beside (`takes_place_of`).

use super::row::{Head, LinkKind, Row};
use super::spec::{
    PluginFields, PluginSpec, RouteFields, RouteSpec, ServiceFields, ServiceSpec, TargetFields,
    TargetSpec, UpstreamFields, UpstreamSpec,
};
use serde_json::Value;

/// A spec, as the rules see it.
pub trait Spec {
    type Fields;
    fn fields(&self) -> &Self::Fields;
    fn tags(&self) -> &[String];
    /// The service it belongs to, by name (routes and plugins).
    fn service(&self) -> Option<&str> {
        None
    }
}

/// Whether the fields Kong holds (`have`) are the ones a spec writes (`self`). Where Kong fills
/// in defaults (a plugin's config, an upstream's health checks) what was written must be contained
/// in what Kong holds; every other field is equal.
pub trait Agrees {
    fn agrees(&self, have: &Self) -> bool;
}

/// The matching rule: the row is what `want` asks, so nothing is written. Its fields agree, it
/// is not disabled, it carries exactly the spec's tags, and a route's or plugin's row hangs on
/// the spec's service (`service_id`: that service's id in Kong) and on nothing narrower.
pub fn matches<S: Spec>(want: &S, have: &Row<S::Fields>, service_id: Option<&str>) -> bool
where
    S::Fields: Agrees,
{
    let linked = want.service().is_none()
        || (service_id.is_some()
            && have.link(LinkKind::Service) == service_id
            && is_service_wide(have));
    linked
        && have
            .fields
            .as_ref()
            .is_some_and(|f| want.fields().agrees(f))
        && have.head.enabled != Some(false)
        && same_tags(want.tags(), &have.head.tags)
}

/// The adoption rule for plugins (the other kinds are taken over by name or address, as a PUT by
/// name is): an untagged plugin of the same name, service-wide on the spec's service, is the
/// spec's — Kong allows one such plugin per service, so writing another would conflict.
pub fn takes_place_of(want: &PluginSpec, have: &Head) -> bool {
    have.name() == Some(want.name()) && is_service_wide(have)
}

/// Neither on a route nor for a consumer.
pub fn is_service_wide(row: &Head) -> bool {
    row.link(LinkKind::Route).is_none() && row.link(LinkKind::Consumer).is_none()
}

fn same_tags(want: &[String], have: &[String]) -> bool {
    let mut w: Vec<&str> = want.iter().map(String::as_str).collect();
    let mut h: Vec<&str> = have.iter().map(String::as_str).collect();
    w.sort();
    h.sort();
    w == h
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

impl Agrees for ServiceFields {
    fn agrees(&self, have: &Self) -> bool {
        self == have
    }
}

impl Agrees for RouteFields {
    fn agrees(&self, have: &Self) -> bool {
        self == have
    }
}

impl Agrees for TargetFields {
    fn agrees(&self, have: &Self) -> bool {
        self == have
    }
}

impl Agrees for UpstreamFields {
    fn agrees(&self, have: &Self) -> bool {
        self.algorithm == have.algorithm && contains(&have.healthchecks, &self.healthchecks)
    }
}

impl Agrees for PluginFields {
    fn agrees(&self, have: &Self) -> bool {
        self.name == have.name
            && self.enabled == have.enabled
            && (!self.config.is_object() || contains(&have.config, &self.config))
    }
}

macro_rules! spec {
    ($spec:ty, $fields:ty $(, $service:ident)?) => {
        impl Spec for $spec {
            type Fields = $fields;
            fn fields(&self) -> &$fields {
                &self.fields
            }
            fn tags(&self) -> &[String] {
                &self.tags
            }
            $(fn service(&self) -> Option<&str> {
                Some(&self.$service)
            })?
        }
    };
}

spec!(ServiceSpec, ServiceFields);
spec!(UpstreamSpec, UpstreamFields);
spec!(TargetSpec, TargetFields);
spec!(RouteSpec, RouteFields, service);
spec!(PluginSpec, PluginFields, service);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::{plugin_instance_name, Body, ServiceUrl};
    use serde_json::json;

    fn plugin() -> PluginSpec {
        PluginSpec {
            instance_name: plugin_instance_name("agent-a", "cors"),
            service: "agent-a".into(),
            fields: PluginFields {
                name: "cors".into(),
                config: json!({"origins": ["*"]}).into(),
                enabled: true,
            },
            tags: vec!["own".into()],
        }
    }

    /// What Kong answers for a plugin written from `spec`: its body, with ids and defaults.
    fn as_kong(spec: &PluginSpec) -> Value {
        let mut v = spec.body();
        v["id"] = json!("p1");
        v["service"] = json!({"id": "s1"});
        v["route"] = Value::Null;
        v["consumer"] = Value::Null;
        v["config"]["max_age"] = Value::Null;
        v
    }

    #[test]
    fn a_plugin_kong_holds_as_written_matches_and_each_difference_does_not() {
        let want = plugin();
        let row = |v: &Value| Row::<PluginFields>::read(v);
        assert!(matches(&want, &row(&as_kong(&want)), Some("s1")));
        type Change = fn(&mut Value);
        let cases: [(&str, Change); 6] = [
            ("another service", |v| v["service"] = json!({"id": "s2"})),
            ("on a route", |v| v["route"] = json!({"id": "r1"})),
            ("for a consumer", |v| v["consumer"] = json!({"id": "c1"})),
            ("disabled", |v| v["enabled"] = json!(false)),
            ("another config", |v| v["config"]["origins"] = json!(["x"])),
            ("another tag", |v| v["tags"] = json!(["own", "x"])),
        ];
        for (what, change) in cases {
            let mut v = as_kong(&want);
            change(&mut v);
            assert!(
                !matches(&want, &row(&v), Some("s1")),
                "{what} must not match"
            );
        }
        assert!(
            !matches(&want, &row(&as_kong(&want)), None),
            "a service Kong lacks"
        );
    }

    #[test]
    fn a_service_matches_field_by_field() {
        let want = ServiceSpec {
            name: "agent-a".into(),
            fields: ServiceFields::at(ServiceUrl::upstream("agent-a")),
            tags: vec!["own".into()],
        };
        let mut v = want.body();
        v["id"] = json!("s1");
        v["enabled"] = json!(true);
        assert!(matches(&want, &Row::read(&v), None));
        v["read_timeout"] = json!(60000);
        assert!(!matches(&want, &Row::read(&v), None));
    }

    #[test]
    fn only_a_service_wide_plugin_of_the_same_name_takes_a_specs_place() {
        let want = plugin();
        let mut v = as_kong(&want);
        v["tags"] = Value::Null;
        assert!(takes_place_of(&want, &Head::of(&v)));
        v["route"] = json!("r1");
        assert!(!takes_place_of(&want, &Head::of(&v)));
        let mut other = as_kong(&want);
        other["name"] = json!("nasiko-auth");
        assert!(!takes_place_of(&want, &Head::of(&other)));
    }
}
