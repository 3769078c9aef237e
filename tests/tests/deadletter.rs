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

/// Dead letters from the shell and the client: listed without being taken, requeued by id or all
/// at once as new tasks that keep their kind, payload (bytes too) and reply_to, refused whole
/// for an id that is not there, and purged. On every backend the suite runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_requeued_and_purged() {
    use taskhub_client::{ClientError, Payload};
    use taskhub_core::{ErrorCode, TaskId};
    use taskhub_tests::{KEY, cli};
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let doomed = PutOptions::new()
        .kind("fail")
        .max_attempts(1)
        .reply_to("outcomes");
    let ids = c
        .put_many("jobs", vec![json!(1), json!(2), json!(3)], doomed.clone())
        .await
        .unwrap();
    let bytes = c
        .put("jobs", Payload::from(vec![0u8, 255, 7]), doomed)
        .await
        .unwrap();
    let worker = in_process_worker(&hub.url(), "jobs", 1);
    taskhub_tests::eventually(Duration::from_secs(20), || async {
        let s = c.stats().await.unwrap();
        (s.queue("jobs").is_some_and(|q| q.dead == 4)).then_some(())
    })
    .await
    .expect("four dead letters");
    drop(worker);
    // Stopped for good before anything is requeued: a worker still consuming would take the
    // requeued task and, its kind being `fail`, dead-letter it again (seen under load).
    taskhub_tests::eventually(Duration::from_secs(20), || async {
        let s = c.stats().await.unwrap();
        (s.queue("jobs").is_some_and(|q| q.consumers == 0)).then_some(())
    })
    .await
    .expect("the worker stopped consuming");

    // Listed, oldest first, and left where they are.
    let listed = c.dead_letters("jobs", None).await.unwrap();
    assert_eq!(listed.total, 4);
    let listed_ids: Vec<u64> = listed
        .entries
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        listed_ids,
        [ids[0].0, ids[1].0, ids[2].0, bytes.0],
        "{:?}",
        listed.entries
    );
    assert_eq!(listed.entries[1]["payload"], json!(2));
    assert_eq!(listed.entries[1]["kind"], json!("fail"));
    assert_eq!(listed.entries[1]["reply_to"], json!("outcomes"));
    assert!(
        listed.entries[1]["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 1")
    );
    assert_eq!(listed.entries[3]["payload"], json!(null));
    assert_eq!(listed.entries[3]["payload_bytes"], json!(3));
    let two = c.dead_letters("jobs", Some(2)).await.unwrap();
    assert_eq!((two.entries.len(), two.total), (2, 4));
    assert_eq!(c.stats().await.unwrap().queue("jobs").unwrap().dead, 4);

    // An id that is not a dead letter refuses the whole request.
    let refused = c
        .requeue_dead("jobs", Some(vec![ids[1], TaskId(999_999)]))
        .await
        .unwrap_err();
    match refused {
        ClientError::Hub { code, message } => {
            assert_eq!(code, ErrorCode::UnknownTask);
            assert!(
                message.contains("999999") && message.contains("nothing was requeued"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(c.dead_letters("jobs", None).await.unwrap().total, 4);
    // The dead-letter queue's own name is not what it takes.
    assert!(c.dead_letters("jobs.dead", None).await.is_err());

    // By id: the task is back, as a new task with the same kind and payload.
    let one = c.requeue_dead("jobs", Some(vec![ids[1]])).await.unwrap();
    assert_eq!((one.count, one.more), (1, false));
    // (With NATS, the hub that ran the stopped worker may still hold a pull request that takes
    // it first, and gives it back within half the ack-wait: hence the patience.)
    let take = || async {
        taskhub_tests::eventually(Duration::from_secs(40), || async {
            c.get("jobs", Duration::from_secs(1)).await.unwrap()
        })
        .await
        .expect("the requeued task")
    };
    let back = take().await;
    assert_eq!(back.payload, json!(2));
    assert_eq!(back.kind.as_deref(), Some("fail"));
    assert_ne!(back.id, ids[1], "a new task");
    assert_eq!(back.reply_to.as_ref().map(|q| q.as_str()), Some("outcomes"));
    assert_eq!(c.dead_letters("jobs", None).await.unwrap().total, 3);

    // All the rest, through the CLI; bytes come back as bytes.
    let url = hub.url();
    let common = ["--hub", url.as_str(), "--key", KEY];
    let out = tokio::task::spawn_blocking({
        let common = common.map(str::to_string);
        move || {
            let args: Vec<&str> = ["dead", "list", "jobs"]
                .into_iter()
                .chain(common.iter().map(String::as_str))
                .collect();
            let listed = cli(&args);
            let args: Vec<&str> = ["dead", "requeue", "jobs", "--all"]
                .into_iter()
                .chain(common.iter().map(String::as_str))
                .collect();
            (listed, cli(&args))
        }
    })
    .await
    .unwrap();
    let (listed, requeued) = out;
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        table.contains("(3 bytes)") && table.contains("gave up after 1"),
        "{table}"
    );
    assert!(
        requeued.status.success(),
        "{}",
        String::from_utf8_lossy(&requeued.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&requeued.stdout).trim(),
        "requeued 3 dead letter(s) on jobs"
    );
    assert_eq!(c.dead_letters("jobs", None).await.unwrap().total, 0);
    let mut payloads = Vec::new();
    for _ in 0..3 {
        let t = take().await;
        payloads.push(t.payload);
    }
    assert_eq!(payloads[0], json!(1));
    assert_eq!(payloads[1], json!(3));
    assert_eq!(
        payloads[2].bytes().map(|b| b.to_vec()),
        Some(vec![0u8, 255, 7])
    );

    // Purge: dead letters dropped for good.
    c.put(
        "jobs",
        json!("again"),
        PutOptions::new().kind("fail").max_attempts(1),
    )
    .await
    .unwrap();
    let worker = in_process_worker(&hub.url(), "jobs", 1);
    taskhub_tests::eventually(Duration::from_secs(20), || async {
        let s = c.stats().await.unwrap();
        (s.queue("jobs").is_some_and(|q| q.dead == 1)).then_some(())
    })
    .await
    .expect("one dead letter");
    drop(worker);
    let owned = common.map(str::to_string);
    let purge = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = ["dead", "purge", "jobs"]
            .into_iter()
            .chain(owned.iter().map(String::as_str))
            .collect();
        cli(&args)
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&purge.stdout).trim(),
        "dropped 1 dead letter(s) of jobs"
    );
    assert_eq!(c.dead_letters("jobs", None).await.unwrap().total, 0);
    hub.stop().await;
}
