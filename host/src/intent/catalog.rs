//! The app catalog: freedesktop `.desktop` files, parsed.
//!
//! Only the `[Desktop Entry]` group is read, and only the untranslated keys
//! (`Name`, not `Name[de]`): requests are matched in English. Values are
//! unescaped (`\s \n \t \r \\`) and lists split on unescaped `;`, as the Desktop
//! Entry Specification says. The desktop file ID is the path relative to the
//! catalog folder with `/` turned into `-` (`kde/konsole.desktop` →
//! `kde-konsole.desktop`).
//!
//! A malformed file (not UTF-8, no `[Desktop Entry]` group, a line that is not
//! `key=value`, no `Name`, an application with neither `Exec` nor
//! `DBusActivatable=true`, over 256 KiB) is skipped with a warning that names
//! it; the rest of the catalog loads. Entries that are not applications
//! (`Type=Link`, `Type=Directory`) and deleted ones (`Hidden=true`) are left out
//! silently, and so are hidden entries with no `Exec` (they only name an app's
//! windows, like Debian's `qemu.desktop`). Other `NoDisplay=true` entries are
//! kept, flagged: the engine uses them only when nothing visible fits.

use std::path::{Path, PathBuf};

/// Errors of loading a catalog, and the reasons a single file is skipped.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog folder {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("catalog {path}: no .desktop files in it")]
    Empty { path: PathBuf },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("no application folders found ($XDG_DATA_HOME/applications, $XDG_DATA_DIRS/*/applications); pass --catalog DIR")]
    NoFolders,
}

/// Largest .desktop file read; real ones are under 40 KiB.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

/// One application of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopEntry {
    /// Desktop file ID, e.g. `org.gnome.Evince.desktop`.
    pub id: String,
    pub name: String,
    pub generic_name: Option<String>,
    pub comment: Option<String>,
    pub keywords: Vec<String>,
    pub categories: Vec<String>,
    pub mime_types: Vec<String>,
    /// The `Exec` line, unescaped (empty for D-Bus activated apps without one).
    pub exec: String,
    pub no_display: bool,
    pub terminal: bool,
}

impl DesktopEntry {
    /// Whether `Exec` takes URLs (`%u`/`%U`), so a URL argument can be passed.
    pub fn takes_urls(&self) -> bool {
        self.exec.contains("%u") || self.exec.contains("%U")
    }

    /// Whether `Exec` takes local files (`%f %F %u %U`).
    pub fn takes_files(&self) -> bool {
        self.takes_urls() || self.exec.contains("%f") || self.exec.contains("%F")
    }

    /// Whether `Exec` takes more than one argument (`%F`/`%U`).
    pub fn takes_many(&self) -> bool {
        self.exec.contains("%F") || self.exec.contains("%U")
    }

    /// The program `Exec` runs, without folder (`/usr/bin/vlc` → `vlc`),
    /// skipping `env`, `sh -c` and similar wrappers.
    pub fn program(&self) -> Option<String> {
        let mut words = self.exec.split_whitespace().filter(|w| !w.contains('='));
        let mut first = words.next()?;
        while matches!(
            first.rsplit('/').next(),
            Some("env" | "gapplication" | "flatpak" | "sh" | "bash" | "dbus-launch")
        ) {
            first = words.find(|w| {
                !w.starts_with('-') && !w.starts_with('"') && *w != "launch" && *w != "run"
            })?;
        }
        let base = first.rsplit('/').next()?.trim_matches('"');
        (!base.is_empty() && !base.starts_with('%')).then(|| base.to_string())
    }

    /// A stable digest of every field the engine reads: the cache key of the
    /// entry's vectors, so a changed entry is embedded again.
    pub fn content_key(&self) -> String {
        format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
            self.name,
            self.generic_name.as_deref().unwrap_or(""),
            self.comment.as_deref().unwrap_or(""),
            self.keywords.join(";"),
            self.categories.join(";"),
            self.mime_types.join(";"),
            self.exec
        )
    }
}

/// Unescape a string value (`\s \n \t \r \\`).
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Split a list value on unescaped `;`, unescape, drop empty items.
fn split_list(v: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(';') => cur.push(';'),
                Some(o) => {
                    cur.push('\\');
                    cur.push(o);
                }
                None => cur.push('\\'),
            },
            ';' => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .map(|s| unescape(s.trim()))
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_bool(v: &str) -> bool {
    v.trim() == "true"
}

