//! Scenario `vmm-agent` (tier 3, nested): the RayOS host service owns the
//! guest. Inside the nested test host, `rayos host` boots the real guest image
//! under rayos-vmm (virtio-fs root from virtiofsd, the agent over
//! rayos-vsock, native windows through the bridge), under a policy file, and
//! every check goes through the service's CLI, a client of its control API.
//! Then QEMU boots the same image with the same backends in the same test
//! host, for comparison.
//!
//! The outer side is [`super::vmm_native`]'s (guest image, test host kernel
//! and busybox, the image as an ext4 disk, one boot of the test host with an
//! output folder over virtio-fs, one retry after a guest crash); the test
//! host's `/init` is `host-init.sh` here. Its steps, each timed from its
//! serial markers:
//! * `compositor` (not with `--no-native`): rayos-compositor headless.
//! * `service`: `rayos host --check` accepts the policy, `rayos host` serves
//!   its socket, `rayos vm list` shows the VM stopped; `rayos events` records
//!   the event stream into the output folder from here on.
//! * `agent`: `rayos vm start linux --wait` (the service starts virtiofsd,
//!   rayos-vsock, registers the VM with the compositor, starts rayos-vmm and
//!   waits for the agent's hello): `boot_to_agent_s`.
//! * `catalog`: `rayos apps` lists foot (the live catalog, policy-filtered).
//! * `exit3`: `rayos launch --wait --command -- sh -c 'id -un; exit 3'`
//!   returns 3.
//! * `rtt`: seven `rayos launch --wait --command -- true`, each timed by the
//!   CLI from request to exit status: `launch_rtt_ms` is their median.
//! * `refuse`: the one image app the policy leaves out is refused by the
//!   host and not listed by `rayos apps`.
//! * `api`: `rayos api-bench` (GET /v1/vms, 300 requests): `api_p50_ms`,
//!   and the service's RSS before the intent model was first used.
//! * `words` (with the intent model installed here), `terminal`:
//!   `rayos launch "open a terminal"` resolves over the live catalog and
//!   launches through the bridge; a terminal window of VM `linux` draws, is
//!   listed by `rayos windows`, and its screenshot is checked here (origin
//!   colour, label, client pixels). Without the model, `rayos launch foot`.
//! * `vsock`: rayos-vsock is killed; the event stream must show its
//!   `child_exited`, the VM `degraded`, and the VM running again (policy
//!   `restart-vm`); `rayos apps` answers again: `vsock_recovery_s`.
//! * `stop`: `rayos vm stop linux` reports a guest power-off; no rayos-vmm,
//!   virtiofsd, rayos-vsock or bridge is left, nor the VM's runtime folder.
//! * `service-stop`: SIGTERM; the service exits 0 and removes its socket.
//! * `qemu`, `qemu-poweroff`: virtiofsd, rayos-vsock and QEMU (KVM, q35,
//!   vhost-user-fs-pci, vhost-user-vsock-pci) boot the same image with the
//!   same command line and memory; `rayos guest ping` on the hybrid socket:
//!   `qemu_boot_to_agent_s`, measured like ours (backends included).
//!
//! A guest crash (rayos-vmm status 3 or 4 in the service's report, or QEMU's
//! guest resetting while it boots) is the nested environment's (README, Test
//! tiers), and so is a QEMU reference boot that stalls (no agent within two
//! thirds of `--boot-timeout`; its console's tail is printed): the test host
//! boots that guest again in place, at most
//! [`GUEST_RETRIES`] times in all, each printed (`RAYOS-VN-RETRY`) and counted
//! in the PASS line (`guest_retries=`); `boot_to_agent_s` and
//! `qemu_boot_to_agent_s` time the boot that reached the agent, while
//! `vsock_recovery_s` includes a retried restart. A test host that resets or
//! panics gets the one outer retry of every nested scenario.
//!
//! Logs (the service's, its event stream, the guests' consoles, the policy)
//! and the terminal's screenshot stay in `<run dir>/out`.

