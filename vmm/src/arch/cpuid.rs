//! CPUID for the guest: KVM's supported set, filtered and completed.
//!
//! Starting point is `KVM_GET_SUPPORTED_CPUID`. On top of it, per vCPU:
//! - leaf 0x1: initial APIC id, logical processor count, HTT, the hypervisor
//!   bit, and TSC-deadline when KVM emulates it;
//! - leaves 0x4, 0xb, 0x1f, 0x8000_0008, 0x8000_001e: a topology of N cores,
//!   one thread each, in one package;
//! - leaf 0xa: no PMU (fewer exits, no perf MSR traffic in nested setups);
//! - 0x4000_0000..: the KVM signature and paravirt features (kvmclock, so the
//!   guest takes the TSC frequency from the hypervisor instead of calibrating),
//!   and leaf 0x4000_0010 with the TSC and bus frequencies in kHz.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Errors building CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("cannot build the CPUID table: {0}")]
    Fam(String),
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_HYPERVISOR_TIMING: u32 = 0x4000_0010;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;

const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// What the topology and timing leaves describe.
#[derive(Debug, Clone, Copy)]
pub struct CpuidParams {
    pub vcpu_id: u8,
    pub cpu_count: u8,
    pub tsc_khz: Option<u32>,
    pub tsc_deadline: bool,
}

/// Number of bits needed to hold `n` distinct ids (the x2APIC id shift).
fn id_bits(n: u8) -> u32 {
    let n = n.max(1) as u32;
    32 - (n - 1).leading_zeros()
}

/// Applies RayOS's filter to a list of CPUID entries (pure: testable without KVM).
pub fn filter_entries(entries: &mut Vec<kvm_cpuid_entry2>, p: CpuidParams) {
    let id = p.vcpu_id as u32;
    let count = p.cpu_count as u32;
    let mut have_timing = false;
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | ((count.max(1) & 0xff) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if p.tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((count - 1) << 26) | (sharing << 14);
            }
            LEAF_PMU => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = id;
                match e.index {
                    0 => {
                        // SMT level: one thread per core.
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        // Core level: all vCPUs in one package.
                        e.eax = id_bits(p.cpu_count);
                        e.ebx = count;
                        e.ecx = 1 | (2 << 8);
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i;
                    }
                }
            }
            LEAF_HYPERVISOR => {
                e.eax = e.eax.max(LEAF_HYPERVISOR_TIMING);
            }
            LEAF_HYPERVISOR_TIMING => {
                have_timing = true;
                e.eax = p.tsc_khz.unwrap_or(0);
                e.ebx = 1_000_000; // local APIC bus: 1 GHz, as KVM emulates it
            }
            LEAF_AMD_SIZES => {
                // ECX[7:0]: number of physical cores - 1; ECX[15:12]: APIC id size.
                e.ecx = (e.ecx & !0xf0ff) | (count - 1) | (id_bits(p.cpu_count) << 12);
            }
            LEAF_AMD_TOPOLOGY => {
                e.eax = id;
                e.ebx = id & 0xff; // compute unit id, one thread per unit
                e.ecx = 0;
            }
            _ => {}
        }
    }
    if !have_timing && entries.iter().any(|e| e.function == LEAF_HYPERVISOR) {
        entries.push(kvm_cpuid_entry2 {
            function: LEAF_HYPERVISOR_TIMING,
            eax: p.tsc_khz.unwrap_or(0),
            ebx: 1_000_000,
            ..Default::default()
        });
    }
    // Index-significant leaves must carry the flag for KVM to match subleaves.
    for e in entries.iter_mut() {
        if matches!(e.function, LEAF_CACHE | LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2) {
            e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        }
    }
}

