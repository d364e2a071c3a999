//! Where a window comes from: the host, or one registered VM.
//!
//! Design note: every Wayland client of the RayOS compositor connects on a
//! socket that names its origin: `rayos-host` for host clients, and
//! `rayos-vm-<name>` for each VM registered through the control API. The
//! socket a client came in on is the only thing that decides its origin, so a
//! guest cannot claim to be the host or another VM; the decoration drawn
//! around each window shows that origin (see [`crate::decoration`]). Each VM
//! also gets `rayos-desktop-<name>`, where its whole display connects (the
//! VM's embedded desktop: its toplevel maps in `embedded-desktop` mode, one
//! per VM); its guest apps connect one by one on `rayos-vm-<name>`
//! (`native` windows). The two prefixes cannot collide, whatever the names.
//!
//! The [`OriginRegistry`] is the host's table of VMs. It validates names
//! (1-32 chars of `[a-z0-9-]`, not starting with `-`, and not beginning with
//! the reserved words `host` or `rayos`, so no VM label can read like the
//! host's "RayOS host"), refuses a colour too close to the host's colour,
//! refuses duplicates, holds the per-VM policy flag `accept_windows`, and
//! remembers which windows each VM owns so unregistering can hand back the
//! ids that must be closed at once. It holds no windows itself: the shell
//! (see [`crate::shell`]) keeps it consistent with its window table.

use std::collections::{BTreeMap, BTreeSet};

use crate::clipboard::ClipboardPolicy;
use crate::window::WindowId;
pub use rayos_compositor_ipc::types::{
    desktop_socket_name, vm_socket_name, ColourError, Origin, Rgb, DESKTOP_SOCKET_PREFIX, HOST_COLOUR, HOST_LABEL,
    HOST_SOCKET, VM_SOCKET_PREFIX,
};

/// Errors of origin validation and the VM registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("invalid VM name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid colour {0:?}: expected \"#rrggbb\"")]
    InvalidColour(String),
    #[error("colour {colour} is too close to the host colour {host}; pick a clearly different colour")]
    ColourReserved { colour: Rgb, host: Rgb },
    #[error("VM {0:?} is already registered")]
    Duplicate(String),
    #[error("no VM named {0:?} is registered")]
    UnknownVm(String),
    #[error("VM {0:?} already has an embedded-desktop window")]
    DesktopExists(String),
    #[error("VM {0:?} does not accept new windows")]
    Refused(String),
}

/// Longest VM name.
pub const MAX_VM_NAME: usize = 32;
/// Name prefixes no VM may use (labels must never read like the host's).
pub const RESERVED_PREFIXES: [&str; 2] = ["host", "rayos"];
/// Minimum weighted RGB distance between a VM colour and the host colour.
pub const MIN_COLOUR_DISTANCE: f64 = 120.0;

/// Checks a VM name: 1-32 chars of `[a-z0-9-]`, not starting with `-`, not
/// starting with a reserved word.
pub fn validate_vm_name(name: &str) -> Result<(), OriginError> {
    let fail = |reason| Err(OriginError::InvalidName { name: name.chars().take(40).collect(), reason });
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > MAX_VM_NAME {
        return fail("longer than 32 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return fail("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') {
        return fail("must not start with '-'");
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return fail("names starting with \"host\" or \"rayos\" are reserved");
    }
    Ok(())
}

/// Checks that a VM colour is clearly distinct from the host colour.
pub fn validate_vm_colour(colour: Rgb) -> Result<(), OriginError> {
    if colour.distance(HOST_COLOUR) < MIN_COLOUR_DISTANCE {
        return Err(OriginError::ColourReserved { colour, host: HOST_COLOUR });
    }
    Ok(())
}

impl From<ColourError> for OriginError {
    fn from(e: ColourError) -> Self {
        match e {
            ColourError::Invalid(s) => OriginError::InvalidColour(s),
        }
    }
}

/// One registered VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    pub name: String,
    pub colour: Rgb,
    /// The Wayland socket name the compositor listens on for this VM.
    pub socket: String,
    /// The socket its embedded desktop (the VM's whole display) connects on.
    pub desktop_socket: String,
    /// Policy: whether the VM may open new windows and take focus.
    pub accept_windows: bool,
    /// Policy: clipboard across the VM's boundary (see [`crate::clipboard`]).
    pub clipboard: ClipboardPolicy,
    /// Windows this VM owns.
    pub windows: BTreeSet<WindowId>,
    /// Its embedded-desktop window, if one is open.
    pub desktop: Option<WindowId>,
}

impl VmEntry {
    /// What the control API reports of this registration.
    pub fn registration(&self) -> rayos_compositor_ipc::VmRegistration {
        rayos_compositor_ipc::VmRegistration {
            name: self.name.clone(),
            colour: self.colour,
            socket: self.socket.clone(),
            desktop_socket: self.desktop_socket.clone(),
            clipboard: self.clipboard,
        }
    }
}

