//! Queue semantics under a manual clock: no sockets, no sleeping.

use std::time::Duration;

use serde_json::{Value, json};
use taskhub_core::protocol::Reply;

use super::*;
use taskhub_core::Pattern;

const P: SessionId = SessionId(1); // producer
const W1: SessionId = SessionId(2);
const W2: SessionId = SessionId(3);

fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

struct Harness {
    b: Broker,
    now: Millis,
}

impl Harness {
    fn new(config: BrokerConfig) -> Self {
        let mut b = Broker::new(config);
        b.open_session(P, Role::Producer, None);
        b.open_session(W1, Role::Worker, None);
        b.open_session(W2, Role::Worker, None);
        Harness { b, now: Millis(0) }
    }

    fn send(&mut self, from: SessionId, msg: ClientMsg) -> Vec<Output> {
        self.b.handle(from, msg, self.now);
        self.b.drain().collect()
    }

    fn put(&mut self, queue: &str, payload: Value) -> TaskId {
        self.put_with(queue, payload, None, None)
    }

    fn put_with(
        &mut self,
        queue: &str,
        payload: Value,
        reply_to: Option<&str>,
        max_attempts: Option<u32>,
    ) -> TaskId {
        let out = self.send(
            P,
            ClientMsg::Put {
                req: None,
                queue: q(queue),
                payload: payload.into(),
                kind: Some("square".into()),
                reply_to: reply_to.map(q),
                max_attempts,
                dedup_id: None,
                schedule: Default::default(),
            },
        );
        match &out[0].msg {
            ServerMsg::Queued { task, .. } => *task,
            other => panic!("put failed: {other:?}"),
        }
    }

    fn consume(&mut self, who: SessionId, queue: &str, prefetch: u32) -> Vec<TaskId> {
        let out = self.send(
            who,
            ClientMsg::Consume {
                req: Some(1),
                queues: vec![q(queue)],
                prefetch,
            },
        );
        assert_eq!(out[0].msg, ServerMsg::Ok { req: Some(1) });
        delivered(&out[1..], who)
    }

    fn ack(&mut self, who: SessionId, task: TaskId, result: Value) -> Vec<Output> {
        self.send(
            who,
            ClientMsg::Ack {
                req: Some(2),
                task,
                result: Some(result.into()),
            },
        )
    }

    /// `who` consumes nothing any more (it keeps the tasks it holds).
    fn stop_consuming(&mut self, who: SessionId) -> Vec<Output> {
        self.send(
            who,
            ClientMsg::Consume {
                req: None,
                queues: vec![],
                prefetch: 0,
            },
        )
    }

    fn fail(&mut self, who: SessionId, task: TaskId, retry: bool) -> Vec<Output> {
        self.send(
            who,
            ClientMsg::Fail {
                req: None,
                task,
                error: "no".into(),
                retry,
                backoff_ms: None,
            },
        )
    }

    fn get(&mut self, queue: &str, timeout_ms: u64) -> Vec<Output> {
        self.send(
            P,
            ClientMsg::Get {
                req: Some(1),
                queue: q(queue),
                timeout_ms,
            },
        )
    }

    fn advance(&mut self, ms: u64) -> Vec<Output> {
        self.now = self.now + ms;
        self.b.expire(self.now);
        self.b.drain().collect()
    }
}

/// A put with nothing but a queue and a payload.
fn put_msg(req: Option<u64>, queue: &str, payload: impl Into<Body>) -> ClientMsg {
    scheduled_put(req, queue, payload, Schedule::default())
}

/// A put with a queue, a payload and a schedule (priority, delay, backoff).
fn scheduled_put(
    req: Option<u64>,
    queue: &str,
    payload: impl Into<Body>,
    schedule: Schedule,
) -> ClientMsg {
    ClientMsg::Put {
        req,
        queue: q(queue),
        payload: payload.into(),
        kind: None,
        reply_to: None,
        max_attempts: None,
        dedup_id: None,
        schedule,
    }
}

fn delivered(out: &[Output], to: SessionId) -> Vec<TaskId> {
    out.iter()
        .filter(|o| o.to == to)
        .filter_map(|o| match &o.msg {
            ServerMsg::Deliver { task } => Some(task.id),
            _ => None,
        })
        .collect()
}

fn got_payload(out: &[Output]) -> Option<Value> {
    out.iter().find_map(|o| match &o.msg {
        ServerMsg::Task { task, .. } => task.payload.json()?.to_value().ok(),
        _ => None,
    })
}

#[test]
fn each_queue_is_fifo() {
    let mut h = Harness::new(BrokerConfig::default());
    for n in 0..5 {
        h.put("tasks", json!(n));
    }
    let got: Vec<Value> = (0..5)
        .map(|_| got_payload(&h.get("tasks", 0)).unwrap())
        .collect();
    assert_eq!(got, (0..5).map(|n| json!(n)).collect::<Vec<_>>());
    assert!(matches!(h.get("tasks", 0)[0].msg, ServerMsg::Empty { .. }));
}

