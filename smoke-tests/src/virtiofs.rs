//! Building blocks of the `vmm-virtiofs` scenario: the guest's `/init`, the
//! test host's hook scripts, the kernel modules the guest loads, and the
//! markers both print, with the evaluation of one run.
//!
//! Design note.
//!
//! * **Test host** (hooks around the VMM, see [`crate::testhost::HostHooks`]):
//!   mounts a tmpfs on [`SHARE_DIR`], writes `in.bin` from `/dev/urandom`,
//!   prints its SHA-256 (`RAYOS-FS-HOST-IN-SHA256`), starts virtiofsd on
//!   [`SOCKET`] and waits for the socket; after the VMM exits it waits for
//!   virtiofsd to exit (it does when the frontend disconnects), prints
//!   virtiofsd's log and the SHA-256 of the `out.bin` the guest wrote
//!   (`RAYOS-FS-HOST-OUT-SHA256`). A tmpfs is used so the figures measure the
//!   virtio-fs path (VMM, vhost-user, virtiofsd), not a disk.
//! * **Guest** `/init`: loads the modules (`insmod`, no udev), checks that the
//!   virtio-fs PCI function (1af4:105a) exists and that virtio-pci and
//!   virtiofs bound it, mounts [`TAG`], times a cold read of `in.bin` and
//!   prints its SHA-256, generates `out.bin` in its own tmpfs, prints its
//!   SHA-256, and times copying it to the share *including* `sync`. Each step
//!   is announced (`RAYOS-FS-STEP <step>`); a failure prints
//!   `RAYOS-FS-ERROR <step>: <what>`, then diagnostics (`RAYOS-FS-DIAG ...`:
//!   PCI and virtio devices with their drivers, `/proc/interrupts`, loaded
//!   modules, the kernel log) and powers off. A watchdog in the background
//!   does the same when one step makes no progress for the step timeout, so
//!   a hung mount or a lost interrupt is reported as such rather than as the
//!   outer timeout.
//! * **Read-only share** (rayos-vmm only): the test host starts a second
//!   virtiofsd on [`RO_DIR`] with the flags the host service gives a
//!   read-only policy share (`--cache=auto --readonly`) and rayos-vmm gets it
//!   as `--fs tag=rayos-ro,socket=/run/vfs-ro.sock` (rayos-vmm starts no
//!   backends itself). The test host puts a random token in `policy.txt` there
//!   (`RAYOS-FS-HOST-RO before`); the guest mounts the tag read-write (its
//!   own mount options cannot lift the host's policy), reads the token, tries
//!   four writes (create, append, remove, mkdir) and reports how many were
//!   refused (`RAYOS-FS-RO`); afterwards the host checks the folder is
//!   unchanged (`RAYOS-FS-HOST-RO after`). QEMU runs have no such device and
//!   the guest reports `RAYOS-FS-RO absent`.
//! * **Clock**: transfers are timed inside the guest on the monotonic clock,
//!   `now at <ns> nsecs` of `/proc/timer_list` (busybox `date` has no `%N`),
//!   falling back to `/proc/uptime` (10 ms resolution); the guest says which
//!   (`RAYOS-FS-CLOCK`). `read_mib_s` and `write_mib_s` are MiB divided by
//!   those seconds.

use std::time::Duration;

use crate::kmod::{KmodError, ModuleTree};
use crate::serial::{self, BootFigures, BootObservation, Expectation};
use crate::testhost::{guest_module_list, sh_quote, FsShare, HostHooks, MODULE_DIR};

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
const RO_WRITES: u32 = 4;
/// virtiofsd's log inside the test host (printed after the VMM exits).
const VIRTIOFSD_LOG: &str = "/tmp/virtiofsd.log";

/// The modules the guest needs beyond the built-in kernel: the virtio-pci
/// transport and the virtio-fs file system. Everything else (virtio,
/// virtio_ring, the virtio-pci library modules, fuse) comes in as their
/// dependencies; virtio_pci is not a dependency of virtiofs, so both are roots.
pub const GUEST_MODULE_ROOTS: &[&str] = &["virtio_pci", "virtiofs"];

