//! Dropping root at start: the image starts as root only to learn the Docker socket's group, then
//! runs as an unprivileged user that keeps that one group, so it reads the socket on any engine
//! without the `group_add` that upstream's compose files do not have.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum PrivilegeError {
    /// RUN_AS_USER is not `uid:gid` (or `uid`).
    BadSetting(String),
    /// A system call refused; the process must not go on as root by accident.
    Refused(&'static str, std::io::Error),
}

impl std::fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivilegeError::BadSetting(v) => write!(
                f,
                "RUN_AS_USER '{v}' is not uid:gid (e.g. 10001:10001); set it, or set it empty to stay as started"
            ),
            PrivilegeError::Refused(call, e) => write!(
                f,
                "cannot switch to the unprivileged user ({call}: {e}); run the container with its default user, or set RUN_AS_USER empty"
            ),
        }
    }
}

impl std::error::Error for PrivilegeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PrivilegeError::Refused(_, e) => Some(e),
            PrivilegeError::BadSetting(_) => None,
        }
    }
}

/// What `drop_root` did, for the start-up log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    NotRoot,
    Disabled,
    Switched {
        uid: u32,
        gid: u32,
        socket_gid: Option<u32>,
    },
}

pub fn parse_user(v: &str) -> Result<Option<(u32, u32)>, PrivilegeError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let bad = || PrivilegeError::BadSetting(v.to_string());
    let (u, g) = v.split_once(':').unwrap_or((v, v));
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid: u32 = g.parse().map_err(|_| bad())?;
    if uid == 0 {
        return Err(bad());
    }
    Ok(Some((uid, gid)))
}

/// The Docker socket the sidecar will use: the path of a unix:// DOCKER_HOST, else the default.
pub fn socket_path(docker_host: Option<&str>) -> Option<PathBuf> {
    match docker_host {
        Some(h) if !h.is_empty() => h.strip_prefix("unix://").map(PathBuf::from),
        _ => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

/// When running as root, become `run_as`, with the socket's group as the one supplementary group.
/// Call before any thread is started.
pub fn drop_root(run_as: &str, socket: Option<&Path>) -> Result<Outcome, PrivilegeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Outcome::NotRoot);
    }
    let Some((uid, gid)) = parse_user(run_as)? else {
        return Ok(Outcome::Disabled);
    };
    let socket_gid = socket
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.gid());
    let groups: Vec<libc::gid_t> = socket_gid.into_iter().collect();
    let check = |call: &'static str, rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(PrivilegeError::Refused(
                call,
                std::io::Error::last_os_error(),
            ))
        }
    };
    // SAFETY: plain system calls on valid arguments; the order (groups, gid, uid) is required.
    unsafe {
        check("setgroups", libc::setgroups(groups.len(), groups.as_ptr()))?;
        check("setgid", libc::setgid(gid))?;
        check("setuid", libc::setuid(uid))?;
        if libc::setuid(0) == 0 {
            return Err(PrivilegeError::Refused(
                "setuid",
                std::io::Error::other("root could be regained"),
            ));
        }
    }
    Ok(Outcome::Switched {
        uid,
        gid,
        socket_gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_user_forms() {
        assert_eq!(parse_user("10001:10001").unwrap(), Some((10001, 10001)));
        assert_eq!(parse_user("123").unwrap(), Some((123, 123)));
        assert_eq!(parse_user(" ").unwrap(), None);
        assert!(parse_user("0:0").is_err(), "root is not a user to drop to");
        assert!(parse_user("nasiko").is_err());
    }

    #[test]
    fn the_socket_comes_from_a_unix_docker_host() {
        assert_eq!(
            socket_path(Some("unix:///run/x.sock")),
            Some(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(socket_path(Some("tcp://h:2375")), None);
        assert_eq!(
            socket_path(None),
            Some(PathBuf::from("/var/run/docker.sock"))
        );
    }
}
