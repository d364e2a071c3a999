//! The service's link to rayos-compositor's control socket: register and
//! unregister VMs (their window sockets and colours), list windows, and
//! forward window events onto the service's event stream. The compositor is
//! optional and may come and go; every call connects afresh and has a
//! timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::events::{Event, Events};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Compositor {
    control: PathBuf,
}

impl Compositor {
    pub fn new(control: PathBuf) -> Compositor {
        Compositor { control }
    }

    async fn call(&self, req: serde_json::Value) -> Result<serde_json::Value, String> {
        let path = self.control.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = LineClient::connect(&path)?;
            c.request(&req)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    pub async fn register(&self, name: &str, colour: &str, clipboard: &str) -> Result<(), String> {
        self.call(serde_json::json!({"op": "register_vm", "name": name, "colour": colour, "clipboard": clipboard})).await.map(|_| ())
    }

    pub async fn unregister(&self, name: &str) -> Result<(), String> {
        self.call(serde_json::json!({"op": "unregister_vm", "name": name})).await.map(|_| ())
    }

    /// The compositor's `list_windows` answer: `{"windows": [...], "now_ms": ..}`.
    pub async fn windows(&self) -> Result<serde_json::Value, String> {
        let mut v = self.call(serde_json::json!({"op": "list_windows"})).await?;
        Ok(serde_json::json!({"windows": v["windows"].take(), "now_ms": v["now_ms"].take()}))
    }

    /// Forwards window events to `events` for as long as the service runs,
    /// reconnecting when the compositor comes (back).
    pub fn forward_events(self: Arc<Self>, events: Events) {
        let path = self.control.clone();
        std::thread::Builder::new()
            .name("compositor-events".into())
            .spawn(move || loop {
                if let Ok(mut c) = LineClient::connect(&path) {
                    if c.request(&serde_json::json!({"op": "subscribe"})).is_ok() {
                        let _ = c.stream.set_read_timeout(None);
                        while let Ok(ev) = c.read() {
                            if let Some(e) = window_event(&ev) {
                                events.send(e);
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            })
            .expect("a thread for compositor events");
    }
}

/// A compositor event as a service event (windows only).
pub fn window_event(ev: &serde_json::Value) -> Option<Event> {
    let w = &ev["window"];
    let id = w["id"].as_u64().or_else(|| ev["id"].as_u64())?;
    match ev["event"].as_str()? {
        "window_mapped" | "window_opened" => Some(Event::WindowMapped {
            id,
            origin: origin_label(&w["origin"]),
            app_id: w["app_id"].as_str().map(str::to_string),
            title: w["title"].as_str().map(str::to_string),
        }),
        "window_unmapped" | "window_closed" => Some(Event::WindowUnmapped { id }),
        _ => None,
    }
}

/// A window's origin as one word: `host`, or `vm:<name>` (the compositor
/// describes it as `{"kind":"vm","name":..}`).
fn origin_label(o: &serde_json::Value) -> String {
    match (o["kind"].as_str(), o["name"].as_str(), o.as_str()) {
        (Some("vm"), Some(name), _) => format!("vm:{name}"),
        (Some(kind), _, _) => kind.to_string(),
        (_, _, Some(s)) => s.to_string(),
        _ => "unknown".into(),
    }
}

/// JSON lines over the control socket (TEMPORARY until rayos-compositor-ipc lands).
struct LineClient {
    stream: std::os::unix::net::UnixStream,
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl LineClient {
    fn connect(path: &std::path::Path) -> Result<LineClient, String> {
        let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("{}: {e}", path.display()))?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
        let reader = std::io::BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(LineClient { stream, reader })
    }
    fn read(&mut self) -> Result<serde_json::Value, String> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the compositor closed the connection".into());
        }
        serde_json::from_str(&line).map_err(|e| e.to_string())
    }
    fn request(&mut self, req: &serde_json::Value) -> Result<serde_json::Value, String> {
        use std::io::Write;
        let mut line = req.to_string();
        line.push('\n');
        self.stream.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        loop {
            let v = self.read()?;
            match v["type"].as_str() {
                Some("ok") => return Ok(v),
                Some("error") => return Err(format!("{}: {}", v["code"].as_str().unwrap_or("error"), v["message"].as_str().unwrap_or(""))),
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_events_carry_a_one_word_origin() {
        let ev = serde_json::json!({"event":"window_mapped","window":{"id":3,"app_id":"foot","origin":{"kind":"vm","name":"linux","colour":"#d03030"}}});
        match window_event(&ev) {
            Some(Event::WindowMapped { id: 3, origin, .. }) => assert_eq!(origin, "vm:linux"),
            other => panic!("{other:?}"),
        }
        let ev = serde_json::json!({"event":"window_mapped","window":{"id":4,"origin":{"kind":"host"}}});
        assert!(matches!(window_event(&ev), Some(Event::WindowMapped { origin, .. }) if origin == "host"));
        assert!(matches!(window_event(&serde_json::json!({"event":"window_closed","id":4})), Some(Event::WindowUnmapped { id: 4 })));
    }
}