/// Parse one .desktop file. `Ok(None)` means a valid file that is not a
/// launchable application (a link, a folder, a deleted entry).
pub fn parse_desktop(id: &str, text: &str) -> Result<Option<DesktopEntry>, String> {
    let mut in_main = false;
    let mut seen_main = false;
    let mut seen_group = false;
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') {
                return Err(format!(
                    "line {}: unterminated group header {line:?}",
                    n + 1
                ));
            }
            let group = &line[1..line.len() - 1];
            if !seen_group && group != "Desktop Entry" {
                return Err(format!(
                    "line {}: the first group is [{group}], not [Desktop Entry]",
                    n + 1
                ));
            }
            seen_group = true;
            in_main = group == "Desktop Entry";
            if in_main {
                if seen_main {
                    return Err(format!("line {}: a second [Desktop Entry] group", n + 1));
                }
                seen_main = true;
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "line {}: not a key=value line: {:?}",
                n + 1,
                truncate(line, 60)
            ));
        };
        if !seen_group {
            return Err(format!("line {}: key before any group header", n + 1));
        }
        if in_main {
            let k = k.trim();
            if !k.contains('[') {
                fields.push((k, v.trim_start()));
            }
        }
    }
    if !seen_main {
        return Err("no [Desktop Entry] group".to_string());
    }
    let get = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    };
    let kind = get("Type").ok_or("no Type key")?;
    if get("Hidden").is_some_and(parse_bool) {
        return Ok(None);
    }
    if kind != "Application" {
        return Ok(None);
    }
    let name = get("Name")
        .map(unescape)
        .filter(|s| !s.trim().is_empty())
        .ok_or("no Name key")?;
    let exec = get("Exec").map(unescape).unwrap_or_default();
    let no_display = get("NoDisplay").is_some_and(parse_bool);
    if exec.trim().is_empty() && !get("DBusActivatable").is_some_and(parse_bool) {
        if no_display {
            // Hidden entries without Exec only name an app's windows (Debian's
            // qemu.desktop): valid, but nothing to launch.
            return Ok(None);
        }
        return Err("an application with no Exec key (and not DBusActivatable)".to_string());
    }
    let opt = |key: &str| get(key).map(unescape).filter(|s| !s.trim().is_empty());
    Ok(Some(DesktopEntry {
        id: id.to_string(),
        name,
        generic_name: opt("GenericName"),
        comment: opt("Comment"),
        keywords: get("Keywords").map(split_list).unwrap_or_default(),
        categories: get("Categories").map(split_list).unwrap_or_default(),
        mime_types: get("MimeType").map(split_list).unwrap_or_default(),
        exec,
        no_display,
        terminal: get("Terminal").is_some_and(parse_bool),
    }))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A loaded catalog: the entries, and the files that were skipped and why.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub entries: Vec<DesktopEntry>,
    /// One line per skipped file, naming it.
    pub warnings: Vec<String>,
}

impl Catalog {
    /// A catalog from entries built in memory.
    pub fn from_entries(entries: Vec<DesktopEntry>) -> Self {
        Self {
            entries,
            warnings: Vec::new(),
        }
    }

    /// Load every `*.desktop` file under `dir` (recursively). Malformed files
    /// are skipped, each with a `tracing` warning and a line in `warnings`.
    pub fn load_dir(dir: &Path) -> Result<Self, CatalogError> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        if files.is_empty() {
            return Err(CatalogError::Empty {
                path: dir.to_path_buf(),
            });
        }
        files.sort();
        let mut cat = Catalog::default();
        let mut seen = std::collections::HashSet::new();
        for (id, path) in files {
            match load_file(&id, &path) {
                Ok(Some(e)) => {
                    if seen.insert(e.id.clone()) {
                        cat.entries.push(e);
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!("skipping {err}");
                    cat.warnings.push(format!("skipped {err}"));
                }
            }
        }
        Ok(cat)
    }

