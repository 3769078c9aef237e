//! Binary payloads and results: bytes travel as bytes (binary frames, no base64) from a producer
//! through a real hub to a real `taskhub-worker` process and back, into results queues and
//! dead-letter entries, and through `--exec` commands and pub/sub; JSON still works beside them.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_core::Payload;
use taskhub_tests::{SubmitWithin, cli, client, serve, worker};

/// Every byte value, then a stretch long enough to span many socket reads.
fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 256) as u8).collect()
}

fn bytes_of(p: Option<&Payload>) -> Vec<u8> {
    p.and_then(Payload::bytes)
        .unwrap_or_else(|| panic!("expected bytes, got {p:?}"))
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_go_through_a_real_hub_and_worker_byte_for_byte() {
    let (_hub, url) = serve("127.0.0.1:0");
    let _w = worker(&url, "bin", &["--concurrency", "2"]);
    let c = client(&url).await;
    let big = sample(700_000);
    let payloads = vec![
        Payload::from(sample(256)),
        Payload::from(Vec::new()),
        Payload::from(big.clone()),
        Payload::Json(json!("still JSON")),
    ];
    let replies = c
        .submit_within(
            "bin",
            payloads,
            PutOptions::new().kind("echo"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(replies.iter().all(|r| r.ok), "{replies:?}");
    assert_eq!(bytes_of(replies[0].result.as_ref()), sample(256));
    assert_eq!(bytes_of(replies[1].result.as_ref()), Vec::<u8>::new());
    assert_eq!(bytes_of(replies[2].result.as_ref()), big);
    assert_eq!(replies[3].result, Some(json!("still JSON").into()));

    // A handler that reads bytes and answers JSON: the SHA-256 of the bytes themselves.
    let digest = c
        .submit_within(
            "bin",
            vec![Payload::from(&b"abc"[..])],
            PutOptions::new().kind("sha256"),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(
        digest[0].result,
        Some(json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_and_dead_letters_keep_their_bytes() {
    let (_hub, url) = serve("127.0.0.1:0");
    let _w = worker(&url, "keep", &[]);
    let c = client(&url).await;
    let opts = |kind: &str| {
        PutOptions::new()
            .kind(kind)
            .reply_to("keep-results")
            .max_attempts(1)
    };
    let echoed = c.put("keep", sample(1000), opts("echo")).await.unwrap();
    // `square` takes JSON: a binary payload fails for good, and its dead letter keeps the bytes.
    let refused = c.put("keep", sample(300), opts("square")).await.unwrap();

    let outcomes = taskhub_tests::take_results(&c, "keep-results", 2).await;
    let ok = &outcomes[0];
    assert_eq!(
        (ok["id"].as_u64(), &ok["ok"]),
        (Some(echoed.0), &json!(true))
    );
    assert_eq!(
        ok.attachment().map(|(at, b)| (at, b.to_vec())),
        Some(("result", sample(1000)))
    );
    let failed = &outcomes[1];
    assert_eq!(
        (failed["id"].as_u64(), &failed["ok"]),
        (Some(refused.0), &json!(false))
    );
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("square takes a JSON payload"), "{error}");

    let dead = c
        .get("keep.dead", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a dead letter")
        .payload;
    assert_eq!(dead["id"].as_u64(), Some(refused.0));
    assert_eq!(dead["kind"], json!("square"));
    assert_eq!(
        dead.attachment().map(|(at, b)| (at, b.to_vec())),
        Some(("payload", sample(300)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_commands_and_the_cli_take_bytes() {
    let (_hub, url) = serve("127.0.0.1:0");
    // A binary payload reaches the command's stdin as it is; its stdout comes back as bytes.
    let _w = worker(
        &url,
        "tr",
        &[
            "--exec",
            r#"[ "$TASKHUB_PAYLOAD" = binary ] && tr 'a-z' 'A-Z'"#,
        ],
    );
    let dir = std::env::temp_dir().join(format!("taskhub-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("in.bin");
    std::fs::write(&file, b"hello\x00\xffworld").unwrap();
    let out = cli(&[
        "--hub",
        &url,
        "--key",
        taskhub_tests::KEY,
        "submit",
        "tr",
        "--binary",
        file.to_str().unwrap(),
        "--timeout",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The CLI prints bytes as a JSON array of numbers, one line per result.
    let line: Vec<u8> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line, b"HELLO\x00\xffWORLD");
    let missing = cli(&[
        "--hub",
        &url,
        "--key",
        taskhub_tests::KEY,
        "put",
        "tr",
        "--binary",
        "/nonexistent/x",
    ]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read payload file /nonexistent/x"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Pub/sub carries bytes too.
    let sub = client(&url).await;
    let mut frames = sub.subscribe("frames.>").await.unwrap();
    let publisher = client(&url).await;
    assert_eq!(
        publisher
            .publish("frames.cam1", sample(5000))
            .await
            .unwrap(),
        1
    );
    let taskhub_client::Message { topic, payload } = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut frames),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (topic.as_str(), bytes_of(Some(&payload))),
        ("frames.cam1", sample(5000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_handler_takes_and_returns_bytes() {
    use taskhub_native_worker::{Handlers, binary};
    let (_hub, url) = serve("127.0.0.1:0");
    let handlers = Handlers::new()
        .heavy(
            "invert",
            binary(|b: &[u8]| b.iter().map(|x| !x).collect::<Vec<u8>>()),
        )
        .light("len", binary(|b: &[u8]| json!(b.len())));
    let _stop = taskhub_tests::worker_with(&url, "mine", 2, handlers);
    let c = client(&url).await;
    let inverted = c
        .submit_within(
            "mine",
            vec![Payload::from(sample(4096)), Payload::Json(json!([1, 2]))],
            PutOptions::new().kind("invert"),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let expected: Vec<u8> = sample(4096).iter().map(|x| !x).collect();
    assert_eq!(bytes_of(inverted[0].result.as_ref()), expected);
    // JSON sent to a handler of bytes fails for good (one attempt), saying why.
    assert!(!inverted[1].ok);
    let error = inverted[1].error.as_deref().unwrap();
    assert!(
        error.contains("gave up after 1 attempt")
            && error.contains("invert takes a binary payload"),
        "{error}"
    );
    let len = c
        .submit_within(
            "mine",
            vec![Payload::from(vec![7u8; 12])],
            PutOptions::new().kind("len"),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(len[0].result, Some(json!(12).into()));
}
