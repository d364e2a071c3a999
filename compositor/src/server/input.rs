//! Input injection from the control API: keys by keysym or text, pointer.
//!
//! Design note: the seat's keyboard takes xkb keycodes, so injected keysyms
//! are mapped back to keycodes with a keymap compiled from the same default
//! rules as the seat's (`XkbConfig::default()`): for each keysym the first
//! keycode that yields it at level 1, else at level 2 (then Shift is held
//! around it). Text is typed character by character (`\n` is Return, `\t`
//! Tab). Keys go through `KeyboardHandle::input`, so the client sees exactly
//! what a physical keyboard would send, modifiers included. Pointer input
//! goes through the same hit-testing a user's pointer would: a press on a
//! window is a host activation (focus and raise), a press on the close
//! button closes it, on the maximize button toggles maximized, a press on
//! the title bar starts a move that follows motion until release, and only
//! the client area receives button events.

use std::collections::HashMap;

use smithay::backend::input::{ButtonState, KeyState};
use smithay::desktop::WindowSurfaceType;
use smithay::input::keyboard::{xkb, FilterResult, Keycode, Keysym};
use smithay::input::pointer::{ButtonEvent, CursorImageStatus, MotionEvent};
use smithay::reexports::wayland_server::Resource;
use smithay::utils::SERIAL_COUNTER;

use super::State;
use crate::control::{Button, KeyAction, PointerAction};
use crate::decoration::Hit;
use crate::window::WindowId;

/// Errors of input injection.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot compile the default xkb keymap")]
    Keymap,
    #[error("unknown keysym {0:?}")]
    UnknownKeysym(String),
    #[error("keysym {0:?} is not on the keyboard layout")]
    NotOnLayout(String),
    #[error("no seat keyboard or pointer")]
    NoDevice,
}

/// Keysym to (keycode, needs Shift).
pub struct KeyMapper {
    map: HashMap<u32, (Keycode, bool)>,
    shift: Keycode,
}

impl KeyMapper {
    pub fn new() -> Result<Self, InputError> {
        let ctx = xkb::Context::new(xkb::CONTEXT_NO_FLAGS);
        let keymap = xkb::Keymap::new_from_names(&ctx, "", "", "", "", None, xkb::KEYMAP_COMPILE_NO_FLAGS)
            .ok_or(InputError::Keymap)?;
        let mut map: HashMap<u32, (Keycode, bool)> = HashMap::new();
        for level in 0..2u32 {
            let mut kc = keymap.min_keycode().raw();
            while kc <= keymap.max_keycode().raw() {
                let code = Keycode::new(kc);
                for sym in keymap.key_get_syms_by_level(code, 0, level) {
                    map.entry(sym.raw()).or_insert((code, level == 1));
                }
                kc += 1;
            }
        }
        let shift = map.get(&Keysym::Shift_L.raw()).map(|(c, _)| *c).ok_or(InputError::Keymap)?;
        Ok(KeyMapper { map, shift })
    }

    fn lookup(&self, sym: Keysym, name: &str) -> Result<(Keycode, bool), InputError> {
        self.map.get(&sym.raw()).copied().ok_or_else(|| InputError::NotOnLayout(name.to_string()))
    }
}

fn keysym_for_char(c: char) -> Keysym {
    match c {
        '\n' | '\r' => Keysym::Return,
        '\t' => Keysym::Tab,
        '\u{8}' => Keysym::BackSpace,
        '\u{1b}' => Keysym::Escape,
        c => xkb::utf32_to_keysym(c as u32),
    }
}

impl State {
    fn send_key(&mut self, code: Keycode, pressed: bool) -> Result<(), InputError> {
        let kb = self.seat.get_keyboard().ok_or(InputError::NoDevice)?;
        let serial = SERIAL_COUNTER.next_serial();
        let time = self.now_ms();
        let st = if pressed { KeyState::Pressed } else { KeyState::Released };
        if pressed {
            if let Some(id) = self.synced_focus {
                self.note_press(id);
            }
        }
        kb.input::<(), _>(self, code, st, serial, time, |_, _, _| FilterResult::Forward);
        Ok(())
    }

    /// A key from the output's window: evdev `scancode` to the focused window.
    pub(crate) fn window_key(&mut self, scancode: u32, pressed: bool) -> Result<(), InputError> {
        self.sync_focus();
        self.send_key(Keycode::new(scancode + 8), pressed)
    }

