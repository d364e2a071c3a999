//! How apps are described to the model and to the lexical matcher.
//!
//! Each catalog entry becomes several short *views* (texts embedded on their
//! own, see [`super::engine`] for why): its Name, GenericName, Comment, each
//! Keyword, what its freedesktop Categories mean ([`category_phrases`]), and
//! each kind of file it opens. The same text also yields the stemmed words
//! of the lexical score and the words that *name* the app (its program, the
//! last part of a reverse-DNS ID) when few other apps use them.

use std::collections::{HashMap, HashSet};

use super::catalog::DesktopEntry;

/// Errors of describing apps (none: pure functions; kept for the one-enum rule).
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {}

/// Which facet of an app a vector describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    Title,
    Summary,
    Keywords,
    Category,
    Files,
}

impl ViewKind {
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            ViewKind::Title => "title",
            ViewKind::Summary => "summary",
            ViewKind::Keywords => "keyword",
            ViewKind::Category => "category",
            ViewKind::Files => "files",
        }
    }
}

pub(crate) struct View {
    pub(crate) app: usize,
    pub(crate) kind: ViewKind,
    pub(crate) text: String,
}

/// Freedesktop category → what an app of that category is and is for, in a
/// few short phrases (each embedded as its own view). Written from the
/// registered categories of the Desktop Menu Specification, as a dictionary
/// would define them; main categories (`Office`, `System`…) are too broad to
/// say anything and have none.
pub fn category_phrases(cat: &str) -> &'static [&'static str] {
    match cat {
        "TerminalEmulator" => &["terminal emulator", "command line shell"],
        "WebBrowser" => &["web browser", "browse websites and search the internet"],
        "Email" => &["email client", "read, write and send email messages"],
        "InstantMessaging" => &["instant messenger", "chat with people online"],
        "Chat" => &["chat with people online"],
        "IRCClient" => &["IRC client", "chat in IRC channels on IRC networks"],
        "Feed" => &["news feed reader"],
        "News" => &["news reader"],
        "FileTransfer" => &["file transfer", "download and upload files"],
        "P2P" => &["peer-to-peer file sharing"],
        "RemoteAccess" => &["remote desktop", "control another computer over the network"],
        "Telephony" => &["internet telephone calls"],
        "VideoConference" => &["video calls and conferences"],
        "TextEditor" => &["text editor", "edit plain text files"],
        "IDE" => &["integrated development environment", "write and edit program source code"],
        "Development" => &["software development and programming"],
        "Debugger" => &["debugger for programs"],
        "FileManager" => &["file manager", "browse files and folders"],
        "RasterGraphics" => &["raster image editor", "edit and retouch photos and pictures"],
        "VectorGraphics" => &["vector graphics editor", "draw illustrations, logos and diagrams"],
        "3DGraphics" => &["3D modelling and rendering"],
        "Photography" => &["photo management", "organise and edit photographs"],
        "Scanning" => &["scanner software", "scan paper documents and photos"],
        "OCR" => &["text recognition in scanned images"],
        "Viewer" => &["viewer to look at files"],
        "Player" => &["media player", "play media files"],
        "Music" => &["music"],
        "Recorder" => &["recorder"],
        "AudioVideoEditing" => &["audio and video editing"],
        "Mixer" => &["sound mixer", "audio volume levels"],
        "Tuner" | "TV" => &["television"],
        "DiskBurning" => &["burn CDs and DVDs"],
        "WordProcessor" => &["word processor", "write and format text documents"],
        "Spreadsheet" => &["spreadsheet", "tables of numbers with formulas and charts"],
        "Presentation" => &["presentation program", "slides for talks and slideshows"],
        "Chart" => &["charts and diagrams"],
        "Database" => &["database"],
        "Calendar" => &["calendar", "appointments, meetings and events by date"],
        "ContactManagement" => &["address book", "contact details of people: phone numbers, email and addresses"],
        "Finance" => &["personal finance and accounting"],
        "Dictionary" => &["dictionary"],
        "Calculator" => &["calculator", "arithmetic and calculations"],
        "Clock" => &["clock"],
        "Archiving" | "Compression" => &["archive manager", "compress files and extract archives"],
        "Monitor" => &["system monitor", "running processes and their CPU and memory use"],
        "Security" => &["security"],
        "Accessibility" => &["accessibility aids"],
        "Maps" => &["maps and navigation"],
        "Documentation" => &["documentation and help"],
        "PackageManager" => &["software installer"],
        "Printing" => &["printer setup"],
        "HardwareSettings" => &["hardware settings"],
        "DesktopSettings" => &["desktop settings"],
        "Game" => &["game"],
        "Education" => &["education"],
        "Science" => &["science"],
        _ => &[],
    }
}

