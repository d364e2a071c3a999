//! The plan of a `vmm-virtiofs` run and the scripts made from it: the
//! guest's `/init` (`guest-init.sh`) and the test host's hooks around the VMM
//! (`host-before-vmm.sh`, `host-after-vmm.sh`), with their placeholders
//! filled from the constants here and the markers of [`super::markers`].

use std::time::Duration;

use super::markers::*;
use crate::script::fill;
use crate::serial;
use crate::testhost::{guest_module_list, sh_quote, FsShare, HostHooks, MODULE_DIR};
use rayos_image::kmod::{KmodError, ModuleTree};

const GUEST_INIT: &str = include_str!("guest-init.sh");
const HOST_BEFORE_VMM: &str = include_str!("host-before-vmm.sh");
const HOST_AFTER_VMM: &str = include_str!("host-after-vmm.sh");

/// The virtio-fs tag the guest mounts.
pub const TAG: &str = "rayos";
/// virtiofsd's vhost-user socket inside the test host.
pub const SOCKET: &str = "/run/vfs.sock";
/// The shared directory (a tmpfs) inside the test host.
pub const SHARE_DIR: &str = "/srv/share";
/// virtiofsd inside the test host.
pub const VIRTIOFSD: &str = "/usr/bin/virtiofsd";
/// Where the guest mounts the share.
pub const GUEST_MOUNT: &str = "/mnt";
pub const IN_FILE: &str = "in.bin";
pub const OUT_FILE: &str = "out.bin";
/// The read-only share (a second virtiofsd with `--readonly`).
pub const RO_TAG: &str = "rayos-ro";
pub const RO_DIR: &str = "/srv/ro";
/// The read-only share's virtiofsd socket and log in the test host.
pub const RO_SOCKET: &str = "/run/vfs-ro.sock";
const RO_LOG: &str = "/tmp/virtiofsd-ro.log";
pub const RO_FILE: &str = "policy.txt";
/// Where the guest mounts the read-only share.
const RO_MOUNT: &str = "/mnt-ro";
/// The writes the guest tries on the read-only share.
pub(super) const RO_WRITES: u32 = 4;
/// virtiofsd's log inside the test host (printed after the VMM exits).
const VIRTIOFSD_LOG: &str = "/tmp/virtiofsd.log";

/// The modules the guest needs beyond the built-in kernel: the virtio-pci
/// transport and the virtio-fs file system. Everything else (virtio,
/// virtio_ring, the virtio-pci library modules, fuse) comes in as their
/// dependencies; virtio_pci is not a dependency of virtiofs, so both are roots.
pub const GUEST_MODULE_ROOTS: &[&str] = &["virtio_pci", "virtiofs"];

/// How virtiofsd isolates itself (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sandbox {
    /// New mount/pid/net namespaces and pivot_root into the shared dir. Does
    /// not work in the test host: its root is the initramfs (rootfs), which
    /// pivot_root refuses (EINVAL).
    Namespace,
    /// chroot into the shared directory (needs CAP_SYS_CHROOT; the test host
    /// runs it as root).
    Chroot,
    /// No isolation.
    None,
}

impl Sandbox {
    pub fn name(self) -> &'static str {
        match self {
            Sandbox::Namespace => "namespace",
            Sandbox::Chroot => "chroot",
            Sandbox::None => "none",
        }
    }
}

/// Parameters of one virtio-fs run, shared by the scripts and the evaluation.
#[derive(Debug, Clone)]
pub struct FsPlan {
    /// Size of in.bin and out.bin in MiB.
    pub file_mib: u32,
    /// The guest watchdog fires when one step takes longer than this.
    pub step_timeout: Duration,
    pub sandbox: Sandbox,
}

impl FsPlan {
    pub fn bytes(&self) -> u64 {
        u64::from(self.file_mib) << 20
    }

    /// rayos-vmm's extra arguments: the read-only share, served by the
    /// test host's second virtiofsd (`--readonly`).
    pub fn rayos_args(&self) -> Vec<String> {
        vec!["--fs".into(), format!("tag={RO_TAG},socket={RO_SOCKET}")]
    }

