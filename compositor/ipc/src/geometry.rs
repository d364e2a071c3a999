//! Integer rectangles in output (logical pixel) coordinates.
//!
//! Design note: the whole shell core works in one coordinate space, the
//! output's logical pixels with (0, 0) at its top-left corner, y growing
//! downwards. Sizes are `i32` like Smithay's `Rectangle<i32, Logical>`, so
//! the Smithay layer converts with a field copy. A rectangle is half-open:
//! it covers `x..x + w` and `y..y + h`, and one with `w <= 0` or `h <= 0`
//! is empty. Arithmetic saturates so a hostile size cannot overflow. Nothing
//! here can fail, so this module's error enum exists only to keep the
//! crate's one-enum-per-module rule and to validate output sizes.

use serde::{Deserialize, Serialize};

/// The host decoration around every window (the compositor draws it; window
/// screenshots and test checks measure against it). Height of the title bar.
pub const TITLE_HEIGHT: i32 = 28;
/// Width of the side and bottom borders of a floating window.
pub const BORDER: i32 = 4;
/// Padding around the buttons and the label inside the title bar.
pub const PAD: i32 = 4;
/// Side of the square close and maximize buttons.
pub const BUTTON: i32 = TITLE_HEIGHT - 2 * PAD;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// An output size outside the range the shell supports.
    #[error("output size {w}x{h} is outside {min_w}x{min_h}..={max}x{max}")]
    BadOutputSize { w: i32, h: i32, min_w: i32, min_h: i32, max: i32 },
}

/// Largest width or height the shell accepts for anything (outputs, windows).
pub const MAX_DIMENSION: i32 = 16384;
/// Smallest output the shell supports (room for one decorated minimum window).
pub const MIN_OUTPUT_W: i32 = 320;
/// Smallest output height the shell supports.
pub const MIN_OUTPUT_H: i32 = 200;

/// A width and a height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Size {
    pub w: i32,
    pub h: i32,
}

impl Size {
    pub const fn new(w: i32, h: i32) -> Self {
        Size { w, h }
    }

    /// Checks that this size is usable as an output.
    pub fn validate_output(self) -> Result<Size, GeometryError> {
        if self.w < MIN_OUTPUT_W || self.h < MIN_OUTPUT_H || self.w > MAX_DIMENSION || self.h > MAX_DIMENSION {
            return Err(GeometryError::BadOutputSize {
                w: self.w,
                h: self.h,
                min_w: MIN_OUTPUT_W,
                min_h: MIN_OUTPUT_H,
                max: MAX_DIMENSION,
            });
        }
        Ok(self)
    }

    /// The rectangle of an output of this size.
    pub const fn rect(self) -> Rect {
        Rect::new(0, 0, self.w, self.h)
    }
}

/// A half-open rectangle: `x..x+w` by `y..y+h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

impl Rect {
    pub const fn new(x: i32, y: i32, w: i32, h: i32) -> Self {
        Rect { x, y, w, h }
    }

    /// One past the right-most column.
    pub fn right(&self) -> i32 {
        self.x.saturating_add(self.w)
    }

    /// One past the bottom row.
    pub fn bottom(&self) -> i32 {
        self.y.saturating_add(self.h)
    }

    pub fn size(&self) -> Size {
        Size::new(self.w, self.h)
    }

    pub fn is_empty(&self) -> bool {
        self.w <= 0 || self.h <= 0
    }

    /// Whether the point lies inside.
    pub fn contains(&self, px: i32, py: i32) -> bool {
        !self.is_empty() && px >= self.x && px < self.right() && py >= self.y && py < self.bottom()
    }

    /// The overlap of two rectangles, if any pixel is shared.
    pub fn intersection(&self, other: &Rect) -> Option<Rect> {
        if self.is_empty() || other.is_empty() {
            return None;
        }
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        let r = self.right().min(other.right());
        let b = self.bottom().min(other.bottom());
        (r > x && b > y).then(|| Rect::new(x, y, r - x, b - y))
    }

    /// Whether any pixel is shared.
    pub fn intersects(&self, other: &Rect) -> bool {
        self.intersection(other).is_some()
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_rect(&self, other: &Rect) -> bool {
        other.x >= self.x && other.y >= self.y && other.right() <= self.right() && other.bottom() <= self.bottom()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_is_half_open() {
        let a = Rect::new(0, 0, 10, 10);
        assert!(!a.intersects(&Rect::new(10, 0, 5, 5)));
        assert_eq!(a.intersection(&Rect::new(9, 9, 5, 5)), Some(Rect::new(9, 9, 1, 1)));
        assert!(!a.intersects(&Rect::new(2, 2, 0, 4)));
    }

    #[test]
    fn contains_is_half_open() {
        let a = Rect::new(5, 5, 2, 2);
        assert!(a.contains(5, 6));
        assert!(!a.contains(7, 5));
        assert!(a.contains_rect(&Rect::new(5, 5, 2, 1)));
        assert!(!a.contains_rect(&Rect::new(4, 5, 2, 1)));
    }

    #[test]
    fn output_size_limits() {
        assert!(Size::new(1920, 1080).validate_output().is_ok());
        assert!(Size::new(100, 1080).validate_output().is_err());
        assert!(Size::new(1920, MAX_DIMENSION + 1).validate_output().is_err());
    }

    #[test]
    fn saturating_edges() {
        let r = Rect::new(i32::MAX - 1, 0, 100, 1);
        assert_eq!(r.right(), i32::MAX);
    }
}
