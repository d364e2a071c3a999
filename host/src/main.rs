//! `rayos`: thin binary over the library's command line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`rayos intent --batch f | head -1`) like
    // other Unix tools, instead of panicking inside println!.
    // SAFETY: called first thing in main, before any other thread exists;
    // setting SIGPIPE to its default action touches no Rust-managed state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Still single-threaded: fix candle's CPU thread count in the environment
    // before any thread (tokio, rayon) starts.
    rayos::intent::bert::pin_cpu_threads();
    // The kernel starts the host image's /init (a link to this binary) as PID 1
    // with its own arguments: no command line to parse.
    if rayos::cli::started_as_init() {
        rayos::cli::run_as_init();
    }
    let cli = rayos::cli::Cli::parse();
    // The host service logs what it and its children do; other commands are quiet.
    let service = matches!(cli.command, rayos::cli::Command::Host(_));
    let default = match cli.verbose {
        0 if service => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAYOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    rayos::cli::run(cli)
}
