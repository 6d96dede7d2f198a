//! Kong 3.4 entity schemas (services, routes, plugins, upstreams, targets): defaults, type checks
//! and entity checks, turning a request body into a stored row or a schema violation
//! (kong-admin-3.4.md §1–3; upstreams and targets: `UPSTREAMS.md`).

use super::errors::FieldErrors;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Services,
    Routes,
    Plugins,
    /// `kong/db/schema/entities/consumers.lua`: `username` and `custom_id`, both unique.
    Consumers,
    Upstreams,
    /// Only under `/upstreams/{upstream}/targets` (`GET /targets` is a 404 in 3.4).
    Targets,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Services,
        Kind::Routes,
        Kind::Plugins,
        Kind::Consumers,
        Kind::Upstreams,
        Kind::Targets,
    ];
    pub fn from_segment(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Routes => "routes",
            Kind::Plugins => "plugins",
            Kind::Consumers => "consumers",
            Kind::Upstreams => "upstreams",
            Kind::Targets => "targets",
        }
    }
    /// The field a non-UUID path segment is matched against.
    pub fn endpoint_key(self) -> &'static str {
        match self {
            Kind::Plugins => "instance_name",
            Kind::Consumers => "username",
            Kind::Targets => "target",
            _ => "name",
        }
    }
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Name,
    Host,
    SvcPath,
    Int(i64, i64),
    Bool,
    OneOf(&'static [&'static str]),
    /// An integer from a list (`one_of` on an integer field).
    IntOneOf(&'static [i64]),
    /// A set (de-duplicated) of strings, each element checked by the inner rule.
    Set(Elem),
    /// An array (kept as is) of strings.
    Array(Elem),
    Tags,
    Headers,
    Foreign,
    UuidArray,
    Config,
    /// An upstream's name: a hostname, no IP address, no port.
    UpstreamName,
    /// A target: `host[:port]` or an IP address (with a port), as `utils.normalize_ip` parses.
    Target,
    /// The upstream `healthchecks` record: shaped like `healthchecks_defaults()`.
    Healthchecks,
    /// A field the server owns: id / created_at / updated_at.
    Auto,
}

#[derive(Clone, Copy)]
enum Elem {
    Any,
    Protocol,
    Method,
    RoutePath,
    CorsMethod,
    Host,
}

struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
    default: fn() -> Value,
}

const fn f(name: &'static str, ty: Ty, required: bool, default: fn() -> Value) -> Field {
    Field {
        name,
        ty,
        required,
        default,
    }
}
fn null() -> Value {
    Value::Null
}

const SERVICE_PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];
const ROUTE_PROTOCOLS: &[&str] = SERVICE_PROTOCOLS;
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

const SERVICE_FIELDS: &[Field] = &[
    f("id", Ty::Auto, false, null),
    f("created_at", Ty::Auto, false, null),
    f("updated_at", Ty::Auto, false, null),
    f("name", Ty::Name, false, null),
    f("retries", Ty::Int(0, 32767), false, || json!(5)),
    f("protocol", Ty::OneOf(SERVICE_PROTOCOLS), true, || {
        json!("http")
    }),
    f("host", Ty::Host, true, null),
    f("port", Ty::Int(0, 65535), true, || json!(80)),
    f("path", Ty::SvcPath, false, null),
    f("connect_timeout", Ty::Int(1, 2147483646), false, || {
        json!(60000)
    }),
    f("write_timeout", Ty::Int(1, 2147483646), false, || {
        json!(60000)
    }),
    f("read_timeout", Ty::Int(1, 2147483646), false, || {
        json!(60000)
    }),
    f("tags", Ty::Tags, false, null),
    f("client_certificate", Ty::Foreign, false, null),
    f("tls_verify", Ty::Bool, false, null),
    f("tls_verify_depth", Ty::Int(0, 64), false, null),
    f("ca_certificates", Ty::UuidArray, false, null),
    f("enabled", Ty::Bool, true, || json!(true)),
];

const ROUTE_FIELDS: &[Field] = &[
    f("id", Ty::Auto, false, null),
    f("created_at", Ty::Auto, false, null),
    f("updated_at", Ty::Auto, false, null),
    f("name", Ty::Name, false, null),
    f("protocols", Ty::Set(Elem::Protocol), true, || {
        json!(["http", "https"])
    }),
    f("methods", Ty::Set(Elem::Method), false, null),
    f("hosts", Ty::Array(Elem::Host), false, null),
    f("headers", Ty::Headers, false, null),
    f("paths", Ty::Array(Elem::RoutePath), false, null),
    f("snis", Ty::Set(Elem::Any), false, null),
    f("sources", Ty::Set(Elem::Any), false, null),
    f("destinations", Ty::Set(Elem::Any), false, null),
    f("regex_priority", Ty::Int(i64::MIN, i64::MAX), false, || {
        json!(0)
    }),
    f("strip_path", Ty::Bool, false, || json!(true)),
    f("path_handling", Ty::OneOf(&["v0", "v1"]), false, || {
        json!("v0")
    }),
    f("preserve_host", Ty::Bool, false, || json!(false)),
    f("request_buffering", Ty::Bool, false, || json!(true)),
    f("response_buffering", Ty::Bool, false, || json!(true)),
    // `one_of = { 426, 301, 302, 307, 308 }` (`entities/routes.lua`)
    f(
        "https_redirect_status_code",
        Ty::IntOneOf(&[426, 301, 302, 307, 308]),
        false,
        || json!(426),
    ),
    f("tags", Ty::Tags, false, null),
    f("service", Ty::Foreign, false, null),
];

