//! Bad input: oversized frames, malformed JSON, unknown types, full queues, too many connections.
//! One client's bad input never harms another.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use taskhub_client::{ClientError, PutOptions};
use taskhub_core::ErrorCode;
use taskhub_tests::{Raw, client, hub};

#[tokio::test]
async fn an_oversized_frame_closes_only_that_client() {
    let hub = hub(|c| c.max_message_bytes = 64 * 1024).await;
    let bystander = client(&hub.url()).await;
    bystander
        .put("tasks", json!("before"), PutOptions::default())
        .await
        .unwrap();

    let mut big = Raw::session(&hub.url(), "producer").await;
    let huge = format!(
        r#"{{"type":"put","queue":"tasks","payload":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    big.send_text(&huge).await;
    let seen = big.until_closed().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["code"], "too_large");
    assert!(
        seen[0]["message"].as_str().unwrap().contains("65536"),
        "{}",
        seen[0]
    );

    // The other client carries on, and the oversized put queued nothing.
    bystander
        .put("tasks", json!("after"), PutOptions::default())
        .await
        .unwrap();
    let a = bystander
        .get("tasks", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let b = bystander
        .get("tasks", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.payload, b.payload),
        (json!("before").into(), json!("after").into())
    );
    assert!(
        bystander
            .get("tasks", Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    hub.stop().await;
}

#[tokio::test]
async fn malformed_json_gets_an_error_and_the_session_stays_usable() {
    let hub = hub(|_| {}).await;
    let mut raw = Raw::session(&hub.url(), "producer").await;
    raw.send_text("{\"type\": \"put\", oops").await;
    let e = raw.recv().await.unwrap();
    assert_eq!(e["code"], "bad_frame", "{e}");

    let e = raw.request(json!({"type": "frobnicate"}), 7).await;
    assert_eq!(
        (e["code"].as_str(), e["req"].as_u64()),
        (Some("unknown_type"), Some(7))
    );
    assert!(e["message"].as_str().unwrap().contains("frobnicate"));

    let e = raw.request(json!({"type": "put", "payload": 1}), 8).await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("queue"), "{e}");

    let e = raw
        .request(json!({"type": "get", "queue": "no spaces allowed"}), 9)
        .await;
    assert_eq!(e["code"], "bad_request");

    raw.ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2,
        ]))
        .await
        .unwrap();
    assert_eq!(raw.recv().await.unwrap()["code"], "bad_frame");

    // Still usable.
    let ok = raw
        .request(json!({"type": "put", "queue": "q", "payload": 1}), 10)
        .await;
    assert_eq!(ok["type"], "queued", "{ok}");
    hub.stop().await;
}

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_full_queue_refuses_puts_by_name() {
    let hub = hub(|c| c.broker.max_queue_len = 3).await;
    let c = client(&hub.url()).await;
    for n in 0..3 {
        c.put("small", json!(n), PutOptions::default())
            .await
            .unwrap();
    }
    let err = c
        .put("small", json!(3), PutOptions::default())
        .await
        .unwrap_err();
    match &err {
        ClientError::Hub { code, message } => {
            assert_eq!(*code, ErrorCode::QueueFull);
            assert!(message.contains("small"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Draining makes room again.
    c.get("small", Duration::ZERO).await.unwrap();
    c.put("small", json!(4), PutOptions::default())
        .await
        .unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_a_reason() {
    let hub = hub(|c| c.max_connections = 2).await;
    let _a = Raw::session(&hub.url(), "producer").await;
    let _b = Raw::session(&hub.url(), "producer").await;
    // Sessions are counted once they authenticate: the third is refused at its `auth`.
    let (_c, answer) = Raw::authenticate(&hub.url(), taskhub_tests::KEY, "producer").await;
    assert_eq!(answer["code"], "too_many_connections", "{answer}");
    drop(_a);
    // The slot frees up once a session ends.
    let ok = taskhub_tests::eventually(Duration::from_secs(5), || async {
        let (_s, answer) = Raw::authenticate(&hub.url(), taskhub_tests::KEY, "producer").await;
        (answer["type"] == "welcome").then_some(())
    })
    .await;
    assert!(ok.is_some());
    hub.stop().await;
}

#[tokio::test]
async fn the_hub_refuses_puts_past_its_byte_budget_and_recovers() {
    // With a data dir each task is charged the journal's index entry too.
    let journal = match taskhub_tests::on_disk() {
        true => taskhub::storage::KEPT_PER_TASK,
        false => 0,
    };
    let hub = hub(|c| {
        c.max_message_bytes = 1024;
        c.broker.max_stored_bytes = 2100 + 2 * journal;
    })
    .await;
    let c = client(&hub.url()).await;
    let big = || json!("y".repeat(698)); // 700 bytes as JSON
    c.put("a", big(), PutOptions::default()).await.unwrap();
    c.put("b", big(), PutOptions::default()).await.unwrap();
    let err = c.put("c", big(), PutOptions::default()).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Hub { code: ErrorCode::QueueFull, message } if message.contains("max_stored_bytes")),
        "{err}"
    );
    // Two strings of 698 bytes, charged what they take in memory: about their length each, plus
    // about 330 bytes for each task's own record and its entry in the index by id. (On NATS, the bytes JetStream counts: the
    // messages with their subjects.)
    let stored = c.stats().await.unwrap().stored_bytes;
    let stored = stored - 2 * journal as u64;
    let charged = match taskhub_tests::on_nats() {
        true => 1396 + 60..1396 + 300,
        false => 1396 + 400..1396 + 750,
    };
    assert!(charged.contains(&stored), "{stored}");
    c.get("a", Duration::ZERO).await.unwrap().unwrap();
    c.put("c", big(), PutOptions::default()).await.unwrap();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_and_others_carry_on() {
    let hub = hub(|c| {
        c.outbox = 16;
        c.broker.max_prefetch = 8;
    })
    .await;
    let _worker = taskhub_tests::in_process_worker(&hub.url(), "big", 2);
    let observer = client(&hub.url()).await;

    // A producer that asks for large results in its inbox and never reads them. Once its socket
    // buffers and its outbox are full, the hub must close it rather than hold everything.
    let (deaf, welcome) = Raw::authenticate(&hub.url(), taskhub_tests::KEY, "producer").await;
    let inbox = welcome["inbox"].as_str().unwrap().to_string();
    let payload = "z".repeat(64 * 1024);
    let put = json!({"type": "put", "queue": "big", "kind": "echo", "payload": payload,
                     "reply_to": inbox});
    let sender = flood(deaf, vec![put; 400]);
    let gone = only_producers_left(&observer, 1).await;
    assert!(gone.is_some(), "the deaf producer is still connected");
    // The connection really is closed, and says why after what was already on its way: the
    // slow_consumer error, then Close 1008.
    let mut deaf = sender.await.unwrap();
    let (seen, frame) = deaf.until_close_frame().await;
    assert_eq!(
        seen.last().map(|m| (m["type"].clone(), m["code"].clone())),
        Some((json!("error"), json!("slow_consumer"))),
        "{} messages, the last: {:?}",
        seen.len(),
        seen.last()
    );
    assert_eq!(frame, Some((1008, "slow consumer".to_string())));
    // Everyone else carries on.
    observer
        .put("big", json!("after"), PutOptions::default())
        .await
        .unwrap();
    let s = observer.stats().await.unwrap();
    assert_eq!(s.sessions["worker"], 1, "the worker was not harmed");
    hub.stop().await;
}

/// A session that sends requests but never reads the answers is held back (its requests wait
/// for room in its outbox), and once the outbox has had no room for the idle timeout it is
/// closed as a slow consumer, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_own_answers_is_closed_after_the_idle_timeout() {
    let hub = hub(|c| {
        c.outbox = 16;
        c.broker.max_prefetch = 8;
        c.ping_interval = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let observer = client(&hub.url()).await;
    make_stats_big(&observer).await;
    let deaf = Raw::session(&hub.url(), "producer").await;
    let started = std::time::Instant::now();
    let stats = (0..2_000).map(|req| json!({"type": "stats", "req": req}));
    let sender = flood(deaf, stats.collect());
    let gone = only_producers_left(&observer, 1).await;
    assert!(gone.is_some(), "the session that never reads is still open");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_secs(2) && held < Duration::from_secs(10),
        "closed after {held:?}; the idle timeout is 2 s"
    );
    let mut deaf = sender.await.unwrap();
    let (seen, frame) = deaf.until_close_frame().await;
    assert_eq!(
        seen.last().map(|m| m["code"].clone()),
        Some(json!("slow_consumer"))
    );
    assert_eq!(frame, Some((1008, "slow consumer".to_string())));
    // The answers that did arrive came in order, and the hub still serves everyone else.
    let reqs: Vec<u64> = seen.iter().filter_map(|m| m["req"].as_u64()).collect();
    assert!(reqs.windows(2).all(|w| w[1] == w[0] + 1), "{reqs:?}");
    assert_eq!(observer.stats().await.unwrap().queues.len(), 500);
    hub.stop().await;
}

/// 500 queues, so that every `stats` answer is about 40 kB.
async fn make_stats_big(observer: &taskhub_client::Client) {
    for i in 0..500 {
        let name = format!("queue-number-{i:04}");
        observer
            .put(&name, json!(i), PutOptions::default())
            .await
            .unwrap();
    }
}

/// Send `frames` from a task without ever reading, until the hub stops taking them; the socket
/// comes back for reading afterwards.
fn flood(mut deaf: Raw, frames: Vec<serde_json::Value>) -> tokio::task::JoinHandle<Raw> {
    tokio::spawn(async move {
        for frame in frames {
            // Sends start failing once the hub has closed the session.
            if deaf
                .ws
                .send(Message::text(frame.to_string()))
                .await
                .is_err()
            {
                break;
            }
        }
        deaf
    })
}

/// `Some` once the hub counts only `n` producer sessions (within 30 s).
async fn only_producers_left(observer: &taskhub_client::Client, n: u64) -> Option<()> {
    taskhub_tests::eventually(Duration::from_secs(30), || async {
        let s = observer.stats().await.unwrap();
        (s.sessions["producer"] == n).then_some(())
    })
    .await
}

fn nested_text(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested(depth: usize) -> serde_json::Value {
    serde_json::from_str(&nested_text(depth)).unwrap()
}

/// The fault suite's case: a payload nested 126 deep was accepted; its echo result came back
/// nested 129 deep, which no client could decode, and `get` hung with the entry already taken.
/// Now the hub bounds nesting on the way in, so every answer stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_payloads_are_refused_on_the_way_in_and_every_result_is_readable() {
    let hub = hub(|_| {}).await;
    let _w = taskhub_tests::in_process_worker(&hub.url(), "deep", 1);
    let c = client(&hub.url()).await;
    let err = c
        .put("deep", nested(126), PutOptions::new().kind("echo"))
        .await
        .unwrap_err();
    match err {
        ClientError::Hub { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(
                message.contains("nests 127 levels deep; this hub accepts at most 100"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The deepest payload accepted comes back through a worker and a reply queue, readable.
    let deepest = nested(98); // 100 levels in the put frame
    let opts = PutOptions::new().kind("echo").reply_to("deep-results");
    c.put("deep", deepest.clone(), opts).await.unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        c.get("deep-results", Duration::from_secs(5)),
    )
    .await
    .expect("get answers")
    .unwrap()
    .unwrap();
    assert_eq!(got.payload["result"], deepest);
    hub.stop().await;
}

/// A client that receives an answer it cannot decode fails that request with an error naming the
/// problem, instead of waiting forever. The peer here is a scripted hub that answers every `get`
/// with a task nested far too deep.
#[tokio::test]
async fn an_unreadable_answer_fails_its_request_instead_of_hanging() {
    use futures_util::{SinkExt, StreamExt};
    use taskhub_core::auth::{Secret, hub_proof};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let nonce = "ab".repeat(32);
        let challenge = json!({"type": "challenge", "version": 1, "nonce": nonce});
        ws.send(Message::text(challenge.to_string())).await.unwrap();
        let Some(Ok(Message::Text(auth))) = ws.next().await else {
            return;
        };
        let auth: serde_json::Value = serde_json::from_str(&auth).unwrap();
        let proof = hub_proof(
            &Secret::new(taskhub_tests::KEY),
            "default",
            &nonce,
            auth["client_nonce"].as_str().unwrap(),
        );
        let welcome = json!({"type": "welcome", "session": 1, "proof": proof, "inbox": "_inbox.1",
            "limits": {"max_message_bytes": 1048576, "ack_wait_ms": 30000, "max_prefetch": 100, "max_attempts": 5}});
        ws.send(Message::text(welcome.to_string())).await.unwrap();
        while let Some(Ok(Message::Text(req))) = ws.next().await {
            let req: serde_json::Value = serde_json::from_str(&req).unwrap();
            let answer = format!(
                r#"{{"type":"task","req":{},"task":{{"id":1,"queue":"q","payload":{},"attempt":1,"max_attempts":5}}}}"#,
                req["req"],
                nested_text(300)
            );
            ws.send(Message::text(answer)).await.unwrap();
        }
    });
    let c = client(&url).await;
    let err = tokio::time::timeout(Duration::from_secs(10), c.get("q", Duration::ZERO))
        .await
        .expect("the get fails instead of hanging")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the hub's answer could not be read"),
        "{text}"
    );
}

/// A real hub process with a `max_stored_bytes` budget (and room for a million tasks per queue),
/// a client, and the hub's RSS before anything was stored.
struct Budgeted {
    hub: taskhub_tests::Proc,
    client: taskhub_client::Client,
    budget: u64,
    before_kib: u64,
}

impl Budgeted {
    async fn start(budget: u64) -> Budgeted {
        let (hub, url) = taskhub_tests::serve_with(
            "127.0.0.1:0",
            &[
                "--max-stored-bytes",
                &budget.to_string(),
                "--max-queue-len",
                "1000000",
            ],
        );
        let client = client(&url).await;
        let before_kib = rss_kib(hub.pid());
        Budgeted {
            hub,
            client,
            budget,
            before_kib,
        }
    }

    /// The hub, filled until it refused (`stored` tasks, at least `min`), charged no more than its
    /// budget and grew at most `ratio` times that in RSS.
    async fn check_rss(&self, stored: u64, min: u64, ratio: f64) {
        let charged = self.client.stats().await.unwrap().stored_bytes;
        let grew = (rss_kib(self.hub.pid()) - self.before_kib) * 1024;
        let seen = grew as f64 / charged as f64;
        eprintln!("{stored} tasks charged {charged} bytes; RSS grew {grew} bytes ({seen:.2}x)");
        assert!(charged <= self.budget && stored >= min, "{stored} tasks");
        assert!(
            grew as f64 <= ratio * self.budget as f64,
            "{stored} tasks charged {charged} bytes took {grew} bytes of RSS ({seen:.2}x)"
        );
    }
}

/// Put `payload(n)` for n = 0, 1, … on queue `fill` until the hub says `queue_full`; returns how
/// many it stored.
async fn fill(c: &taskhub_client::Client, payload: impl Fn(usize) -> taskhub_core::Payload) -> u64 {
    for n in 0..100_000 {
        match c.put("fill", payload(n), PutOptions::default()).await {
            Ok(_) => {}
            Err(ClientError::Hub {
                code: ErrorCode::QueueFull,
                ..
            }) => return n as u64,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the budget never filled");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The fault suite's case: the hub charged a payload's JSON text but held it as a tree, so
/// `[0,0,0,…]` took 16 times its charge (64 MiB charged became 1 GiB of RSS). The hub now holds
/// payloads as their text: filled to its `max_stored_bytes` with the shapes that were worst as
/// trees, a real hub process stays within 1.2 times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_follows_the_charge_for_any_json_shape() {
    if !taskhub_tests::embedded_only(
        "the hub's memory follows the broker's charge (JetStream holds the tasks)",
    ) {
        return;
    }
    let hub = Budgeted::start(64 << 20).await;
    let c = &hub.client;
    let shapes = [
        format!("[{}0]", "0,".repeat(200_000)),
        format!(
            "{{{}\"z\":0}}",
            (0..40_000)
                .map(|i| format!("\"k{i}\":0,"))
                .collect::<String>()
        ),
        format!("[{}[0]]", "[0],".repeat(100_000)),
        format!("\"{}\"", "s".repeat(400_000)),
    ];
    let stored = fill(c, |n| {
        serde_json::from_str(&shapes[n % shapes.len()]).unwrap()
    })
    .await;
    // Payloads are kept as their text: RSS follows the text for every shape.
    hub.check_rss(stored, 5, 1.2).await;
}

/// Binary payloads are held as their bytes, each in an allocation of its own (never a slice of
/// the frame's read buffer), so RSS follows the charge for small and large ones alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_follows_the_charge_for_binary_payloads() {
    if !taskhub_tests::embedded_only(
        "the hub's memory follows the broker's charge (JetStream holds the tasks)",
    ) {
        return;
    }
    let hub = Budgeted::start(64 << 20).await;
    let c = &hub.client;
    let sizes = [300_000usize, 20_000, 700];
    let stored = fill(c, |n| {
        taskhub_core::Payload::from(vec![(n % 251) as u8; sizes[n % sizes.len()]])
    })
    .await;
    hub.check_rss(stored, 5, 1.2).await;
}

/// Millions of tiny tasks: a `null` payload is 4 bytes of text and a 32-byte node, but the task
/// around it (its record in the queue, its queue name) is several times that. The charge counts
/// the whole task, so a hub filled with them stays within 1.5 times its `max_stored_bytes` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_follows_the_charge_for_many_tiny_tasks() {
    if !taskhub_tests::embedded_only(
        "the hub's memory follows the broker's charge (JetStream holds the tasks)",
    ) {
        return;
    }
    let hub = Budgeted::start(32 << 20).await;
    let stored = fill_tiny(&hub.client, PutOptions::default()).await;
    hub.check_rss(stored, 10_000, 1.5).await;
}

/// Tasks waiting for their time are held apart from the ready ones (by due time); they are
/// charged the same, and a hub filled with tiny delayed tasks stays within the same 1.5 times
/// its `max_stored_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_follows_the_charge_for_delayed_tasks() {
    if !taskhub_tests::embedded_only("delayed tasks (the NATS backend refuses them)") {
        return;
    }
    let hub = Budgeted::start(32 << 20).await;
    let stored = fill_tiny(
        &hub.client,
        PutOptions::new().delay(Duration::from_secs(3_600)),
    )
    .await;
    let s = hub.client.stats().await.unwrap();
    assert_eq!(
        s.queue("tiny").unwrap().scheduled,
        stored,
        "all of them waiting"
    );
    hub.check_rss(stored, 10_000, 1.5).await;
}

/// Put `null` tasks with `opts` on queue `tiny`, 10,000 at a time, until the hub says
/// `queue_full`; returns how many it stored.
async fn fill_tiny(c: &taskhub_client::Client, opts: PutOptions) -> u64 {
    let mut stored = 0u64;
    loop {
        let mut batch = 0;
        let put = c
            .put_each("tiny", vec![json!(null); 10_000], opts.clone(), |_| {
                batch += 1
            })
            .await;
        stored += batch;
        match put {
            Ok(()) => assert!(stored < 2_000_000, "the budget never filled"),
            Err(ClientError::Hub {
                code: ErrorCode::QueueFull,
                ..
            }) => return stored,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Head-of-line blocking: a producer that does not read its answers must not hold up what its
/// requests send to *other* sessions. Its `stats` answers fill its outbox while its puts deliver
/// tasks to a worker; every task the hub accepted must reach the worker and be done while the
/// producer is still stuck (its own answers wait, up to the 30 s idle timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_does_not_read_does_not_delay_deliveries_to_workers() {
    let hub = hub(|c| {
        c.outbox = 300;
        c.broker.max_prefetch = 256;
        c.ping_interval = Duration::from_secs(15);
        c.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let observer = client(&hub.url()).await;
    make_stats_big(&observer).await;
    // A worker with room for a whole batch of the producer's puts, acking each at once.
    let mut worker = Raw::session(&hub.url(), "worker").await;
    worker
        .request(
            json!({"type": "consume", "queues": ["work"], "prefetch": 256}),
            1,
        )
        .await;
    tokio::spawn(async move {
        while let Some(msg) = worker
            .recv_within(Duration::from_secs(60))
            .await
            .ok()
            .flatten()
        {
            if msg["type"] == "deliver" {
                worker
                    .send(json!({"type": "ack", "task": msg["task"]["id"]}))
                    .await;
            }
        }
    });
    let deaf = Raw::session(&hub.url(), "producer").await;
    let frames = (0..3_000).flat_map(|i| {
        let put = |k| json!({"type": "put", "req": 4 * i + k, "queue": "work", "payload": i});
        [
            json!({"type": "stats", "req": 4 * i}),
            put(1),
            put(2),
            put(3),
        ]
    });
    let _sender = flood(deaf, frames.collect());
    // Wait until the producer is stuck: nothing more is acked for a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = None;
    let stats = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = observer.stats().await.unwrap();
        if last == Some(s.acked) {
            break s;
        }
        last = Some(s.acked);
        assert!(
            std::time::Instant::now() < deadline,
            "the producer kept going for 20 s"
        );
    };
    let work = stats.queue("work").unwrap();
    assert!(stats.acked > 0, "nothing was done at all");
    assert_eq!(
        stats.sessions["producer"], 2,
        "the producer was closed early"
    );
    assert_eq!(
        (work.depth, work.in_flight),
        (0, 0),
        "{} done, but tasks the hub accepted wait behind the producer's unread answers",
        stats.acked
    );
    hub.stop().await;
}

/// A flood of idle sockets without a key, more than both caps and reopened as soon as the hub
/// drops any, never keeps a client with the key out: unauthenticated connections have their own
/// cap, and the oldest of them makes room for each new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_cannot_lock_out_a_client_with_the_key() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hub = hub(|c| {
        c.max_pending_auth = 256;
        c.max_connections = 60;
    })
    .await;
    let addr = hub.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for i in 0..400 {
        let (stop, dropped) = (stop.clone(), dropped.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                // Half just hold a socket; half upgrade to WebSocket and then say nothing.
                if i % 2 == 0 {
                    let upgrade = format!(
                        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                    );
                    let _ = s.write_all(upgrade.as_bytes()).await;
                }
                // Hold it until the hub drops it, then come straight back.
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Wait until the flood fills every place and the hub is closing the oldest to make room.
    let churning = taskhub_tests::eventually(Duration::from_secs(10), || async {
        (dropped.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    assert!(
        churning.is_some(),
        "the flood never filled the waiting places"
    );
    for attempt in 0..20 {
        let started = std::time::Instant::now();
        let connected = tokio::time::timeout(Duration::from_secs(1), client_connect(&hub.url()))
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt} took over 1 s"));
        let c = connected.unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert!(c.stats().await.is_ok());
        eprintln!("attempt {attempt}: in {:?}", started.elapsed());
    }
    eprintln!(
        "flood sockets dropped by the hub: {}",
        dropped.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    hub.stop().await;
    for f in flood {
        f.abort();
    }
}

async fn client_connect(url: &str) -> Result<taskhub_client::Client, taskhub_client::ClientError> {
    taskhub_client::Client::connect(taskhub_client::ConnectOptions::new(url, taskhub_tests::KEY))
        .await
}
