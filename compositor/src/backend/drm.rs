//! The DRM/KMS backend: the compositor's output on a real display, with
//! input from libinput and device access through libseat (the real host, on
//! metal or inside QEMU).
//!
//! Design note: like the winit backend, this backend keeps the headless
//! backend's pixman renderer and damage-tracked offscreen image (one
//! renderer for every backend, no GPU needed) and *presents* that image:
//! here into one of two KMS dumb buffers, which is then page-flipped onto
//! the CRTC. A present copies only the rectangles that changed in either of
//! the last two frames (the back buffer is one frame behind), converting
//! RGBA to XRGB8888. One flip is in flight at a time: a frame painted while
//! a flip is pending is presented at the next tick after the flip's vblank,
//! so a busy scene runs at the display's rate and an idle scene flips
//! nothing.
//!
//! Devices: libseat opens the DRM device (the seat's primary GPU from udev,
//! or `--drm-device`) and the input devices, so the compositor runs as a
//! seat user under seatd or logind, or as root with libseat's built-in seat.
//! The first connected connector gets its preferred mode on a CRTC its
//! encoders allow; the output takes the mode's size. libinput runs on the
//! seat through udev; its events become [`OutputInput`] at output
//! coordinates (relative motion is accumulated and clamped, absolute
//! devices such as tablets are mapped onto the output) and go through the
//! same paths as the control API's injection. A VT switch pauses the
//! session: no flips while paused, a full present after resuming.
//!
//! Not done: hotplug and more than one output, a hardware cursor (the
//! pointer is drawn by the server), GPU rendering (GLES) and direct scanout
//! of client buffers, mode selection from the command line.

use std::path::{Path, PathBuf};

use smithay::backend::drm::{DrmDevice, DrmDeviceFd, DrmDeviceNotifier, DrmSurface, PlaneConfig, PlaneState};
use smithay::backend::input::{
    AbsolutePositionEvent, ButtonState, InputEvent, KeyState, KeyboardKeyEvent, PointerButtonEvent, PointerMotionEvent,
};
use smithay::backend::libinput::{LibinputInputBackend, LibinputSessionInterface};
use smithay::backend::session::libseat::{LibSeatSession, LibSeatSessionNotifier};
use smithay::backend::session::Session;
use smithay::reexports::drm::buffer::{Buffer as _, DrmFourcc};
use smithay::reexports::drm::control::{
    connector, dumbbuffer::DumbBuffer, framebuffer, Device as _, Mode, ModeTypeFlags,
};
use smithay::reexports::input::Libinput;
use smithay::reexports::rustix::fs::OFlags;
use smithay::utils::{DeviceFd, Physical, Rectangle, Transform};

use super::OutputInput;
use crate::control::Button;

/// Errors of the DRM backend; each names the device or step.
#[derive(Debug, thiserror::Error)]
pub enum DrmError {
    #[error(
        "cannot start a seat session through libseat (seatd or logind running, or root for the built-in seat?): {0}"
    )]
    Session(String),
    #[error("no DRM device on seat {seat}: give --drm-device /dev/dri/cardN")]
    NoDevice { seat: String },
    #[error("cannot find the seat's GPU through udev: {0}")]
    Udev(std::io::Error),
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Device { path: PathBuf, reason: String },
    #[error("{path}: no connected connector with a mode")]
    NoConnector { path: PathBuf },
    #[error("{path}: no CRTC can drive connector {connector}")]
    NoCrtc { path: PathBuf, connector: String },
    #[error("{path}: dumb buffer {size}: {reason}")]
    Buffer { path: PathBuf, size: String, reason: String },
    #[error("libinput on seat {seat}: cannot assign the seat")]
    Input { seat: String },
    #[error("present: {0}")]
    Present(String),
}

/// One scanout buffer and its framebuffer.
struct Scanout {
    buffer: DumbBuffer,
    fb: framebuffer::Handle,
}

