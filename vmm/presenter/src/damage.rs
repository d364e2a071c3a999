//! Damage bookkeeping, pure: a short list of rectangles that grows by
//! union (a rectangle inside another is dropped) and collapses to its
//! bounding box past [`MAX_RECTS`], and the row copy of damaged pixels from
//! one image into another of the same size.

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect { x, y, width, height }
    }

    /// The part of `self` inside a `width` × `height` image, if any.
    pub fn clip(self, width: u32, height: u32) -> Option<Rect> {
        let x1 = (u64::from(self.x) + u64::from(self.width)).min(u64::from(width)) as u32;
        let y1 = (u64::from(self.y) + u64::from(self.height)).min(u64::from(height)) as u32;
        (self.x < x1 && self.y < y1).then(|| Rect::new(self.x, self.y, x1 - self.x, y1 - self.y))
    }

    pub fn area(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    fn right(self) -> u32 {
        self.x + self.width
    }

    fn bottom(self) -> u32 {
        self.y + self.height
    }

    pub fn contains(self, o: Rect) -> bool {
        o.x >= self.x && o.y >= self.y && o.right() <= self.right() && o.bottom() <= self.bottom()
    }

    pub fn union(self, o: Rect) -> Rect {
        let (x, y) = (self.x.min(o.x), self.y.min(o.y));
        Rect::new(x, y, self.right().max(o.right()) - x, self.bottom().max(o.bottom()) - y)
    }
}

/// Most rectangles kept apart; past it the list becomes its bounding box.
pub const MAX_RECTS: usize = 16;

/// Damage not yet shown: a list of rectangles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    rects: Vec<Rect>,
}

impl Damage {
    /// Everything of a `width` × `height` image.
    pub fn full(width: u32, height: u32) -> Damage {
        let mut d = Damage::default();
        d.add(Rect::new(0, 0, width, height));
        d
    }

    pub fn add(&mut self, r: Rect) {
        if r.area() == 0 || self.rects.iter().any(|o| o.contains(r)) {
            return;
        }
        self.rects.retain(|o| !r.contains(*o));
        self.rects.push(r);
        if self.rects.len() > MAX_RECTS {
            let bbox = self.rects.iter().copied().reduce(Rect::union).expect("not empty");
            self.rects = vec![bbox];
        }
    }

    pub fn extend(&mut self, other: &Damage) {
        for r in &other.rects {
            self.add(*r);
        }
    }

    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    pub fn clear(&mut self) {
        self.rects.clear();
    }

    pub fn take(&mut self) -> Damage {
        std::mem::take(self)
    }

    /// Pixels covered, counting overlaps twice (what copying them costs).
    pub fn area(&self) -> u64 {
        self.rects.iter().map(|r| r.area()).sum()
    }
}

/// Copies the pixels of `damage` from `src` (`src_width` pixels a row) to
/// the same place in `dst` (`dst_width` pixels a row), 4 bytes a pixel;
/// returns the bytes copied. Rectangles are clipped to the part both
/// images have.
pub fn copy_damage(src: &[u8], src_width: u32, dst: &mut [u8], dst_width: u32, damage: &Damage) -> u64 {
    let (ss, ds) = (src_width as usize * 4, dst_width as usize * 4);
    if ss == 0 || ds == 0 {
        return 0;
    }
    let width = src_width.min(dst_width);
    let height = (src.len() / ss).min(dst.len() / ds) as u32;
    let mut copied = 0u64;
    for r in damage.rects().iter().filter_map(|r| r.clip(width, height)) {
        let (len, x) = (r.width as usize * 4, r.x as usize * 4);
        for row in r.y as usize..(r.y + r.height) as usize {
            dst[row * ds + x..row * ds + x + len].copy_from_slice(&src[row * ss + x..row * ss + x + len]);
            copied += len as u64;
        }
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_rects_merge_and_many_collapse_to_the_bounding_box() {
        let mut d = Damage::default();
        d.add(Rect::new(10, 10, 64, 64));
        d.add(Rect::new(20, 20, 8, 8));
        assert_eq!(d.rects(), &[Rect::new(10, 10, 64, 64)]);
        d.add(Rect::new(0, 0, 200, 200));
        assert_eq!(d.rects(), &[Rect::new(0, 0, 200, 200)]);
        d.add(Rect::new(5, 5, 0, 9));
        assert_eq!(d.rects().len(), 1, "empty rects are ignored");
        let mut many = Damage::default();
        for i in 0..=MAX_RECTS as u32 {
            many.add(Rect::new(i * 10, 0, 5, 5));
        }
        assert_eq!(many.rects(), &[Rect::new(0, 0, MAX_RECTS as u32 * 10 + 5, 5)]);
    }

    #[test]
    fn clip_keeps_the_inside_and_survives_overflow() {
        assert_eq!(Rect::new(10, 10, 100, 100).clip(50, 40), Some(Rect::new(10, 10, 40, 30)));
        assert_eq!(Rect::new(60, 0, 10, 10).clip(50, 40), None);
        assert_eq!(Rect::new(u32::MAX, 1, u32::MAX, 1).clip(50, 40), None);
        assert_eq!(Rect::new(1, 1, u32::MAX, u32::MAX).clip(50, 40), Some(Rect::new(1, 1, 49, 39)));
    }

    #[test]
    fn a_64_by_64_update_copies_64_by_64_by_4_bytes() {
        let (w, h) = (1280u32, 800u32);
        let src: Vec<u8> = (0..w * h * 4).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        let mut d = Damage::default();
        d.add(Rect::new(100, 200, 64, 64));
        assert_eq!(copy_damage(&src, w, &mut dst, w, &d), 64 * 64 * 4);
        let stride = w as usize * 4;
        for row in 0..h as usize {
            for col in 0..w as usize {
                let i = row * stride + col * 4;
                let inside = (200..264).contains(&row) && (100..164).contains(&col);
                assert_eq!(dst[i..i + 4] == src[i..i + 4], inside || src[i..i + 4] == [0; 4], "({col}, {row})");
            }
        }
    }

    #[test]
    fn copy_clips_to_the_part_both_images_have() {
        let src = vec![7u8; 10 * 4 * 4];
        let mut dst = vec![0u8; 10 * 4 * 2];
        assert_eq!(copy_damage(&src, 10, &mut dst, 10, &Damage::full(10, 4)), 10 * 4 * 2);
        assert!(dst.iter().all(|b| *b == 7));
        // A 10x4 image into a 6x6 buffer: 6x4 pixels copied, row by row.
        let src: Vec<u8> = (0..10 * 4 * 4).map(|i| i as u8).collect();
        let mut dst = vec![0u8; 6 * 6 * 4];
        assert_eq!(copy_damage(&src, 10, &mut dst, 6, &Damage::full(10, 4)), 6 * 4 * 4);
        assert_eq!(&dst[6 * 4..6 * 4 + 24], &src[10 * 4..10 * 4 + 24], "row 1 starts at the source's row 1");
        assert!(dst[6 * 4 * 4..].iter().all(|b| *b == 0), "rows past the image stay black");
    }
}
