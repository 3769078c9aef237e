//! Redundant tasks over real sockets: a lying worker among honest `taskhub-worker` processes
//! cannot get a wrong result into `results`; raw frames follow docs/protocol.md *Redundant
//! tasks*; a key marked `trusted` is taken at its word. With `TASKHUB_TEST_BACKEND=nats` the hub
//! refuses `replicas` as `unsupported`.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use taskhub::keys::Key;
use taskhub_client::{Client, ClientError, Pattern, PutOptions, Rights};
use taskhub_core::ErrorCode;
use taskhub_core::auth::Secret;
use taskhub_tests::{KEY, Raw, cli, client, eventually, hub, on_nats, worker};

/// All of `queue`'s entries (replies), as JSON, waiting up to `wait` for `n` of them.
async fn replies(c: &Client, queue: &str, n: usize, wait: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} replies came: {got:?}",
            got.len()
        );
        if let Some(t) = c.get(queue, left).await.unwrap() {
            got.push(t.payload.json_or_null().clone());
        }
    }
    got
}

/// A worker in this process whose `square` lies: `n * n = n²+1`, in the built-in's words. Returns its stop handle and how many
/// tasks it answered.
fn liar(
    url: &str,
    queue: &str,
    name: &str,
) -> (tokio::sync::oneshot::Sender<()>, Arc<AtomicUsize>) {
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let handlers = taskhub_native_worker::Handlers::new().light("square", move |p: &Value| {
        count.fetch_add(1, Ordering::Relaxed);
        let n = p
            .as_i64()
            .ok_or_else(|| "square expects an integer".to_string())?;
        Ok::<Value, String>(json!(format!("{n} * {n} = {}", n * n + 1)))
    });
    let queues = vec![taskhub_core::QueueName::new(queue).unwrap()];
    let mut config = taskhub_core::worker::WorkerConfig::new("default", Secret::new(KEY), queues);
    config.name = Some(name.into());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = taskhub_native_worker::Options::new(url, config, handlers);
    tokio::spawn(taskhub_native_worker::run(opts, async {
        let _ = stopped.await;
    }));
    (stop, answered)
}

// The CLI blocks this thread: the hub runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_worker_among_honest_processes_gets_no_wrong_result_into_results() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let c = client(&url).await;
    // The liar first, so it is consuming when the tasks arrive; two honest worker processes
    // with names of their own.
    let (_stop, lies) = liar(&url, "jobs", "liar");
    let _a = worker(&url, "jobs", &["--name", "honest-a"]);
    let _b = worker(&url, "jobs", &["--name", "honest-b"]);
    let consumers = eventually(Duration::from_secs(30), || async {
        let s = c.stats().await.ok()?;
        (s.queue("jobs")?.consumers == 3).then_some(())
    })
    .await;
    assert!(consumers.is_some(), "three workers consume jobs");

    let payloads: Vec<String> = (1..=30).map(|n| n.to_string()).collect();
    let mut args = vec!["--hub", &url, "--key", KEY, "put", "jobs"];
    args.extend(payloads.iter().map(String::as_str));
    args.extend([
        "--kind",
        "square",
        "--reply-to",
        "results",
        "--replicas",
        "2",
        "--quorum",
        "2",
    ]);
    let out = cli(&args);
    if on_nats() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("unsupported"),
            "{err}"
        );
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 30);

    let got = replies(&c, "results", 30, Duration::from_secs(60)).await;
    for reply in &got {
        assert_eq!(reply["ok"], json!(true), "{reply}");
        let id = reply["id"].as_u64().unwrap();
        let n = ids.iter().position(|i| *i == id).expect("a task put") as i64 + 1;
        assert_eq!(
            reply["result"],
            json!(format!("{n} * {n} = {}", n * n)),
            "task {id} got a wrong result: {reply}"
        );
    }
    let mut seen: Vec<u64> = got.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 30, "one result per task");
    assert!(
        lies.load(Ordering::Relaxed) > 0,
        "the liar took part (else this proves nothing)"
    );
    // Nothing more comes, and nothing was dead-lettered: honest workers always outvote it.
    assert!(
        c.get("results", Duration::from_millis(300))
            .await
            .unwrap()
            .is_none()
    );
    let stats = c.stats().await.unwrap();
    let jobs = stats.queue("jobs").unwrap();
    assert_eq!((jobs.dead, jobs.voting, jobs.depth), (0, 0, 0));
    assert_eq!(stats.acked, 30, "each task counts once");
}

