//! `vmm-desktop` (tier 3, nested): the embedded desktop end to end. Inside
//! the test host, rayos-compositor runs headless with VM `linux` registered;
//! rayos-vmm boots the guest image with `--gpu wayland=<its desktop socket>`
//! (virtio-gpu, keyboard and tablet; rayos-presenter shows the scanout as
//! the VM's one `embedded_desktop` window). Then, all through real parts:
//!
//! * an embedded launch makes the guest agent start the desktop session
//!   (udevd, seatd, weston on DRM with pixman); the window's screenshot
//!   shows weston's desktop inside the VM's decoration and label;
//! * a click (control API → compositor → presenter → virtio tablet →
//!   libinput → weston) on weston's panel launcher starts weston-terminal;
//! * text typed through the control API (→ virtio keyboard) runs a command
//!   in that terminal which writes a file the test host reads on the
//!   guest's root share;
//! * the window is resized through the control API: the guest gets the
//!   display-change event and its connector's mode becomes the window's.
//!
//! Prints `PASS vmm-desktop flush_to_present_ms_p50=<ms> input_ok=1
//! resize_ok=1 transfer_mib_s=<MiB/s> ...` with memcpy beside the transfer
//! figure (the in-process gpu-bench of the same run) and the presenter's
//! figures from rayos-vmm's metrics. The flood measurement (another
//! window's frame rate while a scanout floods flushes) is the compositor's
//! tier-1 test `embedded_desktop`.

use std::time::Instant;

use serde_json::Value;

use super::compositor::{check_window_shot, Image, VM_RGB};
use super::vmm_native::{
    boot_step, evaluate, host_image_step, image_disk_step, prepare_step, GuestPlan, Plan, DESKTOP_RESIZE, DESKTOP_SIZE,
    VM,
};
use super::{nested, ScenarioError};
use crate::cli::VmmNativeArgs;
use crate::Outcome;

const SCENARIO: &str = "vmm-desktop";
/// Frames of the in-process transfer benchmark.
const BENCH_FRAMES: u32 = 100;

pub fn run(args: &VmmNativeArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: SCENARIO, figures },
        Err(reason) => Outcome::Fail { scenario: SCENARIO, reason: reason.to_string() },
    }
}

/// The share of pixels in a `w`×`h` area at (`x`, `y`) that are not black.
fn lit_share(img: &Image, x: i64, y: i64, w: i64, h: i64) -> f64 {
    let (lit, total) = img.count_at(x, y, w, h, |p| p.iter().any(|c| *c > 16));
    lit as f64 / total.max(1) as f64
}

fn geometry(w: &Value) -> (i64, i64) {
    (w["geometry"]["w"].as_i64().unwrap_or(0), w["geometry"]["h"].as_i64().unwrap_or(0))
}

