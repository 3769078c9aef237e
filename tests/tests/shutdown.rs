//! Graceful shutdown: sessions get a Close frame and `run` returns once they are gone.

use std::time::Duration;

use serde_json::json;
use taskhub_tests::{Raw, hub};

#[tokio::test]
async fn stopping_the_hub_closes_every_session_with_a_reason() {
    let hub = hub(|_| {}).await;
    let mut p = Raw::session(&hub.url(), "producer").await;
    p.request(json!({"type": "put", "queue": "t", "payload": 1}), 1)
        .await;
    let mut w = Raw::session(&hub.url(), "worker").await;
    w.request(
        json!({"type": "consume", "queues": ["t"], "prefetch": 1}),
        1,
    )
    .await;
    assert_eq!(w.recv().await.unwrap()["type"], "deliver");

    let stopped = tokio::spawn(hub.stop());
    let seen = w.until_closed().await;
    assert!(
        seen.iter().any(|m| m["code"] == "shutting_down"),
        "{seen:?}"
    );
    let frame = p.until_closed().await;
    assert!(
        frame.iter().any(|m| m["code"] == "shutting_down"),
        "{frame:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("run returns after sessions end")
        .unwrap();
}
