//! A small JSON HTTP client (hyper) with a per-request timeout, for the backend and auth calls.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(timeout));
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(10))
                .build(c),
            timeout,
        }
    }

    /// Send `body` as JSON; Ok(status) when an answer came, Err(why) when none did.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<u16, SendError> {
        let mut b = hyper::Request::builder().method(method).uri(url);
        let bytes = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(bytes))
            .map_err(|e| SendError::Invalid(format!("bad request to {url}: {e}")))?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| SendError::NoAnswer(format!("{url}: {}", root_cause(&e))))?;
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            Ok(status)
        };
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| {
            SendError::NoAnswer(format!("{url}: no answer within {:?}", self.timeout))
        })?
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The request cannot be made (e.g. a malformed URL): retrying cannot help.
    Invalid(String),
    /// Refused, reset, unresolvable or timed out: the other side may answer later.
    NoAnswer(String),
}

impl SendError {
    pub fn retryable(&self) -> bool {
        matches!(self, SendError::NoAnswer(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Invalid(m) | SendError::NoAnswer(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SendError {}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}
