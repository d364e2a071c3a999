//! The two initramfs images of the nested scenario.
//!
//! * **Guest** (booted by the VMM under test): busybox and an `/init` that
//!   prints `RAYOS-GUEST-INIT` before anything else, then `uname -r` and
//!   `nproc`, then `RAYOS-GUEST-OK`, and powers off; or, interactive, a shell
//!   on the console.
//! * **Test host** (booted by the outer QEMU): busybox, the kvm modules of the
//!   same Debian kernel in load order, the guest kernel + initramfs, and the
//!   VMMs (rayos-vmm and/or qemu-system-x86_64, each with its shared
//!   libraries, QEMU also with its firmware). Its `/init` loads kvm-amd or
//!   kvm-intel, checks `/dev/kvm`, prints `RAYOS-VMM-START`, runs the VMM
//!   named by `rayos_smoke.vmm=` on the kernel command line, prints
//!   `RAYOS-VMM-EXIT status=<n>` and powers off. One image serves both VMMs,
//!   so `--vmm both` builds it once and boots it twice.
//! * Scenarios extend both images without forking them: the guest image can
//!   carry its own `/init` and kernel modules ([`GuestImage`]); the test host
//!   can carry extra binaries (with their libraries) and shell [`HostHooks`]
//!   run before and after the VMM; the VM can get a virtio-fs share
//!   ([`FsShare`]), which both VMM command lines express in their own syntax.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::serial;
use crate::sharedlibs::{self, LibsError};
use rayos_image::cpio::{Archive, CpioError};
use rayos_image::kmod::{KmodError, ModuleTree};

/// Errors from assembling an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum TestHostError {
    #[error(transparent)]
    Initramfs(#[from] CpioError),
    #[error(transparent)]
    Kmod(#[from] KmodError),
    #[error(transparent)]
    Libs(#[from] LibsError),
    #[error(transparent)]
    HostImage(#[from] rayos_image::hostimage::HostImageError),
    #[error("{what} not found at {path}")]
    Missing { what: String, path: PathBuf },
    #[error("cannot ask {qemu} for its firmware directories (-L help): {reason}")]
    FirmwareDirs { qemu: PathBuf, reason: String },
    #[error("QEMU firmware file {file} not found in {dirs:?}")]
    Firmware { file: String, dirs: Vec<PathBuf> },
}

/// The VMM the test host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Vmm {
    /// rayos-vmm, the VMM under test.
    Rayos,
    /// qemu-system-x86_64 on KVM, the full-VM reference.
    Qemu,
}

impl Vmm {
    pub fn name(self) -> &'static str {
        match self {
            Vmm::Rayos => "rayos",
            Vmm::Qemu => "qemu",
        }
    }
}

/// Kernel command-line parameter selecting the VMM inside the test host.
pub const VMM_PARAM: &str = "rayos_smoke.vmm";
/// Where the guest kernel and initramfs live inside the test host.
pub const GUEST_KERNEL: &str = "/guest/vmlinuz";
pub const GUEST_INITRD: &str = "/guest/initrd.cpio";
pub const RAYOS_VMM: &str = "/usr/bin/rayos-vmm";
pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// Where the modules an image loads live, and the files listing their load order.
pub const MODULE_DIR: &str = "/lib/modules/rayos-smoke";
pub const MODULE_LIST_DIR: &str = "/etc/rayos-smoke";
const METRICS: &str = "/tmp/rayos-vmm-metrics.json";

/// Machine type of the nested QEMU reference. q35 is a full PC with PCIe,
/// ACPI and firmware (SeaBIOS), the platform class rayos-vmm presents
/// (virtio-pci described by ACPI); `microvm` would skip firmware and PCI and
/// not be a like-for-like comparison.
pub const DEFAULT_QEMU_MACHINE: &str = "q35";

/// Firmware the nested QEMU needs for `-kernel` boot on pc/q35 with KVM.
const QEMU_FIRMWARE_REQUIRED: &[&str] = &["bios-256k.bin", "linuxboot_dma.bin", "kvmvapic.bin"];
const QEMU_FIRMWARE_OPTIONAL: &[&str] = &["linuxboot.bin", "multiboot_dma.bin", "pvh.bin"];

/// The VM the VMM under test creates.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub memory_mib: u32,
    pub cpus: u32,
    pub cmdline: String,
    /// A virtio-fs device served by a vhost-user backend in the test host.
    pub fs: Option<FsShare>,
    /// Further rayos-vmm arguments (devices only rayos-vmm gets, e.g. a second `--fs`).
    pub rayos_args: Vec<String>,
}

