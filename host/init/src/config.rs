//! `/etc/rayos/init.toml`: what the host image tells its init (written by
//! `rayos image host`). Strict: an unknown key or a bad value stops the boot
//! with an error naming the file and the key, and the emergency shell.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const CONFIG: &str = "/etc/rayos/init.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: {key}: {why}")]
    Value { file: PathBuf, key: &'static str, why: String },
}

fn d_volume_device() -> PathBuf {
    "/dev/vda".into()
}
fn d_rayos() -> PathBuf {
    "/usr/bin/rayos".into()
}
fn d_compositor() -> PathBuf {
    "/usr/bin/rayos-compositor".into()
}
fn d_udevd() -> PathBuf {
    "/lib/systemd/systemd-udevd".into()
}
fn d_udevadm() -> PathBuf {
    "/usr/bin/udevadm".into()
}
fn d_shell() -> PathBuf {
    "/bin/sh".into()
}
fn d_hostname() -> String {
    "rayos".into()
}
fn d_vm() -> String {
    "linux".into()
}
fn d_heartbeat() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// The host volume's block device (ext4).
    #[serde(default = "d_volume_device")]
    pub volume_device: PathBuf,
    #[serde(default = "d_rayos")]
    pub rayos: PathBuf,
    #[serde(default = "d_compositor")]
    pub compositor: PathBuf,
    #[serde(default = "d_udevd")]
    pub udevd: PathBuf,
    #[serde(default = "d_udevadm")]
    pub udevadm: PathBuf,
    /// The emergency shell.
    #[serde(default = "d_shell")]
    pub shell: PathBuf,
    /// The intent model shipped in the image (a model folder), installed on first boot.
    #[serde(default)]
    pub model_source: Option<PathBuf>,
    #[serde(default = "d_hostname")]
    pub hostname: String,
    /// The VM the prompt talks to (the default policy's).
    #[serde(default = "d_vm")]
    pub vm: String,
    #[serde(default = "d_heartbeat")]
    pub heartbeat_s: u64,
}

impl InitConfig {
    pub fn parse(text: &str, file: &Path) -> Result<InitConfig, ConfigError> {
        let c: InitConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { file: file.into(), message: e.to_string() })?;
        let bad = |key, why: &str| ConfigError::Value { file: file.into(), key, why: why.into() };
        if !crate::volume::valid_hostname(&c.hostname) {
            return Err(bad("hostname", "1 to 63 of a-z, 0-9 and -, not starting or ending with -"));
        }
        if !(5..=3600).contains(&c.heartbeat_s) {
            return Err(bad("heartbeat_s", "5 to 3600 seconds"));
        }
        if c.vm.is_empty() || !c.vm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad("vm", "a VM name: letters, digits, - and _"));
        }
        for (key, p) in [
            ("volume_device", &c.volume_device),
            ("rayos", &c.rayos),
            ("compositor", &c.compositor),
            ("udevd", &c.udevd),
            ("udevadm", &c.udevadm),
            ("shell", &c.shell),
        ] {
            if !p.is_absolute() {
                return Err(bad(key, "an absolute path"));
            }
        }
        Ok(c)
    }

    /// The file, or the defaults when the image has none.
    pub fn load(file: &Path) -> Result<InitConfig, ConfigError> {
        match std::fs::read_to_string(file) {
            Ok(t) => InitConfig::parse(&t, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => InitConfig::parse("", file),
            Err(source) => Err(ConfigError::Read { file: file.into(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_strictness() {
        let f = Path::new("/etc/rayos/init.toml");
        let c = InitConfig::parse("", f).unwrap();
        assert_eq!(c.volume_device, Path::new("/dev/vda"));
        assert_eq!(c.heartbeat_s, 30);
        let e = InitConfig::parse("volume = \"/dev/vdb\"\n", f).unwrap_err().to_string();
        assert!(e.contains("init.toml") && e.contains("volume"), "{e}");
        let e = InitConfig::parse("hostname = \"Bad Name\"\n", f).unwrap_err().to_string();
        assert!(e.contains("hostname"), "{e}");
        let e = InitConfig::parse("shell = \"sh\"\n", f).unwrap_err().to_string();
        assert!(e.contains("shell: an absolute path"), "{e}");
        let c = InitConfig::parse("model_source = \"/usr/share/rayos/models/m\"\nheartbeat_s = 10\n", f).unwrap();
        assert_eq!(c.heartbeat_s, 10);
    }
}