use crate::scenarios::ScenarioError;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::compositor::{check_window_shot, Image, VM_RGB};
use super::nested;
use super::vmm_native::{
    boot_step, host_image_step, image_disk_step, model_for_host, prepare_step, GuestPlan, Observation, TERMINALS, VM,
    WORDS_REQUEST,
};
use crate::cli::VmmNativeArgs;
use crate::stats;
use crate::testhost;
use crate::Outcome;

pub const SCENARIO: &str = "vmm-agent";
const HOST_INIT: &str = include_str!("host-init.sh");
/// Guest crashes (of either VMM's guest) the test host retries in place,
/// in all, before the run fails (and gets its one outer retry).
const GUEST_RETRIES: u32 = 2;
/// The image's app the test policy leaves out.
const REFUSED_APP: &str = "weston-flower.desktop";

/// What the test host's `/init` is told.
#[derive(Debug, Clone)]
pub struct Plan {
    pub guest: GuestPlan,
    /// The desktop ids the policy allows (every app of the image but
    /// [`REFUSED_APP`]).
    pub allowed_apps: Vec<String>,
}

impl Plan {
    pub fn steps(&self) -> Vec<&'static str> {
        let mut s = vec![];
        if self.guest.native {
            s.push("compositor");
        }
        s.extend(["service", "agent", "catalog", "exit3", "rtt", "refuse", "api"]);
        if self.guest.native {
            if self.guest.words {
                s.push("words");
            }
            s.push("terminal");
        }
        s.extend(["vsock", "stop", "service-stop", "qemu", "qemu-poweroff"]);
        s
    }
}

/// The test host's `/init` for `plan`.
pub fn host_init(plan: &Plan) -> String {
    let allowed = plan.allowed_apps.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let mut values = plan.guest.placeholders();
    values.extend([
        ("ALLOWED_APPS", allowed),
        ("REFUSED_APP", REFUSED_APP.to_string()),
        ("QEMU", testhost::QEMU.to_string()),
        ("QEMU_MACHINE", testhost::DEFAULT_QEMU_MACHINE.to_string()),
        ("GUEST_RETRIES", GUEST_RETRIES.to_string()),
        ("QEMU_STALL", (plan.guest.boot_timeout * 2 / 3).as_secs().max(1).to_string()),
    ]);
    plan.guest.host_init(HOST_INIT, &values)
}

/// Figures of a passing run.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub boot_to_agent_s: f64,
    /// The service's own figure (VM start to the agent's hello).
    pub service_boot_to_agent_ms: Option<f64>,
    pub qemu_boot_to_agent_s: f64,
    pub launch_rtt_ms: Vec<f64>,
    pub api_p50_ms: f64,
    pub rss_kib_idle: u64,
    pub vsock_recovery_s: f64,
    pub restarts_after_kill: u64,
    pub stop: String,
    /// (step, seconds it took)
    pub step_s: Vec<(String, f64)>,
    pub words_launch: Option<Value>,
    pub terminal: Option<Value>,
    /// Guest crashes retried inside the test host.
    pub retries: Vec<String>,
}

fn detail<'a>(obs: &'a Observation, step: &str) -> &'a str {
    obs.passed.iter().find(|(n, _, _)| n == step).map(|(_, _, d)| d.as_str()).unwrap_or("")
}

/// `key=<number>` in `text`.
fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).and_then(|v| v.parse().ok())
}

