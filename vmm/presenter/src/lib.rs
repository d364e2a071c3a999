//! The embedded-desktop presenter: one VM's scanout as one window on the
//! RayOS compositor, and that window's input back to the VM.
//!
//! Design:
//! * The VMM's virtio-gpu worker calls [`Presenter::flush`] with the damage
//!   of a RESOURCE_FLUSH. Flush copies only the damaged rows into the
//!   presenter's own image (converted to wl_shm XRGB8888 where the guest's
//!   format differs), adds the rectangle to the pending damage and wakes the
//!   presenter thread; it never waits for the compositor.
//! * The presenter thread is a Wayland client (wayland-client, xdg-shell)
//!   on the VM's desktop socket (`rayos-desktop-<name>`). It keeps two
//!   wl_shm buffers; each remembers the damage it has not received yet. To
//!   show a frame it takes a released buffer, copies that buffer's missing
//!   rectangles from the image, attaches it, damages only the new
//!   rectangles and asks for a frame callback. At most one frame is in
//!   flight: damage that arrives meanwhile merges into the next frame, so a
//!   guest that floods flushes costs the compositor one commit per frame it
//!   draws, never more.
//! * The window's geometry is the size the compositor configured (or the
//!   guest's mode until it does); a configured size the guest does not have
//!   yet goes to [`Events::resize`] (the VMM raises the display-change
//!   event), and the guest's next mode fills the window.
//! * Keyboard keys (evdev codes), pointer motion in surface coordinates,
//!   buttons and wheel clicks go to [`Events::input`]; a keyboard leaving
//!   the window releases the keys it held.
//! * The guest's cursor image becomes the pointer's cursor surface
//!   (`wl_pointer.set_cursor`), so there is no second, lagging cursor.
//! * When the connection fails (the compositor went away) the thread keeps
//!   the image, retries every [`Config::retry`], and presents the whole
//!   image again once connected. The VM never waits for it.

mod client;
pub mod damage;
mod shm;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use damage::{Damage, Rect};

/// Largest side of a scanout the presenter shows (like the device's cap).
pub const MAX_SIDE: u32 = 8192;
/// Flush times kept for the latency figure while frames are not shown.
const MAX_PENDING_FLUSHES: usize = 1024;
/// Latency samples kept for the percentiles.
const MAX_SAMPLES: usize = 4096;
/// Largest cursor side.
pub const MAX_CURSOR: u32 = 256;

/// What the presenter tells the VMM.
pub trait Events: Send + Sync + 'static {
    /// The window is now `width` × `height`: the guest's display should be too.
    fn resize(&self, width: u32, height: u32);
    /// Input the user gave the window.
    fn input(&self, input: Input);
}

/// A sink the VMM also keeps (it wires the resize after the device exists).
impl<T: Events> Events for Arc<T> {
    fn resize(&self, width: u32, height: u32) {
        (**self).resize(width, height);
    }
    fn input(&self, input: Input) {
        (**self).input(input);
    }
}

/// Input from the window, in the guest's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// A key (Linux evdev code) went down or up.
    Key { code: u32, pressed: bool },
    /// The pointer is at (x, y) of a `width` × `height` display.
    Motion { x: f64, y: f64, width: u32, height: u32 },
    /// A pointer button (Linux code, BTN_LEFT = 0x110) went down or up.
    Button { code: u32, pressed: bool },
    /// Wheel clicks; positive is away from the user (up), as REL_WHEEL.
    Wheel { clicks: i32 },
}

/// Where and as what the window appears.
#[derive(Debug, Clone)]
pub struct Config {
    /// The compositor's socket for this VM's desktop.
    pub socket: PathBuf,
    pub title: String,
    pub app_id: String,
    /// Wait between connection attempts.
    pub retry: Duration,
}

/// The guest's cursor: ARGB8888 (little-endian B, G, R, A) pixels and hot spot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub width: u32,
    pub height: u32,
    pub hot_x: u32,
    pub hot_y: u32,
    pub argb: Vec<u8>,
}

/// Converts one pixel to XRGB8888 bytes (B, G, R, X).
pub type Convert = dyn Fn(&[u8]) -> [u8; 4];

/// Pixels the VMM flushes from: rows of `width * 4` bytes.
pub struct Source<'a> {
    pub width: u32,
    pub height: u32,
    pub pixels: &'a [u8],
    /// Converts one pixel to XRGB8888 bytes (B, G, R, X); `None` when the
    /// pixels already are (they are copied as they are).
    pub convert: Option<&'a Convert>,
}

/// The presenter's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub connected: bool,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Flushes the VMM handed over.
    pub flushes: u64,
    /// Frames committed to the compositor.
    pub frames: u64,
    /// Frames the compositor reported shown (frame callbacks).
    pub presented: u64,
    /// Bytes copied into wl_shm buffers, in all and for the last frame.
    pub bytes_copied: u64,
    pub last_frame_bytes: u64,
    /// The window's size as last configured.
    pub window: Option<(u32, u32)>,
    /// Flush to shown (frame callback), in ms: p50 and p95 of the last samples.
    pub flush_to_present_ms_p50: Option<f64>,
    pub flush_to_present_ms_p95: Option<f64>,
}