pub const FS_STEP: &str = "RAYOS-FS-STEP ";
pub const FS_ERROR: &str = "RAYOS-FS-ERROR ";
pub const FS_CLOCK: &str = "RAYOS-FS-CLOCK ";
pub const FS_PCI: &str = "RAYOS-FS-PCI ";
pub const FS_READ: &str = "RAYOS-FS-READ ";
pub const FS_READ_SHA: &str = "RAYOS-FS-READ-SHA256 ";
pub const FS_WRITE: &str = "RAYOS-FS-WRITE ";
pub const FS_WRITE_SHA: &str = "RAYOS-FS-WRITE-SHA256 ";
pub const FS_DONE: &str = "RAYOS-FS-DONE";
pub const FS_DIAG: &str = "RAYOS-FS-DIAG ";
pub const FS_IRQ: &str = "RAYOS-FS-IRQ ";
pub const HOST_IN_SHA: &str = "RAYOS-FS-HOST-IN-SHA256 ";
pub const HOST_OUT_SHA: &str = "RAYOS-FS-HOST-OUT-SHA256 ";
pub const HOST_FS_INFO: &str = "RAYOS-FS-HOST ";
pub const FS_RO: &str = "RAYOS-FS-RO ";
pub const HOST_RO: &str = "RAYOS-FS-HOST-RO ";

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
    format!(
        r#"#!/bin/busybox sh
echo {guest_init}
# RayOS vmm-virtiofs guest init, generated by rayos-smoke (virtiofs.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{guest_info}$(uname -r) nproc=$(nproc)"
MIB={mib}
BYTES={bytes}
STEP_TIMEOUT={step_timeout}
MNT={mnt}

diag() {{
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        drv=$(readlink "$d/driver" 2>/dev/null)
        echo "{diag}pci ${{d##*/}} $(cat "$d/vendor"):$(cat "$d/device") class=$(cat "$d/class") driver=${{drv##*/}} irq=$(cat "$d/irq" 2>/dev/null)"
    done
    for d in /sys/bus/virtio/devices/*; do
        [ -e "$d" ] || continue
        drv=$(readlink "$d/driver" 2>/dev/null)
        echo "{diag}virtio ${{d##*/}} device=$(cat "$d/device") vendor=$(cat "$d/vendor") status=$(cat "$d/status" 2>/dev/null) features=$(cat "$d/features" 2>/dev/null) driver=${{drv##*/}}"
    done
    sed 's/^/{diag}interrupts /' /proc/interrupts
    lsmod | sed 's/^/{diag}lsmod /'
    grep -E 'virtiofs|fuse' /proc/mounts | sed 's/^/{diag}mount /'
    dmesg | sed 's/^/{diag}dmesg /'
}}
STEP=boot
step() {{
    STEP=$1
    echo "$1 $(cut -d. -f1 /proc/uptime)" > /run/rayos-step
    echo "{step}$1"
}}
fs_error() {{
    kill $WATCHDOG 2>/dev/null
    echo "{error}$STEP: $*"
    diag
    poweroff -f
    sleep 60
}}
step start
(
    while sleep 5; do
        read name since < /run/rayos-step || continue
        [ -n "$since" ] || continue
        now=$(cut -d. -f1 /proc/uptime)
        if [ $((now - since)) -ge $STEP_TIMEOUT ]; then
            echo "{error}$name: no progress for ${{STEP_TIMEOUT}} s (guest watchdog)"
            diag
            poweroff -f
        fi
    done
) &
WATCHDOG=$!

if sed -n '/^now at /{{p;q}}' /proc/timer_list 2>/dev/null | grep -q nsecs; then
    CLOCK=timer_list
else
    CLOCK=uptime
fi
now_ns() {{
    if [ $CLOCK = timer_list ]; then
        sed -n '/^now at /{{s/^now at \([0-9]*\) nsecs.*/\1/p;q}}' /proc/timer_list
    else
        awk '{{printf "%.0f\n", $1 * 1000000000}}' /proc/uptime
    fi
}}
echo "{clock}$CLOCK"

step modules
for m in $(cat {module_list}); do
    insmod {module_dir}/$m.ko 2>/tmp/err || fs_error "insmod $m.ko failed: $(cat /tmp/err)"
done

step pci
pcidev=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor" 2>/dev/null):$(cat "$d/device" 2>/dev/null)" = 0x1af4:0x105a ] && pcidev=${{d##*/}}
done
[ -n "$pcidev" ] || fs_error "no virtio-fs PCI function (1af4:105a) on the PCI bus"
echo "{pci}$pcidev"

step probe
i=0
while :; do
    drv=$(readlink /sys/bus/pci/devices/$pcidev/driver 2>/dev/null)
    vdev=
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device" 2>/dev/null)" = 0x001a ] && vdev=$d
    done
    vdrv=
    [ -n "$vdev" ] && vdrv=$(readlink "$vdev/driver" 2>/dev/null)
    [ "${{vdrv##*/}}" = virtiofs ] && break
    i=$((i + 1))
    if [ $i -ge 50 ]; then
        [ "${{drv##*/}}" = virtio-pci ] || fs_error "virtio-pci did not bind $pcidev (driver: ${{drv##*/}})"
        [ -n "$vdev" ] || fs_error "virtio-pci bound $pcidev but created no virtio device of type 26 (fs)"
        fs_error "the virtiofs driver did not bind ${{vdev##*/}} (driver: ${{vdrv##*/}})"
    fi
    sleep 0.1
done

step mount
mkdir -p $MNT
mount -t virtiofs {tag} $MNT 2>/tmp/err || fs_error "mount -t virtiofs {tag} $MNT failed: $(cat /tmp/err)"
grep -q " $MNT virtiofs " /proc/mounts || fs_error "$MNT is not a virtiofs mount after mount succeeded"
[ -f $MNT/{in_file} ] || fs_error "$MNT/{in_file} not found (ls: $(ls -la $MNT 2>&1 | tr '\n' ' '))"
size=$(stat -c %s $MNT/{in_file})
[ "$size" = $BYTES ] || fs_error "$MNT/{in_file} has $size bytes, expected $BYTES"

step read
t0=$(now_ns)
dd if=$MNT/{in_file} of=/dev/null bs=1M 2>/tmp/err || fs_error "dd if=$MNT/{in_file} failed: $(tail -n 1 /tmp/err)"
t1=$(now_ns)
echo "{read}start_ns=$t0 end_ns=$t1 bytes=$size"

step read-sha256
sum=$(sha256sum $MNT/{in_file}) || fs_error "sha256sum $MNT/{in_file} failed"
echo "{read_sha}${{sum%% *}}"

step generate
dd if=/dev/urandom of=/tmp/{out_file} bs=1M count=$MIB iflag=fullblock 2>/tmp/err || fs_error "cannot create /tmp/{out_file}: $(tail -n 1 /tmp/err)"
sum=$(sha256sum /tmp/{out_file}) || fs_error "sha256sum /tmp/{out_file} failed"
echo "{write_sha}${{sum%% *}}"

step write
t0=$(now_ns)
dd if=/tmp/{out_file} of=$MNT/{out_file} bs=1M 2>/tmp/err || fs_error "dd of=$MNT/{out_file} failed: $(tail -n 1 /tmp/err)"
sync || fs_error "sync failed"
t1=$(now_ns)
echo "{write}start_ns=$t0 end_ns=$t1 bytes=$(stat -c %s /tmp/{out_file})"
grep -i virtio /proc/interrupts | sed 's/^/{irq}/'

step umount
umount $MNT || fs_error "umount $MNT failed"

step readonly
n=0
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = 0x001a ] && n=$((n + 1))
done
if [ $n -ge 2 ]; then
    mkdir -p {ro_mnt}
    i=0
    until mount -t virtiofs {ro_tag} {ro_mnt} 2>/tmp/err; do
        i=$((i + 1))
        [ $i -lt 50 ] || fs_error "mount -t virtiofs {ro_tag} {ro_mnt} failed: $(cat /tmp/err)"
        sleep 0.1
    done
    token=$(cat {ro_mnt}/{ro_file}) || fs_error "cannot read {ro_mnt}/{ro_file}"
    refused=0
    last=
    for w in "echo x > {ro_mnt}/new.txt" "echo x >> {ro_mnt}/{ro_file}" "rm {ro_mnt}/{ro_file}" "mkdir {ro_mnt}/dir"; do
        if out=$(sh -c "$w" 2>&1); then
            echo "{diag}read-only share allowed: $w"
        else
            refused=$((refused + 1))
            last=$out
        fi
    done
    files=$(ls -A {ro_mnt} | wc -l)
    umount {ro_mnt} || fs_error "umount {ro_mnt} failed"
    echo "{ro}token=$token refused=$refused tried={ro_writes} files=$files error=$last"
