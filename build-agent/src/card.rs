//! The agent card: `AgentCard.json` in any letter case (the Python listener looked for
//! `Agentcard.json` and missed every card on Linux), completed with the fields the backend
//! registry requires; a minimal card when the package has none.

use serde_json::{json, Map, Value};
use std::path::Path;

/// Find `agentcard.json` in any case in `dir`.
pub fn find(dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .eq_ignore_ascii_case("agentcard.json")
        })
        .map(|e| e.path())
}

/// The card sent to `PUT /api/v1/registry/agent/{name}`: `id`, `name`, `description`, `url`,
/// `owner_id` always present; `deployment_type` `docker-local`.
pub fn registry_card(
    dir: &Path,
    agent: &str,
    owner_id: &str,
    gateway_url: &str,
) -> (Value, Option<String>) {
    let mut note = None;
    let mut card: Map<String, Value> = match find(dir) {
        None => {
            note = Some("no AgentCard.json in the package; registered a minimal card".to_string());
            Map::new()
        }
        Some(p) => match std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            Some(Value::Object(m)) => m,
            _ => {
                note = Some(format!(
                    "{} is not a JSON object; registered a minimal card",
                    p.display()
                ));
                Map::new()
            }
        },
    };
    card.insert("id".into(), json!(agent));
    if card
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .is_empty()
    {
        card.insert("name".into(), json!(agent));
    }
    if !card.get("description").is_some_and(|v| v.is_string()) {
        card.insert("description".into(), json!(format!("Agent {agent}")));
    }
    card.insert(
        "url".into(),
        json!(format!(
            "{gateway_url}{}",
            nasiko_contract::agent_route_path(agent)
        )),
    );
    card.insert("owner_id".into(), json!(owner_id));
    card.insert("deployment_type".into(), json!("docker-local"));
    (Value::Object(card), note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_in_any_letter_case_is_found_and_completed() {
        let d = std::env::temp_dir().join(format!("ba-card-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("AgentCard.json"),
            r#"{"name":"Translator","skills":[{"id":"t"}]}"#,
        )
        .unwrap();
        let (c, note) = registry_card(&d, "translator", "u1", "http://gw:9100");
        assert!(note.is_none());
        assert_eq!(c["skills"][0]["id"], "t");
        assert_eq!(
            (
                c["id"].as_str(),
                c["name"].as_str(),
                c["url"].as_str(),
                c["owner_id"].as_str()
            ),
            (
                Some("translator"),
                Some("Translator"),
                Some("http://gw:9100/agents/agent-translator"),
                Some("u1")
            )
        );
        assert!(c["description"].is_string());
        std::fs::remove_file(d.join("AgentCard.json")).unwrap();
        std::fs::write(d.join("agentcard.JSON"), r#"{"description":"x"}"#).unwrap();
        assert_eq!(
            registry_card(&d, "translator", "", "http://gw").0["description"],
            "x"
        );
        std::fs::remove_file(d.join("agentcard.JSON")).unwrap();
        let (c, note) = registry_card(&d, "translator", "", "http://gw");
        assert!(note.unwrap().contains("minimal card"));
        for k in ["id", "name", "description", "url", "owner_id"] {
            assert!(c.get(k).is_some(), "{k}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