const PLUGIN_FIELDS: &[Field] = &[
    f("id", Ty::Auto, false, null),
    f("name", Ty::Str, true, null),
    f("instance_name", Ty::Name, false, null),
    f("created_at", Ty::Auto, false, null),
    f("updated_at", Ty::Auto, false, null),
    f("route", Ty::Foreign, false, null),
    f("service", Ty::Foreign, false, null),
    f("consumer", Ty::Foreign, false, null),
    f("config", Ty::Config, false, null),
    f("protocols", Ty::Set(Elem::Protocol), true, || {
        json!(["grpc", "grpcs", "http", "https"])
    }),
    f("enabled", Ty::Bool, false, || json!(true)),
    f("tags", Ty::Tags, false, null),
];

const HASH_ON: &[&str] = &[
    "none",
    "consumer",
    "ip",
    "header",
    "cookie",
    "path",
    "query_arg",
    "uri_capture",
];

const UPSTREAM_FIELDS: &[Field] = &[
    f("id", Ty::Auto, false, null),
    f("created_at", Ty::Auto, false, null),
    f("name", Ty::UpstreamName, true, null),
    f("updated_at", Ty::Auto, false, null),
    f(
        "algorithm",
        Ty::OneOf(&[
            "consistent-hashing",
            "least-connections",
            "round-robin",
            "latency",
        ]),
        false,
        || json!("round-robin"),
    ),
    f("hash_on", Ty::OneOf(HASH_ON), false, || json!("none")),
    f("hash_fallback", Ty::OneOf(HASH_ON), false, || json!("none")),
    f("hash_on_header", Ty::Str, false, null),
    f("hash_fallback_header", Ty::Str, false, null),
    f("hash_on_cookie", Ty::Str, false, null),
    f("hash_on_cookie_path", Ty::SvcPath, false, || json!("/")),
    f("hash_on_query_arg", Ty::Str, false, null),
    f("hash_fallback_query_arg", Ty::Str, false, null),
    f("hash_on_uri_capture", Ty::Str, false, null),
    f("hash_fallback_uri_capture", Ty::Str, false, null),
    f("slots", Ty::Int(10, 65536), false, || json!(10000)),
    f(
        "healthchecks",
        Ty::Healthchecks,
        false,
        healthchecks_defaults,
    ),
    f("tags", Ty::Tags, false, null),
    f("host_header", Ty::Str, false, null),
    f("client_certificate", Ty::Foreign, false, null),
    f("use_srv_name", Ty::Bool, false, || json!(false)),
];

const CONSUMER_FIELDS: &[Field] = &[
    f("id", Ty::Auto, false, null),
    f("created_at", Ty::Auto, false, null),
    f("updated_at", Ty::Auto, false, null),
    f("username", Ty::Str, false, null),
    f("custom_id", Ty::Str, false, null),
    f("tags", Ty::Tags, false, null),
];

const TARGET_FIELDS: &[Field] = &[
    f("id", Ty::Auto, false, null),
    f("created_at", Ty::Auto, false, null),
    f("updated_at", Ty::Auto, false, null),
    f("upstream", Ty::Foreign, true, null),
    f("target", Ty::Target, true, null),
    f("weight", Ty::Int(0, 65535), false, || json!(100)),
    f("tags", Ty::Tags, false, null),
];

/// An upstream's `healthchecks` when none are given: every check off (`entities/upstreams.lua`).
pub fn healthchecks_defaults() -> Value {
    json!({
        "active": {
            "type": "http", "timeout": 1, "concurrency": 10, "http_path": "/",
            "https_sni": null, "https_verify_certificate": true, "headers": null,
            "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
            "unhealthy": {"interval": 0, "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
                          "tcp_failures": 0, "timeouts": 0, "http_failures": 0}
        },
        "passive": {
            "type": "http",
            "healthy": {"http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                          300, 301, 302, 303, 304, 305, 306, 307, 308],
                        "successes": 0},
            "unhealthy": {"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0,
                          "http_failures": 0}
        },
        "threshold": 0
    })
}