/// A virtio-fs share: the guest mounts `tag`; `socket` is the vhost-user
/// socket of the virtiofsd serving it inside the test host. Guest RAM must be
/// shareable with the backend: rayos-vmm always backs RAM with a memfd, QEMU
/// is told to with `memory-backend-memfd,share=on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsShare {
    pub tag: String,
    pub socket: String,
}

/// Virtqueue size of the nested QEMU's vhost-user-fs-pci (rayos-vmm uses 1024 too).
pub const QEMU_FS_QUEUE_SIZE: u32 = 1024;

/// A kernel image and its modules from one `linux-image-*` package.
#[derive(Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules: ModuleTree,
}

impl Kernel {
    /// Finds `boot/vmlinuz-<release>` and the modules in an extracted package.
    pub fn from_package(root: &Path) -> Result<Self, TestHostError> {
        let modules = ModuleTree::open(root)?;
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{}", modules.release()));
        if !vmlinuz.is_file() {
            return Err(TestHostError::Missing { what: "kernel image".into(), path: vmlinuz });
        }
        Ok(Self { vmlinuz, modules })
    }

    pub fn release(&self) -> &str {
        self.modules.release()
    }
}

/// Single-quotes a word for `sh`.
pub fn sh_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c)) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

pub fn sh_join(words: &[String]) -> String {
    words.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ")
}

/// The guest's `/init`.
pub fn guest_init_script(interactive: bool) -> String {
    let tail = if interactive {
        "echo\necho 'RayOS guest: busybox shell on the console. `exit` (or Ctrl-D) powers the guest off.'\n\
         setsid cttyhack sh -l\n"
    } else {
        ""
    };
    format!(
        "#!/bin/busybox sh\n\
         echo {init}\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         echo \"{info}$(uname -r) nproc=$(nproc)\"\n\
         echo {ok}\n\
         {tail}\
         poweroff -f\n",
        init = serial::GUEST_INIT,
        info = serial::GUEST_INFO,
        ok = serial::GUEST_OK,
    )
}

/// The rayos-vmm command line inside the test host, built from the VMM's
/// own interface crate (rayos-vmm-api) so it cannot drift from its parser.
pub fn rayos_vmm_argv(guest: &GuestSpec) -> Vec<String> {
    let mut spec = rayos_vmm_api::VmSpec::new(GUEST_KERNEL);
    spec.initramfs = Some(GUEST_INITRD.into());
    spec.cmdline = guest.cmdline.clone();
    spec.memory_mib = guest.memory_mib.into();
    spec.cpus = guest.cpus.min(u8::MAX as u32) as u8;
    spec.serial = rayos_vmm_api::Serial::Stdio;
    spec.metrics = Some(METRICS.into());
    spec.fs = guest
        .fs
        .iter()
        .map(|f| rayos_vmm_api::FsDevice { tag: f.tag.clone(), socket: f.socket.clone().into() })
        .collect();
    let argv = spec.to_argv().expect("the test host's VM spec is valid");
    std::iter::once(RAYOS_VMM.to_string())
        .chain(argv.into_iter().map(|a| a.into_string().expect("UTF-8 test host paths")))
        .chain(guest.rayos_args.iter().cloned())
        .collect()
}

