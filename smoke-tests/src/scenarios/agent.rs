//! Tier 2 scenario `agent`: the guest image, the guest agent and RayOS's
//! vsock backend, attached to QEMU.
//!
//! 1. Build (or refresh) the guest image with `rayos-image` from Debian
//!    trixie: kernel, initramfs, root file system with the agent.
//! 2. Start virtiofsd exporting the root file system and `rayos-vsock` (our
//!    vhost-user-vsock backend, hybrid vsock on a unix socket).
//! 3. Boot the image in QEMU (KVM when it can run Linux here, else TCG) with
//!    `vhost-user-fs-pci` (root) and `vhost-user-vsock-pci`, memfd-shared RAM.
//! 4. As the host: connect through the hybrid socket, handshake, list the
//!    catalog (foot and weston's demo clients must be in it), launch a
//!    command-line program and check its exit status, send a malformed and an
//!    oversize frame and check the agent answers with errors and still
//!    serves, then ask the guest to power off and check QEMU exits cleanly.
//!
//! Figures: `boot_to_agent_s` (QEMU spawn to the agent's `hello` answer) and
//! `launch_rtt_ms` (median of the launch request to `launched` round trips).

use crate::scenarios::ScenarioError;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rayos::guest::GuestClient;
use rayos_contract::{AgentMessage, AppRef, DisplayMode, ErrorCode, GuestPolicy, Launch, AGENT_PORT};

use super::guest_qemu::{self, GuestVm};
use crate::cli::AgentArgs;
use crate::stats::summarise;
use crate::Outcome;

const NAME: &str = "agent";

pub fn run(args: &AgentArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: NAME, figures },
        Err(reason) => Outcome::Fail { scenario: NAME, reason: reason.to_string() },
    }
}

fn run_inner(args: &AgentArgs) -> Result<String, ScenarioError> {
    let (run_dir, image, manifest) = guest_qemu::prepare(&args.guest, NAME)?;
    let mut vm = guest_qemu::boot(&args.guest, &run_dir, &image, &manifest, &guest_qemu::BootOptions::default())?;
    let result = exercise(args, &mut vm);
    match result {
        Ok(figures) => Ok(figures),
        Err(e) => Err(format!("{e}; last serial lines:\n{}", vm.serial_tail(15)).into()),
    }
}

