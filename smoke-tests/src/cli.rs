//! Command-line interface of `rayos-smoke`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::qemu::AccelRequest;
use crate::scenarios::vmm_virtiofs::Sandbox;
use crate::testhost::{Vmm, DEFAULT_QEMU_MACHINE};

/// RayOS end-to-end smoke scenarios.
///
/// Each scenario prints its figures and ends with one line:
/// `PASS <scenario> <figures>` (exit 0), `FAIL <scenario>: <reason>` (exit 1)
/// or `SKIP <scenario>: <reason>` (exit 77: cannot run on this machine).
/// Logs go to stderr (`RUST_LOG` or `--log` set the filter); results to stdout.
#[derive(Debug, Parser)]
#[command(name = "rayos-smoke", version, about, long_about)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), overrides RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Tier 3, nested: boot a Debian kernel + busybox guest with the VMM inside a
    /// test host running in QEMU with nested KVM; report the time from VMM start
    /// to the guest's /init.
    ///
    /// Downloads linux-image-amd64's kernel and busybox-static with apt (cached),
    /// builds the guest and test-host initramfs images, picks the outer QEMU
    /// accelerator by what works (TCG `-cpu max` on kvm_pvm), and streams the
    /// serial console to a log in the run directory.
    #[command(name = "vmm-boot")]
    VmmBoot(VmmBootArgs),

    /// Tier 3, nested, manual: the nested crash census. Boots the vmm-boot
    /// guest --boots times with each VMM (alternating) inside one test host
    /// and prints how each boot ended (ok, panic, triple fault, KVM internal
    /// error, hang) per VMM. Run it again with RAYOS_OUTER_TCG=single to run
    /// the outer QEMU's TCG on one thread and compare the rates.
    #[command(name = "nested-census")]
    NestedCensus(CensusArgs),

    /// Tier 3, nested: virtio-fs throughput and integrity. The test host serves
    /// a tmpfs holding a 64 MiB random file with virtiofsd over vhost-user; the
    /// VMM gives the guest a virtio-fs device (rayos-vmm `--fs`, QEMU
    /// `vhost-user-fs-pci` with memfd-backed RAM). The guest loads virtio_pci
    /// and virtiofs (with their dependencies, by insmod), mounts the tag,
    /// reads the file and writes 64 MiB of its own back (timed with `sync`).
    ///
    /// Passes when the guest read what the host wrote and the host finds what
    /// the guest wrote (SHA-256 both ways). Reports read_mib_s and
    /// write_mib_s (64 MiB over the guest's monotonic-clock seconds); with
    /// `--vmm both` also a `compare` line, and the PASS figures are rayos-vmm's.
    /// A failing step is named (module load, PCI, probe, mount, read, write,
    /// umount) and the guest prints its PCI/virtio devices, /proc/interrupts
    /// and kernel log (`RAYOS-FS-DIAG`) to the serial log in the run directory.
    /// Needs virtiofsd (scripts/setup.sh builds it into
    /// <cache>/tools/bin/virtiofsd).
    #[command(name = "vmm-virtiofs")]
    VmmVirtiofs(VmmVirtiofsArgs),

    /// Interactive: the vmm-boot test host, but the guest starts a busybox shell
    /// on the console and your terminal is attached to it (through the outer
    /// QEMU and the VMM). Ctrl-A x quits the VMM; `exit` powers the guest off.
    Console(ConsoleArgs),

    /// Tier 3, nested: `console` driven by a pseudo-terminal instead of a
    /// person. Types `echo rayos-$((6*7))` into the guest's busybox shell one
    /// key at a time (each key must come back as the shell's echo, through
    /// the outer QEMU's serial port, the test host's ttyS0, rayos-vmm's raw
    /// stdin and 16550), checks the output, the kernel release and vCPU
    /// count, interrupts a `sleep` with Ctrl-C (the guest's job gets it, not
    /// the VMM), powers the guest off with `poweroff -f` (rayos-vmm must exit
    /// 0) and checks the test host's terminal is back in canonical mode with
    /// echo.
    ///
    /// Prints `PASS vmm-console echo_ms_p50=<ms> ctrl_c_ms=<ms> vmm_exit=0`;
    /// the whole session is in the run directory (console-transcript.log).
    #[command(name = "vmm-console")]
    VmmConsole(VmmConsoleArgs),

    /// Tier 1: start rayos-vmm on this machine's /dev/kvm with a tiny ELF guest
    /// (vmm/tests/guests/hello.S) N times; report the median time from spawn to
    /// the first KVM_RUN and the VMM's own resident memory.
    ///
    /// Targets: start_to_first_run_ms <= 10 and rss_overhead_kib <= 8192.
    /// Without a usable /dev/kvm it prints SKIP and exits 77.
    #[command(name = "vmm-startup")]
    VmmStartup(VmmStartupArgs),

    /// Tier 1: the host service (`rayos host`) without a guest: bad policy
    /// files refused with one line naming file, key and value; the control
    /// socket private (0600 in a 0700 folder); `rayos vm list`; GET /v1/vms
    /// latency (`rayos api-bench`, target p50 ≤ 2 ms) and the service's RSS
    /// (target ≤ 30 MiB); SIGTERM stops it and removes its socket.
    ///
    /// Prints `PASS host-api api_p50_ms=<ms> api_p99_ms=<ms> rss_kib=<KiB> bad_policies=<n>/<n>`.
    HostApi(crate::scenarios::host_api::HostApiArgs),

    /// Tier 2: the guest image, agent and vsock backend on QEMU. Builds (or
    /// refreshes) the Debian trixie guest image, serves its root file system
    /// with virtiofsd and its vsock with rayos-vsock, boots it in QEMU (TCG
    /// where KVM cannot run Linux), then as the host: handshake, list the
    /// catalog (foot.desktop and weston-terminal.desktop in it), launch `sh -c 'id -un; exit 3'`
    /// and check it ran as user rayos and exited 3, send a malformed and an
    /// oversize frame (typed errors, agent still serves), resolve "I need a
    /// terminal" with `rayos intent --guest --launch` over the live catalog
    /// (the local model must be installed: `rayos models install`), power the
    /// guest off.
    ///
    /// Prints `PASS agent boot_to_agent_s=<s> launch_rtt_ms=<ms>`. Needs root
    /// (the image build runs mmdebstrap; virtiofsd exports a root tree).
    Agent(AgentArgs),

    /// Tier 2: guest apps as native RayOS windows. The guest image boots in
    /// QEMU as for `agent`, with a shared folder; rayos-compositor runs
    /// headless here with the VM registered; the VM's bridge (`rayos
    /// bridge`: waypipe's host end, the guest image's own build) feeds the
    /// VM's compositor socket. `rayos launch "open a terminal"` starts foot in
    /// the guest through the bridge: its window must appear labelled with the
    /// VM and show client pixels; a command typed into it through the
    /// compositor writes a file in the shared folder that the host reads;
    /// weston-simple-shm launched by name keeps animating (its frame rate is
    /// compared with the same client run directly on the host compositor);
    /// closing foot's window ends foot (the agent reports `exited`).
    ///
    /// Prints `PASS native intent_to_first_pixel_ms=<ms> windows=2
    /// typed_file_ok=1 close_ok=1 guest_fps=<fps> host_fps=<fps> ...`.
    /// Needs root (image build, virtiofsd), QEMU, weston (for the host
    /// comparison) and the intent model (`rayos models install`).
    Native(NativeArgs),

    /// Interactive (the README's main job): the RayOS desktop session here.
    /// The compositor in a window of your desktop session (or headless), the
    /// Linux guest in QEMU with a shared folder, the VM's native-window
    /// bridge, and a `rayos>` prompt: type a request in words ("open a
    /// terminal") or an app name and the app shows as its own window labelled
    /// `linux`; `apps`, `windows`, `type TEXT`, `screenshot FILE`, `help`,
    /// `poweroff`. Reads standard input, so it can be scripted; end of input
    /// powers the guest off.
    Session(SessionArgs),

    /// Tier 1: the RayOS compositor on its headless backend with real
    /// clients: weston-simple-shm and foot on the host socket, weston-simple-shm
    /// on a registered VM's socket. Checks the window list (app_id, title,
    /// origin), screenshots the output and each window into the run directory
    /// (client pixels, origin colour and label in each decoration), types a
    /// command into foot that creates a file, unregisters the VM (its window
    /// closes), and lets the scene idle.
    ///
    /// Prints `PASS compositor frame_ms_p50=<ms> idle_repaints=<n>` (must be 0).
    /// Needs the Debian packages weston and foot (scripts/setup.sh).
    Compositor(CompositorArgs),

    /// Tier 1 benchmark: a 1920x1080 headless output with 4 weston-simple-shm
    /// windows. Prints the steady repaint time while they draw, a full repaint
    /// and a 256x256 damaged region of the same scene (and their ratio), the
    /// repaints of the scene with its clients stopped (must be 0), and the
    /// same clients on weston's headless backend with pixman for comparison.
    #[command(name = "compositor-bench")]
    CompositorBench(CompositorBenchArgs),

    /// Tier 1 benchmark, no VM: rayos-vmm's virtio-gpu TRANSFER_TO_HOST_2D on
    /// full 1280x800 frames from guest memory (one contiguous run, and 4 KiB
    /// pages in reverse order), beside a memcpy of the same size in the same
    /// run; fails under half of memcpy. Also prints the bytes a 64x64 flush
    /// hands the scanout.
    #[command(name = "gpu-bench")]
    GpuBench(GpuBenchArgs),

    /// Tier 3: the RayOS compositor on a real kernel DRM/KMS device in QEMU.
    ///
    /// Boots a test host (the Debian kernel with bochs, evdev and virtio
    /// input modules, systemd-udevd, the compositor and weston-simple-shm) in
    /// QEMU with `-display none`, a bochs-display and a virtio tablet. The
    /// test host runs `rayos-compositor --backend drm` and the client; this
    /// side captures the scanout with QMP `screendump` (background, the
    /// decorated 250x250 window, the client animating between two captures)
    /// and clicks the decoration's close button with QMP `input-send-event`
    /// (the window must disappear). Captures and the serial log stay in the
    /// run directory.
    ///
    /// Prints `PASS compositor-drm mode=<w>x<h> first_frame_s=<s> window_pixels=<n>`;
    /// `first_frame_s` runs from the compositor's start to the first capture
    /// showing the window. SKIP (77) only when QEMU is missing.
    #[command(name = "compositor-drm")]
    CompositorDrm(CompositorDrmArgs),

    /// Tier 3, nested: the mission's smoke test. Builds the RayOS host image
    /// (`rayos image host`), boots it in QEMU (bochs display, virtio keyboard
    /// and tablet, the host volume as a virtio disk; TCG `-cpu max` here for
    /// nested SVM) with `rayos init` as PID 1, and works as a user: the
    /// compositor's first frame (QMP screendump), the guest's agent under
    /// rayos-vmm, "open a terminal" at the `rayos>` prompt on the serial
    /// console, the terminal's window framed in the VM's colour on the
    /// screen, a line typed into it with QMP input-send-event that writes a
    /// file into the shared folder (read back at the prompt), `poweroff`
    /// (VMs stopped cleanly, QEMU exits 0), then a second boot of the same
    /// volume (no first-boot setup, the file still there).
    ///
    /// Prints `PASS host-e2e host_boot_s=<s> rayos_init_s=<s> first_frame_s=<s>
    /// guest_agent_s=<s> intent_to_window_s=<s> ... typed_file_ok=1
    /// second_boot_ok=1 total_s=<s>`. Captures and serial logs stay in the
    /// run directory. SKIP only when QEMU is missing.
    #[command(name = "host-e2e")]
    HostE2e(HostE2eArgs),

    /// The README's main job: build the RayOS host image and boot it in QEMU
    /// for a person. The serial console is this terminal (the `rayos>`
    /// prompt: "open a terminal", `apps`, `windows`, `vms`, `shared`,
    /// `screenshot FILE`, `poweroff`; Ctrl-A then x stops QEMU). The display
    /// is a QEMU window when a desktop session is present, else VNC on
    /// 127.0.0.1 (its address is printed). The host volume persists in
    /// <target>/rayos-host between runs (--fresh-volume starts over).
    #[command(name = "host")]
    Host(HostBootArgs),

    /// Tier 3, nested: the RayOS guest image under rayos-vmm. The agent and
    /// native scenarios' guest stack with our VMM in place of QEMU, inside the
    /// nested test host (QEMU TCG `-cpu max,la57=off` here, nested KVM).
    ///
    /// The outer host exports the guest image and an output folder to the
    /// test host over virtio-fs. In the test host: virtiofsd serves the
    /// image's root, rayos-vsock its vsock, and rayos-vmm boots the image's
    /// kernel and initramfs (`--fs tag=rootfs`, `--vhost-user virtio-id=19`).
    /// Then, with the `rayos` CLI in the test host: the agent answers `rayos
    /// guest ping` (boot_to_agent_s), the catalog lists foot.desktop, `rayos
    /// guest launch --wait --command -- sh -c 'exit 3'` returns 3;
    /// rayos-compositor runs headless with VM `linux` registered, `rayos
    /// bridge` listens, `rayos launch weston-simple-shm` (by name) opens a
    /// window whose origin is `linux` and that has drawn (its screenshot is
    /// checked here: origin colour, label, client pixels) and leaves the
    /// window list when closed through the control API; with the intent
    /// model installed here (`rayos models install`; it is copied into the
    /// test host), `rayos launch "open a terminal"` opens a terminal window
    /// the same way; `rayos guest shutdown` ends the guest and rayos-vmm
    /// must exit 0. Each step's time is printed.
    ///
    /// Prints `PASS vmm-native boot_to_agent_s=<s> catalog_ok=1 exit3_ok=1
    /// native_window=1 ... words_launched=<app> ...` (`words=not-checked`
    /// without the model). Not checked here (see `native`): typing, shared
    /// folders, clipboard, frame rates, the app's exit on close. Needs root (image
    /// build), QEMU, mke2fs and virtiofsd (scripts/setup.sh).
    #[command(name = "vmm-native")]
    VmmNative(VmmNativeArgs),
    /// The RayOS host service owns the guest (tier 3, nested): inside the
    /// test host, `rayos host` boots the guest image under rayos-vmm with
    /// virtiofsd, rayos-vsock and the bridge under a policy file; through
    /// its CLI: `rayos apps` lists foot, a command line returns its exit
    /// status, launches are timed, an app the policy leaves out is refused,
    /// `rayos launch "open a terminal"` (with the intent model) opens a
    /// labelled terminal window, rayos-vsock is killed and the service
    /// restarts the VM, `rayos vm stop` powers the guest off leaving nothing
    /// behind, SIGTERM stops the service; then QEMU boots the same image with
    /// the same backends for comparison.
    ///
    /// Prints `PASS vmm-agent boot_to_agent_s=<rayos-vmm> qemu_boot_to_agent_s=<qemu>
    /// launch_rtt_ms=<p50> api_p50_ms=<GET /v1/vms p50> ...`. Takes the
    /// options of vmm-native.
    #[command(name = "vmm-agent")]
    VmmAgent(VmmNativeArgs),
    /// The embedded desktop end to end (tier 3, nested): inside the test
    /// host, rayos-compositor runs headless with VM `linux` registered and
    /// rayos-vmm boots the guest image with `--gpu wayland=<the VM's desktop
    /// socket>`; the guest agent starts weston on the virtio-gpu; the VM's
    /// one embedded-desktop window shows weston's desktop (screenshot
    /// checked here: the VM's decoration and label, weston's pixels); a click
    /// through the control API on weston's panel starts weston-terminal in
    /// the guest, text typed through the control API writes a file the test
    /// host reads; a resize through the control API changes the guest's
    /// display mode. Screenshots stay in the run directory.
    ///
    /// Prints `PASS vmm-desktop flush_to_present_ms_p50=<ms> input_ok=1
    /// resize_ok=1 transfer_mib_s=<MiB/s> memcpy_mib_s=<MiB/s> ...`. Takes
    /// the options of vmm-native (--no-native and --gpu are implied).
    #[command(name = "vmm-desktop")]
    VmmDesktop(VmmNativeArgs),
}

