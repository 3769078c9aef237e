//! Keys with rights and tokens for tabs: a consume-only token works its queue and gets
//! `forbidden` (naming the right) for anything else, with the session left open; tokens expire
//! and are revoked (closing their sessions, and staying revoked across a restart); a key file
//! gives each key its rights; a token never carries more than the key that made it; and the
//! links `serve` prints carry tokens, never the key.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use taskhub_client::{Client, ConnectOptions, PutOptions, Rights};
use taskhub_core::Pattern;
use taskhub_tests::{
    KEY, Proc, Raw, banner_of, bin, cli, client, fresh_data_dir, hub, serve_banner,
};

fn pats(list: &[&str]) -> Vec<Pattern> {
    list.iter().map(|p| Pattern::new(*p).unwrap()).collect()
}

fn consume(queue: &str) -> Rights {
    Rights {
        consume: pats(&[queue]),
        ..Rights::default()
    }
}

/// `taskhub --hub URL ARGS…`; returns (success, stdout, stderr).
fn run(url: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--hub", url];
    all.extend_from_slice(args);
    let out = cli(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The issue's "done when" for tokens, through the CLI and a worker process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_only_token_works_its_queue_and_is_forbidden_the_rest() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let admin = client(&url).await;
    let made = admin
        .create_token(consume("tasks"), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(made.token.starts_with("th1."), "{made:?}");
    let token = made.token.as_str();

    for (args, says) in [
        (vec!["put", "tasks", "1"], "may not put to queue \"tasks\""),
        (vec!["get", "results"], "may not get from queue \"results\""),
        (vec!["sub", ">"], "may not subscribe to \">\""),
        (vec!["stats"], "may not read stats"),
    ] {
        let mut all = vec!["--token", token];
        all.extend_from_slice(&args);
        let (ok, _, err) = run(&url, &all);
        assert!(!ok, "{args:?} must be refused");
        assert!(
            err.contains("(forbidden)") && err.contains(says),
            "{args:?}: {err}"
        );
    }

    // A worker with the token (from the environment) completes tasks.
    let ids = admin
        .put_many(
            "tasks",
            (0..20).map(|n| json!(n)),
            PutOptions::new().kind("square").reply_to("results"),
        )
        .await
        .unwrap();
    let _worker = Proc::spawn(
        Command::new(bin("taskhub-worker"))
            .args(["--hub", &url, "--queue", "tasks"])
            .env("TASKHUB_TOKEN", token)
            .env("RUST_LOG", "warn"),
    );
    taskhub_tests::await_results(
        &admin,
        "results",
        &ids,
        Default::default(),
        Duration::from_secs(20),
    )
    .await;

    // A forbidden request is answered with its req, and the session stays open for the rest.
    let (mut raw, welcome) = Raw::authenticate_token(&url, token, "worker").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let refused = raw
        .request(json!({"type": "put", "queue": "tasks", "payload": 1}), 1)
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = raw
        .request(json!({"type": "publish", "topic": "a.b", "payload": 1}), 2)
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let refused = raw
        .request(
            json!({"type": "consume", "queues": ["tasks", "other"], "prefetch": 1}),
            3,
        )
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("\"other\""),
        "{refused}"
    );
    let pong = raw.request(json!({"type": "ping"}), 4).await;
    assert_eq!(pong["type"], "ok", "{pong}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_and_its_open_session_closed() {
    let hub = hub(|_| {}).await;
    let url = hub.url();
    let admin = client(&url).await;
    let made = admin
        .create_token(consume("tasks"), Duration::from_secs(1))
        .await
        .unwrap();

    // Working while it lasts; closed, with the reason, when it runs out.
    let (mut raw, welcome) = Raw::authenticate_token(&url, &made.token, "worker").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (seen, close) = raw.until_close_frame().await;
    let last = seen.last().cloned().unwrap_or(Value::Null);
    assert_eq!(
        (&last["code"], &last["reason"]),
        (&json!("auth_failed"), &json!("expired")),
        "{seen:?}"
    );
    assert_eq!(close, Some((1008, "credentials expired".to_string())));

    // Refused afterwards, with the reason expired.
    let (_, answer) = Raw::authenticate_token(&url, &made.token, "worker").await;
    assert_eq!(answer["code"], "auth_failed", "{answer}");
    assert_eq!(answer["reason"], "expired", "{answer}");
    let (ok, _, err) = run(&url, &["--token", &made.token, "stats"]);
    assert!(!ok && err.contains("the token expired at"), "{err}");

    // A wrong secret is refused without saying whether the token exists or expired.
    let (key_id, _) = made.token.rsplit_once('.').unwrap();
    let (_, answer) = Raw::authenticate_as(
        &url,
        key_id,
        &taskhub_core::auth::Secret::new("guess"),
        "worker",
    )
    .await;
    assert_eq!(answer["reason"], "credentials", "{answer}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_carry_no_more_than_the_key_that_makes_them() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        r#"
        [keys.ops]
        secret = "ops-secret"
        admin = true
        consume = ["jobs.>"]
        stats = true

        [keys.producer]
        secret = "producer-secret"
        put = ["jobs.>"]
        "#,
    )
    .unwrap();
    let hub = hub(|c| c.keys = taskhub::keys::load_file(&keys).unwrap()).await;
    let url = hub.url();
    let as_key = |id: &str, secret: &str| {
        let mut o = ConnectOptions::new(url.clone(), secret);
        o.key_id = id.into();
        o
    };
    let ops = Client::connect(as_key("ops", "ops-secret")).await.unwrap();
    let within = ops
        .create_token(consume("jobs.eu"), Duration::from_secs(60))
        .await;
    assert!(within.is_ok(), "{within:?}");
    for (rights, says) in [
        (consume("other"), "cannot grant consume on queue \"other\""),
        (
            Rights {
                stats: true,
                admin: true,
                ..Rights::default()
            },
            "cannot carry admin",
        ),
        (Rights::default(), "at least one right"),
    ] {
        let err = ops
            .create_token(rights, Duration::from_secs(60))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{err}");
    }
    let err = ops
        .create_token(consume("jobs.eu"), Duration::from_millis(10))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ttl_ms must be 1000"), "{err}");

    let producer = Client::connect(as_key("producer", "producer-secret"))
        .await
        .unwrap();
    let err = producer
        .create_token(consume("jobs.eu"), Duration::from_secs(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("lacks admin"), "{err}");

    // A token cannot make tokens, even one signed by an admin key.
    let token = within.unwrap().token;
    let t = Client::connect(ConnectOptions::with_token(url.clone(), &token).unwrap())
        .await
        .unwrap();
    let err = t
        .create_token(consume("jobs.eu"), Duration::from_secs(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("a token may not create"), "{err}");
    hub.stop().await;
}

/// A key file through `serve --keys`: each key does what its entry says, an expired key is
/// refused as expired, and the printed links carry tokens signed by the admin key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_gives_each_key_its_rights() {
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.key"), "admin-secret-in-a-file\n").unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        r#"
        [keys.admin]
        secret_file = "admin.key"
        all = true

        [keys.producer]
        secret = "producer-secret"
        put = ["tasks"]
        get = ["results"]

        [keys.old]
        secret = "old-secret"
        all = true
        expires = 2020-01-01
        "#,
    )
    .unwrap();
    let mut cmd = Command::new(bin("taskhub"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--keys"])
        .arg(&keys)
        .env("RUST_LOG", "warn");
    let (_hub, banner) = banner_of(&mut cmd, "dashboard at");
    let url = banner[0].split_whitespace().last().unwrap().to_string();
    let printed = banner.join("\n");
    for secret in ["admin-secret-in-a-file", "producer-secret", "old-secret"] {
        assert!(!printed.contains(secret), "a secret was printed: {printed}");
    }
    assert!(printed.contains("#token=th1."), "{printed}");

    let as_producer = ["--key-id", "producer", "--key", "producer-secret"];
    let put = |extra: &[&str]| {
        let mut args = as_producer.to_vec();
        args.extend_from_slice(&["put", "tasks", "7", "--kind", "square"]);
        args.extend_from_slice(extra);
        run(&url, &args)
    };
    let (ok, _, err) = put(&["--reply-to", "results"]);
    assert!(ok, "{err}");
    let (ok, _, err) = put(&["--reply-to", "elsewhere"]);
    assert!(
        !ok && err.contains("may not name \"elsewhere\" as reply_to"),
        "{err}"
    );
    let mut args = as_producer.to_vec();
    args.push("stats");
    let (ok, _, err) = run(&url, &args);
    assert!(!ok && err.contains("may not read stats"), "{err}");

    // The admin key from its file runs a worker; the producer reads the result.
    let _worker = Proc::spawn(
        Command::new(bin("taskhub-worker"))
            .args(["--hub", &url, "--key-id", "admin", "--key-file"])
            .arg(dir.join("admin.key"))
            .args(["--queue", "tasks"])
            .env("RUST_LOG", "warn"),
    );
    let mut args = as_producer.to_vec();
    args.extend_from_slice(&["get", "results", "--timeout", "20"]);
    let (ok, out, err) = run(&url, &args);
    assert!(ok, "{err}");
    assert!(out.contains("7 * 7 = 49"), "{out}");

    let (ok, _, err) = run(&url, &["--key-id", "old", "--key", "old-secret", "stats"]);
    assert!(
        !ok && err.contains("the key expired at 2020-01-01T00:00:00Z"),
        "{err}"
    );
}

/// Revocation by id: the sessions on the token close at once, new ones are refused, and with a
/// data dir the hub still refuses it after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_cut_off_and_stays_revoked_after_a_restart() {
    let data = fresh_data_dir();
    let data = data.to_str().unwrap().to_string();
    let start = || serve_banner("127.0.0.1:0", &["--data-dir", &data], "dashboard at");
    let (hub, banner) = start();
    let url = banner[0].split_whitespace().last().unwrap().to_string();
    let (ok, token, err) = run(
        &url,
        &[
            "--key",
            KEY,
            "token",
            "create",
            "--queue",
            "tasks",
            "--consume",
            "--ttl",
            "1h",
        ],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    let id = err
        .split_whitespace()
        .skip_while(|w| *w != "token")
        .nth(1)
        .unwrap()
        .to_string();

    let (mut raw, welcome) = Raw::authenticate_token(&url, &token, "worker").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (ok, out, err) = run(&url, &["--key", KEY, "token", "revoke", &id]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("token {id} revoked; 1 session(s) using it closed")
    );
    let (seen, close) = raw.until_close_frame().await;
    assert_eq!(seen.last().unwrap()["reason"], "revoked", "{seen:?}");
    assert_eq!(close, Some((1008, "token revoked".to_string())));
    let (_, answer) = Raw::authenticate_token(&url, &token, "worker").await;
    assert_eq!(answer["reason"], "revoked", "{answer}");

    // A token's id is not a key: revoking something malformed says so.
    let (ok, _, err) = run(&url, &["--key", KEY, "token", "revoke", "nope"]);
    assert!(!ok && err.contains("16 lowercase hex digits"), "{err}");

    drop(hub);
    let (_hub, banner) = start();
    let url = banner[0].split_whitespace().last().unwrap().to_string();
    let (_, answer) = Raw::authenticate_token(&url, &token, "worker").await;
    assert_eq!(answer["reason"], "revoked", "after a restart: {answer}");
}

/// What `serve` prints: links with tokens (tabs may only consume `tasks`, the dashboard only
/// read stats), and the key nowhere but in the one line that hands over a generated key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_links_carry_scoped_tokens_never_the_key() {
    let (_hub, banner) = serve_banner("127.0.0.1:0", &[], "dashboard at");
    let url = banner[0].split_whitespace().last().unwrap().to_string();
    let printed = banner.join("\n");
    assert!(!printed.contains(KEY), "{printed}");
    let token_in = |needle: &str| {
        let line = banner.iter().find(|l| l.contains(needle)).unwrap();
        let at = line.find("#token=").unwrap() + "#token=".len();
        line[at..].split(['&', ' ']).next().unwrap().to_string()
    };
    let join = token_in("lend it as a worker");
    let dashboard = token_in("dashboard at");

    let (ok, _, err) = run(&url, &["--token", &join, "stats"]);
    assert!(!ok && err.contains("forbidden"), "{err}");
    let (mut tab, welcome) = Raw::authenticate_token(&url, &join, "browser").await;
    assert_eq!(welcome["type"], "welcome");
    let ok = tab
        .request(
            json!({"type": "consume", "queues": ["tasks"], "prefetch": 1}),
            1,
        )
        .await;
    assert_eq!(ok["type"], "ok", "{ok}");

    let (ok, out, err) = run(&url, &["--token", &dashboard, "stats", "--json"]);
    assert!(ok && out.contains("\"queues\""), "{err}");
    let (ok, _, err) = run(&url, &["--token", &dashboard, "put", "tasks", "1"]);
    assert!(!ok && err.contains("forbidden"), "{err}");
}
