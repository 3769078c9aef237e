//! The worker state machine under a manual clock, against a scripted hub peer.

use serde_json::json;

use super::*;
use crate::auth::{hex, hub_proof, verify_client_proof};
use crate::codec::{Frame, decode_client_frame, encode_server};
use crate::protocol::{Limits, PROTOCOL_VERSION, TabState};

const NONCE: [u8; 32] = [1; 32];

fn config() -> WorkerConfig {
    let mut c = WorkerConfig::new(
        "default",
        Secret::new("k"),
        vec![QueueName::new("tasks").unwrap()],
    );
    c.concurrency = 2;
    c.prefetch = Some(4);
    c
}

/// Drives a worker through the handshake with a hub holding `hub_key`.
struct Pair {
    w: Worker,
    now: Millis,
    hub_key: Secret,
}

impl Pair {
    fn new(config: WorkerConfig) -> Self {
        Pair {
            w: Worker::new(config),
            now: Millis(1_000),
            hub_key: Secret::new("k"),
        }
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.w.poll_event()).collect()
    }

    fn sent(&mut self) -> Vec<ClientMsg> {
        std::iter::from_fn(|| self.w.poll_transmit())
            .map(|t| decode_client_frame(&t, usize::MAX).unwrap())
            .collect()
    }

    fn hub_says(&mut self, msg: ServerMsg) {
        match encode_server(&msg) {
            Frame::Text(t) => self.w.handle_message(&t, self.now),
            Frame::Binary(b) => self.w.handle_binary(&b, self.now),
        }
    }

    fn handshake(&mut self) -> Vec<Event> {
        assert!(self.events().contains(&Event::Connect));
        self.w.handle_connected(self.now, [2; 32]);
        let nonce = hex(&NONCE);
        self.hub_says(ServerMsg::Challenge {
            version: PROTOCOL_VERSION,
            nonce: nonce.clone(),
        });
        let sent = self.sent();
        let [
            ClientMsg::Auth {
                key_id,
                client_nonce,
                proof,
                role,
                ..
            },
        ] = &sent[..]
        else {
            panic!("expected one auth, got {sent:?}")
        };
        assert_eq!(*role, Role::Worker);
        assert!(verify_client_proof(
            &Secret::new("k"),
            key_id,
            &nonce,
            client_nonce,
            proof
        ));
        let proof = hub_proof(&self.hub_key, key_id, &nonce, client_nonce);
        self.hub_says(ServerMsg::Welcome {
            session: SessionId(9),
            proof,
            inbox: QueueName::inbox(SessionId(9)),
            limits: Limits {
                max_message_bytes: 1 << 20,
                ack_wait_ms: 1_000,
                max_prefetch: 100,
                max_attempts: 5,
                ping_interval_ms: 20_000,
            },
        });
        self.events()
    }

    fn deliver(&mut self, id: u64, kind: &str, payload: serde_json::Value) {
        self.hub_says(ServerMsg::Deliver {
            task: Task {
                id: TaskId(id),
                queue: QueueName::new("tasks").unwrap(),
                kind: Some(kind.into()),
                payload: payload.into(),
                attempt: 1,
                max_attempts: 5,
                reply_to: None,
                priority: 0,
                last_error: None,
            },
        });
    }
}

