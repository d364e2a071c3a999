//! The scene: client surfaces and host decorations as render elements.
//!
//! Design note: windows are drawn from the shell's stack, top first (the
//! damage tracker wants elements front to back); each window contributes its
//! surface tree (with popups) at its client rectangle and its decoration
//! around it: solid rectangles in the origin's colour for the title bar and
//! borders, and over the title bar one text strip holding the origin label
//! chip and the client's title (rasterised by [`crate::text`]). The
//! decoration buffers live as long as the window, so their ids and commit
//! counters stay the same across frames and an unchanged decoration causes
//! no damage; the text strip is rasterised again only when the window's
//! title or the strip's width changes.

use smithay::backend::allocator::Fourcc;
use smithay::backend::renderer::element::memory::{MemoryRenderBuffer, MemoryRenderBufferRenderElement};
use smithay::backend::renderer::element::solid::{SolidColorBuffer, SolidColorRenderElement};
use smithay::backend::renderer::element::surface::{render_elements_from_surface_tree, WaylandSurfaceRenderElement};
use smithay::backend::renderer::element::utils::CropRenderElement;
use smithay::backend::renderer::element::Kind;
use smithay::backend::renderer::pixman::PixmanRenderer;
use smithay::desktop::PopupManager;
use smithay::input::pointer::{CursorImageStatus, CursorImageSurfaceData};
use smithay::reexports::wayland_server::Resource;
use smithay::render_elements;
use smithay::utils::{Physical, Point, Rectangle, Scale, Transform};
use smithay::wayland::compositor::with_states;

use super::{Mapped, State};
use crate::backend::{BenchDamage, HeadlessError};
use crate::decoration::BUTTON;
use crate::geometry::Rect;
use crate::origin::{Origin, Rgb};
use crate::shell::Shell;
use crate::text::{self, Fonts};
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
    Clipped=CropRenderElement<WaylandSurfaceRenderElement<PixmanRenderer>>,
    Solid=SolidColorRenderElement,
    Label=MemoryRenderBufferRenderElement<PixmanRenderer>,
}

fn colour(rgb: Rgb) -> [f32; 4] {
    [f32::from(rgb.r) / 255.0, f32::from(rgb.g) / 255.0, f32::from(rgb.b) / 255.0, 1.0]
}

/// A window's decoration buffers, kept for its whole life.
pub struct DecorationBuffers {
    title_bar: SolidColorBuffer,
    borders: [SolidColorBuffer; 3],
    /// The label chip and title, and the title and width it was drawn for.
    text: Option<TextStrip>,
    /// How many times the text strip was rasterised.
    strip_renders: u64,
}

struct TextStrip {
    title: String,
    width: i32,
    buffer: MemoryRenderBuffer,
}

impl DecorationBuffers {
    pub fn new(origin: &Origin) -> Self {
        let c = colour(origin.colour());
        DecorationBuffers {
            title_bar: SolidColorBuffer::new((1, 1), c),
            borders: [
                SolidColorBuffer::new((1, 1), c),
                SolidColorBuffer::new((1, 1), c),
                SolidColorBuffer::new((1, 1), c),
            ],
            text: None,
            strip_renders: 0,
        }
    }

    /// The text strip for `title` at `width`, rasterised again only if
    /// either changed since the last call.
    fn strip(&mut self, fonts: &Fonts, label: &str, bar: Rgb, title: &str, width: i32) -> &MemoryRenderBuffer {
        let stale = self.text.as_ref().is_none_or(|t| t.title != title || t.width != width);
        if stale {
            let c = text::render_strip(fonts, label, bar, title, width, BUTTON);
            let buffer =
                MemoryRenderBuffer::from_slice(&c.px, Fourcc::Argb8888, (c.w, c.h), 1, Transform::Normal, None);
            self.strip_renders += 1;
            self.text = Some(TextStrip { title: title.to_string(), width, buffer });
        }
        &self.text.as_ref().expect("just set").buffer
    }
}

fn phys(x: i32, y: i32) -> Point<i32, Physical> {
    Point::from((x, y))
}

