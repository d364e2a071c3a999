//! Smithay protocol handlers: compositor, wl_shm, xdg-shell, xdg-decoration,
//! seat, data device (clipboard; foot needs it) and output.
//!
//! Design note: these translate Wayland requests into [`crate::shell::Shell`]
//! operations (see the lifecycle in [`super`]). Decoration mode is always
//! server-side: whatever a client asks, it is told the host draws its frame.
//! Client requests that the host decides (activation, interactive
//! move/resize) are not granted by themselves; maximize and fullscreen are
//! applied through the shell and configured back.

use smithay::backend::renderer::utils::{on_commit_buffer_handler, with_renderer_surface_state};
use smithay::desktop::{PopupKind, Window};
use smithay::input::pointer::CursorImageStatus;
use smithay::input::{Seat, SeatHandler, SeatState};
use smithay::reexports::wayland_protocols::xdg::decoration::zv1::server::zxdg_toplevel_decoration_v1::Mode as DecorationMode;
use smithay::reexports::wayland_server::protocol::{wl_buffer, wl_output, wl_seat, wl_surface::WlSurface};
use smithay::reexports::wayland_server::{Client, Resource};
use smithay::utils::Serial;
use smithay::wayland::buffer::BufferHandler;
use smithay::wayland::compositor::{
    get_parent, is_sync_subsurface, with_states, BufferAssignment, CompositorClientState, CompositorHandler,
    CompositorState, SurfaceAttributes,
};
use smithay::wayland::output::OutputHandler;
use smithay::wayland::selection::data_device::{
    ClientDndGrabHandler, DataDeviceHandler, DataDeviceState, ServerDndGrabHandler,
};
use smithay::wayland::selection::{SelectionHandler, SelectionSource, SelectionTarget};
use smithay::wayland::shell::xdg::decoration::XdgDecorationHandler;
use smithay::wayland::shell::xdg::{
    PopupSurface, PositionerState, ToplevelSurface, XdgShellHandler, XdgShellState, XdgToplevelSurfaceData,
};
use smithay::wayland::shm::{ShmHandler, ShmState};
use smithay::{
    delegate_compositor, delegate_data_device, delegate_output, delegate_seat, delegate_shm, delegate_xdg_decoration,
    delegate_xdg_shell,
};

use super::{ClientState, Mapped, State};
use crate::shell::MapRequest;
use crate::window::{Mode, WindowId};

/// Errors of the protocol handlers (logged; a client never brings the
/// compositor down).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("client has no RayOS client data")]
    NoClientData,
}

/// Toplevels one client may have at once (mapped or waiting for their
/// first buffer); the one past it disconnects the client with a protocol
/// error, so a guest cannot exhaust the host's memory or the shell's list.
pub const MAX_TOPLEVELS_PER_CLIENT: usize = 64;

fn client_origin(surface: &WlSurface, state: &State) -> Result<crate::origin::Origin, HandlerError> {
    let client = state
        .display_handle
        .get_client(smithay::reexports::wayland_server::Resource::id(surface))
        .map_err(|_| HandlerError::NoClientData)?;
    client.get_data::<ClientState>().map(|c| c.origin.clone()).ok_or(HandlerError::NoClientData)
}

/// The window mode the client's socket gives its toplevels.
fn client_mode(surface: &WlSurface, state: &State) -> Mode {
    state
        .display_handle
        .get_client(smithay::reexports::wayland_server::Resource::id(surface))
        .ok()
        .and_then(|c| c.get_data::<ClientState>().map(|c| c.mode))
        .unwrap_or(Mode::Native)
}

fn title_and_app_id(surface: &WlSurface) -> (String, String) {
    with_states(surface, |states| {
        states
            .data_map
            .get::<XdgToplevelSurfaceData>()
            .map(|d| {
                let d = d.lock().unwrap();
                (d.title.clone().unwrap_or_default(), d.app_id.clone().unwrap_or_default())
            })
            .unwrap_or_default()
    })
}

fn has_buffer(surface: &WlSurface) -> bool {
    with_renderer_surface_state(surface, |s| s.buffer().is_some()).unwrap_or(false)
}

