//! docs/protocol.md is enough to write a client: a Python one, standard library only, written from
//! the document, authenticates, puts, consumes, acks, receives replies, deletes a queue, and sees
//! the documented errors and close codes (1008 after a wrong key, 1009 after an oversized frame),
//! and authenticates with a token (refused `stats`, allowed to consume), against a real hub; and
//! does it all again over `wss://`.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use taskhub_tests::pki::TestCa;
use taskhub_tests::{KEY, hub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_written_from_the_protocol_document_works() {
    let hub = hub(|_| {}).await;
    let token = taskhub_tests::client(&hub.url())
        .await
        .create_token(
            taskhub_client::Rights {
                consume: vec![taskhub_core::Pattern::new("tasks").unwrap()],
                ..Default::default()
            },
            Duration::from_secs(600),
        )
        .await
        .unwrap()
        .token;
    run_client(&hub, None, Some(token)).await;
    hub.stop().await;
}

/// The same client over `wss://`, trusting a CA made for the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_speaks_wss() {
    let ca = TestCa::new("python");
    let hub = hub(|c| c.tls = Some(ca.issue("hub"))).await;
    run_client(&hub, Some(ca.ca_file()), None).await;
    hub.stop().await;
}

/// Run client.py against `hub` (over TLS trusting `ca`, when given; with a consume-only token
/// for `tasks`, when given) and check what it printed.
async fn run_client(hub: &taskhub::Running, ca: Option<PathBuf>, token: Option<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client.py");
    let addr = hub.addr();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("python3");
        cmd.arg(script).args([
            addr.ip().to_string(),
            addr.port().to_string(),
            KEY.to_string(),
        ]);
        if let Some(ca) = ca {
            cmd.arg(ca);
        }
        if let Some(token) = token {
            cmd.env("TASKHUB_TOKEN", token);
        }
        cmd.output().expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "3411 * 3411 = 11634921\n1605 * 1605 = 2576025\n");
}
