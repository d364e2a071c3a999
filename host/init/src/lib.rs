//! `rayos init`: PID 1 of the RayOS host image.
//!
//! Design notes.
//!
//! * **Boot order.** [`mounts`] (proc, sys, dev, run, tmp, cgroup2); then
//!   udevd starts and replays the devices present (coldplug) while two
//!   threads load [`modules`] (display and input first, then storage; and
//!   KVM for this CPU's vendor). The compositor starts on DRM as soon as the
//!   card exists (headless when the machine has no display device), before
//!   the storage modules and udev's settle; input devices reach it through
//!   udev as they are added. Then the host volume (ext4 at
//!   `/var/lib/rayos`) is mounted and its first-boot steps run ([`volume`]),
//!   then the host name, the guest image slot ([`guests`]) and the host
//!   service; compositor and service are supervised ([`supervise`]). The
//!   host service starts the policy's VMs. Then the `rayos>` prompt
//!   ([`prompt`]) reads the serial console.
//! * **Failure.** Anything essential that fails (a mount, a module, the
//!   volume, a service that keeps dying) is said on the console in one line
//!   naming what failed, and the emergency shell runs on the console instead
//!   of a hang; leaving it powers off.
//! * **PID 1 duties.** The main thread reaps every process (orphans too),
//!   restarts children, writes the heartbeat ([`heartbeat`]) to the host's
//!   log and the kernel log every `heartbeat_s`, and turns SIGTERM/SIGPWR
//!   (poweroff), SIGINT (Ctrl-Alt-Del: reboot) and the prompt's commands into
//!   an ordered shutdown: the host service stops the VMs cleanly (agent
//!   poweroff, then signals), then the compositor and udevd stop, every other
//!   process gets SIGTERM then SIGKILL, file systems are synced and the host
//!   volume unmounted, then reboot(2).
//! * **Testable without being PID 1.** The mount table, module order,
//!   heartbeat line, first-boot state machine, A/B decisions, prompt parsing
//!   and supervision back-off are pure and unit tested; [`run`] only glues
//!   them to the system.

pub mod config;
pub mod firststart;
pub mod guests;
pub mod heartbeat;
pub mod modules;
pub mod mounts;
pub mod prompt;
pub mod supervise;
pub mod volume;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use config::InitConfig;
use prompt::Next;
use supervise::{Report, Spec, Supervisor};
use volume::{Step, Volume, VOLUME};

/// The compositor's private folder: its Wayland sockets and control socket.
pub const COMPOSITOR_DIR: &str = "/run/rayos-compositor";
pub const COMPOSITOR_CONTROL: &str = "/run/rayos-compositor/control.sock";
/// The host service's runtime folder and socket.
pub const RUNTIME_DIR: &str = "/run/rayos";
pub const SERVICE_SOCKET: &str = "/run/rayos/rayos.sock";
/// Console markers the smoke test waits for.
pub const MARK_READY: &str = "RAYOS-HOST-READY";
pub const MARK_AGENT: &str = "RAYOS-HOST-AGENT";
pub const MARK_POWEROFF: &str = "RAYOS-HOST-POWEROFF";
/// The compositor's log until poweroff copies it to the volume's `log/`.
const COMPOSITOR_LOG: &str = "/run/compositor.log";
/// The display the compositor drives when the machine has one.
const DRM_CARD: &str = "/dev/dri/card0";
pub const MARK_EMERGENCY: &str = "RAYOS-HOST-EMERGENCY";
pub const MARK_FIRST_BOOT: &str = "RAYOS-HOST-FIRST-BOOT";

/// What `rayos init` needs from the `rayos` binary that this crate cannot
/// depend on: installing the intent model into a store (sha256 checked).
pub trait Provision {
    /// Installs the model folder `from` into the store at `store`; returns a line for the console.
    fn install_model(&self, from: &Path, store: &Path) -> Result<String, String>;
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn kmsg(line: &str) {
    // One write is one kernel log record.
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("<6>{line}\n").as_bytes());
    }
}

fn uptime() -> f64 {
    heartbeat::parse_uptime(&std::fs::read_to_string("/proc/uptime").unwrap_or_default()).unwrap_or(f64::NAN)
}

