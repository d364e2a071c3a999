//! The power device turns the guest's power requests into [`VmEvent`]s.
//!
//! - ACPI hardware-reduced sleep control register (ACPI 6.5, 4.8.3.7): a
//!   write with SLP_EN (bit 5) and SLP_TYP (bits 4:2) = 5, the value of
//!   `\_S5_`, is a poweroff. The sleep status register reads 0.
//! - ACPI reset register (FADT RESET_REG): writing `ACPI_RESET_VALUE` resets.
//! - pvpanic (QEMU0001): reading returns the supported events (bit 0
//!   PANICKED, bit 1 CRASH_LOADED); writing bit 0 reports a panic.
//! - i8042 command port: 0xfe pulses the reset line (the kernel's fallback
//!   reboot method); status reads return 0 (no data, input buffer empty).

use std::sync::mpsc::Sender;

use crate::devices::{BusDevice, PanicWatch, VmEvent};
use crate::layout::*;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;
const S5: u8 = 5;
const PVPANIC_PANICKED: u8 = 1 << 0;
const PVPANIC_CRASH_LOADED: u8 = 1 << 1;
const I8042_RESET: u8 = 0xfe;

/// See the module documentation.
pub struct PowerDevice {
    events: Sender<VmEvent>,
    panic: PanicWatch,
}

impl PowerDevice {
    pub fn new(events: Sender<VmEvent>, panic: PanicWatch) -> Self {
        PowerDevice { events, panic }
    }

    /// The port ranges this device answers.
    pub fn ports() -> [(u16, u16); 4] {
        [(ACPI_SLEEP_CONTROL_PORT, 2), (ACPI_RESET_PORT, 1), (PVPANIC_PORT, 1), (I8042_COMMAND_PORT, 1)]
    }

    fn send(&self, e: VmEvent) {
        // The receiver only goes away while the VMM is shutting down.
        let _ = self.events.send(e);
    }
}

impl BusDevice for PowerDevice {
    fn read(&mut self, base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if base == PVPANIC_PORT as u64 && !data.is_empty() {
            data[0] = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        let port = (base + offset) as u16;
        match port {
            ACPI_SLEEP_CONTROL_PORT => {
                if v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5 {
                    self.send(VmEvent::Poweroff);
                } else if v & SLP_EN != 0 {
                    tracing::warn!(
                        "guest asked for sleep state {} which RayOS does not offer",
                        (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK
                    );
                }
            }
            ACPI_RESET_PORT if v == ACPI_RESET_VALUE => self.send(VmEvent::Reboot),
            PVPANIC_PORT if v & PVPANIC_PANICKED != 0 => {
                let line = self.panic.lock().expect("panic watch lock").clone();
                self.send(VmEvent::Panic(line));
            }
            PVPANIC_PORT if v & PVPANIC_CRASH_LOADED != 0 => {
                tracing::info!("guest reports a crash kernel was loaded");
            }
            I8042_COMMAND_PORT if v == I8042_RESET => self.send(VmEvent::Reboot),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn dev() -> (PowerDevice, std::sync::mpsc::Receiver<VmEvent>, PanicWatch) {
        let (tx, rx) = channel();
        let w = PanicWatch::default();
        (PowerDevice::new(tx, w.clone()), rx, w)
    }

    #[test]
    fn s5_is_poweroff_other_states_are_not() {
        let (mut d, rx, _) = dev();
        d.write(0x600, 0, &[(S5 << 2) | SLP_EN]);
        assert_eq!(rx.try_recv(), Ok(VmEvent::Poweroff));
        d.write(0x600, 0, &[(3 << 2) | SLP_EN]); // S3
        d.write(0x600, 0, &[S5 << 2]); // no SLP_EN
        assert!(rx.try_recv().is_err());
        let mut b = [0xffu8];
        d.read(0x600, 1, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn reset_register_and_i8042_reboot() {
        let (mut d, rx, _) = dev();
        d.write(ACPI_RESET_PORT as u64, 0, &[ACPI_RESET_VALUE]);
        assert_eq!(rx.try_recv(), Ok(VmEvent::Reboot));
        d.write(ACPI_RESET_PORT as u64, 0, &[0x42]);
        assert!(rx.try_recv().is_err());
        d.write(0x64, 0, &[0xfe]);
        assert_eq!(rx.try_recv(), Ok(VmEvent::Reboot));
        d.write(0x64, 0, &[0xad]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn pvpanic_reports_panic_with_console_line() {
        let (mut d, rx, w) = dev();
        let mut b = [0u8];
        d.read(0x505, 0, &mut b);
        assert_eq!(b, [3]);
        *w.lock().unwrap() = Some("Kernel panic - not syncing: test".into());
        d.write(0x505, 0, &[1]);
        assert_eq!(rx.try_recv(), Ok(VmEvent::Panic(Some("Kernel panic - not syncing: test".into()))));
        d.write(0x505, 0, &[2]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn empty_writes_are_ignored() {
        let (mut d, rx, _) = dev();
        d.write(0x600, 0, &[]);
        assert!(rx.try_recv().is_err());
    }
}
