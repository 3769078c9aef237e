//! taskhub's shared core, compiled for native targets and for `wasm32-unknown-unknown`.
//!
//! Everything here is sans-IO: no sockets, no async runtime, no clock, no randomness. Drivers (the
//! hub, the native worker, the browser worker) feed bytes, time and entropy in and drain what comes
//! out.
//!
//! # Layout
//!
//! - [`time`]: the one time type, [`Millis`], milliseconds since a driver-chosen epoch.
//! - [`names`]: validated newtypes for queue names, topics, patterns, task and session ids.
//! - [`protocol`]: the typed wire messages, [`ClientMsg`] and [`ServerMsg`], and [`ErrorCode`].
//! - [`body`]: [`Body`], a payload or result: JSON or bytes ([`Payload`] for clients and workers).
//! - [`raw`]: [`RawJson`], a JSON value kept as its text (how the hub holds payloads).
//! - [`codec`]: the only place where frames (JSON text, or a JSON header and bytes) become typed
//!   messages; enforces the size limit.
//! - [`auth`]: the mutual HMAC-SHA256 challenge-response handshake.
//! - [`rights`]: what a key or token may do, and the checks.
//! - [`token`]: self-contained signed tokens that work as keys in the handshake.
//! - [`handlers`]: the handler registry ([`handlers::Handlers`]) both workers run, and the
//!   built-in kinds.
//! - [`bundle`]: the manifest of a browser worker bundle.
//! - [`worker`]: the worker state machine both workers drive.

pub mod auth;
pub mod body;
pub mod bundle;
pub mod codec;
pub mod duration;
pub mod handlers;
pub mod keyfile;
pub mod names;
pub mod protocol;
pub mod raw;
pub mod rights;
pub mod time;
pub mod token;
pub mod worker;

pub use body::{Body, Payload};
pub use names::{HubList, NameError, Pattern, QueueName, SessionId, TaskId, Topic, hub_urls};
pub use protocol::{AuthFailure, ClientMsg, ErrorCode, Role, ServerMsg, Task, TaskState};
pub use raw::RawJson;
pub use rights::Rights;
pub use time::Millis;

/// Where to cut `s` to keep at most `max` bytes without splitting a character: the largest char
/// boundary at or below `max` (`str::floor_char_boundary`, newer than this crate's MSRV).
pub fn char_floor(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}
