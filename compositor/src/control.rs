//! The control API's pure request handler (the protocol types and line
//! framing are `rayos-compositor-ipc`'s, re-exported here).
//!
//! Design note: automation (the host daemon, tests, the CLI) drives the
//! compositor over a unix socket, one JSON object per line in each
//! direction; `compositor/CONTROL-API.md` is the reference. Requests are
//! tagged by `op`; everything the compositor writes is tagged by `type`:
//! `ok` (with a `reply` kind), `error` (with a stable `code`), or `event`
//! (only after `subscribe`). A request line may be at most [`MAX_LINE`]
//! bytes; [`LineSplitter`] enforces that while reading, without buffering
//! more than that, and resynchronises at the next newline.
//!
//! [`handle`] applies a decoded request to the [`Shell`]. Requests that are
//! pure state changes (list, focus, close, register/unregister VM, set VM
//! policy) are completed here, so they are testable without a display.
//! Requests that need the display (key and pointer injection, screenshots,
//! render statistics and the render benchmark) are validated here (ids exist, coordinates lie on the output, a key's
//! target can take focus) and handed back as an [`Effect`] for the Smithay
//! layer to carry out. The events a request caused come back too, for the
//! connection loop to broadcast to subscribers after the response.

pub use rayos_compositor_ipc::control::*;

use crate::geometry::Rect;
use crate::origin::OriginError;
use crate::shell::{Shell, ShellError};
use crate::window::WindowId;

impl From<ShellError> for ApiError {
    fn from(e: ShellError) -> Self {
        let code = match &e {
            ShellError::UnknownWindow(_) => ErrorCode::UnknownWindow,
            ShellError::NotFocusable { .. } => ErrorCode::Refused,
            ShellError::HostDesktop | ShellError::Geometry(_) => ErrorCode::InvalidRequest,
            ShellError::Origin(o) => match o {
                OriginError::InvalidName { .. } => ErrorCode::InvalidName,
                OriginError::InvalidColour(_) => ErrorCode::InvalidColour,
                OriginError::ColourReserved { .. } => ErrorCode::ColourReserved,
                OriginError::Duplicate(_) => ErrorCode::DuplicateVm,
                OriginError::UnknownVm(_) => ErrorCode::UnknownVm,
                OriginError::DesktopExists(_) => ErrorCode::DesktopExists,
                OriginError::Refused(_) => ErrorCode::Refused,
            },
        };
        ApiError::new(code, e.to_string())
    }
}

/// What to screenshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreenshotTarget {
    /// `None`: the primary output.
    Output(Option<String>),
    Window(WindowId),
}

/// Work left for the display layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send keys to `target` (already focused by the handler).
    Key { target: WindowId, keysyms: Option<Vec<String>>, text: Option<String>, action: KeyAction },
    /// Inject pointer input at output coordinates (validated on-screen).
    Pointer { x: i32, y: i32, button: Option<Button>, action: PointerAction },
    /// Render and encode a PNG; the layer writes the response.
    Screenshot { target: ScreenshotTarget, path: Option<String> },
    /// Mark the connection as subscribed to events.
    Subscribe,
    /// Reply with the backend's render statistics.
    Stats,
    /// Run the render benchmark (`damage` validated on the output).
    BenchRender { frames: u32, damage: Option<Rect> },
}

/// The outcome of [`handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The response to write now. `None` only with [`Effect::Screenshot`],
    /// [`Effect::Stats`] and [`Effect::BenchRender`]: the layer replies. For key and pointer effects
    /// the reply is `done`, to be written after the layer injected the
    /// input (or replaced by an `internal` error if injection failed).
    pub reply: Option<ServerMessage>,
    /// Events the request caused, to broadcast to subscribers after the reply.
    pub events: Vec<Event>,
    pub effect: Option<Effect>,
}

