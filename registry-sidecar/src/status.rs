//! What the sidecar reports: the last sync, reachability, managed entities, counters. Each
//! component writes only its own fields (discovery its `discovery_*`, the reconciler the sync's
//! and Kong's, the static routes watcher its `static_*`, the membership keeper its `member_*`);
//! the HTTP API reads them all.

use crate::endpoint::AgentEndpoint;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Counters {
    pub syncs: AtomicU64,
    pub sync_failures: AtomicU64,
    pub kong_requests: AtomicU64,
    pub kong_writes: AtomicU64,
    pub kong_errors: AtomicU64,
    pub docker_events: AtomicU64,
    pub docker_reconnects: AtomicU64,
    /// Member containers connected to agent networks by the membership keeper, and connects
    /// that failed.
    pub member_connects: AtomicU64,
    pub member_connect_failures: AtomicU64,
    /// Sum and count of (event time → applied) lags, in milliseconds.
    pub event_lag_ms_sum: AtomicU64,
    pub event_lag_count: AtomicU64,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    /// The plain counters as (name, help, value): `/status` shows them by name, `/metrics` as
    /// `registry_{name}_total`.
    pub fn totals(&self) -> [(&'static str, &'static str, u64); 9] {
        [
            ("syncs", "Syncs run.", Self::get(&self.syncs)),
            (
                "sync_failures",
                "Syncs that failed.",
                Self::get(&self.sync_failures),
            ),
            (
                "kong_requests",
                "Kong Admin API requests.",
                Self::get(&self.kong_requests),
            ),
            (
                "kong_writes",
                "Kong Admin API writes (POST/PUT/PATCH/DELETE).",
                Self::get(&self.kong_writes),
            ),
            (
                "kong_errors",
                "Kong Admin API errors.",
                Self::get(&self.kong_errors),
            ),
            (
                "docker_events",
                "Discovery events received.",
                Self::get(&self.docker_events),
            ),
            (
                "docker_reconnects",
                "Discovery reconnects.",
                Self::get(&self.docker_reconnects),
            ),
            (
                "member_connects",
                "Member containers (gateway, Phoenix) connected to agent networks.",
                Self::get(&self.member_connects),
            ),
            (
                "member_connect_failures",
                "Connects of a member container to an agent network that failed.",
                Self::get(&self.member_connect_failures),
            ),
        ]
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Snapshot {
    /// Discovery's: the source (Docker or the Kubernetes API) answers, and has been listed
    /// completely since the last (re)connect; why not, when it does not.
    pub discovery_reachable: bool,
    pub discovery_listed: bool,
    pub discovery_error: Option<String>,
    /// The reconciler's: Kong answered the last sync; answered it with a 5xx (up, not well).
    pub kong_reachable: bool,
    pub kong_failing: Option<String>,
    pub last_sync: Option<String>,
    pub last_sync_unix: Option<f64>,
    pub last_sync_writes: usize,
    /// Why the last sync failed (the reconciler's own; discovery's is `discovery_error`).
    pub sync_error: Option<String>,
    pub static_proxies: Vec<String>,
    pub static_file: String,
    pub static_file_error: Option<String>,
    /// Why the static routes file is not being watched (it is then re-read every few seconds).
    pub static_watch_error: Option<String>,
    pub agents: Vec<AgentEndpoint>,
    pub waiting: Vec<String>,
    pub malformed: Vec<String>,
    pub missing_plugins: BTreeSet<String>,
    pub managed_services: Vec<String>,
    /// The membership keeper's: each member container's last rejoin (after it started), by
    /// container name; the agent networks the members could not join, with why.
    pub member_rejoins: BTreeMap<String, Rejoin>,
    pub member_errors: BTreeMap<String, String>,
}

/// A member container (re)joined to every agent network after it started.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejoin {
    /// The name agents call it by on their networks (`kong-gateway` for the gateway).
    pub alias: String,
    /// Agent networks it had to be on, and how many of them it was connected to now.
    pub networks: usize,
    pub connected: usize,
    /// From its start event to the last connect, in milliseconds.
    pub ms: u64,
    pub at_unix: f64,
}

#[derive(Default)]
pub struct Status {
    pub counters: Counters,
    pub snapshot: Mutex<Snapshot>,
}

impl Status {
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.lock().expect("status lock"));
    }
    pub fn read(&self) -> Snapshot {
        self.snapshot.lock().expect("status lock").clone()
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for a unix time, as the Python registry printed `last_sync`.
pub fn format_time(unix: f64) -> String {
    let secs = unix as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // civil-from-days (Howard Hinnant)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_python_strftime() {
        assert_eq!(super::format_time(0.0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1795478400.5), "2026-11-24 00:00:00");
    }
}
