//! A worker outlives its hub: it reconnects with backoff and resumes consuming.

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::{client, serve, worker};

#[tokio::test]
async fn a_worker_resumes_when_the_hub_comes_back() {
    let (hub, url) = serve("127.0.0.1:0");
    let _w = worker(&url, "tasks", &[]);
    let c = client(&url).await;
    let r = c
        .submit(
            "tasks",
            vec![json!(2)],
            PutOptions::kind("square"),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(r[0].result, Some(json!("2 * 2 = 4")));
    drop(c);
    drop(hub); // SIGKILL: the hub dies without a goodbye

    let addr = url.trim_start_matches("ws://").to_string();
    let (_hub2, url2) = serve(&addr);
    assert_eq!(url, url2);
    let c = client(&url2).await;
    let r = c
        .submit(
            "tasks",
            vec![json!(3)],
            PutOptions::kind("square"),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(r[0].result, Some(json!("3 * 3 = 9")));
}