/// Applies one request to the shell.
pub fn handle(shell: &mut Shell, req: Request) -> Handled {
    let mut effect = None;
    let result: Result<Option<Reply>, ApiError> = (|| {
        req.validate()?;
        Ok(match req {
            Request::ListWindows => Some(Reply::Windows { windows: shell.list(), now_ms: shell.now_ms() }),
            Request::Focus { id } => {
                shell.focus(id)?;
                Some(Reply::Done)
            }
            Request::Close { id } => {
                shell.close(id)?;
                Some(Reply::Done)
            }
            Request::Resize { id, width, height } => {
                shell.resize(id, width, height)?;
                Some(Reply::Done)
            }
            Request::Key { id, keysyms, text, action } => {
                let target = match id {
                    Some(id) => {
                        shell.focus(id)?;
                        id
                    }
                    None => shell
                        .focused()
                        .ok_or_else(|| ApiError::new(ErrorCode::NoFocus, "no window has focus; give \"id\""))?,
                };
                effect = Some(Effect::Key { target, keysyms, text, action });
                Some(Reply::Done)
            }
            Request::Pointer { x, y, button, action } => {
                let out = shell.output();
                if !out.rect().contains(x, y) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("pointer: ({x}, {y}) is outside the output {}x{}", out.w, out.h),
                    ));
                }
                effect = Some(Effect::Pointer { x, y, button, action });
                Some(Reply::Done)
            }
            Request::Screenshot { output, window, path } => {
                let target = match window {
                    Some(id) => {
                        shell.geometry(id)?;
                        ScreenshotTarget::Window(id)
                    }
                    None => ScreenshotTarget::Output(output),
                };
                effect = Some(Effect::Screenshot { target, path });
                None
            }
            Request::RegisterVm { name, colour, clipboard } => {
                let e = shell.register_vm_with(&name, colour, clipboard.unwrap_or_default())?;
                Some(Reply::VmRegistered(e.registration()))
            }
            Request::UnregisterVm { name } => {
                let closed = shell.unregister_vm(&name)?;
                Some(Reply::VmUnregistered { name, closed })
            }
            Request::SetVmPolicy { name, accept_windows, clipboard } => {
                shell.set_vm_policies(&name, accept_windows, clipboard)?;
                Some(Reply::Done)
            }
            Request::Subscribe => {
                effect = Some(Effect::Subscribe);
                Some(Reply::Subscribed)
            }
            Request::Stats => {
                effect = Some(Effect::Stats);
                None
            }
            Request::BenchRender { frames, damage } => {
                if let Some(d) = damage {
                    let out = shell.output().rect();
                    if !out.contains_rect(&d) {
                        return Err(ApiError::new(
                            ErrorCode::InvalidRequest,
                            format!("bench_render: damage {d:?} is not inside the output {}x{}", out.w, out.h),
                        ));
                    }
                }
                effect = Some(Effect::BenchRender { frames, damage });
                None
            }
        })
    })();
    let reply = match result {
        Ok(r) => r.map(ServerMessage::Ok),
        Err(e) => {
            effect = None;
            Some(ServerMessage::Error(e))
        }
    };
    Handled { reply, events: shell.take_events(), effect }
}

