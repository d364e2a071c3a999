//! Builds the compositor's state and runs its event loop: the Wayland
//! display, the client sockets, the control socket, the frame timer and,
//! with DRM, the device's, session's and libinput's event sources.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use smithay::desktop::PopupManager;
use smithay::input::{Seat, SeatState};
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::{EventLoop, Interest, Mode as LoopMode, PostAction};
use smithay::reexports::wayland_server::Display;
use smithay::wayland::compositor::CompositorState;
use smithay::wayland::output::OutputManagerState;
use smithay::wayland::selection::data_device::DataDeviceState;
use smithay::wayland::shell::xdg::decoration::XdgDecorationState;
use smithay::wayland::shell::xdg::XdgShellState;
use smithay::wayland::shm::ShmState;

use super::{clipboard, input, render, BackendChoice, Config, ControlServer, ServerError, State};
use crate::backend::drm::DrmOutput;
use crate::backend::winit::WinitWindow;
use crate::backend::{Backend, HeadlessBackend};
use crate::geometry::Size;
use crate::origin::{Origin, HOST_SOCKET};
use crate::shell::Shell;
use crate::window::Mode;

/// Runs the compositor on the headless backend until the loop is stopped.
pub fn run_headless(config: Config) -> Result<(), ServerError> {
    run(Config { backend: BackendChoice::Headless, ..config })
}

/// Runs the compositor until the loop is stopped: headless, or with the
/// output shown in a window (`config.window`, the winit backend).
pub fn run(config: Config) -> Result<(), ServerError> {
    let mut event_loop: EventLoop<'static, State> =
        EventLoop::try_new().map_err(|e| ServerError::Loop(e.to_string()))?;
    let display: Display<State> = Display::new().map_err(|e| ServerError::Display(e.to_string()))?;
    let dh = display.handle();

    let (backend, drm_sources) = match &config.backend {
        BackendChoice::Headless => (Backend::Headless, None),
        BackendChoice::Winit => {
            (Backend::Winit(WinitWindow::new(config.size.w as u32, config.size.h as u32, "RayOS")?), None)
        }
        BackendChoice::Drm { device } => {
            let (out, sources) = DrmOutput::open(device.as_deref())?;
            (Backend::Drm(out), Some(sources))
        }
    };
    let (size, offscreen, refresh_mhz) = match &backend {
        Backend::Drm(d) => {
            let (w, h) = d.size();
            let size =
                Size::new(w, h).validate_output().map_err(|e| ServerError::Display(format!("display mode: {e}")))?;
            (size, HeadlessBackend::with_output(w, h, d.connector_name(), "drm", d.refresh_mhz())?, d.refresh_mhz())
        }
        _ => (config.size, HeadlessBackend::new(config.size.w, config.size.h)?, crate::backend::headless::REFRESH_MHZ),
    };
    let shell = Shell::new(size)?;
    // DRM has no cursor plane of ours: the compositor draws the pointer.
    let draw_cursor = matches!(backend, Backend::Drm(_)) || config.draw_cursor;

    let compositor_state = CompositorState::new::<State>(&dh);
    let xdg_shell_state = XdgShellState::new::<State>(&dh);
    let xdg_decoration_state = XdgDecorationState::new::<State>(&dh);
    let shm_state = ShmState::new::<State>(&dh, vec![]);
    let output_manager_state = OutputManagerState::new_with_xdg_output::<State>(&dh);
    offscreen.output().create_global::<State>(&dh);
    let data_device_state = DataDeviceState::new::<State>(&dh);
    let mut seat_state = SeatState::new();
    let mut seat: Seat<State> = seat_state.new_wl_seat(&dh, "seat0");
    seat.add_keyboard(Default::default(), 600, 25).map_err(|e| ServerError::Display(format!("keyboard: {e}")))?;
    seat.add_pointer();
    let keys = input::KeyMapper::new().map_err(|e| ServerError::Display(e.to_string()))?;

    // Other local users must not reach the sockets (see `access`).
    super::access::check_socket_dir(&config.socket_dir)?;
    if let Some(parent) = config.control_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        super::access::check_socket_dir(parent)?;
    }
    let control = ControlServer::bind(&config.control_path, &event_loop.handle())?;

    let mut state = State {
        display: Rc::new(RefCell::new(display)),
        display_handle: dh,
        loop_handle: event_loop.handle(),
        start: Instant::now(),
        compositor_state,
        xdg_shell_state,
        xdg_decoration_state,
        shm_state,
        output_manager_state,
        seat_state,
        data_device_state,
        seat,
        popups: PopupManager::default(),
        shell,
        offscreen,
        pending: Vec::new(),
        windows: HashMap::new(),
        synced_focus: None,
        keys,
        socket_dir: config.socket_dir.clone(),
        vm_sockets: HashMap::new(),
        vm_clients: Vec::new(),
        drag: None,
        reap_clients: Vec::new(),
        control,
        backend,
        window_pointer: (size.w / 2, size.h / 2),
        cursor: draw_cursor.then(render::cursor_image),
        cursor_status: smithay::input::pointer::CursorImageStatus::default_named(),
        fonts: crate::text::Fonts::load_default(),
        clipboard: clipboard::Clipboard::default(),
        stop: event_loop.get_signal(),
    };
    state.listen(HOST_SOCKET, Origin::Host, Mode::Native)?;

    let poll_fd = state
        .display
        .borrow_mut()
        .backend()
        .poll_fd()
        .try_clone_to_owned()
        .map_err(|e| ServerError::Display(e.to_string()))?;
    event_loop
        .handle()
        .insert_source(Generic::new(poll_fd, Interest::READ, LoopMode::Level), |_, _, state| {
            state.dispatch_clients();
            Ok(PostAction::Continue)
        })
        .map_err(|e| ServerError::Loop(e.to_string()))?;

    if let Some(sources) = drm_sources {
        insert_drm_sources(&event_loop.handle(), sources)?;
    }

    // SIGTERM and SIGINT end the loop after the current frame: the DRM
    // session is released and the process exits 0 (rayos init stops the
    // compositor this way at poweroff).
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone()).map_err(|e| ServerError::Loop(format!("signal {sig}: {e}")))?;
    }
    let period = Duration::from_micros(1_000_000_000 / refresh_mhz.max(1_000) as u64);
    event_loop
        .handle()
        .insert_source(Timer::from_duration(period), move |_, _, state| {
            if term.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::info!("rayos-compositor: stopping on a signal");
                state.stop.stop();
                return TimeoutAction::Drop;
            }
            state.frame();
            TimeoutAction::ToDuration(period)
        })
        .map_err(|e| ServerError::Loop(e.to_string()))?;

    tracing::info!(
        size = %format!("{}x{}", size.w, size.h),
        sockets = %config.socket_dir.display(),
        control = %config.control_path.display(),
        backend = state.backend.name(),
        "rayos-compositor running"
    );
    event_loop
        .run(None, &mut state, |state| {
            // Killed clients are only reaped (sockets closed, objects
            // destroyed) by a dispatch of that client.
            for id in std::mem::take(&mut state.reap_clients) {
                let display = state.display.clone();
                let _ = display.borrow_mut().backend().dispatch_single_client(state, id);
            }
            state.control_flush_events();
            if let Err(e) = state.display_handle.flush_clients() {
                tracing::debug!(error = %e, "flush_clients");
            }
        })
        .map_err(|e| ServerError::Loop(e.to_string()))?;
    Ok(())
}

