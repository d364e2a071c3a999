//! The command channel's messages.
//!
//! The host sends [`Request`]s, each with an id it chooses; the agent answers
//! every request with exactly one [`Reply`] carrying that id in `re`, and
//! sends unsolicited events ([`AgentMessage::Exited`], [`AgentMessage::Log`])
//! with `re: null`. The host is the authority: the agent never sends a
//! request, and the host never has to act on anything the agent says.
//!
//! On the wire every message is one JSON object in one frame (see
//! [`crate::frame`]): `{"id":7,"body":{"type":"launch",...}}` from the host,
//! `{"re":7,"body":{"type":"launched","handle":1,"pid":212}}` from the agent.
//! Unknown fields are ignored, so a newer peer may add optional fields within
//! a protocol version; an unknown message `type` is answered with
//! [`ErrorCode::Unsupported`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::desktop::DesktopEntry;

/// One request from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the host; echoed in the reply's `re`.
    pub id: u64,
    pub body: HostRequest,
}

/// What the host may ask of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostRequest {
    /// The first request on every connection: the protocol versions the host
    /// speaks (`min_version..=max_version`) and its capabilities.
    Hello {
        min_version: u32,
        max_version: u32,
        #[serde(default)]
        capabilities: Vec<String>,
    },
    /// Liveness check; answered with `Pong` carrying the same nonce.
    Ping { nonce: u64 },
    /// The app catalog. `NoDisplay` entries are included only when asked.
    ListApps {
        #[serde(default)]
        include_hidden: bool,
    },
    /// Start an app.
    Launch(Launch),
    /// Stop a launched app: SIGTERM, then SIGKILL after `grace_ms`.
    Stop {
        handle: u64,
        #[serde(default = "default_grace_ms")]
        grace_ms: u32,
    },
    /// Power the guest off (after stopping apps and syncing file systems).
    Shutdown,
    /// Restart the guest.
    Reboot,
}

fn default_grace_ms() -> u32 {
    3000
}

/// What to start and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub app: AppRef,
    /// Files or URLs handed to the app through its `Exec` field codes (for a
    /// desktop id) or appended to the argv.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment; the agent sets `WAYLAND_DISPLAY`,
    /// `XDG_RUNTIME_DIR`, `HOME`, `USER` and `PATH` itself.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory in the guest (default: the user's home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub display: DisplayMode,
}

/// Which app: a desktop file id from the catalog, or a command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppRef {
    /// A desktop file id, e.g. `org.codeberg.dnkl.foot.desktop`.
    Id(String),
    /// An explicit argv; `argv[0]` is looked up in `PATH`.
    Argv(Vec<String>),
}

/// How the app's windows reach the host compositor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisplayMode {
    /// Inside the VM's desktop, shown as one host window.
    #[default]
    Embedded,
    /// Each toplevel as its own host window, labelled with the VM.
    Native,
}

/// One message from the agent: a reply (`re` = the request's id) or an
/// event (`re` = None).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub re: Option<u64>,
    pub body: AgentMessage,
}

/// What the agent may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// Answer to `Hello`: the version chosen and the agent's capabilities.
    Hello {
        version: u32,
        #[serde(default)]
        capabilities: Vec<String>,
        /// The agent's build, e.g. `rayos-guest-agent 0.1.0`.
        agent: String,
        /// The guest kernel release.
        kernel: String,
    },
    Pong {
        nonce: u64,
    },
    Apps {
        apps: Vec<DesktopEntry>,
    },
    /// The app started; `handle` names it in `Stop` and `Exited`.
    Launched {
        handle: u64,
        pid: u32,
    },
    /// `Stop`, `Shutdown` or `Reboot` accepted.
    Ack,
    /// A launched app ended: with an exit status, or killed by a signal.
    Exited {
        handle: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// A log line from the agent (or an app's stderr, prefixed with its handle).
    Log {
        level: LogLevel,
        line: String,
    },
    /// The request (or, with `re: null`, a frame that could not be read as a
    /// request) failed.
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// Typed failures, so the host can react without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a request: bad JSON, missing fields, wrong types.
    Malformed,
    /// The frame's length is over [`crate::frame::MAX_FRAME`]; its bytes were
    /// skipped.
    TooLarge,
    /// A message type this agent does not know.
    Unsupported,
    /// No protocol version in common.
    Version,
    /// A request before `Hello`.
    NotNegotiated,
    /// No such desktop id in the catalog.
    UnknownApp,
    /// No such launch handle (or the app already exited).
    UnknownHandle,
    /// The app's `Exec` cannot take the arguments given, or is unusable.
    BadArguments,
    /// The program could not be started (not found, not executable...).
    SpawnFailed,
    /// The guest refuses (for example, launches while shutting down).
    Refused,
    /// This connection was replaced by a newer one from the host.
    Superseded,
    /// Anything else inside the agent.
    Internal,
}

impl Request {
    pub fn new(id: u64, body: HostRequest) -> Self {
        Self { id, body }
    }
}

impl Reply {
    pub fn to(re: u64, body: AgentMessage) -> Self {
        Self { re: Some(re), body }
    }

    pub fn event(body: AgentMessage) -> Self {
        Self { re: None, body }
    }

    pub fn error(re: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { re, body: AgentMessage::Error { code, message: message.into() } }
    }
}

/// Why a frame's payload is not a request, with the id when one was readable
/// (so the error reply can name the request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

