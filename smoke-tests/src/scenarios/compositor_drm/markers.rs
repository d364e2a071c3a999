//! The markers the test host's `/init` prints and what the serial stream
//! says about one run ([`Observation`]).

use super::*;

pub const MARK_INIT: &str = "RAYOS-DRM-INIT";
pub const MARK_FAIL: &str = "RAYOS-DRM-FAIL ";
pub const MARK_CONNECTOR: &str = "RAYOS-DRM-CONNECTOR ";
pub const MARK_INPUT: &str = "RAYOS-DRM-INPUT ";
pub const MARK_COMPOSITOR_START: &str = "RAYOS-DRM-COMPOSITOR-START";
pub const MARK_COMPOSITOR_EXIT: &str = "RAYOS-DRM-COMPOSITOR-EXIT status=";
pub const MARK_INPUT_OPEN: &str = "RAYOS-DRM-INPUT-OPEN";
pub const MARK_READY: &str = "RAYOS-DRM-READY";
pub const MARK_CLIENT_EXIT: &str = "RAYOS-DRM-CLIENT-EXIT status=";

/// What the serial console told.
#[derive(Debug, Default, Clone)]
pub struct Observation {
    pub fail: Option<String>,
    pub panic: Option<String>,
    pub connectors: Vec<String>,
    pub inputs: Vec<String>,
    pub compositor_start: Option<Instant>,
    pub compositor_exit: Option<String>,
    pub client_exit: Option<String>,
    pub ready: Option<Instant>,
    pub ready_offset: Option<Duration>,
}

impl Observation {
    pub fn observe(&mut self, at: Instant, offset: Duration, line: &str) {
        let after = |m: &str| line.find(m).map(|i| line[i + m.len()..].trim().to_string());
        if let Some(r) = after(MARK_FAIL) {
            self.fail.get_or_insert(r);
        } else if let Some(r) = after(MARK_CONNECTOR) {
            self.connectors.push(r);
        } else if let Some(r) = after(MARK_INPUT) {
            self.inputs.push(r);
        } else if line.contains(MARK_COMPOSITOR_START) {
            self.compositor_start.get_or_insert(at);
        } else if let Some(r) = after(MARK_COMPOSITOR_EXIT) {
            self.compositor_exit.get_or_insert(r);
        } else if let Some(r) = after(MARK_CLIENT_EXIT) {
            self.client_exit.get_or_insert(r);
        } else if line.contains(MARK_READY) {
            self.ready.get_or_insert(at);
            self.ready_offset.get_or_insert(offset);
        } else if line.contains("Kernel panic") {
            self.panic.get_or_insert(line.trim().to_string());
        }
    }

    /// The preferred mode of the first connected connector (the first in
    /// its `modes` list).
    pub fn preferred_mode(&self) -> Option<(u32, u32)> {
        self.connectors.iter().filter(|c| c.contains("status=connected")).find_map(|c| {
            let modes = c.split("modes=").nth(1)?;
            parse_size(modes.split(',').next()?.trim()).ok()
        })
    }
}

/// `WxH` (an `i` or other suffix after the height is ignored).
pub fn parse_size(s: &str) -> Result<(u32, u32), DrmError> {
    let bad = || DrmError::BadSize(s.to_string());
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let h: String = h.chars().take_while(char::is_ascii_digit).collect();
    let (w, h) = (w.parse::<u32>().map_err(|_| bad())?, h.parse::<u32>().map_err(|_| bad())?);
    if w < 320 || h < 240 || w > 4096 || h > 4096 {
        return Err(bad());
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("1280x800").unwrap(), (1280, 800));
        assert_eq!(parse_size("1024x768i").unwrap(), (1024, 768));
        assert!(parse_size("1280").is_err());
        assert!(parse_size("10x10").is_err());
        let mut o = Observation::default();
        let t = Instant::now();
        o.observe(
            t,
            Duration::ZERO,
            "RAYOS-DRM-CONNECTOR card0-Virtual-1 status=connected modes=1280x800,1920x1080,1024x768,",
        );
        o.observe(t, Duration::from_secs(9), "[   12.0] RAYOS-DRM-READY");
        o.observe(t, Duration::ZERO, "RAYOS-DRM-COMPOSITOR-EXIT status=2");
        assert_eq!(o.preferred_mode(), Some((1280, 800)));
        assert_eq!(o.ready_offset, Some(Duration::from_secs(9)));
        assert_eq!(o.compositor_exit.as_deref(), Some("2"));
        o.observe(t, Duration::ZERO, "RAYOS-DRM-FAIL no /dev/dri/card0");
        assert_eq!(o.fail.as_deref(), Some("no /dev/dri/card0"));
    }
}