#[test]
fn get_waits_then_answers_empty_at_its_deadline() {
    let mut h = Harness::new(BrokerConfig::default());
    assert!(h.get("tasks", 1_000).is_empty(), "waits");
    assert_eq!(h.b.next_deadline(), Some(Millis(1_000)));
    assert!(h.advance(999).is_empty());
    let out = h.advance(1);
    assert_eq!(
        out[0].msg,
        ServerMsg::Empty {
            req: Some(1),
            queue: q("tasks")
        }
    );
    // A waiting get receives a task put while it waits.
    assert!(h.get("tasks", 1_000).is_empty());
    h.b.handle(P, put_msg(None, "tasks", json!(7)), h.now);
    let out: Vec<Output> = h.b.drain().collect();
    assert_eq!(got_payload(&out), Some(json!(7)));
    // No timeout is left behind (the next deadline is only the sweep for unused queues).
    assert!(h.b.waiters.is_empty());
}

#[test]
fn the_prefetch_window_bounds_unacked_deliveries() {
    let mut h = Harness::new(BrokerConfig::default());
    let ids: Vec<TaskId> = (0..5).map(|n| h.put("tasks", json!(n))).collect();
    assert_eq!(h.consume(W1, "tasks", 2), ids[..2]);
    let out = h.ack(W1, ids[0], json!("ok"));
    assert_eq!(out[0].msg, ServerMsg::Ok { req: Some(2) });
    assert_eq!(delivered(&out, W1), vec![ids[2]]);
    let stats = h.b.stats();
    assert_eq!((stats.queues[0].depth, stats.queues[0].in_flight), (2, 2));
    assert_eq!(stats.acked, 1);
    assert_eq!(stats.workers.len(), 1);
    let w = &stats.workers[0];
    assert_eq!(
        (w.session, w.role, w.acked, w.in_flight),
        (W1, Role::Worker, 1, 2)
    );
}

#[test]
fn consumers_share_round_robin() {
    let mut h = Harness::new(BrokerConfig::default());
    h.consume(W1, "tasks", 10);
    h.consume(W2, "tasks", 10);
    let mut to = Vec::new();
    for n in 0..4 {
        h.b.handle(P, put_msg(None, "tasks", json!(n)), h.now);
        to.extend(
            h.b.drain()
                .filter(|o| matches!(o.msg, ServerMsg::Deliver { .. }))
                .map(|o| o.to),
        );
    }
    assert_eq!(to, vec![W1, W2, W1, W2]);
}

#[test]
fn a_closed_session_gives_its_tasks_back_to_the_front_in_order() {
    let mut h = Harness::new(BrokerConfig::default());
    let ids: Vec<TaskId> = (0..4).map(|n| h.put("tasks", json!(n))).collect();
    assert_eq!(h.consume(W1, "tasks", 3), ids[..3]);
    h.b.close_session(W1, h.now);
    assert!(h.b.drain().next().is_none());
    assert_eq!(h.b.leased(), 0);
    assert_eq!(h.consume(W2, "tasks", 10), ids, "same order as first put");
}