/// What the event loop must watch for this backend.
pub struct DrmSources {
    pub drm: DrmDeviceNotifier,
    pub session: LibSeatSessionNotifier,
    pub input: LibinputInputBackend,
}

/// The output on a DRM device.
pub struct DrmOutput {
    path: PathBuf,
    session: LibSeatSession,
    device: DrmDevice,
    surface: DrmSurface,
    scanout: [Scanout; 2],
    /// The buffer on screen (or flipping to the screen).
    front: usize,
    flip_pending: bool,
    /// The first frame is a modeset commit, later ones page flips.
    modeset_done: bool,
    /// Output rectangles the back buffer lacks (presented into the front
    /// buffer only).
    back_stale: Vec<Rectangle<i32, Physical>>,
    /// Output rectangles changed since the last present.
    frame_damage: Vec<Rectangle<i32, Physical>>,
    /// Presents still to copy the whole image (both buffers start blank).
    full_left: u8,
    /// A present was asked for while a flip was pending.
    deferred: bool,
    size: (i32, i32),
    mode_name: String,
    refresh_mhz: i32,
    connector_name: String,
    libinput: Libinput,
    pointer: (f64, f64),
    flips: u64,
}

impl std::fmt::Debug for DrmOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrmOutput")
            .field("path", &self.path)
            .field("connector", &self.connector_name)
            .field("mode", &self.mode_name)
            .finish()
    }
}

impl DrmOutput {
    /// Starts a seat session, opens `device` (or the seat's primary GPU),
    /// sets up the first connected connector and libinput on the seat.
    pub fn open(device: Option<&Path>) -> Result<(DrmOutput, DrmSources), DrmError> {
        let (mut session, session_notifier) = LibSeatSession::new().map_err(|e| DrmError::Session(e.to_string()))?;
        let seat = session.seat();
        let path = match device {
            Some(p) => p.to_path_buf(),
            None => smithay::backend::udev::primary_gpu(&seat)
                .map_err(DrmError::Udev)?
                .or_else(|| smithay::backend::udev::all_gpus(&seat).ok().and_then(|v| v.into_iter().next()))
                .ok_or_else(|| DrmError::NoDevice { seat: seat.clone() })?,
        };
        let dev_err = |reason: String| DrmError::Device { path: path.clone(), reason };
        let fd = session
            .open(&path, OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK)
            .map_err(|e| DrmError::Open { path: path.clone(), reason: e.to_string() })?;
        let fd = DrmDeviceFd::new(DeviceFd::from(fd));
        let (mut device, drm_notifier) = DrmDevice::new(fd.clone(), true).map_err(|e| dev_err(e.to_string()))?;

        let (conn, mode) = pick_connector(&fd)
            .map_err(|e| dev_err(e.to_string()))?
            .ok_or_else(|| DrmError::NoConnector { path: path.clone() })?;
        let connector_name = format!("{:?}-{}", conn.interface(), conn.interface_id());
        let crtc = pick_crtc(&fd, &conn)
            .map_err(|e| dev_err(e.to_string()))?
            .ok_or_else(|| DrmError::NoCrtc { path: path.clone(), connector: connector_name.clone() })?;
        let surface = device.create_surface(crtc, mode, &[conn.handle()]).map_err(|e| dev_err(e.to_string()))?;
        let (w, h) = mode.size();
        let scanout =
            [make_scanout(&fd, &path, (w.into(), h.into()))?, make_scanout(&fd, &path, (w.into(), h.into()))?];
        let mode_name = format!("{w}x{h}@{}", mode.vrefresh());

        let mut libinput = Libinput::new_with_udev(LibinputSessionInterface::from(session.clone()));
        libinput.udev_assign_seat(&seat).map_err(|()| DrmError::Input { seat: seat.clone() })?;
        let input = LibinputInputBackend::new(libinput.clone());
        tracing::info!(device = %path.display(), connector = %connector_name, mode = %mode_name, seat = %seat, "drm output");
        let size = (i32::from(w), i32::from(h));
        Ok((
            DrmOutput {
                path,
                session,
                device,
                surface,
                scanout,
                front: 1,
                flip_pending: false,
                modeset_done: false,
                back_stale: Vec::new(),
                frame_damage: Vec::new(),
                full_left: 2,
                deferred: false,
                size,
                mode_name,
                refresh_mhz: mode.vrefresh() as i32 * 1000,
                connector_name,
                libinput,
                pointer: (f64::from(size.0) / 2.0, f64::from(size.1) / 2.0),
                flips: 0,
            },
            DrmSources { drm: drm_notifier, session: session_notifier, input },
        ))
    }

