//! The job stream (contracts.md §3): its key, group and field names, the one encoder of a job
//! entry (the CLI, the tests and the benches write jobs with it) and the one decoder (the build
//! agent reads them with it). The decoder accepts what upstream's producer writes and refuses a
//! broken or hostile entry with a reason that says what is wrong; it never panics.

use std::collections::BTreeMap;

pub const KEY: &str = "orchestration:commands";
pub const GROUP: &str = "orchestrator";
pub const COMMAND: &str = "command";
pub const ACTION: &str = "action";
pub const AGENT_NAME: &str = "agent_name";
pub const AGENT_ID: &str = "agent_id";
pub const AGENT_PATH: &str = "agent_path";
pub const BASE_URL: &str = "base_url";
pub const OWNER_ID: &str = "owner_id";
pub const UPLOAD_ID: &str = "upload_id";
pub const UPLOAD_TYPE: &str = "upload_type";
pub const VERSION: &str = "version";
pub const TARGET_VERSION: &str = "target_version";
pub const WEBHOOK_URL: &str = "webhook_url";
pub const UPDATE_STRATEGY: &str = "update_strategy";
/// Whether an update removes the version it replaces (`True`, the default) or keeps its
/// container stopped (`False`: Python's `str(False)`), for a fast rollback.
pub const CLEANUP_OLD: &str = "cleanup_old";
/// An update's new version (upstream writes it beside `version`; it wins).
pub const NEW_VERSION: &str = "new_version";
/// When the job was queued (seconds since the epoch, as text); informative only.
pub const TIMESTAMP: &str = "timestamp";
/// Who queued the job; informative only.
pub const SOURCE: &str = "source";

/// `command` of every job.
pub const DEPLOY_AGENT: &str = "deploy_agent";
/// `update_strategy` that replaces a running agent in place, not beside it (blue/green).
pub const RECREATE: &str = "recreate";
/// `update_strategy` that starts the new version's replicas one at a time.
pub const ROLLING: &str = "rolling";

/// How an update replaces what runs (`update_strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// `blue-green`, and anything else: the new version starts whole beside the old one.
    #[default]
    BlueGreen,
    /// `rolling`: beside the old one too, a replica at a time, each ready before the next.
    Rolling,
    /// `recreate`: in place.
    Recreate,
}

impl Strategy {
    pub fn read(value: Option<&str>) -> Strategy {
        match value {
            Some(RECREATE) => Strategy::Recreate,
            Some(ROLLING) => Strategy::Rolling,
            _ => Strategy::BlueGreen,
        }
    }
}
/// `upload_type` of a plain deploy and of an update, as upstream writes them.
pub const UPLOAD_DIRECTORY: &str = "directory";
pub const UPLOAD_UPDATE: &str = "agent_update";

/// What a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Deploy,
    Update,
    Rollback,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => DEPLOY_AGENT,
            Action::Update => "update_agent",
            Action::Rollback => "rollback_agent",
        }
    }

    /// The action written in an `action` field (`update_agent`, `rollback_agent`).
    pub fn from_action(s: &str) -> Option<Action> {
        [Action::Update, Action::Rollback]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// A job as a producer writes it. `None` fields are not written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobEntry {
    /// `None`: a plain deploy (`command` alone); an update or rollback also names the agent in
    /// `agent_id` and the version in `new_version`, as upstream's producer does.
    pub action: Option<Action>,
    pub agent_name: String,
    pub agent_path: Option<String>,
    pub base_url: Option<String>,
    pub owner_id: Option<String>,
    pub upload_id: Option<String>,
    pub upload_type: Option<String>,
    pub version: Option<String>,
    pub target_version: Option<String>,
    pub update_strategy: Option<String>,
    pub cleanup_old: Option<String>,
    pub webhook_url: Option<String>,
    pub timestamp: Option<String>,
    pub source: Option<String>,
}

impl JobEntry {
    /// A plain deploy of the package at `agent_path`.
    pub fn deploy(agent_name: &str, agent_path: &str) -> JobEntry {
        JobEntry {
            agent_name: agent_name.into(),
            agent_path: Some(agent_path.into()),
            ..JobEntry::default()
        }
    }
}

