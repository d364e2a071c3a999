//! The service's event stream (`GET /v1/events`): one JSON object per
//! event, `type` naming the kind. Subscribers that fall behind lose the
//! oldest events (and are told how many), never stall the service.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::state::VmState;

/// Events kept for a slow subscriber before it starts losing them.
pub const EVENT_BACKLOG: usize = 256;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    VmState {
        vm: String,
        state: VmState,
        reason: String,
    },
    ChildExited {
        vm: String,
        child: String,
        status: String,
        expected: bool,
    },
    ChildRestarted {
        vm: String,
        child: String,
        restarts: u32,
    },
    AppLaunched {
        vm: String,
        app: String,
        handle: u64,
        pid: u32,
    },
    AppExited {
        vm: String,
        handle: u64,
        status: Option<i32>,
        signal: Option<i32>,
    },
    WindowMapped {
        id: u64,
        origin: String,
        app_id: Option<String>,
        title: Option<String>,
    },
    WindowUnmapped {
        id: u64,
    },
    /// This subscriber missed `missed` events.
    Lagged {
        missed: u64,
    },
}

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(EVENT_BACKLOG).0 }
    }
}

impl Events {
    pub fn send(&self, e: Event) {
        tracing::debug!(?e, "event");
        // No subscriber is fine.
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_json() {
        let e = Event::VmState { vm: "linux".into(), state: VmState::Running, reason: "the agent answered".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"vm_state","vm":"linux","state":"running","reason":"the agent answered"}"#
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_old_events_not_the_sender() {
        let ev = Events::default();
        let mut rx = ev.subscribe();
        for h in 0..(EVENT_BACKLOG as u64 + 10) {
            ev.send(Event::AppExited { vm: "v".into(), handle: h, status: Some(0), signal: None });
        }
        assert!(matches!(rx.recv().await, Err(broadcast::error::RecvError::Lagged(10))));
    }
}
