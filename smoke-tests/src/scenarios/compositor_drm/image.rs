//! The test host image: the compositor, weston-simple-shm, udev and the
//! display and input modules, with the libraries they load.

use super::*;

/// Host files that go into the test host image.
#[derive(Debug)]
pub struct ImageInputs<'a> {
    pub busybox: &'a Path,
    pub modules: &'a ModuleTree,
    pub compositor: &'a Path,
    pub client: &'a Path,
    pub udevadm: &'a Path,
    pub udevd: &'a Path,
    pub init: String,
}

/// Writes the test host initramfs; returns its size and the module load order.
pub fn build_image(inputs: &ImageInputs<'_>, out: &Path) -> Result<(u64, Vec<String>), DrmError> {
    let applets = testhost::busybox_applets(inputs.busybox)?;
    let mut a = testhost::base_archive(inputs.busybox, &applets)?;
    a.file_bytes("/init", inputs.init.clone(), 0o755)?;
    let order = inputs.modules.load_order(MODULES)?;
    testhost::add_modules(&mut a, inputs.modules, &order, &format!("{MODULE_LIST_DIR}/{MODULE_LIST}"))?;
    for (binary, dest) in [(inputs.compositor, COMPOSITOR), (inputs.client, CLIENT)] {
        let n = testhost::add_binary_with_libs(&mut a, binary, dest)?;
        tracing::info!("test host: {} as {dest} with {n} shared libraries", binary.display());
    }
    // udev, its rules and hwdb, the xkb and libinput data: as the host image has them.
    rayos_image::hostimage::add_udev(&mut a, inputs.udevd, inputs.udevadm)?;
    let bytes = a.write_file(out)?;
    Ok((bytes, order))
}