#[test]
fn an_expired_lease_is_redelivered() {
    let mut h = Harness::new(BrokerConfig {
        ack_wait: Duration::from_millis(500),
        ..BrokerConfig::default()
    });
    let id = h.put("tasks", json!(1));
    assert_eq!(h.consume(W1, "tasks", 1), vec![id]);
    // W1 stops consuming but still holds the lease, so the redelivery must go to W2.
    h.stop_consuming(W1);
    h.consume(W2, "tasks", 1);
    assert_eq!(h.b.next_deadline(), Some(Millis(500)));
    assert!(h.advance(499).is_empty());
    // A touch extends the lease by ack-wait from now.
    h.send(
        W1,
        ClientMsg::Touch {
            req: None,
            task: id,
        },
    );
    assert!(h.advance(499).is_empty());
    let out = h.advance(1);
    let redelivered: Vec<_> = out
        .iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::Deliver { task } => Some((o.to, task.id, task.attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(redelivered, vec![(W2, id, 2)]);
    // The late ack from the first worker is refused: the task now belongs to W2.
    let out = h.ack(W1, id, json!("late"));
    assert!(matches!(
        out[0].msg,
        ServerMsg::Error {
            code: ErrorCode::UnknownTask,
            ..
        }
    ));
}

#[test]
fn out_of_attempts_the_task_moves_to_the_dead_letter_queue() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put_with("tasks", json!(3), Some("results"), Some(3));
    h.consume(W1, "tasks", 1);
    for attempt in 1..=3u8 {
        let out = h.send(
            W1,
            ClientMsg::Fail {
                req: None,
                task: id,
                error: format!("boom {attempt}"),
                retry: true,
                backoff_ms: None,
            },
        );
        // Nothing comes back at once: the retry waits out the hub's backoff (1 s, doubling,
        // jittered into its upper half), then carries its attempt and the error.
        assert!(delivered(&out, W1).is_empty(), "attempt {attempt}");
        if attempt < 3 {
            let full = 1_000u64 << (attempt - 1);
            assert!(delivered(&h.advance(full / 2 - 1), W1).is_empty());
            let out = h.advance(full / 2 + 2);
            let task = out.iter().find_map(|o| match &o.msg {
                ServerMsg::Deliver { task } => Some(task.clone()),
                _ => None,
            });
            let task = task.unwrap_or_else(|| panic!("attempt {attempt} came back"));
            assert_eq!(task.attempt, u32::from(attempt) + 1);
            assert_eq!(task.last_error, Some(format!("boom {attempt}")));
        }
    }
    let stats = h.b.stats();
    let tasks = stats.queue("tasks").unwrap();
    assert_eq!((tasks.depth, tasks.in_flight, tasks.dead), (0, 0, 1));
    let dead = got_payload(&h.get("tasks.dead", 0)).unwrap();
    assert_eq!(dead["payload"], json!(3));
    assert_eq!(dead["attempts"], json!(3));
    assert!(dead["error"].as_str().unwrap().contains("boom 3"), "{dead}");
    // The producer hears about it on reply_to.
    let reply: Reply = serde_json::from_value(got_payload(&h.get("results", 0)).unwrap()).unwrap();
    assert!(!reply.ok && reply.error.unwrap().contains("boom 3"));
}

#[test]
fn a_worker_crashing_on_a_task_every_time_dead_letters_it() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put_with("tasks", json!(1), None, Some(2));
    for _ in 0..2 {
        h.b.open_session(W1, Role::Worker, None);
        assert_eq!(h.consume(W1, "tasks", 1), vec![id]);
        h.b.close_session(W1, h.now);
    }
    assert_eq!(h.b.stats().queue("tasks").unwrap().dead, 1);
}

#[test]
fn ack_with_reply_to_puts_the_result_there() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put_with("tasks", json!(3411), Some("results"), None);
    h.consume(W1, "tasks", 1);
    h.ack(W1, id, json!("3411 * 3411 = 11634921"));
    let v = got_payload(&h.get("results", 0)).unwrap();
    assert_eq!(
        v,
        json!({"id": id, "ok": true, "result": "3411 * 3411 = 11634921"})
    );
}

