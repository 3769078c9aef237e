//! The wire messages. `docs/protocol.md` is the prose version of this file; keep them in step.
//!
//! Every frame is one JSON object with a `"type"` field. Requests may carry `req`, a number the
//! client chooses; the hub echoes it in the reply so clients can pipeline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::body::Payload;
use crate::names::{Pattern, QueueName, SessionId, TaskId, Topic};
use crate::rights::Rights;

/// Protocol version, sent in the hub's `challenge`.
pub const PROTOCOL_VERSION: u32 = 1;

/// What kind of client a session is. Shown in stats.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Puts tasks and reads results (CLI, client library).
    #[default]
    Producer,
    /// A native worker.
    Worker,
    /// A browser worker.
    Browser,
    /// A monitoring page.
    Dashboard,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Browser => "browser",
            Role::Dashboard => "dashboard",
        }
    }
}

/// A message from a client to the hub.
///
/// Decoding goes through [`crate::codec`]'s flat reader rather than serde's internally tagged
/// enum support, which buffers every field before choosing the variant (a fifth of the hub's CPU
/// in profiles).
///
/// `P` is how payloads and results are held: [`Payload`] (a JSON tree, or bytes) for clients and
/// workers, which read them; [`crate::Body`]`<`[`crate::RawJson`]`>` (JSON text, or bytes) for
/// the hub, which only passes them on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg<P = Payload> {
    /// Answer to the hub's `challenge`: proves knowledge of the key named by `key_id`.
    Auth {
        key_id: String,
        /// 32 random bytes, lowercase hex: the client's challenge to the hub.
        client_nonce: String,
        /// `HMAC-SHA256(key, "taskhub-client\n" key_id "\n" nonce "\n" client_nonce)`, lowercase hex.
        proof: String,
        #[serde(default)]
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The client reads frames holding several messages (see [`crate::codec::split`]): the
        /// hub may then join messages that are ready together into one text frame.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
    },
    /// Add a task to the back of `queue`. Answered by `queued` with the task id.
    Put {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
        payload: P,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<QueueName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_attempts: Option<u32>,
        /// A client-chosen id (1–128 bytes) that makes the put idempotent: a repeat within the
        /// hub's dedup window is answered with the first task's id and not stored again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dedup_id: Option<String>,
        /// When the task may run, how it goes ahead of others and how its retries wait:
        /// `priority`, `delay_ms`, `not_before`, `backoff_ms`, `backoff_max_ms` (all optional,
        /// written as fields of the `put` itself).
        #[serde(flatten)]
        schedule: Schedule,
    },
    /// Take the task at the front of `queue`, waiting up to `timeout_ms`. Answered by `task` or,
    /// when the wait runs out, `empty`.
    Get {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
        #[serde(default)]
        timeout_ms: u64,
    },
    /// Become a consumer of `queues`: the hub pushes `deliver` messages while fewer than
    /// `prefetch` tasks are unacknowledged. Empty `queues` stops consuming.
    Consume {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queues: Vec<QueueName>,
        prefetch: u32,
    },
    /// The leased task is done.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<P>,
    },
    /// The leased task failed. With `retry` (the default) it is queued again while attempts
    /// remain; without, it goes straight to the dead-letter queue.
    Fail {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
        error: String,
        retry: bool,
        /// With `retry`: come back after this long, instead of after the task's backoff.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backoff_ms: Option<u64>,
    },
    /// Hand a leased task back unstarted: it goes to the front of its queue and the delivery does
    /// not count as an attempt.
    Release {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
    },
    /// Stop a task that is no longer wanted: a ready or scheduled one is removed; a leased one's
    /// lease ends at once and its worker is sent `cancel`. Its `reply_to` hears `cancelled`.
    /// Needs `put` on the task's queue. Answered by `cancelled`.
    Cancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
    },
    /// How far a leased task has got: `fraction` (0 to 1) and an optional `message`. Extends
    /// the lease as `touch` does; the task's submitter hears it (`progress`) when its
    /// `reply_to` is the submitter's inbox, and `stats` shows the latest.
    Progress {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
        fraction: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// How the client is doing, for `stats` and the dashboard (browser tabs send it when it
    /// changes): whether its page is visible, its battery, how long its tasks take, and
    /// whether it has stopped taking tasks by its own policy.
    State {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        #[serde(flatten)]
        state: TabState,
    },
    /// Extend a lease by the hub's ack-wait, counted from now.
    Touch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
    },
    /// Send `payload` to every current subscriber whose pattern matches `topic`.
    Publish {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        topic: Topic,
        payload: P,
    },
    Subscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        pattern: Pattern,
    },
    Unsubscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        pattern: Pattern,
    },
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    /// A heartbeat, answered `ok`: for clients that cannot see WebSocket control frames (browsers)
    /// to learn that the hub is still there.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    /// An operator's delete: drop `queue`'s ready tasks, and the queue itself once nothing uses
    /// it. Answered by `deleted`.
    DeleteQueue {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
    },
    /// Read the entries of `<queue>.dead` without taking them: the oldest `limit` (default
    /// [`DEAD_LIST_DEFAULT`], at most [`DEAD_LIST_MAX`]). Needs `get` on `<queue>.dead`.
    /// Answered by `dead_letters`.
    DeadList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Put dead letters of `queue` back on it as new tasks (their kind, payload, `reply_to` and
    /// `max_attempts`, attempts from zero) and take them out of `<queue>.dead`: those whose `id`
    /// is in `ids`, or without `ids` every one (at most [`DEAD_REQUEUE_MAX`] per request).
    /// Needs `get` on `<queue>.dead` and `put` on `queue`. Answered by `requeued`.
    DeadRequeue {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ids: Option<Vec<TaskId>>,
    },
    /// Make a token with `rights` (no more than the session's key has) that works for `ttl_ms`.
    /// Needs `admin`. Answered by `token`.
    CreateToken {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        rights: Rights,
        ttl_ms: u64,
    },
    /// Stop the token with this id from working, now and after restarts; sessions using it are
    /// closed. Needs `admin`. Answered by `revoked`.
    RevokeToken {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        token_id: String,
    },
}

