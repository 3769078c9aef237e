//! The only place frames become typed messages and typed messages become frames.
//!
//! A message is one JSON object in a text frame, or, when it carries bytes (a [`Body::Bytes`]
//! payload or result), a binary frame: a 4-byte big-endian header length, that many bytes of the
//! same JSON object with `"binary"` naming where the bytes go (and `null` there), then the bytes.
//!
//! Decoding enforces the size limit before parsing and turns every failure into a [`DecodeError`]
//! that carries the request id (when the frame had a readable one), an [`ErrorCode`] and a message
//! naming the problem, ready to send back to the peer.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::body::{Body, JsonNull, Payload};
use crate::names::{Pattern, QueueName, SessionId, TaskId, Topic};
use crate::protocol::{
    AuthFailure, ClientMsg, ErrorCode, Limits, MAX_REPLICAS, QueueStats, Reply, Role, Schedule,
    ServerMsg, Stats, TabState, Task, TaskState, WorkerStats, bad_priority, check_progress,
};
use crate::rights::Rights;

/// A frame that could not be decoded. Answer the peer with [`DecodeError::to_reply`]; the session
/// stays usable unless the code says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub req: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    pub fn to_reply<P>(&self) -> ServerMsg<P> {
        ServerMsg::error(self.req, self.code, self.message.clone())
    }
}

/// Only read on the error path, to say *which* request failed and why.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    ty: Option<serde_json::Value>,
    req: Option<serde_json::Value>,
}

const KNOWN_CLIENT_TYPES: &[&str] = &[
    "auth",
    "put",
    "get",
    "consume",
    "ack",
    "fail",
    "release",
    "cancel",
    "progress",
    "state",
    "touch",
    "publish",
    "subscribe",
    "unsubscribe",
    "stats",
    "ping",
    "delete_queue",
    "dead_list",
    "dead_requeue",
    "create_token",
    "revoke_token",
];

/// Every field any client message has, read in one pass; `type` then picks the variant.
#[derive(Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
struct Flat<'a, P> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    req: Option<u64>,
    key_id: Option<String>,
    client_nonce: Option<String>,
    proof: Option<String>,
    role: Option<Role>,
    name: Option<String>,
    queue: Option<QueueName>,
    queues: Option<Vec<QueueName>>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<P>,
    kind: Option<String>,
    reply_to: Option<QueueName>,
    max_attempts: Option<u32>,
    dedup_id: Option<String>,
    priority: Option<u64>,
    delay_ms: Option<u64>,
    not_before: Option<u64>,
    backoff_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    replicas: Option<u64>,
    quorum: Option<u64>,
    max_replicas: Option<u64>,
    timeout_ms: Option<u64>,
    prefetch: Option<u32>,
    task: Option<TaskId>,
    #[serde(default, deserialize_with = "present")]
    result: Option<P>,
    error: Option<String>,
    retry: Option<bool>,
    topic: Option<Topic>,
    pattern: Option<Pattern>,
    /// In a binary frame's header: where the bytes go.
    binary: Option<String>,
    batch: Option<bool>,
    rights: Option<Rights>,
    ttl_ms: Option<u64>,
    token_id: Option<String>,
    limit: Option<u32>,
    ids: Option<Vec<TaskId>>,
    fraction: Option<f64>,
    message: Option<String>,
    visible: Option<bool>,
    charging: Option<bool>,
    battery: Option<f64>,
    ms_per_task: Option<f64>,
    paused: Option<bool>,
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>, P: Deserialize<'de>>(d: D) -> Result<Option<P>, D::Error> {
    P::deserialize(d).map(Some)
}

/// `put`'s schedule, checked ([`Schedule::check`]).
fn schedule<P>(flat: &Flat<'_, P>) -> Result<Schedule, String> {
    let priority = flat.priority.unwrap_or(0);
    let count = |n: Option<u64>, name: &str| {
        n.map(|n| {
            u8::try_from(n).map_err(|_| format!("{name} must be at most {MAX_REPLICAS}, not {n}"))
        })
        .transpose()
    };
    let schedule = Schedule {
        priority: u8::try_from(priority).map_err(|_| bad_priority(priority))?,
        delay_ms: flat.delay_ms,
        not_before: flat.not_before,
        backoff_ms: flat.backoff_ms,
        backoff_max_ms: flat.backoff_max_ms,
        replicas: count(flat.replicas, "replicas")?.unwrap_or(0),
        quorum: count(flat.quorum, "quorum")?,
        max_replicas: count(flat.max_replicas, "max_replicas")?,
    };
    schedule.check().map(|()| schedule)
}

fn need<T>(field: Option<T>, name: &str) -> Result<T, String> {
    field.ok_or_else(|| format!("missing field `{name}`"))
}

impl<P> Flat<'_, P> {
    fn into_msg(self) -> Result<ClientMsg<P>, String> {
        let req = self.req;
        Ok(match &*self.ty {
            "auth" => ClientMsg::Auth {
                key_id: need(self.key_id, "key_id")?,
                client_nonce: need(self.client_nonce, "client_nonce")?,
                proof: need(self.proof, "proof")?,
                role: self.role.unwrap_or_default(),
                name: self.name,
                batch: self.batch.unwrap_or(false),
            },
            "put" => ClientMsg::Put {
                schedule: schedule(&self)?,
                req,
                queue: need(self.queue, "queue")?,
                payload: need(self.payload, "payload")?,
                kind: self.kind,
                reply_to: self.reply_to,
                max_attempts: self.max_attempts,
                dedup_id: self.dedup_id,
            },
            "get" => ClientMsg::Get {
                req,
                queue: need(self.queue, "queue")?,
                timeout_ms: self.timeout_ms.unwrap_or(0),
            },
            "consume" => ClientMsg::Consume {
                req,
                queues: need(self.queues, "queues")?,
                prefetch: need(self.prefetch, "prefetch")?,
            },
            "ack" => ClientMsg::Ack {
                req,
                task: need(self.task, "task")?,
                result: self.result,
            },
            "fail" => ClientMsg::Fail {
                req,
                task: need(self.task, "task")?,
                error: need(self.error, "error")?,
                retry: self.retry.unwrap_or(true),
                backoff_ms: self.backoff_ms,
            },
            "release" => ClientMsg::Release {
                req,
                task: need(self.task, "task")?,
            },
            "cancel" => ClientMsg::Cancel {
                req,
                task: need(self.task, "task")?,
            },
            "state" => {
                let state = TabState {
                    visible: need(self.visible, "visible")?,
                    charging: self.charging,
                    battery: self.battery,
                    ms_per_task: self.ms_per_task,
                    paused: self.paused.unwrap_or(false),
                };
                state.check()?;
                ClientMsg::State { req, state }
            }
            "progress" => {
                let fraction = need(self.fraction, "fraction")?;
                check_progress(fraction, self.message.as_deref())?;
                ClientMsg::Progress {
                    req,
                    task: need(self.task, "task")?,
                    fraction,
                    message: self.message,
                }
            }
            "touch" => ClientMsg::Touch {
                req,
                task: need(self.task, "task")?,
            },
            "publish" => ClientMsg::Publish {
                req,
                topic: need(self.topic, "topic")?,
                payload: need(self.payload, "payload")?,
            },
            "subscribe" => ClientMsg::Subscribe {
                req,
                pattern: need(self.pattern, "pattern")?,
            },
            "unsubscribe" => ClientMsg::Unsubscribe {
                req,
                pattern: need(self.pattern, "pattern")?,
            },
            "stats" => ClientMsg::Stats { req },
            "ping" => ClientMsg::Ping { req },
            "delete_queue" => ClientMsg::DeleteQueue {
                req,
                queue: need(self.queue, "queue")?,
            },
            "dead_list" => ClientMsg::DeadList {
                req,
                queue: need(self.queue, "queue")?,
                limit: self.limit,
            },
            "dead_requeue" => ClientMsg::DeadRequeue {
                req,
                queue: need(self.queue, "queue")?,
                ids: self.ids,
            },
            "create_token" => ClientMsg::CreateToken {
                req,
                rights: need(self.rights, "rights")?,
                ttl_ms: need(self.ttl_ms, "ttl_ms")?,
            },
            "revoke_token" => ClientMsg::RevokeToken {
                req,
                token_id: need(self.token_id, "token_id")?,
            },
            other => return Err(format!("unknown message type {other:?}")),
        })
    }
}