/// Check a `healthchecks` input against the record's shape (unknown fields, types, ranges) and
/// fill what it leaves out from `base` (the defaults on create, the stored record on update).
pub fn check_healthchecks(base: &Value, given: &Value, path: &str) -> Result<Value, Value> {
    let (Some(b), Some(g)) = (base.as_object(), given.as_object()) else {
        return Err(json!("expected a record"));
    };
    let mut out = b.clone();
    let mut errs = Map::new();
    for (k, v) in g {
        let Some(def) = b.get(k) else {
            errs.insert(k.clone(), json!("unknown field"));
            continue;
        };
        let here = format!("{path}.{k}");
        let checked = if v.is_null() {
            Ok(Value::Null)
        } else {
            match k.as_str() {
                "active" | "passive" | "healthy" | "unhealthy" => check_healthchecks(def, v, &here),
                "type" => match v.as_str() {
                    Some(t) if ["tcp", "http", "https", "grpc", "grpcs"].contains(&t) => {
                        Ok(v.clone())
                    }
                    _ => Err(json!("expected one of: tcp, http, https, grpc, grpcs")),
                },
                // `http_statuses` (`entities/upstreams.lua`): an array of integers
                // `between = { 100, 999 }`, each error at its element
                "http_statuses" => match v.as_array() {
                    Some(a) => {
                        let errs: Vec<Value> = a
                            .iter()
                            .map(|x| int_between(x, 100, 999).err().unwrap_or(Value::Null))
                            .collect();
                        if errs.iter().all(Value::is_null) {
                            Ok(v.clone())
                        } else {
                            Err(Value::Array(errs))
                        }
                    }
                    None => Err(json!("expected an array")),
                },
                "successes" | "tcp_failures" | "timeouts" | "http_failures" => {
                    int_between(v, 0, 255)
                }
                "concurrency" => int_between(v, 1, 2_147_483_648),
                "timeout" | "interval" => num_between(v, 0.0, 65535.0),
                "threshold" => num_between(v, 0.0, 100.0),
                "https_verify_certificate" => {
                    if v.is_boolean() {
                        Ok(v.clone())
                    } else {
                        Err(json!("expected a boolean"))
                    }
                }
                "http_path" => match v.as_str() {
                    Some(p) => check_service_path(p)
                        .map(|_| v.clone())
                        .map_err(|e| json!(e)),
                    None => Err(json!("expected a string")),
                },
                _ => Ok(v.clone()),
            }
        };
        match checked {
            Ok(x) => {
                out.insert(k.clone(), x);
            }
            Err(e) => {
                errs.insert(k.clone(), e);
            }
        }
    }
    if errs.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(Value::Object(errs))
    }
}

fn int_between(v: &Value, min: i64, max: i64) -> Result<Value, Value> {
    match v.as_i64().filter(|_| v.is_i64() || v.is_u64()) {
        Some(n) if n >= min && n <= max => Ok(v.clone()),
        Some(_) => Err(json!(format!("value should be between {min} and {max}"))),
        None => Err(json!("expected an integer")),
    }
}

fn num_between(v: &Value, min: f64, max: f64) -> Result<Value, Value> {
    match v.as_f64() {
        Some(n) if n >= min && n <= max => Ok(v.clone()),
        Some(_) => Err(json!(format!("value should be between {min} and {max}"))),
        None => Err(json!("expected a number")),
    }
}

/// `utils.normalize_ip` in short: `host`, `host:port`, an IPv4 address (with a port) or a
/// bracketed IPv6 one. Some((host, port, is_name)).
pub fn parse_host_port(s: &str) -> Option<(String, Option<u16>, bool)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{ip}]"), port, false));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((format!("[{s}]"), None, false));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (s, None),
    };
    let is_ip = host.parse::<std::net::Ipv4Addr>().is_ok();
    let name_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    (is_ip || name_ok).then(|| (host.to_string(), port, !is_ip))
}

/// A target as Kong stores it: `host:port`, port 8000 when none is given (`dao/targets.lua`).
pub fn normalize_target(s: &str) -> Option<String> {
    let (host, port, _) = parse_host_port(s)?;
    Some(format!("{host}:{}", port.unwrap_or(8000)))
}

fn check_upstream_name(s: &str) -> Result<(), String> {
    match parse_host_port(s) {
        None => Err(format!("Invalid name ('{s}'); must be a valid hostname")),
        Some((_, _, false)) => Err(format!("Invalid name ('{s}'); no ip addresses allowed")),
        Some((_, Some(_), _)) => Err(format!("Invalid name ('{s}'); no port allowed")),
        Some(_) => Ok(()),
    }
}

fn fields_of(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Services => SERVICE_FIELDS,
        Kind::Routes => ROUTE_FIELDS,
        Kind::Plugins => PLUGIN_FIELDS,
        Kind::Consumers => CONSUMER_FIELDS,
        Kind::Upstreams => UPSTREAM_FIELDS,
        Kind::Targets => TARGET_FIELDS,
    }
}