impl VmEntry {
    pub fn origin(&self) -> Origin {
        Origin::Vm { name: self.name.clone(), colour: self.colour }
    }
}

/// The host's table of registered VMs.
#[derive(Debug, Clone, Default)]
pub struct OriginRegistry {
    vms: BTreeMap<String, VmEntry>,
}

impl OriginRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a VM; returns its entry (with the socket name to listen on).
    pub fn register(&mut self, name: &str, colour: Rgb) -> Result<&VmEntry, OriginError> {
        validate_vm_name(name)?;
        validate_vm_colour(colour)?;
        if self.vms.contains_key(name) {
            return Err(OriginError::Duplicate(name.to_string()));
        }
        let entry = VmEntry {
            name: name.to_string(),
            colour,
            socket: vm_socket_name(name),
            desktop_socket: desktop_socket_name(name),
            accept_windows: true,
            clipboard: ClipboardPolicy::default(),
            windows: BTreeSet::new(),
            desktop: None,
        };
        tracing::info!(vm = name, %colour, socket = %entry.socket, "VM registered");
        Ok(self.vms.entry(name.to_string()).or_insert(entry))
    }

    /// Unregisters a VM; returns the ids of its windows, which the caller
    /// must close at once.
    pub fn unregister(&mut self, name: &str) -> Result<Vec<WindowId>, OriginError> {
        let entry = self.vms.remove(name).ok_or_else(|| OriginError::UnknownVm(name.to_string()))?;
        tracing::info!(vm = name, windows = entry.windows.len(), "VM unregistered");
        Ok(entry.windows.into_iter().collect())
    }

    /// Sets the `accept_windows` policy flag.
    pub fn set_accept_windows(&mut self, name: &str, accept: bool) -> Result<(), OriginError> {
        let entry = self.vms.get_mut(name).ok_or_else(|| OriginError::UnknownVm(name.to_string()))?;
        entry.accept_windows = accept;
        Ok(())
    }

    /// Sets the clipboard policy.
    pub fn set_clipboard(&mut self, name: &str, policy: ClipboardPolicy) -> Result<(), OriginError> {
        let entry = self.vms.get_mut(name).ok_or_else(|| OriginError::UnknownVm(name.to_string()))?;
        entry.clipboard = policy;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&VmEntry> {
        self.vms.get(name)
    }

    pub fn vms(&self) -> impl Iterator<Item = &VmEntry> {
        self.vms.values()
    }

    pub fn len(&self) -> usize {
        self.vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vms.is_empty()
    }

    /// The origin of a client that connected on `socket`, if that socket is
    /// the host's or a registered VM's.
    pub fn origin_for_socket(&self, socket: &str) -> Option<Origin> {
        if socket == HOST_SOCKET {
            return Some(Origin::Host);
        }
        let name = socket.strip_prefix(VM_SOCKET_PREFIX)?;
        self.vms.get(name).map(VmEntry::origin)
    }

    /// Whether windows of `origin` may take focus (and be opened): the host
    /// always, a VM only while registered with `accept_windows`. A stale
    /// origin (a VM unregistered and registered again with another colour)
    /// does not count.
    pub fn accepts(&self, origin: &Origin) -> bool {
        match origin {
            Origin::Host => true,
            Origin::Vm { name, colour } => self.vms.get(name).is_some_and(|e| e.accept_windows && e.colour == *colour),
        }
    }

    /// Whether `origin` is the host or a currently registered VM.
    pub fn is_live(&self, origin: &Origin) -> bool {
        match origin {
            Origin::Host => true,
            Origin::Vm { name, colour } => self.vms.get(name).is_some_and(|e| e.colour == *colour),
        }
    }

    /// Checks that a VM may open a window of the given kind now.
    pub(crate) fn check_can_open(&self, name: &str, desktop: bool) -> Result<(), OriginError> {
        let entry = self.vms.get(name).ok_or_else(|| OriginError::UnknownVm(name.to_string()))?;
        if !entry.accept_windows {
            return Err(OriginError::Refused(name.to_string()));
        }
        if desktop && entry.desktop.is_some() {
            return Err(OriginError::DesktopExists(name.to_string()));
        }
        Ok(())
    }

    /// Records that a VM owns a window.
    pub(crate) fn attach(&mut self, name: &str, id: WindowId, desktop: bool) {
        if let Some(entry) = self.vms.get_mut(name) {
            entry.windows.insert(id);
            if desktop {
                entry.desktop = Some(id);
            }
        }
    }

    /// Records that a VM's window is gone.
    pub(crate) fn detach(&mut self, name: &str, id: WindowId) {
        if let Some(entry) = self.vms.get_mut(name) {
            entry.windows.remove(&id);
            if entry.desktop == Some(id) {
                entry.desktop = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREEN: Rgb = Rgb::new(0x2e, 0xa0, 0x43);

    #[test]
    fn names() {
        for ok in ["a", "debian", "work-vm-2", "0", &"x".repeat(32)] {
            assert!(validate_vm_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Debian", "a b", "a_b", "-x", &"x".repeat(33), "host", "hostile", "rayos-vm", "é", "a\n"] {
            assert!(validate_vm_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn colours_parse_and_print() {
        let c: Rgb = "#2EA043".parse().unwrap();
        assert_eq!(c, GREEN);
        assert_eq!(c.to_string(), "#2ea043");
        assert_eq!(c.argb(), 0xff2e_a043);
        for bad in ["2ea043", "#2ea04", "#2ea0433", "#gggggg", "", "#+1+2+3"] {
            assert!(bad.parse::<Rgb>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"#2ea043\"");
        assert_eq!(serde_json::from_str::<Rgb>("\"#2ea043\"").unwrap(), c);
    }

    #[test]
    fn host_colour_is_reserved() {
        assert!(validate_vm_colour(HOST_COLOUR).is_err());
        assert!(validate_vm_colour(Rgb::new(0x20, 0x70, 0xe0)).is_err());
        assert!(validate_vm_colour(GREEN).is_ok());
        assert!(validate_vm_colour(Rgb::new(0xd0, 0x30, 0x30)).is_ok());
        let mut reg = OriginRegistry::new();
        assert!(matches!(reg.register("vm", HOST_COLOUR), Err(OriginError::ColourReserved { .. })));
    }

    #[test]
    fn register_unregister() {
        let mut reg = OriginRegistry::new();
        let e = reg.register("debian", GREEN).unwrap();
        assert_eq!(e.socket, "rayos-vm-debian");
        assert_eq!(e.desktop_socket, "rayos-desktop-debian");
        assert!(e.accept_windows);
        assert_eq!(e.clipboard, ClipboardPolicy::OnPaste);
        assert_eq!(reg.register("debian", Rgb::new(200, 0, 0)), Err(OriginError::Duplicate("debian".into())));
        reg.attach("debian", WindowId(3), false);
        reg.attach("debian", WindowId(5), true);
        assert_eq!(reg.check_can_open("debian", true), Err(OriginError::DesktopExists("debian".into())));
        reg.detach("debian", WindowId(5));
        assert!(reg.check_can_open("debian", true).is_ok());
        reg.set_accept_windows("debian", false).unwrap();
        assert_eq!(reg.check_can_open("debian", false), Err(OriginError::Refused("debian".into())));
        assert_eq!(reg.unregister("debian").unwrap(), vec![WindowId(3)]);
        assert_eq!(reg.unregister("debian"), Err(OriginError::UnknownVm("debian".into())));
        assert!(reg.set_accept_windows("debian", true).is_err());
        assert!(reg.set_clipboard("debian", ClipboardPolicy::Deny).is_err());
        reg.register("debian", GREEN).unwrap();
        reg.set_clipboard("debian", ClipboardPolicy::Deny).unwrap();
        assert_eq!(reg.get("debian").unwrap().clipboard, ClipboardPolicy::Deny);
    }

    #[test]
    fn sockets_map_to_origins() {
        let mut reg = OriginRegistry::new();
        reg.register("work", GREEN).unwrap();
        assert_eq!(reg.origin_for_socket("rayos-host"), Some(Origin::Host));
        assert_eq!(reg.origin_for_socket("rayos-vm-work"), Some(Origin::Vm { name: "work".into(), colour: GREEN }));
        assert_eq!(reg.origin_for_socket("rayos-vm-other"), None);
        assert_eq!(reg.origin_for_socket("wayland-0"), None);
    }

    #[test]
    fn stale_origin_is_not_accepted() {
        let mut reg = OriginRegistry::new();
        reg.register("work", GREEN).unwrap();
        let old = reg.get("work").unwrap().origin();
        reg.unregister("work").unwrap();
        reg.register("work", Rgb::new(200, 0, 0)).unwrap();
        assert!(!reg.accepts(&old));
        assert!(!reg.is_live(&old));
        assert!(reg.accepts(&Origin::Host));
    }

    #[test]
    fn labels_come_from_origin() {
        assert_eq!(Origin::Host.label(), "RayOS host");
        let vm = Origin::Vm { name: "work".into(), colour: GREEN };
        assert_eq!(vm.label(), "work");
        assert_eq!(vm.socket_name(), "rayos-vm-work");
        let json = serde_json::to_string(&vm).unwrap();
        assert_eq!(json, r##"{"kind":"vm","name":"work","colour":"#2ea043"}"##);
        assert_eq!(serde_json::from_str::<Origin>(&json).unwrap(), vm);
    }
}
