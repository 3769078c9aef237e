//! The `taskhub-worker` binary's own behaviour, without a hub.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_taskhub-worker");

#[test]
fn a_bad_queue_name_is_named_and_refused() {
    let out = Command::new(BIN)
        .args([
            "--hub",
            "ws://127.0.0.1:1",
            "--key",
            "k",
            "--queue",
            "no spaces",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"no spaces\""), "{err}");
}

#[test]
fn without_a_hub_it_retries_and_a_signal_stops_it_cleanly() {
    // Port 1 on loopback refuses connections.
    let mut child = Command::new(BIN)
        .args([
            "--hub",
            "ws://127.0.0.1:1",
            "--key",
            "k",
            "--queue",
            "tasks",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut retrying = Vec::new();
    while retrying.len() < 2 {
        let line = lines.next().expect("worker keeps logging").unwrap();
        if line.contains("retrying in") {
            assert!(line.contains("connection refused"), "{line}");
            retrying.push(line);
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "worker did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}
