//! The winit backend under Xvfb: the compositor's window in a virtual X
//! server, captured from the X side with ImageMagick's `import -window root`,
//! shows a client's window with its host decoration. A missing program
//! (`Xvfb` from `xvfb`, `import` from `imagemagick`, weston-simple-shm from
//! `weston`) fails the test naming the package, never a silent pass.

mod common;
use common::{need, wait_until, TIMEOUT};
use rayos_test_kit::image::{is_background, Image, HOST_RGB};
use rayos_test_kit::Procs;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

fn request(reader: &mut BufReader<UnixStream>, writer: &mut UnixStream, req: Value) -> Value {
    writer.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "ok", "{req} -> {v}");
    v
}

#[test]
fn winit_window_under_xvfb_shows_a_client_window() {
    let xvfb = need("Xvfb", "xvfb");
    let import = need("import", "imagemagick");
    let shm = need("weston-simple-shm", "weston");
    let dir = tempfile::Builder::new().prefix("rayos-winit-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut procs = Procs::new();

    // A virtual X server on a free display (it writes the number to stdout).
    let mut x = Command::new(xvfb)
        .args(["-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Xvfb");
    let mut num = String::new();
    BufReader::new(x.stdout.take().unwrap()).read_line(&mut num).unwrap();
    procs.push("x", x);
    let display = format!(":{}", num.trim());
    assert!(num.trim().parse::<u32>().is_ok(), "Xvfb did not report its display: {num:?}");

    let control = dir.path().join("control.sock");
    let comp = Command::new(env!("CARGO_BIN_EXE_rayos-compositor"))
        .args(["--backend", "winit", "--size", "640x480", "--socket-dir"])
        .arg(dir.path())
        .arg("--control")
        .arg(&control)
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rayos-compositor");
    procs.push("comp", comp);
    wait_until("the compositor's sockets", || control.exists() && dir.path().join("rayos-host").exists());

    let client = Command::new(shm)
        .env_clear()
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("WAYLAND_DISPLAY", "rayos-host")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weston-simple-shm");
    procs.push("client", client);

    let s = UnixStream::connect(&control).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut writer = s;
    let mut win = Value::Null;
    wait_until("simple-shm's window", || {
        let v = request(&mut reader, &mut writer, json!({"op": "list_windows"}));
        win = v["windows"].as_array().and_then(|w| w.first().cloned()).unwrap_or(Value::Null);
        !win.is_null()
    });
    std::thread::sleep(Duration::from_millis(500));

    // Capture the X screen, not the compositor's own buffer.
    let shot = dir.path().join("root.png");
    let st = Command::new(import)
        .args(["-display", &display, "-window", "root"])
        .arg(format!("PNG32:{}", shot.display()))
        .status()
        .expect("run import");
    assert!(st.success(), "import -window root failed");
    let img = Image::load(&shot).expect("import wrote a PNG");
    assert_eq!((img.w, img.h), (1024, 768), "the root window of Xvfb");
    let px = |x: i64, y: i64| img.at(x, y);
    // No window manager: the compositor's window sits at the root's origin.
    let g = &win["geometry"];
    let (gx, gy, gw, gh) =
        (g["x"].as_i64().unwrap(), g["y"].as_i64().unwrap(), g["w"].as_i64().unwrap(), g["h"].as_i64().unwrap());
    assert_eq!(px(gx + gw - 2, gy - 2), HOST_RGB, "the host decoration's title bar is on the X screen");
    assert_eq!(px(gx - 2, gy + gh / 2), HOST_RGB, "the left border is on the X screen");
    assert!(is_background(px(600, 450)), "the output's background fills the rest of the window: {:?}", px(600, 450));
    let mut client_px = 0;
    for y in gy..gy + gh {
        for x in gx..gx + gw {
            client_px += usize::from(!is_background(px(x, y)));
        }
    }
    assert!(client_px * 10 > (gw * gh) as usize * 9, "simple-shm's pixels are on the X screen ({client_px})");
    assert_eq!(px(800, 600), [0, 0, 0], "outside the 640x480 window is Xvfb's root");
}
