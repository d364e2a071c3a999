//! Helpers shared by the compositor's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Path of a client binary, or a failure naming the Debian package.
pub fn need(bin: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: install the Debian package `{package}` (bash scripts/setup.sh installs it)");
}

/// Polls `f` every 50 ms until it holds; panics after [`TIMEOUT`].
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    rayos_test_kit::wait::until(what, TIMEOUT, f).unwrap_or_else(|e| panic!("{e}"));
}
