//! The guest initramfs: busybox-static, the kernel modules needed to mount the
//! root file system over virtio-fs, and `/init` (guest-image/rootfs/initramfs/init).
//!
//! Modules come from the same kernel package as `vmlinuz` (the root file
//! system's `/lib/modules/<release>`). Wanted modules that `modules.builtin`
//! lists are skipped; the others are resolved through `modules.dep`
//! (dependencies first, each once), decompressed when shipped as `.ko.xz` or
//! `.ko.zst` (busybox `insmod` passes the bytes straight to `init_module`), and
//! listed in load order in `/etc/rayos-modules`. The archive is a `newc` cpio
//! compressed with gzip, which every Debian kernel unpacks. The archive writer
//! ([`crate::cpio`]) and the module code ([`crate::kmod`]) are the ones the
//! smoke tests' test hosts use too.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cpio::Archive;
use crate::kmod::{load_order, module_name, parse_modules_dep, read_module, KmodError};
use crate::ImageError;

/// Modules the initramfs needs for a virtio-fs root, in the order they are asked
/// for; dependencies are added from modules.dep.
pub const ROOT_MODULES: &[&str] = &["virtio_pci", "fuse", "virtiofs"];

/// The initramfs `/init`.
pub const INIT_SCRIPT: &str = include_str!("../../rootfs/initramfs/init");

/// busybox applets the initramfs `/init` uses.
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "insmod",
    "modprobe",
    "mkdir",
    "cat",
    "grep",
    "tr",
    "basename",
    "sleep",
    "switch_root",
    "ls",
    "echo",
    "dmesg",
    "poweroff",
    "reboot",
];

/// A module to load: name and path relative to `/lib/modules/<release>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub rel_path: String,
}

/// Resolves `wanted` against modules.dep / modules.builtin text. Returns the
/// modules to load in order (dependencies first), skipping built-in ones.
pub(crate) fn resolve(
    wanted: &[&str],
    modules_dep: &str,
    modules_builtin: &str,
) -> Result<Vec<ModuleFile>, ImageError> {
    let builtin: HashSet<String> = modules_builtin.lines().map(module_name).collect();
    let deps = parse_modules_dep(modules_dep);
    let paths: HashMap<String, &str> =
        modules_dep.lines().filter_map(|l| l.split_once(':')).map(|(p, _)| (module_name(p), p.trim())).collect();
    let roots: Vec<&str> = wanted.iter().copied().filter(|w| !builtin.contains(&module_name(w))).collect();
    // modules.dep lists the full dependency closure, the module needed last
    // first (modprobe loads the list back to front): visit it reversed.
    let order = load_order(&roots, |m| {
        deps.get(m).map(|d| d.iter().rev().cloned().collect()).ok_or_else(|| KmodError::NotInModulesDep(m.to_string()))
    })?;
    Ok(order.into_iter().map(|name| ModuleFile { rel_path: paths[&name].to_string(), name }).collect())
}

/// Builds `initramfs.cpio.gz` at `out` from the root file system `rootfs`.
/// Returns the modules it will load.
pub(crate) fn build(rootfs: &Path, release: &str, wanted: &[&str], out: &Path) -> Result<Vec<ModuleFile>, ImageError> {
    let moddir = rootfs.join("usr/lib/modules").join(release);
    let read = |f: &str| std::fs::read_to_string(moddir.join(f)).map_err(ImageError::io(moddir.join(f)));
    let modules = resolve(wanted, &read("modules.dep")?, &read("modules.builtin")?)?;

    let busybox_path = ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|p| rootfs.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| ImageError::MissingPackage { package: "busybox-static (/usr/bin/busybox)".into() })?;

    let mut cpio = Archive::new();
    for d in ["bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys", "run", "tmp"] {
        cpio.dir(d, 0o755)?;
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.char_dev("dev/null", 0o666, 1, 3)?;
    cpio.file_from_host("bin/busybox", &busybox_path, Some(0o755))?;
    for a in APPLETS {
        cpio.symlink(&format!("bin/{a}"), "busybox")?;
    }
    cpio.file_bytes("init", INIT_SCRIPT, 0o755)?;
    let mut list = String::new();
    for m in &modules {
        let rel = m.rel_path.trim_end_matches(".xz").trim_end_matches(".zst").to_string();
        cpio.file_bytes(&format!("lib/modules/{rel}"), read_module(&moddir.join(&m.rel_path))?, 0o644)?;
        list.push_str(&rel);
        list.push('\n');
    }
    cpio.file_bytes("etc/rayos-modules", list, 0o644)?;
    cpio.file_bytes("etc/rayos-release", format!("kernel {release}\n"), 0o644)?;

    let f = std::fs::File::create(out).map_err(ImageError::io(out))?;
    let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::best());
    cpio.write_to(&mut gz)?;
    gz.finish().and_then(|mut w| w.flush()).map_err(ImageError::io(out))?;
    Ok(modules)
}

