//! The presenter thread: a Wayland client on the VM's desktop socket that
//! shows the shared image in one xdg toplevel (see the crate notes), and
//! reconnects when the compositor goes away.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wayland_client::globals::{registry_queue_init, BindError, GlobalError, GlobalListContents};
use wayland_client::protocol::{
    wl_buffer, wl_callback, wl_compositor, wl_keyboard, wl_pointer, wl_registry, wl_seat, wl_shm, wl_shm_pool,
    wl_surface,
};
use wayland_client::{delegate_noop, ConnectError, Connection, Dispatch, DispatchError, QueueHandle, WEnum};
use wayland_protocols::xdg::shell::client::{xdg_surface, xdg_toplevel, xdg_wm_base};

use crate::damage::{copy_damage, Damage};
use crate::shm::ShmFile;
use crate::{Config, Cursor, Events, Input, Shared};

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("Wayland handshake: {0}")]
    Handshake(#[from] ConnectError),
    #[error("reading the compositor's globals: {0}")]
    Globals(#[from] GlobalError),
    #[error("the compositor lacks a global the presenter needs: {0}")]
    Bind(#[from] BindError),
    #[error("Wayland dispatch: {0}")]
    Dispatch(#[from] DispatchError),
    #[error("Wayland connection: {0}")]
    Wayland(#[from] wayland_client::backend::WaylandError),
    #[error("shared memory for a {0}x{1} buffer: {2}")]
    Shm(u32, u32, std::io::Error),
    #[error("poll: {0}")]
    Poll(std::io::Error),
}

/// Wheel distance (surface units) of one click, as compositors send it.
const WHEEL_CLICK: f64 = 15.0;

/// Runs connections until the presenter stops.
pub(crate) fn run(shared: &Arc<Shared>, config: &Config, events: Arc<dyn Events>) {
    let mut failures = 0u32;
    let mut connected_before = false;
    while !shared.stop.load(Ordering::Acquire) {
        let result = serve(shared, config, events.clone(), &mut connected_before);
        shared.stats.lock().expect("presenter stats lock").stats.connected = false;
        match result {
            Ok(()) => return,
            Err(e) => {
                // Said once per outage, not at every retry.
                if failures == 0 {
                    tracing::warn!("presenter: {e}; retrying every {:?}", config.retry);
                } else {
                    tracing::debug!("presenter: {e}");
                }
                failures = failures.saturating_add(1);
            }
        }
        if connected_before && failures == 1 {
            tracing::info!(
                "presenter: the display is gone; the VM goes on and the window comes back with the compositor"
            );
        }
        let until = Instant::now() + config.retry;
        while !shared.stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if wait(&[shared.wake.as_raw_fd()], Some(left)).is_ok() {
                let _ = shared.wake.read();
            }
        }
    }
}

/// Waits until one of `fds` is readable (or `timeout`); returns which are.
fn wait(fds: &[i32], timeout: Option<Duration>) -> std::io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: `p` is a valid array of `p.len()` pollfd structures.
        let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(p.iter().map(|x| x.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0).collect());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One connection: returns `Ok` only when the presenter stops.
fn serve(
    shared: &Arc<Shared>,
    config: &Config,
    events: Arc<dyn Events>,
    connected_before: &mut bool,
) -> Result<(), ClientError> {
    let stream = UnixStream::connect(&config.socket)
        .map_err(|source| ClientError::Connect { path: config.socket.display().to_string(), source })?;
    let conn = Connection::from_socket(stream)?;
    let (globals, mut queue) = registry_queue_init::<Client>(&conn)?;
    let qh = queue.handle();
    let compositor: wl_compositor::WlCompositor = globals.bind(&qh, 4..=6, ())?;
    let shm: wl_shm::WlShm = globals.bind(&qh, 1..=1, ())?;
    let wm: xdg_wm_base::XdgWmBase = globals.bind(&qh, 1..=5, ())?;
    let seat: Option<wl_seat::WlSeat> = globals.bind(&qh, 1..=7, ()).ok();
    let surface = compositor.create_surface(&qh, ());
    let xdg = wm.get_xdg_surface(&surface, &qh, ());
    let toplevel = xdg.get_toplevel(&qh, ());
    toplevel.set_title(config.title.clone());
    toplevel.set_app_id(config.app_id.clone());
    surface.commit();
    let cursor_surface = compositor.create_surface(&qh, ());
    let mut c = Client {
        shared: shared.clone(),
        events,
        shm,
        surface,
        xdg,
        toplevel,
        cursor_surface,
        _seat: seat,
        configured: false,
        pending_size: None,
        configured_size: None,
        requested: None,
        closed: false,
        pool: None,
        in_flight: None,
        attached: false,
        shown: None,
        keyboard: None,
        pointer: None,
        pressed: BTreeSet::new(),
        pointer_serial: None,
        cursor_image: None,
        cursor_dirty: false,
        cursor_buffer: None,
        wheel: 0.0,
    };
    {
        // Everything is shown again on a new connection.
        let mut f = shared.frame.lock().expect("presenter frame lock");
        let (w, h) = f.mode.unwrap_or((0, 0));
        f.damage = Damage::full(w, h);
    }
    {
        let mut s = shared.stats.lock().expect("presenter stats lock");
        s.stats.connected = true;
        if *connected_before {
            s.stats.reconnects += 1;
        }
    }
    if *connected_before {
        tracing::info!("presenter: connected again to {}", config.socket.display());
    } else {
        tracing::info!("presenter: connected to {}", config.socket.display());
    }
    *connected_before = true;
    loop {
        queue.dispatch_pending(&mut c)?;
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        c.present(&qh)?;
        c.apply_cursor(&qh);
        queue.flush()?;
        let Some(guard) = queue.prepare_read() else { continue };
        let ready =
            wait(&[guard.connection_fd().as_raw_fd(), shared.wake.as_raw_fd()], None).map_err(ClientError::Poll)?;
        if ready[0] {
            match guard.read() {
                Ok(_) => {}
                Err(wayland_client::backend::WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            drop(guard);
        }
        if ready[1] {
            let _ = shared.wake.read();
        }
    }
}

/// Two wl_shm buffers of one size in one pool, for one guest mode. The
/// buffers are the window's size; the guest's image sits at their top-left,
/// cropped or padded with black while the guest catches up with a resize.
struct Pool {
    file: ShmFile,
    pool: wl_shm_pool::WlShmPool,
    width: u32,
    height: u32,
    mode: (u32, u32),
    buffers: Vec<Buf>,
}

struct Buf {
    buffer: wl_buffer::WlBuffer,
    busy: Arc<AtomicBool>,
    /// Damage this buffer has not received yet.
    stale: Damage,
}

impl Pool {
    fn new(
        shm: &wl_shm::WlShm,
        (width, height): (u32, u32),
        mode: (u32, u32),
        qh: &QueueHandle<Client>,
    ) -> Result<Pool, ClientError> {
        let size = width as usize * height as usize * 4;
        let file = ShmFile::new(size * 2).map_err(|e| ClientError::Shm(width, height, e))?;
        let pool = shm.create_pool(file.fd(), (size * 2) as i32, qh, ());
        let buffers = (0..2)
            .map(|i| {
                let busy = Arc::new(AtomicBool::new(false));
                let buffer = pool.create_buffer(
                    (i * size) as i32,
                    width as i32,
                    height as i32,
                    (width * 4) as i32,
                    wl_shm::Format::Xrgb8888,
                    qh,
                    busy.clone(),
                );
                Buf { buffer, busy, stale: Damage::full(width, height) }
            })
            .collect();
        Ok(Pool { file, pool, width, height, mode, buffers })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for b in &self.buffers {
            b.buffer.destroy();
        }
        self.pool.destroy();
    }
}

/// A cursor image's buffer, kept while it is the cursor.
struct CursorBuffer {
    _file: ShmFile,
    pool: wl_shm_pool::WlShmPool,
    buffer: wl_buffer::WlBuffer,
}

impl Drop for CursorBuffer {
    fn drop(&mut self) {
        self.buffer.destroy();
        self.pool.destroy();
    }
}

struct Client {
    shared: Arc<Shared>,
    events: Arc<dyn Events>,
    shm: wl_shm::WlShm,
    surface: wl_surface::WlSurface,
    xdg: xdg_surface::XdgSurface,
    toplevel: xdg_toplevel::XdgToplevel,
    cursor_surface: wl_surface::WlSurface,
    _seat: Option<wl_seat::WlSeat>,
    /// The first configure was acked: buffers may be attached.
    configured: bool,
    pending_size: Option<(u32, u32)>,
    /// The window's size as the compositor last configured it.
    configured_size: Option<(u32, u32)>,
    /// The size last asked of the guest.
    requested: Option<(u32, u32)>,
    closed: bool,
    pool: Option<Pool>,
    /// A committed frame waiting for its callback, with its flushes' times.
    in_flight: Option<Vec<Instant>>,
    attached: bool,
    /// The size of the image last committed.
    shown: Option<(u32, u32)>,
    keyboard: Option<wl_keyboard::WlKeyboard>,
    pointer: Option<wl_pointer::WlPointer>,
    pressed: BTreeSet<u32>,
    pointer_serial: Option<u32>,
    /// The guest's cursor: `None` until it sets one.
    cursor_image: Option<Option<Cursor>>,
    cursor_dirty: bool,
    cursor_buffer: Option<CursorBuffer>,
    wheel: f64,
}

impl Client {
    /// Commits the pending damage if no frame is in flight and a buffer is free.
    fn present(&mut self, qh: &QueueHandle<Client>) -> Result<(), ClientError> {
        if !self.configured || self.closed || self.in_flight.is_some() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let mut f = shared.frame.lock().expect("presenter frame lock");
        let Some((w, h)) = f.mode else {
            if self.attached {
                self.surface.attach(None, 0, 0);
                self.surface.commit();
                self.attached = false;
                self.shown = None;
            }
            f.damage.clear();
            f.flushed_at.clear();
            return Ok(());
        };
        if f.damage.is_empty() {
            return Ok(());
        }
        // The window's size once the compositor chose one, else the guest's.
        let (bw, bh) = self.configured_size.unwrap_or((w, h));
        let fresh = self.pool.as_ref().map(|p| (p.width, p.height, p.mode)) != Some((bw, bh, (w, h)));
        if fresh {
            self.pool = None;
            self.pool = Some(Pool::new(&self.shm, (bw, bh), (w, h), qh)?);
        }
        let pool = self.pool.as_mut().expect("just made");
        let Some(i) = pool.buffers.iter().position(|b| !b.busy.load(Ordering::Acquire)) else {
            return Ok(()); // both with the compositor: a release wakes us
        };
        let new = f.damage.take();
        for b in &mut pool.buffers {
            b.stale.extend(&new);
        }
        let size = bw as usize * bh as usize * 4;
        let bytes = {
            let dst = &mut pool.file.bytes_mut()[i * size..(i + 1) * size];
            copy_damage(&f.image, w, dst, bw, &pool.buffers[i].stale)
        };
        pool.buffers[i].stale.clear();
        let flushed = std::mem::take(&mut f.flushed_at);
        drop(f);
        self.xdg.set_window_geometry(0, 0, bw as i32, bh as i32);
        let buf = &pool.buffers[i];
        self.surface.attach(Some(&buf.buffer), 0, 0);
        let new = if fresh { Damage::full(bw, bh) } else { new };
        for r in new.rects().iter().filter_map(|r| r.clip(bw, bh)) {
            self.surface.damage_buffer(r.x as i32, r.y as i32, r.width as i32, r.height as i32);
        }
        self.surface.frame(qh, ());
        self.surface.commit();
        buf.busy.store(true, Ordering::Release);
        self.attached = true;
        self.shown = Some((w, h));
        self.in_flight = Some(flushed);
        let mut s = shared.stats.lock().expect("presenter stats lock");
        s.stats.frames += 1;
        s.stats.bytes_copied += bytes;
        s.stats.last_frame_bytes = bytes;
        Ok(())
    }

    /// Makes the guest's cursor image the pointer's cursor.
    fn apply_cursor(&mut self, qh: &QueueHandle<Client>) {
        if let Some(c) = self.shared.frame.lock().expect("presenter frame lock").cursor.take() {
            self.cursor_image = Some(c);
            self.cursor_dirty = true;
        }
        let (Some(pointer), Some(serial)) = (self.pointer.as_ref(), self.pointer_serial) else { return };
        if !self.cursor_dirty {
            return;
        }
        self.cursor_dirty = false;
        match &self.cursor_image {
            None => {} // the guest set none yet: the host's arrow stays
            Some(None) => pointer.set_cursor(serial, None, 0, 0),
            Some(Some(c)) => {
                let len = c.argb.len();
                let Ok(mut file) = ShmFile::new(len) else {
                    tracing::warn!("presenter: no memory for a {}x{} cursor", c.width, c.height);
                    return;
                };
                file.bytes_mut().copy_from_slice(&c.argb);
                let pool = self.shm.create_pool(file.fd(), len as i32, qh, ());
                let buffer = pool.create_buffer(
                    0,
                    c.width as i32,
                    c.height as i32,
                    (c.width * 4) as i32,
                    wl_shm::Format::Argb8888,
                    qh,
                    Arc::new(AtomicBool::new(false)),
                );
                self.cursor_surface.attach(Some(&buffer), 0, 0);
                self.cursor_surface.damage_buffer(0, 0, c.width as i32, c.height as i32);
                self.cursor_surface.commit();
                pointer.set_cursor(serial, Some(&self.cursor_surface), c.hot_x as i32, c.hot_y as i32);
                self.cursor_buffer = Some(CursorBuffer { _file: file, pool, buffer });
            }
        }
    }

    /// The display size pointer positions are relative to.
    fn display_size(&self) -> Option<(u32, u32)> {
        self.shown.or(self.shared.frame.lock().expect("presenter frame lock").mode)
    }
}

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

delegate_noop!(Client: wl_compositor::WlCompositor);
delegate_noop!(Client: wl_shm_pool::WlShmPool);
delegate_noop!(Client: ignore wl_shm::WlShm);
delegate_noop!(Client: ignore wl_surface::WlSurface);

impl Dispatch<wl_buffer::WlBuffer, Arc<AtomicBool>> for Client {
    fn event(
        _: &mut Self,
        _: &wl_buffer::WlBuffer,
        event: wl_buffer::Event,
        busy: &Arc<AtomicBool>,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            busy.store(false, Ordering::Release);
        }
    }
}

impl Dispatch<wl_callback::WlCallback, ()> for Client {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            let now = Instant::now();
            let flushed = state.in_flight.take().unwrap_or_default();
            let mut s = state.shared.stats.lock().expect("presenter stats lock");
            s.stats.presented += 1;
            for t in flushed {
                s.sample(now.duration_since(t).as_secs_f64() * 1e3);
            }
        }
    }
}

impl Dispatch<xdg_wm_base::XdgWmBase, ()> for Client {
    fn event(
        _: &mut Self,
        wm: &xdg_wm_base::XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm.pong(serial);
        }
    }
}

impl Dispatch<xdg_surface::XdgSurface, ()> for Client {
    fn event(
        state: &mut Self,
        xdg: &xdg_surface::XdgSurface,
        event: xdg_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let xdg_surface::Event::Configure { serial } = event else { return };
        xdg.ack_configure(serial);
        state.configured = true;
        if let Some(size) = state.pending_size.take() {
            state.configured_size = Some(size);
            state.shared.stats.lock().expect("presenter stats lock").stats.window = Some(size);
            let mode = state.shared.frame.lock().expect("presenter frame lock").mode;
            if state.requested != Some(size) && mode != Some(size) {
                state.requested = Some(size);
                tracing::info!("presenter: window is {}x{}; asking the guest for that size", size.0, size.1);
                state.events.resize(size.0, size.1);
            }
            // The next commit has the window's size.
            let mut f = state.shared.frame.lock().expect("presenter frame lock");
            if let Some((w, h)) = f.mode {
                f.damage = Damage::full(w, h);
            }
        }
    }
}

impl Dispatch<xdg_toplevel::XdgToplevel, ()> for Client {
    fn event(
        state: &mut Self,
        _: &xdg_toplevel::XdgToplevel,
        event: xdg_toplevel::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            xdg_toplevel::Event::Configure { width, height, .. } if width > 0 && height > 0 => {
                let cap = crate::MAX_SIDE as i32;
                state.pending_size = Some((width.min(cap) as u32, height.min(cap) as u32));
            }
            xdg_toplevel::Event::Close => {
                tracing::info!("presenter: the window was closed; the VM goes on without a display");
                state.closed = true;
                state.surface.attach(None, 0, 0);
                state.surface.commit();
                state.attached = false;
                state.toplevel.destroy();
            }
            _ => {}
        }
    }
}