/// The stream fields of `job`, in the order upstream's producer writes them.
pub fn encode(job: &JobEntry) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (COMMAND, DEPLOY_AGENT.to_string()),
        (AGENT_NAME, job.agent_name.clone()),
    ];
    let mut put = |k: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            out.push((k, v.clone()));
        }
    };
    put(AGENT_PATH, &job.agent_path);
    put(BASE_URL, &job.base_url);
    put(OWNER_ID, &job.owner_id);
    put(UPLOAD_ID, &job.upload_id);
    put(UPLOAD_TYPE, &job.upload_type);
    put(VERSION, &job.version);
    put(TARGET_VERSION, &job.target_version);
    put(TIMESTAMP, &job.timestamp);
    put(SOURCE, &job.source);
    put(WEBHOOK_URL, &job.webhook_url);
    put(UPDATE_STRATEGY, &job.update_strategy);
    put(CLEANUP_OLD, &job.cleanup_old);
    if let Some(a) = job.action.filter(|a| *a != Action::Deploy) {
        out.push((ACTION, a.as_str().to_string()));
        out.push((AGENT_ID, job.agent_name.clone()));
        if let Some(v) = &job.version {
            out.push((NEW_VERSION, v.clone()));
        }
    }
    out
}

/// A raw stream entry's fields, read as text. A field that is not UTF-8 is remembered by name
/// (the decoder refuses the entry once it knows which agent it is about).
pub struct Entry<'a> {
    fields: BTreeMap<&'a str, String>,
    bad_utf8: Vec<&'a str>,
    empty: bool,
}

impl<'a> Entry<'a> {
    pub fn read(raw: &'a [(String, Vec<u8>)]) -> Entry<'a> {
        let mut fields = BTreeMap::new();
        let mut bad_utf8 = Vec::new();
        for (k, v) in raw {
            match std::str::from_utf8(v) {
                Ok(s) => {
                    fields.insert(k.as_str(), s.to_string());
                }
                Err(_) => bad_utf8.push(k.as_str()),
            }
        }
        Entry {
            fields,
            bad_utf8,
            empty: raw.is_empty(),
        }
    }

    /// A field, trimmed; `None` when missing or blank.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .get(k)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }
}

/// Where the job's package is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackagePath {
    /// `agent_path` as the producer wrote it (resolve it on this machine).
    Given(String),
    /// A rollback without `agent_path`: the agent's folder for this version under the agents root.
    Version(String),
}

/// A decoded job: the fields the build agent acts on, checked for presence and the name rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub action: Action,
    /// Valid by [`crate::valid_agent_name`].
    pub agent: String,
    pub package: PackagePath,
    pub owner_id: String,
    pub upload_id: String,
    pub upload_type: String,
    /// `new_version`, else `target_version`, else `version`, else empty.
    pub version: String,
    pub webhook_url: Option<String>,
    /// `update_strategy`.
    pub strategy: Strategy,
    /// `cleanup_old=False` (or `false`, `0`): the replaced version is stopped, not removed.
    pub keep_old: bool,
}

/// Why an entry is not a job, and the agent it was about when its name is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub agent: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Invalid {}

fn name_error(field: &str, n: &str) -> String {
    format!(
        "{field} '{}' is not a valid agent name: use lower-case letters, digits, '_', '.' or '-', starting with a letter or digit",
        n.escape_debug()
    )
}

/// Why an entry asks for no action the build agent knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoAction {
    /// `action` is set, to something else than update_agent or rollback_agent.
    UnknownAction(String),
    /// No `action`, and `command` is something else than deploy_agent.
    UnknownCommand(String),
    /// Neither `action` nor `command`; `empty`: the entry has no fields at all.
    Missing { empty: bool },
}

impl std::fmt::Display for NoAction {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            NoAction::UnknownAction(a) => write!(
                f,
                "unknown action '{}'; expected update_agent or rollback_agent",
                a.escape_debug()
            ),
            NoAction::UnknownCommand(c) => write!(
                f,
                "unknown command '{}'; expected deploy_agent",
                c.escape_debug()
            ),
            NoAction::Missing { empty } => {
                let what = if *empty {
                    "the entry has no fields"
                } else {
                    "missing field 'command'"
                };
                write!(f, "{what}; a job needs command=deploy_agent (or an action)")
            }
        }
    }
}

impl std::error::Error for NoAction {}

/// The action an entry asks for: `action` wins over `command`.
fn action(e: &Entry) -> Result<Action, NoAction> {
    match (e.get(ACTION), e.get(COMMAND)) {
        (Some(a), _) => Action::from_action(a).ok_or_else(|| NoAction::UnknownAction(a.into())),
        (None, Some(DEPLOY_AGENT)) => Ok(Action::Deploy),
        (None, Some(other)) => Err(NoAction::UnknownCommand(other.into())),
        (None, None) => Err(NoAction::Missing { empty: e.empty }),
    }
}

