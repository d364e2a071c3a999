//! Scenario `host-api` (tier 1): the host service as a user meets it on
//! this machine, without booting a guest (this machine's /dev/kvm cannot run
//! a stock Linux kernel; `vmm-agent` boots the real guest under the service
//! in the nested test host).
//!
//! 1. Bad policy files: `rayos host --policy BAD --check` must fail with
//!    exit status 2 and one line naming the file, the key and the value,
//!    for bad TOML, an unknown key, a share escaping `shares_root`,
//!    impossible memory and impossible CPUs.
//! 2. `rayos host` (release build, real tools found on this machine) with a
//!    policy whose VM does not autostart; the control socket must be 0600 in
//!    a private folder; `rayos vm list --json` shows the VM `stopped`.
//! 3. `rayos api-bench` times GET /v1/vms (target p50 ≤ 2 ms); the
//!    service's resident memory is read from /proc (target ≤ 30 MiB before
//!    the intent model is first used).
//! 4. SIGTERM: the service exits 0 within 10 s and removes its socket.
//!
//! Prints `PASS host-api api_p50_ms=<ms> api_p99_ms=<ms> rss_kib=<KiB> bad_policies=<n>/<n>`.

use crate::scenarios::ScenarioError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::Procs;
use crate::rundir;
use crate::Outcome;

