//! Retries and the dead-letter queue, with a real worker whose handler always fails.

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::{client, hub, in_process_worker};

#[tokio::test]
async fn a_task_that_keeps_failing_ends_in_the_dead_letter_queue() {
    let hub = hub(|c| c.broker.max_attempts = 3).await;
    let _worker = in_process_worker(&hub.url(), "jobs", 1);
    let c = client(&hub.url()).await;
    let opts = PutOptions::kind("fail");
    let replies = c
        .submit(
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
    let jobs = stats
        .queues
        .iter()
        .find(|q| q.name.as_str() == "jobs")
        .unwrap();
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
