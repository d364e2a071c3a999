//! Arguments in a request: URLs, paths and file names, pulled out for the launch.
//!
//! A request like "open ~/Documents/invoice.pdf" carries its argument in the
//! text. Extraction is lexical and conservative:
//! - URLs: `scheme://…` and `mailto:…`; bare domains (`wikipedia.org`,
//!   `example.com/page`) whose last label is a common top-level domain become
//!   `https://` URLs;
//! - paths: words starting with `/`, `~/`, `./`, `../`, or `~`; quoted text
//!   (`'My Photos/a.jpg'`) that looks like a path;
//! - file names: words with a known file extension (`report.docx`);
//! - the XDG user folders when named as folders ("my Downloads folder" →
//!   `~/Downloads`).
//!
//! Each argument gets a MIME type from its extension (a small built-in table),
//! `inode/directory` for folders, and `x-scheme-handler/<scheme>` for URLs. The
//! engine embeds the request with each argument replaced by a short phrase
//! ("a PDF document"), so "open invoice-2024.pdf" is matched on what it asks for,
//! not on the letters of the file name; and it prefers apps whose `MimeType`
//! accepts the argument. Arguments are passed as separate argv items, never
//! through a shell; `~` is left for the guest to expand.

/// Errors of argument extraction (none today: extraction never fails; kept so
/// the module follows the one-error-enum rule if it grows checks).
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {}

/// What kind of argument was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgKind {
    Url,
    Path,
}

/// One argument of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// The value passed to the app.
    pub value: String,
    pub kind: ArgKind,
    /// MIME type, if known (`application/pdf`, `inode/directory`, `x-scheme-handler/https`).
    pub mime: Option<&'static str>,
    /// What the engine embeds in place of the argument ("a PDF document").
    pub phrase: &'static str,
}

/// The request split into its arguments and the text the model sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub args: Vec<Arg>,
    /// The request with arguments replaced by their phrases.
    pub text: String,
}

