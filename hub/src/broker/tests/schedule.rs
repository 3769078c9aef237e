//! Priorities and delayed tasks, under the manual clock.

use super::*;

impl Harness {
    /// Put `payload` with `schedule`; the hub's answer.
    fn put_scheduled(&mut self, queue: &str, payload: Value, schedule: Schedule) -> ServerMsg {
        let out = self.send(P, scheduled_put(Some(9), queue, payload, schedule));
        out.into_iter().find(|o| o.to == P).map(|o| o.msg).unwrap()
    }

    pub(super) fn put_at(&mut self, queue: &str, payload: Value, schedule: Schedule) -> TaskId {
        match self.put_scheduled(queue, payload, schedule) {
            ServerMsg::Queued { task, .. } => task,
            other => panic!("put failed: {other:?}"),
        }
    }

    fn queue_stats(&self, name: &str) -> QueueStats {
        self.b.stats().queue(name).cloned().unwrap()
    }
}

fn priority(p: u8) -> Schedule {
    Schedule {
        priority: p,
        ..Schedule::default()
    }
}

fn delay(ms: u64) -> Schedule {
    Schedule {
        delay_ms: Some(ms),
        ..Schedule::default()
    }
}

fn payloads(out: &[Output]) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match &o.msg {
            ServerMsg::Deliver { task } => task.payload.json()?.to_value().ok(),
            _ => None,
        })
        .collect()
}

