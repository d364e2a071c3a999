//! Title-bar text: the origin label and the client's title, rasterised.
//!
//! Design note: the title bar of every decoration carries, left to right, the
//! origin label and the client's (sanitised) title. Both are drawn here into
//! one ARGB8888 "text strip" that the renderer lays over the title bar. The
//! label comes first and is drawn as a chip: a solid white (or, for a light
//! origin colour, near-black) box with the label in the origin's colour, in
//! bold. The title follows after a gap, in a neutral colour (near-white or
//! near-black, whichever reads better on the origin colour) and without a
//! chip, and it is cut with an ellipsis to the space the label leaves: a
//! title can neither push the label out nor look like it. The chip is
//! capped at [`MAX_LABEL_WIDTH`] (a longer label is itself cut).
//!
//! Glyphs come from a TrueType font rasterised by `ab_glyph` with
//! anti-aliasing, blended onto the strip (DejaVu Sans for the title, DejaVu
//! Sans Bold for the label, from Debian's `fonts-dejavu-core`, loaded once at
//! start). A font file that is missing or unreadable is logged as a warning
//! naming the path, and that face falls back to a tiny built-in 5x7 bitmap
//! font, so decorations always carry their label. Input is bounded: titles
//! are sanitised and capped at 128 characters before they get here, and the
//! strip is at most as wide as the title bar.

use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontArc, PxScale, ScaleFont};

use crate::decoration::MAX_LABEL_WIDTH;
use crate::origin::Rgb;

/// Errors of loading a font.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read font {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable TrueType font: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The title's face (Debian package `fonts-dejavu-core`).
pub const REGULAR_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The label's face.
pub const BOLD_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";
/// Pixel height of the TrueType faces.
pub const FONT_PX: f32 = 13.0;
/// Largest font file read.
const MAX_FONT_BYTES: u64 = 32 << 20;
/// Horizontal padding inside the label chip.
pub const CHIP_PAD: i32 = 6;
/// Gap between the chip and the title.
pub const TITLE_GAP: i32 = 8;

/// Scale of the bitmap fallback font.
const BITMAP_SCALE: i32 = 2;
/// Advance per bitmap character (5 columns + 1 gap, scaled).
const BITMAP_ADVANCE: i32 = 6 * BITMAP_SCALE;

/// One typeface at its size.
#[derive(Clone)]
pub enum Face {
    TrueType {
        font: FontArc,
        px: f32,
    },
    /// The built-in 5x7 bitmap font at 2x.
    Bitmap,
}

impl std::fmt::Debug for Face {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Face::TrueType { px, .. } => write!(f, "TrueType({px}px)"),
            Face::Bitmap => f.write_str("Bitmap"),
        }
    }
}