impl Dispatch<wl_seat::WlSeat, ()> for Client {
    fn event(
        state: &mut Self,
        seat: &wl_seat::WlSeat,
        event: wl_seat::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        let wl_seat::Event::Capabilities { capabilities: WEnum::Value(caps) } = event else { return };
        if caps.contains(wl_seat::Capability::Keyboard) && state.keyboard.is_none() {
            state.keyboard = Some(seat.get_keyboard(qh, ()));
        }
        if caps.contains(wl_seat::Capability::Pointer) && state.pointer.is_none() {
            state.pointer = Some(seat.get_pointer(qh, ()));
        }
    }
}

impl Dispatch<wl_keyboard::WlKeyboard, ()> for Client {
    fn event(
        state: &mut Self,
        _: &wl_keyboard::WlKeyboard,
        event: wl_keyboard::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            wl_keyboard::Event::Key { key, state: WEnum::Value(k), .. } => {
                let pressed = k == wl_keyboard::KeyState::Pressed;
                if pressed {
                    state.pressed.insert(key);
                } else if !state.pressed.remove(&key) {
                    return; // a release of a key pressed before we had focus
                }
                state.events.input(Input::Key { code: key, pressed });
            }
            wl_keyboard::Event::Leave { .. } => {
                for code in std::mem::take(&mut state.pressed) {
                    state.events.input(Input::Key { code, pressed: false });
                }
            }
            _ => {} // the keymap fd closes when dropped; the guest keeps its own modifiers
        }
    }
}