impl State {
    /// A pending toplevel committed: configure it, or map it once it has a buffer.
    fn commit_pending(&mut self, surface: &WlSurface) {
        let Some(pos) = self.pending.iter().position(|(w, _)| w.toplevel().is_some_and(|t| t.wl_surface() == surface))
        else {
            return;
        };
        let toplevel = self.pending[pos].0.toplevel().cloned();
        let Some(toplevel) = toplevel else { return };
        if !toplevel.is_initial_configure_sent() {
            // Size 0x0: the client picks its size; the shell clamps it at map.
            toplevel.send_configure();
            return;
        }
        if !has_buffer(surface) {
            return;
        }
        let (window, origin) = self.pending.remove(pos);
        window.on_commit();
        let (title, app_id) = title_and_app_id(surface);
        let size = window.geometry().size;
        let mode = client_mode(surface, self);
        let req = MapRequest { mode, ..MapRequest::native(origin.clone(), &app_id, &title, size.w, size.h) };
        self.shell.set_now_ms(self.elapsed_ms());
        match self.shell.map(req) {
            Ok(id) => {
                // The mapping commit attached the window's first buffer.
                let _ = self.shell.record_commit(id);
                tracing::info!(%id, origin = origin.label(), app_id, title, "window mapped");
                self.offscreen.output().enter(surface);
                let deco = super::render::DecorationBuffers::new(&origin);
                self.windows.insert(id, Mapped { window, deco });
                self.reconcile();
            }
            Err(e) => {
                tracing::info!(origin = origin.label(), error = %e, "toplevel refused; closing it");
                toplevel.send_close();
            }
        }
    }

    /// A mapped toplevel committed (`new_buffer`: this commit attached a new
    /// buffer to the toplevel's own surface).
    fn commit_mapped(&mut self, id: WindowId, surface: &WlSurface, new_buffer: bool) {
        let Some(m) = self.windows.get(&id) else { return };
        m.window.on_commit();
        if !has_buffer(surface) {
            // Null buffer: the client unmapped; it may map again later.
            let m = self.windows.remove(&id).expect("present");
            let _ = self.shell.unmap(id);
            let origin = client_origin(surface, self).unwrap_or(crate::origin::Origin::Host);
            self.pending.push((m.window, origin));
            self.reconcile();
            return;
        }
        if new_buffer {
            let _ = self.shell.record_commit(id);
        }
        let (title, app_id) = title_and_app_id(surface);
        let _ = self.shell.set_title(id, &title);
        let _ = self.shell.set_app_id(id, &app_id);
        let Some(w) = self.shell.window(id) else { return };
        if !w.maximized && !w.fullscreen {
            let size = m.window.geometry().size;
            if size.w > 0 && size.h > 0 && (size.w != w.floating.w || size.h != w.floating.h) {
                let _ = self.shell.resize(id, size.w, size.h);
                self.configure(id);
            }
        }
    }
}

impl CompositorHandler for State {
    fn compositor_state(&mut self) -> &mut CompositorState {
        &mut self.compositor_state
    }

    fn client_compositor_state<'a>(&self, client: &'a Client) -> &'a CompositorClientState {
        &client.get_data::<ClientState>().expect("every client is inserted with ClientState").compositor_state
    }

    fn commit(&mut self, surface: &WlSurface) {
        // Whether this commit attached a new buffer (the buffer handler below
        // takes the assignment out of the surface state).
        let new_buffer = with_states(surface, |s| {
            matches!(s.cached_state.get::<SurfaceAttributes>().current().buffer, Some(BufferAssignment::NewBuffer(_)))
        });
        on_commit_buffer_handler::<Self>(surface);
        if is_sync_subsurface(surface) {
            return;
        }
        let mut root = surface.clone();
        while let Some(parent) = get_parent(&root) {
            root = parent;
        }
        match self.window_id_for_surface(&root) {
            Some(id) => self.commit_mapped(id, &root, new_buffer && root == *surface),
            None => self.commit_pending(&root),
        }
        self.popups.commit(surface);
        if let Some(PopupKind::Xdg(ref xdg)) = self.popups.find_popup(surface) {
            if !xdg.is_initial_configure_sent() {
                let _ = xdg.send_configure();
            }
        }
    }
}

