//! Results: reply_to queues and submit's private inbox, with real native workers in-process.

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_core::Role;
use taskhub_tests::{SubmitWithin, client, hub, in_process_worker};

#[tokio::test]
async fn an_ack_puts_the_result_on_reply_to() {
    let hub = hub(|_| {}).await;
    let _w = in_process_worker(&hub.url(), "tasks", 2);
    taskhub_tests::results_come_back_on_reply_to(&client(&hub.url()).await).await;
    hub.stop().await;
}

#[tokio::test]
async fn submit_returns_results_in_input_order_to_its_own_session_only() {
    let hub = hub(|_| {}).await;
    let _w1 = in_process_worker(&hub.url(), "tasks", 2);
    let _w2 = in_process_worker(&hub.url(), "tasks", 2);
    let a = client(&hub.url()).await;
    let b = client(&hub.url()).await;
    let (ra, rb) = tokio::join!(
        a.submit_within(
            "tasks",
            (0..100).map(|n| json!(n)),
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(30))
        ),
        b.submit_within(
            "tasks",
            (100..150).map(|n| json!(n)),
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(30))
        ),
    );
    let ra = ra.unwrap();
    let rb = rb.unwrap();
    assert_eq!(ra.len(), 100);
    assert_eq!(rb.len(), 50);
    for (n, r) in (0..100).zip(&ra) {
        assert_eq!(
            r.result,
            Some(json!(format!("{n} * {n} = {}", n * n)).into())
        );
    }
    for (n, r) in (100..150).zip(&rb) {
        assert_eq!(
            r.result,
            Some(json!(format!("{n} * {n} = {}", n * n)).into())
        );
    }
    // Nothing leaked into a shared queue.
    let stats = a.stats().await.unwrap();
    assert!(
        stats
            .queues
            .iter()
            .all(|q| !q.name.as_str().starts_with("_inbox"))
    );
    assert_eq!(stats.sessions[Role::Worker.as_str()], 2);
    hub.stop().await;
}

#[tokio::test]
async fn a_failed_task_comes_back_to_submit_as_an_error() {
    let hub = hub(|_| {}).await;
    let _w = in_process_worker(&hub.url(), "tasks", 2);
    let c = client(&hub.url()).await;
    let opts = PutOptions::new().kind("no-such-kind");
    let replies = c
        .submit_within("tasks", vec![json!(1)], opts, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(!replies[0].ok);
    let err = replies[0].error.as_deref().unwrap();
    assert!(err.contains("unknown task kind \"no-such-kind\""), "{err}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_tasks_run_off_the_workers_event_loop() {
    let hub = hub(|_| {}).await;
    let _w = in_process_worker(&hub.url(), "mixed", 2);
    let c = client(&hub.url()).await;
    // A long primes and a square on one worker with two slots: the square comes back first,
    // which it could not if primes ran on the loop that reads the square's delivery.
    let slow = c.submit_within(
        "mixed",
        vec![json!(60_000_000)],
        PutOptions::new().kind("primes"),
        Some(Duration::from_secs(60)),
    );
    let quick = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.submit_within(
            "mixed",
            vec![json!(9)],
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(60)),
        )
        .await
    };
    tokio::pin!(slow);
    let first = tokio::select! {
        r = &mut slow => ("primes", r.unwrap()),
        r = quick => ("square", r.unwrap()),
    };
    assert_eq!(first.0, "square", "{first:?}");
    assert_eq!(first.1[0].result, Some(json!("9 * 9 = 81").into()));
    let primes = slow.await.unwrap();
    assert_eq!(primes[0].result, Some(json!(3_562_115).into()));
    hub.stop().await;
}
