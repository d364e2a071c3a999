//! The headless backend: one offscreen output rendered with pixman.
//!
//! Design note: the output is a pixman image of fixed size (default
//! 1280x800) in memory, kept across frames, so it always holds the last
//! frame and a render only needs to repaint the damage since then (buffer
//! age 1). Smithay's `OutputDamageTracker` compares the scene's elements
//! (ids and commit counters) with the previous frame: an idle scene renders
//! nothing, which [`RenderStats`] counts. Pixels are read back with the
//! renderer's `ExportMem` copy in RGBA byte order for PNG screenshots; a
//! window shot renders that window alone into a scratch image, so windows
//! above it do not hide it.
//!
//! Every render of the output is timed (from the start of building the
//! scene to the end of painting): the last [`MAX_SAMPLES`] repaint
//! durations are kept for the control API's `stats`. [`HeadlessBackend::bench`]
//! renders the current scene synchronously either in full (buffer age 0, as
//! after a mode change) or with a forced damage region (a [`DamageProbe`]
//! element that draws nothing but reports its area damaged every frame), so
//! the cost of a full repaint and of a small damaged region can be compared
//! on the same scene.

use smithay::backend::allocator::Fourcc;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use smithay::backend::renderer::damage::OutputDamageTracker;
use smithay::backend::renderer::element::{Element, Id, RenderElement};
use smithay::backend::renderer::pixman::{PixmanError, PixmanFrame, PixmanRenderer};
use smithay::backend::renderer::utils::CommitCounter;
use smithay::backend::renderer::{Bind, ExportMem, Offscreen};
use smithay::output::{Mode as OutputMode, Output, PhysicalProperties, Subpixel};
use smithay::reexports::pixman::Image;
use smithay::utils::{Buffer as BufferCoords, Physical, Rectangle, Scale, Size, Transform};

/// Errors of the headless backend.
#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    #[error("pixman renderer: {0}")]
    Renderer(#[from] PixmanError),
    #[error("damage tracking: {0}")]
    Damage(String),
    #[error("region {0:?} is empty or outside the image")]
    BadRegion(Rectangle<i32, Physical>),
}

/// Name of the headless output.
pub const OUTPUT_NAME: &str = "HEADLESS-1";
/// Refresh rate advertised (mHz), also the frame pace.
pub const REFRESH_MHZ: i32 = 60_000;

/// Repaint durations kept for [`HeadlessBackend::render_times`].
pub const MAX_SAMPLES: usize = 512;

/// Render counters (for tests and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Frames that repainted something.
    pub repaints: u64,
    /// Frames with no damage: nothing was painted.
    pub idle_frames: u64,
    /// Pixels repainted, summed over all frames (damage area).
    pub damaged_px: u64,
}

/// What [`HeadlessBackend::bench`] repaints each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchDamage {
    /// The whole output (buffer age 0: nothing of the last frame is reused).
    Full,
    /// Only this region (output pixels), forced damaged every frame.
    Region(Rectangle<i32, Physical>),
}

/// A render element that draws nothing and reports its whole area damaged
/// on every frame: the damage tracker then repaints exactly that region
/// (background and whatever lies below), which is what a client updating
/// that area costs the compositor.
#[derive(Debug, Clone)]
pub struct DamageProbe {
    id: Id,
    commit: CommitCounter,
    area: Rectangle<i32, Physical>,
}

impl DamageProbe {
    pub fn new(area: Rectangle<i32, Physical>) -> Self {
        DamageProbe { id: Id::new(), commit: CommitCounter::default(), area }
    }

    /// Marks the area damaged again (call once per frame).
    pub fn touch(&mut self) {
        self.commit.increment();
    }
}

impl Element for DamageProbe {
    fn id(&self) -> &Id {
        &self.id
    }
    fn current_commit(&self) -> CommitCounter {
        self.commit
    }
    fn src(&self) -> Rectangle<f64, BufferCoords> {
        Rectangle::from_size((f64::from(self.area.size.w), f64::from(self.area.size.h)).into())
    }
    fn geometry(&self, _scale: Scale<f64>) -> Rectangle<i32, Physical> {
        self.area
    }
}

