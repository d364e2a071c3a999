//! x86_64 vCPU state: CPUID, registers, MSRs, FPU and local APIC.
//!
//! The boot vCPU starts in 64-bit long mode with an identity map of the first
//! 4 GiB, flat segments and RSI pointing at the zero page (Linux's 64-bit boot
//! protocol). Application processors are left to KVM, which holds them in
//! wait-for-SIPI until the guest starts them through its local APIC.

pub mod cpuid;
pub mod pagewalk;
pub mod regs;