/// Foreign-key fields of a kind and the entity they point at.
pub fn foreign_keys(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Services | Kind::Upstreams | Kind::Consumers => &[],
        Kind::Routes => &[("service", "services")],
        Kind::Targets => &[("upstream", "upstreams")],
        Kind::Plugins => &[
            ("route", "routes"),
            ("service", "services"),
            ("consumer", "consumers"),
        ],
    }
}

pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `utf8_name`: alphanumerics and `. - _ ~`, or any non-ASCII UTF-8.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c) || !c.is_ascii())
}

pub fn name_error(s: &str) -> String {
    format!("invalid value '{s}': the only accepted ascii characters are alphanumerics or ., -, _, and ~")
}

fn valid_tag(s: &str) -> bool {
    s.chars()
        .all(|c| (c.is_ascii() && !c.is_ascii_control() && c != ',' && c != '/') || !c.is_ascii())
}

fn check_host(h: &str) -> Result<(), String> {
    if let Some((_, port)) = h.rsplit_once(':') {
        if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && !h.contains("::") {
            return Err("must not have a port".into());
        }
    }
    let body = h.strip_suffix('.').unwrap_or(h);
    let chars_ok = h
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    let labels_ok = body.split('.').all(|l| !l.is_empty() && !l.ends_with('-'));
    if chars_ok && labels_ok {
        Ok(())
    } else {
        Err(format!("invalid value: {h}"))
    }
}

const RFC3986: &str = "-._~!$&'()*+,;=:@/%";

fn check_path_chars(p: &str) -> Result<(), String> {
    if !p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || RFC3986.contains(c))
    {
        return Err(format!(
            "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
        ));
    }
    check_percent(p)
}

/// `typedefs.path`'s percent check (`kong/db/schema/typedefs.lua`, `validate_path`): with every
/// valid `%XX` replaced by `___`, a `%` left is an error naming it and the (at most) two
/// characters after it — not the whole path.
fn check_percent(p: &str) -> Result<(), String> {
    let b = p.as_bytes();
    let mut raw = String::with_capacity(p.len());
    let mut i = 0;
    while i < b.len() {
        let valid = b[i] == b'%'
            && b.get(i + 1).is_some_and(|c| c.is_ascii_hexdigit())
            && b.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit());
        if valid {
            raw.push_str("___");
            i += 3;
        } else {
            let ch = p[i..].chars().next().unwrap_or_default();
            raw.push(ch);
            i += ch.len_utf8().max(1);
        }
    }
    match raw.find('%') {
        Some(at) => Err(format!(
            "invalid url-encoded value: '{}'",
            raw[at..].chars().take(3).collect::<String>()
        )),
        None => Ok(()),
    }
}

fn check_service_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("should start with: /".into());
    }
    if p.contains("//") {
        return Err("must not have empty segments".into());
    }
    check_path_chars(p)
}

fn normalize_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let trailing = p.ends_with('/') && p.len() > 1;
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut n = format!("/{}", out.join("/"));
    if trailing && n != "/" {
        n.push('/');
    }
    n
}

/// `typedefs.router_path`: starts with `/` or `~/`, no `//` (both kinds), then
/// `validate_path_with_regexes`: a regex path's percent-encoding and the regex itself; a prefix
/// path's characters and normal form.
fn check_route_path(p: &str) -> Result<(), String> {
    if let Some(re) = p.strip_prefix('~') {
        if !re.starts_with('/') {
            return Err("should start with: / (fixed path) or ~/ (regex path)".into());
        }
        if p.contains("//") {
            return Err("must not have empty segments".into());
        }
        check_percent(p)?;
        let opens = re.matches('(').count();
        let closes = re.matches(')').count();
        if opens != closes {
            return Err(format!(
                "invalid regex: '{re}' (PCRE returned: pcre_compile() failed: missing ) in \"{re}\")"
            ));
        }
        return Ok(());
    }
    if !p.starts_with('/') {
        return Err("should start with: / (fixed path) or ~/ (regex path)".into());
    }
    if p.contains("//") {
        return Err("must not have empty segments".into());
    }
    check_path_chars(p)?;
    let n = normalize_path(p);
    if n != p {
        return Err(format!("non-normalized path, consider use '{n}' instead"));
    }
    Ok(())
}

fn check_elem(e: Elem, v: &Value) -> Result<(), String> {
    let Some(s) = v.as_str() else {
        return Err("expected a string".into());
    };
    if s.is_empty() {
        return Err("length must be at least 1".into());
    }
    match e {
        Elem::Any => Ok(()),
        Elem::Protocol => one_of(s, ROUTE_PROTOCOLS),
        Elem::Method => {
            if s.chars().all(|c| c.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(format!("invalid value: {s}"))
            }
        }
        Elem::CorsMethod => one_of(s, CORS_METHODS),
        Elem::RoutePath => check_route_path(s),
        Elem::Host => {
            let wild = s.matches('*').count();
            if wild > 1 {
                return Err("invalid wildcard: must have at most one wildcard".into());
            }
            if wild == 1 && !(s.starts_with("*.") || s.ends_with(".*")) {
                return Err(
                    "invalid wildcard: must be placed at leftmost or rightmost label".into(),
                );
            }
            Ok(())
        }
    }
}

