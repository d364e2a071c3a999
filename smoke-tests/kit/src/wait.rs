//! Polling with a deadline. Every wait names what it waited for, so a
//! timeout says which step hung.

use std::path::Path;
use std::time::{Duration, Instant};

/// A wait that ran out of time.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("timed out after {:.1}s waiting for {what}", .after.as_secs_f64())]
pub struct Timeout {
    pub what: String,
    pub after: Duration,
}

/// Polls `f` every `every` until it yields a value, an error, or `timeout`
/// passes (then `Timeout` converted into `E`).
pub fn poll<T, E: From<Timeout>>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>, E>,
) -> Result<T, E> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(Timeout { what: what.to_string(), after: timeout }.into());
        }
        std::thread::sleep(every);
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), Timeout> {
    poll(what, timeout, Duration::from_millis(50), || Ok::<_, Timeout>(cond().then_some(())))
}

/// Waits until `path` exists (a socket a server binds, a file it writes),
/// checking every 5 ms.
pub fn path_appears(path: &Path, timeout: Duration) -> Result<(), Timeout> {
    poll(&path.display().to_string(), timeout, Duration::from_millis(5), || {
        Ok::<_, Timeout>(path.exists().then_some(()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_value_or_names_the_timeout() {
        let mut n = 0;
        let v: Result<u32, Timeout> = poll("three calls", Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            Ok((n == 3).then_some(n))
        });
        assert_eq!(v, Ok(3));
        let e = until("never", Duration::from_millis(20), || false).unwrap_err();
        assert_eq!(e.what, "never");
        assert!(e.to_string().contains("waiting for never"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("sock");
        assert!(path_appears(&missing, Duration::from_millis(10)).is_err());
        std::fs::write(&missing, b"").unwrap();
        assert!(path_appears(&missing, Duration::from_millis(10)).is_ok());
    }
}
