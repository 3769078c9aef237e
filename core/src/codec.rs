//! The only place text frames become typed messages and typed messages become text.
//!
//! Decoding enforces the size limit before parsing and turns every failure into a [`DecodeError`]
//! that carries the request id (when the frame had a readable one), an [`ErrorCode`] and a message
//! naming the problem, ready to send back to the peer.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::names::{Pattern, QueueName, SessionId, TaskId, Topic};
use crate::protocol::{
    ClientMsg, ErrorCode, Limits, QueueStats, Reply, Role, ServerMsg, Stats, Task, WorkerStats,
};

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
    "touch",
    "publish",
    "subscribe",
    "unsubscribe",
    "stats",
    "ping",
    "delete_queue",
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
    timeout_ms: Option<u64>,
    prefetch: Option<u32>,
    task: Option<TaskId>,
    #[serde(default, deserialize_with = "present")]
    result: Option<P>,
    error: Option<String>,
    retry: Option<bool>,
    topic: Option<Topic>,
    pattern: Option<Pattern>,
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>, P: Deserialize<'de>>(d: D) -> Result<Option<P>, D::Error> {
    P::deserialize(d).map(Some)
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
            },
            "put" => ClientMsg::Put {
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
            },
            "release" => ClientMsg::Release {
                req,
                task: need(self.task, "task")?,
            },
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
    queue: Option<QueueName>,
    id: Option<TaskId>,
    ok: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    error: Option<String>,
    topic: Option<Topic>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
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
            }),
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
            "error" => ServerMsg::Error {
                req,
                code: need(self.code, "code")?,
                message: need(self.message, "message")?,
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
        return Err(DecodeError {
            req: None,
            code: ErrorCode::TooLarge,
            message: format!(
                "message is {} bytes; this hub accepts at most {max_bytes}",
                text.len()
            ),
        });
    }
    // Nesting deeper than MAX_NESTING needs more opening brackets than that: counting them is a
    // fast pass over the bytes, and only the rare frame with many gets the full scan.
    let openers = memchr::memchr2_iter(b'[', b'{', text.as_bytes()).count();
    if openers > MAX_NESTING {
        too_deep(text)?;
    }
    serde_json::from_str(text).map_err(|e| {
        let mut e = explain(text, e);
        // serde's messages quote offending values; an error is never a copy of a big input.
        if e.message.len() > MAX_ERROR_BYTES {
            let mut end = MAX_ERROR_BYTES;
            while !e.message.is_char_boundary(end) {
                end -= 1;
            }
            e.message.truncate(end);
            e.message.push('…');
        }
        e
    })
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

/// Decode a hub frame (clients use this). No size limit: the transport enforces one.
pub fn decode_server(text: &str) -> Result<ServerMsg, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError {
        req: peek_u64(text, "req"),
        code: ErrorCode::BadFrame,
        message: format!("unreadable message from hub: {e}"),
    })
}

/// Encode a client message as a text frame.
pub fn encode_client<P: Serialize>(msg: &ClientMsg<P>) -> String {
    // Serialising these types cannot fail: every map key is a string and no impl returns errors.
    serde_json::to_string(msg).unwrap_or_default()
}

