//! The `rayos>` prompt on the serial console.
//!
//! A person (or the smoke test) types a request in words ("open a terminal"),
//! an app's name or desktop id, or a command. Parsing is pure
//! ([`parse`]); [`Prompt::run_line`] executes through the host service's API
//! (launches go through its policy and intent engine) and the compositor's
//! control socket (screenshots). Everything the guest supplies (app names,
//! window titles, file contents) is printed with control characters
//! replaced, so a guest cannot drive the console with escape sequences.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rayos_compositor_ipc::client::Client as CompositorClient;
use rayos_compositor_ipc::control::{Reply, Request};
use rayosd::client::{ApiClient, ApiClientError};
use serde_json::{json, Value};

pub const PROMPT: &str = "rayos> ";

pub const HELP: &str = "\
  <words>            launch a guest app by a request in words, e.g. open a terminal
  <app>              launch a guest app by its name or desktop id, e.g. foot
  apps               the apps the VM may launch
  windows            the windows on the RayOS display
  vms                the VMs and their state
  shared [FILE]      the VM's shared folder, or one file of it
  desktop [off]      the VM's whole desktop in one window, with a terminal in it
                     (the VM restarts and its apps end); `desktop off`: one window per app
  screenshot FILE    save the RayOS display as a PNG (an absolute path)
  report             when the VM stops answering: its console's last lines, and
                     rayos-vmm's state report (vCPUs, virtio queues) from the log
  poweroff           stop the VMs cleanly and power off
  reboot             the same, then restart
  help               this list";

/// Largest shared file `shared FILE` prints.
pub const MAX_SHOWN: u64 = 64 * 1024;

/// One line of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Empty,
    Help,
    Apps,
    Windows,
    Vms,
    Shared(Option<String>),
    Screenshot(String),
    /// Show the VM's whole desktop (true) or one window per app (false).
    Desktop(bool),
    Report,
    Poweroff,
    Reboot,
    /// A desktop id (`foot.desktop`).
    App(String),
    /// Anything else: words for the intent engine (or an app's name, which
    /// the service matches first).
    Words(String),
    Bad(String),
}

/// Parses one line.
pub fn parse(line: &str) -> Command {
    let line = line.trim();
    let (cmd, rest) = line.split_once(char::is_whitespace).map(|(c, r)| (c, r.trim())).unwrap_or((line, ""));
    match (cmd, rest.is_empty()) {
        ("", _) => Command::Empty,
        ("help" | "?", true) => Command::Help,
        ("apps", true) => Command::Apps,
        ("windows", true) => Command::Windows,
        ("vms", true) => Command::Vms,
        ("shared", true) => Command::Shared(None),
        ("shared", false) => Command::Shared(Some(rest.to_string())),
        ("screenshot", false) if rest.starts_with('/') && !rest.contains(char::is_whitespace) => {
            Command::Screenshot(rest.to_string())
        }
        ("screenshot", _) => Command::Bad("screenshot needs one absolute path, e.g. screenshot /tmp/rayos.png".into()),
        ("desktop", _) if rest.is_empty() || rest == "on" => Command::Desktop(true),
        ("desktop", false) if rest == "off" => Command::Desktop(false),
        ("poweroff" | "shutdown" | "halt", true) => Command::Poweroff,
        ("reboot", true) => Command::Reboot,
        ("report", true) => Command::Report,
        _ if line.ends_with(".desktop") && !line.contains(char::is_whitespace) => Command::App(line.to_string()),
        _ if line.len() > 1024 => Command::Bad("a request is at most 1024 bytes".into()),
        _ => Command::Words(line.to_string()),
    }
}

/// `text` with control characters (escape sequences included) shown as `?`.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '?' } else { c }).collect()
}

/// The path of `name` inside `folder`, refusing anything that leaves it.
pub fn inside(folder: &Path, name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().all(|c| matches!(c, Component::Normal(_))) && !name.is_empty() {
        Some(folder.join(p))
    } else {
        None
    }
}

/// What the prompt asks PID 1 to do after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Poweroff,
    Reboot,
}

