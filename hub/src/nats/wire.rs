//! How taskhub's names and bodies are written in NATS: subjects, consumer names, what a task
//! carries besides its body, and the JetStream ack subject a delivery comes with. Pure, so it is
//! unit tested.

use std::borrow::Cow;

use async_nats::HeaderMap;
use bytes::Bytes;
use taskhub_core::body::Held;
use taskhub_core::{QueueName, RawJson, SessionId, TaskId, Topic};

use crate::broker::Body;

/// The stream every queue lives in (one subject per queue).
pub const STREAM: &str = "taskhub";
/// Subjects of queues: `th.q.<queue token>`.
pub const QUEUE_SUBJECTS: &str = "th.q.>";
const QUEUE_PREFIX: &str = "th.q.";
/// Pub/sub topics: `th.t.<topic>`, the topic's tokens as they are.
const TOPIC_PREFIX: &str = "th.t.";
/// Where hubs ask each other for their part of `stats`.
pub const STATS: &str = "th.hubs.stats";

/// Every topic.
pub const ALL_TOPICS: &str = "th.t.>";
/// Replies to a session's inbox, routed by core NATS to the hub that holds the session:
/// `th.i.<hub>.<session>`.
const INBOX_PREFIX: &str = "th.i.";

/// Where a hub answers for its id while it runs: a hub starting with the same id hears the answer
/// and draws another (ids are random, 20 bits).
pub fn hub_id_subject(hub: u32) -> String {
    format!("th.hubs.id.{hub}")
}

/// A queue name as one subject token. Queue names allow `.`, which separates NATS tokens, and
/// never `~`, which NATS allows: so `.` is written `~`, and the mapping is one to one.
pub fn queue_token(queue: &QueueName) -> String {
    queue.as_str().replace('.', "~")
}

pub fn queue_subject(queue: &QueueName) -> String {
    format!("{QUEUE_PREFIX}{}", queue_token(queue))
}

/// The queue a subject of the stream names, if it is one.
pub fn queue_of_subject(subject: &str) -> Option<QueueName> {
    let token = subject.strip_prefix(QUEUE_PREFIX)?;
    QueueName::new(token.replace('~', ".")).ok()
}

/// The durable pull consumer every hub shares for `queue`.
pub fn consumer_name(queue: &QueueName) -> String {
    format!("q_{}", queue_token(queue))
}

pub fn topic_subject(topic: &Topic) -> String {
    format!("{TOPIC_PREFIX}{topic}")
}

pub fn topic_of_subject(subject: &str) -> Option<Topic> {
    Topic::new(subject.strip_prefix(TOPIC_PREFIX)?).ok()
}

/// Session ids are unique across hubs: the hub's id in the bits above 32 (`hub` is below 2^20,
/// so ids stay below 2^53 and exact in JavaScript).
pub fn session_base(hub: u32) -> u64 {
    u64::from(hub) << 32
}

pub fn hub_of_session(session: SessionId) -> u32 {
    u32::try_from(session.0 >> 32).unwrap_or(u32::MAX)
}

pub fn inbox_subject(session: SessionId) -> String {
    format!("{INBOX_PREFIX}{}.{}", hub_of_session(session), session.0)
}

/// What a hub subscribes to for the inbox replies of its sessions.
pub fn inbox_subjects(hub: u32) -> String {
    format!("{INBOX_PREFIX}{hub}.*")
}

pub fn session_of_inbox_subject(subject: &str) -> Option<SessionId> {
    subject.rsplit('.').next()?.parse().ok().map(SessionId)
}

/// Headers of a task message as hubs before the [`MAGIC`] line wrote them (still read: tasks
/// they stored are served).
pub const KIND: &str = "Th-Kind";
pub const REPLY_TO: &str = "Th-Reply-To";
pub const MAX_ATTEMPTS: &str = "Th-Max-Attempts";
pub const ID: &str = "Th-Id";
pub const SPENT: &str = "Th-Spent";
pub const BODY: &str = "Th-Body";

