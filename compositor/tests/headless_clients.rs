//! Tier 1: the compositor binary on the headless backend with real Wayland
//! clients from Debian packages (weston-simple-shm from `weston`, `foot`,
//! wayland-info from `wayland-utils`; `scripts/setup.sh` installs them).
//! A missing client is a failure naming its package, never a silent pass.

mod common;
use common::{need, wait_until, Compositor, Control, TIMEOUT};
use rayos_test_kit::image::{is_background, Image, HOST_RGB};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn geo(w: &Value) -> (i64, i64, i64, i64) {
    let g = &w["geometry"];
    (g["x"].as_i64().unwrap(), g["y"].as_i64().unwrap(), g["w"].as_i64().unwrap(), g["h"].as_i64().unwrap())
}

fn is_rgb(p: [u8; 3], c: [u8; 3]) -> bool {
    p == c
}

/// Checks the decoration around a window: title bar in `colour`, a white label.
fn check_decoration(img: &Image, w: &Value, colour: [u8; 3]) {
    let (x, y, cw, _) = geo(w);
    // Title bar: 28 px above the client; right end (buttons slot) is plain colour.
    assert!(
        is_rgb(img.at(x + cw - 2, y - 26), colour),
        "title bar colour at right end: {:?}",
        img.at(x + cw - 2, y - 26)
    );
    assert!(is_rgb(img.at(x - 2, y + 5), colour), "left border colour");
    let (white, _) = img.count_at(x, y - 24, 100, 20, |p| p[0] == 255 && p[1] == 255 && p[2] == 255);
    assert!(white > 30, "the origin label is drawn in the title bar ({white} white pixels)");
}

#[test]
fn wayland_info_lists_our_globals() {
    let wi = need("wayland-info", "wayland-utils");
    let c = Compositor::start();
    let out = Command::new(wi)
        .env_clear()
        .env("XDG_RUNTIME_DIR", c.path())
        .env("WAYLAND_DISPLAY", "rayos-host")
        .output()
        .unwrap();
    assert!(out.status.success(), "wayland-info failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for global in ["wl_compositor", "xdg_wm_base", "wl_shm", "wl_seat", "zxdg_decoration_manager_v1", "wl_output"] {
        assert!(text.contains(&format!("'{global}'")), "wayland-info does not list {global}:\n{text}");
    }
}

#[test]
fn simple_shm_window_is_listed_drawn_and_gone_when_client_dies() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let mut client = c.client(&shm, &[], "rayos-host");
    let w = ctl.wait_window(|w| w["app_id"].as_str().is_some_and(|a| a.contains("simple-shm")));
    assert_eq!(w["title"], "simple-shm");
    assert_eq!(w["origin"], json!({"kind": "host"}));
    assert_eq!(w["mode"], "native");
    assert_eq!(w["focused"], true);
    let (x, y, cw, ch) = geo(&w);
    assert_eq!((cw, ch), (250, 250), "simple-shm's own size is kept");

    // The client draws its pattern: the client area is not the background.
    std::thread::sleep(Duration::from_millis(300));
    let shot = c.path().join("output.png");
    let img = ctl.screenshot(json!({"op": "screenshot", "path": shot.to_str().unwrap()}));
    assert_eq!((img.w, img.h), (1280, 800));
    let (bg, total) = img.count_at(x, y, cw, ch, is_background);
    assert!(bg * 10 < total, "client area is mostly background ({bg}/{total})");
    assert!(is_background(img.at(1270, 790)), "outside windows is background");
    check_decoration(&img, &w, HOST_RGB);

    // A window shot holds the client area and its decoration.
    let id = w["id"].as_u64().unwrap();
    let wshot = c.path().join("window.png");
    let wimg = ctl.screenshot(json!({"op": "screenshot", "window": id, "path": wshot.to_str().unwrap()}));
    assert_eq!((wimg.w, wimg.h), (250 + 8, 250 + 28 + 4));
    assert!(is_rgb(wimg.at(2, 2), HOST_RGB));

    // A client killed outright leaves no window.
    client.kill();
    wait_until("the dead client's window to go", || ctl.windows().is_empty());
}

