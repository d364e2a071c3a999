//! The engine on a small catalog with the deterministic test embedder.

use super::*;
use crate::intent::action::Action;
use crate::intent::args;
use crate::intent::catalog::parse_desktop;
use crate::intent::describe::words;
use crate::intent::embed::fake::HashEmbedder;

fn entry(id: &str, body: &str) -> DesktopEntry {
    parse_desktop(id, &format!("[Desktop Entry]\nType=Application\n{body}")).unwrap().unwrap()
}

fn catalog() -> Catalog {
    Catalog::from_entries(vec![
        entry("firefox.desktop", "Name=Firefox\nGenericName=Web Browser\nComment=Browse the World Wide Web\nExec=firefox %u\nCategories=Network;WebBrowser;\nMimeType=text/html;x-scheme-handler/https;\n"),
        entry("foot.desktop", "Name=Foot\nGenericName=Terminal\nComment=A terminal emulator\nKeywords=shell;prompt;command;\nExec=foot\nCategories=System;TerminalEmulator;\n"),
        entry("footclient.desktop", "Name=Foot Client\nGenericName=Terminal\nComment=A terminal emulator client\nKeywords=shell;prompt;command;\nExec=footclient\nCategories=System;TerminalEmulator;\n"),
        entry("evince.desktop", "Name=Document Viewer\nComment=View PDF documents\nKeywords=pdf;document;\nExec=evince %U\nMimeType=application/pdf;\n"),
        entry("panel.desktop", "Name=Wallpaper\nComment=Change the desktop background wallpaper\nExec=settings background\nNoDisplay=true\n"),
        entry("shows.desktop", "Name=Wallpaper Shows\nComment=Slide shows of wallpaper\nExec=shows\n"),
    ])
}

fn engine(cfg: EngineConfig) -> Engine<HashEmbedder> {
    let e = HashEmbedder::new();
    let mut cache = VectorCache::in_memory(e.fingerprint(), e.dim());
    Engine::build(e, catalog(), &mut cache, cfg).unwrap()
}

#[test]
fn launches_the_best_app_with_its_arguments() {
    let eng = engine(EngineConfig::default());
    let r = eng.resolve("browse the web at https://example.org/a").unwrap();
    match &r.action {
        Action::Launch { app_id, args, confidence } => {
            assert_eq!(app_id, "firefox.desktop");
            assert_eq!(args, &["https://example.org/a".to_string()]);
            assert!(*confidence > 0.5 && *confidence <= 1.0);
        }
        other => panic!("{other:?}\n{}", r.explanation),
    }
    let r = eng.resolve("view the pdf document ~/a.pdf").unwrap();
    assert_eq!(r.action.launched(), Some("evince.desktop"), "{}", r.explanation);
    assert!(r.explanation.to_string().contains("decision:"));
}

#[test]
fn unrelated_requests_get_none() {
    let eng = engine(EngineConfig::default());
    let r = eng.resolve("order a pizza with extra olives").unwrap();
    assert_eq!(r.action, Action::none(), "{}", r.explanation);
    let r = eng.resolve("format my hard drive").unwrap();
    assert!(matches!(r.action, Action::None { reason: Some(_) }), "{}", r.explanation);
}

