//! Freedesktop Desktop Entry files: the app catalog's one source of truth.
//!
//! The guest agent builds the catalog it returns for `ListApps` from the
//! guest's `applications` folders with [`parse_desktop`], and launches an app
//! by expanding its `Exec` line with [`expand_exec`]; the host's intent engine
//! reads the same [`DesktopEntry`] values. Parsing is pure (text in, entry
//! out); reading folders is the caller's business.
//!
//! Only the `[Desktop Entry]` group is read, and only the untranslated keys
//! (`Name`, not `Name[de]`). Values are unescaped (`\s \n \t \r \\`) and
//! lists split on unescaped `;`, as the Desktop Entry Specification says. A
//! malformed file (no `[Desktop Entry]` group, a line that is not `key=value`,
//! no `Name`, an application with neither `Exec` nor `DBusActivatable=true`)
//! is an error naming the line; entries that are not applications
//! (`Type=Link`, `Type=Directory`), deleted ones (`Hidden=true`) and hidden
//! entries with no `Exec` are `Ok(None)`. `NoDisplay=true` entries are kept,
//! flagged.

use serde::{Deserialize, Serialize};

/// Largest .desktop file read; real ones are under 40 KiB.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

/// One application of the catalog, as the guest agent reports it in
/// `ListApps` and the intent engine reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Icon name (or absolute path) from `Icon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    pub no_display: bool,
    pub terminal: bool,
    /// The kinds of app (freedesktop categories such as `TerminalEmulator`
    /// or `WebBrowser`) the guest system makes this app its default for
    /// (on Debian, the `x-terminal-emulator` and `x-www-browser`
    /// alternatives); filled in by the guest agent, not read from the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_for: Vec<String>,
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
            first = words.find(|w| !w.starts_with('-') && !w.starts_with('"') && *w != "launch" && *w != "run")?;
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
    items.into_iter().map(|s| unescape(s.trim())).filter(|s| !s.is_empty()).collect()
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
                return Err(format!("line {}: unterminated group header {line:?}", n + 1));
            }
            let group = &line[1..line.len() - 1];
            if !seen_group && group != "Desktop Entry" {
                return Err(format!("line {}: the first group is [{group}], not [Desktop Entry]", n + 1));
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
            return Err(format!("line {}: not a key=value line: {:?}", n + 1, truncate(line, 60)));
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
    let get = |key: &str| fields.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let kind = get("Type").ok_or("no Type key")?;
    if get("Hidden").is_some_and(parse_bool) {
        return Ok(None);
    }
    if kind != "Application" {
        return Ok(None);
    }
    let name = get("Name").map(unescape).filter(|s| !s.trim().is_empty()).ok_or("no Name key")?;
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
        icon: opt("Icon"),
        no_display,
        terminal: get("Terminal").is_some_and(parse_bool),
        default_for: Vec::new(),
    }))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Errors of turning an `Exec` line and arguments into an argv.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("Exec line is empty")]
    Empty,
    #[error("Exec line has an unterminated quoted argument: {0:?}")]
    UnterminatedQuote(String),
    #[error("{app} takes no files or URLs, but {given} were given")]
    TakesNoArguments { app: String, given: usize },
    #[error("{app} takes one file or URL, but {given} were given")]
    TakesOneArgument { app: String, given: usize },
}

/// Split an (unescaped) `Exec` value into words, honouring the
/// specification's quoting: a word may be enclosed in double quotes, inside
/// which `\"`, `` \` ``, `\$` and `\\` stand for the character. Returns each
/// word with whether it was quoted (field codes are not expanded in quoted
/// words).
pub fn split_exec(exec: &str) -> Result<Vec<(String, bool)>, ExecError> {
    let mut words = Vec::new();
    let mut chars = exec.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if first == '"' {
            chars.next();
            let mut word = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.peek() {
                        Some(&n @ ('"' | '`' | '$' | '\\')) => {
                            word.push(n);
                            chars.next();
                        }
                        _ => word.push('\\'),
                    },
                    c => word.push(c),
                }
            }
            if !closed {
                return Err(ExecError::UnterminatedQuote(word));
            }
            words.push((word, true));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push((word, false));
        }
    }
    Ok(words)
}

/// The argv that launches `entry` with `args` (files or URLs), expanding the
/// `Exec` field codes: `%f`/`%u` one argument, `%F`/`%U` all of them, `%i`
/// `--icon NAME`, `%c` the name, `%%` a percent sign; `%k` and the
/// deprecated codes expand to nothing. Arguments the entry cannot take are an
/// error rather than silently dropped.
pub fn expand_exec(entry: &DesktopEntry, args: &[String]) -> Result<Vec<String>, ExecError> {
    let words = split_exec(&entry.exec)?;
    if words.is_empty() {
        return Err(ExecError::Empty);
    }
    if !args.is_empty() && !entry.takes_files() {
        return Err(ExecError::TakesNoArguments { app: entry.id.clone(), given: args.len() });
    }
    if args.len() > 1 && !entry.takes_many() {
        return Err(ExecError::TakesOneArgument { app: entry.id.clone(), given: args.len() });
    }
    let mut argv = Vec::with_capacity(words.len() + args.len());
    for (word, quoted) in words {
        if quoted {
            argv.push(word);
            continue;
        }
        match word.as_str() {
            "%F" | "%U" => argv.extend(args.iter().cloned()),
            "%f" | "%u" => argv.extend(args.first().cloned()),
            "%i" => {
                if let Some(icon) = &entry.icon {
                    argv.push("--icon".to_string());
                    argv.push(icon.clone());
                }
            }
            _ => {
                let expanded = expand_word(&word, entry, args);
                if !expanded.is_empty() || !word.contains('%') {
                    argv.push(expanded);
                }
            }
        }
    }
    if argv.is_empty() {
        return Err(ExecError::Empty);
    }
    Ok(argv)
}