fn jobs(events: &[Event]) -> Vec<Job> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Run(j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_then_consume_run_and_ack() {
    let mut p = Pair::new(config());
    let ev = p.handshake();
    assert_eq!(
        ev,
        vec![Event::Authenticated {
            session: SessionId(9),
            prefetch: 4
        }]
    );
    assert_eq!(
        p.sent(),
        vec![ClientMsg::Consume {
            req: Some(CONSUME_REQ),
            queues: vec![QueueName::new("tasks").unwrap()],
            prefetch: 4
        }]
    );
    p.deliver(5, "square", json!(3));
    let run = jobs(&p.events());
    assert_eq!(run.len(), 1);
    assert_eq!(
        (run[0].id, run[0].kind.as_deref()),
        (TaskId(5), Some("square"))
    );
    p.w.handle_task_done(run[0].token, Ok(json!("3 * 3 = 9").into()), p.now);
    assert_eq!(
        p.sent(),
        vec![ClientMsg::Ack {
            req: None,
            task: TaskId(5),
            result: Some(json!("3 * 3 = 9").into())
        }]
    );
    assert_eq!(p.w.status().done, 1);
}

#[test]
fn a_result_too_big_for_the_hub_fails_its_task_instead_of_costing_the_connection() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    p.deliver(5, "echo", json!(1));
    p.deliver(6, "echo", json!(2));
    let run = jobs(&p.events());
    // The hub announced 1 MiB: a result of 2 MiB of bytes would get the connection closed.
    let huge = crate::Payload::from(vec![0u8; 2 << 20]);
    p.w.handle_task_done(run[0].token, Ok(huge), p.now);
    let sent = p.sent();
    let [
        ClientMsg::Fail {
            task, error, retry, ..
        },
    ] = &sent[..]
    else {
        panic!("{sent:?}")
    };
    assert_eq!((*task, *retry), (TaskId(5), false));
    assert!(error.contains("accepts at most 1048576"), "{error}");
    // A result that fits goes as an ack, in a binary frame.
    let fits = crate::Payload::from(vec![7u8; 1000]);
    p.w.handle_task_done(run[1].token, Ok(fits.clone()), p.now);
    assert_eq!(
        p.sent(),
        vec![ClientMsg::Ack {
            req: None,
            task: TaskId(6),
            result: Some(fits)
        }]
    );
}

#[test]
fn runs_at_most_concurrency_tasks() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    for id in 1..=3 {
        p.deliver(id, "echo", json!(id));
    }
    let run = jobs(&p.events());
    assert_eq!(run.iter().map(|j| j.id.0).collect::<Vec<_>>(), vec![1, 2]);
    p.w.handle_task_done(run[0].token, Err(Failure::retryable("boom")), p.now);
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [ClientMsg::Fail { task: TaskId(1), error, retry: true, .. }] if error == "boom")
    );
    assert_eq!(
        jobs(&p.events()).iter().map(|j| j.id.0).collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn an_impostor_hub_is_refused_for_good() {
    let mut p = Pair::new(config());
    p.hub_key = Secret::new("not-the-key");
    let ev = p.handshake();
    assert!(
        matches!(&ev[..], [Event::Failed(m), Event::Close] if m.contains("authentication failed")),
        "{ev:?}"
    );
    p.w.handle_disconnected(p.now, "closed", 0);
    assert!(p.events().is_empty(), "must not reconnect");
    assert_eq!(p.w.poll_timeout(), None);
    assert_eq!(p.w.status().state, "failed");
}

#[test]
fn a_rejected_key_is_fatal() {
    let mut p = Pair::new(config());
    p.events();
    p.w.handle_connected(p.now, [2; 32]);
    p.hub_says(ServerMsg::Challenge {
        version: PROTOCOL_VERSION,
        nonce: hex(&NONCE),
    });
    p.hub_says(ServerMsg::error(
        None,
        ErrorCode::AuthFailed,
        "unknown key id or wrong key",
    ));
    let ev = p.events();
    assert!(
        matches!(&ev[0], Event::Failed(m) if m.contains("wrong key")),
        "{ev:?}"
    );
}

#[test]
fn reconnects_with_growing_jittered_backoff() {
    let mut p = Pair::new(config());
    p.events();
    let mut delays = Vec::new();
    for _ in 0..10 {
        p.w.handle_disconnected(p.now, "connection refused", u64::MAX / 3);
        let ev = p.events();
        let [Event::Retrying { in_ms, reason }] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(reason, "connection refused");
        delays.push(*in_ms);
        assert_eq!(p.w.poll_timeout(), Some(p.now + *in_ms));
        p.now = p.now + (*in_ms - 1);
        p.w.handle_timeout(p.now);
        assert!(p.events().is_empty(), "too early");
        p.now = p.now + 1;
        p.w.handle_timeout(p.now);
        assert_eq!(p.events(), vec![Event::Connect]);
    }
    assert!(delays.windows(2).take(6).all(|w| w[1] > w[0]), "{delays:?}");
    assert!(delays.iter().all(|&d| d <= 30_000), "{delays:?}");
    assert!(delays[0] >= 125 && delays[0] <= 250, "{delays:?}");
    // A successful handshake resets the backoff.
    p.w.handle_connected(p.now, [2; 32]);
    p.w.handle_disconnected(p.now, "x", 0);
    p.events();
    p.now = p.w.poll_timeout().unwrap();
    p.w.handle_timeout(p.now);
    p.handshake();
    p.w.handle_disconnected(p.now, "x", 0);
    assert!(matches!(
        &p.events()[..],
        [Event::Retrying { in_ms: 125, .. }]
    ));
}

#[test]
fn results_from_a_previous_connection_are_dropped() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    p.deliver(1, "echo", json!(1));
    let job = jobs(&p.events()).remove(0);
    p.w.handle_disconnected(p.now, "reset", 0);
    p.events();
    p.now = p.w.poll_timeout().unwrap();
    p.w.handle_timeout(p.now);
    p.handshake();
    p.sent();
    p.w.handle_task_done(job.token, Ok(json!(1).into()), p.now);
    assert!(
        p.sent().is_empty(),
        "the hub re-queued task 1 when the old session closed"
    );
}

