//! The AI core's intent engine: plain words in, a contract action out.
//!
//! Design notes:
//! - A real local model, on the CPU: all-MiniLM-L6-v2 ([`bert`]) run with
//!   candle, mean-pooled and normalised as the model was trained, loaded from
//!   the model store (`crate::models`). Nothing leaves the machine.
//! - The engine ([`engine`]) embeds short *views* of every catalog entry once
//!   (vectors cached by content, [`cache`]), embeds the request with its
//!   arguments ([`args`]) replaced by what they are, and decides `launch`,
//!   `clarify` (top 3) or `none` by thresholds on the best score.
//! - It never acts on its own authority: every action, the engine's or the
//!   optional planner's ([`planner`], an OpenAI-compatible endpoint on this
//!   machine), passes [`policy::check`], and requests to destroy data are
//!   refused outright.
//! - Everything but the model is testable without it: the engine is generic
//!   over [`embed::Embedder`], and unit tests use a tiny hashing embedder.
//! - [`eval`] measures it on a labelled request set (top-1 accuracy, false
//!   launches) and times it (load, p50/p99 per request, resident memory);
//!   [`session`] wires model, catalog, cache and planner together for the CLI.

pub mod action;
pub mod args;
pub mod bert;
pub mod cache;
pub mod catalog;
pub mod describe;
pub mod embed;
pub mod engine;
pub mod eval;
pub mod planner;
pub mod policy;
pub mod session;

pub use action::{Action, Candidate};
pub use catalog::{Catalog, DesktopEntry};
pub use describe::ViewKind;
pub use engine::{Engine, EngineConfig, EngineError, Explanation, Resolution};
