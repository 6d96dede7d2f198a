//! The declarative static-proxies file (compose-templates/static-routes.yml): parsing,
//! `${VAR}` substitution from the sidecar's settings, and validation. Pure.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The file shipped with the project, used when no file is mounted.
pub const EMBEDDED: &str = include_str!("../../compose-templates/static-routes.yml");

/// The upstream hosts the operator can override (contracts.md §2).
#[derive(Debug, Clone)]
pub struct HostOverrides {
    pub backend: String,
    pub web: String,
    pub web_path: String,
    pub auth: String,
    pub auth_port: u16,
    pub auth_service_url: String,
    pub router: String,
    pub n8n: String,
    pub chat_logger_url: String,
}

impl HostOverrides {
    fn lookup(&self, var: &str) -> Option<String> {
        Some(match var {
            "KONG_BACKEND_HOST" => self.backend.clone(),
            "KONG_WEB_HOST" => self.web.clone(),
            "KONG_WEB_PATH" => self.web_path.clone(),
            "KONG_AUTH_HOST" => self.auth.clone(),
            "KONG_AUTH_PORT" => self.auth_port.to_string(),
            "KONG_AUTH_SERVICE_URL" => self.auth_service_url.clone(),
            "KONG_ROUTER_HOST" => self.router.clone(),
            "KONG_N8N_HOST" => self.n8n.clone(),
            "CHAT_LOGGER_URL" => self.chat_logger_url.clone(),
            _ => return None,
        })
    }
}

impl Default for HostOverrides {
    fn default() -> Self {
        HostOverrides {
            backend: "nasiko-backend".into(),
            web: "nasiko-web".into(),
            web_path: "/app".into(),
            auth: "nasiko-auth-service".into(),
            auth_port: 8001,
            auth_service_url: "http://nasiko-auth-service:8001".into(),
            router: "nasiko-router".into(),
            n8n: "n8n".into(),
            chat_logger_url: "http://nasiko-chat-history:8002".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticProxy {
    pub name: String,
    pub url: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub strip_path: bool,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub plugins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub plugins: BTreeMap<String, Value>,
    #[serde(default)]
    pub agent_plugins: Vec<String>,
    #[serde(default)]
    pub proxies: Vec<StaticProxy>,
}

/// Replace `${VAR}` with the setting of that name (comment lines are left alone);
/// an unknown name is an error.
pub fn substitute(text: &str, hosts: &HostOverrides) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            out.push_str(&substitute_line(line, hosts)?);
        }
    }
    Ok(out)
}

fn substitute_line(text: &str, hosts: &HostOverrides) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated ${ in the static routes file".into());
        };
        let var = &after[..end];
        match hosts.lookup(var) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("unknown variable ${{{var}}}; known: KONG_BACKEND_HOST, KONG_WEB_HOST, KONG_WEB_PATH, KONG_AUTH_HOST, KONG_AUTH_PORT, KONG_AUTH_SERVICE_URL, KONG_ROUTER_HOST, KONG_N8N_HOST, CHAT_LOGGER_URL")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parse and validate the file's text.
pub fn parse(text: &str, hosts: &HostOverrides) -> Result<StaticConfig, String> {
    let text = substitute(text, hosts)?;
    let cfg: StaticConfig =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("invalid YAML: {e}"))?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &cfg.proxies {
        if !crate::model::valid_kong_name(&p.name) {
            return Err(format!(
                "proxy name '{}' is not a valid Kong name (letters, digits, . - _ ~)",
                p.name
            ));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(format!("proxy '{}' is listed twice", p.name));
        }
        crate::model::ServiceUrl::parse(&p.url).map_err(|e| format!("proxy '{}': {e}", p.name))?;
        if p.paths.is_empty() || p.paths.iter().any(|x| !x.starts_with('/')) {
            return Err(format!(
                "proxy '{}': paths must be non-empty and each start with '/'",
                p.name
            ));
        }
        for pl in &p.plugins {
            if !cfg.plugins.contains_key(pl) {
                return Err(format!(
                    "proxy '{}' uses plugin '{pl}' that has no entry under plugins:",
                    p.name
                ));
            }
        }
    }
    for pl in &cfg.agent_plugins {
        if !cfg.plugins.contains_key(pl) {
            return Err(format!(
                "agent_plugins lists '{pl}' that has no entry under plugins:"
            ));
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_file_has_the_eight_static_proxies_of_the_contract() {
        let cfg = parse(EMBEDDED, &HostOverrides::default()).unwrap();
        let names: Vec<&str> = cfg.proxies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "backend-api-proxy",
                "web-app-proxy",
                "auth-proxy",
                "nasiko-router",
                "landing-page",
                "gateway-status",
                "gateway-health",
                "n8n"
            ]
        );
        assert_eq!(cfg.agent_plugins, ["cors", "nasiko-auth", "chat-logger"]);
        assert_eq!(
            cfg.plugins["nasiko-auth"]["auth_service_url"],
            "http://nasiko-auth-service:8001"
        );
        let landing = &cfg.proxies[4];
        assert_eq!(
            (landing.url.as_str(), landing.preserve_host),
            ("http://nasiko-web:4000/app/", true)
        );
    }

    #[test]
    fn host_overrides_replace_variables() {
        let hosts = HostOverrides {
            backend: "be.local".into(),
            web_path: "/ui".into(),
            ..Default::default()
        };
        let cfg = parse(EMBEDDED, &hosts).unwrap();
        assert_eq!(cfg.proxies[0].url, "http://be.local:8000");
        assert_eq!(cfg.proxies[1].paths, ["/ui"]);
    }

    #[test]
    fn unknown_variables_and_bad_entries_are_errors_that_say_what_is_wrong() {
        let h = HostOverrides::default();
        assert!(parse(
            "proxies: [{name: a, url: 'http://${NOPE}:1', paths: [/a]}]",
            &h
        )
        .unwrap_err()
        .contains("unknown variable ${NOPE}"));
        assert!(parse(
            "proxies: [{name: 'a b', url: 'http://x:1', paths: [/a]}]",
            &h
        )
        .unwrap_err()
        .contains("not a valid Kong name"));
        assert!(
            parse("proxies: [{name: a, url: 'http://x:1', paths: [a]}]", &h)
                .unwrap_err()
                .contains("start with '/'")
        );
        assert!(parse(
            "proxies: [{name: a, url: 'http://x:1', paths: [/a], plugins: [cors]}]",
            &h
        )
        .unwrap_err()
        .contains("no entry under plugins"));
        assert!(parse("proxies: [{name: a, url: 'ftp://x', paths: [/a]}]", &h).is_err());
        assert!(parse("bogus: 1", &h).unwrap_err().contains("invalid YAML"));
    }
}
