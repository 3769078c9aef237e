//! The NATS JetStream backend: several hubs on one `nats-server -js` share queues, topics and
//! inboxes, with the rules of the embedded broker (ARCHITECTURE.md, "Scaling out with NATS").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::cdp::Browser;
use taskhub_tests::{
    KEY, Nats, Proc, Raw, SubmitWithin, bin, client, hub_on, in_process_worker, serve_with,
    square_is_done, worker,
};

/// A worker session on `url` consuming `jobs`, one task at a time.
async fn consumer(url: &str) -> Raw {
    let mut w = Raw::session(url, "worker").await;
    w.send(json!({"type": "consume", "queues": ["jobs"], "prefetch": 1}))
        .await;
    w
}

#[tokio::test]
async fn a_task_put_on_one_hub_is_done_by_a_worker_on_another_and_its_result_comes_back() {
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let b = hub_on(&nats, |_| {}).await;
    let _w = in_process_worker(&b.url(), "tasks", 2);
    taskhub_tests::results_come_back_on_reply_to(&client(&a.url()).await).await;
    // Stats on either hub show the same queues, read from JetStream.
    let stats = client(&b.url()).await.stats().await.unwrap();
    let tasks = stats.queues.iter().find(|q| q.name.as_str() == "tasks");
    assert_eq!(
        tasks.map(|q| (q.depth, q.in_flight)),
        Some((0, 0)),
        "{stats:?}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn submit_on_one_hub_gets_its_replies_from_workers_on_another() {
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let b = hub_on(&nats, |_| {}).await;
    let _w = in_process_worker(&b.url(), "tasks", 4);
    let c = client(&a.url()).await;
    let replies = c
        .submit_within(
            "tasks",
            (0..200).map(|n| json!(n)),
            PutOptions::new().kind("square"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(replies.len(), 200);
    for (n, r) in (0..200).zip(&replies) {
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.result,
            Some(json!(format!("{n} * {n} = {}", n * n)).into())
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_subscriber_on_one_hub_hears_what_another_publishes_with_wildcards() {
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let c_hub = hub_on(&nats, |_| {}).await;
    let sub_client = client(&c_hub.url()).await;
    let mut one = sub_client.subscribe("news.*").await.unwrap();
    let mut all = sub_client.subscribe("news.>").await.unwrap();
    let publisher = client(&a.url()).await;
    publisher
        .publish("news.sport", json!({"score": 3}))
        .await
        .unwrap();
    publisher
        .publish("news.sport.live", json!("goal"))
        .await
        .unwrap();
    publisher
        .publish("weather.today", json!("rain"))
        .await
        .unwrap();
    use futures_util::StreamExt;
    let got = tokio::time::timeout(Duration::from_secs(5), one.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.topic.as_str(), got.payload),
        ("news.sport", json!({"score": 3}).into())
    );
    let mut heard = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), all.next())
            .await
            .unwrap()
            .unwrap();
        heard.push(m.topic.to_string());
    }
    assert_eq!(heard, ["news.sport", "news.sport.live"]);
    // `news.*` does not match two tokens, and nothing of `weather` arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), one.next())
            .await
            .is_err()
    );
    a.stop().await;
    c_hub.stop().await;
}