#[derive(Debug, Args)]
pub struct VmmNativeArgs {
    /// rayos-vmm binary [default: <workspace>/target/release/rayos-vmm].
    #[arg(long, value_name = "PATH")]
    pub vmm_bin: Option<PathBuf>,
    /// rayos host binary (`rayos guest`, `bridge`, `launch` in the test host)
    /// [default: <workspace>/target/release/rayos].
    #[arg(long, value_name = "PATH")]
    pub rayos: Option<PathBuf>,
    /// rayos-compositor binary [default: <workspace>/target/release/rayos-compositor].
    #[arg(long, value_name = "PATH")]
    pub compositor: Option<PathBuf>,
    #[command(flatten)]
    pub guest: ImageArgs,
    /// Stop after the command-channel checks: no compositor, bridge or window.
    #[arg(long)]
    pub no_native: bool,
    /// vmm-native only: give the guest rayos-vmm's virtio-gpu
    /// (`--gpu headless`) and check from the VMM's metrics that the guest's
    /// virtio_gpu driver set a 1280x800 scanout and nothing it sent was
    /// refused. Not in CI yet: see the README's Test tiers.
    #[arg(long)]
    pub gpu: bool,
    /// QEMU binary for the outer VM.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Outer QEMU accelerator; auto = KVM only if it works and can nest, else TCG.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
    /// Give up (and kill QEMU) after this long per boot of the test host (a
    /// passing boot takes 1 to 2 minutes here, vmm-agent's 3 to 5; in-place
    /// guest retries add to that).
    #[arg(long, value_name = "DURATION", default_value = "9m", value_parser = crate::stats::parse_duration)]
    pub timeout: Duration,
    /// How long the guest may take from rayos-vmm's start to the agent's
    /// answer (17 to 37 s measured here).
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = crate::stats::parse_duration)]
    pub boot_timeout: Duration,
    /// How long a guest app's window may take to appear and draw.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = crate::stats::parse_duration)]
    pub window_timeout: Duration,
    /// Test host memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 3072, value_parser = clap::value_parser!(u32).range(1024..=16384))]
    pub host_memory_mib: u32,
    /// Guest memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=8192))]
    pub guest_memory_mib: u32,
    /// Guest vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub guest_cpus: u32,
    /// RUST_LOG for rayos-vmm inside the test host (its log is in <run dir>/out).
    #[arg(long, value_name = "FILTER")]
    pub vmm_log: Option<String>,
    /// Record the test host's KVM trace events while rayos-vmm runs and print
    /// the last of them to the serial log when it fails (as for vmm-boot).
    #[arg(long)]
    pub kvm_trace: bool,
    /// Run directory [default: <target>/smoke/<scenario>-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Keep the test host initramfs in the run directory after a pass.
    #[arg(long)]
    pub keep_images: bool,
    /// Package cache [default: $RAYOS_CACHE_DIR, else ~/.cache/rayos].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Debian meta package whose kernel the test host runs.
    #[arg(long, value_name = "PACKAGE", default_value = "linux-image-amd64")]
    pub kernel_meta: String,
}

