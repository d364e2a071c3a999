//! Property tests: random sequences of shell operations (through the shell
//! API and through the control handler) keep the shell's invariants.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rayos_compositor::control::{handle, Reply, Request, ServerMessage};
use rayos_compositor::decoration::Decoration;
use rayos_compositor::origin::{Origin, Rgb, HOST_COLOUR, MIN_COLOUR_DISTANCE};
use rayos_compositor::shell::{MapRequest, Shell, MIN_CLIENT_H, MIN_CLIENT_W};
use rayos_compositor::window::{Mode, WindowId, MAX_TITLE_CHARS};
use rayos_compositor::Size;

const VMS: [&str; 3] = ["alpha", "beta", "gamma"];
const COLOURS: [Rgb; 4] = [
    Rgb::new(0x2e, 0xa0, 0x43),
    Rgb::new(0xd0, 0x30, 0x30),
    Rgb::new(0xe0, 0xa0, 0x10),
    HOST_COLOUR, // always refused
];

#[derive(Debug, Clone)]
enum Op {
    Map { origin: usize, stale: bool, desktop: bool, w: i32, h: i32, title: String },
    Unmap(usize),
    Close(usize),
    ControlClose(usize),
    Focus(usize),
    ControlFocus(usize),
    Activate(usize),
    Raise(usize),
    Minimize(usize),
    Move(usize, i32, i32),
    Resize(usize, i32, i32),
    Maximize(usize, bool),
    Fullscreen(usize, bool),
    SetTitle(usize, String),
    Register(usize, usize),
    Unregister(usize),
    ControlUnregister(usize),
    Policy(usize, bool),
    Output(i32, i32),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,20}",
        any::<String>(),
        prop::collection::vec(prop_oneof![Just('\u{202e}'), Just('\n'), Just('\u{1b}'), Just('x'), Just(' ')], 0..300)
            .prop_map(|v| v.into_iter().collect()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let idx = 0usize..64;
    let coord = -30_000i32..30_000;
    let size = prop_oneof![-10i32..200, 0i32..5000, Just(i32::MAX), Just(i32::MIN)];
    prop_oneof![
        6 => (0usize..4, any::<bool>(), prop::bool::weighted(0.25), size.clone(), size.clone(), text())
            .prop_map(|(origin, stale, desktop, w, h, title)| Op::Map { origin, stale, desktop, w, h, title }),
        1 => idx.clone().prop_map(Op::Unmap),
        1 => idx.clone().prop_map(Op::Close),
        1 => idx.clone().prop_map(Op::ControlClose),
        2 => idx.clone().prop_map(Op::Focus),
        1 => idx.clone().prop_map(Op::ControlFocus),
        1 => idx.clone().prop_map(Op::Activate),
        1 => idx.clone().prop_map(Op::Raise),
        1 => idx.clone().prop_map(Op::Minimize),
        2 => (idx.clone(), coord.clone(), coord).prop_map(|(i, x, y)| Op::Move(i, x, y)),
        2 => (idx.clone(), size.clone(), size).prop_map(|(i, w, h)| Op::Resize(i, w, h)),
        1 => (idx.clone(), any::<bool>()).prop_map(|(i, b)| Op::Maximize(i, b)),
        1 => (idx.clone(), any::<bool>()).prop_map(|(i, b)| Op::Fullscreen(i, b)),
        1 => (idx, text()).prop_map(|(i, t)| Op::SetTitle(i, t)),
        2 => (0usize..3, 0usize..4).prop_map(|(v, c)| Op::Register(v, c)),
        1 => (0usize..3).prop_map(Op::Unregister),
        1 => (0usize..3).prop_map(Op::ControlUnregister),
        1 => (0usize..3, any::<bool>()).prop_map(|(v, b)| Op::Policy(v, b)),
        1 => (100i32..4000, 100i32..2500).prop_map(|(w, h)| Op::Output(w, h)),
    ]
}

/// What the test remembers across operations.
#[derive(Default)]
struct Model {
    /// Every id ever handed out, in order.
    issued: Vec<WindowId>,
    /// Last origin seen for each VM name (possibly of an earlier registration).
    last_origin: BTreeMap<&'static str, Origin>,
}

impl Model {
    fn pick(&self, i: usize) -> WindowId {
        if self.issued.is_empty() || i % 8 == 7 {
            WindowId(1_000_000 + i as u64) // never issued
        } else {
            self.issued[i % self.issued.len()]
        }
    }
}