/// Extension → (MIME type, phrase). Compound extensions come first.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("tar.gz", "application/x-compressed-tar", "a compressed archive"),
    ("tar.xz", "application/x-xz-compressed-tar", "a compressed archive"),
    ("tar.bz2", "application/x-bzip-compressed-tar", "a compressed archive"),
    ("tar.zst", "application/x-zstd-compressed-tar", "a compressed archive"),
    ("tgz", "application/x-compressed-tar", "a compressed archive"),
    ("tar", "application/x-tar", "an archive"),
    ("zip", "application/zip", "a zip archive"),
    ("7z", "application/x-7z-compressed", "a compressed archive"),
    ("rar", "application/vnd.rar", "a compressed archive"),
    ("gz", "application/gzip", "a compressed file"),
    ("xz", "application/x-xz", "a compressed file"),
    ("bz2", "application/x-bzip", "a compressed file"),
    ("jpg", "image/jpeg", "a photo"),
    ("jpeg", "image/jpeg", "a photo"),
    ("png", "image/png", "an image"),
    ("gif", "image/gif", "an image"),
    ("webp", "image/webp", "an image"),
    ("bmp", "image/bmp", "an image"),
    ("tif", "image/tiff", "an image"),
    ("tiff", "image/tiff", "an image"),
    ("heic", "image/heic", "a photo"),
    ("avif", "image/avif", "an image"),
    ("raw", "image/x-dcraw", "a raw camera photo"),
    ("cr2", "image/x-canon-cr2", "a raw camera photo"),
    ("nef", "image/x-nikon-nef", "a raw camera photo"),
    ("svg", "image/svg+xml", "an SVG vector drawing"),
    ("xcf", "image/x-xcf", "a GIMP image"),
    ("psd", "image/vnd.adobe.photoshop", "a Photoshop image"),
    ("ico", "image/x-icon", "an icon image"),
    ("pdf", "application/pdf", "a PDF document"),
    ("ps", "application/postscript", "a PostScript document"),
    ("eps", "image/x-eps", "a PostScript document"),
    ("djvu", "image/vnd.djvu", "a scanned document"),
    ("epub", "application/epub+zip", "an ebook"),
    ("cbz", "application/vnd.comicbook+zip", "a comic book"),
    ("cbr", "application/vnd.comicbook-rar", "a comic book"),
    ("odt", "application/vnd.oasis.opendocument.text", "a text document"),
    ("doc", "application/msword", "a Word document"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "a Word document"),
    ("rtf", "application/rtf", "a text document"),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet", "a spreadsheet"),
    ("xls", "application/vnd.ms-excel", "a spreadsheet"),
    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "a spreadsheet"),
    ("csv", "text/csv", "a spreadsheet of values"),
    ("odp", "application/vnd.oasis.opendocument.presentation", "a presentation"),
    ("ppt", "application/vnd.ms-powerpoint", "a presentation"),
    ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", "a presentation"),
    ("odg", "application/vnd.oasis.opendocument.graphics", "a drawing"),
    ("txt", "text/plain", "a text file"),
    ("md", "text/markdown", "a text file"),
    ("log", "text/x-log", "a log file"),
    ("conf", "text/plain", "a configuration file"),
    ("cfg", "text/plain", "a configuration file"),
    ("ini", "text/plain", "a configuration file"),
    ("toml", "text/plain", "a configuration file"),
    ("yaml", "application/x-yaml", "a configuration file"),
    ("yml", "application/x-yaml", "a configuration file"),
    ("json", "application/json", "a JSON file"),
    ("xml", "application/xml", "an XML file"),
    ("html", "text/html", "a web page"),
    ("htm", "text/html", "a web page"),
    ("css", "text/css", "source code"),
    ("js", "text/javascript", "source code"),
    ("ts", "text/x-typescript", "source code"),
    ("py", "text/x-python", "Python source code"),
    ("rs", "text/x-rust", "source code"),
    ("c", "text/x-csrc", "C source code"),
    ("h", "text/x-chdr", "C source code"),
    ("cpp", "text/x-c++src", "C++ source code"),
    ("java", "text/x-java", "source code"),
    ("go", "text/x-go", "source code"),
    ("sh", "application/x-shellscript", "a shell script"),
    ("mp3", "audio/mpeg", "a song"),
    ("ogg", "audio/ogg", "a song"),
    ("oga", "audio/ogg", "a song"),
    ("opus", "audio/ogg", "a song"),
    ("flac", "audio/flac", "a song"),
    ("wav", "audio/x-wav", "an audio recording"),
    ("m4a", "audio/mp4", "a song"),
    ("aac", "audio/aac", "a song"),
    ("mp4", "video/mp4", "a video"),
    ("mkv", "video/x-matroska", "a video"),
    ("webm", "video/webm", "a video"),
    ("avi", "video/x-msvideo", "a video"),
    ("mov", "video/quicktime", "a video"),
    ("m4v", "video/mp4", "a video"),
    ("torrent", "application/x-bittorrent", "a torrent"),
    ("iso", "application/x-cd-image", "a disc image"),
    ("ttf", "font/ttf", "a font"),
    ("otf", "font/otf", "a font"),
    ("ics", "text/calendar", "a calendar event"),
    ("vcf", "text/vcard", "a contact card"),
    ("eml", "message/rfc822", "an email message"),
    ("kdbx", "application/x-keepass2", "a password database"),
];

/// Common top-level domains: a bare `name.tld` word is taken as a web address.
const TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "io", "dev", "app", "info", "eu", "uk", "de", "fr", "nl", "es", "it", "pt",
    "se", "no", "fi", "dk", "ch", "at", "be", "pl", "cz", "ru", "jp", "cn", "in", "br", "ca", "au", "us", "co", "me",
    "tv", "fm", "ai", "xyz",
];

