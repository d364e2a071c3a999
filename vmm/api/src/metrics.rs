//! The figures rayos-vmm writes on exit with `--metrics PATH`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// rayos-vmm's metrics file. Unknown fields are ignored (newer VMMs may add some).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// CLOCK_MONOTONIC time of the first KVM_RUN, in ns.
    pub first_run_monotonic_ns: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    /// Guest RAM is a shared memfd mapping and shows here.
    pub rss_shmem_kib: u64,
    #[serde(default)]
    pub vm_hwm_kib: u64,
    #[serde(default)]
    pub guest_ram_kib: u64,
    /// The outcome's short name: poweroff, reboot, panic, triple-fault, stopped.
    pub exit: String,
    /// The virtio-gpu device's figures, with `--gpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuMetrics>,
}

/// What the guest did with its virtio-gpu device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuMetrics {
    /// The size of the image the guest last scanned out (`None`: none).
    pub scanout: Option<(u32, u32)>,
    pub requests: u64,
    /// Requests answered with an error.
    pub refused: u64,
    pub transfers: u64,
    pub transfer_bytes: u64,
    pub flushes: u64,
    /// The embedded desktop's window (`--gpu wayland=…`), if shown there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presenter: Option<PresenterMetrics>,
}

/// What the embedded desktop's presenter showed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenterMetrics {
    pub connected: bool,
    pub reconnects: u64,
    pub flushes: u64,
    /// Frames committed to the compositor, and those it reported shown.
    pub frames: u64,
    pub presented: u64,
    pub bytes_copied: u64,
    pub last_frame_bytes: u64,
    /// The window's size as the compositor last configured it.
    pub window: Option<(u32, u32)>,
    /// From the guest's RESOURCE_FLUSH to the compositor's frame callback.
    pub flush_to_present_ms_p50: Option<f64>,
    pub flush_to_present_ms_p95: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot read the metrics file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("metrics file {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write the metrics file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Metrics {
    /// The VMM's own memory: anonymous plus file-backed resident memory (guest RAM excluded).
    pub fn overhead_kib(&self) -> u64 {
        self.rss_anon_kib + self.rss_file_kib
    }

    pub fn read(path: &Path) -> Result<Metrics, MetricsError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetricsError::Read { path: path.into(), source })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Metrics, MetricsError> {
        serde_json::from_str(text).map_err(|source| MetricsError::Parse { path: path.into(), source })
    }

    pub fn write(&self, path: &Path) -> Result<(), MetricsError> {
        let mut json = serde_json::to_string(self).expect("metrics serialize");
        json.push('\n');
        std::fs::write(path, json).map_err(|source| MetricsError::Write { path: path.into(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_rayos_vmm_writes_and_ignores_new_fields() {
        let m = Metrics::parse(
            Path::new("m.json"),
            r#"{"first_run_monotonic_ns":1003500000,"rss_anon_kib":1200,"rss_file_kib":2300,"rss_shmem_kib":128,"exit":"poweroff","extra":1}"#,
        )
        .unwrap();
        assert_eq!(m.overhead_kib(), 3500);
        assert_eq!(m.exit, "poweroff");
        let e = Metrics::parse(Path::new("/x/m.json"), "{").unwrap_err();
        assert!(e.to_string().contains("/x/m.json"));
    }
}
