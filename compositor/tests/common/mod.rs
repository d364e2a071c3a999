//! Helpers shared by the compositor's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const HOST_RGB: [u8; 3] = [0x1f, 0x6f, 0xeb];

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
