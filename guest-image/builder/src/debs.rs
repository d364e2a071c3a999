//! Debian packages for the scenarios: resolve, download, verify, cache and
//! extract them with the machine's own apt configuration.
//!
//! * Downloads use `apt-get download`, i.e. whatever sources this machine is
//!   configured with; no mirror is named here.
//! * `.deb` files live in `<cache>/debs` under apt's own file names and are
//!   reused when their SHA-256 matches what `apt-cache show` reports for the
//!   candidate version, so a second run needs no network at all.
//! * Packages are unpacked with `dpkg-deb -x` into `<cache>/extract/<pkg>_<ver>`
//!   through a temporary directory, so an interrupted extraction is never
//!   mistaken for a complete one.
//! * `apt-get update` runs only when apt cannot resolve or fetch a package.

use std::cell::Cell;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Errors from resolving, downloading or extracting a package.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot run {tool} for package {package}")]
    Spawn {
        tool: &'static str,
        package: String,
        #[source]
        source: std::io::Error,
    },
    #[error("apt does not know package {package} (even after apt-get update): {detail}")]
    Unknown { package: String, detail: String },
    #[error("cannot find the kernel package that {meta} depends on in `apt-cache depends` output")]
    NoKernelDependency { meta: String },
    #[error("apt-get download {package} failed ({status}); see apt's messages above")]
    Download { package: String, status: std::process::ExitStatus },
    #[error("downloaded {path} for {package} has SHA-256 {actual}, apt expects {expected}")]
    Checksum { package: String, path: PathBuf, expected: String, actual: String },
    #[error("dpkg-deb -x {deb} failed ({status}): {stderr}")]
    Extract { deb: PathBuf, status: std::process::ExitStatus, stderr: String },
    #[error("cannot run apt-get update")]
    UpdateSpawn(#[source] std::io::Error),
    #[error("apt-get update failed ({0}); run it by hand to see why")]
    Update(std::process::ExitStatus),
    #[error("cache path {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `apt-cache show` says about a package's candidate version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub size: u64,
    pub sha256: String,
}

impl PackageInfo {
    /// The file name `apt-get download` gives this package (`:` as `%3a`).
    pub fn deb_file_name(&self) -> String {
        format!("{}_{}_{}.deb", self.package, self.version.replace(':', "%3a"), self.architecture)
    }
}

/// A package present in the cache, checksum verified.
#[derive(Debug, Clone)]
pub struct FetchedDeb {
    pub info: PackageInfo,
    pub path: PathBuf,
}

/// Parses the first stanza of `apt-cache show --no-all-versions` output.
pub fn parse_show(text: &str) -> Option<PackageInfo> {
    let stanza = text.split("\n\n").next()?;
    let field = |name: &str| {
        stanza
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
    };
    Some(PackageInfo {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
        size: field("Size")?.parse().ok()?,
        sha256: field("SHA256")?.to_lowercase(),
    })
}

/// From `apt-cache depends <meta>` output, the first `Depends:` on a concrete
/// kernel image (`linux-image-<release>`), e.g. `linux-image-6.1.0-56-amd64`.
pub fn parse_kernel_dependency(text: &str, meta: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| l.trim_start_matches('|').strip_prefix("Depends:"))
        .map(|d| d.trim().trim_matches(|c| c == '<' || c == '>').to_string())
        .find(|d| d.starts_with("linux-image-") && d != meta && d.chars().any(|c| c.is_ascii_digit()))
}