#[test]
fn foot_runs_a_command_typed_through_the_control_api() {
    let foot = need("foot", "foot");
    let c = Compositor::start();
    let mut ctl = c.control();
    let _client = c.client(&foot, &["--", "/bin/sh"], "rayos-host");
    let w = ctl.wait_window(|w| w["app_id"] == "foot");
    let id = w["id"].as_u64().unwrap();
    // Give the shell a moment to print its prompt.
    std::thread::sleep(Duration::from_millis(500));
    let target = c.path().join("made-by-rayos");
    ctl.ok(json!({"op": "key", "id": id, "text": format!("touch {}\n", target.display())}));
    wait_until("the file typed into foot", || target.exists());

    // Keysyms with modifiers reach it too: Ctrl+U clears a typed line.
    ctl.ok(json!({"op": "key", "text": "echo never > never.txt"}));
    ctl.ok(json!({"op": "key", "keysyms": ["Control_L", "u"]}));
    ctl.ok(json!({"op": "key", "keysyms": ["Return"]}));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!c.path().join("never.txt").exists(), "Ctrl+U should have cleared the line");

    let shot = c.path().join("foot.png");
    let img = ctl.screenshot(json!({"op": "screenshot", "path": shot.to_str().unwrap()}));
    let (x, y, cw, ch) = geo(&w);
    let (bg, total) = img.count_at(x, y, cw, ch, is_background);
    assert!(bg * 10 < total, "foot's area is mostly background ({bg}/{total})");
    let (text, _) = img.count_at(x, y, cw, 40, |p| p[0] > 150 && p[1] > 150 && p[2] > 150);
    assert!(text > 50, "foot shows text ({text} light pixels)");
    check_decoration(&img, &w, HOST_RGB);
}

#[test]
fn vm_socket_tags_windows_and_unregister_closes_them() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let mut events = c.control();
    events.ok(json!({"op": "subscribe"}));
    let r = ctl.ok(json!({"op": "register_vm", "name": "work", "colour": "#d03030"}));
    assert_eq!(r["socket"], "rayos-vm-work");
    assert!(c.path().join("rayos-vm-work").exists(), "VM socket created");

    let mut client = c.client(&shm, &[], "rayos-vm-work");
    let w = ctl.wait_window(|w| w["origin"]["kind"] == "vm");
    assert_eq!(w["origin"], json!({"kind": "vm", "name": "work", "colour": "#d03030"}));
    let id = w["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let shot = c.path().join("vm.png");
    let img = ctl.screenshot(json!({"op": "screenshot", "path": shot.to_str().unwrap()}));
    check_decoration(&img, &w, [0xd0, 0x30, 0x30]);

    // The event stream saw it all.
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Value| e["event"] == "window_opened") {
        let e = events.read_line();
        assert_eq!(e["type"], "event");
        seen.push(e);
    }
    assert!(seen.iter().any(|e| e["event"] == "vm_registered" && e["name"] == "work"));

    let r = ctl.ok(json!({"op": "unregister_vm", "name": "work"}));
    assert_eq!(r["closed"], json!([id]));
    assert!(ctl.windows().is_empty(), "unregistering closes the VM's windows at once");
    assert!(!c.path().join("rayos-vm-work").exists(), "VM socket removed");
    assert!(client.exited_within(Duration::from_secs(10)), "the client was told to close");
    loop {
        let e = events.read_line();
        if e["event"] == "window_closed" {
            assert_eq!(e["reason"], "vm_unregistered");
            break;
        }
    }
}

#[test]
fn vm_desktop_socket_maps_one_embedded_desktop_beside_native_windows() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let r = ctl.ok(json!({"op": "register_vm", "name": "work", "colour": "#d03030"}));
    assert_eq!(r["desktop_socket"], "rayos-desktop-work");
    assert!(c.path().join("rayos-desktop-work").exists(), "desktop socket created");

    // The VM's display on its desktop socket: embedded-desktop mode.
    let _desktop = c.client(&shm, &[], "rayos-desktop-work");
    let d = ctl.wait_window(|w| w["mode"] == "embedded_desktop");
    assert_eq!(d["origin"]["name"], "work");
    // A guest app on the VM's app socket: a native window beside it.
    let _app = c.client(&shm, &[], "rayos-vm-work");
    let n = ctl.wait_window(|w| w["mode"] == "native");
    assert_eq!(n["origin"]["name"], "work");
    // One desktop per VM: a second toplevel on the desktop socket is closed.
    let mut second = c.client(&shm, &[], "rayos-desktop-work");
    assert!(second.exited_within(Duration::from_secs(10)), "second desktop refused; simple-shm exits");
    assert_eq!(ctl.windows().len(), 2, "the desktop and the native window");

    let r = ctl.ok(json!({"op": "unregister_vm", "name": "work"}));
    assert_eq!(r["closed"].as_array().map(Vec::len), Some(2), "both windows closed: {r}");
    assert!(!c.path().join("rayos-desktop-work").exists(), "desktop socket removed");
}

