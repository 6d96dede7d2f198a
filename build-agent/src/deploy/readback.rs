//! The second line of defence: compose's own reading of the file we wrote (`config`, as JSON from
//! compose v2 or YAML from v1) must be the file we wrote. Both are put in one canonical form —
//! only the spellings compose is known to change are undone (defaults it adds, durations and
//! sizes it reformats, names it derives from the project) — and any other difference refuses
//! the deploy before `up`, naming where the readings part. Pure.

use super::model::parse_duration_ms;
use super::refusal::Refusal;
use serde_json::{Map, Value};

/// Parse compose's `config` output: JSON from v2; YAML from v1, read by the strict reader so that
/// a scalar keeps the text compose wrote (PyYAML writes `0o17` plain, which YAML 1.2 would read
/// as the number 15), with plain `true`/`false`/`null` typed.
pub fn parse(output: &str) -> Result<Value, Refusal> {
    if let Ok(v) = serde_json::from_str(output) {
        return Ok(v);
    }
    if let Ok(n) = super::yaml::read(output) {
        return Ok(to_json(&n));
    }
    serde_yaml_ng::from_str::<Value>(output).map_err(|e| {
        Refusal(format!(
            "cannot read compose's own reading of the file ({e}); the deploy is refused"
        ))
    })
}

