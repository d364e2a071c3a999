//! Server-side decorations: layout, trust label and hit-testing.
//!
//! Design note: every window the host shows is framed by a decoration the
//! host draws (xdg-decoration is always answered with server-side mode). The
//! decoration lies entirely *outside* the client rectangle: a title bar of
//! [`TITLE_HEIGHT`] above it and, for floating windows, a [`BORDER`] on the
//! other three sides. A client can only draw inside its own rectangle, so it
//! can never paint over its decoration; the label in the title bar is the
//! origin's ("RayOS host" or the VM's name) in the origin's colour, never the
//! client's title, so a guest cannot pass for the host. The client's
//! sanitised title is shown after the label, in a neutral colour and cut to
//! the room left (see [`crate::text`], which draws both: the label as a chip
//! at most [`MAX_LABEL_WIDTH`] wide starting at `label_rect`, the title
//! right after it, up to the end of `title_rect`).
//!
//! Styles follow the window state:
//! - floating: title bar + borders (the borders and the top strip of the
//!   title bar are resize handles);
//! - maximized, or fullscreen for a VM: title bar only. A VM's fullscreen
//!   window keeps the title bar as a trust strip, so a full-screen guest can
//!   never fake a host screen;
//! - fullscreen for the host: no decoration.
//!
//! Hit-testing maps a pointer position to what it would act on; the Smithay
//! layer turns [`Hit::TitleBar`] into a move grab, [`Hit::Resize`] into a
//! resize grab, and the buttons into close/maximize.

use serde::{Deserialize, Serialize};

use crate::geometry::Rect;
use crate::origin::{Origin, Rgb};

/// Errors of decoration layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecorationError {
    #[error("client rectangle {0:?} is empty")]
    EmptyClient(Rect),
}

/// The decoration's sizes live with the control protocol, so clients that
/// check screenshots (rayos-smoke) take the same numbers.
pub use rayos_compositor_ipc::geometry::{BORDER, BUTTON, PAD, TITLE_HEIGHT};
/// Widest label slot.
pub const MAX_LABEL_WIDTH: i32 = 240;
/// Length along an edge that counts as a corner for resizing.
pub const CORNER: i32 = 16;

/// Which decoration a window gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecorationStyle {
    /// Title bar and borders.
    Full,
    /// Title bar only (maximized, or a VM's fullscreen trust strip).
    TitleOnly,
    /// Nothing (the host's own fullscreen windows).
    None,
}

impl DecorationStyle {
    /// The style for a window of this origin in this state.
    pub fn for_state(origin: &Origin, maximized: bool, fullscreen: bool) -> Self {
        match (origin, fullscreen, maximized) {
            (Origin::Host, true, _) => DecorationStyle::None,
            (_, true, _) | (_, false, true) => DecorationStyle::TitleOnly,
            _ => DecorationStyle::Full,
        }
    }

    /// Space the decoration takes on each side of the client.
    pub fn insets(self) -> Insets {
        match self {
            DecorationStyle::Full => Insets { left: BORDER, top: TITLE_HEIGHT, right: BORDER, bottom: BORDER },
            DecorationStyle::TitleOnly => Insets { left: 0, top: TITLE_HEIGHT, right: 0, bottom: 0 },
            DecorationStyle::None => Insets::default(),
        }
    }
}

/// Widths of a decoration on each side of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insets {
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
}

impl Insets {
    /// The frame (client plus decoration) around a client rectangle.
    pub fn frame(&self, client: Rect) -> Rect {
        Rect::new(
            client.x - self.left,
            client.y - self.top,
            client.w + self.left + self.right,
            client.h + self.top + self.bottom,
        )
    }

    /// The client rectangle inside a frame.
    pub fn client(&self, frame: Rect) -> Rect {
        Rect::new(
            frame.x + self.left,
            frame.y + self.top,
            frame.w - self.left - self.right,
            frame.h - self.top - self.bottom,
        )
    }

    pub fn horizontal(&self) -> i32 {
        self.left + self.right
    }

    pub fn vertical(&self) -> i32 {
        self.top + self.bottom
    }
}

/// A resize edge or corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    Top,
    Bottom,
    Left,
    Right,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// What a pointer position acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hit {
    /// Inside the client's own area: events go to the client.
    Client,
    /// The title bar (and its label): dragging moves the window.
    TitleBar,
    /// A border: dragging resizes from that edge.
    Resize(Edge),
    Close,
    Maximize,
    /// Outside the window.
    Nothing,
}