#[test]
fn replies_to_an_inbox_go_straight_to_its_session_and_inboxes_are_private() {
    let mut h = Harness::new(BrokerConfig::default());
    let inbox = QueueName::inbox(P);
    let id = h.put_with("tasks", json!(2), Some(inbox.as_str()), None);
    h.consume(W1, "tasks", 1);
    let out = h.ack(W1, id, json!("2 * 2 = 4"));
    assert!(out.iter().any(|o| o.to == P
        && o.msg
            == ServerMsg::Reply(Reply {
                id,
                ok: true,
                result: Some(json!("2 * 2 = 4").into()),
                error: None,
                cancelled: false,
            })));
    let out = h.send(
        W2,
        ClientMsg::Put {
            req: None,
            queue: q("tasks"),
            payload: json!(1).into(),
            kind: None,
            reply_to: Some(inbox.clone()),
            max_attempts: None,
            dedup_id: None,
            schedule: Default::default(),
        },
    );
    assert!(matches!(
        out[0].msg,
        ServerMsg::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    let out = h.get(inbox.as_str(), 0);
    assert!(matches!(
        out[0].msg,
        ServerMsg::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
}

#[test]
fn a_full_queue_refuses_puts_and_a_full_reply_queue_refuses_acks() {
    let mut h = Harness::new(BrokerConfig {
        max_queue_len: 2,
        ..BrokerConfig::default()
    });
    h.put_with("tasks", json!(1), Some("results"), None);
    h.put_with("tasks", json!(2), Some("results"), None);
    let out = h.send(P, put_msg(Some(9), "tasks", json!(3)));
    assert!(
        matches!(&out[0].msg, ServerMsg::Error { req: Some(9), code: ErrorCode::QueueFull, message, .. } if message.contains("tasks"))
    );
    h.put("results", json!("a"));
    h.put("results", json!("b"));
    let ids = h.consume(W1, "tasks", 2);
    let out = h.ack(W1, ids[0], json!(1));
    assert!(matches!(
        out[0].msg,
        ServerMsg::Error {
            code: ErrorCode::QueueFull,
            ..
        }
    ));
    assert_eq!(
        h.b.leased(),
        2,
        "the refused ack keeps its lease, so nothing is lost"
    );
}

#[test]
fn release_returns_a_task_without_spending_an_attempt() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put("tasks", json!(1));
    h.consume(W1, "tasks", 1);
    h.stop_consuming(W1);
    h.send(
        W1,
        ClientMsg::Release {
            req: None,
            task: id,
        },
    );
    let out = h.consume(W2, "tasks", 1);
    assert_eq!(out, vec![id]);
    assert_eq!(h.b.leases.get(&id).map(|l| l.task.attempts), Some(1));
}

#[test]
fn publish_reaches_matching_subscribers_once() {
    let mut h = Harness::new(BrokerConfig::default());
    let sub = |h: &mut Harness, s, p: &str| {
        h.send(
            s,
            ClientMsg::Subscribe {
                req: None,
                pattern: Pattern::new(p).unwrap(),
            },
        )
    };
    sub(&mut h, W1, "metrics.*");
    sub(&mut h, W1, "metrics.>");
    sub(&mut h, W2, "logs.>");
    let out = h.send(
        P,
        ClientMsg::Publish {
            req: Some(4),
            topic: taskhub_core::Topic::new("metrics.cpu").unwrap(),
            payload: json!(0.5).into(),
        },
    );
    assert!(out.iter().any(|o| o.to == P
        && o.msg
            == ServerMsg::Published {
                req: Some(4),
                receivers: 1
            }));
    let msgs: Vec<_> = out
        .iter()
        .filter(|o| matches!(o.msg, ServerMsg::Message { .. }))
        .collect();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].droppable && msgs[0].to == W1);
}

#[test]
fn queue_count_is_bounded() {
    let mut h = Harness::new(BrokerConfig {
        max_queues: 2,
        ..BrokerConfig::default()
    });
    h.put("a", json!(1));
    h.put("b", json!(1));
    // A get that does not wait creates nothing, so it cannot use up the limit.
    let out = h.get("c", 0);
    assert!(matches!(out[0].msg, ServerMsg::Empty { .. }), "{out:?}");
    let out = h.send(P, put_msg(Some(9), "c", json!(1)));
    assert!(matches!(
        out[0].msg,
        ServerMsg::Error {
            code: ErrorCode::TooManyQueues,
            ..
        }
    ));
}

#[test]
fn at_max_queues_results_and_dead_letters_still_have_a_place() {
    let mut h = Harness::new(BrokerConfig {
        max_queues: 2,
        ..BrokerConfig::default()
    });
    // The put creates its reply queue, so a put whose reply queue cannot exist is refused.
    let id = h.put_with("tasks", json!(7), Some("results"), Some(1));
    let out = h.send(
        P,
        ClientMsg::Put {
            req: Some(3),
            queue: q("tasks"),
            payload: json!(8).into(),
            kind: None,
            reply_to: Some(q("fresh")),
            max_attempts: None,
            dedup_id: None,
            schedule: Default::default(),
        },
    );
    let ServerMsg::Error { code, message, .. } = &out[0].msg else {
        panic!("{out:?}")
    };
    assert_eq!(*code, ErrorCode::TooManyQueues);
    assert!(
        message.starts_with("reply_to fresh: cannot create queue fresh"),
        "{message}"
    );
    // A dead-letter queue does not count: the failed task lands in tasks.dead.
    h.consume(W1, "tasks", 1);
    h.send(
        W1,
        ClientMsg::Fail {
            req: None,
            task: id,
            error: "no".into(),
            retry: false,
            backoff_ms: None,
        },
    );
    let dead = got_payload(&h.get("tasks.dead", 0)).unwrap();
    assert_eq!(dead["payload"], json!(7));
    let reply = got_payload(&h.get("results", 0)).unwrap();
    assert_eq!(reply["ok"], json!(false));
}

#[test]
fn a_fail_whose_dead_letter_has_no_room_is_refused_and_keeps_its_lease() {
    let mut h = Harness::new(BrokerConfig {
        max_queue_len: 2,
        ack_wait: Duration::from_millis(100),
        ..BrokerConfig::default()
    });
    // tasks.dead is full.
    h.put("tasks.dead", json!("old 1"));
    h.put("tasks.dead", json!("old 2"));
    let a = h.put_with("tasks", json!("a"), None, Some(1));
    let b = h.put_with("tasks", json!("b"), None, Some(1));
    assert_eq!(h.consume(W1, "tasks", 2), vec![a, b]);
    let fail = |task| ClientMsg::Fail {
        req: Some(4),
        task,
        error: "broken".into(),
        retry: false,
        backoff_ms: None,
    };
    let out = h.send(W1, fail(a));
    let ServerMsg::Error { code, message, .. } = &out[0].msg else {
        panic!("{out:?}")
    };
    assert_eq!(*code, ErrorCode::QueueFull);
    assert!(
        message.contains("tasks.dead is full")
            && message.contains(&format!("task {a} stays leased to this session")),
        "{message}"
    );
    assert_eq!(h.b.leased(), 2, "nothing was dropped");
    // Room again: the same fail goes through, and the old entries are all still there.
    assert_eq!(got_payload(&h.get("tasks.dead", 0)), Some(json!("old 1")));
    let out = h.send(W1, fail(a));
    assert_eq!(out[0].msg, ServerMsg::Ok { req: Some(4) });
    // A dead letter the hub must store on its own (b's lease expires, out of attempts) is
    // never dropped either: it takes tasks.dead past max_queue_len.
    h.advance(100);
    let mut dead = Vec::new();
    while let Some(entry) = got_payload(&h.get("tasks.dead", 0)) {
        dead.push(entry.get("payload").cloned().unwrap_or(entry));
    }
    assert_eq!(dead, vec![json!("old 2"), json!("a"), json!("b")]);
}

#[test]
fn the_longest_queue_name_has_a_dead_letter_queue() {
    let mut h = Harness::new(BrokerConfig::default());
    let long = "q".repeat(128);
    let id = h.put_with(&long, json!(1), None, Some(1));
    h.consume(W1, &long, 1);
    h.send(
        W1,
        ClientMsg::Fail {
            req: None,
            task: id,
            error: "bad".into(),
            retry: true,
            backoff_ms: None,
        },
    );
    let stats = h.b.stats();
    let line = stats.queue(&long).unwrap();
    assert_eq!(line.dead, 1);
    let dead = got_payload(&h.get(&format!("{long}.dead"), 0)).unwrap();
    assert_eq!(dead["payload"], json!(1));
}

#[test]
fn a_closed_session_leaves_no_waiting_gets_behind() {
    let mut h = Harness::new(BrokerConfig::default());
    for _ in 0..3 {
        h.b.open_session(W1, Role::Producer, None);
        for _ in 0..10 {
            h.send(
                W1,
                ClientMsg::Get {
                    req: None,
                    queue: q("quiet"),
                    timeout_ms: 60_000,
                },
            );
        }
        h.b.close_session(W1, h.now);
    }
    assert!(h.b.waiters.is_empty());
    assert!(h.b.queues[&q("quiet")].waiters.is_empty());
    // A later put is not swallowed by a ghost waiter.
    h.put("quiet", json!(1));
    assert_eq!(got_payload(&h.get("quiet", 0)), Some(json!(1)));
}

#[test]
fn worker_traffic_without_req_is_answered_only_when_it_fails() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put("tasks", json!(1));
    h.consume(W1, "tasks", 1);
    let ack = |task| ClientMsg::Ack {
        req: None,
        task,
        result: None,
    };
    assert!(h.send(W1, ack(id)).is_empty(), "a good ack gets no answer");
    let out = h.send(W1, ack(id));
    assert!(matches!(
        out[0].msg,
        ServerMsg::Error {
            req: None,
            code: ErrorCode::UnknownTask,
            ..
        }
    ));
}

