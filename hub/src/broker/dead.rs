//! Dead letters as an operator sees them: read `<queue>.dead` without taking its entries
//! (`dead_list`), and put entries back on their queue as new tasks (`dead_requeue`). What an
//! entry holds, and how it becomes a task again, is shared with the NATS backend.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;
use taskhub_core::body::Held;
use taskhub_core::protocol::{DEAD_LIST_DEFAULT, DEAD_LIST_MAX, DEAD_REQUEUE_MAX, Schedule};
use taskhub_core::{ErrorCode, Millis, QueueName, RawJson, SessionId, TaskId};

use super::store::Place;
use super::{Body, Broker, Change, Failure, rules};

/// An entry of `<queue>.dead` as the operator reads it: the stored record, with the payload of a
/// task that carried bytes shown as `null` and `payload_bytes` saying how many.
pub(crate) fn listed(entry: &Body) -> Value {
    match entry {
        Body::Json(raw) => raw.to_value().unwrap_or(Value::Null),
        Body::Holding(h) => {
            let mut v = h.json.to_value().unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("payload_bytes".into(), h.bytes.len().into());
            }
            v
        }
        Body::Bytes(b) => serde_json::json!({"payload": null, "payload_bytes": b.len()}),
    }
}

/// What a dead-letter entry says of the task it reports on.
#[derive(Debug, Deserialize)]
struct Record {
    id: TaskId,
    #[serde(default)]
    kind: Option<String>,
    payload: Box<serde_json::value::RawValue>,
    #[serde(default)]
    reply_to: Option<QueueName>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    priority: u8,
    #[serde(default)]
    replicas: u8,
    #[serde(default)]
    quorum: Option<u8>,
    #[serde(default)]
    max_replicas: Option<u8>,
}

/// A dead letter made a task again: its id (the original task's), and what the new task carries.
#[derive(Debug)]
pub(crate) struct Revived {
    pub id: TaskId,
    pub kind: Option<String>,
    pub payload: Body,
    pub reply_to: Option<QueueName>,
    pub max_attempts: Option<u32>,
    pub priority: u8,
    /// A redundant task's replicas, quorum and cap.
    pub replicas: (u8, Option<u8>, Option<u8>),
}

/// Read an entry of a dead-letter queue; `None` if it is not one (something else was put there).
pub(crate) fn revive(entry: &Body) -> Option<Revived> {
    let (json, held) = match entry {
        Body::Json(raw) => (raw, None),
        Body::Holding(h) => (&h.json, Some(h)),
        Body::Bytes(_) => return None,
    };
    let r: Record = serde_json::from_str(json.get()).ok()?;
    let inner = RawJson::from_text(r.payload.get().to_string()).ok()?;
    let payload = match held {
        None => Body::Json(inner),
        Some(h) if h.at == "payload" => Body::Bytes(h.bytes.clone()),
        Some(h) => Body::Holding(Box::new(Held {
            json: inner,
            at: h.at.strip_prefix("payload.")?.to_string(),
            bytes: h.bytes.clone(),
        })),
    };
    Some(Revived {
        id: r.id,
        kind: r.kind,
        payload,
        reply_to: r.reply_to,
        max_attempts: r.max_attempts,
        priority: r.priority.min(taskhub_core::protocol::MAX_PRIORITY),
        replicas: (r.replicas, r.quorum, r.max_replicas),
    })
}

/// A request's `limit`, within bounds.
pub(crate) fn list_limit(limit: Option<u32>) -> usize {
    limit.unwrap_or(DEAD_LIST_DEFAULT).clamp(1, DEAD_LIST_MAX) as usize
}

/// `queue` must be a task queue (its dead letters are asked for by its own name).
pub(crate) fn check_queue(queue: &QueueName) -> Result<(), Failure> {
    rules::not_inbox(queue)?;
    if queue.is_dead_letter() {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "name the queue whose dead letters you want ({}), not its dead-letter queue",
                queue.as_str().trim_end_matches(".dead")
            ),
        ));
    }
    Ok(())
}

