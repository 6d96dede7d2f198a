//! The emulator's proxy listener: where a request the router matched goes (`router.rs` chose the
//! route, from its snapshot) — the route's service, through the ring-balancer when the service's
//! host names an upstream (upstreams and targets are read live: Kong applies them at once
//! through worker events, `TIMING.md`).

use super::balancer;
use super::router::Selected;
use super::store::Store;
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

/// Build the upstream URL for the route the router `sel`ected (path_handling v0); through the
/// balancer when the service's host is an upstream's name, skipping the targets `tried` already.
pub fn route_request(
    store: &mut Store,
    sel: Option<&Selected>,
    path: &str,
    query: &str,
    tried: &[String],
) -> Match {
    let Some(sel) = sel else {
        return Match::NoRoute;
    };
    let Some(svc) = sel.service else {
        return Match::NoService;
    };
    let route = sel.route;
    let preserve_host = route["preserve_host"] == Value::Bool(true);
    let strip = route["strip_path"] == Value::Bool(true);
    let base = svc["path"].as_str().unwrap_or("/");
    // `exec` (`kong/router/atc.lua`): the postfix follows the matched path, or is the whole
    // path but its first `/` when the route matched without one
    let postfix = match sel.matched_len {
        Some(len) => &path[len..],
        None => &path[1.min(path.len())..],
    };
    let joined = upstream_uri_v0(strip, postfix, path, base);
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

/// `sanitize_uri_postfix` (`kong/router/utils.lua`).
fn sanitize_postfix(p: &str) -> &str {
    match p {
        "." | ".." => "",
        _ => p
            .strip_prefix("./")
            .or_else(|| p.strip_prefix("../"))
            .unwrap_or(p),
    }
}

/// `get_upstream_uri_v0` (`kong/router/utils.lua`): the upstream path from the service's path
/// (`base`, `/` when it has none), whether the route strips, what followed the matched path
/// (`postfix`, used when stripping) and the request's path.
fn upstream_uri_v0(strip: bool, postfix: &str, req_uri: &str, base: &str) -> String {
    let postfix = sanitize_postfix(postfix);
    if let Some(trimmed) = base.strip_suffix('/') {
        if !strip {
            return format!("{base}{}", &req_uri[1.min(req_uri.len())..]);
        }
        return if postfix.is_empty() {
            if base == "/" || req_uri.ends_with('/') {
                base.to_string()
            } else {
                trimmed.to_string()
            }
        } else if postfix.starts_with('/') {
            format!("{trimmed}{postfix}")
        } else {
            format!("{base}{postfix}")
        };
    }
    if !strip {
        return if req_uri == "/" {
            base.to_string()
        } else {
            format!("{base}{req_uri}")
        };
    }
    if postfix.is_empty() {
        if req_uri.len() > 1 && req_uri.ends_with('/') {
            format!("{base}/")
        } else {
            base.to_string()
        }
    } else if postfix.starts_with('/') {
        format!("{base}{postfix}")
    } else {
        format!("{base}/{postfix}")
    }
}

#[cfg(test)]
mod tests {
    use super::upstream_uri_v0 as v0;

    #[test]
    fn v0_upstream_paths_as_kong_builds_them() {
        // no service path (base "/")
        assert_eq!(v0(true, "", "/gw", "/"), "/");
        assert_eq!(v0(true, "/x", "/gw/x", "/"), "/x");
        assert_eq!(v0(true, "x", "/gw/x", "/"), "/x");
        assert_eq!(v0(false, "", "/gw/x", "/"), "/gw/x");
        // a base ending with "/": the request's trailing slash decides
        assert_eq!(v0(true, "", "/gw", "/app/"), "/app");
        assert_eq!(v0(true, "", "/gw/", "/app/"), "/app/");
        assert_eq!(v0(true, "/x", "/gw/x", "/app/"), "/app/x");
        assert_eq!(v0(false, "", "/gw/x", "/app/"), "/app/gw/x");
        // a base without it
        assert_eq!(v0(true, "", "/gw", "/app"), "/app");
        assert_eq!(v0(true, "", "/a/", "/app"), "/app/");
        assert_eq!(v0(true, "/x", "/gw/x", "/app"), "/app/x");
        assert_eq!(v0(true, "x", "/gw/x", "/app"), "/app/x");
        assert_eq!(v0(false, "", "/", "/app"), "/app");
        assert_eq!(v0(false, "", "/gw", "/app"), "/app/gw");
        // sanitize_uri_postfix
        assert_eq!(v0(true, "./x", "/gw./x", "/"), "/x");
    }
}
