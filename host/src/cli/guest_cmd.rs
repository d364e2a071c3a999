//! `rayos guest`: talk to a running guest's agent over the command channel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rayos_contract::{AppRef, DisplayMode, GuestPolicy, Launch};

use super::CliError;
use crate::guest::{printable, ClientError, GuestClient};

#[derive(Args, Debug)]
pub struct GuestArgs {
    /// The guest's hybrid vsock socket: the `--uds-path` given to its vsock
    /// backend (rayos-vsock).
    #[arg(long, env = "RAYOS_GUEST_VSOCK", value_name = "PATH")]
    pub vsock: PathBuf,
    /// vsock port of the guest agent.
    #[arg(long, default_value_t = rayos_contract::AGENT_PORT)]
    pub port: u32,
    /// Seconds to wait for the agent's answers.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: GuestCommand,
}

#[derive(Subcommand, Debug)]
pub enum GuestCommand {
    /// List the guest's app catalog (desktop id, name, what it is).
    Apps {
        /// One JSON array of catalog entries.
        #[arg(long)]
        json: bool,
        /// Include NoDisplay entries.
        #[arg(long)]
        all: bool,
    },
    /// Launch an app by desktop id, with files or URLs as arguments.
    ///
    /// Examples:
    ///   rayos guest --vsock /run/rayos/vm0.vsock launch org.codeberg.dnkl.foot.desktop
    ///   rayos guest --vsock PATH launch --wait --command -- sh -c 'exit 3'
    #[command(verbatim_doc_comment)]
    Launch {
        /// Desktop id (or, with --command, the program).
        app: String,
        /// Files or URLs for the app (or, with --command, the program's arguments).
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
        /// Treat APP ARGS as a command line instead of a catalog app.
        #[arg(long)]
        command: bool,
        /// Show the app's windows as native host windows instead of inside the VM's desktop.
        #[arg(long)]
        native: bool,
        /// Extra environment, NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Working directory in the guest.
        #[arg(long)]
        cwd: Option<String>,
        /// Wait for the app to exit and exit with its status.
        #[arg(long)]
        wait: bool,
        /// Host policy (JSON, contract's GuestPolicy) to check the launch against;
        /// default: any catalog app or command line, since a person asked.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a launched app (SIGTERM, then SIGKILL after the grace time).
    Stop {
        handle: u64,
        #[arg(long, default_value_t = 3000)]
        grace_ms: u64,
    },
    /// Check that the agent answers; prints the round trip time.
    Ping,
    /// Power the guest off.
    Shutdown,
    /// Restart the guest.
    Reboot,
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Guest(e)
    }
}

pub fn guest_cmd(a: GuestArgs) -> Result<u8, CliError> {
    let timeout = Duration::from_secs(a.timeout.max(1));
    let mut c = GuestClient::connect(&a.vsock, a.port, timeout)?;
    match a.command {
        GuestCommand::Apps { json, all } => {
            let apps = c.list_apps(all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&apps).expect("catalog serializes"));
            } else {
                for e in &apps {
                    let what = e.generic_name.as_deref().or(e.comment.as_deref()).unwrap_or("");
                    println!("{:<45} {:<28} {}", printable(&e.id), printable(&e.name), printable(what));
                }
                eprintln!("{} apps in the guest ({})", apps.len(), printable(&c.info.kernel));
            }
            Ok(0)
        }
        GuestCommand::Launch { app, args, command, native, env, cwd, wait, policy, json } => {
            let policy = match policy {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|source| CliError::File {
                        flag: "--policy",
                        path: p.clone(),
                        source,
                    })?;
                    let pol: GuestPolicy = serde_json::from_str(&text)
                        .map_err(|e| CliError::Usage(format!("--policy {}: {e}", p.display())))?;
                    pol.validate().map_err(|e| CliError::Usage(format!("--policy {}: {e}", p.display())))?;
                    pol
                }
                None => GuestPolicy { allow_argv: true, ..GuestPolicy::default() },
            };
            let mut envs = BTreeMap::new();
            for kv in env {
                let (k, v) =
                    kv.split_once('=').ok_or_else(|| CliError::Usage(format!("--env {kv:?}: expected NAME=VALUE")))?;
                envs.insert(k.to_string(), v.to_string());
            }
            let (app_ref, args) = if command {
                (AppRef::Argv(std::iter::once(app).chain(args).collect()), vec![])
            } else {
                (AppRef::Id(app), args)
            };
            let launch = Launch {
                app: app_ref,
                args,
                env: envs,
                cwd,
                display: if native { DisplayMode::Native } else { DisplayMode::Embedded },
            };
            let t0 = Instant::now();
            let (handle, pid) = c.launch(&policy, launch)?;
            let rtt_ms = t0.elapsed().as_secs_f64() * 1e3;
            if !wait {
                if json {
                    println!("{}", serde_json::json!({"handle": handle, "pid": pid, "launch_rtt_ms": rtt_ms}));
                } else {
                    println!("launched handle {handle}, guest pid {pid} ({rtt_ms:.1} ms)");
                }
                return Ok(0);
            }
            let (status, signal) = c.wait_exit(handle, Duration::from_secs(u64::MAX / 4))?;
            if json {
                println!("{}", serde_json::json!({"handle": handle, "pid": pid, "status": status, "signal": signal}));
            } else {
                let tag = format!("[app {handle}] ");
                for e in c.take_events() {
                    if let rayos_contract::AgentMessage::Log { line, .. } = e {
                        if let Some(text) = line.strip_prefix(&tag) {
                            eprintln!("{}", printable(text));
                        }
                    }
                }
                match (status, signal) {
                    (Some(s), _) => println!("handle {handle} (pid {pid}) exited with status {s}"),
                    (_, Some(g)) => println!("handle {handle} (pid {pid}) killed by signal {g}"),
                    _ => {}
                }
            }
            Ok(match (status, signal) {
                (Some(s), _) => s.clamp(0, 255) as u8,
                (_, Some(g)) => (128 + g).clamp(0, 255) as u8,
                _ => 1,
            })
        }
        GuestCommand::Stop { handle, grace_ms } => {
            c.stop(handle, Duration::from_millis(grace_ms))?;
            println!("stopping handle {handle}");
            Ok(0)
        }
        GuestCommand::Ping => {
            let t0 = Instant::now();
            c.ping(1)?;
            println!(
                "{} answered in {:.2} ms (protocol {}, kernel {})",
                printable(&c.info.agent),
                t0.elapsed().as_secs_f64() * 1e3,
                c.info.version,
                printable(&c.info.kernel)
            );
            Ok(0)
        }
        GuestCommand::Shutdown => {
            c.power(false)?;
            println!("guest is powering off");
            Ok(0)
        }
        GuestCommand::Reboot => {
            c.power(true)?;
            println!("guest is restarting");
            Ok(0)
        }
    }
}