#[test]
fn a_client_drawn_title_bar_moves_its_window() {
    // weston-terminal draws its own frame and asks for xdg_toplevel.move
    // when its title bar is dragged: the compositor follows the pointer
    // while the button that started it is held.
    let term = need("weston-terminal", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let _t = c.client(&term, &[], "rayos-host");
    let w = ctl.wait_window(|w| w["app_id"] == "org.freedesktop.weston.wayland-terminal");
    let (x, y) = (w["geometry"]["x"].as_i64().unwrap(), w["geometry"]["y"].as_i64().unwrap());
    // Inside the client area, on its own title bar, away from its buttons,
    // once the client has laid out its frame. Its move request arrives
    // asynchronously, perhaps after the pointer moved on: while the button
    // is held, each motion re-places the window under the point pressed.
    std::thread::sleep(Duration::from_millis(500));
    let (px, py) = (x + 160, y + 12);
    ctl.ok(json!({"op": "pointer", "x": px, "y": py, "button": "left", "action": "press"}));
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut moved = None;
    while std::time::Instant::now() < deadline {
        ctl.ok(json!({"op": "pointer", "x": px + 100, "y": py + 80, "action": "motion"}));
        let g = ctl.windows()[0]["geometry"].clone();
        if g["x"].as_i64() != Some(x) {
            moved = Some(g);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let g = moved.expect("the window follows the pointer after the client's move request");
    assert_eq!((g["x"].as_i64(), g["y"].as_i64()), (Some(x + 100), Some(y + 80)));
    ctl.ok(json!({"op": "pointer", "x": px + 100, "y": py + 80, "button": "left", "action": "release"}));
    // Released: further motion moves nothing.
    ctl.ok(json!({"op": "pointer", "x": px + 300, "y": py + 200, "action": "motion"}));
    let g = ctl.windows()[0]["geometry"].clone();
    assert_eq!((g["x"].as_i64(), g["y"].as_i64()), (Some(x + 100), Some(y + 80)), "the move ended with the release");
}

#[test]
fn refused_vm_gets_its_new_toplevels_closed() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    ctl.ok(json!({"op": "register_vm", "name": "guest", "colour": "#2ea043"}));
    ctl.ok(json!({"op": "set_vm_policy", "name": "guest", "accept_windows": false}));
    let mut client = c.client(&shm, &[], "rayos-vm-guest");
    assert!(client.exited_within(Duration::from_secs(10)), "refused toplevel closed; simple-shm exits");
    assert!(ctl.windows().is_empty());
    // Allowed again, a new client maps.
    ctl.ok(json!({"op": "set_vm_policy", "name": "guest", "accept_windows": true}));
    let _client = c.client(&shm, &[], "rayos-vm-guest");
    ctl.wait_window(|w| w["origin"]["name"] == "guest");
}

/// Writes raw Wayland messages: (object, opcode, args as u32 words).
fn wire(stream: &mut UnixStream, msgs: &[(u32, u16, &[u32])]) {
    let mut buf = Vec::new();
    for (obj, op, args) in msgs {
        let size = 8 + 4 * args.len() as u32;
        buf.extend_from_slice(&obj.to_ne_bytes());
        buf.extend_from_slice(&((size << 16) | u32::from(*op)).to_ne_bytes());
        for a in *args {
            buf.extend_from_slice(&a.to_ne_bytes());
        }
    }
    stream.write_all(&buf).unwrap();
}

/// Reads events until a wl_display.error; returns (object, code, message).
fn read_protocol_error(stream: &mut UnixStream) -> (u32, u32, String) {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        data.extend_from_slice(&buf[..n]);
        let mut off = 0;
        while data.len() >= off + 8 {
            let obj = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
            let word = u32::from_ne_bytes(data[off + 4..off + 8].try_into().unwrap());
            let (size, op) = ((word >> 16) as usize, word & 0xffff);
            if data.len() < off + size {
                break;
            }
            if obj == 1 && op == 0 {
                let a = |i: usize| u32::from_ne_bytes(data[off + 8 + 4 * i..off + 12 + 4 * i].try_into().unwrap());
                let len = a(2) as usize;
                let msg = String::from_utf8_lossy(&data[off + 20..off + 20 + len.saturating_sub(1)]).into_owned();
                return (a(0), a(1), msg);
            }
            off += size;
        }
        assert!(n > 0, "connection closed without a protocol error");
    }
}

#[test]
fn invalid_requests_get_protocol_errors_and_the_compositor_carries_on() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let _good = c.client(&shm, &[], "rayos-host");
    ctl.wait_window(|w| w["title"] == "simple-shm");

    // wl_display.sync with a new_id already in use (1 is wl_display itself).
    let mut bad = UnixStream::connect(c.path().join("rayos-host")).unwrap();
    wire(&mut bad, &[(1, 0, &[1])]);
    let (obj, _code, msg) = read_protocol_error(&mut bad);
    assert_eq!(obj, 1, "error on wl_display: {msg}");
    // libwayland names the request ("invalid arguments for wl_display@1.sync").
    assert!(msg.contains("sync") || msg.contains("new_id"), "the error names the bad request: {msg}");

    // A request on an object that does not exist, or an unknown opcode:
    // the message cannot be parsed, so the client is cut off.
    let mut bad = UnixStream::connect(c.path().join("rayos-host")).unwrap();
    wire(&mut bad, &[(77, 0, &[])]);
    bad.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut sink = Vec::new();
    let _ = bad.read_to_end(&mut sink);
    let mut bad = UnixStream::connect(c.path().join("rayos-host")).unwrap();
    wire(&mut bad, &[(1, 9, &[])]);
    bad.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = bad.read_to_end(&mut sink);

    // Binding a global name that does not exist: get_registry(2), bind(2, name 999, "wl_seat", v1, id 3).
    let mut bad = UnixStream::connect(c.path().join("rayos-host")).unwrap();
    let iface = b"wl_seat\0";
    let mut args = vec![999u32, iface.len() as u32];
    args.extend(iface.chunks(4).map(|ch| u32::from_ne_bytes(ch.try_into().unwrap())));
    args.extend([1u32, 3]);
    wire(&mut bad, &[(1, 1, &[2]), (2, 0, &args)]);
    let (obj, _code, msg) = read_protocol_error(&mut bad);
    assert!(obj == 2 || obj == 1, "error names the registry or display: {obj} {msg}");

    // Garbage bytes.
    let mut bad = UnixStream::connect(c.path().join("rayos-host")).unwrap();
    bad.write_all(&[0xff; 64]).unwrap();
    drop(bad);

    // The compositor and its other client carry on.
    std::thread::sleep(Duration::from_millis(300));
    let ws = ctl.windows();
    assert_eq!(ws.len(), 1, "the good client's window is still there: {ws:?}");
    let wi = need("wayland-info", "wayland-utils");
    let st = Command::new(wi)
        .env_clear()
        .env("XDG_RUNTIME_DIR", c.path())
        .env("WAYLAND_DISPLAY", "rayos-host")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "a new client still connects");
}

