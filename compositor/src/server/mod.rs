//! The Wayland side of the compositor: Smithay state, sockets, event loop.
//!
//! Design note: [`State`] holds Smithay's protocol states (compositor,
//! xdg-shell, xdg-decoration, wl_shm, seat, output), the display-independent
//! [`Shell`], the backend and the control API connections, and runs on one
//! calloop event loop. It listens on `rayos-host` and on one `rayos-vm-<name>`
//! socket per VM registered through the control API, all in one directory
//! (`$XDG_RUNTIME_DIR` by default). The socket a client came through decides
//! its [`Origin`], stored in its client data; nothing the client sends can
//! change it.
//!
//! Window lifecycle: a new xdg toplevel waits in `pending` until it commits
//! its first buffer; then it is mapped into the [`Shell`] with its origin
//! (`Shell::map`), which places it and may refuse it (a refused or
//! unregistered VM): a refused toplevel is sent `close` and dropped. A
//! toplevel destroyed, unmapped (null buffer) or whose client died is
//! unmapped from the shell at once; Smithay destroys a dead client's objects,
//! which ends in `toplevel_destroyed`, so no window outlives its client.
//! After every control request the Smithay side is reconciled with the shell
//! (windows the shell closed get `close`, VM sockets follow the registry,
//! keyboard focus and `activated` follow the shell's focus), and configures
//! follow the shell's geometry and state. Unregistering a VM also
//! disconnects its clients: nothing of a VM outlives its registration.
//!
//! Fairness: Smithay runs on libwayland-server (wayland-rs's system
//! backend), whose dispatch reads each ready client socket once per turn of
//! the event loop, so the frame timer, the control socket and other clients
//! get their turn between a flooding client's reads.
//!
//! Frames: a timer at the output's refresh rate renders the scene through
//! the backend (damage-tracked: an idle scene paints nothing) and then sends
//! frame callbacks, which paces clients that draw continuously. With the
//! winit backend the same tick first pumps the window's events (its input
//! goes through the injection paths) and, after a frame that painted or an
//! expose, presents the output image in the window. With the DRM backend
//! the tick runs at the mode's refresh rate and presents what was painted
//! by a page flip; libinput events arrive as event-loop events and take the
//! same injection paths; frame callbacks are sent on every tick, so clients
//! are paced by the display.

mod clipboard;
mod control;
mod handlers;
mod input;
mod render;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smithay::desktop::{PopupManager, Window};
use smithay::input::{Seat, SeatState};
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::{EventLoop, Interest, LoopHandle, Mode as LoopMode, PostAction, RegistrationToken};
use smithay::reexports::wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use smithay::reexports::wayland_server::{Display, DisplayHandle, ListeningSocket};
use smithay::wayland::compositor::{CompositorClientState, CompositorState};
use smithay::wayland::output::OutputManagerState;
use smithay::wayland::selection::data_device::DataDeviceState;
use smithay::wayland::shell::xdg::decoration::XdgDecorationState;
use smithay::wayland::shell::xdg::XdgShellState;
use smithay::wayland::shm::ShmState;

use crate::backend::drm::{DrmError, DrmOutput};
use crate::backend::winit::{WinitError, WinitWindow};
use crate::backend::{HeadlessBackend, HeadlessError, OutputInput};
use crate::geometry::Size;
use crate::origin::{Origin, HOST_SOCKET};
use crate::shell::{Shell, ShellError};
use crate::window::{Mode, WindowId};

pub use control::ControlServer;

