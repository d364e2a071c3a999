//! `rayos-smoke-control`: a minimal client of the compositor's control API
//! (compositor/CONTROL-API.md) for test hosts that have no other one
//! (busybox `nc` has no unix sockets). `rayos-smoke vmm-native` copies it
//! into its nested test host.
//!
//! ```text
//! rayos-smoke-control SOCKET REQUEST_JSON...
//!     send each request, print each reply line; exit 1 at the first error reply
//! rayos-smoke-control SOCKET --wait-window VM APP_ID_PART SECONDS
//!     poll list_windows until a window of VM whose app_id contains
//!     APP_ID_PART (or one of its |-separated alternatives) has drawn (first_content_ms set); print that window's JSON
//!     (exit 0), or the last window list after SECONDS (exit 1)
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What stopped a request.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("{path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the compositor closed the connection")]
    Closed,
    #[error("reply is not JSON ({source}): {line}")]
    Json { line: String, source: serde_json::Error },
    #[error("bad SECONDS {0:?}")]
    BadSeconds(String),
    #[error("{0}")]
    Usage(&'static str),
}

struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    fn connect(path: &str) -> Result<Self, ControlError> {
        let s = UnixStream::connect(path).map_err(|source| ControlError::Connect { path: path.into(), source })?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let reader = BufReader::new(s.try_clone()?);
        Ok(Control { reader, writer: s })
    }

    /// Sends one request line; returns the reply line and whether it is `ok`.
    fn request(&mut self, req: &str) -> Result<(String, Value), ControlError> {
        self.writer.write_all(format!("{}\n", req.trim()).as_bytes())?;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(ControlError::Closed);
            }
            let v: Value = match serde_json::from_str(line.trim()) {
                Ok(v) => v,
                Err(source) => return Err(ControlError::Json { line, source }),
            };
            if v["type"] != "event" {
                return Ok((line.trim().to_string(), v));
            }
        }
    }
}

fn wait_window(ctl: &mut Control, vm: &str, part: &str, secs: u64) -> Result<bool, ControlError> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let (line, v) = ctl.request(r#"{"op":"list_windows"}"#)?;
        if v["type"] != "ok" {
            println!("{line}");
            return Ok(false);
        }
        let found = v["windows"].as_array().into_iter().flatten().find(|w| {
            w["origin"]["name"] == vm
                && w["app_id"].as_str().is_some_and(|a| part.split('|').any(|p| a.contains(p)))
                && w["first_content_ms"].is_number()
        });
        if let Some(w) = found {
            println!("{w}");
            return Ok(true);
        }
        if Instant::now() > end {
            println!("{line}");
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: rayos-smoke-control SOCKET REQUEST_JSON... | SOCKET --wait-window VM APP_ID_PART SECONDS";
    let Some((socket, rest)) = args.split_first() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let mut ctl = match Control::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rayos-smoke-control: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match rest {
        [flag, vm, part, secs] if flag == "--wait-window" => match secs.parse() {
            Ok(secs) => wait_window(&mut ctl, vm, part, secs),
            Err(_) => Err(ControlError::BadSeconds(secs.clone())),
        },
        [] => Err(ControlError::Usage(usage)),
        reqs => (|| {
            for r in reqs {
                let (line, v) = ctl.request(r)?;
                println!("{line}");
                if v["type"] != "ok" {
                    return Ok(false);
                }
            }
            Ok(true)
        })(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rayos-smoke-control: {e}");
            ExitCode::FAILURE
        }
    }
}
