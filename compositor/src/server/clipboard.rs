//! The clipboard, mediated by the host: selections are copied in and
//! offered as compositor-owned selections, every read checked by policy.
//!
//! Design note: Smithay would hand a client's selection straight to any
//! focused client, and only tells the compositor about reads of a selection
//! the compositor itself set (`SelectionHandler::send_selection`). So when a
//! client sets the clipboard (`new_selection`), its origin (from the client
//! data of the focused client, the only one Smithay lets set it) becomes the
//! owner and the compositor reads the contents in, every offered mime type
//! through a socket pair (`request_data_device_client_selection`), bounded by
//! [`MAX_MIMES`], [`MAX_CLIP_BYTES`] and [`CAPTURE_TIMEOUT`]; the pipes are
//! calloop sources, so a slow owner never blocks the compositor. Meanwhile
//! only clients of the owner's origin get the raw selection (other origins'
//! clients get no data-device focus). Once read, the selection is replaced
//! by a compositor-owned one with the same mime types (the owner's source is
//! cancelled: the host holds the data now). On every keyboard focus change
//! the selection is offered again to the newly focused client, tagged with
//! that client's origin as the reader, and only if
//! [`crate::clipboard::may_offer`] allows it; each read is then judged by
//! [`crate::clipboard::may_read`] with the focus and the last key or button
//! press at that moment. A refused read gets its fd closed at once (the
//! reader sees an empty transfer, never a hang) and an info log line names
//! the VM and the reason. Allowed reads are written by a short-lived thread
//! (at most [`MAX_WRITERS`] at once), so a reader that does not drain its
//! pipe cannot stall the compositor. A VM's selection goes with the VM.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::io::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::timer::{TimeoutAction, Timer};
use smithay::reexports::calloop::{Interest, Mode as LoopMode, PostAction, RegistrationToken};
use smithay::reexports::wayland_server::protocol::wl_surface::WlSurface;
use smithay::reexports::wayland_server::{Client, Resource};
use smithay::wayland::selection::data_device::{
    clear_data_device_selection, request_data_device_client_selection, set_data_device_focus, set_data_device_selection,
};
use smithay::wayland::selection::SelectionSource;

use super::{ClientState, State};
use crate::clipboard::{may_offer, may_read, PasteContext};
use crate::window::WindowId;

/// Errors of copying a selection in.
#[derive(Debug, thiserror::Error)]
pub enum ClipboardServerError {
    #[error("cannot create a socket pair: {0}")]
    Pipe(std::io::Error),
    #[error("the owner cannot send {mime:?}: {reason}")]
    Request { mime: String, reason: String },
    #[error("event loop: {0}")]
    Loop(String),
}

/// Most mime types of one selection kept.
pub const MAX_MIMES: usize = 16;
/// Longest mime type name kept.
pub const MAX_MIME_LEN: usize = 256;
/// Most bytes of one selection, all mime types together.
pub const MAX_CLIP_BYTES: usize = 16 << 20;
/// Longest the owner may take to send its selection.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(3);
/// Most reads served at once.
pub const MAX_WRITERS: usize = 8;

/// What an offer was made for: the reader's origin (`None`: the host) and
/// which selection (Smithay's `SelectionUserData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipOffer {
    reader: Option<String>,
    generation: u64,
}

/// A selection held by the compositor.
struct Clip {
    owner: Option<String>,
    mimes: Vec<String>,
    data: HashMap<String, Arc<Vec<u8>>>,
}

/// A selection being read in from its owner.
struct Capture {
    owner: Option<String>,
    mimes: Vec<String>,
    data: HashMap<String, Vec<u8>>,
    /// Mime types still being read.
    reading: usize,
    /// Mime types read to the end.
    done: Vec<String>,
    bytes: usize,
    sources: Vec<RegistrationToken>,
}

/// The clipboard's state.
#[derive(Default)]
pub struct Clipboard {
    /// Bumped at every new selection; offers and reads of older ones are stale.
    generation: u64,
    clip: Option<Clip>,
    capture: Option<Capture>,
    /// The last key or button press delivered to a window.
    last_press: Option<(WindowId, Instant)>,
    writers: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Clipboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clipboard")
            .field("generation", &self.generation)
            .field("owner", &self.clip.as_ref().map(|c| c.owner.clone()))
            .field("capturing", &self.capture.is_some())
            .finish()
    }
}

