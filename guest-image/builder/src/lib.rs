//! RayOS guest image builder: builds the Linux guest that rayos-vmm (or QEMU)
//! boots, from Debian packages.
//!
//! Output directory layout:
//! - `vmlinuz`: the Debian `linux-image-amd64` kernel (bzImage).
//! - `initramfs.cpio.gz`: busybox-static, the modules needed to mount the
//!   root over virtio-fs (none when the kernel has them built in, as trixie's
//!   6.12 does), and an `/init` that mounts the virtio-fs tag `rootfs`
//!   (`rayos.root=TAG` overrides) and switch_roots to `/sbin/rayos-init`.
//! - `rootfs/`: the root file system directory, built with mmdebstrap (root
//!   mode) and exported to the guest by virtiofsd. It has the `rayos` user
//!   (uid/gid 1000), `/sbin/rayos-init`, the guest agent at
//!   `/usr/libexec/rayos/rayos-guest-agent`, the kernel's modules, and the
//!   desktop entries of guest-image/rootfs/applications/ in
//!   `/usr/share/applications` (embedded at compile time by build.rs).
//! - `manifest.json`: see [`Manifest`].
//!
//! ```no_run
//! use rayos_image::{build, BuildOptions, Progress};
//! let opts = BuildOptions::new("/var/lib/rayos/guest", "/root/.cache/rayos/image", "target/release/rayos-guest-agent");
//! let manifest = build(&opts, &mut |p: Progress| eprintln!("{p}"))?;
//! println!("kernel {}", manifest.kernel_release);
//! # Ok::<(), rayos_image::ImageError>(())
//! ```
//!
//! Building needs root (mmdebstrap `--mode=root`, files owned by guest
//! users), the `mmdebstrap`, `xz` and `zstd` tools (scripts/setup.sh installs
//! them) and the Debian mirror from this machine's apt configuration
//! ([`default_mirror`]) unless [`BuildOptions::mirror`] names one.
//!
//! Reuse: when `<out_dir>/manifest.json` records the same [`Inputs`]
//! (builder version, suite, mirror, package list) and the artefacts are
//! present, the root file system is not rebuilt. The agent binary,
//! `/sbin/rayos-init`, the desktop entries, the user set-up and the initramfs are refreshed on
//! every build (they are cheap, and the agent changes often), and the
//! manifest's checksums are recomputed. A changed agent therefore never
//! causes a rebuild. Otherwise the tree is built in `rootfs.new/` and replaces
//! `rootfs/` only when complete.
//!
//! Download cache: `<cache_dir>/apt-archives` and `<cache_dir>/apt-lists`
//! (see the `mmdebstrap` module); a second build from a warm cache downloads
//! no package, only revalidates the suite's `InRelease`.

pub mod cpio;
pub mod debs;
mod error;
pub mod hostimage;
mod initramfs;
pub mod kmod;
mod manifest;
mod mirror;
mod mmdebstrap;
mod rootfs;
pub mod sharedlibs;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

pub use error::ImageError;
pub use initramfs::{ModuleFile, ROOT_MODULES};
pub use manifest::{Checksums, Inputs, Manifest, Package, BUILDER_FORMAT};
pub use mirror::mirror_for;
pub use rootfs::{AGENT_GUEST_PATH, DESKTOP_ENTRIES, HOSTNAME, UID, USER};

/// The Debian suite images are built from.
pub const DEFAULT_SUITE: &str = "trixie";
/// Packages every image has; [`BuildOptions::extra_packages`] adds to them.
pub const BASE_PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "busybox-static",
    "kmod",
    "procps",
    "foot",
    "weston",
    "waypipe",
    "wayland-utils",
    "wl-clipboard",
    "fonts-dejavu-core",
];
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.cpio.gz";
pub const ROOTFS: &str = "rootfs";
pub const MANIFEST: &str = "manifest.json";
/// virtio-fs tag the initramfs mounts as root by default.
pub const ROOT_TAG: &str = "rootfs";

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Download cache directory, e.g. `~/.cache/rayos/image` or `$RAYOS_CACHE_DIR/image`.
    pub cache_dir: PathBuf,
    /// The guest agent binary on this machine.
    pub agent: PathBuf,
    /// Debian mirror URI; `None` takes it from the apt configuration.
    pub mirror: Option<String>,
    /// Debian suite, [`DEFAULT_SUITE`] by default.
    pub suite: String,
    /// Packages installed in addition to [`BASE_PACKAGES`].
    pub extra_packages: Vec<String>,
}

impl BuildOptions {
    pub fn new(out_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>, agent: impl Into<PathBuf>) -> Self {
        BuildOptions {
            out_dir: out_dir.into(),
            cache_dir: cache_dir.into(),
            agent: agent.into(),
            mirror: None,
            suite: DEFAULT_SUITE.to_string(),
            extra_packages: Vec::new(),
        }
    }