/// The prompt's connections.
pub struct Prompt {
    pub api: ApiClient,
    pub compositor: PathBuf,
    pub vm: String,
    /// The VM's shared folder on the host.
    pub shared: PathBuf,
    /// The host's log folder (the VM's console, the service's log).
    pub log: PathBuf,
}

/// Where in the service's log a state report starts.
const REPORT_MARK: &str = "state report (SIGUSR1)";
/// How much of the end of a log `report` reads.
const LOG_TAIL: u64 = 256 * 1024;

/// The last `n` lines of the last [`LOG_TAIL`] bytes of `path`.
pub fn tail(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<String> = text.lines().map(String::from).collect();
    Ok(lines[lines.len().saturating_sub(n)..].to_vec())
}

/// The lines of the newest state report among `lines`.
pub fn last_report(lines: &[String]) -> Vec<String> {
    let Some(start) = lines.iter().rposition(|l| l.contains(REPORT_MARK)) else { return vec![] };
    lines[start..].iter().filter(|l| l.contains("state report")).cloned().collect()
}

fn api_message(e: &ApiClientError) -> String {
    match e {
        ApiClientError::Api { message, .. } => printable(message),
        e => e.to_string(),
    }
}

impl Prompt {
    /// Runs one line; prints its answer.
    pub fn run_line(&self, line: &str) -> Next {
        match parse(line) {
            Command::Empty => {}
            Command::Help => println!("{HELP}"),
            Command::Bad(why) => println!("{why}"),
            Command::Poweroff => return Next::Poweroff,
            Command::Reboot => return Next::Reboot,
            Command::Apps => match self.api.get(&format!("/v1/vms/{}/apps", self.vm)) {
                Ok(v) => {
                    for a in v["apps"].as_array().or(v.as_array()).into_iter().flatten() {
                        println!(
                            "  {:<40} {}",
                            printable(a["id"].as_str().unwrap_or("?")),
                            printable(a["name"].as_str().unwrap_or(""))
                        );
                    }
                }
                Err(e) => println!("apps: {}", api_message(&e)),
            },
            Command::Vms => match self.api.get("/v1/vms") {
                Ok(v) => {
                    for vm in v.as_array().into_iter().flatten() {
                        let agent = if vm["agent"].is_null() { "no agent" } else { "agent up" };
                        println!(
                            "  {:<12} {:<10} {agent} restarts={}",
                            printable(vm["name"].as_str().unwrap_or("?")),
                            vm["state"].as_str().unwrap_or("?"),
                            vm["restarts"]
                        );
                    }
                }
                Err(e) => println!("vms: {}", api_message(&e)),
            },
            Command::Windows => match self.api.get("/v1/windows") {
                Ok(v) => {
                    let list = v["windows"].as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        println!("  no windows");
                    }
                    for w in &list {
                        println!("  {}", describe_window(w));
                    }
                }
                Err(e) => println!("windows: {}", api_message(&e)),
            },
            Command::Shared(file) => self.shared(file.as_deref()),
            Command::Report => self.report(),
            Command::Desktop(on) => self.desktop(on),
            Command::Screenshot(path) => {
                let r = CompositorClient::connect(&self.compositor, Duration::from_secs(30)).and_then(|mut c| {
                    c.request(&Request::Screenshot { output: None, window: None, path: Some(path.clone()) })
                });
                match r {
                    Ok(Reply::Screenshot { width, height, .. }) => println!("saved {path} ({width}x{height})"),
                    Ok(other) => println!("screenshot: unexpected answer {other:?}"),
                    Err(e) => println!("screenshot: {e}"),
                }
            }
            Command::App(id) => {
                self.launch(json!({"vm": self.vm, "app": id}));
            }
            Command::Words(w) => {
                self.launch(json!({"vm": self.vm, "request": w}));
            }
        }
        Next::Continue
    }

    fn launch(&self, body: Value) -> Value {
        let t = std::time::Instant::now();
        match self.api.post("/v1/launch", body, Duration::from_secs(120)) {
            Ok(v) => {
                let shown = if v["native_window"] == json!(true) { " as a native window" } else { "" };
                println!(
                    "launched {}{shown} in VM {}: handle {}, guest pid {} ({:.0} ms)",
                    printable(v["app"].as_str().unwrap_or("?")),
                    printable(v["vm"].as_str().unwrap_or("?")),
                    v["handle"],
                    v["pid"],
                    t.elapsed().as_secs_f64() * 1e3
                );
                v
            }
            Err(e) => {
                let m = api_message(&e);
                println!("{m}");
                if m.contains("no reply from the guest agent") {
                    self.report();
                }
                Value::Null
            }
        }
    }

    /// Where the VM stands: how long its console has been silent and its
    /// last lines, then rayos-vmm's state report (asked for with SIGUSR1;
    /// it goes to the service's log): what a guest that stopped answering
    /// was doing.
    fn report(&self) {
        let serial = self.log.join(format!("{}-serial.log", self.vm));
        match std::fs::metadata(&serial).and_then(|m| m.modified()) {
            Ok(at) => {
                let silent = at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                println!(
                    "VM {}'s console ({}): last written {silent} s ago; its last lines:",
                    self.vm,
                    serial.display()
                );
                for l in tail(&serial, 6).unwrap_or_default() {
                    println!("  | {}", printable(&l).chars().take(200).collect::<String>());
                }
            }
            Err(e) => println!("VM {}'s console {}: {e}", self.vm, serial.display()),
        }
        let pid = match self.api.get(&format!("/v1/vms/{}", self.vm)) {
            Ok(v) => v["children"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == "rayos-vmm")
                .and_then(|c| c["pid"].as_i64()),
            Err(e) => {
                println!("report: {}", api_message(&e));
                return;
            }
        };
        let Some(pid) = pid.filter(|p| *p > 1 && *p <= i64::from(i32::MAX)) else {
            println!("report: VM {} has no running rayos-vmm", self.vm);
            return;
        };
        // SAFETY: kill(2) with a pid the service reported for its own child
        // and a signal rayos-vmm handles (it logs and goes on).
        if unsafe { libc::kill(pid as i32, libc::SIGUSR1) } != 0 {
            println!("report: cannot signal rayos-vmm (pid {pid}): {}", std::io::Error::last_os_error());
            return;
        }
        std::thread::sleep(Duration::from_millis(1500));
        let service_log = self.log.join("rayosd.log");
        let lines = last_report(&tail(&service_log, 64).unwrap_or_default());
        if lines.is_empty() {
            println!("report: no state report in {} yet", service_log.display());
            return;
        }
        println!("rayos-vmm's state report (pid {pid}, also in {}):", service_log.display());
        for l in lines {
            let l = l.split_once("state report").map_or(l.as_str(), |(_, r)| r.trim_start_matches(':').trim());
            println!("  {}", printable(l).chars().take(400).collect::<String>());
        }
    }

    /// Switches the VM's display; with the desktop, waits for the agent and
    /// opens the guest's desktop session with its terminal in it.
    fn desktop(&self, on: bool) {
        let mode = if on { "desktop" } else { "apps" };
        if let Err(e) =
            self.api.post(&format!("/v1/vms/{}/display", self.vm), json!({ "display": mode }), Duration::from_secs(120))
        {
            println!("desktop: {}", api_message(&e));
            return;
        }
        if !on {
            println!("VM {} restarts with one window per app", self.vm);
            return;
        }
        println!("VM {} restarts with its whole desktop in one window; waiting for its agent", self.vm);
        let t = std::time::Instant::now();
        loop {
            match self.api.get(&format!("/v1/vms/{}", self.vm)) {
                Ok(v) if v["state"] == "running" && !v["agent"].is_null() => break,
                Ok(v) if v["state"] == "failed" => {
                    println!(
                        "desktop: VM {} failed to start: {}",
                        self.vm,
                        printable(v["last_exit"].as_str().unwrap_or("?"))
                    );
                    return;
                }
                _ if t.elapsed() > Duration::from_secs(600) => {
                    println!("desktop: VM {} has no agent after 10 minutes; `vms` shows its state", self.vm);
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        // The first app launched inside the guest starts its desktop session.
        let apps = match self.api.get(&format!("/v1/vms/{}/apps", self.vm)) {
            Ok(v) => v["apps"].as_array().or(v.as_array()).cloned().unwrap_or_default(),
            Err(e) => {
                println!("desktop: {}", api_message(&e));
                return;
            }
        };
        let Some(app) = terminal_app(&apps) else {
            println!("desktop: VM {} has no terminal app to open its desktop with", self.vm);
            return;
        };
        let r = self.launch(json!({"vm": self.vm, "app": app, "embedded": true}));
        if r.is_null() {
            return;
        }
        println!("the desktop of VM {} shows in its window ({:.0} s)", self.vm, t.elapsed().as_secs_f64());
    }

    fn shared(&self, file: Option<&str>) {
        match file {
            None => match std::fs::read_dir(&self.shared) {
                Ok(rd) => {
                    let mut names: Vec<String> =
                        rd.filter_map(|e| e.ok()).map(|e| printable(&e.file_name().to_string_lossy())).collect();
                    names.sort();
                    println!("{} ({} in the guest's ~/Shared):", self.shared.display(), names.len());
                    for n in names {
                        println!("  {n}");
                    }
                }
                Err(e) => println!("shared: {}: {e}", self.shared.display()),
            },
            Some(name) => {
                let Some(path) = inside(&self.shared, name) else {
                    println!("shared: {}: a name inside the shared folder, without .. or a leading /", printable(name));
                    return;
                };
                let meta = std::fs::symlink_metadata(&path);
                match meta {
                    Ok(m) if m.is_file() && m.len() <= MAX_SHOWN => match std::fs::read(&path) {
                        Ok(b) => print!("{}", printable(&String::from_utf8_lossy(&b))),
                        Err(e) => println!("shared: {}: {e}", path.display()),
                    },
                    Ok(m) if m.is_file() => {
                        println!("shared: {}: {} bytes, more than {MAX_SHOWN} to show", path.display(), m.len())
                    }
                    Ok(_) => println!("shared: {}: not a regular file", path.display()),
                    Err(e) => println!("shared: {}: {e}", path.display()),
                }
            }
        }
    }
}

/// The desktop id of the catalog's first terminal emulator (by its
/// freedesktop category), else of its first app.
pub fn terminal_app(apps: &[Value]) -> Option<String> {
    let has = |a: &Value, key: &str| a[key].as_array().is_some_and(|c| c.iter().any(|x| x == "TerminalEmulator"));
    apps.iter()
        .find(|a| has(a, "default_for"))
        .or_else(|| apps.iter().find(|a| has(a, "categories")))
        .or(apps.first())
        .and_then(|a| a["id"].as_str())
        .map(str::to_string)
}

/// One window as a line: id, origin, app id, title.
pub fn describe_window(w: &Value) -> String {
    let origin = match (w["origin"]["kind"].as_str(), w["origin"]["name"].as_str()) {
        (Some("vm"), Some(n)) => format!("vm:{n}"),
        (Some(k), _) => k.to_string(),
        _ => "?".into(),
    };
    format!(
        "window {} origin={} mode={} app_id={:?} title={:?}",
        w["id"],
        printable(&origin),
        printable(w["mode"].as_str().unwrap_or("?")),
        printable(w["app_id"].as_str().unwrap_or("")),
        printable(w["title"].as_str().unwrap_or(""))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_words_and_apps_are_told_apart() {
        assert_eq!(parse("  "), Command::Empty);
        assert_eq!(parse("help"), Command::Help);
        assert_eq!(parse("apps"), Command::Apps);
        assert_eq!(parse("vms"), Command::Vms);
        assert_eq!(parse("windows"), Command::Windows);
        assert_eq!(parse("poweroff"), Command::Poweroff);
        assert_eq!(parse("reboot"), Command::Reboot);
        assert_eq!(parse("report"), Command::Report);
        assert_eq!(parse("open a terminal"), Command::Words("open a terminal".into()));
        assert_eq!(parse("foot"), Command::Words("foot".into()));
        assert_eq!(parse("foot.desktop"), Command::App("foot.desktop".into()));
        // A command word followed by more words is a request.
        assert_eq!(parse("apps for drawing"), Command::Words("apps for drawing".into()));
        assert_eq!(parse("shared hello.txt"), Command::Shared(Some("hello.txt".into())));
        assert_eq!(parse("screenshot /tmp/a.png"), Command::Screenshot("/tmp/a.png".into()));
        assert!(matches!(parse("screenshot a.png"), Command::Bad(_)));
        assert!(matches!(parse(&"x ".repeat(600)), Command::Bad(_)));
    }

    #[test]
    fn the_newest_state_report_is_found_in_the_service_log() {
        let log: Vec<String> = [
            "[linux rayos-vmm] t0 INFO state report (SIGUSR1)",
            "[linux rayos-vmm] t0 INFO state report: fs0: status=0x0f; q0 avail=1 used=1",
            "[linux rayos-vmm] t1 INFO state report (SIGUSR1)",
            "[linux rayos-vmm] t1 INFO state report: gpu0: status=0x0f; q0 avail=9 used=7",
            "some other line in between",
            "[linux rayos-vmm] t1 INFO state report: rip=0xffffffff81000000 mp_state=3 vcpu=0",
        ]
        .map(String::from)
        .to_vec();
        let r = last_report(&log);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[1].contains("gpu0") && r[2].contains("vcpu=0"));
        assert!(last_report(&log[4..]).is_empty(), "no marker, no report");
    }

    #[test]
    fn guest_text_cannot_drive_the_console() {
        assert_eq!(printable("ok\x1b[2Jx\x07"), "ok?[2Jx?");
        assert_eq!(printable("a\tb\n"), "a\tb\n");
    }

    #[test]
    fn shared_names_stay_inside_the_folder() {
        let f = Path::new("/v/shared/linux");
        assert_eq!(inside(f, "hello.txt"), Some(f.join("hello.txt")));
        assert_eq!(inside(f, "a/b"), Some(f.join("a/b")));
        for bad in ["../x", "/etc/shadow", "a/../../b", "", "./x"] {
            assert_eq!(inside(f, bad), None, "{bad}");
        }
    }

    #[test]
    fn windows_are_described_by_origin() {
        let w = json!({"id": 3, "origin": {"kind": "vm", "name": "linux"}, "app_id": "foot", "title": "~\x1b]0;x"});
        assert_eq!(describe_window(&w), "window 3 origin=vm:linux mode=? app_id=\"foot\" title=\"~?]0;x\"");
    }

    #[test]
    fn the_desktop_opens_with_a_terminal() {
        assert_eq!(parse("desktop"), Command::Desktop(true));
        assert_eq!(parse("desktop on"), Command::Desktop(true));
        assert_eq!(parse("desktop off"), Command::Desktop(false));
        assert_eq!(parse("desktop for drawing"), Command::Words("desktop for drawing".into()));
        let apps = vec![
            json!({"id": "weston-flower.desktop", "categories": ["Graphics"]}),
            json!({"id": "foot.desktop", "categories": ["System", "TerminalEmulator"]}),
        ];
        assert_eq!(terminal_app(&apps).as_deref(), Some("foot.desktop"));
        assert_eq!(terminal_app(&apps[..1]).as_deref(), Some("weston-flower.desktop"));
        assert_eq!(terminal_app(&[]), None);
        // The system's default terminal before the first one listed.
        let apps = vec![
            json!({"id": "foot-server.desktop", "categories": ["System", "TerminalEmulator"]}),
            json!({"id": "foot.desktop", "categories": ["TerminalEmulator"], "default_for": ["TerminalEmulator"]}),
        ];
        assert_eq!(terminal_app(&apps).as_deref(), Some("foot.desktop"));
    }
}
