//! The guest's desktop session on its virtio-gpu: what an `embedded`
//! launch shows in when RayOS gives the guest a display (`rayos-vmm --gpu`).
//!
//! The session starts in the background once the guest has a DRM card (the
//! agent watches for one after boot, as a display manager would), and
//! again if an embedded launch finds its socket gone; an embedded launch
//! waits briefly for a start in progress (the host waits for its reply),
//! and if weston is still starting its app waits for weston's socket in
//! its own process ([`wait_for_display`]) rather than exiting at once. Starting is `systemd-udevd` with a coldplug
//! (`udevadm trigger`) so libinput finds the virtio keyboard and tablet
//! (it only takes devices udev has classified), then `seatd` (as root, its
//! socket for the `video` group) hands the DRM and input devices to weston, which runs
//! as the guest user on the DRM backend with the pixman renderer and serves
//! `$XDG_RUNTIME_DIR/<embedded display>`; the app is then started in it.
//! Weston is an app like the others (the launcher's table, reaper and log
//! forwarding), so stopping it or its exit are reported as for any app.
//! Without a DRM card nothing is started and embedded launches behave as
//! before (command-line programs run; Wayland apps find no display).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rayos_contract::DisplayMode;

use crate::launcher::{LaunchError, Launcher};

#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("{0} did not finish within {1:?}")]
    Slow(String, Duration),
    #[error("seatd's socket {0} did not appear within {1:?}")]
    SeatdSocket(PathBuf, Duration),
    #[error("cannot start weston: {0}")]
    Weston(#[from] LaunchError),
    #[error("weston's socket {socket} did not appear within {wait:?} (its log: {log})")]
    WestonSocket { socket: PathBuf, wait: Duration, log: PathBuf },
}

/// Where the session's parts are.
#[derive(Debug, Clone)]
pub struct Desktop {
    /// The DRM card a session needs (`/dev/dri/card0`).
    pub card: PathBuf,
    pub udevd: PathBuf,
    pub udevadm: PathBuf,
    /// udevd's control socket (it runs when this exists).
    pub udev_control: PathBuf,
    pub seatd: PathBuf,
    pub seatd_socket: PathBuf,
    pub weston: PathBuf,
    /// weston's own log.
    pub log: PathBuf,
    pub wait: Duration,
}

impl Default for Desktop {
    fn default() -> Self {
        Desktop {
            card: "/dev/dri/card0".into(),
            udevd: "/usr/lib/systemd/systemd-udevd".into(),
            udevadm: "/usr/bin/udevadm".into(),
            udev_control: "/run/udev/control".into(),
            seatd: "/usr/sbin/seatd".into(),
            seatd_socket: "/run/seatd.sock".into(),
            weston: "/usr/bin/weston".into(),
            log: "/tmp/weston.log".into(),
            wait: Duration::from_secs(30),
        }
    }
}

/// What an embedded launch needs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the session runs, or there is no display to run it on.
    Nothing,
    /// seatd, then weston.
    SeatdAndWeston,
    Weston,
}

/// Decides from what exists.
pub fn need(session_socket: bool, card: bool, seatd_socket: bool) -> Need {
    match (session_socket, card, seatd_socket) {
        (true, _, _) | (false, false, _) => Need::Nothing,
        (false, true, false) => Need::SeatdAndWeston,
        (false, true, true) => Need::Weston,
    }
}

/// weston's command line for a session serving `socket` (a name in the
/// runtime directory).
pub fn weston_argv(weston: &Path, socket: &str, log: &Path) -> Vec<String> {
    vec![
        weston.display().to_string(),
        "--backend=drm".into(),
        "--renderer=pixman".into(),
        format!("--socket={socket}"),
        format!("--log={}", log.display()),
        // The host decides when the VM's display sleeps, not the guest.
        "--idle-time=0".into(),
    ]
}

