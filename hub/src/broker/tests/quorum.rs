//! Redundant tasks (`replicas`, `quorum`) under the manual clock: replicas go to different
//! sessions, a result is accepted only on agreement, and disagreement ends in a dead letter with
//! every result.

use super::*;
use taskhub_core::TaskState;

const W3: SessionId = SessionId(4);
const W4: SessionId = SessionId(5);

fn redundant(replicas: u8, quorum: Option<u8>, max: Option<u8>) -> Schedule {
    Schedule {
        replicas,
        quorum,
        max_replicas: max,
        ..Schedule::default()
    }
}

impl Harness {
    /// A harness with four workers, named as given (`None`: no name), all of role `worker`.
    fn voters(names: [Option<&str>; 4]) -> Harness {
        let mut h = Harness {
            b: Broker::new(BrokerConfig::default()),
            now: Millis(0),
        };
        h.b.open_session(P, Role::Producer, None);
        for (s, name) in [W1, W2, W3, W4].into_iter().zip(names) {
            h.b.open_session(s, Role::Worker, name.map(String::from));
        }
        h
    }

    /// Put a redundant task to `jobs` whose result goes to `results`.
    fn put_redundant(&mut self, payload: Value, schedule: Schedule) -> TaskId {
        let out = self.send(
            P,
            ClientMsg::Put {
                req: Some(9),
                queue: q("jobs"),
                payload: payload.into(),
                kind: Some("square".into()),
                reply_to: Some(q("results")),
                max_attempts: Some(2),
                dedup_id: None,
                schedule,
            },
        );
        match out.iter().find(|o| o.to == P).map(|o| &o.msg) {
            Some(ServerMsg::Queued { task, .. }) => *task,
            other => panic!("put failed: {other:?}"),
        }
    }

    /// Everything in `results`, taken with `get`.
    fn results(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| got_payload(&self.get("results", 0))).collect()
    }

    /// `queue`'s dead-letter entries, as `dead_list` shows them.
    fn dead_letters(&mut self, queue: &str) -> Vec<Value> {
        let out = self.send(
            P,
            ClientMsg::DeadList {
                req: Some(3),
                queue: q(queue),
                limit: None,
            },
        );
        match out.into_iter().next().map(|o| o.msg) {
            Some(ServerMsg::DeadLetters { entries, .. }) => entries,
            other => panic!("{other:?}"),
        }
    }

    fn voting(&self) -> u64 {
        self.b.stats().queue("jobs").map_or(0, |s| s.voting)
    }
}

fn cancels(out: &[Output], to: SessionId) -> Vec<TaskId> {
    out.iter()
        .filter(|o| o.to == to)
        .filter_map(|o| match &o.msg {
            ServerMsg::Cancel { task } => Some(*task),
            _ => None,
        })
        .collect()
}

