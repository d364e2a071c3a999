//! The policy check every proposed action passes, whoever proposed it.
//!
//! The engine and the planner only *propose*. Before an action leaves the AI
//! core it is checked here against the catalog and the request:
//! - the app exists in the catalog (no invented desktop IDs);
//! - every argument was found in the request by the extractor (a planner cannot
//!   add arguments the person did not give), is at most 4 KiB, has no NUL or
//!   newline, and fits the app's `Exec` (URLs need `%u`/`%U`, files `%f %F %u %U`,
//!   several need `%F`/`%U`); at most 16 arguments;
//! - the request is not a request to destroy data: "format my hard drive",
//!   "delete all my files", "wipe the disk" get `none`, because an app launched
//!   on such words is at best unrelated and at worst the tool that does it.
//!   A person who wants a disk tool can ask for it by what it is.

use super::args::{Arg, ArgKind};
use super::catalog::Catalog;
use super::Action;

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("app {0:?} is not in the catalog")]
    UnknownApp(String),
    #[error("argument {0:?} does not appear in the request")]
    ForeignArgument(String),
    #[error("argument {0:?} is malformed (too long, or has a NUL or a newline)")]
    BadArgument(String),
    #[error("app {app} cannot take {what}")]
    ArgumentNotAccepted { app: String, what: String },
    #[error("{0} arguments; at most 16")]
    TooManyArguments(usize),
    #[error("a plan of {0} steps; at most 8")]
    TooManySteps(usize),
    #[error("a plan may only hold launches")]
    BadPlanStep,
}

const MAX_ARGS: usize = 16;
const MAX_ARG_BYTES: usize = 4096;
const MAX_STEPS: usize = 8;

const DESTROY_VERBS: &[&str] = &[
    "format",
    "wipe",
    "erase",
    "delete",
    "destroy",
    "shred",
    "nuke",
    "zero",
    "remove",
    "rm",
    "reformat",
    "repartition",
];
const DESTROY_OBJECTS: &[&str] = &[
    "disk",
    "disks",
    "drive",
    "drives",
    "harddrive",
    "hdd",
    "ssd",
    "partition",
    "partitions",
    "everything",
    "system",
    "computer",
    "filesystem",
    "root",
    "home",
    "machine",
    "laptop",
    "/",
];
/// "all" counts as an object only before one of these ("delete all my files").
const DATA_WORDS: &[&str] =
    &["files", "data", "documents", "photos", "pictures", "music", "videos", "folders", "stuff"];

/// If the request asks to destroy data, the reason to refuse it.
pub fn screen_request(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '/'))
        .filter(|w| !w.is_empty())
        .collect();
    let verb = words.iter().position(|w| DESTROY_VERBS.contains(w))?;
    let rest = &words[verb + 1..];
    let all_data = rest
        .iter()
        .enumerate()
        .any(|(i, w)| *w == "all" && rest[i + 1..].iter().take(2).any(|n| DATA_WORDS.contains(n)));
    if all_data || rest.iter().any(|w| DESTROY_OBJECTS.contains(w)) || lower.contains("rm -rf") {
        Some("the request asks to destroy data; the AI core does not act on that (open a disk or file tool by name if you need one)".into())
    } else {
        None
    }
}

/// Check one action against the catalog and the arguments found in the request.
pub fn check(action: &Action, catalog: &Catalog, request_args: &[Arg]) -> Result<(), PolicyError> {
    match action {
        Action::Launch { app_id, args, .. } => {
            let entry = catalog.get(app_id).ok_or_else(|| PolicyError::UnknownApp(app_id.clone()))?;
            if args.len() > MAX_ARGS {
                return Err(PolicyError::TooManyArguments(args.len()));
            }
            if args.len() > 1 && !entry.takes_many() {
                return Err(PolicyError::ArgumentNotAccepted {
                    app: app_id.clone(),
                    what: format!("{} arguments", args.len()),
                });
            }
            for a in args {
                if a.len() > MAX_ARG_BYTES || a.contains('\0') || a.contains('\n') {
                    return Err(PolicyError::BadArgument(a.chars().take(80).collect()));
                }
                let found = request_args
                    .iter()
                    .find(|r| &r.value == a)
                    .ok_or_else(|| PolicyError::ForeignArgument(a.clone()))?;
                let ok = match found.kind {
                    ArgKind::Url => entry.takes_urls(),
                    ArgKind::Path => entry.takes_files(),
                };
                if !ok {
                    return Err(PolicyError::ArgumentNotAccepted { app: app_id.clone(), what: format!("{:?}", a) });
                }
            }
            Ok(())
        }
        Action::Clarify { candidates, .. } => {
            for c in candidates {
                catalog.get(&c.app_id).ok_or_else(|| PolicyError::UnknownApp(c.app_id.clone()))?;
            }
            Ok(())
        }
        Action::None { .. } => Ok(()),
        Action::Plan { steps } => {
            if steps.len() > MAX_STEPS {
                return Err(PolicyError::TooManySteps(steps.len()));
            }
            for s in steps {
                if !matches!(s, Action::Launch { .. }) {
                    return Err(PolicyError::BadPlanStep);
                }
                check(s, catalog, request_args)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::args::extract;
    use crate::intent::catalog::parse_desktop;

    fn catalog() -> Catalog {
        let ff = parse_desktop("firefox.desktop", "[Desktop Entry]\nType=Application\nName=Firefox\nExec=firefox %u\n")
            .unwrap()
            .unwrap();
        let calc = parse_desktop("calc.desktop", "[Desktop Entry]\nType=Application\nName=Calculator\nExec=calc\n")
            .unwrap()
            .unwrap();
        Catalog::from_entries(vec![ff, calc])
    }

    fn launch(app: &str, args: &[&str]) -> Action {
        Action::Launch { app_id: app.into(), confidence: 0.9, args: args.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn destructive_requests_are_screened() {
        for r in [
            "format my hard drive",
            "Delete all my files",
            "wipe the disk",
            "erase everything on this computer",
            "please rm -rf /",
        ] {
            assert!(screen_request(r).is_some(), "{r}");
        }
        for r in [
            "delete a word in my letter",
            "format a letter nicely",
            "remove red eyes from a photo",
            "open a terminal",
            "show my disk usage",
            "remove all duplicates from the playlist",
        ] {
            assert!(screen_request(r).is_none(), "{r}");
        }
    }

    #[test]
    fn launches_are_checked() {
        let cat = catalog();
        let req = extract("open https://example.org please");
        assert_eq!(check(&launch("firefox.desktop", &["https://example.org"]), &cat, &req.args), Ok(()));
        assert_eq!(
            check(&launch("nope.desktop", &[]), &cat, &req.args),
            Err(PolicyError::UnknownApp("nope.desktop".into()))
        );
        assert!(matches!(
            check(&launch("firefox.desktop", &["https://evil.example"]), &cat, &req.args),
            Err(PolicyError::ForeignArgument(_))
        ));
        assert!(matches!(
            check(&launch("calc.desktop", &["https://example.org"]), &cat, &req.args),
            Err(PolicyError::ArgumentNotAccepted { .. })
        ));
        let plan = Action::Plan { steps: vec![launch("firefox.desktop", &[]), launch("calc.desktop", &[])] };
        assert_eq!(check(&plan, &cat, &[]), Ok(()));
        let bad = Action::Plan { steps: vec![launch("firefox.desktop", &[]), Action::none()] };
        assert_eq!(check(&bad, &cat, &[]), Err(PolicyError::BadPlanStep));
    }
}
