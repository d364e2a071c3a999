//! The guest's app catalog: every `*.desktop` file under the XDG
//! `applications` folders, parsed with the contract's Desktop Entry rules.
//!
//! The desktop file id is the path below the `applications` folder with `/`
//! turned into `-`; when two folders hold the same id, the first folder in
//! XDG order wins. An entry whose `TryExec` program is not installed is left
//! out, as the specification asks. Malformed files are skipped with a warning
//! naming them (and reported in [`Catalog::skipped`]); they never fail the
//! whole catalog. Symlinked folders are not followed, so a loop cannot hang
//! the agent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayos_contract::desktop::{parse_desktop, DesktopEntry, MAX_FILE_BYTES};

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub entries: Vec<DesktopEntry>,
    /// `path: reason` for every file left out as malformed.
    pub skipped: Vec<String>,
}

/// The guest's application folders in XDG order (most important first).
pub fn xdg_dirs(data_home: Option<&Path>, data_dirs: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = data_home.map(|h| h.join("applications")).into_iter().collect();
    let data_dirs = data_dirs.filter(|d| !d.is_empty()).unwrap_or("/usr/local/share:/usr/share");
    dirs.extend(data_dirs.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join("applications")));
    dirs
}

impl Catalog {
    /// Read every folder; a missing folder is simply empty.
    pub fn load(dirs: &[PathBuf], path_env: &str) -> Catalog {
        let mut cat = Catalog::default();
        let mut seen = HashSet::new();
        for root in dirs {
            for (id, file) in desktop_files(root) {
                if seen.contains(&id) {
                    continue;
                }
                match read_entry(&id, &file) {
                    Ok(Some((entry, try_exec))) => {
                        seen.insert(id);
                        if try_exec.is_none_or(|p| find_program(&p, path_env).is_some()) {
                            cat.entries.push(entry);
                        }
                    }
                    Ok(None) => {
                        seen.insert(id);
                    }
                    Err(reason) => {
                        tracing::warn!("skipping {}: {reason}", file.display());
                        cat.skipped.push(format!("{}: {reason}", file.display()));
                    }
                }
            }
        }
        cat.entries.sort_by(|a, b| a.id.cmp(&b.id));
        cat
    }

    pub fn get(&self, id: &str) -> Option<&DesktopEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Marks the apps the system makes its default for a kind of app: an
    /// entry that runs, with no options of its own, the program (found
    /// through `path_env`) an alternative in `alternatives`
    /// (`/etc/alternatives`) finally points at gets that alternative's kind
    /// in `default_for` (`foot`, not `foot --server`).
    pub fn mark_defaults(&mut self, alternatives: &Path, path_env: &str) {
        for (alternative, kind) in DEFAULT_ALTERNATIVES {
            let Ok(target) = std::fs::canonicalize(alternatives.join(alternative)) else { continue };
            for e in &mut self.entries {
                if !runs_plain(e) {
                    continue;
                }
                let program = e.program().and_then(|p| find_program(&p, path_env));
                if program.and_then(|p| std::fs::canonicalize(p).ok()).as_ref() == Some(&target)
                    && !e.default_for.iter().any(|k| k == kind)
                {
                    e.default_for.push(kind.to_string());
                }
            }
        }
    }
}

/// Whether the entry's Exec is its program and field codes only (`foot`,
/// `firefox-esr %u`), as the alternative runs it.
fn runs_plain(e: &DesktopEntry) -> bool {
    let Some(program) = e.program() else { return false };
    let words: Vec<&str> = e.exec.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| w.rsplit('/').next().map(|b| b.trim_matches('"')) == Some(&program))
    else {
        return false;
    };
    words[at + 1..].iter().all(|w| w.starts_with('%'))
}

/// Debian's alternatives that choose the system's app of a kind, and that
/// kind as a freedesktop category.
pub const DEFAULT_ALTERNATIVES: [(&str, &str); 2] =
    [("x-terminal-emulator", "TerminalEmulator"), ("x-www-browser", "WebBrowser")];

/// Where Debian keeps its alternatives.
pub const ALTERNATIVES_DIR: &str = "/etc/alternatives";

/// `(desktop id, path)` of every `.desktop` file below `root`, sorted.
fn desktop_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        for item in listing.flatten() {
            let path = item.path();
            match item.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(_) if path.extension().is_some_and(|x| x == "desktop") => {
                    if let Ok(rel) = path.strip_prefix(root) {
                        found.push((rel.to_string_lossy().replace('/', "-"), path));
                    }
                }
                _ => {}
            }
        }
    }
    found.sort();
    found
}

