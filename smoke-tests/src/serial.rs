//! Markers printed by the test host's and the guest's `/init` scripts, and the
//! evaluation of one nested boot from the timestamped serial stream.
//!
//! Markers are matched anywhere in a line, because kernel messages from the
//! test host can share a line with the guest's output on the same console.

use std::time::Duration;

pub const HOST_INIT: &str = "RAYOS-HOST-INIT";
pub const HOST_INFO: &str = "RAYOS-HOST ";
pub const HOST_FAIL: &str = "RAYOS-HOST-FAIL";
pub const VMM_START: &str = "RAYOS-VMM-START";
pub const VMM_EXIT: &str = "RAYOS-VMM-EXIT status=";
pub const VMM_METRICS: &str = "RAYOS-VMM-METRICS ";
pub const GUEST_INIT: &str = "RAYOS-GUEST-INIT";
pub const GUEST_INFO: &str = "RAYOS-GUEST uname=";
pub const GUEST_OK: &str = "RAYOS-GUEST-OK";

/// Removes terminal control sequences (SeaBIOS and QEMU clear the screen
/// with `ESC c`, `ESC [2J`, ...) and other control characters except tab, so
/// logs stay readable and markers are found.
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC backslash)
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // Charset designation takes one more character.
                Some('(' | ')' | '#' | '%') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One recognised line of the serial stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    HostInit,
    HostInfo(String),
    HostFail(String),
    VmmStart,
    VmmExit(i32),
    VmmMetrics(String),
    GuestInit,
    GuestInfo { uname: String, nproc: u32 },
    GuestOk,
    KernelPanic(String),
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// Recognises the marker (if any) in one serial line.
pub fn parse_line(line: &str) -> Option<Event> {
    if let Some(rest) = after(line, GUEST_INFO) {
        // "RAYOS-GUEST uname=<release> nproc=<n>"
        let mut uname = None;
        let mut nproc = None;
        for (i, word) in rest.split_whitespace().enumerate() {
            if i == 0 {
                uname = Some(word.to_string());
            } else if let Some(n) = word.strip_prefix("nproc=") {
                nproc = n.parse().ok();
            }
        }
        return Some(Event::GuestInfo { uname: uname?, nproc: nproc? });
    }
    if line.contains(GUEST_INIT) {
        return Some(Event::GuestInit);
    }
    if line.contains(GUEST_OK) {
        return Some(Event::GuestOk);
    }
    if line.contains(VMM_START) {
        return Some(Event::VmmStart);
    }
    if let Some(rest) = after(line, VMM_EXIT) {
        return rest.split_whitespace().next()?.parse().ok().map(Event::VmmExit);
    }
    if let Some(rest) = after(line, VMM_METRICS) {
        return Some(Event::VmmMetrics(rest.trim().to_string()));
    }
    if let Some(rest) = after(line, HOST_FAIL) {
        return Some(Event::HostFail(rest.trim().to_string()));
    }
    if let Some(rest) = after(line, HOST_INFO) {
        return Some(Event::HostInfo(rest.trim().to_string()));
    }
    if line.contains(HOST_INIT) {
        return Some(Event::HostInit);
    }
    if let Some(rest) = after(line, "Kernel panic - not syncing:") {
        return Some(Event::KernelPanic(rest.trim().to_string()));
    }
    None
}

/// Everything learnt about one boot from the serial stream. Times are offsets
/// on the monotonic clock from when the outer QEMU was started.
#[derive(Debug, Default, Clone)]
pub struct BootObservation {
    pub host_init: Option<Duration>,
    pub host_info: Option<String>,
    pub host_fail: Option<String>,
    pub vmm_start: Option<Duration>,
    pub guest_init: Option<Duration>,
    pub guest_uname: Option<String>,
    pub guest_nproc: Option<u32>,
    pub guest_ok: Option<Duration>,
    pub vmm_exit: Option<(Duration, i32)>,
    pub vmm_metrics: Option<String>,
    pub panics: Vec<String>,
}

/// What a passing boot must show.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub uname: String,
    pub nproc: u32,
}

/// Figures of a passing boot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootFigures {
    /// `RAYOS-VMM-START` to `RAYOS-GUEST-INIT`.
    pub guest_init: Duration,
    /// `RAYOS-VMM-START` to `RAYOS-VMM-EXIT`.
    pub vmm_run: Duration,
    pub vcpus: u32,
}

