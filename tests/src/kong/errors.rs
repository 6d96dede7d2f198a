//! Kong 3.4 Admin API error bodies (kong/db/errors.lua + ERRORS_HTTP_CODES), built exactly.

use serde_json::{json, Map, Value};

/// An HTTP answer from the Admin API: status and an optional JSON body (204 has none).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
}

impl Answer {
    pub fn ok(status: u16, body: Value) -> Self {
        Answer {
            status,
            body: Some(body),
        }
    }
    pub fn no_content() -> Self {
        Answer {
            status: 204,
            body: None,
        }
    }
    pub fn message(status: u16, msg: &str) -> Self {
        Answer::ok(status, json!({ "message": msg }))
    }
    pub fn not_found() -> Self {
        Answer::message(404, "Not found")
    }
    pub fn method_not_allowed() -> Self {
        Answer::message(405, "Method not allowed")
    }
}

/// Field errors collected during validation: `fields` of a schema violation.
/// Values are a string, an array (per element, null for valid ones), or a nested object.
#[derive(Debug, Default, Clone)]
pub struct FieldErrors {
    pub entity: Vec<String>,
    pub fields: Map<String, Value>,
}

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.entity.is_empty() && self.fields.is_empty()
    }
    pub fn field(&mut self, name: &str, msg: impl Into<String>) {
        self.fields
            .entry(name.to_string())
            .or_insert(Value::String(msg.into()));
    }
    pub fn entity(&mut self, msg: impl Into<String>) {
        self.entity.push(msg.into());
    }
    pub fn nested(&mut self, name: &str, value: Value) {
        self.fields.entry(name.to_string()).or_insert(value);
    }

    /// The 400 code-2 answer: message lists @entity first, then fields sorted by name.
    pub fn into_answer(self) -> Answer {
        let mut parts: Vec<String> = self.entity.clone();
        let mut keys: Vec<&String> = self.fields.keys().collect();
        keys.sort();
        for k in keys {
            flatten(k, &self.fields[k], &mut parts);
        }
        let message = if parts.len() == 1 {
            format!("schema violation ({})", parts[0])
        } else {
            format!("{} schema violations ({})", parts.len(), parts.join("; "))
        };
        let mut fields = self.fields;
        if !self.entity.is_empty() {
            fields.insert("@entity".into(), json!(self.entity));
        }
        Answer::ok(
            400,
            json!({"code": 2, "name": "schema violation", "message": message, "fields": fields}),
        )
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(format!("{prefix}: {s}")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_null() {
                    flatten(&format!("{prefix}.{}", i + 1), item, out);
                }
            }
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                if k == "@entity" {
                    if let Value::Array(msgs) = &m[k] {
                        for msg in msgs {
                            if let Some(s) = msg.as_str() {
                                out.push(format!("{prefix}: {s}"));
                            }
                        }
                    }
                    continue;
                }
                flatten(&format!("{prefix}.{k}"), &m[k], out);
            }
        }
        _ => {}
    }
}

/// Lua `pl.pretty`-style rendering of a key table, keys sorted: `{name="x"}`, `{id="…"}`.
pub fn pretty(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => format!("\"{s}\""),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}={}", pretty(&m[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => other.to_string(),
    }
}

pub fn unique_violation(key: Value) -> Answer {
    Answer::ok(
        409,
        json!({"code": 5, "name": "unique constraint violation",
               "message": format!("UNIQUE violation detected on '{}'", pretty(&key)),
               "fields": key}),
    )
}

pub fn primary_key_violation(id: &str) -> Answer {
    Answer::ok(
        400,
        json!({"code": 3, "name": "primary key violation",
               "message": format!("primary key violation on key '{{id=\"{id}\"}}'"),
               "fields": {"id": id}}),
    )
}

pub fn fk_unknown_id(field: &str, entity: &str, id: &str) -> Answer {
    Answer::ok(
        400,
        json!({"code": 4, "name": "foreign key violation",
               "message": format!("the foreign key '{{id=\"{id}\"}}' does not reference an existing '{entity}' entity."),
               "fields": {field: {"id": id}}}),
    )
}

pub fn fk_referenced_by(child: &str, parent: &str) -> Answer {
    Answer::ok(
        400,
        json!({"code": 4, "name": "foreign key violation",
               "message": format!("an existing '{child}' entity references this '{parent}' entity"),
               "fields": {"@referenced_by": child}}),
    )
}

pub fn fk_unresolved(field: &str, key: &str, value: &str, entity: &str) -> Answer {
    let detail = format!(
        "the foreign key cannot be resolved with '{{{key}=\"{value}\"}}' for an existing '{entity}' entity"
    );
    Answer::ok(
        400,
        json!({"code": 13, "name": "foreign keys unresolved",
               "message": format!("foreign key unresolved ({field}.{key}: {detail})"),
               "fields": {field: {key: detail}}}),
    )
}

pub fn dao_not_found(key: &str, value: &str) -> Answer {
    let message = if key == "id" {
        format!("could not find the entity with primary key '{{id=\"{value}\"}}'")
    } else {
        format!("could not find the entity with '{{{key}=\"{value}\"}}'")
    };
    Answer::ok(
        404,
        json!({"code": 6, "name": "not found", "message": message, "fields": {key: value}}),
    )
}

pub fn invalid_unique(field: &str, value: &str) -> Answer {
    Answer::ok(
        400,
        json!({"code": 10, "name": format!("invalid unique {field}"),
               "message": format!("invalid value '{value}': the only accepted ascii characters are alphanumerics or ., -, _, and ~")}),
    )
}

pub fn invalid_offset(token: &str, why: &str) -> Answer {
    Answer::ok(
        400,
        json!({"code": 7, "name": "invalid offset",
               "message": format!("'{token}' is not a valid offset: {why}")}),
    )
}

pub fn invalid_size(msg: &str) -> Answer {
    Answer::ok(
        400,
        json!({"code": 9, "name": "invalid size", "message": msg}),
    )
}

pub fn invalid_tags_option(why: &str) -> Answer {
    Answer::ok(
        400,
        json!({"code": 11, "name": "invalid options",
               "message": format!("invalid option (tags: {why})"),
               "options": {"tags": why}}),
    )
}
