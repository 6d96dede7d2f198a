//! The proxy's router: a snapshot of the routes and their services, built as Kong 3.4's default
//! `traditional_compatible` router builds one (`kong/router/compat.lua` over `kong/router/atc.lua`),
//! and the choice of the route for a request: prefix and regex (`~`) paths, methods, protocols,
//! ordered by Kong's 64-bit route priority (`get_priority`). `TIMING.md` says when a snapshot is
//! rebuilt; `UPSTREAMS.md`/`TIMING.md` the matching facts.

use super::entities::Kind;
use super::store::{Row, Store};
use regex::Regex;
use serde_json::Value;

/// One path of a route, compiled.
#[derive(Debug)]
enum PathMatcher {
    /// `http.path ^= "…"`.
    Prefix(String),
    /// `http.path ~ "^…"`: Kong strips the `~`, anchors at the start and turns `(?<` into
    /// `(?P<` (`get_expression`).
    Regex(Regex),
}

impl PathMatcher {
    fn compile(p: &str) -> Option<PathMatcher> {
        match p.strip_prefix('~') {
            Some(re) => Regex::new(&format!("^{}", re.replace("?<", "?P<")))
                .ok()
                .map(PathMatcher::Regex),
            None => Some(PathMatcher::Prefix(p.to_string())),
        }
    }

    /// The length of the request path this matches (what `strip_path` removes).
    fn matched(&self, path: &str) -> Option<usize> {
        match self {
            PathMatcher::Prefix(p) => path.starts_with(p.as_str()).then_some(p.len()),
            PathMatcher::Regex(re) => re.find(path).map(|m| m.end()),
        }
    }
}

/// A route as the router holds it: with its service as it was when the router was built.
#[derive(Debug)]
struct Entry {
    route: Row,
    service: Option<Row>,
    methods: Vec<String>,
    /// None: the route sets no paths (any path matches). A path Rust's regex cannot compile
    /// is left out (atc-router would have refused the route), so it matches nothing.
    paths: Option<Vec<PathMatcher>>,
}

/// What the router chose for a request.
#[derive(Debug)]
pub struct Selected<'a> {
    pub route: &'a Row,
    /// The route's service as the router holds it; None: the route has none.
    pub service: Option<&'a Row>,
    /// How much of the path the matching path covered (stripped when `strip_path`); None: the
    /// route has no paths, and nothing was matched to strip.
    pub matched_len: Option<usize>,
}

/// A built router. `version` is the store's router version it was built from.
#[derive(Debug, Default)]
pub struct Router {
    pub version: u64,
    entries: Vec<Entry>,
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn non_empty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        _ => false,
    }
}

impl Router {
    /// `new_router` (`kong/runloop/handler.lua`): every route of an http protocol, with its
    /// service; a route whose service has `enabled = false` is left out.
    pub fn build(store: &Store) -> Router {
        let mut entries = Vec::new();
        for r in store.all(Kind::Routes) {
            let service = r["service"]
                .get("id")
                .and_then(Value::as_str)
                .and_then(|sid| store.row(Kind::Services, sid))
                .cloned();
            if service
                .as_ref()
                .is_some_and(|s| s.get("enabled") == Some(&Value::Bool(false)))
            {
                continue;
            }
            entries.push(Entry {
                route: r.clone(),
                service,
                methods: strs(&r["methods"]),
                paths: non_empty(r.get("paths")).then(|| {
                    strs(&r["paths"])
                        .iter()
                        .filter_map(|p| PathMatcher::compile(p))
                        .collect()
                }),
            });
        }
        Router {
            version: store.router_version(),
            entries,
        }
    }

    /// The route for `method path`: of the routes that match, the one of highest priority
    /// (`get_priority`; a route with several paths competes with the best one that matches,
    /// as `split_routes_and_services_by_path` makes one matcher per path group); among equal
    /// priorities the larger id, as atc-router tries its matchers in descending
    /// `(priority, uuid)` order.
    pub fn select(&self, method: &str, path: &str) -> Option<Selected<'_>> {
        let mut best: Option<(u64, &str, Selected)> = None;
        for e in &self.entries {
            if !strs(&e.route["protocols"]).iter().any(|p| p == "http") {
                continue;
            }
            if !e.methods.is_empty() && !e.methods.iter().any(|m| m == method) {
                continue;
            }
            let hit = match &e.paths {
                None => Some((priority(&e.route, None), None)),
                Some(paths) => paths
                    .iter()
                    .filter_map(|p| {
                        p.matched(path)
                            .map(|len| (priority(&e.route, Some(p)), Some(len)))
                    })
                    .max_by_key(|(prio, _)| *prio),
            };
            let Some((prio, len)) = hit else { continue };
            let id = e.route["id"].as_str().unwrap_or_default();
            if best
                .as_ref()
                .is_none_or(|(p, bid, _)| (prio, id) > (*p, *bid))
            {
                let sel = Selected {
                    route: &e.route,
                    service: e.service.as_ref(),
                    matched_len: len,
                };
                best = Some((prio, id, sel));
            }
        }
        best.map(|(_, _, s)| s)
    }
}

