//! The virtio-input configuration window: what a device reports about
//! itself, answered by `select` and `subsel` (virtio 1.2, 5.8.5).

use virtio_bindings::virtio_input as b;

use super::event::{ABS_MAX, ABS_X, ABS_Y, BTN_LEFT, BTN_MIDDLE, BTN_RIGHT, EV_ABS, EV_KEY, EV_REL, EV_SYN, REL_WHEEL};

/// Size of the configuration window: select, subsel, size, 5 reserved, 128 union bytes.
pub const CONFIG_SIZE: usize = 136;
/// Offset of the union in the window.
const UNION: usize = 8;
/// Event type for autorepeat (the keyboard lets the guest repeat keys).
const EV_REP: u16 = 0x14;
/// The highest key code the keyboard reports (KEY_MICMUTE, 248).
const KEY_MAX_REPORTED: u16 = 248;

/// One axis's range (`ABS_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsInfo {
    pub min: u32,
    pub max: u32,
    pub fuzz: u32,
    pub flat: u32,
    pub res: u32,
}

/// What one device reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDevice {
    pub name: String,
    pub serial: String,
    /// (bustype, vendor, product, version)
    pub ids: (u16, u16, u16, u16),
    /// Input properties (`INPUT_PROP_*` bits).
    pub props: Vec<u16>,
    /// For each event type, the codes the device emits.
    pub events: Vec<(u16, Vec<u16>)>,
    pub abs: Vec<(u16, AbsInfo)>,
}

impl InputDevice {
    /// A keyboard of every key code up to KEY_MICMUTE, with autorepeat.
    pub fn keyboard() -> InputDevice {
        InputDevice {
            name: "RayOS virtio keyboard".into(),
            serial: "rayos-keyboard".into(),
            ids: (0x06, 0x0627, 0x0001, 1), // BUS_VIRTUAL
            props: Vec::new(),
            events: vec![(EV_KEY, (1..=KEY_MAX_REPORTED).collect()), (EV_REP, Vec::new())],
            abs: Vec::new(),
        }
    }

    /// An absolute tablet: X and Y in 0..=ABS_MAX, three buttons, a wheel.
    pub fn tablet() -> InputDevice {
        let axis = AbsInfo { min: 0, max: ABS_MAX, fuzz: 0, flat: 0, res: 0 };
        InputDevice {
            name: "RayOS virtio tablet".into(),
            serial: "rayos-tablet".into(),
            ids: (0x06, 0x0627, 0x0003, 1),
            props: Vec::new(),
            events: vec![
                (EV_KEY, vec![BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]),
                (EV_REL, vec![REL_WHEEL]),
                (EV_ABS, vec![ABS_X, ABS_Y]),
            ],
            abs: vec![(ABS_X, axis), (ABS_Y, axis)],
        }
    }

