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
    /// Build the RayOS host image: a Debian kernel, an initramfs whose /init
    /// is `rayos init` (with the compositor, the host service, rayos-vmm, its
    /// backends, udev and the intent model), and the host volume (ext4) with
    /// the guest image. Boot it with scripts/run.sh.
    ///
    /// Writes DIR/vmlinuz, DIR/initrd.img and DIR/volume.img. Needs root
    /// (mke2fs -d keeps the guest files' owners) and the guest image
    /// (rayos image build).
    Host(HostArgs),
}

#[derive(Args, Debug)]
pub struct HostArgs {
    /// Output directory [default: $XDG_DATA_HOME/rayos/host, ~/.local/share/rayos/host].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The guest image to put on the host volume [default: rayos image build's output].
    #[arg(long, value_name = "DIR")]
    pub guest_image: Option<PathBuf>,
    /// Debian kernel metapackage of the host [default: this machine's apt candidate].
    #[arg(long, value_name = "PACKAGE", default_value = "linux-image-amd64")]
    pub kernel_package: String,
    /// Leave the intent model out (requests then go by app name only).
    #[arg(long)]
    pub no_model: bool,
    /// virtiofsd [default: beside this program, PATH, then scripts/setup.sh's cache].
    #[arg(long, value_name = "PATH")]
    pub virtiofsd: Option<PathBuf>,
    /// Free space on the host volume besides the guest image, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub volume_free_mib: u64,
    /// Keep DIR/volume.img when it exists (its state, policy and files
    /// survive; the guest image on it stays the one it was made with).
    #[arg(long)]
    pub keep_volume: bool,
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

fn data_dir(name: &str) -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"))
        .join("rayos")
        .join(name)
}

pub fn image_cmd(cmd: ImageCommand) -> Result<std::process::ExitCode, CliError> {
    let a = match cmd {
        ImageCommand::Build(a) => a,
        ImageCommand::Host(h) => return host_image_cmd(h),
    };
    let out = a.out.unwrap_or_else(|| data_dir("guest"));
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

fn host_image_cmd(a: HostArgs) -> Result<std::process::ExitCode, CliError> {
    use rayos_image::debs::{self, DebCache};
    let t0 = std::time::Instant::now();
    let out = a.out.unwrap_or_else(|| data_dir("host"));
    let guest_image = a.guest_image.unwrap_or_else(|| data_dir("guest"));
    let step = |line: &str| {
        println!("[host image {:>5.1} s] {line}", t0.elapsed().as_secs_f64());
        let _ = std::io::stdout().flush();
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| CliError::Target(format!("rayos image host: {what}: {e}"));
    let cache_root = debs::default_cache_root();
    let cache = DebCache::new(&cache_root).map_err(|e| fail("package cache", &e))?;
    let kernel_pkg = cache.resolve_kernel_package(&a.kernel_package).map_err(|e| fail("--kernel-package", &e))?;
    step(&format!("kernel package {kernel_pkg} (from {})", a.kernel_package));
    let kernel_root = cache
        .extract(&cache.fetch(&kernel_pkg).map_err(|e| fail(&kernel_pkg, &e))?)
        .map_err(|e| fail(&kernel_pkg, &e))?;
    let tree = rayos_image::kmod::ModuleTree::open(&kernel_root).map_err(|e| fail("kernel modules", &e))?;
    let vmlinuz = kernel_root.join("boot").join(format!("vmlinuz-{}", tree.release()));
    let bb_root = cache
        .extract(&cache.fetch("busybox-static").map_err(|e| fail("busybox-static", &e))?)
        .map_err(|e| fail("busybox-static", &e))?;
    let busybox = rayos_image::hostimage::busybox_in(&bb_root)
        .ok_or_else(|| fail("busybox-static", &format!("no busybox in {}", bb_root.display())))?;
    let exe = std::env::current_exe().map_err(|e| fail("this program's path", &e))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let virtiofsd = match a.virtiofsd {
        Some(p) => p,
        None => rayosd::find_tool("virtiofsd", None, &[cache_root.join("tools/bin/virtiofsd")])
            .map_err(|e| fail("virtiofsd (scripts/setup.sh builds it; or --virtiofsd)", &e))?,
    };
    let mut binaries = vec![(exe.clone(), "/usr/bin/rayos".to_string())];
    for b in ["rayos-vmm", "rayos-vsock", "rayos-compositor"] {
        binaries.push((dir.join(b), format!("/usr/bin/{b}")));
    }
    binaries.push((virtiofsd, "/usr/bin/virtiofsd".into()));
    let model = if a.no_model {
        None
    } else {
        let spec = crate::models::find(crate::models::DEFAULT_MODEL).expect("the default model is known");
        let store = crate::models::ModelStore::open_default();
        if store.state(&spec) != crate::models::InstallState::Installed {
            return Err(CliError::Target(format!(
                "rayos image host: the intent model {} is not installed here (rayos models install), or pass --no-model",
                spec.name
            )));
        }
        Some((store.model_dir(&spec), spec.name.clone()))
    };
    let model_line = match &model {
        Some((_, name)) => format!(
            "model_source = \"{}/{}/{name}\"\n",
            rayos_image::hostimage::VOLUME_MOUNT,
            rayos_image::hostimage::FACTORY_MODELS
        ),
        None => String::new(),
    };
    let spec = rayos_image::hostimage::HostImageSpec {
        vmlinuz,
        busybox,
        binaries,
        udevd: ["/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/lib/systemd/systemd-udevd")),
        udevadm: PathBuf::from("/usr/bin/udevadm"),
        model,
        guest_image,
        init_toml: format!(
            "# rayos init's settings (written by rayos image host)\nvolume_device = \"/dev/vda\"\n{model_line}"
        ),
        out,
        volume_free_mib: a.volume_free_mib,
        keep_volume: a.keep_volume,
    };
    let img = rayos_image::hostimage::build(&spec, &tree, &step).map_err(|e| fail("build", &e))?;
    println!("RayOS host image in {:.1} s:", t0.elapsed().as_secs_f64());
    println!("  kernel  {} ({})", img.vmlinuz.display(), tree.release());
    println!(
        "  initrd  {} ({:.1} MiB, {} modules{})",
        img.initrd.display(),
        img.initrd_bytes as f64 / 1048576.0,
        img.modules,
        if img.stripped { "" } else { ", programs not stripped: no strip here" }
    );
    println!(
        "  volume  {} ({} MiB ext4, the guest image in slot a; first boot sets it up)",
        img.volume.display(),
        img.volume_mib
    );
    Ok(std::process::ExitCode::SUCCESS)
}
