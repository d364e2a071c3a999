//! Embeds the desktop entries in guest-image/rootfs/applications/ so the
//! library installs them without needing the source tree at run time.

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/applications");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<_> =
        std::fs::read_dir(&dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    entries.retain(|p| p.extension().is_some_and(|e| e == "desktop"));
    entries.sort();
    let mut code = String::from("/// Desktop entries installed into /usr/share/applications: (file name, contents).\npub const DESKTOP_ENTRIES: &[(&str, &[u8])] = &[\n");
    for p in &entries {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name");
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            p.canonicalize().expect("entry path").display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("desktop_entries.rs");
    std::fs::write(out, code).expect("write desktop_entries.rs");
}