fn run_inner(args: &VmmNativeArgs) -> Result<String, ScenarioError> {
    let t_all = Instant::now();
    let inputs = prepare_step(SCENARIO, args)?;
    let (run_dir, opts) = (&inputs.run_dir, &inputs.opts);
    let mut guest = GuestPlan::new(&inputs.manifest, args, false);
    guest.native = false;
    guest.words = false;
    guest.gpu = true;
    guest.desktop = true;
    guest.vmm_log = Some(
        args.vmm_log
            .clone()
            .unwrap_or_else(|| "rayos_vmm=info,rayos_vmm::virtio::gpu::presenter=debug,rayos_presenter=info".into()),
    );
    let plan = Plan { guest, kvm_trace: args.kvm_trace };
    let host_initrd = host_image_step(SCENARIO, &inputs, super::vmm_native::host_init(&plan), None, None)?;
    let disk = image_disk_step(SCENARIO, &inputs.image, run_dir)?;
    let prep = nested::prepared(&inputs.nested, opts, disk.clone(), host_initrd);
    let out = run_dir.join("out");
    let (figures, booted, attempts) = boot_step(SCENARIO, &prep, opts, &inputs.tools.virtiofsd, &disk, &out, |o| {
        let f = evaluate(o, &plan)?;
        let desktop = o.desktop.clone().ok_or("no desktop window JSON from the test host")?;
        Ok((f, desktop, o.windows.clone(), o.passed.clone(), o.typed_retries))
    })?;
    let (figures, desktop, windows, passed, typed_retries) = figures;
    if typed_retries > 0 {
        println!("{SCENARIO} RETRY typing: the first typed line did not reach the terminal within 20 s ({typed_retries} retry; an open question)");
    }
    for (step, s) in &figures.step_s {
        println!("{SCENARIO} step {step}: {s:.2} s");
    }
    let detail = |step: &str| passed.iter().find(|(n, _, _)| n == step).map(|(_, _, d)| d.clone()).unwrap_or_default();
    println!("{SCENARIO} desktop window: {desktop}");

    // The window: the VM's, in embedded-desktop mode, showing weston.
    if desktop["origin"]["name"] != VM || desktop["mode"] != "embedded_desktop" {
        return Err(format!("the desktop window is not VM {VM}'s embedded desktop: {desktop}").into());
    }
    let shot = out.join("desktop-window.png");
    let img = Image::load(&shot).map_err(|e| format!("desktop screenshot {}: {e}", shot.display()))?;
    check_window_shot(&img, &desktop, VM_RGB, "the guest's weston desktop under rayos-vmm")?;
    let (cw, ch) = geometry(&desktop);
    let lit = lit_share(&img, super::compositor::BORDER, super::compositor::TITLE_H, cw, ch);
    if lit < 0.5 {
        return Err(format!(
            "the desktop window is mostly black ({:.0}% lit): a text console, not weston's desktop ({})",
            lit * 100.0,
            shot.display()
        )
        .into());
    }
    println!("{SCENARIO} weston's desktop: {:.0}% of the {cw}x{ch} client area lit ({})", lit * 100.0, shot.display());

    // Input: the click started the terminal, the keys wrote the file.
    let typed = detail("typed");
    if !typed.contains("typed-through-rayos") {
        return Err(format!("the typed file holds {typed:?}, not the typed text").into());
    }
    println!("{SCENARIO} click: {}; typed file: {typed}", detail("click"));

    // Resize: the guest's connector follows; the window is the new size.
    let resized = format!("{}x{}", DESKTOP_RESIZE.0, DESKTOP_RESIZE.1);
    let modes = detail("resize");
    if !modes.contains(&resized) {
        return Err(format!("after the resize the guest's modes are {modes:?}, without {resized}").into());
    }
    let window_after = windows
        .as_ref()
        .and_then(|w| w["windows"].as_array().cloned())
        .and_then(|ws| ws.into_iter().find(|w| w["id"] == desktop["id"]))
        .ok_or("no window list after the resize")?;
    let after = geometry(&window_after);
    if after != (i64::from(DESKTOP_RESIZE.0), i64::from(DESKTOP_RESIZE.1)) {
        return Err(format!("after the resize the window is {after:?}, not {resized}: {window_after}").into());
    }

    // The presenter's figures and the guest's last scanout, from rayos-vmm.
    let metrics: rayos_vmm_api::Metrics =
        serde_json::from_str(booted.metrics.as_deref().ok_or("rayos-vmm wrote no metrics")?)
            .map_err(|e| format!("rayos-vmm's metrics: {e}"))?;
    let gpu = metrics.gpu.ok_or("rayos-vmm's metrics have no gpu figures")?;
    let p = gpu.presenter.clone().ok_or("rayos-vmm's metrics have no presenter figures")?;
    println!("{SCENARIO} rayos-vmm gpu: {gpu:?}");
    if gpu.refused > 0 {
        return Err(
            format!("rayos-vmm refused {} of the guest's {} virtio-gpu requests", gpu.refused, gpu.requests).into()
        );
    }
    let p50 = p.flush_to_present_ms_p50.ok_or("the presenter showed no flushed frame")?;
    let weston_followed = gpu.scanout == Some(DESKTOP_RESIZE);
    println!(
        "{SCENARIO} guest display {}x{} at boot, {} after the resize ({})",
        DESKTOP_SIZE.0,
        DESKTOP_SIZE.1,
        gpu.scanout.map(|(w, h)| format!("{w}x{h}")).unwrap_or_else(|| "none".into()),
        if weston_followed {
            "weston re-moded to the window"
        } else {
            "the kernel's mode followed; weston kept its mode"
        }
    );

    // TRANSFER_TO_HOST_2D on full frames beside memcpy, in this run.
    let bench = super::gpu_bench::bench(BENCH_FRAMES)?;
    nested::remove_images(&prep, args.keep_images);
    println!("{SCENARIO} screenshots in {}", out.display());
    println!("{SCENARIO} wall_s={:.1} run_dir={}", t_all.elapsed().as_secs_f64(), run_dir.display());
    Ok(format!(
        "flush_to_present_ms_p50={p50:.1} input_ok=1 resize_ok=1 transfer_mib_s={:.0} memcpy_mib_s={:.0} \
         flush_to_present_ms_p95={:.1} frames={} presented={} guest_flushes={} copied_mib={:.1} \
         weston_followed_resize={} typed_retries={typed_retries} boot_to_agent_s={:.1} test_host_wall_s={:.1} attempts={attempts}",
        bench.contiguous,
        bench.memcpy,
        p.flush_to_present_ms_p95.unwrap_or(f64::NAN),
        p.frames,
        p.presented,
        gpu.flushes,
        p.bytes_copied as f64 / 1048576.0,
        u8::from(weston_followed),
        figures.boot_to_agent_s,
        booted.wall.as_secs_f64(),
    ))
}