impl<'de, P: Deserialize<'de>> Deserialize<'de> for ClientMsg<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Flat::<P>::deserialize(d)?
            .into_msg()
            .map_err(serde::de::Error::custom)
    }
}

/// Every field any hub message has. `task` is an id in `queued` and an object in `task` and
/// `deliver`, so it is kept raw and read once the type is known.
#[derive(Deserialize)]
struct FlatServer<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    req: Option<u64>,
    version: Option<u32>,
    nonce: Option<String>,
    session: Option<SessionId>,
    proof: Option<String>,
    inbox: Option<QueueName>,
    limits: Option<Limits>,
    #[serde(borrow)]
    task: Option<&'a RawValue>,
    binary: Option<String>,
    queue: Option<QueueName>,
    id: Option<TaskId>,
    ok: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Payload>,
    error: Option<String>,
    topic: Option<Topic>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Payload>,
    receivers: Option<u64>,
    queues: Option<Vec<QueueStats>>,
    sessions: Option<BTreeMap<String, u64>>,
    workers: Option<Vec<WorkerStats>>,
    acked: Option<u64>,
    failed: Option<u64>,
    stored_bytes: Option<u64>,
    tasks: Option<u64>,
    removed: Option<bool>,
    code: Option<ErrorCode>,
    message: Option<String>,
    reason: Option<AuthFailure>,
    token: Option<String>,
    token_id: Option<String>,
    expires: Option<u64>,
    closed: Option<u64>,
    entries: Option<Vec<serde_json::Value>>,
    total: Option<u64>,
    count: Option<u64>,
    more: Option<bool>,
    cancelled: Option<bool>,
    state: Option<TaskState>,
    fraction: Option<f64>,
}

impl FlatServer<'_> {
    fn task<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let raw = need(self.task, "task")?;
        serde_json::from_str(raw.get()).map_err(|e| format!("bad `task`: {e}"))
    }

    fn into_msg(self) -> Result<ServerMsg, String> {
        let req = self.req;
        Ok(match &*self.ty {
            "challenge" => ServerMsg::Challenge {
                version: need(self.version, "version")?,
                nonce: need(self.nonce, "nonce")?,
            },
            "welcome" => ServerMsg::Welcome {
                session: need(self.session, "session")?,
                proof: need(self.proof, "proof")?,
                inbox: need(self.inbox, "inbox")?,
                limits: need(self.limits, "limits")?,
            },
            "ok" => ServerMsg::Ok { req },
            "queued" => ServerMsg::Queued {
                req,
                task: self.task()?,
            },
            "task" => ServerMsg::Task {
                req,
                task: self.task::<Task>()?,
            },
            "empty" => ServerMsg::Empty {
                req,
                queue: need(self.queue, "queue")?,
            },
            "deliver" => ServerMsg::Deliver {
                task: self.task::<Task>()?,
            },
            "reply" => ServerMsg::Reply(Reply {
                id: need(self.id, "id")?,
                ok: need(self.ok, "ok")?,
                result: self.result,
                error: self.error,
                cancelled: self.cancelled.unwrap_or(false),
            }),
            "cancel" => ServerMsg::Cancel { task: self.task()? },
            "progress" => ServerMsg::Progress {
                task: self.task()?,
                fraction: need(self.fraction, "fraction")?,
                message: self.message,
            },
            "cancelled" => ServerMsg::Cancelled {
                req,
                task: self.task()?,
                state: need(self.state, "state")?,
            },
            "message" => ServerMsg::Message {
                topic: need(self.topic, "topic")?,
                payload: need(self.payload, "payload")?,
            },
            "published" => ServerMsg::Published {
                req,
                receivers: need(self.receivers, "receivers")?,
            },
            "stats" => ServerMsg::Stats {
                req,
                stats: Stats {
                    queues: need(self.queues, "queues")?,
                    sessions: need(self.sessions, "sessions")?,
                    workers: self.workers.unwrap_or_default(),
                    acked: self.acked.unwrap_or(0),
                    failed: self.failed.unwrap_or(0),
                    stored_bytes: self.stored_bytes.unwrap_or(0),
                },
            },
            "deleted" => ServerMsg::Deleted {
                req,
                queue: need(self.queue, "queue")?,
                tasks: need(self.tasks, "tasks")?,
                removed: need(self.removed, "removed")?,
            },
            "dead_letters" => ServerMsg::DeadLetters {
                req,
                queue: need(self.queue, "queue")?,
                entries: need(self.entries, "entries")?,
                total: need(self.total, "total")?,
            },
            "requeued" => ServerMsg::Requeued {
                req,
                queue: need(self.queue, "queue")?,
                count: need(self.count, "count")?,
                more: need(self.more, "more")?,
            },
            "token" => ServerMsg::Token {
                req,
                token: need(self.token, "token")?,
                token_id: need(self.token_id, "token_id")?,
                expires: need(self.expires, "expires")?,
            },
            "revoked" => ServerMsg::Revoked {
                req,
                token_id: need(self.token_id, "token_id")?,
                closed: need(self.closed, "closed")?,
            },
            "error" => ServerMsg::Error {
                req,
                code: need(self.code, "code")?,
                message: need(self.message, "message")?,
                reason: self.reason,
            },
            other => return Err(format!("unknown message type {other:?}")),
        })
    }
}

impl<'de> Deserialize<'de> for ServerMsg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FlatServer::deserialize(d)?
            .into_msg()
            .map_err(serde::de::Error::custom)
    }
}

/// Longest piece of a peer's input an error message quotes.
pub const MAX_ECHOED_CHARS: usize = 64;
/// Longest error message the hub sends about a client's frame.
pub const MAX_ERROR_BYTES: usize = 512;

/// Deepest nesting of arrays and objects a client message may have. Everything the hub sends
/// wraps a client's value in at most two more levels, so every answer stays readable by decoders
/// with serde_json's limit of 128.
pub const MAX_NESTING: usize = 100;

