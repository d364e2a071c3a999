//! `rayos-smoke session`: the RayOS desktop session on this machine, for a
//! person (the README's main job) or a script.
//!
//! The compositor runs in a window of the desktop session you are in
//! (winit, when `WAYLAND_DISPLAY` or `DISPLAY` is set) or headless, with the
//! VM `linux` registered; the Linux guest image boots in QEMU with its root
//! on virtio-fs, a shared folder and the agent on RayOS's vsock backend (as
//! the tier 2 scenarios do); the VM's native-window bridge runs; then a
//! `rayos>` prompt reads requests in words ("open a terminal"), app names,
//! or commands (`apps`, `windows`, `type TEXT`, `screenshot FILE`,
//! `poweroff`, `help`) from standard input. Each launched app shows as its
//! own window labelled `linux`. End of input powers the guest off.
//!
//! The guest runs under QEMU here, not rayos-vmm: on this project's machines
//! only a nested test host can run Linux under rayos-vmm (see the README's
//! test tiers).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rayos_contract::CAP_WAYLAND_BRIDGE;
use serde_json::json;

use super::compositor::{compositor_bin, describe, start_compositor_on, Control, RuntimeDir, ScenarioError};
use super::guest_qemu;
use crate::cli::SessionArgs;
use crate::procs::Procs;
use crate::Outcome;

const NAME: &str = "session";
const VM: &str = "linux";
const HELP: &str = "\
  <words>            launch a guest app by a request in words, e.g. open a terminal
  <app>              launch a guest app by its name or desktop id, e.g. foot
  apps               the guest's apps
  windows            the windows on the RayOS display
  type TEXT          type TEXT and Return into the focused window
  screenshot FILE    save the RayOS display as a PNG
  poweroff           stop the guest and leave (so does end of input)";

pub fn run(args: &SessionArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: NAME, figures },
        Err(e) => Outcome::Fail { scenario: NAME, reason: e.to_string() },
    }
}

