//! `rayos-vmm` binary: parse, validate, run, map the outcome to an exit status.

use clap::Parser;
use rayos_vmm::{cli, vm};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "rayos_vmm=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let args = cli::Args::parse();
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rayos-vmm: error: {e}");
            std::process::exit(2);
        }
    };
    match vm::run(&config) {
        Ok(outcome) => {
            let code = outcome.exit_code();
            if code == 0 {
                tracing::info!("{}", outcome.describe());
            } else {
                eprintln!("rayos-vmm: {}", outcome.describe());
            }
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("rayos-vmm: error: {e}");
            std::process::exit(1);
        }
    }
}
