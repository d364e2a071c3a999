//! The app catalog: the `.desktop` files of one or more folders, loaded.
//!
//! Parsing one file is the contract's ([`rayos_contract::desktop`]), so the
//! host reads entries exactly as the guest agent reports them.
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
    Dir { path: PathBuf, source: std::io::Error },
    #[error("catalog {path}: no .desktop files in it")]
    Empty { path: PathBuf },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "no application folders found ($XDG_DATA_HOME/applications, $XDG_DATA_DIRS/*/applications); pass --catalog DIR"
    )]
    NoFolders,
}

pub use rayos_contract::desktop::{parse_desktop, DesktopEntry, MAX_FILE_BYTES};

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
        Self { entries, warnings: Vec::new() }
    }

    /// Load every `*.desktop` file under `dir` (recursively). Malformed files
    /// are skipped, each with a `tracing` warning and a line in `warnings`.
    pub fn load_dir(dir: &Path) -> Result<Self, CatalogError> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        if files.is_empty() {
            return Err(CatalogError::Empty { path: dir.to_path_buf() });
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
    dirs.extend(data_dirs.split(':').filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join("applications")));
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), CatalogError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CatalogError::Dir { path: dir.to_path_buf(), source })?;
    for ent in rd {
        let ent = ent.map_err(|source| CatalogError::Dir { path: dir.to_path_buf(), source })?;
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
    let malformed = |reason: String| CatalogError::Malformed { path: path.to_path_buf(), reason };
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

    const EVINCE: &str = "[Desktop Entry]\nName=Document Viewer\nComment=View multi-page documents\nExec=evince %U\nType=Application\nMimeType=application/pdf;\n";

    #[test]
    fn loads_a_folder_skipping_bad_files_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("good.desktop"), EVINCE).unwrap();
        std::fs::write(tmp.path().join("bad.desktop"), "garbage\n").unwrap();
        std::fs::write(tmp.path().join("latin1.desktop"), b"[Desktop Entry]\nType=Application\nName=Caf\xe9\nExec=x\n")
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
        assert!(cat.warnings.iter().any(|w| w.contains("latin1.desktop") && w.contains("UTF-8")));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(Catalog::load_dir(empty.path()), Err(CatalogError::Empty { .. })));
        assert!(matches!(Catalog::load_dir(&empty.path().join("nope")), Err(CatalogError::Dir { .. })));
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
        assert!(cat.get("gnome-background-panel.desktop").unwrap().no_display);
        assert!(cat.get("vim.desktop").unwrap().terminal);
    }
}