    /// The output size (the mode's), in pixels.
    pub fn size(&self) -> (i32, i32) {
        self.size
    }

    /// Refresh rate of the mode in mHz.
    pub fn refresh_mhz(&self) -> i32 {
        self.refresh_mhz
    }

    /// Connector name, e.g. `Virtual-1`.
    pub fn connector_name(&self) -> &str {
        &self.connector_name
    }

    /// Page flips completed so far.
    pub fn flips(&self) -> u64 {
        self.flips
    }

    /// Whether a present now would have to wait for the flip in flight.
    pub fn busy(&self) -> bool {
        self.flip_pending
    }

    /// Whether a frame asked for while busy is waiting to be presented.
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// Presents the output image: `damage` (output coordinates) changed
    /// since the previous call; `read` gives the RGBA pixels of a
    /// rectangle. While a flip is in flight (or the session is paused) the
    /// damage is kept and `Ok(false)` returned: call again (with no new
    /// damage if nothing changed) once [`deferred`](Self::deferred) and not
    /// [`busy`](Self::busy).
    pub fn present(
        &mut self,
        damage: &[Rectangle<i32, Physical>],
        mut read: impl FnMut(Rectangle<i32, Physical>) -> Result<Vec<u8>, String>,
    ) -> Result<bool, DrmError> {
        let full = Rectangle::from_size((self.size.0, self.size.1).into());
        self.frame_damage.extend(damage.iter().filter_map(|r| r.intersection(full)));
        if self.frame_damage.len() > 64 {
            self.frame_damage = vec![full];
        }
        if self.flip_pending || !self.session.is_active() {
            self.deferred = true;
            return Ok(false);
        }
        let back = 1 - self.front;
        // What the back buffer lacks: the frames presented since it was last
        // shown, and everything new since the last present.
        let rects: Vec<Rectangle<i32, Physical>> = if self.full_left > 0 {
            vec![full]
        } else {
            self.back_stale.iter().chain(self.frame_damage.iter()).copied().collect()
        };
        {
            let fd = self.device.device_fd().clone();
            let pitch = self.scanout[back].buffer.pitch() as usize;
            let mut map = fd
                .map_dumb_buffer(&mut self.scanout[back].buffer)
                .map_err(|e| DrmError::Present(format!("map dumb buffer: {e}")))?;
            for r in &rects {
                let rgba = read(*r).map_err(DrmError::Present)?;
                copy_rgba_to_xrgb(&rgba, *r, &mut map, pitch);
            }
        }
        let plane = PlaneState {
            handle: self.surface.plane(),
            config: Some(PlaneConfig {
                src: Rectangle::from_size((f64::from(self.size.0), f64::from(self.size.1)).into()),
                dst: full,
                transform: Transform::Normal,
                alpha: 1.0,
                damage_clips: None,
                fb: self.scanout[back].fb,
                fence: None,
            }),
        };
        let what = if self.modeset_done { "page flip" } else { "modeset" };
        let result =
            if self.modeset_done { self.surface.page_flip([plane], true) } else { self.surface.commit([plane], true) };
        result.map_err(|e| DrmError::Present(format!("{what} on {}: {e}", self.path.display())))?;
        self.modeset_done = true;
        self.flip_pending = true;
        self.deferred = false;
        self.front = back;
        self.full_left = self.full_left.saturating_sub(1);
        // The new back buffer (the old front) misses what this present added.
        self.back_stale = std::mem::take(&mut self.frame_damage);
        if self.back_stale.len() > 64 {
            self.back_stale = vec![full];
        }
        Ok(true)
    }

