//! Small HTTP plumbing shared by the stand-ins and the tests: a hyper connection server,
//! JSON responses, and a minimal client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub type Resp = Response<Full<Bytes>>;

/// A request with its body read.
pub struct ReadRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

pub fn json_response(status: u16, body: Option<&Value>) -> Resp {
    let mut b = Response::builder()
        .status(status)
        .header("Server", "kong/3.4.2");
    let bytes = match body {
        Some(v) => {
            b = b.header("Content-Type", "application/json; charset=utf-8");
            Bytes::from(serde_json::to_vec(v).unwrap_or_default())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(bytes))
        .expect("static response parts are valid")
}

/// Serve one accepted connection with `handler` until it closes or `kill` changes
/// (a closed `kill` channel never ends the connection).
pub fn spawn_connection<F, Fut>(stream: TcpStream, handler: Arc<F>, mut kill: watch::Receiver<u64>)
where
    F: Fn(ReadRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let inc = ReadRequest {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    headers: parts.headers,
                    body,
                };
                Ok::<_, std::convert::Infallible>(handler(inc).await)
            }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
        tokio::select! {
            _ = conn => {}
            Ok(()) = kill.changed() => {}
        }
    });
}

/// Why a request got no answer.
#[derive(Debug, Clone)]
pub enum SendError {
    /// No connection could be made: nothing was sent.
    Connect(String),
    Timeout(Duration),
    Failed(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) | SendError::Failed(e) => write!(f, "{e}"),
            SendError::Timeout(d) => write!(f, "timed out after {d:?}"),
        }
    }
}

/// A plain HTTP/1 client with a per-request timeout.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        HttpClient {
            inner: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(5))
                .build(conn),
            timeout,
        }
    }

    /// Send a request; returns (status, headers, body bytes).
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
        self.forward(method, url, headers, body)
            .await
            .map_err(|e| e.to_string())
    }

    /// Send a request, telling a connection that could not be made (nothing was sent: safe to
    /// try elsewhere) from a timeout and from a failure after sending.
    pub async fn forward(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), SendError> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| SendError::Failed(e.to_string()))?;
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                if e.is_connect() {
                    SendError::Connect(format!("{e:?}"))
                } else {
                    SendError::Failed(format!("{e:?}"))
                }
            })?;
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| SendError::Failed(e.to_string()))?
                .to_bytes();
            Ok((parts.status.as_u16(), parts.headers, bytes))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| SendError::Timeout(self.timeout))?
    }

    /// Send JSON (or nothing) and parse the answer as JSON (Null when empty or not JSON).
    pub async fn json(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let (bytes, headers): (Bytes, Vec<(&str, &str)>) = match body {
            Some(v) => (
                Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
                vec![("content-type", "application/json")],
            ),
            None => (Bytes::new(), vec![]),
        };
        let (status, _, body) = self.send(method, url, &headers, bytes).await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}