/// The nested QEMU command line inside the test host. Interactive runs use a
/// mux chardev so Ctrl-A x quits, as with rayos-vmm, and Ctrl-C reaches the
/// guest.
pub fn qemu_argv(guest: &GuestSpec, machine: &str, interactive: bool) -> Vec<String> {
    let mut argv: Vec<String> = [
        QEMU,
        "-machine",
        machine,
        "-enable-kvm",
        "-cpu",
        "host",
        "-smp",
        &guest.cpus.to_string(),
        "-m",
        &format!("{}M", guest.memory_mib),
        "-nographic",
        "-nodefaults",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(fs) = &guest.fs {
        argv.extend([
            "-object".to_string(),
            format!("memory-backend-memfd,id=mem,size={}M,share=on", guest.memory_mib),
            "-numa".to_string(),
            "node,memdev=mem".to_string(),
            "-chardev".to_string(),
            format!("socket,id=vfs,path={}", fs.socket),
            "-device".to_string(),
            format!("vhost-user-fs-pci,queue-size={QEMU_FS_QUEUE_SIZE},chardev=vfs,tag={}", fs.tag),
        ]);
    }
    if interactive {
        argv.extend(
            ["-chardev", "stdio,id=con,mux=on,signal=off", "-serial", "chardev:con", "-mon", "chardev=con"]
                .map(String::from),
        );
    } else {
        argv.extend(["-serial", "stdio"].map(String::from));
    }
    argv.extend(["-kernel", GUEST_KERNEL, "-initrd", GUEST_INITRD, "-append", &guest.cmdline].map(String::from));
    argv
}

/// Scenario-specific additions to the test host's `/init`.
#[derive(Debug, Clone, Default)]
pub struct HostHooks {
    /// Shell run once the kvm modules are loaded and the VMM is chosen
    /// (`$vmm`), right before `RAYOS-VMM-START`; may call `fail <reason>`.
    pub before_vmm: String,
    /// Shell run after the VMM exited (`$status` holds its exit status),
    /// before `RAYOS-VMM-EXIT`.
    pub after_vmm: String,
    /// Environment for rayos-vmm, e.g. `RUST_LOG=rayos_vmm=debug`.
    pub rayos_env: Vec<(String, String)>,
}

/// KVM trace events the test host records with `--kvm-trace`: why each
/// vCPU left the guest, what was injected into it, IPIs (INIT/SIPI included),
/// MSR and control-register writes, hypercalls and exits to the VMM.
pub const KVM_TRACE_EVENTS: &[&str] = &[
    "kvm_exit",
    "kvm_inj_exception",
    "kvm_inj_virq",
    "kvm_apic_ipi",
    "kvm_apic_accept_irq",
    "kvm_msr",
    "kvm_cr",
    "kvm_hypercall",
    "kvm_userspace_exit",
];

/// How many trace lines `--kvm-trace` prints after a failed VMM run.
pub const KVM_TRACE_TAIL: usize = 600;

/// Serial markers around the trace dump.
pub const KVM_TRACE_BEGIN: &str = "RAYOS-KVM-TRACE-BEGIN";
pub const KVM_TRACE_END: &str = "RAYOS-KVM-TRACE-END";

impl HostHooks {
    /// Adds KVM tracing around the VMM: the test host's kernel records
    /// [`KVM_TRACE_EVENTS`] in its ring buffer while the VMM runs, and when
    /// the VMM exits with a non-zero status the last [`KVM_TRACE_TAIL`]
    /// events and the kernel log's tail go to the serial console. Nothing is
    /// printed after a clean exit, so passing runs keep their timing.
    pub fn with_kvm_trace(mut self) -> Self {
        let enable: String = KVM_TRACE_EVENTS
            .iter()
            .map(|e| format!("echo 1 > $T/events/kvm/{e}/enable || fail \"cannot enable trace event {e}\"\n"))
            .collect();
        self.before_vmm = format!(
            "T=/sys/kernel/tracing\n\
             mkdir -p $T\n\
             mount -t tracefs nodev $T || fail \"cannot mount tracefs (--kvm-trace)\"\n\
             echo 16384 > $T/buffer_size_kb\n\
             {enable}\
             echo 1 > $T/tracing_on\n\
             {}",
            self.before_vmm
        );
        self.after_vmm = format!(
            "if [ \"$status\" != 0 ]; then\n\
             \x20   echo 0 > $T/tracing_on\n\
             \x20   echo {KVM_TRACE_BEGIN}\n\
             \x20   dmesg | tail -n 40\n\
             \x20   grep -v '^#' $T/trace | tail -n {KVM_TRACE_TAIL}\n\
             \x20   echo {KVM_TRACE_END}\n\
             fi\n\
             {}",
            self.after_vmm
        );
        self
    }
}

/// The test host's `/init`.
pub fn host_init_script(guest: &GuestSpec, qemu_machine: &str, interactive: bool, hooks: &HostHooks) -> String {
    let env: String = hooks.rayos_env.iter().map(|(k, v)| format!("{k}={} ", sh_quote(v))).collect();
    let section = |name: &str, body: &str| {
        if body.trim().is_empty() {
            String::new()
        } else {
            format!("# --- {name} (scenario hook) ---\n{}\n", body.trim_end())
        }
    };
    let banner = if interactive {
        "echo 'RayOS test host: starting the VMM; the guest console follows. Ctrl-A x quits the VMM.'\n"
    } else {
        ""
    };
    format!(
        r#"#!/bin/busybox sh
# RayOS smoke-test host init, generated by rayos-smoke (testhost.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run
echo {host_init}
fail() {{ echo "{host_fail} $*"; poweroff -f; sleep 60; }}
if grep -qw svm /proc/cpuinfo; then vendor=amd
elif grep -qw vmx /proc/cpuinfo; then vendor=intel
else fail "CPU has neither svm nor vmx: no nested virtualisation"; fi
for m in $(cat /etc/rayos-smoke/modules-$vendor); do
    insmod {module_dir}/$m.ko || fail "insmod $m.ko failed (kvm-$vendor)"
done
[ -c /dev/kvm ] || fail "/dev/kvm missing after loading kvm-$vendor"
# RayOS host policy: shared-memory guest RAM (rayos-vmm's memfd, QEMU's
# memory-backend-memfd) may use transparent huge pages where the VMM asks.
echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null
vmm=rayos
for arg in $(cat /proc/cmdline); do
    case "$arg" in {param}=*) vmm="${{arg#{param}=}}" ;; esac
done
echo "{host_info}kernel=$(uname -r) vendor=$vendor vmm=$vmm"
{before}{banner}case "$vmm" in
rayos)
    [ -x {rayos} ] || fail "{rayos} is not in this test host"
    echo {vmm_start}
    {env}{rayos_cmd}
    status=$?
    [ -s {metrics} ] && echo "{vmm_metrics}$(tr -d '\n' < {metrics})"
    ;;
qemu)
    [ -x {qemu} ] || fail "{qemu} is not in this test host"
    echo {vmm_start}
    {qemu_cmd}
    status=$?
    ;;
