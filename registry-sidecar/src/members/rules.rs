//! The membership keeper's rules, pure: the AGENT_NETWORK_MEMBERS setting, what an agent
//! network is, the gate that holds an agent back until the members are on its network, and what
//! Docker's refusals of a connect mean.

use crate::discovery::AgentsView;
use nasiko_contract::{agent_of_network, labels};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A container kept on every agent network, and the name it has there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub container: String,
    pub alias: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.container == self.alias {
            write!(f, "{}", self.container)
        } else {
            write!(f, "{} (as {})", self.container, self.alias)
        }
    }
}

/// AGENT_NETWORK_MEMBERS: comma-separated `container` or `container=alias`; empty: none.
pub fn parse_members(setting: &str) -> Result<Vec<Member>, String> {
    if setting.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut members: Vec<Member> = Vec::new();
    for entry in setting.split(',') {
        let Some((container, alias)) = nasiko_contract::parse_member(entry) else {
            return Err(format!(
                "AGENT_NETWORK_MEMBERS: '{}' is not a member; write container names separated by commas, each alone or as container=alias (letters, digits, '_', '.', '-'), e.g. kong-gateway,phoenix-observability or my-gw=kong-gateway",
                entry.trim()
            ));
        };
        if members.iter().any(|m| m.container == container) {
            return Err(format!(
                "AGENT_NETWORK_MEMBERS names container '{container}' twice; give each container once, with the one alias agents call it by"
            ));
        }
        members.push(Member {
            container: container.to_string(),
            alias: alias.to_string(),
        });
    }
    Ok(members)
}

/// Network `name`, labelled `labels`, is the own network of an agent of `stack`: its name reads
/// back to an agent (`nasiko_contract::agent_of_network`) and it carries that agent's label.
pub fn is_agent_network(stack: &str, name: &str, net_labels: &HashMap<String, String>) -> bool {
    agent_of_network(stack, name).is_some_and(|a| net_labels.get(labels::AGENT_NETWORK) == Some(&a))
}

/// What the keeper knows of the agent networks.
#[derive(Debug, Default, Clone)]
pub struct Joins {
    /// Networks every running member has been joined to (one with no member running counts):
    /// their agents pass the gate. A network stays here after a later connect failed (a
    /// recreated member's rejoin): its agents keep their routes while it is tried again.
    pub joined: HashSet<String>,
    /// Networks a member could not join, with why (retried on a timer and when a member starts).
    pub failed: BTreeMap<String, String>,
    /// Every agent network has been joined since the last (re)connect to Docker.
    pub listed: bool,
}

/// The view the reconciler gets: discovery's, with every agent on its own network that the
/// members have not joined held back as waiting, and `complete` only once the keeper has joined
/// every network since it (re)connected (so nothing held back is taken for gone and deleted).
pub fn gate(view: &AgentsView, stack: &str, joins: &Joins, members: &[Member]) -> AgentsView {
    let mut out = view.clone();
    out.complete = view.complete && joins.listed;
    let names: Vec<String> = members.iter().map(ToString::to_string).collect();
    for (id, a) in &view.agents {
        if agent_of_network(stack, &a.network).is_none() || joins.joined.contains(&a.network) {
            continue;
        }
        let why = match joins.failed.get(&a.network) {
            Some(e) => format!(": {e}"),
            None if !joins.listed => ": Docker has not answered the membership keeper yet".into(),
            None => String::new(),
        };
        out.agents.remove(id);
        out.waiting.insert(
            id.clone(),
            format!(
                "agent '{}': routed once {} joined its network {}{why}",
                a.name,
                names.join(" and "),
                a.network
            ),
        );
    }
    out
}

/// How one connect ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Connect {
    Connected,
    /// It was on the network already.
    Already,
    /// The network is gone (removed meanwhile).
    NetworkGone,
    /// The member is gone (removed meanwhile): skipped, as a member that does not exist.
    MemberGone,
}

