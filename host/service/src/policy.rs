//! The host's policy file (`/etc/rayos/policy.toml`): which VMs exist, what
//! they may launch and which host folders they see.
//!
//! The policy is the host's alone: the guest never sees the file and cannot
//! change it. Parsing is strict: an unknown key, a bad value, a shared folder
//! outside `shares_root`, or memory or CPUs the machine cannot give stop the
//! service with one [`PolicyError`] that names the file, the key and the value.
//! The format is documented in `host/service/README.md`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// Where the policy is read from when `--policy` is not given.
pub const DEFAULT_POLICY_PATH: &str = "/etc/rayos/policy.toml";
/// The one VM of the default policy.
pub const DEFAULT_VM: &str = "linux";
/// The guest image of the default policy.
pub const DEFAULT_IMAGE: &str = "/var/lib/rayos/guest-image";
/// Least guest RAM the service accepts (the guest image's userland needs it).
pub const MIN_MEMORY_MIB: u64 = 128;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("policy {file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("policy {file}: {key} = {value}: {why}")]
    Value { file: PathBuf, key: String, value: String, why: String },
}

/// What the guest may do if a backend it depends on dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBackendDeath {
    /// Stop the VM and start it again (rayos-vmm cannot reconnect a vhost-user backend).
    RestartVm,
    /// Stop the VM.
    Stop,
}

/// How the VM's display reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmDisplay {
    /// No virtual display: each app is a native window (through the bridge).
    #[default]
    Apps,
    /// A virtio-gpu with keyboard and tablet: the guest's whole desktop in
    /// one embedded-desktop window (`rayos-vmm --gpu wayland=`), beside its
    /// apps' native windows.
    Desktop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    vm: BTreeMap<String, RawVm>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    runtime_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    group: Option<String>,
    log_dir: Option<PathBuf>,
    compositor: Option<PathBuf>,
    compositor_socket_dir: Option<PathBuf>,
    shares_root: Option<PathBuf>,
    stop_timeout_s: Option<u64>,
    agent_timeout_s: Option<u64>,
    rayos_vmm: Option<PathBuf>,
    rayos_vsock: Option<PathBuf>,
    virtiofsd: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    image: Option<PathBuf>,
    memory: Option<toml::Value>,
    cpus: Option<i64>,
    colour: Option<String>,
    autostart: Option<bool>,
    apps: Option<Vec<String>>,
    allow_command: Option<bool>,
    clipboard: Option<String>,
    on_backend_death: Option<OnBackendDeath>,
    display: Option<VmDisplay>,
    #[serde(default)]
    share: Vec<RawShare>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    tag: String,
    path: PathBuf,
    guest_path: String,
    #[serde(default)]
    readonly: bool,
}

/// The service's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    pub runtime_dir: PathBuf,
    pub socket: PathBuf,
    pub group: Option<String>,
    pub log_dir: PathBuf,
    pub compositor: Option<PathBuf>,
    pub compositor_socket_dir: Option<PathBuf>,
    pub shares_root: Option<PathBuf>,
    pub stop_timeout_s: u64,
    pub agent_timeout_s: u64,
    pub rayos_vmm: Option<PathBuf>,
    pub rayos_vsock: Option<PathBuf>,
    pub virtiofsd: Option<PathBuf>,
}

/// A host folder shown to the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
    pub guest_path: String,
    pub readonly: bool,
}

/// Which catalog apps the host lets a VM launch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppRule {
    All,
    Only(Vec<String>),
}

