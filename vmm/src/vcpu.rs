//! vCPU threads: one per vCPU, each looping on KVM_RUN and routing exits.
//!
//! A vCPU is stopped by setting the shared stop flag and kicking its thread
//! with a real-time signal: KVM_RUN returns EINTR, the loop sees the flag and
//! returns. The kick is repeated until the thread has left, so a signal that
//! lands just before KVM_RUN is entered cannot be lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::{Bus, VmEvent};

/// Signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler, so the signal interrupts KVM_RUN
/// instead of killing the process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
}

/// Reads CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Everything a vCPU thread owns.
pub struct Vcpu {
    pub id: u8,
    pub fd: VcpuFd,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub events: Sender<VmEvent>,
    pub stop: Arc<AtomicBool>,
    /// CLOCK_MONOTONIC at vCPU 0's first KVM_RUN (0 until then).
    pub first_run_ns: Arc<AtomicU64>,
    /// State reports asked for (the VMM bumps it and kicks the vCPUs); each
    /// vCPU logs its registers once per bump.
    pub report: Arc<AtomicU64>,
    /// Guest memory, read (never written) for a state report's stack words.
    pub mem: crate::memory::GuestMem,
}

impl Vcpu {
    /// Runs until the VM stops; sends what ended it (if this vCPU ended it).
    pub fn run(mut self) {
        let mut reported = 0;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let asked = self.report.load(Ordering::Acquire);
            if asked != reported {
                reported = asked;
                tracing::info!(vcpu = self.id, "state report: {}", self.state());
            }
            if self.id == 0 && self.first_run_ns.load(Ordering::Relaxed) == 0 {
                self.first_run_ns.store(monotonic_ns(), Ordering::Relaxed);
            }
            match self.fd.run() {
                Ok(exit) => {
                    if let Some(ev) = handle_exit(self.id, exit, &self.pio, &self.mmio) {
                        if matches!(ev, VmEvent::TripleFault { .. }) {
                            tracing::error!(vcpu = self.id, "triple fault; CPU state: {}", self.state());
                        }
                        if let VmEvent::Error(e) = &ev {
                            if e.contains("internal error") {
                                tracing::error!(
                                    vcpu = self.id,
                                    "KVM internal error: {}; CPU state: {}",
                                    self.internal_error(),
                                    self.state()
                                );
                            }
                        }
                        let _ = self.events.send(ev);
                        return;
                    }
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => {
                    let _ = self.events.send(VmEvent::Error(format!("vCPU {}: KVM_RUN failed: {e}", self.id)));
                    return;
                }
            }
        }
    }

    /// KVM's account of an internal-error exit: the suberror (1: an
    /// instruction it could not emulate) and its data words (for an
    /// emulation failure, newer kernels include the instruction's bytes).
    fn internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so `internal` is
        // the union member KVM filled in; every bit pattern is a valid u32/u64.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        format!("suberror {}, data {:x?}", internal.suberror, &internal.data[..n])
    }

    /// The registers that tell where a guest CPU failed (mode, code, stack,
    /// descriptor tables), for the log when it triple-faults.
    fn state(&self) -> String {
        let (Ok(r), Ok(s)) = (self.fd.get_regs(), self.fd.get_sregs()) else {
            return "unavailable".into();
        };
        if is_reset_state(r.rip, s.cs.selector, s.cs.base) {
            // KVM on AMD re-INITs the vCPU on the SHUTDOWN intercept before
            // returning to userspace, so the faulting state is already gone.
            return "already reset by KVM (AMD SVM re-initialises a vCPU on shutdown); \
                    the host's KVM trace (kvm_exit, kvm_inj_exception) shows what preceded it"
                .into();
        }
        let mp = self.fd.get_mp_state().map(|m| m.mp_state.to_string()).unwrap_or_else(|e| e.to_string());
        let lstar = crate::arch::regs::read_lstar(&self.fd);
        // In the kernel: its position and the stack's text words relative to
        // the syscall entry (placed with the guest kernel's symbol table).
        let kernel = lstar.filter(|&l| l != 0 && s.cs.selector & 3 == 0 && s.cs.l == 1);
        let place = kernel.map_or_else(String::new, |l| {
            let words = crate::arch::pagewalk::text_words(&self.mem, s.cr3, s.cr4, r.rsp, l, 64);
            let words: Vec<String> = words.iter().take(16).map(|o| signed_hex(*o)).collect();
            format!(" rip-lstar={} stack-lstar=[{}]", signed_hex(r.rip.wrapping_sub(l) as i64), words.join(","))
        });
        let lstar = lstar.map_or_else(|| "?".into(), |l| format!("{l:#x}"));
        format!(
            "rip={:#x} rsp={:#x} rflags={:#x} cs={:#x}/base={:#x}/l={} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} \
             idt={:#x}+{:#x} gdt={:#x}+{:#x} mp_state={mp} lstar={lstar}{place}",
            r.rip, r.rsp, r.rflags, s.cs.selector, s.cs.base, s.cs.l, s.cr0, s.cr2, s.cr3, s.cr4, s.efer,
            s.idt.base, s.idt.limit, s.gdt.base, s.gdt.limit
        )
    }
}

