//! The control API server: a unix socket speaking `compositor/CONTROL-API.md`.
//!
//! Design note: the listener and every connection are calloop sources on the
//! compositor's own loop, so requests run between Wayland dispatches and see
//! a consistent shell. Bytes go through [`LineSplitter`] (bounded memory per
//! connection), each line through [`crate::control::handle`], and the
//! [`Effect`] it returns is carried out here: key and pointer injection
//! through the seat, screenshots through the backend (PNG via the `png`
//! crate, written to the path or returned in base64), `stats` and
//! `bench_render` read and time the backend's rendering, `subscribe` marks
//! the connection for the event stream. After every request the VM sockets and
//! the Smithay side are reconciled with the shell. The reply is written
//! before the events the request caused.
//!
//! Output never blocks the loop: each connection has an [`Outbox`]; what
//! the socket does not take at once waits there and a writable-watch on the
//! loop sends it later. A subscriber that leaves more than
//! [`SUBSCRIBER_BACKLOG`] unread is dropped at its next event, and any
//! connection past [`MAX_BACKLOG`] (a client that sends requests and never
//! reads the replies) is dropped, so a slow reader costs the compositor
//! memory up to that bound and no time. Only this user (and root) may
//! connect (SO_PEERCRED; see [`super::access`]), and at most
//! [`MAX_CONNECTIONS`] at once.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::{Interest, LoopHandle, Mode as LoopMode, PostAction};

use super::{render, ServerError, State};
use crate::control::{
    decode_request, encode_line, handle, ApiError, ControlError, Effect, ErrorCode, Handled, LineSplitter, Reply,
    ScreenshotTarget, ServerMessage,
};

/// Errors of the control server's I/O.
#[derive(Debug, thiserror::Error)]
pub enum ControlServerError {
    #[error("PNG encoding: {0}")]
    Png(#[from] png::EncodingError),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Bytes a subscriber may leave unread; past this it is dropped at its
/// next event (about 4000 window events).
pub const SUBSCRIBER_BACKLOG: usize = 1 << 20;
/// Bytes any connection may leave unread (a 4K screenshot reply in base64
/// fits many times over).
pub const MAX_BACKLOG: usize = 64 << 20;
/// Control connections open at once; more are refused.
pub const MAX_CONNECTIONS: usize = 64;

/// Output waiting for a connection's socket to take it.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    sent: usize,
}

impl Outbox {
    /// Bytes not yet taken by the socket.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.sent > 0 && self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Writes until the socket would block; returns whether all went out.
    pub fn flush(&mut self, w: &mut impl Write) -> std::io::Result<bool> {
        while self.sent < self.buf.len() {
            match w.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
            return Ok(true);
        }
        if self.sent > self.buf.len() / 2 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        Ok(false)
    }
}

/// Why a connection with `pending` unread bytes must be dropped rather than
/// be given `len` more (an event when `event`), if it must.
pub fn backlog_problem(pending: usize, len: usize, event: bool) -> Option<String> {
    if event && pending > SUBSCRIBER_BACKLOG {
        return Some(format!("a subscriber left {pending} bytes of events unread (limit {SUBSCRIBER_BACKLOG})"));
    }
    if pending + len > MAX_BACKLOG {
        return Some(format!("{pending} bytes unread and {len} more to send (limit {MAX_BACKLOG})"));
    }
    None
}

/// What became of a line sent to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The socket took all of it.
    Flushed,
    /// Some waits in the outbox: the connection needs a writable-watch.
    Backlog,
    /// The connection is gone (or was dropped for its backlog).
    Dropped,
}

struct Conn {
    stream: UnixStream,
    splitter: LineSplitter,
    subscribed: bool,
    out: Outbox,
    /// A writable-watch is on the loop.
    watching: bool,
}