#[test]
fn control_errors_are_as_documented() {
    let c = Compositor::start();
    let mut ctl = c.control();
    let e = ctl.request(json!({"op": "focus", "id": 99}));
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("unknown_window")));
    let e = ctl.request(json!({"op": "key", "text": "x"}));
    assert_eq!(e["code"], "no_focus");
    let e = ctl.request(json!({"op": "register_vm", "name": "hostile", "colour": "#d03030"}));
    assert_eq!(e["code"], "invalid_name");
    let e = ctl.request(json!({"op": "screenshot", "output": "NOPE-1"}));
    assert_eq!(e["code"], "invalid_request");
    ctl.writer.write_all(b"not json\n").unwrap();
    assert_eq!(ctl.read_line()["code"], "bad_request");
    // A base64 output screenshot decodes to a PNG.
    let v = ctl.ok(json!({"op": "screenshot"}));
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(1280), Some(800)));
    assert!(v["png_base64"].as_str().is_some_and(|s| s.starts_with("iVBORw0KGgo")));
}

#[test]
fn pointer_clicks_focus_drag_and_close_windows() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let mut first = c.client(&shm, &[], "rayos-host");
    let w1 = ctl.wait_window(|w| w["title"] == "simple-shm");
    let id1 = w1["id"].as_u64().unwrap();
    let _second = c.client(&shm, &[], "rayos-host");
    let w2 = ctl.wait_window(|w| w["id"].as_u64() != Some(id1));
    assert_eq!(w2["focused"], true, "the new host window takes focus");

    // A click on the first window's client area (not covered by the second) focuses it.
    let (x, y, _, _) = geo(&w1);
    ctl.ok(json!({"op": "pointer", "x": x + 5, "y": y + 5, "button": "left", "action": "click"}));
    let ws = ctl.windows();
    let top = ws.last().unwrap();
    assert_eq!((top["id"].as_u64(), &top["focused"]), (Some(id1), &json!(true)), "{ws:?}");

    // Dragging the title bar moves it.
    ctl.ok(json!({"op": "pointer", "x": x + 50, "y": y - 14, "button": "left", "action": "press"}));
    ctl.ok(json!({"op": "pointer", "x": x + 250, "y": y + 86, "action": "motion"}));
    ctl.ok(json!({"op": "pointer", "x": x + 250, "y": y + 86, "button": "left", "action": "release"}));
    let moved = ctl.windows().into_iter().find(|w| w["id"].as_u64() == Some(id1)).unwrap();
    assert_eq!((geo(&moved).0, geo(&moved).1), (x + 200, y + 100));

    // The close button closes it; the client is asked to close and exits.
    let (x, y, w, _) = geo(&moved);
    let (close_x, close_y) = (x + w + 4 - 18, y - 28 + 14);
    ctl.ok(json!({"op": "pointer", "x": close_x, "y": close_y, "button": "left", "action": "click"}));
    assert!(ctl.windows().iter().all(|w| w["id"].as_u64() != Some(id1)), "closed at once");
    assert!(first.exited_within(Duration::from_secs(10)), "simple-shm exits on close");
}

