//! The agent binary over a unix socket, with real processes: the command
//! channel end to end without a VM.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rayos_contract::{
    decode_reply, encode, AgentMessage, AppRef, DisplayMode, ErrorCode, FrameReader, HostRequest, Launch, Reply,
    Request,
};

struct Agent {
    child: Child,
    sock: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn start_agent() -> Agent {
    start_agent_with(|_| vec![])
}

/// The agent with extra arguments, made from its temporary folder.
fn start_agent_with(extra: impl FnOnce(&Path) -> Vec<String>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("applications");
    std::fs::create_dir(&apps).unwrap();
    write(&apps, "exit7.desktop", "[Desktop Entry]\nType=Application\nName=Exit Seven\nExec=sh -c \"exit 7\"\n");
    write(&apps, "echo.desktop", "[Desktop Entry]\nType=Application\nName=Echo\nExec=echo %F\n");
    write(&apps, "hidden.desktop", "[Desktop Entry]\nType=Application\nName=Hidden\nExec=true\nNoDisplay=true\n");
    write(&apps, "broken.desktop", "not a desktop file\n");
    let sock = dir.path().join("agent.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rayos-guest-agent"));
    cmd.arg("--unix").arg(&sock).arg("--apps-dir").arg(&apps).args(extra(dir.path()));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["--user", "nobody"]);
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "agent did not create {}", sock.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    Agent { child, sock, _dir: dir }
}

struct Host {
    w: UnixStream,
    r: FrameReader<UnixStream>,
    next: u64,
    events: Vec<AgentMessage>,
}

impl Host {
    fn connect(a: &Agent) -> Host {
        let w = UnixStream::connect(&a.sock).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = FrameReader::new(w.try_clone().unwrap());
        Host { w, r, next: 1, events: Vec::new() }
    }

    fn read(&mut self) -> Reply {
        let frame = self.r.read_frame().unwrap().expect("agent closed the connection");
        decode_reply(&frame).unwrap()
    }

    /// Send a request and return its reply, keeping events aside.
    fn ask(&mut self, body: HostRequest) -> AgentMessage {
        let id = self.next;
        self.next += 1;
        self.w.write_all(&encode(&Request::new(id, body)).unwrap()).unwrap();
        self.reply_to(Some(id))
    }

    fn reply_to(&mut self, id: Option<u64>) -> AgentMessage {
        loop {
            let r = self.read();
            if r.re == id && (id.is_some() || matches!(r.body, AgentMessage::Error { .. })) {
                return r.body;
            }
            self.events.push(r.body);
        }
    }

    fn hello(&mut self) {
        match self.ask(HostRequest::Hello { min_version: 1, max_version: 1, capabilities: vec![] }) {
            AgentMessage::Hello { version: 1, agent, .. } => assert!(agent.starts_with("rayos-guest-agent")),
            other => panic!("{other:?}"),
        }
    }

    fn wait_exit(&mut self, handle: u64) -> (Option<i32>, Option<i32>) {
        loop {
            if let Some((s, g)) = self.events.iter().find_map(|e| match e {
                AgentMessage::Exited { handle: h, status, signal } if *h == handle => Some((*status, *signal)),
                _ => None,
            }) {
                return (s, g);
            }
            let r = self.read();
            self.events.push(r.body);
        }
    }
}

fn launch(app: AppRef, args: &[&str]) -> HostRequest {
    HostRequest::Launch(Launch {
        app,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        cwd: Some("/tmp".into()),
        display: DisplayMode::Native,
    })
}

fn argv(v: &[&str]) -> AppRef {
    AppRef::Argv(v.iter().map(|s| s.to_string()).collect())
}