/// Keeps the mime types worth reading: at most [`MAX_MIMES`], none longer
/// than [`MAX_MIME_LEN`] or with control characters, no duplicates.
pub fn keep_mimes(offered: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in offered {
        if m.is_empty() || m.len() > MAX_MIME_LEN || m.chars().any(char::is_control) || out.contains(&m) {
            continue;
        }
        out.push(m);
        if out.len() == MAX_MIMES {
            break;
        }
    }
    out
}

fn vm_label(p: &Option<String>) -> &str {
    p.as_deref().unwrap_or("host")
}

impl State {
    fn client_vm(&self, client: &Client) -> Option<Option<String>> {
        client.get_data::<ClientState>().map(|c| c.origin.vm_name().map(str::to_string))
    }

    fn keyboard_client(&self) -> Option<Client> {
        let surface = self.seat.get_keyboard()?.current_focus()?;
        self.display_handle.get_client(surface.id()).ok()
    }

    /// Records a key or button press delivered to a window.
    pub(crate) fn note_press(&mut self, id: WindowId) {
        self.clipboard.last_press = Some((id, Instant::now()));
    }

    /// A client set (or cleared) the clipboard.
    pub(crate) fn clipboard_new_selection(&mut self, source: Option<SelectionSource>) {
        self.cancel_capture();
        self.clipboard.generation += 1;
        self.clipboard.clip = None;
        let Some(source) = source else { return };
        // Smithay lets only the client with keyboard focus set it.
        let Some(owner) = self.keyboard_client().and_then(|c| self.client_vm(&c)) else {
            tracing::debug!("selection without a focused client; ignored");
            return;
        };
        let mimes = keep_mimes(source.mime_types());
        if mimes.is_empty() {
            return;
        }
        tracing::debug!(owner = vm_label(&owner), ?mimes, "new selection; reading it in");
        let generation = self.clipboard.generation;
        self.clipboard.capture = Some(Capture {
            owner,
            mimes,
            data: HashMap::new(),
            reading: 0,
            done: Vec::new(),
            bytes: 0,
            sources: Vec::new(),
        });
        // Smithay stores the selection after this handler returns: read it then.
        self.loop_handle.insert_idle(move |state| {
            if let Err(e) = state.start_capture(generation) {
                tracing::warn!(error = %e, "cannot read the new selection in; dropping it");
                state.drop_raw_selection(generation);
            }
        });
    }

    fn start_capture(&mut self, generation: u64) -> Result<(), ClipboardServerError> {
        if self.clipboard.generation != generation || self.clipboard.capture.is_none() {
            return Ok(());
        }
        let mimes = self.clipboard.capture.as_ref().map(|c| c.mimes.clone()).unwrap_or_default();
        for mime in mimes {
            // A socket pair serves as the pipe (the owner only write()s to it).
            let (reader, writer) = UnixStream::pair().map_err(ClipboardServerError::Pipe)?;
            reader.set_nonblocking(true).map_err(ClipboardServerError::Pipe)?;
            request_data_device_client_selection(&self.seat, mime.clone(), OwnedFd::from(writer))
                .map_err(|e| ClipboardServerError::Request { mime: mime.clone(), reason: e.to_string() })?;
            let m = mime.clone();
            let token = self
                .loop_handle
                .insert_source(Generic::new(reader, Interest::READ, LoopMode::Level), move |_, reader, state| {
                    Ok(state.capture_read(generation, &m, reader))
                })
                .map_err(|e| ClipboardServerError::Loop(e.to_string()))?;
            if let Some(c) = self.clipboard.capture.as_mut() {
                c.reading += 1;
                c.sources.push(token);
            }
        }
        let timer = self
            .loop_handle
            .insert_source(Timer::from_duration(CAPTURE_TIMEOUT), move |_, _, state| {
                if state.clipboard.generation == generation && state.clipboard.capture.is_some() {
                    tracing::info!(timeout = ?CAPTURE_TIMEOUT, "the selection's owner did not send it in time");
                    state.finish_capture(generation);
                }
                TimeoutAction::Drop
            })
            .map_err(|e| ClipboardServerError::Loop(e.to_string()))?;
        if let Some(c) = self.clipboard.capture.as_mut() {
            c.sources.push(timer);
        }
        Ok(())
    }