#[derive(Debug, Args)]
pub struct CompositorDrmArgs {
    /// rayos-compositor binary [default: <workspace>/target/release/rayos-compositor].
    #[arg(long, value_name = "PATH")]
    pub compositor: Option<PathBuf>,
    /// The Wayland client shown (Debian package weston).
    #[arg(long, value_name = "PATH", default_value = "weston-simple-shm")]
    pub client: String,
    /// QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Accelerator: auto picks KVM only when this machine's KVM can run Linux.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
    /// Resolution of the display device (its preferred mode), WxH.
    #[arg(long, default_value = "1280x800")]
    pub size: String,
    /// Test host memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=16384))]
    pub memory_mib: u32,
    /// Test host vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// Give up (and kill QEMU) after this long in all.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::stats::parse_duration)]
    pub timeout: Duration,
    /// How long the compositor may take to create its socket, and then to
    /// show the decorated window.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = crate::stats::parse_duration)]
    pub frame_timeout: Duration,
    /// How long the window may take to disappear after the click.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::stats::parse_duration)]
    pub close_timeout: Duration,
    /// RUST_LOG for the compositor inside the test host (its log goes to the serial log).
    #[arg(long, value_name = "FILTER")]
    pub compositor_log: Option<String>,
    /// Run directory [default: <target>/smoke/compositor-drm-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Keep the test host initramfs in the run directory after a pass.
    #[arg(long)]
    pub keep_images: bool,
    /// Package cache [default: $RAYOS_CACHE_DIR, else ~/.cache/rayos].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Debian meta package whose kernel and modules the test host runs.
    #[arg(long, value_name = "PACKAGE", default_value = "linux-image-amd64")]
    pub kernel_meta: String,
}