/// A raw Wayland client that maps an xdg toplevel (no buffer: it waits in
/// the compositor's pending list, which gets frame callbacks like any
/// window) and then floods `wl_surface.commit` as fast as the socket takes
/// them (one write per commit, events read between writes), with one frame
/// callback outstanding at a time. Returns (commits sent, frame callbacks
/// done) after `run`.
fn flood_commits(socket: &Path, run: Duration) -> (u64, u64) {
    use std::io::ErrorKind;
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let string_args = |name: u32, iface: &str, version: u32, id: u32| {
        let mut bytes = iface.as_bytes().to_vec();
        bytes.push(0);
        let len = bytes.len() as u32;
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
        let mut a = vec![name, len];
        a.extend(bytes.chunks(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())));
        a.extend([version, id]);
        a
    };
    // Registry: find wl_compositor and xdg_wm_base, then a sync (id 3) to end the burst.
    wire(&mut s, &[(1, 1, &[2]), (1, 0, &[3])]);
    let (mut comp, mut wm) = (None, None);
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let mut synced = false;
    while !synced {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "compositor closed the connection");
        data.extend_from_slice(&buf[..n]);
        let mut off = 0;
        while data.len() >= off + 8 {
            let obj = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
            let word = u32::from_ne_bytes(data[off + 4..off + 8].try_into().unwrap());
            let (size, op) = ((word >> 16) as usize, word & 0xffff);
            if data.len() < off + size {
                break;
            }
            if obj == 2 && op == 0 {
                let name = u32::from_ne_bytes(data[off + 8..off + 12].try_into().unwrap());
                let len = u32::from_ne_bytes(data[off + 12..off + 16].try_into().unwrap()) as usize;
                let iface = String::from_utf8_lossy(&data[off + 16..off + 16 + len - 1]).into_owned();
                match iface.as_str() {
                    "wl_compositor" => comp = Some(name),
                    "xdg_wm_base" => wm = Some(name),
                    _ => {}
                }
            }
            if obj == 3 {
                synced = true;
            }
            off += size;
        }
        data.drain(..off);
    }
    let (comp, wm) = (comp.expect("wl_compositor global"), wm.expect("xdg_wm_base global"));
    // 4 wl_compositor, 5 xdg_wm_base, 6 wl_surface, 7 xdg_surface, 8 xdg_toplevel.
    let a = string_args(comp, "wl_compositor", 4, 4);
    let b = string_args(wm, "xdg_wm_base", 1, 5);
    let title = string_args(0, "flood", 0, 0);
    let title = &title[1..title.len() - 2];
    wire(&mut s, &[(2, 0, &a), (2, 0, &b), (4, 0, &[6]), (5, 2, &[7, 6]), (7, 1, &[8]), (8, 2, title), (6, 6, &[])]);

    s.set_nonblocking(true).unwrap();
    let msg = |obj: u32, op: u16, args: &[u32]| {
        let mut m = Vec::new();
        m.extend_from_slice(&obj.to_ne_bytes());
        m.extend_from_slice(&(((8 + 4 * args.len() as u32) << 16) | u32::from(op)).to_ne_bytes());
        for a in args {
            m.extend_from_slice(&a.to_ne_bytes());
        }
        m
    };
    let commit = msg(6, 6, &[]);
    let mut out: Vec<u8> = Vec::new();
    let mut next_id = 9u32;
    let mut cb: Option<u32> = None;
    let (mut commits, mut dones) = (0u64, 0u64);
    let end = Instant::now() + run;
    while Instant::now() < end {
        // Read events: configure -> ack; ping -> pong; callback done.
        loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("the compositor disconnected the flooding client"),
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("flood read: {e}"),
            }
        }
        let mut off = 0;
        while data.len() >= off + 8 {
            let obj = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
            let word = u32::from_ne_bytes(data[off + 4..off + 8].try_into().unwrap());
            let (size, op) = ((word >> 16) as usize, word & 0xffff);
            if data.len() < off + size {
                break;
            }
            let arg0 = || u32::from_ne_bytes(data[off + 8..off + 12].try_into().unwrap());
            match (obj, op) {
                (1, 0) => panic!("protocol error for the flooding client"),
                (7, 0) => out.extend(msg(7, 4, &[arg0()])),
                (5, 0) => out.extend(msg(5, 3, &[arg0()])),
                (o, 0) if Some(o) == cb => {
                    dones += 1;
                    cb = None;
                }
                _ => {}
            }
            off += size;
        }
        data.drain(..off);
        if cb.is_none() {
            out.extend(msg(6, 3, &[next_id]));
            cb = Some(next_id);
            next_id += 1;
        }
        // Commits in 4 KiB batches, as fast as the socket takes them.
        if out.is_empty() {
            for _ in 0..512 {
                out.extend_from_slice(&commit);
            }
            commits += 512;
        }
        match s.write(&out) {
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => panic!("flood write: {e}"),
        }
    }
    let sent = commits - (out.len() / commit.len()) as u64;
    (sent, dones)
}