#[tokio::test]
async fn raw_frames_vote_and_the_outvoted_replica_is_cancelled() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let mut producer = Raw::session(&url, "producer").await;
    let bad = producer
        .request(
            json!({"type": "put", "queue": "jobs", "payload": 1, "replicas": 3, "quorum": 4}),
            1,
        )
        .await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("quorum must be 1 to replicas (3), not 4"),
        "{bad}"
    );
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(Raw::consumer(&url, "jobs").await);
    }
    let queued = producer
        .request(
            json!({"type": "put", "queue": "jobs", "payload": 6, "reply_to": "results", "replicas": 3, "quorum": 2}),
            2,
        )
        .await;
    if on_nats() {
        assert_eq!(queued["code"], "unsupported", "{queued}");
        assert!(
            queued["message"].as_str().unwrap().contains("replicas"),
            "{queued}"
        );
        return;
    }
    assert_eq!(queued["type"], "queued", "{queued}");
    let task = queued["task"].as_u64().unwrap();
    let mut replicas = Vec::new();
    for w in &mut workers {
        let d = w.recv().await.unwrap();
        assert_eq!(d["type"], "deliver", "{d}");
        assert_eq!(d["task"]["payload"], 6);
        replicas.push(d["task"]["id"].as_u64().unwrap());
    }
    assert!(!replicas.contains(&task), "replicas have ids of their own");
    // The first two agree (the same bytes); the third is withdrawn.
    for (w, id) in workers.iter_mut().zip(&replicas).take(2) {
        w.send(json!({"type": "ack", "task": id, "result": {"n": 36}}))
            .await;
    }
    let cancel = workers[2]
        .recv_within(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(cancel, Some(json!({"type": "cancel", "task": replicas[2]})));
    let late = workers[2]
        .request(
            json!({"type": "ack", "task": replicas[2], "result": {"n": 37}}),
            3,
        )
        .await;
    assert_eq!(late["code"], "unknown_task", "{late}");
    let got = producer
        .request(
            json!({"type": "get", "queue": "results", "timeout_ms": 5000}),
            4,
        )
        .await;
    assert_eq!(
        got["task"]["payload"],
        json!({"id": task, "ok": true, "result": {"n": 36}})
    );
    let none = producer
        .request(
            json!({"type": "get", "queue": "results", "timeout_ms": 0}),
            5,
        )
        .await;
    assert_eq!(none["type"], "empty", "one result, not three: {none}");
}

#[tokio::test]
async fn disagreeing_workers_end_in_a_dead_letter_listing_every_result() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let c = client(&url).await;
    let opts = PutOptions::new()
        .reply_to("results")
        .replicas(2, 2)
        .max_replicas(3);
    let put = c.put("jobs", json!("which?"), opts).await;
    if on_nats() {
        assert!(matches!(
            put,
            Err(ClientError::Hub {
                code: ErrorCode::Unsupported,
                ..
            })
        ));
        return;
    }
    let task = put.unwrap();
    for answer in ["red", "green", "blue"] {
        let mut w = Raw::consumer(&url, "jobs").await;
        let d = w
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        w.send(json!({"type": "ack", "task": d["task"]["id"], "result": answer}))
            .await;
        // Stays connected until its vote is in: a session that left may not vote twice anyway,
        // but this keeps the three voters apart.
        let _ = w.request(json!({"type": "ping"}), 9).await;
    }
    let reply = replies(&c, "results", 1, Duration::from_secs(10)).await;
    assert_eq!(reply[0]["ok"], json!(false));
    assert!(
        reply[0]["error"].as_str().unwrap().contains("no quorum"),
        "{reply:?}"
    );
    let dead = c.dead_letters("jobs", None).await.unwrap();
    let (entries, total) = (dead.entries, dead.total);
    assert_eq!(total, 1);
    assert_eq!(entries[0]["id"], json!(task.0));
    let results: Vec<&Value> = entries[0]["ballots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["result"])
        .collect();
    assert_eq!(
        results,
        vec![&json!("red"), &json!("green"), &json!("blue")]
    );
}