impl AppRule {
    /// Whether the desktop id `id` may be launched (`foot` matches `foot.desktop`).
    pub fn allows(&self, id: &str) -> bool {
        match self {
            AppRule::All => true,
            AppRule::Only(ids) => {
                let bare = id.strip_suffix(".desktop").unwrap_or(id);
                ids.iter().any(|a| a == id || a.strip_suffix(".desktop").unwrap_or(a) == bare)
            }
        }
    }
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmPolicy {
    pub name: String,
    pub image: PathBuf,
    pub memory_mib: u64,
    pub cpus: u8,
    pub colour: String,
    pub autostart: bool,
    pub apps: AppRule,
    pub allow_command: bool,
    pub clipboard: String,
    pub on_backend_death: OnBackendDeath,
    pub display: VmDisplay,
    pub shares: Vec<Share>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file it came from, or None for the default policy.
    pub file: Option<PathBuf>,
    pub host: HostPolicy,
    pub vms: Vec<VmPolicy>,
}

/// Facts about the machine the policy is checked against.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: u32,
    pub memory_mib: u64,
    pub runtime_dir: PathBuf,
}

impl Machine {
    pub fn this() -> Machine {
        // SAFETY: sysconf has no memory-safety preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map(|kib| kib >> 10)
            .unwrap_or(u64::MAX);
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let runtime_dir = match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) if !root => PathBuf::from(d).join("rayos"),
            _ => PathBuf::from("/run/rayos"),
        };
        Machine { cpus, memory_mib, runtime_dir }
    }
}

/// Parses a size: an integer (MiB) or a string with a K, M or G suffix.
fn memory_mib(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(s) => {
            let t = s.trim();
            let (digits, shift_kib) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
                Some('K') => (&t[..t.len() - 1], 0u32),
                Some('M') => (&t[..t.len() - 1], 10),
                Some('G') => (&t[..t.len() - 1], 20),
                Some(c) if c.is_ascii_digit() => (t, 10),
                _ => return Err("expected a size such as 1G, 512M or 1536".into()),
            };
            let n: u64 = digits.parse().map_err(|_| "expected a size such as 1G, 512M or 1536".to_string())?;
            let kib = n.checked_shl(shift_kib).filter(|k| k >> shift_kib == n).ok_or("size overflows")?;
            Ok(kib >> 10)
        }
        _ => Err("expected a size such as 1G, 512M or 1536".into()),
    }
}

/// A VM name: also a compositor socket name (`rayos-vm-<name>`) and a folder name.
pub fn valid_vm_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name != "host"
        && !name.starts_with("rayos")
}

/// `p` without `.` and `..` (lexically; `..` above the root stays at the root).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether `path` lies inside `root`, after resolving symbolic links where the path exists.
fn inside(path: &Path, root: &Path) -> bool {
    let root = root.canonicalize().unwrap_or_else(|_| normalize(root));
    let path = path.canonicalize().unwrap_or_else(|_| normalize(path));
    path.starts_with(&root)
}

impl Policy {
    /// The documented default policy: one VM `linux` from [`DEFAULT_IMAGE`].
    pub fn default_for(machine: &Machine) -> Policy {
        Self::parse_str(None, "", machine).expect("the default policy is valid")
    }