#[tokio::test]
async fn a_closed_sessions_lease_goes_to_a_worker_on_another_hub_at_once() {
    let nats = Nats::start();
    let a = hub_on(&nats, |c| c.broker.ack_wait = Duration::from_secs(60)).await;
    let b = hub_on(&nats, |c| c.broker.ack_wait = Duration::from_secs(60)).await;
    let c = client(&a.url()).await;
    let id = c.put("jobs", json!("x"), PutOptions::new()).await.unwrap();
    let mut holder = consumer(&a.url()).await;
    let d = holder.recv().await.unwrap();
    assert_eq!(
        (d["type"].as_str(), d["task"]["id"].as_u64()),
        (Some("deliver"), Some(id.0))
    );
    assert_eq!(d["task"]["attempt"], json!(1));
    let mut other = consumer(&b.url()).await;
    drop(holder);
    let started = std::time::Instant::now();
    let d = tokio::time::timeout(Duration::from_secs(10), other.recv())
        .await
        .expect("redelivered long before the 60 s ack-wait")
        .unwrap();
    assert_eq!(d["task"]["id"].as_u64(), Some(id.0), "{d}");
    assert_eq!(d["task"]["attempt"], json!(2));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_task_that_fails_for_good_goes_to_the_dead_letter_queue_with_its_error() {
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let c = client(&a.url()).await;
    let id = c
        .put(
            "jobs",
            json!({"n": 1}),
            PutOptions::new().kind("k").max_attempts(2),
        )
        .await
        .unwrap();
    let mut w = consumer(&a.url()).await;
    let d = w.recv().await.unwrap();
    assert_eq!(d["task"]["max_attempts"], json!(2));
    assert_eq!(d["task"]["kind"], json!("k"));
    w.send(json!({"type": "fail", "task": id.0, "error": "boom", "retry": true}))
        .await;
    let d = w.recv().await.unwrap();
    assert_eq!(
        (d["task"]["id"].as_u64(), d["task"]["attempt"].as_u64()),
        (Some(id.0), Some(2))
    );
    w.send(json!({"type": "fail", "task": id.0, "error": "boom again", "retry": true}))
        .await;
    let dead = c
        .get("jobs.dead", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(
        dead.payload,
        json!({"id": id.0, "queue": "jobs", "kind": "k", "payload": {"n": 1}, "attempts": 2,
               "error": "gave up after 2 attempt(s): boom again", "max_attempts": 2})
    );
    let stats = c.stats().await.unwrap();
    let jobs = stats
        .queues
        .iter()
        .find(|q| q.name.as_str() == "jobs")
        .unwrap();
    assert_eq!(
        (jobs.depth, jobs.in_flight, jobs.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    a.stop().await;
}

/// Take deliveries from `results` on a raw session and ack them; returns each result's task id
/// as it arrives.
async fn results_reader(url: &str) -> tokio::sync::mpsc::UnboundedReceiver<u64> {
    let mut r = Raw::session(url, "producer").await;
    r.send(json!({"type": "consume", "queues": ["results"], "prefetch": 500}))
        .await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = r.recv().await {
            if m["type"] != "deliver" {
                continue;
            }
            let task = m["task"]["id"].as_u64().unwrap();
            let payload = &m["task"]["payload"];
            assert_eq!(payload["ok"], json!(true), "{payload}");
            r.send(json!({"type": "ack", "task": task})).await;
            if tx.send(payload["id"].as_u64().unwrap()).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn three_hubs_lose_nothing_when_one_is_killed_mid_run() {
    let nats = Nats::start();
    let flags = ["--backend", nats.url.as_str(), "--ack-wait", "2"];
    let (_a, a) = serve_with("127.0.0.1:0", &flags);
    let (b_proc, b) = serve_with("127.0.0.1:0", &flags);
    let (_c, c) = serve_with("127.0.0.1:0", &flags);
    let b_then_c = format!("{b},{c}");
    let c_then_b = format!("{c},{b}");
    let _workers = [
        worker(&b_then_c, "tasks", &[]),
        worker(&b_then_c, "tasks", &[]),
        worker(&c_then_b, "tasks", &[]),
    ];
    let producer = client(&a).await;
    let mut results = results_reader(&a).await;
    const N: u64 = 10_000;
    // Tasks that take a little time each, so the kill comes while workers on B hold some.
    let payloads: Vec<_> = (0..N).map(|_| json!(5)).collect();
    let ids = producer
        .put_many(
            "tasks",
            payloads,
            PutOptions::new().kind("sleep").reply_to("results"),
        )
        .await
        .unwrap();
    let mut seen = std::collections::HashMap::<u64, u32>::new();
    let mut b_proc = Some(b_proc);
    let mut killed_at = None;
    while seen.len() < N as usize {
        let id = tokio::time::timeout(Duration::from_secs(30), results.recv())
            .await
            .unwrap_or_else(|_| panic!("results stalled at {} of {N}", seen.len()))
            .unwrap();
        *seen.entry(id).or_default() += 1;
        if seen.len() == 2_000
            && let Some(b) = b_proc.take()
        {
            drop(b); // SIGKILL, mid-run
            killed_at = Some(std::time::Instant::now());
        }
    }
    assert!(b_proc.is_none(), "hub B was killed mid-run");
    let expected: std::collections::HashSet<u64> = ids.iter().map(|i| i.0).collect();
    let got: std::collections::HashSet<u64> = seen.keys().copied().collect();
    assert_eq!(got, expected, "every task's result arrived");
    // A result repeated within a few seconds would follow here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(id) = results.try_recv() {
        *seen.entry(id).or_default() += 1;
    }
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{N} results, {duplicates} duplicate(s), the last {:?} after hub B was killed",
        killed_at.map(|k| k.elapsed())
    );
    assert_eq!(duplicates, 0, "results are stored once per task id");
    // B's workers moved to C.
    let on_c = client(&c).await;
    let workers = taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = on_c.stats().await.unwrap();
        (s.workers
            .iter()
            .filter(|w| w.role == taskhub_core::Role::Worker)
            .count()
            == 3)
            .then_some(())
    })
    .await;
    assert!(workers.is_some(), "all three workers are on hub C");
}

#[tokio::test]
async fn a_released_task_comes_back_with_its_id_and_without_spending_an_attempt() {
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let c = client(&a.url()).await;
    let id = c
        .put("jobs", json!("r"), PutOptions::new().reply_to("out"))
        .await
        .unwrap();
    let mut w = consumer(&a.url()).await;
    for _ in 0..3 {
        let d = w.recv().await.unwrap();
        assert_eq!(d["task"]["id"].as_u64(), Some(id.0), "{d}");
        assert_eq!(d["task"]["attempt"], json!(1), "{d}");
        assert_eq!(d["task"]["reply_to"], json!("out"), "{d}");
        w.send(json!({"type": "release", "task": id.0})).await;
    }
    let d = w.recv().await.unwrap();
    w.send(json!({"type": "ack", "task": id.0, "result": "done"}))
        .await;
    assert_eq!(d["task"]["attempt"], json!(1));
    let r = c.get("out", Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(r.payload, json!({"id": id.0, "ok": true, "result": "done"}));
    a.stop().await;
}

#[tokio::test]
async fn touch_keeps_a_lease_and_an_expired_one_goes_to_another_worker() {
    let nats = Nats::start();
    let ack_wait = |c: &mut taskhub::Config| c.broker.ack_wait = Duration::from_secs(1);
    let a = hub_on(&nats, ack_wait).await;
    let b = hub_on(&nats, ack_wait).await;
    let c = client(&a.url()).await;
    let id = c.put("jobs", json!("t"), PutOptions::new()).await.unwrap();
    let mut slow = consumer(&a.url()).await;
    assert_eq!(
        slow.recv().await.unwrap()["task"]["id"].as_u64(),
        Some(id.0)
    );
    let mut other = consumer(&b.url()).await;
    // Touched every 0.5 s for 2.5 s: past two ack-waits, still held.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        slow.send(json!({"type": "touch", "task": id.0, "req": 1}))
            .await;
        assert_eq!(slow.recv().await.unwrap()["type"], "ok");
    }
    assert!(
        other.recv_within(Duration::from_millis(200)).await.is_err(),
        "a touched task is not redelivered"
    );
    // No more touches: within ack-wait and a little, the other hub's worker has it.
    let d = tokio::time::timeout(Duration::from_secs(5), other.recv())
        .await
        .expect("redelivered after ack-wait")
        .unwrap();
    assert_eq!(
        (d["task"]["id"].as_u64(), d["task"]["attempt"].as_u64()),
        (Some(id.0), Some(2))
    );
    // The late ack of the first worker is refused; the new holder's goes through.
    slow.send(json!({"type": "ack", "task": id.0, "req": 2}))
        .await;
    let late = slow.recv().await.unwrap();
    assert_eq!(late["code"], "unknown_task", "{late}");
    other
        .send(json!({"type": "ack", "task": id.0, "req": 3}))
        .await;
    assert_eq!(other.recv().await.unwrap()["type"], "ok");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_stalled_worker_is_handed_work_again_once_it_shows_it_is_alive() {
    let nats = Nats::start();
    let a = hub_on(&nats, |c| c.broker.ack_wait = Duration::from_secs(1)).await;
    let c = client(&a.url()).await;
    let first = c.put("jobs", json!(1), PutOptions::new()).await.unwrap();
    let mut w = consumer(&a.url()).await;
    assert_eq!(
        w.recv().await.unwrap()["task"]["id"].as_u64(),
        Some(first.0)
    );
    // Frozen past ack-wait: the lease expires, and the task is not handed back to it.
    let again = w.recv_within(Duration::from_millis(2_500)).await;
    assert!(
        again.is_err(),
        "a stalled session is handed nothing: {again:?}"
    );
    // A late ack shows it is alive: refused, and then it is handed work again.
    w.send(json!({"type": "ack", "task": first.0, "req": 1}))
        .await;
    let late = w.recv().await.unwrap();
    assert_eq!(late["code"], "unknown_task", "{late}");
    let d = tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("handed work again")
        .unwrap();
    assert_eq!(d["task"]["id"].as_u64(), Some(first.0), "{d}");
    assert_eq!(d["task"]["attempt"], json!(2));
    a.stop().await;
}

/// NATS goes away and comes back: a put meanwhile waits for NATS and is refused with
/// `storage_unavailable` once it has waited too long (never confirmed unless stored), and once NATS
/// is back the hub carries on by itself: what was stored is there, new puts are stored, and a
/// worker takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_rides_out_a_nats_restart() {
    let mut nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let c = client(&a.url()).await;
    // Room for two: once it holds `before`, the hub has a pull request out for one more, which
    // the restarted NATS server will have forgotten.
    let mut w = Raw::session(&a.url(), "worker").await;
    w.send(json!({"type": "consume", "queues": ["jobs"], "prefetch": 2}))
        .await;
    let before = c
        .put("jobs", json!("before"), PutOptions::new())
        .await
        .unwrap();
    let d = w.recv().await.unwrap();
    assert_eq!(d["task"]["id"].as_u64(), Some(before.0));
    let url = nats.url.clone();
    let restarted = tokio::task::spawn_blocking(move || {
        nats.restart_after(Duration::from_secs(8));
        nats
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = c.put("jobs", json!("during"), PutOptions::new()).await;
    match &refused {
        Err(taskhub_client::ClientError::Hub { code, message }) => {
            assert_eq!(
                *code,
                taskhub_core::ErrorCode::StorageUnavailable,
                "{message}"
            );
            assert!(message.contains("may or may not be stored"), "{message}");
        }
        other => panic!("a put while NATS is away for long is refused, not {other:?}"),
    }
    // Meanwhile /readyz says the hub takes no work, and why.
    let (status, _, body) = taskhub_tests::http(a.addr(), "GET", "/readyz").await;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(status.contains("503"), "{status}");
    assert!(body.contains("NATS is not connected"), "{body}");
    let nats = restarted.await.unwrap();
    assert_eq!(nats.url, url);
    let after = taskhub_tests::eventually(Duration::from_secs(20), || async {
        c.put("jobs", json!("after"), PutOptions::new()).await.ok()
    })
    .await
    .expect("puts are stored again once NATS is back");
    let (status, _, _) = taskhub_tests::http(a.addr(), "GET", "/readyz").await;
    assert!(status.contains("200"), "ready again: {status}");
    // The worker that was there all along is handed work again at once, not once the pull
    // request the old server forgot would have expired (10 s after it was made).
    let resumed = std::time::Instant::now();
    let mut got = Vec::new();
    while !got.contains(&after.0) {
        let d = tokio::time::timeout(Duration::from_secs(20), w.recv())
            .await
            .expect("deliveries resume")
            .unwrap();
        let id = d["task"]["id"].as_u64().unwrap();
        w.send(json!({"type": "ack", "task": id})).await;
        got.push(id);
    }
    assert!(
        resumed.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        resumed.elapsed()
    );
    // The refused put may have reached NATS after all (it said so): then it comes first.
    assert!(got.len() <= 2, "{got:?}");
    a.stop().await;
}

/// NATS credentials in the URL work, and a wrong password stops the hub at start-up with an
/// error that says so and never shows the password.
#[tokio::test]
async fn nats_credentials_in_the_url_work_and_a_wrong_one_is_named_without_showing_it() {
    let nats = Nats::start_with(&["--user", "taskhub", "--pass", "right-horse-battery"]);
    let with = |user_pass: &str| {
        nats.url
            .replacen("nats://", &format!("nats://{user_pass}@"), 1)
    };
    let a = hub_on(&nats, |c| {
        c.backend = Some(taskhub::NatsBackend::new(with(
            "taskhub:right-horse-battery",
        )));
    })
    .await;
    let c = client(&a.url()).await;
    c.put("jobs", json!(1), PutOptions::new()).await.unwrap();
    assert_eq!(
        c.stats().await.unwrap().queue("jobs").map(|q| q.depth),
        Some(1)
    );
    a.stop().await;

    let mut config = taskhub::Config::new(taskhub::Secret::new(taskhub_tests::KEY));
    config.backend = Some(taskhub::NatsBackend::new(with("taskhub:wrong-staple")));
    let err = taskhub::Running::start("127.0.0.1:0", config)
        .await
        .expect_err("a wrong NATS password stops the hub")
        .to_string();
    assert!(err.contains("NATS backend"), "{err}");
    assert!(
        err.contains("authorization"),
        "the error names the problem: {err}"
    );
    assert!(
        !err.contains("wrong-staple"),
        "the password stays out of it: {err}"
    );
}

#[tokio::test]
async fn stats_on_any_hub_count_every_hubs_sessions_and_publish_counts_its_own() {
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let b = hub_on(&nats, |_| {}).await;
    let mut w = consumer(&b.url()).await;
    let on_b = client(&b.url()).await;
    let _sub = on_b.subscribe("news.>").await.unwrap();
    let on_a = client(&a.url()).await;
    let id = on_a.put("jobs", json!(1), PutOptions::new()).await.unwrap();
    assert_eq!(w.recv().await.unwrap()["task"]["id"].as_u64(), Some(id.0));
    let stats = on_a.stats().await.unwrap();
    assert_eq!(
        (stats.sessions["worker"], stats.sessions["producer"]),
        (1, 2),
        "{stats:?}"
    );
    let jobs = stats.queue("jobs").unwrap();
    assert_eq!(
        (jobs.depth, jobs.in_flight, jobs.consumers),
        (0, 1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.workers.len(), 1, "the worker on hub B: {stats:?}");
    // `published.receivers` counts the publisher's hub only (docs/protocol.md).
    assert_eq!(on_a.publish("news.x", json!(1)).await.unwrap(), 0);
    assert_eq!(on_b.publish("news.x", json!(2)).await.unwrap(), 1);
    a.stop().await;
    b.stop().await;
}

/// The join page and the dashboard work on any hub of a NATS backend: a tab that joined through
/// hub B does what a producer puts through hub A; a dashboard served by A lists that tab (its
/// session is on B) and, given both hubs in its link, moves to B when A stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_page_and_the_dashboard_work_on_any_hub() {
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let b = hub_on(&nats, |_| {}).await;
    let mut browser = Browser::start().await;
    let (tab, _) = browser
        .open_worker(&format!(
            "http://{}/#key={KEY}&queue=tasks&workers=1",
            b.addr()
        ))
        .await;
    let on_a = client(&a.url()).await;
    square_is_done(&on_a, 12, Duration::from_secs(30)).await;

    let dash = browser
        .open(&format!(
            "http://{}/dashboard#key={KEY}&hub={}/,{}/",
            a.addr(),
            a.url(),
            b.url()
        ))
        .await;
    let lists_the_tab = "(() => { const s = window.taskhubStats; \
        return s && s.workers.some((w) => w.role === 'browser' && w.acked >= 1) \
        && document.getElementById('state').title || null; })()";
    let on = browser
        .wait_for(&dash, lists_the_tab, Duration::from_secs(20))
        .await;
    assert!(
        on.as_str().unwrap().contains(&a.addr().port().to_string()),
        "the dashboard is on hub A: {on}"
    );
    let queues = browser
        .eval(&dash, "document.querySelector('#queues tbody').textContent")
        .await;
    assert!(queues.as_str().unwrap().contains("tasks"), "{queues}");

    drop(on_a);
    a.stop().await;
    let moved = format!(
        "(() => {{ const p = document.getElementById('state'); \
         return p.className.includes('connected') && p.title.includes(':{}') && p.title; }})()",
        b.addr().port()
    );
    browser
        .wait_for(&dash, &moved, Duration::from_secs(20))
        .await;
    // On B it still sees the tab, which keeps working.
    browser.eval(&dash, "window.taskhubStats = null").await;
    browser
        .wait_for(&dash, lists_the_tab, Duration::from_secs(10))
        .await;
    square_is_done(&client(&b.url()).await, 13, Duration::from_secs(30)).await;
    drop(tab);
    browser.close().await;
    b.stop().await;
}

/// `taskhub sub --hub A,B`: when hub A stops, the subscriber says so, subscribes again on B and
/// goes on printing what is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_subscriber_moves_to_the_next_hub_when_its_hub_stops() {
    use std::io::BufRead;
    let nats = Nats::start();
    let a = hub_on(&nats, |_| {}).await;
    let b = hub_on(&nats, |_| {}).await;
    let hubs = format!("{},{}", a.url(), b.url());
    let mut sub = Proc::spawn(
        std::process::Command::new(bin("taskhub"))
            .args(["sub", "news.>", "--hub", &hubs, "--key", KEY])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let (lines, printed) = std::sync::mpsc::channel::<String>();
    let stdout = std::io::BufReader::new(sub.0.stdout.take().unwrap());
    let out_lines = lines.clone();
    std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(out_lines.send(l)))
    });
    let stderr = std::io::BufReader::new(sub.0.stderr.take().unwrap());
    std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(lines.send(format!("stderr: {l}"))))
    });
    let on_b = client(&b.url()).await;
    // Publish `topic` on B until the subscriber prints it; every line it printed until then.
    let heard = async |topic: &str| {
        let mut seen = Vec::new();
        for _ in 0..100 {
            on_b.publish(topic, json!(topic)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.extend(printed.try_iter());
            if seen
                .iter()
                .any(|l| l.contains(&format!("\"topic\":\"{topic}\"")))
            {
                return seen;
            }
        }
        panic!("the subscriber never printed {topic}: {seen:?}");
    };
    let before = heard("news.one").await;
    assert!(
        before.iter().all(|l| !l.starts_with("stderr")),
        "{before:?}"
    );
    a.stop().await;
    let after = heard("news.two").await;
    assert!(
        after.iter().any(|l| l.starts_with("stderr: lost hub")),
        "it says it lost A: {after:?}"
    );
    assert!(
        after
            .iter()
            .any(|l| l == &format!("stderr: subscribed again, on {}", b.url())),
        "it names the hub it moved to: {after:?}"
    );
    drop(sub);
    b.stop().await;
}

/// Hub ids are random (20 bits) and make the top of session ids and the inbox subjects: a hub
/// that draws the id of a running hub draws another, so no two hubs take each other's replies.
#[tokio::test]
async fn a_hub_that_draws_a_running_hubs_id_draws_another() {
    let nats = Nats::start();
    let seven = |c: &mut taskhub::Config| c.backend.as_mut().unwrap().first_hub_id = Some(7);
    let a = hub_on(&nats, seven).await;
    let b = hub_on(&nats, seven).await;
    let (on_a, on_b) = (client(&a.url()).await, client(&b.url()).await);
    assert_eq!(on_a.session().0 >> 32, 7, "A drew 7 first and took it");
    assert_ne!(on_b.session().0 >> 32, 7, "B found 7 held and drew another");
    // Each producer gets its own replies, from a worker on A.
    let _w = in_process_worker(&a.url(), "tasks", 2);
    square_is_done(&on_a, 5, Duration::from_secs(20)).await;
    square_is_done(&on_b, 6, Duration::from_secs(20)).await;
    a.stop().await;
    b.stop().await;
}