/// The elements of one window (surfaces, then decoration), shifted by
/// `-offset`; returns whether its client buffer is among them.
fn window_elements(
    renderer: &mut PixmanRenderer,
    fonts: &Fonts,
    shell: &Shell,
    m: &mut Mapped,
    id: WindowId,
    offset: (i32, i32),
    out: &mut Vec<OutputElement>,
) -> Result<bool, RenderError> {
    let client = shell.geometry(id).map_err(|_| RenderError::UnknownWindow(id))?;
    let geo = m.window.geometry();
    let loc = phys(client.x - geo.loc.x - offset.0, client.y - geo.loc.y - offset.1);
    // Front to back: the host decoration, then the window's popups, then its
    // surface tree clipped to the client area. A client (a guest, say) whose
    // buffer is larger than its window, or whose subsurfaces reach outside
    // it, can never paint over the host's frame and label.
    if let Ok(Some(deco)) = shell.decoration(id) {
        decoration_elements(renderer, fonts, shell, m, id, &deco, offset, out);
    }
    let Some(toplevel) = m.window.toplevel().map(|t| t.wl_surface().clone()) else { return Ok(false) };
    for (popup, popup_offset) in PopupManager::popups_for_surface(&toplevel) {
        let at = loc + (geo.loc + popup_offset - popup.geometry().loc).to_physical_precise_round(1.0);
        let elements: Vec<WaylandSurfaceRenderElement<PixmanRenderer>> = render_elements_from_surface_tree(
            renderer,
            popup.wl_surface(),
            at,
            Scale::from(1.0),
            1.0,
            Kind::Unspecified,
        );
        out.extend(elements.into_iter().map(OutputElement::Surface));
    }
    let clip =
        Rectangle::<i32, Physical>::new(phys(client.x - offset.0, client.y - offset.1), (client.w, client.h).into());
    let surfaces: Vec<WaylandSurfaceRenderElement<PixmanRenderer>> =
        render_elements_from_surface_tree(renderer, &toplevel, loc, Scale::from(1.0), 1.0, Kind::Unspecified);
    let drawn = !surfaces.is_empty();
    out.extend(
        surfaces
            .into_iter()
            .filter_map(|e| CropRenderElement::from_element(e, Scale::from(1.0), clip))
            .map(OutputElement::Clipped),
    );
    Ok(drawn)
}

