//! Runs mmdebstrap to build the root file system directory and turns its
//! output into [`Progress`] events.
//!
//! Download cache: `<cache>/apt-archives` (the .deb files) and
//! `<cache>/apt-lists` (the archive indices) are copied into the chroot by a
//! setup hook (hard links when on the same file system) and copied back out by
//! a customize hook, before mmdebstrap's cleanup removes them; the way
//! mmdebstrap's manual describes for `sync-in`/`sync-out`. `--skip=essential/unlink`
//! keeps the Essential packages' .debs around for that copy. With warm indices
//! apt's update only revalidates `InRelease` and every list is a `Hit`, and
//! with warm archives no package is downloaded. The copy out goes to fresh
//! `*.new` directories that replace the old ones after a successful build, so
//! the cache holds exactly the packages of the last image.
//!
//! Kernel: `linux-image-amd64` is installed by apt like any package, so dpkg
//! knows it, its postinst runs depmod and its version lands in the manifest.
//! Its dependency initramfs-tools would build an initrd of the whole module
//! tree (slow, and useless: RayOS boots the builder's own initramfs), so an
//! essential hook diverts `update-initramfs` to a no-op before the kernel is
//! installed. The diversion stays in the image, so kernel updates inside the
//! guest do not build one either.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::{ImageError, Progress};

/// Shell run by mmdebstrap (root mode: on the host, `$1` is the chroot) after
/// the Essential packages are installed and before the rest.
const DIVERT_UPDATE_INITRAMFS: &str = r#"set -e
chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.distrib --add /usr/sbin/update-initramfs
mkdir -p "$1/usr/sbin"
printf '#!/bin/sh\n# RayOS: the guest boots the image builder'"'"'s initramfs; no initrd is generated.\nexit 0\n' > "$1/usr/sbin/update-initramfs"
chmod 0755 "$1/usr/sbin/update-initramfs""#;

const CACHE_IN: &str = r#"set -e
mkdir -p "$1/var/cache/apt/archives/partial" "$1/var/lib/apt/lists/partial"
if [ -d "$RAYOS_APT_ARCHIVES" ]; then
    for f in "$RAYOS_APT_ARCHIVES"/*.deb; do
        [ -e "$f" ] || continue
        ln "$f" "$1/var/cache/apt/archives/" 2>/dev/null || cp -p "$f" "$1/var/cache/apt/archives/"
    done
fi
if [ -d "$RAYOS_APT_LISTS" ]; then
    for f in "$RAYOS_APT_LISTS"/*; do
        [ -f "$f" ] || continue
        cp -p "$f" "$1/var/lib/apt/lists/"
    done
fi"#;

const CACHE_OUT: &str = r#"set -e
mkdir -p "$RAYOS_APT_ARCHIVES.new" "$RAYOS_APT_LISTS.new"
for f in "$1"/var/cache/apt/archives/*.deb; do
    [ -e "$f" ] || continue
    ln "$f" "$RAYOS_APT_ARCHIVES.new/" 2>/dev/null || cp -p "$f" "$RAYOS_APT_ARCHIVES.new/"
done
for f in "$1"/var/lib/apt/lists/*; do
    [ -f "$f" ] || continue
    [ "${f##*/}" = lock ] && continue
    cp -p "$f" "$RAYOS_APT_LISTS.new/"
done"#;

pub(crate) struct Run<'a> {
    pub suite: &'a str,
    pub mirror: &'a str,
    pub packages: &'a [String],
    pub target: &'a Path,
    pub cache_dir: &'a Path,
}

