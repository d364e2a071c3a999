//! What one `vmm-virtiofs` run showed ([`FsObservation`], fed line by line)
//! and its verdict with figures ([`evaluate_run`]): pure, without a VM.

use super::markers::*;
use super::plan::{OUT_FILE, RO_DIR, RO_FILE, RO_SOCKET, RO_TAG, RO_WRITES, SHARE_DIR};
use crate::scenarios::ScenarioError;
use crate::serial::{BootFigures, BootObservation, Expectation};

/// Everything learnt about the virtio-fs part of one run. The first
/// occurrence of a marker wins (except the step, which tracks progress).
#[derive(Debug, Default, Clone)]
pub struct FsObservation {
    pub step: Option<String>,
    pub error: Option<String>,
    pub clock: Option<String>,
    pub pci: Option<String>,
    pub read: Option<Transfer>,
    pub read_sha: Option<String>,
    pub write: Option<Transfer>,
    pub write_sha: Option<String>,
    pub done: bool,
    pub host_in: Option<HostFile>,
    pub host_out: Option<Option<HostFile>>,
    pub host_info: Vec<String>,
    pub ro: Option<Option<RoReport>>,
    pub host_ro_before: Option<RoHostView>,
    pub host_ro_after: Option<RoHostView>,
}

/// Figures of a passing run.
#[derive(Debug, Clone, PartialEq)]
pub struct FsFigures {
    pub read_s: f64,
    pub write_s: f64,
    pub read_mib_s: f64,
    pub write_mib_s: f64,
    pub clock: String,
    pub pci: Option<String>,
    /// Writes the read-only share refused (all of them), when it was checked.
    pub readonly_refused: Option<u32>,
}

impl FsObservation {
    pub fn observe(&mut self, line: &str) {
        let Some(event) = parse_line(line) else {
            return;
        };
        match event {
            FsEvent::Step(s) => self.step = Some(s),
            FsEvent::Error(e) => {
                self.error.get_or_insert(e);
            }
            FsEvent::Clock(c) => {
                self.clock.get_or_insert(c);
            }
            FsEvent::Pci(p) => {
                self.pci.get_or_insert(p);
            }
            FsEvent::Read(t) => {
                self.read.get_or_insert(t);
            }
            FsEvent::ReadSha(s) => {
                self.read_sha.get_or_insert(s);
            }
            FsEvent::Write(t) => {
                self.write.get_or_insert(t);
            }
            FsEvent::WriteSha(s) => {
                self.write_sha.get_or_insert(s);
            }
            FsEvent::Done => self.done = true,
            FsEvent::HostIn(f) => {
                self.host_in.get_or_insert(f);
            }
            FsEvent::HostOut(f) => {
                self.host_out.get_or_insert(f);
            }
            FsEvent::HostInfo(s) => self.host_info.push(s),
            FsEvent::Ro(r) => {
                self.ro.get_or_insert(r);
            }
            FsEvent::HostRo { after: false, view } => {
                self.host_ro_before.get_or_insert(view);
            }
            FsEvent::HostRo { after: true, view } => {
                self.host_ro_after.get_or_insert(view);
            }
        }
    }

    fn last_step(&self) -> String {
        match &self.step {
            Some(s) => format!("last guest step: {s}"),
            None => "the guest announced no step".into(),
        }
    }