/// The entry and its `TryExec`, or why the file is malformed.
fn read_entry(id: &str, path: &Path) -> Result<Option<(DesktopEntry, Option<String>)>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!("{size} bytes, over the {MAX_FILE_BYTES} byte limit"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
    let Some(entry) = parse_desktop(id, text)? else { return Ok(None) };
    let try_exec = text
        .lines()
        .skip_while(|l| l.trim() != "[Desktop Entry]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| l.trim().strip_prefix("TryExec").and_then(|r| r.trim_start().strip_prefix('=')))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    Ok(Some((entry, try_exec)))
}

/// The executable `program` names: a path as is, a bare name through `PATH`.
pub fn find_program(program: &str, path_env: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    path_env.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(program)).find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn the_alternatives_mark_the_system_default_apps() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let (apps, bin, alt) =
            (tmp.path().join("applications"), tmp.path().join("bin"), tmp.path().join("alternatives"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&alt).unwrap();
        for p in ["foot", "weston-terminal"] {
            std::fs::write(bin.join(p), "").unwrap();
            std::fs::set_permissions(bin.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // x-terminal-emulator -> /etc/alternatives/x-terminal-emulator -> foot, as Debian links it.
        symlink(bin.join("foot"), alt.join("x-terminal-emulator")).unwrap();
        symlink(alt.join("x-terminal-emulator"), bin.join("x-terminal-emulator")).unwrap();
        write(&apps, "foot.desktop", "[Desktop Entry]\nType=Application\nName=Foot\nExec=foot\n");
        write(
            &apps,
            "foot-server.desktop",
            "[Desktop Entry]\nType=Application\nName=Foot Server\nExec=foot --server\n",
        );
        write(
            &apps,
            "weston-terminal.desktop",
            "[Desktop Entry]\nType=Application\nName=Weston Terminal\nExec=weston-terminal\n",
        );
        let path = bin.to_string_lossy().into_owned();
        let mut cat = Catalog::load(&[apps], &path);
        cat.mark_defaults(&alt, &path);
        let kinds = |id: &str| cat.get(id).unwrap().default_for.clone();
        assert_eq!(kinds("foot.desktop"), vec!["TerminalEmulator".to_string()]);
        assert!(
            kinds("foot-server.desktop").is_empty(),
            "the same program, but as a server: {:?}",
            kinds("foot-server.desktop")
        );
        assert!(kinds("weston-terminal.desktop").is_empty());
        // No alternatives folder: nothing is marked, nothing fails.
        let mut cat = Catalog::load(&[tmp.path().join("applications")], &path);
        cat.mark_defaults(&tmp.path().join("none"), &path);
        assert!(cat.entries.iter().all(|e| e.default_for.is_empty()));
    }

    #[test]
    fn loads_folders_in_xdg_order_with_ids_tryexec_and_warnings() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, second) = (tmp.path().join("a/applications"), tmp.path().join("b/applications"));
        write(&first, "foot.desktop", "[Desktop Entry]\nType=Application\nName=Foot (local)\nExec=foot\n");
        write(&second, "foot.desktop", "[Desktop Entry]\nType=Application\nName=Foot\nExec=foot\n");
        write(&second, "kde/konsole.desktop", "[Desktop Entry]\nType=Application\nName=Konsole\nExec=konsole\n");
        write(
            &second,
            "gone.desktop",
            "[Desktop Entry]\nType=Application\nName=Gone\nExec=gone\nTryExec=/nonexistent/gone\n",
        );
        write(&second, "sh.desktop", "[Desktop Entry]\nType=Application\nName=Shell\nExec=sh\nTryExec=sh\n");
        write(&second, "broken.desktop", "garbage\n");
        write(&second, "link.desktop", "[Desktop Entry]\nType=Link\nName=L\nURL=x\n");
        let cat = Catalog::load(&[first, second], "/usr/bin:/bin");
        let ids: Vec<_> = cat.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["foot.desktop", "kde-konsole.desktop", "sh.desktop"]);
        assert_eq!(cat.get("foot.desktop").unwrap().name, "Foot (local)");
        assert_eq!(cat.skipped.len(), 1);
        assert!(cat.skipped[0].contains("broken.desktop"), "{:?}", cat.skipped);
    }

    #[test]
    fn the_real_debian_catalog_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host/tests/catalog");
        // With an empty PATH every entry with a TryExec by bare name is left out.
        let cat = Catalog::load(&[dir], "");
        assert!(cat.entries.len() > 90, "{}", cat.entries.len());
        assert!(cat.get("audacious.desktop").is_none(), "TryExec=audacious is not installed");
        assert!(cat.skipped.is_empty(), "{:?}", cat.skipped);
    }

    #[test]
    fn xdg_order() {
        let d = xdg_dirs(Some(Path::new("/home/u/.local/share")), Some("/usr/share::/opt/share"));
        assert_eq!(
            d,
            [
                PathBuf::from("/home/u/.local/share/applications"),
                PathBuf::from("/usr/share/applications"),
                PathBuf::from("/opt/share/applications")
            ]
        );
        assert_eq!(xdg_dirs(None, None).len(), 2);
    }
}