#[test]
fn clarify_between_thresholds_with_one_candidate_per_program() {
    let cfg = EngineConfig { launch_threshold: 0.99, clarify_threshold: 0.05, ..Default::default() };
    let eng = engine(cfg);
    let r = eng.resolve("terminal shell").unwrap();
    match &r.action {
        Action::Clarify { candidates, .. } => {
            assert!(candidates.len() <= 3);
            assert!(candidates[0].app_id.starts_with("foot"));
            let ids: HashSet<_> = candidates.iter().map(|c| c.app_id.as_str()).collect();
            assert_eq!(ids.len(), candidates.len());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nodisplay_only_when_nothing_visible_fits() {
    let cfg = EngineConfig {
        launch_threshold: 0.3,
        clarify_threshold: 0.1,
        name_bonus: 0.0,
        helper_penalty: 0.0,
        ..Default::default()
    };
    let eng = engine(cfg);
    // Both wallpaper apps match; the visible one wins even if the hidden one scores higher.
    let r = eng.resolve("change the desktop background wallpaper").unwrap();
    assert_eq!(r.action.launched(), Some("shows.desktop"), "{}", r.explanation);
    // With a higher bar only the hidden one qualifies: used, and said so.
    let scored_hidden = r.explanation.top.iter().find(|s| s.app_id == "panel.desktop").unwrap().score;
    let scored_visible = r.explanation.top.iter().find(|s| s.app_id == "shows.desktop").unwrap().score;
    assert!(scored_hidden > scored_visible);
    let cfg = EngineConfig {
        launch_threshold: (scored_hidden + scored_visible) / 2.0,
        clarify_threshold: 0.1,
        name_bonus: 0.0,
        helper_penalty: 0.0,
        ..Default::default()
    };
    let r = engine(cfg).resolve("change the desktop background wallpaper").unwrap();
    assert_eq!(r.action.launched(), Some("panel.desktop"), "{}", r.explanation);
    assert!(r.explanation.decision.contains("NoDisplay"));
}

#[test]
fn hidden_helpers_are_penalised_unless_named() {
    let eng = engine(EngineConfig::default());
    let ex = args::extract("change the desktop background wallpaper");
    let s = eng.score(&ex, &words("change the desktop background wallpaper"), 10).unwrap();
    let panel = s.iter().find(|x| x.app_id == "panel.desktop").unwrap();
    assert_eq!(panel.helper_penalty, 0.10, "NoDisplay without a Settings category");
    assert!(s.iter().filter(|x| !x.no_display).all(|x| x.helper_penalty == 0.0));
    let r = eng.resolve("change the desktop background wallpaper").unwrap();
    assert!(r.explanation.to_string().contains("hidden helper"));
}

#[test]
fn requests_in_words_no_app_uses_never_launch() {
    // Thresholds so low that anything would launch, yet words the catalog
    // never uses give no launch: none below the launch threshold.
    let cfg = EngineConfig {
        launch_threshold: 2.0,
        clarify_threshold: -1.0,
        weak_clarify_threshold: -1.0,
        ..Default::default()
    };
    let r = engine(cfg).resolve("zorblat quux").unwrap();
    assert_eq!(r.action, Action::none(), "{}", r.explanation);
    assert!(r.explanation.decision.contains("no word of the request"));
    // A grounded request with the same thresholds is asked back about.
    let r = engine(cfg).resolve("terminal quux").unwrap();
    assert!(matches!(r.action, Action::Clarify { .. }), "{}", r.explanation);
    let cfg = EngineConfig { launch_threshold: -1.0, ..cfg };
    let r = engine(cfg).resolve("zorblat quux").unwrap();
    assert!(matches!(r.action, Action::Clarify { .. }), "{}", r.explanation);
    assert_eq!(r.action.launched(), None);
}

#[test]
fn weak_matches_are_offered_only_with_a_shared_word() {
    let eng = engine(EngineConfig::default());
    let ex = args::extract("terminal quux");
    let s = eng.score(&ex, &words("terminal quux"), 10).unwrap();
    let foot = s.iter().find(|x| x.app_id == "foot.desktop").unwrap();
    assert!(foot.lexical_bonus > 0.0);
    let cfg = EngineConfig {
        launch_threshold: 2.0,
        clarify_threshold: foot.score + 0.01,
        weak_clarify_threshold: foot.score - 0.01,
        ..Default::default()
    };
    let r = engine(cfg).resolve("terminal quux").unwrap();
    assert_eq!(r.action.first_choice(), Some("foot.desktop"), "{}", r.explanation);
}

#[test]
fn naming_the_program_adds_the_bonus_only_for_rare_names() {
    let eng = engine(EngineConfig::default());
    let ex = args::extract("start footclient now");
    let s = eng.score(&ex, &words("start footclient now"), 10).unwrap();
    let fc = s.iter().find(|x| x.app_id == "footclient.desktop").unwrap();
    assert!(fc.name_bonus > 0.0);
    // "terminal" names both foot apps' GenericName but that is one family… and
    // "wallpaper" is used by two families: no bonus for either.
    let ex = args::extract("wallpaper");
    let s = eng.score(&ex, &words("wallpaper"), 10).unwrap();
    assert!(s.iter().all(|x| x.name_bonus == 0.0 || x.app_id == "shows.desktop" || x.app_id == "panel.desktop"));
}

#[test]
fn bad_requests_are_refused() {
    let eng = engine(EngineConfig::default());
    assert!(matches!(eng.resolve("   "), Err(EngineError::EmptyRequest)));
    let long = "a".repeat(MAX_REQUEST_BYTES + 1);
    assert!(
        matches!(eng.resolve(&long), Err(EngineError::RequestTooLong { len, cap }) if len == MAX_REQUEST_BYTES + 1 && cap == MAX_REQUEST_BYTES)
    );
    assert!(matches!(validate_request(b"open \xff", 100), Err(EngineError::NotUtf8 { offset: 5 })));
}

#[test]
fn args_the_app_cannot_take_are_dropped() {
    let eng = engine(EngineConfig::default());
    let r = eng.resolve("terminal shell prompt command in ~/projects/").unwrap();
    if let Action::Launch { args, .. } = &r.action {
        assert!(args.is_empty(), "foot's Exec has no field code");
        assert!(r.explanation.decision.contains("not passed"));
    }
}

#[test]
fn thousands_of_entries_stay_fast() {
    let mut entries = catalog().entries;
    for i in 0..5000 {
        entries.push(entry(
            &format!("gen{i}.desktop"),
            &format!("Name=Tool {i}\nGenericName=Utility number{i}\nComment=Does task{i} with widget{}\nKeywords=k{i};w{};\nExec=tool{i} %f\nCategories=Utility;\n", i % 97, i % 13),
        ));
    }
    let e = HashEmbedder::new();
    let mut cache = VectorCache::in_memory(e.fingerprint(), e.dim());
    let t = std::time::Instant::now();
    let eng = Engine::build(e, Catalog::from_entries(entries), &mut cache, EngineConfig::default()).unwrap();
    let build = t.elapsed();
    let t = std::time::Instant::now();
    for _ in 0..20 {
        eng.resolve("browse the web").unwrap();
    }
    let per = t.elapsed() / 20;
    assert!(build.as_secs_f32() < 10.0, "build {build:?}");
    assert!(per.as_millis() < 50, "resolve {per:?} per request over 5006 apps");
}

#[test]
fn among_near_equals_the_system_default_of_that_kind_is_launched() {
    let launched = |default: Option<&str>| {
        let mut cat = catalog();
        for e in &mut cat.entries {
            if Some(e.id.as_str()) == default {
                e.default_for = vec!["TerminalEmulator".into()];
            }
        }
        let e = HashEmbedder::new();
        let mut cache = VectorCache::in_memory(e.fingerprint(), e.dim());
        let eng = Engine::build(e, cat, &mut cache, EngineConfig::default()).unwrap();
        let r = eng.resolve("a terminal emulator please").unwrap();
        match r.action {
            Action::Launch { app_id, .. } => (app_id, r.explanation.decision),
            other => panic!("{other:?}"),
        }
    };
    let (plain, _) = launched(None);
    let other = if plain == "foot.desktop" { "footclient.desktop" } else { "foot.desktop" };
    let (chosen, why) = launched(Some(other));
    assert_eq!(chosen, other, "{why}");
    assert!(why.contains("the system's default TerminalEmulator"), "{why}");
    // A default of another kind changes nothing.
    let (chosen, _) = launched(Some("firefox.desktop"));
    assert_eq!(chosen, plain);
}
