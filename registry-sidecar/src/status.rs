//! What the sidecar reports: the last sync, reachability, managed entities, counters. Each
//! component publishes its own state on a `watch` channel that it alone holds the sender of
//! (discovery `DiscoveryState`, the reconciler `SyncState`, the static routes watcher
//! `StaticsState`, the membership keeper `MembersState`); the HTTP API reads them all, composed
//! into one `Snapshot`. The counters are shared atomics.

use crate::endpoint::AgentEndpoint;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

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

/// Discovery's: the source (Docker or the Kubernetes API) answers, and has been listed
/// completely since the last (re)connect; why not, when it does not.
#[derive(Debug, Default, Clone)]
pub struct DiscoveryState {
    pub reachable: bool,
    pub listed: bool,
    pub error: Option<String>,
}

/// The reconciler's: Kong answered the last sync; answered it with a 5xx (up, not well); what the
/// last sync saw and did.
#[derive(Debug, Default, Clone)]
pub struct SyncState {
    pub kong_reachable: bool,
    pub kong_failing: Option<String>,
    pub last_sync: Option<String>,
    pub last_sync_unix: Option<f64>,
    pub last_sync_writes: usize,
    /// Why the last sync failed (the reconciler's own; discovery's is its own `error`).
    pub error: Option<String>,
    pub agents: Vec<Arc<AgentEndpoint>>,
    pub waiting: Vec<String>,
    pub malformed: Vec<String>,
    pub missing_plugins: BTreeSet<String>,
    pub managed_services: Vec<String>,
}

/// The static routes watcher's.
#[derive(Debug, Default, Clone)]
pub struct StaticsState {
    pub proxies: Vec<String>,
    pub file: String,
    pub file_error: Option<String>,
    /// Why the file is not being watched (it is then re-read every few seconds).
    pub watch_error: Option<String>,
}

/// The membership keeper's: each member container's last rejoin (after it started), by
/// container name; the agent networks the members could not join, with why.
#[derive(Debug, Default, Clone)]
pub struct MembersState {
    pub rejoins: BTreeMap<String, Rejoin>,
    pub errors: BTreeMap<String, String>,
}

/// What the API reports: every component's state at one moment.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub discovery: DiscoveryState,
    pub sync: SyncState,
    pub statics: StaticsState,
    pub members: MembersState,
}

/// A component's own state: it alone publishes it.
#[derive(Debug)]
pub struct Publisher<T>(watch::Sender<T>);

impl<T: Clone> Publisher<T> {
    pub fn update(&self, f: impl FnOnce(&mut T)) {
        self.0.send_modify(f);
    }

    pub fn get(&self) -> T {
        self.0.borrow().clone()
    }
}

/// The publishing ends, one per component, handed out when the sidecar starts.
pub struct Publishers {
    pub counters: Arc<Counters>,
    pub discovery: Publisher<DiscoveryState>,
    pub sync: Publisher<SyncState>,
    pub statics: Publisher<StaticsState>,
    pub members: Publisher<MembersState>,
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

/// The reading ends: what the API reports from.
#[derive(Clone)]
pub struct Status {
    pub counters: Arc<Counters>,
    discovery: watch::Receiver<DiscoveryState>,
    sync: watch::Receiver<SyncState>,
    statics: watch::Receiver<StaticsState>,
    members: watch::Receiver<MembersState>,
}

impl Status {
    /// Every component's channel, empty: the publishers for the components, the reader for the
    /// API.
    pub fn channels() -> (Publishers, Status) {
        let counters = Arc::new(Counters::default());
        let (discovery, discovery_rx) = watch::channel(DiscoveryState::default());
        let (sync, sync_rx) = watch::channel(SyncState::default());
        let (statics, statics_rx) = watch::channel(StaticsState::default());
        let (members, members_rx) = watch::channel(MembersState::default());
        let publishers = Publishers {
            counters: counters.clone(),
            discovery: Publisher(discovery),
            sync: Publisher(sync),
            statics: Publisher(statics),
            members: Publisher(members),
        };
        let status = Status {
            counters,
            discovery: discovery_rx,
            sync: sync_rx,
            statics: statics_rx,
            members: members_rx,
        };
        (publishers, status)
    }

    pub fn read(&self) -> Snapshot {
        Snapshot {
            discovery: self.discovery.borrow().clone(),
            sync: self.sync.borrow().clone(),
            statics: self.statics.borrow().clone(),
            members: self.members.borrow().clone(),
        }
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
