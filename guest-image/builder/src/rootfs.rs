//! Customises the root file system mmdebstrap built: the `rayos` user, the
//! hostname, `/sbin/rayos-init` and the guest agent. Every step is idempotent;
//! it runs after each fresh build and again when a build reuses the tree.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ImageError;

/// `/sbin/rayos-init` (guest-image/rootfs/sbin/rayos-init).
pub const RAYOS_INIT: &str = include_str!("../../rootfs/sbin/rayos-init");
/// Where the guest agent is installed inside the guest.
pub const AGENT_GUEST_PATH: &str = "usr/libexec/rayos/rayos-guest-agent";
pub const USER: &str = "rayos";
pub const UID: u32 = 1000;
pub const GID: u32 = 1000;
pub const HOSTNAME: &str = "rayos-guest";
/// Supplementary groups for the desktop user (only those the image has).
const USER_GROUPS: &[&str] = &["video", "render", "input", "audio"];

/// `root/rel`, refusing to go through a symlink with an absolute target (it
/// would point into the build host) and replacing a symlink at the leaf.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        if let Ok(t) = std::fs::read_link(&p) {
            if t.is_absolute() {
                return Err(ImageError::UnsafeDelete {
                    path: p,
                    reason: format!("symlink to {} would leave the root file system", t.display()),
                });
            }
        }
    }
    Ok(p)
}

fn write_file(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
    let p = inside(root, rel)?;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
    }
    if p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&p).map_err(ImageError::io(&p))?;
    }
    let tmp = p.with_extension("rayos-tmp");
    std::fs::write(&tmp, data).map_err(ImageError::io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(ImageError::io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(ImageError::io(&p))
}

/// Adds `line` to a passwd-style file unless an entry named `name` exists.
fn ensure_entry(root: &Path, rel: &str, name: &str, line: &str, mode: u32) -> Result<(), ImageError> {
    let p = inside(root, rel)?;
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ImageError::Io { path: p, source: e }),
    };
    if text.lines().any(|l| l.split(':').next() == Some(name)) {
        return Ok(());
    }
    let mut out = text;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    write_file(root, rel, out.as_bytes(), mode)
}

/// Adds `user` to the member list (field `field`) of each group in `groups`.
pub(crate) fn add_members(text: &str, groups: &[&str], user: &str, field: usize) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let mut f: Vec<String> = line.split(':').map(str::to_string).collect();
        if f.len() > field && groups.contains(&f[0].as_str()) {
            let mut members: Vec<&str> = f[field].split(',').filter(|m| !m.is_empty()).collect();
            if !members.contains(&user) {
                members.push(user);
            }
            f[field] = members.join(",");
            out.push_str(&f.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644)
}

pub(crate) fn add_user(root: &Path) -> Result<(), ImageError> {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    ensure_entry(root, "etc/group", USER, &format!("{USER}:x:{GID}:"), 0o644)?;
    ensure_entry(root, "etc/gshadow", USER, &format!("{USER}:!::"), 0o640)?;
    ensure_entry(
        root,
        "etc/passwd",
        USER,
        &format!("{USER}:x:{UID}:{GID}:RayOS guest user:/home/{USER}:/bin/bash"),
        0o644,
    )?;
    // Locked password: the agent starts the user's programs; nobody logs in.
    ensure_entry(root, "etc/shadow", USER, &format!("{USER}:!:{days}:0:99999:7:::"), 0o640)?;
    for (rel, field) in [("etc/group", 3), ("etc/gshadow", 3)] {
        let p = inside(root, rel)?;
        if let Ok(text) = std::fs::read_to_string(&p) {
            let new = add_members(&text, USER_GROUPS, USER, field);
            if new != text {
                write_file(root, rel, new.as_bytes(), mode_of(&p))?;
            }
        }
    }
    // Keep shadow files' group (shadow) as dpkg set it.
    let home = inside(root, &format!("home/{USER}"))?;
    if !home.exists() {
        std::fs::create_dir_all(&home).map_err(ImageError::io(&home))?;
        let skel = root.join("etc/skel");
        if let Ok(rd) = std::fs::read_dir(&skel) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let dst = home.join(e.file_name());
                    std::fs::copy(e.path(), &dst).map_err(ImageError::io(&dst))?;
                    chown(&dst, Some(UID), Some(GID)).map_err(ImageError::io(&dst))?;
                }
            }
        }
    }
    chown(&home, Some(UID), Some(GID)).map_err(ImageError::io(&home))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).map_err(ImageError::io(&home))
}

