//! QEMU for this scenario (bochs display, virtio keyboard and tablet, QMP)
//! and the camera that captures the scanout and sends input over the test
//! kit's QMP client.

use super::*;
use rayos_test_kit::qmp::{Qmp, QmpError};

/// The test host's kernel command line.
pub const CMDLINE: &str = "console=ttyS0 quiet panic=-1 rdinit=/init";

/// The QEMU arguments after the binary.
pub fn qemu_args(
    accel: Accel,
    memory_mib: u32,
    cpus: u32,
    size: (u32, u32),
    qmp: &Path,
    kernel: &Path,
    initrd: &Path,
) -> Vec<String> {
    let mut v: Vec<String> = accel.args().iter().map(|s| s.to_string()).collect();
    v.extend([
        "-m".to_string(),
        format!("{memory_mib}M"),
        "-smp".into(),
        cpus.to_string(),
        "-nodefaults".into(),
        "-no-reboot".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-device".into(),
        format!("bochs-display,id=video0,xres={},yres={}", size.0, size.1),
        "-device".into(),
        "virtio-tablet-pci,id=tablet0".into(),
        "-device".into(),
        "virtio-keyboard-pci,id=keyboard0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        CMDLINE.into(),
    ]);
    v
}

/// A capture or an input event that QEMU did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("capture {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: rayos_test_kit::image::ImageError,
    },
    #[error("capture {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Screendumps in the best format this QEMU offers.
pub(crate) struct Camera {
    pub(crate) qmp: Qmp,
    pub(crate) png: bool,
    pub(crate) dir: PathBuf,
}

impl Camera {
    /// Captures the scanout into `<dir>/<name>.<ext>` and decodes it.
    pub(crate) fn shot(&mut self, name: &str) -> Result<(PathBuf, Image), CaptureError> {
        loop {
            let path = self.dir.join(format!("{name}.{}", if self.png { "png" } else { "ppm" }));
            let mut args = json!({ "filename": path.display().to_string() });
            if self.png {
                args["format"] = json!("png");
            }
            match self.qmp.execute("screendump", args) {
                Ok(_) => {
                    let bytes = match std::fs::read(&path) {
                        Ok(b) => b,
                        Err(source) => return Err(CaptureError::Read { path, source }),
                    };
                    return match if self.png { Image::from_png(&bytes) } else { Image::from_ppm(&bytes) } {
                        Ok(img) => Ok((path, img)),
                        Err(source) => Err(CaptureError::Decode { path, source }),
                    };
                }
                Err(QmpError::Command { desc, .. }) if self.png && desc.contains("format") => {
                    let e = desc;
                    tracing::info!("this QEMU has no PNG screendump ({e}); using PPM");
                    self.png = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) fn abs(&mut self, x: u32, y: u32, size: (u32, u32)) -> Result<(), QmpError> {
        let (vx, vy) = (abs_value(x, size.0), abs_value(y, size.1));
        self.qmp
            .execute(
                "input-send-event",
                json!({ "events": [
                    { "type": "abs", "data": { "axis": "x", "value": vx } },
                    { "type": "abs", "data": { "axis": "y", "value": vy } },
                ]}),
            )
            .map(drop)
    }

    pub(super) fn button(&mut self, down: bool) -> Result<(), QmpError> {
        self.qmp
            .execute(
                "input-send-event",
                json!({ "events": [ { "type": "btn", "data": { "down": down, "button": "left" } } ] }),
            )
            .map(drop)
    }
}

/// The absolute axis value that libinput maps to pixel `px` of `extent`
/// (it scales `value * extent / (ABS_MAX + 1)`): the pixel's centre.
pub fn abs_value(px: u32, extent: u32) -> u32 {
    let v = (u64::from(px) * 2 + 1) * u64::from(ABS_MAX + 1) / (2 * u64::from(extent.max(1)));
    v.min(u64::from(ABS_MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_line_has_display_input_and_qmp() {
        let a = qemu_args(Accel::Tcg, 1024, 2, (1280, 800), Path::new("/r/qmp.sock"), Path::new("/k"), Path::new("/i"))
            .join(" ");
        assert!(a.starts_with(
            "-accel tcg -cpu max,la57=off -m 1024M -smp 2 -nodefaults -no-reboot -display none -serial stdio"
        ));
        assert!(a.contains("-device bochs-display,id=video0,xres=1280,yres=800"));
        assert!(a.contains("-device virtio-tablet-pci,id=tablet0"));
        assert!(a.contains("-qmp unix:/r/qmp.sock,server=on,wait=off"));
        assert!(a.ends_with("-kernel /k -initrd /i -append console=ttyS0 quiet panic=-1 rdinit=/init"));
    }

    #[test]
    fn absolute_values_land_on_the_pixel() {
        for (px, extent) in [(0, 1280), (271, 1280), (1279, 1280), (46, 800), (799, 800)] {
            let v = abs_value(px, extent);
            assert!(v <= ABS_MAX);
            // libinput: value * extent / (max + 1)
            assert_eq!(u64::from(v) * u64::from(extent) / u64::from(ABS_MAX + 1), u64::from(px));
        }
    }
}