*)
    fail "unknown {param}=$vmm"
    ;;
esac
{after}echo "{vmm_exit}$status"
poweroff -f
"#,
        host_init = serial::HOST_INIT,
        host_fail = serial::HOST_FAIL,
        host_info = serial::HOST_INFO,
        vmm_start = serial::VMM_START,
        vmm_exit = serial::VMM_EXIT,
        vmm_metrics = serial::VMM_METRICS,
        module_dir = MODULE_DIR,
        param = VMM_PARAM,
        rayos = RAYOS_VMM,
        qemu = QEMU,
        metrics = METRICS,
        rayos_cmd = sh_join(&rayos_vmm_argv(guest)),
        qemu_cmd = sh_join(&qemu_argv(guest, qemu_machine, interactive)),
        before = section("before the VMM", &hooks.before_vmm),
        after = section("after the VMM", &hooks.after_vmm),
    )
}

/// Applet paths (`bin/sh`, `sbin/poweroff`, ...) of a busybox binary.
pub fn busybox_applets(busybox: &Path) -> Result<Vec<String>, TestHostError> {
    Ok(rayos_image::hostimage::busybox_applets(busybox)?)
}

/// A root skeleton: busybox with its applet links, `/dev/console` (the kernel
/// opens it for init's stdio before devtmpfs is mounted) and mount points.
pub fn base_archive(busybox: &Path, applets: &[String]) -> Result<Archive, TestHostError> {
    let mut a = Archive::new();
    a.file_from_host("/bin/busybox", busybox, Some(0o755))?;
    for applet in applets.iter().filter(|p| p.as_str() != "bin/busybox") {
        let depth = applet.matches('/').count();
        a.symlink(applet, &format!("{}bin/busybox", "../".repeat(depth)))?;
    }
    a.char_dev("/dev/console", 0o600, 5, 1)?;
    a.char_dev("/dev/null", 0o666, 1, 3)?;
    for d in ["proc", "sys", "tmp", "run", "root", "etc"] {
        a.dir(d, if d == "tmp" { 0o1777 } else { 0o755 })?;
    }
    Ok(a)
}

/// Writes the guest initramfs of vmm-boot; returns its size in bytes.
pub fn build_guest_initramfs(busybox: &Path, interactive: bool, out: &Path) -> Result<u64, TestHostError> {
    build_guest_image(&GuestImage { busybox, init: guest_init_script(interactive), modules: None }, out)
}