    /// Load the catalogs of several folders; an ID found earlier wins (XDG order).
    pub fn load_dirs(dirs: &[PathBuf]) -> Result<Self, CatalogError> {
        let mut out = Catalog::default();
        let mut seen = std::collections::HashSet::new();
        let mut last_err = None;
        for d in dirs {
            match Catalog::load_dir(d) {
                Ok(c) => {
                    out.warnings.extend(c.warnings);
                    for e in c.entries {
                        if seen.insert(e.id.clone()) {
                            out.entries.push(e);
                        }
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        if out.entries.is_empty() {
            return Err(last_err.unwrap_or(CatalogError::NoFolders));
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Option<&DesktopEntry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

/// The XDG application folders, most important first:
/// `$XDG_DATA_HOME/applications`, then each of `$XDG_DATA_DIRS`.
pub fn xdg_application_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => dirs.push(PathBuf::from(d).join("applications")),
        None => {
            if let Some(h) = std::env::var_os("HOME") {
                dirs.push(PathBuf::from(h).join(".local/share/applications"));
            }
        }
    }
    let data_dirs = std::env::var("XDG_DATA_DIRS")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/usr/local/share:/usr/share".to_string());
    dirs.extend(
        data_dirs
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("applications")),
    );
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), CatalogError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CatalogError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    for ent in rd {
        let ent = ent.map_err(|source| CatalogError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = ent.path();
        let ft = match ent.file_type() {
            Ok(t) => t,
            Err(_) => continue,
        };
        if ft.is_dir() || (ft.is_symlink() && path.is_dir()) {
            // Symlinked folders are not followed, so a link loop cannot hang us.
            if ft.is_dir() {
                collect(root, &path, out)?;
            }
        } else if path.extension().is_some_and(|x| x == "desktop") {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let id = rel.to_string_lossy().replace('/', "-");
            out.push((id, path));
        }
    }
    Ok(())
}

fn load_file(id: &str, path: &Path) -> Result<Option<DesktopEntry>, CatalogError> {
    let malformed = |reason: String| CatalogError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| malformed(e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(malformed(format!(
            "{} bytes, over the {} byte cap for a .desktop file",
            meta.len(),
            MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| malformed(e.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| malformed(format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
    parse_desktop(id, &text).map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVINCE: &str = "[Desktop Entry]\nName=Document Viewer\nName[de]=Dokumentenbetrachter\nComment=View multi-page documents\nKeywords=pdf;ps;postscript;\nExec=evince %U\nType=Application\nCategories=GNOME;GTK;Office;Viewer;\nMimeType=application/pdf;image/tiff;\n\n[Desktop Action new-window]\nName=New Window\nExec=evince --new-window\n";

    #[test]
    fn parses_main_group_only_and_untranslated_keys() {
        let e = parse_desktop("org.gnome.Evince.desktop", EVINCE)
            .unwrap()
            .unwrap();
        assert_eq!(e.name, "Document Viewer");
        assert_eq!(e.comment.as_deref(), Some("View multi-page documents"));
        assert_eq!(e.keywords, ["pdf", "ps", "postscript"]);
        assert_eq!(e.categories, ["GNOME", "GTK", "Office", "Viewer"]);
        assert_eq!(e.mime_types, ["application/pdf", "image/tiff"]);
        assert_eq!(e.exec, "evince %U");
        assert!(e.takes_urls() && e.takes_files() && e.takes_many());
        assert_eq!(e.program().as_deref(), Some("evince"));
        assert!(!e.no_display && !e.terminal);
    }

    #[test]
    fn unescapes_values_and_lists() {
        let t = "[Desktop Entry]\nType=Application\nName=A\\sB\nExec=a\nKeywords=one\\;two;three;;\nComment=x\\ty\\\\z\n";
        let e = parse_desktop("a.desktop", t).unwrap().unwrap();
        assert_eq!(e.name, "A B");
        assert_eq!(e.keywords, ["one;two", "three"]);
        assert_eq!(e.comment.as_deref(), Some("x\ty\\z"));
    }

    #[test]
    fn flags_and_non_applications() {
        let hidden = "[Desktop Entry]\nType=Application\nName=X\nExec=x\nHidden=true\n";
        assert_eq!(parse_desktop("x.desktop", hidden).unwrap(), None);
        let link = "[Desktop Entry]\nType=Link\nName=X\nURL=https://example.org\n";
        assert_eq!(parse_desktop("x.desktop", link).unwrap(), None);
        let nd =
            "[Desktop Entry]\nType=Application\nName=X\nExec=x %f\nNoDisplay=true\nTerminal=true\n";
        let e = parse_desktop("x.desktop", nd).unwrap().unwrap();
        assert!(
            e.no_display && e.terminal && e.takes_files() && !e.takes_urls() && !e.takes_many()
        );
        let window_only = "[Desktop Entry]\nType=Application\nName=QEMU\nNoDisplay=true\n";
        assert_eq!(parse_desktop("qemu.desktop", window_only).unwrap(), None);
        let dbus = "[Desktop Entry]\nType=Application\nName=X\nDBusActivatable=true\n";
        assert!(parse_desktop("x.desktop", dbus).unwrap().is_some());
    }

    #[test]
    fn rejects_malformed_files_with_a_reason() {
        for (text, needle) in [
            ("Name=X\n", "before any group"),
            ("[Other]\nName=X\n", "first group"),
            ("[Desktop Entry]\nType=Application\nExec=x\n", "no Name"),
            ("[Desktop Entry]\nName=X\nExec=x\n", "no Type"),
            ("[Desktop Entry]\nType=Application\nName=X\n", "no Exec"),
            (
                "[Desktop Entry]\nType=Application\nName=X\nExec=x\nthis line is garbage\n",
                "not a key=value",
            ),
            ("[Desktop Entry\nName=X\n", "unterminated"),
            ("# only a comment\n", "no [Desktop Entry]"),
        ] {
            let err = parse_desktop("x.desktop", text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn program_skips_wrappers() {
        let mk = |exec: &str| DesktopEntry {
            id: "x".into(),
            name: "x".into(),
            generic_name: None,
            comment: None,
            keywords: vec![],
            categories: vec![],
            mime_types: vec![],
            exec: exec.into(),
            no_display: false,
            terminal: false,
        };
        assert_eq!(
            mk("/usr/lib/firefox-esr/firefox-esr %u")
                .program()
                .as_deref(),
            Some("firefox-esr")
        );
        assert_eq!(
            mk("env GDK_BACKEND=x11 gimp-2.10 %U").program().as_deref(),
            Some("gimp-2.10")
        );
        assert_eq!(
            mk("gapplication launch org.gnome.Maps %U")
                .program()
                .as_deref(),
            Some("org.gnome.Maps")
        );
    }

    #[test]
    fn loads_a_folder_skipping_bad_files_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("good.desktop"), EVINCE).unwrap();
        std::fs::write(tmp.path().join("bad.desktop"), "garbage\n").unwrap();
        std::fs::write(
            tmp.path().join("latin1.desktop"),
            b"[Desktop Entry]\nType=Application\nName=Caf\xe9\nExec=x\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "ignored").unwrap();
        std::fs::create_dir(tmp.path().join("kde")).unwrap();
        std::fs::write(
            tmp.path().join("kde/konsole.desktop"),
            "[Desktop Entry]\nType=Application\nName=Konsole\nExec=konsole\n",
        )
        .unwrap();
        let cat = Catalog::load_dir(tmp.path()).unwrap();
        let ids: Vec<_> = cat.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["good.desktop", "kde-konsole.desktop"]);
        assert_eq!(cat.warnings.len(), 2);
        assert!(cat.warnings.iter().any(|w| w.contains("bad.desktop")));
        assert!(cat
            .warnings
            .iter()
            .any(|w| w.contains("latin1.desktop") && w.contains("UTF-8")));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Catalog::load_dir(empty.path()),
            Err(CatalogError::Empty { .. })
        ));
        assert!(matches!(
            Catalog::load_dir(&empty.path().join("nope")),
            Err(CatalogError::Dir { .. })
        ));
    }

    #[test]
    fn the_real_debian_catalog_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/catalog");
        let cat = Catalog::load_dir(&dir).unwrap();
        assert!(cat.warnings.is_empty(), "{:?}", cat.warnings);
        assert!(cat.entries.len() >= 100, "{}", cat.entries.len());
        let ff = cat.get("firefox-esr.desktop").unwrap();
        assert_eq!(ff.generic_name.as_deref(), Some("Web Browser"));
        assert!(ff.takes_urls());
        assert!(
            cat.get("gnome-background-panel.desktop")
                .unwrap()
                .no_display
        );
        assert!(cat.get("vim.desktop").unwrap().terminal);
    }
}