impl<P> ClientMsg<P> {
    /// The client-chosen request id, if any.
    pub fn req(&self) -> Option<u64> {
        match self {
            ClientMsg::Auth { .. } => None,
            ClientMsg::Put { req, .. }
            | ClientMsg::Get { req, .. }
            | ClientMsg::Consume { req, .. }
            | ClientMsg::Ack { req, .. }
            | ClientMsg::Fail { req, .. }
            | ClientMsg::Release { req, .. }
            | ClientMsg::Cancel { req, .. }
            | ClientMsg::Progress { req, .. }
            | ClientMsg::State { req, .. }
            | ClientMsg::Touch { req, .. }
            | ClientMsg::Publish { req, .. }
            | ClientMsg::Subscribe { req, .. }
            | ClientMsg::Unsubscribe { req, .. }
            | ClientMsg::Stats { req }
            | ClientMsg::Ping { req }
            | ClientMsg::DeleteQueue { req, .. }
            | ClientMsg::DeadList { req, .. }
            | ClientMsg::DeadRequeue { req, .. }
            | ClientMsg::CreateToken { req, .. }
            | ClientMsg::RevokeToken { req, .. } => *req,
        }
    }

    /// Set the request id (the client library numbers its requests).
    pub fn set_req(&mut self, id: u64) {
        match self {
            ClientMsg::Auth { .. } => {}
            ClientMsg::Put { req, .. }
            | ClientMsg::Get { req, .. }
            | ClientMsg::Consume { req, .. }
            | ClientMsg::Ack { req, .. }
            | ClientMsg::Fail { req, .. }
            | ClientMsg::Release { req, .. }
            | ClientMsg::Cancel { req, .. }
            | ClientMsg::Progress { req, .. }
            | ClientMsg::State { req, .. }
            | ClientMsg::Touch { req, .. }
            | ClientMsg::Publish { req, .. }
            | ClientMsg::Subscribe { req, .. }
            | ClientMsg::Unsubscribe { req, .. }
            | ClientMsg::Stats { req }
            | ClientMsg::Ping { req }
            | ClientMsg::DeleteQueue { req, .. }
            | ClientMsg::DeadList { req, .. }
            | ClientMsg::DeadRequeue { req, .. }
            | ClientMsg::CreateToken { req, .. }
            | ClientMsg::RevokeToken { req, .. } => *req = Some(id),
        }
    }
}

