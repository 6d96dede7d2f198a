//! The emulator's proxy listener: matches a request against the stored routes (longest path
//! prefix, methods, protocols) and forwards it to the route's service, like Kong's router — to a
//! target picked by the ring-balancer when the service's host names an upstream.

use super::balancer;
use super::entities::Kind;
use super::store::{Row, Store};
use serde_json::Value;

/// Where a proxied request goes.
#[derive(Debug, PartialEq)]
pub struct Upstream {
    pub url: String,
    pub preserve_host: bool,
    /// The target the balancer picked (the service's host names an upstream).
    pub target: Option<String>,
    /// The service's `retries`: further tries after a connection failure.
    pub retries: u64,
}

#[derive(Debug, PartialEq)]
pub enum Match {
    NoRoute,
    NoService,
    /// The service's upstream has no healthy target of weight > 0.
    NoPeer,
    To(Upstream),
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

/// Pick the route for `method path` and build the upstream URL (path_handling v0); through the
/// balancer when the service's host is an upstream's name, skipping the targets `tried` already.
pub fn route_request(
    store: &mut Store,
    method: &str,
    path: &str,
    query: &str,
    tried: &[String],
) -> Match {
    let mut best: Option<(&Row, usize)> = None;
    for r in store.all(Kind::Routes) {
        if !strs(&r["protocols"]).contains(&"http") {
            continue;
        }
        let methods = strs(&r["methods"]);
        if !methods.is_empty() && !methods.contains(&method) {
            continue;
        }
        let paths = strs(&r["paths"]);
        let matched = if paths.is_empty() {
            Some(0)
        } else {
            paths
                .iter()
                .filter(|p| !p.starts_with('~') && path.starts_with(*p))
                .map(|p| p.len())
                .max()
        };
        if let Some(len) = matched {
            if best.is_none_or(|(_, l)| len > l) {
                best = Some((r, len));
            }
        }
    }
    let Some((route, len)) = best else {
        return Match::NoRoute;
    };
    let Some(sid) = route["service"].get("id").and_then(|v| v.as_str()) else {
        return Match::NoService;
    };
    let Some(svc) = store.row(Kind::Services, sid).cloned() else {
        return Match::NoService;
    };
    let preserve_host = route["preserve_host"] == Value::Bool(true);
    let rest = if route["strip_path"] == Value::Bool(true) {
        &path[len..]
    } else {
        path
    };
    let base = svc["path"].as_str().unwrap_or("");
    let joined = join_v0(base, rest);
    let host = svc["host"].as_str().unwrap_or("");
    let port = svc["port"].as_i64().unwrap_or(80);
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let (authority, target) = match store.upstream_named(host).cloned() {
        Some(up) => match balancer::pick(store, &up, tried) {
            Some(peer) => (peer.address, Some(peer.target_id)),
            None => return Match::NoPeer,
        },
        None => (format!("{host}:{port}"), None),
    };
    Match::To(Upstream {
        url: format!("http://{authority}{joined}{q}"),
        preserve_host,
        target,
        retries: svc["retries"].as_u64().unwrap_or(5),
    })
}

/// Kong's v0 join of service path and the (maybe stripped) request path.
fn join_v0(base: &str, rest: &str) -> String {
    if base.is_empty() {
        return if rest.is_empty() {
            "/".into()
        } else if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}")
        };
    }
    if rest.is_empty() {
        return base.into();
    }
    match (base.ends_with('/'), rest.starts_with('/')) {
        (true, true) => format!("{base}{}", &rest[1..]),
        (false, false) => format!("{base}/{rest}"),
        _ => format!("{base}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::join_v0;

    #[test]
    fn v0_join_rules() {
        assert_eq!(join_v0("", ""), "/");
        assert_eq!(join_v0("", "/x"), "/x");
        assert_eq!(join_v0("/app/", ""), "/app/");
        assert_eq!(join_v0("/app/", "/x"), "/app/x");
        assert_eq!(join_v0("/app", "/x"), "/app/x");
        assert_eq!(join_v0("/app", ""), "/app");
    }
}
