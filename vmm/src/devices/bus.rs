//! An address bus: non-overlapping ranges mapped to devices.
//!
//! Ranges can be added and removed while vCPUs run (a guest moving a PCI BAR
//! moves its range); lookups take a read lock only.

use std::sync::{Arc, Mutex, RwLock};

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
    ranges: RwLock<Vec<Range>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base.checked_add(len).ok_or(BusError::Overlap { base, len })?;
        let mut ranges = self.ranges.write().expect("bus lock poisoned");
        if ranges.iter().any(|r| base < r.base + r.len && r.base < end) {
            return Err(BusError::Overlap { base, len });
        }
        let pos = ranges.partition_point(|r| r.base < base);
        ranges.insert(pos, Range { base, len, device });
        Ok(())
    }

    /// Removes the range starting at `base`; returns its device.
    pub fn remove(&self, base: u64) -> Option<Arc<Mutex<dyn BusDevice>>> {
        let mut ranges = self.ranges.write().expect("bus lock poisoned");
        let i = ranges.iter().position(|r| r.base == base)?;
        Some(ranges.remove(i).device)
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges.read().expect("bus lock poisoned");
        let i = ranges.partition_point(|r| r.base <= addr).checked_sub(1)?;
        let r = &ranges[i];
        // The whole access must fall inside the range.
        let end = addr.checked_add(size as u64)?;
        (end <= r.base + r.len).then(|| (r.base, r.device.clone()))
    }

    /// Dispatches a read; returns false (and fills all ones) if no device claims it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((base, dev)) => {
                dev.lock().expect("device lock poisoned").read(base, addr - base, data);
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
            Some((base, dev)) => {
                dev.lock().expect("device lock poisoned").write(base, addr - base, data);
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
        let bus = Bus::new();
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
        let bus = Bus::new();
        bus.insert(0x1000, 4, dev).unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x1002, &mut b));
        assert!(bus.read(0x1000, &mut b));
        assert!(!bus.read(u64::MAX - 1, &mut b));
    }

    #[test]
    fn ranges_can_move() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let bus = Bus::new();
        bus.insert(0x1000, 0x100, dev).unwrap();
        let d = bus.remove(0x1000).unwrap();
        assert!(bus.remove(0x1000).is_none());
        bus.insert(0x2000, 0x100, d).unwrap();
        let mut b = [0u8; 1];
        assert!(!bus.read(0x1000, &mut b));
        assert!(bus.read(0x2001, &mut b));
        assert_eq!(b, [1]);
    }
}
