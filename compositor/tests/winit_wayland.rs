//! The winit backend in a Wayland session: the compositor's window is a
//! Wayland client of another compositor (a headless rayos-compositor, the
//! "session"), and the session's own screenshot shows the inner output with
//! a client window and its host decoration. A missing client fails the test
//! naming its package.

mod common;
use common::{need, TIMEOUT};
use rayos_test_kit::image::{is_background, Image, HOST_RGB};
use rayos_test_kit::Procs;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    fn connect(path: &Path) -> Control {
        let end = Instant::now() + TIMEOUT;
        loop {
            if let Ok(s) = UnixStream::connect(path) {
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                return Control { reader: BufReader::new(s.try_clone().unwrap()), writer: s };
            }
            assert!(Instant::now() < end, "no control socket at {}", path.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ok(&mut self, req: Value) -> Value {
        self.writer.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "ok", "{req} -> {v}");
        v
    }

    /// Waits for a window matching `f`.
    fn wait_window(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + TIMEOUT;
        loop {
            let v = self.ok(json!({"op": "list_windows"}));
            if let Some(w) = v["windows"].as_array().and_then(|ws| ws.iter().find(|w| f(w)).cloned()) {
                return w;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn compositor(args: &[&str], socket_dir: &Path, env: &[(&str, &Path)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rayos-compositor"));
    cmd.args(args)
        .arg("--socket-dir")
        .arg(socket_dir)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start rayos-compositor")
}

fn geometry(w: &Value) -> (i64, i64, i64, i64) {
    let g = &w["geometry"];
    (g["x"].as_i64().unwrap(), g["y"].as_i64().unwrap(), g["w"].as_i64().unwrap(), g["h"].as_i64().unwrap())
}

#[test]
fn winit_window_in_a_wayland_session_shows_a_client_window() {
    let shm = need("weston-simple-shm", "weston");
    let tmp = tempfile::Builder::new().prefix("rayos-winit-wl-").tempdir().unwrap();
    let (outer, inner) = (tmp.path().join("session"), tmp.path().join("inner"));
    for d in [&outer, &inner] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let mut procs = Procs::new();

    // The session: a headless compositor.
    procs.push("outer compositor", compositor(&["--backend", "headless", "--size", "1280x800"], &outer, &[]));
    let mut session = Control::connect(&outer.join("rayos-compositor.sock"));
    // The compositor under test, in a window of that session.
    procs.push(
        "inner compositor",
        compositor(
            &["--backend", "winit", "--size", "640x400"],
            &inner,
            &[("XDG_RUNTIME_DIR", &outer), ("WAYLAND_DISPLAY", Path::new("rayos-host"))],
        ),
    );
    let mut ctl = Control::connect(&inner.join("rayos-compositor.sock"));
    let client = Command::new(shm)
        .env_clear()
        .env("XDG_RUNTIME_DIR", &inner)
        .env("WAYLAND_DISPLAY", "rayos-host")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weston-simple-shm");
    procs.push("client", client);

    let win = session.wait_window("the compositor's window in the session", |w| w["app_id"] == "rayos-compositor");
    let (ox, oy, ow, oh) = geometry(&win);
    assert_eq!((ow, oh), (640, 400), "the window has the output's size");
    let shm_win = ctl.wait_window("simple-shm in the compositor under test", |w| w["title"] == "simple-shm");
    let (ix, iy, iw, ih) = geometry(&shm_win);
    std::thread::sleep(Duration::from_millis(500));

    // The session's picture of its screen, not the inner compositor's buffer.
    let shot = tmp.path().join("session.png");
    session.ok(json!({"op": "screenshot", "path": shot.to_str().unwrap()}));
    let img = Image::load(&shot).expect("the session's screenshot");
    let px = |x: i64, y: i64| img.at(x, y);
    // The inner output sits at the session window's client area.
    let (cx, cy) = (ox + ix, oy + iy);
    assert_eq!(px(cx + iw - 2, cy - 2), HOST_RGB, "the inner host decoration's title bar is in the session");
    assert!(is_background(px(ox + ow - 10, oy + oh - 10)), "the inner background fills the window");
    let mut client_px = 0;
    for y in cy..cy + ih {
        for x in cx..cx + iw {
            client_px += usize::from(!is_background(px(x, y)));
        }
    }
    assert!(client_px * 10 > (iw * ih) as usize * 9, "simple-shm's pixels reach the session ({client_px})");
    // The session's own decoration frames the compositor's window.
    assert_eq!(px(ox + ow - 2, oy - 2), HOST_RGB, "the session decorates the window");
}