impl RenderElement<PixmanRenderer> for DamageProbe {
    fn draw(
        &self,
        _frame: &mut PixmanFrame<'_, '_>,
        _src: Rectangle<f64, BufferCoords>,
        _dst: Rectangle<i32, Physical>,
        _damage: &[Rectangle<i32, Physical>],
        _opaque_regions: &[Rectangle<i32, Physical>],
    ) -> Result<(), PixmanError> {
        Ok(())
    }
}

/// One offscreen output.
pub struct HeadlessBackend {
    renderer: PixmanRenderer,
    image: Image<'static, 'static>,
    damage: OutputDamageTracker,
    output: Output,
    size: Size<i32, Physical>,
    stats: RenderStats,
    /// Durations of the last repaints (idle frames excluded), oldest first.
    times: VecDeque<Duration>,
    /// Rectangles painted since the last [`take_damage`](Self::take_damage).
    painted: Vec<Rectangle<i32, Physical>>,
}

impl std::fmt::Debug for HeadlessBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadlessBackend").field("size", &self.size).field("stats", &self.stats).finish()
    }
}

/// Colour of the output where no window is (dark grey-blue, #1f2129), RGBA:
/// the control protocol's [`rayos_compositor_ipc::types::BACKGROUND_COLOUR`].
pub const BACKGROUND: [f32; 4] = rayos_compositor_ipc::types::BACKGROUND_COLOUR.rgba_f32();

impl HeadlessBackend {
    /// An output of `w`x`h` pixels; the caller creates its global.
    pub fn new(w: i32, h: i32) -> Result<Self, HeadlessError> {
        Self::with_output(w, h, OUTPUT_NAME, "headless", REFRESH_MHZ)
    }