pub const SCENARIO: &str = "host-api";
/// GET /v1/vms p50 target.
pub const MAX_API_P50_MS: f64 = 2.0;
/// The service's RSS target before the model is used.
pub const MAX_RSS_KIB: u64 = 30 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct HostApiArgs {
    /// The `rayos` binary [default: <workspace>/target/release/rayos].
    #[arg(long, value_name = "PATH")]
    pub rayos_bin: Option<PathBuf>,
    /// GET /v1/vms requests to time.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Run directory [default: <workspace>/target/smoke/host-api-<stamp>].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// The bad policies and the words their error must contain.
fn bad_policies(shares_root: &Path) -> Vec<(&'static str, String, Vec<String>)> {
    let root = shares_root.display();
    vec![
        ("bad-toml", "[host\nsocket = 1\n".into(), vec!["bad-toml.toml".into()]),
        ("unknown-key", "[vm.linux]\nmemroy = \"1G\"\n".into(), vec!["memroy".into()]),
        (
            "share-escapes",
            format!("[host]\nshares_root = \"{root}\"\n[vm.linux]\n[[vm.linux.share]]\ntag = \"s\"\npath = \"{root}/../..\"\nguest_path = \"/mnt/s\"\n"),
            vec!["vm.linux.share[0].path".into(), "escapes".into()],
        ),
        ("memory", "[vm.linux]\nmemory = \"64T\"\n".into(), vec!["vm.linux.memory".into(), "64".into()]),
        ("cpus", "[vm.linux]\ncpus = 4096\n".into(), vec!["vm.linux.cpus = 4096".into()]),
    ]
}

pub fn run(args: &HostApiArgs) -> Outcome {
    match run_inner(args) {
        Ok(figures) => Outcome::Pass { scenario: SCENARIO, figures },
        Err(reason) => Outcome::Fail { scenario: SCENARIO, reason: reason.to_string() },
    }
}

fn run_inner(args: &HostApiArgs) -> Result<String, ScenarioError> {
    let rayos = args.rayos_bin.clone().unwrap_or_else(|| rundir::release_binary("rayos"));
    if !rayos.is_file() {
        return Err(format!("{} not found (cargo build --release -p rayos)", rayos.display()).into());
    }
    let run_dir = rundir::create(&rundir::target_dir().join("smoke"), SCENARIO, args.run_dir.as_deref())
        .map_err(|e| e.to_string())?;
    println!("{SCENARIO}: run directory {}", run_dir.display());
    let shares = run_dir.join("shares");
    std::fs::create_dir_all(&shares).map_err(|e| e.to_string())?;

    // 1. Bad policies.
    let cases = bad_policies(&shares);
    let mut refused = 0;
    for (name, text, words) in &cases {
        let file = run_dir.join(format!("{name}.toml"));
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        let out = Command::new(&rayos)
            .args(["host", "--check", "--policy"])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", rayos.display()))?;
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let named = lines.len() == 1
            && lines[0].contains(&file.display().to_string())
            && words.iter().all(|w| lines[0].contains(w.as_str()));
        println!("{SCENARIO}: bad policy {name}: exit {:?}: {}", out.status.code(), lines.join(" | "));
        if out.status.code() == Some(2) && named {
            refused += 1;
        } else {
            return Err(format!(
                "bad policy {name}: expected exit 2 and one line naming {} and {words:?}, got {:?}: {err}",
                file.display(),
                out.status.code()
            )
            .into());
        }
    }

    // 2. The service.
    let rt = run_dir.join("run");
    let policy = run_dir.join("policy.toml");
    let image = rundir::target_dir().join("guest-image");
    std::fs::write(
        &policy,
        format!(
            "[host]\nruntime_dir = \"{}\"\nlog_dir = \"{}\"\nshares_root = \"{}\"\n[vm.linux]\nimage = \"{}\"\nmemory = \"1G\"\ncpus = 1\nautostart = false\n",
            rt.display(),
            run_dir.join("log").display(),
            shares.display(),
            image.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(run_dir.join("rayos-host.log")).map_err(|e| e.to_string())?;
    let mut procs = Procs::default();
    let child = Command::new(&rayos)
        .args(["host", "--policy"])
        .arg(&policy)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start rayos host: {e}"))?;
    let pid = child.id();
    procs.0.push(("rayos-host".into(), child));
    let socket = rt.join("rayos.sock");
    let t0 = Instant::now();
    while !socket.exists() {
        if let Some((n, s)) = procs.first_exited() {
            return Err(
                format!("{n} exited ({s}) before listening; see {}", run_dir.join("rayos-host.log").display()).into()
            );
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("rayos host did not listen on {} within 10 s", socket.display()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let listen_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mode = std::fs::metadata(&socket).map_err(|e| e.to_string())?.permissions().mode() & 0o777;
    let dir_mode = std::fs::metadata(&rt).map_err(|e| e.to_string())?.permissions().mode() & 0o777;
    if mode != 0o600 || dir_mode != 0o700 {
        return Err(
            format!("control socket mode {mode:o} in a folder of mode {dir_mode:o}; expected 600 in 700").into()
        );
    }
    let client = |a: &[&str]| -> Result<String, ScenarioError> {
        let out = Command::new(&rayos)
            .args(a)
            .env("RAYOS_SOCKET", &socket)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "rayos {}: {:?}: {}",
                a.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let list: serde_json::Value =
        serde_json::from_str(&client(&["vm", "list", "--json"])?).map_err(|e| format!("rayos vm list --json: {e}"))?;
    if list[0]["name"] != "linux" || list[0]["state"] != "stopped" {
        return Err(format!("rayos vm list --json: expected linux stopped, got {list}").into());
    }

    // 3. Latency and memory.
    let bench = client(&["api-bench", "--requests", &args.requests.to_string()])?;
    let figure = |k: &str| -> Result<f64, ScenarioError> {
        bench
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("rayos api-bench printed no {k}: {bench}").into())
    };
    let (p50, p99) = (figure("api_p50_ms")?, figure("api_p99_ms")?);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or("no VmRSS in the service's /proc status")?;
    println!("{SCENARIO}: listening after {listen_ms:.0} ms; GET /v1/vms p50 {p50:.3} ms p99 {p99:.3} ms over {} requests; RSS {rss_kib} KiB", args.requests);

    // 4. SIGTERM.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    if !procs.exited_within("rayos-host", Duration::from_secs(10)) {
        return Err("rayos host did not exit within 10 s of SIGTERM".into());
    }
    let code = procs.get("rayos-host").and_then(|c| c.try_wait().ok().flatten()).and_then(|s| s.code());
    if code != Some(0) {
        return Err(format!("rayos host exited {code:?} after SIGTERM").into());
    }
    if socket.exists() {
        return Err(format!("{} is left after the service stopped", socket.display()).into());
    }

    let mut missed = vec![];
    if p50 > MAX_API_P50_MS {
        missed.push(format!("api_p50_ms {p50:.3} > {MAX_API_P50_MS}"));
    }
    if rss_kib > MAX_RSS_KIB {
        missed.push(format!("rss_kib {rss_kib} > {MAX_RSS_KIB}"));
    }
    if !missed.is_empty() {
        return Err(format!("targets missed: {}", missed.join(", ")).into());
    }
    Ok(format!("api_p50_ms={p50:.3} api_p99_ms={p99:.3} rss_kib={rss_kib} bad_policies={refused}/{}", cases.len()))
}
