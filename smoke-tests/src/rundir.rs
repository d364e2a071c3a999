//! Run directories (`<root>/<scenario>-<UTC timestamp>/`) that keep every
//! artefact and log of one scenario run, and workspace-relative defaults.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors from creating a run directory.
#[derive(Debug, thiserror::Error)]
#[error("cannot create run directory {path}")]
pub struct RunDirError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The workspace root (parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    }
}

/// Default location of a workspace binary built with `--release`.
pub fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// `YYYYMMDD-HHMMSS` (UTC) for seconds since the Unix epoch.
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// Creates `<root>/<scenario>-<stamp>` (with a `-N` suffix if taken), or
/// `explicit` when given.
pub fn create(root: &Path, scenario: &str, explicit: Option<&Path>) -> Result<PathBuf, RunDirError> {
    if let Some(dir) = explicit {
        std::fs::create_dir_all(dir).map_err(|source| RunDirError { path: dir.to_path_buf(), source })?;
        return Ok(dir.to_path_buf());
    }
    std::fs::create_dir_all(root).map_err(|source| RunDirError { path: root.to_path_buf(), source })?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{scenario}-{}", utc_stamp(now));
    for n in 1.. {
        let name = if n == 1 { base.clone() } else { format!("{base}-{n}") };
        let path = root.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(RunDirError { path, source }),
        }
    }
    unreachable!("an unbounded range always yields a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_827_696), "20000229-123456");
        assert_eq!(utc_stamp(1_763_725_501), "20251121-114501");
    }

    #[test]
    fn run_dirs_are_unique() {
        let root = tempfile::tempdir().unwrap();
        let a = create(root.path(), "vmm-boot", None).unwrap();
        let b = create(root.path(), "vmm-boot", None).unwrap();
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("vmm-boot-"));
    }
}
