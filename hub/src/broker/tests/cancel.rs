//! `cancel`, under the manual clock: a task stopped wherever it is, ready, scheduled or leased.

use super::*;
use taskhub_core::TaskState;

impl Harness {
    /// `from` cancels `task`; the answer it gets, and everything else the request caused.
    fn cancel(&mut self, from: SessionId, task: TaskId) -> (ServerMsg, Vec<Output>) {
        let out = self.send(from, ClientMsg::Cancel { req: Some(7), task });
        let at = out
            .iter()
            .position(|o| o.to == from && o.msg.req() == Some(7));
        let mut rest = out;
        let answer = rest.remove(at.expect("an answer to the cancel")).msg;
        (answer, rest)
    }
}

fn cancelled(task: TaskId, state: TaskState) -> ServerMsg {
    ServerMsg::Cancelled {
        req: Some(7),
        task,
        state,
    }
}

fn code_of(msg: &ServerMsg) -> ErrorCode {
    match msg {
        ServerMsg::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn depth(h: &Harness, queue: &str) -> (u64, u64, u64) {
    let s = h.b.stats();
    let q = s.queue(queue).unwrap();
    (q.depth, q.scheduled, q.in_flight)
}

#[test]
fn a_ready_task_is_taken_out_of_the_middle_and_the_rest_keep_their_order() {
    let mut h = Harness::new(BrokerConfig::default());
    let ids: Vec<TaskId> = (0..5).map(|n| h.put("jobs", json!(n))).collect();
    let (answer, rest) = h.cancel(P, ids[2]);
    assert_eq!(answer, cancelled(ids[2], TaskState::Ready));
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(depth(&h, "jobs"), (4, 0, 0));
    let got: Vec<Value> = (0..4)
        .map(|_| got_payload(&h.get("jobs", 0)).unwrap())
        .collect();
    assert_eq!(got, vec![json!(0), json!(1), json!(3), json!(4)]);
    // It is gone: a second cancel finds nothing, and says what that can mean.
    let (answer, _) = h.cancel(P, ids[2]);
    assert_eq!(code_of(&answer), ErrorCode::UnknownTask);
    assert_eq!(h.b.stats().stored_bytes, 0, "its memory is given back");
}

#[test]
fn a_cancelled_priority_task_leaves_its_own_priority_alone() {
    let mut h = Harness::new(BrokerConfig::default());
    let put = |h: &mut Harness, n: u8| {
        let s = Schedule {
            priority: n % 3,
            ..Schedule::default()
        };
        h.put_at("jobs", json!(n), s)
    };
    let ids: Vec<TaskId> = (0..9).map(|n| put(&mut h, n)).collect();
    for gone in [ids[2], ids[4], ids[6]] {
        assert_eq!(h.cancel(P, gone).0, cancelled(gone, TaskState::Ready));
    }
    let got: Vec<Value> = std::iter::from_fn(|| got_payload(&h.get("jobs", 0))).collect();
    // Priority 2: 2, 5, 8; priority 1: 1, 4, 7; priority 0: 0, 3, 6; less those cancelled.
    assert_eq!(got, [5, 8, 1, 7, 0, 3].map(|n| json!(n)));
}

#[test]
fn a_scheduled_task_is_removed_and_never_comes_due() {
    let mut h = Harness::new(BrokerConfig::default());
    h.consume(W1, "jobs", 5);
    let later = Schedule {
        delay_ms: Some(1_000),
        ..Schedule::default()
    };
    let id = h.put_at("jobs", json!("later"), later);
    let kept = h.put_at("jobs", json!("kept"), later);
    assert_eq!(depth(&h, "jobs"), (0, 2, 0));
    assert_eq!(h.cancel(P, id).0, cancelled(id, TaskState::Scheduled));
    assert_eq!(depth(&h, "jobs"), (0, 1, 0));
    let out = h.advance(2_000);
    assert_eq!(
        delivered(&out, W1),
        vec![kept],
        "only the one not cancelled"
    );
}

#[test]
fn a_retry_waiting_out_its_backoff_is_cancelled_as_scheduled() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put("jobs", json!(1));
    assert_eq!(h.consume(W1, "jobs", 1), vec![id]);
    h.fail(W1, id, true);
    assert_eq!(depth(&h, "jobs"), (0, 1, 0));
    assert_eq!(h.cancel(P, id).0, cancelled(id, TaskState::Scheduled));
    assert_eq!(depth(&h, "jobs"), (0, 0, 0));
    assert!(delivered(&h.advance(600_000), W1).is_empty());
}

#[test]
fn a_leased_task_ends_at_once_its_worker_is_told_and_gets_its_next_task() {
    let mut h = Harness::new(BrokerConfig::default());
    let first = h.put("jobs", json!(1));
    let second = h.put("jobs", json!(2));
    assert_eq!(h.consume(W1, "jobs", 1), vec![first]);
    let (answer, rest) = h.cancel(P, first);
    assert_eq!(answer, cancelled(first, TaskState::Leased));
    let to_worker: Vec<&ServerMsg> = rest.iter().filter(|o| o.to == W1).map(|o| &o.msg).collect();
    assert_eq!(
        to_worker[0],
        &ServerMsg::Cancel { task: first },
        "told first"
    );
    assert_eq!(
        delivered(&rest, W1),
        vec![second],
        "its credit is free at once"
    );
    assert_eq!(depth(&h, "jobs"), (0, 0, 1));
    // The worker's late ack finds no lease: the result goes nowhere.
    let out = h.ack(W1, first, json!("late"));
    assert_eq!(code_of(&out[0].msg), ErrorCode::UnknownTask);
    // And the task is gone for good: held nowhere, so it cannot come back when its lease would
    // have run out.
    let d = h.b.dump();
    assert_eq!(d.leased.keys().copied().collect::<Vec<_>>(), vec![second.0]);
    assert!(d.ready.is_empty() && d.scheduled.is_empty(), "{d:?}");
}

#[test]
fn the_reply_queue_and_a_waiting_inbox_hear_cancelled() {
    let mut h = Harness::new(BrokerConfig::default());
    let queued = h.put_with("jobs", json!(1), Some("results"), None);
    let inbox = QueueName::inbox(P);
    let running = h.put_with("jobs", json!(2), Some(inbox.as_str()), None);
    h.cancel(P, queued);
    let reply = got_payload(&h.get("results", 0)).unwrap();
    assert_eq!(
        reply,
        json!({"id": queued.0, "ok": false, "error": "cancelled", "cancelled": true})
    );
    assert_eq!(h.consume(W1, "jobs", 1), vec![running]);
    let (_, rest) = h.cancel(P, running);
    let replies: Vec<&ServerMsg> = rest.iter().filter(|o| o.to == P).map(|o| &o.msg).collect();
    assert_eq!(
        replies,
        vec![&ServerMsg::Reply(Reply {
            id: running,
            ok: false,
            result: None,
            error: Some("cancelled".into()),
            cancelled: true,
        })]
    );
}

#[test]
fn a_session_without_put_on_the_queue_is_refused_and_nothing_changes() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put("jobs", json!(1));
    let refusal = |q: &QueueName| (q.as_str() == "jobs").then(|| "no put on jobs".to_string());
    h.b.handle_as(
        W2,
        ClientMsg::Cancel {
            req: Some(7),
            task: id,
        },
        h.now,
        &refusal,
    );
    let out: Vec<Output> = h.b.drain().collect();
    assert_eq!(code_of(&out[0].msg), ErrorCode::Forbidden);
    assert_eq!(depth(&h, "jobs"), (1, 0, 0));
}

