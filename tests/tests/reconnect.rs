//! A worker outlives its hub: it reconnects with backoff and resumes consuming.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::{client, serve, square_is_done, worker};

#[tokio::test]
async fn a_worker_resumes_when_the_hub_comes_back() {
    let (hub, url) = serve("127.0.0.1:0");
    let _w = worker(&url, "tasks", &[]);
    let c = client(&url).await;
    square_is_done(&c, 2, Duration::from_secs(10)).await;
    drop(c);
    drop(hub); // SIGKILL: the hub dies without a goodbye

    let addr = url.trim_start_matches("ws://").to_string();
    let (_hub2, url2) = serve(&addr);
    assert_eq!(url, url2);
    let c = client(&url2).await;
    square_is_done(&c, 3, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_worker_given_several_hubs_moves_to_the_next_when_its_hub_dies() {
    let (a, url_a) = serve("127.0.0.1:0");
    let (_b, url_b) = serve("127.0.0.1:0");
    let _w = worker(&format!("{url_a},{url_b}"), "tasks", &[]);
    // The first hub of the list is the one it works for.
    let on_a = client(&url_a).await;
    square_is_done(&on_a, 4, Duration::from_secs(10)).await;
    drop(on_a);
    drop(a); // SIGKILL: nothing listens at the first URL any more
    let on_b = client(&url_b).await;
    square_is_done(&on_b, 5, Duration::from_secs(20)).await;
    let workers = on_b.stats().await.unwrap().sessions["worker"];
    assert_eq!(workers, 1);
}

/// A TCP relay that can cut the path without closing anything: after [`Relay::cut`], every
/// connection through it, old or new, stops forwarding forever (half-open, as when a route dies);
/// after [`Relay::heal`], new connections forward again.
struct Relay {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    // Both directions stop for good once the path is cut; the sockets stay open.
                    let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                                mut to: tokio::net::tcp::OwnedWriteHalf,
                                flag: std::sync::Arc<std::sync::atomic::AtomicBool>| async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) {
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::join!(pump(dr, uw, flag.clone()), pump(ur, dw, flag));
                });
            }
        });
        Relay { addr, cut }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The fault suite's half-open case: the path between a worker and the hub stops carrying
/// anything, with no reset in either direction. The worker notices the silence, reconnects once
/// the path heals, and finishes the tasks; the hub closes the stalled session soon after its idle
/// timeout and hands its tasks back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_noticed_on_both_sides() {
    use taskhub_tests::{KEY, hub};
    let idle = Duration::from_millis(1500);
    let hub = hub(|c| {
        c.ping_interval = Duration::from_millis(300);
        c.idle_timeout = idle;
    })
    .await;
    let relay = Relay::start(hub.addr()).await;
    let queues = vec![taskhub_core::QueueName::new("naps").unwrap()];
    let mut config =
        taskhub_core::worker::WorkerConfig::new("default", taskhub::Secret::new(KEY), queues);
    config.handshake_timeout_ms = 1_000;
    config.backoff_max_ms = 500;
    let mut opts = taskhub_native_worker::Options::new(
        format!("ws://{}", relay.addr),
        config,
        taskhub_native_worker::Handlers::builtins(),
    );
    opts.connect_timeout = Duration::from_secs(1);
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(taskhub_native_worker::run(opts, async {
        let _ = stopped.await;
    }));

    let c = client(&hub.url()).await;
    let to_done = PutOptions::new().kind("sleep").reply_to("napped");
    let ids = c
        .put_many("naps", vec![json!(400); 6], to_done)
        .await
        .unwrap();
    let first = c.get("napped", Duration::from_secs(10)).await.unwrap();
    assert!(first.is_some(), "the worker is working through the relay");

    let through_relay = client(&format!("ws://{}", relay.addr)).await;
    relay.cut();
    let cut_at = tokio::time::Instant::now();
    // A client request through the dead path fails instead of waiting forever.
    let err = tokio::time::timeout(Duration::from_secs(5), through_relay.stats())
        .await
        .expect("the request gives up by itself")
        .unwrap_err();
    assert!(err.to_string().contains("silent"), "{err}");
    let closed = taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        (s.sessions["worker"] == 0).then_some(cut_at.elapsed())
    })
    .await
    .expect("the hub closes the stalled session");
    assert!(
        closed <= idle + Duration::from_secs(5),
        "closed {closed:?} after the cut, idle timeout {idle:?}"
    );
    let s = c.stats().await.unwrap();
    let naps = s.queue("naps").unwrap();
    assert_eq!(
        naps.in_flight, 0,
        "the stalled session's tasks went back: {s:?}"
    );

    relay.heal();
    let seen = std::collections::HashSet::from([first.unwrap().payload["id"].as_u64().unwrap()]);
    taskhub_tests::await_results(&c, "napped", &ids, seen, Duration::from_secs(20)).await;
    let s = c.stats().await.unwrap();
    assert_eq!(
        s.sessions["worker"], 1,
        "the worker reconnected through the healed path"
    );
    hub.stop().await;
}
