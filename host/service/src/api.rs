//! The control API: HTTP/1.1 + JSON and a WebSocket event stream, on a unix
//! socket (axum on tokio). `openapi.json` beside this crate documents every
//! route; a test calls each one it lists and checks the answers against it.
//!
//! Access: the socket is 0600 (or 0660 with the policy's group), and each
//! connection's peer is checked with SO_PEERCRED: root, the service's own
//! user, or a member of the group. Bodies are capped at [`MAX_BODY`]; errors
//! are `{"error": <code>, "message": <text>}` with a matching status.

use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::UnixListener;

use crate::events::Event;
use crate::launch::{self, LaunchError, LaunchRequest};
use crate::Service;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The peer of a connection, from SO_PEERCRED.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
}

impl Connected<axum::serve::IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Peer { uid: Some(c.uid()), gid: Some(c.gid()), pid: c.pid() },
            Err(_) => Peer { uid: None, gid: None, pid: None },
        }
    }
}

/// Who may use the API: root, the service's user, or the group (primary or
/// supplementary membership, looked up by the caller into `member`).
pub fn peer_allowed(peer_uid: u32, own_uid: u32, in_group: bool) -> bool {
    peer_uid == 0 || peer_uid == own_uid || in_group
}

/// Whether `uid` (primary group `gid`) belongs to group `group`.
fn member_of(uid: u32, gid: u32, group: u32) -> bool {
    if gid == group {
        return true;
    }
    // SAFETY: getpwuid returns static storage or NULL; the name is copied
    // before any other call that could overwrite it.
    let name = unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            return false;
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_owned()
    };
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: name is NUL-terminated; groups has room for n entries and n is updated.
    let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
    r >= 0 && groups[..n.max(0) as usize].contains(&group)
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    fn unknown_vm(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown_vm", format!("no VM {name:?} in the policy"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_request" };
        ApiError::new(if code == "too_large" { status } else { StatusCode::BAD_REQUEST }, code, r.body_text())
    }
}

impl From<LaunchError> for ApiError {
    fn from(e: LaunchError) -> Self {
        let msg = e.to_string();
        match e {
            LaunchError::Bad(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg),
            LaunchError::Policy(_) => ApiError::new(StatusCode::FORBIDDEN, "policy", msg),
            LaunchError::NotLaunched(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_launched", msg),
            LaunchError::Intent(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "intent_unavailable", msg),
            LaunchError::NotRunning(_) => ApiError::new(StatusCode::CONFLICT, "vm_not_running", msg),
            LaunchError::NoSuchApp { .. } => ApiError::new(StatusCode::NOT_FOUND, "unknown_app", msg),
            LaunchError::Guest(_) => ApiError::new(StatusCode::BAD_GATEWAY, "guest", msg),
            LaunchError::Link(crate::agent_link::LinkError::WaitTimeout { .. }) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "wait_timeout", msg)
            }
            LaunchError::Link(_) => ApiError::new(StatusCode::CONFLICT, "vm_not_running", msg),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// The router (without the peer check, which [`serve`] adds).
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/vms", get(vms))
        .route("/v1/vms/{name}", get(vm))
        .route("/v1/vms/{name}/start", post(start))
        .route("/v1/vms/{name}/stop", post(stop))
        .route("/v1/vms/{name}/display", post(display))
        .route("/v1/vms/{name}/apps", get(apps))
        .route("/v1/launch", post(launch_app))
        .route("/v1/intent", post(intent))
        .route("/v1/windows", get(windows))
        .route("/v1/events", get(events))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route (see openapi.json)") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(svc)
}

async fn check_peer(
    State(svc): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let own = svc.own_uid;
    let ok = match (peer.uid, peer.gid) {
        (Some(uid), Some(gid)) => {
            peer_allowed(uid, own, svc.group_gid.map(|g| member_of(uid, gid, g)).unwrap_or(false))
        }
        _ => false,
    };
    if !ok {
        tracing::warn!(?peer, "API request refused: the peer is not allowed");
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this user may not use the RayOS host service")
            .into_response();
    }
    next.run(req).await
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    svc: Arc<Service>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(svc.clone()).layer(axum::middleware::from_fn_with_state(svc, check_peer));
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).with_graceful_shutdown(shutdown).await
}

fn handle(svc: &Service, name: &str) -> Result<crate::vm::VmHandle, ApiError> {
    svc.vm(name).cloned().ok_or_else(|| ApiError::unknown_vm(name))
}

async fn health(State(svc): State<Arc<Service>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": svc.started.elapsed().as_millis() as u64,
        "vms": svc.vms.len(),
        "intent": svc.resolver.is_some(),
        "compositor": svc.compositor.is_some(),
    }))
}

async fn vms(State(svc): State<Arc<Service>>) -> Json<Vec<crate::vm::VmInfo>> {
    Json(svc.vms.iter().map(|h| h.snapshot()).collect())
}

async fn vm(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(handle(&svc, &name)?.snapshot()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    #[serde(default)]
    wait: bool,
}

async fn start(State(svc): State<Arc<Service>>, Path(name): Path<String>, Query(q): Query<StartQuery>) -> ApiResult {
    let h = handle(&svc, &name)?;
    match h.start(q.wait).await {
        Ok(info) => Ok((StatusCode::ACCEPTED, Json(info)).into_response()),
        Err(why) if why.contains("already") || why.contains("stopping") => {
            Err(ApiError::new(StatusCode::CONFLICT, "vm_state", why))
        }
        Err(why) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "start_failed", why)),
    }
}

