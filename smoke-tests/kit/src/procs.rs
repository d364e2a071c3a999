//! Child processes a test or scenario started, killed when it ends whatever happens.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Named children, killed (last started first) when dropped.
#[derive(Default)]
pub struct Procs(pub Vec<(String, Child)>);

impl Procs {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes ownership of `child` under `name`.
    pub fn push(&mut self, name: impl Into<String>, child: Child) {
        self.0.push((name.into(), child));
    }

    pub fn get(&mut self, name: &str) -> Option<&mut Child> {
        self.0.iter_mut().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Kills `name` (if started) and reaps it.
    pub fn kill(&mut self, name: &str) {
        if let Some(c) = self.get(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether `name` exited (or was never started) within `d`.
    pub fn exited_within(&mut self, name: &str, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            match self.get(name).map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => return true,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    pub fn pid(&mut self, name: &str) -> Option<u32> {
        self.get(name).map(|c| c.id())
    }

    /// The first child that has exited, with its status.
    pub fn first_exited(&mut self) -> Option<(String, ExitStatus)> {
        self.0.iter_mut().find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (n.clone(), s)))
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn drop_kills_children_and_first_exited_reports() {
        let mut p = Procs::new();
        p.push("sleeper", Command::new("sleep").arg("30").spawn().unwrap());
        p.push("quick", Command::new("true").spawn().unwrap());
        assert!(p.exited_within("quick", Duration::from_secs(5)));
        let (name, status) = p.first_exited().unwrap();
        assert_eq!((name.as_str(), status.success()), ("quick", true));
        let pid = p.pid("sleeper").unwrap();
        drop(p);
        // The sleeper was killed and reaped: its pid no longer names it.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).map(|c| c.starts_with("sleep"));
        assert!(!matches!(alive, Ok(true)));
    }
}