/// The `uname -r` release of a kernel image package name.
pub fn kernel_release(package: &str) -> Option<&str> {
    package.strip_prefix("linux-image-").filter(|r| r.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// Cache root from `$RAYOS_CACHE_DIR`, else `~/.cache/rayos`.
pub fn default_cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("RAYOS_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/rayos")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Package cache rooted at one directory (`debs/` and `extract/` inside).
#[derive(Debug)]
pub struct DebCache {
    debs: PathBuf,
    extract: PathBuf,
    updated: Cell<bool>,
}

impl DebCache {
    pub fn new(root: &Path) -> Result<Self, DebError> {
        let cache = Self { debs: root.join("debs"), extract: root.join("extract"), updated: Cell::new(false) };
        for dir in [&cache.debs, &cache.extract] {
            std::fs::create_dir_all(dir).map_err(|source| DebError::Io { path: dir.clone(), source })?;
        }
        Ok(cache)
    }

    /// Runs `apt-get update` once per process (via sudo when not root).
    fn apt_update(&self) -> Result<(), DebError> {
        if self.updated.replace(true) {
            return Ok(());
        }
        tracing::info!("apt-get update (package lists are missing or stale)");
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        let status = cmd.args(["update", "-q"]).stdout(stderr_stdio()).status().map_err(DebError::UpdateSpawn)?;
        if !status.success() {
            return Err(DebError::Update(status));
        }
        Ok(())
    }

    fn apt_cache(&self, args: &[&str], package: &str) -> Result<Option<String>, DebError> {
        let out = Command::new("apt-cache").args(args).arg(package).output().map_err(|source| DebError::Spawn {
            tool: "apt-cache",
            package: package.to_string(),
            source,
        })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((out.status.success() && !text.trim().is_empty()).then_some(text))
    }

    /// Runs an apt-cache query, retrying once after `apt-get update`.
    fn query<T>(&self, args: &[&str], package: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, DebError> {
        if let Some(v) = self.apt_cache(args, package)?.as_deref().and_then(&parse) {
            return Ok(Some(v));
        }
        self.apt_update()?;
        Ok(self.apt_cache(args, package)?.as_deref().and_then(parse))
    }

    /// Candidate-version metadata of a package.
    pub fn info(&self, package: &str) -> Result<PackageInfo, DebError> {
        self.query(&["show", "--no-all-versions"], package, parse_show)?.ok_or_else(|| DebError::Unknown {
            package: package.to_string(),
            detail: "`apt-cache show --no-all-versions` printed no usable stanza".into(),
        })
    }

    /// The concrete kernel package a meta package (e.g. `linux-image-amd64`)
    /// depends on.
    pub fn resolve_kernel_package(&self, meta: &str) -> Result<String, DebError> {
        if let Some(pkg) = self.query(&["depends"], meta, |t| parse_kernel_dependency(t, meta))? {
            return Ok(pkg);
        }
        match self.apt_cache(&["depends"], meta)? {
            None => Err(DebError::Unknown {
                package: meta.to_string(),
                detail: "`apt-cache depends` found no such package".into(),
            }),
            Some(_) => Err(DebError::NoKernelDependency { meta: meta.to_string() }),
        }
    }

    /// Returns the verified `.deb` of the candidate version, downloading it
    /// only when the cache lacks a good copy.
    pub fn fetch(&self, package: &str) -> Result<FetchedDeb, DebError> {
        let info = self.info(package)?;
        let path = self.debs.join(info.deb_file_name());
        if path.is_file() && self.checksum_ok(&info, &path)? {
            tracing::info!(
                "package {} {} ({:.1} MiB): cached at {}",
                info.package,
                info.version,
                mib(info.size),
                path.display()
            );
            return Ok(FetchedDeb { info, path });
        }
        tracing::info!(
            "fetching {} {} ({:.1} MiB) with apt-get download into {}",
            info.package,
            info.version,
            mib(info.size),
            self.debs.display()
        );
        let mut status = self.apt_download(&info)?;
        if !(status.success() && path.is_file()) {
            self.apt_update()?;
            status = self.apt_download(&info)?;
        }
        if !(status.success() && path.is_file()) {
            return Err(DebError::Download { package: format!("{}={}", info.package, info.version), status });
        }
        if !self.checksum_ok(&info, &path)? {
            let actual = sha256_file(&path).map_err(|source| DebError::Io { path: path.clone(), source })?;
            return Err(DebError::Checksum { package: info.package, path, expected: info.sha256, actual });
        }
        Ok(FetchedDeb { info, path })
    }

    fn download_cmd(&self, info: &PackageInfo) -> Command {
        let mut cmd = Command::new("apt-get");
        if is_root() {
            // apt drops to the `_apt` user, which cannot write a root-owned
            // cache in $HOME; downloading as root is what apt then does anyway.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd.args(["download", "-q"])
            .arg(format!("{}={}", info.package, info.version))
            .current_dir(&self.debs)
            .stdout(stderr_stdio());
        cmd
    }

    fn apt_download(&self, info: &PackageInfo) -> Result<std::process::ExitStatus, DebError> {
        self.download_cmd(info).status().map_err(|source| DebError::Spawn {
            tool: "apt-get download",
            package: info.package.clone(),
            source,
        })
    }

    fn checksum_ok(&self, info: &PackageInfo, path: &Path) -> Result<bool, DebError> {
        let actual = sha256_file(path).map_err(|source| DebError::Io { path: path.to_path_buf(), source })?;
        if actual != info.sha256 {
            tracing::warn!("{}: SHA-256 mismatch with apt metadata, downloading again", path.display());
        }
        Ok(actual == info.sha256)
    }

    /// Extracts a fetched package (once) and returns the extraction root.
    pub fn extract(&self, deb: &FetchedDeb) -> Result<PathBuf, DebError> {
        let name = format!("{}_{}", deb.info.package, deb.info.version.replace(':', "%3a"));
        let dest = self.extract.join(&name);
        let stamp = dest.join(".rayos-sha256");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DebError::Io { path, source }
        };
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == deb.info.sha256) {
            return Ok(dest);
        }
        tracing::info!("extracting {} into {}", deb.path.display(), dest.display());
        let tmp = self.extract.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb.path)
            .arg(&tmp)
            .output()
            .map_err(|source| DebError::Spawn { tool: "dpkg-deb", package: deb.info.package.clone(), source })?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(DebError::Extract {
                deb: deb.path.clone(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        std::fs::write(tmp.join(".rayos-sha256"), &deb.info.sha256).map_err(io(&tmp))?;
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(io(&dest))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
        Ok(dest)
    }
}

/// A `Stdio` writing to our stderr, so tool chatter never mixes with results
/// on stdout.
fn stderr_stdio() -> Stdio {
    std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::inherit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_is_found() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(parse_kernel_dependency(text, "linux-image-amd64").as_deref(), Some("linux-image-6.1.0-56-amd64"));
        let alt = "linux-image-amd64\n |Depends: linux-image-6.12.9-amd64\n  Depends: <linux-image-6.12.9-amd64>\n";
        assert_eq!(parse_kernel_dependency(alt, "linux-image-amd64").as_deref(), Some("linux-image-6.12.9-amd64"));
        assert_eq!(parse_kernel_dependency("linux-image-amd64\n", "linux-image-amd64"), None);
        assert_eq!(kernel_release("linux-image-6.1.0-56-amd64"), Some("6.1.0-56-amd64"));
        assert_eq!(kernel_release("linux-image-amd64"), None);
    }

    #[test]
    fn show_stanza_is_parsed() {
        let text = "Package: busybox-static\nSource: busybox (1:1.35.0-4)\nVersion: 1:1.35.0-4+deb12u1+b1\n\
                    Architecture: amd64\nSize: 928188\nSHA256: ABCDEF01\nDescription: x\n\n\
                    Package: busybox-static\nVersion: 1:1.30\n";
        let info = parse_show(text).unwrap();
        assert_eq!(info.version, "1:1.35.0-4+deb12u1+b1");
        assert_eq!(info.size, 928188);
        assert_eq!(info.sha256, "abcdef01");
        assert_eq!(info.deb_file_name(), "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb");
        assert_eq!(parse_show("Package: x\n"), None);
    }

    #[test]
    fn sha256_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