/// A guest initramfs: busybox, an `/init`, and optionally kernel modules.
#[derive(Debug)]
pub struct GuestImage<'a> {
    pub busybox: &'a Path,
    pub init: String,
    /// Modules of `tree` to include, in load order; they go to
    /// [`MODULE_DIR`]`/<name>.ko` and the order to
    /// [`MODULE_LIST_DIR`]`/modules-guest`, one name a line.
    pub modules: Option<(&'a ModuleTree, &'a [String])>,
}

/// Where a guest image lists its modules in load order.
pub fn guest_module_list() -> String {
    format!("{MODULE_LIST_DIR}/modules-guest")
}

/// Adds modules (decompressed) to `MODULE_DIR` and their order to `list`.
pub fn add_modules(a: &mut Archive, tree: &ModuleTree, order: &[String], list: &str) -> Result<(), TestHostError> {
    for m in order {
        let dest = format!("{MODULE_DIR}/{m}.ko");
        if !a.contains(&dest) {
            a.file_bytes(&dest, rayos_image::kmod::read_module(tree.path_of(m)?)?, 0o644)?;
        }
    }
    a.file_bytes(list, order.join("\n") + "\n", 0o644)?;
    Ok(())
}

/// Writes a guest initramfs; returns its size in bytes.
pub fn build_guest_image(image: &GuestImage<'_>, out: &Path) -> Result<u64, TestHostError> {
    let applets = busybox_applets(image.busybox)?;
    let mut a = base_archive(image.busybox, &applets)?;
    a.file_bytes("/init", image.init.clone(), 0o755)?;
    if let Some((tree, order)) = image.modules {
        add_modules(&mut a, tree, order, &guest_module_list())?;
    }
    Ok(a.write_file(out)?)
}

/// Copies a dynamically linked binary to `dest` with every library (and the
/// loader) at the path the loader will look for it; returns the number of
/// libraries.
pub fn add_binary_with_libs(a: &mut Archive, binary: &Path, dest: &str) -> Result<usize, TestHostError> {
    if !binary.is_file() {
        return Err(TestHostError::Missing { what: "binary".into(), path: binary.to_path_buf() });
    }
    a.file_from_host(dest, binary, Some(0o755))?;
    let libs = sharedlibs::closure(binary)?;
    for lib in &libs {
        a.file_from_host(&lib.to_string_lossy(), lib, Some(0o755))?;
    }
    Ok(libs.len())
}

/// QEMU's firmware search path (`-L help`).
fn qemu_firmware_dirs(qemu: &Path) -> Result<Vec<PathBuf>, TestHostError> {
    let err = |reason: String| TestHostError::FirmwareDirs { qemu: qemu.to_path_buf(), reason };
    let out = Command::new(qemu).args(["-L", "help"]).output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// Adds qemu-system-x86_64 as [`QEMU`] with its shared libraries and the
/// firmware it loads; returns the number of libraries.
pub fn add_qemu(a: &mut Archive, qemu: &Path) -> Result<usize, TestHostError> {
    let n = add_binary_with_libs(a, qemu, QEMU)?;
    add_qemu_firmware(a, qemu)?;
    Ok(n)
}

fn add_qemu_firmware(a: &mut Archive, qemu: &Path) -> Result<(), TestHostError> {
    let dirs = qemu_firmware_dirs(qemu)?;
    let find = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    for (file, required) in
        QEMU_FIRMWARE_REQUIRED.iter().map(|f| (f, true)).chain(QEMU_FIRMWARE_OPTIONAL.iter().map(|f| (f, false)))
    {
        match find(file) {
            // Same path as on this machine: it is on the nested QEMU's search
            // path; the content is the symlink's target.
            Some(path) => {
                a.file_from_host(&path.to_string_lossy(), &path, Some(0o644))?;
            }
            None if required => {
                return Err(TestHostError::Firmware { file: file.to_string(), dirs });
            }
            None => tracing::debug!("optional QEMU firmware {file} not found"),
        }
    }
    Ok(())
}

/// Inputs of the test host image.
#[derive(Debug)]
pub struct HostSpec<'a> {
    pub busybox: &'a Path,
    pub kernel: &'a Kernel,
    pub guest_initrd: &'a Path,
    pub guest: &'a GuestSpec,
    pub rayos_vmm: Option<&'a Path>,
    pub qemu: Option<&'a Path>,
    pub qemu_machine: &'a str,
    pub interactive: bool,
    /// Further binaries: (host path, path in the test host); their shared
    /// libraries come along.
    pub extra_binaries: &'a [(&'a Path, &'a str)],
    pub hooks: &'a HostHooks,
}

