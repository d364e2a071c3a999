//! `nested-census` (tier 3, nested, manual): how often a nested guest fails
//! to boot, per VMM, inside one test host.
//!
//! The nested scenarios see rare guest crashes (a triple fault under
//! rayos-vmm, a recursive page fault under the QEMU reference), KVM
//! internal errors and test-host stalls. To tell whose they are, this boots
//! the same busybox guest `--boots` times with each VMM, alternating, in one
//! test host (one outer QEMU, so both VMMs share its emulator state and
//! load), and tabulates the outcomes. Run it once with the outer QEMU's
//! default multi-threaded TCG and once with `RAYOS_OUTER_TCG=single`
//! (`-accel tcg,thread=single`) to see whether the failures follow the outer
//! emulator or the VMM.
//!
//! Each boot's console goes to a file in the test host; only a summary line
//! (`RAYOS-CENSUS vmm=<v> boot=<i> status=<n> guest_ok=<0|1> ...`) and, for a
//! failed boot, the console's last lines reach the serial log.
//!
//! Prints the table and `PASS nested-census accel=<mode> boots=<n>
//! rayos_ok=<n> qemu_ok=<n> ...` once every boot has run (the census is a
//! measurement; failed guest boots are its data, not its failure). It fails
//! only when the test host did not complete the census.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::nested;
use super::vmm_boot::{self, VmmBootError};
use crate::cli::CensusArgs;
use crate::qemu::{self, Accel, Flow};
use crate::testhost::{self, HostHooks, Vmm};
use crate::Outcome;

pub const SCENARIO: &str = "nested-census";
/// One boot's summary line in the serial log.
pub const CENSUS: &str = "RAYOS-CENSUS ";
/// A failed boot's console lines.
pub const CENSUS_LOG: &str = "RAYOS-CENSUS-LOG ";
/// Printed once every boot has run.
pub const CENSUS_DONE: &str = "RAYOS-CENSUS-DONE";
/// How long one nested boot may take before the test host kills the VMM.
const BOOT_TIMEOUT_S: u32 = 240;
/// Console lines kept from a failed boot.
const FAILED_TAIL: usize = 40;

/// How one boot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ending {
    /// The guest printed its OK marker and the VMM exited 0.
    Ok,
    /// The guest kernel panicked (rayos-vmm status 3, or "Kernel panic" on the console).
    Panic,
    /// The guest triple-faulted (rayos-vmm status 4; QEMU resets with -no-reboot and exits).
    TripleFault,
    /// rayos-vmm reported a KVM internal error.
    KvmInternalError,
    /// The VMM was killed after [`BOOT_TIMEOUT_S`].
    Hang,
    /// Anything else: the status and no recognised cause.
    Other,
}

impl Ending {
    pub fn name(self) -> &'static str {
        match self {
            Ending::Ok => "ok",
            Ending::Panic => "panic",
            Ending::TripleFault => "triple_fault",
            Ending::KvmInternalError => "kvm_internal_error",
            Ending::Hang => "hang",
            Ending::Other => "other",
        }
    }
}

/// One boot's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    pub vmm: Vmm,
    pub index: u32,
    pub status: i32,
    pub guest_ok: bool,
    pub seconds: f64,
    /// The failed boot's console tail.
    pub tail: Vec<String>,
}

impl Boot {
    /// Classifies the boot from its status, marker and console tail.
    pub fn ending(&self) -> Ending {
        let said = |s: &str| self.tail.iter().any(|l| l.contains(s));
        if self.guest_ok && self.status == 0 {
            return Ending::Ok;
        }
        // busybox timeout kills with SIGTERM: 124 or 143, or the VMM's own
        // status after it handled the signal (QEMU exits 0, saying so).
        if self.status == 124
            || self.status == 143
            || said("terminating on signal 15")
            || said("stopped by signal 15")
            || self.seconds >= f64::from(BOOT_TIMEOUT_S) - 1.0
        {
            return Ending::Hang;
        }
        if said("KVM internal error") || said("internal error") && self.vmm == Vmm::Rayos && self.status == 1 {
            return Ending::KvmInternalError;
        }
        if said("Kernel panic") || (self.vmm == Vmm::Rayos && self.status == 3) {
            return Ending::Panic;
        }
        if said("triple fault") || (self.vmm == Vmm::Rayos && self.status == 4) {
            return Ending::TripleFault;
        }
        // QEMU -no-reboot exits 0 on a guest reset: no marker, no panic.
        if self.vmm == Vmm::Qemu && self.status == 0 && !self.guest_ok {
            return Ending::TripleFault;
        }
        Ending::Other
    }
}

