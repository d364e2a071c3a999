//! The virtio-fs markers the guest's `/init` and the test host's hooks
//! print on the serial console, and their parser.

pub const FS_STEP: &str = "RAYOS-FS-STEP ";
pub const FS_ERROR: &str = "RAYOS-FS-ERROR ";
pub const FS_CLOCK: &str = "RAYOS-FS-CLOCK ";
pub const FS_PCI: &str = "RAYOS-FS-PCI ";
pub const FS_READ: &str = "RAYOS-FS-READ ";
pub const FS_READ_SHA: &str = "RAYOS-FS-READ-SHA256 ";
pub const FS_WRITE: &str = "RAYOS-FS-WRITE ";
pub const FS_WRITE_SHA: &str = "RAYOS-FS-WRITE-SHA256 ";
pub const FS_DONE: &str = "RAYOS-FS-DONE";
pub const FS_DIAG: &str = "RAYOS-FS-DIAG ";
pub const FS_IRQ: &str = "RAYOS-FS-IRQ ";
pub const HOST_IN_SHA: &str = "RAYOS-FS-HOST-IN-SHA256 ";
pub const HOST_OUT_SHA: &str = "RAYOS-FS-HOST-OUT-SHA256 ";
pub const HOST_FS_INFO: &str = "RAYOS-FS-HOST ";
pub const FS_RO: &str = "RAYOS-FS-RO ";
pub const HOST_RO: &str = "RAYOS-FS-HOST-RO ";

/// A timed transfer reported by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes: u64,
}

impl Transfer {
    /// Elapsed seconds, never less than `resolution_s`.
    pub fn seconds(&self, resolution_s: f64) -> f64 {
        (self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9).max(resolution_s)
    }
}

/// A file checksum reported by the test host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub sha256: String,
    pub bytes: u64,
}

/// One recognised virtio-fs line of the serial stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    Step(String),
    /// `<step>: <what>`
    Error(String),
    Clock(String),
    Pci(String),
    Read(Transfer),
    ReadSha(String),
    Write(Transfer),
    WriteSha(String),
    Done,
    HostIn(HostFile),
    /// `None`: the guest's file was not in the share.
    HostOut(Option<HostFile>),
    HostInfo(String),
    /// The guest's report on the read-only share; `None`: it had no such device.
    Ro(Option<RoReport>),
    /// The test host's view of the read-only share, before and after the VMM.
    HostRo {
        after: bool,
        view: RoHostView,
    },
}

/// What the guest saw on the read-only share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoReport {
    pub token: String,
    pub refused: u32,
    pub tried: u32,
    pub files: u32,
    /// The last refusal's message, e.g. "Read-only file system".
    pub error: String,
}

/// The read-only folder as the test host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoHostView {
    pub token: String,
    pub files: u32,
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// The value of `key=` among whitespace-separated words.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn sha256_word(text: &str) -> Option<String> {
    let w = text.split_whitespace().next()?;
    (w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit())).then(|| w.to_ascii_lowercase())
}

fn transfer(text: &str) -> Option<Transfer> {
    Some(Transfer {
        start_ns: field(text, "start_ns")?.parse().ok()?,
        end_ns: field(text, "end_ns")?.parse().ok()?,
        bytes: field(text, "bytes")?.parse().ok()?,
    })
}

fn host_file(text: &str) -> Option<HostFile> {
    Some(HostFile { sha256: sha256_word(text)?, bytes: field(text, "bytes")?.parse().ok()? })
}

