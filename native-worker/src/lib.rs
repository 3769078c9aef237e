//! The native worker: a tokio driver around [`taskhub_core::worker::Worker`].
//!
//! The state machine decides everything (handshake, consuming, acks, lease touches, backoff,
//! graceful stop). This crate only moves frames between it and a WebSocket, keeps its timer, and
//! runs tasks: built-in handlers on tokio's blocking pool, or an external command (`--exec`).
//!
//! # Layout
//!
//! - `driver`: [`run`], the event loop.
//! - `exec`: running one task as a child process, payload on stdin, result on stdout.

mod driver;
mod exec;

pub use driver::{Options, run};
pub use taskhub_core::worker::WorkerConfig;