/// Something essential failed: say it, run the emergency shell, power off.
fn emergency(cfg: Option<&InitConfig>, what: &str) -> ! {
    say(&format!("{MARK_EMERGENCY} {what}"));
    let shell = cfg.map(|c| c.shell.clone()).unwrap_or_else(|| PathBuf::from("/bin/sh"));
    if shell.is_file() {
        say(&format!("rayos-init: emergency shell ({}); leave it to power off", shell.display()));
        let _ = std::process::Command::new(&shell).env("PS1", "rayos-emergency# ").status();
    } else {
        say("rayos-init: no emergency shell in this image; powering off in 30 s");
        std::thread::sleep(Duration::from_secs(30));
    }
    finish(false)
}

/// sync, then reboot(2) (power off or restart).
fn finish(reboot: bool) -> ! {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let cmd = if reboot { libc::RB_AUTOBOOT } else { libc::RB_POWER_OFF };
    // SAFETY: reboot(2) with a valid command; as PID 1 this ends the system.
    unsafe { libc::reboot(cmd) };
    // Not PID 1 (a test run): just leave.
    std::process::exit(0)
}

fn mount_volume(cfg: &InitConfig) -> Result<(), String> {
    std::fs::create_dir_all(VOLUME).map_err(|e| format!("mkdir {VOLUME}: {e}"))?;
    let dev = cfg.volume_device.display().to_string();
    let end = Instant::now() + Duration::from_secs(10);
    while !cfg.volume_device.exists() {
        if Instant::now() > end {
            return Err(format!("host volume {dev}: no such device (give the machine a disk with the host volume)"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    mounts::mount(&dev, VOLUME, "ext4", libc::MS_NOATIME | libc::MS_NODEV | libc::MS_NOSUID, "")
        .map_err(|e| format!("host volume {dev}: {e} (an ext4 file system made by rayos image host?)"))
}

/// Runs the first-boot steps still pending; returns what it did.
fn first_boot(cfg: &InitConfig, vol: &Volume, provision: &dyn Provision) -> Result<Vec<String>, String> {
    let mut state = vol.read_state().map_err(|e| e.to_string())?;
    state.booted();
    let pending = state.pending();
    let mut did = vec![];
    if !pending.is_empty() {
        say(&format!("{MARK_FIRST_BOOT} setting up the host volume: {}", pending.len()));
    }
    for step in pending {
        let line = match step {
            Step::Layout => {
                for f in vol.folders().into_iter().chain([vol.shared(&cfg.vm)]) {
                    std::fs::create_dir_all(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                }
                // The shared folder is written by the guest's user through virtio-fs.
                let _ =
                    std::fs::set_permissions(vol.shared(&cfg.vm), std::os::unix::fs::PermissionsExt::from_mode(0o777));
                "created the volume's layout".to_string()
            }
            Step::Model => match &cfg.model_source {
                Some(src) => provision.install_model(src, &vol.models())?,
                None => "no intent model in this image: requests go by app name only".to_string(),
            },
            Step::Policy => {
                if vol.policy().exists() {
                    "kept the existing policy".to_string()
                } else {
                    let (memory_mib, cpus) = volume::guest_size(host_memory_mib(), host_cpus());
                    let text = volume::default_policy(&volume::PolicyInputs {
                        vm: cfg.vm.clone(),
                        memory_mib,
                        cpus,
                        runtime_dir: RUNTIME_DIR.into(),
                        compositor_control: COMPOSITOR_CONTROL.into(),
                        compositor_socket_dir: COMPOSITOR_DIR.into(),
                        volume: vol.root.clone(),
                    });
                    volume::write_durably(&vol.policy(), text.as_bytes()).map_err(|e| e.to_string())?;
                    format!(
                        "wrote the default policy ({}: VM {} with {memory_mib} MiB, {cpus} CPUs)",
                        vol.policy().display(),
                        cfg.vm
                    )
                }
            }
            Step::Hostname => {
                volume::write_durably(&vol.hostname(), format!("{}\n", cfg.hostname).as_bytes())
                    .map_err(|e| e.to_string())?;
                format!("host name {}", cfg.hostname)
            }
        };
        say(&format!("rayos-init: first boot: {line}"));
        did.push(line);
        state.mark(step);
        vol.write_state(&state).map_err(|e| e.to_string())?;
    }
    vol.write_state(&state).map_err(|e| e.to_string())?;
    if did.is_empty() {
        say(&format!("rayos-init: boot {} of this host volume; first-boot setup already done", state.boots));
    }
    Ok(did)
}

fn host_memory_mib() -> u64 {
    heartbeat::parse_meminfo_mib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default(), "MemTotal")
        .unwrap_or(1024)
}

fn host_cpus() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as u32
}

fn set_hostname(vol: &Volume, fallback: &str) {
    let name = std::fs::read_to_string(vol.hostname()).unwrap_or_default().trim().to_string();
    let name = if volume::valid_hostname(&name) { name } else { fallback.to_string() };
    // SAFETY: the pointer and length describe a live byte buffer.
    unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) };
}

/// Starts udevd and asks it to replay every device's "add" event; the
/// events are handled while the modules load and the volume is set up.
fn start_udev(cfg: &InitConfig, sup: &mut Supervisor) -> Result<(), String> {
    if !cfg.udevd.is_file() {
        return Err(format!(
            "{}: missing from the image (udev finds the display and input devices)",
            cfg.udevd.display()
        ));
    }
    sup.start(Spec {
        name: "udevd",
        program: cfg.udevd.clone(),
        args: vec![],
        env: vec![],
        log: PathBuf::from("/run/udevd.log"),
        restart: true,
    })
    .map_err(|e| format!("{}: {e}", cfg.udevd.display()))?;
    // udevd listens once its control socket exists.
    let end = Instant::now() + Duration::from_secs(10);
    while !Path::new("/run/udev/control").exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    udevadm(cfg, &["trigger", "--action=add", "--type=subsystems"])?;
    udevadm(cfg, &["trigger", "--action=add", "--type=devices"])
}

fn udevadm(cfg: &InitConfig, args: &[&str]) -> Result<(), String> {
    let st = std::process::Command::new(&cfg.udevadm)
        .args(args)
        .status()
        .map_err(|e| format!("{}: {e}", cfg.udevadm.display()))?;
    if !st.success() {
        say(&format!("rayos-init: udevadm {} ended with {st}; going on", args.join(" ")));
    }
    Ok(())
}

fn wait_socket(path: &Path, secs: u64, sup: &mut Supervisor, name: &str) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        for r in sup.reap() {
            report(&r);
        }
        if sup.pid(name).is_none() {
            return Err(format!("{name} exited before its socket {} appeared", path.display()));
        }
        if Instant::now() > end {
            return Err(format!("{name}: no socket {} after {secs} s", path.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn report(r: &Report) {
    let line = match r {
        Report::Exited { name, status, restart_in: Some(b) } => {
            format!("rayos-init: {name} ended ({status}); starting it again in {} s", b.as_secs())
        }
        Report::Exited { name, status, restart_in: None } => format!("rayos-init: {name} ended ({status})"),
        Report::GaveUp { name, log } => {
            let tail = prompt::tail(log, 5).unwrap_or_default();
            format!(
                "rayos-init: {name} keeps failing; not started again. Its log {}:\n  {}",
                log.display(),
                tail.iter().map(|l| prompt::printable(l)).collect::<Vec<_>>().join("\n  ")
            )
        }
        Report::Restarted { name, pid } => format!("rayos-init: {name} started again (pid {pid})"),
        Report::SpawnFailed { name, why } => format!("rayos-init: {name} could not start: {why}"),
    };
    say(&line);
}

/// How long each boot stage took.
struct Stages {
    last: Instant,
    done: Vec<(&'static str, f64)>,
}

impl Stages {
    fn new() -> Stages {
        Stages { last: Instant::now(), done: vec![] }
    }
    fn mark(&mut self, name: &'static str) {
        self.done.push((name, self.last.elapsed().as_secs_f64()));
        self.last = Instant::now();
    }
    fn line(&self) -> String {
        self.done.iter().map(|(n, s)| format!("{n}={s:.2}")).collect::<Vec<_>>().join(" ")
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
static REBOOT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGINT {
        REBOOT.store(true, Ordering::SeqCst);
    }
    STOP.store(true, Ordering::SeqCst);
}

fn install_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGPWR, libc::SIGUSR1] {
        // SAFETY: on_signal only stores to atomics, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of an immediate reboot.
    // SAFETY: reboot(2) with CAD_OFF only changes that setting.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// Watches the VM's first start on this boot and settles the guest image
/// trial ([`firststart`] decides).
fn watch_first_start(vm: String, vol: PathBuf, trial: bool) {
    let api = rayosd::client::ApiClient::new(SERVICE_SOCKET);
    let t0 = Instant::now();
    let mut watch = firststart::FirstStart::new(trial);
    let start = |api: &rayosd::client::ApiClient| {
        let _ = api.post(&format!("/v1/vms/{vm}/start"), serde_json::json!({}), Duration::from_secs(30));
    };
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(v) = api.get(&format!("/v1/vms/{vm}")) else { continue };
        let state = v["state"].as_str().unwrap_or("");
        let ready = state == "running" && !v["agent"].is_null();
        let failed = matches!(state, "failed" | "stopped") && t0.elapsed() > Duration::from_secs(5);
        let why = || prompt::printable(v["last_exit"].as_str().unwrap_or("no reason given"));
        match watch.observe(ready, failed) {
            firststart::Step::Wait => {}
            firststart::Step::Ready { commit } => {
                say(&format!(
                    "{MARK_AGENT} VM {vm} is running; its agent answered {:.1} s after the service started",
                    t0.elapsed().as_secs_f64()
                ));
                if commit {
                    if let Ok((_, Some(line))) = guests::Slots::new(&vol).settle(true) {
                        say(&format!("rayos-init: {line}"));
                    }
                }
                return;
            }
            firststart::Step::RollBack => {
                if let Ok((_, Some(line))) = guests::Slots::new(&vol).settle(false) {
                    say(&format!("rayos-init: {line}"));
                }
                start(&api);
            }
            firststart::Step::Retry => {
                // A guest that crashed while booting gets one more boot.
                say(&format!("rayos-init: VM {vm} failed to boot ({}); starting it again, once", why()));
                start(&api);
            }
            firststart::Step::GiveUp => {
                say(&format!(
                    "rayos-init: VM {vm} failed to boot again ({}); `vms` shows it, its log is in /var/lib/rayos/log",
                    why()
                ));
                return;
            }
        }
        if t0.elapsed() > Duration::from_secs(900) {
            say(&format!(
                "rayos-init: VM {vm} has not reached its agent after 15 minutes (state {state}); `vms` shows it"
            ));
            return;
        }
    }
}

/// Starts the compositor (supervised), on DRM when `drm`, else headless.
/// Its log stays in /run (the host volume is not mounted yet).
fn start_compositor(cfg: &InitConfig, sup: &mut Supervisor, drm: bool) -> &'static str {
    for d in [COMPOSITOR_DIR, RUNTIME_DIR] {
        let _ = std::fs::create_dir_all(d);
        let _ = std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    }
    let backend = if drm { "drm" } else { "headless" };
    if !drm {
        say("rayos-init: no display device (/dev/dri/card0): the compositor runs headless; `screenshot FILE` shows it");
    }
    let comp = Spec {
        name: "compositor",
        program: cfg.compositor.clone(),
        args: ["--backend", backend, "--socket-dir", COMPOSITOR_DIR, "--control", COMPOSITOR_CONTROL]
            .map(String::from)
            .to_vec(),
        env: vec![
            ("LIBSEAT_BACKEND".into(), "builtin".into()),
            ("XDG_RUNTIME_DIR".into(), COMPOSITOR_DIR.into()),
            ("RUST_LOG".into(), "info".into()),
        ],
        log: PathBuf::from(COMPOSITOR_LOG),
        restart: true,
    };
    if let Err(e) = sup.start(comp) {
        emergency(Some(cfg), &format!("{}: {e}", cfg.compositor.display()));
    }
    backend
}

/// PID 1. Never returns.
pub fn run(provision: &dyn Provision) -> ! {
    let t0 = Instant::now();
    let mut stages = Stages::new();
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    say(&format!("RayOS {} host init", env!("CARGO_PKG_VERSION")));
    let soft = match mounts::mount_all() {
        Ok(s) => s,
        Err(e) => emergency(None, &format!("early mounts: {e}")),
    };
    for e in soft {
        say(&format!("rayos-init: {e} (going on without it)"));
    }
    install_signals();
    stages.mark("mounts");
    let cfg = match InitConfig::load(Path::new(config::CONFIG)) {
        Ok(c) => c,
        Err(e) => emergency(None, &e.to_string()),
    };
    let mut sup = Supervisor::default();
    // The modules load while udevd starts and replays the devices present
    // (the KVM list beside the common one: the two share nothing). udevd
    // listens before the replay, so a device a module adds is either
    // replayed or seen live; the settle covers both.
    let kvm_loader = std::thread::spawn(|| modules::load_kvm(Path::new(modules::MODULE_DIR)));
    let common_loader = std::thread::spawn(|| modules::load_common(Path::new(modules::MODULE_DIR)));
    if let Err(e) = start_udev(&cfg, &mut sup) {
        emergency(Some(&cfg), &e);
    }
    stages.mark("udev-start");
    // The compositor as soon as the display exists (the display modules
    // load first; devtmpfs makes the card's node at once): the first frame
    // does not wait for storage modules or udev. Input devices reach it
    // through udev as they are added.
    let mut backend = None;
    while backend.is_none() && !common_loader.is_finished() {
        if Path::new(DRM_CARD).exists() {
            backend = Some(start_compositor(&cfg, &mut sup, true));
            stages.mark("compositor-start");
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let common = match common_loader.join() {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => emergency(Some(&cfg), &e.to_string()),
        Err(_) => emergency(Some(&cfg), "loading the modules panicked"),
    };
    stages.mark("modules");
    // Devices the modules created have their nodes and tags once udev settles.
    if let Err(e) = udevadm(&cfg, &["settle", "--timeout=60"]) {
        emergency(Some(&cfg), &e);
    }
    stages.mark("udev-settle");
    let backend = match backend {
        Some(b) => b,
        None => {
            let b = start_compositor(&cfg, &mut sup, Path::new(DRM_CARD).exists());
            stages.mark("compositor-start");
            b
        }
    };

    let (vendor, kvm) = match kvm_loader.join() {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => emergency(Some(&cfg), &e.to_string()),
        Err(_) => emergency(Some(&cfg), "loading the KVM modules panicked"),
    };
    if !Path::new("/dev/kvm").exists() {
        emergency(
            Some(&cfg),
            &format!("/dev/kvm is missing after loading KVM for {vendor:?}: this machine cannot run the Linux VM"),
        );
    }
    say(&format!("rayos-init: {} modules loaded, KVM for {vendor:?}", common.len() + kvm.len()));
    stages.mark("kvm");
    if let Err(e) = mount_volume(&cfg) {
        emergency(Some(&cfg), &e);
    }
    stages.mark("volume");
    let vol = Volume::new(VOLUME);
    if let Err(e) = first_boot(&cfg, &vol, provision) {
        emergency(Some(&cfg), &format!("first-boot setup of {VOLUME}: {e}"));
    }
    stages.mark("first-boot");
    set_hostname(&vol, &cfg.hostname);
    let slots = guests::Slots::new(&vol.root);
    let trial = match slots.boot() {
        Ok((action, line)) => {
            say(&format!("rayos-init: {line}"));
            matches!(action, guests::BootAction::TryStaged(_))
        }
        Err(e) => emergency(Some(&cfg), &e.to_string()),
    };
    let log = vol.log();
    if let Err(e) = wait_socket(Path::new(COMPOSITOR_CONTROL), 60, &mut sup, "compositor") {
        say(&format!("rayos-init: the compositor did not come up ({e}); see {}", COMPOSITOR_LOG));
    }
    stages.mark("compositor");
    let svc = Spec {
        name: "rayos-host",
        program: cfg.rayos.clone(),
        args: vec!["host".into(), "--policy".into(), vol.policy().display().to_string(), "--system".into()],
        env: vec![("RAYOS_MODEL_DIR".into(), vol.models().display().to_string()), ("RAYOS_LOG".into(), "info".into())],
        log: log.join("rayosd.log"),
        restart: true,
    };
    if let Err(e) = sup.start(svc) {
        emergency(Some(&cfg), &format!("{}: {e}", cfg.rayos.display()));
    }
    if let Err(e) = wait_socket(Path::new(SERVICE_SOCKET), 60, &mut sup, "rayos-host") {
        emergency(
            Some(&cfg),
            &format!("the host service did not start: {e}; its log is {}", log.join("rayosd.log").display()),
        );
    }
    stages.mark("service");
    say(&format!(
        "{MARK_READY} RayOS is up in {:.1} s (kernel {:.1} s before init): compositor on {backend}, host service on {SERVICE_SOCKET}; stages {}",
        t0.elapsed().as_secs_f64(),
        uptime() - t0.elapsed().as_secs_f64(),
        stages.line()
    ));
    {
        let (vm, root) = (cfg.vm.clone(), vol.root.clone());
        std::thread::spawn(move || watch_first_start(vm, root, trial));
    }

    // The prompt reads the console on its own thread; the main thread reaps.
    let (tx, rx) = mpsc::channel::<Next>();
    let shared = vol.shared(&cfg.vm);
    let log_dir = vol.log();
    let vm = cfg.vm.clone();
    let prompt_alive = Arc::new(AtomicBool::new(true));
    {
        let alive = prompt_alive.clone();
        std::thread::spawn(move || {
            let p = prompt::Prompt {
                api: rayosd::client::ApiClient::new(SERVICE_SOCKET),
                compositor: COMPOSITOR_CONTROL.into(),
                vm,
                shared,
                log: log_dir,
            };
            say("type a request in words (\"open a terminal\"), an app name, or `help`");
            let stdin = std::io::stdin();
            let mut lines = stdin.lock();
            loop {
                print!("{}", prompt::PROMPT);
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                match lines.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        // No console input (closed): the prompt ends, the system runs on.
                        alive.store(false, Ordering::SeqCst);
                        return;
                    }
                    Ok(_) => {}
                }
                let next = p.run_line(&line);
                if next != Next::Continue {
                    let _ = tx.send(next);
                    return;
                }
            }
        });
    }

    let beat_every = Duration::from_secs(cfg.heartbeat_s);
    let mut next_beat = Instant::now() + beat_every;
    let api = rayosd::client::ApiClient::new(SERVICE_SOCKET);
    let reboot = loop {
        for r in sup.reap() {
            report(&r);
        }
        match rx.try_recv() {
            Ok(Next::Reboot) => break true,
            Ok(_) => break false,
            Err(_) => {}
        }
        if STOP.load(Ordering::SeqCst) {
            break REBOOT.load(Ordering::SeqCst);
        }
        if Instant::now() >= next_beat {
            next_beat += beat_every;
            let vms = api.get("/v1/vms").ok();
            let line = heartbeat::now(vms.as_ref()).line();
            kmsg(&line);
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log.join("heartbeat.log")) {
                let _ = writeln!(f, "{line}");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    shutdown(&mut sup, &api, reboot)
}

/// The ordered shutdown; ends with reboot(2).
fn shutdown(sup: &mut Supervisor, api: &rayosd::client::ApiClient, reboot: bool) -> ! {
    let what = if reboot { "reboot" } else { "poweroff" };
    say(&format!("rayos-init: {what}: stopping the VMs"));
    let before: Vec<String> = api
        .get("/v1/vms")
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|v| format!("{}:{}", v["name"].as_str().unwrap_or("?"), v["state"].as_str().unwrap_or("?")))
        .collect();
    let service = sup.stop("rayos-host", libc::SIGTERM, Duration::from_secs(90));
    let clean = service.as_deref() == Some("exit status 0");
    let service = service.unwrap_or_else(|| {
        sup.stop("rayos-host", libc::SIGKILL, Duration::from_secs(5));
        "did not stop within 90 s (killed)".into()
    });
    let left: Vec<&str> =
        ["rayos-vmm", "virtiofsd", "rayos-vsock"].into_iter().filter(|n| process_running(n)).collect();
    let compositor = sup.stop("compositor", libc::SIGTERM, Duration::from_secs(10)).unwrap_or_else(|| "killed".into());
    sup.stop("udevd", libc::SIGTERM, Duration::from_secs(5));
    // The compositor's log lived in /run (it starts before the volume is
    // mounted); it joins the host's other logs, replacing the last boot's.
    if let Err(e) = std::fs::copy(COMPOSITOR_LOG, Path::new(VOLUME).join("log/compositor.log")) {
        say(&format!("rayos-init: cannot keep {COMPOSITOR_LOG} in {VOLUME}/log: {e}"));
    }
    // Everything else.
    // SAFETY: kill(-1) signals every process but PID 1 itself.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: as above.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    for _ in 0..20 {
        sup.reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let unmounted = match mounts::unmount(VOLUME, false) {
        Ok(()) => "unmounted".to_string(),
        Err(e) => {
            let _ = mounts::unmount(VOLUME, true);
            format!("busy ({e}), detached")
        }
    };
    say(&format!(
        "{MARK_POWEROFF} {what} vms_before=[{}] service=\"{service}\" vms_stopped_cleanly={} left=[{}] compositor=\"{compositor}\" volume={unmounted}",
        before.join(","),
        u8::from(clean && left.is_empty()),
        left.join(",")
    ));
    finish(reboot)
}

fn process_running(name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else { return false };
    rd.filter_map(|e| e.ok())
        .any(|e| std::fs::read_to_string(e.path().join("comm")).map(|c| c.trim() == name).unwrap_or(false))
}
