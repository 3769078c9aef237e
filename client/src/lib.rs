//! The Rust client for a taskhub hub.
//!
//! ```no_run
//! # async fn demo() -> Result<(), taskhub_client::ClientError> {
//! use serde_json::json;
//! use taskhub_client::{Client, ConnectOptions, Payload, PutOptions};
//! let client = Client::connect(ConnectOptions::new("ws://127.0.0.1:7878", "KEY")).await?;
//! let replies = client
//!     .submit("tasks", vec![json!(3411)], PutOptions::kind("square"), None)
//!     .await?;
//! assert_eq!(replies[0].result, Some(json!("3411 * 3411 = 11634921").into()));
//! // Bytes travel as bytes (a binary frame, no base64), and may come back as bytes.
//! let echoed = client
//!     .submit("tasks", vec![vec![0u8, 255]], PutOptions::kind("echo"), None)
//!     .await?;
//! assert_eq!(echoed[0].result.as_ref().and_then(Payload::bytes).map(|b| &b[..]), Some(&[0u8, 255][..]));
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`transport`]: opening the WebSocket (with errors a person can act on) and the frame pump.
//! - `client`: [`Client`], one authenticated session with pipelined requests.

mod client;
mod keyfile;
pub mod tls;
pub mod transport;

pub use client::{Client, ClientError, ConnectOptions, Deleted, NewToken, PutOptions};
pub use keyfile::{Credentials, credentials, read_key_file, write_key_file};
pub use taskhub_core::auth::Secret;
pub use taskhub_core::protocol::{Reply, Stats};
pub use taskhub_core::{Payload, QueueName, Rights, Role, Task, TaskId};

/// The hub URL used when none is given.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:7878";