/// How a message taskhub writes begins: these bytes, then its [`Meta`] as one line of JSON, then
/// the body. No JSON body starts with a NUL, so a message without it is a JSON body from
/// elsewhere or one with the older headers. (In the payload rather than NATS headers: header
/// maps cost the hub a twentieth of its CPU, built for every put and parsed for every delivery.)
pub const MAGIC: &[u8] = b"\0th1";

/// What a queue message carries besides its body. Every field may be absent.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta<'a> {
    /// The task's kind.
    #[serde(rename = "k", borrow, default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Cow<'a, str>>,
    /// Its `reply_to` queue.
    #[serde(rename = "r", borrow, default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Cow<'a, str>>,
    /// Its `max_attempts`, when not the hub's default.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// A task stored again after a release keeps its id (the first stream sequence) ...
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// ... and the attempts it had spent.
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    pub spent: u32,
    /// How to read the body: absent for JSON, `bytes`, or `held <json length> <at>`.
    #[serde(rename = "b", borrow, default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Cow<'a, str>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A queue or topic message's payload: `meta` (its `body` field is set here) and `body`. A JSON
/// body with nothing else to say goes as it is (no meta line): a plain JSON task or topic
/// message, as anything else on NATS would write it.
pub fn to_nats(mut meta: Meta<'_>, body: &Body) -> Bytes {
    let (form, json, bytes): (_, &[u8], &[u8]) = match body {
        Body::Json(j) if meta == Meta::default() => {
            return Bytes::copy_from_slice(j.get().as_bytes());
        }
        Body::Json(j) => (None, j.get().as_bytes(), &[]),
        Body::Bytes(b) => (Some(Cow::Borrowed("bytes")), &[], b),
        Body::Holding(h) => {
            let json = h.json.get().as_bytes();
            let form = format!("held {} {}", json.len(), h.at);
            (Some(Cow::Owned(form)), json, &h.bytes)
        }
    };
    meta.body = form;
    let mut out = Vec::with_capacity(MAGIC.len() + 64 + json.len() + bytes.len());
    out.extend_from_slice(MAGIC);
    // Compact JSON has no raw newline: the line ends at the first one. (Writing strings and
    // numbers to a Vec cannot fail; if it did, the meta would be dropped, not half written.)
    if serde_json::to_writer(&mut out, &meta).is_err() {
        out.truncate(MAGIC.len());
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
    out.extend_from_slice(json);
    out.extend_from_slice(bytes);
    Bytes::from(out)
}

/// Read a queue or topic message: its meta and body; `None` if it is not one a hub could have
/// written (a queue message is then acked away unread).
pub fn from_nats<'a>(
    payload: &'a Bytes,
    headers: Option<&'a HeaderMap>,
) -> Option<(Meta<'a>, Body)> {
    let (meta, body) = match payload.strip_prefix(MAGIC) {
        Some(rest) => {
            let line = rest.iter().position(|b| *b == b'\n')?;
            let meta: Meta<'a> = serde_json::from_slice(&rest[..line]).ok()?;
            (meta, payload.slice(MAGIC.len() + line + 1..))
        }
        // A plain JSON body, or a message an older hub wrote with headers.
        None => (meta_from_headers(headers), payload.clone()),
    };
    let body = body_from_nats(&body, meta.body.as_deref())?;
    Some((meta, body))
}

/// The meta of a message as hubs before [`MAGIC`] wrote it, in `Th-*` headers, read in one pass
/// (a `HeaderMap::get` builds a name each time). Unknown headers are passed over; a value that
/// does not parse counts as absent.
fn meta_from_headers(headers: Option<&HeaderMap>) -> Meta<'_> {
    let mut meta = Meta::default();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let Some(value) = values.first().map(|v| v.as_str()) else {
            continue;
        };
        match name.as_ref() {
            KIND => meta.kind = Some(Cow::Borrowed(value)),
            REPLY_TO => meta.reply_to = Some(Cow::Borrowed(value)),
            MAX_ATTEMPTS => meta.max_attempts = value.parse().ok(),
            ID => meta.id = value.parse().ok(),
            SPENT => meta.spent = value.parse().unwrap_or(0),
            BODY => meta.body = Some(Cow::Borrowed(value)),
            _ => {}
        }
    }
    meta
}

