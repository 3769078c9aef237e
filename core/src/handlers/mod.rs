//! Task handlers: the code a worker runs for each task, chosen by the task's `kind`.
//!
//! A [`Handlers`] value is the registry both workers run: the native worker (`taskhub-worker`, or
//! a user's own binary built on it) and the browser worker (the same crate compiled to wasm32).
//! Declare it once, in a function, and hand it to both:
//!
//! ```
//! use serde_json::{Value, json};
//! use taskhub_core::handlers::{Failure, Handlers, typed};
//!
//! fn word_count(text: String) -> Result<usize, Failure> {
//!     if text.is_empty() {
//!         return Err(Failure::permanent("empty text")); // retrying cannot help
//!     }
//!     Ok(text.split_whitespace().count())
//! }
//!
//! pub fn handlers() -> Handlers {
//!     let greeting = String::from("hello"); // handlers may hold state
//!     Handlers::new()
//!         .light("greet", move |name: &Value| json!(format!("{greeting}, {name}")))
//!         .heavy("word_count", typed(word_count))
//!         .include(Handlers::builtins())
//! }
//! # let h = handlers();
//! # assert_eq!(h.kinds().count(), 8);
//! ```
//!
//! - A handler is a closure or function from the payload to anything that is [`IntoOutcome`]:
//!   a JSON [`Value`], bytes (`Vec<u8>`, [`Bytes`]: a binary result), an [`Outcome`], or a
//!   `Result` of those whose error converts into a [`Failure`] (a `String` or `&str` is a failure
//!   worth retrying). A plain closure takes a JSON payload; [`binary`] adapts one over bytes,
//!   [`any_payload`] one over either, [`typed`] a function over serde types. A payload of the
//!   other sort fails the task for good, naming the mismatch. A struct with configuration implements [`Handler`] itself and also sees the
//!   task's id, attempt and session ([`Input`]).
//! - **Light** handlers take about a microsecond and run inline on the worker's event loop.
//!   **Heavy** ones take real CPU time and run off it: on tokio's blocking pool natively, in a
//!   dedicated Web Worker in the browser.
//! - Handlers never block on I/O or timers: a browser cannot. One that must wait returns
//!   [`Outcome::Wait`] and the driver's own timer does the waiting.
//! - A task whose kind has no handler fails at once with `retry: false`, so it goes straight to
//!   the dead-letter queue, with a message naming the kinds the worker knows.

mod builtin;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use builtin::{MAX_PRIMES_N, MAX_SLEEP_MS, count_primes_below};

use crate::body::{Body, Payload};
use crate::names::{SessionId, TaskId};
use crate::protocol::MAX_PROGRESS_MESSAGE_BYTES;

/// Longest task kind, in bytes (the protocol's limit).
pub const MAX_KIND_BYTES: usize = 128;

/// What a handler produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task's result.
    Done(Value),
    /// The task's result, as bytes (sent in a binary frame, no base64).
    Bytes(Bytes),
    /// Wait `ms` milliseconds with the driver's timer, then the result is `then`.
    Wait { ms: u64, then: Value },
}

/// Why a task failed, and whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// `false` when retrying cannot help (bad payload, no handler for the kind): the task goes
    /// straight to the dead-letter queue.
    pub retry: bool,
    /// How long the retry should wait, when the handler knows better than the task's backoff
    /// (a rate limit's `Retry-After`); `None` for the backoff.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure another attempt may not repeat (a timeout, a busy resource).
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retry: true,
            retry_after: None,
        }
    }

    /// A failure every attempt would repeat: the task is dead-lettered at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retry: false,
            retry_after: None,
        }
    }

    /// Retry after `wait` rather than after the task's backoff (`Duration::ZERO`: at once). The
    /// hub caps it at its `max_delay`.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry = true;
        self.retry_after = Some(wait);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::retryable(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::retryable(message)
    }
}

/// What a handler may return.
pub trait IntoOutcome {
    fn into_outcome(self) -> Result<Outcome, Failure>;
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        Ok(self)
    }
}

impl IntoOutcome for Value {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        Ok(Outcome::Done(self))
    }
}

impl IntoOutcome for Bytes {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        Ok(Outcome::Bytes(self))
    }
}

/// Bytes: a binary result.
impl IntoOutcome for Vec<u8> {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        Ok(Outcome::Bytes(Bytes::from(self)))
    }
}

/// A [`Payload`]: JSON or bytes, as it is.
impl IntoOutcome for Payload {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        match self {
            Body::Json(v) => Ok(Outcome::Done(v)),
            Body::Bytes(b) => Ok(Outcome::Bytes(b)),
            held @ Body::Holding { .. } => Ok(Outcome::Done(held.to_json_lossy())),
        }
    }
}

impl<T: IntoOutcome, E: Into<Failure>> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Result<Outcome, Failure> {
        self.map_err(Into::into)?.into_outcome()
    }
}

/// Set when a client cancels a running task. Cheap to clone; the worker holds one per running
/// task and hands it to the handler in [`Input::cancellation`].
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    pub fn new() -> Cancellation {
        Cancellation::default()
    }

    /// Signal the handler (the worker does this when the hub says the task was cancelled).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Where a handler's progress reports go: the worker passes them to the hub, at most every
