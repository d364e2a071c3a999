//! Manual image build: `cargo run --release -p rayos-image --example build --
//! OUT_DIR CACHE_DIR AGENT [--mirror URI] [--extra PKG]...` (as root).

use rayos_image::{BuildOptions, Progress};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(out), Some(cache), Some(agent)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: build OUT_DIR CACHE_DIR AGENT [--mirror URI] [--extra PKG]...");
        std::process::exit(2);
    };
    let mut opts = BuildOptions::new(out, cache, agent);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--mirror", Some(m)) => opts.mirror = Some(m),
            ("--extra", Some(p)) => opts.extra_packages.push(p),
            _ => {
                eprintln!("bad argument {a}");
                std::process::exit(2);
            }
        }
    }
    let mut render = |p: Progress| match &p {
        // Every 25th package and the last one of each count.
        Progress::Download { fetched, total, .. } if fetched % 25 != 0 && fetched != total => {}
        Progress::Install { done, total, .. } if done % 25 != 0 && done != total => {}
        _ => eprintln!("{p}"),
    };
    match rayos_image::build(&opts, &mut render) {
        Ok(m) => println!("{}", serde_json::to_string_pretty(&m.sha256).unwrap_or_default()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
