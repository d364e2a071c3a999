//! Tier 1 scenarios `compositor` and `compositor-bench`: the RayOS host
//! compositor (`rayos-compositor --backend headless`) with real Wayland
//! clients, driven and photographed through its control socket.
//!
//! `compositor`: weston-simple-shm and foot as host clients, weston-simple-shm
//! through a registered VM's socket. Their windows must be listed with
//! app_id, title and origin; screenshots of the output and of each window go
//! to the run directory; pixels inside each window must come from the client
//! (not the background) and each decoration must carry its origin's colour
//! and a label; text typed into foot through the API must run (it creates a
//! file in the run directory); unregistering the VM must close its window.
//! Figures: `frame_ms_p50` (median repaint time from the compositor's
//! `stats`) and `idle_repaints` (repaints while nothing changes, must be 0).
//!
//! `compositor-bench`: a 1920x1080 output with 4 weston-simple-shm windows.
//! Measures the steady per-frame repaint while they draw, a full repaint and
//! a 256x256 damaged region of the same scene (the `bench_render` request),
//! checks that the scene with its clients stopped (SIGSTOP) repaints
//! nothing, and runs the same clients on weston's headless backend with the
//! pixman renderer, whose timeline (`core_repaint_begin` to
//! `core_repaint_posted`) gives its repaint times for comparison.
//!
//! Missing client programs fail the scenario naming the Debian package.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{CompositorArgs, CompositorBenchArgs};
use crate::procs::Procs;
use crate::Outcome;
use rayos_compositor_ipc::types::HOST_COLOUR;

const NAME: &str = "compositor";
const BENCH: &str = "compositor-bench";
const TIMEOUT: Duration = Duration::from_secs(20);
/// The host origin's decoration colour (the compositor's own).
pub(crate) const HOST_RGB: [u8; 3] = [HOST_COLOUR.r, HOST_COLOUR.g, HOST_COLOUR.b];
const VM_NAME: &str = "demo";
pub(crate) const VM_RGB: [u8; 3] = [0xd0, 0x30, 0x30];
/// Decoration sizes of the compositor (title bar above, borders around).
pub(crate) const TITLE_H: i64 = rayos_compositor_ipc::geometry::TITLE_HEIGHT as i64;
pub(crate) const BORDER: i64 = rayos_compositor_ipc::geometry::BORDER as i64;

pub fn run(args: &CompositorArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: NAME, figures },
        Err(e) => Outcome::Fail { scenario: NAME, reason: e.to_string() },
    }
}

pub fn bench(args: &CompositorBenchArgs) -> Outcome {
    match bench_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: BENCH, figures },
        Err(e) => Outcome::Fail { scenario: BENCH, reason: e.to_string() },
    }
}

// ---- helpers ---------------------------------------------------------------

pub use super::error::ScenarioError;

/// A client program, or an error naming the Debian package to install.
pub(crate) fn need(bin: &str, package: &str) -> Result<PathBuf, ScenarioError> {
    crate::which(bin).ok_or_else(|| ScenarioError::MissingProgram { bin: bin.into(), package: package.into() })
}