/// Entries a `dead_list` without `limit` reads.
pub const DEAD_LIST_DEFAULT: u32 = 100;
/// Most entries one `dead_list` reads.
pub const DEAD_LIST_MAX: u32 = 1_000;
/// Most dead letters one `dead_requeue` moves.
pub const DEAD_REQUEUE_MAX: usize = 10_000;

/// A task as the hub hands it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task<P = Payload> {
    pub id: TaskId,
    pub queue: QueueName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub payload: P,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<QueueName>,
    /// The priority it was put with (0 is left out).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u8,
    /// Why the previous attempt ended, on a redelivery (a `fail`'s error, an expired lease, a
    /// worker that left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The highest task priority (`put`'s `priority` is 0 to this; higher goes first).
pub const MAX_PRIORITY: u8 = 9;

/// When a put task may run, where it stands among the ready ones, how its retries back off, and
/// how many workers must agree on its result: the optional scheduling fields of `put`. The
/// default is a task ready at once at priority 0, retried after the hub's backoff, run once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// 0 to [`MAX_PRIORITY`]: a ready task of higher priority is delivered before any of lower
    /// priority in its queue; within a priority, first in first out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u8,
    /// Ready this many milliseconds after the hub stores it, not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Ready at this Unix time (milliseconds), not before; a time past is at once. Not with
    /// `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// A failed attempt that is retried comes back after this long, doubling with each attempt
    /// (with jitter) up to `backoff_max_ms`; 0 for at once. Default: the hub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// The longest a retry waits. Default: the hub's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    /// Run it on this many different sessions (1 to [`MAX_REPLICAS`]) and accept a result only
    /// when `quorum` of them return it byte for byte. 0 or 1: run once, as usual.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: u8,
    /// How many identical results accept it (1 to `replicas`). Default: a majority of
    /// `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u8>,
    /// When the results disagree (or a replica fails for good), more replicas are run, up to
    /// this many in all (`replicas` to [`MAX_REPLICAS`]); then the task is dead-lettered with
    /// every result. Default: twice `replicas`, at most [`MAX_REPLICAS`] (1 for a task run
    /// once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u8>,
}

/// The most replicas a redundant task may run (`put`'s `replicas` and `max_replicas`).
pub const MAX_REPLICAS: u8 = 16;

/// A redundant task's replicas, quorum and cap, as a put asked and with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redundancy {
    pub replicas: u8,
    pub quorum: u8,
    pub max_replicas: u8,
}

impl Schedule {
    /// What makes a schedule impossible, if anything: a priority past [`MAX_PRIORITY`], both
    /// `delay_ms` and `not_before`, or a redundancy out of range. The codec checks it when it reads a `put`; the hub again for
    /// puts that did not come through the codec.
    pub fn check(&self) -> Result<(), String> {
        if self.priority > MAX_PRIORITY {
            return Err(bad_priority(self.priority.into()));
        }
        if self.delay_ms.is_some() && self.not_before.is_some() {
            return Err("a put takes delay_ms or not_before, not both".into());
        }
        self.redundancy().map(|_| ())
    }

    /// The task's redundancy, defaults filled in: `None` for a task run once (no `replicas`, or
    /// 1, and no `quorum` or `max_replicas` past 1); an error names what cannot be.
    pub fn redundancy(&self) -> Result<Option<Redundancy>, String> {
        let replicas = self.replicas.max(1);
        if replicas > MAX_REPLICAS {
            return Err(format!(
                "replicas must be 1 to {MAX_REPLICAS}, not {replicas}"
            ));
        }
        let quorum = self.quorum.unwrap_or(replicas / 2 + 1);
        if !(1..=replicas).contains(&quorum) {
            return Err(format!(
                "quorum must be 1 to replicas ({replicas}), not {quorum}"
            ));
        }
        let max_replicas = self.max_replicas.unwrap_or(if replicas == 1 {
            1
        } else {
            replicas.saturating_mul(2).min(MAX_REPLICAS)
        });
        if !(replicas..=MAX_REPLICAS).contains(&max_replicas) {
            return Err(format!(
                "max_replicas must be replicas ({replicas}) to {MAX_REPLICAS}, not {max_replicas}"
            ));
        }
        if replicas == 1 && max_replicas == 1 {
            return Ok(None);
        }
        Ok(Some(Redundancy {
            replicas,
            quorum,
            max_replicas,
        }))
    }
}