impl BufferHandler for State {
    fn buffer_destroyed(&mut self, _buffer: &wl_buffer::WlBuffer) {}
}

impl ShmHandler for State {
    fn shm_state(&self) -> &ShmState {
        &self.shm_state
    }
}

impl XdgShellHandler for State {
    fn xdg_shell_state(&mut self) -> &mut XdgShellState {
        &mut self.xdg_shell_state
    }

    fn new_toplevel(&mut self, surface: ToplevelSurface) {
        let origin = match client_origin(surface.wl_surface(), self) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "toplevel without origin; closing it");
                surface.send_close();
                return;
            }
        };
        if !self.shell.registry().accepts(&origin) {
            tracing::info!(origin = origin.label(), "VM refused by policy; closing its new toplevel");
            surface.send_close();
            return;
        }
        if let Ok(client) = self.display_handle.get_client(Resource::id(surface.wl_surface())) {
            let cid = client.id();
            let same = |t: Option<&ToplevelSurface>| {
                t.and_then(|t| self.display_handle.get_client(Resource::id(t.wl_surface())).ok())
                    .is_some_and(|c| c.id() == cid)
            };
            let live = self.pending.iter().filter(|(w, _)| same(w.toplevel())).count()
                + self.windows.values().filter(|m| same(m.window.toplevel())).count();
            if live >= MAX_TOPLEVELS_PER_CLIENT {
                let message = format!("more than {MAX_TOPLEVELS_PER_CLIENT} toplevels from one client");
                tracing::warn!(origin = origin.label(), "client disconnected: {message}");
                // A protocol error disconnects the client once this dispatch
                // is over (destroying it from inside its own request is not
                // safe with libwayland).
                surface.xdg_toplevel().post_error(0u32, message);
                return;
            }
        }
        surface.with_pending_state(|s| {
            s.decoration_mode = Some(DecorationMode::ServerSide);
        });
        self.pending.push((Window::new_wayland_window(surface), origin));
    }

    fn new_popup(&mut self, surface: PopupSurface, _positioner: PositionerState) {
        self.unconstrain_popup(&surface);
        if let Err(e) = self.popups.track_popup(PopupKind::Xdg(surface)) {
            tracing::debug!(error = %e, "popup not tracked");
        }
    }

    fn reposition_request(&mut self, surface: PopupSurface, positioner: PositionerState, token: u32) {
        surface.with_pending_state(|s| {
            s.geometry = positioner.get_geometry();
            s.positioner = positioner;
        });
        self.unconstrain_popup(&surface);
        surface.send_repositioned(token);
    }

    fn move_request(&mut self, surface: ToplevelSurface, _seat: wl_seat::WlSeat, serial: Serial) {
        // Only while the user holds the button whose press `serial` names
        // (the implicit grab), and only the client's own mapped window.
        let Some(pointer) = self.seat.get_pointer() else { return };
        if !pointer.has_grab(serial) {
            tracing::debug!(?serial, "move request without a matching button press; ignored");
            return;
        }
        let Some(id) = self.window_id_for_surface(surface.wl_surface()) else { return };
        if self.shell.window(id).is_none_or(|w| w.maximized || w.fullscreen) {
            return;
        }
        let Ok(client) = self.shell.geometry(id) else { return };
        // The point pressed follows the pointer: the request may arrive
        // after the pointer has moved on.
        let Some(start) = pointer.grab_start_data() else { return };
        let (x, y) = (start.location.x as i32, start.location.y as i32);
        self.drag = Some((id, x - client.x, y - client.y));
    }

    fn grab(&mut self, _surface: PopupSurface, _seat: wl_seat::WlSeat, _serial: Serial) {}

    fn maximize_request(&mut self, surface: ToplevelSurface) {
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            let _ = self.shell.set_maximized(id, true);
            self.configure(id);
        } else {
            surface.send_configure();
        }
    }

    fn unmaximize_request(&mut self, surface: ToplevelSurface) {
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            let _ = self.shell.set_maximized(id, false);
            self.configure(id);
        }
    }

    fn fullscreen_request(&mut self, surface: ToplevelSurface, _output: Option<wl_output::WlOutput>) {
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            let _ = self.shell.set_fullscreen(id, true);
            self.configure(id);
        } else {
            surface.send_configure();
        }
    }

    fn unfullscreen_request(&mut self, surface: ToplevelSurface) {
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            let _ = self.shell.set_fullscreen(id, false);
            self.configure(id);
        }
    }

    fn minimize_request(&mut self, surface: ToplevelSurface) {
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            let _ = self.shell.minimize(id);
            self.reconcile();
        }
    }

    fn title_changed(&mut self, surface: ToplevelSurface) {
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            let (title, _) = title_and_app_id(surface.wl_surface());
            let _ = self.shell.set_title(id, &title);
        }
    }

    fn app_id_changed(&mut self, surface: ToplevelSurface) {
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            let (_, app_id) = title_and_app_id(surface.wl_surface());
            let _ = self.shell.set_app_id(id, &app_id);
        }
    }

    fn toplevel_destroyed(&mut self, surface: ToplevelSurface) {
        self.pending.retain(|(w, _)| w.toplevel().is_some_and(|t| t != &surface));
        if let Some(id) = self.window_id_for_surface(surface.wl_surface()) {
            self.windows.remove(&id);
            if self.shell.unmap(id).is_ok() {
                tracing::info!(%id, "window unmapped (toplevel destroyed)");
            }
            self.reconcile();
        }
    }
}

