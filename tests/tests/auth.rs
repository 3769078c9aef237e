//! The handshake: right key, wrong key, no auth, junk, timeout, impostor hub.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use taskhub_client::{AuthReason, Client, ClientError, ConnectOptions};
use taskhub_core::auth::{Secret, client_proof, hex};
use taskhub_tests::{KEY, Raw, client, hub};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn the_right_key_opens_a_session() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.sessions["producer"], 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_a_clear_message() {
    let hub = hub(|_| {}).await;
    let err = Client::connect(ConnectOptions::new(hub.url(), "wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Auth {
                reason: AuthReason::Credentials,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("authentication failed"), "{err}");

    let mut opts = ConnectOptions::new(hub.url(), KEY);
    opts.key_id = "nobody".into();
    let err = Client::connect(opts).await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");

    // Raw: the hub answers auth_failed and closes.
    let (mut raw, answer) = Raw::authenticate(&hub.url(), "wrong", "producer").await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    assert!(raw.until_closed().await.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn requests_before_auth_are_refused_and_the_connection_closed() {
    let hub = hub(|_| {}).await;
    let mut raw = Raw::connect(&hub.url()).await;
    let challenge = raw.recv().await.unwrap();
    assert_eq!(challenge["type"], "challenge");
    assert_eq!(challenge["version"], 1);
    assert_eq!(challenge["nonce"].as_str().unwrap().len(), 64);
    raw.send(json!({"type": "put", "queue": "tasks", "payload": 1}))
        .await;
    let err = raw.recv().await.unwrap();
    assert_eq!(err["code"], "auth_required", "{err}");
    assert!(raw.until_closed().await.is_empty());

    // Nothing was queued by the refused put.
    let c = client(&hub.url()).await;
    assert!(c.get("tasks", Duration::ZERO).await.unwrap().is_none());
    hub.stop().await;
}

#[tokio::test]
async fn junk_before_auth_is_refused() {
    let hub = hub(|_| {}).await;
    for junk in [
        Message::text("not json at all"),
        Message::binary(vec![0u8, 1, 2]),
    ] {
        let mut raw = Raw::connect(&hub.url()).await;
        raw.recv().await.unwrap();
        raw.ws.send(junk).await.unwrap();
        let err = raw.recv().await.unwrap();
        assert_eq!(err["code"], "auth_required", "{err}");
        assert!(raw.until_closed().await.is_empty());
    }
    // A forged proof is refused too.
    let mut raw = Raw::connect(&hub.url()).await;
    raw.recv().await.unwrap();
    raw.send(json!({"type": "auth", "key_id": "default", "client_nonce": hex(&[1; 32]), "proof": hex(&[0; 32])}))
        .await;
    assert_eq!(raw.recv().await.unwrap()["code"], "auth_failed");
    hub.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let hub = hub(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut raw = Raw::connect(&hub.url()).await;
    raw.recv().await.unwrap();
    let err = raw.recv().await.unwrap();
    assert_eq!(err["code"], "auth_timeout", "{err}");
    assert!(raw.until_closed().await.is_empty());
    hub.stop().await;
}

/// A server that answers the challenge dance without knowing the key.
#[tokio::test]
async fn a_client_refuses_a_hub_that_cannot_prove_the_key() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let impostor = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.send(Message::text(
            json!({"type": "challenge", "version": 1, "nonce": hex(&[3; 32])}).to_string(),
        ))
        .await
        .unwrap();
        let _auth = ws.next().await;
        ws.send(Message::text(
            json!({"type": "welcome", "session": 1, "proof": hex(&[0; 32]), "inbox": "_inbox.1",
                   "limits": {"max_message_bytes": 1024, "ack_wait_ms": 1000, "max_prefetch": 10, "max_attempts": 5}})
            .to_string(),
        ))
        .await
        .unwrap();
    });
    let err = Client::connect(ConnectOptions::new(url, KEY))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("could not prove it holds the key"),
        "{err}"
    );
    impostor.await.unwrap();
}

#[tokio::test]
async fn pings_before_auth_are_not_messages() {
    let hub = hub(|_| {}).await;
    let mut raw = Raw::connect(&hub.url()).await;
    let challenge = raw.recv().await.expect("challenge");
    raw.ws
        .send(Message::Ping(vec![1, 2, 3].into()))
        .await
        .unwrap();
    raw.ws.send(Message::Pong(vec![4].into())).await.unwrap();
    let nonce = challenge["nonce"].as_str().unwrap().to_string();
    let client_nonce = hex(&[9u8; 32]);
    let proof = client_proof(&Secret::new(KEY), "default", &nonce, &client_nonce);
    raw.send(json!({"type": "auth", "key_id": "default", "client_nonce": client_nonce, "proof": proof, "role": "producer"}))
        .await;
    let answer = raw.recv().await.expect("answer to auth");
    assert_eq!(answer["type"], "welcome", "{answer}");
    hub.stop().await;
}