impl Face {
    /// Loads a TrueType face from `path`.
    pub fn load(path: &Path, px: f32) -> Result<Self, TextError> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|source| TextError::Read { path: path.into(), source })?;
        let mut data = Vec::new();
        file.take(MAX_FONT_BYTES)
            .read_to_end(&mut data)
            .map_err(|source| TextError::Read { path: path.into(), source })?;
        let font =
            FontArc::try_from_vec(data).map_err(|e| TextError::Invalid { path: path.into(), reason: e.to_string() })?;
        Ok(Face::TrueType { font, px })
    }

    /// Loads `path`, or warns (naming the path) and falls back to the bitmap font.
    pub fn load_or_bitmap(path: &Path, px: f32) -> Self {
        match Face::load(path, px) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "title-bar font unavailable; falling back to the built-in bitmap font (install fonts-dejavu-core)");
                Face::Bitmap
            }
        }
    }

    pub fn is_true_type(&self) -> bool {
        matches!(self, Face::TrueType { .. })
    }

    /// What a cut text ends with.
    fn ellipsis(&self) -> &'static str {
        match self {
            Face::TrueType { .. } => "\u{2026}",
            Face::Bitmap => "...",
        }
    }

    /// Width of `text` in pixels.
    pub fn measure(&self, text: &str) -> i32 {
        match self {
            Face::Bitmap => text.chars().count() as i32 * BITMAP_ADVANCE,
            Face::TrueType { font, px } => {
                let f = font.as_scaled(PxScale::from(*px));
                let mut x = 0.0f32;
                let mut prev = None;
                for c in text.chars() {
                    let id = f.glyph_id(c);
                    if let Some(p) = prev {
                        x += f.kern(p, id);
                    }
                    x += f.h_advance(id);
                    prev = Some(id);
                }
                x.ceil() as i32
            }
        }
    }

    /// `text` if it fits in `max_w` pixels, else its longest prefix that
    /// fits with an ellipsis after it (empty if not even that fits).
    pub fn fit(&self, text: &str, max_w: i32) -> String {
        if max_w <= 0 {
            return String::new();
        }
        if self.measure(text) <= max_w {
            return text.to_string();
        }
        let chars: Vec<char> = text.chars().collect();
        let with_ellipsis = |n: usize| {
            let mut s: String = chars[..n].iter().collect();
            s.truncate(s.trim_end().len());
            s.push_str(self.ellipsis());
            s
        };
        // Widths grow with the prefix: binary search the longest that fits.
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.measure(&with_ellipsis(mid)) <= max_w {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let s = with_ellipsis(lo);
        if self.measure(&s) <= max_w {
            s
        } else {
            String::new()
        }
    }

    /// Draws `text` on `canvas` with its left edge at `x`, vertically
    /// centred, in `colour`, clipped to `clip_w` pixels from `x`.
    pub fn draw(&self, canvas: &mut Canvas, x: i32, clip_w: i32, text: &str, colour: Rgb) {
        let right = (x + clip_w).min(canvas.w);
        match self {
            Face::Bitmap => {
                let top = (canvas.h - 7 * BITMAP_SCALE) / 2;
                for (i, c) in text.chars().enumerate() {
                    let g = glyph(c);
                    for (row, bits) in g.iter().enumerate() {
                        for col in 0..5 {
                            if bits & (0x10 >> col) == 0 {
                                continue;
                            }
                            for dy in 0..BITMAP_SCALE {
                                for dx in 0..BITMAP_SCALE {
                                    let px = x + i as i32 * BITMAP_ADVANCE + col * BITMAP_SCALE + dx;
                                    if px < right {
                                        canvas.blend(px, top + row as i32 * BITMAP_SCALE + dy, colour, 1.0);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Face::TrueType { font, px } => {
                let scale = PxScale::from(*px);
                let f = font.as_scaled(scale);
                let (ascent, descent) = (f.ascent(), f.descent());
                let baseline = ((canvas.h as f32 - (ascent - descent)) / 2.0 + ascent).round();
                let mut pen = x as f32;
                let mut prev = None;
                for c in text.chars() {
                    let id = f.glyph_id(c);
                    if let Some(p) = prev {
                        pen += f.kern(p, id);
                    }
                    let glyph = id.with_scale_and_position(scale, ab_glyph::point(pen.round(), baseline));
                    pen += f.h_advance(id);
                    prev = Some(id);
                    let Some(outline) = font.outline_glyph(glyph) else { continue };
                    let b = outline.px_bounds();
                    outline.draw(|gx, gy, cov| {
                        let px = b.min.x as i32 + gx as i32;
                        if px < right {
                            canvas.blend(px, b.min.y as i32 + gy as i32, colour, cov);
                        }
                    });
                }
            }
        }
    }
}

/// The label's and the title's faces.
#[derive(Debug, Clone)]
pub struct Fonts {
    pub label: Face,
    pub title: Face,
}

impl Fonts {
    /// Loads the two faces; each that fails falls back to the bitmap font
    /// (with a warning naming the file).
    pub fn load(regular: &Path, bold: &Path) -> Self {
        Fonts { label: Face::load_or_bitmap(bold, FONT_PX), title: Face::load_or_bitmap(regular, FONT_PX) }
    }

    /// DejaVu Sans and Sans Bold from `fonts-dejavu-core`.
    pub fn load_default() -> Self {
        Fonts::load(Path::new(REGULAR_FONT), Path::new(BOLD_FONT))
    }

    /// Only the built-in bitmap font.
    pub fn bitmap() -> Self {
        Fonts { label: Face::Bitmap, title: Face::Bitmap }
    }
}

/// An ARGB8888 pixel buffer (bytes B, G, R, A), opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub w: i32,
    pub h: i32,
    pub px: Vec<u8>,
}

impl Canvas {
    /// A `w`x`h` canvas filled with `bg` (sizes below 1 become 1).
    pub fn new(w: i32, h: i32, bg: Rgb) -> Self {
        let (w, h) = (w.max(1), h.max(1));
        let px = [bg.b, bg.g, bg.r, 0xff].repeat((w * h) as usize);
        Canvas { w, h, px }
    }

    /// The pixel at (x, y) as RGB.
    pub fn rgb(&self, x: i32, y: i32) -> Rgb {
        let o = ((y * self.w + x) * 4) as usize;
        Rgb::new(self.px[o + 2], self.px[o + 1], self.px[o])
    }

    pub fn fill(&mut self, x: i32, y: i32, w: i32, h: i32, c: Rgb) {
        for yy in y.max(0)..(y + h).min(self.h) {
            for xx in x.max(0)..(x + w).min(self.w) {
                self.blend(xx, yy, c, 1.0);
            }
        }
    }

    /// Blends `c` at coverage `alpha` (0-1) over the pixel; outside is ignored.
    pub fn blend(&mut self, x: i32, y: i32, c: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x >= self.w || y >= self.h {
            return;
        }
        let a = (alpha.clamp(0.0, 1.0) * 255.0).round() as u16;
        let o = ((y * self.w + x) * 4) as usize;
        for (i, v) in [c.b, c.g, c.r].into_iter().enumerate() {
            let d = u16::from(self.px[o + i]);
            self.px[o + i] = ((u16::from(v) * a + d * (255 - a) + 127) / 255) as u8;
        }
        self.px[o + 3] = 0xff;
    }
}

/// WCAG relative luminance of an sRGB colour (0 black to 1 white).
pub fn luminance(c: Rgb) -> f64 {
    let lin = |v: u8| {
        let v = f64::from(v) / 255.0;
        if v <= 0.03928 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b)
}

/// WCAG contrast ratio (1 to 21).
pub fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

pub const WHITE: Rgb = Rgb::new(0xff, 0xff, 0xff);
pub const INK: Rgb = Rgb::new(0x16, 0x16, 0x16);
/// The title's neutral colours, on a dark and on a light title bar.
pub const TITLE_LIGHT: Rgb = Rgb::new(0xee, 0xee, 0xee);
pub const TITLE_DARK: Rgb = Rgb::new(0x22, 0x22, 0x22);

/// The label chip's background: white, or near-black for an origin colour
/// that would not read on white. The label is drawn in the origin colour.
pub fn chip_background(origin: Rgb) -> Rgb {
    if contrast(origin, WHITE) >= contrast(origin, INK) {
        WHITE
    } else {
        INK
    }
}

/// The title's neutral colour on a title bar of `bar` colour.
pub fn title_colour(bar: Rgb) -> Rgb {
    if contrast(bar, TITLE_LIGHT) >= contrast(bar, TITLE_DARK) {
        TITLE_LIGHT
    } else {
        TITLE_DARK
    }
}

/// Where the strip's parts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripLayout {
    /// The label as drawn (cut with an ellipsis only if wider than the chip cap).
    pub label: String,
    /// Chip width, from x = 0.
    pub chip_w: i32,
    /// The title as drawn (cut to the space left).
    pub title: String,
    pub title_x: i32,
}

/// Lays out a strip `width` pixels wide: the chip first, the title in what is left.
pub fn layout_strip(fonts: &Fonts, label: &str, title: &str, width: i32) -> StripLayout {
    let chip_max = width.clamp(0, MAX_LABEL_WIDTH);
    let label = fonts.label.fit(label, chip_max - 2 * CHIP_PAD);
    let chip_w = (fonts.label.measure(&label) + 2 * CHIP_PAD).min(chip_max);
    let title_x = chip_w + TITLE_GAP;
    let title = fonts.title.fit(title, width - title_x);
    StripLayout { label, chip_w, title, title_x }
}

/// Draws the strip on a title bar of colour `bar`: `width`x`height` ARGB8888.
pub fn render_strip(fonts: &Fonts, label: &str, bar: Rgb, title: &str, width: i32, height: i32) -> Canvas {
    let l = layout_strip(fonts, label, title, width);
    let mut canvas = Canvas::new(width, height, bar);
    if l.chip_w > 0 {
        canvas.fill(0, 0, l.chip_w, height, chip_background(bar));
        fonts.label.draw(&mut canvas, CHIP_PAD, l.chip_w - CHIP_PAD, &l.label, bar);
    }
    if !l.title.is_empty() {
        fonts.title.draw(&mut canvas, l.title_x, width - l.title_x, &l.title, title_colour(bar));
    }
    canvas
}

/// 5x7 bitmap glyphs, one byte per row (bit 4 is the left column). Capitals
/// it lacks are drawn as small letters; other characters as a hollow box.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'a' => [0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e],
        'c' => [0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e],
        'd' => [0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f],
        'e' => [0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e],
        'f' => [0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0c],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'm' => [0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e],
        'p' => [0x00, 0x00, 0x1e, 0x11, 0x1e, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0d, 0x13, 0x0f, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e],
        't' => [0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a],
        'x' => [0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        'z' => [0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f],
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        ':' => [0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        ' ' => [0; 7],
        c if c.is_ascii_uppercase() => glyph(c.to_ascii_lowercase()),
        _ => [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoration::BUTTON;
    use crate::origin::HOST_COLOUR;

    const RED: Rgb = Rgb::new(0xd0, 0x30, 0x30);
    const YELLOW: Rgb = Rgb::new(0xf0, 0xe0, 0x40);

    /// The real fonts; the test fails naming the package if they are missing.
    fn dejavu() -> Fonts {
        for p in [REGULAR_FONT, BOLD_FONT] {
            assert!(
                Path::new(p).exists(),
                "{p} missing: install the Debian package fonts-dejavu-core (scripts/setup.sh)"
            );
        }
        let f = Fonts::load_default();
        assert!(f.label.is_true_type() && f.title.is_true_type());
        f
    }

    fn count(c: &Canvas, x0: i32, x1: i32, pred: impl Fn(Rgb) -> bool) -> usize {
        (0..c.h).flat_map(|y| (x0..x1.min(c.w)).map(move |x| (x, y))).filter(|&(x, y)| pred(c.rgb(x, y))).count()
    }

    #[test]
    fn missing_font_falls_back_to_bitmap() {
        let f = Fonts::load(Path::new("/nonexistent/regular.ttf"), Path::new("/nonexistent/bold.ttf"));
        assert!(!f.label.is_true_type() && !f.title.is_true_type());
        assert!(matches!(Face::load(Path::new("/nonexistent/x.ttf"), 13.0), Err(TextError::Read { .. })));
        let not_font = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_font.path(), b"not a font").unwrap();
        assert!(matches!(Face::load(not_font.path(), 13.0), Err(TextError::Invalid { .. })));
        // The bitmap strip still carries the label in the origin colour.
        let c = render_strip(&f, "work-1", RED, "a title", 300, BUTTON);
        let l = layout_strip(&f, "work-1", "a title", 300);
        assert_eq!(l.label, "work-1");
        assert!(count(&c, 0, l.chip_w, |p| p == RED) > 50);
        assert!(count(&c, l.title_x, 300, |p| p == title_colour(RED)) > 30);
    }

    #[test]
    fn truetype_text_is_anti_aliased_in_the_right_colours() {
        let f = dejavu();
        let c = render_strip(&f, "RayOS host", HOST_COLOUR, "user@debian: ~", 400, BUTTON);
        let l = layout_strip(&f, "RayOS host", "user@debian: ~", 400);
        assert_eq!((c.w, c.h), (400, BUTTON));
        assert_eq!(l.title, "user@debian: ~");
        // Chip: white with the label in the host colour, partly blended (anti-aliased).
        assert_eq!(c.rgb(1, 1), WHITE);
        let label_px = count(&c, 0, l.chip_w, |p| p == HOST_COLOUR);
        let blended = count(&c, 0, l.chip_w, |p| p != HOST_COLOUR && p != WHITE);
        assert!(label_px > 40, "{label_px} label pixels");
        assert!(blended > 20, "{blended} edge pixels");
        assert!(count(&c, 0, l.chip_w, |p| p == WHITE) > 100);
        // Title: neutral, after the chip, on the bar colour.
        assert_eq!(c.rgb(l.chip_w + 1, 1), HOST_COLOUR);
        let near = |p: Rgb, q: Rgb| p.r.abs_diff(q.r) < 24 && p.g.abs_diff(q.g) < 24 && p.b.abs_diff(q.b) < 24;
        assert!(count(&c, l.title_x, 400, |p| near(p, TITLE_LIGHT)) > 60);
        assert_eq!(count(&c, l.title_x, 400, |p| p == WHITE), 0);
        // A bold label is wider than the regular title face would draw it.
        assert!(f.label.measure("RayOS host") > f.title.measure("RayOS host"));
    }

    #[test]
    fn long_titles_are_cut_and_never_displace_the_label() {
        let f = dejavu();
        let long = "RayOS host ".repeat(12);
        for width in [60, 120, 200, 300, 800] {
            let l = layout_strip(&f, "debian", &long, width);
            assert_eq!(l.label, "debian", "width {width}");
            assert!(l.chip_w <= width);
            assert_eq!(l.chip_w, f.label.measure("debian") + 2 * CHIP_PAD);
            if !l.title.is_empty() {
                assert!(l.title.ends_with('\u{2026}'), "{:?}", l.title);
                assert!(l.title_x + f.title.measure(&l.title) <= width, "width {width}: {:?}", l.title);
            }
        }
        assert!(layout_strip(&f, "debian", &long, 800).title.chars().count() > 20);
        // A short title fits as it is; none at all leaves just the chip.
        assert_eq!(layout_strip(&f, "debian", "foot", 300).title, "foot");
        assert_eq!(layout_strip(&f, "debian", "", 300).title, "");
        // The chip is capped; a label wider than the cap is cut.
        let wide = "m".repeat(32);
        let l = layout_strip(&f, &wide, "t", 1000);
        assert!(l.chip_w <= MAX_LABEL_WIDTH);
        assert!(l.label.ends_with('\u{2026}'));
        // Too narrow for anything: nothing drawn past the strip.
        assert_eq!(f.title.fit("abc", 0), "");
        assert_eq!(f.title.fit("abcdef", 3), "");
    }

    #[test]
    fn light_origins_get_a_dark_chip_and_dark_title() {
        assert_eq!(chip_background(HOST_COLOUR), WHITE);
        assert_eq!(chip_background(RED), WHITE);
        assert_eq!(chip_background(YELLOW), INK);
        assert_eq!(title_colour(HOST_COLOUR), TITLE_LIGHT);
        assert_eq!(title_colour(YELLOW), TITLE_DARK);
        assert!(contrast(WHITE, INK) > 15.0);
        assert!((contrast(HOST_COLOUR, HOST_COLOUR) - 1.0).abs() < 1e-9);
        let f = dejavu();
        let c = render_strip(&f, "sunny", YELLOW, "x", 200, BUTTON);
        assert_eq!(c.rgb(1, 1), INK);
        assert!(count(&c, 0, 60, |p| p == YELLOW) > 20);
    }

    #[test]
    fn canvas_blends_and_clips() {
        let mut c = Canvas::new(4, 2, Rgb::new(0, 0, 0));
        c.blend(1, 1, WHITE, 1.0);
        c.blend(2, 1, WHITE, 0.5);
        c.blend(9, 9, WHITE, 1.0);
        c.blend(-1, 0, WHITE, 1.0);
        assert_eq!(c.rgb(1, 1), WHITE);
        assert_eq!(c.rgb(2, 1), Rgb::new(128, 128, 128));
        assert_eq!(c.rgb(0, 0), Rgb::new(0, 0, 0));
        assert_eq!(c.px.len(), 4 * 2 * 4);
        assert!(c.px.chunks(4).all(|p| p[3] == 0xff));
        assert_eq!(Canvas::new(0, -3, WHITE).px.len(), 4);
    }
}