/// Kong's route priority for one path group of a route (`get_priority`, `kong/router/compat.lua`):
/// from the top bit down, the count of the fields set (methods, hosts, headers, snis, paths),
/// hosts without wildcard, the header count, **regex path**, `regex_priority` (regex paths
/// only), and the prefix's length. A regex path thus outranks every prefix path of a route with
/// the same fields set, whatever the prefix's length.
fn priority(route: &Row, path: Option<&PathMatcher>) -> u64 {
    let set = |k: &str| non_empty(route.get(k));
    let mut weight: u64 = 0;
    for k in ["methods", "hosts", "snis"] {
        weight += set(k) as u64;
    }
    let headers = route
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| h.len().min(255) as u64)
        .unwrap_or(0);
    weight += (headers > 0) as u64;
    let plain_host_only = route
        .get("hosts")
        .and_then(Value::as_array)
        .is_some_and(|h| {
            h.iter()
                .all(|x| !x.as_str().unwrap_or_default().contains('*'))
        });
    let (regex, length) = match path {
        None => (false, 0),
        Some(PathMatcher::Regex(_)) => (true, 0),
        Some(PathMatcher::Prefix(p)) => (false, p.len() as u64),
    };
    weight += path.is_some() as u64;
    let regex_priority = if regex {
        route["regex_priority"].as_i64().unwrap_or(0) as u64
    } else {
        0
    };
    (weight << 61)
        | ((plain_host_only as u64) << 60)
        | (headers << 52)
        | ((regex as u64) << 51)
        | regex_priority.wrapping_shl(19)
        | (length & 0x7FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn regex_outranks_any_prefix_and_regex_priority_orders_regexes() {
        let re = PathMatcher::compile("~/a(/|$)").unwrap();
        let long = PathMatcher::compile("/a/very/long/prefix").unwrap();
        let r = route(json!({"paths": ["~/a(/|$)"], "regex_priority": 0}));
        let p = route(json!({"paths": ["/a/very/long/prefix"]}));
        assert!(priority(&r, Some(&re)) > priority(&p, Some(&long)));
        let r9 = route(json!({"paths": ["~/a(/|$)"], "regex_priority": 9}));
        assert!(priority(&r9, Some(&re)) > priority(&r, Some(&re)));
        // a route with methods set outranks one with paths only, regex or not
        let m = route(json!({"paths": ["/a"], "methods": ["GET"]}));
        let short = PathMatcher::compile("/a").unwrap();
        assert!(priority(&m, Some(&short)) > priority(&r9, Some(&re)));
    }

    #[test]
    fn a_path_rust_regex_cannot_compile_matches_nothing_not_everything() {
        let mut store = Store::new(vec![]);
        let body = json!({"name": "look", "paths": ["~/a(?=b)"]});
        let a = store.create(Kind::Routes, body.as_object().cloned().unwrap(), None);
        assert_eq!(a.status, 201, "{:?}", a.body);
        let r = Router::build(&store);
        assert!(r.select("GET", "/ab").is_none());
        assert!(r.select("GET", "/x").is_none());
        let body = json!({"name": "any", "methods": ["GET"]});
        store.create(Kind::Routes, body.as_object().cloned().unwrap(), None);
        let r = Router::build(&store);
        assert_eq!(r.select("GET", "/x").unwrap().route["name"], "any");
    }

    #[test]
    fn regex_paths_are_anchored_at_the_start_only() {
        let re = PathMatcher::compile("~/agents/agent-foo(/|$)").unwrap();
        assert_eq!(re.matched("/agents/agent-foo"), Some(17));
        assert_eq!(re.matched("/agents/agent-foo/x"), Some(18));
        assert_eq!(re.matched("/agents/agent-foo2"), None);
        assert_eq!(re.matched("/x/agents/agent-foo"), None);
        let named = PathMatcher::compile("~/u/(?<id>\\d+)").unwrap();
        assert_eq!(named.matched("/u/42/rest"), Some(5));
    }
}