fn check_invariants(s: &Shell, model: &Model) -> Result<(), TestCaseError> {
    let out = s.output().rect();
    let live: BTreeSet<WindowId> = s.windows().map(|w| w.id).collect();

    // Stacking holds exactly the live windows, once each.
    let mut stack = s.stack().to_vec();
    prop_assert_eq!(stack.len(), s.len(), "stack length");
    stack.sort();
    stack.dedup();
    prop_assert_eq!(stack.len(), s.len(), "duplicate in stack");
    prop_assert_eq!(stack.iter().copied().collect::<BTreeSet<_>>(), live.clone());

    // The focused window is live, visible and from an origin that accepts windows.
    if let Some(f) = s.focused() {
        let w = s.window(f);
        prop_assert!(w.is_some(), "focused window {} is gone", f);
        let w = w.unwrap();
        prop_assert!(!w.minimized, "focused window is minimized");
        prop_assert!(s.registry().accepts(&w.origin), "focused window's origin is refused");
    }

    // At most one embedded desktop per VM, none for the host; no window of an
    // unregistered VM; the registry's bookkeeping matches the windows.
    let mut desktops: BTreeMap<String, usize> = BTreeMap::new();
    for w in s.windows() {
        match &w.origin {
            Origin::Host => prop_assert_eq!(w.mode, Mode::Native),
            Origin::Vm { name, .. } => {
                prop_assert!(s.registry().is_live(&w.origin), "window {} of unregistered VM {}", w.id, name);
                let entry = s.registry().get(name).unwrap();
                prop_assert!(entry.windows.contains(&w.id));
                if w.mode == Mode::EmbeddedDesktop {
                    *desktops.entry(name.clone()).or_default() += 1;
                    prop_assert_eq!(entry.desktop, Some(w.id));
                }
            }
        }
    }
    prop_assert!(desktops.values().all(|&n| n <= 1), "{:?}", desktops);
    for vm in s.registry().vms() {
        prop_assert!(vm.windows.iter().all(|id| live.contains(id)), "registry holds a dead window");
        prop_assert!(vm.colour.distance(HOST_COLOUR) >= MIN_COLOUR_DISTANCE, "VM has the host colour");
        prop_assert_eq!(&vm.socket, &format!("rayos-vm-{}", vm.name));
    }

    for w in s.windows() {
        let g = s.geometry(w.id).unwrap();
        let frame = s.frame(w.id).unwrap();
        // Every window intersects the output and its title bar stays reachable.
        prop_assert!(g.intersects(&out), "window {} at {:?} is off {:?}", w.id, g, out);
        prop_assert!(frame.y >= 0 && frame.intersects(&out), "frame {:?}", frame);
        prop_assert!(g.w >= MIN_CLIENT_W && g.h >= MIN_CLIENT_H, "too small: {:?}", g);
        prop_assert!(g.w <= out.w && g.h <= out.h, "larger than output: {:?}", g);
        // Decorations never overlap their client; the label is the origin's.
        if let Some(d) = s.decoration(w.id).unwrap() {
            for r in d.painted() {
                prop_assert!(!r.intersects(&g), "decoration {:?} overlaps client {:?}", r, g);
            }
            for r in [d.close, d.maximize, d.label_rect, d.title_rect] {
                prop_assert!(d.title_bar.contains_rect(&r));
            }
            prop_assert_eq!(&d.label, w.origin.label());
            prop_assert_eq!(d.colour, w.origin.colour());
            prop_assert!(d.title_bar.intersects(&out), "title bar off-screen");
            let again = Decoration::layout(g, &w.origin, d.style).unwrap().unwrap();
            prop_assert_eq!(again, d);
        } else {
            prop_assert!(matches!(w.origin, Origin::Host) && w.fullscreen, "only host fullscreen goes undecorated");
        }
        // Client text is sanitised.
        prop_assert!(w.title.chars().count() <= MAX_TITLE_CHARS);
        prop_assert!(!w.title.chars().any(|c| c.is_control() || c == '\u{202e}'), "{:?}", w.title);
    }

    // Ids were handed out strictly increasing (so never reused).
    prop_assert!(model.issued.windows(2).all(|p| p[0] < p[1]), "ids not increasing");
    prop_assert!(live.iter().all(|id| model.issued.contains(id)));
    prop_assert!(model.issued.last().is_none_or(|last| *last < s.next_id()));
    Ok(())
}