/// What a MIME type is, in words, for the `files` view.
pub(crate) fn mime_kind(m: &str) -> Option<&'static str> {
    let (major, minor) = m.split_once('/')?;
    Some(match (major, minor) {
        ("image", _) => "images",
        ("video", _) => "videos",
        ("audio", _) => "music and audio",
        ("text", "html") | ("application", "xhtml+xml") => "web pages",
        ("x-scheme-handler", "http" | "https") => "web links",
        ("x-scheme-handler", "mailto") => "email addresses",
        ("x-scheme-handler", "magnet") | ("application", "x-bittorrent") => "torrents",
        ("inode", "directory") => "folders",
        ("application", "pdf") => "PDF documents",
        ("application", "postscript") => "PostScript documents",
        ("application", "epub+zip") => "ebooks",
        ("font", _) | ("application", "x-font-ttf") => "fonts",
        ("text", "calendar") => "calendar events",
        ("text", "vcard" | "x-vcard") => "contact cards",
        ("text", "plain") => "text files",
        (_, s) if s.contains("comicbook") || s.contains("x-cb") => "comic books",
        (_, s) if s.contains("spreadsheet") || s.contains("excel") => "spreadsheets",
        (_, s) if s.contains("presentation") || s.contains("powerpoint") => "presentations",
        (_, s) if s.contains("wordprocessing") || s.contains("msword") || s.contains("opendocument.text") => {
            "documents"
        }
        (_, s) if s.contains("zip") || s.contains("tar") || s.contains("compressed") || s.contains("rar") => "archives",
        ("text", _) | ("application", "x-shellscript") => "source code",
        _ => return None,
    })
}

pub(crate) fn words(s: &str) -> Vec<String> {
    s.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_string()).collect()
}

const STOP: &[&str] = &[
    "the",
    "and",
    "for",
    "app",
    "application",
    "program",
    "open",
    "org",
    "com",
    "github",
    "io",
    "desktop",
    "gnome",
    "kde",
    "xfce",
    "gtk",
    "qt",
    "gnu",
    "new",
    "run",
    "start",
    "client",
    "server",
    "manager",
    "viewer",
    "editor",
    "player",
    "settings",
    "panel",
];

