//! docs/protocol.md is enough to write a client: a Python one, standard library only, written from
//! the document, authenticates, puts, consumes, acks, receives replies, deletes a queue, and sees
//! the documented errors and close codes (1008 after a wrong key, 1009 after an oversized frame),
//! and authenticates with a token (refused `stats`, allowed to consume), against a real hub.

use std::path::Path;
use std::process::Command;

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
            std::time::Duration::from_secs(600),
        )
        .await
        .unwrap()
        .token;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client.py");
    let addr = hub.addr();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("TASKHUB_TOKEN", token)
            .args([
                addr.ip().to_string(),
                addr.port().to_string(),
                KEY.to_string(),
            ])
            .output()
            .expect("python3 runs")
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
    hub.stop().await;
}
