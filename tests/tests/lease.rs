//! The lease timer over real sockets. (The exact timing rules are tested under a manual clock in
//! the hub's broker tests; this checks the timer is wired to them.)

use std::time::Duration;

use serde_json::json;
use taskhub_tests::{Raw, SubmitWithin, hub};

#[tokio::test]
async fn a_task_not_acked_within_ack_wait_is_redelivered() {
    let hub = hub(|c| c.broker.ack_wait = Duration::from_millis(300)).await;
    let mut p = Raw::session(&hub.url(), "producer").await;
    p.request(json!({"type": "put", "queue": "slow", "payload": "x"}), 1)
        .await;
    let mut w1 = Raw::session(&hub.url(), "worker").await;
    w1.request(
        json!({"type": "consume", "queues": ["slow"], "prefetch": 1}),
        1,
    )
    .await;
    let first = w1.recv().await.unwrap();
    assert_eq!(
        (first["type"].as_str(), first["task"]["attempt"].as_u64()),
        (Some("deliver"), Some(1))
    );
    // w1 hangs on to it without acking; it stops asking for more.
    w1.request(json!({"type": "consume", "queues": [], "prefetch": 0}), 2)
        .await;

    let mut w2 = Raw::session(&hub.url(), "worker").await;
    w2.request(
        json!({"type": "consume", "queues": ["slow"], "prefetch": 1}),
        1,
    )
    .await;
    let again = w2.recv().await.unwrap();
    assert_eq!(again["type"], "deliver");
    assert_eq!(again["task"]["id"], first["task"]["id"]);
    assert_eq!(again["task"]["attempt"], 2);

    // The first worker's late ack is refused: the task is w2's now.
    let late = w1
        .request(json!({"type": "ack", "task": first["task"]["id"]}), 3)
        .await;
    assert_eq!(late["code"], "unknown_task", "{late}");
    let ok = w2
        .request(
            json!({"type": "ack", "task": again["task"]["id"], "result": 1}),
            2,
        )
        .await;
    assert_eq!(ok["type"], "ok");
    hub.stop().await;
}

#[tokio::test]
async fn touch_keeps_a_lease_alive() {
    let hub = hub(|c| c.broker.ack_wait = Duration::from_millis(300)).await;
    let mut p = Raw::session(&hub.url(), "producer").await;
    p.request(json!({"type": "put", "queue": "slow", "payload": "x"}), 1)
        .await;
    let mut w = Raw::session(&hub.url(), "worker").await;
    w.request(
        json!({"type": "consume", "queues": ["slow"], "prefetch": 1}),
        1,
    )
    .await;
    let task = w.recv().await.unwrap()["task"].clone();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ok = w
            .request(json!({"type": "touch", "task": task["id"]}), 10 + i)
            .await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    // 600 ms after delivery, twice ack-wait, the lease is still ours.
    let ok = w
        .request(json!({"type": "ack", "task": task["id"]}), 99)
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    hub.stop().await;
}

/// The fault suite's case: one of three worker processes is frozen (SIGSTOP) mid-run. Its leases
/// expire and go to the others; it is not handed its own expired tasks again, so nothing burns
/// its attempts and nothing is dead-lettered. Thawed (SIGCONT), it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_loses_its_tasks_to_the_others_and_rejoins_when_thawed() {
    use taskhub_client::PutOptions;
    use taskhub_tests::{client, serve_with, worker};
    let (_hub, url) = serve_with("127.0.0.1:0", &["--ack-wait", "1"]);
    let frozen = worker(&url, "naps", &["--name", "frozen"]);
    let _b = worker(&url, "naps", &["--name", "b"]);
    let _c = worker(&url, "naps", &["--name", "c"]);
    let c = client(&url).await;
    let signal = |sig: &str| {
        let sent = std::process::Command::new("kill")
            .args([sig, &frozen.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    };
    let acked_by = |stats: &taskhub_client::Stats, name: &str| {
        stats
            .workers
            .iter()
            .find(|w| w.name.as_deref() == Some(name))
            .map_or(0, |w| w.acked)
    };
    let url2 = url.clone();
    let run = tokio::spawn(async move {
        let p = client(&url2).await;
        p.submit_within(
            "naps",
            vec![json!(30); 600],
            PutOptions::new().kind("sleep"),
            Some(Duration::from_secs(60)),
        )
        .await
    });
    // Freeze it once it is working (it holds leases then).
    taskhub_tests::eventually(Duration::from_secs(20), || async {
        let s = c.stats().await.unwrap();
        (acked_by(&s, "frozen") >= 5).then_some(())
    })
    .await
    .expect("the worker to freeze gets going");
    signal("-STOP");
    let replies = run.await.unwrap().expect("every task completes");
    let failed: Vec<_> = replies.iter().filter(|r| !r.ok).collect();
    assert!(failed.is_empty(), "dead-lettered: {failed:?}");
    let stats = c.stats().await.unwrap();
    let naps = stats.queue("naps").unwrap();
    assert_eq!(
        (naps.depth, naps.in_flight, naps.dead),
        (0, 0, 0),
        "{stats:?}"
    );

    // Thawed, it takes tasks again.
    let before = acked_by(&stats, "frozen");
    signal("-CONT");
    let more = c
        .submit_within(
            "naps",
            vec![json!(30); 60],
            PutOptions::new().kind("sleep"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(more.iter().all(|r| r.ok));
    let after = acked_by(&c.stats().await.unwrap(), "frozen");
    assert!(
        after > before,
        "the thawed worker rejoined ({before} -> {after})"
    );
}