    /// Checks data integrity and computes the throughput; the error names
    /// the first problem.
    pub fn evaluate(&self, expected_bytes: u64) -> Result<FsFigures, ScenarioError> {
        if let Some(e) = &self.error {
            return Err(format!("guest {e}").into());
        }
        let host_in =
            self.host_in.as_ref().ok_or("the test host never created the input file (no RAYOS-FS-HOST-IN-SHA256)")?;
        if host_in.bytes != expected_bytes {
            return Err(
                format!("the test host's input file has {} bytes, expected {expected_bytes}", host_in.bytes).into()
            );
        }
        let clock = self.clock.clone().unwrap_or_else(|| "uptime".into());
        let resolution = if clock == "timer_list" { 1e-9 } else { 0.01 };
        let read = self.read.ok_or_else(|| format!("the guest never reported the read ({})", self.last_step()))?;
        if read.bytes != expected_bytes {
            return Err(format!("the guest read {} bytes, expected {expected_bytes}", read.bytes).into());
        }
        let read_sha = self
            .read_sha
            .as_deref()
            .ok_or_else(|| format!("the guest never reported the read data's SHA-256 ({})", self.last_step()))?;
        if read_sha != host_in.sha256 {
            return Err(format!(
                "read data differs: the guest read SHA-256 {read_sha}, the test host wrote {}",
                host_in.sha256
            )
            .into());
        }
        let write_sha = self.write_sha.as_deref().ok_or_else(|| {
            format!("the guest never reported the SHA-256 of the data to write ({})", self.last_step())
        })?;
        let write = self.write.ok_or_else(|| format!("the guest never reported the write ({})", self.last_step()))?;
        if write.bytes != expected_bytes {
            return Err(format!("the guest wrote {} bytes, expected {expected_bytes}", write.bytes).into());
        }
        if !self.done {
            return Err(format!("the guest never finished (no RAYOS-FS-DONE; {})", self.last_step()).into());
        }
        let host_out = match &self.host_out {
            None => return Err("the test host never checked the written file (no RAYOS-FS-HOST-OUT-SHA256)".into()),
            Some(None) => {
                return Err(format!("{OUT_FILE} is not in the test host's {SHARE_DIR} after the VMM exited").into())
            }
            Some(Some(f)) => f,
        };
        if host_out.bytes != expected_bytes {
            return Err(format!(
                "{SHARE_DIR}/{OUT_FILE} has {} bytes in the test host, the guest wrote {expected_bytes}",
                host_out.bytes
            )
            .into());
        }
        if host_out.sha256 != write_sha {
            return Err(format!(
                "written data differs: the guest wrote SHA-256 {write_sha}, the test host has {}",
                host_out.sha256
            )
            .into());
        }
        let mib = expected_bytes as f64 / 1048576.0;
        let (read_s, write_s) = (read.seconds(resolution), write.seconds(resolution));
        Ok(FsFigures {
            read_s,
            write_s,
            read_mib_s: mib / read_s,
            write_mib_s: mib / write_s,
            clock,
            pci: self.pci.clone(),
            readonly_refused: None,
        })
    }

    /// Checks the read-only share: the guest read the host's token, every
    /// write was refused, and the host's folder is unchanged. Returns the
    /// number of refused writes.
    pub fn evaluate_readonly(&self) -> Result<u32, ScenarioError> {
        let before = self
            .host_ro_before
            .as_ref()
            .ok_or("the test host never prepared the read-only share (no RAYOS-FS-HOST-RO before)")?;
        let r = match &self.ro {
            None => return Err(format!("the guest never reported on the read-only share ({})", self.last_step()).into()),
            Some(None) => return Err(format!("the guest has no second virtio-fs device: the read-only share {RO_TAG} (--fs, socket {RO_SOCKET}) is missing").into()),
            Some(Some(r)) => r,
        };
        if r.token != before.token {
            return Err(format!(
                "the guest read {:?} from {RO_TAG}/{RO_FILE}, the test host wrote {:?}",
                r.token, before.token
            )
            .into());
        }
        if r.refused != r.tried || r.tried != RO_WRITES {
            return Err(format!(
                "the read-only share refused {} of {} writes (expected all {RO_WRITES})",
                r.refused, r.tried
            )
            .into());
        }
        if r.files != before.files {
            return Err(
                format!("the guest sees {} entries in {RO_TAG}, the test host put {}", r.files, before.files).into()
            );
        }
        match &self.host_ro_after {
            None => {
                Err("the test host never checked the read-only share after the VMM (no RAYOS-FS-HOST-RO after)".into())
            }
            Some(after) if after != before => {
                Err(format!("{RO_DIR} changed in the test host: before {before:?}, after {after:?}").into())
            }
            Some(_) => Ok(r.refused),
        }
    }
}

