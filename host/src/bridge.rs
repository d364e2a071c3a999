//! The host end of a VM's native-window bridge.
//!
//! A guest app launched with `display: native` speaks Wayland to waypipe's
//! server end in the guest, which carries the protocol over one vsock
//! connection to host port [`BRIDGE_PORT`]. RayOS's vsock backend hands that
//! connection to the unix socket `<hybrid socket>_5253`, where this module's
//! waypipe client end listens; it replays every app's requests as a Wayland
//! client of the compositor's per-VM socket `rayos-vm-<name>`, so each guest
//! toplevel becomes a host window labelled with that VM. Guest data reaches
//! the compositor only as an ordinary Wayland client, in this separate
//! process, never inside the compositor.
//!
//! Both ends must run the same waypipe build. Debian bookworm (the RayOS host
//! base today) ships 0.8, the guest image trixie's 0.9 with `--vsock`, so by
//! default the host runs the guest image's own binary through the image's
//! dynamic loader and libraries ([`Waypipe::from_guest_root`]); `--waypipe`
//! or `$RAYOS_WAYPIPE` name another build.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rayos_contract::BRIDGE_PORT;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(
        "no waypipe in the guest root {root}: {missing} is missing (build the guest image with `rayos image build`)"
    )]
    NotInRoot { root: PathBuf, missing: PathBuf },
    #[error("waypipe {0}: no such file")]
    NoBinary(PathBuf),
    #[error("cannot start waypipe {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("waypipe's client end exited with {status} before listening on {socket} (see its log)")]
    Exited { status: std::process::ExitStatus, socket: PathBuf },
    #[error("waypipe's client end did not listen on {socket} within {secs} s")]
    NotListening { socket: PathBuf, secs: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
}

/// How to run waypipe on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waypipe {
    /// A waypipe binary that runs on this host as it is.
    Binary(PathBuf),
    /// The guest image's waypipe, through the image's loader and libraries.
    InRoot { loader: PathBuf, libs: Vec<PathBuf>, binary: PathBuf },
}

/// Where a Debian x86-64 root keeps the dynamic loader, in search order.
const LOADERS: &[&str] =
    &["usr/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"];
/// Library folders of a Debian x86-64 root.
const LIB_DIRS: &[&str] = &["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib", "lib"];

impl Waypipe {
    /// The guest root file system's waypipe (`<root>/usr/bin/waypipe`).
    pub fn from_guest_root(root: &Path) -> Result<Waypipe, BridgeError> {
        let binary = root.join("usr/bin/waypipe");
        if !binary.is_file() {
            return Err(BridgeError::NotInRoot { root: root.into(), missing: binary });
        }
        let loader = LOADERS
            .iter()
            .map(|l| root.join(l))
            .find(|p| p.exists())
            .ok_or_else(|| BridgeError::NotInRoot { root: root.into(), missing: root.join(LOADERS[0]) })?;
        let libs = LIB_DIRS.iter().map(|d| root.join(d)).filter(|p| p.is_dir()).collect();
        Ok(Waypipe::InRoot { loader, libs, binary })
    }

    /// `$RAYOS_WAYPIPE` or `explicit` as a host binary, else the guest root's.
    pub fn resolve(explicit: Option<&Path>, guest_root: Option<&Path>) -> Result<Waypipe, BridgeError> {
        let env = std::env::var_os("RAYOS_WAYPIPE").map(PathBuf::from);
        if let Some(p) = explicit.map(Path::to_path_buf).or(env) {
            return if p.is_file() { Ok(Waypipe::Binary(p)) } else { Err(BridgeError::NoBinary(p)) };
        }
        match guest_root {
            Some(root) => Waypipe::from_guest_root(root),
            None => Err(BridgeError::NoBinary(PathBuf::from("(none: give --waypipe or the guest root)"))),
        }
    }

    /// The program and the arguments that come before waypipe's own.
    pub fn command(&self) -> (PathBuf, Vec<OsString>) {
        match self {
            Waypipe::Binary(p) => (p.clone(), Vec::new()),
            Waypipe::InRoot { loader, libs, binary } => {
                let path = std::env::join_paths(libs).unwrap_or_default();
                (loader.clone(), vec!["--library-path".into(), path, binary.clone().into_os_string()])
            }
        }
    }
}

/// One VM's bridge: where it listens and which compositor socket it feeds.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The VM's hybrid vsock socket (the vsock backend's `--uds-path`).
    pub vsock: PathBuf,
    /// The compositor's socket folder (its `XDG_RUNTIME_DIR` or `--socket-dir`).
    pub runtime_dir: PathBuf,
    /// The compositor socket the VM's windows arrive on, `rayos-vm-<name>`.
    pub display: String,
}