else
    echo "{ro}absent"
fi
kill $WATCHDOG 2>/dev/null
echo {done}
echo {guest_ok}
poweroff -f
"#,
        guest_init = serial::GUEST_INIT,
        guest_info = serial::GUEST_INFO,
        guest_ok = serial::GUEST_OK,
        mib = plan.file_mib,
        bytes = plan.bytes(),
        mnt = GUEST_MOUNT,
        tag = sh_quote(TAG),
        in_file = IN_FILE,
        out_file = OUT_FILE,
        module_list = guest_module_list(),
        module_dir = MODULE_DIR,
        diag = FS_DIAG,
        step = FS_STEP,
        error = FS_ERROR,
        clock = FS_CLOCK,
        pci = FS_PCI,
        read = FS_READ,
        read_sha = FS_READ_SHA,
        write = FS_WRITE,
        write_sha = FS_WRITE_SHA,
        irq = FS_IRQ,
        done = FS_DONE,
        ro = FS_RO,
        ro_tag = RO_TAG,
        ro_mnt = RO_MOUNT,
        ro_file = RO_FILE,
        ro_writes = RO_WRITES,
    )
}

/// The test host's hooks: the share and virtiofsd before the VMM, virtiofsd's
/// log and the written file's checksum after it. `fail` is the test host's
/// own failure function (prints `RAYOS-HOST-FAIL` and powers off).
pub fn host_hooks(plan: &FsPlan, rayos_env: Vec<(String, String)>) -> HostHooks {
    let sandbox = plan.sandbox.name();
    // Room for both files and some slack.
    let tmpfs_mib = 2 * plan.file_mib + 16;
    let before_vmm = format!(
        r#"mkdir -p {share}
mount -t tmpfs -o size={tmpfs_mib}m tmpfs {share} || fail "virtiofs: cannot mount a tmpfs on {share}"
dd if=/dev/urandom of={share}/{in_file} bs=1M count={mib} iflag=fullblock 2>/tmp/err || fail "virtiofs: cannot create {share}/{in_file}: $(tail -n 1 /tmp/err)"
sum=$(sha256sum {share}/{in_file}) || fail "virtiofs: sha256sum {share}/{in_file} failed"
echo "{host_in}${{sum%% *}} bytes=$(stat -c %s {share}/{in_file})"
[ -x {virtiofsd} ] || fail "{virtiofsd} is not in this test host"
rm -f {socket}
{virtiofsd} --socket-path={socket} --shared-dir={share} --sandbox={sandbox} >{log} 2>&1 &
vfs_pid=$!
i=0
while [ ! -S {socket} ]; do
    if ! kill -0 $vfs_pid 2>/dev/null; then
        sed 's/^/virtiofsd: /' {log}
        fail "virtiofs: virtiofsd (--sandbox={sandbox}) exited before creating {socket}: $(tail -n 1 {log})"
    fi
    i=$((i + 1))
    [ $i -lt 300 ] || fail "virtiofs: virtiofsd did not create {socket} within 30 s"
    sleep 0.1
done
echo "{host_info}virtiofsd pid=$vfs_pid sandbox={sandbox} socket={socket} shared_dir={share}"
mkdir -p {ro_dir}
mount -t tmpfs -o size=1m tmpfs {ro_dir} || fail "virtiofs: cannot mount a tmpfs on {ro_dir}"
head -c 16 /dev/urandom | sha256sum | cut -c1-32 > {ro_dir}/{ro_file}
echo "{host_ro}before token=$(cat {ro_dir}/{ro_file}) files=$(ls -A {ro_dir} | wc -l)"
rm -f {ro_socket}
{virtiofsd} --socket-path={ro_socket} --shared-dir={ro_dir} --sandbox={sandbox} --cache=auto --readonly >{ro_log} 2>&1 &
ro_pid=$!
i=0
while [ ! -S {ro_socket} ]; do
    if ! kill -0 $ro_pid 2>/dev/null; then
        sed 's/^/virtiofsd-ro: /' {ro_log}
        fail "virtiofs: the read-only virtiofsd (--readonly, --sandbox={sandbox}) exited before creating {ro_socket}: $(tail -n 1 {ro_log})"
    fi
    i=$((i + 1))
    [ $i -lt 300 ] || fail "virtiofs: the read-only virtiofsd did not create {ro_socket} within 30 s"
    sleep 0.1
done
"#,
        share = SHARE_DIR,
        in_file = IN_FILE,
        mib = plan.file_mib,
        host_in = HOST_IN_SHA,
        host_info = HOST_FS_INFO,
        virtiofsd = VIRTIOFSD,
        socket = SOCKET,
        log = VIRTIOFSD_LOG,
        ro_dir = RO_DIR,
        ro_file = RO_FILE,
        host_ro = HOST_RO,
        ro_socket = RO_SOCKET,
        ro_log = RO_LOG,
    );
    let after_vmm = format!(
        r#"kill $ro_pid 2>/dev/null
sed 's/^/virtiofsd-ro: /' {ro_log}
i=0
while kill -0 $vfs_pid 2>/dev/null && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
if kill -0 $vfs_pid 2>/dev/null; then
    echo "{host_info}virtiofsd still running 5 s after the VMM exited; killing it"
    kill $vfs_pid
fi
sed 's/^/virtiofsd: /' {log}
if [ -f {share}/{out_file} ]; then
    sum=$(sha256sum {share}/{out_file})
    echo "{host_out}${{sum%% *}} bytes=$(stat -c %s {share}/{out_file})"
else
    echo "{host_out}missing"
fi
echo "{host_ro}after token=$(cat {ro_dir}/{ro_file} 2>/dev/null) files=$(ls -A {ro_dir} | wc -l)"
"#,
        share = SHARE_DIR,
        out_file = OUT_FILE,
        host_out = HOST_OUT_SHA,
        host_info = HOST_FS_INFO,
        log = VIRTIOFSD_LOG,
        ro_dir = RO_DIR,
        ro_file = RO_FILE,
        host_ro = HOST_RO,
        ro_log = RO_LOG,
    );
    HostHooks { before_vmm, after_vmm, rayos_env }
}

