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
//! before the events the request caused. Writes block for at most
//! [`WRITE_TIMEOUT`]; a connection that cannot take its output is dropped
//! rather than stall the compositor.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::{Interest, LoopHandle, Mode as LoopMode, PostAction};

use super::{render, ServerError, State};
use crate::control::{
    decode_request, encode_line, handle, ApiError, ControlError, Effect, ErrorCode, Handled, LineSplitter, Reply,
    ScreenshotTarget, ServerMessage,
};
use crate::shell::Shell;

/// Errors of the control server's I/O.
#[derive(Debug, thiserror::Error)]
pub enum ControlServerError {
    #[error("PNG encoding: {0}")]
    Png(#[from] png::EncodingError),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Longest a write to one control connection may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    stream: UnixStream,
    splitter: LineSplitter,
    subscribed: bool,
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

    /// Writes a line to one connection; drops it if that fails.
    fn write(&mut self, id: u64, line: &str) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let ok = conn.stream.set_nonblocking(false).is_ok()
            && conn.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok()
            && conn.stream.write_all(line.as_bytes()).is_ok()
            && conn.stream.set_nonblocking(true).is_ok();
        if !ok {
            tracing::info!(conn = id, "control connection dropped (write failed)");
            if let Some(c) = self.conns.remove(&id) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn broadcast(&mut self, events: Vec<crate::control::Event>) {
        for ev in events {
            let line = encode_line(&ServerMessage::Event(ev));
            let ids: Vec<u64> = self.conns.iter().filter(|(_, c)| c.subscribed).map(|(id, _)| *id).collect();
            for id in ids {
                self.write(id, &line);
            }
        }
    }

    /// Sends the shell's queued events to subscribers.
    pub fn flush_events(&mut self, shell: &mut Shell) {
        let events = shell.take_events();
        if !events.is_empty() {
            self.broadcast(events);
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
        if let Err(e) = stream.set_nonblocking(true) {
            tracing::warn!(error = %e, "control connection refused");
            return;
        }
        let Ok(reader) = stream.try_clone() else { return };
        let id = self.control.next;
        self.control.next += 1;
        self.control.conns.insert(id, Conn { stream, splitter: LineSplitter::new(), subscribed: false });
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
            self.control.write(conn, &encode_line(&reply));
        }
        let mut events = handled.events;
        events.extend(self.shell.take_events());
        self.control.broadcast(events);
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