#[test]
fn dead_letters_and_unknown_ids_are_refused_by_name() {
    let config = BrokerConfig {
        max_attempts: 1,
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config);
    let id = h.put("jobs", json!(1));
    h.consume(W1, "jobs", 1);
    h.fail(W1, id, false);
    // The dead letter is an entry of jobs.dead with its own id, not a task that will run.
    let entry = TaskId(h.b.dump().ready["jobs.dead"][0].0);
    assert_ne!(entry, id);
    let (answer, _) = h.cancel(P, entry);
    match answer {
        ServerMsg::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("jobs.dead"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let (answer, _) = h.cancel(P, TaskId(999));
    assert_eq!(code_of(&answer), ErrorCode::UnknownTask);
    assert_eq!(code_of(&h.cancel(P, id).0), ErrorCode::UnknownTask);
}

#[test]
fn cancels_are_counted_per_queue() {
    let mut h = Harness::new(BrokerConfig::default());
    let a = h.put("jobs", json!(1));
    let b = h.put("jobs", json!(2));
    h.cancel(P, a);
    h.consume(W1, "jobs", 1);
    h.cancel(P, b);
    let (queues, _) = h.b.metrics();
    let jobs = queues.iter().find(|m| m.name == "jobs").unwrap();
    assert_eq!(jobs.counters.cancelled, 2);
    assert_eq!(jobs.counters.put, 2);
}
