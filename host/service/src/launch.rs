//! Launching apps under the host's policy: an app by desktop id or name, a
//! request in words (the intent engine over the VM's live catalog), or a
//! command line. The policy is checked here, on the host, before any launch
//! reaches the guest.

use std::time::{Duration, Instant};

use rayos_contract::{AppRef, DesktopEntry, DisplayMode, GuestPolicy, Launch};
use serde::{Deserialize, Serialize};

use crate::agent_link::{AgentLink, LinkError};
use crate::guest::ClientError;
use crate::policy::VmPolicy;
use crate::vm::VmInfo;

/// Longest request in words accepted (bytes).
pub const MAX_REQUEST_BYTES: usize = 1024;
/// Most output lines kept from an app launched with `wait`.
pub const MAX_OUTPUT_LINES: usize = crate::agent_link::MAX_OUTPUT_LINES;

/// The intent engine, as the service sees it. The `rayos` binary plugs in
/// the model-backed engine; tests plug in their own.
pub trait IntentResolver: Send + Sync {
    /// Resolves `request` over `catalog` (the apps the policy allows).
    fn resolve(&self, request: &str, catalog: &[DesktopEntry]) -> Result<IntentAnswer, String>;
}

/// What the engine decided.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntentAnswer {
    /// The app to launch, when the engine decided to launch one.
    pub app_id: Option<String>,
    pub confidence: Option<f64>,
    /// The engine's whole answer (launch, clarify with candidates, none with a reason).
    pub action: serde_json::Value,
    /// One line for people ("Which app did you mean? ..."; "nothing to do: ...").
    pub message: String,
    pub model_load_ms: f64,
    pub intent_ms: f64,
}

/// `POST /v1/launch`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// The VM (default: the first running VM in the policy).
    pub vm: Option<String>,
    /// A desktop id or an app's name.
    pub app: Option<String>,
    /// A request in words.
    pub request: Option<String>,
    /// A command line (only where the policy has `allow_command`).
    pub command: Option<Vec<String>>,
    /// Files or URLs handed to the app.
    #[serde(default)]
    pub args: Vec<String>,
    /// Wait for the app to exit and return its status and output.
    #[serde(default)]
    pub wait: bool,
    /// Show the app in the VM's desktop instead of as a host window.
    #[serde(default)]
    pub embedded: bool,
    /// Seconds to wait for an app launched with `wait` (default 600).
    pub wait_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LaunchReply {
    pub vm: String,
    pub app: String,
    pub handle: u64,
    pub pid: u32,
    /// `name`, `intent` or `command`.
    pub resolved_by: String,
    pub intent: Option<IntentAnswer>,
    pub native_window: bool,
    pub launch_ms: f64,
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub output: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("bad launch request: {0}")]
    Bad(String),
    #[error("refused by the host's policy: {0}")]
    Policy(String),
    #[error("{}", .0.message)]
    NotLaunched(IntentAnswer),
    #[error("the intent engine failed: {0}")]
    Intent(String),
    #[error("VM {0} is not running")]
    NotRunning(String),
    #[error("no app {app:?} in VM {vm}")]
    NoSuchApp { vm: String, app: String },
    #[error("guest: {0}")]
    Guest(#[from] ClientError),
    #[error("{0}")]
    Link(LinkError),
}

impl From<LinkError> for LaunchError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Guest(g) => LaunchError::Guest(g),
            e => LaunchError::Link(e),
        }
    }
}

impl LaunchRequest {
    pub fn validate(&self) -> Result<(), LaunchError> {
        let given = [self.app.is_some(), self.request.is_some(), self.command.is_some()].iter().filter(|b| **b).count();
        if given != 1 {
            return Err(LaunchError::Bad("give exactly one of app, request or command".into()));
        }
        if let Some(r) = &self.request {
            if r.trim().is_empty() || r.len() > MAX_REQUEST_BYTES {
                return Err(LaunchError::Bad(format!("request: 1 to {MAX_REQUEST_BYTES} bytes of text")));
            }
        }
        if let Some(a) = &self.app {
            if a.trim().is_empty() || a.len() > 255 {
                return Err(LaunchError::Bad("app: 1 to 255 bytes".into()));
            }
        }
        if let Some(c) = &self.command {
            if c.is_empty() || c[0].is_empty() {
                return Err(LaunchError::Bad("command: an argv with a program".into()));
            }
        }
        Ok(())
    }
}

/// The catalog entry `words` names directly: its desktop id (with or without
/// `.desktop`) or, ignoring case, its `Name`.
pub fn direct_match<'a>(apps: &'a [DesktopEntry], words: &str) -> Option<&'a DesktopEntry> {
    let w = words.trim();
    apps.iter()
        .find(|e| e.id == w || e.id.strip_suffix(".desktop") == Some(w))
        .or_else(|| apps.iter().find(|e| e.name.eq_ignore_ascii_case(w)))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The VM's live catalog, only the apps its policy allows.
pub fn allowed_apps(client: &AgentLink, vm: &VmPolicy) -> Result<Vec<DesktopEntry>, LaunchError> {
    let mut apps = client.list_apps(false)?;
    apps.retain(|e| vm.apps.allows(&e.id));
    Ok(apps)
}