fn one_of(s: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(format!("expected one of: {}", allowed.join(", ")))
    }
}

/// Check one array/set of strings; returns the (maybe de-duplicated) value or a field error.
fn check_list(v: &Value, elem: Elem, is_set: bool) -> Result<Value, Value> {
    let Some(items) = v.as_array() else {
        return Err(json!(if is_set {
            "expected a set"
        } else {
            "expected an array"
        }));
    };
    let mut errs: Vec<Value> = Vec::new();
    let mut any = false;
    for item in items {
        match check_elem(elem, item) {
            Ok(()) => errs.push(Value::Null),
            Err(e) => {
                any = true;
                errs.push(json!(e))
            }
        }
    }
    if any {
        return Err(Value::Array(errs));
    }
    if is_set {
        let mut out: Vec<Value> = Vec::new();
        for i in items {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
        Ok(Value::Array(out))
    } else {
        Ok(v.clone())
    }
}

/// Type-check one field value. Ok carries the normalized value.
fn check_field(fd: &Field, v: &Value) -> Result<Value, Value> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let s_err = |m: String| Err(json!(m));
    match fd.ty {
        Ty::Auto => Ok(v.clone()),
        Ty::Str
        | Ty::Name
        | Ty::Host
        | Ty::SvcPath
        | Ty::OneOf(_)
        | Ty::UpstreamName
        | Ty::Target => check_string(fd.ty, v),
        Ty::Int(min, max) => int_between(v, min, max),
        Ty::IntOneOf(allowed) => match v.as_i64().filter(|_| v.is_i64() || v.is_u64()) {
            Some(n) if allowed.contains(&n) => Ok(v.clone()),
            Some(_) => {
                let list: Vec<String> = allowed.iter().map(|n| n.to_string()).collect();
                Err(json!(format!("expected one of: {}", list.join(", "))))
            }
            None => Err(json!("expected an integer")),
        },
        Ty::Bool => {
            if v.is_boolean() {
                Ok(v.clone())
            } else {
                s_err("expected a boolean".into())
            }
        }
        Ty::Set(e) => check_list(v, e, true),
        Ty::Array(e) => check_list(v, e, false),
        Ty::Tags => check_tags(v),
        Ty::Headers => check_headers(v),
        Ty::Foreign => {
            if v.is_object() {
                Ok(v.clone())
            } else {
                s_err("expected a record".into())
            }
        }
        Ty::UuidArray => {
            let Some(items) = v.as_array() else {
                return s_err("expected an array".into());
            };
            if items.iter().all(|i| i.as_str().is_some_and(is_uuid)) {
                Ok(v.clone())
            } else {
                s_err("expected a valid UUID".into())
            }
        }
        Ty::Config => {
            if v.is_object() {
                Ok(v.clone())
            } else {
                s_err("expected a record".into())
            }
        }
        Ty::Healthchecks => check_healthchecks(&healthchecks_defaults(), v, "healthchecks"),
    }
}

/// A string-typed field: a non-empty string, with its type's own rule.
fn check_string(ty: Ty, v: &Value) -> Result<Value, Value> {
    let Some(s) = v.as_str() else {
        return Err(json!("expected a string"));
    };
    if s.is_empty() {
        return Err(json!("length must be at least 1"));
    }
    let r = match ty {
        Ty::Name if !valid_name(s) => Err(name_error(s)),
        Ty::Host => check_host(s),
        Ty::SvcPath => check_service_path(s),
        Ty::OneOf(allowed) => one_of(s, allowed),
        Ty::UpstreamName => check_upstream_name(s),
        Ty::Target if normalize_target(s).is_none() => {
            Err("Invalid target; not a valid hostname or ip address".into())
        }
        _ => Ok(()),
    };
    r.map(|_| v.clone()).map_err(|m| json!(m))
}

/// `tags`: a set of printable strings, each error at its element.
fn check_tags(v: &Value) -> Result<Value, Value> {
    let Some(items) = v.as_array() else {
        return Err(json!("expected a set"));
    };
    let mut errs = Vec::new();
    let mut any = false;
    for t in items {
        match t.as_str() {
            Some(s) if !s.is_empty() && valid_tag(s) => errs.push(Value::Null),
            Some(s) => {
                any = true;
                errs.push(json!(format!(
                    "invalid tag '{s}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
                )))
            }
            None => {
                any = true;
                errs.push(json!("expected a string"))
            }
        }
    }
    if any {
        return Err(Value::Array(errs));
    }
    check_list(v, Elem::Any, true)
}

