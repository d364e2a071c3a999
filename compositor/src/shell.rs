//! The shell state: windows, stacking, focus, placement and origin policy.
//!
//! Design note: this is the display-independent heart of the compositor,
//! what Smithay's `Space` plus a compositor's own shell state hold in anvil
//! or niri, minus surfaces and rendering. The Smithay layer keeps a map
//! from its toplevels to [`WindowId`]s, calls these operations when clients
//! or the user act, and reads geometry, stacking, focus and decorations back
//! from here. Every change is also queued as a [`ShellEvent`] for the control
//! API's subscribers ([`Shell::take_events`]).
//!
//! Rules it enforces:
//! - **Ids** come from a counter that only grows; an id is never reused.
//! - **Stacking** is a list, bottom to top, holding each live window once.
//! - **Focus** is host-driven. [`Shell::focus`] is the host's explicit
//!   activation (user click, control API): it un-minimizes and raises. A
//!   client asking for activation ([`Shell::request_activation`]) only gets
//!   `demands_attention`. A newly mapped window takes focus only when nothing
//!   is focused or the focused window has the same origin; otherwise it is
//!   stacked just below the focused window, so a guest cannot pop a window
//!   over what the user is typing into. Windows of a VM that is refused or
//!   gone cannot hold or take focus. When the focused window goes away (or
//!   is minimized, or its VM refused), focus passes to the next eligible
//!   window from the top of the stack.
//! - **Origins**: a VM must be registered and accept windows to map one; it
//!   has at most one embedded-desktop window; unregistering it closes all its
//!   windows at once.
//! - **Placement** cascades new windows inside the output, frame included;
//!   sizes are clamped between [`MIN_CLIENT_W`]x[`MIN_CLIENT_H`] and what fits
//!   the output with its decoration. Moves keep the title bar reachable:
//!   its top never leaves the output, at least [`MIN_VISIBLE`] pixels of the
//!   frame stay on-screen horizontally, and part of the client stays visible
//!   vertically. An output resize re-applies these rules to every window.
//! - **Maximize/fullscreen** never touch the floating geometry, so leaving
//!   either restores it exactly. A host move or resize leaves both.

use std::collections::BTreeMap;

use crate::clipboard::ClipboardPolicy;
use crate::decoration::{Decoration, DecorationStyle, Hit, TITLE_HEIGHT};
use crate::geometry::{GeometryError, Rect, Size, MAX_DIMENSION};
use crate::origin::{Origin, OriginError, OriginRegistry, Rgb, VmEntry};
use crate::window::{sanitize_app_id, sanitize_title, Mode, Window, WindowId, WindowInfo};

/// Errors of shell operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("no window with id {0}")]
    UnknownWindow(WindowId),
    #[error("window {id} cannot take focus: {reason}")]
    NotFocusable { id: WindowId, reason: &'static str },
    #[error("the host has no embedded desktop; host windows are native")]
    HostDesktop,
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Geometry(#[from] GeometryError),
}

/// Narrowest client area.
pub const MIN_CLIENT_W: i32 = 64;
/// Lowest client area.
pub const MIN_CLIENT_H: i32 = 32;
/// Size given to a window that has no preference (requested 0x0).
pub const DEFAULT_CLIENT: Size = Size::new(800, 600);
/// Where the cascade starts (frame top-left).
pub const CASCADE_ORIGIN: i32 = 32;
/// Cascade offset between successive windows.
pub const CASCADE_STEP: i32 = TITLE_HEIGHT;
/// Pixels of a frame that always stay on-screen horizontally.
pub const MIN_VISIBLE: i32 = 48;
/// Rows of a client that always stay on-screen below the title bar.
pub const MIN_VISIBLE_ROWS: i32 = 16;

pub use rayos_compositor_ipc::types::{CloseReason, Event as ShellEvent};

/// What a client asks for when its toplevel first maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRequest {
    /// From the socket the client connected on.
    pub origin: Origin,
    pub mode: Mode,
    /// Raw, sanitised by the shell.
    pub app_id: String,
    /// Raw, sanitised by the shell.
    pub title: String,
    /// Requested client size; 0 in either dimension means "no preference".
    pub size: Size,
}

impl MapRequest {
    pub fn native(origin: Origin, app_id: &str, title: &str, w: i32, h: i32) -> Self {
        MapRequest { origin, mode: Mode::Native, app_id: app_id.into(), title: title.into(), size: Size::new(w, h) }
    }
}

