//! The `taskhub` binary: demo, serve, and the errors a user can act on.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_taskhub");

struct Hub {
    child: Child,
    url: String,
    key: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ask a process to stop, as `kill` or a service manager would.
fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
}

/// `taskhub serve` on a free port, without --key: it must generate and print one.
fn serve_generated_key() -> Hub {
    serve_generated_key_with(&[])
}

fn serve_generated_key_with(extra: &[&str]) -> Hub {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("TASKHUB_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.split_whitespace().last().unwrap().to_string();
    assert!(url.starts_with("ws://127.0.0.1:"), "{first}");
    // Then where it keeps tasks: without --data-dir, in memory, and it says what that means.
    let storage = lines.next().unwrap().unwrap();
    if !extra.contains(&"--data-dir") {
        assert!(
            storage.contains("storage: memory only") && storage.contains("--data-dir"),
            "{storage}"
        );
    }
    let join = lines.next().unwrap().unwrap();
    assert!(
        join.contains("http://127.0.0.1:") && join.contains("/#token=th1."),
        "{join}"
    );
    let dashboard = lines.next().unwrap().unwrap();
    assert!(dashboard.contains("/dashboard#token=th1."), "{dashboard}");
    let second = lines.next().unwrap().unwrap();
    assert!(second.contains("generated"), "{second}");
    let key = second.split_whitespace().last().unwrap().to_string();
    assert!(key.len() >= 32, "generated key is long: {key}");
    // The key is printed once, in that line, and never in a link.
    assert!(
        !join.contains(&key) && !dashboard.contains(&key),
        "{join}\n{dashboard}"
    );
    Hub { child, url, key }
}

fn taskhub(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("TASKHUB_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hub_that_is_not_running_is_named() {
    let (ok, _, err) = taskhub(&["stats", "--hub", "ws://127.0.0.1:1", "--key", "k"]);
    assert!(!ok);
    assert!(
        err.contains(
            "cannot connect to ws://127.0.0.1:1: connection refused (is taskhub serve running?)"
        ),
        "{err}"
    );
}

#[test]
fn serve_generates_a_key_and_refuses_wrong_ones() {
    let hub = serve_generated_key();
    let (ok, _, err) = taskhub(&["stats", "--hub", &hub.url, "--key", "wrong"]);
    assert!(!ok);
    assert!(err.contains("authentication failed"), "{err}");
    let (ok, _, err) = taskhub(&["stats", "--hub", &hub.url]);
    assert!(!ok);
    assert!(err.contains("no key"), "{err}");
    // Flags may also come before the subcommand.
    let (ok, out, err) = taskhub(&["--hub", &hub.url, "--key", &hub.key, "stats"]);
    assert!(ok, "{err}");
    assert!(out.contains("sessions:"), "{out}");
}

#[test]
fn get_on_an_empty_queue_says_so_and_fails() {
    let hub = serve_generated_key();
    let (ok, _, err) = taskhub(&[
        "get",
        "--hub",
        &hub.url,
        "--key",
        &hub.key,
        "idle",
        "--timeout",
        "0.3",
    ]);
    assert!(!ok);
    assert!(err.contains("queue idle is empty after 300ms"), "{err}");

    let (ok, _, err) = taskhub(&["put", "--hub", &hub.url, "--key", &hub.key, "q", "not-json"]);
    assert!(!ok);
    assert!(err.contains("\"not-json\" is not JSON"), "{err}");
}

#[test]
fn pub_and_get_round_trip_through_the_cli() {
    let hub = serve_generated_key();
    let k = hub.key.as_str();
    let u = hub.url.as_str();
    let (ok, out, err) = taskhub(&[
        "put",
        "--hub",
        u,
        "--key",
        k,
        "letters",
        "\"a\"",
        "{\"b\":1}",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    let (ok, out, err) = taskhub(&["get", "--hub", u, "--key", k, "letters", "--count", "2"]);
    assert!(ok, "{err}");
    assert_eq!(out, "\"a\"\n{\"b\":1}\n");
    let (ok, out, _) = taskhub(&["pub", "--hub", u, "--key", k, "news.today", "1"]);
    assert!(ok);
    assert_eq!(out.trim(), "delivered to 0 subscriber(s)");
}

#[test]
fn sub_prints_each_matching_message_as_a_json_line() {
    let hub = serve_generated_key();
    let (u, k) = (hub.url.as_str(), hub.key.as_str());
    let mut sub = Command::new(BIN)
        .args(["sub", "--hub", u, "--key", k, "news.>"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    // Publish until the subscription is in place (the publisher is told how many received it).
    let started = std::time::Instant::now();
    loop {
        let (ok, out, err) = taskhub(&["pub", "--hub", u, "--key", k, "news.today", "{\"n\":1}"]);
        assert!(ok, "{err}");
        if out.trim() == "delivered to 1 subscriber(s)" {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "subscriber never appeared"
        );
    }
    let (ok, _, _) = taskhub(&["pub", "--hub", u, "--key", k, "weather.today", "2"]);
    assert!(ok);
    let (ok, _, _) = taskhub(&[
        "pub",
        "--hub",
        u,
        "--key",
        k,
        "news.sport.final",
        "\"goal\"",
    ]);
    assert!(ok);
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, r#"{"payload":{"n":1},"topic":"news.today"}"#);
    let second = lines.next().unwrap().unwrap();
    assert_eq!(second, r#"{"payload":"goal","topic":"news.sport.final"}"#);
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn sigterm_stops_serve_gracefully_and_closes_sessions() {
    let mut hub = serve_generated_key();
    let sub = Command::new(BIN)
        .args(["sub", "--hub", &hub.url, "--key", &hub.key, "x"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the subscriber's session is registered.
    let started = std::time::Instant::now();
    loop {
        let (ok, out, _) = taskhub(&["stats", "--hub", &hub.url, "--key", &hub.key]);
        if ok && out.contains("producer 2") {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "subscriber never connected: {out}"
        );
    }
    sigterm(&hub.child);
    let status = hub.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The subscriber was told why its session ended.
    let out = sub.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shutting down"), "{err}");
}

#[test]
fn the_hub_never_logs_its_key() {
    let key = "s3cret-key-that-must-not-leak";
    let mut hub = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--key", key])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hub.stdout.take().unwrap()).lines();
    let url = lines
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    // Good and bad sessions, requests and errors: everything that makes the hub log.
    assert!(taskhub(&["put", "--hub", &url, "--key", key, "q", "1"]).0);
    assert!(taskhub(&["get", "--hub", &url, "--key", key, "q"]).0);
    assert!(!taskhub(&["stats", "--hub", &url, "--key", "wrong-key"]).0);
    assert!(!taskhub(&["get", "--hub", &url, "--key", key, "q", "--timeout", "0"]).0);
    sigterm(&hub);
    let out = hub.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.contains("authentication failed"),
        "the hub logged at trace level:\n{logs}"
    );
    assert!(!logs.contains(key), "the key leaked into the logs:\n{logs}");
    assert!(
        !logs.contains("wrong-key"),
        "a presented key leaked into the logs:\n{logs}"
    );
}

#[test]
fn serve_prints_a_join_link_for_each_bundle() {
    let dir = std::env::temp_dir().join(format!("taskhub-cli-bundles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("resize.js"), dir.join("thumbs.js"));
    std::fs::write(&a, "export function resize(p) { return p; }\n").unwrap();
    std::fs::write(&b, "export async function thumb(p) { return p; }\n").unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--key", "k"])
        .arg("--handlers-js")
        .arg(&a)
        .arg("--handlers-js")
        .arg(&b)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut hub = Hub {
        child,
        url: String::new(),
        key: "k".into(),
    };
    let lines: Vec<String> = BufReader::new(hub.child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .take_while(|l| !l.contains("/dashboard#"))
        .collect();
    let joins: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("/#token=th1."))
        .collect();
    assert_eq!(joins.len(), 2, "{lines:?}");
    assert!(joins[0].contains("&queue=tasks&bundle=resize"), "{lines:?}");
    assert!(joins[1].contains("&queue=tasks&bundle=thumbs"), "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An operator deletes a queue by name; queues nothing uses go by themselves after the grace.
#[test]
fn queues_can_be_deleted_and_unused_ones_go_by_themselves() {
    let hub = serve_generated_key_with(&["--queue-idle-grace", "1"]);
    let (u, k) = (hub.url.as_str(), hub.key.as_str());
    let queues = || {
        let (ok, out, err) = taskhub(&["stats", "--hub", u, "--key", k, "--json"]);
        assert!(ok, "{err}");
        let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
        stats["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (ok, _, err) = taskhub(&["put", "--hub", u, "--key", k, "jobs", "1", "2", "3"]);
    assert!(ok, "{err}");
    let (ok, out, err) = taskhub(&["queue", "delete", "--hub", u, "--key", k, "jobs"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "jobs: dropped 3 ready task(s); queue deleted");
    assert!(!queues().contains(&"jobs".to_string()));
    let (ok, _, err) = taskhub(&["queue", "delete", "--hub", u, "--key", k, "jobs"]);
    assert!(!ok);
    assert!(err.contains("no queue named jobs"), "{err}");

    // A get that waited made a queue; a second later nothing uses it and it is gone.
    let (ok, _, _) = taskhub(&["get", "--hub", u, "--key", k, "once", "--timeout", "0.2"]);
    assert!(!ok);
    assert!(queues().contains(&"once".to_string()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while queues().contains(&"once".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the unused queue was never dropped"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
