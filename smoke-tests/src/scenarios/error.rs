//! The scenarios' step error: what every scenario's steps return, printed
//! as the reason of `FAIL <scenario>: <reason>`.

/// Why a scenario step failed. The typed variants name what failed (a
/// program to install, a wait that ran out, a screenshot that cannot be
/// read, a file); `Failed` is a check on what the run produced, whose text
/// says what was checked and what was seen.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{bin} not found: install the Debian package `{package}` (bash scripts/setup.sh)")]
    MissingProgram { bin: String, package: String },
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("screenshot: {0}")]
    Image(#[from] rayos_test_kit::image::ImageError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A check or a step failed; the text says which.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ScenarioError {
    fn from(s: String) -> Self {
        ScenarioError::Failed(s)
    }
}

impl From<rayos_test_kit::wait::Timeout> for ScenarioError {
    fn from(t: rayos_test_kit::wait::Timeout) -> Self {
        ScenarioError::Timeout { what: t.what, secs: t.after.as_secs() }
    }
}

impl From<&str> for ScenarioError {
    fn from(s: &str) -> Self {
        ScenarioError::Failed(s.to_string())
    }
}
