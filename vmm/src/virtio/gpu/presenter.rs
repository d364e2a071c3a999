//! The embedded desktop: the device's [`Scanout`] shown by rayos-presenter
//! as one window on the RayOS compositor (`--gpu wayland=SOCKET`), and that
//! window's input fed to the VM's virtio keyboard and tablet
//! ([`GuestInput`]). A window resize asks the device for the new display
//! size, which raises the guest's display-change event.

use std::sync::OnceLock;

use rayos_presenter::{Cursor, Events, Input, Presenter, Rect as PresenterRect, Source};

use super::protocol::Rect;
use super::scanout::{CursorImage, Frame, Scanout};
use crate::virtio::input::{InputEvent, InputHandle, TabletMapper};

impl Scanout for Presenter {
    fn set_mode(&mut self, mode: Option<(u32, u32)>) {
        Presenter::set_mode(self, mode);
    }

    fn flush(&mut self, frame: &Frame<'_>, damage: Rect) {
        let format = frame.format;
        let convert = move |px: &[u8]| {
            let [b, g, r, _] = format.to_argb8888(px);
            [b, g, r, 0xff]
        };
        let source = Source {
            width: frame.width,
            height: frame.height,
            pixels: frame.pixels,
            convert: if format.is_wl_shm_native() { None } else { Some(&convert) },
        };
        Presenter::flush(self, &source, PresenterRect::new(damage.x, damage.y, damage.width, damage.height));
    }

    fn cursor(&mut self, image: Option<Option<CursorImage>>, _x: u32, _y: u32) {
        // Only image changes matter: the cursor is the host pointer's, so
        // it is where the pointer is.
        if let Some(image) = image {
            Presenter::cursor(
                self,
                image.map(|c| Cursor {
                    width: c.width,
                    height: c.height,
                    hot_x: c.hot_x,
                    hot_y: c.hot_y,
                    argb: c.argb,
                }),
            );
        }
    }

    fn metrics(&self) -> Option<rayos_vmm_api::PresenterMetrics> {
        let s = self.stats();
        Some(rayos_vmm_api::PresenterMetrics {
            connected: s.connected,
            reconnects: s.reconnects,
            flushes: s.flushes,
            frames: s.frames,
            presented: s.presented,
            bytes_copied: s.bytes_copied,
            last_frame_bytes: s.last_frame_bytes,
            window: s.window,
            flush_to_present_ms_p50: s.flush_to_present_ms_p50,
            flush_to_present_ms_p95: s.flush_to_present_ms_p95,
        })
    }
}

/// Resizes the guest's display (the device's [`super::DisplayHandle`]).
pub type ResizeFn = Box<dyn Fn(u32, u32) + Send + Sync>;

/// The window's input and size, delivered to the VM.
pub struct GuestInput {
    keyboard: InputHandle,
    tablet: InputHandle,
    /// Set once the device exists (the presenter starts before it).
    resize: OnceLock<ResizeFn>,
}

impl GuestInput {
    pub fn new(keyboard: InputHandle, tablet: InputHandle) -> GuestInput {
        GuestInput { keyboard, tablet, resize: OnceLock::new() }
    }

    /// Where resizes go; the first call wins.
    pub fn set_resize(&self, f: ResizeFn) {
        let _ = self.resize.set(f);
    }

    /// The evdev events `input` becomes: for the keyboard or the tablet.
    pub fn events(input: Input) -> (bool, Vec<InputEvent>) {
        match input {
            Input::Key { code, pressed } => (true, InputEvent::key(code, pressed).map(Vec::from).unwrap_or_default()),
            Input::Motion { x, y, width, height } => (false, TabletMapper { width, height }.motion(x, y).to_vec()),
            Input::Button { code, pressed } => {
                (false, TabletMapper { width: 1, height: 1 }.button(code, pressed).map(Vec::from).unwrap_or_default())
            }
            Input::Wheel { clicks } => {
                (false, TabletMapper { width: 1, height: 1 }.wheel(clicks).map(Vec::from).unwrap_or_default())
            }
        }
    }
}

impl Events for GuestInput {
    fn resize(&self, width: u32, height: u32) {
        let (w, h) = (
            width.clamp(*crate::cli::GPU_SIDE.start(), *crate::cli::GPU_SIDE.end()),
            height.clamp(*crate::cli::GPU_SIDE.start(), *crate::cli::GPU_SIDE.end()),
        );
        match self.resize.get() {
            Some(f) => f(w, h),
            None => tracing::debug!("gpu0: window resized to {w}x{h} before the device exists"),
        }
    }

    fn input(&self, input: Input) {
        tracing::debug!(?input, "gpu0: input from the window");
        let (keyboard, events) = Self::events(input);
        if events.is_empty() {
            return;
        }
        if keyboard {
            self.keyboard.send(&events);
        } else {
            self.tablet.send(&events);
        }
    }
}

/// The presenter's window for a VM's desktop socket: titled with the VM's
/// name when the socket is the compositor's `rayos-desktop-<name>`.
pub fn presenter_config(socket: &std::path::Path) -> rayos_presenter::Config {
    let file = socket.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let name = file.strip_prefix("rayos-desktop-").unwrap_or(&file);
    rayos_presenter::Config {
        socket: socket.to_path_buf(),
        title: format!("{name}: desktop"),
        app_id: "rayos.vm-desktop".into(),
        retry: std::time::Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::input::event::{ABS_MAX, BTN_LEFT, EV_ABS, EV_KEY, EV_REL, REL_WHEEL};

    #[test]
    fn window_input_becomes_evdev_reports() {
        let (kb, e) = GuestInput::events(Input::Key { code: 30, pressed: true });
        assert!(kb);
        assert_eq!((e[0].type_, e[0].code, e[0].value), (EV_KEY, 30, 1));
        let (kb, e) = GuestInput::events(Input::Motion { x: 1279.5, y: 0.0, width: 1280, height: 800 });
        assert!(!kb);
        assert_eq!((e[0].type_, e[0].value > ABS_MAX - 20), (EV_ABS, true));
        assert_eq!(e[1].value, ABS_MAX / 1600, "the first row's centre");
        let (_, e) = GuestInput::events(Input::Button { code: u32::from(BTN_LEFT), pressed: false });
        assert_eq!((e[0].type_, e[0].code, e[0].value), (EV_KEY, BTN_LEFT, 0));
        let (_, e) = GuestInput::events(Input::Wheel { clicks: -2 });
        assert_eq!((e[0].type_, e[0].code, e[0].value as i32), (EV_REL, REL_WHEEL, -2));
        // Codes the devices do not declare are dropped, not sent.
        assert!(GuestInput::events(Input::Key { code: 0x300, pressed: true }).1.is_empty());
        assert!(GuestInput::events(Input::Button { code: 0x120, pressed: true }).1.is_empty());
    }
}