#[test]
fn long_tasks_keep_their_lease_alive() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    p.deliver(1, "sleep", json!(5000));
    p.events();
    assert_eq!(p.w.poll_timeout(), Some(p.now + 500));
    p.now = p.now + 500;
    p.w.handle_timeout(p.now);
    assert_eq!(
        p.sent(),
        vec![ClientMsg::Touch {
            req: None,
            task: TaskId(1)
        }]
    );
    assert_eq!(p.w.poll_timeout(), Some(p.now + 500));
}

#[test]
fn stop_releases_unstarted_tasks_and_waits_for_running_ones() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    for id in 1..=4 {
        p.deliver(id, "echo", json!(id));
    }
    let run = jobs(&p.events());
    assert_eq!(run.len(), 2);
    p.w.stop(p.now);
    let sent = p.sent();
    assert_eq!(
        sent,
        vec![
            ClientMsg::Consume {
                req: None,
                queues: vec![],
                prefetch: 0
            },
            ClientMsg::Release {
                req: None,
                task: TaskId(3)
            },
            ClientMsg::Release {
                req: None,
                task: TaskId(4)
            },
        ]
    );
    assert_eq!(p.w.status().state, "stopping");
    p.w.handle_task_done(run[0].token, Ok(json!(1).into()), p.now);
    assert!(p.events().is_empty());
    p.w.handle_task_done(run[1].token, Ok(json!(2).into()), p.now);
    assert_eq!(p.sent().len(), 2, "both acks still go out");
    assert_eq!(
        p.events(),
        vec![Event::Close, Event::Stopped { abandoned: 0 }]
    );
}

#[test]
fn stop_gives_up_after_the_grace_period() {
    let mut c = config();
    c.stop_grace_ms = 2_000;
    let mut p = Pair::new(c);
    p.handshake();
    p.deliver(1, "sleep", json!(60_000));
    p.events();
    p.w.stop(p.now);
    p.now = p.now + 1_999;
    p.w.handle_timeout(p.now);
    assert!(
        !p.events()
            .iter()
            .any(|e| matches!(e, Event::Stopped { .. }))
    );
    p.now = p.now + 1;
    p.w.handle_timeout(p.now);
    assert_eq!(
        p.events(),
        vec![Event::Close, Event::Stopped { abandoned: 1 }]
    );
}