pub(crate) fn compositor_bin(arg: &Option<PathBuf>) -> Result<PathBuf, ScenarioError> {
    let bin = arg.clone().unwrap_or_else(|| crate::rundir::release_binary("rayos-compositor"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{}: not found (cargo build --release -p rayos-compositor)", bin.display()).into())
    }
}

/// A private runtime directory (sockets), removed on drop.
pub(crate) struct RuntimeDir(pub(crate) PathBuf);

impl RuntimeDir {
    pub(crate) fn new(tag: &str) -> Result<Self, ScenarioError> {
        let p = std::env::temp_dir().join(format!("rayos-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(RuntimeDir(p))
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn log_file(run_dir: &Path, name: &str) -> Result<std::fs::File, ScenarioError> {
    let p = run_dir.join(name);
    Ok(std::fs::File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?)
}

/// Starts a Wayland client on `display` in runtime dir `rt`, logging to the run directory.
pub(crate) fn client(
    rt: &Path,
    run_dir: &Path,
    log: &str,
    bin: &Path,
    args: &[&str],
    display: &str,
) -> Result<Child, ScenarioError> {
    Command::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", run_dir)
        .env("XDG_CONFIG_HOME", run_dir.join("config"))
        .env("XDG_RUNTIME_DIR", rt)
        .env("WAYLAND_DISPLAY", display)
        .env("LANG", "C.UTF-8")
        .current_dir(run_dir)
        .stdin(Stdio::null())
        .stdout(log_file(run_dir, log)?)
        .stderr(log_file(run_dir, log)?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()).into())
}

fn wait_for<T>(what: &str, f: impl FnMut() -> Result<Option<T>, ScenarioError>) -> Result<T, ScenarioError> {
    wait_for_within(what, TIMEOUT, f)
}

/// Polls `f` every 50 ms until it yields a value or `timeout` passes.
pub(crate) fn wait_for_within<T>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Result<Option<T>, ScenarioError>,
) -> Result<T, ScenarioError> {
    rayos_test_kit::wait::poll(what, timeout, Duration::from_millis(50), f)
}

/// Starts the compositor (headless, `size`) in `rt`; waits for its sockets.
pub(crate) fn start_compositor(
    bin: &Path,
    rt: &Path,
    run_dir: &Path,
    size: &str,
    procs: &mut Procs,
) -> Result<PathBuf, ScenarioError> {
    start_compositor_on(bin, "headless", rt, run_dir, size, procs)
}

/// [`start_compositor`] on `backend` (`headless`, or `winit` in the
/// caller's Wayland or X11 session, whose environment it inherits).
pub(crate) fn start_compositor_on(
    bin: &Path,
    backend: &str,
    rt: &Path,
    run_dir: &Path,
    size: &str,
    procs: &mut Procs,
) -> Result<PathBuf, ScenarioError> {
    let control = rt.join("control.sock");
    let child = Command::new(bin)
        .args(["--backend", backend, "--size", size, "--socket-dir"])
        .arg(rt)
        .arg("--control")
        .arg(&control)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file(run_dir, "compositor.log")?)
        .stderr(log_file(run_dir, "compositor.log")?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    procs.0.push(("compositor".into(), child));
    wait_for("the compositor's sockets", || {
        if let Some(Ok(Some(st))) = procs.get("compositor").map(|c| c.try_wait()) {
            return Err(
                format!("rayos-compositor exited ({st}); see {}", run_dir.join("compositor.log").display()).into()
            );
        }
        Ok((control.exists() && rt.join("rayos-host").exists()).then_some(()))
    })?;
    Ok(control)
}

pub(crate) struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    pub(crate) fn connect(path: &Path) -> Result<Self, ScenarioError> {
        let s = UnixStream::connect(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        let reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok(Control { reader, writer: s })
    }

    /// Sends a request; returns the `ok` response or an error with the compositor's answer.
    pub(crate) fn ok(&mut self, req: Value) -> Result<Value, ScenarioError> {
        let mut line = req.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| format!("control write: {e}"))?;
        loop {
            let mut resp = String::new();
            self.reader.read_line(&mut resp).map_err(|e| format!("control read: {e}"))?;
            if resp.is_empty() {
                return Err("the compositor closed the control connection".into());
            }
            let v: Value = serde_json::from_str(&resp).map_err(|e| format!("bad control line {resp:?}: {e}"))?;
            match v["type"].as_str() {
                Some("event") => continue,
                Some("ok") => return Ok(v),
                _ => return Err(format!("{req} -> {v}").into()),
            }
        }
    }

    pub(crate) fn windows(&mut self) -> Result<Vec<Value>, ScenarioError> {
        Ok(self.ok(json!({"op": "list_windows"}))?["windows"].as_array().cloned().unwrap_or_default())
    }

    pub(crate) fn wait_window(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value, ScenarioError> {
        wait_for(&format!("window {what}"), || Ok(self.windows()?.into_iter().find(|w| pred(w))))
    }

    pub(crate) fn stats(&mut self) -> Result<Stats, ScenarioError> {
        let v = self.ok(json!({"op": "stats"}))?;
        let n = |k: &str| v[k].as_u64().ok_or_else(|| format!("stats without {k}: {v}"));
        Ok(Stats {
            frames: n("frames")?,
            repaints: n("repaints")?,
            samples_us: v["samples_us"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
        })
    }

    pub(crate) fn screenshot(&mut self, req: Value, path: &Path) -> Result<Image, ScenarioError> {
        let mut req = req;
        req["op"] = json!("screenshot");
        req["path"] = json!(path.to_str().ok_or("run directory path is not UTF-8")?);
        self.ok(req)?;
        Ok(Image::load(path)?)
    }
}

pub(crate) struct Stats {
    frames: u64,
    repaints: u64,
    samples_us: Vec<u64>,
}

fn median_us(v: &[u64]) -> Option<f64> {
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    crate::stats::summarise(&f).map(|s| s.median)
}

pub(crate) use rayos_test_kit::image::{is_background, Image};

pub(crate) fn geo(w: &Value) -> (i64, i64, i64, i64) {
    let g = &w["geometry"];
    let n = |k: &str| g[k].as_i64().unwrap_or(0);
    (n("x"), n("y"), n("w"), n("h"))
}

pub(crate) fn id_of(w: &Value) -> Result<u64, ScenarioError> {
    Ok(w["id"].as_u64().ok_or_else(|| format!("window without id: {w}"))?)
}

pub(crate) fn describe(w: &Value) -> String {
    let (x, y, cw, ch) = geo(w);
    let origin = match w["origin"]["kind"].as_str() {
        Some("vm") => format!(
            "vm:{} {}",
            w["origin"]["name"].as_str().unwrap_or("?"),
            w["origin"]["colour"].as_str().unwrap_or("?")
        ),
        Some(k) => k.to_string(),
        None => "?".into(),
    };
    format!(
        "window {} app_id={:?} title={:?} origin={origin} mode={} {cw}x{ch}+{x}+{y}",
        w["id"],
        w["app_id"].as_str().unwrap_or(""),
        w["title"].as_str().unwrap_or(""),
        w["mode"].as_str().unwrap_or("?")
    )
}

/// Checks a window shot: decoration in `colour` with a white label, client
/// area (inside the decoration) mostly not background.
pub(crate) fn check_window_shot(img: &Image, w: &Value, colour: [u8; 3], what: &str) -> Result<(), ScenarioError> {
    let (_, _, cw, ch) = geo(w);
    let (iw, ih) = (i64::from(img.w), i64::from(img.h));
    if (iw, ih) != (cw + 2 * BORDER, ch + TITLE_H + BORDER) {
        return Err(format!(
            "{what}: window shot is {iw}x{ih}, expected the client area {cw}x{ch} with its decoration"
        )
        .into());
    }
    for (x, y, part) in [(iw - 2, 2, "title bar"), (1, TITLE_H + 5, "left border"), (iw - 2, ih - 2, "bottom border")] {
        if img.at(x, y) != colour {
            return Err(
                format!("{what}: {part} at ({x},{y}) is {:?}, not the origin colour {colour:?}", img.at(x, y)).into()
            );
        }
    }
    // The label chip: white, or near-black (#161616) for a light origin colour.
    let (white, _) = img.count_at(BORDER, 4, 100.min(cw), 20, |p| p == [255, 255, 255] || p == [0x16, 0x16, 0x16]);
    if white < 30 {
        return Err(format!("{what}: no origin label in the title bar ({white} label-chip pixels)").into());
    }
    let (bg, total) = img.count_at(BORDER, TITLE_H, cw, ch, is_background);
    if bg * 10 > total {
        return Err(format!("{what}: the client area is mostly background ({bg}/{total} pixels)").into());
    }
    println!(
        "  {what}: decoration {colour:?} with label ({white} label pixels), client pixels {}/{total} not background",
        total - bg
    );
    Ok(())
}

// ---- scenario `compositor` --------------------------------------------------

fn run_inner(args: &CompositorArgs) -> Result<String, ScenarioError> {
    let run_dir = crate::rundir::create(&crate::rundir::target_dir().join("smoke"), NAME, args.run_dir.as_deref())
        .map_err(|e| format!("{e}: {}", e.source))?;
    println!("run directory: {}", run_dir.display());
    let bin = compositor_bin(&args.compositor)?;
    let shm = need("weston-simple-shm", "weston")?;
    let foot = need("foot", "foot")?;
    let rt = RuntimeDir::new("compositor")?;
    let mut procs = Procs(Vec::new());
    let control = start_compositor(&bin, &rt.0, &run_dir, &args.size, &mut procs)?;
    let mut ctl = Control::connect(&control)?;

    // Clients: two host, one through a VM's socket.
    procs.0.push(("simple-shm".into(), client(&rt.0, &run_dir, "simple-shm.log", &shm, &[], "rayos-host")?));
    let host_shm = ctl.wait_window("weston-simple-shm (host)", |w| {
        w["app_id"].as_str().is_some_and(|a| a.contains("simple-shm")) && w["origin"]["kind"] == "host"
    })?;
    procs.0.push(("foot".into(), client(&rt.0, &run_dir, "foot.log", &foot, &["--", "/bin/sh"], "rayos-host")?));
    let foot_w = ctl.wait_window("foot", |w| w["app_id"] == "foot")?;
    let colour = format!("#{:02x}{:02x}{:02x}", VM_RGB[0], VM_RGB[1], VM_RGB[2]);
    let r = ctl.ok(json!({"op": "register_vm", "name": VM_NAME, "colour": colour}))?;
    let vm_socket = r["socket"].as_str().ok_or_else(|| format!("register_vm: no socket in {r}"))?.to_string();
    procs.0.push(("vm-simple-shm".into(), client(&rt.0, &run_dir, "vm-simple-shm.log", &shm, &[], &vm_socket)?));
    let vm_w = ctl.wait_window("weston-simple-shm (VM)", |w| w["origin"]["kind"] == "vm")?;

    for w in [&host_shm, &foot_w, &vm_w] {
        println!("{}", describe(w));
    }
    if host_shm["title"] != "simple-shm" || host_shm["mode"] != "native" {
        return Err(format!("host simple-shm window: unexpected title or mode: {host_shm}").into());
    }
    if vm_w["origin"] != json!({"kind": "vm", "name": VM_NAME, "colour": colour}) {
        return Err(format!("VM window: origin is {}, expected VM {VM_NAME} {colour}", vm_w["origin"]).into());
    }
    if foot_w["title"].as_str().is_none_or(str::is_empty) {
        return Err(format!("foot window has no title: {foot_w}").into());
    }

    // The VM's window opened below the focused host window: raise it, let
    // foot print its prompt and the clients draw, then photograph.
    ctl.ok(json!({"op": "focus", "id": id_of(&vm_w)?}))?;
    std::thread::sleep(Duration::from_millis(700));
    let out = ctl.screenshot(json!({}), &run_dir.join("output.png"))?;
    let bg = out.count(out.whole(), is_background);
    let total = out.whole().area();
    println!("screenshot output.png: {}x{}, {} of {total} pixels not background", out.w, out.h, total - bg);
    let (vx, vy, vw, vh) = geo(&vm_w);
    if out.at(vx + vw - 2, vy - 2) != VM_RGB || out.at(vx - 2, vy + vh / 2) != VM_RGB {
        return Err(format!("output.png: the raised VM window's decoration is not in the VM colour {VM_RGB:?}").into());
    }
    let (bg, total) = out.count_at(vx, vy, vw, vh, is_background);
    if bg * 10 > total {
        return Err(format!("output.png: the VM window's client area is mostly background ({bg}/{total})").into());
    }
    println!("  the VM window (raised) is framed in {VM_RGB:?} and shows the client's pixels");
    let (_, _, tw, th) = geo(&foot_w);
    let shots = [(&host_shm, HOST_RGB, "simple-shm"), (&foot_w, HOST_RGB, "foot"), (&vm_w, VM_RGB, "vm-simple-shm")];
    for (w, colour, tag) in shots {
        let id = id_of(w)?;
        let path = run_dir.join(format!("window-{id}-{tag}.png"));
        let img = ctl.screenshot(json!({"window": id}), &path)?;
        println!("screenshot {}:", path.file_name().unwrap_or_default().to_string_lossy());
        check_window_shot(&img, w, colour, tag)?;
    }

    // Typed into foot through the API: a command that creates a file.
    let made = run_dir.join("made-by-foot");
    let foot_id = id_of(&foot_w)?;
    ctl.ok(json!({"op": "key", "id": foot_id, "text": format!("touch '{}'\n", made.display())}))?;
    wait_for("the file created by the command typed into foot", || Ok(made.exists().then_some(())))?;
    println!("typed into foot: {} created", made.display());
    std::thread::sleep(Duration::from_millis(300));
    let path = run_dir.join(format!("window-{foot_id}-foot-typed.png"));
    let img = ctl.screenshot(json!({"window": foot_id}), &path)?;
    let (text, _) = img.count_at(BORDER, TITLE_H, tw, 40.min(th), |p| p.iter().all(|&c| c > 150));
    if text < 200 {
        return Err(format!("{}: foot does not show the typed command ({text} light pixels)", path.display()).into());
    }
    println!(
        "screenshot {}: {text} text pixels in foot's first lines",
        path.file_name().unwrap_or_default().to_string_lossy()
    );

    // Unregistering the VM closes its window at once.
    let vm_id = id_of(&vm_w)?;
    let r = ctl.ok(json!({"op": "unregister_vm", "name": VM_NAME}))?;
    if r["closed"] != json!([vm_id]) {
        return Err(format!("unregister_vm closed {}, expected [{vm_id}]", r["closed"]).into());
    }
    if ctl.windows()?.iter().any(|w| w["id"].as_u64() == Some(vm_id) || w["origin"]["kind"] == "vm") {
        return Err("the VM's window is still listed after unregister_vm".into());
    }
    if rt.0.join(&vm_socket).exists() {
        return Err(format!("the VM socket {vm_socket} still exists after unregister_vm").into());
    }
    if !procs.exited_within("vm-simple-shm", Duration::from_secs(10)) {
        return Err("the VM's client did not exit after unregister_vm".into());
    }
    println!("unregister_vm {VM_NAME}: window {vm_id} closed, socket removed, client gone");

    // Frame times while simple-shm draws.
    let busy = ctl.stats()?;
    let p50_ms = median_us(&busy.samples_us).ok_or("no repaint was timed")? / 1000.0;
    println!(
        "repaints so far: {} of {} frames; repaint p50 {p50_ms:.3} ms over {} samples",
        busy.repaints,
        busy.frames,
        busy.samples_us.len()
    );

    // Idle: stop the drawing client; nothing changes, nothing may repaint.
    procs.kill("simple-shm");
    wait_for("the stopped client's window to go", || {
        Ok((!ctl.windows()?.iter().any(|w| w["id"] == host_shm["id"])).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let a = ctl.stats()?;
    std::thread::sleep(args.idle);
    let b = ctl.stats()?;
    let idle_repaints = b.repaints - a.repaints;
    let idle_frames = b.frames - a.frames;
    println!("idle {:.1} s: {idle_frames} frames, {idle_repaints} repaints", args.idle.as_secs_f64());
    let expected = (args.idle.as_secs_f64() * 60.0) as u64;
    if idle_frames < expected / 4 {
        return Err(format!(
            "the frame loop stalled while idle: {idle_frames} frames in {:.1} s",
            args.idle.as_secs_f64()
        )
        .into());
    }
    if idle_repaints != 0 {
        return Err(format!("an idle scene repainted {idle_repaints} times in {:.1} s", args.idle.as_secs_f64()).into());
    }
    if let Some(Ok(Some(st))) = procs.get("compositor").map(|c| c.try_wait()) {
        return Err(format!("rayos-compositor exited ({st})").into());
    }
    Ok(format!("frame_ms_p50={p50_ms:.3} idle_repaints={idle_repaints}"))
}

// ---- scenario `compositor-bench` -------------------------------------------

const BENCH_SIZE: &str = "1920x1080";
const CLIENTS: usize = 4;

fn signal(pid: u32, sig: &str) -> Result<(), ScenarioError> {
    let st = Command::new("kill").args([sig, &pid.to_string()]).status().map_err(|e| format!("kill: {e}"))?;
    Ok(st.success().then_some(()).ok_or_else(|| format!("kill {sig} {pid} failed"))?)
}

fn bench_inner(args: &CompositorBenchArgs) -> Result<String, ScenarioError> {
    let run_dir = crate::rundir::create(&crate::rundir::target_dir().join("smoke"), BENCH, args.run_dir.as_deref())
        .map_err(|e| format!("{e}: {}", e.source))?;
    println!("run directory: {}", run_dir.display());
    let bin = compositor_bin(&args.compositor)?;
    let shm = need("weston-simple-shm", "weston")?;
    let frames = args.frames;

    // RayOS: 4 drawing clients on a 1920x1080 output.
    let (steady_us, full, damaged, idle_repaints) = {
        let rt = RuntimeDir::new("compositor-bench")?;
        let mut procs = Procs(Vec::new());
        let control = start_compositor(&bin, &rt.0, &run_dir, BENCH_SIZE, &mut procs)?;
        let mut ctl = Control::connect(&control)?;
        for i in 0..CLIENTS {
            let name = format!("simple-shm-{i}");
            procs.0.push((name.clone(), client(&rt.0, &run_dir, &format!("{name}.log"), &shm, &[], "rayos-host")?));
        }
        let ws = wait_for("4 windows", || {
            let ws = ctl.windows()?;
            Ok((ws.len() == CLIENTS).then_some(ws))
        })?;
        for w in &ws {
            println!("{}", describe(w));
        }
        std::thread::sleep(Duration::from_secs(1));
        let a = ctl.stats()?;
        std::thread::sleep(args.measure);
        let b = ctl.stats()?;
        let n = (b.repaints - a.repaints).min(b.samples_us.len() as u64) as usize;
        let steady = median_us(&b.samples_us[b.samples_us.len() - n..]).ok_or("no repaint while the clients drew")?;
        println!(
            "rayos steady: {} repaints in {:.1} s with {CLIENTS} clients drawing, repaint p50 {:.3} ms",
            b.repaints - a.repaints,
            args.measure.as_secs_f64(),
            steady / 1000.0
        );

        // Idle with the windows on screen: stop the clients.
        for i in 0..CLIENTS {
            let pid = procs.pid(&format!("simple-shm-{i}")).ok_or("client gone")?;
            signal(pid, "-STOP")?;
        }
        std::thread::sleep(Duration::from_millis(300));
        let a = ctl.stats()?;
        std::thread::sleep(Duration::from_secs(2));
        let b = ctl.stats()?;
        let idle = b.repaints - a.repaints;
        println!(
            "rayos idle 2.0 s with {CLIENTS} windows (clients stopped): {} frames, {idle} repaints",
            b.frames - a.frames
        );

        // Full repaint vs a 256x256 damaged region, same scene.
        let full = ctl.ok(json!({"op": "bench_render", "frames": frames}))?;
        let (x, y, _, _) = geo(&ws[0]);
        let damage = json!({"x": x, "y": y, "w": 256, "h": 256});
        let dmg = ctl.ok(json!({"op": "bench_render", "frames": frames, "damage": damage}))?;
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        println!(
            "rayos full repaint 1920x1080: p50 {:.3} ms (min {:.3}, max {:.3}) over {frames} frames, {} px",
            n(&full, "us_p50") as f64 / 1000.0,
            n(&full, "us_min") as f64 / 1000.0,
            n(&full, "us_max") as f64 / 1000.0,
            n(&full, "damaged_px")
        );
        println!(
            "rayos damaged 256x256 at ({x},{y}): p50 {:.3} ms (min {:.3}, max {:.3}) over {frames} frames, {} px",
            n(&dmg, "us_p50") as f64 / 1000.0,
            n(&dmg, "us_min") as f64 / 1000.0,
            n(&dmg, "us_max") as f64 / 1000.0,
            n(&dmg, "damaged_px")
        );
        let _ = ctl.screenshot(json!({}), &run_dir.join("output.png"))?;
        for i in 0..CLIENTS {
            if let Some(pid) = procs.pid(&format!("simple-shm-{i}")) {
                let _ = signal(pid, "-CONT");
            }
        }
        if n(&dmg, "damaged_px") != 256 * 256 {
            return Err(format!("the damaged frames repainted {} px, not 256x256", n(&dmg, "damaged_px")).into());
        }
        (steady, n(&full, "us_p50") as f64, n(&dmg, "us_p50").max(1) as f64, idle)
    };
    if idle_repaints != 0 {
        return Err(format!("an idle scene repainted {idle_repaints} times").into());
    }
    let ratio = full / damaged;
    println!("full / damaged-256x256 repaint: {ratio:.1}x");
    if ratio < 4.0 {
        return Err(format!(
            "damage tracking does not pay: full {full:.0} us vs 256x256 {damaged:.0} us ({ratio:.1}x)"
        )
        .into());
    }

    // weston, same clients, headless with pixman.
    let mut figures = format!(
        "full_ms={:.3} damaged_256_ms={:.3} full_over_damaged={ratio:.1} steady_ms={:.3} idle_repaints={idle_repaints}",
        full / 1000.0,
        damaged / 1000.0,
        steady_us / 1000.0
    );
    if args.no_weston {
        println!("weston comparison: skipped (--no-weston)");
    } else {
        let weston = need("weston", "weston")?;
        let w = weston_timeline(&weston, &shm, &run_dir, args.measure)?;
        println!(
            "weston (headless, pixman, 1920x1080, {CLIENTS} simple-shm + desktop-shell): {} repaints in {:.1} s, repaint p50 {:.3} ms",
            w.steady.len(),
            args.measure.as_secs_f64(),
            w.steady_p50 / 1000.0
        );
        let steady_ratio = steady_us / w.steady_p50;
        println!(
            "steady repaint rayos / weston: {steady_ratio:.2} (like for like: the same clients and damage; weston's \
             time is core_repaint_begin to core_repaint_posted, RayOS's is scene build, damage tracking and painting)"
        );
        figures.push_str(&format!(
            " weston_steady_ms={:.3} rayos_over_weston_steady={steady_ratio:.2}",
            w.steady_p50 / 1000.0
        ));
        match w.first_full {
            Some(us) => {
                let r = full / us;
                println!(
                    "weston full repaint: {:.3} ms, its first frame with the whole output damaged; rayos / weston: {r:.2} \
                     (indicative only: weston has no request to repaint an unchanged scene in full, so this is its first \
                     frame, which also composites desktop-shell's 1920x1080 background and panel buffers for the first \
                     time, while RayOS's full repaint clears to a solid colour under the 4 windows of a warm scene)",
                    us / 1000.0
                );
                figures.push_str(&format!(" weston_full_ms={:.3} rayos_over_weston_full={r:.2}", us / 1000.0));
            }
            None => println!(
                "weston full repaint: not measured (weston has no request to force a full repaint of an unchanged scene, \
                 and its timeline showed no frame with the whole output damaged)"
            ),
        }
    }
    Ok(figures)
}

struct WestonFigures {
    steady: Vec<f64>,
    steady_p50: f64,
    first_full: Option<f64>,
}

/// Runs weston headless (pixman, 1920x1080) with its timeline logged from
/// the start, 4 simple-shm clients for `measure`, and reads repaint times
/// (`core_repaint_begin` to `core_repaint_posted`).
fn weston_timeline(
    weston: &Path,
    shm: &Path,
    run_dir: &Path,
    measure: Duration,
) -> Result<WestonFigures, ScenarioError> {
    let rt = RuntimeDir::new("weston-bench")?;
    let log = run_dir.join("weston-timeline.log");
    let mut procs = Procs(Vec::new());
    let child = Command::new(weston)
        .args(["--backend=headless-backend.so", "--use-pixman", "--width=1920", "--height=1080", "--idle-time=0"])
        .arg("--socket=weston-bench")
        .arg("--logger-scopes=log,timeline")
        .arg(format!("--log={}", log.display()))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", run_dir)
        .env("XDG_RUNTIME_DIR", &rt.0)
        .stdin(Stdio::null())
        .stdout(log_file(run_dir, "weston.out")?)
        .stderr(log_file(run_dir, "weston.out")?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", weston.display()))?;
    procs.0.push(("weston".into(), child));
    wait_for("weston's socket", || {
        if let Some(Ok(Some(st))) = procs.get("weston").map(|c| c.try_wait()) {
            return Err(format!("weston exited ({st}); see {}", run_dir.join("weston.out").display()).into());
        }
        Ok(rt.0.join("weston-bench").exists().then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let t_clients = std::fs::read_to_string(&log).map(|s| s.lines().count()).unwrap_or(0);
    for i in 0..CLIENTS {
        procs.0.push((
            format!("w-shm-{i}"),
            client(&rt.0, run_dir, &format!("weston-shm-{i}.log"), shm, &[], "weston-bench")?,
        ));
    }
    std::thread::sleep(Duration::from_secs(1) + measure);
    drop(procs);
    let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    // Repaints as (begin line index, duration us, surfaces flushed).
    let mut repaints: Vec<(usize, f64, Vec<String>)> = Vec::new();
    let mut open: Option<(usize, f64, Vec<String>)> = None;
    let mut surfaces: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some(start) = line.find('{') else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&line[start..]) else { continue };
        if let (Some(id), Some(desc)) = (v["id"].as_u64(), v["desc"].as_str()) {
            surfaces.insert(id.to_string(), desc.to_string());
        }
        let t = match v["T"].as_array() {
            Some(a) if a.len() == 2 => a[0].as_f64().unwrap_or(0.0) * 1e6 + a[1].as_f64().unwrap_or(0.0) / 1e3,
            _ => continue,
        };
        match v["N"].as_str() {
            Some("core_repaint_begin") => open = Some((i, t, Vec::new())),
            Some("core_flush_damage") => {
                if let Some(o) = open.as_mut() {
                    o.2.push(v["ws"].to_string());
                }
            }
            Some("core_repaint_posted") => {
                if let Some((i, t0, s)) = open.take() {
                    repaints.push((i, t - t0, s));
                }
            }
            _ => {}
        }
    }
    if repaints.is_empty() {
        return Err(format!("weston's timeline ({}) holds no repaint", log.display()).into());
    }
    // The first repaint that flushes the desktop background damages the whole output.
    let first_full = repaints
        .iter()
        .find(|(_, _, s)| s.iter().any(|id| surfaces.get(id).is_some_and(|d| d.contains("background"))))
        .map(|(_, us, _)| *us);
    // Steady: repaints after the clients started, skipping the first second.
    let steady: Vec<f64> =
        repaints.iter().filter(|(i, _, s)| *i > t_clients && !s.is_empty()).map(|(_, us, _)| *us).skip(60).collect();
    let steady_p50 = crate::stats::summarise(&steady)
        .map(|s| s.median)
        .ok_or_else(|| format!("weston's timeline ({}) holds no repaint with the clients drawing", log.display()))?;
    Ok(WestonFigures { steady, steady_p50, first_full })
}
