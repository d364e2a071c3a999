//! MSI-X table, pending-bit array and capability state (PCI Local Bus 3.0, 6.8.2).
//!
//! Pure logic: the transport asks [`MsixState::route`] which (address, data)
//! a vector currently delivers to and programs KVM's GSI routing from it. A
//! vector delivers only while MSI-X is enabled, the function is not masked
//! and the vector's own mask bit is clear; otherwise its route is withdrawn
//! and the transport holds what is raised meanwhile as pending (its
//! eventfds stay signalled; see the transport's notes), which the PBA
//! shows and the unmask delivers.

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Capability message-control bits.
pub const MSG_CTL_ENABLE: u16 = 1 << 15;
pub const MSG_CTL_FUNCTION_MASK: u16 = 1 << 14;
const VECTOR_CTL_MASK: u32 = 1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct MsixState {
    entries: Vec<Entry>,
    enabled: bool,
    function_masked: bool,
}

impl MsixState {
    /// `n` vectors, all masked (the reset state).
    pub fn new(n: u16) -> Self {
        MsixState {
            entries: vec![Entry { ctrl: VECTOR_CTL_MASK, ..Default::default() }; n as usize],
            enabled: false,
            function_masked: false,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> u16 {
        self.entries.len() as u16
    }

    /// True when there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Table size field of the message control register (N - 1).
    pub fn table_size_field(&self) -> u16 {
        self.len().saturating_sub(1)
    }

    /// Applies the message-control register the driver wrote.
    pub fn set_control(&mut self, ctl: u16) {
        self.enabled = ctl & MSG_CTL_ENABLE != 0;
        self.function_masked = ctl & MSG_CTL_FUNCTION_MASK != 0;
    }

    /// Where vector `v` delivers now, if it may deliver.
    pub fn route(&self, v: u16) -> Option<(u64, u32)> {
        let e = self.entries.get(v as usize)?;
        if !self.enabled || self.function_masked || e.ctrl & VECTOR_CTL_MASK != 0 {
            return None;
        }
        Some(((e.addr_hi as u64) << 32 | e.addr_lo as u64, e.data))
    }

    fn decode(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        if !matches!(len, 4 | 8) || offset % len as u64 != 0 {
            return None;
        }
        let index = (offset / ENTRY_SIZE) as usize;
        (index < self.entries.len()).then_some((index, (offset % ENTRY_SIZE) as usize / 4))
    }

    fn dword(e: &Entry, i: usize) -> u32 {
        [e.addr_lo, e.addr_hi, e.data, e.ctrl][i]
    }

    /// Driver read of the table; out-of-range or odd-width reads return all ones.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let Some((index, dw)) = self.decode(offset, data.len()) else {
            data.fill(0xff);
            return;
        };
        let e = &self.entries[index];
        for (k, chunk) in data.chunks_mut(4).enumerate() {
            chunk.copy_from_slice(&Self::dword(e, dw + k).to_le_bytes());
        }
    }

    /// Driver write of the table; returns the vector whose routing changed.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Option<u16> {
        let Some((index, dw)) = self.decode(offset, data.len()) else {
            tracing::debug!("MSI-X: bad table write at {offset:#x} ({} bytes)", data.len());
            return None;
        };
        let before = self.route(index as u16);
        let e = &mut self.entries[index];
        for (k, chunk) in data.chunks(4).enumerate() {
            let v = u32::from_le_bytes(chunk.try_into().expect("4-byte chunk"));
            match dw + k {
                0 => e.addr_lo = v & !0x3,
                1 => e.addr_hi = v,
                2 => e.data = v,
                _ => e.ctrl = v & VECTOR_CTL_MASK,
            }
        }
        (self.route(index as u16) != before).then_some(index as u16)
    }

    /// Driver read of the pending-bit array: bit `v` is `pending[v]` (missing
    /// entries read 0); out-of-range or odd-width reads return all ones.
    pub fn read_pba(&self, offset: u64, data: &mut [u8], pending: &[bool]) {
        let qwords = (self.entries.len() as u64).div_ceil(64);
        if !(matches!(data.len(), 4 | 8) && offset % data.len() as u64 == 0 && offset < qwords * 8) {
            data.fill(0xff);
            return;
        }
        let first = offset as usize * 8;
        data.fill(0);
        for bit in 0..data.len() * 8 {
            let v = first + bit;
            if v < self.entries.len() && pending.get(v).copied().unwrap_or(false) {
                data[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write32(m: &mut MsixState, off: u64, v: u32) -> Option<u16> {
        m.write_table(off, &v.to_le_bytes())
    }

    #[test]
    fn vectors_start_masked_and_route_once_enabled_and_unmasked() {
        let mut m = MsixState::new(4);
        assert_eq!(m.table_size_field(), 3);
        write32(&mut m, 16, 0xfee0_0000);
        write32(&mut m, 16 + 8, 0x41);
        assert_eq!(m.route(1), None, "masked and disabled");
        m.set_control(MSG_CTL_ENABLE);
        assert_eq!(m.route(1), None, "vector still masked");
        assert_eq!(write32(&mut m, 16 + 12, 0), Some(1));
        assert_eq!(m.route(1), Some((0xfee0_0000, 0x41)));
        m.set_control(MSG_CTL_ENABLE | MSG_CTL_FUNCTION_MASK);
        assert_eq!(m.route(1), None, "function mask");
        m.set_control(MSG_CTL_ENABLE);
        assert_eq!(write32(&mut m, 16 + 12, 1), Some(1));
        assert_eq!(m.route(1), None);
    }

    #[test]
    fn table_reads_back_and_qword_access_works() {
        let mut m = MsixState::new(2);
        m.write_table(0, &0x0000_0001_fee0_1000u64.to_le_bytes());
        let mut b = [0u8; 8];
        m.read_table(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0x0000_0001_fee0_1000);
        let mut c = [0u8; 4];
        m.read_table(12, &mut c);
        assert_eq!(u32::from_le_bytes(c), 1, "mask bit");
    }

    #[test]
    fn bad_accesses_are_refused() {
        let mut m = MsixState::new(2);
        let mut b = [0u8; 4];
        m.read_table(32, &mut b); // entry 2 does not exist
        assert_eq!(b, [0xff; 4]);
        let mut b2 = [0u8; 2];
        m.read_table(0, &mut b2);
        assert_eq!(b2, [0xff; 2]);
        assert_eq!(m.write_table(2, &[0; 4]), None, "misaligned");
        assert_eq!(m.write_table(1 << 20, &[0; 4]), None);
        assert_eq!(m.route(7), None);
        // Reserved vector-control bits are not stored.
        m.write_table(12, &0xffff_fffeu32.to_le_bytes());
        m.read_table(12, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
    }

    #[test]
    fn pba_shows_pending_vectors_inside_and_all_ones_outside() {
        let m = MsixState::new(3);
        let mut b = [0xaau8; 8];
        m.read_pba(0, &mut b, &[]);
        assert_eq!(b, [0; 8]);
        m.read_pba(0, &mut b, &[false, true, true, true]);
        assert_eq!(b, [0b110, 0, 0, 0, 0, 0, 0, 0], "bits for vectors 1 and 2; no vector 3");
        let mut w = [0u8; 4];
        m.read_pba(4, &mut w, &[true; 3]);
        assert_eq!(w, [0; 4], "the upper dword holds no vector of 3");
        m.read_pba(8, &mut b, &[true; 3]);
        assert_eq!(b, [0xff; 8]);
    }
}
