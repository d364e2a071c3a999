//! The RayOS host image (`rayos image host`): what a machine boots to run RayOS.
//!
//! Design notes.
//!
//! * **Three files.** `vmlinuz` (a Debian kernel), `initrd.img` (a cpio
//!   archive whose `/init` is the `rayos` binary, i.e. `rayos init`, with the
//!   host's programs and their shared libraries, udev and its rules, the
//!   keyboard and input data, and the kernel modules the host loads and
//!   their order) and `volume.img` (the host volume: ext4 holding the guest
//!   image in slot `guests/a` and the image's copy of the intent model in
//!   `factory/models`; its layout, policy and state are created by `rayos
//!   init` on first boot, which installs the model from there, and kept
//!   across boots).
//! * **Modules.** Resolved here, at build time, from the kernel package's own
//!   dependency data ([`crate::kmod`]): [`COMMON_MODULES`] and KVM for each
//!   vendor, written as `modules-common`, `modules-amd`, `modules-intel`
//!   under `/lib/modules/rayos` with the decompressed `.ko` files (the
//!   init has no decompressor).
//! * **Binaries** are stripped of debug information when `strip` is present
//!   (a debug build of `rayos` is several times its stripped size); their
//!   libraries come from the build machine ([`crate::sharedlibs`]).
//! * Nothing is fetched here: the caller passes the extracted kernel and
//!   busybox packages ([`crate::debs`]) and the built guest image.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::{Archive, CpioError};
use crate::kmod::{KmodError, ModuleTree};
use crate::sharedlibs::{self, LibsError};

/// Modules every host loads (their dependencies are added): the host
/// volume's file system, virtio-fs for the guests' roots, virtio block and
/// PCI, the display (bochs, virtio-gpu) and input (virtio-input, evdev).
/// Display and input first: rayos-init starts the compositor as soon as the
/// display's card exists, while the storage modules still load.
pub const COMMON_MODULES: &[&str] =
    &["virtio_pci", "bochs", "virtio_gpu", "virtio_input", "evdev", "virtio_blk", "crc32c_generic", "ext4", "virtiofs"];
/// Where the modules and their load-order lists go (rayos-init's `MODULE_DIR`).
pub const MODULE_DIR: &str = "/lib/modules/rayos";
/// udev rules that give input devices their `ID_INPUT*` properties (libinput
/// ignores devices without them), evdev and mouse fixes, and DRM properties.
pub const UDEV_RULES: &[&str] = &[
    "50-udev-default.rules",
    "60-drm.rules",
    "60-evdev.rules",
    "60-input-id.rules",
    "60-persistent-input.rules",
    "70-mouse.rules",
    "70-touchpad.rules",
];
pub const UDEV_RULE_DIRS: &[&str] = &["/lib/udev/rules.d", "/usr/lib/udev/rules.d"];
pub const HWDB: &[&str] = &["/lib/udev/hwdb.bin", "/usr/lib/udev/hwdb.bin", "/etc/udev/hwdb.bin"];
/// Data libinput and xkbcommon read at run time.
pub const DATA_DIRS: &[&str] = &["/usr/share/X11/xkb", "/usr/share/libinput"];
pub const UDEVD: &str = "/lib/systemd/systemd-udevd";
pub const UDEVADM: &str = "/usr/bin/udevadm";
/// Where the host volume keeps the image's own copy of the intent model
/// (relative to the volume), which first boot installs into the model store
/// with its sha256 checked. It is on the volume rather than in the initrd so
/// that every boot does not load and unpack 87 MiB it does not use.
pub const FACTORY_MODELS: &str = "factory/models";
/// Where the volume is mounted in the running host.
pub const VOLUME_MOUNT: &str = "/var/lib/rayos";

