//! The Rust client as a library user meets it: a `Client` is a cheap clone whose connection lives
//! while any clone does, and its errors say which failure happened (refused, timed out, the
//! credentials' reason, the close code) with the source attached.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::error::Error as _;
use std::time::Duration;

use serde_json::json;
use taskhub_client::{AuthReason, ClientError, ConnectOptions, PutOptions, Rights};
use taskhub_tests::{KEY, client, eventually, hub, in_process_worker};

async fn producers(c: &taskhub_client::Client) -> u64 {
    c.stats().await.unwrap().sessions["producer"]
}

#[tokio::test]
async fn clones_share_one_session_that_lives_while_any_clone_does() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let _w = in_process_worker(&url, "tasks", 1);
    let watcher = client(&url).await;
    let original = client(&url).await;
    let clones: Vec<_> = (0..8).map(|_| original.clone()).collect();
    assert_eq!(producers(&watcher).await, 2, "eight clones are one session");
    let session = original.session();
    drop(original);
    // Many tasks submitting at once on the clones.
    let jobs: Vec<_> = clones
        .iter()
        .enumerate()
        .map(|(n, c)| {
            let c = c.clone();
            tokio::spawn(async move {
                c.submit("tasks", [json!(n)], PutOptions::new().kind("square"))
                    .await
            })
        })
        .collect();
    for (n, job) in jobs.into_iter().enumerate() {
        let replies = job.await.unwrap().unwrap();
        assert_eq!(
            replies[0].result,
            Some(json!(format!("{n} * {n} = {}", n * n)).into())
        );
    }
    assert_eq!(clones[3].session(), session);
    drop(clones);
    // The last handle gone, the connection closes and the hub forgets the session.
    let closed = eventually(Duration::from_secs(5), || async {
        (producers(&watcher).await == 1).then_some(())
    })
    .await;
    assert!(closed.is_some(), "the session ended with its last handle");
    hub.stop().await;
}

#[tokio::test]
async fn a_hub_that_is_not_there_is_refused_with_the_io_error_as_source() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let err = taskhub_client::connect(url.as_str(), KEY)
        .await
        .unwrap_err();
    match &err {
        ClientError::Refused { url: u, source } => {
            assert_eq!(u, &url);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(err.source().is_some());
    assert!(
        err.to_string().contains("is taskhub serve running?"),
        "{err}"
    );
}

#[tokio::test]
async fn a_peer_that_never_answers_times_out_after_the_timeout_given() {
    // Accepts TCP connections and then says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let err = ConnectOptions::new(url.as_str(), KEY)
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::TimedOut { after, .. } if *after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().contains("no answer within 0.3 s"), "{err}");
}

#[tokio::test]
async fn refused_credentials_carry_the_hubs_reason() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let wrong = taskhub_client::connect(url.as_str(), "not-the-key").await;
    assert!(
        matches!(
            wrong,
            Err(ClientError::Auth {
                reason: AuthReason::Credentials,
                ..
            })
        ),
        "{wrong:?}"
    );

    let admin = client(&url).await;
    let rights = Rights {
        stats: true,
        ..Rights::default()
    };
    let token = admin
        .create_token(rights, Duration::from_secs(3600))
        .await
        .unwrap();
    let opts = ConnectOptions::with_token(url.as_str(), &token.token).unwrap();
    let user = opts.clone().connect().await.unwrap();
    user.stats().await.unwrap();

    // Revoked while in use: the session ends with the close code the protocol names.
    assert_eq!(admin.revoke_token(&token.id).await.unwrap(), 1);
    let ended = eventually(Duration::from_secs(5), || async { user.ended() }).await;
    match ended {
        Some(ClientError::Closed { code, reason }) => {
            assert_eq!(code, Some(1008));
            assert_eq!(reason, "token revoked");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(matches!(
        user.stats().await,
        Err(ClientError::Closed {
            code: Some(1008),
            ..
        })
    ));
    // And refused from then on, with the reason.
    let again = opts.connect().await;
    assert!(
        matches!(
            again,
            Err(ClientError::Auth {
                reason: AuthReason::Revoked,
                ..
            })
        ),
        "{again:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn submit_refuses_a_reply_to_instead_of_overriding_it() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let err = c
        .submit("tasks", [json!(1)], PutOptions::new().reply_to("results"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Invalid(m) if m.contains("reply_to (results)")),
        "{err}"
    );
    assert_eq!(c.stats().await.unwrap().queues.len(), 0, "nothing was sent");
    hub.stop().await;
}

// Multi-threaded: the hub runs in this process while the CLI call blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_connect_to_the_first_hub_that_answers_and_the_cli_does_too() {
    let hub = hub(|_| {}).await;
    // Port 1: nothing listens there, and no connection ever has it as its own port.
    let gone = "ws://127.0.0.1:1";
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("ws://{}", silent.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let urls = format!("{gone}, {silent_url},{}", hub.url());
    let c = ConnectOptions::new(urls.as_str(), KEY)
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    c.put(
        "listed",
        serde_json::json!(1),
        taskhub_client::PutOptions::new(),
    )
    .await
    .unwrap();
    let refused_then_hub = format!("{gone},{}", hub.url());
    let out = taskhub_tests::cli(&[
        "put",
        "listed",
        "2",
        "--hub",
        &refused_then_hub,
        "--key",
        KEY,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.queue("listed").map(|q| q.depth), Some(2));
    // None there at all: the error is the last hub's.
    let err = ConnectOptions::new(format!("{silent_url},{gone}"), KEY)
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { .. }), "{err:?}");
    // A wrong key is not tried elsewhere: every hub would refuse it.
    let err = taskhub_client::connect(format!("{},{}", hub.url(), hub.url()), "wrong")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Auth { .. }), "{err:?}");
    hub.stop().await;
}