/// The laid-out decoration of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoration {
    pub style: DecorationStyle,
    /// The client rectangle it surrounds.
    pub client: Rect,
    /// Client plus decoration.
    pub frame: Rect,
    pub title_bar: Rect,
    /// Left, right and bottom borders (empty for [`DecorationStyle::TitleOnly`]).
    pub borders: Vec<Rect>,
    /// The trust label: from the origin, never from the client.
    pub label: String,
    pub colour: Rgb,
    pub label_rect: Rect,
    /// Slot for the client's (sanitised) title, right of the label.
    pub title_rect: Rect,
    pub close: Rect,
    pub maximize: Rect,
}

impl Decoration {
    /// Lays out the decoration of a client rectangle; `None` for
    /// [`DecorationStyle::None`].
    pub fn layout(client: Rect, origin: &Origin, style: DecorationStyle) -> Result<Option<Self>, DecorationError> {
        if client.is_empty() {
            return Err(DecorationError::EmptyClient(client));
        }
        if style == DecorationStyle::None {
            return Ok(None);
        }
        let insets = style.insets();
        let frame = insets.frame(client);
        let title_bar = Rect::new(frame.x, frame.y, frame.w, TITLE_HEIGHT);
        let borders = if style == DecorationStyle::Full {
            vec![
                Rect::new(frame.x, client.y, BORDER, client.h),
                Rect::new(client.right(), client.y, BORDER, client.h),
                Rect::new(frame.x, client.bottom(), frame.w, BORDER),
            ]
        } else {
            Vec::new()
        };
        let inner_right = title_bar.right() - if style == DecorationStyle::Full { BORDER } else { 0 };
        let inner_left = title_bar.x + if style == DecorationStyle::Full { BORDER } else { 0 };
        let by = title_bar.y + PAD;
        let close = Rect::new(inner_right - PAD - BUTTON, by, BUTTON, BUTTON);
        let maximize = Rect::new(close.x - PAD - BUTTON, by, BUTTON, BUTTON);
        let label_x = inner_left + PAD;
        let avail = (maximize.x - PAD - label_x).max(0);
        let label_rect = Rect::new(label_x, by, avail.min(MAX_LABEL_WIDTH), BUTTON);
        let title_x = label_rect.right() + PAD;
        let title_rect = Rect::new(title_x, by, (maximize.x - PAD - title_x).max(0), BUTTON);
        Ok(Some(Decoration {
            style,
            client,
            frame,
            title_bar,
            borders,
            label: origin.label().to_string(),
            colour: origin.colour(),
            label_rect,
            title_rect,
            close,
            maximize,
        }))
    }

    /// Every rectangle the decoration paints.
    pub fn painted(&self) -> impl Iterator<Item = &Rect> {
        std::iter::once(&self.title_bar).chain(self.borders.iter())
    }

    /// What a pointer position acts on.
    pub fn hit(&self, px: i32, py: i32) -> Hit {
        if self.client.contains(px, py) {
            return Hit::Client;
        }
        if !self.frame.contains(px, py) {
            return Hit::Nothing;
        }
        if self.close.contains(px, py) {
            return Hit::Close;
        }
        if self.maximize.contains(px, py) {
            return Hit::Maximize;
        }
        if self.style == DecorationStyle::Full {
            let f = &self.frame;
            let left = px < self.client.x;
            let right = px >= self.client.right();
            let top = py < f.y + BORDER;
            let bottom = py >= self.client.bottom();
            let near_top = py < f.y + CORNER;
            let near_bottom = py >= f.bottom() - CORNER;
            let near_left = px < f.x + CORNER;
            let near_right = px >= f.right() - CORNER;
            let edge = if left || right {
                Some(match (left, near_top, near_bottom) {
                    (true, true, _) => Edge::TopLeft,
                    (true, _, true) => Edge::BottomLeft,
                    (true, _, _) => Edge::Left,
                    (false, true, _) => Edge::TopRight,
                    (false, _, true) => Edge::BottomRight,
                    (false, _, _) => Edge::Right,
                })
            } else if top || bottom {
                Some(match (top, near_left, near_right) {
                    (true, true, _) => Edge::TopLeft,
                    (true, _, true) => Edge::TopRight,
                    (true, _, _) => Edge::Top,
                    (false, true, _) => Edge::BottomLeft,
                    (false, _, true) => Edge::BottomRight,
                    (false, _, _) => Edge::Bottom,
                })
            } else {
                None
            };
            if let Some(edge) = edge {
                return Hit::Resize(edge);
            }
        }
        if self.title_bar.contains(px, py) {
            return Hit::TitleBar;
        }
        Hit::Nothing
    }
}

