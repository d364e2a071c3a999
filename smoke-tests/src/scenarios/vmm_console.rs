//! Scenario `vmm-console` (tier 3, nested): a person at the guest's shell.
//!
//! The same boot as `rayos-smoke console` (what `scripts/run.sh` attaches a
//! user to), but the outer QEMU's console is a pseudo-terminal that this
//! scenario types into, key by key, like a person: the keys cross the outer
//! QEMU's serial port, the test host's ttyS0 (rayos-vmm's stdin, in raw
//! mode), rayos-vmm's 16550 and its irqfd, and reach busybox's shell on the
//! unmodified Debian kernel; the echo comes back the same way.
//!
//! Checks, in order: the shell prompt appears; every typed key is echoed
//! (the time from key to echo is the figure); a computed command runs
//! (`echo rayos-$((6*7))` prints `rayos-42`); the kernel release and vCPU
//! count are the expected ones; Ctrl-C interrupts a running `sleep` in the
//! guest (status 130) instead of stopping the VMM; `poweroff -f` ends
//! rayos-vmm with status 0; afterwards the test host's terminal is back in
//! canonical mode with echo (rayos-vmm restored it). The test host then
//! starts rayos-vmm twice more on the same guest, and the person ends those
//! VMs the two other ways: `reboot -f` ends rayos-vmm with status 0 (it does
//! not restart the guest), and a kernel panic (`echo c >
//! /proc/sysrq-trigger`, with `panic=-1` on the guest command line) ends it
//! with status 3 and names the panic. Last, the outer QEMU exits 0.

use std::time::{Duration, Instant};

use super::nested::{self, Prepared};
use super::vmm_boot::{self, VmmBootError};
use crate::cli::VmmConsoleArgs;
use crate::pty::{PtyError, PtySession};
use crate::serial;
use crate::stats;
use crate::testhost::{self, HostHooks, Vmm};
use crate::Outcome;

pub const SCENARIO: &str = "vmm-console";

/// What the guest's `/init` prints right before it starts the shell.
const SHELL_BANNER: &str = "busybox shell on the console";
/// busybox ash's prompt for root in `/`.
const PROMPT: &str = "# ";
/// The test host's report of its console's modes once rayos-vmm exited.
const TTY_MARK: &str = "RAYOS-TTY ";
/// Per interaction, once the shell is up (TCG runs two nested kernels).
const STEP: Duration = Duration::from_secs(60);
/// The test host starts another rayos-vmm run: `RAYOS-CONSOLE-NEXT <end>`.
const NEXT_MARK: &str = "RAYOS-CONSOLE-NEXT ";
/// That run ended: `RAYOS-CONSOLE-END <end> status=<n>`.
const END_MARK: &str = "RAYOS-CONSOLE-END ";
/// rayos-vmm's exit status for a guest panic (see rayos-vmm --help).
const PANIC_STATUS: &str = "3";
/// The panic the last ending causes on purpose.
const DELIBERATE_PANIC: &str = "sysrq triggered crash";

/// The further VM lifetimes after the first (which ends with poweroff): what
/// the person types and the status rayos-vmm must then exit with.
const ENDINGS: [(&str, &str, &str); 2] =
    [("reboot", "reboot -f", "0"), ("panic", "echo c > /proc/sysrq-trigger", PANIC_STATUS)];