/// The control socket and its connections.
pub struct ControlServer {
    path: PathBuf,
    conns: HashMap<u64, Conn>,
    next: u64,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer").field("path", &self.path).field("conns", &self.conns.len()).finish()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlServer {
    /// Listens on `path` (a stale socket file there is replaced).
    pub fn bind(path: &Path, handle: &LoopHandle<'static, State>) -> Result<Self, ServerError> {
        let bind_err = |source| ServerError::Bind { path: path.to_path_buf(), source };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path).map_err(bind_err)?;
            }
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        super::access::restrict_socket(path).map_err(bind_err)?;
        handle
            .insert_source(Generic::new(listener, Interest::READ, LoopMode::Level), |_, listener, state| {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => state.control_accept(stream),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "control accept failed");
                            break;
                        }
                    }
                }
                Ok(PostAction::Continue)
            })
            .map_err(|e| ServerError::Loop(e.to_string()))?;
        tracing::info!(path = %path.display(), "control API listening");
        Ok(ControlServer { path: path.to_path_buf(), conns: HashMap::new(), next: 1 })
    }

    fn drop_conn(&mut self, id: u64, why: &str) {
        if let Some(c) = self.conns.remove(&id) {
            tracing::info!(conn = id, "control connection dropped: {why}");
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Queues a line for one connection and sends what the socket takes.
    fn send(&mut self, id: u64, line: &str, event: bool) -> Sent {
        let Some(conn) = self.conns.get_mut(&id) else { return Sent::Dropped };
        if let Some(why) = backlog_problem(conn.out.pending(), line.len(), event) {
            self.drop_conn(id, &why);
            return Sent::Dropped;
        }
        conn.out.push(line.as_bytes());
        if conn.watching {
            return Sent::Backlog;
        }
        match conn.out.flush(&mut conn.stream) {
            Ok(true) => Sent::Flushed,
            Ok(false) => Sent::Backlog,
            Err(e) => {
                self.drop_conn(id, &format!("write failed: {e}"));
                Sent::Dropped
            }
        }
    }
}

impl State {
    /// Sends a line to one connection, watching it for writability when the
    /// socket did not take it all.
    fn control_send(&mut self, id: u64, line: &str, event: bool) {
        if self.control.send(id, line, event) == Sent::Backlog {
            self.control_watch(id);
        }
    }

    fn control_watch(&mut self, id: u64) {
        let Some(conn) = self.control.conns.get_mut(&id) else { return };
        if conn.watching {
            return;
        }
        let Ok(fd) = conn.stream.try_clone() else {
            self.control.drop_conn(id, "cannot watch it for writing");
            return;
        };
        let res =
            self.loop_handle.insert_source(Generic::new(fd, Interest::WRITE, LoopMode::Level), move |_, _, state| {
                Ok(if state.control_writable(id) { PostAction::Continue } else { PostAction::Remove })
            });
        match res {
            Ok(_) => conn.watching = true,
            Err(e) => self.control.drop_conn(id, &format!("cannot watch it for writing: {e}")),
        }
    }

    /// Sends more of a connection's outbox; false once it is empty or gone.
    fn control_writable(&mut self, id: u64) -> bool {
        let Some(conn) = self.control.conns.get_mut(&id) else { return false };
        match conn.out.flush(&mut conn.stream) {
            Ok(true) => {
                conn.watching = false;
                false
            }
            Ok(false) => true,
            Err(e) => {
                self.control.drop_conn(id, &format!("write failed: {e}"));
                false
            }
        }
    }

    fn control_broadcast(&mut self, events: Vec<crate::control::Event>) {
        for ev in events {
            let line = encode_line(&ServerMessage::Event(ev));
            let ids: Vec<u64> = self.control.conns.iter().filter(|(_, c)| c.subscribed).map(|(id, _)| *id).collect();
            for id in ids {
                self.control_send(id, &line, true);
            }
        }
    }

    /// Sends the shell's queued events to subscribers.
    pub(crate) fn control_flush_events(&mut self) {
        let events = self.shell.take_events();
        if !events.is_empty() {
            self.control_broadcast(events);
        }
    }
}

fn encode_png(rgba: &[u8], w: u32, h: u32) -> Result<Vec<u8>, ControlServerError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(rgba)?;
    }
    Ok(out)
}

