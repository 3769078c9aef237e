//! Users' own handlers (the worker SDK) in a real native worker against a real hub: state,
//! failures with and without retry, waiting without blocking, unknown kinds, panics.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use taskhub_client::PutOptions;
use taskhub_native_worker::{Failure, Handler, Handlers, Input, Outcome};
use taskhub_tests::{SubmitWithin, client, hub, worker_with};

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// A handler with configuration and state: numbers tasks it has seen, per worker.
struct Tally {
    label: String,
    seen: Mutex<Vec<u64>>,
}

impl Handler for Tally {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        let mut seen = self.seen.lock().map_err(|_| "tally poisoned")?;
        seen.push(task.id.0);
        Ok(Outcome::Done(
            json!({"label": self.label, "count": seen.len(), "payload": task.payload}),
        ))
    }
}

/// Fails until the third attempt, then succeeds.
fn third_time_lucky(task: &Input<'_>) -> Result<Outcome, Failure> {
    if task.attempt < 3 {
        return Err(Failure::retryable(format!(
            "attempt {} failed",
            task.attempt
        )));
    }
    Ok(Outcome::Done(json!({"attempt": task.attempt})))
}

struct Lucky;

impl Handler for Lucky {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        third_time_lucky(task)
    }
}

fn mine() -> Handlers {
    Handlers::new()
        .heavy(
            "tally",
            Tally {
                label: "counter-1".into(),
                seen: Mutex::new(Vec::new()),
            },
        )
        .light("lucky", Lucky)
        .light("reject", |p: &Value| -> Result<Value, Failure> {
            Err(Failure::permanent(format!("cannot use {p}")))
        })
        .light("nap", |p: &Value| Outcome::Wait {
            ms: p.as_u64().unwrap_or(0),
            then: json!({"napped": p}),
        })
        .light("double", |p: &Value| -> Result<Value, String> {
            let n = p.as_i64().ok_or("double expects an integer")?;
            Ok(json!(n * 2))
        })
        .heavy("explode", |_: &Value| -> Value { panic!("kaboom") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_with_state_keeps_it_across_tasks() {
    let hub = hub(|_| {}).await;
    let _w = worker_with(&hub.url(), "jobs", 1, mine());
    let c = client(&hub.url()).await;
    let replies = c
        .submit_within(
            "jobs",
            vec![json!("a"), json!("b"), json!("c")],
            PutOptions::new().kind("tally"),
            WAIT,
        )
        .await
        .unwrap();
    // Each task saw the count the ones before it left (a stateless handler would say 1, 1, 1).
    // The order they ran in is not asserted: once, under the whole suite's load, they ran a, c, b
    // (not reproduced in isolation; noted on issue 8).
    let mut counts: Vec<u64> = replies
        .iter()
        .map(|r| r.result.as_ref().unwrap()["count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2, 3]);
    assert_eq!(replies[2].result.as_ref().unwrap()["label"], "counter-1");
    assert_eq!(replies[1].result.as_ref().unwrap()["payload"], "b");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_when_they_may_and_dead_letter_at_once_when_not() {
    let hub = hub(|c| c.broker.max_attempts = 5).await;
    let _w = worker_with(&hub.url(), "jobs", 1, mine());
    let c = client(&hub.url()).await;

    let lucky = c
        .submit_within(
            "jobs",
            vec![json!(null)],
            PutOptions::new().kind("lucky"),
            WAIT,
        )
        .await
        .unwrap();
    assert!(lucky[0].ok, "{lucky:?}");
    assert_eq!(lucky[0].result, Some(json!({"attempt": 3}).into()));

    let bad = c
        .submit_within(
            "jobs",
            vec![json!(5)],
            PutOptions::new().kind("double"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(bad[0].result, Some(json!(10).into()));
    let retried = c
        .submit_within(
            "jobs",
            vec![json!("x")],
            PutOptions::new().kind("double").max_attempts(2),
            WAIT,
        )
        .await
        .unwrap();
    let error = retried[0].error.as_deref().unwrap();
    assert!(
        error.contains("after 2 attempt(s): double expects an integer"),
        "{error}"
    );

    let rejected = c
        .submit_within(
            "jobs",
            vec![json!(7)],
            PutOptions::new().kind("reject"),
            WAIT,
        )
        .await
        .unwrap();
    let error = rejected[0].error.as_deref().unwrap();
    assert!(error.contains("cannot use 7"), "{error}");
    let dead = c.get("jobs.dead", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(dead.payload["kind"], "double");
    let dead = c.get("jobs.dead", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(dead.payload["kind"], "reject");
    assert_eq!(
        dead.payload["attempts"], 1,
        "no retry for a permanent failure"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_handler_does_not_hold_up_other_tasks() {
    let hub = hub(|_| {}).await;
    let _w = worker_with(&hub.url(), "jobs", 2, mine());
    let c = client(&hub.url()).await;
    let nap = PutOptions::new().kind("nap").reply_to("done");
    let quick = PutOptions::new().kind("double").reply_to("done");
    c.put("jobs", json!(1500), nap).await.unwrap();
    c.put("jobs", json!(21), quick).await.unwrap();
    let first = c
        .get("done", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.payload["result"], 42, "the quick task finished first");
    let second = c
        .get("done", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.payload["result"], json!({"napped": 1500}));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_dead_letter_at_once_and_a_panic_fails_only_its_task() {
    let hub = hub(|_| {}).await;
    let _w = worker_with(&hub.url(), "jobs", 1, mine());
    let c = client(&hub.url()).await;
    let unknown = c
        .submit_within(
            "jobs",
            vec![json!(3)],
            PutOptions::new().kind("square"),
            WAIT,
        )
        .await
        .unwrap();
    let error = unknown[0].error.as_deref().unwrap();
    assert!(
        error.contains("unknown task kind \"square\"") && error.contains("double, explode"),
        "the worker names what it knows: {error}"
    );
    let dead = c.get("jobs.dead", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(dead.payload["attempts"], 1);

    let exploded = c
        .submit_within(
            "jobs",
            vec![json!(null)],
            PutOptions::new().kind("explode").max_attempts(1),
            WAIT,
        )
        .await
        .unwrap();
    let error = exploded[0].error.as_deref().unwrap();
    assert!(error.contains("handler panicked: kaboom"), "{error}");
    // The worker is still there and still works.
    let after = c
        .submit_within(
            "jobs",
            vec![json!(4)],
            PutOptions::new().kind("double"),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(after[0].result, Some(json!(8).into()));
    hub.stop().await;
}
