//! `rayos-vsock`: RayOS's vhost-user-vsock device backend.

use std::path::PathBuf;

use clap::Parser;
use rayos_vsock::{self as vsock, MuxerConfig, ServeEnd, ShutdownTrigger};

/// vhost-user-vsock backend with hybrid vsock over unix sockets.
///
/// Serves one vhost-user frontend (rayos-vmm `--vhost-user
/// virtio-id=19,socket=SOCKET`, three queues by default, or QEMU's `vhost-user-vsock-pci`
/// with `chardev=` on SOCKET), then exits when that frontend disconnects,
/// or on SIGINT/SIGTERM.
///
/// Hybrid vsock: a guest that connects to CID 2 (the host) port P is
/// connected to the unix socket `<UDS_PATH>_P`; if nothing listens there
/// the guest gets a connection reset. A host process reaches guest port P
/// by connecting to UDS_PATH and writing "CONNECT P\n"; once the guest
/// accepts it reads "OK <host port>\n" and the stream is open; if the guest
/// refuses or does not answer within 2 s the socket is closed.
#[derive(Parser, Debug)]
#[command(name = "rayos-vsock", version)]
struct Args {
    /// vhost-user socket to listen on for the frontend.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Hybrid vsock socket: host processes connect here; guest connections
    /// to host port P go to PATH_P.
    #[arg(long = "uds-path", value_name = "PATH")]
    uds_path: PathBuf,
    /// The guest's context ID (3 to 4294967294).
    #[arg(long = "guest-cid", value_name = "N", default_value_t = 3)]
    guest_cid: u64,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "rayos_vmm=info,rayos_vsock=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = Args::parse();
    if !vsock::valid_guest_cid(args.guest_cid) {
        eprintln!("rayos-vsock: error: --guest-cid {}: not a guest CID (0, 1, 2 and 4294967295 are reserved; use 3 to 4294967294)", args.guest_cid);
        std::process::exit(2);
    }
    if args.socket == args.uds_path {
        eprintln!(
            "rayos-vsock: error: --socket {} and --uds-path {} must differ",
            args.socket.display(),
            args.uds_path.display()
        );
        std::process::exit(2);
    }
    for (flag, p) in [("--socket", &args.socket), ("--uds-path", &args.uds_path)] {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            eprintln!("rayos-vsock: error: {flag} {}: directory {} does not exist", p.display(), dir.display());
            std::process::exit(2);
        }
    }

    let trigger = ShutdownTrigger::default();
    let t = trigger.clone();
    let files = [args.socket.clone(), args.uds_path.clone()];
    match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    tracing::info!("signal {sig}: shutting down");
                    // Connected: serve() returns and main cleans up. Still
                    // waiting for a frontend: nothing to wait for.
                    t.shutdown();
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    for f in &files {
                        let _ = std::fs::remove_file(f);
                    }
                    std::process::exit(0);
                }
            });
        }
        Err(e) => {
            eprintln!("rayos-vsock: error: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    }

    let cfg = MuxerConfig::new(args.guest_cid, &args.uds_path);
    match vsock::serve(&args.socket, cfg, &trigger) {
        Ok(ServeEnd::Disconnected) => tracing::info!("frontend disconnected"),
        Ok(ServeEnd::Shutdown) => tracing::info!("stopped"),
        Err(e) => {
            let flag = match &e {
                vsock::BackendError::Muxer(_) => format!("--uds-path {}: ", args.uds_path.display()),
                vsock::BackendError::Daemon(_) => format!("--socket {}: ", args.socket.display()),
                _ => String::new(),
            };
            eprintln!("rayos-vsock: error: {flag}{e}");
            std::process::exit(1);
        }
    }
    let _ = std::fs::remove_file(&args.socket);
}
