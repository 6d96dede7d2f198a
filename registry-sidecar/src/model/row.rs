//! What Kong returns: each entity read once, by the client, into a typed row — the head every
//! kind shares (id, name, tags, links) and the kind's own `*Fields`, the struct its spec writes.
//! A row whose fields do not read (a type Kong changed, a value we never write) keeps its head:
//! it can still be matched by name, overwritten or deleted, and it never matches a spec.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A link to another entity: Kong's Admin API writes `{"id": …}`, its declarative export the
/// id alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link(pub String);

impl Link {
    fn of(v: &Value) -> Option<Link> {
        match v {
            Value::String(id) => Some(Link(id.clone())),
            Value::Object(o) => o
                .get("id")
                .and_then(Value::as_str)
                .map(|id| Link(id.into())),
            _ => None,
        }
    }
}

/// What every kind of entity has, as far as it has it. Read field by field: a field of another
/// shape is absent, and the rest still reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Head {
    pub id: String,
    pub name: Option<String>,
    /// A plugin's PUT-able name.
    pub instance_name: Option<String>,
    pub tags: Vec<String>,
    pub enabled: Option<bool>,
    pub service: Option<Link>,
    pub route: Option<Link>,
    pub consumer: Option<Link>,
    pub upstream: Option<Link>,
    /// A target's address.
    pub target: Option<String>,
}

/// One entity as Kong holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<F> {
    pub head: Head,
    /// None when they do not read as `F`.
    pub fields: Option<F>,
}

impl<F: DeserializeOwned> Row<F> {
    pub fn read(v: &Value) -> Row<F> {
        Row {
            head: Head::of(v),
            fields: F::deserialize(v).ok(),
        }
    }
}

impl<F> std::ops::Deref for Row<F> {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

impl Head {
    /// The head of any entity.
    pub fn of(v: &Value) -> Head {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let tags = v.get("tags").and_then(Value::as_array);
        Head {
            id: text("id").unwrap_or_default(),
            name: text("name"),
            instance_name: text("instance_name"),
            tags: tags
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            enabled: v.get("enabled").and_then(Value::as_bool),
            service: v.get("service").and_then(Link::of),
            route: v.get("route").and_then(Link::of),
            consumer: v.get("consumer").and_then(Link::of),
            upstream: v.get("upstream").and_then(Link::of),
            target: text("target"),
        }
    }

    pub fn id(&self) -> Option<&str> {
        Some(self.id.as_str()).filter(|id| !id.is_empty())
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Its link to a service, a route, a consumer or an upstream, by id.
    pub fn link(&self, kind: LinkKind) -> Option<&str> {
        let l = match kind {
            LinkKind::Service => &self.service,
            LinkKind::Route => &self.route,
            LinkKind::Consumer => &self.consumer,
            LinkKind::Upstream => &self.upstream,
        };
        l.as_ref().map(|l| l.0.as_str())
    }
}

/// The links an entity can have to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Service,
    Route,
    Consumer,
    Upstream,
}

impl LinkKind {
    pub const ALL: [LinkKind; 4] = [
        LinkKind::Service,
        LinkKind::Route,
        LinkKind::Consumer,
        LinkKind::Upstream,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::{ServiceFields, TargetFields};
    use serde_json::json;

    #[test]
    fn a_row_reads_its_head_and_fields_from_the_admin_api_and_the_export_alike() {
        let api = json!({"id": "s1", "name": "agent-a", "tags": null, "enabled": true,
            "protocol": "http", "host": "agent-a", "port": 80, "path": null,
            "connect_timeout": 60000, "read_timeout": 300000, "write_timeout": 300000,
            "retries": 3, "created_at": 1});
        let r: Row<ServiceFields> = Row::read(&api);
        assert_eq!(
            (r.id(), r.name(), r.head.tags.len()),
            (Some("s1"), Some("agent-a"), 0)
        );
        assert_eq!(r.fields.unwrap().host, "agent-a");

        let export = json!({"id": "t1", "target": "10.0.0.2:5000", "weight": 100,
            "upstream": "u1", "tags": ["own"]});
        let api = json!({"id": "t1", "target": "10.0.0.2:5000", "weight": 100,
            "upstream": {"id": "u1"}, "tags": ["own"]});
        for v in [export, api] {
            let t: Row<TargetFields> = Row::read(&v);
            assert_eq!(t.link(LinkKind::Upstream), Some("u1"));
            assert!(t.has_tag("own"));
            assert_eq!(t.fields, Some(TargetFields { weight: 100 }));
        }
    }

    #[test]
    fn a_row_whose_fields_do_not_read_keeps_its_head() {
        let v = json!({"id": "s1", "name": "agent-a", "port": "eighty", "tags": ["own"]});
        let r: Row<ServiceFields> = Row::read(&v);
        assert_eq!((r.id(), r.name()), (Some("s1"), Some("agent-a")));
        assert!(r.fields.is_none());
        let odd: Row<ServiceFields> =
            Row::read(&json!({"id": 7, "name": "agent-a", "tags": ["own", 1], "route": [1]}));
        assert_eq!(
            (odd.id(), odd.name()),
            (None, Some("agent-a")),
            "each field on its own"
        );
        assert_eq!((odd.head.tags.len(), odd.link(LinkKind::Route)), (1, None));
    }
}