/// A timed transfer reported by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes: u64,
}

impl Transfer {
    /// Elapsed seconds, never less than `resolution_s`.
    pub fn seconds(&self, resolution_s: f64) -> f64 {
        (self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9).max(resolution_s)
    }
}

/// A file checksum reported by the test host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub sha256: String,
    pub bytes: u64,
}

/// One recognised virtio-fs line of the serial stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    Step(String),
    /// `<step>: <what>`
    Error(String),
    Clock(String),
    Pci(String),
    Read(Transfer),
    ReadSha(String),
    Write(Transfer),
    WriteSha(String),
    Done,
    HostIn(HostFile),
    /// `None`: the guest's file was not in the share.
    HostOut(Option<HostFile>),
    HostInfo(String),
    /// The guest's report on the read-only share; `None`: it had no such device.
    Ro(Option<RoReport>),
    /// The test host's view of the read-only share, before and after the VMM.
    HostRo {
        after: bool,
        view: RoHostView,
    },
}

/// What the guest saw on the read-only share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoReport {
    pub token: String,
    pub refused: u32,
    pub tried: u32,
    pub files: u32,
    /// The last refusal's message, e.g. "Read-only file system".
    pub error: String,
}

/// The read-only folder as the test host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoHostView {
    pub token: String,
    pub files: u32,
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// The value of `key=` among whitespace-separated words.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn sha256_word(text: &str) -> Option<String> {
    let w = text.split_whitespace().next()?;
    (w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit())).then(|| w.to_ascii_lowercase())
}

fn transfer(text: &str) -> Option<Transfer> {
    Some(Transfer {
        start_ns: field(text, "start_ns")?.parse().ok()?,
        end_ns: field(text, "end_ns")?.parse().ok()?,
        bytes: field(text, "bytes")?.parse().ok()?,
    })
}

fn host_file(text: &str) -> Option<HostFile> {
    Some(HostFile { sha256: sha256_word(text)?, bytes: field(text, "bytes")?.parse().ok()? })
}

/// Recognises the virtio-fs marker (if any) in one serial line. Diagnostic
/// lines are not events. Markers are found anywhere in the line, as in
/// [`crate::serial::parse_line`].
pub fn parse_line(line: &str) -> Option<FsEvent> {
    if line.contains(FS_DIAG) || line.contains(FS_IRQ) {
        return None;
    }
    // Longer markers sharing a prefix first.
    if let Some(rest) = after(line, FS_READ_SHA) {
        return sha256_word(rest).map(FsEvent::ReadSha);
    }
    if let Some(rest) = after(line, FS_WRITE_SHA) {
        return sha256_word(rest).map(FsEvent::WriteSha);
    }
    if let Some(rest) = after(line, FS_READ) {
        return transfer(rest).map(FsEvent::Read);
    }
    if let Some(rest) = after(line, FS_WRITE) {
        return transfer(rest).map(FsEvent::Write);
    }
    if let Some(rest) = after(line, HOST_IN_SHA) {
        return host_file(rest).map(FsEvent::HostIn);
    }
    if let Some(rest) = after(line, HOST_OUT_SHA) {
        if rest.trim_start().starts_with("missing") {
            return Some(FsEvent::HostOut(None));
        }
        return host_file(rest).map(|f| FsEvent::HostOut(Some(f)));
    }
    if let Some(rest) = after(line, HOST_RO) {
        let after = match rest.split_whitespace().next()? {
            "before" => false,
            "after" => true,
            _ => return None,
        };
        let view = RoHostView {
            token: field(rest, "token").unwrap_or_default().to_string(),
            files: field(rest, "files")?.parse().ok()?,
        };
        return Some(FsEvent::HostRo { after, view });
    }
    if let Some(rest) = after(line, FS_RO) {
        if rest.trim_start().starts_with("absent") {
            return Some(FsEvent::Ro(None));
        }
        return Some(FsEvent::Ro(Some(RoReport {
            token: field(rest, "token")?.to_string(),
            refused: field(rest, "refused")?.parse().ok()?,
            tried: field(rest, "tried")?.parse().ok()?,
            files: field(rest, "files")?.parse().ok()?,
            error: rest.find("error=").map(|i| rest[i + 6..].trim().to_string()).unwrap_or_default(),
        })));
    }
    if let Some(rest) = after(line, FS_ERROR) {
        return Some(FsEvent::Error(rest.trim().to_string()));
    }
    if let Some(rest) = after(line, FS_STEP) {
        return rest.split_whitespace().next().map(|s| FsEvent::Step(s.into()));
    }
    if let Some(rest) = after(line, FS_CLOCK) {
        return rest.split_whitespace().next().map(|s| FsEvent::Clock(s.into()));
    }
    if let Some(rest) = after(line, FS_PCI) {
        return rest.split_whitespace().next().map(|s| FsEvent::Pci(s.into()));
    }
    if let Some(rest) = after(line, HOST_FS_INFO) {
        return Some(FsEvent::HostInfo(rest.trim().to_string()));
    }
    if line.contains(FS_DONE) {
        return Some(FsEvent::Done);
    }
    None
}