/// Checks that every step of `plan` passed, and reads the figures.
pub fn evaluate(obs: &Observation, plan: &Plan) -> Result<Figures, ScenarioError> {
    let step_s = obs.step_times(&plan.steps())?;
    let s = |n: &str| step_s.iter().find(|(x, _)| x == n).map(|(_, s)| *s).unwrap_or(f64::NAN);

    let vm: Value = serde_json::from_str(detail(obs, "agent"))
        .map_err(|e| format!("step agent: the VM status is not JSON ({e}): {}", detail(obs, "agent")))?;
    if vm["state"] != "running" || vm["agent"].is_null() {
        return Err(format!("step agent: the VM is not running with an agent: {vm}").into());
    }
    let launch_rtt_ms: Vec<f64> = detail(obs, "rtt").split_whitespace().filter_map(|w| w.parse().ok()).collect();
    if launch_rtt_ms.len() < 5 {
        return Err(format!("step rtt: too few timed launches: {:?}", detail(obs, "rtt")).into());
    }
    let api_p50_ms = field(detail(obs, "api"), "api_p50_ms")
        .ok_or_else(|| format!("step api: no api_p50_ms in {:?}", detail(obs, "api")))?;
    let rss_kib_idle = field(detail(obs, "api"), "rss_kib").unwrap_or(f64::NAN) as u64;
    let after: Value = serde_json::from_str(detail(obs, "vsock"))
        .map_err(|e| format!("step vsock: the VM status is not JSON ({e})"))?;
    if after["state"] != "running" {
        return Err(format!("step vsock: the VM is not running after the restart: {after}").into());
    }
    let restarts_after_kill = after["restarts"].as_u64().unwrap_or(0);
    if restarts_after_kill == 0 {
        return Err(format!("step vsock: the service counts no restart: {after}").into());
    }

    let mut words_launch = None;
    if plan.guest.native && plan.guest.words {
        let v: Value = serde_json::from_str(detail(obs, "words"))
            .map_err(|e| format!("rayos launch printed no JSON ({e}): {}", detail(obs, "words")))?;
        let app = v["app"].as_str().or(v["launched"].as_str()).unwrap_or_default();
        if !TERMINALS.contains(&app) {
            return Err(format!("\"{WORDS_REQUEST}\" launched {app:?}, not a terminal: {v}").into());
        }
        words_launch = Some(v);
    }
    if plan.guest.native {
        let t = obs.terminal.as_ref().ok_or("no terminal window JSON from the test host")?;
        if t["origin"]["name"] != VM || t["origin"]["kind"] == "host" {
            return Err(format!("the terminal window's origin is not VM {VM}: {t}").into());
        }
    }
    Ok(Figures {
        boot_to_agent_s: s("agent"),
        service_boot_to_agent_ms: vm["boot_to_agent_ms"].as_f64(),
        qemu_boot_to_agent_s: s("qemu"),
        launch_rtt_ms,
        api_p50_ms,
        rss_kib_idle,
        vsock_recovery_s: s("vsock"),
        restarts_after_kill,
        stop: detail(obs, "stop").to_string(),
        step_s,
        words_launch,
        terminal: obs.terminal.clone(),
        retries: obs.retries.clone(),
    })
}

pub fn run(args: &VmmNativeArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: SCENARIO, figures },
        Err(reason) => Outcome::Fail { scenario: SCENARIO, reason: reason.to_string() },
    }
}

/// The desktop ids of the image's catalog (`usr/share/applications`).
fn image_apps(rootfs: &Path) -> Result<Vec<String>, ScenarioError> {
    let dir = rootfs.join("usr/share/applications");
    let mut ids: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".desktop"))
        .collect();
    ids.sort();
    Ok(ids)
}

/// The event types (with their VM state or child) the stream recorded from
/// rayos-vsock's death on.
fn events_after_kill(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
    let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let from =
        events.iter().position(|e| e["type"] == "child_exited" && e["child"] == "rayos-vsock").unwrap_or(events.len());
    events[from..]
        .iter()
        .map(|e| {
            let t = e["type"].as_str().unwrap_or("?");
            match (e["state"].as_str(), e["child"].as_str()) {
                (Some(s), _) => format!("{t}:{s}"),
                (_, Some(c)) => format!("{t}:{c}"),
                _ => t.to_string(),
            }
        })
        .collect()
}

