//! The lease timer over real sockets. (The exact timing rules are tested under a manual clock in
//! the hub's broker tests; this checks the timer is wired to them.)

use std::time::Duration;

use serde_json::json;
use taskhub_tests::{Raw, hub};

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