/// A route's `headers`: a map of arrays, without `host`.
fn check_headers(v: &Value) -> Result<Value, Value> {
    let Some(m) = v.as_object() else {
        return Err(json!("expected a map"));
    };
    for (k, vals) in m {
        if k.eq_ignore_ascii_case("host") {
            return Err(json!(
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute"
            ));
        }
        if check_list(vals, Elem::Any, false).is_err() {
            return Err(json!({ k: "expected an array" }));
        }
    }
    Ok(v.clone())
}

/// Validate only the fields present in `input` (PATCH first pass: validation before existence).
pub fn check_partial(kind: Kind, input: &Map<String, Value>) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let fields = fields_of(kind);
    for (k, v) in input {
        if kind == Kind::Services && k == "url" {
            continue;
        }
        match fields.iter().find(|fd| fd.name == k) {
            None => errs.field(k, "unknown field"),
            Some(fd) => {
                if let Err(e) = check_field(fd, v) {
                    errs.nested(k, e);
                }
            }
        }
    }
    errs
}

/// Apply the `url` shorthand of services: writes protocol, host, port and path.
pub fn apply_url_shorthand(input: &mut Map<String, Value>) -> Result<(), FieldErrors> {
    let Some(url) = input.remove("url") else {
        return Ok(());
    };
    let mut errs = FieldErrors::default();
    let Some(url) = url.as_str() else {
        errs.field("url", "expected a string");
        return Err(errs);
    };
    if url.is_empty() {
        errs.field("url", "length must be at least 1");
        return Err(errs);
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r))
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (Some(s.to_ascii_lowercase()), r)
        }
        _ => (None, url),
    };
    let (authority, path) = if scheme.is_some() {
        match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        }
    } else {
        // LuaSocket parses a scheme-less string as a path only.
        ("", Some(rest))
    };
    let authority = authority
        .rsplit_once('@')
        .map(|(_, a)| a)
        .unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h, p.parse::<i64>().ok())
        }
        _ => (authority, None),
    };
    let path = path
        .map(|p| p.split(['?', '#']).next().unwrap_or(""))
        .filter(|p| !p.is_empty());
    let protocol = scheme.unwrap_or_else(|| {
        if port == Some(443) {
            "https".into()
        } else {
            "http".into()
        }
    });
    let port = port.unwrap_or(if protocol == "https" { 443 } else { 80 });
    input.insert("protocol".into(), json!(protocol));
    input.insert(
        "host".into(),
        if host.is_empty() {
            Value::Null
        } else {
            json!(host)
        },
    );
    input.insert("port".into(), json!(port));
    input.insert("path".into(), path.map_or(Value::Null, |p| json!(p)));
    Ok(())
}