    /// The union's contents for `select`/`subsel` (empty: size 0).
    fn answer(&self, select: u8, subsel: u8) -> Vec<u8> {
        let bits = |codes: &[u16]| {
            let mut v = vec![0u8; 128];
            for &c in codes {
                if let Some(byte) = v.get_mut(c as usize / 8) {
                    *byte |= 1 << (c % 8);
                }
            }
            while v.last() == Some(&0) {
                v.pop();
            }
            v
        };
        match u32::from(select) {
            b::virtio_input_config_select_VIRTIO_INPUT_CFG_ID_NAME if subsel == 0 => {
                self.name.as_bytes()[..self.name.len().min(128)].to_vec()
            }
            b::virtio_input_config_select_VIRTIO_INPUT_CFG_ID_SERIAL if subsel == 0 => {
                self.serial.as_bytes()[..self.serial.len().min(128)].to_vec()
            }
            b::virtio_input_config_select_VIRTIO_INPUT_CFG_ID_DEVIDS if subsel == 0 => {
                let (bus, vendor, product, version) = self.ids;
                [bus, vendor, product, version].iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            b::virtio_input_config_select_VIRTIO_INPUT_CFG_PROP_BITS if subsel == 0 => bits(&self.props),
            b::virtio_input_config_select_VIRTIO_INPUT_CFG_EV_BITS => {
                if subsel == EV_SYN as u8 {
                    return Vec::new();
                }
                self.events.iter().find(|(t, _)| *t == u16::from(subsel)).map(|(_, c)| bits(c)).unwrap_or_default()
            }
            b::virtio_input_config_select_VIRTIO_INPUT_CFG_ABS_INFO => self
                .abs
                .iter()
                .find(|(a, _)| *a == u16::from(subsel))
                .map(|(_, i)| [i.min, i.max, i.fuzz, i.flat, i.res].iter().flat_map(|v| v.to_le_bytes()).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// The device's configuration window as the guest sees it.
#[derive(Debug, Clone)]
pub struct ConfigWindow {
    device: InputDevice,
    bytes: [u8; CONFIG_SIZE],
}

impl ConfigWindow {
    pub fn new(device: InputDevice) -> ConfigWindow {
        ConfigWindow { device, bytes: [0; CONFIG_SIZE] }
    }

    pub fn device(&self) -> &InputDevice {
        &self.device
    }

    /// A guest read at `offset`; bytes outside the window read as 0.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.bytes.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// A guest write: only `select` (0) and `subsel` (1) are writable;
    /// writing either recomputes `size` and the union.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut changed = false;
        for (i, b) in data.iter().enumerate() {
            if let Some(o @ (0 | 1)) = offset.checked_add(i as u64) {
                self.bytes[o as usize] = *b;
                changed = true;
            }
        }
        if changed {
            let answer = self.device.answer(self.bytes[0], self.bytes[1]);
            self.bytes[2] = answer.len() as u8;
            self.bytes[UNION..].fill(0);
            self.bytes[UNION..UNION + answer.len()].copy_from_slice(&answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(w: &mut ConfigWindow, select: u32, subsel: u16) -> Vec<u8> {
        w.write(0, &[select as u8, subsel as u8]);
        let mut size = [0u8];
        w.read(2, &mut size);
        let mut u = vec![0u8; size[0] as usize];
        w.read(UNION as u64, &mut u);
        u
    }

    #[test]
    fn the_guest_reads_what_each_device_reports() {
        let mut k = ConfigWindow::new(InputDevice::keyboard());
        assert_eq!(query(&mut k, b::virtio_input_config_select_VIRTIO_INPUT_CFG_ID_NAME, 0), b"RayOS virtio keyboard");
        let keys = query(&mut k, b::virtio_input_config_select_VIRTIO_INPUT_CFG_EV_BITS, EV_KEY);
        assert_eq!(keys.len(), 32, "bits up to key 248");
        assert_eq!(keys[0], 0xfe, "keys 1-7 (KEY_ESC..), not 0");
        assert!(query(&mut k, b::virtio_input_config_select_VIRTIO_INPUT_CFG_EV_BITS, EV_ABS).is_empty());
        let ids = query(&mut k, b::virtio_input_config_select_VIRTIO_INPUT_CFG_ID_DEVIDS, 0);
        assert_eq!(ids, [6, 0, 0x27, 0x06, 1, 0, 1, 0]);

        let mut t = ConfigWindow::new(InputDevice::tablet());
        let abs = query(&mut t, b::virtio_input_config_select_VIRTIO_INPUT_CFG_EV_BITS, EV_ABS);
        assert_eq!(abs, [0b11], "ABS_X and ABS_Y");
        let info = query(&mut t, b::virtio_input_config_select_VIRTIO_INPUT_CFG_ABS_INFO, ABS_Y);
        assert_eq!(info.len(), 20);
        assert_eq!(u32::from_le_bytes(info[4..8].try_into().unwrap()), ABS_MAX);
        let btn = query(&mut t, b::virtio_input_config_select_VIRTIO_INPUT_CFG_EV_BITS, EV_KEY);
        assert_eq!(btn.len(), BTN_MIDDLE as usize / 8 + 1);
        assert!(query(&mut t, b::virtio_input_config_select_VIRTIO_INPUT_CFG_ABS_INFO, 0x35).is_empty());
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut t = ConfigWindow::new(InputDevice::tablet());
        // Unknown selects, writes to read-only bytes, reads past the window.
        assert!(query(&mut t, 0x7f, 3).is_empty());
        t.write(2, &[99]);
        t.write(u64::MAX, &[1, 2, 3]);
        let mut b = [0xaau8; 4];
        t.read(CONFIG_SIZE as u64 - 2, &mut b);
        assert_eq!(&b[2..], &[0, 0]);
        t.read(u64::MAX, &mut b);
        assert_eq!(b, [0; 4]);
        let mut size = [0u8];
        t.read(2, &mut size);
        assert_eq!(size[0], 0, "size is not writable");
    }
}
