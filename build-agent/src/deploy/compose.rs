//! The names compose works with for an agent: the package's compose file, the agent's container
//! and its compose project. Pure.

use std::path::{Path, PathBuf};

pub const COMPOSE_FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
];

pub fn find_compose_file(dir: &Path) -> Option<PathBuf> {
    COMPOSE_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

pub fn container_name(agent: &str) -> String {
    nasiko_contract::agent_ref(agent)
}

/// The agent's compose project (`nasiko_contract::compose_project`: one per agent name).
pub fn project_name(agent: &str) -> String {
    nasiko_contract::compose_project(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_one_per_agent_name() {
        assert_eq!(project_name("a2a-translator"), "agent-a2a-translator");
        assert_eq!(project_name("rtcoll.x"), "agent-rtcoll_dx");
        assert_ne!(project_name("rtcoll.x"), project_name("rtcoll-x"));
        // every pair of names over the agent alphabet up to three characters maps apart
        let alphabet = ['a', 'd', '_', '.', '-', '0'];
        let mut names = vec![String::new()];
        for _ in 0..3 {
            names = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .chain(names.clone())
                .collect();
        }
        names.sort();
        names.dedup();
        assert!(names.len() > 250);
        let mut projects: Vec<String> = names.iter().map(|n| project_name(n)).collect();
        projects.sort();
        projects.dedup();
        assert_eq!(projects.len(), names.len(), "two names share a project");
        assert!(projects.iter().all(|p| p
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))));
    }
}
