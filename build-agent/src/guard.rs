//! The agent guard (`build-agent guard`): firewall rules, kept in place, that stop the host from
//! routing a packet from an agent's, a build's or a package's network (their Linux bridges are
//! named `nsk…`, [`nasiko_contract::agent_bridge`]) into any other Docker bridge.
//!
//! Docker's own isolation between bridges is a jump from `FORWARD` to `DOCKER-ISOLATION-STAGE-1`,
//! which Docker before 28.0 deletes and inserts again each time it makes a bridge network
//! (`EnsureJumpRule`, called by the bridge driver's `setupIPTables`). In between, and on a busy
//! engine that is every deploy, any container can reach every container of every other bridge:
//! the platform's Admin API, Redis, another agent. These rules live in the `mangle` table, which
//! Docker does not touch, and match the bridges by name, so they hold whatever Docker is doing
//! and whatever the networks' subnets. Packets an `nsk` bridge switches between its own members
//! (an agent and the gateway's proxy) are bridged, not routed, and pass; so does the way out to
//! the internet and the LAN.
//!
//! It runs in the host's network namespace with `NET_ADMIN` (the stack's `agent-guard` service),
//! checks the rules every few seconds (a firewall reload removes them), and removes them when it
//! is stopped. Each stack's guard tags its rules with the stack's name, so two stacks' guards
//! neither clash nor remove each other's.

use crate::process::{run, CmdError};
use nasiko_contract::AGENT_BRIDGE_PREFIX;
use std::time::Duration;

/// Where routed traffic from an agent bridge must not go: the bridges Docker makes (`br-…` for
/// user networks, `docker0`) and the agent bridges themselves.
const OTHER_BRIDGES: [&str; 3] = ["br-+", "docker0", "nsk+"];

/// How long one `iptables` call may take (it waits for the xtables lock, `-w`).
const IPTABLES: Duration = Duration::from_secs(20);

/// The guard's rules for `stack`, each as the arguments after `iptables -t mangle -C|-I|-D FORWARD`.
pub fn rules(stack: &str) -> Vec<Vec<String>> {
    let input = format!("{AGENT_BRIDGE_PREFIX}+");
    OTHER_BRIDGES
        .iter()
        .map(|out| {
            [
                "-i",
                &input,
                "-o",
                out,
                "-m",
                "physdev",
                "!",
                "--physdev-is-bridged",
                "-m",
                "comment",
                "--comment",
                &tag(stack),
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
        .collect()
}

/// The comment on a stack's rules.
pub fn tag(stack: &str) -> String {
    format!("nasiko-agent-guard {stack}")
}

/// Why the guard cannot do its job.
#[derive(Debug)]
pub struct GuardError(CmdError);

impl std::fmt::Display for GuardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot set the agent guard's firewall rules: {}. The guard needs the host's network namespace and NET_ADMIN (network_mode: host, cap_add: [NET_ADMIN]) and iptables; without it, agents are fenced by Docker's isolation alone, which Docker before 28.0 lifts for a moment each time it makes a network",
            self.0
        )
    }
}

impl std::error::Error for GuardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

async fn iptables(op: &str, rule: &[String]) -> Result<bool, CmdError> {
    let mut argv: Vec<String> = ["iptables", "-w", "-t", "mangle", op, "FORWARD"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(rule.iter().cloned());
    match run(&argv, IPTABLES, None).await {
        Ok(_) => Ok(true),
        // `-C` exits 1 when the rule is missing; anything else is an error
        Err(CmdError::Failed(_, Some(1), _)) if op == "-C" => Ok(false),
        Err(e) => Err(e),
    }
}

/// Put `stack`'s rules in place, at the top of `mangle FORWARD`; returns how many were missing.
pub async fn ensure(stack: &str) -> Result<usize, GuardError> {
    let mut missing = 0;
    for rule in rules(stack) {
        if !iptables("-C", &rule).await.map_err(GuardError)? {
            iptables("-I", &rule).await.map_err(GuardError)?;
            missing += 1;
        }
    }
    Ok(missing)
}

/// Remove `stack`'s rules (every copy); returns how many were removed.
pub async fn remove(stack: &str) -> Result<usize, GuardError> {
    let mut removed = 0;
    for rule in rules(stack) {
        while iptables("-C", &rule).await.map_err(GuardError)? {
            iptables("-D", &rule).await.map_err(GuardError)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Keep `stack`'s rules in place, checking every `every`, until `shutdown`; then remove them.
pub async fn keep(
    stack: &str,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GuardError> {
    let n = ensure(stack).await?;
    tracing::info!(
        %stack,
        rules = rules(stack).len(),
        added = n,
        "agent guard: the host routes nothing from an agent's network (bridges {AGENT_BRIDGE_PREFIX}…) into another Docker bridge"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(every) => match ensure(stack).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(%stack, put_back = n, "agent guard: rules were gone (a firewall reload?); put back"),
                Err(e) => tracing::error!(%stack, "{e}"),
            },
        }
    }
    let n = remove(stack).await?;
    tracing::info!(%stack, removed = n, "agent guard: stopped; its rules removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_drop_per_other_bridge_kind_tagged_with_the_stack() {
        let r = rules("nasiko-network");
        assert_eq!(r.len(), 3);
        for (rule, out) in r.iter().zip(OTHER_BRIDGES) {
            let s = rule.join(" ");
            assert!(s.starts_with(&format!("-i nsk+ -o {out} ")), "{s}");
            assert!(
                s.contains("-m physdev ! --physdev-is-bridged"),
                "bridged packets (an agent and the gateway on its own network) must pass: {s}"
            );
            assert!(
                s.ends_with("--comment nasiko-agent-guard nasiko-network -j DROP"),
                "{s}"
            );
        }
        assert_ne!(rules("a"), rules("b"), "each stack's rules are its own");
    }
}
