//! A blocking QMP client: connect (retrying until QEMU listens), read the
//! greeting, negotiate capabilities, run commands. Asynchronous events that
//! arrive while a command runs are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one reply may take (QEMU's `screendump` of a large scanout under
/// TCG can take seconds).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// What went wrong talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP {path}: cannot connect: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: QEMU closed the connection")]
    Closed,
    #[error("QMP: bad JSON {line:?}: {source}")]
    Json {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("QMP: unexpected greeting {0}")]
    Greeting(Value),
    /// QEMU answered the command with an error; `desc` is its description.
    #[error("QMP {command}: {desc}")]
    Command { command: String, desc: String },
}

/// A QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path`, retrying for up to `timeout`
    /// while QEMU starts, and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(source) if Instant::now() >= end => {
                    return Err(QmpError::Connect { path: path.to_path_buf(), source })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut q = Qmp { reader: BufReader::new(stream), writer };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting(greeting));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// Reads one message (a reply or an event).
    pub fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|source| QmpError::Json { line, source })
    }

    /// Runs a command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}")?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("error").to_string();
                return Err(QmpError::Command { command: command.to_string(), desc });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted QEMU: greeting, then one reply line per command received.
    #[test]
    fn negotiates_skips_events_and_reports_errors() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let replies = [
                r#"{"return": {}}"#.to_string(),
                format!("{}\n{}", r#"{"event": "RESET"}"#, r#"{"return": {"status": "running"}}"#),
                r#"{"error": {"class": "GenericError", "desc": "no such format"}}"#.to_string(),
            ];
            for reply in replies {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                writeln!(w, "{reply}").unwrap();
            }
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(q.execute("query-status", json!({})).unwrap()["status"], "running");
        let e = q.execute("screendump", json!({})).unwrap_err();
        assert!(matches!(&e, QmpError::Command { desc, .. } if desc == "no such format"), "{e}");
        server.join().unwrap();
        assert!(matches!(q.read(), Err(QmpError::Closed)));
    }
}