/// Errors that end the scenario.
#[derive(Debug, thiserror::Error)]
pub enum VmmConsoleError {
    #[error(transparent)]
    Prepare(#[from] VmmBootError),
    #[error(transparent)]
    Pty(#[from] PtyError),
    #[error("{0}")]
    Check(String),
}

/// Figures of a passing run.
#[derive(Debug)]
struct Figures {
    vmm_to_shell: Duration,
    echo_ms: Vec<f64>,
    ctrl_c: Duration,
    tty: String,
    /// From typing each ending's command to rayos-vmm's exit.
    endings: Vec<(&'static str, Duration)>,
}

/// The test host's shell after the first rayos-vmm run: report the console's
/// modes, then run rayos-vmm again once per [`ENDINGS`] entry.
fn after_vmm_hook(rayos_cmd: &str) -> String {
    // busybox stty prints `-icanon`/`-echo` for cleared flags.
    let mut hook = format!(
        "if ! t=$(stty -a </dev/console 2>&1); then echo \"{TTY_MARK}unknown: $t\"\n\
         else m=''; for f in icanon echo isig; do\n\
         case \" $(echo $t | tr ';' ' ') \" in *\" -$f \"*) m=\"$m -$f\" ;; *) m=\"$m $f\" ;; esac\n\
         done; echo \"{TTY_MARK}$m\"; fi\n"
    );
    for (name, _, _) in ENDINGS {
        hook.push_str(&format!(
            "echo \"{NEXT_MARK}{name}\"\n{rayos_cmd}\nend_status=$?\necho \"{END_MARK}{name} status=$end_status\"\n"
        ));
    }
    hook
}

/// `vmm-console`.
pub fn run(args: &VmmConsoleArgs) -> Outcome {
    let rayos_cmd = testhost::sh_join(&testhost::rayos_vmm_argv(&nested::guest_spec(&args.boot)));
    let hooks = HostHooks { after_vmm: after_vmm_hook(&rayos_cmd), ..HostHooks::default() };
    let started = Instant::now();
    let prep = match vmm_boot::prepare(SCENARIO, &[Vmm::Rayos], &args.boot, true, hooks) {
        Ok(p) => p,
        Err(e) => return nested::fail(SCENARIO, &e),
    };
    let transcript = prep.run_dir.join("console-transcript.log");
    // A guest crash the nested environment caused (see
    // nested::guest_crash_in_console) gets one more session, visibly.
    let attempt = || Ok::<_, std::convert::Infallible>(session(&prep, args, &transcript));
    let crashed = |r: &Result<Figures, VmmConsoleError>| {
        let e = r.as_ref().err()?;
        let console = std::fs::read(&transcript).unwrap_or_default();
        Some(nested::Failure {
            reason: e.to_string(),
            log: transcript.clone(),
            guest_crash: nested::guest_crash_in_console(&String::from_utf8_lossy(&console), DELIBERATE_PANIC),
        })
    };
    let Ok((result, _)) = nested::run_with_retry(SCENARIO, Vmm::Rayos, attempt, crashed);
    match result {
        Ok(f) => {
            let echo = stats::summarise(&f.echo_ms).expect("keys were typed");
            let (p50, max) = (echo.median, echo.max);
            let endings: String =
                f.endings.iter().map(|(name, d)| format!(" {name}_to_exit_s={:.2}", d.as_secs_f64())).collect();
            println!(
                "vmm-console vmm_to_shell_s={:.2} keys={} echo_ms_p50={p50:.1} echo_ms_max={max:.1} ctrl_c_ms={:.0} tty_after_exit=[{}]{endings} wall_s={:.1} transcript={}",
                f.vmm_to_shell.as_secs_f64(),
                f.echo_ms.len(),
                f.ctrl_c.as_secs_f64() * 1e3,
                f.tty.trim(),
                started.elapsed().as_secs_f64(),
                transcript.display()
            );
            nested::remove_images(&prep, args.boot.keep_images);
            Outcome::Pass {
                scenario: SCENARIO,
                figures: format!(
                    "echo_ms_p50={p50:.1} ctrl_c_ms={:.0} poweroff_exit=0 reboot_exit=0 panic_exit={PANIC_STATUS}",
                    f.ctrl_c.as_secs_f64() * 1e3
                ),
            }
        }
        Err(e) => {
            println!("vmm-console transcript={}", transcript.display());
            nested::fail(SCENARIO, &e)
        }
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), VmmConsoleError> {
    if ok {
        Ok(())
    } else {
        Err(VmmConsoleError::Check(what()))
    }
}

fn session(prep: &Prepared, args: &VmmConsoleArgs, transcript: &std::path::Path) -> Result<Figures, VmmConsoleError> {
    let opts = &args.boot;
    let cmd = nested::outer_command(prep, opts, Vmm::Rayos, true);
    tracing::debug!("outer QEMU: {cmd:?}");
    println!("outer QEMU on a pseudo-terminal; transcript {}", transcript.display());
    let mut s = PtySession::spawn(cmd, transcript)?;

    // Boot: the VMM starts, the guest's /init prints its banner, the prompt follows.
    let start = s.wait_for(0, serial::VMM_START, opts.timeout)?;
    let banner = s.wait_for(start.end, SHELL_BANNER, opts.timeout)?;
    let prompt = s.wait_for(banner.end, PROMPT, STEP)?;
    let vmm_to_shell = prompt.at.duration_since(start.at);
    println!("vmm-console shell prompt {:.2} s after the VMM started", vmm_to_shell.as_secs_f64());
    // Let the guest's boot output settle before timing keys.
    std::thread::sleep(Duration::from_secs(1));

    // Key by key: each must come back as the shell's echo.
    let line = "echo rayos-$((6*7))";
    let mut echo_ms = Vec::new();
    for c in line.chars() {
        let m = s.mark();
        let sent = Instant::now();
        s.send(c.to_string().as_bytes())?;
        let f = s.wait_for(m, &c.to_string(), STEP)?;
        echo_ms.push(f.at.saturating_duration_since(sent).as_secs_f64() * 1e3);
    }
    let m = s.mark();
    s.send(b"\r")?;
    let out = s.wait_for(m, "rayos-42", STEP)?;
    s.wait_for(out.end, PROMPT, STEP)?;

    // The guest is the expected kernel with the expected vCPUs.
    let m = s.mark();
    s.send(b"echo \"R=$(uname -r) N=$(nproc)\"\r")?;
    let want = format!("R={} N={}", prep.release, opts.guest_cpus);
    let got = s.wait_for(m, &want, STEP)?;
    s.wait_for(got.end, PROMPT, STEP)?;

    // Ctrl-C reaches the guest's foreground job, not the VMM.
    let m = s.mark();
    s.send(b"sleep 600\r")?;
    s.wait_for(m, "sleep 600", STEP)?;
    std::thread::sleep(Duration::from_millis(1500));
    let m = s.mark();
    let sent = Instant::now();
    s.send(b"\x03")?;
    let back = s.wait_for(m, PROMPT, STEP)?;
    let ctrl_c = back.at.saturating_duration_since(sent);
    let m = s.mark();
    s.send(b"echo \"rc=$?\"\r")?;
    s.wait_for(m, "rc=130", STEP)?;

    // poweroff ends rayos-vmm with 0; the test host's console is cooked again.
    let m = s.mark();
    s.send(b"poweroff -f\r")?;
    let tty = s.wait_for(m, TTY_MARK, STEP)?;
    let tty_end = s.wait_for(tty.end, "\n", STEP)?;
    let tty_state = s.text(tty.end, tty_end.end).trim().to_string();
    check(tty_state.split_whitespace().eq(["icanon", "echo", "isig"]), || {
        format!("the test host's console after rayos-vmm exited is [{tty_state}] (expected icanon echo isig: the terminal was not restored)")
    })?;

    // Two more VMs, ended by reboot and by a kernel panic.
    let mut at = tty_end.end;
    let mut endings = Vec::new();
    for (name, command, want) in ENDINGS {
        let next = s.wait_for(at, &format!("{NEXT_MARK}{name}"), STEP)?;
        let banner = s.wait_for(next.end, SHELL_BANNER, opts.timeout)?;
        let prompt = s.wait_for(banner.end, PROMPT, STEP)?;
        std::thread::sleep(Duration::from_secs(1));
        let m = s.mark().max(prompt.end);
        let sent = Instant::now();
        s.send(format!("{command}\r").as_bytes())?;
        let end = s.wait_for(m, &format!("{END_MARK}{name} status="), STEP)?;
        let line_end = s.wait_for(end.end, "\n", STEP)?;
        let status = s.text(end.end, line_end.end).trim().to_string();
        check(status == want, || format!("rayos-vmm exited with status {status} after `{command}` (expected {want})"))?;
        if name == "panic" {
            let said = s.text(m, end.end);
            check(
                said.contains(&format!(
                    "rayos-vmm: guest kernel panic: Kernel panic - not syncing: {DELIBERATE_PANIC}"
                )),
                || {
                    "rayos-vmm did not name the guest's panic (`rayos-vmm: guest kernel panic: ...sysrq triggered crash`)".to_string()
                },
            )?;
        }
        endings.push((name, end.at.saturating_duration_since(sent)));
        at = line_end.end;
    }

    let exit = s.wait_for(at, serial::VMM_EXIT, STEP)?;
    let exit_end = s.wait_for(exit.end, "\n", STEP)?;
    let status = s.text(exit.end, exit_end.end).trim().to_string();
    check(status == "0", || format!("rayos-vmm exited with status {status} after poweroff -f (expected 0)"))?;
    let outer = s.finish(STEP)?;
    check(outer.is_some_and(|st| st.success()), || {
        format!("outer QEMU: {outer:?} (expected exit 0 after the test host powered off)")
    })?;
    Ok(Figures { vmm_to_shell, echo_ms, ctrl_c, tty: tty_state, endings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_reports_the_tty_then_runs_each_ending() {
        let h = after_vmm_hook("/usr/bin/rayos-vmm --kernel /guest/vmlinuz");
        let tty = h.find(TTY_MARK).unwrap();
        let reboot =
            h.find("echo \"RAYOS-CONSOLE-NEXT reboot\"\n/usr/bin/rayos-vmm --kernel /guest/vmlinuz\n").unwrap();
        let panic = h.find("echo \"RAYOS-CONSOLE-NEXT panic\"\n/usr/bin/rayos-vmm").unwrap();
        assert!(tty < reboot && reboot < panic);
        assert!(h.contains("echo \"RAYOS-CONSOLE-END panic status=$end_status\""));
        // The first run's status, which RAYOS-VMM-EXIT reports, is kept.
        assert!(h.contains("\nend_status=$?\n"));
        assert!(!h.contains("\nstatus="));
    }
}
