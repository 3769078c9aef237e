//! Priorities and delayed tasks over real sockets: the client library, the CLI and raw protocol
//! frames, against an in-process hub (and, with `TASKHUB_TEST_BACKEND=nats`, the refusal a NATS
//! backend gives).

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use taskhub_client::{ClientError, PutOptions};
use taskhub_core::ErrorCode;
use taskhub_tests::{KEY, Raw, cli, client, hub, on_nats};

/// The error a hub on NATS gives for what it cannot schedule.
fn is_unsupported(e: &ClientError, what: &str) -> bool {
    matches!(e, ClientError::Hub { code: ErrorCode::Unsupported, message }
        if message.contains(what) && message.contains("NATS"))
}

#[tokio::test]
async fn a_priority_9_task_put_behind_10000_priority_0_tasks_is_delivered_next() {
    let h = hub(|_| {}).await;
    let c = client(&h.url()).await;
    c.put_many("jobs", (0..10_000).map(|n| json!(n)), PutOptions::new())
        .await
        .unwrap();
    let urgent = c
        .put("jobs", json!("urgent"), PutOptions::new().priority(9))
        .await;
    if on_nats() {
        assert!(is_unsupported(&urgent.unwrap_err(), "priority"));
        return;
    }
    let urgent = urgent.unwrap();
    let next = c
        .get("jobs", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.id, next.priority), (urgent, 9));
    // Then the rest, first in first out.
    let after = c
        .get("jobs", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.payload.json_or_null(), &json!(0));
}

// The CLI blocks this thread: the hub runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_put_waits_its_time_then_runs() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let started = Instant::now();
    let out = cli(&[
        "--hub", &url, "--key", KEY, "put", "jobs", "41", "--delay", "1500ms",
    ]);
    if on_nats() {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("delayed put") && err.contains("unsupported"),
            "{err}"
        );
        return;
    }
    assert!(out.status.success(), "{out:?}");
    let c = client(&url).await;
    let stats = c.stats().await.unwrap();
    let jobs = stats.queue("jobs").unwrap();
    assert_eq!((jobs.scheduled, jobs.depth), (1, 0), "waiting, not ready");
    assert_eq!(c.get("jobs", Duration::ZERO).await.unwrap(), None);
    let task = c
        .get("jobs", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(task.payload.json_or_null(), &json!(41));
    assert!(
        waited >= Duration::from_millis(1_500),
        "ready early, after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "ready late, after {waited:?}"
    );
}