#[test]
fn stop_while_disconnected_is_immediate() {
    let mut p = Pair::new(config());
    p.events();
    p.w.handle_disconnected(p.now, "refused", 0);
    p.events();
    p.w.stop(p.now);
    assert_eq!(p.events(), vec![Event::Stopped { abandoned: 0 }]);
    assert!(p.w.is_finished());
}

#[test]
fn abandon_hands_back_everything_at_once() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    for id in 1..=3 {
        p.deliver(id, "sleep", json!(10_000));
    }
    let run = jobs(&p.events());
    assert_eq!(run.len(), 2);
    p.w.abandon(p.now);
    let released: Vec<u64> = p
        .sent()
        .into_iter()
        .filter_map(|m| match m {
            ClientMsg::Release { task, .. } => Some(task.0),
            _ => None,
        })
        .collect();
    let mut sorted = released.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 2, 3]);
    assert_eq!(
        p.events(),
        vec![Event::Close, Event::Stopped { abandoned: 0 }]
    );
    p.w.handle_task_done(run[0].token, Ok(json!(1).into()), p.now);
    assert!(p.sent().is_empty(), "no ack for a released task");
}

#[test]
fn prefetch_above_the_hubs_limit_is_clamped_to_it() {
    let mut c = config();
    c.concurrency = 2;
    c.prefetch = Some(5_000);
    let mut p = Pair::new(c);
    let ev = p.handshake();
    // The scripted hub announces max_prefetch 100.
    assert_eq!(
        ev,
        vec![Event::Authenticated {
            session: SessionId(9),
            prefetch: 100
        }]
    );
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [ClientMsg::Consume { prefetch: 100, .. }]),
        "{sent:?}"
    );
    // And it holds 100 tasks (2 running, 98 waiting), as the hub counts them, not 5,000.
    for id in 1..=103 {
        p.deliver(id, "sleep", json!(1));
    }
    let released: Vec<TaskId> = p
        .sent()
        .into_iter()
        .filter_map(|m| match m {
            ClientMsg::Release { task, .. } => Some(task),
            _ => None,
        })
        .collect();
    assert_eq!(released, [TaskId(101), TaskId(102), TaskId(103)]);
}

#[test]
fn a_refused_consume_is_fatal_and_says_why() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    p.hub_says(ServerMsg::error(
        Some(CONSUME_REQ),
        ErrorCode::BadRequest,
        "prefetch must be 1 to 10",
    ));
    let ev = p.events();
    let Some(Event::Failed(reason)) = ev.first() else {
        panic!("{ev:?}")
    };
    assert!(
        reason.contains("refused") && reason.contains("tasks") && reason.contains("prefetch must"),
        "{reason}"
    );
    assert!(ev.contains(&Event::Close));
    assert!(p.w.is_finished());
    // It does not reconnect.
    p.w.handle_disconnected(p.now, "closed", 0);
    assert!(p.events().is_empty());
    // An error about some other request is not fatal.
    let mut p = Pair::new(config());
    p.handshake();
    p.hub_says(ServerMsg::error(None, ErrorCode::UnknownTask, "no task 5"));
    assert!(!p.w.is_finished());
}

#[test]
fn a_silent_hub_is_asked_then_given_up_on() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    // The scripted hub announces a 20 s ping interval.
    assert_eq!(p.w.poll_timeout(), Some(p.now + 20_000));
    p.now = p.now + 20_000;
    p.w.handle_timeout(p.now);
    assert_eq!(
        p.sent(),
        vec![ClientMsg::Ping {
            req: Some(PING_REQ)
        }]
    );
    // A WebSocket ping the driver saw counts as hearing from the hub.
    p.now = p.now + 5_000;
    p.w.handle_heard(p.now);
    p.now = p.now + 19_999;
    p.w.handle_timeout(p.now);
    assert!(p.sent().is_empty() && p.events().is_empty());
    // Then silence: asked once, and at twice the interval the connection is taken for dead.
    p.now = p.now + 1;
    p.w.handle_timeout(p.now);
    assert_eq!(p.sent().len(), 1);
    assert_eq!(p.w.poll_timeout(), Some(p.now + 20_000));
    p.now = p.now + 20_000;
    p.w.handle_timeout(p.now);
    assert_eq!(p.events(), vec![Event::Close]);
    p.w.handle_disconnected(p.now, "", 0);
    let Some(Event::Retrying { reason, .. }) = p.events().pop() else {
        panic!("it reconnects")
    };
    assert!(reason.contains("silent for 40.0 s"), "{reason}");
}