/// XDG user folders recognised by name.
const USER_DIRS: &[&str] = &["Desktop", "Documents", "Downloads", "Music", "Pictures", "Public", "Templates", "Videos"];

/// MIME type and phrase of a file name, from its extension.
pub fn mime_of(name: &str) -> Option<(&'static str, &'static str)> {
    let lower = name.to_ascii_lowercase();
    let file = lower.rsplit('/').next().unwrap_or(&lower);
    EXTENSIONS
        .iter()
        .find(|(ext, _, _)| {
            file.len() > ext.len() + 1 && file.ends_with(ext) && file.as_bytes()[file.len() - ext.len() - 1] == b'.'
        })
        .map(|(_, m, p)| (*m, *p))
}

/// Whether an app that lists `accepted` can open `mime` (exact, `type/*`,
/// or any `text/*` by a `text/plain` app, as shared-mime-info's subclassing says).
pub fn mime_accepts(accepted: &[String], mime: &str) -> bool {
    let major = mime.split('/').next().unwrap_or("");
    accepted.iter().any(|a| {
        a == mime
            || (a.ends_with("/*") && a.split('/').next() == Some(major))
            || (a == "text/plain"
                && (major == "text"
                    || mime == "application/x-shellscript"
                    || mime == "application/json"
                    || mime == "application/x-yaml"
                    || mime == "application/xml"))
            || (mime == "image/jpeg" && a == "image/jpg")
    })
}

const TRAILING: &[char] = &['.', ',', ';', ':', '!', '?', ')', ']', '}', '"', '\'', '`'];
const LEADING: &[char] = &['(', '[', '{', '"', '\'', '`'];

fn classify(word: &str) -> Option<Arg> {
    let w = word.trim_start_matches(LEADING).trim_end_matches(TRAILING);
    if w.len() < 2 {
        return None;
    }
    // scheme://... or mailto:
    if let Some(idx) = w.find("://") {
        let scheme = &w[..idx];
        if !scheme.is_empty()
            && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            && w.len() > idx + 3
        {
            let scheme = scheme.to_ascii_lowercase();
            let (mime, phrase) = match scheme.as_str() {
                "http" | "https" => ("x-scheme-handler/https", "a web page"),
                "ftp" | "sftp" => ("x-scheme-handler/ftp", "a file server"),
                "file" => ("inode/directory", "a file"),
                "irc" | "ircs" => ("x-scheme-handler/irc", "a chat channel"),
                "rdp" | "vnc" | "ssh" => ("x-scheme-handler/rdp", "a remote computer"),
                "magnet" => ("x-scheme-handler/magnet", "a torrent"),
                _ => ("x-scheme-handler/unknown", "a link"),
            };
            let mime = if scheme == "http" { "x-scheme-handler/http" } else { mime };
            return Some(Arg { value: w.to_string(), kind: ArgKind::Url, mime: Some(mime), phrase });
        }
    }
    if let Some(rest) = w.strip_prefix("mailto:") {
        if rest.contains('@') {
            return Some(Arg {
                value: w.to_string(),
                kind: ArgKind::Url,
                mime: Some("x-scheme-handler/mailto"),
                phrase: "an email address",
            });
        }
    }
    if w.starts_with("magnet:?") {
        return Some(Arg {
            value: w.to_string(),
            kind: ArgKind::Url,
            mime: Some("x-scheme-handler/magnet"),
            phrase: "a torrent",
        });
    }
    let pathlike = w.starts_with('/') || w.starts_with("~/") || w == "~" || w.starts_with("./") || w.starts_with("../");
    if pathlike {
        if w.starts_with('/') && w.len() < 2 {
            return None;
        }
        return Some(path_arg(w));
    }
    // name.ext with a known extension (not a sentence's "e.g." or "15.5").
    if let Some((mime, phrase)) = mime_of(w) {
        let stem_ok = w
            .split('/')
            .next_back()
            .is_some_and(|f| f.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-'));
        if stem_ok && !w.chars().any(char::is_whitespace) {
            return Some(Arg { value: w.to_string(), kind: ArgKind::Path, mime: Some(mime), phrase });
        }
    }
    // bare domain: label(.label)+.tld(/path)?
    let (host, _path) = w.split_once('/').unwrap_or((w, ""));
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && labels.iter().any(|l| l.chars().any(|c| c.is_ascii_alphabetic()))
        && TLDS.contains(&labels.last().unwrap().to_ascii_lowercase().as_str())
    {
        return Some(Arg {
            value: format!("https://{w}"),
            kind: ArgKind::Url,
            mime: Some("x-scheme-handler/https"),
            phrase: "a website",
        });
    }
    // relative path with a folder: Pictures/beach.jpg handled above via mime; dir/sub → path
    if w.contains('/')
        && !w.starts_with("//")
        && w.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || "._-".contains(c)))
        && w.chars().any(|c| c.is_alphabetic())
    {
        return Some(path_arg(w));
    }
    None
}

