//! Tier 1: the embedded-desktop presenter (rayos-presenter, what rayos-vmm
//! runs for `--gpu wayland=…`) against the real compositor binary on its
//! headless backend: a VM's scanout appears as that VM's one
//! `embedded_desktop` window, damage copies only what changed, the window's
//! input comes back as evdev codes, a host resize reaches the VM, the
//! guest's cursor becomes the pointer's, a flood of flushes does not slow
//! another client's window, and the window comes back after a compositor
//! restart.

mod common;
use common::{need, wait_until, Compositor, Control};

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayos_presenter::{Config, Cursor, Events, Input, Presenter, Rect, Source};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Resize(u32, u32),
    Input(Input),
}

struct Sink(Mutex<Sender<Ev>>);

impl Events for Sink {
    fn resize(&self, w: u32, h: u32) {
        let _ = self.0.lock().unwrap().send(Ev::Resize(w, h));
    }
    fn input(&self, i: Input) {
        let _ = self.0.lock().unwrap().send(Ev::Input(i));
    }
}

fn presenter(dir: &Path, vm: &str) -> (Presenter, Receiver<Ev>) {
    let (tx, rx) = channel();
    let config = Config {
        socket: dir.join(format!("rayos-desktop-{vm}")),
        title: format!("{vm}: desktop"),
        app_id: "rayos.embedded-desktop".into(),
        retry: Duration::from_millis(200),
    };
    (Presenter::spawn(config, Box::new(Sink(Mutex::new(tx)))).unwrap(), rx)
}

/// A `w` × `h` XRGB8888 image of one colour.
fn solid(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    [rgb[2], rgb[1], rgb[0], 0xff].repeat(w as usize * h as usize)
}

fn fill(img: &mut [u8], w: u32, r: Rect, rgb: [u8; 3]) {
    for y in r.y..r.y + r.height {
        for x in r.x..r.x + r.width {
            let i = (y * w + x) as usize * 4;
            img[i..i + 4].copy_from_slice(&[rgb[2], rgb[1], rgb[0], 0xff]);
        }
    }
}

fn flush(p: &Presenter, img: &[u8], w: u32, h: u32, r: Rect) {
    p.flush(&Source { width: w, height: h, pixels: img, convert: None }, r);
}

fn geo(w: &Value) -> (i64, i64, i64, i64) {
    let g = &w["geometry"];
    (g["x"].as_i64().unwrap(), g["y"].as_i64().unwrap(), g["w"].as_i64().unwrap(), g["h"].as_i64().unwrap())
}

fn desktop_window(ctl: &mut Control) -> Value {
    ctl.wait_window(|w| w["mode"] == "embedded_desktop" && w["commits"].as_u64().unwrap_or(0) > 0)
}

fn wait_presented(p: &Presenter, n: u64) {
    wait_until(&format!("{n} frames shown"), || p.stats().presented >= n);
}

/// Waits for the next event matching `f`, skipping others.
fn expect(rx: &Receiver<Ev>, what: &str, f: impl Fn(&Ev) -> bool) -> Ev {
    let end = Instant::now() + Duration::from_secs(10);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(e) if f(&e) => return e,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no {what} from the presenter within 10 s");
}

const GUEST: [u8; 3] = [0x20, 0x60, 0xc0];
const PATCH: [u8; 3] = [0xe0, 0xa0, 0x10];

