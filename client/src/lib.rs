//! The Rust client for a taskhub hub: named task queues and pub/sub topics over one
//! authenticated WebSocket session.
//!
//! [`Client`] is a cheap handle: clone it into as many tasks as you like; they share (and
//! pipeline on) one connection, which lives while any clone or [`Subscriber`] does.
//!
//! ```no_run
//! # async fn demo() -> Result<(), taskhub_client::ClientError> {
//! use futures_util::StreamExt;
//! use serde_json::json;
//! use std::time::Duration;
//! use taskhub_client::{Payload, PutOptions};
//!
//! let client = taskhub_client::connect("ws://127.0.0.1:7878", "KEY").await?;
//!
//! // The seed's pattern: tasks on one queue, outcomes on another.
//! let square = PutOptions::new().kind("square");
//! client.put("tasks", json!(3411), square.clone().reply_to("results")).await?;
//! if let Some(outcome) = client.get("results", Duration::from_secs(10)).await? {
//!     println!("{}", outcome.payload); // {"id": 1, "ok": true, "result": "3411 * 3411 = 11634921"}
//! }
//!
//! // Or wait for results right here, in order.
//! let replies = client.submit("tasks", [json!(7), json!(8)], square).await?;
//! assert_eq!(replies[1].result, Some(json!("8 * 8 = 64").into()));
//!
//! // Bytes travel as bytes (a binary frame, no base64), and may come back as bytes.
//! let echoed = client.submit("tasks", [vec![0u8, 255]], PutOptions::new().kind("echo")).await?;
//! assert_eq!(echoed[0].result.as_ref().and_then(Payload::bytes).map(|b| &b[..]), Some(&[0u8, 255][..]));
//!
//! // Pub/sub: a stream per subscription.
//! let mut cpu = client.subscribe("metrics.*.cpu").await?;
//! client.publish("metrics.box7.cpu", json!(0.93)).await?;
//! let msg = cpu.next().await.expect("the session is open");
//! assert_eq!(msg.topic.as_str(), "metrics.box7.cpu");
//! # Ok(()) }
//! ```
//!
//! Errors are [`ClientError`]s; their variants say what to do: [`ClientError::Refused`] (no hub
//! listens there), [`ClientError::TimedOut`], [`ClientError::Auth`] with an [`AuthReason`],
//! [`ClientError::Hub`] with the hub's [`ErrorCode`] (the session goes on), and
//! [`ClientError::Closed`] with the WebSocket close code.
//!
//! ```no_run
//! # async fn demo() {
//! use taskhub_client::{AuthReason, ClientError, ConnectOptions};
//! match ConnectOptions::with_token("ws://127.0.0.1:7878", "th1.xxx.yyy") {
//!     Err(bad) => eprintln!("not a token: {bad}"),
//!     Ok(opts) => match opts.connect().await {
//!         Ok(_client) => {}
//!         Err(ClientError::Refused { .. }) => eprintln!("start the hub first"),
//!         Err(ClientError::Auth { reason: AuthReason::Expired, .. }) => eprintln!("ask for a new token"),
//!         Err(e) => eprintln!("{e}"),
//!     },
//! }
//! # }
//! ```
//!
//! # Layout
//!
//! - [`transport`]: opening the WebSocket (with errors a person can act on) and the frame pump.
//! - `client`: [`Client`], one authenticated session with pipelined requests, shared by its
//!   clones; [`Subscriber`]s; [`ClientError`].

mod client;
mod keyfile;
pub mod tls;
pub mod transport;

pub use client::{
    AuthReason, Client, ClientError, ConnectOptions, DeadLetters, Deleted, Message, NewToken,
    Progress, PutOptions, Requeued, Subscriber, connect,
};
pub use keyfile::{Credentials, credentials, read_key_file, write_key_file};
pub use taskhub_core::auth::{DEFAULT_KEY_ID, Secret};
pub use taskhub_core::hub_urls;
pub use taskhub_core::protocol::{Limits, QueueStats, Reply, Stats, WorkerStats};
pub use taskhub_core::token::TokenError;
pub use taskhub_core::{
    ClientMsg, ErrorCode, NameError, Pattern, Payload, QueueName, Rights, Role, ServerMsg,
    SessionId, Task, TaskId, TaskState, Topic,
};

/// The hub URL used when none is given.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:7878";