/// The shell state.
#[derive(Debug, Clone)]
pub struct Shell {
    output: Size,
    registry: OriginRegistry,
    windows: BTreeMap<WindowId, Window>,
    /// Bottom to top.
    stack: Vec<WindowId>,
    focus: Option<WindowId>,
    next_id: u64,
    cascade: i32,
    events: Vec<ShellEvent>,
    /// The display layer's clock: ms since the compositor started.
    now_ms: u64,
}

impl Shell {
    /// A shell for one output of `output` size.
    pub fn new(output: Size) -> Result<Self, ShellError> {
        Ok(Shell {
            output: output.validate_output()?,
            registry: OriginRegistry::new(),
            windows: BTreeMap::new(),
            stack: Vec::new(),
            focus: None,
            next_id: 1,
            cascade: 0,
            events: Vec::new(),
            now_ms: 0,
        })
    }

    // ---- queries -------------------------------------------------------

    pub fn output(&self) -> Size {
        self.output
    }

    pub fn registry(&self) -> &OriginRegistry {
        &self.registry
    }

    /// The clock the shell stamps windows with (ms since the compositor
    /// started), as the display layer last set it.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Sets the clock; it never goes back.
    pub fn set_now_ms(&mut self, ms: u64) {
        self.now_ms = self.now_ms.max(ms);
    }

    pub fn focused(&self) -> Option<WindowId> {
        self.focus
    }

    /// Window ids bottom to top.
    pub fn stack(&self) -> &[WindowId] {
        &self.stack
    }

    pub fn window(&self, id: WindowId) -> Option<&Window> {
        self.windows.get(&id)
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The id the next mapped window will get.
    pub fn next_id(&self) -> WindowId {
        WindowId(self.next_id)
    }

    /// Windows bottom to top.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.stack.iter().filter_map(|id| self.windows.get(id))
    }

    fn get(&self, id: WindowId) -> Result<&Window, ShellError> {
        self.windows.get(&id).ok_or(ShellError::UnknownWindow(id))
    }

    fn get_mut(&mut self, id: WindowId) -> Result<&mut Window, ShellError> {
        self.windows.get_mut(&id).ok_or(ShellError::UnknownWindow(id))
    }

    /// The decoration style of a window in its current state.
    pub fn style(&self, w: &Window) -> DecorationStyle {
        DecorationStyle::for_state(&w.origin, w.maximized, w.fullscreen)
    }

    fn effective(&self, w: &Window) -> Rect {
        if w.fullscreen || w.maximized {
            self.style(w).insets().client(self.output.rect())
        } else {
            w.floating
        }
    }

    /// The client rectangle of a window, in output coordinates.
    pub fn geometry(&self, id: WindowId) -> Result<Rect, ShellError> {
        Ok(self.effective(self.get(id)?))
    }

    /// The laid-out decoration of a window (`None` when it has none).
    pub fn decoration(&self, id: WindowId) -> Result<Option<Decoration>, ShellError> {
        let w = self.get(id)?;
        Ok(Decoration::layout(self.effective(w), &w.origin, self.style(w)).unwrap_or(None))
    }

    /// The frame (client plus decoration) of a window.
    pub fn frame(&self, id: WindowId) -> Result<Rect, ShellError> {
        let w = self.get(id)?;
        Ok(self.style(w).insets().frame(self.effective(w)))
    }

    /// The control API's view of a window.
    pub fn info(&self, id: WindowId) -> Result<WindowInfo, ShellError> {
        let w = self.get(id)?;
        Ok(WindowInfo {
            id,
            origin: w.origin.clone(),
            mode: w.mode,
            app_id: w.app_id.clone(),
            title: w.title.clone(),
            geometry: self.effective(w),
            focused: self.focus == Some(id),
            maximized: w.maximized,
            fullscreen: w.fullscreen,
            minimized: w.minimized,
            demands_attention: w.demands_attention,
            stack_index: self.stack.iter().position(|s| *s == id).unwrap_or(0),
            commits: w.commits,
            mapped_at_ms: w.mapped_at_ms,
            first_content_ms: w.first_content_ms,
        })
    }

    /// All windows, bottom to top.
    pub fn list(&self) -> Vec<WindowInfo> {
        self.stack.iter().filter_map(|id| self.info(*id).ok()).collect()
    }