/// Everything learnt about the virtio-fs part of one run. The first
/// occurrence of a marker wins (except the step, which tracks progress).
#[derive(Debug, Default, Clone)]
pub struct FsObservation {
    pub step: Option<String>,
    pub error: Option<String>,
    pub clock: Option<String>,
    pub pci: Option<String>,
    pub read: Option<Transfer>,
    pub read_sha: Option<String>,
    pub write: Option<Transfer>,
    pub write_sha: Option<String>,
    pub done: bool,
    pub host_in: Option<HostFile>,
    pub host_out: Option<Option<HostFile>>,
    pub host_info: Vec<String>,
    pub ro: Option<Option<RoReport>>,
    pub host_ro_before: Option<RoHostView>,
    pub host_ro_after: Option<RoHostView>,
}

/// Figures of a passing run.
#[derive(Debug, Clone, PartialEq)]
pub struct FsFigures {
    pub read_s: f64,
    pub write_s: f64,
    pub read_mib_s: f64,
    pub write_mib_s: f64,
    pub clock: String,
    pub pci: Option<String>,
    /// Writes the read-only share refused (all of them), when it was checked.
    pub readonly_refused: Option<u32>,
}

impl FsObservation {
    pub fn observe(&mut self, line: &str) {
        let Some(event) = parse_line(line) else {
            return;
        };
        match event {
            FsEvent::Step(s) => self.step = Some(s),
            FsEvent::Error(e) => {
                self.error.get_or_insert(e);
            }
            FsEvent::Clock(c) => {
                self.clock.get_or_insert(c);
            }
            FsEvent::Pci(p) => {
                self.pci.get_or_insert(p);
            }
            FsEvent::Read(t) => {
                self.read.get_or_insert(t);
            }
            FsEvent::ReadSha(s) => {
                self.read_sha.get_or_insert(s);
            }
            FsEvent::Write(t) => {
                self.write.get_or_insert(t);
            }
            FsEvent::WriteSha(s) => {
                self.write_sha.get_or_insert(s);
            }
            FsEvent::Done => self.done = true,
            FsEvent::HostIn(f) => {
                self.host_in.get_or_insert(f);
            }
            FsEvent::HostOut(f) => {
                self.host_out.get_or_insert(f);
            }
            FsEvent::HostInfo(s) => self.host_info.push(s),
            FsEvent::Ro(r) => {
                self.ro.get_or_insert(r);
            }
            FsEvent::HostRo { after: false, view } => {
                self.host_ro_before.get_or_insert(view);
            }
            FsEvent::HostRo { after: true, view } => {
                self.host_ro_after.get_or_insert(view);
            }
        }
    }

    fn last_step(&self) -> String {
        match &self.step {
            Some(s) => format!("last guest step: {s}"),
            None => "the guest announced no step".into(),
        }
    }

    /// Checks data integrity and computes the throughput; the error names
    /// the first problem.
    pub fn evaluate(&self, expected_bytes: u64) -> Result<FsFigures, String> {
        if let Some(e) = &self.error {
            return Err(format!("guest {e}"));
        }
        let host_in =
            self.host_in.as_ref().ok_or("the test host never created the input file (no RAYOS-FS-HOST-IN-SHA256)")?;
        if host_in.bytes != expected_bytes {
            return Err(format!("the test host's input file has {} bytes, expected {expected_bytes}", host_in.bytes));
        }
        let clock = self.clock.clone().unwrap_or_else(|| "uptime".into());
        let resolution = if clock == "timer_list" { 1e-9 } else { 0.01 };
        let read = self.read.ok_or_else(|| format!("the guest never reported the read ({})", self.last_step()))?;
        if read.bytes != expected_bytes {
            return Err(format!("the guest read {} bytes, expected {expected_bytes}", read.bytes));
        }
        let read_sha = self
            .read_sha
            .as_deref()
            .ok_or_else(|| format!("the guest never reported the read data's SHA-256 ({})", self.last_step()))?;
        if read_sha != host_in.sha256 {
            return Err(format!(
                "read data differs: the guest read SHA-256 {read_sha}, the test host wrote {}",
                host_in.sha256
            ));
        }
        let write_sha = self.write_sha.as_deref().ok_or_else(|| {
            format!("the guest never reported the SHA-256 of the data to write ({})", self.last_step())
        })?;
        let write = self.write.ok_or_else(|| format!("the guest never reported the write ({})", self.last_step()))?;
        if write.bytes != expected_bytes {
            return Err(format!("the guest wrote {} bytes, expected {expected_bytes}", write.bytes));
        }
        if !self.done {
            return Err(format!("the guest never finished (no RAYOS-FS-DONE; {})", self.last_step()));
        }
        let host_out = match &self.host_out {
            None => return Err("the test host never checked the written file (no RAYOS-FS-HOST-OUT-SHA256)".into()),
            Some(None) => return Err(format!("{OUT_FILE} is not in the test host's {SHARE_DIR} after the VMM exited")),
            Some(Some(f)) => f,
        };
        if host_out.bytes != expected_bytes {
            return Err(format!(
                "{SHARE_DIR}/{OUT_FILE} has {} bytes in the test host, the guest wrote {expected_bytes}",
                host_out.bytes
            ));
        }
        if host_out.sha256 != write_sha {
            return Err(format!(
                "written data differs: the guest wrote SHA-256 {write_sha}, the test host has {}",
                host_out.sha256
            ));
        }
        let mib = expected_bytes as f64 / 1048576.0;
        let (read_s, write_s) = (read.seconds(resolution), write.seconds(resolution));
        Ok(FsFigures {
            read_s,
            write_s,
            read_mib_s: mib / read_s,
            write_mib_s: mib / write_s,
            clock,
            pci: self.pci.clone(),
            readonly_refused: None,
        })
    }

