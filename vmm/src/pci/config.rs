//! A PCI type-0 configuration space (PCI Local Bus 3.0, 6.1; PCIe 5.0, 7.5).
//!
//! 4 KiB of registers with a write mask per bit: what the guest may change
//! is exactly what the mask allows, so read-only fields cannot be corrupted
//! by any write of any width at any offset. BARs are sized by the mask (the
//! guest writes all ones and reads back the size), and a write that moves a
//! BAR is reported to the caller so it can move the device's bus range.

/// Bytes of configuration space (PCIe extended space included).
pub const CONFIG_SPACE_SIZE: usize = 4096;
const DWORDS: usize = CONFIG_SPACE_SIZE / 4;

pub const VENDOR_ID: usize = 0x00;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const CAPABILITIES_POINTER: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
/// First byte after the standard header: capabilities go here.
pub const FIRST_CAPABILITY: usize = 0x40;
/// End of the legacy (non-extended) configuration space.
pub const LEGACY_END: usize = 0x100;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Errors building a configuration space.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("BAR {0} is out of range or already used")]
    BadBar(usize),
    #[error("BAR size {0:#x} is not a power of two of at least 16 bytes")]
    BadBarSize(u64),
    #[error("BAR address {addr:#x} is not aligned to its size {size:#x}")]
    Unaligned { addr: u64, size: u64 },
    #[error("no room for a {0}-byte capability")]
    NoRoom(usize),
}

/// A memory BAR (this VMM uses no I/O BARs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub addr: u64,
    pub size: u64,
    pub is_64bit: bool,
}

/// A BAR the guest moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMove {
    pub index: usize,
    pub old: u64,
    pub new: u64,
}

/// Identity of a PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// See the module documentation.
pub struct PciConfig {
    regs: Box<[u32; DWORDS]>,
    wmask: Box<[u32; DWORDS]>,
    bars: [Option<Bar>; 6],
    next_cap: usize,
    last_cap: Option<usize>,
}

impl PciConfig {
    /// A type-0 header with the given ids.
    pub fn new(ids: PciIds) -> Self {
        let mut c = PciConfig {
            regs: Box::new([0; DWORDS]),
            wmask: Box::new([0; DWORDS]),
            bars: [None; 6],
            next_cap: FIRST_CAPABILITY,
            last_cap: None,
        };
        c.regs[0] = ids.vendor as u32 | (ids.device as u32) << 16;
        c.regs[2] =
            ids.revision as u32 | (ids.prog_if as u32) << 8 | (ids.subclass as u32) << 16 | (ids.class as u32) << 24;
        c.regs[SUBSYSTEM_VENDOR_ID / 4] = ids.subsystem_vendor as u32 | (ids.subsystem as u32) << 16;
        // Command: memory, bus master and INTx disable are the guest's to set.
        c.wmask[COMMAND / 4] = (COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE) as u32;
        // Interrupt line is scratch for the OS; interrupt pin stays 0 (no INTx).
        c.wmask[INTERRUPT_LINE / 4] = 0xff;
        c
    }

    /// Adds a memory BAR at a fixed address (the VMM is the firmware).
    pub fn add_bar(&mut self, index: usize, addr: u64, size: u64, is_64bit: bool) -> Result<(), ConfigError> {
        let slots = if is_64bit { 2 } else { 1 };
        if index + slots > 6 || self.bars[index..index + slots].iter().any(|b| b.is_some()) {
            return Err(ConfigError::BadBar(index));
        }
        if index > 0 && self.bars[index - 1].is_some_and(|b| b.is_64bit) {
            return Err(ConfigError::BadBar(index));
        }
        if !size.is_power_of_two() || size < 16 || (!is_64bit && size > 1 << 31) {
            return Err(ConfigError::BadBarSize(size));
        }
        if addr % size != 0 {
            return Err(ConfigError::Unaligned { addr, size });
        }
        let reg = BAR0 / 4 + index;
        let type_bits = if is_64bit { 0b100 } else { 0 };
        self.regs[reg] = (addr as u32 & !0xf) | type_bits;
        self.wmask[reg] = !(size as u32).wrapping_sub(1) & !0xf;
        if is_64bit {
            self.regs[reg + 1] = (addr >> 32) as u32;
            self.wmask[reg + 1] = (!(size - 1) >> 32) as u32;
        }
        let bar = Bar { addr, size, is_64bit };
        self.bars[index] = Some(bar);
        Ok(())
    }

    /// The BAR's current address and size.
    pub fn bar(&self, index: usize) -> Option<Bar> {
        let mut b = self.bars.get(index).copied().flatten()?;
        b.addr = self.bar_address(index);
        Some(b)
    }

    fn bar_address(&self, index: usize) -> u64 {
        let reg = BAR0 / 4 + index;
        let low = (self.regs[reg] & !0xf) as u64;
        match self.bars[index] {
            Some(b) if b.is_64bit => low | (self.regs[reg + 1] as u64) << 32,
            _ => low,
        }
    }