#[test]
fn a_client_flooding_commits_does_not_starve_another() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let _victim = c.client(&shm, &[], "rayos-host");
    let w = ctl.wait_window(|w| w["title"] == "simple-shm");
    let id = w["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let socket = c.path().join("rayos-host");
    let run = Duration::from_secs(3);
    let flooder = std::thread::spawn(move || flood_commits(&socket, run));
    std::thread::sleep(Duration::from_millis(500));
    // While the flood runs: the victim keeps drawing (it only draws on frame
    // callbacks), and the control API answers.
    let before = ctl.ok(json!({"op": "stats"}));
    let a = ctl.screenshot(json!({"op": "screenshot", "window": id, "path": c.path().join("a.png").to_str().unwrap()}));
    std::thread::sleep(Duration::from_millis(1500));
    let b = ctl.screenshot(json!({"op": "screenshot", "window": id, "path": c.path().join("b.png").to_str().unwrap()}));
    let after = ctl.ok(json!({"op": "stats"}));
    let (commits, dones) = flooder.join().expect("flooding client");
    let repaints = after["repaints"].as_u64().unwrap() - before["repaints"].as_u64().unwrap();
    eprintln!(
        "flood: {commits} commits, {dones} frame callbacks; the other client's window repainted {repaints} times"
    );
    assert!(commits > 10_000, "the flooding client did flood ({commits} commits)");
    assert!(dones >= 20, "the flooding client still gets frame callbacks ({dones} in {run:?})");
    assert!(repaints >= 20, "the other client kept drawing during the flood ({repaints} repaints in 1.5 s)");
    assert_ne!(a.rgb, b.rgb, "simple-shm's picture moved on during the flood");
    assert_eq!(ctl.windows().len(), 1, "the flooder never mapped (no buffer), the victim is still there");
}

/// The first column right of the label chip in a window shot: the chip is
/// the run of white (or label-coloured) pixels starting at the strip's left.
fn chip_end(img: &Image) -> i64 {
    // The strip starts at (BORDER + PAD, PAD) = (8, 4); its top row is chip
    // background only (text never reaches the top pixel row).
    let mut x = 8;
    while x < img.w as i64 && img.at(x, 4) == [255, 255, 255] {
        x += 1;
    }
    x
}

#[test]
fn title_bar_shows_the_label_chip_then_the_client_title_and_idles() {
    let foot = need("foot", "foot");
    let c = Compositor::start();
    let mut ctl = c.control();
    ctl.ok(json!({"op": "register_vm", "name": "work", "colour": "#d03030"}));
    // A guest title that tries to read as the host's label, long enough to be cut.
    let fake = "RayOS host RayOS host RayOS host RayOS host RayOS host RayOS host RayOS host";
    let _client = c.client(&foot, &["--title", fake, "--", "/bin/sh"], "rayos-vm-work");
    let w = ctl.wait_window(|w| w["app_id"] == "foot");
    assert_eq!(w["title"], fake);
    let id = w["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let img =
        ctl.screenshot(json!({"op": "screenshot", "window": id, "path": c.path().join("w.png").to_str().unwrap()}));
    let red = [0xd0, 0x30, 0x30];
    // The chip: white, holding the VM name in the VM colour (anti-aliased:
    // full-colour cores and blended edges).
    let end = chip_end(&img);
    assert!((30..=120).contains(&end), "chip ends at x={end}");
    let (label, _) = img.count_at(8, 4, end - 8, 20, |p| is_rgb(p, red));
    let (edges, _) = img.count_at(8, 4, end - 8, 20, |p| !is_rgb(p, red) && !is_rgb(p, [255, 255, 255]));
    assert!(label > 20 && edges > 20, "label pixels {label}, blended {edges}");
    // The title follows on the bar colour, in a light neutral colour, and
    // nowhere draws a second chip (no pure white past the chip).
    let bar_end = img.w as i64 - 4 - 4 - 2 * 20 - 4;
    let (light, _) = img.count_at(end, 4, bar_end - end, 20, |p| p[0] > 200 && p[1] > 200 && p[2] > 200);
    let (white, _) = img.count_at(end, 0, img.w as i64 - end, 28, |p| is_rgb(p, [255, 255, 255]));
    assert!(light > 100, "title text drawn ({light} light pixels)");
    assert_eq!(white, 0, "nothing past the chip is chip-white");
    assert!(is_rgb(img.at(end + 2, 14), red), "the bar colour separates chip and title");

    // An unchanged scene repaints nothing (the text strip is cached).
    let before = ctl.ok(json!({"op": "stats"}));
    std::thread::sleep(Duration::from_millis(1000));
    let after = ctl.ok(json!({"op": "stats"}));
    assert_eq!(before["repaints"], after["repaints"], "idle scene repainted");
    assert!(after["idle_frames"].as_u64().unwrap() > before["idle_frames"].as_u64().unwrap());
}

#[test]
fn window_commit_counter_and_first_content_time_measure_a_clients_fps() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let _client = c.client(&shm, &[], "rayos-host");
    let w = ctl.wait_window(|w| w["title"] == "simple-shm");
    let id = w["id"].clone();
    let mapped = w["mapped_at_ms"].as_u64().expect("mapped_at_ms");
    assert!(w["commits"].as_u64().unwrap() >= 1, "the mapping commit counts: {w}");
    let window = |v: &Value| v["windows"].as_array().unwrap().iter().find(|x| x["id"] == id).cloned().unwrap();
    let mut first = None;
    wait_until("the window's first frame on screen", || {
        first = window(&ctl.ok(json!({"op": "list_windows"})))["first_content_ms"].as_u64();
        first.is_some()
    });
    let first = first.unwrap();
    assert!(first >= mapped && first - mapped < 500, "mapped at {mapped} ms, first shown at {first} ms");

    // simple-shm draws on every frame callback: about the 60 Hz refresh.
    let a = ctl.ok(json!({"op": "list_windows"}));
    std::thread::sleep(Duration::from_millis(1000));
    let b = ctl.ok(json!({"op": "list_windows"}));
    let (t0, t1) = (a["now_ms"].as_u64().unwrap(), b["now_ms"].as_u64().unwrap());
    assert!(t0 >= first && t1 >= t0 + 1000, "now_ms {t0} then {t1}");
    let commits = window(&b)["commits"].as_u64().unwrap() - window(&a)["commits"].as_u64().unwrap();
    let fps = commits as f64 * 1000.0 / (t1 - t0) as f64;
    eprintln!("simple-shm: {commits} commits in {} ms = {fps:.1} fps", t1 - t0);
    assert!((20.0..=65.0).contains(&fps), "fps {fps:.1}");
    assert_eq!(window(&b)["first_content_ms"], first, "first_content_ms does not move");
}

