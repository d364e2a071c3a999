//! Kernel modules: which to load, in which order, and loading them.
//!
//! The image builder resolves dependencies at build time (from the kernel's
//! own modinfo) and writes one list per purpose into [`MODULE_DIR`]:
//! `modules-common` (file systems, virtio, DRM, input) and `modules-amd` /
//! `modules-intel` (KVM for that vendor), one module name per line, each
//! after its dependencies, with the decompressed `<name>.ko` beside them.
//! PID 1 loads the common list first (the display comes up from it), then
//! the vendor list it picks from `/proc/cpuinfo`, with finit_module(2); a
//! module already in the kernel (built in or loaded) counts as loaded.

use std::ffi::CString;
use std::path::Path;

/// Where the host image keeps its modules and their lists.
pub const MODULE_DIR: &str = "/lib/modules/rayos";

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module list {file}: {source}")]
    List { file: String, source: std::io::Error },
    #[error("module {module} ({file}): {source}")]
    Load { module: String, file: String, source: std::io::Error },
    #[error(
        "the CPU has neither svm nor vmx in /proc/cpuinfo: this machine cannot run VMs (enable nested virtualisation)"
    )]
    NoVirtualisation,
}

/// The CPU vendor's virtualisation extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Amd,
    Intel,
}

impl Vendor {
    /// From `/proc/cpuinfo`'s flags.
    pub fn from_cpuinfo(cpuinfo: &str) -> Option<Vendor> {
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        if has("svm") {
            Some(Vendor::Amd)
        } else if has("vmx") {
            Some(Vendor::Intel)
        } else {
            None
        }
    }

    pub fn list(self) -> &'static str {
        match self {
            Vendor::Amd => "modules-amd",
            Vendor::Intel => "modules-intel",
        }
    }
}

/// Module names of a list file: one per line, `#` comments and blanks skipped.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

/// The lists concatenated in order, each module once (its first place).
pub fn merge(lists: &[Vec<String>]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for m in lists.iter().flatten() {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

/// Names in `/proc/modules` (loaded modules).
pub fn loaded(proc_modules: &str) -> Vec<String> {
    proc_modules.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// Reads `<dir>/<list>` (missing: empty).
pub fn read_list(dir: &Path, list: &str) -> Result<Vec<String>, ModuleError> {
    let file = dir.join(list);
    match std::fs::read_to_string(&file) {
        Ok(t) => Ok(parse_list(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(source) => Err(ModuleError::List { file: file.display().to_string(), source }),
    }
}

/// Loads `<dir>/<module>.ko` with finit_module(2); EEXIST is success.
pub fn load(dir: &Path, module: &str) -> Result<(), ModuleError> {
    let file = dir.join(format!("{module}.ko"));
    let err = |source| ModuleError::Load { module: module.into(), file: file.display().to_string(), source };
    let f = std::fs::File::open(&file).map_err(err)?;
    let params = CString::default();
    // SAFETY: the fd is open for the call's duration and params is a valid
    // empty NUL-terminated string; the kernel copies what it needs.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, std::os::fd::AsRawFd::as_raw_fd(&f), params.as_ptr(), 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(err(e));
        }
    }
    Ok(())
}

/// Loads the modules of `lists` in order, skipping those already in the kernel.
fn load_lists(dir: &Path, lists: &[&str]) -> Result<Vec<String>, ModuleError> {
    let mut all = vec![];
    for l in lists {
        all.push(read_list(dir, l)?);
    }
    let already = loaded(&std::fs::read_to_string("/proc/modules").unwrap_or_default());
    let mut done = vec![];
    for m in merge(&all) {
        if already.iter().any(|a| a == &m) {
            continue;
        }
        load(dir, &m)?;
        done.push(m);
    }
    Ok(done)
}

/// Loads `modules-common` (file systems, virtio, display, input).
pub fn load_common(dir: &Path) -> Result<Vec<String>, ModuleError> {
    load_lists(dir, &["modules-common"])
}

/// Loads KVM for this CPU's vendor; returns the vendor and what was loaded.
pub fn load_kvm(dir: &Path) -> Result<(Vendor, Vec<String>), ModuleError> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let vendor = Vendor::from_cpuinfo(&cpuinfo).ok_or(ModuleError::NoVirtualisation)?;
    Ok((vendor, load_lists(dir, &[vendor.list()])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendor_comes_from_the_flags_line() {
        assert_eq!(Vendor::from_cpuinfo("vendor_id\t: AuthenticAMD\nflags\t: fpu svm sse\n"), Some(Vendor::Amd));
        assert_eq!(Vendor::from_cpuinfo("flags\t: fpu vmx\n"), Some(Vendor::Intel));
        assert_eq!(Vendor::from_cpuinfo("flags\t: fpu svmx\n"), None);
        assert_eq!(Vendor::from_cpuinfo(""), None);
    }

    #[test]
    fn lists_merge_in_order_each_module_once() {
        let common = parse_list("# fs\nvirtio\nvirtio_ring\n\nfuse\n");
        let amd = parse_list("irqbypass\nkvm\nkvm_amd\nvirtio\n");
        assert_eq!(merge(&[common, amd]), ["virtio", "virtio_ring", "fuse", "irqbypass", "kvm", "kvm_amd"]);
    }

    #[test]
    fn loaded_modules_are_read_from_proc_modules() {
        let text = "kvm_amd 196608 0 - Live 0x0\nkvm 1347584 1 kvm_amd, Live 0x0\n";
        assert_eq!(loaded(text), ["kvm_amd", "kvm"]);
    }

    #[test]
    fn a_missing_list_is_empty_and_a_missing_module_names_its_file() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_list(d.path(), "modules-amd").unwrap().is_empty());
        let e = load(d.path(), "nope").unwrap_err().to_string();
        assert!(e.contains("nope.ko"), "{e}");
    }
}