pub(crate) fn contains_seq(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Words that carry no intent.
const LEX_STOP: &[&str] = &[
    "a",
    "an",
    "the",
    "i",
    "me",
    "my",
    "mine",
    "we",
    "our",
    "you",
    "your",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "to",
    "of",
    "in",
    "on",
    "at",
    "by",
    "for",
    "from",
    "with",
    "into",
    "onto",
    "up",
    "out",
    "about",
    "and",
    "or",
    "but",
    "so",
    "if",
    "is",
    "are",
    "was",
    "be",
    "been",
    "am",
    "do",
    "does",
    "did",
    "have",
    "has",
    "had",
    "can",
    "could",
    "would",
    "will",
    "shall",
    "should",
    "may",
    "might",
    "must",
    "want",
    "need",
    "like",
    "please",
    "some",
    "any",
    "all",
    "just",
    "let",
    "get",
    "give",
    "open",
    "start",
    "launch",
    "run",
    "use",
    "show",
    "app",
    "application",
    "program",
    "thing",
    "something",
    "what",
    "which",
    "who",
    "how",
    "when",
    "where",
    "there",
    "here",
    "now",
    "new",
    "too",
    "very",
    "much",
    "many",
    "more",
    "most",
    "not",
    "no",
    "yes",
    "s",
    "t",
    "d",
    "ll",
    "m",
    "re",
    "ve",
    "im",
    "via",
    "using",
    "etc",
    "and",
    "gnome",
    "kde",
    "xfce",
    "gtk",
    "qt",
];

/// A crude English stemmer: enough to meet "channels"/"channel", "recording"/"record".
pub(crate) fn stem(w: &str) -> String {
    let n = w.len();
    let cut = |k: usize| w[..n - k].to_string();
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..n - 3]);
    }
    if n > 5 && w.ends_with("ing") {
        return cut(3);
    }
    if n > 4 && w.ends_with("ed") {
        return cut(2);
    }
    if n > 4 && (w.ends_with("ses") || w.ends_with("xes") || w.ends_with("ches") || w.ends_with("shes")) {
        return cut(2);
    }
    if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        return cut(1);
    }
    w.to_string()
}

/// Stemmed informative words of a text.
pub(crate) fn lex_terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !LEX_STOP.contains(&w.as_str()) && !w.chars().all(|c| c.is_ascii_digit()))
        .map(|w| stem(&w))
        .collect()
}

/// Everything an app is described with, as stemmed words.
pub(crate) fn app_terms(e: &DesktopEntry) -> HashSet<String> {
    let mut text = format!(
        "{} {} {} {}",
        e.name,
        e.generic_name.as_deref().unwrap_or(""),
        e.comment.as_deref().unwrap_or(""),
        e.keywords.join(" ")
    );
    for c in &e.categories {
        for p in category_phrases(c) {
            text.push(' ');
            text.push_str(p);
        }
    }
    if let Some(p) = e.program() {
        text.push(' ');
        text.push_str(&p);
    }
    lex_terms(&text).into_iter().collect()
}