fn apply(s: &mut Shell, model: &mut Model, op: Op) -> Result<(), TestCaseError> {
    let focus_before = s.focused();
    match op {
        Op::Map { origin, stale, desktop, w, h, title } => {
            let origin = if origin == 0 {
                Origin::Host
            } else {
                let name = VMS[origin - 1];
                match (s.registry().get(name), model.last_origin.get(name)) {
                    (Some(e), _) if !stale => e.origin(),
                    (_, Some(old)) => old.clone(),
                    (Some(e), None) => e.origin(),
                    (None, None) => Origin::Vm { name: name.into(), colour: COLOURS[0] },
                }
            };
            // The policy, stated independently of the shell.
            let expect_ok = match &origin {
                Origin::Host => !desktop,
                Origin::Vm { name, .. } => {
                    s.registry().is_live(&origin)
                        && s.registry().accepts(&origin)
                        && !(desktop && s.registry().get(name).is_some_and(|e| e.desktop.is_some()))
                }
            };
            let mode = if desktop { Mode::EmbeddedDesktop } else { Mode::Native };
            let focused_origin = focus_before.and_then(|f| s.window(f)).map(|w| w.origin.clone());
            let req = MapRequest { origin: origin.clone(), mode, app_id: title.clone(), title, size: Size::new(w, h) };
            let res = s.map(req);
            prop_assert_eq!(res.is_ok(), expect_ok, "map {:?}: {:?}", origin, res);
            if let Ok(id) = res {
                prop_assert!(!model.issued.contains(&id), "id {} reused", id);
                model.issued.push(id);
                // Placement: a new window is entirely on the output.
                prop_assert!(s.output().rect().contains_rect(&s.frame(id).unwrap()));
                // No focus stealing across origins.
                match focused_origin {
                    Some(fo) if fo != origin => prop_assert_eq!(s.focused(), focus_before),
                    _ => prop_assert_eq!(s.focused(), Some(id)),
                }
            } else {
                prop_assert_eq!(s.focused(), focus_before);
            }
        }
        Op::Unmap(i) => {
            let _ = s.unmap(model.pick(i));
        }
        Op::Close(i) => {
            let id = model.pick(i);
            let was_live = s.window(id).is_some();
            prop_assert_eq!(s.close(id).is_ok(), was_live);
            prop_assert!(s.window(id).is_none());
            if was_live && focus_before == Some(id) {
                // Focus passes to the top-most eligible window.
                let expect =
                    s.stack().iter().rev().copied().find(|&w| !s.window(w).unwrap().minimized && s.can_focus(w));
                prop_assert_eq!(s.focused(), expect);
            }
        }
        Op::ControlClose(i) => {
            let id = model.pick(i);
            let was_live = s.window(id).is_some();
            let h = handle(s, Request::Close { id });
            prop_assert_eq!(matches!(h.reply, Some(ServerMessage::Ok(Reply::Done))), was_live);
            prop_assert!(s.window(id).is_none());
        }
        Op::Focus(i) => {
            let id = model.pick(i);
            let eligible = s.can_focus(id);
            prop_assert_eq!(s.focus(id).is_ok(), eligible);
            if eligible {
                prop_assert_eq!(s.focused(), Some(id));
                prop_assert_eq!(s.stack().last(), Some(&id), "focus raises");
            } else {
                prop_assert_eq!(s.focused(), focus_before);
            }
        }
        Op::ControlFocus(i) => {
            let id = model.pick(i);
            let eligible = s.can_focus(id);
            let h = handle(s, Request::Focus { id });
            prop_assert_eq!(matches!(h.reply, Some(ServerMessage::Ok(_))), eligible);
            prop_assert_eq!(s.focused(), if eligible { Some(id) } else { focus_before });
        }
        Op::Activate(i) => {
            let _ = s.request_activation(model.pick(i));
            prop_assert_eq!(s.focused(), focus_before, "a client request moved focus");
        }
        Op::Raise(i) => {
            let id = model.pick(i);
            if s.raise(id).is_ok() {
                prop_assert_eq!(s.stack().last(), Some(&id));
            }
            prop_assert_eq!(s.focused(), focus_before);
        }
        Op::Minimize(i) => {
            let _ = s.minimize(model.pick(i));
        }
        Op::Move(i, x, y) => {
            let _ = s.move_to(model.pick(i), x, y);
        }
        Op::Resize(i, w, h) => {
            let _ = s.resize(model.pick(i), w, h);
        }
        Op::Maximize(i, on) => {
            let id = model.pick(i);
            let before = s.window(id).map(|w| w.floating);
            let _ = s.set_maximized(id, on);
            prop_assert_eq!(s.window(id).map(|w| w.floating), before, "maximize changed floating geometry");
        }
        Op::Fullscreen(i, on) => {
            let id = model.pick(i);
            let before = s.window(id).map(|w| w.floating);
            let _ = s.set_fullscreen(id, on);
            prop_assert_eq!(s.window(id).map(|w| w.floating), before);
        }
        Op::SetTitle(i, t) => {
            let _ = s.set_title(model.pick(i), &t);
        }
        Op::Register(v, c) => {
            let name = VMS[v];
            let expect_ok = s.registry().get(name).is_none() && c != 3;
            let res = s.register_vm(name, COLOURS[c]);
            prop_assert_eq!(res.is_ok(), expect_ok, "{:?}", res);
            if let Ok(e) = res {
                model.last_origin.insert(name, e.origin());
            }
        }
        Op::Unregister(v) => {
            let name = VMS[v];
            let owned: BTreeSet<WindowId> =
                s.windows().filter(|w| w.origin.vm_name() == Some(name)).map(|w| w.id).collect();
            match s.unregister_vm(name) {
                Ok(closed) => prop_assert_eq!(closed.into_iter().collect::<BTreeSet<_>>(), owned),
                Err(_) => prop_assert!(owned.is_empty()),
            }
        }
        Op::ControlUnregister(v) => {
            let name = VMS[v];
            let registered = s.registry().get(name).is_some();
            let h = handle(s, Request::UnregisterVm { name: name.into() });
            prop_assert_eq!(matches!(h.reply, Some(ServerMessage::Ok(_))), registered);
        }
        Op::Policy(v, on) => {
            let _ = s.set_vm_policy(VMS[v], on);
        }
        Op::Output(w, h) => {
            let ok = Size::new(w, h).validate_output().is_ok();
            prop_assert_eq!(s.set_output_size(Size::new(w, h)).is_ok(), ok);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_invariants(ops in prop::collection::vec(op(), 1..80)) {
        let mut s = Shell::new(Size::new(1280, 800)).unwrap();
        let mut model = Model::default();
        for op in ops {
            apply(&mut s, &mut model, op)?;
            check_invariants(&s, &model)?;
        }
        // Draining events leaves nothing behind.
        let _ = s.take_events();
        prop_assert!(s.take_events().is_empty());
    }

    #[test]
    fn unregistering_every_vm_leaves_only_host_windows(ops in prop::collection::vec(op(), 1..60)) {
        let mut s = Shell::new(Size::new(1920, 1080)).unwrap();
        let mut model = Model::default();
        for op in ops {
            apply(&mut s, &mut model, op)?;
        }
        for name in VMS {
            let _ = s.unregister_vm(name);
        }
        prop_assert!(s.windows().all(|w| w.origin == Origin::Host));
        check_invariants(&s, &model)?;
    }

    #[test]
    fn hit_test_agrees_with_decorations(ops in prop::collection::vec(op(), 1..40), px in -50i32..2000, py in -50i32..1200) {
        let mut s = Shell::new(Size::new(1920, 1080)).unwrap();
        let mut model = Model::default();
        for op in ops {
            apply(&mut s, &mut model, op)?;
        }
        match s.hit_test(px, py) {
            None => {
                for w in s.windows().filter(|w| !w.minimized) {
                    prop_assert!(!s.frame(w.id).unwrap().contains(px, py));
                }
            }
            Some((id, hit)) => {
                prop_assert!(s.frame(id).unwrap().contains(px, py));
                let client = s.geometry(id).unwrap();
                prop_assert_eq!(hit == rayos_compositor::Hit::Client, client.contains(px, py));
                // Nothing above it covers the point.
                let pos = s.stack().iter().position(|w| *w == id).unwrap();
                for above in &s.stack()[pos + 1..] {
                    if !s.window(*above).unwrap().minimized {
                        prop_assert!(!s.frame(*above).unwrap().contains(px, py));
                    }
                }
            }
        }
    }
}
