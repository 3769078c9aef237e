//! Pub/sub: wildcards, unsubscribe, and a subscriber that never reads.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use taskhub_client::Subscriber;
use taskhub_tests::{Raw, client, hub};

#[tokio::test]
async fn patterns_match_tokens_with_star_and_greater_than() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let exact = client(&url).await;
    let one = client(&url).await;
    let rest = client(&url).await;
    let all = client(&url).await;
    let mut exact = exact.subscribe("metrics.cpu").await.unwrap();
    let mut one = one.subscribe("metrics.*").await.unwrap();
    let mut rest = rest.subscribe("metrics.>").await.unwrap();
    let mut all = all.subscribe(">").await.unwrap();

    let p = client(&url).await;
    assert_eq!(p.publish("metrics.cpu", json!(1)).await.unwrap(), 4);
    assert_eq!(p.publish("metrics.cpu.core0", json!(2)).await.unwrap(), 2);
    assert_eq!(p.publish("logs", json!(3)).await.unwrap(), 1);

    assert_eq!(next(&mut exact).await, ("metrics.cpu".into(), json!(1)));
    assert_eq!(next(&mut one).await, ("metrics.cpu".into(), json!(1)));
    assert_eq!(next(&mut rest).await, ("metrics.cpu".into(), json!(1)));
    assert_eq!(
        next(&mut rest).await,
        ("metrics.cpu.core0".into(), json!(2))
    );
    assert_eq!(next(&mut all).await, ("metrics.cpu".into(), json!(1)));
    assert_eq!(next(&mut all).await, ("metrics.cpu.core0".into(), json!(2)));
    assert_eq!(next(&mut all).await, ("logs".into(), json!(3)));

    rest.unsubscribe().await.unwrap();
    assert_eq!(p.publish("metrics.mem", json!(4)).await.unwrap(), 2);
    hub.stop().await;
}

async fn next(sub: &mut Subscriber) -> (String, serde_json::Value) {
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open");
    (m.topic.to_string(), m.payload.to_json_lossy())
}

#[tokio::test]
async fn each_subscriber_is_a_stream_of_its_own_and_dropping_one_unsubscribes() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let c = client(&url).await;
    let mut cpu = c.subscribe("metrics.cpu").await.unwrap();
    let mut everything = c.subscribe("metrics.>").await.unwrap();
    let again = c.subscribe("metrics.>").await.unwrap();
    let p = client(&url).await;
    // One session, however many of its subscribers match: counted once.
    assert_eq!(p.publish("metrics.cpu", json!(1)).await.unwrap(), 1);
    assert_eq!(p.publish("metrics.mem", json!(2)).await.unwrap(), 1);
    assert_eq!(next(&mut cpu).await, ("metrics.cpu".into(), json!(1)));
    assert_eq!(
        next(&mut everything).await,
        ("metrics.cpu".into(), json!(1))
    );
    assert_eq!(
        next(&mut everything).await,
        ("metrics.mem".into(), json!(2))
    );
    // `again` shares the pattern: dropping it keeps the hub sending to `everything`.
    drop(again);
    assert_eq!(p.publish("metrics.mem", json!(3)).await.unwrap(), 1);
    assert_eq!(
        next(&mut everything).await,
        ("metrics.mem".into(), json!(3))
    );
    // Dropping the last subscriber of a pattern unsubscribes the session from it.
    drop(everything);
    let gone = taskhub_tests::eventually(Duration::from_secs(5), || async {
        (p.publish("metrics.mem", json!(4)).await.unwrap() == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the hub stopped sending metrics.mem");
    assert_eq!(p.publish("metrics.cpu", json!(5)).await.unwrap(), 1);
    assert_eq!(next(&mut cpu).await, ("metrics.cpu".into(), json!(5)));
    // The stream ends with the session.
    hub.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while cpu.next().await.is_some() {}
    })
    .await;
    assert!(
        end.is_ok(),
        "the subscriber's stream ended with the session"
    );
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_loses_messages_and_counts_them() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let c = client(&url).await;
    let mut slow = c.subscribe("burst").await.unwrap();
    let p = client(&url).await;
    for n in 0..1_500 {
        p.publish("burst", json!(n)).await.unwrap();
    }
    // The same session still answers; the subscriber kept its first 1,024.
    let counted = taskhub_tests::eventually(Duration::from_secs(10), || async {
        (slow.dropped() == 1_500 - 1_024).then_some(())
    })
    .await;
    assert!(counted.is_some(), "dropped {}", slow.dropped());
    c.stats().await.unwrap();
    assert_eq!(next(&mut slow).await, ("burst".into(), json!(0)));
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
