//! The builder's one error type.

use std::path::PathBuf;

/// Everything that can stop an image build. Each variant names the file,
/// package, command or mirror involved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("building the guest root file system needs root (mmdebstrap --mode=root); run `rayos image build` as root or under sudo")]
    NotRoot,
    #[error("{tool} not found: {hint}")]
    MissingTool { tool: &'static str, hint: &'static str },
    #[error("no Debian mirror found in {searched}; pass a mirror explicitly")]
    NoMirror { searched: String },
    #[error("cannot fetch {suite} packages from {mirror}: {message}")]
    Fetch { suite: String, mirror: String, message: String },
    #[error("mmdebstrap failed ({status}) while {stage}: {message}")]
    Mmdebstrap { status: String, stage: String, message: String },
    #[error("package {package} is not in {suite} at {mirror}")]
    UnknownPackage { package: String, suite: String, mirror: String },
    #[error("package {package} is not in the built root file system")]
    MissingPackage { package: String },
    #[error("kernel: {0}")]
    Kernel(String),
    #[error(transparent)]
    Kmod(#[from] crate::kmod::KmodError),
    #[error(transparent)]
    Cpio(#[from] crate::cpio::CpioError),
    #[error("guest agent {path}: {source}")]
    Agent { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("manifest {path}: {source}")]
    Manifest { path: PathBuf, source: serde_json::Error },
    #[error("refusing to delete {path}: {reason}")]
    UnsafeDelete { path: PathBuf, reason: String },
    #[error("invalid build option: {0}")]
    Options(String),
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}
