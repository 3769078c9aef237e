//! `/metrics`, `/healthz` and `/readyz` on a real hub process (on every backend the suite runs):
//! the counters move as tasks are put, done, failed and dead-lettered; a scrape needs a token with
//! the stats right. (python/tests/test_metrics.py reads the same exposition with the Prometheus
//! client's own parser.)

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_core::Rights;
use taskhub_tests::{client, http, http_raw, serve, worker};

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// GET /metrics with `token` as a bearer (if any): (status line, body).
async fn scrape(addr: SocketAddr, token: Option<&str>) -> (String, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n");
    let (status, headers, body) = http_raw(addr, req.as_bytes()).await;
    if status.contains("200") {
        assert!(
            headers.contains("content-type: application/openmetrics-text"),
            "{headers}"
        );
    }
    (status, String::from_utf8(body).unwrap())
}

/// The value of the sample named exactly `sample` (with its labels), if the scrape has it.
fn sample(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// The value of `name` in a scrape that must have it.
fn value(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happens_to_tasks_and_need_a_stats_token() {
    let (_hub, url) = serve("127.0.0.1:0");
    let addr = addr_of(&url);
    let c = client(&url).await;
    let stats = c
        .create_token(
            Rights {
                stats: true,
                ..Default::default()
            },
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
        .token;
    let consume = c
        .create_token(
            Rights {
                consume: vec![taskhub_core::Pattern::new("jobs").unwrap()],
                ..Default::default()
            },
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
        .token;

    // Who may scrape: nobody without a token, not a forged one, not one without stats.
    let (status, body) = scrape(addr, None).await;
    assert!(status.contains("401"), "{status}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let forged = format!("{}x", &stats[..stats.len() - 1]);
    let (status, body) = scrape(addr, Some(&forged)).await;
    assert!(
        status.contains("401") && body.contains("refused"),
        "{status} {body}"
    );
    let (status, body) = scrape(addr, Some(&consume)).await;
    assert!(
        status.contains("403") && body.contains("stats"),
        "{status} {body}"
    );

    let (status, before) = scrape(addr, Some(&stats)).await;
    assert!(status.contains("200"), "{status}");

    // A wrong key is an auth failure.
    let wrong = taskhub_client::connect(url.as_str(), "not-the-key").await;
    assert!(wrong.is_err());

    // Twenty tasks done, one that fails for good.
    let _w = worker(&url, "jobs", &["--concurrency", "2"]);
    let square = PutOptions::new().kind("square");
    let replies = tokio::time::timeout(
        Duration::from_secs(60),
        c.submit("jobs", (1..=20).map(|n| json!(n)), square),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(replies.iter().all(|r| r.ok));
    let doomed = PutOptions::new().kind("fail").max_attempts(1);
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        c.submit("jobs", [json!("no")], doomed),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!failed[0].ok);
    // A task waiting for its time (the embedded backend; NATS refuses delays).
    let delayed = !taskhub_tests::on_nats();
    if delayed {
        let later = PutOptions::new().delay(Duration::from_secs(3_600));
        c.put("later", json!(1), later).await.unwrap();
    }

    let (_, after) = scrape(addr, Some(&stats)).await;
    // Before the run a queue's samples may not exist yet: they count from zero.
    let moved = |name: &str| value(&after, name) - sample(&before, name).unwrap_or(0.0);
    let q = "{queue=\"jobs\"}";
    assert_eq!(
        moved(&format!("taskhub_tasks_put_total{q}")),
        21.0,
        "{after}"
    );
    assert_eq!(
        moved(&format!("taskhub_tasks_delivered_total{q}")),
        21.0,
        "{after}"
    );
    assert_eq!(
        moved(&format!("taskhub_tasks_acked_total{q}")),
        20.0,
        "{after}"
    );
    assert_eq!(
        moved(&format!("taskhub_tasks_failed_total{q}")),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved(&format!("taskhub_tasks_dead_lettered_total{q}")),
        1.0,
        "{after}"
    );
    assert_eq!(value(&after, &format!("taskhub_queue_depth{q}")), 0.0);
    if delayed {
        let later = "{queue=\"later\"}";
        assert_eq!(
            value(&after, &format!("taskhub_queue_scheduled{later}")),
            1.0
        );
        assert_eq!(value(&after, &format!("taskhub_queue_depth{later}")), 0.0);
    }
    assert_eq!(moved("taskhub_task_latency_seconds_count"), 20.0, "{after}");
    assert_eq!(
        value(&after, "taskhub_task_latency_seconds_bucket{le=\"+Inf\"}"),
        value(&after, "taskhub_task_latency_seconds_count")
    );
    assert!(moved("taskhub_auth_failures_total") >= 1.0, "{after}");
    assert_eq!(
        value(&after, "taskhub_sessions{role=\"worker\"}"),
        1.0,
        "{after}"
    );
    assert!(after.ends_with("# EOF\n"));

    // Alive, and ready for work.
    let (status, _, body) = http(addr, "GET", "/healthz").await;
    assert!(status.contains("200") && body == b"ok\n", "{status}");
    let (status, _, body) = http(addr, "GET", "/readyz").await;
    assert!(status.contains("200") && body == b"ready\n", "{status}");
    // Anything but GET and HEAD is refused, and says so.
    let (status, _, _) = http(addr, "POST", "/metrics").await;
    assert!(status.contains("405"), "{status}");
}

/// `--metrics-listen`: the same endpoints on an address of their own, without a token (it is
/// meant to be private), and nothing else there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_the_operator_endpoints_without_a_token() {
    let flags = ["--ready-json", "--metrics-listen", "127.0.0.1:0"];
    let (_hub, banner) = taskhub_tests::serve_banner("127.0.0.1:0", &flags, "\"url\"");
    let ready: serde_json::Value = serde_json::from_str(&banner[0]).unwrap();
    let metrics = ready["metrics"].as_str().expect("the metrics address");
    let addr: SocketAddr = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let (status, body) = scrape(addr, None).await;
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("taskhub_sessions{role=\"worker\"} 0"),
        "{body}"
    );
    let (status, _, body) = http(addr, "GET", "/readyz").await;
    assert!(status.contains("200") && body == b"ready\n", "{status}");
    let (status, _, body) = http(addr, "GET", "/dashboard").await;
    assert!(status.contains("404"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("/metrics, /healthz and /readyz only"));
    // The hub's own port still asks for a token.
    let (status, _) = scrape(addr_of(ready["url"].as_str().unwrap()), None).await;
    assert!(status.contains("401"), "{status}");
}
