//! The tier 2 guest: the RayOS guest image booted by QEMU with its root on
//! virtio-fs and the agent on RayOS's own vsock backend, shared by the
//! `agent` and `native` scenarios.
//!
//! 1. Build (or refresh) the guest image with `rayos-image` from Debian
//!    trixie: kernel, initramfs, root file system with the agent.
//! 2. Start virtiofsd for the root (and one more per shared folder) and
//!    `rayos-vsock` (hybrid vsock on a unix socket in the run directory).
//! 3. Boot the image in QEMU (KVM when it can run Linux here, else TCG) with
//!    `vhost-user-fs-pci` devices and `vhost-user-vsock-pci`, memfd-shared
//!    RAM; shared folders are named to the guest's init on the command line
//!    (`rayos.share=TAG:/PATH`).
//! 4. Connect to the agent through the hybrid socket once it answers.

use crate::scenarios::ScenarioError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rayos::guest::{ClientError, GuestClient};
use rayos_contract::AGENT_PORT;

use crate::cli::GuestArgs;
use crate::debs::default_cache_root;
use crate::procs::Procs;

/// How a guest boots beyond the image: its shared folders, and whether its
/// root is exported read-only (a second VM on the same image).
#[derive(Default)]
pub struct BootOptions {
    pub shares: Vec<Share>,
    pub readonly_root: bool,
}

/// A host folder the guest mounts: virtio-fs `tag` at `guest_path`.
pub struct Share {
    pub tag: String,
    pub host_dir: PathBuf,
    pub guest_path: String,
}

/// The guest user's uid and gid (user `rayos` of the guest image).
pub const GUEST_UID: u32 = 1000;

impl BootOptions {
    /// A guest with `<run_dir>/shared` (returned), created for the guest user
    /// (mode 0755) and shared as tag `shared` at `/home/rayos/Shared`.
    pub fn with_home_share(run_dir: &Path) -> Result<(BootOptions, PathBuf), ScenarioError> {
        use std::os::unix::fs::PermissionsExt;
        let shared = run_dir.join("shared");
        std::fs::create_dir(&shared).map_err(|e| format!("{}: {e}", shared.display()))?;
        std::os::unix::fs::chown(&shared, Some(GUEST_UID), Some(GUEST_UID))
            .map_err(|e| format!("chown {}: {e}", shared.display()))?;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", shared.display()))?;
        let share = Share { tag: "shared".into(), host_dir: shared.clone(), guest_path: "/home/rayos/Shared".into() };
        Ok((BootOptions { shares: vec![share], readonly_root: false }, shared))
    }
}

/// A booted (booting) guest and the host processes serving it.
pub struct GuestVm {
    pub run_dir: PathBuf,
    /// The guest's hybrid vsock socket.
    pub uds: PathBuf,
    /// The guest image's root file system on the host.
    pub rootfs: PathBuf,
    pub serial: PathBuf,
    /// When QEMU was started.
    pub boot: Instant,
    pub procs: Procs,
}

/// Create the run directory for `name` and build (or refresh) the image.
pub fn prepare(args: &GuestArgs, name: &str) -> Result<(PathBuf, PathBuf, rayos_image::Manifest), ScenarioError> {
    prepare_image(args.guest.image.as_deref(), args.guest.agent.as_deref(), args.run_dir.as_deref(), name)
}

/// [`prepare`] from its three inputs: the image folder, the agent binary
/// and the run directory (each `None` for its default).
pub fn prepare_image(
    image: Option<&Path>,
    agent: Option<&Path>,
    run_dir: Option<&Path>,
    name: &str,
) -> Result<(PathBuf, PathBuf, rayos_image::Manifest), ScenarioError> {
    let run_dir = crate::rundir::create(&crate::rundir::target_dir().join("smoke"), name, run_dir)
        .map_err(|e| format!("{e}: {}", e.source))?;
    println!("run directory: {}", run_dir.display());
    let agent_bin = agent.map(Path::to_path_buf).unwrap_or_else(|| crate::rundir::release_binary("rayos-guest-agent"));
    if !agent_bin.is_file() {
        return Err(format!("--agent {}: not found (cargo build --release --workspace)", agent_bin.display()).into());
    }
    let image = image.map(Path::to_path_buf).unwrap_or_else(|| crate::rundir::target_dir().join("guest-image"));
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
    Ok((run_dir, image, manifest))
}