/// [`crate::worker::PROGRESS_EVERY_MS`] per task (the latest wins).
#[derive(Clone, Copy)]
pub struct Reporter<'a>(pub &'a dyn Fn(f64, Option<&str>));

impl fmt::Debug for Reporter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reporter")
    }
}

/// The task a handler runs.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub id: TaskId,
    pub kind: &'a str,
    /// JSON, or bytes: see [`Input::json`] and [`Input::bytes`].
    pub payload: &'a Payload,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// On a redelivery, why the previous attempt ended (its failure's message, an expired
    /// lease, a worker that left).
    pub last_error: Option<&'a str>,
    /// The worker's session on the hub (as in `stats`), when known.
    pub session: Option<SessionId>,
    /// Set once a client cancels the task (natively; in a browser the handler's Web Worker is
    /// stopped instead). A long handler checks [`Input::is_cancelled`] between steps and returns
    /// early: the worker drops whatever it returns and takes its next task.
    pub cancellation: Option<&'a Cancellation>,
    /// Where [`Input::progress`] reports go, when the worker takes them.
    pub reporter: Option<Reporter<'a>>,
}

impl Input<'_> {
    /// Say how far the task has got: `fraction` from 0 to 1 (clamped; not a number is ignored)
    /// and an optional `message` (cut to [`MAX_PROGRESS_MESSAGE_BYTES`]). It reaches the task's
    /// submitter and the dashboard, and extends the task's lease. Cheap to call often: the
    /// worker sends at most one report per task every 100 ms, the latest.
    pub fn progress(&self, fraction: f64, message: Option<&str>) {
        let Some(Reporter(report)) = self.reporter else {
            return;
        };
        if fraction.is_nan() {
            return;
        }
        let message = message.map(|m| &m[..crate::char_floor(m, MAX_PROGRESS_MESSAGE_BYTES)]);
        report(fraction.clamp(0.0, 1.0), message);
    }

    /// Whether a client cancelled this task: stop soon, the result goes nowhere.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_some_and(Cancellation::is_cancelled)
    }

    /// The JSON payload; a binary one fails the task for good, naming the mismatch.
    pub fn json(&self) -> Result<&Value, Failure> {
        match self.payload {
            Body::Json(v) => Ok(v),
            other => Err(Failure::permanent(format!(
                "{} takes a JSON payload; this task's payload is {} bytes of binary",
                self.kind,
                other.attachment().map_or(0, |(_, bytes)| bytes.len())
            ))),
        }
    }

    /// The binary payload; a JSON one fails the task for good, naming the mismatch.
    pub fn bytes(&self) -> Result<&Bytes, Failure> {
        self.payload.bytes().ok_or_else(|| {
            Failure::permanent(format!(
                "{} takes a binary payload; this task's payload is JSON (put it as bytes)",
                self.kind
            ))
        })
    }
}

/// A task handler. Closures `Fn(&Value) -> impl IntoOutcome` are handlers of JSON payloads;
/// [`binary`] and [`any_payload`] adapt closures over bytes and over either. Implement it on a
/// struct for handlers with configuration that also want the task's id or attempt.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure>;
}

impl<F, R> Handler for F
where
    F: Fn(&Value) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        self(task.json()?).into_outcome()
    }
}

/// A handler of binary payloads, made by [`binary`].
#[derive(Debug, Clone, Copy)]
pub struct Binary<F>(F);

/// Adapt `f(&[u8]) -> impl IntoOutcome` into a handler of binary payloads (a JSON payload fails
/// the task for good). Return a `Vec<u8>` or [`Bytes`] for a binary result, a [`Value`] for JSON.
pub fn binary<F, R>(f: F) -> Binary<F>
where
    F: Fn(&[u8]) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    Binary(f)
}

impl<F, R> Handler for Binary<F>
where
    F: Fn(&[u8]) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        (self.0)(task.bytes()?).into_outcome()
    }
}

/// A handler of JSON and binary payloads alike, made by [`any_payload`].
#[derive(Debug, Clone, Copy)]
pub struct AnyPayload<F>(F);

/// Adapt `f(&Payload) -> impl IntoOutcome` into a handler that takes JSON and bytes alike.
pub fn any_payload<F, R>(f: F) -> AnyPayload<F>
where
    F: Fn(&Payload) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    AnyPayload(f)
}

impl<F, R> Handler for AnyPayload<F>
where
    F: Fn(&Payload) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        (self.0)(task.payload).into_outcome()
    }
}

/// A handler over serde types, made by [`typed`].
pub struct Typed<F, T> {
    f: F,
    _in: std::marker::PhantomData<fn(T)>,
}

impl<F, T> fmt::Debug for Typed<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Typed<{}>", std::any::type_name::<T>())
    }
}

/// Adapt `f(T) -> Result<U, E>` into a handler: the payload is deserialized into `T` (a payload
/// that does not fit fails the task for good, naming the mismatch) and `U` is serialized as the
/// result.
pub fn typed<T, U, E, F>(f: F) -> Typed<F, T>
where
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    T: DeserializeOwned + 'static,
    U: Serialize,
    E: Into<Failure>,
{
    Typed {
        f,
        _in: std::marker::PhantomData,
    }
}