    /// Reads the policy: `path` if given, else [`DEFAULT_POLICY_PATH`] if it
    /// exists, else the default.
    pub fn load(path: Option<&Path>, machine: &Machine) -> Result<Policy, PolicyError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_POLICY_PATH).exists() => PathBuf::from(DEFAULT_POLICY_PATH),
            None => return Ok(Self::default_for(machine)),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read { file: path.clone(), source })?;
        Self::parse_str(Some(&path), &text, machine)
    }

    /// Parses and checks a policy text.
    pub fn parse_str(file: Option<&Path>, text: &str, machine: &Machine) -> Result<Policy, PolicyError> {
        let fname = file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("<default policy>"));
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            file: fname.clone(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let bad = |key: String, value: String, why: &str| PolicyError::Value {
            file: fname.clone(),
            key,
            value,
            why: why.to_string(),
        };

        let h = raw.host;
        let runtime_dir = h.runtime_dir.unwrap_or_else(|| machine.runtime_dir.clone());
        let abs = |key: &str, p: &Path| -> Result<(), PolicyError> {
            if p.is_absolute() {
                Ok(())
            } else {
                Err(bad(format!("host.{key}"), format!("{:?}", p.display().to_string()), "must be an absolute path"))
            }
        };
        abs("runtime_dir", &runtime_dir)?;
        let socket = h.socket.unwrap_or_else(|| runtime_dir.join("rayos.sock"));
        abs("socket", &socket)?;
        let log_dir = h.log_dir.unwrap_or_else(|| runtime_dir.join("log"));
        abs("log_dir", &log_dir)?;
        for (key, p) in [
            ("compositor", &h.compositor),
            ("compositor_socket_dir", &h.compositor_socket_dir),
            ("shares_root", &h.shares_root),
            ("rayos_vmm", &h.rayos_vmm),
            ("rayos_vsock", &h.rayos_vsock),
            ("virtiofsd", &h.virtiofsd),
        ] {
            if let Some(p) = p {
                abs(key, p)?;
            }
        }
        if let Some(g) = &h.group {
            if g.is_empty() || g.contains(['\0', ':', '\n']) {
                return Err(bad("host.group".into(), format!("{g:?}"), "not a group name"));
            }
        }
        let stop_timeout_s = h.stop_timeout_s.unwrap_or(30);
        if !(1..=3600).contains(&stop_timeout_s) {
            return Err(bad("host.stop_timeout_s".into(), stop_timeout_s.to_string(), "expected 1 to 3600 seconds"));
        }
        let agent_timeout_s = h.agent_timeout_s.unwrap_or(180);
        if !(1..=3600).contains(&agent_timeout_s) {
            return Err(bad("host.agent_timeout_s".into(), agent_timeout_s.to_string(), "expected 1 to 3600 seconds"));
        }
        let host = HostPolicy {
            runtime_dir,
            socket,
            group: h.group,
            log_dir,
            compositor_socket_dir: h
                .compositor_socket_dir
                .or_else(|| h.compositor.as_ref().and_then(|c| c.parent().map(Path::to_path_buf))),
            compositor: h.compositor,
            shares_root: h.shares_root,
            stop_timeout_s,
            agent_timeout_s,
            rayos_vmm: h.rayos_vmm,
            rayos_vsock: h.rayos_vsock,
            virtiofsd: h.virtiofsd,
        };

        let mut raw_vms = raw.vm;
        if raw_vms.is_empty() {
            raw_vms.insert(
                DEFAULT_VM.to_string(),
                RawVm {
                    image: None,
                    memory: None,
                    cpus: None,
                    colour: None,
                    autostart: None,
                    apps: None,
                    allow_command: None,
                    clipboard: None,
                    on_backend_death: None,
                    display: None,
                    share: vec![],
                },
            );
        }
        let mut vms = Vec::new();
        let mut colours = Vec::new();
        for (name, v) in raw_vms {
            if !valid_vm_name(&name) {
                return Err(bad(
                    format!("vm.{name}"),
                    format!("{name:?}"),
                    "a VM name is 1-32 characters of a-z, 0-9 and -, not starting with - or rayos, and not host",
                ));
            }
            let key = |k: &str| format!("vm.{name}.{k}");
            let image = v.image.unwrap_or_else(|| PathBuf::from(DEFAULT_IMAGE));
            if !image.is_absolute() {
                return Err(bad(
                    key("image"),
                    format!("{:?}", image.display().to_string()),
                    "must be an absolute path",
                ));
            }
            let memory_mib = match &v.memory {
                None => 1024,
                Some(m) => memory_mib(m).map_err(|why| bad(key("memory"), m.to_string(), &why))?,
            };
            if memory_mib < MIN_MEMORY_MIB {
                return Err(bad(key("memory"), format!("{memory_mib} MiB"), &format!("at least {MIN_MEMORY_MIB} MiB")));
            }
            if memory_mib > machine.memory_mib {
                return Err(bad(
                    key("memory"),
                    format!("{memory_mib} MiB"),
                    &format!("more than this machine's {} MiB", machine.memory_mib),
                ));
            }
            let cpus = v.cpus.unwrap_or(machine.cpus.min(2) as i64);
            if cpus < 1 || cpus > machine.cpus as i64 || cpus > 254 {
                return Err(bad(
                    key("cpus"),
                    cpus.to_string(),
                    &format!("expected 1 to {} (this machine's CPUs)", machine.cpus.min(254)),
                ));
            }
            let colour = v.colour.unwrap_or_else(|| "#d03030".into());
            let hex = colour.strip_prefix('#').filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if hex.is_none() {
                return Err(bad(key("colour"), format!("{colour:?}"), "expected \"#rrggbb\""));
            }
            if colours.contains(&colour.to_ascii_lowercase()) {
                return Err(bad(
                    key("colour"),
                    format!("{colour:?}"),
                    "another VM has this colour; each VM's windows must be told apart",
                ));
            }
            colours.push(colour.to_ascii_lowercase());
            let apps = match v.apps {
                None => AppRule::All,
                Some(list) if list.iter().any(|a| a == "*") => {
                    if list.len() > 1 {
                        return Err(bad(
                            key("apps"),
                            format!("{list:?}"),
                            "\"*\" allows every app; list nothing beside it",
                        ));
                    }
                    AppRule::All
                }
                Some(list) => {
                    if let Some(a) = list.iter().find(|a| a.is_empty() || a.contains(['/', '\0'])) {
                        return Err(bad(key("apps"), format!("{a:?}"), "not a desktop file id"));
                    }
                    AppRule::Only(list)
                }
            };
            let clipboard = v.clipboard.unwrap_or_else(|| "on-paste".into());
            if !["allow", "on-paste", "deny"].contains(&clipboard.as_str()) {
                return Err(bad(key("clipboard"), format!("{clipboard:?}"), "expected allow, on-paste or deny"));
            }
            let mut shares = Vec::new();
            for (i, s) in v.share.into_iter().enumerate() {
                let skey = |k: &str| format!("vm.{name}.share[{i}].{k}");
                let tag_ok = (1..=36).contains(&s.tag.len())
                    && s.tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && s.tag != "rootfs";
                if !tag_ok {
                    return Err(bad(
                        skey("tag"),
                        format!("{:?}", s.tag),
                        "1-36 characters of A-Z a-z 0-9 - _, and not rootfs",
                    ));
                }
                if shares.iter().any(|o: &Share| o.tag == s.tag) {
                    return Err(bad(skey("tag"), format!("{:?}", s.tag), "two shares have this tag"));
                }
                let shown = format!("{:?}", s.path.display().to_string());
                if !s.path.is_absolute() {
                    return Err(bad(skey("path"), shown, "must be an absolute path"));
                }
                let Some(root) = &host.shares_root else {
                    return Err(bad(skey("path"), shown, "host.shares_root is not set: no host folder may be shared"));
                };
                if !inside(&s.path, root) {
                    return Err(bad(skey("path"), shown, &format!("escapes host.shares_root {}", root.display())));
                }
                let gp_ok = s.guest_path.starts_with('/')
                    && s.guest_path.len() > 1
                    && !s.guest_path.split('/').any(|c| c == ".." || c == ".")
                    && !s.guest_path.contains([':', ' ', '\0', '\n']);
                if !gp_ok {
                    return Err(bad(
                        skey("guest_path"),
                        format!("{:?}", s.guest_path),
                        "an absolute guest path without .., spaces or ':'",
                    ));
                }
                shares.push(Share { tag: s.tag, path: s.path, guest_path: s.guest_path, readonly: s.readonly });
            }
            let display = v.display.unwrap_or_default();
            if display == VmDisplay::Desktop && host.compositor_socket_dir.is_none() {
                return Err(bad(
                    key("display"),
                    "\"desktop\"".into(),
                    "needs host.compositor_socket_dir (the compositor whose window shows the desktop)",
                ));
            }
            vms.push(VmPolicy {
                display,
                image,
                memory_mib,
                cpus: cpus as u8,
                colour,
                autostart: v.autostart.unwrap_or(true),
                apps,
                allow_command: v.allow_command.unwrap_or(false),
                clipboard,
                on_backend_death: v.on_backend_death.unwrap_or(OnBackendDeath::RestartVm),
                shares,
                name,
            });
        }
        Ok(Policy { file: file.map(Path::to_path_buf), host, vms })
    }

    pub fn vm(&self, name: &str) -> Option<&VmPolicy> {
        self.vms.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine { cpus: 4, memory_mib: 8192, runtime_dir: PathBuf::from("/run/user/1000/rayos") }
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse_str(Some(Path::new("/etc/rayos/policy.toml")), text, &machine())
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn no_file_is_one_linux_vm() {
        let p = Policy::default_for(&machine());
        assert_eq!(p.vms.len(), 1);
        let vm = &p.vms[0];
        assert_eq!(vm.name, "linux");
        assert_eq!(vm.image, Path::new(DEFAULT_IMAGE));
        assert_eq!((vm.memory_mib, vm.cpus), (1024, 2));
        assert!(vm.autostart && !vm.allow_command && vm.shares.is_empty());
        assert_eq!(vm.apps, AppRule::All);
        assert_eq!(p.host.socket, Path::new("/run/user/1000/rayos/rayos.sock"));
        assert_eq!(p.host.stop_timeout_s, 30);
    }

    #[test]
    fn a_full_policy_parses() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("work")).unwrap();
        let text = format!(
            r##"
[host]
runtime_dir = "/run/rayos"
group = "rayos"
shares_root = "{root}"
compositor = "/run/rayos/rayos-compositor.sock"

[vm.linux]
image = "/var/lib/rayos/guest-image"
memory = "1536M"
cpus = 2
colour = "#2ea043"
apps = ["foot.desktop", "org.gnome.TextEditor"]
allow_command = true
on_backend_death = "stop"
display = "desktop"

[[vm.linux.share]]
tag = "work"
path = "{root}/work"
guest_path = "/mnt/work"
readonly = true

[vm.work]
memory = 512
colour = "#8250df"
"##,
            root = root.path().display()
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.host.compositor_socket_dir.as_deref(), Some(Path::new("/run/rayos")));
        let l = p.vm("linux").unwrap();
        assert_eq!(l.memory_mib, 1536);
        assert!(
            l.apps.allows("foot") && l.apps.allows("org.gnome.TextEditor.desktop") && !l.apps.allows("xterm.desktop")
        );
        assert_eq!(l.shares[0].tag, "work");
        assert!(l.shares[0].readonly);
        assert_eq!(l.on_backend_death, OnBackendDeath::Stop);
        assert_eq!(l.display, VmDisplay::Desktop);
        assert_eq!(p.vm("work").unwrap().memory_mib, 512);
        assert_eq!(p.vm("work").unwrap().display, VmDisplay::Apps);
    }

    #[test]
    fn every_bad_case_names_file_key_and_value() {
        let e = err("[host]\nsocket = ");
        assert!(e.starts_with("policy /etc/rayos/policy.toml:"), "{e}");
        let e = err("[host]\nsokcet = \"/x\"\n");
        assert!(e.contains("sokcet"), "{e}");
        let e = err("[vm.linux]\nmemory = \"lots\"\n");
        assert!(e.contains("vm.linux.memory = \"lots\""), "{e}");
        let e = err("[vm.linux]\nmemory = \"64M\"\n");
        assert!(e.contains("vm.linux.memory = 64 MiB: at least 128"), "{e}");
        let e = err("[vm.linux]\nmemory = \"16G\"\n");
        assert!(e.contains("more than this machine's 8192 MiB"), "{e}");
        let e = err("[vm.linux]\ncpus = 9\n");
        assert!(e.contains("vm.linux.cpus = 9: expected 1 to 4"), "{e}");
        let e = err("[vm.linux]\ncpus = 0\n");
        assert!(e.contains("vm.linux.cpus = 0"), "{e}");
        let e = err("[vm.Linux]\n");
        assert!(e.contains("vm.Linux"), "{e}");
        let e = err("[vm.linux]\ncolour = \"red\"\n");
        assert!(e.contains("vm.linux.colour = \"red\""), "{e}");
        let e = err("[vm.a]\ncolour = \"#aabbcc\"\n[vm.b]\ncolour = \"#AABBCC\"\n");
        assert!(e.contains("vm.b.colour"), "{e}");
        let e = err("[vm.linux]\nclipboard = \"sometimes\"\n");
        assert!(e.contains("vm.linux.clipboard = \"sometimes\""), "{e}");
        let e = err("[vm.linux]\ndisplay = \"desktop\"\n");
        assert!(e.contains("vm.linux.display") && e.contains("compositor_socket_dir"), "{e}");
        let e = err("[vm.linux]\ndisplay = \"vnc\"\n");
        assert!(e.contains("display"), "{e}");
        let e = err("[vm.linux]\non_backend_death = \"ignore\"\n");
        assert!(e.contains("ignore"), "{e}");
        let e = err("[vm.linux]\nimage = \"relative/dir\"\n");
        assert!(e.contains("vm.linux.image"), "{e}");
        let e = err("[host]\nstop_timeout_s = 0\n");
        assert!(e.contains("host.stop_timeout_s = 0"), "{e}");
        let e = err("[vm.linux]\napps = [\"*\", \"foot\"]\n");
        assert!(e.contains("vm.linux.apps"), "{e}");
    }

    #[test]
    fn a_share_must_stay_inside_shares_root() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::create_dir(allowed.join("ok")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), allowed.join("link")).unwrap();
        let policy = |path: &str| {
            format!(
                "[host]\nshares_root = \"{}\"\n[vm.linux]\n[[vm.linux.share]]\ntag = \"s\"\npath = \"{path}\"\nguest_path = \"/mnt/s\"\n",
                allowed.display()
            )
        };
        assert!(parse(&policy(&format!("{}/ok", allowed.display()))).is_ok());
        let e = err(&policy(&format!("{}/ok/../../", allowed.display())));
        assert!(e.contains("vm.linux.share[0].path") && e.contains("escapes host.shares_root"), "{e}");
        let e = err(&policy(&format!("{}/link", allowed.display())));
        assert!(e.contains("escapes host.shares_root"), "a symlink out of the root is refused: {e}");
        let e = err(&policy("/etc"));
        assert!(e.contains("escapes"), "{e}");
        let no_root = "[vm.linux]\n[[vm.linux.share]]\ntag = \"s\"\npath = \"/srv\"\nguest_path = \"/mnt/s\"\n";
        assert!(err(no_root).contains("shares_root is not set"));
        let e = err(&policy(&format!("{}/ok", allowed.display())).replace("/mnt/s", "/mnt/../etc"));
        assert!(e.contains("guest_path"), "{e}");
        let e = err(&policy(&format!("{}/ok", allowed.display())).replace("tag = \"s\"", "tag = \"rootfs\""));
        assert!(e.contains("share[0].tag"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(memory_mib(&toml::Value::String("1G".into())), Ok(1024));
        assert_eq!(memory_mib(&toml::Value::String("2048K".into())), Ok(2));
        assert_eq!(memory_mib(&toml::Value::Integer(768)), Ok(768));
        assert!(memory_mib(&toml::Value::Integer(-1)).is_err());
        assert!(memory_mib(&toml::Value::String("99999999999999999999G".into())).is_err());
    }
}