/// Hit-tests one window given its client rectangle and decoration (if any).
pub fn hit_test(client: Rect, decoration: Option<&Decoration>, px: i32, py: i32) -> Hit {
    match decoration {
        Some(d) => d.hit(px, py),
        None if client.contains(px, py) => Hit::Client,
        None => Hit::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Origin {
        Origin::Vm { name: "work".into(), colour: Rgb::new(0x2e, 0xa0, 0x43) }
    }

    fn full(client: Rect) -> Decoration {
        Decoration::layout(client, &vm(), DecorationStyle::Full).unwrap().unwrap()
    }

    #[test]
    fn title_bar_sits_above_the_client() {
        let c = Rect::new(100, 100, 400, 300);
        let d = full(c);
        assert_eq!(d.title_bar, Rect::new(96, 72, 408, TITLE_HEIGHT));
        assert_eq!(d.frame, Rect::new(96, 72, 408, 332));
        assert_eq!(d.title_bar.bottom(), c.y);
        for r in d.painted() {
            assert!(!r.intersects(&c), "{r:?} overlaps client");
            assert!(d.frame.contains_rect(r));
        }
        for r in [d.close, d.maximize, d.label_rect, d.title_rect] {
            assert!(d.title_bar.contains_rect(&r), "{r:?}");
        }
        assert!(!d.close.intersects(&d.maximize));
        assert!(!d.label_rect.intersects(&d.maximize));
    }

    #[test]
    fn label_and_colour_come_from_origin() {
        let d = full(Rect::new(0, 40, 200, 100));
        assert_eq!(d.label, "work");
        assert_eq!(d.colour, Rgb::new(0x2e, 0xa0, 0x43));
        let h = Decoration::layout(Rect::new(0, 40, 200, 100), &Origin::Host, DecorationStyle::Full).unwrap().unwrap();
        assert_eq!(h.label, "RayOS host");
        assert_eq!(h.colour, crate::origin::HOST_COLOUR);
    }

    #[test]
    fn hit_regions() {
        let c = Rect::new(100, 100, 400, 300);
        let d = full(c);
        assert_eq!(d.hit(300, 200), Hit::Client);
        assert_eq!(d.hit(200, 85), Hit::TitleBar);
        assert_eq!(d.hit(d.close.x + 1, d.close.y + 1), Hit::Close);
        assert_eq!(d.hit(d.maximize.x + 1, d.maximize.y + 1), Hit::Maximize);
        assert_eq!(d.hit(97, 250), Hit::Resize(Edge::Left));
        assert_eq!(d.hit(501, 250), Hit::Resize(Edge::Right));
        assert_eq!(d.hit(300, 402), Hit::Resize(Edge::Bottom));
        assert_eq!(d.hit(300, 73), Hit::Resize(Edge::Top));
        assert_eq!(d.hit(97, 73), Hit::Resize(Edge::TopLeft));
        assert_eq!(d.hit(502, 403), Hit::Resize(Edge::BottomRight));
        assert_eq!(d.hit(97, 402), Hit::Resize(Edge::BottomLeft));
        assert_eq!(d.hit(502, 75), Hit::Resize(Edge::TopRight));
        assert_eq!(d.hit(50, 50), Hit::Nothing);
        assert_eq!(d.hit(504, 250), Hit::Nothing);
    }

    #[test]
    fn title_only_and_none() {
        let c = Rect::new(0, TITLE_HEIGHT, 1920, 1080 - TITLE_HEIGHT);
        let d = Decoration::layout(c, &vm(), DecorationStyle::TitleOnly).unwrap().unwrap();
        assert_eq!(d.frame, Rect::new(0, 0, 1920, 1080));
        assert!(d.borders.is_empty());
        assert_eq!(d.hit(5, 2), Hit::TitleBar);
        assert_eq!(d.hit(5, TITLE_HEIGHT), Hit::Client);
        assert!(Decoration::layout(c, &Origin::Host, DecorationStyle::None).unwrap().is_none());
        assert_eq!(hit_test(c, None, 5, 2), Hit::Nothing);
        assert!(Decoration::layout(Rect::new(0, 0, 0, 5), &vm(), DecorationStyle::Full).is_err());
    }

    #[test]
    fn styles_follow_state() {
        assert_eq!(DecorationStyle::for_state(&Origin::Host, false, false), DecorationStyle::Full);
        assert_eq!(DecorationStyle::for_state(&Origin::Host, true, false), DecorationStyle::TitleOnly);
        assert_eq!(DecorationStyle::for_state(&Origin::Host, false, true), DecorationStyle::None);
        assert_eq!(DecorationStyle::for_state(&vm(), false, true), DecorationStyle::TitleOnly);
        assert_eq!(DecorationStyle::for_state(&vm(), true, true), DecorationStyle::TitleOnly);
    }

    #[test]
    fn narrowest_window_keeps_buttons_inside() {
        let c = Rect::new(10, 40, crate::shell::MIN_CLIENT_W, crate::shell::MIN_CLIENT_H);
        let d = full(c);
        assert!(d.title_bar.contains_rect(&d.close));
        assert!(d.title_bar.contains_rect(&d.maximize));
        assert!(d.maximize.x >= d.title_bar.x + BORDER);
    }
}
