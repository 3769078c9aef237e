//! How taskhub's names and bodies are written in NATS: subjects, consumer names, the headers a
//! task carries, and the JetStream ack subject a delivery comes with. Pure, so it is unit tested.

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

/// Where a hub answers for its id while it runs: a hub starting with the same id hears the answer
/// and draws another (ids are random, 20 bits).
pub fn hub_id_subject(hub: u32) -> String {
    format!("th.hubs.id.{hub}")
}
/// Every topic.
pub const ALL_TOPICS: &str = "th.t.>";
/// Replies to a session's inbox, routed by core NATS to the hub that holds the session:
/// `th.i.<hub>.<session>`.
const INBOX_PREFIX: &str = "th.i.";

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

/// Headers of a task message. A JSON body needs none of the body ones.
pub const KIND: &str = "Th-Kind";
pub const REPLY_TO: &str = "Th-Reply-To";
pub const MAX_ATTEMPTS: &str = "Th-Max-Attempts";
/// A task stored again after a release: its id (the first message's sequence) and the attempts
/// it had spent.
pub const ID: &str = "Th-Id";
pub const SPENT: &str = "Th-Spent";
/// `bytes`, or `held <json length> <path>` (JSON text then the bytes it holds at `path`).
pub const BODY: &str = "Th-Body";

/// A body as a NATS payload, with the header that says how to read it back.
pub fn body_to_nats(body: &Body, headers: &mut HeaderMap) -> Bytes {
    match body {
        Body::Json(j) => Bytes::copy_from_slice(j.get().as_bytes()),
        Body::Bytes(b) => {
            headers.insert(BODY, "bytes");
            b.clone()
        }
        Body::Holding(h) => {
            let json = h.json.get().as_bytes();
            headers.insert(BODY, format!("held {} {}", json.len(), h.at).as_str());
            let mut out = Vec::with_capacity(json.len() + h.bytes.len());
            out.extend_from_slice(json);
            out.extend_from_slice(&h.bytes);
            Bytes::from(out)
        }
    }
}

/// What a task message's headers say, read in one pass (a `HeaderMap::get` builds a name each
/// time). Unknown headers are passed over; a value that does not parse counts as absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TaskHeaders<'a> {
    pub kind: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub max_attempts: Option<u32>,
    pub id: Option<u64>,
    pub spent: u32,
    pub body: Option<&'a str>,
}

impl<'a> TaskHeaders<'a> {
    pub fn read(headers: Option<&'a HeaderMap>) -> TaskHeaders<'a> {
        let mut out = TaskHeaders::default();
        for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
            let Some(value) = values.first().map(|v| v.as_str()) else {
                continue;
            };
            match name.as_ref() {
                KIND => out.kind = Some(value),
                REPLY_TO => out.reply_to = Some(value),
                MAX_ATTEMPTS => out.max_attempts = value.parse().ok(),
                ID => out.id = value.parse().ok(),
                SPENT => out.spent = value.parse().unwrap_or(0),
                BODY => out.body = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// The body a NATS message carries, by its `Th-Body` header (`body`); `None` if it is not one a
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
        for body in bodies {
            let mut h = HeaderMap::new();
            let payload = body_to_nats(&body, &mut h);
            let back = body_from_nats(&payload, TaskHeaders::read(Some(&h)).body).unwrap();
            assert!(
                back.same(&body) || back == body,
                "{body:?} came back as {back:?}"
            );
        }
        assert_eq!(body_from_nats(&Bytes::from_static(b"not json"), None), None);
        let mut h = HeaderMap::new();
        h.insert(BODY, "held 999 result");
        assert_eq!(
            body_from_nats(&Bytes::from_static(b"{}"), TaskHeaders::read(Some(&h)).body),
            None
        );
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
        let t = TaskHeaders::read(Some(&h));
        assert_eq!(
            t,
            TaskHeaders {
                kind: Some("resize"),
                reply_to: Some("results"),
                max_attempts: Some(7),
                id: Some(41),
                spent: 2,
                body: None,
            }
        );
        let mut bad = HeaderMap::new();
        bad.insert(MAX_ATTEMPTS, "many");
        bad.insert(SPENT, "-1");
        assert_eq!(TaskHeaders::read(Some(&bad)), TaskHeaders::default());
        assert_eq!(TaskHeaders::read(None), TaskHeaders::default());
    }

    #[test]
    fn ack_subjects_name_the_task_and_attempt() {
        let old = "$JS.ACK.taskhub.q_jobs.3.1042.17.1700000000000000000.5";
        assert_eq!(
            delivery(old),
            Some(Delivery {
                task: TaskId(1042),
                delivered: 3
            })
        );
        let new = "$JS.ACK.hub.ACCHASH.taskhub.q_jobs.1.9.9.1700000000000000000.0.xyz";
        assert_eq!(
            delivery(new),
            Some(Delivery {
                task: TaskId(9),
                delivered: 1
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
