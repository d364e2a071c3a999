//! The compositor's state: Smithay's protocol states, the shell, the
//! backend, the clients' sockets, and what one turn of the event loop does
//! with them (dispatch, reconcile with the shell, a frame).

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smithay::desktop::{PopupManager, Window};
use smithay::input::{Seat, SeatState};
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::{Interest, LoopHandle, Mode as LoopMode, PostAction, RegistrationToken};
use smithay::reexports::wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use smithay::reexports::wayland_server::{Display, DisplayHandle, ListeningSocket};
use smithay::wayland::compositor::{CompositorClientState, CompositorState};
use smithay::wayland::output::OutputManagerState;
use smithay::wayland::selection::data_device::DataDeviceState;
use smithay::wayland::shell::xdg::decoration::XdgDecorationState;
use smithay::wayland::shell::xdg::XdgShellState;
use smithay::wayland::shm::ShmState;

use super::{clipboard, input, render, ControlServer, ServerError};
use crate::backend::{Backend, HeadlessBackend, OutputInput};
use crate::origin::Origin;
use crate::shell::Shell;
use crate::window::{Mode, WindowId};

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
    /// The offscreen output every backend renders into.
    pub(crate) offscreen: HeadlessBackend,
    /// Where the output's image goes.
    pub(crate) backend: Backend,
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
    pub(crate) fn listen(&mut self, name: &str, origin: Origin, mode: Mode) -> Result<RegistrationToken, ServerError> {
        let path = self.socket_dir.join(name);
        let socket = ListeningSocket::bind_absolute(path.clone())
            .map_err(|e| ServerError::Bind { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
        super::access::restrict_socket(&path).map_err(|source| ServerError::Bind { path: path.clone(), source })?;
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
        let mut target = smithay::utils::Rectangle::from_size(self.offscreen.size().to_logical(1));
        target.loc -= get_popup_toplevel_coords(&kind);
        target.loc -= smithay::utils::Point::from((client.x, client.y));
        popup.with_pending_state(|s| s.geometry = s.positioner.get_unconstrained_geometry(target));
    }

    /// Handles the window's input (winit backend).
    fn window_input(&mut self) {
        let input = match self.backend.pump_input() {
            Ok(input) => input,
            Err(e) => {
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
        self.backend.present(&mut self.offscreen, painted);
        let output = self.offscreen.output().clone();
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