#[derive(Debug, Args)]
pub struct HostE2eArgs {
    /// The rayos binary that builds the host image (and is its /init)
    /// [default: <workspace>/target/release/rayos; rayos-vmm, rayos-vsock and
    /// rayos-compositor are taken from beside it].
    #[arg(long, value_name = "PATH")]
    pub rayos: Option<PathBuf>,
    /// Guest image folder [default: <target>/guest-image, built when missing].
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Accelerator: auto picks KVM only when this machine's KVM can run a nested hypervisor.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
    /// Host machine memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 3072, value_parser = clap::value_parser!(u32).range(1024..=65536))]
    pub memory_mib: u32,
    /// Host machine vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// Longest wait for each boot stage (first frame, services, the guest's agent, poweroff).
    #[arg(long, value_name = "DURATION", default_value = "8m", value_parser = crate::stats::parse_duration)]
    pub boot_timeout: Duration,
    /// Longest wait from the request to its window on the screen.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = crate::stats::parse_duration)]
    pub window_timeout: Duration,
    /// Run directory [default: <target>/smoke/host-e2e-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Keep the host image's initrd and volume in the run directory after a pass.
    #[arg(long)]
    pub keep_images: bool,
}

/// Where the RayOS display goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DisplayMode {
    /// A window when WAYLAND_DISPLAY or DISPLAY is set, else VNC.
    Auto,
    /// A QEMU window (gtk).
    Window,
    /// VNC on 127.0.0.1:5900 + N.
    Vnc,
    /// No display (the compositor still runs on the virtual card; `screenshot FILE` shows it).
    None,
}