/// The windows the worker asked the hub for, in order, from what it sent.
fn windows(sent: &[ClientMsg]) -> Vec<u32> {
    sent.iter()
        .filter_map(|m| match m {
            ClientMsg::Consume { prefetch, .. } => Some(*prefetch),
            _ => None,
        })
        .collect()
}

/// An adaptive worker (no `prefetch`) with one run slot, past its handshake, and the events the
/// handshake produced.
fn adaptive() -> (Pair, Vec<Event>) {
    let mut c = config();
    c.concurrency = 1;
    c.prefetch = None;
    let mut p = Pair::new(c);
    let ev = p.handshake();
    (p, ev)
}

/// A worker (concurrency 1) whose hub has `tasks` to hand out, serving it as the hub would: up to
/// the window, with new tasks arriving a round trip (1 ms) after the worker's acks. Each task
/// runs `run_ms`. Returns the windows asked for and the most tasks held at once.
fn serve_adaptive(p: &mut Pair, tasks: u64, run_ms: u64) -> (Vec<u32>, usize) {
    const RTT_MS: u64 = 1;
    let mut asked = windows(&p.sent());
    let (mut next, mut most, mut top_up_at) = (1, 0, p.now);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if p.now >= top_up_at {
            let window = *asked.last().unwrap() as usize;
            while next <= tasks && p.w.held() < window {
                p.deliver(next, "square", json!(next));
                next += 1;
            }
            top_up_at = p.now + RTT_MS;
        }
        most = most.max(p.w.held());
        waiting.extend(jobs(&p.events()));
        let Some(job) = waiting.pop_front() else {
            if next > tasks {
                break;
            }
            p.now = top_up_at; // idle until the hub's next tasks arrive
            continue;
        };
        p.now = p.now + run_ms;
        p.w.handle_task_done(job.token, Ok(json!(null).into()), p.now);
        let sent = p.sent();
        // Tasks handed back go to the front of the hub's queue: they are delivered again.
        let released = sent
            .iter()
            .filter(|m| matches!(m, ClientMsg::Release { .. }))
            .count() as u64;
        next -= released;
        asked.extend(windows(&sent));
    }
    (asked, most)
}

#[test]
fn tiny_tasks_grow_the_window_to_the_hubs_limit() {
    let (mut p, ev) = adaptive();
    assert_eq!(
        ev,
        vec![Event::Authenticated {
            session: SessionId(9),
            prefetch: 2
        }],
        "starts at concurrency + 1"
    );
    let (asked, _) = serve_adaptive(&mut p, 2_000, 0);
    assert_eq!(
        asked,
        [2, 4, 8, 16, 32, 64, 100],
        "doubling when it ran dry"
    );
    assert_eq!(p.w.status().done, 2_000);
}

#[test]
fn slow_tasks_hold_concurrency_plus_one() {
    let (mut p, _) = adaptive();
    let (asked, most) = serve_adaptive(&mut p, 20, 1_000);
    assert_eq!(asked, [2], "never grows");
    assert_eq!(most, 2);
    assert_eq!(p.w.status().done, 20);
}

#[test]
fn a_shift_to_slow_tasks_shrinks_the_window_and_hands_back_the_surplus() {
    let (mut p, _) = adaptive();
    serve_adaptive(&mut p, 500, 0);
    assert_eq!(p.w.status().window, 100);
    // A full window of tasks arrives; the first takes a second.
    for id in 1_000..1_100 {
        p.deliver(id, "sleep", json!(1_000));
    }
    let run = jobs(&p.events());
    p.now = p.now + 1_000;
    p.w.handle_task_done(run[0].token, Ok(json!(null).into()), p.now);
    let sent = p.sent();
    let released = sent
        .iter()
        .filter(|m| matches!(m, ClientMsg::Release { .. }))
        .count();
    // Mean run time 200 ms now: 25 ms of reserve is less than a task, so one in reserve.
    assert_eq!(windows(&sent), [2]);
    assert_eq!((released, p.w.held()), (97, 2), "{sent:?}");
}

