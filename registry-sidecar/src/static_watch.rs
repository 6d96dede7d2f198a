//! Loads the static-proxies file and reloads it on change (notify on the parent directory, so
//! editors' atomic replaces and Kubernetes ConfigMap symlink swaps are seen). A bad edit keeps the
//! last good version and is reported.

use crate::static_routes::{self, HostOverrides, StaticConfig, EMBEDDED};
use crate::status::{Publisher, StaticsState};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Read and parse the file; a missing file means the embedded defaults.
pub fn load(path: &Path, hosts: &HostOverrides) -> Result<(StaticConfig, String), String> {
    match std::fs::read_to_string(path) {
        Ok(text) => static_routes::parse(&text, hosts)
            .map(|c| (c, path.display().to_string()))
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let c = static_routes::parse(EMBEDDED, hosts)
                .map_err(|e| format!("built-in static routes: {e}"))?;
            Ok((
                c,
                format!("built-in defaults ({} not found)", path.display()),
            ))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Initial load: falls back to the built-in file (and reports why) when the file is bad.
pub fn initial(
    path: &Path,
    hosts: &HostOverrides,
    status: &Publisher<StaticsState>,
) -> StaticConfig {
    match load(path, hosts) {
        Ok((c, src)) => {
            tracing::info!(source = %src, proxies = c.proxies.len(), "static routes loaded");
            status.update(|s| {
                s.file = src;
                s.file_error = None;
                s.proxies = c.proxies.iter().map(|p| p.name.clone()).collect();
            });
            c
        }
        Err(e) => {
            tracing::error!(
                "static routes: {e}; using the built-in defaults until the file is fixed"
            );
            let c = static_routes::parse(EMBEDDED, hosts)
                .expect("the embedded static routes file is valid");
            status.update(|s| {
                s.file = "built-in defaults".into();
                s.file_error = Some(e);
                s.proxies = c.proxies.iter().map(|p| p.name.clone()).collect();
            });
            c
        }
    }
}

/// How often the file is re-read while it cannot be watched, and the watch retried.
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// Watch `path` and publish every good new version on `tx`, forever: when the file cannot be
/// watched (its folder is missing, the inotify limit is reached) it is re-read every
/// [`POLL_EVERY`] and the watch retried, and `/status` says so. The last good routes stay.
pub async fn watch_file(
    path: PathBuf,
    hosts: HostOverrides,
    status: Publisher<StaticsState>,
    tx: watch::Sender<Arc<StaticConfig>>,
) {
    loop {
        let why = watch_until_failure(&path, &hosts, &status, &tx).await;
        if status.get().watch_error.as_deref() != Some(why.as_str()) {
            tracing::warn!(
                "static routes: {why}; re-reading {} every {POLL_EVERY:?} and retrying the watch",
                path.display()
            );
            status.update(|s| s.watch_error = Some(why.clone()));
        }
        tokio::time::sleep(POLL_EVERY).await;
        reload(&path, &hosts, &status, &tx);
    }
}

/// Publish the file's version when it is good and new; report a bad one.
fn reload(
    path: &Path,
    hosts: &HostOverrides,
    status: &Publisher<StaticsState>,
    tx: &watch::Sender<Arc<StaticConfig>>,
) {
    match load(path, hosts) {
        Ok((c, src)) => {
            if **tx.borrow() != c {
                tracing::info!(source = %src, proxies = c.proxies.len(), "static routes reloaded");
                status.update(|s| {
                    s.file = src;
                    s.file_error = None;
                    s.proxies = c.proxies.iter().map(|p| p.name.clone()).collect();
                });
                let _ = tx.send(Arc::new(c));
            } else {
                status.update(|s| s.file_error = None);
            }
        }
        Err(e) => {
            tracing::error!("static routes not reloaded: {e}; keeping the previous version");
            status.update(|s| s.file_error = Some(e));
        }
    }
}

/// Watch the file's folder and reload on each change; returns why watching failed or stopped.
async fn watch_until_failure(
    path: &Path,
    hosts: &HostOverrides,
    status: &Publisher<StaticsState>,
    tx: &watch::Sender<Arc<StaticConfig>>,
) -> String {
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let file_name = path.file_name().map(|f| f.to_os_string());
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                let _ = ev_tx.send(ev);
            }
        }) {
            Ok(w) => w,
            Err(e) => return format!("cannot create a file watcher ({e})"),
        };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        return format!("cannot watch {} ({e})", dir.display());
    }
    if status.get().watch_error.is_some() {
        tracing::info!("static routes: watching {} again", dir.display());
        status.update(|s| s.watch_error = None);
        // it may have changed while it was not watched
        reload(path, hosts, status, tx);
    }
    while let Some(ev) = ev_rx.recv().await {
        let ours = ev.paths.iter().any(|p| {
            p.file_name().map(|f| f.to_os_string()) == file_name
                || p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(".."))
        });
        // the watched folder itself went away
        let gone =
            matches!(ev.kind, notify::EventKind::Remove(_)) && ev.paths.iter().any(|p| p == &dir);
        if gone {
            return format!("{} was removed", dir.display());
        }
        if !ours {
            continue;
        }
        // let a burst of writes settle
        tokio::time::sleep(Duration::from_millis(100)).await;
        while ev_rx.try_recv().is_ok() {}
        reload(path, hosts, status, tx);
    }
    "the file watcher stopped".into()
}