/// Decodes a line and handles it; a line that does not decode gets an error
/// response and changes nothing.
pub fn handle_line(shell: &mut Shell, line: &[u8]) -> Handled {
    match decode_request(line) {
        Ok(req) => handle(shell, req),
        Err(e) => Handled { reply: Some(ServerMessage::Error(e.into())), events: Vec::new(), effect: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clipboard::ClipboardPolicy;
    use crate::geometry::Size;
    use crate::origin::Origin;
    use crate::origin::Rgb;
    use crate::shell::ShellEvent;
    use crate::shell::{CloseReason, MapRequest};
    use crate::window::Mode;
    use rayos_compositor_ipc::VmRegistration;

    const GREEN: Rgb = Rgb::new(0x2e, 0xa0, 0x43);

    fn shell() -> Shell {
        Shell::new(Size::new(1920, 1080)).unwrap()
    }

    fn roundtrip_req(r: &Request) {
        let s = serde_json::to_string(r).unwrap();
        assert!(!s.contains('\n'));
        assert_eq!(&decode_request(s.as_bytes()).unwrap(), r, "{s}");
    }

    fn roundtrip_msg(m: &ServerMessage) {
        let line = encode_line(m);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(&serde_json::from_str::<ServerMessage>(&line).unwrap(), m, "{line}");
    }

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::ListWindows,
            Request::Focus { id: WindowId(3) },
            Request::Close { id: WindowId(4) },
            Request::Resize { id: WindowId(4), width: 640, height: 480 },
            Request::Key {
                id: Some(WindowId(1)),
                keysyms: Some(vec!["Return".into()]),
                text: None,
                action: KeyAction::Press,
            },
            Request::Key { id: None, keysyms: None, text: Some("touch /tmp/x\n".into()), action: KeyAction::Tap },
            Request::Pointer { x: 10, y: 20, button: Some(Button::Left), action: PointerAction::Click },
            Request::Pointer { x: 10, y: 20, button: None, action: PointerAction::Motion },
            Request::Screenshot { output: None, window: Some(WindowId(2)), path: Some("/tmp/w.png".into()) },
            Request::Screenshot { output: Some("headless-1".into()), window: None, path: None },
            Request::RegisterVm { name: "work".into(), colour: GREEN, clipboard: None },
            Request::RegisterVm { name: "work".into(), colour: GREEN, clipboard: Some(ClipboardPolicy::Deny) },
            Request::UnregisterVm { name: "work".into() },
            Request::SetVmPolicy { name: "work".into(), accept_windows: Some(false), clipboard: None },
            Request::SetVmPolicy { name: "work".into(), accept_windows: None, clipboard: Some(ClipboardPolicy::Allow) },
            Request::Subscribe,
            Request::Stats,
            Request::BenchRender { frames: 10, damage: None },
            Request::BenchRender { frames: 1, damage: Some(Rect::new(0, 0, 256, 256)) },
        ];
        for r in &all {
            roundtrip_req(r);
        }
    }

    #[test]
    fn wire_format_is_as_documented() {
        assert_eq!(decode_request(br#"{"op":"list_windows"}"#).unwrap(), Request::ListWindows);
        assert_eq!(
            decode_request(b"{\"op\":\"register_vm\",\"name\":\"work\",\"colour\":\"#2ea043\"}\r\n").unwrap(),
            Request::RegisterVm { name: "work".into(), colour: GREEN, clipboard: None }
        );
        assert_eq!(
            decode_request(br##"{"op":"register_vm","name":"w","colour":"#2ea043","clipboard":"on-paste"}"##).unwrap(),
            Request::RegisterVm { name: "w".into(), colour: GREEN, clipboard: Some(ClipboardPolicy::OnPaste) }
        );
        assert_eq!(
            decode_request(br#"{"op":"set_vm_policy","name":"w","clipboard":"deny"}"#).unwrap(),
            Request::SetVmPolicy { name: "w".into(), accept_windows: None, clipboard: Some(ClipboardPolicy::Deny) }
        );
        assert!(matches!(decode_request(br#"{"op":"set_vm_policy","name":"w"}"#), Err(ControlError::Invalid(_))));
        assert!(matches!(
            decode_request(br#"{"op":"set_vm_policy","name":"w","clipboard":"sometimes"}"#),
            Err(ControlError::BadJson(_))
        ));
        assert_eq!(
            decode_request(br#"{"op":"key","text":"ls"}"#).unwrap(),
            Request::Key { id: None, keysyms: None, text: Some("ls".into()), action: KeyAction::Tap }
        );
        assert_eq!(encode_line(&ServerMessage::Ok(Reply::Done)), "{\"type\":\"ok\",\"reply\":\"done\"}\n");
        assert_eq!(
            encode_line(&ServerMessage::Event(ShellEvent::FocusChanged { id: Some(WindowId(5)) })),
            "{\"type\":\"event\",\"event\":\"focus_changed\",\"id\":5}\n"
        );
        assert_eq!(
            encode_line(&ServerMessage::Error(ApiError::new(ErrorCode::UnknownWindow, "no window with id 9"))),
            "{\"type\":\"error\",\"code\":\"unknown_window\",\"message\":\"no window with id 9\"}\n"
        );
    }

    #[test]
    fn responses_and_events_round_trip() {
        let mut s = shell();
        let o = s.register_vm("work", GREEN).unwrap().origin();
        let id = s.map(MapRequest::native(o.clone(), "foot", "shell", 600, 400)).unwrap();
        let msgs = [
            ServerMessage::Ok(Reply::Windows { windows: s.list(), now_ms: 12 }),
            ServerMessage::Ok(Reply::Done),
            ServerMessage::Ok(Reply::VmRegistered(VmRegistration {
                name: "work".into(),
                colour: GREEN,
                socket: "rayos-vm-work".into(),
                desktop_socket: "rayos-desktop-work".into(),
                clipboard: ClipboardPolicy::Allow,
            })),
            ServerMessage::Ok(Reply::VmUnregistered { name: "work".into(), closed: vec![id] }),
            ServerMessage::Ok(Reply::Screenshot { width: 4, height: 2, path: None, png_base64: Some("iVBOR".into()) }),
            ServerMessage::Ok(Reply::Subscribed),
            ServerMessage::Ok(Reply::stats(3, 120, 5000, &[900, 1200, 800])),
            ServerMessage::Ok(Reply::stats(0, 0, 0, &[])),
            ServerMessage::Ok(Reply::bench(65536, &[300, 250, 400, 260])),
            ServerMessage::Error(ApiError::new(ErrorCode::LineTooLong, "x")),
            ServerMessage::Event(ShellEvent::WindowOpened { window: s.info(id).unwrap() }),
            ServerMessage::Event(ShellEvent::WindowClosed { id, reason: CloseReason::VmUnregistered }),
            ServerMessage::Event(ShellEvent::FocusChanged { id: None }),
            ServerMessage::Event(ShellEvent::TitleChanged { id, title: "t".into() }),
            ServerMessage::Event(ShellEvent::VmRegistered(VmRegistration {
                name: "a".into(),
                colour: GREEN,
                socket: "rayos-vm-a".into(),
                desktop_socket: "rayos-desktop-a".into(),
                clipboard: ClipboardPolicy::OnPaste,
            })),
            ServerMessage::Event(ShellEvent::VmUnregistered { name: "a".into(), closed: vec![id] }),
            ServerMessage::Event(ShellEvent::VmPolicyChanged {
                name: "a".into(),
                accept_windows: true,
                clipboard: ClipboardPolicy::Deny,
            }),
        ];
        for m in &msgs {
            roundtrip_msg(m);
        }
    }

    #[test]
    fn stats_and_bench_wire_format() {
        assert_eq!(decode_request(br#"{"op":"stats"}"#).unwrap(), Request::Stats);
        assert_eq!(
            decode_request(br#"{"op":"bench_render","frames":50,"damage":{"x":8,"y":8,"w":256,"h":256}}"#).unwrap(),
            Request::BenchRender { frames: 50, damage: Some(Rect::new(8, 8, 256, 256)) }
        );
        assert_eq!(
            encode_line(&ServerMessage::Ok(Reply::stats(2, 5, 100, &[30, 10]))),
            "{\"type\":\"ok\",\"reply\":\"stats\",\"frames\":7,\"repaints\":2,\"idle_frames\":5,\
             \"damaged_px\":100,\"frame_us_p50\":10,\"frame_us_max\":30,\"samples_us\":[30,10]}\n"
        );
        assert_eq!(
            encode_line(&ServerMessage::Ok(Reply::bench(64, &[5, 1, 3]))),
            "{\"type\":\"ok\",\"reply\":\"bench_render\",\"frames\":3,\"damaged_px\":64,\
             \"us_min\":1,\"us_p50\":3,\"us_max\":5}\n"
        );
        // Sample lists are capped, keeping the newest.
        let many: Vec<u64> = (0..(MAX_STATS_SAMPLES as u64 + 10)).collect();
        let Reply::Stats { samples_us, frame_us_max, .. } = Reply::stats(1, 0, 0, &many) else { panic!() };
        assert_eq!((samples_us.len(), samples_us[0], frame_us_max), (MAX_STATS_SAMPLES, 10, many.len() as u64 - 1));
        assert_eq!(summary(&[]), (0, 0, 0));
        assert_eq!(summary(&[4, 1, 3, 2]), (1, 2, 4));

        let err = |line: &[u8]| ApiError::from(decode_request(line).unwrap_err()).code;
        assert_eq!(err(br#"{"op":"bench_render","frames":0}"#), ErrorCode::InvalidRequest);
        assert_eq!(err(br#"{"op":"bench_render","frames":1001}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            err(br#"{"op":"bench_render","frames":1,"damage":{"x":0,"y":0,"w":0,"h":5}}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(err(br#"{"op":"bench_render"}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn stats_and_bench_are_left_to_the_display_layer() {
        let mut s = shell();
        let h = handle(&mut s, Request::Stats);
        assert_eq!((h.reply, h.effect), (None, Some(Effect::Stats)));
        let d = Some(Rect::new(1920 - 256, 1080 - 256, 256, 256));
        let h = handle(&mut s, Request::BenchRender { frames: 5, damage: d });
        assert_eq!((h.reply, h.effect), (None, Some(Effect::BenchRender { frames: 5, damage: d })));
        let h = handle(&mut s, Request::BenchRender { frames: 5, damage: Some(Rect::new(1800, 0, 256, 256)) });
        assert!(matches!(h.reply, Some(ServerMessage::Error(ApiError { code: ErrorCode::InvalidRequest, .. }))));
        assert_eq!(h.effect, None);
    }

    #[test]
    fn bad_requests_get_clear_errors() {
        let err = |line: &[u8]| ApiError::from(decode_request(line).unwrap_err());
        let e = err(b"not json");
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = err(br#"{"op":"dance"}"#);
        assert!(e.message.contains("unknown variant `dance`"), "{}", e.message);
        let e = err(br#"{"op":"focus"}"#);
        assert!(e.message.contains("missing field `id`"), "{}", e.message);
        let e = err(br#"{"op":"focus","id":1,"extra":2}"#);
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
        let e = err(br##"{"op":"register_vm","name":"a","colour":"#12"}"##);
        assert!(e.message.contains("invalid colour"), "{}", e.message);
        assert_eq!(err(b"\xff\xfe").code, ErrorCode::BadRequest);
        let e = err(br#"{"op":"key","keysyms":["a"],"text":"b"}"#);
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("exactly one"));
        assert_eq!(err(br#"{"op":"key","keysyms":["a b"]}"#).code, ErrorCode::InvalidRequest);
        assert_eq!(err(br#"{"op":"key","text":"b","action":"press"}"#).code, ErrorCode::InvalidRequest);
        assert_eq!(err(br#"{"op":"pointer","x":1,"y":1,"action":"click"}"#).code, ErrorCode::InvalidRequest);
        assert_eq!(err(br#"{"op":"screenshot","output":"a","window":1}"#).code, ErrorCode::InvalidRequest);
        assert_eq!(err(br#"{"op":"screenshot","path":"rel.png"}"#).code, ErrorCode::InvalidRequest);
        let long = format!(r#"{{"op":"key","text":"{}"}}"#, "a".repeat(MAX_LINE));
        assert_eq!(err(long.as_bytes()).code, ErrorCode::LineTooLong);
    }

    #[test]
    fn splitter_caps_lines_and_resyncs() {
        let mut sp = LineSplitter::new();
        let out = sp.push(b"{\"op\":\"list_windows\"}\n\n  \r\n{\"op\":");
        assert_eq!(out, vec![Ok(b"{\"op\":\"list_windows\"}".to_vec())]);
        assert_eq!(sp.pending(), 6);
        let out = sp.push(b"\"subscribe\"}\r\n");
        assert_eq!(out, vec![Ok(b"{\"op\":\"subscribe\"}".to_vec())]);
        // A flood without newline: one error, bounded memory, then resync.
        let chunk = vec![b'x'; 10_000];
        let mut errors = 0;
        for _ in 0..20 {
            for r in sp.push(&chunk) {
                assert_eq!(r, Err(ControlError::LineTooLong { max: MAX_LINE }));
                errors += 1;
            }
            assert!(sp.pending() <= MAX_LINE + 1);
        }
        assert_eq!(errors, 1);
        let out = sp.push(b"tail\n{\"op\":\"list_windows\"}\n");
        assert_eq!(out, vec![Ok(b"{\"op\":\"list_windows\"}".to_vec())]);
        // Exactly MAX_LINE is fine, in pieces.
        let mut line = vec![b'a'; MAX_LINE];
        line.push(b'\n');
        let (a, b) = line.split_at(1000);
        assert!(sp.push(a).is_empty());
        assert_eq!(sp.push(b), vec![Ok(vec![b'a'; MAX_LINE])]);
        let mut over = vec![b'a'; MAX_LINE + 1];
        over.push(b'\n');
        assert_eq!(sp.push(&over), vec![Err(ControlError::LineTooLong { max: MAX_LINE })]);
    }

    #[test]
    fn handler_applies_pure_requests() {
        let mut s = shell();
        let h = handle_line(&mut s, br##"{"op":"register_vm","name":"work","colour":"#2ea043"}"##);
        assert_eq!(
            h.reply,
            Some(ServerMessage::Ok(Reply::VmRegistered(VmRegistration {
                name: "work".into(),
                colour: GREEN,
                socket: "rayos-vm-work".into(),
                desktop_socket: "rayos-desktop-work".into(),
                clipboard: ClipboardPolicy::OnPaste,
            })))
        );
        assert_eq!(h.events.len(), 1);
        let o = s.registry().get("work").unwrap().origin();
        let host = s.map(MapRequest::native(Origin::Host, "foot", "host shell", 600, 400)).unwrap();
        let g = s.map(MapRequest::native(o.clone(), "foot", "guest", 600, 400)).unwrap();
        let d = s.map(MapRequest { mode: Mode::EmbeddedDesktop, ..MapRequest::native(o, "", "", 0, 0) }).unwrap();
        s.take_events();

        let h = handle(&mut s, Request::ListWindows);
        let Some(ServerMessage::Ok(Reply::Windows { windows, now_ms })) = h.reply else { panic!("{h:?}") };
        assert_eq!(now_ms, s.now_ms());
        assert_eq!(windows.iter().map(|w| w.id).collect::<Vec<_>>(), vec![g, d, host]);
        assert!(windows[2].focused);
        assert_eq!(windows[1].mode, Mode::EmbeddedDesktop);

        let h = handle(&mut s, Request::Focus { id: g });
        assert_eq!(h.reply, Some(ServerMessage::Ok(Reply::Done)));
        assert_eq!(h.events, vec![ShellEvent::FocusChanged { id: Some(g) }]);

        let h = handle(&mut s, Request::Focus { id: WindowId(99) });
        let Some(ServerMessage::Error(e)) = h.reply else { panic!() };
        assert_eq!(e.code, ErrorCode::UnknownWindow);
        assert_eq!(e.message, "no window with id 99");

        let h =
            handle(&mut s, Request::SetVmPolicy { name: "work".into(), accept_windows: Some(false), clipboard: None });
        assert!(h.events.contains(&ShellEvent::VmPolicyChanged {
            name: "work".into(),
            accept_windows: false,
            clipboard: ClipboardPolicy::OnPaste
        }));
        assert_eq!(h.reply, Some(ServerMessage::Ok(Reply::Done)));
        assert!(h.events.contains(&ShellEvent::FocusChanged { id: Some(host) }));
        let h = handle(&mut s, Request::Focus { id: g });
        let Some(ServerMessage::Error(e)) = h.reply else { panic!() };
        assert_eq!(e.code, ErrorCode::Refused);

        let h = handle(&mut s, Request::Close { id: host });
        assert_eq!(
            h.events,
            vec![
                ShellEvent::WindowClosed { id: host, reason: CloseReason::Closed },
                ShellEvent::FocusChanged { id: None },
            ]
        );

        let h = handle(&mut s, Request::UnregisterVm { name: "work".into() });
        assert_eq!(h.reply, Some(ServerMessage::Ok(Reply::VmUnregistered { name: "work".into(), closed: vec![g, d] })));
        assert!(s.is_empty());
        let h = handle(&mut s, Request::UnregisterVm { name: "work".into() });
        let Some(ServerMessage::Error(e)) = h.reply else { panic!() };
        assert_eq!(e.code, ErrorCode::UnknownVm);
    }

    #[test]
    fn handler_maps_registry_errors() {
        let mut s = shell();
        let code = |s: &mut Shell, r: Request| match handle(s, r).reply {
            Some(ServerMessage::Error(e)) => e.code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(&mut s, Request::RegisterVm { name: "Bad".into(), colour: GREEN, clipboard: None }),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(&mut s, Request::RegisterVm { name: "a".into(), colour: crate::origin::HOST_COLOUR, clipboard: None }),
            ErrorCode::ColourReserved
        );
        handle(&mut s, Request::RegisterVm { name: "a".into(), colour: GREEN, clipboard: None });
        assert_eq!(
            code(&mut s, Request::RegisterVm { name: "a".into(), colour: GREEN, clipboard: None }),
            ErrorCode::DuplicateVm
        );
        assert_eq!(
            code(&mut s, Request::SetVmPolicy { name: "b".into(), accept_windows: Some(true), clipboard: None }),
            ErrorCode::UnknownVm
        );
    }

    #[test]
    fn handler_validates_effects() {
        let mut s = shell();
        let h = handle(
            &mut s,
            Request::Key { id: None, keysyms: Some(vec!["a".into()]), text: None, action: KeyAction::Tap },
        );
        assert!(matches!(h.reply, Some(ServerMessage::Error(ApiError { code: ErrorCode::NoFocus, .. }))));
        assert_eq!(h.effect, None);

        let a = s.map(MapRequest::native(Origin::Host, "foot", "a", 400, 300)).unwrap();
        s.map(MapRequest::native(Origin::Host, "foot", "b", 400, 300)).unwrap();
        let h = handle(
            &mut s,
            Request::Key { id: Some(a), keysyms: None, text: Some("ls\n".into()), action: KeyAction::Tap },
        );
        assert_eq!(h.reply, Some(ServerMessage::Ok(Reply::Done)));
        assert_eq!(
            h.effect,
            Some(Effect::Key { target: a, keysyms: None, text: Some("ls\n".into()), action: KeyAction::Tap })
        );
        assert_eq!(s.focused(), Some(a), "key with id activates the target first");

        let h = handle(&mut s, Request::Pointer { x: 1920, y: 5, button: None, action: PointerAction::Motion });
        assert!(matches!(h.reply, Some(ServerMessage::Error(ApiError { code: ErrorCode::InvalidRequest, .. }))));
        let h =
            handle(&mut s, Request::Pointer { x: 5, y: 5, button: Some(Button::Left), action: PointerAction::Click });
        assert_eq!(
            h.effect,
            Some(Effect::Pointer { x: 5, y: 5, button: Some(Button::Left), action: PointerAction::Click })
        );

        let h = handle(&mut s, Request::Screenshot { output: None, window: Some(a), path: None });
        assert_eq!(h.reply, None, "the display layer replies with the PNG");
        assert_eq!(h.effect, Some(Effect::Screenshot { target: ScreenshotTarget::Window(a), path: None }));
        let h = handle(&mut s, Request::Screenshot { output: None, window: Some(WindowId(77)), path: None });
        assert!(matches!(h.reply, Some(ServerMessage::Error(ApiError { code: ErrorCode::UnknownWindow, .. }))));
        assert_eq!(h.effect, None);

        let h = handle(&mut s, Request::Subscribe);
        assert_eq!(h.reply, Some(ServerMessage::Ok(Reply::Subscribed)));
        assert_eq!(h.effect, Some(Effect::Subscribe));
    }
}