fn path_arg(w: &str) -> Arg {
    if let Some((mime, phrase)) = mime_of(w) {
        return Arg { value: w.to_string(), kind: ArgKind::Path, mime: Some(mime), phrase };
    }
    // Without the guest's file system we cannot stat the path: call it a folder
    // only when it says so (trailing `/`, `~`, an XDG user folder, `/home/NAME`).
    let trimmed = w.trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or("");
    let folder = w.ends_with('/')
        || w == "~"
        || USER_DIRS.iter().any(|d| d.eq_ignore_ascii_case(last))
        || (trimmed.starts_with("/home/") && trimmed.matches('/').count() == 2);
    if folder {
        Arg { value: w.to_string(), kind: ArgKind::Path, mime: Some("inode/directory"), phrase: "a folder" }
    } else {
        Arg { value: w.to_string(), kind: ArgKind::Path, mime: None, phrase: "a file" }
    }
}

/// Pull the arguments out of a request.
pub fn extract(request: &str) -> Extracted {
    let mut args: Vec<Arg> = Vec::new();
    let mut text = String::with_capacity(request.len());
    let chars: Vec<char> = request.chars().collect();
    let mut i = 0;
    let mut word = String::new();
    let flush = |word: &mut String, text: &mut String, args: &mut Vec<Arg>| {
        if word.is_empty() {
            return;
        }
        match classify(word) {
            Some(a) => {
                text.push_str(a.phrase);
                // keep trailing punctuation out of the model text too
                if !args.iter().any(|x| x.value == a.value) {
                    args.push(a);
                }
            }
            None => text.push_str(word),
        }
        word.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        // Quoted span that looks like a path or URL: keep spaces inside.
        if (c == '\'' || c == '"') && word.is_empty() {
            if let Some(end) = chars[i + 1..].iter().position(|&d| d == c) {
                let inner: String = chars[i + 1..i + 1 + end].iter().collect();
                let looks = inner.starts_with('/')
                    || inner.starts_with("~/")
                    || inner.contains("://")
                    || mime_of(&inner).is_some();
                if looks && !inner.trim().is_empty() {
                    let mut a = classify(&inner).unwrap_or_else(|| path_arg(&inner));
                    if inner.contains(' ') && a.kind == ArgKind::Path {
                        a.value = inner.clone();
                    }
                    text.push_str(a.phrase);
                    if !args.iter().any(|x| x.value == a.value) {
                        args.push(a);
                    }
                    i += end + 2;
                    continue;
                }
            }
        }
        if c.is_whitespace() {
            flush(&mut word, &mut text, &mut args);
            text.push(' ');
        } else {
            word.push(c);
        }
        i += 1;
    }
    flush(&mut word, &mut text, &mut args);
    user_dirs(&text, &mut args);
    Extracted { args, text: text.split_whitespace().collect::<Vec<_>>().join(" ") }
}

