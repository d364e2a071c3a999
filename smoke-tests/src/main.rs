//! `rayos-smoke`: thin binary over the `rayos_smoke` library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = rayos_smoke::cli::Cli::parse();
    let filter = match &cli.log {
        Some(f) => EnvFilter::try_new(f)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();

    let outcome = rayos_smoke::scenarios::run(&cli.scenario);
    println!("{}", outcome.line());
    std::process::exit(outcome.exit_code());
}
