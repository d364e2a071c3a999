//! The host volume (ext4, mounted at `/var/lib/rayos`): its layout, and the
//! first-boot state machine that creates it.
//!
//! Layout:
//! * `state/volume.json`: the volume's own record ([`VolumeState`]): which
//!   first-boot steps are done, and how many times it has booted;
//! * `etc/policy.toml`, `etc/hostname`: the host's policy and name;
//! * `models/`: the intent model store (installed from the image, sha256 checked);
//! * `guests/a`, `guests/b`, `guest-image -> guests/<current>` (see [`crate::guests`]);
//! * `shared/<vm>`: the folders each VM sees as its shared folder;
//! * `log/`: the host's logs, kept across boots.
//!
//! First boot is a list of [`Step`]s, each recorded in `volume.json` as soon
//! as it is done (written to a temporary file, synced, renamed), so a boot
//! cut off half-way redoes only what it had not finished, and a provisioned
//! volume skips first boot entirely.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the host volume is mounted.
pub const VOLUME: &str = "/var/lib/rayos";
/// Version of the layout this init creates.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a RayOS volume record: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: made by a newer RayOS (format {found}, this one knows {FORMAT})")]
    TooNew { path: PathBuf, found: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { path: path.to_path_buf(), source }
}

/// One first-boot step, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The folders of the layout.
    Layout,
    /// The intent model, copied from the image into `models/` and checked.
    Model,
    /// The default policy in `etc/policy.toml`.
    Policy,
    /// `etc/hostname`.
    Hostname,
}

pub const STEPS: [Step; 4] = [Step::Layout, Step::Model, Step::Policy, Step::Hostname];

/// `state/volume.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    pub format: u32,
    /// First-boot steps done, in the order they were done.
    pub done: Vec<Step>,
    /// Boots of this volume, this one included once [`VolumeState::booted`] ran.
    pub boots: u64,
}

impl VolumeState {
    /// The steps still to run.
    pub fn pending(&self) -> Vec<Step> {
        STEPS.iter().copied().filter(|s| !self.done.contains(s)).collect()
    }

    /// Whether first boot is over (every step done).
    pub fn provisioned(&self) -> bool {
        self.pending().is_empty()
    }

    pub fn mark(&mut self, s: Step) {
        if !self.done.contains(&s) {
            self.done.push(s);
        }
    }

    pub fn booted(&mut self) {
        self.format = FORMAT;
        self.boots += 1;
    }
}

/// Paths of a volume mounted at `root`.
#[derive(Debug, Clone)]
pub struct Volume {
    pub root: PathBuf,
}

impl Volume {
    pub fn new(root: impl Into<PathBuf>) -> Volume {
        Volume { root: root.into() }
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state/volume.json")
    }
    pub fn policy(&self) -> PathBuf {
        self.root.join("etc/policy.toml")
    }
    pub fn hostname(&self) -> PathBuf {
        self.root.join("etc/hostname")
    }
    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }
    pub fn shared(&self, vm: &str) -> PathBuf {
        self.root.join("shared").join(vm)
    }
    pub fn folders(&self) -> Vec<PathBuf> {
        ["state", "etc", "models", "guests", "shared", "log"].iter().map(|f| self.root.join(f)).collect()
    }

    /// The record, or a fresh one when the volume has none (an empty volume).
    pub fn read_state(&self) -> Result<VolumeState, VolumeError> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VolumeState::default()),
            Err(e) => return Err(io(&path)(e)),
        };
        let s: VolumeState = serde_json::from_str(&text)
            .map_err(|e| VolumeError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if s.format > FORMAT {
            return Err(VolumeError::TooNew { path, found: s.format });
        }
        Ok(s)
    }

    /// Writes the record durably (temporary file, fsync, rename, fsync of the folder).
    pub fn write_state(&self, s: &VolumeState) -> Result<(), VolumeError> {
        let path = self.state_file();
        let text = serde_json::to_string_pretty(s).expect("the volume record serialises");
        write_durably(&path, text.as_bytes())
    }
}

/// Writes `path` so that a crash leaves the old or the new content, never a mix.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), VolumeError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What the default policy is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInputs {
    pub vm: String,
    pub memory_mib: u64,
    pub cpus: u32,
    pub runtime_dir: String,
    pub compositor_control: String,
    pub compositor_socket_dir: String,
    pub volume: PathBuf,
}

/// Guest memory and CPUs for a host with `host_mib` and `host_cpus`: half the
/// memory, at most 2 GiB and at least 512 MiB; at most 2 CPUs.
pub fn guest_size(host_mib: u64, host_cpus: u32) -> (u64, u32) {
    ((host_mib / 2).clamp(512, 2048), host_cpus.clamp(1, 2))
}