async fn stop(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> ApiResult {
    let h = handle(&svc, &name)?;
    let report = h.stop().await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    Ok(Json(report).into_response())
}

fn running(h: &crate::vm::VmHandle) -> Result<crate::vm::VmInfo, ApiError> {
    let info = h.snapshot();
    if info.state != crate::state::VmState::Running && info.state != crate::state::VmState::Degraded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "vm_not_running",
            format!("VM {} is {}", info.name, info.state.as_str()),
        ));
    }
    Ok(info)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

async fn apps(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> ApiResult {
    let h = handle(&svc, &name)?;
    let info = running(&h)?;
    let link = h.link().ok_or_else(|| ApiError::from(LaunchError::NotRunning(info.name.clone())))?;
    let policy = h.policy.clone();
    let apps = blocking(move || Ok(launch::allowed_apps(&link, &policy)?)).await?;
    Ok(Json(apps).into_response())
}

/// The VM a request names, or the first running one.
fn pick_vm(svc: &Service, name: Option<&str>) -> Result<crate::vm::VmHandle, ApiError> {
    match name {
        Some(n) => handle(svc, n),
        None => svc
            .vms
            .iter()
            .find(|h| h.snapshot().state == crate::state::VmState::Running)
            .or(svc.vms.first())
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_vm", "the policy has no VM")),
    }
}

async fn launch_app(State(svc): State<Arc<Service>>, body: Result<Json<LaunchRequest>, JsonRejection>) -> ApiResult {
    let Json(req) = body?;
    req.validate()?;
    let h = pick_vm(&svc, req.vm.as_deref())?;
    let info = h.snapshot();
    let link = h.link();
    let policy = h.policy.clone();
    let resolver = svc.resolver.clone();
    // app_launched and app_exited events come from the agent link.
    let reply = blocking(move || Ok(launch::launch(&info, link.as_ref(), &policy, resolver.as_deref(), &req)?)).await?;
    Ok(Json(reply).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisplayRequest {
    display: crate::policy::VmDisplay,
}

/// Sets how the VM's display reaches the host; a VM that is up restarts
/// with it (its apps end), a stopped one uses it at its next start.
async fn display(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    body: Result<Json<DisplayRequest>, JsonRejection>,
) -> ApiResult {
    let h = handle(&svc, &name)?;
    let Json(req) = body?;
    if req.display == crate::policy::VmDisplay::Desktop && svc.policy.host.compositor_socket_dir.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_compositor",
            "the embedded desktop needs the policy's host.compositor_socket_dir",
        ));
    }
    let was_up = h.snapshot().state.is_up();
    h.set_display(req.display);
    if was_up {
        h.stop().await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stop_failed", e))?;
        h.start(false).await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "start_failed", e))?;
    }
    Ok((StatusCode::ACCEPTED, Json(h.snapshot())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentRequest {
    vm: Option<String>,
    request: String,
}

async fn intent(State(svc): State<Arc<Service>>, body: Result<Json<IntentRequest>, JsonRejection>) -> ApiResult {
    let Json(req) = body?;
    if req.request.trim().is_empty() || req.request.len() > launch::MAX_REQUEST_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("request: 1 to {} bytes of text", launch::MAX_REQUEST_BYTES),
        ));
    }
    let Some(resolver) = svc.resolver.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "intent_unavailable",
            "this service runs without an intent engine",
        ));
    };
    let h = pick_vm(&svc, req.vm.as_deref())?;
    let info = running(&h)?;
    let link = h.link().ok_or_else(|| ApiError::from(LaunchError::NotRunning(info.name.clone())))?;
    let policy = h.policy.clone();
    let answer =
        blocking(move || Ok(launch::resolve_words(&link, &policy, resolver.as_ref(), &req.request)?.1)).await?;
    Ok(Json(json!({"vm": h.policy.name, "answer": answer})).into_response())
}

async fn windows(State(svc): State<Arc<Service>>) -> ApiResult {
    let Some(c) = svc.compositor.clone() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_compositor", "the policy names no compositor"));
    };
    let w = c.windows().await.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "compositor", e))?;
    Ok(Json(w).into_response())
}

async fn events(State(svc): State<Arc<Service>>, ws: WebSocketUpgrade) -> Response {
    let rx = svc.events.subscribe();
    ws.on_upgrade(move |socket| forward_events(socket, rx))
}

async fn forward_events(mut socket: WebSocket, mut rx: tokio::sync::broadcast::Receiver<Event>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let ev = tokio::select! {
            r = rx.recv() => match r {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => Event::Lagged { missed: n },
                Err(RecvError::Closed) => return,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        let text = serde_json::to_string(&ev).expect("events serialize");
        // A subscriber that cannot take an event within 5 s is dropped.
        match tokio::time::timeout(std::time::Duration::from_secs(5), socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_use_the_api() {
        assert!(peer_allowed(0, 1000, false));
        assert!(peer_allowed(1000, 1000, false));
        assert!(!peer_allowed(1001, 1000, false));
        assert!(peer_allowed(1001, 1000, true));
    }
}