/// Whether the compositor's default arrow (hot spot top-left: black left
/// edge, white inside) is drawn with its hot spot at (x, y).
fn arrow_at(img: &Image, x: i64, y: i64) -> bool {
    is_rgb(img.at(x, y + 5), [0, 0, 0])
        && is_rgb(img.at(x + 1, y + 5), [255, 255, 255])
        && is_rgb(img.at(x + 1, y + 9), [255, 255, 255])
}

#[test]
fn a_clients_cursor_surface_replaces_the_arrow_while_the_pointer_is_over_it() {
    let foot = need("foot", "foot");
    let c = Compositor::start_with(&["--draw-cursor"]);
    let mut ctl = c.control();
    let _client = c.client(&foot, &["--", "/bin/sh"], "rayos-host");
    let w = ctl.wait_window(|w| w["app_id"] == "foot");
    let (x, y, cw, ch) = geo(&w);
    let outside = (1200i64, 740i64);
    assert!(outside.0 > x + cw + 4 || outside.1 > y + ch + 4, "test point must be off the window");
    let shot = |ctl: &mut Control, name: &str| {
        std::thread::sleep(Duration::from_millis(400));
        ctl.screenshot(json!({"op": "screenshot", "path": c.path().join(name).to_str().unwrap()}))
    };
    ctl.ok(json!({"op": "pointer", "x": outside.0, "y": outside.1, "action": "motion"}));
    let img = shot(&mut ctl, "a.png");
    assert!(arrow_at(&img, outside.0, outside.1), "the default arrow off the windows");

    // Over foot's (empty) lower area: foot sets its own cursor surface.
    let p = (x + cw / 2, y + ch - 40);
    ctl.ok(json!({"op": "pointer", "x": p.0, "y": p.1, "action": "motion"}));
    let over = shot(&mut ctl, "b.png");
    assert!(!arrow_at(&over, p.0, p.1), "foot's cursor is shown, not the arrow");
    assert!(!arrow_at(&over, outside.0, outside.1), "the pointer left the old spot");

    // Leaving foot brings the arrow back; foot's cursor is gone from its area.
    ctl.ok(json!({"op": "pointer", "x": outside.0, "y": outside.1, "action": "motion"}));
    let back = shot(&mut ctl, "c.png");
    assert!(arrow_at(&back, outside.0, outside.1), "the default arrow is back");
    let mut diff = 0;
    for yy in p.1 - 24..p.1 + 24 {
        for xx in p.0 - 24..p.0 + 24 {
            if over.at(xx, yy) != back.at(xx, yy) {
                diff += 1;
            }
        }
    }
    assert!(diff > 10, "a cursor image was drawn at the pointer over foot ({diff} pixels differ)");
}