    /// Base plus extra packages, sorted and deduplicated.
    pub fn packages(&self) -> Vec<String> {
        let mut p: Vec<String> =
            BASE_PACKAGES.iter().map(|s| s.to_string()).chain(self.extra_packages.iter().cloned()).collect();
        p.sort();
        p.dedup();
        p
    }
}

/// The build's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prepare,
    Rootfs,
    Customize,
    Kernel,
    Initramfs,
    Checksums,
}

impl Stage {
    pub const COUNT: u32 = 6;
    /// 1-based position, for "[2/6]" style rendering.
    pub fn index(self) -> u32 {
        self as u32 + 1
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Prepare => "checking inputs",
            Stage::Rootfs => "building the root file system (mmdebstrap)",
            Stage::Customize => "installing rayos-init, the agent and the rayos user",
            Stage::Kernel => "copying the kernel",
            Stage::Initramfs => "building the initramfs",
            Stage::Checksums => "computing checksums and writing the manifest",
        })
    }
}

/// Progress events; `Display` gives a one-line rendering.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A new stage begins.
    Stage(Stage),
    /// A step inside a stage (mmdebstrap's own messages).
    Step(String),
    /// A package was fetched from the mirror (`total` counts every package
    /// apt installs so far, cached ones included).
    Download { fetched: u32, total: u32, package: String },
    /// dpkg configured a package.
    Install { done: u32, total: u32, package: String },
    /// The existing root file system matches the inputs and is kept.
    Reused { rootfs: PathBuf, built_at: String },
    /// The build finished.
    Done { seconds: f64 },
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Stage(s) => write!(f, "[{}/{}] {s}", s.index(), Stage::COUNT),
            Progress::Step(s) => write!(f, "      {s}"),
            Progress::Download { fetched, total, package } => write!(f, "      download {fetched}/{total} {package}"),
            Progress::Install { done, total, package } => write!(f, "      install {done}/{total} {package}"),
            Progress::Reused { rootfs, built_at } => {
                write!(f, "      inputs unchanged: reusing {} (built {built_at})", rootfs.display())
            }
            Progress::Done { seconds } => write!(f, "done in {seconds:.1} s"),
        }
    }
}

/// The Debian mirror for [`DEFAULT_SUITE`] from this machine's apt configuration.
pub fn default_mirror() -> Result<String, ImageError> {
    mirror_for(DEFAULT_SUITE)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn valid_package(name: &str) -> bool {
    // Debian policy: lower case letters, digits, + - . ; at least two characters,
    // starting with an alphanumeric. An optional `=version` or `/suite` is not allowed.
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// Refuses to delete a directory something is mounted on or below.
fn remove_tree(path: &Path) -> Result<(), ImageError> {
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    let canon = path.canonicalize().map_err(ImageError::io(path))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        // Field 5 is the mount point (octal escapes for spaces are rare; compare raw).
        if let Some(mp) = line.split(' ').nth(4) {
            if Path::new(mp).starts_with(&canon) {
                return Err(ImageError::UnsafeDelete { path: path.to_path_buf(), reason: format!("{mp} is mounted") });
            }
        }
    }
    std::fs::remove_dir_all(path).map_err(ImageError::io(path))
}

fn copy_atomic(from: &Path, to: &Path) -> Result<(), ImageError> {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).map_err(ImageError::io(from))?;
    std::fs::rename(&tmp, to).map_err(ImageError::io(to))
}