pub(crate) fn build_views(i: usize, e: &DesktopEntry) -> Vec<View> {
    let mut v = Vec::new();
    let mut push = |kind, text: String| {
        let text = text.trim().to_string();
        if !text.is_empty() && !v.iter().any(|x: &View| x.text == text) {
            v.push(View { app: i, kind, text });
        }
    };
    push(ViewKind::Title, e.name.clone());
    if let Some(g) = &e.generic_name {
        push(ViewKind::Title, g.clone());
    }
    if let Some(c) = &e.comment {
        push(ViewKind::Summary, c.clone());
    }
    // Each keyword on its own: a long list embedded as one text says little.
    let mut seen_kw: Vec<String> = Vec::new();
    for k in e.keywords.iter().take(24) {
        let lk = k.to_lowercase();
        if k.chars().count() >= 2 && !seen_kw.contains(&lk) {
            seen_kw.push(lk);
            push(ViewKind::Keywords, k.clone());
        }
    }
    for c in &e.categories {
        for p in category_phrases(c) {
            push(ViewKind::Category, p.to_string());
        }
    }
    // One view per kind of file opened, the kinds with most MIME types first.
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for m in &e.mime_types {
        if let Some(k) = mime_kind(m) {
            match kinds.iter_mut().find(|(x, _)| *x == k) {
                Some((_, n)) => *n += 1,
                None => kinds.push((k, 1)),
            }
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    for (k, _) in kinds.iter().take(4) {
        push(ViewKind::Files, format!("opens {k}"));
    }
    v
}

/// Words and word sequences that name an app: its program (`gnome-terminal` →
/// "gnome terminal"; version suffixes dropped), the last part of its ID
/// of a reverse-DNS ID (`org.gnome.Nautilus` → "nautilus"). Names like "Files"
/// or "Screen" are left out: they are ordinary words.
pub(crate) fn candidate_terms(e: &DesktopEntry) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut add = |w: Vec<String>| {
        let w: Vec<String> = w.into_iter().filter(|x| !x.chars().all(|c| c.is_ascii_digit())).collect();
        if w.is_empty() || (w.len() == 1 && (w[0].len() < 3 || STOP.contains(&w[0].as_str()))) {
            return;
        }
        if !out.contains(&w) {
            out.push(w);
        }
    };
    if let Some(p) = e.program() {
        let ws = words(&p);
        for w in &ws {
            add(vec![w.clone()]);
        }
        add(ws);
    }
    // Reverse-DNS IDs name the app in their last part (org.gnome.Rhythmbox3 → rhythmbox).
    let stem = e.id.trim_end_matches(".desktop");
    if stem.split('.').count() >= 3 {
        let last = stem.rsplit('.').next().unwrap_or(stem).trim_end_matches(|c: char| c.is_ascii_digit());
        let ws = words(last);
        for w in &ws {
            add(vec![w.clone()]);
        }
        add(ws);
    }
    out
}

/// All the words an app is described with (for name-term rarity).
pub(crate) fn described_words(e: &DesktopEntry) -> Vec<String> {
    let mut text = format!(
        "{} {} {} {} {}",
        e.name,
        e.generic_name.as_deref().unwrap_or(""),
        e.comment.as_deref().unwrap_or(""),
        e.keywords.join(" "),
        e.id.trim_end_matches(".desktop")
    );
    if let Some(p) = e.program() {
        text.push(' ');
        text.push_str(&p);
    }
    words(&text)
}

/// The name terms of each app that at most `max_families` program families
/// use in their descriptions. `apps` is (entry, family) per app. One word
/// of a compound name (`terminal` of `weston-terminal`) names the app only
/// when no other family uses it: otherwise it is an ordinary word that
/// happens to be in the name, and the request "open a terminal" would name
/// `weston-terminal` rather than ask for any terminal.
pub(crate) fn rare_terms(apps: &[(&DesktopEntry, &str)], max_families: usize) -> Vec<Vec<Vec<String>>> {
    let described: Vec<Vec<String>> = apps.iter().map(|(e, _)| described_words(e)).collect();
    let mut index: HashMap<&str, HashSet<&str>> = HashMap::new();
    for ((_, family), ws) in apps.iter().zip(&described) {
        for w in ws {
            index.entry(w.as_str()).or_default().insert(family);
        }
    }
    // For each word, which apps use it (to check sequences only there).
    let mut by_word: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, ws) in described.iter().enumerate() {
        let mut seen = HashSet::new();
        for w in ws {
            if seen.insert(w.as_str()) {
                by_word.entry(w.as_str()).or_default().push(i);
            }
        }
    }
    apps.iter()
        .map(|(e, _)| {
            let terms = candidate_terms(e);
            let part_of_compound =
                |t: &Vec<String>| t.len() == 1 && terms.iter().any(|c| c.len() > 1 && c.contains(&t[0]));
            terms
                .iter()
                .filter(|t| {
                    let rarest = t.iter().min_by_key(|w| index.get(w.as_str()).map_or(0, |s| s.len())).unwrap();
                    let Some(users) = by_word.get(rarest.as_str()) else {
                        return true;
                    };
                    let families: HashSet<&str> =
                        users.iter().filter(|&&i| contains_seq(&described[i], t)).map(|&i| apps[i].1).collect();
                    families.len() <= if part_of_compound(t) { 1 } else { max_families }
                })
                .cloned()
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::catalog::parse_desktop;

    fn entry(id: &str, body: &str) -> DesktopEntry {
        parse_desktop(id, &format!("[Desktop Entry]\nType=Application\n{body}")).unwrap().unwrap()
    }

    #[test]
    fn views_cover_every_facet_once() {
        let e = entry(
            "org.gnome.Evince.desktop",
            "Name=Document Viewer\nComment=View multi-page documents\nKeywords=pdf;PDF;ps;x;\nExec=evince %U\nCategories=GNOME;Office;Viewer;\nMimeType=application/pdf;application/x-bzpdf;image/tiff;\n",
        );
        let v = build_views(7, &e);
        let texts: Vec<(&str, &str)> = v.iter().map(|x| (x.kind.label(), x.text.as_str())).collect();
        assert!(texts.contains(&("title", "Document Viewer")));
        assert!(texts.contains(&("summary", "View multi-page documents")));
        assert!(texts.contains(&("keyword", "pdf")));
        assert!(!texts.contains(&("keyword", "PDF")), "keywords deduplicated case-insensitively");
        assert!(!texts.iter().any(|(_, t)| *t == "x"), "one-letter keywords dropped");
        assert!(texts.contains(&("category", "viewer to look at files")));
        assert_eq!(texts.iter().find(|(k, _)| *k == "files"), Some(&("files", "opens PDF documents")));
        assert!(v.iter().all(|x| x.app == 7));
        assert!(category_phrases("Office").is_empty(), "main categories say nothing");
    }

    #[test]
    fn stems_and_lexical_terms() {
        assert_eq!(stem("channels"), "channel");
        assert_eq!(stem("recording"), "record");
        assert_eq!(stem("libraries"), "library");
        assert_eq!(stem("process"), "process");
        assert_eq!(lex_terms("Open the IRC channels, please"), ["irc", "channel"]);
        let e = entry(
            "a.desktop",
            "Name=HexChat\nComment=Chat with other people online\nExec=hexchat\nCategories=IRCClient;\n",
        );
        let t = app_terms(&e);
        assert!(t.contains("chat") && t.contains("irc") && t.contains("hexchat") && t.contains("channel"));
    }

    #[test]
    fn name_terms_are_program_and_id_words_used_by_few_programs() {
        let vlc = entry("vlc.desktop", "Name=VLC media player\nExec=/usr/bin/vlc %U\n");
        let files =
            entry("org.gnome.Nautilus.desktop", "Name=Files\nComment=Access and organize files\nExec=nautilus %U\n");
        let mut others = Vec::new();
        for i in 0..5 {
            others.push(entry(
                &format!("t{i}.desktop"),
                &format!("Name=Tool{i}\nComment=media player number {i}\nExec=tool{i}\n"),
            ));
        }
        let mut all: Vec<(&DesktopEntry, &str)> = vec![(&vlc, "vlc"), (&files, "nautilus")];
        let fams: Vec<String> = (0..5).map(|i| format!("tool{i}")).collect();
        for (e, f) in others.iter().zip(&fams) {
            all.push((e, f.as_str()));
        }
        let terms = rare_terms(&all, 3);
        assert!(terms[0].contains(&vec!["vlc".to_string()]));
        assert!(terms[1].contains(&vec!["nautilus".to_string()]));
        assert!(!terms[1].contains(&vec!["files".to_string()]), "a Name word is not a name term");
        assert!(terms[0].iter().all(|t| t != &vec!["media".to_string()]));
    }

    #[test]
    fn a_shared_word_of_a_compound_name_does_not_name_the_app() {
        let wt = entry("weston-terminal.desktop", "Name=Weston Terminal\nExec=weston-terminal\n");
        let foot = entry("foot.desktop", "Name=Foot\nGenericName=Terminal\nExec=foot\n");
        let flower = entry("weston-flower.desktop", "Name=Flower\nExec=weston-flower\n");
        let all: Vec<(&DesktopEntry, &str)> =
            vec![(&wt, "weston-terminal"), (&foot, "foot"), (&flower, "weston-flower")];
        let terms = rare_terms(&all, 3);
        assert!(terms[0].contains(&vec!["weston".to_string(), "terminal".to_string()]), "{:?}", terms[0]);
        assert!(!terms[0].contains(&vec!["terminal".to_string()]), "foot is a terminal too: {:?}", terms[0]);
        assert!(!terms[0].contains(&vec!["weston".to_string()]), "two weston programs: {:?}", terms[0]);
        assert!(terms[1].contains(&vec!["foot".to_string()]));
    }
}
