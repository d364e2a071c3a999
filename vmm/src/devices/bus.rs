//! An address bus: non-overlapping ranges mapped to devices.

use std::sync::{Arc, Mutex};

/// A device on a bus. Offsets are relative to the start of the range.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset`.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing range")]
    Overlap { base: u64, len: u64 },
    #[error("bus range at {0:#x} is empty")]
    Empty(u64),
}

struct Range {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Ranges sorted by base address.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<Range>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base.checked_add(len).ok_or(BusError::Overlap { base, len })?;
        if self.ranges.iter().any(|r| base < r.base + r.len && r.base < end) {
            return Err(BusError::Overlap { base, len });
        }
        let pos = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(pos, Range { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<&Range> {
        let i = self.ranges.partition_point(|r| r.base <= addr).checked_sub(1)?;
        let r = &self.ranges[i];
        // The whole access must fall inside the range.
        (addr + size as u64 <= r.base + r.len).then_some(r)
    }

    /// Dispatches a read; returns false (and fills all ones) if no device claims it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some(r) => {
                r.device.lock().expect("device lock poisoned").read(r.base, addr - r.base, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false if no device claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some(r) => {
                r.device.lock().expect("device lock poisoned").write(r.base, addr - r.base, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last: Vec<(u64, u64, Vec<u8>)>,
    }
    impl BusDevice for Recorder {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last.push((base, offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlaps() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        bus.insert(0x600, 2, dev.clone()).unwrap();
        assert_eq!(bus.insert(0x3fc, 8, dev.clone()), Err(BusError::Overlap { base: 0x3fc, len: 8 }));
        assert_eq!(bus.insert(0x3f0, 9, dev.clone()), Err(BusError::Overlap { base: 0x3f0, len: 9 }));
        assert_eq!(bus.insert(0x10, 0, dev.clone()), Err(BusError::Empty(0x10)));
        assert!(bus.insert(u64::MAX, 2, dev.clone()).is_err());

        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x601, &[7]));
        assert_eq!(dev.lock().unwrap().last, vec![(0x600, 1, vec![7])]);
    }

    #[test]
    fn unclaimed_reads_are_all_ones() {
        let bus = Bus::new();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x80, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(!bus.write(0x80, &[1]));
    }

    #[test]
    fn accesses_straddling_a_range_end_are_unclaimed() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x1000, 4, dev).unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x1002, &mut b));
        assert!(bus.read(0x1000, &mut b));
    }
}