impl Dispatch<wl_pointer::WlPointer, ()> for Client {
    fn event(
        state: &mut Self,
        _: &wl_pointer::WlPointer,
        event: wl_pointer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let motion = |state: &Self, x: f64, y: f64| {
            if let Some((width, height)) = state.display_size() {
                state.events.input(Input::Motion { x, y, width, height });
            }
        };
        match event {
            wl_pointer::Event::Enter { serial, surface, surface_x, surface_y } if surface == state.surface => {
                state.pointer_serial = Some(serial);
                state.cursor_dirty = true;
                motion(state, surface_x, surface_y);
            }
            wl_pointer::Event::Leave { .. } => state.pointer_serial = None,
            wl_pointer::Event::Motion { surface_x, surface_y, .. } => motion(state, surface_x, surface_y),
            wl_pointer::Event::Button { button, state: WEnum::Value(b), .. } => {
                let pressed = b == wl_pointer::ButtonState::Pressed;
                state.events.input(Input::Button { code: button, pressed });
            }
            wl_pointer::Event::Axis { axis: WEnum::Value(wl_pointer::Axis::VerticalScroll), value, .. } => {
                state.wheel += value;
                let clicks = (state.wheel / WHEEL_CLICK).trunc();
                if clicks != 0.0 {
                    state.wheel -= clicks * WHEEL_CLICK;
                    // Wayland's positive is down; REL_WHEEL's is up.
                    state.events.input(Input::Wheel { clicks: -(clicks as i32) });
                }
            }
            _ => {}
        }
    }
}
