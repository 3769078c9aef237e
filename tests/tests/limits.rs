//! Bad input: oversized frames, malformed JSON, unknown types, full queues, too many connections.
//! One client's bad input never harms another.

use std::time::Duration;

use serde_json::json;
use taskhub_client::{ClientError, PutOptions};
use taskhub_core::ErrorCode;
use taskhub_tests::{Raw, client, hub};

#[tokio::test]
async fn an_oversized_frame_closes_only_that_client() {
    let hub = hub(|c| c.max_message_bytes = 64 * 1024).await;
    let bystander = client(&hub.url()).await;
    bystander
        .put("tasks", json!("before"), &PutOptions::default())
        .await
        .unwrap();

    let mut big = Raw::session(&hub.url(), "producer").await;
    let huge = format!(
        r#"{{"type":"put","queue":"tasks","payload":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    big.send_text(&huge).await;
    let seen = big.until_closed().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["code"], "too_large");
    assert!(
        seen[0]["message"].as_str().unwrap().contains("65536"),
        "{}",
        seen[0]
    );

    // The other client carries on, and the oversized put queued nothing.
    bystander
        .put("tasks", json!("after"), &PutOptions::default())
        .await
        .unwrap();
    let a = bystander
        .get("tasks", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let b = bystander
        .get("tasks", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.payload, b.payload), (json!("before"), json!("after")));
    assert!(
        bystander
            .get("tasks", Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    hub.stop().await;
}

#[tokio::test]
async fn malformed_json_gets_an_error_and_the_session_stays_usable() {
    let hub = hub(|_| {}).await;
    let mut raw = Raw::session(&hub.url(), "producer").await;
    raw.send_text("{\"type\": \"put\", oops").await;
    let e = raw.recv().await.unwrap();
    assert_eq!(e["code"], "bad_frame", "{e}");

    let e = raw.request(json!({"type": "frobnicate"}), 7).await;
    assert_eq!(
        (e["code"].as_str(), e["req"].as_u64()),
        (Some("unknown_type"), Some(7))
    );
    assert!(e["message"].as_str().unwrap().contains("frobnicate"));

    let e = raw.request(json!({"type": "put", "payload": 1}), 8).await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("queue"), "{e}");

    let e = raw
        .request(json!({"type": "get", "queue": "no spaces allowed"}), 9)
        .await;
    assert_eq!(e["code"], "bad_request");

    raw.ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2,
        ]))
        .await
        .unwrap();
    assert_eq!(raw.recv().await.unwrap()["code"], "bad_frame");

    // Still usable.
    let ok = raw
        .request(json!({"type": "put", "queue": "q", "payload": 1}), 10)
        .await;
    assert_eq!(ok["type"], "queued", "{ok}");
    hub.stop().await;
}

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_full_queue_refuses_puts_by_name() {
    let hub = hub(|c| c.broker.max_queue_len = 3).await;
    let c = client(&hub.url()).await;
    for n in 0..3 {
        c.put("small", json!(n), &PutOptions::default())
            .await
            .unwrap();
    }
    let err = c
        .put("small", json!(3), &PutOptions::default())
        .await
        .unwrap_err();
    match &err {
        ClientError::Hub { code, message } => {
            assert_eq!(*code, ErrorCode::QueueFull);
            assert!(message.contains("small"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Draining makes room again.
    c.get("small", Duration::ZERO).await.unwrap();
    c.put("small", json!(4), &PutOptions::default())
        .await
        .unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_a_reason() {
    let hub = hub(|c| c.max_connections = 2).await;
    let _a = Raw::session(&hub.url(), "producer").await;
    let _b = Raw::session(&hub.url(), "producer").await;
    let mut c = Raw::connect(&hub.url()).await;
    let seen = c.until_closed().await;
    assert!(
        seen.iter().any(|m| m["code"] == "too_many_connections"),
        "{seen:?}"
    );
    drop(_a);
    // The slot frees up once a connection ends.
    let ok = taskhub_tests::eventually(Duration::from_secs(5), || async {
        let (_raw, answer) = Raw::authenticate(&hub.url(), taskhub_tests::KEY, "producer").await;
        (answer["type"] == "welcome").then_some(())
    })
    .await;
    assert!(ok.is_some());
    hub.stop().await;
}

#[tokio::test]
async fn the_hub_refuses_puts_past_its_byte_budget_and_recovers() {
    let hub = hub(|c| {
        c.max_message_bytes = 1024;
        c.broker.max_stored_bytes = 2048;
    })
    .await;
    let c = client(&hub.url()).await;
    let big = || json!("y".repeat(898)); // 900 bytes as JSON
    c.put("a", big(), &PutOptions::default()).await.unwrap();
    c.put("b", big(), &PutOptions::default()).await.unwrap();
    let err = c.put("c", big(), &PutOptions::default()).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Hub { code: ErrorCode::QueueFull, message } if message.contains("max_stored_bytes")),
        "{err}"
    );
    assert_eq!(c.stats().await.unwrap().stored_bytes, 1800);
    c.get("a", Duration::ZERO).await.unwrap().unwrap();
    c.put("c", big(), &PutOptions::default()).await.unwrap();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_and_others_carry_on() {
    let hub = hub(|c| {
        c.outbox = 16;
        c.broker.max_prefetch = 8;
    })
    .await;
    let _worker = taskhub_tests::in_process_worker(&hub.url(), "big", 2);
    let observer = client(&hub.url()).await;

    // A producer that asks for large results in its inbox and never reads them. Once its socket
    // buffers and its outbox are full, the hub must close it rather than hold everything.
    let (mut deaf, welcome) = Raw::authenticate(&hub.url(), taskhub_tests::KEY, "producer").await;
    let inbox = welcome["inbox"].as_str().unwrap().to_string();
    let payload = "z".repeat(64 * 1024);
    let sender = tokio::spawn(async move {
        for _ in 0..400 {
            let put = json!({"type": "put", "queue": "big", "kind": "echo", "payload": payload,
                             "reply_to": inbox});
            // Sends start failing once the hub has closed the session.
            if deaf.ws.send(Message::text(put.to_string())).await.is_err() {
                break;
            }
        }
        deaf
    });

    let gone = taskhub_tests::eventually(Duration::from_secs(30), || async {
        let s = observer.stats().await.unwrap();
        (s.sessions["producer"] == 1).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the deaf producer is still connected");
    // The connection really is closed: draining it ends.
    let mut deaf = sender.await.unwrap();
    let _ = deaf.until_closed().await;
    // Everyone else carries on.
    observer
        .put("big", json!("after"), &PutOptions::default())
        .await
        .unwrap();
    let s = observer.stats().await.unwrap();
    assert_eq!(s.sessions["worker"], 1, "the worker was not harmed");
    hub.stop().await;
}