/// Full validation of a candidate row: unknown fields, types, defaults, required, entity checks.
/// `available` is the list of plugins the node has. Returns the complete row.
pub fn validate_full(
    kind: Kind,
    mut input: Map<String, Value>,
    available: &[String],
) -> Result<Map<String, Value>, FieldErrors> {
    if kind == Kind::Services {
        apply_url_shorthand(&mut input)?;
    }
    let mut errs = FieldErrors::default();
    let mut row = Map::new();
    for (k, _) in input.iter() {
        if !fields_of(kind).iter().any(|fd| fd.name == k) {
            errs.field(k, "unknown field");
        }
    }
    for fd in fields_of(kind) {
        let given = input.get(fd.name);
        let v = match given {
            None => (fd.default)(),
            Some(v) => match check_field(fd, v) {
                Ok(v) => v,
                Err(e) => {
                    errs.nested(fd.name, e);
                    continue;
                }
            },
        };
        if v.is_null() && fd.required {
            errs.field(fd.name, "required field missing");
        }
        row.insert(fd.name.to_string(), v);
    }
    // route grpc defaults: strip_path defaults to false
    if kind == Kind::Routes && !input.contains_key("strip_path") && is_grpc(&row) {
        row.insert("strip_path".into(), json!(false));
    }
    if errs.is_empty() {
        match kind {
            Kind::Services => service_checks(&row, &mut errs),
            Kind::Routes => route_checks(&row, &mut errs),
            Kind::Plugins => plugin_checks(&mut row, available, &mut errs),
            Kind::Upstreams => upstream_checks(&row, &mut errs),
            // `at_least_one_of = { "custom_id", "username" }` (`Schema.validators`' message)
            Kind::Consumers => {
                if !is_set(row.get("custom_id")) && !is_set(row.get("username")) {
                    errs.entity(
                        "at least one of these fields must be non-empty: 'custom_id', 'username'",
                    );
                }
            }
            Kind::Targets => {
                if let Some(t) = row["target"].as_str().and_then(normalize_target) {
                    row.insert("target".into(), json!(t));
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(row)
    } else {
        Err(errs)
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(_) => true,
    }
}

fn is_grpc(row: &Map<String, Value>) -> bool {
    strs(&row["protocols"])
        .iter()
        .any(|p| *p == "grpc" || *p == "grpcs")
}

fn service_checks(row: &Map<String, Value>, errs: &mut FieldErrors) {
    let protocol = row["protocol"].as_str().unwrap_or("http");
    let cond = "failed conditional validation given value of field 'protocol'";
    if ["tcp", "tls", "udp", "grpc", "grpcs"].contains(&protocol) && !row["path"].is_null() {
        errs.entity(cond);
        errs.field("path", "value must be null");
    }
    if !["https", "tls"].contains(&protocol) {
        for k in [
            "client_certificate",
            "tls_verify",
            "tls_verify_depth",
            "ca_certificates",
        ] {
            if !row[k].is_null() {
                if errs.entity.is_empty() {
                    errs.entity(cond);
                }
                errs.field(k, "value must be null");
            }
        }
    }
}

/// The entity checks of `entities/upstreams.lua`: a hashing input must name what it hashes on,
/// and `hash_fallback` must be `none` when `hash_on` is.
fn upstream_checks(row: &Map<String, Value>, errs: &mut FieldErrors) {
    let on = row["hash_on"].as_str().unwrap_or("none");
    let fallback = row["hash_fallback"].as_str().unwrap_or("none");
    for (hash, needs) in [
        (on, "header", "hash_on_header"),
        (fallback, "header", "hash_fallback_header"),
        (on, "cookie", "hash_on_cookie"),
        (fallback, "cookie", "hash_on_cookie"),
        (on, "query_arg", "hash_on_query_arg"),
        (fallback, "query_arg", "hash_fallback_query_arg"),
        (on, "uri_capture", "hash_on_uri_capture"),
        (fallback, "uri_capture", "hash_fallback_uri_capture"),
    ]
    .map(|(v, m, f)| ((v == m), f))
    {
        if hash && row[needs].is_null() {
            errs.entity("failed conditional validation given value of field 'hash_on'");
            errs.field(needs, "required field missing");
            return;
        }
    }
    if (on == "none" || on == "cookie") && fallback != "none" {
        errs.entity("failed conditional validation given value of field 'hash_on'");
        errs.field("hash_fallback", "expected one of: none");
    }
}

fn route_checks(row: &Map<String, Value>, errs: &mut FieldErrors) {
    let protocols = strs(&row["protocols"]);
    if let Some(e) = mixed_protocols(&protocols) {
        errs.field("protocols", e);
        return;
    }
    let has = |k: &str| is_set(row.get(k));
    if is_grpc(row) {
        grpc_route_checks(row, &protocols, errs);
        return;
    }
    if has("snis")
        && !protocols
            .iter()
            .any(|p| ["grpcs", "https", "tls", "tls_passthrough"].contains(p))
    {
        errs.field(
            "snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
        );
        return;
    }
    if protocols.contains(&"https") {
        if !(has("methods") || has("hosts") || has("headers") || has("paths") || has("snis")) {
            errs.entity("must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'");
        }
    } else if protocols.contains(&"http") {
        if !(has("methods") || has("hosts") || has("headers") || has("paths")) {
            errs.entity(
                "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'",
            );
        }
    } else if protocols.contains(&"tls_passthrough") {
        if !has("snis") {
            errs.entity("must set snis when 'protocols' is 'tls_passthrough'");
        }
    } else if !(has("sources") || has("destinations") || has("snis")) {
        let p = protocols.first().copied().unwrap_or("tcp");
        errs.entity(format!(
            "must set one of 'sources', 'destinations', 'snis' when 'protocols' is '{p}'"
        ));
    }
}

/// `protocols`' `mutually_exclusive_subsets`: the message naming the first two sets in use.
fn mixed_protocols(protocols: &[&str]) -> Option<String> {
    let groups: [&[&str]; 4] = [
        &["http", "https"],
        &["tcp", "tls", "udp"],
        &["tls_passthrough"],
        &["grpc", "grpcs"],
    ];
    let used: Vec<&[&str]> = groups
        .iter()
        .copied()
        .filter(|g| protocols.iter().any(|p| g.contains(p)))
        .collect();
    if used.len() < 2 {
        return None;
    }
    let fmt = |g: &[&str]| {
        format!(
            "({})",
            g.iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Some(format!(
        "these sets are mutually exclusive: {}, {}",
        fmt(used[0]),
        fmt(used[1])
    ))
}

/// A grpc(s) route: no `strip_path`, no `methods`, and something to match on.
fn grpc_route_checks(row: &Map<String, Value>, protocols: &[&str], errs: &mut FieldErrors) {
    let has = |k: &str| is_set(row.get(k));
    if row["strip_path"] == json!(true) {
        errs.field(
            "strip_path",
            "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
        );
    }
    if has("methods") {
        errs.field(
            "methods",
            "cannot set 'methods' when 'protocols' is 'grpc' or 'grpcs'",
        );
    }
    if !errs.is_empty() {
        return;
    }
    if !(has("hosts") || has("headers") || has("paths") || has("snis")) {
        let p = if protocols.contains(&"grpcs") {
            "grpcs"
        } else {
            "grpc"
        };
        errs.entity(format!(
            "must set one of 'hosts', 'headers', 'paths', 'snis' when 'protocols' is '{p}'"
        ));
    }
}

/// A plugin config schema: (field, type, default).
struct ConfField {
    name: &'static str,
    ty: Ty,
    default: fn() -> Value,
}
const fn cf(name: &'static str, ty: Ty, default: fn() -> Value) -> ConfField {
    ConfField { name, ty, default }
}

const CORS_CONFIG: &[ConfField] = &[
    cf("origins", Ty::Array(Elem::Any), null),
    cf("headers", Ty::Array(Elem::Any), null),
    cf("exposed_headers", Ty::Array(Elem::Any), null),
    cf("methods", Ty::Array(Elem::CorsMethod), || {
        json!(["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"])
    }),
    cf("max_age", Ty::Int(i64::MIN, i64::MAX), null),
    cf("credentials", Ty::Bool, || json!(false)),
    cf("preflight_continue", Ty::Bool, || json!(false)),
];
const TERMINATION_CONFIG: &[ConfField] = &[
    cf("status_code", Ty::Int(100, 599), || json!(503)),
    cf("message", Ty::Str, null),
    cf("content_type", Ty::Str, null),
    cf("body", Ty::Str, null),
    cf("echo", Ty::Bool, || json!(false)),
    cf("trigger", Ty::Str, null),
];
const NASIKO_AUTH_CONFIG: &[ConfField] = &[
    cf("auth_service_url", Ty::Str, null),
    cf("timeout", Ty::Int(0, i64::MAX), || json!(5000)),
];
const CHAT_LOGGER_CONFIG: &[ConfField] = &[
    cf("chat_service_url", Ty::Str, null),
    cf("timeout", Ty::Int(0, i64::MAX), || json!(5000)),
];

fn config_schema(plugin: &str) -> Option<&'static [ConfField]> {
    match plugin {
        "cors" => Some(CORS_CONFIG),
        "request-termination" => Some(TERMINATION_CONFIG),
        "nasiko-auth" => Some(NASIKO_AUTH_CONFIG),
        "chat-logger" => Some(CHAT_LOGGER_CONFIG),
        _ => None,
    }
}

fn plugin_checks(row: &mut Map<String, Value>, available: &[String], errs: &mut FieldErrors) {
    let name = row["name"].as_str().unwrap_or_default().to_string();
    if !available.contains(&name) {
        errs.field(
            "name",
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        );
        return;
    }
    let given = row["config"].as_object().cloned().unwrap_or_default();
    let config = match config_schema(&name) {
        None => Value::Object(given),
        Some(schema) => {
            let mut out = Map::new();
            let mut cerrs = Map::new();
            for k in given.keys() {
                if !schema.iter().any(|c| c.name == k) {
                    cerrs.insert(k.clone(), json!("unknown field"));
                }
            }
            for c in schema {
                let fd = Field {
                    name: c.name,
                    ty: c.ty,
                    required: false,
                    default: c.default,
                };
                match given.get(c.name) {
                    None => {
                        out.insert(c.name.into(), (c.default)());
                    }
                    Some(v) => match check_field(&fd, v) {
                        Ok(v) => {
                            out.insert(c.name.into(), v);
                        }
                        Err(e) => {
                            cerrs.insert(c.name.into(), e);
                        }
                    },
                }
            }
            if cerrs.is_empty() && name == "request-termination" {
                let set = |k: &str| !out[k].is_null();
                let mut ent = Vec::new();
                if set("message") && (set("content_type") || set("body")) {
                    ent.push("message cannot be used with content_type or body");
                }
                if set("content_type") && !set("body") {
                    ent.push("content_type requires a body");
                }
                if out["echo"] == json!(true) && set("content_type") && set("body") {
                    ent.push("echo cannot be used with content_type and body");
                }
                if !ent.is_empty() {
                    cerrs.insert("@entity".into(), json!(ent));
                }
            }
            if !cerrs.is_empty() {
                errs.nested("config", Value::Object(cerrs));
                return;
            }
            Value::Object(out)
        }
    };
    row.insert("config".into(), config);
    if name == "cors" && !row["consumer"].is_null() {
        errs.field("consumer", "value must be null");
    }
}

/// Deep-merge `patch` into `base` the way `Schema:merge_values` does: records key by key, arrays replaced.
pub fn merge_config(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out = b.clone();
            for (k, v) in p {
                let merged = match out.get(k) {
                    Some(old) if old.is_object() && v.is_object() => merge_config(old, v),
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, p) => p.clone(),
    }
}
