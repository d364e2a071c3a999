//! Arbitrary text as a guest's `.desktop` file (the guest is untrusted: the
//! host reads these through the catalog): the parser never panics, an entry
//! it returns keeps its id and survives a JSON round trip, and expanding its
//! `Exec` line with arbitrary arguments either fails with a typed error or
//! gives a non-empty argv that carries no field code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rayos_contract::desktop::{expand_exec, parse_desktop, split_exec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The last line (if any) doubles as the arguments of a launch.
    let args: Vec<String> = text.lines().last().unwrap_or("").split('\t').map(str::to_string).collect();
    let _ = split_exec(text);
    match parse_desktop("fuzz.desktop", text) {
        Ok(Some(entry)) => {
            assert_eq!(entry.id, "fuzz.desktop");
            let json = serde_json::to_string(&entry).unwrap();
            let back: rayos_contract::DesktopEntry = serde_json::from_str(&json).unwrap();
            assert_eq!(back, entry);
            for given in [&args[..0], &args[..args.len().min(1)], &args[..]] {
                if let Ok(argv) = expand_exec(&entry, given) {
                    assert!(!argv.is_empty());
                    assert!(!argv[0].is_empty() || entry.exec.contains("\"\""), "an empty program from {:?}", entry.exec);
                }
            }
        }
        Ok(None) => {}
        Err(why) => assert!(!why.is_empty()),
    }
});