impl BridgeConfig {
    /// The unix socket guest connections to the bridge port arrive on.
    pub fn listen_path(&self) -> PathBuf {
        listen_path(&self.vsock)
    }

    /// waypipe's arguments (after the program and its loader arguments).
    pub fn waypipe_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = ["--no-gpu", "-c", "none", "-s"].map(OsString::from).to_vec();
        v.push(self.listen_path().into_os_string());
        v.push("client".into());
        v
    }
}

/// `<hybrid socket>_<BRIDGE_PORT>`.
pub fn listen_path(vsock: &Path) -> PathBuf {
    let mut s = vsock.as_os_str().to_owned();
    s.push(format!("_{BRIDGE_PORT}"));
    PathBuf::from(s)
}

/// Whether a bridge is listening for the VM behind `vsock` (its socket exists).
pub fn is_served(vsock: &Path) -> bool {
    std::fs::symlink_metadata(listen_path(vsock)).is_ok_and(|m| m.file_type().is_socket())
}

/// Start waypipe's client end for `cfg`, its output appended to `log`; returns
/// once it listens.
pub fn spawn(waypipe: &Waypipe, cfg: &BridgeConfig, log: &Path, timeout: Duration) -> Result<Child, BridgeError> {
    let listen = cfg.listen_path();
    match std::fs::symlink_metadata(&listen) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(&listen).map_err(|source| BridgeError::Io { path: listen.clone(), source })?
        }
        Ok(_) => return Err(BridgeError::NotASocket(listen)),
        Err(_) => {}
    }
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| BridgeError::Io { path: log.into(), source })
    };
    let (program, pre) = waypipe.command();
    let mut child = Command::new(&program)
        .args(pre)
        .args(cfg.waypipe_args())
        .env_clear()
        .env("XDG_RUNTIME_DIR", &cfg.runtime_dir)
        .env("WAYLAND_DISPLAY", &cfg.display)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?)
        .spawn()
        .map_err(|source| BridgeError::Spawn { program: program.clone(), source })?;
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::symlink_metadata(&listen).is_ok_and(|m| m.file_type().is_socket()) {
            tracing::info!(socket = %listen.display(), display = %cfg.display, "native-window bridge listening");
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BridgeError::Exited { status, socket: listen });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BridgeError::NotListening { socket: listen, secs: timeout.as_secs() });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_the_bridge_port_of_the_hybrid_socket() {
        let cfg = BridgeConfig {
            vsock: "/run/rayos/linux/vsock".into(),
            runtime_dir: "/run/rayos".into(),
            display: "rayos-vm-linux".into(),
        };
        assert_eq!(cfg.listen_path(), PathBuf::from(format!("/run/rayos/linux/vsock_{BRIDGE_PORT}")));
        let args: Vec<String> = cfg.waypipe_args().into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(args, ["--no-gpu", "-c", "none", "-s", "/run/rayos/linux/vsock_5253", "client"]);
    }

    #[test]
    fn the_guest_roots_waypipe_runs_through_its_own_loader() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(matches!(Waypipe::from_guest_root(r), Err(BridgeError::NotInRoot { .. })));
        for d in ["usr/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("usr/bin/waypipe"), b"").unwrap();
        assert!(
            matches!(Waypipe::from_guest_root(r), Err(BridgeError::NotInRoot { missing, .. }) if missing.ends_with("ld-linux-x86-64.so.2"))
        );
        std::fs::write(r.join("usr/lib64/ld-linux-x86-64.so.2"), b"").unwrap();
        let w = Waypipe::from_guest_root(r).unwrap();
        let (program, pre) = w.command();
        assert_eq!(program, r.join("usr/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(pre[0], "--library-path");
        let libs: Vec<PathBuf> = std::env::split_paths(&pre[1]).collect();
        assert_eq!(libs, [r.join("usr/lib/x86_64-linux-gnu"), r.join("usr/lib")]);
        assert_eq!(pre[2], r.join("usr/bin/waypipe").into_os_string());
    }

    #[test]
    fn a_bridge_socket_counts_only_when_it_is_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let vsock = dir.path().join("vsock");
        assert!(!is_served(&vsock));
        std::fs::write(listen_path(&vsock), b"").unwrap();
        assert!(!is_served(&vsock));
        let cfg = BridgeConfig { vsock: vsock.clone(), runtime_dir: dir.path().into(), display: "x".into() };
        let err = spawn(&Waypipe::Binary("/bin/true".into()), &cfg, &dir.path().join("log"), Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, BridgeError::NotASocket(_)), "{err}");
        std::fs::remove_file(listen_path(&vsock)).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(listen_path(&vsock)).unwrap();
        assert!(is_served(&vsock));
    }
}
