//! Policy types: what the host lets a guest do. The host checks every action
//! against its policy before anything is sent to the guest, whoever proposed
//! the action (a person, the intent engine, a planner); the guest never sees
//! the policy and cannot change it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::message::{AppRef, Launch};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy forbids launching {0:?}")]
    AppForbidden(String),
    #[error("policy forbids launching command lines (only catalog apps may start); asked for {0:?}")]
    ArgvForbidden(String),
    #[error("launch of {0:?}: empty command line")]
    EmptyArgv(String),
    #[error("share {tag:?}: host path {path} is not absolute")]
    RelativeShare { tag: String, path: PathBuf },
    #[error("share tag {0:?} must be 1-36 characters of [A-Za-z0-9._-]")]
    BadTag(String),
    #[error("share tag {0:?} is used twice")]
    DuplicateTag(String),
    #[error("policy forbids setting {0} for a catalog app (only LANG, LANGUAGE, LC_* and TZ may be set when command lines are not allowed)")]
    EnvForbidden(String),
    #[error("working directory {0:?} must be an absolute path without `..`")]
    BadCwd(String),
}

/// Environment variables a launch may set when the policy allows catalog
/// apps only: presentation, never what runs or what it loads (`PATH`,
/// `LD_PRELOAD`, `PYTHONPATH`, `XDG_DATA_DIRS`, ... would turn a catalog
/// launch into an arbitrary program).
fn env_allowed_for_catalog_apps(name: &str) -> bool {
    matches!(name, "LANG" | "LANGUAGE" | "TZ") || name.starts_with("LC_")
}

/// Which catalog apps may start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "apps", rename_all = "snake_case")]
pub enum AppRule {
    /// Every catalog app.
    #[default]
    All,
    /// Only these desktop ids.
    Only(Vec<String>),
    /// Every app except these desktop ids.
    Except(Vec<String>),
}

/// A host folder exported to the guest over virtio-fs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderShare {
    pub host_path: PathBuf,
    /// virtio-fs tag the guest mounts.
    pub tag: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Everything the host allows one guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestPolicy {
    #[serde(default)]
    pub apps: AppRule,
    /// Whether raw command lines (`AppRef::Argv`) may be launched, or only
    /// catalog apps.
    #[serde(default)]
    pub allow_argv: bool,
    #[serde(default)]
    pub shares: Vec<FolderShare>,
}

impl Default for GuestPolicy {
    /// Catalog apps only, no command lines, nothing shared.
    fn default() -> Self {
        Self { apps: AppRule::All, allow_argv: false, shares: Vec::new() }
    }
}

