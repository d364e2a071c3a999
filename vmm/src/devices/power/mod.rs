//! Platform power control: ACPI sleep and reset registers, pvpanic, i8042 reset.
mod device;
pub use device::PowerDevice;