/// Why `priority` cannot be.
pub fn bad_priority(priority: u64) -> String {
    format!("priority must be 0 to {MAX_PRIORITY} (higher goes first), not {priority}")
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// Limits the hub announces in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub ack_wait_ms: u64,
    pub max_prefetch: u32,
    pub max_attempts: u32,
    /// How often the hub pings; a client that hears nothing for twice this long may take the
    /// connection for dead. (Hubs before this field pinged every 20 s.)
    #[serde(default = "default_ping_interval_ms")]
    pub ping_interval_ms: u64,
}

fn default_ping_interval_ms() -> u64 {
    20_000
}

/// One queue's line in `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub name: QueueName,
    /// Tasks ready to be delivered.
    pub depth: u64,
    /// Tasks leased to a consumer and not yet acked.
    pub in_flight: u64,
    /// Tasks in this queue's dead-letter queue.
    pub dead: u64,
    /// Sessions consuming this queue.
    pub consumers: u64,
    /// Tasks put with a delay (or retried with a backoff) that are not ready yet.
    #[serde(default)]
    pub scheduled: u64,
    /// Redundant tasks waiting for their replicas to agree (their replicas count in `depth`,
    /// `in_flight` and `scheduled` like any task).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub voting: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Longest `message` a `progress` may carry, in bytes.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;
/// Most running tasks' progress `stats` shows per worker (the latest reported).
pub const MAX_PROGRESS_SHOWN: usize = 8;

/// What makes a `progress` report impossible, if anything: a fraction outside 0 to 1 (or not a
/// number), or a message past [`MAX_PROGRESS_MESSAGE_BYTES`].
pub fn check_progress(fraction: f64, message: Option<&str>) -> Result<(), String> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(format!(
            "progress fraction must be from 0 to 1, not {fraction}"
        ));
    }
    if let Some(m) = message
        && m.len() > MAX_PROGRESS_MESSAGE_BYTES
    {
        return Err(format!(
            "a progress message may be {MAX_PROGRESS_MESSAGE_BYTES} bytes, not {}",
            m.len()
        ));
    }
    Ok(())
}

/// A running task's latest progress, in a worker's line of `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub task: TaskId,
    pub queue: QueueName,
    pub fraction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a browser tab (or any client) says of itself in `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TabState {
    /// Its page is visible (`document.visibilityState`).
    pub visible: bool,
    /// Plugged in, where the browser tells (the Battery Status API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
    /// Battery level, 0 to 1, where the browser tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
    /// Its measured mean run time per task, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_per_task: Option<f64>,
    /// Its policy (`when=visible` in the join link) has it take no tasks now.
    #[serde(default)]
    pub paused: bool,
}

impl TabState {
    /// What makes a `state` impossible, if anything: a battery level outside 0 to 1, or a run
    /// time that is negative or not a number.
    pub fn check(&self) -> Result<(), String> {
        if let Some(b) = self.battery
            && !(0.0..=1.0).contains(&b)
        {
            return Err(format!("battery must be from 0 to 1, not {b}"));
        }
        if let Some(ms) = self.ms_per_task
            && !(ms >= 0.0 && ms.is_finite())
        {
            return Err(format!(
                "ms_per_task must be a number of 0 or more, not {ms}"
            ));
        }
        Ok(())
    }
}

/// One worker session's line in `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub session: SessionId,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tasks this session acked.
    pub acked: u64,
    /// Tasks this session failed.
    pub failed: u64,
    /// Tasks leased to it now.
    pub in_flight: u64,
    /// Its running tasks that reported progress, the latest report of each (at most
    /// [`MAX_PROGRESS_SHOWN`], most recent first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<TaskProgress>,
    /// What it last said of itself in `state` (browser tabs), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TabState>,
}