fn error_code(m: AgentMessage) -> ErrorCode {
    match m {
        AgentMessage::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn negotiates_lists_launches_and_reports_exits() {
    let a = start_agent();
    let mut h = Host::connect(&a);
    assert_eq!(error_code(h.ask(HostRequest::Ping { nonce: 1 })), ErrorCode::NotNegotiated);
    assert_eq!(
        error_code(h.ask(HostRequest::Hello { min_version: 2, max_version: 9, capabilities: vec![] })),
        ErrorCode::Version
    );
    h.hello();
    assert_eq!(h.ask(HostRequest::Ping { nonce: 42 }), AgentMessage::Pong { nonce: 42 });

    let ids = |m: AgentMessage| match m {
        AgentMessage::Apps { apps } => apps.into_iter().map(|e| e.id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ids(h.ask(HostRequest::ListApps { include_hidden: false })), ["echo.desktop", "exit7.desktop"]);
    assert_eq!(
        ids(h.ask(HostRequest::ListApps { include_hidden: true })),
        ["echo.desktop", "exit7.desktop", "hidden.desktop"]
    );

    let AgentMessage::Launched { handle, pid } = h.ask(launch(AppRef::Id("exit7.desktop".into()), &[])) else {
        panic!()
    };
    assert!(pid > 1);
    assert_eq!(h.wait_exit(handle), (Some(7), None));

    let AgentMessage::Launched { handle, .. } = h.ask(launch(AppRef::Id("echo.desktop".into()), &["a b", "c"])) else {
        panic!()
    };
    assert_eq!(h.wait_exit(handle), (Some(0), None));

    let AgentMessage::Launched { handle, .. } = h.ask(launch(argv(&["sh", "-c", "echo out-$HOME; kill -9 $$"]), &[]))
    else {
        panic!()
    };
    assert_eq!(h.wait_exit(handle), (None, Some(9)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let tag = format!("[app {handle}] out-");
    while !h.events.iter().any(|e| matches!(e, AgentMessage::Log { line, .. } if line.starts_with(&tag))) {
        assert!(Instant::now() < deadline, "no output line {tag:?}: {:?}", h.events);
        let r = h.read();
        h.events.push(r.body);
    }

    let AgentMessage::Launched { handle, .. } = h.ask(launch(argv(&["sleep", "100"]), &[])) else { panic!() };
    assert_eq!(h.ask(HostRequest::Stop { handle, grace_ms: 5000 }), AgentMessage::Ack);
    assert_eq!(h.wait_exit(handle), (None, Some(libc::SIGTERM)));
    assert_eq!(error_code(h.ask(HostRequest::Stop { handle, grace_ms: 0 })), ErrorCode::UnknownHandle);
}

#[test]
fn refuses_bad_launches_with_typed_errors() {
    let a = start_agent();
    let mut h = Host::connect(&a);
    h.hello();
    assert_eq!(error_code(h.ask(launch(AppRef::Id("nope.desktop".into()), &[]))), ErrorCode::UnknownApp);
    assert_eq!(error_code(h.ask(launch(AppRef::Id("exit7.desktop".into()), &["/x"]))), ErrorCode::BadArguments);
    assert_eq!(error_code(h.ask(launch(argv(&["/nonexistent/program"]), &[]))), ErrorCode::SpawnFailed);
    assert_eq!(error_code(h.ask(launch(argv(&[]), &[]))), ErrorCode::BadArguments);
    let mut bad_env = launch(argv(&["true"]), &[]);
    if let HostRequest::Launch(l) = &mut bad_env {
        l.env.insert("BAD=NAME".into(), "x".into());
    }
    assert_eq!(error_code(h.ask(bad_env)), ErrorCode::BadArguments);
    let mut bad_cwd = launch(argv(&["true"]), &[]);
    if let HostRequest::Launch(l) = &mut bad_cwd {
        l.cwd = Some("/nonexistent".into());
    }
    assert_eq!(error_code(h.ask(bad_cwd)), ErrorCode::BadArguments);
    assert_eq!(error_code(h.ask(HostRequest::Shutdown)), ErrorCode::Refused);
}

#[test]
fn malformed_and_oversize_frames_get_errors_and_the_agent_keeps_serving() {
    let a = start_agent();
    let mut h = Host::connect(&a);
    h.hello();
    // Not JSON.
    h.w.write_all(&[9, 0, 0, 0]).unwrap();
    h.w.write_all(b"{garbage}").unwrap();
    assert_eq!(error_code(h.reply_to(None)), ErrorCode::Malformed);
    // An empty frame.
    h.w.write_all(&[0, 0, 0, 0]).unwrap();
    assert_eq!(error_code(h.reply_to(None)), ErrorCode::Malformed);
    // Oversize: announced and sent, skipped without buffering.
    let len = rayos_contract::MAX_FRAME + 1;
    h.w.write_all(&(len as u32).to_le_bytes()).unwrap();
    let writer = h.w.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        w.write_all(&vec![b'x'; len]).unwrap();
    });
    assert_eq!(error_code(h.reply_to(None)), ErrorCode::TooLarge);
    sender.join().unwrap();
    // A request of an unknown type keeps its id.
    let id = 77;
    let raw = format!(r#"{{"id":{id},"body":{{"type":"format_disk"}}}}"#);
    h.w.write_all(&(raw.len() as u32).to_le_bytes()).unwrap();
    h.w.write_all(raw.as_bytes()).unwrap();
    assert_eq!(error_code(h.reply_to(Some(id))), ErrorCode::Unsupported);
    // Still serving.
    assert_eq!(h.ask(HostRequest::Ping { nonce: 5 }), AgentMessage::Pong { nonce: 5 });
}

#[test]
fn a_second_connection_supersedes_the_first() {
    let a = start_agent();
    let mut first = Host::connect(&a);
    first.hello();
    let mut second = Host::connect(&a);
    assert_eq!(error_code(first.reply_to(None)), ErrorCode::Superseded);
    let mut rest = Vec::new();
    let _ = first.r.get_ref().try_clone().unwrap().read_to_end(&mut rest);
    assert!(first.r.read_frame().unwrap().is_none(), "the old connection is closed");
    second.hello();
    let AgentMessage::Launched { handle, .. } = second.ask(launch(argv(&["true"]), &[])) else { panic!() };
    assert_eq!(second.wait_exit(handle), (Some(0), None));
}

#[test]
fn exits_while_no_host_is_connected_are_delivered_after_hello() {
    let a = start_agent();
    let mut h = Host::connect(&a);
    h.hello();
    let AgentMessage::Launched { handle, .. } = h.ask(launch(argv(&["sh", "-c", "sleep 0.3; exit 4"]), &[])) else {
        panic!()
    };
    drop(h);
    std::thread::sleep(Duration::from_millis(800));
    let mut h = Host::connect(&a);
    h.hello();
    assert_eq!(h.wait_exit(handle), (Some(4), None));
}

/// A stand-in for the bridge program: records its arguments, then runs the
/// app after `--` as waypipe's server end would, passing its status on.
const FAKE_BRIDGE: &str = "#!/bin/sh\nprintf '%s\\n' \"$@\" >> \"$(dirname \"$0\")/bridge-argv\"\nwhile [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n";

#[test]
fn native_apps_run_behind_the_bridge_only_when_both_sides_announce_it() {
    use std::os::unix::fs::PermissionsExt;
    let a = start_agent_with(|dir| {
        let fake = dir.join("waypipe");
        std::fs::write(&fake, FAKE_BRIDGE).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The agent may run apps as nobody: let them write the record.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        vec!["--waypipe".into(), fake.display().to_string()]
    });
    let record = a.sock.parent().unwrap().join("bridge-argv");

    // A host without the bridge: native apps run as they are.
    let mut h = Host::connect(&a);
    match h.ask(HostRequest::Hello { min_version: 1, max_version: 1, capabilities: vec![] }) {
        AgentMessage::Hello { capabilities, .. } => {
            assert!(capabilities.iter().any(|c| c == rayos_contract::CAP_WAYLAND_BRIDGE))
        }
        other => panic!("{other:?}"),
    }
    let handle = match h.ask(launch(argv(&["sh", "-c", "exit 4"]), &[])) {
        AgentMessage::Launched { handle, .. } => handle,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.wait_exit(handle), (Some(4), None));
    assert!(!record.exists(), "the bridge ran although the host did not announce it");

    // A host that serves the bridge: native apps go through it, embedded ones do not.
    let mut h = Host::connect(&a);
    let caps = vec![rayos_contract::CAP_WAYLAND_BRIDGE.to_string()];
    assert!(matches!(
        h.ask(HostRequest::Hello { min_version: 1, max_version: 1, capabilities: caps }),
        AgentMessage::Hello { .. }
    ));
    let handle = match h.ask(launch(argv(&["sh", "-c", "exit 5"]), &[])) {
        AgentMessage::Launched { handle, .. } => handle,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.wait_exit(handle), (Some(5), None), "the app's status passes through the bridge");
    let recorded = std::fs::read_to_string(&record).unwrap();
    let want =
        format!("--vsock\n-s\n2:{}\n--no-gpu\n-c\nnone\nserver\n--\nsh\n-c\nexit 5\n", rayos_contract::BRIDGE_PORT);
    assert_eq!(recorded, want);
    let mut embedded = launch(argv(&["true"]), &[]);
    if let HostRequest::Launch(l) = &mut embedded {
        l.display = DisplayMode::Embedded;
    }
    let handle = match h.ask(embedded) {
        AgentMessage::Launched { handle, .. } => handle,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.wait_exit(handle), (Some(0), None));
    assert_eq!(std::fs::read_to_string(&record).unwrap(), want, "an embedded app went through the bridge");
}

/// The children of process `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

#[test]
fn a_supervised_agent_that_dies_is_started_again() {
    let a = start_agent_with(|_| vec!["--supervise".into()]);
    let mut h = Host::connect(&a);
    h.hello();
    drop(h);
    let agent_pid = children(a.child.id()).first().copied().expect("the supervisor's agent child");
    // What a panic does under panic = "abort".
    // SAFETY: kill with a pid and a signal number.
    assert_eq!(unsafe { libc::kill(agent_pid as i32, libc::SIGABRT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_pid = loop {
        match children(a.child.id()).first().copied() {
            Some(p) if p != agent_pid => break p,
            _ => {
                assert!(Instant::now() < deadline, "no new agent after the old one died");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // The new agent serves the channel again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut h = loop {
        if let Ok(s) = UnixStream::connect(&a.sock) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let r = FrameReader::new(s.try_clone().unwrap());
            break Host { w: s, r, next: 1, events: Vec::new() };
        }
        assert!(Instant::now() < deadline, "the new agent does not listen");
        std::thread::sleep(Duration::from_millis(20));
    };
    h.hello();
    // Stop the supervisor first, then its agent.
    let supervisor = a.child.id() as i32;
    // SAFETY: kill with a pid and a signal number.
    unsafe {
        libc::kill(supervisor, libc::SIGKILL);
        libc::kill(new_pid as i32, libc::SIGKILL);
    }
}
