//! A blocking client of the control socket.
//!
//! One request, one reply line; event lines that arrive before a reply (a
//! subscribed connection) are skipped by [`Client::request`]. Every line read
//! is capped at [`MAX_LINE`] bytes: a longer or malformed line from the
//! compositor is an error, never a panic or an unbounded buffer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::{ApiError, Reply, Request, ServerMessage, MAX_LINE};
use crate::types::Event;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the compositor's control socket {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("compositor control socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("compositor control socket {path}: the compositor closed the connection")]
    Closed { path: PathBuf },
    #[error("compositor control socket {path}: a line longer than {max} bytes")]
    LineTooLong { path: PathBuf, max: usize },
    #[error("compositor control socket {path}: unreadable line ({reason})")]
    BadLine { path: PathBuf, reason: String },
    #[error("the compositor refused: {0:?}: {1}")]
    Refused(crate::control::ErrorCode, String),
    #[error("compositor control socket {path}: expected a reply, got an event")]
    NotAReply { path: PathBuf },
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Refused(e.code, e.message)
    }
}

/// A connection to the compositor's control socket.
pub struct Client {
    path: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects; reads and writes time out after `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect { path: path.into(), source })?;
        let io = |source| ClientError::Io { path: path.into(), source };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(Client { path: path.into(), writer: stream, reader })
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io { path: self.path.clone(), source }
    }

    /// Sends `req` and returns its reply (an error reply is
    /// [`ClientError::Refused`]).
    pub fn request(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let mut line = serde_json::to_string(req)
            .map_err(|e| ClientError::BadLine { path: self.path.clone(), reason: e.to_string() })?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| self.io(e))?;
        loop {
            match self.read_message()? {
                ServerMessage::Ok(r) => return Ok(r),
                ServerMessage::Error(e) => return Err(e.into()),
                ServerMessage::Event(_) => continue,
            }
        }
    }

    /// Subscribes and turns the connection into an event stream; `timeout`
    /// bounds each wait for an event (`None`: wait for ever).
    pub fn subscribe(mut self, timeout: Option<Duration>) -> Result<EventStream, ClientError> {
        match self.request(&Request::Subscribe)? {
            Reply::Subscribed => {}
            _ => return Err(ClientError::NotAReply { path: self.path.clone() }),
        }
        self.writer.set_read_timeout(timeout).map_err(|e| self.io(e))?;
        Ok(EventStream { client: self })
    }

    fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        let mut buf = Vec::new();
        let n = (&mut self.reader).take(MAX_LINE as u64 + 2).read_until(b'\n', &mut buf).map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(ClientError::Closed { path: self.path.clone() });
        }
        if buf.last() != Some(&b'\n') {
            return Err(if buf.len() > MAX_LINE {
                ClientError::LineTooLong { path: self.path.clone(), max: MAX_LINE }
            } else {
                ClientError::Closed { path: self.path.clone() }
            });
        }
        serde_json::from_slice(&buf)
            .map_err(|e| ClientError::BadLine { path: self.path.clone(), reason: e.to_string() })
    }
}

/// A subscribed connection: one [`Event`] after another.
pub struct EventStream {
    client: Client,
}

impl EventStream {
    /// The next event (replies on this connection are not expected and are
    /// an error).
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        match self.client.read_message()? {
            ServerMessage::Event(e) => Ok(e),
            ServerMessage::Error(e) => Err(e.into()),
            ServerMessage::Ok(_) => Err(ClientError::NotAReply { path: self.client.path.clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{encode_line, ErrorCode};
    use crate::types::{CloseReason, WindowId};
    use std::os::unix::net::UnixListener;

    /// A fake compositor that answers each request line with the next of
    /// `answers` (raw text, newline included).
    fn fake(answers: Vec<String>) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut got = vec![];
            for a in answers {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                got.push(line.trim().to_string());
                w.write_all(a.as_bytes()).unwrap();
            }
            got
        });
        (dir, path, t)
    }

    #[test]
    fn request_reply_and_error() {
        let ok = encode_line(&ServerMessage::Ok(Reply::Windows { windows: vec![], now_ms: 5 }));
        let err = encode_line(&ServerMessage::Error(ApiError::new(ErrorCode::UnknownVm, "no VM named \"x\"")));
        let (_d, path, t) = fake(vec![ok, err]);
        let mut c = Client::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(c.request(&Request::ListWindows).unwrap(), Reply::Windows { windows: vec![], now_ms: 5 });
        let e = c.request(&Request::UnregisterVm { name: "x".into() }).unwrap_err();
        assert!(matches!(e, ClientError::Refused(ErrorCode::UnknownVm, _)), "{e}");
        let got = t.join().unwrap();
        assert_eq!(got, [r#"{"op":"list_windows"}"#, r#"{"op":"unregister_vm","name":"x"}"#]);
    }

    #[test]
    fn an_overlong_or_garbled_line_is_an_error() {
        let (_d, path, _t) = fake(vec!["x".repeat(MAX_LINE + 10) + "\n"]);
        let mut c = Client::connect(&path, Duration::from_secs(5)).unwrap();
        assert!(matches!(c.request(&Request::ListWindows), Err(ClientError::LineTooLong { .. })));
        let (_d, path, _t) = fake(vec!["{not json\n".into()]);
        let mut c = Client::connect(&path, Duration::from_secs(5)).unwrap();
        let e = c.request(&Request::ListWindows).unwrap_err();
        assert!(e.to_string().contains("control.sock"), "{e}");
    }

    #[test]
    fn a_subscription_receives_events() {
        let sub = encode_line(&ServerMessage::Ok(Reply::Subscribed))
            + &encode_line(&ServerMessage::Event(Event::FocusChanged { id: Some(WindowId(3)) }))
            + &encode_line(&ServerMessage::Event(Event::WindowClosed { id: WindowId(3), reason: CloseReason::Closed }));
        let (_d, path, _t) = fake(vec![sub]);
        let c = Client::connect(&path, Duration::from_secs(5)).unwrap();
        let mut ev = c.subscribe(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ev.next_event().unwrap(), Event::FocusChanged { id: Some(WindowId(3)) });
        assert_eq!(ev.next_event().unwrap(), Event::WindowClosed { id: WindowId(3), reason: CloseReason::Closed });
        assert!(matches!(ev.next_event(), Err(ClientError::Closed { .. })));
    }
}
