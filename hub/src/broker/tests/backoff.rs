//! Retries that back off, under the manual clock.

use super::*;

/// Ten attempts, so the tests see several retries.
fn config() -> BrokerConfig {
    BrokerConfig {
        max_attempts: 10,
        ..BrokerConfig::default()
    }
}

impl Harness {
    fn put_backoff(&mut self, queue: &str, backoff_ms: Option<u64>, max_ms: Option<u64>) -> TaskId {
        let schedule = Schedule {
            backoff_ms,
            backoff_max_ms: max_ms,
            ..Schedule::default()
        };
        self.put_at(queue, json!(1), schedule)
    }

    fn fail_after(&mut self, task: TaskId, backoff_ms: Option<u64>) -> Vec<Output> {
        self.send(
            W1,
            ClientMsg::Fail {
                req: None,
                task,
                error: "try later".into(),
                retry: true,
                backoff_ms,
            },
        )
    }

    /// Advance one millisecond at a time until `who` is handed a task; how long that took.
    fn until_delivered(&mut self, who: SessionId, limit: u64) -> Option<u64> {
        (1..=limit).find(|_| !delivered(&self.advance(1), who).is_empty())
    }
}

#[test]
fn each_retry_waits_twice_as_long_up_to_the_cap_and_is_scheduled_meanwhile() {
    let mut h = Harness::new(config());
    let id = h.put_backoff("jobs", Some(100), Some(500));
    h.consume(W1, "jobs", 1);
    for (attempt, full) in [(1u32, 100u64), (2, 200), (3, 400), (4, 500), (5, 500)] {
        assert!(delivered(&h.fail_after(id, None), W1).is_empty());
        let s = h.b.stats();
        let jobs = s.queue("jobs").unwrap();
        assert_eq!(
            (jobs.scheduled, jobs.depth),
            (1, 0),
            "attempt {attempt} waits apart"
        );
        let waited = h.until_delivered(W1, 2 * full).unwrap();
        // Jitter puts each wait in the upper half of its full length (+1 ms: "not before").
        assert!(
            (full / 2..=full + 1).contains(&waited),
            "attempt {attempt}: waited {waited} ms, expected {}..={full}",
            full / 2
        );
    }
}

#[test]
fn a_backoff_of_zero_retries_at_once_and_a_worker_may_name_its_own_wait() {
    let mut h = Harness::new(config());
    let id = h.put_backoff("jobs", Some(0), None);
    h.consume(W1, "jobs", 1);
    assert_eq!(delivered(&h.fail_after(id, None), W1), vec![id]);
    // The worker's `backoff_ms` wins over the task's.
    assert!(delivered(&h.fail_after(id, Some(5_000)), W1).is_empty());
    assert_eq!(h.until_delivered(W1, 10_000), Some(5_001));
}

#[test]
fn retries_that_failed_together_come_back_spread_out() {
    let config = BrokerConfig {
        retry_backoff: Duration::from_secs(10),
        ..config()
    };
    let mut h = Harness::new(config);
    let ids: Vec<TaskId> = (0..100)
        .map(|_| h.put_backoff("jobs", None, None))
        .collect();
    h.consume(W1, "jobs", 100);
    for id in &ids {
        h.fail_after(*id, None);
    }
    let mut back_at = std::collections::BTreeSet::new();
    for t in 1..=10_001u64 {
        if !delivered(&h.advance(1), W1).is_empty() {
            back_at.insert(t);
        }
    }
    // All came back, within 5 to 10 s, not in one burst.
    assert_eq!(h.b.stats().queue("jobs").unwrap().in_flight, 100);
    assert!(
        back_at.iter().all(|t| (5_000..=10_001).contains(t)),
        "{back_at:?}"
    );
    assert!(back_at.len() > 50, "only {} distinct times", back_at.len());
}

#[test]
fn an_expired_lease_or_a_closed_session_is_not_a_failure_and_does_not_wait() {
    let config = BrokerConfig {
        ack_wait: Duration::from_millis(1_000),
        ..config()
    };
    let mut h = Harness::new(config);
    let id = h.put_backoff("jobs", None, None);
    h.consume(W1, "jobs", 1);
    h.consume(W2, "jobs", 1);
    let out = h.advance(1_000);
    // Taken from W1 (stalled now), straight to W2, which sees why the last attempt ended.
    let task = out.iter().find_map(|o| match &o.msg {
        ServerMsg::Deliver { task } if o.to == W2 => Some(task.clone()),
        _ => None,
    });
    let task = task.unwrap();
    assert_eq!(task.id, id);
    assert!(task.last_error.unwrap().contains("lease expired"));
}