#[derive(Debug, Args)]
pub struct HostBootArgs {
    /// The rayos binary [default: <workspace>/target/release/rayos].
    #[arg(long, value_name = "PATH")]
    pub rayos: Option<PathBuf>,
    /// Guest image folder [default: <target>/guest-image, built when missing].
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// The host image folder [default: <target>/rayos-host].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Make a new, empty host volume (first boot again) instead of keeping the existing one.
    #[arg(long)]
    pub fresh_volume: bool,
    /// QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Accelerator: auto picks KVM only when this machine's KVM can run a nested hypervisor.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
    /// Where the display goes.
    #[arg(long, value_enum, default_value_t = DisplayMode::Auto)]
    pub display: DisplayMode,
    /// VNC display number (port 5900 + N) with --display vnc.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub vnc: u16,
    /// Host machine memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 3072, value_parser = clap::value_parser!(u32).range(1024..=65536))]
    pub memory_mib: u32,
    /// Host machine vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
}

#[derive(Debug, Args)]
pub struct CompositorArgs {
    /// rayos-compositor binary [default: <workspace>/target/release/rayos-compositor].
    #[arg(long, value_name = "PATH")]
    pub compositor: Option<PathBuf>,
    /// Headless output size, WxH.
    #[arg(long, default_value = "1280x800")]
    pub size: String,
    /// How long the scene idles while repaints are counted.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::stats::parse_duration)]
    pub idle: Duration,
    /// Run directory [default: <target>/smoke/compositor-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompositorBenchArgs {
    /// rayos-compositor binary [default: <workspace>/target/release/rayos-compositor].
    #[arg(long, value_name = "PATH")]
    pub compositor: Option<PathBuf>,
    /// Frames rendered for the full and the damaged repaint (medians reported).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub frames: u32,
    /// How long the clients draw while steady repaints are measured.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = crate::stats::parse_duration)]
    pub measure: Duration,
    /// Do not run the weston comparison.
    #[arg(long)]
    pub no_weston: bool,
    /// Run directory [default: <target>/smoke/compositor-bench-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// The real guest and the backends it needs, shared by every scenario that
/// boots it (`agent`, `native`, `session`, `vmm-native`, `vmm-agent`).
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Guest image directory (built or refreshed there)
    /// [default: <workspace>/target/guest-image].
    #[arg(long, value_name = "DIR")]
    pub image: Option<PathBuf>,
    /// rayos-guest-agent binary to put in the image
    /// [default: <workspace>/target/release/rayos-guest-agent].
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// rayos-vsock backend [default: <workspace>/target/release/rayos-vsock].
    #[arg(long, value_name = "PATH")]
    pub vsock_backend: Option<PathBuf>,
    /// virtiofsd (the nested scenarios run it outside and inside the test
    /// host) [default: <cache dir>/tools/bin/virtiofsd].
    #[arg(long, value_name = "PATH")]
    pub virtiofsd: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GpuBenchArgs {
    /// Full frames each measurement copies.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub frames: u32,
}

/// The tier 2 guest (image, backends, QEMU), shared by `agent` and `native`.
#[derive(Debug, Args)]
pub struct GuestArgs {
    #[command(flatten)]
    pub guest: ImageArgs,
    /// QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// Accelerator: auto picks KVM only when this machine's KVM can run Linux.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=16384))]
    pub memory_mib: u32,
    /// How long the guest may take from QEMU's start to the agent's answer.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::stats::parse_duration)]
    pub boot_timeout: Duration,
    /// Run directory [default: <target>/smoke/<scenario>-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// rayos host binary, for `rayos intent --guest` [default: <workspace>/target/release/rayos].
    #[arg(long, value_name = "PATH")]
    pub rayos: Option<PathBuf>,
    /// Launches timed for launch_rtt_ms (the median is reported).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub launches: u32,
}

#[derive(Debug, Args)]
pub struct NativeArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// rayos host binary, for `rayos launch` [default: <workspace>/target/release/rayos].
    #[arg(long, value_name = "PATH")]
    pub rayos: Option<PathBuf>,
    /// rayos-compositor binary [default: <workspace>/target/release/rayos-compositor].
    #[arg(long, value_name = "PATH")]
    pub compositor: Option<PathBuf>,
    /// waypipe for the host end [default: the guest image's, through its own loader].
    #[arg(long, value_name = "PATH")]
    pub waypipe: Option<PathBuf>,
    /// How long weston-simple-shm's frames are counted, in the guest and on the host.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::stats::parse_duration)]
    pub measure: Duration,
    /// How long a guest window may take to appear (TCG is slow).
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = crate::stats::parse_duration)]
    pub window_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
    /// rayos host binary [default: <workspace>/target/release/rayos].
    #[arg(long, value_name = "PATH")]
    pub rayos: Option<PathBuf>,
    /// rayos-compositor binary [default: <workspace>/target/release/rayos-compositor].
    #[arg(long, value_name = "PATH")]
    pub compositor: Option<PathBuf>,
    /// The RayOS display's size, WxH.
    #[arg(long, default_value = "1280x800")]
    pub size: String,
    /// Headless even when a desktop session (WAYLAND_DISPLAY or DISPLAY) is there.
    #[arg(long)]
    pub headless: bool,
    /// Read the prompt's lines from FILE (each is echoed) instead of standard input.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Fail unless at least N launched apps showed a window (for scripted runs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub expect_windows: usize,
}

