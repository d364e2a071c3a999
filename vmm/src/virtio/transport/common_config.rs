//! The virtio-pci common configuration structure (virtio 1.2, 4.1.4.3).
//!
//! Pure register logic: what the driver reads and writes, feature
//! negotiation (3.1.1, 2.2) and the device status machine (2.1). It reports
//! what the transport must act on as [`CommonEvent`]s; it never touches
//! guest memory or KVM.
//!
//! Layout (offsets in bytes):
//! ```text
//! 0x00 device_feature_select  0x04 device_feature   0x08 driver_feature_select
//! 0x0c driver_feature         0x10 config_msix_vector 0x12 num_queues
//! 0x14 device_status          0x15 config_generation  0x16 queue_select
//! 0x18 queue_size             0x1a queue_msix_vector  0x1c queue_enable
//! 0x1e queue_notify_off       0x20 queue_desc        0x28 queue_driver
//! 0x30 queue_device           0x38 queue_notify_data 0x3a queue_reset
//! ```

use super::super::{status, NO_VECTOR};

/// Size of the structure.
pub const COMMON_CONFIG_SIZE: u64 = 0x3c;

/// Per-queue configuration as the driver set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    pub msix_vector: u16,
}

impl QueueState {
    fn new(max_size: u16) -> Self {
        QueueState { max_size, size: max_size, ready: false, desc: 0, driver: 0, device: 0, msix_vector: NO_VECTOR }
    }
}

/// What a write asks the transport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonEvent {
    /// The driver wrote 0 to device_status: reset the device.
    Reset,
    /// The driver set FEATURES_OK with these features; the transport accepted them.
    FeaturesAccepted(u64),
    /// The driver set DRIVER_OK: start the device.
    DriverOk,
    /// The driver enabled queue N.
    QueueEnabled(u16),
    /// The driver asked for an MSI-X vector mapping (config vector: queue None).
    VectorMapped { queue: Option<u16>, vector: u16 },
    /// The driver set FAILED.
    Failed,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    device_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    pub status: u8,
    pub config_generation: u8,
    queue_select: u16,
    pub msix_config: u16,
    pub queues: Vec<QueueState>,
    msix_vectors: u16,
}

impl CommonConfig {
    /// A device offering `device_features`, with one entry per queue maximum
    /// size, and `msix_vectors` MSI-X table entries.
    pub fn new(device_features: u64, queue_max_sizes: &[u16], msix_vectors: u16) -> Self {
        CommonConfig {
            device_features,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            msix_config: NO_VECTOR,
            queues: queue_max_sizes.iter().map(|&m| QueueState::new(m)).collect(),
            msix_vectors,
        }
    }

    /// Features the driver acknowledged.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Back to the power-on state (driver-visible reset, 2.4).
    pub fn reset(&mut self) {
        let max: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        *self = CommonConfig::new(self.device_features, &max, self.msix_vectors);
    }

    fn selected(&self) -> Option<&QueueState> {
        self.queues.get(self.queue_select as usize)
    }

    fn selected_mut(&mut self) -> Option<&mut QueueState> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn register(&self, offset: u64) -> Option<u64> {
        let q = self.selected();
        Some(match offset {
            0x00 => self.device_feature_select as u64,
            0x04 => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            0x08 => self.driver_feature_select as u64,
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => self.msix_config as u64,
            0x12 => self.queues.len() as u64,
            0x14 => self.status as u64,
            0x15 => self.config_generation as u64,
            0x16 => self.queue_select as u64,
            0x18 => q.map_or(0, |q| q.size as u64),
            0x1a => q.map_or(NO_VECTOR as u64, |q| q.msix_vector as u64),
            0x1c => q.map_or(0, |q| q.ready as u64),
            0x1e => q.map_or(0, |_| self.queue_select as u64),
            0x20 => q.map_or(0, |q| q.desc),
            0x28 => q.map_or(0, |q| q.driver),
            0x30 => q.map_or(0, |q| q.device),
            0x38 => q.map_or(0, |_| self.queue_select as u64),
            0x3a => 0,
            _ => return None,
        })
    }

    fn field_width(offset: u64) -> Option<u64> {
        Some(match offset {
            0x00 | 0x04 | 0x08 | 0x0c => 4,
            0x10 | 0x12 | 0x16 | 0x18 | 0x1a | 0x1c | 0x1e | 0x38 | 0x3a => 2,
            0x14 | 0x15 => 1,
            0x20 | 0x28 | 0x30 => 8,
            _ => return None,
        })
    }

