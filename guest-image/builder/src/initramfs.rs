//! The guest initramfs: busybox-static, the kernel modules needed to mount the
//! root file system over virtio-fs, and `/init` (guest-image/rootfs/initramfs/init).
//!
//! Modules come from the same kernel package as `vmlinuz` (the root file
//! system's `/lib/modules/<release>`). Wanted modules that `modules.builtin`
//! lists are skipped; the others are resolved through `modules.dep`
//! (dependencies first, each once), decompressed when shipped as `.ko.xz` or
//! `.ko.zst` (busybox `insmod` passes the bytes straight to `init_module`), and
//! listed in load order in `/etc/rayos-modules`. The archive is a `newc` cpio
//! compressed with gzip, which every Debian kernel unpacks.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Normalised module name of a modules.dep path (`kernel/fs/fuse/fuse.ko.xz` -> `fuse`).
pub(crate) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Resolves `wanted` against modules.dep / modules.builtin text. Returns the
/// modules to load in order (dependencies first), skipping built-in ones.
pub(crate) fn resolve(
    wanted: &[&str],
    modules_dep: &str,
    modules_builtin: &str,
) -> Result<Vec<ModuleFile>, ImageError> {
    let builtin: HashSet<String> = modules_builtin.lines().map(module_name).collect();
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(module_name(path), (path.to_string(), rest.split_whitespace().map(str::to_string).collect()));
    }
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        name: &str,
        deps: &HashMap<String, (String, Vec<String>)>,
        seen: &mut HashSet<String>,
        order: &mut Vec<ModuleFile>,
        depth: usize,
    ) -> Result<(), ImageError> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let (path, ds) = deps.get(name).ok_or_else(|| ImageError::Module {
            module: name.to_string(),
            reason: "neither in modules.dep nor in modules.builtin".into(),
        })?;
        if depth > 64 {
            return Err(ImageError::Module {
                module: name.to_string(),
                reason: "dependency loop in modules.dep".into(),
            });
        }
        // modules.dep lists the full dependency closure, the module needed last
        // first (modprobe loads the list back to front).
        for d in ds.iter().rev() {
            visit(&module_name(d), deps, seen, order, depth + 1)?;
        }
        order.push(ModuleFile { name: name.to_string(), rel_path: path.clone() });
        Ok(())
    }
    for w in wanted {
        let w = w.replace('-', "_");
        if builtin.contains(&w) {
            continue;
        }
        visit(&w, &deps, &mut seen, &mut order, 0)?;
    }
    Ok(order)
}

/// Contents of a module file, decompressed.
fn module_bytes(path: &Path) -> Result<Vec<u8>, ImageError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some(("xz", "install xz-utils (scripts/setup.sh)"))
    } else if name.ends_with(".zst") {
        Some(("zstd", "install zstd (scripts/setup.sh)"))
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).map_err(ImageError::io(path)),
        Some((tool, hint)) => {
            let out = Command::new(tool).arg("-dc").arg(path).output().map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ImageError::MissingTool { tool, hint },
                _ => ImageError::Io { path: path.to_path_buf(), source: e },
            })?;
            if !out.status.success() {
                return Err(ImageError::Module {
                    module: name.into_owned(),
                    reason: format!("{tool} -d failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
                });
            }
            Ok(out.stdout)
        }
    }
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
    let busybox = std::fs::read(&busybox_path).map_err(ImageError::io(&busybox_path))?;

    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys", "run", "tmp"] {
        cpio.dir(d, 0o755);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    cpio.file("bin/busybox", 0o755, &busybox);
    for a in APPLETS {
        cpio.symlink(&format!("bin/{a}"), "busybox");
    }
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    let mut list = String::new();
    let mut made = HashSet::new();
    for m in &modules {
        let rel = m.rel_path.trim_end_matches(".xz").trim_end_matches(".zst").to_string();
        let mut prefix = String::from("lib/modules");
        for part in Path::new(&rel).parent().into_iter().flat_map(|p| p.iter()) {
            prefix = format!("{prefix}/{}", part.to_string_lossy());
            if made.insert(prefix.clone()) {
                cpio.dir(&prefix, 0o755);
            }
        }
        cpio.file(&format!("lib/modules/{rel}"), 0o644, &module_bytes(&moddir.join(&m.rel_path))?);
        list.push_str(&rel);
        list.push('\n');
    }
    cpio.file("etc/rayos-modules", 0o644, list.as_bytes());
    cpio.file("etc/rayos-release", 0o644, format!("kernel {release}\n").as_bytes());

    let f = std::fs::File::create(out).map_err(ImageError::io(out))?;
    let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::best());
    gz.write_all(&cpio.finish()).map_err(ImageError::io(out))?;
    gz.finish().and_then(|mut w| w.flush()).map_err(ImageError::io(out))?;
    Ok(modules)
}

/// A `newc` (SVR4, no CRC) cpio archive in memory. Entries are owned by root
/// with mtime 0, so the archive depends only on its contents.
#[derive(Default)]
pub(crate) struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields =
            [self.ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    pub(crate) fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, (0, 0), &[]);
    }
    pub(crate) fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }
    pub(crate) fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }
    pub(crate) fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // Pad to a 512-byte block like cpio(1) does.
        while self.buf.len() % 512 != 0 {
            self.buf.push(0);
        }
        self.buf
    }
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

    #[test]
    fn cpio_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"#!/bin/sh\n");
        let b = c.finish();
        assert_eq!(&b[..6], b"070701");
        assert_eq!(b.len() % 512, 0);
        // header (110) + "init\0" padded to 116, then 10 bytes of data padded to 128.
        assert_eq!(&b[116..126], b"#!/bin/sh\n");
        assert_eq!(&b[128..134], b"070701");
        assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
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