    /// The flip in flight completed (DRM vblank event).
    pub fn vblank(&mut self) {
        if self.flip_pending {
            self.flip_pending = false;
            self.flips += 1;
        }
    }

    /// The session was paused (VT switch): stop flipping and input.
    pub fn pause(&mut self) {
        tracing::info!("session paused");
        self.libinput.suspend();
        self.device.pause();
        self.flip_pending = false;
    }

    /// The session is back: take the device again and repaint everything.
    pub fn activate(&mut self) {
        tracing::info!("session active");
        if let Err(e) = self.device.activate(true) {
            tracing::error!(error = %e, "cannot take the DRM device back");
        }
        if self.libinput.resume().is_err() {
            tracing::error!("cannot resume libinput");
        }
        self.modeset_done = false;
        self.full_left = 2;
        self.deferred = true;
    }

    /// Converts a libinput event into output input.
    pub fn input(&mut self, event: InputEvent<LibinputInputBackend>) -> Option<OutputInput> {
        let (w, h) = (f64::from(self.size.0), f64::from(self.size.1));
        let clamp = |p: (f64, f64)| (p.0.clamp(0.0, w - 1.0), p.1.clamp(0.0, h - 1.0));
        match event {
            InputEvent::Keyboard { event } => Some(OutputInput::Key {
                scancode: event.key_code().raw().saturating_sub(8),
                pressed: event.state() == KeyState::Pressed,
            }),
            InputEvent::PointerMotion { event } => {
                self.pointer = clamp((self.pointer.0 + event.delta_x(), self.pointer.1 + event.delta_y()));
                Some(OutputInput::Motion { x: self.pointer.0 as i32, y: self.pointer.1 as i32 })
            }
            InputEvent::PointerMotionAbsolute { event } => {
                self.pointer = clamp((event.x_transformed(self.size.0), event.y_transformed(self.size.1)));
                Some(OutputInput::Motion { x: self.pointer.0 as i32, y: self.pointer.1 as i32 })
            }
            InputEvent::PointerButton { event } => {
                let button = evdev_button(event.button_code())?;
                Some(OutputInput::Button { button, pressed: event.state() == ButtonState::Pressed })
            }
            InputEvent::DeviceAdded { device } => {
                tracing::info!(name = device.name(), "input device added");
                None
            }
            InputEvent::DeviceRemoved { device } => {
                tracing::info!(name = device.name(), "input device removed");
                None
            }
            // Scrolling, touch, gestures, tablets' tools and switches: not yet.
            _ => None,
        }
    }
}

/// evdev button codes (linux/input-event-codes.h) to the control API's buttons.
pub fn evdev_button(code: u32) -> Option<Button> {
    match code {
        0x110 => Some(Button::Left),
        0x111 => Some(Button::Right),
        0x112 => Some(Button::Middle),
        _ => None,
    }
}

/// The first connected connector and its preferred (else first) mode.
fn pick_connector(fd: &DrmDeviceFd) -> std::io::Result<Option<(connector::Info, Mode)>> {
    let res = fd.resource_handles()?;
    for &h in res.connectors() {
        let info = fd.get_connector(h, true)?;
        if info.state() != connector::State::Connected || info.modes().is_empty() {
            continue;
        }
        let mode = info
            .modes()
            .iter()
            .find(|m| m.mode_type().contains(ModeTypeFlags::PREFERRED))
            .copied()
            .unwrap_or(info.modes()[0]);
        return Ok(Some((info, mode)));
    }
    Ok(None)
}