#[derive(Debug, thiserror::Error)]
pub enum HostImageError {
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error(transparent)]
    Kmod(#[from] KmodError),
    #[error(transparent)]
    Libs(#[from] LibsError),
    #[error("{what} not found at {path}")]
    Missing { what: String, path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot list busybox applets with {busybox} --list-full: {reason}")]
    Applets { busybox: PathBuf, reason: String },
    #[error("udev rule {rule} not found in {dirs:?}")]
    NoRule { rule: String, dirs: &'static [&'static str] },
    #[error("{tool} failed: {detail}")]
    Tool { tool: String, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HostImageError + '_ {
    move |source| HostImageError::Io { path: path.to_path_buf(), source }
}

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct HostImageSpec {
    pub vmlinuz: PathBuf,
    pub busybox: PathBuf,
    /// (program on this machine, path in the image); `/usr/bin/rayos` becomes `/init` too.
    pub binaries: Vec<(PathBuf, String)>,
    pub udevd: PathBuf,
    pub udevadm: PathBuf,
    /// The intent model's folder and its name.
    pub model: Option<(PathBuf, String)>,
    /// A guest image folder (`rayos image build`).
    pub guest_image: PathBuf,
    /// `/etc/rayos/init.toml`.
    pub init_toml: String,
    pub out: PathBuf,
    /// Free space on the host volume besides the guest image.
    pub volume_free_mib: u64,
    /// Leave an existing `volume.img` as it is.
    pub keep_volume: bool,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct HostImage {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub volume: PathBuf,
    pub initrd_bytes: u64,
    pub volume_mib: u64,
    pub modules: usize,
    pub stripped: bool,
}

/// The busybox binary in an extracted `busybox-static` package.
pub fn busybox_in(package_root: &Path) -> Option<PathBuf> {
    ["bin/busybox", "usr/bin/busybox"].iter().map(|p| package_root.join(p)).find(|p| p.is_file())
}

/// busybox's applets (`bin/sh`, `sbin/poweroff`, ...).
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>, HostImageError> {
    let err = |reason: String| HostImageError::Applets { busybox: busybox.to_path_buf(), reason };
    let out = Command::new(busybox).arg("--list-full").output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!("{}", out.status)));
    }
    let applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if !applets.iter().any(|a| a == "bin/sh") {
        return Err(err("no bin/sh applet".into()));
    }
    Ok(applets)
}

/// The module lists: (list name, modules in load order).
pub fn module_lists(tree: &ModuleTree) -> Result<Vec<(&'static str, Vec<String>)>, HostImageError> {
    Ok(vec![
        ("modules-common", tree.load_order(COMMON_MODULES)?),
        ("modules-amd", tree.load_order(&["kvm-amd"])?),
        ("modules-intel", tree.load_order(&["kvm-intel"])?),
    ])
}

/// A copy of `binary` without debug information in `scratch`, or None when
/// `strip` is not available.
fn stripped(binary: &Path, scratch: &Path) -> Option<PathBuf> {
    let dest = scratch.join(binary.file_name()?);
    let ok = Command::new("strip").arg("--strip-debug").arg("-o").arg(&dest).arg(binary).status().ok()?.success();
    ok.then_some(dest)
}

