//! `rayos image build`: build the Linux guest from Debian packages.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use rayos_image::{BuildOptions, Progress};

use super::CliError;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build (or refresh) the guest image: kernel, initramfs and root file
    /// system from Debian trixie, with the guest agent, and a manifest.
    ///
    /// Needs root (mmdebstrap in root mode; files owned by guest users). The
    /// Debian mirror comes from this machine's apt sources unless --mirror.
    /// A second build with the same packages reuses the root file system and
    /// only refreshes the agent, init, initramfs and checksums.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Output directory [default: $XDG_DATA_HOME/rayos/guest, ~/.local/share/rayos/guest].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Download cache [default: $RAYOS_CACHE_DIR/image, ~/.cache/rayos/image].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Guest agent binary [default: rayos-guest-agent next to this program].
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Debian mirror URI (default: from /etc/apt/sources.list.d/debian.sources or sources.list).
    #[arg(long, value_name = "URI")]
    pub mirror: Option<String>,
    /// More Debian packages for the root file system (repeatable).
    #[arg(long = "package", value_name = "NAME")]
    pub packages: Vec<String>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

pub fn image_cmd(cmd: ImageCommand) -> Result<std::process::ExitCode, CliError> {
    let ImageCommand::Build(a) = cmd;
    let out = a.out.unwrap_or_else(|| {
        std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".local/share"))
            .join("rayos/guest")
    });
    let cache = a.cache.unwrap_or_else(|| {
        std::env::var_os("RAYOS_CACHE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache/rayos"))
            .join("image")
    });
    let agent = match a.agent {
        Some(p) => p,
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("rayos-guest-agent")))
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                CliError::Usage(
                    "rayos-guest-agent not found next to rayos; build the workspace or pass --agent PATH".into(),
                )
            })?,
    };
    if !agent.is_file() {
        return Err(CliError::Usage(format!("--agent {}: no such file", agent.display())));
    }
    let mut opts = BuildOptions::new(&out, &cache, &agent);
    opts.mirror = a.mirror;
    opts.extra_packages = a.packages;
    let tty = std::io::stderr().is_terminal();
    let mut last_count = 0u32;
    let manifest = rayos_image::build(&opts, &mut |p: Progress| {
        let counted = match &p {
            Progress::Download { fetched, total, .. } => Some((*fetched, *total)),
            Progress::Install { done, total, .. } => Some((*done, *total)),
            _ => None,
        };
        match counted {
            Some((n, _)) if tty => {
                let mut e = std::io::stderr();
                let _ = write!(e, "\r\x1b[2K{p}");
                let _ = e.flush();
                last_count = n;
            }
            Some((n, total)) => {
                if n == 1 || n == total || n >= last_count + 20 {
                    eprintln!("{p}");
                    last_count = n;
                }
            }
            None => {
                if tty && last_count > 0 {
                    eprintln!();
                }
                last_count = 0;
                eprintln!("{p}");
            }
        }
    })
    .map_err(|e| CliError::Target(format!("guest image: {e}")))?;
    println!("guest image: {}", out.display());
    println!("  kernel   {} ({})", out.join(&manifest.vmlinuz).display(), manifest.kernel_release);
    println!("  initrd   {}", out.join(&manifest.initramfs).display());
    println!("  rootfs   {} (virtio-fs tag rootfs)", out.join(&manifest.rootfs).display());
    println!(
        "  manifest {} ({} packages from {} {})",
        out.join("manifest.json").display(),
        manifest.packages.len(),
        manifest.mirror,
        manifest.suite
    );
    println!("  cmdline  {}", manifest.kernel_cmdline);
    Ok(std::process::ExitCode::SUCCESS)
}