#[test]
fn a_vms_scanout_is_one_labelled_window_with_damage_input_resize_and_cursor() {
    let c = Compositor::start_with(&["--draw-cursor"]);
    let mut ctl = c.control();
    ctl.ok(json!({"op": "register_vm", "name": "desk", "colour": "#c06020"}));
    let (p, rx) = presenter(c.path(), "desk");
    let (w, h) = (640u32, 400u32);
    let mut img = solid(w, h, GUEST);
    p.set_mode(Some((w, h)));
    flush(&p, &img, w, h, Rect::new(0, 0, w, h));
    let win = desktop_window(&mut ctl);
    assert_eq!(win["origin"]["name"], "desk");
    assert_eq!(win["app_id"], "rayos.embedded-desktop");
    let id = win["id"].as_u64().unwrap();
    let (x, y, gw, gh) = geo(&win);
    assert_eq!((gw, gh), (i64::from(w), i64::from(h)), "the window is the guest's display size");
    wait_presented(&p, 1);

    // The guest's pixels are in the window (the drawn pointer kept off it).
    assert!(x + gw < 1270 || y + gh < 790, "the corner is off the window");
    ctl.ok(json!({"op": "pointer", "x": 1279, "y": 799, "action": "motion"}));
    let shot = ctl.screenshot(json!({"op": "screenshot", "path": c.path().join("a.png").to_str().unwrap()}));
    let (inside, total) = shot.count_at(x + 10, y + 10, gw - 20, gh - 20, |px| px == GUEST);
    assert_eq!(inside, total, "the client area shows the guest's image");

    // Damage: repeated 64x64 updates copy 64x64x4 bytes each.
    let patch = Rect::new(100, 100, 64, 64);
    for i in 0..4u64 {
        fill(&mut img, w, patch, if i % 2 == 0 { PATCH } else { GUEST });
        let before = p.stats().presented;
        flush(&p, &img, w, h, patch);
        wait_presented(&p, before + 1);
    }
    fill(&mut img, w, patch, PATCH);
    let before = p.stats().presented;
    flush(&p, &img, w, h, patch);
    wait_presented(&p, before + 1);
    let s = p.stats();
    println!(
        "presenter: 64x64 update copied {} bytes (64*64*4 = {}); flush_to_present_ms p50 {:.2} p95 {:.2}",
        s.last_frame_bytes,
        64 * 64 * 4,
        s.flush_to_present_ms_p50.unwrap(),
        s.flush_to_present_ms_p95.unwrap()
    );
    assert_eq!(s.last_frame_bytes, 64 * 64 * 4, "only the damaged rectangle is copied");
    std::thread::sleep(Duration::from_millis(300));
    let shot = ctl.screenshot(json!({"op": "screenshot", "path": c.path().join("b.png").to_str().unwrap()}));
    assert_eq!(shot.at(x + 100 + 32, y + 100 + 32), PATCH, "the damaged patch is shown");
    assert_eq!(shot.at(x + 300, y + 300), GUEST, "the rest is unchanged");

    // Input: a click and a key in the window come back as evdev codes.
    ctl.ok(json!({"op": "pointer", "x": x + 320, "y": y + 200, "button": "left", "action": "click"}));
    match expect(&rx, "pointer motion", |e| matches!(e, Ev::Input(Input::Motion { .. }))) {
        Ev::Input(Input::Motion { x: mx, y: my, width, height }) => {
            assert_eq!((width, height), (w, h));
            assert!((mx - 320.0).abs() < 1.0 && (my - 200.0).abs() < 1.0, "motion at ({mx}, {my})");
        }
        e => unreachable!("{e:?}"),
    }
    expect(&rx, "BTN_LEFT press", |e| *e == Ev::Input(Input::Button { code: 0x110, pressed: true }));
    expect(&rx, "BTN_LEFT release", |e| *e == Ev::Input(Input::Button { code: 0x110, pressed: false }));
    ctl.ok(json!({"op": "key", "id": id, "text": "a"}));
    expect(&rx, "KEY_A press", |e| *e == Ev::Input(Input::Key { code: 30, pressed: true }));
    expect(&rx, "KEY_A release", |e| *e == Ev::Input(Input::Key { code: 30, pressed: false }));

    // The guest's cursor becomes the pointer's image.
    const CURSOR: [u8; 3] = [0xff, 0x00, 0xff];
    p.cursor(Some(Cursor { width: 16, height: 16, hot_x: 0, hot_y: 0, argb: [0xff, 0x00, 0xff, 0xff].repeat(256) }));
    ctl.ok(json!({"op": "pointer", "x": x + 400, "y": y + 250, "action": "motion"}));
    wait_until("the guest's cursor drawn at the pointer", || {
        let s = ctl.screenshot(json!({"op": "screenshot", "path": c.path().join("c.png").to_str().unwrap()}));
        s.count_at(x + 402, y + 252, 10, 10, |px| px == CURSOR).0 == 100
    });

    // A host resize reaches the guest; its new mode fills the window.
    ctl.ok(json!({"op": "resize", "id": id, "width": 800, "height": 500}));
    expect(&rx, "a resize to 800x500", |e| *e == Ev::Resize(800, 500));
    let (w2, h2) = (800u32, 500u32);
    let img2 = solid(w2, h2, PATCH);
    p.set_mode(Some((w2, h2)));
    flush(&p, &img2, w2, h2, Rect::new(0, 0, w2, h2));
    wait_until("the window at 800x500 showing the new mode", || {
        let win = ctl.windows().into_iter().find(|v| v["id"] == id).unwrap();
        let (x, y, gw, gh) = geo(&win);
        (gw, gh) == (800, 500) && {
            let s = ctl.screenshot(json!({"op": "screenshot", "path": c.path().join("d.png").to_str().unwrap()}));
            s.at(x + 780, y + 480) == PATCH
        }
    });
    assert_eq!(p.stats().window, Some((800, 500)));
}