#[test]
fn answers_keep_request_order_when_requests_are_applied_together() {
    let mut h = Harness::new(BrokerConfig::default());
    h.consume(W1, "tasks", 10);
    // Two puts from the consumer itself, applied back to back without draining in between (the
    // hub applies every frame that has already arrived under one lock).
    for req in [5, 6] {
        h.b.handle(W1, put_msg(Some(req), "tasks", json!(req)), h.now);
    }
    let order: Vec<String> =
        h.b.drain()
            .map(|o| match o.msg {
                ServerMsg::Queued { req, .. } => format!("queued {}", req.unwrap_or(0)),
                ServerMsg::Deliver { task } => format!("deliver {}", task.payload),
                other => format!("{other:?}"),
            })
            .collect();
    assert_eq!(
        order,
        vec!["queued 5", "deliver 5", "queued 6", "deliver 6"]
    );
}

#[test]
fn the_hub_bounds_the_bytes_it_holds_and_frees_them_whatever_the_path() {
    let forty = || json!("x".repeat(38)); // 40 bytes as JSON
    // The harness puts tasks of kind "square", the raw put below none.
    let cost = super::store::task_cost(&forty().into(), &q("tasks"), Some("square"), None);
    let mut h = Harness::new(BrokerConfig {
        max_stored_bytes: 2 * cost + cost / 2,
        ..BrokerConfig::default()
    });
    let a = h.put("tasks", forty());
    h.put("tasks", forty());
    assert_eq!(h.b.stored_bytes(), 2 * cost);
    let out = h.send(P, put_msg(Some(1), "tasks", forty()));
    assert!(
        matches!(&out[0].msg, ServerMsg::Error { code: ErrorCode::QueueFull, message, .. } if message.contains("max_stored_bytes")),
        "{out:?}"
    );
    // Taken by get: gone for good, its bytes free.
    assert!(got_payload(&h.get("tasks", 0)).is_some());
    assert_eq!(h.b.stored_bytes(), cost);
    // Leased and acked: free too. Leased and the session closed: still held (back in the queue).
    h.put("tasks", forty());
    let ids = h.consume(W1, "tasks", 2);
    assert!(!ids.contains(&a));
    h.b.close_session(W1, h.now);
    // Still held, now with the error each keeps ("the worker's session closed ..."), charged.
    let error = "the worker's session closed while it held the task".len();
    assert_eq!(h.b.stored_bytes(), 2 * (cost + error));
    let ids = h.consume(W2, "tasks", 2);
    for id in ids {
        h.ack(W2, id, json!(null));
    }
    assert_eq!(h.b.stored_bytes(), 0);
    assert_eq!(h.b.stats().stored_bytes, 0);
}