fn error_of(msg: &ServerMsg) -> (ErrorCode, String) {
    match msg {
        ServerMsg::Error { code, message, .. } => (*code, message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_priority_9_task_put_behind_10000_priority_0_tasks_is_delivered_next() {
    let mut h = Harness::new(BrokerConfig::default());
    for n in 0..10_000 {
        h.put_at("jobs", json!(n), priority(0));
    }
    let urgent = h.put_at("jobs", json!("urgent"), priority(9));
    assert_eq!(h.consume(W1, "jobs", 1), vec![urgent]);
}

#[test]
fn higher_priorities_go_first_and_each_priority_is_fifo() {
    let mut h = Harness::new(BrokerConfig::default());
    for (p, name) in [
        (0, "a0"),
        (5, "b5"),
        (0, "c0"),
        (9, "d9"),
        (5, "e5"),
        (9, "f9"),
    ] {
        h.put_at("jobs", json!(name), priority(p));
    }
    let out = h.send(
        W1,
        ClientMsg::Consume {
            req: None,
            queues: vec![q("jobs")],
            prefetch: 10,
        },
    );
    assert_eq!(
        payloads(&out),
        ["d9", "f9", "b5", "e5", "a0", "c0"].map(|s| json!(s))
    );
    // The delivered task says its priority.
    let first = out.iter().find_map(|o| match &o.msg {
        ServerMsg::Deliver { task } => Some(task.priority),
        _ => None,
    });
    assert_eq!(first, Some(9));
}

#[test]
fn a_task_given_back_goes_to_the_front_of_its_own_priority_only() {
    let mut h = Harness::new(BrokerConfig::default());
    let high = h.put_at("jobs", json!("high"), priority(7));
    h.put_at("jobs", json!("low"), priority(1));
    assert_eq!(h.consume(W1, "jobs", 1), vec![high]);
    h.put_at("jobs", json!("higher"), priority(8));
    // W1 dies: its task goes back in front of everything of priority 7 or less, but the
    // priority-8 task still goes first.
    h.b.close_session(W1, h.now);
    h.b.drain().for_each(drop);
    let got: Vec<Value> = (0..3)
        .map(|_| got_payload(&h.get("jobs", 0)).unwrap())
        .collect();
    assert_eq!(got, ["higher", "high", "low"].map(|s| json!(s)));
}

#[test]
fn a_delayed_task_is_ready_at_its_time_and_not_before() {
    let mut h = Harness::new(BrokerConfig::default());
    h.consume(W1, "jobs", 10);
    let late = h.put_at("jobs", json!("late"), delay(1_500));
    h.put_at("jobs", json!("now"), Schedule::default());
    let stats = h.queue_stats("jobs");
    assert_eq!((stats.scheduled, stats.in_flight, stats.depth), (1, 1, 0));
    // One timer: the broker wakes at the task's time (and a millisecond, as `now` is cut to
    // whole ones), not before.
    assert_eq!(h.b.next_deadline(), Some(Millis(1_501)));
    assert!(delivered(&h.advance(1_500), W1).is_empty());
    assert_eq!(delivered(&h.advance(1), W1), vec![late]);
    assert_eq!(h.queue_stats("jobs").scheduled, 0);
}

#[test]
fn not_before_is_unix_time_and_a_time_past_is_at_once() {
    let mut h = Harness::new(BrokerConfig::default());
    h.b.set_unix_at_zero(1_700_000_000_000);
    h.now = Millis(10_000);
    let at = |unix| Schedule {
        not_before: Some(unix),
        ..Schedule::default()
    };
    h.put_at("jobs", json!("past"), at(1_700_000_000_000));
    h.put_at("jobs", json!("future"), at(1_700_000_012_500));
    assert_eq!(got_payload(&h.get("jobs", 0)), Some(json!("past")));
    assert!(matches!(h.get("jobs", 0)[0].msg, ServerMsg::Empty { .. }));
    assert_eq!(h.b.next_deadline(), Some(Millis(12_501)));
    h.advance(2_500);
    assert!(matches!(h.get("jobs", 0)[0].msg, ServerMsg::Empty { .. }));
    h.advance(1);
    assert_eq!(got_payload(&h.get("jobs", 0)), Some(json!("future")));
}

#[test]
fn delayed_tasks_keep_their_priority_once_ready() {
    let mut h = Harness::new(BrokerConfig::default());
    h.put_at("jobs", json!("plain"), Schedule::default());
    h.put_at(
        "jobs",
        json!("urgent later"),
        Schedule {
            priority: 9,
            delay_ms: Some(100),
            not_before: None,
            ..Schedule::default()
        },
    );
    h.advance(101);
    assert_eq!(got_payload(&h.get("jobs", 0)), Some(json!("urgent later")));
}

#[test]
fn impossible_schedules_are_refused_with_the_reason() {
    let config = BrokerConfig {
        max_delay: Duration::from_secs(60),
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config);
    let both = Schedule {
        delay_ms: Some(5),
        not_before: Some(5),
        ..Schedule::default()
    };
    let (code, why) = error_of(&h.put_scheduled("jobs", json!(1), both));
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(why.contains("delay_ms or not_before"), "{why}");
    let (code, why) = error_of(&h.put_scheduled("jobs", json!(1), delay(61_000)));
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(why.contains("max_delay") && why.contains("60 s"), "{why}");
    // Nothing was stored.
    assert!(
        h.b.stats()
            .queue("jobs")
            .is_none_or(|s| s.scheduled + s.depth == 0)
    );
    h.put_at("jobs", json!(1), delay(60_000));
}

#[test]
fn scheduled_tasks_count_against_the_queue_limit_and_keep_their_queue() {
    let config = BrokerConfig {
        max_queue_len: 2,
        queue_idle_grace: Duration::from_millis(100),
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config);
    h.put_at("jobs", json!(1), delay(10_000));
    h.put_at("jobs", json!(2), delay(10_000));
    let (code, _) = error_of(&h.put_scheduled("jobs", json!(3), Schedule::default()));
    assert_eq!(code, ErrorCode::QueueFull);
    // Long past the idle grace the queue is kept: its tasks are only waiting.
    h.advance(5_000);
    assert_eq!(h.queue_stats("jobs").scheduled, 2);
    h.advance(5_001);
    assert_eq!(h.queue_stats("jobs").depth, 2);
}

#[test]
fn deleting_a_queue_drops_its_scheduled_tasks_too() {
    let mut h = Harness::new(BrokerConfig::default());
    h.put_at("jobs", json!(1), delay(1_000));
    h.put_at("jobs", json!(2), Schedule::default());
    h.put_at("other", json!(3), delay(1_000));
    let out = h.send(
        P,
        ClientMsg::DeleteQueue {
            req: None,
            queue: q("jobs"),
        },
    );
    assert!(matches!(
        out[0].msg,
        ServerMsg::Deleted {
            tasks: 2,
            removed: true,
            ..
        }
    ));
    h.advance(1_001);
    assert!(h.b.stats().queue("jobs").is_none());
    assert_eq!(h.queue_stats("other").depth, 1);
}

#[test]
fn a_hundred_thousand_scheduled_tasks_wait_on_one_deadline() {
    let mut h = Harness::new(BrokerConfig::default());
    for n in 0..100_000u64 {
        h.put_at("jobs", json!(n), delay(60_000 + n % 1_000));
    }
    // The broker's one timer is set for the first of them (or sooner, for its other work);
    // expiring before then moves nothing.
    assert_eq!(h.b.scheduled.next_due(), Some(Millis(60_001)));
    assert!(h.b.next_deadline().is_some_and(|d| d <= Millis(60_001)));
    h.advance(60_000);
    assert_eq!(h.queue_stats("jobs").scheduled, 100_000);
    h.advance(1);
    let s = h.queue_stats("jobs");
    assert_eq!((s.depth, s.scheduled), (100, 99_900));
}

#[test]
fn a_requeued_dead_letter_keeps_its_priority() {
    let mut h = Harness::new(BrokerConfig::default());
    h.put_at("jobs", json!("plain"), Schedule::default());
    let urgent = h.put_at("jobs", json!("urgent"), priority(6));
    assert_eq!(h.consume(W1, "jobs", 1), vec![urgent]);
    h.fail(W1, urgent, false);
    h.stop_consuming(W1);
    let out = h.send(
        P,
        ClientMsg::DeadRequeue {
            req: None,
            queue: q("jobs"),
            ids: Some(vec![urgent]),
        },
    );
    assert!(matches!(out[0].msg, ServerMsg::Requeued { count: 1, .. }));
    assert_eq!(got_payload(&h.get("jobs", 0)), Some(json!("urgent")));
}

#[test]
fn a_restart_gives_scheduled_tasks_back_scheduled() {
    let mut b = Broker::new(BrokerConfig::default());
    b.set_unix_at_zero(1_000_000);
    let task = |id, not_before| Recovered {
        id: TaskId(id),
        queue: q("jobs"),
        kind: None,
        payload: Body::from(json!(id)),
        reply_to: None,
        max_attempts: 3,
        attempts: 0,
        order: ORDER_MIDDLE + id,
        last_error: None,
        leased: false,
        priority: 0,
        not_before,
        backoff: Default::default(),
        redundancy: None,
    };
    b.restore(
        [
            task(1, Some(1_005_000)),
            task(2, Some(999_000)),
            task(3, None),
        ],
        3,
        Millis(0),
    );
    let s = b.stats();
    let jobs = s.queue("jobs").unwrap();
    assert_eq!((jobs.depth, jobs.scheduled), (2, 1));
    assert_eq!(b.next_deadline().map(|d| d <= Millis(5_000)), Some(true));
    b.expire(Millis(5_000));
    assert_eq!(b.stats().queue("jobs").unwrap().depth, 3);
}