/// Parses `RAYOS-CENSUS vmm=<v> boot=<i> status=<n> guest_ok=<0|1> t0=<s> t1=<s>`.
pub fn parse_census(line: &str) -> Option<Boot> {
    let rest = &line[line.find(CENSUS)? + CENSUS.len()..];
    let mut fields = BTreeMap::new();
    for word in rest.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        fields.insert(k, v);
    }
    let vmm = match *fields.get("vmm")? {
        "rayos" => Vmm::Rayos,
        "qemu" => Vmm::Qemu,
        _ => return None,
    };
    let t0: f64 = fields.get("t0")?.parse().ok()?;
    let t1: f64 = fields.get("t1")?.parse().ok()?;
    Some(Boot {
        vmm,
        index: fields.get("boot")?.parse().ok()?,
        status: fields.get("status")?.parse().ok()?,
        guest_ok: *fields.get("guest_ok")? == "1",
        seconds: t1 - t0,
        tail: Vec::new(),
    })
}

/// The census loop run by the test host's `/init` in place of its one VMM run.
pub fn census_script(boots: u32, vmms: &[Vmm], rayos_cmd: &str, qemu_cmd: &str) -> String {
    let mut body = String::new();
    for vmm in vmms {
        let cmd = match vmm {
            Vmm::Rayos => rayos_cmd,
            Vmm::Qemu => qemu_cmd,
        };
        body.push_str(&format!("    census_boot {} $i {cmd}\n", vmm.name()));
    }
    format!(
        r#"census_boot() {{
    v=$1; n=$2; shift 2
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout {BOOT_TIMEOUT_S} "$@" </dev/null >/tmp/census-boot.log 2>&1
    st=$?
    t1=$(cut -d' ' -f1 /proc/uptime)
    ok=0
    grep -q RAYOS-GUEST-OK /tmp/census-boot.log && ok=1
    echo "{CENSUS}vmm=$v boot=$n status=$st guest_ok=$ok t0=$t0 t1=$t1"
    if [ "$ok" != 1 ] || [ "$st" != 0 ]; then
        tail -n {FAILED_TAIL} /tmp/census-boot.log | tr -d '\r' | sed 's/^/{CENSUS_LOG}/'
    fi
}}
for i in $(seq 1 {boots}); do
{body}done
echo {CENSUS_DONE}
poweroff -f
sleep 60
"#
    )
}

/// Whether the last `n` boots of every VMM in `vmms` hung (the last
/// boot's console tail may still be arriving: endings are read as they are).
pub fn all_hanging(boots: &[Boot], vmms: &[Vmm], n: u32) -> bool {
    let n = n as usize;
    vmms.iter().all(|v| {
        let mine: Vec<&Boot> = boots.iter().filter(|b| b.vmm == *v).collect();
        mine.len() >= n && mine[mine.len() - n..].iter().all(|b| b.ending() == Ending::Hang)
    })
}

/// Counts of each ending per VMM.
pub fn tabulate(boots: &[Boot]) -> BTreeMap<(&'static str, Ending), u32> {
    let mut t = BTreeMap::new();
    for b in boots {
        *t.entry((b.vmm.name(), b.ending())).or_insert(0) += 1;
    }
    t
}

pub fn run(args: &CensusArgs) -> Outcome {
    match run_inner(args) {
        Ok(o) => o,
        Err(e) => nested::fail(SCENARIO, &e),
    }
}

fn accel_mode(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg if std::env::var(qemu::OUTER_TCG_ENV).as_deref() == Ok("single") => "tcg-single",
        Accel::Tcg => "tcg-multi",
    }
}