impl GuestPolicy {
    /// Whether `launch` may be sent.
    pub fn check_launch(&self, launch: &Launch) -> Result<(), PolicyError> {
        if let Some(cwd) = &launch.cwd {
            let p = std::path::Path::new(cwd);
            if !p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(PolicyError::BadCwd(cwd.clone()));
            }
        }
        if !self.allow_argv {
            if let Some(name) = launch.env.keys().find(|k| !env_allowed_for_catalog_apps(k)) {
                return Err(PolicyError::EnvForbidden(name.clone()));
            }
        }
        match &launch.app {
            AppRef::Id(id) => {
                let allowed = match &self.apps {
                    AppRule::All => true,
                    AppRule::Only(ids) => ids.iter().any(|i| i == id),
                    AppRule::Except(ids) => !ids.iter().any(|i| i == id),
                };
                if allowed {
                    Ok(())
                } else {
                    Err(PolicyError::AppForbidden(id.clone()))
                }
            }
            AppRef::Argv(argv) => {
                let shown = argv.join(" ");
                if argv.first().is_none_or(|a| a.is_empty()) {
                    Err(PolicyError::EmptyArgv(shown))
                } else if !self.allow_argv {
                    Err(PolicyError::ArgvForbidden(shown))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Structural checks of a policy read from a file.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut tags = std::collections::HashSet::new();
        for s in &self.shares {
            let ok_tag = (1..=36).contains(&s.tag.len())
                && s.tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok_tag {
                return Err(PolicyError::BadTag(s.tag.clone()));
            }
            if !s.host_path.is_absolute() {
                return Err(PolicyError::RelativeShare { tag: s.tag.clone(), path: s.host_path.clone() });
            }
            if !tags.insert(s.tag.as_str()) {
                return Err(PolicyError::DuplicateTag(s.tag.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::DisplayMode;

    fn launch(app: AppRef) -> Launch {
        Launch { app, args: vec![], env: Default::default(), cwd: None, display: DisplayMode::Native }
    }

    #[test]
    fn app_rules() {
        let foot = launch(AppRef::Id("foot.desktop".into()));
        let gimp = launch(AppRef::Id("gimp.desktop".into()));
        let mut p = GuestPolicy::default();
        assert!(p.check_launch(&foot).is_ok());
        p.apps = AppRule::Only(vec!["foot.desktop".into()]);
        assert!(p.check_launch(&foot).is_ok());
        assert_eq!(p.check_launch(&gimp), Err(PolicyError::AppForbidden("gimp.desktop".into())));
        p.apps = AppRule::Except(vec!["foot.desktop".into()]);
        assert!(p.check_launch(&foot).is_err() && p.check_launch(&gimp).is_ok());
    }

    #[test]
    fn a_catalog_launch_cannot_change_what_runs_through_its_environment_or_cwd() {
        let p = GuestPolicy::default();
        let mut foot = launch(AppRef::Id("foot.desktop".into()));
        foot.env.insert("LANG".into(), "de_DE.UTF-8".into());
        foot.env.insert("LC_TIME".into(), "C".into());
        assert!(p.check_launch(&foot).is_ok());
        for bad in ["LD_PRELOAD", "PATH", "PYTHONPATH", "XDG_DATA_DIRS", "WAYLAND_DISPLAY", "LD_LIBRARY_PATH"] {
            let mut l = foot.clone();
            l.env.insert(bad.into(), "/tmp/x".into());
            assert_eq!(p.check_launch(&l), Err(PolicyError::EnvForbidden(bad.into())), "{bad}");
        }
        // Command lines, where allowed, may set what they like.
        let mut sh = launch(AppRef::Argv(vec!["sh".into()]));
        sh.env.insert("PATH".into(), "/opt/bin".into());
        assert!(GuestPolicy { allow_argv: true, ..GuestPolicy::default() }.check_launch(&sh).is_ok());
        for cwd in ["tmp", "/home/rayos/../../etc", ""] {
            let l = Launch { cwd: Some(cwd.into()), ..foot.clone() };
            assert_eq!(p.check_launch(&l), Err(PolicyError::BadCwd(cwd.into())), "{cwd:?}");
        }
        assert!(p.check_launch(&Launch { cwd: Some("/home/rayos/Shared".into()), ..foot }).is_ok());
    }

    #[test]
    fn command_lines_need_permission() {
        let sh = launch(AppRef::Argv(vec!["sh".into(), "-c".into(), "true".into()]));
        let mut p = GuestPolicy::default();
        assert!(matches!(p.check_launch(&sh), Err(PolicyError::ArgvForbidden(_))));
        p.allow_argv = true;
        assert!(p.check_launch(&sh).is_ok());
        assert!(matches!(p.check_launch(&launch(AppRef::Argv(vec![]))), Err(PolicyError::EmptyArgv(_))));
    }

    #[test]
    fn shares_are_validated() {
        let share = |p: &str, t: &str| FolderShare { host_path: p.into(), tag: t.into(), read_only: true };
        let mut p =
            GuestPolicy { shares: vec![share("/srv/a", "docs"), share("/srv/b", "media")], ..Default::default() };
        assert!(p.validate().is_ok());
        p.shares.push(share("/srv/c", "docs"));
        assert_eq!(p.validate(), Err(PolicyError::DuplicateTag("docs".into())));
        p.shares = vec![share("rel", "x")];
        assert!(matches!(p.validate(), Err(PolicyError::RelativeShare { .. })));
        p.shares = vec![share("/x", "bad tag")];
        assert!(matches!(p.validate(), Err(PolicyError::BadTag(_))));
    }

    #[test]
    fn policy_reads_from_json() {
        let p: GuestPolicy = serde_json::from_str(
            r#"{"apps":{"mode":"only","apps":["foot.desktop"]},"shares":[{"host_path":"/srv/docs","tag":"docs"}]}"#,
        )
        .unwrap();
        assert_eq!(p.apps, AppRule::Only(vec!["foot.desktop".into()]));
        assert!(!p.allow_argv && !p.shares[0].read_only);
    }
}