fn run_inner(args: &VmmNativeArgs) -> Result<String, ScenarioError> {
    let t_all = Instant::now();
    // 1. Host tools, guest image, test host kernel, busybox and QEMU.
    let inputs = prepare_step(SCENARIO, args)?;
    let virtiofsd = &inputs.tools.virtiofsd;
    let (run_dir, opts) = (&inputs.run_dir, &inputs.opts);
    let apps = image_apps(&inputs.image.join(&inputs.manifest.rootfs))?;
    if !apps.iter().any(|a| a == REFUSED_APP) {
        return Err(format!(
            "the guest image has no {REFUSED_APP} for the policy to refuse (apps: {})",
            apps.join(" ")
        )
        .into());
    }

    // 2. The test host image (with QEMU, and the intent model when this
    //    machine has it).
    let model = model_for_host();
    let plan = Plan {
        guest: GuestPlan::new(&inputs.manifest, args, model.is_some()),
        allowed_apps: apps.into_iter().filter(|a| a != REFUSED_APP).collect(),
    };
    let qemu = Some(inputs.nested.qemu.as_path());
    let host_initrd = host_image_step(SCENARIO, &inputs, host_init(&plan), qemu, model.as_ref())?;
    let disk = image_disk_step(SCENARIO, &inputs.image, run_dir)?;
    let prep = nested::prepared(&inputs.nested, opts, disk.clone(), host_initrd);
    let out = run_dir.join("out");

    // 3. Boot (with one retry after a guest crash).
    let (figures, result, attempts) = boot_step(SCENARIO, &prep, opts, virtiofsd, &disk, &out, |o| evaluate(o, &plan))?;
    for (step, s) in &figures.step_s {
        println!("{SCENARIO} step {step}: {s:.2} s");
    }
    for r in &figures.retries {
        println!("{SCENARIO} retried in the test host (a guest crash; cause open): {r}");
    }
    let events = events_after_kill(&out);
    println!("{SCENARIO} events after rayos-vsock was killed: {}", events.join(" "));
    for want in ["child_exited:rayos-vsock", "vm_state:degraded", "vm_state:running"] {
        if !events.iter().any(|e| e == want) {
            return Err(format!(
                "the event stream ({}) lacks {want} after rayos-vsock was killed",
                out.join("events.jsonl").display()
            )
            .into());
        }
    }
    println!("{SCENARIO} rayos vm stop: {}", figures.stop);
    println!(
        "{SCENARIO} launch round trips (ms): {}",
        figures.launch_rtt_ms.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" ")
    );
    let terminal_check = match &figures.terminal {
        Some(t) => {
            println!("{SCENARIO} terminal window: {t}");
            let img = Image::load(&out.join("terminal-window.png")).map_err(|e| format!("terminal screenshot: {e}"))?;
            check_window_shot(&img, t, VM_RGB, "the guest terminal launched through rayos host")
                .map_err(|e| e.to_string())?;
            println!("{SCENARIO} screenshot: {}", out.join("terminal-window.png").display());
            let words = match &figures.words_launch {
                Some(l) => {
                    println!("{SCENARIO} \"{WORDS_REQUEST}\": {l}");
                    format!(" words_launched={}", l["app"].as_str().or(l["launched"].as_str()).unwrap_or("?"))
                }
                None => {
                    println!(
                        "{SCENARIO} not checked: \"{WORDS_REQUEST}\" (the intent model {} is not installed here: rayos models install); launched foot by name instead",
                        rayos::models::DEFAULT_MODEL
                    );
                    " words=not-checked".to_string()
                }
            };
            format!("{words} terminal_window=1 window_app_id={}", t["app_id"].as_str().unwrap_or("?"))
        }
        None => {
            println!("{SCENARIO} not checked (--no-native): compositor, bridge, words, window");
            " native_window=not-checked".to_string()
        }
    };
    if let Some(ms) = figures.service_boot_to_agent_ms {
        println!("{SCENARIO} the service's own boot_to_agent_ms={ms:.0}");
    }
    nested::remove_images(&prep, args.keep_images);
    let wall = t_all.elapsed().as_secs_f64();
    println!("{SCENARIO} wall_s={wall:.1} run_dir={}", run_dir.display());
    let rtt_p50 = stats::summarise(&figures.launch_rtt_ms).map_or(f64::NAN, |s| s.median);
    Ok(format!(
        "boot_to_agent_s={:.1} qemu_boot_to_agent_s={:.1} launch_rtt_ms={rtt_p50:.1} api_p50_ms={:.3} rss_kib={} catalog_ok=1 exit3_ok=1 refused_ok=1{terminal_check} vsock_recovery_s={:.1} restarts={} stop_clean=1 test_host_wall_s={:.1} guest_retries={} attempts={attempts}",
        figures.boot_to_agent_s,
        figures.qemu_boot_to_agent_s,
        figures.api_p50_ms,
        figures.rss_kib_idle,
        figures.vsock_recovery_s,
        figures.restarts_after_kill,
        result.wall.as_secs_f64(),
        figures.retries.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn plan(native: bool, words: bool) -> Plan {
        Plan {
            guest: GuestPlan {
                cmdline: "console=ttyS0 rayos.root=rootfs panic=-1".into(),
                memory_mib: 1024,
                cpus: 2,
                vmlinuz: "vmlinuz".into(),
                initramfs: "initramfs.cpio.gz".into(),
                rootfs: "rootfs".into(),
                native,
                words,
                boot_timeout: Duration::from_secs(300),
                window_timeout: Duration::from_secs(120),
                vmm_log: None,
                gpu: false,
                desktop: false,
            },
            allowed_apps: vec!["foot.desktop".into(), "weston-terminal.desktop".into()],
        }
    }

    #[test]
    fn host_init_is_fully_substituted() {
        let s = host_init(&plan(true, true));
        crate::script::assert_sh_parses(&s);
        assert!(s.contains("start_compositor() {") && s.contains("start_compositor $CR"));
        let b = s.as_bytes();
        for (i, _) in s.match_indices('@') {
            let word: String = s[i + 1..].chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            assert!(word.is_empty() || b.get(i + 1 + word.len()) != Some(&b'@'), "placeholder @{word}@ left");
        }
        assert!(s.contains("apps = [\"foot.desktop\", \"weston-terminal.desktop\"]"));
        assert!(s.contains("memory = \"1024M\"\ncpus = 2\n"));
        assert!(s.contains("-append 'console=ttyS0 rayos.root=rootfs panic=-1'"));
        assert!(s.contains("/usr/bin/rayos launch --vm linux weston-flower.desktop"));
    }

    fn obs(lines: &[String]) -> Observation {
        let mut o = Observation::default();
        for (i, l) in lines.iter().enumerate() {
            o.observe(Duration::from_secs(i as u64), l);
        }
        o
    }

    fn passing(native: bool, words: &str) -> Vec<String> {
        let vm = r#"{"name":"linux","state":"running","agent":{"version":1},"boot_to_agent_ms":21000,"restarts":0}"#;
        let vm2 = r#"{"name":"linux","state":"running","agent":{"version":1},"restarts":1}"#;
        let mut l: Vec<String> = vec![];
        let mut step = |name: &str, detail: &str| {
            l.push(format!("RAYOS-VN-STEP {name}"));
            l.push(format!("RAYOS-VN-OK {name} {detail}"));
        };
        if native {
            step("compositor", "ok");
        }
        step("service", "rss_kib=7000");
        l.push("RAYOS-VMM-START".into());
        let mut step = |name: &str, detail: &str| {
            l.push(format!("RAYOS-VN-STEP {name}"));
            l.push(format!("RAYOS-VN-OK {name} {detail}"));
        };
        step("agent", vm);
        step("catalog", "9 apps");
        step("exit3", "status 3");
        step("rtt", "40.1 38.2 39.0 41.5 37.7 39.9 40.0 ");
        step("refuse", "refused by the host's policy");
        step("api", "api_p50_ms=0.210 api_p99_ms=0.900 requests=300 rss_kib=8123");
        if native {
            if !words.is_empty() {
                step("words", words);
            }
            l.push("RAYOS-VN-STEP terminal".into());
            l.push(r#"RAYOS-VN-TERMINAL {"id":2,"app_id":"foot","origin":{"kind":"vm","name":"linux"}}"#.into());
            l.push("RAYOS-VN-OK terminal ok".into());
        }
        let mut step = |name: &str, detail: &str| {
            l.push(format!("RAYOS-VN-STEP {name}"));
            l.push(format!("RAYOS-VN-OK {name} {detail}"));
        };
        step("vsock", vm2);
        step("stop", "linux: stopped (the guest powered off)");
        step("service-stop", "ok");
        step("qemu", "pong");
        step("qemu-poweroff", "ok");
        l.push("RAYOS-VN-DONE".into());
        l
    }

    #[test]
    fn a_passing_run_gives_every_figure() {
        let p = plan(true, true);
        let f = evaluate(&obs(&passing(true, r#"{"app":"foot.desktop","native_window":true}"#)), &p).unwrap();
        assert_eq!(f.launch_rtt_ms.len(), 7);
        assert_eq!(f.api_p50_ms, 0.21);
        assert_eq!(f.rss_kib_idle, 8123);
        assert_eq!(f.restarts_after_kill, 1);
        assert_eq!(f.service_boot_to_agent_ms, Some(21000.0));
        assert_eq!(f.step_s.len(), p.steps().len());
        assert!(f.boot_to_agent_s > 0.0 && f.qemu_boot_to_agent_s > 0.0);
        let f = evaluate(&obs(&passing(false, "")), &plan(false, false)).unwrap();
        assert!(f.terminal.is_none());
    }

    #[test]
    fn a_retried_boot_is_counted_and_timed_from_its_last_start() {
        let mut l = passing(false, "");
        let q = l.iter().position(|x| x == "RAYOS-VN-STEP qemu").unwrap();
        l.insert(q + 1, "RAYOS-VN-RETRY qemu: QEMU's guest reset itself while booting".into());
        l.insert(q + 2, "x".into());
        l.insert(q + 3, "x".into());
        l.insert(q + 4, "RAYOS-VN-STEP qemu".into());
        let f = evaluate(&obs(&l), &plan(false, false)).unwrap();
        assert_eq!(f.retries, ["qemu: QEMU's guest reset itself while booting"]);
        assert_eq!(f.qemu_boot_to_agent_s, 1.0);
    }

    #[test]
    fn wrong_answers_fail() {
        let p = plan(true, true);
        let e = evaluate(&obs(&passing(true, r#"{"app":"weston-flower.desktop"}"#)), &p).unwrap_err();
        assert!(e.to_string().contains("not a terminal"), "{e}");
        let mut l = passing(false, "");
        l.retain(|x| !x.contains("OK qemu-poweroff"));
        let e = evaluate(&obs(&l), &plan(false, false)).unwrap_err();
        assert!(e.to_string().contains("step qemu-poweroff did not pass"), "{e}");
        let l: Vec<String> =
            passing(false, "").into_iter().map(|x| x.replace(r#""restarts":1"#, r#""restarts":0"#)).collect();
        assert!(evaluate(&obs(&l), &plan(false, false)).unwrap_err().to_string().contains("no restart"));
        let l = [
            "RAYOS-VN-STEP service".to_string(),
            "RAYOS-HOST-FAIL rayos host exited (1) while waiting for x".to_string(),
        ];
        assert_eq!(
            evaluate(&obs(&l), &plan(false, false)).unwrap_err().to_string(),
            "step service: rayos host exited (1) while waiting for x"
        );
    }
}
