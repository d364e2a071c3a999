//! A/B guest images on the host volume.
//!
//! `guests/a` and `guests/b` hold guest images (folders made by `rayos image
//! build`); `guest-image` is a symbolic link to the current one, and the
//! policy's VM boots whatever it points at. An update is staged by putting a
//! new image at `guests/staged`. At the next boot:
//! 1. the staged image moves into the slot that is not current, the link
//!    points at it, and the record says that slot is on **trial**;
//! 2. when the VM reaches its agent on it, the trial is **committed**: it
//!    becomes current, the old one stays as the fallback;
//! 3. when the VM fails before its agent (or the host restarts while a trial
//!    is open, which means the trial boot never finished), the link goes back
//!    to the current slot, the trial is dropped and RayOS says so.
//!
//! The decisions are pure ([`at_boot`], [`after_start`]); [`Slots`] applies
//! them to the folder (the link is replaced with a rename, so it is never
//! missing).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum GuestsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("no guest image on the host volume: {path} is missing (the host image puts one in guests/a)")]
    NoImage { path: PathBuf },
}

/// A slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// `state/guests.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRecord {
    pub current: Slot,
    /// A slot being tried (the link points at it) and not yet committed.
    pub trial: Option<Slot>,
}

impl Default for GuestRecord {
    fn default() -> Self {
        GuestRecord { current: Slot::A, trial: None }
    }
}

/// What to do with the folder at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    /// Boot the current image.
    Current(Slot),
    /// Move `guests/staged` into this slot and boot it on trial.
    TryStaged(Slot),
    /// The last boot's trial never confirmed: point back at the current slot.
    RollBack { from: Slot, to: Slot },
}

/// The decision at boot.
pub fn at_boot(rec: &GuestRecord, staged: bool) -> (GuestRecord, BootAction) {
    match (rec.trial, staged) {
        (Some(t), _) => {
            (GuestRecord { current: rec.current, trial: None }, BootAction::RollBack { from: t, to: rec.current })
        }
        (None, true) => {
            let slot = rec.current.other();
            (GuestRecord { current: rec.current, trial: Some(slot) }, BootAction::TryStaged(slot))
        }
        (None, false) => (rec.clone(), BootAction::Current(rec.current)),
    }
}

/// What the first start of the VM on this boot means for the images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing was on trial.
    Unchanged,
    /// The trial slot reached its agent and is now current.
    Committed(Slot),
    /// The trial slot failed; the link points at the current slot again and
    /// the VM should be started again on it.
    RolledBack { failed: Slot, back_to: Slot },
}

/// The decision once the VM reached its agent (`agent_ok`) or failed.
pub fn after_start(rec: &GuestRecord, agent_ok: bool) -> (GuestRecord, Verdict) {
    match (rec.trial, agent_ok) {
        (None, _) => (rec.clone(), Verdict::Unchanged),
        (Some(t), true) => (GuestRecord { current: t, trial: None }, Verdict::Committed(t)),
        (Some(t), false) => {
            (GuestRecord { current: rec.current, trial: None }, Verdict::RolledBack { failed: t, back_to: rec.current })
        }
    }
}

/// The slots of a volume.
#[derive(Debug, Clone)]
pub struct Slots {
    pub root: PathBuf,
}

impl Slots {
    pub fn new(volume: &Path) -> Slots {
        Slots { root: volume.to_path_buf() }
    }
    pub fn record_file(&self) -> PathBuf {
        self.root.join("state/guests.json")
    }
    pub fn slot(&self, s: Slot) -> PathBuf {
        self.root.join("guests").join(s.name())
    }
    pub fn staged(&self) -> PathBuf {
        self.root.join("guests/staged")
    }
    pub fn link(&self) -> PathBuf {
        self.root.join("guest-image")
    }