    /// The top-most visible window under a point, and what the point hits.
    pub fn hit_test(&self, px: i32, py: i32) -> Option<(WindowId, Hit)> {
        self.stack.iter().rev().find_map(|&id| {
            let w = self.windows.get(&id)?;
            if w.minimized {
                return None;
            }
            let client = self.effective(w);
            let deco = Decoration::layout(client, &w.origin, self.style(w)).ok().flatten();
            match crate::decoration::hit_test(client, deco.as_ref(), px, py) {
                Hit::Nothing => None,
                hit => Some((id, hit)),
            }
        })
    }

    /// Whether a window may hold focus now.
    pub fn can_focus(&self, id: WindowId) -> bool {
        self.focus_block(id).is_none()
    }

    fn focus_block(&self, id: WindowId) -> Option<&'static str> {
        match self.windows.get(&id) {
            None => Some("no such window"),
            Some(w) if !self.registry.accepts(&w.origin) => Some("its VM is refused or unregistered"),
            Some(_) => None,
        }
    }

    /// Drains the queued events.
    pub fn take_events(&mut self) -> Vec<ShellEvent> {
        std::mem::take(&mut self.events)
    }

    // ---- geometry rules ------------------------------------------------

    /// Largest client size that fits the output with a floating decoration.
    fn max_client(&self) -> Size {
        let insets = DecorationStyle::Full.insets();
        Size::new(
            (self.output.w - insets.horizontal()).max(MIN_CLIENT_W),
            (self.output.h - insets.vertical()).max(MIN_CLIENT_H),
        )
    }

    fn clamp_size(&self, w: i32, h: i32) -> Size {
        let max = self.max_client();
        Size::new(w.clamp(MIN_CLIENT_W, max.w.min(MAX_DIMENSION)), h.clamp(MIN_CLIENT_H, max.h.min(MAX_DIMENSION)))
    }

    /// Clamps a floating client rectangle so the window stays reachable.
    fn clamp_floating(&self, r: Rect) -> Rect {
        let size = self.clamp_size(r.w, r.h);
        let insets = DecorationStyle::Full.insets();
        let frame = insets.frame(Rect::new(r.x, r.y, size.w, size.h));
        let min_x = MIN_VISIBLE - frame.w;
        let max_x = self.output.w - MIN_VISIBLE;
        let max_y = (self.output.h - insets.top - MIN_VISIBLE_ROWS).max(0);
        let fx = frame.x.clamp(min_x, max_x);
        let fy = frame.y.clamp(0, max_y);
        insets.client(Rect::new(fx, fy, frame.w, frame.h))
    }

    /// Picks the floating rectangle of a new window: cascaded, fully inside.
    fn place(&mut self, requested: Size) -> Rect {
        let want = if requested.w <= 0 || requested.h <= 0 { DEFAULT_CLIENT } else { requested };
        let size = self.clamp_size(want.w, want.h);
        let insets = DecorationStyle::Full.insets();
        let fw = size.w + insets.horizontal();
        let fh = size.h + insets.vertical();
        let fits = |p: i32| p + fw <= self.output.w && p + fh <= self.output.h;
        let mut p = CASCADE_ORIGIN + self.cascade * CASCADE_STEP;
        if !fits(p) {
            self.cascade = 0;
            p = CASCADE_ORIGIN;
        }
        let fx = p.min(self.output.w - fw).max(0);
        let fy = p.min(self.output.h - fh).max(0);
        self.cascade += 1;
        insets.client(Rect::new(fx, fy, fw, fh))
    }

    // ---- window lifecycle ----------------------------------------------

    /// Counts a commit of the window's surface that attached a new buffer;
    /// returns the new count.
    pub fn record_commit(&mut self, id: WindowId) -> Result<u64, ShellError> {
        let w = self.get_mut(id)?;
        w.commits = w.commits.saturating_add(1);
        Ok(w.commits)
    }

    /// Records that a frame rendered at `ms` showed the window's client
    /// buffer; only the first such frame is kept. Returns whether this was it.
    pub fn record_first_content(&mut self, id: WindowId, ms: u64) -> bool {
        match self.windows.get_mut(&id) {
            Some(w) if w.first_content_ms.is_none() => {
                w.first_content_ms = Some(ms);
                true
            }
            _ => false,
        }
    }

    /// Maps a new toplevel; returns its id.
    pub fn map(&mut self, req: MapRequest) -> Result<WindowId, ShellError> {
        let desktop = req.mode == Mode::EmbeddedDesktop;
        match &req.origin {
            Origin::Host if desktop => return Err(ShellError::HostDesktop),
            Origin::Host => {}
            Origin::Vm { name, .. } => {
                self.registry.check_can_open(name, desktop)?;
                if !self.registry.is_live(&req.origin) {
                    // Registered again (new colour) since this client connected.
                    return Err(OriginError::UnknownVm(name.clone()).into());
                }
            }
        }
        let id = WindowId(self.next_id);
        self.next_id += 1;
        let floating = self.place(req.size);
        let window = Window {
            id,
            origin: req.origin,
            mode: req.mode,
            app_id: sanitize_app_id(&req.app_id),
            title: sanitize_title(&req.title),
            floating,
            maximized: false,
            fullscreen: false,
            minimized: false,
            demands_attention: false,
            commits: 0,
            mapped_at_ms: self.now_ms,
            first_content_ms: None,
        };
        if let Some(name) = window.origin.vm_name() {
            self.registry.attach(name, id, desktop);
        }
        let takes_focus = match self.focus.and_then(|f| self.windows.get(&f)) {
            None => true,
            Some(f) => f.origin == window.origin,
        };
        self.windows.insert(id, window);
        if takes_focus {
            self.stack.push(id);
        } else {
            let below = self.focus.and_then(|f| self.stack.iter().position(|s| *s == f)).unwrap_or(self.stack.len());
            self.stack.insert(below, id);
        }
        tracing::debug!(%id, takes_focus, "window mapped");
        if let Ok(info) = self.info(id) {
            self.events.push(ShellEvent::WindowOpened { window: info });
        }
        if takes_focus {
            self.set_focus(Some(id));
        }
        Ok(id)
    }

    /// Removes a window for `reason`; focus passes on if it was focused.
    pub fn remove(&mut self, id: WindowId, reason: CloseReason) -> Result<(), ShellError> {
        let w = self.windows.remove(&id).ok_or(ShellError::UnknownWindow(id))?;
        self.stack.retain(|s| *s != id);
        if let Some(name) = w.origin.vm_name() {
            self.registry.detach(name, id);
        }
        tracing::debug!(%id, ?reason, "window removed");
        self.events.push(ShellEvent::WindowClosed { id, reason });
        if self.focus == Some(id) {
            self.refocus();
        }
        Ok(())
    }

    /// The client unmapped or destroyed its toplevel (or disconnected).
    pub fn unmap(&mut self, id: WindowId) -> Result<(), ShellError> {
        self.remove(id, CloseReason::Unmapped)
    }

    /// The host closes a window: it leaves the screen at once.
    pub fn close(&mut self, id: WindowId) -> Result<(), ShellError> {
        self.remove(id, CloseReason::Closed)
    }

    // ---- focus and stacking --------------------------------------------

    fn set_focus(&mut self, id: Option<WindowId>) {
        if self.focus != id {
            self.focus = id;
            self.events.push(ShellEvent::FocusChanged { id });
        }
    }

    /// Gives focus to the top-most eligible window (or none).
    fn refocus(&mut self) {
        let next = self
            .stack
            .iter()
            .rev()
            .copied()
            .find(|&id| self.windows.get(&id).is_some_and(|w| !w.minimized) && self.can_focus(id));
        self.set_focus(next);
    }

    /// The host's explicit activation: un-minimizes, raises and focuses.
    pub fn focus(&mut self, id: WindowId) -> Result<(), ShellError> {
        if let Some(reason) = self.focus_block(id) {
            return Err(match self.windows.get(&id) {
                None => ShellError::UnknownWindow(id),
                Some(_) => ShellError::NotFocusable { id, reason },
            });
        }
        let w = self.get_mut(id)?;
        w.minimized = false;
        w.demands_attention = false;
        self.raise(id)?;
        self.set_focus(Some(id));
        Ok(())
    }

    /// A client asks to be activated: noted, never granted by itself.
    pub fn request_activation(&mut self, id: WindowId) -> Result<(), ShellError> {
        let focused = self.focus == Some(id);
        let w = self.get_mut(id)?;
        if !focused {
            w.demands_attention = true;
        }
        Ok(())
    }

    /// Puts a window on top of the stack (focus unchanged).
    pub fn raise(&mut self, id: WindowId) -> Result<(), ShellError> {
        self.get(id)?;
        self.stack.retain(|s| *s != id);
        self.stack.push(id);
        Ok(())
    }

    /// Hides a window; focus passes on if it had it.
    pub fn minimize(&mut self, id: WindowId) -> Result<(), ShellError> {
        self.get_mut(id)?.minimized = true;
        if self.focus == Some(id) {
            self.refocus();
        }
        Ok(())
    }

    // ---- geometry operations -------------------------------------------

    /// Sets the floating client rectangle (leaving maximized/fullscreen),
    /// clamped to keep the window reachable. Returns the rectangle applied.
    pub fn set_floating_geometry(&mut self, id: WindowId, r: Rect) -> Result<Rect, ShellError> {
        self.get(id)?;
        let clamped = self.clamp_floating(r);
        let w = self.get_mut(id)?;
        w.maximized = false;
        w.fullscreen = false;
        w.floating = clamped;
        Ok(clamped)
    }

    /// Moves a window's client area to (x, y).
    pub fn move_to(&mut self, id: WindowId, x: i32, y: i32) -> Result<Rect, ShellError> {
        let f = self.get(id)?.floating;
        self.set_floating_geometry(id, Rect::new(x, y, f.w, f.h))
    }

    /// Resizes a window's client area, keeping its top-left corner.
    pub fn resize(&mut self, id: WindowId, w: i32, h: i32) -> Result<Rect, ShellError> {
        let f = self.get(id)?.floating;
        self.set_floating_geometry(id, Rect::new(f.x, f.y, w, h))
    }

    pub fn set_maximized(&mut self, id: WindowId, on: bool) -> Result<(), ShellError> {
        self.get_mut(id)?.maximized = on;
        Ok(())
    }

    pub fn set_fullscreen(&mut self, id: WindowId, on: bool) -> Result<(), ShellError> {
        self.get_mut(id)?.fullscreen = on;
        Ok(())
    }

    /// The output changed size: every window is re-clamped to stay reachable.
    pub fn set_output_size(&mut self, size: Size) -> Result<(), ShellError> {
        self.output = size.validate_output()?;
        let ids: Vec<WindowId> = self.windows.keys().copied().collect();
        for id in ids {
            let f = self.windows[&id].floating;
            let clamped = self.clamp_floating(f);
            if let Some(w) = self.windows.get_mut(&id) {
                w.floating = clamped;
            }
        }
        self.cascade = 0;
        Ok(())
    }

    // ---- client text -----------------------------------------------------

    /// Sets a window's title (sanitised); queues `title_changed` if it changed.
    pub fn set_title(&mut self, id: WindowId, raw: &str) -> Result<(), ShellError> {
        let title = sanitize_title(raw);
        let w = self.get_mut(id)?;
        if w.title != title {
            w.title = title.clone();
            self.events.push(ShellEvent::TitleChanged { id, title });
        }
        Ok(())
    }

    pub fn set_app_id(&mut self, id: WindowId, raw: &str) -> Result<(), ShellError> {
        self.get_mut(id)?.app_id = sanitize_app_id(raw);
        Ok(())
    }

    // ---- origins ---------------------------------------------------------

    /// Registers a VM; returns its entry (socket name to listen on).
    pub fn register_vm(&mut self, name: &str, colour: Rgb) -> Result<VmEntry, ShellError> {
        self.register_vm_with(name, colour, ClipboardPolicy::default())
    }

    /// Registers a VM with a clipboard policy.
    pub fn register_vm_with(
        &mut self,
        name: &str,
        colour: Rgb,
        clipboard: ClipboardPolicy,
    ) -> Result<VmEntry, ShellError> {
        self.registry.register(name, colour)?;
        self.registry.set_clipboard(name, clipboard)?;
        let entry = self.registry.get(name).cloned().ok_or_else(|| OriginError::UnknownVm(name.to_string()))?;
        self.events.push(ShellEvent::VmRegistered(entry.registration()));
        Ok(entry)
    }

    /// Unregisters a VM and closes all its windows at once; returns their ids.
    pub fn unregister_vm(&mut self, name: &str) -> Result<Vec<WindowId>, ShellError> {
        let ids = self.registry.unregister(name)?;
        for &id in &ids {
            // Already detached from the registry; remove() tolerates that.
            let _ = self.remove(id, CloseReason::VmUnregistered);
        }
        self.events.push(ShellEvent::VmUnregistered { name: name.to_string(), closed: ids.clone() });
        Ok(ids)
    }

    /// Sets whether a VM may open windows and take focus. Refusing it moves
    /// focus away from its windows at once; they stay visible.
    pub fn set_vm_policy(&mut self, name: &str, accept_windows: bool) -> Result<(), ShellError> {
        self.set_vm_policies(name, Some(accept_windows), None)
    }

    /// Sets the given parts of a VM's policy (see [`Shell::set_vm_policy`]
    /// and [`crate::clipboard`]); one event reports the whole policy.
    pub fn set_vm_policies(
        &mut self,
        name: &str,
        accept_windows: Option<bool>,
        clipboard: Option<ClipboardPolicy>,
    ) -> Result<(), ShellError> {
        let entry = self.registry.get(name).ok_or_else(|| OriginError::UnknownVm(name.to_string()))?;
        let accept_windows = accept_windows.unwrap_or(entry.accept_windows);
        let clipboard = clipboard.unwrap_or(entry.clipboard);
        self.registry.set_accept_windows(name, accept_windows)?;
        self.registry.set_clipboard(name, clipboard)?;
        self.events.push(ShellEvent::VmPolicyChanged { name: name.to_string(), accept_windows, clipboard });
        if let Some(f) = self.focus {
            if !self.can_focus(f) {
                self.refocus();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREEN: Rgb = Rgb::new(0x2e, 0xa0, 0x43);
    const RED: Rgb = Rgb::new(0xd0, 0x30, 0x30);

    fn shell() -> Shell {
        Shell::new(Size::new(1920, 1080)).unwrap()
    }

    fn vm(s: &mut Shell, name: &str, colour: Rgb) -> Origin {
        s.register_vm(name, colour).unwrap().origin()
    }

    fn native(s: &mut Shell, o: &Origin) -> WindowId {
        s.map(MapRequest::native(o.clone(), "app", "title", 400, 300)).unwrap()
    }

    #[test]
    fn frame_counters_and_timestamps() {
        let mut s = shell();
        s.set_now_ms(1500);
        let id = s.map(MapRequest::native(Origin::Host, "shm", "t", 200, 200)).unwrap();
        s.set_now_ms(900); // the clock never goes back
        assert_eq!(s.now_ms(), 1500);
        let i = s.info(id).unwrap();
        assert_eq!((i.commits, i.mapped_at_ms, i.first_content_ms), (0, 1500, None));
        assert_eq!(s.record_commit(id), Ok(1));
        assert_eq!(s.record_commit(id), Ok(2));
        assert!(s.record_first_content(id, 1516));
        assert!(!s.record_first_content(id, 1532), "only the first frame counts");
        let i = s.info(id).unwrap();
        assert_eq!((i.commits, i.mapped_at_ms, i.first_content_ms), (2, 1500, Some(1516)));
        assert_eq!(s.record_commit(WindowId(99)), Err(ShellError::UnknownWindow(WindowId(99))));
        assert!(!s.record_first_content(WindowId(99), 1));
        let json = serde_json::to_value(s.info(id).unwrap()).unwrap();
        assert_eq!(json["commits"], 2);
        assert_eq!(json["mapped_at_ms"], 1500);
        assert_eq!(json["first_content_ms"], 1516);
        // A new window has not been shown yet: null, not absent.
        let other = s.map(MapRequest::native(Origin::Host, "shm", "u", 200, 200)).unwrap();
        let json = serde_json::to_value(s.info(other).unwrap()).unwrap();
        assert!(json.get("first_content_ms").is_some_and(|v| v.is_null()));
    }

    #[test]
    fn ids_grow_and_are_never_reused() {
        let mut s = shell();
        let a = native(&mut s, &Origin::Host);
        s.close(a).unwrap();
        let b = native(&mut s, &Origin::Host);
        assert!(b > a);
        assert_eq!(s.close(a), Err(ShellError::UnknownWindow(a)));
    }

    #[test]
    fn cascade_stays_inside_output() {
        let mut s = shell();
        let mut last = None;
        for _ in 0..100 {
            let id = native(&mut s, &Origin::Host);
            let frame = s.frame(id).unwrap();
            assert!(s.output().rect().contains_rect(&frame), "{frame:?}");
            if let Some(prev) = last {
                assert_ne!(s.frame(prev).unwrap(), frame);
            }
            last = Some(id);
        }
    }

    #[test]
    fn huge_and_tiny_sizes_are_clamped() {
        let mut s = shell();
        let big = s.map(MapRequest::native(Origin::Host, "a", "b", 100_000, i32::MAX)).unwrap();
        let f = s.frame(big).unwrap();
        assert_eq!(f, s.output().rect());
        let tiny = s.map(MapRequest::native(Origin::Host, "a", "b", 1, -5)).unwrap();
        assert_eq!(s.geometry(tiny).unwrap().size(), DEFAULT_CLIENT);
        s.resize(tiny, 1, 1).unwrap();
        assert_eq!(s.geometry(tiny).unwrap().size(), Size::new(MIN_CLIENT_W, MIN_CLIENT_H));
    }

    #[test]
    fn moves_keep_the_title_bar_reachable() {
        let mut s = shell();
        let id = native(&mut s, &Origin::Host);
        s.move_to(id, -10_000, -10_000).unwrap();
        let f = s.frame(id).unwrap();
        assert_eq!(f.y, 0);
        assert_eq!(f.right(), MIN_VISIBLE);
        s.move_to(id, 10_000, 10_000).unwrap();
        let f = s.frame(id).unwrap();
        assert_eq!(f.x, 1920 - MIN_VISIBLE);
        assert!(s.geometry(id).unwrap().intersects(&s.output().rect()));
    }

    #[test]
    fn maximize_and_fullscreen_restore_geometry() {
        let mut s = shell();
        let g = vm(&mut s, "work", GREEN);
        let id = native(&mut s, &g);
        let before = s.geometry(id).unwrap();
        s.set_maximized(id, true).unwrap();
        assert_eq!(s.geometry(id).unwrap(), Rect::new(0, TITLE_HEIGHT, 1920, 1080 - TITLE_HEIGHT));
        s.set_fullscreen(id, true).unwrap();
        // A VM's fullscreen window keeps its trust strip.
        assert_eq!(s.geometry(id).unwrap(), Rect::new(0, TITLE_HEIGHT, 1920, 1080 - TITLE_HEIGHT));
        assert_eq!(s.decoration(id).unwrap().unwrap().label, "work");
        s.set_fullscreen(id, false).unwrap();
        s.set_maximized(id, false).unwrap();
        assert_eq!(s.geometry(id).unwrap(), before);

        let h = native(&mut s, &Origin::Host);
        s.set_fullscreen(h, true).unwrap();
        assert_eq!(s.geometry(h).unwrap(), s.output().rect());
        assert!(s.decoration(h).unwrap().is_none());
        s.move_to(h, 50, 60).unwrap();
        assert!(!s.window(h).unwrap().fullscreen);
        assert_eq!(s.geometry(h).unwrap().x, 50);
    }

    #[test]
    fn closing_focused_focuses_next_in_stack() {
        let mut s = shell();
        let a = native(&mut s, &Origin::Host);
        let b = native(&mut s, &Origin::Host);
        let c = native(&mut s, &Origin::Host);
        assert_eq!(s.focused(), Some(c));
        s.focus(a).unwrap();
        assert_eq!(s.stack(), &[b, c, a]);
        s.close(a).unwrap();
        assert_eq!(s.focused(), Some(c));
        s.minimize(c).unwrap();
        assert_eq!(s.focused(), Some(b));
        s.close(b).unwrap();
        assert_eq!(s.focused(), None);
        s.focus(c).unwrap();
        assert!(!s.window(c).unwrap().minimized);
        assert_eq!(s.focused(), Some(c));
    }

    #[test]
    fn guests_cannot_steal_focus() {
        let mut s = shell();
        let host = native(&mut s, &Origin::Host);
        let g = vm(&mut s, "work", GREEN);
        let gw = native(&mut s, &g);
        assert_eq!(s.focused(), Some(host));
        assert_eq!(s.stack(), &[gw, host], "new guest window goes below the focused host window");
        s.request_activation(gw).unwrap();
        assert_eq!(s.focused(), Some(host));
        assert!(s.window(gw).unwrap().demands_attention);
        s.focus(gw).unwrap();
        assert_eq!(s.focused(), Some(gw));
        assert!(!s.window(gw).unwrap().demands_attention);
        // Same origin may take focus from itself.
        let gw2 = native(&mut s, &g);
        assert_eq!(s.focused(), Some(gw2));
    }

    #[test]
    fn refused_vm_loses_focus_and_cannot_open() {
        let mut s = shell();
        let host = native(&mut s, &Origin::Host);
        let g = vm(&mut s, "work", GREEN);
        let gw = native(&mut s, &g);
        s.focus(gw).unwrap();
        s.set_vm_policy("work", false).unwrap();
        assert_eq!(s.focused(), Some(host));
        assert!(matches!(s.focus(gw), Err(ShellError::NotFocusable { .. })));
        assert_eq!(
            s.map(MapRequest::native(g.clone(), "a", "b", 10, 10)),
            Err(ShellError::Origin(OriginError::Refused("work".into())))
        );
        assert!(s.window(gw).is_some(), "refused VM's windows stay visible");
        s.set_vm_policy("work", true).unwrap();
        s.focus(gw).unwrap();
    }

    #[test]
    fn one_desktop_per_vm_and_none_for_host() {
        let mut s = shell();
        let g = vm(&mut s, "work", GREEN);
        let desk = MapRequest { mode: Mode::EmbeddedDesktop, ..MapRequest::native(g, "", "", 1280, 800) };
        let d = s.map(desk.clone()).unwrap();
        assert_eq!(s.map(desk.clone()), Err(ShellError::Origin(OriginError::DesktopExists("work".into()))));
        s.unmap(d).unwrap();
        s.map(desk).unwrap();
        let host_desk = MapRequest { mode: Mode::EmbeddedDesktop, ..MapRequest::native(Origin::Host, "", "", 0, 0) };
        assert_eq!(s.map(host_desk), Err(ShellError::HostDesktop));
    }

    #[test]
    fn unregister_closes_windows_at_once() {
        let mut s = shell();
        let g = vm(&mut s, "work", GREEN);
        let r = vm(&mut s, "other", RED);
        let a = native(&mut s, &g);
        let b = native(&mut s, &g);
        let c = native(&mut s, &r);
        s.focus(b).unwrap();
        s.take_events();
        let closed = s.unregister_vm("work").unwrap();
        assert_eq!(closed, vec![a, b]);
        assert!(s.window(a).is_none() && s.window(b).is_none());
        assert_eq!(s.focused(), Some(c));
        let ev = s.take_events();
        assert!(ev.contains(&ShellEvent::WindowClosed { id: a, reason: CloseReason::VmUnregistered }));
        assert!(ev.contains(&ShellEvent::VmUnregistered { name: "work".into(), closed: vec![a, b] }));
        assert!(ev.contains(&ShellEvent::FocusChanged { id: Some(c) }));
        // A client of the old registration cannot map.
        assert!(s.map(MapRequest::native(g, "a", "b", 10, 10)).is_err());
    }

    #[test]
    fn titles_are_sanitised_and_evented() {
        let mut s = shell();
        let id = s.map(MapRequest::native(Origin::Host, "a\u{7}pp", "t\u{202e}x", 10, 10)).unwrap();
        assert_eq!(s.window(id).unwrap().title, "tx");
        assert_eq!(s.window(id).unwrap().app_id, "app");
        s.take_events();
        s.set_title(id, "new\ntitle").unwrap();
        s.set_title(id, "new title").unwrap();
        assert_eq!(s.take_events(), vec![ShellEvent::TitleChanged { id, title: "new title".into() }]);
    }

    #[test]
    fn output_shrink_keeps_windows_reachable() {
        let mut s = shell();
        let ids: Vec<_> = (0..10).map(|_| native(&mut s, &Origin::Host)).collect();
        s.move_to(ids[0], 1800, 1000).unwrap();
        s.set_output_size(Size::new(640, 480)).unwrap();
        for id in ids {
            let g = s.geometry(id).unwrap();
            assert!(g.intersects(&s.output().rect()));
            assert!(s.frame(id).unwrap().y >= 0);
            assert!(g.w <= 640 && g.h <= 480);
        }
        assert!(s.set_output_size(Size::new(10, 10)).is_err());
    }

    #[test]
    fn hit_test_walks_top_down() {
        let mut s = shell();
        let a = native(&mut s, &Origin::Host);
        let b = native(&mut s, &Origin::Host);
        let gb = s.geometry(b).unwrap();
        assert_eq!(s.hit_test(gb.x + 1, gb.y + 1), Some((b, Hit::Client)));
        s.minimize(b).unwrap();
        let ga = s.geometry(a).unwrap();
        assert!(ga.contains(gb.x + 1, gb.y + 1));
        assert_eq!(s.hit_test(gb.x + 1, gb.y + 1), Some((a, Hit::Client)));
        assert_eq!(s.hit_test(1919, 1079), None);
    }
}