/// Adds a host folder tree at the same path (symbolic links kept).
fn add_tree(a: &mut Archive, dir: &Path) -> Result<usize, HostImageError> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let dest = path.to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.file_type().is_symlink() {
            a.symlink(&dest, &std::fs::read_link(&path).map_err(io(&path))?.to_string_lossy())?;
        } else if meta.is_dir() {
            a.dir(&dest, 0o755)?;
            n += add_tree(a, &path)?;
        } else if meta.is_file() {
            a.file_from_host(&dest, &path, Some(0o644))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Copies the regular files of `dir` (recursively) into `dest`.
fn copy_tree(dir: &Path, dest: &Path) -> Result<usize, HostImageError> {
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let mut n = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name() else { continue };
        if path.is_dir() {
            n += copy_tree(&path, &dest.join(name))?;
        } else if path.is_file() {
            std::fs::copy(&path, dest.join(name)).map_err(io(&path))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Adds udev (udevadm and systemd-udevd with their libraries), the rules
/// and hwdb that tag input and DRM devices, and the xkb and libinput data:
/// what the compositor needs on DRM with libinput. The host image and the
/// compositor-drm test host both use it.
pub fn add_udev(a: &mut Archive, udevd: &Path, udevadm: &Path) -> Result<(), HostImageError> {
    // udev: systemd-udevd is udevadm under another name on current systemd.
    a.file_from_host(UDEVADM, udevadm, Some(0o755))?;
    for lib in sharedlibs::closure(udevadm)? {
        a.file_from_host(&lib.to_string_lossy(), &lib, Some(0o755))?;
    }
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if canon(udevd).is_some() && canon(udevd) == canon(udevadm) {
        a.symlink(UDEVD, UDEVADM)?;
    } else {
        a.file_from_host(UDEVD, udevd, Some(0o755))?;
    }
    for rule in UDEV_RULES {
        let path = UDEV_RULE_DIRS
            .iter()
            .map(|d| Path::new(d).join(rule))
            .find(|p| p.is_file())
            .ok_or_else(|| HostImageError::NoRule { rule: rule.to_string(), dirs: UDEV_RULE_DIRS })?;
        a.file_from_host(&format!("/lib/udev/rules.d/{rule}"), &path, Some(0o644))?;
    }
    match HWDB.iter().map(PathBuf::from).find(|p| p.is_file()) {
        Some(hwdb) => {
            a.file_from_host("/lib/udev/hwdb.bin", &hwdb, Some(0o444))?;
        }
        None => tracing::warn!("no udev hwdb.bin in {HWDB:?}: input devices get no hwdb properties"),
    }
    a.dir("/etc/udev", 0o755)?;
    for dir in DATA_DIRS {
        let n = add_tree(a, Path::new(dir))?;
        tracing::info!("image: {dir} ({n} files)");
    }
    Ok(())
}

/// The initramfs archive.
pub fn initrd_archive(
    spec: &HostImageSpec,
    tree: &ModuleTree,
    scratch: &Path,
) -> Result<(Archive, usize, bool), HostImageError> {
    let mut a = Archive::new();
    a.file_from_host("/bin/busybox", &spec.busybox, Some(0o755))?;
    for applet in busybox_applets(&spec.busybox)?.iter().filter(|p| p.as_str() != "bin/busybox") {
        let depth = applet.matches('/').count();
        a.symlink(applet, &format!("{}bin/busybox", "../".repeat(depth)))?;
    }
    a.char_dev("/dev/console", 0o600, 5, 1)?;
    a.char_dev("/dev/null", 0o666, 1, 3)?;
    for d in ["proc", "sys", "dev", "run", "root", "var/lib/rayos", "etc/rayos"] {
        a.dir(d, 0o755)?;
    }
    a.dir("tmp", 0o1777)?;
    a.file_bytes("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
    a.file_bytes("/etc/group", "root:x:0:\ntty:x:5:\ninput:x:101:\nvideo:x:44:\nrender:x:105:\n", 0o644)?;
    a.file_bytes("/etc/rayos/init.toml", spec.init_toml.clone(), 0o644)?;

    let mut stripped_all = true;
    for (bin, dest) in &spec.binaries {
        if !bin.is_file() {
            return Err(HostImageError::Missing { what: format!("program for {dest}"), path: bin.clone() });
        }
        let small = stripped(bin, scratch);
        stripped_all &= small.is_some();
        a.file_from_host(dest, small.as_deref().unwrap_or(bin), Some(0o755))?;
        for lib in sharedlibs::closure(bin)? {
            a.file_from_host(&lib.to_string_lossy(), &lib, Some(0o755))?;
        }
    }
    if !spec.binaries.iter().any(|(_, d)| d == "/usr/bin/rayos") {
        return Err(HostImageError::Missing {
            what: "the rayos binary (the image's /init)".into(),
            path: "/usr/bin/rayos".into(),
        });
    }
    a.symlink("/init", "usr/bin/rayos")?;

    add_udev(&mut a, &spec.udevd, &spec.udevadm)?;

    let mut modules = 0;
    for (list, order) in module_lists(tree)? {
        for m in &order {
            let dest = format!("{MODULE_DIR}/{m}.ko");
            if !a.contains(&dest) {
                a.file_bytes(&dest, crate::kmod::read_module(tree.path_of(m)?)?, 0o644)?;
                modules += 1;
            }
        }
        a.file_bytes(&format!("{MODULE_DIR}/{list}"), order.join("\n") + "\n", 0o644)?;
    }
    Ok((a, modules, stripped_all))
}

/// Size in MiB of a folder (du).
fn du_mib(dir: &Path) -> Result<u64, HostImageError> {
    let out = Command::new("du").arg("-sm").arg(dir).output().map_err(io(dir))?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().and_then(|n| n.parse().ok()).ok_or_else(|| {
        HostImageError::Tool { tool: "du -sm".into(), detail: String::from_utf8_lossy(&out.stderr).into() }
    })
}

/// The host volume: ext4 with the guest image in `guests/a` and the model
/// (its folder and name) in [`FACTORY_MODELS`].
pub fn build_volume(
    guest_image: &Path,
    model: Option<&(PathBuf, String)>,
    volume: &Path,
    free_mib: u64,
    scratch: &Path,
) -> Result<u64, HostImageError> {
    if !guest_image.join("manifest.json").is_file() {
        return Err(HostImageError::Missing {
            what: "guest image (manifest.json; rayos image build)".into(),
            path: guest_image.into(),
        });
    }
    let staging = scratch.join("volume");
    let _ = std::fs::remove_dir_all(&staging);
    let slot = staging.join("guests/a");
    std::fs::create_dir_all(staging.join("guests")).map_err(io(&staging))?;
    // Hard links when the image is on the same file system (instant), else a copy.
    let linked =
        Command::new("cp").arg("-al").arg(guest_image).arg(&slot).status().map(|s| s.success()).unwrap_or(false);
    if !linked {
        let _ = std::fs::remove_dir_all(&slot);
        let st = Command::new("cp").arg("-a").arg(guest_image).arg(&slot).status().map_err(io(&slot))?;
        if !st.success() {
            return Err(HostImageError::Tool {
                tool: "cp -a".into(),
                detail: format!("{} to {}: {st}", guest_image.display(), slot.display()),
            });
        }
    }
    if let Some((dir, name)) = model {
        copy_tree(dir, &staging.join(FACTORY_MODELS).join(name))?;
    }
    let mib = du_mib(&staging)? * 5 / 4 + free_mib;
    let _ = std::fs::remove_file(volume);
    let out = Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "rayos-host", "-F", "-d"])
        .arg(&staging)
        .arg(volume)
        .arg(format!("{mib}M"))
        .output()
        .map_err(|e| HostImageError::Tool { tool: "mke2fs (e2fsprogs)".into(), detail: e.to_string() })?;
    let _ = std::fs::remove_dir_all(&staging);
    if !out.status.success() {
        return Err(HostImageError::Tool {
            tool: "mke2fs -d".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(mib)
}

/// Builds the three files into `spec.out`; `progress` gets one line per stage.
pub fn build(spec: &HostImageSpec, tree: &ModuleTree, progress: &dyn Fn(&str)) -> Result<HostImage, HostImageError> {
    std::fs::create_dir_all(&spec.out).map_err(io(&spec.out))?;
    let scratch = spec.out.join(".build");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let vmlinuz = spec.out.join("vmlinuz");
    std::fs::copy(&spec.vmlinuz, &vmlinuz).map_err(io(&vmlinuz))?;
    progress(&format!("kernel {} ({})", spec.vmlinuz.display(), tree.release()));
    progress("initrd: stripping the programs, adding their libraries, udev, modules and the model");
    let (archive, modules, stripped) = initrd_archive(spec, tree, &scratch)?;
    let initrd = spec.out.join("initrd.img");
    let initrd_bytes = archive.write_file(&initrd)?;
    progress(&format!(
        "initrd {} ({:.1} MiB, {} files, {modules} modules)",
        initrd.display(),
        initrd_bytes as f64 / 1048576.0,
        archive.len()
    ));
    let volume = spec.out.join("volume.img");
    let volume_mib = match std::fs::metadata(&volume) {
        Ok(m) if spec.keep_volume => {
            progress(&format!("host volume {}: kept as it is (its state and files survive)", volume.display()));
            m.len() / 1048576
        }
        _ => {
            progress(&format!("host volume: ext4 with the guest image {} in slot a", spec.guest_image.display()));
            build_volume(&spec.guest_image, spec.model.as_ref(), &volume, spec.volume_free_mib, &scratch)?
        }
    };
    let _ = std::fs::remove_dir_all(&scratch);
    progress(&format!("host volume {} ({volume_mib} MiB, sparse)", volume.display()));
    Ok(HostImage { vmlinuz, initrd, volume, initrd_bytes, volume_mib, modules, stripped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_modules_cover_what_the_host_needs() {
        for m in ["ext4", "virtiofs", "bochs", "virtio_input", "evdev"] {
            assert!(COMMON_MODULES.contains(&m), "{m}");
        }
    }

    #[test]
    fn a_missing_guest_image_is_named() {
        let d = tempfile::tempdir().unwrap();
        let e =
            build_volume(&d.path().join("nope"), None, &d.path().join("v.img"), 64, d.path()).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("rayos image build"), "{e}");
    }
}