/// Watches the DRM device (flip completions), the seat session (VT
/// switches) and libinput.
fn insert_drm_sources(
    handle: &smithay::reexports::calloop::LoopHandle<'static, State>,
    sources: crate::backend::drm::DrmSources,
) -> Result<(), ServerError> {
    use smithay::backend::drm::DrmEvent;
    use smithay::backend::session::Event as SessionEvent;
    let loop_err = |e: String| ServerError::Loop(e);
    handle
        .insert_source(sources.drm, |event, _, state| match event {
            DrmEvent::VBlank(_) => {
                if let Some(d) = state.backend.drm_mut() {
                    d.vblank();
                }
            }
            DrmEvent::Error(e) => tracing::warn!(error = %e, "drm device"),
        })
        .map_err(|e| loop_err(e.to_string()))?;
    handle
        .insert_source(sources.session, |event, _, state| {
            if let Some(d) = state.backend.drm_mut() {
                match event {
                    SessionEvent::PauseSession => d.pause(),
                    SessionEvent::ActivateSession => d.activate(),
                }
            }
        })
        .map_err(|e| loop_err(e.to_string()))?;
    handle
        .insert_source(sources.input, |event, _, state| {
            let ev = state.backend.drm_mut().and_then(|d| d.input(event));
            if let Some(ev) = ev {
                state.output_input(ev);
            }
        })
        .map_err(|e| loop_err(e.to_string()))?;
    Ok(())
}