/// `--vmm` for vmm-boot and vmm-virtiofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmmChoice {
    /// rayos-vmm.
    Rayos,
    /// Nested qemu-system-x86_64 on KVM (q35 by default), the reference.
    Qemu,
    /// rayos then qemu, same kernel/initramfs/cmdline/memory/cpus; prints a `compare` line.
    Both,
}

impl VmmChoice {
    /// How the choice reads in a report.
    pub fn label(self) -> &'static str {
        match self {
            VmmChoice::Rayos => "rayos-vmm",
            VmmChoice::Qemu => "QEMU",
            VmmChoice::Both => "rayos-vmm and QEMU",
        }
    }

    pub fn vmms(self) -> Vec<Vmm> {
        match self {
            VmmChoice::Rayos => vec![Vmm::Rayos],
            VmmChoice::Qemu => vec![Vmm::Qemu],
            VmmChoice::Both => vec![Vmm::Rayos, Vmm::Qemu],
        }
    }
}

#[derive(Debug, Args)]
pub struct VmmBootArgs {
    /// VMM(s) to boot the guest with inside the test host.
    #[arg(long, value_enum, default_value_t = VmmChoice::Rayos)]
    pub vmm: VmmChoice,

    /// Give the guest an interactive shell and attach this terminal (same as
    /// the `console` subcommand); needs a single --vmm.
    #[arg(long)]
    pub interactive: bool,

