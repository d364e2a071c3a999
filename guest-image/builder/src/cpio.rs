//! Minimal writer for Linux initramfs images in the `newc` cpio format: the
//! guest image's initramfs and the smoke tests' test hosts use it.
//!
//! The kernel unpacks a newc archive directly or gzip-compressed (the writer
//! takes any `Write`, so a `GzEncoder` compresses on the way out). Entries are kept in a sorted map keyed by
//! their path: parents always precede children in the output, adding a path
//! twice replaces the earlier entry, and every parent directory of an entry is
//! created implicitly. Device nodes (e.g. `/dev/console`) can be written
//! without privileges because they only exist as headers in the archive.
//! Timestamps are zero and owners are root so archives are reproducible.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Errors from building or writing an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("initramfs entry path {0:?} is empty or not valid UTF-8")]
    BadPath(PathBuf),
    #[error("cannot read {path} for initramfs entry {entry}")]
    Source {
        path: PathBuf,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write initramfs {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const NEWC_MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

#[derive(Debug, Clone)]
enum Data {
    Bytes(Vec<u8>),
    /// Contents read from this host path when the archive is written.
    HostFile(PathBuf),
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(Data),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone)]
struct Entry {
    node: Node,
    /// Permission bits only (no file type).
    perm: u32,
}

/// An initramfs under construction.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Normalises an archive path: no leading `/`, no empty or `.` components.
fn normalise(path: &str) -> Result<String, CpioError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() {
        return Err(CpioError::BadPath(PathBuf::from(path)));
    }
    Ok(parts.join("/"))
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, node: Node, perm: u32) -> Result<(), CpioError> {
        let path = normalise(path)?;
        let comps: Vec<&str> = path.split('/').collect();
        for depth in 1..comps.len() {
            self.entries.entry(comps[..depth].join("/")).or_insert(Entry { node: Node::Dir, perm: 0o755 });
        }
        self.entries.insert(path, Entry { node, perm: perm & 0o7777 });
        Ok(())
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<&mut Self, CpioError> {
        self.insert(path, Node::Dir, perm)?;
        Ok(self)
    }

    /// Adds a regular file with the given contents.
    pub fn file_bytes(&mut self, path: &str, contents: impl Into<Vec<u8>>, perm: u32) -> Result<&mut Self, CpioError> {
        self.insert(path, Node::File(Data::Bytes(contents.into())), perm)?;
        Ok(self)
    }

    /// Adds a regular file whose contents are copied from `source` (symlinks
    /// followed) when the archive is written. `perm: None` keeps the source's
    /// permission bits.
    pub fn file_from_host(&mut self, path: &str, source: &Path, perm: Option<u32>) -> Result<&mut Self, CpioError> {
        let perm = match perm {
            Some(p) => p,
            None => std::fs::metadata(source)
                .map_err(|e| CpioError::Source { path: source.to_path_buf(), entry: path.to_string(), source: e })?
                .permissions()
                .mode(),
        };
        self.insert(path, Node::File(Data::HostFile(source.to_path_buf())), perm)?;
        Ok(self)
    }

    /// Adds a symbolic link `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, CpioError> {
        self.insert(path, Node::Symlink(target.to_string()), 0o777)?;
        Ok(self)
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<&mut Self, CpioError> {
        self.insert(path, Node::CharDev { major, minor }, perm)?;
        Ok(self)
    }

    /// Whether the archive already has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        normalise(path).map(|p| self.entries.contains_key(&p)).unwrap_or(false)
    }

    /// Number of entries (directories included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the archive to `out`; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, out: W) -> Result<u64, CpioError> {
        let mut w = CountingWriter { inner: out, count: 0 };
        let werr = |e: io::Error| CpioError::Write { path: PathBuf::from("<stream>"), source: e };
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            write_entry(&mut w, ino as u32 + 1, path, entry)?;
        }
        write_header(&mut w, 0, TRAILER, 0, 1, 0, (0, 0)).map_err(werr)?;
        // Pad the archive to a 512-byte boundary like cpio(1) does.
        let pad = (512 - (w.count % 512) as usize) % 512;
        w.write_all(&vec![0u8; pad]).map_err(werr)?;
        w.flush().map_err(werr)?;
        Ok(w.count)
    }

    /// Writes the archive to the file at `path`; returns its size in bytes.
    pub fn write_file(&self, path: &Path) -> Result<u64, CpioError> {
        let f = File::create(path).map_err(|e| CpioError::Write { path: path.to_path_buf(), source: e })?;
        self.write_to(BufWriter::with_capacity(1 << 20, f)).map_err(|e| match e {
            CpioError::Write { source, .. } => CpioError::Write { path: path.to_path_buf(), source },
            other => other,
        })
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad4<W: Write>(w: &mut CountingWriter<W>) -> io::Result<()> {
    let pad = (4 - (w.count % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..pad])
}

fn write_header<W: Write>(
    w: &mut CountingWriter<W>,
    ino: u32,
    name: &str,
    mode: u32,
    nlink: u32,
    filesize: u64,
    rdev: (u32, u32),
) -> io::Result<()> {
    let filesize = u32::try_from(filesize)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: file over 4 GiB")))?;
    let namesize = name.len() as u32 + 1;
    let fields = [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0];
    let mut header = String::with_capacity(110);
    header.push_str(NEWC_MAGIC);
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w)
}