/// The body a NATS message carries, read as its meta's `body` says; `None` if it is not one a
/// hub wrote.
pub fn body_from_nats(payload: &Bytes, body: Option<&str>) -> Option<Body> {
    match body {
        None => {
            let text = std::str::from_utf8(payload).ok()?.to_string();
            RawJson::from_text(text).ok().map(Body::Json)
        }
        Some("bytes") => Some(Body::Bytes(payload.clone())),
        Some(held) => {
            let mut parts = held.splitn(3, ' ');
            let (Some("held"), Some(len), Some(at)) = (parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            let len: usize = len.parse().ok()?;
            let json = std::str::from_utf8(payload.get(..len)?).ok()?.to_string();
            Some(Body::Holding(Box::new(Held {
                json: RawJson::from_text(json).ok()?,
                at: at.to_string(),
                bytes: payload.slice(len..),
            })))
        }
    }
}

/// What a delivery's ack subject says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The stream sequence: the task's id.
    pub task: TaskId,
    /// Deliveries so far, this one included: the attempt.
    pub delivered: u32,
    /// When JetStream stored the message (ns since the Unix epoch).
    pub stored_ns: u64,
}

/// Read `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or the longer form of newer servers (`$JS.ACK.<domain>.<account>.<stream>...` with a random
/// token at the end).
pub fn delivery(ack_subject: &str) -> Option<Delivery> {
    // Read once per delivery: the first 12 tokens in place, and how many there are.
    let mut tokens = [""; 12];
    let mut n = 0;
    for t in ack_subject.split('.') {
        if let Some(slot) = tokens.get_mut(n) {
            *slot = t;
        }
        n += 1;
    }
    if tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    let first = match n {
        9 => 4,
        n if n >= 12 => 6,
        _ => return None,
    };
    Some(Delivery {
        delivered: tokens.get(first)?.parse().ok()?,
        task: TaskId(tokens.get(first + 1)?.parse().ok()?),
        stored_ns: tokens.get(first + 3)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueueName {
        QueueName::new(s).unwrap()
    }

    #[test]
    fn queue_names_map_to_one_token_and_back() {
        for name in ["jobs", "a.b", "a..b", ".x.", "jobs.dead", "a-b_c:d"] {
            let subject = queue_subject(&q(name));
            assert_eq!(subject.matches('.').count(), 2, "{subject}");
            assert_eq!(queue_of_subject(&subject), Some(q(name)));
        }
        assert_ne!(consumer_name(&q("a.b")), consumer_name(&q("a_b")));
        assert!(!consumer_name(&q("a.b")).contains('.'));
    }

    #[test]
    fn sessions_route_to_their_hub() {
        let s = SessionId(session_base(0xABCDE) + 7);
        assert!(s.0 < 1 << 53);
        assert_eq!(hub_of_session(s), 0xABCDE);
        let subject = inbox_subject(s);
        assert_eq!(session_of_inbox_subject(&subject), Some(s));
        assert!(subject.starts_with(&inbox_subjects(0xABCDE)[..inbox_subjects(0xABCDE).len() - 1]));
    }

    #[test]
    fn bodies_survive_the_trip() {
        let held = Body::Holding(Box::new(Held {
            json: RawJson::from_text(r#"{"id":1,"result":null}"#.into()).unwrap(),
            at: "result".into(),
            bytes: Bytes::from_static(b"\x00\x01 two"),
        }));
        let bodies = [
            Body::Json(RawJson::from_text(r#"{"n": [1, 2]}"#.into()).unwrap()),
            Body::Bytes(Bytes::from_static(b"\xff\x00raw")),
            held,
        ];
        let meta = Meta {
            kind: Some("say \"hi\"\n".into()),
            reply_to: Some("results".into()),
            max_attempts: Some(3),
            id: Some(12),
            spent: 1,
            body: None,
        };
        for body in bodies {
            let payload = to_nats(meta.clone(), &body);
            assert!(payload.starts_with(MAGIC));
            let (m, back) = from_nats(&payload, None).unwrap();
            assert!(
                back.same(&body) || back == body,
                "{body:?} came back as {back:?}"
            );
            assert_eq!(
                Meta { body: None, ..m },
                meta,
                "the meta comes back whatever the body"
            );
        }
        // A JSON body with no meta goes as plain JSON, as anything else on NATS writes it; and
        // a plain JSON body written by something else is a task with no meta.
        let plain = to_nats(
            Meta::default(),
            &Body::Json(RawJson::from_text("[1, 2]".into()).unwrap()),
        );
        assert_eq!(&plain[..], b"[1, 2]");
        let (m, back) = from_nats(&plain, None).unwrap();
        assert_eq!(m, Meta::default());
        assert!(
            matches!(&back, Body::Json(j) if j.get() == "[1, 2]"),
            "{back:?}"
        );
        // Not ours: not JSON, or a meta line that does not parse or never ends.
        for junk in [
            &b"not json"[..],
            b"\0th1{\"k\":1}\n{}",
            b"\0th1{}",
            b"\0th1{\"b\":\"held 99 x\"}\n{}",
        ] {
            assert_eq!(
                from_nats(&Bytes::copy_from_slice(junk), None),
                None,
                "{junk:?}"
            );
        }
        assert_eq!(body_from_nats(&Bytes::from_static(b"not json"), None), None);
        let mut h = HeaderMap::new();
        h.insert(BODY, "held 999 result");
        assert_eq!(from_nats(&Bytes::from_static(b"{}"), Some(&h)), None);
    }

    #[test]
    fn tasks_an_older_hub_stored_with_headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert(KIND, "square");
        h.insert(REPLY_TO, "results");
        h.insert(BODY, "bytes");
        let payload = Bytes::from_static(b"\x01\x02");
        let (m, body) = from_nats(&payload, Some(&h)).unwrap();
        assert_eq!(
            (m.kind.as_deref(), m.reply_to.as_deref()),
            (Some("square"), Some("results"))
        );
        assert_eq!(body, Body::Bytes(payload.clone()));
    }

    #[test]
    fn task_headers_are_read_in_one_pass_and_bad_values_count_as_absent() {
        let mut h = HeaderMap::new();
        h.insert(KIND, "resize");
        h.insert(REPLY_TO, "results");
        h.insert(MAX_ATTEMPTS, "7");
        h.insert(ID, "41");
        h.insert(SPENT, "2");
        h.insert("Other", "x");
        assert_eq!(
            meta_from_headers(Some(&h)),
            Meta {
                kind: Some("resize".into()),
                reply_to: Some("results".into()),
                max_attempts: Some(7),
                id: Some(41),
                spent: 2,
                body: None,
            }
        );
        let mut bad = HeaderMap::new();
        bad.insert(MAX_ATTEMPTS, "many");
        bad.insert(SPENT, "-1");
        assert_eq!(meta_from_headers(Some(&bad)), Meta::default());
        assert_eq!(meta_from_headers(None), Meta::default());
    }

    #[test]
    fn ack_subjects_name_the_task_attempt_and_time() {
        let old = "$JS.ACK.taskhub.q_jobs.3.1042.17.1700000000000000000.5";
        assert_eq!(
            delivery(old),
            Some(Delivery {
                task: TaskId(1042),
                delivered: 3,
                stored_ns: 1_700_000_000_000_000_000,
            })
        );
        let new = "$JS.ACK.hub.ACCHASH.taskhub.q_jobs.1.9.9.1700000000000000000.0.xyz";
        assert_eq!(
            delivery(new),
            Some(Delivery {
                task: TaskId(9),
                delivered: 1,
                stored_ns: 1_700_000_000_000_000_000,
            })
        );
        let longer = format!("{new}.more");
        assert_eq!(delivery(&longer).map(|d| d.task), Some(TaskId(9)));
        assert_eq!(delivery("_INBOX.abc"), None);
        assert_eq!(delivery("$JS.ACK.a.b.x.1.1.1.1"), None);
        assert_eq!(
            delivery("$JS.ACK.taskhub.q_jobs.3.1042.17.1700000000000000000.5.6"),
            None
        );
        assert_eq!(delivery(""), None);
    }
}