/// Resolves a request in words over the VM's allowed apps (no launch).
pub fn resolve_words(
    client: &AgentLink,
    vm: &VmPolicy,
    resolver: &dyn IntentResolver,
    words: &str,
) -> Result<(Vec<DesktopEntry>, IntentAnswer), LaunchError> {
    let apps = allowed_apps(client, vm)?;
    let answer = resolver.resolve(words, &apps).map_err(LaunchError::Intent)?;
    Ok((apps, answer))
}

/// Carries out a launch through the VM's agent link (blocking: run it on a
/// blocking thread).
pub fn launch(
    info: &VmInfo,
    link: Option<&AgentLink>,
    vm: &VmPolicy,
    resolver: Option<&dyn IntentResolver>,
    req: &LaunchRequest,
) -> Result<LaunchReply, LaunchError> {
    req.validate()?;
    // Checks that need no guest come first: nothing reaches the guest if they fail.
    if req.command.is_some() && !vm.allow_command {
        return Err(LaunchError::Policy(format!(
            "VM {} does not allow command lines (allow_command = false)",
            vm.name
        )));
    }
    if let Some(app) = &req.app {
        if app.ends_with(".desktop") && !vm.apps.allows(app) {
            return Err(LaunchError::Policy(format!("{app} is not among the apps VM {} may launch", vm.name)));
        }
    }
    if req.request.is_some() && resolver.is_none() {
        return Err(LaunchError::Intent("this service runs without an intent engine".into()));
    }
    let client = link.ok_or_else(|| LaunchError::NotRunning(info.name.clone()))?;
    let (app_ref, app_name, resolved_by, intent) = if let Some(cmd) = &req.command {
        (AppRef::Argv(cmd.clone()), cmd.join(" "), "command", None)
    } else if let Some(app) = &req.app {
        let all = client.list_apps(true)?;
        let e =
            direct_match(&all, app).ok_or_else(|| LaunchError::NoSuchApp { vm: vm.name.clone(), app: app.clone() })?;
        if !vm.apps.allows(&e.id) {
            return Err(LaunchError::Policy(format!("{} is not among the apps VM {} may launch", e.id, vm.name)));
        }
        (AppRef::Id(e.id.clone()), e.id.clone(), "name", None)
    } else {
        let words = req.request.as_deref().expect("validated");
        let resolver = resolver.expect("checked above");
        let apps = allowed_apps(client, vm)?;
        match direct_match(&apps, words) {
            Some(e) => (AppRef::Id(e.id.clone()), e.id.clone(), "name", None),
            None => {
                let answer = resolver.resolve(words, &apps).map_err(LaunchError::Intent)?;
                match &answer.app_id {
                    Some(id) if vm.apps.allows(id) => (AppRef::Id(id.clone()), id.clone(), "intent", Some(answer)),
                    Some(id) => {
                        return Err(LaunchError::Policy(format!(
                            "{id} is not among the apps VM {} may launch",
                            vm.name
                        )))
                    }
                    None => return Err(LaunchError::NotLaunched(answer)),
                }
            }
        }
    };
    let guest_policy = GuestPolicy { allow_argv: req.command.is_some(), ..GuestPolicy::default() };
    let native = !req.embedded;
    let launch = Launch {
        app: app_ref,
        args: req.args.clone(),
        env: Default::default(),
        cwd: None,
        display: if native { DisplayMode::Native } else { DisplayMode::Embedded },
    };
    let t = Instant::now();
    let (handle, pid) = client.launch(&guest_policy, launch)?;
    let launch_ms = ms(t);
    let mut reply = LaunchReply {
        vm: vm.name.clone(),
        app: app_name,
        handle,
        pid,
        resolved_by: resolved_by.into(),
        intent,
        native_window: native && info.bridge,
        launch_ms,
        status: None,
        signal: None,
        output: None,
    };
    if req.wait {
        let timeout = Duration::from_secs(req.wait_timeout_s.unwrap_or(600).clamp(1, 86_400));
        let exit = client.wait_exit(handle, timeout)?;
        reply.status = exit.status;
        reply.signal = exit.signal;
        reply.output = Some(exit.output);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_way_to_name_the_app() {
        assert!(LaunchRequest::default().validate().is_err());
        let both =
            LaunchRequest { app: Some("foot".into()), request: Some("open a terminal".into()), ..Default::default() };
        assert!(both.validate().is_err());
        assert!(LaunchRequest { command: Some(vec![]), ..Default::default() }.validate().is_err());
        assert!(LaunchRequest { request: Some(" ".into()), ..Default::default() }.validate().is_err());
        assert!(LaunchRequest { request: Some("x".repeat(MAX_REQUEST_BYTES + 1)), ..Default::default() }
            .validate()
            .is_err());
        assert!(LaunchRequest { app: Some("foot".into()), ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<LaunchRequest>(r#"{"app":"foot","env":{"LD_PRELOAD":"/x"}}"#).is_err());
    }
}
