//! Retries and the dead-letter queue, with a real worker whose handler always fails.

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::{SubmitWithin, client, hub, in_process_worker};

#[tokio::test]
async fn a_task_that_keeps_failing_ends_in_the_dead_letter_queue() {
    let hub = hub(|c| c.broker.max_attempts = 3).await;
    let _worker = in_process_worker(&hub.url(), "jobs", 1);
    let c = client(&hub.url()).await;
    let opts = PutOptions::new().kind("fail");
    let replies = c
        .submit_within(
            "jobs",
            vec![json!("disk on fire")],
            opts,
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert!(!replies[0].ok);
    assert!(
        replies[0]
            .error
            .as_deref()
            .unwrap()
            .contains("after 3 attempt(s): disk on fire")
    );

    let stats = c.stats().await.unwrap();
    let jobs = stats.queue("jobs").unwrap();
    assert_eq!((jobs.depth, jobs.in_flight, jobs.dead), (0, 0, 1));

    let dead = c
        .get("jobs.dead", Duration::ZERO)
        .await
        .unwrap()
        .expect("dead letter");
    assert_eq!(dead.payload["payload"], json!("disk on fire"));
    assert_eq!(dead.payload["attempts"], json!(3));
    assert_eq!(dead.payload["kind"], json!("fail"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_do_not_vanish_at_max_queues() {
    use taskhub_tests::{KEY, cli, serve_with, worker};
    // The reproduction from the fault suite: gets that do not wait used to fill max_queues, and
    // a result bound for a new queue then disappeared.
    let (_hub, url) = serve_with("127.0.0.1:0", &["--max-queues", "3"]);
    let _w = worker(&url, "tasks", &[]);
    let common = ["--hub", url.as_str(), "--key", KEY];
    for q in ["a", "b"] {
        let out = cli(&[&["get", q, "--timeout", "0"][..], &common].concat());
        assert!(!out.status.success(), "nothing to get from {q}");
    }
    let put = cli(&[
        &[
            "put",
            "tasks",
            "7",
            "--kind",
            "square",
            "--reply-to",
            "fresh",
        ][..],
        &common,
    ]
    .concat());
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let got = cli(&[&["get", "fresh", "--timeout", "10"][..], &common].concat());
    let line = String::from_utf8_lossy(&got.stdout);
    assert!(
        line.contains("\"7 * 7 = 49\""),
        "the result arrived: {line}"
    );

    // At the limit for real (tasks, fresh, third), the put is refused up front: nothing is
    // stored, so nothing is lost.
    let put = |reply_to: &str| {
        cli(&[
            &[
                "put",
                "tasks",
                "8",
                "--kind",
                "square",
                "--reply-to",
                reply_to,
            ][..],
            &common,
        ]
        .concat())
    };
    assert!(put("third").status.success());
    if taskhub_tests::on_nats() {
        // Queues are JetStream subjects there: max_queues does not apply (ARCHITECTURE.md).
        assert!(put("fourth").status.success());
        return;
    }
    let refused = put("fourth");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("reply_to fourth: cannot create queue fourth"),
        "{err}"
    );
    // Dead-letter queues are not counted: a failure still has somewhere to go.
    let failed = cli(&[
        &[
            "put",
            "tasks",
            "\"x\"",
            "--kind",
            "fail",
            "--max-attempts",
            "1",
        ][..],
        &common,
    ]
    .concat());
    assert!(failed.status.success());
    let dead = cli(&[&["get", "tasks.dead", "--timeout", "10"][..], &common].concat());
    assert!(
        String::from_utf8_lossy(&dead.stdout).contains("\"x\""),
        "{dead:?}"
    );
}

#[tokio::test]
async fn the_longest_queue_names_have_dead_letter_queues() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    for len in [124, 128] {
        let queue = "q".repeat(len);
        let _worker = in_process_worker(&hub.url(), &queue, 1);
        let replies = c
            .submit_within(
                &queue,
                vec![json!("long names fail too")],
                PutOptions::new().kind("fail").max_attempts(1),
                Some(Duration::from_secs(10)),
            )
            .await
            .unwrap();
        assert!(!replies[0].ok);
        let dead = c
            .get(&format!("{queue}.dead"), Duration::ZERO)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no dead letter for a {len}-byte queue name"));
        assert_eq!(dead.payload["payload"], json!("long names fail too"));
    }
    hub.stop().await;
}