/// How deeply the JSON text nests arrays and objects (brackets inside strings do not count).
#[inline(never)]
pub fn nesting(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The raw value of a top-level field of a frame that could not be decoded, found without
/// parsing it, so that the request it answers (or asked) can still be failed. Looks only before
/// the first nested value, where every encoder puts `type`, `req` and `id`.
fn peek<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let head = text.get(1..)?;
    let head = &head[..head.find(['{', '[']).unwrap_or(head.len())];
    let key = format!("\"{field}\"");
    let after = head[head.find(&key)? + key.len()..].trim_start();
    let value = after.strip_prefix(':')?.trim_start();
    Some(value[..value.find([',', '}']).unwrap_or(value.len())].trim_end())
}

/// A top-level integer field (`req`, `id`) of a frame that could not be decoded.
pub fn peek_u64(text: &str, field: &str) -> Option<u64> {
    peek(text, field)?.parse().ok()
}

/// The `type` of a frame that could not be decoded.
pub fn peek_type(text: &str) -> Option<&str> {
    peek(text, "type")?.strip_prefix('"')?.strip_suffix('"')
}

/// The rare frame with many brackets: refuse it if it nests deeper than [`MAX_NESTING`].
#[cold]
#[inline(never)]
fn too_deep(text: &str) -> Result<(), DecodeError> {
    let depth = nesting(text);
    if depth <= MAX_NESTING {
        return Ok(());
    }
    Err(DecodeError {
        req: peek_u64(text, "req"),
        code: ErrorCode::BadRequest,
        message: format!(
            "message nests {depth} levels deep; this hub accepts at most {MAX_NESTING}"
        ),
    })
}

/// Decode a client frame of at most `max_bytes`, with payloads as `P` (the hub keeps them as
/// [`crate::RawJson`] text).
pub fn decode_client<P: DeserializeOwned>(
    text: &str,
    max_bytes: usize,
) -> Result<ClientMsg<P>, DecodeError> {
    if text.len() > max_bytes {
        return Err(too_large(text.len(), max_bytes));
    }
    check_nesting(text)?;
    serde_json::from_str(text).map_err(|e| clip(explain(text, e)))
}

fn too_large(len: usize, max_bytes: usize) -> DecodeError {
    DecodeError {
        req: None,
        code: ErrorCode::TooLarge,
        message: format!("message is {len} bytes; this hub accepts at most {max_bytes}"),
    }
}

fn check_nesting(text: &str) -> Result<(), DecodeError> {
    // Nesting deeper than MAX_NESTING needs more opening brackets than that: counting them is a
    // fast pass over the bytes, and only the rare frame with many gets the full scan.
    let openers = memchr::memchr2_iter(b'[', b'{', text.as_bytes()).count();
    if openers > MAX_NESTING {
        too_deep(text)?;
    }
    Ok(())
}

/// serde's messages quote offending values; an error is never a copy of a big input.
fn clip(mut e: DecodeError) -> DecodeError {
    if e.message.len() > MAX_ERROR_BYTES {
        let end = crate::char_floor(&e.message, MAX_ERROR_BYTES);
        e.message.truncate(end);
        e.message.push('…');
    }
    e
}

fn explain(text: &str, err: serde_json::Error) -> DecodeError {
    let probe: Probe = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(_) => {
            return DecodeError {
                req: None,
                code: ErrorCode::BadFrame,
                message: format!("frame is not a JSON object: {err}"),
            };
        }
    };
    let req = probe.req.as_ref().and_then(|r| r.as_u64());
    if probe.req.is_some() && req.is_none() {
        return DecodeError {
            req: None,
            code: ErrorCode::BadRequest,
            message: "`req` must be a non-negative integer".into(),
        };
    }
    match probe.ty {
        None => DecodeError {
            req,
            code: ErrorCode::BadFrame,
            message: "frame has no \"type\" field".into(),
        },
        Some(serde_json::Value::String(t)) if !KNOWN_CLIENT_TYPES.contains(&t.as_str()) => {
            // Name it, but never echo more than a little of what the peer sent.
            let shown: String = t.chars().take(MAX_ECHOED_CHARS).collect();
            let cut = if shown.len() < t.len() { "…" } else { "" };
            DecodeError {
                req,
                code: ErrorCode::UnknownType,
                message: format!(
                    "unknown message type {shown:?}{cut}; known types are {}",
                    KNOWN_CLIENT_TYPES.join(", ")
                ),
            }
        }
        Some(serde_json::Value::String(t)) => DecodeError {
            req,
            code: ErrorCode::BadRequest,
            message: format!("bad {t:?} message: {err}"),
        },
        Some(_) => DecodeError {
            req,
            code: ErrorCode::BadFrame,
            message: "\"type\" must be a string".into(),
        },
    }
}

/// The messages of a text frame that holds several, one after another (JSON values separated by
/// nothing or by whitespace such as newlines), each as its text; and, if one is not readable
/// JSON, where it starts and why (nothing after it is read: where the next one would start is
/// not known).
pub fn split(text: &str) -> (Vec<&str>, Option<(usize, String)>) {
    let mut parts = Vec::new();
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    loop {
        let at = values.byte_offset();
        match values.next() {
            None => return (parts, None),
            Some(Ok(raw)) => parts.push(raw.get()),
            Some(Err(e)) => return (parts, Some((at, e.to_string()))),
        }
    }
}

/// Decode a text frame that may hold several messages: one result per message, in order. The
/// messages are read in one pass; only past a message that does not decode is the rest taken
/// apart (`split`) so that each gets its own answer.
fn decode_each<T: DeserializeOwned>(
    text: &str,
    decode: impl Fn(&str) -> Result<T, DecodeError>,
) -> Vec<Result<T, DecodeError>> {
    let mut out = Vec::with_capacity(1);
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<T>();
    let at = loop {
        let at = values.byte_offset();
        match values.next() {
            None => return out,
            Some(Ok(msg)) => out.push(Ok(msg)),
            Some(Err(_)) => break at,
        }
    };
    if out.is_empty() && split(text).0.len() <= 1 {
        // One message (or none readable): its error, worded as always.
        out.push(decode(text));
        return out;
    }
    let rest = text.get(at..).unwrap_or("");
    let (parts, unreadable) = split(rest);
    out.extend(parts.into_iter().map(&decode));
    if let Some((at, why)) = unreadable {
        let rest = rest.get(at..).unwrap_or("").trim_start();
        out.push(Err(clip(DecodeError {
            req: peek_u64(rest, "req"),
            code: ErrorCode::BadFrame,
            message: format!(
                "message {} of this frame is not readable JSON ({why}); the rest of the frame \
                 was not read",
                out.len() + 1
            ),
        })));
    }
    out
}

/// Most bytes of text a sender joins into one frame of several messages (`docs/protocol.md`,
/// *Several messages in one frame*); a longer message goes alone.
pub const JOIN_BYTES: usize = 64 * 1024;

/// Decode a client text frame of at most `max_bytes` that may hold several messages, one after
/// another: a result per message, in order.
pub fn decode_client_frames<P: DeserializeOwned>(
    text: &str,
    max_bytes: usize,
) -> Vec<Result<ClientMsg<P>, DecodeError>> {
    if text.len() > max_bytes {
        return vec![Err(too_large(text.len(), max_bytes))];
    }
    if let Err(e) = check_nesting(text) {
        return vec![Err(e)];
    }
    decode_each(text, |t| decode_client(t, max_bytes))
}