/// Runs mmdebstrap; on success the cache's `*.new` directories replace the old ones.
pub(crate) fn run(r: &Run<'_>, progress: &mut dyn FnMut(Progress)) -> Result<(), ImageError> {
    let archives = r.cache_dir.join("apt-archives");
    let lists = r.cache_dir.join("apt-lists");
    for d in [archives.with_extension("new"), lists.with_extension("new")] {
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(ImageError::io(&d))?;
        }
    }
    std::fs::create_dir_all(r.cache_dir).map_err(ImageError::io(r.cache_dir))?;

    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=apt", "--format=directory", "--verbose", "--components=main"])
        .arg("--aptopt=Acquire::Retries \"3\"")
        .arg(format!("--include={}", r.packages.join(",")))
        .arg("--skip=essential/unlink")
        .arg(format!("--setup-hook={CACHE_IN}"))
        .arg(format!("--essential-hook={DIVERT_UPDATE_INITRAMFS}"))
        .arg(format!("--customize-hook={CACHE_OUT}"))
        .env("RAYOS_APT_ARCHIVES", &archives)
        .env("RAYOS_APT_LISTS", &lists)
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(k) = crate::mirror::keyring() {
        cmd.arg(format!("--keyring={}", k.display()));
    }
    cmd.arg(r.suite).arg(r.target).arg(r.mirror);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    tracing::info!(?cmd, "running mmdebstrap");

    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::MissingTool {
            tool: "mmdebstrap",
            hint: "install it with scripts/setup.sh (apt package `mmdebstrap`)",
        },
        _ => ImageError::Io { path: "mmdebstrap".into(), source: e },
    })?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ]
    .into_iter()
    .map(|pipe| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
            }
        })
    })
    .collect();
    drop(tx);

    let mut parser = OutputParser::default();
    for line in rx {
        tracing::debug!(target: "mmdebstrap", "{line}");
        if let Some(p) = parser.feed(&line) {
            progress(p);
        }
    }
    for t in readers {
        let _ = t.join();
    }
    let status = child.wait().map_err(ImageError::io("mmdebstrap"))?;
    if !status.success() {
        return Err(parser.error(status.to_string(), r.suite, r.mirror));
    }
    for (cur, new) in [(&archives, archives.with_extension("new")), (&lists, lists.with_extension("new"))] {
        if new.is_dir() {
            if cur.exists() {
                std::fs::remove_dir_all(cur).map_err(ImageError::io(cur))?;
            }
            std::fs::rename(&new, cur).map_err(ImageError::io(&new))?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Setup,
    Update,
    Download,
    Install,
    Hooks,
}

/// Follows mmdebstrap's `--verbose` output (its own `I:` lines plus apt's and dpkg's).
#[derive(Default)]
pub(crate) struct OutputParser {
    phase: Phase,
    stage: String,
    packages_total: u32,
    downloaded: u32,
    installed: u32,
    errors: Vec<String>,
    tail: VecDeque<String>,
}

impl OutputParser {
    pub(crate) fn feed(&mut self, line: &str) -> Option<Progress> {
        if self.tail.len() == 30 {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        if line.starts_with("E: ") || line.starts_with("Err:") || line.contains("Failed to fetch") {
            self.errors.push(line.to_string());
        }
        if let Some(msg) = line.strip_prefix("I: ") {
            self.phase = if msg.starts_with("running apt-get update") {
                Phase::Update
            } else if msg.starts_with("downloading packages") {
                Phase::Download
            } else if msg.starts_with("installing") || msg.starts_with("extracting") {
                Phase::Install
            } else if msg.starts_with("running --") {
                Phase::Hooks
            } else {
                self.phase
            };
            // Hook scripts are long; name the hook only.
            let msg = match msg.find(" in shell:") {
                Some(i) => &msg[..i],
                None => msg,
            };
            // Lines ending in "..." announce what mmdebstrap does next.
            if let Some(stage) = msg.strip_suffix("...") {
                self.stage = stage.to_string();
            }
            return Some(Progress::Step(msg.trim_end_matches("...").to_string()));
        }
        if let Some(n) = newly_installed(line) {
            self.packages_total += n;
            return None;
        }
        if self.phase == Phase::Update
            && (line.starts_with("Get:") || line.starts_with("Hit:") || line.starts_with("Fetched "))
        {
            // Index downloads: "Hit" means the cached index is still current.
            return Some(Progress::Step(format!("index: {line}")));
        }
        if let Some(rest) = line.strip_prefix("Get:") {
            self.downloaded += 1;
            // "Get:12 http://mirror trixie/main amd64 NAME amd64 VERSION [SIZE]"
            let package = rest.split_whitespace().nth(4).unwrap_or("?").to_string();
            return Some(Progress::Download { fetched: self.downloaded, total: self.packages_total, package });
        }
        if let Some(rest) = line.strip_prefix("Setting up ") {
            self.installed += 1;
            let package = rest.split([' ', ':']).next().unwrap_or("?").to_string();
            return Some(Progress::Install { done: self.installed, total: self.packages_total, package });
        }
        None
    }

    pub(crate) fn error(&self, status: String, suite: &str, mirror: &str) -> ImageError {
        let message = if self.errors.is_empty() {
            self.tail.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join("\n")
        } else {
            self.errors.join("\n")
        };
        if let Some(package) = self.errors.iter().find_map(|e| e.split("Unable to locate package ").nth(1)) {
            return ImageError::UnknownPackage {
                package: package.trim().to_string(),
                suite: suite.to_string(),
                mirror: mirror.to_string(),
            };
        }
        let fetch = matches!(self.phase, Phase::Setup | Phase::Update | Phase::Download)
            || self.errors.iter().any(|e| e.contains("Failed to fetch") || e.starts_with("Err:"));
        if fetch {
            ImageError::Fetch { suite: suite.to_string(), mirror: mirror.to_string(), message }
        } else {
            ImageError::Mmdebstrap { status, stage: self.stage.clone(), message }
        }
    }

    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u32, u32, u32) {
        (self.packages_total, self.downloaded, self.installed)
    }
}

fn newly_installed(line: &str) -> Option<u32> {
    // "0 upgraded, 244 newly installed, 0 to remove and 0 not upgraded."
    let (_, rest) = line.split_once(" upgraded, ")?;
    rest.split_once(" newly installed")?.0.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_download_and_install() {
        let mut p = OutputParser::default();
        let lines = [
            "I: running apt-get update...",
            "Get:1 http://m.example/debian trixie InRelease [140 kB]",
            "I: downloading packages with apt...",
            "0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.",
            "Get:1 http://m.example/debian trixie/main amd64 gcc-14-base amd64 14.2.0-19 [49.4 kB]",
            "I: installing essential packages...",
            "Setting up gcc-14-base:amd64 (14.2.0-19) ...",
            "Setting up libc6:amd64 (2.41-12) ...",
        ];
        let events: Vec<_> = lines.iter().filter_map(|l| p.feed(l)).collect();
        assert_eq!(p.counts(), (2, 1, 2));
        assert!(events.contains(&Progress::Download { fetched: 1, total: 2, package: "gcc-14-base".into() }));
        assert!(events.contains(&Progress::Install { done: 2, total: 2, package: "libc6".into() }));
        assert!(events.contains(&Progress::Step("installing essential packages".into())));
    }

    #[test]
    fn update_failure_names_the_mirror() {
        let mut p = OutputParser::default();
        p.feed("I: running apt-get update...");
        p.feed("Err:1 http://m.example/debian trixie InRelease");
        p.feed("E: Failed to fetch http://m.example/debian/dists/trixie/InRelease  Could not resolve 'm.example'");
        let e = p.error("exit status: 1".into(), "trixie", "http://m.example/debian").to_string();
        assert!(e.starts_with("cannot fetch trixie packages from http://m.example/debian: "), "{e}");
        assert!(e.contains("Could not resolve"), "{e}");
    }

    #[test]
    fn install_failure_names_the_stage() {
        let mut p = OutputParser::default();
        p.feed("I: installing remaining packages inside the chroot...");
        p.feed("E: Sub-process /usr/bin/dpkg returned an error code (1)");
        let e = p.error("exit status: 1".into(), "trixie", "http://m.example/debian");
        assert!(
            matches!(e, ImageError::Mmdebstrap { ref stage, .. } if stage == "installing remaining packages inside the chroot"),
            "{e}"
        );
    }

    #[test]
    fn unknown_package_is_named() {
        let mut p = OutputParser::default();
        p.feed("I: installing remaining packages inside the chroot...");
        p.feed("I: main() received signal PIPE: waiting for setup");
        p.feed("E: setup failed: E: Unable to locate package no-such-pkg");
        let e = p.error("exit status: 25".into(), "trixie", "http://m.example/debian").to_string();
        assert_eq!(e, "package no-such-pkg is not in trixie at http://m.example/debian");
    }
}
