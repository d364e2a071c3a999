//! Pure checks on captures: what the scanout must show (background, a
//! decorated window, its animation, its close), on decoded images.

use super::*;
use rayos_compositor_ipc::geometry;
pub use rayos_test_kit::image::{near, Image, Rect, BACKGROUND_RGB, HOST_RGB};

/// A capture that does not show what this step waits for.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CheckError {
    #[error("the background colour {BACKGROUND_RGB:?} covers {:.0}% of the capture (want >= {:.0}%; centre pixel {centre:?})", share * 100.0, MIN_BACKGROUND_SHARE * 100.0)]
    Background { share: f64, centre: [u8; 3] },
    #[error("no pixel in the host decoration colour {HOST_RGB:?}")]
    NoHostPixels,
    #[error("host-colour pixels span {frame}, not a {}x{} frame of a {CLIENT_W}x{CLIENT_H} client", want.0, want.1)]
    FrameSize { frame: Rect, want: (u32, u32) },
    #[error("title bar {title_bar}: {host} of {} pixels in the host colour", title_bar.area())]
    TitleBar { title_bar: Rect, host: usize },
    #[error("client area {client}: only {differing} of {} pixels differ from the background", client.area())]
    EmptyClient { client: Rect, differing: usize },
    #[error("{0} pixels still in the host decoration colour")]
    HostPixelsLeft(usize),
    #[error("{left} of {} pixels of the former client area {client} are not background", client.area())]
    ClientLeft { client: Rect, left: usize },
}
/// Decoration layout of the compositor (its own constants).
pub const TITLE_H: u32 = geometry::TITLE_HEIGHT as u32;
pub const BORDER: u32 = geometry::BORDER as u32;
pub const PAD: u32 = geometry::PAD as u32;
pub const BUTTON: u32 = geometry::BUTTON as u32;
/// weston-simple-shm's fixed buffer size.
pub const CLIENT_W: u32 = 250;
pub const CLIENT_H: u32 = 250;
/// Share of the client area that must not be background.
pub(super) const MIN_CLIENT_SHARE: f64 = 0.5;
/// Share of the title bar that must be the host colour (the label covers some).
pub(super) const MIN_TITLE_SHARE: f64 = 0.5;
/// Share of the whole capture that must be background.
pub(super) const MIN_BACKGROUND_SHARE: f64 = 0.5;
/// Client pixels that must change between two captures one second apart.
pub(super) const MIN_CHANGED_PIXELS: usize = 500;
/// Host-colour pixels tolerated once the window is closed.
pub(super) const MAX_HOST_PIXELS_AFTER_CLOSE: usize = 16;
/// Interval between captures while waiting for a state.
pub const POLL: Duration = Duration::from_millis(500);
/// Largest absolute axis value of QMP `input-send-event`.
pub(super) const ABS_MAX: u32 = 0x7fff;

/// A decorated window found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub frame: Rect,
    pub title_bar: Rect,
    pub client: Rect,
    /// Centre of the close button.
    pub close: (u32, u32),
    /// Client pixels that are not background.
    pub window_pixels: usize,
    pub host_title_pixels: usize,
}

/// Where the decoration of a floating window with this frame puts things.
pub fn layout(frame: Rect) -> (Rect, Rect, (u32, u32)) {
    let title_bar = Rect { x: frame.x, y: frame.y, w: frame.w, h: TITLE_H };
    let client = Rect {
        x: frame.x + BORDER,
        y: frame.y + TITLE_H,
        w: frame.w.saturating_sub(2 * BORDER),
        h: frame.h.saturating_sub(TITLE_H + BORDER),
    };
    let close_x = (frame.x + frame.w).saturating_sub(BORDER + PAD + BUTTON);
    let close = (close_x + BUTTON / 2, frame.y + PAD + BUTTON / 2);
    (title_bar, client, close)
}

/// Checks that the background dominates; returns its share.
pub fn background_share(img: &Image) -> Result<f64, CheckError> {
    let bg = img.count(img.whole(), |p| near(p, BACKGROUND_RGB));
    let share = bg as f64 / img.whole().area().max(1) as f64;
    if share < MIN_BACKGROUND_SHARE {
        return Err(CheckError::Background { share, centre: img.px(img.w / 2, img.h / 2) });
    }
    Ok(share)
}

