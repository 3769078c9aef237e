//! Queues over real sockets: FIFO, get with timeout, the prefetch window, requeue on close.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use taskhub_client::PutOptions;
use taskhub_tests::{Raw, client, hub};

#[tokio::test]
async fn tasks_come_out_in_the_order_they_went_in() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let payloads: Vec<Value> = (0..200).map(|n| json!(n)).collect();
    let ids = c
        .put_many("tasks", payloads.clone(), PutOptions::default())
        .await
        .unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    let mut got = Vec::new();
    while let Some(t) = c.get("tasks", Duration::ZERO).await.unwrap() {
        got.push(t.payload);
    }
    assert_eq!(got, payloads);
    hub.stop().await;
}

#[tokio::test]
async fn get_answers_empty_when_its_timeout_passes() {
    let hub = hub(|_| {}).await;
    let mut raw = Raw::session(&hub.url(), "producer").await;
    let started = std::time::Instant::now();
    let answer = raw
        .request(
            json!({"type": "get", "queue": "nothing", "timeout_ms": 200}),
            1,
        )
        .await;
    assert_eq!(
        answer,
        json!({"type": "empty", "req": 1, "queue": "nothing"})
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    hub.stop().await;
}

#[tokio::test]
async fn a_waiting_get_receives_a_task_put_later() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let url = hub.url();
    let producer = tokio::spawn(async move {
        let p = client(&url).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.put("later", json!("hello"), PutOptions::default())
            .await
            .unwrap();
    });
    let task = c.get("later", Duration::from_secs(10)).await.unwrap();
    assert_eq!(task.map(|t| t.payload), Some(json!("hello").into()));
    producer.await.unwrap();
    hub.stop().await;
}

async fn deliveries(raw: &mut Raw, quiet: Duration) -> Vec<Value> {
    let mut tasks = Vec::new();
    while let Ok(Some(msg)) = raw.recv_within(quiet).await {
        if msg["type"] == "deliver" {
            tasks.push(msg["task"].clone());
        }
    }
    tasks
}

#[tokio::test]
async fn a_consumer_never_holds_more_than_its_prefetch() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    c.put_many("tasks", (0..10).map(|n| json!(n)), PutOptions::default())
        .await
        .unwrap();
    let mut w = Raw::session(&hub.url(), "worker").await;
    let ok = w
        .request(
            json!({"type": "consume", "queues": ["tasks"], "prefetch": 3}),
            1,
        )
        .await;
    assert_eq!(ok["type"], "ok");
    let first = deliveries(&mut w, Duration::from_millis(300)).await;
    assert_eq!(
        first
            .iter()
            .map(|t| t["payload"].clone())
            .collect::<Vec<_>>(),
        vec![json!(0), json!(1), json!(2)]
    );
    let stats = c.stats().await.unwrap();
    assert_eq!((stats.queues[0].depth, stats.queues[0].in_flight), (7, 3));

    w.send(json!({"type": "ack", "task": first[0]["id"], "result": "done"}))
        .await;
    let next = deliveries(&mut w, Duration::from_millis(300)).await;
    assert_eq!(next.len(), 1, "one ack frees one slot");
    assert_eq!(next[0]["payload"], json!(3));
    hub.stop().await;
}

#[tokio::test]
async fn tasks_held_by_a_closed_session_go_back_to_the_front() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    c.put_many("tasks", (0..5).map(|n| json!(n)), PutOptions::default())
        .await
        .unwrap();
    let mut w1 = Raw::session(&hub.url(), "worker").await;
    w1.request(
        json!({"type": "consume", "queues": ["tasks"], "prefetch": 3}),
        1,
    )
    .await;
    assert_eq!(
        deliveries(&mut w1, Duration::from_millis(300)).await.len(),
        3
    );
    drop(w1); // the worker vanishes mid-task, without a close handshake

    let mut w2 = Raw::session(&hub.url(), "worker").await;
    w2.request(
        json!({"type": "consume", "queues": ["tasks"], "prefetch": 10}),
        1,
    )
    .await;
    let again = deliveries(&mut w2, Duration::from_millis(500)).await;
    let payloads: Vec<Value> = again.iter().map(|t| t["payload"].clone()).collect();
    assert_eq!(payloads, (0..5).map(|n| json!(n)).collect::<Vec<_>>());
    let attempts: Vec<Value> = again.iter().map(|t| t["attempt"].clone()).collect();
    assert_eq!(
        attempts,
        vec![json!(2), json!(2), json!(2), json!(1), json!(1)]
    );
    hub.stop().await;
}

/// The next text frame, exactly as the hub sent it.
async fn next_text(raw: &mut Raw) -> String {
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), raw.ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("connection open")
            .expect("a readable frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
            return t.to_string();
        }
    }
}

/// Payloads and results pass through the hub byte for byte (docs/protocol.md): spacing, key
/// order, an integer beyond 64 bits and a float with more digits than a double holds reach the
/// worker, and the result reaches the reply queue, exactly as written.
#[tokio::test]
async fn payloads_and_results_pass_through_byte_for_byte() {
    let hub = hub(|_| {}).await;
    let mut producer = Raw::session(&hub.url(), "producer").await;
    let mut worker = Raw::session(&hub.url(), "worker").await;
    let payload = r#"{ "z" : 18446744073709551616123, "a": [0.1000000000000000055511151231257827, "é\u00e9"] }"#;
    let result = r#"[ 1e400 , {"b":2,"a":1} ]"#;
    producer
        .send_text(&format!(
            r#"{{"type":"put","req":1,"queue":"exact","reply_to":"exact-out","payload":{payload}}}"#
        ))
        .await;
    assert_eq!(producer.recv().await.unwrap()["type"], "queued");
    worker
        .request(
            json!({"type": "consume", "queues": ["exact"], "prefetch": 1}),
            1,
        )
        .await;
    let deliver = next_text(&mut worker).await;
    assert!(
        deliver.contains(&format!(r#""payload":{payload}"#)),
        "{deliver}"
    );
    let id: Value = serde_json::from_str::<Value>(&deliver).unwrap()["task"]["id"].clone();
    worker
        .send_text(&format!(
            r#"{{"type":"ack","req":2,"task":{id},"result":{result}}}"#
        ))
        .await;
    producer
        .send(json!({"type": "get", "req": 3, "queue": "exact-out", "timeout_ms": 5000}))
        .await;
    let got = next_text(&mut producer).await;
    assert!(got.contains(&format!(r#""result":{result}"#)), "{got}");
    hub.stop().await;
}