#[test]
fn a_frozen_worker_does_not_get_its_own_expired_tasks_back() {
    let mut h = Harness::new(BrokerConfig {
        ack_wait: Duration::from_millis(500),
        ..BrokerConfig::default()
    });
    let first = h.put("tasks", json!(1));
    let second = h.put("tasks", json!(2));
    assert_eq!(h.consume(W1, "tasks", 1), vec![first]);
    // W1 freezes: its lease expires. It has credit again on paper, but it must not be chosen.
    let out = h.advance(500);
    assert!(delivered(&out, W1).is_empty(), "{out:?}");
    // A live worker arriving takes the expired task first.
    assert_eq!(h.consume(W2, "tasks", 1), vec![first]);
    // W1 wakes up and acks its old task late: unknown_task, but it is alive again.
    let out = h.send(
        W1,
        ClientMsg::Ack {
            req: Some(5),
            task: first,
            result: Some(json!("late").into()),
        },
    );
    assert!(
        matches!(
            out[0].msg,
            ServerMsg::Error {
                code: ErrorCode::UnknownTask,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(delivered(&out, W1), vec![second], "its credit is back");
    // W2's result for the task is the one that counts.
    let out = h.ack(W2, first, json!("on time"));
    assert_eq!(out[0].msg, ServerMsg::Ok { req: Some(2) });
}

#[test]
fn payloads_are_held_as_their_text_so_every_shape_costs_its_length() {
    use super::store::memory_cost;
    // `[0,0,…]` once took 16 times its text as a tree; as text it costs its length.
    let shapes = [
        format!("[{}0]", "0,".repeat(9_999)),
        format!("\"{}\"", "y".repeat(10_000)),
        format!(
            "{{{}\"z\":0}}",
            (0..1_000)
                .map(|i| format!("\"k{i}\":0,"))
                .collect::<String>()
        ),
    ];
    for text in shapes {
        let raw = RawJson::from_text(text.clone()).unwrap();
        let cost = memory_cost(&Body::Json(raw));
        assert!(
            (text.len()..text.len() + 100).contains(&cost),
            "{cost} bytes charged for {} bytes of text",
            text.len()
        );
    }
}

#[test]
fn a_put_repeated_with_its_dedup_id_is_stored_once_within_the_window() {
    let mut h = Harness::new(BrokerConfig {
        dedup_window: Duration::from_secs(10),
        max_dedup_ids: 2,
        ..BrokerConfig::default()
    });
    let put = |h: &mut Harness, dedup: &str, payload: i64| {
        let out = h.send(
            P,
            ClientMsg::Put {
                req: Some(1),
                queue: q("tasks"),
                payload: json!(payload).into(),
                kind: None,
                reply_to: None,
                max_attempts: None,
                dedup_id: Some(dedup.into()),
                schedule: Default::default(),
            },
        );
        match &out[0].msg {
            ServerMsg::Queued { task, .. } => *task,
            other => panic!("{other:?}"),
        }
    };
    let first = put(&mut h, "job-1", 1);
    assert_eq!(
        put(&mut h, "job-1", 1),
        first,
        "the retry gets the first task's id"
    );
    let depth = |h: &Harness| h.b.stats().queues[0].depth;
    assert_eq!(depth(&h), 1, "and nothing is stored twice");
    // Past the window it is a new task.
    h.advance(10_000);
    assert_ne!(put(&mut h, "job-1", 1), first);
    // At most max_dedup_ids are remembered: the oldest is forgotten first.
    let b = put(&mut h, "job-2", 2);
    put(&mut h, "job-3", 3);
    assert_ne!(put(&mut h, "job-1", 1), first);
    assert_eq!(put(&mut h, "job-3", 3), put(&mut h, "job-3", 9));
    assert_ne!(
        put(&mut h, "job-2", 2),
        b,
        "job-2 was pushed out by newer ids"
    );
    let out = h.send(
        P,
        ClientMsg::Put {
            req: Some(2),
            queue: q("tasks"),
            payload: json!(0).into(),
            kind: None,
            reply_to: None,
            max_attempts: None,
            dedup_id: Some(String::new()),
            schedule: Default::default(),
        },
    );
    assert!(matches!(
        &out[0].msg,
        ServerMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
}

#[test]
fn unused_queues_are_dropped_after_the_grace_and_used_ones_are_kept() {
    let mut h = Harness::new(BrokerConfig {
        queue_idle_grace: Duration::from_secs(10),
        max_queues: 5,
        ..BrokerConfig::default()
    });
    // "once": a get that waited and gave up. "consumed": has a consumer. "results": empty, but
    // named as reply_to by a task still queued on "tasks". "tasks.dead": holds a dead letter.
    h.get("once", 1);
    h.consume(W1, "consumed", 1);
    let doomed = h.put_with("tasks", json!(1), None, Some(1));
    h.consume(W2, "tasks", 1);
    h.fail(W2, doomed, false);
    h.consume(W2, "elsewhere", 1); // W2 stops consuming tasks: task 2 stays queued
    h.put_with("tasks", json!(2), Some("results"), None);
    let names = |h: &Harness| {
        let mut v: Vec<String> = h.b.queues.keys().map(|q| q.as_str().to_string()).collect();
        v.sort();
        v
    };
    h.advance(1); // the get gives up
    assert_eq!(
        h.b.next_deadline(),
        Some(Millis(1_000)),
        "sweeps every tenth of the grace"
    );
    assert!(names(&h).contains(&"once".to_string()), "within the grace");
    for _ in 0..11 {
        h.advance(1_000);
    }
    assert_eq!(
        names(&h),
        ["consumed", "elsewhere", "results", "tasks", "tasks.dead"],
        "only the unused queue went"
    );
    // Its slot is free again: at max_queues 5 a sixth name fits once "once" is gone.
    h.put("fresh", json!(0));
    // The result queue goes once nothing names it any more and it is empty, not before.
    let got = h.get("tasks", 0);
    assert_eq!(got_payload(&got), Some(json!(2)), "task 2 taken by get");
    for _ in 0..12 {
        h.advance(1_000);
    }
    let left = names(&h);
    assert!(!left.contains(&"results".to_string()), "{left:?}");
    assert!(!left.contains(&"tasks".to_string()), "{left:?}");
    assert!(
        left.contains(&"tasks.dead".to_string()),
        "it holds a dead letter: {left:?}"
    );
}

#[test]
fn deleting_a_queue_drops_its_ready_tasks_and_keeps_it_only_while_used() {
    let mut h = Harness::new(BrokerConfig::default());
    let delete = |h: &mut Harness, name: &str| {
        let out = h.send(
            P,
            ClientMsg::DeleteQueue {
                req: Some(7),
                queue: q(name),
            },
        );
        out[0].msg.clone()
    };
    h.put("idle", json!(1));
    h.put("idle", json!(2));
    let before = h.b.stored_bytes();
    assert_eq!(
        delete(&mut h, "idle"),
        ServerMsg::Deleted {
            req: Some(7),
            queue: q("idle"),
            tasks: 2,
            removed: true
        }
    );
    assert!(h.b.stored_bytes() < before, "their memory is given back");
    assert!(!h.b.queues.contains_key(&q("idle")));
    // A consumed queue keeps its consumer and its leased task; only ready tasks go.
    let leased = h.put("busy", json!(1));
    h.put("busy", json!(2));
    assert_eq!(h.consume(W1, "busy", 1), vec![leased]);
    assert_eq!(
        delete(&mut h, "busy"),
        ServerMsg::Deleted {
            req: Some(7),
            queue: q("busy"),
            tasks: 1,
            removed: false
        }
    );
    // The consumer keeps working the queue.
    assert_eq!(
        h.ack(W1, leased, json!("done"))[0].msg,
        ServerMsg::Ok { req: Some(2) }
    );
    let out = h.send(P, put_msg(Some(3), "busy", json!(3)));
    assert_eq!(delivered(&out, W1).len(), 1, "{out:?}");
    // Unknown and private names are refused by name.
    let ServerMsg::Error { code, message, .. } = delete(&mut h, "nope") else {
        panic!()
    };
    assert_eq!(code, ErrorCode::UnknownQueue);
    assert!(message.contains("no queue named nope"), "{message}");
    let ServerMsg::Error { code, .. } = delete(&mut h, "_inbox.1") else {
        panic!()
    };
    assert_eq!(code, ErrorCode::Forbidden);
}

#[test]
fn leases_keep_their_id_deadline_and_session_views_in_step() {
    let total = Default::default();
    let task = |id: u64| StoredTask {
        id: TaskId(id),
        queue: q("tasks"),
        kind: None,
        payload: json!(id).into(),
        reply_to: None,
        max_attempts: 5,
        attempts: 1,
        order: 0,
        last_error: None,
        charge: Charge::new(0, &total),
        reply_ref: None,
        put_at: Default::default(),
        priority: 0,
        not_before: None,
        backoff: Default::default(),
        redundancy: None,
        replica: false,
    };
    let mut l = Leases::default();
    l.grant(SessionId(1), task(1), Millis(300));
    l.grant(SessionId(2), task(2), Millis(100));
    l.grant(SessionId(2), task(3), Millis(200));
    assert_eq!((l.held_by(SessionId(1)), l.held_by(SessionId(2))), (1, 2));
    assert_eq!(l.of_session(SessionId(2)), vec![TaskId(3), TaskId(2)]);
    assert!(l.take(TaskId(3)).is_some());
    assert_eq!(l.held_by(SessionId(2)), 1);
    assert_eq!(l.next_deadline(), Some(Millis(100)));
    assert!(l.first_expired(Millis(99)).is_none());
    assert_eq!(
        l.first_expired(Millis(100)).map(|x| x.task.id),
        Some(TaskId(2))
    );
    // Extending moves it in the order; a lease that is gone cannot be extended.
    assert!(l.extend(TaskId(2), Millis(500)));
    assert_eq!(l.next_deadline(), Some(Millis(300)));
    assert!(!l.extend(TaskId(9), Millis(1)));
    // Taken, it leaves both views: the next expiry is the other lease's.
    assert_eq!(l.take(TaskId(1)).map(|x| x.session), Some(SessionId(1)));
    assert_eq!((l.len(), l.next_deadline()), (1, Some(Millis(500))));
    assert!(l.take(TaskId(1)).is_none());
    assert_eq!(l.take(TaskId(2)).map(|x| x.deadline), Some(Millis(500)));
    assert_eq!((l.len(), l.next_deadline()), (0, None));
}

/// What `/metrics` counts, as the broker sees it: puts, deliveries (a second attempt counted
/// as a redelivery), acks, fails and dead letters per queue, and the time from put to ack.
#[test]
fn the_counters_follow_each_task() {
    let mut h = Harness::new(BrokerConfig::default());
    let first = h.put("tasks", json!(1));
    let doomed = h.put_with("tasks", json!(2), None, Some(1));
    assert_eq!(h.consume(W1, "tasks", 1), vec![first]);
    // Its lease runs out: the next delivery is its second attempt.
    h.advance(BrokerConfig::default().ack_wait.as_millis() as u64 + 1);
    h.advance(0);
    let again = h.consume(W2, "tasks", 2);
    assert!(
        again.contains(&first) && again.contains(&doomed),
        "{again:?}"
    );
    h.advance(250);
    h.ack(W2, first, json!("done"));
    h.fail(W2, doomed, true);
    let (queues, latency) = h.b.metrics();
    let tasks = queues.iter().find(|m| m.name == "tasks").unwrap();
    assert_eq!(
        tasks.counters,
        crate::metrics::QueueCounters {
            put: 2,
            delivered: 3,
            redelivered: 1,
            acked: 1,
            failed: 1,
            dead_lettered: 1,
            cancelled: 0,
        }
    );
    assert_eq!((tasks.depth, tasks.in_flight), (0, 0));
    let dead = queues.iter().find(|m| m.name == "tasks.dead").unwrap();
    assert_eq!(dead.depth, 1);
    // Put at 0, acked 30.25 s later (the ack wait, then 250 ms).
    assert_eq!(latency.count(), 1);
    let text = crate::metrics::Snapshot {
        latency,
        ..Default::default()
    }
    .encode();
    assert!(
        text.contains("taskhub_task_latency_seconds_bucket{le=\"10.0\"} 0")
            && text.contains("taskhub_task_latency_seconds_bucket{le=\"60.0\"} 1"),
        "{text}"
    );
}

/// A requeue the queue has no room for stops there: what went back stays back, the rest stay
/// dead letters in their order, and the error says so.
#[test]
fn a_requeue_into_a_full_queue_leaves_the_rest_dead() {
    let mut h = Harness::new(BrokerConfig {
        max_queue_len: 2,
        ..BrokerConfig::default()
    });
    let a = h.put_with("tasks", json!("a"), None, Some(1));
    let b = h.put_with("tasks", json!("b"), None, Some(1));
    h.consume(W1, "tasks", 2);
    for t in [a, b] {
        h.fail(W1, t, false);
    }
    h.stop_consuming(W1);
    h.put("tasks", json!("c"));
    let requeue = |h: &mut Harness| {
        h.send(
            P,
            ClientMsg::DeadRequeue {
                req: Some(5),
                queue: q("tasks"),
                ids: None,
            },
        )
    };
    let out = requeue(&mut h);
    match &out[0].msg {
        ServerMsg::Error { code, message, .. } => {
            assert_eq!(*code, ErrorCode::QueueFull);
            assert!(
                message.starts_with("requeued 1 dead letter(s), then stopped"),
                "{message}"
            );
            assert!(
                message.contains("the rest are still in tasks.dead"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let listed = h.send(
        P,
        ClientMsg::DeadList {
            req: None,
            queue: q("tasks"),
            limit: None,
        },
    );
    match &listed[0].msg {
        ServerMsg::DeadLetters { entries, total, .. } => {
            assert_eq!(*total, 1);
            assert_eq!(entries[0]["id"], json!(b.0));
        }
        other => panic!("{other:?}"),
    }
    // Room again: the last one goes back too.
    h.get("tasks", 0);
    let out = requeue(&mut h);
    assert!(
        matches!(
            out[0].msg,
            ServerMsg::Requeued {
                count: 1,
                more: false,
                ..
            }
        ),
        "{:?}",
        out[0].msg
    );
}

mod backoff;
mod cancel;
mod progress;
mod quorum;
mod schedule;
mod state;