#[tokio::test]
async fn hex_must_be_lowercase_as_documented() {
    let hub = hub(|_| {}).await;
    let mut raw = Raw::connect(&hub.url()).await;
    let challenge = raw.recv().await.expect("challenge");
    let nonce = challenge["nonce"].as_str().unwrap().to_string();
    let client_nonce = hex(&[10u8; 32]);
    // The right proof, in uppercase: refused, and the message says why.
    let proof = client_proof(&Secret::new(KEY), "default", &nonce, &client_nonce).to_uppercase();
    raw.send(json!({"type": "auth", "key_id": "default", "client_nonce": client_nonce, "proof": proof, "role": "producer"}))
        .await;
    let answer = raw.recv().await.expect("answer to auth");
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("64 lowercase hex digits"),
        "{answer}"
    );
    hub.stop().await;
}

/// `--key-file` everywhere: `serve` makes the file with a new key when it is missing, and the
/// CLI and `taskhub-worker` read it, so the key never appears on a command line.
#[tokio::test]
async fn a_key_file_keeps_the_key_off_every_command_line() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use taskhub_tests::{Proc, bin};

    let dir = std::env::temp_dir().join(format!("taskhub-keyfile-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hub.key");
    let file_arg = file.to_str().unwrap();
    let mut hub = Proc::spawn(
        Command::new(bin("taskhub"))
            .args(["serve", "--listen", "127.0.0.1:0", "--key-file", file_arg])
            .env_remove("TASKHUB_KEY")
            .stdout(Stdio::piped()),
    );
    let out: Vec<String> = std::io::BufReader::new(hub.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.contains("start a worker"))
        .collect();
    let url = out[0].split_whitespace().last().unwrap().to_string();
    assert!(
        out.iter()
            .any(|l| l.contains(&format!("generated a key into {file_arg}"))),
        "{out:?}"
    );
    let key = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(key.len() >= 32);
    assert!(
        !out.iter()
            .any(|l| l.contains("generated") && l.contains(&key)),
        "the banner does not print a key it wrote to a file: {out:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A worker and the CLI with the file.
    let _w = Proc::spawn(
        Command::new(bin("taskhub-worker"))
            .args(["--hub", &url, "--key-file", file_arg, "--queue", "tasks"])
            .env_remove("TASKHUB_KEY")
            .env("RUST_LOG", "warn"),
    );
    let submit = Command::new(bin("taskhub"))
        .args([
            "--hub",
            &url,
            "--key-file",
            file_arg,
            "submit",
            "tasks",
            "7",
        ])
        .args(["--kind", "square", "--timeout", "20"])
        .env_remove("TASKHUB_KEY")
        .output()
        .unwrap();
    assert!(submit.status.success(), "{submit:?}");
    assert_eq!(
        String::from_utf8_lossy(&submit.stdout).trim(),
        "\"7 * 7 = 49\""
    );
    // Both at once is refused; a missing file is named.
    let both = Command::new(bin("taskhub"))
        .args(["--hub", &url, "--key", "x", "--key-file", file_arg, "stats"])
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    let missing = Command::new(bin("taskhub-worker"))
        .args([
            "--hub",
            &url,
            "--key-file",
            "/nonexistent/hub.key",
            "--queue",
            "q",
        ])
        .env_remove("TASKHUB_KEY")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("cannot read the key file /nonexistent/hub.key"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wrong keys cost time: after five failures an address's attempts are checked one at a time,
/// 200 ms apart, and a right key clears its record.
#[tokio::test]
async fn wrong_keys_from_one_address_are_slowed_down() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let wrong = |url: String| async move {
        let (_raw, answer) = Raw::authenticate(&url, "not-the-key", "worker").await;
        assert_eq!(answer["code"], "auth_failed", "{answer}");
    };
    // The first five are free.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        wrong(url.clone()).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Then one every 200 ms, however many are sent at once.
    let started = std::time::Instant::now();
    let attempts: Vec<_> = (0..5).map(|_| tokio::spawn(wrong(url.clone()))).collect();
    for a in attempts {
        a.await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    // The right key still gets in (after its turn), and then nothing waits.
    let (_ok, answer) = Raw::authenticate(&url, KEY, "producer").await;
    assert_eq!(answer["type"], "welcome", "{answer}");
    let started = std::time::Instant::now();
    let (_ok, answer) = Raw::authenticate(&url, KEY, "producer").await;
    assert_eq!(answer["type"], "welcome", "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    hub.stop().await;
}