/// What the VMM's threads and the presenter thread share.
pub(crate) struct Shared {
    pub frame: Mutex<FrameState>,
    pub stats: Mutex<Counters>,
    pub wake: EventFd,
    pub stop: AtomicBool,
}

/// The image and what changed in it since the thread last looked.
#[derive(Default)]
pub(crate) struct FrameState {
    /// The guest's display size, or none (nothing to show).
    pub mode: Option<(u32, u32)>,
    /// `mode`'s pixels, XRGB8888.
    pub image: Vec<u8>,
    /// Damage since the last frame the thread took.
    pub damage: Damage,
    /// When the flushes in `damage` happened.
    pub flushed_at: Vec<Instant>,
    /// A cursor change not yet applied (`Some(None)`: hide it).
    pub cursor: Option<Option<Cursor>>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub stats: Stats,
    pub samples: std::collections::VecDeque<f64>,
}

impl Counters {
    pub fn sample(&mut self, ms: f64) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }
}

fn percentile(samples: &std::collections::VecDeque<f64>, p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i])
}

impl Shared {
    fn wake(&self) {
        let _ = self.wake.write(1);
    }
}

/// A running presenter; dropping it closes the window.
pub struct Presenter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Presenter {
    /// Starts the presenter thread; it connects (and reconnects) on its own.
    pub fn spawn(config: Config, events: Box<dyn Events>) -> std::io::Result<Presenter> {
        let shared = Arc::new(Shared {
            frame: Mutex::new(FrameState::default()),
            stats: Mutex::new(Counters::default()),
            wake: EventFd::new(EFD_NONBLOCK)?,
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let events: Arc<dyn Events> = Arc::from(events);
        let thread =
            std::thread::Builder::new().name("presenter".into()).spawn(move || client::run(&s, &config, events))?;
        Ok(Presenter { shared, thread: Some(thread) })
    }

    /// The guest's display is now `mode` (or off).
    pub fn set_mode(&self, mode: Option<(u32, u32)>) {
        let mode = mode.filter(|(w, h)| (1..=MAX_SIDE).contains(w) && (1..=MAX_SIDE).contains(h));
        let mut f = self.shared.frame.lock().expect("presenter frame lock");
        if f.mode == mode {
            return;
        }
        f.mode = mode;
        let (w, h) = mode.unwrap_or((0, 0));
        f.image = vec![0; w as usize * h as usize * 4];
        f.damage = Damage::full(w, h);
        drop(f);
        self.shared.wake();
    }

    /// `damage` of `src` changed: copies it and schedules a frame.
    pub fn flush(&self, src: &Source<'_>, damage: Rect) {
        let mut f = self.shared.frame.lock().expect("presenter frame lock");
        if f.mode != Some((src.width, src.height)) {
            return; // not what the scanout shows
        }
        let stride = src.width as usize * 4;
        let Some(d) = damage.clip(src.width, src.height) else { return };
        if src.pixels.len() < stride * src.height as usize {
            return;
        }
        for row in d.y..d.y + d.height {
            let start = row as usize * stride + d.x as usize * 4;
            let len = d.width as usize * 4;
            let (from, to) = (&src.pixels[start..start + len], &mut f.image[start..start + len]);
            match src.convert {
                None => to.copy_from_slice(from),
                Some(c) => {
                    for (o, i) in to.chunks_exact_mut(4).zip(from.chunks_exact(4)) {
                        o.copy_from_slice(&c(i));
                    }
                }
            }
        }
        f.damage.add(d);
        if f.flushed_at.len() < MAX_PENDING_FLUSHES {
            f.flushed_at.push(Instant::now());
        }
        drop(f);
        self.shared.stats.lock().expect("presenter stats lock").stats.flushes += 1;
        self.shared.wake();
    }

    /// The guest's cursor image changed (`Some(None)`: hidden). Its position
    /// is the host pointer's, so moves need nothing.
    pub fn cursor(&self, image: Option<Cursor>) {
        let image = image.filter(|c| {
            (1..=MAX_CURSOR).contains(&c.width)
                && (1..=MAX_CURSOR).contains(&c.height)
                && c.argb.len() == c.width as usize * c.height as usize * 4
        });
        self.shared.frame.lock().expect("presenter frame lock").cursor = Some(image);
        self.shared.wake();
    }

    pub fn stats(&self) -> Stats {
        let c = self.shared.stats.lock().expect("presenter stats lock");
        Stats {
            flush_to_present_ms_p50: percentile(&c.samples, 0.5),
            flush_to_present_ms_p95: percentile(&c.samples, 0.95),
            ..c.stats.clone()
        }
    }
}

impl Drop for Presenter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_samples() {
        let s: std::collections::VecDeque<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), Some(51.0));
        assert_eq!(percentile(&s, 0.95), Some(95.0));
        assert_eq!(percentile(&Default::default(), 0.5), None);
    }
}