/// Docker's answer to `POST /networks/{net}/connect` that is not a success.
pub fn connect_refusal(status: u16, message: &str) -> Result<Connect, String> {
    let m = message.to_ascii_lowercase();
    match status {
        403 | 409 if m.contains("already") => Ok(Connect::Already),
        404 if m.contains("network") => Ok(Connect::NetworkGone),
        404 => Ok(Connect::MemberGone),
        _ => Err(format!("Docker answered {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::AgentEndpoint;

    fn member(c: &str, a: &str) -> Member {
        Member {
            container: c.into(),
            alias: a.into(),
        }
    }

    #[test]
    fn members_parse_and_bad_entries_say_what_to_write() {
        assert_eq!(
            parse_members(nasiko_contract::AGENT_NETWORK_MEMBERS).unwrap(),
            [
                member("kong-gateway", "kong-gateway"),
                member("phoenix-observability", "phoenix-observability")
            ]
        );
        assert_eq!(
            parse_members(" e2e-gw = kong-gateway ").unwrap(),
            [member("e2e-gw", "kong-gateway")]
        );
        assert_eq!(parse_members("  ").unwrap(), []);
        for bad in ["kong-gateway,", "a b", "gw=", "a/b,c", "gw=kong gateway"] {
            let e = parse_members(bad).unwrap_err();
            assert!(
                e.contains("container=alias") && e.contains("e.g."),
                "{bad:?}: {e}"
            );
        }
        assert!(parse_members("gw,gw=x").unwrap_err().contains("twice"));
    }

    #[test]
    fn an_agent_network_is_named_for_an_agent_of_the_stack_and_labelled_so() {
        let l = |v: &str| HashMap::from([(labels::AGENT_NETWORK.to_string(), v.to_string())]);
        assert!(is_agent_network(
            "nasiko-network",
            "nasiko-network-agent-foo",
            &l("foo")
        ));
        assert!(!is_agent_network(
            "nasiko-network",
            "nasiko-network-agent-foo",
            &l("bar")
        ));
        assert!(!is_agent_network(
            "nasiko-network",
            "nasiko-network-agent-foo",
            &HashMap::new()
        ));
        assert!(!is_agent_network(
            "other",
            "nasiko-network-agent-foo",
            &l("foo")
        ));
        assert!(!is_agent_network(
            "nasiko-network",
            "nasiko-network",
            &l("foo")
        ));
    }

    #[test]
    fn docker_refusals_that_mean_joined_or_gone_are_not_errors() {
        let ok = |s, m| connect_refusal(s, m);
        assert_eq!(
            ok(403, "endpoint with name gw already exists in network n"),
            Ok(Connect::Already)
        );
        assert_eq!(
            ok(409, "container is already attached to network n"),
            Ok(Connect::Already)
        );
        assert_eq!(ok(404, "network n not found"), Ok(Connect::NetworkGone));
        assert_eq!(ok(404, "No such container: gw"), Ok(Connect::MemberGone));
        let e = ok(
            500,
            "no available IPv4 addresses on this network's address pools",
        )
        .unwrap_err();
        assert!(e.contains("500") && e.contains("address pools"), "{e}");
        assert!(ok(403, "operation not permitted").is_err());
    }

    fn endpoint(name: &str, network: &str) -> AgentEndpoint {
        AgentEndpoint::labelled(name, &format!("id-{name}"), "10.213.0.2", network)
    }

    #[test]
    fn an_agent_on_its_own_network_waits_for_the_members_and_a_legacy_one_does_not() {
        let mut view = AgentsView {
            complete: true,
            ..Default::default()
        };
        for (name, net) in [
            ("a", "nasiko-network-agent-a"),
            ("b", "nasiko-network-agent-b"),
            ("c", "nasiko-network"),
        ] {
            view.agents.insert(
                format!("id-{name}"),
                std::sync::Arc::new(endpoint(name, net)),
            );
        }
        let members = [
            member("gw", "kong-gateway"),
            member("phoenix-observability", "phoenix-observability"),
        ];
        let mut joins = Joins::default();
        // not yet connected to Docker: only the legacy agent passes, and nothing is complete
        let out = gate(&view, "nasiko-network", &joins, &members);
        assert_eq!(out.agents.keys().collect::<Vec<_>>(), ["id-c"]);
        assert!(!out.complete);
        assert!(
            out.waiting["id-a"].contains("Docker has not answered"),
            "{:?}",
            out.waiting
        );
        joins.listed = true;
        joins.joined.insert("nasiko-network-agent-a".into());
        joins.failed.insert(
            "nasiko-network-agent-b".into(),
            "gw could not join: boom".into(),
        );
        let out = gate(&view, "nasiko-network", &joins, &members);
        assert!(out.complete);
        assert_eq!(out.agents.keys().collect::<Vec<_>>(), ["id-a", "id-c"]);
        let w = &out.waiting["id-b"];
        assert!(
            w.contains("gw (as kong-gateway) and phoenix-observability joined its network nasiko-network-agent-b: gw could not join: boom"),
            "{w}"
        );
    }
}