/// Field codes inside a longer word (`--file=%f`).
fn expand_word(word: &str, entry: &DesktopEntry, args: &[String]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('f' | 'u' | 'F' | 'U') => {
                if let Some(a) = args.first() {
                    out.push_str(a);
                }
            }
            Some('c') => out.push_str(&entry.name),
            Some('i') => {
                if let Some(icon) = &entry.icon {
                    out.push_str(icon);
                }
            }
            // %k (the file's location), deprecated codes and unknown ones.
            Some(_) | None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVINCE: &str = "[Desktop Entry]\nName=Document Viewer\nName[de]=Dokumentenbetrachter\nComment=View multi-page documents\nKeywords=pdf;ps;postscript;\nExec=evince %U\nType=Application\nCategories=GNOME;GTK;Office;Viewer;\nMimeType=application/pdf;image/tiff;\n\n[Desktop Action new-window]\nName=New Window\nExec=evince --new-window\n";

    #[test]
    fn parses_main_group_only_and_untranslated_keys() {
        let e = parse_desktop("org.gnome.Evince.desktop", EVINCE).unwrap().unwrap();
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
        let t =
            "[Desktop Entry]\nType=Application\nName=A\\sB\nExec=a\nKeywords=one\\;two;three;;\nComment=x\\ty\\\\z\n";
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
        let nd = "[Desktop Entry]\nType=Application\nName=X\nExec=x %f\nNoDisplay=true\nTerminal=true\n";
        let e = parse_desktop("x.desktop", nd).unwrap().unwrap();
        assert!(e.no_display && e.terminal && e.takes_files() && !e.takes_urls() && !e.takes_many());
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
            ("[Desktop Entry]\nType=Application\nName=X\nExec=x\nthis line is garbage\n", "not a key=value"),
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
            icon: None,
            no_display: false,
            terminal: false,
            default_for: vec![],
        };
        assert_eq!(mk("/usr/lib/firefox-esr/firefox-esr %u").program().as_deref(), Some("firefox-esr"));
        assert_eq!(mk("env GDK_BACKEND=x11 gimp-2.10 %U").program().as_deref(), Some("gimp-2.10"));
        assert_eq!(mk("gapplication launch org.gnome.Maps %U").program().as_deref(), Some("org.gnome.Maps"));
    }

    fn entry(exec: &str) -> DesktopEntry {
        let text = format!("[Desktop Entry]\nType=Application\nName=Foot\nIcon=foot\nExec={exec}\n");
        parse_desktop("foot.desktop", &text).unwrap().unwrap()
    }

    #[test]
    fn exec_expands_field_codes() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(expand_exec(&entry("foot"), &[]).unwrap(), a(&["foot"]));
        assert_eq!(
            expand_exec(&entry("evince %U"), &a(&["/a.pdf", "/b.pdf"])).unwrap(),
            a(&["evince", "/a.pdf", "/b.pdf"])
        );
        assert_eq!(expand_exec(&entry("evince %U"), &[]).unwrap(), a(&["evince"]));
        assert_eq!(expand_exec(&entry("gimp %f"), &a(&["/x.png"])).unwrap(), a(&["gimp", "/x.png"]));
        assert_eq!(
            expand_exec(&entry("app %i %c 100%% --f=%f %k %d"), &a(&["/x"])).unwrap(),
            a(&["app", "--icon", "foot", "Foot", "100%", "--f=/x"])
        );
        assert_eq!(
            expand_exec(&entry(r#"sh -c "echo \\"$HOME\\" %f""#), &[]).unwrap(),
            a(&["sh", "-c", "echo \"$HOME\" %f"])
        );
    }

    #[test]
    fn exec_refuses_arguments_the_app_cannot_take() {
        let a = vec!["/x".to_string(), "/y".to_string()];
        assert!(matches!(expand_exec(&entry("foot"), &a[..1]), Err(ExecError::TakesNoArguments { given: 1, .. })));
        assert!(matches!(expand_exec(&entry("gimp %f"), &a), Err(ExecError::TakesOneArgument { given: 2, .. })));
        assert!(matches!(expand_exec(&entry(r#"sh "unterminated"#), &[]), Err(ExecError::UnterminatedQuote(_))));
        assert!(matches!(expand_exec(&entry("%k"), &[]), Err(ExecError::Empty)));
    }

    #[test]
    fn entries_round_trip_through_json() {
        let e = entry("foot %U");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<DesktopEntry>(&json).unwrap(), e);
    }

    #[test]
    fn real_debian_entries_parse_and_expand() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/tests/catalog");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_none_or(|x| x != "desktop") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let id = p.file_name().unwrap().to_string_lossy().to_string();
            if let Some(e) = parse_desktop(&id, &text).unwrap_or_else(|err| panic!("{}: {err}", p.display())) {
                if !e.exec.is_empty() {
                    let argv = expand_exec(&e, &[]).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
                    assert!(!argv[0].contains('%'), "{}: {argv:?}", p.display());
                }
                n += 1;
            }
        }
        assert!(n > 100, "only {n} entries under {}", dir.display());
    }
}
