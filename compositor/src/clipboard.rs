//! Clipboard policy: who may read a selection owned by another origin.
//!
//! Design note: a client's selection (`wl_data_device.set_selection`)
//! belongs to its origin, the host or one VM. The Smithay layer copies a new
//! selection's contents into the compositor (bounded, see
//! `server::clipboard`) and offers it to the focused client as a
//! compositor-owned selection, so every read (`wl_data_offer.receive`)
//! passes through here. The rules, per VM policy (`register_vm` /
//! `set_vm_policy` field `clipboard`):
//!
//! - a reader of the owner's own origin may always read it (a VM under
//!   `deny` keeps a working clipboard of its own);
//! - a VM under `deny` neither reads other origins' selections nor has its
//!   own offered to them;
//! - a host client reads a VM's selection unless that VM is under `deny`;
//! - a VM client reads another origin's selection under `allow`; under
//!   `on-paste` (the default) only while one of that VM's windows has
//!   keyboard focus and a key or button press was delivered to that very
//!   window within [`PASTE_WINDOW_MS`] (control-API injected input counts:
//!   it takes the same path as a device's).
//!
//! [`may_offer`] decides whether the focused client is offered the
//! selection at all (`deny` on either side hides it); [`may_read`] decides
//! each read. A refused read gets its fd closed at once, so the client sees
//! an empty transfer and never hangs, and the compositor logs the VM and
//! the reason.

pub use rayos_compositor_ipc::types::ClipboardPolicy;

/// How long after a key or button press a VM window may read another
/// origin's selection under `on-paste`.
pub const PASTE_WINDOW_MS: u64 = 1000;

/// Why a read or an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClipboardError {
    #[error("VM {reader:?} has clipboard policy deny")]
    ReaderDenies { reader: String },
    #[error("the selection's owner, VM {owner:?}, has clipboard policy deny")]
    OwnerDenies { owner: String },
    #[error("the selection's owner, VM {owner:?}, is no longer registered")]
    OwnerGone { owner: String },
    #[error("VM {reader:?} (on-paste) read without a key or button press on its focused window in the last {PASTE_WINDOW_MS} ms")]
    NoRecentInput { reader: String },
    #[error("VM {reader:?} (on-paste) read while none of its windows has keyboard focus")]
    NotFocused { reader: String },
}

impl ClipboardError {
    /// The VM the refusal concerns (for the log line).
    pub fn vm(&self) -> &str {
        match self {
            ClipboardError::ReaderDenies { reader }
            | ClipboardError::NoRecentInput { reader }
            | ClipboardError::NotFocused { reader } => reader,
            ClipboardError::OwnerDenies { owner } | ClipboardError::OwnerGone { owner } => owner,
        }
    }
}

/// One side of a transfer: `None` is the host, `Some(name)` a VM.
pub type Party<'a> = Option<&'a str>;

/// Looks up a registered VM's clipboard policy (`None`: not registered).
pub trait PolicyLookup {
    fn clipboard_policy(&self, vm: &str) -> Option<ClipboardPolicy>;
}

impl PolicyLookup for crate::origin::OriginRegistry {
    fn clipboard_policy(&self, vm: &str) -> Option<ClipboardPolicy> {
        self.get(vm).map(|e| e.clipboard)
    }
}

/// Whether `reader`'s focused client is offered a selection owned by `owner`.
pub fn may_offer(policies: &impl PolicyLookup, owner: Party, reader: Party) -> Result<(), ClipboardError> {
    if owner == reader {
        return Ok(());
    }
    if let Some(o) = owner {
        match policies.clipboard_policy(o) {
            None => return Err(ClipboardError::OwnerGone { owner: o.to_string() }),
            Some(ClipboardPolicy::Deny) => return Err(ClipboardError::OwnerDenies { owner: o.to_string() }),
            Some(_) => {}
        }
    }
    if let Some(r) = reader {
        if policies.clipboard_policy(r) == Some(ClipboardPolicy::Deny) {
            return Err(ClipboardError::ReaderDenies { reader: r.to_string() });
        }
    }
    Ok(())
}

/// The focus and input state an `on-paste` read is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasteContext<'a> {
    /// Origin of the window with keyboard focus (`None` inside: the host),
    /// or `None` when no window has focus.
    pub focused: Option<Party<'a>>,
    /// Milliseconds since the last key or button press delivered to the
    /// focused window (`None`: none since it was focused or ever).
    pub since_press_ms: Option<u64>,
}