/// Read a request from a frame's payload. An unknown `type` is
/// [`ErrorCode::Unsupported`] (a newer host); anything else unreadable is
/// [`ErrorCode::Malformed`].
pub fn decode_request(payload: &[u8]) -> Result<Request, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| DecodeError {
        id: None,
        code: ErrorCode::Malformed,
        message: format!("not JSON: {e}"),
    })?;
    let id = value.get("id").and_then(serde_json::Value::as_u64);
    let kind = value.get("body").and_then(|b| b.get("type")).and_then(serde_json::Value::as_str).map(str::to_owned);
    serde_json::from_value::<Request>(value).map_err(|e| {
        let unknown = kind.as_deref().is_some_and(|k| !KNOWN_REQUESTS.contains(&k));
        DecodeError {
            id,
            code: if unknown { ErrorCode::Unsupported } else { ErrorCode::Malformed },
            message: match (unknown, kind) {
                (true, Some(k)) => format!("unknown request type {k:?}"),
                _ => format!("not a request: {e}"),
            },
        }
    })
}

/// Read a reply from a frame's payload (host side).
pub fn decode_reply(payload: &[u8]) -> Result<Reply, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// The request types of this protocol version, as they appear in `type`.
pub const KNOWN_REQUESTS: &[&str] = &["hello", "ping", "list_apps", "launch", "stop", "shutdown", "reboot"];

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(r: Request) {
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode_request(&bytes).unwrap(), r, "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn every_request_round_trips() {
        let mut env = BTreeMap::new();
        env.insert("LANG".to_string(), "C.UTF-8".to_string());
        for body in [
            HostRequest::Hello { min_version: 1, max_version: 2, capabilities: vec!["launch".into()] },
            HostRequest::Ping { nonce: u64::MAX },
            HostRequest::ListApps { include_hidden: true },
            HostRequest::Launch(Launch {
                app: AppRef::Id("org.codeberg.dnkl.foot.desktop".into()),
                args: vec!["/home/rayos/a b.txt".into()],
                env,
                cwd: Some("/tmp".into()),
                display: DisplayMode::Native,
            }),
            HostRequest::Launch(Launch {
                app: AppRef::Argv(vec!["sh".into(), "-c".into(), "exit 3".into()]),
                args: vec![],
                env: BTreeMap::new(),
                cwd: None,
                display: DisplayMode::Embedded,
            }),
            HostRequest::Stop { handle: 4, grace_ms: 10 },
            HostRequest::Shutdown,
            HostRequest::Reboot,
        ] {
            round_trip_request(Request::new(9, body));
        }
    }

    #[test]
    fn every_reply_round_trips() {
        let entry = crate::desktop::parse_desktop(
            "foot.desktop",
            "[Desktop Entry]\nType=Application\nName=Foot\nExec=foot\nIcon=foot\n",
        )
        .unwrap()
        .unwrap();
        for r in [
            Reply::to(
                1,
                AgentMessage::Hello { version: 1, capabilities: vec![], agent: "a".into(), kernel: "6.12".into() },
            ),
            Reply::to(2, AgentMessage::Pong { nonce: 5 }),
            Reply::to(3, AgentMessage::Apps { apps: vec![entry] }),
            Reply::to(4, AgentMessage::Launched { handle: 1, pid: 77 }),
            Reply::to(5, AgentMessage::Ack),
            Reply::event(AgentMessage::Exited { handle: 1, status: Some(3), signal: None }),
            Reply::event(AgentMessage::Exited { handle: 2, status: None, signal: Some(9) }),
            Reply::event(AgentMessage::Log { level: LogLevel::Warn, line: "x".into() }),
            Reply::error(None, ErrorCode::TooLarge, "too big"),
        ] {
            let bytes = serde_json::to_vec(&r).unwrap();
            assert_eq!(decode_reply(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn wire_shape_is_documented_json() {
        let r = Request::new(7, HostRequest::Ping { nonce: 1 });
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"id":7,"body":{"type":"ping","nonce":1}}"#);
        let l = Reply::to(7, AgentMessage::Launched { handle: 1, pid: 212 });
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"re":7,"body":{"type":"launched","handle":1,"pid":212}}"#);
        let argv = Request::new(
            1,
            HostRequest::Launch(Launch {
                app: AppRef::Argv(vec!["true".into()]),
                args: vec![],
                env: BTreeMap::new(),
                cwd: None,
                display: DisplayMode::Native,
            }),
        );
        assert_eq!(
            serde_json::to_string(&argv).unwrap(),
            r#"{"id":1,"body":{"type":"launch","app":{"argv":["true"]},"args":[],"env":{},"display":"native"}}"#
        );
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let r = decode_request(br#"{"id":3,"body":{"type":"list_apps","future_field":1},"extra":true}"#).unwrap();
        assert_eq!(r, Request::new(3, HostRequest::ListApps { include_hidden: false }));
        let s = decode_request(br#"{"id":3,"body":{"type":"stop","handle":2}}"#).unwrap();
        assert_eq!(s.body, HostRequest::Stop { handle: 2, grace_ms: 3000 });
    }

    #[test]
    fn unreadable_requests_are_typed() {
        let e = decode_request(b"\xff not json").unwrap_err();
        assert_eq!((e.id, e.code), (None, ErrorCode::Malformed));
        let e = decode_request(br#"{"id":5,"body":{"type":"format_disk"}}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(5), ErrorCode::Unsupported));
        assert!(e.message.contains("format_disk"));
        let e = decode_request(br#"{"id":6,"body":{"type":"ping"}}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(6), ErrorCode::Malformed));
        let e = decode_request(br#"{"body":{"type":"ping","nonce":1}}"#).unwrap_err();
        assert_eq!((e.id, e.code), (None, ErrorCode::Malformed));
        let e = decode_request(br#"[1,2,3]"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::Malformed);
    }
}