impl XdgDecorationHandler for State {
    fn new_decoration(&mut self, toplevel: ToplevelSurface) {
        toplevel.with_pending_state(|s| s.decoration_mode = Some(DecorationMode::ServerSide));
        if toplevel.is_initial_configure_sent() {
            toplevel.send_pending_configure();
        }
    }

    fn request_mode(&mut self, toplevel: ToplevelSurface, _mode: DecorationMode) {
        // The host always draws the frame (it carries the origin label).
        self.new_decoration(toplevel);
    }

    fn unset_mode(&mut self, toplevel: ToplevelSurface) {
        self.new_decoration(toplevel);
    }
}

impl SeatHandler for State {
    type KeyboardFocus = WlSurface;
    type PointerFocus = WlSurface;
    type TouchFocus = WlSurface;

    fn seat_state(&mut self) -> &mut SeatState<State> {
        &mut self.seat_state
    }

    fn cursor_image(&mut self, _seat: &Seat<Self>, image: CursorImageStatus) {
        // Only the client under the pointer can set it (Smithay checks the
        // enter serial); drawn by render::scene where the compositor draws
        // the pointer.
        self.cursor_status = image;
    }

    fn focus_changed(&mut self, seat: &Seat<Self>, focused: Option<&WlSurface>) {
        let _ = seat;
        // The clipboard is offered to the newly focused client as policy allows.
        self.clipboard_focus(focused);
    }
}

impl SelectionHandler for State {
    type SelectionUserData = super::clipboard::ClipOffer;

    fn new_selection(&mut self, ty: SelectionTarget, source: Option<SelectionSource>, _seat: Seat<Self>) {
        if ty == SelectionTarget::Clipboard {
            self.clipboard_new_selection(source);
        }
    }

    fn send_selection(
        &mut self,
        ty: SelectionTarget,
        mime_type: String,
        fd: std::os::unix::io::OwnedFd,
        _seat: Seat<Self>,
        user_data: &Self::SelectionUserData,
    ) {
        if ty == SelectionTarget::Clipboard {
            self.clipboard_send(mime_type, fd, user_data);
        }
    }
}

impl DataDeviceHandler for State {
    fn data_device_state(&self) -> &DataDeviceState {
        &self.data_device_state
    }
}

impl ClientDndGrabHandler for State {}
impl ServerDndGrabHandler for State {}

impl OutputHandler for State {}

delegate_compositor!(State);
delegate_shm!(State);
delegate_xdg_shell!(State);
delegate_xdg_decoration!(State);
delegate_seat!(State);
delegate_output!(State);
delegate_data_device!(State);