// The CLI blocks this thread: the hub runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_at_a_time_past_is_ready_at_once_and_one_ahead_waits() {
    if !taskhub_tests::embedded_only("delayed puts") {
        return;
    }
    let h = hub(|_| {}).await;
    let c = client(&h.url()).await;
    let hour = Duration::from_secs(3_600);
    c.put(
        "jobs",
        json!("ahead"),
        PutOptions::new().not_before(SystemTime::now() + hour),
    )
    .await
    .unwrap();
    c.put(
        "jobs",
        json!("past"),
        PutOptions::new().not_before(SystemTime::now() - hour),
    )
    .await
    .unwrap();
    let got = c
        .get("jobs", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload.json_or_null(), &json!("past"));
    let out = cli(&[
        "--hub",
        &h.url(),
        "--key",
        KEY,
        "put",
        "jobs",
        "1",
        "--at",
        "1999-12-31T23:59:59Z",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stats = c.stats().await.unwrap();
    let jobs = stats.queue("jobs").unwrap();
    assert_eq!((jobs.scheduled, jobs.depth), (1, 1));
}

// The CLI blocks this thread: the hub runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_schedules_get_errors_that_say_what_is_wrong() {
    let h = hub(|c| c.broker.max_delay = Duration::from_secs(60)).await;
    let url = h.url();
    let mut raw = Raw::session(&url, "producer").await;
    let put = |extra: Value| {
        let mut v = json!({"type": "put", "queue": "jobs", "payload": 1});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let answer = raw.request(put(json!({"priority": 10})), 1).await;
    assert_eq!(answer["code"], "bad_request", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("priority must be 0 to 9")
    );
    let answer = raw
        .request(put(json!({"delay_ms": 5, "not_before": 5})), 2)
        .await;
    assert_eq!(answer["code"], "bad_request", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("delay_ms or not_before")
    );
    let answer = raw.request(put(json!({"delay_ms": 61_000})), 3).await;
    if on_nats() {
        assert_eq!(answer["code"], "unsupported", "{answer}");
    } else {
        assert_eq!(answer["code"], "bad_request", "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("max_delay"),
            "{answer}"
        );
    }
    // The session goes on, and nothing was stored.
    let answer = raw.request(json!({"type": "stats"}), 4).await;
    let queues = answer["queues"].as_array().unwrap();
    assert!(
        queues
            .iter()
            .filter(|q| q["name"] == "jobs")
            .all(|q| q["depth"] == 0 && q["scheduled"] == 0),
        "{answer}"
    );
    // The CLI refuses a priority past 9 before it sends anything.
    let out = cli(&[
        "--hub",
        &url,
        "--key",
        KEY,
        "put",
        "jobs",
        "1",
        "--priority",
        "10",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--priority") && err.contains("0..=9"), "{err}");
    let out = cli(&[
        "--hub", &url, "--key", KEY, "put", "jobs", "1", "--at", "tomorrow",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}

/// The next `deliver` on `raw`, and how long it took to come.
async fn next_delivery(raw: &mut Raw, within: Duration) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let msg = tokio::time::timeout(within, raw.recv())
            .await
            .expect("a delivery in time")
            .expect("the session is open");
        if msg["type"] == "deliver" {
            return (msg["task"].clone(), started.elapsed());
        }
    }
}

#[tokio::test]
async fn a_failed_task_comes_back_after_its_backoff_with_its_attempt_and_error() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let mut producer = Raw::session(&url, "producer").await;
    let mut worker = Raw::session(&url, "worker").await;
    let put = json!({"type": "put", "queue": "jobs", "payload": 7, "backoff_ms": 400});
    let answer = producer.request(put, 1).await;
    if on_nats() {
        // A task's own backoff is refused there; the hub's, and a fail's own wait, apply.
        assert_eq!(answer["code"], "unsupported", "{answer}");
        let answer = producer
            .request(json!({"type": "put", "queue": "jobs", "payload": 7}), 2)
            .await;
        assert_eq!(answer["type"], "queued", "{answer}");
    } else {
        assert_eq!(answer["type"], "queued", "{answer}");
    }
    let consume = json!({"type": "consume", "queues": ["jobs"], "prefetch": 1});
    assert_eq!(worker.request(consume, 1).await["type"], "ok");
    let (task, _) = next_delivery(&mut worker, Duration::from_secs(5)).await;
    assert_eq!(
        (task["attempt"].as_u64(), task.get("last_error")),
        (Some(1), None)
    );
    let id = task["id"].clone();
    let wait = if on_nats() { Some(400) } else { None };
    let fail = json!({"type": "fail", "task": id, "error": "the disk is full", "retry": true,
                      "backoff_ms": wait});
    worker.send(fail).await;
    let (again, waited) = next_delivery(&mut worker, Duration::from_secs(5)).await;
    assert_eq!(again["id"], id);
    assert_eq!(again["attempt"], 2);
    if !on_nats() {
        // 400 ms for the first retry, jittered into its upper half.
        assert!(
            waited >= Duration::from_millis(200),
            "back after {waited:?}"
        );
        assert_eq!(again["last_error"], "the disk is full");
    } else {
        assert!(
            waited >= Duration::from_millis(400),
            "back after {waited:?}"
        );
    }
    // A fail may ask to come back at once.
    let fail = json!({"type": "fail", "task": id, "error": "again", "retry": true,
                      "backoff_ms": 0});
    worker.send(fail).await;
    let (third, waited) = next_delivery(&mut worker, Duration::from_secs(5)).await;
    assert_eq!(third["attempt"], 3);
    assert!(waited < Duration::from_secs(1), "back after {waited:?}");
}