/// Builds (or refreshes) the guest image in `opts.out_dir`. See the crate documentation.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(Progress)) -> Result<Manifest, ImageError> {
    let started = Instant::now();
    progress(Progress::Stage(Stage::Prepare));
    if opts.suite.is_empty() || !valid_package(&opts.suite) {
        return Err(ImageError::Options(format!("suite {:?} is not a Debian suite name", opts.suite)));
    }
    let packages = opts.packages();
    if let Some(bad) = packages.iter().find(|p| !valid_package(p)) {
        return Err(ImageError::Options(format!("{bad:?} is not a Debian package name")));
    }
    if !is_root() {
        return Err(ImageError::NotRoot);
    }
    let agent_sha = manifest::sha256_file(&opts.agent).map_err(|e| match e {
        ImageError::Io { source, .. } => ImageError::Agent { path: opts.agent.clone(), source },
        e => e,
    })?;
    let mirror = match &opts.mirror {
        Some(m) => m.trim_end_matches('/').to_string(),
        None => mirror_for(&opts.suite)?,
    };
    let inputs = Inputs {
        builder_version: format!("rayos-image {} format {BUILDER_FORMAT}", env!("CARGO_PKG_VERSION")),
        suite: opts.suite.clone(),
        mirror: mirror.clone(),
        packages: packages.clone(),
    };
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(ImageError::io(out))?;
    let root = out.join(ROOTFS);
    let manifest_path = out.join(MANIFEST);
    tracing::info!(out = %out.display(), %mirror, suite = %opts.suite, agent_sha256 = %agent_sha, "building guest image");

    let previous = Manifest::load(&manifest_path).ok();
    let reusable = previous
        .as_ref()
        .filter(|m| m.inputs == inputs && root.join("var/lib/dpkg/status").is_file() && out.join(VMLINUZ).is_file());
    progress(Progress::Stage(Stage::Rootfs));
    let rootfs_built_at = if let Some(prev) = reusable {
        progress(Progress::Reused { rootfs: root.clone(), built_at: prev.rootfs_built_at.clone() });
        prev.rootfs_built_at.clone()
    } else {
        let staging = out.join(format!("{ROOTFS}.new"));
        remove_tree(&staging)?;
        let run = mmdebstrap::Run {
            suite: &opts.suite,
            mirror: &mirror,
            packages: &packages,
            target: &staging,
            cache_dir: &opts.cache_dir,
        };
        if let Err(e) = mmdebstrap::run(&run, progress) {
            // A half-built tree is useless; the error carries mmdebstrap's messages.
            if let Err(rm) = remove_tree(&staging) {
                tracing::warn!("cannot remove {}: {rm}", staging.display());
            }
            return Err(e);
        }
        // The old manifest no longer describes the tree.
        if manifest_path.exists() {
            std::fs::remove_file(&manifest_path).map_err(ImageError::io(&manifest_path))?;
        }
        remove_tree(&root)?;
        std::fs::rename(&staging, &root).map_err(ImageError::io(&staging))?;
        manifest::rfc3339(SystemTime::now())
    };

    progress(Progress::Stage(Stage::Customize));
    rootfs::customize(&root, &opts.agent)?;

    progress(Progress::Stage(Stage::Kernel));
    let (kernel, release) = initramfs::find_kernel(&root)?;
    let vmlinuz = out.join(VMLINUZ);
    copy_atomic(&kernel, &vmlinuz)?;
    if !root.join("usr/lib/modules").join(&release).join("modules.dep").is_file() {
        return Err(ImageError::Kernel(format!("{}/usr/lib/modules/{release}/modules.dep is missing", root.display())));
    }

    progress(Progress::Stage(Stage::Initramfs));
    let initramfs_path = out.join(INITRAMFS);
    let tmp = initramfs_path.with_extension("tmp");
    let modules = initramfs::build(&root, &release, ROOT_MODULES, &tmp)?;
    std::fs::rename(&tmp, &initramfs_path).map_err(ImageError::io(&initramfs_path))?;

    progress(Progress::Stage(Stage::Checksums));
    let status_path = root.join("var/lib/dpkg/status");
    let status = std::fs::read_to_string(&status_path).map_err(ImageError::io(&status_path))?;
    let installed = manifest::parse_dpkg_status(&status);
    for p in &packages {
        if !installed.iter().any(|i| &i.name == p) {
            return Err(ImageError::MissingPackage { package: p.clone() });
        }
    }
    let sha256 = Checksums {
        vmlinuz: manifest::sha256_file(&vmlinuz)?,
        initramfs: manifest::sha256_file(&initramfs_path)?,
        agent: agent_sha,
        rootfs_tree: manifest::tree_sha256(&root)?,
    };
    let seconds = started.elapsed().as_secs_f64();
    let manifest = Manifest {
        inputs,
        suite: opts.suite.clone(),
        mirror,
        kernel_release: release,
        kernel_cmdline: format!("rayos.root={ROOT_TAG}"),
        vmlinuz: VMLINUZ.into(),
        initramfs: INITRAMFS.into(),
        rootfs: ROOTFS.into(),
        initramfs_modules: modules.into_iter().map(|m| m.name).collect(),
        packages: installed,
        sha256,
        rootfs_built_at,
        built_at: manifest::rfc3339(SystemTime::now()),
        build_seconds: (seconds * 10.0).round() / 10.0,
    };
    manifest.store(&manifest_path)?;
    progress(Progress::Done { seconds });
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        assert!(valid_package("linux-image-amd64"));
        assert!(valid_package("libstdc++6"));
        assert!(!valid_package("foo bar"));
        assert!(!valid_package("-o"));
        assert!(!valid_package("pkg=1.0"));
        assert!(!valid_package("Weston"));
    }

    #[test]
    fn packages_are_sorted_and_deduplicated() {
        let mut o = BuildOptions::new("/o", "/c", "/a");
        o.extra_packages = vec!["foot".into(), "htop".into()];
        let p = o.packages();
        assert_eq!(p.len(), BASE_PACKAGES.len() + 1);
        assert!(p.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn progress_renders() {
        assert_eq!(Progress::Stage(Stage::Rootfs).to_string(), "[2/6] building the root file system (mmdebstrap)");
        assert_eq!(
            Progress::Download { fetched: 3, total: 313, package: "weston".into() }.to_string(),
            "      download 3/313 weston"
        );
    }
}