    /// Appends a capability; `body` starts with the capability id, its
    /// second byte (next pointer) is filled in. `wmask` covers `body`.
    /// Returns the capability's offset.
    pub fn add_capability(&mut self, body: &[u8], wmask: &[u8]) -> Result<usize, ConfigError> {
        assert_eq!(body.len(), wmask.len());
        let len = (body.len() + 3) & !3;
        let off = self.next_cap;
        if off + len > LEGACY_END || body.len() < 2 {
            return Err(ConfigError::NoRoom(body.len()));
        }
        for (i, (&b, &m)) in body.iter().zip(wmask).enumerate() {
            self.set_byte(off + i, b);
            self.set_mask_byte(off + i, m);
        }
        self.set_byte(off + 1, 0);
        match self.last_cap {
            Some(prev) => self.set_byte(prev + 1, off as u8),
            None => {
                self.set_byte(CAPABILITIES_POINTER, off as u8);
                let status = self.read_u16(STATUS) | STATUS_CAPABILITIES;
                self.set_u16(STATUS, status);
            }
        }
        self.last_cap = Some(off);
        self.next_cap = off + len;
        Ok(off)
    }

    fn set_byte(&mut self, off: usize, v: u8) {
        let shift = (off % 4) * 8;
        let r = &mut self.regs[off / 4];
        *r = (*r & !(0xff << shift)) | (v as u32) << shift;
    }

    fn set_mask_byte(&mut self, off: usize, v: u8) {
        let shift = (off % 4) * 8;
        let r = &mut self.wmask[off / 4];
        *r = (*r & !(0xff << shift)) | (v as u32) << shift;
    }

    fn set_u16(&mut self, off: usize, v: u16) {
        self.set_byte(off, v as u8);
        self.set_byte(off + 1, (v >> 8) as u8);
    }

    /// Reads a 16-bit register (VMM side).
    pub fn read_u16(&self, off: usize) -> u16 {
        (self.regs[off / 4] >> ((off % 4) * 8)) as u16
    }

    /// Reads a 32-bit register (VMM side).
    pub fn read_u32(&self, off: usize) -> u32 {
        self.regs[off / 4]
    }

    /// Writes bytes from the VMM side, ignoring the write mask (device-owned fields).
    pub fn set_bytes(&mut self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.set_byte(off + i, *b);
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(COMMAND)
    }

    /// Guest read. Accesses must be 1, 2 or 4 bytes, naturally aligned, inside
    /// the space; anything else reads as all ones.
    pub fn read(&self, off: usize, data: &mut [u8]) {
        if !valid_access(off, data.len()) {
            data.fill(0xff);
            return;
        }
        let v = self.regs[off / 4] >> ((off % 4) * 8);
        for (i, b) in data.iter_mut().enumerate() {
            *b = (v >> (i * 8)) as u8;
        }
    }

    /// Guest write, through the write mask. Returns the BAR it moved, if any.
    pub fn write(&mut self, off: usize, data: &[u8]) -> Option<BarMove> {
        if !valid_access(off, data.len()) {
            return None;
        }
        let reg = off / 4;
        let bar_index = (BAR0 / 4..BAR0 / 4 + 6).contains(&reg).then(|| reg - BAR0 / 4);
        let owner = bar_index.map(|i| {
            if i > 0 && self.bars[i].is_none() && self.bars[i - 1].is_some_and(|b| b.is_64bit) {
                i - 1
            } else {
                i
            }
        });
        let shift = (off % 4) * 8;
        let mut val = 0u32;
        let mut bytes_mask = 0u32;
        for (i, b) in data.iter().enumerate() {
            val |= (*b as u32) << (shift + i * 8);
            bytes_mask |= 0xff << (shift + i * 8);
        }
        let m = self.wmask[reg] & bytes_mask;
        self.regs[reg] = (self.regs[reg] & !m) | (val & m);
        let index = owner?;
        let committed = self.bars[index]?;
        let new = self.bar_address(index);
        // During a size probe the register holds the size mask (low half) or
        // all ones (upper half of a 64-bit BAR): not an address to move to.
        let low_mask = !(committed.size as u32).wrapping_sub(1) & !0xf;
        let probing = (new as u32 & !0xf) == low_mask || (committed.is_64bit && (new >> 32) as u32 == u32::MAX);
        if probing || new == committed.addr {
            return None;
        }
        self.bars[index] = Some(Bar { addr: new, ..committed });
        Some(BarMove { index, old: committed.addr, new })
    }
}