/// Finds the one decorated window of a 250x250 client by its host-colour frame.
pub fn find_window(img: &Image) -> Result<Found, CheckError> {
    let (mut x0, mut y0, mut x1, mut y1, mut n) = (u32::MAX, u32::MAX, 0, 0, 0usize);
    for y in 0..img.h {
        for x in 0..img.w {
            if near(img.px(x, y), HOST_RGB) {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(CheckError::NoHostPixels);
    }
    let frame = Rect { x: x0, y: y0, w: x1 - x0 + 1, h: y1 - y0 + 1 };
    let want = (CLIENT_W + 2 * BORDER, CLIENT_H + TITLE_H + BORDER);
    if (frame.w, frame.h) != want {
        return Err(CheckError::FrameSize { frame, want });
    }
    let (title_bar, client, close) = layout(frame);
    let host_title_pixels = img.count(title_bar, |p| near(p, HOST_RGB));
    if (host_title_pixels as f64) < MIN_TITLE_SHARE * title_bar.area() as f64 {
        return Err(CheckError::TitleBar { title_bar, host: host_title_pixels });
    }
    let window_pixels = img.count(client, |p| !near(p, BACKGROUND_RGB));
    if (window_pixels as f64) < MIN_CLIENT_SHARE * client.area() as f64 {
        return Err(CheckError::EmptyClient { client, differing: window_pixels });
    }
    Ok(Found { frame, title_bar, client, close, window_pixels, host_title_pixels })
}

/// Pixels of `r` that differ between two captures of the same size.
pub fn changed_pixels(a: &Image, b: &Image, r: Rect) -> usize {
    if (a.w, a.h) != (b.w, b.h) {
        return r.area();
    }
    let mut n = 0;
    for y in r.y..(r.y + r.h).min(a.h) {
        for x in r.x..(r.x + r.w).min(a.w) {
            n += usize::from(a.px(x, y) != b.px(x, y));
        }
    }
    n
}

/// Whether the window once at `found` is gone from `img`.
pub fn window_gone(img: &Image, found: &Found) -> Result<(), CheckError> {
    let host = img.count(img.whole(), |p| near(p, HOST_RGB));
    if host > MAX_HOST_PIXELS_AFTER_CLOSE {
        return Err(CheckError::HostPixelsLeft(host));
    }
    let left = img.count(found.client, |p| !near(p, BACKGROUND_RGB));
    if (left as f64) >= MIN_CLIENT_SHARE * found.client.area() as f64 {
        return Err(CheckError::ClientLeft { client: found.client, left });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic scanout: background, one decorated window whose client is
    /// a pattern that depends on `phase`.
    fn scene(w: u32, h: u32, at: (u32, u32), phase: u32) -> Image {
        let mut img = Image::new(w, h, BACKGROUND_RGB);
        let frame = Rect { x: at.0, y: at.1, w: CLIENT_W + 2 * BORDER, h: CLIENT_H + TITLE_H + BORDER };
        img.fill(frame, HOST_RGB);
        // The label: white text on the title bar.
        img.fill(Rect { x: at.0 + 8, y: at.1 + 8, w: 60, h: 12 }, [255, 255, 255]);
        let (_, client, _) = layout(frame);
        for y in client.y..client.y + client.h {
            for x in client.x..client.x + client.w {
                let v = ((x + y + phase) % 256) as u8;
                img.set(x, y, [v, 255 - v, (v / 2).wrapping_add(64)]);
            }
        }
        img
    }

    #[test]
    fn finds_the_window_and_its_close_button() {
        let img = scene(1280, 800, (32, 32), 0);
        assert!(background_share(&img).unwrap() > 0.9);
        let f = find_window(&img).unwrap();
        assert_eq!(f.frame, Rect { x: 32, y: 32, w: 258, h: 282 });
        assert_eq!(f.client, Rect { x: 36, y: 60, w: 250, h: 250 });
        assert_eq!(f.title_bar, Rect { x: 32, y: 32, w: 258, h: 28 });
        // The compositor's close button: x = 32+258-4-4-20 = 262, y = 36, 20x20.
        assert_eq!(f.close, (272, 46));
        assert!(f.window_pixels > 60_000);
        let moved = find_window(&scene(1024, 768, (300, 200), 0)).unwrap();
        assert_eq!(moved.client, Rect { x: 304, y: 228, w: 250, h: 250 });
    }

    #[test]
    fn rejects_wrong_scenes() {
        let empty = Image::new(640, 480, BACKGROUND_RGB);
        assert!(find_window(&empty).unwrap_err().to_string().contains("no pixel in the host decoration colour"));
        let black = Image::new(640, 480, [0, 0, 0]);
        assert!(background_share(&black).is_err());
        // A frame of the wrong size.
        let mut wrong = Image::new(640, 480, BACKGROUND_RGB);
        wrong.fill(Rect { x: 10, y: 10, w: 100, h: 100 }, HOST_RGB);
        assert!(find_window(&wrong).unwrap_err().to_string().contains("not a 258x282 frame"));
        // A decoration around an empty (background) client.
        let mut hollow = Image::new(640, 480, BACKGROUND_RGB);
        let frame = Rect { x: 10, y: 10, w: 258, h: 282 };
        hollow.fill(frame, HOST_RGB);
        let (_, client, _) = layout(frame);
        hollow.fill(client, BACKGROUND_RGB);
        assert!(find_window(&hollow).unwrap_err().to_string().contains("differ from the background"));
    }

    #[test]
    fn animation_and_closing() {
        let a = scene(800, 600, (32, 32), 0);
        let b = scene(800, 600, (32, 32), 7);
        let f = find_window(&a).unwrap();
        assert_eq!(changed_pixels(&a, &a, f.client), 0);
        assert!(changed_pixels(&a, &b, f.client) > MIN_CHANGED_PIXELS);
        assert!(window_gone(&a, &f).is_err());
        let mut closed = Image::new(800, 600, BACKGROUND_RGB);
        // A pointer sprite left over the former close button.
        closed.fill(Rect { x: f.close.0, y: f.close.1, w: 10, h: 16 }, [255, 255, 255]);
        window_gone(&closed, &f).unwrap();
    }
}
