//! The test host's `/init` (`init.sh`): mounts, modules, udev, the
//! compositor on DRM with its client, and the markers it prints.

use super::*;
use crate::script::fill;

pub(super) const INIT: &str = include_str!("init.sh");

/// What the test host's `/init` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSpec {
    /// `RUST_LOG` of the compositor (empty: its default).
    pub compositor_log: String,
    /// How long the init waits for the compositor's Wayland socket.
    pub socket_timeout: Duration,
}

/// The test host's `/init`.
/// The test host's `/init`.
pub fn init_script(spec: &InitSpec) -> String {
    let log = if spec.compositor_log.is_empty() {
        String::new()
    } else {
        format!("RUST_LOG={} ", sh_quote(&spec.compositor_log))
    };
    let tries = (spec.socket_timeout.as_millis() / 100).max(1);
    fill(
        INIT,
        &[
            ("LOG", log),
            ("TRIES", tries.to_string()),
            ("INIT", MARK_INIT.into()),
            ("FAIL", MARK_FAIL.into()),
            ("LIST_DIR", MODULE_LIST_DIR.into()),
            ("LIST", MODULE_LIST.into()),
            ("MODULE_DIR", MODULE_DIR.into()),
            ("UDEVD", UDEVD.into()),
            ("CONNECTOR", MARK_CONNECTOR.into()),
            ("INPUT_OPEN", MARK_INPUT_OPEN.into()),
            ("INPUT", MARK_INPUT.into()),
            ("SOCKET_DIR", SOCKET_DIR.into()),
            ("SOCKET", SOCKET.into()),
            ("CONTROL", CONTROL.into()),
            ("COMPOSITOR_START", MARK_COMPOSITOR_START.into()),
            ("COMPOSITOR_EXIT", MARK_COMPOSITOR_EXIT.into()),
            ("COMPOSITOR", COMPOSITOR.into()),
            ("CLIENT_EXIT", MARK_CLIENT_EXIT.into()),
            ("CLIENT", CLIENT.into()),
            ("READY", MARK_READY.into()),
            ("SECS", spec.socket_timeout.as_secs().to_string()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        assert_eq!(crate::script::unfilled(&init_script(&spec())), None);
    }

    fn spec() -> InitSpec {
        InitSpec { compositor_log: String::new(), socket_timeout: Duration::from_secs(120) }
    }

    #[test]
    fn init_runs_the_steps_in_order() {
        let s = init_script(&spec());
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle:?} not in init:\n{s}"));
        let steps = [
            "mount -t devtmpfs devtmpfs /dev",
            "mount -t devpts devpts /dev/pts",
            "echo RAYOS-DRM-INIT",
            "insmod /lib/modules/rayos-smoke/$m.ko",
            "/lib/systemd/systemd-udevd --daemon",
            "udevadm trigger --action=add --type=devices",
            "udevadm settle",
            "[ -c /dev/dri/card0 ]",
            "echo RAYOS-DRM-COMPOSITOR-START",
            "LIBSEAT_BACKEND=builtin XDG_RUNTIME_DIR=/run/rayos /usr/bin/rayos-compositor --backend drm --socket-dir /run/rayos --control /run/rayos/ctl.sock",
            "while [ ! -S /run/rayos/rayos-host ]",
            "XDG_RUNTIME_DIR=/run/rayos WAYLAND_DISPLAY=rayos-host /usr/bin/weston-simple-shm",
            "grep -q \" -> $e\\$\"",
            "echo \"RAYOS-DRM-INPUT-OPEN$nodes\"",
            "echo RAYOS-DRM-READY",
        ];
        let mut last = 0;
        for step in steps {
            let p = pos(step);
            assert!(p >= last, "{step:?} out of order");
            last = p;
        }
        assert!(s.contains("cat /etc/rayos-smoke/modules-display"));
        assert!(s.contains("[ $i -gt 1200 ]"));
        assert!(!s.contains("RUST_LOG"));
        let s = init_script(&InitSpec { compositor_log: "rayos_compositor=debug".into(), ..spec() });
        assert!(s.contains("RUST_LOG=rayos_compositor=debug /usr/bin/rayos-compositor"));
    }
}