/// Recognises the virtio-fs marker (if any) in one serial line. Diagnostic
/// lines are not events. Markers are found anywhere in the line, as in
/// [`crate::serial::parse_line`].
pub fn parse_line(line: &str) -> Option<FsEvent> {
    if line.contains(FS_DIAG) || line.contains(FS_IRQ) {
        return None;
    }
    // Longer markers sharing a prefix first.
    if let Some(rest) = after(line, FS_READ_SHA) {
        return sha256_word(rest).map(FsEvent::ReadSha);
    }
    if let Some(rest) = after(line, FS_WRITE_SHA) {
        return sha256_word(rest).map(FsEvent::WriteSha);
    }
    if let Some(rest) = after(line, FS_READ) {
        return transfer(rest).map(FsEvent::Read);
    }
    if let Some(rest) = after(line, FS_WRITE) {
        return transfer(rest).map(FsEvent::Write);
    }
    if let Some(rest) = after(line, HOST_IN_SHA) {
        return host_file(rest).map(FsEvent::HostIn);
    }
    if let Some(rest) = after(line, HOST_OUT_SHA) {
        if rest.trim_start().starts_with("missing") {
            return Some(FsEvent::HostOut(None));
        }
        return host_file(rest).map(|f| FsEvent::HostOut(Some(f)));
    }
    if let Some(rest) = after(line, HOST_RO) {
        let after = match rest.split_whitespace().next()? {
            "before" => false,
            "after" => true,
            _ => return None,
        };
        let view = RoHostView {
            token: field(rest, "token").unwrap_or_default().to_string(),
            files: field(rest, "files")?.parse().ok()?,
        };
        return Some(FsEvent::HostRo { after, view });
    }
    if let Some(rest) = after(line, FS_RO) {
        if rest.trim_start().starts_with("absent") {
            return Some(FsEvent::Ro(None));
        }
        return Some(FsEvent::Ro(Some(RoReport {
            token: field(rest, "token")?.to_string(),
            refused: field(rest, "refused")?.parse().ok()?,
            tried: field(rest, "tried")?.parse().ok()?,
            files: field(rest, "files")?.parse().ok()?,
            error: rest.find("error=").map(|i| rest[i + 6..].trim().to_string()).unwrap_or_default(),
        })));
    }
    if let Some(rest) = after(line, FS_ERROR) {
        return Some(FsEvent::Error(rest.trim().to_string()));
    }
    if let Some(rest) = after(line, FS_STEP) {
        return rest.split_whitespace().next().map(|s| FsEvent::Step(s.into()));
    }
    if let Some(rest) = after(line, FS_CLOCK) {
        return rest.split_whitespace().next().map(|s| FsEvent::Clock(s.into()));
    }
    if let Some(rest) = after(line, FS_PCI) {
        return rest.split_whitespace().next().map(|s| FsEvent::Pci(s.into()));
    }
    if let Some(rest) = after(line, HOST_FS_INFO) {
        return Some(FsEvent::HostInfo(rest.trim().to_string()));
    }
    if line.contains(FS_DONE) {
        return Some(FsEvent::Done);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const MIB64: u64 = 64 << 20;

    #[test]
    fn markers_parse() {
        assert_eq!(parse_line("RAYOS-FS-STEP mount"), Some(FsEvent::Step("mount".into())));
        assert_eq!(
            parse_line("[  3.2] virtio: x RAYOS-FS-ERROR mount: mount -t virtiofs rayos /mnt failed: No such device"),
            Some(FsEvent::Error("mount: mount -t virtiofs rayos /mnt failed: No such device".into()))
        );
        assert_eq!(
            parse_line("RAYOS-FS-READ start_ns=1000 end_ns=2000000000 bytes=67108864\r"),
            Some(FsEvent::Read(Transfer { start_ns: 1000, end_ns: 2_000_000_000, bytes: MIB64 }))
        );
        assert_eq!(
            parse_line("RAYOS-FS-WRITE start_ns=5 end_ns=7 bytes=1"),
            Some(FsEvent::Write(Transfer { start_ns: 5, end_ns: 7, bytes: 1 }))
        );
        assert_eq!(parse_line("RAYOS-FS-READ start_ns= end_ns=2 bytes=1"), None);
        assert_eq!(parse_line(&format!("RAYOS-FS-READ-SHA256 {}", A.to_uppercase())), Some(FsEvent::ReadSha(A.into())));
        assert_eq!(parse_line(&format!("RAYOS-FS-WRITE-SHA256 {B}")), Some(FsEvent::WriteSha(B.into())));
        assert_eq!(parse_line("RAYOS-FS-WRITE-SHA256 abc"), None);
        assert_eq!(
            parse_line(&format!("RAYOS-FS-HOST-IN-SHA256 {A} bytes=67108864")),
            Some(FsEvent::HostIn(HostFile { sha256: A.into(), bytes: MIB64 }))
        );
        assert_eq!(parse_line("RAYOS-FS-HOST-OUT-SHA256 missing"), Some(FsEvent::HostOut(None)));
        assert_eq!(
            parse_line(&format!("RAYOS-FS-HOST-OUT-SHA256 {B} bytes=3")),
            Some(FsEvent::HostOut(Some(HostFile { sha256: B.into(), bytes: 3 })))
        );
        assert_eq!(
            parse_line("RAYOS-FS-HOST virtiofsd pid=42 sandbox=chroot"),
            Some(FsEvent::HostInfo("virtiofsd pid=42 sandbox=chroot".into()))
        );
        assert_eq!(parse_line("RAYOS-FS-CLOCK timer_list"), Some(FsEvent::Clock("timer_list".into())));
        assert_eq!(parse_line("RAYOS-FS-PCI 0000:00:01.0"), Some(FsEvent::Pci("0000:00:01.0".into())));
        assert_eq!(parse_line("RAYOS-FS-DONE"), Some(FsEvent::Done));
        // Diagnostics may quote anything, markers included.
        assert_eq!(parse_line("RAYOS-FS-DIAG dmesg RAYOS-FS-ERROR x"), None);
        assert_eq!(parse_line("RAYOS-FS-IRQ  24: 10 PCI-MSI virtio0-requests"), None);
        // vmm-boot's parser does not mistake these for its own markers.
        assert_eq!(crate::serial::parse_line("RAYOS-FS-HOST virtiofsd pid=1"), None);
        assert_eq!(crate::serial::parse_line("RAYOS-FS-STEP read"), None);
    }
}