/// Restores group ownership of files `write_file` recreated (root:shadow for
/// the shadow files).
fn fix_shadow_group(root: &Path) -> Result<(), ImageError> {
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let gid = group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"shadow")).then(|| f.get(2).and_then(|g| g.parse::<u32>().ok())).flatten()
    });
    if let Some(gid) = gid {
        for rel in ["etc/shadow", "etc/gshadow"] {
            let p = inside(root, rel)?;
            if p.exists() {
                chown(&p, Some(0), Some(gid)).map_err(ImageError::io(&p))?;
            }
        }
    }
    Ok(())
}

include!(concat!(env!("OUT_DIR"), "/desktop_entries.rs"));

/// Everything RayOS adds to the tree. `agent` is the agent binary on the build host.
pub(crate) fn customize(root: &Path, agent: &Path) -> Result<(), ImageError> {
    add_user(root)?;
    fix_shadow_group(root)?;
    write_file(root, "etc/hostname", format!("{HOSTNAME}\n").as_bytes(), 0o644)?;
    write_file(
        root,
        "etc/hosts",
        format!("127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n").as_bytes(),
        0o644,
    )?;
    write_file(root, "sbin/rayos-init", RAYOS_INIT.as_bytes(), 0o755)?;
    install_agent(root, agent)?;
    // guest-image/rootfs/applications/: entries for programs Debian ships none for.
    for (name, data) in DESKTOP_ENTRIES {
        write_file(root, &format!("usr/share/applications/{name}"), data, 0o644)?;
    }
    // The kernel postinst points these at an initrd that is never generated.
    for l in ["initrd.img", "initrd.img.old"] {
        let p = root.join(l);
        if p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) && !p.exists() {
            std::fs::remove_file(&p).map_err(ImageError::io(&p))?;
        }
    }
    Ok(())
}

pub(crate) fn install_agent(root: &Path, agent: &Path) -> Result<(), ImageError> {
    let data = std::fs::read(agent).map_err(|source| ImageError::Agent { path: agent.to_path_buf(), source })?;
    write_file(root, AGENT_GUEST_PATH, &data, 0o755)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_added_once() {
        let g = "root:x:0:\nvideo:x:44:\nrender:x:105:alice\nusers:x:100:\n";
        let once = add_members(g, USER_GROUPS, USER, 3);
        assert_eq!(once, "root:x:0:\nvideo:x:44:rayos\nrender:x:105:alice,rayos\nusers:x:100:\n");
        assert_eq!(add_members(&once, USER_GROUPS, USER, 3), once);
    }

    #[test]
    fn customize_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nvideo:x:44:\n").unwrap();
        let agent = root.join("agent-on-host");
        std::fs::write(&agent, b"#!/bin/sh\n").unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        if !as_root {
            return; // chown needs root; the build itself requires it.
        }
        customize(root, &agent).unwrap();
        customize(root, &agent).unwrap();
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert_eq!(passwd.matches("rayos:x:1000:1000:").count(), 1);
        assert!(std::fs::read_to_string(root.join("etc/group")).unwrap().contains("video:x:44:rayos\n"));
        assert!(root.join("usr/sbin/rayos-init").is_file());
        assert!(root.join(AGENT_GUEST_PATH).is_file());
        assert!(!DESKTOP_ENTRIES.is_empty());
        for (name, _) in DESKTOP_ENTRIES {
            assert!(root.join("usr/share/applications").join(name).is_file(), "{name}");
        }
        assert_eq!(std::fs::read_to_string(root.join("etc/hostname")).unwrap(), "rayos-guest\n");
    }
}