/// Runs a root helper to its end. Its exit status is the agent reaper's
/// (PID 1 reaps every child), so the end is seen as its pid going away.
fn run_root(program: &Path, args: &[&str], wait: Duration) -> Result<(), DesktopError> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| DesktopError::Spawn(program.to_path_buf(), e))?;
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    drop(child);
    let end = Instant::now() + wait;
    while proc_dir.exists() {
        if Instant::now() > end {
            return Err(DesktopError::Slow(format!("{} {}", program.display(), args.join(" ")), wait));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn wait_for(path: &Path, wait: Duration) -> bool {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    path.exists()
}

impl Desktop {
    /// What starting the session needs now.
    fn need(&self, launcher: &Launcher) -> Need {
        let ra = launcher.run_as();
        need(ra.runtime_dir.join(&ra.embedded_display).exists(), self.card.exists(), self.seatd_socket.exists())
    }

    /// Starts the session if it should run and does not; returns weston's
    /// launch handle when it was started now. Blocks until weston serves its
    /// socket (or [`Desktop::wait`] passes).
    pub fn ensure(&self, launcher: &Launcher) -> Result<Option<u64>, DesktopError> {
        let ra = launcher.run_as();
        let socket = ra.runtime_dir.join(&ra.embedded_display);
        let step = self.need(launcher);
        if step == Need::Nothing {
            return Ok(None);
        }
        if step == Need::SeatdAndWeston {
            if !self.udev_control.exists() && self.udevd.exists() {
                tracing::info!("starting udevd and a coldplug for the desktop session's input devices");
                run_root(&self.udevd, &["--daemon"], Duration::from_secs(10))?;
                if !wait_for(&self.udev_control, Duration::from_secs(5)) {
                    tracing::warn!("udevd's control socket {} did not appear", self.udev_control.display());
                }
                // Only the devices the session uses: a full coldplug also
                // loads every module the CPU's modalias matches (crypto
                // self-tests with vector instructions), slow here and the
                // phase where nested runs failed with KVM emulation errors.
                run_root(
                    &self.udevadm,
                    &["trigger", "--action=add", "--subsystem-match=input", "--subsystem-match=drm"],
                    Duration::from_secs(20),
                )?;
                run_root(&self.udevadm, &["settle", "--timeout=15"], Duration::from_secs(20))?;
            }
            tracing::info!("starting seatd for the desktop session");
            // As root: it opens the devices and hands them to weston. The
            // reaper collects it if it ever exits.
            Command::new(&self.seatd)
                .args(["-g", "video"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| DesktopError::Spawn(self.seatd.clone(), e))?;
            if !wait_for(&self.seatd_socket, Duration::from_secs(5)) {
                return Err(DesktopError::SeatdSocket(self.seatd_socket.clone(), Duration::from_secs(5)));
            }
        }
        let argv = weston_argv(&self.weston, &ra.embedded_display, &self.log);
        let env = BTreeMap::from([("LIBSEAT_BACKEND".to_string(), "seatd".to_string())]);
        let (handle, pid) = launcher.launch(&argv, &env, None, DisplayMode::Embedded)?;
        tracing::info!(handle, pid, "desktop session: weston on {}", self.card.display());
        if !wait_for(&socket, self.wait) {
            return Err(DesktopError::WestonSocket { socket, wait: self.wait, log: self.log.clone() });
        }
        Ok(Some(handle))
    }
}

/// What an embedded launch finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeforeLaunch {
    /// The session serves (or the launch needs none).
    Go,
    /// A start is in progress; weston will serve this socket.
    Starting(PathBuf),
    /// The last start failed, with why.
    Failed(String),
}

/// Longest an app launched into a session still starting waits for its
/// socket (weston on a nested machine took a minute).
pub const DISPLAY_WAIT_S: u32 = 180;

/// `argv` started as soon as `socket` serves: a shell waits for the socket
/// (at most [`DISPLAY_WAIT_S`]) and then execs the app in its own process,
/// so the launch's pid is the app's and the reply does not wait for weston.
pub fn wait_for_display(socket: &Path, argv: &[String]) -> Vec<String> {
    let script = format!(
        "s=$1; shift; n=0; while [ ! -S \"$s\" ] && [ $n -lt {} ]; do sleep 0.1; n=$((n + 1)); done; exec \"$@\"",
        DISPLAY_WAIT_S * 10
    );
    let mut out = vec!["/bin/sh".to_string(), "-c".to_string(), script, "rayos-wait-display".to_string()];
    out.push(socket.display().to_string());
    out.extend(argv.iter().cloned());
    out
}

/// Where a session start is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting,
    Failed(String),
}

/// The session's starts, one at a time, off the request path.
pub struct Session {
    desktop: Desktop,
    phase: Mutex<Phase>,
    changed: Condvar,
}

impl Session {
    pub fn new(desktop: Desktop) -> Arc<Session> {
        Arc::new(Session { desktop, phase: Mutex::new(Phase::Idle), changed: Condvar::new() })
    }

    /// Starts the session in the background if it should run, does not,
    /// and no start is in progress.
    pub fn kick(self: &Arc<Self>, launcher: &Arc<Launcher>) {
        let mut phase = self.phase.lock().expect("session phase");
        if *phase == Phase::Starting || self.desktop.need(launcher) == Need::Nothing {
            return;
        }
        *phase = Phase::Starting;
        drop(phase);
        let (me, launcher) = (self.clone(), launcher.clone());
        let spawned = std::thread::Builder::new().name("desktop-session".into()).spawn(move || {
            let result = me.desktop.ensure(&launcher);
            let mut phase = me.phase.lock().expect("session phase");
            *phase = match result {
                Ok(_) => Phase::Idle,
                Err(e) => {
                    tracing::warn!("desktop session: {e}");
                    Phase::Failed(e.to_string())
                }
            };
            me.changed.notify_all();
        });
        if let Err(e) = spawned {
            tracing::warn!("desktop session: cannot start its thread: {e}");
            *self.phase.lock().expect("session phase") = Phase::Failed(e.to_string());
        }
    }

    /// For an embedded launch: starts the session if needed and waits up to
    /// `wait` for a start in progress. Returns the last start's failure, or
    /// the session's socket when its start is still in progress (the app
    /// then waits for it: [`wait_for_display`]).
    pub fn before_launch(
        self: &Arc<Self>,
        launcher: &Arc<Launcher>,
        display: DisplayMode,
        wait: Duration,
    ) -> BeforeLaunch {
        if display != DisplayMode::Embedded {
            return BeforeLaunch::Go;
        }
        self.kick(launcher);
        let phase = self.phase.lock().expect("session phase");
        let (phase, _) =
            self.changed.wait_timeout_while(phase, wait, |p| *p == Phase::Starting).expect("session phase");
        match &*phase {
            Phase::Failed(e) => BeforeLaunch::Failed(e.clone()),
            Phase::Starting => {
                let ra = launcher.run_as();
                BeforeLaunch::Starting(ra.runtime_dir.join(&ra.embedded_display))
            }
            Phase::Idle => BeforeLaunch::Go,
        }
    }

    /// Watches for the guest's DRM card (its driver loads in the
    /// background at boot) for up to `wait`, and starts the session on it.
    pub fn start_when_card_appears(self: &Arc<Self>, launcher: Arc<Launcher>, wait: Duration) {
        let me = self.clone();
        let _ = std::thread::Builder::new().name("desktop-watch".into()).spawn(move || {
            if wait_for(&me.desktop.card, wait) {
                me.kick(&launcher);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_launched_while_the_session_starts_waits_for_its_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("wayland-0");
        let out = tmp.path().join("ran");
        let argv = wait_for_display(&socket, &["sh".into(), "-c".into(), format!("echo started > {}", out.display())]);
        assert_eq!(&argv[..2], &["/bin/sh".to_string(), "-c".to_string()]);
        let mut child = Command::new(&argv[0]).args(&argv[1..]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(!out.exists(), "the app waits while there is no socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "started\n");
    }

    #[test]
    fn a_session_starts_only_with_a_card_and_without_a_socket() {
        assert_eq!(need(true, true, true), Need::Nothing);
        assert_eq!(need(false, false, false), Need::Nothing);
        assert_eq!(need(false, true, false), Need::SeatdAndWeston);
        assert_eq!(need(false, true, true), Need::Weston);
    }

    #[test]
    fn weston_runs_on_drm_with_pixman_on_the_embedded_socket() {
        let argv = weston_argv(Path::new("/usr/bin/weston"), "wayland-0", Path::new("/tmp/w.log"));
        assert_eq!(argv[1..4], ["--backend=drm", "--renderer=pixman", "--socket=wayland-0"]);
        assert!(argv.contains(&"--log=/tmp/w.log".to_string()));
    }
}
