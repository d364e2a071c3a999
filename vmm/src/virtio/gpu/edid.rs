//! The EDID (1.4, one 128-byte block) that GET_EDID answers: the display's
//! current size as its one preferred detailed timing, so a guest that asks
//! for the monitor's modes picks the host window's size. Timings follow
//! CVT reduced blanking at 60 Hz; the physical size assumes 96 dpi.

/// Largest size a detailed timing descriptor can carry (12-bit fields).
pub const MAX_SIDE: u32 = 4095;

/// Refresh rate the timing describes.
const REFRESH_HZ: u64 = 60;

/// The EDID base block for a `width` × `height` display (each clamped to
/// 1..=[`MAX_SIDE`]).
pub fn edid(width: u32, height: u32) -> [u8; 128] {
    let (w, h) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
    let mut e = [0u8; 128];
    e[..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "RAY": three 5-bit letters, big-endian.
    let id: u16 = ((b'R' - b'@') as u16) << 10 | ((b'A' - b'@') as u16) << 5 | (b'Y' - b'@') as u16;
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&0x0001u16.to_le_bytes()); // product code
    e[16] = 1; // week
    e[17] = (2026 - 1990) as u8; // year
    e[18] = 1; // EDID 1.4
    e[19] = 4;
    e[20] = 0x80; // digital input
    let (w_mm, h_mm) = (mm(w), mm(h));
    e[21] = (w_mm / 10).min(255) as u8;
    e[22] = (h_mm / 10).min(255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // sRGB default colour space; the preferred timing is native
                  // Chromaticity of sRGB.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    for i in 0..8 {
        e[38 + 2 * i] = 0x01; // standard timings: unused
        e[39 + 2 * i] = 0x01;
    }
    e[54..72].copy_from_slice(&detailed_timing(w, h, w_mm, h_mm));
    // Display product name.
    e[72..77].copy_from_slice(&[0, 0, 0, 0xfc, 0]);
    let name = b"RayOS\n       ";
    e[77..90].copy_from_slice(name);
    // Two dummy descriptors.
    e[90..95].copy_from_slice(&[0, 0, 0, 0x10, 0]);
    e[108..113].copy_from_slice(&[0, 0, 0, 0x10, 0]);
    e[126] = 0; // no extension blocks
    let sum = e[..127].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

/// Millimetres of `px` pixels at 96 dpi.
fn mm(px: u32) -> u32 {
    px * 254 / 960
}

/// An 18-byte detailed timing descriptor, CVT reduced blanking at 60 Hz.
fn detailed_timing(w: u32, h: u32, w_mm: u32, h_mm: u32) -> [u8; 18] {
    let (h_front, h_sync, h_blank) = (48u32, 32u32, 160u32);
    let (v_front, v_sync, v_blank) = (3u32, 6u32, 23u32);
    let clock_10khz = (u64::from(w + h_blank) * u64::from(h + v_blank) * REFRESH_HZ).div_ceil(10_000);
    let clock = clock_10khz.min(u64::from(u16::MAX)) as u16;
    let mut d = [0u8; 18];
    d[0..2].copy_from_slice(&clock.to_le_bytes());
    d[2] = (w & 0xff) as u8;
    d[3] = (h_blank & 0xff) as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((h_blank >> 8) & 0xf)) as u8;
    d[5] = (h & 0xff) as u8;
    d[6] = (v_blank & 0xff) as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((v_blank >> 8) & 0xf)) as u8;
    d[8] = (h_front & 0xff) as u8;
    d[9] = (h_sync & 0xff) as u8;
    d[10] = ((v_front & 0xf) << 4 | (v_sync & 0xf)) as u8;
    d[11] =
        (((h_front >> 8) & 3) << 6 | ((h_sync >> 8) & 3) << 4 | ((v_front >> 4) & 3) << 2 | ((v_sync >> 4) & 3)) as u8;
    d[12] = (w_mm & 0xff) as u8;
    d[13] = (h_mm & 0xff) as u8;
    d[14] = (((w_mm >> 8) & 0xf) << 4 | ((h_mm >> 8) & 0xf)) as u8;
    d[17] = 0x1a; // digital separate sync, +hsync, -vsync
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The active size a detailed timing descriptor carries.
    fn dtd_size(d: &[u8]) -> (u32, u32) {
        let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        (w, h)
    }

    #[test]
    fn block_is_valid_and_carries_the_size() {
        for (w, h) in [(1280, 800), (1920, 1080), (640, 480), (3840, 2160), (1, 1)] {
            let e = edid(w, h);
            assert_eq!(&e[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
            assert_eq!(e.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0, "checksum of {w}x{h}");
            assert_eq!(dtd_size(&e[54..72]), (w, h));
            assert_ne!(u16::from_le_bytes([e[54], e[55]]), 0, "a pixel clock");
            assert_eq!(&e[77..82], b"RayOS");
        }
        assert_eq!(dtd_size(&edid(9000, 0)[54..72]), (MAX_SIDE, 1));
        // 1280x800 at 60 Hz reduced blanking: 1440 x 823 x 60 Hz = 71.107 MHz, in 10 kHz units rounded up.
        assert_eq!(u16::from_le_bytes([edid(1280, 800)[54], edid(1280, 800)[55]]), 7111);
    }
}
