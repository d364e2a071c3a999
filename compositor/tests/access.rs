//! Other local users and misbehaving clients against the compositor's
//! sockets: private sockets and folder, a slow event subscriber, a client
//! creating toplevels without end.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wayland_client::globals::{registry_queue_init, GlobalListContents};
use wayland_client::protocol::{wl_compositor, wl_registry, wl_surface};
use wayland_client::{Connection, Dispatch, QueueHandle};
use wayland_protocols::xdg::shell::client::{xdg_surface, xdg_toplevel, xdg_wm_base};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o777
}

#[test]
fn control_and_wayland_sockets_are_this_users_only() {
    let c = Compositor::start();
    assert_eq!(mode(&c.control), 0o600, "control socket");
    assert_eq!(mode(&c.path().join("rayos-host")), 0o600, "host Wayland socket");
    c.control().ok(json!({"op": "register_vm", "name": "guest", "colour": "#d03030"}));
    wait_until("the VM's sockets", || c.path().join("rayos-desktop-guest").exists());
    assert_eq!(mode(&c.path().join("rayos-vm-guest")), 0o600, "VM app socket");
    assert_eq!(mode(&c.path().join("rayos-desktop-guest")), 0o600, "VM desktop socket");
}

#[test]
fn a_socket_folder_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rayos-compositor"))
        .args(["--backend", "headless", "--socket-dir"])
        .arg(dir.path())
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started in a world-writable folder: {err}");
    assert!(err.contains("writable by everyone") && err.contains(&dir.path().display().to_string()), "{err}");
    assert!(!dir.path().join("rayos-host").exists() && !dir.path().join("control.sock").exists());
}

#[test]
fn a_slow_subscriber_is_dropped_without_stalling_the_compositor() {
    let c = Compositor::start();
    let mut ctl = c.control();
    ctl.ok(json!({"op": "register_vm", "name": "guest", "colour": "#d03030"}));
    // Subscribes and then never reads.
    let mut slow = UnixStream::connect(&c.control).unwrap();
    slow.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // Each request causes one event (~150 bytes) for the slow subscriber:
    // far more than its socket buffer and its backlog allowance.
    const N: usize = 20_000;
    let writer = ctl.writer.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(writer);
        for i in 0..N {
            let accept = i % 2 == 0;
            writeln!(w, "{}", json!({"op": "set_vm_policy", "name": "guest", "accept_windows": accept})).unwrap();
        }
        w.flush().unwrap();
    });
    let t = Instant::now();
    let mut replies = 0;
    let mut slowest = Duration::ZERO;
    let mut last = Instant::now();
    while replies < N {
        let v = ctl.read_line();
        if v["type"] == "ok" {
            replies += 1;
            slowest = slowest.max(last.elapsed());
            last = Instant::now();
        }
    }
    feeder.join().unwrap();
    let total = t.elapsed();
    println!(
        "{N} requests in {:.2} s, slowest gap between replies {:.1} ms",
        total.as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    assert!(slowest < Duration::from_secs(2), "a reply waited {slowest:?} behind the slow subscriber");

    // The slow subscriber was cut off: after what its socket held, EOF.
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let r = slow.read_to_end(&mut got);
    assert!(r.is_ok(), "the slow subscriber's connection was not closed: {r:?}");
    let lines = BufReader::new(&got[..]).lines().count();
    assert!(lines < N, "it got all {lines} events");
    // The compositor still answers everyone else.
    assert_eq!(c.control().ok(json!({"op": "list_windows"}))["type"], "ok");
}

struct Client;

impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for Client {
    fn event(
        _: &mut Self,
        _: &wl_registry::WlRegistry,
        _: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}
impl Dispatch<wl_compositor::WlCompositor, ()> for Client {
    fn event(
        _: &mut Self,
        _: &wl_compositor::WlCompositor,
        _: wl_compositor::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}
impl Dispatch<wl_surface::WlSurface, ()> for Client {
    fn event(
        _: &mut Self,
        _: &wl_surface::WlSurface,
        _: wl_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}
impl Dispatch<xdg_wm_base::XdgWmBase, ()> for Client {
    fn event(
        _: &mut Self,
        b: &xdg_wm_base::XdgWmBase,
        e: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = e {
            b.pong(serial);
        }
    }
}
impl Dispatch<xdg_surface::XdgSurface, ()> for Client {
    fn event(
        _: &mut Self,
        s: &xdg_surface::XdgSurface,
        e: xdg_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = e {
            s.ack_configure(serial);
        }
    }
}
impl Dispatch<xdg_toplevel::XdgToplevel, ()> for Client {
    fn event(
        _: &mut Self,
        _: &xdg_toplevel::XdgToplevel,
        _: xdg_toplevel::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

#[test]
fn a_client_creating_toplevels_without_end_is_disconnected_at_the_cap() {
    let c = Compositor::start();
    let conn = Connection::from_socket(UnixStream::connect(c.path().join("rayos-host")).unwrap()).unwrap();
    let (globals, mut queue) = registry_queue_init::<Client>(&conn).unwrap();
    let qh = queue.handle();
    let compositor: wl_compositor::WlCompositor = globals.bind(&qh, 1..=4, ()).unwrap();
    let wm: xdg_wm_base::XdgWmBase = globals.bind(&qh, 1..=1, ()).unwrap();
    let mut kept = Vec::new();
    let mut error = None;
    for i in 0..200 {
        let surface = compositor.create_surface(&qh, ());
        let xdg = wm.get_xdg_surface(&surface, &qh, ());
        let top = xdg.get_toplevel(&qh, ());
        surface.commit();
        kept.push((surface, xdg, top));
        if let Err(e) = queue.roundtrip(&mut Client) {
            error = Some((i, e, conn.protocol_error()));
            break;
        }
    }
    let (i, e, proto) = error.expect("200 toplevels were accepted from one client");
    println!("disconnected at toplevel {i}: {e}; {proto:?}");
    assert_eq!(i, 64, "the 65th toplevel ends the client");
    // libwayland's client side keeps the object, not the message (the
    // compositor's log names the cap).
    let p = proto.expect("a protocol error, not a plain hang-up");
    assert_eq!(p.object_interface, "xdg_toplevel", "{p:?}");
    // Another client is unaffected.
    let mut ctl = c.control();
    assert_eq!(ctl.ok(json!({"op": "list_windows"}))["type"], "ok");
    assert!(UnixStream::connect(c.path().join("rayos-host")).is_ok());
}