fn to_json(n: &super::yaml::Node) -> Value {
    use super::yaml::Kind;
    match &n.kind {
        Kind::Null => Value::Null,
        Kind::Scalar { text, .. } => n
            .as_bool()
            .map_or_else(|| Value::String(text.clone()), Value::Bool),
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

/// A value for a message: at most 200 characters.
fn short(v: String) -> String {
    if v.chars().count() <= 200 {
        v
    } else {
        v.chars().take(200).collect::<String>() + "…"
    }
}

/// Refuse unless compose's reading `theirs` of `ours` is the same, for compose project `project`.
pub fn compare(ours: &Value, theirs: &Value, project: &str) -> Result<(), Refusal> {
    let (a, b) = (canon(ours, project), canon(theirs, project));
    match first_difference(&a, &b, String::new()) {
        None => Ok(()),
        Some((path, x, y)) => Err(Refusal(format!(
            "compose reads the file the build agent wrote differently at {path}: written {}, read {}; the deploy is refused (report this: the policy and compose disagree)",
            short(x),
            short(y)
        ))),
    }
}

fn first_difference(a: &Value, b: &Value, path: String) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, p),
                    (u, v) => Some((p, show(u), show(v))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, format!("{path}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        // a number compose v1 wrote as plain text
        (Value::Number(x), Value::String(y)) | (Value::String(y), Value::Number(x))
            if y.parse::<f64>().ok() == x.as_f64() =>
        {
            None
        }
        _ if a == b => None,
        _ => Some((path, a.to_string(), b.to_string())),
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or("nothing".into(), |v| v.to_string())
}

/// The canonical form of a compose file for the comparison.
pub fn canon(v: &Value, project: &str) -> Value {
    let mut out = Map::new();
    let Some(top) = v.as_object() else {
        return v.clone();
    };
    for (k, v) in top {
        match k.as_str() {
            "name" | "version" => {}
            "networks" | "volumes" => {
                let mut m = Map::new();
                for (key, def) in v.as_object().into_iter().flatten() {
                    let mut d = def.as_object().cloned().unwrap_or_default();
                    if d.get("ipam")
                        .is_some_and(|i| i.as_object().is_some_and(Map::is_empty))
                    {
                        d.remove("ipam");
                    }
                    if d.get("name").and_then(Value::as_str) == Some(&format!("{project}_{key}")) {
                        d.remove("name");
                    }
                    if d.get("external") == Some(&Value::Bool(false)) {
                        d.remove("external");
                    }
                    if key == "default" && d.is_empty() {
                        continue;
                    }
                    m.insert(key.clone(), Value::Object(d));
                }
                if !m.is_empty() {
                    out.insert(k.clone(), Value::Object(m));
                }
            }
            "services" => {
                let mut m = Map::new();
                for (key, svc) in v.as_object().into_iter().flatten() {
                    m.insert(key.clone(), canon_service(svc));
                }
                out.insert(k.clone(), Value::Object(m));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn number_of(v: &Value) -> Value {
    match v {
        Value::String(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(v.clone(), Value::Number),
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(v.clone(), Value::Number),
        _ => v.clone(),
    }
}

fn duration_of(v: &Value) -> Value {
    match v.as_str().and_then(parse_duration_ms) {
        Some(ms) => Value::from(ms),
        None => v.clone(),
    }
}

/// A `ports:` entry as the short string (`127.0.0.1::5000`, `127.0.0.1::9000/udp`).
fn port_of(v: &Value) -> Value {
    let Some(m) = v.as_object() else {
        return match v.as_str() {
            Some(s) => Value::String(s.strip_suffix("/tcp").unwrap_or(s).to_string()),
            None => v.clone(),
        };
    };
    let s = |k: &str| match m.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let proto = match s("protocol").as_str() {
        "" | "tcp" => String::new(),
        p => format!("/{p}"),
    };
    Value::String(format!(
        "{}:{}:{}{proto}",
        s("host_ip"),
        s("published"),
        s("target")
    ))
}

fn canon_service(svc: &Value) -> Value {
    let mut out = Map::new();
    for (k, v) in svc.as_object().into_iter().flatten() {
        if v.is_null() {
            continue;
        }
        let v = match k.as_str() {
            "mem_limit" | "memswap_limit" | "mem_reservation" | "cpus" | "pids_limit"
            | "cpu_shares" => number_of(v),
            "stop_grace_period" => duration_of(v),
            "healthcheck" => {
                let mut h = v.as_object().cloned().unwrap_or_default();
                for d in ["interval", "timeout", "start_period"] {
                    if let Some(x) = h.get(d).map(duration_of) {
                        h.insert(d.into(), x);
                    }
                }
                Value::Object(h)
            }
            "depends_on" => {
                let mut d = v.as_object().cloned().unwrap_or_default();
                for c in d.values_mut() {
                    if let Some(o) = c.as_object_mut() {
                        if o.get("required") == Some(&Value::Bool(true)) {
                            o.remove("required");
                        }
                    }
                }
                Value::Object(d)
            }
            "networks" => {
                let mut n = v.as_object().cloned().unwrap_or_default();
                for c in n.values_mut() {
                    if c.is_null() {
                        *c = Value::Object(Map::new());
                    }
                }
                Value::Object(n)
            }
            "ports" => Value::Array(v.as_array().into_iter().flatten().map(port_of).collect()),
            "volumes" => Value::Array(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        let mut m = m.as_object().cloned().unwrap_or_default();
                        if let Some(t) = m.get_mut("tmpfs").and_then(Value::as_object_mut) {
                            if let Some(sz) = t.get("size").map(number_of) {
                                t.insert("size".into(), sz);
                            }
                        }
                        Value::Object(m)
                    })
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compose_v2_spellings_are_the_same_file_and_anything_else_is_refused() {
        let ours = json!({"services": {"agent-x": {"image": "i", "mem_limit": 536870912, "cpus": 0.25,
            "healthcheck": {"test": ["CMD", "true"], "interval": "2000ms"}, "networks": {"n": {}},
            "depends_on": {"db": {"condition": "service_started"}}, "ports": ["127.0.0.1::5000"]}},
            "networks": {"n": {"external": true, "name": "n"}}, "volumes": {"v": {}}});
        let theirs = json!({"name": "agent-x", "services": {"agent-x": {"image": "i", "mem_limit": "536870912",
            "cpus": 0.25, "command": null, "entrypoint": null,
            "healthcheck": {"test": ["CMD", "true"], "interval": "2s"}, "networks": {"n": null},
            "depends_on": {"db": {"condition": "service_started", "required": true}},
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 5000, "protocol": "tcp"}]}},
            "networks": {"n": {"external": true, "name": "n", "ipam": {}}, "default": {"name": "agent-x_default", "ipam": {}}},
            "volumes": {"v": {"name": "agent-x_v"}}});
        let mut theirs = theirs;
        theirs["services"]["agent-x"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("mode");
        compare(&ours, &theirs, "agent-x").unwrap();

        let mut bind = theirs.clone();
        bind["services"]["agent-x"]["volumes"] =
            json!([{"type": "bind", "source": "/", "target": "/host"}]);
        let e = compare(&ours, &bind, "agent-x").unwrap_err().0;
        assert!(
            e.contains("at services.agent-x.volumes: written nothing"),
            "{e}"
        );
        let mut renamed = theirs.clone();
        renamed["volumes"]["v"]["name"] = json!("nasiko_nasiko-secrets");
        let e = compare(&ours, &renamed, "agent-x").unwrap_err().0;
        assert!(e.contains("volumes.v.name"), "{e}");
        let mut priv_ = theirs;
        priv_["services"]["agent-x"]["privileged"] = json!(true);
        assert!(compare(&ours, &priv_, "agent-x")
            .unwrap_err()
            .0
            .contains("privileged"));
    }
}
