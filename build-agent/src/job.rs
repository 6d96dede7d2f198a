//! A raw stream entry becomes a typed `DeployJob` or a typed `Rejection` (contracts.md §3):
//! dispatch on `action` then `command`, required fields, agent names, `agent_path` confined to the
//! agents root, the `base_url` fallback. Nothing downstream sees raw strings.

// A job and a rejection are each built once at the boundary and moved; boxing buys nothing.
#![allow(clippy::result_large_err)]

use std::path::{Component, Path, PathBuf};

pub use nasiko_contract::stream::Action;
use nasiko_contract::stream::{self, Entry, PackagePath};

#[derive(Debug, Clone, PartialEq)]
pub struct DeployJob {
    pub stream_id: String,
    pub action: Action,
    /// Validated: `[a-z0-9][a-z0-9_.-]*`.
    pub agent: String,
    /// Resolved on this machine, inside the agents root.
    pub package: PathBuf,
    pub owner_id: String,
    pub upload_id: String,
    pub upload_type: String,
    pub version: String,
    /// Where the backend is reachable (after the cluster-URL fallback), if anywhere.
    pub backend_url: Option<String>,
    pub webhook_url: Option<String>,
    /// `update_strategy`: `recreate` replaces the running container in its slot, not beside it
    /// (faster, may drop requests for a moment; the edit-and-see loop uses it).
    pub strategy: nasiko_contract::stream::Strategy,
    /// `cleanup_old=False`: the version an update replaces is stopped, not removed.
    pub keep_old: bool,
}

/// The most of a reason (which may quote the input) that is stored and reported.
pub const REASON_CAP: usize = 500;

/// `text` cut to [`REASON_CAP`] bytes (on a character boundary), saying how much was cut.
pub fn cap(text: &str) -> String {
    if text.len() <= REASON_CAP {
        return text.to_string();
    }
    let mut end = REASON_CAP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub stream_id: String,
    /// The agent the entry was about, when its name is usable for reporting.
    pub agent: Option<String>,
    pub owner_id: String,
    pub upload_id: String,
    pub backend_url: Option<String>,
    pub reason: String,
}

/// What the validator needs to know about this machine.
pub struct Paths<'a> {
    pub agents_root: &'a Path,
    /// The prefix the backend uses for the agents root (mapped onto `agents_root`).
    pub backend_prefix: &'a Path,
    pub nasiko_api_url: Option<&'a str>,
}

pub use nasiko_contract::valid_agent_name;

/// Use the job's base_url unless it is missing or a Kubernetes-internal URL; then NASIKO_API_URL.
pub fn backend_url(base_url: Option<&str>, fallback: Option<&str>) -> Option<String> {
    let usable = base_url
        .map(str::trim)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .filter(|u| {
            let host = u
                .split("://")
                .nth(1)
                .unwrap_or("")
                .split(['/', ':'])
                .next()
                .unwrap_or("");
            !host.ends_with(".svc.cluster.local") && !host.ends_with(".svc")
        });
    usable
        .or(fallback)
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Why a job's `agent_path` is not a package this machine may build.
#[derive(Debug)]
pub enum Unconfined {
    /// The path has a `..` component.
    ParentDir {
        agent_path: String,
    },
    /// An absolute path under neither the backend's prefix nor the agents root.
    OutsideRoot {
        agent_path: String,
        prefix: PathBuf,
    },
    /// The agents root itself cannot be resolved (missing, no rights).
    RootUnusable {
        root: PathBuf,
        error: std::io::Error,
    },
    /// Nothing is at the path on this machine.
    Missing {
        agent_path: String,
        local: PathBuf,
    },
    /// The path resolves (through a symlink) outside the agents root, or to the root itself.
    Escapes {
        agent_path: String,
        real: PathBuf,
    },
    NotADirectory {
        agent_path: String,
    },
    NoDockerfile {
        package: PathBuf,
    },
}

impl std::fmt::Display for Unconfined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unconfined::ParentDir { agent_path } => write!(
                f,
                "agent_path '{agent_path}' contains '..'; it must point inside the agents root"
            ),
            Unconfined::OutsideRoot { agent_path, prefix } => write!(
                f,
                "agent_path '{agent_path}' is outside the agents root {}",
                prefix.display()
            ),
            Unconfined::RootUnusable { root, error } => write!(
                f,
                "the agents root {} is not usable: {error}",
                root.display()
            ),
            Unconfined::Missing { agent_path, local } => write!(
                f,
                "agent_path '{agent_path}' does not exist (looked for {})",
                local.display()
            ),
            Unconfined::Escapes { agent_path, real } => write!(
                f,
                "agent_path '{agent_path}' resolves to {} which is outside the agents root (symlink escape?)",
                real.display()
            ),
            Unconfined::NotADirectory { agent_path } => {
                write!(f, "agent_path '{agent_path}' is not a directory")
            }
            Unconfined::NoDockerfile { package } => {
                write!(f, "agent package {} has no Dockerfile", package.display())
            }
        }
    }
}