/// Decode a hub text frame that may hold several messages (a client that asked for `batch`).
pub fn decode_server_frames(text: &str) -> Vec<Result<ServerMsg, DecodeError>> {
    decode_each(text, decode_server)
}

/// Decode a hub text frame (clients use this). No size limit: the transport enforces one.
pub fn decode_server(text: &str) -> Result<ServerMsg, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError {
        req: peek_u64(text, "req"),
        code: ErrorCode::BadFrame,
        message: format!("unreadable message from hub: {e}"),
    })
}

/// Decode a hub binary frame: a message whose payload or result is bytes.
pub fn decode_server_binary(frame: &[u8]) -> Result<ServerMsg, DecodeError> {
    let fail = |req, message: String| DecodeError {
        req,
        code: ErrorCode::BadFrame,
        message: format!("unreadable binary message from hub: {message}"),
    };
    let (header, bytes) = split_binary(frame).map_err(|m| fail(None, m))?;
    // Only on the error path: find the request's id without parsing.
    let req = || peek_u64(header, "req");
    let mut flat: FlatServer<'_> =
        serde_json::from_str(header).map_err(|e| fail(req(), e.to_string()))?;
    let at = flat
        .binary
        .take()
        .ok_or_else(|| fail(req(), "the header has no `binary` field".into()))?;
    let msg = flat.into_msg().map_err(|m| fail(req(), m))?;
    let bytes = Bytes::copy_from_slice(bytes);
    let attach = |body: Payload, at: &str| body.attach(at, bytes.clone());
    let joined = match (msg, at.split_once('.').unwrap_or((&at, ""))) {
        (ServerMsg::Task { req, mut task }, ("task", rest)) => {
            attach_under(std::mem::take(&mut task.payload), "payload", rest, attach).map(
                |payload| {
                    task.payload = payload;
                    ServerMsg::Task { req, task }
                },
            )
        }
        (ServerMsg::Deliver { mut task }, ("task", rest)) => {
            attach_under(std::mem::take(&mut task.payload), "payload", rest, attach).map(
                |payload| {
                    task.payload = payload;
                    ServerMsg::Deliver { task }
                },
            )
        }
        (ServerMsg::Reply(mut reply), ("result", "")) => {
            let result = reply.result.take().unwrap_or_default();
            attach(result, "").map(|result| {
                reply.result = Some(result);
                ServerMsg::Reply(reply)
            })
        }
        (ServerMsg::Message { topic, payload }, ("payload", "")) => {
            attach(payload, "").map(|payload| ServerMsg::Message { topic, payload })
        }
        _ => Err(format!("no place for bytes at `{at}` in this message")),
    };
    joined.map_err(|m| fail(req(), m))
}

/// `body` is the value of `field`; `rest` is the attachment's path from `field` on
/// (`payload.result` from `payload`).
fn attach_under(
    body: Payload,
    field: &str,
    rest: &str,
    attach: impl Fn(Payload, &str) -> Result<Payload, String>,
) -> Result<Payload, String> {
    match rest.split_once('.').unwrap_or((rest, "")) {
        (f, at) if f == field => attach(body, at),
        _ => Err(format!("no place for bytes at `task.{rest}`")),
    }
}

/// Decode a client frame of either sort (the hub reads its transport's frames directly; this is
/// for tests and tools).
pub fn decode_client_frame<J: DeserializeOwned + JsonNull>(
    frame: &Frame,
    max_bytes: usize,
) -> Result<ClientMsg<Body<J>>, DecodeError> {
    match frame {
        Frame::Text(t) => decode_client(t, max_bytes),
        Frame::Binary(b) => decode_client_binary(b, max_bytes),
    }
}

/// Decode a hub frame of either sort.
pub fn decode_server_frame(frame: &Frame) -> Result<ServerMsg, DecodeError> {
    match frame {
        Frame::Text(t) => decode_server(t),
        Frame::Binary(b) => decode_server_binary(b),
    }
}

/// Where a client message's bytes go, if it can carry any.
fn client_attachment<J>(msg: &ClientMsg<Body<J>>) -> Option<(&'static str, &Body<J>)> {
    match msg {
        ClientMsg::Put { payload, .. } | ClientMsg::Publish { payload, .. } => {
            Some(("payload", payload))
        }
        ClientMsg::Ack {
            result: Some(result),
            ..
        } => Some(("result", result)),
        _ => None,
    }
}

/// Decode a client's binary frame of at most `max_bytes`: a `put` or `publish` whose payload is
/// bytes, or an `ack` whose result is.
pub fn decode_client_binary<J: DeserializeOwned + JsonNull>(
    frame: &[u8],
    max_bytes: usize,
) -> Result<ClientMsg<Body<J>>, DecodeError> {
    if frame.len() > max_bytes {
        return Err(too_large(frame.len(), max_bytes));
    }
    let (header, bytes) = split_binary(frame).map_err(|message| DecodeError {
        req: None,
        code: ErrorCode::BadFrame,
        message,
    })?;
    // Only on the error path: find the request's id without parsing.
    let bad = |message: String| DecodeError {
        req: peek_u64(header, "req"),
        code: ErrorCode::BadRequest,
        message,
    };
    check_nesting(header)?;
    let mut flat: Flat<'_, Body<J>> =
        serde_json::from_str(header).map_err(|e| clip(explain(header, e)))?;
    let field = match &*flat.ty {
        "put" | "publish" => "payload",
        "ack" => "result",
        other if KNOWN_CLIENT_TYPES.contains(&other) => {
            return Err(bad(format!(
                "a binary frame carries the bytes of a put, publish or ack; {other:?} has none"
            )));
        }
        _ => {
            let unknown = <serde_json::Error as serde::de::Error>::custom("unknown type");
            return Err(clip(explain(header, unknown)));
        }
    };
    match flat.binary.as_deref() {
        Some(at) if at == field => {}
        Some(at) => {
            let shown: String = at.chars().take(MAX_ECHOED_CHARS).collect();
            return Err(bad(format!(
                "a binary {} carries its bytes as `{field}`, not {shown:?}",
                flat.ty
            )));
        }
        None => {
            return Err(bad(format!(
                "a binary frame's header must say where its bytes go: \"binary\": \"{field}\""
            )));
        }
    }
    let slot = if field == "payload" {
        &mut flat.payload
    } else {
        &mut flat.result
    };
    if let Some(Body::Json(j)) = slot
        && !j.is_null()
    {
        return Err(bad(format!(
            "`{field}` must be null or absent in a binary frame's header: the bytes after the \
             header are the {field}"
        )));
    }
    *slot = Some(Body::Bytes(Bytes::copy_from_slice(bytes)));
    flat.into_msg()
        .map_err(|m| bad(format!("bad {:?} message: {m}", flat_ty(header))))
}

fn flat_ty(header: &str) -> &str {
    peek_type(header).unwrap_or("?")
}

/// A binary frame's JSON header, if it has a readable one (to name the request a frame that
/// could not be decoded answers).
pub fn binary_header(frame: &[u8]) -> Option<&str> {
    split_binary(frame).ok().map(|(header, _)| header)
}

