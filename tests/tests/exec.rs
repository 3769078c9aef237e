//! `--exec`: any command is a worker. Payload on stdin, result on stdout, failure on stderr.

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::{client, hub, worker};

#[tokio::test]
async fn a_shell_command_computes_results_and_its_failures_carry_stderr() {
    let hub = hub(|c| c.broker.max_attempts = 2).await;
    let script = r#"read n; if [ "$n" -lt 0 ]; then echo "negative: $n" >&2; exit 3; fi; echo "{\"double\": $((n * 2)), \"kind\": \"$TASKHUB_KIND\"}""#;
    let _w = worker(
        &hub.url(),
        "shell",
        &["--exec", script, "--concurrency", "2"],
    );
    let c = client(&hub.url()).await;
    let replies = c
        .submit(
            "shell",
            vec![json!(21), json!(-1), json!(5)],
            PutOptions::kind("dbl"),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(
        replies[0].result,
        Some(json!({"double": 42, "kind": "dbl"}))
    );
    assert_eq!(
        replies[2].result,
        Some(json!({"double": 10, "kind": "dbl"}))
    );
    assert!(!replies[1].ok);
    let err = replies[1].error.as_deref().unwrap();
    assert!(
        err.contains("negative: -1") && err.contains("exit status: 3"),
        "{err}"
    );

    // Output that is not JSON comes back as a string.
    let _w2 = worker(&hub.url(), "words", &["--exec", "tr -d '\"' | tr a-z A-Z"]);
    let replies = c
        .submit(
            "words",
            vec![json!("hello")],
            PutOptions::default(),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(replies[0].result, Some(json!("HELLO")));
    hub.stop().await;
}
