//! Every way the hub ends a session: the documented error first, then a Close frame with the
//! documented code, every time. The third-party client found about half of these closes carried
//! no code at all (1005), so each case runs many times.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use taskhub_core::auth::hex;
use taskhub_tests::{KEY, Raw, hub};

const RUNS: usize = 24;

/// How a session ended: the error codes it got, then the close code and reason.
async fn ending(raw: &mut Raw) -> (Vec<String>, Option<(u16, String)>) {
    let (seen, frame) = raw.until_close_frame().await;
    let codes = seen
        .iter()
        .filter(|m| m["type"] == "error")
        .map(|m| m["code"].as_str().unwrap_or("?").to_string())
        .collect();
    (codes, frame)
}

fn expect(code: &str, close: u16, reason: &str) -> (Vec<String>, Option<(u16, String)>) {
    (vec![code.to_string()], Some((close, reason.to_string())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refusals_always_carry_their_close_code() {
    let hub = hub(|_| {}).await;
    for _ in 0..RUNS {
        // Not an auth message first.
        let mut raw = Raw::connect(&hub.url()).await;
        raw.recv().await.unwrap();
        raw.send_text("not json").await;
        assert_eq!(
            ending(&mut raw).await,
            expect("auth_required", 1008, "authentication required")
        );

        // A wrong key.
        let (mut raw, answer) = Raw::authenticate(&hub.url(), "wrong-key", "producer").await;
        assert_eq!(answer["code"], "auth_failed");
        assert_eq!(
            ending(&mut raw).await,
            (vec![], Some((1008, "authentication failed".into())))
        );

        // A malformed proof.
        let mut raw = Raw::connect(&hub.url()).await;
        raw.recv().await.unwrap();
        raw.send(
            json!({"type": "auth", "key_id": "default", "client_nonce": hex(&[1; 32]),
                        "proof": "ABC"}),
        )
        .await;
        assert_eq!(
            ending(&mut raw).await,
            expect("auth_failed", 1008, "authentication failed")
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_always_carry_their_close_code() {
    let hub = hub(|c| {
        c.handshake_timeout = Duration::from_millis(200);
        c.ping_interval = Duration::from_millis(1_000);
        c.idle_timeout = Duration::from_millis(1_050);
    })
    .await;
    let url = hub.url();
    let silent = (0..RUNS).map(|_| async {
        let mut raw = Raw::connect(&url).await;
        raw.recv().await.unwrap();
        ending(&mut raw).await
    });
    for end in join_all(silent).await {
        assert_eq!(end, expect("auth_timeout", 1008, "handshake timeout"));
    }
    let idle = (0..RUNS).map(|_| async {
        let mut raw = Raw::session(&url, "producer").await;
        // Reading would answer the hub's ping (at 1 s) with a pong, which counts as activity.
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        ending(&mut raw).await
    });
    for end in join_all(idle).await {
        assert_eq!(end, expect("idle_timeout", 1001, "idle timeout"));
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_always_carry_their_close_code() {
    let hub = hub(|c| c.max_message_bytes = 4096).await;
    for _ in 0..RUNS {
        let mut big = Raw::session(&hub.url(), "producer").await;
        big.send_text(&format!(
            r#"{{"type":"put","queue":"t","payload":"{}"}}"#,
            "x".repeat(8192)
        ))
        .await;
        assert_eq!(
            ending(&mut big).await,
            expect("too_large", 1009, "message too large")
        );
    }
    hub.stop().await;
    // A closed connection frees its slot only once the hub has finished closing it, so the
    // refusals get a hub of their own.
    let hub = taskhub_tests::hub(|c| c.max_connections = 2).await;
    let _a = Raw::session(&hub.url(), "producer").await;
    let _b = Raw::session(&hub.url(), "producer").await;
    for _ in 0..RUNS {
        // Sessions are counted once they authenticate: the refusal answers the `auth`.
        let (mut over, answer) = Raw::authenticate(&hub.url(), KEY, "producer").await;
        assert_eq!(answer["code"], "too_many_connections", "{answer}");
        assert_eq!(
            ending(&mut over).await,
            (vec![], Some((1013, "too many connections".to_string())))
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_always_carries_its_close_code() {
    for _ in 0..4 {
        let hub = hub(|_| {}).await;
        let mut sessions = Vec::new();
        for _ in 0..8 {
            sessions.push(Raw::session(&hub.url(), "producer").await);
        }
        let stopped = tokio::spawn(hub.stop());
        let ends = join_all(sessions.iter_mut().map(ending)).await;
        for end in ends {
            assert_eq!(end, expect("shutting_down", 1001, "hub shutting down"));
        }
        stopped.await.unwrap();
    }
}