    /// Checks the read-only share: the guest read the host's token, every
    /// write was refused, and the host's folder is unchanged. Returns the
    /// number of refused writes.
    pub fn evaluate_readonly(&self) -> Result<u32, String> {
        let before = self
            .host_ro_before
            .as_ref()
            .ok_or("the test host never prepared the read-only share (no RAYOS-FS-HOST-RO before)")?;
        let r = match &self.ro {
            None => return Err(format!("the guest never reported on the read-only share ({})", self.last_step())),
            Some(None) => return Err(format!("the guest has no second virtio-fs device: the read-only share {RO_TAG} (--fs, socket {RO_SOCKET}) is missing")),
            Some(Some(r)) => r,
        };
        if r.token != before.token {
            return Err(format!(
                "the guest read {:?} from {RO_TAG}/{RO_FILE}, the test host wrote {:?}",
                r.token, before.token
            ));
        }
        if r.refused != r.tried || r.tried != RO_WRITES {
            return Err(format!(
                "the read-only share refused {} of {} writes (expected all {RO_WRITES})",
                r.refused, r.tried
            ));
        }
        if r.files != before.files {
            return Err(format!("the guest sees {} entries in {RO_TAG}, the test host put {}", r.files, before.files));
        }
        match &self.host_ro_after {
            None => {
                Err("the test host never checked the read-only share after the VMM (no RAYOS-FS-HOST-RO after)".into())
            }
            Some(after) if after != before => {
                Err(format!("{RO_DIR} changed in the test host: before {before:?}, after {after:?}"))
            }
            Some(_) => Ok(r.refused),
        }
    }
}