/// Evaluates one run: the test host's own failure first, then a virtio-fs
/// error the guest reported, then the boot itself (guest reached /init), then
/// the virtio-fs figures, then the rest of the boot (uname, nproc, VMM exit
/// status). Context (VMM exit status, kernel panic) is added to virtio-fs
/// failures.
pub fn evaluate_run(
    boot: &BootObservation,
    fs: &FsObservation,
    expect: &Expectation,
    expected_bytes: u64,
    readonly: bool,
) -> Result<(BootFigures, FsFigures), ScenarioError> {
    if let Some(reason) = &boot.host_fail {
        return Err(format!("test host failed: {reason}").into());
    }
    let context = || {
        let mut c = String::new();
        if let Some((_, status)) = boot.vmm_exit.filter(|(_, s)| *s != 0) {
            c.push_str(&format!("; VMM exit status {status}"));
        }
        if let Some(p) = boot.panics.first() {
            c.push_str(&format!("; kernel panic: {p}"));
        }
        c
    };
    if let Some(e) = &fs.error {
        return Err(format!("guest {e}{}", context()).into());
    }
    if boot.guest_init.is_none() {
        return Err(boot
            .evaluate(expect)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "guest never reached /init (no RAYOS-GUEST-INIT)".into())
            .into());
    }
    let mut figures = fs.evaluate(expected_bytes).map_err(|e| format!("{e}{}", context()))?;
    if readonly {
        figures.readonly_refused = Some(fs.evaluate_readonly().map_err(|e| format!("{e}{}", context()))?);
    }
    let boot_figures = boot.evaluate(expect).map_err(|e| e.to_string())?;
    Ok((boot_figures, figures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const MIB64: u64 = 64 << 20;

    fn good_run() -> (BootObservation, FsObservation) {
        let mut boot = BootObservation::default();
        let mut fs = FsObservation::default();
        let lines = [
            (1.0, "RAYOS-HOST-INIT".to_string()),
            (1.5, format!("RAYOS-FS-HOST-IN-SHA256 {A} bytes=67108864")),
            (1.6, "RAYOS-FS-HOST virtiofsd pid=42 sandbox=chroot".into()),
            (2.0, "RAYOS-VMM-START".into()),
            (5.0, "RAYOS-GUEST-INIT".into()),
            (5.1, "RAYOS-GUEST uname=6.1.0-56-amd64 nproc=2".into()),
            (5.2, "RAYOS-FS-CLOCK timer_list".into()),
            (5.3, "RAYOS-FS-STEP read".into()),
            (6.0, "RAYOS-FS-READ start_ns=1000000000 end_ns=1500000000 bytes=67108864".into()),
            (6.5, format!("RAYOS-FS-READ-SHA256 {A}")),
            (7.0, format!("RAYOS-FS-WRITE-SHA256 {B}")),
            (8.0, "RAYOS-FS-WRITE start_ns=3000000000 end_ns=5000000000 bytes=67108864".into()),
            (8.1, "RAYOS-FS-STEP umount".into()),
            (8.2, "RAYOS-FS-DONE".into()),
            (8.3, "RAYOS-GUEST-OK".into()),
            (9.0, format!("RAYOS-FS-HOST-OUT-SHA256 {B} bytes=67108864")),
            (9.1, "RAYOS-VMM-EXIT status=0".into()),
        ];
        for (t, l) in lines {
            boot.observe(Duration::from_secs_f64(t), &l);
            fs.observe(&l);
        }
        (boot, fs)
    }

    fn expect() -> Expectation {
        Expectation { uname: "6.1.0-56-amd64".into(), nproc: 2 }
    }

    #[test]
    fn good_run_yields_throughput() {
        let (boot, fs) = good_run();
        let (b, f) = evaluate_run(&boot, &fs, &expect(), MIB64, false).unwrap();
        assert!((b.guest_init.as_secs_f64() - 3.0).abs() < 1e-9);
        assert!((f.read_s - 0.5).abs() < 1e-9);
        assert!((f.read_mib_s - 128.0).abs() < 1e-9);
        assert!((f.write_mib_s - 32.0).abs() < 1e-9);
        assert_eq!(f.clock, "timer_list");
        assert_eq!(fs.host_info, ["virtiofsd pid=42 sandbox=chroot"]);
    }

    #[test]
    fn read_only_share_is_checked_for_rayos() {
        let (boot, mut fs) = good_run();
        // Without the read-only share's markers a rayos-vmm run fails, a QEMU run passes.
        let err = evaluate_run(&boot, &fs, &expect(), MIB64, true).unwrap_err().to_string();
        assert!(err.contains("read-only share"), "{err}");
        assert!(evaluate_run(&boot, &fs, &expect(), MIB64, false).is_ok());

        let before = "RAYOS-FS-HOST-RO before token=0123abcd files=1";
        let guest = "RAYOS-FS-RO token=0123abcd refused=4 tried=4 files=1 error=sh: can't create /mnt-ro/new.txt: Read-only file system";
        let after = "RAYOS-FS-HOST-RO after token=0123abcd files=1";
        for l in [before, guest, after] {
            fs.observe(l);
        }
        assert_eq!(
            fs.ro,
            Some(Some(RoReport {
                token: "0123abcd".into(),
                refused: 4,
                tried: 4,
                files: 1,
                error: "sh: can't create /mnt-ro/new.txt: Read-only file system".into()
            }))
        );
        let (_, f) = evaluate_run(&boot, &fs, &expect(), MIB64, true).unwrap();
        assert_eq!(f.readonly_refused, Some(4));

        let with = |lines: &[&str]| {
            let (_, mut fs) = good_run();
            for l in lines {
                fs.observe(l);
            }
            fs.evaluate_readonly().unwrap_err().to_string()
        };
        assert!(with(&[before, "RAYOS-FS-RO absent", after]).contains("no second virtio-fs device"));
        assert!(with(&[before, "RAYOS-FS-RO token=0123abcd refused=3 tried=4 files=1 error=x", after])
            .contains("refused 3 of 4"));
        assert!(with(&[before, "RAYOS-FS-RO token=ffff refused=4 tried=4 files=1 error=x", after]).contains("\"ffff\""));
        assert!(with(&[before, guest, "RAYOS-FS-HOST-RO after token=0123abcd files=2"])
            .contains("changed in the test host"));
        assert!(with(&[before, guest]).contains("never checked"));
        assert!(with(&[guest, after]).contains("never prepared"));
        // The host's marker is not the guest's.
        assert!(matches!(parse_line(before), Some(FsEvent::HostRo { after: false, .. })));
    }

    #[test]
    fn coarse_clock_never_divides_by_zero() {
        let t = Transfer { start_ns: 5, end_ns: 5, bytes: 1 };
        assert_eq!(t.seconds(0.01), 0.01);
        let backwards = Transfer { start_ns: 9, end_ns: 5, bytes: 1 };
        assert_eq!(backwards.seconds(1e-9), 1e-9);
    }

    #[test]
    fn failures_name_the_problem() {
        let e = expect();
        // Corrupt read.
        let (boot, mut fs) = good_run();
        fs.read_sha = Some(B.into());
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err().to_string();
        assert!(err.starts_with("read data differs"), "{err}");

        // Corrupt write.
        let (boot, mut fs) = good_run();
        fs.host_out = Some(Some(HostFile { sha256: A.into(), bytes: MIB64 }));
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err().to_string();
        assert!(err.starts_with("written data differs"), "{err}");

        // Missing output file.
        let (boot, mut fs) = good_run();
        fs.host_out = Some(None);
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err().to_string();
        assert!(err.contains("out.bin is not in"), "{err}");

        // Guest-reported error wins over everything but a test host failure,
        // with the VMM's exit status as context.
        let (mut boot, mut fs) = good_run();
        fs.observe("RAYOS-FS-ERROR mount: mount -t virtiofs rayos /mnt failed: ENODEV");
        boot.vmm_exit = Some((Duration::from_secs(9), 1));
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err().to_string();
        assert_eq!(err, "guest mount: mount -t virtiofs rayos /mnt failed: ENODEV; VMM exit status 1");
        boot.observe(Duration::from_secs(1), "RAYOS-HOST-FAIL virtiofs: virtiofsd exited");
        assert!(evaluate_run(&boot, &fs, &e, MIB64, false)
            .unwrap_err()
            .to_string()
            .starts_with("test host failed: virtiofs: virtiofsd exited"));

        // A run that stops mid-way names the last step.
        let mut boot = BootObservation::default();
        let mut fs = FsObservation::default();
        for l in [
            "RAYOS-HOST-INIT".to_string(),
            format!("RAYOS-FS-HOST-IN-SHA256 {A} bytes=67108864"),
            "RAYOS-VMM-START".into(),
            "RAYOS-GUEST-INIT".into(),
            "RAYOS-FS-STEP mount".into(),
            "RAYOS-VMM-EXIT status=4".into(),
        ] {
            boot.observe(Duration::ZERO, &l);
            fs.observe(&l);
        }
        let err = evaluate_run(&boot, &fs, &e, MIB64, false).unwrap_err().to_string();
        assert_eq!(err, "the guest never reported the read (last guest step: mount); VMM exit status 4");

        // No guest at all: the boot's own reason.
        let mut boot = BootObservation::default();
        boot.observe(Duration::ZERO, "RAYOS-HOST-INIT");
        boot.observe(Duration::ZERO, "RAYOS-VMM-START");
        let err = evaluate_run(&boot, &FsObservation::default(), &e, MIB64, false).unwrap_err().to_string();
        assert!(err.contains("no RAYOS-GUEST-INIT"), "{err}");

        // Wrong size.
        let (boot, fs) = good_run();
        assert!(evaluate_run(&boot, &fs, &e, 1 << 20, false).unwrap_err().to_string().contains("expected 1048576"));
    }
}
