//! Run figures the VMM can write on exit (`--metrics PATH`), as JSON.

use std::path::Path;

/// Memory use of this process from /proc/self/status, in KiB.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    pub vm_hwm_kib: u64,
}

/// Parses the Rss*/VmHWM lines of a /proc/PID/status text.
pub fn parse_status(status: &str) -> MemoryUse {
    let mut m = MemoryUse::default();
    for line in status.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else { continue };
        let Ok(v) = val.parse::<u64>() else { continue };
        match key {
            "RssAnon:" => m.rss_anon_kib = v,
            "RssFile:" => m.rss_file_kib = v,
            "RssShmem:" => m.rss_shmem_kib = v,
            "VmHWM:" => m.vm_hwm_kib = v,
            _ => {}
        }
    }
    m
}

/// This process's memory use now.
pub fn memory_use() -> MemoryUse {
    std::fs::read_to_string("/proc/self/status").map(|s| parse_status(&s)).unwrap_or_default()
}

/// Writes the metrics file (the format is `rayos_vmm_api::Metrics`, which
/// the host service and the tests read).
pub fn write(
    path: &Path,
    first_run_ns: u64,
    mem: MemoryUse,
    exit: &str,
    guest_ram: u64,
    gpu: Option<rayos_vmm_api::GpuMetrics>,
) -> Result<(), rayos_vmm_api::MetricsError> {
    // Guest RAM is a shared memfd mapping: it shows as RssShmem, so the VMM's
    // own overhead is the anonymous plus file-backed resident memory.
    rayos_vmm_api::Metrics {
        first_run_monotonic_ns: first_run_ns,
        rss_anon_kib: mem.rss_anon_kib,
        rss_file_kib: mem.rss_file_kib,
        rss_shmem_kib: mem.rss_shmem_kib,
        vm_hwm_kib: mem.vm_hwm_kib,
        guest_ram_kib: guest_ram >> 10,
        exit: exit.to_string(),
        gpu,
    }
    .write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let s = "Name:\trayos-vmm\nVmHWM:\t  9000 kB\nRssAnon:\t  1234 kB\nRssFile:\t  2345 kB\nRssShmem:\t  128 kB\n";
        assert_eq!(
            parse_status(s),
            MemoryUse { rss_anon_kib: 1234, rss_file_kib: 2345, rss_shmem_kib: 128, vm_hwm_kib: 9000 }
        );
    }

    #[test]
    fn own_status_is_readable() {
        assert!(memory_use().rss_anon_kib > 0);
    }

    #[test]
    fn writes_json() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let gpu = rayos_vmm_api::GpuMetrics { scanout: Some((1280, 800)), flushes: 3, ..Default::default() };
        write(
            f.path(),
            42,
            MemoryUse { rss_anon_kib: 1, ..Default::default() },
            "poweroff",
            128 << 20,
            Some(gpu.clone()),
        )
        .unwrap();
        let m = rayos_vmm_api::Metrics::read(f.path()).unwrap();
        assert_eq!((m.first_run_monotonic_ns, m.rss_anon_kib, m.guest_ram_kib), (42, 1, 131072));
        assert_eq!(m.exit, "poweroff");
        assert_eq!(m.gpu, Some(gpu));
    }
}