    /// The share as the VMM command lines need it.
    pub fn share(&self) -> FsShare {
        FsShare { tag: TAG.into(), socket: SOCKET.into() }
    }
}

/// The guest modules in load order (every module after its dependencies).
pub fn guest_modules(tree: &ModuleTree) -> Result<Vec<String>, KmodError> {
    tree.load_order(GUEST_MODULE_ROOTS)
}

/// The guest's `/init`.
pub fn guest_init_script(plan: &FsPlan) -> String {
    let step_timeout = plan.step_timeout.as_secs().max(1);
    fill(
        GUEST_INIT,
        &[
            ("GUEST_INIT", serial::GUEST_INIT.into()),
            ("GUEST_INFO", serial::GUEST_INFO.into()),
            ("GUEST_OK", serial::GUEST_OK.into()),
            ("MIB", plan.file_mib.to_string()),
            ("BYTES", plan.bytes().to_string()),
            ("STEP_TIMEOUT", step_timeout.to_string()),
            ("MNT", GUEST_MOUNT.into()),
            ("TAG", sh_quote(TAG)),
            ("IN_FILE", IN_FILE.into()),
            ("OUT_FILE", OUT_FILE.into()),
            ("MODULE_LIST", guest_module_list()),
            ("MODULE_DIR", MODULE_DIR.into()),
            ("DIAG", FS_DIAG.into()),
            ("STEP", FS_STEP.into()),
            ("ERROR", FS_ERROR.into()),
            ("CLOCK", FS_CLOCK.into()),
            ("PCI", FS_PCI.into()),
            ("READ_SHA", FS_READ_SHA.into()),
            ("READ", FS_READ.into()),
            ("WRITE_SHA", FS_WRITE_SHA.into()),
            ("WRITE", FS_WRITE.into()),
            ("IRQ", FS_IRQ.into()),
            ("DONE", FS_DONE.into()),
            ("RO_TAG", RO_TAG.into()),
            ("RO_MNT", RO_MOUNT.into()),
            ("RO_FILE", RO_FILE.into()),
            ("RO_WRITES", RO_WRITES.to_string()),
            ("RO", FS_RO.into()),
        ],
    )
}

