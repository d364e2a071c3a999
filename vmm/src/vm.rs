//! Building and running a virtual machine from a [`VmConfig`].
//!
//! Order matters and follows what KVM expects: VM, guest RAM slots (on a
//! thread of their own: the first slot is slow), and meanwhile TSS and
//! identity-map addresses, in-kernel irqchip (PIC + IOAPIC + local APICs) and
//! PIT, then guest memory contents (kernel, initramfs, command line,
//! page tables, GDT, ACPI, zero page), devices and their irqfds, and last the
//! vCPUs (CPUID before anything else on each vCPU, because KVM derives the
//! vCPU's model from it). The main thread then waits for the first
//! [`VmEvent`], stops every vCPU, and reports the outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vmm_sys_util::signal::Killable;

use crate::acpi;
use crate::arch::{cpuid, regs};
use crate::boot;
use crate::cli::GpuDisplay;
use crate::cli::{SerialMode, VmConfig};
use crate::devices::power::PowerDevice;
use crate::devices::serial::{ConsoleOut, SerialDevice};
use crate::devices::{Bus, BusDevice, PanicWatch, VmEvent};
use crate::interrupt::MsiRouter;
use crate::layout::*;
use crate::memory::GuestRam;
use crate::metrics;
use crate::pci::{BarAllocator, PciConfigIo, PciEcam, PciRoot, PCI_CONFIG_IO_LEN, PCI_CONFIG_IO_PORT};
use crate::terminal;
use crate::vcpu::{self, Vcpu};
use crate::virtio::gpu::presenter::{presenter_config, GuestInput};
use crate::virtio::gpu::{DisplayHandle, Gpu, GpuDevice, NullScanout, Scanout, DEFAULT_RESOURCE_CAP};
use crate::virtio::input::device::{KEYBOARD_PACE, POINTER_PACE};
use crate::virtio::input::{InputDevice, InputDeviceModel};
use crate::virtio::transport::{self, pci::VirtioPciDevice};
use crate::virtio::vhost_user::VhostUserDevice;
use rayos_presenter::Presenter;

/// Errors building or running the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you allowed to use it?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM lacks a capability RayOS needs: {0}")]
    MissingCap(&'static str),
    #[error("KVM: {what}: {source}")]
    Kvm { what: &'static str, source: kvm_ioctls::Error },
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Cpuid(#[from] cpuid::CpuidError),
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    #[error(transparent)]
    Serial(#[from] crate::devices::serial::SerialError),
    #[error(transparent)]
    Bus(#[from] crate::devices::BusError),
    #[error("--serial file:{path}: {source}")]
    SerialFile { path: String, source: std::io::Error },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(String),
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    VhostUser(#[from] crate::virtio::vhost_user::VhostUserError),
    #[error("virtio-pci: {0}")]
    Transport(#[from] crate::virtio::transport::pci::TransportError),
    #[error("PCI: {0}")]
    Pci(#[from] crate::pci::PciBusError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Poweroff,
    Reboot,
    Panic(Option<String>),
    TripleFault {
        vcpu: u8,
    },
    /// Stopped by a signal (its number) or the console escape (0).
    Stopped(i32),
}

impl Outcome {
    /// The VMM's exit status for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Poweroff | Outcome::Reboot => 0,
            Outcome::Panic(_) => 3,
            Outcome::TripleFault { .. } => 4,
            Outcome::Stopped(0) => 0,
            Outcome::Stopped(sig) => 128 + sig,
        }
    }

    /// A short name, used in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Poweroff => "poweroff",
            Outcome::Reboot => "reboot",
            Outcome::Panic(_) => "panic",
            Outcome::TripleFault { .. } => "triple-fault",
            Outcome::Stopped(_) => "stopped",
        }
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Poweroff => "guest powered off".into(),
            Outcome::Reboot => "guest rebooted; the VM ends (rayos-vmm does not restart guests)".into(),
            Outcome::Panic(Some(line)) => format!("guest kernel panic: {line}"),
            Outcome::Panic(None) => "guest kernel panic".into(),
            Outcome::TripleFault { vcpu } => format!("guest triple fault on vCPU {vcpu}: the guest CPU reset itself"),
            Outcome::Stopped(0) => "VM stopped from the console (Ctrl-A x)".into(),
            Outcome::Stopped(sig) => format!("VM stopped by signal {sig}"),
        }
    }
}

/// Classifies the first event, using the console's panic line: a kernel
/// booted with `panic=-1` resets after a panic, which looks like a reboot.
pub fn classify(event: VmEvent, panic_line: Option<String>) -> Result<Outcome, VmError> {
    Ok(match event {
        VmEvent::Poweroff => Outcome::Poweroff,
        VmEvent::Reboot if panic_line.is_some() => Outcome::Panic(panic_line),
        VmEvent::Reboot => Outcome::Reboot,
        VmEvent::Panic(line) => Outcome::Panic(line.or(panic_line)),
        VmEvent::TripleFault { .. } if panic_line.is_some() => Outcome::Panic(panic_line),
        VmEvent::TripleFault { vcpu } => Outcome::TripleFault { vcpu },
        VmEvent::Stop(sig) => Outcome::Stopped(sig),
        VmEvent::Error(e) => return Err(VmError::Runtime(e)),
        VmEvent::Report => return Err(VmError::Runtime("a state report does not end the VM".into())),
    })
}

fn check_caps(kvm: &Kvm) -> Result<(), VmError> {
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCap(name));
        }
    }
    Ok(())
}

fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    kvm.create_vm().map_err(kvm_err("create VM"))
}

/// TSS and identity-map addresses, in-kernel irqchip and PIT (before any vCPU).
fn setup_vm(kvm: &Kvm, vm: &VmFd) -> Result<(), VmError> {
    vm.set_tss_address(KVM_TSS_ADDRESS as usize).map_err(kvm_err("set TSS address"))?;
    if kvm.check_extension(Cap::SetIdentityMapAddr) {
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS).map_err(kvm_err("set identity map address"))?;
    }
    vm.create_irq_chip().map_err(kvm_err("create in-kernel irqchip"))?;
    let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
    vm.create_pit2(pit).map_err(kvm_err("create in-kernel PIT"))?;
    Ok(())
}

/// Loads everything the guest boots into its memory; returns the entry point.
fn load_guest(ram: &GuestRam, config: &VmConfig) -> Result<boot::KernelEntry, VmError> {
    let mem = &ram.memory;
    let kernel = boot::load_kernel(mem, &config.kernel, config.kernel_format)?;
    tracing::debug!("kernel loaded, entry {:#x}, end {:#x}", kernel.entry.0, kernel.kernel_end);
    let cmdline_len = boot::load_cmdline(mem, &config.cmdline, &kernel)?;
    let initramfs = match &config.initramfs {
        Some(p) => Some(boot::load_initramfs(mem, p, ram.low_end().0, &kernel)?),
        None => None,
    };
    regs::write_page_tables(mem)?;
    regs::write_gdt_idt(mem)?;
    regs::write_reset_stub(mem)?;
    let tables = acpi::build_tables(config.cpus)?;
    tables.write(mem)?;
    boot::configure_boot_params(mem, ram.size, kernel.header, cmdline_len, initramfs, tables.rsdp())?;
    Ok(kernel)
}

struct Devices {
    pio: Bus,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<SerialDevice>>,
    /// The virtio-gpu display, with `--gpu`.
    gpu: Option<DisplayHandle<Box<dyn Scanout + Send>>>,
    /// Every virtio-pci function, for state reports.
    virtio: Vec<Arc<Mutex<VirtioPciDevice>>>,
}

