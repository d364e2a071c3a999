//! evdev events for the guest: the 8-byte `virtio_input_event` and the
//! reports the host's pointer and keyboard become.

/// Event types and codes (linux/input-event-codes.h).
pub const EV_SYN: u16 = 0x00;
pub const EV_KEY: u16 = 0x01;
pub const EV_REL: u16 = 0x02;
pub const EV_ABS: u16 = 0x03;
pub const SYN_REPORT: u16 = 0;
pub const REL_WHEEL: u16 = 0x08;
pub const ABS_X: u16 = 0x00;
pub const ABS_Y: u16 = 0x01;
pub const BTN_LEFT: u16 = 0x110;
pub const BTN_RIGHT: u16 = 0x111;
pub const BTN_MIDDLE: u16 = 0x112;
/// The tablet's axis maximum (its range is 0..=ABS_MAX on both axes).
pub const ABS_MAX: u32 = 0x7fff;
/// Highest key code the keyboard forwards.
pub const KEY_MAX: u32 = 0x2ff;

/// One `virtio_input_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub type_: u16,
    pub code: u16,
    pub value: u32,
}

impl InputEvent {
    pub const SYN: InputEvent = InputEvent { type_: EV_SYN, code: SYN_REPORT, value: 0 };

    /// The event as the guest reads it from the event queue.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.type_.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// A key press or release followed by a report; `None` for key codes
    /// beyond what the keyboard declares. Wayland key codes are evdev codes.
    pub fn key(code: u32, pressed: bool) -> Option<[InputEvent; 2]> {
        (code > 0 && code <= KEY_MAX)
            .then(|| [InputEvent { type_: EV_KEY, code: code as u16, value: u32::from(pressed) }, InputEvent::SYN])
    }
}

/// Maps positions in the host window (surface-local pixels) to the tablet's
/// axes, for the window's current size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TabletMapper {
    pub width: u32,
    pub height: u32,
}

impl TabletMapper {
    /// The axis value whose pixel, as the guest scales it
    /// (`value * size / (ABS_MAX + 1)`), is `px`: the pixel's centre. Out of
    /// range positions are clamped to the edge.
    fn axis(px: f64, size: u32) -> u32 {
        let size = size.max(1);
        let px = px.clamp(0.0, f64::from(size) - 1.0).floor() as u64;
        let v = (px * 2 + 1) * (u64::from(ABS_MAX) + 1) / (2 * u64::from(size));
        v.min(u64::from(ABS_MAX)) as u32
    }

    /// Motion to (x, y) in surface pixels.
    pub fn motion(&self, x: f64, y: f64) -> [InputEvent; 3] {
        [
            InputEvent { type_: EV_ABS, code: ABS_X, value: Self::axis(x, self.width) },
            InputEvent { type_: EV_ABS, code: ABS_Y, value: Self::axis(y, self.height) },
            InputEvent::SYN,
        ]
    }

    /// A button (evdev code, as `wl_pointer.button` gives it) press or release.
    pub fn button(&self, code: u32, pressed: bool) -> Option<[InputEvent; 2]> {
        matches!(code, 0x110..=0x112)
            .then(|| [InputEvent { type_: EV_KEY, code: code as u16, value: u32::from(pressed) }, InputEvent::SYN])
    }

    /// Wheel clicks: positive is away from the user (evdev's convention;
    /// Wayland's vertical axis is the opposite sign).
    pub fn wheel(&self, clicks: i32) -> Option<[InputEvent; 2]> {
        (clicks != 0).then_some([InputEvent { type_: EV_REL, code: REL_WHEEL, value: clicks as u32 }, InputEvent::SYN])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_encode_little_endian() {
        let e = InputEvent { type_: EV_ABS, code: ABS_Y, value: 0x1234 };
        assert_eq!(e.to_bytes(), [3, 0, 1, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(InputEvent::key(30, true).unwrap()[0].to_bytes(), [1, 0, 30, 0, 1, 0, 0, 0]);
        assert!(InputEvent::key(0, true).is_none() && InputEvent::key(0x300, true).is_none());
        let m = TabletMapper { width: 100, height: 50 };
        assert_eq!(m.wheel(-1).unwrap()[0].value, u32::MAX, "-1 as the guest reads it");
        assert!(m.button(0x113, true).is_none());
    }

    #[test]
    fn positions_land_on_their_pixel_after_the_guests_scaling() {
        for (w, h) in [(1280u32, 800u32), (640, 480), (3, 2)] {
            let m = TabletMapper { width: w, height: h };
            for (px, py) in [(0.0, 0.0), (w as f64 - 1.0, h as f64 - 1.0), (w as f64 / 3.0, h as f64 / 2.0)] {
                let ev = m.motion(px, py);
                let gx = u64::from(ev[0].value) * u64::from(w) / (u64::from(ABS_MAX) + 1);
                let gy = u64::from(ev[1].value) * u64::from(h) / (u64::from(ABS_MAX) + 1);
                assert_eq!((gx, gy), (px.floor() as u64, py.floor() as u64), "{w}x{h} at {px},{py}");
            }
            let out = m.motion(-5.0, 1e9);
            assert_eq!((out[0].value <= ABS_MAX, out[1].value <= ABS_MAX), (true, true));
            assert_eq!(out[2], InputEvent::SYN);
        }
    }
}
