//! Status reporting, in one place: the Redis hash `agent:status:{name}` (replaced whole on every
//! write, 24 h TTL), the backend upload-status PUT with the stage/progress table, the registry PUT
//! and the auth permissions call (contracts.md §5).

use crate::http::HttpClient;
use crate::outbox::{self, Delivery, Outbox};
use redis::aio::ConnectionManager;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Received,
    Building,
    Deploying,
    Registering,
    Done,
    Failed,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Received => "received",
            Stage::Building => "building",
            Stage::Deploying => "deploying",
            Stage::Registering => "registering",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }
    /// (status, progress) of the backend table.
    pub fn status(self) -> (&'static str, u8) {
        match self {
            Stage::Received => ("orchestration_processing", 5),
            Stage::Building => ("building", 25),
            Stage::Deploying => ("deploying", 50),
            Stage::Registering => ("registering", 90),
            Stage::Done => ("completed", 100),
            Stage::Failed => ("failed", 0),
        }
    }
}

/// Why the owner's permissions for an agent were not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionsError {
    /// The auth service answered, with a status other than 2xx.
    Refused { code: u16, url: String },
    /// No answer from the auth service, after the retries.
    Unreachable { url: String },
}

impl std::fmt::Display for PermissionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PermissionsError::Refused { code, url } => {
                write!(f, "auth service answered {code} to {url}")
            }
            PermissionsError::Unreachable { url } => {
                write!(f, "auth service unreachable at {url}")
            }
        }
    }
}

impl std::error::Error for PermissionsError {}

/// Who a report is about.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub agent: String,
    pub stream_id: String,
    pub owner_id: String,
    pub upload_id: String,
    pub upload_type: String,
    pub backend_url: Option<String>,
}

/// Extra facts known at a stage.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub url: Option<String>,
    pub container_id: Option<String>,
    pub registry_id: Option<String>,
    pub registry_updated: Option<bool>,
}

pub fn status_key(agent: &str) -> String {
    format!("agent:status:{agent}")
}

#[derive(Clone)]
pub struct Reporter {
    pub redis: ConnectionManager,
    pub http: HttpClient,
    /// Upload-status PUTs go out from here, in the background.
    pub outbox: Outbox,
    pub updated_by: String,
    pub auth_service_url: String,
}

fn now_iso() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

impl Reporter {
    /// Replace the agent's status hash. Errors are returned (the caller decides whether to retry).
    pub async fn write_hash(
        &self,
        s: &Subject,
        stage: Stage,
        message: &str,
        f: &Facts,
    ) -> redis::RedisResult<()> {
        let (status, _) = stage.status();
        let mut fields: Vec<(&str, String)> = vec![
            ("agent_name", s.agent.clone()),
            ("status", status.to_string()),
            ("stage", stage.name().to_string()),
            ("message", message.to_string()),
            ("last_updated", now_iso()),
            ("updated_by", self.updated_by.clone()),
            ("stream_id", s.stream_id.clone()),
            ("owner_id", s.owner_id.clone()),
            ("upload_id", s.upload_id.clone()),
            ("upload_type", s.upload_type.clone()),
        ];
        for (k, v) in [
            ("url", &f.url),
            ("container_id", &f.container_id),
            ("registry_id", &f.registry_id),
        ] {
            if let Some(v) = v {
                fields.push((k, v.clone()));
            }
        }
        if let Some(b) = f.registry_updated {
            fields.push((
                "registry_updated",
                if b { "true" } else { "false" }.to_string(),
            ));
        }
        let key = status_key(&s.agent);
        let mut con = self.redis.clone();
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, 86400)
            .ignore()
            .query_async::<()>(&mut con)
            .await
    }

    /// Queue the backend upload-status PUT (delivered in the background, in order per agent;
    /// see [`Outbox`]): reporting never waits for the backend.
    pub fn upload_status(
        &self,
        s: &Subject,
        stage: Stage,
        message: &str,
        f: &Facts,
        error: Option<&str>,
    ) {
        let Some(base) = &s.backend_url else { return };
        let (status, progress) = stage.status();
        let mut body =
            json!({"status": status, "progress_percentage": progress, "status_message": message});
        if let Some(u) = &f.url {
            body["url"] = json!(u);
        }
        if let Some(r) = f.registry_updated {
            body["registry_updated"] = json!(r);
        }
        if let Some(e) = error {
            body["error_details"] = json!([e]);
        }
        self.outbox.send(Delivery {
            agent: s.agent.clone(),
            job: s.stream_id.clone(),
            method: "PUT",
            url: format!("{base}/api/v1/upload-status/agent/{}/latest", s.agent),
            body: Some(body),
        });
    }

    /// PUT the agent card to the backend registry; true when it was accepted.
    pub async fn registry(&self, s: &Subject, card: &Value) -> bool {
        let Some(base) = &s.backend_url else {
            return false;
        };
        let url = format!("{base}/api/v1/registry/agent/{}", s.agent);
        matches!(
            self.send_with_retries("PUT", &url, Some(card), &s.stream_id)
                .await,
            Some(200..=299)
        )
    }

    /// POST the owner's permissions for the agent; failure is reported, not fatal.
    pub async fn permissions(&self, s: &Subject) -> Result<(), PermissionsError> {
        if s.owner_id.is_empty() {
            return Ok(());
        }
        let owner: String = s
            .owner_id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let url = format!(
            "{}/auth/agents/{}/permissions?owner_id={owner}",
            self.auth_service_url, s.agent
        );
        match self
            .send_with_retries("POST", &url, None, &s.stream_id)
            .await
        {
            Some(200..=299) => Ok(()),
            Some(code) => Err(PermissionsError::Refused { code, url }),
            None => Err(PermissionsError::Unreachable { url }),
        }
    }

    /// A request the job waits for (its answer matters), with the outbox's retries.
    async fn send_with_retries(
        &self,
        method: &'static str,
        url: &str,
        body: Option<&Value>,
        stream_id: &str,
    ) -> Option<u16> {
        let d = Delivery {
            agent: String::new(),
            job: stream_id.to_string(),
            method,
            url: url.to_string(),
            body: body.cloned(),
        };
        outbox::deliver(&self.http, &d, 3).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permissions_failure_names_the_url() {
        let url = "http://auth:8001/auth/agents/a/permissions?owner_id=u".to_string();
        let refused = PermissionsError::Refused {
            code: 403,
            url: url.clone(),
        };
        assert_eq!(
            refused.to_string(),
            format!("auth service answered 403 to {url}")
        );
        let gone = PermissionsError::Unreachable { url: url.clone() };
        assert_eq!(
            gone.to_string(),
            format!("auth service unreachable at {url}")
        );
    }
}