/// Evaluates one run: the test host's own failure first, then a virtio-fs
/// error the guest reported, then the boot itself (guest reached /init), then
/// the virtio-fs figures, then the rest of the boot (uname, nproc, VMM exit
/// status). Context (VMM exit status, kernel panic) is added to virtio-fs
/// failures.
pub fn evaluate_run(
    boot: &BootObservation,
    fs: &FsObservation,
    expect: &Expectation,
    expected_bytes: u64,
    readonly: bool,
) -> Result<(BootFigures, FsFigures), String> {
    if let Some(reason) = &boot.host_fail {
        return Err(format!("test host failed: {reason}"));
    }
    let context = || {
        let mut c = String::new();
        if let Some((_, status)) = boot.vmm_exit.filter(|(_, s)| *s != 0) {
            c.push_str(&format!("; VMM exit status {status}"));
        }
        if let Some(p) = boot.panics.first() {
            c.push_str(&format!("; kernel panic: {p}"));
        }
        c
    };
    if let Some(e) = &fs.error {
        return Err(format!("guest {e}{}", context()));
    }
    if boot.guest_init.is_none() {
        return Err(boot
            .evaluate(expect)
            .err()
            .unwrap_or_else(|| "guest never reached /init (no RAYOS-GUEST-INIT)".into()));
    }
    let mut figures = fs.evaluate(expected_bytes).map_err(|e| format!("{e}{}", context()))?;
    if readonly {
        figures.readonly_refused = Some(fs.evaluate_readonly().map_err(|e| format!("{e}{}", context()))?);
    }
    let boot_figures = boot.evaluate(expect)?;
    Ok((boot_figures, figures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const MIB64: u64 = 64 << 20;

    fn plan() -> FsPlan {
        FsPlan { file_mib: 64, step_timeout: Duration::from_secs(300), sandbox: Sandbox::Chroot }
    }

    #[test]
    fn markers_parse() {
        assert_eq!(parse_line("RAYOS-FS-STEP mount"), Some(FsEvent::Step("mount".into())));
        assert_eq!(
            parse_line("[  3.2] virtio: x RAYOS-FS-ERROR mount: mount -t virtiofs rayos /mnt failed: No such device"),
            Some(FsEvent::Error("mount: mount -t virtiofs rayos /mnt failed: No such device".into()))
        );
        assert_eq!(
            parse_line("RAYOS-FS-READ start_ns=1000 end_ns=2000000000 bytes=67108864\r"),
            Some(FsEvent::Read(Transfer { start_ns: 1000, end_ns: 2_000_000_000, bytes: MIB64 }))
        );
        assert_eq!(
            parse_line("RAYOS-FS-WRITE start_ns=5 end_ns=7 bytes=1"),
            Some(FsEvent::Write(Transfer { start_ns: 5, end_ns: 7, bytes: 1 }))
        );
        assert_eq!(parse_line("RAYOS-FS-READ start_ns= end_ns=2 bytes=1"), None);
        assert_eq!(parse_line(&format!("RAYOS-FS-READ-SHA256 {}", A.to_uppercase())), Some(FsEvent::ReadSha(A.into())));
        assert_eq!(parse_line(&format!("RAYOS-FS-WRITE-SHA256 {B}")), Some(FsEvent::WriteSha(B.into())));
        assert_eq!(parse_line("RAYOS-FS-WRITE-SHA256 abc"), None);
        assert_eq!(
            parse_line(&format!("RAYOS-FS-HOST-IN-SHA256 {A} bytes=67108864")),
            Some(FsEvent::HostIn(HostFile { sha256: A.into(), bytes: MIB64 }))
        );
        assert_eq!(parse_line("RAYOS-FS-HOST-OUT-SHA256 missing"), Some(FsEvent::HostOut(None)));
        assert_eq!(
            parse_line(&format!("RAYOS-FS-HOST-OUT-SHA256 {B} bytes=3")),
            Some(FsEvent::HostOut(Some(HostFile { sha256: B.into(), bytes: 3 })))
        );
        assert_eq!(
            parse_line("RAYOS-FS-HOST virtiofsd pid=42 sandbox=chroot"),
            Some(FsEvent::HostInfo("virtiofsd pid=42 sandbox=chroot".into()))
        );
        assert_eq!(parse_line("RAYOS-FS-CLOCK timer_list"), Some(FsEvent::Clock("timer_list".into())));
        assert_eq!(parse_line("RAYOS-FS-PCI 0000:00:01.0"), Some(FsEvent::Pci("0000:00:01.0".into())));
        assert_eq!(parse_line("RAYOS-FS-DONE"), Some(FsEvent::Done));
        // Diagnostics may quote anything, markers included.
        assert_eq!(parse_line("RAYOS-FS-DIAG dmesg RAYOS-FS-ERROR x"), None);
        assert_eq!(parse_line("RAYOS-FS-IRQ  24: 10 PCI-MSI virtio0-requests"), None);
        // vmm-boot's parser does not mistake these for its own markers.
        assert_eq!(crate::serial::parse_line("RAYOS-FS-HOST virtiofsd pid=1"), None);
        assert_eq!(crate::serial::parse_line("RAYOS-FS-STEP read"), None);
    }

    fn good_run() -> (BootObservation, FsObservation) {
        let mut boot = BootObservation::default();
        let mut fs = FsObservation::default();
        let lines = [
            (1.0, "RAYOS-HOST-INIT".to_string()),
            (1.5, format!("RAYOS-FS-HOST-IN-SHA256 {A} bytes=67108864")),
            (1.6, "RAYOS-FS-HOST virtiofsd pid=42 sandbox=chroot".into()),
            (2.0, "RAYOS-VMM-START".into()),
            (5.0, "RAYOS-GUEST-INIT".into()),
            (5.1, "RAYOS-GUEST uname=6.1.0-56-amd64 nproc=2".into()),
            (5.2, "RAYOS-FS-CLOCK timer_list".into()),
            (5.3, "RAYOS-FS-STEP read".into()),
            (6.0, "RAYOS-FS-READ start_ns=1000000000 end_ns=1500000000 bytes=67108864".into()),
            (6.5, format!("RAYOS-FS-READ-SHA256 {A}")),
            (7.0, format!("RAYOS-FS-WRITE-SHA256 {B}")),
            (8.0, "RAYOS-FS-WRITE start_ns=3000000000 end_ns=5000000000 bytes=67108864".into()),
            (8.1, "RAYOS-FS-STEP umount".into()),
            (8.2, "RAYOS-FS-DONE".into()),
            (8.3, "RAYOS-GUEST-OK".into()),
            (9.0, format!("RAYOS-FS-HOST-OUT-SHA256 {B} bytes=67108864")),
            (9.1, "RAYOS-VMM-EXIT status=0".into()),
        ];
        for (t, l) in lines {
            boot.observe(Duration::from_secs_f64(t), &l);
            fs.observe(&l);
        }
        (boot, fs)
    }

    fn expect() -> Expectation {
        Expectation { uname: "6.1.0-56-amd64".into(), nproc: 2 }
    }

    #[test]
    fn good_run_yields_throughput() {
        let (boot, fs) = good_run();
        let (b, f) = evaluate_run(&boot, &fs, &expect(), MIB64, false).unwrap();
        assert!((b.guest_init.as_secs_f64() - 3.0).abs() < 1e-9);
        assert!((f.read_s - 0.5).abs() < 1e-9);
        assert!((f.read_mib_s - 128.0).abs() < 1e-9);
        assert!((f.write_mib_s - 32.0).abs() < 1e-9);
        assert_eq!(f.clock, "timer_list");
        assert_eq!(fs.host_info, ["virtiofsd pid=42 sandbox=chroot"]);
    }

    #[test]
    fn read_only_share_is_checked_for_rayos() {
        let (boot, mut fs) = good_run();
        // Without the read-only share's markers a rayos-vmm run fails, a QEMU run passes.
        let err = evaluate_run(&boot, &fs, &expect(), MIB64, true).unwrap_err();
        assert!(err.contains("read-only share"), "{err}");
        assert!(evaluate_run(&boot, &fs, &expect(), MIB64, false).is_ok());

        let before = "RAYOS-FS-HOST-RO before token=0123abcd files=1";
        let guest = "RAYOS-FS-RO token=0123abcd refused=4 tried=4 files=1 error=sh: can't create /mnt-ro/new.txt: Read-only file system";
        let after = "RAYOS-FS-HOST-RO after token=0123abcd files=1";
        for l in [before, guest, after] {
            fs.observe(l);
        }
        assert_eq!(
            fs.ro,
            Some(Some(RoReport {
                token: "0123abcd".into(),
                refused: 4,
                tried: 4,
                files: 1,
                error: "sh: can't create /mnt-ro/new.txt: Read-only file system".into()
            }))
        );
        let (_, f) = evaluate_run(&boot, &fs, &expect(), MIB64, true).unwrap();
        assert_eq!(f.readonly_refused, Some(4));

        let with = |lines: &[&str]| {
            let (_, mut fs) = good_run();
            for l in lines {
                fs.observe(l);
            }
            fs.evaluate_readonly().unwrap_err()
        };
        assert!(with(&[before, "RAYOS-FS-RO absent", after]).contains("no second virtio-fs device"));
        assert!(with(&[before, "RAYOS-FS-RO token=0123abcd refused=3 tried=4 files=1 error=x", after])
            .contains("refused 3 of 4"));
        assert!(with(&[before, "RAYOS-FS-RO token=ffff refused=4 tried=4 files=1 error=x", after]).contains("\"ffff\""));
        assert!(with(&[before, guest, "RAYOS-FS-HOST-RO after token=0123abcd files=2"])
            .contains("changed in the test host"));
        assert!(with(&[before, guest]).contains("never checked"));
        assert!(with(&[guest, after]).contains("never prepared"));
        // The host's marker is not the guest's.
        assert!(matches!(parse_line(before), Some(FsEvent::HostRo { after: false, .. })));
    }

    #[test]
    fn coarse_clock_never_divides_by_zero() {
        let t = Transfer { start_ns: 5, end_ns: 5, bytes: 1 };
        assert_eq!(t.seconds(0.01), 0.01);
        let backwards = Transfer { start_ns: 9, end_ns: 5, bytes: 1 };
        assert_eq!(backwards.seconds(1e-9), 1e-9);
    }

    #[test]
    fn failures_name_the_problem() {
        let e = expect();
        // Corrupt read.
        let (boot, mut fs) = good_run();
        fs.read_sha = Some(B.into());
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err();
        assert!(err.starts_with("read data differs"), "{err}");

        // Corrupt write.
        let (boot, mut fs) = good_run();
        fs.host_out = Some(Some(HostFile { sha256: A.into(), bytes: MIB64 }));
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err();
        assert!(err.starts_with("written data differs"), "{err}");

        // Missing output file.
        let (boot, mut fs) = good_run();
        fs.host_out = Some(None);
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err();
        assert!(err.contains("out.bin is not in"), "{err}");

        // Guest-reported error wins over everything but a test host failure,
        // with the VMM's exit status as context.
        let (mut boot, mut fs) = good_run();
        fs.observe("RAYOS-FS-ERROR mount: mount -t virtiofs rayos /mnt failed: ENODEV");
        boot.vmm_exit = Some((Duration::from_secs(9), 1));
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err();
        assert_eq!(err, "guest mount: mount -t virtiofs rayos /mnt failed: ENODEV; VMM exit status 1");
        boot.observe(Duration::from_secs(1), "RAYOS-HOST-FAIL virtiofs: virtiofsd exited");
        assert!(evaluate_run(&boot, &fs, &e, MIB64, false)
            .unwrap_err()
            .starts_with("test host failed: virtiofs: virtiofsd exited"));

        // A run that stops mid-way names the last step.
        let mut boot = BootObservation::default();
        let mut fs = FsObservation::default();
        for l in [
            "RAYOS-HOST-INIT".to_string(),
            format!("RAYOS-FS-HOST-IN-SHA256 {A} bytes=67108864"),
            "RAYOS-VMM-START".into(),
            "RAYOS-GUEST-INIT".into(),
            "RAYOS-FS-STEP mount".into(),
            "RAYOS-VMM-EXIT status=4".into(),
        ] {
            boot.observe(Duration::ZERO, &l);
            fs.observe(&l);
        }
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err();
        assert_eq!(err, "the guest never reported the read (last guest step: mount); VMM exit status 4");

        // No guest at all: the boot's own reason.
        let mut boot = BootObservation::default();
        boot.observe(Duration::ZERO, "RAYOS-HOST-INIT");
        boot.observe(Duration::ZERO, "RAYOS-VMM-START");
        let err = evaluate_run(&boot, &FsObservation::default(), &e, MIB64, false).unwrap_err();
        assert!(err.contains("no RAYOS-GUEST-INIT"), "{err}");

        // Wrong size.
        let (boot, fs) = good_run();
        assert!(evaluate_run(&boot, &fs, &e, 1 << 20, false).unwrap_err().contains("expected 1048576"));
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
        let order = crate::kmod::load_order(GUEST_MODULE_ROOTS, |m| Ok(deps[m].clone())).unwrap();
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
            std::fs::write(dir.join(format!("{m}.ko")), crate::kmod::test_support::tiny_elf(modinfo.as_bytes()))
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

    /// `sh -n` parses a script without running it.
    fn assert_sh_parses(script: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "sh -n: {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn scripts_are_valid_shell() {
        assert_sh_parses(&guest_init_script(&plan()));
        let guest = crate::testhost::GuestSpec {
            memory_mib: 512,
            cpus: 2,
            cmdline: "console=ttyS0".into(),
            fs: Some(plan().share()),
            rayos_args: plan().rayos_args(),
        };
        let hooks = host_hooks(&plan(), vec![("RUST_LOG".into(), "rayos_vmm=debug".into())]);
        assert_sh_parses(&crate::testhost::host_init_script(&guest, "q35", false, &hooks));
    }

    #[test]
    fn host_hooks_serve_the_share() {
        let h = host_hooks(&plan(), vec![("RUST_LOG".into(), "rayos_vmm=debug".into())]);
        assert!(h
            .before_vmm
            .contains("/usr/bin/virtiofsd --socket-path=/run/vfs.sock --shared-dir=/srv/share --sandbox=chroot"));
        assert!(h.before_vmm.contains("dd if=/dev/urandom of=/srv/share/in.bin bs=1M count=64 iflag=fullblock"));
        assert!(h.before_vmm.contains("mount -t tmpfs -o size=144m tmpfs /srv/share"));
        assert!(h.before_vmm.contains("while [ ! -S /run/vfs.sock ]"));
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
                "while [ ! -S /run/vfs-ro.sock ]",
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
