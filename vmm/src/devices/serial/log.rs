//! The console log file: appended to across boots, never past a size cap.
//!
//! Design note: a guest that prints without end must not fill the host's
//! disk. When the file would pass [`MAX_LOG_BYTES`], it is renamed to
//! `<name>.1` (replacing the previous one) and a new file starts, so the
//! newest output (where a crash is told) is always kept and at most twice
//! the cap is on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Size at which the console log starts over (the old one kept as `.1`).
pub const MAX_LOG_BYTES: u64 = 16 << 20;

/// See the module documentation.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl ConsoleLog {
    /// Opens `path` for appending with the default cap.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::with_max(path, MAX_LOG_BYTES)
    }

    /// Opens `path` for appending, starting over when it passes `max` bytes.
    pub fn with_max(path: &Path, max: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let mut log = ConsoleLog { path: path.to_path_buf(), file, size, max: max.max(1) };
        if log.size >= log.max {
            log.rotate()?;
        }
        Ok(log)
    }

    /// The file kept when the log starts over.
    pub fn previous(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, Self::previous(&self.path))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size + buf.len() as u64 > self.max && self.size > 0 {
            self.rotate()?;
        }
        // A single write longer than the cap is cut to it.
        let n = buf.len().min(self.max as usize);
        self.file.write_all(&buf[..n])?;
        self.size += n as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_starts_over_at_its_cap_keeping_the_newest_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut log = ConsoleLog::with_max(&p, 100).unwrap();
        for i in 0..30 {
            writeln!(log, "line {i:03}").unwrap();
        }
        let now = std::fs::read_to_string(&p).unwrap();
        let before = std::fs::read_to_string(ConsoleLog::previous(&p)).unwrap();
        assert!(now.len() <= 100 && before.len() <= 100, "{} {}", now.len(), before.len());
        assert!(now.ends_with("line 029\n"), "{now}");
        assert!(before.ends_with(&format!("line {:03}\n", 29 - now.lines().count())), "{before}");
        // At most two files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_log_already_past_its_cap_starts_over_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        std::fs::write(&p, vec![b'x'; 300]).unwrap();
        let mut log = ConsoleLog::with_max(&p, 100).unwrap();
        log.write_all(b"new boot\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new boot\n");
        assert_eq!(std::fs::metadata(ConsoleLog::previous(&p)).unwrap().len(), 300);
        // One write longer than the cap keeps only the cap.
        log.write_all(&[b'y'; 250]).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
    }
}
