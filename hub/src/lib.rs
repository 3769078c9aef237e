//! The taskhub hub: named queues and pub/sub topics served over authenticated WebSockets.
//!
//! # Layout
//!
//! - [`broker`]: queue and pub/sub semantics, pure: every operation takes `now`.
//! - [`config`]: every limit, with defaults and `validate()`.
//! - `hub`: shared state around the broker, the lease timer, and fan-out to session outboxes.
//! - `http`: the same port serves plain HTTP: the join page, the dashboard and the browser worker
//!   package, embedded by `assets` (built by `build.rs`), and the [`bundles`] loaded at start-up.
//! - `session`: one connection: handshake under a timeout, then a read loop and a writer task.
//! - `server`: the accept loop and graceful shutdown; [`run`] is what `taskhub serve` calls, and
//!   [`Running`] runs a hub in the background (tests, the demo).
//! - [`mod@bench`]: the `taskhub bench` load generator.
//! - `main.rs` (the binary): the `taskhub` command line: serve, put, get, submit, pub, sub, stats,
//!   demo, bench.

mod admission;
mod assets;
pub mod bench;
pub mod broker;
pub mod bundles;
pub mod config;
mod http;
mod hub;
mod server;
mod session;
pub mod storage;
mod throttle;

pub use bundles::{Bundle, BundleError};

/// Whether this hub was built with the browser worker (the wasm32 target was installed).
pub fn browser_worker_built() -> bool {
    assets::BROWSER_WORKER_BUILT
}
pub use config::{Config, ConfigError};
pub use server::{Running, ServeError, Server, bind, run};
pub use taskhub_core::auth::Secret;
