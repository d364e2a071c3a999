//! `rayos-compositor`: the RayOS host compositor (thin binary over the library).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use rayos_compositor::geometry::Size;
use rayos_compositor::server::{run, socket_dir, BackendChoice, Config};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// Offscreen output rendered with pixman (tests, automation).
    Headless,
    /// The output in a window of an existing Wayland or X11 session (pixman, shown with softbuffer).
    Winit,
    /// DRM/KMS with libinput and libseat: the real host's display, on metal or in QEMU.
    Drm,
}

/// The RayOS host compositor.
///
/// Host clients connect on the Wayland socket `rayos-host`; each VM
/// registered through the control API gets `rayos-vm-<name>`. Windows are
/// framed with a decoration that shows where they come from. Backends:
/// `headless` (offscreen), `winit` (a window in the running Wayland session,
/// `WAYLAND_DISPLAY`, or X11 session, `DISPLAY`) and `drm` (a DRM/KMS display with libinput, through libseat:
/// run it as a seat user under seatd or logind, or as root with
/// LIBSEAT_BACKEND=builtin; the display's mode sets the output size).
#[derive(Debug, Parser)]
#[command(name = "rayos-compositor", version)]
struct Args {
    /// Display backend.
    #[arg(long, value_enum, default_value = "headless")]
    backend: Backend,
    /// Output size (the headless image, or the winit window), WxH; the drm
    /// backend uses the display's preferred mode instead.
    #[arg(long, default_value = "1280x800", value_parser = parse_size)]
    size: Size,
    /// Directory for the Wayland sockets [default: $XDG_RUNTIME_DIR].
    #[arg(long)]
    socket_dir: Option<PathBuf>,
    /// Control API socket [default: <socket dir>/rayos-compositor.sock].
    #[arg(long)]
    control: Option<PathBuf>,
    /// DRM device for `--backend drm` [default: the seat's primary GPU].
    #[arg(long, value_name = "PATH")]
    drm_device: Option<PathBuf>,
    /// Draw the pointer into the output image with the headless and winit
    /// backends too (screenshots then show it); the drm backend always does.
    #[arg(long)]
    draw_cursor: bool,
}

fn parse_size(s: &str) -> Result<Size, String> {
    let (w, h) = s.split_once('x').ok_or_else(|| format!("{s:?}: expected WxH, e.g. 1280x800"))?;
    let w: i32 = w.parse().map_err(|_| format!("{s:?}: bad width"))?;
    let h: i32 = h.parse().map_err(|_| format!("{s:?}: bad height"))?;
    Size::new(w, h).validate_output().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.drm_device.is_some() && args.backend != Backend::Drm {
        eprintln!("rayos-compositor: --drm-device needs --backend drm");
        return ExitCode::from(2);
    }
    if let Some(p) = args.drm_device.as_deref().filter(|p| !p.exists()) {
        eprintln!("rayos-compositor: --drm-device {}: no such device", p.display());
        return ExitCode::from(2);
    }
    let dir = match socket_dir(args.socket_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rayos-compositor: {e}");
            return ExitCode::from(2);
        }
    };
    let control_path = args.control.unwrap_or_else(|| dir.join("rayos-compositor.sock"));
    let backend = match args.backend {
        Backend::Headless => BackendChoice::Headless,
        Backend::Winit => BackendChoice::Winit,
        Backend::Drm => BackendChoice::Drm { device: args.drm_device },
    };
    match run(Config { size: args.size, socket_dir: dir, control_path, backend, draw_cursor: args.draw_cursor }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rayos-compositor: {e}");
            ExitCode::FAILURE
        }
    }
}