/// What went into the test host image.
#[derive(Debug, Clone)]
pub struct HostManifest {
    pub bytes: u64,
    pub modules_amd: Vec<String>,
    pub modules_intel: Vec<String>,
}

/// Writes the test host initramfs.
pub fn build_host_initramfs(spec: &HostSpec<'_>, out: &Path) -> Result<HostManifest, TestHostError> {
    let applets = busybox_applets(spec.busybox)?;
    let mut a = base_archive(spec.busybox, &applets)?;
    a.file_bytes("/init", host_init_script(spec.guest, spec.qemu_machine, spec.interactive, spec.hooks), 0o755)?;

    let tree = &spec.kernel.modules;
    let modules_amd = tree.load_order(&["kvm-amd"])?;
    let modules_intel = tree.load_order(&["kvm-intel"])?;
    add_modules(&mut a, tree, &modules_amd, &format!("{MODULE_LIST_DIR}/modules-amd"))?;
    add_modules(&mut a, tree, &modules_intel, &format!("{MODULE_LIST_DIR}/modules-intel"))?;

    a.file_from_host(GUEST_KERNEL, &spec.kernel.vmlinuz, Some(0o644))?;
    a.file_from_host(GUEST_INITRD, spec.guest_initrd, Some(0o644))?;
    if let Some(vmm) = spec.rayos_vmm {
        let n = add_binary_with_libs(&mut a, vmm, RAYOS_VMM)?;
        tracing::info!("test host: {} with {n} shared libraries", vmm.display());
    }
    for (binary, dest) in spec.extra_binaries {
        let n = add_binary_with_libs(&mut a, binary, dest)?;
        tracing::info!("test host: {} as {dest} with {n} shared libraries", binary.display());
    }
    if let Some(qemu) = spec.qemu {
        let n = add_qemu(&mut a, qemu)?;
        tracing::info!("test host: {} with {n} shared libraries and firmware", qemu.display());
    }
    let bytes = a.write_file(out)?;
    Ok(HostManifest { bytes, modules_amd, modules_intel })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> GuestSpec {
        GuestSpec {
            memory_mib: 512,
            cpus: 2,
            cmdline: "console=ttyS0 quiet panic=-1".into(),
            fs: None,
            rayos_args: Vec::new(),
        }
    }

    fn guest_with_fs() -> GuestSpec {
        GuestSpec { fs: Some(FsShare { tag: "rayos".into(), socket: "/run/vfs.sock".into() }), ..guest() }
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/guest/vmlinuz"), "/guest/vmlinuz");
        assert_eq!(sh_quote("console=ttyS0 quiet"), "'console=ttyS0 quiet'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn guest_init_prints_marker_first() {
        let s = guest_init_script(false);
        let mut lines = s.lines();
        assert_eq!(lines.next(), Some("#!/bin/busybox sh"));
        assert_eq!(lines.next(), Some("echo RAYOS-GUEST-INIT"));
        assert!(s.contains("echo \"RAYOS-GUEST uname=$(uname -r) nproc=$(nproc)\""));
        assert!(s.trim_end().ends_with("poweroff -f"));
        assert!(!s.contains("cttyhack"));
        assert!(guest_init_script(true).contains("setsid cttyhack sh"));
    }

    #[test]
    fn vmm_command_lines_match_the_contract() {
        let r = sh_join(&rayos_vmm_argv(&guest()));
        assert_eq!(
            r,
            "/usr/bin/rayos-vmm --kernel /guest/vmlinuz --initramfs /guest/initrd.cpio \
             --cmdline 'console=ttyS0 quiet panic=-1' --memory 512M --cpus 2 --serial stdio \
             --metrics /tmp/rayos-vmm-metrics.json"
        );
        let q = sh_join(&qemu_argv(&guest(), "q35", false));
        assert!(q.starts_with("/usr/bin/qemu-system-x86_64 -machine q35 -enable-kvm -cpu host -smp 2 -m 512M"));
        assert!(q.contains(
            "-serial stdio -kernel /guest/vmlinuz -initrd /guest/initrd.cpio -append 'console=ttyS0 quiet panic=-1'"
        ));
        assert!(sh_join(&qemu_argv(&guest(), "q35", true)).contains("signal=off"));
    }

    #[test]
    fn host_init_runs_selected_vmm_between_markers() {
        let s = host_init_script(&guest(), "q35", false, &HostHooks::default());
        let start = s.find("echo RAYOS-VMM-START\n    /usr/bin/rayos-vmm").expect("marker right before rayos-vmm");
        let exit = s.find("echo \"RAYOS-VMM-EXIT status=$status\"").unwrap();
        assert!(start < exit);
        assert!(s.contains("echo RAYOS-VMM-START\n    /usr/bin/qemu-system-x86_64"));
        assert!(s.contains("rayos_smoke.vmm=*) vmm=\"${arg#rayos_smoke.vmm=}\""));
        assert!(s.contains("insmod /lib/modules/rayos-smoke/$m.ko"));
        assert!(!s.contains("scenario hook"));
    }

    #[test]
    fn fs_share_on_both_vmm_command_lines() {
        let r = sh_join(&rayos_vmm_argv(&guest_with_fs()));
        assert!(r.ends_with("--metrics /tmp/rayos-vmm-metrics.json --fs tag=rayos,socket=/run/vfs.sock"));
        let q = sh_join(&qemu_argv(&guest_with_fs(), "q35", false));
        assert!(q.contains(
            "-m 512M -nographic -nodefaults -no-reboot \
             -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
             -chardev socket,id=vfs,path=/run/vfs.sock \
             -device vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=rayos -serial stdio"
        ));
        assert!(!sh_join(&qemu_argv(&guest(), "q35", false)).contains("vhost-user"));
    }

    /// Asserts that each of `parts` occurs in `s`, first occurrences in order.
    fn assert_in_order(s: &str, parts: &[&str]) {
        let at: Vec<usize> = parts.iter().map(|p| s.find(p).unwrap_or_else(|| panic!("{p:?} missing"))).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order: {parts:?} at {at:?}");
    }

    /// Hooks that each echo a word, to find them in the script.
    fn echo_hooks() -> HostHooks {
        HostHooks {
            before_vmm: "echo before-hook\n".into(),
            after_vmm: "echo after-hook\n".into(),
            rayos_env: Vec::new(),
        }
    }

    #[test]
    fn host_hooks_surround_the_vmm() {
        let hooks = HostHooks { rayos_env: vec![("RUST_LOG".into(), "rayos_vmm=debug".into())], ..echo_hooks() };
        let s = host_init_script(&guest(), "q35", false, &hooks);
        assert_in_order(
            &s,
            &[
                "echo \"RAYOS-HOST kernel=",
                "echo before-hook",
                "echo RAYOS-VMM-START",
                "echo after-hook",
                "echo \"RAYOS-VMM-EXIT status=$status\"",
            ],
        );
        assert!(s.contains("echo RAYOS-VMM-START\n    RUST_LOG=rayos_vmm=debug /usr/bin/rayos-vmm"));
        // Only rayos-vmm gets the environment.
        assert!(s.contains("echo RAYOS-VMM-START\n    /usr/bin/qemu-system-x86_64"));
    }

    #[test]
    fn kvm_trace_wraps_the_scenario_hooks() {
        let hooks = echo_hooks().with_kvm_trace();
        let s = host_init_script(&guest(), "q35", false, &hooks);
        assert_in_order(
            &s,
            &[
                "mount -t tracefs nodev $T",
                "echo 1 > $T/tracing_on",
                "echo before-hook",
                "echo RAYOS-VMM-START",
                "if [ \"$status\" != 0 ]; then",
                "echo after-hook",
                "echo \"RAYOS-VMM-EXIT status=$status\"",
            ],
        );
        for e in KVM_TRACE_EVENTS {
            assert!(s.contains(&format!("echo 1 > $T/events/kvm/{e}/enable")), "{e}");
        }
        assert!(s.contains(&format!("grep -v '^#' $T/trace | tail -n {KVM_TRACE_TAIL}")));
        assert!(s.contains(&format!("    echo {KVM_TRACE_BEGIN}\n")));
    }
}