    /// Reads what the owner wrote for `mime`; one read per readiness.
    fn capture_read(&mut self, generation: u64, mime: &str, reader: &UnixStream) -> PostAction {
        if self.clipboard.generation != generation {
            return PostAction::Remove;
        }
        let Some(c) = self.clipboard.capture.as_mut() else { return PostAction::Remove };
        let mut buf = [0u8; 64 * 1024];
        let mut r = reader;
        let done = match r.read(&mut buf) {
            Ok(0) => {
                c.done.push(mime.to_string());
                true
            }
            Ok(n) => {
                c.bytes += n;
                if c.bytes > MAX_CLIP_BYTES {
                    tracing::info!(mime, max = MAX_CLIP_BYTES, "selection too large; this type dropped");
                    c.data.remove(mime);
                    c.mimes.retain(|m| m != mime);
                    true
                } else {
                    c.data.entry(mime.to_string()).or_default().extend_from_slice(&buf[..n]);
                    false
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => false,
            Err(e) => {
                tracing::debug!(mime, error = %e, "reading the selection failed; this type dropped");
                c.data.remove(mime);
                c.mimes.retain(|m| m != mime);
                true
            }
        };
        if !done {
            return PostAction::Continue;
        }
        c.reading = c.reading.saturating_sub(1);
        if c.reading == 0 {
            self.finish_capture(generation);
        }
        PostAction::Remove
    }

    fn cancel_capture(&mut self) {
        if let Some(c) = self.clipboard.capture.take() {
            for t in c.sources {
                self.loop_handle.remove(t);
            }
        }
    }

    /// The owner's raw selection is still the seat's: clear it (it must
    /// never reach another origin unchecked).
    fn drop_raw_selection(&mut self, generation: u64) {
        if self.clipboard.generation == generation {
            self.cancel_capture();
            clear_data_device_selection(&self.display_handle, &self.seat);
            self.clipboard_offer();
        }
    }

    /// Ends a capture (complete, or timed out: only finished types are
    /// kept) and puts the compositor's selection in place of the owner's.
    fn finish_capture(&mut self, generation: u64) {
        if self.clipboard.generation != generation {
            return;
        }
        let Some(c) = self.clipboard.capture.take() else { return };
        for t in &c.sources {
            self.loop_handle.remove(*t);
        }
        // Only types read to the end (a type still being read when the
        // timer fired may be partial).
        let mut data = HashMap::new();
        let mut mimes = Vec::new();
        let mut read = c.data;
        for m in c.mimes.into_iter().filter(|m| c.done.contains(m)) {
            data.insert(m.clone(), Arc::new(read.remove(&m).unwrap_or_default()));
            mimes.push(m);
        }
        if mimes.is_empty() {
            tracing::info!(owner = vm_label(&c.owner), "selection could not be read in; cleared");
            clear_data_device_selection(&self.display_handle, &self.seat);
        } else {
            let bytes: usize = data.values().map(|d| d.len()).sum();
            tracing::debug!(owner = vm_label(&c.owner), ?mimes, bytes, "selection held by the host");
            self.clipboard.clip = Some(Clip { owner: c.owner, mimes, data });
        }
        self.clipboard_offer();
    }

    /// Offers the clipboard to the keyboard-focused client as policy allows.
    pub(crate) fn clipboard_offer(&mut self) {
        let client = self.keyboard_client();
        self.clipboard_offer_to(client);
    }

    /// Keyboard focus moved to `surface`.
    pub(crate) fn clipboard_focus(&mut self, surface: Option<&WlSurface>) {
        let client = surface.and_then(|s| self.display_handle.get_client(s.id()).ok());
        self.clipboard_offer_to(client);
    }

    fn clipboard_offer_to(&mut self, client: Option<Client>) {
        let dh = self.display_handle.clone();
        let reader = client.as_ref().and_then(|c| self.client_vm(c));
        if let Some(c) = &self.clipboard.capture {
            // The owner's raw selection: its own origin only.
            let same = reader.as_ref() == Some(&c.owner);
            set_data_device_focus(&dh, &self.seat, if same { client } else { None });
            return;
        }
        let Some(clip) = &self.clipboard.clip else {
            set_data_device_focus(&dh, &self.seat, client);
            return;
        };
        let Some(reader) = reader else {
            set_data_device_focus(&dh, &self.seat, None);
            return;
        };
        // Offer with no client focused, then focus: the offer reaches only
        // the client it was tagged for.
        set_data_device_focus(&dh, &self.seat, None);
        match may_offer(self.shell.registry(), clip.owner.as_deref(), reader.as_deref()) {
            Ok(()) => {
                let offer = ClipOffer { reader, generation: self.clipboard.generation };
                set_data_device_selection(&dh, &self.seat, clip.mimes.clone(), offer);
            }
            Err(e) => {
                tracing::debug!(reader = vm_label(&reader), reason = %e, "selection not offered");
                clear_data_device_selection(&dh, &self.seat);
            }
        }
        set_data_device_focus(&dh, &self.seat, client);
    }

    /// A client read the compositor's selection.
    pub(crate) fn clipboard_send(&mut self, mime: String, fd: OwnedFd, offer: &ClipOffer) {
        let Some(clip) = self.clipboard.clip.as_ref().filter(|_| offer.generation == self.clipboard.generation) else {
            tracing::debug!(reader = vm_label(&offer.reader), "read of a replaced selection; closed");
            return;
        };
        let focused = self.shell.focused();
        let focused_origin = focused.and_then(|id| self.shell.window(id)).map(|w| w.origin.vm_name());
        let since_press_ms = match (self.clipboard.last_press, focused) {
            (Some((id, at)), Some(f)) if id == f => Some(at.elapsed().as_millis() as u64),
            _ => None,
        };
        let ctx = PasteContext { focused: focused_origin, since_press_ms };
        if let Err(e) = may_read(self.shell.registry(), clip.owner.as_deref(), offer.reader.as_deref(), ctx) {
            tracing::info!(
                vm = e.vm(),
                reader = vm_label(&offer.reader),
                owner = vm_label(&clip.owner),
                reason = %e,
                "clipboard read refused"
            );
            return;
        }
        let Some(data) = clip.data.get(&mime).cloned() else { return };
        let writers = self.clipboard.writers.clone();
        if writers.fetch_add(1, Ordering::SeqCst) >= MAX_WRITERS {
            writers.fetch_sub(1, Ordering::SeqCst);
            tracing::info!(reader = vm_label(&offer.reader), "too many clipboard reads at once; closed");
            return;
        }
        tracing::debug!(
            reader = vm_label(&offer.reader),
            owner = vm_label(&clip.owner),
            mime,
            bytes = data.len(),
            "clipboard read"
        );
        let spawned = std::thread::Builder::new().name("rayos-clipboard".into()).spawn(move || {
            let mut f = std::fs::File::from(fd);
            if let Err(e) = f.write_all(&data) {
                tracing::debug!(error = %e, "clipboard reader went away");
            }
            writers.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            self.clipboard.writers.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "cannot serve a clipboard read");
        }
    }

    /// A VM went away: its selection goes too.
    pub(crate) fn clipboard_vm_gone(&mut self, name: &str) {
        let owned = |o: &Option<String>| o.as_deref() == Some(name);
        let capture = self.clipboard.capture.as_ref().is_some_and(|c| owned(&c.owner));
        if capture || self.clipboard.clip.as_ref().is_some_and(|c| owned(&c.owner)) {
            self.cancel_capture();
            self.clipboard.generation += 1;
            self.clipboard.clip = None;
            clear_data_device_selection(&self.display_handle, &self.seat);
            tracing::info!(vm = name, "VM unregistered; its selection cleared");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_are_bounded_and_deduplicated() {
        let many: Vec<String> = (0..40).map(|i| format!("text/x-{i}")).collect();
        assert_eq!(keep_mimes(many).len(), MAX_MIMES);
        let odd = vec![
            "text/plain".to_string(),
            "text/plain".to_string(),
            String::new(),
            "a\nb".to_string(),
            "x".repeat(MAX_MIME_LEN + 1),
            "UTF8_STRING".to_string(),
        ];
        assert_eq!(keep_mimes(odd), vec!["text/plain".to_string(), "UTF8_STRING".to_string()]);
    }
}