impl std::error::Error for Unconfined {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unconfined::RootUnusable { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Resolve `agent_path` on this machine and confine it to the agents root.
pub fn confine(agent_path: &str, paths: &Paths) -> Result<PathBuf, Unconfined> {
    let p = Path::new(agent_path);
    let named = || agent_path.to_string();
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Unconfined::ParentDir {
            agent_path: named(),
        });
    }
    let local = if let Ok(rest) = p.strip_prefix(paths.backend_prefix) {
        paths.agents_root.join(rest)
    } else if let Ok(rest) = p.strip_prefix(paths.agents_root) {
        paths.agents_root.join(rest)
    } else if p.is_absolute() {
        return Err(Unconfined::OutsideRoot {
            agent_path: named(),
            prefix: paths.backend_prefix.to_path_buf(),
        });
    } else {
        paths.agents_root.join(p)
    };
    let root = paths
        .agents_root
        .canonicalize()
        .map_err(|error| Unconfined::RootUnusable {
            root: paths.agents_root.to_path_buf(),
            error,
        })?;
    let real = match local.canonicalize() {
        Ok(real) => real,
        Err(_) => {
            return Err(Unconfined::Missing {
                agent_path: named(),
                local,
            })
        }
    };
    if !real.starts_with(&root) || real == root {
        return Err(Unconfined::Escapes {
            agent_path: named(),
            real,
        });
    }
    if !real.is_dir() {
        return Err(Unconfined::NotADirectory {
            agent_path: named(),
        });
    }
    if !real.join("Dockerfile").is_file() {
        return Err(Unconfined::NoDockerfile { package: real });
    }
    Ok(real)
}