/// The policy written on first boot: one VM, started at boot, every app of
/// its image, its shared folder under the volume.
pub fn default_policy(p: &PolicyInputs) -> String {
    let vol = p.volume.display();
    format!(
        "# The RayOS host's policy, written on first boot by rayos init.\n\
         # Edit it and reboot; the format is in host/service/README.md.\n\
         [host]\n\
         runtime_dir = \"{rt}\"\n\
         log_dir = \"{vol}/log\"\n\
         compositor = \"{ctl}\"\n\
         compositor_socket_dir = \"{csd}\"\n\
         shares_root = \"{vol}/shared\"\n\
         stop_timeout_s = 30\n\
         agent_timeout_s = 300\n\
         \n\
         [vm.{vm}]\n\
         image = \"{vol}/guest-image\"\n\
         memory = \"{mem}M\"\n\
         cpus = {cpus}\n\
         colour = \"#d03030\"\n\
         autostart = true\n\
         apps = [\"*\"]\n\
         allow_command = false\n\
         clipboard = \"on-paste\"\n\
         on_backend_death = \"restart-vm\"\n\
         \n\
         [[vm.{vm}.share]]\n\
         tag = \"shared\"\n\
         path = \"{vol}/shared/{vm}\"\n\
         guest_path = \"/home/rayos/Shared\"\n",
        rt = p.runtime_dir,
        ctl = p.compositor_control,
        csd = p.compositor_socket_dir,
        vm = p.vm,
        mem = p.memory_mib,
        cpus = p.cpus,
    )
}

/// A host name is 1..=63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_volume_runs_every_step_and_a_provisioned_one_none() {
        let mut s = VolumeState::default();
        assert_eq!(s.pending(), STEPS);
        s.mark(Step::Layout);
        s.mark(Step::Model);
        assert_eq!(s.pending(), [Step::Policy, Step::Hostname]);
        assert!(!s.provisioned());
        s.mark(Step::Policy);
        s.mark(Step::Hostname);
        s.mark(Step::Hostname);
        assert!(s.provisioned() && s.done.len() == 4);
    }

    #[test]
    fn the_record_survives_a_round_trip_and_counts_boots() {
        let d = tempfile::tempdir().unwrap();
        let v = Volume::new(d.path());
        let mut s = v.read_state().unwrap();
        assert_eq!(s, VolumeState::default());
        s.booted();
        s.mark(Step::Layout);
        v.write_state(&s).unwrap();
        let mut again = v.read_state().unwrap();
        assert_eq!(again.done, [Step::Layout]);
        again.booted();
        assert_eq!(again.boots, 2);
        assert!(!v.state_file().with_extension("tmp").exists());
    }

    #[test]
    fn a_damaged_or_newer_record_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let v = Volume::new(d.path());
        std::fs::create_dir_all(d.path().join("state")).unwrap();
        std::fs::write(v.state_file(), "{not json").unwrap();
        assert!(v.read_state().unwrap_err().to_string().contains("volume.json"));
        std::fs::write(v.state_file(), r#"{"format":99,"done":[],"boots":1}"#).unwrap();
        assert!(matches!(v.read_state().unwrap_err(), VolumeError::TooNew { found: 99, .. }));
    }

    #[test]
    fn the_default_policy_is_sized_for_the_host() {
        assert_eq!(guest_size(3000, 2), (1500, 2));
        assert_eq!(guest_size(800, 1), (512, 1));
        assert_eq!(guest_size(64000, 16), (2048, 2));
        let p = default_policy(&PolicyInputs {
            vm: "linux".into(),
            memory_mib: 1024,
            cpus: 2,
            runtime_dir: "/run/rayos".into(),
            compositor_control: "/run/rayos-compositor/control.sock".into(),
            compositor_socket_dir: "/run/rayos-compositor".into(),
            volume: VOLUME.into(),
        });
        assert!(p.contains("image = \"/var/lib/rayos/guest-image\""));
        assert!(p.contains("memory = \"1024M\"\ncpus = 2\n"));
        assert!(p.contains("autostart = true"));
        assert!(p.contains("path = \"/var/lib/rayos/shared/linux\""));
        // The host service accepts it as it is written.
        let machine = rayosd::policy::Machine { cpus: 2, memory_mib: 3000, runtime_dir: "/run/rayos".into() };
        let pol = rayosd::policy::Policy::parse_str(Some(Path::new("/v/etc/policy.toml")), &p, &machine).unwrap();
        let vm = pol.vm("linux").unwrap();
        assert!(vm.autostart && vm.memory_mib == 1024 && vm.cpus == 2);
        assert_eq!(vm.shares[0].guest_path, "/home/rayos/Shared");
    }

    #[test]
    fn host_names_are_checked() {
        assert!(valid_hostname("rayos"));
        assert!(valid_hostname("rayos-2"));
        for bad in ["", "-a", "a-", "Ray", "a.b", &"x".repeat(64)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