/// The hub's `stats` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub queues: Vec<QueueStats>,
    /// Authenticated sessions by role.
    pub sessions: BTreeMap<String, u64>,
    /// Every session that is consuming or has worked (workers and browser tabs).
    #[serde(default)]
    pub workers: Vec<WorkerStats>,
    /// Tasks acked since the hub started.
    #[serde(default)]
    pub acked: u64,
    /// Tasks failed since the hub started.
    #[serde(default)]
    pub failed: u64,
    /// Payload bytes of every task the hub holds now, against its `max_stored_bytes`.
    #[serde(default)]
    pub stored_bytes: u64,
}

impl Stats {
    /// The line of the queue named `name`, if the hub has that queue.
    pub fn queue(&self, name: &str) -> Option<&QueueStats> {
        self.queues.iter().find(|q| q.name.as_str() == name)
    }
}

/// A message from the hub to a client. Decoded by [`crate::codec`]'s flat reader, like
/// [`ClientMsg`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<P = Payload> {
    /// First frame on every connection.
    Challenge {
        version: u32,
        /// 32 random bytes, lowercase hex.
        nonce: String,
    },
    /// The handshake succeeded. `proof` is the hub's answer to the client's nonce.
    Welcome {
        session: SessionId,
        /// `HMAC-SHA256(key, "taskhub-hub\n" key_id "\n" nonce "\n" client_nonce)`, lowercase hex.
        proof: String,
        /// This session's private reply inbox, for `reply_to`.
        inbox: QueueName,
        limits: Limits,
    },
    /// Generic success for requests with nothing else to say.
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
    },
    /// The `put` was accepted.
    Queued {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
    },
    /// Answer to `get`: the task is removed from the queue for good.
    Task {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: Task<P>,
    },
    /// Answer to `get` when nothing arrived within the timeout.
    Empty {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
    },
    /// A task pushed to a consumer, leased to it until `ack`, `fail` or `release`.
    Deliver { task: Task<P> },
    /// The outcome of a task whose `reply_to` was this session's inbox.
    Reply(Reply<P>),
    /// To the session whose inbox is `task`'s `reply_to`: how far the task has got, as its
    /// worker reported. At most once: a session that does not keep up may miss some.
    Progress {
        task: TaskId,
        fraction: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// To the worker holding `task`: a client cancelled it. Its lease has ended; the worker
    /// stops the handler and sends nothing more for it.
    Cancel { task: TaskId },
    /// Answer to `cancel`: the task was stopped, and where it was.
    Cancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        task: TaskId,
        state: TaskState,
    },
    /// A pub/sub message.
    Message { topic: Topic, payload: P },
    /// Answer to `publish`.
    Published {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        receivers: u64,
    },
    /// Answer to `stats`.
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        #[serde(flatten)]
        stats: Stats,
    },
    /// Answer to `delete_queue`: how many ready tasks were dropped, and whether the queue is
    /// gone (`false`: consumers, waiting gets, leased tasks or tasks naming it as `reply_to` keep
    /// it, empty, until they are done).
    Deleted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
        tasks: u64,
        removed: bool,
    },
    /// Answer to `dead_list`: the oldest entries of `<queue>.dead` (each as `get` would give it,
    /// except that the payload of a task that carried bytes is `null`, with `payload_bytes`
    /// saying how many), and how many the queue holds.
    DeadLetters {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
        entries: Vec<serde_json::Value>,
        total: u64,
    },
    /// Answer to `dead_requeue`: how many dead letters went back on `queue`, and whether
    /// `<queue>.dead` holds more (a request without `ids` moves at most [`DEAD_REQUEUE_MAX`]).
    Requeued {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        queue: QueueName,
        count: u64,
        more: bool,
    },
    /// Answer to `create_token`.
    Token {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        /// The token: `th1.CLAIMS.SIGNATURE` (see [`crate::token`]).
        token: String,
        token_id: String,
        /// When it stops working, in Unix seconds.
        expires: u64,
    },
    /// Answer to `revoke_token`: the id is revoked, and `closed` sessions that used it were
    /// closed.
    Revoked {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        token_id: String,
        closed: u64,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        code: ErrorCode,
        message: String,
        /// For `auth_failed`: `credentials` (unknown key id or wrong proof), `expired` or
        /// `revoked`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<AuthFailure>,
    },
}