#[test]
fn a_pinned_prefetch_never_changes() {
    let mut p = Pair::new(config()); // prefetch 4
    p.handshake();
    let (asked, most) = serve_adaptive(&mut p, 200, 0);
    assert_eq!((asked, most), (vec![4], 4));
}

#[test]
fn raising_concurrency_starts_waiting_tasks_and_lowering_it_starts_no_more() {
    let (mut p, _) = adaptive();
    p.sent();
    p.deliver(1, "square", json!(1));
    p.deliver(2, "square", json!(2));
    assert_eq!(jobs(&p.events()).len(), 1, "one slot: the other waits");
    // A driver that batches tiny tasks runs more at once: the waiting one starts now.
    p.w.set_concurrency(4, p.now);
    let started = jobs(&p.events());
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].id, TaskId(2));
    assert_eq!(p.w.status().running, 2);
    // Back to one: the two running finish, nothing more starts until one slot is free.
    p.w.set_concurrency(1, p.now);
    p.deliver(3, "square", json!(3));
    assert!(jobs(&p.events()).is_empty());
}

#[test]
fn a_job_given_back_is_released_unstarted_and_frees_its_slot() {
    let (mut p, _) = adaptive();
    p.sent();
    p.deliver(1, "primes", json!(1));
    p.deliver(2, "primes", json!(2));
    let first = jobs(&p.events());
    assert_eq!(first.len(), 1);
    p.w.give_back(first[0].token, p.now);
    assert_eq!(
        p.sent(),
        vec![ClientMsg::Release {
            req: None,
            task: TaskId(1)
        }]
    );
    // The slot it held runs the next task; a late result for the given-back job is ignored.
    let next = jobs(&p.events());
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), [TaskId(2)]);
    p.w.handle_task_done(first[0].token, Ok(json!(1).into()), p.now);
    assert!(p.sent().is_empty());
    assert_eq!(p.w.status().done, 0);
}

