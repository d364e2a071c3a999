//! The service's link to rayos-compositor's control socket: register and
//! unregister VMs (their window sockets and colours), list windows, and
//! forward window events onto the service's event stream. The compositor is
//! optional and may come and go; every call connects afresh and has a
//! timeout. The protocol's types and client are `rayos-compositor-ipc`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rayos_compositor_ipc::{Client, ClipboardPolicy, Event as CompositorEvent, Origin, Reply, Request, Rgb};

use crate::events::{Event, Events};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Compositor {
    control: PathBuf,
}

impl Compositor {
    pub fn new(control: PathBuf) -> Compositor {
        Compositor { control }
    }

    async fn call(&self, req: Request) -> Result<Reply, String> {
        let path = self.control.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = Client::connect(&path, CALL_TIMEOUT).map_err(|e| e.to_string())?;
            c.request(&req).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Registers VM `name` with its colour (`#rrggbb`) and clipboard policy
    /// (`allow`, `on-paste`, `deny`).
    pub async fn register(&self, name: &str, colour: &str, clipboard: &str) -> Result<(), String> {
        let colour: Rgb = colour.parse().map_err(|e: rayos_compositor_ipc::types::ColourError| e.to_string())?;
        let clipboard: ClipboardPolicy = serde_json::from_value(serde_json::json!(clipboard))
            .map_err(|_| format!("clipboard policy {clipboard:?}: expected allow, on-paste or deny"))?;
        self.call(Request::RegisterVm { name: name.into(), colour, clipboard: Some(clipboard) }).await.map(|_| ())
    }

    pub async fn unregister(&self, name: &str) -> Result<(), String> {
        self.call(Request::UnregisterVm { name: name.into() }).await.map(|_| ())
    }

    /// The compositor's `list_windows` answer: `{"windows": [...], "now_ms": ..}`.
    pub async fn windows(&self) -> Result<serde_json::Value, String> {
        match self.call(Request::ListWindows).await? {
            Reply::Windows { windows, now_ms } => Ok(serde_json::json!({"windows": windows, "now_ms": now_ms})),
            other => Err(format!("list_windows: unexpected reply {other:?}")),
        }
    }

    /// Forwards window events to `events` for as long as the service runs,
    /// reconnecting when the compositor comes (back).
    pub fn forward_events(self: Arc<Self>, events: Events) {
        let path = self.control.clone();
        std::thread::Builder::new()
            .name("compositor-events".into())
            .spawn(move || loop {
                let stream = Client::connect(&path, CALL_TIMEOUT).and_then(|c| c.subscribe(None));
                if let Ok(mut stream) = stream {
                    while let Ok(ev) = stream.next_event() {
                        if let Some(e) = window_event(&ev) {
                            events.send(e);
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            })
            .expect("a thread for compositor events");
    }
}

/// A window's origin as one word: `host`, or `vm:<name>`.
fn origin_label(o: &Origin) -> String {
    match o {
        Origin::Host => "host".into(),
        Origin::Vm { name, .. } => format!("vm:{name}"),
    }
}

/// A compositor event as a service event (windows only).
pub fn window_event(ev: &CompositorEvent) -> Option<Event> {
    match ev {
        CompositorEvent::WindowOpened { window: w } => Some(Event::WindowMapped {
            id: w.id.0,
            origin: origin_label(&w.origin),
            app_id: Some(w.app_id.clone()),
            title: Some(w.title.clone()),
        }),
        CompositorEvent::WindowClosed { id, .. } => Some(Event::WindowUnmapped { id: id.0 }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayos_compositor_ipc::{CloseReason, Mode, Rect, WindowId, WindowInfo};

    #[test]
    fn window_events_carry_a_one_word_origin() {
        let info = |origin| WindowInfo {
            id: WindowId(3),
            origin,
            mode: Mode::Native,
            app_id: "foot".into(),
            title: "t".into(),
            geometry: Rect::new(0, 0, 10, 10),
            focused: false,
            maximized: false,
            fullscreen: false,
            minimized: false,
            demands_attention: false,
            stack_index: 0,
            commits: 1,
            mapped_at_ms: 1,
            first_content_ms: None,
        };
        let vm = Origin::Vm { name: "linux".into(), colour: Rgb::new(0xd0, 0x30, 0x30) };
        match window_event(&CompositorEvent::WindowOpened { window: info(vm) }) {
            Some(Event::WindowMapped { id: 3, origin, .. }) => assert_eq!(origin, "vm:linux"),
            other => panic!("{other:?}"),
        }
        let host = window_event(&CompositorEvent::WindowOpened { window: info(Origin::Host) });
        assert!(matches!(host, Some(Event::WindowMapped { origin, .. }) if origin == "host"));
        let closed = window_event(&CompositorEvent::WindowClosed { id: WindowId(4), reason: CloseReason::Closed });
        assert!(matches!(closed, Some(Event::WindowUnmapped { id: 4 })));
        assert!(window_event(&CompositorEvent::FocusChanged { id: None }).is_none());
    }
}