fn valid_access(off: usize, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && off % len == 0 && off + len <= CONFIG_SPACE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1af4,
            device: 0x105a,
            class: 0x01,
            subclass: 0x80,
            prog_if: 0,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        }
    }

    fn r32(c: &PciConfig, off: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn ids_and_class_read_back_at_every_width() {
        let c = PciConfig::new(ids());
        assert_eq!(r32(&c, 0), 0x105a_1af4);
        let mut b = [0u8; 2];
        c.read(2, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x105a);
        let mut b = [0u8; 1];
        c.read(0x0b, &mut b);
        assert_eq!(b[0], 0x01);
        assert_eq!(r32(&c, 0x2c), 0x0040_1af4);
    }

    #[test]
    fn read_only_fields_survive_writes() {
        let mut c = PciConfig::new(ids());
        for off in (0..0x40).step_by(4) {
            if (BAR0..BAR0 + 24).contains(&off) || off == COMMAND || off == INTERRUPT_LINE {
                continue;
            }
            let before = r32(&c, off);
            c.write(off, &[0xff; 4]);
            assert_eq!(r32(&c, off), before, "offset {off:#x}");
        }
        c.write(COMMAND, &[0xff, 0xff]);
        assert_eq!(c.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE);
    }

    #[test]
    fn bad_accesses_read_all_ones_and_write_nothing() {
        let mut c = PciConfig::new(ids());
        let mut b = [0u8; 4];
        c.read(2, &mut b); // misaligned dword
        assert_eq!(b, [0xff; 4]);
        let mut b3 = [0u8; 3];
        c.read(0, &mut b3);
        assert_eq!(b3, [0xff; 3]);
        let mut b = [0u8; 4];
        c.read(CONFIG_SPACE_SIZE, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(c.write(COMMAND + 1, &[0xff, 0xff]), None);
        assert_eq!(c.command(), 0);
    }

    #[test]
    fn bar_sizing_probe_and_move() {
        let mut c = PciConfig::new(ids());
        c.add_bar(0, 0xc000_0000, 0x4000, false).unwrap();
        c.add_bar(2, 0x1_0000_0000, 0x10_0000, true).unwrap();
        assert_eq!(r32(&c, BAR0), 0xc000_0000);
        assert_eq!(r32(&c, BAR0 + 8), 0x4, "64-bit memory BAR type");
        assert_eq!(r32(&c, BAR0 + 12), 0x1);

        // Size probe: all ones, read the mask, restore. No move is reported.
        assert_eq!(c.write(BAR0, &[0xff; 4]), None);
        assert_eq!(r32(&c, BAR0), 0xffff_c000);
        assert_eq!(c.write(BAR0, &0xc000_0000u32.to_le_bytes()), None);

        assert_eq!(c.write(BAR0 + 8, &[0xff; 4]), None);
        assert_eq!(c.write(BAR0 + 12, &[0xff; 4]), None);
        assert_eq!(r32(&c, BAR0 + 8), 0xfff0_0004);
        assert_eq!(r32(&c, BAR0 + 12), 0xffff_ffff);
        c.write(BAR0 + 8, &0x4u32.to_le_bytes());
        c.write(BAR0 + 12, &0x1u32.to_le_bytes());
        assert_eq!(c.bar(2).unwrap().addr, 0x1_0000_0000);

        // A real move.
        assert_eq!(
            c.write(BAR0, &0xd000_0000u32.to_le_bytes()),
            Some(BarMove { index: 0, old: 0xc000_0000, new: 0xd000_0000 })
        );
        assert_eq!(c.bar(0).unwrap().addr, 0xd000_0000);
        // Low bits of a BAR are read-only.
        c.write(BAR0, &0xd000_0fffu32.to_le_bytes());
        assert_eq!(r32(&c, BAR0), 0xd000_0000);
    }

    #[test]
    fn bar_errors() {
        let mut c = PciConfig::new(ids());
        assert_eq!(c.add_bar(6, 0, 0x1000, false), Err(ConfigError::BadBar(6)));
        assert_eq!(c.add_bar(5, 0, 0x1000, true), Err(ConfigError::BadBar(5)));
        assert_eq!(c.add_bar(0, 0, 0x1001, false), Err(ConfigError::BadBarSize(0x1001)));
        assert_eq!(c.add_bar(0, 0x800, 0x1000, false), Err(ConfigError::Unaligned { addr: 0x800, size: 0x1000 }));
        c.add_bar(0, 0x1_0000_0000, 0x1000, true).unwrap();
        assert_eq!(c.add_bar(1, 0, 0x1000, false), Err(ConfigError::BadBar(1)));
        assert_eq!(c.bar(1), None);
    }

    #[test]
    fn capability_chain() {
        let mut c = PciConfig::new(ids());
        let a = c.add_capability(&[0x11, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &[0; 12]).unwrap();
        let b = c.add_capability(&[0x09, 0, 16, 0, 0, 0], &[0, 0, 0, 0, 0xff, 0]).unwrap();
        assert_eq!(a, FIRST_CAPABILITY);
        assert_eq!(b, FIRST_CAPABILITY + 12);
        assert_ne!(c.read_u16(STATUS) & STATUS_CAPABILITIES, 0);
        let mut p = [0u8];
        c.read(CAPABILITIES_POINTER, &mut p);
        assert_eq!(p[0] as usize, a);
        c.read(a + 1, &mut p);
        assert_eq!(p[0] as usize, b);
        c.read(b + 1, &mut p);
        assert_eq!(p[0], 0);
        c.write(b + 4, &[0x5a]);
        c.write(b + 2, &[0x5a]);
        c.read(b + 4, &mut p);
        assert_eq!(p[0], 0x5a, "writable capability byte");
        c.read(b + 2, &mut p);
        assert_eq!(p[0], 16, "read-only capability byte");
        assert!(c.add_capability(&[0; 200], &[0; 200]).is_err());
    }
}