/// Why a handshake (or a session, later) was refused its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailure {
    /// Unknown key id, wrong proof, or a token whose signer is not an admin key.
    Credentials,
    /// The key or token is past its expiry.
    Expired,
    /// The token was revoked.
    Revoked,
}

impl<P> ServerMsg<P> {
    /// The echoed request id, if this is an answer to a request.
    pub fn req(&self) -> Option<u64> {
        match self {
            ServerMsg::Ok { req }
            | ServerMsg::Queued { req, .. }
            | ServerMsg::Task { req, .. }
            | ServerMsg::Empty { req, .. }
            | ServerMsg::Published { req, .. }
            | ServerMsg::Stats { req, .. }
            | ServerMsg::Deleted { req, .. }
            | ServerMsg::DeadLetters { req, .. }
            | ServerMsg::Requeued { req, .. }
            | ServerMsg::Cancelled { req, .. }
            | ServerMsg::Token { req, .. }
            | ServerMsg::Revoked { req, .. }
            | ServerMsg::Error { req, .. } => *req,
            _ => None,
        }
    }

    pub fn error(req: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ServerMsg<P> {
        ServerMsg::Error {
            req,
            code,
            message: message.into(),
            reason: None,
        }
    }
}

/// A task's outcome, as put on its `reply_to` queue (as the payload) or pushed to an inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply<P = Payload> {
    pub id: TaskId,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<P>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The task was cancelled (`ok` is false); it may have run in part.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// Where a cancelled task was when the `cancel` came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting in its queue.
    Ready,
    /// Waiting for its time (a delay, or a retry's backoff).
    Scheduled,
    /// Leased to a worker, which was told to stop.
    Leased,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Ready => "ready",
            TaskState::Scheduled => "scheduled",
            TaskState::Leased => "leased",
        }
    }
}

/// The fixed list of error codes. Each comes with a human message naming the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object, or is a binary frame. The session stays open.
    BadFrame,
    /// The `type` is not one this hub knows. The session stays open.
    UnknownType,
    /// A field is missing, has the wrong type, or a name is invalid. The session stays open.
    BadRequest,
    /// A request came before the handshake finished. The connection is closed.
    AuthRequired,
    /// Unknown key id or wrong proof. The connection is closed.
    AuthFailed,
    /// No `auth` within the handshake timeout. The connection is closed.
    AuthTimeout,
    /// The frame exceeds the hub's `max_message_bytes`. The connection is closed.
    TooLarge,
    /// The queue holds `max_queue_len` tasks; try later.
    QueueFull,
    /// The hub holds `max_queues` queues already.
    TooManyQueues,
    /// The task is not leased to this session (already acked, or its lease expired).
    UnknownTask,
    /// The request touches another session's inbox.
    Forbidden,
    /// A per-session limit (pending gets, subscriptions) was reached.
    LimitReached,
    /// The hub is at `max_connections`. The connection is closed.
    TooManyConnections,
    /// The session did not read its messages fast enough. The connection is closed.
    SlowConsumer,
    /// The hub is shutting down. The connection is closed.
    ShuttingDown,
    /// The session sent nothing, not even a pong, for the hub's idle timeout. The connection is
    /// closed.
    IdleTimeout,
    /// The queue named does not exist (`delete_queue`).
    UnknownQueue,
    /// The hub could not store the task (its disk is full or failing); nothing was queued. It
    /// keeps serving everything else, and takes puts again once storage works.
    StorageUnavailable,
    /// The hub's backend cannot do what the request asks (for example a delayed put on a hub
    /// whose queues live in NATS JetStream); nothing was done. The session stays open.
    Unsupported,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AuthTimeout => "auth_timeout",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::TooManyQueues => "too_many_queues",
            ErrorCode::UnknownTask => "unknown_task",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::UnknownQueue => "unknown_queue",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