#[test]
fn with_batch_several_messages_share_a_frame_both_ways() {
    let mut c = config();
    c.batch = true;
    let mut p = Pair::new(c);
    p.handshake();
    p.sent();
    // The hub joined two deliveries into one text frame.
    let deliver = |id: u64| {
        let msg = ServerMsg::Deliver {
            task: Task {
                id: TaskId(id),
                queue: QueueName::new("tasks").unwrap(),
                kind: Some("square".into()),
                payload: crate::Payload::Json(json!(id)),
                attempt: 1,
                max_attempts: 5,
                reply_to: None,
                priority: 0,
                last_error: None,
            },
        };
        encode_server(&msg).as_text().unwrap().to_string()
    };
    p.w.handle_message(&format!("{}\n{}", deliver(1), deliver(2)), p.now);
    let run = jobs(&p.events());
    assert_eq!(
        run.iter().map(|j| j.id).collect::<Vec<_>>(),
        [TaskId(1), TaskId(2)]
    );
    for job in &run {
        p.w.handle_task_done(job.token, Ok(json!("done").into()), p.now);
    }
    // Both acks leave in one frame, one message per line.
    let frames: Vec<Frame> = std::iter::from_fn(|| p.w.poll_transmit()).collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    let acks =
        crate::codec::decode_client_frames::<crate::Payload>(frames[0].as_text().unwrap(), 1 << 20);
    let ids: Vec<_> = acks
        .into_iter()
        .map(|a| match a.unwrap() {
            ClientMsg::Ack { task, .. } => task,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [TaskId(1), TaskId(2)]);
}

#[test]
fn the_auth_asks_for_batches_only_when_configured() {
    for batch in [false, true] {
        let mut c = config();
        c.batch = batch;
        let mut p = Pair::new(c);
        assert!(p.events().contains(&Event::Connect));
        p.w.handle_connected(p.now, [2; 32]);
        p.hub_says(ServerMsg::Challenge {
            version: PROTOCOL_VERSION,
            nonce: hex(&NONCE),
        });
        let sent = p.sent();
        assert!(
            matches!(&sent[..], [ClientMsg::Auth { batch: b, .. }] if *b == batch),
            "{sent:?}"
        );
    }
}

#[test]
fn a_cancelled_running_task_is_stopped_its_result_dropped_and_its_slot_refilled() {
    let mut p = Pair::new(config()); // concurrency 2, prefetch 4
    p.handshake();
    p.sent();
    for id in 1..=3 {
        p.deliver(id, "sleep", json!(10_000));
    }
    let running = jobs(&p.events());
    assert_eq!(running.iter().map(|j| j.id.0).collect::<Vec<_>>(), [1, 2]);
    p.hub_says(ServerMsg::Cancel { task: TaskId(1) });
    assert_eq!(
        p.events(),
        vec![Event::Cancel {
            token: running[0].token,
            id: TaskId(1)
        }]
    );
    // No touches for it from now on: the hub holds no lease to extend.
    p.now = p.now + 600;
    p.w.handle_timeout(p.now);
    let touched: Vec<TaskId> = p
        .sent()
        .into_iter()
        .filter_map(|m| match m {
            ClientMsg::Touch { task, .. } => Some(task),
            _ => None,
        })
        .collect();
    assert_eq!(touched, vec![TaskId(2)]);
    // The driver stopped it: nothing goes to the hub, and the waiting task starts.
    p.w.handle_task_done(running[0].token, Err(Failure::permanent("stopped")), p.now);
    assert!(
        p.sent().is_empty(),
        "a cancelled task is neither acked nor failed"
    );
    assert_eq!(
        jobs(&p.events()).iter().map(|j| j.id.0).collect::<Vec<_>>(),
        [3]
    );
    let status = p.w.status();
    assert_eq!((status.cancelled, status.done, status.failed), (1, 0, 0));
}

#[test]
fn a_cancelled_task_still_waiting_here_is_dropped_and_never_runs() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    for id in 1..=3 {
        p.deliver(id, "sleep", json!(10_000));
    }
    let running = jobs(&p.events());
    p.hub_says(ServerMsg::Cancel { task: TaskId(3) });
    assert!(p.events().is_empty(), "nothing to stop");
    assert_eq!(p.w.status().prefetched, 0);
    p.w.handle_task_done(running[0].token, Ok(json!(1).into()), p.now);
    assert!(jobs(&p.events()).is_empty(), "task 3 never starts");
    // A cancel for a task this worker does not hold (already done) changes nothing.
    p.hub_says(ServerMsg::Cancel { task: TaskId(1) });
    assert!(p.events().is_empty());
    assert_eq!(p.w.status().cancelled, 1);
}

#[test]
fn progress_goes_to_the_hub_at_most_every_100_ms_the_latest_winning() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    p.deliver(1, "primes", json!(1000));
    let job = jobs(&p.events()).remove(0);
    let progress = |sent: Vec<ClientMsg>| -> Vec<(f64, Option<String>)> {
        sent.into_iter()
            .filter_map(|m| match m {
                ClientMsg::Progress {
                    fraction, message, ..
                } => Some((fraction, message)),
                _ => None,
            })
            .collect()
    };
    p.w.report_progress(job.token, 0.1, Some("first".into()), p.now);
    assert_eq!(progress(p.sent()), vec![(0.1, Some("first".into()))]);
    p.now = p.now + 30;
    p.w.report_progress(job.token, 0.2, None, p.now);
    p.w.report_progress(job.token, 0.3, Some("latest".into()), p.now);
    assert!(p.sent().is_empty(), "held back within 100 ms");
    assert_eq!(p.w.poll_timeout(), Some(p.now + 70));
    p.now = p.now + 70;
    p.w.handle_timeout(p.now);
    assert_eq!(progress(p.sent()), vec![(0.3, Some("latest".into()))]);
    // A report counts as a touch: the next touch is half an ack-wait (500 ms) after it.
    p.now = p.now + 499;
    p.w.handle_timeout(p.now);
    assert!(p.sent().is_empty());
    // Done: a report held back goes nowhere; the ack says the rest.
    p.w.report_progress(job.token, 0.8, None, p.now);
    assert_eq!(progress(p.sent()), vec![(0.8, None)]);
    p.w.report_progress(job.token, 0.9, None, p.now);
    p.w.handle_task_done(job.token, Ok(json!(168).into()), p.now);
    let sent = p.sent();
    assert!(matches!(sent[..], [ClientMsg::Ack { .. }]), "{sent:?}");
}

