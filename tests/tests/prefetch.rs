//! The adaptive credit window with real worker processes at their default flags: slow tasks are
//! not hoarded (a worker holds at most `concurrency + 1`), tiny tasks get a deep pipeline.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::{client, hub, worker};

/// Samples every worker's tasks in flight until `done` tasks are acked; returns the most any
/// one worker held and how many each acked.
async fn watch(c: &taskhub_client::Client, done: u64, limit: Duration) -> (u64, Vec<u64>) {
    let deadline = std::time::Instant::now() + limit;
    let mut most = 0;
    loop {
        let s = c.stats().await.unwrap();
        most = s.workers.iter().map(|w| w.in_flight).fold(most, u64::max);
        if s.acked >= done {
            let acked = s.workers.iter().map(|w| w.acked).collect();
            return (most, acked);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {done} done",
            s.acked
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `n` sessions consume `queue`.
async fn consumers(c: &taskhub_client::Client, queue: &str, n: u64) {
    taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        (s.queue(queue).map(|q| q.consumers) == Some(n)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{queue} never had {n} consumer(s)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tasks_are_not_hoarded_by_one_worker() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let _a = worker(&hub.url(), "slow", &["--concurrency", "2"]);
    let _b = worker(&hub.url(), "slow", &["--concurrency", "2"]);
    consumers(&c, "slow", 2).await;
    c.put_many(
        "slow",
        vec![json!(1_000); 20],
        PutOptions::new().kind("sleep"),
    )
    .await
    .unwrap();
    let (most, acked) = watch(&c, 20, Duration::from_secs(60)).await;
    assert!(most <= 3, "a worker held {most} one-second tasks at once");
    // Each worker did its share: neither sat idle while the other held the queue.
    assert!(acked.iter().all(|&a| a >= 8), "{acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_tasks_get_a_deep_pipeline_at_default_flags() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let _w = worker(&hub.url(), "tiny", &["--concurrency", "1"]);
    consumers(&c, "tiny", 1).await;
    c.put_many(
        "tiny",
        vec![json!(7); 50_000],
        PutOptions::new().kind("square"),
    )
    .await
    .unwrap();
    let (most, _) = watch(&c, 50_000, Duration::from_secs(120)).await;
    // A fixed prefetch of 2 (the old default for one slot) would never show more than 2.
    assert!(most >= 32, "the window never grew past {most}");
}