/// A binary frame's header (JSON text) and attachment.
fn split_binary(frame: &[u8]) -> Result<(&str, &[u8]), String> {
    let Some((len, rest)) = frame.split_first_chunk::<4>() else {
        return Err(format!(
            "binary frame is {} bytes; it must start with a 4-byte header length",
            frame.len()
        ));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(format!(
            "binary frame's header length is {len} bytes but only {} follow",
            rest.len()
        ));
    }
    let (header, bytes) = rest.split_at(len);
    let header = std::str::from_utf8(header)
        .map_err(|e| format!("binary frame's header is not UTF-8: {e}"))?;
    Ok((header, bytes))
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message with no bytes: its JSON text.
    Text(String),
    /// A message with bytes: header length, header, bytes.
    Binary(Vec<u8>),
}

impl Frame {
    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t),
            Frame::Binary(_) => None,
        }
    }

    /// Bytes on the wire (the frame's payload).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `header` (a JSON object's text) with `"binary": at` added, then `bytes`, as a binary frame.
fn binary_frame(header: String, at: &str, bytes: &[u8]) -> Frame {
    let head = header.strip_suffix('}').unwrap_or(&header);
    let sep = if head.ends_with('{') { "" } else { "," };
    let binary = format!("{sep}\"binary\":\"{at}\"}}");
    let len = head.len() + binary.len();
    let mut out = Vec::with_capacity(4 + len + bytes.len());
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(binary.as_bytes());
    out.extend_from_slice(bytes);
    Frame::Binary(out)
}

fn to_json<T: Serialize>(msg: &T) -> String {
    // Serialising these types cannot fail: every map key is a string and no impl returns errors.
    serde_json::to_string(msg).unwrap_or_default()
}

/// Encode a client message: a text frame, or a binary frame when its payload or result is bytes.
pub fn encode_client<J: Serialize>(msg: &ClientMsg<Body<J>>) -> Frame {
    match client_attachment(msg).and_then(|(field, body)| Some((field, body.attachment()?))) {
        Some((field, (_, bytes))) => binary_frame(to_json(msg), field, bytes),
        None => Frame::Text(to_json(msg)),
    }
}

/// Where a hub message's bytes go, if it carries any.
fn server_attachment<J>(msg: &ServerMsg<Body<J>>) -> Option<(String, &Bytes)> {
    let (field, body) = match msg {
        ServerMsg::Task { task, .. } | ServerMsg::Deliver { task } => {
            ("task.payload", &task.payload)
        }
        ServerMsg::Reply(Reply {
            result: Some(result),
            ..
        }) => ("result", result),
        ServerMsg::Message { payload, .. } => ("payload", payload),
        _ => return None,
    };
    let (at, bytes) = body.attachment()?;
    Some((
        if at.is_empty() {
            field.to_string()
        } else {
            format!("{field}.{at}")
        },
        bytes,
    ))
}

