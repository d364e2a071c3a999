//! The winit backend: the compositor's output shown in a window of an
//! existing X11 or Wayland session (for development, and for tests under
//! Xvfb and nested in a headless RayOS compositor). winit picks Wayland when
//! `WAYLAND_DISPLAY` is set, else X11 (`DISPLAY`); the window's app_id and
//! class are [`APP_ID`].
//!
//! Design note: Smithay 0.7's own winit backend drives only a GLES
//! renderer; RayOS renders every output with pixman, so this backend keeps
//! the headless backend's renderer and damage-tracked offscreen image and
//! presents that image in a winit window through softbuffer (a CPU copy to
//! the X server). It presents after frames that painted something and when
//! the window system asks for a redraw (expose), so an idle scene still
//! renders nothing. winit runs in pump mode from the compositor's frame
//! timer (no second event loop); the window has the output's fixed size.
//! Its input goes through the same paths as the control API's injection:
//! pointer motion and buttons at output coordinates, keys by their evdev
//! scancode into the seat's keymap. Closing the window stops the compositor.

use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

use winit::application::ApplicationHandler;
use winit::dpi::PhysicalSize;
use winit::event::{ElementState, MouseButton, WindowEvent};
use winit::event_loop::{ActiveEventLoop, EventLoop};
use winit::platform::pump_events::EventLoopExtPumpEvents;
use winit::platform::scancode::PhysicalKeyExtScancode;
use winit::window::{Window, WindowId};

use super::OutputInput as WindowInput;
use crate::control::Button;

/// The window's app_id (Wayland) and class (X11).
pub const APP_ID: &str = "rayos-compositor";

/// Errors of the winit backend.
#[derive(Debug, thiserror::Error)]
pub enum WinitError {
    #[error("cannot open the window system (is WAYLAND_DISPLAY or DISPLAY set?): {0}")]
    EventLoop(String),
    #[error("cannot create the window: {0}")]
    Window(String),
    #[error("softbuffer: {0}")]
    Present(String),
}

type Surface = softbuffer::Surface<Rc<Window>, Rc<Window>>;

struct App {
    size: (u32, u32),
    title: String,
    window: Option<Rc<Window>>,
    surface: Option<Surface>,
    error: Option<WinitError>,
    input: Vec<WindowInput>,
    redraw: bool,
}

impl ApplicationHandler for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.window.is_some() {
            return;
        }
        let attrs = Window::default_attributes()
            .with_title(self.title.clone())
            .with_inner_size(PhysicalSize::new(self.size.0, self.size.1))
            .with_resizable(false);
        // The app_id (Wayland) and WM_CLASS (X11) the session sees.
        let attrs = winit::platform::wayland::WindowAttributesExtWayland::with_name(attrs, APP_ID, "");
        let attrs = winit::platform::x11::WindowAttributesExtX11::with_name(attrs, APP_ID, APP_ID);
        let made = event_loop.create_window(attrs).map_err(|e| WinitError::Window(e.to_string())).and_then(|w| {
            let w = Rc::new(w);
            let ctx = softbuffer::Context::new(w.clone()).map_err(|e| WinitError::Present(e.to_string()))?;
            let mut s = Surface::new(&ctx, w.clone()).map_err(|e| WinitError::Present(e.to_string()))?;
            let (Some(wd), Some(ht)) = (NonZeroU32::new(self.size.0), NonZeroU32::new(self.size.1)) else {
                return Err(WinitError::Window("empty output".into()));
            };
            s.resize(wd, ht).map_err(|e| WinitError::Present(e.to_string()))?;
            Ok((w, s))
        });
        match made {
            Ok((w, s)) => {
                tracing::info!(width = self.size.0, height = self.size.1, "winit window open");
                self.window = Some(w);
                self.surface = Some(s);
                self.redraw = true;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn window_event(&mut self, _event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => self.input.push(WindowInput::Close),
            WindowEvent::RedrawRequested => self.redraw = true,
            WindowEvent::CursorMoved { position, .. } => {
                let x = (position.x as i32).clamp(0, self.size.0 as i32 - 1);
                let y = (position.y as i32).clamp(0, self.size.1 as i32 - 1);
                self.input.push(WindowInput::Motion { x, y });
            }
            WindowEvent::MouseInput { state, button, .. } => {
                let button = match button {
                    MouseButton::Left => Button::Left,
                    MouseButton::Right => Button::Right,
                    MouseButton::Middle => Button::Middle,
                    _ => return,
                };
                self.input.push(WindowInput::Button { button, pressed: state == ElementState::Pressed });
            }
            WindowEvent::KeyboardInput { event, .. } if !event.repeat => {
                if let Some(scancode) = event.physical_key.to_scancode() {
                    self.input.push(WindowInput::Key { scancode, pressed: event.state == ElementState::Pressed });
                }
            }
            _ => {}
        }
    }
}

/// The output's window.
pub struct WinitWindow {
    event_loop: EventLoop<()>,
    app: App,
}

impl std::fmt::Debug for WinitWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinitWindow").field("size", &self.app.size).finish()
    }
}

impl WinitWindow {
    /// Connects to the window system; the window opens on the first [`pump`](Self::pump).
    pub fn new(w: u32, h: u32, title: &str) -> Result<Self, WinitError> {
        let event_loop = EventLoop::new().map_err(|e| WinitError::EventLoop(e.to_string()))?;
        let app = App {
            size: (w, h),
            title: title.to_string(),
            window: None,
            surface: None,
            error: None,
            input: Vec::new(),
            redraw: false,
        };
        Ok(WinitWindow { event_loop, app })
    }

    /// Handles pending window-system events without blocking; returns the input.
    pub fn pump(&mut self) -> Result<Vec<WindowInput>, WinitError> {
        let _ = self.event_loop.pump_app_events(Some(Duration::ZERO), &mut self.app);
        if let Some(e) = self.app.error.take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut self.app.input))
    }

    /// Whether the window system asked for a redraw since the last present.
    pub fn wants_redraw(&self) -> bool {
        self.app.redraw
    }

    /// Shows an RGBA image of the window's size.
    pub fn present(&mut self, rgba: &[u8]) -> Result<(), WinitError> {
        let Some(surface) = self.app.surface.as_mut() else { return Ok(()) };
        let mut buf = surface.buffer_mut().map_err(|e| WinitError::Present(e.to_string()))?;
        for (dst, px) in buf.iter_mut().zip(rgba.chunks_exact(4)) {
            *dst = (u32::from(px[0]) << 16) | (u32::from(px[1]) << 8) | u32::from(px[2]);
        }
        buf.present().map_err(|e| WinitError::Present(e.to_string()))?;
        self.app.redraw = false;
        Ok(())
    }
}