impl BootObservation {
    /// Records one line seen at time `t`. The first occurrence of a marker wins.
    pub fn observe(&mut self, t: Duration, line: &str) {
        let Some(event) = parse_line(line) else {
            return;
        };
        match event {
            Event::HostInit => {
                self.host_init.get_or_insert(t);
            }
            Event::HostInfo(s) => {
                self.host_info.get_or_insert(s);
            }
            Event::HostFail(s) => {
                self.host_fail.get_or_insert(s);
            }
            Event::VmmStart => {
                self.vmm_start.get_or_insert(t);
            }
            Event::GuestInit => {
                self.guest_init.get_or_insert(t);
            }
            Event::GuestInfo { uname, nproc } => {
                self.guest_uname.get_or_insert(uname);
                self.guest_nproc.get_or_insert(nproc);
            }
            Event::GuestOk => {
                self.guest_ok.get_or_insert(t);
            }
            Event::VmmExit(status) => {
                self.vmm_exit.get_or_insert((t, status));
            }
            Event::VmmMetrics(json) => {
                self.vmm_metrics.get_or_insert(json);
            }
            Event::KernelPanic(s) => self.panics.push(s),
        }
    }

    /// Whether the test host has finished (the VMM exited or the host failed).
    pub fn finished(&self) -> bool {
        self.vmm_exit.is_some() || self.host_fail.is_some()
    }

    /// Checks the boot against `expect`; the error names the first problem.
    pub fn evaluate(&self, expect: &Expectation) -> Result<BootFigures, BootError> {
        if let Some(reason) = &self.host_fail {
            return Err(BootError::HostFailed(reason.clone()));
        }
        let panic = self.panics.first().cloned();
        if self.host_init.is_none() {
            return Err(BootError::NoHostInit { panic });
        }
        let start = self.vmm_start.ok_or(BootError::NoVmmStart)?;
        let Some(guest_init) = self.guest_init else {
            return Err(BootError::NoGuestInit { exit: self.vmm_exit.map(|(_, s)| s), panic });
        };
        let uname = self.guest_uname.as_deref().ok_or(BootError::NoGuestInfo)?;
        if uname != expect.uname {
            return Err(BootError::Uname { got: uname.to_string(), want: expect.uname.clone() });
        }
        let vcpus = self.guest_nproc.ok_or(BootError::NoNproc)?;
        if vcpus != expect.nproc {
            return Err(BootError::Nproc { got: vcpus, want: expect.nproc });
        }
        if self.guest_ok.is_none() {
            return Err(BootError::NoGuestOk);
        }
        let (exit_t, status) = self.vmm_exit.ok_or(BootError::NoVmmExit)?;
        if status != 0 {
            return Err(BootError::VmmStatus(status));
        }
        Ok(BootFigures { guest_init: guest_init.saturating_sub(start), vmm_run: exit_t.saturating_sub(start), vcpus })
    }
}

