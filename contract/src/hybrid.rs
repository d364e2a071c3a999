//! The hybrid vsock handshake, as both ends speak it.
//!
//! RayOS's vsock backend exposes a guest's vsock ports on one unix socket
//! (the "hybrid vsock" of Firecracker and Cloud Hypervisor). A host program
//! connects to it and writes [`connect_line`] (`CONNECT <port>\n`); once the
//! guest accepted, the backend answers [`ok_line`] (`OK <host port>\n`) and
//! from then on the socket carries the guest connection. A refused connection
//! is closed without an answer. Both lines are at most [`MAX_LINE`] bytes;
//! the backend reads the first line a byte at a time, so nothing of the
//! payload that may follow it is consumed.

/// Longest handshake line accepted, newline included.
pub const MAX_LINE: usize = 32;

/// A handshake line that is not what the protocol says; the variants carry
/// the line (newline and CR removed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HybridError {
    /// The line is not UTF-8.
    #[error("the handshake line is not text")]
    NotText,
    /// Not `CONNECT` followed by exactly one word.
    #[error("expected \"CONNECT <port>\", got {0:?}")]
    NotConnect(String),
    /// Does not start with `OK `.
    #[error("expected \"OK <port>\", got {0:?}")]
    NotOk(String),
    /// The port is not a number from 0 to 4294967295.
    #[error("bad port in {0:?}")]
    BadPort(String),
}

/// What a host writes to reach guest `port`.
pub fn connect_line(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// What the backend answers when the guest accepted; `local_port` is the
/// host side's port of the new connection.
pub fn ok_line(local_port: u32) -> String {
    format!("OK {local_port}\n")
}

fn text(line: &[u8]) -> Result<&str, HybridError> {
    let t = std::str::from_utf8(line).map_err(|_| HybridError::NotText)?;
    let t = t.strip_suffix('\n').unwrap_or(t);
    Ok(t.strip_suffix('\r').unwrap_or(t))
}

/// Parses `CONNECT <port>` (the word in any case; a trailing newline or CR
/// allowed), as the backend receives it.
pub fn parse_connect(line: &[u8]) -> Result<u32, HybridError> {
    let t = text(line)?;
    let mut words = t.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(w), Some(port), None) if w.eq_ignore_ascii_case("CONNECT") => {
            port.parse().map_err(|_| HybridError::BadPort(t.to_string()))
        }
        _ => Err(HybridError::NotConnect(t.to_string())),
    }
}

/// Parses the backend's `OK <port>`, as a host receives it.
pub fn parse_ok(line: &[u8]) -> Result<u32, HybridError> {
    let t = text(line)?;
    let port = t.strip_prefix("OK ").ok_or_else(|| HybridError::NotOk(t.to_string()))?;
    port.trim().parse().map_err(|_| HybridError::BadPort(t.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        assert_eq!(parse_connect(connect_line(5252).as_bytes()), Ok(5252));
        assert_eq!(parse_ok(ok_line(1_073_741_824).as_bytes()), Ok(1_073_741_824));
        assert!(connect_line(u32::MAX).len() <= MAX_LINE);
        assert!(ok_line(u32::MAX).len() <= MAX_LINE);
    }

    #[test]
    fn malformed_lines_are_named() {
        assert_eq!(parse_connect(b"connect 1234\r"), Ok(1234));
        assert!(matches!(parse_connect(b"CONNECT"), Err(HybridError::NotConnect(_))));
        assert!(matches!(parse_connect(b"CONNECT 99999999999"), Err(HybridError::BadPort(_))));
        assert!(matches!(parse_connect(b"CONNECT 5 6"), Err(HybridError::NotConnect(_))));
        assert!(matches!(parse_connect(b"HELLO 5"), Err(HybridError::NotConnect(_))));
        assert_eq!(parse_connect(&[0xff, 0xfe]), Err(HybridError::NotText));
        assert!(matches!(parse_ok(b"ERR 5"), Err(HybridError::NotOk(_))));
        assert!(matches!(parse_ok(b"OK x"), Err(HybridError::BadPort(_))));
    }

    #[test]
    fn edge_lines() {
        // Newline and CR are the line's end, not part of it.
        assert_eq!(parse_connect(b"CONNECT 52\r\n"), Ok(52));
        assert_eq!(parse_ok(b"OK 7\r\n"), Ok(7));
        assert_eq!(parse_ok(b"OK  7"), Ok(7));
        assert_eq!(parse_connect(b""), Err(HybridError::NotConnect(String::new())));
        assert_eq!(parse_connect(b"\n"), Err(HybridError::NotConnect(String::new())));
        assert_eq!(parse_connect(b"CONNECT -1"), Err(HybridError::BadPort("CONNECT -1".into())));
        assert_eq!(parse_connect(b"CONNECTED 5"), Err(HybridError::NotConnect("CONNECTED 5".into())));
        assert_eq!(parse_ok(b"OK"), Err(HybridError::NotOk("OK".into())));
        assert_eq!(parse_ok(b"ok 5"), Err(HybridError::NotOk("ok 5".into())), "the backend answers in capitals");
        assert_eq!(parse_ok(b"OK 4294967296"), Err(HybridError::BadPort("OK 4294967296".into())));
        assert_eq!(parse_ok(&[b'O', b'K', b' ', 0xff]), Err(HybridError::NotText));
        let e = parse_connect(b"HELLO").unwrap_err().to_string();
        assert_eq!(e, "expected \"CONNECT <port>\", got \"HELLO\"");
    }
}