/// Decode an entry into a job, or say why it is not one. Never panics on any input.
pub fn decode(e: &Entry) -> Result<Job, Invalid> {
    let invalid = |agent: Option<String>, reason: String| Invalid { agent, reason };
    let action = action(e).map_err(|why| {
        let agent = e
            .get(AGENT_NAME)
            .filter(|n| crate::valid_agent_name(n))
            .map(String::from);
        invalid(agent, why.to_string())
    })?;
    let name_field = match action {
        Action::Rollback => AGENT_ID,
        _ => AGENT_NAME,
    };
    let Some(name) = e.get(name_field) else {
        return Err(invalid(
            None,
            format!("missing required field '{name_field}'"),
        ));
    };
    if !crate::valid_agent_name(name) {
        return Err(invalid(None, name_error(name_field, name)));
    }
    let agent = name.to_string();
    if let Some(k) = e.bad_utf8.first() {
        return Err(invalid(
            Some(agent),
            format!("field '{k}' is not valid UTF-8"),
        ));
    }
    let package = match (e.get(AGENT_PATH), action, e.get(TARGET_VERSION)) {
        (Some(p), _, _) => PackagePath::Given(p.to_string()),
        (None, Action::Rollback, Some(v)) => PackagePath::Version(v.to_string()),
        (None, _, _) => {
            return Err(invalid(
                Some(agent),
                format!("missing required field '{AGENT_PATH}'"),
            ))
        }
    };
    let text = |k: &str| e.get(k).unwrap_or("").to_string();
    Ok(Job {
        action,
        package,
        owner_id: text(OWNER_ID),
        upload_id: text(UPLOAD_ID),
        upload_type: text(UPLOAD_TYPE),
        version: e
            .get(NEW_VERSION)
            .or(e.get(TARGET_VERSION))
            .or(e.get(VERSION))
            .unwrap_or("")
            .to_string(),
        webhook_url: e.get(WEBHOOK_URL).map(String::from),
        strategy: Strategy::read(e.get(UPDATE_STRATEGY)),
        keep_old: e
            .get(CLEANUP_OLD)
            .is_some_and(|v| v.eq_ignore_ascii_case("false") || v == "0"),
        agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fields: &[(&'static str, String)]) -> Vec<(String, Vec<u8>)> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into_bytes()))
            .collect()
    }

    #[test]
    fn what_the_encoder_writes_the_decoder_reads() {
        let mut j = JobEntry::deploy("translator", "/app/agents/translator/v2");
        j.owner_id = Some("u1".into());
        j.version = Some("v2".into());
        j.update_strategy = Some(RECREATE.into());
        j.cleanup_old = Some("False".into());
        for action in [None, Some(Action::Update), Some(Action::Rollback)] {
            j.action = action;
            let r = raw(&encode(&j));
            let got = decode(&Entry::read(&r)).unwrap();
            assert_eq!(got.action, action.unwrap_or(Action::Deploy));
            assert_eq!(got.agent, "translator");
            assert_eq!(
                got.package,
                PackagePath::Given("/app/agents/translator/v2".into())
            );
            assert_eq!((got.owner_id.as_str(), got.version.as_str()), ("u1", "v2"));
            assert_eq!(got.strategy, Strategy::Recreate);
            assert!(got.keep_old);
        }
    }

    #[test]
    fn a_deploy_is_command_and_name_first_and_writes_no_action() {
        let f = encode(&JobEntry::deploy("a", "/p"));
        assert_eq!(
            f,
            [
                (COMMAND, "deploy_agent".to_string()),
                (AGENT_NAME, "a".into()),
                (AGENT_PATH, "/p".into())
            ]
        );
    }

    #[test]
    fn a_rollback_without_a_path_names_its_version() {
        let r = raw(&[
            (ACTION, "rollback_agent".into()),
            (AGENT_ID, "x".into()),
            (TARGET_VERSION, "v1".into()),
        ]);
        let j = decode(&Entry::read(&r)).unwrap();
        assert_eq!(j.package, PackagePath::Version("v1".into()));
        assert_eq!(j.version, "v1");
    }

    #[test]
    fn broken_entries_say_what_is_wrong() {
        let bad = |r: Vec<(String, Vec<u8>)>| decode(&Entry::read(&r)).unwrap_err();
        assert!(bad(vec![]).reason.contains("the entry has no fields"));
        let e = bad(raw(&[(ACTION, "nuke".into()), (AGENT_NAME, "x".into())]));
        assert!(e.reason.contains("unknown action 'nuke'"), "{e}");
        assert_eq!(e.agent.as_deref(), Some("x"));
        let e = bad(vec![
            ("command".into(), b"deploy_agent".to_vec()),
            ("agent_name".into(), b"x".to_vec()),
            ("agent_path".into(), vec![0xff]),
        ]);
        assert_eq!(e.reason, "field 'agent_path' is not valid UTF-8");
        assert_eq!(e.agent.as_deref(), Some("x"));
    }
}