fn exercise(args: &AgentArgs, vm: &mut GuestVm) -> Result<String, ScenarioError> {
    let reply_timeout = Duration::from_secs(30);
    let (mut client, attempts) = vm.connect_agent(args.guest.boot_timeout, &[])?;
    let boot_to_agent_s = vm.boot.elapsed().as_secs_f64();
    println!(
        "agent answered after {boot_to_agent_s:.2} s ({attempts} connection attempts): {} protocol {} on kernel {}",
        client.info.agent, client.info.version, client.info.kernel
    );

    let apps = client.list_apps(false).map_err(|e| format!("list_apps: {e}"))?;
    println!("catalog: {} apps: {}", apps.len(), apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(" "));
    for want in ["foot.desktop", "weston-terminal.desktop"] {
        if !apps.iter().any(|a| a.id == want) {
            return Err(format!("the catalog lacks {want}").into());
        }
    }

    let policy = GuestPolicy { allow_argv: true, ..GuestPolicy::default() };
    let argv = |v: &[&str]| Launch {
        app: AppRef::Argv(v.iter().map(|s| s.to_string()).collect()),
        args: vec![],
        env: Default::default(),
        cwd: None,
        display: DisplayMode::Native,
    };
    let t = Instant::now();
    let (handle, pid) = client
        .launch(
            &policy,
            argv(&["sh", "-c", "echo $(id -un) $(id -Gn | tr ' ' '\\n' | grep -xE 'video|render' | sort); exit 3"]),
        )
        .map_err(|e| format!("launch: {e}"))?;
    let first_rtt = t.elapsed().as_secs_f64() * 1e3;
    let exit = client.wait_exit(handle, reply_timeout).map_err(|e| format!("waiting for handle {handle}: {e}"))?;
    let user_line = client.take_events().into_iter().find_map(|e| match e {
        AgentMessage::Log { line, .. } if line.starts_with(&format!("[app {handle}]")) => Some(line),
        _ => None,
    });
    println!("launched a shell printing its user and groups, then exiting 3: handle {handle} pid {pid}, exit {exit:?}, output {user_line:?}");
    if exit != (Some(3), None) {
        return Err(format!("`sh -c 'exit 3'` ended with {exit:?}, expected status 3").into());
    }
    if user_line.as_deref() != Some(&format!("[app {handle}] rayos render video")) {
        return Err(
            format!("the app did not run as user rayos with groups render and video: output {user_line:?}").into()
        );
    }
    let mut rtts = vec![first_rtt];
    for _ in 0..args.launches.saturating_sub(1) {
        let t = Instant::now();
        let (h, _) = client.launch(&policy, argv(&["true"])).map_err(|e| format!("launch true: {e}"))?;
        rtts.push(t.elapsed().as_secs_f64() * 1e3);
        let exit = client.wait_exit(h, reply_timeout).map_err(|e| format!("waiting for true: {e}"))?;
        if exit != (Some(0), None) {
            return Err(format!("`true` ended with {exit:?}").into());
        }
    }
    let rtt = summarise(&rtts).expect("at least one launch");
    println!("launch_rtt_ms median={:.2} min={:.2} max={:.2} launches={}", rtt.median, rtt.min, rtt.max, rtts.len());

    // Malformed and oversize frames: typed errors, and the agent still serves.
    client.send_raw(&[5, 0, 0, 0]).and_then(|_| client.send_raw(b"{bad}")).map_err(|e| format!("send: {e}"))?;
    expect_error(&mut client, ErrorCode::Malformed)?;
    let len = rayos_contract::MAX_FRAME + 1;
    client.send_raw(&(len as u32).to_le_bytes()).map_err(|e| format!("send: {e}"))?;
    client.send_raw(&vec![b'x'; len]).map_err(|e| format!("send: {e}"))?;
    expect_error(&mut client, ErrorCode::TooLarge)?;
    client.ping(99).map_err(|e| format!("ping after bad frames: {e}"))?;
    println!("malformed and oversize frames answered with errors; the agent still serves");

    // The AI core over the live catalog: `rayos intent --guest` takes a
    // second connection (which supersedes ours), resolves a request with
    // the local model and launches the result in the guest.
    let intent_launch = intent_over_guest(args, &vm.uds, "I need a terminal")?;
    match client.reply_to(None) {
        Ok(AgentMessage::Error { code: ErrorCode::Superseded, .. }) => {}
        other => {
            return Err(format!("expected our connection to be superseded by rayos intent's, got {other:?}").into())
        }
    }
    let mut client =
        GuestClient::connect(&vm.uds, AGENT_PORT, reply_timeout).map_err(|e| format!("reconnecting: {e}"))?;
    println!("reconnected after rayos intent superseded the first connection");

    // Power off through the channel; QEMU must exit by itself.
    client.power(false).map_err(|e| format!("shutdown: {e}"))?;
    let stop = Instant::now();
    let status = vm.wait_qemu_exit(Duration::from_secs(60))?;
    println!("guest powered off {:.2} s after the request; QEMU exit {status}", stop.elapsed().as_secs_f64());
    if !status.success() {
        return Err(format!("QEMU exited with {status} after the shutdown request").into());
    }
    println!("intent over the guest catalog launched {intent_launch}");
    Ok(format!("boot_to_agent_s={boot_to_agent_s:.2} launch_rtt_ms={:.2}", rtt.median))
}

/// Run `rayos intent --guest UDS --json --launch REQUEST`; returns the app it
/// launched, which must be one of the guest's terminals.
fn intent_over_guest(args: &AgentArgs, uds: &Path, request: &str) -> Result<String, ScenarioError> {
    let rayos = args.rayos.clone().unwrap_or_else(|| crate::rundir::release_binary("rayos"));
    let out = Command::new(&rayos)
        .arg("intent")
        .arg("--guest")
        .arg(uds)
        .args(["--json", "--launch", request])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rayos.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("rayos intent --guest --launch {request:?}: {}", stdout.trim().replace('\n', " | "));
    if !out.status.success() {
        return Err(format!(
            "rayos intent --guest failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let mut lines = stdout.lines();
    let action: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("")).map_err(|e| format!("rayos intent printed no action: {e}"))?;
    let launched: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("")).map_err(|e| format!("rayos intent launched nothing: {e}"))?;
    let app = launched["launched"].as_str().unwrap_or_default().to_string();
    if action["action"] != "launch" || action["app_id"] != launched["launched"] || launched["handle"].as_u64().is_none()
    {
        return Err(format!("unexpected rayos intent output: {stdout}").into());
    }
    if !["foot.desktop", "weston-terminal.desktop", "footclient.desktop"].contains(&app.as_str()) {
        return Err(format!("{request:?} launched {app}, not a terminal").into());
    }
    Ok(app)
}

fn expect_error(client: &mut GuestClient, want: ErrorCode) -> Result<(), ScenarioError> {
    match client.reply_to(None) {
        Ok(AgentMessage::Error { code, message }) if code == want => {
            println!("agent answered {code:?}: {message}");
            Ok(())
        }
        other => Err(format!("expected a {want:?} error, got {other:?}").into()),
    }
}