fn create_devices(
    vm: &Arc<VmFd>,
    ram: &GuestRam,
    config: &VmConfig,
    events: Sender<VmEvent>,
    panic: PanicWatch,
) -> Result<Devices, VmError> {
    let out = match &config.serial {
        SerialMode::Stdio => ConsoleOut::Stdout,
        SerialMode::None => ConsoleOut::Sink,
        SerialMode::File(p) => ConsoleOut::File(
            crate::devices::serial::log::ConsoleLog::open(p)
                .map_err(|source| VmError::SerialFile { path: p.display().to_string(), source })?,
        ),
    };
    let (serial, irq) = SerialDevice::new(out, panic.clone())?;
    vm.register_irqfd(&irq, SERIAL_IRQ).map_err(kvm_err("register serial irqfd"))?;
    // The irqfd stays registered for the VM's lifetime; KVM holds its own reference.
    std::mem::forget(irq);
    let serial = Arc::new(Mutex::new(serial));

    let pio = Bus::new();
    pio.insert(SERIAL_PORT_BASE as u64, SERIAL_PORT_LEN as u64, serial.clone() as Arc<Mutex<dyn BusDevice>>)?;
    let power: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(PowerDevice::new(events, panic)));
    for (port, len) in PowerDevice::ports() {
        pio.insert(port as u64, len as u64, power.clone())?;
    }

    let mmio = Arc::new(Bus::new());
    let mut root = PciRoot::new(mmio.clone());
    let router = Arc::new(MsiRouter::new(vm.clone()));
    let mut bars = BarAllocator::new(PCI_MMIO32_START, PCI_ECAM_START);
    let mut virtio = Vec::new();
    let mut add = |root: &mut PciRoot, pci: VirtioPciDevice| -> Result<u8, VmError> {
        let pci = Arc::new(Mutex::new(pci));
        virtio.push(pci.clone());
        Ok(root.add(pci)?)
    };
    for spec in &config.vhost_user {
        let device = VhostUserDevice::connect(
            &spec.name,
            &spec.socket,
            spec.device_type,
            spec.queue_sizes.clone(),
            spec.config.clone(),
            ram,
        )?;
        let bar = bars.allocate(transport::pci::BAR_SIZE)?;
        let pci = VirtioPciDevice::new(&spec.name, Box::new(device), ram.memory.clone(), router.clone(), bar)?;
        let slot = add(&mut root, pci)?;
        tracing::info!("{}: virtio-pci device type {} at 00:{slot:02x}.0, BAR {bar:#x}", spec.name, spec.device_type);
    }
    let gpu = match &config.gpu {
        Some(spec) => {
            // Its keyboard and tablet first: the presenter feeds them.
            let mut handles = Vec::new();
            for (name, model, pace) in [
                ("keyboard0", InputDevice::keyboard(), KEYBOARD_PACE),
                ("tablet0", InputDevice::tablet(), POINTER_PACE),
            ] {
                let device =
                    InputDeviceModel::new(model).map_err(|e| VmError::Runtime(format!("{name}: {e}")))?.with_pace(pace);
                handles.push(device.handle());
                let bar = bars.allocate(transport::pci::BAR_SIZE)?;
                let pci = VirtioPciDevice::new(name, Box::new(device), ram.memory.clone(), router.clone(), bar)?;
                let slot = add(&mut root, pci)?;
                tracing::info!("{name}: virtio-input at 00:{slot:02x}.0, BAR {bar:#x}");
            }
            let (scanout, input, shown): (Box<dyn Scanout + Send>, _, _) = match &spec.display {
                GpuDisplay::Headless => (Box::new(NullScanout), None, "headless".to_string()),
                GpuDisplay::Wayland(socket) => {
                    let input = Arc::new(GuestInput::new(handles[0].clone(), handles[1].clone()));
                    let presenter = Presenter::spawn(presenter_config(socket), Box::new(input.clone()))
                        .map_err(|e| VmError::Runtime(format!("gpu0: cannot start the presenter: {e}")))?;
                    (Box::new(presenter), Some(input), format!("shown on {}", socket.display()))
                }
            };
            let device = GpuDevice::new(Gpu::new(spec.width, spec.height, DEFAULT_RESOURCE_CAP, scanout));
            let display = device.display();
            if let Some(input) = input {
                let d = display.clone();
                input.set_resize(Box::new(move |w, h| d.resize(w, h)));
            }
            let bar = bars.allocate(transport::pci::BAR_SIZE)?;
            let pci = VirtioPciDevice::new("gpu0", Box::new(device), ram.memory.clone(), router.clone(), bar)?;
            let slot = add(&mut root, pci)?;
            tracing::info!(
                "gpu0: virtio-gpu {}x{} ({shown}) at 00:{slot:02x}.0, BAR {bar:#x}",
                spec.width,
                spec.height
            );
            Some(display)
        }
        None => None,
    };
    let root = Arc::new(root);
    pio.insert(
        PCI_CONFIG_IO_PORT as u64,
        PCI_CONFIG_IO_LEN as u64,
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
    )?;
    mmio.insert(PCI_ECAM_START, PCI_ECAM_SIZE, Arc::new(Mutex::new(PciEcam::new(root))))?;
    Ok(Devices { pio, mmio, serial, gpu, virtio })
}

fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    config: &VmConfig,
    entry: vm_memory::GuestAddress,
) -> Result<Vec<kvm_ioctls::VcpuFd>, VmError> {
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(kvm_err("get supported CPUID"))?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    let mut tsc_khz = None;
    let mut vcpus = Vec::with_capacity(config.cpus as usize);
    for id in 0..config.cpus {
        let fd = vm.create_vcpu(id as u64).map_err(kvm_err("create vCPU"))?;
        if id == 0 {
            tsc_khz = fd.get_tsc_khz().ok().filter(|k| *k > 0);
        }
        let table = cpuid::vcpu_cpuid(
            &supported,
            cpuid::CpuidParams { vcpu_id: id, cpu_count: config.cpus, tsc_khz, tsc_deadline },
        )?;
        fd.set_cpuid2(&table).map_err(kvm_err("set CPUID"))?;
        regs::setup_msrs(&fd)?;
        regs::setup_fpu(&fd)?;
        regs::setup_lapic(&fd)?;
        if id == 0 {
            regs::setup_boot_vcpu(&fd, entry)?;
        }
        vcpus.push(fd);
    }
    if let Some(k) = tsc_khz {
        tracing::debug!("guest TSC frequency {k} kHz");
    }
    Ok(vcpus)
}

/// SIGINT and SIGTERM stop the VM; SIGUSR1 asks for a state report.
fn forward_signals(events: Sender<VmEvent>) -> Result<(), VmError> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(|e| VmError::Signals(e.to_string()))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    let _ = events.send(VmEvent::Report);
                    continue;
                }
                let _ = events.send(VmEvent::Stop(sig));
                return;
            }
        })
        .map_err(VmError::Thread)?;
    Ok(())
}

/// Logs where every virtio queue stands and has each vCPU log its
/// registers (kicked out of KVM_RUN to do so): what a hung guest was
/// waiting for.
fn state_report(virtio: &[Arc<Mutex<VirtioPciDevice>>], report: &AtomicU64, threads: &[JoinHandle<()>]) {
    tracing::info!("state report (SIGUSR1)");
    for d in virtio {
        tracing::info!("state report: {}", d.lock().expect("virtio-pci lock").report());
    }
    report.fetch_add(1, Ordering::AcqRel);
    for t in threads {
        let _ = t.kill(vcpu::kick_signal());
    }
}

fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for t in threads {
        while !t.is_finished() {
            let _ = t.kill(vcpu::kick_signal());
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = t.join();
    }
}