fn run_inner(args: &SessionArgs) -> Result<String, ScenarioError> {
    let t0 = Instant::now();
    let rayos = args.rayos.clone().unwrap_or_else(|| crate::rundir::release_binary("rayos"));
    if !rayos.is_file() {
        return Err(format!("--rayos {}: not found (cargo build --release --workspace)", rayos.display()).into());
    }
    let comp = compositor_bin(&args.compositor)?;
    let (run_dir, image, manifest) = guest_qemu::prepare(&args.guest, NAME)?;
    let backend = match (&args.headless, std::env::var_os("WAYLAND_DISPLAY").or(std::env::var_os("DISPLAY"))) {
        (false, Some(_)) => "winit",
        _ => "headless",
    };
    let rt = RuntimeDir::new("session")?;
    let mut procs = Procs::default();
    let control = start_compositor_on(&comp, backend, &rt.0, &run_dir, &args.size, &mut procs)?;
    let mut ctl = Control::connect(&control)?;
    ctl.ok(json!({"op": "register_vm", "name": VM, "colour": "#d03030"}))?;
    match backend {
        "winit" => println!("RayOS display: a window on your desktop ({})", args.size),
        _ => println!(
            "RayOS display: headless {} (no WAYLAND_DISPLAY or DISPLAY); use `screenshot FILE` to see it",
            args.size
        ),
    }

    let (opts, shared) = guest_qemu::BootOptions::with_home_share(&run_dir)?;
    let mut vm = guest_qemu::boot(&args.guest, &run_dir, &image, &manifest, &opts)?;
    vm.start_bridge(&rayos, &rt.0, VM, None)?;
    let (client, _) = vm.connect_agent(args.guest.boot_timeout, &[CAP_WAYLAND_BRIDGE])?;
    println!(
        "Linux guest {} ready after {:.1} s ({}); its shared folder is {} (/home/rayos/Shared in the guest)",
        client.info.kernel,
        vm.boot.elapsed().as_secs_f64(),
        client.info.agent,
        shared.display()
    );
    drop(client);
    println!("type a request in words (\"open a terminal\"), an app name, or `help`");

    let mut input: Box<dyn BufRead> = match &args.script {
        Some(f) => Box::new(std::io::BufReader::new(
            std::fs::File::open(f).map_err(|e| format!("--script {}: {e}", f.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut launched = 0u32;
    let mut windows_seen = 0usize;
    loop {
        print!("rayos> ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        if input.read_line(&mut line).map_err(|e| format!("reading the prompt's input: {e}"))? == 0 {
            println!();
            break;
        }
        let line = line.trim();
        if args.script.is_some() {
            println!("{line}");
        }
        let (cmd, rest) = line.split_once(' ').map(|(c, r)| (c, r.trim())).unwrap_or((line, ""));
        match cmd {
            "" => {}
            "help" => println!("{HELP}"),
            "poweroff" | "quit" | "exit" => break,
            "apps" => {
                let out = rayos_cmd(&rayos, &["guest", "--vsock", path_str(&vm.uds)?, "apps"])?;
                print!("{out}");
            }
            "windows" => {
                for w in ctl.windows()? {
                    println!("  {}", describe(&w));
                }
            }
            "type" => {
                ctl.ok(json!({"op": "key", "text": format!("{rest}\n")}))
                    .map(|_| ())
                    .unwrap_or_else(|e| println!("cannot type: {e}"));
            }
            "screenshot" if !rest.is_empty() => {
                let file = std::path::absolute(rest).map_err(|e| format!("{rest}: {e}"))?;
                match ctl.screenshot(json!({}), &file) {
                    Ok(img) => println!("saved {} ({}x{})", file.display(), img.w, img.h),
                    Err(e) => println!("cannot save {}: {e}", file.display()),
                }
            }
            _ => {
                let before: Vec<u64> = ctl.windows()?.iter().filter_map(|w| w["id"].as_u64()).collect();
                let t = Instant::now();
                match rayos_cmd(&rayos, &["launch", "--vsock", path_str(&vm.uds)?, line]) {
                    Ok(out) => {
                        print!("{out}");
                        launched += 1;
                        if let Some(w) = wait_new_window(&mut ctl, &before, Duration::from_secs(90))? {
                            windows_seen += 1;
                            println!(
                                "  window on the RayOS display after {:.1} s: {}",
                                t.elapsed().as_secs_f64(),
                                describe(&w)
                            );
                            if backend == "headless" {
                                let shot = run_dir.join(format!("window-{windows_seen}.png"));
                                if ctl.screenshot(json!({}), &shot).is_ok() {
                                    println!("  screenshot: {}", shot.display());
                                }
                            }
                        } else {
                            println!("  no new window within 90 s (a program without a window, or it failed to start)");
                        }
                    }
                    Err(e) => println!("{e}"),
                }
            }
        }
    }
    let (mut client, _) = vm.connect_agent(Duration::from_secs(30), &[])?;
    client.power(false).map_err(|e| format!("shutdown: {e}"))?;
    let status = vm.wait_qemu_exit(Duration::from_secs(60))?;
    println!("guest powered off (QEMU {status}); the session's logs are in {}", run_dir.display());
    drop(procs);
    if windows_seen < args.expect_windows {
        return Err(format!(
            "{windows_seen} of the launched apps showed a window, expected at least {}",
            args.expect_windows
        )
        .into());
    }
    Ok(format!("launched={launched} windows={windows_seen} session_s={:.1}", t0.elapsed().as_secs_f64()))
}

fn path_str(p: &Path) -> Result<&str, ScenarioError> {
    p.to_str().ok_or_else(|| ScenarioError::Failed(format!("{} is not UTF-8", p.display())))
}

/// `rayos ARGS`: its output, or its error text.
fn rayos_cmd(rayos: &Path, args: &[&str]) -> Result<String, ScenarioError> {
    let out = Command::new(rayos)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rayos.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{}{}", text, String::from_utf8_lossy(&out.stderr).trim()).into())
    }
}

/// The first VM window not among `before`, once it shows pixels.
fn wait_new_window(
    ctl: &mut Control,
    before: &[u64],
    timeout: Duration,
) -> Result<Option<serde_json::Value>, ScenarioError> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let ws = ctl.windows()?;
        let new = ws.iter().find(|w| {
            w["origin"]["name"] == VM
                && w["first_content_ms"].is_number()
                && !w["id"].as_u64().is_some_and(|id| before.contains(&id))
        });
        if let Some(w) = new {
            return Ok(Some(w.clone()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(None)
}
