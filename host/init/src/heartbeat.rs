//! The heartbeat line PID 1 writes to the log every 30 s: a console that goes
//! quiet then tells a wedged service (beats go on) from a stopped kernel.

/// What one beat reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub uptime_s: f64,
    /// VMs running, and all the policy's VMs (None: the service did not answer).
    pub vms: Option<(usize, usize)>,
    pub load: [f64; 3],
    pub mem_available_mib: Option<u64>,
}

impl Beat {
    pub fn line(&self) -> String {
        let vms = match self.vms {
            Some((r, t)) => format!("{r}/{t}"),
            None => "unknown".into(),
        };
        let mem = self.mem_available_mib.map_or("unknown".into(), |m| format!("{m}MiB"));
        format!(
            "rayos-init: heartbeat uptime={:.0}s vms_running={vms} load={:.2},{:.2},{:.2} mem_available={mem}",
            self.uptime_s, self.load[0], self.load[1], self.load[2]
        )
    }
}

/// Seconds since boot, from `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut w = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([w.next()??, w.next()??, w.next()??])
}

/// The `key:` line of `/proc/meminfo` (in kB), in MiB.
pub fn parse_meminfo_mib(text: &str, key: &str) -> Option<u64> {
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024)
}

/// MemAvailable in MiB, from `/proc/meminfo`.
pub fn parse_mem_available(text: &str) -> Option<u64> {
    parse_meminfo_mib(text, "MemAvailable")
}

/// Running and total VMs from the service's `GET /v1/vms` answer.
pub fn count_vms(vms: &serde_json::Value) -> Option<(usize, usize)> {
    let list = vms.as_array().or_else(|| vms["vms"].as_array())?;
    Some((list.iter().filter(|v| v["state"] == "running").count(), list.len()))
}

/// A beat from this machine's /proc and the service's answer.
pub fn now(vms: Option<&serde_json::Value>) -> Beat {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    Beat {
        uptime_s: parse_uptime(&read("/proc/uptime")).unwrap_or(f64::NAN),
        vms: vms.and_then(count_vms),
        load: parse_loadavg(&read("/proc/loadavg")).unwrap_or([f64::NAN; 3]),
        mem_available_mib: parse_mem_available(&read("/proc/meminfo")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_has_every_figure() {
        let b = Beat {
            uptime_s: parse_uptime("123.45 200.1\n").unwrap(),
            vms: count_vms(&serde_json::json!([{"state":"running"},{"state":"stopped"}])),
            load: parse_loadavg("0.52 0.40 0.30 2/100 999\n").unwrap(),
            mem_available_mib: parse_mem_available("MemTotal: 4000000 kB\nMemAvailable:    2097152 kB\n"),
        };
        assert_eq!(
            b.line(),
            "rayos-init: heartbeat uptime=123s vms_running=1/2 load=0.52,0.40,0.30 mem_available=2048MiB"
        );
    }

    #[test]
    fn unknowns_are_said_not_invented() {
        let b = Beat { uptime_s: 5.0, vms: None, load: [0.0; 3], mem_available_mib: None };
        assert!(b.line().contains("vms_running=unknown") && b.line().contains("mem_available=unknown"));
        assert_eq!(parse_loadavg("0.1 x"), None);
        assert_eq!(count_vms(&serde_json::json!({"vms": []})), Some((0, 0)));
    }
}
