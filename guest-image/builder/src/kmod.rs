//! Kernel module lookup and dependency resolution for an extracted Debian
//! `linux-image-*` package.
//!
//! Debian generates `modules.dep` with `depmod` in the package's postinst, so
//! an extracted (not installed) package normally has none. Dependencies come
//! from `modules.dep` when it exists and otherwise from each module's own
//! `.modinfo` ELF section (`depends=a,b`), which is what depmod reads too.
//! Modules may be stored as `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`; compressed
//! ones are unpacked with the matching command-line tool because busybox
//! `insmod` only takes plain ELF objects.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors from module lookup and resolution.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("no lib/modules/<release> directory under {0}")]
    NoModulesDir(PathBuf),
    #[error("several kernel releases under {dir}: {releases:?}")]
    SeveralReleases { dir: PathBuf, releases: Vec<String> },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kernel module {module:?} not found under {dir}")]
    NotFound { module: String, dir: PathBuf },
    #[error("kernel module {path} is not a valid ELF object")]
    BadElf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("dependency cycle through kernel module {0:?}")]
    Cycle(String),
    #[error("kernel module {0:?} is neither in modules.dep nor in modules.builtin")]
    NotInModulesDep(String),
    #[error("cannot decompress {path} with {tool} (scripts/setup.sh installs it): {reason}")]
    Decompress { path: PathBuf, tool: &'static str, reason: String },
}

/// Why a module file is not an object whose sections can be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("missing ELF magic")]
    Magic,
    #[error("not a little-endian ELF64 object")]
    NotElf64Le,
    #[error("truncated ELF header")]
    Truncated,
    #[error("section name table out of bounds")]
    NamesOutOfBounds,
    #[error("section header {0} out of bounds")]
    SectionOutOfBounds(usize),
    #[error("no .modinfo section")]
    NoModinfo,
}

/// Canonical module name: file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(file_name: &str) -> String {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    let stem =
        ["ko.xz", "ko.zst", "ko.gz", "ko"].iter().find_map(|ext| base.strip_suffix(&format!(".{ext}"))).unwrap_or(base);
    stem.replace('-', "_")
}

/// Parses `modules.dep` (`kernel/a.ko: kernel/b.ko kernel/c.ko`) into a map
/// from module name to the names of its direct dependencies.
pub fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| (module_name(module.trim()), deps.split_whitespace().map(module_name).collect()))
        .collect()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Returns the contents of the named section of a little-endian ELF64 object.
