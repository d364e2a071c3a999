//! rayos-vmm: the RayOS virtual machine monitor.
//!
//! RayOS runs Linux as a managed guest in a KVM virtual machine built from
//! rust-vmm crates. This crate boots an unmodified Linux kernel (bzImage or
//! ELF vmlinux) straight into 64-bit mode with:
//!
//! - guest RAM in a memfd (`memory`), laid out as in `layout`;
//! - Linux boot protocol: zero page, e820, command line, initramfs (`boot`);
//! - vCPUs with filtered CPUID, MSRs, FPU and LAPIC state (`arch`), one
//!   thread each (`vcpu`);
//! - KVM's in-kernel PIC/IOAPIC/LAPIC and PIT, described to the guest by
//!   hardware-reduced ACPI tables (`acpi`);
//! - a 16550 console driven by an irqfd and a power device for ACPI
//!   poweroff/reset and pvpanic (`devices`);
//! - a raw-mode terminal with a Ctrl-A x escape (`terminal`).
//!
//! The vhost-user device backends RayOS ships live in their own crates
//! (`vmm/backends/vsock`: binary `rayos-vsock`) and attach to this VMM's
//! vhost-user frontend or to QEMU.
//!
//! `cli` validates the command line before anything starts; `vm` assembles
//! and runs the machine and turns the guest's last act into an [`vm::Outcome`].

pub mod acpi;
pub mod arch;
pub mod boot;
pub mod cli;
pub mod devices;
pub mod interrupt;
pub mod layout;
pub mod memory;
pub mod metrics;
pub mod pci;
pub mod terminal;
pub mod vcpu;
pub mod virtio;
pub mod vm;