impl<T, U, E, F> Handler for Typed<F, T>
where
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    T: DeserializeOwned + 'static,
    U: Serialize,
    E: Into<Failure>,
{
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        let input = T::deserialize(task.json()?).map_err(|e| {
            Failure::permanent(format!("{} got a payload it cannot read: {e}", task.kind))
        })?;
        let out = (self.f)(input).map_err(Into::into)?;
        serde_json::to_value(out).map(Outcome::Done).map_err(|e| {
            Failure::permanent(format!("{} made an unserializable result: {e}", task.kind))
        })
    }
}

#[derive(Clone)]
struct Entry {
    heavy: bool,
    handler: Arc<dyn Handler>,
}

/// A set of handlers by task kind. Cheap to clone; one value drives a native worker and, compiled
/// to wasm32, a browser worker. See the [module docs](self).
#[derive(Clone, Default)]
pub struct Handlers {
    entries: BTreeMap<String, Entry>,
}

impl Handlers {
    /// No handlers at all: every task fails as an unknown kind.
    pub fn new() -> Self {
        Handlers::default()
    }

    /// The built-in kinds: `square`, `sha256`, `primes`, `sleep`, `echo` and `fail`.
    pub fn builtins() -> Self {
        builtin::handlers()
    }

    /// Register a light handler (about a microsecond of work; runs inline). Registering a kind
    /// again replaces it.
    ///
    /// # Panics
    /// If `kind` is empty or longer than [`MAX_KIND_BYTES`]: no task could ever name it.
    pub fn light(self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.add(kind, false, handler)
    }

    /// Register a heavy handler (real CPU time; runs off the event loop). Registering a kind
    /// again replaces it.
    ///
    /// # Panics
    /// As [`Handlers::light`].
    pub fn heavy(self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.add(kind, true, handler)
    }

    fn add(mut self, kind: impl Into<String>, heavy: bool, handler: impl Handler) -> Self {
        let kind = kind.into();
        assert!(
            !kind.is_empty() && kind.len() <= MAX_KIND_BYTES,
            "a task kind must be 1 to {MAX_KIND_BYTES} bytes, got {kind:?}"
        );
        let handler = Arc::new(handler);
        self.entries.insert(kind, Entry { heavy, handler });
        self
    }

    /// Add every handler of `other`; its kinds replace any of the same name here.
    pub fn include(mut self, other: Handlers) -> Self {
        self.entries.extend(other.entries);
        self
    }

    /// Drop the handler for `kind`, if any.
    pub fn without(mut self, kind: &str) -> Self {
        self.entries.remove(kind);
        self
    }

    /// Every kind, sorted, with whether it is heavy.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, bool)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), e.heavy))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a task of this kind must run off the event loop. Unknown and missing kinds fail at
    /// once, so they are light.
    pub fn is_heavy(&self, kind: Option<&str>) -> bool {
        kind.and_then(|k| self.entries.get(k))
            .is_some_and(|e| e.heavy)
    }

    /// Run the handler for `task.kind`. An unknown kind is a permanent failure naming the kinds
    /// this worker knows.
    pub fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        match self.entries.get(task.kind) {
            Some(e) => e.handler.run(task),
            None => Err(self.unknown(task.kind)),
        }
    }

    /// Run a task whose kind may be missing (the protocol makes `kind` optional).
    pub fn run_task(
        &self,
        id: TaskId,
        kind: Option<&str>,
        payload: &Payload,
        attempt: u32,
        last_error: Option<&str>,
        session: Option<SessionId>,
    ) -> Result<Outcome, Failure> {
        let Some(kind) = kind else {
            return Err(no_kind());
        };
        self.run(&Input {
            id,
            kind,
            payload,
            attempt,
            last_error,
            session,
            cancellation: None,
            reporter: None,
        })
    }

    /// Run a worker's job, with the flag a cancel sets and where progress reports go.
    pub fn run_job(
        &self,
        job: &crate::worker::Job,
        cancellation: &Cancellation,
        reporter: Option<Reporter<'_>>,
    ) -> Result<Outcome, Failure> {
        let Some(kind) = job.kind.as_deref() else {
            return Err(no_kind());
        };
        self.run(&Input {
            id: job.id,
            kind,
            payload: &job.payload,
            attempt: job.attempt,
            last_error: job.last_error.as_deref(),
            session: job.session,
            cancellation: Some(cancellation),
            reporter,
        })
    }

    fn unknown(&self, kind: &str) -> Failure {
        let known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "no kinds at all".to_string()
        } else {
            known.join(", ")
        };
        Failure::permanent(format!(
            "unknown task kind {kind:?}; this worker knows {known}"
        ))
    }
}

fn no_kind() -> Failure {
    Failure::permanent("task has no kind; give one with --kind, or run the worker with --exec")
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.kinds()
                    .map(|(k, heavy)| (k, if heavy { "heavy" } else { "light" })),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests;