pub fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, ElfError> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError::Magic);
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(ElfError::NotElf64Le);
    }
    let shoff = u64_at(elf, 0x28).ok_or(ElfError::Truncated)? as usize;
    let shentsize = u16_at(elf, 0x3a).ok_or(ElfError::Truncated)? as usize;
    let shnum = u16_at(elf, 0x3c).ok_or(ElfError::Truncated)? as usize;
    let shstrndx = u16_at(elf, 0x3e).ok_or(ElfError::Truncated)? as usize;
    let section = |i: usize| -> Option<(u32, &'a [u8])> {
        let h = shoff + i * shentsize;
        let name = u32_at(elf, h)?;
        let off = u64_at(elf, h + 24)? as usize;
        let size = u64_at(elf, h + 32)? as usize;
        Some((name, elf.get(off..off.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx).ok_or(ElfError::NamesOutOfBounds)?;
    for i in 0..shnum {
        let (name_off, data) = section(i).ok_or(ElfError::SectionOutOfBounds(i))?;
        let name = names.get(name_off as usize..).and_then(|s| s.split(|&b| b == 0).next()).unwrap_or_default();
        if name == wanted.as_bytes() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The `depends=` list from a module's `.modinfo` section.
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>, ElfError> {
    let modinfo = elf_section(elf, ".modinfo")?.ok_or(ElfError::NoModinfo)?;
    Ok(modinfo
        .split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| String::from_utf8_lossy(v).split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|d| !d.is_empty())
        .map(|d| module_name(&d))
        .collect())
}

/// Orders `roots` and their transitive dependencies so that every module comes
/// after all of its dependencies (the order `insmod` needs). Each module
/// appears once.
pub fn load_order<F>(roots: &[&str], mut deps_of: F) -> Result<Vec<String>, KmodError>
where
    F: FnMut(&str) -> Result<Vec<String>, KmodError>,
{
    fn visit<F>(
        m: &str,
        deps_of: &mut F,
        done: &mut HashSet<String>,
        active: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), KmodError>
    where
        F: FnMut(&str) -> Result<Vec<String>, KmodError>,
    {
        if done.contains(m) {
            return Ok(());
        }
        if active.iter().any(|a| a == m) {
            return Err(KmodError::Cycle(m.to_string()));
        }
        active.push(m.to_string());
        for d in deps_of(m)? {
            visit(&d, deps_of, done, active, out)?;
        }
        active.pop();
        done.insert(m.to_string());
        out.push(m.to_string());
        Ok(())
    }
    let (mut done, mut active, mut out) = (HashSet::new(), Vec::new(), Vec::new());
    for r in roots {
        visit(&module_name(r), &mut deps_of, &mut done, &mut active, &mut out)?;
    }
    Ok(out)
}

/// The modules of one kernel release inside an extracted package.
#[derive(Debug)]
pub struct ModuleTree {
    dir: PathBuf,
    release: String,
    files: HashMap<String, PathBuf>,
    modules_dep: Option<HashMap<String, Vec<String>>>,
}

impl ModuleTree {
    /// Opens `<root>/lib/modules/<release>` (or `usr/lib/modules`); the
    /// package must contain exactly one release.
    pub fn open(package_root: &Path) -> Result<Self, KmodError> {
        let base = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|p| package_root.join(p))
            .find(|p| p.is_dir())
            .ok_or_else(|| KmodError::NoModulesDir(package_root.to_path_buf()))?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KmodError::Io { path, source }
        };
        let mut releases: Vec<String> = std::fs::read_dir(&base)
            .map_err(io_err(&base))?
            .filter_map(Result::ok)
            .filter(|e| e.path().join("kernel").is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        releases.sort();
        let release = match releases.as_slice() {
            [one] => one.clone(),
            [] => return Err(KmodError::NoModulesDir(package_root.to_path_buf())),
            _ => return Err(KmodError::SeveralReleases { dir: base, releases }),
        };
        let dir = base.join(&release);
        let mut files = HashMap::new();
        index_modules(&dir.join("kernel"), &mut files)?;
        let dep_path = dir.join("modules.dep");
        let modules_dep = match std::fs::read_to_string(&dep_path) {
            Ok(text) => Some(parse_modules_dep(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(KmodError::Io { path: dep_path, source: e }),
        };
        Ok(Self { dir, release, files, modules_dep })
    }

    /// The kernel release (`uname -r` of this kernel), e.g. `6.1.0-56-amd64`.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// Whether the tree has a `modules.dep` (otherwise `.modinfo` is used).
    pub fn has_modules_dep(&self) -> bool {
        self.modules_dep.is_some()
    }

    /// Path of a module file by (canonical or file) name.
    pub fn path_of(&self, module: &str) -> Result<&Path, KmodError> {
        self.files
            .get(&module_name(module))
            .map(PathBuf::as_path)
            .ok_or_else(|| KmodError::NotFound { module: module.to_string(), dir: self.dir.clone() })
    }

    /// Direct dependencies of a module.
    pub fn depends(&self, module: &str) -> Result<Vec<String>, KmodError> {
        let name = module_name(module);
        if let Some(map) = &self.modules_dep {
            return map.get(&name).cloned().ok_or_else(|| KmodError::NotFound { module: name, dir: self.dir.clone() });
        }
        let path = self.path_of(&name)?;
        let elf = read_module(path)?;
        modinfo_depends(&elf).map_err(|source| KmodError::BadElf { path: path.to_path_buf(), source })
    }

    /// `roots` and all their dependencies in load order.
    pub fn load_order(&self, roots: &[&str]) -> Result<Vec<String>, KmodError> {
        load_order(roots, |m| self.depends(m))
    }
}

fn index_modules(dir: &Path, files: &mut HashMap<String, PathBuf>) -> Result<(), KmodError> {
    let entries = std::fs::read_dir(dir).map_err(|source| KmodError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| KmodError::Io { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        if path.is_dir() {
            index_modules(&path, files)?;
        } else {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".ko") {
                files.insert(module_name(&name), path);
            }
        }
    }
    Ok(())
}

/// Reads a module file as a plain ELF object, decompressing if needed.
pub fn read_module(path: &Path) -> Result<Vec<u8>, KmodError> {
    let name = path.to_string_lossy();
    let tool: Option<&'static str> = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        return std::fs::read(path).map_err(|source| KmodError::Io { path: path.to_path_buf(), source });
    };
    let out = Command::new(tool).args(["-d", "-c", "-q"]).arg(path).output().map_err(|e| KmodError::Decompress {
        path: path.to_path_buf(),
        tool,
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(KmodError::Decompress {
            path: path.to_path_buf(),
            tool,
            reason: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(out.stdout)
}

/// Test helpers for this crate's and the smoke tests' unit tests.
#[doc(hidden)]
pub mod test_support {
    /// Builds a minimal ELF64 object with `.shstrtab` and `.modinfo`.
    pub fn tiny_elf(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo);
        let shstr_off = elf.len();
        elf.extend_from_slice(shstrtab);
        while elf.len() % 8 != 0 {
            elf.push(0);
        }
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, shstr_off, shstrtab.len());
        sh(11, modinfo_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::tiny_elf;
    use super::*;

    #[test]
    fn names_are_canonical() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko"), "kvm_amd");
        assert_eq!(module_name("kvm-intel.ko.xz"), "kvm_intel");
        assert_eq!(module_name("irqbypass.ko.zst"), "irqbypass");
        assert_eq!(module_name("kvm_amd"), "kvm_amd");
    }

    #[test]
    fn modules_dep_parses_and_orders() {
        let dep = "kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n\
                   kernel/arch/x86/kvm/kvm-amd.ko.xz: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko kernel/drivers/crypto/ccp/ccp.ko\n\
                   kernel/virt/lib/irqbypass.ko:\n\
                   kernel/drivers/crypto/ccp/ccp.ko:\n";
        let map = parse_modules_dep(dep);
        assert_eq!(map["kvm_amd"], ["kvm", "irqbypass", "ccp"]);
        assert!(map["irqbypass"].is_empty());
        let order = load_order(&["kvm-amd", "kvm"], |m| Ok(map[m].clone())).unwrap();
        assert_eq!(order, ["irqbypass", "kvm", "ccp", "kvm_amd"]);
    }

    #[test]
    fn cycles_are_reported() {
        let map: HashMap<&str, Vec<String>> =
            [("a", vec!["b".to_string()]), ("b", vec!["a".to_string()])].into_iter().collect();
        let err = load_order(&["a"], |m| Ok(map[m].clone())).unwrap_err();
        assert!(matches!(err, KmodError::Cycle(_)));
    }

    #[test]
    fn modinfo_depends_reads_elf_section() {
        let elf = tiny_elf(b"license=GPL\0depends=kvm,ccp\0name=kvm_amd\0");
        assert_eq!(modinfo_depends(&elf).unwrap(), ["kvm", "ccp"]);
        let none = tiny_elf(b"license=GPL\0depends=\0");
        assert!(modinfo_depends(&none).unwrap().is_empty());
        assert!(modinfo_depends(b"not an elf").is_err());
    }

    #[test]
    fn module_tree_uses_modinfo_without_modules_dep() {
        let root = tempfile::tempdir().unwrap();
        let kdir = root.path().join("lib/modules/6.1.0-9-amd64/kernel/arch/x86/kvm");
        let vdir = root.path().join("lib/modules/6.1.0-9-amd64/kernel/virt/lib");
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::create_dir_all(&vdir).unwrap();
        std::fs::write(kdir.join("kvm.ko"), tiny_elf(b"depends=irqbypass\0")).unwrap();
        std::fs::write(kdir.join("kvm-intel.ko"), tiny_elf(b"depends=kvm\0")).unwrap();
        std::fs::write(vdir.join("irqbypass.ko"), tiny_elf(b"depends=\0")).unwrap();
        let tree = ModuleTree::open(root.path()).unwrap();
        assert_eq!(tree.release(), "6.1.0-9-amd64");
        assert!(!tree.has_modules_dep());
        assert_eq!(tree.load_order(&["kvm-intel"]).unwrap(), ["irqbypass", "kvm", "kvm_intel"]);
        assert!(matches!(tree.path_of("kvm-amd"), Err(KmodError::NotFound { .. })));
    }
}