/// Whether `reader` may read, now, a selection owned by `owner`.
pub fn may_read(
    policies: &impl PolicyLookup,
    owner: Party,
    reader: Party,
    ctx: PasteContext,
) -> Result<(), ClipboardError> {
    may_offer(policies, owner, reader)?;
    let Some(r) = reader.filter(|_| owner != reader) else { return Ok(()) };
    match policies.clipboard_policy(r) {
        Some(ClipboardPolicy::Allow) => Ok(()),
        Some(ClipboardPolicy::OnPaste) => {
            if ctx.focused != Some(Some(r)) {
                return Err(ClipboardError::NotFocused { reader: r.to_string() });
            }
            match ctx.since_press_ms {
                Some(ms) if ms <= PASTE_WINDOW_MS => Ok(()),
                _ => Err(ClipboardError::NoRecentInput { reader: r.to_string() }),
            }
        }
        // Deny was refused by may_offer; an unregistered reader reads nothing.
        Some(ClipboardPolicy::Deny) | None => Err(ClipboardError::ReaderDenies { reader: r.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct P(HashMap<&'static str, ClipboardPolicy>);
    impl PolicyLookup for P {
        fn clipboard_policy(&self, vm: &str) -> Option<ClipboardPolicy> {
            self.0.get(vm).copied()
        }
    }

    fn policies() -> P {
        P(HashMap::from([
            ("open", ClipboardPolicy::Allow),
            ("paste", ClipboardPolicy::OnPaste),
            ("shut", ClipboardPolicy::Deny),
        ]))
    }

    const IDLE: PasteContext = PasteContext { focused: None, since_press_ms: None };

    fn pasting(vm: &'static str, ms: u64) -> PasteContext<'static> {
        PasteContext { focused: Some(Some(vm)), since_press_ms: Some(ms) }
    }

    #[test]
    fn same_origin_always_reads() {
        let p = policies();
        for o in [None, Some("open"), Some("paste"), Some("shut")] {
            assert_eq!(may_read(&p, o, o, IDLE), Ok(()), "{o:?}");
            assert_eq!(may_offer(&p, o, o), Ok(()));
        }
    }

    #[test]
    fn host_reads_vm_selections_unless_the_vm_denies() {
        let p = policies();
        assert_eq!(may_read(&p, Some("open"), None, IDLE), Ok(()));
        assert_eq!(may_read(&p, Some("paste"), None, IDLE), Ok(()));
        assert_eq!(may_read(&p, Some("shut"), None, IDLE), Err(ClipboardError::OwnerDenies { owner: "shut".into() }));
        assert!(may_offer(&p, Some("shut"), None).is_err());
        assert_eq!(may_read(&p, Some("gone"), None, IDLE), Err(ClipboardError::OwnerGone { owner: "gone".into() }));
    }

    #[test]
    fn vm_readers_follow_their_policy() {
        let p = policies();
        // allow: any time.
        assert_eq!(may_read(&p, None, Some("open"), IDLE), Ok(()));
        assert_eq!(may_read(&p, Some("paste"), Some("open"), IDLE), Ok(()));
        // deny: never, not even offered; nor is its own selection to others.
        assert_eq!(may_offer(&p, None, Some("shut")), Err(ClipboardError::ReaderDenies { reader: "shut".into() }));
        assert!(may_read(&p, None, Some("shut"), pasting("shut", 0)).is_err());
        assert!(may_read(&p, Some("shut"), Some("open"), IDLE).is_err());
        // on-paste: offered, read only focused and right after a press.
        assert_eq!(may_offer(&p, None, Some("paste")), Ok(()));
        assert_eq!(may_read(&p, None, Some("paste"), pasting("paste", 0)), Ok(()));
        assert_eq!(may_read(&p, None, Some("paste"), pasting("paste", PASTE_WINDOW_MS)), Ok(()));
        assert_eq!(
            may_read(&p, None, Some("paste"), pasting("paste", PASTE_WINDOW_MS + 1)),
            Err(ClipboardError::NoRecentInput { reader: "paste".into() })
        );
        assert_eq!(
            may_read(&p, None, Some("paste"), PasteContext { focused: Some(Some("paste")), since_press_ms: None }),
            Err(ClipboardError::NoRecentInput { reader: "paste".into() })
        );
        assert_eq!(
            may_read(&p, None, Some("paste"), pasting("open", 0)),
            Err(ClipboardError::NotFocused { reader: "paste".into() })
        );
        assert_eq!(
            may_read(&p, None, Some("paste"), PasteContext { focused: Some(None), since_press_ms: Some(0) }),
            Err(ClipboardError::NotFocused { reader: "paste".into() })
        );
        assert_eq!(may_read(&p, None, Some("paste"), IDLE), Err(ClipboardError::NotFocused { reader: "paste".into() }));
        // An unregistered reader reads nothing of others.
        assert!(may_read(&p, None, Some("gone"), pasting("gone", 0)).is_err());
        assert_eq!(ClipboardError::NotFocused { reader: "paste".into() }.vm(), "paste");
    }

    #[test]
    fn policies_parse_as_documented() {
        for (s, p) in
            [("allow", ClipboardPolicy::Allow), ("on-paste", ClipboardPolicy::OnPaste), ("deny", ClipboardPolicy::Deny)]
        {
            assert_eq!(serde_json::from_str::<ClipboardPolicy>(&format!("\"{s}\"")).unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{s}\""));
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(serde_json::from_str::<ClipboardPolicy>("\"on_paste\"").unwrap(), ClipboardPolicy::OnPaste);
        assert!(serde_json::from_str::<ClipboardPolicy>("\"maybe\"").is_err());
        assert_eq!(ClipboardPolicy::default(), ClipboardPolicy::OnPaste);
    }
}
