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

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rayos::guest::{ClientError, GuestClient};
use rayos_contract::{AgentMessage, AppRef, DisplayMode, ErrorCode, GuestPolicy, Launch, AGENT_PORT};

use crate::cli::AgentArgs;
use crate::debs::default_cache_root;
use crate::stats::summarise;
use crate::Outcome;

const NAME: &str = "agent";

/// Children killed when the scenario ends, whatever happens.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(args: &AgentArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: NAME, figures },
        Err(reason) => Outcome::Fail { scenario: NAME, reason },
    }
}

fn run_inner(args: &AgentArgs) -> Result<String, String> {
    let run_dir = crate::rundir::create(&crate::rundir::target_dir().join("smoke"), NAME, args.run_dir.as_deref())
        .map_err(|e| format!("{e}: {}", e.source))?;
    println!("run directory: {}", run_dir.display());

    // 1. The image.
    let agent_bin = args.agent.clone().unwrap_or_else(|| crate::rundir::release_binary("rayos-guest-agent"));
    let vsock_bin = args.vsock_backend.clone().unwrap_or_else(|| crate::rundir::release_binary("rayos-vsock"));
    for (flag, p) in [("--agent", &agent_bin), ("--vsock-backend", &vsock_bin)] {
        if !p.is_file() {
            return Err(format!("{flag} {}: not found (cargo build --release --workspace)", p.display()));
        }
    }
    let image = args.image.clone().unwrap_or_else(|| crate::rundir::target_dir().join("guest-image"));
    let opts = rayos_image::BuildOptions::new(&image, default_cache_root().join("image"), &agent_bin);
    let t0 = Instant::now();
    let mut last_download = 0;
    let manifest = rayos_image::build(&opts, &mut |p: rayos_image::Progress| match &p {
        rayos_image::Progress::Download { fetched, .. } | rayos_image::Progress::Install { done: fetched, .. } => {
            if *fetched >= last_download + 25 || *fetched == 1 {
                last_download = *fetched;
                println!("{p}");
            }
        }
        _ => {
            last_download = 0;
            println!("{p}");
        }
    })
    .map_err(|e| format!("guest image: {e}"))?;
    println!(
        "guest image {} ready in {:.1} s: kernel {}, {} packages",
        image.display(),
        t0.elapsed().as_secs_f64(),
        manifest.kernel_release,
        manifest.packages.len()
    );

    // 2. virtiofsd and the vsock backend.
    let virtiofsd = args.virtiofsd.clone().unwrap_or_else(|| default_cache_root().join("tools/bin/virtiofsd"));
    if !virtiofsd.is_file() {
        return Err(format!("virtiofsd {}: not found (scripts/setup.sh builds it there; or pass --virtiofsd)", virtiofsd.display()));
    }
    let fs_sock = run_dir.join("fs.sock");
    let vhost_sock = run_dir.join("vhost-vsock.sock");
    let uds = run_dir.join("vsock");
    let mut procs = Procs(Vec::new());
    let log = |name: &str| std::fs::File::create(run_dir.join(name)).map_err(|e| format!("{}: {e}", run_dir.join(name).display()));
    let fsd = Command::new(&virtiofsd)
        .arg("--shared-dir")
        .arg(image.join(&manifest.rootfs))
        .arg("--socket-path")
        .arg(&fs_sock)
        .args(["--sandbox", "chroot", "--cache", "auto"])
        .stdin(Stdio::null())
        .stdout(log("virtiofsd.log")?)
        .stderr(log("virtiofsd.log")?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", virtiofsd.display()))?;
    procs.0.push(("virtiofsd".into(), fsd));
    let vs = Command::new(&vsock_bin)
        .arg("--socket")
        .arg(&vhost_sock)
        .arg("--uds-path")
        .arg(&uds)
        .args(["--guest-cid", "3"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log("rayos-vsock.log")?)
        .stderr(log("rayos-vsock.log")?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", vsock_bin.display()))?;
    procs.0.push(("rayos-vsock".into(), vs));
    wait_for_socket(&mut procs, &[&fs_sock, &vhost_sock], Duration::from_secs(20))?;

    // 3. QEMU.
    let (accel, why) = accel_for_linux(args.accel);
    println!("QEMU accelerator: {why}");
    let serial = run_dir.join("serial.log");
    let mem = format!("{}M", args.memory_mib);
    let cmdline = format!("console=ttyS0 {} panic=-1", manifest.kernel_cmdline);
    let mut qemu = Command::new(&args.qemu);
    qemu.args(accel)
        .args(["-m", &mem, "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .args(["-object", &format!("memory-backend-memfd,id=mem,size={mem},share=on"), "-numa", "node,memdev=mem"])
        .arg("-kernel")
        .arg(image.join(&manifest.vmlinuz))
        .arg("-initrd")
        .arg(image.join(&manifest.initramfs))
        .args(["-append", &cmdline])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-chardev")
        .arg(format!("socket,id=fs,path={}", fs_sock.display()))
        .args(["-device", "vhost-user-fs-pci,chardev=fs,tag=rootfs"])
        .arg("-chardev")
        .arg(format!("socket,id=vsock,path={}", vhost_sock.display()))
        .args(["-device", "vhost-user-vsock-pci,chardev=vsock"])
        .stdin(Stdio::null())
        .stdout(log("qemu.log")?)
        .stderr(log("qemu.log")?);
    println!("serial log: {}", serial.display());
    let boot = Instant::now();
    let q = qemu.spawn().map_err(|e| format!("cannot start {}: {e}", args.qemu.display()))?;
    procs.0.push(("qemu".into(), q));

    // 4. The host side.
    let result = exercise(args, &uds, boot, &mut procs);
    let tail = tail_lines(&serial, 15);
    match result {
        Ok(figures) => Ok(figures),
        Err(e) => Err(format!("{e}; last serial lines:\n{tail}")),
    }
}

/// QEMU arguments for booting Linux directly: KVM when this machine's KVM
/// can run it (not the paravirtual kvm_pvm), else TCG.
fn accel_for_linux(req: crate::qemu::AccelRequest) -> (&'static [&'static str], String) {
    use crate::qemu::AccelRequest;
    const KVM: &[&str] = &["-accel", "kvm", "-cpu", "host"];
    const TCG: &[&str] = &["-accel", "tcg", "-cpu", "max"];
    let probe = crate::qemu::AccelProbe::detect();
    match req {
        AccelRequest::Kvm => (KVM, "KVM, as requested".into()),
        AccelRequest::Tcg => (TCG, "TCG, as requested".into()),
        AccelRequest::Auto if probe.kvm_pvm => (TCG, "TCG: /sys/module/kvm_pvm is loaded and paravirtual KVM cannot boot Linux".into()),
        AccelRequest::Auto => match probe.kvm_open {
            Ok(()) => (KVM, "KVM: /dev/kvm opens".into()),
            Err(e) => (TCG, format!("TCG: {e}")),
        },
    }
}

fn wait_for_socket(procs: &mut Procs, socks: &[&Path], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !socks.iter().all(|s| s.exists()) {
        for (name, c) in &mut procs.0 {
            if let Ok(Some(st)) = c.try_wait() {
                return Err(format!("{name} exited early with {st} (see its log in the run directory)"));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("sockets not created within {timeout:?}: {socks:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn exercise(args: &AgentArgs, uds: &Path, boot: Instant, procs: &mut Procs) -> Result<String, String> {
    let reply_timeout = Duration::from_secs(30);
    let deadline = boot + args.boot_timeout;
    let mut attempts = 0u32;
    let mut client = loop {
        attempts += 1;
        match GuestClient::connect(uds, AGENT_PORT, reply_timeout) {
            Ok(c) => break c,
            Err(e @ (ClientError::Refused { .. } | ClientError::Connect { .. } | ClientError::Closed)) => {
                if Instant::now() > deadline {
                    return Err(format!("the agent did not answer within {:?} ({attempts} attempts, last: {e})", args.boot_timeout));
                }
                if let Some((name, st)) = procs.0.iter_mut().find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (n.clone(), s))) {
                    return Err(format!("{name} exited with {st} before the agent answered"));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(format!("connecting to the agent: {e}")),
        }
    };
    let boot_to_agent_s = boot.elapsed().as_secs_f64();
    println!(
        "agent answered after {boot_to_agent_s:.2} s ({attempts} connection attempts): {} protocol {} on kernel {}",
        client.info.agent, client.info.version, client.info.kernel
    );

    let apps = client.list_apps(false).map_err(|e| format!("list_apps: {e}"))?;
    println!("catalog: {} apps: {}", apps.len(), apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(" "));
    for want in ["foot.desktop", "weston-terminal.desktop"] {
        if !apps.iter().any(|a| a.id == want) {
            return Err(format!("the catalog lacks {want}"));
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
    let (handle, pid) = client.launch(&policy, argv(&["sh", "-c", "echo $(id -un) $(id -Gn | tr ' ' '\\n' | grep -xE 'video|render' | sort); exit 3"])).map_err(|e| format!("launch: {e}"))?;
    let first_rtt = t.elapsed().as_secs_f64() * 1e3;
    let exit = client.wait_exit(handle, reply_timeout).map_err(|e| format!("waiting for handle {handle}: {e}"))?;
    let user_line = client.take_events().into_iter().find_map(|e| match e {
        AgentMessage::Log { line, .. } if line.starts_with(&format!("[app {handle}]")) => Some(line),
        _ => None,
    });
    println!("launched a shell printing its user and groups, then exiting 3: handle {handle} pid {pid}, exit {exit:?}, output {user_line:?}");
    if exit != (Some(3), None) {
        return Err(format!("`sh -c 'exit 3'` ended with {exit:?}, expected status 3"));
    }
    if user_line.as_deref() != Some(&format!("[app {handle}] rayos render video")) {
        return Err(format!("the app did not run as user rayos with groups render and video: output {user_line:?}"));
    }
    let mut rtts = vec![first_rtt];
    for _ in 0..args.launches.saturating_sub(1) {
        let t = Instant::now();
        let (h, _) = client.launch(&policy, argv(&["true"])).map_err(|e| format!("launch true: {e}"))?;
        rtts.push(t.elapsed().as_secs_f64() * 1e3);
        let exit = client.wait_exit(h, reply_timeout).map_err(|e| format!("waiting for true: {e}"))?;
        if exit != (Some(0), None) {
            return Err(format!("`true` ended with {exit:?}"));
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
    let intent_launch = intent_over_guest(args, uds, "I need a terminal")?;
    match client.reply_to(None) {
        Ok(AgentMessage::Error { code: ErrorCode::Superseded, .. }) => {}
        other => return Err(format!("expected our connection to be superseded by rayos intent's, got {other:?}")),
    }
    let mut client = GuestClient::connect(uds, AGENT_PORT, reply_timeout).map_err(|e| format!("reconnecting: {e}"))?;
    println!("reconnected after rayos intent superseded the first connection");

    // Power off through the channel; QEMU must exit by itself.
    client.power(false).map_err(|e| format!("shutdown: {e}"))?;
    let stop = Instant::now();
    let qemu = procs.0.iter_mut().find(|(n, _)| n == "qemu").map(|(_, c)| c).expect("qemu is running");
    let status = loop {
        if let Some(st) = qemu.try_wait().map_err(|e| format!("waiting for QEMU: {e}"))? {
            break st;
        }
        if stop.elapsed() > Duration::from_secs(60) {
            return Err("QEMU still running 60 s after the shutdown request".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("guest powered off {:.2} s after the request; QEMU exit {status}", stop.elapsed().as_secs_f64());
    if !status.success() {
        return Err(format!("QEMU exited with {status} after the shutdown request"));
    }
    println!("intent over the guest catalog launched {intent_launch}");
    Ok(format!("boot_to_agent_s={boot_to_agent_s:.2} launch_rtt_ms={:.2}", rtt.median))
}

/// Run `rayos intent --guest UDS --json --launch REQUEST`; returns the app it
/// launched, which must be one of the guest's terminals.
fn intent_over_guest(args: &AgentArgs, uds: &Path, request: &str) -> Result<String, String> {
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
        return Err(format!("rayos intent --guest failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let mut lines = stdout.lines();
    let action: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("")).map_err(|e| format!("rayos intent printed no action: {e}"))?;
    let launched: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or("")).map_err(|e| format!("rayos intent launched nothing: {e}"))?;
    let app = launched["launched"].as_str().unwrap_or_default().to_string();
    if action["action"] != "launch" || action["app_id"] != launched["launched"] || launched["handle"].as_u64().is_none() {
        return Err(format!("unexpected rayos intent output: {stdout}"));
    }
    if !["foot.desktop", "weston-terminal.desktop", "footclient.desktop"].contains(&app.as_str()) {
        return Err(format!("{request:?} launched {app}, not a terminal"));
    }
    Ok(app)
}

fn expect_error(client: &mut GuestClient, want: ErrorCode) -> Result<(), String> {
    match client.reply_to(None) {
        Ok(AgentMessage::Error { code, message }) if code == want => {
            println!("agent answered {code:?}: {message}");
            Ok(())
        }
        other => Err(format!("expected a {want:?} error, got {other:?}")),
    }
}

fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
