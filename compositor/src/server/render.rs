//! The scene: client surfaces and host decorations as render elements.
//!
//! Design note: windows are drawn from the shell's stack, top first (the
//! damage tracker wants elements front to back); each window contributes its
//! surface tree (with popups) at its client rectangle and its decoration
//! around it: solid rectangles in the origin's colour for the title bar and
//! borders, and the origin label ("RayOS host" or the VM's name) in white,
//! drawn with a tiny built-in 5x7 bitmap font at 2x. The decoration buffers
//! live as long as the window, so their ids and commit counters stay the
//! same across frames and an unchanged decoration causes no damage.

use smithay::backend::allocator::Fourcc;
use smithay::backend::renderer::element::memory::{MemoryRenderBuffer, MemoryRenderBufferRenderElement};
use smithay::backend::renderer::element::solid::{SolidColorBuffer, SolidColorRenderElement};
use smithay::backend::renderer::element::surface::WaylandSurfaceRenderElement;
use smithay::backend::renderer::element::{AsRenderElements, Kind};
use smithay::backend::renderer::pixman::PixmanRenderer;
use smithay::render_elements;
use smithay::utils::{Physical, Point, Rectangle, Scale, Transform};

use super::{Mapped, State};
use crate::backend::{BenchDamage, HeadlessError};
use crate::decoration::BUTTON;
use crate::geometry::Rect;
use crate::origin::{Origin, Rgb};
use crate::shell::Shell;
use crate::window::WindowId;

/// Errors of building or rendering the scene.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Backend(#[from] HeadlessError),
    #[error("no window with id {0}")]
    UnknownWindow(WindowId),
}

render_elements! {
    pub OutputElement<=PixmanRenderer>;
    Surface=WaylandSurfaceRenderElement<PixmanRenderer>,
    Solid=SolidColorRenderElement,
    Label=MemoryRenderBufferRenderElement<PixmanRenderer>,
}

/// Glyph scale of the label font.
const FONT_SCALE: i32 = 2;
/// Advance per character (5 columns + 1 gap, scaled).
const ADVANCE: i32 = 6 * FONT_SCALE;

fn colour(rgb: Rgb) -> [f32; 4] {
    [f32::from(rgb.r) / 255.0, f32::from(rgb.g) / 255.0, f32::from(rgb.b) / 255.0, 1.0]
}

/// A window's decoration buffers, kept for its whole life.
pub struct DecorationBuffers {
    title_bar: SolidColorBuffer,
    borders: [SolidColorBuffer; 3],
    label: MemoryRenderBuffer,
    label_w: i32,
}

impl DecorationBuffers {
    pub fn new(origin: &Origin) -> Self {
        let c = colour(origin.colour());
        let (pixels, w, h) = draw_label(origin.label(), origin.colour());
        DecorationBuffers {
            title_bar: SolidColorBuffer::new((1, 1), c),
            borders: [
                SolidColorBuffer::new((1, 1), c),
                SolidColorBuffer::new((1, 1), c),
                SolidColorBuffer::new((1, 1), c),
            ],
            label: MemoryRenderBuffer::from_slice(&pixels, Fourcc::Argb8888, (w, h), 1, Transform::Normal, None),
            label_w: w,
        }
    }
}

fn phys(x: i32, y: i32) -> Point<i32, Physical> {
    Point::from((x, y))
}