/// The kernel image path and release from the root file system's /boot.
pub(crate) fn find_kernel(rootfs: &Path) -> Result<(PathBuf, String), ImageError> {
    let boot = rootfs.join("boot");
    let mut found: Vec<_> = std::fs::read_dir(&boot)
        .map_err(ImageError::io(&boot))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("vmlinuz-").map(|r| (e.path(), r.to_string()))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ImageError::Kernel(format!("no vmlinuz-* in {} (is linux-image-amd64 installed?)", boot.display()))),
        _ => Err(ImageError::Kernel(format!(
            "several kernels in {}: {}",
            boot.display(),
            found.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/virtio/virtio.ko.xz:\n\
kernel/drivers/virtio/virtio_ring.ko.xz:\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:\n\
kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz:\n\
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz\n\
kernel/fs/fuse/fuse.ko.xz:\n\
kernel/fs/fuse/virtiofs.ko.xz: kernel/fs/fuse/fuse.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz\n";

    #[test]
    fn modular_kernel_loads_dependencies_first() {
        let order: Vec<_> = resolve(ROOT_MODULES, DEP, "").unwrap().into_iter().map(|m| m.name).collect();
        assert_eq!(
            order,
            [
                "virtio",
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "fuse",
                "virtiofs"
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped() {
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/fuse/fuse.ko\nkernel/fs/fuse/virtiofs.ko\n";
        assert!(resolve(ROOT_MODULES, DEP, builtin).unwrap().is_empty());
    }

    #[test]
    fn unknown_module_is_an_error() {
        let e = resolve(&["nosuch"], DEP, "").unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
    }

    /// Against a built image: `RAYOS_IMAGE_ROOTFS=target/guest-image/rootfs cargo test
    /// -p rayos-image -- --ignored modular`. Uses the vsock modules, which trixie
    /// ships as modules (its virtio-fs stack is built in).
    #[test]
    #[ignore]
    fn modular_initramfs_from_a_built_rootfs() {
        let root = PathBuf::from(std::env::var("RAYOS_IMAGE_ROOTFS").expect("RAYOS_IMAGE_ROOTFS"));
        let (_, release) = find_kernel(&root).unwrap();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("i.cpio.gz");
        let mods = build(&root, &release, &["vmw_vsock_virtio_transport"], &out).unwrap();
        let names: Vec<_> = mods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"]);
        let mut cpio = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap()), &mut cpio)
            .unwrap();
        let list = b"kernel/net/vmw_vsock/vsock.ko\n";
        assert!(cpio.windows(list.len()).any(|w| w == list), "module list");
        // Decompressed: the module's ELF header is in the archive.
        let name = b"lib/modules/kernel/net/vmw_vsock/vsock.ko\0";
        let at = cpio.windows(name.len()).position(|w| w == name).unwrap();
        let data = (at + name.len()).next_multiple_of(4);
        assert_eq!(&cpio[data..data + 4], b"\x7fELF");
    }
}
