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

/// One field's part of `schema_violation`'s message (`kong/db/errors.lua`): `field: msg` for a
/// string; for a table, one `field.sub: …` per key (`sorted_keys`), where a sub-value that is a
/// table is written whole by `pl.pretty.write` (`lua_pretty`).
fn flatten(field: &str, v: &Value, out: &mut Vec<String>) {
    let subs: Vec<(String, &Value)> = match v {
        Value::String(s) => {
            out.push(format!("{field}: {s}"));
            return;
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter(|(_, x)| !x.is_null())
            .map(|(i, x)| ((i + 1).to_string(), x))
            .collect(),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.into_iter().map(|k| (k.clone(), &m[k])).collect()
        }
        _ => return,
    };
    for (sub, value) in subs {
        let shown = match value {
            Value::String(s) => s.clone(),
            other => lua_pretty(other),
        };
        out.push(format!("{field}.{sub}: {shown}"));
    }
}

/// `pl.pretty.write(t)` (Penlight, `pl/pretty.lua`) for an error table: one item per line,
/// two-space indent, the array part (from 1, up to the first gap) without keys, then the other
/// keys as `key = …` (`[n]` for a number, `["…"]` for a string that is no identifier). Lua's
/// `pairs` order is unspecified; the emulator sorts the keys, which is Kong's order whenever a
/// table has one such key.
pub fn lua_pretty(v: &Value) -> String {
    let mut lines: Vec<String> = Vec::new();
    write_lua(v, "", "  ", "", &mut lines);
    if let Some(last) = lines.last_mut() {
        if last.ends_with(',') {
            last.pop();
        }
    }
    lines.join("\n")
}

/// `writeit`: `lead` is what the line already holds (the key), `old` the closing indent.
fn write_lua(v: &Value, old: &str, indent: &str, lead: &str, lines: &mut Vec<String>) {
    let entries: Vec<(Option<String>, &Value)> = match v {
        Value::Array(a) => {
            let run = a.iter().take_while(|x| !x.is_null()).count();
            let mut e: Vec<(Option<String>, &Value)> = a[..run].iter().map(|x| (None, x)).collect();
            e.extend(
                a.iter()
                    .enumerate()
                    .skip(run)
                    .filter(|(_, x)| !x.is_null())
                    .map(|(i, x)| (Some(format!("[{}]", i + 1)), x)),
            );
            e
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| {
                    let ident = k
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    let key = if ident {
                        k.clone()
                    } else {
                        format!("[\"{k}\"]")
                    };
                    (Some(key), &m[k])
                })
                .collect()
        }
        Value::String(s) => {
            lines.push(format!("{lead}\"{s}\","));
            return;
        }
        other => {
            lines.push(format!("{lead}{other},"));
            return;
        }
    };
    lines.push(format!("{lead}{{"));
    let deeper = format!("{indent}  ");
    for (key, val) in entries {
        let lead = match key {
            Some(k) => format!("{indent}{k} = "),
            None => indent.to_string(),
        };
        write_lua(val, indent, &deeper, &lead, lines);
    }
    if let Some(last) = lines.last_mut() {
        if last.ends_with(',') {
            last.pop();
        }
    }
    lines.push(format!("{old}}},"));
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

#[cfg(test)]
mod tests {
    use super::lua_pretty;
    use serde_json::json;

    #[test]
    fn lua_pretty_writes_as_penlight_does() {
        assert_eq!(
            lua_pretty(&json!({"healthy": {"successes": "expected an integer"}})),
            "{\n  healthy = {\n    successes = \"expected an integer\"\n  }\n}"
        );
        assert_eq!(
            lua_pretty(&json!(["a", null, "c"])),
            "{\n  \"a\",\n  [3] = \"c\"\n}"
        );
        assert_eq!(
            lua_pretty(&json!({"x-y": "bad"})),
            "{\n  [\"x-y\"] = \"bad\"\n}"
        );
    }
}