/// "my Downloads folder" / "the music directory" → `~/Downloads`, `~/Music`.
fn user_dirs(text: &str, args: &mut Vec<Arg>) {
    let words: Vec<String> = text.split_whitespace().map(|w| w.to_string()).collect();
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).map(|n| n.trim_end_matches(TRAILING).to_ascii_lowercase());
        if !matches!(next.as_deref(), Some("folder" | "directory" | "dir")) {
            continue;
        }
        let bare = w.trim_matches(|c: char| !c.is_alphanumeric());
        if let Some(d) = USER_DIRS.iter().find(|d| d.eq_ignore_ascii_case(bare)) {
            let value = format!("~/{d}");
            if !args.iter().any(|a| a.value == value) {
                args.push(Arg { value, kind: ArgKind::Path, mime: Some("inode/directory"), phrase: "a folder" });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(r: &str) -> Vec<String> {
        extract(r).args.into_iter().map(|a| a.value).collect()
    }

    #[test]
    fn urls() {
        let e = extract("go to https://example.org/news/today.html please");
        assert_eq!(e.args.len(), 1);
        assert_eq!(e.args[0].value, "https://example.org/news/today.html");
        assert_eq!(e.args[0].kind, ArgKind::Url);
        assert_eq!(e.text, "go to a web page please");
        assert_eq!(vals("open wikipedia.org"), ["https://wikipedia.org"]);
        assert_eq!(vals("visit http://localhost:8080/."), ["http://localhost:8080/"]);
        assert_eq!(vals("write to mailto:anna@example.org"), ["mailto:anna@example.org"]);
        // not domains
        assert!(vals("e.g. this costs 15.5 euros, i.e. a lot").is_empty());
        assert!(vals("version 2.0 of it").is_empty());
    }

    #[test]
    fn paths_and_file_names() {
        let e = extract("open ~/Documents/invoice-2024.pdf");
        assert_eq!(e.args[0].value, "~/Documents/invoice-2024.pdf");
        assert_eq!(e.args[0].mime, Some("application/pdf"));
        assert_eq!(e.text, "open a PDF document");
        assert_eq!(vals("open report.docx"), ["report.docx"]);
        assert_eq!(extract("extract backup.tar.xz").args[0].mime, Some("application/x-xz-compressed-tar"));
        assert_eq!(vals("edit /etc/hosts in an editor"), ["/etc/hosts"]);
        assert_eq!(extract("show me ~/Music").args[0].mime, Some("inode/directory"));
        assert_eq!(vals("watch ~/Videos/holiday.mkv, then sleep"), ["~/Videos/holiday.mkv"]);
        assert_eq!(vals("retouch Pictures/beach.jpg"), ["Pictures/beach.jpg"]);
        assert_eq!(vals("open './My Photos/cat.png' now"), ["./My Photos/cat.png"]);
        assert_eq!(vals("open \"/tmp/a b.txt\""), ["/tmp/a b.txt"]);
        assert!(vals("open a terminal").is_empty());
        assert!(vals("work out 15% of 240").is_empty());
        assert!(vals("i need a calculator.").is_empty());
    }

    #[test]
    fn user_folders_named_as_folders() {
        assert_eq!(vals("open my Downloads folder"), ["~/Downloads"]);
        assert_eq!(vals("show the pictures directory"), ["~/Pictures"]);
        assert!(vals("play my music").is_empty());
    }

    #[test]
    fn no_duplicates_and_mime_matching() {
        assert_eq!(vals("open a.pdf and a.pdf"), ["a.pdf"]);
        let accepted: Vec<String> = ["text/plain", "image/*"].iter().map(|s| s.to_string()).collect();
        assert!(mime_accepts(&accepted, "text/x-python"));
        assert!(mime_accepts(&accepted, "image/png"));
        assert!(!mime_accepts(&accepted, "application/pdf"));
        assert_eq!(mime_of("A.JPG"), Some(("image/jpeg", "a photo")));
        assert_eq!(mime_of(".pdf"), None);
    }
}
