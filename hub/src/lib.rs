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
//! - `writer`: a session's writer loop (outbox to socket, joining messages for `batch`).
//!
//! The `taskhub` command (serve, the client commands, demo, bench) is the `taskhub-cli` crate in
//! cli/; this library depends on neither the client nor the worker crates.

mod admission;
mod assets;
pub mod broker;
pub mod bundles;
pub mod config;
mod http;
mod hub;
pub mod keys;
pub mod metrics;
pub mod nats;
mod ops;
mod server;
mod session;
pub mod storage;
mod throttle;
pub mod tls;
mod writer;

pub use bundles::{Bundle, BundleError};

/// Whether this hub was built with the browser worker (the wasm32 target was installed).
pub fn browser_worker_built() -> bool {
    assets::BROWSER_WORKER_BUILT
}
pub use broker::QueueReplicas;
pub use config::{Config, ConfigError, Limits};
pub use nats::NatsBackend;
pub use server::{Running, ServeError, Server, bind, run};
pub use taskhub_core::auth::Secret;
pub use tls::{ServerTls, TlsError, TlsFiles};

/// Entry points for the fuzz targets in `fuzz/`: what the hub reads from peers and disks. Not an
/// API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parse a request head as the hub does, and check it as a WebSocket handshake.
    pub fn http_head(bytes: &[u8]) {
        if let Ok(r) = crate::http::Request::parse(bytes) {
            let _ = r.websocket_problem();
            let _ = r.origin_problem(&["https://site.example".to_string()]);
        }
    }

    /// Read a journal record as start-up does, and peek at it as the writer does.
    pub fn journal_record(bytes: &[u8]) {
        let _ = crate::storage::record::decode(bytes);
        if let crate::storage::record::Frame::Whole(body, _) =
            crate::storage::record::frame_at(bytes)
        {
            let _ = crate::storage::record::peek(body);
        }
    }
}