fn error_code(out: &[Output]) -> Option<ErrorCode> {
    out.iter().find_map(|o| match &o.msg {
        ServerMsg::Error { code, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn replicas_go_to_different_sessions_and_the_agreed_result_is_the_only_one_sent() {
    let mut h = Harness::voters([Some("a"), Some("b"), Some("c"), None]);
    let id = h.put_redundant(json!(2), redundant(3, Some(2), None));
    assert_eq!(h.voting(), 1);
    assert_eq!(
        h.b.stats().queue("jobs").unwrap().depth,
        3,
        "three replicas wait"
    );
    let mut got = Vec::new();
    for w in [W1, W2, W3] {
        let ids = h.consume(w, "jobs", 10);
        assert_eq!(
            ids.len(),
            1,
            "one replica each, whatever the prefetch: {ids:?}"
        );
        got.push(ids[0]);
    }
    assert!(h.consume(W4, "jobs", 10).is_empty(), "only three replicas");
    assert!(!got.contains(&id), "replicas have ids of their own");
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 3);

    // One worker lies; the other two agree.
    h.ack(W2, got[1], json!(5));
    assert!(h.results().is_empty(), "one result is not a quorum");
    let out = h.ack(W1, got[0], json!(4));
    assert!(cancels(&out, W3).is_empty());
    assert!(h.results().is_empty(), "4 and 5 disagree: no quorum yet");
    let out = h.ack(W3, got[2], json!(4));
    assert!(error_code(&out).is_none(), "{out:?}");
    let results = h.results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        results[0]["id"],
        json!(id.0),
        "the reply names the task put"
    );
    assert_eq!(results[0]["result"], json!(4));
    assert_eq!(h.voting(), 0);
    let stats = h.b.stats();
    assert_eq!(stats.acked, 1, "the task counts as acked once");
    assert_eq!(
        stats.workers.iter().map(|w| w.acked).sum::<u64>(),
        3,
        "each worker's replica counts as its work"
    );
    assert_eq!(
        h.b.stored_bytes(),
        0,
        "replicas and the vote give their memory back"
    );
}

#[test]
fn once_a_quorum_agrees_the_replicas_still_running_are_cancelled() {
    let mut h = Harness::voters([None; 4]);
    let id = h.put_redundant(json!(3), redundant(3, Some(2), None));
    let r1 = h.consume(W1, "jobs", 1)[0];
    let r2 = h.consume(W2, "jobs", 1)[0];
    let r3 = h.consume(W3, "jobs", 1)[0];
    h.ack(W1, r1, json!(9));
    let out = h.ack(W2, r2, json!(9));
    assert_eq!(
        cancels(&out, W3),
        vec![r3],
        "W3's replica is no longer needed"
    );
    let w3 = h.b.stats().workers.into_iter().find(|w| w.session == W3);
    assert_eq!(w3.unwrap().in_flight, 0, "and W3's credit is free");
    assert_eq!(
        h.results(),
        vec![json!({"id": id.0, "ok": true, "result": 9})]
    );
    let late = h.ack(W3, r3, json!(9));
    assert_eq!(error_code(&late), Some(ErrorCode::UnknownTask));
    assert!(h.results().is_empty(), "a late replica adds nothing");
}

#[test]
fn a_session_gets_one_replica_of_a_task_and_the_tasks_behind_still_flow() {
    let mut h = Harness::voters([None; 4]);
    let id = h.put_redundant(json!(1), redundant(2, None, None));
    let plain = h.put("jobs", json!("plain"));
    let got = h.consume(W1, "jobs", 10);
    assert_eq!(got.len(), 2, "one replica and the plain task: {got:?}");
    assert!(got.contains(&plain));
    let second = h.consume(W2, "jobs", 10);
    assert_eq!(
        second.len(),
        1,
        "the other replica waited for another session"
    );
    h.ack(W1, got[0], json!("x"));
    h.ack(W2, second[0], json!("x"));
    let results = h.results();
    assert!(results.contains(&json!({"id": id.0, "ok": true, "result": "x"})));
}

#[test]
fn a_get_never_takes_a_replica() {
    let mut h = Harness::voters([None; 4]);
    h.put_redundant(json!(1), redundant(2, None, None));
    let plain = h.put("jobs", json!("plain"));
    assert_eq!(
        got_payload(&h.get("jobs", 0)),
        Some(json!("plain")),
        "{plain}"
    );
    let out = h.get("jobs", 0);
    assert!(
        matches!(out[0].msg, ServerMsg::Empty { .. }),
        "a replica's result is a vote: {out:?}"
    );
    assert_eq!(h.b.stats().queue("jobs").unwrap().depth, 2);
}

#[test]
fn disagreement_brings_more_replicas_then_a_dead_letter_with_every_result() {
    let mut h = Harness::voters([Some("a"), Some("b"), Some("c"), Some("d")]);
    let id = h.put_redundant(json!(7), redundant(2, Some(2), Some(3)));
    let r1 = h.consume(W1, "jobs", 5)[0];
    let r2 = h.consume(W2, "jobs", 5)[0];
    h.ack(W1, r1, json!("one"));
    let out = h.ack(W2, r2, json!("two"));
    assert!(delivered(&out, W1).is_empty() && delivered(&out, W2).is_empty());
    let r3 = h.consume(W3, "jobs", 5);
    assert_eq!(r3.len(), 1, "a third replica is issued, to a third session");
    let out = h.ack(W3, r3[0], json!("three"));
    assert!(error_code(&out).is_none());
    assert_eq!(h.voting(), 0);
    assert!(
        h.consume(W4, "jobs", 5).is_empty(),
        "max_replicas 3: no fourth"
    );

    let results = h.results();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["ok"], json!(false));
    assert!(
        results[0]["error"].as_str().unwrap().contains("no quorum"),
        "{results:?}"
    );
    let entries = h.dead_letters("jobs");
    let entry = &entries[0];
    assert_eq!(entry["id"], json!(id.0));
    assert_eq!(entry["payload"], json!(7));
    assert_eq!(
        (entry["replicas"].clone(), entry["quorum"].clone()),
        (json!(2), json!(2))
    );
    let ballots: Vec<(Value, Value)> = entry["ballots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["worker"].clone(), b["result"].clone()))
        .collect();
    assert_eq!(
        ballots,
        vec![
            (json!("a (session 2)"), json!("one")),
            (json!("b (session 3)"), json!("two")),
            (json!("c (session 4)"), json!("three")),
        ]
    );

    // Requeued, it runs redundantly again: a new vote.
    let out = h.send(
        P,
        ClientMsg::DeadRequeue {
            req: Some(4),
            queue: q("jobs"),
            ids: None,
        },
    );
    assert!(
        out.iter()
            .any(|o| matches!(o.msg, ServerMsg::Requeued { count: 1, .. })),
        "{out:?}"
    );
    assert_eq!(h.voting(), 1);
    let sent: usize = [W1, W2, W3, W4]
        .iter()
        .map(|w| delivered(&out, *w).len())
        .sum();
    assert_eq!(sent, 2, "two replicas again: {out:?}");
}

#[test]
fn a_replica_that_fails_for_good_is_a_lost_vote_and_another_replica_runs() {
    let mut h = Harness::voters([None; 4]);
    let id = h.put_redundant(json!(1), redundant(2, Some(2), Some(3)));
    let r1 = h.consume(W1, "jobs", 1)[0];
    let r2 = h.consume(W2, "jobs", 1)[0];
    h.fail(W1, r1, false);
    h.ack(W2, r2, json!(1));
    let r3 = h.consume(W3, "jobs", 1);
    assert_eq!(r3.len(), 1, "one more replica makes up for the failure");
    h.ack(W3, r3[0], json!(1));
    assert_eq!(
        h.results(),
        vec![json!({"id": id.0, "ok": true, "result": 1})]
    );
    let dead = h.b.stats().queue("jobs").unwrap().dead;
    assert_eq!(dead, 0, "a replica's failure is not a dead letter");
}

#[test]
fn a_retried_or_abandoned_replica_may_go_to_any_session_that_has_not_answered() {
    let mut h = Harness::voters([None; 4]);
    h.put_redundant(json!(1), redundant(2, None, None));
    let r1 = h.consume(W1, "jobs", 1)[0];
    let r2 = h.consume(W2, "jobs", 1)[0];
    h.ack(W1, r1, json!(1));
    // W2 leaves: its replica goes back, and not to W1, which answered already.
    h.b.close_session(W2, h.now);
    let out: Vec<Output> = h.b.drain().collect();
    assert!(delivered(&out, W1).is_empty(), "{out:?}");
    let again = h.consume(W3, "jobs", 1);
    assert_eq!(again, vec![r2]);
    h.ack(W3, r2, json!(1));
    assert_eq!(h.results().len(), 1);
}

#[test]
fn a_trusted_sessions_result_counts_alone_on_its_queues_only() {
    let mut h = Harness::voters([None; 4]);
    let trusted = Trusted(vec![vec![Pattern::new("jobs").unwrap()]]);
    h.b.trust(W1, trusted);
    let id = h.put_redundant(json!(6), redundant(3, Some(3), None));
    let r1 = h.consume(W1, "jobs", 1)[0];
    let r2 = h.consume(W2, "jobs", 1)[0];
    let out = h.ack(W1, r1, json!(36));
    assert_eq!(cancels(&out, W2), vec![r2]);
    assert_eq!(
        h.results(),
        vec![json!({"id": id.0, "ok": true, "result": 36})]
    );
    assert_eq!(
        h.b.stats().queue("jobs").unwrap().depth,
        0,
        "the third replica is withdrawn"
    );

    // Trust on another queue does not count here.
    let mut h = Harness::voters([None; 4]);
    h.b.trust(W2, Trusted(vec![vec![Pattern::new("other").unwrap()]]));
    h.put_redundant(json!(6), redundant(2, Some(2), None));
    let r = h.consume(W2, "jobs", 1);
    h.ack(W2, r[0], json!(36));
    assert!(h.results().is_empty(), "W2 is not trusted on jobs");
    // A key and its token must both trust the queue.
    let both = Trusted(vec![
        vec![Pattern::new(">").unwrap()],
        vec![Pattern::new("other").unwrap()],
    ]);
    assert!(!both.covers(&q("jobs")));
    assert!(both.covers(&q("other")));
}

#[test]
fn replicas_prefer_sessions_with_a_name_and_role_not_seen_yet() {
    let mut h = Harness::voters([Some("laptop"), Some("laptop"), None, None]);
    h.b.close_session(W3, h.now);
    h.b.close_session(W4, h.now);
    h.b.open_session(W3, Role::Browser, Some("phone".into()));
    h.b.open_session(W4, Role::Worker, Some("server".into()));
    for w in [W1, W2, W3, W4] {
        h.consume(w, "jobs", 4);
    }
    h.put_redundant(json!(1), redundant(3, None, None));
    assert_eq!(
        holding(&h),
        vec![W1, W3, W4],
        "not the second session named laptop while others are free"
    );

    // Without names, a role not seen yet decides: the browser before the second worker, though
    // the worker comes first in turn.
    let mut h = Harness::voters([None; 4]);
    h.b.close_session(W3, h.now);
    h.b.open_session(W3, Role::Browser, None);
    for w in [W1, W2, W3] {
        h.consume(w, "jobs", 4);
    }
    h.put_redundant(json!(1), redundant(2, None, None));
    assert_eq!(holding(&h), vec![W1, W3]);
}

/// The sessions holding a task, in session order.
fn holding(h: &Harness) -> Vec<SessionId> {
    h.b.stats()
        .workers
        .iter()
        .filter(|w| w.in_flight > 0)
        .map(|w| w.session)
        .collect()
}

#[test]
fn cancelling_the_task_withdraws_every_replica_and_a_replica_id_is_refused_by_name() {
    let mut h = Harness::voters([None; 4]);
    let id = h.put_redundant(json!(1), redundant(3, None, None));
    let r1 = h.consume(W1, "jobs", 1)[0];
    let out = h.send(
        P,
        ClientMsg::Cancel {
            req: Some(7),
            task: r1,
        },
    );
    let ServerMsg::Error { code, message, .. } = &out[0].msg else {
        panic!("{out:?}")
    };
    assert_eq!(*code, ErrorCode::BadRequest);
    assert!(message.contains(&format!("cancel task {id}")), "{message}");
    let out = h.send(
        P,
        ClientMsg::Cancel {
            req: Some(7),
            task: id,
        },
    );
    assert!(
        out.iter().any(|o| o.msg
            == ServerMsg::Cancelled {
                req: Some(7),
                task: id,
                state: TaskState::Leased
            }),
        "{out:?}"
    );
    assert_eq!(cancels(&out, W1), vec![r1]);
    let s = h.b.stats();
    let jobs = s.queue("jobs").unwrap();
    assert_eq!((jobs.depth, jobs.in_flight, jobs.voting), (0, 0, 0));
    let results = h.results();
    assert_eq!(results[0]["cancelled"], json!(true));
    assert_eq!(h.b.stored_bytes(), 0);
}

#[test]
fn impossible_redundancy_is_refused_by_name_and_a_queue_must_have_room_for_every_replica() {
    let mut h = Harness::voters([None; 4]);
    for (schedule, word) in [
        (redundant(2, Some(3), None), "quorum"),
        (redundant(17, None, None), "replicas"),
        (redundant(3, None, Some(2)), "max_replicas"),
    ] {
        let out = h.send(P, scheduled_put(Some(1), "jobs", json!(1), schedule));
        let ServerMsg::Error { code, message, .. } = &out[0].msg else {
            panic!("{out:?}")
        };
        assert_eq!(*code, ErrorCode::BadRequest);
        assert!(message.starts_with(word), "{message}");
    }
    let mut h = Harness::new(BrokerConfig {
        max_queue_len: 4,
        ..BrokerConfig::default()
    });
    h.put("jobs", json!(0));
    h.put("jobs", json!(1));
    let out = h.send(
        P,
        scheduled_put(Some(1), "jobs", json!(1), redundant(3, None, None)),
    );
    let ServerMsg::Error { code, message, .. } = &out[0].msg else {
        panic!("{out:?}")
    };
    assert_eq!(*code, ErrorCode::QueueFull);
    assert!(message.contains("3 replicas"), "{message}");
    assert_eq!(
        h.b.stats().queue("jobs").unwrap().depth,
        2,
        "nothing was added"
    );
}

#[test]
fn a_delayed_redundant_task_waits_then_its_replicas_run() {
    let mut h = Harness::voters([None; 4]);
    h.consume(W1, "jobs", 2);
    h.consume(W2, "jobs", 2);
    h.put_redundant(
        json!(1),
        Schedule {
            delay_ms: Some(500),
            ..redundant(2, None, None)
        },
    );
    let s = h.b.stats();
    assert_eq!(s.queue("jobs").unwrap().scheduled, 2);
    assert!(h.advance(499).is_empty());
    let out = h.advance(2);
    assert_eq!(delivered(&out, W1).len() + delivered(&out, W2).len(), 2);
}

#[test]
fn deleting_the_queue_drops_its_redundant_tasks_and_counts_each_once() {
    let mut h = Harness::voters([None; 4]);
    h.put_redundant(json!(1), redundant(3, None, None));
    h.put("jobs", json!(2));
    let out = h.send(
        P,
        ClientMsg::DeleteQueue {
            req: Some(1),
            queue: q("jobs"),
        },
    );
    assert!(
        matches!(out[0].msg, ServerMsg::Deleted { tasks: 2, .. }),
        "{out:?}"
    );
    assert_eq!(h.voting(), 0);
    assert_eq!(h.b.stored_bytes(), 0);
}

#[test]
fn a_queues_rule_makes_every_put_redundant_and_a_put_may_ask_for_more_not_less() {
    let rule: QueueReplicas = "jobs.>=2/2".parse().unwrap();
    assert_eq!(rule.to_string(), "jobs.>=2/2/4");
    let mut h = Harness::new(BrokerConfig {
        replicas: vec![rule],
        ..BrokerConfig::default()
    });
    h.put("jobs.eu", json!(1));
    assert_eq!(h.b.stats().queue("jobs.eu").unwrap().voting, 1);
    assert_eq!(
        h.b.stats().queue("jobs.eu").unwrap().depth,
        2,
        "two replicas, asked or not"
    );
    h.send(
        P,
        scheduled_put(None, "jobs.eu", json!(2), redundant(3, Some(1), None)),
    );
    let jobs = h.b.stats();
    let jobs = jobs.queue("jobs.eu").unwrap();
    assert_eq!(
        (jobs.voting, jobs.depth),
        (2, 5),
        "three asked for, more than the rule's two"
    );
    h.put("other", json!(3));
    assert_eq!(
        h.b.stats().queue("other").unwrap().voting,
        0,
        "other queues are not touched"
    );
    // The quorum of 1 asked for was raised to the rule's 2: one answer is not enough.
    let got = h.consume(W1, "jobs.eu", 10);
    for id in got {
        h.ack(W1, id, json!("x"));
    }
    assert_eq!(h.b.stats().acked, 0);
}

#[test]
fn a_queues_rule_that_cannot_be_is_refused_by_name() {
    for (text, why) in [
        ("jobs", "expected QUEUE=N[/M[/MAX]]"),
        ("jobs=1", "at least 2 replicas"),
        ("jobs=3/4", "quorum must be 1 to replicas (3), not 4"),
        ("jobs=x", "\"x\" is not a count"),
        ("jobs=2/2/4/5", "at most N/M/MAX"),
        ("jo bs=2", "\"jo bs=2\""),
    ] {
        let err = text.parse::<QueueReplicas>().unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn a_votes_results_are_charged_while_it_lasts_and_big_ones_show_as_their_length() {
    let mut h = Harness::voters([None; 4]);
    h.put_redundant(json!(1), redundant(2, Some(2), Some(2)));
    let r1 = h.consume(W1, "jobs", 1)[0];
    let r2 = h.consume(W2, "jobs", 1)[0];
    let before = h.b.stored_bytes();
    let big = "x".repeat(20_000);
    h.ack(W1, r1, json!(big));
    assert!(
        h.b.stored_bytes() >= before + 19_000,
        "the ballot's result counts against max_stored_bytes"
    );
    h.ack(W2, r2, json!("small"));
    let entries = h.dead_letters("jobs");
    let ballots = entries[0]["ballots"].as_array().unwrap();
    assert_eq!(ballots[0].get("result"), None);
    assert_eq!(
        ballots[0]["result_bytes"],
        json!(20_002),
        "the JSON text's length"
    );
    assert_eq!(ballots[1]["result"], json!("small"));
    h.results();
    h.get("jobs.dead", 0);
    assert_eq!(
        h.b.stored_bytes(),
        0,
        "nothing is charged once the vote is over"
    );
}

#[test]
fn a_replica_fails_for_good_even_when_the_dead_letter_queue_is_full() {
    let mut h = Harness::new(BrokerConfig {
        max_queue_len: 2,
        ..BrokerConfig::default()
    });
    h.put("jobs.dead", json!("old"));
    h.put("jobs.dead", json!("older"));
    h.put_at("jobs", json!(1), redundant(2, Some(2), Some(2)));
    let r1 = h.consume(W1, "jobs", 1)[0];
    let out = h.fail(W1, r1, false);
    assert!(
        error_code(&out).is_none(),
        "a replica's failure needs no room in jobs.dead: {out:?}"
    );
}