/// Errors of setting up and running the Wayland server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("headless backend: {0}")]
    Backend(#[from] HeadlessError),
    #[error("winit backend: {0}")]
    Winit(#[from] WinitError),
    #[error("drm backend: {0}")]
    Drm(#[from] DrmError),
    #[error("shell: {0}")]
    Shell(#[from] ShellError),
    #[error("cannot create the Wayland display: {0}")]
    Display(String),
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("event loop: {0}")]
    Loop(String),
    #[error("no socket directory: give --socket-dir or set XDG_RUNTIME_DIR")]
    NoSocketDir,
}

/// How to run the compositor.
#[derive(Debug, Clone)]
pub struct Config {
    /// Output size in pixels.
    pub size: Size,
    /// Where the Wayland sockets are created.
    pub socket_dir: PathBuf,
    /// The control API's unix socket.
    pub control_path: PathBuf,
    /// Where the output goes.
    pub backend: BackendChoice,
    /// Draw the pointer into the output image (always with DRM, which has
    /// no cursor of its own; for headless and winit only if asked).
    pub draw_cursor: bool,
}

/// The display backend to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// Offscreen only, of `Config::size`.
    Headless,
    /// In a window of the running Wayland or X11 session, of `Config::size`.
    Winit,
    /// On a DRM/KMS display (its mode decides the size): `device`, or the
    /// seat's primary GPU.
    Drm { device: Option<PathBuf> },
}

/// Per-client data: the origin of the socket it connected on.
#[derive(Debug)]
pub struct ClientState {
    pub compositor_state: CompositorClientState,
    pub origin: Origin,
    /// `EmbeddedDesktop` for clients of a VM's desktop socket.
    pub mode: Mode,
}

impl ClientData for ClientState {
    fn initialized(&self, client_id: ClientId) {
        tracing::debug!(?client_id, origin = self.origin.label(), "client connected");
    }
    fn disconnected(&self, client_id: ClientId, reason: DisconnectReason) {
        tracing::debug!(?client_id, ?reason, origin = self.origin.label(), "client disconnected");
    }
}

/// A toplevel the shell knows.
pub(crate) struct Mapped {
    pub window: Window,
    pub deco: render::DecorationBuffers,
}

/// The compositor state.
pub struct State {
    /// Shared with nothing else: kept here so the loop can dispatch (and
    /// clean up killed clients) from any callback.
    pub(crate) display: Rc<RefCell<Display<State>>>,
    pub(crate) display_handle: DisplayHandle,
    pub(crate) loop_handle: LoopHandle<'static, State>,
    pub(crate) start: Instant,

    pub(crate) compositor_state: CompositorState,
    pub(crate) xdg_shell_state: XdgShellState,
    // Owns the xdg-decoration global (its handler is in `handlers`).
    #[allow(dead_code)]
    pub(crate) xdg_decoration_state: XdgDecorationState,
    pub(crate) shm_state: ShmState,
    // Owns the xdg-output manager global.
    #[allow(dead_code)]
    pub(crate) output_manager_state: OutputManagerState,
    pub(crate) seat_state: SeatState<State>,
    pub(crate) data_device_state: DataDeviceState,
    pub(crate) seat: Seat<State>,
    pub(crate) popups: PopupManager,

    pub(crate) shell: Shell,
    pub(crate) backend: HeadlessBackend,
    /// Toplevels waiting for their first buffer, with their client's origin.
    pub(crate) pending: Vec<(Window, Origin)>,
    pub(crate) windows: HashMap<WindowId, Mapped>,
    /// The window the seat's keyboard focus and `activated` state follow.
    pub(crate) synced_focus: Option<WindowId>,
    pub(crate) keys: input::KeyMapper,

    pub(crate) socket_dir: PathBuf,
    /// Each VM's listening sockets: its apps' and its desktop's.
    pub(crate) vm_sockets: HashMap<String, [RegistrationToken; 2]>,
    /// Clients connected on a VM socket, disconnected when the VM goes.
    pub(crate) vm_clients: Vec<(ClientId, String)>,
    /// A title-bar drag in progress: the window and the grab offset.
    pub(crate) drag: Option<(WindowId, i32, i32)>,
    /// Clients killed; each is dispatched once more to reap it.
    pub(crate) reap_clients: Vec<ClientId>,
    pub(crate) control: ControlServer,
    /// The output's window (winit backend).
    pub(crate) window: Option<WinitWindow>,
    /// The output's display (DRM backend).
    pub(crate) drm: Option<DrmOutput>,
    /// The last pointer position (backend devices or injected).
    pub(crate) window_pointer: (i32, i32),
    /// The default pointer image, when the compositor draws the pointer
    /// (DRM, or `Config::draw_cursor`).
    pub(crate) cursor: Option<smithay::backend::renderer::element::memory::MemoryRenderBuffer>,
    /// What the client under the pointer asked to show (`set_cursor`).
    pub(crate) cursor_status: smithay::input::pointer::CursorImageStatus,
    /// The host-mediated clipboard.
    pub(crate) clipboard: clipboard::Clipboard,
    /// The title-bar faces, loaded once at start.
    pub(crate) fonts: crate::text::Fonts,
    pub(crate) stop: smithay::reexports::calloop::LoopSignal,
}

impl State {
    /// Reads and handles what clients sent, and reaps killed clients.
    pub(crate) fn dispatch_clients(&mut self) {
        let display = self.display.clone();
        let result = display.borrow_mut().dispatch_clients(self);
        if let Err(e) = result {
            tracing::warn!(error = %e, "dispatching clients failed");
        }
    }

    /// Milliseconds since start, for input and frame timestamps.
    pub(crate) fn now_ms(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
    }

    /// Milliseconds since start, for the control API's clock.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(crate) fn window_id_for_surface(
        &self,
        surface: &smithay::reexports::wayland_server::protocol::wl_surface::WlSurface,
    ) -> Option<WindowId> {
        self.windows
            .iter()
            .find(|(_, m)| m.window.toplevel().is_some_and(|t| t.wl_surface() == surface))
            .map(|(id, _)| *id)
    }

    /// Listens on `name` inside the socket directory; clients get `origin`
    /// and their toplevels map in `mode`.
    fn listen(&mut self, name: &str, origin: Origin, mode: Mode) -> Result<RegistrationToken, ServerError> {
        let path = self.socket_dir.join(name);
        let socket = ListeningSocket::bind_absolute(path.clone())
            .map_err(|e| ServerError::Bind { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
        tracing::info!(path = %path.display(), origin = origin.label(), ?mode, "listening for Wayland clients");
        self.loop_handle
            .insert_source(Generic::new(socket, Interest::READ, LoopMode::Level), move |_, socket, state| {
                while let Some(stream) = socket.accept()? {
                    state.accept_client(stream, &origin, mode);
                }
                Ok(PostAction::Continue)
            })
            .map_err(|e| ServerError::Loop(e.to_string()))
    }

    fn accept_client(&mut self, stream: UnixStream, origin: &Origin, mode: Mode) {
        // A VM socket only exists while the VM is registered, but its
        // registration may have changed since; take the live entry.
        let origin = match origin.vm_name() {
            Some(name) => match self.shell.registry().get(name) {
                Some(entry) => entry.origin(),
                None => return,
            },
            None => Origin::Host,
        };
        let vm = origin.vm_name().map(str::to_string);
        let data = Arc::new(ClientState { compositor_state: CompositorClientState::default(), origin, mode });
        match self.display_handle.insert_client(stream, data) {
            Ok(client) => {
                if let Some(vm) = vm {
                    let backend = self.display_handle.backend_handle();
                    self.vm_clients.retain(|(id, _)| backend.get_client_data(id.clone()).is_ok());
                    self.vm_clients.push((client.id(), vm));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot add client"),
        }
    }

    /// Makes the VM sockets follow the registry.
    pub(crate) fn sync_vm_sockets(&mut self) -> Result<(), ServerError> {
        let live: Vec<(String, Origin, String)> =
            self.shell.registry().vms().map(|e| (e.name.clone(), e.origin(), e.desktop_socket.clone())).collect();
        let gone: Vec<String> =
            self.vm_sockets.keys().filter(|n| !live.iter().any(|(l, _, _)| l == *n)).cloned().collect();
        for name in gone {
            if let Some(tokens) = self.vm_sockets.remove(&name) {
                // Dropping the ListeningSocket removes the socket file.
                for token in tokens {
                    self.loop_handle.remove(token);
                }
                tracing::info!(vm = %name, "VM socket removed");
                self.clipboard_vm_gone(&name);
                // The VM is gone: its connections go too, so nothing of it
                // (clipboard, pointer focus, new toplevels) outlives it.
                let backend = self.display_handle.backend_handle();
                for (id, _) in self.vm_clients.iter().filter(|(_, vm)| *vm == name) {
                    backend.kill_client(id.clone(), DisconnectReason::ConnectionClosed);
                    self.reap_clients.push(id.clone());
                }
                self.vm_clients.retain(|(_, vm)| *vm != name);
            }
        }
        for (name, origin, desktop_socket) in live {
            if !self.vm_sockets.contains_key(&name) {
                let apps = self.listen(&origin.socket_name(), origin.clone(), Mode::Native)?;
                let desktop = match self.listen(&desktop_socket, origin, Mode::EmbeddedDesktop) {
                    Ok(t) => t,
                    Err(e) => {
                        self.loop_handle.remove(apps);
                        return Err(e);
                    }
                };
                self.vm_sockets.insert(name, [apps, desktop]);
            }
        }
        Ok(())
    }

    /// Brings the Smithay side in line with the shell after a change there:
    /// windows the shell dropped are closed, focus and configures follow.
    pub(crate) fn reconcile(&mut self) {
        let dropped: Vec<WindowId> =
            self.windows.keys().filter(|id| self.shell.window(**id).is_none()).copied().collect();
        for id in dropped {
            if let Some(m) = self.windows.remove(&id) {
                if let Some(t) = m.window.toplevel() {
                    t.send_close();
                }
                tracing::info!(%id, "window closed by the host");
            }
        }
        self.sync_focus();
        let ids: Vec<WindowId> = self.windows.keys().copied().collect();
        for id in ids {
            self.configure(id);
        }
    }

    /// Sends the shell's geometry and state for a window as a configure
    /// (only if it differs from what the client has).
    pub(crate) fn configure(&mut self, id: WindowId) {
        use smithay::reexports::wayland_protocols::xdg::shell::server::xdg_toplevel::State as XdgState;
        let (Some(m), Some(w), Ok(geo)) = (self.windows.get(&id), self.shell.window(id), self.shell.geometry(id))
        else {
            return;
        };
        let focused = self.shell.focused() == Some(id);
        let Some(toplevel) = m.window.toplevel() else { return };
        toplevel.with_pending_state(|s| {
            s.size = Some((geo.w, geo.h).into());
            for (flag, on) in [
                (XdgState::Activated, focused),
                (XdgState::Maximized, w.maximized),
                (XdgState::Fullscreen, w.fullscreen),
            ] {
                if on {
                    s.states.set(flag);
                } else {
                    s.states.unset(flag);
                }
            }
        });
        if toplevel.is_initial_configure_sent() {
            toplevel.send_pending_configure();
        }
    }

    /// Moves the seat's keyboard focus to the shell's focused window.
    pub(crate) fn sync_focus(&mut self) {
        let want = self.shell.focused();
        if want == self.synced_focus {
            return;
        }
        let old = self.synced_focus.take();
        self.synced_focus = want;
        let surface =
            want.and_then(|id| self.windows.get(&id)).and_then(|m| m.window.toplevel()).map(|t| t.wl_surface().clone());
        if let Some(kb) = self.seat.get_keyboard() {
            let serial = smithay::utils::SERIAL_COUNTER.next_serial();
            kb.set_focus(self, surface, serial);
        }
        for id in [old, want].into_iter().flatten() {
            self.configure(id);
        }
    }

    /// Keeps a popup on the output, as far as its positioner's allowed
    /// adjustments (slide, flip, resize) let it.
    pub(crate) fn unconstrain_popup(&self, popup: &smithay::wayland::shell::xdg::PopupSurface) {
        use smithay::desktop::{find_popup_root_surface, get_popup_toplevel_coords, PopupKind};
        let kind = PopupKind::Xdg(popup.clone());
        let Ok(root) = find_popup_root_surface(&kind) else { return };
        let Some(id) = self.window_id_for_surface(&root) else { return };
        let Ok(client) = self.shell.geometry(id) else { return };
        // Positioner coordinates are relative to the parent's window
        // geometry; the toplevel's window geometry sits at the client rect.
        let mut target = smithay::utils::Rectangle::from_size(self.backend.size().to_logical(1));
        target.loc -= get_popup_toplevel_coords(&kind);
        target.loc -= smithay::utils::Point::from((client.x, client.y));
        popup.with_pending_state(|s| s.geometry = s.positioner.get_unconstrained_geometry(target));
    }

    /// Handles the window's input (winit backend).
    fn window_input(&mut self) {
        let input = match self.window.as_mut().map(WinitWindow::pump) {
            None => return,
            Some(Ok(input)) => input,
            Some(Err(e)) => {
                tracing::error!(error = %e, "window failed; stopping");
                self.stop.stop();
                return;
            }
        };
        for ev in input {
            self.output_input(ev);
        }
    }

    /// Input from the backend's own devices (window or libinput).
    pub(crate) fn output_input(&mut self, ev: OutputInput) {
        use crate::control::PointerAction;
        let res = match ev {
            OutputInput::Close => {
                tracing::info!("window closed; stopping");
                self.stop.stop();
                return;
            }
            OutputInput::Motion { x, y } => {
                self.window_pointer = (x, y);
                self.inject_pointer(x, y, None, PointerAction::Motion)
            }
            OutputInput::Button { button, pressed } => {
                let (x, y) = self.window_pointer;
                let action = if pressed { PointerAction::Press } else { PointerAction::Release };
                self.inject_pointer(x, y, Some(button), action)
            }
            OutputInput::Key { scancode, pressed } => self.window_key(scancode, pressed),
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "backend input dropped");
        }
        self.reconcile();
    }

    /// One frame: render (damage-tracked), present it in the window if there
    /// is one, and send frame callbacks.
    pub(crate) fn frame(&mut self) {
        self.window_input();
        let painted = match render::render_output(self) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "render failed");
                false
            }
        };
        if let Some(drm) = self.drm.as_mut() {
            let damage = self.backend.take_damage();
            if !damage.is_empty() || (drm.deferred() && !drm.busy()) {
                let backend = &mut self.backend;
                if let Err(e) = drm.present(&damage, |r| backend.read_rgba(r).map_err(|e| e.to_string())) {
                    tracing::warn!(error = %e, "present failed");
                }
            }
        }
        if self.window.as_ref().is_some_and(|w| painted || w.wants_redraw()) {
            let full = smithay::utils::Rectangle::from_size(self.backend.size());
            match self.backend.read_rgba(full) {
                Ok(rgba) => {
                    if let Some(Err(e)) = self.window.as_mut().map(|w| w.present(&rgba)) {
                        tracing::warn!(error = %e, "present failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the output failed"),
            }
        }
        let output = self.backend.output().clone();
        let time = self.start.elapsed();
        for m in self.windows.values() {
            m.window.send_frame(&output, time, Some(Duration::ZERO), |_, _| Some(output.clone()));
        }
        for (w, _) in &self.pending {
            w.send_frame(&output, time, Some(Duration::ZERO), |_, _| Some(output.clone()));
        }
        if let smithay::input::pointer::CursorImageStatus::Surface(s) = &self.cursor_status {
            smithay::desktop::utils::send_frames_surface_tree(s, &output, time, Some(Duration::ZERO), |_, _| {
                Some(output.clone())
            });
        }
    }
}

/// The socket directory: `dir` or `$XDG_RUNTIME_DIR`.
pub fn socket_dir(dir: Option<&Path>) -> Result<PathBuf, ServerError> {
    match dir {
        Some(d) => Ok(d.to_path_buf()),
        None => std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).ok_or(ServerError::NoSocketDir),
    }
}

/// Runs the compositor on the headless backend until the loop is stopped.
pub fn run_headless(config: Config) -> Result<(), ServerError> {
    run(Config { backend: BackendChoice::Headless, ..config })
}

/// Runs the compositor until the loop is stopped: headless, or with the
/// output shown in a window (`config.window`, the winit backend).
pub fn run(config: Config) -> Result<(), ServerError> {
    let window = if config.backend == BackendChoice::Winit {
        Some(WinitWindow::new(config.size.w as u32, config.size.h as u32, "RayOS")?)
    } else {
        None
    };
    let mut event_loop: EventLoop<'static, State> =
        EventLoop::try_new().map_err(|e| ServerError::Loop(e.to_string()))?;
    let display: Display<State> = Display::new().map_err(|e| ServerError::Display(e.to_string()))?;
    let dh = display.handle();

    let (drm, drm_sources) = match &config.backend {
        BackendChoice::Drm { device } => {
            let (out, sources) = DrmOutput::open(device.as_deref())?;
            (Some(out), Some(sources))
        }
        _ => (None, None),
    };
    let (size, backend, refresh_mhz) = match &drm {
        Some(d) => {
            let (w, h) = d.size();
            let size =
                Size::new(w, h).validate_output().map_err(|e| ServerError::Display(format!("display mode: {e}")))?;
            (size, HeadlessBackend::with_output(w, h, d.connector_name(), "drm", d.refresh_mhz())?, d.refresh_mhz())
        }
        None => {
            (config.size, HeadlessBackend::new(config.size.w, config.size.h)?, crate::backend::headless::REFRESH_MHZ)
        }
    };
    let shell = Shell::new(size)?;
    let draw_cursor = drm.is_some() || config.draw_cursor;

    let compositor_state = CompositorState::new::<State>(&dh);
    let xdg_shell_state = XdgShellState::new::<State>(&dh);
    let xdg_decoration_state = XdgDecorationState::new::<State>(&dh);
    let shm_state = ShmState::new::<State>(&dh, vec![]);
    let output_manager_state = OutputManagerState::new_with_xdg_output::<State>(&dh);
    backend.output().create_global::<State>(&dh);
    let data_device_state = DataDeviceState::new::<State>(&dh);
    let mut seat_state = SeatState::new();
    let mut seat: Seat<State> = seat_state.new_wl_seat(&dh, "seat0");
    seat.add_keyboard(Default::default(), 600, 25).map_err(|e| ServerError::Display(format!("keyboard: {e}")))?;
    seat.add_pointer();
    let keys = input::KeyMapper::new().map_err(|e| ServerError::Display(e.to_string()))?;

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
        backend,
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
        window,
        drm,
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

    let period = Duration::from_micros(1_000_000_000 / refresh_mhz.max(1_000) as u64);
    event_loop
        .handle()
        .insert_source(Timer::from_duration(period), move |_, _, state| {
            state.frame();
            TimeoutAction::ToDuration(period)
        })
        .map_err(|e| ServerError::Loop(e.to_string()))?;

    tracing::info!(
        size = %format!("{}x{}", size.w, size.h),
        sockets = %config.socket_dir.display(),
        control = %config.control_path.display(),
        backend = match config.backend {
            BackendChoice::Headless => "headless",
            BackendChoice::Winit => "winit",
            BackendChoice::Drm { .. } => "drm",
        },
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
            state.control.flush_events(&mut state.shell);
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
                if let Some(d) = state.drm.as_mut() {
                    d.vblank();
                }
            }
            DrmEvent::Error(e) => tracing::warn!(error = %e, "drm device"),
        })
        .map_err(|e| loop_err(e.to_string()))?;
    handle
        .insert_source(sources.session, |event, _, state| {
            if let Some(d) = state.drm.as_mut() {
                match event {
                    SessionEvent::PauseSession => d.pause(),
                    SessionEvent::ActivateSession => d.activate(),
                }
            }
        })
        .map_err(|e| loop_err(e.to_string()))?;
    handle
        .insert_source(sources.input, |event, _, state| {
            let ev = state.drm.as_mut().and_then(|d| d.input(event));
            if let Some(ev) = ev {
                state.output_input(ev);
            }
        })
        .map_err(|e| loop_err(e.to_string()))?;
    Ok(())
}
