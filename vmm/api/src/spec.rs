//! [`VmSpec`]: one VM as rayos-vmm's command line.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// virtio device type of a file system device (virtio 1.2 section 5.11).
pub const VIRTIO_ID_FS: u32 = 26;
/// virtio device type of a vsock device (virtio 1.2 section 5.10).
pub const VIRTIO_ID_VSOCK: u32 = 19;

/// Smallest guest RAM rayos-vmm accepts, in MiB.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Largest vCPU count rayos-vmm accepts.
pub const MAX_CPUS: u8 = 254;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Serial {
    Stdio,
    File(PathBuf),
    None,
}

/// A virtio-fs device served by a vhost-user backend (virtiofsd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsDevice {
    /// The tag the guest mounts (`mount -t virtiofs TAG /mnt`).
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
}

/// Any other vhost-user device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostUserDevice {
    pub virtio_id: u32,
    pub socket: PathBuf,
    /// None: the device type's default (3 for vsock).
    pub queues: Option<u32>,
    /// None: 256.
    pub queue_size: Option<u32>,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub cmdline: String,
    pub memory_mib: u64,
    pub cpus: u8,
    pub serial: Serial,
    pub metrics: Option<PathBuf>,
    pub fs: Vec<FsDevice>,
    pub vhost_user: Vec<VhostUserDevice>,
    /// The compositor's desktop socket for this VM: a virtio-gpu with a
    /// keyboard and tablet, shown there (`--gpu wayland=SOCKET`).
    pub desktop: Option<PathBuf>,
}

/// A spec rayos-vmm would refuse, or one its command line cannot express.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("memory {0} MiB: rayos-vmm needs at least {MIN_MEMORY_MIB} MiB")]
    Memory(u64),
    #[error("cpus {0}: expected 1 to {MAX_CPUS}")]
    Cpus(u8),
    #[error("{what} {value:?}: a device option cannot hold ',' or '=' or be empty")]
    DeviceValue { what: &'static str, value: String },
    #[error("{what} {value:?}: not valid UTF-8")]
    NotUtf8 { what: &'static str, value: PathBuf },
}

fn device_value(what: &'static str, v: &str) -> Result<(), SpecError> {
    if v.is_empty() || v.contains(',') || v.contains('=') {
        return Err(SpecError::DeviceValue { what, value: v.to_string() });
    }
    Ok(())
}

fn device_path<'a>(what: &'static str, p: &'a std::path::Path) -> Result<&'a str, SpecError> {
    let s = p.to_str().ok_or_else(|| SpecError::NotUtf8 { what, value: p.to_path_buf() })?;
    device_value(what, s)?;
    Ok(s)
}

impl VmSpec {
    /// A VM with the kernel, 512 MiB, one vCPU, no console and no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmSpec {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: "console=ttyS0 panic=-1".into(),
            memory_mib: 512,
            cpus: 1,
            serial: Serial::None,
            metrics: None,
            fs: Vec::new(),
            vhost_user: Vec::new(),
            desktop: None,
        }
    }

    /// Checks what rayos-vmm would refuse before any file is opened.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(SpecError::Memory(self.memory_mib));
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(SpecError::Cpus(self.cpus));
        }
        for f in &self.fs {
            device_value("fs tag", &f.tag)?;
            device_path("fs socket", &f.socket)?;
        }
        for v in &self.vhost_user {
            device_path("vhost-user socket", &v.socket)?;
        }
        if let Some(d) = &self.desktop {
            device_path("desktop socket", d)?;
        }
        Ok(())
    }

    /// rayos-vmm's arguments (without the program name) for this VM.
    pub fn to_argv(&self) -> Result<Vec<OsString>, SpecError> {
        self.validate()?;
        let mut a: Vec<OsString> = vec!["--kernel".into(), self.kernel.clone().into()];
        if let Some(i) = &self.initramfs {
            a.push("--initramfs".into());
            a.push(i.clone().into());
        }
        a.push("--cmdline".into());
        a.push(self.cmdline.clone().into());
        a.push("--memory".into());
        a.push(format!("{}M", self.memory_mib).into());
        a.push("--cpus".into());
        a.push(self.cpus.to_string().into());
        a.push("--serial".into());
        a.push(match &self.serial {
            Serial::Stdio => "stdio".into(),
            Serial::None => "none".into(),
            Serial::File(p) => {
                let mut s = OsString::from("file:");
                s.push(p);
                s
            }
        });
        if let Some(m) = &self.metrics {
            a.push("--metrics".into());
            a.push(m.clone().into());
        }
        for f in &self.fs {
            let sock = device_path("fs socket", &f.socket)?;
            a.push("--fs".into());
            a.push(format!("tag={},socket={sock}", f.tag).into());
        }
        for v in &self.vhost_user {
            let sock = device_path("vhost-user socket", &v.socket)?;
            let mut s = format!("virtio-id={},socket={sock}", v.virtio_id);
            if let Some(q) = v.queues {
                s.push_str(&format!(",queues={q}"));
            }
            if let Some(q) = v.queue_size {
                s.push_str(&format!(",queue-size={q}"));
            }
            a.push("--vhost-user".into());
            a.push(s.into());
        }
        if let Some(d) = &self.desktop {
            a.push("--gpu".into());
            a.push(format!("wayland={}", device_path("desktop socket", d)?).into());
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argv_names_every_part() {
        let mut s = VmSpec::new("/img/vmlinuz");
        s.initramfs = Some("/img/initramfs.cpio.gz".into());
        s.fs.push(FsDevice { tag: "rootfs".into(), socket: "/run/rayos/linux/fs.sock".into() });
        s.vhost_user.push(VhostUserDevice {
            virtio_id: VIRTIO_ID_VSOCK,
            socket: "/run/v.sock".into(),
            queues: None,
            queue_size: Some(128),
        });
        let argv: Vec<String> = s.to_argv().unwrap().into_iter().map(|a| a.into_string().unwrap()).collect();
        assert!(argv.windows(2).any(|w| w == ["--fs", "tag=rootfs,socket=/run/rayos/linux/fs.sock"]));
        assert!(argv.windows(2).any(|w| w == ["--vhost-user", "virtio-id=19,socket=/run/v.sock,queue-size=128"]));
        assert!(argv.windows(2).any(|w| w == ["--memory", "512M"]));
        assert!(argv.windows(2).any(|w| w == ["--serial", "none"]));
    }

    #[test]
    fn values_the_command_line_cannot_carry_are_refused() {
        let mut s = VmSpec::new("/k");
        s.fs.push(FsDevice { tag: "a,b".into(), socket: "/s".into() });
        assert!(matches!(s.to_argv(), Err(SpecError::DeviceValue { what: "fs tag", .. })));
        let mut s = VmSpec::new("/k");
        s.vhost_user.push(VhostUserDevice { virtio_id: 19, socket: "/run/x=y".into(), queues: None, queue_size: None });
        assert!(matches!(s.to_argv(), Err(SpecError::DeviceValue { .. })));
        let mut s = VmSpec::new("/k");
        s.memory_mib = 16;
        assert_eq!(s.to_argv(), Err(SpecError::Memory(16)));
        s.memory_mib = 64;
        s.cpus = 0;
        assert_eq!(s.to_argv(), Err(SpecError::Cpus(0)));
    }

    #[test]
    fn a_spec_survives_json() {
        let mut s = VmSpec::new("/k");
        s.serial = Serial::File("/var/log/x".into());
        let back: VmSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
