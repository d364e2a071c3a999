//! `manifest.json`: what an image was built from and checksums of what it contains.
//!
//! `rootfs_tree_sha256` covers the root file system directory: every entry
//! below it (the root itself excluded), in byte order of the relative path,
//! contributes `path NUL kind NUL mode NUL uid NUL gid NUL payload NL`, where
//! kind is one of `f d l c b p s`, mode is the octal permission bits
//! (including setuid/setgid/sticky), and payload is the sha256 of a regular
//! file's contents, a symlink's target, `major:minor` of a device node, or
//! empty. Timestamps, hard-link identity, extended attributes and sizes of
//! directories are not covered. Two builds of the same inputs produce
//! different trees (logs, generated keys, caches), so the hash identifies one
//! built tree; it is not a reproducibility check.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ImageError;

/// Bumped when the builder changes what it puts into an image; part of [`Inputs`].
pub const BUILDER_FORMAT: u32 = 1;

/// What decides whether an existing root file system can be reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// `rayos-image <crate version> format <BUILDER_FORMAT>`.
    pub builder_version: String,
    pub suite: String,
    pub mirror: String,
    /// Packages asked for (sorted, deduplicated); apt adds their dependencies.
    pub packages: Vec<String>,
}

/// One installed package, from the root file system's dpkg status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// sha256 (hex) of the image's artefacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    pub vmlinuz: String,
    pub initramfs: String,
    pub agent: String,
    /// See the module documentation for what the tree hash covers.
    pub rootfs_tree: String,
}

/// The `manifest.json` written next to the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub inputs: Inputs,
    pub suite: String,
    pub mirror: String,
    pub kernel_release: String,
    /// Kernel command line arguments the image expects (the caller adds its console).
    pub kernel_cmdline: String,
    /// File names inside the output directory.
    pub vmlinuz: String,
    pub initramfs: String,
    pub rootfs: String,
    /// Modules the initramfs loads, in order (empty when built in).
    pub initramfs_modules: Vec<String>,
    pub packages: Vec<Package>,
    pub sha256: Checksums,
    /// When the root file system was built (UTC, RFC 3339).
    pub rootfs_built_at: String,
    /// When this manifest was written (UTC, RFC 3339); later than
    /// `rootfs_built_at` when a build reused the root file system.
    pub built_at: String,
    /// Wall-clock seconds the last build took.
    pub build_seconds: f64,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ImageError> {
        let text = std::fs::read(path).map_err(ImageError::io(path))?;
        serde_json::from_slice(&text).map_err(|source| ImageError::Manifest { path: path.to_path_buf(), source })
    }

    pub fn store(&self, path: &Path) -> Result<(), ImageError> {
        let mut text = serde_json::to_vec_pretty(self)
            .map_err(|source| ImageError::Manifest { path: path.to_path_buf(), source })?;
        text.push(b'\n');
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(ImageError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(ImageError::io(path))
    }
}

/// Installed packages from a dpkg status file, sorted by name.
pub(crate) fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out: Vec<Package> = text
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |k: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')).map(|v| v.trim().to_string()))
            };
            let status = field("Status")?;
            if !status.ends_with(" installed") {
                return None;
            }
            Some(Package {
                name: field("Package")?,
                version: field("Version")?,
                architecture: field("Architecture").unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    out
}

pub(crate) fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = std::fs::File::open(path).map_err(ImageError::io(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(ImageError::io(path))?;
    Ok(format!("{:x}", h.finalize()))
}

/// The tree hash described in the module documentation.
pub(crate) fn tree_sha256(root: &Path) -> Result<String, ImageError> {
    use std::os::unix::ffi::OsStrExt;
    let mut entries = Vec::new();
    collect(root, Path::new(""), &mut entries)?;
    entries.sort();
    let mut h = Sha256::new();
    for rel in entries {
        let path = root.join(std::ffi::OsStr::from_bytes(&rel));
        let md = std::fs::symlink_metadata(&path).map_err(ImageError::io(&path))?;
        let ft = md.file_type();
        let (kind, payload) = if ft.is_file() {
            ("f", sha256_file(&path)?)
        } else if ft.is_dir() {
            ("d", String::new())
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&path).map_err(ImageError::io(&path))?;
            ("l", t.to_string_lossy().into_owned())
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            let kind = if ft.is_char_device() { "c" } else { "b" };
            (kind, format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
        } else if ft.is_fifo() {
            ("p", String::new())
        } else {
            ("s", String::new())
        };
        h.update(&rel);
        h.update(format!("\0{kind}\0{:o}\0{}\0{}\0{payload}\n", md.permissions().mode() & 0o7777, md.uid(), md.gid()));
    }
    Ok(format!("{:x}", h.finalize()))
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<Vec<u8>>) -> Result<(), ImageError> {
    use std::os::unix::ffi::OsStrExt;
    let dir = root.join(rel);
    for e in std::fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
        let e = e.map_err(ImageError::io(&dir))?;
        let r = rel.join(e.file_name());
        out.push(r.as_os_str().as_bytes().to_vec());
        if e.file_type().map_err(ImageError::io(e.path()))?.is_dir() {
            collect(root, &r, out)?;
        }
    }
    Ok(())
}

/// `SystemTime` as RFC 3339 UTC (`2025-01-31T12:00:00Z`).
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dpkg_status_keeps_installed_packages() {
        let s = "Package: weston\nStatus: install ok installed\nArchitecture: amd64\nVersion: 14.0.2-1\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Package: foot\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.0-2\nDescription: x\n version: not a field\n";
        let p = parse_dpkg_status(s);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], Package { name: "foot".into(), version: "1.21.0-2".into(), architecture: "amd64".into() });
        assert_eq!(p[1].name, "weston");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tree_hash_sees_contents_modes_and_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/a"), b"one").unwrap();
        std::os::unix::fs::symlink("etc/a", d.path().join("link")).unwrap();
        let h1 = tree_sha256(d.path()).unwrap();
        assert_eq!(h1, tree_sha256(d.path()).unwrap());
        std::fs::write(d.path().join("etc/a"), b"two").unwrap();
        let h2 = tree_sha256(d.path()).unwrap();
        assert_ne!(h1, h2);
        std::fs::set_permissions(d.path().join("etc/a"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let h3 = tree_sha256(d.path()).unwrap();
        assert_ne!(h2, h3);
        std::fs::remove_file(d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("etc/b", d.path().join("link")).unwrap();
        assert_ne!(h3, tree_sha256(d.path()).unwrap());
    }
}