    /// Finds the field an access hits: (field offset, byte offset inside it).
    /// Accesses must stay inside one field; 64-bit fields accept 32-bit halves.
    fn locate(offset: u64, len: usize) -> Option<(u64, u64)> {
        if !matches!(len, 1 | 2 | 4 | 8) {
            return None;
        }
        for base in
            [0x00, 0x04, 0x08, 0x0c, 0x10, 0x12, 0x14, 0x15, 0x16, 0x18, 0x1a, 0x1c, 0x1e, 0x20, 0x28, 0x30, 0x38, 0x3a]
        {
            let w = Self::field_width(base)?;
            if offset >= base && offset + len as u64 <= base + w {
                let inner = offset - base;
                return (inner % len as u64 == 0).then_some((base, inner));
            }
        }
        None
    }

    /// Driver read.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let Some((base, inner)) = Self::locate(offset, data.len()) else {
            tracing::debug!("virtio-pci: bad common config read at {offset:#x} ({} bytes)", data.len());
            data.fill(0);
            return;
        };
        let v = self.register(base).unwrap_or(0) >> (inner * 8);
        for (i, b) in data.iter_mut().enumerate() {
            *b = (v >> (i * 8)) as u8;
        }
    }

    /// Driver write. Returns what the transport must do.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<CommonEvent> {
        let Some((base, inner)) = Self::locate(offset, data.len()) else {
            tracing::debug!("virtio-pci: bad common config write at {offset:#x} ({} bytes)", data.len());
            return None;
        };
        let mut v = 0u64;
        for (i, b) in data.iter().enumerate() {
            v |= (*b as u64) << (i * 8);
        }
        let merge = |old: u64| -> u64 {
            let shift = inner * 8;
            let mask = if data.len() == 8 { u64::MAX } else { ((1u64 << (data.len() * 8)) - 1) << shift };
            (old & !mask) | ((v << shift) & mask)
        };
        // A partial write updates part of the field's current value.
        let width = Self::field_width(base).unwrap_or(8);
        let v = if data.len() as u64 == width { v } else { merge(self.register(base).unwrap_or(0)) };
        // Queue fields cannot change once the queue is enabled (4.1.4.3.2).
        let locked = self.selected().is_some_and(|q| q.ready);
        match base {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            0x0c => {
                if self.status & status::FEATURES_OK != 0 {
                    tracing::warn!("virtio-pci: driver changed features after FEATURES_OK; ignored");
                    return None;
                }
                match self.driver_feature_select {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff),
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                    _ => {}
                }
            }
            0x10 => {
                self.msix_config =
                    if v as u16 == NO_VECTOR || (v as u16) < self.msix_vectors { v as u16 } else { NO_VECTOR };
                return Some(CommonEvent::VectorMapped { queue: None, vector: self.msix_config });
            }
            0x14 => return self.write_status(v as u8),
            0x16 => self.queue_select = v as u16,
            0x18 if !locked => {
                let n = v as u16;
                if let Some(q) = self.selected_mut() {
                    if n.is_power_of_two() && n <= q.max_size {
                        q.size = n;
                    } else {
                        tracing::warn!("virtio-pci: queue size {n} refused (max {}, power of two)", q.max_size);
                    }
                }
            }
            0x1a if !locked => {
                let vectors = self.msix_vectors;
                let qsel = self.queue_select;
                if let Some(q) = self.selected_mut() {
                    q.msix_vector = if v as u16 == NO_VECTOR || (v as u16) < vectors { v as u16 } else { NO_VECTOR };
                    return Some(CommonEvent::VectorMapped { queue: Some(qsel), vector: q.msix_vector });
                }
            }
            0x1c => {
                let qsel = self.queue_select;
                if let Some(q) = self.selected_mut() {
                    if v == 1 && !q.ready {
                        q.ready = true;
                        return Some(CommonEvent::QueueEnabled(qsel));
                    }
                }
            }
            0x20 | 0x28 | 0x30 if !locked => {
                if let Some(q) = self.selected_mut() {
                    let field = match base {
                        0x20 => &mut q.desc,
                        0x28 => &mut q.driver,
                        _ => &mut q.device,
                    };
                    *field = v;
                }
            }
            0x18 | 0x1a | 0x20 | 0x28 | 0x30 => {
                tracing::warn!(
                    "virtio-pci: write to queue {} field {base:#x} while enabled; ignored",
                    self.queue_select
                );
            }
            _ => {} // read-only fields
        }
        None
    }

    fn write_status(&mut self, new: u8) -> Option<CommonEvent> {
        if new == 0 {
            self.reset();
            return Some(CommonEvent::Reset);
        }
        let old = self.status;
        if new & status::FAILED != 0 {
            // Only the FAILED bit is taken from such a write.
            self.status = old | status::FAILED;
            return Some(CommonEvent::Failed);
        }
        // The driver may only add bits (2.1.2).
        if new & old != old {
            tracing::warn!("virtio-pci: driver cleared status bits ({old:#x} -> {new:#x}); ignored");
            return None;
        }
        let added = new & !old;
        if added & status::FEATURES_OK != 0 {
            let unknown = self.driver_features & !self.device_features;
            let has_v1 = self.driver_features & (1 << super::super::VIRTIO_F_VERSION_1) != 0;
            if unknown != 0 || !has_v1 {
                tracing::warn!(
                    "virtio-pci: refusing features {:#x} (unknown bits {unknown:#x}, VERSION_1 {has_v1})",
                    self.driver_features
                );
                // Leave FEATURES_OK clear: the driver sees the refusal when it reads back.
                self.status = new & !(status::FEATURES_OK | status::DRIVER_OK);
                return None;
            }
            if added & status::DRIVER_OK != 0 {
                // The driver must read FEATURES_OK back before DRIVER_OK (3.1.1).
                tracing::warn!("virtio-pci: DRIVER_OK in the same write as FEATURES_OK; DRIVER_OK ignored");
            }
            self.status = new & !status::DRIVER_OK;
            return Some(CommonEvent::FeaturesAccepted(self.driver_features));
        }
        if added & status::DRIVER_OK != 0 {
            if old & status::FEATURES_OK == 0 {
                tracing::warn!("virtio-pci: DRIVER_OK without FEATURES_OK; ignored");
                return None;
            }
            self.status = new;
            return Some(CommonEvent::DriverOk);
        }
        self.status = new;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::VIRTIO_F_VERSION_1;

    const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | 0b101;

    fn cc() -> CommonConfig {
        CommonConfig::new(FEATURES, &[256, 128], 3)
    }

    fn rd(c: &CommonConfig, off: u64, len: usize) -> u64 {
        let mut b = vec![0u8; len];
        c.read(off, &mut b);
        b.iter().enumerate().fold(0, |a, (i, x)| a | (*x as u64) << (i * 8))
    }

    fn wr(c: &mut CommonConfig, off: u64, len: usize, v: u64) -> Option<CommonEvent> {
        let b: Vec<u8> = (0..len).map(|i| (v >> (i * 8)) as u8).collect();
        c.write(off, &b)
    }

    fn negotiate(c: &mut CommonConfig, features: u64) -> Option<CommonEvent> {
        wr(c, 0x14, 1, status::ACKNOWLEDGE as u64);
        wr(c, 0x14, 1, (status::ACKNOWLEDGE | status::DRIVER) as u64);
        wr(c, 0x08, 4, 0);
        wr(c, 0x0c, 4, features & 0xffff_ffff);
        wr(c, 0x08, 4, 1);
        wr(c, 0x0c, 4, features >> 32);
        wr(c, 0x14, 1, (status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK) as u64)
    }

    #[test]
    fn device_features_by_select() {
        let c = &mut cc();
        assert_eq!(rd(c, 0x04, 4), 0b101);
        wr(c, 0x00, 4, 1);
        assert_eq!(rd(c, 0x04, 4), 1);
        wr(c, 0x00, 4, 7);
        assert_eq!(rd(c, 0x04, 4), 0);
        assert_eq!(rd(c, 0x12, 2), 2, "num_queues");
    }

    #[test]
    fn feature_negotiation_accepts_a_subset_with_version_1() {
        let c = &mut cc();
        assert_eq!(negotiate(c, FEATURES & !0b100), Some(CommonEvent::FeaturesAccepted(FEATURES & !0b100)));
        assert_ne!(rd(c, 0x14, 1) as u8 & status::FEATURES_OK, 0);
        // Features are frozen after FEATURES_OK.
        wr(c, 0x08, 4, 0);
        wr(c, 0x0c, 4, 0);
        assert_eq!(c.driver_features(), FEATURES & !0b100);
    }

    #[test]
    fn feature_negotiation_refuses_unknown_bits_and_legacy_drivers() {
        let c = &mut cc();
        assert_eq!(negotiate(c, FEATURES | 1 << 40), None);
        assert_eq!(rd(c, 0x14, 1) as u8 & status::FEATURES_OK, 0);
        let c = &mut cc();
        assert_eq!(negotiate(c, 0b1), None, "no VERSION_1");
        assert_eq!(rd(c, 0x14, 1) as u8 & status::FEATURES_OK, 0);
    }

    #[test]
    fn driver_ok_needs_features_ok_and_reset_clears_everything() {
        let c = &mut cc();
        wr(c, 0x14, 1, (status::ACKNOWLEDGE | status::DRIVER) as u64);
        assert_eq!(wr(c, 0x14, 1, (status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK) as u64), None);
        assert_eq!(rd(c, 0x14, 1) as u8 & status::DRIVER_OK, 0);
        negotiate(c, FEATURES);
        assert_eq!(
            wr(c, 0x14, 1, (status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK) as u64),
            Some(CommonEvent::DriverOk)
        );
        wr(c, 0x16, 2, 1);
        assert_eq!(wr(c, 0x14, 1, 0), Some(CommonEvent::Reset));
        assert_eq!(rd(c, 0x14, 1), 0);
        assert_eq!(rd(c, 0x16, 2), 0);
        assert_eq!(c.driver_features(), 0);
    }

    #[test]
    fn queue_setup_sizes_vectors_and_addresses() {
        let c = &mut cc();
        wr(c, 0x16, 2, 1);
        assert_eq!(rd(c, 0x18, 2), 128);
        wr(c, 0x18, 2, 64);
        assert_eq!(rd(c, 0x18, 2), 64);
        wr(c, 0x18, 2, 100); // not a power of two
        wr(c, 0x18, 2, 512); // above max
        wr(c, 0x18, 2, 0);
        assert_eq!(rd(c, 0x18, 2), 64);
        assert_eq!(wr(c, 0x1a, 2, 2), Some(CommonEvent::VectorMapped { queue: Some(1), vector: 2 }));
        assert_eq!(wr(c, 0x1a, 2, 3), Some(CommonEvent::VectorMapped { queue: Some(1), vector: NO_VECTOR }));
        assert_eq!(rd(c, 0x1a, 2), NO_VECTOR as u64, "out-of-range vector reads back NO_VECTOR");
        wr(c, 0x20, 4, 0x1000);
        wr(c, 0x24, 4, 0x2);
        assert_eq!(rd(c, 0x20, 8), 0x2_0000_1000);
        wr(c, 0x28, 8, 0x3000);
        assert_eq!(rd(c, 0x28, 8), 0x3000);
        assert_eq!(rd(c, 0x1e, 2), 1, "notify offset = queue index");
        assert_eq!(wr(c, 0x1c, 2, 1), Some(CommonEvent::QueueEnabled(1)));
        // Locked once enabled.
        wr(c, 0x18, 2, 32);
        wr(c, 0x20, 8, 0x9000);
        assert_eq!(rd(c, 0x18, 2), 64);
        assert_eq!(rd(c, 0x20, 8), 0x2_0000_1000);
    }

    #[test]
    fn out_of_range_queue_select_reads_zero() {
        let c = &mut cc();
        wr(c, 0x16, 2, 9);
        assert_eq!(rd(c, 0x18, 2), 0, "size 0 means no such queue");
        assert_eq!(wr(c, 0x1c, 2, 1), None);
    }

    #[test]
    fn bad_widths_and_offsets_are_harmless() {
        let c = &mut cc();
        assert_eq!(rd(c, 0x13, 2), 0, "straddles two fields");
        assert_eq!(rd(c, 0x40, 4), 0);
        assert_eq!(rd(c, 0x04, 3), 0);
        assert_eq!(wr(c, 0x13, 2, 0xffff), None);
        assert_eq!(wr(c, 0x3c, 4, 1), None);
        // A byte of the 32-bit feature select.
        wr(c, 0x01, 1, 1);
        assert_eq!(rd(c, 0x00, 4), 0x100);
    }

    #[test]
    fn features_ok_and_driver_ok_in_one_write_do_not_start_the_device() {
        let c = &mut cc();
        wr(c, 0x14, 1, (status::ACKNOWLEDGE | status::DRIVER) as u64);
        wr(c, 0x08, 4, 1);
        wr(c, 0x0c, 4, 1);
        let both = (status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK) as u64;
        assert_eq!(wr(c, 0x14, 1, both), Some(CommonEvent::FeaturesAccepted(1 << 32)));
        assert_eq!(rd(c, 0x14, 1) as u8 & status::DRIVER_OK, 0);
        assert_eq!(wr(c, 0x14, 1, both), Some(CommonEvent::DriverOk));
        // Refused features with DRIVER_OK in the same write: neither bit sticks.
        let c = &mut cc();
        wr(c, 0x14, 1, (status::ACKNOWLEDGE | status::DRIVER) as u64);
        assert_eq!(wr(c, 0x14, 1, both), None);
        assert_eq!(rd(c, 0x14, 1) as u8 & (status::DRIVER_OK | status::FEATURES_OK), 0);
    }

    #[test]
    fn status_bits_cannot_be_cleared_without_reset() {
        let c = &mut cc();
        negotiate(c, FEATURES);
        assert_eq!(wr(c, 0x14, 1, status::ACKNOWLEDGE as u64), None);
        assert_ne!(rd(c, 0x14, 1) as u8 & status::FEATURES_OK, 0);
        assert_eq!(wr(c, 0x14, 1, 0x80 | rd(c, 0x14, 1)), Some(CommonEvent::Failed));
    }
}
