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

/// Adds a host directory tree at the same path (symlinks kept as symlinks).
pub(super) fn add_tree(a: &mut Archive, dir: &Path) -> Result<usize, DrmError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DrmError::ReadDir { path: dir.to_path_buf(), source })?;
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(|source| DrmError::ReadDir { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        let dest = path.to_string_lossy().into_owned();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|source| DrmError::ReadDir { path: path.clone(), source })?;
        if meta.file_type().is_symlink() {
            let target =
                std::fs::read_link(&path).map_err(|source| DrmError::ReadDir { path: path.clone(), source })?;
            a.symlink(&dest, &target.to_string_lossy())?;
        } else if meta.is_dir() {
            a.dir(&dest, 0o755)?;
            n += add_tree(a, &path)?;
        } else if meta.is_file() {
            a.file_from_host(&dest, &path, Some(0o644))?;
            n += 1;
        }
    }
    Ok(n)
}

pub(super) fn find_first(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Writes the test host initramfs; returns its size and the module load order.
pub fn build_image(inputs: &ImageInputs<'_>, out: &Path) -> Result<(u64, Vec<String>), DrmError> {
    let applets = testhost::busybox_applets(inputs.busybox)?;
    let mut a = testhost::base_archive(inputs.busybox, &applets)?;
    a.file_bytes("/init", inputs.init.clone(), 0o755)?;
    let order = inputs.modules.load_order(MODULES)?;
    testhost::add_modules(&mut a, inputs.modules, &order, &format!("{MODULE_LIST_DIR}/{MODULE_LIST}"))?;
    for (binary, dest) in [(inputs.compositor, COMPOSITOR), (inputs.client, CLIENT), (inputs.udevadm, UDEVADM)] {
        let n = testhost::add_binary_with_libs(&mut a, binary, dest)?;
        tracing::info!("test host: {} as {dest} with {n} shared libraries", binary.display());
    }
    // systemd-udevd is udevadm under another name on current systemd.
    let same = |p: &Path| std::fs::canonicalize(p).ok();
    if same(inputs.udevd).is_some() && same(inputs.udevd) == same(inputs.udevadm) {
        a.symlink(UDEVD, UDEVADM)?;
    } else {
        testhost::add_binary_with_libs(&mut a, inputs.udevd, UDEVD)?;
    }
    for rule in UDEV_RULES {
        let path = UDEV_RULE_DIRS
            .iter()
            .map(|d| Path::new(d).join(rule))
            .find(|p| p.is_file())
            .ok_or_else(|| DrmError::NoRule { rule: rule.to_string(), dirs: UDEV_RULE_DIRS })?;
        a.file_from_host(&format!("/lib/udev/rules.d/{rule}"), &path, Some(0o644))?;
    }
    match find_first(HWDB) {
        Some(hwdb) => {
            a.file_from_host("/lib/udev/hwdb.bin", &hwdb, Some(0o444))?;
        }
        None => {
            tracing::warn!("no udev hwdb.bin in {HWDB:?}: input devices get no hwdb properties")
        }
    }
    for dir in DATA_DIRS {
        let n = add_tree(&mut a, Path::new(dir))?;
        tracing::info!("test host: {dir} ({n} files)");
    }
    a.dir("/etc/udev", 0o755)?;
    let bytes = a.write_file(out)?;
    Ok((bytes, order))
}
