//! Shared-library closure of a host binary, found with `ldd`, so the binary can
//! be copied into an initramfs together with everything the dynamic loader
//! will look for. Libraries keep the absolute path `ldd` reports (the loader's
//! default search directories), and the loader itself is included.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors from resolving a binary's libraries.
#[derive(Debug, thiserror::Error)]
pub enum LibsError {
    #[error("cannot run ldd on {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ldd failed on {binary}: {stderr}")]
    Failed { binary: PathBuf, stderr: String },
    #[error("{binary} needs {library}, which ldd cannot find")]
    NotFound { binary: PathBuf, library: String },
}

/// A library `ldd` reports as "not found".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MissingLibrary(pub String);

/// Libraries listed in `ldd` output, loader included, vDSO excluded.
/// `Err` names the first library ldd reports as "not found".
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, MissingLibrary> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, rest) = match line.split_once(" => ") {
            Some((n, r)) => (n.trim(), r.trim()),
            None => (line, line),
        };
        if rest.starts_with("not found") {
            return Err(MissingLibrary(name.to_string()));
        }
        // "path (0xaddr)" or a bare path; vDSO lines have no path at all.
        let path = rest.split(" (").next().unwrap_or(rest).trim();
        if path.starts_with('/') && !libs.iter().any(|l: &PathBuf| l == Path::new(path)) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Shared libraries (and loader) needed by `binary`; empty for static binaries.
pub fn closure(binary: &Path) -> Result<Vec<PathBuf>, LibsError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| LibsError::Spawn { binary: binary.to_path_buf(), source })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(LibsError::Failed { binary: binary.to_path_buf(), stderr: stderr.trim().to_string() });
    }
    if stdout.contains("statically linked") {
        return Ok(Vec::new());
    }
    parse_ldd(&stdout).map_err(|MissingLibrary(library)| LibsError::NotFound { binary: binary.to_path_buf(), library })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typical_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd4b1f0000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e2a9d0000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e2a7ef000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e2aa2c000)\n";
        let libs = parse_ldd(out).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn reports_missing_library() {
        let out = "\tlibfoo.so.3 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n";
        assert_eq!(parse_ldd(out).unwrap_err(), MissingLibrary("libfoo.so.3".into()));
    }
}