#[test]
fn a_paused_worker_stops_consuming_hands_back_what_waits_and_resumes() {
    let mut p = Pair::new(config()); // concurrency 2, prefetch 4
    p.handshake();
    p.sent();
    for id in 1..=3 {
        p.deliver(id, "sleep", json!(10_000));
    }
    assert_eq!(jobs(&p.events()).len(), 2);
    p.w.set_paused(true);
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [
            ClientMsg::Consume { queues, prefetch: 0, .. },
            ClientMsg::Release { task: TaskId(3), .. },
        ] if queues.is_empty()),
        "{sent:?}"
    );
    // A delivery already on its way goes back; the running two go on.
    p.deliver(4, "sleep", json!(1));
    assert!(matches!(
        p.sent()[..],
        [ClientMsg::Release {
            task: TaskId(4),
            ..
        }]
    ));
    assert_eq!(p.w.status().running, 2);
    let state = TabState {
        visible: false,
        charging: None,
        battery: None,
        ms_per_task: Some(3.0),
        paused: false,
    };
    p.w.report_state(state.clone());
    let told = TabState {
        paused: true,
        ..state.clone()
    };
    assert_eq!(
        p.sent(),
        vec![ClientMsg::State {
            req: None,
            state: told.clone()
        }]
    );
    p.w.report_state(state.clone());
    assert!(p.sent().is_empty(), "the same state is not sent twice");
    // After a reconnect: the state again, and still no consume while paused.
    p.w.handle_disconnected(p.now, "cut", 0);
    p.now = p.now + 60_000;
    p.w.handle_timeout(p.now);
    let after = p.handshake();
    assert!(matches!(after[..], [Event::Authenticated { .. }]));
    assert_eq!(
        p.sent(),
        vec![ClientMsg::State {
            req: None,
            state: told
        }]
    );
    p.w.set_paused(false);
    let sent = p.sent();
    assert!(
        matches!(&sent[..], [ClientMsg::Consume { queues, prefetch, .. }] if queues.len() == 1 && *prefetch == 4),
        "{sent:?}"
    );
}

#[test]
fn a_failure_that_names_its_wait_sends_it_with_the_fail() {
    let mut p = Pair::new(config());
    p.handshake();
    p.sent();
    p.deliver(1, "square", json!(1));
    p.deliver(2, "square", json!(2));
    let ran = jobs(&p.events());
    let later = Failure::retryable("rate limited").retry_after(std::time::Duration::from_secs(30));
    p.w.handle_task_done(ran[0].token, Err(later), p.now);
    // A permanent failure names no wait, whatever it says.
    let mut odd = Failure::permanent("bad input");
    odd.retry_after = Some(std::time::Duration::from_secs(5));
    p.w.handle_task_done(ran[1].token, Err(odd), p.now);
    let waits: Vec<(bool, Option<u64>)> = p
        .sent()
        .into_iter()
        .filter_map(|m| match m {
            ClientMsg::Fail {
                retry, backoff_ms, ..
            } => Some((retry, backoff_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![(true, Some(30_000)), (false, None)]);
}