/// Runs a client to its end (failing if it takes over 10 s: a hung
/// transfer) and returns its stdout.
fn run_client(c: &Compositor, bin: &Path, args: &[&str], socket: &str, capture: bool) -> String {
    let mut child = Command::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", c.path())
        .env("XDG_RUNTIME_DIR", c.path())
        .env("WAYLAND_DISPLAY", socket)
        .stdout(if capture { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{} {args:?} on {socket} hung", bin.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).unwrap();
    }
    out
}

#[test]
fn clipboard_crosses_origins_only_as_each_vms_policy_allows() {
    let copy = need("wl-copy", "wl-clipboard");
    let paste = need("wl-paste", "wl-clipboard");
    let foot = need("foot", "foot");
    let c = Compositor::start();
    let mut ctl = c.control();
    let r = ctl.ok(json!({"op": "register_vm", "name": "work", "colour": "#d03030"}));
    assert_eq!(r["clipboard"], "on-paste", "the default policy");
    let host_paste = |c: &Compositor| run_client(c, &paste, &["-n"], "rayos-host", true);
    let vm_paste = |c: &Compositor| run_client(c, &paste, &["-n"], "rayos-vm-work", true);

    // The host's own clipboard.
    run_client(&c, &copy, &["host-secret"], "rayos-host", false);
    wait_until("the host to read its own selection", || host_paste(&c) == "host-secret");

    // on-paste: a VM client reading with no user input gets nothing (and
    // does not hang: the fd is closed).
    assert_eq!(vm_paste(&c), "", "on-paste without input");

    // on-paste: a real paste (Ctrl+Shift+V typed into the VM's foot) works.
    let mut term = c.client(&foot, &["--", "/bin/sh"], "rayos-vm-work");
    let w = ctl.wait_window(|w| w["app_id"] == "foot");
    let id = w["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ctl.ok(json!({"op": "key", "id": id, "text": "cat > pasted.txt\n"}));
    std::thread::sleep(Duration::from_millis(200));
    ctl.ok(json!({"op": "key", "keysyms": ["Control_L", "Shift_L", "v"]}));
    std::thread::sleep(Duration::from_millis(300));
    ctl.ok(json!({"op": "key", "keysyms": ["Return"]}));
    ctl.ok(json!({"op": "key", "keysyms": ["Control_L", "d"]}));
    let pasted = c.path().join("pasted.txt");
    wait_until("foot's paste to reach the file", || {
        std::fs::read_to_string(&pasted).is_ok_and(|s| s.trim() == "host-secret")
    });

    // allow: any read; deny: none, and the VM's own clipboard still works.
    ctl.ok(json!({"op": "set_vm_policy", "name": "work", "clipboard": "allow"}));
    assert_eq!(vm_paste(&c), "host-secret", "allow");
    ctl.ok(json!({"op": "set_vm_policy", "name": "work", "clipboard": "deny"}));
    assert_eq!(vm_paste(&c), "", "deny");
    run_client(&c, &copy, &["vm-secret"], "rayos-vm-work", false);
    wait_until("the VM to read its own selection", || vm_paste(&c) == "vm-secret");

    // Under deny the host does not get the VM's selection; once the VM is
    // back to on-paste it does (the host always may).
    term.kill();
    wait_until("foot's window to go", || ctl.windows().is_empty());
    assert_eq!(host_paste(&c), "", "a denying VM's selection is not offered to the host");
    ctl.ok(json!({"op": "set_vm_policy", "name": "work", "clipboard": "on-paste"}));
    assert_eq!(host_paste(&c), "vm-secret");

    // Unregistering the VM takes its selection with it.
    ctl.ok(json!({"op": "unregister_vm", "name": "work"}));
    assert_eq!(host_paste(&c), "");
}

#[test]
fn a_client_drawing_outside_its_window_never_covers_the_host_decoration() {
    // weston-terminal draws its own frame with a drop shadow in a buffer
    // larger than its window geometry: the shadow lies where the host draws
    // the border and the title bar. Every border pixel must stay the
    // origin's colour, all the way round.
    let term = need("weston-terminal", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    let _client = c.client(&term, &["--shell=/bin/sh"], "rayos-host");
    let w = ctl.wait_window(|w| w["app_id"].as_str().is_some_and(|a| a.contains("terminal")));
    std::thread::sleep(Duration::from_millis(500));
    let shot = c.path().join("terminal.png");
    let img = ctl.screenshot(json!({"op": "screenshot", "path": shot.to_str().unwrap()}));
    let (x, y, cw, ch) = geo(&w);
    check_decoration(&img, &w, HOST_RGB);
    let mut bad = Vec::new();
    for yy in (y - 28)..(y + ch + 4) {
        for xx in [x - 4, x - 1, x + cw, x + cw + 3] {
            if !is_rgb(img.at(xx, yy), HOST_RGB) {
                bad.push((xx, yy));
            }
        }
    }
    for xx in (x - 4)..(x + cw + 4) {
        for yy in [y + ch, y + ch + 3] {
            if !is_rgb(img.at(xx, yy), HOST_RGB) {
                bad.push((xx, yy));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} border pixels are not the host colour, first at {:?}: {:?}",
        bad.len(),
        bad[0],
        img.at(bad[0].0, bad[0].1)
    );
}