    /// An offscreen image for an output named `name` (a connector, for a
    /// backend that presents the image on a display).
    pub fn with_output(w: i32, h: i32, name: &str, model: &str, refresh_mhz: i32) -> Result<Self, HeadlessError> {
        let mut renderer = PixmanRenderer::new()?;
        let size: Size<i32, Physical> = (w, h).into();
        let image = renderer.create_buffer(Fourcc::Argb8888, (w, h).into())?;
        let output = Output::new(
            name.to_string(),
            PhysicalProperties {
                size: (0, 0).into(),
                subpixel: Subpixel::Unknown,
                make: "RayOS".into(),
                model: model.into(),
            },
        );
        let mode = OutputMode { size, refresh: refresh_mhz };
        output.change_current_state(Some(mode), Some(Transform::Normal), None, Some((0, 0).into()));
        output.set_preferred(mode);
        let damage = OutputDamageTracker::from_output(&output);
        Ok(HeadlessBackend {
            renderer,
            image,
            damage,
            output,
            size,
            stats: RenderStats::default(),
            times: VecDeque::new(),
            painted: Vec::new(),
        })
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    pub fn size(&self) -> Size<i32, Physical> {
        self.size
    }

    pub fn stats(&self) -> RenderStats {
        self.stats
    }

    /// Durations of the last (at most [`MAX_SAMPLES`]) repaints, oldest first.
    pub fn render_times(&self) -> Vec<Duration> {
        self.times.iter().copied().collect()
    }

    pub fn renderer(&mut self) -> &mut PixmanRenderer {
        &mut self.renderer
    }

    /// One damage-tracked render with buffer age `age`: (pixels painted, time).
    fn render_age<E: RenderElement<PixmanRenderer>>(
        &mut self,
        age: usize,
        elements: &[E],
    ) -> Result<(u64, Duration), HeadlessError> {
        let t0 = Instant::now();
        let mut fb = self.renderer.bind(&mut self.image)?;
        let result = self
            .damage
            .render_output(&mut self.renderer, &mut fb, age, elements, BACKGROUND)
            .map_err(|e| HeadlessError::Damage(format!("{e:?}")))?;
        let px = result
            .damage
            .map(|d| d.iter().map(|r| (r.size.w.max(0) as u64) * (r.size.h.max(0) as u64)).sum())
            .unwrap_or(0);
        if let Some(d) = result.damage {
            self.painted.extend_from_slice(d);
            if self.painted.len() > 64 {
                self.painted = vec![Rectangle::from_size(self.size)];
            }
        }
        Ok((px, t0.elapsed()))
    }

    /// Renders the scene (front to back) onto the output, repainting only
    /// the damage. Returns whether anything was painted.
    pub fn render<E: RenderElement<PixmanRenderer>>(&mut self, elements: &[E]) -> Result<bool, HeadlessError> {
        self.render_since(elements, Instant::now())
    }

    /// [`render`](Self::render), timing the frame from `since` (when the
    /// caller started building the scene) to the end of painting.
    pub fn render_since<E: RenderElement<PixmanRenderer>>(
        &mut self,
        elements: &[E],
        since: Instant,
    ) -> Result<bool, HeadlessError> {
        let (px, _) = self.render_age(1, elements)?;
        let took = since.elapsed();
        let painted = px > 0;
        if painted {
            self.stats.repaints += 1;
            self.stats.damaged_px += px;
            if self.times.len() == MAX_SAMPLES {
                self.times.pop_front();
            }
            self.times.push_back(took);
        } else {
            self.stats.idle_frames += 1;
        }
        Ok(painted)
    }

    /// Renders the scene `frames` times at once, each repainting `damage`,
    /// and returns each frame's duration and damaged pixels. The output ends
    /// up showing the scene; the frames are not counted in [`RenderStats`].
    pub fn bench<E>(
        &mut self,
        elements: &[E],
        damage: BenchDamage,
        frames: usize,
    ) -> Result<(Vec<Duration>, u64), HeadlessError>
    where
        E: RenderElement<PixmanRenderer>,
    {
        // Bring the output up to date first, so only the forced damage counts.
        self.render_age(1, elements)?;
        let mut times = Vec::with_capacity(frames);
        let mut px = 0;
        match damage {
            BenchDamage::Full => {
                for _ in 0..frames {
                    let (p, t) = self.render_age(0, elements)?;
                    times.push(t);
                    px = p;
                }
            }
            BenchDamage::Region(area) => {
                let full = Rectangle::from_size(self.size);
                if area.intersection(full) != Some(area) {
                    return Err(HeadlessError::BadRegion(area));
                }
                let mut probe = DamageProbe::new(area);
                for _ in 0..frames {
                    probe.touch();
                    let scene: Vec<ProbeOr<'_, E>> =
                        std::iter::once(ProbeOr::Probe(&probe)).chain(elements.iter().map(ProbeOr::Scene)).collect();
                    let (p, t) = self.render_age(1, &scene)?;
                    times.push(t);
                    px = p;
                }
                // Without the probe: repaints its area once, to the same scene.
                self.render_age(1, elements)?;
            }
        }
        Ok((times, px))
    }

    /// The rectangles painted since the last call (for a backend that
    /// presents the image elsewhere and copies only what changed).
    pub fn take_damage(&mut self) -> Vec<Rectangle<i32, Physical>> {
        std::mem::take(&mut self.painted)
    }

    /// Reads a region of the output as RGBA rows (no padding).
    pub fn read_rgba(&mut self, region: Rectangle<i32, Physical>) -> Result<Vec<u8>, HeadlessError> {
        let full = Rectangle::from_size(self.size);
        let clipped = region.intersection(full).ok_or(HeadlessError::BadRegion(region))?;
        if clipped != region {
            return Err(HeadlessError::BadRegion(region));
        }
        let fb = self.renderer.bind(&mut self.image)?;
        copy_rgba(&mut self.renderer, &fb, region)
    }

    /// Renders `elements` alone into a fresh `w`x`h` image (elements placed
    /// relative to its top-left corner) and returns its RGBA pixels.
    pub fn render_offscreen<E: RenderElement<PixmanRenderer>>(
        &mut self,
        w: i32,
        h: i32,
        elements: &[E],
    ) -> Result<Vec<u8>, HeadlessError> {
        let mut image: Image<'static, 'static> = self.renderer.create_buffer(Fourcc::Argb8888, (w, h).into())?;
        let mut tracker = OutputDamageTracker::new((w, h), 1.0, Transform::Normal);
        let mut fb = self.renderer.bind(&mut image)?;
        tracker
            .render_output(&mut self.renderer, &mut fb, 0, elements, BACKGROUND)
            .map_err(|e| HeadlessError::Damage(format!("{e:?}")))?;
        copy_rgba(&mut self.renderer, &fb, Rectangle::from_size((w, h).into()))
    }
}

/// The scene with a [`DamageProbe`] on top (for [`HeadlessBackend::bench`]).
enum ProbeOr<'a, E> {
    Probe(&'a DamageProbe),
    Scene(&'a E),
}

impl<E: Element> Element for ProbeOr<'_, E> {
    fn id(&self) -> &Id {
        match self {
            ProbeOr::Probe(p) => p.id(),
            ProbeOr::Scene(e) => e.id(),
        }
    }
    fn current_commit(&self) -> CommitCounter {
        match self {
            ProbeOr::Probe(p) => p.current_commit(),
            ProbeOr::Scene(e) => e.current_commit(),
        }
    }
    fn location(&self, scale: Scale<f64>) -> smithay::utils::Point<i32, Physical> {
        match self {
            ProbeOr::Probe(p) => p.location(scale),
            ProbeOr::Scene(e) => e.location(scale),
        }
    }
    fn src(&self) -> Rectangle<f64, BufferCoords> {
        match self {
            ProbeOr::Probe(p) => p.src(),
            ProbeOr::Scene(e) => e.src(),
        }
    }
    fn transform(&self) -> Transform {
        match self {
            ProbeOr::Probe(p) => p.transform(),
            ProbeOr::Scene(e) => e.transform(),
        }
    }
    fn geometry(&self, scale: Scale<f64>) -> Rectangle<i32, Physical> {
        match self {
            ProbeOr::Probe(p) => p.geometry(scale),
            ProbeOr::Scene(e) => e.geometry(scale),
        }
    }
    fn damage_since(
        &self,
        scale: Scale<f64>,
        commit: Option<CommitCounter>,
    ) -> smithay::backend::renderer::utils::DamageSet<i32, Physical> {
        match self {
            ProbeOr::Probe(p) => p.damage_since(scale, commit),
            ProbeOr::Scene(e) => e.damage_since(scale, commit),
        }
    }
    fn opaque_regions(&self, scale: Scale<f64>) -> smithay::backend::renderer::utils::OpaqueRegions<i32, Physical> {
        match self {
            ProbeOr::Probe(p) => p.opaque_regions(scale),
            ProbeOr::Scene(e) => e.opaque_regions(scale),
        }
    }
    fn alpha(&self) -> f32 {
        match self {
            ProbeOr::Probe(p) => p.alpha(),
            ProbeOr::Scene(e) => e.alpha(),
        }
    }
    fn kind(&self) -> smithay::backend::renderer::element::Kind {
        match self {
            ProbeOr::Probe(p) => p.kind(),
            ProbeOr::Scene(e) => e.kind(),
        }
    }
}

impl<E: RenderElement<PixmanRenderer>> RenderElement<PixmanRenderer> for ProbeOr<'_, E> {
    fn draw(
        &self,
        frame: &mut PixmanFrame<'_, '_>,
        src: Rectangle<f64, BufferCoords>,
        dst: Rectangle<i32, Physical>,
        damage: &[Rectangle<i32, Physical>],
        opaque_regions: &[Rectangle<i32, Physical>],
    ) -> Result<(), PixmanError> {
        match self {
            ProbeOr::Probe(p) => p.draw(frame, src, dst, damage, opaque_regions),
            ProbeOr::Scene(e) => e.draw(frame, src, dst, damage, opaque_regions),
        }
    }
}