/// Turn raw stream fields into a job or a rejection: the contract's decoder, then the package
/// resolved on this machine. Never panics on any input.
pub fn parse(
    stream_id: &str,
    raw: &[(String, Vec<u8>)],
    paths: &Paths,
) -> Result<DeployJob, Rejection> {
    let entry = Entry::read(raw);
    let backend = backend_url(entry.get(stream::BASE_URL), paths.nasiko_api_url);
    let reject = |agent: Option<String>, reason: String| Rejection {
        stream_id: stream_id.to_string(),
        agent,
        owner_id: cap(entry.get(stream::OWNER_ID).unwrap_or("")),
        upload_id: cap(entry.get(stream::UPLOAD_ID).unwrap_or("")),
        backend_url: backend.clone(),
        reason: cap(&reason),
    };
    let job = stream::decode(&entry).map_err(|e| reject(e.agent, e.reason))?;
    let agent_path = match &job.package {
        PackagePath::Given(p) => p.clone(),
        PackagePath::Version(v) => {
            format!("{}/{}/{}", paths.backend_prefix.display(), job.agent, v)
        }
    };
    let package =
        confine(&agent_path, paths).map_err(|e| reject(Some(job.agent.clone()), e.to_string()))?;
    Ok(DeployJob {
        stream_id: stream_id.to_string(),
        action: job.action,
        agent: job.agent,
        package,
        owner_id: job.owner_id,
        upload_id: job.upload_id,
        upload_type: job.upload_type,
        version: job.version,
        backend_url: backend,
        webhook_url: job.webhook_url,
        strategy: job.strategy,
        keep_old: job.keep_old,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Root(PathBuf);
    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn root() -> Root {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let r = std::env::temp_dir().join(format!("ba-job-{}-{n}", std::process::id()));
        std::fs::create_dir_all(r.join("agents/translator/v1.0.0")).unwrap();
        std::fs::write(
            r.join("agents/translator/v1.0.0/Dockerfile"),
            "FROM scratch\n",
        )
        .unwrap();
        std::fs::create_dir_all(r.join("outside")).unwrap();
        std::fs::write(r.join("outside/Dockerfile"), "FROM scratch\n").unwrap();
        std::os::unix::fs::symlink(r.join("outside"), r.join("agents/escape")).unwrap();
        Root(r)
    }

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn run(r: &Root, pairs: &[(&str, &str)]) -> Result<DeployJob, Rejection> {
        let agents = r.0.join("agents");
        let paths = Paths {
            agents_root: &agents,
            backend_prefix: Path::new("/app/agents"),
            nasiko_api_url: Some("http://backend:8000"),
        };
        parse("1-0", &f(pairs), &paths)
    }

    fn reason(r: Result<DeployJob, Rejection>) -> String {
        r.expect_err("expected a rejection").reason
    }

    #[test]
    fn a_backend_deploy_job_is_parsed_with_the_path_mapped_onto_the_local_root() {
        let r = root();
        let j = run(
            &r,
            &[
                ("command", "deploy_agent"),
                ("agent_name", "translator"),
                ("agent_path", "/app/agents/translator/v1.0.0"),
                ("owner_id", "u1"),
                ("upload_id", "up1"),
                ("upload_type", "zip"),
                ("base_url", "http://nasiko-backend:8000"),
                ("webhook_url", "http://n8n/x"),
            ],
        )
        .unwrap();
        assert_eq!(j.action, Action::Deploy);
        assert_eq!(j.agent, "translator");
        assert!(j.package.ends_with("agents/translator/v1.0.0"));
        assert_eq!(j.backend_url.as_deref(), Some("http://nasiko-backend:8000"));
        assert_eq!(j.webhook_url.as_deref(), Some("http://n8n/x"));
    }

    #[test]
    fn action_wins_over_command_and_rollback_uses_agent_id() {
        let r = root();
        let j = run(
            &r,
            &[
                ("command", "deploy_agent"),
                ("action", "update_agent"),
                ("agent_name", "translator"),
                ("agent_path", "/app/agents/translator/v1.0.0"),
            ],
        )
        .unwrap();
        assert_eq!(j.action, Action::Update);
        let j = run(
            &r,
            &[
                ("command", "deploy_agent"),
                ("action", "rollback_agent"),
                ("agent_name", "My Translator"),
                ("agent_id", "translator"),
                ("target_version", "v1.0.0"),
            ],
        )
        .unwrap();
        assert_eq!(
            (j.action, j.agent.as_str()),
            (Action::Rollback, "translator")
        );
        assert!(j.package.ends_with("translator/v1.0.0"));
    }

    #[test]
    fn cluster_base_urls_fall_back_to_nasiko_api_url() {
        assert_eq!(
            backend_url(
                Some("http://nasiko-backend.nasiko.svc.cluster.local:8000"),
                Some("http://b:1")
            )
            .as_deref(),
            Some("http://b:1")
        );
        assert_eq!(
            backend_url(None, Some("http://b:1/")).as_deref(),
            Some("http://b:1")
        );
        assert_eq!(
            backend_url(Some("http://localhost:8000/"), None).as_deref(),
            Some("http://localhost:8000")
        );
        assert_eq!(backend_url(Some("not a url"), None), None);
    }

    #[test]
    fn malformed_entries_are_rejected_with_a_reason_that_says_what_is_wrong() {
        let r = root();
        let p = ("agent_path", "/app/agents/translator/v1.0.0");
        assert!(reason(run(&r, &[])).contains("the entry has no fields"));
        assert!(
            reason(run(&r, &[("agent_name", "translator"), p])).contains("missing field 'command'")
        );
        assert!(reason(run(&r, &[("command", "deploy_agent"), p]))
            .contains("missing required field 'agent_name'"));
        assert!(reason(run(
            &r,
            &[("command", "deploy_agent"), ("agent_name", "translator")]
        ))
        .contains("missing required field 'agent_path'"));
        assert!(reason(run(
            &r,
            &[("command", "deploy_agent"), ("agent_name", "My Agent"), p]
        ))
        .contains("is not a valid agent name"));
        assert!(reason(run(
            &r,
            &[("command", "deploy_agent"), ("agent_name", "Translator"), p]
        ))
        .contains("is not a valid agent name"));
        assert!(reason(run(
            &r,
            &[("command", "deploy_agent"), ("agent_name", "x;rm -rf /"), p]
        ))
        .contains("is not a valid agent name"));
        assert!(reason(run(
            &r,
            &[("command", "explode"), ("agent_name", "translator"), p]
        ))
        .contains("unknown command 'explode'"));
        assert!(reason(run(
            &r,
            &[
                ("command", "deploy_agent"),
                ("action", "nuke"),
                ("agent_name", "translator"),
                p
            ]
        ))
        .contains("unknown action 'nuke'"));
        assert!(reason(run(
            &r,
            &[
                ("command", "deploy_agent"),
                ("action", "rollback_agent"),
                ("agent_name", "translator"),
                p
            ]
        ))
        .contains("missing required field 'agent_id'"));
    }

    #[test]
    fn hostile_paths_are_confined_to_the_agents_root() {
        let r = root();
        let job = |p: &str| {
            run(
                &r,
                &[
                    ("command", "deploy_agent"),
                    ("agent_name", "translator"),
                    ("agent_path", p),
                ],
            )
        };
        assert!(reason(job("/app/agents/../../etc")).contains("contains '..'"));
        assert!(reason(job("../../etc")).contains("contains '..'"));
        assert!(reason(job("/etc")).contains("outside the agents root"));
        assert!(
            reason(job("/app/agents/escape")).contains("outside the agents root (symlink escape?)")
        );
        assert!(reason(job("/app/agents/nope/v1")).contains("does not exist"));
        assert!(reason(job("/app/agents")).contains("outside the agents root"));
        assert!(reason(job("/app/agents/translator")).contains("has no Dockerfile"));
    }

    #[test]
    fn binary_junk_is_rejected_not_crashed_on() {
        let r = root();
        let agents = r.0.join("agents");
        let paths = Paths {
            agents_root: &agents,
            backend_prefix: Path::new("/app/agents"),
            nasiko_api_url: None,
        };
        let raw = vec![
            ("command".to_string(), b"deploy_agent".to_vec()),
            ("agent_name".to_string(), b"translator".to_vec()),
            ("agent_path".to_string(), vec![0xff, 0xfe, 0x00]),
        ];
        assert!(parse("1-0", &raw, &paths)
            .unwrap_err()
            .reason
            .contains("not valid UTF-8"));
        let raw = vec![("command".to_string(), vec![0xc3, 0x28])];
        assert!(parse("1-0", &raw, &paths).is_err());
    }
}