/// The first thing a nested boot did not do, by its serial markers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    #[error("test host failed: {0}")]
    HostFailed(String),
    #[error("test host never reached /init{}", panic.as_ref().map(|p| format!(" (kernel panic: {p})")).unwrap_or_default())]
    NoHostInit { panic: Option<String> },
    #[error("test host never started the VMM (no RAYOS-VMM-START)")]
    NoVmmStart,
    #[error("guest never reached /init (no RAYOS-GUEST-INIT){}{}",
        exit.map(|s| format!("; VMM exit status {s}")).unwrap_or_default(),
        panic.as_ref().map(|p| format!("; kernel panic: {p}")).unwrap_or_default())]
    NoGuestInit { exit: Option<i32>, panic: Option<String> },
    #[error("guest did not report uname/nproc")]
    NoGuestInfo,
    #[error("guest uname -r is {got:?}, expected {want:?}")]
    Uname { got: String, want: String },
    #[error("guest did not report nproc")]
    NoNproc,
    #[error("guest nproc is {got}, expected {want}")]
    Nproc { got: u32, want: u32 },
    #[error("guest never printed RAYOS-GUEST-OK")]
    NoGuestOk,
    #[error("VMM exit status never reported (no RAYOS-VMM-EXIT)")]
    NoVmmExit,
    #[error("VMM exited with status {0}, expected 0")]
    VmmStatus(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn control_sequences_are_removed() {
        assert_eq!(clean_line("\u{1b}c\u{1b}[?7l\u{1b}[2JRAYOS-HOST-INIT"), "RAYOS-HOST-INIT");
        assert_eq!(clean_line("\u{1b}[0mSeaBIOS (version 1.16)\r"), "SeaBIOS (version 1.16)");
        assert_eq!(clean_line("a\tb\u{7}\u{1b}]0;title\u{7}c\u{1b}(Bd"), "a\tbcd");
    }

    #[test]
    fn markers_are_recognised_inside_lines() {
        assert_eq!(parse_line("RAYOS-VMM-START"), Some(Event::VmmStart));
        assert_eq!(parse_line("[    3.1] kvm: x RAYOS-GUEST-INIT"), Some(Event::GuestInit));
        assert_eq!(
            parse_line("RAYOS-GUEST uname=6.1.0-56-amd64 nproc=2\r"),
            Some(Event::GuestInfo { uname: "6.1.0-56-amd64".into(), nproc: 2 })
        );
        assert_eq!(parse_line("RAYOS-GUEST uname=6.1.0-56-amd64 nproc="), None);
        assert_eq!(parse_line("RAYOS-VMM-EXIT status=130"), Some(Event::VmmExit(130)));
        assert_eq!(parse_line("RAYOS-HOST-FAIL insmod kvm"), Some(Event::HostFail("insmod kvm".into())));
        assert_eq!(parse_line("RAYOS-HOST vendor=amd vmm=qemu"), Some(Event::HostInfo("vendor=amd vmm=qemu".into())));
        assert_eq!(parse_line("RAYOS-HOST-INIT"), Some(Event::HostInit));
        assert_eq!(parse_line("RAYOS-GUEST-OK"), Some(Event::GuestOk));
        assert_eq!(
            parse_line("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root"),
            Some(Event::KernelPanic("VFS: Unable to mount root".into()))
        );
        assert_eq!(parse_line("random kernel chatter"), None);
    }

    fn full_boot() -> BootObservation {
        let mut o = BootObservation::default();
        for (t, l) in [
            (1.0, "RAYOS-HOST-INIT"),
            (2.0, "RAYOS-VMM-START"),
            (5.25, "RAYOS-GUEST-INIT"),
            (5.5, "RAYOS-GUEST uname=6.1.0-56-amd64 nproc=2"),
            (5.6, "RAYOS-GUEST-OK"),
            (6.0, "RAYOS-VMM-EXIT status=0"),
        ] {
            o.observe(s(t), l);
        }
        o
    }

    #[test]
    fn passing_boot_yields_figures() {
        let o = full_boot();
        assert!(o.finished());
        let f = o.evaluate(&Expectation { uname: "6.1.0-56-amd64".into(), nproc: 2 }).unwrap();
        assert_eq!(f.vcpus, 2);
        assert!((f.guest_init.as_secs_f64() - 3.25).abs() < 1e-9);
        assert!((f.vmm_run.as_secs_f64() - 4.0).abs() < 1e-9);
    }

    #[test]
    fn failures_name_the_problem() {
        let expect = Expectation { uname: "6.1.0-56-amd64".into(), nproc: 2 };
        let wrong = Expectation { uname: "6.1.0-56-amd64".into(), nproc: 4 };
        assert!(full_boot().evaluate(&wrong).unwrap_err().to_string().contains("nproc is 2"));

        let mut o = full_boot();
        o.vmm_exit = Some((s(6.0), 3));
        assert!(o.evaluate(&expect).unwrap_err().to_string().contains("status 3"));

        let mut o = BootObservation::default();
        o.observe(s(1.0), "RAYOS-HOST-INIT");
        o.observe(s(2.0), "RAYOS-VMM-START");
        o.observe(s(9.0), "RAYOS-VMM-EXIT status=1");
        assert!(o.evaluate(&expect).unwrap_err().to_string().contains("no RAYOS-GUEST-INIT); VMM exit status 1"));

        let mut o = BootObservation::default();
        o.observe(s(1.0), "RAYOS-HOST-INIT");
        o.observe(s(1.5), "RAYOS-HOST-FAIL /dev/kvm missing");
        assert!(o.finished());
        assert!(o.evaluate(&expect).unwrap_err().to_string().contains("/dev/kvm missing"));

        assert!(BootObservation::default().evaluate(&expect).unwrap_err().to_string().contains("never reached /init"));
    }
}