/// Ids asked for that are not among the entries: an error naming them.
pub(crate) fn missing(
    dead: &QueueName,
    wanted: &HashSet<TaskId>,
    found: &HashSet<TaskId>,
) -> Result<(), Failure> {
    let mut gone: Vec<u64> = wanted.difference(found).map(|t| t.0).collect();
    if gone.is_empty() {
        return Ok(());
    }
    gone.sort_unstable();
    let list: Vec<String> = gone.iter().take(10).map(u64::to_string).collect();
    Err((
        ErrorCode::UnknownTask,
        format!(
            "{dead} has no dead letter for task(s) {}{}; nothing was requeued",
            list.join(", "),
            if gone.len() > 10 { ", …" } else { "" }
        ),
    ))
}

impl Broker {
    /// The oldest `limit` entries of `<queue>.dead`, left where they are, and how many it holds.
    pub(super) fn dead_list(
        &self,
        queue: &QueueName,
        limit: Option<u32>,
    ) -> Result<(Vec<Value>, u64), Failure> {
        check_queue(queue)?;
        let Some(q) = self.queues.get(&queue.dead_letter()) else {
            return Ok((Vec::new(), 0));
        };
        let entries = q
            .ready
            .iter()
            .take(list_limit(limit))
            .map(|t| listed(&t.payload))
            .collect();
        Ok((entries, q.ready.len() as u64))
    }

    /// Put the dead letters of `queue` named by `ids` (all of them, up to
    /// [`DEAD_REQUEUE_MAX`], without) back on `queue` as new tasks, in their order, and take
    /// them out of `<queue>.dead`. Each is stored as a new task before its entry goes, so a put
    /// the hub refuses (a full queue) leaves that entry and those after it in place. Returns how
    /// many went back and whether more are left.
    pub(super) fn dead_requeue(
        &mut self,
        session: SessionId,
        queue: QueueName,
        ids: Option<Vec<TaskId>>,
        now: Millis,
    ) -> Result<(u64, bool), Failure> {
        check_queue(&queue)?;
        let dead = queue.dead_letter();
        let wanted: Option<HashSet<TaskId>> = ids.map(|ids| ids.into_iter().collect());
        let Some(dq) = self.queues.get_mut(&dead) else {
            if let Some(w) = &wanted {
                missing(&dead, w, &HashSet::new())?;
            }
            return Ok((0, false));
        };
        // Pick the entries first, so an id that is not there refuses the whole request.
        let mut picked = Vec::new();
        let mut found = HashSet::new();
        for entry in dq.ready.iter() {
            let Some(r) = revive(&entry.payload) else {
                continue;
            };
            let take = match &wanted {
                Some(w) => w.contains(&r.id),
                None => picked.len() < DEAD_REQUEUE_MAX,
            };
            if take && found.insert(r.id) {
                picked.push((Place::of(entry), r));
            }
        }
        if let Some(w) = &wanted {
            missing(&dead, w, &found)?;
        }
        let mut entries = picked
            .into_iter()
            .filter_map(|(at, r)| Some((dq.ready.take(at)?, r)))
            .collect::<Vec<_>>()
            .into_iter();
        let mut count = 0;
        while let Some((entry, r)) = entries.next() {
            let put = self.put(
                session,
                queue.clone(),
                r.payload,
                r.kind,
                r.reply_to,
                r.max_attempts,
                Schedule {
                    priority: r.priority,
                    replicas: r.replicas.0,
                    quorum: r.replicas.1,
                    max_replicas: r.replicas.2,
                    ..Schedule::default()
                },
                now,
            );
            if let Err((code, why)) = put {
                // This one and the rest stay dead letters, where they were.
                if let Some(dq) = self.queues.get_mut(&dead) {
                    for e in std::iter::once(entry).chain(entries.map(|(e, _)| e)) {
                        dq.ready.insert(e);
                    }
                }
                return Err((
                    code,
                    format!(
                        "requeued {count} dead letter(s), then stopped: {why}; the rest are still in {dead}"
                    ),
                ));
            }
            self.journal.record(Change::Done(entry.id));
            count += 1;
        }
        let left = self.queues.get(&dead).map_or(0, |q| q.ready.len());
        let more = wanted.is_none() && left > 0;
        Ok((count, more))
    }
}
