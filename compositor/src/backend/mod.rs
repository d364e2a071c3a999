//! Display backends: where the compositor's output pixels go.
//!
//! Design note: a backend owns one output (its size, its renderer and the
//! buffer it renders into) and nothing of the shell; the server builds the
//! scene (client surfaces and host decorations, front to back) and hands it
//! to the backend, which renders only what changed since the previous frame
//! (Smithay's `OutputDamageTracker`). The headless backend is an offscreen
//! pixman buffer of fixed size, for tests and automation; the winit backend
//! shows that same buffer in a window of an existing X11 session. The DRM/KMS
//! backend (real host) is to come.

pub mod headless;
pub mod winit;

pub use headless::{BenchDamage, DamageProbe, HeadlessBackend, HeadlessError, RenderStats};
