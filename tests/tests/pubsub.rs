//! Pub/sub: wildcards, unsubscribe, and a subscriber that never reads.

use std::time::Duration;

use serde_json::json;
use taskhub_tests::{Raw, client, hub};

#[tokio::test]
async fn patterns_match_tokens_with_star_and_greater_than() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let exact = client(&url).await;
    let one = client(&url).await;
    let rest = client(&url).await;
    let all = client(&url).await;
    exact.subscribe("metrics.cpu").await.unwrap();
    one.subscribe("metrics.*").await.unwrap();
    rest.subscribe("metrics.>").await.unwrap();
    all.subscribe(">").await.unwrap();

    let p = client(&url).await;
    assert_eq!(p.publish("metrics.cpu", json!(1)).await.unwrap(), 4);
    assert_eq!(p.publish("metrics.cpu.core0", json!(2)).await.unwrap(), 2);
    assert_eq!(p.publish("logs", json!(3)).await.unwrap(), 1);

    let next = |c| async move {
        let c: &taskhub_client::Client = c;
        tokio::time::timeout(Duration::from_secs(5), c.next_message())
            .await
            .expect("a message")
            .map(|(t, v)| (t.to_string(), v.to_json_lossy()))
    };
    assert_eq!(next(&exact).await, Some(("metrics.cpu".into(), json!(1))));
    assert_eq!(next(&one).await, Some(("metrics.cpu".into(), json!(1))));
    assert_eq!(next(&rest).await, Some(("metrics.cpu".into(), json!(1))));
    assert_eq!(
        next(&rest).await,
        Some(("metrics.cpu.core0".into(), json!(2)))
    );
    assert_eq!(next(&all).await, Some(("metrics.cpu".into(), json!(1))));
    assert_eq!(
        next(&all).await,
        Some(("metrics.cpu.core0".into(), json!(2)))
    );
    assert_eq!(next(&all).await, Some(("logs".into(), json!(3))));

    rest.unsubscribe("metrics.>").await.unwrap();
    assert_eq!(p.publish("metrics.mem", json!(4)).await.unwrap(), 2);
    hub.stop().await;
}

#[tokio::test]
async fn bad_topics_and_patterns_are_named() {
    let hub = hub(|_| {}).await;
    let mut raw = Raw::session(&hub.url(), "producer").await;
    let e = raw
        .request(json!({"type": "publish", "topic": "a.*", "payload": 1}), 1)
        .await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("a.*"), "{e}");
    let e = raw
        .request(json!({"type": "subscribe", "pattern": "a.>.b"}), 2)
        .await;
    assert_eq!(e["code"], "bad_request");
    hub.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_loses_messages_not_the_hub() {
    let hub = hub(|c| {
        c.outbox = 64;
        c.broker.max_prefetch = 16;
    })
    .await;
    // A raw subscriber that never reads its socket.
    let mut deaf = Raw::session(&hub.url(), "producer").await;
    deaf.request(json!({"type": "subscribe", "pattern": "flood"}), 1)
        .await;
    let p = client(&hub.url()).await;
    let payload = json!("x".repeat(16 * 1024));
    for _ in 0..1_500 {
        assert_eq!(p.publish("flood", payload.clone()).await.unwrap(), 1);
    }
    // The publisher and everyone else carry on, and the deaf subscriber is still connected.
    let stats = p.stats().await.unwrap();
    assert_eq!(stats.sessions["producer"], 2);
    hub.stop().await;
}