/// A window's decoration: the text strip (label chip and title) over the
/// title bar, then the title bar and borders, front to back.
#[allow(clippy::too_many_arguments)]
fn decoration_elements(
    renderer: &mut PixmanRenderer,
    fonts: &Fonts,
    shell: &Shell,
    m: &mut Mapped,
    id: WindowId,
    deco: &crate::decoration::Decoration,
    offset: (i32, i32),
    out: &mut Vec<OutputElement>,
) {
    let shift = |r: Rect| Rect::new(r.x - offset.0, r.y - offset.1, r.w, r.h);
    // The label chip and the title, over the title bar.
    let slot = shift(deco.label_rect);
    let width = (deco.title_rect.right() - deco.label_rect.x).max(deco.label_rect.w);
    if width > 0 {
        let title = shell.window(id).map(|w| w.title.as_str()).unwrap_or_default();
        let buffer = m.deco.strip(fonts, &deco.label, deco.colour, title, width);
        if let Ok(e) = MemoryRenderBufferRenderElement::from_buffer(
            renderer,
            (f64::from(slot.x), f64::from(slot.y)),
            buffer,
            None,
            None,
            None,
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
}

/// The whole output's elements, front to back, and the windows whose client
/// buffers are among them.
fn scene(state: &mut State) -> (Vec<OutputElement>, Vec<WindowId>) {
    let mut out = Vec::new();
    let mut drawn = Vec::new();
    let ids: Vec<WindowId> = state.shell.stack().iter().rev().copied().collect();
    let renderer = state.offscreen.renderer();
    // The pointer, in front of everything, where the compositor draws it:
    // the client's cursor surface at its hotspot, or the default arrow.
    if let Some(cursor) = &state.cursor {
        let (x, y) = state.window_pointer;
        match &state.cursor_status {
            CursorImageStatus::Hidden => {}
            CursorImageStatus::Surface(s) if s.is_alive() => {
                let hotspot = with_states(s, |st| {
                    st.data_map.get::<CursorImageSurfaceData>().and_then(|d| d.lock().ok().map(|a| a.hotspot))
                })
                .unwrap_or_default();
                let (cx, cy) = cursor_origin((x, y), (hotspot.x, hotspot.y));
                let elements: Vec<WaylandSurfaceRenderElement<PixmanRenderer>> =
                    render_elements_from_surface_tree(renderer, s, phys(cx, cy), Scale::from(1.0), 1.0, Kind::Cursor);
                out.extend(elements.into_iter().map(OutputElement::Surface));
            }
            _ => {
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
        }
    }
    for id in ids {
        if state.shell.window(id).is_none_or(|w| w.minimized) {
            continue;
        }
        if let Some(m) = state.windows.get_mut(&id) {
            match window_elements(renderer, &state.fonts, &state.shell, m, id, (0, 0), &mut out) {
                Ok(true) => drawn.push(id),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "window skipped"),
            }
        }
    }
    (out, drawn)
}

/// Renders the output (damage-tracked). Returns whether anything was painted.
/// Windows shown for the first time get their `first_content_ms`.
pub fn render_output(state: &mut State) -> Result<bool, RenderError> {
    let start = std::time::Instant::now();
    let (elements, drawn) = scene(state);
    let painted = state.offscreen.render_since(&elements, start)?;
    let now = state.elapsed_ms();
    for id in drawn {
        if state.shell.record_first_content(id, now) {
            tracing::debug!(%id, first_content_ms = now, "window's first frame shown");
        }
    }
    Ok(painted)
}

/// Renders the current scene `frames` times at once (see
/// [`crate::backend::HeadlessBackend::bench`]); per-frame durations in
/// microseconds and the pixels repainted per frame.
pub fn bench_output(state: &mut State, frames: u32, damage: Option<Rect>) -> Result<(Vec<u64>, u64), RenderError> {
    let (elements, _) = scene(state);
    let damage = match damage {
        None => BenchDamage::Full,
        Some(r) => BenchDamage::Region(Rectangle::new((r.x, r.y).into(), (r.w, r.h).into())),
    };
    let (times, px) = state.offscreen.bench(&elements, damage, frames as usize)?;
    Ok((times.iter().map(|t| t.as_micros() as u64).collect(), px))
}

/// Renders the output now and returns its RGBA pixels and size.
pub fn capture_output(state: &mut State) -> Result<(Vec<u8>, u32, u32), RenderError> {
    render_output(state)?;
    let size = state.offscreen.size();
    let pixels = state.offscreen.read_rgba(Rectangle::from_size(size))?;
    Ok((pixels, size.w as u32, size.h as u32))
}

/// Renders one window (client area and decoration) alone; RGBA and size.
pub fn capture_window(state: &mut State, id: WindowId) -> Result<(Vec<u8>, u32, u32), RenderError> {
    let frame = state.shell.frame(id).map_err(|_| RenderError::UnknownWindow(id))?;
    let m = state.windows.get_mut(&id).ok_or(RenderError::UnknownWindow(id))?;
    let mut elements = Vec::new();
    window_elements(state.offscreen.renderer(), &state.fonts, &state.shell, m, id, (frame.x, frame.y), &mut elements)?;
    let pixels = state.offscreen.render_offscreen(frame.w, frame.h, &elements)?;
    Ok((pixels, frame.w as u32, frame.h as u32))
}

/// Where a cursor image goes: its hotspot on the pointer position.
pub fn cursor_origin(pointer: (i32, i32), hotspot: (i32, i32)) -> (i32, i32) {
    (pointer.0.saturating_sub(hotspot.0), pointer.1.saturating_sub(hotspot.1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_hotspot_sits_on_the_pointer() {
        assert_eq!(cursor_origin((100, 50), (0, 0)), (100, 50));
        assert_eq!(cursor_origin((100, 50), (7, 12)), (93, 38));
        assert_eq!(cursor_origin((0, 0), (4, 4)), (-4, -4));
        assert_eq!(cursor_origin((i32::MIN, 0), (1, 0)), (i32::MIN, 0));
    }

    #[test]
    fn text_strip_is_rasterised_only_when_title_or_width_changes() {
        let origin = Origin::Vm { name: "work".into(), colour: Rgb::new(0xd0, 0x30, 0x30) };
        let fonts = Fonts::bitmap();
        let mut d = DecorationBuffers::new(&origin);
        d.strip(&fonts, "work", origin.colour(), "one", 200);
        assert_eq!(d.strip_renders, 1);
        // Same title and width: the same buffer, so no damage.
        d.strip(&fonts, "work", origin.colour(), "one", 200);
        assert_eq!(d.strip_renders, 1);
        d.strip(&fonts, "work", origin.colour(), "two", 200);
        assert_eq!(d.strip_renders, 2);
        d.strip(&fonts, "work", origin.colour(), "two", 300);
        assert_eq!(d.strip_renders, 3);
        d.strip(&fonts, "work", origin.colour(), "two", 300);
        assert_eq!(d.strip_renders, 3);
    }
}
