//! The Rust client for a taskhub hub.
//!
//! ```no_run
//! # async fn demo() -> Result<(), taskhub_client::ClientError> {
//! use taskhub_client::{Client, ConnectOptions, PutOptions};
//! let client = Client::connect(ConnectOptions::new("ws://127.0.0.1:7878", "KEY")).await?;
//! let replies = client
//!     .submit("tasks", vec![3411.into()], PutOptions::kind("square"), None)
//!     .await?;
//! assert_eq!(replies[0].result, Some("3411 * 3411 = 11634921".into()));
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`transport`]: opening the WebSocket (with errors a person can act on) and the frame pump.
//! - `client`: [`Client`], one authenticated session with pipelined requests.

mod client;
pub mod transport;

pub use client::{Client, ClientError, ConnectOptions, Deleted, PutOptions};
pub use taskhub_core::auth::Secret;
pub use taskhub_core::protocol::{Reply, Stats};
pub use taskhub_core::{QueueName, Role, Task, TaskId};

/// The hub URL used when none is given.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:7878";