/// `-0x1a` / `+0x1a`.
fn signed_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("+{v:#x}")
    }
}

/// Whether registers are those of a vCPU just after RESET or INIT
/// (CS:IP = F000:FFF0 with CS base 0xffff0000).
fn is_reset_state(rip: u64, cs_selector: u16, cs_base: u64) -> bool {
    rip == 0xfff0 && cs_selector == 0xf000 && cs_base == 0xffff_0000
}

/// Routes one exit; returns an event when the exit ends the VM.
fn handle_exit(id: u8, exit: VcpuExit<'_>, pio: &Bus, mmio: &Bus) -> Option<VmEvent> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !pio.read(port as u64, data) {
                tracing::trace!(vcpu = id, "unclaimed port read {port:#x}");
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            if !pio.write(port as u64, data) {
                tracing::trace!(vcpu = id, "unclaimed port write {port:#x} = {data:x?}");
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            if !mmio.read(addr, data) {
                tracing::debug!(vcpu = id, "unclaimed MMIO read {addr:#x} ({} bytes)", data.len());
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !mmio.write(addr, data) {
                tracing::debug!(vcpu = id, "unclaimed MMIO write {addr:#x} = {data:x?}");
            }
            None
        }
        VcpuExit::Shutdown => Some(VmEvent::TripleFault { vcpu: id }),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => Some(VmEvent::Poweroff),
            KVM_SYSTEM_EVENT_RESET => Some(VmEvent::Reboot),
            KVM_SYSTEM_EVENT_CRASH => Some(VmEvent::Panic(None)),
            other => Some(VmEvent::Error(format!("vCPU {id}: unknown system event {other}"))),
        },
        VcpuExit::Hlt => {
            // With the in-kernel local APIC KVM handles HLT itself; a HLT exit
            // means the vCPU stopped for good.
            tracing::info!(vcpu = id, "vCPU halted");
            None
        }
        VcpuExit::Intr => None,
        VcpuExit::FailEntry(reason, cpu) => {
            Some(VmEvent::Error(format!("vCPU {id}: KVM entry failed (hardware reason {reason:#x}, host cpu {cpu})")))
        }
        VcpuExit::InternalError => {
            Some(VmEvent::Error(format!("vCPU {id}: KVM internal error (often an instruction KVM cannot emulate)")))
        }
        other => Some(VmEvent::Error(format!("vCPU {id}: unexpected exit {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_print_with_their_sign() {
        assert_eq!(signed_hex(-0xd67302), "-0xd67302");
        assert_eq!(signed_hex(0x1234), "+0x1234");
    }

    #[test]
    fn reset_state_is_f000_fff0() {
        assert!(is_reset_state(0xfff0, 0xf000, 0xffff_0000));
        assert!(!is_reset_state(0xfff0, 0xf000, 0xf0000), "a real-mode jump to F000:FFF0 is not a reset");
        assert!(!is_reset_state(0x10_0200, 0x10, 0));
    }
}
