//! Drivers for the fuzz targets in `vmm/fuzz` (and for the property test
//! below, which runs the same code on pseudo-random inputs in every
//! `cargo test`): a byte string becomes a sequence of guest accesses, and
//! every invariant the guest must not be able to break is checked.

use arbitrary::Unstructured;

use super::common_config::{CommonConfig, COMMON_CONFIG_SIZE};
use super::msix::{MsixState, ENTRY_SIZE};
use crate::pci::{PciConfig, PciIds, BAR0, CONFIG_SPACE_SIZE};
use crate::virtio::{status, NO_VECTOR, VIRTIO_F_VERSION_1};

/// Bytes of one operation's header: the op byte and a 16-bit offset.
const OP_HEADER: usize = 3;

const WIDTHS: [usize; 5] = [1, 2, 3, 4, 8];

/// Common configuration and MSI-X: arbitrary reads and writes.
pub fn run_register_ops(data: &[u8]) {
    let features = (1u64 << VIRTIO_F_VERSION_1) | 0xff;
    let mut cc = CommonConfig::new(features, &[256, 128, 16], 4);
    let mut msix = MsixState::new(4);
    let mut ops = Unstructured::new(data);
    while ops.len() >= OP_HEADER {
        let (op, off) = (ops.arbitrary::<u8>().unwrap_or(0), ops.arbitrary::<u16>().unwrap_or(0));
        let len = WIDTHS[(op as usize >> 2) % WIDTHS.len()];
        match op & 3 {
            0 => {
                let mut b = vec![0u8; len];
                cc.read(off as u64 % (COMMON_CONFIG_SIZE + 8), &mut b);
            }
            1 => {
                let Ok(b) = ops.bytes(len) else { break };
                cc.write(off as u64 % (COMMON_CONFIG_SIZE + 8), b);
            }
            2 => {
                let Ok(b) = ops.bytes(len) else { break };
                msix.write_table(off as u64 % (5 * ENTRY_SIZE), b);
                msix.set_control(ops.arbitrary::<u16>().unwrap_or(0));
            }
            _ => {
                let mut b = vec![0u8; len];
                msix.read_table(off as u64 % (5 * ENTRY_SIZE), &mut b);
                let pending: Vec<bool> = (0..8).map(|i| off >> i & 1 != 0).collect();
                msix.read_pba(off as u64 % 16, &mut b, &pending);
            }
        }
        // Invariants no driver can break.
        assert_eq!(
            cc.driver_features() & !features & if cc.status & status::FEATURES_OK != 0 { u64::MAX } else { 0 },
            0
        );
        for q in &cc.queues {
            assert!(q.size <= q.max_size && q.size.is_power_of_two());
            assert!(q.msix_vector == NO_VECTOR || q.msix_vector < 4);
        }
        assert!(cc.msix_config == NO_VECTOR || cc.msix_config < 4);
        if cc.status & status::DRIVER_OK != 0 {
            assert_ne!(cc.status & status::FEATURES_OK, 0);
        }
        for v in 0..6 {
            if let Some((addr, _)) = msix.route(v) {
                assert!(v < 4);
                assert_eq!(addr & 3, 0);
            }
        }
    }
}

/// PCI configuration space: arbitrary writes never change identity or
/// read-only fields, and BAR addresses stay aligned to their size.
pub fn run_config_space_ops(data: &[u8]) {
    let ids = PciIds {
        vendor: 0x1af4,
        device: 0x105a,
        class: 0xff,
        subclass: 0,
        prog_if: 0,
        revision: 1,
        subsystem_vendor: 0x1af4,
        subsystem: 0x40,
    };
    let mut c = PciConfig::new(ids);
    c.add_bar(0, 0xc000_0000, 0x8000, true).expect("BAR 0");
    c.add_bar(2, 0xc001_0000, 0x1000, false).expect("BAR 2");
    c.add_capability(&[0x11, 0, 2, 0, 0, 0x40, 0, 0, 0, 0x50, 0, 0], &[0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0])
        .expect("cap");
    let mut ops = Unstructured::new(data);
    while ops.len() >= OP_HEADER {
        let (op, off) = (ops.arbitrary::<u8>().unwrap_or(0), ops.arbitrary::<u16>().unwrap_or(0));
        let len = WIDTHS[(op as usize >> 1) % WIDTHS.len()];
        let off = off as usize % (CONFIG_SPACE_SIZE + 4);
        if op & 1 == 0 {
            let mut b = vec![0u8; len];
            c.read(off, &mut b);
        } else {
            let Ok(b) = ops.bytes(len) else { break };
            if let Some(mv) = c.write(off, b) {
                let size = c.bar(mv.index).expect("moved BAR exists").size;
                assert_eq!(mv.new % size, 0, "BAR moved to an unaligned address");
            }
        }
        assert_eq!(c.read_u32(0), 0x105a_1af4);
        assert_eq!(c.read_u32(8) >> 8, 0xff_0000);
        assert_eq!(c.read_u32(BAR0) & 0xf, 0x4, "BAR type bits are read-only");
        assert_eq!(c.read_u32(0x34) & 0xff, 0x40);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic pseudo-random inputs.
    fn inputs(seed: u64, count: usize, len: usize) -> Vec<Vec<u8>> {
        let mut s = seed;
        (0..count)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        s ^= s >> 12;
                        s ^= s << 25;
                        s ^= s >> 27;
                        (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn random_register_sequences_keep_invariants() {
        for input in inputs(0x5eed, 2000, 512) {
            run_register_ops(&input);
        }
    }

    #[test]
    fn random_config_space_sequences_keep_invariants() {
        for input in inputs(0xc0ffee, 2000, 512) {
            run_config_space_ops(&input);
        }
    }
}
