//! Finds the Debian mirror in this machine's apt configuration.
//!
//! deb822 sources (`/etc/apt/sources.list.d/*.sources`, `debian.sources`
//! first) are preferred over one-line `deb` entries in
//! `/etc/apt/sources.list`. An entry whose suites name the requested suite
//! wins; otherwise the first entry carrying a plain release suite (no `-`,
//! i.e. not `-security`, `-updates` or `-backports`, which live on other
//! archives or are partial), since that URI serves every release suite.

use std::path::Path;

use crate::ImageError;

const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const SOURCES_LIST: &str = "/etc/apt/sources.list";

/// One apt source entry: its URIs and suites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
}

/// The mirror URI for `suite` from the machine's apt configuration.
pub fn mirror_for(suite: &str) -> Result<String, ImageError> {
    let mut sources = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(SOURCES_DIR)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "sources"));
    files.sort_by_key(|p| (p.file_name().is_none_or(|n| n != "debian.sources"), p.clone()));
    for f in &files {
        if let Ok(text) = std::fs::read_to_string(f) {
            sources.extend(parse_deb822(&text));
        }
    }
    if let Ok(text) = std::fs::read_to_string(SOURCES_LIST) {
        sources.extend(parse_one_line(&text));
    }
    pick(&sources, suite)
        .ok_or_else(|| ImageError::NoMirror { searched: format!("{SOURCES_DIR}/*.sources and {SOURCES_LIST}") })
}

pub(crate) fn pick(sources: &[Source], suite: &str) -> Option<String> {
    let exact = sources.iter().find(|s| s.suites.iter().any(|x| x == suite));
    let release = || sources.iter().find(|s| s.suites.iter().any(|x| !x.contains('-') && !x.contains('/')));
    exact.or_else(release).and_then(|s| s.uris.first()).map(|u| u.trim_end_matches('/').to_string())
}

pub(crate) fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut uris, mut suites, mut types, mut enabled) = (Vec::new(), Vec::new(), Vec::new(), true);
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let words = || value.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            match key.trim().to_ascii_lowercase().as_str() {
                "uris" => uris = words(),
                "suites" => suites = words(),
                "types" => types = words(),
                "enabled" => enabled = value.trim() != "no",
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") && !uris.is_empty() {
            out.push(Source { uris, suites });
        }
    }
    out
}

pub(crate) fn parse_one_line(text: &str) -> Vec<Source> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let mut words = line.split_whitespace().peekable();
            if words.next()? != "deb" {
                return None;
            }
            if words.peek()?.starts_with('[') {
                // Skip an option block: `[arch=amd64 signed-by=...]`.
                for w in words.by_ref() {
                    if w.ends_with(']') {
                        break;
                    }
                }
            }
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some(Source { uris: vec![uri], suites: vec![suite] })
        })
        .collect()
}

/// The Debian archive keyring mmdebstrap verifies the suite with.
pub(crate) fn keyring() -> Option<&'static Path> {
    let p = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    p.exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";

    #[test]
    fn release_suite_entry_serves_other_suites() {
        let s = parse_deb822(DEB822);
        assert_eq!(s.len(), 2);
        assert_eq!(pick(&s, "trixie").as_deref(), Some("http://mirror.example/debian"));
    }

    #[test]
    fn exact_suite_wins() {
        let mut s = parse_deb822(DEB822);
        s.push(Source { uris: vec!["http://other.example/debian/".into()], suites: vec!["trixie".into()] });
        assert_eq!(pick(&s, "trixie").as_deref(), Some("http://other.example/debian"));
    }

    #[test]
    fn security_only_is_not_a_mirror() {
        let s = parse_deb822("Types: deb\nURIs: http://m.example/debian-security\nSuites: trixie-security\n");
        assert_eq!(pick(&s, "trixie"), None);
    }

    #[test]
    fn one_line_sources() {
        let s = parse_one_line("# x\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\ndeb-src http://s.example/debian bookworm main\n");
        assert_eq!(s, vec![Source { uris: vec!["http://m.example/debian".into()], suites: vec!["bookworm".into()] }]);
    }

    #[test]
    fn disabled_and_source_entries_are_skipped() {
        let s = parse_deb822("Types: deb-src\nURIs: http://a.example/debian\nSuites: trixie\n\nTypes: deb\nEnabled: no\nURIs: http://b.example/debian\nSuites: trixie\n");
        assert!(s.is_empty());
    }
}