/// The elements of one window (surfaces, then decoration), shifted by `-offset`.
fn window_elements(
    renderer: &mut PixmanRenderer,
    shell: &Shell,
    m: &mut Mapped,
    id: WindowId,
    offset: (i32, i32),
    out: &mut Vec<OutputElement>,
) -> Result<(), RenderError> {
    let client = shell.geometry(id).map_err(|_| RenderError::UnknownWindow(id))?;
    let geo = m.window.geometry();
    let loc = phys(client.x - geo.loc.x - offset.0, client.y - geo.loc.y - offset.1);
    let surfaces: Vec<WaylandSurfaceRenderElement<PixmanRenderer>> =
        m.window.render_elements(renderer, loc, Scale::from(1.0), 1.0);
    out.extend(surfaces.into_iter().map(OutputElement::Surface));
    let Ok(Some(deco)) = shell.decoration(id) else { return Ok(()) };
    let shift = |r: Rect| Rect::new(r.x - offset.0, r.y - offset.1, r.w, r.h);
    // The label, clipped to its slot.
    let slot = shift(deco.label_rect);
    let w = slot.w.min(deco_label_w(m));
    if w > 0 {
        let src = Rectangle::new((0.0, 0.0).into(), (f64::from(w), f64::from(BUTTON)).into());
        if let Ok(e) = MemoryRenderBufferRenderElement::from_buffer(
            renderer,
            (f64::from(slot.x), f64::from(slot.y)),
            &m.deco.label,
            None,
            Some(src),
            Some((w, BUTTON).into()),
            Kind::Unspecified,
        ) {
            out.push(OutputElement::Label(e));
        }
    }
    let c = colour(deco.colour);
    let tb = shift(deco.title_bar);
    m.deco.title_bar.update((tb.w, tb.h), c);
    out.push(OutputElement::Solid(SolidColorRenderElement::from_buffer(
        &m.deco.title_bar,
        phys(tb.x, tb.y),
        1.0,
        1.0,
        Kind::Unspecified,
    )));
    for (buf, r) in m.deco.borders.iter_mut().zip(deco.borders.iter()) {
        let r = shift(*r);
        buf.update((r.w, r.h), c);
        out.push(OutputElement::Solid(SolidColorRenderElement::from_buffer(
            buf,
            phys(r.x, r.y),
            1.0,
            1.0,
            Kind::Unspecified,
        )));
    }
    Ok(())
}

fn deco_label_w(m: &Mapped) -> i32 {
    m.deco.label_w
}

/// The whole output's elements, front to back.
fn scene(state: &mut State) -> Vec<OutputElement> {
    let mut out = Vec::new();
    let ids: Vec<WindowId> = state.shell.stack().iter().rev().copied().collect();
    let renderer = state.backend.renderer();
    // The pointer, in front of everything, where the backend draws it.
    if let Some(cursor) = &state.cursor {
        let (x, y) = state.window_pointer;
        if let Ok(e) = MemoryRenderBufferRenderElement::from_buffer(
            renderer,
            (f64::from(x), f64::from(y)),
            cursor,
            None,
            None,
            None,
            Kind::Cursor,
        ) {
            out.push(OutputElement::Label(e));
        }
    }
    for id in ids {
        if state.shell.window(id).is_none_or(|w| w.minimized) {
            continue;
        }
        if let Some(m) = state.windows.get_mut(&id) {
            if let Err(e) = window_elements(renderer, &state.shell, m, id, (0, 0), &mut out) {
                tracing::debug!(error = %e, "window skipped");
            }
        }
    }
    out
}

/// Renders the output (damage-tracked). Returns whether anything was painted.
pub fn render_output(state: &mut State) -> Result<bool, RenderError> {
    let start = std::time::Instant::now();
    let elements = scene(state);
    Ok(state.backend.render_since(&elements, start)?)
}

/// Renders the current scene `frames` times at once (see
/// [`crate::backend::HeadlessBackend::bench`]); per-frame durations in
/// microseconds and the pixels repainted per frame.
pub fn bench_output(state: &mut State, frames: u32, damage: Option<Rect>) -> Result<(Vec<u64>, u64), RenderError> {
    let elements = scene(state);
    let damage = match damage {
        None => BenchDamage::Full,
        Some(r) => BenchDamage::Region(Rectangle::new((r.x, r.y).into(), (r.w, r.h).into())),
    };
    let (times, px) = state.backend.bench(&elements, damage, frames as usize)?;
    Ok((times.iter().map(|t| t.as_micros() as u64).collect(), px))
}