/// Encode a hub message: a text frame, or a binary frame when it carries bytes.
pub fn encode_server<J: Serialize>(msg: &ServerMsg<Body<J>>) -> Frame {
    match server_attachment(msg) {
        Some((at, bytes)) => binary_frame(to_json(msg), &at, bytes),
        None => Frame::Text(to_json(msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    #[test]
    fn put_round_trips_and_matches_the_documented_json() {
        let msg = ClientMsg::Put {
            req: Some(7),
            queue: QueueName::new("tasks").unwrap(),
            payload: json!(3411).into(),
            kind: Some("square".into()),
            reply_to: Some(QueueName::new("results").unwrap()),
            max_attempts: None,
            dedup_id: None,
            schedule: Default::default(),
        };
        let text = encode_client(&msg).as_text().unwrap().to_string();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type":"put","req":7,"queue":"tasks","payload":3411,"kind":"square","reply_to":"results"})
        );
        assert_eq!(decode_client::<Payload>(&text, 1 << 20).unwrap(), msg);
    }

    #[test]
    fn a_put_s_schedule_is_written_flat_and_checked_when_read() {
        let msg = ClientMsg::Put {
            req: None,
            queue: QueueName::new("tasks").unwrap(),
            payload: json!(1).into(),
            kind: None,
            reply_to: None,
            max_attempts: None,
            dedup_id: None,
            schedule: Schedule {
                priority: 9,
                delay_ms: Some(1_500),
                not_before: None,
                ..Schedule::default()
            },
        };
        let text = encode_client(&msg).as_text().unwrap().to_string();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type":"put","queue":"tasks","payload":1,"priority":9,"delay_ms":1500})
        );
        assert_eq!(decode_client::<Payload>(&text, 1 << 20).unwrap(), msg);
        let redundant = r#"{"type":"put","queue":"q","payload":1,"replicas":3}"#;
        let Ok(ClientMsg::Put { schedule, .. }) = decode_client::<Payload>(redundant, 1 << 20)
        else {
            panic!("{redundant}")
        };
        assert_eq!(
            schedule.redundancy(),
            Ok(Some(crate::protocol::Redundancy {
                replicas: 3,
                quorum: 2,
                max_replicas: 6
            })),
            "a majority, and twice the replicas at most"
        );
        for (frame, why) in [
            (
                r#"{"type":"put","queue":"q","payload":1,"priority":10}"#,
                "priority must be 0 to 9 (higher goes first), not 10",
            ),
            (
                r#"{"type":"put","queue":"q","payload":1,"priority":300}"#,
                "priority must be 0 to 9 (higher goes first), not 300",
            ),
            (
                r#"{"type":"put","queue":"q","payload":1,"delay_ms":1,"not_before":2}"#,
                "delay_ms or not_before",
            ),
            (
                r#"{"type":"put","queue":"q","payload":1,"replicas":3,"quorum":4}"#,
                "quorum must be 1 to replicas (3), not 4",
            ),
            (
                r#"{"type":"put","queue":"q","payload":1,"replicas":300}"#,
                "replicas must be at most 16, not 300",
            ),
            (
                r#"{"type":"put","queue":"q","payload":1,"replicas":17}"#,
                "replicas must be 1 to 16, not 17",
            ),
            (
                r#"{"type":"put","queue":"q","payload":1,"replicas":4,"max_replicas":3}"#,
                "max_replicas must be replicas (4) to 16, not 3",
            ),
        ] {
            let e = decode_client::<Payload>(frame, 1 << 20).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains(why), "{}", e.message);
        }
    }

    #[test]
    fn the_hub_reads_payloads_as_text_and_writes_them_back_unchanged() {
        use crate::RawJson;
        let frame = r#"{"type":"put","req":1,"queue":"q","payload": {"n": 18446744073709551616, "f": 0.30000000000000004 }}"#;
        let ClientMsg::Put { payload, .. } =
            decode_client::<Body<RawJson>>(frame, 1 << 20).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            payload.json().unwrap().get(),
            r#"{"n": 18446744073709551616, "f": 0.30000000000000004 }"#
        );
        let out = encode_server(&ServerMsg::Message {
            topic: Topic::new("t").unwrap(),
            payload,
        });
        assert_eq!(
            out.as_text().unwrap(),
            r#"{"type":"message","topic":"t","payload":{"n": 18446744073709551616, "f": 0.30000000000000004 }}"#
        );
        // A present null is a payload; a missing one is not.
        let null = r#"{"type":"put","queue":"q","payload":null}"#;
        assert!(decode_client::<Body<RawJson>>(null, 1024).is_ok());
        let missing = decode_client::<Body<RawJson>>(r#"{"type":"put","queue":"q"}"#, 1024);
        assert_eq!(missing.unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn nesting_is_bounded_so_every_answer_stays_readable() {
        assert_eq!(nesting(r#"{"a": "[[[{{", "b": [1, {"c": []}]}"#), 4);
        assert_eq!(nesting(r#"{"s": "quote \" [ inside"}"#), 1);
        let deep = |n: usize| {
            format!(
                r#"{{"type":"put","req":4,"queue":"q","payload":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(decode_client::<Payload>(&deep(MAX_NESTING - 1), 1 << 20).is_ok());
        let e = decode_client::<Payload>(&deep(MAX_NESTING), 1 << 20).unwrap_err();
        assert_eq!((e.req, e.code), (Some(4), ErrorCode::BadRequest));
        assert!(e.message.contains("nests 101 levels deep"), "{e:?}");
        // An answer wrapping the deepest accepted payload (two more levels) still decodes.
        let answer = format!(
            r#"{{"type":"task","req":9,"task":{{"id":1,"queue":"q","payload":{{"result":{}1{}}},"attempt":1,"max_attempts":5}}}}"#,
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        assert!(decode_server(&answer).is_ok());
        // One the client cannot read still names its req, so its caller is not left waiting.
        let unreadable = format!(
            r#"{{"type":"task","req":9,"task":{{"payload":{}1{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(decode_server(&unreadable).unwrap_err().req, Some(9));
        assert_eq!(
            peek_u64(r#"{"type":"reply","id":42,"ok":true}"#, "id"),
            Some(42)
        );
        assert_eq!(peek_u64(r#"{"type":"x","payload":{"req":5}}"#, "req"), None);
    }

    #[test]
    fn errors_quote_little_of_the_input() {
        let long_type = format!(r#"{{"type":"{}","req":3}}"#, "x".repeat(500_000));
        let e = decode_client::<Payload>(&long_type, usize::MAX).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::UnknownType, Some(3)));
        assert!(e.message.len() < 400, "{} bytes", e.message.len());
        assert!(
            e.message
                .starts_with(&format!("unknown message type \"{}\"…", "x".repeat(64)))
        );
        let long_value = format!(
            r#"{{"type":"put","queue":"{}","payload":1}}"#,
            "q".repeat(100_000)
        );
        let e = decode_client::<Payload>(&long_value, usize::MAX).unwrap_err();
        assert!(
            e.message.len() <= MAX_ERROR_BYTES + 3,
            "{} bytes",
            e.message.len()
        );
    }

    #[test]
    fn errors_name_the_problem_and_keep_the_req() {
        let e = decode_client::<Payload>("{not json", 1024).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);

        let e = decode_client::<Payload>(r#"{"type":"frobnicate","req":3}"#, 1024).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::UnknownType, Some(3)));
        assert!(e.message.contains("frobnicate"));

        let e =
            decode_client::<Payload>(r#"{"type":"put","req":4,"payload":1}"#, 1024).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadRequest, Some(4)));
        assert!(e.message.contains("queue"), "{}", e.message);

        let e =
            decode_client::<Payload>(r#"{"type":"put","req":5,"queue":"a b","payload":1}"#, 1024)
                .unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadRequest, Some(5)));
        assert!(e.message.contains("a b"), "{}", e.message);

        let big = format!(
            r#"{{"type":"put","queue":"q","payload":"{}"}}"#,
            "x".repeat(100)
        );
        assert_eq!(
            decode_client::<Payload>(&big, 64).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn every_client_message_round_trips() {
        let q = || QueueName::new("q").unwrap();
        let msgs = vec![
            ClientMsg::Auth {
                key_id: "k".into(),
                client_nonce: "n".into(),
                proof: "p".into(),
                role: Role::Browser,
                name: Some("tab".into()),
                batch: true,
            },
            ClientMsg::Put {
                req: None,
                queue: q(),
                payload: json!(null).into(),
                kind: None,
                reply_to: None,
                max_attempts: Some(2),
                dedup_id: None,
                schedule: Default::default(),
            },
            ClientMsg::Get {
                req: Some(1),
                queue: q(),
                timeout_ms: 5,
            },
            ClientMsg::Consume {
                req: None,
                queues: vec![q()],
                prefetch: 3,
            },
            ClientMsg::Ack {
                req: None,
                task: TaskId(4),
                result: Some(json!(null).into()),
            },
            ClientMsg::Fail {
                req: None,
                task: TaskId(4),
                error: "e".into(),
                retry: false,
                backoff_ms: None,
            },
            ClientMsg::Release {
                req: None,
                task: TaskId(4),
            },
            ClientMsg::Cancel {
                req: Some(6),
                task: TaskId(4),
            },
            ClientMsg::Progress {
                req: None,
                task: TaskId(4),
                fraction: 1.0,
                message: None,
            },
            ClientMsg::State {
                req: Some(8),
                state: TabState {
                    visible: false,
                    charging: Some(false),
                    battery: Some(0.5),
                    ms_per_task: Some(2.5),
                    paused: true,
                },
            },
            ClientMsg::Touch {
                req: None,
                task: TaskId(4),
            },
            ClientMsg::Publish {
                req: None,
                topic: Topic::new("a.b").unwrap(),
                payload: json!([1]).into(),
            },
            ClientMsg::Subscribe {
                req: None,
                pattern: Pattern::new("a.>").unwrap(),
            },
            ClientMsg::Unsubscribe {
                req: None,
                pattern: Pattern::new("a.*").unwrap(),
            },
            ClientMsg::Stats { req: Some(9) },
            ClientMsg::Ping { req: Some(10) },
            ClientMsg::DeleteQueue {
                req: Some(11),
                queue: q(),
            },
            ClientMsg::DeadList {
                req: Some(14),
                queue: q(),
                limit: Some(5),
            },
            ClientMsg::DeadRequeue {
                req: Some(15),
                queue: q(),
                ids: Some(vec![TaskId(4), TaskId(9)]),
            },
            ClientMsg::CreateToken {
                req: Some(12),
                rights: crate::Rights {
                    consume: vec![Pattern::new("tasks").unwrap()],
                    stats: true,
                    ..crate::Rights::default()
                },
                ttl_ms: 60_000,
            },
            ClientMsg::RevokeToken {
                req: Some(13),
                token_id: "0123456789abcdef".into(),
            },
        ];
        // The list `explain` names in its errors must match what the decoder accepts.
        assert_eq!(msgs.len(), KNOWN_CLIENT_TYPES.len());
        for msg in msgs {
            let text = encode_client(&msg).as_text().unwrap().to_string();
            assert_eq!(
                decode_client::<Payload>(&text, 1 << 20).as_ref(),
                Ok(&msg),
                "{text}"
            );
            let ty: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                KNOWN_CLIENT_TYPES.contains(&ty["type"].as_str().unwrap()),
                "{text}"
            );
        }
        // Defaults: a fail without `retry` retries; an auth without `role` is a producer.
        let fail =
            decode_client::<Payload>(r#"{"type":"fail","task":1,"error":"x"}"#, 1024).unwrap();
        assert!(matches!(fail, ClientMsg::Fail { retry: true, .. }));
        // A null payload is a payload.
        assert!(
            decode_client::<Payload>(r#"{"type":"put","queue":"q","payload":null}"#, 1024).is_ok()
        );
    }

    #[test]
    fn every_server_message_round_trips() {
        let q = || QueueName::new("q").unwrap();
        let task = Task {
            id: TaskId(7),
            queue: q(),
            kind: Some("echo".into()),
            payload: json!({"a": [1, null]}).into(),
            attempt: 2,
            max_attempts: 5,
            reply_to: None,
            priority: 0,
            last_error: None,
        };
        let msgs = vec![
            ServerMsg::Challenge {
                version: 1,
                nonce: "ab".into(),
            },
            ServerMsg::Welcome {
                session: SessionId(3),
                proof: "cd".into(),
                inbox: QueueName::inbox(SessionId(3)),
                limits: Limits {
                    max_message_bytes: 1,
                    ack_wait_ms: 2,
                    max_prefetch: 3,
                    max_attempts: 4,
                    ping_interval_ms: 5,
                },
            },
            ServerMsg::Ok { req: Some(1) },
            ServerMsg::Queued {
                req: Some(2),
                task: TaskId(7),
            },
            ServerMsg::Task {
                req: None,
                task: task.clone(),
            },
            ServerMsg::Empty {
                req: Some(3),
                queue: q(),
            },
            ServerMsg::Deliver { task },
            ServerMsg::Reply(Reply {
                id: TaskId(7),
                ok: false,
                result: None,
                error: Some("no".into()),
                cancelled: false,
            }),
            ServerMsg::Reply(Reply {
                id: TaskId(8),
                ok: false,
                result: None,
                error: Some("cancelled".into()),
                cancelled: true,
            }),
            ServerMsg::Cancel { task: TaskId(8) },
            ServerMsg::Progress {
                task: TaskId(8),
                fraction: 0.25,
                message: Some("tile 3 of 12".into()),
            },
            ServerMsg::Cancelled {
                req: Some(9),
                task: TaskId(8),
                state: crate::TaskState::Leased,
            },
            ServerMsg::Message {
                topic: Topic::new("a.b").unwrap(),
                payload: json!(null).into(),
            },
            ServerMsg::Published {
                req: None,
                receivers: 4,
            },
            ServerMsg::Stats {
                req: Some(5),
                stats: Stats {
                    queues: vec![QueueStats {
                        name: q(),
                        depth: 1,
                        in_flight: 2,
                        dead: 3,
                        consumers: 4,
                        scheduled: 5,
                        voting: 6,
                    }],
                    sessions: [("worker".to_string(), 1)].into(),
                    workers: vec![WorkerStats {
                        session: SessionId(3),
                        role: Role::Browser,
                        name: None,
                        acked: 9,
                        failed: 1,
                        in_flight: 1,
                        progress: vec![crate::protocol::TaskProgress {
                            task: TaskId(8),
                            queue: q(),
                            fraction: 0.5,
                            message: None,
                        }],
                        state: Some(TabState {
                            visible: true,
                            charging: None,
                            battery: None,
                            ms_per_task: None,
                            paused: false,
                        }),
                    }],
                    acked: 9,
                    failed: 1,
                    stored_bytes: 12,
                },
            },
            ServerMsg::Deleted {
                req: Some(7),
                queue: q(),
                tasks: 3,
                removed: false,
            },
            ServerMsg::DeadLetters {
                req: Some(10),
                queue: q(),
                entries: vec![
                    json!({"id": 4, "queue": "tasks", "payload": 3, "attempts": 5, "error": "x"}),
                ],
                total: 7,
            },
            ServerMsg::Requeued {
                req: Some(11),
                queue: q(),
                count: 3,
                more: false,
            },
            ServerMsg::Token {
                req: Some(8),
                token: "th1.e30.AAAA".into(),
                token_id: "0123456789abcdef".into(),
                expires: 1_900_000_000,
            },
            ServerMsg::Revoked {
                req: Some(9),
                token_id: "0123456789abcdef".into(),
                closed: 2,
            },
            ServerMsg::Error {
                req: None,
                code: ErrorCode::AuthFailed,
                message: "the token expired".into(),
                reason: Some(crate::AuthFailure::Expired),
            },
            ServerMsg::error(Some(6), ErrorCode::Forbidden, "nope"),
            ServerMsg::error(None, ErrorCode::UnknownQueue, "no queue named q"),
            ServerMsg::error(None, ErrorCode::IdleTimeout, "closing"),
        ];
        for msg in msgs {
            let text = encode_server(&msg).as_text().unwrap().to_string();
            assert_eq!(decode_server(&text).as_ref(), Ok(&msg), "{text}");
        }
    }

    /// A binary frame as a third party would build it: length, header, bytes.
    fn binary(header: &str, bytes: &[u8]) -> Vec<u8> {
        let mut f = (header.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(bytes);
        f
    }

    #[test]
    fn bytes_travel_after_a_json_header_both_ways() {
        let q = || QueueName::new("q").unwrap();
        let bytes = Bytes::from_static(b"\x00\xff binary \x89PNG");
        let put = ClientMsg::Put {
            req: Some(1),
            queue: q(),
            payload: Body::Bytes(bytes.clone()),
            kind: Some("thumb".into()),
            reply_to: None,
            max_attempts: None,
            dedup_id: None,
            schedule: Default::default(),
        };
        let Frame::Binary(frame) = encode_client(&put) else {
            panic!("a put of bytes is a binary frame")
        };
        let (header, tail) = split_binary(&frame).unwrap();
        assert_eq!(tail, &bytes[..]);
        let header: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(
            header,
            json!({"type":"put","req":1,"queue":"q","payload":null,"kind":"thumb","binary":"payload"})
        );
        assert_eq!(decode_client_binary::<Value>(&frame, 1 << 20).unwrap(), put);
        // A header that leaves the placeholder out is read the same; the hub keeps text JSON.
        let lean = binary(r#"{"type":"ack","task":9,"binary":"result"}"#, b"ok");
        let ClientMsg::Ack { result, .. } =
            decode_client_binary::<crate::RawJson>(&lean, 1 << 20).unwrap()
        else {
            panic!()
        };
        assert_eq!(result.unwrap().bytes().unwrap(), &b"ok"[..]);

        // Hub to client: a task whose payload is bytes, an outcome holding bytes, a reply.
        let task = |payload| Task {
            id: TaskId(7),
            queue: q(),
            kind: None,
            payload,
            attempt: 1,
            max_attempts: 5,
            reply_to: None,
            priority: 0,
            last_error: None,
        };
        let outcome = Body::around(
            json!({"id": 3, "ok": true, "result": null}),
            "result",
            &Body::<Value>::Bytes(bytes.clone()),
        );
        let dead = Body::around(
            json!({"id": 7, "payload": outcome.json_or_null()}),
            "payload",
            &outcome,
        );
        for msg in [
            ServerMsg::Deliver {
                task: task(Body::Bytes(bytes.clone())),
            },
            ServerMsg::Task {
                req: Some(4),
                task: task(outcome.clone()),
            },
            ServerMsg::Task {
                req: Some(5),
                task: task(dead),
            },
            ServerMsg::Reply(Reply {
                id: TaskId(3),
                ok: true,
                result: Some(Body::Bytes(bytes.clone())),
                error: None,
                cancelled: false,
            }),
            ServerMsg::Message {
                topic: Topic::new("a.b").unwrap(),
                payload: Body::Bytes(Bytes::new()),
            },
        ] {
            let Frame::Binary(frame) = encode_server(&msg) else {
                panic!("{msg:?} is a binary frame")
            };
            assert_eq!(decode_server_binary(&frame).unwrap(), msg);
        }
        let Frame::Binary(frame) = encode_server(&ServerMsg::Task {
            req: None,
            task: task(outcome),
        }) else {
            panic!()
        };
        let (header, _) = split_binary(&frame).unwrap();
        assert!(
            header.ends_with(r#","binary":"task.payload.result"}"#),
            "{header}"
        );
    }

    #[test]
    fn a_bad_binary_frame_gets_an_error_naming_the_problem() {
        let err = |frame: &[u8]| decode_client_binary::<Value>(frame, 1024).unwrap_err();
        let e = err(&[0, 0]);
        assert_eq!(e.code, ErrorCode::BadFrame);
        assert!(e.message.contains("4-byte header length"), "{e:?}");
        let e = err(&[0, 0, 1, 0, b'{']);
        assert!(e.message.contains("header length is 256 bytes"), "{e:?}");
        let e = err(&binary("{\"type\":\"put\"}", b"")
            .iter()
            .map(|&b| if b == b't' { 0xff } else { b })
            .collect::<Vec<u8>>());
        assert!(e.message.contains("not UTF-8"), "{e:?}");
        let cases = [
            (
                r#"{"type":"put","req":3,"queue":"q"}"#,
                ErrorCode::BadRequest,
                "\"binary\": \"payload\"",
            ),
            (
                r#"{"type":"put","req":3,"queue":"q","binary":"result"}"#,
                ErrorCode::BadRequest,
                "as `payload`",
            ),
            (
                r#"{"type":"put","req":3,"queue":"q","payload":5,"binary":"payload"}"#,
                ErrorCode::BadRequest,
                "must be null or absent",
            ),
            (
                r#"{"type":"get","req":3,"queue":"q","binary":"payload"}"#,
                ErrorCode::BadRequest,
                "put, publish or ack",
            ),
            (
                r#"{"type":"nope","req":3,"binary":"payload"}"#,
                ErrorCode::UnknownType,
                "unknown message type",
            ),
            (
                r#"{"type":"put","req":3,"binary":"payload"}"#,
                ErrorCode::BadRequest,
                "queue",
            ),
            (
                r#"{"type":"put","req":3,"queue":"q","binary":"payload""#,
                ErrorCode::BadFrame,
                "not a JSON object",
            ),
        ];
        for (header, code, says) in cases {
            let e = err(&binary(header, b"xy"));
            assert_eq!(e.code, code, "{header}: {e:?}");
            assert!(e.message.contains(says), "{header}: {e:?}");
            if code != ErrorCode::BadFrame {
                assert_eq!(e.req, Some(3), "{header}");
            }
        }
        let big = binary(
            r#"{"type":"put","queue":"q","binary":"payload"}"#,
            &[7; 2000],
        );
        assert_eq!(err(&big).code, ErrorCode::TooLarge);
    }

    #[test]
    fn a_frame_may_hold_several_messages_each_answered_on_its_own() {
        type Outcome = Result<Option<u64>, (ErrorCode, Option<u64>)>;
        let codes = |text: &str| -> Vec<Outcome> {
            decode_client_frames::<Payload>(text, 1 << 20)
                .into_iter()
                .map(|r| r.map(|m| m.req()).map_err(|e| (e.code, e.req)))
                .collect()
        };
        assert_eq!(
            codes("{\"type\":\"ping\",\"req\":1}\n{\"type\":\"stats\",\"req\":2}"),
            [Ok(Some(1)), Ok(Some(2))]
        );
        // A bad message in the middle gets its own error; the ones after it still count.
        assert_eq!(
            codes(r#"{"type":"ping","req":1}{"type":"nope","req":2} {"type":"put","req":3}"#),
            [
                Ok(Some(1)),
                Err((ErrorCode::UnknownType, Some(2))),
                Err((ErrorCode::BadRequest, Some(3)))
            ]
        );
        // Unreadable JSON ends the frame: where the next message starts is not known.
        let cut = decode_client_frames::<Payload>(
            "{\"type\":\"ping\",\"req\":1}\n{\"type\":\"ping\",\"req\":2,\n{\"type\":\"ping\"}",
            1 << 20,
        );
        assert_eq!(cut.len(), 2);
        let e = cut[1].as_ref().unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadFrame, Some(2)));
        assert!(
            e.message
                .starts_with("message 2 of this frame is not readable JSON"),
            "{e:?}"
        );
        // One message, even spread over lines, is one message, with the errors it always had.
        assert_eq!(
            codes("{\n  \"type\": \"ping\",\n  \"req\": 7\n}\n"),
            [Ok(Some(7))]
        );
        assert_eq!(codes("{not json"), [Err((ErrorCode::BadFrame, None))]);
        assert_eq!(
            codes(r#"{"type":"put","req":4}"#),
            [Err((ErrorCode::BadRequest, Some(4)))]
        );
        // The hub's joined frames read the same way.
        let joined = "{\"type\":\"ok\",\"req\":1}\n{\"type\":\"ok\",\"req\":2}";
        let msgs: Vec<_> = decode_server_frames(joined)
            .into_iter()
            .map(|m| m.unwrap())
            .collect();
        assert_eq!(
            msgs,
            [
                ServerMsg::Ok { req: Some(1) },
                ServerMsg::Ok { req: Some(2) }
            ]
        );
    }

    #[test]
    fn server_messages_round_trip() {
        let msg = ServerMsg::error(Some(1), ErrorCode::QueueFull, "queue tasks is full");
        let text = encode_server(&msg).as_text().unwrap().to_string();
        assert!(text.contains(r#""code":"queue_full""#), "{text}");
        assert_eq!(decode_server(&text).unwrap(), msg);
    }

    #[test]
    fn progress_outside_0_to_1_or_with_a_long_message_is_refused_by_name() {
        for (frame, says) in [
            (
                r#"{"type":"progress","task":1,"fraction":1.5}"#,
                "from 0 to 1, not 1.5",
            ),
            (
                r#"{"type":"progress","task":1,"fraction":-0.1}"#,
                "not -0.1",
            ),
            (
                r#"{"type":"progress","task":1}"#,
                "missing field `fraction`",
            ),
        ] {
            let err = decode_client::<Payload>(frame, usize::MAX).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest);
            assert!(err.message.contains(says), "{}", err.message);
        }
        let long = "x".repeat(crate::protocol::MAX_PROGRESS_MESSAGE_BYTES + 1);
        let frame = json!({"type": "progress", "task": 1, "fraction": 0.5, "message": long});
        let err = decode_client::<Payload>(&frame.to_string(), usize::MAX).unwrap_err();
        assert!(
            err.message.contains("1024 bytes, not 1025"),
            "{}",
            err.message
        );
    }
}