fn run_inner(args: &CensusArgs) -> Result<Outcome, VmmBootError> {
    let started = Instant::now();
    let vmms = args.vmm.vmms();
    let guest = nested::guest_spec(&args.boot);
    let rayos_cmd = testhost::sh_join(&testhost::rayos_vmm_argv(&guest));
    let qemu_cmd = testhost::sh_join(&testhost::qemu_argv(&guest, &args.boot.qemu_machine, false));
    let hooks =
        HostHooks { before_vmm: census_script(args.boots, &vmms, &rayos_cmd, &qemu_cmd), ..HostHooks::default() };
    let mut opts = args.boot.clone();
    // Every boot may use its whole allowance, plus the test host's own boot.
    let budget = Duration::from_secs(u64::from(args.boots) * vmms.len() as u64 * u64::from(BOOT_TIMEOUT_S) + 600);
    opts.timeout = opts.timeout.max(budget);
    let prep = vmm_boot::prepare(SCENARIO, &vmms, &opts, false, hooks)?;
    let mode = accel_mode(prep.accel);
    println!("{SCENARIO}: {} boots of {} in one test host, outer QEMU {mode}", args.boots, args.vmm.label());

    let mut boots: Vec<Boot> = Vec::new();
    let mut done = false;
    let mut gave_up = false;
    let run = nested::boot_host(&prep, &opts, vmms[0], |_, line| {
        if let Some(b) = parse_census(line) {
            println!(
                "{SCENARIO} boot {} vmm={} status={} guest_ok={} seconds={:.1} ending={}",
                b.index,
                b.vmm.name(),
                b.status,
                u8::from(b.guest_ok),
                b.seconds,
                b.ending().name()
            );
            boots.push(b);
        } else if let Some(i) = line.find(CENSUS_LOG) {
            if let Some(last) = boots.last_mut() {
                last.tail.push(line[i + CENSUS_LOG.len()..].to_string());
            }
        } else if line.contains(CENSUS_DONE) {
            done = true;
            return Flow::Finished;
        }
        if args.give_up_after > 0 && all_hanging(&boots, &vmms, args.give_up_after) {
            println!(
                "{SCENARIO}: the last {} boots of every VMM hung ({BOOT_TIMEOUT_S} s each); giving up on this census",
                args.give_up_after
            );
            gave_up = true;
            return Flow::Finished;
        }
        Flow::Continue
    })?;
    // The console tail arrives after the summary line: classify now.
    for b in boots.iter().filter(|b| b.ending() != Ending::Ok) {
        println!("{SCENARIO} boot {} vmm={} ended {}; console tail:", b.index, b.vmm.name(), b.ending().name());
        for l in b.tail.iter().rev().take(12).rev() {
            println!("    {l}");
        }
    }
    let table = tabulate(&boots);
    let endings =
        [Ending::Ok, Ending::Panic, Ending::TripleFault, Ending::KvmInternalError, Ending::Hang, Ending::Other];
    println!("{SCENARIO} table (outer QEMU {mode}):");
    println!("    {:<8} {}", "vmm", endings.map(|e| format!("{:>20}", e.name())).join(""));
    let mut figures = format!("accel={mode} boots={}", args.boots);
    for vmm in &vmms {
        let counts = endings.map(|e| table.get(&(vmm.name(), e)).copied().unwrap_or(0));
        println!("    {:<8} {}", vmm.name(), counts.map(|c| format!("{c:>20}")).join(""));
        let total: u32 = counts.iter().sum();
        let secs: Vec<f64> =
            boots.iter().filter(|b| b.vmm == *vmm && b.ending() == Ending::Ok).map(|b| b.seconds).collect();
        let mean = secs.iter().sum::<f64>() / secs.len().max(1) as f64;
        figures.push_str(&format!(
            " {v}_runs={total} {v}_ok={} {v}_failed={} {v}_boot_s_mean={mean:.1}",
            counts[0],
            total - counts[0],
            v = vmm.name()
        ));
    }
    let wall = started.elapsed().as_secs_f64();
    println!("{SCENARIO} wall_s={wall:.1} serial log {}", run.log.display());
    let expected = args.boots as usize * vmms.len();
    if gave_up {
        return Ok(Outcome::Fail {
            scenario: SCENARIO,
            reason: format!(
                "every VMM's guest hung {} times in a row under outer QEMU {mode}; census stopped after {} boots ({figures})",
                args.give_up_after,
                boots.len()
            ),
        });
    }
    if !done || boots.len() != expected {
        let reason = run.annotate(
            format!("the test host ran {} of {expected} boots and did not finish the census ({figures})", boots.len()),
            opts.timeout,
        );
        return Ok(Outcome::Fail { scenario: SCENARIO, reason });
    }
    nested::remove_images(&prep, args.boot.keep_images);
    Ok(Outcome::Pass { scenario: SCENARIO, figures: format!("{figures} wall_s={wall:.0}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(vmm: Vmm, status: i32, ok: bool, tail: &[&str]) -> Boot {
        Boot { vmm, index: 1, status, guest_ok: ok, seconds: 1.0, tail: tail.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn parses_summary_lines() {
        let b = parse_census("[  12.0] RAYOS-CENSUS vmm=qemu boot=7 status=0 guest_ok=1 t0=10.50 t1=31.25").unwrap();
        assert_eq!((b.vmm, b.index, b.status, b.guest_ok), (Vmm::Qemu, 7, 0, true));
        assert!((b.seconds - 20.75).abs() < 1e-9);
        assert!(parse_census("RAYOS-CENSUS vmm=xen boot=1 status=0 guest_ok=1 t0=1 t1=2").is_none());
        assert!(parse_census("RAYOS-CENSUS vmm=rayos boot=x status=0 guest_ok=1 t0=1 t1=2").is_none());
        assert!(parse_census("RAYOS-CENSUS vmm=rayos boot=1").is_none());
    }

    #[test]
    fn classifies_endings() {
        assert_eq!(boot(Vmm::Rayos, 0, true, &[]).ending(), Ending::Ok);
        assert_eq!(boot(Vmm::Rayos, 4, false, &[]).ending(), Ending::TripleFault);
        assert_eq!(boot(Vmm::Rayos, 3, false, &[]).ending(), Ending::Panic);
        assert_eq!(
            boot(Vmm::Rayos, 1, false, &["rayos-vmm: KVM internal error on vCPU 0"]).ending(),
            Ending::KvmInternalError
        );
        assert_eq!(boot(Vmm::Rayos, 124, false, &[]).ending(), Ending::Hang);
        assert_eq!(boot(Vmm::Qemu, 0, false, &["Kernel panic - not syncing"]).ending(), Ending::Panic);
        assert_eq!(boot(Vmm::Qemu, 0, false, &[]).ending(), Ending::TripleFault);
        // QEMU handles the timeout's SIGTERM and exits 0: a hang, not a reset.
        let q = boot(Vmm::Qemu, 0, false, &["qemu-system-x86_64: terminating on signal 15 from pid 117"]);
        assert_eq!(q.ending(), Ending::Hang);
        let mut slow = boot(Vmm::Rayos, 0, false, &[]);
        slow.seconds = f64::from(BOOT_TIMEOUT_S) + 0.3;
        assert_eq!(slow.ending(), Ending::Hang);
        assert_eq!(boot(Vmm::Qemu, 1, false, &["qemu: something"]).ending(), Ending::Other);
        // A guest that printed OK but whose VMM failed is not ok.
        assert_eq!(boot(Vmm::Rayos, 1, true, &[]).ending(), Ending::Other);
    }

    #[test]
    fn script_alternates_vmms_and_ends_with_done() {
        let s = census_script(3, &[Vmm::Rayos, Vmm::Qemu], "/usr/bin/rayos-vmm --x", "/usr/bin/qemu --y");
        let r = s.find("census_boot rayos $i /usr/bin/rayos-vmm --x").unwrap();
        let q = s.find("census_boot qemu $i /usr/bin/qemu --y").unwrap();
        assert!(r < q);
        assert!(s.contains("for i in $(seq 1 3); do"));
        assert!(s.contains(&format!("timeout {BOOT_TIMEOUT_S} \"$@\" </dev/null")));
        assert!(s.find(CENSUS_DONE).unwrap() < s.find("poweroff -f").unwrap());
    }

    #[test]
    fn gives_up_only_when_every_vmm_keeps_hanging() {
        let hang = |v| boot(v, 124, false, &[]);
        let ok = |v| boot(v, 0, true, &[]);
        let both = [Vmm::Rayos, Vmm::Qemu];
        assert!(!all_hanging(&[hang(Vmm::Rayos), hang(Vmm::Qemu)], &both, 2));
        let b = [hang(Vmm::Rayos), hang(Vmm::Qemu), hang(Vmm::Rayos), hang(Vmm::Qemu)];
        assert!(all_hanging(&b, &both, 2));
        let b = [hang(Vmm::Rayos), ok(Vmm::Qemu), hang(Vmm::Rayos), hang(Vmm::Qemu)];
        assert!(!all_hanging(&b, &both, 2));
    }

    #[test]
    fn tabulates_per_vmm() {
        let t =
            tabulate(&[boot(Vmm::Rayos, 0, true, &[]), boot(Vmm::Rayos, 4, false, &[]), boot(Vmm::Qemu, 0, true, &[])]);
        assert_eq!(t[&("rayos", Ending::Ok)], 1);
        assert_eq!(t[&("rayos", Ending::TripleFault)], 1);
        assert_eq!(t[&("qemu", Ending::Ok)], 1);
    }
}