impl State {
    fn control_accept(&mut self, stream: UnixStream) {
        let me = super::access::effective_uid();
        match super::access::peer_credentials(&stream) {
            Ok((_, uid)) if super::access::peer_allowed(uid, me) => {}
            Ok((pid, uid)) => {
                tracing::warn!(pid, uid, "control connection refused: the peer is another user (uid {uid}, this compositor runs as uid {me})");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "control connection refused: cannot read its peer credentials");
                return;
            }
        }
        if self.control.conns.len() >= MAX_CONNECTIONS {
            tracing::warn!("control connection refused: {MAX_CONNECTIONS} are open already");
            return;
        }
        if let Err(e) = stream.set_nonblocking(true) {
            tracing::warn!(error = %e, "control connection refused");
            return;
        }
        let Ok(reader) = stream.try_clone() else { return };
        let id = self.control.next;
        self.control.next += 1;
        self.control.conns.insert(
            id,
            Conn { stream, splitter: LineSplitter::new(), subscribed: false, out: Outbox::default(), watching: false },
        );
        let res = self
            .loop_handle
            .insert_source(Generic::new(reader, Interest::READ, LoopMode::Level), move |_, _, state| {
                Ok(if state.control_readable(id) { PostAction::Continue } else { PostAction::Remove })
            });
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot watch control connection");
            self.control.conns.remove(&id);
        }
        tracing::debug!(conn = id, "control connection");
    }

    /// Reads what a connection sent; returns false once it is gone.
    fn control_readable(&mut self, id: u64) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(conn) = self.control.conns.get_mut(&id) else { return false };
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    self.control.conns.remove(&id);
                    return false;
                }
                Ok(n) => {
                    let lines = conn.splitter.push(&buf[..n]);
                    for line in lines {
                        self.control_request(id, line);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.control.conns.remove(&id);
                    return false;
                }
            }
        }
    }

    fn control_request(&mut self, conn: u64, line: Result<Vec<u8>, ControlError>) {
        let mut handled = match line.and_then(|l| decode_request(&l)) {
            Ok(req) => {
                tracing::debug!(conn, ?req, "control request");
                self.shell.set_now_ms(self.elapsed_ms());
                handle(&mut self.shell, req)
            }
            Err(e) => Handled { reply: Some(ServerMessage::Error(e.into())), events: Vec::new(), effect: None },
        };
        if let Err(e) = self.sync_vm_sockets() {
            // A VM whose socket cannot be created is not registered.
            let orphans: Vec<String> = self
                .shell
                .registry()
                .vms()
                .filter(|v| !self.vm_sockets.contains_key(&v.name))
                .map(|v| v.name.clone())
                .collect();
            for name in orphans {
                let _ = self.shell.unregister_vm(&name);
            }
            handled.reply = Some(ServerMessage::Error(ApiError::new(ErrorCode::Internal, e.to_string())));
        }
        self.reconcile();
        if handled.events.iter().any(|e| matches!(e, crate::shell::ShellEvent::VmPolicyChanged { .. })) {
            // A clipboard policy may have changed what the focused client sees.
            self.clipboard_offer();
        }
        let internal =
            |e: &dyn std::fmt::Display| ServerMessage::Error(ApiError::new(ErrorCode::Internal, e.to_string()));
        match handled.effect.take() {
            Some(Effect::Key { target, keysyms, text, action }) => {
                if let Err(e) = self.inject_keys(target, keysyms, text, action) {
                    handled.reply = Some(internal(&e));
                }
            }
            Some(Effect::Pointer { x, y, button, action }) => {
                if let Err(e) = self.inject_pointer(x, y, button, action) {
                    handled.reply = Some(internal(&e));
                }
            }
            Some(Effect::Screenshot { target, path }) => {
                handled.reply = Some(self.screenshot(target, path).into());
            }
            Some(Effect::Subscribe) => {
                if let Some(c) = self.control.conns.get_mut(&conn) {
                    c.subscribed = true;
                }
            }
            Some(Effect::Stats) => {
                let st = self.offscreen.stats();
                let samples: Vec<u64> = self.offscreen.render_times().iter().map(|t| t.as_micros() as u64).collect();
                handled.reply =
                    Some(ServerMessage::Ok(Reply::stats(st.repaints, st.idle_frames, st.damaged_px, &samples)));
            }
            Some(Effect::BenchRender { frames, damage }) => {
                handled.reply = Some(match render::bench_output(self, frames, damage) {
                    Ok((times, px)) => {
                        tracing::info!(frames, ?damage, damaged_px = px, "render benchmark");
                        ServerMessage::Ok(Reply::bench(px, &times))
                    }
                    Err(e) => internal(&e),
                });
            }
            None => {}
        }
        if let Some(reply) = handled.reply {
            self.control_send(conn, &encode_line(&reply), false);
        }
        let mut events = handled.events;
        events.extend(self.shell.take_events());
        self.control_broadcast(events);
    }

    fn screenshot(&mut self, target: ScreenshotTarget, path: Option<String>) -> Result<Reply, ApiError> {
        let internal = |e: &dyn std::fmt::Display| ApiError::new(ErrorCode::Internal, e.to_string());
        let (rgba, w, h) = match target {
            ScreenshotTarget::Output(Some(name)) if name != self.offscreen.output().name() => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("screenshot: no output named {name:?} (there is {:?})", self.offscreen.output().name()),
                ));
            }
            ScreenshotTarget::Output(_) => render::capture_output(self).map_err(|e| internal(&e))?,
            ScreenshotTarget::Window(id) => render::capture_window(self, id).map_err(|e| internal(&e))?,
        };
        let png = encode_png(&rgba, w, h).map_err(|e| internal(&e))?;
        match path {
            Some(p) => {
                std::fs::write(&p, &png)
                    .map_err(|source| ControlServerError::Write { path: p.clone(), source })
                    .map_err(|e| internal(&e))?;
                Ok(Reply::Screenshot { width: w, height: h, path: Some(p), png_base64: None })
            }
            None => Ok(Reply::Screenshot {
                width: w,
                height: h,
                path: None,
                png_base64: Some(base64::engine::general_purpose::STANDARD.encode(&png)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` bytes and then would block.
    struct Slow {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room).min(3);
            self.room -= n;
            self.taken.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_outbox_keeps_what_the_socket_did_not_take_in_order() {
        let mut out = Outbox::default();
        let mut sock = Slow { taken: Vec::new(), room: 5 };
        out.push(b"hello\n");
        out.push(b"world\n");
        assert!(!out.flush(&mut sock).unwrap());
        assert_eq!(out.pending(), 7);
        sock.room = 100;
        out.push(b"!\n");
        assert!(out.flush(&mut sock).unwrap());
        assert_eq!(out.pending(), 0);
        assert_eq!(sock.taken, b"hello\nworld\n!\n");
    }

    #[test]
    fn slow_subscribers_and_unread_replies_are_bounded() {
        assert_eq!(backlog_problem(0, 100, true), None);
        assert_eq!(backlog_problem(SUBSCRIBER_BACKLOG, 100, true), None);
        assert!(backlog_problem(SUBSCRIBER_BACKLOG + 1, 100, true).unwrap().contains("subscriber"));
        // A reply may wait behind more than an event may.
        assert_eq!(backlog_problem(SUBSCRIBER_BACKLOG + 1, 100, false), None);
        assert!(backlog_problem(MAX_BACKLOG - 10, 100, false).is_some());
    }
}