/// The CPUID table for one vCPU.
pub fn vcpu_cpuid(supported: &CpuId, p: CpuidParams) -> Result<CpuId, CpuidError> {
    let mut entries = supported.as_slice().to_vec();
    filter_entries(&mut entries, p);
    CpuId::from_entries(&entries).map_err(|e| CpuidError::Fam(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, index, ..Default::default() }
    }

    fn find(v: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *v.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    fn params(id: u8, count: u8) -> CpuidParams {
        CpuidParams { vcpu_id: id, cpu_count: count, tsc_khz: Some(2_500_000), tsc_deadline: true }
    }

    #[test]
    fn id_bits_values() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
        assert_eq!(id_bits(254), 8);
    }

    #[test]
    fn leaf1_apic_id_count_and_hypervisor_bit() {
        let mut v = vec![kvm_cpuid_entry2 { function: 1, ebx: 0x0000_0800, edx: 0, ..Default::default() }];
        filter_entries(&mut v, params(3, 4));
        let e = find(&v, 1, 0);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(e.edx & EDX_HTT, 0);

        let mut v = vec![kvm_cpuid_entry2 { function: 1, edx: EDX_HTT, ..Default::default() }];
        filter_entries(&mut v, CpuidParams { tsc_deadline: false, ..params(0, 1) });
        let e = find(&v, 1, 0);
        assert_eq!(e.edx & EDX_HTT, 0);
        assert_eq!(e.ecx & ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn topology_leaves_describe_n_cores() {
        let mut v = vec![leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)];
        filter_entries(&mut v, params(5, 6));
        let smt = find(&v, 0xb, 0);
        let core = find(&v, 0xb, 1);
        let end = find(&v, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, (smt.ecx >> 8) & 0xff, smt.edx), (0, 1, 1, 5));
        assert_eq!((core.eax, core.ebx, (core.ecx >> 8) & 0xff, core.edx), (3, 6, 2, 5));
        assert_eq!((end.ebx, (end.ecx >> 8) & 0xff), (0, 0));
        assert!(v.iter().all(|e| e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0));
    }

    #[test]
    fn cache_leaf_counts_cores() {
        let mut v = vec![
            kvm_cpuid_entry2 { function: 4, index: 0, eax: (1 << 5) | 0x1, ..Default::default() },
            kvm_cpuid_entry2 { function: 4, index: 3, eax: (3 << 5) | 0x3, ..Default::default() },
        ];
        filter_entries(&mut v, params(0, 4));
        assert_eq!(find(&v, 4, 0).eax >> 26, 3);
        assert_eq!((find(&v, 4, 0).eax >> 14) & 0xfff, 0);
        assert_eq!((find(&v, 4, 3).eax >> 14) & 0xfff, 3);
        assert_eq!(find(&v, 4, 3).eax & 0x1f, 0x3, "cache type kept");
    }

    #[test]
    fn pmu_is_hidden_and_timing_leaf_added() {
        let mut v = vec![
            kvm_cpuid_entry2 { function: 0xa, eax: 0x0703_0802, ..Default::default() },
            kvm_cpuid_entry2 { function: LEAF_HYPERVISOR, eax: 0x4000_0001, ebx: 0x4b4d_564b, ..Default::default() },
        ];
        filter_entries(&mut v, params(0, 2));
        assert_eq!(find(&v, 0xa, 0).eax, 0);
        assert_eq!(find(&v, LEAF_HYPERVISOR, 0).eax, LEAF_HYPERVISOR_TIMING);
        assert_eq!(find(&v, LEAF_HYPERVISOR, 0).ebx, 0x4b4d_564b, "signature kept");
        let t = find(&v, LEAF_HYPERVISOR_TIMING, 0);
        assert_eq!((t.eax, t.ebx), (2_500_000, 1_000_000));
    }

    #[test]
    fn amd_leaves() {
        let mut v = vec![leaf(LEAF_AMD_SIZES, 0), leaf(LEAF_AMD_TOPOLOGY, 0)];
        filter_entries(&mut v, params(1, 2));
        assert_eq!(find(&v, LEAF_AMD_SIZES, 0).ecx & 0xff, 1);
        assert_eq!(find(&v, LEAF_AMD_TOPOLOGY, 0).eax, 1);
    }
}
