//! `rayos init`: PID 1 of the RayOS host image (crate `rayos-init`); this
//! side gives it the model store.

use std::path::Path;
use std::process::ExitCode;

use super::CliError;
use crate::models::{self, ModelStore};

/// Installs the image's intent model into the host volume's store.
pub struct StoreProvision;

impl rayos_init::Provision for StoreProvision {
    fn install_model(&self, from: &Path, store: &Path) -> Result<String, String> {
        let name = from
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("model_source {}: no model name", from.display()))?;
        let spec =
            models::find(name).ok_or_else(|| format!("model_source {}: unknown model {name}", from.display()))?;
        let store = ModelStore::new(store);
        let dir = store.install_from_dir(&spec, from, &|_| {}).map_err(|e| e.to_string())?;
        Ok(format!("installed the intent model {name} into {} (sha256 checked)", dir.display()))
    }
}

/// Runs PID 1; refuses to run as any other process.
pub(super) fn init_cmd() -> Result<ExitCode, CliError> {
    let pid = std::process::id();
    if pid != 1 {
        return Err(CliError::Usage(format!(
            "rayos init is PID 1 of the RayOS host image (rayos image host); this is pid {pid}. Boot the image: scripts/run.sh"
        )));
    }
    rayos_init::run(&StoreProvision)
}

/// `rayos` started as `/init` by the kernel.
pub fn started_as_init() -> bool {
    std::env::args_os().next().and_then(|a| Path::new(&a).file_name().map(|n| n == "init")).unwrap_or(false)
        && std::process::id() == 1
}

/// PID 1 entry point for `main`.
pub fn run_as_init() -> ! {
    rayos_init::run(&StoreProvision)
}