/// A CRTC one of the connector's encoders can drive (the current one first).
fn pick_crtc(
    fd: &DrmDeviceFd,
    conn: &connector::Info,
) -> std::io::Result<Option<smithay::reexports::drm::control::crtc::Handle>> {
    let res = fd.resource_handles()?;
    if let Some(enc) = conn.current_encoder() {
        if let Some(crtc) = fd.get_encoder(enc)?.crtc() {
            return Ok(Some(crtc));
        }
    }
    for &enc in conn.encoders() {
        let info = fd.get_encoder(enc)?;
        if let Some(&crtc) = res.filter_crtcs(info.possible_crtcs()).first() {
            return Ok(Some(crtc));
        }
    }
    Ok(None)
}

fn make_scanout(fd: &DrmDeviceFd, path: &Path, size: (u32, u32)) -> Result<Scanout, DrmError> {
    let err =
        |reason: String| DrmError::Buffer { path: path.to_path_buf(), size: format!("{}x{}", size.0, size.1), reason };
    let buffer = fd.create_dumb_buffer(size, DrmFourcc::Xrgb8888, 32).map_err(|e| err(e.to_string()))?;
    let fb = fd.add_framebuffer(&buffer, 24, 32).map_err(|e| err(format!("add framebuffer: {e}")))?;
    Ok(Scanout { buffer, fb })
}

/// Copies an RGBA rectangle into an XRGB8888 (little-endian B, G, R, X)
/// buffer with `pitch` bytes per row.
pub fn copy_rgba_to_xrgb(rgba: &[u8], r: Rectangle<i32, Physical>, dst: &mut [u8], pitch: usize) {
    let (w, h) = (r.size.w.max(0) as usize, r.size.h.max(0) as usize);
    let (x0, y0) = (r.loc.x.max(0) as usize, r.loc.y.max(0) as usize);
    for row in 0..h {
        let src = &rgba[row * w * 4..][..w * 4];
        let start = (y0 + row) * pitch + x0 * 4;
        let Some(out) = dst.get_mut(start..start + w * 4) else { return };
        for (o, s) in out.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
            o[0] = s[2];
            o[1] = s[1];
            o[2] = s[0];
            o[3] = 0xff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba_rectangles_land_as_xrgb_at_their_place() {
        let pitch = 8 * 4 + 16; // padded rows, as drivers allocate
        let mut dst = vec![0u8; pitch * 4];
        let r = Rectangle::new((2, 1).into(), (3, 2).into());
        let rgba: Vec<u8> = (0..6).flat_map(|i| [10 * i as u8, 1, 2, 3]).collect();
        copy_rgba_to_xrgb(&rgba, r, &mut dst, pitch);
        let px = |x: usize, y: usize| &dst[y * pitch + x * 4..][..4];
        assert_eq!(px(2, 1), [2, 1, 0, 0xff]);
        assert_eq!(px(4, 2), [2, 1, 50, 0xff]);
        assert_eq!(px(1, 1), [0, 0, 0, 0], "left of the rectangle untouched");
        assert_eq!(px(5, 1), [0, 0, 0, 0], "right of the rectangle untouched");
        assert_eq!(px(2, 3), [0, 0, 0, 0], "below the rectangle untouched");
    }

    #[test]
    fn a_rectangle_past_the_buffer_is_cut_not_a_panic() {
        let mut dst = vec![0u8; 4 * 4 * 2];
        let r = Rectangle::new((2, 1).into(), (2, 4).into());
        let rgba = vec![7u8; 2 * 4 * 4];
        copy_rgba_to_xrgb(&rgba, r, &mut dst, 16);
        assert_eq!(&dst[16 + 8..16 + 12], [7, 7, 7, 0xff]);
    }

    #[test]
    fn evdev_buttons() {
        assert_eq!(evdev_button(0x110), Some(Button::Left));
        assert_eq!(evdev_button(0x111), Some(Button::Right));
        assert_eq!(evdev_button(0x112), Some(Button::Middle));
        assert_eq!(evdev_button(0x113), None);
    }
}