fn write_entry<W: Write>(w: &mut CountingWriter<W>, ino: u32, path: &str, entry: &Entry) -> Result<(), CpioError> {
    let werr = |e: io::Error| CpioError::Write { path: PathBuf::from(path), source: e };
    match &entry.node {
        Node::Dir => write_header(w, ino, path, S_IFDIR | entry.perm, 2, 0, (0, 0)).map_err(werr),
        Node::Symlink(target) => write_header(w, ino, path, S_IFLNK | entry.perm, 1, target.len() as u64, (0, 0))
            .and_then(|_| w.write_all(target.as_bytes()))
            .and_then(|_| pad4(w))
            .map_err(werr),
        Node::CharDev { major, minor } => {
            write_header(w, ino, path, S_IFCHR | entry.perm, 1, 0, (*major, *minor)).map_err(werr)
        }
        Node::File(Data::Bytes(bytes)) => {
            write_header(w, ino, path, S_IFREG | entry.perm, 1, bytes.len() as u64, (0, 0))
                .and_then(|_| w.write_all(bytes))
                .and_then(|_| pad4(w))
                .map_err(werr)
        }
        Node::File(Data::HostFile(src)) => {
            let serr = |e: io::Error| CpioError::Source { path: src.clone(), entry: path.to_string(), source: e };
            let file = File::open(src).map_err(serr)?;
            let len = file.metadata().map_err(serr)?.len();
            write_header(w, ino, path, S_IFREG | entry.perm, 1, len, (0, 0)).map_err(werr)?;
            // Copy exactly `len` bytes so a file growing underneath us cannot
            // corrupt the archive framing.
            let copied = io::copy(&mut file.take(len), w).map_err(serr)?;
            if copied != len {
                return Err(serr(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file shrank while copying ({copied} of {len} bytes)"),
                )));
            }
            pad4(w).map_err(werr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed newc entry: (name, mode, rdev major, rdev minor, data).
    type Parsed = (String, u32, u32, u32, Vec<u8>);

    fn parse(buf: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        let field = |buf: &[u8], at: usize, i: usize| {
            let s = std::str::from_utf8(&buf[at + 6 + i * 8..at + 6 + (i + 1) * 8]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        loop {
            assert_eq!(&buf[pos..pos + 6], NEWC_MAGIC.as_bytes(), "magic at {pos}");
            let mode = field(buf, pos, 1);
            let size = field(buf, pos, 6) as usize;
            let (maj, min) = (field(buf, pos, 9), field(buf, pos, 10));
            let namesize = field(buf, pos, 11) as usize;
            let name_start = pos + 110;
            let name = std::str::from_utf8(&buf[name_start..name_start + namesize - 1]).unwrap();
            assert_eq!(buf[name_start + namesize - 1], 0);
            let data_start = (name_start + namesize + 3) & !3;
            let data = buf[data_start..data_start + size].to_vec();
            pos = (data_start + size + 3) & !3;
            if name == TRAILER {
                break;
            }
            out.push((name.to_string(), mode, maj, min, data));
        }
        assert_eq!(buf.len() % 512, 0, "archive padded to 512 bytes");
        assert!(buf[pos..].iter().all(|&b| b == 0));
        out
    }

    #[test]
    fn writes_parents_first_and_aligned() {
        let mut a = Archive::new();
        a.file_bytes("/bin/busybox", b"ELF!!".to_vec(), 0o755).unwrap();
        a.symlink("bin/sh", "busybox").unwrap();
        a.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        a.file_bytes("init", b"#!/bin/sh\n".to_vec(), 0o755).unwrap();
        let mut buf = Vec::new();
        let n = a.write_to(&mut buf).unwrap();
        assert_eq!(n as usize, buf.len());
        let entries = parse(&buf);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init"]);
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(entries[1].1, S_IFREG | 0o755);
        assert_eq!(entries[1].4, b"ELF!!");
        assert_eq!(entries[2].1, S_IFLNK | 0o777);
        assert_eq!(entries[2].4, b"busybox");
        assert_eq!((entries[4].1, entries[4].2, entries[4].3), (S_IFCHR | 0o600, 5, 1));
    }

    #[test]
    fn later_entry_replaces_earlier_and_paths_normalise() {
        let mut a = Archive::new();
        a.file_bytes("etc/x", b"one".to_vec(), 0o644).unwrap();
        a.file_bytes("/etc//./x", b"two".to_vec(), 0o600).unwrap();
        assert!(a.contains("/etc/x"));
        assert_eq!(a.len(), 2);
        let mut buf = Vec::new();
        a.write_to(&mut buf).unwrap();
        let e = parse(&buf);
        assert_eq!(e[1], ("etc/x".to_string(), S_IFREG | 0o600, 0, 0, b"two".to_vec()));
        assert!(matches!(a.clone().dir("/", 0o755), Err(CpioError::BadPath(_))));
    }

    #[test]
    fn host_file_is_copied_and_cpio_tool_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("payload");
        std::fs::write(&src, vec![7u8; 1001]).unwrap();
        let mut a = Archive::new();
        a.file_from_host("/data/payload", &src, None).unwrap();
        a.symlink("/data/link", "payload").unwrap();
        let out = dir.path().join("x.cpio");
        a.write_file(&out).unwrap();
        let buf = std::fs::read(&out).unwrap();
        let e = parse(&buf);
        assert_eq!(e[2].0, "data/payload");
        assert_eq!(e[2].4, vec![7u8; 1001]);
        // Cross-check with GNU cpio when it is installed.
        if let Ok(o) = std::process::Command::new("cpio").args(["-it", "--quiet", "-F"]).arg(&out).output() {
            if o.status.success() {
                let listing = String::from_utf8_lossy(&o.stdout);
                let names: Vec<&str> = listing.lines().collect();
                assert_eq!(names, ["data", "data/link", "data/payload"]);
            }
        }
    }
}
