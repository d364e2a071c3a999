//! Helpers shared by the compositor's integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rayos_test_kit::image::Image;
use serde_json::{json, Value};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Path of a client binary, or a failure naming the Debian package.
pub fn need(bin: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: install the Debian package `{package}` (bash scripts/setup.sh installs it)");
}

/// Polls `f` every 50 ms until it holds; panics after [`TIMEOUT`].
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    rayos_test_kit::wait::until(what, TIMEOUT, f).unwrap_or_else(|e| panic!("{e}"));
}

pub struct Compositor {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub control: PathBuf,
}

impl Compositor {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("rayos-comp-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Self::start_in(dir, extra)
    }

    /// Starts it with its sockets in `dir`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let control = dir.path().join("control.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_rayos-compositor"))
            .args(["--backend", "headless", "--size", "1280x800", "--socket-dir"])
            .arg(dir.path())
            .arg("--control")
            .arg(&control)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rayos-compositor");
        let c = Compositor { child, dir, control };
        wait_until("control socket and rayos-host socket", || {
            c.control.exists() && c.dir.path().join("rayos-host").exists()
        });
        c
    }

    /// Kills it and starts a new one on the same socket folder.
    pub fn restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::Builder::new().prefix("rayos-comp-").tempdir().unwrap();
        let dir = std::mem::replace(&mut self.dir, placeholder);
        // What the killed one left; the new one must make its own.
        for stale in ["control.sock", "rayos-host"] {
            let _ = std::fs::remove_file(dir.path().join(stale));
        }
        Self::start_in(dir, &[])
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn control(&self) -> Control {
        Control::connect(&self.control)
    }

    /// Starts a client on `socket` with a clean environment.
    pub fn client(&self, bin: &Path, args: &[&str], socket: &str) -> ClientProc {
        let child = Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.path())
            .env("WAYLAND_DISPLAY", socket)
            .env("LANG", "C.UTF-8")
            .current_dir(self.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        ClientProc(child)
    }
}

impl Drop for Compositor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct ClientProc(pub Child);

impl ClientProc {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub fn exited_within(&mut self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Control {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl Control {
    pub fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect control socket");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Control { reader: BufReader::new(s.try_clone().unwrap()), writer: s }
    }

    pub fn read_line(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("control read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
    }

    /// Sends a request and returns its response (skipping events).
    pub fn request(&mut self, req: Value) -> Value {
        let mut line = req.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).unwrap();
        loop {
            let v = self.read_line();
            if v["type"] != "event" {
                return v;
            }
        }
    }

    pub fn ok(&mut self, req: Value) -> Value {
        let v = self.request(req.clone());
        assert_eq!(v["type"], "ok", "{req} -> {v}");
        v
    }

    pub fn windows(&mut self) -> Vec<Value> {
        self.ok(json!({"op": "list_windows"}))["windows"].as_array().unwrap().clone()
    }

    pub fn wait_window(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until("window to appear in list_windows", || {
            found = self.windows().into_iter().find(|w| pred(w));
            found.is_some()
        });
        found.unwrap()
    }

    pub fn screenshot(&mut self, req: Value) -> Image {
        let v = self.ok(req);
        let path = v["path"].as_str().expect("path").to_string();
        Image::load(Path::new(&path)).expect("screenshot")
    }
}