#[test]
fn a_flood_of_flushes_does_not_slow_another_window_and_the_display_survives_a_compositor_restart() {
    let shm = need("weston-simple-shm", "weston");
    let c = Compositor::start();
    let mut ctl = c.control();
    ctl.ok(json!({"op": "register_vm", "name": "flood", "colour": "#30a060"}));
    let (p, _rx) = presenter(c.path(), "flood");
    let (w, h) = (1280u32, 800u32);
    let img = Arc::new(solid(w, h, GUEST));
    p.set_mode(Some((w, h)));
    flush(&p, &img, w, h, Rect::new(0, 0, w, h));
    desktop_window(&mut ctl);
    let _other = c.client(&shm, &[], "rayos-host");
    let other = ctl.wait_window(|v| v["origin"]["kind"] == "host" && v["commits"].as_u64().unwrap_or(0) > 0);
    let commits = |ctl: &mut Control| {
        ctl.windows().into_iter().find(|v| v["id"] == other["id"]).unwrap()["commits"].as_u64().unwrap()
    };
    let run = Duration::from_secs(2);
    let rate = |ctl: &mut Control| {
        let (c0, t0) = (commits(ctl), Instant::now());
        std::thread::sleep(run);
        (commits(ctl) - c0) as f64 / t0.elapsed().as_secs_f64()
    };
    let calm = rate(&mut ctl);
    let p = Arc::new(p);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let (p, img, stop) = (p.clone(), img.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                flush(&p, &img, w, h, Rect::new(0, 0, w, h));
                n += 1;
            }
            n
        })
    };
    let (f0, s0) = (p.stats().frames, Instant::now());
    let flooded = rate(&mut ctl);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flushes = flooder.join().unwrap();
    let frames = p.stats().frames - f0;
    let secs = s0.elapsed().as_secs_f64();
    println!(
        "flood: {flushes} full-frame flushes in {secs:.1} s became {frames} presented frames; \
         another window's commits/s: calm {calm:.1}, during the flood {flooded:.1}"
    );
    assert!(calm > 5.0, "weston-simple-shm drew ({calm:.1}/s)");
    assert!(flooded >= calm * 0.5, "the flood slowed another window: {flooded:.1}/s vs {calm:.1}/s");
    assert!((frames as f64) < flushes as f64 / 2.0 || flushes < 100, "flushes were coalesced");

    // The compositor goes away and comes back: the VM's display returns.
    drop(ctl);
    let dir = c.path().to_path_buf();
    drop(_other);
    let c2 = c.restart();
    assert_eq!(c2.path(), dir);
    let mut ctl = c2.control();
    ctl.ok(json!({"op": "register_vm", "name": "flood", "colour": "#30a060"}));
    let win = desktop_window(&mut ctl);
    assert_eq!(win["origin"]["name"], "flood");
    wait_until("the presenter reconnected", || p.stats().reconnects >= 1 && p.stats().connected);
}