    /// Injects keys into the focused window (the control handler focused it).
    pub(crate) fn inject_keys(
        &mut self,
        target: WindowId,
        keysyms: Option<Vec<String>>,
        text: Option<String>,
        action: KeyAction,
    ) -> Result<(), InputError> {
        self.sync_focus();
        tracing::debug!(%target, "injecting keys");
        if let Some(names) = keysyms {
            let mut codes = Vec::with_capacity(names.len());
            for name in &names {
                let sym = xkb::keysym_from_name(name, xkb::KEYSYM_NO_FLAGS);
                if sym.raw() == 0 {
                    return Err(InputError::UnknownKeysym(name.clone()));
                }
                codes.push(self.keys.lookup(sym, name)?.0);
            }
            // Press in order, release in reverse: ["Control_L", "c"] is Ctrl+C.
            if matches!(action, KeyAction::Press | KeyAction::Tap) {
                for &c in &codes {
                    self.send_key(c, true)?;
                }
            }
            if matches!(action, KeyAction::Release | KeyAction::Tap) {
                for &c in codes.iter().rev() {
                    self.send_key(c, false)?;
                }
            }
        }
        if let Some(text) = text {
            let mut plan = Vec::new();
            for c in text.chars() {
                plan.push(self.keys.lookup(keysym_for_char(c), &c.to_string())?);
            }
            let shift = self.keys.shift;
            for (code, shifted) in plan {
                if shifted {
                    self.send_key(shift, true)?;
                }
                self.send_key(code, true)?;
                self.send_key(code, false)?;
                if shifted {
                    self.send_key(shift, false)?;
                }
            }
        }
        Ok(())
    }

    /// Injects pointer input at output coordinates.
    pub(crate) fn inject_pointer(
        &mut self,
        x: i32,
        y: i32,
        button: Option<Button>,
        action: PointerAction,
    ) -> Result<(), InputError> {
        let pointer = self.seat.get_pointer().ok_or(InputError::NoDevice)?;
        let hit = self.shell.hit_test(x, y);
        let pos = (f64::from(x), f64::from(y)).into();
        let focus = match hit {
            Some((id, Hit::Client)) => self.windows.get(&id).and_then(|m| {
                let client = self.shell.geometry(id).ok()?;
                let geo = m.window.geometry();
                let origin = smithay::utils::Point::<f64, smithay::utils::Logical>::from((
                    f64::from(client.x - geo.loc.x),
                    f64::from(client.y - geo.loc.y),
                ));
                m.window.surface_under(pos - origin, WindowSurfaceType::ALL).map(|(s, p)| (s, p.to_f64() + origin))
            }),
            _ => None,
        };
        self.window_pointer = (x, y);
        // Leaving a client's surfaces ends its cursor image: back to the
        // default until the next client sets its own on enter.
        let old_client = pointer.current_focus().and_then(|s| self.display_handle.get_client(s.id()).ok());
        let new_client = focus.as_ref().and_then(|(s, _)| self.display_handle.get_client(s.id()).ok());
        if old_client.map(|c| c.id()) != new_client.map(|c| c.id()) {
            self.cursor_status = CursorImageStatus::default_named();
        }
        if let Some((id, dx, dy)) = self.drag {
            // A title-bar drag in progress moves the window (clamped by the shell).
            if self.shell.move_to(id, x - dx, y - dy).is_err() {
                self.drag = None;
            }
        }
        let serial = SERIAL_COUNTER.next_serial();
        let time = self.now_ms();
        pointer.motion(self, focus, &MotionEvent { location: pos, serial, time });
        pointer.frame(self);
        let code = match button {
            Some(Button::Left) => 0x110,
            Some(Button::Right) => 0x111,
            Some(Button::Middle) => 0x112,
            None => return Ok(()),
        };
        let press = matches!(action, PointerAction::Press | PointerAction::Click);
        let release = matches!(action, PointerAction::Release | PointerAction::Click);
        if press {
            if let Some((id, what)) = hit {
                // A user click is a host activation.
                if let Err(e) = self.shell.focus(id) {
                    tracing::debug!(error = %e, "click did not focus");
                }
                match what {
                    Hit::Close => {
                        let _ = self.shell.close(id);
                    }
                    Hit::Maximize => {
                        let on = self.shell.window(id).is_some_and(|w| !w.maximized);
                        let _ = self.shell.set_maximized(id, on);
                    }
                    Hit::TitleBar if action == PointerAction::Press => {
                        if let Ok(client) = self.shell.geometry(id) {
                            self.drag = Some((id, x - client.x, y - client.y));
                        }
                    }
                    _ => {}
                }
                self.reconcile();
            }
            if let Some((id, Hit::Client)) = hit {
                self.note_press(id);
            }
            let serial = SERIAL_COUNTER.next_serial();
            let time = self.now_ms();
            pointer.button(self, &ButtonEvent { button: code, state: ButtonState::Pressed, serial, time });
            pointer.frame(self);
        }
        if release {
            self.drag = None;
            let serial = SERIAL_COUNTER.next_serial();
            let time = self.now_ms();
            pointer.button(self, &ButtonEvent { button: code, state: ButtonState::Released, serial, time });
            pointer.frame(self);
        }
        Ok(())
    }
}