    #[command(flatten)]
    pub boot: BootOptions,
}

#[derive(Debug, Args)]
pub struct CensusArgs {
    /// VMM(s) to boot the guest with; with both they alternate.
    #[arg(long, value_enum, default_value_t = VmmChoice::Both)]
    pub vmm: VmmChoice,

    /// Boots per VMM.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub boots: u32,

    /// Stop once the last N boots of every VMM hung (each takes the full
    /// per-boot timeout); 0 never stops early.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub give_up_after: u32,

    #[command(flatten)]
    pub boot: BootOptions,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// VMM to run the guest with.
    #[arg(long, value_enum, default_value_t = Vmm::Rayos)]
    pub vmm: Vmm,

    #[command(flatten)]
    pub boot: BootOptions,
}

#[derive(Debug, Args)]
pub struct VmmConsoleArgs {
    #[command(flatten)]
    pub boot: BootOptions,
}

/// Options shared by vmm-boot, console, vmm-console and vmm-virtiofs.
#[derive(Debug, Args, Clone)]
pub struct BootOptions {
    /// rayos-vmm binary to put in the test host [default: <workspace>/target/release/rayos-vmm;
    /// build it with `cargo build --release -p rayos-vmm`].
    #[arg(long, value_name = "PATH")]
    pub vmm_bin: Option<PathBuf>,

    /// QEMU binary for the outer VM and the nested reference (copied into the
    /// test host with its libraries and firmware).
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,

    /// Give up (and kill QEMU) after this long per boot: 90s, 20m, 1h
    /// (interactive sessions have no timeout).
    #[arg(long, value_name = "DURATION", default_value = "20m", value_parser = crate::stats::parse_duration)]
    pub timeout: Duration,

    /// Outer QEMU accelerator; auto = KVM only if it works and can nest, else TCG.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,

    /// Run directory [default: <workspace>/target/smoke/<scenario>-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,

    /// Keep the initramfs images in the run directory (by default they are
    /// deleted after a passing run or a console session, kept after a failure).
    #[arg(long)]
    pub keep_images: bool,

    /// Package cache [default: $RAYOS_CACHE_DIR, else ~/.cache/rayos].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Debian meta package whose kernel is used for both the test host and the guest.
    #[arg(long, value_name = "PACKAGE", default_value = "linux-image-amd64")]
    pub kernel_meta: String,

    /// Test host memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub host_memory_mib: u32,

    /// Test host vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub host_cpus: u32,

    /// Guest memory (MiB), passed to the VMM as `--memory <n>M` / `-m <n>M`.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub guest_memory_mib: u32,

    /// Guest vCPUs; the guest must report this many with nproc.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub guest_cpus: u32,

    /// Guest kernel command line.
    #[arg(long, value_name = "CMDLINE", default_value = "console=ttyS0 quiet panic=-1")]
    pub guest_cmdline: String,

    /// Machine type of the nested QEMU reference (q35: full PC with PCIe + ACPI,
    /// the same platform class as rayos-vmm).
    #[arg(long, value_name = "TYPE", default_value = DEFAULT_QEMU_MACHINE)]
    pub qemu_machine: String,

    /// Record the test host's KVM trace events (exits, injected exceptions and
    /// interrupts, IPIs, MSR and CR writes) while the VMM runs, and print the
    /// last of them to the serial log when the VMM fails. For chasing guest
    /// crashes; tracing slows the nested boot a little.
    #[arg(long)]
    pub kvm_trace: bool,
}

#[derive(Debug, Args)]
pub struct VmmVirtiofsArgs {
    /// VMM(s) to run the guest with inside the test host.
    #[arg(long, value_enum, default_value_t = VmmChoice::Rayos)]
    pub vmm: VmmChoice,

    /// virtiofsd binary to put in the test host (with its shared libraries)
    /// [default: <cache dir>/tools/bin/virtiofsd, built by scripts/setup.sh].
    #[arg(long, value_name = "PATH")]
    pub virtiofsd: Option<PathBuf>,

    /// virtiofsd's --sandbox inside the test host. `namespace` (virtiofsd's
    /// default) cannot work there: pivot_root refuses the initramfs root.
    #[arg(long, value_enum, default_value_t = Sandbox::Chroot)]
    pub sandbox: Sandbox,

    /// Size of the file the guest reads and of the file it writes (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub file_mib: u32,

