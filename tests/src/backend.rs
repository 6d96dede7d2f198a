//! The Nasiko backend stand-in: the upload-status, registry and auth-permissions endpoints of
//! contracts.md §5. Records every call; can be told to answer 404/500 or slowly.
//!
//! Control: `GET|DELETE /__standin/calls`, `PUT /__standin/mode {"status":N|null,"delay_ms":N}`.

use crate::http::{json_response, spawn_connection, ReadRequest, Resp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One call the stand-in received.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub status: u16,
}

/// Forced behaviour: a fixed status for every call, and/or a delay.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Mode {
    pub status: Option<u16>,
    #[serde(default)]
    pub delay_ms: u64,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    mode: Mutex<Mode>,
}

pub struct BackendStandin {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BackendStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BackendStandin {
    pub async fn start(addr: SocketAddr) -> std::io::Result<BackendStandin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s2 = shared.clone();
        let handler = Arc::new(move |req: ReadRequest| handle(s2.clone(), req));
        let task = tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    spawn_connection(stream, handler.clone(), watch::channel(0).1);
                }
            }
        });
        Ok(BackendStandin { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().expect("calls lock").clone()
    }
    pub fn set_mode(&self, m: Mode) {
        *self.shared.mode.lock().expect("mode lock") = m;
    }
}

async fn handle(shared: Arc<Shared>, req: ReadRequest) -> Resp {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/__standin/calls") => {
            let calls = shared.calls.lock().expect("calls lock").clone();
            return json_response(200, Some(&json!({ "calls": calls })));
        }
        ("DELETE", "/__standin/calls") => {
            shared.calls.lock().expect("calls lock").clear();
            return json_response(204, None);
        }
        ("PUT", "/__standin/mode") => {
            return match serde_json::from_slice::<Mode>(&req.body) {
                Ok(m) => {
                    *shared.mode.lock().expect("mode lock") = m;
                    json_response(200, Some(&json!(m)))
                }
                Err(e) => json_response(400, Some(&json!({"message": e.to_string()}))),
            };
        }
        ("GET", "/health") => {
            return json_response(200, Some(&json!({"status": "ok", "standin": true})))
        }
        _ => {}
    }
    let mode = *shared.mode.lock().expect("mode lock");
    if mode.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mode.delay_ms)).await;
    }
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let known = matches!(
        (req.method.as_str(), segs.as_slice()),
        ("PUT", ["api", "v1", "upload-status", "agent", _, "latest"])
            | ("PUT", ["api", "v1", "registry", "agent", _])
            | ("POST", ["auth", "agents", _, "permissions"])
    );
    let status = mode.status.unwrap_or(if known { 200 } else { 404 });
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    shared.calls.lock().expect("calls lock").push(Call {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        body: body.clone(),
        status,
    });
    if status < 300 {
        json_response(status, Some(&json!({"ok": true, "echo": body})))
    } else {
        json_response(status, Some(&json!({"detail": "stand-in forced status"})))
    }
}
