//! Progress reports over real sockets: a handler in a native worker reports, the submitter hears
//! it through the client library and `taskhub submit --progress`, `stats` shows it, and the raw
//! frames are as `docs/protocol.md` writes them.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use taskhub_client::PutOptions;
use taskhub_core::handlers::{Failure, Handler, Handlers, Input, Outcome};
use taskhub_tests::{KEY, Raw, cli, client, eventually, hub, on_nats, worker_with};

/// Works in `payload` steps of 100 ms, reporting before each.
struct Steps;

impl Handler for Steps {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        let steps = task.json()?.as_u64().unwrap_or(5);
        for i in 0..steps {
            task.progress(
                i as f64 / steps as f64,
                Some(&format!("step {} of {steps}", i + 1)),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Outcome::Done(json!(steps)))
    }
}

fn handlers() -> Handlers {
    Handlers::new().heavy("steps", Steps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submitter_hears_a_handlers_progress_and_stats_show_it() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let _w = worker_with(&url, "jobs", 1, handlers());
    let c = client(&url).await;
    let mut reports = c.progress();
    let submitted = {
        let c = c.clone();
        tokio::spawn(async move {
            c.submit("jobs", [json!(8)], PutOptions::new().kind("steps"))
                .await
        })
    };
    // While it runs, stats show its latest report on the worker's line (on NATS, only the
    // submitter hears it: see ARCHITECTURE.md).
    if !on_nats() {
        let seen = eventually(Duration::from_secs(10), || async {
            let stats = c.stats().await.ok()?;
            let p = stats
                .workers
                .iter()
                .find_map(|w| w.progress.first().cloned())?;
            (p.fraction > 0.0).then_some(p)
        })
        .await
        .expect("stats showed the task's progress");
        assert_eq!(seen.queue.as_str(), "jobs");
        assert!(seen.message.unwrap().starts_with("step "));
    }
    let replies = submitted.await.unwrap().unwrap();
    assert_eq!(replies[0].result, Some(json!(8).into()));
    let mut heard = Vec::new();
    while let Ok(p) = reports.try_recv() {
        assert_eq!(p.task, replies[0].id);
        heard.push((p.fraction, p.message.unwrap()));
    }
    // Eight reports 100 ms apart, each sent (none within 100 ms of the last), in order.
    assert!(heard.len() >= 6, "{heard:?}");
    assert!(
        heard.windows(2).all(|w| w[0].0 < w[1].0),
        "in order: {heard:?}"
    );
    assert_eq!(heard[0], (0.0, "step 1 of 8".to_string()));
    if !on_nats() {
        let stats = c.stats().await.unwrap();
        assert!(
            stats.workers.iter().all(|w| w.progress.is_empty()),
            "gone from stats once acked"
        );
    }
    h.stop().await;
}

// The CLI blocks this thread: the hub runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskhub_submit_progress_prints_the_reports() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let _w = worker_with(&url, "jobs", 1, handlers());
    let out = cli(&[
        "--hub",
        &url,
        "--key",
        KEY,
        "submit",
        "jobs",
        "4",
        "--kind",
        "steps",
        "--progress",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(": 0% step 1 of 4"), "{err}");
    assert!(err.contains(": 75% step 4 of 4"), "{err}");
    h.stop().await;
}

/// The frames as `docs/protocol.md` has them: `progress` from the lease holder (answered `ok`
/// with `req`), passed to the inbox of the task's submitter; refusals by name.
#[tokio::test]
async fn raw_frames_progress_reaches_the_submitters_inbox() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let mut w = Raw::consumer(&url, "jobs").await;
    let (mut p, welcome) = Raw::authenticate(&url, KEY, "producer").await;
    let inbox = welcome["inbox"].as_str().unwrap().to_string();
    let queued = p
        .request(
            json!({"type": "put", "queue": "jobs", "payload": 1, "reply_to": inbox}),
            2,
        )
        .await;
    let id = queued["task"].as_u64().unwrap();
    assert_eq!(w.recv().await.unwrap()["task"]["id"], json!(id));
    let report = json!({"type": "progress", "task": id, "fraction": 0.5, "message": "half"});
    let mut asked = report.clone();
    asked["req"] = json!(3);
    assert_eq!(w.request(asked, 3).await, json!({"type": "ok", "req": 3}));
    let heard: Value = p.recv().await.unwrap();
    assert_eq!(
        heard,
        json!({"type": "progress", "task": id, "fraction": 0.5, "message": "half"})
    );
    // Without req: no answer, and the submitter hears it all the same.
    w.send(json!({"type": "progress", "task": id, "fraction": 1.0}))
        .await;
    assert_eq!(
        p.recv().await.unwrap(),
        json!({"type": "progress", "task": id, "fraction": 1.0})
    );
    // Refused, by name: out of range, not the holder's.
    let bad = w
        .request(json!({"type": "progress", "task": id, "fraction": 3}), 4)
        .await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("from 0 to 1"),
        "{bad}"
    );
    let stranger = p
        .request(json!({"type": "progress", "task": id, "fraction": 0.1}), 5)
        .await;
    assert_eq!(stranger["code"], "unknown_task", "{stranger}");
    h.stop().await;
}