/// Start the backends and QEMU on the image built by [`prepare`].
pub fn boot(
    args: &GuestArgs,
    run_dir: &Path,
    image: &Path,
    manifest: &rayos_image::Manifest,
    opts: &BootOptions,
) -> Result<GuestVm, ScenarioError> {
    let shares = &opts.shares[..];
    let vsock_bin = args.guest.vsock_backend.clone().unwrap_or_else(|| crate::rundir::release_binary("rayos-vsock"));
    if !vsock_bin.is_file() {
        return Err(
            format!("--vsock-backend {}: not found (cargo build --release --workspace)", vsock_bin.display()).into()
        );
    }
    let virtiofsd = args.guest.virtiofsd.clone().unwrap_or_else(|| default_cache_root().join("tools/bin/virtiofsd"));
    if !virtiofsd.is_file() {
        return Err(format!(
            "virtiofsd {}: not found (scripts/setup.sh builds it there; or pass --virtiofsd)",
            virtiofsd.display()
        )
        .into());
    }
    let rootfs = image.join(&manifest.rootfs);
    let vhost_sock = run_dir.join("vhost-vsock.sock");
    let uds = run_dir.join("vsock");
    let mut procs = Procs(Vec::new());
    let log = |name: &str| {
        std::fs::File::create(run_dir.join(name)).map_err(|e| format!("{}: {e}", run_dir.join(name).display()))
    };
    let mut exports: Vec<(String, PathBuf, PathBuf)> = vec![("rootfs".into(), rootfs.clone(), run_dir.join("fs.sock"))];
    for s in shares {
        exports.push((s.tag.clone(), s.host_dir.clone(), run_dir.join(format!("fs-{}.sock", s.tag))));
    }
    for (tag, dir, sock) in &exports {
        let log_name = if tag == "rootfs" { "virtiofsd.log".to_string() } else { format!("virtiofsd-{tag}.log") };
        let mut fsd = Command::new(&virtiofsd);
        if tag == "rootfs" && opts.readonly_root {
            fsd.arg("--readonly");
        }
        let fsd = fsd
            .arg("--shared-dir")
            .arg(dir)
            .arg("--socket-path")
            .arg(sock)
            .args(["--sandbox", "chroot", "--cache", "auto"])
            .stdin(Stdio::null())
            .stdout(log(&log_name)?)
            .stderr(log(&log_name)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", virtiofsd.display()))?;
        procs.0.push((format!("virtiofsd-{tag}"), fsd));
    }
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
    let mut socks: Vec<&Path> = exports.iter().map(|(_, _, s)| s.as_path()).collect();
    socks.push(&vhost_sock);
    wait_for_socket(&mut procs, &socks, Duration::from_secs(20))?;

    let (accel, why) = accel_for_linux(args.accel);
    println!("QEMU accelerator: {why}");
    let serial = run_dir.join("serial.log");
    let mem = format!("{}M", args.memory_mib);
    let mut cmdline = format!("console=ttyS0 {} panic=-1", manifest.kernel_cmdline);
    for s in shares {
        cmdline.push_str(&format!(" rayos.share={}:{}", s.tag, s.guest_path));
    }
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
        .arg(format!("file:{}", serial.display()));
    for (i, (tag, _, sock)) in exports.iter().enumerate() {
        qemu.arg("-chardev")
            .arg(format!("socket,id=fs{i},path={}", sock.display()))
            .args(["-device", &format!("vhost-user-fs-pci,chardev=fs{i},tag={tag}")]);
    }
    qemu.arg("-chardev")
        .arg(format!("socket,id=vsock,path={}", vhost_sock.display()))
        .args(["-device", "vhost-user-vsock-pci,chardev=vsock"])
        .stdin(Stdio::null())
        .stdout(log("qemu.log")?)
        .stderr(log("qemu.log")?);
    println!("serial log: {}", serial.display());
    let boot = Instant::now();
    let q = qemu.spawn().map_err(|e| format!("cannot start {}: {e}", args.qemu.display()))?;
    procs.0.push(("qemu".into(), q));
    Ok(GuestVm { run_dir: run_dir.to_path_buf(), uds, rootfs, serial, boot, procs })
}

impl GuestVm {
    /// Wait for the agent to answer (until `boot_timeout` after QEMU's
    /// start), announcing `caps`; returns the client and the attempts made.
    pub fn connect_agent(
        &mut self,
        boot_timeout: Duration,
        caps: &[&str],
    ) -> Result<(GuestClient, u32), ScenarioError> {
        let reply_timeout = Duration::from_secs(30);
        let deadline = self.boot + boot_timeout;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match GuestClient::connect_with(&self.uds, AGENT_PORT, reply_timeout, caps) {
                Ok(c) => return Ok((c, attempts)),
                Err(e @ (ClientError::Refused { .. } | ClientError::Connect { .. } | ClientError::Closed)) => {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "the agent did not answer within {boot_timeout:?} ({attempts} attempts, last: {e})"
                        )
                        .into());
                    }
                    if let Some((name, st)) = self.procs.first_exited() {
                        return Err(format!("{name} exited with {st} before the agent answered").into());
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(format!("connecting to the agent: {e}").into()),
            }
        }
    }

    /// Start the VM's native-window bridge, `rayos bridge` (waypipe's host
    /// end, the guest image's own build unless `waypipe` names another),
    /// feeding the compositor socket `rayos-vm-<vm_name>` in `rt`; returns
    /// once it listens.
    pub fn start_bridge(
        &mut self,
        rayos: &Path,
        rt: &Path,
        vm_name: &str,
        waypipe: Option<&Path>,
    ) -> Result<(), ScenarioError> {
        let log = self.run_dir.join("bridge.log");
        let open = || std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()));
        let mut cmd = Command::new(rayos);
        cmd.arg("bridge")
            .arg("--vsock")
            .arg(&self.uds)
            .args(["--vm", vm_name, "--socket-dir"])
            .arg(rt)
            .arg("--guest-root")
            .arg(&self.rootfs)
            .arg("--log")
            .arg(self.run_dir.join("waypipe.log"));
        if let Some(w) = waypipe {
            cmd.arg("--waypipe").arg(w);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|e| format!("cannot run {} bridge: {e}", rayos.display()))?;
        self.procs.0.push(("rayos-bridge".into(), child));
        let end = Instant::now() + Duration::from_secs(20);
        while !rayos::bridge::is_served(&self.uds) {
            if let Some(Ok(Some(st))) = self.procs.get("rayos-bridge").map(|c| c.try_wait()) {
                return Err(format!(
                    "rayos bridge exited with {st}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
                .into());
            }
            if Instant::now() > end {
                return Err("the bridge did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Wait for QEMU to exit by itself (after a shutdown request).
    pub fn wait_qemu_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, ScenarioError> {
        let stop = Instant::now();
        let qemu = self.procs.get("qemu").ok_or("QEMU is not running")?;
        loop {
            if let Some(st) = qemu.try_wait().map_err(|e| format!("waiting for QEMU: {e}"))? {
                return Ok(st);
            }
            if stop.elapsed() > timeout {
                return Err(format!("QEMU still running {timeout:?} after the shutdown request").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of the serial log.
    pub fn serial_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.serial).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
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
        AccelRequest::Auto if probe.kvm_pvm => {
            (TCG, "TCG: /sys/module/kvm_pvm is loaded and paravirtual KVM cannot boot Linux".into())
        }
        AccelRequest::Auto => match probe.kvm_open {
            Ok(()) => (KVM, "KVM: /dev/kvm opens".into()),
            Err(e) => (TCG, format!("TCG: {e}")),
        },
    }
}

fn wait_for_socket(procs: &mut Procs, socks: &[&Path], timeout: Duration) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + timeout;
    while !socks.iter().all(|s| s.exists()) {
        if let Some((name, st)) = procs.first_exited() {
            return Err(format!("{name} exited early with {st} (see its log in the run directory)").into());
        }
        if Instant::now() > deadline {
            return Err(format!("sockets not created within {timeout:?}: {socks:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