/// Builds the VM, runs it to the end, and reports how it ended.
pub fn run(config: &VmConfig) -> Result<Outcome, VmError> {
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    check_caps(&kvm)?;
    let vm = Arc::new(create_vm(&kvm)?);
    let ram = GuestRam::new(config.memory)?;
    let (tx, rx) = channel();
    let panic = PanicWatch::default();

    // Guest RAM is registered before the in-kernel irqchip exists. Creating
    // the irqchip registers devices on KVM's I/O bus, and every memory slot
    // added after that waits for a full SRCU grace period of the VM (measured
    // 5-12 ms on the CI host, whatever the slot's size); registered first,
    // the slot takes well under a millisecond and the irqchip and PIT that
    // follow stay as cheap.
    ram.register(&vm).map_err(kvm_err("register guest RAM"))?;
    setup_vm(&kvm, &vm)?;
    let kernel = load_guest(&ram, config)?;
    let devices = create_devices(&vm, &ram, config, tx.clone(), panic.clone())?;
    let vcpu_fds = create_vcpus(&kvm, &vm, config, kernel.entry)?;

    vcpu::install_kick_handler().map_err(|e| VmError::Signals(e.to_string()))?;
    forward_signals(tx.clone())?;
    let _raw = match config.serial {
        SerialMode::Stdio => {
            let raw = terminal::RawMode::enter();
            terminal::spawn_console_input(devices.serial.clone(), tx.clone(), raw.is_some())
                .map_err(VmError::Thread)?;
            raw
        }
        _ => None,
    };

    let gpu = devices.gpu;
    let pio = Arc::new(devices.pio);
    let mmio = devices.mmio.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let first_run_ns = Arc::new(AtomicU64::new(0));
    let report = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for (id, fd) in vcpu_fds.into_iter().enumerate() {
        let v = Vcpu {
            id: id as u8,
            fd,
            pio: pio.clone(),
            mmio: mmio.clone(),
            events: tx.clone(),
            stop: stop.clone(),
            first_run_ns: first_run_ns.clone(),
            report: report.clone(),
            mem: ram.memory.clone(),
        };
        let t =
            std::thread::Builder::new().name(format!("vcpu{id}")).spawn(move || v.run()).map_err(VmError::Thread)?;
        threads.push(t);
    }
    tracing::info!(
        "started {} vCPU(s), {} MiB RAM, kernel {}",
        config.cpus,
        config.memory >> 20,
        config.kernel.display()
    );

    let event = loop {
        match rx.recv().map_err(|_| VmError::Runtime("event channel closed".into()))? {
            VmEvent::Report => state_report(&devices.virtio, &report, &threads),
            event => break event,
        }
    };
    stop_vcpus(&stop, threads);
    let panic_line = panic.lock().expect("panic watch lock").clone();
    let outcome = classify(event, panic_line);

    if let Some(path) = &config.metrics {
        let name = outcome.as_ref().map(|o| o.name()).unwrap_or("error");
        if let Err(e) = metrics::write(
            path,
            first_run_ns.load(Ordering::Relaxed),
            metrics::memory_use(),
            name,
            config.memory,
            gpu.as_ref().map(DisplayHandle::metrics),
        ) {
            tracing::warn!("cannot write metrics to {}: {e}", path.display());
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_outcome() {
        assert_eq!(Outcome::Poweroff.exit_code(), 0);
        assert_eq!(Outcome::Reboot.exit_code(), 0);
        assert_eq!(Outcome::Panic(None).exit_code(), 3);
        assert_eq!(Outcome::TripleFault { vcpu: 0 }.exit_code(), 4);
        assert_eq!(Outcome::Stopped(libc::SIGINT).exit_code(), 130);
        assert_eq!(Outcome::Stopped(libc::SIGTERM).exit_code(), 143);
        assert_eq!(Outcome::Stopped(0).exit_code(), 0);
    }

    #[test]
    fn a_reset_after_a_console_panic_is_a_panic() {
        let line = Some("Kernel panic - not syncing: boom".to_string());
        assert_eq!(classify(VmEvent::Reboot, line.clone()).unwrap(), Outcome::Panic(line.clone()));
        assert_eq!(classify(VmEvent::TripleFault { vcpu: 1 }, line.clone()).unwrap(), Outcome::Panic(line.clone()));
        assert_eq!(classify(VmEvent::Reboot, None).unwrap(), Outcome::Reboot);
        assert_eq!(classify(VmEvent::Panic(None), line.clone()).unwrap(), Outcome::Panic(line));
        assert!(classify(VmEvent::Error("x".into()), None).is_err());
    }
}