    /// The guest gives up (naming the step, with diagnostics) when one step
    /// (module load, mount, read, write, ...) takes longer than this.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::stats::parse_duration)]
    pub step_timeout: Duration,

    /// RUST_LOG for rayos-vmm inside the test host, e.g. `rayos_vmm=debug`;
    /// its log goes to the serial console, i.e. the serial log.
    #[arg(long, value_name = "FILTER")]
    pub vmm_log: Option<String>,

    #[command(flatten)]
    pub boot: BootOptions,
}

#[derive(Debug, Args)]
pub struct VmmStartupArgs {
    /// Number of VMM starts; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,

    /// rayos-vmm binary [default: <workspace>/target/release/rayos-vmm].
    #[arg(long, value_name = "PATH")]
    pub vmm_bin: Option<PathBuf>,

    /// Test guest assembly source [default: <workspace>/vmm/tests/guests/hello.S].
    #[arg(long, value_name = "PATH")]
    pub guest_src: Option<PathBuf>,

    /// Kill a single VMM run after this long: 10s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::stats::parse_duration)]
    pub run_timeout: Duration,

    /// Target for the median spawn-to-first-KVM_RUN time (ms).
    #[arg(long, value_name = "MS", default_value_t = 10.0)]
    pub max_start_ms: f64,

    /// Target for the median rss_anon_kib + rss_file_kib (KiB).
    #[arg(long, value_name = "KIB", default_value_t = 8192)]
    pub max_rss_kib: u64,

    /// Run directory [default: <workspace>/target/smoke/vmm-startup-<UTC time>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["rayos-smoke", "vmm-boot", "--vmm", "both"]).unwrap();
        let Scenario::VmmBoot(a) = cli.scenario else { panic!() };
        assert_eq!(a.vmm, VmmChoice::Both);
        assert_eq!(a.boot.timeout, Duration::from_secs(1200));
        assert_eq!(a.boot.guest_cpus, 2);
        let cli = Cli::try_parse_from(["rayos-smoke", "vmm-virtiofs"]).unwrap();
        let Scenario::VmmVirtiofs(a) = cli.scenario else { panic!() };
        assert_eq!(a.vmm, VmmChoice::Rayos);
        assert_eq!(a.sandbox, Sandbox::Chroot);
        assert_eq!(a.file_mib, 64);
        assert_eq!(a.boot.timeout, Duration::from_secs(1200));
        assert_eq!(a.step_timeout, Duration::from_secs(300));
        let cli = Cli::try_parse_from([
            "rayos-smoke",
            "vmm-virtiofs",
            "--vmm",
            "both",
            "--sandbox",
            "none",
            "--vmm-log",
            "rayos_vmm=debug",
        ])
        .unwrap();
        let Scenario::VmmVirtiofs(a) = cli.scenario else { panic!() };
        assert_eq!((a.vmm, a.sandbox), (VmmChoice::Both, Sandbox::None));
        assert_eq!(a.vmm_log.as_deref(), Some("rayos_vmm=debug"));
        assert!(Cli::try_parse_from(["rayos-smoke", "vmm-virtiofs", "--file-mib", "0"]).is_err());
        let cli = Cli::try_parse_from(["rayos-smoke", "vmm-startup", "--runs", "3"]).unwrap();
        let Scenario::VmmStartup(a) = cli.scenario else { panic!() };
        assert_eq!(a.runs, 3);
        assert!(Cli::try_parse_from(["rayos-smoke", "vmm-startup", "--runs", "0"]).is_err());
        let cli = Cli::try_parse_from(["rayos-smoke", "compositor"]).unwrap();
        let Scenario::Compositor(a) = cli.scenario else { panic!() };
        assert_eq!((a.size.as_str(), a.idle), ("1280x800", Duration::from_secs(2)));
        let cli = Cli::try_parse_from(["rayos-smoke", "compositor-bench", "--frames", "10"]).unwrap();
        let Scenario::CompositorBench(a) = cli.scenario else { panic!() };
        assert_eq!((a.frames, a.no_weston), (10, false));
        let cli = Cli::try_parse_from(["rayos-smoke", "compositor-drm"]).unwrap();
        let Scenario::CompositorDrm(a) = cli.scenario else { panic!() };
        assert_eq!((a.size.as_str(), a.memory_mib, a.timeout), ("1280x800", 1024, Duration::from_secs(600)));
        let cli = Cli::try_parse_from(["rayos-smoke", "vmm-native", "--no-native"]).unwrap();
        let Scenario::VmmNative(a) = cli.scenario else { panic!() };
        assert!(a.no_native);
        assert_eq!((a.host_memory_mib, a.guest_memory_mib, a.guest_cpus), (3072, 1024, 2));
        assert_eq!((a.timeout, a.boot_timeout), (Duration::from_secs(540), Duration::from_secs(180)));
    }
}
