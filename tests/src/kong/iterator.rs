//! The proxy's plugins iterator: a snapshot of the plugins, built as Kong 3.4 builds one
//! (`PluginsIterator.new`, `kong/runloop/plugins_iterator.lua`), and which of them run for a
//! request (`lookup_cfg` over the route, service and consumer combinations). The emulator runs
//! no plugin code: it names the plugins in the `x-emulator-plugins` header of every proxied
//! response, so a test can see a request that went through without them (`TIMING.md`).

use super::entities::Kind;
use super::store::{Row, Store};
use serde_json::Value;

/// The plugins a built iterator holds: name and scope of each one it processes.
#[derive(Debug, Default)]
pub struct PluginsIterator {
    /// The store's plugins version it was built from.
    pub version: u64,
    plugins: Vec<Scoped>,
}

#[derive(Debug)]
struct Scoped {
    name: String,
    route: Option<String>,
    service: Option<String>,
    consumer: Option<String>,
}

fn fk(row: &Row, k: &str) -> Option<String> {
    row.get(k)
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(String::from)
}

/// `should_process_plugin`: enabled, and one of its protocols is of the http subsystem
/// (`constants.PROTOCOLS_WITH_SUBSYSTEM`).
fn processed(p: &Row) -> bool {
    p.get("enabled") != Some(&Value::Bool(false))
        && p["protocols"].as_array().is_none_or(|a| {
            a.iter().any(|x| {
                matches!(
                    x.as_str(),
                    Some("http" | "https" | "grpc" | "grpcs" | "ws" | "wss")
                )
            })
        })
}

impl PluginsIterator {
    pub fn build(store: &Store) -> PluginsIterator {
        let plugins = store
            .all(Kind::Plugins)
            .filter(|p| processed(p))
            .map(|p| Scoped {
                name: p["name"].as_str().unwrap_or_default().to_string(),
                route: fk(p, "route"),
                service: fk(p, "service"),
                consumer: fk(p, "consumer"),
            })
            .collect();
        PluginsIterator {
            version: store.plugins_version(),
            plugins,
        }
    }

    /// The sorted names of the plugins that run for a request matched to `route` of `service`
    /// (None, None: no route matched, and only the global plugins of the rewrite phase ran,
    /// `Kong.rewrite` before the router's 404 in `access`). A plugin runs when a configuration of
    /// its name exists for the combination: scoped to that route and/or that service, or global.
    /// No consumer is ever identified here (the emulator runs no authentication), so
    /// consumer-scoped configurations never apply.
    pub fn names_for(&self, route: Option<&str>, service: Option<&str>) -> Vec<String> {
        let mut names: Vec<String> = self
            .plugins
            .iter()
            .filter(|p| p.consumer.is_none())
            .filter(|p| p.route.is_none() || p.route.as_deref() == route)
            .filter(|p| p.service.is_none() || p.service.as_deref() == service)
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}
