//! Display backends: where the compositor's output pixels go.
//!
//! Design note: a backend owns one output (its size, its renderer and the
//! buffer it renders into) and nothing of the shell; the server builds the
//! scene (client surfaces and host decorations, front to back) and hands it
//! to the backend, which renders only what changed since the previous frame
//! (Smithay's `OutputDamageTracker`). Only the headless backend exists so
//! far: an offscreen pixman buffer of fixed size, for tests and automation.
//! The winit (development window) and DRM/KMS (real host) backends are to
//! come and will implement the same operations.

pub mod headless;

pub use headless::{HeadlessBackend, HeadlessError, RenderStats};