/// The test host's hooks: the share and virtiofsd before the VMM, virtiofsd's
/// log and the written file's checksum after it. `fail` is the test host's
/// own failure function (prints `RAYOS-HOST-FAIL` and powers off).
pub fn host_hooks(plan: &FsPlan, rayos_env: Vec<(String, String)>) -> HostHooks {
    let values = [
        // Room for both files and some slack.
        ("TMPFS_MIB", (2 * plan.file_mib + 16).to_string()),
        ("SANDBOX", plan.sandbox.name().into()),
        ("MIB", plan.file_mib.to_string()),
        ("SHARE", SHARE_DIR.into()),
        ("IN_FILE", IN_FILE.into()),
        ("OUT_FILE", OUT_FILE.into()),
        ("VIRTIOFSD", VIRTIOFSD.into()),
        ("SOCKET", SOCKET.into()),
        ("LOG", VIRTIOFSD_LOG.into()),
        ("HOST_IN", HOST_IN_SHA.into()),
        ("HOST_OUT", HOST_OUT_SHA.into()),
        ("HOST_INFO", HOST_FS_INFO.into()),
        ("RO_DIR", RO_DIR.into()),
        ("RO_FILE", RO_FILE.into()),
        ("HOST_RO", HOST_RO.into()),
        ("RO_SOCKET", RO_SOCKET.into()),
        ("RO_LOG", RO_LOG.into()),
    ];
    HostHooks { before_vmm: fill(HOST_BEFORE_VMM, &values), after_vmm: fill(HOST_AFTER_VMM, &values), rayos_env }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn plan() -> FsPlan {
        FsPlan { file_mib: 64, step_timeout: Duration::from_secs(300), sandbox: Sandbox::Chroot }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let h = host_hooks(&plan(), Vec::new());
        for s in [guest_init_script(&plan()), h.before_vmm, h.after_vmm] {
            assert_eq!(crate::script::unfilled(&s), None);
        }
    }

    /// The real `depends=` of the Debian 6.1 modules involved.
    fn debian_61_depends() -> HashMap<&'static str, Vec<String>> {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        [
            ("virtiofs", d(&["fuse", "virtio", "virtio_ring"])),
            ("fuse", d(&[])),
            ("virtio_pci", d(&["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"])),
            ("virtio_pci_modern_dev", d(&[])),
            ("virtio_pci_legacy_dev", d(&[])),
            ("virtio", d(&["virtio_ring"])),
            ("virtio_ring", d(&[])),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn guest_modules_resolve_in_dependency_order() {
        let deps = debian_61_depends();
        let order = rayos_image::kmod::load_order(GUEST_MODULE_ROOTS, |m| Ok(deps[m].clone())).unwrap();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio",
                "virtio_pci",
                "fuse",
                "virtiofs"
            ]
        );
        // Every module comes after all of its dependencies, and once.
        for (i, m) in order.iter().enumerate() {
            for d in &deps[m.as_str()] {
                let j = order.iter().position(|x| x == d).unwrap();
                assert!(j < i, "{d} must load before {m}");
            }
            assert_eq!(order.iter().filter(|x| *x == m).count(), 1);
        }
    }

    #[test]
    fn guest_modules_from_a_module_tree() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("lib/modules/6.1.0-9-amd64/kernel");
        let deps = debian_61_depends();
        for (m, d) in &deps {
            let dir = if m.starts_with("virtio") { base.join("drivers/virtio") } else { base.join("fs/fuse") };
            std::fs::create_dir_all(&dir).unwrap();
            let modinfo = format!("license=GPL\0depends={}\0name={m}\0", d.join(","));
            std::fs::write(dir.join(format!("{m}.ko")), rayos_image::kmod::test_support::tiny_elf(modinfo.as_bytes()))
                .unwrap();
        }
        let tree = ModuleTree::open(root.path()).unwrap();
        let order = guest_modules(&tree).unwrap();
        assert_eq!(order.first().map(String::as_str), Some("virtio_ring"));
        assert_eq!(order.last().map(String::as_str), Some("virtiofs"));
        assert_eq!(order.len(), 7);
    }

    #[test]
    fn guest_script_covers_every_step() {
        let s = guest_init_script(&plan());
        let mut lines = s.lines();
        assert_eq!(lines.next(), Some("#!/bin/busybox sh"));
        assert_eq!(lines.next(), Some("echo RAYOS-GUEST-INIT"));
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the guest script"));
        let order = [
            "step modules",
            "insmod /lib/modules/rayos-smoke/$m.ko",
            "step pci",
            "0x1af4:0x105a",
            "step probe",
            "step mount",
            "mount -t virtiofs rayos $MNT",
            "step read\n",
            "dd if=$MNT/in.bin of=/dev/null bs=1M",
            "echo \"RAYOS-FS-READ start_ns=$t0 end_ns=$t1 bytes=$size\"",
            "step read-sha256",
            "step generate",
            "dd if=/dev/urandom of=/tmp/out.bin bs=1M count=$MIB iflag=fullblock",
            "step write\n",
            "dd if=/tmp/out.bin of=$MNT/out.bin bs=1M",
            "sync ||",
            "echo \"RAYOS-FS-WRITE start_ns=$t0",
            "step umount",
            "step readonly",
            "mount -t virtiofs rayos-ro /mnt-ro",
            "echo \"RAYOS-FS-RO token=$token refused=$refused tried=4 files=$files error=$last\"",
            "echo \"RAYOS-FS-RO absent\"",
            "echo RAYOS-FS-DONE",
            "echo RAYOS-GUEST-OK",
        ];
        for w in order.windows(2) {
            assert!(pos(w[0]) < pos(w[1]), "{:?} must come before {:?}", w[0], w[1]);
        }
        // The write is timed across dd and sync.
        let write = pos("step write\n");
        let t0 = write + s[write..].find("t0=$(now_ns)").unwrap();
        let sync = pos("sync ||");
        let t1 = sync + s[sync..].find("t1=$(now_ns)").unwrap();
        assert!(t0 < sync && sync < t1);
        assert!(s.contains("MIB=64\nBYTES=67108864\nSTEP_TIMEOUT=300\n"));
        assert!(s.contains("cat /etc/rayos-smoke/modules-guest"));
        assert!(s.trim_end().ends_with("poweroff -f"));
    }

    #[test]
    fn scripts_are_valid_shell() {
        crate::script::assert_sh_parses(&guest_init_script(&plan()));
        let guest = crate::testhost::GuestSpec {
            memory_mib: 512,
            cpus: 2,
            cmdline: "console=ttyS0".into(),
            fs: Some(plan().share()),
            rayos_args: plan().rayos_args(),
        };
        let hooks = host_hooks(&plan(), vec![("RUST_LOG".into(), "rayos_vmm=debug".into())]);
        crate::script::assert_sh_parses(&crate::testhost::host_init_script(&guest, "q35", false, &hooks));
    }

    #[test]
    fn host_hooks_serve_the_share() {
        let h = host_hooks(&plan(), vec![("RUST_LOG".into(), "rayos_vmm=debug".into())]);
        assert!(h
            .before_vmm
            .contains("/usr/bin/virtiofsd --socket-path=/run/vfs.sock --shared-dir=/srv/share --sandbox=chroot"));
        assert!(h.before_vmm.contains("dd if=/dev/urandom of=/srv/share/in.bin bs=1M count=64 iflag=fullblock"));
        assert!(h.before_vmm.contains("mount -t tmpfs -o size=144m tmpfs /srv/share"));
        assert!(h.before_vmm.contains("wait_virtiofsd $vfs_pid /run/vfs.sock /tmp/virtiofsd.log"));
        assert!(h.before_vmm.contains("wait_virtiofsd $ro_pid /run/vfs-ro.sock /tmp/virtiofsd-ro.log"));
        assert!(h.after_vmm.contains("sha256sum /srv/share/out.bin"));
        assert!(h.after_vmm.contains("echo \"RAYOS-FS-HOST-OUT-SHA256 missing\""));
        assert_eq!(h.rayos_env.len(), 1);
        assert_eq!(plan().share().socket, SOCKET);
    }

    #[test]
    fn read_only_share_is_a_second_virtiofsd_given_as_fs() {
        // rayos-vmm starts no backends: the test host serves the read-only
        // folder itself and rayos-vmm only gets its socket.
        assert_eq!(plan().rayos_args(), ["--fs", "tag=rayos-ro,socket=/run/vfs-ro.sock"]);
        let h = host_hooks(&plan(), Vec::new());
        assert_in_order(
            &h.before_vmm,
            &[
                "mount -t tmpfs -o size=1m tmpfs /srv/ro",
                "> /srv/ro/policy.txt",
                "RAYOS-FS-HOST-RO before",
                "/usr/bin/virtiofsd --socket-path=/run/vfs-ro.sock --shared-dir=/srv/ro --sandbox=chroot --cache=auto --readonly",
                "wait_virtiofsd $ro_pid /run/vfs-ro.sock",
            ],
        );
        assert!(h.after_vmm.starts_with("kill $ro_pid"));
        assert!(h.after_vmm.contains("RAYOS-FS-HOST-RO after"));
        let guest = crate::testhost::GuestSpec {
            memory_mib: 512,
            cpus: 2,
            cmdline: "console=ttyS0".into(),
            fs: Some(plan().share()),
            rayos_args: plan().rayos_args(),
        };
        let r = crate::testhost::sh_join(&crate::testhost::rayos_vmm_argv(&guest));
        assert!(r.ends_with("--fs tag=rayos,socket=/run/vfs.sock --fs tag=rayos-ro,socket=/run/vfs-ro.sock"), "{r}");
    }

    /// Asserts that each of `parts` occurs in `s`, first occurrences in order.
    fn assert_in_order(s: &str, parts: &[&str]) {
        let at: Vec<usize> = parts.iter().map(|p| s.find(p).unwrap_or_else(|| panic!("{p:?} missing"))).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order: {parts:?} at {at:?}");
    }
}