/// Renders the output now and returns its RGBA pixels and size.
pub fn capture_output(state: &mut State) -> Result<(Vec<u8>, u32, u32), RenderError> {
    render_output(state)?;
    let size = state.backend.size();
    let pixels = state.backend.read_rgba(Rectangle::from_size(size))?;
    Ok((pixels, size.w as u32, size.h as u32))
}

/// Renders one window (client area and decoration) alone; RGBA and size.
pub fn capture_window(state: &mut State, id: WindowId) -> Result<(Vec<u8>, u32, u32), RenderError> {
    let frame = state.shell.frame(id).map_err(|_| RenderError::UnknownWindow(id))?;
    let m = state.windows.get_mut(&id).ok_or(RenderError::UnknownWindow(id))?;
    let mut elements = Vec::new();
    window_elements(state.backend.renderer(), &state.shell, m, id, (frame.x, frame.y), &mut elements)?;
    let pixels = state.backend.render_offscreen(frame.w, frame.h, &elements)?;
    Ok((pixels, frame.w as u32, frame.h as u32))
}

// ---- the label font ------------------------------------------------------

/// 5x7 glyphs, one byte per row (bit 4 is the left column).
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
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        ' ' => [0; 7],
        // Anything else (labels never hold it): a hollow box.
        _ => [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f],
    }
}

/// Draws `text` in white on `bg`: ARGB8888 pixels, width, height (= BUTTON).
pub fn draw_label(text: &str, bg: Rgb) -> (Vec<u8>, i32, i32) {
    let n = text.chars().count().max(1) as i32;
    let (w, h) = (n * ADVANCE, BUTTON);
    let bg_px = [bg.b, bg.g, bg.r, 0xff];
    let fg_px = [0xff, 0xff, 0xff, 0xff];
    let mut px = Vec::with_capacity((w * h * 4) as usize);
    for _ in 0..w * h {
        px.extend_from_slice(&bg_px);
    }
    let top = (h - 7 * FONT_SCALE) / 2;
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..FONT_SCALE {
                    for dx in 0..FONT_SCALE {
                        let x = i as i32 * ADVANCE + col * FONT_SCALE + dx;
                        let y = top + row as i32 * FONT_SCALE + dy;
                        let o = ((y * w + x) * 4) as usize;
                        px[o..o + 4].copy_from_slice(&fg_px);
                    }
                }
            }
        }
    }
    (px, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_has_text_pixels() {
        let bg = Rgb::new(0x2e, 0xa0, 0x43);
        let (px, w, h) = draw_label("work-1", bg);
        assert_eq!((w, h), (6 * ADVANCE, BUTTON));
        let white = px.chunks(4).filter(|p| p == &[0xff, 0xff, 0xff, 0xff]).count();
        assert!(white > 50, "{white}");
        assert_eq!(&px[0..4], &[bg.b, bg.g, bg.r, 0xff]);
    }
}

/// Side of the pointer image.
pub const CURSOR_SIZE: i32 = 16;

/// The pointer a backend without a cursor of its own shows: a white arrow
/// with a black outline, hot spot at the top-left corner (ARGB8888).
pub fn cursor_image() -> MemoryRenderBuffer {
    let n = CURSOR_SIZE;
    let mut px = Vec::with_capacity((n * n * 4) as usize);
    for y in 0..n {
        for x in 0..n {
            // Inside the arrow: left edge x = 0, diagonal x = 2y/3, bottom y = n - 3.
            let inside = x <= y * 2 / 3 && y < n - 2;
            let edge = inside && (x == 0 || x == y * 2 / 3 || y == n - 3);
            let bgra = if edge {
                [0, 0, 0, 0xff]
            } else if inside {
                [0xff, 0xff, 0xff, 0xff]
            } else {
                [0, 0, 0, 0]
            };
            px.extend_from_slice(&bgra);
        }
    }
    MemoryRenderBuffer::from_slice(&px, Fourcc::Argb8888, (n, n), 1, Transform::Normal, None)
}