    pub fn read(&self) -> Result<GuestRecord, GuestsError> {
        let path = self.record_file();
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| GuestsError::Record { path, reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GuestRecord::default()),
            Err(source) => Err(GuestsError::Io { path, source }),
        }
    }

    pub fn write(&self, rec: &GuestRecord) -> Result<(), GuestsError> {
        let path = self.record_file();
        crate::volume::write_durably(&path, serde_json::to_string(rec).expect("serialises").as_bytes())
            .map_err(|e| GuestsError::Record { path, reason: e.to_string() })
    }

    /// Points `guest-image` at `slot` (a relative link, swapped in with a rename).
    pub fn point_at(&self, slot: Slot) -> Result<(), GuestsError> {
        let link = self.link();
        let tmp = self.root.join(".guest-image.tmp");
        let _ = std::fs::remove_file(&tmp);
        let target = Path::new("guests").join(slot.name());
        std::os::unix::fs::symlink(&target, &tmp).map_err(|source| GuestsError::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &link).map_err(|source| GuestsError::Io { path: link, source })
    }

    /// Applies the boot decision to the folder and returns it with a line for the console.
    pub fn boot(&self) -> Result<(BootAction, String), GuestsError> {
        let rec = self.read()?;
        let (next, action) = at_boot(&rec, self.staged().is_dir());
        let say = match &action {
            BootAction::Current(s) => {
                if !self.slot(*s).is_dir() {
                    return Err(GuestsError::NoImage { path: self.slot(*s) });
                }
                self.point_at(*s)?;
                format!("guest image: slot {} (current)", s.name())
            }
            BootAction::TryStaged(s) => {
                let dest = self.slot(*s);
                if dest.exists() {
                    std::fs::remove_dir_all(&dest).map_err(|source| GuestsError::Io { path: dest.clone(), source })?;
                }
                std::fs::rename(self.staged(), &dest)
                    .map_err(|source| GuestsError::Io { path: dest.clone(), source })?;
                self.point_at(*s)?;
                format!(
                    "guest image: trying the staged update in slot {} (slot {} stays as the fallback)",
                    s.name(),
                    rec.current.name()
                )
            }
            BootAction::RollBack { from, to } => {
                self.point_at(*to)?;
                format!(
                    "guest image: the update in slot {} did not boot to its agent last time; rolled back to slot {}",
                    from.name(),
                    to.name()
                )
            }
        };
        self.write(&next)?;
        Ok((action, say))
    }

    /// Applies the verdict of the first start; returns it with a line for the console.
    pub fn settle(&self, agent_ok: bool) -> Result<(Verdict, Option<String>), GuestsError> {
        let rec = self.read()?;
        let (next, verdict) = after_start(&rec, agent_ok);
        let say = match &verdict {
            Verdict::Unchanged => None,
            Verdict::Committed(s) => {
                Some(format!("guest image: the update in slot {} booted to its agent; it is now current", s.name()))
            }
            Verdict::RolledBack { failed, back_to } => {
                self.point_at(*back_to)?;
                Some(format!(
                    "guest image: the update in slot {} failed to boot to its agent; rolled back to slot {}",
                    failed.name(),
                    back_to.name()
                ))
            }
        };
        self.write(&next)?;
        Ok((verdict, say))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_image_is_tried_in_the_other_slot_and_committed_on_its_agent() {
        let rec = GuestRecord::default();
        let (rec, a) = at_boot(&rec, true);
        assert_eq!(a, BootAction::TryStaged(Slot::B));
        assert_eq!(rec.trial, Some(Slot::B));
        let (rec, v) = after_start(&rec, true);
        assert_eq!(v, Verdict::Committed(Slot::B));
        assert_eq!(rec, GuestRecord { current: Slot::B, trial: None });
        // The next update goes to slot a.
        assert_eq!(at_boot(&rec, true).1, BootAction::TryStaged(Slot::A));
    }

    #[test]
    fn a_failed_trial_rolls_back_now_or_at_the_next_boot() {
        let (rec, _) = at_boot(&GuestRecord::default(), true);
        let (after, v) = after_start(&rec, false);
        assert_eq!(v, Verdict::RolledBack { failed: Slot::B, back_to: Slot::A });
        assert_eq!(after, GuestRecord::default());
        // The host died during the trial: the next boot rolls back, even with another update staged.
        let (next, a) = at_boot(&rec, true);
        assert_eq!(a, BootAction::RollBack { from: Slot::B, to: Slot::A });
        assert_eq!(next.trial, None);
    }

    #[test]
    fn without_an_update_nothing_changes() {
        let rec = GuestRecord { current: Slot::B, trial: None };
        assert_eq!(at_boot(&rec, false), (rec.clone(), BootAction::Current(Slot::B)));
        assert_eq!(after_start(&rec, false), (rec, Verdict::Unchanged));
    }

    #[test]
    fn the_folder_follows_the_decisions() {
        let d = tempfile::tempdir().unwrap();
        let s = Slots::new(d.path());
        assert!(matches!(s.boot().unwrap_err(), GuestsError::NoImage { .. }));
        std::fs::create_dir_all(s.slot(Slot::A)).unwrap();
        std::fs::write(s.slot(Slot::A).join("id"), "old").unwrap();
        s.boot().unwrap();
        assert_eq!(std::fs::read_to_string(s.link().join("id")).unwrap(), "old");
        std::fs::create_dir_all(s.staged()).unwrap();
        std::fs::write(s.staged().join("id"), "new").unwrap();
        let (a, say) = s.boot().unwrap();
        assert_eq!(a, BootAction::TryStaged(Slot::B));
        assert!(say.contains("slot b"), "{say}");
        assert_eq!(std::fs::read_to_string(s.link().join("id")).unwrap(), "new");
        assert!(!s.staged().exists());
        let (v, say) = s.settle(false).unwrap();
        assert_eq!(v, Verdict::RolledBack { failed: Slot::B, back_to: Slot::A });
        assert!(say.unwrap().contains("rolled back"));
        assert_eq!(std::fs::read_to_string(s.link().join("id")).unwrap(), "old");
        assert_eq!(s.read().unwrap(), GuestRecord::default());
    }
}
