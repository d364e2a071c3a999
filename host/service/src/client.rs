//! The API's client, used by the `rayos` CLI and the tests: HTTP/1.1 over
//! the service's unix socket (hyper), and the event stream (WebSocket,
//! tokio-tungstenite). Blocking calls run on a private current-thread runtime.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Where the CLI looks for the service when neither `--socket` nor
/// `$RAYOS_SOCKET` says.
pub fn default_socket() -> PathBuf {
    crate::policy::Machine::this().runtime_dir.join("rayos.sock")
}

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("cannot reach the RayOS host service at {path}: {source} (is `rayos host` running?)")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("talking to the RayOS host service: {0}")]
    Http(String),
    #[error("the RayOS host service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{message}")]
    Api { status: u16, code: String, message: String },
    #[error("unreadable answer from the RayOS host service: {0}")]
    Decode(String),
}

impl ApiClientError {
    /// The service's error code (`unknown_vm`, `policy`, ...), if it answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub struct ApiClient {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
    /// Per request.
    pub timeout: Duration,
}

/// One exchange: status and the body as JSON (`Null` when empty).
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(StatusCode, serde_json::Value), ApiClientError> {
    let raw = body.map(|b| serde_json::to_vec(b).expect("json"));
    let (status, bytes) = request_raw(socket, method, path, raw.as_deref()).await?;
    let v = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiClientError::Decode(format!("{path}: {e}")))?
    };
    Ok((status, v))
}

/// One exchange with a raw body (tests send malformed ones).
pub async fn request_raw(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(StatusCode, Bytes), ApiClientError> {
    let stream =
        UnixStream::connect(socket).await.map_err(|source| ApiClientError::Connect { path: socket.into(), source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "rayos")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.map(<[u8]>::to_vec).unwrap_or_default())))
        .map_err(|e| ApiClientError::Http(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| ApiClientError::Http(e.to_string()))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| ApiClientError::Http(e.to_string()))?.to_bytes();
    Ok((status, bytes))
}

/// The error an answer carries, if it is one.
fn check(status: StatusCode, v: serde_json::Value) -> Result<serde_json::Value, ApiClientError> {
    if status.is_success() {
        return Ok(v);
    }
    Err(ApiClientError::Api {
        status: status.as_u16(),
        code: v["error"].as_str().unwrap_or("unknown").to_string(),
        message: v["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}")),
    })
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> ApiClient {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        ApiClient { socket: socket.into(), rt, timeout: Duration::from_secs(60) }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ApiClientError> {
        let (status, v) = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, request(&self.socket, method, path, body.as_ref())).await })
            .map_err(|_| ApiClientError::Timeout(timeout))??;
        check(status, v)
    }

    pub fn get(&self, path: &str) -> Result<serde_json::Value, ApiClientError> {
        self.call(Method::GET, path, None, self.timeout)
    }

    /// POST with a body; `timeout` for long calls (a stop, a launch that waits).
    pub fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, ApiClientError> {
        self.call(Method::POST, path, Some(body), timeout)
    }

    /// Reads events until `count` arrived, `timeout` passed or `each` returns false.
    pub fn events(
        &self,
        count: Option<usize>,
        timeout: Duration,
        mut each: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<usize, ApiClientError> {
        self.rt.block_on(async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiClientError::Connect { path: self.socket.clone(), source })?;
            let (mut ws, _) = tokio_tungstenite::client_async("ws://rayos/v1/events", stream)
                .await
                .map_err(|e| ApiClientError::Http(e.to_string()))?;
            let mut n = 0;
            let deadline = tokio::time::Instant::now() + timeout;
            while count.is_none_or(|c| n < c) {
                let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => break,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Err(ApiClientError::Http(e.to_string())),
                    Ok(Some(Ok(m))) => m,
                };
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                    let v: serde_json::Value =
                        serde_json::from_str(&t).map_err(|e| ApiClientError::Decode(e.to_string()))?;
                    n += 1;
                    if !each(&v) {
                        break;
                    }
                }
            }
            Ok(n)
        })
    }
}