#[tokio::test]
async fn a_key_marked_trusted_is_taken_at_its_word_and_a_token_cannot_outgrow_its_key() {
    if !taskhub_tests::embedded_only("redundant tasks") {
        return;
    }
    let h = hub(|config| {
        config.keys.insert(
            "box".into(),
            Key {
                secret: Secret::new("box-secret"),
                rights: Rights {
                    trusted: vec![Pattern::new("jobs").unwrap()],
                    ..Rights::all()
                },
                expires: None,
            },
        );
    })
    .await;
    let url = h.url();
    let c = client(&url).await;
    let (mut trusted, welcome) =
        Raw::authenticate_as(&url, "box", &Secret::new("box-secret"), "worker").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let ok = trusted
        .request(
            json!({"type": "consume", "queues": ["jobs"], "prefetch": 1}),
            1,
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let id = c
        .put(
            "jobs",
            json!(5),
            PutOptions::new().reply_to("results").replicas(3, 3),
        )
        .await
        .unwrap();
    // One trusted answer is enough; the two other replicas are withdrawn.
    let d = trusted
        .recv_within(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d["task"]["payload"], json!(5), "{d}");
    let ack = trusted
        .request(
            json!({"type": "ack", "task": d["task"]["id"], "result": 25}),
            2,
        )
        .await;
    assert_eq!(ack["type"], "ok", "{ack}");
    let reply = replies(&c, "results", 1, Duration::from_secs(10)).await;
    assert_eq!(reply[0], json!({"id": id.0, "ok": true, "result": 25}));
    let jobs = c.stats().await.unwrap();
    assert_eq!(jobs.queue("jobs").unwrap().depth, 0);

    // The test key is not trusted, so it cannot mint a trusted token.
    let refused = c
        .create_token(
            Rights {
                consume: vec![Pattern::new("jobs").unwrap()],
                trusted: vec![Pattern::new("jobs").unwrap()],
                ..Rights::default()
            },
            Duration::from_secs(60),
        )
        .await;
    let Err(ClientError::Hub { code, message }) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(code, ErrorCode::Forbidden);
    assert!(message.contains("trusted on queue"), "{message}");
}

/// `taskhub serve --replicas 'jobs=2'`: every task put to `jobs` runs on two workers, though
/// the put (here the CLI's, without `--replicas`) did not ask; a rule that cannot be stops
/// `serve` at once, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_replicas_makes_a_queue_redundant_and_a_bad_rule_is_refused_at_start() {
    if !taskhub_tests::embedded_only("redundant tasks") {
        return;
    }
    let (status, err) = taskhub_tests::serve_exits(&["--replicas", "jobs=3/4"]);
    assert!(!status.success());
    assert!(
        err.contains("quorum must be 1 to replicas (3), not 4"),
        "{err}"
    );

    let (_hub, url) = taskhub_tests::serve_with("127.0.0.1:0", &["--replicas", "jobs=2"]);
    let mut a = Raw::consumer(&url, "jobs").await;
    let mut b = Raw::consumer(&url, "jobs").await;
    let out = cli(&[
        "--hub",
        &url,
        "--key",
        KEY,
        "put",
        "jobs",
        "7",
        "--reply-to",
        "results",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    for w in [&mut a, &mut b] {
        let d = w
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d["task"]["payload"], 7, "{d}");
        w.send(json!({"type": "ack", "task": d["task"]["id"], "result": 49}))
            .await;
    }
    let c = client(&url).await;
    let got = replies(&c, "results", 1, Duration::from_secs(10)).await;
    assert_eq!(got[0], json!({"id": task, "ok": true, "result": 49}));
}