fn copy_rgba(
    renderer: &mut PixmanRenderer,
    fb: &<PixmanRenderer as smithay::backend::renderer::RendererSuper>::Framebuffer<'_>,
    region: Rectangle<i32, Physical>,
) -> Result<Vec<u8>, HeadlessError> {
    let buffer_region = Rectangle::new((region.loc.x, region.loc.y).into(), (region.size.w, region.size.h).into());
    // Abgr8888 is R, G, B, A in memory on little-endian machines: PNG's RGBA.
    let mapping = renderer.copy_framebuffer(fb, buffer_region, Fourcc::Abgr8888)?;
    let bytes = renderer.map_texture(&mapping)?;
    let (w, h) = (region.size.w as usize, region.size.h as usize);
    let stride = bytes.len() / h.max(1);
    let mut out = Vec::with_capacity(w * h * 4);
    for row in 0..h {
        out.extend_from_slice(&bytes[row * stride..row * stride + w * 4]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smithay::backend::renderer::element::solid::{SolidColorBuffer, SolidColorRenderElement};
    use smithay::backend::renderer::element::Kind;

    fn element(buf: &SolidColorBuffer, x: i32, y: i32) -> SolidColorRenderElement {
        SolidColorRenderElement::from_buffer(buf, (x, y), 1.0, 1.0, Kind::Unspecified)
    }

    #[test]
    fn idle_scene_does_not_repaint() {
        let mut b = HeadlessBackend::new(320, 200).unwrap();
        let mut buf = SolidColorBuffer::new((40, 30), [1.0, 0.0, 0.0, 1.0]);
        assert!(b.render(&[element(&buf, 10, 10)]).unwrap(), "first frame paints");
        for _ in 0..3 {
            assert!(!b.render(&[element(&buf, 10, 10)]).unwrap(), "unchanged scene paints nothing");
        }
        assert_eq!((b.stats().repaints, b.stats().idle_frames), (1, 3));
        assert_eq!(b.stats().damaged_px, 320 * 200, "the first frame paints the whole output");
        assert_eq!(b.render_times().len(), 1, "only repaints are timed");
        buf.set_color([0.0, 0.0, 1.0, 1.0]);
        assert!(b.render(&[element(&buf, 10, 10)]).unwrap(), "a changed element paints");
        let px = b.read_rgba(Rectangle::new((10, 10).into(), (1, 1).into())).unwrap();
        assert_eq!(px, vec![0, 0, 255, 255]);
        let bg = b.read_rgba(Rectangle::new((0, 0).into(), (1, 1).into())).unwrap();
        assert_eq!(bg[3], 255);
        assert!(b.read_rgba(Rectangle::new((310, 0).into(), (20, 1).into())).is_err());
    }

    #[test]
    fn bench_repaints_full_or_only_the_region() {
        let mut b = HeadlessBackend::new(320, 200).unwrap();
        let buf = SolidColorBuffer::new((40, 30), [1.0, 0.0, 0.0, 1.0]);
        let scene = [element(&buf, 10, 10)];
        b.render(&scene).unwrap();
        let before = b.stats();
        let (times, px) = b.bench(&scene, BenchDamage::Full, 3).unwrap();
        assert_eq!((times.len(), px), (3, 320 * 200));
        let area = Rectangle::new((20, 20).into(), (64, 64).into());
        let (times, px) = b.bench(&scene, BenchDamage::Region(area), 4).unwrap();
        assert_eq!((times.len(), px), (4, 64 * 64));
        assert_eq!(b.stats(), before, "bench frames are not counted");
        assert!(!b.render(&scene).unwrap(), "after a bench the scene is idle again");
        let px = b.read_rgba(Rectangle::new((20, 20).into(), (1, 1).into())).unwrap();
        assert_eq!(px, vec![255, 0, 0, 255], "the scene is intact under the probe's area");
        let outside = Rectangle::new((300, 190).into(), (64, 64).into());
        assert!(b.bench(&scene, BenchDamage::Region(outside), 1).is_err());
    }

    #[test]
    fn offscreen_render_places_elements() {
        let mut b = HeadlessBackend::new(320, 200).unwrap();
        let buf = SolidColorBuffer::new((4, 4), [0.0, 1.0, 0.0, 1.0]);
        let px = b.render_offscreen(8, 8, &[element(&buf, 4, 4)]).unwrap();
        assert_eq!(px.len(), 8 * 8 * 4);
        let at = |x: usize, y: usize| &px[(y * 8 + x) * 4..(y * 8 + x) * 4 + 4];
        assert_eq!(at(5, 5), &[0, 255, 0, 255]);
        assert_ne!(at(1, 1), &[0, 255, 0, 255]);
    }
}