/// Encode a hub message as a text frame.
pub fn encode_server<P: Serialize>(msg: &ServerMsg<P>) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn put_round_trips_and_matches_the_documented_json() {
        let msg = ClientMsg::Put {
            req: Some(7),
            queue: QueueName::new("tasks").unwrap(),
            payload: json!(3411),
            kind: Some("square".into()),
            reply_to: Some(QueueName::new("results").unwrap()),
            max_attempts: None,
            dedup_id: None,
        };
        let text = encode_client(&msg);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type":"put","req":7,"queue":"tasks","payload":3411,"kind":"square","reply_to":"results"})
        );
        assert_eq!(decode_client::<Value>(&text, 1 << 20).unwrap(), msg);
    }

    #[test]
    fn the_hub_reads_payloads_as_text_and_writes_them_back_unchanged() {
        use crate::RawJson;
        let frame = r#"{"type":"put","req":1,"queue":"q","payload": {"n": 18446744073709551616, "f": 0.30000000000000004 }}"#;
        let ClientMsg::Put { payload, .. } = decode_client::<RawJson>(frame, 1 << 20).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            payload.get(),
            r#"{"n": 18446744073709551616, "f": 0.30000000000000004 }"#
        );
        let out = encode_server(&ServerMsg::Message {
            topic: Topic::new("t").unwrap(),
            payload,
        });
        assert_eq!(
            out,
            r#"{"type":"message","topic":"t","payload":{"n": 18446744073709551616, "f": 0.30000000000000004 }}"#
        );
        // A present null is a payload; a missing one is not.
        let null = r#"{"type":"put","queue":"q","payload":null}"#;
        assert!(decode_client::<RawJson>(null, 1024).is_ok());
        let missing = decode_client::<RawJson>(r#"{"type":"put","queue":"q"}"#, 1024);
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
        assert!(decode_client::<Value>(&deep(MAX_NESTING - 1), 1 << 20).is_ok());
        let e = decode_client::<Value>(&deep(MAX_NESTING), 1 << 20).unwrap_err();
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
        let e = decode_client::<Value>(&long_type, usize::MAX).unwrap_err();
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
        let e = decode_client::<Value>(&long_value, usize::MAX).unwrap_err();
        assert!(
            e.message.len() <= MAX_ERROR_BYTES + 3,
            "{} bytes",
            e.message.len()
        );
    }

    #[test]
    fn errors_name_the_problem_and_keep_the_req() {
        let e = decode_client::<Value>("{not json", 1024).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);

        let e = decode_client::<Value>(r#"{"type":"frobnicate","req":3}"#, 1024).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::UnknownType, Some(3)));
        assert!(e.message.contains("frobnicate"));

        let e = decode_client::<Value>(r#"{"type":"put","req":4,"payload":1}"#, 1024).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadRequest, Some(4)));
        assert!(e.message.contains("queue"), "{}", e.message);

        let e = decode_client::<Value>(r#"{"type":"put","req":5,"queue":"a b","payload":1}"#, 1024)
            .unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadRequest, Some(5)));
        assert!(e.message.contains("a b"), "{}", e.message);

        let big = format!(
            r#"{{"type":"put","queue":"q","payload":"{}"}}"#,
            "x".repeat(100)
        );
        assert_eq!(
            decode_client::<Value>(&big, 64).unwrap_err().code,
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
            },
            ClientMsg::Put {
                req: None,
                queue: q(),
                payload: json!(null),
                kind: None,
                reply_to: None,
                max_attempts: Some(2),
                dedup_id: None,
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
                result: Some(json!(null)),
            },
            ClientMsg::Fail {
                req: None,
                task: TaskId(4),
                error: "e".into(),
                retry: false,
            },
            ClientMsg::Release {
                req: None,
                task: TaskId(4),
            },
            ClientMsg::Touch {
                req: None,
                task: TaskId(4),
            },
            ClientMsg::Publish {
                req: None,
                topic: Topic::new("a.b").unwrap(),
                payload: json!([1]),
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
        ];
        // The list `explain` names in its errors must match what the decoder accepts.
        assert_eq!(msgs.len(), KNOWN_CLIENT_TYPES.len());
        for msg in msgs {
            let text = encode_client(&msg);
            assert_eq!(
                decode_client::<Value>(&text, 1 << 20).as_ref(),
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
        let fail = decode_client::<Value>(r#"{"type":"fail","task":1,"error":"x"}"#, 1024).unwrap();
        assert!(matches!(fail, ClientMsg::Fail { retry: true, .. }));
        // A null payload is a payload.
        assert!(
            decode_client::<Value>(r#"{"type":"put","queue":"q","payload":null}"#, 1024).is_ok()
        );
    }

    #[test]
    fn every_server_message_round_trips() {
        let q = || QueueName::new("q").unwrap();
        let task = Task {
            id: TaskId(7),
            queue: q(),
            kind: Some("echo".into()),
            payload: json!({"a": [1, null]}),
            attempt: 2,
            max_attempts: 5,
            reply_to: None,
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
            }),
            ServerMsg::Message {
                topic: Topic::new("a.b").unwrap(),
                payload: json!(null),
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
                    }],
                    sessions: [("worker".to_string(), 1)].into(),
                    workers: vec![WorkerStats {
                        session: SessionId(3),
                        role: Role::Browser,
                        name: None,
                        acked: 9,
                        failed: 1,
                        in_flight: 0,
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
            ServerMsg::error(Some(6), ErrorCode::Forbidden, "nope"),
            ServerMsg::error(None, ErrorCode::UnknownQueue, "no queue named q"),
            ServerMsg::error(None, ErrorCode::IdleTimeout, "closing"),
        ];
        for msg in msgs {
            let text = encode_server(&msg);
            assert_eq!(decode_server(&text).as_ref(), Ok(&msg), "{text}");
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let msg = ServerMsg::error(Some(1), ErrorCode::QueueFull, "queue tasks is full");
        let text = encode_server(&msg);
        assert!(text.contains(r#""code":"queue_full""#), "{text}");
        assert_eq!(decode_server(&text).unwrap(), msg);
    }
}
